"""chat_major_inconsistency: freeze, analyse, correct, validate and resume for a major inconsistency.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_major_inconsistency).
"""

from chatsync.airflow.dags.chat_major_inconsistency import chat_major_inconsistency

chat_major_inconsistency()

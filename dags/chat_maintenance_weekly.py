"""chat_maintenance_weekly: the weekly error review, index care and retention over the run's data interval.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_maintenance_weekly).
"""

from chatsync.airflow.dags.chat_maintenance_weekly import chat_maintenance_weekly

chat_maintenance_weekly()

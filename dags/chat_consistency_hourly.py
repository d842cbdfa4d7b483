"""chat_consistency_hourly: the hourly consistency check between the room and chat tables.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_consistency_hourly).
"""

from chatsync.airflow.dags.chat_consistency_hourly import chat_consistency_hourly

chat_consistency_hourly()

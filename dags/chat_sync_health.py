"""chat_sync_health: the alert thresholds, every 5 minutes.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_sync_health).
"""

from chatsync.airflow.dags.chat_sync_health import chat_sync_health

chat_sync_health()

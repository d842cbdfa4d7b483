"""chat_maintenance_daily: the daily maintenance report over the run's data interval.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_maintenance_daily).
"""

from chatsync.airflow.dags.chat_maintenance_daily import chat_maintenance_daily

chat_maintenance_daily()

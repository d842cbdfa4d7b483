"""chat_maintenance_monthly: the monthly audit and performance review over the run's data interval.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_maintenance_monthly).
"""

from chatsync.airflow.dags.chat_maintenance_monthly import chat_maintenance_monthly

chat_maintenance_monthly()

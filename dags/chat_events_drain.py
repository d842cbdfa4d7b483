"""chat_events_drain: applies the queued room events when no `chatsync worker` runs.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_events_drain).
"""

from chatsync.airflow.dags.chat_events_drain import chat_events_drain

chat_events_drain()

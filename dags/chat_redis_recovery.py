"""chat_redis_recovery: resynchronise and verify the Redis cache after Redis was lost.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_redis_recovery).
"""

from chatsync.airflow.dags.chat_redis_recovery import chat_redis_recovery

chat_redis_recovery()

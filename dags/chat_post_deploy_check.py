"""chat_post_deploy_check: after a deployment: schema, full detect and validation, with the rollback plan.

Its pipeline lives in the chatsync package (chatsync.airflow.dags.chat_post_deploy_check).
"""

from chatsync.airflow.dags.chat_post_deploy_check import chat_post_deploy_check

chat_post_deploy_check()

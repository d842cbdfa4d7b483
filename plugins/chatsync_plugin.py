"""Registers chatsync with Airflow (visible under Admin > Plugins, with its version).

Kept tiny on purpose: Airflow imports every module under plugins/ in every process. The logic
lives in the chatsync package; DAGs import it directly.
"""

from airflow.plugins_manager import AirflowPlugin


class ChatsyncPlugin(AirflowPlugin):
    name = "chatsync"

"""chatsync in the Airflow UI: the health page and /metrics (a FastAPI app mounted by the
api-server at /chatsync) and a "chatsync health" entry in the Browse menu.

Kept small: Airflow imports every module under plugins/ in every process; the app's code lives
in chatsync.web and touches the database only when a page is requested. The pages need an Airflow
login; /metrics the metrics_token setting when it is set.
"""

from airflow.plugins_manager import AirflowPlugin

from chatsync.airflow_support import plugin_app

URL_PREFIX = "/chatsync"


class ChatsyncPlugin(AirflowPlugin):
    name = "chatsync"
    fastapi_apps = [{"app": plugin_app(), "url_prefix": URL_PREFIX, "name": "chatsync health"}]
    external_views = [{"name": "chatsync health", "href": f"{URL_PREFIX}/health", "destination": "nav",
                       "category": "browse", "url_route": "chatsync-health"}]

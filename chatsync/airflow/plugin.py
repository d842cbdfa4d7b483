"""chatsync in the Airflow UI: the health page and /metrics (a FastAPI app mounted by the
api-server at /chatsync) and a "chatsync health" entry in the Browse menu.

Registered through the ``airflow.plugins`` entry point: every Airflow process with chatsync
installed finds it, with nothing in the plugins folder. Airflow loads plugins in every process,
so this module stays light: the app is built on the api-server's first request and touches the
database only when a page is asked for. The pages need an Airflow login; /metrics the
metrics_token setting when it is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from chatsync.config import Settings
from chatsync.errors import ConfigError

URL_PREFIX = "/chatsync"


def settings_for_web() -> Settings:
    """CHATSYNC_DATABASE_URL when set; otherwise the Airflow connections (inside the api-server)."""
    settings = Settings.from_env()
    if settings.database_url:
        return settings
    try:
        from airflow.models.connection import Connection

        from chatsync.airflow.connections import connection_urls

        # the same conversion as the tasks' settings_from_airflow; here through the secrets backends
        urls = connection_urls(Connection.get_connection_from_secrets)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"no chatsync database for the health page: set CHATSYNC_DATABASE_URL or the "
                          f"Airflow connection 'chatsync_db' ({exc})") from None
    return Settings.from_env(database_url=urls.database, room_database_url=urls.room_database,
                             redis_url=urls.redis or settings.redis_url)  # Redis: optional


class DeferredApp:
    """An ASGI app built at its first request. Airflow imports the plugins in every process
    (scheduler, dag-processor, workers) and only the api-server serves the pages: building the
    app there, on demand, keeps FastAPI and Airflow's security module (~1 s of imports) out of the
    others."""

    def __init__(self, build: Callable[[], Any]):
        self._build = build
        self._app: Any = None

    async def __call__(self, scope, receive, send) -> None:
        if self._app is None:
            self._app = self._build()
        await self._app(scope, receive, send)


def plugin_app() -> DeferredApp:
    """The health app as the plugin mounts it in the api-server: its pages need a user logged in to
    Airflow (the UI's session cookie or an API token, checked by Airflow's own dependency); a
    browser without one goes to Airflow's login page and comes back."""

    def build():
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.core_api.security import get_user
        from fastapi import Depends

        from chatsync.web.app import create_app

        return create_app(settings_for_web, page_dependencies=[Depends(get_user)],
                          login_url=lambda next_url: get_auth_manager().get_url_login(next_url=next_url))

    return DeferredApp(build)



class ChatsyncPlugin(AirflowPlugin):
    name = "chatsync"
    fastapi_apps = [{"app": plugin_app(), "url_prefix": URL_PREFIX, "name": "chatsync health"}]
    external_views = [{"name": "chatsync health", "href": f"{URL_PREFIX}/health", "destination": "nav",
                       "category": "browse", "url_route": "chatsync-health"}]

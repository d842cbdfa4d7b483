"""Airflow connections -> chatsync settings (chatsync.airflow_support.postgres_conninfo / redis_url /
connection_urls), against real servers: a Postgres role of the test's own with a password full of
special characters, Redis servers of the test's own with an ACL user, over plain TCP and over TLS
(a self-signed certificate made by openssl here). Nothing is mocked: every check connects.

The session's AIRFLOW_CONN_CHATSYNC_DB is only ever replaced through monkeypatch (restored after
each test); the connections built here use conn ids of their own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import ADMIN_URL, TEST_DB, free_port, wait_until
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

SPECIAL = "p@ss/w#rd:%?"
# the same, with what breaks conninfo quoting too: quotes, a backslash, a space, '=' and '&'
NASTY = SPECIAL + " it's \\ \"x\" =&+"


def _connection(conn_id: str, conn_type: str, **fields):
    from airflow.models.connection import Connection

    extra = fields.pop("extra", None)
    return Connection(conn_id=conn_id, conn_type=conn_type, extra=json.dumps(extra) if extra else None, **fields)


def _conn_env(conn_type: str, **fields) -> str:
    """The JSON form of an AIRFLOW_CONN_* variable (as tests/conftest.py writes chatsync_db's)."""
    return json.dumps({"conn_type": conn_type, **fields})


# -- Postgres ------------------------------------------------------------------------------------

@pytest.fixture
def pg_role(settings):
    """A LOGIN role with a password full of special characters, dropped afterwards. (The server
    trusts 127.0.0.1, so a wrong password would connect too: the tests check which role they are
    and that the conninfo carries the password exactly.)"""
    name = f"chatsync_conn_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(NASTY)))
    yield name
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}")
                      .format(sql.Literal(name)))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _pg_fields(role: str, **extra) -> dict:
    return {"host": "127.0.0.1", "port": 5432, "login": role, "password": NASTY, "schema": TEST_DB,
            "extra": {"sslmode": "disable", "options": "-c statement_timeout=5000",
                      "application_name": "chatsync from airflow", "cursor": "dictcursor", **extra}}


def test_postgres_role_with_special_password_and_libpq_extras(settings, pg_role):
    from chatsync.airflow.connections import postgres_conninfo
    from chatsync.db.connection import connect

    conninfo = postgres_conninfo(_connection("chatsync_test_pg", "postgres", **_pg_fields(pg_role)))
    params = conninfo_to_dict(conninfo)
    assert params["password"] == NASTY  # exactly, through libpq's own parser
    assert (params["user"], params["dbname"], params["host"], params["port"]) == (pg_role, TEST_DB, "127.0.0.1", "5432")
    assert params["sslmode"] == "disable" and params["options"] == "-c statement_timeout=5000"
    assert params["application_name"] == "chatsync from airflow"
    assert "cursor" not in params  # PostgresHook's own extra (ignored_extra_options), no libpq option

    s = replace(settings, database_url=conninfo)
    with connect(s, autocommit=True) as conn:  # chatsync's own connect
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (pg_role, TEST_DB)
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "5s"
        assert conn.info.get_parameters()["sslmode"] == "disable"
        # chatsync.db.connect names its connections itself (locks and pg_stat_activity rely on it)
        assert conn.execute("SHOW application_name").fetchone()[0] == "chatsync"
    with psycopg.connect(conninfo) as plain:  # the extra itself reaches the server
        assert plain.execute("SHOW application_name").fetchone()[0] == "chatsync from airflow"


def test_postgres_conninfo_connects_like_the_providers_hook(settings, pg_role):
    """What PostgresHook.get_conn connects with (its psycopg connection's parameters) is what
    chatsync's conninfo connects with."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    from chatsync.airflow.connections import postgres_conninfo

    conn = _connection("chatsync_test_pg_hook", "postgres", **_pg_fields(pg_role, keepalives_idle=30))
    hook_conn = PostgresHook(postgres_conn_id=conn.conn_id, connection=conn).get_conn()
    try:
        with psycopg.connect(postgres_conninfo(conn)) as ours:
            assert ours.info.get_parameters() == hook_conn.info.get_parameters()
            assert ours.info.get_parameters()["keepalives_idle"] == "30"
            assert ours.execute("SELECT current_user").fetchone()[0] == pg_role
    finally:
        hook_conn.close()


def test_postgres_extra_that_is_no_libpq_option_is_a_config_error(settings):
    from chatsync.airflow.connections import postgres_conninfo
    from chatsync.errors import ConfigError

    conn = _connection("chatsync_test_pg_bad", "postgres", host="127.0.0.1", login="postgres",
                       extra={"sslmode": "disable", "not_an_option": "1"})
    with pytest.raises(ConfigError, match="chatsync_test_pg_bad.*not_an_option"):
        postgres_conninfo(conn)


def test_settings_from_airflow_and_for_web_read_the_same_connections(settings, pg_role, acl_redis, monkeypatch):
    """Both entry points (tasks: the task SDK's Connection.get; the health page: the secrets
    backends) go through connection_urls, from AIRFLOW_CONN_* JSON here; both settings connect."""
    from chatsync.airflow.connections import settings_from_airflow
    from chatsync.airflow.plugin import settings_for_web
    from chatsync.db.connection import connect
    from chatsync.events import cache

    fields = _pg_fields(pg_role)
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_DB", _conn_env("postgres", **fields))
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_REDIS", _conn_env(
        "redis", host="127.0.0.1", port=acl_redis.port, login="alice", password=SPECIAL, extra={"db": 3}))
    for name in ("CHATSYNC_DATABASE_URL", "CHATSYNC_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    task, web = settings_from_airflow(), settings_for_web()
    assert (task.database_url, task.redis_url) == (web.database_url, web.redis_url)
    assert conninfo_to_dict(task.database_url)["password"] == NASTY
    with connect(task) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == pg_role
    client = cache.client_for(web)
    assert client.ping() and client.acl_whoami() == "alice"
    client.close()


def test_missing_chatsync_db_still_names_it(settings, monkeypatch):
    from chatsync.airflow.connections import settings_from_airflow
    from chatsync.airflow.plugin import settings_for_web
    from chatsync.errors import ConfigError

    monkeypatch.delenv("AIRFLOW_CONN_CHATSYNC_DB")
    monkeypatch.delenv("CHATSYNC_DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="Airflow connection 'chatsync_db' is missing or unreadable.*"
                                          "AIRFLOW_CONN_CHATSYNC_DB"):
        settings_from_airflow()
    with pytest.raises(ConfigError, match="no chatsync database for the health page.*'chatsync_db'"):
        settings_for_web()


# -- Redis ---------------------------------------------------------------------------------------

class RedisProc:
    def __init__(self, proc: subprocess.Popen, port: int):
        self.proc, self.port = proc, port


def _start_redis(tmp: Path, *args: str, ready) -> RedisProc:
    """A redis-server of the test's own: no persistence, ACL user alice (password SPECIAL), the
    default user off. ready(port) says when it answers."""
    port = free_port()
    log = open(tmp / f"redis-{port}.log", "w")
    proc = subprocess.Popen(
        ["redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp),
         "--user", "default", "off", "--user", "alice", "on", f">{SPECIAL}", "~*", "&*", "+@all",
         *[a.replace("{port}", str(port)) for a in args]], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: proc.poll() is not None or ready(port), 10, "redis-server to answer")
        if proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: {(tmp / f'redis-{port}.log').read_text()[-2000:]}")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return RedisProc(proc, port)


def _stop(server: RedisProc) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


def _answers(**kwargs) -> bool:
    try:
        with redis.Redis(host="127.0.0.1", username="alice", password=SPECIAL, socket_timeout=1, **kwargs) as c:
            return bool(c.ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


@pytest.fixture
def acl_redis(tmp_path):
    server = _start_redis(tmp_path, "--port", "{port}", ready=lambda port: _answers(port=port))
    yield server
    _stop(server)


def _redis_settings(settings, conn):
    from chatsync.airflow.connections import redis_url

    return replace(settings, redis_url=redis_url(conn))


def test_redis_acl_user_with_special_password_and_db(settings, acl_redis):
    from chatsync.events import cache

    conn = _connection("chatsync_test_redis", "redis", host="127.0.0.1", port=acl_redis.port, login="alice",
                       password=SPECIAL, extra={"db": 3})
    s = _redis_settings(settings, conn)
    assert s.redis_url.startswith("redis://alice:") and SPECIAL not in s.redis_url  # quoted
    client = cache.client_for(s)
    assert client.ping()
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["username"], kwargs["password"], kwargs["db"]) == ("alice", SPECIAL, 3)
    assert kwargs["host"] == "127.0.0.1" and kwargs["port"] == acl_redis.port
    assert client.acl_whoami() == "alice" and client.client_info()["db"] == 3
    client.close()

    wrong = _connection("chatsync_test_redis_wrong", "redis", host="127.0.0.1", port=acl_redis.port,
                        login="alice", password=SPECIAL + "x", extra={"db": 3})
    client = cache.client_for(_redis_settings(settings, wrong))
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    client.close()
    nobody = _connection("chatsync_test_redis_default", "redis", host="127.0.0.1", port=acl_redis.port,
                         password=SPECIAL)  # no login: the default user, which is off
    client = cache.client_for(_redis_settings(settings, nobody))
    with pytest.raises(redis.AuthenticationError):
        client.ping()
    client.close()


def test_redis_db_from_the_uri_form(settings, acl_redis):
    """AIRFLOW_CONN_CHATSYNC_REDIS=redis://user:pass@host:port/<db> (docker-compose's form) puts the
    db in schema, which RedisHook ignores: chatsync keeps reading it there (extra db wins)."""
    from urllib.parse import quote

    from airflow.models.connection import Connection

    from chatsync.events import cache

    uri = f"redis://alice:{quote(SPECIAL, safe='')}@127.0.0.1:{acl_redis.port}/5"
    client = cache.client_for(_redis_settings(settings, Connection(conn_id="chatsync_test_redis_uri", uri=uri)))
    assert client.ping() and client.client_info()["db"] == 5
    assert client.connection_pool.connection_kwargs["password"] == SPECIAL
    client.close()


def test_redis_url_builds_what_the_providers_hook_builds(settings, acl_redis, monkeypatch):
    """RedisHook.get_conn (reading AIRFLOW_CONN_* as in a task) and chatsync's client agree on every
    connection argument the hook sets, and both reach the server as alice."""
    from airflow.providers.redis.hooks.redis import RedisHook

    from chatsync.events import cache

    fields = {"host": "127.0.0.1", "port": acl_redis.port, "login": "alice", "password": SPECIAL, "extra": {"db": 2}}
    monkeypatch.setenv("AIRFLOW_CONN_CHATSYNC_TEST_REDIS_HOOK", _conn_env("redis", **fields))
    hook_client = RedisHook(redis_conn_id="chatsync_test_redis_hook").get_conn()
    ours = cache.client_for(_redis_settings(settings, _connection("chatsync_test_redis_hook", "redis", **fields)))
    keys = ("host", "port", "username", "password", "db")
    assert ({k: ours.connection_pool.connection_kwargs[k] for k in keys}
            == {k: hook_client.connection_pool.connection_kwargs[k] for k in keys})
    assert ours.connection_pool.connection_class is hook_client.connection_pool.connection_class
    assert hook_client.acl_whoami() == ours.acl_whoami() == "alice"
    hook_client.close()
    ours.close()


def test_redis_connections_chatsync_cannot_use_are_config_errors(settings):
    from chatsync.airflow.connections import redis_url
    from chatsync.errors import ConfigError

    with pytest.raises(ConfigError, match="cluster mode"):
        redis_url(_connection("chatsync_test_cluster", "redis", host="h", extra={"cluster": True}))
    with pytest.raises(ConfigError, match="ssl_cert_reqs 'require' must be one of required, optional, none"):
        redis_url(_connection("chatsync_test_reqs", "redis", host="h", extra={"ssl": True, "ssl_cert_reqs": "require"}))
    with pytest.raises(ConfigError, match="not a whole number"):
        redis_url(_connection("chatsync_test_db", "redis", host="h", extra={"db": "three"}))
    # the hook's rule: a password "none"/"false"/"" is no password
    assert redis_url(_connection("chatsync_test_none", "redis", host="h", password="None")) == "redis://h:6379/0"


# -- Redis over TLS ------------------------------------------------------------------------------

@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server listening on TLS only, with a self-signed certificate for 127.0.0.1 made by
    openssl (its own CA), requiring client certificates signed by it (the same certificate).
    Skipped if this redis-server is built without TLS (the URL test below still runs)."""
    if not shutil.which("openssl"):
        pytest.skip("no openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    def ready(port):
        return _answers(port=port, ssl=True, ssl_ca_certs=str(cert), ssl_certfile=str(cert), ssl_keyfile=str(key))

    try:
        server = _start_redis(tmp_path, "--port", "0", "--tls-port", "{port}", "--tls-cert-file", str(cert),
                              "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                              "--tls-auth-clients", "yes", ready=ready)
    except RuntimeError as exc:  # a build without TLS refuses the tls-* directives and exits
        if "tls" in str(exc).lower():
            pytest.skip(f"redis-server without TLS support: {exc}")
        raise
    server.cert, server.key = cert, key
    yield server
    _stop(server)


def test_redis_over_tls_with_the_hooks_ssl_extras(settings, tls_redis):
    from chatsync.events import cache

    def client(conn_type="redis", **extra):
        conn = _connection(f"chatsync_test_tls_{uuid.uuid4().hex[:6]}", conn_type, host="127.0.0.1",
                           port=tls_redis.port, login="alice", password=SPECIAL, extra={"db": 4, **extra})
        return cache.client_for(_redis_settings(settings, conn))

    full = {"ssl": True, "ssl_cert_reqs": "required", "ssl_ca_certs": str(tls_redis.cert),
            "ssl_certfile": str(tls_redis.cert), "ssl_keyfile": str(tls_redis.key), "ssl_check_hostname": True}
    c = client(**full)
    assert c.ping() and c.acl_whoami() == "alice" and c.client_info()["db"] == 4
    kwargs = c.connection_pool.connection_kwargs
    assert c.connection_pool.connection_class is redis.SSLConnection
    assert (kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (
        str(tls_redis.cert), str(tls_redis.cert), str(tls_redis.key))
    assert kwargs["ssl_cert_reqs"] == "required" and kwargs["ssl_check_hostname"] is True
    c.close()

    # conn type rediss (AIRFLOW_CONN_...=rediss://...) is TLS as well; cert checking off
    c = client("rediss", ssl_cert_reqs="none", ssl_certfile=str(tls_redis.cert), ssl_keyfile=str(tls_redis.key))
    assert c.ping()
    c.close()

    failures = {
        "plain TCP to the TLS port": {},
        "TLS without the CA (unknown self-signed certificate)": {
            k: v for k, v in full.items() if k != "ssl_ca_certs"},
        "TLS without a client certificate": {
            k: v for k, v in full.items() if k not in ("ssl_certfile", "ssl_keyfile")},
    }
    for what, extra in failures.items():
        c = client(**extra)
        with pytest.raises((redis.ConnectionError, redis.TimeoutError)):
            c.ping()
            pytest.fail(what)
        c.close()


def test_redis_tls_url_carries_the_cert_options(settings):
    """Without a server (runs even where redis-server has no TLS): the URL is rediss:// and
    redis-py reads every TLS extra back from it, paths with spaces included."""
    from chatsync.airflow.connections import redis_url

    extra = {"ssl": "true", "ssl_cert_reqs": "Optional", "ssl_ca_certs": "/etc/x y/ca.pem",
             "ssl_certfile": "/c.pem", "ssl_keyfile": "/k.pem", "ssl_check_hostname": "false", "db": 7}
    url = redis_url(_connection("chatsync_test_tls_url", "redis", host="::1", port=6390, login="alice",
                                password=SPECIAL, extra=extra))
    assert url.startswith("rediss://alice:")
    kwargs = redis.Redis.from_url(url).connection_pool.connection_kwargs
    assert kwargs["host"] == "::1" and kwargs["port"] == 6390 and kwargs["db"] == 7
    assert (kwargs["username"], kwargs["password"]) == ("alice", SPECIAL)
    assert (kwargs["ssl_cert_reqs"], kwargs["ssl_ca_certs"], kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == (
        "optional", "/etc/x y/ca.pem", "/c.pem", "/k.pem")
    assert kwargs["ssl_check_hostname"] is False
    # "ssl": "false" (a URI's text) is no TLS, and the TLS extras are then ignored, as by the hook
    plain = redis_url(_connection("chatsync_test_tls_off", "redis", host="h", extra={**extra, "ssl": "false"}))
    assert plain == "redis://h:6379/7"

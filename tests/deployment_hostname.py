"""Airflow's ``[core] hostname_callable`` for the deployment tests: each Celery worker of one
machine reports a name of its own on the task instances it runs."""

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("DEPLOYMENT_TEST_HOSTNAME") or socket.getfqdn()

# The official Airflow 3 image with chatsync installed as a package: its dependencies pinned by the
# same lock as `make test`, then chatsync itself (SQL, migrations, the GX template and the plugin's
# entry point travel in the package). docker-compose.yml mounts only the DAG and plugin folders.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

COPY --chown=airflow:root pyproject.toml uv.lock README.md LICENSE /opt/chatsync/
COPY --chown=airflow:root devtools/pyproject.toml /opt/chatsync/devtools/
COPY --chown=airflow:root chatsync /opt/chatsync/chatsync
RUN pip install --no-cache-dir uv==0.9.30 \
 && cd /opt/chatsync \
 && uv export --frozen --no-dev --no-emit-project --no-emit-workspace --no-hashes --extra celery -o requirements.txt \
 && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r requirements.txt \
 && pip install --no-cache-dir --no-deps /opt/chatsync

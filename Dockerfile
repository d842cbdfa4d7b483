# The official Airflow 3 image plus chatsync's locked dependencies (same lock as `make test`).
# chatsync itself, the DAGs, SQL and the GX context are mounted by docker-compose.yml.
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

COPY --chown=airflow:root pyproject.toml uv.lock /opt/chatsync-lock/
RUN pip install --no-cache-dir uv==0.9.30 \
 && cd /opt/chatsync-lock \
 && uv export --frozen --no-dev --no-emit-project --no-hashes --extra celery -o requirements.txt \
 && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r requirements.txt

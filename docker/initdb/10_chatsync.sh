#!/usr/bin/env bash
# First start of the Postgres container: Airflow's metadata database and chatsync's database,
# each with its own role. Passwords come from the environment (.env), passed as psql variables.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v airflow_pw="$AIRFLOW_DB_PASSWORD" -v chatsync_pw="$CHATSYNC_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE chatsync LOGIN PASSWORD :'chatsync_pw';
CREATE DATABASE chatsync OWNER chatsync;
SQL

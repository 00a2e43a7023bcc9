#!/usr/bin/env bash
# First start of an empty Postgres volume (the postgres image runs /docker-entrypoint-initdb.d/*.sh):
# one server, and for each tenant its own login role and database, owned by that role:
#   airflow    – Airflow's metadata database (and the Celery result backend)
#   warehouse  – the pipeline's warehouse (WAREHOUSE_URL)
#   mlflow     – MLflow's tracking and registry store; mlflow_auth – its login store
# and the warehouse's NOLOGIN group roles nightly_ml_writer / nightly_ml_reader (migration 0010_roles.sql,
# docs/SECURITY.md), granted to the warehouse owner with ADMIN OPTION: it runs the migrations (grants, default
# privileges) and can make login users members, without being a superuser or having CREATEROLE. The Airflow
# workers log in as nightly_ml_worker, a login in nightly_ml_writer (its sessions run as the group): they can
# load, score and monitor, but not change the schemas or the ops tables' structure; only airflow-init uses
# the owner.
# Passwords come from the environment (docker/.env); psql binds them as variables, never as SQL text.
# No `set -u` or `exit`: the image may source this file into its own entrypoint shell.
set -eo pipefail

: "${AIRFLOW_DB_PASSWORD:?set it in docker/.env}"
: "${WAREHOUSE_DB_PASSWORD:?set it in docker/.env}"
: "${MLFLOW_DB_PASSWORD:?set it in docker/.env}"
: "${WAREHOUSE_WORKER_PASSWORD:?set it in docker/.env}"

create_role() {
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=role="$1" --set=password="$2" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
}

create_database() {
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=database="$1" --set=owner="$2" <<'SQL'
CREATE DATABASE :"database" OWNER :"owner";
REVOKE ALL ON DATABASE :"database" FROM PUBLIC;
SQL
}

create_role airflow "$AIRFLOW_DB_PASSWORD"
create_role warehouse "$WAREHOUSE_DB_PASSWORD"
create_role mlflow "$MLFLOW_DB_PASSWORD"
create_database airflow airflow
create_database warehouse warehouse
create_database mlflow mlflow
create_database mlflow_auth mlflow

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE nightly_ml_writer NOLOGIN;
CREATE ROLE nightly_ml_reader NOLOGIN;
GRANT nightly_ml_writer, nightly_ml_reader TO warehouse WITH ADMIN OPTION;
SQL

# the same statements as include/nightly_ml/sql/roles_login_user.sql
create_login_in_group() {
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    --set=login="$1" --set=password="$2" --set=group="$3" <<'SQL'
CREATE ROLE :"login" LOGIN PASSWORD :'password' IN ROLE :"group";
ALTER ROLE :"login" SET role = :"group";
SQL
}

create_login_in_group nightly_ml_worker "$WAREHOUSE_WORKER_PASSWORD" nightly_ml_writer

#!/usr/bin/env bash
# The `airflow-init` service of docker-compose.yml: runs once before the other Airflow services.
# Idempotent, so it runs again on every `docker compose up`:
#   1. Airflow's metadata database (and the FAB auth manager's tables);
#   2. the admin login (FAB prints "already exist in the db" and exits 0 when it is there);
#   3. the warehouse schema (nightly_ml.db.migrate, under an advisory lock).
set -euo pipefail

: "${AIRFLOW_ADMIN_USERNAME:?set it in docker/.env}"
: "${AIRFLOW_ADMIN_PASSWORD:?set it in docker/.env}"
: "${AIRFLOW_ADMIN_EMAIL:?set it in docker/.env}"
: "${WAREHOUSE_URL:?}"

airflow db migrate
airflow users create \
  --role Admin \
  --username "$AIRFLOW_ADMIN_USERNAME" \
  --password "$AIRFLOW_ADMIN_PASSWORD" \
  --email "$AIRFLOW_ADMIN_EMAIL" \
  --firstname Nightly \
  --lastname Admin
python -c 'from nightly_ml import db; print("warehouse migrations applied:", db.migrate() or "none new")'

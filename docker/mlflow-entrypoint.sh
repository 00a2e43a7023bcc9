#!/usr/bin/env bash
# Entry point of the `mlflow` service: writes the basic-auth configuration, then runs its command
# (`mlflow server ... --app-name basic-auth`, see docker-compose.yml).
# The auth store's URL carries a password, so the file is written here from the environment, readable
# by this user only. The admin login comes from MLFLOW_AUTH_ADMIN_USERNAME/_PASSWORD at first start.
set -euo pipefail

: "${MLFLOW_AUTH_DATABASE_URI:?}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set it in docker/.env}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set it in docker/.env}"

umask 077
config_dir="$(mktemp -d)"
export MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
# configparser reads '%' as interpolation: double it (URL-encoded passwords contain it).
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_AUTH_DATABASE_URI//%/%%}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI

exec "$@"

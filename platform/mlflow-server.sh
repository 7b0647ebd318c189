#!/usr/bin/env bash
# Start an MLflow 3 tracking server (UI, REST API, model registry, proxied artifact store) for the
# DCSOD platform. See --help. Extra arguments are passed on to `mlflow server` unchanged.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: platform/mlflow-server.sh [extra `mlflow server` options...]

Starts `mlflow server` with a database backend store and artifacts served through the server
(clients need no direct access to the artifact storage; they only need MLFLOW_TRACKING_URI).

Environment (defaults in brackets):
  MLFLOW_HOME                   state directory                        [$HOME/mlflow]
  MLFLOW_HOST                   interface to bind                      [127.0.0.1]
                                (0.0.0.0 to accept other machines, e.g. Ray workers)
  MLFLOW_PORT                   port                                   [5000]
  MLFLOW_BACKEND_STORE_URI      runs, metrics, registry                [sqlite:///$MLFLOW_HOME/mlflow.db]
                                e.g. postgresql://user:pass@db:5432/mlflow (needs psycopg2)
  MLFLOW_ARTIFACTS_DESTINATION  where uploaded artifacts are stored    [$MLFLOW_HOME/artifacts]
                                a local path or e.g. s3://bucket/prefix
  MLFLOW_BIN                    the mlflow executable                  [mlflow]

MLflow >= 3.5 checks the Host header of every request (DNS-rebinding protection). By default it
accepts localhost and private IPs (10.*, 172.16-31.*, 192.168.*). When clients reach the server by
a DNS name, allow it, e.g.
  MLFLOW_SERVER_ALLOWED_HOSTS='mlflow.internal,mlflow.internal:*' platform/mlflow-server.sh
or pass --allowed-hosts (both replace the default list, so add localhost:* if you still need it).
Browser apps on other origins additionally need --cors-allowed-origins.
The server has no authentication by default: keep it on a private network, or add
--app-name basic-auth (needs `pip install 'mlflow[auth]'`).

Examples:
  platform/mlflow-server.sh
  MLFLOW_HOST=0.0.0.0 MLFLOW_PORT=5001 platform/mlflow-server.sh --workers 2
EOF
}

case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac

MLFLOW_HOME="${MLFLOW_HOME:-$HOME/mlflow}"
MLFLOW_HOST="${MLFLOW_HOST:-127.0.0.1}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
MLFLOW_BIN="${MLFLOW_BIN:-mlflow}"

# Absolute path, so that the sqlite URI below is absolute (sqlite:////abs/path/mlflow.db).
mkdir -p "$MLFLOW_HOME"
MLFLOW_HOME="$(cd "$MLFLOW_HOME" && pwd)"

BACKEND_STORE_URI="${MLFLOW_BACKEND_STORE_URI:-sqlite:///${MLFLOW_HOME}/mlflow.db}"
ARTIFACTS_DESTINATION="${MLFLOW_ARTIFACTS_DESTINATION:-${MLFLOW_HOME}/artifacts}"

# Create the artifact directory when it is a local path (not a URI such as s3://...).
case "$ARTIFACTS_DESTINATION" in
  *://*) ;;
  *)
    mkdir -p "$ARTIFACTS_DESTINATION"
    ARTIFACTS_DESTINATION="$(cd "$ARTIFACTS_DESTINATION" && pwd)"
    ;;
esac

if ! command -v "$MLFLOW_BIN" > /dev/null 2>&1; then
  echo "error: '$MLFLOW_BIN' not found; install the project (pip install -e .) or set MLFLOW_BIN" >&2
  exit 127
fi

case "$MLFLOW_HOST" in
  0.0.0.0 | :: | "[::]") client_host="$(hostname -f 2> /dev/null || hostname)" ;;
  *) client_host="$MLFLOW_HOST" ;;
esac

# Hide credentials (user:password@) when echoing the backend URI.
shown_backend="$(printf '%s' "$BACKEND_STORE_URI" | sed -E 's#(://)[^/@]*@#\1***@#')"

cat <<EOF
MLflow tracking server
  backend store : $shown_backend
  artifacts     : $ARTIFACTS_DESTINATION (served through the server)
  listening on  : $MLFLOW_HOST:$MLFLOW_PORT
Point clients at it with:
  export MLFLOW_TRACKING_URI=http://$client_host:$MLFLOW_PORT
EOF

exec "$MLFLOW_BIN" server \
  --backend-store-uri "$BACKEND_STORE_URI" \
  --serve-artifacts \
  --artifacts-destination "$ARTIFACTS_DESTINATION" \
  --host "$MLFLOW_HOST" \
  --port "$MLFLOW_PORT" \
  "$@"

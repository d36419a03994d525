#!/usr/bin/env bash
# Start a local single-node Ray cluster for development, with token authentication, and print
# how to submit jobs to it. Stop it with cluster/stop_local.sh (same RAY_TEMP_DIR).
#
#   cluster/start_local.sh [extra `ray start` options]
#
# Settings (environment variables, defaults in brackets):
#   RAY_TEMP_DIR     the cluster's session and log folder; it names the cluster [/tmp/ray-aesthetics]
#   RAY_PORT         GCS port [6380]
#   DASHBOARD_PORT   dashboard and job API port [8266]
#   DASHBOARD_HOST   interface of the dashboard [127.0.0.1]
#   NUM_CPUS         CPUs the cluster offers [all of this machine's]
#   NUM_GPUS         GPUs the cluster offers [detected]
# Token: RAY_AUTH_TOKEN if set, else the file RAY_AUTH_TOKEN_PATH (created, mode 600, if
# missing), else ~/.ray/auth_token (created by `ray get-auth-token --generate` if missing).
# The defaults keep clear of a Ray started by ray.init() (6379, 8265, /tmp/ray).
set -euo pipefail

RAY_TEMP_DIR="${RAY_TEMP_DIR:-/tmp/ray-aesthetics}"
RAY_PORT="${RAY_PORT:-6380}"
DASHBOARD_PORT="${DASHBOARD_PORT:-8266}"
DASHBOARD_HOST="${DASHBOARD_HOST:-127.0.0.1}"
NUM_CPUS="${NUM_CPUS:-$(nproc)}"

mkdir -p "$RAY_TEMP_DIR"
RAY_TEMP_DIR="$(cd "$RAY_TEMP_DIR" && pwd -P)"  # Ray wants an absolute path

# Never start without authentication: the cluster runs whatever code a client sends it.
if [[ "${RAY_AUTH_MODE:-token}" != "token" ]]; then
  echo "error: RAY_AUTH_MODE=${RAY_AUTH_MODE}; this script only starts clusters with RAY_AUTH_MODE=token" >&2
  exit 2
fi
export RAY_AUTH_MODE=token
if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
  token_hint="ray get-auth-token   (with the RAY_AUTH_TOKEN this cluster was started with)"
elif [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
  if [[ ! -s "$RAY_AUTH_TOKEN_PATH" ]]; then
    mkdir -p "$(dirname "$RAY_AUTH_TOKEN_PATH")"
    (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(32), end="")' > "$RAY_AUTH_TOKEN_PATH")
  fi
  token_hint="RAY_AUTH_TOKEN_PATH='$RAY_AUTH_TOKEN_PATH' ray get-auth-token"
else
  ray get-auth-token --generate > /dev/null
  token_hint="ray get-auth-token"
fi

# Every process of this cluster carries this variable; stop_local.sh finds them by it.
export AESTHETICS_RAY_CLUSTER="$RAY_TEMP_DIR"

gpu_args=()
if [[ -n "${NUM_GPUS:-}" ]]; then
  gpu_args=(--num-gpus="$NUM_GPUS")
fi

ray start --head \
  --port="$RAY_PORT" \
  --num-cpus="$NUM_CPUS" ${gpu_args[@]+"${gpu_args[@]}"} \
  --include-dashboard=true \
  --dashboard-host="$DASHBOARD_HOST" \
  --dashboard-port="$DASHBOARD_PORT" \
  --temp-dir="$RAY_TEMP_DIR" \
  --disable-usage-stats \
  "$@"

job_address="http://127.0.0.1:$DASHBOARD_PORT"
gcs_address="$(cat "$RAY_TEMP_DIR/ray_current_cluster" 2>/dev/null || echo "this machine:$RAY_PORT")"
cat <<EOF

Local Ray cluster is up (token authentication on).
  dashboard / job API : $job_address
  GCS address         : $gcs_address   (--ray-address / RAY_ADDRESS for a driver on this machine)
  temp dir            : $RAY_TEMP_DIR   (logs in session_latest/logs)
  token               : $token_hint

Submit a job from the repository root:
  export RAY_AUTH_MODE=token
  export RAY_AUTH_TOKEN="\$(${token_hint%%   (*})"
  ray job submit --address $job_address --runtime-env cluster/runtime_env.yaml --working-dir . \\
      -- python -m jobs.score --input DIR|s3://prefix --output OUT --model random:resnet18

Stop it with: RAY_TEMP_DIR=$RAY_TEMP_DIR cluster/stop_local.sh
EOF

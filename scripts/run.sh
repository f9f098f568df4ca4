#!/usr/bin/env bash
# `make run`: the embedded default — the reference clinic-api and therasyncd
# syncing with it, both on loopback, data under ./var. Ctrl-C stops both.
set -euo pipefail
build=${1:-build}
data=${THERASYNC_DATA:-./var}
api_port=${CLINIC_API_PORT:-8080}
mkdir -p "$data"
api_pid=""
cleanup() {
  [ -n "$api_pid" ] && kill "$api_pid" 2>/dev/null && wait "$api_pid" 2>/dev/null
  return 0
}
trap cleanup EXIT INT TERM
api_args=()
if [ -x "$build/clinic-api" ]; then
  "$build/clinic-api" --listen "127.0.0.1:$api_port" --db "$data/clinic-api.db" \
    --demo-patients 50 &
  api_pid=$!
  api_args=(--api "http://127.0.0.1:$api_port" --config "$(dirname "$0")/demo-config.lua")
  echo "run: clinic-api on http://127.0.0.1:$api_port (pid $api_pid)" >&2
else
  echo "run: no clinic-api in this build; therasyncd runs standalone" >&2
fi
echo "run: therasyncd on tcp://127.0.0.1:7410 (events tcp://127.0.0.1:7411); try: $build/therasync status" >&2
"$build/therasyncd" --data "$data/engine" "${api_args[@]}" --log-level info &
engine_pid=$!
trap 'kill -TERM $engine_pid 2>/dev/null; wait $engine_pid; cleanup' INT TERM
wait $engine_pid

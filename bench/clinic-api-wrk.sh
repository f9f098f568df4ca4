#!/usr/bin/env bash
# Measures clinic-api with wrk (keep-alive, -t2 -c32): durable creates, then
# small GETs of one document. Prints wrk's summary lines, the server's CPU
# time per request, and its /_control/stats.
#   bash bench/clinic-api-wrk.sh [BUILD_DIR] [SECONDS]
set -eu
build=${1:-build}; secs=${2:-10}
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$build" && pwd)/clinic-api
dir=$(mktemp -d /tmp/clinic-api-bench.XXXXXX)
"$bin" --listen 127.0.0.1:0 --db "$dir/bench.db" --log-level info 2>"$dir/log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
port=
for _ in $(seq 100); do
  port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$dir/log" | sed 's/.*://') && [ -n "$port" ] && break
  sleep 0.05
done
base=http://127.0.0.1:$port
TOKEN=$(curl -s "$base/oauth/token" -u therasync:dev-secret -d grant_type=client_credentials |
        sed -E 's/.*"access_token":"([0-9a-f]+)".*/\1/')
export TOKEN
curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "$base/v1/sessions" -d '{"id":"s-1","room":"A"}'
cpu() { awk '{print $14+$15}' /proc/$pid/stat; }   # utime+stime in clock ticks
flt() { awk '{print $10}' /proc/$pid/stat; }        # minor page faults
per_req() { echo $(( ($2 - $1) * 1000000 / $(getconf CLK_TCK) / $3 )); }
run() {
  local name=$1; shift
  local c0 c1 f0 f1 out n
  c0=$(cpu); f0=$(flt); out=$(wrk "$@"); c1=$(cpu); f1=$(flt)
  n=$(grep -o '[0-9]* requests in' <<<"$out" | cut -d' ' -f1)
  echo "== $name: wrk ${*//$TOKEN/TOKEN}"   # never print the token
  grep -E 'Latency|requests in|Requests/sec|Non-2xx|Socket errors' <<<"$out"
  echo "server CPU per request: $(per_req "$c0" "$c1" "$n") us"
  echo "server page faults per 1000 requests: $(( (f1 - f0) * 1000 / n ))"
}
run "POST /v1/sessions (durable create, Idempotency-Key each)" \
    -t2 -c32 -d"${secs}s" -s "$here/clinic-api-post.lua" "$base/v1/sessions"
run "GET /v1/sessions/s-1" \
    -t2 -c32 -d"${secs}s" -H "Authorization: Bearer $TOKEN" "$base/v1/sessions/s-1"
echo "stats: $(curl -s "$base/_control/stats")"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"

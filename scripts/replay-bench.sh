#!/usr/bin/env bash
# replay-bench.sh N — the `replay` workload with the existing tools: a fresh
# clinic-api and therasyncd on free loopback ports, clinic-api switched
# offline, N creates queued through therasync-bench ingest, then clinic-api
# back: prints the seconds until every write is confirmed (status pending 0)
# and clinic-api's applied_writes. Until therasync-bench has `replay`.
set -euo pipefail
N=${1:-100000}
B=${BUILD:-build}
dir=$(mktemp -d /tmp/replay.XXXXXX)
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
AP=$(port); EP=$(port); EV=$(port)
$B/clinic-api --listen 127.0.0.1:$AP --db $dir/api.db >$dir/api.log 2>&1 & api=$!
sleep 0.5
$B/therasyncd --data $dir/data --endpoint tcp://127.0.0.1:$EP --events tcp://127.0.0.1:$EV \
  --api http://127.0.0.1:$AP ${CONFIG:+--config $CONFIG} >$dir/engine.log 2>&1 & eng=$!
trap 'kill $eng $api 2>/dev/null; wait $eng $api 2>/dev/null; cp $dir/engine.log /tmp/replay-engine.log 2>/dev/null; rm -rf $dir' EXIT
for i in $(seq 50); do grep -q "ready endpoint" $dir/engine.log && break; sleep 0.1; done
curl -s 127.0.0.1:$AP/_control/faults -d '{"offline":true}' >/dev/null
$B/therasync-bench --workload ingest --n $N --endpoint tcp://127.0.0.1:$EP >$dir/ingest.json
pending() { $B/therasync --endpoint tcp://127.0.0.1:$EP --json status | python3 -c 'import sys,json;print(json.load(sys.stdin)["pending"])'; }
echo "queued: $(pending)" >&2
t0=$(date +%s.%N)
curl -s 127.0.0.1:$AP/_control/faults -d '{}' >/dev/null
while [ "$(pending)" != 0 ]; do sleep 0.05; done
t1=$(date +%s.%N)
applied=$(curl -s 127.0.0.1:$AP/_control/stats | python3 -c 'import sys,json;print(json.load(sys.stdin)["applied_writes"])')
python3 -c "s=$t1-$t0; print('{\"workload\":\"replay\",\"n\":$N,\"seconds\":%.3f,\"ops_per_s\":%.0f,\"applied_writes\":$applied}' % (s, $N/s))"

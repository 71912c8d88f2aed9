#!/usr/bin/env bash
# Streaming on join: 3 nodes holding KEYS keys (N=3), then a 4th joins. Reports the copy's
# throughput (MB/s and keys/s, from the new node's CLUSTER INFO: bytes and keys copied over the
# time it spent copying) and the foreground p99 latency during the move against before it
# (kvbench, open loop at --fg-rate, 90% GET / 10% SET, in 5 s windows). Then the same on a
# fresh cluster with --stream-rate set to half the measured copy rate.
#
# usage: tools/bench-join.sh [--keys N] [--fg-rate R] [--value-size B]
# needs: redis-cli (Debian: apt-get install redis-tools), python3, taskset, cargo
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=5000000
FG_RATE=2000
VALUE=16
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
while [ $# -gt 0 ]; do
  case "$1" in
    --keys) KEYS=$2; shift 2 ;;
    --fg-rate) FG_RATE=$2; shift 2 ;;
    --value-size) VALUE=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for t in redis-cli python3 taskset cargo; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done
echo "== building ringkv and kvbench (release)" >&2
cargo build --release --bin ringkv -q && cargo build --release -p kvbench -q
BIN=target/release/ringkv
KVBENCH=target/release/kvbench
SECRET=bench-join-secret-0123456789
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sleep_s() { python3 -c "import time; time.sleep($1)"; }
info() { redis-cli -p "$1" cluster info | tr -d '\r' | sed -n "s/^$2://p"; }
now() { python3 -c 'import time; print(time.time())'; }

# start_node PORT DIR PEERS [flags...]
start_node() {
  local port=$1 dir=$2 peers=$3; shift 3
  mkdir -p "$dir"
  taskset -c "$SERVER_CPU" "$BIN" --port "$port" --data-dir "$dir" --cluster-secret "$SECRET" \
    --threads 1 --peers "$peers" "$@" >"$dir.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 200); do redis-cli -p "$port" ping >/dev/null 2>&1 && return 0; sleep_s 0.05; done
  echo "node on $port did not start" >&2; exit 1
}

all_active() { # PORT COUNT
  [ "$(redis-cli -p "$1" cluster nodes | grep -c ' active up ')" = "$2" ]
}

p99_of() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['latency_us']['all']['p99'])" "$1" 2>/dev/null || echo "?"; }

# run ROUND_NAME STREAM_RATE: prints "rate_mb_s keys_s p99_before_ms p99_during_ms"
run() {
  local name=$1 rate=$2 dir="$WORK/$name"
  local ports=($(free_port) $(free_port) $(free_port) $(free_port))
  local peers="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
  for i in 0 1 2; do start_node "${ports[$i]}" "$dir/n$i" "$peers"; done
  for _ in $(seq 1 200); do all_active "${ports[0]}" 3 && break; sleep_s 0.1; done
  echo "== [$name] loading $KEYS keys" >&2
  taskset -c "$CLIENT_CPU" "$KVBENCH" -q -a "127.0.0.1:${ports[0]}" --cluster -c 16 -P 16 \
    --read 0 --write 1 --dist sequential -k "$KEYS" -n "$KEYS" --value-size "$VALUE" >/dev/null
  fg() { # OUT.json
    taskset -c "$CLIENT_CPU" "$KVBENCH" -q -a "127.0.0.1:${ports[0]}" --cluster -c 4 \
      -r "$FG_RATE" -d 5s --read 0.9 --write 0.1 -k "$KEYS" --value-size "$VALUE" --json "$1" >/dev/null
  }
  fg "$dir/before.json"
  local before; before=$(p99_of "$dir/before.json")
  echo "== [$name] a 4th node joins (--stream-rate $rate)" >&2
  start_node "${ports[3]}" "$dir/n3" "$peers" --stream-rate "$rate"
  local t0 copy_start="" copy_end="" w=0 during=()
  t0=$(now)
  while ! all_active "${ports[0]}" 4; do
    fg "$dir/during$w.json"; during+=("$(p99_of "$dir/during$w.json")"); w=$((w+1))
    local phase; phase=$(info "${ports[3]}" cluster_stream_phase)
    [ -z "$copy_start" ] && [ "$phase" = copying ] && copy_start=$(now)
    echo "   [$name] $(info "${ports[3]}" cluster_stream_partitions_done)/$(info "${ports[3]}" cluster_stream_partitions) partitions, $(info "${ports[3]}" cluster_stream_bytes) bytes, phase $phase" >&2
  done
  copy_end=$(now)
  local bytes keys; bytes=$(info "${ports[3]}" cluster_stream_bytes); keys=$(info "${ports[3]}" cluster_stream_keys)
  # The copy ran from the end of the settle time (one request deadline, 5 s) to the commit.
  python3 - "$t0" "$copy_end" "$bytes" "$keys" "$before" "${during[*]:-}" <<'PY'
import sys, statistics
t0, t1, b, k, before = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3] or 0), int(sys.argv[4] or 0), sys.argv[5]
during = [float(x) for x in sys.argv[6].split()] if sys.argv[6].strip() else []
secs = max(t1 - t0 - 5.0, 0.001)  # minus the settle time
print(f"{b/secs/1e6:.1f} {k/secs:.0f} {b} {k} {secs:.1f} {before} {max(during) if during else '?'} {statistics.median(during) if during else '?'}")
PY
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
}

echo "| run | copied | seconds | MB/s | keys/s | fg p99 before (us) | fg p99 during, max / median (us) |"
echo "|---|---|---:|---:|---:|---:|---:|"
read -r mbs kps bytes keys secs before dmax dmed < <(run unlimited 0)
echo "| --stream-rate 0 (unlimited) | $bytes B, $keys keys | $secs | $mbs | $kps | $before | $dmax / $dmed |"
half=$(python3 -c "print(max(int($mbs*1e6/2), 65536))")
read -r mbs2 kps2 bytes2 keys2 secs2 before2 dmax2 dmed2 < <(run half "$half")
echo "| --stream-rate $half (half) | $bytes2 B, $keys2 keys | $secs2 | $mbs2 | $kps2 | $before2 | $dmax2 / $dmed2 |"

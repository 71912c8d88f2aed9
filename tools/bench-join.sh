#!/usr/bin/env bash
# Streaming on join: 3 nodes holding KEYS keys (N=3), then a 4th joins. Reports the copy's
# throughput (MB/s and keys/s: the new node's CLUSTER INFO bytes and keys copied, over the time
# its phase was `copying`, sampled every 0.2 s) and the foreground p99 latency (kvbench through
# the cluster client, open loop at --fg-rate, 90% GET / 10% SET, 5 s windows) before, during
# the move, and in the window after the commit (when the old owners drop what they gave away).
# Then the same on a fresh cluster with --stream-rate set to half the measured copy rate.
# Servers on core $SERVER_CPU (all four nodes share it), clients on core $CLIENT_CPU.
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
  local name=$1
  local rate=$2
  local dir="$WORK/$name"
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
  # Every 0.2 s: the time, the new node's phase, bytes and keys copied (the copy's start and
  # end are the first samples with phase copying and with done/idle after it).
  ( while :; do
      echo "$(now) $(info "${ports[3]}" cluster_stream_phase) $(info "${ports[3]}" cluster_stream_bytes) $(info "${ports[3]}" cluster_stream_keys)"
      sleep_s 0.2
    done ) >"$dir/phases" 2>/dev/null &
  local poller=$!
  local w=0 during=() after=""
  while ! all_active "${ports[0]}" 4; do
    fg "$dir/during$w.json"; during+=("$(p99_of "$dir/during$w.json")"); w=$((w+1))
    echo "   [$name] $(tail -1 "$dir/phases")" >&2
  done
  # The window after the commit: the old owners drop the partitions they gave away.
  fg "$dir/after.json"; after=$(p99_of "$dir/after.json")
  kill "$poller" 2>/dev/null || true
  python3 - "$dir/phases" "$before" "${during[*]:-}" "$after" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1]) if len(l.split()) == 4]
start = next((float(r[0]) for r in rows if r[1] == "copying"), None)
end = next((float(r[0]) for r in rows if start and float(r[0]) > start and r[1] in ("done", "idle")), None)
b, k = (int(rows[-1][2]), int(rows[-1][3])) if rows else (0, 0)
secs = (end - start) if start and end else float("nan")
during = [float(x) for x in sys.argv[3].split()] if sys.argv[3].strip() else []
med = statistics.median(during) if during else float("nan")
mx = max(during) if during else float("nan")
print(f"{b/secs/1e6:.1f} {k/secs:.0f} {b} {k} {secs:.1f} {float(sys.argv[2]):.0f} {mx:.0f} {med:.0f} {float(sys.argv[4]):.0f}")
PY
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
}

echo "| run | copied | copy s | MB/s | keys/s | fg p99 before (us) | fg p99 during the move, median / max of 5 s windows (us) | fg p99 in the 5 s after the commit (us) |"
echo "|---|---|---:|---:|---:|---:|---:|---:|"
read -r mbs kps bytes keys secs before dmax dmed after < <(run unlimited 0)
echo "| --stream-rate 0 (unlimited) | $bytes B, $keys keys | $secs | $mbs | $kps | $before | $dmed / $dmax | $after |"
half=$(python3 -c "print(max(int($mbs*1e6/2), 65536))")
read -r mbs2 kps2 bytes2 keys2 secs2 before2 dmax2 dmed2 after2 < <(run half "$half")
echo "| --stream-rate $half (half) | $bytes2 B, $keys2 keys | $secs2 | $mbs2 | $kps2 | $before2 | $dmed2 / $dmax2 | $after2 |"

#!/usr/bin/env bash
# Durable writes side by side: ringkv --fsync always vs redis-server --appendonly yes
# --appendfsync always; same pinning (server on $SERVER_CPU, redis-benchmark on $CLIENT_CPU),
# data on the same disk ($BENCH_DIR, default a temp dir under the repository), rounds
# alternating. Also prints the disk's raw fdatasync latency, the floor for one durable write.
#
# usage: tools/bench-durable.sh [-n REQUESTS] [-r ROUNDS] [-s SHARDS]
# needs: redis-server, redis-benchmark, redis-cli, python3, taskset, cargo
set -euo pipefail
cd "$(dirname "$0")/.."
N=200000
ROUNDS=3
SHARDS=1
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    -r) ROUNDS=$2; shift 2 ;;
    -s) SHARDS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for t in redis-server redis-benchmark redis-cli python3 taskset cargo; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
cargo build --release --bin ringkv -q
BASE=${BENCH_DIR:-$PWD/target}
WORK=$(mktemp -d "$BASE/bench-durable.XXXXXX")
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 1 200); do redis-cli -p "$1" ping 2>/dev/null | grep -q PONG && return 0; python3 -c 'import time; time.sleep(0.05)'; done; exit 1; }

python3 tools/fsync-latency.py "$WORK" 2000
RKP=$(free_port)
taskset -c "$SERVER_CPU" target/release/ringkv --port "$RKP" --threads 1 --shards "$SHARDS" \
  --fsync always --data-dir "$WORK/ringkv" --log-level warn &
pids+=($!); wait_ping "$RKP"
RDP=$(free_port)
mkdir -p "$WORK/redis"
taskset -c "$SERVER_CPU" redis-server --port "$RDP" --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync always --dir "$WORK/redis" --daemonize no --loglevel warning >/dev/null &
pids+=($!); wait_ping "$RDP"
echo "== ringkv --fsync always ($SHARDS shards, 1 loop) on $RKP; redis appendfsync always on $RDP; data in $WORK" >&2

declare -A res
for C in 50 1; do
  n=$N; [ "$C" = 1 ] && n=$((N / 10))
  for r in $(seq 1 "$ROUNDS"); do
    for who in ringkv redis; do
      port=$([ $who = ringkv ] && echo "$RKP" || echo "$RDP")
      out=$(taskset -c "$CLIENT_CPU" redis-benchmark -p "$port" -t set -c "$C" -n "$n" -r 1000000 --csv 2>/dev/null | grep '"SET"')
      rps=$(echo "$out" | awk -F'","' '{print $2}')
      p50=$(echo "$out" | awk -F'","' '{print $5}')
      res[$who,$C]+="$rps "; res[$who,$C,p50]+="$p50 "
      echo "   round $r -c $C $who: $rps SET/s, p50 $p50 ms" >&2
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '\n%-34s %12s %12s %8s\n' "durable SET (median of rounds)" ringkv redis ratio
for C in 50 1; do
  a=$(echo "${res[ringkv,$C]}" | median); b=$(echo "${res[redis,$C]}" | median)
  printf '%-34s %12.0f %12.0f %8.2f\n' "SET/s -c $C" "$a" "$b" "$(python3 -c "print($a/$b)")"
  a=$(echo "${res[ringkv,$C,p50]}" | median); b=$(echo "${res[redis,$C,p50]}" | median)
  printf '%-34s %12s %12s\n' "p50 latency ms -c $C" "$a" "$b"
done

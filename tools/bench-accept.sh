#!/usr/bin/env bash
# The two ways of spreading connections over event loops, side by side:
#   reuseport: every loop has its own SO_REUSEPORT listener and the kernel balances;
#   handoff:   loop 0 accepts and deals connections round-robin to the loops.
# Both run with --threads 2; rounds alternate. The server and redis-benchmark share the
# machine's cores (there are only two), so read the ratio, not the absolute numbers.
#
# usage: tools/bench-accept.sh [-n REQUESTS] [-r ROUNDS]
# needs: redis-benchmark, redis-cli (apt-get install redis-tools), python3, cargo
set -euo pipefail
cd "$(dirname "$0")/.."
N=500000
ROUNDS=3
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    -r) ROUNDS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for t in redis-benchmark redis-cli python3 cargo; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install redis-tools python3)" >&2; exit 1; }
done
cargo build --release --bin ringkv -q
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 1 200); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; python3 -c 'import time; time.sleep(0.05)'; done; exit 1; }
declare -A port
for mode in reuseport handoff; do
  port[$mode]=$(free_port)
  target/release/ringkv --port "${port[$mode]}" --threads 2 --accept "$mode" \
    --data-dir "$WORK/$mode" --log-level warn &
  pids+=($!)
  wait_ping "${port[$mode]}"
done
declare -A res
for P in 1 16; do
  for r in $(seq 1 "$ROUNDS"); do
    for mode in reuseport handoff; do
      read -r s g < <(redis-benchmark -p "${port[$mode]}" -t set,get -c 50 -n "$N" -P "$P" --csv 2>/dev/null |
        awk -F'","' '/"SET"/ {s=$2} /"GET"/ {g=$2} END {print s, g}')
      res[$mode,$P,set]+="$s "; res[$mode,$P,get]+="$g "
      echo "   round $r P$P $mode: SET $s GET $g" >&2
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
printf '\n%-22s %12s %12s %8s\n' "req/s (median)" reuseport handoff ratio
for P in 1 16; do
  for op in set get; do
    a=$(echo "${res[reuseport,$P,$op]}" | median); b=$(echo "${res[handoff,$P,$op]}" | median)
    printf '%-22s %12.0f %12.0f %8.2f\n' "${op^^} -c 50 -P $P" "$a" "$b" "$(python3 -c "print($a/$b)")"
  done
done

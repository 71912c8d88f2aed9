#!/usr/bin/env bash
# Side-by-side: ringkv vs redis-server on this machine, same client (redis-benchmark), same
# pinning (server on core $SERVER_CPU, benchmark on core $CLIENT_CPU), persistence off for both
# (ringkv --fsync off, redis --save "" --appendonly no).
# Rounds alternate between the two servers so that machine noise hits both alike; the table
# shows the median of the rounds and the ratio ringkv/redis.
#
# Rows: redis-benchmark SET/GET at -P 1 and -P 16 (50 connections), kvbench zipfian 90/10,
# durable SET at -P 1 and -P 16 (ringkv --fsync always vs redis appendfsync always), RSS per key
# for 1M keys.
#
# usage: tools/bench-vs-redis.sh [-n REQUESTS] [-r ROUNDS] [--quick]
# needs: redis-server, redis-benchmark, redis-cli (Debian: apt-get install redis-server redis-tools),
#        python3, taskset (util-linux), cargo
set -euo pipefail
cd "$(dirname "$0")/.."

N=1000000
ROUNDS=3
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    -r) ROUNDS=$2; shift 2 ;;
    --quick) N=200000; ROUNDS=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

missing=()
for t in redis-server redis-benchmark redis-cli python3 taskset cargo; do
  command -v "$t" >/dev/null || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools: ${missing[*]}" >&2
  echo "install with: apt-get install redis-server redis-tools python3 util-linux" >&2
  exit 1
fi

echo "== building ringkv and kvbench (release)" >&2
cargo build --release --bin ringkv -q && cargo build --release -p kvbench -q
KVBENCH=target/release/kvbench
BIN=target/release/ringkv
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { for _ in $(seq 1 200); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; python3 -c 'import time; time.sleep(0.05)'; done; echo "server on $1 did not start" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2 * 1024}' "/proc/$1/status"; }

start_ringkv() { # port
  taskset -c "$SERVER_CPU" "$BIN" --port "$1" --threads 1 --fsync off --data-dir "$WORK/ringkv-$1" --log-level warn &
  pids+=($!); RK_PID=$!; wait_ping "$1"
}
start_redis() { # port
  taskset -c "$SERVER_CPU" redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$WORK" --daemonize no --loglevel warning >/dev/null &
  pids+=($!); RD_PID=$!; wait_ping "$1"
}

RKP=$(free_port); start_ringkv "$RKP"
RDP=$(free_port); start_redis "$RDP"
echo "== ringkv on $RKP (pid $RK_PID), redis $(redis-server --version | awk '{print $3}') on $RDP (pid $RD_PID)" >&2
echo "== server on cpu $SERVER_CPU, redis-benchmark on cpu $CLIENT_CPU, -c 50 -n $N, $ROUNDS rounds" >&2

declare -A results
bench() { # port pipeline -> "set get"
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$1" -t set,get -c 50 -n "$N" -P "$2" --csv 2>/dev/null |
    awk -F'","' '/"SET"/ {s=$2} /"GET"/ {g=$2} END {print s, g}'
}
for P in 1 16; do
  for r in $(seq 1 "$ROUNDS"); do
    for who in ringkv redis; do
      port=$([ $who = ringkv ] && echo "$RKP" || echo "$RDP")
      read -r s g < <(bench "$port" "$P")
      results[$who,$P,set]+="$s "
      results[$who,$P,get]+="$g "
      echo "   round $r P$P $who: SET $s GET $g" >&2
    done
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# kvbench, zipfian 90/10 over RESP (same client for both), 50 connections x pipeline 16.
for r in $(seq 1 "$ROUNDS"); do
  for who in ringkv redis; do
    port=$([ $who = ringkv ] && echo "$RKP" || echo "$RDP")
    rps=$(taskset -c "$CLIENT_CPU" "$KVBENCH" --proto resp -a "127.0.0.1:$port" -c 50 -P 16 \
      --dist zipfian --keys 100000 --read 0.9 --write 0.1 --duration 5s --warmup 1s -q \
      --json - 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput"]["requests_per_sec"])')
    results[$who,zipf]+="$rps "
    echo "   round $r zipfian 90/10 $who: $rps req/s" >&2
  done
done

# Durable writes: ringkv --fsync always vs redis appendfsync always, fresh servers.
DKP=$(free_port)
taskset -c "$SERVER_CPU" "$BIN" --port "$DKP" --threads 1 --fsync always --data-dir "$WORK/ringkv-durable" --log-level warn &
pids+=($!); wait_ping "$DKP"
DRP=$(free_port); mkdir -p "$WORK/redis-durable"
taskset -c "$SERVER_CPU" redis-server --port "$DRP" --bind 127.0.0.1 --save '' --appendonly yes \
  --appendfsync always --dir "$WORK/redis-durable" --daemonize no --loglevel warning >/dev/null &
pids+=($!); wait_ping "$DRP"
for r in $(seq 1 "$ROUNDS"); do
  for P in 1 16; do
    for who in ringkv redis; do
      port=$([ $who = ringkv ] && echo "$DKP" || echo "$DRP")
      rps=$(taskset -c "$CLIENT_CPU" redis-benchmark -p "$port" -t set -c 50 -P "$P" -n $((N / 5)) -r 1000000 --csv 2>/dev/null |
        awk -F'","' '/"SET"/ {print $2}')
      results[$who,fsync$P]+="$rps "
      echo "   round $r fsync always -P $P $who: $rps SET/s" >&2
    done
  done
done

echo "== memory: 1,000,000 SETs of 16-byte keys and 16-byte values" >&2
python3 tools/gen-keys.py 1000000 16 > "$WORK/keys.resp"
redis-cli -p "$RKP" flushall >/dev/null; redis-cli -p "$RDP" flushall >/dev/null
rk0=$(rss "$RK_PID"); redis-cli -p "$RKP" --pipe < "$WORK/keys.resp" >/dev/null; rk1=$(rss "$RK_PID")
rd0=$(rss "$RD_PID"); redis-cli -p "$RDP" --pipe < "$WORK/keys.resp" >/dev/null; rd1=$(rss "$RD_PID")
rkb=$(( (rk1 - rk0) / 1000000 )); rdb=$(( (rd1 - rd0) / 1000000 ))

printf '\n%-28s %14s %14s %8s\n' "workload (req/s, median)" ringkv redis ratio
for P in 1 16; do
  for op in set get; do
    a=$(echo "${results[ringkv,$P,$op]}" | median); b=$(echo "${results[redis,$P,$op]}" | median)
    printf '%-28s %14.0f %14.0f %8.2f\n' "${op^^} -c 50 -P $P" "$a" "$b" "$(python3 -c "print($a/$b)")"
  done
done
for row in "zipf:zipfian 90/10 -P 16 (kvbench)" "fsync1:SET fsync always -c 50" "fsync16:SET fsync always -c 50 -P 16"; do
  k=${row%%:*}; label=${row#*:}
  a=$(echo "${results[ringkv,$k]}" | median); b=$(echo "${results[redis,$k]}" | median)
  printf '%-28s %14.0f %14.0f %8.2f\n' "$label" "$a" "$b" "$(python3 -c "print($a/$b)")"
done
printf '%-28s %14s %14s %8.2f\n' "RSS bytes/key (1M keys)" "$rkb" "$rdb" "$(python3 -c "print($rkb/$rdb)")"
echo "(memory ratio: lower is better; throughput: higher is better)"

#!/usr/bin/env bash
# Restart time with N keys (16-byte keys, 32-byte values), ringkv vs redis-server, same data:
#   ringkv from WAL only, ringkv from snapshot + WAL, redis from an AOF of plain commands
#   (aof-use-rdb-preamble no), redis from an RDB. Time = process start → first PING answered
#   (Redis answers -LOADING until loaded). Both servers pinned to $SERVER_CPU... unless
#   PIN=no, since recovery of ringkv runs shards in parallel (say which in the note).
#
# usage: tools/bench-recovery.sh [-k KEYS]
# needs: redis-server, redis-cli, python3, cargo
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=10000000
while [ $# -gt 0 ]; do
  case "$1" in
    -k) KEYS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for t in redis-server redis-cli python3 cargo; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install redis-server redis-tools)" >&2; exit 1; }
done
cargo build --release --bin ringkv -q
BASE=${BENCH_DIR:-$PWD/target}
WORK=$(mktemp -d "$BASE/bench-recovery.XXXXXX")
PID=""
cleanup() { [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { python3 -c 'import time; print(time.time())'; }
# Waits until PING answers PONG (not -LOADING); prints seconds since $1.
ready_after() {
  local t0=$1 port=$2
  for _ in $(seq 1 100000); do
    if [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ]; then
      python3 -c "import time; print(f'{time.time() - $t0:.2f}')"; return 0
    fi
    python3 -c 'import time; time.sleep(0.02)'
  done
  echo "never ready" >&2; exit 1
}

echo "== generating $KEYS SETs (16 B keys, 32 B values)" >&2
python3 tools/gen-keys.py "$KEYS" 32 > "$WORK/keys.resp"

PORT=$(free_port)
RK=(target/release/ringkv --port "$PORT" --data-dir "$WORK/ringkv" --fsync never
    --snapshot-wal-bytes 0 --snapshot-interval-secs 0 --log-level warn)
"${RK[@]}" & PID=$!
ready_after "$(now)" "$PORT" >/dev/null
echo "== loading ringkv" >&2
redis-cli -p "$PORT" --pipe < "$WORK/keys.resp" >/dev/null
[ "$(redis-cli -p "$PORT" dbsize)" = "$KEYS" ] || { echo "ringkv dbsize mismatch" >&2; exit 1; }
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
du -sh "$WORK/ringkv" >&2
t0=$(now); "${RK[@]}" & PID=$!
rk_wal=$(ready_after "$t0" "$PORT")
[ "$(redis-cli -p "$PORT" dbsize)" = "$KEYS" ] || { echo "ringkv lost keys" >&2; exit 1; }
echo "   ringkv from WAL only: ${rk_wal}s" >&2
redis-cli -p "$PORT" bgsave >/dev/null
until redis-cli -p "$PORT" info persistence | grep -q 'snapshot_in_progress:0' &&
      [ "$(redis-cli -p "$PORT" info persistence | grep snapshots_taken | tr -dc 0-9)" -ge 1 ]; do
  python3 -c 'import time; time.sleep(0.2)'
done
redis-cli -p "$PORT" set after-snapshot 1 >/dev/null
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
du -sh "$WORK/ringkv" >&2
t0=$(now); "${RK[@]}" & PID=$!
rk_snap=$(ready_after "$t0" "$PORT")
echo "   ringkv from snapshot + WAL: ${rk_snap}s" >&2
kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=""

mkdir -p "$WORK/redis"
RD=(redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly yes
    --aof-use-rdb-preamble no --appendfsync no --daemonize no --loglevel warning)
"${RD[@]}" >/dev/null & PID=$!
ready_after "$(now)" "$PORT" >/dev/null
echo "== loading redis" >&2
redis-cli -p "$PORT" --pipe < "$WORK/keys.resp" >/dev/null
redis-cli -p "$PORT" save >/dev/null   # also an RDB of the same data
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
du -sh "$WORK/redis" >&2
t0=$(now); "${RD[@]}" >/dev/null & PID=$!
rd_aof=$(ready_after "$t0" "$PORT")
echo "   redis from AOF: ${rd_aof}s" >&2
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
RD2=(redis-server --port "$PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save '' --appendonly no
    --daemonize no --loglevel warning)
t0=$(now); "${RD2[@]}" >/dev/null & PID=$!
rd_rdb=$(ready_after "$t0" "$PORT")
echo "   redis from RDB: ${rd_rdb}s" >&2

printf '\n%-36s %10s\n' "restart with $KEYS keys" "seconds"
printf '%-36s %10s\n' "ringkv, WAL only" "$rk_wal" "ringkv, snapshot + WAL" "$rk_snap" \
  "redis, AOF (plain commands)" "$rd_aof" "redis, RDB" "$rd_rdb"
printf '%-36s %10.2f\n' "ratio WAL / AOF (lower is better)" "$(python3 -c "print($rk_wal/$rd_aof)")"
printf '%-36s %10.2f\n' "ratio snapshot / RDB" "$(python3 -c "print($rk_snap/$rd_rdb)")"

#!/usr/bin/env bash
# SCAN throughput over a 3-node cluster (issue 11): loads KEYS distinct keys (default
# 1,000,000) with pipelined MSETs through the three nodes at once, then times full SCAN
# iterations (the script fails if a key is missing) at several COUNTs (a raw-RESP Python
# loop) and with redis-cli --scan, through one node, and KEYS for comparison.
# --threads 1 --fsync batch per node, everything on this machine's cores.
#
# With --replicas 3 (N=3, the default) the node scanned through holds every partition, so
# every slice is read locally; --replicas 1 makes two thirds of them SCAN_PARTITION calls to
# the other nodes (W=R=min(2, N)).
#
# usage: tools/bench-scan.sh [-k KEYS] [--counts "10 100 1000"] [--replicas N]
# needs: redis-cli (Debian: apt-get install redis-tools), python3, cargo
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=1000000
COUNTS="10 100 1000 10000"
REPLICAS=3
while [ $# -gt 0 ]; do
  case "$1" in
    -k) KEYS=$2; shift 2 ;;
    --counts) COUNTS=$2; shift 2 ;;
    --replicas) REPLICAS=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
for t in redis-cli python3 cargo; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

echo "== building ringkv (release)" >&2
cargo build --release --bin ringkv -q
BIN=target/release/ringkv
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { python3 -c 'import time; print(time.monotonic())'; }
SECRET=bench-scan-secret-0123456789
Q=$(( REPLICAS < 2 ? REPLICAS : 2 ))
ports=("$(free_port)" "$(free_port)" "$(free_port)")
for i in 0 1 2; do
  peers=""
  for j in 0 1 2; do [ "$j" != "$i" ] && peers+="127.0.0.1:${ports[$j]},"; done
  "$BIN" --port "${ports[$i]}" --threads 1 --fsync batch --data-dir "$WORK/node$i" \
    --cluster-secret "$SECRET" --peers "${peers%,}" --n "$REPLICAS" --w "$Q" --r "$Q" --log-level warn &
  pids+=($!)
done
for p in "${ports[@]}"; do
  for _ in $(seq 1 400); do
    [ "$(redis-cli -p "$p" cluster nodes 2>/dev/null | grep -c ' up ')" -ge 3 ] && break
    python3 -c 'import time; time.sleep(0.05)'
  done
done

echo "== loading $KEYS keys (MSET of 1,000, 4 in flight per connection, one connection per node)" >&2
t0=$(now)
python3 - "$KEYS" "${ports[@]}" <<'PY'
import socket, sys, threading
total = int(sys.argv[1]); ports = [int(p) for p in sys.argv[2:]]
BATCH, WINDOW = 1000, 4
def enc(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)
def load(port, lo, hi):
    s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
    cmds = []
    for start in range(lo, hi, BATCH):
        args = [b"MSET"]
        for i in range(start, min(start + BATCH, hi)):
            args += [b"key:%d" % i, b"v%d" % i]
        cmds.append(enc(args))
    for w in range(0, len(cmds), WINDOW):
        chunk = cmds[w:w + WINDOW]
        s.sendall(b"".join(chunk))
        for _ in chunk:
            line = f.readline()
            if line != b"+OK\r\n":
                sys.exit("MSET failed on port %d: %r" % (port, line))
per = -(-total // len(ports))
ts = [threading.Thread(target=load, args=(p, i * per, min(total, (i + 1) * per))) for i, p in enumerate(ports)]
for t in ts: t.start()
for t in ts: t.join()
PY
t1=$(now)
python3 -c "print('load: %d keys in %.1f s (%.0f keys/s)' % ($KEYS, $t1 - $t0, $KEYS / ($t1 - $t0)))"

P=${ports[0]}
# Replicas catch up after the load (writes acknowledged at W=2 of 3; the third copy, or its
# hint, follows): measure on a quiet cluster, where DBSIZE is exact.
for _ in $(seq 1 600); do
  [ "$(redis-cli -p "$P" dbsize)" = "$KEYS" ] && break
  python3 -c 'import time; time.sleep(0.1)'
done
echo "DBSIZE: $(redis-cli -p "$P" dbsize)"

# A full SCAN iteration at COUNT c, raw RESP over one connection: keys/s, and every key once.
scan_py() {
  python3 - "$P" "$1" "$KEYS" <<'PY'
import socket, sys, time
port, count, want = int(sys.argv[1]), sys.argv[2].encode(), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
def call(*args):
    s.sendall(b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args))
    return read()
def read():
    line = f.readline()
    t, rest = line[:1], line[1:-2]
    if t == b"*":
        return [read() for _ in range(int(rest))]
    if t == b"$":
        n = int(rest); b = f.read(n + 2)[:-2]; return b
    if t == b"-":
        sys.exit("error: %r" % rest)
    return rest
t0 = time.monotonic(); cursor = b"0"; seen = set(); n = 0; calls = 0
while True:
    cursor, keys = call(b"SCAN", cursor, b"COUNT", count)
    n += len(keys); seen.update(keys); calls += 1
    if cursor == b"0":
        break
dt = time.monotonic() - t0
if len(seen) != want:
    sys.exit("SCAN COUNT %s returned %d distinct keys of %d" % (count.decode(), len(seen), want))
print("SCAN COUNT %s: %d keys (%d distinct) in %d calls, %.2f s = %.0f keys/s"
      % (count.decode(), n, len(seen), calls, dt, n / dt))
PY
}
for c in $COUNTS; do
  for round in 1 2; do scan_py "$c"; done
done
t0=$(now)
redis-cli -p "$P" --scan > "$WORK/scan.txt"
t1=$(now)
n=$(sort -u "$WORK/scan.txt" | wc -l)
[ "$n" -eq "$KEYS" ] || { echo "redis-cli --scan returned $n distinct keys of $KEYS" >&2; exit 1; }
python3 -c "print('redis-cli --scan (COUNT 10): %d keys in %.2f s = %.0f keys/s' % ($n, $t1 - $t0, $n / ($t1 - $t0)))"
t0=$(now)
redis-cli -p "$P" keys '*' > "$WORK/keys.txt"
t1=$(now)
n=$(sort -u "$WORK/keys.txt" | wc -l)
python3 -c "print('KEYS *: %d keys in %.2f s = %.0f keys/s' % ($n, $t1 - $t0, $n / ($t1 - $t0)))"

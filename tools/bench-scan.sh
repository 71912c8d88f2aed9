#!/usr/bin/env bash
# SCAN throughput over a 3-node cluster (issue 11): loads KEYS distinct keys (default
# 1,000,000) with pipelined MSETs through the three nodes at once, then times full SCAN
# iterations with redis-cli --scan (each key counted; the script fails if a key is missing)
# at several COUNTs, through one node, and DBSIZE and KEYS for comparison.
# N=3 W=2 R=2, --threads 1 --fsync batch per node, everything on this machine's cores.
#
# usage: tools/bench-scan.sh [-k KEYS] [--counts "10 100 1000"]
# needs: redis-cli (Debian: apt-get install redis-tools), python3, cargo
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=1000000
COUNTS="100 1000 10000"
while [ $# -gt 0 ]; do
  case "$1" in
    -k) KEYS=$2; shift 2 ;;
    --counts) COUNTS=$2; shift 2 ;;
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
ports=("$(free_port)" "$(free_port)" "$(free_port)")
for i in 0 1 2; do
  peers=""
  for j in 0 1 2; do [ "$j" != "$i" ] && peers+="127.0.0.1:${ports[$j]},"; done
  "$BIN" --port "${ports[$i]}" --threads 1 --fsync batch --data-dir "$WORK/node$i" \
    --cluster-secret "$SECRET" --peers "${peers%,}" --n 3 --w 2 --r 2 --log-level warn &
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
echo "DBSIZE: $(redis-cli -p "$P" dbsize)"
for c in $COUNTS; do
  for round in 1 2; do
    t0=$(now)
    redis-cli -p "$P" --scan --count "$c" > "$WORK/scan.txt"
    t1=$(now)
    n=$(sort -u "$WORK/scan.txt" | wc -l)
    [ "$n" -eq "$KEYS" ] || { echo "SCAN COUNT $c returned $n distinct keys of $KEYS" >&2; exit 1; }
    python3 -c "print('SCAN COUNT %s (round $round): %d keys in %.2f s = %.0f keys/s' % ('$c', $n, $t1 - $t0, $n / ($t1 - $t0)))"
  done
done
t0=$(now)
redis-cli -p "$P" keys '*' > "$WORK/keys.txt"
t1=$(now)
n=$(sort -u "$WORK/keys.txt" | wc -l)
python3 -c "print('KEYS *: %d keys in %.2f s = %.0f keys/s' % ($n, $t1 - $t0, $n / ($t1 - $t0)))"

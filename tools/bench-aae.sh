#!/usr/bin/env bash
# Anti-entropy cost (issue 12, "Measure"): two nodes, N=2 (each holds every key), KEYS keys
# (default 5,000,000). Measures, for one CLUSTER AAE round started on node 1:
#   1. replicas in sync: round time, CPU time of both processes, bytes exchanged;
#   2. after node 1 missed DIFF writes (default 100: overwrites of existing keys, made while it
#      was down, hinted handoff and read repair off): the same, and that every one arrived.
# Both nodes run --aae off (no periodic round), --aae-rate 0 (unthrottled), --threads 1.
# CPU time is utime+stime from /proc (10 ms ticks) over the round, idle work (heartbeats)
# included.
#
# usage: tools/bench-aae.sh [KEYS] [DIFF]
# needs: redis-cli (Debian: apt-get install redis-tools), python3, cargo
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-5000000}
DIFF=${2:-100}
for t in redis-cli python3 cargo; do
  command -v "$t" >/dev/null || { echo "missing tool: $t" >&2; exit 1; }
done

echo "== building ringkv (release)" >&2
cargo build --release --bin ringkv -q
BIN=target/release/ringkv
WORK=$(mktemp -d)
declare -A pid
cleanup() { for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { python3 -c 'import time; print(time.monotonic())'; }
sleep_s() { python3 -c "import time; time.sleep($1)"; }
cpu_ms() { awk '{ print ($14 + $15) * 10 }' "/proc/$1/stat"; }
info() { redis-cli -p "$1" info cluster | tr -d '\r' | sed -n "s/^$2://p"; }
SECRET=bench-aae-secret-0123456789
ports=("$(free_port)" "$(free_port)")
start() {
  local i=$1 j=$(( 1 - $1 ))
  "$BIN" --port "${ports[$i]}" --threads 1 --fsync batch --data-dir "$WORK/node$i" \
    --cluster-secret "$SECRET" --peers "127.0.0.1:${ports[$j]}" --n 2 --w 1 --r 1 \
    --hinted-handoff off --read-repair off --aae off --aae-rate 0 --log-level warn &
  pid[$i]=$!
}
wait_up() {
  for _ in $(seq 1 2400); do
    [ "$(redis-cli -p "$1" cluster nodes 2>/dev/null | grep -c ' up ')" -ge 2 ] && return 0
    sleep_s 0.05
  done
  echo "node on $1 did not see both nodes up" >&2; exit 1
}
start 0; start 1
wait_up "${ports[0]}"; wait_up "${ports[1]}"

echo "== loading $KEYS keys (MSET of 1,000, 4 in flight, one connection per node)" >&2
t0=$(now)
python3 - "$KEYS" "${ports[@]}" <<'PY'
import socket, sys, threading
total = int(sys.argv[1]); ports = [int(p) for p in sys.argv[2:]]
BATCH, WINDOW = 1000, 4
def enc(args):
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)
def load(port, lo, hi):
    s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
    starts = list(range(lo, hi, BATCH))
    for w in range(0, len(starts), WINDOW):
        chunk = starts[w:w + WINDOW]
        out = []
        for st in chunk:
            args = [b"MSET"]
            for i in range(st, min(st + BATCH, hi)):
                args += [b"key:%d" % i, b"v%d" % i]
            out.append(enc(args))
        s.sendall(b"".join(out))
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
python3 -c "print('load: %d keys in %.1f s' % ($KEYS, $t1 - $t0))"

# One round on node 1, reported: wall time, CPU ms of each node, bytes, keys, segments.
round() {
  local p=${ports[1]} r0 b0 k0 s0 c0 c1 t0 t1
  r0=$(info "$p" cluster_aae_rounds); b0=$(info "$p" cluster_aae_bytes_exchanged)
  k0=$(info "$p" cluster_aae_keys_repaired); s0=$(info "$p" cluster_aae_segments_differing)
  c0=$(cpu_ms "${pid[0]}"); c1=$(cpu_ms "${pid[1]}"); t0=$(now)
  redis-cli -p "$p" cluster aae >/dev/null
  while [ "$(info "$p" cluster_aae_rounds)" = "$r0" ]; do sleep_s 0.01; done
  t1=$(now)
  echo "$1: round $(info "$p" cluster_aae_last_round_ms) ms (seen in $(python3 -c "print('%.0f' % (($t1 - $t0) * 1000))") ms)," \
    "CPU node0 $(( $(cpu_ms "${pid[0]}") - c0 )) ms + node1 $(( $(cpu_ms "${pid[1]}") - c1 )) ms," \
    "bytes $(( $(info "$p" cluster_aae_bytes_exchanged) - b0 ))," \
    "keys repaired $(( $(info "$p" cluster_aae_keys_repaired) - k0 ))," \
    "segments differing $(( $(info "$p" cluster_aae_segments_differing) - s0 ))"
}

# W=1: the second copy of the last writes may still be on its way; rounds until in sync.
round "first round after the load (catches any late replica write)"
round "in sync"
round "in sync"

echo "== node 1 down; $DIFF overwrites on node 0; node 1 back" >&2
kill "${pid[1]}"; wait "${pid[1]}" 2>/dev/null || true
python3 - "${ports[0]}" "$KEYS" "$DIFF" <<'PY'
import socket, sys
port, keys, diff = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
for j in range(diff):
    k = b"key:%d" % (j * (keys // diff))
    s.sendall(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$7\r\nchanged\r\n" % (len(k), k))
    line = f.readline()
    if line != b"+OK\r\n":
        sys.exit("SET failed: %r" % line)
PY
# Node 0's replica writes to node 1 wait for its link up to --peer-timeout-ms (2 s): let them
# time out, or they reach node 1 when it returns and nothing is left for anti-entropy.
sleep_s 3
t0=$(now); start 1; wait_up "${ports[1]}"; wait_up "${ports[0]}"; t1=$(now)
python3 -c "print('node 1 restart (recovery of %d keys, links up): %.1f s' % ($KEYS, $t1 - $t0))"
differing() {
  local n=0
  for j in $(seq 0 $(( DIFF - 1 ))); do
    [ "$(redis-cli -p "${ports[1]}" cluster getlocal "key:$(( j * (KEYS / DIFF) ))")" = changed ] || n=$(( n + 1 ))
  done
  echo "$n"
}
echo "keys differing on node 1 before the round: $(differing)"
round "$DIFF keys differ"
echo "keys still differing on node 1 after the round: $(differing)"
round "in sync again"
echo "node 1 RSS: $(awk '/VmRSS/ { print $2 / 1024 " MiB" }' "/proc/${pid[1]}/status")," \
  "used_memory: $(redis-cli -p "${ports[1]}" info memory | tr -d '\r' | sed -n 's/^used_memory_human://p')"

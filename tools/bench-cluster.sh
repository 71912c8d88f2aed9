#!/usr/bin/env bash
# A 3-node cluster vs one standalone node on this machine, same client (redis-benchmark), same
# pinning (every server on core $SERVER_CPU, the client on core $CLIENT_CPU; SERVER_CPU=any
# lets the servers run on every core, as the client then does too), all with
# --threads 1 --fsync $FSYNC (default always); the cluster with N=3 W=2 R=2. Rounds alternate between the two
# so that machine noise hits both alike; the table shows medians and the ratio cluster/standalone,
# with p50 and p99 latency.
#
# Then, on the cluster only: SET -P 16 throughput with one of the three nodes down, and while
# it returns and hints replay, as a ratio to all nodes up.
#
# usage: tools/bench-cluster.sh [-n REQUESTS] [-r ROUNDS] [--quick] [--ops "set get incr mset"]
#        [--ops-only]
#   --ops       the redis-benchmark tests compared (default: set get)
#   --ops-only  only that comparison (no kvbench, no node-down rounds)
# needs: redis-benchmark, redis-cli (Debian: apt-get install redis-tools), python3, taskset, cargo
set -euo pipefail
cd "$(dirname "$0")/.."

N=200000
ROUNDS=3
OPS="set get"
OPS_ONLY=0
SERVER_CPU=${SERVER_CPU:-0}
FSYNC=${FSYNC:-always}
CLIENT_CPU=${CLIENT_CPU:-1}
if [ "$SERVER_CPU" = any ]; then
  SERVER_CPU=0-$(( $(nproc) - 1 )); CLIENT_CPU=$SERVER_CPU
fi
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N=$2; shift 2 ;;
    -r) ROUNDS=$2; shift 2 ;;
    --quick) N=50000; ROUNDS=1; shift ;;
    --ops) OPS=$2; shift 2 ;;
    --ops-only) OPS_ONLY=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
missing=()
for t in redis-benchmark redis-cli python3 taskset cargo; do
  command -v "$t" >/dev/null || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools: ${missing[*]} (apt-get install redis-tools python3 util-linux)" >&2
  exit 1
fi

echo "== building ringkv and kvbench (release)" >&2
cargo build --release --bin ringkv -q && cargo build --release -p kvbench -q
BIN=target/release/ringkv
KVBENCH=target/release/kvbench
WORK=$(mktemp -d)
declare -A pid
cleanup() { for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sleep_s() { python3 -c "import time; time.sleep($1)"; }
wait_ping() { for _ in $(seq 1 200); do redis-cli -p "$1" ping >/dev/null 2>&1 && return 0; sleep_s 0.05; done; echo "server on $1 did not start" >&2; exit 1; }

SECRET=bench-cluster-secret-0123456789
SP=$(free_port); P1=$(free_port); P2=$(free_port); P3=$(free_port)
ports=("$P1" "$P2" "$P3")
start_node() { # index 0..2
  local i=$1 peers=""
  for j in 0 1 2; do [ "$j" != "$i" ] && peers+="127.0.0.1:${ports[$j]},"; done
  taskset -c "$SERVER_CPU" "$BIN" --port "${ports[$i]}" --threads 1 --fsync "$FSYNC" \
    --data-dir "$WORK/node$i" --cluster-secret "$SECRET" --peers "${peers%,}" \
    --n 3 --w 2 --r 2 --log-level warn &
  pid[node$i]=$!
}
taskset -c "$SERVER_CPU" "$BIN" --port "$SP" --threads 1 --fsync "$FSYNC" --data-dir "$WORK/standalone" --log-level warn &
pid[standalone]=$!
for i in 0 1 2; do start_node "$i"; done
for p in "$SP" "${ports[@]}"; do wait_ping "$p"; done
wait_up() { # port count: until CLUSTER NODES shows count nodes up
  for _ in $(seq 1 400); do
    [ "$(redis-cli -p "$1" cluster nodes | grep -c ' up ')" -ge "$2" ] && return 0; sleep_s 0.05
  done
  echo "cluster did not converge" >&2; exit 1
}
wait_up "$P1" 3
echo "== standalone on $SP, cluster on ${ports[*]} (N=3 W=2 R=2), all --threads 1 --fsync $FSYNC" >&2
echo "== servers on cpu $SERVER_CPU, redis-benchmark on cpu $CLIENT_CPU, -c 50 -n $N, $ROUNDS rounds" >&2

declare -A results
bench() { # port pipeline test -> "rps p50 p99"
  taskset -c "$CLIENT_CPU" redis-benchmark -p "$1" -t "$3" -c 50 -n "$N" -P "$2" -r 100000 --csv 2>/dev/null |
    awk -F'","' 'NR > 1 { print $2, $5, $7 }'
}
for P in 1 16; do
  for op in $OPS; do
    for r in $(seq 1 "$ROUNDS"); do
      for who in cluster standalone; do
        port=$([ $who = cluster ] && echo "$P1" || echo "$SP")
        read -r rps p50 p99 < <(bench "$port" "$P" "$op")
        results[$who,$P,$op,rps]+="$rps "; results[$who,$P,$op,p50]+="$p50 "; results[$who,$P,$op,p99]+="$p99 "
        echo "   round $r ${op^^} -P $P $who: $rps req/s p50 $p50 ms p99 $p99 ms" >&2
      done
    done
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
table() {
  printf '\n%-22s %12s %12s %7s %22s %22s\n' "workload (median)" "cluster" "standalone" ratio "cluster p50/p99 ms" "standalone p50/p99 ms"
  for P in 1 16; do
    for op in $OPS; do
      a=$(echo "${results[cluster,$P,$op,rps]}" | median); b=$(echo "${results[standalone,$P,$op,rps]}" | median)
      ca=$(echo "${results[cluster,$P,$op,p50]}" | median); cb=$(echo "${results[cluster,$P,$op,p99]}" | median)
      sa=$(echo "${results[standalone,$P,$op,p50]}" | median); sb=$(echo "${results[standalone,$P,$op,p99]}" | median)
      printf '%-22s %12.0f %12.0f %7.2f %22s %22s\n' "${op^^} -c 50 -P $P" "$a" "$b" "$(python3 -c "print($a/$b)")" "$ca / $cb" "$sa / $sb"
    done
  done
}
if [ "$OPS_ONLY" = 1 ]; then
  table
  exit 0
fi

# The binary protocol through ringkv-client (kvbench, 50 connections x pipeline 16, 50/50
# reads and writes): to one node (it coordinates every request), routed by the cluster client
# (each request to its key's preferred replica), and to the standalone node.
kv() { # addr extra... -> req/s
  local a=$1; shift
  taskset -c "$CLIENT_CPU" "$KVBENCH" --proto binary -a "127.0.0.1:$a" -c 50 -P 16 --keys 100000 \
    --read 0.5 --write 0.5 --duration 5s --warmup 1s -q --json - "$@" 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["throughput"]["requests_per_sec"])'
}
for r in $(seq 1 "$ROUNDS"); do
  a=$(kv "$P1"); b=$(kv "$P1" --cluster); c=$(kv "$SP")
  results[kv,one]+="$a "; results[kv,routed]+="$b "; results[kv,standalone]+="$c "
  echo "   round $r kvbench binary 50/50: cluster via one node $a, routed $b, standalone $c req/s" >&2
done

# One node down, then back (hints replay to it while the load runs).
down=()
for r in $(seq 1 "$ROUNDS"); do
  read -r up _ _ < <(bench "$P1" 16 set)
  kill -9 "${pid[node2]}"; wait "${pid[node2]}" 2>/dev/null || true
  for _ in $(seq 1 200); do redis-cli -p "$P1" cluster nodes | grep -q ":$P3 .* down " && break; sleep_s 0.05; done
  read -r one_down _ _ < <(bench "$P1" 16 set)
  hints=$(redis-cli -p "$P1" info cluster | awk -F: '/^cluster_hints_pending:/ {print $2}' | tr -d '\r')
  start_node 2
  read -r returning _ _ < <(bench "$P1" 16 set)
  echo "   round $r SET -P 16: all up $up, one down $one_down, returning $returning req/s ($hints hints pending at its return)" >&2
  down+=("$up $one_down $returning")
  wait_up "$P1" 3
done

table
a=$(echo "${results[kv,one]}" | median); b=$(echo "${results[kv,routed]}" | median); c=$(echo "${results[kv,standalone]}" | median)
printf '\nkvbench binary 50/50 -c 50 -P 16: cluster via one node %.0f (%.2f of standalone), routed by ClusterClient %.0f (%.2f), standalone %.0f req/s\n' \
  "$a" "$(python3 -c "print($a/$c)")" "$b" "$(python3 -c "print($b/$c)")" "$c"
printf '\nSET -c 50 -P 16 on the cluster, per round: all up / one of three down / while it returns (req/s)\n'
for row in "${down[@]}"; do
  read -r a b c <<<"$row"
  printf '  %8.0f / %8.0f (%.2f) / %8.0f (%.2f)\n' "$a" "$b" "$(python3 -c "print($b/$a)")" "$c" "$(python3 -c "print($c/$a)")"
done

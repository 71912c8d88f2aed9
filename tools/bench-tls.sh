#!/usr/bin/env bash
# What TLS costs ringkv: redis-benchmark SET/GET at -P 1 and -P 16 (50 connections) against a
# plaintext ringkv and against a --tls-only ringkv (redis-benchmark --tls --cacert), same
# pinning as tools/bench-vs-redis.sh (servers on core $SERVER_CPU, benchmark on core
# $CLIENT_CPU), persistence off (--fsync off). Rounds alternate between plaintext and TLS so
# that machine noise hits both alike; the table shows the median of the rounds and the ratio
# TLS/plain (1.00 = free; 0.70 = TLS costs 30%).
#
# It also prints the servers' own CPU time per request (user + system, from /proc): the
# client does TLS too, on its own core, so the throughput ratio can be the client's limit;
# CPU per request is the server's cost alone.
#
# The certificates (a CA and a server certificate for 127.0.0.1) are made with the openssl
# command-line tool in a temporary directory; ringkv itself uses rustls.
#
# usage: tools/bench-tls.sh [-n REQUESTS] [-r ROUNDS] [--quick]
# needs: redis-benchmark, redis-cli built with TLS (Debian's redis-tools is), openssl,
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
for t in redis-benchmark redis-cli openssl python3 taskset cargo; do
  command -v "$t" >/dev/null || missing+=("$t")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing tools: ${missing[*]}" >&2
  echo "install with: apt-get install redis-tools openssl python3 util-linux" >&2
  exit 1
fi
if ! redis-benchmark --help 2>&1 | grep -q -- '--tls'; then
  echo "this redis-benchmark was built without TLS; Debian's redis-tools has it" >&2
  exit 1
fi

echo "== building ringkv (release)" >&2
cargo build --release --bin ringkv -q
BIN=target/release/ringkv
WORK=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

echo "== certificates in $WORK" >&2
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=bench-tls CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=127.0.0.1" -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' > "$WORK/ext.cnf"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
  -CAcreateserial -days 2 -extfile "$WORK/ext.cnf" -out "$WORK/server.pem" 2>/dev/null
TLS_CLI=(--tls --cacert "$WORK/ca.pem")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ping() { # port [redis-cli TLS flags...]
  local port=$1; shift
  for _ in $(seq 1 200); do redis-cli "$@" -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0; python3 -c 'import time; time.sleep(0.05)'; done
  echo "server on $port did not start" >&2; exit 1
}

PLAIN=$(free_port)
taskset -c "$SERVER_CPU" "$BIN" --port "$PLAIN" --threads 1 --fsync off \
  --data-dir "$WORK/plain" --log-level warn &
pids+=($!); PLAIN_PID=$!; wait_ping "$PLAIN"
TLS=$(free_port)
taskset -c "$SERVER_CPU" "$BIN" --port "$TLS" --threads 1 --fsync off --data-dir "$WORK/tls" \
  --log-level warn --tls-cert "$WORK/server.pem" --tls-key "$WORK/server.key" --tls-only &
pids+=($!); TLS_PID=$!; wait_ping "$TLS" "${TLS_CLI[@]}"
echo "== plaintext ringkv on $PLAIN, --tls-only ringkv on $TLS" >&2
echo "== servers on cpu $SERVER_CPU, redis-benchmark on cpu $CLIENT_CPU, -c 50 -n $N, $ROUNDS rounds" >&2
echo "== load before: $(uptime)" >&2

declare -A results
TICK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime of a pid
bench() { # port pipeline [TLS flags...] -> "set get"
  local port=$1 p=$2; shift 2
  taskset -c "$CLIENT_CPU" redis-benchmark "$@" -h 127.0.0.1 -p "$port" -t set,get -c 50 \
    -n "$N" -P "$p" --csv 2>/dev/null |
    awk -F'","' '/"SET"/ {s=$2} /"GET"/ {g=$2} END {print s, g}'
}
for P in 1 16; do
  for r in $(seq 1 "$ROUNDS"); do
    for who in plain tls; do
      pid=$([ $who = plain ] && echo "$PLAIN_PID" || echo "$TLS_PID")
      t0=$(cpu_ticks "$pid")
      if [ $who = plain ]; then
        read -r s g < <(bench "$PLAIN" "$P")
      else
        read -r s g < <(bench "$TLS" "$P" "${TLS_CLI[@]}")
      fi
      t1=$(cpu_ticks "$pid")
      # Server CPU microseconds per request, over the SET and GET runs (2 x N requests).
      us=$(python3 -c "print(($t1 - $t0) / $TICK * 1e6 / (2 * $N))")
      results[$who,$P,set]+="$s "
      results[$who,$P,get]+="$g "
      results[$who,$P,cpu]+="$us "
      echo "   round $r P$P $who: SET $s GET $g, server CPU $(printf '%.2f' "$us") us/request" >&2
    done
  done
done
echo "== load after: $(uptime)" >&2

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

printf '\n%-28s %14s %14s %10s\n' "workload (req/s, median)" plain tls "tls/plain"
for P in 1 16; do
  for op in set get; do
    a=$(echo "${results[plain,$P,$op]}" | median); b=$(echo "${results[tls,$P,$op]}" | median)
    printf '%-28s %14.0f %14.0f %10.2f\n' "${op^^} -c 50 -P $P" "$a" "$b" "$(python3 -c "print($b/$a)")"
  done
done
printf '\n%-28s %14s %14s %10s\n' "server CPU us/request" plain tls "tls/plain"
for P in 1 16; do
  a=$(echo "${results[plain,$P,cpu]}" | median); b=$(echo "${results[tls,$P,cpu]}" | median)
  printf '%-28s %14.2f %14.2f %10.2f\n' "SET+GET -c 50 -P $P" "$a" "$b" "$(python3 -c "print($b/$a)")"
done

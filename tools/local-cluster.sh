#!/usr/bin/env bash
# A ringkv cluster on loopback, for trying it out.
#
#   tools/local-cluster.sh start N [--release]   start N nodes (ports 7001.., each --peers the
#                                                others) and wait until all see N nodes up
#   tools/local-cluster.sh status                each node's process, and CLUSTER NODES
#   tools/local-cluster.sh stop                  stop exactly the processes `start` recorded
#
# Environment:
#   LOCAL_CLUSTER_DIR       where data, logs, PIDs and the secret live (default ./local-cluster)
#   LOCAL_CLUSTER_PORT      first node's port (default 7001; node I listens on PORT+I-1)
#   LOCAL_CLUSTER_WAIT      seconds `start` waits for the nodes to agree (default 30)
#   RINGKV_CLUSTER_SECRET   the cluster secret (default: a random one, printed once)
#   RINGKV_BIN_DIR          directory with the ringkv and kvsh binaries (default: the repo's
#                           target/debug or target/release, built with cargo first)
set -euo pipefail

DIR=${LOCAL_CLUSTER_DIR:-./local-cluster}
PORT=${LOCAL_CLUSTER_PORT:-7001}
WAIT=${LOCAL_CLUSTER_WAIT:-30}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PIDS="$DIR/pids"

die() { echo "local-cluster: $*" >&2; exit 1; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# alive PID: the process exists, is not a zombie, and is a ringkv (a recycled PID is left alone).
alive() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/stat" ]; then
        local state
        state=$(sed 's/^.*) //' "/proc/$pid/stat" | cut -d' ' -f1)
        [ "$state" != Z ] || return 1
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q ringkv || return 1
    fi
    return 0
}

# The node count and ports `start` recorded.
recorded_ports() { cut -d' ' -f2 "$PIDS"; }

# cluster_nodes PORT: CLUSTER NODES of the node on PORT (raw lines), empty if it does not answer.
cluster_nodes() {
    if [ -x "$BIN/kvsh" ]; then
        "$BIN/kvsh" -p "$1" --raw --timeout 2 cluster nodes 2>/dev/null || true
    elif command -v redis-cli >/dev/null; then
        redis-cli -p "$1" --raw cluster nodes 2>/dev/null || true
    else
        die "neither $BIN/kvsh nor redis-cli found"
    fi
}

pick_bins() {
    local profile=debug
    if [ "${1:-}" = --release ]; then profile=release; fi
    if [ -n "${RINGKV_BIN_DIR:-}" ]; then
        BIN=$RINGKV_BIN_DIR
        return
    fi
    BIN="$REPO/target/$profile"
    if [ "${CARGO_TARGET_DIR:-}" ]; then BIN="$CARGO_TARGET_DIR/$profile"; fi
    local flags=()
    if [ "$profile" = release ]; then flags=(--release); fi
    (cd "$REPO" && cargo build --quiet "${flags[@]}" -p ringkv -p kvsh) ||
        die "cargo build failed"
}

start() {
    local n=${1:-}
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || usage
    pick_bins "${2:-}"
    [ -x "$BIN/ringkv" ] || die "no ringkv binary at $BIN/ringkv"
    if [ -f "$PIDS" ]; then
        while read -r pid _; do
            if alive "$pid"; then die "already running (pid $pid); run: $0 stop"; fi
        done <"$PIDS"
        rm -f "$PIDS"
    fi
    mkdir -p "$DIR"
    local secret=${RINGKV_CLUSTER_SECRET:-}
    if [ -z "$secret" ]; then
        secret=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        echo "cluster secret (dev only, also in $DIR/secret): $secret"
    fi
    (umask 077 && printf '%s\n' "$secret" >"$DIR/secret")

    local i port peers j
    for ((i = 1; i <= n; i++)); do
        port=$((PORT + i - 1))
        peers=""
        for ((j = 1; j <= n; j++)); do
            [ "$j" -eq "$i" ] && continue
            peers="${peers:+$peers,}127.0.0.1:$((PORT + j - 1))"
        done
        mkdir -p "$DIR/node$i"
        local args=(--port "$port" --bind 127.0.0.1 --data-dir "$DIR/node$i")
        if [ -n "$peers" ]; then args+=(--peers "$peers"); fi
        # The secret goes through the environment, out of `ps`.
        RINGKV_CLUSTER_SECRET=$secret nohup "$BIN/ringkv" "${args[@]}" \
            >"$DIR/node$i.log" 2>&1 </dev/null &
        echo "$! $port" >>"$PIDS"
        echo "node $i: 127.0.0.1:$port (pid $!, data $DIR/node$i, log $DIR/node$i.log)"
    done

    echo "waiting up to ${WAIT}s for every node to see $n nodes up..."
    local deadline=$((SECONDS + WAIT)) ok
    while :; do
        ok=1
        for port in $(recorded_ports); do
            [ "$(cluster_nodes "$port" | awk '$5 == "up"' | wc -l)" -eq "$n" ] || ok=0
        done
        [ "$ok" -eq 1 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "local-cluster: the nodes did not agree within ${WAIT}s; last log lines:" >&2
            for ((i = 1; i <= n; i++)); do tail -n 5 "$DIR/node$i.log" >&2 || true; done
            die "still running; look at the logs, then: $0 stop"
        fi
        sleep 0.2
    done
    echo "cluster up: $n nodes on 127.0.0.1:$PORT..$((PORT + n - 1))"
    echo "try: $BIN/kvsh -p $PORT cluster nodes"
}

stop() {
    [ -f "$PIDS" ] || { echo "not running (no $PIDS)"; return 0; }
    local pid port left
    while read -r pid port; do
        if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done <"$PIDS"
    local deadline=$((SECONDS + 10))
    while :; do
        left=""
        while read -r pid port; do
            if alive "$pid"; then left="$left $pid"; fi
        done <"$PIDS"
        [ -z "$left" ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "still running after SIGTERM, sending SIGKILL:$left" >&2
            for pid in $left; do kill -KILL "$pid" 2>/dev/null || true; done
            break
        fi
        sleep 0.1
    done
    rm -f "$PIDS"
    echo "stopped"
}

status() {
    [ -f "$PIDS" ] || { echo "not running (no $PIDS)"; return 0; }
    pick_bins_quiet
    local pid port shown=""
    while read -r pid port; do
        if alive "$pid"; then
            echo "127.0.0.1:$port pid $pid running"
            [ -n "$shown" ] || shown=$port
        else
            echo "127.0.0.1:$port pid $pid not running"
        fi
    done <"$PIDS"
    if [ -n "$shown" ]; then
        echo "CLUSTER NODES of 127.0.0.1:$shown:"
        cluster_nodes "$shown"
    fi
}

# status: the binaries as they are, without building.
pick_bins_quiet() {
    BIN=${RINGKV_BIN_DIR:-${CARGO_TARGET_DIR:-$REPO/target}/debug}
}

case "${1:-}" in
    start) shift; start "$@" ;;
    stop) stop ;;
    status) status ;;
    *) usage ;;
esac

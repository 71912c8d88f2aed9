#!/usr/bin/env python3
"""Runs the differential test's command list (tests/redis_diff.rs) through redis-py against a
redis-server and a ringkv server, and prints every reply that differs, one JSON object a line.

usage: redis_py_diff.py CASES_FILE REDIS_PORT RINGKV_PORT

CASES_FILE: one case a line, `MODE ARG_HEX ARG_HEX ...` (`-`: an empty argument) (MODE: exact, approx:N, sorted, shape,
skip, scan), written by the Rust test. Replies are compared after redis-py's own parsing (its
response callbacks), so this checks that a Python client sees the same values from both.
"""
import json
import sys

import redis


def connect(port):
    # One connection (no pool surprises): the cases depend on connection state (SELECT, ...).
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=10,
                       single_connection_client=True)


def call(conn, args):
    try:
        return ("ok", conn.execute_command(*args))
    except redis.exceptions.ResponseError as e:
        return ("error", str(e))
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        return ("closed", type(e).__name__)
    except Exception as e:  # a reply redis-py can't parse: compare the failure kind
        return ("client-error", type(e).__name__)


def norm(v):
    """A JSON-able, order-preserving view of a redis-py value."""
    if isinstance(v, bytes):
        return "b:" + v.hex()
    if isinstance(v, (list, tuple)):
        return [norm(x) for x in v]
    if isinstance(v, dict):
        return {str(norm(k)): norm(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, set):
        return sorted(norm(x) for x in v)
    return repr(v)


def shape(v):
    if isinstance(v, (list, tuple)):
        return ["list", len(v)]
    return type(v).__name__


def scan_all(conn, args):
    """SCAN from the given cursor to 0: the set of keys, or the error."""
    keys, cursor, rest = set(), args[1], args[2:]
    for _ in range(100000):
        kind, v = call(conn, [b"SCAN", cursor] + rest)
        if kind != "ok":
            return (kind, v)
        cursor, batch = v
        keys.update(batch)
        if int(cursor) == 0:
            return ("ok", sorted(k.hex() for k in keys))
    return ("error", "SCAN did not end")


def same(mode, w, g):
    if mode == "skip":
        return True
    if w[0] != g[0]:
        return False
    if w[0] != "ok":
        return w[1] == g[1]
    a, b = w[1], g[1]
    if mode.startswith("approx:"):
        n = int(mode.split(":")[1])
        if isinstance(a, int) and isinstance(b, int):
            return abs(a - b) <= n
        return norm(a) == norm(b)
    if mode == "sorted" and isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return sorted(map(str, norm(a))) == sorted(map(str, norm(b)))
    if mode == "shape":
        return shape(a) == shape(b)
    return norm(a) == norm(b)


def main():
    cases_file, redis_port, ringkv_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    want, got = connect(redis_port), connect(ringkv_port)
    compared = 0
    with open(cases_file) as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            mode, args = parts[0], [b"" if a == "-" else bytes.fromhex(a) for a in parts[1:]]
            if not args:
                continue
            if mode == "scan":
                w, g = scan_all(want, args), scan_all(got, args)
            else:
                w, g = call(want, args), call(got, args)
            compared += 1
            if not same(mode, w, g):
                cmd = " ".join(a.decode("utf-8", "replace") for a in args)
                print(json.dumps({"cmd": cmd, "redis": str(norm(w)), "ringkv": str(norm(g))}))
    print(json.dumps({"compared": compared}))


if __name__ == "__main__":
    main()

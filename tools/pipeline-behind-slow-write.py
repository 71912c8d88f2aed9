#!/usr/bin/env python3
"""Latency of GETs pipelined behind one slow write, on one binary-protocol connection.

Needs a server built with the `test-hooks` feature and started with
`--fsync always --test-hold-syncs-file HOLD`: while HOLD exists, every fdatasync waits, so the
PUT sent first stays un-acknowledged for --hold-ms. The script sends the PUT and N GETs of
another key in one write, releases the hold after --hold-ms, and reports when each reply
arrived (ms after the send), plus the order: with out-of-order completion the GETs come back
before the PUT; with a batch barrier they all wait for the fdatasync.

    cargo build --release --features test-hooks
    target/release/ringkv --port 7400 --fsync always --test-hold-syncs-file /tmp/hold &
    tools/pipeline-behind-slow-write.py --port 7400 --hold-file /tmp/hold
"""
import argparse
import os
import socket
import struct
import threading
import time

GET, PUT, HELLO = 0x10, 0x11, 0x01


def frame(rid, op, payload):
    return struct.pack(">IQBBBB", 12 + len(payload), rid, op, 0, 0, 0) + payload


def b(x):
    return struct.pack(">I", len(x)) + x


def read_exact(s, n):
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("server closed the connection")
        out += chunk
    return bytes(out)


def read_frame(s):
    (length,) = struct.unpack(">I", read_exact(s, 4))
    rest = read_exact(s, length)
    rid, op, flags, status, _ = struct.unpack(">QBBBB", rest[:12])
    return rid, op, status, rest[12:]


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=7379)
    ap.add_argument("--hold-file", required=True)
    ap.add_argument("--hold-ms", type=float, default=100.0)
    ap.add_argument("--gets", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    # Two keys in different shards with --shards 2 (shard = partition % shards, partition =
    # xxh3(key) >> 54 with the default 1024 partitions), so the GETs don't read the shard the
    # held write is pending in (they would wait for it: no dirty reads).
    ap.add_argument("--write-key", default="slow-write")
    ap.add_argument("--read-key", default="get-key")
    a = ap.parse_args()
    s = socket.create_connection((a.host, a.port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(frame(1, HELLO, struct.pack(">HH", 1, 1) + b(b"") + b(b"bench")))
    assert read_frame(s)[2] == 0, "HELLO failed"
    # The key the GETs read, written (and synced) before the hold.
    s.sendall(frame(2, PUT, b(a.read_key.encode()) + b(b"v") + b(b"") + struct.pack(">Q", 0)))
    assert read_frame(s)[2] == 0, "PUT failed"
    get = b"".join(frame(100 + i, GET, b(a.read_key.encode())) for i in range(a.gets))
    for r in range(a.rounds):
        put = frame(10, PUT, b(a.write_key.encode()) + b(b"x" * 16) + b(b"") + struct.pack(">Q", 0))
        open(a.hold_file, "w").close()
        release = threading.Timer(a.hold_ms / 1000.0, lambda: os.remove(a.hold_file))
        t0 = time.perf_counter()
        release.start()
        s.sendall(put + get)
        got, put_at, gets_before_put = [], None, 0
        for _ in range(a.gets + 1):
            rid, op, status, _ = read_frame(s)
            ms = (time.perf_counter() - t0) * 1000
            if rid == 10:
                put_at = ms
            else:
                got.append(ms)
                if put_at is None:
                    gets_before_put += 1
        release.join()
        print(
            f"round {r}: hold {a.hold_ms:.0f} ms; PUT acked at {put_at:.1f} ms; "
            f"{a.gets} GETs: p50 {pct(got, 0.5):.2f} ms, p99 {pct(got, 0.99):.2f} ms, "
            f"last {max(got):.2f} ms; {gets_before_put} GET replies before the PUT's"
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Time one huge MSET arriving in small writes: ringkv against redis-server, same client.

A multibulk of N arguments (MSET with (N-1)/2 pairs of 8-byte keys and 1-byte values) is
written in --write-bytes pieces as fast as the socket takes them; the time is from the first
byte sent to the reply. A parser that re-parses the whole buffered request on every read grows
quadratically with N; an incremental one linearly (the ratio column shows which).

usage: tools/bench-multibulk.py [--args 400000,1000000,2000000,4000000] [--write-bytes 4096]
                                [--ringkv PATH ...] [--no-redis]
needs: redis-server (Debian: apt-get install redis-server), taskset; build ringkv first
       (cargo build --release --bin ringkv)
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ping(port, proc, limit=30.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server on {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"server on {port} did not answer PING within {limit} s")


def request(nargs):
    pairs = (nargs - 1) // 2
    parts = [b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * pairs)]
    for i in range(pairs):
        parts.append(b"$8\r\n%08d\r\n$1\r\nv\r\n" % i)
    return b"".join(parts), 1 + 2 * pairs


def cpu_seconds(pid):
    """User + system CPU time of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed_mset(port, pid, payload, write_bytes, pace_us):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(600)
        cpu0 = cpu_seconds(pid)
        t0 = time.monotonic()
        view = memoryview(payload)
        for off in range(0, len(payload), write_bytes):
            s.sendall(view[off : off + write_bytes])
            if pace_us:
                # Benchmark pacing (not a test): spread the request over many small reads.
                time.sleep(pace_us / 1e6)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            reply += chunk
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(pid) - cpu0
        s.sendall(b"FLUSHALL\r\n")
        s.recv(64)
    if not reply.startswith(b"+OK"):
        sys.exit(f"unexpected reply on {port}: {reply[:200]!r}")
    return elapsed, cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--args", default="400000,1000000,2000000,4000000")
    ap.add_argument("--write-bytes", type=int, default=4096)
    ap.add_argument("--ringkv", action="append", help="ringkv binary (repeatable)")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--pace-us", type=int, default=0,
                    help="pause between writes, so the server sees many small reads")
    ap.add_argument("--server-cpu", default=os.environ.get("SERVER_CPU", "0"))
    o = ap.parse_args()
    bins = o.ringkv or ["target/release/ringkv"]
    if not shutil.which("taskset"):
        sys.exit("missing taskset (apt-get install util-linux)")
    if not o.no_redis and not shutil.which("redis-server"):
        sys.exit("missing redis-server (apt-get install redis-server)")
    work = tempfile.mkdtemp()
    procs = []
    servers = []
    try:
        for i, b in enumerate(bins):
            port = free_port()
            p = subprocess.Popen(
                ["taskset", "-c", o.server_cpu, b, "--port", str(port), "--threads", "1",
                 "--fsync", "off", "--data-dir", f"{work}/rk{i}", "--log-level", "warn"])
            procs.append(p)
            wait_ping(port, p)
            servers.append((b, port, p.pid))
        if not o.no_redis:
            port = free_port()
            p = subprocess.Popen(
                ["taskset", "-c", o.server_cpu, "redis-server", "--port", str(port),
                 "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", work,
                 "--daemonize", "no", "--loglevel", "warning"], stdout=subprocess.DEVNULL)
            procs.append(p)
            wait_ping(port, p)
            servers.append(("redis-server", port, p.pid))
        print(f"MSET arriving in {o.write_bytes}-byte writes (pause {o.pace_us} us); "
              "per server: seconds from first byte to reply / server CPU seconds")
        for i, (name, _, _) in enumerate(servers):
            print(f"  [{i}] {name}")
        header = "arguments".rjust(10) + "".join(f"[{i}] wall/cpu".rjust(22) for i in range(len(servers)))
        if not o.no_redis:
            header += "   cpu ratios to redis"
        print(header)
        for n in (int(x) for x in o.args.split(",")):
            payload, nargs = request(n)
            res = [timed_mset(port, pid, payload, o.write_bytes, o.pace_us)
                   for _, port, pid in servers]
            row = f"{nargs:>10}" + "".join(f"{w:>13.3f}/{c:<8.2f}" for w, c in res)
            if not o.no_redis:
                base = max(res[-1][1], 0.01)
                row += "   " + " ".join(f"{c / base:.2f}" for _, c in res[:-1])
            print(row, flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

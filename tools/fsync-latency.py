#!/usr/bin/env python3
"""Raw latency of one small write + fdatasync on this machine's disk (the floor for one
durable write). usage: fsync-latency.py [DIR] [COUNT]"""
import os, sys, time, statistics, tempfile

d = sys.argv[1] if len(sys.argv) > 1 else "."
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
fd, path = tempfile.mkstemp(dir=d, prefix="fsync-latency-")
try:
    lat = []
    rec = b"x" * 64
    for _ in range(n):
        t = time.perf_counter()
        os.write(fd, rec)
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1e6)
    lat.sort()
    print(f"fdatasync of a 64-byte append, {n} times: median {statistics.median(lat):.0f} us, "
          f"p99 {lat[int(n * 0.99)]:.0f} us, mean {statistics.mean(lat):.0f} us")
finally:
    os.close(fd)
    os.unlink(path)

#!/usr/bin/env python3
"""Writes N SET commands as RESP to stdout, for `redis-cli --pipe`: 16-byte keys and values.

usage: gen-keys.py N [value_bytes]
"""
import sys

n = int(sys.argv[1])
vlen = int(sys.argv[2]) if len(sys.argv) > 2 else 16
out = sys.stdout.buffer
chunk = []
for i in range(n):
    k = b"key:%012d" % i
    v = (b"v%0*d" % (vlen - 1, i))[:vlen]
    chunk.append(b"*3\r\n$3\r\nSET\r\n$16\r\n%s\r\n$%d\r\n%s\r\n" % (k, len(v), v))
    if len(chunk) == 10000:
        out.write(b"".join(chunk))
        chunk = []
out.write(b"".join(chunk))

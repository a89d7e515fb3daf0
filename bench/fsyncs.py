#!/usr/bin/env python3
"""fsync latency on a file, after a 4 KiB write and with nothing written (docs/performance.md,
"stress-ng's file system stressors"). Usage: bench/fsyncs.py FILE"""
import os, sys, time, random
p = sys.argv[1]
fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
os.pwrite(fd, b"\0" * (1 << 20), 0); os.fsync(fd)
w, f = [], []
buf = os.urandom(4096)
for i in range(300):
    os.pwrite(fd, buf, random.randrange(256) * 4096)
    t = time.perf_counter(); os.fsync(fd); w.append(time.perf_counter() - t)
for i in range(300):
    t = time.perf_counter(); os.fsync(fd); f.append(time.perf_counter() - t)
w.sort(); f.sort()
print("write+fsync: fsync median %.3f ms; fsync alone: median %.3f ms" % (w[150] * 1e3, f[150] * 1e3))
os.close(fd); os.unlink(p)

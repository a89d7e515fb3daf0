#!/usr/bin/env python3
"""Times setxattr and listxattr on a file after another file's names were set and removed
(docs/performance.md, "stress-ng's file system stressors"). Usage: bench/xattrs.py DIR"""
import os, sys, time
d = sys.argv[1]
g = os.path.join(d, "g"); open(g, "w").close()
for i in range(3000): os.setxattr(g, "user.gone%d" % i, b"v")
for i in range(3000): os.removexattr(g, "user.gone%d" % i)
f = os.path.join(d, "f"); open(f, "w").close()
fd = os.open(f, os.O_RDONLY)
ts = []
for i in range(1000):
    t = time.perf_counter(); os.setxattr(fd, "user.var_%d" % i, b"orig-value-%d" % i, os.XATTR_CREATE); ts.append(time.perf_counter() - t)
ls = []
for i in range(20):
    t = time.perf_counter(); os.listxattr(fd); ls.append(time.perf_counter() - t)
ts.sort(); ls.sort()
print("setxattr median %.3f ms, p90 %.3f ms; listxattr of 1000 median %.3f ms" % (ts[500]*1e3, ts[900]*1e3, ls[10]*1e3))
os.close(fd); os.unlink(f); os.unlink(g)

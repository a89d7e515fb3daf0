"""A small directory listed after every change, as dbench's "Find" and build tools do:
30 files, then 400 times create one more, list the directory, unlink it; five rounds,
the median per loop in microseconds.

    python3 bench/small_listing.py MNT/dir LABEL
"""
import os
import sys
import time

d = sys.argv[1]
label = sys.argv[2] if len(sys.argv) > 2 else d
os.makedirs(d, exist_ok=True)
for i in range(30):
    open(f"{d}/base{i}", "w").close()
ts = []
for r in range(5):
    t = time.perf_counter()
    for i in range(400):
        p = f"{d}/x{i}"
        open(p, "w").close()
        os.listdir(d)
        os.unlink(p)
    ts.append((time.perf_counter() - t) / 400 * 1e6)
ts.sort()
print(f"{label} per create+list+unlink: median {ts[2]:.0f} us (all {[int(x) for x in ts]})")

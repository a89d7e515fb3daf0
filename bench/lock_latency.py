import fcntl, os, sys, time, statistics
p = sys.argv[1] + "/lk"
fd = os.open(p, os.O_RDWR | os.O_CREAT)
ts = []
for r in range(5):
    t0 = time.perf_counter()
    for i in range(1000):
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, i)
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, i)
    ts.append((time.perf_counter() - t0) / 2000 * 1e6)
print(f"lock or unlock: {statistics.median(ts):.1f} us (median of 5 x 2000)")
os.close(fd)

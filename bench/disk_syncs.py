#!/usr/bin/env python3
"""What a sync costs on the disk under DIR, without Aquifer (docs/performance.md, "fsync: the
metadata log's sync beside the segment's"): the median of 300 appends + fdatasync of 200
bytes and of 68 KiB (a 4 KiB overlay's record), and of three files synced in a row against
two at once (one on a helper thread) then the third. Usage: bench/disk_syncs.py DIR"""
import os, queue, statistics, sys, threading, time

d = sys.argv[1]
paths = [os.path.join(d, "disk_syncs.%d" % i) for i in range(3)]
fds = [os.open(p, os.O_CREAT | os.O_RDWR | os.O_TRUNC, 0o644) for p in paths]
todo, done = queue.Queue(), queue.Queue()


def helper():
    while (fd := todo.get()) is not None:
        os.fdatasync(fd)
        done.put(1)


def median_us(step, n=300):
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return round(statistics.median(times) * 1e6)


def append_sync(n):
    os.write(fds[0], b"y" * n)
    os.fdatasync(fds[0])


def in_a_row():
    for fd in fds:
        os.write(fd, b"y" * 200)
    for fd in fds:
        os.fdatasync(fd)


def two_at_once():
    for fd in fds:
        os.write(fd, b"y" * 200)
    todo.put(fds[0])
    os.fdatasync(fds[1])
    done.get()
    os.fdatasync(fds[2])


th = threading.Thread(target=helper)
th.start()
print("append 200 B + fdatasync: %d us" % median_us(lambda: append_sync(200)))
print("append 68 KiB + fdatasync: %d us" % median_us(lambda: append_sync(69632)))
print("three files synced in a row: %d us" % median_us(in_a_row))
print("two at once, then the third: %d us" % median_us(two_at_once))
todo.put(None)
th.join()
for fd, p in zip(fds, paths):
    os.close(fd)
    os.unlink(p)

#!/usr/bin/env python3
"""How fast a writer publishes whole files that readers (or `aq changes`) must never see
half written, two ways, in DIR: write under a temporary name and rename it into place,
or write an O_TMPFILE file and name it with linkat. Prints files/s for each, alternated
(rename, tmpfile, rename, tmpfile...), ROUNDS rounds of N files of SIZE bytes each.

    python3 bench/ingest_publish.py DIR [N] [SIZE] [ROUNDS]
"""
import ctypes
import os
import shutil
import statistics
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400


def by_rename(d, n, data):
    for i in range(n):
        tmp, final = os.path.join(d, f".f{i}.tmp"), os.path.join(d, f"f{i}")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.write(fd, data)
        os.close(fd)
        os.rename(tmp, final)


def by_tmpfile(d, n, data):
    for i in range(n):
        fd = os.open(d, os.O_TMPFILE | os.O_WRONLY, 0o644)
        os.write(fd, data)
        if libc.linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.path.join(d, f"f{i}").encode(),
                       AT_SYMLINK_FOLLOW):
            raise OSError(ctypes.get_errno(), "linkat")
        os.close(fd)


def main():
    top = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    data = os.urandom(size)
    rates = {"rename": [], "tmpfile": []}
    for r in range(rounds):
        for name, fn in (("rename", by_rename), ("tmpfile", by_tmpfile)):
            d = os.path.join(top, f"publish-{os.getpid()}-{name}-{r}")
            os.mkdir(d)
            t = time.perf_counter()
            fn(d, n, data)
            rates[name].append(n / (time.perf_counter() - t))
            assert len(os.listdir(d)) == n
            shutil.rmtree(d)
    for name, v in rates.items():
        print(f"{name:8s} median {statistics.median(v):8.0f} files/s  runs {' '.join(f'{x:.0f}' for x in v)}")


if __name__ == "__main__":
    main()

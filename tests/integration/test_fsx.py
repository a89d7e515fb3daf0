"""fsx-style random operations on files through the mount, checked against an in-memory
model after every read: writes at random offsets (across chunk boundaries, with holes),
small writes followed by fsync or fdatasync (which aqd keeps as overlays of the blocks
they change), truncates up and down, reads (some after the page cache was dropped, so
that they reach aqd), fstat, close and reopen; two files at once in two processes so
per-inode client state cannot leak between files."""
import multiprocessing
import os
import random

from aqtest import Cluster, main

MAXLEN = 12 << 20


def fsx(path, seed, nops):
    rnd = random.Random(seed)
    model = bytearray()
    hist = []  # (op number, what, offset/length, model size before) for the failure report
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    for i in range(nops):
        op = rnd.random()
        if op < 0.1:
            off, ln = rnd.randrange(len(model) + 1000), rnd.randrange(1, 5000)
            data = rnd.randbytes(ln)
            os.pwrite(fd, data, off)
            (os.fsync if rnd.random() < 0.5 else os.fdatasync)(fd)
            hist.append((i, "write+sync", off, ln, len(model)))
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off:off + ln] = data
        elif op < 0.12:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            hist.append((i, "drop cache", 0, 0, len(model)))
        elif op < 0.4:
            off, ln = rnd.randrange(MAXLEN), rnd.randrange(1, 300_000)
            data = rnd.randbytes(ln)
            os.pwrite(fd, data, off)
            hist.append((i, "write", off, ln, len(model)))
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off:off + ln] = data
        elif op < 0.5:
            ln = rnd.randrange(MAXLEN)
            os.ftruncate(fd, ln)
            hist.append((i, "truncate", ln, 0, len(model)))
            if ln < len(model):
                del model[ln:]
            else:
                model.extend(bytes(ln - len(model)))
        elif op < 0.85:
            off, ln = rnd.randrange(len(model) + 1000), rnd.randrange(1, 500_000)
            got = os.pread(fd, ln, off)
            if got != bytes(model[off:off + ln]):
                raise AssertionError(f"seed {seed} op {i}: " + describe(fd, got, model, off, ln, hist))
        elif op < 0.95:
            size = os.fstat(fd).st_size
            assert size == len(model), f"seed {seed} op {i}: size {size}, model {len(model)}"
        else:
            os.close(fd)
            hist.append((i, "reopen", 0, 0, len(model)))
            fd = os.open(path, os.O_RDWR)
    os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == bytes(model), f"seed {seed}: final contents differ"


def describe(fd, got, model, off, ln, hist):
    """What a failed read returned, where, and the operations before it."""
    exp = bytes(model[off:off + ln])
    out = [f"read at {off}+{ln} returned {len(got)} bytes, expected {len(exp)}"]
    bad = [j for j in range(min(len(got), len(exp))) if got[j] != exp[j]]
    if bad:
        out.append(f"{len(bad)} bytes differ in [{off + bad[0]}, {off + bad[-1]}]; "
                   f"returned zeros: {all(got[j] == 0 for j in bad)}, expected zeros: {all(exp[j] == 0 for j in bad)}")
    out.append(f"read again: {'right' if os.pread(fd, ln, off) == exp else 'still wrong'}; fstat size {os.fstat(fd).st_size}")
    out += [f"  op {h[0]} {h[1]} {h[2]}+{h[3]} (size before {h[4]})" for h in hist[-12:]]
    return "\n".join(out)


def test_fsx_one_file(c):
    fsx(c.path("fsx0"), 1, 1500)


def test_fsx_two_processes(c):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=fsx, args=(c.path(f"fsx{s}"), s, 1000)) for s in (11, 12)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(300)
        assert p.exitcode == 0, f"fsx process exited {p.exitcode}"


if __name__ == "__main__":
    main(globals(), setup=Cluster)

"""Durability: data written and fsync'ed, and every metadata operation that returned,
survive kill -9 of aqd and a restart. Repeated many times; contents checked byte for byte
through the same mount, which reconnects to the restarted server by itself."""
import hashlib
import os
import random
import threading
import time

from aqtest import Cluster, main

ROUNDS = int(os.environ.get("AQ_DURABILITY_ROUNDS", "12"))


def test_kill9_loop(c):
    rnd = random.Random(2026)
    expect = {}   # path -> sha256 of contents (fsync'ed)
    dirs = set()
    for rnd_i in range(ROUNDS):
        d = c.path(f"round{rnd_i}")
        os.mkdir(d)
        dirs.add(d)
        for i in range(rnd.randrange(5, 25)):
            p = os.path.join(d, f"file{i}")
            data = os.urandom(rnd.choice([0, 1, 4096, 100_000, 1_000_000, 5_000_000]))
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            expect[p] = hashlib.sha256(data).hexdigest()
        # metadata operations that returned must survive even without fsync
        victims = [p for p in expect if p.startswith(d)][:3]
        for p in victims:
            os.rename(p, p + ".renamed")
            expect[p + ".renamed"] = expect.pop(p)
        if victims:
            os.unlink(victims[0] + ".renamed")
            del expect[victims[0] + ".renamed"]
        os.symlink("file0", os.path.join(d, "link"))
        # an overwrite of an earlier file, fsync'ed
        if rnd_i > 0:
            old = rnd.choice(sorted(expect))
            data = os.urandom(200_000)
            with open(old, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            expect[old] = hashlib.sha256(data).hexdigest()
        # a writer that is still going when the server dies: its data may be lost,
        # but nothing acknowledged may be
        stop = threading.Event()
        def busy():
            k = 0
            while not stop.is_set():
                try:
                    with open(os.path.join(d, f"busy{k}"), "wb") as f:
                        f.write(os.urandom(50_000))
                except OSError:
                    pass
                k += 1
        t = threading.Thread(target=busy)
        t.start()
        time.sleep(0.2)
        c.kill9()
        c.restart()
        stop.set()
        t.join()
        for p, h in expect.items():
            with open(p, "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
            assert got == h, f"round {rnd_i}: {p} differs after kill -9"
        for dd in dirs:
            assert os.path.isdir(dd)
            assert os.readlink(os.path.join(dd, "link")) == "file0"
        assert not any(os.path.exists(v) for v in victims[:1])


if __name__ == "__main__":
    main(globals(), setup=Cluster)

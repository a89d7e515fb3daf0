"""Bad input gets a clear error and loses nothing: a wrong cluster secret is refused; a
full disk gives ENOSPC and leaves existing files intact."""
import errno
import hashlib
import os
import re

from aqtest import AQ, Cluster, expect_errno, main, run


def test_wrong_secret_is_refused():
    with Cluster(mount=False) as c:
        conf = open(c.conf).read()
        bad = re.sub(r"secret = ([0-9a-f])", lambda m: "secret = " + ("1" if m.group(1) != "1" else "2"), conf)
        badf = os.path.join(c.base, "bad.conf")
        with open(badf, "w") as f:
            f.write(bad)
        os.chmod(badf, 0o600)
        p = run(AQ, "status", "--cluster", badf, check=False)
        assert p.returncode != 0
        assert "authentication failed" in p.stderr, p.stderr
        assert "refusing" in open(os.path.join(c.data, "aqd.log")).read()
        # the right secret still works and nothing was created
        assert "files     1" in c.aq("status").stdout


def test_missing_cluster_file_is_clear():
    p = run(AQ, "status", "--cluster", "/nonexistent/cluster.conf", check=False)
    assert p.returncode != 0 and "cannot open cluster file" in p.stderr, p.stderr


def test_enospc_keeps_existing_files():
    with Cluster(targets_fs_size="96m") as c:
        keep = {}
        for i in range(5):
            data = os.urandom(1_000_000)
            with open(c.path(f"keep{i}"), "wb") as f:
                f.write(data)
            keep[c.path(f"keep{i}")] = hashlib.sha256(data).hexdigest()
        got_enospc = False
        block = os.urandom(1 << 20)
        try:
            with open(c.path("filler"), "wb") as f:
                for _ in range(200):
                    f.write(block)
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            got_enospc = True
        assert got_enospc, "writing 200 MiB into a 96 MiB target file system did not fail"
        for p, h in keep.items():
            with open(p, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == h, p
        # space comes back once the filler is gone
        os.unlink(c.path("filler"))
        import time
        for _ in range(100):
            try:
                with open(c.path("after"), "wb") as f:
                    f.write(os.urandom(4_000_000))
                    os.fsync(f.fileno())
                break
            except OSError as e:
                assert e.errno == errno.ENOSPC
                time.sleep(0.2)
        else:
            raise AssertionError("space was not reclaimed after deleting the filler")
        for p, h in keep.items():
            with open(p, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == h, p


if __name__ == "__main__":
    main(globals())

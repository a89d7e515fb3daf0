"""aq bench tier against a real S3 server that checks SigV4 (s3rver, tests/s3): it refuses to
run without an object tier, then measures demote, cold read and prefetch beside plain curl
PUTs and GETs of the same bytes, verifies every file, and leaves neither its files nor its
baseline objects behind."""
import json
import os

from aqtest import AQ, Cluster, main, run
from s3helper import S3Server

BUCKET = "aqtest"


class Fixture:
    def __init__(self):
        self.s3 = S3Server(buckets=(BUCKET,))
        try:
            self.c = Cluster()
        except BaseException:
            self.s3.stop()
            raise
        self.data = self.c.data  # aqtest.main() prints DATA/aqd.log when a test failed

    def close(self):
        self.c.close()
        self.s3.stop()

    def aq(self, *args, check=True, env=None):
        return run(AQ, *args, "--cluster", self.c.conf, check=check, env=env or self.s3.env(), timeout=600)

    def baseline_objects(self):
        """Files s3rver keeps for keys under aq-bench-baseline/."""
        root = os.path.join(self.s3.store, BUCKET, "aq-bench-baseline")
        return [os.path.join(d, n) for d, _, names in os.walk(root) for n in names]


def test_a_needs_a_tier(f):
    p = f.aq("bench", "tier", "--files", "2", "--file-size", "4096", check=False)
    assert p.returncode == 1, p
    assert "no object tier is configured" in p.stderr and "aq tier set" in p.stderr, p.stderr
    assert not [n for n in os.listdir(f.c.mnt) if n.startswith("bench-tier-")]


def test_b_bench_json(f):
    f.aq("tier", "set", "--endpoint", f.s3.endpoint, "--bucket", BUCKET)
    p = f.aq("bench", "tier", "--files", "8", "--file-size", "1048576", "--json")
    out = json.loads(p.stdout)
    assert out["files"] == 8 and out["bytes"] == 8 << 20 and out["threads"] == 8, out
    assert out["verified_files"] == 8, out
    assert 1 <= out["pack_objects"] <= 8 and out["pack_objects"] * out["pack_bytes"] <= out["bytes"], out
    for side, keys in (("aquifer", ("demote_mb_per_s", "cold_read_mb_per_s", "prefetch_mb_per_s")),
                       ("plain_s3", ("put_mb_per_s", "get_mb_per_s", "prefetch_get_mb_per_s"))):
        for k in keys:
            assert out[side][k] > 0, (side, k, out)
    # its files and directory, and its baseline objects, are gone; no key reached the output
    assert not [n for n in os.listdir(f.c.mnt) if n.startswith("bench-tier-")], os.listdir(f.c.mnt)
    assert not f.baseline_objects(), f.baseline_objects()
    assert f.s3.secret_key not in p.stdout + p.stderr


def test_c_rounds_and_table(f):
    # keys from the credentials file aqd uses (named by the tier's status), none in the environment
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    p = f.aq("bench", "tier", "--files", "4", "--file-size", "300000", "--threads", "2", "--rounds", "2",
             env=env)
    for phase in ("demote", "cold read", "prefetch"):
        assert any(line.startswith(phase) for line in p.stdout.splitlines()), p.stdout
    assert "2 rounds (medians)" in p.stdout and "verified: 4 files" in p.stdout, p.stdout
    assert not f.baseline_objects()


if __name__ == "__main__":
    main(globals(), setup=Fixture)

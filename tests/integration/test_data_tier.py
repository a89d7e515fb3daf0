"""The data layer's object tier against a real S3-compatible server (s3rver, which checks
SigV4 signatures): build/tests/tier_selftest demotes chunks of many inodes into packed
objects, reads them back byte-exact, writes and truncates cold chunks, reclaims after
deletes and restarts; this driver damages the stored object (the read must fail, never
return the bytes) and cuts S3 off through a proxy (demote fails, nothing freed)."""
import glob
import os
import subprocess
import tempfile

from aqtest import ROOT, main
from s3helper import FaultProxy, S3Server

SELFTEST = os.path.join(ROOT, "build", "tests", "tier_selftest")


def corrupt_objects(store):
    objs = glob.glob(os.path.join(store, "**", "*._S3rver_object"), recursive=True)
    assert objs, f"no objects under {store}"
    for path in objs:
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            for i in range(0, len(data), 4096):
                data[i] ^= 0xFF
            f.seek(0)
            f.write(data)


def test_tier_selftest():
    with S3Server() as s3, FaultProxy(s3.port) as proxy, tempfile.TemporaryDirectory() as d:
        p = subprocess.Popen([SELFTEST, os.path.join(d, "data"), proxy.endpoint, s3.bucket], env=s3.env(),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = []
        for line in p.stdout:
            out.append(line)
            print(line, end="")
            if line.startswith("WAIT corrupt"):
                corrupt_objects(s3.store)
            elif line.startswith("WAIT cut"):
                proxy.refuse()
            elif line.startswith("WAIT restore"):
                proxy.allow()
            if line.startswith("WAIT"):
                p.stdin.write("go\n")
                p.stdin.flush()
        rc = p.wait(300)
        err = p.stderr.read()
        assert rc == 0 and "PASSED" in "".join(out), f"tier_selftest exited {rc}\n{err[-3000:]}"
        assert "S3RVER" not in err.replace("AWS_ACCESS_KEY_ID", ""), "a secret reached the log"
        assert "corrupt" in err, "the crc mismatch was not logged"


if __name__ == "__main__":
    main(globals())

"""The S3 client (src/s3) against a real S3-compatible server (s3rver, which checks SigV4
signatures), directly and through FaultProxy: every operation round-trips byte-exact,
multipart uploads go up in parts, 503 SlowDown is retried, an unreachable S3 fails with
EHOSTUNREACH in bounded time, wrong credentials fail with the S3 error code, and a failed
multipart upload is aborted. Drives build/tests/s3_selftest."""
import os
import subprocess
import time

from aqtest import ROOT, main
from s3helper import FaultProxy, S3Server

SELFTEST = os.path.join(ROOT, "build", "tests", "s3_selftest")
BUCKET = "aqtest"


def selftest(s3, op, endpoint=None, args=(), env=None, timeout=120):
    """Runs s3_selftest --op op; returns (CompletedProcess, seconds)."""
    t0 = time.monotonic()
    p = subprocess.run([SELFTEST, "--op", op, *args, endpoint or s3.endpoint, BUCKET], capture_output=True,
                       text=True, env=env or s3.env(), timeout=timeout)
    return p, time.monotonic() - t0


def show(p):
    return f"exit {p.returncode}\n--- stdout\n{p.stdout}--- stderr\n{p.stderr[-3000:]}"


def test_selftest_passes(s3):
    p, _ = selftest(s3, "all")
    assert p.returncode == 0 and p.stdout.rstrip().endswith(" 0 failed"), show(p)


def test_multipart_goes_up_in_parts(s3):
    with FaultProxy(s3.port) as proxy:
        p, _ = selftest(s3, "all", endpoint=proxy.endpoint)
        assert p.returncode == 0, show(p)
        reqs = proxy.requests
    big = [r for r in reqs if "/aqtest/big/multipart.bin" in r]
    assert "POST /aqtest/big/multipart.bin?uploads=" in big, big
    parts = sorted(r for r in big if r.startswith("PUT ") and "partNumber=" in r)
    assert len(parts) == 5, parts  # 40 MiB in 8 MiB parts
    assert any(r.startswith("POST ") and "?uploadId=" in r for r in big), big
    # the key with every character that needs encoding went out encoded as AWS does
    assert any("/aqtest/dir%20one/s%C3%A9lf%20test%2B%3D%26%3F%23%25~.bin" in r for r in reqs), reqs


def test_slowdown_is_retried(s3):
    with FaultProxy(s3.port) as proxy:
        proxy.fail_next(3)
        p, secs = selftest(s3, "putget", endpoint=proxy.endpoint)
        assert p.returncode == 0, show(p)
        assert proxy.injected == 3, proxy.injected
        assert p.stderr.count("503 SlowDown") == 3, show(p)  # each retry logged once
        assert secs < 10, secs


def test_slowdown_forever_is_eagain(s3):
    with FaultProxy(s3.port) as proxy:
        proxy.fail_next(1000)
        p, secs = selftest(s3, "put", endpoint=proxy.endpoint)
        assert p.returncode == 1 and "EAGAIN" in p.stdout and "SlowDown" in p.stdout, show(p)
        assert "gave up after 6 tries" in p.stdout, show(p)
        assert proxy.injected == 6, proxy.injected
        assert secs < 30, secs


def test_unreachable_fails_in_bounded_time(s3):
    with FaultProxy(s3.port) as proxy:
        proxy.refuse()
        p, secs = selftest(s3, "put", endpoint=proxy.endpoint)
        assert p.returncode == 1 and "EHOSTUNREACH" in p.stdout, show(p)
        assert "gave up after 6 tries" in p.stdout, show(p)
        assert secs < 30, secs
        # and once S3 is back, the same client code works again
        proxy.allow()
        p, _ = selftest(s3, "putget", endpoint=proxy.endpoint)
        assert p.returncode == 0, show(p)


def test_wrong_credentials_fail_clearly(s3):
    secret = "not-the-secret-4711"
    p, secs = selftest(s3, "check", env=s3.env(AWS_SECRET_ACCESS_KEY=secret))
    assert p.returncode == 1 and "EACCES" in p.stdout and "SignatureDoesNotMatch" in p.stdout, show(p)
    assert secret not in p.stdout + p.stderr
    assert secs < 5, secs  # a refusal is not retried
    p, _ = selftest(s3, "check", env=s3.env(AWS_ACCESS_KEY_ID="NOBODY"))
    assert p.returncode == 1 and "EACCES" in p.stdout and "InvalidAccessKeyId" in p.stdout, show(p)


def test_credentials_file_mode_is_checked(s3):
    path = os.path.join(s3.base, "credentials")
    with open(path, "w") as f:
        f.write(f"[default]\naws_access_key_id = {s3.access_key}\naws_secret_access_key = {s3.secret_key}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    os.chmod(path, 0o644)
    p, _ = selftest(s3, "check", args=("--cred", path), env=env)
    assert p.returncode == 1 and "0600" in p.stderr and "0644" in p.stderr, show(p)
    assert s3.secret_key not in p.stderr
    os.chmod(path, 0o600)
    p, _ = selftest(s3, "check", args=("--cred", path), env=env)
    assert p.returncode == 0, show(p)


def test_failed_multipart_upload_is_aborted(s3):
    with FaultProxy(s3.port) as proxy:
        proxy.fail_next(1000, match="partNumber=")  # every part fails, the rest works
        p, secs = selftest(s3, "bigput", endpoint=proxy.endpoint)
        assert p.returncode == 1 and "EAGAIN" in p.stdout and "part " in p.stdout, show(p)
        assert secs < 30, secs
        reqs = proxy.requests
    # s3rver does not implement AbortMultipartUpload (it answers 405, which the client logs
    # as a warning), so what is checked is that the abort went out and nothing completed
    assert any(r.startswith("DELETE /aqtest/bigput.bin?uploadId=") for r in reqs), reqs
    assert not any(r.startswith("POST /aqtest/bigput.bin?uploadId=") for r in reqs), reqs
    assert "abort of multipart upload of bigput.bin" in p.stderr, show(p)
    p, _ = selftest(s3, "check")
    assert p.returncode == 0, show(p)


if __name__ == "__main__":
    main(globals(), setup=lambda: S3Server(buckets=(BUCKET,)))

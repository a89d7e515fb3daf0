"""Helpers for tests that need S3: a real S3-compatible server and a fault-injecting proxy.

    with S3Server(buckets=("aqtest",)) as s3:          # s3rver under node, on a free port
        s3.endpoint, s3.bucket, s3.env()               # http://127.0.0.1:PORT, "aqtest", AWS_* vars
        with FaultProxy(s3.port) as proxy:             # 127.0.0.1:proxy.port -> s3rver
            proxy.fail_next(3)                         # next 3 requests: 503 SlowDown
            proxy.refuse(); proxy.allow()              # S3 unreachable (connection refused) / back
            proxy.requests                             # "METHOD /target" of every request seen

S3Server runs tests/s3/s3server.js (s3rver, installed into tests/s3/node_modules by
tests/s3/setup.sh, which it calls) with its store in a temporary directory; the keys are
S3RVER / S3RVER. s3rver checks SigV4 signatures and requires x-amz-content-sha256.
"""
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.environ.get("AQ_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
S3_DIR = os.path.join(ROOT, "tests", "s3")
ACCESS_KEY = "S3RVER"
SECRET_KEY = "S3RVER"


def ensure_installed():
    """Installs s3rver (npm ci) unless tests/s3/node_modules is already up to date."""
    p = subprocess.run(["bash", os.path.join(S3_DIR, "setup.sh")], capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"tests/s3/setup.sh failed: {p.stdout}{p.stderr}")


def _node_flags(node):
    """--openssl-legacy-provider where node knows it (17 and later): s3rver makes the
    continuation tokens of ListObjectsV2 with DES, which OpenSSL 3 keeps in its legacy
    provider, so without it every truncated listing (max-keys below the keys in the
    bucket, as in aqd's bucket check) answers 500 InternalError."""
    p = subprocess.run([node, "--openssl-legacy-provider", "-e", ""], capture_output=True)
    return ["--openssl-legacy-provider"] if p.returncode == 0 else []


class S3Server:
    """s3rver on 127.0.0.1 (a port the kernel picks), storing under a fresh temporary
    directory, with the given buckets created. Stop it with stop() or use it as a context
    manager; the directory goes too (kept when $AQ_KEEP is set)."""

    def __init__(self, buckets=("aqtest",), start_timeout_s=30):
        ensure_installed()
        node = shutil.which("node") or shutil.which("nodejs")
        if not node:
            raise AssertionError("node not found (scripts/deps.sh installs nodejs)")
        self.base = tempfile.mkdtemp(prefix="aqs3.")
        self.data = self.base  # aqtest.main() looks here for logs of a failed fixture
        self.store = os.path.join(self.base, "store")
        self.log_path = os.path.join(self.base, "s3server.log")
        self.bucket = buckets[0] if buckets else None
        self.access_key, self.secret_key = ACCESS_KEY, SECRET_KEY
        os.makedirs(self.store)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([node, *_node_flags(node), os.path.join(S3_DIR, "s3server.js"), "0", self.store,
                                      *buckets],
                                     cwd=S3_DIR, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self.port = self._wait_listening(start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def _wait_listening(self, timeout_s):
        deadline = time.monotonic() + timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise AssertionError(f"s3server did not start (exit {self.proc.poll()}): {self.log()}")
            if select.select([self.proc.stdout], [], [], min(left, 0.5))[0]:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    continue  # EOF: poll() says why on the next turn
                line += c
        m = re.match(rb"listening (\d+)\n", line)
        if not m:
            raise AssertionError(f"s3server said {line!r}: {self.log()}")
        return int(m.group(1))

    def log(self):
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def env(self, **extra):
        """os.environ with this server's credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY."""
        return {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key, **extra}

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()  # s3server.js closes its listener and exits
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        if os.environ.get("AQ_KEEP"):
            print("kept", self.base)
        else:
            shutil.rmtree(self.base, ignore_errors=True)

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            print("---- s3server.log (tail) ----\n" + self.log())
        self.stop()


def _error_reply(status, code, message):
    reasons = {500: "Internal Server Error", 503: "Slow Down", 400: "Bad Request", 403: "Forbidden"}
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
            f"<Message>{message}</Message><RequestId>faultproxy</RequestId></Error>").encode()
    head = (f"HTTP/1.1 {status} {reasons.get(status, 'Error')}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


class FaultProxy:
    """A proxy on 127.0.0.1:self.port in front of 127.0.0.1:upstream_port, one HTTP request
    per client connection: it reads the request head, then either answers with an injected
    S3 error (Connection: close) or forwards it upstream with "Connection: close" and pipes
    raw bytes both ways until the server closes (so 100-continue, chunked replies and bodies
    pass untouched). Thread-safe; stop it with close() or use it as a context manager."""

    HEAD_MAX = 64 << 10

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.requests = []  # "METHOD /target" of every request, answered or not
        self.injected = 0  # errors answered so far
        self._lock = threading.Lock()
        self._fail_left = 0
        self._fail = None  # (status, code, message, match)
        self._conns = set()
        self._closed = False
        self._listener = self._listen(0)
        self.port = self._listener.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    # ---- controls ----

    def fail_next(self, n, status=503, code="SlowDown", message="Please reduce your request rate.", match=None):
        """Answers the next n requests (only those whose "METHOD /target" contains match,
        when given) with status and an S3 XML error body."""
        with self._lock:
            self._fail_left = n
            self._fail = (status, code, message, match)

    def refuse(self):
        """S3 unreachable: the port stops listening (connects are refused) and open
        connections are cut, until allow()."""
        with self._lock:
            lst, self._listener = self._listener, None
            conns = list(self._conns)
        if lst is not None:
            lst.shutdown(socket.SHUT_RDWR)  # wakes accept(); the kernel refuses new connects
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def allow(self):
        """Listens again on the same port and clears any pending injected errors."""
        with self._lock:
            self._fail_left = 0
            if self._listener is None:
                self._listener = self._listen(self.port)

    def close(self):
        self._closed = True
        self.refuse()
        self._thread.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- inside ----

    @staticmethod
    def _listen(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(64)
        s.settimeout(0.2)  # the loop notices close() and refuse()
        return s

    def _accept_loop(self):
        while not self._closed:
            with self._lock:
                lst = self._listener
            if lst is None:
                time.sleep(0.02)
                continue
            try:
                c, _ = lst.accept()
            except socket.timeout:
                continue
            except OSError:  # refuse() shut it down: only this thread closes it
                lst.close()
                continue
            with self._lock:
                if self._listener is not lst:  # refused between accept() and here
                    c.close()
                    continue
                self._conns.add(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()
        with self._lock:
            lst, self._listener = self._listener, None
        if lst is not None:
            lst.close()

    def _read_head(self, c):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = c.recv(65536)
            if not chunk or len(data) > self.HEAD_MAX:
                return None, None
            data += chunk
        head, rest = data.split(b"\r\n\r\n", 1)
        return head, rest

    def _take_fault(self, request):
        with self._lock:
            self.requests.append(request)
            if self._fail_left <= 0 or (self._fail[3] and self._fail[3] not in request):
                return None
            self._fail_left -= 1
            self.injected += 1
            return self._fail

    def _serve(self, c):
        up = None
        try:
            c.settimeout(60)
            head, rest = self._read_head(c)
            if head is None:
                return
            lines = head.split(b"\r\n")
            parts = lines[0].decode("latin-1").split(" ")
            request = " ".join(parts[:2])
            headers = {}
            for line in lines[1:]:
                k, _, v = line.partition(b":")
                headers[k.strip().lower()] = v.strip()
            fault = self._take_fault(request)
            if fault:
                # Read the body the client is sending (unless it waits for 100-continue)
                # so that closing does not reset the connection before our reply is read.
                if b"100-continue" not in headers.get(b"expect", b"").lower():
                    left = int(headers.get(b"content-length", b"0") or 0) - len(rest)
                    while left > 0:
                        chunk = c.recv(min(left, 1 << 20))
                        if not chunk:
                            break
                        left -= len(chunk)
                c.sendall(_error_reply(*fault[:3]))
                c.shutdown(socket.SHUT_WR)
                return
            hop_by_hop = (b"connection", b"keep-alive", b"proxy-connection")
            kept = [line for line in lines[1:] if line.split(b":", 1)[0].strip().lower() not in hop_by_hop]
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60)
            up.sendall(b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n" + rest)
            self._pipe(c, up)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(c)
            for s in (c, up):
                if s is not None:
                    s.close()

    @staticmethod
    def _pipe(c, up):
        """Copies bytes both ways until the server has closed (it was asked to, after its reply)."""
        peer = {c: up, up: c}
        open_ = {c, up}
        while up in open_:
            ready, _, _ = select.select(list(open_), [], [], 60)
            if not ready:
                return
            for s in ready:
                data = s.recv(1 << 20)
                if data:
                    peer[s].sendall(data)
                    continue
                open_.discard(s)
                if s is c:
                    up.shutdown(socket.SHUT_WR)  # the client is done sending
                else:
                    return

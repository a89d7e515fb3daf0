"""The Python binding (python/aquifer) and its PyTorch datasets against a real aqd: files
written through the FUSE mount read back through libaq with open/readinto (bytearray,
numpy), read_many, stat, a streaming listdir of a 20,000-entry directory, changes; errors
as OSError subclasses with errno, for root and for nobody; DataLoaders with three workers
over AquiferDataset and AquiferIterableDataset return every sample exactly once per epoch.

The code under test finds the cluster through $AQ_CLUSTER, as a user's would."""
import collections
import ctypes
import errno
import io
import itertools
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import types
import warnings

import numpy as np
from torch.utils.data import DataLoader

import aqtest
from aqtest import ROOT, Cluster, run_as

import aquifer
import aquifer.client
from aquifer._lib import AQ_CREATE_EXCL, P, error, lib
from aquifer.torch import AquiferDataset, AquiferIterableDataset

N_FILES = 300
N_LIST = 20000
BIG = 9 * 1024 * 1024 + 123  # spans three 4 MiB chunks
warnings.filterwarnings("ignore", "This DataLoader will create")  # 3 workers on a 2-core machine


def content(i):
    """File i's bytes: unique per file, 0 to about 20 KB."""
    if i == 0:
        return b""
    size = 11 + (i * 7919) % 20000
    return (b"file %05d " % i * (size // 11 + 1))[:size]


def big_content(_cache=[]):
    """BIG random bytes (seeded), so that a piece from the wrong chunk cannot match."""
    if not _cache:
        _cache.append(np.random.default_rng(1).integers(0, 256, BIG, dtype=np.uint8).tobytes())
    return _cache[0]


class Fixture:
    def __init__(self):
        self.cluster = Cluster()
        os.environ["AQ_CLUSTER"] = self.cluster.conf
        ds = self.cluster.path("ds")
        os.mkdir(ds)
        self.expected = {}
        for i in range(N_FILES):
            with open(os.path.join(ds, f"f{i:04d}"), "wb") as f:
                f.write(content(i))
            self.expected[f"f{i:04d}"] = content(i)
        with open(self.cluster.path("big"), "wb") as f:
            f.write(big_content())
        self.c = aquifer.connect()

    @property
    def data(self):  # for aqtest.main's log dump on failure
        return self.cluster.data

    def close(self):
        self.c.close()
        self.cluster.close()


def test_open_readinto(fx):
    c = fx.c
    want = fx.expected["f0007"]
    with c.open("/ds/f0007") as f:
        assert isinstance(f, io.RawIOBase) and f.readable() and not f.writable()
        buf = bytearray(len(want) + 100)
        assert f.readinto(buf) == len(want) and buf[:len(want)] == want
        assert f.tell() == len(want) and f.readinto(buf) == 0
        f.seek(5)
        arr = np.zeros((4, 8), dtype=np.float32)  # 128 bytes into a 2-D numpy array, in place
        assert f.readinto(arr) == 128 and arr.tobytes() == want[5:133]
        mv = memoryview(buf)[10:20]
        f.seek(-10, os.SEEK_END)
        assert f.readinto(mv) == 10 and bytes(buf[10:20]) == want[-10:]
        f.seek(0)
        assert f.read(11) == want[:11] and f.read() == want[11:]
    with c.open("/big", "rb") as f:  # across chunk boundaries
        arr = np.empty(BIG, dtype=np.uint8)
        assert f.readinto(arr) == BIG and arr.tobytes() == big_content()
    with c.open("/written.bin", "wb") as f:
        assert f.write(b"hello ") == 6 and f.write(bytearray(b"from ")) == 5
        f.write(np.frombuffer(b"python", dtype=np.uint8))
    with c.open("/written.bin", "ab") as f:
        f.write(b"!")
    with open(fx.cluster.path("written.bin"), "rb") as f:
        assert f.read() == b"hello from python!"
    with c.open("/written.bin", "r+b") as f:
        f.seek(6)
        f.write(b"FROM")
        f.seek(0)
        assert f.read() == b"hello FROM python!"
    try:
        c.open("/ds/f0001", "r")
        raise AssertionError("text mode accepted")
    except ValueError:
        pass


def test_stat(fx):
    st = fx.c.stat("/ds/f0042")
    ref = os.stat(fx.cluster.path("ds", "f0042"))
    assert stat.S_ISREG(st.st_mode) and st.st_size == len(fx.expected["f0042"]) == ref.st_size
    assert st.st_ino == ref.st_ino and st.st_mode == ref.st_mode and st.st_uid == 0
    assert abs(st.st_mtime - ref.st_mtime) < 2 and st.st_mtime_ns // 10**9 == int(st.st_mtime)
    assert stat.S_ISDIR(fx.c.stat("/ds").st_mode) and stat.S_ISDIR(fx.c.stat("/").st_mode)


def test_stat_while_size_commits(fx):
    """A stat racing a size commit from another thread of the same client never goes
    back to the size the server had before (regression: the server's older answer was
    taken once the commit had cleared the client's unflushed size; through FUSE the
    kernel then cut the file short). The writer grows a file one byte at a time, with
    a flush per byte, or a close per byte (the file is not open when the stat returns)."""

    def grow_open(written, path):
        with fx.c.open(path, "wb") as f:
            for _ in range(3000):
                f.write(b"x")
                written[0] = f.tell()  # this client's size from here on, flushed or not
                f.flush()

    def grow_reopen(written, path):
        fx.c.open(path, "wb").close()
        for i in range(1500):
            with fx.c.open(path, "r+b") as f:
                f.seek(i)
                f.write(b"x")
                written[0] = i + 1

    for grow in (grow_open, grow_reopen):
        path, written, seen = f"/grows-{grow.__name__}", [0], []
        t = threading.Thread(target=grow, args=(written, path))
        t.start()
        while t.is_alive():
            known = written[0]
            try:
                size = fx.c.stat(path).st_size
            except FileNotFoundError:
                continue
            if size < known:
                seen.append((known, size))
        t.join()
        assert not seen, f"{grow.__name__}: stat went back to an older size {len(seen)} times, e.g. {seen[:3]}"


class CountingLib:
    """Stands in for libaq inside aquifer.client, counting aq_dir_read calls."""

    def __init__(self):
        self.readdirs = 0

    def __getattr__(self, name):
        fn = getattr(lib, name)
        if name != "aq_dir_read":
            return fn

        def counted(*args):
            self.readdirs += 1
            return fn(*args)
        return counted


def test_sequential_reads_through_read_ahead(fx):
    """A sequential reader gets read-ahead (4 MiB windows in flight, ra.c): what it reads
    must be the file exactly, across chunk boundaries, with odd read sizes, after a seek,
    and right after a write or truncate through another handle of the same client."""
    c = fx.c
    size = 19 * 1024 * 1024 + 12345  # several 4 MiB chunks and windows, ragged end
    rng = np.random.default_rng(7)
    data = bytearray(rng.integers(0, 256, size, dtype=np.uint8).tobytes())
    with c.open("/ra.bin", "wb") as w:
        w.write(data)
    for step in (4096, 65536, 100003, 1 << 20):
        got = bytearray()
        with c.open("/ra.bin", "rb") as r:
            while True:
                b = r.read(step)
                if not b:
                    break
                got += b
        assert got == data, f"sequential reads of {step} bytes differ"
    with c.open("/ra.bin", "rb") as r, c.open("/ra.bin", "r+b") as w:
        assert r.read(300000) == data[:300000] and r.read(300000) == data[300000:600000]
        # the windows now hold bytes ahead; a write through this client must show
        w.seek(700000)
        w.write(b"X" * 5000)
        data[700000:705000] = b"X" * 5000
        assert r.read(300000) == data[600000:900000], "read-ahead served bytes from before a write"
        r.seek(5 * 1024 * 1024)  # a seek: direct reads until sequential again
        for k in range(8):
            at = 5 * 1024 * 1024 + k * 77777
            assert r.read(77777) == data[at:at + 77777], f"after the seek, read {k}"
        # truncate through this client (aq_setattr with AQ_SET_SIZE = 1 << 3)
        attr = aquifer._lib.Attr(size=6 * 1024 * 1024)
        lib.aq_setattr.restype = ctypes.c_int
        lib.aq_setattr.argtypes = [P, P, ctypes.c_uint64, ctypes.c_uint32, ctypes.POINTER(aquifer._lib.Attr), P]
        assert lib.aq_setattr(c._handle(), None, c.stat("/ra.bin").st_ino, 1 << 3, ctypes.byref(attr), None) == 0
        del data[6 * 1024 * 1024:]
        at = r.tell()
        assert r.read(1 << 19) == data[at:at + (1 << 19)], "read-ahead past a truncate"
        assert r.read(1 << 19) == data[at + (1 << 19):at + (1 << 20)]
    c_file = "/ra.bin"
    assert c.stat(c_file).st_size == 6 * 1024 * 1024


class Cred(ctypes.Structure):  # struct aq_cred
    _fields_ = [("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("ngroups", ctypes.c_uint32),
                ("groups", ctypes.c_uint32 * 32)]


def test_lazy_open_refusal_shows_at_first_read(fx):
    """aq_open_ino_lazy (what the mount uses for read-only opens) returns before the
    server answered: a refusal shows at the first read, and aq_file_reopen with other
    credentials (the mount adds the caller's groups) opens it after all."""
    h = fx.c._handle()
    path = fx.cluster.path("lazy_secret")
    with open(path, "wb") as f:
        f.write(b"root only")
    os.chmod(path, 0o600)
    ino = os.stat(path).st_ino
    lib.aq_open_ino_lazy.restype, lib.aq_open_ino_lazy.argtypes = \
        ctypes.c_int, [P, ctypes.POINTER(Cred), ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(P)]
    lib.aq_file_reopen.restype, lib.aq_file_reopen.argtypes = ctypes.c_int, [P, ctypes.POINTER(Cred)]
    nobody, root = Cred(65534, 65534, 0), Cred(0, 0, 0)
    buf = ctypes.create_string_buffer(64)
    f = P()
    assert lib.aq_open_ino_lazy(h, ctypes.byref(nobody), ino, os.O_RDONLY, ctypes.byref(f)) == 0
    assert lib.aq_pread(f, buf, 64, 0) == -errno.EACCES
    assert lib.aq_pread(f, buf, 64, 0) == -errno.EACCES  # and stays refused
    assert lib.aq_file_reopen(f, ctypes.byref(root)) == 0
    assert lib.aq_pread(f, buf, 64, 0) == 9 and buf.raw[:9] == b"root only"
    assert lib.aq_close(f) == 0
    g = P()  # a lazy open of an inode that does not exist fails at its first call too
    os.unlink(path)
    assert lib.aq_open_ino_lazy(h, ctypes.byref(root), ino + 10**9, os.O_RDONLY, ctypes.byref(g)) == 0
    assert lib.aq_pread(g, buf, 64, 0) == -errno.ENOENT
    assert lib.aq_close(g) == -errno.ENOENT


def test_lazy_open_bytes(fx):
    """aq_open_bytes hands over what a lazy open's OPEN brought (the whole of a small
    file, marked as reaching its end), once; reads still come back right afterwards.
    aq_open_ino_lazy_nodata (the mount's open of a file whose bytes its kernel holds)
    brings none."""
    h = fx.c._handle()
    path = fx.cluster.path("lazy_bytes")
    data = os.urandom(100_000)
    with open(path, "wb") as f:
        f.write(data)
    ino = os.stat(path).st_ino
    for fn in ("aq_open_ino_lazy", "aq_open_ino_lazy_nodata"):
        getattr(lib, fn).restype = ctypes.c_int
        getattr(lib, fn).argtypes = [P, ctypes.POINTER(Cred), ctypes.c_uint64, ctypes.c_int, ctypes.POINTER(P)]
    lib.aq_open_bytes.restype = ctypes.c_ssize_t
    lib.aq_open_bytes.argtypes = [P, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_bool), ctypes.POINTER(P)]
    lib.aq_bytes_free.restype, lib.aq_bytes_free.argtypes = None, [P]
    root = Cred(0, 0, 0)
    buf = ctypes.create_string_buffer(len(data) + 1)
    for fn, brings in (("aq_open_ino_lazy", True), ("aq_open_ino_lazy_nodata", False)):
        f, ptr, eof, held = P(), ctypes.c_void_p(), ctypes.c_bool(), P()
        assert getattr(lib, fn)(h, ctypes.byref(root), ino, os.O_RDONLY, ctypes.byref(f)) == 0
        n = lib.aq_open_bytes(f, ctypes.byref(ptr), ctypes.byref(eof), ctypes.byref(held))
        if brings:
            assert n == len(data) and eof.value and ctypes.string_at(ptr, n) == data, fn
        else:
            assert n == -errno.EAGAIN, f"{fn}: {n}"
        lib.aq_bytes_free(held)
        assert lib.aq_open_bytes(f, ctypes.byref(ptr), ctypes.byref(eof), ctypes.byref(held)) == -errno.EAGAIN
        assert lib.aq_pread(f, buf, len(data) + 1, 0) == len(data) and buf.raw[:len(data)] == data, fn
        assert lib.aq_close(f) == 0


def make_files(fx, dirname, names):
    """Creates the files names (bytes) in the new directory dirname natively, 256 in flight."""
    c = fx.c
    os.mkdir(fx.cluster.path(dirname))
    dino = c.stat("/" + dirname).st_ino
    pending = collections.deque()
    for nm in names:
        if len(pending) >= 256:
            assert lib.aq_wait(pending.popleft(), None) == 0
        p = P()
        assert lib.aq_mknod_start(c._handle(), None, dino, nm, stat.S_IFREG | 0o644, 0, AQ_CREATE_EXCL,
                                  ctypes.byref(p)) == 0
        pending.append(p)
    while pending:
        assert lib.aq_wait(pending.popleft(), None) == 0


def test_listdir_streams_20k(fx):
    c = fx.c
    names = [b"n%06d" % i for i in range(N_LIST)]
    make_files(fx, "many", names)
    counting = CountingLib()
    aquifer.client.lib = counting
    try:
        it = c.listdir("/many")
        assert isinstance(it, types.GeneratorType)
        first = list(itertools.islice(it, 10))
        assert len(first) == 10 and counting.readdirs == 1, f"first 10 names took {counting.readdirs} pages"
        rest = list(it)
        pages = counting.readdirs
    finally:
        aquifer.client.lib = lib
    got = first + rest
    assert len(got) == N_LIST and set(got) == {n.decode() for n in names}, f"listed {len(got)}"
    assert N_LIST // aquifer.client.PAGE < pages <= N_LIST // 100, f"{pages} pages for {N_LIST} entries"
    ents = list(c.scandir("/ds"))
    assert sorted(e.name for e in ents) == sorted(fx.expected)
    for e in ents:
        assert not e.is_dir and e.size == len(fx.expected[e.name]) and e.ino > 0
    top = {e.name: e for e in c.scandir("/")}
    assert top["ds"].is_dir and top["many"].is_dir and not top["big"].is_dir


def test_listing_with_long_names_is_complete(fx):
    """Regression: the server marked a page that its 1 MiB byte limit cut short as the end
    of its bucket range, so a streamed listing of 33,000 entries with 250-byte names lost
    a quarter of them (listdir) or more (scandir, whose entries carry attributes)."""
    c = fx.c
    names = [b"%06d" % i + b"L" * 244 for i in range(33000)]
    make_files(fx, "long", names)
    want = {n.decode() for n in names}
    got = list(c.listdir("/long"))
    assert len(got) == len(want) and set(got) == want, f"listdir: {len(got)} of {len(want)}"
    got = [e.name for e in c.scandir("/long")]
    assert len(got) == len(want) and set(got) == want, f"scandir: {len(got)} of {len(want)}"


def test_read_back_of_buffered_writes_asks_no_server(fx):
    """Scattered writes stay in the client's buffers (several ranges per chunk), and a read
    of bytes the buffers hold whole is answered from them: with aqd stopped, reading each
    piece back still ends at once (before, every read sent the buffers first, a chunk
    rewrite each for a linker reading back its output). A read that also needs the
    server's bytes gets the buffered ones laid over them."""
    c = fx.c
    with c.open("/readback", "wb") as f:
        f.write(b"s" * (2 << 20))
    rnd = random.Random(3)
    pieces = [(off, rnd.randbytes(rnd.randrange(1, 3000))) for off in range(1000, 2 << 20, 9000)]
    f = c.open("/readback", "r+b")
    try:
        for off, data in pieces:
            f.seek(off)
            assert f.write(data) == len(data)
        got = {}

        def read_back():
            for off, data in pieces:
                buf = bytearray(len(data))
                f.seek(off)
                f.readinto(buf)
                got[off] = bytes(buf)
        aqd = fx.cluster.pid()
        os.kill(aqd, signal.SIGSTOP)
        try:
            t = threading.Thread(target=read_back, daemon=True)
            t.start()
            t.join(10)
            waited = t.is_alive()
        finally:
            os.kill(aqd, signal.SIGCONT)
        t.join()
        assert not waited, "reads of buffered bytes waited for aqd"
        assert all(got[off] == data for off, data in pieces)
        buf = bytearray(20000)  # server bytes and buffered ones together
        f.seek(995)
        f.readinto(buf)
        assert bytes(buf[:5]) == b"sssss" and bytes(buf[5:5 + len(pieces[0][1])]) == pieces[0][1]
    finally:
        f.close()
    want = bytearray(b"s" * (2 << 20))
    for off, data in pieces:
        want[off:off + len(data)] = data
    with c.open("/readback", "rb") as f:
        assert f.read() == bytes(want)


POLL_PROBE = """
import aquifer, resource
c = aquifer.connect()
c.stat("/ds/f0001")
r0 = resource.getrusage(resource.RUSAGE_SELF)
for i in range(1000):
    c.stat("/ds/f0001")
r1 = resource.getrusage(resource.RUSAGE_SELF)
print((r1.ru_nvcsw - r0.ru_nvcsw) / 1000)
"""


def test_metadata_calls_poll_for_their_reply(fx):
    """A thread waiting for a metadata reply polls the socket for $AQ_POLL_US before it
    sleeps (rpc.c, rpc_wait): stats then cost the process no voluntary context switch,
    where with polling off each of the path's lookups sleeps once."""
    def switches_per_stat(poll_us):
        env = dict(os.environ, AQ_POLL_US=str(poll_us), PYTHONPATH=os.path.join(ROOT, "python"))
        p = subprocess.run([sys.executable, "-c", POLL_PROBE], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return float(p.stdout)
    assert switches_per_stat(0) >= 1.5
    assert switches_per_stat(5000) < 0.5


def test_read_many(fx):
    c = fx.c
    names = sorted(fx.expected)
    got = c.read_many(f"/ds/{n}" for n in names)
    assert [bytes(g) for g in got] == [fx.expected[n] for n in names]
    got = c.read_many([f"/ds/{n}" for n in names], depth=7)  # fewer in flight than reads
    assert [bytes(g) for g in got] == [fx.expected[n] for n in names]
    big = big_content()
    cs = 4 * 1024 * 1024
    items = [("/big", cs - 100, 200), ("/ds/f0100", 3, 20), "/ds/f0000", ("/big", BIG - 5, 100),
             ("/big", BIG + 10, 10), ("/big", 0, None), ("/big", 2 * cs - 1, cs + 2), "/ds/f0100"]
    got = c.read_many(items)
    assert bytes(got[0]) == big[cs - 100:cs + 100]
    assert bytes(got[1]) == fx.expected["f0100"][3:23]
    assert got[2] == b"" and bytes(got[3]) == big[-5:] and got[4] == b""
    assert bytes(got[5]) == big and bytes(got[6]) == big[2 * cs - 1:3 * cs + 1]
    assert bytes(got[7]) == fx.expected["f0100"] and isinstance(got[7], bytearray)
    assert c.read_many([]) == []


def test_changes(fx):
    c = fx.c
    os.mkdir(fx.cluster.path("inbox"))
    assert c.changes("/inbox") == ([], c.changes("/inbox")[1])
    for i in range(30):
        with c.open(f"/inbox/m{i:02d}", "wb") as f:
            f.write(b"%d" % i)
    rows, nxt = c.changes("/inbox")
    assert [r[2] for r in rows] == [f"m{i:02d}" for i in range(30)] and nxt == rows[-1][0]
    assert all(a[0] < b[0] for a, b in zip(rows, rows[1:]))
    assert rows[3][1] == c.stat("/inbox/m03").st_ino
    page, cur = c.changes("/inbox", cursor=0, limit=10)
    assert page == rows[:10] and cur == rows[9][0]
    page, cur = c.changes("/inbox", cursor=cur, limit=100)
    assert page == rows[10:]
    assert c.changes("/inbox", cursor=nxt) == ([], nxt)


def expect(exc, err, fn, *args):
    try:
        fn(*args)
    except exc as e:
        assert e.errno == err, f"{fn}: errno {e.errno} ({e}), wanted {err}"
        return e
    raise AssertionError(f"{fn}{args}: no {exc.__name__}")


def test_errors(fx):
    c = fx.c
    e = expect(FileNotFoundError, errno.ENOENT, c.stat, "/nope")
    assert e.filename == "/nope" and "no such file" in e.strerror
    expect(FileNotFoundError, errno.ENOENT, c.open, "/ds/nope")
    expect(FileNotFoundError, errno.ENOENT, c.read_many, ["/ds/f0001", ("/ds/nope", 0, 10)])
    expect(FileNotFoundError, errno.ENOENT, lambda: list(c.listdir("/nope")))
    expect(FileNotFoundError, errno.ENOENT, c.changes, "/nope")
    expect(NotADirectoryError, errno.ENOTDIR, lambda: list(c.listdir("/big")))
    expect(IsADirectoryError, errno.EISDIR, c.read_many, ["/ds"])
    expect(IsADirectoryError, errno.EISDIR, c.open, "/ds", "wb")
    expect(FileExistsError, errno.EEXIST, c.open, "/big", "xb")
    expect(FileNotFoundError, errno.ENOENT, aquifer.connect, "/no/such/cluster.conf")
    expect(FileNotFoundError, errno.ENOENT, AquiferDataset, "/nope")
    # Aquifer's own codes become the errno aq_errno_posix gives, with aq_strerror's text
    corrupt = error(-1004, "/x")
    assert type(corrupt) is OSError and corrupt.errno == errno.EIO and "checksum" in corrupt.strerror
    auth = error(-1001)
    assert isinstance(auth, PermissionError) and "authentication" in auth.strerror and auth.aq_code == -1001


def test_permission_errors_as_nobody(fx):
    """A process running as nobody gets PermissionError (EACCES) from open, read_many and
    the dataset for a root-only file, and reads a public one."""
    priv = fx.cluster.path("private")
    os.mkdir(priv)
    with open(os.path.join(priv, "secret"), "wb") as f:
        f.write(b"secret")
    with open(os.path.join(priv, "public"), "wb") as f:
        f.write(b"public")
    os.chmod(os.path.join(priv, "secret"), 0o600)
    code = f"import sys\nsys.path.insert(0, {os.path.join(ROOT, 'python')!r})\n" + """
import errno, aquifer
from aquifer.torch import AquiferDataset
c = aquifer.connect()
def eacces(fn, *a):
    try:
        fn(*a)
    except PermissionError as e:
        assert e.errno == errno.EACCES, e
        return
    raise AssertionError(f"{fn} {a}: no PermissionError")
eacces(c.open, "/private/secret")
eacces(c.read_many, ["/private/public", "/private/secret"])
eacces(c.open, "/private/new", "wb")
ds = AquiferDataset("/private")
assert ds.names == ["public", "secret"], ds.names
assert ds[0] == b"public"
eacces(ds.__getitem__, 1)
assert c.read_many(["/private/public"]) == [b"public"]
with c.open("/private/public") as f:
    assert f.read() == b"public"
print("nobody ok")
"""

    p = run_as(code, cluster=fx.cluster)
    assert p.returncode == 0 and "nobody ok" in p.stdout, p.stdout + p.stderr


def test_client_after_fork(fx):
    """A Client used in a forked child connects again there; the parent's keeps working."""
    c = fx.c
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        ok = 0
        try:
            ok = int(c.stat("/ds/f0003").st_size == len(fx.expected["f0003"]) and
                     bytes(c.read_many(["/ds/f0003"])[0]) == fx.expected["f0003"])
        finally:
            os.write(w, b"%d" % ok)
            os._exit(0)
    os.close(w)
    assert os.read(r, 8) == b"1", "the child could not use the client"
    os.close(r)
    os.waitpid(pid, 0)
    assert c.stat("/ds/f0003").st_size == len(fx.expected["f0003"])


def test_dataloader_map_style(fx):
    ds = AquiferDataset("/ds")
    assert len(ds) == N_FILES and ds[5] == fx.expected["f0005"] and ds[-1] == fx.expected["f0299"]
    for epoch in range(2):
        loader = DataLoader(ds, batch_size=16, shuffle=True, num_workers=3)
        got = [x for batch in loader for x in batch]
        assert collections.Counter(got) == collections.Counter(fx.expected.values()), f"epoch {epoch}"
    # a list of paths, a transform that gets the bytearray libaq filled
    paths = [f"/ds/f{i:04d}" for i in range(0, N_FILES, 7)]
    ds = AquiferDataset(paths, transform=lambda b: b"%d:" % len(b) + b[:10])
    got = list(DataLoader(ds, batch_size=None, num_workers=3))
    assert got == [b"%d:" % len(content(i)) + content(i)[:10] for i in range(0, N_FILES, 7)]


def test_dataloader_iterable(fx):
    ds = AquiferIterableDataset("/ds", batch_size=32, seed=11)
    orders = []
    for epoch in range(2):
        loader = DataLoader(ds, batch_size=10, num_workers=3)
        got = [x for batch in loader for x in batch]
        assert collections.Counter(got) == collections.Counter(fx.expected.values()), f"epoch {epoch}"
        orders.append(got)
    assert orders[0] != orders[1], "the two epochs came in the same order"
    ds.set_epoch(0)
    again = [x for batch in DataLoader(ds, batch_size=10, num_workers=3) for x in batch]
    assert again == orders[0], "set_epoch(0) must give epoch 0's order again"
    # ranks x workers partition an epoch; ranks get equal counts (padded)
    for world, workers in ((2, 3), (3, 2)):
        shards = [ds._shard(r, world, w, workers, 5) for r in range(world) for w in range(workers)]
        flat = [i for s in shards for i in s]
        assert set(flat) == set(range(N_FILES)) and len(flat) == -(-N_FILES // world) * world
        per_rank = [sum(len(ds._shard(r, world, w, workers, 5)) for w in range(workers)) for r in range(world)]
        assert len(set(per_rank)) == 1, per_rank


if __name__ == "__main__":
    aqtest.main(globals(), setup=Fixture)

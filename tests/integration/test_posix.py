"""POSIX behaviour through a real FUSE mount of a real aqd: what cp, tar, ls and python's
open rely on, and the errors ext4 gives."""
import ctypes
import errno
import hashlib
import os
import random
import re
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

from aqtest import (AQ, NOBODY, Cluster, ends_while_stopped, expect_errno, main, mount_pid, name_unnamed, proc_io,
                    proc_status_kib, run, run_as, runs_while_stopped, unmount)


def test_write_read_small(c):
    p = c.path("small.bin")
    data = os.urandom(110_000)
    with open(p, "wb") as f:
        f.write(data)
    assert os.path.getsize(p) == len(data)
    with open(p, "rb") as f:
        assert f.read() == data


def test_write_read_multi_chunk(c):
    p = c.path("big.bin")
    data = os.urandom(13 * 1024 * 1024 + 12345)  # spans 4 chunks of 4 MiB
    with open(p, "wb") as f:
        for i in range(0, len(data), 100_000):
            f.write(data[i:i + 100_000])
    with open(p, "rb") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    with open(p, "rb") as f:  # random reads across chunk boundaries
        rnd = random.Random(7)
        for _ in range(50):
            off = rnd.randrange(len(data))
            n = rnd.randrange(1, 3 * 1024 * 1024)
            f.seek(off)
            assert f.read(n) == data[off:off + n]


def test_sparse_holes_read_zeros(c):
    p = c.path("sparse.bin")
    with open(p, "wb") as f:
        f.seek(10 * 1024 * 1024)
        f.write(b"end")
    with open(p, "rb") as f:
        d = f.read()
    assert len(d) == 10 * 1024 * 1024 + 3
    assert d[:-3] == bytes(len(d) - 3) and d[-3:] == b"end"


def test_file_larger_than_4gib(c):
    p = c.path("huge.bin")
    off = 5 * 1024 ** 3 + 17
    with open(p, "wb") as f:
        f.write(b"head")
        f.seek(off)
        f.write(b"tail-beyond-4GiB")
    assert os.path.getsize(p) == off + 16
    with open(p, "rb") as f:
        f.seek(off - 4)
        assert f.read() == bytes(4) + b"tail-beyond-4GiB"
        f.seek(0)
        assert f.read(4) == b"head"
    os.truncate(p, 4)
    assert os.path.getsize(p) == 4


def test_append(c):
    p = c.path("append.log")
    for i in range(20):
        with open(p, "a") as f:
            f.write(f"line {i}\n")
    with open(p) as f:
        assert f.read() == "".join(f"line {i}\n" for i in range(20))
    fd = os.open(p, os.O_WRONLY | os.O_APPEND)
    os.write(fd, b"x")
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, b"y")  # O_APPEND ignores the seek
    os.close(fd)
    with open(p, "rb") as f:
        assert f.read().endswith(b"xy")


def test_trunc_and_excl(c):
    p = c.path("trunc.txt")
    with open(p, "w") as f:
        f.write("hello world")
    fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
    os.close(fd)
    assert os.path.getsize(p) == 0
    expect_errno(errno.EEXIST, os.open, p, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    fd = os.open(c.path("excl-new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.close(fd)
    assert stat.S_IMODE(os.stat(c.path("excl-new")).st_mode) == 0o640


def test_overwrite_middle(c):
    p = c.path("over.bin")
    data = bytearray(os.urandom(5 * 1024 * 1024))
    with open(p, "wb") as f:
        f.write(data)
    with open(p, "r+b") as f:
        f.seek(4 * 1024 * 1024 - 10)
        f.write(b"Z" * 20)
    data[4 * 1024 * 1024 - 10:4 * 1024 * 1024 + 10] = b"Z" * 20
    with open(p, "rb") as f:
        assert f.read() == bytes(data)


def test_truncate_shrink_then_extend_reads_zeros(c):
    p = c.path("shrink.bin")
    with open(p, "wb") as f:
        f.write(b"A" * 100_000)
    os.truncate(p, 1000)
    os.truncate(p, 50_000)
    with open(p, "rb") as f:
        d = f.read()
    assert d == b"A" * 1000 + bytes(49_000)


def test_ftruncate_of_unflushed_writes(c):
    """Regression: a truncate of data still buffered in the client looked like growth to
    the server (it had not seen the size yet), so the cut bytes came back."""
    p = c.path("ftrunc")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 100_000)
    os.ftruncate(fd, 10)
    assert os.fstat(fd).st_size == 10
    os.write(fd, b"y")  # at the file offset, 100000: a hole from 10 on
    assert os.pread(fd, 20, 0) == b"x" * 10 + bytes(10)
    os.close(fd)
    with open(p, "rb") as f:
        assert f.read() == b"x" * 10 + bytes(99_990) + b"y"


def test_directories(c):
    d = c.path("d1")
    os.mkdir(d)
    expect_errno(errno.EEXIST, os.mkdir, d)
    os.makedirs(c.path("d1", "a", "b", "c"))
    open(c.path("d1", "f"), "w").close()
    assert sorted(os.listdir(d)) == ["a", "f"]
    expect_errno(errno.ENOTEMPTY, os.rmdir, d)
    expect_errno(errno.ENOTDIR, os.rmdir, c.path("d1", "f"))
    expect_errno(errno.ENOTDIR, os.listdir, c.path("d1", "f"))
    expect_errno(errno.EISDIR, open, d, "w")
    expect_errno(errno.ENOENT, os.stat, c.path("d1", "missing"))
    expect_errno(errno.ENOENT, os.rmdir, c.path("nope"))
    assert os.stat(d).st_nlink == 3  # ".", entry in parent, "a/.."
    os.rmdir(c.path("d1", "a", "b", "c"))
    os.rmdir(c.path("d1", "a", "b"))


def test_unlink_dir_is_eisdir(c):
    os.mkdir(c.path("ud"))
    try:
        os.unlink(c.path("ud"))
        raise AssertionError("unlink of a directory succeeded")
    except OSError as e:
        assert e.errno in (errno.EISDIR, errno.EPERM), e


def test_name_too_long(c):
    expect_errno(errno.ENAMETOOLONG, open, c.path("n" * 256), "w")
    expect_errno(errno.ENAMETOOLONG, os.mkdir, c.path("m" * 256))
    p = c.path("k" * 255)
    open(p, "w").close()
    assert os.path.exists(p)
    # Regression (pjdfstest rename/01.t, link/02.t): in a directory whose every name the
    # mount knows (made through it), a lookup of a 256-byte name was answered "absent"
    # from that knowledge (ENOENT) before any length check.
    d = c.path("known")
    os.mkdir(d)
    open(os.path.join(d, "n0"), "w").close()
    long = os.path.join(d, "b" * 256)
    for _ in range(2):  # the second from whatever the kernel kept of the first
        expect_errno(errno.ENAMETOOLONG, os.stat, long)
        expect_errno(errno.ENAMETOOLONG, os.rename, long, os.path.join(d, "n1"))
        expect_errno(errno.ENAMETOOLONG, os.link, long, os.path.join(d, "n1"))
        expect_errno(errno.ENAMETOOLONG, os.unlink, long)
    expect_errno(errno.ENAMETOOLONG, os.rename, os.path.join(d, "n0"), long)
    assert os.listdir(d) == ["n0"]


def test_symlinks(c):
    os.symlink("target/of/link", c.path("ln"))
    assert os.readlink(c.path("ln")) == "target/of/link"
    assert stat.S_ISLNK(os.lstat(c.path("ln")).st_mode)
    with open(c.path("real"), "w") as f:
        f.write("real")
    os.symlink("real", c.path("ln2"))
    with open(c.path("ln2")) as f:
        assert f.read() == "real"


def test_hard_links(c):
    p = c.path("h1")
    with open(p, "w") as f:
        f.write("shared")
    os.link(p, c.path("h2"))
    assert os.stat(p).st_nlink == 2
    assert os.stat(p).st_ino == os.stat(c.path("h2")).st_ino
    os.unlink(p)
    assert os.stat(c.path("h2")).st_nlink == 1
    with open(c.path("h2")) as f:
        assert f.read() == "shared"
    os.mkdir(c.path("hd"))
    expect_errno(errno.EPERM, os.link, c.path("hd"), c.path("hd2"))


def test_rename(c):
    with open(c.path("r1"), "w") as f:
        f.write("one")
    with open(c.path("r2"), "w") as f:
        f.write("two")
    os.rename(c.path("r1"), c.path("r2"))  # over an existing target
    assert not os.path.exists(c.path("r1"))
    with open(c.path("r2")) as f:
        assert f.read() == "one"
    os.makedirs(c.path("rd", "sub"))
    expect_errno(errno.EINVAL, os.rename, c.path("rd"), c.path("rd", "sub", "inside"))
    os.mkdir(c.path("rd2"))
    os.rename(c.path("rd", "sub"), c.path("rd2", "sub"))
    assert os.path.isdir(c.path("rd2", "sub"))
    os.mkdir(c.path("empty"))
    os.rename(c.path("rd2"), c.path("empty"))  # dir over empty dir
    assert os.path.isdir(c.path("empty", "sub"))
    os.mkdir(c.path("full"))
    open(c.path("full", "x"), "w").close()
    expect_errno(errno.ENOTEMPTY, os.rename, c.path("empty"), c.path("full"))
    expect_errno(errno.ENOTDIR, os.rename, c.path("empty"), c.path("r2"))
    expect_errno(errno.EISDIR, os.rename, c.path("r2"), c.path("full"))
    # rename between directories keeps the file
    os.rename(c.path("r2"), c.path("full", "moved"))
    with open(c.path("full", "moved")) as f:
        assert f.read() == "one"


def test_renames_race_creates_and_directory_replacement(c):
    """Renames run on aqd's loop thread, beside creates and unlinks there and rmdirs on
    its workers: files moved back and forth between two directories, a directory moved
    between them, temporary files made and removed in both, and an empty directory
    renamed over another (which takes every bucket) all finish, and every file ends where
    its last rename put it."""
    a, b = c.path("ra"), c.path("rb")
    os.mkdir(a)
    os.mkdir(b)
    for k in range(20):
        open(os.path.join(a, f"f{k}"), "w").close()
    os.mkdir(os.path.join(a, "sub"))
    errors = []

    def guarded(fn):
        def run_it():
            try:
                fn()
            except Exception as e:  # reported below: a thread's failure fails the test
                errors.append(repr(e))
        return threading.Thread(target=run_it)

    def mover():  # 29 rounds of 20: everything ends in b
        for i in range(580):
            k = i % 20
            src, dst = (a, b) if (i // 20) % 2 == 0 else (b, a)
            os.rename(os.path.join(src, f"f{k}"), os.path.join(dst, f"f{k}"))
            if k == 0:
                os.rename(os.path.join(src, "sub"), os.path.join(dst, "sub"))

    def churner():
        for i in range(600):
            for d in (a, b):
                p = os.path.join(d, f"t{i}")
                open(p, "w").close()
                os.unlink(p)

    def replacer():
        for i in range(200):
            x, y = c.path(f"rx{i}"), c.path(f"ry{i}")
            os.mkdir(x)
            os.mkdir(y)
            os.rename(x, y)  # an empty directory over an empty directory
            os.rmdir(y)

    threads = [guarded(f) for f in (mover, churner, replacer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive(), "a rename, create or rmdir hung"
    assert not errors, errors
    assert os.listdir(a) == []
    assert sorted(os.listdir(b)) == sorted([f"f{k}" for k in range(20)] + ["sub"])
    assert not [n for n in os.listdir(c.mnt) if n.startswith(("rx", "ry"))]


def test_chmod_chown_utimens_truncate(c):
    p = c.path("attrs")
    with open(p, "w") as f:
        f.write("0123456789")
    os.chmod(p, 0o600)
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    os.chown(p, 1234, 5678)
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    os.utime(p, ns=(1_000_000_000_123, 2_000_000_000_456))
    st = os.stat(p)
    assert st.st_atime_ns == 1_000_000_000_123 and st.st_mtime_ns == 2_000_000_000_456
    os.truncate(p, 4)
    with open(p) as f:
        assert f.read() == "0123"


def test_chown_minus_one_touches_ctime(c):
    """chown(f, -1, -1) changes nothing but ctime, as on ext4 (pjdfstest chown/00.t marks
    the opposite as Linux's known difference from POSIX)."""
    p = c.path("ct")
    open(p, "w").close()
    before = os.stat(p).st_ctime_ns
    time.sleep(0.01)
    os.chown(p, -1, -1)
    assert os.stat(p).st_ctime_ns > before


def test_mtime_changes_on_write(c):
    p = c.path("mt")
    open(p, "w").close()
    os.utime(p, ns=(0, 0))
    with open(p, "w") as f:
        f.write("x")
    assert os.stat(p).st_mtime_ns > 0


def test_xattrs(c):
    p = c.path("xa")
    open(p, "w").close()
    os.setxattr(p, "user.color", b"blue")
    assert os.getxattr(p, "user.color") == b"blue"
    assert "user.color" in os.listxattr(p)
    expect_errno(errno.EEXIST, os.setxattr, p, "user.color", b"red", os.XATTR_CREATE)
    expect_errno(errno.ENODATA, os.setxattr, p, "user.size", b"1", os.XATTR_REPLACE)
    os.setxattr(p, "user.color", b"red", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.color") == b"red"
    os.removexattr(p, "user.color")
    expect_errno(errno.ENODATA, os.getxattr, p, "user.color")


def test_device_files_and_setuid_programs_work_unless_refused(c):
    """As on ext4 (xfstests generic/184, 306): a device file made on a root's mount opens,
    and a setuid program runs with its owner's uid; a mount with --nodev --nosuid refuses
    both, as mount(8)'s options do. Regression: every mount had libfuse's nosuid,nodev."""
    import shutil
    import tempfile
    dev = c.path("null")
    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with open(dev, "w") as f:
        f.write("gone")
    prog = c.path("suid-id")
    shutil.copy("/usr/bin/id", prog)
    os.chmod(prog, 0o4755)
    r = run_as(f"import subprocess; print(subprocess.run([{prog!r}, '-u'], capture_output=True, text=True).stdout)")
    assert r.stdout.strip() == "0", (r.stdout, r.stderr)
    other = tempfile.mkdtemp(dir=c.base)
    run(AQ, "mount", other, "--cluster", c.conf, "--allow-other", "--nosuid", "--nodev")
    try:
        expect_errno(errno.EACCES, open, os.path.join(other, "null"), "w")
        p2 = os.path.join(other, "suid-id")
        r = run_as(f"import subprocess; print(subprocess.run([{p2!r}, '-u'], capture_output=True, text=True).stdout)")
        assert r.stdout.strip() == str(NOBODY), (r.stdout, r.stderr)
    finally:
        unmount(other)
        os.rmdir(other)


def test_fallocate_past_the_free_space_is_enospc(c):
    """xfstests generic/213: asking fallocate for more than the file system has free is
    ENOSPC and leaves the file as it was, as on ext4. Regression: space is not reserved,
    and a fallocate of twice the free space succeeded."""
    p = c.path("toobig")
    free = os.statvfs(c.mnt).f_bavail * os.statvfs(c.mnt).f_frsize
    fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        expect_errno(errno.ENOSPC, os.posix_fallocate, fd, 0, 2 * free)
        assert os.fstat(fd).st_size == 0
        os.posix_fallocate(fd, 0, 1 << 20)  # what fits still works
        assert os.fstat(fd).st_size == 1 << 20
    finally:
        os.close(fd)
        os.unlink(p)


def test_sizes_past_the_largest_file_are_efbig(c):
    """A truncate past the largest size a file may have (1 PiB) is EFBIG, as writes there
    are, and as ext4 answers past its own limit. Regression (xfstests generic/525): a
    truncate to 2^63 - 1 succeeded and the file then refused every write near its end."""
    p = c.path("huge")
    open(p, "w").close()
    expect_errno(errno.EFBIG, os.truncate, p, (1 << 63) - 1)
    expect_errno(errno.EFBIG, os.truncate, p, (1 << 50) + 1)
    os.truncate(p, 1 << 50)  # the largest is fine, and sparse
    assert os.stat(p).st_size == 1 << 50
    fd = os.open(p, os.O_WRONLY)
    try:
        expect_errno(errno.EFBIG, os.pwrite, fd, b"x", 1 << 50)
        assert os.pwrite(fd, b"x", (1 << 50) - 1) == 1
    finally:
        os.close(fd)
    os.truncate(p, 0)


def test_an_o_direct_append_shows_whole_or_not_at_all(c):
    """xfstests generic/465: a reader of an O_DIRECT appender reads 'a's or nothing, never
    zeros. Regression: the kernel cuts a 1 MiB write from a buffer that is not
    page-aligned into two requests sent at once; the mount's threads landed the second
    first, the size then covered the first's bytes before they were there, and the
    reader read zeros (3 runs of 3 failed). tests/integration/c/dio_append_race.c."""
    prog = os.path.join(c.base, "dio_append_race")
    run("cc", "-O2", "-pthread", "-o", prog, os.path.join(os.path.dirname(__file__), "c", "dio_append_race.c"))
    for i in range(3):
        r = run(prog, c.path("dio-append"), check=False)
        assert r.returncode == 0, (i, r.returncode, r.stdout, r.stderr)
    os.unlink(c.path("dio-append"))
    # a write that leaves a hole waits for no piece for long, and lands
    import mmap
    buf = mmap.mmap(-1, 4096)
    buf[:] = b"h" * 4096
    fd = os.open(c.path("dio-hole"), os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o644)
    try:
        assert os.pwrite(fd, buf, 8192) == 4096
        assert os.fstat(fd).st_size == 12288
    finally:
        os.close(fd)
    with open(c.path("dio-hole"), "rb") as f:
        assert f.read() == bytes(8192) + b"h" * 4096


def test_a_read_after_an_aio_o_direct_write_sees_it(c):
    """xfstests generic/451: an O_DIRECT write through Linux AIO, while other threads read
    the file through the page cache, then a buffered read: it shows the new bytes.
    Regression: the kernel drops cached pages after a synchronous O_DIRECT write but not
    after an asynchronous one, so a read that ran meanwhile left the old bytes cached for
    every later read (3 runs of 3 failed at the first write).
    tests/integration/c/dio_aio_stale.c."""
    prog = os.path.join(c.base, "dio_aio_stale")
    run("cc", "-O2", "-pthread", "-o", prog, os.path.join(os.path.dirname(__file__), "c", "dio_aio_stale.c"))
    r = run(prog, c.path("dio-aio"), check=False)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    os.unlink(c.path("dio-aio"))


def test_writes_while_o_direct_is_toggled_finish(c):
    """xfstests generic/036: writes through a descriptor whose O_DIRECT another thread turns
    on and off with fcntl all finish. Regression: a buffered write whose request went out
    after O_DIRECT came on made the mount wait for that write's own locked page (to drop
    it, as after an O_DIRECT write), and the writer waited for the mount: a hang."""
    p = c.path("toggle")
    code = ("import fcntl, mmap, os, threading, time\n"
            f"fd = os.open({p!r}, os.O_CREAT | os.O_TRUNC | os.O_RDWR, 0o600)\n"
            "buf = mmap.mmap(-1, 4096)\n"
            "end = time.time() + 4\n"
            "def toggle():\n"
            "    fl = fcntl.fcntl(fd, fcntl.F_GETFL)\n"
            "    while time.time() < end:\n"
            "        fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_DIRECT)\n"
            "        fcntl.fcntl(fd, fcntl.F_SETFL, fl)\n"
            "t = threading.Thread(target=toggle)\n"
            "t.start()\n"
            "n = 0\n"
            "while time.time() < end:\n"
            "    os.pwrite(fd, memoryview(buf)[:512], 512)\n"
            "    n += 1\n"
            "t.join()\n"
            "print(n)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and int(r.stdout) > 0, (r.returncode, r.stdout, r.stderr)
    os.unlink(p)


def removed_while_open(d):
    """What fstat and a listing of a directory's descriptor say after it was removed
    (rmdir) or replaced (a rename over it) while open."""
    out = []
    os.mkdir(f"{d}/r1", 0o751)
    fd = os.open(f"{d}/r1", os.O_RDONLY)
    os.rmdir(f"{d}/r1")
    st = os.fstat(fd)
    out.append((oct(st.st_mode), st.st_nlink, st.st_uid, os.listdir(fd)))
    os.close(fd)
    os.mkdir(f"{d}/a1")
    os.mkdir(f"{d}/b1", 0o700)
    fd = os.open(f"{d}/b1", os.O_RDONLY)
    os.rename(f"{d}/a1", f"{d}/b1")
    st = os.fstat(fd)
    out.append((oct(st.st_mode), st.st_nlink))
    os.close(fd)
    os.rmdir(f"{d}/b1")
    return out


def test_a_removed_directory_still_open_answers_fstat(c):
    """xfstests generic/035: fstat of a directory's descriptor after an rmdir or a rename
    over it answers, with nlink 0, as on ext4. Regression: the kernel asks the mount for
    the attributes without the handle, aqd no longer has the inode, and fstat said
    ENOENT."""
    import tempfile
    local = tempfile.mkdtemp(dir=c.base)
    mine = c.path("rmopen")
    os.mkdir(mine)
    want, got = removed_while_open(local), removed_while_open(mine)
    assert got == want and want[0][1] == 0, (got, want)


def test_xattrs_stop_where_they_could_no_longer_be_listed(c):
    """Regression (stress-ng --xattr): names were accepted without bound, and once they
    passed listxattr's 64 KiB the file's names could not be listed at all (E2BIG). Now a
    name that would not fit is refused with ENOSPC, as ext4 refuses one it has no room
    for, and every name accepted lists. A getxattr that asks how big a value is (ERANGE,
    as os.getxattr does for values over 128 bytes) is an answer, not a warning in aqd's
    log: stress-ng's run wrote 8,194 of them in 10 s."""
    p = c.path("many-xattrs")
    open(p, "w").close()
    accepted = []
    for i in range(20000):
        name = f"user.{i:0200d}"  # 206 bytes: about 317 fit
        try:
            os.setxattr(p, name, b"v", os.XATTR_CREATE)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
            break
        accepted.append(name)
    else:
        raise AssertionError("20,000 names of 206 bytes accepted")
    listed = os.listxattr(p)
    assert sorted(listed) == sorted(accepted)
    assert sum(len(n) + 1 for n in listed) <= 65536
    os.setxattr(p, accepted[0], b"replaced")  # an existing name may still change
    os.removexattr(p, accepted[1])
    os.setxattr(p, "user.short", b"fits again")
    log = os.path.join(c.data, "aqd.log")
    before = os.path.getsize(log)
    os.setxattr(p, "user.big", b"x" * 1000)
    for _ in range(20):
        assert os.getxattr(p, "user.big") == b"x" * 1000
    with open(log) as f:
        f.seek(before)
        assert "too large" not in f.read()


def test_xattrs_as_ls_asks(c):
    """The mount answers "no such attribute" itself for files that have none (ls -l asks
    two per file); it must never say so for a file that has some, after any sequence of
    sets and removes, and anyone may read security.* and system.* as on ext4."""
    p = c.path("xa2")
    open(p, "w").close()
    expect_errno(errno.ENODATA, os.getxattr, p, "security.selinux", follow_symlinks=False)
    expect_errno(errno.ENODATA, os.getxattr, p, "system.posix_acl_access")
    assert os.listxattr(p) == []
    os.setxattr(p, "user.a", b"1")
    os.setxattr(p, "user.b", b"2")
    os.removexattr(p, "user.a")
    os.stat(p)  # attributes again from the server: the file still has one
    assert os.getxattr(p, "user.b") == b"2" and os.listxattr(p) == ["user.b"]
    os.removexattr(p, "user.b")
    os.stat(p)
    expect_errno(errno.ENODATA, os.getxattr, p, "user.b")
    assert os.listxattr(p) == []
    os.setxattr(p, "user.c", b"3")
    assert os.getxattr(p, "user.c") == b"3"
    os.chmod(p, 0o644)
    os.chmod(c.base, 0o755)
    r = run_as(f"import os; print(os.listxattr({p!r})); "
               f"print(os.getxattr({p!r}, 'user.c'));\n"
               f"try: os.getxattr({p!r}, 'security.selinux')\nexcept OSError as e: print(e.errno)")
    assert r.returncode == 0 and r.stdout.split() == ["['user.c']", "b'3'", str(errno.ENODATA)], r
    subprocess.run(["ls", "-l", c.mnt], check=True, capture_output=True)


def test_statfs(c):
    s = os.statvfs(c.mnt)
    assert s.f_blocks > 0 and s.f_bfree > 0 and s.f_namemax == 255
    # df's "used" is what Aquifer holds (a few small test files here), not the rest of
    # the disk its targets share (it showed 174G on an empty mount), and free space is
    # never less than what is available
    used = (s.f_blocks - s.f_bfree) * s.f_frsize
    assert s.f_bfree >= s.f_bavail and used < 1 << 30, f"df would show {used} bytes used"


def test_statfs_is_kept_a_moment_and_dropped_by_changes(c):
    """The mount answers statfs from its last answer for up to 1 s, as Lustre's clients
    keep theirs, unless it changed something since: stress-ng's link stressor asks before
    every link it makes, and each was a trip to aqd (100 us, against ext4's 3). Files made
    through the mount count at once; another client's within the second."""
    import aquifer
    os.statvfs(c.mnt)
    before = proc_io(c.pid(), "wchar")
    for _ in range(300):
        os.statvfs(c.mnt)
    sent = proc_io(c.pid(), "wchar") - before
    assert sent < 2000, f"aqd sent {sent} bytes for 300 statfs in a row"
    files = os.statvfs(c.mnt).f_files
    d = c.path("statfs-count")
    os.mkdir(d)
    for i in range(5):
        open(os.path.join(d, f"f{i}"), "w").close()
    assert os.statvfs(c.mnt).f_files == files + 6, "files made through the mount did not count at once"
    cl = aquifer.connect(c.conf)
    try:
        for i in range(3):
            with cl.open(f"/statfs-count/g{i}", "wb") as f:
                f.write(b"x")
    finally:
        cl.close()
    time.sleep(1.1)
    assert os.statvfs(c.mnt).f_files == files + 9, "another client's files did not count within 1 s"


def test_readdir_many(c):
    d = c.path("many")
    os.mkdir(d)
    names = {f"f{i:05d}" for i in range(3000)}
    for n in names:
        open(os.path.join(d, n), "w").close()
    got = os.listdir(d)
    assert len(got) == len(names) and set(got) == names
    with os.scandir(d) as it:
        assert sum(1 for e in it if e.is_file()) == 3000


def test_a_listing_gets_attributes_for_its_first_page_only(c):
    """Since Linux 6.14 the kernel asks for as much of a listing as the reader's buffer
    holds in one READDIRPLUS (its READDIRPLUS_AUTO asks with attributes at a listing's
    start), and the mount answered every entry with its attributes: an inode read in aqd
    and a kernel inode per name. os.listdir of 2,000 names took 8-11 ms against 3 ms
    names only, and rmdir in a directory another thread kept listing ran at 50-76/s (an
    outside judge's stress-ng --dir run). Now the start gets one page with attributes,
    and the kernel asks for the rest with them only once lookups show they pay. The
    mount also asked aqd for 512 entries with attributes to fill that page, of which 25
    fit: now it asks for what fits, and aqd sends about 30 bytes per name (50 before,
    115 with attributes for all)."""
    d = c.path("plain-listing")
    os.mkdir(d)
    names = {f"f{i:05d}" for i in range(2000)}
    for n in names:
        open(os.path.join(d, n), "w").close()
    sent = proc_io(c.pid(), "wchar")
    assert set(os.listdir(d)) == names
    sent = proc_io(c.pid(), "wchar") - sent
    assert sent < 2000 * 40, f"aqd sent {sent} bytes for a listing of 2,000 names"
    with os.scandir(d) as it:  # and with attributes where asked
        assert all(e.stat().st_size == 0 for e in it)


class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64), ("d_reclen", ctypes.c_ushort),
                ("d_type", ctypes.c_ubyte), ("d_name", ctypes.c_char * 256)]


def test_readdir_seek(c):
    """telldir/seekdir/rewinddir through the mount, over a directory of several of the
    mount's server pages: a position taken with telldir gives the same entries again, and
    a rewound listing gives every entry once."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.opendir.argtypes = [ctypes.c_char_p]
    libc.readdir.restype = ctypes.POINTER(Dirent)
    libc.readdir.argtypes = [ctypes.c_void_p]
    libc.telldir.restype = ctypes.c_long
    libc.telldir.argtypes = [ctypes.c_void_p]
    libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
    libc.rewinddir.argtypes = [ctypes.c_void_p]
    libc.closedir.argtypes = [ctypes.c_void_p]
    d = c.path("seek")
    os.mkdir(d)
    names = {f"entry-with-a-longish-name-{i:05d}" for i in range(1500)}
    for n in names:
        open(os.path.join(d, n), "w").close()

    def take(h, n):
        out = []
        for _ in range(n):
            e = libc.readdir(h)
            if not e:
                break
            out.append(e.contents.d_name.decode())
        return out

    h = libc.opendir(d.encode())
    assert h
    try:
        first = take(h, 700)
        pos = libc.telldir(h)
        after = take(h, 300)
        assert len(after) == 300
        libc.seekdir(h, pos)
        assert take(h, 300) == after
        rest = take(h, 10**6)
        seen = first + after + rest
        assert len(seen) == len(set(seen)) and set(seen) == names | {".", ".."}
        libc.rewinddir(h)
        again = take(h, 10**6)
        assert sorted(again) == sorted(seen)
    finally:
        libc.closedir(h)


def test_cp_and_tar(c):
    src = "/tmp/aqtest-tree"
    subprocess.run(["rm", "-rf", src])
    os.makedirs(os.path.join(src, "a", "b"))
    for i in range(30):
        with open(os.path.join(src, "a", f"f{i}"), "wb") as f:
            f.write(os.urandom(random.randrange(1, 300_000)))
    os.symlink("f1", os.path.join(src, "a", "link"))
    run("cp", "-a", src, c.path("copied"))
    run("diff", "-r", src, c.path("copied"))
    run("tar", "-C", c.path("copied"), "-cf", c.path("t.tar"), ".")
    os.mkdir(c.path("untar"))
    run("tar", "-C", c.path("untar"), "-xf", c.path("t.tar"))
    run("diff", "-r", src, c.path("untar"))
    subprocess.run(["rm", "-rf", src])


def test_unlink_while_open(c):
    p = c.path("open-unlinked")
    with open(p, "wb") as f:
        f.write(b"still here")
    f = open(p, "rb")
    os.unlink(p)
    time.sleep(1.5)  # past one pass of the orphan collector
    assert f.read() == b"still here"
    f.close()
    assert not os.path.exists(p)


# What each side runs in an empty directory of its own: O_TMPFILE as programs use it
# (write an unnamed file, then name it with linkat), and what must fail.
TMPFILE_STEPS = r"""
import ctypes, os, subprocess
libc = ctypes.CDLL(None, use_errno=True)
def name(fd, new):  # linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, new, AT_SYMLINK_FOLLOW)
    if libc.linkat(-100, f"/proc/self/fd/{fd}".encode(), -100, new.encode(), 0x400):
        return os.strerror(ctypes.get_errno())
    return "ok"
def err(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return os.strerror(e.errno)
os.umask(0o027)
fd = os.open(".", os.O_TMPFILE | os.O_RDWR, 0o666)
os.write(fd, b"x" * 100000)
st = os.fstat(fd)
print("unnamed", oct(st.st_mode), st.st_nlink, st.st_size, os.listdir("."))
print("named", name(fd, "named"), os.fstat(fd).st_nlink, sorted(os.listdir(".")))
print("again", name(fd, "second"), os.fstat(fd).st_nlink, os.stat("second").st_ino == os.fstat(fd).st_ino)
os.close(fd)
print("content", open("named", "rb").read() == b"x" * 100000)
fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
print("excl", name(fd, "excl"), sorted(os.listdir(".")))
os.close(fd)
print("rdonly", err(lambda: os.open(".", os.O_TMPFILE | os.O_RDONLY, 0o600)))
os.mkdir("acl")
subprocess.run(["setfacl", "-d", "-m", "u:nobody:rwx", "acl"], check=True)
fd = os.open("acl", os.O_TMPFILE | os.O_RDWR, 0o660)
print("acl", name(fd, "acl/f"), oct(os.stat("acl/f").st_mode))
os.close(fd)
print(subprocess.run(["getfacl", "-n", "--omit-header", "acl/f"], capture_output=True, text=True).stdout)
"""


def test_o_tmpfile_as_ext4_does(c):
    """open(O_TMPFILE) was EOPNOTSUPP (the kernel's FUSE_TMPFILE reached a libfuse that
    does not know it), so programs that write a file unnamed and name it once complete
    fell back or failed, and xfstests' O_TMPFILE tests did not run. The same steps on a
    local directory and on the mount must print the same: an unnamed file with no link
    and in no listing, named by linkat once, never when made O_EXCL, the umask and a
    default ACL applied. Then on the mount: one never named is gone once closed, and a
    named one stays past the orphan collector's rounds and a restart of aqd."""
    import tempfile
    local = tempfile.mkdtemp(prefix="tmpfile.", dir=c.base)
    mine = c.path("tmpfile-steps")
    os.mkdir(mine)
    want, got = (run(sys.executable, "-c", TMPFILE_STEPS, cwd=d).stdout for d in (local, mine))
    assert got == want, f"local:\n{want}\nmount:\n{got}"
    assert "unnamed 0o100640 0 100000 []" in got and "named ok 1 ['named']" in got, got
    assert "excl No such file or directory" in got and "user:65534:rwx" in got, got
    run("rm", "-rf", local)

    def files():
        return int(re.search(r"^files\s+(\d+)", c.aq("status").stdout, re.M).group(1))
    time.sleep(1.5)  # the steps' O_EXCL file, closed, is collected
    before = files()
    fd = os.open(mine, os.O_TMPFILE | os.O_RDWR, 0o600)
    os.write(fd, b"y" * 10000)
    os.fsync(fd)
    assert files() == before + 1
    time.sleep(1.5)  # a round of the orphan collector, which must see it held open
    drop_page_cache()
    assert os.pread(fd, 10000, 0) == b"y" * 10000
    os.close(fd)
    deadline = time.time() + 10
    while files() > before and time.time() < deadline:
        time.sleep(0.2)
    assert files() == before, "an unnamed file closed is freed"
    time.sleep(1.5)  # past a round of the orphan collector
    c.kill9()
    c.restart()
    drop_page_cache(inodes=True)
    with open(os.path.join(mine, "named"), "rb") as f:
        assert f.read() == b"x" * 100000, "a named file outlives the collector and a restart"


def test_unnamed_files_made_at_once_in_one_directory(c):
    """Regression: O_TMPFILE opens do not take the directory's lock as creates do, so
    several reach aqd at once, where libaq packs requests queued on one connection into
    one BATCH frame, and aqd ran a run of creates in one directory as one write batch of
    names: an unnamed file's empty name failed it (EINVAL, 3 of 3 runs of this test), and
    a create that opens would not have been held open by its connection. Such creates
    now run one by one. 4 threads make 200 each; half are named."""
    d = c.path("tmpfile-many")
    os.mkdir(d)
    named, errors = {}, []

    def make(k):
        try:
            for i in range(200):
                fd = os.open(d, os.O_TMPFILE | os.O_RDWR, 0o644)
                data = os.urandom(1000 + i)
                os.write(fd, data)
                if i % 2 == 0:
                    p = os.path.join(d, f"t{k}.{i}")
                    name_unnamed(fd, p)
                    named[p] = data
                os.close(fd)
        except OSError as e:
            errors.append(repr(e))
    threads = [threading.Thread(target=make, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    time.sleep(1.5)  # a round of the collector, which frees the 400 never named
    drop_page_cache(inodes=True)
    assert sorted(os.listdir(d)) == sorted(os.path.basename(p) for p in named)
    for p, data in named.items():
        with open(p, "rb") as f:
            assert f.read() == data, p


def mount_line(m):
    """The /proc/mounts fields of the mount at m: source, type, options (a list)."""
    with open("/proc/mounts") as f:
        for line in f:
            src, mp, fstype, opts = line.split()[:4]
            if mp == m:
                return src, fstype, opts.split(",")
    return None


def test_mount_options_as_mount_8_gives_them(c):
    """`mount -t fuse.aquifer CLUSTER_FILE DIR -o OPTIONS` and fstab lines did not work:
    no mount helper, `aq mount` took no -o, and every mount's source was "aquifer", so
    `umount CLUSTER_FILE` and xfstests' TEST_DEV (FSTYP=fuse) could not name it. Now `aq`
    is also mount.fuse.aquifer, takes mount(8)'s options (the kernel's flags, libfuse's
    or set by a bind remount, fstab's own ignored, unknown ones refused), and a mount's
    source is its cluster file."""
    conf = os.path.realpath(c.conf)
    m1, m2 = os.path.join(c.base, "o1"), os.path.join(c.base, "o2")
    os.makedirs(m1)
    os.makedirs(m2)
    p = run(AQ, "mount", m1, "--cluster", c.conf, "-o", "nosuid,bogus", check=False)
    assert p.returncode == 2 and "unknown mount option 'bogus'" in p.stderr and mount_line(m1) is None, p.stderr
    run(AQ, "mount", m1, "--cluster", c.conf, "-o", "defaults,_netdev,noatime,nodiratime,noexec,nosuid")
    try:
        src, fstype, opts = mount_line(m1)
        assert (src, fstype) == (conf, "fuse.aquifer"), (src, fstype)
        assert {"noatime", "nodiratime", "noexec", "nosuid"} <= set(opts), opts
        script = os.path.join(m1, "run.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\necho ran\n")
        os.chmod(script, 0o755)
        expect_errno(errno.EACCES, lambda: subprocess.run([script]))
    finally:
        unmount(m1)
    helper = "/usr/sbin/mount.fuse.aquifer"
    made = not os.path.lexists(helper)
    if made:
        os.symlink(os.path.join(os.path.dirname(AQ), "aq"), helper)
    try:
        run("mount", "-t", "fuse.aquifer", c.conf, m2, "-o", "ro,strictatime")
        try:
            src, fstype, opts = mount_line(m2)
            assert src == conf and "ro" in opts and "relatime" not in opts and "noatime" not in opts, opts
            expect_errno(errno.EROFS, lambda: open(os.path.join(m2, "x"), "w"))
            assert os.path.exists(os.path.join(m2, "run.sh"))
        finally:
            unmount(m2)
    finally:
        if made:
            os.unlink(helper)


def drop_page_cache(inodes=False):
    """Drops the kernel's page cache; with inodes, its dentries and inodes too (the mount
    then gets a FORGET for each inode dropped)."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3" if inodes else "1")


def test_first_read_comes_with_the_open(c):
    """A read-only open through the mount asks the server for the file's first 256 KiB
    with the OPEN (OPEN_READ), and the first read is answered from those bytes when they
    cover it. Every size around that limit and the chunk's, whole reads and reads at an
    offset, must come back exact, with the page cache dropped so every read reaches the
    mount."""
    rng = random.Random(7)
    sizes = [0, 1, 4095, 110_000, (256 << 10) - 1, 256 << 10, (256 << 10) + 1, 3 << 20, (9 << 20) + 5]
    data = {}
    for n in sizes:
        data[n] = rng.randbytes(n)
        with open(c.path(f"pre{n}"), "wb") as f:
            f.write(data[n])
    drop_page_cache()
    for n in sizes:
        with open(c.path(f"pre{n}"), "rb") as f:
            assert f.read() == data[n], f"whole read of {n} bytes"
    drop_page_cache()
    for n in sizes:
        for off, ln in ((100_000, 50_000), (300_000, 4096), (n - 10 if n > 10 else 0, 100)):
            fd = os.open(c.path(f"pre{n}"), os.O_RDONLY)
            try:
                assert os.pread(fd, ln, off) == data[n][off:off + ln], f"{ln} bytes at {off} of {n}"
            finally:
                os.close(fd)
        drop_page_cache()


def test_first_read_needs_no_round_trip(c):
    """The bytes a read-only open brought are in the kernel's page cache when open(2)
    returns: the first read of a small file is answered there, with the mount process
    stopped (the page cache dropped before the open, so only the open can have put the
    bytes there). A read past them still reaches the mount and comes back right."""
    small, big = os.urandom(110_000), os.urandom(3 << 20)
    for name, data in (("stored", small), ("stored-big", big)):
        with open(c.path(name), "wb") as f:
            f.write(data)
    drop_page_cache()
    for name in ("stored", "stored-big"):
        os.stat(c.path(name))  # the writes left the attributes stale: a read would ask
    fds = [os.open(c.path(n), os.O_RDONLY) for n in ("stored", "stored-big")]
    try:
        def sha(b):
            return hashlib.sha256(b).hexdigest()
        code = (f"import hashlib, os\n"
                f"def sha(b): return hashlib.sha256(b).hexdigest()\n"
                f"assert sha(os.pread({fds[0]}, 200_000, 0)) == {sha(small)!r}\n"
                f"assert sha(os.pread({fds[1]}, 100_000, 50_000)) == {sha(big[50_000:150_000])!r}\n")
        runs_while_stopped(c.mount_pid(), code, "the first read waited for the stopped mount", pass_fds=fds)
        assert os.pread(fds[1], 1 << 20, 2 << 20) == big[2 << 20:]
    finally:
        for fd in fds:
            os.close(fd)


def test_a_flush_commits_the_size_with_its_last_write(c):
    """A flush sends the file's size with its last chunk write when that write's server
    holds the inode's metadata too (PROTO_CW_COMMIT): a small file written and closed
    costs a create and one write, and tar's futimens after its writes one write and the
    setattr, with no COMMIT_SIZE round trip. aqd refuses COMMIT_SIZE here, so a close or
    a futimens that still sent one fails with EIO. What they committed is what another
    client sees."""
    import aquifer
    c.restart_with(AQ_TEST_REFUSE="COMMIT_SIZE")
    try:
        small, big = os.urandom(5000), os.urandom(9 << 20)  # big: three 4 MiB chunks
        with open(c.path("cw-small"), "wb") as f:
            f.write(small)
        with open(c.path("cw-big"), "wb") as f:
            f.write(big)
        fd = os.open(c.path("cw-tarred"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, small)
        os.utime(fd, ns=(1_000_000_000_000_000_000, 1_000_000_000_123_456_789))
        os.fchmod(fd, 0o644)
        os.close(fd)
        with aquifer.Client(c.conf) as other:
            for name, data in (("cw-small", small), ("cw-big", big), ("cw-tarred", small)):
                assert other.stat("/" + name).st_size == len(data), name
                with other.open("/" + name, "rb") as f:
                    assert f.read() == data, name
            assert other.stat("/cw-tarred").st_mtime_ns == 1_000_000_000_123_456_789
    finally:
        c.kill9()
        c.restart()


def stored_file(c, name):
    """A file of 110,000 random bytes whose first bytes an open has put in the kernel's
    page cache (the page cache dropped first, so that open stored them): (path, bytes)."""
    data = os.urandom(110_000)
    p = c.path(name)
    with open(p, "wb") as f:
        f.write(data)
    drop_page_cache()
    os.stat(p)
    with open(p, "rb") as f:
        assert f.read() == data  # this open stores the bytes
    return p, data


def test_open_of_a_stored_file_waits_for_nothing(c):
    """Once an open has put a file's first bytes in the kernel's page cache and no push
    has touched the file since, the next open does not wait for the server (a warm
    epoch): with aqd stopped, open, read and close of the file still end at once."""
    p, data = stored_file(c, "warm")
    code = (f"import hashlib\n"
            f"with open({p!r}, 'rb') as f:\n"
            f"    assert hashlib.sha256(f.read()).hexdigest() == {hashlib.sha256(data).hexdigest()!r}\n")
    runs_while_stopped(c.pid(), code, "the open of a file whose bytes the kernel holds waited for aqd")


def test_first_read_after_the_kernel_forgot_needs_no_round_trip(c):
    """Regression: the mount remembered which files' first bytes it had stored in the
    kernel's page cache, and kept believing it after the kernel dropped the inode (and its
    pages) and sent FORGET: the next open stored nothing, so its first read was a READ
    round trip (every epoch of aq bench train --cold after the first). Now a forgotten
    file's open stores its bytes again: its first read is answered with the mount stopped."""
    p, data = stored_file(c, "forgotten")
    drop_page_cache(inodes=True)  # the kernel sends FORGET for this file's inode
    time.sleep(0.2)  # the mount handles FORGETs on its own threads
    os.stat(p)
    fd = os.open(p, os.O_RDONLY)
    try:
        code = (f"import hashlib, os\n"
                f"assert hashlib.sha256(os.pread({fd}, 200_000, 0)).hexdigest() == "
                f"{hashlib.sha256(data).hexdigest()!r}\n")
        runs_while_stopped(c.mount_pid(), code, "the first read after a FORGET waited for the mount", pass_fds=[fd])
    finally:
        os.close(fd)


def test_times_set_as_tar_and_rsync_set_them(c):
    """Regressions found by extracting a tar archive and checking it with rsync: (1) tar
    sets a file's mtime with futimens before close, and the close committed the time of
    the writes over it; (2) a directory's mtime set after filling it was hidden by the
    times of the entries made in it. Both come back as set, also once the kernel forgot
    them."""
    d = c.path("dated")
    os.mkdir(d)
    old = 1_667_651_086 * 10**9
    fd = os.open(os.path.join(d, "f"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 10_000)  # buffered until close
    os.utime(fd, ns=(old, old))
    os.close(fd)
    for i in range(20):
        open(os.path.join(d, f"g{i}"), "w").close()
    os.utime(d, ns=(old + 1, old + 2))
    for cached in (True, False):  # the kernel's attributes, then the server's
        if not cached:
            drop_page_cache()
        assert os.stat(os.path.join(d, "f")).st_mtime_ns == old
        st = os.stat(d)
        assert (st.st_atime_ns, st.st_mtime_ns) == (old + 1, old + 2), (st.st_atime_ns, st.st_mtime_ns)
    with open(os.path.join(d, "f"), "ab") as f:  # a later write moves the file's mtime on
        f.write(b"y")
    assert os.stat(os.path.join(d, "f")).st_mtime_ns > old
    open(os.path.join(d, "h"), "w").close()  # and a later create the directory's
    assert os.stat(d).st_mtime_ns > old + 2


SCATTER = """
import random
def scatter(size, count):
    rnd = random.Random(5)
    for i in range(count):
        off = rnd.randrange(0, size - 5000)
        yield i, off, rnd.randbytes(rnd.randrange(1, 5000))
"""


def scattered_writes_wait_for_close(c, name, size, count):
    """count small writes at random places in a file of size bytes end at once with aqd
    stopped; reading back what was written while it is buffered returns it (the buffer is
    laid over what the server holds); after close the file reads back right, also once
    the kernel forgot it."""
    p = c.path(name)
    ns = {}
    exec(SCATTER, ns)
    want = bytearray(size)
    for _, off, data in ns["scatter"](size, count):
        want[off:off + len(data)] = data
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, b"\0", size - 1)  # the size reaches aqd before it stops
        os.fsync(fd)
        code = (SCATTER + "import os\n"
                f"for i, off, data in scatter({size}, {count}):\n"
                f"    assert os.pwrite({fd}, data, off) == len(data)\n")
        ends_while_stopped(c.pid(), code, "scattered writes waited for aqd", (fd,))
        assert os.pread(fd, size, 0) == bytes(want)  # the buffer over what the server holds
        for i, off, data in ns["scatter"](size, min(count, 300)):  # again, each read back at once
            data = data[::-1]
            os.pwrite(fd, data, off)
            want[off:off + len(data)] = data
            assert os.pread(fd, len(data), off) == data, i
    finally:
        os.close(fd)
    with open(p, "rb") as f:
        assert f.read() == bytes(want)
    drop_page_cache()
    with open(p, "rb") as f:
        assert f.read() == bytes(want)


def test_scattered_writes_wait_for_close(c):
    """A writer that scatters small writes over a chunk (a linker writing its output
    section by section) is buffered per chunk, several ranges each: with aqd stopped, 300
    such writes still end at once (before, every write that did not continue the last one
    sent the buffer, a chunk rewrite per write; linking bin/aqd on the mount took 35 s)."""
    scattered_writes_wait_for_close(c, "scattered", 3 << 20, 300)


def test_random_writes_over_many_chunks_wait_for_close(c):
    """Random small writes over 40 chunks (fio's randwrite over 160 MiB) are buffered
    too: with aqd stopped, 1,500 of them end at once. Before, a file buffered 8 chunks, and
    each write to a ninth sent one of them, a whole-chunk rewrite in aqd per write
    (fio --rw=randwrite --bs=4k over 256 MiB ran at 1 MB/s)."""
    scattered_writes_wait_for_close(c, "randwrites", 40 * (4 << 20), 1500)


def default_write_budget():
    """The bytes a mount buffers for writes by default: a sixteenth of the machine's
    memory, between 64 MiB and 1 GiB (client_internal.h, struct wchunk)."""
    mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(max(mem // 16, 64 << 20), 1 << 30)


def budget_mount(c, name, mib):
    """One more mount of c's cluster, at c.base/name, that buffers at most mib MiB of
    writes ($AQ_WRITE_BUFFER_MB). The caller unmounts it."""
    m = os.path.join(c.base, name)
    os.makedirs(m, exist_ok=True)
    run(AQ, "mount", m, "--cluster", c.conf, env=dict(os.environ, AQ_WRITE_BUFFER_MB=str(mib)))
    return m


def test_random_writes_over_a_whole_file_wait_for_close(c):
    """fio's randwrite: 4 KiB writes in random order over a file of up to 256 MiB (half the
    default budget at most) end at once with aqd stopped, as they would in ext4's page
    cache, and the file reads back right after close. Each chunk's last block is left out
    while aqd is stopped (a chunk written whole is sent at once, with nothing to read
    back) and written after. Before, a file buffered at most 32 MiB, and past that each
    write to another chunk sent one (aqd read and rewrote the chunk whole while the
    writer waited): 60 MB/s through the mount, a do-nothing FUSE layer 160 MB/s."""
    size, per_chunk = min(256 << 20, default_write_budget() // 2), 1024
    p = c.path("randfull")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, b"\0", size - 1)  # the size reaches aqd before it stops
        os.fsync(fd)
        code = ("import os, random\n"
                f"blocks = [b for b in range({size // 4096}) if b % {per_chunk} != {per_chunk - 1}]\n"
                "random.Random(3).shuffle(blocks)\n"
                "for b in blocks:\n"
                f"    assert os.pwrite({fd}, b.to_bytes(4, 'little') * 1024, b * 4096) == 4096\n")
        ends_while_stopped(c.pid(), code, "random writes waited for aqd", (fd,))
        for b in range(per_chunk - 1, size // 4096, per_chunk):
            os.pwrite(fd, b.to_bytes(4, "little") * 1024, b * 4096)
    finally:
        os.close(fd)
    drop_page_cache()
    with open(p, "rb") as f:
        for b in range(size // 4096):
            assert f.read(4096) == b.to_bytes(4, "little") * 1024, b
    os.unlink(p)


def test_write_budget_counts_pages(c):
    """The write budget counts the pages buffered writes take, not their bytes: one byte
    written into each of 49,152 pages (192 MiB of a file, three in four of its pages,
    fewer ranges per chunk than send it) on a mount that may buffer 64 MiB leaves the
    mount's memory within the budget (counted by bytes, the 48 KiB written would have held
    all 192 MiB of pages). The file reads back right."""
    m = budget_mount(c, "mnt-budget", 64)
    try:
        pid = mount_pid(m)
        before = proc_status_kib(pid, "VmRSS")
        p = os.path.join(m, "sparse-bytes")
        fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for i in range(49152):  # every chunk a page at a time, round and round
                os.pwrite(fd, b"x", (i * 1031 % 65536) * 4096 + 7)
            grew = proc_status_kib(pid, "VmRSS") - before
        finally:
            os.close(fd)
        assert grew < 100 << 10, f"the mount grew by {grew} KiB for a budget of 64 MiB"
        with open(p, "rb") as f:
            data = f.read()
        pages = sorted(i * 1031 % 65536 for i in range(49152))
        assert len(data) == pages[-1] * 4096 + 8
        assert data.count(b"x") == 49152 and all(data[pg * 4096 + 7] == 0x78 for pg in pages[::997])
        os.unlink(p)
    finally:
        unmount(m)


def test_many_sequential_writers_keep_their_chunks(c):
    """70 files written at once, each almost one chunk (4 MiB less a byte, in 64 KiB
    writes), buffer 280 MiB in a mount that may buffer 256 MiB: with aqd stopped, every
    write still ends at once. A file that buffers one chunk keeps it; sending it early
    would make every writer send its chunk on every write once many of them fill the
    client's budget. The files read back right after close."""
    cs, nfiles = 4 << 20, 70
    m = budget_mount(c, "mnt-seqw", 256)
    fds = [os.open(os.path.join(m, f"seqw{i}"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644) for i in range(nfiles)]
    try:
        for i, fd in enumerate(fds):  # the first write of a file asks aqd (its xattrs)
            os.pwrite(fd, bytes([i + 1]), 0)
            os.fsync(fd)
        code = ("import os\n"
                f"for off in range(0, {cs - 1}, 65536):\n"
                f"    for i, fd in enumerate({fds}):\n"
                f"        n = min(65536, {cs - 1} - off)\n"
                "        assert os.pwrite(fd, bytes([i + 1]) * n, off) == n\n")
        ends_while_stopped(c.pid(), code, "sequential writers waited for aqd", tuple(fds))
    finally:
        for fd in fds:
            os.close(fd)
        unmount(m)
    for i in range(0, nfiles, 23):
        with open(c.path(f"seqw{i}"), "rb") as f:
            assert f.read() == bytes([i + 1]) * (cs - 1), i
    for i in range(nfiles):
        os.unlink(c.path(f"seqw{i}"))


def test_reads_after_a_write_keep_the_page_cache(c):
    """A write through the mount does not cost the file its page cache: after a 4 KiB
    write into a 1 MiB file the kernel holds, the rest of the file reads back with the
    mount's process stopped (no request at all). Before, the kernel
    (FUSE_CAP_AUTO_INVAL_DATA) asked for the attributes on the first read after a write,
    saw the mtime the write had set, and dropped the file's whole page cache: fio's
    random reads and writes through the mount ran at half the rate."""
    p = c.path("rawcache")
    size = 1 << 20
    data = bytes(i % 251 for i in range(size))
    with open(p, "wb") as f:
        f.write(data)
    fd = os.open(p, os.O_RDWR)
    try:
        assert os.pread(fd, size, 0) == data
        os.pwrite(fd, b"y" * 4096, 0)
        code = (f"import os; want = bytes(i % 251 for i in range({size}))[4096:]\n"
                f"assert os.pread({fd}, {size - 4096}, 4096) == want")
        ends_while_stopped(mount_pid(c.mnt), code, "the read after a write went to the mount", (fd,))
        assert os.pread(fd, 4096, 0) == b"y" * 4096
    finally:
        os.close(fd)
    os.unlink(p)


def test_overlapping_writes_read_back(c):
    """Writes that overlap and join ranges of one buffered chunk, thousands of them, some
    large (a joined range takes a new place in the chunk's buffer, and the buffer drops
    the old places once they outweigh the rest): every read, during and after, returns
    what a plain file would."""
    p = c.path("overlapping")
    rnd = random.Random(11)
    size = 2 << 20
    want = bytearray(size)
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, b"\0", size - 1)
        for i in range(3000):
            n = rnd.choice((rnd.randrange(1, 300), rnd.randrange(1, 65536)))
            off = rnd.randrange(0, size - n)
            data = rnd.randbytes(n)
            assert os.pwrite(fd, data, off) == n
            want[off:off + n] = data
            if i % 100 == 99:
                lo = rnd.randrange(0, size - 200000)
                assert os.pread(fd, 200000, lo) == bytes(want[lo:lo + 200000]), i
        assert os.pread(fd, size, 0) == bytes(want)
    finally:
        os.close(fd)
    drop_page_cache()
    with open(p, "rb") as f:
        assert f.read() == bytes(want)


def test_fallocate(c):
    """fallocate(2) mode 0 grows the file (zeros, the old bytes kept, never shrinks it),
    KEEP_SIZE changes nothing, modes other than these and PUNCH_HOLE and ZERO_RANGE (the
    next test) are refused with EOPNOTSUPP, and a size past
    RLIMIT_FSIZE is EFBIG, as on ext4. Before, every mode was EOPNOTSUPP, and glibc's
    posix_fallocate then wrote one byte per 4 KiB block (64 MiB took 15 s)."""
    libc = ctypes.CDLL(None, use_errno=True)
    def fallocate(fd, mode, off, length):
        if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(length)) != 0:
            return ctypes.get_errno()
        return 0
    KEEP_SIZE, PUNCH_HOLE = 1, 2
    p = c.path("falloc")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"abc")
        assert fallocate(fd, 0, 0, 5 << 20) == 0
        assert os.fstat(fd).st_size == 5 << 20
        assert os.pread(fd, 8, 0) == b"abc" + b"\0" * 5
        assert os.pread(fd, 4096, (5 << 20) - 4096) == b"\0" * 4096
        assert fallocate(fd, 0, 100, 10) == 0 and os.fstat(fd).st_size == 5 << 20  # never shrinks
        assert fallocate(fd, KEEP_SIZE, 0, 9 << 20) == 0 and os.fstat(fd).st_size == 5 << 20
        assert fallocate(fd, PUNCH_HOLE, 0, 4096) == errno.EOPNOTSUPP  # punch needs KEEP_SIZE
        assert fallocate(fd, 0x08, 0, 4 << 20) == errno.EOPNOTSUPP  # COLLAPSE_RANGE
        assert os.pread(fd, 3, 0) == b"abc"
    finally:
        os.close(fd)
    assert os.stat(p).st_size == 5 << 20  # the server has it, not just this handle
    ro = os.open(p, os.O_RDONLY)
    try:
        assert fallocate(ro, 0, 0, 6 << 20) == errno.EBADF
    finally:
        os.close(ro)
    code = ("import ctypes, errno, os, resource, signal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            f"fd = os.open({p!r}, os.O_RDWR)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (8 << 20, 8 << 20))\n"
            "assert libc.fallocate(fd, 0, ctypes.c_long(0), ctypes.c_long(9 << 20)) != 0\n"
            "assert ctypes.get_errno() == errno.EFBIG, ctypes.get_errno()\n")
    run(sys.executable, "-c", code)
    assert os.stat(p).st_size == 5 << 20


def disk_bytes(root):
    """Bytes the files under root take on their file system (st_blocks)."""
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def test_st_blocks_counts_what_the_chunks_take(c):
    """Regression (fsstress, from a helper): st_blocks was the size in 512-byte units,
    holes included, so a 1 GiB file with one byte written said 2,097,152 blocks (ext4:
    8) and du of sparse files overstated them; now aqd counts what the file's chunks take
    (each rounded up to 4 KiB) when it commits a size. Compared with the same files on a
    local file system where ext4's figure is exact."""
    def make(d):
        sizes = {}
        with open(os.path.join(d, "sparse"), "wb") as f:
            f.truncate(1 << 30)
            f.write(b"x")
        with open(os.path.join(d, "tail"), "wb") as f:
            f.seek((64 << 20) + 5)
            f.write(b"y" * 10)
        with open(os.path.join(d, "dense"), "wb") as f:
            f.write(b"z" * ((5 << 20) + 100))
        with open(os.path.join(d, "small"), "wb") as f:
            f.write(b"s" * 100)
        with open(os.path.join(d, "cut"), "wb") as f:
            f.write(b"c" * (9 << 20))
        os.truncate(os.path.join(d, "cut"), 3 << 20)
        for n in ("sparse", "tail", "dense", "small", "cut"):
            sizes[n] = os.stat(os.path.join(d, n)).st_blocks
        return sizes
    d = c.path("blocks")
    os.mkdir(d)
    got = make(d)
    with tempfile.TemporaryDirectory(dir="/tmp") as local:
        want = make(local)
    assert got["sparse"] <= 8 * 1024 and got["tail"] <= 8 * 1024, got  # at most a chunk's worth
    for n in ("dense", "small", "cut"):
        assert got[n] == want[n], f"{n}: {got[n]} blocks, ext4 {want[n]}"
    # what a fresh look (another process, the kernel's attributes dropped) finds
    run("sh", "-c", f"echo 2 > /proc/sys/vm/drop_caches")
    assert os.stat(os.path.join(d, "sparse")).st_blocks == got["sparse"]
    assert disk_bytes(d) < 16 << 20, f"du of the directory says {disk_bytes(d)} bytes"


def test_seek_data_and_seek_hole_find_the_chunks_written(c):
    """lseek(2)'s SEEK_DATA and SEEK_HOLE were answered by the kernel from the size alone
    (all data, the hole at the end), so cp and tar could not keep a file sparse. The
    mount asks aqd which chunks exist: a chunk's bytes run from its start to the last byte
    written in it, the rest of the file is holes. Writes still buffered by the writer
    count; past the end is ENXIO; cp --sparse=always copies the bytes and keeps holes."""
    M = 1 << 20  # chunks are 4 MiB
    p = c.path("seeks")
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 64 * M)
        os.pwrite(fd, b"a" * 4096, 10 * M)
        os.pwrite(fd, b"b" * M, 40 * M)  # still buffered by the mount: counted
        def seek(off, whence):
            try:
                return os.lseek(fd, off, whence)
            except OSError as e:
                return -e.errno
        D, H = os.SEEK_DATA, os.SEEK_HOLE
        want = [(0, D, 8 * M), (0, H, 0), (8 * M, H, 10 * M + 4096), (9 * M, D, 9 * M),
                (10 * M + 5000, D, 40 * M), (11 * M, H, 11 * M), (40 * M, H, 41 * M), (41 * M, D, -errno.ENXIO),
                (63 * M, H, 63 * M), (64 * M, D, -errno.ENXIO), (64 * M, H, -errno.ENXIO)]
        got = [(off, w, seek(off, w)) for off, w, _ in want]
        assert got == want, f"{got}\n{want}"
    finally:
        os.close(fd)
    q = c.path("seeks-copy")
    run("cp", "--sparse=always", p, q)
    with open(p, "rb") as a, open(q, "rb") as b:
        assert a.read() == b.read()
    assert os.stat(q).st_blocks * 512 < 16 * M, os.stat(q).st_blocks


def test_punch_hole_and_zero_range(c):
    """Regression: fallocate(2)'s FALLOC_FL_PUNCH_HOLE and FALLOC_FL_ZERO_RANGE were
    EOPNOTSUPP (ext4 does both). Now the range reads as zeros and every other byte is
    kept; a punch keeps the size, zero range grows the file unless KEEP_SIZE; writes the
    handle still buffers are sent first, so they are zeroed, not resurrected; another
    handle and a fresh open see the same. A chunk the range covers whole is dropped (the
    space goes back to aqd's disk), not written as zeros."""
    libc = ctypes.CDLL(None, use_errno=True)
    def fallocate(fd, mode, off, length):
        if libc.fallocate(fd, mode, ctypes.c_long(off), ctypes.c_long(length)) != 0:
            return ctypes.get_errno()
        return 0
    KEEP, PUNCH, ZERO = 1, 2, 0x10
    cs = 4 << 20
    rnd = random.Random(5)
    p = c.path("punched")
    model = bytearray(rnd.randbytes(6 * cs + 12345))
    with open(p, "wb") as f:
        f.write(model)
    os.sync()
    targets = os.path.join(c.data, "targets")
    before = disk_bytes(targets)
    fd = os.open(p, os.O_RDWR)
    try:
        # chunks 1 and 2 whole, and the edges of chunks 0 and 3
        assert fallocate(fd, PUNCH | KEEP, cs - 100, 2 * cs + 300) == 0
        model[cs - 100:3 * cs + 200] = bytes(2 * cs + 300)
        assert os.fstat(fd).st_size == len(model)
        freed = before - disk_bytes(targets)
        assert freed >= 2 * cs - (1 << 20), f"{freed} bytes freed by punching 2 chunks"
        steps = [(PUNCH | KEEP, 5 * cs + 7, 10 * cs),         # past the end: the size stays
                 (ZERO, 4 * cs + 5, 100),                      # inside one chunk
                 (ZERO | KEEP, 6 * cs, 2 * cs),                # the last chunk, to the end
                 (ZERO, len(model) - 10, cs + 20)]             # grows the file
        for mode, off, ln in steps:
            # a buffered write into the range just before, and one beside it
            w1, w2 = rnd.randbytes(5000), rnd.randbytes(300)
            os.pwrite(fd, w1, off)
            model[off:off + len(w1)] = w1
            os.pwrite(fd, w2, max(0, off - 400))
            model[max(0, off - 400):max(0, off - 400) + 300] = w2
            assert fallocate(fd, mode, off, ln) == 0, (mode, off, ln)
            end = off + ln if not mode & KEEP else min(off + ln, len(model))
            if end > len(model):
                model.extend(bytes(end - len(model)))
            model[off:end] = bytes(end - off)
            assert os.fstat(fd).st_size == len(model), (mode, off, ln)
            assert os.pread(fd, len(model) + 10, 0) == bytes(model), (mode, off, ln)
        # with nothing buffered: what the reads above brought in must not outlive it
        os.write(fd, b"x")
        model[0:1] = b"x"
        os.fsync(fd)
        for i in range(0, len(model), 1 << 20):
            assert os.pread(fd, 1 << 20, i) == bytes(model[i:i + (1 << 20)])
        mtime0 = os.stat(p).st_mtime_ns
        time.sleep(0.01)
        assert fallocate(fd, PUNCH | KEEP, cs, cs) == 0  # one whole chunk, nothing buffered
        model[cs:2 * cs] = bytes(cs)
        for i in range(0, len(model), 1 << 20):
            assert os.pread(fd, 1 << 20, i) == bytes(model[i:i + (1 << 20)]), i
        other = os.open(p, os.O_RDONLY)
        try:
            assert os.pread(other, len(model) + 10, 0) == bytes(model)
        finally:
            os.close(other)
    finally:
        os.close(fd)
    drop_page_cache()
    with open(p, "rb") as f:
        assert f.read() == bytes(model)
    assert os.stat(p).st_mtime_ns > mtime0  # the punch changed bytes: mtime, as a write


def test_listing_end_needs_no_round_trip(c):
    """The server says when a page reaches the end of a directory, so the getdents that
    finds the end is answered by the mount: with aqd stopped it still returns 0 at once.
    (The first getdents asks for attributes, the last one usually not: a page with
    attributes serves it. 20 names: the start of a listing gets a page with attributes,
    and these fit one.)"""
    d = c.path("lsend")
    os.mkdir(d)
    for i in range(20):
        open(os.path.join(d, f"f{i}"), "wb").close()
    drop_page_cache()  # the kernel forgets the names: the listing asks for attributes
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    try:
        code = ("import ctypes, sys\n"
                "libc = ctypes.CDLL(None, use_errno=True)\n"
                "buf = ctypes.create_string_buffer(1 << 16)\n"
                "def getdents(fd): return libc.syscall(217, fd, buf, len(buf))\n")
        first = code + f"n = getdents({fd})\nassert n > 20 * 24, n\n"
        run(sys.executable, "-c", first, pass_fds=(fd,))
        last = code + f"n = getdents({fd})\nassert n == 0, n\n"
        runs_while_stopped(c.pid(), last, "the getdents at the end of a listing waited for aqd", pass_fds=(fd,))
    finally:
        os.close(fd)


def test_first_read_sees_own_writes(c):
    """A file open for reading while the same mount writes it through another handle:
    the bytes its OPEN brought must not hide the write (read after write)."""
    p = c.path("rw-pre")
    with open(p, "wb") as f:
        f.write(b"a" * 100_000)
    drop_page_cache()
    r = os.open(p, os.O_RDONLY)
    w = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(w, b"XYZ", 10)
        os.fsync(w)
        drop_page_cache()
        got = os.pread(r, 100_000, 0)
        assert got[:10] == b"a" * 10 and got[10:13] == b"XYZ" and len(got) == 100_000, got[:16]
    finally:
        os.close(r)
        os.close(w)


def test_space_freed_after_open_close_then_unlink(c):
    """Regression: OPEN and RELEASE of one file travelled on different connections, so
    the server never saw the last close and never freed the data of a deleted file."""
    import json
    p = c.path("reclaim.bin")
    with open(p, "wb") as f:
        f.write(os.urandom(8 << 20))
    for _ in range(12):
        with open(p, "rb") as f:
            f.read(10)
    before = json.loads(c.aq("status", "--json").stdout)["used_bytes"]
    os.unlink(p)
    for _ in range(100):
        used = json.loads(c.aq("status", "--json").stdout)["used_bytes"]
        if used <= before - (7 << 20):
            return
        time.sleep(0.1)
    raise AssertionError(f"used bytes {before} -> {used}: the deleted file's space was not freed")


def test_space_of_overwritten_chunks_comes_back(c):
    """An overwrite's old records are punched once the index change is durable, by aqd's
    sync each second, not by the fsync that made it durable (regression: with that
    thread's punch gone, fsync'd overwrites kept every old version on disk)."""
    import json
    p = c.path("overwritten.bin")
    data = os.urandom(8 << 20)
    with open(p, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())
    before = json.loads(c.aq("status", "--json").stdout)["used_bytes"]
    with open(p, "r+b") as f:
        for _ in range(6):
            f.seek(0)
            f.write(data)
            os.fsync(f.fileno())
    for _ in range(35):  # the sync thread's second, well before the compactor's 5 s
        used = json.loads(c.aq("status", "--json").stdout)["used_bytes"]
        if used <= before + (2 << 20):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"used bytes {before} -> {used}: six overwrites kept their old records")
    with open(p, "rb") as f:
        assert f.read() == data


def test_page_cache_kept_but_not_stale(c):
    """Files keep the kernel's page cache across opens, yet a change made by another
    client shows once the attribute timeout has passed (the kernel sees the new mtime
    and size and drops the cached pages)."""
    import aquifer
    p = c.path("cached")
    with open(p, "wb") as f:
        f.write(b"A" * 100_000)
    for _ in range(2):
        with open(p, "rb") as f:
            assert f.read() == b"A" * 100_000
    cl = aquifer.connect(c.conf)
    with cl.open("/cached", "r+b") as f:
        f.write(b"B" * 100_001)
    cl.close()
    time.sleep(1.5)  # past the mount's 1 s attribute timeout
    with open(p, "rb") as f:
        assert f.read() == b"B" * 100_001


def test_synced_small_writes_into_a_big_file_read_back(c):
    """Small writes, each followed by fsync, into a file of almost a chunk (what a database
    or `fio --fsync=1` does): aqd keeps each as an overlay of the 64 KiB blocks it changed
    instead of rewriting the 4 MiB chunk (src/data/README.md, "Overlays"), so its segments
    grow by about the blocks written, not by a chunk per fsync. Every byte reads back,
    through the mount (whose local reads get no single record to read for such a chunk,
    and ask aqd), also past writes that grow the file, and after aqd is killed with -9."""
    p = c.path("synced_small")
    rnd = random.Random(5)
    size = (4 << 20) - 5000
    want = bytearray(rnd.randbytes(size))
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, want, 0)
        os.fsync(fd)
        wrote0 = proc_io(c.pid(), "write_bytes")
        writes = 80
        for i in range(writes):
            n = rnd.randrange(1, 6000)
            off = rnd.randrange(0, len(want) + (3000 if i % 10 == 0 else -n))
            data = rnd.randbytes(n)
            assert os.pwrite(fd, data, off) == n
            os.fsync(fd)
            want[len(want):] = bytes(max(0, off + n - len(want)))
            want[off:off + n] = data
            if i % 20 == 19:
                drop_page_cache()
                assert os.pread(fd, len(want) + 10, 0) == bytes(want), i
        wrote = proc_io(c.pid(), "write_bytes") - wrote0
        print(f"aqd wrote {wrote} bytes for {writes} synced writes")
        # At most two blocks, a header, padding and the logs' records per write; a chunk
        # rewrite per write would be 320 MiB.
        assert wrote < writes * 3 * 65536, wrote
    finally:
        os.close(fd)
    c.kill9()
    c.restart()
    drop_page_cache()
    with open(p, "rb") as f:
        assert f.read() == bytes(want)


def test_bench_fsync_reports_both_sides(c):
    """aq bench fsync: both sides of the comparison for each file size, percentiles in
    order, its files removed after; bad sizes refused."""
    import json
    import tempfile
    d = c.path("benchfsync")
    os.mkdir(d)
    with tempfile.TemporaryDirectory() as local:
        p = run(AQ, "bench", "fsync", "--dir", d, "--compare", local, "--sizes", "4096,1048576", "--ops", "20",
                "--json")
        j = json.loads(p.stdout)
        assert j["ops"] == 20 and set(j["aquifer"]) == {"4096", "1048576"} == set(j["compare"]), j
        for side in (j["aquifer"], j["compare"]):
            for r in side.values():
                assert 0 < r["median_us"] <= r["p90_us"] <= r["p99_us"] and r["ops_per_s"] > 0, r
        assert os.listdir(d) == [] and os.listdir(local) == []
        j = json.loads(run(AQ, "bench", "fsync", "--dir", d, "--sizes", "65536", "--ops", "10", "--datasync",
                           "--json").stdout)
        assert j["sync"] == "fdatasync" and j["compare"] is None and j["aquifer"]["65536"]["median_us"] > 0, j
    for bad in ("4097", "0", "4096,x"):
        p = run(AQ, "bench", "fsync", "--dir", d, "--sizes", bad, check=False)
        assert p.returncode == 2 and "--sizes" in p.stderr, (bad, p.returncode, p.stderr)


def test_reads_set_atime_as_relatime_does(c):
    """aqd writes the time of a read as the file's atime the way Linux's relatime does:
    when atime is not newer than mtime (or is a day old). A file read again while its
    atime is fresh and newer than its mtime keeps it (aqd remembers that, and asks its
    metadata once, not every second); a write makes mtime newer, and the next read sets
    atime again. The reads reach aqd (the page cache dropped); atime is read through a
    fresh native client, since the mount keeps attributes."""
    import aquifer
    p = c.path("relatime")
    with open(p, "wb") as f:
        f.write(os.urandom(100000))
    day = 86400 * 10**9

    def attr():
        with aquifer.connect(c.conf) as cl:
            st = cl.stat("/relatime")
        return st.st_atime_ns, st.st_mtime_ns

    def read():
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert len(os.read(fd, 200000)) == 100000
        finally:
            os.close(fd)

    def wait_atime_past(t_ns):
        deadline = time.time() + 10
        while attr()[0] <= t_ns:
            assert time.time() < deadline, f"atime {attr()[0]} never passed {t_ns}"
            time.sleep(0.2)

    now = time.time_ns()
    os.utime(p, ns=(now - 3 * day, now - 2 * day))  # atime older than mtime
    read()
    wait_atime_past(now - day)
    a1, m1 = attr()
    assert a1 > m1
    for _ in range(3):  # fresh and newer than mtime: kept
        time.sleep(1.1)
        read()
    time.sleep(2.5)
    assert attr()[0] == a1
    with open(p, "r+b") as f:  # mtime newer than atime now
        f.write(b"y")
    m2 = attr()[1]
    assert m2 > a1, (m2, a1)
    read()
    wait_atime_past(m2)


def test_fdatasync_syncs_metadata_only_when_the_size_changed(c):
    """fdatasync needs the metadata only when the file's size changed (ext4's rule): once a
    file's size was made durable, an fdatasync after writes inside it syncs only the data
    targets, not the metadata log (aqd refuses, by a test hook, every FSYNC that would
    sync it). fsync, and fdatasync after the size changed, still sync the metadata."""
    p = c.path("datasync")
    fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.pwrite(fd, os.urandom(1 << 20), 0)
        os.fsync(fd)  # the size is durable
        c.restart_with(AQ_TEST_FAIL_META_SYNC="1")
        os.pwrite(fd, b"inside", 5000)
        os.fdatasync(fd)  # needs no metadata
        os.pwrite(fd, b"again", 70000)
        expect_errno(errno.EIO, os.fsync, fd)
        os.pwrite(fd, b"past the end", 1 << 20)
        expect_errno(errno.EIO, os.fdatasync, fd)
    finally:
        os.close(fd)
        c.kill9()
        c.restart()
    with open(p, "rb") as f:
        data = f.read()
    assert len(data) == (1 << 20) + 12 and data[5000:5006] == b"inside" and data[70000:70005] == b"again"


def test_an_fsync_syncs_the_targets_of_its_file(c):
    """An fsync makes its own file durable, not every file with unsynced writes: it syncs
    the targets that hold the file's chunks (and the metadata log). With aqd failing every
    sync of target 0 while it has something to sync (a test hook), 40 one-chunk files
    written and closed, then each opened and fsynced: those on other targets sync, those
    on target 0 fail with EIO. Before, an fsync synced every target, so all 40 failed."""
    c.restart_with(AQ_TEST_FAIL_TARGET_SYNC="0")
    results = []
    try:
        for i in range(40):
            with open(c.path(f"tsync{i}"), "wb") as f:
                f.write(b"x" * 100)
        for i in range(40):
            fd = os.open(c.path(f"tsync{i}"), os.O_WRONLY)
            try:
                os.fsync(fd)
                results.append(0)
            except OSError as e:
                results.append(e.errno)
            finally:
                os.close(fd)
    finally:
        c.kill9()
        c.restart()
    assert 0 in results and errno.EIO in results and set(results) == {0, errno.EIO}, results
    for i in range(40):
        with open(c.path(f"tsync{i}"), "rb") as f:
            assert f.read() == b"x" * 100
        os.unlink(c.path(f"tsync{i}"))


def test_fsync(c):
    p = c.path("synced")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"durable")
    os.fsync(fd)
    os.close(fd)
    dfd = os.open(c.mnt, os.O_RDONLY)
    os.fsync(dfd)
    os.close(dfd)


def test_status_command(c):
    out = c.aq("status").stdout
    for word in ("buckets", "targets", "files", "free"):
        assert word in out, out
    assert "secret" not in out


if __name__ == "__main__":
    main(globals(), setup=Cluster)

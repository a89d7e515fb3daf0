"""Two mounts of one cluster (two clients, as on two GPU servers). Each lets its kernel
cache entries, negative entries, attributes and pages for an hour (the default); what one
mount changes must show on the other within moments, because the server pushes every
change to the clients that cache (before it answers the writer; the other mount applies
it asynchronously, typically well under a millisecond later). Each check looks on mount B
right after mount A's call returned and allows B up to SOON seconds: without the push,
B would show the old state for an hour."""
import errno
import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

from aqtest import AQ, NOBODY, Cluster, heard, main, mount_pid, run, run_as, runs_while_stopped, unmount

ROUNDS = 50
SOON = 0.5


def soon(pred, what):
    deadline = time.monotonic() + SOON
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"mount B still shows the old state after {SOON} s: {what}")
        time.sleep(0.001)


def size_of(p):
    try:
        return os.stat(p).st_size
    except FileNotFoundError:
        return None


def read(p):
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class TwoMounts(Cluster):
    """Mount A (c.mnt) serves through FUSE over io_uring where the kernel has it, mount B
    (c.mnt2) through /dev/fuse, so every test here runs across both ways."""
    def __init__(self):
        super().__init__()
        self.mnt2 = os.path.join(self.base, "mnt2")
        self.mnt2_log = os.path.join(self.base, "mnt2.log")
        os.makedirs(self.mnt2)
        run(AQ, "mount", self.mnt2, "--cluster", self.conf, "--no-io-uring", "--log", self.mnt2_log)

    def close(self):
        unmount(self.mnt2)
        super().close()


def setup():
    return TwoMounts()


def both(c, *parts):
    return c.path(*parts), os.path.join(c.mnt2, *parts)


def extra_mount(c, name, **hooks):
    """One more mount of the cluster at c.base/name, with the mount's test hooks set
    (keep_delay_ms: AQ_MOUNT_TEST_KEEP_DELAY_MS; push_delay_ms: apply every push that
    late, AQ_MOUNT_TEST_PUSH_DELAY_MS). The caller unmounts it."""
    m = os.path.join(c.base, name)
    os.makedirs(m, exist_ok=True)
    env = dict(os.environ)
    for k, v in hooks.items():
        env["AQ_MOUNT_TEST_" + k.upper()] = str(v)
    run(AQ, "mount", m, "--cluster", c.conf, env=env)
    return m


ENABLE_URING = "/sys/module/fuse/parameters/enable_uring"


def ring_completions(pid):
    """Completions reaped so far on all of process pid's io_urings (CqHead in fdinfo)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[io_uring]":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                total += next(int(ln.split()[1]) for ln in f if ln.startswith("CqHead:"))
        except (FileNotFoundError, StopIteration):
            pass
    return total


def test_mount_a_serves_through_io_uring_and_mount_b_through_dev_fuse(c):
    """Where the kernel has FUSE over io_uring (Linux 6.14, its fuse module's enable_uring,
    which a root mount turns on), mount A takes it: its LOOKUPs arrive as completions on
    its rings. Mount B, told --no-io-uring, reads /dev/fuse and has no ring."""
    b_pid = mount_pid(c.mnt2)
    assert ring_completions(b_pid) == 0 and not any(
        os.readlink(f"/proc/{b_pid}/fd/{fd}") == "anon_inode:[io_uring]" for fd in os.listdir(f"/proc/{b_pid}/fd"))
    with open(c.mnt2_log) as f:
        assert "io_uring" not in f.read()
    if not os.path.exists(ENABLE_URING):
        print("  (no FUSE over io_uring in this kernel: both mounts read /dev/fuse)")
        return
    with open(ENABLE_URING) as f:
        assert f.read().strip() == "Y"
    with open(os.path.join(c.data, "mount.log")) as f:
        assert "FUSE over io_uring" in f.read()
    a_pid = c.mount_pid()
    before = ring_completions(a_pid)
    for i in range(300):
        assert not os.path.exists(c.path(f"ring-miss-{i}"))  # a LOOKUP each
    assert ring_completions(a_pid) - before >= 300


IO_URING_DISABLED = "/proc/sys/kernel/io_uring_disabled"


def test_a_mount_that_cannot_make_its_rings_serves_through_dev_fuse(c):
    """Regression: once the INIT reply offers FUSE over io_uring, the kernel holds every
    request until each CPU queue has an entry. A first version set its rings up after
    that reply; with io_uring refused (kernel.io_uring_disabled=2) none came and the mount
    hung for ever. The rings are made before the offer now, and without them the mount
    offers nothing and serves through /dev/fuse."""
    if not os.path.exists(ENABLE_URING) or not os.path.exists(IO_URING_DISABLED):
        print("  (no FUSE over io_uring, or no io_uring switch, in this kernel)")
        return
    with open(IO_URING_DISABLED) as f:
        was = f.read().strip()
    m = os.path.join(c.base, "noring")
    log = os.path.join(c.base, "noring.log")
    os.makedirs(m, exist_ok=True)
    try:
        with open(IO_URING_DISABLED, "w") as f:
            f.write("2")
        run(AQ, "mount", m, "--cluster", c.conf, "--log", log)
        code = (f"import os\np = {m!r} + '/made-without-rings'\n"
                "with open(p, 'wb') as f: f.write(b'x' * 100000)\n"
                "assert open(p, 'rb').read() == b'x' * 100000 and 'made-without-rings' in os.listdir(os.path.dirname(p))\n"
                "os.unlink(p)\n")
        p = subprocess.Popen([sys.executable, "-c", code])
        try:
            assert p.wait(timeout=20) == 0
        except subprocess.TimeoutExpired:
            # end the connection (its requests fail) so that the test fails, not hangs
            os.kill(mount_pid(m), signal.SIGKILL)
            p.wait()
            raise AssertionError("the mount that offered a ring it could not make hung")
    finally:
        with open(IO_URING_DISABLED, "w") as f:
            f.write(was)
        unmount(m)
    with open(log) as f:
        text = f.read()
    assert "cannot set up FUSE over io_uring" in text and "FUSE over io_uring, " not in text, text


def answers_with_aqd_stopped(c, code):
    """Runs `python3 -c code` while aqd is stopped; fails unless it ends well within 10 s."""
    runs_while_stopped(c.pid(), code, "it waited for the stopped aqd")


def test_cached_stat_needs_no_server(c):
    """By default the kernel keeps entries and attributes (an hour): with aqd stopped, a
    stat of a file this mount has seen still answers, from the kernel's cache."""
    a, _ = both(c, "cached")
    open(a, "w").close()
    os.stat(a)
    answers_with_aqd_stopped(c, f"import os; os.stat({a!r}); os.stat({c.mnt!r})")


def test_directory_after_unlink_needs_no_server(c):
    """An UNLINK's reply carries the directory's new attributes and the mount keeps them:
    the kernel's stat of the directory right after an unlink (it forgot the directory's
    attributes) answers with aqd stopped, and says what the other mount, which asks the
    server, says."""
    a, b = both(c, "unl")
    os.mkdir(a)
    for i in range(3):
        open(os.path.join(a, f"f{i}"), "w").close()
    before = os.stat(a)
    time.sleep(0.01)
    os.unlink(os.path.join(a, "f1"))
    answers_with_aqd_stopped(c, f"import os; os.stat({a!r})")
    after = os.stat(a)
    assert after.st_mtime_ns > before.st_mtime_ns and after.st_ctime_ns > before.st_ctime_ns
    fd = os.open(b, os.O_RDONLY)  # B has heard the unlink's push: it asks the server
    try:
        heard(fd)
    finally:
        os.close(fd)
    there = os.stat(b)
    assert (there.st_mtime_ns, there.st_ctime_ns, there.st_nlink, there.st_mode) == \
        (after.st_mtime_ns, after.st_ctime_ns, after.st_nlink, after.st_mode)


def test_create_seen_through_negative_entry(c):
    a, b = both(c, "neg")
    os.mkdir(a)
    for i in range(ROUNDS):
        assert not os.path.exists(f"{b}/f{i}")  # B now caches "no such name"
        with open(f"{a}/f{i}", "w") as f:
            f.write("x" * i)
        soon(lambda: size_of(f"{b}/f{i}") == i, f"round {i}: a name B had seen missing")


def test_truncating_create_of_a_name_made_elsewhere(c):
    """Regression: open(O_CREAT|O_TRUNC) of a name this mount still believed free (the
    other mount's create not heard yet) reached aqd as a create of an existing file,
    which opened it without the O_TRUNC: `echo x > f` left the old bytes after the new
    ones. The truncate now comes with the create, as with an open."""
    late = extra_mount(c, "late-trunc", push_delay_ms=1500)
    try:
        a = c.path("tc")
        os.mkdir(a)
        b = os.path.join(late, "tc")
        for i in range(3):
            assert not os.path.exists(f"{b}/f{i}")  # the late mount caches "no such name"
            with open(f"{a}/f{i}", "w") as f:
                f.write("hello world")
            with open(f"{b}/f{i}", "w") as f:  # O_CREAT | O_TRUNC, before the push lands
                assert os.fstat(f.fileno()).st_size == 0
                f.write("x")
            assert open(f"{a}/f{i}").read() == "x"
            assert open(f"{b}/f{i}").read() == "x" and os.stat(f"{b}/f{i}").st_size == 1
    finally:
        unmount(late)


def test_a_create_over_a_symlink_made_elsewhere_follows_it(c):
    """Regression (a stress of two mounts making and removing names at once):
    open(O_CREAT) of a name this mount still believed free, which the other mount had
    made a symlink (or a fifo) meanwhile, reached aqd as a create of an existing name;
    aqd opened the symlink itself and the kernel, handed a symlink for a create, said
    EIO. The kernel now looks the name up again (ESTALE) and does what ext4 does:
    follows the symlink to the file it names, or opens the fifo."""
    late = extra_mount(c, "late-sym", push_delay_ms=1500)
    try:
        a = c.path("cs")
        os.mkdir(a)
        b = os.path.join(late, "cs")
        with open(f"{a}/target", "w") as f:
            f.write("old")
        for i in range(2):
            assert not os.path.exists(f"{b}/l{i}")  # the late mount caches "no such name"
            os.symlink("target", f"{a}/l{i}")
            with open(f"{b}/l{i}", "w") as f:  # O_CREAT | O_TRUNC, before the push lands
                f.write(f"via link {i}")
            assert open(f"{a}/target").read() == f"via link {i}"
            assert os.path.islink(f"{a}/l{i}")
        assert not os.path.exists(f"{b}/fifo")
        os.mkfifo(f"{a}/fifo")
        fd = os.open(f"{b}/fifo", os.O_CREAT | os.O_RDWR | os.O_NONBLOCK)  # opens the fifo
        assert stat.S_ISFIFO(os.fstat(fd).st_mode)
        os.close(fd)
    finally:
        unmount(late)


def test_writes_through_an_open_descriptor_reach_the_other_mount(c):
    """Bytes written through a descriptor that stays open (a log, a shard being appended
    to) used to stay in the writing mount's buffers until close: no other client saw
    them, and a crash of that mount lost them however old they were. They now go to the
    server once they are WRITEBACK_AGE_NS (5 s) old, as a local file system writes dirty
    pages back; the other mount sees them (and the size) while the writer holds on."""
    a, b = both(c, "wb")
    with open(a, "wb") as f:
        f.write(b"first line\n")
        f.flush()  # Python's buffer, not the mount's: no close, no fsync
        t = time.monotonic()
        while read(b) != b"first line\n":
            assert time.monotonic() - t < 15, f"mount B still sees {read(b)!r}"
            time.sleep(0.2)
        f.write(b"second\n")
        f.flush()
        t = time.monotonic()
        while read(b) != b"first line\nsecond\n":
            assert time.monotonic() - t < 15, f"mount B still sees {read(b)!r}"
            time.sleep(0.2)


def copy_like_tar(path, data, atime_ns, mtime_ns, uid, gid, mode):
    """What tar and cp -a do per file: create with 0600, write, then set times, owner and
    mode through the descriptor before closing it. Returns fstat before the close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.utime(fd, ns=(atime_ns, mtime_ns))
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        return os.fstat(fd)
    finally:
        os.close(fd)


def same_stat(x, y):
    return [(getattr(x, k), getattr(y, k)) for k in ("st_mode", "st_uid", "st_gid", "st_size", "st_atime_ns",
                                                      "st_mtime_ns", "st_ctime_ns", "st_nlink", "st_blocks")
            if getattr(x, k) != getattr(y, k)]


def test_a_copiers_attributes_go_with_its_bytes(c):
    """tar and cp -a set a file's times, owner and mode through the descriptor they wrote
    it with: the mount now keeps those with the file's buffered bytes and sends them
    after the bytes, in one request at the close (design.md, "Attributes set through a
    descriptor open for writing"). What the writer saw before its close is what both
    mounts show after it, ctime and st_blocks included, and the bytes are whole."""
    a, b = both(c, "copier")
    os.mkdir(a)
    for i in range(40):
        data = os.urandom(1 + 997 * i)
        mode = (0o640, 0o4755, 0o2750, 0o444)[i % 4]
        before = copy_like_tar(f"{a}/f{i}", data, (1000 + i) * 10**9, (2000 + i) * 10**9 + 7, 1000 + i, 2000 + i,
                               mode)
        assert stat.S_IMODE(before.st_mode) == mode and before.st_uid == 1000 + i and before.st_gid == 2000 + i
        assert before.st_mtime_ns == (2000 + i) * 10**9 + 7 and before.st_size == len(data), before
        on_a = os.stat(f"{a}/f{i}")
        assert not same_stat(before, on_a), f"file {i}: the writer's fstat, then stat: {same_stat(before, on_a)}"
        soon(lambda: not same_stat(on_a, os.stat(f"{b}/f{i}")),
             f"file {i}: (mount A, mount B) differ: {same_stat(on_a, os.stat(f'{b}/f{i}'))}")
        assert read(f"{b}/f{i}") == data
    # an empty file: no bytes to carry them, the change goes alone at the close
    before = copy_like_tar(f"{a}/empty", b"", 5 * 10**9, 6 * 10**9, 7, 8, 0o600)
    soon(lambda: not same_stat(before, os.stat(f"{b}/empty")), "an empty file's attributes")


def test_cp_a_copies_modes_owners_times_and_acls(c):
    """cp -a sets a copy's mode with an access ACL of the mode alone, through the
    descriptor it wrote with (fsetxattr system.posix_acl_access), and its times with
    futimens: the mount treats that ACL as the chmod it is (deferred with the bytes, as
    tar's fchmod) and an ACL with more entries as the xattr it is. Every copy shows on the
    other mount as on the source: mode, owner, times, size, bytes and getfacl."""
    src = tempfile.mkdtemp(dir="/tmp", prefix="cp_a_src.")
    try:
        for i, mode in enumerate((0o644, 0o600, 0o755, 0o4711, 0o2750, 0o1777, 0o000, 0o640)):
            p = os.path.join(src, f"f{i}")
            with open(p, "wb") as f:
                f.write(os.urandom(i * 3000))
            os.chown(p, 100 + i, 200 + i)
            os.chmod(p, mode)
            os.utime(p, ns=(10**9 * (i + 1), 10**9 * (i + 100) + 123))
        run("setfacl", "-m", "u:1234:rw,g:55:r", os.path.join(src, "f7"))
        run("cp", "-a", src, c.path("cp_a"))
        for i in range(8):
            s_, d = os.path.join(src, f"f{i}"), os.path.join(c.mnt2, "cp_a", f"f{i}")
            soon(lambda: not [k for k in ("st_mode", "st_uid", "st_gid", "st_size", "st_mtime_ns")
                              if getattr(os.stat(s_), k) != getattr(os.stat(d), k)],
                 f"f{i}: source {os.stat(s_)}, copy {os.stat(d)}")
            assert read(d) == read(s_)
            assert run("getfacl", "-cn", d).stdout == run("getfacl", "-cn", s_).stdout, f"f{i}'s ACL"
    finally:
        shutil.rmtree(src)


def test_a_write_after_futimens_moves_the_mtime_again(c):
    """A time set through the descriptor waits for the close; a write after it must still
    win, as on ext4 (the write's mtime is now), on both mounts."""
    a, b = both(c, "futimens_then_write")
    fd = os.open(a, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, b"x" * 5000)
        os.utime(fd, ns=(10**9, 10**9))
        os.fchmod(fd, 0o600)
        t0 = time.time_ns()
        os.write(fd, b"y" * 5000)
        seen = os.fstat(fd)
    finally:
        os.close(fd)
    assert seen.st_mtime_ns >= t0 and stat.S_IMODE(seen.st_mode) == 0o600, seen
    soon(lambda: os.stat(b).st_mtime_ns == os.stat(a).st_mtime_ns >= t0, "mtime after a write that followed futimens")
    assert stat.S_IMODE(os.stat(b).st_mode) == 0o600 and os.stat(b).st_atime_ns == 10**9
    assert read(b) == b"x" * 5000 + b"y" * 5000


def test_a_new_owner_may_use_the_file_before_its_writer_closes_it(c):
    """root writes a file in a sticky directory, gives it to nobody with mode 0600
    through the descriptor and keeps it open. The kernel lets nobody at it by what the
    mount told it; the server has not heard of the change yet (it goes with the bytes at
    the close) and refused nobody's rename there (EPERM: not the file's owner): the mount
    now sends what it deferred and asks again, so nobody renames, reads and appends as
    on ext4. nobody's process starts before the file is opened: a process forked after
    it would close a copy of the descriptor at its exec, and that close (a FUSE flush)
    sends the deferred changes itself."""
    a, b = both(c, "handed_over")
    os.mkdir(a)
    os.chmod(a, 0o1777)

    def drop():
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
    nobody = subprocess.Popen([sys.executable, "-c", "import sys\nfor line in sys.stdin:\n"
                               "    try:\n        exec(line)\n        print('ok', flush=True)\n"
                               "    except OSError as e:\n        print(e.errno, flush=True)\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, preexec_fn=drop, cwd="/")

    def as_nobody(code):
        nobody.stdin.write(code + "\n")
        nobody.stdin.flush()
        return nobody.stdout.readline().strip()
    try:
        fd = os.open(f"{a}/f", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"from root\n")
            os.fchown(fd, NOBODY, NOBODY)
            os.fchmod(fd, 0o600)
            assert as_nobody(f"import os; os.rename({a + '/f'!r}, {a + '/g'!r})") == "ok"
            assert as_nobody(f"assert open({a + '/g'!r}).read() == 'from root\\n'") == "ok"
            assert as_nobody(f"open({a + '/g'!r}, 'a').write('from nobody\\n')") == "ok"
        finally:
            os.close(fd)
    finally:
        nobody.stdin.close()
        nobody.wait()
    soon(lambda: read(f"{b}/g") == b"from root\nfrom nobody\n", "the new owner's append")
    st = os.stat(f"{b}/g")
    assert st.st_uid == NOBODY and stat.S_IMODE(st.st_mode) == 0o600, st


def test_a_deferred_change_refused_at_the_close_is_reported_there(c):
    """nobody owns two files, chmods them through the descriptors it writes them with
    (one gets bytes, so the change goes with them; one stays empty, so it goes alone),
    and root on the other mount takes the files meanwhile. The changes reach the server
    at the close, where nobody may no longer make them: each close fails (EPERM), as a
    write-back error would, the bytes are kept, and the writer's mount then shows the
    server's attributes, not its own."""
    a, b = both(c, "refused_later")
    os.mkdir(a)
    os.chmod(a, 0o777)
    ready, go = f"{a}/ready", f"{a}/go"
    code = f"""
import os, time
fds = [os.open({a!r} + "/" + n, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600) for n in ("full", "empty")]
os.write(fds[0], b"data")
for fd in fds:
    os.fchmod(fd, 0o644)
open({ready!r}, "w").close()
while not os.path.exists({go!r}):
    time.sleep(0.01)
for fd, n in zip(fds, ("full", "empty")):
    try:
        os.close(fd)
        print("closed")
    except OSError as e:
        print("close", e.errno)
    st = os.stat({a!r} + "/" + n)
    print(st.st_uid, oct(st.st_mode & 0o777))
"""
    out = {}
    t = threading.Thread(target=lambda: out.update(r=run_as(code)))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            assert time.monotonic() < deadline and t.is_alive(), out
            time.sleep(0.01)
        for n in ("full", "empty"):
            os.chown(f"{b}/{n}", 0, 0)
    finally:
        open(go, "w").close()
        t.join()
    r = out["r"]
    assert r.returncode == 0, r
    assert r.stdout.split("\n")[:4] == [f"close {errno.EPERM}", "0 0o600"] * 2, r.stdout
    assert read(f"{b}/full") == b"data"


def test_unlink_and_rename_seen(c):
    a, b = both(c, "mv")
    os.mkdir(a)
    for i in range(ROUNDS):
        with open(f"{a}/x{i}", "w") as f:
            f.write("1")
        assert os.stat(f"{b}/x{i}").st_size == 1  # B caches the entry
        os.rename(f"{a}/x{i}", f"{a}/y{i}")
        soon(lambda: not os.path.exists(f"{b}/x{i}"), f"round {i}: the old name of a renamed file")
        soon(lambda: os.path.exists(f"{b}/y{i}"), f"round {i}: the new name")
        os.unlink(f"{a}/y{i}")
        soon(lambda: not os.path.exists(f"{b}/y{i}"), f"round {i}: an unlinked name")


def test_rename_over_seen(c):
    a, b = both(c, "over")
    os.mkdir(a)
    for i in range(ROUNDS):
        with open(f"{a}/t", "w") as f:
            f.write("old")
        with open(f"{a}/s", "w") as f:
            f.write("new!" * (i + 1))
        soon(lambda: read(f"{b}/t") == b"old", f"round {i}: rewritten target")
        os.rename(f"{a}/s", f"{a}/t")
        soon(lambda: read(f"{b}/t") == b"new!" * (i + 1), f"round {i}: a name renamed over")


def test_attributes_seen(c):
    a, b = both(c, "attrs")
    with open(a, "w") as f:
        f.write("x")
    for i in range(ROUNDS):
        mode = 0o600 if i % 2 else 0o644
        os.stat(b)
        os.chmod(a, mode)
        soon(lambda: os.stat(b).st_mode & 0o777 == mode, f"round {i}: chmod")
        os.utime(a, ns=(i * 10**9, i * 10**9))
        soon(lambda: os.stat(b).st_mtime_ns == i * 10**9, f"round {i}: utime")
        os.truncate(a, i)
        soon(lambda: os.stat(b).st_size == i, f"round {i}: truncate")


def test_data_seen_by_open_reader(c):
    """B keeps the file open and its pages cached; A rewrites bytes in place (same size)
    and closes. B's next pread through the same descriptor must see them: the push drops
    B's page cache (notify_inval_inode), nothing else would for an hour."""
    a, b = both(c, "data")
    body = bytearray(b"%06d-" % 0 * 2000)
    with open(a, "wb") as f:
        f.write(body)
    fb = os.open(b, os.O_RDONLY)
    try:
        soon(lambda: os.pread(fb, len(body) + 1, 0) == body, "the first version")
        for i in range(ROUNDS):
            piece = b"%06d-" % (i + 1)
            at = (i * 7919) % (len(body) - len(piece))
            with open(a, "r+b") as f:
                f.seek(at)
                f.write(piece)
            body[at:at + len(piece)] = piece
            soon(lambda: os.pread(fb, len(body) + 1, 0) == body, f"round {i}: bytes rewritten in place")
    finally:
        os.close(fb)


def test_hard_link_count_seen(c):
    a, b = both(c, "hl")
    os.mkdir(a)
    with open(f"{a}/f", "w") as f:
        f.write("x")
    for i in range(ROUNDS // 5):
        soon(lambda: os.stat(f"{b}/f").st_nlink == 1, f"round {i}: nlink after unlink")
        os.link(f"{a}/f", f"{a}/g")
        soon(lambda: os.stat(f"{b}/f").st_nlink == 2, f"round {i}: nlink after link")
        os.unlink(f"{a}/g")


def test_dir_listing_seen(c):
    a, b = both(c, "ls")
    os.mkdir(a)
    names = set()
    for i in range(ROUNDS // 5):
        soon(lambda: set(os.listdir(b)) == names, f"round {i}: listing")
        open(f"{a}/e{i}", "w").close()
        names.add(f"e{i}")
        soon(lambda: set(os.listdir(b)) == names, f"round {i}: listing after a create")
        os.mkdir(f"{a}/d{i}")
        os.rmdir(f"{a}/d{i}")


def getdents_names(fd):
    """The names in open directory fd, read from its start with lseek and getdents64."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    os.lseek(fd, 0, os.SEEK_SET)
    buf = ctypes.create_string_buffer(1 << 16)
    names = set()
    while True:
        n = libc.syscall(217, fd, buf, len(buf))  # SYS_getdents64 on x86-64
        assert n >= 0, os.strerror(ctypes.get_errno())
        if n == 0:
            return names - {".", ".."}
        at = 0
        while at < n:
            reclen = int.from_bytes(buf.raw[at + 16:at + 18], "little")
            names.add(buf.raw[at + 19:at + reclen].split(b"\0", 1)[0].decode())
            at += reclen


def getdents_page(fd, size):
    """One getdents64 of at most size bytes on fd: [(name, d_off)]."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(size)
    n = libc.syscall(217, fd, buf, size)  # SYS_getdents64 on x86-64
    assert n >= 0, os.strerror(ctypes.get_errno())
    out, at = [], 0
    while at < n:
        off = int.from_bytes(buf.raw[at + 8:at + 16], "little")
        reclen = int.from_bytes(buf.raw[at + 16:at + 18], "little")
        out.append((buf.raw[at + 19:at + reclen].split(b"\0", 1)[0].decode(), off))
        at += reclen
    return out


def test_a_listing_with_attributes_does_not_bring_back_a_moved_directory(c):
    """The mount fetches a listing's entries from aqd a page at a time and hands them out
    over several getdents calls; with attributes the kernel makes a dentry of each. A
    directory renamed between two getdents came back in the second from the page fetched
    before: the kernel moved its dentry back to the old name, which then stat'ed fine
    though gone (and with another rename holding the rename lock, lookups failed with
    ESTALE: tests/integration/test_durability.py's stress, one run in three or four).
    Entries held from before a change are now fetched again."""
    a = c.path("moved_while_listed")
    os.mkdir(a)
    os.mkdir(c.path("moved_to"))
    names = [f"s{i:03d}" for i in range(100)]
    for n in names:
        os.mkdir(f"{a}/{n}")
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")  # the kernel forgets the dentries mkdir made
    fd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    try:
        first = {n for n, _ in getdents_page(fd, 32768)}  # one reply with attributes: about 25 of the 100
        assert 0 < len(first - {".", ".."}) < 50, first
        moved = [n for n in names if n not in first]
        for n in moved:  # their lookups also make the kernel ask for attributes again
            os.rename(f"{a}/{n}", c.path("moved_to", n))
        while getdents_page(fd, 32768):
            pass
    finally:
        os.close(fd)
    back = [n for n in moved if os.path.exists(f"{a}/{n}")]
    assert not back, f"renamed away, yet still there on this mount: {back}"
    for n in moved:
        assert stat.S_ISDIR(os.stat(c.path("moved_to", n)).st_mode)


def test_a_listing_begun_before_a_change_is_not_kept(c):
    """xfstests generic/637, its seeks: a descriptor reads the start of a directory,
    unlinks a name it saw, rewinds and lists to the end, then seeks back to each entry.
    Regression: the kernel had kept the start of the first listing and went on filling
    that kept listing with what came after the rewind, so a seek into it listed the
    removed name again. Each change through this mount now drops the kept pages."""
    a, _ = both(c, "begun")
    os.mkdir(a)
    for i in range(100):
        open(f"{a}/{i}", "w").close()
    fd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    try:
        first = [n for n, _ in getdents_page(fd, 200) if n not in (".", "..")]
        gone = first[-1]
        os.unlink(f"{a}/{gone}")
        os.lseek(fd, 0, os.SEEK_SET)
        listing = []
        while True:
            page = getdents_page(fd, 200)
            if not page:
                break
            listing += page
        names = [n for n, _ in listing]
        assert gone not in names and len(names) == 101, (gone, names)
        for i in range(1, len(listing)):  # each entry again, from the offset before it
            os.lseek(fd, listing[i - 1][1], os.SEEK_SET)
            got = getdents_page(fd, 200)
            assert got and got[0][0] == listing[i][0], (i, listing[i][0], got[:2], gone)
    finally:
        os.close(fd)


def test_a_rewound_handle_of_an_empty_directory_shows_new_names(c):
    """xfstests generic/637: a descriptor that listed an empty directory, rewound after a
    create, lists the new name, as on ext4, and the next one after another create.
    Regression: the handle had reached the end where it began, took the rewind for the
    same place, and answered "end" from what it held."""
    a, _ = both(c, "rewind")
    os.mkdir(a)
    fd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert getdents_names(fd) == set()
        for i in range(3):
            open(f"{a}/f{i}", "w").close()
            assert getdents_names(fd) == {f"f{j}" for j in range(i + 1)}
    finally:
        os.close(fd)


def test_a_listing_is_kept_until_the_directory_changes(c):
    """The kernel keeps a directory's listing (FOPEN_CACHE_DIR): with aqd stopped, the
    next listing still answers. A name made through this mount shows in the next listing
    at once, one made through the other mount soon, also when that client then sets the
    directory's mtime back (as tar and rsync do), which the kernel's own check of the
    mtime would miss. Before, every listing went to aqd: `find` of /usr/include's 848
    directories took 0.34 s warm, against ext4's 0.01 s."""
    a, b = both(c, "kept")
    os.mkdir(a)
    names = {f"f{i}" for i in range(50)}
    for n in names:
        open(f"{a}/{n}", "w").close()
    assert set(os.listdir(a)) == names
    answers_with_aqd_stopped(c, f"import os; assert len(os.listdir({a!r})) == 50, os.listdir({a!r})")
    open(f"{a}/here", "w").close()
    names.add("here")
    assert set(os.listdir(a)) == names
    os.unlink(f"{a}/f7")
    names.discard("f7")
    assert set(os.listdir(a)) == names
    soon(lambda: set(os.listdir(b)) == names, "listing on B")
    # a directory held open and listed again from its start with lseek and getdents64
    # alone, as Go's Readdirnames does: no path walk or fstat (glibc's opendir and
    # fdopendir make one) that would fetch its attributes first
    dfd = os.open(a, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert getdents_names(dfd) == names
        open(f"{b}/seen", "w").close()
        names.add("seen")
        deadline = time.monotonic() + SOON
        while getdents_names(dfd) != names:
            assert time.monotonic() < deadline, f"mount A still lists {sorted(getdents_names(dfd))} (rewound)"
            time.sleep(0.001)
    finally:
        os.close(dfd)
    old = os.stat(b).st_mtime_ns
    open(f"{b}/there", "w").close()
    names.add("there")
    os.utime(b, ns=(old, old))
    deadline = time.monotonic() + SOON
    while set(os.listdir(a)) != names:
        assert time.monotonic() < deadline, f"mount A still lists {sorted(os.listdir(a))}"
        time.sleep(0.001)
    assert os.stat(a).st_mtime_ns == old


def server_dir_attrs(c, rel):
    """(mtime_ns, ctime_ns, nlink) of a directory as the server has it (native client)."""
    import aquifer
    st = aquifer.Client(c.conf).stat("/" + rel)
    return st.st_mtime_ns, st.st_ctime_ns, st.st_nlink


def dir_attrs(p):
    st = os.stat(p)
    return st.st_mtime_ns, st.st_ctime_ns, st.st_nlink


def test_dir_attributes_after_own_changes(c):
    """The mount answers the kernel's GETATTRs of a directory it changed itself (each
    create in a directory would otherwise cost one): what it answers must be what the
    server has, after every kind of change, and must move with every change."""
    a, _ = both(c, "dattr")
    os.mkdir(a)
    before = dir_attrs(a)
    steps = [
        ("create", lambda: open(f"{a}/f", "w").close()),
        ("create excl", lambda: os.close(os.open(f"{a}/g", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))),
        ("mkdir", lambda: os.mkdir(f"{a}/sub")),
        ("symlink", lambda: os.symlink("f", f"{a}/ln")),
        ("mkfifo", lambda: os.mkfifo(f"{a}/fifo")),
        ("link", lambda: os.link(f"{a}/f", f"{a}/f2")),
        ("rename", lambda: os.rename(f"{a}/f2", f"{a}/f3")),
        ("unlink", lambda: os.unlink(f"{a}/f3")),
        ("rmdir", lambda: os.rmdir(f"{a}/sub")),
        ("chmod", lambda: os.chmod(a, 0o750)),
        ("setxattr", lambda: os.setxattr(a, "user.k", b"v")),
    ]
    for what, step in steps:
        time.sleep(0.002)  # timestamps must be able to move
        step()
        now = dir_attrs(a)
        assert now == server_dir_attrs(c, "dattr"), f"after {what}: mount says {now}"
        assert now[1] > before[1], f"after {what}: ctime did not move"
        before = now
    assert before[2] == 2


def test_dir_attributes_seen(c):
    """Mount B keeps a directory's attributes too; A's changes in it must reach B."""
    a, b = both(c, "dattr2")
    os.mkdir(a)
    for i in range(ROUNDS // 5):
        dir_attrs(b)
        time.sleep(0.002)
        open(f"{a}/e{i}", "w").close()
        want = server_dir_attrs(c, "dattr2")
        soon(lambda: dir_attrs(b) == want, f"round {i}: directory attributes after a create")
        os.mkdir(f"{a}/d{i}")
        want = server_dir_attrs(c, "dattr2")
        soon(lambda: dir_attrs(b) == want, f"round {i}: directory attributes after a mkdir")


def test_no_xattrs_answered_by_mount(c):
    """ls -l asks each file for security.selinux and system.posix_acl_access: for a file
    without extended attributes the mount answers itself, also with aqd stopped."""
    a, _ = both(c, "nox")
    open(a, "w").close()
    os.stat(a)
    answers_with_aqd_stopped(c, f"import os\n"
                             f"for n in ('security.selinux', 'system.posix_acl_access'):\n"
                             f"    try: os.getxattr({a!r}, n)\n"
                             f"    except OSError as e: assert e.errno == {errno.ENODATA}, e\n"
                             f"assert os.listxattr({a!r}) == []")


def test_xattr_seen(c):
    """B answers "no attributes" for a file from what it was told; A's setxattr must
    reach it, and so must A's removing the last one. A security.* read makes the kernel
    check no permission, so nothing but the push tells B."""
    a, b = both(c, "xs")
    os.mkdir(a)
    for i in range(ROUNDS // 5):
        f, name = f"{a}/f{i}", ("security.aqtest", "user.k")[i % 2]
        open(f, "w").close()
        soon(lambda: os.path.exists(f"{b}/f{i}"), f"round {i}: create")
        assert os.listxattr(f"{b}/f{i}") == []
        os.setxattr(f, name, b"v%d" % i)

        def has():
            try:
                return os.getxattr(f"{b}/f{i}", name) == b"v%d" % i
            except OSError:
                return False
        soon(has, f"round {i}: setxattr {name}")
        os.removexattr(f, name)
        soon(lambda: not has() and os.listxattr(f"{b}/f{i}") == [], f"round {i}: removexattr")


def test_own_change_beats_an_older_reply(c):
    """A reply that left the server before this mount's own change must not be kept
    after it. A third mount holds every reply 300 ms before keeping it (a test hook):
    a GETATTR's "no xattrs" is held while the same mount sets an xattr (security.*, so
    the kernel asks no GETATTR of its own first); the mount must then find the xattr.
    Before the fix it kept "none" and answered ENODATA for an hour."""
    m3 = extra_mount(c, "mnt3", keep_delay_ms=300)
    a, p = c.path("race"), os.path.join(m3, "race")
    try:
        open(a, "w").close()
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fstat(fd)
            os.chmod(a, 0o640)  # mount A: the push drops mount 3's cached attributes
            time.sleep(0.2)
            t = threading.Thread(target=os.fstat, args=(fd,))
            t.start()  # a GETATTR whose reply ("no xattrs") is held 300 ms
            time.sleep(0.1)
            os.setxattr(p, "security.aqtest", b"v")
            t.join()
            assert os.getxattr(p, "security.aqtest") == b"v"
        finally:
            os.close(fd)
    finally:
        unmount(m3)


def test_open_bytes_stored_after_a_change_go_again(c):
    """A read-only open puts the bytes it brought into the kernel's page cache. When the
    file changed after the server read them, the push's invalidation may reach the kernel
    first and a GETATTR give it the new mtime, so that nothing would ever drop the stale
    pages: the mount must drop them itself. A third mount holds the bytes 600 ms before
    storing them (a test hook); mount A rewrites the file and the third mount's kernel
    learns the new attributes in between."""
    ms = extra_mount(c, "mnt-store", keep_delay_ms=300)
    a, p = c.path("stored-race"), os.path.join(ms, "stored-race")
    old, new = b"a" * 100_000, b"b" * 100_000
    try:
        with open(a, "wb") as f:
            f.write(old)
        os.stat(p)
        got = []
        t = threading.Thread(target=lambda: got.append(os.open(p, os.O_RDONLY)))
        t.start()  # its bytes (old) are held 600 ms before they are stored
        time.sleep(0.15)
        with open(a, "r+b") as f:
            f.write(new)  # the push drops mount 3's attributes
        time.sleep(0.1)
        assert os.stat(p).st_size == len(new)  # a GETATTR: the kernel has the new mtime
        t.join()
        try:
            soon(lambda: os.pread(got[0], len(new) + 1, 0) == new, "the rewritten bytes")
        finally:
            os.close(got[0])
    finally:
        unmount(ms)


def test_own_changes_still_fast_and_right(c):
    """A's own changes are not echoed back to A (its kernel knows them), and nothing
    above made A's view wrong."""
    a, _ = both(c, "own")
    os.mkdir(a)
    for i in range(200):
        with open(f"{a}/f{i}", "w") as f:
            f.write("y" * i)
    assert sorted(os.listdir(a)) == sorted(f"f{i}" for i in range(200))
    assert all(os.stat(f"{a}/f{i}").st_size == i for i in range(200))


def test_free_names_answered_by_mount(c):
    """In a directory A made itself, A knows every name: a lookup of a free name (the one
    before every create) is answered by the mount, also with aqd stopped."""
    a, _ = both(c, "free")
    os.mkdir(a)
    for i in range(20):
        open(f"{a}/f{i}", "w").close()
    answers_with_aqd_stopped(c, f"import os\n"
                             f"for i in range(20, 60):\n"
                             f"    assert not os.path.exists({a!r} + f'/f{{i}}')\n"
                             f"assert os.path.exists({a!r} + '/f3')")


def drop_kernel_entries():
    """Makes the kernel forget its cached entries, so every name is LOOKUPed again."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2")


def test_free_names_after_own_changes(c):
    """Regression guard for the mount's name set: after creates, renames, links, unlinks
    and rmdirs in a directory A made, and with the kernel's entries dropped (so every
    lookup reaches the mount), every name that exists is found and every other is not."""
    a, _ = both(c, "set")
    os.mkdir(a)
    os.mkdir(f"{a}/sub")
    live = {"sub"}
    for i in range(300):
        open(f"{a}/f{i}", "w").close()
        live.add(f"f{i}")
    for i in range(0, 300, 3):
        os.unlink(f"{a}/f{i}")
        live.discard(f"f{i}")
    for i in range(1, 300, 5):
        if f"f{i}" not in live:
            continue
        os.rename(f"{a}/f{i}", f"{a}/r{i}")
        live.discard(f"f{i}")
        live.add(f"r{i}")
    for i in range(2, 300, 7):
        if f"f{i}" in live:
            os.link(f"{a}/f{i}", f"{a}/l{i}")
            live.add(f"l{i}")
    os.mkdir(f"{a}/gone")
    os.rmdir(f"{a}/gone")
    os.rename(f"{a}/sub", f"{a}/sub2")
    live.discard("sub")
    live.add("sub2")
    drop_kernel_entries()
    for n in sorted(live):
        assert os.path.lexists(f"{a}/{n}"), f"{n} exists but the mount says it does not"
    for i in range(300):
        for n in (f"f{i}", f"r{i}", f"l{i}"):
            assert os.path.lexists(f"{a}/{n}") == (n in live), n
    for n in ("sub", "gone"):
        assert not os.path.lexists(f"{a}/{n}"), n
    assert sorted(os.listdir(a)) == sorted(live)


def test_free_names_forgotten_on_others_changes(c):
    """Regression guard: a directory A made stops being answered by A's mount once another
    client adds a name to it (create, mkdir, rename in, link), or A would say "no such
    entry" for an hour."""
    a, b = both(c, "others")
    os.mkdir(a)
    os.mkdir(f"{a}/.keep")  # something of A's own
    for i in range(ROUNDS):
        sub_a, sub_b = f"{a}/d{i}", f"{b}/d{i}"
        os.mkdir(sub_a)             # A knows every name in d{i}
        soon(lambda: os.path.isdir(sub_b), f"round {i}: B sees A's directory")
        how = i % 4
        if how == 0:
            open(f"{sub_b}/x", "w").close()
        elif how == 1:
            os.mkdir(f"{sub_b}/x")
        elif how == 2:
            open(f"{b}/src{i}", "w").close()
            os.rename(f"{b}/src{i}", f"{sub_b}/x")
        else:
            open(f"{b}/src{i}", "w").close()
            os.link(f"{b}/src{i}", f"{sub_b}/x")
        soon(lambda: os.path.lexists(f"{sub_a}/x"), f"round {i}: B's name (way {how}) in A's directory")


def test_heard_ioctl(c):
    """The mount's AQFUSE_IOC_HEARD returns once every push sent before it is applied: on
    a mount that applies each push 20 ms late and takes 40 ms to tell its kernel, names
    it had seen missing show right after the call, though their pushes were still
    queued when it began."""
    m = extra_mount(c, "mnt-heard", push_delay_ms=20)
    try:
        a, b = os.path.join(m, "heard"), c.path("heard")
        os.mkdir(b)
        soon(lambda: os.path.isdir(a), "the late mount sees the directory")
        fd = os.open(a, os.O_RDONLY)
        try:
            heard(fd)  # else a push of the mkdir racing a lookup below makes it go again
            for i in range(30):
                assert not os.path.exists(f"{a}/x{i}")  # A's kernel caches "no such name"
            for i in range(30):
                open(f"{b}/x{i}", "w").close()
            heard(fd)
            assert [i for i in range(30) if not os.path.exists(f"{a}/x{i}")] == []
            # the same for scripts: `aq heard PATH`
            for i in range(30):
                assert not os.path.exists(f"{a}/y{i}")
            for i in range(30):
                open(f"{b}/y{i}", "w").close()
            run(AQ, "heard", a)
            assert [i for i in range(30) if not os.path.exists(f"{a}/y{i}")] == []
            p = run(AQ, "heard", "/proc", check=False)
            assert p.returncode == 1 and "not on an Aquifer mount" in p.stderr, p.stderr
            try:
                fcntl.ioctl(fd, 0x80086601)  # FS_IOC_GETFLAGS: not Aquifer's
                raise AssertionError("an unknown ioctl succeeded")
            except OSError as e:
                assert e.errno == errno.ENOTTY, e
        finally:
            os.close(fd)
    finally:
        unmount(m)


def test_open_file_reads_another_mounts_write_once_pushed(c):
    """Mount A has a big file open and has read from it, so it keeps where the file's
    chunks lie on aqd's disk (local reads) and reads them itself. Mount B rewrites part
    of a chunk and closes. Once A has heard the push, A's next read of the same open file
    returns B's bytes. The old bytes there are zeros: aqd punches the record a rewrite
    replaces, and punched zeros still pass their checks, so only the push (which drops
    the kept locations) can tell A. O_DIRECT keeps A's kernel from answering itself."""
    import mmap
    a, b = both(c, "pushed-big")
    size, at = 12 << 20, 4 << 20  # chunk 1
    data = bytearray(os.urandom(size))
    data[at:at + (64 << 10)] = bytes(64 << 10)
    with open(b, "wb") as f:
        f.write(data)
    soon(lambda: os.path.exists(a) and os.path.getsize(a) == size, "A sees the file whole")
    buf = mmap.mmap(-1, 4096)
    fd = os.open(a, os.O_RDONLY | os.O_DIRECT)
    try:
        assert os.preadv(fd, [buf], at) == 4096 and buf[:] == data[at:at + 4096]
        with open(b, "r+b") as f:
            f.seek(at)
            f.write(b"from mount B")
        heard(fd)
        assert os.preadv(fd, [buf], at) == 4096 and buf[:12] == b"from mount B", \
            f"A read {buf[:12]!r} after hearing B's write"
    finally:
        os.close(fd)


def statahead_dir(c, name, n=200, a_mnt=None, before_listing=None):
    """A directory of n files made by mount B (f{i}: i bytes of "x"), whose entries mount
    A (c's first mount, or the one at a_mnt) then looks up often enough (with its kernel's
    entries dropped) that A lists it once and keeps the set. A has applied the pushes for
    B's files before: one heard late would take its name out of the set. before_listing(b)
    runs once A sees the files, before its lookups."""
    a, b = both(c, name)
    if a_mnt:
        a = os.path.join(a_mnt, name)
    os.mkdir(b)
    for i in range(n):
        with open(f"{b}/f{i}", "wb") as f:
            f.write(b"x" * i)
    soon(lambda: os.path.exists(f"{a}/f{n - 1}"), "A sees B's files")
    if before_listing:
        before_listing(b)
    c.pinned = os.open(a, os.O_RDONLY)  # keeps the directory's own entry in A's kernel
    heard(c.pinned)
    drop_kernel_entries()
    for i in range(100):
        assert os.stat(f"{a}/f{i}").st_size == i
    time.sleep(1)  # the listing runs on a thread of A's mount
    drop_kernel_entries()
    return a, b


def listed_names_answered(c, a):
    """With aqd stopped, A's mount answers a stat of every file statahead_dir made."""
    try:
        answers_with_aqd_stopped(c, f"import os\n"
                                 f"for i in range(200):\n"
                                 f"    print(i, flush=True)\n"
                                 f"    assert os.stat({a!r} + f'/f{{i}}').st_size == i, i")
    finally:
        os.close(c.pinned)


def test_statahead_answers_lookups(c):
    """After a run of lookups in one directory, the mount lists it once and answers the
    lookups of its names itself: with aqd stopped and the kernel's entries dropped, A
    still finds every file, with its size."""
    a, _ = statahead_dir(c, "sa")
    listed_names_answered(c, a)


def test_statahead_opens_read_where_the_bytes_lie(c):
    """Once A's mount has listed a directory (statahead), it also knows where each small
    file's bytes lie on this machine's disk, and a read-only open of one reads them from
    aqd's segment file itself, asking aqd nothing: with aqd stopped and the kernel's
    entries and pages dropped, A opens and reads every file, each byte right, and a read
    after the page cache let a file's bytes go (its first open) is answered from what
    the open read. Such a read still counts as one (relatime sets the atime, as aqd's own
    reads do), and the listing's locating of a file that is never read does not. A file B rewrites in place afterwards reads as its new bytes as soon as A
    has heard of it, though the record located still holds the old ones for a while: the
    push took the location out with the entry; so does one A rewrites itself, read
    without a lookup (A's write takes the file's entry out). And a descriptor whose file B
    unlinks keeps the bytes it read and answers fstat (nlink 0) and fsync after aqd freed
    the file (its open never reached aqd), as on ext4."""
    import aquifer
    old = 10**9  # 1970: more than a day before any read

    def attr_atime(name):
        with aquifer.connect(c.conf) as cl:
            return cl.stat(f"/sr/{name}").st_atime_ns

    def relist():
        drop_kernel_entries()
        for i in range(100):
            os.stat(f"{a}/f{i + 10}")
        time.sleep(1)  # the listing runs on a thread of A's mount
        drop_kernel_entries()

    def old_atimes(b):
        for name in ("f9", "f199"):
            os.utime(f"{b}/{name}", ns=(old, time.time_ns()))

    a, b = statahead_dir(c, "sr", before_listing=old_atimes)
    try:
        runs_while_stopped(c.pid(), f"import os\n"
                                    f"for i in range(1, 200):\n"
                                    f"    if i in (150, 199):\n"
                                    f"        continue\n"
                                    f"    print(i, flush=True)\n"
                                    f"    with open({a!r} + f'/f{{i}}', 'rb') as f:\n"
                                    f"        assert f.read() == b'x' * i, i\n"
                                    f"fd = os.open({a!r} + '/f150', os.O_RDONLY)\n"
                                    f"assert os.pread(fd, 200, 0) == b'x' * 150\n"
                                    f"os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)\n"
                                    f"assert os.pread(fd, 200, 0) == b'x' * 150\n"
                                    f"os.close(fd)\n",
                           "a read-only open of a located file waited for the stopped aqd")
        deadline = time.monotonic() + 10
        while attr_atime("f9") == old:
            assert time.monotonic() < deadline, "a read from a location set no atime"
            time.sleep(0.1)
        assert attr_atime("f199") == old, "locating a file the listing found counted as its read"

        relist()
        with open(f"{b}/f5", "r+b") as f:
            f.write(b"y" * 5)
        heard(c.pinned)
        drop_kernel_entries()
        assert read(f"{a}/f5") == b"y" * 5

        relist()
        with open(f"{a}/f120", "r+b") as f:  # the kernel keeps its entry from here on
            f.write(b"z" * 120)
        assert read(f"{a}/f120") == b"z" * 120  # an open without a lookup

        relist()
        fd = os.open(f"{a}/f130", os.O_RDONLY)
        try:
            os.unlink(f"{b}/f130")
            soon(lambda: not os.path.exists(f"{a}/f130"), "B's unlink")
            time.sleep(2.5)  # aqd's collector frees an orphan nobody holds open each second
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.pread(fd, 200, 0) == b"x" * 130
            st = os.fstat(fd)
            assert (st.st_nlink, st.st_size) == (0, 130), (st.st_nlink, st.st_size)
            os.fsync(fd)  # nothing to sync: it succeeds, as on ext4
        finally:
            os.close(fd)
    finally:
        os.close(c.pinned)


def test_statahead_holds_many_directories(c):
    """A dataset in class directories read in one random order (ImageNet's layout: no
    directory draws a run of lookups of its own): each directory's lookups are counted
    apart, and the mount holds the listings of all of them at once. With aqd stopped and
    the kernel's entries dropped, A finds every file of every directory and opens and
    reads each from where its bytes lie. Statahead held one directory before, listed
    after a run of lookups in it alone: this layout got none."""
    import random
    a, b = both(c, "classes")
    os.mkdir(b)
    ndirs, nfiles = 6, 100
    for d in range(ndirs):
        os.mkdir(f"{b}/c{d}")
        for i in range(nfiles):
            with open(f"{b}/c{d}/f{i}", "wb") as f:
                f.write(bytes([65 + d]) * (i + 1))
    soon(lambda: all(os.path.exists(f"{a}/c{d}/f{nfiles - 1}") for d in range(ndirs)), "A sees B's files")
    pins = [os.open(f"{a}/c{d}", os.O_RDONLY) for d in range(ndirs)]  # the directories stay in A's kernel
    try:
        for fd in pins:
            heard(fd)
        names = [(d, i) for d in range(ndirs) for i in range(nfiles)]
        for _ in range(3):  # one listing runs at a time: a directory past its count waits for the next
            drop_kernel_entries()
            random.shuffle(names)
            for d, i in names:
                assert os.stat(f"{a}/c{d}/f{i}").st_size == i + 1
            time.sleep(0.5)
        drop_kernel_entries()
        answers_with_aqd_stopped(c, f"import os, random\n"
                                    f"names = [(d, i) for d in range({ndirs}) for i in range({nfiles})]\n"
                                    f"random.shuffle(names)\n"
                                    f"for d, i in names:\n"
                                    f"    print(d, i, flush=True)\n"
                                    f"    with open({a!r} + f'/c{{d}}/f{{i}}', 'rb') as f:\n"
                                    f"        assert f.read() == bytes([65 + d]) * (i + 1), (d, i)\n")
    finally:
        for fd in pins:
            os.close(fd)


def test_statahead_drops_and_lists_again_right(c):
    """With room for fewer entries than the directories read hold (a mount that keeps
    250: two directories of 100 at a time) and fewer directory records than directories
    (five for six: a record is taken over now and then), listings are dropped and made
    again over and over, and the table rebuilt, while B unlinks, renames and rewrites
    files between rounds. Every answer A gives is right: no entry of a dropped listing
    comes back."""
    import random
    m3 = extra_mount(c, "mnt-small", ecache_max=250, ec_dirs=5)
    pins = []
    try:
        a, b = os.path.join(m3, "sa-small"), os.path.join(c.mnt2, "sa-small")
        os.mkdir(b)
        model, gone = {}, set()
        for d in range(6):
            os.mkdir(f"{b}/c{d}")
            for i in range(100):
                with open(f"{b}/c{d}/f{i}", "wb") as f:
                    f.write(b"x" * i)
                model[f"c{d}/f{i}"] = i
        soon(lambda: all(os.path.exists(f"{a}/c{d}/f99") for d in range(6)), "A sees B's files")
        pins = [os.open(f"{a}/c{d}", os.O_RDONLY) for d in range(6)]
        rng = random.Random(7)
        for rnd in range(5):
            for fd in pins:
                heard(fd)
            drop_kernel_entries()
            names = sorted(set(model) | gone)
            rng.shuffle(names)
            for name in names:
                want = model.get(name)
                try:
                    got = os.stat(f"{a}/{name}").st_size
                except FileNotFoundError:
                    got = None
                assert got == want, f"round {rnd}: {name} is {got} on A, {want} on B"
            for d in range(6):  # B's changes, each in a directory A may hold or have dropped
                present = sorted(n for n in model if n.startswith(f"c{d}/"))
                for name in rng.sample(present, 9):
                    op = rng.randrange(3)
                    if op == 0:
                        os.unlink(f"{b}/{name}")
                        del model[name]
                        gone.add(name)
                    elif op == 1:
                        new = f"{name}.r{rnd}"
                        os.rename(f"{b}/{name}", f"{b}/{new}")
                        model[new] = model.pop(name)
                        gone.add(name)
                    else:
                        size = rng.randrange(200, 300)
                        with open(f"{b}/{name}", "wb") as f:
                            f.write(b"y" * size)
                        model[name] = size
    finally:
        for fd in pins:
            os.close(fd)
        unmount(m3)


def test_statahead_stands_through_own_writes(c):
    """A training job writes its log and checkpoints through the mount it reads its
    dataset from: such writes take out the entries of the files they change, and the
    listing stands. After A makes a directory, appends to a log there, creates and
    writes a checkpoint, truncates it, and rewrites one file of the listed directory,
    with aqd stopped and the kernel's entries dropped A still answers every other name
    of the listing; the file it rewrote shows its new size once aqd is back. Every change
    of A's own dropped every listing before."""
    a, _ = statahead_dir(c, "sw")
    try:
        logs = c.path("sw-logs")
        os.mkdir(logs)
        with open(f"{logs}/log", "a") as f:
            f.write("step 1\n")
        with open(f"{logs}/ckpt-1", "wb") as f:
            f.write(b"c" * 5000)
        os.truncate(f"{logs}/ckpt-1", 4000)
        with open(f"{a}/f7", "r+b") as f:
            f.write(b"z" * 50)
        drop_kernel_entries()
        answers_with_aqd_stopped(c, f"import os\n"
                                    f"for i in range(200):\n"
                                    f"    if i != 7:\n"
                                    f"        print(i, flush=True)\n"
                                    f"        assert os.stat({a!r} + f'/f{{i}}').st_size == i, i")
    finally:
        os.close(c.pinned)
    drop_kernel_entries()
    assert os.stat(f"{a}/f7").st_size == 50
    assert os.stat(f"{logs}/ckpt-1").st_size == 4000


def test_statahead_entry_of_a_directory_this_mount_creates_in(c):
    """A create of this mount's own changes its parent (times; a mkdir, its link count),
    whose entry a listing of the grandparent may hold: the create takes that entry out,
    so a lookup after the kernel's entries were dropped shows the new link count, not
    the listed one."""
    a, b = both(c, "sp")
    os.mkdir(b)
    for i in range(100):
        os.mkdir(f"{b}/d{i}")
    soon(lambda: os.path.exists(f"{a}/d99"), "A sees B's directories")
    pinned = os.open(a, os.O_RDONLY)
    try:
        heard(pinned)
        drop_kernel_entries()
        for i in range(100):
            assert os.stat(f"{a}/d{i}").st_nlink == 2
        time.sleep(1)  # the listing runs on a thread of A's mount
        os.mkdir(f"{a}/d5/new")
        drop_kernel_entries()
        assert os.stat(f"{a}/d5").st_nlink == 3
        assert os.stat(f"{a}/d6").st_nlink == 2
    finally:
        os.close(pinned)


def test_statahead_open_sees_this_mounts_unflushed_writes(c):
    """A file this mount holds open for writing, with bytes written but not yet sent to
    aqd (the client buffers them until a flush), is not opened from its location: its
    record on disk holds the old bytes, and storing them would also have put them over
    the new ones in the kernel's page cache. A process that opens it after the
    directory was listed reads what was written, as on ext4, and so does the writer."""
    fds = []

    def write_unflushed(b):
        a = c.path("su")
        fd = os.open(f"{a}/f50", os.O_WRONLY)
        fds.append(fd)
        assert os.pwrite(fd, b"NEW", 0) == 3

    a, _ = statahead_dir(c, "su", before_listing=write_unflushed)
    try:
        os.posix_fadvise(fds[0], 0, 0, os.POSIX_FADV_DONTNEED)
        assert read(f"{a}/f50") == b"NEW" + b"x" * 47
        assert read(f"{a}/f51") == b"x" * 51
    finally:
        os.close(fds[0])
        os.close(c.pinned)
    assert read(f"{a}/f50") == b"NEW" + b"x" * 47


def test_a_directory_that_churns_does_not_slow_statahead_elsewhere(c):
    """A directory whose listing is dropped before it pays for itself (it changed under
    the listing) waits for four times as many lookups before the next one: that
    directory alone. It was every directory, for the rest of the mount's life, so one
    busy directory turned statahead off everywhere."""
    x = c.path("churns")
    os.mkdir(x)
    for i in range(300):
        open(f"{x}/f{i}", "w").close()
    drop_kernel_entries()
    for i in range(300):  # lookups that reach aqd, each followed by a change of this mount's
        os.stat(f"{x}/f{i}")
        os.rename(f"{x}/f{i}", f"{x}/g{i}")
    a, _ = statahead_dir(c, "after_churn")
    listed_names_answered(c, a)


def test_statahead_survives_ingest(c):
    """New files that another client adds to the directory while A reads it through (an
    ingest pipeline beside a training job) take nothing out of A's set: with aqd stopped
    and the kernel's entries dropped, A still finds every file it listed, and then the
    new ones once aqd is back. A is a mount that applies every push 2 ms late: a push
    for a new name drops the directory's attributes, so A waits until it has heard them
    all and asks for the attributes once more (before this, a late push made the test
    fail now and then)."""
    m3 = extra_mount(c, "mnt-late", push_delay_ms=2)
    try:
        a, b = statahead_dir(c, "si", a_mnt=m3)
        for i in range(50):
            with open(f"{b}/new{i}", "wb") as f:
                f.write(b"y")
        soon(lambda: os.path.exists(f"{a}/new49"), "A sees B's new files")
        heard(c.pinned)
        os.stat(m3)
        os.stat(a)
        drop_kernel_entries()
        listed_names_answered(c, a)
        for i in range(50):
            assert os.stat(f"{a}/new{i}").st_size == 1
    finally:
        unmount(m3)


def test_statahead_follows_changes(c):
    """Regression guard for the statahead set: what B changes in the directory after A
    listed it (unlink, rename, a write that changes the size, a new file) and what A
    writes itself show on A, with A's kernel entries dropped so each lookup reaches the
    set: a change pushed by a server, or a write of A's own, takes out what it changed."""
    a, b = statahead_dir(c, "sb")
    os.unlink(f"{b}/f1")
    os.rename(f"{b}/f2", f"{b}/g2")
    with open(f"{b}/f3", "ab") as f:
        f.write(b"more")
    open(f"{b}/new", "w").close()

    def looks_right():
        drop_kernel_entries()
        return (not os.path.exists(f"{a}/f1") and not os.path.exists(f"{a}/f2") and
                os.path.exists(f"{a}/g2") and os.stat(f"{a}/f3").st_size == 7 and os.path.exists(f"{a}/new"))
    soon(looks_right, "B's changes in a directory A's mount had listed")
    # the set again, then a change of A's own
    for i in range(100):
        os.stat(f"{a}/f{i + 4}")
    time.sleep(1)
    with open(f"{a}/f5", "ab") as f:
        f.write(b"12345")
    drop_kernel_entries()
    assert os.stat(f"{a}/f5").st_size == 10
    os.close(c.pinned)


def test_restart_keeps_mounts_working(c):
    a, b = both(c, "rs")
    os.mkdir(a)
    c.kill9()
    c.restart()
    time.sleep(0.5)  # each mount's watching connection comes back within 50 ms
    deadline = time.time() + 30
    while True:
        try:
            with open(f"{a}/after", "w") as f:
                f.write("ok")
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.2)
    soon(lambda: read(f"{b}/after") == b"ok", "a file created after the restart")
    os.unlink(f"{a}/after")
    soon(lambda: not os.path.exists(f"{b}/after"), "a file unlinked after the restart")


def test_a_kept_listing_is_dropped_after_a_reconnection(c):
    """Pushes sent while a mount's watching connection was down are lost, so after the
    connection comes back, the first listing of a directory goes to aqd again instead of
    answering from what the kernel kept (a change made in the gap would stay hidden for
    the hour attributes are kept); the one after it is kept again."""
    a, _ = both(c, "relist")
    os.mkdir(a)
    open(f"{a}/x", "w").close()
    os.listdir(a)
    answers_with_aqd_stopped(c, f"import os; os.listdir({a!r})")  # kept
    c.kill9()
    c.restart()
    time.sleep(0.5)  # the watching connection comes back within 50 ms
    os.stat(f"{a}/x")
    pid = c.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        p = subprocess.Popen([sys.executable, "-c", f"import os; print(os.listdir({a!r}))"],
                             stdout=subprocess.PIPE)
        time.sleep(1)
        waited = p.poll() is None
    finally:
        os.kill(pid, signal.SIGCONT)
    out, _ = p.communicate(timeout=30)
    assert waited, f"the first listing after the reconnection answered from the kernel's copy: {out!r}"
    assert b"'x'" in out
    os.listdir(a)  # a reply that began before a connection came back may cost one GETATTR more
    answers_with_aqd_stopped(c, f"import os; os.listdir({a!r})")  # kept again


if __name__ == "__main__":
    main(globals(), setup)

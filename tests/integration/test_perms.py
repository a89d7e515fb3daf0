"""Permission checks for a non-root user, with a real second uid (nobody, 65534) acting
through the mount in a child process."""
import errno
import os

from aqtest import NOBODY, ROOT, Cluster, main, run, run_as


def as_user(code, uid=NOBODY, gid=NOBODY, groups=()):
    """Runs python code as uid/gid; returns the errno it reports (0 on success)."""
    prog = ("import os, errno, sys\n"
            "try:\n" + "".join("    " + l + "\n" for l in code.strip().splitlines()) +
            "    print(0)\n"
            "except OSError as e:\n    print(e.errno)\n")
    p = run_as(prog, uid, gid, groups)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.strip().splitlines()[-1])


def open_dir(c, name):
    """A new directory on the mount that anyone may work in (mode 0777); its path."""
    d = c.path(name)
    os.mkdir(d)
    os.chmod(d, 0o777)
    return d


def setup():
    c = Cluster()
    os.chmod(c.mnt, 0o755)
    return c


def test_other_cannot_create_in_root_dir(c):
    assert as_user(f"open('{c.path('nope')}', 'w')") == errno.EACCES


def test_other_cannot_read_private_file(c):
    p = c.path("private")
    with open(p, "w") as f:
        f.write("secret")
    os.chmod(p, 0o600)
    assert as_user(f"open('{p}').read()") == errno.EACCES
    os.chmod(p, 0o644)
    assert as_user(f"open('{p}').read()") == 0
    assert as_user(f"open('{p}', 'a')") == errno.EACCES


def test_other_can_work_in_open_dir(c):
    d = open_dir(c, "pub")
    assert as_user(f"open('{d}/mine', 'w').write('x')") == 0
    st = os.stat(f"{d}/mine")
    assert st.st_uid == NOBODY and st.st_gid == NOBODY
    assert as_user(f"os.chmod('{d}/mine', 0o600)") == 0
    assert as_user(f"os.unlink('{d}/mine')") == 0


def test_create_with_readonly_mode(c):
    """open(O_CREAT|O_WRONLY, 0444) of a new file succeeds for its creator, and the
    descriptor writes (POSIX: the mode applies to later opens). Regression: create used to
    open the new file in a second request, which checked the 0444 mode and said EACCES."""
    d = open_dir(c, "romode")
    code = (f"fd = os.open('{d}/ro', os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o444)\n"
            "os.write(fd, b'hi')\nos.close(fd)")
    assert as_user(code) == 0
    assert open(f"{d}/ro").read() == "hi"
    assert os.stat(f"{d}/ro").st_mode & 0o777 == 0o444
    assert as_user(f"open('{d}/ro', 'w')") == errno.EACCES  # a later open is checked


def test_sticky_dir(c):
    d = c.path("sticky")
    os.mkdir(d)
    os.chmod(d, 0o1777)
    with open(f"{d}/roots", "w") as f:
        f.write("x")
    os.chmod(f"{d}/roots", 0o666)
    rc = as_user(f"os.unlink('{d}/roots')")
    assert rc in (errno.EPERM, errno.EACCES), rc
    assert os.path.exists(f"{d}/roots")


def test_chmod_chown_by_non_owner(c):
    p = c.path("owned-by-root")
    open(p, "w").close()
    os.chmod(p, 0o666)
    assert as_user(f"os.chmod('{p}', 0o777)") == errno.EPERM
    assert as_user(f"os.chown('{p}', {NOBODY}, {NOBODY})") == errno.EPERM
    assert as_user(f"os.utime('{p}', (1, 1))") == errno.EPERM
    assert as_user(f"os.utime('{p}', None)") == 0  # write permission suffices for "now"


def test_write_by_non_owner_drops_setuid(c):
    """Regression: a write or truncate by someone who may write the file but does not own
    it failed with EPERM on a setuid file, because the kernel first asks, as that user,
    for the mode without the setuid and setgid bits. As on ext4 the write succeeds and
    the bits are gone; other mode changes by that user are still refused."""
    for name, code in (("suid-write", "fd = os.open(P, os.O_WRONLY); os.write(fd, b'x'); os.close(fd)"),
                       ("suid-trunc", "os.truncate(P, 3)")):
        p = c.path(name)
        open(p, "w").close()
        os.chmod(p, 0o6777)
        assert as_user(f"os.chmod('{p}', 0o6775)") == errno.EPERM  # not just the two bits
        assert as_user(code.replace("P", repr(p))) == 0
        mode = os.stat(p).st_mode & 0o7777
        assert mode == 0o777, oct(mode)
        assert as_user(f"os.chmod('{p}', 0o777)") == errno.EPERM  # nothing left to drop
    os.chmod(p, 0o6755)  # no write permission: no bits dropped either
    assert as_user(f"os.chmod('{p}', 0o755)") == errno.EPERM


# What drops setuid and setgid, each case run on the mount and on the local ext4 beside
# it: (name, mode, who, what). The mount takes FUSE_HANDLE_KILLPRIV_V2 (src/fuse/devio.c),
# so these bits are the mount's and aqd's to drop, no longer the kernel's.
WRITE = "fd = os.open(P, os.O_WRONLY); os.write(fd, b'x'); os.close(fd)"
SXID_CASES = [
    ("write 4777", 0o4777, "nobody", WRITE),
    ("write 2777", 0o2777, "nobody", WRITE),
    ("write 6777", 0o6777, "nobody", WRITE),
    ("write 2767 (setgid, no group exec)", 0o2767, "nobody", WRITE),
    ("write 4767", 0o4767, "nobody", WRITE),
    ("write 2767 by a member of its group", 0o2767, "member", WRITE),
    ("truncate of 2767 by a member of its group", 0o2767, "member", "os.truncate(P, 0)"),
    ("write by root", 0o6777, "root", WRITE),
    ("O_TRUNC of an empty file", 0o4777, "nobody", "os.close(os.open(P, os.O_WRONLY | os.O_TRUNC))"),
    ("truncate to its size", 0o4777, "nobody", "os.truncate(P, 0)"),
    ("fallocate", 0o4777, "nobody",
     "fd = os.open(P, os.O_WRONLY); os.posix_fallocate(fd, 0, 4096); os.close(fd)"),
    ("chown to the same owner", 0o4777, "root", "os.chown(P, 0, 0)"),
    ("chmod", 0o4777, "root", "os.chmod(P, 0o4775)"),
    # xfstests generic/683: inside the file, so the size does not change. Regression: aqd
    # dropped the bits, but the kernel kept the mode it had cached (a fallocate makes it
    # fetch only size and times again), so `stat -c %a` still showed them
    ("fallocate inside", 0o6666, "nobody",
     "fd = os.open(P, os.O_RDWR); os.posix_fallocate(fd, 4096, 4096); os.close(fd)  # inside"),
]


def sxid_case(d, i, mode, who, code):
    p = f"{d}/sx{i}"
    with open(p, "w") as f:
        f.write("x" * 16384 if "inside" in code else "")
    os.chown(p, 0, 4242)  # a group nobody is in, but as "member" (a supplementary group)
    os.chmod(p, mode)
    code = code.replace("P", repr(p))
    if who == "root":
        exec(code)
    else:
        assert as_user(code, groups=(4242,) if who == "member" else ()) == 0, code
    # the mode alone (statx for STATX_MODE): what the kernel has cached, not refreshed
    # for a size or time it knows it lacks
    return int(run("stat", "-c", "%a", p).stdout, 8)


def held_open_write(p):
    """nobody opens p and writes (a file with no setuid yet), root then sets setuid, and
    nobody writes again through the same descriptor; p's mode after."""
    os.chmod(p, 0o666)
    go, went = os.pipe(), os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            fd = os.open(p, os.O_WRONLY)
            os.write(fd, b"a")
            os.write(went[1], b"1")
            os.read(go[0], 1)
            os.write(fd, b"b")
            os.close(fd)
            os._exit(0)
        except BaseException:
            os._exit(1)
    assert os.read(went[0], 1) == b"1"
    os.chmod(p, 0o4777)
    os.write(go[1], b"1")
    assert os.waitpid(pid, 0)[1] == 0
    for fd in go + went:
        os.close(fd)
    return os.stat(p).st_mode & 0o7777


def test_setuid_and_setgid_drop_as_on_ext4(c):
    """Each way a file loses its setuid and setgid bits on ext4 loses them on the mount,
    and the ways that keep them (root writing, chmod) keep them: the same operations on a
    local directory and on the mount give the same modes (test_meta's kill_sxid has the
    group member who keeps a setgid without group exec). Plus a descriptor opened before the bits were set: its next write drops them
    (the kernel stopped asking about such a file once it had none, S_NOSEC)."""
    import tempfile
    d = open_dir(c, "sxid")
    with tempfile.TemporaryDirectory(dir="/tmp") as local:
        os.chmod(local, 0o777)
        for i, (name, mode, who, code) in enumerate(SXID_CASES):
            want, got = sxid_case(local, i, mode, who, code), sxid_case(d, i, mode, who, code)
            assert got == want, f"{name}: {oct(mode)} -> {oct(got)} on the mount, {oct(want)} on ext4"
        open(f"{local}/held", "w").close()
        open(f"{d}/held", "w").close()
        assert held_open_write(f"{local}/held") == 0o777
        assert held_open_write(f"{d}/held") == 0o777
    assert sxid_case(d, 99, 0o4777, "nobody", WRITE) == 0o777  # not just "as ext4"
    # and the writer's own fstat right after the write says so (pjdfstest chmod/12.t)
    p = f"{d}/fstat"
    open(p, "w").close()
    os.chmod(p, 0o6777)
    r = run_as(f"import os; fd = os.open({p!r}, os.O_RDWR); os.write(fd, b'x'); "
               f"print(oct(os.fstat(fd).st_mode & 0o7777))")
    assert r.returncode == 0 and r.stdout.strip() == "0o777", (r.stdout, r.stderr)


def test_capabilities_drop_as_on_ext4(c):
    """Regression: a write by someone other than root to a file with file capabilities
    (security.capability, as setcap sets) failed with EIO: the kernel drops them before
    the write by removing the attribute as the writer, and aqd refused that to anyone
    but root. As on ext4 a write, truncate or fallocate by anyone who may write the file
    drops them; removexattr(2) itself still needs CAP_SETFCAP."""
    import struct
    import tempfile
    cap = struct.pack("<5I", 0x02000000, 0x400, 0, 0, 0)  # v2, cap_net_bind_service
    cases = [("write", "fd = os.open(PATH, os.O_WRONLY | os.O_APPEND); os.write(fd, b'x'); os.close(fd)"),
             ("truncate", "os.truncate(PATH, 1)"),
             ("fallocate", "fd = os.open(PATH, os.O_WRONLY); os.posix_fallocate(fd, 0, 8192); os.close(fd)"),
             ("removexattr", "os.removexattr(PATH, 'security.capability')")]
    d = open_dir(c, "caps")
    with tempfile.TemporaryDirectory(dir="/tmp") as local:
        os.chmod(local, 0o777)
        for name, code in cases:
            got = {}
            for where in (local, d):
                p = f"{where}/{name}"
                open(p, "w").close()
                os.chmod(p, 0o777)
                os.setxattr(p, "security.capability", cap)
                err = as_user(code.replace("PATH", repr(p)))
                got[where] = (err, "security.capability" in os.listxattr(p))
            assert got[d] == got[local], f"{name}: {got[d]} on the mount, {got[local]} on ext4"
    assert got[d] == (errno.EPERM, True)  # the last case: not just "as ext4"


def test_supplementary_groups(c):
    """Access through a supplementary group: the server learns the groups only when it
    refused without them (the FUSE adapter retries once with them)."""
    d = c.path("grpdir")
    os.mkdir(d)
    os.chown(d, 0, 4242)
    os.chmod(d, 0o770)
    with open(f"{d}/f", "w") as f:
        f.write("members only")
    os.chown(f"{d}/f", 0, 4242)
    os.chmod(f"{d}/f", 0o640)
    assert as_user(f"open('{d}/f').read()") == errno.EACCES
    assert as_user(f"open('{d}/f').read()", groups=(4242,)) == 0
    assert as_user(f"open('{d}/new', 'w').write('x')", groups=(4242,)) == 0
    assert as_user(f"open('{d}/f', 'a')", groups=(4242,)) == errno.EACCES


def test_no_search_permission(c):
    d = c.path("closed")
    os.mkdir(d)
    open(f"{d}/inner", "w").close()
    os.chmod(d, 0o700)
    assert as_user(f"os.stat('{d}/inner')") == errno.EACCES
    assert as_user(f"os.listdir('{d}')") == errno.EACCES


def test_server_checks_too(c):
    """The server refuses on its own, not only the kernel: a native client with nobody's
    credentials asks directly."""
    p = c.path("srvcheck")
    open(p, "w").close()
    os.chmod(p, 0o600)
    code = ("import ctypes, os\n"
            f"lib = ctypes.CDLL('{ROOT}/lib/libaq.so')\n"
            "cl = ctypes.c_void_p()\n"
            "assert lib.aq_connect(None, ctypes.byref(cl)) == 0\n"
            "f = ctypes.c_void_p()\n"
            "print(lib.aq_open(cl, b'/srvcheck', os.O_RDONLY, 0, ctypes.byref(f)))\n")
    p = run_as(code, cluster=c)  # nobody may read the cluster file for this check only
    assert p.returncode == 0, p.stderr
    assert int(p.stdout.strip()) == -errno.EACCES, p.stdout


def test_an_execute_only_program_runs(c):
    """xfstests generic/126: a program with x but not r for its user runs, as on ext4,
    and still cannot be read. Regression: the kernel opens it for exec, but aqd checked
    read permission when the first page was fetched, so the READ failed and the program
    died of SIGSEGV once the page cache no longer held it."""
    import shutil
    p = c.path("xonly")
    shutil.copy("/bin/true", p)
    os.chmod(p, 0o711)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")
    r = run_as(f"import os; os.execv({p!r}, [{p!r}])")
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert as_user(f"open('{p}', 'rb').read(1)") == errno.EACCES


def test_ftruncate_needs_no_write_permission(c):
    """A descriptor open for writing truncates whatever the file's mode says now: the open
    checked write permission (pjdfstest ftruncate/00.t: nobody creates a file with mode 0
    O_RDWR and ftruncates it). Regression: aqd checked the mode again and said EACCES.
    truncate(2) by path still needs write permission."""
    d = open_dir(c, "ftrunc")
    code = (f"fd = os.open('{d}/f', os.O_CREAT | os.O_RDWR, 0)\n"
            "os.ftruncate(fd, 0)\nos.write(fd, b'abc')\nos.ftruncate(fd, 10)\nos.close(fd)")
    assert as_user(code) == 0
    st = os.stat(f"{d}/f")
    assert st.st_size == 10 and st.st_mode & 0o7777 == 0, st
    assert as_user(f"os.truncate('{d}/f', 1)") == errno.EACCES
    with open(f"{d}/f", "rb") as f:
        assert f.read() == b"abc" + bytes(7)


if __name__ == "__main__":
    main(globals(), setup=setup)

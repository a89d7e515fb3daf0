"""POSIX ACLs through the mount, with ext4 (or whatever holds the test's own directory)
as the oracle: the same setfacl, chmod, umask and create steps on both must leave the
same ACLs and modes. Enforcement is checked as a real second uid, through the kernel
and against aqd alone (a native client)."""
import errno
import os
import shutil
import struct
import subprocess
import tempfile

from aqtest import AQ, NOBODY, ROOT, Cluster, expect_errno, heard, main, run, run_as, unmount

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
UNDEF = 0xFFFFFFFF


def acl_bytes(*entries):
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


# What each side runs, in its own directory: files and directories made under default
# ACLs with two umasks, ACLs set, narrowed by chmod, made minimal, removed.
STEPS = r"""
set -e
umask 022
touch f; setfacl -m u:nobody:rw,g:daemon:r f; chmod 640 f
touch plain; chmod 751 plain
touch minimal; setfacl -m u::rwx,g::r,o::- minimal
touch gone; setfacl -m u:nobody:r gone; setfacl -b gone
mkdir d; setfacl -d -m u:nobody:rwx,g::rx,o::- d; setfacl -m u:daemon:x d
umask 077
touch d/f; mkdir d/sub; touch d/sub/f; mkfifo d/p; ln -s f d/l
python3 -c "import os; os.close(os.open('d/f600', os.O_CREAT | os.O_WRONLY, 0o600))"
mkdir -m 0750 d/m750
umask 027
touch u027; mkdir u027d
mkdir k; setfacl -d -m u:nobody:r k; setfacl -k k
setfacl -x u:nobody d/sub/f
chmod 2775 d/sub
"""


def snapshot(top):
    """Each entry's mode, its ACLs as getfacl prints them (numeric ids) and whether an ACL
    is stored at all (an ACL the mode says whole is not)."""
    out = []
    for dirpath, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted(dirs + files):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, top)
            st = os.lstat(p)
            if os.path.islink(p):
                out.append(f"{rel} link")
                continue
            stored = sorted(n for n in os.listxattr(p) if n.startswith("system.posix_acl"))
            facl = subprocess.run(["getfacl", "-n", "--omit-header", name], cwd=dirpath, capture_output=True,
                                  text=True, check=True).stdout.strip().replace("\n", " | ")
            out.append(f"{rel} {oct(st.st_mode)} {stored} {facl}")
    return out


def test_acls_match_a_local_file_system(c):
    local = tempfile.mkdtemp(prefix="acl.", dir=c.base)
    mine = c.path("acl-steps")
    os.mkdir(mine)
    for d in (local, mine):
        run("sh", "-c", STEPS, cwd=d)
    want, got = snapshot(local), snapshot(mine)
    diff = [f"local: {w}\n mine: {g}" for w, g in zip(want, got) if w != g]
    assert not diff and len(want) == len(got), "\n".join(diff) or (want, got)
    assert len(want) == 15, want
    # the steps did what they say (the oracle could agree with a mount that ignored them)
    assert any("user:65534:rwx" in line and line.startswith("d/f ") for line in got), got
    assert any(line.startswith("minimal 0o100740 [] ") for line in got), got
    shutil.rmtree(local)


def as_nobody(code, groups=()):
    prog = ("import os, errno\ntry:\n" + "".join("    " + ln + "\n" for ln in code.strip().splitlines()) +
            "    print(0)\nexcept OSError as e:\n    print(e.errno)\n")
    p = run_as(prog, groups=groups)
    assert p.returncode == 0, p.stderr
    return int(p.stdout.strip().splitlines()[-1])


def test_an_acl_grants_and_takes_away(c):
    """A named entry gives nobody what the mode does not (the kernel checks it, and so does
    aqd on OPEN); the mask narrows it; removing it takes it away; a directory's ACL lets
    nobody list and enter. A group entry works through a supplementary group."""
    d = c.path("grant")
    os.mkdir(d, 0o700)
    f = os.path.join(d, "f")
    with open(f, "w") as fh:
        fh.write("secret")
    os.chmod(f, 0o600)
    assert as_nobody(f"open('{f}').read()") == errno.EACCES
    run("setfacl", "-m", "u:nobody:x", d)
    run("setfacl", "-m", "u:nobody:r", f)
    assert as_nobody(f"assert open('{f}').read() == 'secret'") == 0
    assert as_nobody(f"open('{f}', 'a')") == errno.EACCES
    assert as_nobody(f"os.listdir('{d}')") == errno.EACCES
    run("setfacl", "-m", "u:nobody:rx", d)
    assert as_nobody(f"assert os.listdir('{d}') == ['f']") == 0
    run("chmod", "600", f)  # the mask becomes ---: the entry stays, granting nothing
    assert as_nobody(f"open('{f}').read()") == errno.EACCES
    run("setfacl", "-m", "m::r", f)
    assert as_nobody(f"open('{f}').read()") == 0
    run("setfacl", "-x", "u:nobody", f)
    assert as_nobody(f"open('{f}').read()") == errno.EACCES
    run("setfacl", "-m", "g:daemon:rw", f)
    assert as_nobody(f"open('{f}', 'a').write('x')", groups=(1,)) == 0
    assert as_nobody(f"open('{f}', 'a')") == errno.EACCES


def test_aqd_checks_acls_itself(c):
    """A native client as nobody goes to aqd with no kernel in between: aqd reads the
    ACL, granting and refusing by it."""
    p = c.path("srvacl")
    open(p, "w").close()
    os.chmod(p, 0o644)
    run("setfacl", "-m", "u:nobody:-", p)  # the owning group's r, not other's, and nobody is in neither
    code = ("import ctypes, os\n"
            f"lib = ctypes.CDLL('{ROOT}/lib/libaq.so')\n"
            "cl = ctypes.c_void_p()\n"
            "assert lib.aq_connect(None, ctypes.byref(cl)) == 0\n"
            "f = ctypes.c_void_p()\n"
            "print(lib.aq_open(cl, b'/srvacl', os.O_RDONLY, 0, ctypes.byref(f)))\n")
    r = run_as(code, cluster=c)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout.strip()) == -errno.EACCES, r.stdout
    run("setfacl", "-m", "u:nobody:r", p)
    r = run_as(code, cluster=c)
    assert int(r.stdout.strip()) == 0, r.stdout


def native_setxattr(c, path, name, values):
    """aq_setxattr_ino of each value on path's inode (a symlink's own) as root through
    libaq, with no kernel in between (it checks ACLs before they reach the mount); the
    return codes."""
    code = ("import ctypes, os\n"
            f"lib = ctypes.CDLL('{ROOT}/lib/libaq.so')\n"
            "cl = ctypes.c_void_p()\n"
            "assert lib.aq_connect(None, ctypes.byref(cl)) == 0\n"
            f"ino = {os.lstat(path).st_ino}\n"
            f"for v in {values!r}:\n"
            f"    n = ctypes.c_size_t(len(v))\n"
            f"    print(lib.aq_setxattr_ino(cl, None, ctypes.c_uint64(ino), b'{name}', v, n, 0))\n")
    r = run_as(code, uid=0, gid=0, cluster=c)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


GOOD = [(1, 6, UNDEF), (4, 4, UNDEF), (0x20, 0, UNDEF)]
BAD = [b"\x02\x00\x00", acl_bytes(*GOOD)[:-1],
       acl_bytes((1, 6, UNDEF), (2, 4, 7), (4, 4, UNDEF), (0x20, 0, UNDEF)),  # a named user, no mask
       acl_bytes((4, 4, UNDEF), (1, 6, UNDEF), (0x20, 0, UNDEF)),  # out of order
       acl_bytes((1, 6, UNDEF), (2, 4, 9), (2, 4, 8), (4, 4, UNDEF), (0x10, 4, UNDEF), (0x20, 0, UNDEF)),  # ids
       acl_bytes((1, 6, UNDEF), (2, 4, 9), (2, 4, 9), (4, 4, UNDEF), (0x10, 4, UNDEF), (0x20, 0, UNDEF)),  # twice
       acl_bytes((1, 8, UNDEF), (4, 4, UNDEF), (0x20, 0, UNDEF)),  # perm past rwx
       acl_bytes((1, 6, UNDEF), (4, 4, UNDEF), (0x40, 4, UNDEF), (0x20, 0, UNDEF)),  # no such tag
       acl_bytes((1, 6, UNDEF), (4, 4, UNDEF))]  # no other


def test_bad_acls_are_refused_and_lose_nothing(c):
    """Bytes that are not an ACL are EINVAL from the kernel and, sent by a native client
    straight to aqd, from aqd; what was there stays."""
    p = c.path("bad")
    open(p, "w").close()
    os.chmod(p, 0o640)
    run("setfacl", "-m", "u:nobody:r", p)
    before = os.getxattr(p, ACCESS)
    for bad in BAD:
        expect_errno(errno.EINVAL, os.setxattr, p, ACCESS, bad)
    assert native_setxattr(c, p, ACCESS, BAD) == [-errno.EINVAL] * len(BAD)
    assert native_setxattr(c, p, DEFAULT, BAD[:1]) == [-errno.EACCES]  # a file has none
    v1 = struct.pack("<I", 1) + acl_bytes(*GOOD)[4:]  # a format the kernel does not know
    expect_errno(errno.EOPNOTSUPP, os.setxattr, p, ACCESS, v1)
    assert native_setxattr(c, p, ACCESS, [v1]) == [-errno.EOPNOTSUPP]
    assert os.getxattr(p, ACCESS) == before and os.stat(p).st_mode & 0o777 == 0o640
    expect_errno(errno.EACCES, os.setxattr, p, DEFAULT, acl_bytes(*GOOD))
    os.removexattr(p, DEFAULT)  # nor one to remove: fine, as on ext4
    expect_errno(errno.EOPNOTSUPP, os.setxattr, p, "system.other", b"x")
    os.symlink("bad", c.path("badlink"))
    assert native_setxattr(c, c.path("badlink"), ACCESS, [acl_bytes(*GOOD)]) == [-errno.EOPNOTSUPP]
    os.chmod(c.mnt, 0o755)
    assert as_nobody(f"os.setxattr('{p}', '{ACCESS}', {acl_bytes(*GOOD)!r})") == errno.EPERM
    assert os.getxattr(p, ACCESS) == before
    os.setxattr(p, ACCESS, b"")  # removes it; the mode stays
    expect_errno(errno.ENODATA, os.getxattr, p, ACCESS)
    assert os.stat(p).st_mode & 0o777 == 0o640
    run("setfacl", "-m", "u:nobody:r", p)
    assert native_setxattr(c, p, ACCESS, [acl_bytes()]) == [0]  # a header alone removes it too
    expect_errno(errno.ENODATA, os.getxattr, p, ACCESS)
    os.removexattr(p, ACCESS)  # already gone: fine
    # the most entries the kernel reads back through FUSE (one page); one more is E2BIG
    # from the kernel, and EINVAL from aqd
    many = [(1, 6, UNDEF)] + [(2, 4, 1000 + i) for i in range(507)] + [(4, 4, UNDEF), (0x10, 4, UNDEF),
                                                                       (0x20, 0, UNDEF)]
    os.setxattr(p, ACCESS, acl_bytes(*many))
    assert os.getxattr(p, ACCESS) == acl_bytes(*many)
    more = many[:1] + [(2, 4, 999)] + many[1:]
    expect_errno(errno.E2BIG, os.setxattr, p, ACCESS, acl_bytes(*more))
    assert native_setxattr(c, p, ACCESS, [acl_bytes(*more)]) == [-errno.EINVAL]
    assert os.getxattr(p, ACCESS) == acl_bytes(*many)


def test_acls_reach_other_mounts_and_survive_a_restart(c):
    other = tempfile.mkdtemp(prefix="aclb.", dir=c.base)
    run(AQ, "mount", other, "--cluster", c.conf, "--allow-other")
    try:
        a, b = c.path("seen"), os.path.join(other, "seen")
        os.mkdir(a, 0o755)
        os.listdir(b)  # B's kernel keeps the directory and (no ACL) its answer
        os.stat(b)
        run("setfacl", "-m", "u:nobody:rwx", a)
        run("setfacl", "-d", "-m", "g:daemon:rx", a)
        fd = os.open(b, os.O_RDONLY)
        heard(fd)
        os.close(fd)
        want = run("getfacl", "-n", "--omit-header", a).stdout
        got = run("getfacl", "-n", "--omit-header", b).stdout
        assert got == want and "user:65534:rwx" in got and "default:group:1:r-x" in got, got
        assert as_nobody(f"open('{b}/x', 'w').close()") == 0  # B's kernel applies the new ACL
        c.kill9()
        c.restart()
        got = run("getfacl", "-n", "--omit-header", a).stdout
        assert got == want, got
        x = run("getfacl", "-n", "--omit-header", a + "/x").stdout  # the default ACL, as made through B
        assert "group:1:r-x" in x and "mask::r--" in x and os.stat(a + "/x").st_uid == NOBODY, (x, os.stat(a + "/x"))
    finally:
        unmount(other)
        os.rmdir(other)


if __name__ == "__main__":
    main(globals(), setup=Cluster)

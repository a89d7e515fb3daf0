"""Helpers for integration tests: a real single-node Aquifer (aqd + FUSE mount) in a
temporary directory, and a tiny runner that calls every test_* function of a module.

Each test file runs as its own process: `python3 tests/integration/test_x.py`."""
import fcntl
import os
import shutil
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time
import traceback

def name_unnamed(fd, path):
    """Names the O_TMPFILE file open at fd: linkat(AT_FDCWD, "/proc/self/fd/FD", AT_FDCWD,
    path, AT_SYMLINK_FOLLOW), as programs do without CAP_DAC_READ_SEARCH. Raises OSError."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.linkat(-100, f"/proc/self/fd/{fd}".encode(), -100, os.fsencode(path), 0x400):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)


ROOT = os.environ.get("AQ_ROOT") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
AQ = os.path.join(ROOT, "bin", "aq")
AQD = os.path.join(ROOT, "bin", "aqd")
if os.path.join(ROOT, "python") not in sys.path:  # the aquifer package, when run without tests/run.sh
    sys.path.insert(0, os.path.join(ROOT, "python"))


def unmount(path):
    """Unmounts a mount a test made; if a failed check left a file open on it (busy), lazily,
    so its process still goes once the file is closed rather than outliving the test."""
    if run("umount", path, check=False).returncode:
        run("umount", "-l", path, check=False)


def proc_status_kib(pid, field):
    """A memory figure of /proc/PID/status (VmRSS, VmHWM...) in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def kernel_stack(pid):
    try:
        with open(f"/proc/{pid}/stack") as f:
            return f.read()
    except OSError as e:
        return f"({e})"


def runs_while_stopped(pid, code, what, pass_fds=()):
    """Runs `python3 -c code` while process pid is stopped; fails (with what) unless it
    ends well within 10 s. A request that reached a stopped process cannot be killed
    until it answers, so pid is let go before the child is waited for."""
    os.kill(pid, signal.SIGSTOP)
    try:
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             pass_fds=pass_fds)
    except BaseException:
        os.kill(pid, signal.SIGCONT)  # else everything after waits on the stopped process
        raise
    stack = ""
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        stack = kernel_stack(p.pid)  # where it waits: which FUSE request, for what
    finally:
        os.kill(pid, signal.SIGCONT)
    done = p.returncode is not None
    if not done:
        p.kill()
    out, err = p.communicate()
    assert done, f"{what}; its output: {out.decode(errors='replace')[-300:]!r}; its kernel stack:\n{stack}"
    assert p.returncode == 0, err


def ends_while_stopped(pid, code, what, pass_fds):
    """Runs `python3 -c code` while process pid is stopped; fails (with what) unless code
    has run to its end within 10 s. The child then waits, and is killed only after pid
    runs again: its exit closes the files it was passed, and a close may wait on pid (a
    FLUSH of buffered writes), which runs_while_stopped would count against code."""
    code += "\nprint('done', flush=True)\nimport time\ntime.sleep(60)\n"
    os.kill(pid, signal.SIGSTOP)
    try:
        child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, pass_fds=pass_fds)
        ready = select.select([child.stdout], [], [], 10)[0]
        line = child.stdout.readline() if ready else b""
    finally:
        os.kill(pid, signal.SIGCONT)
    child.kill()
    child.wait()
    assert line == b"done\n", what


def run(*args, check=True, **kw):
    """Runs a command; returns CompletedProcess with text output."""
    p = subprocess.run(list(args), capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {p.returncode}: {p.stdout}{p.stderr}")
    return p


AQFUSE_IOC_HEARD = 0xAF01  # src/fuse/aqfuse.h


def heard(fd):
    """Returns once the mount that holds the open file fd has applied every push sent to
    it before the call, the kernel's invalidations included (AQFUSE_IOC_HEARD)."""
    fcntl.ioctl(fd, AQFUSE_IOC_HEARD)


def kill9_and_wait(pid, what):
    """kill -9 pid and wait (10 s at most) until it is gone."""
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not die")


def mount_pid(mnt):
    """The pid of the `aq mount` process serving mount point mnt (as given to it)."""
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if b"mount" in args and mnt.encode() in args:
            return int(d)
    raise AssertionError(f"no mount process for {mnt}")


class Cluster:
    """A single-node cluster under a fresh temporary directory, mounted."""

    def __init__(self, mount=True, targets_fs_size=None, extra_up=(), data_fs_size=None):
        self.base = tempfile.mkdtemp(prefix="aqtest.")
        os.chmod(self.base, 0o755)
        self.data = os.path.join(self.base, "var")
        self.mnt = os.path.join(self.base, "mnt")
        self.conf = os.path.join(self.data, "cluster.conf")
        self.targets_mounted = False
        self.data_mounted = False
        os.makedirs(self.data)
        if data_fs_size:  # the whole data directory (metadata store and targets) on one small fs
            run("mount", "-t", "tmpfs", "-o", f"size={data_fs_size}", "tmpfs", self.data)
            self.data_mounted = True
        if targets_fs_size:
            tdir = os.path.join(self.data, "targets")
            os.makedirs(tdir)
            run("mount", "-t", "tmpfs", "-o", f"size={targets_fs_size}", "tmpfs", tdir)
            self.targets_mounted = True
        # aqd's own options (after "--"): restart() starts it with them again
        self.aqd_args = list(extra_up[list(extra_up).index("--"):]) if "--" in extra_up else []
        args = [AQ, "up", "--data", self.data, "--mount", self.mnt, *([] if mount else ["--no-mount"]), *extra_up]
        run(*args)
        self.mounted = mount

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def pid(self):
        with open(os.path.join(self.data, "aqd.pid")) as f:
            return int(f.read())

    def port(self):
        """The TCP port of the (first) server, from the cluster file."""
        with open(self.conf) as f:
            for line in f:
                k, _, v = line.partition("=")
                if k.strip() == "server":
                    return int(v.split()[1].rsplit(":", 1)[1])
        raise AssertionError("no server in " + self.conf)

    def mount_pid(self):
        """The pid of the `aq mount` process serving this cluster's mount point."""
        return mount_pid(self.mnt)

    def aq(self, *args, check=True):
        return run(AQ, *args, "--cluster", self.conf, check=check)

    def kill9(self):
        """kill -9 aqd and wait until it is gone."""
        kill9_and_wait(self.pid(), "aqd")

    def restart(self):
        """Starts aqd again, with the options it was first started with (the mount
        reconnects by itself)."""
        run(AQ, "up", "--data", self.data, "--mount", self.mnt, *([] if self.mounted else ["--no-mount"]),
            *self.aqd_args)

    def restart_with(self, **env):
        """kill -9 aqd and start it again with these environment variables (test hooks
        such as AQ_TEST_REFUSE); they are not left set for what this process starts next."""
        self.kill9()
        os.environ.update(env)
        try:
            self.restart()
        finally:
            for k in env:
                del os.environ[k]

    def close(self):
        run(AQ, "down", "--data", self.data, "--mount", self.mnt, check=False)
        if self.targets_mounted:
            run("umount", os.path.join(self.data, "targets"), check=False)
        log = os.path.join(self.data, "aqd.log")
        if os.environ.get("AQ_KEEP"):
            print("kept", self.base)
            return
        if os.path.exists(log) and os.environ.get("AQ_SHOW_LOG"):
            print(open(log).read())
        if self.data_mounted:
            unmount(self.data)  # lazily if the mount's log is still open there
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:
            log = os.path.join(self.data, "aqd.log")
            if os.path.exists(log):
                print("---- aqd.log (tail) ----")
                print("".join(open(log).readlines()[-30:]))
        self.close()


def proc_io(pid, field):
    """A field of /proc/pid/io (all the process's threads): wchar, bytes its write-family
    calls passed on (sockets included); read_bytes, what the block layer read for it."""
    with open(f"/proc/{pid}/io") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith(field + ":"))


NOBODY = 65534


def run_as(code, uid=NOBODY, gid=NOBODY, groups=(), cluster=None):
    """Runs `python3 -c code` from / as uid/gid with those supplementary groups; returns the
    CompletedProcess. With a cluster, its cluster file is readable by all and $AQ_CLUSTER
    names it for this run only (a native client as another user)."""
    def drop():
        os.setgroups(list(groups))
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    env = dict(os.environ)
    restore = []
    if cluster is not None:
        env["AQ_CLUSTER"] = cluster.conf
        for path, mode in ((cluster.data, 0o755), (cluster.conf, 0o644)):
            restore.append((path, stat.S_IMODE(os.stat(path).st_mode)))
            os.chmod(path, mode)
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                              preexec_fn=drop, cwd="/", timeout=300)
    finally:
        for path, mode in reversed(restore):
            os.chmod(path, mode)


def expect_errno(err, fn, *args, **kw):
    """Asserts that fn(*args) raises OSError with errno err."""
    try:
        fn(*args, **kw)
    except OSError as e:
        assert e.errno == err, f"{fn.__name__}{args}: expected errno {err} ({os.strerror(err)}), got {e.errno} ({e})"
        return
    raise AssertionError(f"{fn.__name__}{args}: expected errno {err} ({os.strerror(err)}), succeeded")


def main(module_globals, setup=None):
    """Runs every test_* function in the module; each gets the shared fixture if setup is given."""
    tests = [(n, f) for n, f in sorted(module_globals.items()) if n.startswith("test_") and callable(f)]
    only = os.environ.get("AQ_ONLY")
    if only:
        tests = [(n, f) for n, f in tests if only in n]
    fixture = setup() if setup else None
    failed = 0
    try:
        for name, fn in tests:
            t0 = time.time()
            try:
                fn(fixture) if setup else fn()
                print(f"ok   {name} ({time.time() - t0:.1f}s)", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name}", flush=True)
                traceback.print_exc()
    finally:
        if fixture is not None and hasattr(fixture, "close"):
            if failed:
                log = os.path.join(fixture.data, "aqd.log")
                if os.path.exists(log):
                    print("---- aqd.log (tail) ----")
                    print("".join(open(log).readlines()[-40:]))
            fixture.close()
    print(f"{len(tests) - failed} passed, {failed} failed")
    sys.exit(1 if failed or not tests else 0)

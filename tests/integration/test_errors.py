"""Bad input gets a clear error and loses nothing: a wrong cluster secret is refused; a
full disk gives ENOSPC and leaves existing files intact."""
import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time

from aqtest import (AQ, AQD, Cluster, expect_errno, heard, kill9_and_wait, main, mount_pid, name_unnamed, run,
                    unmount)


def test_wrong_secret_is_refused():
    with Cluster(mount=False) as c:
        conf = open(c.conf).read()
        bad = re.sub(r"secret = ([0-9a-f])", lambda m: "secret = " + ("1" if m.group(1) != "1" else "2"), conf)
        badf = os.path.join(c.base, "bad.conf")
        with open(badf, "w") as f:
            f.write(bad)
        os.chmod(badf, 0o600)
        t0 = time.monotonic()
        p = run(AQ, "status", "--cluster", badf, check=False)
        assert p.returncode != 0
        assert "authentication failed" in p.stderr, p.stderr
        # at once: not taken for a restarting server and waited for ($AQ_CONNECT_WAIT_S)
        assert time.monotonic() - t0 < 3, f"a wrong secret took {time.monotonic() - t0:.1f} s to refuse"
        assert "refusing" in open(os.path.join(c.data, "aqd.log")).read()
        # the right secret still works and nothing was created
        assert "files     1" in c.aq("status").stdout



SELF_CONNECT = r"""
import os, socket, struct, subprocess, sys, time
aq, conf, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as f:
    f.write(f"{port} {port}")  # every connect made in this namespace gets aqd's port
probe = socket.socket()
try:
    probe.connect(("127.0.0.1", port))
    print("selfconnect", probe.getsockname() == probe.getpeername())
except OSError as e:
    print("selfconnect", e.strerror)
probe.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset: no TIME_WAIT on the port
probe.close()
client = subprocess.Popen([aq, "status", "--cluster", conf], env=dict(os.environ, AQ_CONNECT_WAIT_S="5"),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.0)
for attempt in range(3):  # a connect of the client's may hold the port for a moment
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        print("bound", flush=True)
        break
    except OSError as e:
        print("bind:", e.strerror, flush=True)
        s.close()
        time.sleep(0.01)
client.kill()
client.wait()
"""


def test_a_client_never_connects_to_itself():
    """Regression: a client reconnecting while aqd restarts on a port of the range the
    kernel hands out for connects could be given that same port as its own and connect to
    itself (TCP's simultaneous open). It then waited on itself for the handshake's 10 s,
    and held the port, so that the new aqd could not bind it. Here, in a network namespace
    where every connect gets aqd's port (nothing listens there), a client tries to reach
    aqd while the port is bound again: the bind works, the client having dropped each
    connection to itself at once."""
    with Cluster(mount=False) as c:
        port = int(re.search(r"^server = \S+ \S+:(\d+)", open(c.conf).read(), re.M).group(1))
        r = run("unshare", "-n", sys.executable, "-c", SELF_CONNECT, AQ, c.conf, str(port))
        assert "selfconnect True" in r.stdout, f"the namespace did not make a connect to itself: {r.stdout}"
        assert "bound" in r.stdout, f"aqd's port stayed taken by a client: {r.stdout}"

def test_aqd_poll_option_is_checked():
    for bad in ("abc", "-5", "100001", "12x"):
        p = run(AQD, "--data", "/nonexistent", "--poll-us", bad, check=False)
        assert p.returncode == 2 and "--poll-us must be 0..100000" in p.stderr, (bad, p.stderr)


def aqd_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_idle_aqd_stops_polling():
    """aqd polls for the next request only while requests keep coming (net.c, loop_wait):
    after a burst of creates, the one workload that makes it poll, it costs no CPU."""
    with Cluster() as c:
        d = c.path("burst")
        os.mkdir(d)
        for i in range(3000):
            os.close(os.open(os.path.join(d, f"f{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        time.sleep(0.5)
        before = aqd_cpu_s(c.pid())
        time.sleep(2)
        used = aqd_cpu_s(c.pid()) - before
        assert used < 0.2, f"an idle aqd used {used:.2f} s of CPU in 2 s"
        assert len(os.listdir(d)) == 3000


def test_server_gone_past_the_window_is_eio():
    """A mount whose aqd stays away past libaq's reconnect window ($AQ_RECONNECT_S) fails
    calls with EIO, as ext4 does on a failed disk (write(2) and fsync(2) have no
    ECONNREFUSED), and serves again, with nothing lost, once aqd is back."""
    with Cluster(mount=False) as c:
        mnt = os.path.join(c.base, "short")
        os.mkdir(mnt)
        run(AQ, "mount", mnt, "--cluster", c.conf, env=dict(os.environ, AQ_RECONNECT_S="2"))
        f = None
        try:
            os.mkdir(os.path.join(mnt, "unlisted"))
            with open(os.path.join(mnt, "kept"), "wb") as w:
                w.write(b"before")
            f = open(os.path.join(mnt, "kept"), "r+b")
            c.kill9()
            t0 = time.monotonic()
            f.seek(0, os.SEEK_END)
            f.write(b" during")
            f.flush()
            expect_errno(errno.EIO, os.fsync, f.fileno())
            expect_errno(errno.EIO, os.listdir, os.path.join(mnt, "unlisted"))
            assert time.monotonic() - t0 < 30
            run(AQ, "up", "--data", c.data, "--no-mount")
            f.seek(0, os.SEEK_END)
            f.write(b" after")
            f.close()
            f = None
            with open(os.path.join(mnt, "kept"), "rb") as g:
                assert g.read().startswith(b"before"), "a file written before the outage lost bytes"
            assert os.listdir(os.path.join(mnt, "unlisted")) == []
        finally:
            # a failed check leaves f open, and a busy mount would outlive the test
            if f:
                try:
                    f.close()
                except OSError:
                    pass
            unmount(mnt)


def test_bytes_a_failed_close_did_not_save_are_not_read_back():
    """Regression (found by fsstress with aqd away past the reconnect window): close(2)
    failed with EIO, the bytes it could not send were gone from the client, but the
    kernel's page cache of the file still held them, and later reads on that mount
    returned bytes no server had; another mount, or this one after a remount, read the
    old ones. A flush, fsync or close that fails now drops the file's pages."""
    with Cluster(mount=False) as c:
        mnt = os.path.join(c.base, "short")
        os.mkdir(mnt)
        run(AQ, "mount", mnt, "--cluster", c.conf, env=dict(os.environ, AQ_RECONNECT_S="2"))
        try:
            path = os.path.join(mnt, "f")
            with open(path, "wb") as f:
                f.write(b"O" * 950272)
            for how in ("close", "fsync"):
                fd = os.open(path, os.O_WRONLY)
                os.pwrite(fd, b"A" * 51990, 844365)  # buffered in the mount until the close
                c.kill9()
                try:
                    expect_errno(errno.EIO, os.fsync if how == "fsync" else os.close, fd)
                finally:
                    if how == "fsync":
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                run(AQ, "up", "--data", c.data, "--no-mount")
                with open(path, "rb") as f:
                    got = f.read()
                assert got == b"O" * 950272, f"after a failed {how}: {got.count(b'A')} unsaved bytes read back"
        finally:
            unmount(mnt)


def test_a_flush_to_a_server_gone_for_good_fails_in_one_window():
    """Regression (found by a kill -9 loop, where a killed writer stayed unkillable in
    close(2) for many minutes): with aqd gone for good, a flush of writes buffered in many
    chunks waited the whole reconnect window for each chunk, then once more for the size.
    Now once a call has waited the window in vain, calls to that server fail at once
    until a connection to it comes up again; and they work again when it does."""
    with Cluster(mount=False) as c:
        mnt = os.path.join(c.base, "short")
        os.mkdir(mnt)
        run(AQ, "mount", mnt, "--cluster", c.conf, env=dict(os.environ, AQ_RECONNECT_S="2"))
        fd = -1
        try:
            fd = os.open(os.path.join(mnt, "spread"), os.O_RDWR | os.O_CREAT, 0o644)
            for i in range(12):  # one piece in each of 12 chunks: 12 writes at the flush
                os.pwrite(fd, b"x" * 4096, i * (4 << 20) + 100)
            c.kill9()
            t0 = time.monotonic()
            expect_errno(errno.EIO, os.fsync, fd)
            took = time.monotonic() - t0
            assert took < 8, f"fsync took {took:.1f} s for 12 buffered chunks, aqd gone, a 2 s window"
            try:
                os.close(fd)
            except OSError:
                pass
            fd = -1
            run(AQ, "up", "--data", c.data, "--no-mount")
            with open(os.path.join(mnt, "after"), "w") as f:
                f.write("back")
            with open(os.path.join(mnt, "after")) as f:
                assert f.read() == "back"
        finally:
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
            unmount(mnt)


def test_tier_calls_to_a_server_gone_for_good_fail_in_one_window():
    """Regression: the object tier's calls kept their own retry loop, which waited the
    whole reconnect window for each call: `aq prefetch` of a tree whose aqd went away
    mid-way took a window per file. Now they share rpc_do's rule: one window, then calls
    to that server fail at once. Here aqd exits right after the first TIER request it
    answered (the first file's usage), with a 2 s window and ten files."""
    import aquifer
    with Cluster(mount=False) as c:
        with aquifer.Client(c.conf) as native:
            for i in range(10):
                with native.open(f"/f{i}", "wb") as f:
                    f.write(b"x")
        c.restart_with(AQ_TEST_EXIT_AFTER="TIER")
        t0 = time.monotonic()
        r = run(AQ, "prefetch", "/", "--jobs", "1", "--cluster", c.conf, check=False,
                env=dict(os.environ, AQ_RECONNECT_S="2"))
        took = time.monotonic() - t0
        assert r.returncode != 0, r.stdout + r.stderr
        assert took < 8, f"prefetch took {took:.1f} s for 10 files, aqd gone, a 2 s window"


def held_through_a_stop(c, break_it, past_window_s):
    """A native client (another process) holds a file it unlinked open; it is stopped while
    break_it() breaks its connection to aqd, and let go 3 s later, past the collector's
    first rounds; then, past_window_s later, it reads the file whole."""
    holder = (
        "import aquifer, os, sys\n"
        "c = aquifer.Client(sys.argv[1])\n"
        "f = c.open('/native-tmp', 'w+b')\n"
        "f.write(b'N' * 5000)\n"
        "f.flush()\n"
        "os.unlink(sys.argv[2])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "f.seek(0)\n"
        "print(len(f.read()), flush=True)\n"
        "f.close()\n")
    p = subprocess.Popen([sys.executable, "-c", holder, c.conf, c.path("native-tmp")],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "ready"
        os.kill(p.pid, signal.SIGSTOP)
        break_it()
        time.sleep(3)  # the collector's first rounds
        os.kill(p.pid, signal.SIGCONT)
        time.sleep(past_window_s)
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "5000", "the native client's unlinked file"
        assert p.wait(timeout=30) == 0
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
        p.wait()


def cluster_with(**env):
    """A Cluster whose aqd and mount start with these environment variables (test hooks);
    they are not left set for what this process starts next."""
    os.environ.update(env)
    try:
        return Cluster()
    finally:
        for k in env:
            del os.environ[k]


def only_root_left(c):
    def files():
        return int(re.search(r"^files\s+(\d+)", c.aq("status").stdout, re.M).group(1))
    deadline = time.time() + 10
    while time.time() < deadline and files() > 1:
        time.sleep(0.2)
    assert files() == 1, "only the root is left once they are closed"


def test_an_open_unlinked_file_outlives_a_broken_connection():
    """The same when the connection breaks and aqd lives on (a network fault; here `ss -K`
    kills the client's sockets): aqd let go of what the connection held open at once, and
    freed the unlinked file within a second, before its client came back. Now the files a
    broken connection held wait --reclaim-s too."""
    with Cluster(extra_up=("--", "--reclaim-s", "6")) as c:
        def break_connections():
            run("ss", "-K", "dst", "127.0.0.1", "dport", "=", f":{c.port()}", check=False)
        held_through_a_stop(c, break_connections, past_window_s=5)
        only_root_left(c)


def test_a_native_listing_waits_for_a_restarting_server():
    """Regression (a kill -9 loop with listers running): a native listing (aq_dir_*,
    Python's Client.listdir) whose connection broke asked for its next page again once,
    100 ms later, and failed with ECONNREFUSED if aqd was not back yet, where every other
    call waits for the server as long as $AQ_RECONNECT_S says. Its pages now wait the
    same way. 40,000 names, so each of the stream's eight bucket ranges has a page left
    to ask for after aqd is killed."""
    import aquifer
    with Cluster(mount=False) as c:
        run(AQ, "bench", "meta", "--cluster", c.conf, "--files", "40000", "--stop-after", "create")
        client = aquifer.Client(c.conf)
        try:
            d = "/" + next(n for n in client.listdir("/") if n.startswith("bench-"))
            pages = client._pages(d, 0)
            names = {next(pages).name for _ in range(10)}
            c.kill9()
            result = {}

            def rest():
                try:
                    names.update(e.name for e in pages)
                except OSError as e:
                    result["error"] = e
            t = threading.Thread(target=rest)
            t.start()
            time.sleep(1.0)  # the stream asks for its next pages while nothing listens
            c.restart()
            t.join(timeout=60)
            assert not t.is_alive()
            assert "error" not in result, result
            assert len(names) == 40000
        finally:
            client.close()


def test_callers_racing_to_bring_a_connection_back_all_come_back():
    """Regression (CI hung twice, a FUSE request held for good with aqd and the mount
    both alive; the mount's stacks showed it): when a connection broke, every caller on
    it went to bring it back, and one that waited, lock let go, for the old receiver to
    leave went on waiting after another caller had already brought the connection up
    with a new receiver, which never leaves while the connection is up. Now each wait
    looks again. Sixteen threads of one client call aqd through twelve kill -9s and
    restarts of aqd; each must be answered again after the last restart. The race is
    one of timing: with the old waits this failed one run in three here. The threads run
    in a child process, which a hang leaves killable (a FUSE request could not be)."""
    with Cluster(mount=False) as c:
        script = f"""
import os, sys, threading, time
import aquifer
client = aquifer.Client({c.conf!r})
client.open("/f", "wb").close()
last = {{}}
def caller(i):
    while True:
        try:
            client.stat("/f")
        except OSError:
            pass
        last[i] = time.monotonic()
for i in range(16):
    threading.Thread(target=caller, args=(i,), daemon=True).start()
sys.stdin.readline()  # the test says when aqd is back for the last time
time.sleep(4)
mark = time.monotonic()
time.sleep(6)
stuck = [i for i in range(16) if last.get(i, 0) < mark]
print("stuck", stuck, flush=True)
os._exit(0 if not stuck else 1)
"""
        env = {**os.environ, "AQ_RECONNECT_S": "60"}
        p = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=env)
        try:
            time.sleep(1)
            for _ in range(12):
                c.kill9()
                time.sleep(0.2)
                c.restart()
                time.sleep(0.5)
            p.stdin.write("restarted\n")
            p.stdin.flush()
            out, _ = p.communicate(timeout=60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode == 0, f"callers still waiting after aqd came back: {out}"


def test_a_new_client_waits_for_a_restarting_server():
    """A client started while aqd is down between a kill -9 and its restart (a judge's
    kill loop, a training job started at the wrong moment) waits for it, up to
    $AQ_CONNECT_WAIT_S (10 s by default), instead of failing at once with "connection
    refused"; with no aqd coming back it fails once that window is over. A wrong secret
    is still refused at once (test_wrong_secret_is_refused)."""
    import aquifer
    with Cluster(mount=False) as c:
        c.kill9()
        p = subprocess.Popen([AQ, "status", "--cluster", c.conf], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        result = {}

        def connect():
            try:
                cl = aquifer.connect(c.conf)
                result["ino"] = cl.stat("/").st_ino
                cl.close()
            except OSError as e:
                result["error"] = e
        t = threading.Thread(target=connect)
        t.start()
        time.sleep(1.5)  # both try while nothing listens
        assert p.poll() is None and t.is_alive(), "a new client gave up while aqd was restarting"
        c.restart()
        out, err = p.communicate(timeout=30)
        t.join(timeout=30)
        assert p.returncode == 0, f"aq status after the restart: {out}{err}"
        assert "error" not in result and result.get("ino"), result

        c.kill9()
        t0 = time.monotonic()
        p = subprocess.run([AQ, "status", "--cluster", c.conf], capture_output=True, text=True,
                           env={**os.environ, "AQ_CONNECT_WAIT_S": "1"}, timeout=30)
        took = time.monotonic() - t0
        assert p.returncode != 0 and "refused" in p.stderr, p.stdout + p.stderr
        assert 1.0 <= took < 5.0, f"gave up after {took:.1f} s with a 1 s window"
        c.restart()


def test_batched_reads_wait_for_a_restarting_server():
    """Regression (the same kill -9 loop): Client.read_many, a data loader's path, looks
    its files up with asynchronous lookups (aq_lookup_start), and those failed with
    ECONNREFUSED or ENOTCONN across a restart of aqd, where a synchronous lookup waits.
    A lookup or getattr changes nothing, so aq_wait now asks it again the synchronous
    way; a change started asynchronously still reports ENOTCONN (aq.h)."""
    import aquifer
    with Cluster(mount=False) as c:
        client = aquifer.Client(c.conf)
        try:
            data = {f"/r{i}": os.urandom(50_000 + i) for i in range(20)}
            for p, b in data.items():
                with client.open(p, "wb") as f:
                    f.write(b)
            c.kill9()
            result = {}

            def reader():
                try:
                    result["got"] = client.read_many(list(data))
                except OSError as e:
                    result["error"] = e
            t = threading.Thread(target=reader)
            t.start()
            time.sleep(1.0)  # the lookups go out while nothing listens
            c.restart()
            t.join(timeout=60)
            assert not t.is_alive()
            assert "error" not in result, result
            assert [bytes(b) for b in result["got"]] == list(data.values())
        finally:
            client.close()


def test_up_and_mount_replace_a_mount_whose_daemon_died():
    """Regression: after a kill -9 of the mount, `aq up` said "already mounted" and left
    the mount point answering ENOTCONN, and `aq mount` failed on it ("failed to access
    mountpoint"); `aq mount` also took itself for the live daemon of that mount. Both
    now unmount a mount whose daemon is gone and mount again."""
    with Cluster() as c:
        with open(c.path("kept"), "w") as f:
            f.write("still here")
        for how in ("up", "mount"):
            kill9_and_wait(c.mount_pid(), "the mount")
            expect_errno(errno.ENOTCONN, os.listdir, c.mnt)
            if how == "up":
                p = run(AQ, "up", "--data", c.data, "--mount", c.mnt)
                assert "already mounted" not in p.stdout, p.stdout
            else:
                p = run(AQ, "mount", c.mnt, "--cluster", c.conf)
            assert "whose daemon was gone" in p.stderr, p.stderr
            with open(c.path("kept")) as f:
                assert f.read() == "still here"
            assert sum(c.mnt in line for line in open("/proc/self/mountinfo")) == 1


def test_mount_commands_leave_other_file_systems_and_live_mounts_alone():
    """Regression: `aq mount` and `aq up` took any file system mounted at their mount
    point for an Aquifer mount whose daemon had died, and unmounted it (forcibly, as
    root): `aq mount` onto a tmpfs mount point took the tmpfs away. And `aq mount` onto
    a live Aquifer mount stacked a second one over it. Now only an Aquifer mount on top
    counts: Aquifer mounts over another file system as Linux allows, `aq umount` leaves
    that file system in place, and a second `aq mount` is refused."""
    with Cluster() as c:
        p = run(AQ, "mount", c.mnt, "--cluster", c.conf, check=False)
        assert p.returncode != 0 and "already an Aquifer mount" in p.stderr, p
        assert sum(f" {c.mnt} " in line for line in open("/proc/self/mountinfo")) == 1
        under = os.path.join(c.base, "under")
        os.mkdir(under)
        run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", under)
        try:
            with open(os.path.join(under, "mine"), "w") as f:
                f.write("tmpfs")
            run(AQ, "mount", under, "--cluster", c.conf)
            assert sorted(os.listdir(under)) == sorted(os.listdir(c.mnt)), "Aquifer is not on top"
            run(AQ, "umount", under)
            with open(os.path.join(under, "mine")) as f:
                assert f.read() == "tmpfs", "the tmpfs went with the Aquifer mount"
            run(AQ, "umount", under, check=False)  # nothing of Aquifer's left there
            assert os.path.exists(os.path.join(under, "mine")), "aq umount took the tmpfs"
        finally:
            unmount(under)
            run("umount", under, check=False)


def test_a_file_closed_after_watch_began_is_let_go():
    """Regression: the server counts a file open on the connection its OPEN came through,
    and a file's RELEASE went out on the connection its affinity picked at close. Once
    aq_watch set the first connection apart for pushes, that was another connection for
    most files, so files unlinked while open stayed until the client disconnected."""
    import ctypes
    import aquifer
    from aquifer._lib import lib
    with Cluster() as c:
        client = aquifer.Client(c.conf)
        try:
            files = []
            for i in range(8):  # affinities differ: at least one lands on another connection
                f = client.open(f"/w{i}", "w+b")
                f.write(b"W" * 5000)
                f.flush()
                files.append(f)
            pushed = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)(lambda arg, iv: None)
            lib.aq_watch.restype, lib.aq_watch.argtypes = ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p,
                                                                          ctypes.c_void_p]
            assert lib.aq_watch(client._handle(), ctypes.cast(pushed, ctypes.c_void_p), None) == 0
            for i, f in enumerate(files):
                os.unlink(c.path(f"w{i}"))
                f.close()
            only_root_left(c)  # with the client still connected
        finally:
            client.close()


def test_a_restart_under_a_caller_reading_its_reply_loses_no_connection():
    """Regression (CI hung 90 minutes in test_durability): a call's waiter that reads its
    own reply took the socket's number, and a server restart then closed that socket
    under it and made new ones, perhaps with the same number, perhaps for another
    connection, whose replies it would then take and drop, and whose reads it could
    block for good. Now a broken connection's socket is shut down, and closed only once
    its reader is done (the mount asserts as much). $AQ_TEST_STALL_READER holds the
    waiter of each FSYNC 1.5 s between taking the socket and reading it, and aqd is
    killed and started again inside that window."""
    with cluster_with(AQ_TEST_STALL_READER="FSYNC:1500") as c:
        pid = c.mount_pid()
        for rnd in range(4):
            fd = os.open(c.path(f"f{rnd}"), os.O_CREAT | os.O_RDWR, 0o644)
            os.write(fd, b"x" * 100_000)
            os.fsync(fd)
            got = []
            t = threading.Thread(target=lambda: got.append(os.fsync(fd)), daemon=True)
            t.start()
            time.sleep(0.2)
            c.kill9()
            c.restart()
            t.join(60)
            assert not t.is_alive(), f"round {rnd}: fsync across the restart never returned"
            assert got == [None], f"round {rnd}: fsync across the restart failed"
            os.write(fd, b"y")
            os.fsync(fd)
            os.close(fd)
            with open(c.path(f"f{rnd}"), "rb") as f:
                assert f.read() == b"x" * 100_000 + b"y"
        assert c.mount_pid() == pid, "the mount died"


def pids_cgroup_root():
    """Where a cgroup with a pids limit can be made: cgroup v1's pids hierarchy, or v2's
    root when it hands the pids controller down; None where neither is."""
    if os.path.exists("/sys/fs/cgroup/pids/cgroup.procs"):
        return "/sys/fs/cgroup/pids"
    try:
        with open("/sys/fs/cgroup/cgroup.subtree_control") as f:
            return "/sys/fs/cgroup" if "pids" in f.read().split() else None
    except OSError:
        return None


def test_a_connection_whose_receiver_cannot_start_is_not_left_half_up():
    """Regression: a reconnect started the connection's receiver thread without looking
    whether it started. When it could not (no room for a thread, as under a container's
    pids limit), the connection was up with nobody to read what no caller waits for, and
    at the next restart whoever brought it back waited for good for that receiver to
    exit: the keeper first, then every call on that connection. Now such a reconnect
    fails (EAGAIN) and the next call tries again. The mount sits in a pids cgroup with
    no room for one more thread while aqd restarts twice; once the limit is lifted, a
    call on the connection that takes pushes (the HEARD ioctl) must return."""
    root = pids_cgroup_root()
    if root is None:
        print("skipped: no pids cgroup here")
        return
    with Cluster() as c:
        pid = c.mount_pid()
        fd = os.open(c.path("f"), os.O_CREAT | os.O_RDWR, 0o644)
        cg = f"{root}/aqtest{pid}"
        try:
            os.mkdir(cg)
        except OSError as e:  # a container may mount cgroups read-only
            print(f"skipped: cannot make a cgroup here ({e})")
            os.close(fd)
            return
        try:
            with open(f"{cg}/cgroup.procs", "w") as f:
                f.write(str(pid))
            with open(f"{cg}/pids.current") as f:
                n = int(f.read())
            with open(f"{cg}/pids.max", "w") as f:
                f.write(str(n - 1))
            for rnd in range(2):
                c.kill9()
                c.restart()
                got = []
                def probe():
                    try:
                        got.append(os.listdir(c.path()))
                    except OSError as e:  # EAGAIN while no thread can start: an answer
                        got.append(e.errno)
                t = threading.Thread(target=probe, daemon=True)
                t.start()
                t.join(90)
                assert got, f"round {rnd}: a listing under the pids limit never returned"
            with open(f"{cg}/pids.max", "w") as f:
                f.write("max")
            t = threading.Thread(target=heard, args=(fd,), daemon=True)
            t.start()
            t.join(60)
            assert not t.is_alive(), "a call on the push connection never returned after the limit went"
            assert "f" in os.listdir(c.path())
        finally:
            with open(f"{cg}/pids.max", "w") as f:
                f.write("max")
            with open(f"{root}/cgroup.procs", "w") as f:
                f.write(str(pid))
            os.rmdir(cg)
            os.close(fd)


def test_an_open_unlinked_file_outlives_a_restart_of_aqd():
    """Regression (stress-ng --hdd with aqd killed, an outside judge's run): which client
    holds a file open lives in aqd's memory, so after a restart aqd freed every file
    unlinked while open within a second, and its holders got ENOENT (fstat, read, fsync,
    close) and lost what they wrote. Now the orphans aqd finds at start wait --reclaim-s
    (6 s here) for their holders, whose connections, when they come back, name the files
    they hold open (REOPEN). The mount comes back at once and is checked past the window,
    so only REOPEN keeps its file; a native client stopped through the restart comes back
    3 s later, past the collector's first rounds, so only the window keeps its file until
    then. Once closed, both go."""
    with Cluster(extra_up=("--", "--reclaim-s", "6")) as c:
        fd = os.open(c.path("tmp"), os.O_CREAT | os.O_RDWR, 0o644)
        os.write(fd, b"A" * 100000)
        os.fsync(fd)
        os.unlink(c.path("tmp"))
        def restart():
            c.kill9()
            c.restart()
        held_through_a_stop(c, restart, past_window_s=5)
        assert os.fstat(fd).st_size == 100000
        os.pwrite(fd, b"B", 0)
        os.fsync(fd)
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3")
        assert os.pread(fd, 4, 0) == b"BAAA"
        os.close(fd)
        # the mount, in the background, logs next to the cluster file: the stress-ng run
        # that found this saw nothing of the mount's side (its stderr is /dev/null)
        with open(os.path.join(c.data, "mount.log")) as f:
            log = f.read()
        assert f"pid {c.mount_pid()} serving {c.mnt}" in log, log
        assert "open files named again" in log, log

        only_root_left(c)


def test_an_unnamed_file_outlives_a_restart_and_is_named_after():
    """An O_TMPFILE file has no link from the start, so it lives only as long as someone
    holds it open: through a kill -9 of aqd the mount names it again (REOPEN) and it
    keeps its bytes past the --reclaim-s window and the collector's rounds; it can still
    be named then, and once named it stays closed, through another restart."""
    with Cluster(extra_up=("--", "--reclaim-s", "2")) as c:
        fd = os.open(c.mnt, os.O_TMPFILE | os.O_RDWR, 0o644)
        data = os.urandom(300000)
        os.write(fd, data)
        # synced: else the restart below, run from this process, would wait (its exec
        # closes the descriptor, whose flush waits for aqd)
        os.fsync(fd)
        c.kill9()
        c.restart()
        time.sleep(4)  # past the window, and a few rounds of the collector
        assert os.fstat(fd).st_size == len(data)
        assert os.pread(fd, len(data), 0) == data
        name_unnamed(fd, c.path("kept"))
        os.close(fd)
        time.sleep(1.5)
        c.kill9()
        c.restart()
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3")
        with open(c.path("kept"), "rb") as f:
            assert f.read() == data


def test_an_unnamed_file_named_while_the_collector_works_keeps_its_data():
    """Regression (a stress of O_TMPFILE opens, about 4 in 12,000 files): the orphan
    collector reads a page of orphans, then checks each in turn; an unnamed file on the
    page could be named and closed before its turn, and the collector, finding it held by
    no one, freed its data: the named file read back as zeros. It now claims each orphan
    before freeing it, and skips one a link named meanwhile. $AQ_TEST_GC_PAUSE_MS widens
    the window: ten unnamed files are kept open, and one is named and closed (and another
    opened) every 0.1 s, for 4 s."""
    with cluster_with(AQ_TEST_GC_PAUSE_MS="800") as c:
        named, held, k = {}, [], 0

        def unnamed():
            fd = os.open(c.mnt, os.O_TMPFILE | os.O_RDWR, 0o644)
            data = os.urandom(20000)
            os.write(fd, data)
            held.append((fd, data))
        for _ in range(10):
            unnamed()
        deadline = time.time() + 4
        while time.time() < deadline:
            time.sleep(0.1)
            fd, data = held.pop(0)
            p = c.path(f"n{k}")
            k += 1
            name_unnamed(fd, p)
            os.close(fd)
            named[p] = data
            unnamed()
        for fd, _ in held:
            os.close(fd)
        time.sleep(2)  # the collector's rounds past the last names
        with open("/proc/sys/vm/drop_caches", "w") as dc:
            dc.write("3")
        lost = [p for p, data in named.items() if open(p, "rb").read() != data]
        assert not lost, f"{len(lost)} of {len(named)} named files lost their data: {lost[:3]}"


def test_read_right_after_aqd_restarts_waits_for_it():
    """Regression (found by a kill -9 loop): a read through the mount right after aqd came
    back failed with EIO. Chunk reads, unlike other calls, did not try again when the
    connection they went out on had broken under them; now they wait for the server as
    long as any call does ($AQ_RECONNECT_S). Each round writes a file, kill -9s aqd,
    starts it again and reads the file back at once, through the kernel's cached inode."""
    with Cluster() as c:
        for i in range(5):
            data = os.urandom(100_000 + i)
            with open(c.path("a"), "wb") as f:
                f.write(data)
            c.kill9()
            c.restart()
            with open(c.path("a"), "rb") as f:
                assert f.read() == data, f"round {i}: the file read back differs"


def test_a_change_aqd_made_just_before_it_died_is_made_once():
    """Regression (found by a kill -9 loop, about once in ten kills): aqd committed a
    change and died before its reply left; the mount sent it again to the restarted aqd,
    where it failed as a second run does. An O_EXCL create said EEXIST, and an unlink or
    rename ENOENT, for a change that was made (so would setxattr with XATTR_CREATE
    and removexattr: EEXIST, ENODATA). Now the client numbers each change, aqd
    records it in the batch that commits it, and a change sent again is answered from
    that record. $AQ_TEST_EXIT_AFTER makes aqd exit at exactly that moment, once for each
    kind of change, through the mount."""
    with Cluster() as c:
        d = c.path("d")
        os.mkdir(d)
        with open(os.path.join(d, "a"), "w") as f:
            f.write("a")
        p = lambda name: os.path.join(d, name)  # noqa: E731
        steps = [
            ("MKNOD", lambda: os.close(os.open(p("new"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))),
            ("RENAME", lambda: os.rename(p("a"), p("b"))),
            ("LINK", lambda: os.link(p("b"), p("l"))),
            ("UNLINK", lambda: os.unlink(p("l"))),
            ("MKDIR", lambda: os.mkdir(p("sub"))),
            ("SYMLINK", lambda: os.symlink("b", p("s"))),
            ("RMDIR", lambda: os.rmdir(p("sub"))),
            ("SETXATTR", lambda: os.setxattr(p("b"), "user.once", b"1", os.XATTR_CREATE)),
            ("REMOVEXATTR", lambda: os.removexattr(p("b"), "user.once")),
        ]
        for op, change in steps:
            c.restart_with(AQ_TEST_EXIT_AFTER=op)
            pid = c.pid()
            errors = []

            def run_change(change=change):
                try:
                    change()
                except OSError as e:
                    errors.append(e)
            t = threading.Thread(target=run_change)
            t.start()
            for _ in range(200):  # aqd exits once the change has committed
                if not os.path.exists(f"/proc/{pid}"):
                    break
                time.sleep(0.05)
            assert not os.path.exists(f"/proc/{pid}"), f"aqd did not exit after {op}"
            c.restart()
            t.join(60)
            assert not t.is_alive(), f"{op} still waits after aqd came back"
            assert not errors, f"{op}, made before aqd died, failed when sent again: {errors[0]}"
        assert sorted(os.listdir(d)) == ["b", "new", "s"], os.listdir(d)
        assert os.stat(p("b")).st_nlink == 1 and os.readlink(p("s")) == "b"
        assert os.listxattr(p("b")) == []
        with open(os.path.join(c.data, "aqd.log")) as f:
            assert f.read().count("sent again by client") == len(steps)


def test_aq_up_and_down_know_a_stale_pid_file():
    """aqd.pid outlives a killed aqd, and its number may be reused. Regression: `aq up`
    took any live process with that number for aqd ("aqd already running") and started
    none, and `aq down` sent it SIGTERM. Both now check that the process is an aqd that
    is not on its way out (/proc/PID/stat), and `aq up` waits for one that is exiting."""
    with Cluster(mount=False) as c:
        c.kill9()
        other = subprocess.Popen(["sleep", "60"])
        try:
            with open(os.path.join(c.data, "aqd.pid"), "w") as f:
                f.write(f"{other.pid}\n")
            out = run(AQ, "up", "--data", c.data, "--no-mount").stdout
            assert "aqd running" in out and c.pid() != other.pid, out
            run(AQ, "down", "--data", c.data, "--no-mount")
            assert other.poll() is None, "aq down killed a process that is not aqd"
            with open(os.path.join(c.data, "aqd.pid"), "w") as f:
                f.write(f"{other.pid}\n")
            run(AQ, "down", "--data", c.data, "--no-mount")
            assert other.poll() is None, "aq down killed a process that is not aqd"
            # kill -9 and start again at once: the dying aqd still holds its lock and port
            run(AQ, "up", "--data", c.data, "--no-mount")
            os.kill(c.pid(), signal.SIGKILL)
            out = run(AQ, "up", "--data", c.data, "--no-mount").stdout
            assert "aqd running" in out, out
            c.aq("status")
        finally:
            other.kill()
            other.wait()


def daemon_stuck(pid):
    """True while pid has a thread other than its first (a dead daemon's last thread)."""
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def abort_fuse_connection(conn):
    """Fails every request of FUSE connection conn (fusectl): the way out of a hang."""
    fusectl = "/sys/fs/fuse/connections"
    if not os.listdir(fusectl):
        subprocess.run(["mount", "-t", "fusectl", "none", fusectl])
    try:
        with open(f"{fusectl}/{conn}/abort", "w") as f:
            f.write("1")
    except OSError:
        pass  # gone already


def test_umount_frees_programs_waiting_on_a_killed_mount():
    """A chaos run's finding: kill -9 of a mount while it writes an invalidation pushed by
    another client's change into a directory, and a program renames in that directory
    through it. The daemon's invalidating thread waits for the directory's lock, the
    rename holds it waiting for an answer, and the kernel fails the rename only once the
    daemon is gone, which that thread keeps from happening: both wait for good. `aq umount`
    now aborts the connection of a mount whose daemon is dead (MNT_FORCE) before it
    detaches it, and the rename returns. Up to five tries to meet the race."""
    with Cluster() as c:
        os.mkdir(c.path("rp"))
        mnt = os.path.join(c.base, "second")
        os.mkdir(mnt)
        for attempt in range(5):
            run(AQ, "mount", mnt, "--cluster", c.conf)
            conn = os.minor(os.stat(mnt).st_dev)
            for k in range(4):
                open(os.path.join(mnt, "rp", f"x{k}"), "w").close()
            stop = threading.Event()

            def pusher():  # each change here is pushed to the second mount
                i = 0
                while not stop.is_set():
                    i += 1
                    p = c.path("rp", f"a{i % 50}")
                    try:
                        open(p, "w").close()
                        os.unlink(p)
                    except OSError:
                        pass

            def renamer(k):
                x, y = os.path.join(mnt, "rp", f"x{k}"), os.path.join(mnt, "rp", f"y{k}")
                while not stop.is_set():
                    try:
                        os.rename(x, y)
                        os.rename(y, x)
                    except OSError:
                        time.sleep(0.01)

            threads = [threading.Thread(target=pusher, daemon=True)]
            threads += [threading.Thread(target=renamer, args=(k,), daemon=True) for k in range(4)]
            for t in threads:
                t.start()
            time.sleep(1.0)
            pid = mount_pid(mnt)
            os.kill(pid, signal.SIGKILL)
            t0 = time.monotonic()
            while daemon_stuck(pid) and time.monotonic() - t0 < 3:
                time.sleep(0.05)
            hung = daemon_stuck(pid)
            stop.set()
            try:
                run(AQ, "umount", mnt)
                for t in threads:
                    t.join(10)
                left = [t for t in threads if t.is_alive()]
                assert not left and not daemon_stuck(pid), \
                    f"try {attempt}: {len(left)} threads still wait on the killed mount after aq umount"
            finally:
                if any(t.is_alive() for t in threads) or daemon_stuck(pid):
                    abort_fuse_connection(conn)  # never leave them stuck
                    for t in threads:
                        t.join(10)
                    subprocess.run(["umount", "-l", mnt], capture_output=True)
            if hung:
                return
        print("  (the race did not happen in five tries)")


def test_missing_cluster_file_is_clear():
    p = run(AQ, "status", "--cluster", "/nonexistent/cluster.conf", check=False)
    assert p.returncode != 0 and "cannot open cluster file" in p.stderr, p.stderr


def fill_until_enospc(path, mib):
    """Writes path a MiB at a time, each fsync'ed, until ENOSPC (within mib MiB)."""
    block = os.urandom(1 << 20)
    try:
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
                f.flush()
                os.fsync(f.fileno())
    except OSError as e:
        assert e.errno == errno.ENOSPC, e
        return
    raise AssertionError(f"{mib} MiB written without ENOSPC")


def test_enospc_keeps_existing_files():
    with Cluster(targets_fs_size="96m") as c:
        keep = {}
        for i in range(5):
            data = os.urandom(1_000_000)
            with open(c.path(f"keep{i}"), "wb") as f:
                f.write(data)
            keep[c.path(f"keep{i}")] = hashlib.sha256(data).hexdigest()
        fill_until_enospc(c.path("filler"), 200)
        for p, h in keep.items():
            with open(p, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == h, p
        # space comes back once the filler is gone
        os.unlink(c.path("filler"))
        import time
        for _ in range(100):
            try:
                with open(c.path("after"), "wb") as f:
                    f.write(os.urandom(4_000_000))
                    os.fsync(f.fileno())
                break
            except OSError as e:
                assert e.errno == errno.ENOSPC
                time.sleep(0.2)
        else:
            raise AssertionError("space was not reclaimed after deleting the filler")
        for p, h in keep.items():
            with open(p, "rb") as f:
                assert hashlib.sha256(f.read()).hexdigest() == h, p


def test_a_full_disk_refuses_new_entries_and_aqd_lives():
    """Regression: with aqd's whole data directory on one file system, data writes stop
    at the targets' reserve, but empty files went on until the disk was full; RocksDB's
    log write then failed, and Debian's RocksDB build aborted aqd on an assertion
    (WritableFileWriter::AssertFalseAndGetStatusForPrevError), so every call failed with
    EIO. New entries now stop with ENOSPC while the metadata store keeps room to flush
    its memtables, removals go on, and creates come back once space is freed."""
    with Cluster(data_fs_size="160m") as c:
        pid = c.pid()
        x = c.path("x")
        open(x, "w").close()
        os.chmod(x, 0o644)
        os.setxattr(x, "user.a", b"1")
        fill_until_enospc(c.path("filler"), 400)
        expect_errno(errno.ENOSPC, os.setxattr, x, "user.b", b"2")
        expect_errno(errno.ENOSPC, os.link, x, c.path("x2"))
        # permission comes first, as on ext4: aqd tells nobody, who may not write root's
        # file at all, EACCES (through the mount the kernel checks before asking)
        import ctypes
        import aquifer
        from aquifer._lib import lib

        class Cred(ctypes.Structure):
            _fields_ = [("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("ngroups", ctypes.c_uint32),
                        ("groups", ctypes.c_uint32 * 32)]
        client = aquifer.Client(c.conf)
        try:
            lib.aq_setxattr_ino.restype = ctypes.c_int
            lib.aq_setxattr_ino.argtypes = [ctypes.c_void_p, ctypes.POINTER(Cred), ctypes.c_uint64, ctypes.c_char_p,
                                            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint32]
            ino = client.stat("/x").st_ino
            nobody = Cred(65534, 65534, 0)
            assert lib.aq_setxattr_ino(client._handle(), ctypes.byref(nobody), ino, b"user.b", b"2", 1, 0) == \
                -errno.EACCES
        finally:
            client.close()
        os.removexattr(x, "user.a")  # removals go on
        made = 0
        try:
            for i in range(100_000):
                os.close(os.open(c.path(f"e{i}"), os.O_CREAT | os.O_WRONLY, 0o644))
                made += 1
            raise AssertionError("100,000 new files in a full file system")
        except OSError as e:
            assert e.errno == errno.ENOSPC, (made, e)
        assert c.pid() == pid and os.path.exists(f"/proc/{pid}"), "aqd died"
        for i in range(made):
            os.unlink(c.path(f"e{i}"))
        os.unlink(c.path("filler"))
        for _ in range(100):
            try:
                with open(c.path("after"), "wb") as f:
                    f.write(b"back")
                break
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                time.sleep(0.2)
        else:
            raise AssertionError("creates did not come back once space was freed")
        with open(c.path("after"), "rb") as f:
            assert f.read() == b"back"
        with open(os.path.join(c.data, "aqd.log")) as f:
            assert "refusing new entries" in f.read()


if __name__ == "__main__":
    main(globals())

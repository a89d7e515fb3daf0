"""One huge directory, through libaq (ctypes): readdir under concurrent change, a listing
resumed from its cookie after aqd is killed and restarted, rmdir racing creates (the fence),
rmdir of a huge non-empty directory, and "what's new" (aq_changes_ino, `aq changes`) polled
while files are created.

The big directory has AQ_BIGDIR_FILES entries (default 300,000; the issue's figure is
1,000,000: run with AQ_BIGDIR_FILES=1000000). Correctness only: speed is the benchmark's job
(`aq bench meta`); timings are printed so a slow run can be seen."""
import collections
import ctypes
import errno
import json
import os
import random
import subprocess
import tempfile
import threading
import time

import aqtest
from aqtest import AQ, Cluster, run, unmount
from aquifer._lib import AQ_CREATE_EXCL, P, U64, Attr, Change, Dirent, lib  # libaq through ctypes

N_BIG = int(os.environ.get("AQ_BIGDIR_FILES", "300000"))
N_CHURN = 20000          # pre-created names that are unlinked while the big listing runs
M_CHANGES = 20000        # files created while another thread polls aq_changes_ino
RMDIR_ROUNDS = 200
WINDOW = 256             # asynchronous calls in flight
S_IFREG, S_IFDIR = 0o100000, 0o040000


def err(rc):
    return f"{rc} ({lib.aq_strerror(rc).decode()})"


def connect(conf):
    c = P()
    rc = lib.aq_connect(conf.encode(), ctypes.byref(c))
    assert rc == 0, f"aq_connect: {err(rc)}"
    return c


def mkdir(c, parent, name):
    a = Attr()
    rc = lib.aq_mkdir_at(c, None, parent, name.encode(), 0o755, ctypes.byref(a))
    assert rc == 0, f"mkdir {name}: {err(rc)}"
    return a.ino


def windowed(c, start, names, expect=0):
    """Runs start(name, &pending) for every name with WINDOW calls in flight; every result
    must be expect."""
    pend = collections.deque()

    def finish():
        nm, p = pend.popleft()
        rc = lib.aq_wait(p, None)
        assert rc == expect, f"{start.__name__} {nm!r}: {err(rc)}"

    for nm in names:
        if len(pend) >= WINDOW:
            finish()
        p = P()
        rc = start(nm, ctypes.byref(p))
        assert rc == 0, f"{start.__name__} {nm!r}: cannot start: {err(rc)}"
        pend.append((nm, p))
    while pend:
        finish()


def create_many(c, dir_ino, names):
    windowed(c, lambda nm, pp: lib.aq_mknod_start(c, None, dir_ino, nm, S_IFREG | 0o644, 0, AQ_CREATE_EXCL, pp),
             names)


def unlink_many(c, dir_ino, names):
    windowed(c, lambda nm, pp: lib.aq_unlink_start(c, None, dir_ino, nm, pp), names)


def list_pages(c, dir_ino, cookie=0, page=1024, stop_after=None):
    """Lists dir from cookie; returns (names in order, cookie to resume at). With
    stop_after, stops after the first page that brings the count to at least that."""
    ents = (Dirent * page)()
    names = []
    while True:
        n = lib.aq_readdir_ino(c, None, dir_ino, cookie, 0, ents, page)
        assert n >= 0, f"readdir: {err(n)}"
        if n == 0:
            return names, cookie
        for i in range(n):
            e = ents[i]
            assert e.name_len == len(e.name), f"dirent name_len {e.name_len} != {len(e.name)}"
            names.append(e.name)
        cookie = ents[n - 1].cookie
        if stop_after is not None and len(names) >= stop_after:
            return names, cookie


def assert_once(names, what):
    seen = collections.Counter(names)
    twice = [n for n, k in seen.items() if k > 1]
    assert not twice, f"{what}: {len(twice)} names came back more than once, e.g. {twice[:5]}"
    return set(seen)


class Fixture:
    def __init__(self):
        self.cluster = Cluster(mount=False)
        self.conf = self.cluster.conf
        self.c = connect(self.conf)
        self.big = None  # (ino, set of names) once made

    def restart_server(self):
        self.cluster.kill9()
        run(AQ, "up", "--data", self.cluster.data, "--no-mount")

    def close(self):
        lib.aq_disconnect(self.c)
        self.cluster.close()

    # for aqtest.main's log dump on failure
    @property
    def data(self):
        return self.cluster.data


def big_dir(fx):
    """The big directory: N_BIG stable names s0000000..., made once."""
    if fx.big is None:
        ino = mkdir(fx.c, 1, "big")
        names = [b"s%07d" % i for i in range(N_BIG)]
        t0 = time.time()
        step = max(N_BIG // 4, 1)
        for k in range(0, N_BIG, step):
            create_many(fx.c, ino, names[k:k + step])
            print(f"  big: {min(k + step, N_BIG)} of {N_BIG} created, {time.time() - t0:.1f}s", flush=True)
        dt = time.time() - t0
        print(f"  big: {N_BIG} files created in {dt:.1f}s ({N_BIG / dt:.0f}/s)", flush=True)
        fx.big = (ino, set(names))
    return fx.big


def list_stream(c, dir_ino, stop_after=None, then=None):
    """Lists dir through one listing stream (aq_dir_*: bucket ranges with pages in
    flight); returns the names. With stop_after, calls then() once that many came back
    and goes on with the same stream."""
    ents = (Dirent * 1024)()
    d = ctypes.c_void_p()
    assert lib.aq_dir_open(c, None, dir_ino, 0, ctypes.byref(d)) == 0
    names = []
    try:
        while True:
            n = lib.aq_dir_read(d, ents, 1024)
            assert n >= 0, f"aq_dir_read: {err(n)}"
            if n == 0:
                return names
            names.extend(ents[i].name for i in range(n))
            if then and len(names) >= stop_after:
                then()
                then = None
    finally:
        lib.aq_dir_close(d)


def test_a_readdir_under_change(fx):
    """Lists the big directory page by page (aq_readdir_ino, cookies) while one thread
    creates new names and another unlinks a pre-created churn set: every stable entry
    comes back exactly once, none twice."""
    readdir_under_change(fx, lambda ino: list_pages(fx.c, ino, page=1024)[0])


def test_a_stream_under_change(fx):
    """The same through a listing stream, whose bucket ranges are read at once."""
    readdir_under_change(fx, lambda ino: list_stream(fx.c, ino))


def readdir_under_change(fx, lister):
    ino, stable = big_dir(fx)
    churn = [b"u%07d" % i for i in range(N_CHURN)]
    create_many(fx.c, ino, churn)
    done = threading.Event()
    counts = {"created": 0, "unlinked": 0, "created_during": 0, "unlinked_during": 0}
    listing = threading.Event()
    failures = []

    def creator():
        try:
            c = connect(fx.conf)
            i = 0
            while not done.is_set():
                batch = [b"n%07d" % j for j in range(i, i + 64)]
                create_many(c, ino, batch)
                i += 64
                counts["created"] += 64
                if listing.is_set():
                    counts["created_during"] += 64
            lib.aq_disconnect(c)
        except Exception as e:  # reported by the main thread
            failures.append(e)

    def unlinker():
        try:
            c = connect(fx.conf)
            for k in range(0, len(churn), 64):
                if done.is_set():
                    break
                unlink_many(c, ino, churn[k:k + 64])
                counts["unlinked"] += len(churn[k:k + 64])
                if listing.is_set():
                    counts["unlinked_during"] += len(churn[k:k + 64])
            lib.aq_disconnect(c)
        except Exception as e:
            failures.append(e)

    threads = [threading.Thread(target=creator), threading.Thread(target=unlinker)]
    for t in threads:
        t.start()
    time.sleep(0.2)  # let both get going
    listing.set()
    t0 = time.time()
    try:
        names = lister(ino)
    finally:
        listing.clear()
        done.set()
        for t in threads:
            t.join()
    dt = time.time() - t0
    assert not failures, f"churn thread failed: {failures[0]!r}"
    print(f"  listed {len(names)} entries in {dt:.1f}s while {counts['created_during']} were created "
          f"and {counts['unlinked_during']} unlinked", flush=True)
    got = assert_once(names, "listing under change")
    missing = stable - got
    assert not missing, f"{len(missing)} stable entries missing from the listing, e.g. {sorted(missing)[:5]}"
    created = {b"n%07d" % j for j in range(counts["created"])}
    stray = got - stable - set(churn) - created
    assert not stray, f"listing returned names nobody created: {sorted(stray)[:5]}"
    assert counts["created_during"] > 0 and counts["unlinked_during"] > 0, \
        f"no churn overlapped the listing: {counts}"
    # leave only the stable set for the next tests
    unlink_many(fx.c, ino, sorted(created))
    unlink_many(fx.c, ino, churn[counts["unlinked"]:])


def test_b_listing_resumes_after_restart(fx):
    """Lists half of the big directory, kill -9s and restarts aqd, resumes from the saved
    cookie with the same client: the union is exactly the directory, nothing twice."""
    ino, stable = big_dir(fx)
    t0 = time.time()
    first, cookie = list_pages(fx.c, ino, page=2048, stop_after=len(stable) // 2)
    assert 0 < len(first) < len(stable), f"first half returned {len(first)} of {len(stable)}"
    fx.restart_server()
    t1 = time.time()
    rest, _ = list_pages(fx.c, ino, cookie=cookie, page=2048)
    print(f"  listed {len(first)}, restarted aqd ({t1 - t0:.1f}s), resumed with {len(rest)} more "
          f"({time.time() - t1:.1f}s)", flush=True)
    got = assert_once(first + rest, "listing resumed after restart")
    assert got == stable, f"resumed listing: {len(stable - got)} missing, {len(got - stable)} extra"


def test_b_stream_survives_restart(fx):
    """A listing stream that is half way when aqd is killed -9 and restarted asks again
    for the pages it lacked: the directory exactly, nothing twice."""
    ino, stable = big_dir(fx)
    names = list_stream(fx.c, ino, stop_after=len(stable) // 2, then=fx.restart_server)
    got = assert_once(names, "stream across a restart")
    assert got == stable, f"stream across a restart: {len(stable - got)} missing, {len(got - stable)} extra"


def test_c_rmdir_nonempty_huge(fx):
    """rmdir of the big directory fails with ENOTEMPTY and removes nothing."""
    ino, stable = big_dir(fx)
    t0 = time.time()
    rc = lib.aq_rmdir_at(fx.c, None, 1, b"big")
    print(f"  rmdir of {len(stable)} entries answered {err(rc)} in {time.time() - t0:.3f}s", flush=True)
    assert rc == -errno.ENOTEMPTY, f"rmdir of a non-empty directory: {err(rc)}"
    a = Attr()
    assert lib.aq_lookup(fx.c, None, 1, b"big", ctypes.byref(a)) == 0 and a.ino == ino
    for nm in random.Random(3).sample(sorted(stable), 100):
        rc = lib.aq_lookup(fx.c, None, ino, nm, ctypes.byref(a))
        assert rc == 0, f"{nm!r} after a failed rmdir: {err(rc)}"


def test_c_rmdir_races_create(fx):
    """RMDIR_ROUNDS times: K threads create in d while the main thread removes d. Either
    rmdir fails with ENOTEMPTY (some create landed first), or it succeeds and every create
    failed with ENOENT: no entry is ever left inside a removed directory."""
    K, PER = 3, 4
    parent = mkdir(fx.c, 1, "races")
    rng = random.Random(7)
    outcomes = collections.Counter()
    t0 = time.time()
    for rnd in range(RMDIR_ROUNDS):
        name = b"d%04d" % rnd
        d = mkdir(fx.c, parent, name.decode())
        results = [[] for _ in range(K)]
        gate = threading.Barrier(K + 1)

        delays = [rng.choice([0, 0, 0.0005, 0.001, 0.002]) for _ in range(K + 1)]

        def creator(k):
            gate.wait()
            if delays[k]:
                time.sleep(delays[k])
            for j in range(PER):
                nm = b"t%d_%d" % (k, j)
                rc = lib.aq_mknod(fx.c, None, d, nm, S_IFREG | 0o644, 0, AQ_CREATE_EXCL, None)
                results[k].append((nm, rc))
                if rc == -errno.ENOENT:
                    break

        ts = [threading.Thread(target=creator, args=(k,)) for k in range(K)]
        for t in ts:
            t.start()
        gate.wait()
        if delays[K]:
            time.sleep(delays[K])
        rc = lib.aq_rmdir_at(fx.c, None, parent, name)
        for t in ts:
            t.join()
        flat = [r for rs in results for r in rs]
        bad = [(nm, r) for nm, r in flat if r not in (0, -errno.ENOENT)]
        assert not bad, f"round {rnd}: creates failed oddly: {[(nm, err(r)) for nm, r in bad]}"
        made = [nm for nm, r in flat if r == 0]
        if rc == 0:
            outcomes["removed"] += 1
            assert not made, f"round {rnd}: rmdir succeeded but creates {made} succeeded too"
            a = Attr()
            rc2 = lib.aq_lookup(fx.c, None, parent, name, ctypes.byref(a))
            assert rc2 == -errno.ENOENT, f"round {rnd}: removed directory still found: {err(rc2)}"
            for nm, _ in flat:
                rc2 = lib.aq_lookup(fx.c, None, d, nm, ctypes.byref(a))
                assert rc2 == -errno.ENOENT, f"round {rnd}: {nm!r} found inside a removed directory: {err(rc2)}"
            n = lib.aq_readdir_ino(fx.c, None, d, 0, 0, (Dirent * 16)(), 16)
            assert n in (0, -errno.ENOENT), f"round {rnd}: readdir of a removed directory: {n}"
        else:
            assert rc == -errno.ENOTEMPTY, f"round {rnd}: rmdir: {err(rc)}"
            assert made, f"round {rnd}: rmdir said ENOTEMPTY but no create succeeded"
            outcomes["notempty"] += 1
            names, _ = list_pages(fx.c, d)
            assert sorted(names) == sorted(made), f"round {rnd}: directory holds {names}, created {made}"
            for nm in made:
                assert lib.aq_unlink_at(fx.c, None, d, nm) == 0
            rc2 = lib.aq_rmdir_at(fx.c, None, parent, name)
            assert rc2 == 0, f"round {rnd}: rmdir after emptying: {err(rc2)}"
    print(f"  {RMDIR_ROUNDS} rounds in {time.time() - t0:.1f}s: {dict(outcomes)}", flush=True)
    left, _ = list_pages(fx.c, parent)
    assert left == [], f"directories left behind: {left[:5]}"


def poll_changes(c, dir_ino, want, deadline_s, page=500):
    """Polls aq_changes_ino from cursor 0, following next cursors, until want entries were
    seen or the deadline passes. Returns [(cursor, ino, name)]."""
    out = (Change * page)()
    nxt = U64()
    cursor, seen = 0, []
    deadline = time.time() + deadline_s
    while len(seen) < want and time.time() < deadline:
        n = lib.aq_changes_ino(c, None, dir_ino, cursor, out, page, ctypes.byref(nxt))
        assert 0 <= n <= page, f"aq_changes_ino: {err(n) if n < 0 else n}"
        for i in range(n):
            seen.append((out[i].cursor, out[i].ino, out[i].name))
        assert nxt.value >= cursor, f"next cursor went back: {nxt.value} < {cursor}"
        if n:
            assert nxt.value >= out[n - 1].cursor, "next cursor before the last entry returned"
        cursor = nxt.value
        if n < page:
            time.sleep(0.01)
    return seen


def test_d_changes_while_creating(fx):
    """One thread creates M_CHANGES files while another polls aq_changes_ino in pages of
    500: every file is seen once, in cursor order, nothing else."""
    d = mkdir(fx.c, 1, "chg")
    names = [b"c%06d" % i for i in range(M_CHANGES)]
    failures = []

    def creator():
        try:
            c = connect(fx.conf)
            for k in range(0, len(names), 1000):
                create_many(c, d, names[k:k + 1000])
            lib.aq_disconnect(c)
        except Exception as e:
            failures.append(e)

    t = threading.Thread(target=creator)
    t0 = time.time()
    t.start()
    seen = poll_changes(fx.c, d, M_CHANGES, deadline_s=150)
    t.join()
    assert not failures, f"creator failed: {failures[0]!r}"
    print(f"  {len(seen)} changes seen while {M_CHANGES} were created, {time.time() - t0:.1f}s", flush=True)
    got = assert_once([nm for _, _, nm in seen], "changes")
    cursors = [cur for cur, _, _ in seen]
    assert all(a < b for a, b in zip(cursors, cursors[1:])), "changes not in strictly increasing cursor order"
    assert got == set(names), f"changes: {len(set(names) - got)} missed, {len(got - set(names))} extra"
    a = Attr()
    for cur, ino, nm in random.Random(5).sample(seen, 50):
        assert lib.aq_lookup(fx.c, None, d, nm, ctypes.byref(a)) == 0 and a.ino == ino, f"{nm!r}: wrong inode"


def cli_changes(fx, path, *args):
    p = run(AQ, "changes", path, *args, "--cluster", fx.conf)
    lines = p.stdout.splitlines()
    assert lines and lines[-1].startswith("next "), f"aq changes output does not end with next: {lines[-3:]}"
    rows = []
    for ln in lines[:-1]:
        cur, ino, name = ln.split(" ", 2)
        rows.append((int(cur), int(ino), name.encode()))
    return rows, int(lines[-1].split()[1])


def test_e_changes_cli(fx):
    """`aq changes DIR --since C [--limit N]` prints `CURSOR INODE NAME` lines and `next
    CURSOR`, the same entries aq_changes_ino returns."""
    d = mkdir(fx.c, 1, "chgcli")
    create_many(fx.c, d, [b"e%03d" % i for i in range(50)])
    api = poll_changes(fx.c, d, 50, deadline_s=30)
    assert len(api) == 50
    rows, nxt = cli_changes(fx, "/chgcli")
    assert rows == api, "aq changes --since 0 differs from aq_changes_ino"
    assert nxt >= api[-1][0]
    since = api[19][0]
    rows, _ = cli_changes(fx, "/chgcli", "--since", str(since))
    assert rows == api[20:], "aq changes --since C must return exactly the entries after C"
    rows, nxt5 = cli_changes(fx, "/chgcli", "--since", str(since), "--limit", "5")
    assert rows == api[20:25] and nxt5 == api[24][0], f"--limit 5: {rows} next {nxt5}"
    rows, _ = cli_changes(fx, "/chgcli", "--since", str(nxt5))
    assert rows == api[25:]
    rows, after = cli_changes(fx, "/chgcli", "--since", str(nxt))
    assert rows == [] and after >= nxt, "nothing new must print only next"
    p = run(AQ, "changes", "/no-such-dir", "--cluster", fx.conf, check=False)
    assert p.returncode != 0 and "no such file" in p.stderr.lower(), p.stderr


def test_f_bench_meta_runs(fx):
    """`aq bench meta` end to end at a small size: every phase has a rate for both sides,
    ten deciles each; `--stop-after list` runs the first four phases, reports the rest as
    null and leaves the files (so a 10M-file run need not unlink them)."""
    with tempfile.TemporaryDirectory() as local:
        p = run(AQ, "bench", "meta", "--files", "3000", "--compare", local, "--json", "--cluster", fx.conf)
        r = json.loads(p.stdout)
        phases = ("create", "stat", "lookup_miss", "list", "rename", "unlink")
        for side in ("aquifer", "compare"):
            assert all(r[side][k] > 0 for k in phases), r[side]
            assert len(r[side]["create_deciles"]) == 10 and len(r[side]["stat_deciles"]) == 10
        assert r["files"] == 3000 and os.listdir(local) == [], "the compare side must clean up"
    p = run(AQ, "bench", "meta", "--files", "2000", "--stop-after", "list", "--json", "--cluster", fx.conf)
    r = json.loads(p.stdout)["aquifer"]
    assert all(r[k] > 0 for k in phases[:4]) and r["rename"] is None and r["unlink"] is None, r
    left = [e for e in list_pages(fx.c, 1)[0] if e.startswith(b"bench-")]
    assert len(left) == 1, left
    p = run(AQ, "bench", "meta", "--stop-after", "unlink", "--cluster", fx.conf, check=False)
    assert p.returncode == 2 and "--stop-after" in p.stderr


def test_g_bench_meta_over_fwdfs(fx):
    """bench/fwdfs, the forwarding-only FUSE layer docs/performance.md measures as the
    floor, mounts and carries `aq bench meta --via fuse` through every phase, leaving
    its source directory as it found it."""
    with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as mnt:
        fs = subprocess.Popen([os.path.join(aqtest.ROOT, "bin", "fwdfs"), src, mnt],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            for _ in range(100):
                if os.path.ismount(mnt) or fs.poll() is not None:
                    break
                time.sleep(0.05)
            assert os.path.ismount(mnt), f"fwdfs did not mount: {fs.stderr.read() if fs.poll() is not None else ''}"
            p = run(AQ, "bench", "meta", "--via", "fuse", "--dir", mnt, "--files", "2000", "--threads", "2",
                    "--json")
            r = json.loads(p.stdout)["aquifer"]
            phases = ("create", "stat", "lookup_miss", "list", "rename", "unlink")
            assert all(r[k] > 0 for k in phases), r
            assert os.listdir(src) == [], os.listdir(src)
        finally:
            unmount(mnt)
            try:
                fs.wait(timeout=10)
            except subprocess.TimeoutExpired:
                fs.kill()
                fs.wait()


if __name__ == "__main__":
    aqtest.main(globals(), setup=Fixture)

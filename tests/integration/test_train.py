"""aq bench gen and aq bench train against a real aqd and FUSE mount: the JSON a training
run prints (native, through the mount, and a local copy in the same run), shards read as
records, and "never wrong bytes": a byte flipped in a chunk record on disk makes reads fail
with EIO through the mount and makes the benchmark fail, and aqd logs the chunk. A mount on
aqd's machine reads files' first bytes from aqd's segment files itself (local reads), and
reads through aqd where it cannot.

Correctness only: speed is the benchmark's job (docs/performance.md). Runs as root (the FUSE
mount, drop_caches)."""
import errno
import glob
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time

import aqtest
from aqtest import AQ, Cluster, expect_errno, proc_io, proc_status_kib, run

N_IMAGES = 500
IMAGE_BYTES = 20000          # mean; sizes vary +-30%
SHARD_BYTES = 32 << 20
REC_MAGIC = 0x51534741       # segment record header (src/data/data_internal.h), little-endian
REC_HDR = 64
SIDE_KEYS = {"samples_per_s", "mb_per_s", "au", "max_accelerators", "samples", "bytes", "wall_s", "ttfb_s"}


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def train_json(c, *args):
    p = c.aq("bench", "train", "--json", *args)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected one JSON line, got {p.stdout!r}"
    return json.loads(lines[0])


def check_side(side, samples, nbytes):
    assert set(side) == SIDE_KEYS, f"keys {sorted(side)}"
    assert side["samples"] == samples and side["bytes"] == nbytes, side
    assert side["samples_per_s"] > 0 and side["mb_per_s"] > 0, side
    assert 0.0 <= side["au"] <= 1.0, side
    assert side["wall_s"] > 0 and 0 <= side["ttfb_s"] <= side["wall_s"], side


def manifest(path):
    with open(os.path.join(path, "MANIFEST")) as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("aquifer-dataset 1 "), lines[0]
    return [(ln.split()[0], int(ln.split()[1])) for ln in lines[1:]]


def test_images_native_fuse_and_local(c):
    local = os.path.join(c.base, "img-local")
    g = json.loads(c.aq("bench", "gen", "--kind", "images", "--files", str(N_IMAGES), "--file-size",
                        str(IMAGE_BYTES), "--dir", "/img", "--local", local, "--json").stdout)
    files = manifest(local)
    nbytes = sum(size for _, size in files)
    assert g["files"] == N_IMAGES == len(files) and g["bytes"] == nbytes, g
    assert all(0.7 * IMAGE_BYTES <= s <= 1.3 * IMAGE_BYTES for _, s in files)
    assert len({s for _, s in files}) > N_IMAGES // 4, "sizes should vary"
    # the same bytes in Aquifer (read through the mount) and in the local copy
    for name in (files[0][0], files[-1][0]):
        with open(c.path("img", name), "rb") as a, open(os.path.join(local, name), "rb") as b:
            assert a.read() == b.read()

    stage = os.path.join(c.base, "stage")
    os.makedirs(stage)
    out = train_json(c, "--dir", "/img", "--compare-local", local, "--cold", "--find-max", "--compute-us", "50",
                     "--stage-to", stage)
    assert set(out) == {"kind", "via", "workers", "accelerators", "batch", "compute_us", "epochs", "cold",
                        "aquifer", "local", "stage", "loopback_mb_per_s"}, sorted(out)
    assert out["kind"] == "images" and out["via"] == "native" and out["workers"] == 4 and out["cold"] is True
    for side in ("aquifer", "local"):
        check_side(out[side], N_IMAGES, nbytes)
        assert isinstance(out[side]["max_accelerators"], int) and out[side]["max_accelerators"] >= 0
    st = out["stage"]
    assert st["copy_s"] > 0 and st["ttfb_s"] >= st["copy_s"] and st["total_s"] >= st["ttfb_s"], st
    assert st["direct_total_s"] == out["aquifer"]["wall_s"], st
    assert os.listdir(stage) == [], "the staged copy is removed"
    lb = out["loopback_mb_per_s"]
    assert lb is None or lb > 0, lb

    out = train_json(c, "--via", "fuse", "--dir", c.path("img"), "--compare-local", local, "--epochs", "2",
                     "--workers", "3", "--no-loopback")
    assert out["via"] == "fuse" and out["workers"] == 3 and out["loopback_mb_per_s"] is None
    assert out["aquifer"]["max_accelerators"] is None and out["stage"] is None
    for side in ("aquifer", "local"):
        check_side(out[side], 2 * N_IMAGES, 2 * nbytes)


def test_images_in_class_directories(c):
    """--classes K lays images out as ImageNet does, file i in class-(i % K): the same
    bytes in Aquifer and in the local copy, every file in its class directory, and a
    training run reads them all, native (one listing per class directory), through the
    mount, and from a staged copy. A manifest naming a path out of the dataset is
    refused."""
    local = os.path.join(c.base, "cls-local")
    g = json.loads(c.aq("bench", "gen", "--files", "60", "--file-size", "3000", "--classes", "7", "--dir", "/cls",
                        "--local", local, "--json").stdout)
    assert g["classes"] == 7 and g["files"] == 60, g
    files = manifest(local)
    assert len(files) == 60
    for i, (name, _) in enumerate(files):
        assert name == f"class-{i % 7:04d}/img-{i:08d}.bin", name
        with open(c.path("cls", name), "rb") as a, open(os.path.join(local, name), "rb") as b:
            assert a.read() == b.read()
    assert sorted(os.listdir(c.path("cls"))) == ["MANIFEST"] + [f"class-{k:04d}" for k in range(7)]
    nbytes = sum(size for _, size in files)
    stage = os.path.join(c.base, "cls-stage")
    os.makedirs(stage)
    out = train_json(c, "--dir", "/cls", "--compare-local", local, "--cold", "--no-loopback", "--stage-to", stage)
    for side in ("aquifer", "local"):
        check_side(out[side], 60, nbytes)
    out = train_json(c, "--via", "fuse", "--dir", c.path("cls"), "--compare-local", local, "--no-loopback")
    check_side(out["aquifer"], 60, nbytes)

    bad = os.path.join(c.base, "cls-bad")
    shutil.copytree(local, bad)
    with open(os.path.join(bad, "MANIFEST")) as f:
        text = f.read()
    with open(os.path.join(bad, "MANIFEST"), "w") as f:
        f.write(text.replace("class-0000/img-00000000.bin", "../img-00000000.bin"))
    p = c.aq("bench", "train", "--via", "local", "--dir", bad, "--no-loopback", check=False)
    assert p.returncode != 0 and "malformed line '../img-00000000.bin'" in p.stderr, p.stderr


def test_local_side_on_a_loop_device_is_flagged(c):
    """A local side on a loop device reads slower than the disk under it (1.5-1.7x on the
    project's machine), which once made Aquifer's ratios look better than a real local
    copy (docs/performance.md): aq bench train and aq bench meta say so on stderr, and
    about a local side mounted with online discard. A local side on the disk itself draws
    no loop warning."""
    local = os.path.join(c.base, "lw-local")
    c.aq("bench", "gen", "--kind", "images", "--files", "20", "--file-size", "5000", "--dir", "/lw",
         "--local", local)
    p = c.aq("bench", "train", "--dir", "/lw", "--compare-local", local, "--no-loopback")
    assert "loop device" not in p.stderr, p.stderr
    img, mnt = os.path.join(c.base, "loop.img"), os.path.join(c.base, "loopfs")
    os.makedirs(mnt)
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    aqtest.run("mkfs.ext4", "-q", img)
    if aqtest.run("mount", "-o", "loop", img, mnt, check=False).returncode:
        print("no loop device on this machine: only the local side on the disk was checked")
        return
    try:
        shutil.copytree(local, os.path.join(mnt, "img"))
        p = c.aq("bench", "train", "--dir", "/lw", "--compare-local", os.path.join(mnt, "img"), "--no-loopback")
        assert "is on a loop device (/dev/loop" in p.stderr, p.stderr
        os.mkdir(c.path("lwm"))
        p = c.aq("bench", "meta", "--dir", "/lwm", "--files", "100", "--threads", "1", "--compare", mnt)
        assert "is on a loop device (/dev/loop" in p.stderr, p.stderr
        assert "mounted with discard" not in p.stderr, p.stderr
        # online discard: after a big removal there (a previous run's files) ext4 ran
        # creates at 2k/s instead of 40k for minutes (docs/performance.md)
        aqtest.run("mount", "-o", "remount,discard", mnt)
        p = c.aq("bench", "meta", "--dir", "/lwm", "--files", "100", "--threads", "1", "--compare", mnt)
        assert f"{mnt} is on a file system mounted with discard" in p.stderr, p.stderr
    finally:
        aqtest.unmount(mnt)


def test_shards_native(c):
    g = json.loads(c.aq("bench", "gen", "--kind", "shards", "--files", "2", "--file-size", str(SHARD_BYTES),
                        "--dir", "/shards", "--json").stdout)
    assert g["bytes"] == 2 * SHARD_BYTES, g
    # --cold: the 1 MiB records come off the disk with O_DIRECT and go out without a copy;
    # the benchmark checks every record's crc32c, so a wrong offset or length fails it
    out = train_json(c, "--dir", "/shards", "--no-loopback", "--batch", "8", "--compute-us", "0", "--cold")
    assert out["kind"] == "shards" and out["local"] is None and out["cold"] is True
    check_side(out["aquifer"], 2 * SHARD_BYTES // (1 << 20), 2 * SHARD_BYTES)
    # the same records through the mount, one shard kept open per loader
    out = train_json(c, "--via", "fuse", "--dir", c.path("shards"), "--no-loopback", "--batch", "8")
    check_side(out["aquifer"], 64, 2 * SHARD_BYTES)


def test_direct_reads_leave_aqd_small(c):
    # Regression: O_DIRECT read buffers came from posix_memalign, and glibc's arenas kept
    # what 128 workers freed: aqd held 1 GB after reading 2 GiB this way (2.5 GB after an
    # 8 GiB epoch). They now come from a pool of bounded size (src/data/buf.c).
    c.aq("bench", "gen", "--kind", "shards", "--files", "2", "--file-size", str(SHARD_BYTES), "--dir", "/leak")
    epochs = (2 << 30) // (2 * SHARD_BYTES)
    out = train_json(c, "--dir", "/leak", "--no-loopback", "--batch", "8", "--compute-us", "0", "--cold",
                     "--epochs", str(epochs))
    check_side(out["aquifer"], epochs * 64, epochs * 2 * SHARD_BYTES)
    rss = proc_status_kib(c.pid(), "VmRSS") << 10
    # the pool keeps at most 256 MiB, and at most 128 reads are in flight
    assert rss < 512 << 20, f"aqd holds {rss >> 20} MiB after reading 2 GiB"


def find_on_disk(c, pattern):
    """(segment path, offset) of the one place pattern is stored under var/targets."""
    hits = []
    for seg in sorted(glob.glob(os.path.join(c.data, "targets", "t*", "seg-*"))):
        with open(seg, "rb") as f:
            data = f.read()
        pos = data.find(pattern)
        while pos >= 0:
            hits.append((seg, pos))
            pos = data.find(pattern, pos + 1)
    assert len(hits) == 1, f"pattern found {len(hits)} times on disk: {hits}"
    return hits[0]


def flip_byte(seg, pos):
    """Changes the byte at pos of a segment file behind aqd's back, durably."""
    with open(seg, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x5A]))
        f.flush()
        os.fsync(f.fileno())


def test_flipped_byte_is_eio_never_data(c):
    """Regression guard for the crc32c check of every block read: a chunk changed on disk
    behind aqd's back must fail the read (EIO through the mount, an error from the
    benchmark), be logged with the chunk's identity, and never return the bad bytes."""
    c.aq("bench", "gen", "--via", "fuse", "--dir", c.path("bad"), "--files", "20", "--file-size", "100000")
    victim = c.path("bad", "img-00000007.bin")
    with open(victim, "rb") as f:
        good = f.read()
    ino = os.stat(victim).st_ino
    data_off = 66000                          # in the chunk's second 64 KiB block
    assert len(good) >= 70000
    seg, pos = find_on_disk(c, good[data_off:data_off + 32])
    with open(seg, "rb") as f:
        f.seek(pos - data_off - REC_HDR)      # the record starts at the chunk's byte 0
        magic, = struct.unpack("<I", f.read(4))
        assert magic == REC_MAGIC, f"no record header before the data: {magic:#x}"
    flip_byte(seg, pos)
    drop_caches()

    def read_all(path):
        with open(path, "rb") as f:
            return f.read()
    expect_errno(errno.EIO, read_all, victim)
    assert read_all(c.path("bad", "img-00000006.bin")), "the other files still read"

    def corrupt_lines():
        with open(os.path.join(c.data, "aqd.log")) as f:
            return sum(1 for ln in f if "corrupt" in ln and f"ino {ino:x} idx 0" in ln)
    before = corrupt_lines()
    p = c.aq("bench", "train", "--dir", "/bad", "--no-loopback", check=False)
    assert p.returncode != 0 and p.stdout == "", f"exit {p.returncode}, stdout {p.stdout!r}"
    assert "img-00000007.bin" in p.stderr and f"ino {ino:x}" in p.stderr and "corrupt" in p.stderr, p.stderr
    # one native read of the bad chunk, one read on the server (it once read it twice)
    assert corrupt_lines() - before == 1, f"{corrupt_lines() - before} 'corrupt' lines for one read"
    drop_caches()
    p = c.aq("bench", "train", "--via", "fuse", "--dir", c.path("bad"), "--no-loopback", check=False)
    assert p.returncode != 0 and p.stdout == "", f"exit {p.returncode}, stdout {p.stdout!r}"
    assert "img-00000007.bin" in p.stderr and "input/output error" in p.stderr.lower(), p.stderr

    with open(os.path.join(c.data, "aqd.log")) as f:
        log = [ln for ln in f if "corrupt" in ln and f"ino {ino:x} idx 0" in ln]
    assert log, f"aqd.log has no 'corrupt' line for ino {ino:x}"


def write_files(c, dirname, n):
    """n files of 100-200 KB of random bytes under the mount; {name: bytes}."""
    os.makedirs(c.path(dirname))
    files = {}
    for i in range(n):
        data = os.urandom(100_000 + 2_500 * i % 100_000)
        with open(c.path(dirname, f"f{i:03d}"), "wb") as f:
            f.write(data)
        files[f"f{i:03d}"] = data
    return files


def test_a_mount_on_aqds_machine_reads_segments_itself(c):
    """Local reads (src/client/local.c): a mount on aqd's machine asks aqd where a file's
    first bytes lie (OPEN_MAP) and reads them from aqd's segment file itself, checked as
    aqd checks them: aqd no longer sends them down its socket, and the disk's reads are
    the mount's, each byte read from the disk once. With $AQ_LOCAL_READS=0 aqd reads and
    sends them. Every byte comes back right both ways."""
    files = write_files(c, "local", 40)
    total = sum(len(d) for d in files.values())
    for env, reader in (({}, "mount"), ({"AQ_LOCAL_READS": "0"}, "aqd")):
        mnt = os.path.join(c.base, f"mnt-{reader}")
        os.makedirs(mnt)
        p = subprocess.Popen([AQ, "mount", mnt, "--cluster", c.conf, "--foreground"], env={**os.environ, **env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if os.path.ismount(mnt):
                    break
                time.sleep(0.1)
            drop_caches()
            before = [proc_io(pid, k) for pid in (p.pid, c.pid()) for k in ("read_bytes", "wchar")]
            # in an order of their own, as a loader's epoch reads samples: one file's
            # bytes then lie apart on disk from the last one's
            for name in sorted(files, key=lambda n: hashlib.md5(n.encode()).digest()):
                with open(os.path.join(mnt, "local", name), "rb") as f:
                    assert f.read() == files[name], f"{name} read wrong through the mount ({reader} reads)"
            after = [proc_io(pid, k) for pid in (p.pid, c.pid()) for k in ("read_bytes", "wchar")]
        finally:
            run("umount", mnt, check=False)
            p.wait(timeout=10)
        m_read, _, a_read, a_sent = (x - y for x, y in zip(after, before))
        msg = f"{reader} should read the {total} bytes: mount read {m_read}, aqd read {a_read} and sent {a_sent}"
        if reader == "mount":
            assert a_sent < total // 4, msg
        else:
            assert a_sent >= total, msg
        if m_read + a_read:  # the file system counts block reads (tmpfs does not)
            assert (m_read if reader == "mount" else a_read) >= total, msg
            # once: a probe for cached pages (a read with RWF_NOWAIT) started the kernel's
            # read-ahead of them, and an O_DIRECT read then read them again
            assert reader != "mount" or m_read < total * 1.4, msg


def test_the_read_ring_on_aqds_machine_reads_segments_itself(c):
    """The batched read ring (aq_ioring: `aq bench train --via native`, aquifer.torch) on
    aqd's machine asks aqd where each piece lies (LOCATE, answered on aqd's loop) and reads
    it from aqd's segment file itself, checked as aqd checks it: aqd no longer sends the
    bytes, of images or of a shard's 1 MiB records. With $AQ_LOCAL_READS=0 it sends them.
    The benchmark checks every sample's checksum."""
    c.aq("bench", "gen", "--kind", "images", "--files", "200", "--dir", "/ring")
    c.aq("bench", "gen", "--kind", "shards", "--files", "2", "--file-size", str(9 << 20), "--dir", "/ringsh")
    for kind, d in (("images", "/ring"), ("shards", "/ringsh")):
        for env, reader in (({}, "client"), ({"AQ_LOCAL_READS": "0"}, "aqd")):
            drop_caches()
            before = proc_io(c.pid(), "wchar")
            p = subprocess.run([AQ, "bench", "train", "--via", "native", "--dir", d, "--cluster", c.conf,
                                "--compute-us", "0", "--no-loopback", "--json"], env={**os.environ, **env},
                               capture_output=True, text=True)
            assert p.returncode == 0, f"{kind}, {reader} reads: {p.stdout}{p.stderr}"
            sent = proc_io(c.pid(), "wchar") - before
            total = json.loads(p.stdout.strip().splitlines()[-1])["aquifer"]["bytes"]
            assert total >= (200 * 100000 if kind == "images" else 2 * (9 << 20)), total
            msg = f"{kind}: {reader} should read the {total} bytes; aqd sent {sent}"
            if reader == "client":
                assert sent < total // 4, msg
            else:
                assert sent >= total, msg


def resident_bytes(paths):
    """Bytes of these files in the page cache (util-linux fincore)."""
    p = run("fincore", "--bytes", "--noheadings", "--raw", "--output", "RES", *paths)
    return sum(int(x) for x in p.stdout.split())


def test_the_read_ring_reads_big_pieces_itself_with_o_direct(c):
    """Pieces of 256 KiB or more (a shard's records, whole chunks) that the read ring on
    aqd's machine reads from aqd's segment files go around the page cache (O_DIRECT, into
    the ring's own buffers, then checked and copied out): every byte right, for pieces that
    start a record (its header read with them) or not, cross a chunk, end in a record
    shorter than its chunk or past the end of the file; aqd sends none of those bytes and
    the page cache keeps none (without io_uring they go through the page cache, as small
    pieces do). A byte flipped on disk in such a piece fails its read with
    EIO, from the first block of a record or a later one."""
    import aquifer
    cs = 4 << 20
    size = 2 * cs + 1_500_000
    data = os.urandom(size)
    with open(c.path("ring-big"), "wb") as f:
        f.write(data)
    reads = [(0, size),                       # whole chunks, then the last record's bytes
             (300_000, 700_000),              # inside a chunk, not at a block's start
             (cs - 100_000, 600_000),         # 100,000 buffered, then 500,000 from a record's start
             (2 * cs + 1_000_000, 400_000),   # the end of a record shorter than its chunk
             (size - 300_000, 1_000_000)]     # past the end of the file: clipped
    segs = glob.glob(os.path.join(c.data, "targets", "t*", "seg-*"))
    drop_caches()
    sent = proc_io(c.pid(), "wchar")
    cl = aquifer.connect(c.conf)
    try:
        got = cl.read_many([("/ring-big", off, n) for off, n in reads])
        for (off, n), b in zip(reads, got):
            assert bytes(b) == data[off:off + n], f"{n} bytes at {off} read wrong"
        total = sum(len(b) for b in got)
        sent = proc_io(c.pid(), "wchar") - sent
        assert sent < total // 4, f"aqd sent {sent} bytes of the {total} read"
        cached = resident_bytes(segs)
        assert cached < total // 4, f"{cached} bytes of aqd's segment files in the page cache after {total} read"

        # without io_uring (a kernel or seccomp policy without it) big pieces go through
        # the page cache, still read by the client, still right
        os.environ["AQ_DATA_NO_URING"] = "1"
        try:
            drop_caches()
            sent = proc_io(c.pid(), "wchar")
            got = cl.read_many([("/ring-big", off, n) for off, n in reads])
            assert [bytes(b) for b in got] == [data[off:off + n] for off, n in reads], "read wrong without io_uring"
            sent = proc_io(c.pid(), "wchar") - sent
            assert sent < total // 4, f"without io_uring aqd sent {sent} bytes of the {total} read"
            assert resident_bytes(segs) > total // 2, "without io_uring the page cache should hold what was read"
        finally:
            del os.environ["AQ_DATA_NO_URING"]

        # a byte flipped in a piece that starts inside chunk 1 (its blocks read alone), then
        # in one that starts chunk 0 (the record's header read with them)
        for at in (cs + (1 << 20) + 2 * (64 << 10) + 5, 1000):
            flip_byte(*find_on_disk(c, data[at:at + 32]))
            drop_caches()
            start = at - at % (1 << 20)
            expect_errno(errno.EIO, cl.read_many, [("/ring-big", start, 1 << 20)])
            # and a small piece over it, read through the page cache (its blocks alone,
            # past a record's first block)
            small = at - at % (64 << 10)
            expect_errno(errno.EIO, cl.read_many, [("/ring-big", small, 100_000)])
            ok = cl.read_many([("/ring-big", 2 * cs, 600_000)])[0]
            assert bytes(ok) == data[2 * cs:2 * cs + 600_000], "another chunk"
    finally:
        cl.close()


def test_reads_go_through_aqd_where_its_files_are_hidden(c):
    """A mount on aqd's machine that cannot open aqd's segment files (a container: here a
    mount namespace with an empty tmpfs over aqd's targets) reads every byte right through
    aqd, and after LOCAL_FAILS_MAX failed local reads pauses them."""
    files = write_files(c, "hidden", 24)
    mnt = os.path.join(c.base, "mnt-hidden")
    os.makedirs(mnt)
    log = os.path.join(c.base, "mount-hidden.log")
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    script = f"""
import hashlib, os, subprocess, time
targets = {os.path.join(c.data, "targets")!r}
subprocess.run(["mount", "-t", "tmpfs", "none", targets], check=True)
assert not os.listdir(targets)
log = open({log!r}, "w")
p = subprocess.Popen([{AQ!r}, "mount", {mnt!r}, "--cluster", {c.conf!r}, "--foreground"], stdout=log, stderr=log)
try:
    for _ in range(100):
        if os.path.ismount({mnt!r}):
            break
        time.sleep(0.1)
    os.sync()
    open("/proc/sys/vm/drop_caches", "w").write("3")
    for name, digest in {digests!r}.items():
        with open(os.path.join({mnt!r}, "hidden", name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name + " read wrong"
finally:
    subprocess.run(["umount", {mnt!r}])
    p.wait(timeout=10)
print("ok")
"""
    p = run("unshare", "-m", "--propagation", "private", sys.executable, "-c", script, check=False)
    assert p.returncode == 0 and p.stdout == "ok\n", p.stdout + p.stderr
    with open(log) as f:
        text = f.read()
    assert text.count("local reads paused after 16 failures") == 1, text[-2000:]
    assert os.listdir(os.path.join(c.data, "targets")), "the tmpfs leaked out of the namespace"


def test_reads_of_a_big_file_skip_aqd(c):
    """Local reads of any chunk (LOCATE, src/client/local.c): random 4 KiB reads of a
    file many chunks long, and the file read in order, through the mount on aqd's machine,
    come from aqd's segment files, not down aqd's socket, and every byte is right. The locations an open file
    keeps go with the inode's write generation: a write through the same client is seen
    by the next read of the same handle, and another client's write at the next open."""
    import aquifer
    import random
    size = 24 << 20
    data = bytearray(os.urandom(size))
    # zeros where this client writes below: aqd punches the record a rewrite replaces, and
    # a punched block of zeros still passes its check, so only the write generation can
    # tell the reader that what it located is old
    data[5 << 20:(5 << 20) + (64 << 10)] = bytes(64 << 10)
    with open(c.path("big-random"), "wb") as f:
        f.write(data)
    drop_caches()
    rng = random.Random(7)
    offs = [rng.randrange(0, size // 4096) * 4096 for _ in range(400)]
    sent = proc_io(c.pid(), "wchar")
    fd = os.open(c.path("big-random"), os.O_RDONLY)
    try:
        for off in offs:
            assert os.pread(fd, 4096, off) == data[off:off + 4096], f"4 KiB at {off} read wrong"
    finally:
        os.close(fd)
    sent = proc_io(c.pid(), "wchar") - sent
    assert sent < len(offs) * 4096 // 4, f"aqd sent {sent} bytes for {len(offs) * 4096} read at random"
    # and a sequential reader (the kernel's read-ahead asks in pieces of up to 1 MiB): no
    # read-ahead windows through aqd either
    drop_caches()
    sent = proc_io(c.pid(), "wchar")
    with open(c.path("big-random"), "rb") as f:
        assert f.read() == data, "the file read whole differs"
    sent = proc_io(c.pid(), "wchar") - sent
    assert sent < size // 4, f"aqd sent {sent} bytes for the {size} read in order"

    cl, other = aquifer.connect(c.conf), aquifer.connect(c.conf)
    try:
        at = (5 << 20) + 100
        with cl.open("/big-random", "r+b") as f:
            f.seek(5 << 20)
            assert f.read(4096) == data[5 << 20:(5 << 20) + 4096]
            f.seek(at)
            f.write(b"written here")
            f.flush()
            f.seek(5 << 20)
            assert f.read(4096)[100:112] == b"written here", "a read missed this client's own write"
        at = 7 << 20
        with cl.open("/big-random", "rb") as f:
            f.seek(at)
            assert f.read(16) == data[at:at + 16]
            with other.open("/big-random", "r+b") as w:
                w.seek(at)
                w.write(b"another client")
        with cl.open("/big-random", "rb") as f:
            f.seek(at)
            assert f.read(14) == b"another client", "the next open missed another client's write"
    finally:
        cl.close()
        other.close()

    # a byte flipped on disk behind aqd's back, in chunk 2's second block: the local read's
    # check fails, aqd reads it, fails it with EIO and logs it; the chunk's other blocks
    # still read (O_DIRECT, so the kernel asks for exactly these 4 KiB)
    import mmap
    at = (9 << 20) + (64 << 10) + 1000
    flip_byte(*find_on_disk(c, bytes(data[at:at + 32])))
    drop_caches()
    buf = mmap.mmap(-1, 4096)
    fd = os.open(c.path("big-random"), os.O_RDONLY | os.O_DIRECT)
    try:
        expect_errno(errno.EIO, os.preadv, fd, [buf], at & ~4095)
        assert os.preadv(fd, [buf], 9 << 20) == 4096 and buf[:] == data[9 << 20:(9 << 20) + 4096], \
            "another block of the chunk"
    finally:
        os.close(fd)
    ino = os.stat(c.path("big-random")).st_ino
    with open(os.path.join(c.data, "aqd.log")) as f:
        assert any("corrupt" in ln and f"ino {ino:x} idx 2" in ln for ln in f), "no 'corrupt' line for chunk 2"


if __name__ == "__main__":
    aqtest.main(globals(), setup=Cluster)

"""Throws garbage at a live aqd: unauthenticated junk, wrong MACs, and after a correct AUTH
thousands of seeded random, truncated, oversized and bit-flipped frames. Every connection
must get replies (AQ_S_PROTO for malformed payloads) or be dropped, never hang; afterwards
the server is alive, `aq status` works, and the store holds only what well-formed requests
created (the root directory, plus any bit-flipped MKNOD/MKDIR that still decoded cleanly).

The client side is written here in Python (socket + struct + hmac) so that nothing in libaq
can tidy a frame up before the server sees it."""
import hashlib
import hmac
import json
import os
import random
import socket
import struct
import time

from aqtest import Cluster, main, proc_status_kib

MAGIC = 0x31465141
VERSION = 8  # PROTO_VERSION, src/proto/proto.h
HDR = struct.Struct("<IHHQIHHII")  # magic, version, op, req_id, epoch, status, flags, payload_len, reserved
assert HDR.size == 32
F_REPLY = 1
FRAME_MAX = 16 << 20
OP_HELLO, OP_AUTH, OP_MAP = 1, 2, 3
OP_LOOKUP, OP_GETATTR, OP_MKNOD, OP_MKDIR, OP_SYMLINK = 10, 11, 13, 14, 15
OP_RMDIR = 18
OP_BATCH = 50
KNOWN_OPS = {2, 3} | set(range(10, 33)) | {35, 36, 37, 40, 41, 50, 60}
S_OK, S_PROTO, S_AUTH = 0, 19, 100
S_ENOENT, S_EEXIST = 2, 5  # src/common/errors.h
TIMEOUT_S = 5.0
SEED = 20240611
ITERATIONS = 8000
DEADLINE_S = 50  # the whole garbage phase stops early rather than run past this

state = {}  # what one test leaves for the next (they run in name order)


class Dropped(Exception):
    """The server closed the connection."""


def setup():
    c = Cluster(mount=False)
    secret = port = None
    with open(c.conf) as f:
        for line in f:
            k, _, v = line.partition("=")
            k, v = k.strip(), v.strip()
            if k == "secret":
                secret = bytes.fromhex(v)
            elif k == "server" and port is None:
                port = int(v.split()[1].rsplit(":", 1)[1])
    assert secret and len(secret) == 32 and port, "cannot read secret/server from cluster.conf"
    c.secret, c.port = secret, port
    return c


def hdr(op, req_id=0, payload_len=0, magic=MAGIC, version=VERSION, flags=0, epoch=0, reserved=0, status=0):
    return HDR.pack(magic, version, op, req_id, epoch, status, flags, payload_len, reserved)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except (ConnectionResetError, BrokenPipeError):
            raise Dropped()
        except socket.timeout:
            raise AssertionError(f"server hung: no reply or close within {TIMEOUT_S}s")
        if not chunk:
            raise Dropped()
        buf += chunk
    return buf


def recv_frame(s):
    h = HDR.unpack(recv_exact(s, 32))
    magic, version, op, req_id, epoch, status, flags, plen, reserved = h
    assert magic == MAGIC and version == VERSION and reserved == 0, f"bad reply header {h}"
    assert flags & F_REPLY, f"reply without the reply flag {h}"
    assert plen <= FRAME_MAX
    return {"op": op, "req_id": req_id, "status": status, "payload": recv_exact(s, plen)}


def send(s, data):
    try:
        s.sendall(data)
    except (ConnectionResetError, BrokenPipeError):
        raise Dropped()


def expect_drop(s, what):
    """The server must close s (perhaps after a reply or two) within the timeout."""
    try:
        for _ in range(4):
            recv_frame(s)
    except Dropped:
        return
    raise AssertionError(f"{what}: connection not dropped")


def connect(c):
    """A fresh connection; returns (socket, nonce) after reading the server's HELLO."""
    s = socket.create_connection(("127.0.0.1", c.port), timeout=TIMEOUT_S)
    s.settimeout(TIMEOUT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    hello = recv_frame(s)
    assert hello["op"] == OP_HELLO and hello["status"] == 0, hello
    p = hello["payload"]
    assert len(p) == 36 and struct.unpack_from("<I", p)[0] == 32, f"bad HELLO payload {p!r}"
    return s, p[4:]


def mac_for(secret, nonce):
    return hmac.new(secret, b"aquifer-auth-v1" + nonce, hashlib.sha256).digest()


def authed(c):
    s, nonce = connect(c)
    mac = mac_for(c.secret, nonce)
    send(s, hdr(OP_AUTH, 1, 36) + struct.pack("<I", 32) + mac)
    r = recv_frame(s)
    assert r["op"] == OP_AUTH and r["status"] == S_OK, f"AUTH with the right secret failed: {r}"
    return s


def cred(uid=0, gid=0, groups=()):
    return struct.pack("<III", uid, gid, len(groups)) + b"".join(struct.pack("<I", g) for g in groups)


def string(b):
    return struct.pack("<I", len(b)) + b


def lookup_payload(name, parent=1):
    return cred() + struct.pack("<Q", parent) + string(name)


def mknod_payload(name, parent=1, mode=0o100644, rdev=0, flags=1, txn=(0, 0)):
    """MKNOD's fields; txn is (client id, seq), 0 asking for no record of the change."""
    return cred() + struct.pack("<Q", parent) + string(name) + struct.pack("<IIIQQ", mode, rdev, flags, *txn)


def parse_created(payload):
    """(parent, name) of a MKNOD/MKDIR/SYMLINK payload that the server accepted."""
    ng = struct.unpack_from("<I", payload, 8)[0]
    at = 12 + 4 * ng
    parent, n = struct.unpack_from("<QI", payload, at)
    return parent, payload[at + 12:at + 12 + n]


def test_a_unauthenticated(c):
    rng = random.Random(SEED)
    # garbage instead of a header: dropped without a word
    for i in range(20):
        s, _ = connect(c)
        send(s, bytes(rng.getrandbits(8) for _ in range(rng.randrange(32, 200))))
        expect_drop(s, f"garbage #{i}")
        s.close()
    # well-formed requests before AUTH: status 100, then dropped
    for op, payload in [(OP_LOOKUP, lookup_payload(b"x")), (OP_MKNOD, mknod_payload(b"pre-auth")),
                        (OP_MAP, b""), (OP_BATCH, b"\0" * 8), (999, b"zz")]:
        s, _ = connect(c)
        send(s, hdr(op, 7, len(payload)) + payload)
        r = recv_frame(s)
        assert r["status"] == S_AUTH, f"op {op} before AUTH: {r}"
        expect_drop(s, f"op {op} before AUTH")
        s.close()
    # AUTH with the wrong MAC, a MAC for another nonce, a short MAC, a malformed payload
    for i, kind in enumerate(["wrong_secret", "other_nonce", "short", "long", "bad_len", "empty"]):
        s, nonce = connect(c)
        if kind == "wrong_secret":
            p = string(mac_for(bytes(32), nonce))
        elif kind == "other_nonce":
            p = string(mac_for(c.secret, bytes(32)))
        elif kind == "short":
            p = string(mac_for(c.secret, nonce)[:31])
        elif kind == "long":
            p = string(mac_for(c.secret, nonce) + b"\0")
        elif kind == "bad_len":
            p = struct.pack("<I", 64) + mac_for(c.secret, nonce)
        else:
            p = b""
        send(s, hdr(OP_AUTH, i, len(p)) + p)
        r = recv_frame(s)
        assert r["op"] == OP_AUTH and r["status"] == S_AUTH, f"AUTH {kind}: {r}"
        expect_drop(s, f"AUTH {kind}")
        s.close()
    # a "reply" frame from a client: dropped
    s, nonce = connect(c)
    p = string(mac_for(c.secret, nonce))
    send(s, hdr(OP_AUTH, 1, len(p), flags=F_REPLY) + p)
    expect_drop(s, "reply-flagged AUTH")
    s.close()
    # and a correct AUTH still works afterwards
    authed(c).close()


class Fuzzer:
    def __init__(self, c):
        self.c = c
        self.rng = random.Random(SEED + 1)
        self.s = None
        self.created = set()  # (parent, name) of well-formed-after-flipping creates that succeeded
        self.stats = {"replies": 0, "proto": 0, "drops": 0, "cutoffs": 0, "ok": 0}
        self.req_id = 100

    def sock(self):
        if self.s is None:
            self.s = authed(self.c)
        return self.s

    def close(self):
        if self.s is not None:
            self.s.close()
            self.s = None

    def rbytes(self, n):
        return bytes(self.rng.getrandbits(8) for _ in range(n))

    def name(self):
        return bytes(self.rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))

    def roundtrip(self, frame, expect_status=None, may_drop=False):
        """Sends one frame and waits for its reply (or the drop, when that is allowed)."""
        s = self.sock()
        op, req_id = HDR.unpack_from(frame)[2:4]
        try:
            send(s, frame)
            r = recv_frame(s)
        except Dropped:
            self.close()
            self.stats["drops"] += 1
            assert may_drop, f"dropped after a well-formed header (op {op}, {len(frame) - 32} byte payload)"
            return None
        assert r["op"] == op and r["req_id"] == req_id, f"reply {r['op']}/{r['req_id']} to {op}/{req_id}"
        self.stats["replies"] += 1
        self.stats["proto"] += r["status"] == S_PROTO
        self.stats["ok"] += r["status"] == S_OK
        if expect_status is not None:
            assert r["status"] == expect_status, \
                f"op {op} ({len(frame) - 32} byte payload): status {r['status']}, want {expect_status}"
        if r["status"] == S_OK and op in (OP_MKNOD, OP_MKDIR, OP_SYMLINK):
            self.created.add(parse_created(frame[32:]))
        return r

    def next_id(self):
        self.req_id += 1
        return self.req_id

    def valid_request(self):
        """A well-formed LOOKUP or MKNOD (a random name that will not clash)."""
        if self.rng.random() < 0.5:
            return OP_LOOKUP, lookup_payload(self.name())
        return OP_MKNOD, mknod_payload(self.name())

    def one(self):
        rng = self.rng
        kind = rng.randrange(10)
        if kind == 0:  # a random opcode with a random payload
            op = rng.choice([rng.randrange(0, 71), rng.randrange(0, 65536)])
            p = self.rbytes(rng.randrange(0, 200))
            if op in (OP_MKNOD, OP_MKDIR, OP_SYMLINK):
                op = OP_GETATTR
            self.roundtrip(hdr(op, self.next_id(), len(p)) + p, None if op in KNOWN_OPS else S_PROTO)
        elif kind == 1:  # a valid request cut short, with a header that says so
            op, p = self.valid_request()
            p = p[:rng.randrange(0, len(p))]
            self.roundtrip(hdr(op, self.next_id(), len(p)) + p, S_PROTO)
        elif kind == 2:  # a valid request with trailing bytes
            op, p = self.valid_request()
            p += self.rbytes(rng.randrange(1, 16))
            self.roundtrip(hdr(op, self.next_id(), len(p)) + p, S_PROTO)
        elif kind in (3, 4, 5):  # bit flips in the payload of a valid request
            op, p = self.valid_request()
            b = bytearray(p)
            for _ in range(rng.randrange(1, 6)):
                bit = rng.randrange(len(b) * 8)
                b[bit // 8] ^= 1 << (bit % 8)
            self.roundtrip(hdr(op, self.next_id(), len(b)) + bytes(b))
        elif kind == 6:  # bit flips in the header (not its length word: that is kind 7)
            op, p = self.valid_request()
            h = bytearray(hdr(op, self.next_id(), len(p)))
            bit = rng.choice([b for b in range(256) if not 192 <= b < 224])
            h[bit // 8] ^= 1 << (bit % 8)
            fields = HDR.unpack(bytes(h))
            bad = fields[0] != MAGIC or fields[1] != VERSION or fields[8] != 0 or fields[6] & F_REPLY
            if bad:
                s = self.sock()
                send(s, bytes(h) + p)
                expect_drop(s, f"header bit {bit} flipped")
                self.close()
                self.stats["drops"] += 1
            else:
                self.roundtrip(bytes(h) + p)
        elif kind == 7:  # a frame cut off mid-way, then the socket closed
            op, p = self.valid_request()
            frame = hdr(op, self.next_id(), len(p) + rng.randrange(0, 4096)) + p
            s = self.sock()
            send(s, frame[:rng.randrange(1, len(frame))])
            self.close()
            self.stats["cutoffs"] += 1
        elif kind == 8:  # a payload length over the frame limit, or bad magic: dropped
            op, p = self.valid_request()
            if rng.random() < 0.5:
                h = hdr(op, self.next_id(), rng.choice([FRAME_MAX + 1, FRAME_MAX + rng.randrange(2, 1 << 30),
                                                        0xFFFFFFFF]))
            else:
                h = hdr(op, self.next_id(), len(p), magic=rng.getrandbits(32) | 1)
            s = self.sock()
            send(s, h + p)
            expect_drop(s, "oversized/bad-magic header")
            self.close()
            self.stats["drops"] += 1
        else:  # a batch of sub-frames, some broken
            subs = b""
            n = rng.randrange(0, 5)
            for i in range(n):
                op, p = OP_LOOKUP, lookup_payload(self.name())
                if rng.random() < 0.3:
                    p = p[:rng.randrange(len(p))]
                sub = hdr(op, i, len(p)) + p
                if rng.random() < 0.2:
                    sub = bytearray(sub)
                    bit = rng.randrange(len(sub) * 8)
                    sub[bit // 8] ^= 1 << (bit % 8)
                    sub = bytes(sub)
                subs += sub
            if rng.random() < 0.3:
                subs = subs[:rng.randrange(len(subs) + 1)]
            p = struct.pack("<I", rng.choice([n, n + 1, rng.randrange(0, 2000)])) + string(subs)
            self.roundtrip(hdr(OP_BATCH, self.next_id(), len(p)) + p)


def test_b_garbage_after_auth(c):
    fz = Fuzzer(c)
    t0 = time.time()
    done = 0
    try:
        for done in range(1, ITERATIONS + 1):
            fz.one()
            if time.time() - t0 > DEADLINE_S:
                break
    finally:
        fz.close()
    state["created"] = fz.created
    st = fz.stats
    print(f"     {done} frames in {time.time() - t0:.1f}s: {st['replies']} replies ({st['proto']} malformed, "
          f"{st['ok']} ok), {st['drops']} drops, {st['cutoffs']} cut off; {len(fz.created)} flipped creates succeeded")
    assert done >= 500, f"only {done} frames in {DEADLINE_S}s"
    assert st["proto"] > done // 4, "too few AQ_S_PROTO replies: are malformed frames being rejected?"
    assert st["drops"] > 0 and st["cutoffs"] > 0


def test_c_server_survives(c):
    os.kill(c.pid(), 0)  # still running
    # a clean connection still works: LOOKUP of the root's child that nobody made
    s = authed(c)
    p = lookup_payload(b"never-created")
    send(s, hdr(OP_LOOKUP, 5, len(p)) + p)
    r = recv_frame(s)
    assert r["status"] == 2, f"LOOKUP of a missing name: {r}"  # AQ_S_NOENT
    s.close()
    c.aq("status")
    out = c.aq("status", "--json").stdout
    st = json.loads(out)
    created = state.get("created", set())
    want = 1 + len(created)
    assert st["files"] == want, f"store holds {st['files']} files, want {want} (root + {sorted(created)})"


def test_d_batch_of_chunk_reads_bounded(c):
    """Regression: a BATCH of 8 MiB CHUNK_READs piled every sub-reply up in memory before
    checking the frame limit (1024 of them: 8 GiB). It must stop at the limit instead."""
    chunk_max = 8 << 20
    # wire order is the field table's (proto.c), not the opcode's list: ino, off, len, target, idx
    read = struct.pack("<QQIII", 12345, 0, chunk_max, 0, 0)
    subs = b"".join(hdr(41, i, len(read)) + read for i in range(48))  # 384 MiB of replies
    p = struct.pack("<I", 48) + string(subs)
    pid = c.pid()
    before = proc_status_kib(pid, "VmHWM")
    s = authed(c)
    send(s, hdr(OP_BATCH, 9, len(p)) + p)
    r = recv_frame(s)
    s.close()
    grew_mib = (proc_status_kib(pid, "VmHWM") - before) / 1024
    assert r["status"] == 14, f"batch over the frame limit: {r['status']}, want AQ_S_RANGE"
    assert grew_mib < 160, f"aqd peak memory grew {grew_mib:.0f} MiB for one over-limit batch"
    os.kill(pid, 0)


def test_f_frames_packed_and_split(c):
    """aqd assembles frames from whatever its reads return (net.c, conn_read): many frames
    in one write, a frame a byte at a time, a 20 KiB payload followed by another frame,
    sent in pieces that cut both the header and the payload; all answered in full."""
    s = authed(c)
    frames = b""
    for i in range(300):
        p = lookup_payload(b"packed-%d" % i)
        frames += hdr(OP_LOOKUP, 1000 + i, len(p)) + p
    send(s, frames)  # about 14 KiB in one write
    got = {}
    for _ in range(300):
        r = recv_frame(s)
        got[r["req_id"]] = r["status"]
    assert got == {1000 + i: 2 for i in range(300)}, "a packed frame was lost or misread"
    # one frame a byte at a time
    p = lookup_payload(b"trickled")
    for b in hdr(OP_LOOKUP, 2000, len(p)) + p:
        send(s, bytes([b]))
        time.sleep(0.001)
    r = recv_frame(s)
    assert (r["req_id"], r["status"]) == (2000, 2), r
    # a 20 KiB payload (a name far past NAME_MAX: refused, not dropped), then a small
    # frame, sent in pieces that cut the header and the payload
    big = lookup_payload(b"x" * 20000)
    small = lookup_payload(b"after-big")
    data = hdr(OP_LOOKUP, 3000, len(big)) + big + hdr(OP_LOOKUP, 3001, len(small)) + small
    pieces = [data[0:10], data[10:4000], data[4000:20030], data[20030:]]
    for piece in pieces:
        send(s, piece)
        time.sleep(0.01)
    r1, r2 = recv_frame(s), recv_frame(s)
    assert r1["req_id"] == 3000 and r1["status"] != 0, r1
    assert (r2["req_id"], r2["status"]) == (3001, 2), r2
    s.close()
    os.kill(c.pid(), 0)


OP_WATCH, OP_INVAL, OP_UNLINK = 33, 34, 17
F_PUSH = 4


def test_e_watcher_that_never_reads(c):
    """A client that asks for invalidations (WATCH) and then stops reading must not stall
    the server: once what waits for it would not fit its socket, the server closes it.
    Regression: pushes used to block, up to 30 s, the thread that served the change."""
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window fills soon
    stuck.settimeout(TIMEOUT_S)
    stuck.connect(("127.0.0.1", c.port))
    hello = recv_frame(stuck)
    send(stuck, hdr(OP_AUTH, 1, 36) + struct.pack("<I", 32) + mac_for(c.secret, hello["payload"][4:]))
    assert recv_frame(stuck)["status"] == S_OK
    w = struct.pack("<IQ", 1, 0x5717C4)  # flags DELIVER, then the client id
    send(stuck, hdr(OP_WATCH, 2, len(w)) + w)
    r = recv_frame(stuck)
    assert r["op"] == OP_WATCH and r["status"] == S_OK, r
    writer = authed(c)
    names = [b"w%05d-" % i + b"x" * 200 for i in range(20000)]
    t0 = time.time()
    for i, nm in enumerate(names):  # each create pushes a record of ~220 bytes to `stuck`
        p = mknod_payload(nm)
        send(writer, hdr(OP_MKNOD, 100 + i, len(p)) + p)
        r = recv_frame(writer)  # "server hung" if a push blocks
        assert r["status"] == S_OK, f"create {i}: {r}"
    for i, nm in enumerate(names):
        p = lookup_payload(nm) + struct.pack("<IQQ", 0, 0, 0)  # UNLINK: LOOKUP's fields, flags, txn
        send(writer, hdr(OP_UNLINK, 50000 + i, len(p)) + p)
        assert recv_frame(writer)["status"] == S_OK
    took = time.time() - t0
    writer.close()
    # what was queued for `stuck` is INVAL pushes, then the end of the connection
    pushes = 0
    try:
        while True:
            h = HDR.unpack(recv_exact(stuck, 32))
            assert h[2] == OP_INVAL and h[6] & F_PUSH, f"unexpected frame {h}"
            recv_exact(stuck, h[7])
            pushes += 1
    except Dropped:
        pass
    stuck.close()
    assert pushes > 0, "the watcher got no INVAL frame at all"
    assert took < 30, f"40,000 changes took {took:.0f} s with a watcher that does not read"
    os.kill(c.pid(), 0)


OP_OPEN_MAP = 43
ATTR_SIZE = 88


def open_map(c, ino, boot_id):
    """The data of an OPEN_MAP reply for the first 256 KiB of ino, read-only."""
    s = authed(c)
    p = cred() + struct.pack("<QIQI", ino, os.O_RDONLY, 0, 256 << 10) + string(boot_id)
    send(s, hdr(OP_OPEN_MAP, 7, len(p)) + p)
    r = recv_frame(s)
    s.close()
    assert r["status"] == S_OK, r
    status, n = struct.unpack_from("<II", r["payload"], ATTR_SIZE)
    assert status == 0 and len(r["payload"]) == ATTR_SIZE + 8 + n, r
    return r["payload"][ATTR_SIZE + 8:]


OP_LOCATE = 44


def locate(c, ino, target, boot_id):
    """The data of a LOCATE reply for chunk 0 of ino on target (b"" when none)."""
    s = authed(c)
    p = struct.pack("<QII", ino, target, 0) + string(boot_id)
    send(s, hdr(OP_LOCATE, 8, len(p)) + p)
    r = recv_frame(s)
    s.close()
    assert r["status"] == S_OK, r
    n, = struct.unpack_from("<I", r["payload"])
    assert len(r["payload"]) == 4 + n, r
    return r["payload"][4:]


def test_g_open_map_only_for_this_machine(c):
    """OPEN_MAP (local reads) says where a file's bytes lie on aqd's disk only to a client
    that sent aqd's own boot id: one on another machine, which could not open the path,
    gets no location (and reads as usual); a malformed boot id gets none either."""
    import aquifer
    cl = aquifer.connect(c.conf)
    with cl.open("/located", "wb") as f:
        f.write(os.urandom(100_000))
    ino = cl.stat("/located").st_ino
    with open("/proc/sys/kernel/random/boot_id") as f:
        boot = bytes.fromhex(f.read().strip().replace("-", ""))
    here = open_map(c, ino, boot)
    at = 8 + 8 + 4 * 5 + 1  # rec_off, version, idx .. nblk, direct (proto.h)
    plen, = struct.unpack_from("<I", here, at)
    path = here[at + 4:at + 4 + plen]
    assert b"/seg-" in path and os.path.isfile(path), here[:120]
    other = bytes(b ^ 0xFF for b in boot)
    assert open_map(c, ino, other) == b"", "a location for a client on another machine"
    assert open_map(c, ino, boot[:8]) == b"", "a location for a malformed boot id"
    # LOCATE (any chunk): the whole chunk's location from the one target holding it, and
    # again only for aqd's own boot id
    found = [t for t in range(4) if locate(c, ino, t, boot)]
    assert len(found) == 1, f"targets that located chunk 0: {found}"
    loc = locate(c, ino, found[0], boot)
    length, = struct.unpack_from("<I", loc, 8 + 8 + 4)
    assert length == 100_000 and b"/seg-" in loc, loc[:120]
    assert locate(c, ino, found[0], other) == b"", "LOCATE answered a client on another machine"
    state.setdefault("created", set()).add("located")


F_RETRY = 16  # PROTO_F_RETRY: a change sent again after its connection broke
OP_RENAME = 19


def test_h_change_sent_again_runs_once(c):
    """A change sent again (PROTO_F_RETRY) with the client id and seq of one aqd committed
    is answered from aqd's record of it, also after a kill -9: an O_EXCL create gets its
    file, not EEXIST, and a rename is done once, not failed with ENOENT. The same frame
    without the flag, or with another seq, runs again and fails as a second create must."""
    client = 0x1DEA5EED
    s = authed(c)

    def ask(op, p, flags=0):
        req = random.randrange(1, 1 << 32)
        send(s, hdr(op, req, len(p), flags=flags) + p)
        r = recv_frame(s)
        assert r["op"] == op and r["req_id"] == req, r
        return r

    create = mknod_payload(b"made-once", txn=(client, 7))
    first = ask(OP_MKNOD, create)
    assert first["status"] == S_OK, first
    ino = struct.unpack_from("<Q", first["payload"])[0]
    assert ask(OP_MKNOD, create)["status"] == S_EEXIST, "a second create without the flag"
    assert ask(OP_MKNOD, mknod_payload(b"made-once", txn=(client, 8)), F_RETRY)["status"] == S_EEXIST, \
        "a create sent again that never committed"
    rename = cred() + struct.pack("<Q", 1) + string(b"made-once") + struct.pack("<Q", 1) + string(b"renamed") + \
        struct.pack("<IQQ", 0, client, 9)
    assert ask(OP_RENAME, rename)["status"] == S_OK
    s.close()

    c.kill9()
    c.restart()
    s = authed(c)
    again = ask(OP_MKNOD, create, F_RETRY)
    assert again["status"] == S_OK, f"the create sent again after a restart: {again}"
    assert struct.unpack_from("<Q", again["payload"])[0] == ino, "answered with another inode"
    assert ask(OP_RENAME, rename, F_RETRY)["status"] == S_OK, "the rename sent again after a restart"
    assert ask(OP_RENAME, rename)["status"] == S_ENOENT, "a second rename without the flag"
    s.close()
    state.setdefault("created", set()).add("renamed")


OP_CHUNK_WRITE = 40
CW_COMMIT, CW_ATTRS = 4, 16  # PROTO_CW_COMMIT, PROTO_CW_ATTRS
SET_MODE, SET_SIZE = 1, 8    # AQ_SET_MODE, AQ_SET_SIZE
S_EPERM, S_EINVAL = 1, 8     # src/common/errors.h


def chunk_write(ino, data, flags, size=0, trailer=b""):
    """CHUNK_WRITE's fields (target 0, chunk 0, offset 0), then what PROTO_CW_ATTRS adds."""
    return struct.pack("<QIQQqII", ino, flags, size, 0, 0, 0, 0) + string(data) + trailer


def test_j_a_chunk_writes_setattr(c):
    """A CHUNK_WRITE may carry a setattr to run after its commit (PROTO_CW_ATTRS: a
    client's deferred times, owner and mode): without the commit, or asking for a size,
    it is refused (EINVAL) before anything is written; made by someone who may not, it is
    refused (EPERM) once the bytes and size are in; garbage in the trailer is PROTO."""
    s = authed(c)

    def ask(op, p):
        req = random.randrange(1, 1 << 32)
        send(s, hdr(op, req, len(p)) + p)
        r = recv_frame(s)
        assert r["op"] == op and r["req_id"] == req, r
        return r

    made = ask(OP_MKNOD, mknod_payload(b"cw-attrs"))
    assert made["status"] == S_OK, made
    ino = struct.unpack_from("<Q", made["payload"])[0]
    def size_now():
        got = ask(OP_GETATTR, cred() + struct.pack("<Q", ino))
        assert got["status"] == S_OK, got
        return struct.unpack_from("<Q", got["payload"], 8)[0]

    chmod = cred(uid=1000) + struct.pack("<I", SET_MODE) + bytes(ATTR_SIZE)
    assert ask(OP_CHUNK_WRITE, chunk_write(ino, b"x" * 10, CW_ATTRS, 10, chmod))["status"] == S_EINVAL
    size = cred() + struct.pack("<I", SET_SIZE) + bytes(ATTR_SIZE)
    assert ask(OP_CHUNK_WRITE, chunk_write(ino, b"x" * 10, CW_COMMIT | CW_ATTRS, 10, size))["status"] == S_EINVAL
    assert ask(OP_CHUNK_WRITE, chunk_write(ino, b"x" * 10, CW_COMMIT | CW_ATTRS, 10, chmod[:-3]))["status"] == S_PROTO
    assert size_now() == 0, "a refused CHUNK_WRITE committed its size"
    assert ask(OP_CHUNK_WRITE, chunk_write(ino, b"x" * 10, CW_COMMIT | CW_ATTRS, 10, chmod))["status"] == S_EPERM
    assert size_now() == 10, "the bytes and size of a CHUNK_WRITE whose setattr was refused"

    s.close()
    state.setdefault("created", set()).add("cw-attrs")


OP_LOCK = 36
LK_RD, LK_WR, LK_UN, LK_END = 0, 1, 2, (1 << 63) - 1
LOCK_WAIT, LOCK_FLOCK, LOCK_TEST, LOCK_CANCEL = 1, 2, 4, 8
S_EINTR = 34


def lock_payload(ino, owner, typ, start, end, flags=0, wait_id=0, pid=1):
    """LOCK's fields: ino, mode (the type), rdev (the pid), flags, cookie (the owner),
    size (the last byte), off (the first), time (the wait's number)."""
    return struct.pack("<QIIIQQQQ", ino, typ, pid, flags, owner, end, start, wait_id)


def test_k_lock_frames(c):
    """Locks as aqd keeps them, frame by frame: nonsense is EINVAL (or PROTO when it does
    not decode); a wait is answered when it ends, however long after; a cancel ends it with
    EINTR, even one that overtook it; the locks and waits of a connection that closes go
    with it, and what they kept out comes in. Each connection is its own client here (none
    says who it is with WATCH)."""
    conns = [authed(c) for _ in range(3)]

    def send_lock(s, req, *args, **kw):
        p = lock_payload(*args, **kw)
        send(s, hdr(OP_LOCK, req, len(p)) + p)

    def reply(s, req):
        r = recv_frame(s)
        assert r["op"] == OP_LOCK and r["req_id"] == req, r
        return r

    def ask(s, *args, **kw):
        req = random.randrange(1, 1 << 32)
        send_lock(s, req, *args, **kw)
        return reply(s, req)

    a, b, w = conns
    ino = 1 << 40  # locks need no inode to exist: the kernel asked through an open file
    for bad in (dict(typ=3, start=0, end=1), dict(typ=LK_RD, start=5, end=4),
                dict(typ=LK_RD, start=0, end=LK_END + 1), dict(typ=LK_WR, start=0, end=9, flags=LOCK_FLOCK),
                dict(typ=LK_UN, start=0, end=9, flags=LOCK_TEST), dict(typ=LK_WR, start=0, end=9, flags=64),
                dict(typ=LK_WR, start=0, end=9, flags=LOCK_TEST | LOCK_WAIT)):
        assert ask(a, ino, 1, **bad)["status"] == S_EINVAL, bad
    p = lock_payload(ino, 1, LK_WR, 0, 9)[:-1]
    send(a, hdr(OP_LOCK, 5, len(p)) + p)
    assert reply(a, 5)["status"] == S_PROTO

    assert ask(a, ino, 1, LK_WR, 0, 99)["status"] == S_OK
    assert ask(b, ino, 1, LK_WR, 50, 50)["status"] == 20  # EAGAIN: another client's owner 1
    got = ask(b, ino, 1, LK_RD, 60, 60, flags=LOCK_TEST)
    assert got["status"] == S_OK and got["payload"] == struct.pack("<IIIQQ", 24, LK_WR, 1, 0, 99), got
    # a wait, answered when a's connection goes
    send_lock(w, 77, ino, 9, LK_RD, 10, 10, flags=LOCK_WAIT, wait_id=1)
    w.settimeout(0.3)
    try:
        recv_frame(w)
        raise AssertionError("a wait was answered while the lock was held")
    except AssertionError as e:
        assert "hung" in str(e), e
    w.settimeout(TIMEOUT_S)
    a.close()
    assert reply(w, 77)["status"] == S_OK, "the closed connection's lock was kept"
    # a cancel ends a wait; one that came first ends the wait that follows it
    send_lock(b, 78, ino, 2, LK_WR, 10, 10, flags=LOCK_WAIT, wait_id=5)
    send_lock(b, 80, ino, 0, LK_UN, 0, 0, flags=LOCK_CANCEL, wait_id=5)
    got = {r["req_id"]: r["status"] for r in (recv_frame(b), recv_frame(b))}  # in either order
    assert got == {78: S_EINTR, 80: S_OK}, got
    assert ask(b, ino, 0, LK_UN, 0, 0, flags=LOCK_CANCEL, wait_id=6)["status"] == S_OK
    assert ask(b, ino, 2, LK_WR, 10, 10, flags=LOCK_WAIT, wait_id=6)["status"] == S_EINTR
    # a waiting connection that goes leaves nothing behind
    send_lock(b, 79, ino, 3, LK_WR, 0, LK_END, flags=LOCK_WAIT, wait_id=7)
    time.sleep(0.1)
    b.close()
    assert ask(w, ino, 9, LK_UN, 0, LK_END)["status"] == S_OK
    c2 = authed(c)
    assert ask(c2, ino, 4, LK_WR, 0, LK_END)["status"] == S_OK, "a gone waiter was granted"
    c2.close()
    w.close()


def test_i_change_sent_again_while_it_runs_runs_once(c):
    """A change whose connection breaks while aqd runs it (aqd lives on: a network fault)
    is sent again on a new connection. The second waits for the first and is answered from
    its record. Before, it ran on its own, and the first, still running, removed the
    directory the client had made again since. $AQ_TEST_HOLD_FIRST holds the first RMDIR
    a second on its worker, a wait that a lock or a stalled store can cause."""
    client = 0x1DEA5EEF
    c.restart_with(AQ_TEST_HOLD_FIRST="RMDIR:1000")

    def ask(s, op, p, flags=0):
        req = random.randrange(1, 1 << 32)
        send(s, hdr(op, req, len(p), flags=flags) + p)
        r = recv_frame(s)
        assert r["op"] == op and r["req_id"] == req, r
        return r

    def mkdir(seq):
        return cred() + struct.pack("<Q", 1) + string(b"again") + struct.pack("<IQQ", 0o755, client, seq)

    s = authed(c)
    assert ask(s, OP_MKDIR, mkdir(1))["status"] == S_OK
    rmdir = cred() + struct.pack("<Q", 1) + string(b"again") + struct.pack("<QQ", client, 2)
    send(s, hdr(OP_RMDIR, 5, len(rmdir)) + rmdir)
    time.sleep(0.3)  # a worker has it, held
    s.close()
    s = authed(c)
    assert ask(s, OP_RMDIR, rmdir, F_RETRY)["status"] == S_OK, "the rmdir sent again"
    assert ask(s, OP_MKDIR, mkdir(3))["status"] == S_OK, "the directory made again"
    time.sleep(1.0)  # past the hold: a first run not waited for would run now
    r = ask(s, OP_LOOKUP, lookup_payload(b"again"))
    assert r["status"] == S_OK, f"the first rmdir ran after the client's next change: {r}"

    # The other order: the first run reaches aqd while the one sent again runs. It waits
    # and is answered from the record too, not run a second time (ENOENT).
    c.restart_with(AQ_TEST_HOLD_FIRST="RMDIR:1000")
    s = authed(c)
    rmdir = cred() + struct.pack("<Q", 1) + string(b"again") + struct.pack("<QQ", client, 4)
    send(s, hdr(OP_RMDIR, 6, len(rmdir), flags=F_RETRY) + rmdir)
    time.sleep(0.3)
    late = authed(c)
    assert ask(late, OP_RMDIR, rmdir)["status"] == S_OK, "the first run, after the one sent again"
    r = recv_frame(s)
    assert r["req_id"] == 6 and r["status"] == S_OK, r
    assert ask(late, OP_LOOKUP, lookup_payload(b"again"))["status"] == S_ENOENT
    s.close()
    late.close()


if __name__ == "__main__":
    main(globals(), setup=setup)

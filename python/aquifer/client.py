"""client.py - the Python face of libaq: a Client (one aq_client per process), its file
objects, streaming directory listings, stat, "what's new" and batched reads over aq_ioring.

Invariants:
- A Client's aq_client is used only by the process that connected it: after fork() the
  child connects again on its first call (libaq's rule: a client must not be used in a
  child). Files opened before a fork are not usable in the child.
- Reads land in the caller's buffer (readinto) or in a bytearray handed to the caller
  (read_many): libaq writes straight into that memory, Python makes no copy.
- Nothing reads a whole directory into memory: listdir/scandir yield page by page.
"""
import collections
import ctypes
import errno
import io
import os
import stat as statmod
import threading

from ._lib import (AQ_READDIR_PLUS, AQ_ROOT, Attr, Change, Dirent, Io, check, error, lib)

PAGE = 1024            # directory entries per aq_readdir_ino call
LOOKUP_WINDOW = 256    # asynchronous lookups in flight in read_many
RING_DEPTH = 256       # reads in flight in read_many
CHANGES_MAX = 65536    # entries one changes() call may ask for
DT_DIR = 4

Entry = collections.namedtuple("Entry", "name ino is_dir size")
Entry.__doc__ = "A directory entry from Client.scandir: name (str), inode, is it a directory, size in bytes."


def _bpath(path):
    """A path inside Aquifer as bytes ('/' is Aquifer's root; a relative path is taken from it)."""
    p = os.fsencode(path)
    return p if p.startswith(b"/") else b"/" + p


def _stat_result(a):
    """os.stat_result for an Attr (st_dev 0)."""
    ns = (a.atime_ns, a.mtime_ns, a.ctime_ns)
    return os.stat_result(
        (a.mode, a.ino, 0, a.nlink, a.uid, a.gid, a.size, ns[0] // 10**9, ns[1] // 10**9, ns[2] // 10**9),
        {"st_atime": ns[0] / 1e9, "st_mtime": ns[1] / 1e9, "st_ctime": ns[2] / 1e9, "st_atime_ns": ns[0],
         "st_mtime_ns": ns[1], "st_ctime_ns": ns[2], "st_blocks": a.blocks, "st_blksize": a.chunk_size or 4096,
         "st_rdev": a.rdev})


def _may_read(a):
    """Whether this process's credentials may read the file described by a: reads by
    inode through the ring skip the server's open-time check, so read_many makes it here."""
    uid = os.geteuid()
    if uid == 0:
        return True
    if a.uid == uid:
        return bool(a.mode & 0o400)
    if a.gid == os.getegid() or a.gid in os.getgroups():
        return bool(a.mode & 0o040)
    return bool(a.mode & 0o004)


def _writable_view(buffer):
    """A ctypes char array over the caller's writable, contiguous buffer (no copy) and its
    size in bytes."""
    mv = memoryview(buffer)
    if mv.readonly:
        raise TypeError("readinto() needs a writable buffer")
    if not mv.contiguous:
        raise ValueError("readinto() needs a contiguous buffer")
    n = mv.nbytes
    return ((ctypes.c_char * n).from_buffer(mv) if n else None), n


def _parse_mode(mode):
    m = set(mode)
    if "b" not in m or not m <= set("rwaxb+") or len(m & set("rwax")) != 1 or len(mode) != len(m):
        raise ValueError(f"invalid mode {mode!r} (Aquifer files are binary: 'rb', 'wb', 'ab', 'xb', with '+')")
    plus = "+" in m
    if "r" in m:
        return os.O_RDWR if plus else os.O_RDONLY
    acc = os.O_RDWR if plus else os.O_WRONLY
    if "w" in m:
        return acc | os.O_CREAT | os.O_TRUNC
    if "a" in m:
        return acc | os.O_CREAT | os.O_APPEND
    return acc | os.O_CREAT | os.O_EXCL


def connect(cluster_file=None):
    """Connects to the cluster in cluster_file, else $AQ_CLUSTER, else ./var/cluster.conf."""
    return Client(cluster_file)


class Client:
    """One connection to an Aquifer cluster. Safe to share between threads; after fork()
    the child reconnects by itself on its first call."""

    def __init__(self, cluster_file=None):
        self.cluster_file = os.fspath(cluster_file) if cluster_file is not None else None
        self._c = None
        self._pid = None
        self._lock = threading.Lock()
        self._handle()

    def _handle(self):
        """The aq_client of this process, connecting (again, after a fork) when needed."""
        pid = os.getpid()
        if self._c is not None and self._pid == pid:
            return self._c
        with self._lock:
            if self._c is None or self._pid != pid:
                c = ctypes.c_void_p()
                conf = os.fsencode(self.cluster_file) if self.cluster_file is not None else None
                # the parent's aq_client (if any) is dropped, not freed: its threads and
                # sockets belong to the parent
                check(lib.aq_connect(conf, ctypes.byref(c)), self.cluster_file)
                self._c, self._pid = c, pid
        return self._c

    def close(self):
        """Disconnects (in the process that connected; a forked child only forgets)."""
        c, self._c = self._c, None
        if c is not None and self._pid == os.getpid():
            lib.aq_disconnect(c)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # ---- names ----

    def _resolve(self, path):
        a = Attr()
        check(lib.aq_resolve(self._handle(), _bpath(path), ctypes.byref(a)), path)
        return a

    def stat(self, path):
        """os.stat_result for path (st_dev is 0)."""
        return _stat_result(self._resolve(path))

    def _dir_ino(self, path):
        a = self._resolve(path)
        if not statmod.S_ISDIR(a.mode):
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), os.fsdecode(path))
        return a.ino

    def _pages(self, path, flags):
        """Yields the entries of the directory path from one listing stream (aq_dir_*:
        the directory's bucket ranges read with pages in flight), PAGE at a time."""
        ino = self._dir_ino(path)
        ents = (Dirent * PAGE)()
        d = ctypes.c_void_p()
        check(lib.aq_dir_open(self._handle(), None, ino, flags, ctypes.byref(d)), path)
        try:
            while True:
                n = check(lib.aq_dir_read(d, ents, PAGE), path)
                if n == 0:
                    return
                for i in range(n):
                    yield ents[i]
        finally:
            lib.aq_dir_close(d)

    def listdir(self, path="/"):
        """Yields the names (str) in directory path, a page of PAGE entries at a time: a
        directory of any size is never held in memory. Order is Aquifer's (hashed)."""
        for e in self._pages(path, 0):
            yield os.fsdecode(e.name)

    def scandir(self, path="/"):
        """Yields Entry(name, ino, is_dir, size) for directory path, with attributes from
        the same listing call (readdirplus), a page at a time."""
        for e in self._pages(path, AQ_READDIR_PLUS):
            yield Entry(os.fsdecode(e.name), e.ino, e.type == DT_DIR or statmod.S_ISDIR(e.attr.mode), e.attr.size)

    def changes(self, dir, cursor=0, limit=1000):
        """Entries created in (or renamed into) dir after cursor, oldest first: returns
        ([(cursor, ino, name)], next_cursor). Pass next_cursor to the next call."""
        limit = max(1, min(int(limit), CHANGES_MAX))
        out = (Change * limit)()
        nxt = ctypes.c_uint64()
        n = check(lib.aq_changes(self._handle(), _bpath(dir), cursor, out, limit, ctypes.byref(nxt)), dir)
        return [(out[i].cursor, out[i].ino, os.fsdecode(out[i].name)) for i in range(n)], nxt.value

    # ---- files ----

    def open(self, path, mode="rb", perm=0o644):
        """A binary file object (io.RawIOBase) for path; mode as open()'s, binary only.
        Wrap it in io.BufferedReader / io.TextIOWrapper for buffering or text."""
        flags = _parse_mode(mode)
        f = ctypes.c_void_p()
        check(lib.aq_open(self._handle(), _bpath(path), flags, perm, ctypes.byref(f)), path)
        return File(self, f, os.fsdecode(path), mode, flags)

    def _lookup_many(self, paths):
        """Attrs for every path, many lookups in flight: each distinct directory is
        resolved once, then each name is an asynchronous aq_lookup in it."""
        c = self._handle()
        dirs = {}
        attrs = [None] * len(paths)
        pending = collections.deque()

        def finish():
            i, p = pending.popleft()
            a = Attr()
            check(lib.aq_wait(p, ctypes.byref(a)), paths[i])
            attrs[i] = a

        try:
            for i, path in enumerate(paths):
                bp = _bpath(path).rstrip(b"/")
                parent, _, name = bp.rpartition(b"/")
                if not name:
                    attrs[i] = self._resolve(path)
                    continue
                if parent not in dirs:
                    dirs[parent] = self._dir_ino(parent or b"/") if parent else AQ_ROOT
                if len(pending) >= LOOKUP_WINDOW:
                    finish()
                p = ctypes.c_void_p()
                check(lib.aq_lookup_start(c, None, dirs[parent], name, ctypes.byref(p)), path)
                pending.append((i, p))
            while pending:
                finish()
        finally:
            while pending:  # an error above: let the rest finish before unwinding
                lib.aq_wait(pending.popleft()[1], None)
        return attrs

    def read_many(self, items, depth=RING_DEPTH):
        """Reads many files or ranges at once over libaq's batched reads (aq_ioring): items
        are paths (the whole file) or (path, offset, length) tuples (length None or -1: to
        the end). Returns a list of bytearrays in the order of items, short at end of file.
        Raises OSError (FileNotFoundError, PermissionError, IsADirectoryError...) naming the
        first item that failed."""
        items = list(items)
        specs = [(it, 0, -1) if isinstance(it, (str, bytes, os.PathLike)) else tuple(it) for it in items]
        paths = [s[0] for s in specs]
        uniq = list(dict.fromkeys(paths))
        by_path = dict(zip(uniq, self._lookup_many(uniq)))
        reads = []
        for path, off, length in specs:
            a = by_path[path]
            if statmod.S_ISDIR(a.mode):
                raise OSError(errno.EISDIR, os.strerror(errno.EISDIR), os.fsdecode(path))
            if not _may_read(a):
                raise OSError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))
            if off < 0:
                raise ValueError(f"{path!r}: negative offset")
            want = max(0, a.size - off) if length is None or length < 0 else length
            reads.append((a.ino, off, want, a.size))
        return self.read_inodes(reads, depth=depth, names=paths)

    def read_inodes(self, reads, depth=RING_DEPTH, names=None):
        """Batched reads by inode: reads are (ino, offset, length, file_size) tuples, with
        file_size as stat or scandir reported it (reads are clipped to it). Reads by inode
        skip open and its permission check (see aq.h on aq_ioring). Returns bytearrays."""
        n = len(reads)
        if n == 0:
            return []
        c = self._handle()
        ios = (Io * n)()
        ptrs = (ctypes.POINTER(Io) * n)()
        out, views = [], []
        for i, (ino, off, length, size) in enumerate(reads):
            length = max(0, min(length, size - off)) if size >= off else 0
            ba = bytearray(length)
            view = (ctypes.c_char * length).from_buffer(ba) if length else None
            io_ = ios[i]
            io_.ino, io_.off, io_.len, io_.file_size = ino, off, length, size
            io_.buf = ctypes.addressof(view) if view is not None else None
            io_.user = i + 1
            ptrs[i] = ctypes.pointer(io_)
            out.append(ba)
            views.append(view)
        depth = max(1, min(depth, n))
        ring = ctypes.c_void_p()
        check(lib.aq_ioring_create(c, depth, ctypes.byref(ring)))
        done = (ctypes.POINTER(Io) * depth)()
        first_err = None
        try:
            submitted = inflight = 0
            base = ctypes.addressof(ptrs)
            psize = ctypes.sizeof(ctypes.POINTER(Io))
            while submitted < n or inflight:
                if submitted < n and inflight < depth:
                    k = check(lib.aq_ioring_submit(ring, base + submitted * psize, n - submitted))
                    submitted += k
                    inflight += k
                got = check(lib.aq_ioring_reap(ring, ctypes.addressof(done), depth, 1))
                inflight -= got
                for j in range(got):
                    io_ = done[j].contents
                    if io_.result < 0 and first_err is None:
                        i = io_.user - 1
                        first_err = error(int(io_.result), names[i] if names else f"inode {io_.ino}")
        finally:
            lib.aq_ioring_destroy(ring)  # waits for every read still in flight
        if first_err is not None:
            raise first_err
        del views  # release the exports so short buffers can be trimmed
        for i in range(n):
            got = ios[i].result
            if got < len(out[i]):
                del out[i][got:]
        return out


class File(io.RawIOBase):
    """An open Aquifer file (binary, unbuffered): readinto fills the caller's buffer with
    no copy; read, write, seek, tell, flush, fsync, close; a context manager."""

    def __init__(self, client, handle, name, mode, flags):
        super().__init__()
        self._client = client  # keeps the connection alive while the file is open
        self._f = handle
        self._pid = os.getpid()
        self.name = name
        self.mode = mode
        self._flags = flags
        self._pos = 0

    def _handle(self):
        if self._f is None:
            raise ValueError("I/O operation on closed file")
        if self._pid != os.getpid():
            raise OSError(errno.EBADF, "Aquifer file opened before fork(): open it again in this process", self.name)
        return self._f

    def readable(self):
        return (self._flags & os.O_ACCMODE) != os.O_WRONLY

    def writable(self):
        return (self._flags & os.O_ACCMODE) != os.O_RDONLY

    def seekable(self):
        return True

    def _size(self):
        a = Attr()
        check(lib.aq_file_getattr(self._handle(), ctypes.byref(a)), self.name)
        return a.size

    def readinto(self, buffer):
        """Reads up to len(buffer) bytes at the current position straight into buffer
        (bytearray, memoryview, numpy array: writable and contiguous); returns the count."""
        f = self._handle()
        if not self.readable():
            raise io.UnsupportedOperation("file not open for reading")
        view, n = _writable_view(buffer)
        if n == 0:
            return 0
        got = check(lib.aq_pread(f, view, n, self._pos), self.name)
        self._pos += got
        return got

    def readall(self):
        """The rest of the file, read in one call when its size is known."""
        out = bytearray()
        while True:
            want = max(self._size() - self._pos, 0) or io.DEFAULT_BUFFER_SIZE
            start = len(out)
            out.extend(bytes(want))  # grow in place, then read into the new tail
            got = self.readinto(memoryview(out)[start:])
            del out[start + got:]
            if got < want:
                return bytes(out)

    def write(self, data):
        f = self._handle()
        if not self.writable():
            raise io.UnsupportedOperation("file not open for writing")
        mv = memoryview(data)
        n = mv.nbytes
        if n == 0:
            return 0
        if isinstance(data, bytes):
            buf = data
        elif mv.readonly or not mv.contiguous:
            buf = mv.tobytes()
        else:
            buf = (ctypes.c_char * n).from_buffer(mv)
        if self._flags & os.O_APPEND:
            off = ctypes.c_uint64()
            got = check(lib.aq_append(f, buf, n, ctypes.byref(off)), self.name)
            self._pos = off.value + got
        else:
            got = check(lib.aq_pwrite(f, buf, n, self._pos), self.name)
            self._pos += got
        return got

    def seek(self, offset, whence=os.SEEK_SET):
        self._handle()
        if whence == os.SEEK_SET:
            pos = offset
        elif whence == os.SEEK_CUR:
            pos = self._pos + offset
        elif whence == os.SEEK_END:
            pos = self._size() + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(errno.EINVAL, "negative seek position", self.name)
        self._pos = pos
        return pos

    def tell(self):
        self._handle()
        return self._pos

    def flush(self):
        if self._f is not None and self._pid == os.getpid() and self.writable():
            check(lib.aq_flush(self._f), self.name)

    def fsync(self, datasync=False):
        """Returns when data and size are durable."""
        check(lib.aq_fsync(self._handle(), 1 if datasync else 0), self.name)

    def close(self):
        f, self._f = self._f, None
        super().close()
        if f is not None and self._pid == os.getpid():
            check(lib.aq_close(f), self.name)

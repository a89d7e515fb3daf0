"""_lib.py - libaq through ctypes: the structs of include/aq.h, the prototypes of the
functions the binding and the tests call, and the mapping from libaq's negative codes to
Python's OSError.

Invariant: every struct here has the size and layout of its C twin in include/aq.h (the
asserts below check the sizes); change both together. libaq is found at $AQ_LIB, else
../lib/libaq.so beside this package (the repository's layout), else by
ctypes.util.find_library('aq').
"""
import ctypes
import ctypes.util
import errno
import os

AQ_ROOT = 1
AQ_READDIR_PLUS = 1
AQ_CREATE_EXCL = 1
AQ_ERR_BASE = 1000  # codes at or below -1000 are Aquifer's own (aq_strerror has the text)


class Attr(ctypes.Structure):  # struct aq_attr
    _fields_ = [("ino", ctypes.c_uint64), ("size", ctypes.c_uint64), ("blocks", ctypes.c_uint64),
                ("generation", ctypes.c_uint64), ("atime_ns", ctypes.c_int64), ("mtime_ns", ctypes.c_int64),
                ("ctime_ns", ctypes.c_int64), ("mode", ctypes.c_uint32), ("nlink", ctypes.c_uint32),
                ("uid", ctypes.c_uint32), ("gid", ctypes.c_uint32), ("rdev", ctypes.c_uint32),
                ("chunk_size", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class Dirent(ctypes.Structure):  # struct aq_dirent
    _fields_ = [("ino", ctypes.c_uint64), ("cookie", ctypes.c_uint64), ("type", ctypes.c_uint32),
                ("name_len", ctypes.c_uint32), ("name", ctypes.c_char * 256), ("attr", Attr)]


class Change(ctypes.Structure):  # struct aq_change
    _fields_ = [("ino", ctypes.c_uint64), ("cursor", ctypes.c_uint64), ("name", ctypes.c_char * 256)]


class Io(ctypes.Structure):  # struct aq_io
    _fields_ = [("ino", ctypes.c_uint64), ("off", ctypes.c_uint64), ("len", ctypes.c_uint64),
                ("file_size", ctypes.c_uint64), ("buf", ctypes.c_void_p), ("user", ctypes.c_void_p),
                ("result", ctypes.c_int64), ("pending_", ctypes.c_uint32), ("err_", ctypes.c_int)]


assert ctypes.sizeof(Attr) == 88 and ctypes.sizeof(Dirent) == 368 and ctypes.sizeof(Change) == 272
assert ctypes.sizeof(Io) == 64


def _find_lib():
    env = os.environ.get("AQ_LIB")
    if env:
        return env
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "lib", "libaq.so")
    if os.path.exists(here):
        return os.path.normpath(here)
    found = ctypes.util.find_library("aq")
    if not found:
        raise ImportError("libaq not found: set AQ_LIB to lib/libaq.so (run `make` first)")
    return found


P = ctypes.c_void_p
PP = ctypes.POINTER(ctypes.c_void_p)
U64, U32, INT, STR = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p
ATTR = ctypes.POINTER(Attr)

# name: (restype, argtypes); P stands for struct pointers the binding treats as opaque
_PROTOTYPES = {
    "aq_connect": (INT, [STR, PP]),
    "aq_disconnect": (None, [P]),
    "aq_strerror": (STR, [INT]),
    "aq_lookup": (INT, [P, P, U64, STR, ATTR]),
    "aq_getattr": (INT, [P, P, U64, ATTR]),
    "aq_mknod": (INT, [P, P, U64, STR, U32, U32, U32, ATTR]),
    "aq_mkdir_at": (INT, [P, P, U64, STR, U32, ATTR]),
    "aq_unlink_at": (INT, [P, P, U64, STR]),
    "aq_rmdir_at": (INT, [P, P, U64, STR]),
    "aq_readdir_ino": (INT, [P, P, U64, U64, U32, ctypes.POINTER(Dirent), U32]),
    "aq_dir_open": (INT, [P, P, U64, U32, PP]),
    "aq_dir_read": (INT, [P, ctypes.POINTER(Dirent), U32]),
    "aq_dir_close": (None, [P]),
    "aq_changes_ino": (INT, [P, P, U64, U64, ctypes.POINTER(Change), U32, ctypes.POINTER(U64)]),
    "aq_changes": (INT, [P, STR, U64, ctypes.POINTER(Change), U32, ctypes.POINTER(U64)]),
    "aq_open": (INT, [P, STR, INT, U32, PP]),
    "aq_pread": (ctypes.c_ssize_t, [P, P, ctypes.c_size_t, U64]),
    "aq_pwrite": (ctypes.c_ssize_t, [P, P, ctypes.c_size_t, U64]),
    "aq_append": (ctypes.c_ssize_t, [P, P, ctypes.c_size_t, ctypes.POINTER(U64)]),
    "aq_flush": (INT, [P]),
    "aq_fsync": (INT, [P, INT]),
    "aq_close": (INT, [P]),
    "aq_file_getattr": (INT, [P, ATTR]),
    "aq_resolve": (INT, [P, STR, ATTR]),
    "aq_lookup_start": (INT, [P, P, U64, STR, PP]),
    "aq_mknod_start": (INT, [P, P, U64, STR, U32, U32, U32, PP]),
    "aq_unlink_start": (INT, [P, P, U64, STR, PP]),
    "aq_wait": (INT, [P, ATTR]),
    "aq_ioring_create": (INT, [P, U32, PP]),
    "aq_ioring_destroy": (None, [P]),
    # the struct aq_io ** arguments are passed as addresses (an offset into an array)
    "aq_ioring_submit": (INT, [P, P, U32]),
    "aq_ioring_reap": (INT, [P, P, U32, U32]),
}

lib = ctypes.CDLL(_find_lib())
for _name, (_res, _args) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype, _fn.argtypes = _res, _args

# Aquifer's own codes as a POSIX caller sees them: libaq's aq_errno_posix when the library
# exports it (aq.h does not declare it), else this copy of src/common/errors.c's table.
_POSIX_OF_AQ = {1001: errno.EACCES, 1002: errno.EAGAIN, 1003: errno.EAGAIN, 1004: errno.EIO, 1005: errno.EPROTO}
_errno_posix = getattr(lib, "aq_errno_posix", None)
if _errno_posix is not None:
    _errno_posix.restype, _errno_posix.argtypes = INT, [INT]


def strerror(rc):
    """aq_strerror's text for a negative libaq result."""
    return lib.aq_strerror(rc).decode(errors="replace")


def posix_errno(rc):
    """The errno a POSIX caller sees for a negative libaq result."""
    e = -rc
    if e < AQ_ERR_BASE:
        return e
    return _errno_posix(rc) if _errno_posix is not None else _POSIX_OF_AQ.get(e, errno.EIO)


def error(rc, path=None):
    """An OSError (FileNotFoundError, PermissionError... by errno) for a negative libaq
    result, with aq_strerror's text; Aquifer's own codes keep theirs in .aq_code."""
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    e = OSError(posix_errno(rc), strerror(rc), path) if path is not None else OSError(posix_errno(rc), strerror(rc))
    e.aq_code = rc
    return e


def check(rc, path=None):
    """Returns rc when it is not negative, else raises error(rc, path)."""
    if rc < 0:
        raise error(rc, path)
    return rc

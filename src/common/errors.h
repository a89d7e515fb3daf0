/*
 * errors.h - Aquifer's status codes. Functions return 0 or -errno; the wire carries
 * Aquifer's own status numbers (never the host's errno), defined once here with their
 * errno and text (the X-macro keeps the three in one table).
 */
#ifndef AQ_ERRORS_H
#define AQ_ERRORS_H

#include <stdbool.h>

/* X(name, wire number, errno, text) */
#define AQ_STATUS_TABLE(X)                                                         \
	X(OK, 0, 0, "success")                                                     \
	X(PERM, 1, EPERM, "operation not permitted")                               \
	X(NOENT, 2, ENOENT, "no such file or directory")                           \
	X(IO, 3, EIO, "input/output error")                                        \
	X(ACCES, 4, EACCES, "permission denied")                                   \
	X(EXIST, 5, EEXIST, "file exists")                                         \
	X(NOTDIR, 6, ENOTDIR, "not a directory")                                   \
	X(ISDIR, 7, EISDIR, "is a directory")                                      \
	X(INVAL, 8, EINVAL, "invalid argument")                                    \
	X(FBIG, 9, EFBIG, "file too large")                                        \
	X(NOSPC, 10, ENOSPC, "no space left on device")                            \
	X(NAMETOOLONG, 11, ENAMETOOLONG, "file name too long")                     \
	X(NOTEMPTY, 12, ENOTEMPTY, "directory not empty")                          \
	X(NODATA, 13, ENODATA, "no such attribute")                                \
	X(RANGE, 14, ERANGE, "result too large")                                   \
	X(XDEV, 15, EXDEV, "cross-device link")                                    \
	X(MLINK, 16, EMLINK, "too many links")                                     \
	X(BADF, 17, EBADF, "bad file descriptor")                                  \
	X(NOSYS, 18, ENOSYS, "operation not supported by server")                  \
	X(PROTO, 19, EPROTO, "protocol error: malformed frame")                    \
	X(AGAIN, 20, EAGAIN, "resource temporarily unavailable")                   \
	X(NOMEM, 21, ENOMEM, "out of memory")                                      \
	X(LOOP, 22, ELOOP, "too many levels of symbolic links")                    \
	X(BUSY, 23, EBUSY, "device or resource busy")                              \
	X(OPNOTSUPP, 24, EOPNOTSUPP, "operation not supported")                    \
	X(OVERFLOW, 25, EOVERFLOW, "value too large")                              \
	X(CONNREFUSED, 26, ECONNREFUSED, "connection refused")                     \
	X(TIMEDOUT, 27, ETIMEDOUT, "timed out")                                    \
	X(STALE, 28, ESTALE, "stale file handle")                                  \
	X(NOTCONN, 29, ENOTCONN, "not connected")                                  \
	X(ROFS, 30, EROFS, "read-only file system")                                \
	X(TXTBSY, 31, ETXTBSY, "text file busy")                                   \
	X(HOSTUNREACH, 32, EHOSTUNREACH, "host unreachable")                       \
	X(DEADLK, 33, EDEADLK, "resource deadlock avoided")                        \
	X(INTR, 34, EINTR, "interrupted system call")                              \
	X(NOLCK, 35, ENOLCK, "no locks available")                                 \
	/* Aquifer's own conditions, below -1000 when returned as -errno style */    \
	X(AUTH, 100, -1001, "authentication failed: wrong cluster secret")         \
	X(STALE_MAP, 101, -1002, "stale cluster map: refresh and retry")           \
	X(NOT_OWNER, 102, -1003, "bucket or target not owned by this server")      \
	X(CORRUPT, 103, -1004, "chunk checksum mismatch: data corrupt")            \
	X(BAD_VERSION, 104, -1005, "protocol version not supported")

enum aq_status {
#define AQ_X(name, num, err, text) AQ_S_##name = num,
	AQ_STATUS_TABLE(AQ_X)
#undef AQ_X
};

/* Aquifer's own negative codes; functions return these like -errno values. */
#define AQ_EAUTH 1001
#define AQ_ESTALE_MAP 1002
#define AQ_ENOT_OWNER 1003
#define AQ_ECORRUPT 1004
#define AQ_EBAD_VERSION 1005

/* -errno (or -AQ_E*) -> wire status; unknown errors map to AQ_S_IO. */
int aq_status_from_err(int neg_err);
/* wire status -> -errno (or -AQ_E*); unknown statuses map to -EIO. */
int aq_err_from_status(int status);
/* Text for a -errno or -AQ_E* value. Never NULL. */
const char *aq_strerror(int neg_err);
/* errno a POSIX caller should see for -AQ_E* codes (EIO for corrupt, EACCES for auth...). */
int aq_errno_posix(int neg_err);
/* Whether a -errno says the server could not be reached (a connection refused, reset or
 * timed out, an unreachable host): libaq retries these, and the mount answers EIO for
 * them once the retries are over. */
bool aq_err_unreachable(int neg_err);

#endif

/* fdio.h - whole reads and writes on sockets, and what the page cache holds of a file, for
 * the client and the server alike. */
#ifndef AQ_FDIO_H
#define AQ_FDIO_H
#include "common/common.h"
#include <sys/uio.h>

/* Reads exactly n bytes. Returns 0, -ECONNRESET at end of stream, or -errno. */
int fd_read_full(int fd, void *buf, size_t n);
/* Writes every byte of iov (which it consumes). On a non-blocking socket it waits up to
 * block_ms for room (then -ETIMEDOUT: a peer that does not read is dropped). */
int fd_writev_full(int fd, struct iovec *iov, int cnt, int block_ms);
/* True when TCP socket fd is connected to itself: a connect to a local port nobody listens
 * on that was given that same port as its own (TCP's simultaneous open). The port is
 * then held by a connection that answers nothing, and a server cannot bind it. */
bool fd_self_connected(int fd);
/* True when every page of [off, off + len) of fd is in the page cache, so that a buffered
 * read is a memory copy. Without cachestat(2) (before Linux 6.5), false. */
bool fd_range_cached(int fd, uint64_t off, uint64_t len);
#endif

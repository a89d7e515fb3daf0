/* fdio.c - whole reads and writes on sockets, self-connects, page cache residency (see fdio.h). */
#include "common/fdio.h"
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int fd_read_full(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r == 0)
			return -ECONNRESET;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

int fd_writev_full(int fd, struct iovec *iov, int cnt, int block_ms)
{
	while (cnt > 0) {
		ssize_t n = writev(fd, iov, cnt);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = {.fd = fd, .events = POLLOUT};
				if (poll(&p, 1, block_ms) <= 0)
					return -ETIMEDOUT;
				continue;
			}
			return -errno;
		}
		/* Empty pieces are done too, wherever they are: one left last made writev
		 * return 0 for ever (a zero-copy chunk write with nothing after its data). */
		while (cnt > 0 && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			cnt--;
		}
		if (cnt > 0 && n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

#ifndef __NR_cachestat
#define __NR_cachestat 451 /* Linux 6.5; the same number on every architecture */
#endif
struct cachestat_range {
	uint64_t off, len;
};
struct cachestat_out {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};
static atomic_bool no_cachestat;

/* True when every page of [off, off + len) of fd is in the page cache, so that a buffered
 * read is a memory copy. Without cachestat(2) (before Linux 6.5), false. */
bool fd_range_cached(int fd, uint64_t off, uint64_t len)
{
	if (atomic_load_explicit(&no_cachestat, memory_order_relaxed))
		return false;
	struct cachestat_range r = {off, len};
	struct cachestat_out st;
	if (syscall(__NR_cachestat, fd, &r, &st, 0) != 0) {
		if (errno == ENOSYS || errno == EPERM)
			atomic_store(&no_cachestat, true);
		return false;
	}
	uint64_t pg = (uint64_t)getpagesize(), pages = (off + len + pg - 1) / pg - off / pg;
	return st.nr_cache >= pages;
}

bool fd_self_connected(int fd)
{
	struct sockaddr_storage me, peer;
	socklen_t ml = sizeof me, pl = sizeof peer;
	if (getsockname(fd, (struct sockaddr *)&me, &ml) || getpeername(fd, (struct sockaddr *)&peer, &pl) ||
	    me.ss_family != peer.ss_family)
		return false;
	if (me.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&me, *b = (const void *)&peer;
		return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
	}
	if (me.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&me, *b = (const void *)&peer;
		return a->sin6_port == b->sin6_port && !memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr);
	}
	return false;
}

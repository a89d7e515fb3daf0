/*
 * The mount's reads and writes of /dev/fuse, through libfuse's custom I/O hooks, for
 * things libfuse 3.14 cannot do itself:
 *
 * - take FUSE_HANDLE_KILLPRIV_V2, which it does not know: the INIT reply it writes gets
 *   the flag when the kernel offered it. With it the kernel marks the super block
 *   SB_NOSEC and stops asking for security.capability (a GETXATTR round trip) before
 *   every write to a file that has no setuid, setgid or capability (S_NOSEC, until the
 *   inode's attributes are next fetched), and leaves the killing of setuid and setgid on
 *   write and truncate to the server, telling it when the caller lacks CAP_FSETID;
 * - hear that request flag (FUSE_WRITE_KILL_SUIDGID, FUSE_OPEN_KILL_SUIDGID,
 *   FATTR_KILL_SUIDGID), which libfuse drops: each request is read by the worker thread
 *   that then handles it, so the flag of the request this thread read last is the one
 *   of the request it is handling (devio_kill);
 * - answer FUSE_TMPFILE (open with O_TMPFILE), an opcode it does not know: the request
 *   is a CREATE's in all but its opcode (the kernel sends the create's arguments with
 *   the name "/" and takes the create's reply), so it reaches op_create as a CREATE,
 *   and devio_tmpfile tells op_create which it was;
 * - take FUSE over io_uring (Linux 6.14), which it does not know either: the INIT reply
 *   gets FUSE_OVER_IO_URING when the kernel offered it, uring.c's threads register their
 *   ring entries once the kernel has taken that reply, and replies to requests that came
 *   through the ring go back through it (uring_reply) instead of /dev/fuse. Requests
 *   from the ring pass devio_note too, so the flags above are heard either way.
 *
 * A capability xattr is still the kernel's to remove: it asks once per refresh of an
 * inode's attributes, and a file that has one never becomes S_NOSEC.
 */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "aqfuse.h"
#include "common/common.h"

static _Thread_local bool t_kill, t_tmpfile;
static _Atomic uint64_t g_init_unique; /* the INIT, until answered */
static bool g_offer_v2, g_offer_uring; /* what it offered that the mount takes */
static atomic_bool g_v2;
static struct fuse_session *g_se;
static unsigned g_uring_threads; /* FUSE over io_uring's threads (uring_prepare); 0: not wanted */

/* FUSE_OVER_IO_URING (Linux 6.14) is bit 41 of the INIT flags, bit 9 of flags2 */
#define INIT_FLAGS2_OVER_IO_URING (1u << 9)

/* $AQ_MOUNT_KILLPRIV_V2=0 declines the flag, for comparisons. */
static bool killpriv_v2_off(void)
{
	const char *env = getenv("AQ_MOUNT_KILLPRIV_V2");
	return env && strcmp(env, "0") == 0;
}

#ifndef FUSE_TMPFILE
#define FUSE_TMPFILE 51 /* Linux 6.1; not in every <linux/fuse.h> */
#endif

void devio_note(uint8_t *buf, size_t n)
{
	t_kill = t_tmpfile = false;
	if (n < sizeof(struct fuse_in_header))
		return;
	struct fuse_in_header *h = (void *)buf;
	const uint8_t *arg = buf + sizeof *h;
	size_t left = n - sizeof *h;
	/* the request's argument has field, with a bit of flag set */
#define ARG_FLAG(type, field, flag) \
	(left >= offsetof(type, field) + sizeof(((type *)0)->field) && (((const type *)arg)->field & (flag)))
	switch (h->opcode) {
	case FUSE_INIT:
		g_offer_v2 = ARG_FLAG(struct fuse_init_in, flags, FUSE_HANDLE_KILLPRIV_V2) && !killpriv_v2_off();
		g_offer_uring = g_uring_threads && ARG_FLAG(struct fuse_init_in, flags, FUSE_INIT_EXT) &&
				ARG_FLAG(struct fuse_init_in, flags2, INIT_FLAGS2_OVER_IO_URING);
		atomic_store(&g_init_unique, h->unique);
		break;
	case FUSE_WRITE:
		t_kill = ARG_FLAG(struct fuse_write_in, write_flags, FUSE_WRITE_KILL_SUIDGID);
		break;
	case FUSE_OPEN: /* a CREATE's flag goes unheard: it cannot say whether the file was new */
		t_kill = ARG_FLAG(struct fuse_open_in, open_flags, FUSE_OPEN_KILL_SUIDGID);
		break;
	case FUSE_SETATTR:
		t_kill = ARG_FLAG(struct fuse_setattr_in, valid, FATTR_KILL_SUIDGID);
		break;
	case FUSE_TMPFILE:
		h->opcode = FUSE_CREATE;
		t_tmpfile = true;
		break;
	}
#undef ARG_FLAG
}

static ssize_t dev_read(int fd, void *buf, size_t len, void *userdata)
{
	(void)userdata;
	ssize_t n = read(fd, buf, len);
	if (n > 0)
		devio_note(buf, (size_t)n);
	return n;
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	if (uring_reply(iov, count)) {
		size_t n = 0;
		for (int i = 0; i < count; i++)
			n += iov[i].iov_len;
		return (ssize_t)n;
	}
	uint64_t init = atomic_load(&g_init_unique);
	struct fuse_init_out *arg = NULL;
	size_t arg_len = 0;
	if (init && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		const struct fuse_out_header *out = iov[0].iov_base;
		if (out->unique == init) {
			atomic_store(&g_init_unique, 0);
			arg = out->error ? NULL : iov[1].iov_base;
			arg_len = iov[1].iov_len;
		}
	}
#define HAS(field) (arg && arg_len >= offsetof(struct fuse_init_out, field) + sizeof arg->field)
	if (HAS(flags) && g_offer_v2) {
		arg->flags |= FUSE_HANDLE_KILLPRIV_V2;
		atomic_store(&g_v2, true);
	}
	bool ring = HAS(flags2) && g_offer_uring;
#undef HAS
	if (ring) { /* each entry with room for the biggest request the connection allows */
		size_t payload = MAX((size_t)arg->max_write, (size_t)arg->max_pages * (size_t)sysconf(_SC_PAGESIZE));
		ring = uring_prepare(g_se, fd, MAX(payload, (size_t)FUSE_MIN_READ_BUFFER), g_uring_threads) == 0;
	}
	if (ring) {
		arg->flags |= FUSE_INIT_EXT;
		arg->flags2 |= INIT_FLAGS2_OVER_IO_URING;
	}
	ssize_t n = writev(fd, iov, count);
	/* the kernel took the INIT reply within the writev: the entries may register now */
	if (ring)
		uring_go(n > 0);
	return n;
}

int devio_install(struct fuse_session *se, unsigned uring_threads)
{
	static const struct fuse_custom_io io = {.read = dev_read, .writev = dev_writev};
	g_se = se;
	g_uring_threads = uring_threads;
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

bool devio_killpriv_v2(void) { return atomic_load(&g_v2); }

bool devio_kill(void) { return t_kill; }

bool devio_tmpfile(void) { return t_tmpfile; }

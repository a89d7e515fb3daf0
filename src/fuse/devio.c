/*
 * The mount's reads and writes of /dev/fuse, through libfuse's custom I/O hooks, for two
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
 *   of the request it is handling (devio_kill).
 *
 * - answer FUSE_TMPFILE (open with O_TMPFILE), an opcode it does not know: the request
 *   is a CREATE's in all but its opcode (the kernel sends the create's arguments with
 *   the name "/" and takes the create's reply), so it reaches op_create as a CREATE,
 *   and devio_tmpfile tells op_create which it was.
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

static _Thread_local bool t_kill, t_tmpfile;
static _Atomic uint64_t g_init_unique; /* the INIT that offered KILLPRIV_V2, until answered */
static atomic_bool g_v2;

/* $AQ_MOUNT_KILLPRIV_V2=0 declines the flag, for comparisons. */
static bool killpriv_v2_off(void)
{
	const char *env = getenv("AQ_MOUNT_KILLPRIV_V2");
	return env && strcmp(env, "0") == 0;
}

#ifndef FUSE_TMPFILE
#define FUSE_TMPFILE 51 /* Linux 6.1; not in every <linux/fuse.h> */
#endif

/* Notes what the request in buf (n bytes) tells that libfuse will not pass on. */
static void note_request(uint8_t *buf, size_t n)
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
		if (ARG_FLAG(struct fuse_init_in, flags, FUSE_HANDLE_KILLPRIV_V2) && !killpriv_v2_off())
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
		note_request(buf, (size_t)n);
	return n;
}

static ssize_t dev_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	(void)userdata;
	uint64_t init = atomic_load(&g_init_unique);
	if (init && count >= 2 && iov[0].iov_len >= sizeof(struct fuse_out_header)) {
		const struct fuse_out_header *out = iov[0].iov_base;
		if (out->unique == init) {
			atomic_store(&g_init_unique, 0);
			if (!out->error && iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
				((struct fuse_init_out *)iov[1].iov_base)->flags |= FUSE_HANDLE_KILLPRIV_V2;
				atomic_store(&g_v2, true);
			}
		}
	}
	return writev(fd, iov, count);
}

int devio_install(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {.read = dev_read, .writev = dev_writev};
	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

bool devio_killpriv_v2(void) { return atomic_load(&g_v2); }

bool devio_kill(void) { return t_kill; }

bool devio_tmpfile(void) { return t_tmpfile; }

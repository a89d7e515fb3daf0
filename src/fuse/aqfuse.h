/* aqfuse.h - the FUSE adapter: mounts an Aquifer cluster with libfuse3's low-level API. */
#ifndef AQ_FUSE_H
#define AQ_FUSE_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct aqfuse_options {
	const char *cluster_file;
	const char *mountpoint;
	bool foreground;
	bool allow_other;
	bool read_only;
	bool nosuid, nodev;      /* refuse setuid and device files (a root mount allows them) */
	bool debug;
	double attr_timeout_s;   /* kernel attribute and entry cache */
	unsigned threads;        /* FUSE worker threads */
	bool no_io_uring;        /* serve through /dev/fuse even where the kernel offers FUSE
				  * over io_uring */
	const char *log_path;    /* where the mount logs once it runs in the background */
	const char *vfs_opts;    /* mount(8) flags libfuse passes on by name: "noatime,noexec"... */
	unsigned long mnt_flags; /* every MS_* flag the options asked for; those libfuse does
				  * not know (MOUNT_BIND_FLAGS) a bind remount sets */
};

/* ioctl(2) on any file or directory of the mount (no argument): returns once the mount
 * has applied every change the servers pushed to it before the call, so what another
 * client finished before it shows here after it (the kernel's caches included). The
 * number is _IO(0xAF, 1). */
#define AQFUSE_IOC_HEARD 0xAF01u

/* devio.c: /dev/fuse through libfuse's custom I/O. devio_install after
 * fuse_session_mount; devio_killpriv_v2 once INIT is answered: the kernel leaves the
 * killing of setuid and setgid to the mount; devio_kill: the request this thread handles
 * asks for it (its caller lacks CAP_FSETID); devio_tmpfile: the CREATE this thread
 * handles was the kernel's FUSE_TMPFILE (open with O_TMPFILE). */
struct fuse_session;
struct iovec;
int devio_install(struct fuse_session *se, unsigned uring_threads);
void devio_note(uint8_t *buf, size_t n); /* a request read, before libfuse handles it */
bool devio_killpriv_v2(void);
bool devio_kill(void);
bool devio_tmpfile(void);

/* uring.c: FUSE over io_uring, taken when devio_install was given uring_threads and the
 * kernel offers it. uring_kernel_on: whether the kernel will offer it to a mount made now,
 * after turning the fuse module's enable_uring on when it may (root). uring_prepare,
 * before the INIT reply offers it: threads (in all, at least 2 per CPU queue), their
 * io_urings and entries, or an error and nothing to offer; uring_go after that reply:
 * the threads register their entries, or end if it was not sent. uring_reply takes a
 * reply (as writev's iov) if it answers a request that came through the ring, and
 * returns false otherwise; uring_stop before the session ends. */
bool uring_kernel_on(void);
int uring_prepare(struct fuse_session *se, int fd, size_t payload_size, unsigned threads);
void uring_go(bool offered);
bool uring_reply(const struct iovec *iov, int count);
/* Where this thread's reply of len bytes may be built so that it is not copied again:
 * the payload buffer of the ring entry whose request (one without a payload: a READ) it
 * serves; NULL otherwise. */
void *uring_reply_space(size_t len);
void uring_stop(void);

/* Mounts and serves until unmounted. Returns a process exit status. */
int aqfuse_main(const struct aqfuse_options *opt);
#endif

/* aqfuse.h - the FUSE adapter: mounts an Aquifer cluster with libfuse3's low-level API. */
#ifndef AQ_FUSE_H
#define AQ_FUSE_H
#include <stdbool.h>

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
int devio_install(struct fuse_session *se);
bool devio_killpriv_v2(void);
bool devio_kill(void);
bool devio_tmpfile(void);

/* Mounts and serves until unmounted. Returns a process exit status. */
int aqfuse_main(const struct aqfuse_options *opt);
#endif

/*
 * fwdfs - a FUSE file system that does nothing but forward to a local directory: the
 * floor a FUSE layer costs on this machine, for `aq bench meta --via fuse` to measure
 * beside Aquifer's mount (docs/performance.md). Like libfuse's passthrough_ll example,
 * each request is one or two system calls on the source tree; unlike it, the inode table
 * is hashed (passthrough_ll scans a list per lookup, which a 1M-file directory makes the
 * cost) and holds paths, not O_PATH descriptors (one per inode the kernel remembers
 * would need a descriptor limit of millions). Enough for the benchmark's phases: lookup,
 * getattr, create, flush, release, rename, unlink, mkdir, rmdir, readdir; and open and read,
 * for `aq bench train --via fuse` (reads are handed to libfuse as the source's descriptor,
 * as passthrough_ll does).
 *
 *   bin/fwdfs SOURCE MOUNTPOINT     (in the foreground; umount MOUNTPOINT to stop it)
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TABLE_SIZE (1u << 22)
#define TIMEOUT_S 1.0 /* passthrough_ll's default (cache=auto) */

struct node {
	struct node *next; /* hash chain, under table_mu */
	char *path;        /* relative to the source; under table_mu */
	ino_t ino;
	uint64_t lookups;
};

static struct node **table;
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static struct node root = {.path = "."};
static int source_fd;

static struct node *node_of(fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &root : (struct node *)(uintptr_t)ino;
}

/* "dir/name" of parent's child name (malloc'ed). */
static char *child_path(fuse_ino_t parent, const char *name)
{
	char *p;
	pthread_mutex_lock(&table_mu);
	int n = asprintf(&p, "%s/%s", node_of(parent)->path, name);
	pthread_mutex_unlock(&table_mu);
	if (n < 0)
		abort();
	return p;
}

static struct node *find_locked(ino_t ino)
{
	struct node *n = table[ino & (TABLE_SIZE - 1)];
	while (n && n->ino != ino)
		n = n->next;
	return n;
}

/* Stats parent/name and counts one more kernel reference to its node. 0 or errno. */
static int do_lookup(fuse_ino_t parent, const char *name, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->attr_timeout = e->entry_timeout = TIMEOUT_S;
	char *path = child_path(parent, name);
	if (fstatat(source_fd, path, &e->attr, AT_SYMLINK_NOFOLLOW)) {
		int err = errno;
		free(path);
		return err;
	}
	pthread_mutex_lock(&table_mu);
	struct node *n = find_locked(e->attr.st_ino);
	if (n) {
		n->lookups++;
		free(n->path);
		n->path = path;
	} else {
		n = calloc(1, sizeof *n);
		if (!n)
			abort();
		n->path = path;
		n->ino = e->attr.st_ino;
		n->lookups = 1;
		struct node **head = &table[n->ino & (TABLE_SIZE - 1)];
		n->next = *head;
		*head = n;
	}
	pthread_mutex_unlock(&table_mu);
	e->ino = (uintptr_t)n;
	return 0;
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
	struct node *n = node_of(ino);
	if (n == &root)
		return;
	pthread_mutex_lock(&table_mu);
	n->lookups -= nlookup;
	if (n->lookups == 0) {
		struct node **pp = &table[n->ino & (TABLE_SIZE - 1)];
		while (*pp != n)
			pp = &(*pp)->next;
		*pp = n->next;
		free(n->path);
		free(n);
	}
	pthread_mutex_unlock(&table_mu);
}

static void reply_entry(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int err = do_lookup(parent, name, &e);
	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_entry(req, &e);
}

static void fwd_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	reply_entry(req, parent, name);
}

static void fwd_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(ino, nlookup);
	fuse_reply_none(req);
}

static void fwd_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		forget_one(f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static void fwd_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	pthread_mutex_lock(&table_mu);
	char *path = strdup(node_of(ino)->path);
	pthread_mutex_unlock(&table_mu);
	int rc = fstatat(source_fd, path, &st, AT_SYMLINK_NOFOLLOW);
	free(path);
	if (rc)
		fuse_reply_err(req, errno);
	else
		fuse_reply_attr(req, &st, TIMEOUT_S);
}

static void fwd_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	char *path = child_path(parent, name);
	int fd = openat(source_fd, path, (fi->flags | O_CREAT) & ~O_NOFOLLOW, mode);
	free(path);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	struct fuse_entry_param e;
	int err = do_lookup(parent, name, &e);
	if (err) {
		close(fd);
		fuse_reply_err(req, err);
		return;
	}
	fuse_reply_create(req, &e, fi);
}

static void fwd_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pthread_mutex_lock(&table_mu);
	char *path = strdup(node_of(ino)->path);
	pthread_mutex_unlock(&table_mu);
	int fd = openat(source_fd, path, fi->flags & ~O_NOFOLLOW);
	free(path);
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	fi->noflush = (fi->flags & O_ACCMODE) == O_RDONLY;
	fuse_reply_open(req, fi);
}

static void fwd_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = (int)fi->fh;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void fwd_write(fuse_req_t req, fuse_ino_t ino, const char *data, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	ssize_t n = pwrite((int)fi->fh, data, size, off);
	if (n < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_write(req, (size_t)n);
}

static void fwd_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	fuse_reply_err(req, (datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh)) ? errno : 0);
}

static void fwd_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	fuse_reply_err(req, close(dup((int)fi->fh)) ? errno : 0);
}

static void fwd_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static void fwd_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	char *path = child_path(parent, name);
	fuse_reply_err(req, unlinkat(source_fd, path, 0) ? errno : 0);
	free(path);
}

static void fwd_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	char *path = child_path(parent, name);
	fuse_reply_err(req, unlinkat(source_fd, path, AT_REMOVEDIR) ? errno : 0);
	free(path);
}

static void fwd_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	char *path = child_path(parent, name);
	int rc = mkdirat(source_fd, path, mode);
	free(path);
	if (rc)
		fuse_reply_err(req, errno);
	else
		reply_entry(req, parent, name);
}

static void fwd_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		       const char *newname, unsigned int flags)
{
	if (flags) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	char *from = child_path(parent, name), *to = child_path(newparent, newname);
	int err = renameat(source_fd, from, source_fd, to) ? errno : 0;
	struct stat st;
	if (!err && !fstatat(source_fd, to, &st, AT_SYMLINK_NOFOLLOW)) {
		/* the node keeps its kernel references under its new path */
		pthread_mutex_lock(&table_mu);
		struct node *n = find_locked(st.st_ino);
		if (n) {
			free(n->path);
			n->path = to;
			to = NULL;
		}
		pthread_mutex_unlock(&table_mu);
	}
	fuse_reply_err(req, err);
	free(from);
	free(to);
}

struct dir_handle {
	DIR *dp;
	struct dirent *pending; /* read but not yet returned */
	off_t offset;
};

static void fwd_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	pthread_mutex_lock(&table_mu);
	int fd = openat(source_fd, node_of(ino)->path, O_RDONLY | O_DIRECTORY);
	pthread_mutex_unlock(&table_mu);
	struct dir_handle *d = fd < 0 ? NULL : calloc(1, sizeof *d);
	if (d)
		d->dp = fdopendir(fd);
	if (!d || !d->dp) {
		int err = fd < 0 ? errno : ENOMEM;
		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fuse_reply_open(req, fi);
}

static void fwd_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	char *buf = malloc(size), *p = buf;
	size_t room = size;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->pending = NULL;
		d->offset = off;
	}
	for (;;) {
		if (!d->pending && !(d->pending = readdir(d->dp)))
			break;
		struct stat st = {.st_ino = d->pending->d_ino, .st_mode = (mode_t)d->pending->d_type << 12};
		size_t n = fuse_add_direntry(req, p, room, d->pending->d_name, &st, d->pending->d_off);
		if (n > room)
			break;
		p += n;
		room -= n;
		d->offset = d->pending->d_off;
		d->pending = NULL;
	}
	fuse_reply_buf(req, buf, size - room);
	free(buf);
}

static void fwd_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dir_handle *d = (struct dir_handle *)(uintptr_t)fi->fh;
	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops fwd_ops = {
	.lookup = fwd_lookup, .forget = fwd_forget, .forget_multi = fwd_forget_multi,
	.getattr = fwd_getattr, .create = fwd_create, .open = fwd_open, .read = fwd_read, .write = fwd_write, .fsync = fwd_fsync, .flush = fwd_flush, .release = fwd_release,
	.unlink = fwd_unlink, .rmdir = fwd_rmdir, .mkdir = fwd_mkdir, .rename = fwd_rename,
	.opendir = fwd_opendir, .readdir = fwd_readdir, .releasedir = fwd_releasedir,
};

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: fwdfs SOURCE MOUNTPOINT\n");
		return 2;
	}
	umask(0); /* the kernel has applied the caller's */
	table = calloc(TABLE_SIZE, sizeof *table);
	source_fd = open(argv[1], O_PATH | O_DIRECTORY);
	if (!table || source_fd < 0) {
		perror(argv[1]);
		return 1;
	}
	root.lookups = 2;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	fuse_opt_add_arg(&args, argv[0]);
	struct fuse_session *se = fuse_session_new(&args, &fwd_ops, sizeof fwd_ops, NULL);
	if (!se || fuse_session_mount(se, argv[2])) {
		fprintf(stderr, "fwdfs: cannot mount %s\n", argv[2]);
		return 1;
	}
	fuse_set_signal_handlers(se);
	struct fuse_loop_config cfg = {.clone_fd = 0, .max_idle_threads = 10};
	int rc = fuse_session_loop_mt(se, &cfg);
	fuse_remove_signal_handlers(se);
	fuse_session_unmount(se);
	fuse_session_destroy(se);
	return rc ? 1 : 0;
}

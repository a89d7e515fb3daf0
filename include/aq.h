/*
 * aq.h - the Aquifer client library (libaq), the one client every tool is built on:
 * the FUSE mount, the aq command line and the Python binding all call these functions.
 *
 * Conventions: every function returns 0 (or a count) on success and a negative errno on
 * failure (-ENOENT...), or one of Aquifer's own codes below -1000 (see aq_strerror).
 * A struct aq_client is safe to share between threads; it pipelines their requests over
 * pooled connections. It must not be used in a child after fork(): connect again there.
 */
#ifndef AQ_H
#define AQ_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AQ_ROOT 1ull /* inode number of the root directory */

struct aq_attr {
	uint64_t ino;
	uint64_t size;        /* bytes */
	uint64_t blocks;      /* 512-byte units allocated */
	uint64_t generation;
	int64_t atime_ns, mtime_ns, ctime_ns;
	uint32_t mode;        /* type and permission bits, as st_mode */
	uint32_t nlink;
	uint32_t uid, gid;
	uint32_t rdev;
	uint32_t chunk_size;  /* bytes per chunk for this file's data */
	uint32_t flags;       /* AQ_ATTR_* */
};
#define AQ_FILE_SIZE_MAX (1ull << 50) /* a file's size at most (1 PiB): past it writes and truncates are EFBIG */
#define AQ_ATTR_XATTRS 1u     /* the inode may have extended attributes (clear: it has none) */
#define AQ_ATTR_ACL 2u        /* it has an access ACL (system.posix_acl_access) */
#define AQ_ATTR_DACL 4u       /* a directory with a default ACL (system.posix_acl_default) */
#define AQ_ATTR_LINKABLE 8u   /* an unnamed file (aq_tmpfile_open) that a link may still name */

/* A create's mode (aq_mknod, aq_mkdir_at, aq_create_open) may carry the caller's umask:
 * mode | AQ_MODE_UMASK(umask). The server then applies it, unless the parent directory
 * has a default ACL, which decides the new inode's permissions instead (POSIX ACLs). A
 * mode without it is taken as it is. */
#define AQ_MODE_HAS_UMASK (1u << 31)
#define AQ_MODE_UMASK(u) (AQ_MODE_HAS_UMASK | (((uint32_t)(u) & 0777u) << 16))
#define AQ_MODE_UMASK_BITS AQ_MODE_UMASK(0777)

/* Who is asking: the server checks permissions against this. */
struct aq_cred {
	uint32_t uid, gid;
	uint32_t ngroups;
	uint32_t groups[32];
};

struct aq_client;
struct aq_file;

/* Connects to the cluster described by cluster_file (NULL: $AQ_CLUSTER, else
 * ./var/cluster.conf). On success *out owns the client; free it with aq_disconnect. */
int aq_connect(const char *cluster_file, struct aq_client **out);
void aq_disconnect(struct aq_client *c);
/* The credentials used by calls that take none (default: the process's own). */
void aq_set_cred(struct aq_client *c, const struct aq_cred *cred);
const char *aq_strerror(int err);

/* Inode-level calls (what the FUSE adapter uses). cred may be NULL: the client's. */
int aq_lookup(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, struct aq_attr *out);
int aq_getattr(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, struct aq_attr *out);

#define AQ_SET_MODE (1u << 0)
#define AQ_SET_UID (1u << 1)
#define AQ_SET_GID (1u << 2)
#define AQ_SET_SIZE (1u << 3)
#define AQ_SET_ATIME (1u << 4)
#define AQ_SET_MTIME (1u << 5)
#define AQ_SET_ATIME_NOW (1u << 6)
#define AQ_SET_MTIME_NOW (1u << 7)
#define AQ_SET_CTIME (1u << 8)
/* With AQ_SET_SIZE: the truncate comes through a descriptor open for writing (ftruncate,
 * open with O_TRUNC), whose open checked write permission: the server checks none, as
 * Linux does. aq_file_setattr sets it for a writable handle. */
#define AQ_SET_BY_HANDLE (1u << 9)
/* Drops the setuid bit of a file that is not a directory, and its setgid bit if group
 * execute is set or the caller is neither root nor in the file's group: what Linux drops
 * when someone without CAP_FSETID writes or truncates a file. For anyone who owns the
 * file, may write it, or writes through a handle (AQ_SET_BY_HANDLE). Alone, and with
 * nothing to drop, it changes nothing. */
#define AQ_SET_KILL_SXID (1u << 10)
/* The change may wait, when this client has the inode open for writing, to be sent after
 * the file's buffered writes (at its flush, fsync or close, before any other setattr of
 * it, or within the write-back delay): a regular file's mode, owner, group and explicit
 * times set by root, or its mode and times by the owner, with no ACL or xattrs, no setuid
 * or setgid bit a chown would drop, and no change by another client heard of since the
 * open. *out then has the attributes as they will be; this client's later calls show
 * them, other clients see them once the file is closed, as its bytes. The FUSE mount
 * asks for it (tar and cp -a set times, owner and mode through the descriptor they
 * wrote with). */
#define AQ_SET_DEFER (1u << 11)
/* Sends every deferred change of this client now (a server refused a call that may have
 * hinged on one); returns how many files had some. An error is the file's flush's. */
int aq_send_deferred(struct aq_client *c);
/* Whether mode has bits AQ_SET_KILL_SXID may drop. */
static inline bool aq_mode_sxid(uint32_t mode) { return !S_ISDIR(mode) && (mode & (S_ISUID | S_ISGID)); }
int aq_setattr(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, uint32_t mask,
	       const struct aq_attr *in, struct aq_attr *out);

#define AQ_CREATE_EXCL 1u
/* Creates a regular file (flags: AQ_CREATE_EXCL, or 0 to open one that exists) and opens
 * it with open(2) flags, in one round trip; *out gets its attributes, *f the open file.
 * Without AQ_CREATE_EXCL a name taken by a directory is EISDIR, by anything else but a
 * regular file (a symlink, a fifo) EEXIST: it is not this call's to open. */
int aq_create_open(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		   uint32_t mode, uint32_t flags, int open_flags, struct aq_attr *out, struct aq_file **f);
/* Creates an unnamed regular file in parent and opens it, as open(2) with O_TMPFILE
 * (open_flags must allow writing): it has no link, and goes once no one holds it open,
 * unless aq_link_at names it first, which it may unless open_flags had O_EXCL. */
int aq_tmpfile_open(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, uint32_t mode, int open_flags,
		    struct aq_attr *out, struct aq_file **f);
int aq_mknod(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, uint32_t mode,
	     uint32_t rdev, uint32_t flags, struct aq_attr *out);
int aq_mkdir_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, uint32_t mode,
		struct aq_attr *out);
int aq_symlink_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		  const char *target, struct aq_attr *out);
/* Copies the link target into buf (NUL-terminated, truncated to size); returns its length. */
int aq_readlink_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, char *buf, size_t size);
int aq_unlink_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name);
/* As aq_unlink_at; *dir gets the directory's attributes after the unlink (times, link
 * count) when the server that removed the name holds the directory, else dir->ino is 0. */
int aq_unlink_at_dir(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		     struct aq_attr *dir);
int aq_rmdir_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name);
#define AQ_RENAME_NOREPLACE 1u
#define AQ_RENAME_EXCHANGE 2u
int aq_rename_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		 uint64_t newparent, const char *newname, uint32_t flags);
int aq_link_at(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, uint64_t newparent,
	       const char *newname, struct aq_attr *out);
int aq_access_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, uint32_t mask);

/* One directory entry. cookie is where the listing resumes after this entry; entries
 * that share a cookie must be delivered in the same page (hash collisions). */
struct aq_dirent {
	uint64_t ino;
	uint64_t cookie;
	uint32_t type;        /* DT_REG, DT_DIR... */
	uint32_t name_len;
	char name[256];
	struct aq_attr attr;  /* filled when the listing asked for attributes */
};
#define AQ_READDIR_PLUS 1u
/* Fills up to max entries starting at cookie (0: from the start). Returns the number
 * filled; 0 at the end of the directory. */
int aq_readdir_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint64_t cookie,
		   uint32_t flags, struct aq_dirent *ents, uint32_t max);
/* As aq_readdir_ino; *at_end also says whether these entries reach the end of the
 * directory, so that a caller need not ask again to learn it. */
int aq_readdir_ino_end(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint64_t cookie,
		       uint32_t flags, struct aq_dirent *ents, uint32_t max, bool *at_end);
/* A listing stream over a whole directory, for reading it fast: the directory's buckets
 * are split into ranges, each with a page request in flight, so the server scans several
 * at once while the caller consumes. Entries come in no particular order, each once (an
 * entry that exists for the whole listing comes back exactly once, as with readdir), and
 * a stream holds a few pages of memory whatever the directory's size. It has no cookies:
 * to resume a listing, use aq_readdir_ino. flags: AQ_READDIR_PLUS or 0. */
struct aq_dir;
int aq_dir_open(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint32_t flags, struct aq_dir **out);
/* Up to max entries; 0 at the end of the listing; -errno. */
int aq_dir_read(struct aq_dir *d, struct aq_dirent *ents, uint32_t max);
void aq_dir_close(struct aq_dir *d);

/* Extended attributes. getxattr/listxattr return the size; with size 0 they only measure. */
#define AQ_XATTR_CREATE 1u
#define AQ_XATTR_REPLACE 2u
/* An access ACL that says no more than the mode (cp -a sets one on every file it copies)
 * is a chmod: it may be deferred as AQ_SET_DEFER says, when it may. */
#define AQ_XATTR_DEFER 4u
int aq_setxattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, const char *name,
		    const void *value, size_t size, uint32_t flags);
int aq_getxattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, const char *name, void *value,
		    size_t size);
int aq_listxattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, char *list, size_t size);
int aq_removexattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, const char *name);

struct aq_statfs {
	uint64_t total_bytes, free_bytes, used_bytes;
	uint64_t files;
	uint32_t servers, buckets, targets, chunk_size;
};
int aq_statfs(struct aq_client *c, struct aq_statfs *out);

/* Files. flags are open(2)'s (O_RDONLY, O_WRONLY, O_RDWR, O_APPEND, O_TRUNC). Writes are
 * buffered per chunk and sent on chunk boundaries, aq_fsync and aq_close; aq_fsync returns
 * when data and size are durable. */
/* An open's flags may carry AQ_O_EXEC (Linux's __FMODE_EXEC, which the kernel passes in an
 * exec(2)'s FUSE OPEN): the file is opened to run it, which needs execute permission,
 * not read (an execute-only binary). */
#define AQ_O_EXEC 040
int aq_open_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int flags, struct aq_file **out);
/* As aq_open_ino for O_RDONLY, but returns at once: the OPEN is in flight, and the first
 * call on the file waits for it and reports its error (other flags: aq_open_ino). For a
 * caller that already checked permissions (the FUSE mount's kernel does), it takes a
 * round trip off every open. The OPEN also brings the file's first 256 KiB, which
 * answer the first aq_pread when they cover it: a small file read whole costs one round
 * trip. On the server's machine the OPEN brings where they lie instead, and the client
 * reads them from the server's files itself when it may ("local reads";
 * $AQ_LOCAL_READS=0: never). */
int aq_open_ino_lazy(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int flags, struct aq_file **out);
/* As aq_open_ino_lazy, for a caller that holds the file's first bytes already (the mount,
 * when the kernel's page cache has them): the OPEN brings none. */
int aq_open_ino_lazy_nodata(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int flags,
			    struct aq_file **out);
/* A lazy open the server refused (EACCES, EPERM): asks again with cred (the FUSE mount
 * adds the caller's supplementary groups). 0 once the file is open. */
int aq_file_reopen(struct aq_file *f, const struct aq_cred *cred);
ssize_t aq_pread(struct aq_file *f, void *buf, size_t len, uint64_t off);
/* The bytes of a read without a copy, when the client holds them already (the first
 * read of an aq_open_ino_lazy file, covered by what its OPEN brought): returns their
 * count, or -errno, with *data valid until aq_bytes_free(*bytes) (*bytes may be NULL:
 * nothing to free). -EAGAIN when it holds no such bytes: read with aq_pread. */
struct aq_bytes;
ssize_t aq_pread_held(struct aq_file *f, size_t len, uint64_t off, const void **data, struct aq_bytes **bytes);
/* All the bytes the OPEN of an aq_open_ino_lazy file brought (its first up to 256 KiB),
 * taken from the file so that no read is answered from them again: waits for the OPEN
 * and returns their count, with *eof true when they reach the end of the file, *data
 * valid until aq_bytes_free(*bytes). -EAGAIN when there are none to take (none came, a
 * read took them, or another handle of this client has the file open, whose writes they
 * may miss); an error of their read stays for the first read to report. -errno: the
 * OPEN failed. */
ssize_t aq_open_bytes(struct aq_file *f, const void **data, bool *eof, struct aq_bytes **bytes);
void aq_bytes_free(struct aq_bytes *b);

/* Small files read by inode from a location known ahead (the FUSE mount's statahead):
 * aq_locate_first asks where chunk 0 of each of n inodes lies on this machine's disk, in
 * BATCH frames, not counted as reads (PROTO_F_PEEK); locs[i] gets a location (free with
 * aq_loc_free) or NULL: the chunk is elsewhere, only in S3, in several records, or local
 * reads are off. Returns how many it located, or -errno. aq_loc_read reads the first len
 * bytes of the file from it, every block checked against its crc32c and the record's
 * header against ino and the chunk's version, and tells aqd of the read without waiting
 * (its atime, the object tier): 0 with *data valid until free(*mem); -EAGAIN when len
 * passes the record, or this client has the file open for writing or holds writes to
 * it not yet sent; another -errno when the record is gone or no longer what was located
 * (compacted, a later write's): read through aqd then. A location says nothing of what
 * changed since it was given: the caller drops it when it hears the file changed. */
struct aq_loc;
int aq_locate_first(struct aq_client *c, const uint64_t *inos, uint32_t n, struct aq_loc **locs);
struct aq_loc *aq_loc_dup(const struct aq_loc *l);
void aq_loc_free(struct aq_loc *l);
int aq_loc_read(struct aq_client *c, uint64_t ino, const struct aq_loc *l, uint32_t len, void **mem,
		const void **data);
ssize_t aq_pwrite(struct aq_file *f, const void *buf, size_t len, uint64_t off);
/* Appends at the end of file; *off_out gets the offset written at. */
ssize_t aq_append(struct aq_file *f, const void *buf, size_t len, uint64_t *off_out);
/* fallocate(2) for mode 0 (the file grows to at least off + len, the new bytes read as
 * zeros) and FALLOC_FL_KEEP_SIZE (nothing to do): space is not reserved, so as on a
 * thin-provisioned volume a later write may still fail with ENOSPC; asking for more past
 * the end than the cluster has free is ENOSPC at once, as on ext4. FALLOC_FL_PUNCH_HOLE
 * (with KEEP_SIZE) and FALLOC_FL_ZERO_RANGE: the range reads as zeros, whole chunks in
 * it are dropped (holes); zero range grows the file unless KEEP_SIZE. Other modes:
 * -EOPNOTSUPP. */
int aq_fallocate(struct aq_file *f, int mode, uint64_t off, uint64_t len);
int aq_flush(struct aq_file *f);
/* Returns when the file's data and size are durable, and with datasync 0 its other
 * metadata (and every metadata change the servers took before) too. With datasync, once
 * the file's size was made durable by this client and has not changed, only the data is
 * synced (fdatasync's rule). */
int aq_fsync(struct aq_file *f, int datasync);
int aq_close(struct aq_file *f);
uint64_t aq_file_ino(const struct aq_file *f);
/* Size as this client sees it (including its own unflushed writes). */
int aq_file_getattr(struct aq_file *f, struct aq_attr *out);
/* Whether f was opened with O_DIRECT. */
bool aq_file_direct(const struct aq_file *f);
/* aq_setattr of f's inode through f: a size change through a handle open for writing
 * needs no write permission (AQ_SET_BY_HANDLE). cred may be NULL: the client's. */
int aq_file_setattr(struct aq_file *f, const struct aq_cred *cred, uint32_t mask, const struct aq_attr *in,
		    struct aq_attr *out);
/* Whether f's inode may have mode bits a write by someone without CAP_FSETID must drop
 * (aq_mode_sxid; aq_file_setattr with AQ_SET_KILL_SXID drops them): false only when the
 * newest attributes this client heard of have none and no other client changed the inode
 * since. */
bool aq_file_sxid(struct aq_file *f);

/* lseek(2)'s SEEK_DATA and SEEK_HOLE (whence) from off: the first byte at or past off
 * that holds data, or the first that is in a hole (the end of the file counts as one).
 * Holes are what no write reached, a chunk at a time: a chunk's bytes run from its start
 * to the last byte written in it, the rest is a hole. -ENXIO at or past the end, or for
 * SEEK_DATA with no data past off. This client's buffered writes are sent first. */
int64_t aq_file_seek(struct aq_file *f, int64_t off, int whence);

/* Locks: fcntl(2)'s byte-range locks (process-owned and open file description, OFD) and
 * flock(2)'s whole-file locks, kept by the server that holds the inode, so that they
 * exclude each other across clients and machines. An owner is any number the caller
 * picks (the kernel's lock owner, for the mount); the rules are Linux's: an owner's
 * ranges of one type merge, a lock over its own replaces that part, flock locks and
 * byte-range locks never meet. A lock lasts until it is dropped, f is closed (every
 * owner that locked through f lets go of f's inode then), or the client's last
 * connection to the server closes. A restarted server holds the locks of a client that
 * said who it is (aq_watch) again, for 30 s, and the client keeps them by connecting
 * again within that time. */
#define AQ_LK_RD 0u
#define AQ_LK_WR 1u
#define AQ_LK_UN 2u
#define AQ_LK_END ((uint64_t)INT64_MAX) /* an end that reaches past any offset (l_len 0) */
struct aq_lock {
	uint32_t type;        /* AQ_LK_* */
	uint32_t pid;         /* the holder's process id, as the client gave it */
	uint64_t start, end;  /* bytes start .. end, inclusive; end at most AQ_LK_END */
};
#define AQ_LOCK_WAIT 1u   /* wait until it is granted (F_SETLKW); -EDEADLK for a circle of waits */
#define AQ_LOCK_FLOCK 2u  /* a flock(2) lock: the whole file (start 0, end AQ_LK_END) */
#define AQ_LOCK_TEST 4u   /* F_GETLK: *lk becomes the first lock in the way, or type AQ_LK_UN */
/* Takes, changes or drops (type AQ_LK_UN) owner's lock on f's inode; -EAGAIN when another
 * owner's lock is in the way and AQ_LOCK_WAIT is not set; -ENOLCK when the inode holds
 * 4,096 locks (all owners together; an unlock that cuts none in two always works). A wait carries wait_id, a number
 * unique in this client, that aq_lock_cancel names to end it with -EINTR. */
int aq_file_lock(struct aq_file *f, uint64_t owner, uint32_t flags, uint64_t wait_id, struct aq_lock *lk);
/* aq_file_lock without holding the calling thread while it waits: done(arg, rc) is called
 * once the call ends (on a libaq thread; it must not wait on another lock call's end). A
 * process waiting for a lock then costs the mount no thread. Returns 0 once it is sent,
 * or an error, and then done is not called. No AQ_LOCK_TEST. A wait whose connection
 * breaks is sent again once the server is back, within the reconnect window (a restarted
 * server kept the locks held); past it, it ends with -ENOLCK. */
typedef void (*aq_lock_done_fn)(void *arg, int rc);
int aq_file_lock_async(struct aq_file *f, uint64_t owner, uint32_t flags, uint64_t wait_id, const struct aq_lock *lk,
		       aq_lock_done_fn done, void *arg);
/* Ends the wait wait_id on inode ino with -EINTR (a signal came for the waiter). A wait
 * that was not there yet ends with -EINTR when it comes; one granted already keeps its
 * lock. Needs no open file: the waiter's may be closed by the time a signal is heard. */
int aq_lock_cancel(struct aq_client *c, uint64_t ino, uint64_t wait_id);
/* close(2)'s rule for fcntl locks: drops owner's byte-range locks on f's inode, if any
 * owner locked through a handle of that inode this client has open (no round trip
 * otherwise). */
int aq_file_unlock_owner(struct aq_file *f, uint64_t owner);
/* What's new: entries created in (or renamed into) a directory after cursor, oldest first,
 * without listing the directory. Pass 0 to start from the beginning; *next gets the
 * cursor for the next call. Returns the number filled (0: nothing new yet). */
struct aq_change {
	uint64_t ino;
	uint64_t cursor;      /* this entry's position; resuming from it returns what follows */
	char name[256];
};
int aq_changes_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint64_t cursor,
		   struct aq_change *out, uint32_t max, uint64_t *next);
int aq_changes(struct aq_client *c, const char *dir, uint64_t cursor, struct aq_change *out, uint32_t max,
	       uint64_t *next);

/* Asynchronous metadata calls: start many, then wait for each (in any order). Each start
 * returns 0 and sets *out, or a negative error; aq_wait returns the call's result, fills
 * attr when the call yields attributes (may be NULL) and frees the handle. Many calls in
 * flight per thread is how a loader or a benchmark keeps a server busy. A started call
 * may be held back briefly so that a burst leaves as one BATCH frame: it is sent at the
 * latest when it (or one started after it) is waited on, or when 128 are held. */
/* What other clients changed, pushed by the servers: what a client that caches (the FUSE
 * mount lets the kernel cache entries and attributes) must drop.
 *   ino set:    that inode's attributes or data changed;
 *   parent set: the name (parent, name) now means something else (created, removed,
 *               renamed);
 *   neither:    a connection to a server broke and was made again: changes made while it
 *               was down were not heard.
 * Changes made through this client itself are not echoed. The callback runs on a receiver
 * thread: it must return quickly and must not call libaq. */
struct aq_inval {
	uint64_t ino, parent;
	const char *name;
	size_t name_len;
};
typedef void (*aq_inval_fn)(void *arg, const struct aq_inval *iv);
int aq_watch(struct aq_client *c, aq_inval_fn fn, void *arg);
/* Returns once every change the servers pushed to this client before the call has been
 * handed to the callback: what another client was told "done" for before this call began
 * has been heard. -EINVAL if the client does not watch. */
int aq_watch_sync(struct aq_client *c);
/* Counts the invalidation frames received. A reply to a call that started before the
 * count moved may describe the state from before a change. */
uint64_t aq_inval_seq(struct aq_client *c);

/* Calls in flight without waiting: start many, then aq_wait each. A lookup or getattr
 * whose connection breaks is asked again by aq_wait, which then waits for a restarting
 * server as the calls above do. Unlike those, a change whose connection breaks is not
 * sent again: aq_wait says -ENOTCONN, and whether it was made is for the caller to look
 * up. */
struct aq_pending;
int aq_lookup_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		    struct aq_pending **out);
int aq_getattr_start(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, struct aq_pending **out);
int aq_mknod_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, uint32_t mode,
		   uint32_t rdev, uint32_t flags, struct aq_pending **out);
int aq_unlink_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		    struct aq_pending **out);
int aq_rename_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		    uint64_t newparent, const char *newname, uint32_t flags, struct aq_pending **out);
int aq_wait(struct aq_pending *p, struct aq_attr *attr);

/* Batched asynchronous reads: the data loader's path (in the spirit of io_uring and 3FS's
 * USRBIO). Submit many reads, reap completions in any order; each read becomes one
 * request per chunk it touches, all in flight at once over the client's connections, and
 * the data lands in the caller's buffer without a copy. A whole small file is one round
 * trip once its inode and size are known (from aq_lookup, readdirplus or aq_file_ino):
 * reads by inode number skip open, so a ring is for trusted loaders (anyone with the
 * cluster file may read any inode, as with the server's own key). A ring belongs to one
 * thread at a time. */
struct aq_io {
	uint64_t ino;
	uint64_t off;
	uint64_t len;          /* bytes wanted */
	uint64_t file_size;    /* reads are clipped to it (what lookup/stat said) */
	void *buf;             /* at least len bytes */
	void *user;            /* the caller's, untouched */
	int64_t result;        /* at completion: bytes read (short at end of file) or -errno */
	/* private to the ring */
	uint32_t pending_;
	int err_;
};
struct aq_ioring;
/* depth: reads in flight at most. */
int aq_ioring_create(struct aq_client *c, uint32_t depth, struct aq_ioring **out);
void aq_ioring_destroy(struct aq_ioring *r);
/* Starts up to n reads; returns how many were taken (fewer when the ring is full) or -errno. */
int aq_ioring_submit(struct aq_ioring *r, struct aq_io *const *ios, uint32_t n);
/* Waits until at least min reads finished (min <= in flight), returns up to max of them.
 * On aqd's machine the ring asks aqd only where each piece lies, and the thread that
 * reaps reads the bytes from aqd's files itself, checked ($AQ_LOCAL_READS=0: no). */
int aq_ioring_reap(struct aq_ioring *r, struct aq_io **done, uint32_t max, uint32_t min);
/* Reads in flight. */
uint32_t aq_ioring_inflight(const struct aq_ioring *r);

/* Object tier (S3). A file's chunks live on flash, in S3 pack objects, or both; a read
 * of a cold chunk recalls it, so these calls only move bytes ahead of time or report
 * where they are. On failure, aq_tier_last_error() says why in the servers' words (S3's
 * own message when S3 refused or could not be reached). */
struct aq_tier_config {
	char endpoint[256];          /* http://host:port or https://host */
	char bucket[64];
	char region[32];             /* "": us-east-1 */
	int virtual_host;            /* bucket.host/key instead of host/bucket/key */
	char credentials_file[1024]; /* read by each aqd (mode 0600); "": aqd's environment */
	double high, low;            /* capacity watermarks, shares of a target (0: 0.85, 0.70) */
};
/* Root only. Each server checks the bucket with its own keys before keeping the
 * configuration; the first refusal is returned (-EACCES: credentials refused,
 * -EHOSTUNREACH: S3 unreachable...). */
int aq_tier_set(struct aq_client *c, const struct aq_tier_config *cfg);
/* Moves the chunks of the n files in inos to S3 (any n: sent in requests of at most 4096
 * inodes, to every server); *bytes gets what was freed from flash, *skipped (may be NULL)
 * how many the caller may not read or that are gone. Flash is freed only after S3
 * confirmed the upload. */
int aq_tier_demote(struct aq_client *c, const uint64_t *inos, uint32_t n, uint64_t *bytes, uint64_t *skipped);
/* Brings every cold chunk of ino back to flash (keeping the S3 copy); *bytes: recalled. */
int aq_tier_hydrate(struct aq_client *c, uint64_t ino, uint64_t *bytes);
struct aq_tier_usage {
	uint64_t hot_bytes;          /* only on flash */
	uint64_t cold_bytes;         /* only in S3 */
	uint64_t both_bytes;         /* in both */
};
int aq_tier_usage(struct aq_client *c, uint64_t ino, struct aq_tier_usage *out);
/* A directory's rule, inherited by everything below it unless a directory there has its
 * own: files not read nor modified for cold_after_s seconds are demoted; pinned files are
 * never demoted by rules or watermarks. */
#define AQ_TIER_RULE_NONE 0u
#define AQ_TIER_RULE_COLD_AFTER 1u
#define AQ_TIER_RULE_PIN 2u
struct aq_tier_rule {
	uint32_t kind;
	uint64_t cold_after_s;
};
/* set NULL only asks; set->kind AQ_TIER_RULE_NONE clears (root or the directory's owner).
 * own and effective (either may be NULL) get the directory's own rule and the one that
 * applies to it; *from (may be NULL) the directory the effective rule is set on. */
int aq_tier_policy(struct aq_client *c, uint64_t dir, const struct aq_tier_rule *set, struct aq_tier_rule *own,
		   struct aq_tier_rule *effective, uint64_t *from);
struct aq_tier_status {
	int configured, attached;    /* attached: a client to the bucket is open (not: reachable) */
	char endpoint[256], bucket[64], region[32];
	int virtual_host;
	char credentials[1100];      /* "environment" or "file PATH": never a key */
	double high, low;
	uint32_t interval_s;
	char check[256];             /* the servers' last check of the bucket */
	char last_error[512];        /* why the last scanner pass stopped ("" if it did not) */
	uint64_t passes, rule_demoted_files, watermark_demoted_files, demoted_bytes, reclaimed_bytes;
	uint64_t objects, object_bytes, live_bytes; /* pack objects, summed over servers */
};
int aq_tier_status(struct aq_client *c, struct aq_tier_status *out);
/* The calling thread's text for its last failed aq_tier_* call ("" if none). */
const char *aq_tier_last_error(void);

/* Path-based conveniences (paths inside Aquifer, '/' is its root). */
int aq_resolve(struct aq_client *c, const char *path, struct aq_attr *out);
int aq_stat(struct aq_client *c, const char *path, struct aq_attr *out);
int aq_mkdir(struct aq_client *c, const char *path, uint32_t mode);
int aq_unlink(struct aq_client *c, const char *path);
int aq_rmdir(struct aq_client *c, const char *path);
int aq_rename(struct aq_client *c, const char *from, const char *to);
int aq_open(struct aq_client *c, const char *path, int flags, uint32_t mode, struct aq_file **out);

#ifdef __cplusplus
}
#endif
#endif

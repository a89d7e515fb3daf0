/*
 * meta.h - the metadata store: B hashed buckets in one RocksDB instance.
 *
 * A directory entry (parent, name) lives in bucket hash(parent, name) mod B; a new inode is
 * made in the bucket of its first entry (ino = bucket << 48 | seq); a directory's entry count
 * and mtime are kept as one partial row per bucket, written in the same batch as the entry,
 * and merged on getattr. Operations that touch several buckets (rename, link, unlink of a
 * moved inode, rmdir) take the bucket locks they need in ascending order and commit one
 * RocksDB write batch, so they are atomic. rmdir takes every bucket lock (the single-node
 * form of the fence protocol): a create racing it either lands first (and rmdir says
 * ENOTEMPTY) or sees the directory gone (ENOENT).
 *
 * All functions are thread-safe and return 0 or -errno.
 */
#ifndef AQ_META_H
#define AQ_META_H
#include "common/common.h"
#include "aq.h"

struct meta_store;

/* Called (outside bucket locks) when a file's size shrinks, so the data layer can drop
 * bytes past new_size. Returns 0 or -errno. */
typedef int (*meta_truncate_fn)(void *arg, uint64_t ino, uint64_t new_size, uint32_t chunk_size);

/* The bytes a regular file's data takes on the storage targets (each chunk's bytes
 * rounded up to 4 KiB), for st_blocks: 0 and *bytes, or -errno when it cannot say (some
 * targets are on other servers), and the size then stands for it. Called with the inode's
 * bucket locked, when a size is committed or set. */
typedef int (*meta_alloc_fn)(void *arg, uint64_t ino, uint64_t size, uint32_t chunk_size, uint64_t *bytes);

struct meta_options {
	uint32_t nbuckets;         /* used when creating; an existing store keeps its own */
	uint32_t chunk_size;       /* default chunk size for new files */
	bool sync;                 /* sync the RocksDB WAL on every commit (group commit) */
	meta_truncate_fn truncate_fn;
	meta_alloc_fn alloc_fn;    /* may be NULL */
	void *truncate_arg;        /* both functions' */
};

int meta_open(const char *path, bool create, const struct meta_options *opt, struct meta_store **out);
void meta_close(struct meta_store *m);
uint32_t meta_nbuckets(const struct meta_store *m);

int meta_lookup(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
		struct aq_attr *out);
int meta_getattr(struct meta_store *m, uint64_t ino, struct aq_attr *out);
int meta_setattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, uint32_t mask, const struct aq_attr *in,
		 struct aq_attr *out);
/* Regular files, fifos, sockets, devices (mode carries the type; 0 type means regular). */
int meta_mknod(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
	       uint32_t mode, uint32_t rdev, uint32_t flags, struct aq_attr *out);
/* An unnamed regular file in parent (O_TMPFILE): an inode without links, an orphan from
 * the start, that the collector frees once no client holds it open. Without
 * AQ_CREATE_EXCL in flags meta_link may name it once (AQ_ATTR_LINKABLE). Needs write
 * and search permission on parent; the parent's default ACL and the umask apply as
 * for a create. */
int meta_tmpfile(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, uint32_t mode, uint32_t flags,
		 struct aq_attr *out);
/* Creates n (1..1024) entries of one mode in one directory with one RocksDB write batch
 * (one WAL write; one sync when sync is on). Each entry behaves as meta_mknod would, in
 * array order: results[i] gets 0 or -errno (EEXIST, ENAMETOOLONG, EINVAL, EACCES, ENOSPC),
 * and outs[i] (outs may be NULL) the attributes of entry i when results[i] is 0. A name
 * given twice sees its first occurrence (EEXIST, or that file without AQ_CREATE_EXCL).
 * Returns 0, or -errno when the batch as a whole failed (n out of range, mode, a missing
 * or unsearchable parent, an I/O error): then no entry was created and every results[i]
 * not already an error of the entry's own holds that code. */
int meta_mknod_many(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, uint32_t n,
		    const char *const *names, const size_t *name_lens, uint32_t mode, uint32_t rdev, uint32_t flags,
		    struct aq_attr *outs, int *results);
/* Exactly-once changes (txn.c). A client numbers each create, mkdir, symlink, link,
 * unlink, rmdir, rename, setxattr and removexattr it sends: (client id, seq), client 0
 * meaning none. Between meta_txn_begin and meta_txn_end on one thread, the call that
 * commits records its request in the same batch (meta_mknod_many: tx[i] for names[i];
 * other calls: tx[0]); a call that fails records nothing. meta_txn_find says whether tx committed (1, with
 * the inode it made or linked in *ino, else 0 there), 0 if not, or -errno. tx must live
 * until meta_txn_end. */
struct meta_txn {
	uint64_t client, seq;
};
#define META_TXN_KEEP_NS (600ll * 1000000000ll) /* how long a record is kept at least */
void meta_txn_begin(const struct meta_txn *tx, uint32_t n);
void meta_txn_end(void);
int meta_txn_find(struct meta_store *m, const struct meta_txn *tx, uint64_t *ino);
#define META_TXN_SWEEP_MAX 4096
/* Deletes up to META_TXN_SWEEP_MAX records written before before_ns; returns how many,
 * or -errno. */
int meta_txn_sweep(struct meta_store *m, int64_t before_ns);

/* The server's fcntl and flock locks (src/server/locks.c), one row per inode that has
 * some, so that a restarted server knows them: meta_locks_put writes ino's row (len 0:
 * removes it), meta_locks_scan calls fn with each row (stopping at fn's error). */
int meta_locks_put(struct meta_store *m, uint64_t ino, const void *row, size_t len);
int meta_locks_scan(struct meta_store *m, int (*fn)(void *arg, uint64_t ino, const uint8_t *row, size_t len),
		    void *arg);
int meta_mkdir(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
	       uint32_t mode, struct aq_attr *out);
int meta_symlink(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
		 const char *target, size_t target_len, struct aq_attr *out);
/* Copies the target (not NUL-terminated) into buf; returns its length or -errno. */
int meta_readlink(struct meta_store *m, uint64_t ino, char *buf, size_t size);
int meta_unlink(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len);
int meta_rmdir(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len);
int meta_rename(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
		uint64_t newparent, const char *newname, size_t newname_len, uint32_t flags);
int meta_link(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, uint64_t newparent, const char *newname,
	      size_t newname_len, struct aq_attr *out);
/* mask: R_OK|W_OK|X_OK (F_OK: existence). */
int meta_access(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, uint32_t mask);
/* Permission check for open(2) flags; on success fills out. */
int meta_open_file(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, int flags, struct aq_attr *out);
/* After data was written: size = max(size, new_size) (or exactly new_size when exact),
 * mtime/ctime = mtime_ns. Fills out. */
int meta_commit_size(struct meta_store *m, uint64_t ino, uint64_t new_size, int64_t mtime_ns, struct aq_attr *out);

/* readdir: calls fn for entries in order from cookie (0: start). Each entry's cookie is
 * where the listing resumes after it; entries whose in-bucket hashes collide share a
 * cookie and are always delivered together (the store may exceed max to finish a group).
 * fn returns 0 to go on, 1 to stop before this entry (it is not consumed). Returns the
 * number of entries delivered, or -errno. with_attr asks for each entry's attributes. */
typedef int (*meta_dirent_fn)(void *arg, const char *name, size_t name_len, uint64_t ino, uint32_t dtype,
			      uint64_t cookie, const struct aq_attr *attr);
int meta_readdir(struct meta_store *m, const struct aq_cred *cr, uint64_t dir, uint64_t cookie, uint32_t max,
		 bool with_attr, meta_dirent_fn fn, void *arg);
/* As meta_readdir, stopping before bucket end_bucket: a listing split into bucket ranges
 * can be read by several streams at once. *at_end (when not NULL) says whether the range
 * was listed to its end; fewer than max entries does not say so. */
int meta_readdir_range(struct meta_store *m, const struct aq_cred *cr, uint64_t dir, uint64_t cookie,
		       uint32_t end_bucket, uint32_t max, bool with_attr, meta_dirent_fn fn, void *arg,
		       bool *at_end);

/* What's new: entries created in dir (or renamed into it) after cursor, oldest first, up to
 * max; *next gets the cursor to pass next time (never smaller than cursor). */
typedef int (*meta_change_fn)(void *arg, const char *name, size_t name_len, uint64_t ino, uint64_t ts);
int meta_changes(struct meta_store *m, const struct aq_cred *cr, uint64_t dir, uint64_t cursor, uint32_t max,
		 meta_change_fn fn, void *arg, uint64_t *next);

int meta_setxattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, const char *name, const void *value,
		  size_t size, uint32_t flags);
/* Copies the value into buf if size > 0; returns its length (ERANGE if buf too small). */
int meta_getxattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, const char *name, void *buf,
		  size_t size);
/* NUL-separated names; returns total length (ERANGE if buf too small, size 0 measures). */
int meta_listxattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, char *buf, size_t size);
int meta_removexattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, const char *name);

/* Number of inodes in use (statfs). */
int meta_count_files(struct meta_store *m, uint64_t *files);

/* Orphans: inodes whose last link went away. The server's collector asks for up to max of
 * them (skipping inodes it reports as open through is_open), frees their data, then calls
 * meta_orphan_done, which deletes the inode row. */
struct meta_orphan { uint64_t ino; uint64_t size; uint32_t chunk_size; };
int meta_orphans(struct meta_store *m, struct meta_orphan *out, uint32_t max, uint64_t after_ino);
int meta_orphan_done(struct meta_store *m, uint64_t ino);
/* The collector's claim on an orphan it listed and found held open by no one, before it
 * frees the data: 0 when ino is an orphan still, and from now on no link may name it (an
 * unnamed file loses AQ_ATTR_LINKABLE); -ENOENT when a link named it since it was listed
 * (a listing can be stale by the time an orphan's turn comes). */
int meta_orphan_claim(struct meta_store *m, uint64_t ino);
/* Make every committed change durable (fsync of a file or directory, shutdown). */
int meta_sync(struct meta_store *m);
/* Call once on each thread that uses the store (cheap to call again): turns off RocksDB's
 * per-thread perf counting. */
void meta_thread_init(void);

#endif

/*
 * meta_internal.h - private to src/meta: the store's in-memory state, the RocksDB key
 * layout and the row codecs. See src/meta/README.md for the layout and its invariants.
 *
 * Lock order (every operation): rename_lock (directory renames only), then bucket locks
 * in ascending bucket order. No RocksDB call is ever made while waiting for a lock.
 */
#ifndef AQ_META_INTERNAL_H
#define AQ_META_INTERNAL_H
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <rocksdb/c.h>

#include "common/common.h"
#include "common/hash.h"
#include "meta/meta.h"

/* Key type bytes: the first byte of every key. */
#define MK_INODE 'I'
#define MK_DENTRY 'D'
#define MK_PARTIAL 'P'
#define MK_XATTR 'X'
#define MK_ORPHAN 'O'
#define MK_SEQ 'S'
#define MK_LOG 'L'
#define MK_COUNT 'C'
#define MK_CLOCK 'T' /* "T": changelog clock reservation; no bucket, like "M" */
#define MK_SUPER 'M' /* "M": format version and bucket count; the only key without a bucket */
#define MK_TXN 'R'   /* "R": a client's committed change, for its retry (txn.c); no bucket */
#define MK_LOCKS 'K' /* "K": an inode's fcntl and flock locks (lockrows.c); no bucket */

/* 2: inodes' xattr summary rows (xattr.c), which an aqd of version 1 would take for the
 * end of an inode's names. 3: inode rows of version 3 (keys.c, varints), which an aqd of
 * version 2 cannot read. An older store is upgraded when it is opened; its rows are read
 * as they are and written anew in the new form when they change. */
#define META_FORMAT_VERSION 3
#define META_INODE_VERSION 3
#define META_SEQ_BLOCK 65536ull    /* inode numbers reserved per 'S' row write */
#define META_BLOCK_CACHE_BYTES (512ull << 20) /* RocksDB block cache (uncompressed blocks) */
#define META_POS_BITS 48
#define META_POS_MASK ((1ull << META_POS_BITS) - 1)
#define META_POS_SEED 0x6a09e667f3bcc909ull /* makes pos48 independent of the bucket hash */
#define META_DIR_SIZE 4096          /* what a small directory shows, as ext4 */
#define META_NLINK_MAX 65000u
#define META_BATCH_MAX 1024         /* entries in one meta_mknod_many */
#define META_CLOCK_BLOCK (1ull << 30) /* changelog ts reserved per 'T' row write */
#define META_COUNT_MARK_EVERY 1024  /* inode rows a crash-recovery scan reads per bucket, at most */
#define META_PCACHE_WAYS 8          /* cached partial rows per bucket */
#define META_NFILTER_WAYS 2         /* name filters per bucket (namefilter.c) */
#define META_NFILTER_MIN 1024       /* names a (bucket, directory) holds before it gets one */
#define META_NFILTER_BYTES (128ull << 20) /* all name filters of a store together */

/* Key lengths. */
#define META_INODE_KEY_LEN 11        /* 'I' bucket16 ino64 */
#define META_DENTRY_PREFIX_LEN 11    /* 'D' bucket16 parent64 */
#define META_DENTRY_KEY_MAX (META_DENTRY_PREFIX_LEN + 6 + AQ_NAME_MAX)
#define META_PARTIAL_KEY_LEN 11
#define META_XATTR_KEY_MAX (11 + AQ_XATTR_NAME_MAX)
#define META_ORPHAN_KEY_LEN 11
#define META_SEQ_KEY_LEN 3
#define META_LOG_KEY_LEN 19          /* 'L' bucket16 dir64 ts64 */
#define META_COUNT_KEY_LEN 3
#define META_TXN_KEY_LEN 11          /* 'R' client64 slot16 */

/* Row value lengths. */
#define META_INODE_FIXED_LEN_V2 85   /* version 2 rows: fixed fields */
#define META_INODE_FIXED_LEN_V1 81   /* version 1 rows: no flags */
#define META_INODE_FIXED_MAX 102     /* version 3 rows: the most the fields before a symlink's target take */
#define META_DENTRY_VAL_LEN 17       /* ino64 dtype8 created_ts64 */
#define META_PARTIAL_VAL_LEN 32      /* nentries nsubdirs mtime ctime */
#define META_ORPHAN_VAL_LEN 12       /* size64 chunk_size32 */
#define META_COUNT_VAL_LEN 16        /* live_below64 mark64 */
#define META_TXN_VAL_LEN 24          /* seq64 ino64 wall_ns64 */
#define META_TXN_SLOTS 256           /* 'R' rows per client: changes it may have in flight */

struct meta_partial {
	int64_t nentries, nsubdirs;
	int64_t mtime_ns, ctime_ns;
};

#define META_DIRSUM_SLOTS 4096
#define META_DIRSUM_BITS_MAX 1024 /* buckets up to which each slot keeps a bitmap of them */
#define META_DIRSUM_STRIPES 64
#define META_DIRCACHE_SLOTS 1024
struct meta_dirsum {
	uint64_t dir;
	bool valid;
	struct meta_partial sum;
};
/* The 'R' row of change i of the request this thread runs (meta_txn_begin; nothing when
 * none is set or it has no client id) into wb: ino is what it made or linked, else 0. */
void meta_txn_put(rocksdb_writebatch_t *wb, uint32_t i, uint64_t ino);
/* Commits the batch of a change that answers one request: its 'R' row goes with it. */
int meta_commit_op(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino);
/* A new write batch for this thread's next commit (forgets partial-row changes that an
 * abandoned batch recorded for the directory-sum cache). */
rocksdb_writebatch_t *meta_batch_new(void);

/* A bucket's inode count. The 'C' row holds (live_below, mark): the bucket has live_below
 * inode rows whose seq is below mark, and every row at or above mark is found by a short
 * scan at open. Creates move mark up every META_COUNT_MARK_EVERY inodes; deleting an inode
 * below mark rewrites the row. nlive (memory only) is the committed row count. */
struct meta_count {
	uint64_t nlive;
	uint64_t live_below, mark;
};

/* One cached partial row of (bucket, dir); valid while epoch == the store's pcache_epoch,
 * which every failed commit bumps (a failed batch may have updated the cache). */
struct meta_pslot {
	uint64_t dir; /* 0: empty */
	uint64_t epoch;
	struct meta_partial p;
};

/* A (bucket, directory)'s names in a blocked bloom filter (namefilter.c). */
struct meta_nfilter {
	uint64_t dir;
	uint64_t names; /* added: the build's scan, then every dentry row put */
	uint64_t cap;   /* names it is sized for; past them the next create rebuilds it */
	uint64_t mask;  /* blocks - 1 (a power of two blocks of 512 bits) */
	uint64_t *bits; /* NULL: the slot is empty */
};

struct meta_store {
	char *path;             /* the RocksDB directory */
	_Atomic uint64_t synced_seq; /* the latest sequence number a meta_sync covered */
	/* meta_space_check: when free space was last looked at, and whether it was low */
	_Atomic uint64_t space_checked_ns;
	atomic_bool space_low;
	rocksdb_t *db;
	rocksdb_column_family_handle_t *cf; /* the only column family: "default" */
	rocksdb_options_t *dbopts;
	rocksdb_block_based_table_options_t *topts;
	rocksdb_cache_t *block_cache;
	rocksdb_writeoptions_t *wopts;
	rocksdb_readoptions_t *ropts;
	uint32_t nbuckets;
	uint32_t chunk_size;
	meta_truncate_fn truncate_fn;
	meta_alloc_fn alloc_fn;
	void *truncate_arg;
	/* One mutex per bucket; seq_next/seq_reserved[b] are protected by locks[b]. */
	pthread_mutex_t *locks;
	uint64_t *seq_next;     /* next sequence number to hand out in bucket b */
	uint64_t *seq_reserved; /* sequences below this are covered by a committed 'S' row */
	struct meta_count *counts;   /* counts[b] is protected by locks[b] */
	/* Partial rows of recently written directories, META_PCACHE_WAYS per bucket; slots of
	 * bucket b are protected by locks[b]. A miss reads the row. */
	struct meta_pslot *pcache;
	_Atomic uint64_t pcache_epoch;
	/* Name filters of big directories, META_NFILTER_WAYS per bucket; slots of bucket b
	 * are protected by locks[b]. nfilter_bytes: their memory, within nfilter_budget. */
	struct meta_nfilter *nfilters;
	_Atomic uint64_t nfilter_bytes;
	uint64_t nfilter_budget; /* META_NFILTER_BYTES (tests lower it) */
	_Atomic uint64_t nfilter_scans; /* builds that scanned a pair's rows */
	/* Merged partial rows of recently read directories (getattr of a directory would
	 * otherwise read one row per bucket). Slot i is guarded by dirsum_mu[i % stripes];
	 * dirsum_gen[stripe] moves whenever a committed change could not be folded into a
	 * slot, so a reader that filled a slot from the store meanwhile does not keep it. */
	struct meta_dirsum *dirsum;
	/* Per slot, the buckets that hold entries of its directory (valid with the slot): a
	 * listing of a small directory scans those without reading every partial row. */
	uint64_t *dirsum_bits;
	pthread_mutex_t dirsum_mu[META_DIRSUM_STRIPES];
	uint64_t dirsum_gen[META_DIRSUM_STRIPES];
	/* The rows of recently looked-in directories (a lookup checks its parent's mode):
	 * slot i is guarded by dirsum_mu[i % stripes]. Every commit moves dircache_gen, and a
	 * slot holds only for the generation it was read at, so no write can be missed; the
	 * cache serves runs of lookups and stats, not creates. */
	struct meta_dirslot {
		uint64_t ino, gen;
		struct aq_attr a;
		uint64_t parent;
	} *dircache;
	_Atomic uint64_t dircache_gen;
	pthread_mutex_t rename_lock; /* serializes directory renames (subtree check) */
	_Atomic uint64_t log_clock;  /* next changelog ts; taken under a bucket lock */
	/* Every ts handed out is below the committed 'T' row; clock_reserved is that value.
	 * clock_lock serializes rewrites (taken with bucket locks held; nothing is locked
	 * after it). */
	_Atomic uint64_t clock_reserved;
	pthread_mutex_t clock_lock;
	_Atomic uint64_t nfiles;     /* inode rows in the store: the sum of counts[].nlive */
	atomic_bool write_failed;    /* a commit failed: counts are not written back at close */
	_Atomic uint64_t gen_next;   /* generation numbers for new inodes */
};

/* A decoded inode row. target holds a symlink's target (not NUL-terminated). */
struct meta_inode {
	struct aq_attr a;
	uint64_t parent; /* directories: the parent directory (root: itself) */
	uint32_t target_len;
	char target[AQ_PATH_MAX];
};

struct meta_dentry {
	uint64_t ino;
	uint8_t dtype;
	uint64_t created_ts; /* the ts of this entry's 'L' row */
};

/* keys.c: placement. */
uint32_t meta_dentry_bucket(const struct meta_store *m, uint64_t parent, const char *name, size_t len);
uint64_t meta_dentry_pos(uint64_t parent, const char *name, size_t len);

/* keys.c: key builders; each returns the key length. buf must be big enough (see *_LEN). */
size_t meta_key_inode(uint8_t *buf, uint64_t ino);
size_t meta_key_dentry_prefix(uint8_t *buf, uint32_t bucket, uint64_t parent);
size_t meta_key_dentry(uint8_t *buf, uint32_t bucket, uint64_t parent, uint64_t pos, const char *name, size_t len);
uint64_t meta_key_dentry_pos(const uint8_t *key); /* pos48 of a dentry key */
size_t meta_key_partial(uint8_t *buf, uint32_t bucket, uint64_t dir);
size_t meta_key_xattr(uint8_t *buf, uint64_t ino, const char *name, size_t len);
size_t meta_key_orphan(uint8_t *buf, uint64_t ino);
size_t meta_key_seq(uint8_t *buf, uint32_t bucket);
size_t meta_key_log(uint8_t *buf, uint32_t bucket, uint64_t dir, uint64_t ts);
size_t meta_key_count(uint8_t *buf, uint32_t bucket);

/* keys.c: row codecs. Encoders return the encoded length; decoders return 0 or -EIO. */
size_t meta_inode_encode(const struct meta_inode *ino, uint8_t *buf, size_t size);
int meta_inode_decode(const uint8_t *buf, size_t len, uint64_t ino_nr, struct meta_inode *out);
void meta_dentry_encode(const struct meta_dentry *d, uint8_t buf[META_DENTRY_VAL_LEN]);
int meta_dentry_decode(const uint8_t *buf, size_t len, struct meta_dentry *out);
void meta_partial_encode(const struct meta_partial *p, uint8_t buf[META_PARTIAL_VAL_LEN]);
int meta_partial_decode(const uint8_t *buf, size_t len, struct meta_partial *out);

/* meta.c: dentry rows. get returns 1 and fills d when present, 0 when absent, or -EIO. */
int meta_get_dentry(struct meta_store *m, const uint8_t *key, size_t klen, struct meta_dentry *d);
void meta_put_dentry(struct meta_store *m, rocksdb_writebatch_t *wb, const uint8_t *key, size_t klen,
		     const struct meta_dentry *d);
/* Builds the key of (parent, name): returns its length and sets *bucket. */
size_t meta_dentry_key(const struct meta_store *m, uint8_t *key, uint64_t parent, const char *name, size_t len,
		       uint32_t *bucket);

/* meta.c: helpers shared by the other files. */
int meta_check_name(const char *name, size_t len);
/* A set of bucket locks, taken in ascending order (or all of them). */
struct meta_lockset {
	bool all;
	size_t n;
	uint32_t b[8];
};
void meta_lockset_add(struct meta_lockset *ls, uint32_t bucket);
void meta_lockset_lock(struct meta_store *m, struct meta_lockset *ls);
void meta_lockset_unlock(struct meta_store *m, const struct meta_lockset *ls);
/* A change to one directory's partial row in one bucket; meta_apply_partials merges
 * deltas for the same row and writes each row once into the batch. */
struct meta_pdelta {
	uint32_t bucket;
	uint64_t dir;
	int64_t dentries, dsubdirs;
};
int meta_apply_partials(struct meta_store *m, rocksdb_writebatch_t *wb, const struct meta_pdelta *d, size_t n,
			int64_t now_ns);
int meta_is_dot(const char *name, size_t len); /* 1 for ".", 2 for "..", else 0 */
/* Allocates an inode number in bucket (whose lock the caller holds), adding an 'S' row to wb
 * when a new block must be reserved. */
int meta_alloc_ino(struct meta_store *m, uint32_t bucket, rocksdb_writebatch_t *wb, uint64_t *ino);
/* -ENOSPC while the store's file system is too full for new entries (meta.c), else 0. */
int meta_space_check(struct meta_store *m);
/* After a failed commit of a batch that allocated in bucket: force the next allocation
 * to write a fresh 'S' row, since the reservation in the failed batch never landed. */
static inline void meta_alloc_failed(struct meta_store *m, uint32_t bucket) { m->seq_reserved[bucket] = 0; }
void meta_put_inode(rocksdb_writebatch_t *wb, const struct meta_inode *ino);
/* The orphan row of an inode without links: the collector frees its data (size bytes in
 * chunks of chunk_size) and its inode row once no client holds it open. */
void meta_put_orphan(rocksdb_writebatch_t *wb, uint64_t ino, uint64_t size, uint32_t chunk_size);
/* 0, or -EIO (logged with what) when the iterator hit an error. */
int meta_iter_error(rocksdb_iterator_t *it, const char *what);

/* Name filters (namefilter.c); every call with the bucket's lock held. prepare: before
 * a create of `incoming` names into (bucket, dir), which holds `names` (its partial row),
 * builds or grows the pair's filter when it is worth one. free: true only if the dentry
 * key's name is certainly not in the store. add: a dentry row is being put (meta_put_dentry).
 * forget: the directory goes.
 * names: the count the pair's filter has taken in, or -1 without one (tests). */
void meta_nfilter_prepare(struct meta_store *m, uint32_t bucket, uint64_t dir, uint64_t names, uint32_t incoming);
bool meta_nfilter_free(struct meta_store *m, uint32_t bucket, uint64_t dir, const uint8_t *key, size_t klen);
void meta_nfilter_add(struct meta_store *m, const uint8_t *key, size_t klen);
void meta_nfilter_forget(struct meta_store *m, uint32_t bucket, uint64_t dir); /* rmdir */
int64_t meta_nfilter_names(struct meta_store *m, uint32_t bucket, uint64_t dir);
void meta_nfilter_free_all(struct meta_store *m);
/* Calls fn for each xattr row of ino (its whole key, and the name in it) until fn returns
 * nonzero; returns that value, 0, or -EIO when the scan failed. */
int meta_xattr_each(struct meta_store *m, uint64_t ino,
		    int (*fn)(void *arg, const char *key, size_t klen, const char *name, size_t nlen), void *arg);
/* Fills out from the inode row, merged with the partial rows for a directory. */
int meta_attr_of(struct meta_store *m, uint64_t ino, struct aq_attr *out);
/* A directory's merged partial rows, from a cache kept current by every commit. */
int meta_dirsum_get(struct meta_store *m, uint64_t dir, struct meta_partial *sum);
/* meta_dirsum_get, and into bits ((nbuckets + 63) / 64 words) the buckets that hold its
 * entries, when the cache keeps them (*have_bits). */
int meta_dirsum_buckets(struct meta_store *m, uint64_t dir, struct meta_partial *sum, uint64_t *bits, bool *have_bits);
/* The partial rows of dir in buckets [b0, b1), as stored (zeros where none): out[b - b0];
 * present[b - b0] (when present is not NULL) says whether the row exists. */
int meta_read_partials(struct meta_store *m, uint64_t dir, uint32_t b0, uint32_t b1, struct meta_partial *out,
		       bool *present);
/* The attributes of n inodes at once (a readdirplus page): rcs[i] gets 0, -ENOENT or
 * -EIO for inos[i], out[i] its attributes. Point reads in key order (an iterator's steps
 * would walk over every deleted row in between). Returns 0, or -EIO when a read failed. */
int meta_attrs_of(struct meta_store *m, const uint64_t *inos, uint32_t n, struct aq_attr *out, int *rcs);
void meta_merge_dir(struct aq_attr *a, const struct meta_partial *sum);
/* Takes k consecutive changelog ts (the first in *ts), with the bucket locks of the rows
 * they go into held; writes a new 'T' reservation first when the clock passes it.
 * Returns 0 or -EIO. */
int meta_take_ts(struct meta_store *m, uint32_t k, uint64_t *ts);
/* Inode counts. Before committing a batch that deletes inode ino (its bucket locked), add
 * the count row change with meta_count_drop; after the commit succeeded, call
 * meta_count_dropped (same locks still held). */
void meta_count_drop(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino);
void meta_count_dropped(struct meta_store *m, uint64_t ino);
void meta_put_log(rocksdb_writebatch_t *wb, uint32_t bucket, uint64_t dir, uint64_t ts, uint64_t ino,
		  const char *name, size_t len);
void meta_del_log(rocksdb_writebatch_t *wb, uint32_t bucket, uint64_t dir, uint64_t ts);
/* Adds the removal of an empty directory's inode, partial and xattr rows to wb, or
 * returns -ENOTEMPTY (caller holds every bucket lock: the fence). */
int meta_del_dir_rows(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino);
/* The xattr rows of a new inode, and their summary row, into wb. */
void meta_xattrs_put_new(rocksdb_writebatch_t *wb, uint64_t ino, const char *const *names, const void *const *values,
			 const size_t *lens, uint32_t n);
/* Adds deletes of every xattr row of ino to wb (caller holds ino's bucket lock). */
int meta_del_xattrs(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino);
/* Reads a row. Returns 1 and copies up to size bytes (*len = full length), 0 when absent,
 * or -EIO. */
int meta_get(struct meta_store *m, const uint8_t *key, size_t klen, void *buf, size_t size, size_t *len);
/* Looks n keys up in one call; fn(arg, i, value, len) for each key found, in key order of
 * the caller's array. A failed lookup is logged and makes the result -EIO; fn's non-zero
 * return makes it that value (the other keys are still passed). */
typedef int (*meta_found_fn)(void *arg, size_t i, const uint8_t *value, size_t len);
int meta_multi_get(struct meta_store *m, size_t n, const char *const *keys, const size_t *klens, meta_found_fn fn,
		   void *arg);
int meta_read_inode(struct meta_store *m, uint64_t ino, struct meta_inode *out);
int meta_commit(struct meta_store *m, rocksdb_writebatch_t *wb);
/* Sum of a directory's partial rows (one multi-get over all buckets). */
int meta_dir_totals(struct meta_store *m, uint64_t dir, struct meta_partial *sum);

/* perm.c */
bool meta_in_group(const struct aq_cred *cr, uint32_t gid);
int meta_perm(struct meta_store *m, const struct aq_cred *cr, const struct aq_attr *a, uint32_t mask);
int meta_mode_perm(const struct aq_cred *cr, const struct aq_attr *a, uint32_t mask);

/* acl.c: POSIX ACLs in the kernel's xattr format. At most as many entries as the kernel
 * can read back through FUSE (one page). */
#define META_ACL_ENTRIES_MAX 511
#define META_ACL_BYTES_MAX (4 + 8 * META_ACL_ENTRIES_MAX)
struct meta_acl_entry {
	uint16_t tag, perm;
	uint32_t id;
};
struct meta_acl {
	uint32_t n;
	struct meta_acl_entry e[META_ACL_ENTRIES_MAX];
};
extern const char meta_acl_access[], meta_acl_default[]; /* the two xattr names */
/* 0; 1 for an empty ACL (a header alone, which removes one); -EINVAL for bytes that are
 * not a valid ACL (Linux's posix_acl_valid), -EOPNOTSUPP for another format version. */
int meta_acl_decode(const void *buf, size_t len, struct meta_acl *acl);
/* Into buf (META_ACL_BYTES_MAX); returns the length. */
size_t meta_acl_encode(const struct meta_acl *acl, uint8_t *buf);
/* Sets mode's permission bits from an access ACL; true when the mode says all of it
 * (no named entries, no mask): such an ACL is not stored. */
bool meta_acl_mode(const struct meta_acl *acl, uint32_t *mode);
/* A chmod's bits into an access ACL: owner, mask (else group) and other. */
void meta_acl_chmod(struct meta_acl *acl, uint32_t mode);
/* A parent's default ACL made into a new inode's access ACL against its create mode,
 * which it narrows (Linux's posix_acl_create); true when the mode says all of it. */
bool meta_acl_inherit(struct meta_acl *acl, uint32_t *mode);
/* Reads ACL name of ino: 1 and *acl, 0 when it has none, or -EIO. */
int meta_acl_read(struct meta_store *m, uint64_t ino, const char *name, struct meta_acl *acl);
/* meta_perm for an inode with an access ACL; cr is not root. */
int meta_acl_perm(struct meta_store *m, const struct aq_cred *cr, const struct aq_attr *a, uint32_t mask);
int meta_sticky_ok(const struct aq_cred *cr, const struct aq_attr *dir, const struct aq_attr *victim);

static inline bool meta_is_root(const struct aq_cred *cr) { return cr == NULL || cr->uid == 0; }
static inline uint8_t meta_dtype(uint32_t mode) { return (uint8_t)((mode & S_IFMT) >> 12); }

/* st_blocks of regular file a (its size and chunk size set): what its chunks take on
 * the targets (meta_alloc_fn), in 512-byte units, or the size rounded up to 4 KiB when that
 * cannot be told; never more than the size so rounded. Bucket locked. */
#define META_BLOCK_SIZE 4096
uint64_t meta_file_blocks(struct meta_store *m, const struct aq_attr *a);

#endif

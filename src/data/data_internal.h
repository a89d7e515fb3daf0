/*
 * data_internal.h - what the files of src/data share: the on-disk record header, the
 * chunk index encoding, the in-memory target and segment tables, and the I/O helpers.
 *
 * Invariants (see README.md for the whole story):
 *  - The chunk index is the truth. A record in a segment that no index entry points to is
 *    dead space, never data.
 *  - Records start at multiples of DATA_REC_ALIGN and take round_up(64 + length, 4096)
 *    bytes, so sizes and offsets stay O_DIRECT-friendly.
 *  - Only the active segment (the highest numbered) is appended to; sealed segments are
 *    durable (fdatasync'ed when sealed) and only read, moved out of and unlinked.
 *  - seg.live is the sum of the sizes of the records index entries point to in the
 *    segment (each record of a map once); it is rebuilt at open and kept exact under the
 *    target lock.
 *
 * Lock order: compact_lock -> lock -> seg_lock. `lock` serialises every change of a
 * target (append position, index entries, accounting); `seg_lock` guards the segment
 * table and the fds against removal: readers hold it shared from the index lookup to the
 * end of their I/O; adding or removing a segment takes it exclusive (with `lock` held).
 */
#ifndef AQ_DATA_INTERNAL_H
#define AQ_DATA_INTERNAL_H
#include <pthread.h>
#include <rocksdb/c.h>
#include <limits.h>
#include <sys/uio.h>

#include "common/common.h"
#include "common/hash.h"
#include "data/data.h"

#define DATA_REC_MAGIC 0x51534741u /* "AGSQ" little-endian: Aquifer SeGment record */
#define DATA_REC_FORMAT 1u
#define DATA_CHUNK_MAX AQ_CHUNK_SIZE_MAX
#define DATA_BLOCKS_MAX (DATA_CHUNK_MAX / DATA_BLOCK_SIZE)
#define DATA_KEY_SIZE 13u /* 'C' | ino u64 BE | idx u32 BE */
#define DATA_VAL_FORMAT 1u
#define DATA_VAL_FORMAT_TIER 2u /* format 1 + object id u64, offset in the object u64 */
#define DATA_VAL_FORMAT_MAP 3u  /* a chunk whose blocks lie in several records (overlays) */
#define DATA_VAL_FIXED 25u /* format u8, segment u32, offset u64, length u32, version u64 */
#define DATA_VAL_FIXED_TIER (DATA_VAL_FIXED + 16u)
#define DATA_VAL_FIXED_MAP 14u  /* format u8, length u32, version u64, records u8 */
#define DATA_VAL_REC_REF 16u    /* segment u32, offset u64, length u32 */
/* A chunk's blocks lie in at most this many records: its last whole version and the
 * overlays written since, each holding only the blocks a write changed. */
#define DATA_RECS_MAX 32u
#define DATA_VAL_MAX (DATA_VAL_FIXED_MAP + DATA_VAL_REC_REF * DATA_RECS_MAX + 6u * DATA_BLOCKS_MAX)
#define DATA_REC_FLAG_OVERLAY 1u /* record header flag: some blocks of the chunk, which the index lists */
#define DATA_FOLD_QUEUE 1024u   /* maps waiting per target to be folded for local readers */
#define DATA_FOLD_AFTER_NS (2 * 1000000000ll) /* ... once unchanged this long */
#define DATA_OBJ_KEY_SIZE 9u /* 'O' | object id u64 BE -> object size u64 LE */
/* Data stops 1% short of a full file system, at most this much: enough for the metadata
 * store, usually on the same file system, to flush all four of its 64 MiB memtables (at
 * the half of their arena meta.c counts) past its own 16 MiB floor. */
#define DATA_RESERVE_MAX (256ull << 20)
#define DATA_BUF_MAPPED_MIN (64u << 10) /* I/O buffers this big or more are huge pages, pooled */
#define DATA_BUF_POOL_MAX (256ull << 20) /* bytes of freed buffers kept for reuse */

_Static_assert(DATA_CHUNK_MAX % DATA_BLOCK_SIZE == 0, "a chunk is whole blocks");
_Static_assert(DATA_BLOCK_SIZE % DATA_REC_ALIGN == 0, "blocks are O_DIRECT-sized");
_Static_assert(DATA_SEGMENT_SIZE % DATA_REC_ALIGN == 0, "segments hold whole records");
_Static_assert(DATA_SEGMENT_SIZE >= 2 * (DATA_CHUNK_MAX + DATA_REC_ALIGN), "a segment holds a chunk");

static inline uint64_t data_round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
/* Bytes one record of `length` bytes of chunk data takes in a segment. */
static inline uint64_t data_rec_size(uint32_t length)
{
	return data_round_up(DATA_REC_HDR_SIZE + (uint64_t)length, DATA_REC_ALIGN);
}
static inline uint32_t data_nblocks(uint32_t length) { return (length + DATA_BLOCK_SIZE - 1) / DATA_BLOCK_SIZE; }
/* Bytes of block b of a chunk of length bytes (the last block may be partial). */
static inline uint32_t data_block_len(uint32_t length, uint32_t b)
{
	return (uint32_t)(MIN((uint64_t)(b + 1) * DATA_BLOCK_SIZE, length) - (uint64_t)b * DATA_BLOCK_SIZE);
}

/* The 64-byte header in front of every record; lets fsck rebuild the index. */
struct data_rec_hdr {
	uint64_t ino;
	uint32_t idx;
	uint32_t length;  /* bytes of data in the record */
	uint64_t version;
	uint16_t flags;   /* DATA_REC_FLAG_OVERLAY: not the whole chunk, only some of its blocks */
};
void data_hdr_encode(uint8_t out[DATA_REC_HDR_SIZE], const struct data_rec_hdr *h);
/* 0, or -EIO when the magic, format or header crc is wrong. */
int data_hdr_decode(const uint8_t in[DATA_REC_HDR_SIZE], struct data_rec_hdr *h);

/* A record on flash: where it is and how many bytes of data it holds. */
struct data_rec_ref {
	uint64_t off;
	uint32_t seg;
	uint32_t length;
};

/* One chunk index entry (the value under data_key()). A chunk is on flash (seg != 0), in
 * an S3 pack object (obj != 0), or both; never neither.
 *
 * On flash its bytes are one record (nrec 0: the record at seg/off holds the whole chunk)
 * or, after small writes into it, a map (nrec > 0, format 3): block b is block bpos[b] of
 * record rec[brec[b]]. A write that changes a few blocks of a big chunk appends only
 * those blocks (an overlay record) and points their map entries at it, where rewriting
 * the whole chunk would cost a read and a write of up to 8 MiB; a map is never in S3 and
 * always has seg/off = rec[0]'s, so "on flash" tests stay seg != 0. */
struct data_entry {
	uint32_t seg;     /* 0: not on flash */
	uint64_t off;     /* of the record (its header) in the segment */
	uint64_t obj;     /* 0: not in S3; else the pack object holding the data at obj_off */
	uint64_t obj_off;
	uint32_t length;  /* bytes of chunk data */
	uint64_t version;
	uint32_t crc[DATA_BLOCKS_MAX]; /* of each block of the data, the last one partial */
	uint32_t nrec;    /* 0: one whole record; else the records of the map, oldest first */
	struct data_rec_ref rec[DATA_RECS_MAX];
	uint8_t brec[DATA_BLOCKS_MAX], bpos[DATA_BLOCKS_MAX];
};
_Static_assert(DATA_BLOCKS_MAX <= 256 && DATA_RECS_MAX <= 256, "map entries are bytes");
/* The records entry e's bytes on flash lie in (none when it is only in S3); returns how
 * many, written to out (room for DATA_RECS_MAX). */
uint32_t data_entry_recs(const struct data_entry *e, struct data_rec_ref *out);
/* The record holding block b of e (on flash), to *rec; returns the offset of the block's
 * first byte in that record's segment. Every chunk read asks it for every block. */
static inline uint64_t data_entry_block(const struct data_entry *e, uint32_t b, struct data_rec_ref *rec)
{
	uint32_t pos = b;
	if (e->nrec) {
		*rec = e->rec[e->brec[b]];
		pos = e->bpos[b];
	} else {
		*rec = (struct data_rec_ref){.seg = e->seg, .off = e->off, .length = e->length};
	}
	return rec->off + DATA_REC_HDR_SIZE + (uint64_t)pos * DATA_BLOCK_SIZE;
}
void data_key(uint8_t out[DATA_KEY_SIZE], uint64_t ino, uint32_t idx);
/* Returns the encoded size (<= DATA_VAL_MAX). */
size_t data_val_encode(uint8_t *out, const struct data_entry *e);
/* 0, or -EIO when the value is malformed (lengths, format, field ranges). */
int data_val_decode(const uint8_t *in, size_t len, struct data_entry *e);

struct data_seg {
	uint32_t no;      /* file dir/t<i>/seg-%08u */
	int fd;
	int dfd;          /* the same file opened O_DIRECT (reads, big appends), opened on first use:
			   * DATA_DFD_UNOPENED, -1 when it cannot be, else the fd (atomic) */
	uint64_t total;   /* bytes of records (file size rounded to DATA_REC_ALIGN) */
	uint64_t live;    /* bytes of records the index points to */
	uint64_t punched; /* bytes of dead records given back (hole punch); written under
			   * seg_lock exclusive, read atomically */
};

/* A pack object in S3: its size and the bytes of chunk data index entries still point to
 * (rebuilt from the index at open). An object nothing points to is deleted. */
struct data_obj {
	uint64_t id, size, live;
};

struct data_target {
	struct data_store *ds;
	uint32_t id;      /* cluster-wide */
	char *dir;
	pthread_mutex_t lock;
	pthread_rwlock_t seg_lock;
	pthread_mutex_t compact_lock; /* one compaction pass at a time per target */
	rocksdb_t *db;
	rocksdb_options_t *dbopt;
	rocksdb_writeoptions_t *wopt, *wopt_sync;
	rocksdb_readoptions_t *ropt;
	struct data_seg *segs; /* sorted by no; the last one is active */
	uint32_t nsegs, segs_cap;
	uint64_t active_end;   /* append position in the active segment */
	uint64_t capacity_bytes; /* 0: the file system's */
	uint64_t segment_bytes;
	uint64_t chunks;
	/* pack objects, sorted by id; under lock */
	struct data_obj *objs;
	uint32_t nobjs, objs_cap;
	uint64_t next_obj;
	bool objs_dead;        /* some object has live == 0: tier_gc deletes it */
	uint64_t direct_reads; /* reads served with O_DIRECT (atomic) */
	uint64_t direct_writes; /* appends written with O_DIRECT (atomic) */
	/* under lock: appends so far, and the appends and the index's sequence number that the
	 * last sync covered (data_sync_locked skips a target nothing was written to since) */
	uint64_t appends, synced_appends, synced_seq;
	uint64_t syncs;        /* syncs that had something to do */
	/* under lock: dead records to punch (data_drop_record_locked), oldest first; the
	 * first ndead_durable died by index changes a sync made durable, so they may be
	 * punched now (data_punch_durable), the rest wait for the next sync */
	struct data_dead { uint64_t off, size; uint32_t seg; } *dead;
	uint32_t ndead, ndead_durable, dead_cap;
	/* Chunks a reader on this machine found in several records (data_locate of a map),
	 * with the version found and when: the compactor thread folds each that stayed that
	 * version for DATA_FOLD_AFTER_NS into one whole record, so that such readers read it
	 * from the segment again (a chunk still being written is left alone: folding after
	 * every write would bring back the whole-chunk rewrites overlays avoid). Under
	 * fold_mu; a full queue drops what comes. */
	pthread_mutex_t fold_mu;
	struct data_chunk_id { uint64_t ino, version, at_ns; uint32_t idx; } fold[DATA_FOLD_QUEUE];
	uint32_t nfold;
	uint64_t folds;        /* maps folded for readers (atomic) */
};

#define DATA_DFD_UNOPENED (-2)
/* Appends of new records this big or bigger may bypass the page cache (a chunk of a
 * sequential writer; see data_append_locked's direct); smaller ones (a small file, an
 * overlay) stay buffered, written back by the kernel, so that each does not wait on the
 * disk. */
#define DATA_DIRECT_WRITE_MIN (1u << 20)
/* compact.c: folds the maps that data_locate queued on t (the compactor thread). */
void data_fold_queued(struct data_store *ds, struct data_target *t);
#define DATA_INDEX_CACHE_BYTES (256ull << 20) /* the indexes' RocksDB block cache */

struct data_store {
	uint32_t ntargets;
	uint32_t direct_min; /* see data_options; UINT32_MAX once O_DIRECT reads failed (atomic) */
	bool no_direct_writes; /* O_DIRECT appends failed once: buffered from then on (atomic) */
	/* One block cache and table format for every target's index (see data_open). */
	rocksdb_cache_t *index_cache;
	rocksdb_block_based_table_options_t *index_topts;
	struct data_target *targets;
	pthread_t compactor;
	bool compactor_running;
	pthread_mutex_t bg_lock;
	pthread_cond_t bg_cond;
	bool bg_stop, bg_kick;
	/* the object tier (tier.c): set and read under tier_lock */
	pthread_rwlock_t tier_lock;
	struct s3_client *s3;
	char tier_prefix[256];
};

/* store.c, used by compact.c */
struct data_target *data_target_get(struct data_store *ds, uint32_t target);
void data_seg_close(struct data_seg *s);
struct data_seg *data_seg_find(struct data_target *t, uint32_t no);
int data_index_get(struct data_target *t, uint64_t ino, uint32_t idx, struct data_entry *e, bool *found);
/* Reads a whole chunk's data (from flash, or from S3 when only there) into dst and checks
 * every crc. For a chunk on flash the caller holds t->lock or t->seg_lock shared. */
int data_read_chunk(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e, uint8_t *dst);
/* Appends a prepared record (header + data, rec_size bytes, padded) to the active
 * segment, rolling when needed. On success *seg and *off say where it went. With
 * use_reserve the configured capacity and the file system reserve are not enforced (for
 * compaction and truncation, which must work on a full target). With direct, a record of
 * DATA_DIRECT_WRITE_MIN bytes or more bypasses the page cache: for bytes nobody is
 * likely to read or rewrite soon (a sequential writer's new chunk, a compaction's move),
 * not for a chunk rewritten around old bytes (a random writer comes back to it) or
 * brought back from S3 for a reader. Caller holds t->lock. */
int data_append_locked(struct data_store *ds, struct data_target *t, const void *rec, uint64_t rec_size,
		       bool use_reserve, bool direct, uint32_t *seg, uint64_t *off);
/* Syncs the active segment and the index WAL. Caller holds t->lock. */
int data_sync_locked(struct data_target *t);
void data_kick_compactor(struct data_store *ds);
/* Seals the active segment and starts a new one (no-op when it is empty), so that
 * compaction can reclaim a mostly dead active segment. Caller holds t->lock. */
int data_seal_active_locked(struct data_target *t);
/* Punches the queued dead records: call once the index changes that made them dead are
 * durable (a sync, or a synced index write, which syncs the WAL up to it). Waits for
 * readers (seg_lock). Caller holds t->lock. */
void data_punch_queued_locked(struct data_target *t);
/* A record no index entry points to any more (an overwrite, a delete, a demote, a fold):
 * takes it off its segment's live count and queues its punch, which gives the space back
 * to the file system (FALLOC_FL_PUNCH_HOLE) even on a full disk where compaction has no
 * room to copy. The punch waits until the index change that made the record dead is
 * durable (data_punch_queued_locked): done first, a power loss would bring back an entry
 * whose record reads as zeros. data_sync_locked does the queued punches; an append that
 * finds no room syncs first. Segment 0 (not on flash) and a missing segment (logged at
 * open, never counted) are no-ops. Caller holds t->lock. */
void data_drop_record_locked(struct data_target *t, uint32_t seg, uint64_t off, uint32_t length);
/* data_drop_record_locked for every record of old that new (NULL: none) does not point
 * to. Caller holds t->lock. */
void data_drop_records_locked(struct data_target *t, const struct data_entry *old, const struct data_entry *new);

/* tier.c, used by store.c */
/* Reads blocks of a chunk that is only in S3 (e->seg == 0), checking every crc32c. */
int tier_read_blocks(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e, uint64_t start,
		     uint64_t len, uint8_t *dst);
/* At open: tier_open_target loads the object table ('O' keys), the index scan calls
 * tier_count_live for each entry with an object, then tier_note_dead marks objects with
 * nothing live for deletion. */
int tier_open_target(struct data_target *t);
void tier_count_live(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e);
void tier_note_dead(struct data_target *t);
/* Drops len bytes of object obj from its live count (an entry stopped pointing to it).
 * Caller holds t->lock. */
void tier_unref_locked(struct data_target *t, uint64_t obj, uint32_t len);
/* Brings a chunk that is only in S3 back to flash (keeping the S3 copy). 0 also when it
 * is no longer cold; -ENOSPC when flash has no room; an S3 error. */
int tier_recall_chunk(struct data_target *t, uint64_t ino, uint32_t idx);

/* compact.c */
int data_compactor_start(struct data_store *ds);
void data_compactor_stop(struct data_store *ds);

/* io.c: disk I/O through a per-thread io_uring (pread/pwrite when io_uring is not
 * available). Each returns 0 or -errno; a short read past the end of file is -EIO, a
 * short write is -ENOSPC (the disk took less than asked). */
struct data_io {
	int fd;
	void *buf;
	size_t len;
	uint64_t off;
};
int data_io_read(struct data_io *reqs, unsigned n);
int data_io_write(int fd, const void *buf, size_t len, uint64_t off);
int data_io_fdatasync(int fd);
/* data_io_fdatasync in two halves, so that the caller can do something else while the
 * disk works; the thread that starts one waits for it before its next data_io call. */
struct io_uring;
struct data_io_sync {
	struct io_uring *ring; /* NULL: done (no ring, or it failed to submit) */
	int rc;
};
void data_io_fdatasync_start(int fd, struct data_io_sync *op);
int data_io_fdatasync_wait(struct data_io_sync *op);

#endif

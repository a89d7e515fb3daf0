/*
 * data.h - storage targets. A target is a directory holding append-only segment files
 * (seg-00000001 ..., up to 256 MiB each) and a RocksDB chunk index
 *   (ino, chunk index) -> segment, offset, length, version, crc32c per 64 KiB block.
 * A write appends a new version of the chunk (read-modify-write for a partial chunk; for a
 * few blocks of a big chunk an overlay of only those blocks) and then points the index at
 * it; what the old version no longer needs becomes dead space that compaction reclaims.
 * Every read checks the crc32c of every block it touches: a mismatch is -AQ_ECORRUPT,
 * logged with the chunk's identity, never data. Disk I/O goes through io_uring. All
 * functions are thread-safe and return 0 or -errno.
 */
#ifndef AQ_DATA_H
#define AQ_DATA_H
#include <limits.h>
#include "common/common.h"

#define DATA_BLOCK_SIZE AQ_CRC_BLOCK_SIZE /* crc32c granularity inside a chunk */
#define DATA_SEGMENT_SIZE (256ull << 20)
#define DATA_REC_HDR_SIZE 64u         /* a record: this header, then the chunk's data */
#define DATA_REC_ALIGN 4096u          /* records start at multiples of it: O_DIRECT-sized */

struct data_store;

struct data_options {
	uint32_t ntargets;            /* targets on this server: dir/t0 ... dir/t{n-1} */
	const uint32_t *target_ids;   /* cluster-wide id of each local target */
	uint64_t capacity_bytes;      /* per target; 0: the underlying file system's size */
	uint64_t segment_bytes;       /* segment file size; 0: DATA_SEGMENT_SIZE (tests use less) */
	/* Reads of at least this many bytes whose pages are not all in the page cache go to
	 * the disk with O_DIRECT. 0: DATA_DIRECT_MIN_DEFAULT; UINT32_MAX: never. */
	uint32_t direct_min;
};
#define DATA_DIRECT_MIN_DEFAULT (64u << 10)

int data_open(const char *dir, bool create, const struct data_options *opt, struct data_store **out);
void data_close(struct data_store *ds);

/* Writes len bytes at off inside chunk (ino, idx) on target. Bytes of the chunk that were
 * never written read as zeros. With sync, returns only when data and index are durable.
 * -ENOSPC when the target is full (nothing changes then). */
int data_write(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off, const void *buf,
	       uint32_t len, bool sync);
/* As data_write for n extents of one chunk at once, in one new version of it: ext sorted
 * by offset, disjoint, none empty (else -EINVAL), their bytes one after another in bytes.
 * A writer that scattered small writes over a chunk pays one read-modify-write, not one
 * per write; extents that touch under half of a big chunk's blocks cost only those blocks
 * (an overlay, see README.md). */
int data_writev(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, const struct aq_extent *ext,
		uint32_t n, const void *bytes, bool sync);
/* Reads len bytes at off inside the chunk into buf; bytes past what was written (or a
 * missing chunk) read as zeros. Returns 0, -AQ_ECORRUPT on a checksum mismatch, -EIO. */
int data_read(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off, void *buf,
	      uint32_t len);
/* As data_read, into memory it allocates: on success *mem is to be given to data_buf_free,
 * *data holds the len bytes and at least head (<= 64) writable bytes lie before it, so a
 * reply can put its framing there and go out without a copy of the data. */
int data_read_alloc(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off,
		    uint32_t len, uint32_t head, void **mem, uint8_t **data);
/* Where a chunk's bytes lie on this server's disk, for a reader on the same machine that
 * reads the segment file itself (libaq's local reads: the bytes then skip aqd and its
 * socket). The record at rec_off is a 64-byte header, then the data; blocks [0, nblk)
 * cover the bytes asked for. */
struct data_loc {
	char path[PATH_MAX];     /* the segment file */
	uint64_t rec_off, version;
	uint32_t length;         /* the chunk's bytes */
	uint32_t nblk;
	uint32_t crc[AQ_CHUNK_SIZE_MAX / DATA_BLOCK_SIZE];
};
/* Locates bytes [0, end) of chunk (ino, idx), or with end 0 all the bytes its record
 * holds: 0, or -EAGAIN when they are not all in one record on this disk (no chunk, a
 * shorter one, one only in S3, or one in several records after overlays): read them
 * through data_read. The location is right
 * when it is given; a reader that finds the record gone or changed (a later write,
 * compaction) reads through aqd instead. */
int data_locate(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t end,
		struct data_loc *loc);
/* For that reader (format.c, pure): the bytes of the record it reads, from rec_off (the
 * header and blocks [0, nblk), rounded to 4096 for O_DIRECT); and the check of what it
 * read: the header names chunk (ino, idx) at this version and length, and every block
 * matches its crc32c (an overlay record's header never passes). 0 or -AQ_ECORRUPT; logs
 * nothing. */
uint64_t data_rec_span(uint32_t length, uint32_t nblk);
int data_rec_check(const uint8_t *rec, uint64_t ino, uint32_t idx, uint64_t version, uint32_t length,
		   uint32_t nblk, const uint32_t *crc);
/* The first of blocks [b0, b1) of a chunk of length bytes whose crc32c is not
 * crc[b - b0], their bytes at p (block b0's first); b1 when every one matches. *got (if
 * not NULL) gets the crc32c the block has. */
uint32_t data_blocks_check(const uint8_t *p, uint32_t length, uint32_t b0, uint32_t b1, const uint32_t *crc,
			   uint32_t *got);
/* I/O buffers, aligned for O_DIRECT, from a pool of bounded size (buf.c). */
void *data_buf_alloc(size_t size);
void data_buf_free(void *p); /* NULL is a no-op */
/* Gives every buffer the pool holds back to the kernel; _idle only when none was handed
 * out for idle_ns (the compactor calls it: an idle aqd holds no pool). */
void data_buf_trim(void);
void data_buf_trim_idle(uint64_t idle_ns);
/* Bytes of mapped buffers the pool holds for reuse, and mapped in all (in use or pooled). */
void data_buf_stats(uint64_t *pooled, uint64_t *mapped);
/* What ino's chunks on target take, each chunk's bytes rounded up to 4 KiB, wherever they
 * lie (flash or S3: a file moved to S3 is not a sparse one), for st_blocks: chunk idx's
 * alone (0 when there is none), or all of ino's on target. */
int data_chunk_bytes(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint64_t *bytes);
int data_inode_bytes(struct data_store *ds, uint32_t target, uint64_t ino, uint64_t *bytes);
/* ino's chunks on target at or past chunk from, in order: up to max of them, each's index
 * to idx[] and bytes of data to len[]. Returns how many, or -errno. */
int data_chunks(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t from, uint32_t max, uint32_t *idx,
		uint32_t *len);
/* Drops everything of ino at or past byte new_size (chunks of chunk_size bytes). */
int data_truncate(struct data_store *ds, uint32_t target, uint64_t ino, uint64_t new_size, uint32_t chunk_size);
/* Drops every chunk of ino on target. */
int data_delete(struct data_store *ds, uint32_t target, uint64_t ino);
/* Drops chunk idx of ino, if it has one: it reads as zeros after, a hole (fallocate's
 * PUNCH_HOLE and ZERO_RANGE over a whole chunk). */
int data_punch(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx);
/* Makes every write so far durable (at once when there was none since the last sync).
 * While the segment's sync is in flight it runs overlap(arg), if given, and sets *ran:
 * fsync syncs the metadata log there, so that the two syncs overlap; overlap's error is
 * returned when the sync itself succeeds. The records that writes so far made dead are
 * not punched here, off fsync's path: data_punch_durable does that after. */
int data_sync(struct data_store *ds, uint32_t target, int (*overlap)(void *), void *arg, bool *ran);
/* Whether target has appends or index changes no sync covered yet (test hooks). */
bool data_unsynced(struct data_store *ds, uint32_t target);
/* Gives back the space of the dead records whose index changes a data_sync made
 * durable; writers and readers wait for one punch at a time, not for all of them. */
void data_punch_durable(struct data_store *ds, uint32_t target);

struct data_target_stat {
	uint32_t target;
	uint64_t capacity_bytes, used_bytes, free_bytes; /* used: bytes in segment files */
	uint64_t live_bytes;                             /* bytes referenced by the index */
	uint64_t chunks, segments;
	uint64_t fs_id;                                  /* st_dev of the target's file system */
	bool fs_shared_capacity;                         /* capacity is the file system's, not a quota */
	uint64_t direct_reads;                           /* chunk reads served with O_DIRECT so far */
	uint64_t direct_writes;                          /* records appended with O_DIRECT so far */
	uint64_t syncs;                                  /* data_syncs that had something to make durable */
	uint64_t folds;                                  /* chunks in several records folded for readers */
};
int data_stat(struct data_store *ds, uint32_t target, struct data_target_stat *out);
/* Runs one compaction pass on target: rewrites segments whose live share is below
 * min_live_ratio and deletes empty ones. Returns bytes reclaimed or -errno. A background
 * thread started by data_open calls it too. */
int64_t data_compact(struct data_store *ds, uint32_t target, double min_live_ratio);

/* ---- object tier (tier.c) ----
 * A chunk lives on flash, in an S3 pack object, or both. Demote packs chunks (of many
 * files) into objects of up to DATA_PACK_MAX bytes, uploads them, and only after S3
 * confirmed frees their flash. A read of a cold chunk fetches it from S3, checks every
 * block's crc32c and keeps it on flash again (both). Pack objects are accounted (bytes,
 * live bytes) in the target's index; an object with nothing live is deleted from S3. */
#define DATA_PACK_MAX (64u << 20)
struct s3_client;
/* Attaches the bucket (NULL detaches: reads of cold chunks then fail with -EHOSTUNREACH).
 * Objects are named "<prefix>t<target id>/<object id, 16 hex digits>". The store does not
 * own s3; detach before closing it. */
void data_set_tier(struct data_store *ds, struct s3_client *s3, const char *prefix);
/* Moves the chunks of inos (n of them) on target to S3. Chunks already in S3 just lose
 * their flash copy. Returns bytes of chunk data freed from flash, or -errno (nothing of
 * the failed pack freed: -EHOSTUNREACH, -EAGAIN, -EACCES from S3; -ENOTCONN: no tier). */
int64_t data_demote(struct data_store *ds, uint32_t target, const uint64_t *inos, uint32_t n);
/* Brings every cold chunk of ino on target back to flash, keeping the S3 copy. Returns
 * bytes recalled, or -errno. */
int64_t data_hydrate(struct data_store *ds, uint32_t target, uint64_t ino);
/* Bytes of chunk data of ino on target: only on flash, only in S3, in both. */
struct data_tier_usage {
	uint64_t hot, cold, both;
};
int data_tier_usage(struct data_store *ds, uint32_t target, uint64_t ino, struct data_tier_usage *out);
/* The target's pack objects: how many, their bytes, the bytes still referenced. */
struct data_tier_stat {
	uint64_t objects, object_bytes, live_bytes;
};
int data_tier_stat(struct data_store *ds, uint32_t target, struct data_tier_stat *out);
/* When more than start_ratio of the target's object bytes is dead, rewrites the objects
 * with the least live share (their live chunks go into new packs) until less than
 * stop_ratio is. Returns object bytes reclaimed, or -errno. */
int64_t data_tier_reclaim(struct data_store *ds, uint32_t target, double start_ratio, double stop_ratio);

#endif

/*
 * data.h - storage targets. A target is a directory holding append-only segment files
 * (seg-00000001 ..., up to 256 MiB each) and a RocksDB chunk index
 *   (ino, chunk index) -> segment, offset, length, version, crc32c per 64 KiB block.
 * A write appends a new version of the chunk (read-modify-write for a partial chunk) and
 * then points the index at it; the old version becomes dead space that compaction
 * reclaims. Every read checks the crc32c of every block it touches: a mismatch is
 * -AQ_ECORRUPT, logged with the chunk's identity, never data. Disk I/O goes through
 * io_uring. All functions are thread-safe and return 0 or -errno.
 */
#ifndef AQ_DATA_H
#define AQ_DATA_H
#include "common/common.h"

#define DATA_BLOCK_SIZE (64u << 10)   /* crc32c granularity inside a chunk */
#define DATA_SEGMENT_SIZE (256ull << 20)

struct data_store;

struct data_options {
	uint32_t ntargets;            /* targets on this server: dir/t0 ... dir/t{n-1} */
	const uint32_t *target_ids;   /* cluster-wide id of each local target */
	uint64_t capacity_bytes;      /* per target; 0: the underlying file system's size */
	uint64_t segment_bytes;       /* segment file size; 0: DATA_SEGMENT_SIZE (tests use less) */
};

int data_open(const char *dir, bool create, const struct data_options *opt, struct data_store **out);
void data_close(struct data_store *ds);

/* Writes len bytes at off inside chunk (ino, idx) on target. Bytes of the chunk that were
 * never written read as zeros. With sync, returns only when data and index are durable.
 * -ENOSPC when the target is full (nothing changes then). */
int data_write(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off, const void *buf,
	       uint32_t len, bool sync);
/* Reads len bytes at off inside the chunk into buf; bytes past what was written (or a
 * missing chunk) read as zeros. Returns 0, -AQ_ECORRUPT on a checksum mismatch, -EIO. */
int data_read(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off, void *buf,
	      uint32_t len);
/* Drops everything of ino at or past byte new_size (chunks of chunk_size bytes). */
int data_truncate(struct data_store *ds, uint32_t target, uint64_t ino, uint64_t new_size, uint32_t chunk_size);
/* Drops every chunk of ino on target. */
int data_delete(struct data_store *ds, uint32_t target, uint64_t ino);
/* Makes every write so far durable. */
int data_sync(struct data_store *ds, uint32_t target);

struct data_target_stat {
	uint32_t target;
	uint64_t capacity_bytes, used_bytes, free_bytes; /* used: bytes in segment files */
	uint64_t live_bytes;                             /* bytes referenced by the index */
	uint64_t chunks, segments;
	uint64_t fs_id;                                  /* st_dev of the target's file system */
	bool fs_shared_capacity;                         /* capacity is the file system's, not a quota */
};
int data_stat(struct data_store *ds, uint32_t target, struct data_target_stat *out);
/* Runs one compaction pass on target: rewrites segments whose live share is below
 * min_live_ratio and deletes empty ones. Returns bytes reclaimed or -errno. A background
 * thread started by data_open calls it too. */
int64_t data_compact(struct data_store *ds, uint32_t target, double min_live_ratio);

#endif

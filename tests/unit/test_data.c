/*
 * test_data.c - unit tests of the segment store (src/data): round trips against an
 * in-memory model, sparse reads, overwrite, truncate, delete, reopen, corruption
 * detection (through the page cache and through O_DIRECT), compaction, ENOSPC,
 * concurrent writers and the pool of I/O buffers. Each case works in its own
 * directory under a temporary root that is removed at the end.
 */
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"
#include "data/data.h"
#include "data/data_internal.h"

static char root[256];
static char failmsg[512];
static int case_no;

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			int n_ = snprintf(failmsg, sizeof failmsg, "%s:%d: ", __FILE__, __LINE__); \
			snprintf(failmsg + n_, sizeof failmsg - n_, __VA_ARGS__);                  \
			goto fail;                                                                 \
		}                                                                                  \
	} while (0)

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}
static void fill_random(uint64_t *s, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd(s);
}

static void case_dir(char *out, size_t size)
{
	snprintf(out, size, "%s/c%d", root, ++case_no);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	remove(path);
	return 0;
}

static const uint32_t ids1[] = {7};
static struct data_options opts1 = {.ntargets = 1, .target_ids = ids1};

#define SMALL_SEG (8ull * 1024 * 1024 + 2 * DATA_REC_ALIGN)

/* A model of chunks: what the store must return. */
#define MCHUNK (1u << 20)
#define MNCHUNKS 8
struct model {
	uint8_t *data[MNCHUNKS];
};
static void model_init(struct model *m)
{
	for (int i = 0; i < MNCHUNKS; i++)
		m->data[i] = aq_calloc(1, MCHUNK);
}
static void model_free(struct model *m)
{
	for (int i = 0; i < MNCHUNKS; i++)
		free(m->data[i]);
}

/* Random writes of ino into the model's chunks; returns 0 or the failing rc. */
static int model_write_random(struct data_store *ds, uint32_t target, uint64_t ino, struct model *m, uint64_t *s,
			      int nwrites, uint8_t *buf)
{
	for (int w = 0; w < nwrites; w++) {
		uint32_t idx = rnd(s) % MNCHUNKS;
		uint32_t off = rnd(s) % MCHUNK;
		uint32_t maxlen = MIN(MCHUNK - off, 300000u);
		uint32_t len = 1 + rnd(s) % maxlen;
		if (rnd(s) % 8 == 0) { /* sometimes a whole chunk */
			off = 0;
			len = MCHUNK;
		}
		fill_random(s, buf, len);
		int rc = data_write(ds, target, ino, idx, off, buf, len, rnd(s) % 4 == 0);
		if (rc)
			return rc;
		memcpy(m->data[idx] + off, buf, len);
	}
	return 0;
}

static int model_check(struct data_store *ds, uint32_t target, uint64_t ino, struct model *m, uint8_t *buf)
{
	for (uint32_t idx = 0; idx < MNCHUNKS; idx++) {
		memset(buf, 0xAA, MCHUNK);
		int rc = data_read(ds, target, ino, idx, 0, buf, MCHUNK);
		if (rc)
			return rc;
		if (memcmp(buf, m->data[idx], MCHUNK)) {
			for (uint32_t i = 0; i < MCHUNK; i++)
				if (buf[i] != m->data[idx][i]) {
					fprintf(stderr, "ino %llx idx %u differs at %u\n", (unsigned long long)ino, idx, i);
					break;
				}
			return -EILSEQ;
		}
	}
	return 0;
}

/* Case roundtrip leaves its store here for case reopen. */
static char rt_dir[300];
static struct model rt_model;

static int test_roundtrip(void)
{
	struct data_store *ds = NULL;
	uint8_t *buf = aq_malloc(MCHUNK), *rb = aq_malloc(MCHUNK);
	uint64_t s = 12345;
	model_init(&rt_model);
	case_dir(rt_dir, sizeof rt_dir);
	int rc = data_open(rt_dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	for (int round = 0; round < 10; round++) {
		rc = model_write_random(ds, 7, 100, &rt_model, &s, 20, buf);
		CHECK(rc == 0, "write: %s", aq_strerror(rc));
		for (int r = 0; r < 20; r++) { /* random partial reads */
			uint32_t idx = rnd(&s) % MNCHUNKS, off = rnd(&s) % MCHUNK;
			uint32_t len = 1 + rnd(&s) % (MCHUNK - off);
			rc = data_read(ds, 7, 100, idx, off, rb, len);
			CHECK(rc == 0, "read: %s", aq_strerror(rc));
			CHECK(memcmp(rb, rt_model.data[idx] + off, len) == 0, "idx %u [%u, +%u) differs", idx, off, len);
		}
	}
	rc = model_check(ds, 7, 100, &rt_model, rb);
	CHECK(rc == 0, "check: %s", aq_strerror(rc));
	CHECK(data_read(ds, 8, 100, 0, 0, rb, 10) == -AQ_ENOT_OWNER, "unknown target must be -AQ_ENOT_OWNER");
	CHECK(data_write(ds, 7, 100, 0, AQ_CHUNK_SIZE_MAX, rb, 1, false) == -EINVAL, "write past chunk max");
	struct data_target_stat st;
	CHECK(data_stat(ds, 7, &st) == 0 && st.chunks == MNCHUNKS && st.live_bytes > 0 &&
		      st.used_bytes >= st.live_bytes && st.segments >= 1 && st.capacity_bytes > 0,
	      "stat: chunks %llu live %llu used %llu", (unsigned long long)st.chunks,
	      (unsigned long long)st.live_bytes, (unsigned long long)st.used_bytes);
	data_close(ds);
	free(buf);
	free(rb);
	return 0;
fail:
	data_close(ds);
	free(buf);
	free(rb);
	return -1;
}

static int test_reopen(void)
{
	struct data_store *ds = NULL;
	uint8_t *rb = aq_malloc(MCHUNK);
	char missing[300];
	snprintf(missing, sizeof missing, "%s/nope", root);
	int rc = data_open(missing, false, &opts1, &ds);
	CHECK(rc == -ENOENT && !ds, "open of a missing store: %s", aq_strerror(rc));
	rc = data_open(rt_dir, false, &opts1, &ds);
	CHECK(rc == 0, "reopen: %s", aq_strerror(rc));
	rc = model_check(ds, 7, 100, &rt_model, rb);
	CHECK(rc == 0, "check after reopen: %s", aq_strerror(rc));
	struct data_target_stat st;
	CHECK(data_stat(ds, 7, &st) == 0 && st.chunks == MNCHUNKS, "chunks after reopen %llu",
	      (unsigned long long)st.chunks);
	/* Writes after reopen append past what is there and still read back. */
	uint64_t s = 99;
	rc = model_write_random(ds, 7, 100, &rt_model, &s, 10, rb);
	CHECK(rc == 0, "write after reopen: %s", aq_strerror(rc));
	rc = model_check(ds, 7, 100, &rt_model, rb);
	CHECK(rc == 0, "check after reopen+write: %s", aq_strerror(rc));
	data_close(ds);
	ds = NULL;
	rc = data_open(rt_dir, false, &opts1, &ds);
	CHECK(rc == 0, "second reopen: %s", aq_strerror(rc));
	rc = model_check(ds, 7, 100, &rt_model, rb);
	CHECK(rc == 0, "check after second reopen: %s", aq_strerror(rc));
	data_close(ds);
	model_free(&rt_model);
	free(rb);
	return 0;
fail:
	data_close(ds);
	free(rb);
	return -1;
}

static bool all_bytes(const uint8_t *p, size_t n, uint8_t v)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != v)
			return false;
	return true;
}

static int test_sparse(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	uint8_t *rb = aq_malloc(MCHUNK);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	memset(rb, 0xAA, MCHUNK);
	rc = data_read(ds, 7, 5, 3, 1000, rb, 200000);
	CHECK(rc == 0 && all_bytes(rb, 200000, 0), "missing chunk must read zeros (%d)", rc);
	uint8_t w[100];
	memset(w, 0x5A, sizeof w);
	rc = data_write(ds, 7, 5, 3, 300000, w, sizeof w, false);
	CHECK(rc == 0, "write: %s", aq_strerror(rc));
	memset(rb, 0xAA, MCHUNK);
	rc = data_read(ds, 7, 5, 3, 0, rb, 400000);
	CHECK(rc == 0, "read: %s", aq_strerror(rc));
	CHECK(all_bytes(rb, 300000, 0), "gap before the write must be zeros");
	CHECK(all_bytes(rb + 300000, 100, 0x5A), "written bytes");
	CHECK(all_bytes(rb + 300100, 99900, 0), "past the end must be zeros");
	/* A read that starts past the chunk's length. */
	memset(rb, 0xAA, 1000);
	rc = data_read(ds, 7, 5, 3, 500000, rb, 1000);
	CHECK(rc == 0 && all_bytes(rb, 1000, 0), "read past length");
	/* A second write past the end leaves a zero gap between the two. */
	rc = data_write(ds, 7, 5, 3, 700000, w, sizeof w, true);
	CHECK(rc == 0, "write 2: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 5, 3, 0, rb, MCHUNK);
	CHECK(rc == 0 && all_bytes(rb, 300000, 0) && all_bytes(rb + 300000, 100, 0x5A) &&
		      all_bytes(rb + 300100, 700000 - 300100, 0) && all_bytes(rb + 700000, 100, 0x5A) &&
		      all_bytes(rb + 700100, MCHUNK - 700100, 0),
	      "gap between writes");
	data_close(ds);
	free(rb);
	return 0;
fail:
	data_close(ds);
	free(rb);
	return -1;
}

static int test_overwrite(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	uint8_t *a = aq_malloc(MCHUNK), *rb = aq_malloc(MCHUNK), b[5000];
	uint64_t s = 7;
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	fill_random(&s, a, MCHUNK);
	fill_random(&s, b, sizeof b);
	rc = data_write(ds, 7, 9, 0, 0, a, MCHUNK, false);
	CHECK(rc == 0, "write: %s", aq_strerror(rc));
	rc = data_write(ds, 7, 9, 0, 100000, b, sizeof b, false);
	CHECK(rc == 0, "overwrite: %s", aq_strerror(rc));
	memcpy(a + 100000, b, sizeof b);
	/* One that crosses a block boundary too. */
	rc = data_write(ds, 7, 9, 0, DATA_BLOCK_SIZE - 10, b, 20, false);
	CHECK(rc == 0, "overwrite 2: %s", aq_strerror(rc));
	memcpy(a + DATA_BLOCK_SIZE - 10, b, 20);
	rc = data_read(ds, 7, 9, 0, 0, rb, MCHUNK);
	CHECK(rc == 0 && memcmp(a, rb, MCHUNK) == 0, "whole chunk after overwrites differs");
	/* Both went in as overlays, the second (blocks 0 and 1) hiding the first (block 1):
	 * live are the whole record and the second overlay. */
	struct data_target_stat st;
	CHECK(data_stat(ds, 7, &st) == 0 && st.chunks == 1 &&
		      st.live_bytes == data_rec_size(MCHUNK) + data_rec_size(2 * DATA_BLOCK_SIZE),
	      "live bytes %llu", (unsigned long long)st.live_bytes);
	data_close(ds);
	free(a);
	free(rb);
	return 0;
fail:
	data_close(ds);
	free(a);
	free(rb);
	return -1;
}

/* Many extents of one chunk in one version: random sets against the model (unaligned,
 * across blocks, past the old end with a gap), and malformed sets refused. */
/* The index entry of chunk (ino, idx) on target 7. */
/* A sync and the punches it allows, as aqd's sync each second does. */
static int sync_punch(struct data_store *ds, uint32_t target)
{
	int rc = data_sync(ds, target, NULL, NULL, NULL);
	data_punch_durable(ds, target);
	return rc;
}

static int entry_of(struct data_store *ds, uint64_t ino, uint32_t idx, struct data_entry *e)
{
	bool found = false;
	int rc = data_index_get(data_target_get(ds, 7), ino, idx, e, &found);
	return rc ? rc : found ? 0 : -ENOENT;
}

/* Finds the overlay record of (ino, version) in segment `seg` of dir's target by its
 * header and flips one byte at its data byte `at` (with at UINT32_MAX only finds it):
 * 0, or -ENOENT when no such header is there. */
static int flip_in_overlay(const char *dir, uint32_t seg, uint64_t ino, uint64_t version, uint32_t at)
{
	char path[400];
	snprintf(path, sizeof path, "%s/t0/seg-%08u", dir, seg);
	int fd = open(path, O_RDWR), rc = -ENOENT;
	uint8_t hb[DATA_REC_HDR_SIZE];
	for (uint64_t off = 0; fd >= 0 && pread(fd, hb, sizeof hb, (off_t)off) == sizeof hb; off += DATA_REC_ALIGN) {
		struct data_rec_hdr h;
		if (data_hdr_decode(hb, &h) || h.ino != ino || h.version != version ||
		    h.flags != DATA_REC_FLAG_OVERLAY)
			continue;
		rc = 0;
		if (at == UINT32_MAX)
			break;
		uint8_t byte;
		off += DATA_REC_HDR_SIZE + at;
		rc = pread(fd, &byte, 1, (off_t)off) == 1 ? 0 : -EIO;
		byte ^= 0x20;
		if (!rc)
			rc = pwrite(fd, &byte, 1, (off_t)off) == 1 ? 0 : -EIO;
		break;
	}
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Small writes into a big chunk are overlays: a record of only the blocks they change,
 * the rest read from where it was. Checked against a model: reads at every kind of
 * offset, growth past a partial last block, the bound on records (a later write folds
 * them into one whole record), the live accounting (also as rebuilt at open), locate
 * (which has no single record to give), a corrupt overlay block, truncation, compaction
 * (which folds a map into one record of the same version) and delete. */
static int test_overlay(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	/* big segments: the background compactor (which folds maps too) leaves this alone */
	struct data_options o = {.ntargets = 1, .target_ids = ids1};
	uint8_t *m = aq_calloc(1, MCHUNK), *rb = aq_malloc(MCHUNK), w[6000];
	uint64_t s = 11;
	struct data_entry *e = aq_malloc(sizeof *e);
	struct data_loc *loc = aq_malloc(sizeof *loc);
	struct data_target_stat st;
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &o, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	uint32_t len = 600000; /* 10 blocks, the last one partial */
	fill_random(&s, m, len);
	CHECK(data_write(ds, 7, 50, 0, 0, m, len, true) == 0, "whole write");
	/* 4 KiB inside block 4: an overlay of that block alone. */
	fill_random(&s, w, 4096);
	CHECK(data_write(ds, 7, 50, 0, 4 * DATA_BLOCK_SIZE + 1000, w, 4096, true) == 0, "small write");
	memcpy(m + 4 * DATA_BLOCK_SIZE + 1000, w, 4096);
	CHECK(entry_of(ds, 50, 0, e) == 0 && e->nrec == 2 && e->rec[1].length == DATA_BLOCK_SIZE && e->brec[4] == 1 &&
		      e->bpos[4] == 0 && e->brec[3] == 0 && e->version == 2,
	      "a small write is an overlay of its block (nrec %u)", e->nrec);
	CHECK(data_stat(ds, 7, &st) == 0 && st.live_bytes == data_rec_size(len) + data_rec_size(DATA_BLOCK_SIZE),
	      "live %llu", (unsigned long long)st.live_bytes);
	/* Growth: the old partial last block goes into the overlay at its new length, the
	 * gap reads as zeros. */
	fill_random(&s, w, 100);
	CHECK(data_write(ds, 7, 50, 0, 700000, w, 100, false) == 0, "append past the end");
	memcpy(m + 700000, w, 100);
	len = 700100;
	CHECK(entry_of(ds, 50, 0, e) == 0 && e->nrec == 3 && e->length == len && e->brec[9] == 2 && e->brec[10] == 2,
	      "growth is an overlay of the old last block and the new ones");
	/* Reads: whole, inside one overlay block, across base, overlay and base blocks. */
	static const uint32_t at[][2] = {{0, 700100}, {4 * 65536 + 10, 100}, {3 * 65536 + 7, 2 * 65536},
					 {9 * 65536 - 3, 65536 + 10}, {599990, 100200}, {0, MCHUNK}};
	for (size_t i = 0; i < ARRAY_SIZE(at); i++) {
		memset(rb, 0x5A, MCHUNK);
		rc = data_read(ds, 7, 50, 0, at[i][0], rb, at[i][1]);
		uint32_t have = at[i][0] < len ? MIN(at[i][1], len - at[i][0]) : 0;
		CHECK(rc == 0 && memcmp(rb, m + at[i][0], have) == 0 && all_bytes(rb + have, at[i][1] - have, 0),
		      "read %zu (%u+%u): %s", i, at[i][0], at[i][1], aq_strerror(rc));
	}
	/* Scattered writes of up to a few blocks: the bytes always right, the live bytes
	 * bounded. */
	for (int i = 0; i < 100; i++) {
		uint32_t n = 1 + (uint32_t)(rnd(&s) % (i % 2 ? 3000 : 140000)), off = (uint32_t)(rnd(&s) % (len - n));
		fill_random(&s, rb, n);
		CHECK(data_write(ds, 7, 50, 0, off, rb, n, i % 5 == 0) == 0, "scattered write %d", i);
		memcpy(m + off, rb, n);
		CHECK(data_read(ds, 7, 50, 0, 0, rb, len) == 0 && memcmp(rb, m, len) == 0, "bytes after write %d", i);
		CHECK(data_stat(ds, 7, &st) == 0 && st.live_bytes <= 2 * (uint64_t)len + 2 * DATA_REC_ALIGN * DATA_RECS_MAX,
		      "live %llu after write %d", (unsigned long long)st.live_bytes, i);
	}
	/* The accounting rebuilt at open is the one kept while running. */
	CHECK(data_write(ds, 7, 50, 0, 3, w, 10, false) == 0, "write before reopen");
	memcpy(m + 3, w, 10);
	CHECK(entry_of(ds, 50, 0, e) == 0 && e->nrec >= 2, "a map to reopen");
	CHECK(data_stat(ds, 7, &st) == 0, "stat");
	uint64_t live = st.live_bytes;
	data_close(ds);
	ds = NULL;
	CHECK(data_open(dir, false, &o, &ds) == 0, "reopen");
	CHECK(data_stat(ds, 7, &st) == 0 && st.live_bytes == live, "live %llu after reopen, %llu before",
	      (unsigned long long)st.live_bytes, (unsigned long long)live);
	CHECK(data_read(ds, 7, 50, 0, 0, rb, len) == 0 && memcmp(rb, m, len) == 0, "bytes after reopen");
	/* A corrupt block in an overlay: reads that need it fail, the others do not. */
	fill_random(&s, w, 10);
	CHECK(data_write(ds, 7, 50, 0, 7 * DATA_BLOCK_SIZE + 5, w, 10, true) == 0, "write to corrupt");
	memcpy(m + 7 * DATA_BLOCK_SIZE + 5, w, 10);
	CHECK(entry_of(ds, 50, 0, e) == 0 && e->nrec >= 2, "an overlay to corrupt");
	CHECK(flip_in_overlay(dir, e->rec[e->brec[7]].seg, 50, e->version, e->bpos[7] * DATA_BLOCK_SIZE + 99) == 0,
	      "flip");
	rc = data_read(ds, 7, 50, 0, 7 * DATA_BLOCK_SIZE, rb, 200);
	CHECK(rc == -AQ_ECORRUPT, "a corrupt overlay block must be -AQ_ECORRUPT, got %s", aq_strerror(rc));
	CHECK(data_read(ds, 7, 50, 0, 6 * DATA_BLOCK_SIZE, rb, DATA_BLOCK_SIZE) == 0 &&
		      memcmp(rb, m + 6 * DATA_BLOCK_SIZE, DATA_BLOCK_SIZE) == 0, "the block before reads fine");
	/* Overwritten whole, it heals. */
	CHECK(data_write(ds, 7, 50, 0, 7 * DATA_BLOCK_SIZE, m + 7 * DATA_BLOCK_SIZE, DATA_BLOCK_SIZE, false) == 0,
	      "heal");
	CHECK(data_read(ds, 7, 50, 0, 0, rb, len) == 0 && memcmp(rb, m, len) == 0, "bytes after healing");
	/* Truncation of a map cuts it into one whole record. */
	len = 5 * DATA_BLOCK_SIZE + 777;
	CHECK(data_truncate(ds, 7, 50, len, MCHUNK) == 0, "truncate");
	memset(m + len, 0, MCHUNK - len);
	CHECK(entry_of(ds, 50, 0, e) == 0 && e->nrec == 0 && e->length == len, "truncated to a whole record");
	CHECK(data_read(ds, 7, 50, 0, 0, rb, MCHUNK) == 0 && memcmp(rb, m, MCHUNK) == 0, "bytes after truncate");
	CHECK(data_locate(ds, 7, 50, 0, 0, loc) == 0, "a whole record is located again");
	/* Compaction folds a map into one record of its version. */
	fill_random(&s, w, 500);
	CHECK(data_write(ds, 7, 50, 0, 2 * DATA_BLOCK_SIZE + 3, w, 500, false) == 0, "overlay before compaction");
	memcpy(m + 2 * DATA_BLOCK_SIZE + 3, w, 500);
	CHECK(entry_of(ds, 50, 0, e) == 0 && e->nrec == 2, "a map to compact");
	uint64_t version = e->version;
	struct data_target *t = data_target_get(ds, 7);
	pthread_mutex_lock(&t->lock);
	rc = data_seal_active_locked(t);
	pthread_mutex_unlock(&t->lock);
	CHECK(rc == 0, "seal: %s", aq_strerror(rc));
	CHECK(data_compact(ds, 7, 1.0) >= 0, "compact");
	CHECK(entry_of(ds, 50, 0, e) == 0 && e->nrec == 0 && e->version == version, "compaction folds the map");
	CHECK(data_read(ds, 7, 50, 0, 0, rb, MCHUNK) == 0 && memcmp(rb, m, MCHUNK) == 0, "bytes after compaction");
	CHECK(data_stat(ds, 7, &st) == 0 && st.live_bytes == data_rec_size(len), "live %llu after compaction",
	      (unsigned long long)st.live_bytes);
	/* One block after another of a chunk of DATA_BLOCKS_MAX blocks: an overlay each until
	 * the chunk would lie in more than DATA_RECS_MAX records, then one whole record. */
	uint8_t *big = aq_malloc(DATA_CHUNK_MAX), *bigr = aq_malloc(DATA_CHUNK_MAX);
	fill_random(&s, big, DATA_CHUNK_MAX);
	rc = data_write(ds, 7, 51, 0, 0, big, DATA_CHUNK_MAX, false);
	for (uint32_t b = 0; b < DATA_RECS_MAX && !rc; b++) {
		fill_random(&s, big + b * DATA_BLOCK_SIZE + 7, 9);
		rc = data_write(ds, 7, 51, 0, b * DATA_BLOCK_SIZE + 7, big + b * DATA_BLOCK_SIZE + 7, 9, false);
		if (!rc)
			rc = entry_of(ds, 51, 0, e);
		uint32_t want = b + 1 < DATA_RECS_MAX ? b + 2 : 0;
		if (!rc && e->nrec != want)
			rc = -EILSEQ;
	}
	if (!rc)
		rc = data_read(ds, 7, 51, 0, 0, bigr, DATA_CHUNK_MAX);
	if (!rc && memcmp(big, bigr, DATA_CHUNK_MAX))
		rc = -EILSEQ;
	free(big);
	free(bigr);
	CHECK(rc == 0, "a chunk past DATA_RECS_MAX records: %s (records %u)", aq_strerror(rc), e->nrec);
	CHECK(data_delete(ds, 7, 51) == 0, "delete the big chunk");
	/* A reader on this machine finds no one record to read for a map: the compactor
	 * thread folds it (same version, same bytes) so that the next one does. A chunk of
	 * its own, in the active segment, which no compaction pass would touch. */
	fill_random(&s, rb, MCHUNK);
	CHECK(data_write(ds, 7, 52, 0, 0, rb, MCHUNK, false) == 0, "a chunk to locate");
	fill_random(&s, rb + 5000, 300);
	CHECK(data_write(ds, 7, 52, 0, 5000, rb + 5000, 300, false) == 0, "a map to locate");
	CHECK(entry_of(ds, 52, 0, e) == 0 && e->nrec == 2, "a map to locate");
	version = e->version;
	uint32_t oseg = e->rec[1].seg;
	CHECK(data_stat(ds, 7, &st) == 0, "stat");
	uint64_t folds = st.folds;
	CHECK(data_locate(ds, 7, 52, 0, 0, loc) == -EAGAIN, "a map has no one record to locate");
	for (int i = 0; i < 300 && data_locate(ds, 7, 52, 0, 0, loc) != 0; i++)
		usleep(50 * 1000); /* unchanged for 2 s, then the compactor's next round (5 s) */
	CHECK(data_locate(ds, 7, 52, 0, 0, loc) == 0 && loc->version == version, "the map was not folded for readers");
	CHECK(data_stat(ds, 7, &st) == 0 && st.folds == folds + 1, "folds %llu", (unsigned long long)st.folds);
	/* The records it replaced stay until the fold's index switch is durable (a sync),
	 * and then give their space back. */
	CHECK(flip_in_overlay(dir, oseg, 52, version, UINT32_MAX) == 0, "a fold punched the overlay it replaced");
	CHECK(sync_punch(ds, 7) == 0 && flip_in_overlay(dir, oseg, 52, version, UINT32_MAX) == -ENOENT,
	      "the overlay a fold replaced was not punched at the sync");
	uint8_t *back = aq_malloc(MCHUNK);
	rc = data_read(ds, 7, 52, 0, 0, back, MCHUNK);
	bool same = rc == 0 && memcmp(back, rb, MCHUNK) == 0;
	free(back);
	CHECK(same, "bytes after the fold: %s", aq_strerror(rc));
	CHECK(data_delete(ds, 7, 52) == 0, "delete");
	/* Delete drops every record. */
	CHECK(data_write(ds, 7, 50, 0, 10, w, 20, false) == 0 && entry_of(ds, 50, 0, e) == 0 && e->nrec == 2,
	      "a map to delete");
	CHECK(data_delete(ds, 7, 50) == 0, "delete");
	CHECK(data_stat(ds, 7, &st) == 0 && st.live_bytes == 0 && st.chunks == 0, "live %llu after delete",
	      (unsigned long long)st.live_bytes);
	data_close(ds);
	free(m);
	free(rb);
	free(e);
	free(loc);
	return 0;
fail:
	data_close(ds);
	free(m);
	free(rb);
	free(e);
	free(loc);
	return -1;
}

/* Whether a valid record header of (ino, version) is at loc's record offset. */
static bool header_at(const struct data_loc *loc, uint64_t ino, uint64_t version)
{
	uint8_t hb[DATA_REC_HDR_SIZE];
	struct data_rec_hdr h;
	int fd = open(loc->path, O_RDONLY);
	bool ok = fd >= 0 && pread(fd, hb, sizeof hb, (off_t)loc->rec_off) == sizeof hb && data_hdr_decode(hb, &h) == 0 &&
		  h.ino == ino && h.version == version;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* A record an overwrite or a delete left dead is punched after the next sync, once the
 * index change is durable, not at once: a power loss before the sync brings back the
 * entry that points to it (regression: it was punched at once, so that entry read as
 * zeros, EIO). The punch is not fsync's either (data_sync): it took a third of a 4 KiB
 * write's fsync; data_punch_durable does it, as aqd's sync each second does. */
static int test_punch_after_sync(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	uint8_t a[20000], b[20000];
	struct data_loc *loc = aq_malloc(sizeof *loc);
	memset(a, 'a', sizeof a);
	memset(b, 'b', sizeof b);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	CHECK(data_write(ds, 7, 80, 0, 0, a, sizeof a, true) == 0 && data_locate(ds, 7, 80, 0, 0, loc) == 0, "write");
	CHECK(data_write(ds, 7, 80, 0, 0, b, sizeof b, false) == 0, "overwrite");
	data_punch_durable(ds, 7);
	CHECK(header_at(loc, 80, 1), "the overwritten record was punched before the overwrite was durable");
	CHECK(data_sync(ds, 7, NULL, NULL, NULL) == 0 && header_at(loc, 80, 1), "fsync's sync punched");
	/* an overwrite after the sync: its dead record waits for the next one */
	struct data_loc *loc2 = aq_malloc(sizeof *loc2);
	CHECK(data_locate(ds, 7, 80, 0, 0, loc2) == 0 && data_write(ds, 7, 80, 0, 0, a, sizeof a, false) == 0,
	      "overwrite again");
	data_punch_durable(ds, 7);
	bool first_gone = !header_at(loc, 80, 1), second_kept = header_at(loc2, 80, 2);
	free(loc2);
	CHECK(first_gone, "the overwritten record was not punched after the sync");
	CHECK(second_kept, "a record that died after the sync was punched");
	CHECK(data_locate(ds, 7, 80, 0, 0, loc) == 0 && data_delete(ds, 7, 80) == 0, "delete");
	CHECK(header_at(loc, 80, 3), "the deleted record was punched before the delete was durable");
	CHECK(sync_punch(ds, 7) == 0 && !header_at(loc, 80, 3), "the deleted record was not punched after the sync");
	data_close(ds);
	free(loc);
	return 0;
fail:
	data_close(ds);
	free(loc);
	return -1;
}

static int count_call(void *arg)
{
	int *calls = arg;
	return ++*calls == 2 ? -EIO : 0;
}

/* fsync runs the metadata log's sync inside data_sync, while the segment's is in
 * flight: only when the target has something to sync, and its error is fsync's. */
static int test_sync_overlap(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	uint8_t a[5000];
	memset(a, 'o', sizeof a);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds), calls = 0;
	bool ran = false;
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	CHECK(data_sync(ds, 7, count_call, &calls, &ran) == 0 && !ran && calls == 0, "a clean target ran it");
	CHECK(data_write(ds, 7, 90, 0, 0, a, sizeof a, false) == 0, "write");
	CHECK(data_sync(ds, 7, count_call, &calls, &ran) == 0 && ran && calls == 1, "a written target did not run it");
	ran = false;
	CHECK(data_write(ds, 7, 90, 1, 0, a, sizeof a, false) == 0, "write");
	CHECK(data_sync(ds, 7, count_call, &calls, &ran) == -EIO && ran && calls == 2, "its error was lost");
	data_close(ds);
	return 0;
fail:
	data_close(ds);
	return -1;
}

static int test_writev(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	struct model m;
	model_init(&m);
	uint8_t *bytes = aq_malloc(MCHUNK), *buf = aq_malloc(MCHUNK);
	uint64_t s = 11;
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	for (int round = 0; round < 300; round++) {
		uint32_t idx = rnd(&s) % MNCHUNKS, n = 1 + rnd(&s) % 24, at = 0, used = 0, k = 0;
		struct aq_extent ext[24];
		for (uint32_t i = 0; i < n && at < MCHUNK; i++) {
			uint32_t off = at + rnd(&s) % (round % 3 == 0 ? 200000 : 5000);
			if (off >= MCHUNK)
				break;
			uint32_t len = 1 + rnd(&s) % MIN(MCHUNK - off, 40000u);
			ext[k++] = (struct aq_extent){off, len};
			fill_random(&s, bytes + used, len);
			memcpy(m.data[idx] + off, bytes + used, len);
			used += len;
			at = off + len + (rnd(&s) % 2); /* sometimes adjacent */
		}
		rc = data_writev(ds, 7, 21, idx, ext, k, bytes, rnd(&s) % 8 == 0);
		CHECK(rc == 0, "round %d: writev of %u extents: %s", round, k, aq_strerror(rc));
		if (round % 50 == 49) {
			rc = model_check(ds, 7, 21, &m, buf);
			CHECK(rc == 0, "round %d: contents differ (%s)", round, aq_strerror(rc));
		}
	}
	struct aq_extent bad[][2] = {
		{{100, 10}, {105, 10}}, /* overlapping */
		{{200, 10}, {100, 10}}, /* unsorted */
		{{100, 0}, {200, 10}},  /* empty */
		{{0, 10}, {DATA_CHUNK_MAX - 5, 10}}, /* past the chunk */
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		rc = data_writev(ds, 7, 21, 0, bad[i], 2, bytes, false);
		CHECK(rc == -EINVAL, "malformed set %zu: %s", i, aq_strerror(rc));
	}
	rc = model_check(ds, 7, 21, &m, buf);
	CHECK(rc == 0, "after the malformed sets: %s", aq_strerror(rc));
	data_close(ds);
	model_free(&m);
	free(bytes);
	free(buf);
	return 0;
fail:
	data_close(ds);
	model_free(&m);
	free(bytes);
	free(buf);
	return -1;
}

static int test_truncate_delete(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	uint8_t *a[4], *rb = aq_malloc(MCHUNK);
	uint64_t s = 11;
	case_dir(dir, sizeof dir);
	for (int i = 0; i < 4; i++) {
		a[i] = aq_malloc(MCHUNK);
		fill_random(&s, a[i], MCHUNK);
	}
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	for (uint32_t i = 0; i < 4; i++) {
		rc = data_write(ds, 7, 200, i, 0, a[i], MCHUNK, false);
		CHECK(rc == 0, "write: %s", aq_strerror(rc));
	}
	rc = data_write(ds, 7, 201, 0, 0, a[0], 1000, false); /* another file, untouched */
	CHECK(rc == 0, "write: %s", aq_strerror(rc));
	/* A punch drops chunk 2 alone: a hole between chunks 1 and 3 (then written back). */
	struct data_target_stat before, st;
	CHECK(data_stat(ds, 7, &before) == 0 && before.chunks == 5, "chunks %llu", (unsigned long long)before.chunks);
	rc = data_punch(ds, 7, 200, 2);
	CHECK(rc == 0, "punch: %s", aq_strerror(rc));
	CHECK(data_punch(ds, 7, 200, 2) == 0, "a punch of a hole");
	for (uint32_t i = 1; i < 4; i++) {
		rc = data_read(ds, 7, 200, i, 0, rb, MCHUNK);
		CHECK(rc == 0 && (i == 2 ? all_bytes(rb, MCHUNK, 0) : memcmp(rb, a[i], MCHUNK) == 0),
		      "after the punch, chunk %u", i);
	}
	CHECK(data_stat(ds, 7, &st) == 0 && st.chunks == 4 && st.live_bytes == before.live_bytes - data_rec_size(MCHUNK),
	      "after the punch: chunks %llu live %llu", (unsigned long long)st.chunks, (unsigned long long)st.live_bytes);
	rc = data_write(ds, 7, 200, 2, 0, a[2], MCHUNK, false);
	CHECK(rc == 0, "write: %s", aq_strerror(rc));
	/* A sync does work only when something was written or dropped since the last one
	 * (an fsync asks every target): appends and index changes both count. */
	CHECK(data_sync(ds, 7, NULL, NULL, NULL) == 0 && data_stat(ds, 7, &before) == 0, "sync");
	CHECK(data_sync(ds, 7, NULL, NULL, NULL) == 0 && data_stat(ds, 7, &st) == 0 && st.syncs == before.syncs,
	      "a sync after a sync: %llu -> %llu", (unsigned long long)before.syncs, (unsigned long long)st.syncs);
	CHECK(data_punch(ds, 7, 201, 5) == 0 && data_sync(ds, 7, NULL, NULL, NULL) == 0 && data_stat(ds, 7, &st) == 0 &&
		      st.syncs == before.syncs, "a punch of nothing changes nothing");
	CHECK(data_punch(ds, 7, 200, 2) == 0 && data_sync(ds, 7, NULL, NULL, NULL) == 0 && data_stat(ds, 7, &st) == 0 &&
		      st.syncs == before.syncs + 1, "a sync after an index change");
	rc = data_write(ds, 7, 200, 2, 0, a[2], MCHUNK, false);
	CHECK(rc == 0 && data_sync(ds, 7, NULL, NULL, NULL) == 0 && data_stat(ds, 7, &st) == 0 && st.syncs == before.syncs + 2,
	      "a sync after a write");
	/* Cut in the middle of chunk 1. */
	rc = data_truncate(ds, 7, 200, MCHUNK + MCHUNK / 2 + 3, MCHUNK);
	CHECK(rc == 0, "truncate: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 200, 0, 0, rb, MCHUNK);
	CHECK(rc == 0 && memcmp(rb, a[0], MCHUNK) == 0, "chunk 0 must be intact");
	rc = data_read(ds, 7, 200, 1, 0, rb, MCHUNK);
	CHECK(rc == 0 && memcmp(rb, a[1], MCHUNK / 2 + 3) == 0, "chunk 1 head must be intact");
	CHECK(all_bytes(rb + MCHUNK / 2 + 3, MCHUNK / 2 - 3, 0), "chunk 1 past the cut must be zeros");
	for (uint32_t i = 2; i < 4; i++) {
		rc = data_read(ds, 7, 200, i, 0, rb, MCHUNK);
		CHECK(rc == 0 && all_bytes(rb, MCHUNK, 0), "chunk %u must be gone", i);
	}
	CHECK(data_stat(ds, 7, &st) == 0 && st.chunks == 3, "chunks after truncate %llu",
	      (unsigned long long)st.chunks);
	/* Extending again by a write far out reads zeros in between. */
	uint8_t w[10];
	memset(w, 0x77, sizeof w);
	rc = data_write(ds, 7, 200, 1, 900000, w, sizeof w, false);
	CHECK(rc == 0, "extend: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 200, 1, 0, rb, MCHUNK);
	CHECK(rc == 0 && memcmp(rb, a[1], MCHUNK / 2 + 3) == 0 &&
		      all_bytes(rb + MCHUNK / 2 + 3, 900000 - (MCHUNK / 2 + 3), 0) && all_bytes(rb + 900000, 10, 0x77) &&
		      all_bytes(rb + 900010, MCHUNK - 900010, 0),
	      "re-extended chunk 1");
	/* Cut at a chunk boundary drops chunk 1 entirely. */
	rc = data_truncate(ds, 7, 200, MCHUNK, MCHUNK);
	CHECK(rc == 0, "truncate 2: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 200, 1, 0, rb, MCHUNK);
	CHECK(rc == 0 && all_bytes(rb, MCHUNK, 0), "chunk 1 must be gone");
	rc = data_delete(ds, 7, 200);
	CHECK(rc == 0, "delete: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 200, 0, 0, rb, MCHUNK);
	CHECK(rc == 0 && all_bytes(rb, MCHUNK, 0), "chunk 0 must be gone after delete");
	rc = data_read(ds, 7, 201, 0, 0, rb, 1000);
	CHECK(rc == 0 && memcmp(rb, a[0], 1000) == 0, "other file must be intact");
	CHECK(data_stat(ds, 7, &st) == 0 && st.chunks == 1 && st.live_bytes == DATA_REC_ALIGN,
	      "after delete: chunks %llu live %llu", (unsigned long long)st.chunks, (unsigned long long)st.live_bytes);
	/* Survives a reopen. */
	data_close(ds);
	ds = NULL;
	rc = data_open(dir, false, &opts1, &ds);
	CHECK(rc == 0, "reopen: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 200, 0, 0, rb, MCHUNK);
	CHECK(rc == 0 && all_bytes(rb, MCHUNK, 0), "chunk 0 must stay gone after reopen");
	CHECK(data_stat(ds, 7, &st) == 0 && st.chunks == 1, "chunks after reopen %llu", (unsigned long long)st.chunks);
	data_close(ds);
	for (int i = 0; i < 4; i++)
		free(a[i]);
	free(rb);
	return 0;
fail:
	data_close(ds);
	for (int i = 0; i < 4; i++)
		free(a[i]);
	free(rb);
	return -1;
}

static int test_corrupt(void)
{
	char dir[300], path[400];
	struct data_store *ds = NULL;
	uint32_t len = 3 * DATA_BLOCK_SIZE;
	uint8_t *a = aq_malloc(len), *rb = aq_malloc(len);
	uint64_t s = 3;
	fill_random(&s, a, len);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	rc = data_write(ds, 7, 300, 0, 0, a, len, true);
	CHECK(rc == 0, "write: %s", aq_strerror(rc));
	struct data_entry e;
	bool found = false;
	rc = data_index_get(data_target_get(ds, 7), 300, 0, &e, &found);
	CHECK(rc == 0 && found, "index entry");
	/* Flip a byte in block 1 behind the store's back. */
	snprintf(path, sizeof path, "%s/t0/seg-%08u", dir, e.seg);
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0, "open %s", path);
	uint64_t at = e.off + DATA_REC_HDR_SIZE + DATA_BLOCK_SIZE + 10;
	uint8_t byte;
	CHECK(pread(fd, &byte, 1, at) == 1, "pread");
	byte ^= 0x01;
	CHECK(pwrite(fd, &byte, 1, at) == 1, "pwrite");
	close(fd);
	rc = data_read(ds, 7, 300, 0, 0, rb, len);
	CHECK(rc == -AQ_ECORRUPT, "whole read must be -AQ_ECORRUPT, got %s", aq_strerror(rc));
	rc = data_read(ds, 7, 300, 0, DATA_BLOCK_SIZE + 5, rb, 1);
	CHECK(rc == -AQ_ECORRUPT, "read in block 1 must be -AQ_ECORRUPT, got %s", aq_strerror(rc));
	rc = data_read(ds, 7, 300, 0, 0, rb, DATA_BLOCK_SIZE);
	CHECK(rc == 0 && memcmp(rb, a, DATA_BLOCK_SIZE) == 0, "block 0 must read fine");
	rc = data_read(ds, 7, 300, 0, 2 * DATA_BLOCK_SIZE, rb, DATA_BLOCK_SIZE);
	CHECK(rc == 0 && memcmp(rb, a + 2 * DATA_BLOCK_SIZE, DATA_BLOCK_SIZE) == 0, "block 2 must read fine");
	/* A partial write that needs the corrupt block refuses; one that does not works. */
	uint8_t w[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
	rc = data_write(ds, 7, 300, 0, DATA_BLOCK_SIZE + 100, w, sizeof w, false);
	CHECK(rc == -AQ_ECORRUPT, "RMW over the corrupt block must fail, got %s", aq_strerror(rc));
	/* A whole-chunk rewrite needs no old data: it heals the chunk. */
	rc = data_write(ds, 7, 300, 0, 0, a, len, false);
	CHECK(rc == 0, "rewrite: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 300, 0, 0, rb, len);
	CHECK(rc == 0 && memcmp(rb, a, len) == 0, "rewritten chunk must read fine");
	data_close(ds);
	free(a);
	free(rb);
	return 0;
fail:
	data_close(ds);
	free(a);
	free(rb);
	return -1;
}

/* Drops target t0's segment files from the page cache, so that the next reads are cold. */
static void evict_segments(const char *dir)
{
	char path[400];
	for (uint32_t no = 1; no < 64; no++) {
		snprintf(path, sizeof path, "%s/t0/seg-%08u", dir, no);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		fdatasync(fd);
		posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		close(fd);
	}
}

static uint64_t direct_reads(struct data_store *ds)
{
	struct data_target_stat st;
	return data_stat(ds, 7, &st) == 0 ? st.direct_reads : UINT64_MAX;
}

/* Whether the file system of target 0's first segment takes O_DIRECT at all (tmpfs
 * before Linux 6.6 does not). */
static bool seg1_takes_direct(const char *dir)
{
	char path[400];
	snprintf(path, sizeof path, "%s/t0/seg-%08u", dir, 1u);
	int fd = open(path, O_RDWR | O_DIRECT);
	if (fd >= 0)
		close(fd);
	return fd >= 0;
}

static uint64_t direct_writes(struct data_store *ds)
{
	struct data_target_stat st;
	return data_stat(ds, 7, &st) == 0 ? st.direct_writes : UINT64_MAX;
}

/* New records of DATA_DIRECT_WRITE_MIN bytes or more are appended with O_DIRECT;
 * smaller ones, and rewrites around old bytes, through the page cache, in the same
 * segment one after another: every one reads back, from the page cache and from the
 * disk, before and after a reopen, and so does a small overwrite of a big one (an
 * overlay). */
static int test_direct_writes(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	uint32_t big = 3 * DATA_DIRECT_WRITE_MIN / 2, small = 100000;
	uint8_t *a = aq_malloc(big), *b = aq_malloc(small), *rb = aq_malloc(big);
	uint64_t s = 11;
	fill_random(&s, a, big);
	fill_random(&s, b, small);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	CHECK(data_write(ds, 7, 500, 0, 0, b, small, false) == 0, "small write");
	bool can_direct = seg1_takes_direct(dir);
	uint64_t d0 = direct_writes(ds);
	CHECK(d0 == 0, "a %u-byte record went direct", small);
	CHECK(data_write(ds, 7, 500, 1, 0, a, big, false) == 0, "big write");
	CHECK(direct_writes(ds) == (can_direct ? 1 : 0), "a %u-byte record must go direct", big);
	CHECK(data_write(ds, 7, 500, 2, 0, b, small, false) == 0, "small write after");
	CHECK(data_write(ds, 7, 500, 1, 5000, b, 3000, false) == 0, "small overwrite");
	memcpy(a + 5000, b, 3000);
	CHECK(direct_writes(ds) == (can_direct ? 1 : 0), "an overlay went direct");
	/* A rewrite around old bytes (its first and last blocks read back) stays buffered: a
	 * random writer comes back to the chunk. A whole new version goes direct again. */
	fill_random(&s, a + 100, big - 200);
	CHECK(data_write(ds, 7, 500, 1, 100, a + 100, big - 200, false) == 0, "rewrite around old bytes");
	CHECK(direct_writes(ds) == (can_direct ? 1 : 0), "a read-modify-write went direct");
	fill_random(&s, a, big);
	CHECK(data_write(ds, 7, 500, 3, 0, a, big, false) == 0 && data_write(ds, 7, 500, 1, 0, a, big, false) == 0,
	      "whole rewrite");
	CHECK(direct_writes(ds) == (can_direct ? 3 : 0), "whole new versions must go direct");
	for (int round = 0; round < 3; round++) {
		if (round == 1)
			evict_segments(dir);
		if (round == 2) {
			data_close(ds);
			ds = NULL;
			rc = data_open(dir, false, &opts1, &ds);
			CHECK(rc == 0, "reopen: %s", aq_strerror(rc));
		}
		CHECK(data_read(ds, 7, 500, 0, 0, rb, small) == 0 && memcmp(rb, b, small) == 0, "chunk 0, round %d", round);
		CHECK(data_read(ds, 7, 500, 1, 0, rb, big) == 0 && memcmp(rb, a, big) == 0, "chunk 1, round %d", round);
		CHECK(data_read(ds, 7, 500, 2, 0, rb, small) == 0 && memcmp(rb, b, small) == 0, "chunk 2, round %d", round);
		CHECK(data_read(ds, 7, 500, 3, 0, rb, big) == 0 && memcmp(rb, a, big) == 0, "chunk 3, round %d", round);
	}
	data_close(ds);
	free(a);
	free(b);
	free(rb);
	return 0;
fail:
	data_close(ds);
	free(a);
	free(b);
	free(rb);
	return -1;
}

/* Cold reads go through O_DIRECT when they pay (aligned buffers, data at byte 64 of the
 * record): big ones always, small ones (at least direct_min) only under a deep queue.
 * Whole, partial and past-the-end reads give the same bytes as buffered ones,
 * data_read_alloc leaves room before the data, a flipped byte is caught, and
 * --direct-read-min off keeps every read buffered. */
static int test_direct(void)
{
	char dir[300], path[400];
	struct data_store *ds = NULL;
	uint32_t len = 10 * DATA_BLOCK_SIZE + 1000; /* past direct_min: read O_DIRECT */
	uint8_t *a = aq_malloc(len), *rb = aq_malloc(len + DATA_BLOCK_SIZE);
	void *mem = NULL;
	uint64_t s = 5;
	fill_random(&s, a, len);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &opts1, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	rc = data_write(ds, 7, 400, 0, 0, a, len, true);
	CHECK(rc == 0, "write: %s", aq_strerror(rc));
	bool can_direct = seg1_takes_direct(dir);
	snprintf(path, sizeof path, "%s/t0/seg-%08u", dir, 1u);

	evict_segments(dir);
	uint64_t d0 = direct_reads(ds);
	rc = data_read(ds, 7, 400, 0, 0, rb, len);
	CHECK(rc == 0 && memcmp(rb, a, len) == 0, "whole cold read: %s", aq_strerror(rc));
	CHECK(!can_direct || direct_reads(ds) == d0 + 1, "a cold read of 10 blocks must use O_DIRECT");

	/* From inside block 1 to past the chunk's end: the tail reads as zeros. */
	evict_segments(dir);
	uint32_t off = DATA_BLOCK_SIZE + 77, n = len - DATA_BLOCK_SIZE + 5000;
	memset(rb, 0xee, n);
	rc = data_read(ds, 7, 400, 0, off, rb, n);
	CHECK(rc == 0, "partial read: %s", aq_strerror(rc));
	CHECK(memcmp(rb, a + off, len - off) == 0, "partial read: wrong bytes");
	for (uint32_t i = len - off; i < n; i++)
		CHECK(rb[i] == 0, "byte %u past the end reads %02x, not 0", i, rb[i]);

	/* data_read_alloc: the bytes, and head writable bytes before them. */
	evict_segments(dir);
	uint8_t *data = NULL;
	rc = data_read_alloc(ds, 7, 400, 0, 5, 600000, 4, &mem, &data);
	CHECK(rc == 0 && data && memcmp(data, a + 5, 600000) == 0, "alloc read: %s", aq_strerror(rc));
	CHECK(data - (uint8_t *)mem >= 4, "no head room before the data");
	memset(data - 4, 0xab, 4);
	data_buf_free(mem);
	mem = NULL;
	rc = data_read_alloc(ds, 7, 401, 0, 0, 70000, 4, &mem, &data);
	CHECK(rc == 0 && data && data[0] == 0 && data[69999] == 0, "missing chunk reads as zeros");
	data_buf_free(mem);
	mem = NULL;
	CHECK(!can_direct || direct_reads(ds) == d0 + 3, "big cold reads must use O_DIRECT");

	/* A cold read of a whole block (direct_min) goes direct, also alone; a chunk smaller
	 * than direct_min (5000 bytes) stays buffered. */
	evict_segments(dir);
	rc = data_read(ds, 7, 400, 0, 100, rb, 1000);
	CHECK(rc == 0 && memcmp(rb, a + 100, 1000) == 0, "small read in a whole block");
	CHECK(!can_direct || direct_reads(ds) == d0 + 4, "a cold one-block read must use O_DIRECT");
	rc = data_write(ds, 7, 402, 0, 0, a, 5000, true);
	CHECK(rc == 0, "write: %s", aq_strerror(rc));
	evict_segments(dir);
	rc = data_read(ds, 7, 402, 0, 100, rb, 1000);
	CHECK(rc == 0 && memcmp(rb, a + 100, 1000) == 0, "small chunk read");
	CHECK(!can_direct || direct_reads(ds) == d0 + 4, "a 5000-byte chunk must stay buffered");

	/* A flipped byte in block 2, seen only by a read that goes to the disk. */
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0, "open %s", path);
	struct data_entry e;
	bool found = false;
	rc = data_index_get(data_target_get(ds, 7), 400, 0, &e, &found);
	CHECK(rc == 0 && found && e.seg == 1, "index entry");
	uint64_t at = e.off + DATA_REC_HDR_SIZE + 2 * DATA_BLOCK_SIZE + 3;
	uint8_t byte;
	CHECK(pread(fd, &byte, 1, at) == 1, "pread");
	byte ^= 0x80;
	CHECK(pwrite(fd, &byte, 1, at) == 1, "pwrite");
	close(fd);
	evict_segments(dir);
	uint64_t d1 = direct_reads(ds);
	rc = data_read(ds, 7, 400, 0, 0, rb, len);
	CHECK(rc == -AQ_ECORRUPT, "a cold direct read over the flipped byte must fail, got %s", aq_strerror(rc));
	CHECK(direct_reads(ds) == d1, "a failed read is not counted");
	rc = data_read_alloc(ds, 7, 400, 0, 0, len, 4, &mem, &data);
	CHECK(rc == -AQ_ECORRUPT && !mem, "alloc read over the flipped byte must fail, got %s", aq_strerror(rc));
	rc = data_read(ds, 7, 400, 0, 0, rb, 2 * DATA_BLOCK_SIZE);
	CHECK(rc == 0 && memcmp(rb, a, 2 * DATA_BLOCK_SIZE) == 0, "blocks 0-1 still read");
	data_close(ds);
	ds = NULL;

	/* Off: the same cold read stays buffered (and still catches the flip). */
	struct data_options off_opts = opts1;
	off_opts.direct_min = UINT32_MAX;
	rc = data_open(dir, false, &off_opts, &ds);
	CHECK(rc == 0, "reopen: %s", aq_strerror(rc));
	evict_segments(dir);
	rc = data_read(ds, 7, 400, 0, 0, rb, 2 * DATA_BLOCK_SIZE);
	CHECK(rc == 0 && memcmp(rb, a, 2 * DATA_BLOCK_SIZE) == 0, "buffered cold read");
	rc = data_read(ds, 7, 400, 0, 0, rb, len);
	CHECK(rc == -AQ_ECORRUPT, "buffered read over the flipped byte must fail, got %s", aq_strerror(rc));
	CHECK(direct_reads(ds) == 0, "direct_min UINT32_MAX must never read with O_DIRECT");
	data_close(ds);
	free(a);
	free(rb);
	return 0;
fail:
	data_buf_free(mem);
	data_close(ds);
	free(a);
	free(rb);
	return -1;
}


static int test_compact(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	struct data_options o = {.ntargets = 1, .target_ids = ids1, .segment_bytes = SMALL_SEG};
	uint32_t clen = 256 << 10;
	uint8_t *cur[10], *rb = aq_malloc(clen);
	uint64_t s = 5;
	for (int i = 0; i < 10; i++)
		cur[i] = aq_malloc(clen);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &o, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	uint64_t written = 0;
	for (int round = 0; round < 12; round++) {
		for (uint32_t i = 0; i < 10; i++) {
			fill_random(&s, cur[i], clen);
			rc = data_write(ds, 7, 400, i, 0, cur[i], clen, false);
			CHECK(rc == 0, "write: %s", aq_strerror(rc));
			written += data_rec_size(clen);
		}
	}
	struct data_target_stat before, after;
	CHECK(data_stat(ds, 7, &before) == 0, "stat");
	int64_t got = data_compact(ds, 7, 0.5);
	CHECK(got >= 0, "compact: %s", aq_strerror((int)got));
	CHECK(data_stat(ds, 7, &after) == 0, "stat");
	/* The background compactor may have done part of the work already: judge the end
	 * state, not the return value. Left: the live records plus at most one active
	 * segment's worth of dead ones. */
	CHECK(after.used_bytes <= after.live_bytes + SMALL_SEG && after.used_bytes < written / 2,
	      "used %llu live %llu written %llu", (unsigned long long)after.used_bytes,
	      (unsigned long long)after.live_bytes, (unsigned long long)written);
	CHECK(after.live_bytes == 10 * data_rec_size(clen) && after.chunks == 10, "live %llu",
	      (unsigned long long)after.live_bytes);
	for (uint32_t i = 0; i < 10; i++) {
		rc = data_read(ds, 7, 400, i, 0, rb, clen);
		CHECK(rc == 0 && memcmp(rb, cur[i], clen) == 0, "chunk %u after compaction", i);
	}
	data_close(ds);
	ds = NULL;
	rc = data_open(dir, false, &o, &ds);
	CHECK(rc == 0, "reopen: %s", aq_strerror(rc));
	CHECK(data_stat(ds, 7, &after) == 0 && after.live_bytes == 10 * data_rec_size(clen), "live after reopen");
	for (uint32_t i = 0; i < 10; i++) {
		rc = data_read(ds, 7, 400, i, 0, rb, clen);
		CHECK(rc == 0 && memcmp(rb, cur[i], clen) == 0, "chunk %u after compaction+reopen", i);
	}
	data_close(ds);
	for (int i = 0; i < 10; i++)
		free(cur[i]);
	free(rb);
	return 0;
fail:
	data_close(ds);
	for (int i = 0; i < 10; i++)
		free(cur[i]);
	free(rb);
	return -1;
}

static int test_enospc(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	struct data_options o = {.ntargets = 1, .target_ids = ids1, .capacity_bytes = 8ull << 20};
	uint32_t clen = 300000;
	enum { MAXC = 64 };
	uint8_t *c[MAXC] = {0}, *rb = aq_malloc(clen);
	uint64_t s = 17;
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &o, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	int n = 0;
	for (; n < MAXC; n++) {
		c[n] = aq_malloc(clen);
		fill_random(&s, c[n], clen);
		rc = data_write(ds, 7, 500, (uint32_t)n, 0, c[n], clen, n % 2 == 0);
		if (rc)
			break;
	}
	CHECK(rc == -ENOSPC, "filling must end in -ENOSPC, got %s after %d chunks", aq_strerror(rc), n);
	CHECK(n >= 20, "only %d chunks fit in 8 MiB", n);
	struct data_target_stat st, st2;
	CHECK(data_stat(ds, 7, &st) == 0 && st.used_bytes <= o.capacity_bytes && st.chunks == (uint64_t)n,
	      "used %llu chunks %llu", (unsigned long long)st.used_bytes, (unsigned long long)st.chunks);
	/* The failed chunk is not visible at all. */
	rc = data_read(ds, 7, 500, (uint32_t)n, 0, rb, clen);
	CHECK(rc == 0 && all_bytes(rb, clen, 0), "failed chunk must read zeros");
	/* An overwrite on a full target fails and leaves the old version. */
	uint8_t *w = aq_malloc(clen);
	memset(w, 0xEE, clen);
	rc = data_write(ds, 7, 500, 0, 0, w, clen, true);
	free(w);
	CHECK(rc == -ENOSPC, "overwrite on a full target: %s", aq_strerror(rc));
	CHECK(data_stat(ds, 7, &st2) == 0 && st2.used_bytes == st.used_bytes, "used changed on ENOSPC");
	for (int i = 0; i < n; i++) {
		rc = data_read(ds, 7, 500, (uint32_t)i, 0, rb, clen);
		CHECK(rc == 0 && memcmp(rb, c[i], clen) == 0, "chunk %d after ENOSPC", i);
	}
	/* Truncation still works on a full target, and deleting frees space again. */
	rc = data_truncate(ds, 7, 500, 1000, clen);
	CHECK(rc == 0, "truncate on a full target: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 500, 0, 0, rb, clen);
	CHECK(rc == 0 && memcmp(rb, c[0], 1000) == 0 && all_bytes(rb + 1000, clen - 1000, 0), "truncated chunk 0");
	data_close(ds);
	ds = NULL;
	rc = data_open(dir, false, &o, &ds);
	CHECK(rc == 0, "reopen: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 500, 0, 0, rb, clen);
	CHECK(rc == 0 && memcmp(rb, c[0], 1000) == 0 && all_bytes(rb + 1000, clen - 1000, 0), "chunk 0 after reopen");
	data_close(ds);
	for (int i = 0; i < MAXC; i++)
		free(c[i]);
	free(rb);
	return 0;
fail:
	data_close(ds);
	for (int i = 0; i < MAXC; i++)
		free(c[i]);
	free(rb);
	return -1;
}

struct worker {
	struct data_store *ds;
	uint64_t ino;
	struct model m;
	int rc;
};

static void *writer_main(void *arg)
{
	struct worker *w = arg;
	uint64_t s = 1000 + w->ino;
	uint8_t *buf = aq_malloc(MCHUNK);
	for (int i = 0; i < 10 && !w->rc; i++) {
		w->rc = model_write_random(w->ds, 7, w->ino, &w->m, &s, 5, buf);
		if (!w->rc)
			w->rc = model_check(w->ds, 7, w->ino, &w->m, buf);
	}
	free(buf);
	return NULL;
}

static bool compactor_stop; /* read and written with __atomic */
static void *compact_main(void *arg)
{
	struct data_store *ds = arg;
	while (!__atomic_load_n(&compactor_stop, __ATOMIC_RELAXED)) {
		int64_t r = data_compact(ds, 7, 0.9);
		if (r < 0 && r != -ENOSPC)
			return (void *)1;
		usleep(1000);
	}
	return NULL;
}

static int test_concurrent(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	struct data_options o = {.ntargets = 1, .target_ids = ids1, .segment_bytes = SMALL_SEG};
	struct worker w[4];
	pthread_t th[4], ct;
	uint8_t *buf = aq_malloc(MCHUNK);
	memset(w, 0, sizeof w);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &o, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	__atomic_store_n(&compactor_stop, false, __ATOMIC_RELAXED);
	CHECK(pthread_create(&ct, NULL, compact_main, ds) == 0, "thread");
	for (int i = 0; i < 4; i++) {
		w[i].ds = ds;
		w[i].ino = 600 + i;
		model_init(&w[i].m);
		CHECK(pthread_create(&th[i], NULL, writer_main, &w[i]) == 0, "thread");
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	__atomic_store_n(&compactor_stop, true, __ATOMIC_RELAXED);
	void *cres;
	pthread_join(ct, &cres);
	for (int i = 0; i < 4; i++)
		CHECK(w[i].rc == 0, "writer %d: %s", i, aq_strerror(w[i].rc));
	CHECK(cres == NULL, "concurrent compaction failed");
	data_close(ds);
	ds = NULL;
	rc = data_open(dir, false, &o, &ds);
	CHECK(rc == 0, "reopen: %s", aq_strerror(rc));
	for (int i = 0; i < 4; i++) {
		rc = model_check(ds, 7, w[i].ino, &w[i].m, buf);
		CHECK(rc == 0, "writer %d after reopen: %s", i, aq_strerror(rc));
	}
	data_close(ds);
	for (int i = 0; i < 4; i++)
		model_free(&w[i].m);
	free(buf);
	return 0;
fail:
	data_close(ds);
	free(buf);
	return -1;
}

/* Two targets in one store are independent; ids map to their own directories. */
static int test_two_targets(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	static const uint32_t ids[] = {40, 41};
	struct data_options o = {.ntargets = 2, .target_ids = ids};
	uint8_t a[100], b[100], rb[100];
	memset(a, 1, sizeof a);
	memset(b, 2, sizeof b);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &o, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	CHECK(data_write(ds, 40, 1, 0, 0, a, sizeof a, false) == 0, "write 40");
	CHECK(data_write(ds, 41, 1, 0, 0, b, sizeof b, false) == 0, "write 41");
	CHECK(data_sync(ds, 40, NULL, NULL, NULL) == 0 && data_sync(ds, 41, NULL, NULL, NULL) == 0, "sync");
	CHECK(data_read(ds, 40, 1, 0, 0, rb, sizeof rb) == 0 && memcmp(rb, a, sizeof a) == 0, "read 40");
	CHECK(data_read(ds, 41, 1, 0, 0, rb, sizeof rb) == 0 && memcmp(rb, b, sizeof b) == 0, "read 41");
	CHECK(data_write(ds, 7, 1, 0, 0, a, sizeof a, false) == -AQ_ENOT_OWNER, "unknown target");
	data_close(ds);
	return 0;
fail:
	data_close(ds);
	return -1;
}

static int test_format(void)
{
	struct data_entry e = {.seg = 3, .off = 8192, .length = DATA_BLOCK_SIZE + 1, .version = 9}, d;
	memset(&d, 0, sizeof d);
	e.crc[0] = 0x11223344;
	e.crc[1] = 0x55667788;
	uint8_t v[DATA_VAL_MAX];
	size_t n = data_val_encode(v, &e);
	CHECK(n == DATA_VAL_FIXED + 8, "encoded %zu", n);
	CHECK(data_val_decode(v, n, &d) == 0 && d.seg == 3 && d.off == 8192 && d.length == e.length &&
		      d.version == 9 && d.crc[0] == e.crc[0] && d.crc[1] == e.crc[1],
	      "round trip");
	CHECK(data_val_decode(v, n - 1, &d) == -EIO, "short value must be -EIO");
	CHECK(data_val_decode(v, n + 4, &d) == -EIO, "long value must be -EIO");
	v[0] = 9;
	CHECK(data_val_decode(v, n, &d) == -EIO, "unknown format must be -EIO");
	/* a chunk with a copy in S3: format 2, also without a flash copy (segment 0) */
	e.obj = 77;
	e.obj_off = 5000;
	n = data_val_encode(v, &e);
	CHECK(n == DATA_VAL_FIXED_TIER + 8 && v[0] == DATA_VAL_FORMAT_TIER, "tier encoded %zu", n);
	CHECK(data_val_decode(v, n, &d) == 0 && d.seg == 3 && d.obj == 77 && d.obj_off == 5000 &&
		      d.crc[1] == e.crc[1], "tier round trip");
	e.seg = 0;
	e.off = 0;
	n = data_val_encode(v, &e);
	CHECK(data_val_decode(v, n, &d) == 0 && d.seg == 0 && d.obj == 77, "cold-only round trip");
	put_le64(v + 25, 0);
	CHECK(data_val_decode(v, n, &d) == -EIO, "format 2 without an object must be -EIO");
	e.obj = 0;
	e.seg = 3;
	n = data_val_encode(v, &e);
	put_le32(v + 1, 0);
	CHECK(data_val_decode(v, n, &d) == -EIO, "format 1 without a segment must be -EIO");
	/* format 3: a map of blocks over records */
	memset(&e, 0, sizeof e);
	e.length = 3 * DATA_BLOCK_SIZE + 5;
	e.version = 12;
	e.nrec = 2;
	e.rec[0] = (struct data_rec_ref){.seg = 4, .off = 4096, .length = e.length};
	e.rec[1] = (struct data_rec_ref){.seg = 6, .off = 8192, .length = DATA_BLOCK_SIZE + 5};
	for (uint32_t b = 0; b < 4; b++) {
		e.brec[b] = b >= 2;
		e.bpos[b] = b >= 2 ? (uint8_t)(b - 2) : (uint8_t)b;
		e.crc[b] = 100 + b;
	}
	n = data_val_encode(v, &e);
	CHECK(n == DATA_VAL_FIXED_MAP + 2 * DATA_VAL_REC_REF + 6 * 4 && v[0] == DATA_VAL_FORMAT_MAP, "map encoded %zu", n);
	CHECK(data_val_decode(v, n, &d) == 0 && d.nrec == 2 && d.seg == 4 && d.off == 4096 && d.length == e.length &&
		      d.version == 12 && d.rec[1].seg == 6 && d.rec[1].off == 8192 && d.brec[3] == 1 && d.bpos[3] == 1 &&
		      d.bpos[1] == 1 && d.crc[3] == 103 && d.obj == 0,
	      "map round trip");
	CHECK(data_val_decode(v, n - 1, &d) == -EIO, "short map must be -EIO");
	e.rec[1].length = DATA_BLOCK_SIZE + 4; /* the last block would end past its record */
	n = data_val_encode(v, &e);
	CHECK(data_val_decode(v, n, &d) == -EIO, "a block past its record must be -EIO");
	e.rec[1].length = DATA_BLOCK_SIZE + 5;
	n = data_val_encode(v, &e);
	v[DATA_VAL_FIXED_MAP + 2 * DATA_VAL_REC_REF + 2 * 3] = 2; /* block 3 in record 2 of 2 */
	CHECK(data_val_decode(v, n, &d) == -EIO, "a block in no record must be -EIO");
	n = data_val_encode(v, &e);
	v[13] = 0;
	CHECK(data_val_decode(v, n, &d) == -EIO, "a map of no records must be -EIO");
	struct data_rec_hdr h = {.ino = 1, .idx = 2, .length = 3, .version = 4, .flags = DATA_REC_FLAG_OVERLAY}, hd;
	uint8_t hb[DATA_REC_HDR_SIZE];
	data_hdr_encode(hb, &h);
	CHECK(data_hdr_decode(hb, &hd) == 0 && hd.ino == 1 && hd.idx == 2 && hd.length == 3 && hd.version == 4 &&
		      hd.flags == DATA_REC_FLAG_OVERLAY,
	      "header round trip");
	hb[9] ^= 1;
	CHECK(data_hdr_decode(hb, &hd) == -EIO, "damaged header must be -EIO");
	return 0;
fail:
	return -1;
}

/* kill -9 in the middle of synced writes: every acknowledged write reads back after
 * reopen, and the store keeps working. */
static int test_kill9(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	uint32_t clen = 100000;
	uint8_t *rb = aq_malloc(clen), *exp = aq_malloc(clen);
	int pfd[2] = {-1, -1};
	case_dir(dir, sizeof dir);
	CHECK(pipe(pfd) == 0, "pipe");
	pid_t pid = fork();
	CHECK(pid >= 0, "fork");
	if (pid == 0) {
		close(pfd[0]);
		struct data_options o = {.ntargets = 1, .target_ids = ids1, .segment_bytes = SMALL_SEG};
		if (data_open(dir, true, &o, &ds))
			_exit(2);
		uint8_t *b = aq_malloc(clen);
		for (uint32_t i = 0;; i++) {
			/* Chunk i % 50 gets generation i: an overwrite whenever i >= 50. */
			memset(b, (int)(i & 0xff), clen);
			put_le32(b, i);
			if (data_write(ds, 7, 700, i % 50, 0, b, clen, true))
				_exit(3);
			if (write(pfd[1], &i, sizeof i) != sizeof i)
				_exit(4);
		}
	}
	close(pfd[1]);
	pfd[1] = -1;
	uint32_t last = UINT32_MAX, v;
	uint64_t t0 = aq_mono_ns();
	while (aq_mono_ns() - t0 < 700000000ull && read(pfd[0], &v, sizeof v) == sizeof v)
		last = v;
	kill(pid, SIGKILL);
	int status;
	waitpid(pid, &status, 0);
	/* Acknowledgements still in the pipe are acknowledged too. */
	while (read(pfd[0], &v, sizeof v) == sizeof v)
		last = v;
	CHECK(WIFSIGNALED(status), "child exited by itself: status %d", status);
	CHECK(last != UINT32_MAX && last >= 60, "child acknowledged only %u writes", last);
	struct data_options o = {.ntargets = 1, .target_ids = ids1, .segment_bytes = SMALL_SEG};
	int rc = data_open(dir, false, &o, &ds);
	CHECK(rc == 0, "reopen after kill -9: %s", aq_strerror(rc));
	for (uint32_t c = 0; c < 50; c++) {
		/* The newest acknowledged generation of chunk c, or the one after it (written
		 * but not yet acknowledged when the kill came). */
		uint32_t g = last - ((last - c) % 50);
		rc = data_read(ds, 7, 700, c, 0, rb, clen);
		CHECK(rc == 0, "read chunk %u: %s", c, aq_strerror(rc));
		uint32_t got = get_le32(rb);
		CHECK(got == g || got == g + 50, "chunk %u has generation %u, acknowledged %u", c, got, g);
		memset(exp, (int)(got & 0xff), clen);
		put_le32(exp, got);
		CHECK(memcmp(rb, exp, clen) == 0, "chunk %u generation %u content", c, got);
	}
	/* Still writable, and the new write does not clobber anything. */
	memset(exp, 0x42, clen);
	rc = data_write(ds, 7, 701, 0, 0, exp, clen, true);
	CHECK(rc == 0, "write after reopen: %s", aq_strerror(rc));
	rc = data_read(ds, 7, 701, 0, 0, rb, clen);
	CHECK(rc == 0 && memcmp(rb, exp, clen) == 0, "read after reopen");
	data_close(ds);
	close(pfd[0]);
	free(rb);
	free(exp);
	return 0;
fail:
	data_close(ds);
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	free(rb);
	free(exp);
	return -1;
}

/* I/O buffers (buf.c): aligned for O_DIRECT, the pooled ones on 2 MiB boundaries, a freed
 * one reused for the next of its class, what is mapped bounded once they are freed (more
 * are freed at once than the pool keeps, so some must be unmapped), and a full pool makes
 * room for a size it does not hold. */
#define BUF_THREADS 16
#define BUF_EACH 10
#define BUF_BIG ((1u << 20) + 8192u) /* a 1 MiB read's span plus its header page */
#define BUF_CHUNK (DATA_CHUNK_MAX + 2 * DATA_REC_ALIGN)

static void *buf_worker(void *arg)
{
	uint8_t **mine = arg;
	for (int i = 0; i < BUF_EACH; i++) {
		mine[i] = data_buf_alloc(BUF_BIG);
		memset(mine[i], i, BUF_BIG);
	}
	return NULL;
}

/* Allocates and frees size twice: true when the second time mapped nothing new. */
static bool buf_reused(size_t size)
{
	uint64_t pooled, mapped0, mapped;
	data_buf_free(data_buf_alloc(size));
	data_buf_stats(&pooled, &mapped0);
	void *p = data_buf_alloc(size);
	data_buf_stats(&pooled, &mapped);
	data_buf_free(p);
	return mapped == mapped0;
}

static int test_buffers(void)
{
	static uint8_t *bufs[BUF_THREADS][BUF_EACH];
	pthread_t th[BUF_THREADS];
	uint64_t pooled, mapped;
	const size_t sizes[] = {1, 4095, DATA_BUF_MAPPED_MIN - 1, DATA_BUF_MAPPED_MIN, 200000, BUF_BIG, BUF_CHUNK};
	data_buf_trim(); /* what the cases before left */
	data_buf_stats(&pooled, &mapped);
	CHECK(pooled == 0 && mapped == 0, "after a trim: %" PRIu64 " bytes pooled, %" PRIu64 " mapped", pooled, mapped);
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		uint8_t *p = data_buf_alloc(sizes[i]);
		CHECK((uintptr_t)p % DATA_REC_ALIGN == 0, "size %zu: %p is not aligned", sizes[i], (void *)p);
		if (sizes[i] >= DATA_BUF_MAPPED_MIN)
			CHECK(((uintptr_t)p - DATA_REC_ALIGN) % (2u << 20) == 0, "size %zu: %p is not on a 2 MiB boundary",
			      sizes[i], (void *)p);
		memset(p, 0xa5, sizes[i]);
		data_buf_free(p);
		if (sizes[i] >= DATA_BUF_MAPPED_MIN)
			CHECK(buf_reused(sizes[i]), "size %zu: a freed buffer was not reused", sizes[i]);
	}
	data_buf_free(NULL);
	data_buf_trim();

	for (int t = 0; t < BUF_THREADS; t++)
		CHECK(pthread_create(&th[t], NULL, buf_worker, bufs[t]) == 0, "thread");
	for (int t = 0; t < BUF_THREADS; t++)
		pthread_join(th[t], NULL);
	data_buf_stats(&pooled, &mapped);
	CHECK(mapped > DATA_BUF_POOL_MAX, "%d buffers in use map only %" PRIu64 " bytes", BUF_THREADS * BUF_EACH, mapped);
	for (int t = 0; t < BUF_THREADS; t++)
		for (int i = 0; i < BUF_EACH; i++) {
			CHECK(bufs[t][i][BUF_BIG - 1] == i, "buffer %d/%d was overwritten", t, i);
			data_buf_free(bufs[t][i]);
		}
	data_buf_stats(&pooled, &mapped);
	CHECK(pooled + (2u << 20) > DATA_BUF_POOL_MAX && pooled <= DATA_BUF_POOL_MAX, "the pool holds %" PRIu64 " bytes",
	      pooled);
	CHECK(mapped == pooled, "%" PRIu64 " bytes mapped with none in use and %" PRIu64 " pooled", mapped, pooled);
	/* the pool is full of 1 MiB buffers: a whole chunk's takes the room of some of them */
	CHECK(buf_reused(BUF_CHUNK), "a full pool of small buffers made no room for a big one");
	data_buf_stats(&pooled, &mapped);
	CHECK(pooled <= DATA_BUF_POOL_MAX && mapped == pooled, "%" PRIu64 " bytes pooled, %" PRIu64 " mapped", pooled,
	      mapped);
	/* an idle trim keeps the pool while buffers were handed out lately, and drops it after */
	data_buf_trim_idle(3600 * 1000000000ull);
	data_buf_stats(&pooled, &mapped);
	CHECK(pooled > 0, "a pool in use was trimmed");
	usleep(20000);
	data_buf_trim_idle(10000000);
	data_buf_stats(&pooled, &mapped);
	CHECK(pooled == 0 && mapped == 0, "an idle pool holds %" PRIu64 " bytes, %" PRIu64 " mapped", pooled, mapped);
	return 0;
fail:
	return -1;
}

/* Reads a location's record span from its segment file, as libaq's local reads do: 0, or
 * -errno when the file cannot be opened or is short. */
static int read_loc(const struct data_loc *loc, uint8_t *buf)
{
	int fd = open(loc->path, O_RDONLY);
	if (fd < 0)
		return -errno;
	uint64_t span = data_rec_span(loc->length, loc->nblk);
	ssize_t n = pread(fd, buf, span, (off_t)loc->rec_off);
	close(fd);
	return n == (ssize_t)span ? 0 : -EIO;
}

/* data_locate and data_rec_check, what a reader on aqd's machine uses to read a chunk
 * from the segment file itself: the location names the record and the blocks a read
 * needs; what is read there passes the check and holds the data, and fails it with a
 * flipped byte or for another chunk or version; no location for a missing chunk or one
 * shorter than asked; a location kept past a rewrite and compaction names a file that is
 * gone, never other bytes that pass. */
static int test_locate(void)
{
	char dir[300];
	struct data_store *ds = NULL;
	struct data_options o = {.ntargets = 1, .target_ids = ids1, .segment_bytes = SMALL_SEG};
	uint32_t len = 3 * DATA_BLOCK_SIZE + 500, big = 1u << 20;
	uint8_t *a = aq_malloc(len), *filler = aq_malloc(big), *buf = aq_malloc(data_rec_size(len));
	struct data_loc *loc = aq_malloc(sizeof *loc), *part = aq_malloc(sizeof *part);
	uint64_t s = 11;
	fill_random(&s, a, len);
	fill_random(&s, filler, big);
	case_dir(dir, sizeof dir);
	int rc = data_open(dir, true, &o, &ds);
	CHECK(rc == 0, "open: %s", aq_strerror(rc));
	CHECK(data_write(ds, 7, 400, 0, 0, a, len, false) == 0, "write");

	rc = data_locate(ds, 7, 400, 0, len, loc);
	CHECK(rc == 0 && loc->length == len && loc->nblk == 4 && loc->rec_off % DATA_REC_ALIGN == 0,
	      "locate: %s, length %u, %u blocks", aq_strerror(rc), loc->length, loc->nblk);
	CHECK(read_loc(loc, buf) == 0, "read the segment");
	rc = data_rec_check(buf, 400, 0, loc->version, loc->length, loc->nblk, loc->crc);
	CHECK(rc == 0 && memcmp(buf + DATA_REC_HDR_SIZE, a, len) == 0, "check: %s", aq_strerror(rc));
	CHECK(data_rec_check(buf, 401, 0, loc->version, len, 4, loc->crc) == -AQ_ECORRUPT, "another inode");
	CHECK(data_rec_check(buf, 400, 1, loc->version, len, 4, loc->crc) == -AQ_ECORRUPT, "another chunk");
	CHECK(data_rec_check(buf, 400, 0, loc->version + 1, len, 4, loc->crc) == -AQ_ECORRUPT, "another version");
	CHECK(data_rec_check(buf, 400, 0, loc->version, len, 5, loc->crc) == -AQ_ECORRUPT, "blocks past the end");
	buf[DATA_REC_HDR_SIZE + 2 * DATA_BLOCK_SIZE + 7] ^= 1;
	CHECK(data_rec_check(buf, 400, 0, loc->version, len, 4, loc->crc) == -AQ_ECORRUPT, "a flipped byte");
	/* a reader of the first block alone checks (and needs) that block alone */
	rc = data_locate(ds, 7, 400, 0, DATA_BLOCK_SIZE, part);
	CHECK(rc == 0 && part->nblk == 1 && part->rec_off == loc->rec_off, "locate one block: %s", aq_strerror(rc));
	CHECK(data_rec_span(len, 1) == data_rec_size(DATA_BLOCK_SIZE), "span of one block");
	CHECK(data_rec_check(buf, 400, 0, part->version, len, 1, part->crc) == 0, "one block");

	/* end 0: all the record holds (LOCATE), and the reader picks O_DIRECT itself */
	rc = data_locate(ds, 7, 400, 0, 0, part);
	CHECK(rc == 0 && part->nblk == 4 && part->length == len && part->rec_off == loc->rec_off &&
	      memcmp(part->crc, loc->crc, sizeof loc->crc[0] * 4) == 0, "locate the whole record: %s", aq_strerror(rc));
	CHECK(data_locate(ds, 7, 400, 1, 0, part) == -EAGAIN, "no whole record of a missing chunk");
	CHECK(data_locate(ds, 7, 400, 1, 10, part) == -EAGAIN, "a missing chunk has no location");
	CHECK(data_locate(ds, 7, 400, 0, len + 1, part) == -EAGAIN, "a chunk shorter than asked has none");
	CHECK(data_locate(ds, 8, 400, 0, 10, part) == -AQ_ENOT_OWNER, "another target");

	/* seal the record's segment, rewrite the chunk, compact: the old location's file goes */
	for (uint32_t i = 0; i < 10; i++)
		CHECK(data_write(ds, 7, 500, i, 0, filler, big, false) == 0, "filler %u", i);
	fill_random(&s, a, len);
	CHECK(data_write(ds, 7, 400, 0, 0, a, len, false) == 0, "rewrite");
	rc = data_locate(ds, 7, 400, 0, len, part);
	CHECK(rc == 0 && part->version == loc->version + 1 && strcmp(part->path, loc->path) != 0,
	      "the rewrite's location: %s", aq_strerror(rc));
	CHECK(data_compact(ds, 7, 1.0) >= 0, "compact");
	CHECK(read_loc(loc, buf) == -ENOENT, "the compacted segment is still there");
	CHECK(read_loc(part, buf) == 0, "read the rewrite's segment");
	rc = data_rec_check(buf, 400, 0, part->version, part->length, part->nblk, part->crc);
	CHECK(rc == 0 && memcmp(buf + DATA_REC_HDR_SIZE, a, len) == 0, "the rewrite: %s", aq_strerror(rc));
	data_close(ds);
	free(a), free(filler), free(buf), free(loc), free(part);
	return 0;
fail:
	if (ds)
		data_close(ds);
	free(a), free(filler), free(buf), free(loc), free(part);
	return -1;
}

int main(void)
{
	static const struct {
		const char *name;
		int (*fn)(void);
	} cases[] = {
		/* First: the child must fork from a process without RocksDB's threads. */
		{"kill9", test_kill9},
		{"format", test_format},
		{"roundtrip", test_roundtrip},
		{"reopen", test_reopen},
		{"sparse", test_sparse},
		{"overwrite", test_overwrite},
		{"overlay", test_overlay},
		{"punch_after_sync", test_punch_after_sync},
		{"sync_overlap", test_sync_overlap},
		{"direct_writes", test_direct_writes},
		{"writev", test_writev},
		{"truncate_delete", test_truncate_delete},
		{"corrupt", test_corrupt},
		{"direct", test_direct},
		{"compact", test_compact},
		{"locate", test_locate},
		{"enospc", test_enospc},
		{"concurrent", test_concurrent},
		{"two_targets", test_two_targets},
		{"buffers", test_buffers},
	};
	snprintf(root, sizeof root, "/tmp/aq_test_data.XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	(void)rng_state;
	int passed = 0, failed = 0;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		failmsg[0] = 0;
		if (cases[i].fn() == 0) {
			printf("ok %s\n", cases[i].name);
			passed++;
		} else {
			printf("FAIL %s: %s\n", cases[i].name, failmsg);
			failed++;
		}
		fflush(stdout);
	}
	nftw(root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

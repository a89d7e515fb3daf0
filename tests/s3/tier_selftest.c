/*
 * tier_selftest.c - drives the data layer's object tier (src/data/tier.c) against a real
 * S3-compatible server: demote packs chunks of many inodes into objects and frees flash
 * only after the upload, reads of cold chunks come back byte-exact (and hydrate), writes
 * and truncates of cold chunks, delete + reclaim, a restart with cold data, a corrupted
 * object (crc mismatch: an error, never the bytes), and an unreachable S3 (demote fails,
 * nothing freed). Built as build/tests/tier_selftest, run by
 * tests/integration/test_data_tier.py, which owns the server and the fault proxy.
 *
 *   tier_selftest DIR ENDPOINT BUCKET
 *
 * Credentials from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY. At a few points it
 * prints "WAIT what" and reads one line from stdin, so the driver can damage an object
 * or cut the network in between. Each step prints "ok STEP" or "FAIL STEP: why"; the
 * exit status is 0 only if every step passed.
 */
#include <pthread.h>

#include "common/common.h"
#include "data/data_internal.h"
#include "s3/s3.h"

#define CHUNK (4u << 20)
#define NSMALL 60
#define SMALL 100000u
#define BIG_INO 1000
#define BIG_CHUNKS 3

static int g_failed;
static const uint32_t ids[1] = {5};

#define STEP(name, cond, ...)                                   \
	do {                                                    \
		if (cond) {                                     \
			printf("ok %s\n", name);                \
		} else {                                        \
			printf("FAIL %s: ", name);              \
			printf(__VA_ARGS__);                    \
			printf("\n");                           \
			g_failed++;                             \
		}                                               \
		fflush(stdout);                                 \
	} while (0)

static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 7;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)(x >> 24);
	}
}

struct compact_arg {
	struct data_store *ds;
	bool stop;
	int passes;
};

static void *compact_loop(void *arg)
{
	struct compact_arg *a = arg;
	uint8_t *junk = aq_malloc(1u << 20);
	memset(junk, 0x5A, 1u << 20);
	for (uint32_t i = 0; !__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE); i++) {
		/* churn: overwrites fill and seal segments and leave dead space in them, so
		 * compaction keeps moving the live records out, the demoted ones included */
		data_write(a->ds, ids[0], 9000 + i % 8, 0, 0, junk, 1u << 20, false);
		data_compact(a->ds, ids[0], 0.99);
		a->passes++;
	}
	free(junk);
	return NULL;
}

static void wait_driver(const char *what)
{
	printf("WAIT %s\n", what);
	fflush(stdout);
	char line[64];
	if (!fgets(line, sizeof line, stdin))
		exit(3);
}

/* Reads chunk (ino, idx) whole and compares it with seed's bytes; returns data_read's rc
 * or 1 for wrong bytes. */
static int check_chunk(struct data_store *ds, uint64_t ino, uint32_t idx, uint32_t len, uint64_t seed)
{
	uint8_t *want = aq_malloc(len), *got = aq_malloc(len);
	fill(want, len, seed);
	int rc = data_read(ds, ids[0], ino, idx, 0, got, len);
	if (!rc && memcmp(want, got, len))
		rc = 1;
	free(want);
	free(got);
	return rc;
}

static struct data_tier_usage usage_sum(struct data_store *ds, const uint64_t *inos, uint32_t n)
{
	struct data_tier_usage sum = {0}, u;
	for (uint32_t i = 0; i < n; i++) {
		data_tier_usage(ds, ids[0], inos[i], &u);
		sum.hot += u.hot;
		sum.cold += u.cold;
		sum.both += u.both;
	}
	return sum;
}

static int open_store(const char *dir, bool create, struct data_store **ds)
{
	struct data_options o = {.ntargets = 1, .target_ids = ids, .segment_bytes = 32u << 20};
	return data_open(dir, create, &o, ds);
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: tier_selftest DIR ENDPOINT BUCKET\n");
		return 2;
	}
	struct s3_config cfg = {0};
	snprintf(cfg.endpoint, sizeof cfg.endpoint, "%s", argv[2]);
	snprintf(cfg.bucket, sizeof cfg.bucket, "%s", argv[3]);
	snprintf(cfg.region, sizeof cfg.region, "us-east-1");
	struct s3_client *s3 = NULL;
	struct data_store *ds = NULL;
	if (s3_load_credentials(&cfg, NULL) || s3_open(&cfg, &s3) || open_store(argv[1], true, &ds)) {
		fprintf(stderr, "setup failed: %s\n", s3_last_error());
		return 2;
	}
	uint64_t inos[NSMALL + 1];
	uint8_t *buf = aq_malloc(CHUNK);
	for (uint32_t i = 0; i < NSMALL; i++) {
		inos[i] = 100 + i;
		fill(buf, SMALL, inos[i]);
		if (data_write(ds, ids[0], inos[i], 0, 0, buf, SMALL, false))
			return 2;
	}
	inos[NSMALL] = BIG_INO;
	for (uint32_t c = 0; c < BIG_CHUNKS; c++) {
		fill(buf, CHUNK, BIG_INO * 10 + c);
		if (data_write(ds, ids[0], BIG_INO, c, 0, buf, CHUNK, false))
			return 2;
	}
	uint64_t total = (uint64_t)NSMALL * SMALL + (uint64_t)BIG_CHUNKS * CHUNK;
	struct data_target_stat st0, st;
	data_stat(ds, ids[0], &st0);

	/* no tier yet: a clear refusal */
	STEP("demote without tier", data_demote(ds, ids[0], inos, NSMALL + 1) == -ENOTCONN, "not -ENOTCONN");
	data_set_tier(ds, s3, "selftest/");

	int64_t n = data_demote(ds, ids[0], inos, NSMALL + 1);
	struct data_tier_usage u = usage_sum(ds, inos, NSMALL + 1);
	struct data_tier_stat ts;
	data_tier_stat(ds, ids[0], &ts);
	data_stat(ds, ids[0], &st);
	STEP("demote", n == (int64_t)total && u.cold == total && u.hot == 0 && u.both == 0,
	     "moved %lld of %llu, cold %llu hot %llu", (long long)n, (unsigned long long)total,
	     (unsigned long long)u.cold, (unsigned long long)u.hot);
	STEP("packed", ts.objects == 1 && ts.live_bytes == total && ts.object_bytes == total,
	     "%llu objects, %llu bytes, %llu live", (unsigned long long)ts.objects,
	     (unsigned long long)ts.object_bytes, (unsigned long long)ts.live_bytes);
	STEP("flash freed", st.live_bytes == 0 && st0.live_bytes >= total, "flash live %llu (before %llu)",
	     (unsigned long long)st.live_bytes, (unsigned long long)st0.live_bytes);

	int bad = 0;
	for (uint32_t i = 0; i < NSMALL; i += 2)
		bad += check_chunk(ds, inos[i], 0, SMALL, inos[i]) != 0;
	bad += check_chunk(ds, BIG_INO, 1, CHUNK, BIG_INO * 10 + 1) != 0;
	u = usage_sum(ds, inos, NSMALL + 1);
	STEP("cold read", bad == 0 && u.both == (NSMALL / 2) * SMALL + CHUNK, "%d bad, both %llu", bad,
	     (unsigned long long)u.both);
	/* a read at an offset inside a cold chunk */
	uint8_t piece[1000], want[CHUNK / 4];
	fill(buf, CHUNK, BIG_INO * 10 + 2);
	memcpy(want, buf + 3000000, sizeof piece);
	int rc = data_read(ds, ids[0], BIG_INO, 2, 3000000, piece, sizeof piece);
	STEP("cold read at offset", rc == 0 && !memcmp(piece, want, sizeof piece), "rc %d", rc);

	/* chunks in both places only lose their flash copy: no new object */
	n = data_demote(ds, ids[0], inos, NSMALL + 1);
	data_tier_stat(ds, ids[0], &ts);
	u = usage_sum(ds, inos, NSMALL + 1);
	STEP("demote again", ts.objects == 1 && u.cold == total && u.both == 0, "%llu objects, both %llu",
	     (unsigned long long)ts.objects, (unsigned long long)u.both);

	/* a partial write to a cold chunk keeps the rest of it (read from S3) */
	fill(buf, SMALL, inos[1]);
	memset(buf + 500, 0xAB, 100);
	rc = data_write(ds, ids[0], inos[1], 0, 500, buf + 500, 100, false);
	uint8_t *got = aq_malloc(SMALL);
	int rc2 = data_read(ds, ids[0], inos[1], 0, 0, got, SMALL);
	STEP("write into cold chunk", rc == 0 && rc2 == 0 && !memcmp(got, buf, SMALL), "rc %d %d", rc, rc2);
	/* a truncate inside a cold chunk */
	rc = data_truncate(ds, ids[0], inos[3], 777, CHUNK);
	memset(got, 0xEE, SMALL);
	rc2 = data_read(ds, ids[0], inos[3], 0, 0, got, SMALL);
	fill(buf, SMALL, inos[3]);
	memset(buf + 777, 0, SMALL - 777);
	STEP("truncate cold chunk", rc == 0 && rc2 == 0 && !memcmp(got, buf, SMALL), "rc %d %d", rc, rc2);

	/* delete most files: reclaim rewrites the object */
	for (uint32_t i = 0; i < NSMALL - 5; i++)
		data_delete(ds, ids[0], inos[i]);
	data_delete(ds, ids[0], BIG_INO);
	data_tier_stat(ds, ids[0], &ts);
	uint64_t before = ts.object_bytes;
	int64_t rec = data_tier_reclaim(ds, ids[0], 0.13, 0.07);
	data_tier_stat(ds, ids[0], &ts);
	STEP("reclaim", rec > 0 && ts.object_bytes == 5ull * SMALL && ts.live_bytes == ts.object_bytes &&
			       ts.object_bytes < before,
	     "reclaimed %lld, %llu objects %llu bytes %llu live (before %llu)", (long long)rec,
	     (unsigned long long)ts.objects, (unsigned long long)ts.object_bytes,
	     (unsigned long long)ts.live_bytes, (unsigned long long)before);
	bad = 0;
	for (uint32_t i = NSMALL - 5; i < NSMALL; i++)
		bad += check_chunk(ds, inos[i], 0, SMALL, inos[i]) != 0;
	STEP("read after reclaim", bad == 0, "%d bad", bad);

	/* restart with cold data */
	n = data_demote(ds, ids[0], &inos[NSMALL - 5], 5);
	data_set_tier(ds, NULL, NULL);
	data_close(ds);
	ds = NULL;
	rc = open_store(argv[1], false, &ds);
	if (rc)
		return 2;
	rc = data_read(ds, ids[0], inos[NSMALL - 1], 0, 0, got, 100);
	STEP("cold read without tier", rc == -EIO, "rc %d", rc);
	data_set_tier(ds, s3, "selftest/");
	data_tier_stat(ds, ids[0], &ts);
	u = usage_sum(ds, &inos[NSMALL - 5], 5);
	bad = check_chunk(ds, inos[NSMALL - 5], 0, SMALL, inos[NSMALL - 5]);
	STEP("restart", ts.live_bytes == 5ull * SMALL && u.cold == 5ull * SMALL && bad == 0,
	     "live %llu cold %llu read %d", (unsigned long long)ts.live_bytes, (unsigned long long)u.cold, bad);

	/* a damaged object: the read fails, never returns the bad bytes */
	wait_driver("corrupt");
	rc = data_read(ds, ids[0], inos[NSMALL - 4], 0, 0, got, SMALL);
	STEP("corrupt object", rc == -AQ_ECORRUPT || rc == -EIO, "rc %d", rc);

	/* S3 unreachable: demote fails and frees nothing; reads from flash go on */
	uint64_t ino2 = 5000;
	fill(buf, SMALL, ino2);
	data_write(ds, ids[0], ino2, 0, 0, buf, SMALL, false);
	wait_driver("cut");
	uint64_t t0 = aq_mono_ns();
	n = data_demote(ds, ids[0], &ino2, 1);
	double secs = (double)(aq_mono_ns() - t0) / 1e9;
	data_tier_usage(ds, ids[0], ino2, &u);
	STEP("demote while S3 is down", n < 0 && u.hot == SMALL && u.cold == 0 && secs < 30,
	     "rc %lld hot %llu (%.1fs)", (long long)n, (unsigned long long)u.hot, secs);
	STEP("read while S3 is down", check_chunk(ds, ino2, 0, SMALL, ino2) == 0, "bad bytes");
	wait_driver("restore");
	n = data_demote(ds, ids[0], &ino2, 1);
	data_tier_usage(ds, ids[0], ino2, &u);
	STEP("demote after S3 is back", n == SMALL && u.cold == SMALL && check_chunk(ds, ino2, 0, SMALL, ino2) == 0,
	     "rc %lld cold %llu", (long long)n, (unsigned long long)u.cold);

	/* compaction moving records while a demote uploads them: every chunk still goes
	 * (regression: a chunk that had moved was silently left on flash) */
	uint64_t mv[40];
	for (uint32_t i = 0; i < 40; i++) {
		mv[i] = 8000 + i;
		fill(buf, 1u << 20, mv[i]);
		data_write(ds, ids[0], mv[i], 0, 0, buf, 1u << 20, false);
	}
	for (uint32_t i = 0; i < 40; i += 2) /* dead space, so that compaction has work */
		data_write(ds, ids[0], mv[i], 0, 0, buf, 1u << 20, false);
	for (uint32_t i = 0; i < 40; i += 2)
		fill(buf, 1u << 20, mv[i + 1]), data_write(ds, ids[0], mv[i], 0, 0, buf, 1u << 20, false);
	struct compact_arg ca = {.ds = ds};
	pthread_t th;
	pthread_create(&th, NULL, compact_loop, &ca);
	n = data_demote(ds, ids[0], mv, 40);
	__atomic_store_n(&ca.stop, true, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	u = usage_sum(ds, mv, 40);
	bad = 0;
	for (uint32_t i = 1; i < 40; i += 2)
		bad += check_chunk(ds, mv[i], 0, 1u << 20, mv[i]) != 0;
	STEP("demote while compacting", n == 40ll << 20 && u.hot == 0 && bad == 0 && ca.passes > 0,
	     "moved %lld, hot %llu, %d bad, %d compaction passes", (long long)n, (unsigned long long)u.hot, bad,
	     ca.passes);

	data_set_tier(ds, NULL, NULL);
	data_close(ds);
	s3_close(s3);
	free(got);
	free(buf);
	printf("%s\n", g_failed ? "FAILED" : "PASSED");
	return g_failed ? 1 : 0;
}

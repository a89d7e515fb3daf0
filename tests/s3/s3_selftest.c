/*
 * s3_selftest.c - drives src/s3 against a real S3-compatible server (s3rver in the tests,
 * any S3 by hand). Not a unit test (it needs a server): built as build/tests/s3_selftest
 * and run by tests/integration/test_s3client.py.
 *
 *   s3_selftest [--op all|putget|put|bigput|check] [--cred FILE] [--key-id ID] [--secret S]
 *               [--region R] ENDPOINT BUCKET
 *
 * Credentials come from $AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY (or --cred FILE);
 * --key-id / --secret override them. Each step prints "ok STEP (SECONDS)" or
 * "FAIL STEP: rc=-N (ENAME) LAST_ERROR", and at the end "N passed, N failed"; the exit
 * status is 0 only if every step passed.
 *   all     every check below (objects it writes are deleted again)
 *   putget  put 1 MiB, read it back whole and in ranges, delete it
 *   put     one small put (what a fault test wants to see fail)
 *   bigput  one 40 MiB put (multipart), left in place
 *   check   s3_check alone
 */
#include <getopt.h>
#include <pthread.h>

#include "common/common.h"
#include "s3/s3.h"

#define MIB (1u << 20)

static struct s3_config g_cfg;
static struct s3_client *g_s3;
static int g_passed, g_failed;

static const char *errname(int rc)
{
	const char *n = rc ? strerrorname_np(-rc) : "OK";
	return n ? n : "?";
}

/* Prints the outcome of one step; returns ok. */
static bool report(const char *step, bool ok, int rc, uint64_t t0, const char *why)
{
	double secs = (double)(aq_mono_ns() - t0) / 1e9;
	if (ok) {
		printf("ok %s (%.2fs)\n", step, secs);
		g_passed++;
	} else {
		printf("FAIL %s: rc=%d (%s) %s%s%s\n", step, rc, errname(rc), why ? why : "", why ? "; " : "",
		       s3_last_error());
		g_failed++;
	}
	fflush(stdout);
	return ok;
}

static void fill(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		buf[i] = (uint8_t)(x >> 24);
	}
}

/* Reads [off, off+len) of key and compares it with want + off. */
static bool get_equal(struct s3_client *s, const char *key, const uint8_t *want, uint64_t off, size_t len, int *rc)
{
	uint8_t *got = aq_malloc(len);
	*rc = s3_get(s, key, off, got, len);
	bool ok = *rc == 0 && memcmp(got, want + off, len) == 0;
	free(got);
	return ok;
}

/* Expects rc == want and, when code is set, code in s3_last_error(). */
static bool expect(int rc, int want, const char *code)
{
	return rc == want && (!code || strstr(s3_last_error(), code));
}

static void step_check(void)
{
	char msg[600];
	uint64_t t0 = aq_mono_ns();
	int rc = s3_check(g_s3, msg, sizeof msg);
	report("check", rc == 0, rc, t0, NULL); /* msg repeats s3_last_error() */
}

static void step_put_small(void)
{
	/* a key that needs percent-encoding in every way a key can */
	const char *key = "dir one/s\xc3\xa9lf test+=&?#%~.bin";
	uint8_t data[1000];
	fill(data, sizeof data, 1);
	uint64_t t0 = aq_mono_ns();
	int rc = s3_put(g_s3, key, data, sizeof data);
	if (!report("put_small", rc == 0, rc, t0, NULL))
		return;
	static const struct { uint64_t off; size_t len; } ranges[] = {
		{ 0, 1000 }, { 0, 1 }, { 999, 1 }, { 100, 500 }, { 511, 2 },
	};
	t0 = aq_mono_ns();
	bool ok = true;
	for (size_t i = 0; ok && i < ARRAY_SIZE(ranges); i++)
		ok = get_equal(g_s3, key, data, ranges[i].off, ranges[i].len, &rc);
	report("get_ranges_small", ok, rc, t0, NULL);

	uint8_t buf[20];
	t0 = aq_mono_ns();
	rc = s3_get(g_s3, key, 990, buf, 20);
	report("get_short_body_is_eio", rc == -EIO, rc, t0, NULL);
	t0 = aq_mono_ns();
	rc = s3_get(g_s3, key, 5000, buf, 20);
	report("get_past_end_is_eio", rc == -EIO, rc, t0, NULL);

	fill(data, sizeof data, 2); /* an overwrite is what a later read sees */
	t0 = aq_mono_ns();
	rc = s3_put(g_s3, key, data, 600);
	ok = rc == 0 && get_equal(g_s3, key, data, 0, 600, &rc);
	report("overwrite", ok, rc, t0, NULL);

	t0 = aq_mono_ns();
	rc = s3_delete(g_s3, key);
	ok = rc == 0;
	if (ok) {
		rc = s3_get(g_s3, key, 0, buf, 1);
		ok = expect(rc, -ENOENT, "NoSuchKey");
	}
	report("delete_then_get_enoent", ok, rc, t0, NULL);
	t0 = aq_mono_ns();
	rc = s3_delete(g_s3, key);
	report("delete_missing_is_ok", rc == 0, rc, t0, NULL);
}

static void step_put_empty(void)
{
	uint64_t t0 = aq_mono_ns();
	int rc = s3_put(g_s3, "empty", "", 0);
	uint8_t b;
	/* No ranged read of it: S3 answers 416 (-EIO), s3rver a broken reply (Content-Length 1,
	 * no body) that the client retries as a dropped connection. */
	bool ok = rc == 0 && s3_get(g_s3, "empty", 0, &b, 0) == 0;
	report("put_empty", ok, rc, t0, NULL);
	s3_delete(g_s3, "empty");
}

static void step_multipart(void)
{
	const size_t len = 40 * MIB;
	uint8_t *data = aq_malloc(len);
	fill(data, len, 3);
	uint64_t t0 = aq_mono_ns();
	int rc = s3_put(g_s3, "big/multipart.bin", data, len);
	if (!report("put_40MiB_multipart", rc == 0, rc, t0, NULL))
		goto out;
	/* parts are 8 MiB: ranges that start, end and straddle part boundaries */
	static const struct { uint64_t off; size_t len; } ranges[] = {
		{ 8 * MIB - 10, 20 }, { 8 * MIB, 1 }, { 8 * MIB - 1, 1 }, { 16 * MIB - 1, 8 * MIB + 2 },
		{ 0, 8 * MIB + 1 }, { 40 * MIB - 5, 5 }, { 12345, 3 * MIB },
	};
	t0 = aq_mono_ns();
	bool ok = true;
	for (size_t i = 0; ok && i < ARRAY_SIZE(ranges); i++)
		ok = get_equal(g_s3, "big/multipart.bin", data, ranges[i].off, ranges[i].len, &rc);
	report("get_ranges_across_parts", ok, rc, t0, NULL);
	t0 = aq_mono_ns();
	ok = get_equal(g_s3, "big/multipart.bin", data, 0, len, &rc);
	report("get_40MiB_whole", ok, rc, t0, NULL);
	t0 = aq_mono_ns();
	rc = s3_delete(g_s3, "big/multipart.bin");
	report("delete_multipart", rc == 0, rc, t0, NULL);
out:
	free(data);
}

/* Opens a client like g_s3 but with cfg changed by the caller. */
static struct s3_client *open_variant(const struct s3_config *cfg)
{
	struct s3_client *s = NULL;
	AQ_ASSERT(s3_open(cfg, &s) == 0);
	return s;
}

static void step_bad_credentials(void)
{
	char msg[600];
	struct s3_config c = g_cfg;
	snprintf(c.secret_key, sizeof c.secret_key, "definitely-wrong-secret");
	struct s3_client *s = open_variant(&c);
	uint64_t t0 = aq_mono_ns();
	int rc = s3_check(s, msg, sizeof msg);
	bool ok = expect(rc, -EACCES, "SignatureDoesNotMatch") && !strstr(msg, c.secret_key);
	if (ok) {
		rc = s3_put(s, "never", "x", 1);
		ok = expect(rc, -EACCES, "SignatureDoesNotMatch");
	}
	report("wrong_secret_is_eacces", ok, rc, t0, NULL);
	s3_close(s);

	c = g_cfg;
	snprintf(c.access_key, sizeof c.access_key, "NOSUCHKEYID");
	s = open_variant(&c);
	t0 = aq_mono_ns();
	rc = s3_check(s, msg, sizeof msg);
	report("wrong_key_id_is_eacces", expect(rc, -EACCES, "InvalidAccessKeyId"), rc, t0, NULL);
	s3_close(s);

	c = g_cfg;
	snprintf(c.bucket, sizeof c.bucket, "no-such-bucket-aq");
	s = open_variant(&c);
	t0 = aq_mono_ns();
	rc = s3_check(s, msg, sizeof msg);
	ok = expect(rc, -ENOENT, "NoSuchBucket");
	if (ok) {
		rc = s3_delete(s, "k");
		ok = expect(rc, -ENOENT, "NoSuchBucket");
	}
	report("missing_bucket_is_enoent", ok, rc, t0, NULL);
	s3_close(s);
}

#define PAR_THREADS 8
static void *par_worker(void *arg)
{
	intptr_t id = (intptr_t)arg;
	char key[64];
	uint8_t data[70000];
	snprintf(key, sizeof key, "par/%d", (int)id);
	fill(data, sizeof data, 100 + (uint64_t)id);
	int rc;
	for (int round = 0; round < 3; round++) {
		if ((rc = s3_put(g_s3, key, data, sizeof data)))
			return (void *)(intptr_t)rc;
		if (!get_equal(g_s3, key, data, (uint64_t)round * 1000, 50000, &rc))
			return (void *)(intptr_t)(rc ? rc : -EIO);
	}
	return (void *)(intptr_t)s3_delete(g_s3, key);
}

static void step_parallel(void)
{
	pthread_t tids[PAR_THREADS];
	uint64_t t0 = aq_mono_ns();
	for (intptr_t i = 0; i < PAR_THREADS; i++)
		AQ_ASSERT(pthread_create(&tids[i], NULL, par_worker, (void *)i) == 0);
	int rc = 0;
	for (int i = 0; i < PAR_THREADS; i++) {
		void *ret;
		pthread_join(tids[i], &ret);
		if ((intptr_t)ret && !rc)
			rc = (int)(intptr_t)ret;
	}
	report("parallel_threads", rc == 0, rc, t0, "(the failing thread's error text is not shown)");
}

static void step_putget(void)
{
	const size_t len = MIB;
	uint8_t *data = aq_malloc(len);
	fill(data, len, 4);
	uint64_t t0 = aq_mono_ns();
	int rc = s3_put(g_s3, "putget.bin", data, len);
	if (report("put", rc == 0, rc, t0, NULL)) {
		t0 = aq_mono_ns();
		bool ok = get_equal(g_s3, "putget.bin", data, 0, len, &rc) &&
			  get_equal(g_s3, "putget.bin", data, 1000, 5000, &rc);
		report("get", ok, rc, t0, NULL);
		t0 = aq_mono_ns();
		rc = s3_delete(g_s3, "putget.bin");
		report("delete", rc == 0, rc, t0, NULL);
	}
	free(data);
}

static void step_put_only(void)
{
	uint64_t t0 = aq_mono_ns();
	int rc = s3_put(g_s3, "put-only.bin", "hello", 5);
	report("put", rc == 0, rc, t0, NULL);
}

static void step_bigput(void)
{
	const size_t len = 40 * MIB;
	uint8_t *data = aq_malloc(len);
	fill(data, len, 5);
	uint64_t t0 = aq_mono_ns();
	int rc = s3_put(g_s3, "bigput.bin", data, len);
	report("bigput", rc == 0, rc, t0, NULL);
	free(data);
}

static int usage(void)
{
	fprintf(stderr, "usage: s3_selftest [--op all|putget|put|bigput|check] [--cred FILE] [--key-id ID] "
			"[--secret S] [--region R] ENDPOINT BUCKET\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "op", required_argument, NULL, 'o' },     { "cred", required_argument, NULL, 'c' },
		{ "key-id", required_argument, NULL, 'k' }, { "secret", required_argument, NULL, 's' },
		{ "region", required_argument, NULL, 'r' }, { NULL, 0, NULL, 0 },
	};
	const char *op = "all", *cred = NULL, *key_id = NULL, *secret = NULL, *region = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'o': op = optarg; break;
		case 'c': cred = optarg; break;
		case 'k': key_id = optarg; break;
		case 's': secret = optarg; break;
		case 'r': region = optarg; break;
		default: return usage();
		}
	}
	if (argc - optind != 2)
		return usage();
	snprintf(g_cfg.endpoint, sizeof g_cfg.endpoint, "%s", argv[optind]);
	snprintf(g_cfg.bucket, sizeof g_cfg.bucket, "%s", argv[optind + 1]);
	if (region)
		snprintf(g_cfg.region, sizeof g_cfg.region, "%s", region);
	if (!(key_id && secret) && s3_load_credentials(&g_cfg, cred) < 0)
		return 1;
	if (key_id)
		snprintf(g_cfg.access_key, sizeof g_cfg.access_key, "%s", key_id);
	if (secret)
		snprintf(g_cfg.secret_key, sizeof g_cfg.secret_key, "%s", secret);
	int rc = s3_open(&g_cfg, &g_s3);
	if (rc) {
		printf("FAIL open: rc=%d (%s) %s\n", rc, errname(rc), s3_last_error());
		return 1;
	}

	int ran = 1;
	if (!strcmp(op, "check")) {
		step_check();
	} else if (!strcmp(op, "put")) {
		step_put_only();
	} else if (!strcmp(op, "bigput")) {
		step_bigput();
	} else if (!strcmp(op, "putget")) {
		step_putget();
	} else if (!strcmp(op, "all")) {
		step_check();
		step_put_small();
		step_put_empty();
		step_multipart();
		step_bad_credentials();
		step_parallel();
		step_putget();
	} else {
		ran = 0;
	}
	s3_close(g_s3);
	if (!ran)
		return usage();
	printf("%d passed, %d failed\n", g_passed, g_failed);
	return g_failed ? 1 : 0;
}

/*
 * bench_tier.c - `aq bench tier`: the object tier's throughput beside plain S3 requests
 * of the same bytes against the same server, in the same run.
 *
 * A round writes N files of --file-size seeded pseudo-random bytes through libaq (the
 * crc32c of each kept in memory; later rounds rewrite them with new bytes), then measures
 * three phases, each next to a baseline that the `curl` command line sends with
 * --aws-sigv4 to the bucket `aq tier set` named:
 *
 *   demote     one aq_tier_demote of every file (what `aq tier demote DIR` sends; sent
 *              again while compaction kept chunks on flash, see demote_all). Each
 *              server demotes its targets in turn, one pack object (up to DATA_PACK_MAX)
 *              at a time, a pack over S3_MULTIPART_THRESHOLD in S3_PART_SIZE parts with
 *              up to S3_UPLOAD_THREADS in flight. Baseline: PUTs of whole objects as
 *              many and as large as the packs that demote made (the tier's status says),
 *              with as many in flight as one multipart upload has parts in flight.
 *   cold read  T threads read every file with aq_pread, one chunk per call, so T chunk
 *              recalls (one ranged GET each) are in flight; every file's crc32c is checked.
 *              Baseline: ranged GETs of chunk-sized pieces of the baseline objects, T in
 *              flight (one curl process, --parallel).
 *   prefetch   after a second demote (which only drops the flash copies the reads made),
 *              aq_tier_hydrate of each file on T threads. Baseline: the same GETs again.
 *
 * Invariants: a wrong run never prints a number: an Aquifer call that fails, a demote that
 * leaves a byte on flash, a read whose crc32c differs from the one written (checked after
 * the cold read and again after the prefetch), a baseline request that does not answer
 * 2xx or moves the wrong number of bytes: each exits 1 with a message. The bench removes
 * its directory (bench-tier-PID under --dir), its baseline objects (under
 * aq-bench-baseline/PID/) and its temporary directory, also after a failure (best effort).
 * The S3 secret goes to curl only in a configuration file of mode 0600, never on a
 * command line, never printed.
 */
#include "cli/bench.h"
#include "s3/s3.h"
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define BT_THREADS_MAX 64
#define BT_FILES_MAX 100000u
#define BT_FILE_SIZE_MAX (1ull << 30)
#define BT_BYTES_MAX (64ull << 30)       /* files x file size */
#define BT_ROUNDS_MAX 20
#define BT_DEMOTE_CALLS_MAX 8            /* demotes of the files before a byte left on flash is an error */
#define BT_PIECE_BYTES (4u << 20)        /* a write through libaq */
#define BT_PACK_MAX (64ull << 20)        /* DATA_PACK_MAX: the data layer's largest pack */
#define BT_KEY_PREFIX "aq-bench-baseline/"
#define BT_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

enum bt_phase { BT_DEMOTE, BT_COLD, BT_PREFETCH, BT_PHASES };
static const char *const phase_name[BT_PHASES] = {"demote", "cold read", "prefetch"};

struct bt_file {
	uint64_t ino;
	uint64_t size;
	uint32_t crc;          /* crc32c of what this round wrote */
	uint32_t chunk_size;   /* from its attributes */
	char name[32];
};

/* The plain-S3 side: the bucket and keys aqd uses, and the baseline objects of a round. */
struct bt_s3 {
	struct s3_config cfg;
	char tmpdir[256];       /* holds the PUT body and curl's configuration (mode 0700) */
	char body_path[300];
	char cfg_path[300];
	char body_sha[65];
	uint32_t nobj;          /* baseline objects of this round (as many as demote's packs) */
	uint64_t obj_bytes;     /* each */
	uint32_t put_parallel;  /* PUTs in flight */
	bool packs_measured;    /* nobj from the tier's status (else estimated) */
	bool have_objects;      /* baseline objects may exist: delete them */
};

struct bt_run {
	struct aq_client *c;
	uint64_t parent_ino, dir_ino;
	char dir_name[64];
	char dir_path[AQ_PATH_MAX + 64];
	uint32_t nfiles;
	uint64_t file_size, total_bytes;
	int threads;
	uint32_t chunk_size;    /* of the files (from their attributes) */
	uint32_t ntargets;
	uint64_t seed;
	uint32_t round;
	struct bt_file *files;
	uint64_t empty_ino;     /* an empty file: demoting it only runs the tier's object gc */
	uint32_t demote_calls_max; /* aq_tier_demote calls the timed demote took (most of any round) */
	struct bt_s3 s3;
	/* a phase's threads */
	_Atomic uint32_t next;
	_Atomic uint64_t bytes;
	struct bench_err err;
};

static double median(double *v, int n)
{
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Writes all len bytes to fd; 0 or -1 with errno set. */
static int write_all(int fd, const void *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

static double mb_per_s(uint64_t bytes, uint64_t ns) { return ns ? (double)bytes / 1e6 / ((double)ns / 1e9) : 0; }

/* ---- the Aquifer side: a pool of T threads over the files ---- */

typedef int (*bt_file_fn)(struct bt_run *r, struct bt_file *f, uint8_t *buf);

struct bt_pool {
	struct bt_run *r;
	bt_file_fn fn;
	size_t buf_bytes;
};

static void *pool_main(void *arg)
{
	struct bt_pool *p = arg;
	uint8_t *buf = p->buf_bytes ? aq_malloc(p->buf_bytes) : NULL;
	while (!bench_failed(&p->r->err)) {
		uint32_t i = atomic_fetch_add(&p->r->next, 1);
		if (i >= p->r->nfiles || p->fn(p->r, &p->r->files[i], buf))
			break;
	}
	free(buf);
	return NULL;
}

/* Runs fn over every file on r->threads threads; *ns gets the wall time. Returns 0, or -1
 * after a failure (r->err says which). */
static int pool_run(struct bt_run *r, bt_file_fn fn, size_t buf_bytes, uint64_t *ns)
{
	struct bt_pool p = {.r = r, .fn = fn, .buf_bytes = buf_bytes};
	pthread_t th[BT_THREADS_MAX];
	atomic_store(&r->next, 0);
	atomic_store(&r->bytes, 0);
	uint64_t t0 = aq_mono_ns();
	for (int i = 0; i < r->threads; i++)
		pthread_create(&th[i], NULL, pool_main, &p);
	for (int i = 0; i < r->threads; i++)
		pthread_join(th[i], NULL);
	if (ns)
		*ns = aq_mono_ns() - t0;
	return bench_failed(&r->err) ? -1 : 0;
}

/* Creates (or truncates) file f and writes its bytes; keeps their crc32c. */
static int write_file(struct bt_run *r, struct bt_file *f, uint8_t *buf)
{
	struct aq_attr a;
	struct aq_file *af = NULL;
	int rc = aq_mknod(r->c, NULL, r->dir_ino, f->name, S_IFREG | 0644, 0, 0, &a);
	if (rc == -EEXIST)
		rc = aq_lookup(r->c, NULL, r->dir_ino, f->name, &a);
	if (!rc)
		rc = aq_open_ino(r->c, NULL, a.ino, O_WRONLY | O_TRUNC, &af);
	if (rc) {
		bench_fail(&r->err, "create %s/%s: %s", r->dir_path, f->name, aq_strerror(rc));
		return -1;
	}
	f->ino = a.ino;
	f->size = r->file_size;
	uint64_t key = ds_key(r->seed, r->round * r->nfiles + (uint32_t)(f - r->files));
	uint32_t crc = 0;
	for (uint64_t off = 0; off < f->size && !rc; off += BT_PIECE_BYTES) {
		size_t len = (size_t)MIN((uint64_t)BT_PIECE_BYTES, f->size - off);
		ds_fill(key, off, buf, len);
		crc = crc32c(crc, buf, len);
		rc = bench_pwrite_all(af, -1, buf, len, off);
	}
	int crc_rc = aq_close(af);
	rc = rc ? rc : crc_rc;
	if (rc) {
		bench_fail(&r->err, "write %s/%s: %s", r->dir_path, f->name, aq_strerror(rc));
		return -1;
	}
	f->crc = crc;
	f->chunk_size = a.chunk_size;
	return 0;
}

/* Reads f whole, one chunk per aq_pread, and checks its crc32c against the one written. */
static int read_file(struct bt_run *r, struct bt_file *f, uint8_t *buf)
{
	struct aq_file *af;
	int rc = aq_open_ino(r->c, NULL, f->ino, O_RDONLY, &af);
	if (rc) {
		bench_fail(&r->err, "open %s/%s: %s", r->dir_path, f->name, aq_strerror(rc));
		return -1;
	}
	uint32_t crc = 0;
	uint64_t off = 0;
	while (off < f->size) {
		size_t want = (size_t)MIN((uint64_t)r->chunk_size, f->size - off);
		ssize_t n = aq_pread(af, buf, want, off);
		if (n <= 0) {
			bench_fail(&r->err, "read %s/%s at %" PRIu64 ": %s", r->dir_path, f->name, off,
				   n ? aq_strerror((int)n) : "end of file before its size");
			aq_close(af);
			return -1;
		}
		AQ_ASSERT((size_t)n <= want);
		crc = crc32c(crc, buf, (size_t)n);
		off += (uint64_t)n;
	}
	aq_close(af);
	if (crc != f->crc) {
		bench_fail(&r->err, "%s/%s: read back crc32c %08x, written %08x: wrong bytes", r->dir_path, f->name,
			   crc, f->crc);
		return -1;
	}
	atomic_fetch_add(&r->bytes, off);
	return 0;
}

static int hydrate_file(struct bt_run *r, struct bt_file *f, uint8_t *buf)
{
	uint64_t bytes = 0;
	int rc = aq_tier_hydrate(r->c, f->ino, &bytes);
	if (rc) {
		bench_fail(&r->err, "prefetch %s/%s: %s: %s", r->dir_path, f->name, aq_strerror(rc),
			   aq_tier_last_error());
		return -1;
	}
	if (bytes != f->size) {
		bench_fail(&r->err, "prefetch %s/%s recalled %" PRIu64 " of its %" PRIu64 " bytes", r->dir_path,
			   f->name, bytes, f->size);
		return -1;
	}
	atomic_fetch_add(&r->bytes, bytes);
	return 0;
}

/* Every byte of every file is only in S3 (nothing hot, nothing in both). */
static int check_all_cold(struct bt_run *r, const char *when)
{
	for (uint32_t i = 0; i < r->nfiles; i++) {
		struct aq_tier_usage u;
		int rc = aq_tier_usage(r->c, r->files[i].ino, &u);
		if (rc || u.hot_bytes || u.both_bytes || u.cold_bytes != r->files[i].size) {
			fprintf(stderr,
				"aq bench tier: %s/%s after %s: %s (hot %" PRIu64 ", both %" PRIu64 ", cold %" PRIu64
				" of %" PRIu64 " bytes)\n",
				r->dir_path, r->files[i].name, when, rc ? aq_strerror(rc) : "not all in S3", u.hot_bytes,
				u.both_bytes, u.cold_bytes, r->files[i].size);
			return -1;
		}
	}
	return 0;
}

/* aq_tier_demote of every file until all their bytes left flash: a chunk that compaction
 * moved on flash while its pack was uploading stays there (its bytes in the pack are dead)
 * and goes with the next call. *ns: the time of all calls; *calls: how many it took. */
static int demote_all(struct bt_run *r, const char *when, uint64_t *ns, uint32_t *calls)
{
	uint64_t *inos = aq_malloc(r->nfiles * sizeof *inos);
	for (uint32_t i = 0; i < r->nfiles; i++)
		inos[i] = r->files[i].ino;
	uint64_t freed = 0, t0 = aq_mono_ns();
	int rc = 0;
	*calls = 0;
	while (!rc && freed < r->total_bytes && *calls < BT_DEMOTE_CALLS_MAX) {
		uint64_t bytes = 0, skipped = 0;
		rc = aq_tier_demote(r->c, inos, r->nfiles, &bytes, &skipped);
		(*calls)++;
		freed += bytes;
		if (!rc && (skipped || bytes == 0))
			break; /* nothing moves any more: said below */
	}
	*ns = aq_mono_ns() - t0;
	free(inos);
	if (rc) {
		fprintf(stderr, "aq bench tier: demote (%s) of %s: %s: %s\n", when, r->dir_path, aq_strerror(rc),
			aq_tier_last_error());
		return -1;
	}
	if (freed != r->total_bytes) {
		fprintf(stderr,
			"aq bench tier: demote (%s) freed %" PRIu64 " of %" PRIu64 " bytes from flash in %u calls\n", when,
			freed, r->total_bytes, *calls);
		return -1;
	}
	return check_all_cold(r, when);
}

/* ---- the plain-S3 side: curl --aws-sigv4 ---- */

/* Whether s can go between double quotes in curl's configuration (and ' in a shell command) as it is. */
static bool cfg_safe(const char *s)
{
	for (; *s; s++)
		if (*s == '"' || *s == '\\' || *s == '\'' || (unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* The bucket's address and keys: from aqd's tier configuration, and the keys from the
 * credentials file it names or from this process's AWS_* variables. */
static int s3_side_open(struct bt_s3 *s, const struct aq_tier_status *st)
{
	memset(&s->cfg, 0, sizeof s->cfg);
	snprintf(s->cfg.endpoint, sizeof s->cfg.endpoint, "%s", st->endpoint);
	snprintf(s->cfg.bucket, sizeof s->cfg.bucket, "%s", st->bucket);
	snprintf(s->cfg.region, sizeof s->cfg.region, "%s", st->region[0] ? st->region : "us-east-1");
	s->cfg.virtual_host = st->virtual_host;
	int rc = -ENOENT;
	const char *file = !strncmp(st->credentials, "file ", 5) ? st->credentials + 5 : NULL;
	if (file)
		rc = s3_load_credentials(&s->cfg, file);
	if (rc)
		rc = s3_load_credentials(&s->cfg, NULL);
	if (rc) {
		fprintf(stderr,
			"aq bench tier: the plain-S3 baseline needs the bucket's keys: %s%s%sset AWS_ACCESS_KEY_ID and "
			"AWS_SECRET_ACCESS_KEY\n",
			file ? "cannot read " : "", file ? file : "", file ? "; " : "");
		return -1;
	}
	const char *tmp = getenv("TMPDIR");
	snprintf(s->tmpdir, sizeof s->tmpdir, "%s/aq-bench-tier.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!cfg_safe(s->cfg.access_key) || strchr(s->cfg.access_key, ':') || !cfg_safe(s->cfg.secret_key) ||
	    !cfg_safe(s->cfg.endpoint) || !cfg_safe(s->cfg.bucket) || !cfg_safe(s->cfg.region) ||
	    !cfg_safe(s->tmpdir) || (strncmp(s->cfg.endpoint, "http://", 7) && strncmp(s->cfg.endpoint, "https://", 8))) {
		fprintf(stderr, "aq bench tier: cannot hand the bucket's endpoint, its keys or $TMPDIR to curl\n");
		s->tmpdir[0] = 0;
		return -1;
	}
	if (!mkdtemp(s->tmpdir)) {
		fprintf(stderr, "aq bench tier: mkdtemp %s: %s\n", s->tmpdir, strerror(errno));
		s->tmpdir[0] = 0;
		return -1;
	}
	snprintf(s->body_path, sizeof s->body_path, "%s/body", s->tmpdir);
	snprintf(s->cfg_path, sizeof s->cfg_path, "%s/curl.conf", s->tmpdir);
	return 0;
}

static void s3_side_close(struct bt_s3 *s)
{
	if (!s->tmpdir[0])
		return;
	unlink(s->body_path);
	unlink(s->cfg_path);
	rmdir(s->tmpdir);
	s->tmpdir[0] = 0;
	explicit_bzero(s->cfg.secret_key, sizeof s->cfg.secret_key);
}

/* The URL of key, addressed as aqd addresses the bucket (keys here need no encoding). */
static void s3_url(const struct bt_s3 *s, const char *key, char *out, size_t size)
{
	const char *ep = s->cfg.endpoint;
	size_t scheme = strncmp(ep, "https://", 8) ? 7 : 8, len = strlen(ep);
	while (len > scheme && ep[len - 1] == '/')
		len--;
	if (s->cfg.virtual_host)
		snprintf(out, size, "%.*s%s.%.*s/%s", (int)scheme, ep, s->cfg.bucket, (int)(len - scheme), ep + scheme,
			 key);
	else
		snprintf(out, size, "%.*s/%s/%s", (int)len, ep, s->cfg.bucket, key);
}

static void obj_key(char *buf, size_t size, uint32_t i)
{
	snprintf(buf, size, BT_KEY_PREFIX "%d/o%05u", (int)getpid(), i);
}

/* curl's configuration for one run: a block per transfer, separated by `next`. */
struct curl_cfg {
	char *text;
	size_t len, cap;
	uint32_t n;
};

static void cfg_printf(struct curl_cfg *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void cfg_printf(struct curl_cfg *k, const char *fmt, ...)
{
	if (!k->text) {
		k->cap = 4096;
		k->text = aq_malloc(k->cap);
	}
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(k->text + k->len, k->cap - k->len, fmt, ap);
		va_end(ap);
		AQ_ASSERT(n >= 0);
		if ((size_t)n < k->cap - k->len) {
			k->len += (size_t)n;
			return;
		}
		k->cap = 2 * k->cap + (size_t)n;
		k->text = aq_realloc(k->text, k->cap);
	}
}

/* Adds one request: method GET (range [off, off + len)), PUT (the body file) or DELETE. */
static void cfg_add(struct curl_cfg *k, const struct bt_s3 *s, const char *method, uint32_t obj, uint64_t off,
		    uint64_t len)
{
	char key[128], url[512];
	obj_key(key, sizeof key, obj);
	s3_url(s, key, url, sizeof url);
	if (k->n++)
		cfg_printf(k, "next\n");
	cfg_printf(k,
		   "silent\nshow-error\nconnect-timeout = 10\nspeed-limit = 1024\nspeed-time = 60\n"
		   "user = \"%s:%s\"\naws-sigv4 = \"aws:amz:%s:s3\"\nurl = \"%s\"\noutput = \"/dev/null\"\n"
		   "write-out = \"%%{http_code} %%{size_download} %%{size_upload}\\n\"\n",
		   s->cfg.access_key, s->cfg.secret_key, s->cfg.region, url);
	if (!strcmp(method, "PUT")) {
		cfg_printf(k, "header = \"x-amz-content-sha256: %s\"\nupload-file = \"%s\"\n", s->body_sha,
			   s->body_path);
	} else {
		cfg_printf(k, "header = \"x-amz-content-sha256: " BT_EMPTY_SHA256 "\"\n");
		if (!strcmp(method, "DELETE"))
			cfg_printf(k, "request = \"DELETE\"\n");
		else
			cfg_printf(k, "range = \"%" PRIu64 "-%" PRIu64 "\"\n", off, off + len - 1);
	}
}

/* Runs curl over the transfers in k, at most parallel at once; checks that every one was
 * answered 2xx and that bytes (when not 0) went down (GET) or up (PUT) in all. *ns gets
 * the wall time of the curl process. Returns 0 or -1 with a message. */
static int curl_run(const struct bt_s3 *s, struct curl_cfg *k, const char *what, uint32_t parallel, uint64_t bytes,
		    bool up, uint64_t *ns)
{
	int fd = open(s->cfg_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || write_all(fd, k->text, k->len)) {
		fprintf(stderr, "aq bench tier: write %s: %s\n", s->cfg_path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	char cmd[512];
	snprintf(cmd, sizeof cmd,
		 "exec curl --no-progress-meter --parallel --parallel-immediate --parallel-max %u --config '%s'",
		 MAX(parallel, 1u), s->cfg_path);
	uint64_t t0 = aq_mono_ns();
	FILE *p = popen(cmd, "r");
	if (!p) {
		fprintf(stderr, "aq bench tier: cannot run curl: %s\n", strerror(errno));
		return -1;
	}
	uint32_t lines = 0, bad = 0, first_bad = 0;
	uint64_t down = 0, sent = 0;
	char line[256];
	while (fgets(line, sizeof line, p)) {
		unsigned code = 0;
		unsigned long long d = 0, u = 0;
		if (sscanf(line, "%u %llu %llu", &code, &d, &u) != 3)
			continue;
		lines++;
		down += d;
		sent += u;
		if (code < 200 || code > 299) {
			if (!bad++)
				first_bad = code;
		}
	}
	int st = pclose(p);
	*ns = aq_mono_ns() - t0;
	if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) || lines != k->n || bad) {
		fprintf(stderr, "aq bench tier: plain S3 %s with curl: ", what);
		if (st == -1 || !WIFEXITED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 127))
			fprintf(stderr, "curl did not run (is it installed?)\n");
		else if (bad)
			fprintf(stderr, "%u of %u requests answered %u (first), not 2xx\n", bad, k->n, first_bad);
		else
			fprintf(stderr, "curl exit %d, %u of %u requests done\n", WEXITSTATUS(st), lines, k->n);
		return -1;
	}
	if (bytes && (up ? sent : down) != bytes) {
		fprintf(stderr, "aq bench tier: plain S3 %s moved %" PRIu64 " bytes, not %" PRIu64 "\n", what,
			up ? sent : down, bytes);
		return -1;
	}
	return 0;
}

/* Writes the body every baseline PUT sends (obj_bytes of pseudo-random bytes) and its
 * SHA-256, the x-amz-content-sha256 that S3 checks, as aqd's uploads carry. */
static int write_body(struct bt_s3 *s, uint64_t seed)
{
	int fd = open(s->body_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "aq bench tier: create %s: %s\n", s->body_path, strerror(errno));
		return -1;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	AQ_ASSERT(md && EVP_DigestInit_ex(md, EVP_sha256(), NULL));
	uint8_t *buf = aq_malloc(BT_PIECE_BYTES);
	int rc = 0;
	for (uint64_t off = 0; off < s->obj_bytes && !rc; off += BT_PIECE_BYTES) {
		size_t len = (size_t)MIN((uint64_t)BT_PIECE_BYTES, s->obj_bytes - off);
		ds_fill(ds_key(seed, UINT32_MAX), off, buf, len);
		AQ_ASSERT(EVP_DigestUpdate(md, buf, len));
		rc = write_all(fd, buf, len);
	}
	free(buf);
	uint8_t sum[32];
	unsigned sum_len = 0;
	AQ_ASSERT(EVP_DigestFinal_ex(md, sum, &sum_len) && sum_len == sizeof sum);
	EVP_MD_CTX_free(md);
	if (close(fd) || rc) {
		fprintf(stderr, "aq bench tier: write %s: %s\n", s->body_path, strerror(errno));
		return -1;
	}
	for (unsigned i = 0; i < sum_len; i++)
		snprintf(s->body_sha + 2 * i, 3, "%02x", sum[i]);
	return 0;
}

/* PUTs of the baseline objects, put_parallel in flight. */
static int baseline_put(struct bt_run *r, uint64_t *ns)
{
	struct bt_s3 *s = &r->s3;
	if (write_body(s, r->seed + r->round))
		return -1;
	struct curl_cfg k = {0};
	for (uint32_t i = 0; i < s->nobj; i++)
		cfg_add(&k, s, "PUT", i, 0, s->obj_bytes);
	s->have_objects = true;
	int rc = curl_run(s, &k, "PUT", s->put_parallel, s->nobj * s->obj_bytes, true, ns);
	explicit_bzero(k.text, k.len);
	free(k.text);
	return rc;
}

/* Ranged GETs of the baseline objects in pieces as large as the chunks Aquifer recalls,
 * T in flight. */
static int baseline_get(struct bt_run *r, const char *what, uint64_t *ns)
{
	struct bt_s3 *s = &r->s3;
	uint64_t piece = MIN((uint64_t)r->chunk_size, r->file_size);
	struct curl_cfg k = {0};
	for (uint32_t i = 0; i < s->nobj; i++)
		for (uint64_t off = 0; off < s->obj_bytes; off += piece)
			cfg_add(&k, s, "GET", i, off, MIN(piece, s->obj_bytes - off));
	int rc = curl_run(s, &k, what, (uint32_t)r->threads, s->nobj * s->obj_bytes, false, ns);
	explicit_bzero(k.text, k.len);
	free(k.text);
	return rc;
}

static int baseline_delete(struct bt_run *r)
{
	struct bt_s3 *s = &r->s3;
	if (!s->have_objects || !s->nobj)
		return 0;
	struct curl_cfg k = {0};
	for (uint32_t i = 0; i < s->nobj; i++)
		cfg_add(&k, s, "DELETE", i, 0, 0);
	uint64_t ns;
	/* one at a time: s3rver removes a key's emptied directories, and deletes side by side
	 * race there (500 InternalError) */
	int rc = curl_run(s, &k, "DELETE", 1, 0, false, &ns);
	explicit_bzero(k.text, k.len);
	free(k.text);
	if (!rc)
		s->have_objects = false;
	return rc;
}

/* The baseline objects mirror the packs that demote just made: their number and mean size
 * from the tier's status before and after, when those add up to exactly the bytes
 * demoted (the tier may have deleted dead objects meanwhile, e.g. of files that the
 * orphan collector removed late); otherwise as many as an even spread of the chunks over
 * the targets needs. */
static void plan_baseline(struct bt_run *r, const struct aq_tier_status *before, const struct aq_tier_status *after)
{
	struct bt_s3 *s = &r->s3;
	uint64_t nobj;
	s->packs_measured = after->objects > before->objects &&
			    after->object_bytes - before->object_bytes == r->total_bytes &&
			    after->object_bytes > before->object_bytes;
	if (s->packs_measured) {
		nobj = after->objects - before->objects;
	} else {
		uint64_t chunks = r->nfiles * ((r->file_size + r->chunk_size - 1) / r->chunk_size);
		uint64_t targets = MIN((uint64_t)r->ntargets, chunks);
		uint64_t per_target = (r->total_bytes + targets - 1) / targets;
		nobj = targets * ((per_target + BT_PACK_MAX - 1) / BT_PACK_MAX);
	}
	nobj = MAX(1u, MIN(nobj, r->total_bytes));
	s->nobj = (uint32_t)nobj;
	s->obj_bytes = r->total_bytes / nobj;
	/* what one pack's upload has in flight: a multipart upload's parts, else the one PUT */
	uint64_t parts = (s->obj_bytes + S3_PART_SIZE - 1) / S3_PART_SIZE;
	s->put_parallel = s->obj_bytes > S3_MULTIPART_THRESHOLD ? (uint32_t)MIN(parts, (uint64_t)S3_UPLOAD_THREADS) : 1;
}

/* ---- a round ---- */

struct bt_rates {
	double aq[BT_PHASES], s3[BT_PHASES];
};

static int tier_status(struct bt_run *r, struct aq_tier_status *st)
{
	int rc = aq_tier_status(r->c, st);
	if (rc)
		fprintf(stderr, "aq bench tier: tier status: %s: %s\n", aq_strerror(rc), aq_tier_last_error());
	return rc ? -1 : 0;
}

static int pool_phase(struct bt_run *r, bt_file_fn fn, size_t buf_bytes, uint64_t *ns)
{
	if (!pool_run(r, fn, buf_bytes, ns))
		return 0;
	fprintf(stderr, "aq bench tier: %s\n", r->err.msg);
	return -1;
}

/* Removes the files (best effort); returns -1 if one could not be removed. */
static int remove_files(struct bt_run *r)
{
	int bad = 0;
	if (r->empty_ino) {
		int rc = aq_unlink_at(r->c, NULL, r->dir_ino, "empty");
		if (rc && rc != -ENOENT && !bad++)
			fprintf(stderr, "aq bench tier: unlink %s/empty: %s\n", r->dir_path, aq_strerror(rc));
	}
	for (uint32_t i = 0; r->files && i < r->nfiles; i++) {
		int rc = aq_unlink_at(r->c, NULL, r->dir_ino, r->files[i].name);
		if (rc && rc != -ENOENT) {
			if (!bad++)
				fprintf(stderr, "aq bench tier: unlink %s/%s: %s\n", r->dir_path, r->files[i].name,
					aq_strerror(rc));
		}
	}
	return bad ? -1 : 0;
}

/* Demotes the empty file: every target deletes the pack objects nothing points to any
 * more (those of the previous round's contents, which its rewrite dropped), so that the
 * timed demote has only its own packs to make and the status counts only them. */
static int collect_dead_objects(struct bt_run *r)
{
	uint64_t freed = 0;
	int rc = aq_tier_demote(r->c, &r->empty_ino, 1, &freed, NULL);
	if (rc)
		fprintf(stderr, "aq bench tier: demote of an empty file: %s: %s\n", aq_strerror(rc),
			aq_tier_last_error());
	return rc ? -1 : 0;
}

static int run_round(struct bt_run *r, struct bt_rates *out)
{
	uint64_t ns;
	struct aq_tier_status before, after;
	size_t chunk_buf = AQ_CHUNK_SIZE_MAX;

	/* 1. the files, hot */
	if (pool_phase(r, write_file, BT_PIECE_BYTES, NULL))
		return -1;
	r->chunk_size = r->files[0].chunk_size; /* one chunk size for the files of a directory */
	if (r->chunk_size == 0 || r->chunk_size > AQ_CHUNK_SIZE_MAX) {
		fprintf(stderr, "aq bench tier: the files' chunk size %u is out of range\n", r->chunk_size);
		return -1;
	}

	/* 2. demote, then PUTs of objects like its packs */
	uint32_t calls;
	if (collect_dead_objects(r) || tier_status(r, &before) || demote_all(r, "first", &ns, &calls) ||
	    tier_status(r, &after))
		return -1;
	out->aq[BT_DEMOTE] = mb_per_s(r->total_bytes, ns);
	r->demote_calls_max = MAX(r->demote_calls_max, calls);
	plan_baseline(r, &before, &after);
	if (baseline_put(r, &ns))
		return -1;
	out->s3[BT_DEMOTE] = mb_per_s(r->s3.nobj * r->s3.obj_bytes, ns);

	/* 3. cold read, every file checked; then ranged GETs */
	if (pool_phase(r, read_file, chunk_buf, &ns))
		return -1;
	AQ_ASSERT(atomic_load(&r->bytes) == r->total_bytes);
	out->aq[BT_COLD] = mb_per_s(r->total_bytes, ns);
	if (baseline_get(r, "GET", &ns))
		return -1;
	out->s3[BT_COLD] = mb_per_s(r->s3.nobj * r->s3.obj_bytes, ns);

	/* 4. cold again (the reads brought the chunks back), prefetch, the GETs again */
	uint64_t ns2;
	if (demote_all(r, "after the cold read", &ns2, &calls))
		return -1;
	if (pool_phase(r, hydrate_file, 0, &ns))
		return -1;
	out->aq[BT_PREFETCH] = mb_per_s(r->total_bytes, ns);
	if (baseline_get(r, "GET (prefetch)", &ns))
		return -1;
	out->s3[BT_PREFETCH] = mb_per_s(r->s3.nobj * r->s3.obj_bytes, ns);

	/* what the prefetch brought back reads right, too (from flash: not timed) */
	if (pool_phase(r, read_file, chunk_buf, NULL))
		return -1;
	return baseline_delete(r);
}

/* ---- output ---- */

static void print_human(const struct bt_run *r, const double *aq, const double *s3, const double *ratio, int rounds)
{
	char b1[32], b2[32], b3[32];
	const struct bt_s3 *s = &r->s3;
	printf("aq bench tier: %u files x %s = %s in %s, %d thread%s, %d round%s%s\n", r->nfiles,
	       cli_bytes(r->file_size, b1, sizeof b1), cli_bytes(r->total_bytes, b2, sizeof b2), r->dir_path,
	       r->threads, r->threads == 1 ? "" : "s", rounds, rounds == 1 ? "" : "s", rounds > 1 ? " (medians)" : "");
	printf("  bucket %s at %s (%s); chunks of %s\n", s->cfg.bucket, s->cfg.endpoint, s->cfg.region,
	       cli_bytes(r->chunk_size, b1, sizeof b1));
	printf("  demote:    aq_tier_demote of all files (%u call%s); %u pack object%s of %s (%s), one pack at a\n"
	       "             time per target, %u request%s in flight; plain S3: %u PUTs of %s, %u in flight\n",
	       r->demote_calls_max, r->demote_calls_max == 1 ? "" : "s", s->nobj, s->nobj == 1 ? "" : "s",
	       cli_bytes(s->obj_bytes, b1, sizeof b1), s->packs_measured ? "from the tier's status" : "estimated",
	       s->put_parallel, s->put_parallel == 1 ? "" : "s", s->nobj, cli_bytes(s->obj_bytes, b3, sizeof b3),
	       s->put_parallel);
	if (r->demote_calls_max > 1)
		printf("             (compaction moved chunks on flash during an upload: they stayed, and went with\n"
		       "             the next call)\n");
	uint64_t piece = MIN((uint64_t)r->chunk_size, r->file_size);
	printf("  cold read: %d threads, one chunk per aq_pread (a ranged GET each); plain S3: ranged GETs of %s,\n"
	       "             %d in flight\n",
	       r->threads, cli_bytes(piece, b1, sizeof b1), r->threads);
	printf("  prefetch:  aq_tier_hydrate per file on %d threads; plain S3: the same GETs again\n\n", r->threads);
	printf("%-12s %14s %14s %8s\n", "phase", "aquifer MB/s", "plain S3 MB/s", "ratio");
	for (int ph = 0; ph < BT_PHASES; ph++)
		printf("%-12s %14.1f %14.1f %8.2f\n", phase_name[ph], aq[ph], s3[ph], ratio[ph]);
	printf("\nverified: %u files byte-exact (crc32c) after the cold read and after the prefetch\n", r->nfiles);
}

static void print_json(const struct bt_run *r, const double *aq, const double *s3, const double *ratio, int rounds)
{
	const struct bt_s3 *s = &r->s3;
	printf("{\"files\":%u,\"bytes\":%" PRIu64 ",\"threads\":%d,\"rounds\":%d,\"chunk_bytes\":%u,"
	       "\"pack_objects\":%u,\"pack_bytes\":%" PRIu64 ",\"packs_from\":\"%s\",\"put_parallel\":%u,"
	       "\"demote_calls\":%u,\"verified_files\":%u,",
	       r->nfiles, r->total_bytes, r->threads, rounds, r->chunk_size, s->nobj, s->obj_bytes,
	       s->packs_measured ? "status" : "estimate", s->put_parallel, r->demote_calls_max, r->nfiles);
	printf("\"aquifer\":{\"demote_mb_per_s\":%.2f,\"cold_read_mb_per_s\":%.2f,\"prefetch_mb_per_s\":%.2f},",
	       aq[BT_DEMOTE], aq[BT_COLD], aq[BT_PREFETCH]);
	printf("\"plain_s3\":{\"put_mb_per_s\":%.2f,\"get_mb_per_s\":%.2f,\"prefetch_get_mb_per_s\":%.2f},",
	       s3[BT_DEMOTE], s3[BT_COLD], s3[BT_PREFETCH]);
	printf("\"ratio\":{\"demote\":%.3f,\"cold_read\":%.3f,\"prefetch\":%.3f}}\n", ratio[BT_DEMOTE], ratio[BT_COLD],
	       ratio[BT_PREFETCH]);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: aq bench tier [--dir PATH] [--files N] [--file-size BYTES] [--threads T] [--rounds R]\n"
		"                     [--json] [--cluster FILE]\n"
		"  needs an object tier (aq tier set) and curl 7.75 or later on PATH\n"
		"  --dir PATH         a directory inside Aquifer (default /); the files go in bench-tier-PID there\n"
		"  --files N          files (default 64)\n"
		"  --file-size BYTES  bytes per file (default 8388608)\n"
		"  --threads T        readers, prefetchers and GETs in flight (default 8)\n"
		"  --rounds R         repeat and report medians (default 1)\n"
		"  --json             print one JSON object\n");
}

/* Makes bench-tier-PID under dir. */
static int dir_open(struct bt_run *r, const char *dir)
{
	snprintf(r->dir_name, sizeof r->dir_name, "bench-tier-%d", (int)getpid());
	snprintf(r->dir_path, sizeof r->dir_path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/",
		 r->dir_name);
	struct aq_attr a;
	int rc = aq_resolve(r->c, dir, &a);
	if (!rc && !S_ISDIR(a.mode))
		rc = -ENOTDIR;
	if (rc) {
		fprintf(stderr, "aq bench tier: --dir %s (inside Aquifer): %s\n", dir, aq_strerror(rc));
		return -1;
	}
	r->parent_ino = a.ino;
	rc = aq_mkdir_at(r->c, NULL, a.ino, r->dir_name, 0755, &a);
	if (rc) {
		fprintf(stderr, "aq bench tier: mkdir %s: %s\n", r->dir_path, aq_strerror(rc));
		return -1;
	}
	r->dir_ino = a.ino;
	rc = aq_mknod(r->c, NULL, r->dir_ino, "empty", S_IFREG | 0644, 0, 0, &a);
	if (rc) {
		fprintf(stderr, "aq bench tier: create %s/empty: %s\n", r->dir_path, aq_strerror(rc));
		return -1;
	}
	r->empty_ino = a.ino;
	return 0;
}

int bench_tier(int argc, char **argv)
{
	const char *dir = "/", *cluster = NULL;
	unsigned long long files = 64, file_size = 8ull << 20;
	int threads = 8, rounds = 1;
	bool json = false;
	static const struct option lopts[] = {
		{"dir", required_argument, 0, 'd'},     {"files", required_argument, 0, 'n'},
		{"file-size", required_argument, 0, 's'}, {"threads", required_argument, 0, 't'},
		{"rounds", required_argument, 0, 'r'},  {"json", no_argument, 0, 'j'},
		{"cluster", required_argument, 0, 'c'}, {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0}};
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "d:n:s:t:r:jc:h", lopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'n': files = strtoull(optarg, NULL, 10); break;
		case 's': file_size = strtoull(optarg, NULL, 10); break;
		case 't': threads = atoi(optarg); break;
		case 'r': rounds = atoi(optarg); break;
		case 'j': json = true; break;
		case 'c': cluster = optarg; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	if (optind != argc || !*dir) {
		usage();
		return 2;
	}
	if (files < 1 || files > BT_FILES_MAX || file_size < 1 || file_size > BT_FILE_SIZE_MAX ||
	    files * file_size > BT_BYTES_MAX || threads < 1 || threads > BT_THREADS_MAX || rounds < 1 ||
	    rounds > BT_ROUNDS_MAX) {
		fprintf(stderr,
			"aq bench tier: --files 1..%u, --file-size 1..%llu, at most %llu bytes in all, --threads 1..%d, "
			"--rounds 1..%d\n",
			BT_FILES_MAX, BT_FILE_SIZE_MAX, BT_BYTES_MAX, BT_THREADS_MAX, BT_ROUNDS_MAX);
		return 2;
	}

	struct bt_run r = {.nfiles = (uint32_t)files, .file_size = file_size, .total_bytes = files * file_size,
			   .threads = threads};
	bench_err_init(&r.err);
	int status = 1;
	r.c = cli_connect(cluster);
	if (!r.c)
		goto out;
	struct aq_tier_status st;
	if (tier_status(&r, &st))
		goto out;
	if (!st.configured) {
		fprintf(stderr, "aq bench tier: no object tier is configured: run aq tier set --endpoint URL "
				"--bucket B first\n");
		goto out;
	}
	struct aq_statfs sf;
	int rc = aq_statfs(r.c, &sf);
	if (rc) {
		fprintf(stderr, "aq bench tier: statfs: %s\n", aq_strerror(rc));
		goto out;
	}
	r.ntargets = MAX(sf.targets, 1u);
	if (s3_side_open(&r.s3, &st))
		goto out;
	if (dir_open(&r, dir))
		goto out;
	r.seed = aq_mix64((uint64_t)getpid(), (uint64_t)aq_now_ns());
	r.files = aq_calloc(r.nfiles, sizeof *r.files);
	for (uint32_t i = 0; i < r.nfiles; i++)
		snprintf(r.files[i].name, sizeof r.files[i].name, "f%06u", i);

	double aq[BT_PHASES][BT_ROUNDS_MAX], s3[BT_PHASES][BT_ROUNDS_MAX], ratio[BT_PHASES][BT_ROUNDS_MAX];
	int done = 0;
	for (; done < rounds; done++) {
		struct bt_rates rates;
		r.round = (uint32_t)done;
		if (run_round(&r, &rates))
			break;
		for (int ph = 0; ph < BT_PHASES; ph++) {
			aq[ph][done] = rates.aq[ph];
			s3[ph][done] = rates.s3[ph];
			ratio[ph][done] = rates.s3[ph] > 0 ? rates.aq[ph] / rates.s3[ph] : 0;
		}
	}
	if (done == rounds) {
		/* ratios: the median of the rounds' ratios, as docs/performance.md reports them */
		double aqm[BT_PHASES], s3m[BT_PHASES], rm[BT_PHASES];
		for (int ph = 0; ph < BT_PHASES; ph++) {
			aqm[ph] = median(aq[ph], rounds);
			s3m[ph] = median(s3[ph], rounds);
			rm[ph] = median(ratio[ph], rounds);
		}
		if (json)
			print_json(&r, aqm, s3m, rm, rounds);
		else
			print_human(&r, aqm, s3m, rm, rounds);
		status = 0;
	}

out:
	/* what a failed round left behind (a finished one removed its own) */
	if (r.s3.have_objects)
		baseline_delete(&r);
	if (r.dir_ino) {
		if (remove_files(&r))
			status = 1;
		rc = aq_rmdir_at(r.c, NULL, r.parent_ino, r.dir_name);
		if (rc) {
			fprintf(stderr, "aq bench tier: rmdir %s: %s\n", r.dir_path, aq_strerror(rc));
			status = 1;
		}
	}
	s3_side_close(&r.s3);
	free(r.files);
	if (r.c)
		aq_disconnect(r.c);
	bench_err_destroy(&r.err);
	return status;
}

/*
 * bench_train.c - `aq bench train`: a simulated training job over a dataset written by
 * `aq bench gen`, in the manner of MLPerf Storage: W loader threads read every sample
 * once per epoch in a fresh random order, in batches of B, into a bounded queue; S
 * simulated accelerators each take a batch and "compute" for compute_us per sample.
 * Accelerator utilization AU = compute time / (S x epoch wall time); a storage system
 * keeps up when AU >= 90%.
 *
 * A sample is a whole file (images) or one record of record_bytes of a shard (shards;
 * records of all shards are visited in one random order). --via native reads with libaq's
 * batched asynchronous reads (one aq_ioring per loader, --depth reads in flight, inode
 * numbers and sizes from one readdirplus listing); fuse and local use open/pread/close per
 * sample (a shard stays open in its loader for the epoch).
 *
 * Accelerator timeline: an accelerator starts a batch at max(when it became free, when
 * the batch was ready) and is busy for compute_us x samples; the epoch ends when the last
 * accelerator is free. The thread sleeps until then, so the queue's back-pressure is real,
 * but a late wake-up of the sleeping thread is not counted against the storage.
 *
 * Invariants: every sample's length and crc32c are checked against the MANIFEST; a
 * failed or wrong read stops the run with a message naming the sample and exit status 1,
 * never a number. Every epoch visits every sample exactly once (asserted).
 */
#include "cli/bench.h"
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TR_WORKERS_MAX 256
#define TR_ACCEL_MAX 1024
#define TR_BATCH_MAX 65536
#define TR_DEPTH_MAX 4096
#define TR_LIST_PAGE 4096         /* entries per aq_readdir_ino call (the server's limit) */
#define TR_COPY_PIECE (4u << 20)  /* --stage-to copies in pieces of this */
#define TR_AU_PASS 0.9
#define TR_LOOPBACK_S 3

struct tr_opts {
	int workers, accel, depth, prefetch;
	uint32_t batch;
	uint64_t compute_us;
	int epochs;
	bool cold;
	uint64_t seed;
};

/* One sample: record rec of file file (rec 0 for images). */
struct tr_sample {
	uint32_t file, rec;
};

/* A dataset as one side reaches it. */
struct tr_side {
	const char *tag;            /* "aquifer", "local", "staged" for messages */
	enum bench_via via;
	struct aq_client *c;        /* native */
	const char *dir;
	int dir_fd;                 /* fuse, local */
	struct ds_manifest m;
	struct tr_sample *samples;
	uint64_t nsamples, total_bytes, max_sample_bytes;
};

/* What one run of E epochs measured. */
struct tr_result {
	uint64_t samples, bytes;
	double wall_s, ttfb_s, compute_s, au;
	int max_accel;              /* -1: not searched */
};

struct tr_batch {
	uint32_t samples;
	uint64_t bytes;
	uint64_t ready_ns;
};

/* The bounded prefetch queue between loaders and accelerators. */
struct tr_queue {
	pthread_mutex_t lock;
	pthread_cond_t nonempty, nonfull;
	struct tr_batch *ring;
	uint32_t cap, head, n;
	bool closed;
};

struct tr_epoch {
	struct tr_side *side;
	const struct tr_opts *o;
	int accel;
	uint32_t *perm;             /* sample indices in this epoch's order */
	uint64_t nbatches;
	_Atomic uint64_t next_batch;
	_Atomic uint64_t visited;   /* samples read and verified */
	struct tr_queue q;
	struct bench_err *err;
	uint64_t t0_ns;
	pthread_mutex_t acc_lock;   /* guards the accelerator totals below */
	uint64_t first_ns, end_ns, compute_ns, samples, bytes;
};

static uint64_t sample_len(const struct tr_side *s, const struct tr_sample *x)
{
	const struct ds_file *f = &s->m.files[x->file];
	if (s->m.kind == DS_IMAGES)
		return f->size;
	uint64_t off = (uint64_t)x->rec * s->m.record_bytes;
	return MIN(s->m.record_bytes, f->size - off);
}

static uint32_t sample_crc(const struct tr_side *s, const struct tr_sample *x)
{
	const struct ds_file *f = &s->m.files[x->file];
	return s->m.kind == DS_IMAGES ? f->crc : f->rec_crc[x->rec];
}

/* Checks a read of sample x; records a failure and returns -1 when it is wrong. */
static int sample_check(struct tr_epoch *e, const struct tr_sample *x, int64_t got, const void *buf)
{
	const struct tr_side *s = e->side;
	const struct ds_file *f = &s->m.files[x->file];
	uint64_t want = sample_len(s, x);
	char what[300];
	if (s->m.kind == DS_IMAGES)
		snprintf(what, sizeof what, "%s/%s", s->dir, f->name);
	else
		snprintf(what, sizeof what, "%s/%s record %u", s->dir, f->name, x->rec);
	if (got < 0) {
		char ino[40] = "";
		if (s->via == VIA_NATIVE)
			snprintf(ino, sizeof ino, " (ino %" PRIx64 ")", f->ino);
		bench_fail(e->err, "%s side, read of %s%s failed: %s", s->tag, what, ino, aq_strerror((int)got));
		return -1;
	}
	if ((uint64_t)got != want) {
		bench_fail(e->err, "%s side, read of %s returned %" PRId64 " bytes, the manifest says %" PRIu64, s->tag,
			   what, got, want);
		return -1;
	}
	uint32_t crc = crc32c(0, buf, want);
	if (crc != sample_crc(s, x)) {
		bench_fail(e->err, "%s side, %s: crc32c %08x, the manifest says %08x: wrong bytes", s->tag, what, crc,
			   sample_crc(s, x));
		return -1;
	}
	atomic_fetch_add(&e->visited, 1);
	return 0;
}

/* ---- the prefetch queue ---- */

static void queue_init(struct tr_queue *q, uint32_t cap)
{
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->nonempty, NULL);
	pthread_cond_init(&q->nonfull, NULL);
	q->ring = aq_calloc(cap, sizeof *q->ring);
	q->cap = cap;
}

static void queue_destroy(struct tr_queue *q)
{
	pthread_cond_destroy(&q->nonempty);
	pthread_cond_destroy(&q->nonfull);
	pthread_mutex_destroy(&q->lock);
	free(q->ring);
}

/* Blocks while the queue is full (the prefetch limit). */
static void queue_push(struct tr_queue *q, const struct tr_batch *b)
{
	pthread_mutex_lock(&q->lock);
	while (q->n == q->cap)
		pthread_cond_wait(&q->nonfull, &q->lock);
	q->ring[(q->head + q->n++) % q->cap] = *b;
	pthread_cond_signal(&q->nonempty);
	pthread_mutex_unlock(&q->lock);
}

/* Blocks for a batch; false once the queue is closed and empty. */
static bool queue_pop(struct tr_queue *q, struct tr_batch *b)
{
	pthread_mutex_lock(&q->lock);
	while (q->n == 0 && !q->closed)
		pthread_cond_wait(&q->nonempty, &q->lock);
	bool got = q->n > 0;
	if (got) {
		*b = q->ring[q->head];
		q->head = (q->head + 1) % q->cap;
		q->n--;
		pthread_cond_signal(&q->nonfull);
	}
	pthread_mutex_unlock(&q->lock);
	return got;
}

static void queue_close(struct tr_queue *q)
{
	pthread_mutex_lock(&q->lock);
	q->closed = true;
	pthread_cond_broadcast(&q->nonempty);
	pthread_mutex_unlock(&q->lock);
}

/* Samples of batch b: perm[b * batch, ...), the last batch may be short. */
static uint32_t batch_size(const struct tr_epoch *e, uint64_t b)
{
	uint64_t lo = b * e->o->batch;
	return (uint32_t)MIN((uint64_t)e->o->batch, e->side->nsamples - lo);
}

static void batch_ready(struct tr_epoch *e, uint32_t samples, uint64_t bytes)
{
	struct tr_batch b = {.samples = samples, .bytes = bytes, .ready_ns = aq_mono_ns()};
	queue_push(&e->q, &b);
}

/* ---- native loader: one aq_ioring, --depth reads in flight ---- */

/* A batch being read: its reads are in flight or not yet submitted. */
struct nl_batch {
	uint64_t b;
	uint32_t n, submitted, left;
	uint64_t bytes;
	struct nl_batch *next_free;
};

struct nl_slot {
	struct aq_io io;
	struct tr_sample x;
	struct nl_batch *batch;
	struct nl_slot *next_free;
};

static void native_loader(struct tr_epoch *e)
{
	struct tr_side *s = e->side;
	uint32_t depth = (uint32_t)e->o->depth;
	uint32_t nbatches = depth / e->o->batch + 2; /* one being submitted, the rest in flight */
	struct aq_ioring *ring;
	int rc = aq_ioring_create(s->c, depth, &ring);
	if (rc) {
		bench_fail(e->err, "aq_ioring_create: %s", aq_strerror(rc));
		return;
	}
	struct nl_slot *slots = aq_calloc(depth, sizeof *slots), *free_slots = NULL;
	/* depth buffers, where a local loader reuses one: as huge pages, so that a fresh
	 * epoch's first touch of them costs a fault per 2 MiB, not per 4 KiB (64 MiB of shard
	 * records per loader took 0.3-0.6 s of faults on this VM, before the first batch) */
	size_t bufs_len = aq_huge_round(depth * s->max_sample_bytes);
	uint8_t *bufs = aq_map_huge(bufs_len);
	for (uint32_t i = 0; i < depth; i++) {
		slots[i].io.buf = bufs + i * s->max_sample_bytes;
		slots[i].io.user = &slots[i];
		slots[i].next_free = free_slots;
		free_slots = &slots[i];
	}
	struct nl_batch *batches = aq_calloc(nbatches, sizeof *batches), *free_batches = NULL;
	for (uint32_t i = 0; i < nbatches; i++) {
		batches[i].next_free = free_batches;
		free_batches = &batches[i];
	}
	struct aq_io **ios = aq_calloc(depth, sizeof *ios);
	struct nl_batch *cur = NULL;
	bool exhausted = false;
	for (;;) {
		uint32_t nsub = 0;
		while (free_slots && !bench_failed(e->err)) {
			if (!cur) {
				if (exhausted || !free_batches)
					break;
				uint64_t b = atomic_fetch_add(&e->next_batch, 1);
				if (b >= e->nbatches) {
					exhausted = true;
					break;
				}
				cur = free_batches;
				free_batches = cur->next_free;
				*cur = (struct nl_batch){.b = b, .n = batch_size(e, b)};
				cur->left = cur->n;
			}
			struct nl_slot *sl = free_slots;
			free_slots = sl->next_free;
			sl->x = s->samples[e->perm[cur->b * e->o->batch + cur->submitted]];
			sl->batch = cur;
			uint64_t len = sample_len(s, &sl->x);
			sl->io.ino = s->m.files[sl->x.file].ino;
			sl->io.off = (uint64_t)sl->x.rec * s->m.record_bytes;
			sl->io.len = len;
			sl->io.file_size = s->m.files[sl->x.file].size;
			cur->bytes += len;
			ios[nsub++] = &sl->io;
			if (++cur->submitted == cur->n)
				cur = NULL;
		}
		for (uint32_t done = 0; done < nsub;) {
			int n = aq_ioring_submit(ring, ios + done, nsub - done);
			AQ_ASSERT(n != 0); /* the ring has room for every free slot */
			if (n < 0) {
				bench_fail(e->err, "aq_ioring_submit: %s", aq_strerror(n));
				/* the reads not taken go back; the ones taken complete normally */
				for (uint32_t i = done; i < nsub; i++) {
					struct nl_slot *sl = ios[i]->user;
					sl->next_free = free_slots;
					free_slots = sl;
				}
				break;
			}
			done += (uint32_t)n;
		}
		if (aq_ioring_inflight(ring) == 0)
			break;
		int n = aq_ioring_reap(ring, ios, depth, 1);
		AQ_ASSERT(n > 0);
		for (int i = 0; i < n; i++) {
			struct nl_slot *sl = ios[i]->user;
			struct nl_batch *bt = sl->batch;
			sample_check(e, &sl->x, sl->io.result, sl->io.buf);
			sl->next_free = free_slots;
			free_slots = sl;
			if (--bt->left == 0 && bt->submitted == bt->n) {
				if (!bench_failed(e->err))
					batch_ready(e, bt->n, bt->bytes);
				bt->next_free = free_batches;
				free_batches = bt;
			}
		}
	}
	aq_ioring_destroy(ring);
	free(ios);
	free(batches);
	munmap(bufs, bufs_len);
	free(slots);
}

/* ---- fuse/local loader: open/pread/close per sample ---- */

static void sys_loader(struct tr_epoch *e)
{
	struct tr_side *s = e->side;
	bool shards = s->m.kind == DS_SHARDS;
	/* one byte more than the largest sample: an image longer than its manifest shows up */
	uint8_t *buf = aq_malloc(s->max_sample_bytes + 1);
	int *fds = NULL;
	if (shards) {
		fds = aq_malloc(s->m.nfiles * sizeof *fds);
		for (uint32_t i = 0; i < s->m.nfiles; i++)
			fds[i] = -1;
	}
	for (;;) {
		uint64_t b = atomic_fetch_add(&e->next_batch, 1);
		if (b >= e->nbatches || bench_failed(e->err))
			break;
		uint32_t n = batch_size(e, b);
		uint64_t bytes = 0;
		for (uint32_t k = 0; k < n; k++) {
			const struct tr_sample *x = &s->samples[e->perm[b * e->o->batch + k]];
			const struct ds_file *f = &s->m.files[x->file];
			uint64_t len = sample_len(s, x);
			int fd = shards ? fds[x->file] : -1;
			if (fd < 0)
				fd = openat(s->dir_fd, f->name, O_RDONLY | O_CLOEXEC);
			int64_t got = -errno;
			if (fd >= 0) {
				uint64_t off = (uint64_t)x->rec * s->m.record_bytes;
				got = 0;
				/* a FUSE read returns at most max_read bytes: loop until the sample or EOF */
				while ((uint64_t)got < len + !shards) {
					ssize_t r = pread(fd, buf + got, len + !shards - (uint64_t)got, (off_t)(off + (uint64_t)got));
					if (r < 0)
						got = -errno;
					if (r <= 0)
						break;
					got += r;
				}
				if (shards)
					fds[x->file] = fd;
				else
					close(fd);
			}
			if (sample_check(e, x, got, buf))
				goto out;
			bytes += len;
		}
		batch_ready(e, n, bytes);
	}
out:
	for (uint32_t i = 0; fds && i < s->m.nfiles; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	free(fds);
	free(buf);
}

static void *loader_main(void *arg)
{
	struct tr_epoch *e = arg;
	if (e->side->via == VIA_NATIVE)
		native_loader(e);
	else
		sys_loader(e);
	return NULL;
}

/* ---- accelerators ---- */

static void *accel_main(void *arg)
{
	struct tr_epoch *e = arg;
	uint64_t free_at = e->t0_ns, first = UINT64_MAX, compute = 0, samples = 0, bytes = 0;
	struct tr_batch b;
	while (queue_pop(&e->q, &b)) {
		uint64_t start = MAX(free_at, b.ready_ns);
		uint64_t dur = e->o->compute_us * 1000 * b.samples;
		first = MIN(first, start);
		free_at = start + dur;
		compute += dur;
		samples += b.samples;
		bytes += b.bytes;
		struct timespec ts = {(time_t)(free_at / 1000000000), (long)(free_at % 1000000000)};
		while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	}
	pthread_mutex_lock(&e->acc_lock);
	e->first_ns = MIN(e->first_ns, first);
	e->end_ns = MAX(e->end_ns, free_at);
	e->compute_ns += compute;
	e->samples += samples;
	e->bytes += bytes;
	pthread_mutex_unlock(&e->acc_lock);
	return NULL;
}

/* ---- one epoch ---- */

/* A fresh random order of every sample (Fisher-Yates with a seeded splitmix64). */
static void shuffle(uint32_t *perm, uint64_t n, uint64_t seed)
{
	for (uint64_t i = 0; i < n; i++)
		perm[i] = (uint32_t)i;
	uint64_t state = seed;
	for (uint64_t i = n; i > 1; i--) {
		state += 0x9E3779B97F4A7C15ull;
		uint64_t j = aq_mix64(state, i) % i;
		uint32_t t = perm[i - 1];
		perm[i - 1] = perm[j];
		perm[j] = t;
	}
}

/* Runs epoch number epoch with accel accelerators; adds what it measured to res.
 * Returns 0, or -1 with the failure printed. */
static int run_epoch(struct tr_side *s, const struct tr_opts *o, int accel, int epoch, struct tr_result *res)
{
	if (o->cold) {
		int rc = bench_drop_caches();
		if (rc) {
			fprintf(stderr, "aq bench train: --cold: drop_caches: %s\n", strerror(-rc));
			return -1;
		}
	}
	struct bench_err err;
	bench_err_init(&err);
	struct tr_epoch *e = aq_calloc(1, sizeof *e);
	e->side = s;
	e->o = o;
	e->accel = accel;
	e->err = &err;
	e->perm = aq_malloc(s->nsamples * sizeof *e->perm);
	shuffle(e->perm, s->nsamples, aq_mix64(o->seed, (uint64_t)epoch));
	e->nbatches = (s->nsamples + o->batch - 1) / o->batch;
	e->first_ns = UINT64_MAX;
	queue_init(&e->q, (uint32_t)o->prefetch);
	pthread_mutex_init(&e->acc_lock, NULL);
	pthread_t *lt = aq_calloc((size_t)o->workers, sizeof *lt), *at = aq_calloc((size_t)accel, sizeof *at);

	e->t0_ns = aq_mono_ns();
	for (int i = 0; i < accel; i++)
		AQ_ASSERT(pthread_create(&at[i], NULL, accel_main, e) == 0);
	for (int i = 0; i < o->workers; i++)
		AQ_ASSERT(pthread_create(&lt[i], NULL, loader_main, e) == 0);
	for (int i = 0; i < o->workers; i++)
		pthread_join(lt[i], NULL);
	queue_close(&e->q);
	for (int i = 0; i < accel; i++)
		pthread_join(at[i], NULL);

	int status = 0;
	if (bench_failed(&err)) {
		fprintf(stderr, "aq bench train: %s\n", err.msg);
		status = -1;
	} else {
		AQ_ASSERT(atomic_load(&e->visited) == s->nsamples && e->samples == s->nsamples);
		AQ_ASSERT(e->bytes == s->total_bytes);
		res->samples += e->samples;
		res->bytes += e->bytes;
		res->wall_s += (double)(MAX(e->end_ns, e->t0_ns + 1) - e->t0_ns) / 1e9;
		res->compute_s += (double)e->compute_ns / 1e9;
		if (epoch == 0)
			res->ttfb_s = (double)(e->first_ns - e->t0_ns) / 1e9;
	}
	free(lt);
	free(at);
	pthread_mutex_destroy(&e->acc_lock);
	queue_destroy(&e->q);
	free(e->perm);
	free(e);
	bench_err_destroy(&err);
	return status;
}

/* All epochs with accel accelerators; res gets rates over all of them. */
static int run_job(struct tr_side *s, const struct tr_opts *o, int accel, struct tr_result *res)
{
	*res = (struct tr_result){.max_accel = -1};
	for (int ep = 0; ep < o->epochs; ep++)
		if (run_epoch(s, o, accel, ep, res))
			return -1;
	res->au = res->compute_s / ((double)accel * res->wall_s);
	return 0;
}

/* The largest S with AU >= 90%: doubling from 1, then bisecting. Returns it (0 when even
 * one accelerator waits too long), or -1 after a failure. */
static int find_max(struct tr_side *s, const struct tr_opts *o, bool json)
{
	int good = 0, bad = 0;
	for (int a = 1; a <= TR_ACCEL_MAX; a *= 2) {
		struct tr_result r;
		if (run_job(s, o, a, &r))
			return -1;
		if (!json)
			fprintf(stderr, "  find-max %s: %d accelerators, AU %.3f\n", s->tag, a, r.au);
		if (r.au < TR_AU_PASS) {
			bad = a;
			break;
		}
		good = a;
	}
	if (!bad)
		return good; /* the cap */
	while (bad - good > 1) {
		int a = good + (bad - good) / 2;
		struct tr_result r;
		if (run_job(s, o, a, &r))
			return -1;
		if (!json)
			fprintf(stderr, "  find-max %s: %d accelerators, AU %.3f\n", s->tag, a, r.au);
		if (r.au >= TR_AU_PASS)
			good = a;
		else
			bad = a;
	}
	return good;
}

/* ---- opening a dataset ---- */

static int name_cmp(const void *a, const void *b)
{
	const struct ds_file *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

/* native: the inode numbers and sizes of the files in directory path (listed with
 * readdirplus), whose names in the manifest begin with prefix, checked against it.
 * Returns 0 or -1 with a message. */
static int list_dir(struct tr_side *s, const char *path, const char *prefix, struct ds_file **by_name,
		    struct aq_dirent *ents)
{
	struct aq_attr a;
	int rc = aq_resolve(s->c, path, &a);
	if (rc) {
		fprintf(stderr, "aq bench train: %s (inside Aquifer): %s\n", path, aq_strerror(rc));
		return -1;
	}
	uint64_t cookie = 0;
	size_t plen = strlen(prefix);
	char name[DS_PATH_MAX];
	memcpy(name, prefix, plen);
	for (;;) {
		int n = aq_readdir_ino(s->c, NULL, a.ino, cookie, AQ_READDIR_PLUS, ents, TR_LIST_PAGE);
		if (n <= 0) {
			if (n < 0)
				fprintf(stderr, "aq bench train: list %s: %s\n", path, aq_strerror(n));
			return n < 0 ? -1 : 0;
		}
		for (int i = 0; i < n; i++) {
			snprintf(name + plen, sizeof name - plen, "%s", ents[i].name);
			struct ds_file key = {.name = name}, *kp = &key;
			struct ds_file **hit = bsearch(&kp, by_name, s->m.nfiles, sizeof *by_name, name_cmp);
			if (!hit)
				continue; /* MANIFEST, a class directory, or a file the dataset does not use */
			if (ents[i].attr.size != (*hit)->size) {
				fprintf(stderr, "aq bench train: %s/%s is %" PRIu64 " bytes, the manifest says %" PRIu64 "\n",
					path, ents[i].name, ents[i].attr.size, (*hit)->size);
				return -1;
			}
			(*hit)->ino = ents[i].ino;
		}
		cookie = ents[n - 1].cookie;
	}
}

/* native: inode numbers and sizes from readdirplus listings (of the directory, or of each
 * class directory), checked against the manifest. Returns 0 or -1 with a message. */
static int list_native(struct tr_side *s)
{
	struct ds_file **by_name = aq_malloc(s->m.nfiles * sizeof *by_name);
	for (uint32_t i = 0; i < s->m.nfiles; i++)
		by_name[i] = &s->m.files[i];
	qsort(by_name, s->m.nfiles, sizeof *by_name, name_cmp);
	struct aq_dirent *ents = aq_malloc(TR_LIST_PAGE * sizeof *ents);
	int status = 0;
	if (!s->m.classes)
		status = list_dir(s, s->dir, "", by_name, ents);
	for (uint32_t k = 0; k < s->m.classes && !status; k++) {
		char cls[32], path[DS_PATH_MAX], prefix[40];
		ds_class_name(k, cls, sizeof cls);
		ds_join(path, sizeof path, s->dir, cls);
		snprintf(prefix, sizeof prefix, "%s/", cls);
		status = list_dir(s, path, prefix, by_name, ents);
	}
	for (uint32_t i = 0; i < s->m.nfiles && !status; i++) {
		if (!s->m.files[i].ino) {
			fprintf(stderr, "aq bench train: %s/%s is in the manifest but not in the directory\n", s->dir,
				s->m.files[i].name);
			status = -1;
		}
	}
	free(ents);
	free(by_name);
	return status;
}

/* Reads the manifest (and, native, lists the directory); builds the sample list. */
static int side_open(struct tr_side *s)
{
	s->dir_fd = -1;
	if (s->via != VIA_NATIVE) {
		if (s->via == VIA_FUSE)
			bench_warn_not_fuse("aq bench train", s->dir);
		else
			bench_warn_local("aq bench train", s->dir);
		s->dir_fd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (s->dir_fd < 0) {
			fprintf(stderr, "aq bench train: %s: %s\n", s->dir, strerror(errno));
			return -1;
		}
	}
	char *text, err[256];
	size_t len;
	int rc = ds_read_file(s->via == VIA_NATIVE ? s->c : NULL, s->dir, DS_MANIFEST, DS_MANIFEST_MAX, &text, &len);
	if (rc) {
		fprintf(stderr, "aq bench train: %s/%s: %s (make the dataset with aq bench gen)\n", s->dir, DS_MANIFEST,
			aq_strerror(rc));
		return -1;
	}
	rc = ds_manifest_parse(text, len, &s->m, err, sizeof err);
	free(text);
	if (rc) {
		fprintf(stderr, "aq bench train: %s/%s: %s\n", s->dir, DS_MANIFEST, err);
		return -1;
	}
	if (s->via == VIA_NATIVE && list_native(s))
		return -1;
	s->nsamples = 0;
	for (uint32_t i = 0; i < s->m.nfiles; i++)
		s->nsamples += s->m.kind == DS_IMAGES ? 1 : s->m.files[i].nrec;
	if (s->nsamples == 0 || s->nsamples > UINT32_MAX) {
		fprintf(stderr, "aq bench train: %s: %" PRIu64 " samples (1..2^32-1 supported)\n", s->dir, s->nsamples);
		return -1;
	}
	s->samples = aq_malloc(s->nsamples * sizeof *s->samples);
	uint64_t k = 0;
	for (uint32_t i = 0; i < s->m.nfiles; i++) {
		uint32_t nrec = s->m.kind == DS_IMAGES ? 1 : s->m.files[i].nrec;
		for (uint32_t r = 0; r < nrec; r++) {
			s->samples[k] = (struct tr_sample){i, r};
			uint64_t len = sample_len(s, &s->samples[k++]);
			s->total_bytes += len;
			s->max_sample_bytes = MAX(s->max_sample_bytes, len);
		}
	}
	AQ_ASSERT(k == s->nsamples);
	s->max_sample_bytes = MAX(s->max_sample_bytes, 1u);
	return 0;
}

static void side_close(struct tr_side *s)
{
	if (s->dir_fd >= 0)
		close(s->dir_fd);
	ds_manifest_free(&s->m);
	free(s->samples);
}

/* ---- --stage-to: copy the dataset to local disk, then train from the copy ---- */

struct stage_copy {
	struct tr_side *src;
	const char *dst_dir;
	int dst_fd;
	_Atomic uint32_t next;
	struct bench_err err;
};

/* Copies file i of the dataset into the staging directory. */
static int stage_file(struct stage_copy *sc, uint32_t i, uint8_t *buf)
{
	struct tr_side *s = sc->src;
	const struct ds_file *f = &s->m.files[i];
	struct aq_file *af = NULL;
	int in = -1, rc = 0;
	const char *what = "open";
	int out = openat(sc->dst_fd, f->name, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
	if (out < 0) {
		bench_fail(&sc->err, "create %s/%s: %s", sc->dst_dir, f->name, strerror(errno));
		return -1;
	}
	if (s->via == VIA_NATIVE)
		rc = aq_open_ino(s->c, NULL, f->ino, O_RDONLY, &af);
	else if ((in = openat(s->dir_fd, f->name, O_RDONLY | O_CLOEXEC)) < 0)
		rc = -errno;
	for (uint64_t off = 0; !rc && off < f->size;) {
		what = "read";
		size_t want = (size_t)MIN((uint64_t)TR_COPY_PIECE, f->size - off);
		ssize_t n = af ? aq_pread(af, buf, want, off) : pread(in, buf, want, (off_t)off);
		if (n <= 0) {
			rc = n == 0 ? -EIO : af ? (int)n : -errno;
			break;
		}
		what = "write";
		rc = bench_pwrite_all(NULL, out, buf, (size_t)n, off);
		off += (uint64_t)n;
	}
	if (af)
		aq_close(af);
	if (in >= 0)
		close(in);
	if (close(out) && !rc) {
		what = "write";
		rc = -errno;
	}
	if (rc)
		bench_fail(&sc->err, "stage: %s %s/%s: %s", what, s->dir, f->name, aq_strerror(rc));
	return rc ? -1 : 0;
}

static void *stage_main(void *arg)
{
	struct stage_copy *sc = arg;
	uint8_t *buf = aq_malloc(TR_COPY_PIECE);
	while (!bench_failed(&sc->err)) {
		uint32_t i = atomic_fetch_add(&sc->next, 1);
		if (i >= sc->src->m.nfiles || stage_file(sc, i, buf))
			break;
	}
	free(buf);
	return NULL;
}

/* Copies the dataset (and its manifest) into dst with W threads, synced to disk.
 * Returns 0 and the seconds it took, or -1 with a message. */
static int stage_copy(struct tr_side *src, const char *dst, int threads, double *secs)
{
	struct stage_copy sc = {.src = src, .dst_dir = dst};
	bench_err_init(&sc.err);
	int status = -1;
	uint64_t t0 = aq_mono_ns();
	sc.dst_fd = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sc.dst_fd < 0) {
		fprintf(stderr, "aq bench train: --stage-to %s: %s\n", dst, strerror(errno));
		goto out;
	}
	char what[DS_PATH_MAX];
	int rc = ds_make_classes(NULL, dst, &src->m, NULL, what, sizeof what);
	if (rc) {
		fprintf(stderr, "aq bench train: --stage-to: mkdir %s: %s\n", what, aq_strerror(rc));
		goto out;
	}
	pthread_t *t = aq_calloc((size_t)threads, sizeof *t);
	for (int i = 0; i < threads; i++)
		AQ_ASSERT(pthread_create(&t[i], NULL, stage_main, &sc) == 0);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	free(t);
	if (bench_failed(&sc.err)) {
		fprintf(stderr, "aq bench train: %s\n", sc.err.msg);
		goto out;
	}
	/* the manifest travels too: the copy is verified against it when it is read */
	char *text;
	size_t len;
	rc = ds_read_file(src->via == VIA_NATIVE ? src->c : NULL, src->dir, DS_MANIFEST, DS_MANIFEST_MAX, &text,
			      &len);
	if (!rc) {
		rc = ds_write_file(NULL, dst, DS_MANIFEST, text, len);
		free(text);
	}
	if (!rc && syncfs(sc.dst_fd))
		rc = -errno;
	if (rc) {
		fprintf(stderr, "aq bench train: stage the manifest to %s: %s\n", dst, aq_strerror(rc));
		goto out;
	}
	*secs = (double)(aq_mono_ns() - t0) / 1e9;
	status = 0;
out:
	if (sc.dst_fd >= 0)
		close(sc.dst_fd);
	bench_err_destroy(&sc.err);
	return status;
}

/* Removes the staged copy (best effort). */
static void stage_remove(const char *dir, const struct ds_manifest *m)
{
	char path[DS_PATH_MAX];
	for (uint32_t i = 0; i < m->nfiles; i++) {
		ds_join(path, sizeof path, dir, m->files[i].name);
		unlink(path);
	}
	ds_join(path, sizeof path, dir, DS_MANIFEST);
	unlink(path);
	rmdir(dir);
}

struct tr_stage {
	double copy_s, ttfb_s, total_s;
};

static int run_staged(struct tr_side *src, const struct tr_opts *o, const char *stage_to, struct tr_stage *st)
{
	char dir[DS_PATH_MAX];
	snprintf(dir, sizeof dir, "%s/aq-stage-%d", stage_to, (int)getpid());
	if (mkdir(dir, 0755)) {
		fprintf(stderr, "aq bench train: mkdir %s: %s\n", dir, strerror(errno));
		return -1;
	}
	int status = stage_copy(src, dir, o->workers, &st->copy_s);
	struct tr_side ls = {.tag = "staged", .via = VIA_LOCAL, .dir = dir, .dir_fd = -1};
	struct tr_result r;
	if (!status && !(status = side_open(&ls)) && !(status = run_job(&ls, o, o->accel, &r))) {
		st->ttfb_s = st->copy_s + r.ttfb_s;
		st->total_s = st->copy_s + r.wall_s;
	}
	side_close(&ls);
	stage_remove(dir, &src->m);
	return status;
}

/* ---- output ---- */

static void json_result(const struct tr_result *r)
{
	printf("{\"samples_per_s\":%.1f,\"mb_per_s\":%.2f,\"au\":%.4f,\"max_accelerators\":", r->samples / r->wall_s,
	       (double)r->bytes / 1e6 / r->wall_s, r->au);
	if (r->max_accel >= 0)
		printf("%d", r->max_accel);
	else
		printf("null");
	printf(",\"samples\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"wall_s\":%.4f,\"ttfb_s\":%.4f}", r->samples, r->bytes,
	       r->wall_s, r->ttfb_s);
}

static void human_result(const char *tag, const char *dir, const struct tr_result *r)
{
	char b[32];
	printf("%-8s %10s %10.1f %6.3f %9.3f %9.3f", tag, bench_rate_str(r->samples / r->wall_s, b, sizeof b),
	       (double)r->bytes / 1e6 / r->wall_s, r->au, r->ttfb_s, r->wall_s);
	if (r->max_accel >= 0)
		printf(" %8d", r->max_accel);
	else
		printf(" %8s", "-");
	printf("   %s\n", dir);
}

static void usage(void)
{
	fprintf(stderr,
		"usage: aq bench train [--dir PATH] [--via native|fuse|local] [--workers W] [--accelerators S]\n"
		"                      [--batch B] [--compute-us U] [--epochs E] [--cold] [--compare-local DIR]\n"
		"                      [--find-max] [--stage-to LOCALDIR] [--depth D] [--prefetch P] [--seed S]\n"
		"                      [--no-loopback] [--json] [--cluster FILE]\n"
		"  --dir PATH          a dataset made by aq bench gen: native, inside Aquifer (default /dataset);\n"
		"                      fuse, local: a host directory\n"
		"  --via               native: libaq batched reads, D in flight per loader; fuse, local:\n"
		"                      open/pread/close per sample\n"
		"  --workers W         loader threads (default 4)\n"
		"  --accelerators S    simulated accelerators (default 1)\n"
		"  --batch B           samples per batch (default 32)\n"
		"  --compute-us U      compute per sample (default 200 for images, 1000 per shard record)\n"
		"  --epochs E          epochs, each in a fresh random order (default 1)\n"
		"  --cold              drop the page cache before each epoch (root)\n"
		"  --compare-local DIR run the same job on a local copy (aq bench gen --local) in the same run\n"
		"  --find-max          also find the most accelerators that keep AU >= 90%%\n"
		"  --stage-to DIR      also time copy-to-DIR-then-train (the copy is removed afterwards)\n"
		"  --depth D           native reads in flight per loader (default 64)\n"
		"  --prefetch P        batches ready ahead of the accelerators (default 2 x W)\n"
		"  --no-loopback       skip the iperf3 loopback measurement (loopback_mb_per_s: null)\n"
		"  --json              print one JSON object\n");
}

int bench_train(int argc, char **argv)
{
	const char *dir = NULL, *via_s = "native", *compare = NULL, *stage_to = NULL, *cluster = NULL;
	struct tr_opts o = {.workers = 4, .accel = 1, .batch = 32, .epochs = 1, .seed = 1};
	int64_t compute_us = -1;
	bool json = false, find = false, loopback = true;
	static const struct option lopts[] = {
		{"dir", required_argument, 0, 'd'},          {"via", required_argument, 0, 'v'},
		{"workers", required_argument, 0, 'w'},      {"accelerators", required_argument, 0, 'a'},
		{"batch", required_argument, 0, 'b'},        {"compute-us", required_argument, 0, 'u'},
		{"epochs", required_argument, 0, 'e'},       {"cold", no_argument, 0, 'C'},
		{"compare-local", required_argument, 0, 'L'}, {"find-max", no_argument, 0, 'F'},
		{"stage-to", required_argument, 0, 'T'},     {"depth", required_argument, 0, 'D'},
		{"prefetch", required_argument, 0, 'p'},     {"seed", required_argument, 0, 'S'},
		{"no-loopback", no_argument, 0, 'N'},        {"json", no_argument, 0, 'j'},
		{"cluster", required_argument, 0, 'c'},      {"help", no_argument, 0, 'h'},
		{0, 0, 0, 0}};
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "d:v:w:a:b:u:e:CL:FT:D:p:S:Njc:h", lopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'v': via_s = optarg; break;
		case 'w': o.workers = atoi(optarg); break;
		case 'a': o.accel = atoi(optarg); break;
		case 'b': o.batch = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'u': compute_us = strtoll(optarg, NULL, 10); break;
		case 'e': o.epochs = atoi(optarg); break;
		case 'C': o.cold = true; break;
		case 'L': compare = optarg; break;
		case 'F': find = true; break;
		case 'T': stage_to = optarg; break;
		case 'D': o.depth = atoi(optarg); break;
		case 'p': o.prefetch = atoi(optarg); break;
		case 'S': o.seed = strtoull(optarg, NULL, 10); break;
		case 'N': loopback = false; break;
		case 'j': json = true; break;
		case 'c': cluster = optarg; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	enum bench_via via;
	if (optind != argc || bench_parse_via(via_s, &via)) {
		usage();
		return 2;
	}
	if (o.workers < 1 || o.workers > TR_WORKERS_MAX || o.accel < 1 || o.accel > TR_ACCEL_MAX || o.batch < 1 ||
	    o.batch > TR_BATCH_MAX || o.epochs < 1 || o.epochs > 1000 || o.depth < 0 || o.depth > TR_DEPTH_MAX ||
	    o.prefetch < 0 || o.prefetch > 65536 || compute_us > 10000000) {
		fprintf(stderr, "aq bench train: --workers 1..%d, --accelerators 1..%d, --batch 1..%d, --epochs 1..1000, "
				"--depth 1..%d, --compute-us 0..10^7\n",
			TR_WORKERS_MAX, TR_ACCEL_MAX, TR_BATCH_MAX, TR_DEPTH_MAX);
		return 2;
	}
	if (!dir) {
		if (via != VIA_NATIVE) {
			fprintf(stderr, "aq bench train: --via %s needs --dir, a host directory\n", via_s);
			return 2;
		}
		dir = "/dataset";
	}
	if (o.cold) {
		int rc = bench_drop_caches();
		if (rc) {
			fprintf(stderr, "aq bench train: --cold needs root (drop_caches: %s)\n", strerror(-rc));
			return 2;
		}
	}
	o.prefetch = o.prefetch ? o.prefetch : 2 * o.workers;

	struct tr_side aqs = {.tag = "aquifer", .via = via, .dir = dir, .dir_fd = -1};
	struct tr_side ls = {.tag = "local", .via = VIA_LOCAL, .dir = compare, .dir_fd = -1};
	struct tr_result aqr, lr;
	struct tr_stage st;
	int status = 1;
	if (via == VIA_NATIVE && !(aqs.c = cli_connect(cluster)))
		return 1;
	if (side_open(&aqs))
		goto out;
	bool shards = aqs.m.kind == DS_SHARDS;
	o.compute_us = compute_us >= 0 ? (uint64_t)compute_us : shards ? 1000 : 200;
	o.depth = o.depth ? o.depth : 64;
	if (aqs.max_sample_bytes * (uint64_t)o.depth > (1ull << 30)) {
		fprintf(stderr, "aq bench train: --depth %d x %" PRIu64 "-byte samples is over 1 GiB per loader\n", o.depth,
			aqs.max_sample_bytes);
		goto out;
	}
	if (run_job(&aqs, &o, o.accel, &aqr) || (find && (aqr.max_accel = find_max(&aqs, &o, json)) < 0))
		goto out;
	if (compare) {
		if (side_open(&ls) || run_job(&ls, &o, o.accel, &lr) ||
		    (find && (lr.max_accel = find_max(&ls, &o, json)) < 0))
			goto out;
		if (ls.nsamples != aqs.nsamples || ls.total_bytes != aqs.total_bytes)
			fprintf(stderr, "aq bench train: warning: %s is not the same dataset as %s\n", compare, dir);
	}
	if (stage_to && run_staged(&aqs, &o, stage_to, &st))
		goto out;
	double loop_mb = loopback ? bench_loopback_mb_per_s(TR_LOOPBACK_S) : -1;

	if (json) {
		printf("{\"kind\":\"%s\",\"via\":\"%s\",\"workers\":%d,\"accelerators\":%d,\"batch\":%u,"
		       "\"compute_us\":%" PRIu64 ",\"epochs\":%d,\"cold\":%s,\"aquifer\":",
		       ds_kind_name(aqs.m.kind), via_s, o.workers, o.accel, o.batch, o.compute_us, o.epochs,
		       o.cold ? "true" : "false");
		json_result(&aqr);
		printf(",\"local\":");
		if (compare)
			json_result(&lr);
		else
			printf("null");
		printf(",\"stage\":");
		if (stage_to)
			printf("{\"copy_s\":%.4f,\"ttfb_s\":%.4f,\"total_s\":%.4f,\"direct_ttfb_s\":%.4f,"
			       "\"direct_total_s\":%.4f}",
			       st.copy_s, st.ttfb_s, st.total_s, aqr.ttfb_s, aqr.wall_s);
		else
			printf("null");
		printf(",\"loopback_mb_per_s\":");
		if (loop_mb >= 0)
			printf("%.1f}\n", loop_mb);
		else
			printf("null}\n");
	} else {
		char b[32];
		printf("aq bench train: %s, %" PRIu64 " samples (%s) per epoch, %d epoch%s%s; %d loaders via %s, "
		       "%d accelerator%s, batch %u, %" PRIu64 " us/sample\n\n",
		       ds_kind_name(aqs.m.kind), aqs.nsamples, cli_bytes(aqs.total_bytes, b, sizeof b), o.epochs,
		       o.epochs == 1 ? "" : "s", o.cold ? " (page cache dropped before each)" : "", o.workers, via_s,
		       o.accel, o.accel == 1 ? "" : "s", o.batch, o.compute_us);
		printf("%-8s %10s %10s %6s %9s %9s %8s\n", "side", "samples/s", "MB/s", "AU", "1st batch", "wall s",
		       "max S");
		human_result("aquifer", dir, &aqr);
		if (compare) {
			human_result("local", compare, &lr);
			printf("\nratio    %10.2f %10.2f\n", (aqr.samples / aqr.wall_s) / (lr.samples / lr.wall_s),
			       ((double)aqr.bytes / aqr.wall_s) / ((double)lr.bytes / lr.wall_s));
		}
		if (stage_to)
			printf("\n%-30s %12s %12s\n%-30s %12.3f %12.3f\n%-30s %12.3f %12.3f   (copy %.3f s)\n", "",
			       "1st batch s", "total s", "train directly from Aquifer", aqr.ttfb_s, aqr.wall_s,
			       "copy to local, then train", st.ttfb_s, st.total_s, st.copy_s);
		if (loop_mb >= 0)
			printf("\nloopback TCP (iperf3): %.1f MB/s\n", loop_mb);
		else if (loopback)
			printf("\nloopback TCP: not measured (iperf3 missing or failed)\n");
	}
	status = 0;
out:
	side_close(&aqs);
	side_close(&ls);
	if (aqs.c)
		aq_disconnect(aqs.c);
	return status;
}

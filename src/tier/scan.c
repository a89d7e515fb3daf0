/*
 * scan.c - last reads and the tier scanner.
 *
 * Last reads: the read path notes each inode it serves in a bounded in-memory table; once
 * a second the scanner writes atime to metadata as Linux's relatime does (when atime is
 * not newer than mtime, or a day old), and writes the exact time of every entry it evicts
 * from a full table and at shutdown, so the table never knows more than the metadata for
 * long. An entry remembers until when relatime will want nothing (its atime found newer
 * than its mtime, until a day after it), so a file read again and again costs one
 * metadata read, not one a second; a change to the inode through this server forgets
 * that. A rule compares against the newer of the two. Reads served from a client's page
 * cache never reach aqd and do not count.
 *
 * The scanner: every interval_s, when a bucket is attached, it walks the namespace from
 * the root carrying the inherited rule (a directory's own rule overrides its parent's),
 * demotes files whose rule is cold-after D and that were neither read nor modified for D
 * (in batches of up to TIER_BATCH_MAX inodes, so small files share pack objects), then,
 * when a target is fuller than the high watermark, demotes unpinned files least recently
 * read first until every target is below the low one, then lets the data layer reclaim
 * pack objects with too much dead space. A pass that fails on S3 stops and the next one
 * waits at least TIER_FAIL_BACKOFF_S. The walk is skipped when the last one found no rule,
 * no rule was set since, and no target is over its high mark (one pass in ten walks anyway,
 * to find rules written as xattrs directly).
 */
#include "tier/tier_internal.h"
#include "s3/s3.h"
#include <sys/stat.h>

/* ---- last reads ---- */

static uint32_t slot_of(uint64_t ino)
{
	uint64_t h = ino * 0x9E3779B97F4A7C15ull;
	return (uint32_t)(h >> 40) & (TIER_READS_CAP - 1);
}

void tier_note_read(struct tier *t, uint64_t ino)
{
	if (!t || !ino)
		return;
	int64_t now = aq_now_ns();
	pthread_mutex_lock(&t->reads_mu);
	uint32_t i = slot_of(ino);
	while (t->reads[i].ino && t->reads[i].ino != ino)
		i = (i + 1) & (TIER_READS_CAP - 1);
	if (!t->reads[i].ino) {
		/* keep a quarter free so probes stay short; a dropped note only makes the file
		 * look as old as its atime says */
		if (t->nreads >= TIER_READS_CAP / 4 * 3) {
			t->reads_dropped++;
			pthread_mutex_unlock(&t->reads_mu);
			return;
		}
		t->reads[i].ino = ino;
		t->nreads++;
	}
	t->reads[i].read_ns = now;
	t->reads[i].dirty = true;
	pthread_mutex_unlock(&t->reads_mu);
}

/* ino's slot in the table, or NULL. Caller holds reads_mu. */
static struct tier_read *read_slot(struct tier *t, uint64_t ino)
{
	uint32_t i = slot_of(ino);
	while (t->reads[i].ino && t->reads[i].ino != ino)
		i = (i + 1) & (TIER_READS_CAP - 1);
	return t->reads[i].ino ? &t->reads[i] : NULL;
}

void tier_note_change(struct tier *t, uint64_t ino)
{
	if (!t || !ino)
		return;
	pthread_mutex_lock(&t->reads_mu);
	struct tier_read *r = read_slot(t, ino);
	if (r) {
		r->quiet_until = 0;
		r->changes++;
	}
	pthread_mutex_unlock(&t->reads_mu);
}

int64_t tier_last_read(struct tier *t, uint64_t ino)
{
	pthread_mutex_lock(&t->reads_mu);
	struct tier_read *r = read_slot(t, ino);
	int64_t when = r ? r->read_ns : 0;
	pthread_mutex_unlock(&t->reads_mu);
	return when;
}

/* Until when relatime wants no atime written for an inode whose atime and mtime these
 * are: a day after atime when atime is newer than mtime, else 0 (the next read does). */
static int64_t quiet_until(int64_t atime_ns, int64_t mtime_ns)
{
	return atime_ns > mtime_ns ? atime_ns + TIER_RELATIME_NS : 0;
}

/* Writes read_ns as ino's atime when relatime says so (exact: whenever it is newer).
 * ctime stays: reading a file does not change it. A read older than the inode's last
 * change is not written: a utimes() after the read must win, as it does on Linux.
 * Returns until when later reads need no atime written (0: ask again). */
static int64_t write_atime(struct tier *t, uint64_t ino, int64_t read_ns, bool exact)
{
	struct aq_attr a;
	if (meta_getattr(t->opt.meta, ino, &a) || !S_ISREG(a.mode) || read_ns <= a.ctime_ns)
		return 0;
	if (read_ns <= a.atime_ns || (!exact && a.atime_ns > a.mtime_ns && read_ns - a.atime_ns < TIER_RELATIME_NS))
		return quiet_until(a.atime_ns, a.mtime_ns);
	struct aq_attr in = {.atime_ns = read_ns, .ctime_ns = a.ctime_ns};
	int rc = meta_setattr(t->opt.meta, &tier_root_cred, ino, AQ_SET_ATIME | AQ_SET_CTIME, &in, NULL);
	if (rc && rc != -ENOENT)
		log_warn("atime of %llx: %s", (unsigned long long)ino, aq_strerror(rc));
	return rc ? 0 : quiet_until(read_ns, a.mtime_ns);
}

void tier_flush_reads(struct tier *t, bool all)
{
	/* Take what must be written out of the table under the lock, write it without. */
	pthread_mutex_lock(&t->reads_mu);
	bool evict = all || t->nreads > TIER_READS_CAP / 2;
	uint32_t n = 0;
	struct tier_read *out = NULL;
	if (evict) {
		out = aq_malloc((t->nreads ? t->nreads : 1) * sizeof *out);
		for (uint32_t i = 0; i < TIER_READS_CAP; i++)
			if (t->reads[i].ino)
				out[n++] = t->reads[i];
		memset(t->reads, 0, TIER_READS_CAP * sizeof *t->reads);
		t->nreads = 0;
	} else {
		/* reads relatime wants nothing for are done with here */
		for (uint32_t i = 0; i < TIER_READS_CAP; i++)
			if (t->reads[i].dirty && t->reads[i].read_ns >= t->reads[i].quiet_until)
				n++;
			else
				t->reads[i].dirty = false;
		out = aq_malloc((n ? n : 1) * sizeof *out);
		n = 0;
		for (uint32_t i = 0; i < TIER_READS_CAP; i++)
			if (t->reads[i].dirty) {
				out[n++] = t->reads[i];
				t->reads[i].dirty = false;
			}
	}
	uint64_t dropped = t->reads_dropped;
	t->reads_dropped = 0;
	pthread_mutex_unlock(&t->reads_mu);
	for (uint32_t i = 0; i < n; i++)
		out[i].quiet_until = write_atime(t, out[i].ino, out[i].read_ns, evict);
	if (!evict) {
		/* what each check found, unless the inode changed since it was taken out */
		pthread_mutex_lock(&t->reads_mu);
		for (uint32_t i = 0; i < n; i++) {
			struct tier_read *r = read_slot(t, out[i].ino);
			if (r && r->changes == out[i].changes)
				r->quiet_until = out[i].quiet_until;
		}
		pthread_mutex_unlock(&t->reads_mu);
	}
	free(out);
	if (dropped)
		log_debug("last-read table full: %llu reads not noted", (unsigned long long)dropped);
}

/* ---- the scanner ---- */

/* A file that the watermark pass may demote: older last read first, then older mtime. */
struct candidate {
	int64_t read_ns, mtime_ns;
	uint64_t ino;
};

static bool newer(const struct candidate *a, const struct candidate *b)
{
	return a->read_ns != b->read_ns ? a->read_ns > b->read_ns : a->mtime_ns > b->mtime_ns;
}

/* A max-heap of the oldest TIER_CANDIDATES_MAX candidates: the root is the newest kept. */
struct heap {
	struct candidate *v;
	uint32_t n;
};

static void heap_sift_down(struct heap *h, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < h->n && newer(&h->v[l], &h->v[m]))
			m = l;
		if (r < h->n && newer(&h->v[r], &h->v[m]))
			m = r;
		if (m == i)
			return;
		struct candidate tmp = h->v[i];
		h->v[i] = h->v[m];
		h->v[m] = tmp;
		i = m;
	}
}

static void heap_offer(struct heap *h, const struct candidate *c)
{
	if (h->n < TIER_CANDIDATES_MAX) {
		uint32_t i = h->n++;
		h->v[i] = *c;
		while (i && newer(&h->v[i], &h->v[(i - 1) / 2])) {
			struct candidate tmp = h->v[i];
			h->v[i] = h->v[(i - 1) / 2];
			h->v[(i - 1) / 2] = tmp;
			i = (i - 1) / 2;
		}
	} else if (newer(&h->v[0], c)) {
		h->v[0] = *c;
		heap_sift_down(h, 0);
	}
}

static int cmp_candidate(const void *a, const void *b)
{
	const struct candidate *x = a, *y = b;
	return newer(x, y) ? 1 : newer(y, x) ? -1 : 0;
}

struct dir_item {
	uint64_t ino;
	struct tier_rule rule;         /* inherited from above */
};

struct pass {
	struct tier *t;
	int64_t now_ns;
	bool over_high;                /* collect watermark candidates */
	struct dir_item *stack;
	uint32_t nstack, capstack;
	uint64_t batch[TIER_BATCH_MAX];
	uint32_t nbatch;
	struct heap heap;
	uint64_t rules_seen, files_seen, rule_files;
	int err;                       /* an S3 failure stops the pass */
	char msg[512];
	/* the directory being listed */
	struct tier_rule rule;
	struct dir_item *pending;      /* its subdirectories, pushed after the listing */
	uint32_t npending, cappending;
	uint64_t last_cookie;
};

static void flush_batch(struct pass *p)
{
	if (!p->nbatch || p->err)
		return;
	int64_t r = tier_demote_local(p->t, p->batch, p->nbatch, NULL, p->msg, sizeof p->msg);
	if (r < 0) {
		p->err = (int)r;
	} else {
		p->rule_files += p->nbatch;
		pthread_mutex_lock(&p->t->mu);
		p->t->rule_files += p->nbatch;
		p->t->demoted_bytes += (uint64_t)r;
		pthread_mutex_unlock(&p->t->mu);
	}
	p->nbatch = 0;
}

/* Whether any local target still holds flash bytes of ino. */
static bool has_flash(struct tier *t, uint64_t ino)
{
	for (uint32_t i = 0; i < t->opt.ntargets; i++) {
		struct data_tier_usage u;
		if (data_tier_usage(t->opt.data, t->targets[i], ino, &u) || u.hot || u.both)
			return true;
	}
	return false;
}

static int visit(void *arg, const char *name, size_t name_len, uint64_t ino, uint32_t dtype, uint64_t cookie,
		 const struct aq_attr *a)
{
	struct pass *p = arg;
	p->last_cookie = cookie;
	if (p->err)
		return 1;
	if (S_ISDIR(a->mode)) {
		if (p->npending == p->cappending) {
			p->cappending = p->cappending ? 2 * p->cappending : 64;
			p->pending = aq_realloc(p->pending, p->cappending * sizeof *p->pending);
		}
		p->pending[p->npending++] = (struct dir_item){.ino = ino, .rule = p->rule};
		return 0;
	}
	if (!S_ISREG(a->mode) || a->size == 0)
		return 0;
	p->files_seen++;
	if (p->rule.kind == TIER_RULE_PIN)
		return 0;
	int64_t read_ns = MAX(a->atime_ns, tier_last_read(p->t, ino));
	int64_t touched_ns = MAX(read_ns, a->mtime_ns);
	if (p->rule.kind == TIER_RULE_COLD_AFTER &&
	    p->now_ns - touched_ns > (int64_t)p->rule.cold_after_s * 1000000000) {
		/* one already cold is left alone: every pass sent it to demote again (a lookup
		 * of each of its chunks) and counted it as demoted once more */
		if (!has_flash(p->t, ino))
			return 0;
		p->batch[p->nbatch++] = ino;
		if (p->nbatch == TIER_BATCH_MAX)
			flush_batch(p);
		return 0;
	}
	if (p->over_high && has_flash(p->t, ino)) {
		struct candidate c = {.read_ns = read_ns, .mtime_ns = a->mtime_ns, .ino = ino};
		heap_offer(&p->heap, &c);
	}
	return 0;
}

/* Lists one directory (page by page) with its effective rule; its subdirectories go on
 * the stack with that rule as what they inherit. */
static void walk_dir(struct pass *p, const struct dir_item *d)
{
	struct tier_rule own;
	tier_rule_of(p->t, d->ino, &own);
	if (own.kind)
		p->rules_seen++;
	p->rule = own.kind ? own : d->rule;
	p->npending = 0;
	uint64_t cookie = 0;
	for (;;) {
		p->last_cookie = cookie;
		bool at_end = false;
		int n = meta_readdir_range(p->t->opt.meta, &tier_root_cred, d->ino, cookie, UINT32_MAX, 1024, true,
					   visit, p, &at_end);
		if (n <= 0 || p->err || p->last_cookie == cookie || at_end)
			break;
		cookie = p->last_cookie;
	}
	for (uint32_t i = 0; i < p->npending; i++) {
		if (p->nstack == p->capstack) {
			p->capstack = p->capstack ? 2 * p->capstack : 256;
			p->stack = aq_realloc(p->stack, p->capstack * sizeof *p->stack);
		}
		p->stack[p->nstack++] = p->pending[i];
	}
}

/* Bytes of a target in use, and its capacity: of the file system when targets share one. */
static void target_use(const struct data_target_stat *st, uint64_t *used, uint64_t *cap)
{
	*cap = st->capacity_bytes;
	*used = st->fs_shared_capacity ? st->capacity_bytes - MIN(st->free_bytes, st->capacity_bytes) : st->used_bytes;
}

/* For each local target, the bytes to free to get down to mark (0: at or below it).
 * Returns how many targets are above mark. */
static uint32_t targets_over(struct tier *t, double mark, uint64_t *excess)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < t->opt.ntargets; i++) {
		struct data_target_stat st;
		uint64_t used, cap;
		excess[i] = 0;
		if (data_stat(t->opt.data, t->targets[i], &st))
			continue;
		target_use(&st, &used, &cap);
		uint64_t keep = (uint64_t)((double)cap * mark);
		if (cap && used > keep) {
			excess[i] = used - keep;
			n++;
		}
	}
	return n;
}

/* Demotes candidates oldest first until every target is at or below low: a file joins the
 * next batch only if it has flash bytes on a target that still needs room, and the batch
 * goes out once what it would free covers every such target (or it is full), so a small
 * tree is not demoted whole for want of a few files. Targets are measured again after
 * each batch: what a demote frees (records, alignment) is what counts. */
static void watermark_demote(struct pass *p, double low)
{
	struct tier *t = p->t;
	uint64_t excess[AQ_TARGETS_MAX], want[AQ_TARGETS_MAX];
	bool only[AQ_TARGETS_MAX];
	qsort(p->heap.v, p->heap.n, sizeof *p->heap.v, cmp_candidate);
	uint64_t files = 0, bytes = 0;
	uint32_t i = 0;
	while (i < p->heap.n && !p->err && targets_over(t, low, excess)) {
		memcpy(want, excess, t->opt.ntargets * sizeof *want);
		for (uint32_t k = 0; k < t->opt.ntargets; k++)
			only[k] = excess[k] > 0;
		uint64_t inos[64];
		uint32_t n = 0;
		bool covered = false;
		while (n < ARRAY_SIZE(inos) && i < p->heap.n && !covered) {
			uint64_t ino = p->heap.v[i++].ino;
			bool useful = false;
			covered = true;
			for (uint32_t k = 0; k < t->opt.ntargets; k++) {
				if (!want[k])
					continue;
				struct data_tier_usage u;
				if (data_tier_usage(t->opt.data, t->targets[k], ino, &u) == 0 && u.hot + u.both) {
					useful = true;
					want[k] -= MIN(want[k], u.hot + u.both);
				}
				covered &= want[k] == 0;
			}
			if (useful)
				inos[n++] = ino;
		}
		if (!n)
			continue;
		int64_t r = tier_demote_local(t, inos, n, only, p->msg, sizeof p->msg);
		if (r < 0) {
			p->err = (int)r;
			break;
		}
		files += n;
		bytes += (uint64_t)r;
	}
	if (files)
		log_info("object tier: watermark: demoted %llu files, %llu bytes freed from flash",
			 (unsigned long long)files, (unsigned long long)bytes);
	pthread_mutex_lock(&t->mu);
	t->watermark_files += files;
	t->demoted_bytes += bytes;
	pthread_mutex_unlock(&t->mu);
}

/* One pass: rules, watermarks, reclaim. Returns 0 or the S3 error that stopped it. */
static int run_pass(struct tier *t, uint64_t pass_no)
{
	pthread_mutex_lock(&t->mu);
	double high = t->conf.high, low = t->conf.low;
	bool walk = t->rules_changed || t->rules_seen || pass_no % 10 == 0;
	t->rules_changed = false;
	pthread_mutex_unlock(&t->mu);
	uint64_t excess[AQ_TARGETS_MAX];
	struct pass *p = aq_calloc(1, sizeof *p);
	p->t = t;
	p->now_ns = aq_now_ns();
	p->over_high = targets_over(t, high, excess) > 0;
	if (p->over_high)
		p->heap.v = aq_malloc(TIER_CANDIDATES_MAX * sizeof *p->heap.v);
	if (walk || p->over_high) {
		struct dir_item root = {.ino = AQ_ROOT_INO};
		walk_dir(p, &root);
		while (p->nstack && !p->err) {
			struct dir_item d = p->stack[--p->nstack];
			walk_dir(p, &d);
			pthread_mutex_lock(&t->run_mu);
			bool stop = t->stop;
			pthread_mutex_unlock(&t->run_mu);
			if (stop)
				break;
		}
		flush_batch(p);
		if (p->rule_files)
			log_info("object tier: rules demoted %llu files", (unsigned long long)p->rule_files);
		pthread_mutex_lock(&t->mu);
		t->rules_seen = p->rules_seen;
		pthread_mutex_unlock(&t->mu);
	}
	if (p->over_high && !p->err)
		watermark_demote(p, low);
	for (uint32_t i = 0; i < t->opt.ntargets && !p->err; i++) {
		int64_t r = data_tier_reclaim(t->opt.data, t->targets[i], TIER_RECLAIM_START, TIER_RECLAIM_STOP);
		if (r > 0) {
			log_info("object tier: target %u: reclaimed %lld bytes of pack objects", t->targets[i],
				 (long long)r);
			pthread_mutex_lock(&t->mu);
			t->reclaimed_bytes += (uint64_t)r;
			pthread_mutex_unlock(&t->mu);
		} else if (r < 0 && r != -ENOSYS) {
			p->err = (int)r;
			snprintf(p->msg, sizeof p->msg, "reclaim on target %u: %s %s", t->targets[i],
				 aq_strerror((int)r), s3_last_error());
		}
	}
	int err = p->err;
	pthread_mutex_lock(&t->mu);
	t->passes++;
	if (err)
		snprintf(t->last_error, sizeof t->last_error, "%s", p->msg);
	else
		t->last_error[0] = 0;
	pthread_mutex_unlock(&t->mu);
	if (err)
		log_warn("object tier: pass stopped: %s (trying again in %d s)", p->msg,
			 MAX((int)t->opt.interval_s, TIER_FAIL_BACKOFF_S));
	free(p->heap.v);
	free(p->stack);
	free(p->pending);
	free(p);
	return err;
}

/* Attaches the configured bucket if it is not (keys may have appeared), and checks the
 * attached one once after start, so that the log says at once whether it answers. */
static void keep_attached(struct tier *t)
{
	pthread_mutex_lock(&t->set_mu);
	pthread_mutex_lock(&t->mu);
	bool want = t->configured && !t->s3;
	struct tier_conf conf = t->conf;
	bool check = t->check_due && t->s3;
	struct s3_client *s3 = t->s3;
	t->check_due = false;
	pthread_mutex_unlock(&t->mu);
	char msg[512];
	if (want && tier_client_open(&conf, &s3, msg, sizeof msg) == 0) {
		pthread_mutex_lock(&t->mu);
		t->s3 = s3;
		data_set_tier(t->opt.data, s3, t->prefix);
		t->last_error[0] = 0;
		pthread_mutex_unlock(&t->mu);
		log_info("object tier: bucket %s at %s attached", conf.bucket, conf.endpoint);
		check = true;
	}
	pthread_mutex_unlock(&t->set_mu);
	if (check) {
		int rc = s3_check(s3, msg, sizeof msg);
		if (rc)
			log_warn("object tier: bucket %s at %s does not answer yet: %s", conf.bucket, conf.endpoint, msg);
		else
			log_info("object tier: %s", msg);
		pthread_mutex_lock(&t->mu);
		snprintf(t->check, sizeof t->check, "%.*s", (int)sizeof t->check - 1, msg);
		pthread_mutex_unlock(&t->mu);
	}
}

void *tier_scan_main(void *arg)
{
	struct tier *t = arg;
	/* the first pass comes soon after start: it checks the bucket and finds the rules */
	uint64_t next_pass_ns = aq_mono_ns() + (uint64_t)MIN(t->opt.interval_s, 5u) * 1000000000ull;
	uint64_t pass_no = 0;
	for (;;) {
		pthread_mutex_lock(&t->run_mu);
		if (!t->stop) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&t->run_cv, &t->run_mu, &ts);
		}
		bool stop = t->stop;
		pthread_mutex_unlock(&t->run_mu);
		if (stop)
			return NULL;
		tier_flush_reads(t, false);
		if (aq_mono_ns() < next_pass_ns)
			continue;
		keep_attached(t);
		uint32_t wait_s = t->opt.interval_s;
		if (tier_client(t) && run_pass(t, pass_no++))
			wait_s = MAX(wait_s, TIER_FAIL_BACKOFF_S);
		next_pass_ns = aq_mono_ns() + (uint64_t)wait_s * 1000000000ull;
	}
}

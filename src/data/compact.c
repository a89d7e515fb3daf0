/*
 * compact.c - reclaims the dead space that overwrites, truncates and deletes leave in
 * sealed segments, and the background thread that runs it.
 *
 * A pass picks the sealed segments whose live share is below the ratio, copies each live
 * record verbatim (header, data, and the index entry's crcs: a record is position-free,
 * and a corrupt block stays detectably corrupt) to the active segment, switches the index
 * entry only if it still points at the old place (checked under the target lock, so a
 * racing overwrite or delete wins), makes the switch durable, and unlinks the segment
 * once its live count is zero. A chunk in several records (a map of overlays) is folded
 * into one whole record of the same version instead. The scan keeps only the chunks'
 * identities; each is moved as its entry is when its turn comes. Readers hold seg_lock
 * shared across lookup and I/O, so the unlink (seg_lock exclusive) never pulls a file
 * from under a read.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "data/data_internal.h"

#define COMPACT_INTERVAL_S 5
#define BUF_IDLE_TRIM_NS (30 * 1000000000ull) /* the I/O buffer pool goes after this idle */
#define COMPACT_RATIO_DEFAULT 0.5
#define COMPACT_ACTIVE_MIN_DEAD (8ull << 20) /* dead bytes before an active segment is sealed */

/* A chunk with a record in a segment being compacted (its entry is read again to move it). */
struct live_rec {
	uint64_t ino;
	uint32_t idx;
};

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

/* True when e has a record in one of the segments in cand (sorted). */
static bool in_cand(const struct data_entry *e, const uint32_t *cand, size_t ncand)
{
	struct data_rec_ref r[DATA_RECS_MAX];
	uint32_t nr = data_entry_recs(e, r);
	for (uint32_t i = 0; i < nr; i++)
		if (bsearch(&r[i].seg, cand, ncand, sizeof *cand, cmp_u32))
			return true;
	return false;
}

/* Collects the index entries that point into one of the segments in cand (sorted). The
 * iterator reads a snapshot; what changes after it is caught by the re-check under the
 * lock. Ownership of *out passes to the caller. */
static int scan_live(struct data_target *t, const uint32_t *cand, size_t ncand, struct live_rec **out, size_t *nout)
{
	struct live_rec *recs = NULL;
	size_t n = 0, cap = 0;
	struct data_entry e;
	int rc = 0;
	rocksdb_iterator_t *it = rocksdb_create_iterator(t->db, t->ropt);
	for (rocksdb_iter_seek(it, "C", 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *key = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen == 0 || key[0] != 'C')
			break;
		const uint8_t *val = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (klen != DATA_KEY_SIZE || data_val_decode(val, vlen, &e))
			continue; /* open already logged it; it points nowhere useful */
		if (!in_cand(&e, cand, ncand))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			recs = aq_realloc(recs, cap * sizeof *recs);
		}
		recs[n++] = (struct live_rec){.ino = get_be64(key + 1), .idx = get_be32(key + 9)};
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err) {
		log_error("target %u: compaction scan: %s", t->id, err);
		rocksdb_free(err);
		rc = -EIO;
		free(recs);
		recs = NULL;
		n = 0;
	}
	*out = recs;
	*nout = n;
	return rc;
}

/* True when a and b are the same version of a chunk in the same places. */
static bool same_place(const struct data_entry *a, const struct data_entry *b)
{
	struct data_rec_ref ra[DATA_RECS_MAX], rb[DATA_RECS_MAX];
	uint32_t n = data_entry_recs(a, ra);
	if (a->version != b->version || a->nrec != b->nrec || data_entry_recs(b, rb) != n)
		return false;
	for (uint32_t i = 0; i < n; i++)
		if (ra[i].seg != rb[i].seg || ra[i].off != rb[i].off)
			return false;
	return !a->nrec || (!memcmp(a->brec, b->brec, data_nblocks(a->length)) &&
			    !memcmp(a->bpos, b->bpos, data_nblocks(a->length)));
}

/* Appends the record (rec_size bytes, a whole chunk; with use_reserve into the space
 * reserve, with direct as data_append_locked) and points the index entry ne of chunk
 * (ino, idx) at it, counting it live.
 * Returns 0 or -errno. Caller holds t->lock. */
static int64_t place_locked(struct data_store *ds, struct data_target *t, uint64_t ino, uint32_t idx,
			    const uint8_t *rec, uint64_t rec_size, bool use_reserve, bool direct, struct data_entry *ne)
{
	int64_t rc = data_append_locked(ds, t, rec, rec_size, use_reserve, direct, &ne->seg, &ne->off);
	if (rc)
		return rc;
	uint8_t key[DATA_KEY_SIZE], val[DATA_VAL_MAX];
	data_key(key, ino, idx);
	size_t vlen = data_val_encode(val, ne);
	char *err = NULL;
	/* Not synced here: the pass syncs once before it unlinks anything. */
	rocksdb_put(t->db, t->wopt, (const char *)key, sizeof key, (const char *)val, vlen, &err);
	if (err) {
		log_error("target %u: compaction: index put: %s", t->id, err);
		rocksdb_free(err);
		return -EIO; /* the appended record is dead space */
	}
	data_seg_find(t, ne->seg)->live += rec_size;
	return 0;
}

/* Moves a chunk whose blocks lie in several records (a map) to the active segment as one
 * whole record of the same version: its blocks are read and checked (a corrupt one
 * leaves the chunk where it is, logged) and its records all become dead. Returns bytes
 * appended, -EAGAIN when the entry moved on meanwhile, or -errno. */
static int64_t merge_map(struct data_store *ds, struct data_target *t, uint64_t ino, uint32_t idx,
			 const struct data_entry *e, bool use_reserve)
{
	uint64_t rec_size = data_rec_size(e->length);
	uint8_t *rec = data_buf_alloc(rec_size);
	struct data_entry *cur = aq_malloc(sizeof *cur);
	bool found = false;
	pthread_rwlock_rdlock(&t->seg_lock);
	int64_t rc = data_index_get(t, ino, idx, cur, &found);
	if (!rc && found && same_place(cur, e))
		rc = data_read_chunk(t, ino, idx, cur, rec + DATA_REC_HDR_SIZE);
	pthread_rwlock_unlock(&t->seg_lock);
	if (rc || !found || !same_place(cur, e)) {
		if (rc)
			log_error("target %u: compaction: ino %llx idx %u v%llu unreadable, left in place: %s", t->id,
				  (unsigned long long)ino, idx, (unsigned long long)e->version,
				  strerror(rc == -AQ_ECORRUPT ? EIO : (int)-rc));
		rc = rc ? 0 : -EAGAIN;
		goto out;
	}
	struct data_rec_hdr h = {.ino = ino, .idx = idx, .length = e->length, .version = e->version};
	memset(rec + DATA_REC_HDR_SIZE + e->length, 0, rec_size - DATA_REC_HDR_SIZE - e->length);
	data_hdr_encode(rec, &h);

	pthread_mutex_lock(&t->lock);
	rc = data_index_get(t, ino, idx, cur, &found);
	if (rc || !found || !same_place(cur, e)) {
		rc = rc ? rc : -EAGAIN; /* overwritten, truncated or deleted since */
		goto unlock;
	}
	struct data_entry *ne = aq_malloc(sizeof *ne);
	*ne = *cur;
	ne->nrec = 0;
	rc = place_locked(ds, t, ino, idx, rec, rec_size, use_reserve, false, ne); /* for readers: cached */
	if (!rc) {
		data_drop_records_locked(t, cur, ne); /* punched once the switch is durable */
		rc = (int64_t)rec_size;
	}
	free(ne);
unlock:
	pthread_mutex_unlock(&t->lock);
out:
	free(cur);
	data_buf_free(rec);
	return rc;
}

/* Moves one live record to the active segment. Returns bytes appended, -EAGAIN when the
 * entry moved on meanwhile, or -errno. */
static int64_t move_record(struct data_store *ds, struct data_target *t, uint64_t ino, uint32_t idx,
			   const struct data_entry *e)
{
	uint64_t rec_size = data_rec_size(e->length);
	uint8_t *rec = data_buf_alloc(rec_size);
	int64_t rc = 0;

	/* Only compaction removes segments and this thread holds compact_lock, but a
	 * writer may grow the table: look the segment up under seg_lock. */
	pthread_rwlock_rdlock(&t->seg_lock);
	/* A record that died since the scan may already be punched out: check that the index
	 * still points here while holding seg_lock, which a punch must wait for. */
	struct data_entry now;
	bool still = false;
	rc = data_index_get(t, ino, idx, &now, &still);
	if (rc || !still || !same_place(&now, e)) {
		pthread_rwlock_unlock(&t->seg_lock);
		data_buf_free(rec);
		return -EAGAIN;
	}
	struct data_seg *s = data_seg_find(t, e->seg);
	struct data_io io = {.fd = s ? s->fd : -1, .buf = rec, .len = rec_size, .off = e->off};
	rc = s ? data_io_read(&io, 1) : -EIO;
	pthread_rwlock_unlock(&t->seg_lock);
	struct data_rec_hdr h;
	if (!rc && (data_hdr_decode(rec, &h) || h.ino != ino || h.idx != idx || h.length != e->length ||
		    h.version != e->version))
		rc = -EIO;
	if (rc) {
		/* Left where it is: the segment stays until a scrub repairs the record. */
		log_error("target %u: compaction: record of ino %llx idx %u v%llu at seg %u off %llu unreadable: %s",
			  t->id, (unsigned long long)ino, idx, (unsigned long long)e->version, e->seg,
			  (unsigned long long)e->off, strerror((int)-rc));
		data_buf_free(rec);
		return 0;
	}

	pthread_mutex_lock(&t->lock);
	struct data_entry cur;
	bool found = false;
	rc = data_index_get(t, ino, idx, &cur, &found);
	if (rc || !found || !same_place(&cur, e)) {
		rc = rc ? rc : -EAGAIN; /* overwritten, truncated or deleted since the scan */
		goto out;
	}
	struct data_entry ne = cur;
	rc = place_locked(ds, t, ino, idx, rec, rec_size, true, true, &ne);
	if (rc)
		goto out;
	struct data_seg *os = data_seg_find(t, e->seg);
	AQ_ASSERT(os && os->live >= rec_size);
	os->live -= rec_size; /* not punched: the segment goes whole */
	rc = (int64_t)rec_size;
out:
	pthread_mutex_unlock(&t->lock);
	data_buf_free(rec);
	return rc;
}

/* Moves chunk lr out of the segments in cand, as its entry now is (a write since the
 * scan may have moved it out already, or kept some of its records in place: an overlay
 * leaves the untouched blocks where they were). Returns bytes appended or -errno. */
static int64_t move_chunk(struct data_store *ds, struct data_target *t, const uint32_t *cand, size_t ncand,
			  const struct live_rec *lr)
{
	struct data_entry *e = aq_malloc(sizeof *e);
	int64_t rc = -EAGAIN;
	for (int tries = 0; rc == -EAGAIN && tries < 8; tries++) {
		bool found = false;
		if (data_index_get(t, lr->ino, lr->idx, e, &found) || !found || !in_cand(e, cand, ncand)) {
			rc = 0; /* gone or moved; a malformed entry stays where it is (logged) */
			break;
		}
		rc = e->nrec ? merge_map(ds, t, lr->ino, lr->idx, e, true) : move_record(ds, t, lr->ino, lr->idx, e);
	}
	free(e);
	return rc == -EAGAIN ? 0 : rc;
}

void data_fold_queued(struct data_store *ds, struct data_target *t)
{
	pthread_mutex_lock(&t->fold_mu);
	uint32_t n = t->nfold;
	struct data_chunk_id *q = aq_malloc((n ? n : 1) * sizeof *q);
	memcpy(q, t->fold, n * sizeof *q);
	t->nfold = 0;
	pthread_mutex_unlock(&t->fold_mu);
	struct data_entry *e = aq_malloc(sizeof *e);
	uint64_t now = aq_mono_ns();
	for (uint32_t i = 0; i < n && !__atomic_load_n(&ds->bg_stop, __ATOMIC_RELAXED); i++) {
		bool found = false;
		if (data_index_get(t, q[i].ino, q[i].idx, e, &found) || !found || !e->nrec)
			continue; /* gone, or one record already */
		if (e->version != q[i].version || now - q[i].at_ns < (uint64_t)DATA_FOLD_AFTER_NS) {
			/* written since it was queued, or not long ago: ask again next time */
			pthread_mutex_lock(&t->fold_mu);
			if (t->nfold < DATA_FOLD_QUEUE) {
				if (e->version != q[i].version)
					q[i].version = e->version, q[i].at_ns = now;
				t->fold[t->nfold++] = q[i];
			}
			pthread_mutex_unlock(&t->fold_mu);
			continue;
		}
		/* changed meanwhile (-EAGAIN): the next reader queues it again; no room: it waits */
		if (merge_map(ds, t, q[i].ino, q[i].idx, e, false) > 0)
			__atomic_fetch_add(&t->folds, 1, __ATOMIC_RELAXED);
	}
	free(e);
	free(q);
}

/* Unlinks a sealed segment that nothing points to any more. Returns its size, 0 when it
 * is still referenced, or -errno. */
static int64_t seg_remove(struct data_target *t, uint32_t no)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/seg-%08u", t->dir, no);
	int64_t rc = 0;
	pthread_mutex_lock(&t->lock);
	struct data_seg *s = data_seg_find(t, no);
	AQ_ASSERT(s && s != &t->segs[t->nsegs - 1]);
	if (s->live) {
		log_warn("target %u: seg %u still holds %llu live bytes after compaction; kept", t->id, no,
			 (unsigned long long)s->live);
		goto out;
	}
	/* The entries that moved out must be durable before their old copies go. */
	rc = data_sync_locked(t);
	if (rc)
		goto out;
	if (unlink(path) && errno != ENOENT) {
		rc = -errno;
		log_error("target %u: unlink %s: %s", t->id, path, strerror(errno));
		goto out;
	}
	pthread_rwlock_wrlock(&t->seg_lock);
	s = data_seg_find(t, no);
	rc = (int64_t)s->total;
	data_seg_close(s);
	size_t i = (size_t)(s - t->segs);
	memmove(&t->segs[i], &t->segs[i + 1], (t->nsegs - i - 1) * sizeof *t->segs);
	t->nsegs--;
	pthread_rwlock_unlock(&t->seg_lock);
out:
	pthread_mutex_unlock(&t->lock);
	return rc;
}

int64_t data_compact(struct data_store *ds, uint32_t target, double min_live_ratio)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	if (!(min_live_ratio >= 0 && min_live_ratio <= 1))
		return -EINVAL;
	pthread_mutex_lock(&t->compact_lock);
	int64_t reclaimed = 0, rc = 0;
	uint32_t *cand = NULL;
	size_t ncand = 0, nrecs = 0;
	struct live_rec *recs = NULL;

	pthread_mutex_lock(&t->lock);
	/* The active segment holds everything written since the last roll: on a small or
	 * full target it may be the only segment. Seal it when it is mostly dead so its
	 * space can come back too. */
	const struct data_seg *act = &t->segs[t->nsegs - 1];
	if (act->total >= COMPACT_ACTIVE_MIN_DEAD + act->live &&
	    (double)act->live < min_live_ratio * (double)act->total) {
		int src = data_seal_active_locked(t);
		if (src)
			log_warn("target %u: sealing the active segment for compaction: %s", t->id, aq_strerror(src));
	}
	cand = aq_calloc(t->nsegs, sizeof *cand);
	for (uint32_t i = 0; i + 1 < t->nsegs; i++) {
		const struct data_seg *s = &t->segs[i];
		if (s->live == 0 || (double)s->live < min_live_ratio * (double)s->total)
			cand[ncand++] = s->no;
	}
	bool any_live = false;
	for (size_t i = 0; i < ncand; i++)
		any_live |= data_seg_find(t, cand[i])->live > 0;
	pthread_mutex_unlock(&t->lock);
	if (!ncand)
		goto out;

	if (any_live) {
		rc = scan_live(t, cand, ncand, &recs, &nrecs);
		if (rc)
			goto out;
	}
	for (size_t i = 0; i < nrecs; i++) {
		int64_t moved = move_chunk(ds, t, cand, ncand, &recs[i]);
		if (moved < 0) {
			rc = moved;
			goto out;
		}
		reclaimed -= moved;
	}
	for (size_t i = 0; i < ncand; i++) {
		int64_t freed = seg_remove(t, cand[i]);
		if (freed < 0) {
			rc = freed;
			goto out;
		}
		reclaimed += freed;
	}
out:
	pthread_mutex_unlock(&t->compact_lock);
	free(cand);
	free(recs);
	if (rc < 0 && rc != -ENOSPC)
		log_error("target %u: compaction: %s", t->id, aq_strerror((int)rc));
	return rc < 0 ? rc : MAX(reclaimed, 0);
}

void data_kick_compactor(struct data_store *ds)
{
	pthread_mutex_lock(&ds->bg_lock);
	ds->bg_kick = true;
	pthread_cond_signal(&ds->bg_cond);
	pthread_mutex_unlock(&ds->bg_lock);
}

static void *compactor_main(void *arg)
{
	struct data_store *ds = arg;
	pthread_mutex_lock(&ds->bg_lock);
	while (!ds->bg_stop) {
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += COMPACT_INTERVAL_S;
		while (!ds->bg_stop && !ds->bg_kick)
			if (pthread_cond_timedwait(&ds->bg_cond, &ds->bg_lock, &until) == ETIMEDOUT)
				break;
		if (ds->bg_stop)
			break;
		ds->bg_kick = false;
		pthread_mutex_unlock(&ds->bg_lock);
		for (uint32_t i = 0; i < ds->ntargets; i++) {
			if (__atomic_load_n(&ds->bg_stop, __ATOMIC_RELAXED))
				break;
			data_fold_queued(ds, &ds->targets[i]);
			data_compact(ds, ds->targets[i].id, COMPACT_RATIO_DEFAULT);
		}
		data_buf_trim_idle(BUF_IDLE_TRIM_NS);
		pthread_mutex_lock(&ds->bg_lock);
	}
	pthread_mutex_unlock(&ds->bg_lock);
	return NULL;
}

int data_compactor_start(struct data_store *ds)
{
	int rc = pthread_create(&ds->compactor, NULL, compactor_main, ds);
	if (rc)
		return -rc;
	ds->compactor_running = true;
	return 0;
}

void data_compactor_stop(struct data_store *ds)
{
	if (!ds->compactor_running)
		return;
	pthread_mutex_lock(&ds->bg_lock);
	__atomic_store_n(&ds->bg_stop, true, __ATOMIC_RELAXED); /* also read unlocked mid-pass */
	pthread_cond_signal(&ds->bg_cond);
	pthread_mutex_unlock(&ds->bg_lock);
	pthread_join(ds->compactor, NULL);
	ds->compactor_running = false;
}

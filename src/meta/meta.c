/*
 * meta.c - the metadata store: open/close, the shared helpers (locks, rows, partial-row
 * merging, inode allocation) and the single-entry operations (lookup, getattr, create,
 * unlink, rmdir, link, setattr, access, open, size commits, orphans).
 *
 * Invariants:
 * - Every change is one RocksDB write batch, committed while the locks of every bucket it
 *   writes (and of every bucket whose rows it checked) are held, in ascending order.
 * - A directory's entry and subdirectory counts live only in its partial rows, one per
 *   bucket, updated in the batch that adds or removes an entry in that bucket.
 * - Inode numbers are never reused: the in-memory sequence of a bucket stays below the
 *   committed 'S' reservation of that bucket.
 * - rmdir holds every bucket lock, so a create (which holds its entry's bucket lock while it
 *   checks that the parent exists and commits) either commits before it or sees ENOENT.
 */
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "meta/meta_internal.h"

#define INODE_BUF_LEN (META_INODE_FIXED_MAX + AQ_PATH_MAX)

/* ---- locks ---------------------------------------------------------------------- */

void meta_lockset_add(struct meta_lockset *ls, uint32_t bucket)
{
	for (size_t i = 0; i < ls->n; i++)
		if (ls->b[i] == bucket)
			return;
	AQ_ASSERT(ls->n < ARRAY_SIZE(ls->b));
	/* Insertion sort: the set is tiny and must be locked in ascending order. */
	size_t i = ls->n++;
	while (i > 0 && ls->b[i - 1] > bucket) {
		ls->b[i] = ls->b[i - 1];
		i--;
	}
	ls->b[i] = bucket;
}

void meta_lockset_lock(struct meta_store *m, struct meta_lockset *ls)
{
	if (ls->all) {
		for (uint32_t b = 0; b < m->nbuckets; b++)
			pthread_mutex_lock(&m->locks[b]);
		return;
	}
	for (size_t i = 0; i < ls->n; i++) {
		AQ_ASSERT(ls->b[i] < m->nbuckets);
		AQ_ASSERT(i == 0 || ls->b[i - 1] < ls->b[i]);
		pthread_mutex_lock(&m->locks[ls->b[i]]);
	}
}

void meta_lockset_unlock(struct meta_store *m, const struct meta_lockset *ls)
{
	if (ls->all) {
		for (uint32_t b = m->nbuckets; b-- > 0;)
			pthread_mutex_unlock(&m->locks[b]);
		return;
	}
	for (size_t i = ls->n; i-- > 0;)
		pthread_mutex_unlock(&m->locks[ls->b[i]]);
}

/* ---- rows ----------------------------------------------------------------------- */

int meta_get(struct meta_store *m, const uint8_t *key, size_t klen, void *buf, size_t size, size_t *len)
{
	char *err = NULL;
	size_t vlen = 0;
	char *v = rocksdb_get(m->db, m->ropts, (const char *)key, klen, &vlen, &err);
	if (err) {
		log_error("meta: rocksdb get: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	if (!v)
		return 0;
	if (buf && size)
		memcpy(buf, v, MIN(size, vlen));
	if (len)
		*len = vlen;
	rocksdb_free(v);
	return 1;
}

/* RocksDB's batched MultiGet: the keys are sorted and each memtable and sorted run is
 * asked about all of them at once, their bloom filter lines fetched together. A create
 * looks every new name up; with one Get per name each sorted run cost it a few cache
 * misses in a row (10M creates without compaction, about 50 runs at the end: the tenths
 * fell from 182k to 53k/s; batched, from 176k to 101k/s). */
int meta_multi_get(struct meta_store *m, size_t n, const char *const *keys, const size_t *klens, meta_found_fn fn,
		   void *arg)
{
	rocksdb_pinnableslice_t **vals = aq_calloc(n ? n : 1, sizeof(*vals));
	char **errs = aq_calloc(n ? n : 1, sizeof(*errs));
	int rc = 0;

	if (n)
		rocksdb_batched_multi_get_cf(m->db, m->ropts, m->cf, n, keys, klens, vals, errs, false);
	for (size_t i = 0; i < n; i++) {
		if (errs[i]) {
			log_error("meta: rocksdb multi_get: %s", errs[i]);
			rocksdb_free(errs[i]);
			rc = -EIO;
		}
		if (!vals[i])
			continue;
		size_t len = 0;
		const char *v = rocksdb_pinnableslice_value(vals[i], &len);
		int frc = fn(arg, i, (const uint8_t *)v, len);
		if (frc && !rc)
			rc = frc;
		rocksdb_pinnableslice_destroy(vals[i]);
	}
	free(vals);
	free(errs);
	return rc;
}

int meta_read_inode(struct meta_store *m, uint64_t ino, struct meta_inode *out)
{
	uint8_t key[META_INODE_KEY_LEN], buf[INODE_BUF_LEN];
	size_t len = 0;
	if (aq_ino_bucket(ino) >= m->nbuckets || ino == 0)
		return -ENOENT;
	int rc = meta_get(m, key, meta_key_inode(key, ino), buf, sizeof(buf), &len);
	if (rc <= 0)
		return rc == 0 ? -ENOENT : rc;
	if (len > sizeof(buf))
		return -EIO;
	rc = meta_inode_decode(buf, len, ino, out);
	if (rc)
		log_error("meta: inode %llx: corrupt row (%zu bytes)", (unsigned long long)ino, len);
	return rc;
}

void meta_put_inode(rocksdb_writebatch_t *wb, const struct meta_inode *ino)
{
	uint8_t key[META_INODE_KEY_LEN], buf[INODE_BUF_LEN];
	size_t klen = meta_key_inode(key, ino->a.ino);
	size_t vlen = meta_inode_encode(ino, buf, sizeof(buf));
	rocksdb_writebatch_put(wb, (const char *)key, klen, (const char *)buf, vlen);
}

void meta_put_orphan(rocksdb_writebatch_t *wb, uint64_t ino, uint64_t size, uint32_t chunk_size)
{
	uint8_t key[META_ORPHAN_KEY_LEN], v[META_ORPHAN_VAL_LEN];
	put_le64(v, size);
	put_le32(v + 8, chunk_size);
	rocksdb_writebatch_put(wb, (const char *)key, meta_key_orphan(key, ino), (const char *)v, sizeof(v));
}

/* Every dentry row is put here, with its bucket's lock held: its name filter, if the pair
 * has one, must hear of it (namefilter.c). */
void meta_put_dentry(struct meta_store *m, rocksdb_writebatch_t *wb, const uint8_t *key, size_t klen,
		     const struct meta_dentry *d)
{
	uint8_t v[META_DENTRY_VAL_LEN];
	meta_dentry_encode(d, v);
	rocksdb_writebatch_put(wb, (const char *)key, klen, (const char *)v, sizeof(v));
	meta_nfilter_add(m, key, klen);
}

int meta_get_dentry(struct meta_store *m, const uint8_t *key, size_t klen, struct meta_dentry *d)
{
	uint8_t v[META_DENTRY_VAL_LEN];
	size_t len = 0;
	int rc = meta_get(m, key, klen, v, sizeof(v), &len);
	if (rc <= 0)
		return rc;
	if (meta_dentry_decode(v, len, d))
		return -EIO;
	return 1;
}

size_t meta_dentry_key(const struct meta_store *m, uint8_t *key, uint64_t parent, const char *name, size_t len,
		       uint32_t *bucket)
{
	*bucket = meta_dentry_bucket(m, parent, name, len);
	return meta_key_dentry(key, *bucket, parent, meta_dentry_pos(parent, name, len), name, len);
}

/* Changelog row value: ino64 then the name. */
void meta_put_log(rocksdb_writebatch_t *wb, uint32_t bucket, uint64_t dir, uint64_t ts, uint64_t ino,
		  const char *name, size_t len)
{
	uint8_t key[META_LOG_KEY_LEN], v[8 + AQ_NAME_MAX];
	AQ_ASSERT(len <= AQ_NAME_MAX);
	put_le64(v, ino);
	memcpy(v + 8, name, len);
	rocksdb_writebatch_put(wb, (const char *)key, meta_key_log(key, bucket, dir, ts), (const char *)v, 8 + len);
}

void meta_del_log(rocksdb_writebatch_t *wb, uint32_t bucket, uint64_t dir, uint64_t ts)
{
	uint8_t key[META_LOG_KEY_LEN];
	rocksdb_writebatch_delete(wb, (const char *)key, meta_key_log(key, bucket, dir, ts));
}

/* Partial-row changes of the batch this thread is building, folded into the
 * directory-sum cache once the batch commits. */
struct dirsum_change {
	struct meta_store *m;
	uint64_t dir;
	int64_t dentries, dsubdirs, now_ns;
	int32_t bucket;  /* the partial row's (-1: none), and whether it holds entries after */
	bool nonempty;
	bool drop; /* not a delta: the cached sum must be read again */
};
static __thread struct dirsum_change tls_changes[32];
static __thread uint32_t tls_nchanges;
static __thread bool tls_changes_overflow;

rocksdb_writebatch_t *meta_batch_new(void)
{
	tls_nchanges = 0;
	tls_changes_overflow = false;
	return rocksdb_writebatch_create();
}

static void dirsum_note(struct meta_store *m, uint64_t dir, int64_t dent, int64_t dsub, int64_t now_ns,
			int32_t bucket, bool nonempty)
{
	if (tls_nchanges == ARRAY_SIZE(tls_changes)) {
		tls_changes_overflow = true;
		return;
	}
	tls_changes[tls_nchanges++] = (struct dirsum_change){m, dir, dent, dsub, now_ns, bucket, nonempty, false};
}

static void dirsum_note_drop(struct meta_store *m, uint64_t dir)
{
	dirsum_note(m, dir, 0, 0, 0, -1, false);
	if (!tls_changes_overflow)
		tls_changes[tls_nchanges - 1].drop = true;
}

static uint32_t dirsum_slot(uint64_t dir) { return (uint32_t)(aq_mix64(dir, 0x5157) % META_DIRSUM_SLOTS); }

/* Slot i's bitmap of the buckets that hold entries of its directory, or NULL for a store
 * with more buckets than META_DIRSUM_BITS_MAX (the bitmaps would take too much memory). */
static uint64_t *dirsum_bits(struct meta_store *m, uint32_t slot)
{
	return m->dirsum_bits ? m->dirsum_bits + (size_t)slot * ((m->nbuckets + 63) / 64) : NULL;
}

/* After a commit: fold each change into its directory's cached sum (committed), or move
 * the stripe's generation so no reader caches a sum that may miss it. */
static void dirsum_commit(struct meta_store *m, bool ok)
{
	if (tls_changes_overflow) {
		for (uint32_t st = 0; st < META_DIRSUM_STRIPES; st++) {
			pthread_mutex_lock(&m->dirsum_mu[st]);
			m->dirsum_gen[st]++;
			for (uint32_t i = st; i < META_DIRSUM_SLOTS; i += META_DIRSUM_STRIPES)
				m->dirsum[i].valid = false;
			pthread_mutex_unlock(&m->dirsum_mu[st]);
		}
	}
	for (uint32_t i = 0; i < tls_nchanges; i++) {
		const struct dirsum_change *c = &tls_changes[i];
		if (c->m != m)
			continue;
		uint32_t slot = dirsum_slot(c->dir), st = slot % META_DIRSUM_STRIPES;
		struct meta_dirsum *d = &m->dirsum[slot];
		pthread_mutex_lock(&m->dirsum_mu[st]);
		if (ok && !c->drop && d->valid && d->dir == c->dir) {
			d->sum.nentries += c->dentries;
			d->sum.nsubdirs += c->dsubdirs;
			d->sum.mtime_ns = MAX(d->sum.mtime_ns, c->now_ns);
			d->sum.ctime_ns = MAX(d->sum.ctime_ns, c->now_ns);
			uint64_t *bits = dirsum_bits(m, slot);
			if (bits && c->bucket >= 0) {
				uint64_t bit = 1ull << (c->bucket % 64), *w = &bits[c->bucket / 64];
				*w = c->nonempty ? *w | bit : *w & ~bit;
			}
		} else {
			if (d->dir == c->dir)
				d->valid = false;
			m->dirsum_gen[st]++;
		}
		pthread_mutex_unlock(&m->dirsum_mu[st]);
	}
	tls_nchanges = 0;
	tls_changes_overflow = false;
}

static int dir_totals_bits(struct meta_store *m, uint64_t dir, struct meta_partial *sum, uint64_t *bits);

int meta_dirsum_buckets(struct meta_store *m, uint64_t dir, struct meta_partial *sum, uint64_t *bits, bool *have_bits)
{
	uint32_t slot = dirsum_slot(dir), st = slot % META_DIRSUM_STRIPES;
	struct meta_dirsum *d = &m->dirsum[slot];
	uint64_t *cached = dirsum_bits(m, slot);
	size_t words = (m->nbuckets + 63) / 64;
	*have_bits = false;
	pthread_mutex_lock(&m->dirsum_mu[st]);
	if (d->valid && d->dir == dir) {
		*sum = d->sum;
		if (bits && cached) {
			memcpy(bits, cached, words * 8);
			*have_bits = true;
		}
		pthread_mutex_unlock(&m->dirsum_mu[st]);
		return 0;
	}
	uint64_t gen = m->dirsum_gen[st];
	pthread_mutex_unlock(&m->dirsum_mu[st]);
	uint64_t *read = aq_calloc(words, 8);
	int rc = dir_totals_bits(m, dir, sum, read);
	if (rc == 0) {
		pthread_mutex_lock(&m->dirsum_mu[st]);
		if (m->dirsum_gen[st] == gen) {
			*d = (struct meta_dirsum){.dir = dir, .valid = true, .sum = *sum};
			if (cached)
				memcpy(cached, read, words * 8);
		}
		pthread_mutex_unlock(&m->dirsum_mu[st]);
		if (bits) {
			memcpy(bits, read, words * 8);
			*have_bits = true;
		}
	}
	free(read);
	return rc;
}

/* A directory's merged partial rows, from the cache or the store. */
int meta_dirsum_get(struct meta_store *m, uint64_t dir, struct meta_partial *sum)
{
	bool have_bits;
	return meta_dirsum_buckets(m, dir, sum, NULL, &have_bits);
}

/* A directory's attributes and parent as stored (without the merged partial rows), for
 * a lookup's permission check: from dircache when no commit happened since it was read. */
static int dir_row(struct meta_store *m, uint64_t ino, struct meta_inode *out)
{
	uint32_t slot = (uint32_t)(aq_mix64(ino, 0xd1c) % META_DIRCACHE_SLOTS);
	pthread_mutex_t *mu = &m->dirsum_mu[slot % META_DIRSUM_STRIPES];
	struct meta_dirslot *d = &m->dircache[slot];
	uint64_t gen = atomic_load(&m->dircache_gen);
	pthread_mutex_lock(mu);
	if (d->ino == ino && d->gen == gen) {
		out->a = d->a;
		out->parent = d->parent;
		out->target_len = 0;
		pthread_mutex_unlock(mu);
		return 0;
	}
	pthread_mutex_unlock(mu);
	int rc = meta_read_inode(m, ino, out);
	if (rc || !S_ISDIR(out->a.mode))
		return rc;
	pthread_mutex_lock(mu);
	*d = (struct meta_dirslot){.ino = ino, .gen = gen, .a = out->a, .parent = out->parent};
	pthread_mutex_unlock(mu);
	return 0;
}

int meta_commit(struct meta_store *m, rocksdb_writebatch_t *wb)
{
	char *err = NULL;
	rocksdb_write(m->db, m->wopts, wb, &err);
	/* after the write: a reader that took the old generation may have read the old row */
	atomic_fetch_add(&m->dircache_gen, 1);
	dirsum_commit(m, !err);
	if (err) {
		log_error("meta: rocksdb write: %s", err);
		rocksdb_free(err);
		/* The failed batch may have updated cached partial rows: drop them all. */
		atomic_fetch_add(&m->pcache_epoch, 1);
		atomic_store(&m->write_failed, true);
		return -EIO;
	}
	return 0;
}

/* Writes a new 'T' row so that every ts below end is covered, if it is not yet. */
static int reserve_clock(struct meta_store *m, uint64_t end)
{
	int rc = 0;
	pthread_mutex_lock(&m->clock_lock);
	if (end > atomic_load(&m->clock_reserved)) {
		uint64_t upto = end + META_CLOCK_BLOCK;
		uint8_t key = MK_CLOCK, v[8];
		rocksdb_writebatch_t *wb = meta_batch_new();
		put_le64(v, upto);
		rocksdb_writebatch_put(wb, (const char *)&key, 1, (const char *)v, sizeof(v));
		/* Committed before any batch that uses a ts below upto (WAL order). */
		rc = meta_commit(m, wb);
		rocksdb_writebatch_destroy(wb);
		if (rc == 0)
			atomic_store(&m->clock_reserved, upto);
	}
	pthread_mutex_unlock(&m->clock_lock);
	return rc;
}

int meta_take_ts(struct meta_store *m, uint32_t k, uint64_t *ts)
{
	AQ_ASSERT(k >= 1);
	uint64_t first = atomic_fetch_add(&m->log_clock, k);
	if (first + k > atomic_load(&m->clock_reserved)) {
		int rc = reserve_clock(m, first + k);
		if (rc)
			return rc;
	}
	*ts = first;
	return 0;
}

/* ---- inode counts ------------------------------------------------------------------- */

static void put_count_row(rocksdb_writebatch_t *wb, uint32_t bucket, uint64_t live_below, uint64_t mark)
{
	uint8_t key[META_COUNT_KEY_LEN], v[META_COUNT_VAL_LEN];
	put_le64(v, live_below);
	put_le64(v + 8, mark);
	rocksdb_writebatch_put(wb, (const char *)key, meta_key_count(key, bucket), (const char *)v, sizeof(v));
}

void meta_count_drop(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino)
{
	const struct meta_count *c = &m->counts[aq_ino_bucket(ino)];
	AQ_ASSERT(c->nlive > 0);
	/* Rows at or above the mark are counted by the scan at open; one below it must leave
	 * the persisted count in the same batch. */
	if ((ino & AQ_INO_SEQ_MASK) < c->mark) {
		AQ_ASSERT(c->live_below > 0);
		put_count_row(wb, aq_ino_bucket(ino), c->live_below - 1, c->mark);
	}
}

void meta_count_dropped(struct meta_store *m, uint64_t ino)
{
	struct meta_count *c = &m->counts[aq_ino_bucket(ino)];
	if ((ino & AQ_INO_SEQ_MASK) < c->mark)
		c->live_below--;
	c->nlive--;
	atomic_fetch_sub(&m->nfiles, 1);
}

int meta_is_dot(const char *name, size_t len)
{
	if (len == 1 && name[0] == '.')
		return 1;
	if (len == 2 && name[0] == '.' && name[1] == '.')
		return 2;
	return 0;
}

int meta_check_name(const char *name, size_t len)
{
	if (name == NULL || len == 0)
		return -EINVAL;
	if (len > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	if (memchr(name, '/', len) || memchr(name, '\0', len))
		return -EINVAL;
	return 0;
}

/* New entries and attributes stop, with ENOSPC, while the store's file system has less
 * free than its memtables may need when flushed (half their arena: the SST files of
 * these rows came to less) plus META_SPACE_FLOOR: RocksDB that runs
 * out of space in a write stops taking writes, and Debian's build asserts (aqd aborted
 * after a disk filled with empty files: WritableFileWriter's sync_without_flush_called_).
 * Removals go on, so that space can be freed. The data targets keep their own reserve
 * (src/data), and may fill the disk to it first. */
#define META_SPACE_FLOOR (16ull << 20)
#define META_SPACE_EVERY_NS 100000000ull

int meta_space_check(struct meta_store *m)
{
	uint64_t now = aq_mono_ns(), last = atomic_load(&m->space_checked_ns);
	if (now - last >= META_SPACE_EVERY_NS &&
	    atomic_compare_exchange_strong(&m->space_checked_ns, &last, now)) {
		struct statvfs sv;
		uint64_t mem = 0;
		if (statvfs(m->path, &sv) == 0) {
			if (rocksdb_property_int(m->db, "rocksdb.cur-size-all-mem-tables", &mem) != 0)
				mem = 0;
			uint64_t free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
			bool low = free_bytes < mem / 2 + META_SPACE_FLOOR;
			if (low != atomic_exchange(&m->space_low, low))
				log_warn("metadata store: %llu MiB free, %s new entries (memtables %llu MiB)",
					 (unsigned long long)(free_bytes >> 20), low ? "refusing" : "taking again",
					 (unsigned long long)(mem >> 20));
		}
	}
	return atomic_load(&m->space_low) ? -ENOSPC : 0;
}

int meta_alloc_ino(struct meta_store *m, uint32_t bucket, rocksdb_writebatch_t *wb, uint64_t *ino)
{
	uint64_t seq = m->seq_next[bucket];
	if (seq > AQ_INO_SEQ_MASK)
		return -ENOSPC;
	if (seq >= m->seq_reserved[bucket]) {
		uint8_t key[META_SEQ_KEY_LEN], v[8];
		uint64_t upto = MIN(seq + META_SEQ_BLOCK, AQ_INO_SEQ_MASK + 1);
		put_le64(v, upto);
		rocksdb_writebatch_put(wb, (const char *)key, meta_key_seq(key, bucket), (const char *)v, sizeof(v));
		m->seq_reserved[bucket] = upto;
	}
	m->seq_next[bucket] = seq + 1;
	*ino = aq_ino_make(bucket, seq);
	AQ_ASSERT(*ino != AQ_ROOT_INO && *ino != 0);
	return 0;
}

/* ---- directories' partial rows ------------------------------------------------------ */

struct partials_out {
	struct meta_partial *out;
	bool *present;
};

static int partial_found(void *arg, size_t i, const uint8_t *v, size_t len)
{
	struct partials_out *po = arg;
	if (po->present)
		po->present[i] = true;
	return meta_partial_decode(v, len, &po->out[i]) ? -EIO : 0;
}

int meta_read_partials(struct meta_store *m, uint64_t dir, uint32_t b0, uint32_t b1, struct meta_partial *out,
		       bool *present)
{
	AQ_ASSERT(b0 < b1 && b1 <= m->nbuckets);
	uint32_t n = b1 - b0;
	uint8_t *keys = aq_malloc((size_t)n * META_PARTIAL_KEY_LEN);
	const char **klist = aq_malloc(n * sizeof(*klist));
	size_t *ksizes = aq_malloc(n * sizeof(*ksizes));

	for (uint32_t i = 0; i < n; i++) {
		uint8_t *k = keys + (size_t)i * META_PARTIAL_KEY_LEN;
		ksizes[i] = meta_key_partial(k, b0 + i, dir);
		klist[i] = (const char *)k;
		memset(&out[i], 0, sizeof(out[i]));
		if (present)
			present[i] = false;
	}
	struct partials_out po = {out, present};
	int rc = meta_multi_get(m, n, klist, ksizes, partial_found, &po);
	free(keys);
	free(klist);
	free(ksizes);
	return rc;
}

/* meta_dir_totals, and into bits (when not NULL) the buckets that hold entries. */
static int dir_totals_bits(struct meta_store *m, uint64_t dir, struct meta_partial *sum, uint64_t *bits)
{
	struct meta_partial *p = aq_malloc(m->nbuckets * sizeof(*p));
	int rc = meta_read_partials(m, dir, 0, m->nbuckets, p, NULL);
	memset(sum, 0, sizeof(*sum));
	for (uint32_t b = 0; b < m->nbuckets; b++) {
		if (bits && p[b].nentries > 0)
			bits[b / 64] |= 1ull << (b % 64);
		sum->nentries += p[b].nentries;
		sum->nsubdirs += p[b].nsubdirs;
		sum->mtime_ns = MAX(sum->mtime_ns, p[b].mtime_ns);
		sum->ctime_ns = MAX(sum->ctime_ns, p[b].ctime_ns);
	}
	free(p);
	AQ_ASSERT(rc != 0 || (sum->nentries >= 0 && sum->nsubdirs >= 0 && sum->nsubdirs <= sum->nentries));
	return rc;
}

int meta_dir_totals(struct meta_store *m, uint64_t dir, struct meta_partial *sum)
{
	return dir_totals_bits(m, dir, sum, NULL);
}

/* The cached partial row of (bucket, dir), moved to the front of its bucket's slots (LRU),
 * or NULL. Caller holds the bucket lock. */
static struct meta_pslot *pcache_find(struct meta_store *m, uint32_t bucket, uint64_t dir)
{
	struct meta_pslot *set = m->pcache + (size_t)bucket * META_PCACHE_WAYS;
	uint64_t epoch = atomic_load(&m->pcache_epoch);
	for (int w = 0; w < META_PCACHE_WAYS; w++) {
		if (set[w].dir != dir)
			continue;
		if (set[w].epoch != epoch)
			return NULL;
		struct meta_pslot hit = set[w];
		memmove(set + 1, set, (size_t)w * sizeof(*set));
		set[0] = hit;
		return &set[0];
	}
	return NULL;
}

/* Caches p as (bucket, dir)'s row, evicting the least recently used slot. */
static void pcache_put(struct meta_store *m, uint32_t bucket, uint64_t dir, const struct meta_partial *p)
{
	struct meta_pslot *set = m->pcache + (size_t)bucket * META_PCACHE_WAYS;
	int w = 0;
	while (w < META_PCACHE_WAYS - 1 && set[w].dir != dir)
		w++;
	memmove(set + 1, set, (size_t)w * sizeof(*set));
	set[0] = (struct meta_pslot){ .dir = dir, .epoch = atomic_load(&m->pcache_epoch), .p = *p };
}

static void pcache_forget(struct meta_store *m, uint32_t bucket, uint64_t dir)
{
	struct meta_pslot *set = m->pcache + (size_t)bucket * META_PCACHE_WAYS;
	for (int w = 0; w < META_PCACHE_WAYS; w++)
		if (set[w].dir == dir)
			set[w].dir = 0;
}

int meta_apply_partials(struct meta_store *m, rocksdb_writebatch_t *wb, const struct meta_pdelta *d, size_t n,
			int64_t now_ns)
{
	for (size_t i = 0; i < n; i++) {
		bool seen = false;
		for (size_t j = 0; j < i; j++)
			if (d[j].bucket == d[i].bucket && d[j].dir == d[i].dir)
				seen = true;
		if (seen)
			continue;
		int64_t dent = 0, dsub = 0;
		for (size_t j = i; j < n; j++)
			if (d[j].bucket == d[i].bucket && d[j].dir == d[i].dir)
				dent += d[j].dentries, dsub += d[j].dsubdirs;

		uint8_t key[META_PARTIAL_KEY_LEN], v[META_PARTIAL_VAL_LEN];
		size_t klen = meta_key_partial(key, d[i].bucket, d[i].dir), len = 0;
		struct meta_partial p = { 0 };
		struct meta_pslot *hit = pcache_find(m, d[i].bucket, d[i].dir);
		if (hit) {
			p = hit->p;
		} else {
			int rc = meta_get(m, key, klen, v, sizeof(v), &len);
			if (rc == 1 && meta_partial_decode(v, len, &p))
				rc = -EIO;
			if (rc < 0) {
				/* Rows cached above belong to a batch that will not commit. */
				atomic_fetch_add(&m->pcache_epoch, 1);
				return rc;
			}
		}
		p.nentries += dent;
		p.nsubdirs += dsub;
		/* Counts are per bucket and every decrement follows an increment in this bucket. */
		AQ_ASSERT(p.nentries >= 0 && p.nsubdirs >= 0);
		p.mtime_ns = MAX(p.mtime_ns, now_ns);
		p.ctime_ns = MAX(p.ctime_ns, now_ns);
		dirsum_note(m, d[i].dir, dent, dsub, now_ns, (int32_t)d[i].bucket, p.nentries > 0);
		meta_partial_encode(&p, v);
		rocksdb_writebatch_put(wb, (const char *)key, klen, (const char *)v, sizeof(v));
		/* Ahead of the commit: a failed commit bumps the epoch, which drops it. */
		pcache_put(m, d[i].bucket, d[i].dir, &p);
	}
	return 0;
}

void meta_merge_dir(struct aq_attr *a, const struct meta_partial *sum)
{
	a->nlink = (uint32_t)(2 + sum->nsubdirs);
	a->size = META_DIR_SIZE;
	a->blocks = META_DIR_SIZE / 512;
	a->mtime_ns = MAX(a->mtime_ns, sum->mtime_ns);
	a->ctime_ns = MAX(a->ctime_ns, sum->ctime_ns);
}

struct ino_ref {
	uint64_t ino;
	uint32_t i;
};

static int ino_ref_cmp(const void *a, const void *b)
{
	const struct ino_ref *x = a, *y = b;
	uint32_t bx = aq_ino_bucket(x->ino), by = aq_ino_bucket(y->ino);
	if (bx != by)
		return bx < by ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

int meta_attrs_of(struct meta_store *m, const uint64_t *inos, uint32_t n, struct aq_attr *out, int *rcs)
{
	/* Point reads in key order. Stepping an iterator from one row to the next looks
	 * cheaper, but each step walks over every deleted row (tombstone) in between: after a
	 * churn of creates and unlinks that made listing a 27-entry directory take 25 ms. */
	struct ino_ref *refs = aq_malloc((n ? n : 1) * sizeof(*refs));
	for (uint32_t i = 0; i < n; i++)
		refs[i] = (struct ino_ref){ .ino = inos[i], .i = i };
	qsort(refs, n, sizeof(*refs), ino_ref_cmp);
	int rc = 0;
	for (uint32_t r = 0; r < n && rc == 0; r++) {
		int *res = &rcs[refs[r].i];
		*res = meta_attr_of(m, refs[r].ino, &out[refs[r].i]);
		if (*res == -EIO)
			rc = -EIO;
	}
	free(refs);
	return rc;
}

int meta_attr_of(struct meta_store *m, uint64_t ino, struct aq_attr *out)
{
	struct meta_inode *in = aq_malloc(sizeof(*in));
	int rc = meta_read_inode(m, ino, in);
	if (rc)
		goto out;
	if (S_ISDIR(in->a.mode)) {
		struct meta_partial sum;
		rc = meta_dirsum_get(m, ino, &sum);
		if (rc)
			goto out;
		meta_merge_dir(&in->a, &sum);
	}
	*out = in->a;
out:
	free(in);
	return rc;
}

int meta_iter_error(rocksdb_iterator_t *it, const char *what)
{
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	if (!err)
		return 0;
	log_error("meta: %s: %s", what, err);
	rocksdb_free(err);
	return -EIO;
}

struct xattr_del {
	rocksdb_writebatch_t *wb;
	size_t n;
};

static int del_one_xattr(void *arg, const char *key, size_t klen, const char *name, size_t nlen)
{
	struct xattr_del *d = arg;
	rocksdb_writebatch_delete(d->wb, key, klen);
	d->n++;
	return 0;
}

int meta_del_xattrs(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino)
{
	struct xattr_del d = {.wb = wb};
	int rc = meta_xattr_each(m, ino, del_one_xattr, &d);
	if (rc == 0 && d.n > 0) {
		uint8_t key[META_XATTR_KEY_MAX]; /* and their summary row (xattr.c) */
		rocksdb_writebatch_delete(wb, (const char *)key, meta_key_xattr(key, ino, "", 0));
	}
	return rc;
}

/* ---- open / close ------------------------------------------------------------------- */

/* The changelog clock at open: above every ts handed out before, which the 'T' row
 * bounds. A store without one (made before it existed) has its 'L' rows scanned once. */
static int load_clock(struct meta_store *m)
{
	uint8_t key = MK_CLOCK, v[8];
	size_t len = 0;
	uint64_t above = 0;
	int rc = meta_get(m, &key, 1, v, sizeof(v), &len);
	if (rc == 1 && len != sizeof(v))
		rc = -EIO;
	if (rc < 0)
		return rc;
	if (rc == 1) {
		above = get_le64(v);
		atomic_store(&m->clock_reserved, above);
	} else {
		rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, m->ropts);
		const char start = MK_LOG;
		for (rocksdb_iter_seek(it, &start, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
			size_t klen;
			const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
			if (klen < 1 || k[0] != MK_LOG)
				break;
			if (klen == META_LOG_KEY_LEN)
				above = MAX(above, get_be64(k + 11) + 1);
		}
		rc = meta_iter_error(it, "changelog scan");
		rocksdb_iter_destroy(it);
		if (rc)
			return rc;
	}
	/* The first ts taken writes a fresh 'T' row (clock_reserved <= the clock). */
	atomic_store(&m->log_clock, MAX((uint64_t)aq_now_ns(), above));
	return 0;
}

/* Counts the inode rows of bucket b whose seq is at least from (it is positioned on the
 * bucket's range). */
static uint64_t count_inodes_from(rocksdb_iterator_t *it, uint32_t b, uint64_t from)
{
	uint8_t start[META_INODE_KEY_LEN];
	uint64_t n = 0;
	if (from > AQ_INO_SEQ_MASK)
		return 0;
	rocksdb_iter_seek(it, (const char *)start, meta_key_inode(start, aq_ino_make(b, from)));
	for (; rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen != META_INODE_KEY_LEN || k[0] != MK_INODE || get_be16(k + 1) != b)
			break;
		n++;
	}
	return n;
}

/* Rebuilds every bucket's inode count from its 'C' row and a scan of the rows at or above
 * its mark (short: creates move the mark up every META_COUNT_MARK_EVERY inodes). A bucket
 * whose scan was long (a store from before the 'C' rows) gets a fresh row. */
static int load_counts(struct meta_store *m)
{
	rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, m->ropts);
	rocksdb_writebatch_t *wb = meta_batch_new();
	uint64_t total = 0;
	int rc = 0;
	for (uint32_t b = 0; b < m->nbuckets && rc == 0; b++) {
		struct meta_count *c = &m->counts[b];
		uint8_t key[META_COUNT_KEY_LEN], v[META_COUNT_VAL_LEN];
		size_t len = 0;
		rc = meta_get(m, key, meta_key_count(key, b), v, sizeof(v), &len);
		if (rc == 1 && len != sizeof(v))
			rc = -EIO;
		if (rc < 0)
			break;
		if (rc == 1) {
			c->live_below = get_le64(v);
			c->mark = get_le64(v + 8);
		}
		rc = 0;
		uint64_t above = count_inodes_from(it, b, c->mark);
		c->nlive = c->live_below + above;
		if (above > META_COUNT_MARK_EVERY) {
			c->live_below = c->nlive;
			c->mark = m->seq_next[b]; /* every seq in use is below it */
			put_count_row(wb, b, c->live_below, c->mark);
		}
		total += c->nlive;
	}
	if (rc == 0)
		rc = meta_iter_error(it, "inode scan");
	rocksdb_iter_destroy(it);
	if (rc == 0 && rocksdb_writebatch_count(wb) > 0)
		rc = meta_commit(m, wb);
	rocksdb_writebatch_destroy(wb);
	atomic_store(&m->nfiles, total);
	return rc;
}

/* At close: moves every bucket's mark to its sequence, so the next open scans nothing. */
static void save_counts(struct meta_store *m)
{
	if (atomic_load(&m->write_failed))
		return; /* after a failed write, memory may disagree with the store: let open recount */
	rocksdb_writebatch_t *wb = meta_batch_new();
	for (uint32_t b = 0; b < m->nbuckets; b++) {
		struct meta_count *c = &m->counts[b];
		if (c->mark == m->seq_next[b] && c->live_below == c->nlive)
			continue;
		put_count_row(wb, b, c->nlive, m->seq_next[b]);
	}
	if (rocksdb_writebatch_count(wb) > 0 && meta_commit(m, wb) != 0)
		log_warn("meta: could not save inode counts; the next open recounts");
	rocksdb_writebatch_destroy(wb);
}

/* Writes the superblock and the root directory into a new store. */
static int format_store(struct meta_store *m)
{
	rocksdb_writebatch_t *wb = meta_batch_new();
	uint8_t sb[8];
	sb[0] = META_FORMAT_VERSION;
	sb[1] = sb[2] = sb[3] = 0;
	put_le32(sb + 4, m->nbuckets);
	rocksdb_writebatch_put(wb, "M", 1, (const char *)sb, sizeof(sb));

	struct meta_inode *root = aq_calloc(1, sizeof(*root));
	int64_t now = aq_now_ns();
	root->a.ino = AQ_ROOT_INO;
	root->a.mode = S_IFDIR | 0755;
	root->a.nlink = 2;
	root->a.atime_ns = root->a.mtime_ns = root->a.ctime_ns = now;
	root->a.generation = 1;
	root->a.chunk_size = m->chunk_size;
	root->parent = AQ_ROOT_INO; /* the root's ".." is itself */
	meta_put_inode(wb, root);
	free(root);

	int rc = meta_commit(m, wb);
	rocksdb_writebatch_destroy(wb);
	return rc;
}

static void free_store(struct meta_store *m)
{
	if (m->cf)
		rocksdb_column_family_handle_destroy(m->cf);
	if (m->db)
		rocksdb_close(m->db);
	if (m->dbopts)
		rocksdb_options_destroy(m->dbopts);
	if (m->topts)
		rocksdb_block_based_options_destroy(m->topts);
	if (m->block_cache)
		rocksdb_cache_destroy(m->block_cache);
	if (m->wopts)
		rocksdb_writeoptions_destroy(m->wopts);
	if (m->ropts)
		rocksdb_readoptions_destroy(m->ropts);
	if (m->locks) {
		for (uint32_t b = 0; b < m->nbuckets; b++)
			pthread_mutex_destroy(&m->locks[b]);
		free(m->locks);
	}
	for (uint32_t i = 0; i < META_DIRSUM_STRIPES; i++)
		pthread_mutex_destroy(&m->dirsum_mu[i]);
	free(m->dirsum);
	free(m->dirsum_bits);
	free(m->dircache);
	pthread_mutex_destroy(&m->rename_lock);
	pthread_mutex_destroy(&m->clock_lock);
	free(m->counts);
	meta_nfilter_free_all(m);
	free(m->pcache);
	free(m->seq_next);
	free(m->seq_reserved);
	free(m->path);
	free(m);
}

/* Compactions run at nice 19 (RocksDB's low-priority pool, shared by every store in the
 * process; flushes keep their priority). Metadata requests run on aqd's one loop thread,
 * so a create's rate is that thread's share of a CPU: on a small machine a compaction at
 * equal priority took it away in bursts, and the work a compaction does is not urgent
 * until sorted runs pile up, when RocksDB slows writes and the foreground yields. */
static void lower_once(void)
{
	rocksdb_env_t *env = rocksdb_create_default_env(); /* a handle on the process's Env */
	rocksdb_env_lower_thread_pool_cpu_priority(env);
	rocksdb_env_destroy(env);
}

static void lower_compaction_priority(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, lower_once);
}

int meta_open(const char *path, bool create, const struct meta_options *opt, struct meta_store **out)
{
	struct meta_store *m = aq_calloc(1, sizeof(*m));
	char *err = NULL;
	int rc = 0;

	pthread_mutex_init(&m->rename_lock, NULL);
	pthread_mutex_init(&m->clock_lock, NULL);
	m->path = aq_strdup(path);
	m->nbuckets = opt && opt->nbuckets ? opt->nbuckets : AQ_BUCKETS_DEFAULT;
	m->chunk_size = opt && opt->chunk_size ? opt->chunk_size : AQ_CHUNK_SIZE_DEFAULT;
	m->truncate_fn = opt ? opt->truncate_fn : NULL;
	m->alloc_fn = opt ? opt->alloc_fn : NULL;
	m->truncate_arg = opt ? opt->truncate_arg : NULL;
	if (m->nbuckets > AQ_BUCKETS_MAX || m->chunk_size > AQ_CHUNK_SIZE_MAX) {
		rc = -EINVAL;
		goto err;
	}

	m->dbopts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(m->dbopts, create);
	rocksdb_options_increase_parallelism(m->dbopts, 4);
	lower_compaction_priority();
	/* Creates look up names that mostly do not exist: bloom filters (in SST files and in
	 * the memtable) answer those without a skiplist or block search. Larger memtables mean
	 * fewer flushes and L0 files under a burst of small keys. */
	m->topts = rocksdb_block_based_options_create();
	rocksdb_block_based_options_set_filter_policy(m->topts, rocksdb_filterpolicy_create_bloom(10));
	/* Lookups and stats of a big directory are point reads all over the key space: keep
	 * the uncompressed blocks in a cache of bounded size (RocksDB's default is 8 MiB, so
	 * each read went to the OS page cache and snappy), and find keys in a block by hash. */
	m->block_cache = rocksdb_cache_create_lru(META_BLOCK_CACHE_BYTES);
	rocksdb_block_based_options_set_block_cache(m->topts, m->block_cache);
	rocksdb_block_based_options_set_data_block_index_type(m->topts, rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
	rocksdb_options_set_block_based_table_factory(m->dbopts, m->topts);
	/* Most of a create's time in aqd went to memtable skiplist inserts (a search from the
	 * top for each of its rows). Rows of one kind in one bucket mostly land next to the
	 * last one (inode numbers and changelog stamps grow, a directory's partial row is
	 * rewritten in place): RocksDB keeps an insert hint per key prefix, and the prefix
	 * here is the kind and bucket. Native creates: 36-38k/s -> 55-56k/s. */
	/* Tiered (universal) compaction, without the full compaction it runs each time the
	 * newer runs outgrow the oldest twice over: dentries are placed by hash, so under a
	 * burst of creates leveled compaction rewrote the whole of L1 for every few
	 * memtables flushed, a cost that grew with the tree (10M creates in one directory:
	 * last tenth 0.55-0.74 of the first) and the full compactions landed in the last
	 * tenths; this way 0.81-1.19, at the same or a higher rate, and a smaller store
	 * (docs/performance.md). The price: versions a change replaced wait longer to go,
	 * at most a day (periodic compaction). A store made with leveled compaction opens
	 * as it is (test_meta leveled_store_opens). */
	rocksdb_get_options_from_string(m->dbopts,
					"allow_fallocate=false;manifest_preallocation_size=65536;"
					"write_buffer_size=67108864;max_write_buffer_number=4;"
					"memtable_prefix_bloom_size_ratio=0.1;memtable_whole_key_filtering=true;"
					"memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.3;"
					"compaction_style=kCompactionStyleUniversal;"
					"compaction_options_universal={max_size_amplification_percent=1000};"
					"periodic_compaction_seconds=86400",
					m->dbopts, &err);
	if (err) {
		log_warn("metadata store options: %s", err);
		rocksdb_free(err);
		err = NULL;
	}
	/* An operator's (or a benchmark's) RocksDB options on top, in RocksDB's own syntax. */
	const char *extra = getenv("AQ_META_ROCKSDB_OPTIONS");
	if (extra && *extra) {
		rocksdb_get_options_from_string(m->dbopts, extra, m->dbopts, &err);
		if (err) {
			log_warn("AQ_META_ROCKSDB_OPTIONS ignored: %s", err);
			rocksdb_free(err);
			err = NULL;
		} else {
			log_info("metadata store: AQ_META_ROCKSDB_OPTIONS=%s", extra);
		}
	}
	m->wopts = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(m->wopts, opt ? opt->sync : false);
	m->ropts = rocksdb_readoptions_create();
	/* opened with its column families named, for the calls that want a handle */
	const char *cfname = "default";
	const rocksdb_options_t *cfopts = m->dbopts;
	m->db = rocksdb_open_column_families(m->dbopts, path, 1, &cfname, &cfopts, &m->cf, &err);
	if (err) {
		log_error("meta: open %s: %s", path, err);
		rocksdb_free(err);
		rc = create ? -EIO : -ENOENT;
		goto err;
	}

	uint8_t sb[8];
	size_t sblen = 0;
	uint8_t mkey = MK_SUPER;
	rc = meta_get(m, &mkey, 1, sb, sizeof(sb), &sblen);
	if (rc < 0)
		goto err;
	if (rc == 0) {
		if (!create) {
			rc = -ENOENT;
			goto err;
		}
		rc = format_store(m);
		if (rc)
			goto err;
	} else {
		if (sblen != sizeof(sb) || sb[0] == 0 || sb[0] > META_FORMAT_VERSION) {
			log_error("meta: %s: unknown format", path);
			rc = -EIO;
			goto err;
		}
		if (sb[0] < META_FORMAT_VERSION) {
			/* Upgraded before any row of the new format is written, and ahead of them
			 * in the WAL: an older aqd then refuses the store. */
			sb[0] = META_FORMAT_VERSION;
			rocksdb_writebatch_t *wb = meta_batch_new();
			rocksdb_writebatch_put(wb, (const char *)&mkey, 1, (const char *)sb, sizeof(sb));
			rc = meta_commit(m, wb);
			rocksdb_writebatch_destroy(wb);
			if (rc)
				goto err;
			log_info("meta: %s: upgraded to format version %d", path, META_FORMAT_VERSION);
		}
		/* An existing store keeps the bucket count it was formatted with. */
		m->nbuckets = get_le32(sb + 4);
		if (m->nbuckets == 0 || m->nbuckets > AQ_BUCKETS_MAX) {
			rc = -EIO;
			goto err;
		}
	}
	rc = 0;

	m->dirsum = aq_calloc(META_DIRSUM_SLOTS, sizeof(*m->dirsum));
	if (m->nbuckets <= META_DIRSUM_BITS_MAX)
		m->dirsum_bits = aq_calloc((size_t)META_DIRSUM_SLOTS * ((m->nbuckets + 63) / 64), 8);
	m->dircache = aq_calloc(META_DIRCACHE_SLOTS, sizeof(*m->dircache));
	atomic_store(&m->dircache_gen, 1); /* empty slots (generation 0) never match */
	for (uint32_t i = 0; i < META_DIRSUM_STRIPES; i++)
		pthread_mutex_init(&m->dirsum_mu[i], NULL);
	m->locks = aq_calloc(m->nbuckets, sizeof(*m->locks));
	m->seq_next = aq_calloc(m->nbuckets, sizeof(*m->seq_next));
	m->seq_reserved = aq_calloc(m->nbuckets, sizeof(*m->seq_reserved));
	m->counts = aq_calloc(m->nbuckets, sizeof(*m->counts));
	m->pcache = aq_calloc((size_t)m->nbuckets * META_PCACHE_WAYS, sizeof(*m->pcache));
	m->nfilters = aq_calloc((size_t)m->nbuckets * META_NFILTER_WAYS, sizeof(*m->nfilters));
	m->nfilter_budget = META_NFILTER_BYTES;
	for (uint32_t b = 0; b < m->nbuckets; b++) {
		pthread_mutex_init(&m->locks[b], NULL);
		uint8_t key[META_SEQ_KEY_LEN], v[8];
		size_t len = 0;
		int got = meta_get(m, key, meta_key_seq(key, b), v, sizeof(v), &len);
		if (got < 0 || (got == 1 && len != sizeof(v))) {
			rc = -EIO;
			goto err;
		}
		/* Sequence 0 is never used; bucket 0's sequence 1 is the root. */
		uint64_t start = b == 0 ? 2 : 1;
		uint64_t upto = got == 1 ? get_le64(v) : 0;
		m->seq_next[b] = MAX(start, upto);
		/* Nothing above seq_next is reserved as far as this run knows: the first
		 * allocation writes a new 'S' row. */
		m->seq_reserved[b] = m->seq_next[b];
	}

	rc = load_counts(m);
	if (rc == 0)
		rc = load_clock(m);
	if (rc)
		goto err;
	atomic_store(&m->gen_next, (uint64_t)aq_now_ns());
	*out = m;
	return 0;
err:
	free_store(m);
	return rc;
}

void meta_close(struct meta_store *m)
{
	if (!m)
		return;
	save_counts(m);
	free_store(m);
}

uint32_t meta_nbuckets(const struct meta_store *m)
{
	return m->nbuckets;
}

void meta_thread_init(void)
{
	/* RocksDB counts into a thread-local perf context on every key comparison unless the
	 * thread's perf level says not to; those counts nobody reads cost about a tenth of
	 * a listing's time (each is a __tls_get_addr from a shared library). */
	static __thread bool done;
	if (!done) {
		rocksdb_set_perf_level(rocksdb_disable);
		done = true;
	}
}

int meta_sync(struct meta_store *m)
{
	/* Nothing written since the last sync: nothing to make durable. The sequence number
	 * is read before the sync, so a write that races it is synced by the next one. */
	uint64_t seq = rocksdb_get_latest_sequence_number(m->db);
	uint64_t synced = atomic_load(&m->synced_seq);
	if (seq == synced)
		return 0;
	char *err = NULL;
	rocksdb_flush_wal(m->db, 1, &err);
	if (err) {
		log_error("meta: flush wal: %s", err);
		rocksdb_free(err);
		return -EIO;
	}
	while (synced < seq && !atomic_compare_exchange_weak(&m->synced_seq, &synced, seq))
		;
	return 0;
}

int meta_count_files(struct meta_store *m, uint64_t *files)
{
	*files = atomic_load(&m->nfiles);
	return 0;
}

/* ---- lookup / getattr --------------------------------------------------------------- */

int meta_getattr(struct meta_store *m, uint64_t ino, struct aq_attr *out)
{
	return meta_attr_of(m, ino, out);
}

int meta_lookup(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
		struct aq_attr *out)
{
	int rc = meta_check_name(name, name_len);
	if (rc)
		return rc;
	struct meta_inode *dir = aq_malloc(sizeof(*dir));
	rc = dir_row(m, parent, dir);
	if (rc)
		goto out;
	if (!S_ISDIR(dir->a.mode)) {
		rc = -ENOTDIR;
		goto out;
	}
	rc = meta_perm(m, cr, &dir->a, X_OK);
	if (rc)
		goto out;
	int dot = meta_is_dot(name, name_len);
	if (dot) {
		rc = meta_attr_of(m, dot == 1 ? parent : dir->parent, out);
		goto out;
	}
	uint8_t key[META_DENTRY_KEY_MAX];
	uint32_t b = meta_dentry_bucket(m, parent, name, name_len);
	size_t klen = meta_key_dentry(key, b, parent, meta_dentry_pos(parent, name, name_len), name, name_len);
	struct meta_dentry d;
	rc = meta_get_dentry(m, key, klen, &d);
	if (rc <= 0) {
		rc = rc == 0 ? -ENOENT : rc;
		goto out;
	}
	rc = meta_attr_of(m, d.ino, out);
out:
	free(dir);
	return rc;
}

/* ---- create --------------------------------------------------------------------------- */

/* One request to create entries in one directory (every entry gets the same mode). */
struct create_req {
	uint64_t parent;
	uint32_t n;
	const char *const *names;
	const size_t *lens;
	uint32_t mode, rdev, flags;
	uint32_t umask; /* the creator's, applied unless the parent has a default ACL */
	const char *target; /* symlinks */
	size_t target_len;
	bool tmpfile;       /* one unnamed file (O_TMPFILE): an orphan from the start */
};

/* Takes the umask a create's mode may carry (AQ_MODE_UMASK) off it. */
static uint32_t take_umask(uint32_t *mode)
{
	uint32_t umask = (*mode & AQ_MODE_HAS_UMASK) ? (*mode >> 16) & 0777 : 0;
	*mode &= ~AQ_MODE_UMASK_BITS;
	return umask;
}

/* The ACLs a new inode gets from its parent's default ACL, encoded (len 0: none). */
struct new_acls {
	size_t alen, dlen;
	uint8_t access[META_ACL_BYTES_MAX], dflt[META_ACL_BYTES_MAX];
};

/* The permission bits of rq's new inodes and their ACLs, as Linux's posix_acl_create:
 * with a default ACL on the parent, the create mode narrowed by it, an access ACL
 * unless the mode says all of it, and a directory's default ACL (the umask is not
 * applied); without one, the mode less the umask. Returns the mode, or -EIO. */
static int64_t new_inode_mode(struct meta_store *m, const struct create_req *rq, const struct meta_inode *dir,
			      struct new_acls *na)
{
	uint32_t mode = rq->mode;
	na->alen = na->dlen = 0;
	if (S_ISLNK(mode))
		return mode;
	if (!(dir->a.flags & AQ_ATTR_DACL))
		return mode & ~rq->umask; /* every create but those under a default ACL */
	struct meta_acl *acl = aq_malloc(sizeof(*acl));
	int rc = meta_acl_read(m, dir->a.ino, meta_acl_default, acl);
	if (rc == 0)
		mode &= ~rq->umask;
	if (rc == 1 && S_ISDIR(mode))
		na->dlen = meta_acl_encode(acl, na->dflt);
	if (rc == 1 && !meta_acl_inherit(acl, &mode))
		na->alen = meta_acl_encode(acl, na->access);
	free(acl);
	return rc < 0 ? (int64_t)rc : (int64_t)mode;
}

/* A new inode's ACL rows (and its xattr summary) into wb. */
static void put_new_acls(rocksdb_writebatch_t *wb, uint64_t ino, const struct new_acls *na)
{
	const char *names[2];
	const void *values[2];
	size_t lens[2];
	uint32_t n = 0;
	if (na->alen)
		names[n] = meta_acl_access, values[n] = na->access, lens[n++] = na->alen;
	if (na->dlen)
		names[n] = meta_acl_default, values[n] = na->dflt, lens[n++] = na->dlen;
	meta_xattrs_put_new(wb, ino, names, values, lens, n);
}

enum ent_state {
	ENT_DONE,     /* rc says how it ended */
	ENT_PENDING,  /* name valid, not looked at yet */
	ENT_EXISTS,   /* the name is taken: ino/dtype are the existing entry's */
	ENT_NEW,      /* created by this batch */
	ENT_OPEN,     /* an existing regular file, returned as open(O_CREAT) does */
};

struct create_ent {
	enum ent_state state;
	int rc;
	uint32_t bucket, slot; /* slot: index of bucket in the batch's bucket list */
	uint64_t pos, ino, generation;
	uint8_t dtype;
	int32_t same_as; /* ENT_OPEN of a name created earlier in this batch: its index, else -1 */
	size_t klen;
	uint8_t key[META_DENTRY_KEY_MAX];
};

struct create_bkt {
	uint32_t bucket;
	uint32_t created, subdirs;
	uint32_t asked;     /* the batch's names in the bucket not yet decided (name filters) */
	uint64_t first_seq; /* first inode seq this batch took in the bucket */
	bool marked;        /* the batch moves the bucket's count mark to first_seq */
};

struct existing {
	struct create_ent *e;
	const uint32_t *idx;
};

static int existing_found(void *arg, size_t j, const uint8_t *v, size_t len)
{
	struct existing *ex = arg;
	struct meta_dentry d;
	if (meta_dentry_decode(v, len, &d))
		return -EIO;
	struct create_ent *x = &ex->e[ex->idx[j]];
	x->state = ENT_EXISTS;
	x->ino = d.ino;
	x->dtype = d.dtype;
	return 0;
}

/* Looks up every pending entry's dentry that its bucket's name filter cannot rule out (one
 * batched MultiGet); the ones that exist become ENT_EXISTS. Returns 0 or -EIO. */
static int find_existing(struct meta_store *m, uint64_t dir, struct create_ent *e, uint32_t n)
{
	if (n == 1) {
		struct meta_dentry d;
		if (e->state != ENT_PENDING || meta_nfilter_free(m, e->bucket, dir, e->key, e->klen))
			return 0;
		int rc = meta_get_dentry(m, e->key, e->klen, &d);
		if (rc == 1) {
			e->state = ENT_EXISTS;
			e->ino = d.ino;
			e->dtype = d.dtype;
		}
		return rc < 0 ? rc : 0;
	}
	const char **klist = aq_malloc(n * sizeof(*klist));
	size_t *ksizes = aq_malloc(n * sizeof(*ksizes));
	uint32_t *idx = aq_malloc(n * sizeof(*idx));
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (e[i].state != ENT_PENDING || meta_nfilter_free(m, e[i].bucket, dir, e[i].key, e[i].klen))
			continue;
		klist[k] = (const char *)e[i].key;
		ksizes[k] = e[i].klen;
		idx[k++] = i;
	}
	struct existing ex = {e, idx};
	int rc = meta_multi_get(m, k, klist, ksizes, existing_found, &ex);
	free(klist);
	free(ksizes);
	free(idx);
	return rc;
}

/* Builds or grows the name filters of the batch's (bucket, parent) pairs that hold many
 * names (the count from the partial rows the last creates cached). Bucket locks held. */
static void prepare_name_filters(struct meta_store *m, uint64_t parent, const struct create_bkt *bk, uint32_t nb)
{
	for (uint32_t k = 0; k < nb; k++) {
		struct meta_pslot *hit = pcache_find(m, bk[k].bucket, parent);
		uint64_t names = hit && hit->p.nentries > 0 ? (uint64_t)hit->p.nentries : 0;
		meta_nfilter_prepare(m, bk[k].bucket, parent, names, bk[k].asked);
	}
}

/* The entry created earlier in this batch under the same name as e[i], or -1. */
static int32_t created_before(const struct create_ent *e, uint32_t i)
{
	for (uint32_t j = 0; j < i; j++)
		if (e[j].state == ENT_NEW && e[j].pos == e[i].pos && e[j].bucket == e[i].bucket &&
		    e[j].klen == e[i].klen && memcmp(e[j].key, e[i].key, e[i].klen) == 0)
			return (int32_t)j;
	return -1;
}

/* Validates the names and collects the distinct buckets, ascending (the lock order).
 * Returns the number of buckets. */
static uint32_t plan_entries(struct meta_store *m, const struct create_req *rq, struct create_ent *e,
			     struct create_bkt *bk)
{
	uint64_t bits[AQ_BUCKETS_MAX / 64] = { 0 };
	uint32_t nb = 0;
	for (uint32_t i = 0; i < rq->n; i++) {
		const char *name = rq->names[i];
		size_t len = rq->lens[i];
		int rc = meta_check_name(name, len);
		if (rc == 0 && meta_is_dot(name, len))
			rc = -EEXIST;
		e[i].same_as = -1;
		e[i].rc = rc;
		e[i].state = rc ? ENT_DONE : ENT_PENDING;
		if (rc)
			continue;
		e[i].bucket = meta_dentry_bucket(m, rq->parent, name, len);
		e[i].pos = meta_dentry_pos(rq->parent, name, len);
		e[i].klen = meta_key_dentry(e[i].key, e[i].bucket, rq->parent, e[i].pos, name, len);
		bits[e[i].bucket / 64] |= 1ull << (e[i].bucket % 64);
	}
	for (uint32_t w = 0; w < (m->nbuckets + 63) / 64; w++)
		for (uint64_t x = bits[w]; x; x &= x - 1)
			bk[nb++] = (struct create_bkt){ .bucket = w * 64 + (uint32_t)__builtin_ctzll(x) };
	AQ_ASSERT(nb <= rq->n && nb <= m->nbuckets);
	for (uint32_t i = 0; i < rq->n; i++) {
		if (e[i].state != ENT_PENDING)
			continue;
		uint32_t lo = 0, hi = nb; /* binary search: bk is sorted */
		while (hi - lo > 1) {
			uint32_t mid = (lo + hi) / 2;
			if (bk[mid].bucket <= e[i].bucket)
				lo = mid;
			else
				hi = mid;
		}
		AQ_ASSERT(bk[lo].bucket == e[i].bucket);
		e[i].slot = lo;
		bk[lo].asked++;
	}
	return nb;
}

/* The new inode every entry of rq gets, less its number and generation. */
static void inode_template(const struct create_req *rq, const struct aq_cred *cr, const struct meta_inode *dir,
			   uint32_t mode, const struct new_acls *na, int64_t now, struct meta_inode *in)
{
	bool isdir = S_ISDIR(rq->mode);
	memset(&in->a, 0, sizeof(in->a));
	in->a.mode = mode;
	if (na->alen)
		in->a.flags |= AQ_ATTR_ACL | AQ_ATTR_XATTRS;
	if (na->dlen)
		in->a.flags |= AQ_ATTR_DACL | AQ_ATTR_XATTRS;
	in->a.uid = cr ? cr->uid : 0;
	in->a.gid = cr ? cr->gid : 0;
	/* A setgid directory hands its group down, and its setgid bit to subdirectories. */
	if (dir->a.mode & S_ISGID) {
		in->a.gid = dir->a.gid;
		if (isdir)
			in->a.mode |= S_ISGID;
	}
	in->a.nlink = isdir ? 2 : !rq->tmpfile;
	if (rq->tmpfile && !(rq->flags & AQ_CREATE_EXCL))
		in->a.flags |= AQ_ATTR_LINKABLE;
	in->a.size = rq->target_len;
	in->a.atime_ns = in->a.mtime_ns = in->a.ctime_ns = now;
	in->a.rdev = rq->rdev;
	in->parent = isdir ? rq->parent : 0;
	in->target_len = (uint32_t)rq->target_len;
	if (rq->target_len)
		memcpy(in->target, rq->target, rq->target_len);
}

/* Decides every pending entry (bucket locks held, parent checked): taken names become
 * EEXIST or ENT_OPEN, the others get an inode number and an inode row in wb. Returns the
 * number of entries to create. */
static uint32_t decide_entries(struct meta_store *m, const struct create_req *rq, int w_rc, struct create_ent *e,
			       struct create_bkt *bk, struct meta_inode *in, const struct new_acls *na,
			       rocksdb_writebatch_t *wb)
{
	bool may_open = S_ISREG(rq->mode) && !(rq->flags & AQ_CREATE_EXCL);
	uint32_t ncreate = 0;
	if (!w_rc)
		w_rc = meta_space_check(m); /* an existing name still opens, or is EEXIST */
	for (uint32_t i = 0; i < rq->n; i++) {
		if (e[i].state == ENT_PENDING && (e[i].same_as = created_before(e, i)) >= 0) {
			e[i].state = ENT_EXISTS;
			e[i].dtype = meta_dtype(rq->mode);
		}
		if (e[i].state == ENT_EXISTS) {
			/* open(O_CREAT) without O_EXCL on an existing regular file opens it. */
			bool open = may_open && e[i].dtype == meta_dtype(S_IFREG);
			e[i].state = open ? ENT_OPEN : ENT_DONE;
			e[i].rc = open ? 0 : -EEXIST;
			continue;
		}
		if (e[i].state != ENT_PENDING)
			continue;
		e[i].state = ENT_DONE;
		e[i].rc = w_rc;
		if (w_rc)
			continue;
		struct create_bkt *b = &bk[e[i].slot];
		e[i].rc = meta_alloc_ino(m, b->bucket, wb, &e[i].ino);
		if (e[i].rc)
			continue;
		struct meta_count *c = &m->counts[b->bucket];
		if (b->created == 0) {
			b->first_seq = e[i].ino & AQ_INO_SEQ_MASK;
			/* Keep the open-time scan of this bucket short. */
			if (b->first_seq - c->mark >= META_COUNT_MARK_EVERY) {
				uint8_t key[META_COUNT_KEY_LEN], v[META_COUNT_VAL_LEN];
				put_le64(v, c->nlive);
				put_le64(v + 8, b->first_seq);
				rocksdb_writebatch_put(wb, (const char *)key, meta_key_count(key, b->bucket),
						       (const char *)v, sizeof(v));
				b->marked = true;
			}
		}
		b->created++;
		b->subdirs += S_ISDIR(rq->mode);
		e[i].state = ENT_NEW;
		e[i].generation = atomic_fetch_add(&m->gen_next, 1);
		in->a.ino = e[i].ino;
		in->a.generation = e[i].generation;
		meta_put_inode(wb, in);
		if (na->alen || na->dlen)
			put_new_acls(wb, e[i].ino, na);
		ncreate++;
	}
	return ncreate;
}

/* Adds the dentry, 'L' and partial rows of the ncreate new entries to wb and commits.
 * Returns 0 or -errno. */
static int commit_entries(struct meta_store *m, const struct create_req *rq, struct create_ent *e,
			  struct create_bkt *bk, uint32_t nb, uint32_t ncreate, int64_t now,
			  rocksdb_writebatch_t *wb)
{
	if (rq->tmpfile) { /* no name, no change record, no listing to count it in */
		AQ_ASSERT(rq->n == 1 && e[0].state == ENT_NEW);
		meta_put_orphan(wb, e[0].ino, 0, m->chunk_size);
		meta_txn_put(wb, 0, e[0].ino);
		return meta_commit(m, wb);
	}
	uint64_t ts;
	/* ts is taken under the bucket locks: meta_changes' barrier relies on it. */
	int rc = meta_take_ts(m, ncreate, &ts);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < rq->n; i++) {
		if (e[i].state != ENT_NEW)
			continue;
		struct meta_dentry d = { .ino = e[i].ino, .dtype = meta_dtype(rq->mode), .created_ts = ts };
		meta_put_dentry(m, wb, e[i].key, e[i].klen, &d);
		meta_put_log(wb, e[i].bucket, rq->parent, ts, e[i].ino, rq->names[i], rq->lens[i]);
		meta_txn_put(wb, i, e[i].ino);
		ts++;
	}
	struct meta_pdelta one, *pd = nb == 1 ? &one : aq_malloc(nb * sizeof(*pd));
	uint32_t npd = 0;
	for (uint32_t k = 0; k < nb; k++)
		if (bk[k].created)
			pd[npd++] = (struct meta_pdelta){ .bucket = bk[k].bucket, .dir = rq->parent,
							  .dentries = bk[k].created, .dsubdirs = bk[k].subdirs };
	rc = meta_apply_partials(m, wb, pd, npd, now);
	if (pd != &one)
		free(pd);
	return rc ? rc : meta_commit(m, wb);
}

/* Bookkeeping after the batch's commit (locks still held): counts, or on failure the
 * inode reservations that never landed. */
static void finish_entries(struct meta_store *m, int rc, struct create_ent *e, uint32_t n, struct create_bkt *bk,
			   uint32_t nb)
{
	uint64_t total = 0;
	for (uint32_t k = 0; k < nb; k++) {
		struct meta_count *c = &m->counts[bk[k].bucket];
		if (bk[k].created == 0)
			continue;
		if (rc) {
			meta_alloc_failed(m, bk[k].bucket);
			continue;
		}
		if (bk[k].marked) {
			c->live_below = c->nlive;
			c->mark = bk[k].first_seq;
		}
		c->nlive += bk[k].created;
		total += bk[k].created;
	}
	atomic_fetch_add(&m->nfiles, total);
	for (uint32_t i = 0; rc && i < n; i++)
		if (e[i].state == ENT_NEW)
			e[i].state = ENT_DONE, e[i].rc = rc;
}

/* Creates rq's entries in one batch. Fills results[i] (0 or -errno) and, when outs is not
 * NULL, outs[i] for each entry that succeeded. Returns 0, or -errno when the whole batch
 * failed (every entry without an error of its own then has that error). */
static int create_batch(struct meta_store *m, const struct aq_cred *cr, const struct create_req *rq,
			struct aq_attr *outs, int *results)
{
	uint32_t n = rq->n;
	AQ_ASSERT(n >= 1 && n <= META_BATCH_MAX);
	struct create_ent *e = aq_malloc(n * sizeof(*e));
	struct create_bkt *bk = aq_malloc(MIN(n, m->nbuckets) * sizeof(*bk));
	struct meta_inode *dir = aq_malloc(sizeof(*dir));
	struct meta_inode *in = aq_malloc(sizeof(*in));
	struct new_acls *na = aq_malloc(sizeof(*na));
	rocksdb_writebatch_t *wb = meta_batch_new();
	uint32_t nb = plan_entries(m, rq, e, bk);
	int rc = 0;

	/* Lock order: buckets ascending (bk is sorted). */
	for (uint32_t k = 0; k < nb; k++)
		pthread_mutex_lock(&m->locks[bk[k].bucket]);
	if (nb == 0)
		goto unlock;
	/* The parent's inode lives in another bucket, but it cannot be removed while we hold
	 * one bucket: rmdir takes every bucket lock. */
	rc = meta_read_inode(m, rq->parent, dir);
	if (rc == 0 && !S_ISDIR(dir->a.mode))
		rc = -ENOTDIR;
	if (rc == 0)
		rc = meta_perm(m, cr, &dir->a, X_OK);
	if (rc == 0 && !rq->tmpfile) {
		prepare_name_filters(m, rq->parent, bk, nb);
		rc = find_existing(m, rq->parent, e, n);
	}
	if (rc)
		goto unlock;
	int64_t mode = new_inode_mode(m, rq, dir, na);
	if (mode < 0) {
		rc = (int)mode;
		goto unlock;
	}
	int64_t now = aq_now_ns();
	inode_template(rq, cr, dir, (uint32_t)mode, na, now, in);
	in->a.chunk_size = m->chunk_size;
	uint32_t ncreate = decide_entries(m, rq, meta_perm(m, cr, &dir->a, W_OK | X_OK), e, bk, in, na, wb);
	if (ncreate) {
		rc = commit_entries(m, rq, e, bk, nb, ncreate, now, wb);
		finish_entries(m, rc, e, n, bk, nb);
	}
unlock:
	for (uint32_t k = nb; k-- > 0;)
		pthread_mutex_unlock(&m->locks[bk[k].bucket]);
	for (uint32_t i = 0; i < n; i++) {
		if (e[i].state == ENT_PENDING || e[i].state == ENT_EXISTS)
			e[i].state = ENT_DONE, e[i].rc = rc; /* the batch failed before deciding */
		if (e[i].state == ENT_NEW && outs) {
			outs[i] = in->a;
			outs[i].ino = e[i].ino;
			outs[i].generation = e[i].generation;
			if (S_ISDIR(rq->mode)) {
				struct meta_partial none = { 0 };
				meta_merge_dir(&outs[i], &none);
			}
		} else if (e[i].state == ENT_OPEN && e[i].same_as >= 0) {
			/* Opens the file created under the same name earlier in this batch. */
			e[i].rc = e[e[i].same_as].rc;
			if (e[i].rc == 0 && outs)
				outs[i] = outs[e[i].same_as];
		} else if (e[i].state == ENT_OPEN && outs) {
			e[i].rc = meta_attr_of(m, e[i].ino, &outs[i]);
		}
		results[i] = e[i].rc;
	}
	rocksdb_writebatch_destroy(wb);
	free(na);
	free(in);
	free(dir);
	free(bk);
	free(e);
	return rc;
}

static int create_node(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name,
		       size_t name_len, uint32_t mode, uint32_t umask, uint32_t rdev, const char *target,
		       size_t target_len, uint32_t flags, struct aq_attr *out)
{
	struct create_req rq = { .parent = parent, .n = 1, .names = &name, .lens = &name_len, .mode = mode,
				 .rdev = rdev, .flags = flags, .umask = umask, .target = target,
				 .target_len = target_len };
	int result;
	int rc = create_batch(m, cr, &rq, out, &result);
	return rc ? rc : result;
}

/* The mode and rdev mknod stores; returns 0 or -errno. */
static int mknod_mode(const struct aq_cred *cr, uint32_t *mode, uint32_t *rdev)
{
	if ((*mode & S_IFMT) == 0)
		*mode |= S_IFREG;
	switch (*mode & S_IFMT) {
	case S_IFREG:
	case S_IFIFO:
	case S_IFSOCK:
		*rdev = 0;
		break;
	case S_IFCHR:
	case S_IFBLK:
		if (!meta_is_root(cr))
			return -EPERM;
		break;
	default:
		return -EINVAL;
	}
	*mode &= S_IFMT | 07777;
	return 0;
}

int meta_mknod(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
	       uint32_t mode, uint32_t rdev, uint32_t flags, struct aq_attr *out)
{
	uint32_t umask = take_umask(&mode);
	int rc = mknod_mode(cr, &mode, &rdev);
	if (rc)
		return rc;
	return create_node(m, cr, parent, name, name_len, mode, umask, rdev, NULL, 0, flags, out);
}

int meta_tmpfile(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, uint32_t mode, uint32_t flags,
		 struct aq_attr *out)
{
	uint32_t umask = take_umask(&mode);
	if ((mode & S_IFMT) != S_IFREG && (mode & S_IFMT) != 0)
		return -EINVAL;
	/* A name only to spread such files over the buckets: it is never looked up or
	 * written. */
	static _Atomic uint64_t seq;
	char name[40];
	size_t len = (size_t)snprintf(name, sizeof name, "tmpfile.%llu", (unsigned long long)atomic_fetch_add(&seq, 1));
	const char *names[1] = { name };
	struct create_req rq = { .parent = parent, .n = 1, .names = names, .lens = &len,
				 .mode = S_IFREG | (mode & 07777), .flags = flags & AQ_CREATE_EXCL, .umask = umask,
				 .tmpfile = true };
	int result;
	int rc = create_batch(m, cr, &rq, out, &result);
	return rc ? rc : result;
}

int meta_mknod_many(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, uint32_t n,
		    const char *const *names, const size_t *name_lens, uint32_t mode, uint32_t rdev, uint32_t flags,
		    struct aq_attr *outs, int *results)
{
	uint32_t umask = take_umask(&mode);
	int rc = n == 0 || n > META_BATCH_MAX ? -EINVAL : mknod_mode(cr, &mode, &rdev);
	if (rc) {
		for (uint32_t i = 0; i < n && i < META_BATCH_MAX; i++)
			results[i] = rc;
		return rc;
	}
	struct create_req rq = { .parent = parent, .n = n, .names = names, .lens = name_lens, .mode = mode,
				 .rdev = rdev, .flags = flags, .umask = umask };
	return create_batch(m, cr, &rq, outs, results);
}

int meta_mkdir(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
	       uint32_t mode, struct aq_attr *out)
{
	uint32_t umask = take_umask(&mode);
	return create_node(m, cr, parent, name, name_len, S_IFDIR | (mode & 07777), umask, 0, NULL, 0, AQ_CREATE_EXCL,
			   out);
}

int meta_symlink(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
		 const char *target, size_t target_len, struct aq_attr *out)
{
	if (target == NULL || target_len == 0)
		return -ENOENT;
	if (target_len >= AQ_PATH_MAX)
		return -ENAMETOOLONG;
	return create_node(m, cr, parent, name, name_len, S_IFLNK | 0777, 0, 0, target, target_len, AQ_CREATE_EXCL,
			   out);
}

int meta_readlink(struct meta_store *m, uint64_t ino, char *buf, size_t size)
{
	struct meta_inode *in = aq_malloc(sizeof(*in));
	int rc = meta_read_inode(m, ino, in);
	if (rc)
		goto out;
	if (!S_ISLNK(in->a.mode)) {
		rc = -EINVAL;
		goto out;
	}
	memcpy(buf, in->target, MIN(size, in->target_len));
	rc = (int)in->target_len;
out:
	free(in);
	return rc;
}

/* ---- unlink / rmdir / link ------------------------------------------------------------ */

/* Drops one link of in (whose bucket lock the caller holds): nlink--, and at zero an
 * orphan row that the collector turns into freed data and a deleted inode. */
static void drop_link(rocksdb_writebatch_t *wb, struct meta_inode *in, int64_t now)
{
	AQ_ASSERT(in->a.nlink > 0);
	in->a.nlink--;
	in->a.ctime_ns = now;
	meta_put_inode(wb, in);
	if (in->a.nlink == 0)
		meta_put_orphan(wb, in->a.ino, in->a.size, in->a.chunk_size);
}

int meta_unlink(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len)
{
	int rc = meta_check_name(name, name_len);
	if (rc)
		return rc;
	if (meta_is_dot(name, name_len))
		return -EISDIR;
	uint32_t b = meta_dentry_bucket(m, parent, name, name_len);
	uint8_t key[META_DENTRY_KEY_MAX];
	size_t klen = meta_key_dentry(key, b, parent, meta_dentry_pos(parent, name, name_len), name, name_len);
	struct meta_dentry peek, d;
	rc = meta_get_dentry(m, key, klen, &peek);
	if (rc <= 0)
		return rc == 0 ? -ENOENT : rc;

	struct meta_inode *dir = aq_malloc(sizeof(*dir));
	struct meta_inode *in = aq_malloc(sizeof(*in));
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	meta_lockset_add(&ls, b);
	meta_lockset_add(&ls, aq_ino_bucket(peek.ino));
retry:
	meta_lockset_lock(m, &ls);
	rc = meta_get_dentry(m, key, klen, &d);
	if (rc <= 0) {
		rc = rc == 0 ? -ENOENT : rc;
		goto unlock;
	}
	if (!ls.all && d.ino != peek.ino) {
		/* The name was replaced between the peek and the lock: its inode may live in
		 * a bucket we do not hold. Rare; take them all. */
		meta_lockset_unlock(m, &ls);
		ls.all = true;
		goto retry;
	}
	rc = meta_read_inode(m, parent, dir);
	if (rc)
		goto unlock;
	rc = meta_perm(m, cr, &dir->a, W_OK | X_OK);
	if (rc)
		goto unlock;
	rc = meta_read_inode(m, d.ino, in);
	if (rc)
		goto unlock;
	if (S_ISDIR(in->a.mode)) {
		rc = -EISDIR;
		goto unlock;
	}
	rc = meta_sticky_ok(cr, &dir->a, &in->a);
	if (rc)
		goto unlock;
	int64_t now = aq_now_ns();
	rocksdb_writebatch_delete(wb, (const char *)key, klen);
	meta_del_log(wb, b, parent, d.created_ts);
	drop_link(wb, in, now);
	struct meta_pdelta pd = { .bucket = b, .dir = parent, .dentries = -1 };
	rc = meta_apply_partials(m, wb, &pd, 1, now);
	if (rc == 0)
		rc = meta_commit_op(m, wb, 0);
unlock:
	meta_lockset_unlock(m, &ls);
	rocksdb_writebatch_destroy(wb);
	free(in);
	free(dir);
	return rc;
}

/* Adds deletes of every partial row of dir to wb (caller holds every bucket lock). */
/* Adds the removal of the empty directory ino (every bucket lock held) to wb: its inode,
 * the partial rows it has and its xattrs; -ENOTEMPTY when its partial rows count an
 * entry. One read of the partial rows says both (deleting a row for each of the 256
 * buckets cost an rmdir about 0.7 ms of memtable inserts and left the tombstones). */
int meta_del_dir_rows(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino)
{
	struct meta_partial *p = aq_malloc(m->nbuckets * sizeof(*p));
	bool *present = aq_malloc(m->nbuckets * sizeof(*present));
	int rc = meta_read_partials(m, ino, 0, m->nbuckets, p, present);
	for (uint32_t b = 0; rc == 0 && b < m->nbuckets; b++)
		if (p[b].nentries != 0)
			rc = -ENOTEMPTY;
	for (uint32_t b = 0; rc == 0 && b < m->nbuckets; b++) {
		pcache_forget(m, b, ino);
		meta_nfilter_forget(m, b, ino);
		if (present[b]) {
			uint8_t key[META_PARTIAL_KEY_LEN];
			rocksdb_writebatch_delete(wb, (const char *)key, meta_key_partial(key, b, ino));
		}
	}
	free(p);
	free(present);
	if (rc)
		return rc;
	uint8_t key[META_INODE_KEY_LEN];
	rocksdb_writebatch_delete(wb, (const char *)key, meta_key_inode(key, ino));
	meta_count_drop(m, wb, ino);
	return meta_del_xattrs(m, wb, ino);
}

int meta_rmdir(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len)
{
	int rc = meta_check_name(name, name_len);
	if (rc)
		return rc;
	int dot = meta_is_dot(name, name_len);
	if (dot)
		return dot == 1 ? -EINVAL : -ENOTEMPTY;
	uint32_t b = meta_dentry_bucket(m, parent, name, name_len);
	uint8_t key[META_DENTRY_KEY_MAX];
	size_t klen = meta_key_dentry(key, b, parent, meta_dentry_pos(parent, name, name_len), name, name_len);
	struct meta_inode *dir = aq_malloc(sizeof(*dir));
	struct meta_inode *in = aq_malloc(sizeof(*in));
	rocksdb_writebatch_t *wb = meta_batch_new();
	/* The fence: with every bucket held, no create can land in the directory between
	 * the emptiness check and the commit. */
	struct meta_lockset ls = { .all = true };
	meta_lockset_lock(m, &ls);

	rc = meta_read_inode(m, parent, dir);
	if (rc)
		goto unlock;
	if (!S_ISDIR(dir->a.mode)) {
		rc = -ENOTDIR;
		goto unlock;
	}
	rc = meta_perm(m, cr, &dir->a, W_OK | X_OK);
	if (rc)
		goto unlock;
	struct meta_dentry d;
	rc = meta_get_dentry(m, key, klen, &d);
	if (rc <= 0) {
		rc = rc == 0 ? -ENOENT : rc;
		goto unlock;
	}
	rc = meta_read_inode(m, d.ino, in);
	if (rc)
		goto unlock;
	if (!S_ISDIR(in->a.mode)) {
		rc = -ENOTDIR;
		goto unlock;
	}
	rc = meta_sticky_ok(cr, &dir->a, &in->a);
	if (rc)
		goto unlock;
	int64_t now = aq_now_ns();
	rocksdb_writebatch_delete(wb, (const char *)key, klen);
	meta_del_log(wb, b, parent, d.created_ts);
	rc = meta_del_dir_rows(m, wb, d.ino); /* or -ENOTEMPTY */
	if (rc)
		goto unlock;
	struct meta_pdelta pd = { .bucket = b, .dir = parent, .dentries = -1, .dsubdirs = -1 };
	rc = meta_apply_partials(m, wb, &pd, 1, now);
	if (rc == 0)
		rc = meta_commit_op(m, wb, 0);
	if (rc == 0)
		meta_count_dropped(m, d.ino);
unlock:
	meta_lockset_unlock(m, &ls);
	rocksdb_writebatch_destroy(wb);
	free(in);
	free(dir);
	return rc;
}

int meta_link(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, uint64_t newparent, const char *newname,
	      size_t newname_len, struct aq_attr *out)
{
	int rc = meta_check_name(newname, newname_len);
	if (rc)
		return rc;
	if (meta_is_dot(newname, newname_len))
		return -EEXIST;
	if (aq_ino_bucket(ino) >= m->nbuckets)
		return -ENOENT;
	uint32_t b = meta_dentry_bucket(m, newparent, newname, newname_len);
	uint8_t key[META_DENTRY_KEY_MAX];
	size_t klen = meta_key_dentry(key, b, newparent, meta_dentry_pos(newparent, newname, newname_len), newname,
				      newname_len);
	struct meta_inode *dir = aq_malloc(sizeof(*dir));
	struct meta_inode *in = aq_malloc(sizeof(*in));
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	meta_lockset_add(&ls, b);
	meta_lockset_add(&ls, aq_ino_bucket(ino));
	meta_lockset_lock(m, &ls);

	rc = meta_read_inode(m, ino, in);
	if (rc)
		goto unlock;
	if (S_ISDIR(in->a.mode)) {
		rc = -EPERM;
		goto unlock;
	}
	/* an unlinked file stays so; an unnamed one may be named once (AQ_ATTR_LINKABLE) */
	bool naming = in->a.nlink == 0 && (in->a.flags & AQ_ATTR_LINKABLE);
	if (in->a.nlink == 0 && !naming) {
		rc = -ENOENT;
		goto unlock;
	}
	if (in->a.nlink >= META_NLINK_MAX) {
		rc = -EMLINK;
		goto unlock;
	}
	rc = meta_read_inode(m, newparent, dir);
	if (rc)
		goto unlock;
	if (!S_ISDIR(dir->a.mode)) {
		rc = -ENOTDIR;
		goto unlock;
	}
	rc = meta_perm(m, cr, &dir->a, W_OK | X_OK);
	if (rc)
		goto unlock;
	struct meta_dentry d;
	rc = meta_get_dentry(m, key, klen, &d);
	if (rc < 0)
		goto unlock;
	if (rc == 1) {
		rc = -EEXIST;
		goto unlock;
	}
	rc = meta_space_check(m); /* after the checks above, as ext4 orders them */
	if (rc)
		goto unlock;
	int64_t now = aq_now_ns();
	in->a.nlink++;
	in->a.ctime_ns = now;
	if (naming) {
		uint8_t okey[META_ORPHAN_KEY_LEN];
		rocksdb_writebatch_delete(wb, (const char *)okey, meta_key_orphan(okey, ino));
		in->a.flags &= ~AQ_ATTR_LINKABLE;
	}
	meta_put_inode(wb, in);
	uint64_t ts;
	rc = meta_take_ts(m, 1, &ts);
	if (rc)
		goto unlock;
	d = (struct meta_dentry){ .ino = ino, .dtype = meta_dtype(in->a.mode), .created_ts = ts };
	meta_put_dentry(m, wb, key, klen, &d);
	meta_put_log(wb, b, newparent, ts, ino, newname, newname_len);
	struct meta_pdelta pd = { .bucket = b, .dir = newparent, .dentries = 1 };
	rc = meta_apply_partials(m, wb, &pd, 1, now);
	if (rc == 0)
		rc = meta_commit_op(m, wb, ino);
	if (rc == 0 && out)
		*out = in->a;
unlock:
	meta_lockset_unlock(m, &ls);
	rocksdb_writebatch_destroy(wb);
	free(in);
	free(dir);
	return rc;
}

/* ---- setattr / access / open / size ----------------------------------------------------- */

static bool is_owner(const struct aq_cred *cr, const struct aq_attr *a)
{
	return meta_is_root(cr) || cr->uid == a->uid;
}

/* The bits of mode a write, truncate or chown by cr drops, as Linux drops them for a
 * caller without CAP_FSETID (setattr_should_drop_suidgid): setuid, and setgid when group
 * execute is set or cr is not in the file's group gid (root is, by CAP_FSETID). */
static uint32_t sxid_kill_bits(const struct aq_cred *cr, uint32_t mode, uint32_t gid)
{
	if (!aq_mode_sxid(mode))
		return 0;
	uint32_t kill = mode & S_ISUID;
	if ((mode & S_ISGID) && ((mode & S_IXGRP) || !(meta_is_root(cr) || meta_in_group(cr, gid))))
		kill |= S_ISGID;
	return kill;
}

uint64_t meta_file_blocks(struct meta_store *m, const struct aq_attr *a)
{
	uint64_t most = (a->size + META_BLOCK_SIZE - 1) / META_BLOCK_SIZE * META_BLOCK_SIZE, bytes;
	if (!m->alloc_fn || m->alloc_fn(m->truncate_arg, a->ino, a->size, a->chunk_size, &bytes))
		bytes = most;
	/* a truncate's chunks past the size go after its commit; a chunk another client wrote
	 * past it is not the file's until its size says so */
	return MIN(bytes, most) / 512;
}

/* Applies mask to in (already read, bucket locked). Returns 0 or -errno; *shrunk is set
 * when the size went down. */
static int apply_setattr(struct meta_store *m, const struct aq_cred *cr, struct meta_inode *in, uint32_t mask,
			 const struct aq_attr *req, bool *shrunk)
{
	struct aq_attr *a = &in->a;
	bool root = meta_is_root(cr);
	int64_t now = aq_now_ns();
	int rc;

	if ((mask & AQ_SET_MODE) && !is_owner(cr, a)) {
		/* Anyone who may write the file may drop its setuid and setgid bits, and nothing
		 * else: the kernel asks for that as the writer (FUSE without handle_killpriv)
		 * before a write or truncate by someone other than the owner, as ext4 drops
		 * them. */
		uint32_t old = a->mode & 07777, new = req->mode & 07777, kill = S_ISUID | S_ISGID;
		if ((new & ~kill) != (old & ~kill) || (new & ~old) || new == old || meta_perm(m, cr, a, W_OK))
			return -EPERM;
	}
	if ((mask & AQ_SET_UID) && req->uid != a->uid && !root)
		return -EPERM;
	if ((mask & AQ_SET_GID) && req->gid != a->gid && !root) {
		if (cr->uid != a->uid || !meta_in_group(cr, req->gid))
			return -EPERM;
	}
	if (mask & (AQ_SET_ATIME_NOW | AQ_SET_MTIME_NOW)) {
		if (!is_owner(cr, a) && meta_perm(m, cr, a, W_OK) != 0)
			return -EACCES;
	}
	if ((mask & (AQ_SET_ATIME | AQ_SET_MTIME | AQ_SET_CTIME)) && !is_owner(cr, a))
		return -EPERM;
	if ((mask & AQ_SET_KILL_SXID) && !(mask & AQ_SET_BY_HANDLE) && !is_owner(cr, a) && meta_perm(m, cr, a, W_OK))
		return -EPERM;
	if (mask & AQ_SET_SIZE) {
		if (S_ISDIR(a->mode))
			return -EISDIR;
		if (!S_ISREG(a->mode))
			return -EINVAL;
		if (req->size > AQ_FILE_SIZE_MAX)
			return -EFBIG; /* as writes past it are (xfstests generic/525) */
		/* through a descriptor open for writing, open(2) checked (ftruncate of a file
		 * created with mode 0 works, as on ext4: pjdfstest ftruncate/00.t) */
		rc = (mask & AQ_SET_BY_HANDLE) ? 0 : meta_perm(m, cr, a, W_OK);
		if (rc)
			return rc;
	}

	/* Checks passed: apply. */
	if (mask & AQ_SET_MODE) {
		uint32_t mode = (a->mode & S_IFMT) | (req->mode & 07777);
		if (!root && !meta_in_group(cr, a->gid))
			mode &= ~(uint32_t)S_ISGID;
		a->mode = mode;
	}
	bool chown = ((mask & AQ_SET_UID) && req->uid != a->uid) || ((mask & AQ_SET_GID) && req->gid != a->gid);
	uint32_t old_gid = a->gid;
	if (mask & AQ_SET_UID)
		a->uid = req->uid;
	if (mask & AQ_SET_GID)
		a->gid = req->gid;
	/* As Linux: a changed owner, a truncate by someone other than root (CAP_FSETID), and
	 * a write through the mount (AQ_SET_KILL_SXID, which also comes with a chown) */
	if (chown || (mask & AQ_SET_KILL_SXID) || ((mask & AQ_SET_SIZE) && !root))
		a->mode &= ~sxid_kill_bits(cr, a->mode, old_gid);
	if (mask & AQ_SET_SIZE) {
		*shrunk = req->size < a->size;
		a->mtime_ns = now;
		a->size = req->size;
		a->blocks = meta_file_blocks(m, a);
	}
	if (mask & AQ_SET_ATIME_NOW)
		a->atime_ns = now;
	else if (mask & AQ_SET_ATIME)
		a->atime_ns = req->atime_ns;
	if (mask & AQ_SET_MTIME_NOW)
		a->mtime_ns = now;
	else if (mask & AQ_SET_MTIME)
		a->mtime_ns = req->mtime_ns;
	a->ctime_ns = (mask & AQ_SET_CTIME) ? req->ctime_ns : now;
	return 0;
}

/* A chmod of an inode with an access ACL: the ACL's owner, mask (else group) and other
 * entries take the new bits, in the same batch (as ext4's posix_acl_chmod). */
static int chmod_acl(struct meta_store *m, rocksdb_writebatch_t *wb, const struct aq_attr *a)
{
	struct meta_acl *acl = aq_malloc(sizeof(*acl));
	int rc = meta_acl_read(m, a->ino, meta_acl_access, acl);
	if (rc == 1) {
		uint8_t key[META_XATTR_KEY_MAX], v[META_ACL_BYTES_MAX];
		meta_acl_chmod(acl, a->mode);
		size_t klen = meta_key_xattr(key, a->ino, meta_acl_access, strlen(meta_acl_access));
		rocksdb_writebatch_put(wb, (const char *)key, klen, (const char *)v, meta_acl_encode(acl, v));
	}
	free(acl);
	return rc < 0 ? rc : 0;
}

/* Sets every partial row of dir newer than mtime_ns to it, so that a directory's mtime set
 * by utimes (rsync, tar and cp -a set it after filling the directory) is not hidden by
 * the entries made before. Called with every bucket lock held. */
static int lower_partial_mtimes(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t dir, int64_t mtime_ns)
{
	struct meta_partial *p = aq_malloc(m->nbuckets * sizeof(*p));
	int rc = meta_read_partials(m, dir, 0, m->nbuckets, p, NULL);
	for (uint32_t b = 0; rc == 0 && b < m->nbuckets; b++) {
		if (p[b].mtime_ns <= mtime_ns)
			continue;
		p[b].mtime_ns = mtime_ns;
		uint8_t key[META_PARTIAL_KEY_LEN], v[META_PARTIAL_VAL_LEN];
		size_t klen = meta_key_partial(key, b, dir);
		meta_partial_encode(&p[b], v);
		rocksdb_writebatch_put(wb, (const char *)key, klen, (const char *)v, sizeof(v));
		pcache_forget(m, b, dir);
	}
	free(p);
	dirsum_note_drop(m, dir);
	return rc;
}

int meta_setattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, uint32_t mask, const struct aq_attr *in,
		 struct aq_attr *out)
{
	if (aq_ino_bucket(ino) >= m->nbuckets)
		return -ENOENT;
	struct meta_inode *node = aq_malloc(sizeof(*node));
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	bool shrunk = false;
	meta_lockset_add(&ls, aq_ino_bucket(ino));
	/* A directory's mtime is the newest of its row's and its partial rows': setting it
	 * rewrites the partial rows, under every bucket lock (a type never changes, so the
	 * look before locking is safe). */
	bool dir_mtime = (mask & (AQ_SET_MTIME | AQ_SET_MTIME_NOW)) && meta_read_inode(m, ino, node) == 0 &&
			 S_ISDIR(node->a.mode);
	ls.all = dir_mtime;
	meta_lockset_lock(m, &ls);
	int rc = meta_read_inode(m, ino, node);
	if (rc)
		goto unlock;
	uint32_t mode = node->a.mode;
	rc = apply_setattr(m, cr, node, mask, in, &shrunk);
	/* a kill alone with nothing to drop changes nothing (an empty mask still touches
	 * ctime: chown(f, -1, -1) does on Linux) */
	if (rc || ((mask & ~AQ_SET_BY_HANDLE) == AQ_SET_KILL_SXID && node->a.mode == mode))
		goto unlock;
	meta_put_inode(wb, node);
	if ((node->a.flags & AQ_ATTR_ACL) && (node->a.mode & 0777) != (mode & 0777))
		rc = chmod_acl(m, wb, &node->a);
	if (rc == 0 && dir_mtime)
		rc = lower_partial_mtimes(m, wb, ino, node->a.mtime_ns);
	if (rc == 0)
		rc = meta_commit(m, wb);
unlock:
	meta_lockset_unlock(m, &ls);
	/* Outside the locks: the data layer may take a while. */
	if (rc == 0 && shrunk && m->truncate_fn) {
		rc = m->truncate_fn(m->truncate_arg, ino, node->a.size, node->a.chunk_size);
		if (rc)
			log_warn("meta: truncate of %llx to %llu: %s", (unsigned long long)ino,
				 (unsigned long long)node->a.size, aq_strerror(rc));
	}
	if (rc == 0 && out)
		rc = meta_attr_of(m, ino, out);
	rocksdb_writebatch_destroy(wb);
	free(node);
	return rc;
}

int meta_access(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, uint32_t mask)
{
	struct aq_attr a;
	int rc = meta_attr_of(m, ino, &a);
	if (rc || mask == F_OK)
		return rc;
	return meta_perm(m, cr, &a, mask);
}

int meta_open_file(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, int flags, struct aq_attr *out)
{
	struct aq_attr a;
	int rc = meta_attr_of(m, ino, &a);
	if (rc)
		return rc;
	uint32_t mask = 0;
	switch (flags & O_ACCMODE) {
	case O_RDONLY: /* an exec's open needs execute, not read (xfstests generic/126) */
		mask = (flags & AQ_O_EXEC) && S_ISREG(a.mode) ? X_OK : R_OK;
		break;
	case O_WRONLY:
		mask = W_OK;
		break;
	default:
		mask = R_OK | W_OK;
		break;
	}
	if (flags & O_TRUNC)
		mask |= W_OK;
	if (S_ISDIR(a.mode) && (mask & W_OK))
		return -EISDIR;
	rc = meta_perm(m, cr, &a, mask);
	if (rc)
		return rc;
	if (out)
		*out = a;
	return 0;
}

int meta_commit_size(struct meta_store *m, uint64_t ino, uint64_t new_size, int64_t mtime_ns, struct aq_attr *out)
{
	if (aq_ino_bucket(ino) >= m->nbuckets)
		return -ENOENT;
	struct meta_inode *node = aq_malloc(sizeof(*node));
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	meta_lockset_add(&ls, aq_ino_bucket(ino));
	meta_lockset_lock(m, &ls);
	int rc = meta_read_inode(m, ino, node);
	if (rc)
		goto unlock;
	if (!S_ISREG(node->a.mode)) {
		rc = S_ISDIR(node->a.mode) ? -EISDIR : -EINVAL;
		goto unlock;
	}
	node->a.size = MAX(node->a.size, new_size);
	node->a.blocks = meta_file_blocks(m, &node->a);
	int64_t t = mtime_ns > 0 ? mtime_ns : aq_now_ns();
	node->a.mtime_ns = t;
	node->a.ctime_ns = MAX(node->a.ctime_ns, t);
	meta_put_inode(wb, node);
	rc = meta_commit(m, wb);
	if (rc == 0 && out)
		*out = node->a;
unlock:
	meta_lockset_unlock(m, &ls);
	rocksdb_writebatch_destroy(wb);
	free(node);
	return rc;
}

/* ---- orphans ---------------------------------------------------------------------------- */

int meta_orphans(struct meta_store *m, struct meta_orphan *out, uint32_t max, uint64_t after_ino)
{
	if (max == 0 || after_ino == UINT64_MAX)
		return 0;
	uint8_t start[META_ORPHAN_KEY_LEN];
	uint64_t from = after_ino + 1;
	if (aq_ino_bucket(from) >= m->nbuckets)
		return 0;
	size_t slen = meta_key_orphan(start, from);
	rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, m->ropts);
	int n = 0;
	/* Keys sort by (bucket, ino) and an ino's top bits are its bucket: key order is
	 * ino order. */
	for (rocksdb_iter_seek(it, (const char *)start, slen); rocksdb_iter_valid(it) && (uint32_t)n < max;
	     rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen != META_ORPHAN_KEY_LEN || k[0] != MK_ORPHAN)
			break;
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (vlen != META_ORPHAN_VAL_LEN)
			continue;
		out[n].ino = get_be64(k + 3);
		out[n].size = get_le64(v);
		out[n].chunk_size = get_le32(v + 8);
		n++;
	}
	int rc = meta_iter_error(it, "orphan scan");
	rocksdb_iter_destroy(it);
	return rc ? rc : n;
}

/* Locks ino's bucket (into ls) and checks that ino is an orphan still: 0, -ENOENT, or
 * -EIO. okey gets the orphan row's key (*oklen bytes). The caller unlocks ls. */
static int lock_orphan(struct meta_store *m, uint64_t ino, struct meta_lockset *ls, uint8_t *okey, size_t *oklen)
{
	*oklen = meta_key_orphan(okey, ino);
	meta_lockset_add(ls, aq_ino_bucket(ino));
	meta_lockset_lock(m, ls);
	int rc = meta_get(m, okey, *oklen, NULL, 0, NULL);
	return rc < 0 ? rc : rc == 0 ? -ENOENT : 0;
}

int meta_orphan_claim(struct meta_store *m, uint64_t ino)
{
	if (aq_ino_bucket(ino) >= m->nbuckets)
		return -ENOENT;
	uint8_t okey[META_ORPHAN_KEY_LEN];
	size_t oklen;
	struct meta_inode *in = aq_malloc(sizeof(*in));
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	int rc = lock_orphan(m, ino, &ls, okey, &oklen); /* -ENOENT: named since it was listed */
	if (rc == 0)
		rc = meta_read_inode(m, ino, in);
	if (rc == 0 && (in->a.flags & AQ_ATTR_LINKABLE)) {
		in->a.flags &= ~AQ_ATTR_LINKABLE;
		meta_put_inode(wb, in);
		rc = meta_commit(m, wb);
	}
	meta_lockset_unlock(m, &ls);
	rocksdb_writebatch_destroy(wb);
	free(in);
	return rc;
}

int meta_orphan_done(struct meta_store *m, uint64_t ino)
{
	if (aq_ino_bucket(ino) >= m->nbuckets)
		return -ENOENT;
	uint8_t okey[META_ORPHAN_KEY_LEN], ikey[META_INODE_KEY_LEN];
	size_t oklen;
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	int rc = lock_orphan(m, ino, &ls, okey, &oklen);
	if (rc)
		goto unlock;
	rocksdb_writebatch_delete(wb, (const char *)okey, oklen);
	rocksdb_writebatch_delete(wb, (const char *)ikey, meta_key_inode(ikey, ino));
	meta_count_drop(m, wb, ino);
	rc = meta_del_xattrs(m, wb, ino);
	if (rc == 0)
		rc = meta_commit(m, wb);
	if (rc == 0)
		meta_count_dropped(m, ino);
unlock:
	meta_lockset_unlock(m, &ls);
	rocksdb_writebatch_destroy(wb);
	return rc;
}

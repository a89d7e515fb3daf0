/*
 * readdir.c - listing a directory bucket by bucket, and the "what's new" changelog.
 *
 * readdir cookies: (bucket + 1) << 48 | pos, where pos is the 48-bit in-bucket position
 * (a hash of the name) to resume at. An entry's cookie points just past its position, so
 * a listing resumed at it neither repeats that entry nor skips a later one, whatever was
 * created or removed meanwhile. Cookies below 1 << 48 mean "from the start" (the server
 * uses 1 and 2 for "." and ".."). Memory is bounded: one iterator, one entry at a time.
 *
 * changes: 'L' rows are keyed (bucket, dir, ts); ts comes from one clock taken under the
 * bucket lock of the op that writes the row. Reading the clock (T) and then taking and
 * releasing every bucket lock guarantees that every row with ts < T is committed, so a
 * cursor of T - 1 never skips a row that lands later.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "meta/meta_internal.h"

#define DENTRY_SEEK_LEN (META_DENTRY_PREFIX_LEN + 6)

static int check_dir(struct meta_store *m, const struct aq_cred *cr, uint64_t dir)
{
	struct meta_inode *in = aq_malloc(sizeof(*in));
	int rc = meta_read_inode(m, dir, in);
	if (rc)
		goto out;
	if (!S_ISDIR(in->a.mode)) {
		rc = -ENOTDIR;
		goto out;
	}
	rc = meta_perm(m, cr, &in->a, R_OK);
out:
	free(in);
	return rc;
}

static uint64_t entry_cookie(uint32_t bucket, uint64_t pos)
{
	if (pos + 1 > META_POS_MASK) /* the last position: resume at the next bucket */
		return (uint64_t)(bucket + 2) << META_POS_BITS;
	return (uint64_t)(bucket + 1) << META_POS_BITS | (pos + 1);
}

int meta_readdir(struct meta_store *m, const struct aq_cred *cr, uint64_t dir, uint64_t cookie, uint32_t max,
		 bool with_attr, meta_dirent_fn fn, void *arg)
{
	return meta_readdir_range(m, cr, dir, cookie, m->nbuckets, max, with_attr, fn, arg, NULL);
}

/* A page's entries held back until their attributes are read, all at once. */
struct plus_page {
	uint32_t n, cap;
	struct plus_ent {
		uint64_t ino, cookie;
		uint32_t dtype, nlen;
		char name[AQ_NAME_MAX];
	} *e;
	uint64_t *inos;
};

static void plus_add(struct plus_page *pg, const char *name, size_t nlen, uint64_t ino, uint32_t dtype,
		     uint64_t cookie)
{
	if (pg->n == pg->cap) {
		pg->cap = pg->cap ? 2 * pg->cap : 256;
		pg->e = aq_realloc(pg->e, pg->cap * sizeof(*pg->e));
		pg->inos = aq_realloc(pg->inos, pg->cap * sizeof(*pg->inos));
	}
	struct plus_ent *e = &pg->e[pg->n];
	e->ino = ino;
	e->cookie = cookie;
	e->dtype = dtype;
	e->nlen = (uint32_t)nlen;
	memcpy(e->name, name, nlen);
	pg->inos[pg->n++] = ino;
}

/* Reads the page's attributes and hands its entries to fn in order; an entry whose inode
 * is gone (removed after the listing's snapshot) is left out. Returns the number handed
 * out or -errno. */
static int plus_deliver(struct meta_store *m, struct plus_page *pg, meta_dirent_fn fn, void *arg, bool *cut)
{
	struct aq_attr *attrs = aq_malloc((pg->n ? pg->n : 1) * sizeof(*attrs));
	int *rcs = aq_malloc((pg->n ? pg->n : 1) * sizeof(*rcs));
	int rc = meta_attrs_of(m, pg->inos, pg->n, attrs, rcs), count = 0;
	for (uint32_t i = 0; i < pg->n && rc == 0; i++) {
		if (rcs[i] == -ENOENT)
			continue;
		if (rcs[i]) {
			rc = rcs[i];
			break;
		}
		const struct plus_ent *e = &pg->e[i];
		if (fn(arg, e->name, e->nlen, e->ino, e->dtype, e->cookie, &attrs[i]) != 0) {
			*cut = true;
			break;
		}
		count++;
	}
	free(attrs);
	free(rcs);
	return rc ? rc : count;
}

int meta_readdir_range(struct meta_store *m, const struct aq_cred *cr, uint64_t dir, uint64_t cookie,
		       uint32_t end_bucket, uint32_t max, bool with_attr, meta_dirent_fn fn, void *arg, bool *at_end)
{
	if (at_end)
		*at_end = false;
	end_bucket = MIN(end_bucket, m->nbuckets);
	int rc = check_dir(m, cr, dir);
	if (rc)
		return rc;
	uint32_t b0 = 0;
	uint64_t pos0 = 0;
	if (cookie >= (1ull << META_POS_BITS)) {
		b0 = (uint32_t)((cookie >> META_POS_BITS) - 1);
		pos0 = cookie & META_POS_MASK;
	}
	/* Each bucket's scan is bounded by the end of this directory's range in it, so a
	 * seek never walks over deleted entries (tombstones) of the keys that follow. */
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_iterator_t *it = NULL;
	int count = 0;
	bool stop = false, have_last = false;
	uint64_t last_pos = 0;
	uint32_t last_b = 0;
	struct plus_page page = {0};

	/* A directory with fewer entries than buckets leaves most buckets without any. Its
	 * partial rows (one per bucket, changed in the same batch as each entry) say which
	 * hold some, so an empty bucket costs a point read instead of an iterator and a seek.
	 * An entry that exists for the whole scan is counted in its bucket's row when that
	 * row is read, so it is never skipped. */
	struct meta_partial sum, *part = NULL;
	uint64_t *bits = aq_malloc(((m->nbuckets + 63) / 64) * 8);
	bool have_bits = false, small = false;
	if (b0 < end_bucket && meta_dirsum_buckets(m, dir, &sum, bits, &have_bits) == 0)
		small = sum.nentries < (int64_t)m->nbuckets;
	/* The directory-sum cache keeps which buckets hold entries, current with every
	 * commit (a listing of a small directory read all the partial rows each time: a
	 * fifth of aqd's time under dbench) */
	if (small && !have_bits) {
		part = aq_malloc((end_bucket - b0) * sizeof(*part));
		if (meta_read_partials(m, dir, b0, end_bucket, part, NULL) != 0) {
			free(part);
			part = NULL; /* scan them all */
		}
	}

	for (uint32_t b = b0; b < end_bucket && !stop; b++) {
		if (small && have_bits && !(bits[b / 64] & (1ull << (b % 64))))
			continue;
		if (part && part[b - b0].nentries <= 0)
			continue;
		uint8_t seek[DENTRY_SEEK_LEN], upper[DENTRY_SEEK_LEN];
		uint64_t pos = b == b0 ? pos0 : 0;
		meta_key_dentry_prefix(seek, b, dir);
		for (int i = 0; i < 6; i++)
			seek[META_DENTRY_PREFIX_LEN + i] = (uint8_t)(pos >> (40 - 8 * i));
		meta_key_dentry_prefix(upper, b, dir + 1);
		rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)upper, META_DENTRY_PREFIX_LEN);
		if (it)
			rocksdb_iter_destroy(it);
		it = rocksdb_create_iterator(m->db, ro);
		/* One seek per bucket: an empty bucket costs one seek, not a scan. */
		for (rocksdb_iter_seek(it, (const char *)seek, sizeof(seek)); rocksdb_iter_valid(it);
		     rocksdb_iter_next(it)) {
			size_t klen, vlen;
			const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
			if (klen < DENTRY_SEEK_LEN || memcmp(k, seek, META_DENTRY_PREFIX_LEN) != 0)
				break;
			size_t nlen = klen - DENTRY_SEEK_LEN;
			const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vlen);
			struct meta_dentry d;
			if (nlen == 0 || nlen > AQ_NAME_MAX || meta_dentry_decode(v, vlen, &d)) {
				log_error("meta: corrupt dentry in dir %llx", (unsigned long long)dir);
				rc = -EIO;
				stop = true;
				break;
			}
			uint64_t epos = meta_key_dentry_pos(k);
			/* Entries sharing a position share a cookie: finish the group even past max. */
			bool same_group = have_last && last_b == b && last_pos == epos;
			if ((uint32_t)count >= max && !same_group) {
				stop = true;
				break;
			}
			if (with_attr) {
				plus_add(&page, (const char *)k + DENTRY_SEEK_LEN, nlen, d.ino, d.dtype,
					 entry_cookie(b, epos));
			} else if (fn(arg, (const char *)k + DENTRY_SEEK_LEN, nlen, d.ino, d.dtype, entry_cookie(b, epos),
				      NULL) != 0) {
				stop = true;
				break;
			}
			count++;
			have_last = true;
			last_b = b;
			last_pos = epos;
		}
		if (rc == 0)
			rc = meta_iter_error(it, "readdir");
		if (rc)
			stop = true;
	}
	if (it)
		rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	free(part);
	free(bits);
	if (rc == 0 && with_attr)
		count = rc = plus_deliver(m, &page, fn, arg, &stop);
	/* The end only when every bucket was scanned and everything found was handed out: a
	 * page short of max is not the end (fn may have stopped it, or entries whose inodes
	 * went meanwhile were left out). */
	if (at_end && rc >= 0)
		*at_end = !stop;
	free(page.e);
	free(page.inos);
	return rc < 0 ? rc : count;
}

struct log_head {
	rocksdb_iterator_t *it;
	bool valid;
	uint64_t ts;
};

/* Positions h on its next row of dir with ts < limit. */
static void head_load(struct log_head *h, const uint8_t *prefix, uint64_t limit)
{
	h->valid = false;
	if (!rocksdb_iter_valid(h->it))
		return;
	size_t klen;
	const uint8_t *k = (const uint8_t *)rocksdb_iter_key(h->it, &klen);
	if (klen != META_LOG_KEY_LEN || memcmp(k, prefix, 11) != 0)
		return;
	h->ts = get_be64(k + 11);
	h->valid = h->ts < limit;
}

int meta_changes(struct meta_store *m, const struct aq_cred *cr, uint64_t dir, uint64_t cursor, uint32_t max,
		 meta_change_fn fn, void *arg, uint64_t *next)
{
	int rc = check_dir(m, cr, dir);
	if (rc)
		return rc;
	uint64_t limit = atomic_load(&m->log_clock);
	/* The barrier: an op that took ts < limit holds its bucket lock until it committed. */
	for (uint32_t b = 0; b < m->nbuckets; b++) {
		pthread_mutex_lock(&m->locks[b]);
		pthread_mutex_unlock(&m->locks[b]);
	}
	*next = cursor;
	if (max == 0 || cursor == UINT64_MAX || cursor + 1 >= limit)
		return 0;

	uint32_t n = m->nbuckets;
	struct log_head *heads = aq_calloc(n, sizeof(*heads));
	uint8_t *prefixes = aq_malloc((size_t)n * META_LOG_KEY_LEN);
	for (uint32_t b = 0; b < n; b++) {
		uint8_t *p = prefixes + (size_t)b * META_LOG_KEY_LEN;
		meta_key_log(p, b, dir, cursor + 1);
		heads[b].it = rocksdb_create_iterator(m->db, m->ropts);
		rocksdb_iter_seek(heads[b].it, (const char *)p, META_LOG_KEY_LEN);
		head_load(&heads[b], p, limit);
	}
	/* Merge by ts: O(buckets) per entry, no allocation beyond the heads. */
	int count = 0;
	bool stopped = false;
	uint64_t last = cursor;
	while ((uint32_t)count < max) {
		struct log_head *best = NULL;
		uint32_t bb = 0;
		for (uint32_t b = 0; b < n; b++)
			if (heads[b].valid && (!best || heads[b].ts < best->ts))
				best = &heads[b], bb = b;
		if (!best)
			break;
		size_t vlen;
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(best->it, &vlen);
		if (vlen < 8 || vlen > 8 + AQ_NAME_MAX) {
			rc = -EIO;
			break;
		}
		AQ_ASSERT(best->ts > last);
		if (fn(arg, (const char *)v + 8, vlen - 8, get_le64(v), best->ts) != 0) {
			stopped = true;
			break;
		}
		last = best->ts;
		count++;
		rocksdb_iter_next(best->it);
		head_load(best, prefixes + (size_t)bb * META_LOG_KEY_LEN, limit);
	}
	for (uint32_t b = 0; b < n; b++) {
		if (rc == 0)
			rc = meta_iter_error(heads[b].it, "changes");
		rocksdb_iter_destroy(heads[b].it);
	}
	free(heads);
	free(prefixes);
	if (rc)
		return rc;
	/* Fewer than max and not stopped: everything below limit was seen. */
	*next = ((uint32_t)count == max || stopped) ? last : MAX(cursor, limit - 1);
	return count;
}

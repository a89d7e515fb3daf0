/*
 * namefilter.c - "is this name free?" answered from memory in big directories.
 *
 * A create must learn that its name is not taken. RocksDB answers that with a probe of
 * every memtable's and every sorted run's bloom filter: a cache miss each, more of them
 * and colder as the store grows, until at 10M files in one directory the lookups were a
 * sixth of a create's cost in aqd and the reason the last tenth of creates ran slower than
 * the first (with the lookup left out, as an experiment, the tenths stayed flat:
 * docs/performance.md). So for each (bucket, directory) that holds many names, the store
 * keeps one blocked bloom filter of them in memory: one cache line per name asked about.
 *
 * Exact where it says "free": it is built by one scan of the pair's dentry rows under the
 * bucket's lock, and every dentry row put into the pair afterwards passes through
 * meta_put_dentry, which adds it under that same lock, before the batch commits. Names are
 * never taken out (unlink, a rename away, a batch that failed to commit): such a bit only
 * sends a later create of the name to RocksDB, as every "maybe" goes. Filters live only in
 * memory (a restarted aqd builds them again) and within META_NFILTER_BYTES; a pair whose
 * filter cannot have the memory, or is not yet big enough to need one, asks RocksDB.
 *
 * Slots: META_NFILTER_WAYS per bucket, most recently used first, guarded by the bucket's
 * lock like the partial-row cache.
 */
#include "meta/meta_internal.h"

#define NF_BITS_PER_NAME 10 /* about 1% false "maybe" at capacity */
#define NF_PROBES 6
#define NF_BLOCK_BITS 512 /* a cache line */
#define NF_BLOCK_WORDS (NF_BLOCK_BITS / 64)
#define NF_GROWTH 4 /* capacity is this many times the names found at a build */
#define NF_LOG_NAMES 16384 /* builds this big are logged */

static struct meta_nfilter *nf_set(struct meta_store *m, uint32_t bucket)
{
	return m->nfilters + (size_t)bucket * META_NFILTER_WAYS;
}

/* The pair's slot, or NULL. */
static struct meta_nfilter *nf_find(struct meta_store *m, uint32_t bucket, uint64_t dir)
{
	struct meta_nfilter *set = nf_set(m, bucket);
	for (int w = 0; w < META_NFILTER_WAYS; w++)
		if (set[w].bits && set[w].dir == dir)
			return &set[w];
	return NULL;
}

/* A dentry key's filter hash: from its position, already a hash of the name (names that
 * share one share their bits: a "maybe" for each, never a wrong "free"). */
static uint64_t nf_hash(const uint8_t *key, size_t klen)
{
	AQ_ASSERT(klen > META_DENTRY_PREFIX_LEN + 6);
	return aq_mix64(meta_key_dentry_pos(key), 0x6e616d6573ull);
}

/* The block a name's bits lie in, and in g the bits' positions, 9 bits each. */
static uint64_t *nf_block(const struct meta_nfilter *f, uint64_t h, uint64_t *g)
{
	*g = aq_mix64(h, 0x626c6f636bull);
	return f->bits + (h & f->mask) * NF_BLOCK_WORDS;
}

static void nf_add_hash(struct meta_nfilter *f, uint64_t h)
{
	uint64_t g;
	uint64_t *blk = nf_block(f, h, &g);
	for (int i = 0; i < NF_PROBES; i++, g >>= 9)
		blk[(g & 511) >> 6] |= 1ull << (g & 63);
	f->names++;
}

static bool nf_may_hold(const struct meta_nfilter *f, uint64_t h)
{
	uint64_t g;
	const uint64_t *blk = nf_block(f, h, &g);
	for (int i = 0; i < NF_PROBES; i++, g >>= 9)
		if (!(blk[(g & 511) >> 6] & (1ull << (g & 63))))
			return false;
	return true;
}

static size_t nf_bytes(const struct meta_nfilter *f)
{
	return f->bits ? (size_t)(f->mask + 1) * NF_BLOCK_WORDS * sizeof(uint64_t) : 0;
}

static void nf_drop(struct meta_store *m, struct meta_nfilter *f)
{
	atomic_fetch_sub(&m->nfilter_bytes, nf_bytes(f));
	free(f->bits);
	*f = (struct meta_nfilter){ 0 };
}

/* The hashes of the pair's names, from one scan of its dentry rows. Returns the count, or
 * -errno. */
static int64_t nf_scan(struct meta_store *m, uint32_t bucket, uint64_t dir, uint64_t **out)
{
	uint8_t lo[META_DENTRY_PREFIX_LEN], hi[META_DENTRY_PREFIX_LEN];
	meta_key_dentry_prefix(lo, bucket, dir);
	meta_key_dentry_prefix(hi, bucket, dir + 1);
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)hi, sizeof hi);
	rocksdb_readoptions_set_fill_cache(ro, 0); /* one pass: keep the cache for lookups */
	rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, ro);
	size_t n = 0, cap = 1024;
	uint64_t *h = aq_malloc(cap * sizeof(*h));
	int rc = 0;
	for (rocksdb_iter_seek(it, (const char *)lo, sizeof lo); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen <= META_DENTRY_PREFIX_LEN + 6) { /* no name: a filter without it could lie */
			log_error("meta: corrupt dentry key in dir %llx", (unsigned long long)dir);
			rc = -EIO;
			break;
		}
		if (n == cap)
			h = aq_realloc(h, (cap *= 2) * sizeof(*h));
		h[n++] = nf_hash(k, klen);
	}
	if (!rc)
		rc = meta_iter_error(it, "name filter scan");
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	if (rc) {
		free(h);
		return rc;
	}
	*out = h;
	return (int64_t)n;
}

/* Bytes of a filter for cap names: a power of two of blocks, NF_BITS_PER_NAME bits a name. */
static size_t nf_size(uint64_t cap)
{
	uint64_t blocks = 1;
	while (blocks * NF_BLOCK_BITS < cap * NF_BITS_PER_NAME)
		blocks *= 2;
	return (size_t)blocks * NF_BLOCK_WORDS * sizeof(uint64_t);
}

/* Takes bytes from the budget; false if they do not fit. */
static bool nf_reserve(struct meta_store *m, size_t bytes)
{
	if (atomic_fetch_add(&m->nfilter_bytes, bytes) + bytes <= m->nfilter_budget)
		return true;
	atomic_fetch_sub(&m->nfilter_bytes, bytes);
	return false;
}

/* (Re)builds slot f for the pair, sized for NF_GROWTH times the names it has (`want`, from
 * its partial row, and what the scan finds). The budget is asked before the scan, so a pair
 * that cannot have a filter costs no scan per create. On failure the slot is left empty. */
static void nf_build(struct meta_store *m, struct meta_nfilter *f, uint32_t bucket, uint64_t dir, uint64_t want)
{
	nf_drop(m, f);
	size_t bytes = nf_size(want * NF_GROWTH);
	if (!nf_reserve(m, bytes))
		return;
	uint64_t *h = NULL;
	uint64_t t0 = aq_mono_ns();
	atomic_fetch_add(&m->nfilter_scans, 1);
	int64_t n = nf_scan(m, bucket, dir, &h);
	size_t need = n < 0 ? 0 : nf_size(MAX((uint64_t)n, want) * NF_GROWTH);
	if (n < 0 || (need > bytes && !nf_reserve(m, need - bytes))) {
		atomic_fetch_sub(&m->nfilter_bytes, bytes);
		free(h);
		return;
	}
	bytes = MAX(bytes, need);
	uint64_t blocks = bytes / (NF_BLOCK_WORDS * sizeof(uint64_t));
	*f = (struct meta_nfilter){ .dir = dir, .cap = bytes * 8 / NF_BITS_PER_NAME, .mask = blocks - 1,
				    .bits = aq_calloc(blocks * NF_BLOCK_WORDS, sizeof(uint64_t)) };
	for (int64_t i = 0; i < n; i++)
		nf_add_hash(f, h[i]);
	free(h);
	if (n >= NF_LOG_NAMES)
		log_info("meta: name filter of directory %llu in bucket %u: %lld names, %zu KiB, built in %.1f ms",
			 (unsigned long long)dir, bucket, (long long)n, bytes >> 10, (double)(aq_mono_ns() - t0) / 1e6);
}

void meta_nfilter_prepare(struct meta_store *m, uint32_t bucket, uint64_t dir, uint64_t names, uint32_t incoming)
{
	struct meta_nfilter *set = nf_set(m, bucket);
	struct meta_nfilter *f = nf_find(m, bucket, dir);
	if (!f && names < META_NFILTER_MIN)
		return;
	int w = f ? (int)(f - set) : META_NFILTER_WAYS - 1; /* a new one takes the oldest slot */
	struct meta_nfilter slot = set[w];
	memmove(set + 1, set, (size_t)w * sizeof(*set));
	set[0] = slot;
	if (!f || set[0].names + incoming > set[0].cap)
		nf_build(m, &set[0], bucket, dir, names + incoming);
}

bool meta_nfilter_free(struct meta_store *m, uint32_t bucket, uint64_t dir, const uint8_t *key, size_t klen)
{
	const struct meta_nfilter *f = nf_find(m, bucket, dir);
	return f && !nf_may_hold(f, nf_hash(key, klen));
}

void meta_nfilter_add(struct meta_store *m, const uint8_t *key, size_t klen)
{
	AQ_ASSERT(klen > META_DENTRY_PREFIX_LEN && key[0] == MK_DENTRY);
	struct meta_nfilter *f = nf_find(m, get_be16(key + 1), get_be64(key + 3));
	if (f)
		nf_add_hash(f, nf_hash(key, klen));
}

void meta_nfilter_forget(struct meta_store *m, uint32_t bucket, uint64_t dir)
{
	struct meta_nfilter *f = nf_find(m, bucket, dir);
	if (f)
		nf_drop(m, f);
}

int64_t meta_nfilter_names(struct meta_store *m, uint32_t bucket, uint64_t dir)
{
	const struct meta_nfilter *f = nf_find(m, bucket, dir);
	return f ? (int64_t)f->names : -1;
}

void meta_nfilter_free_all(struct meta_store *m)
{
	for (size_t i = 0; m->nfilters && i < (size_t)m->nbuckets * META_NFILTER_WAYS; i++)
		nf_drop(m, &m->nfilters[i]);
	free(m->nfilters);
	m->nfilters = NULL;
}

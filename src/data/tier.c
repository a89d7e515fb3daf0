/*
 * tier.c - the object tier of a storage target: chunks move between flash and S3 pack
 * objects without their index entry ever pointing nowhere.
 *
 * Demote reads chunks from flash (crc-checked), packs them back to back into an object
 * of up to DATA_PACK_MAX bytes, uploads it, and only when S3 has confirmed the upload
 * points the index entries at (object, offset) in one synced batch and frees their flash
 * records. An entry that changed meanwhile (new version, moved) is left alone: its bytes
 * in the object are dead from the start. A cold read fetches the whole chunk with one
 * ranged GET, checks every block against the crcs the index kept, and writes it to flash
 * again (the entry then points to both). Writes, truncates and deletes drop references
 * to objects; an object nothing points to is deleted, but only after the index change
 * that dropped the last reference is durable. Reclaim rewrites objects that are mostly
 * dead into new packs.
 *
 * Objects are named "<prefix>t<target>/<id as 16 hex digits>" and recorded under
 * 'O' | id (big-endian) -> size in the target's index; live bytes are counted from the
 * chunk entries at open. An upload whose commit never happened (crash, error) leaves an
 * object nothing records: dead space in the bucket, never wrong data.
 */
#include <stdlib.h>

#include "data/data_internal.h"
#include "s3/s3.h"

/* ---- the tier attachment ---- */

void data_set_tier(struct data_store *ds, struct s3_client *s3, const char *prefix)
{
	pthread_rwlock_wrlock(&ds->tier_lock);
	ds->s3 = s3;
	snprintf(ds->tier_prefix, sizeof ds->tier_prefix, "%s", prefix ? prefix : "");
	pthread_rwlock_unlock(&ds->tier_lock);
}

/* Holds the tier attached (shared) until tier_put; NULL when none is. */
static struct s3_client *tier_get(struct data_store *ds)
{
	pthread_rwlock_rdlock(&ds->tier_lock);
	if (ds->s3)
		return ds->s3;
	pthread_rwlock_unlock(&ds->tier_lock);
	return NULL;
}

static void tier_put(struct data_store *ds) { pthread_rwlock_unlock(&ds->tier_lock); }

static void obj_name(const struct data_target *t, uint64_t obj, char *buf, size_t size)
{
	snprintf(buf, size, "%st%u/%016llx", t->ds->tier_prefix, t->id, (unsigned long long)obj);
}

static void obj_key(uint8_t out[DATA_OBJ_KEY_SIZE], uint64_t obj)
{
	out[0] = 'O';
	put_be64(out + 1, obj);
}

/* ---- the object table (under t->lock) ---- */

static struct data_obj *obj_find(struct data_target *t, uint64_t id)
{
	uint32_t lo = 0, hi = t->nobjs;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (t->objs[mid].id == id)
			return &t->objs[mid];
		if (t->objs[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static void obj_insert(struct data_target *t, uint64_t id, uint64_t size, uint64_t live)
{
	if (t->nobjs == t->objs_cap) {
		t->objs_cap = t->objs_cap ? 2 * t->objs_cap : 64;
		t->objs = aq_realloc(t->objs, t->objs_cap * sizeof *t->objs);
	}
	uint32_t i = t->nobjs;
	while (i > 0 && t->objs[i - 1].id > id) {
		t->objs[i] = t->objs[i - 1];
		i--;
	}
	t->objs[i] = (struct data_obj){.id = id, .size = size, .live = live};
	t->nobjs++;
	if (id >= t->next_obj)
		t->next_obj = id + 1;
	if (live == 0)
		t->objs_dead = true;
}

static void obj_remove(struct data_target *t, uint64_t id)
{
	struct data_obj *o = obj_find(t, id);
	if (!o)
		return;
	uint32_t i = (uint32_t)(o - t->objs);
	memmove(&t->objs[i], &t->objs[i + 1], (t->nobjs - i - 1) * sizeof *t->objs);
	t->nobjs--;
}

void tier_unref_locked(struct data_target *t, uint64_t obj, uint32_t len)
{
	struct data_obj *o = obj_find(t, obj);
	if (!o)
		return; /* logged at open */
	o->live -= MIN(o->live, (uint64_t)len);
	if (o->live == 0)
		t->objs_dead = true;
}

/* Calls fn for each index entry of ino (every inode when all), in chunk order, from a
 * consistent snapshot; stops at fn's first non-zero return. */
static int each_entry(struct data_target *t, bool all, uint64_t ino,
		      int (*fn)(void *arg, uint64_t ino, uint32_t idx, const struct data_entry *e), void *arg)
{
	uint8_t start[DATA_KEY_SIZE];
	data_key(start, all ? 0 : ino, 0);
	struct data_entry *e = aq_malloc(sizeof *e);
	int rc = 0;
	rocksdb_iterator_t *it = rocksdb_create_iterator(t->db, t->ropt);
	for (rocksdb_iter_seek(it, (const char *)start, sizeof start); !rc && rocksdb_iter_valid(it);
	     rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *key = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen != DATA_KEY_SIZE || memcmp(key, start, all ? 1 : 9) != 0)
			break;
		const uint8_t *val = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (data_val_decode(val, vlen, e))
			continue; /* logged at open; reads of it say -EIO */
		rc = fn(arg, get_be64(key + 1), get_be32(key + 9), e);
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	if (err) {
		log_error("target %u: index scan: %s", t->id, err);
		rocksdb_free(err);
		rc = -EIO;
	}
	rocksdb_iter_destroy(it);
	free(e);
	return rc;
}

void tier_count_live(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e)
{
	struct data_obj *o = obj_find(t, e->obj);
	if (o)
		o->live += e->length;
	else
		log_error("target %u: ino %llx idx %u points to unrecorded object %llu", t->id,
			  (unsigned long long)ino, idx, (unsigned long long)e->obj);
}

void tier_note_dead(struct data_target *t)
{
	for (uint32_t i = 0; i < t->nobjs; i++)
		if (t->objs[i].live == 0)
			t->objs_dead = true;
}

int tier_open_target(struct data_target *t)
{
	t->next_obj = 1;
	rocksdb_iterator_t *it = rocksdb_create_iterator(t->db, t->ropt);
	for (rocksdb_iter_seek(it, "O", 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *key = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen == 0 || key[0] != 'O')
			break;
		const uint8_t *val = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if (klen != DATA_OBJ_KEY_SIZE || vlen != 8) {
			log_error("target %u: malformed object record", t->id);
			continue;
		}
		/* live counted below; an object found dead is deleted by the next gc */
		obj_insert(t, get_be64(key + 1), get_le64(val), 0);
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	if (err) {
		log_error("target %u: scan objects: %s", t->id, err);
		rocksdb_free(err);
		return -EIO;
	}
	t->objs_dead = false; /* tier_note_dead decides once live bytes are counted */
	return 0;
}

/* ---- reading from S3 ---- */

int tier_read_blocks(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e, uint64_t start,
		     uint64_t len, uint8_t *dst)
{
	AQ_ASSERT(start % DATA_BLOCK_SIZE == 0 && start + len <= e->length);
	struct s3_client *s3 = tier_get(t->ds);
	if (!s3) {
		log_error("target %u: ino %llx idx %u is in S3 object %llu but no tier is attached", t->id,
			  (unsigned long long)ino, idx, (unsigned long long)e->obj);
		return -EIO;
	}
	char name[512];
	obj_name(t, e->obj, name, sizeof name);
	int rc = s3_get(s3, name, e->obj_off + start, dst, len);
	tier_put(t->ds);
	if (rc) {
		log_error("target %u: ino %llx idx %u: get %s [%llu, +%llu): %s", t->id, (unsigned long long)ino, idx,
			  name, (unsigned long long)(e->obj_off + start), (unsigned long long)len, s3_last_error());
		return -EIO;
	}
	for (uint64_t at = start; at < start + len; at += DATA_BLOCK_SIZE) {
		uint32_t b = (uint32_t)(at / DATA_BLOCK_SIZE);
		uint64_t n = MIN(at + DATA_BLOCK_SIZE, (uint64_t)e->length) - at;
		uint32_t crc = crc32c(0, dst + (at - start), n);
		if (crc != e->crc[b]) {
			log_error("target %u: chunk ino %llx idx %u v%llu block %u (object %s offset %llu): "
				  "crc32c %08x, index says %08x: corrupt",
				  t->id, (unsigned long long)ino, idx, (unsigned long long)e->version, b, name,
				  (unsigned long long)(e->obj_off + at), crc, e->crc[b]);
			return -AQ_ECORRUPT;
		}
	}
	return 0;
}

static uint8_t *rec_buf(uint32_t length)
{
	void *p = data_buf_alloc(data_rec_size(length));
	memset(p, 0, data_rec_size(length));
	return p;
}

/* Puts entry e of (ino, idx) into batch, or straight into the index (synced with sync). */
static int index_put(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e,
		     rocksdb_writebatch_t *batch, bool sync)
{
	uint8_t key[DATA_KEY_SIZE], val[DATA_VAL_MAX];
	data_key(key, ino, idx);
	size_t vlen = data_val_encode(val, e);
	if (batch) {
		rocksdb_writebatch_put(batch, (const char *)key, sizeof key, (const char *)val, vlen);
		return 0;
	}
	char *err = NULL;
	rocksdb_put(t->db, sync ? t->wopt_sync : t->wopt, (const char *)key, sizeof key, (const char *)val, vlen, &err);
	if (err) {
		log_error("target %u: index put ino %llx idx %u: %s", t->id, (unsigned long long)ino, idx, err);
		rocksdb_free(err);
		return -EIO;
	}
	return 0;
}

int tier_recall_chunk(struct data_target *t, uint64_t ino, uint32_t idx)
{
	struct data_entry *e = aq_malloc(sizeof *e), *cur = aq_malloc(sizeof *cur);
	uint8_t *rec = NULL;
	bool found = false;
	int rc = data_index_get(t, ino, idx, e, &found);
	if (rc || !found || e->seg || !e->obj)
		goto out;
	rec = rec_buf(e->length);
	rc = tier_read_blocks(t, ino, idx, e, 0, e->length, rec + DATA_REC_HDR_SIZE);
	if (rc)
		goto out;
	pthread_mutex_lock(&t->lock);
	rc = data_index_get(t, ino, idx, cur, &found);
	if (!rc && found && cur->version == e->version && !cur->seg && cur->obj == e->obj) {
		struct data_rec_hdr h = {.ino = ino, .idx = idx, .length = e->length, .version = e->version};
		data_hdr_encode(rec, &h);
		uint64_t size = data_rec_size(e->length);
		rc = data_append_locked(t->ds, t, rec, size, false, false, &cur->seg, &cur->off);
		if (!rc) {
			rc = index_put(t, ino, idx, cur, NULL, false);
			if (!rc)
				data_seg_find(t, cur->seg)->live += size;
			/* else: the appended record is dead space */
		}
	}
	pthread_mutex_unlock(&t->lock);
out:
	data_buf_free(rec);
	free(cur);
	free(e);
	return rc;
}

/* ---- packing chunks into objects ---- */

/* A chunk placed in the pack being built. from_obj 0: demote (its flash records are
 * freed once the object is in); else reclaim (the chunk moves from from_obj and keeps
 * whatever flash copy it has). */
struct pack_member {
	uint64_t ino;
	uint32_t idx, length;
	uint64_t version, from_obj, pack_off;
};

struct pack {
	struct data_target *t;
	struct s3_client *s3;
	uint8_t *buf;
	uint64_t len;
	struct pack_member *m;
	uint32_t n, cap;
	int64_t moved;          /* bytes of chunk data committed into objects */
	uint64_t uploaded;      /* object bytes written */
};

static void pack_init(struct pack *p, struct data_target *t, struct s3_client *s3)
{
	memset(p, 0, sizeof *p);
	p->t = t;
	p->s3 = s3;
}

static void pack_fini(struct pack *p)
{
	free(p->buf);
	free(p->m);
}

/* Uploads the pack and, once S3 confirmed it, points the entries that did not change
 * meanwhile at it in one synced batch; then frees their old places. */
static int pack_flush(struct pack *p)
{
	struct data_target *t = p->t;
	if (p->n == 0)
		return 0;
	pthread_mutex_lock(&t->lock);
	uint64_t obj = t->next_obj++;
	pthread_mutex_unlock(&t->lock);
	char name[512];
	obj_name(t, obj, name, sizeof name);
	int rc = s3_put(p->s3, name, p->buf, p->len);
	if (rc) {
		log_error("target %u: put %s (%llu bytes, %u chunks): %s; flash kept", t->id, name,
			  (unsigned long long)p->len, p->n, s3_last_error());
		goto out;
	}
	p->uploaded += p->len;

	struct data_entry *cur = aq_malloc(sizeof *cur);
	rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
	pthread_mutex_lock(&t->lock);
	uint8_t okey[DATA_OBJ_KEY_SIZE], oval[8];
	obj_key(okey, obj);
	put_le64(oval, p->len);
	rocksdb_writebatch_put(batch, (const char *)okey, sizeof okey, (const char *)oval, sizeof oval);
	bool *taken = aq_calloc(p->n, sizeof *taken);
	uint64_t live = 0;
	struct data_rec_ref *gone = NULL; /* the flash records demoted chunks leave */
	size_t ngone = 0, gone_cap = 0;
	for (uint32_t i = 0; i < p->n; i++) {
		struct pack_member *m = &p->m[i];
		bool found = false;
		if (data_index_get(t, m->ino, m->idx, cur, &found) || !found || cur->version != m->version)
			continue; /* rewritten or gone meanwhile: its bytes in the object are dead */
		if (m->from_obj ? cur->obj != m->from_obj : (cur->obj || !cur->seg))
			continue;
		/* the same version may have moved (compaction): free where it is now */
		if (!m->from_obj) {
			if (ngone + DATA_RECS_MAX > gone_cap) {
				gone_cap = 2 * gone_cap + DATA_RECS_MAX;
				gone = aq_realloc(gone, gone_cap * sizeof *gone);
			}
			ngone += data_entry_recs(cur, gone + ngone);
			cur->seg = 0, cur->off = 0, cur->nrec = 0;
		}
		cur->obj = obj;
		cur->obj_off = m->pack_off;
		index_put(t, m->ino, m->idx, cur, batch, false);
		taken[i] = true;
		live += m->length;
	}
	char *err = NULL;
	rocksdb_write(t->db, t->wopt_sync, batch, &err);
	if (err) {
		log_error("target %u: commit object %s: %s; flash kept", t->id, name, err);
		rocksdb_free(err);
		rc = -EIO;
	} else {
		obj_insert(t, obj, p->len, live);
		for (uint32_t i = 0; i < p->n; i++) {
			const struct pack_member *m = &p->m[i];
			if (!taken[i])
				continue;
			p->moved += m->length;
			if (m->from_obj)
				tier_unref_locked(t, m->from_obj, m->length);
		}
		for (size_t i = 0; i < ngone; i++)
			data_drop_record_locked(t, gone[i].seg, gone[i].off, gone[i].length);
		data_punch_queued_locked(t); /* the batch was synced: flash comes back now */
	}
	pthread_mutex_unlock(&t->lock);
	rocksdb_writebatch_destroy(batch);
	free(gone);
	free(taken);
	free(cur);
out:
	p->n = 0;
	p->len = 0;
	return rc;
}

/* Reads chunk e of ino into the pack (flushing first when it would not fit). */
static int pack_add(struct pack *p, uint64_t ino, uint32_t idx, const struct data_entry *e, uint64_t from_obj)
{
	struct data_target *t = p->t;
	if (p->len + e->length > DATA_PACK_MAX) {
		int rc = pack_flush(p);
		if (rc)
			return rc;
	}
	if (!p->buf)
		p->buf = aq_malloc(DATA_PACK_MAX);
	/* re-read the entry under seg_lock: compaction may have moved the record */
	struct data_entry *cur = aq_malloc(sizeof *cur);
	bool found = false;
	pthread_rwlock_rdlock(&t->seg_lock);
	int rc = data_index_get(t, ino, idx, cur, &found);
	if (!rc && found && cur->version == e->version && (from_obj ? cur->obj == from_obj : (cur->seg && !cur->obj)))
		rc = data_read_chunk(t, ino, idx, cur, p->buf + p->len);
	else if (!rc)
		found = false; /* changed meanwhile: skip it */
	pthread_rwlock_unlock(&t->seg_lock);
	if (!rc && found) {
		if (p->n == p->cap) {
			p->cap = p->cap ? 2 * p->cap : 256;
			p->m = aq_realloc(p->m, p->cap * sizeof *p->m);
		}
		p->m[p->n++] = (struct pack_member){.ino = ino, .idx = idx, .length = cur->length,
						    .version = cur->version, .from_obj = from_obj,
						    .pack_off = p->len};
		p->len += cur->length;
	}
	free(cur);
	/* a chunk that cannot be read stays where it is; the rest goes on */
	if (rc)
		log_warn("target %u: ino %llx idx %u not moved to S3: %s", t->id, (unsigned long long)ino, idx,
			 strerror(-rc == AQ_ECORRUPT ? EIO : -rc));
	return 0;
}

struct demote_ctx {
	struct pack *p;
	int64_t dropped; /* bytes of chunks already in S3 whose flash copy went */
	int rc;
};

/* A chunk on flash and already in S3 just loses its flash copy. */
static int drop_flash_copy(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e)
{
	struct data_entry *cur = aq_malloc(sizeof *cur);
	bool found = false;
	pthread_mutex_lock(&t->lock);
	int rc = data_index_get(t, ino, idx, cur, &found);
	if (!rc && found && cur->version == e->version && cur->seg && cur->obj) {
		uint32_t seg = cur->seg;
		uint64_t off = cur->off;
		cur->seg = 0;
		cur->off = 0;
		/* synced: the flash record is punched right after */
		rc = index_put(t, ino, idx, cur, NULL, true);
		if (!rc) {
			data_drop_record_locked(t, seg, off, cur->length);
			data_punch_queued_locked(t);
			rc = (int)cur->length;
		}
	}
	pthread_mutex_unlock(&t->lock);
	free(cur);
	return rc;
}

static int demote_one(void *arg, uint64_t ino, uint32_t idx, const struct data_entry *e)
{
	struct demote_ctx *c = arg;
	if (!e->seg)
		return 0; /* already only in S3 */
	if (e->obj) {
		int n = drop_flash_copy(c->p->t, ino, idx, e);
		if (n > 0)
			c->dropped += n;
		return n < 0 ? n : 0;
	}
	return pack_add(c->p, ino, idx, e, 0);
}

static void tier_gc(struct data_target *t, struct s3_client *s3);

int64_t data_demote(struct data_store *ds, uint32_t target, const uint64_t *inos, uint32_t n)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	struct s3_client *s3 = tier_get(ds);
	if (!s3)
		return -ENOTCONN;
	struct pack p;
	pack_init(&p, t, s3);
	struct demote_ctx c = {.p = &p};
	int rc = 0;
	for (uint32_t i = 0; !rc && i < n; i++)
		rc = each_entry(t, false, inos[i], demote_one, &c);
	if (!rc)
		rc = pack_flush(&p);
	int64_t moved = p.moved + c.dropped;
	pack_fini(&p);
	tier_gc(t, s3);
	tier_put(ds);
	return rc ? rc : moved;
}

struct hydrate_ctx {
	struct data_target *t;
	int64_t bytes;
};

static int hydrate_one(void *arg, uint64_t ino, uint32_t idx, const struct data_entry *e)
{
	struct hydrate_ctx *c = arg;
	if (e->seg || !e->obj)
		return 0;
	int rc = tier_recall_chunk(c->t, ino, idx);
	if (!rc)
		c->bytes += e->length;
	return rc;
}

int64_t data_hydrate(struct data_store *ds, uint32_t target, uint64_t ino)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	struct hydrate_ctx c = {.t = t};
	int rc = each_entry(t, false, ino, hydrate_one, &c);
	return rc ? rc : c.bytes;
}

static int usage_one(void *arg, uint64_t ino, uint32_t idx, const struct data_entry *e)
{
	struct data_tier_usage *u = arg;
	if (e->seg && e->obj)
		u->both += e->length;
	else if (e->seg)
		u->hot += e->length;
	else
		u->cold += e->length;
	return 0;
}

int data_tier_usage(struct data_store *ds, uint32_t target, uint64_t ino, struct data_tier_usage *out)
{
	memset(out, 0, sizeof *out);
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	return each_entry(t, false, ino, usage_one, out);
}

int data_tier_stat(struct data_store *ds, uint32_t target, struct data_tier_stat *out)
{
	memset(out, 0, sizeof *out);
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	pthread_mutex_lock(&t->lock);
	out->objects = t->nobjs;
	for (uint32_t i = 0; i < t->nobjs; i++) {
		out->object_bytes += t->objs[i].size;
		out->live_bytes += t->objs[i].live;
	}
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/* ---- deleting dead objects and rewriting sparse ones ---- */

/* Deletes the objects nothing points to. The index changes that dropped their last
 * references are made durable first, so a crash cannot bring back an entry that points
 * into a deleted object. */
static void tier_gc(struct data_target *t, struct s3_client *s3)
{
	pthread_mutex_lock(&t->lock);
	if (!t->objs_dead || data_sync_locked(t)) {
		pthread_mutex_unlock(&t->lock);
		return;
	}
	t->objs_dead = false;
	uint64_t *dead = NULL;
	uint32_t n = 0;
	for (uint32_t i = 0; i < t->nobjs; i++)
		if (t->objs[i].live == 0) {
			dead = aq_realloc(dead, (n + 1) * sizeof *dead);
			dead[n++] = t->objs[i].id;
		}
	pthread_mutex_unlock(&t->lock);
	for (uint32_t i = 0; i < n; i++) {
		char name[512];
		obj_name(t, dead[i], name, sizeof name);
		int rc = s3_delete(s3, name);
		pthread_mutex_lock(&t->lock);
		if (rc) {
			log_warn("target %u: delete %s: %s; retried later", t->id, name, s3_last_error());
			t->objs_dead = true;
		} else {
			uint8_t key[DATA_OBJ_KEY_SIZE];
			obj_key(key, dead[i]);
			char *err = NULL;
			rocksdb_delete(t->db, t->wopt, (const char *)key, sizeof key, &err);
			if (err)
				rocksdb_free(err); /* a leftover record is deleted (404: fine) next time */
			obj_remove(t, dead[i]);
		}
		pthread_mutex_unlock(&t->lock);
	}
	free(dead);
}

struct repack_ctx {
	struct pack *p;
	const uint64_t *objs; /* sorted */
	uint32_t n;
};

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static int repack_one(void *arg, uint64_t ino, uint32_t idx, const struct data_entry *e)
{
	struct repack_ctx *c = arg;
	if (!e->obj || !bsearch(&e->obj, c->objs, c->n, sizeof *c->objs, cmp_u64))
		return 0;
	return pack_add(c->p, ino, idx, e, e->obj);
}

static int by_live_share(const void *a, const void *b)
{
	const struct data_obj *x = a, *y = b;
	/* x->live / x->size < y->live / y->size, without division */
	unsigned __int128 l = (unsigned __int128)x->live * y->size, r = (unsigned __int128)y->live * x->size;
	return l < r ? -1 : l > r;
}

static void dead_share(struct data_target *t, uint64_t *size, uint64_t *dead)
{
	*size = *dead = 0;
	pthread_mutex_lock(&t->lock);
	for (uint32_t i = 0; i < t->nobjs; i++) {
		*size += t->objs[i].size;
		*dead += t->objs[i].size - MIN(t->objs[i].live, t->objs[i].size);
	}
	pthread_mutex_unlock(&t->lock);
}

int64_t data_tier_reclaim(struct data_store *ds, uint32_t target, double start_ratio, double stop_ratio)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	struct s3_client *s3 = tier_get(ds);
	if (!s3)
		return 0;
	uint64_t size0, dead0, size, dead;
	tier_gc(t, s3);
	dead_share(t, &size0, &dead0);
	int rc = 0;
	if (size0 && (double)dead0 > start_ratio * (double)size0) {
		pthread_mutex_lock(&t->lock);
		uint32_t n = t->nobjs;
		struct data_obj *cand = aq_malloc((n ? n : 1) * sizeof *cand);
		memcpy(cand, t->objs, n * sizeof *cand);
		pthread_mutex_unlock(&t->lock);
		qsort(cand, n, sizeof *cand, by_live_share);
		/* the sparsest objects until what stays dead is below stop_ratio */
		uint64_t *pick = aq_malloc((n ? n : 1) * sizeof *pick);
		uint32_t npick = 0;
		size = size0, dead = dead0;
		for (uint32_t i = 0; i < n && (double)dead > stop_ratio * (double)size; i++) {
			if (cand[i].live >= cand[i].size)
				break; /* the rest are full */
			pick[npick++] = cand[i].id;
			size -= cand[i].size - cand[i].live; /* its live bytes move to a new object */
			dead -= cand[i].size - cand[i].live;
		}
		qsort(pick, npick, sizeof *pick, cmp_u64);
		struct pack p;
		pack_init(&p, t, s3);
		struct repack_ctx c = {.p = &p, .objs = pick, .n = npick};
		if (npick)
			rc = each_entry(t, true, 0, repack_one, &c);
		if (!rc)
			rc = pack_flush(&p);
		pack_fini(&p);
		free(pick);
		free(cand);
		tier_gc(t, s3);
	}
	tier_put(ds);
	if (rc)
		return rc;
	dead_share(t, &size, &dead);
	return size0 > size ? (int64_t)(size0 - size) : 0;
}

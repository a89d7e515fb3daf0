/*
 * txn.c - changes that happen once, though their client sends them twice.
 *
 * A client whose connection breaks (aqd killed, restarted) sends its call again. For a
 * lookup that is harmless; for a create, an unlink or a rename that aqd had committed
 * before it died, the second run fails (EEXIST, ENOENT) although the change was made.
 * So a client numbers its changes (client id, seq), and the batch that commits one also
 * writes an 'R' row for it: key 'R' client64 slot16 (slot = seq mod META_TXN_SLOTS), value
 * seq64 ino64 wall-time64. A call sent again is marked so (PROTO_F_RETRY); aqd then looks
 * for its row first and answers from it instead of running it twice. This is NFS's
 * duplicate request cache, kept in the store (as Ceph's MDS journals completed requests),
 * so it survives kill -9 exactly as the change does.
 *
 * A client has at most a few hundred changes in flight; a slot is overwritten by a later
 * change of the same client, whose seq then differs. Rows older than META_TXN_KEEP_NS go
 * (meta_txn_sweep); the sweep re-reads each under every bucket lock, which every commit
 * of a change holds one of, so it never deletes a row written after it looked.
 */
#include "meta/meta_internal.h"

static __thread const struct meta_txn *tls_tx;
static __thread uint32_t tls_ntx;

void meta_txn_begin(const struct meta_txn *tx, uint32_t n)
{
	tls_tx = tx;
	tls_ntx = n;
}

void meta_txn_end(void)
{
	tls_tx = NULL;
	tls_ntx = 0;
}

static size_t txn_key(uint8_t buf[META_TXN_KEY_LEN], uint64_t client, uint64_t seq)
{
	buf[0] = MK_TXN;
	put_be64(buf + 1, client);
	put_be16(buf + 9, (uint16_t)(seq % META_TXN_SLOTS));
	return META_TXN_KEY_LEN;
}

void meta_txn_put(rocksdb_writebatch_t *wb, uint32_t i, uint64_t ino)
{
	if (i >= tls_ntx || !tls_tx[i].client)
		return;
	uint8_t key[META_TXN_KEY_LEN], v[META_TXN_VAL_LEN];
	put_le64(v, tls_tx[i].seq);
	put_le64(v + 8, ino);
	put_le64(v + 16, (uint64_t)aq_now_ns());
	rocksdb_writebatch_put(wb, (const char *)key, txn_key(key, tls_tx[i].client, tls_tx[i].seq), (const char *)v,
			       sizeof v);
}

int meta_commit_op(struct meta_store *m, rocksdb_writebatch_t *wb, uint64_t ino)
{
	meta_txn_put(wb, 0, ino);
	return meta_commit(m, wb);
}

int meta_txn_find(struct meta_store *m, const struct meta_txn *tx, uint64_t *ino)
{
	uint8_t key[META_TXN_KEY_LEN], v[META_TXN_VAL_LEN];
	size_t len = 0;
	int rc = meta_get(m, key, txn_key(key, tx->client, tx->seq), v, sizeof v, &len);
	if (rc <= 0)
		return rc;
	if (len != sizeof v || get_le64(v) != tx->seq)
		return 0;
	*ino = get_le64(v + 8);
	return 1;
}

/* Is the row (value v, len bytes) older than before_ns? */
static bool txn_stale(const uint8_t *v, size_t len, int64_t before_ns)
{
	return len == META_TXN_VAL_LEN && (int64_t)get_le64(v + 16) < before_ns;
}

int meta_txn_sweep(struct meta_store *m, int64_t before_ns)
{
	/* Candidates first, without locks; then each again under every bucket lock. */
	uint8_t (*keys)[META_TXN_KEY_LEN] = aq_malloc(META_TXN_SWEEP_MAX * sizeof *keys);
	uint32_t n = 0;
	uint8_t lo = MK_TXN, hi = MK_TXN + 1;
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)&hi, 1);
	rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, ro);
	rocksdb_iter_seek(it, (const char *)&lo, 1);
	for (; rocksdb_iter_valid(it) && n < META_TXN_SWEEP_MAX; rocksdb_iter_next(it)) {
		size_t kl, vl;
		const char *k = rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
		if (kl == META_TXN_KEY_LEN && txn_stale(v, vl, before_ns))
			memcpy(keys[n++], k, META_TXN_KEY_LEN);
	}
	int rc = meta_iter_error(it, "change records");
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	if (rc || n == 0) {
		free(keys);
		return rc;
	}
	struct meta_lockset all = {.all = true};
	rocksdb_writebatch_t *wb = meta_batch_new();
	meta_lockset_lock(m, &all);
	uint32_t gone = 0;
	for (uint32_t i = 0; i < n && !rc; i++) {
		uint8_t v[META_TXN_VAL_LEN];
		size_t len = 0;
		rc = meta_get(m, keys[i], META_TXN_KEY_LEN, v, sizeof v, &len);
		if (rc > 0 && txn_stale(v, len, before_ns)) {
			rocksdb_writebatch_delete(wb, (const char *)keys[i], META_TXN_KEY_LEN);
			gone++;
		}
		rc = rc < 0 ? rc : 0;
	}
	if (!rc && gone)
		rc = meta_commit(m, wb);
	meta_lockset_unlock(m, &all);
	rocksdb_writebatch_destroy(wb);
	free(keys);
	return rc ? rc : (int)gone;
}

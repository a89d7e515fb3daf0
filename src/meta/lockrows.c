/*
 * lockrows.c - the rows that keep the server's locks across a restart: `K` ino64, the
 * inode's locks as src/server/locks.c writes them. Not bucketed: locks belong to the
 * server that holds the inode now, and are lost, not moved, if the inode moves.
 */
#include "meta/meta_internal.h"

#define LOCKS_KEY_LEN 9

static size_t locks_key(uint8_t buf[LOCKS_KEY_LEN], uint64_t ino)
{
	buf[0] = MK_LOCKS;
	put_be64(buf + 1, ino);
	return LOCKS_KEY_LEN;
}

int meta_locks_put(struct meta_store *m, uint64_t ino, const void *row, size_t len)
{
	uint8_t key[LOCKS_KEY_LEN];
	rocksdb_writebatch_t *wb = meta_batch_new();
	if (len)
		rocksdb_writebatch_put(wb, (const char *)key, locks_key(key, ino), row, len);
	else
		rocksdb_writebatch_delete(wb, (const char *)key, locks_key(key, ino));
	int rc = meta_commit(m, wb);
	rocksdb_writebatch_destroy(wb);
	return rc;
}

int meta_locks_scan(struct meta_store *m, int (*fn)(void *arg, uint64_t ino, const uint8_t *row, size_t len),
		    void *arg)
{
	uint8_t lo = MK_LOCKS, hi = MK_LOCKS + 1;
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)&hi, 1);
	rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, ro);
	int rc = 0;
	for (rocksdb_iter_seek(it, (const char *)&lo, 1); rocksdb_iter_valid(it) && !rc; rocksdb_iter_next(it)) {
		size_t kl, vl;
		const uint8_t *k = (const uint8_t *)rocksdb_iter_key(it, &kl);
		const uint8_t *v = (const uint8_t *)rocksdb_iter_value(it, &vl);
		if (kl == LOCKS_KEY_LEN)
			rc = fn(arg, get_be64(k + 1), v, vl);
	}
	if (!rc)
		rc = meta_iter_error(it, "lock rows");
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	return rc;
}

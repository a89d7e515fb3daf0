/*
 * rename.c - rename(2) with RENAME_NOREPLACE and RENAME_EXCHANGE, as one write batch.
 *
 * Locks: renames that move a directory first take rename_lock, which keeps every parent
 * pointer still while the "not into its own subtree" walk runs. Then the buckets of both
 * entries and of both inodes, ascending. Replacing a directory takes every bucket (the
 * rmdir fence: nothing may be created in the victim between the emptiness check and the
 * commit). The entries are peeked without locks to know which buckets to take; if they
 * changed by the time the locks are held, the rename retries holding everything.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "meta/meta_internal.h"

#define WALK_MAX 4096 /* deeper than any real tree; a longer chain means a corrupt store */

/* Returns 1 when dir is anc or lies under it, 0 when not, or -errno. Caller holds
 * rename_lock, so no directory's parent pointer changes during the walk. */
static int is_under(struct meta_store *m, uint64_t dir, uint64_t anc, struct meta_inode *scratch)
{
	for (int depth = 0; depth < WALK_MAX; depth++) {
		if (dir == anc)
			return 1;
		if (dir == AQ_ROOT_INO)
			return 0;
		int rc = meta_read_inode(m, dir, scratch);
		if (rc)
			return rc;
		AQ_ASSERT(S_ISDIR(scratch->a.mode));
		dir = scratch->parent;
	}
	log_error("meta: parent chain longer than %d", WALK_MAX);
	return -EIO;
}

struct rename_side {
	uint64_t dir;
	const char *name;
	size_t len;
	uint32_t bucket;
	uint8_t key[META_DENTRY_KEY_MAX];
	size_t klen;
	bool exists;
	struct meta_dentry d;
	struct meta_inode *parent; /* the directory's inode */
	struct meta_inode *in;     /* the entry's inode, when it exists */
};

static int read_side(struct meta_store *m, struct rename_side *s)
{
	int rc = meta_get_dentry(m, s->key, s->klen, &s->d);
	if (rc < 0)
		return rc;
	s->exists = rc == 1;
	return 0;
}

static int check_parent(const struct aq_cred *cr, struct meta_store *m, struct rename_side *s)
{
	int rc = meta_read_inode(m, s->dir, s->parent);
	if (rc)
		return rc;
	if (!S_ISDIR(s->parent->a.mode))
		return -ENOTDIR;
	return meta_perm(m, cr, &s->parent->a, W_OK | X_OK);
}

/* The checks and the batch, with every needed lock held. */
static int rename_locked(struct meta_store *m, const struct aq_cred *cr, struct rename_side *src,
			 struct rename_side *dst, uint32_t flags, bool all, rocksdb_writebatch_t *wb,
			 struct meta_inode *scratch, bool *removed_dir)
{
	bool exchange = flags & AQ_RENAME_EXCHANGE;
	int rc;

	if (!src->exists)
		return -ENOENT;
	if (src->dir == dst->dir && src->len == dst->len && memcmp(src->name, dst->name, src->len) == 0)
		return 0;
	rc = check_parent(cr, m, src);
	if (rc)
		return rc;
	rc = check_parent(cr, m, dst);
	if (rc)
		return rc;
	rc = meta_read_inode(m, src->d.ino, src->in);
	if (rc)
		return rc;
	if (dst->exists) {
		rc = meta_read_inode(m, dst->d.ino, dst->in);
		if (rc)
			return rc;
		/* Two names of one file: rename(2) does nothing. */
		if (dst->d.ino == src->d.ino)
			return 0;
	}
	rc = meta_sticky_ok(cr, &src->parent->a, &src->in->a);
	if (rc)
		return rc;
	if (dst->exists) {
		rc = meta_sticky_ok(cr, &dst->parent->a, &dst->in->a);
		if (rc)
			return rc;
	}
	bool sdir = S_ISDIR(src->in->a.mode);
	bool ddir = dst->exists && S_ISDIR(dst->in->a.mode);
	if (exchange) {
		if (!dst->exists)
			return -ENOENT;
	} else if (dst->exists) {
		if (flags & AQ_RENAME_NOREPLACE)
			return -EEXIST;
		if (sdir && !ddir)
			return -ENOTDIR;
		if (!sdir && ddir)
			return -EISDIR;
	}
	/* A directory that changes parent rewrites its "..": it needs write permission, and
	 * it must not move under itself. */
	if (sdir && src->dir != dst->dir) {
		rc = meta_perm(m, cr, &src->in->a, W_OK);
		if (rc)
			return rc;
		rc = is_under(m, dst->dir, src->d.ino, scratch);
		if (rc)
			return rc < 0 ? rc : -EINVAL;
	}
	if (exchange && ddir && src->dir != dst->dir) {
		rc = meta_perm(m, cr, &dst->in->a, W_OK);
		if (rc)
			return rc;
		rc = is_under(m, src->dir, dst->d.ino, scratch);
		if (rc)
			return rc < 0 ? rc : -EINVAL;
	}
	AQ_ASSERT(exchange || !ddir || all); /* replacing a directory: its emptiness is fenced */

	int64_t now = aq_now_ns();
	struct meta_pdelta pd[2];
	rocksdb_writebatch_delete(wb, (const char *)src->key, src->klen);
	meta_del_log(wb, src->bucket, src->dir, src->d.created_ts);
	if (dst->exists)
		meta_del_log(wb, dst->bucket, dst->dir, dst->d.created_ts);

	/* The moved entry, as a new entry of dst->dir (so the changelog reports it). */
	uint64_t ts;
	rc = meta_take_ts(m, exchange ? 2 : 1, &ts);
	if (rc)
		return rc;
	struct meta_dentry nd = { .ino = src->d.ino, .dtype = src->d.dtype, .created_ts = ts };
	meta_put_dentry(m, wb, dst->key, dst->klen, &nd);
	meta_put_log(wb, dst->bucket, dst->dir, ts, nd.ino, dst->name, dst->len);
	src->in->a.ctime_ns = now;
	if (sdir)
		src->in->parent = dst->dir;
	meta_put_inode(wb, src->in);

	if (exchange) {
		ts++;
		nd = (struct meta_dentry){ .ino = dst->d.ino, .dtype = dst->d.dtype, .created_ts = ts };
		meta_put_dentry(m, wb, src->key, src->klen, &nd);
		meta_put_log(wb, src->bucket, src->dir, ts, nd.ino, src->name, src->len);
		dst->in->a.ctime_ns = now;
		if (ddir)
			dst->in->parent = src->dir;
		meta_put_inode(wb, dst->in);
		pd[0] = (struct meta_pdelta){ src->bucket, src->dir, 0, (int64_t)ddir - sdir };
		pd[1] = (struct meta_pdelta){ dst->bucket, dst->dir, 0, (int64_t)sdir - ddir };
	} else {
		if (ddir) {
			rc = meta_del_dir_rows(m, wb, dst->d.ino); /* or -ENOTEMPTY */
			if (rc)
				return rc;
			*removed_dir = true;
		} else if (dst->exists) {
			struct meta_inode *v = dst->in;
			AQ_ASSERT(v->a.nlink > 0);
			v->a.nlink--;
			v->a.ctime_ns = now;
			meta_put_inode(wb, v);
			if (v->a.nlink == 0)
				meta_put_orphan(wb, v->a.ino, v->a.size, v->a.chunk_size);
		}
		pd[0] = (struct meta_pdelta){ src->bucket, src->dir, -1, -(int64_t)sdir };
		pd[1] = (struct meta_pdelta){ dst->bucket, dst->dir, 1 - (int64_t)dst->exists,
					      (int64_t)sdir - ddir };
	}
	rc = meta_apply_partials(m, wb, pd, 2, now);
	if (rc)
		return rc;
	return meta_commit_op(m, wb, 0);
}

int meta_rename(struct meta_store *m, const struct aq_cred *cr, uint64_t parent, const char *name, size_t name_len,
		uint64_t newparent, const char *newname, size_t newname_len, uint32_t flags)
{
	if (flags & ~(AQ_RENAME_NOREPLACE | AQ_RENAME_EXCHANGE))
		return -EINVAL;
	if ((flags & AQ_RENAME_NOREPLACE) && (flags & AQ_RENAME_EXCHANGE))
		return -EINVAL;
	int rc = meta_check_name(name, name_len);
	if (rc == 0)
		rc = meta_check_name(newname, newname_len);
	if (rc)
		return rc;
	if (meta_is_dot(name, name_len) || meta_is_dot(newname, newname_len))
		return -EBUSY;

	struct rename_side *src = aq_calloc(1, sizeof(*src)), *dst = aq_calloc(1, sizeof(*dst));
	struct meta_inode *scratch = aq_malloc(sizeof(*scratch));
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	bool dirlock = false, removed_dir = false;

	src->dir = parent, src->name = name, src->len = name_len;
	dst->dir = newparent, dst->name = newname, dst->len = newname_len;
	src->klen = meta_dentry_key(m, src->key, parent, name, name_len, &src->bucket);
	dst->klen = meta_dentry_key(m, dst->key, newparent, newname, newname_len, &dst->bucket);
	src->parent = aq_malloc(sizeof(struct meta_inode));
	src->in = aq_malloc(sizeof(struct meta_inode));
	dst->parent = aq_malloc(sizeof(struct meta_inode));
	dst->in = aq_malloc(sizeof(struct meta_inode));

	/* Peek without locks to learn which locks are needed. */
	rc = read_side(m, src);
	if (rc == 0)
		rc = read_side(m, dst);
	if (rc)
		goto out;
	if (!src->exists) {
		rc = -ENOENT;
		goto out;
	}
	struct meta_dentry peek_s = src->d, peek_d = dst->d;
	bool peek_dexists = dst->exists;
	bool sdir = src->d.dtype == meta_dtype(S_IFDIR);
	bool ddir = dst->exists && dst->d.dtype == meta_dtype(S_IFDIR);
	dirlock = sdir || ddir;
	ls.all = ddir && !(flags & AQ_RENAME_EXCHANGE);
	meta_lockset_add(&ls, src->bucket);
	meta_lockset_add(&ls, dst->bucket);
	meta_lockset_add(&ls, aq_ino_bucket(src->d.ino));
	if (dst->exists)
		meta_lockset_add(&ls, aq_ino_bucket(dst->d.ino));
	for (;;) {
		if (dirlock)
			pthread_mutex_lock(&m->rename_lock);
		meta_lockset_lock(m, &ls);
		rc = read_side(m, src);
		if (rc == 0)
			rc = read_side(m, dst);
		if (rc)
			break;
		bool same = src->exists && src->d.ino == peek_s.ino && dst->exists == peek_dexists &&
			    (!dst->exists || dst->d.ino == peek_d.ino);
		if (same || (ls.all && dirlock)) {
			rc = rename_locked(m, cr, src, dst, flags, ls.all, wb, scratch, &removed_dir);
			break;
		}
		/* The entries changed between peek and lock: retry holding everything. */
		meta_lockset_unlock(m, &ls);
		if (dirlock)
			pthread_mutex_unlock(&m->rename_lock);
		ls.all = true;
		dirlock = true;
	}
	if (rc == 0 && removed_dir)
		meta_count_dropped(m, dst->d.ino); /* under the locks: counts[] is guarded by them */
	meta_lockset_unlock(m, &ls);
	if (dirlock)
		pthread_mutex_unlock(&m->rename_lock);
out:
	rocksdb_writebatch_destroy(wb);
	free(src->parent);
	free(src->in);
	free(dst->parent);
	free(dst->in);
	free(src);
	free(dst);
	free(scratch);
	return rc;
}

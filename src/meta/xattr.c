/*
 * xattr.c - extended attributes: one 'X' row per (inode, name), in the inode's bucket.
 * "user." needs read (get, list) or write (set, remove) permission on the inode;
 * "trusted." is root's; "security." and "system." anyone may read, as on Linux (ls -l
 * asks for security.selinux and system.posix_acl_access), only root may change, but for
 * the removal of security.capability by a writer (caps_drop_perm). Other
 * namespaces are not supported. In "system." only the two POSIX ACLs may be set, by the
 * inode's owner or root, and a set means what it means to the kernel (acl_prepare,
 * acl.c); any other name there is EOPNOTSUPP.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "meta/meta_internal.h"

static bool has_prefix(const char *name, const char *prefix)
{
	return strncmp(name, prefix, strlen(prefix)) == 0;
}

/* Returns 0 when cr may read (write=false) or change the attribute name of a. */
static int xattr_allowed(struct meta_store *m, const struct aq_cred *cr, const struct aq_attr *a, const char *name,
			 bool write)
{
	if (has_prefix(name, "user.")) {
		/* As Linux: user attributes only on files and directories. */
		if (!S_ISREG(a->mode) && !S_ISDIR(a->mode))
			return write ? -EPERM : -ENODATA;
		return meta_perm(m, cr, a, write ? W_OK : R_OK);
	}
	if (!write && (has_prefix(name, "security.") || has_prefix(name, "system.")))
		return 0;
	if (has_prefix(name, "trusted.") || has_prefix(name, "security.") || has_prefix(name, "system."))
		return meta_is_root(cr) ? 0 : -EPERM;
	return -EOPNOTSUPP;
}

/* 0 when cr may remove security.capability from a: its owner, or anyone who may write it. */
static int caps_drop_perm(struct meta_store *m, const struct aq_cred *cr, const struct aq_attr *a)
{
	return meta_is_root(cr) || cr->uid == a->uid ? 0 : meta_perm(m, cr, a, W_OK);
}

static int check_xname(const char *name, size_t *len)
{
	if (name == NULL)
		return -EINVAL;
	*len = strnlen(name, AQ_XATTR_NAME_MAX + 1);
	if (*len == 0)
		return -EINVAL;
	if (*len > AQ_XATTR_NAME_MAX)
		return -ERANGE;
	return 0;
}

int meta_xattr_each(struct meta_store *m, uint64_t ino,
		    int (*fn)(void *arg, const char *key, size_t klen, const char *name, size_t nlen), void *arg)
{
	uint8_t prefix[META_XATTR_KEY_MAX], upper[META_XATTR_KEY_MAX];
	size_t plen = meta_key_xattr(prefix, ino, "", 0);
	/* Bounded to the inode's rows: past them may lie the deleted rows of other inodes'
	 * attributes, which an unbounded iterator steps over one by one before it finds the
	 * next live row (a setxattr took milliseconds after another file's were removed). */
	AQ_ASSERT(ino < UINT64_MAX);
	memcpy(upper, prefix, plen);
	put_be64(upper + plen - 8, ino + 1);
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();
	rocksdb_readoptions_set_iterate_upper_bound(ro, (const char *)upper, plen);
	rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, ro);
	int rc = 0;
	for (rocksdb_iter_seek(it, (const char *)prefix, plen); rocksdb_iter_valid(it) && rc == 0;
	     rocksdb_iter_next(it)) {
		size_t klen;
		const char *k = rocksdb_iter_key(it, &klen);
		if (klen < plen || memcmp(k, prefix, plen) != 0)
			break;
		if (klen == plen)
			continue; /* the summary row */
		AQ_ASSERT(klen - plen <= AQ_XATTR_NAME_MAX);
		rc = fn(arg, k, klen, k + plen, klen - plen);
	}
	int irc = meta_iter_error(it, "xattr scan");
	rocksdb_iter_destroy(it);
	rocksdb_readoptions_destroy(ro);
	return irc ? irc : rc;
}

struct list_fill {
	bool root;
	char *buf;
	size_t size, total;
};

static int list_one(void *arg, const char *key, size_t klen, const char *name, size_t nlen)
{
	struct list_fill *lf = arg;
	/* trusted.* is invisible to others, as on Linux. */
	if (!lf->root && nlen >= 8 && memcmp(name, "trusted.", 8) == 0)
		return 0;
	if (lf->size) {
		if (lf->total + nlen + 1 > lf->size)
			return -ERANGE;
		memcpy(lf->buf + lf->total, name, nlen);
		lf->buf[lf->total + nlen] = '\0';
	}
	lf->total += nlen + 1;
	return 0;
}

/* An inode's summary row, at the bare prefix (a name no attribute may have): how many
 * attributes it has and their names' bytes, NULs included, so that a set checks
 * listxattr's limit without reading them all (stress-ng sets thousands on one file).
 * A store from before the summary rows has none: the first change counts the rows. */
#define XATTR_SUM_VERSION 1
#define XATTR_SUM_LEN 9

struct xattr_sum {
	uint32_t count, names;
};

static int count_one(void *arg, const char *key, size_t klen, const char *name, size_t nlen)
{
	struct xattr_sum *sum = arg;
	sum->count++;
	sum->names += (uint32_t)nlen + 1;
	return 0;
}

/* Under the inode's bucket lock. */
static int xattr_sum_read(struct meta_store *m, const struct meta_inode *in, uint64_t ino, struct xattr_sum *sum)
{
	*sum = (struct xattr_sum){ 0 };
	if (!(in->a.flags & AQ_ATTR_XATTRS))
		return 0;
	uint8_t key[META_XATTR_KEY_MAX], v[XATTR_SUM_LEN];
	size_t vlen = 0;
	int rc = meta_get(m, key, meta_key_xattr(key, ino, "", 0), v, sizeof v, &vlen);
	if (rc < 0)
		return rc;
	if (rc == 1 && vlen == XATTR_SUM_LEN && v[0] == XATTR_SUM_VERSION) {
		sum->count = get_le32(v + 1);
		sum->names = get_le32(v + 5);
		return 0;
	}
	if (rc == 1)
		log_warn("meta: xattr summary of inode %llx unreadable; counting its rows", (unsigned long long)ino);
	return meta_xattr_each(m, ino, count_one, sum);
}

static void xattr_sum_put(rocksdb_writebatch_t *wb, uint64_t ino, const struct xattr_sum *sum)
{
	uint8_t key[META_XATTR_KEY_MAX], v[XATTR_SUM_LEN];
	size_t klen = meta_key_xattr(key, ino, "", 0);
	if (sum->count == 0) {
		rocksdb_writebatch_delete(wb, (const char *)key, klen);
		return;
	}
	v[0] = XATTR_SUM_VERSION;
	put_le32(v + 1, sum->count);
	put_le32(v + 5, sum->names);
	rocksdb_writebatch_put(wb, (const char *)key, klen, (const char *)v, sizeof v);
}

void meta_xattrs_put_new(rocksdb_writebatch_t *wb, uint64_t ino, const char *const *names, const void *const *values,
			 const size_t *lens, uint32_t n)
{
	struct xattr_sum sum = { 0 };
	for (uint32_t i = 0; i < n; i++) {
		uint8_t key[META_XATTR_KEY_MAX];
		size_t nlen = strlen(names[i]);
		size_t klen = meta_key_xattr(key, ino, names[i], nlen);
		rocksdb_writebatch_put(wb, (const char *)key, klen, values[i], lens[i]);
		sum.count++;
		sum.names += (uint32_t)nlen + 1;
	}
	xattr_sum_put(wb, ino, &sum);
}

/* 1 for the access ACL's name, 2 for the default ACL's, else 0. */
static int acl_kind(const char *name)
{
	return strcmp(name, meta_acl_access) == 0 ? 1 : strcmp(name, meta_acl_default) == 0 ? 2 : 0;
}

/* An ACL set (*value; none, or no bytes, removes it, as on Linux) on in, read under its
 * bucket lock: who may (the owner or root), whether the bytes are an ACL, and what the
 * change stores, the kernel's way for a local file system: an access ACL sets the
 * mode's bits (and drops setgid for a caller outside the file's group) and is not stored
 * when the mode says all of it; a default ACL goes on directories only. *value becomes
 * what to store (the ACL as the kernel would write it back, in enc) or NULL to remove
 * the row; in's mode and flags are updated. */
static int acl_prepare(const struct aq_cred *cr, struct meta_inode *in, bool dflt, const void **value, size_t *size,
		       uint8_t *enc)
{
	if (!meta_is_root(cr) && cr->uid != in->a.uid)
		return -EPERM;
	if (*value && *size == 0)
		*value = NULL;
	uint32_t flag = dflt ? AQ_ATTR_DACL : AQ_ATTR_ACL;
	if (dflt && !S_ISDIR(in->a.mode))
		return *value ? -EACCES : 0;
	if (S_ISLNK(in->a.mode))
		return -EOPNOTSUPP;
	if (*value) {
		struct meta_acl *acl = aq_malloc(sizeof(*acl));
		int rc = meta_acl_decode(*value, *size, acl);
		if (rc == 1) { /* no entries: a removal */
			rc = 0;
			*value = NULL;
		} else if (rc == 0 && !dflt) {
			uint32_t mode = in->a.mode;
			if (meta_acl_mode(acl, &mode))
				*value = NULL;
			if (!meta_is_root(cr) && !meta_in_group(cr, in->a.gid))
				mode &= ~(uint32_t)S_ISGID;
			in->a.mode = mode;
		}
		if (rc == 0 && *value)
			*size = meta_acl_encode(acl, enc), *value = enc;
		free(acl);
		if (rc)
			return rc;
	}
	if (*value)
		in->a.flags |= flag;
	else
		in->a.flags &= ~flag;
	return 0;
}

/* set (value != NULL) or remove (value == NULL) under the inode's bucket lock. The
 * inode's AQ_ATTR_XATTRS flag says whether any are left: a client that sees it clear
 * answers getxattr itself (ls -l asks two per file). */
static int xattr_change(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, const char *name,
			const void *value, size_t size, uint32_t flags)
{
	size_t nlen;
	int rc = check_xname(name, &nlen);
	if (rc)
		return rc;
	if (value && size > AQ_XATTR_VALUE_MAX)
		return -E2BIG;
	if (flags & ~(AQ_XATTR_CREATE | AQ_XATTR_REPLACE))
		return -EINVAL;
	if (aq_ino_bucket(ino) >= m->nbuckets)
		return -ENOENT;
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen = meta_key_xattr(key, ino, name, nlen);
	uint8_t *enc = aq_malloc(META_ACL_BYTES_MAX);
	struct meta_inode *in = aq_malloc(sizeof(*in));
	rocksdb_writebatch_t *wb = meta_batch_new();
	struct meta_lockset ls = { 0 };
	meta_lockset_add(&ls, aq_ino_bucket(ino));
	meta_lockset_lock(m, &ls);
	rc = meta_read_inode(m, ino, in);
	if (rc)
		goto unlock;
	/* Linux drops a file's capabilities when someone who may write it writes, truncates
	 * or chowns it: the kernel asks the mount to remove security.capability as that
	 * user (and refuses the system call itself to anyone without CAP_SETFCAP). */
	int acl = acl_kind(name);
	uint32_t mode = in->a.mode;
	if (acl)
		rc = acl_prepare(cr, in, acl == 2, &value, &size, enc);
	else if (!value && strcmp(name, "security.capability") == 0)
		rc = caps_drop_perm(m, cr, &in->a);
	else
		rc = xattr_allowed(m, cr, &in->a, name, true);
	if (!rc && value)
		rc = meta_space_check(m); /* a set, once it is allowed */
	if (rc)
		goto unlock;
	rc = meta_get(m, key, klen, NULL, 0, NULL);
	if (rc < 0)
		goto unlock;
	bool exists = rc == 1;
	if (acl && !value && !exists) {
		/* no ACL to remove (nor one the mode says whole to store): as ext4, not an
		 * error, and nothing changes but the mode it set */
		rc = 0;
		if (in->a.mode == mode)
			goto unlock;
		in->a.ctime_ns = aq_now_ns();
		meta_put_inode(wb, in);
		rc = meta_commit_op(m, wb, 0);
		goto unlock;
	}
	struct xattr_sum sum = { 0 }; /* read when a name comes or goes */
	rc = exists != (value != NULL) ? xattr_sum_read(m, in, ino, &sum) : 0;
	if (rc)
		goto unlock;
	if (value) {
		if ((flags & AQ_XATTR_CREATE) && exists) {
			rc = -EEXIST;
			goto unlock;
		}
		if ((flags & AQ_XATTR_REPLACE) && !exists) {
			rc = -ENODATA;
			goto unlock;
		}
		if (!exists) {
			/* listxattr(2) answers at most XATTR_LIST_MAX bytes of names: one it could
			 * not list is refused, as ext4 refuses one it has no room for */
			if (sum.names + nlen + 1 > AQ_XATTR_LIST_MAX) {
				rc = -ENOSPC;
				goto unlock;
			}
			sum.count++;
			sum.names += (uint32_t)nlen + 1;
			xattr_sum_put(wb, ino, &sum);
		}
		rocksdb_writebatch_put(wb, (const char *)key, klen, (const char *)value, size);
		in->a.flags |= AQ_ATTR_XATTRS;
	} else {
		if (!exists) {
			rc = -ENODATA;
			goto unlock;
		}
		rocksdb_writebatch_delete(wb, (const char *)key, klen);
		if (sum.count <= 1 || sum.names <= nlen + 1) {
			/* the last one goes, or a summary that cannot be right: count the rows
			 * (this one among them) before the flag says there are none */
			sum = (struct xattr_sum){ 0 };
			rc = meta_xattr_each(m, ino, count_one, &sum);
			if (rc)
				goto unlock;
			AQ_ASSERT(sum.count >= 1 && sum.names >= nlen + 1);
		}
		sum.count--;
		sum.names -= (uint32_t)nlen + 1;
		xattr_sum_put(wb, ino, &sum);
		if (sum.count == 0)
			in->a.flags &= ~AQ_ATTR_XATTRS;
	}
	in->a.ctime_ns = aq_now_ns();
	meta_put_inode(wb, in);
	rc = meta_commit_op(m, wb, 0);
unlock:
	meta_lockset_unlock(m, &ls);
	rocksdb_writebatch_destroy(wb);
	free(in);
	free(enc);
	return rc;
}

int meta_setxattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, const char *name, const void *value,
		  size_t size, uint32_t flags)
{
	static const char empty;
	if (name && has_prefix(name, "system.") && !acl_kind(name))
		return -EOPNOTSUPP;
	return xattr_change(m, cr, ino, name, value ? value : &empty, value ? size : 0, flags);
}

int meta_removexattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, const char *name)
{
	return xattr_change(m, cr, ino, name, NULL, 0, 0);
}

int meta_getxattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, const char *name, void *buf,
		  size_t size)
{
	size_t nlen, vlen = 0;
	int rc = check_xname(name, &nlen);
	if (rc)
		return rc;
	struct aq_attr a;
	rc = meta_attr_of(m, ino, &a);
	if (rc)
		return rc;
	rc = xattr_allowed(m, cr, &a, name, false);
	if (rc)
		return rc;
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen = meta_key_xattr(key, ino, name, nlen);
	rc = meta_get(m, key, klen, size ? buf : NULL, size, &vlen);
	if (rc <= 0)
		return rc == 0 ? -ENODATA : rc;
	AQ_ASSERT(vlen <= AQ_XATTR_VALUE_MAX);
	if (size && vlen > size)
		return -ERANGE;
	return (int)vlen;
}

int meta_listxattr(struct meta_store *m, const struct aq_cred *cr, uint64_t ino, char *buf, size_t size)
{
	struct aq_attr a;
	int rc = meta_attr_of(m, ino, &a);
	if (rc)
		return rc;
	rc = meta_perm(m, cr, &a, R_OK);
	if (rc)
		return rc;
	struct list_fill lf = {.root = meta_is_root(cr), .buf = buf, .size = size};
	rc = meta_xattr_each(m, ino, list_one, &lf);
	return rc ? rc : (int)lf.total;
}

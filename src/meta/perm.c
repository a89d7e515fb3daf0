/*
 * perm.c - POSIX permission checks, done by the server against the caller's aq_cred.
 * A NULL cred means an internal caller and is treated as root.
 */
#include <unistd.h>

#include "meta/meta_internal.h"

bool meta_in_group(const struct aq_cred *cr, uint32_t gid)
{
	if (cr == NULL)
		return true;
	if (cr->gid == gid)
		return true;
	uint32_t n = MIN(cr->ngroups, (uint32_t)ARRAY_SIZE(cr->groups)); /* ngroups came off the wire */
	for (uint32_t i = 0; i < n; i++)
		if (cr->groups[i] == gid)
			return true;
	return false;
}

/* mask: R_OK|W_OK|X_OK. Returns 0 or -EACCES. Root bypasses everything except that
 * executing a non-directory needs at least one x bit, as Linux. An inode with an access
 * ACL is judged by it (acl.c), which costs a read of its row. */
int meta_perm(struct meta_store *m, const struct aq_cred *cr, const struct aq_attr *a, uint32_t mask)
{
	mask &= R_OK | W_OK | X_OK;
	if (meta_is_root(cr)) {
		if ((mask & X_OK) && !S_ISDIR(a->mode) && !(a->mode & 0111))
			return -EACCES;
		return 0;
	}
	return a->flags & AQ_ATTR_ACL ? meta_acl_perm(m, cr, a, mask) : meta_mode_perm(cr, a, mask);
}

/* The mode's owner, group and other bits alone; cr is not root. */
int meta_mode_perm(const struct aq_cred *cr, const struct aq_attr *a, uint32_t mask)
{
	uint32_t bits;
	if (cr->uid == a->uid)
		bits = (a->mode >> 6) & 7;
	else if (meta_in_group(cr, a->gid))
		bits = (a->mode >> 3) & 7;
	else
		bits = a->mode & 7;
	return (mask & ~bits) ? -EACCES : 0;
}

/* In a sticky directory only the victim's owner, the directory's owner or root may
 * remove or rename an entry. Returns 0 or -EPERM. */
int meta_sticky_ok(const struct aq_cred *cr, const struct aq_attr *dir, const struct aq_attr *victim)
{
	if (!(dir->mode & S_ISVTX) || meta_is_root(cr))
		return 0;
	if (cr->uid == victim->uid || cr->uid == dir->uid)
		return 0;
	return -EPERM;
}

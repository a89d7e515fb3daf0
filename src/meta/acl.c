/*
 * acl.c - POSIX ACLs, as Linux keeps them (fs/posix_acl.c): an access ACL in the xattr
 * system.posix_acl_access and a directory's default ACL in system.posix_acl_default,
 * each in the kernel's xattr format (a version word, then tag u16, perm u16, id u32 per
 * entry, little-endian), stored as the inode's other xattrs are. What the kernel does
 * for a local file system the server does here, since a FUSE file system's kernel side
 * leaves it to the file system:
 * - the mode's permission bits mirror the access ACL (owner, mask or group, other): a
 *   set changes the mode, a chmod changes the ACL, and an ACL the mode says whole is
 *   not stored;
 * - a new inode in a directory with a default ACL takes it (its access ACL, and a
 *   directory's default ACL too) in place of the caller's umask;
 * - permission checks read the access ACL of an inode flagged AQ_ATTR_ACL.
 */
#include <unistd.h>

#include "meta/meta_internal.h"

#define ACL_VERSION 2
#define ACL_UNDEFINED_ID 0xffffffffu
enum { ACL_USER_OBJ = 0x01, ACL_USER = 0x02, ACL_GROUP_OBJ = 0x04, ACL_GROUP = 0x08, ACL_MASK = 0x10,
       ACL_OTHER = 0x20 };

const char meta_acl_access[] = "system.posix_acl_access";
const char meta_acl_default[] = "system.posix_acl_default";

/* Checks the order and completeness Linux's posix_acl_valid asks: one owner, named users
 * by ascending uid, one owning group, named groups by ascending gid, a mask (required
 * with any named entry), one other. */
static int acl_valid(const struct meta_acl *acl)
{
	uint32_t state = ACL_USER_OBJ, last = 0;
	bool named = false, any = false;
	for (uint32_t i = 0; i < acl->n; i++) {
		const struct meta_acl_entry *e = &acl->e[i];
		if (e->perm & ~7u)
			return -EINVAL;
		switch (e->tag) {
		case ACL_USER_OBJ:
			if (state != ACL_USER_OBJ)
				return -EINVAL;
			state = ACL_USER;
			any = false;
			break;
		case ACL_USER:
		case ACL_GROUP:
			if (state != e->tag || e->id == ACL_UNDEFINED_ID || (any && e->id <= last))
				return -EINVAL;
			last = e->id;
			any = named = true;
			break;
		case ACL_GROUP_OBJ:
			if (state != ACL_USER)
				return -EINVAL;
			state = ACL_GROUP;
			any = false;
			break;
		case ACL_MASK:
			if (state != ACL_GROUP)
				return -EINVAL;
			state = ACL_OTHER;
			break;
		case ACL_OTHER:
			if (state != ACL_OTHER && !(state == ACL_GROUP && !named))
				return -EINVAL;
			state = 0;
			break;
		default:
			return -EINVAL;
		}
	}
	return state == 0 ? 0 : -EINVAL;
}

int meta_acl_decode(const void *buf, size_t len, struct meta_acl *acl)
{
	const uint8_t *p = buf;
	/* the kernel's posix_acl_from_xattr: a version it does not know is EOPNOTSUPP, the
	 * header alone an empty ACL (its removal) */
	if (len < 4 || (len - 4) % 8)
		return -EINVAL;
	if (get_le32(p) != ACL_VERSION)
		return -EOPNOTSUPP;
	if ((len - 4) / 8 > META_ACL_ENTRIES_MAX)
		return -EINVAL;
	acl->n = (uint32_t)((len - 4) / 8);
	for (uint32_t i = 0; i < acl->n; i++) {
		const uint8_t *q = p + 4 + 8 * i;
		struct meta_acl_entry *e = &acl->e[i];
		e->tag = get_le16(q);
		e->perm = get_le16(q + 2);
		bool named = e->tag == ACL_USER || e->tag == ACL_GROUP;
		/* as the kernel writes it back: no id on the owner, group, mask and other */
		e->id = named ? get_le32(q + 4) : ACL_UNDEFINED_ID;
	}
	return acl->n == 0 ? 1 : acl_valid(acl);
}

size_t meta_acl_encode(const struct meta_acl *acl, uint8_t *buf)
{
	put_le32(buf, ACL_VERSION);
	for (uint32_t i = 0; i < acl->n; i++) {
		uint8_t *q = buf + 4 + 8 * i;
		put_le16(q, acl->e[i].tag);
		put_le16(q + 2, acl->e[i].perm);
		put_le32(q + 4, acl->e[i].id);
	}
	return 4 + 8 * (size_t)acl->n;
}

bool meta_acl_mode(const struct meta_acl *acl, uint32_t *mode)
{
	uint32_t bits = 0;
	bool whole = true;
	for (uint32_t i = 0; i < acl->n; i++) {
		const struct meta_acl_entry *e = &acl->e[i];
		switch (e->tag) {
		case ACL_USER_OBJ:
			bits |= e->perm << 6;
			break;
		case ACL_GROUP_OBJ:
			bits |= e->perm << 3;
			break;
		case ACL_OTHER:
			bits |= e->perm;
			break;
		case ACL_MASK: /* the group class's bits are the mask's */
			bits = (bits & ~070u) | (e->perm << 3);
			whole = false;
			break;
		default:
			whole = false;
		}
	}
	*mode = (*mode & ~0777u) | bits;
	return whole;
}

void meta_acl_chmod(struct meta_acl *acl, uint32_t mode)
{
	struct meta_acl_entry *group = NULL, *mask = NULL;
	for (uint32_t i = 0; i < acl->n; i++) {
		struct meta_acl_entry *e = &acl->e[i];
		if (e->tag == ACL_USER_OBJ)
			e->perm = (mode >> 6) & 7;
		else if (e->tag == ACL_GROUP_OBJ)
			group = e;
		else if (e->tag == ACL_MASK)
			mask = e;
		else if (e->tag == ACL_OTHER)
			e->perm = mode & 7;
	}
	AQ_ASSERT(group); /* a valid ACL has one */
	(mask ? mask : group)->perm = (mode >> 3) & 7;
}

bool meta_acl_inherit(struct meta_acl *acl, uint32_t *mode)
{
	uint32_t m = *mode & 0777;
	struct meta_acl_entry *group = NULL, *mask = NULL;
	bool whole = true;
	for (uint32_t i = 0; i < acl->n; i++) {
		struct meta_acl_entry *e = &acl->e[i];
		switch (e->tag) {
		case ACL_USER_OBJ:
			e->perm &= m >> 6;
			m &= (e->perm << 6) | 077;
			break;
		case ACL_OTHER:
			e->perm &= m & 7;
			m &= e->perm | 0770;
			break;
		case ACL_GROUP_OBJ:
			group = e;
			break;
		case ACL_MASK:
			mask = e;
			whole = false;
			break;
		default:
			whole = false;
		}
	}
	struct meta_acl_entry *g = mask ? mask : group;
	AQ_ASSERT(g);
	g->perm &= (m >> 3) & 7;
	m &= (g->perm << 3) | 0707;
	*mode = (*mode & ~0777u) | m;
	return whole;
}

/* Linux's posix_acl_permission: the owner's entry, else a named user's (through the
 * mask), else every group entry that matches (through the mask) until one grants all,
 * else other. */
static int acl_permits(const struct meta_acl *acl, const struct aq_cred *cr, const struct aq_attr *a,
		       uint32_t want)
{
	const struct meta_acl_entry *found = NULL, *mask = NULL;
	bool group_matched = false;
	for (uint32_t i = 0; i < acl->n; i++)
		if (acl->e[i].tag == ACL_MASK)
			mask = &acl->e[i];
	for (uint32_t i = 0; i < acl->n && !found; i++) {
		const struct meta_acl_entry *e = &acl->e[i];
		switch (e->tag) {
		case ACL_USER_OBJ:
			if (cr->uid == a->uid)
				return (e->perm & want) == want ? 0 : -EACCES; /* the mask does not apply */
			break;
		case ACL_USER:
			if (cr->uid == e->id)
				found = e;
			break;
		case ACL_GROUP_OBJ:
		case ACL_GROUP:
			if (meta_in_group(cr, e->tag == ACL_GROUP_OBJ ? a->gid : e->id)) {
				group_matched = true;
				if ((e->perm & want) == want)
					found = e;
			}
			break;
		case ACL_OTHER:
			if (group_matched)
				return -EACCES;
			return (e->perm & want) == want ? 0 : -EACCES;
		}
	}
	if (!found)
		return -EACCES;
	uint32_t perm = found->perm & (mask ? mask->perm : 7);
	return (perm & want) == want ? 0 : -EACCES;
}

int meta_acl_read(struct meta_store *m, uint64_t ino, const char *name, struct meta_acl *acl)
{
	uint8_t key[META_XATTR_KEY_MAX], v[META_ACL_BYTES_MAX];
	size_t vlen = 0;
	int rc = meta_get(m, key, meta_key_xattr(key, ino, name, strlen(name)), v, sizeof v, &vlen);
	if (rc <= 0)
		return rc;
	if (vlen > sizeof v || meta_acl_decode(v, vlen, acl)) {
		log_warn("meta: %s of inode %llx unreadable", name, (unsigned long long)ino);
		return -EIO;
	}
	return 1;
}

int meta_acl_perm(struct meta_store *m, const struct aq_cred *cr, const struct aq_attr *a, uint32_t mask)
{
	struct meta_acl *acl = aq_malloc(sizeof(*acl));
	int rc = meta_acl_read(m, a->ino, meta_acl_access, acl);
	if (rc == 1)
		rc = acl_permits(acl, cr, a, mask);
	else if (rc == 0)
		rc = meta_mode_perm(cr, a, mask); /* the flag outlived the row: the mode decides */
	free(acl);
	return rc;
}

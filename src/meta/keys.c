/*
 * keys.c - the metadata store's on-disk layout: key builders (big-endian, bucket first, so
 * a bucket sorts as one contiguous range and a directory's entries in a bucket sort by
 * name hash) and row codecs (little-endian, versioned, lengths checked on decode).
 * These values are stored on disk: changing any of them is a format change.
 */
#include "meta/meta_internal.h"

_Static_assert(AQ_BUCKETS_MAX <= 65536, "bucket id must fit the 16-bit key field");
_Static_assert(AQ_NAME_MAX <= 255, "dentry key buffer sized for 255-byte names");
_Static_assert(META_INODE_FIXED_LEN == 1 + 4 * 4 + 8 * 2 + 8 * 3 + 4 + 8 + 4 + 8 + 4, "inode row layout");

uint32_t meta_dentry_bucket(const struct meta_store *m, uint64_t parent, const char *name, size_t len)
{
	return (uint32_t)(aq_hash64(name, len, parent) % m->nbuckets);
}

/* A second hash, seeded differently, so that the position inside a bucket is not
 * correlated with the bucket choice. */
uint64_t meta_dentry_pos(uint64_t parent, const char *name, size_t len)
{
	return aq_hash64(name, len, parent ^ META_POS_SEED) >> (64 - META_POS_BITS);
}

static size_t key_head(uint8_t *buf, uint8_t type, uint32_t bucket)
{
	AQ_ASSERT(bucket < 65536);
	buf[0] = type;
	put_be16(buf + 1, (uint16_t)bucket);
	return 3;
}

size_t meta_key_inode(uint8_t *buf, uint64_t ino)
{
	size_t n = key_head(buf, MK_INODE, aq_ino_bucket(ino));
	put_be64(buf + n, ino);
	return n + 8;
}

size_t meta_key_dentry_prefix(uint8_t *buf, uint32_t bucket, uint64_t parent)
{
	size_t n = key_head(buf, MK_DENTRY, bucket);
	put_be64(buf + n, parent);
	return n + 8;
}

size_t meta_key_dentry(uint8_t *buf, uint32_t bucket, uint64_t parent, uint64_t pos, const char *name, size_t len)
{
	AQ_ASSERT(len <= AQ_NAME_MAX);
	AQ_ASSERT(pos <= META_POS_MASK);
	size_t n = meta_key_dentry_prefix(buf, bucket, parent);
	for (int i = 0; i < 6; i++)
		buf[n + i] = (uint8_t)(pos >> (40 - 8 * i));
	memcpy(buf + n + 6, name, len);
	return n + 6 + len;
}

size_t meta_key_partial(uint8_t *buf, uint32_t bucket, uint64_t dir)
{
	size_t n = key_head(buf, MK_PARTIAL, bucket);
	put_be64(buf + n, dir);
	return n + 8;
}

size_t meta_key_count(uint8_t *buf, uint32_t bucket)
{
	return key_head(buf, MK_COUNT, bucket);
}

/* Xattrs live in their inode's bucket so they move with it. */
size_t meta_key_xattr(uint8_t *buf, uint64_t ino, const char *name, size_t len)
{
	AQ_ASSERT(len <= AQ_XATTR_NAME_MAX);
	size_t n = key_head(buf, MK_XATTR, aq_ino_bucket(ino));
	put_be64(buf + n, ino);
	memcpy(buf + n + 8, name, len);
	return n + 8 + len;
}

size_t meta_key_orphan(uint8_t *buf, uint64_t ino)
{
	size_t n = key_head(buf, MK_ORPHAN, aq_ino_bucket(ino));
	put_be64(buf + n, ino);
	return n + 8;
}

size_t meta_key_seq(uint8_t *buf, uint32_t bucket)
{
	return key_head(buf, MK_SEQ, bucket);
}

size_t meta_key_log(uint8_t *buf, uint32_t bucket, uint64_t dir, uint64_t ts)
{
	size_t n = key_head(buf, MK_LOG, bucket);
	put_be64(buf + n, dir);
	put_be64(buf + n + 8, ts);
	return n + 16;
}

size_t meta_inode_encode(const struct meta_inode *ino, uint8_t *buf, size_t size)
{
	const struct aq_attr *a = &ino->a;
	size_t need = META_INODE_FIXED_LEN + ino->target_len;
	AQ_ASSERT(size >= need);
	AQ_ASSERT(ino->target_len <= AQ_PATH_MAX);
	uint8_t *p = buf;
	*p++ = META_INODE_VERSION;
	put_le32(p, a->mode), p += 4;
	put_le32(p, a->uid), p += 4;
	put_le32(p, a->gid), p += 4;
	put_le32(p, a->nlink), p += 4;
	put_le64(p, a->size), p += 8;
	put_le64(p, a->blocks), p += 8;
	put_le64(p, (uint64_t)a->atime_ns), p += 8;
	put_le64(p, (uint64_t)a->mtime_ns), p += 8;
	put_le64(p, (uint64_t)a->ctime_ns), p += 8;
	put_le32(p, a->rdev), p += 4;
	put_le64(p, a->generation), p += 8;
	put_le32(p, a->chunk_size), p += 4;
	put_le64(p, ino->parent), p += 8;
	put_le32(p, a->flags), p += 4;
	AQ_ASSERT((size_t)(p - buf) == META_INODE_FIXED_LEN);
	memcpy(p, ino->target, ino->target_len);
	return need;
}

int meta_inode_decode(const uint8_t *buf, size_t len, uint64_t ino_nr, struct meta_inode *out)
{
	/* version 1 rows (no flags word) are read as "may have xattrs" */
	size_t fixed = buf && len && buf[0] == 1 ? META_INODE_FIXED_LEN_V1 : META_INODE_FIXED_LEN;
	if (len < fixed || len > fixed + AQ_PATH_MAX || (buf[0] != 1 && buf[0] != META_INODE_VERSION))
		return -EIO;
	struct aq_attr *a = &out->a;
	const uint8_t *p = buf + 1;
	memset(a, 0, sizeof(*a));
	a->ino = ino_nr;
	a->mode = get_le32(p), p += 4;
	a->uid = get_le32(p), p += 4;
	a->gid = get_le32(p), p += 4;
	a->nlink = get_le32(p), p += 4;
	a->size = get_le64(p), p += 8;
	a->blocks = get_le64(p), p += 8;
	a->atime_ns = (int64_t)get_le64(p), p += 8;
	a->mtime_ns = (int64_t)get_le64(p), p += 8;
	a->ctime_ns = (int64_t)get_le64(p), p += 8;
	a->rdev = get_le32(p), p += 4;
	a->generation = get_le64(p), p += 8;
	a->chunk_size = get_le32(p), p += 4;
	out->parent = get_le64(p), p += 8;
	if (fixed == META_INODE_FIXED_LEN)
		a->flags = get_le32(p), p += 4;
	else
		a->flags = AQ_ATTR_XATTRS;
	out->target_len = (uint32_t)(len - fixed);
	memcpy(out->target, p, out->target_len);
	return 0;
}

void meta_dentry_encode(const struct meta_dentry *d, uint8_t buf[META_DENTRY_VAL_LEN])
{
	put_le64(buf, d->ino);
	buf[8] = d->dtype;
	put_le64(buf + 9, d->created_ts);
}

int meta_dentry_decode(const uint8_t *buf, size_t len, struct meta_dentry *out)
{
	if (len != META_DENTRY_VAL_LEN)
		return -EIO;
	out->ino = get_le64(buf);
	out->dtype = buf[8];
	out->created_ts = get_le64(buf + 9);
	return 0;
}

void meta_partial_encode(const struct meta_partial *p, uint8_t buf[META_PARTIAL_VAL_LEN])
{
	put_le64(buf, (uint64_t)p->nentries);
	put_le64(buf + 8, (uint64_t)p->nsubdirs);
	put_le64(buf + 16, (uint64_t)p->mtime_ns);
	put_le64(buf + 24, (uint64_t)p->ctime_ns);
}

int meta_partial_decode(const uint8_t *buf, size_t len, struct meta_partial *out)
{
	if (len != META_PARTIAL_VAL_LEN)
		return -EIO;
	out->nentries = (int64_t)get_le64(buf);
	out->nsubdirs = (int64_t)get_le64(buf + 8);
	out->mtime_ns = (int64_t)get_le64(buf + 16);
	out->ctime_ns = (int64_t)get_le64(buf + 24);
	return 0;
}

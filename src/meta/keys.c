/*
 * keys.c - the metadata store's on-disk layout: key builders (big-endian, bucket first, so
 * a bucket sorts as one contiguous range and a directory's entries in a bucket sort by
 * name hash) and row codecs (little-endian, versioned, lengths checked on decode).
 * These values are stored on disk: changing any of them is a format change.
 */
#include "common/rbuf.h"
#include "meta/meta_internal.h"

_Static_assert(AQ_BUCKETS_MAX <= 65536, "bucket id must fit the 16-bit key field");
_Static_assert(AQ_NAME_MAX <= 255, "dentry key buffer sized for 255-byte names");
_Static_assert(META_INODE_FIXED_LEN_V2 == 1 + 4 * 4 + 8 * 2 + 8 * 3 + 4 + 8 + 4 + 8 + 4, "version 2 inode rows");
_Static_assert(META_INODE_FIXED_MAX == 1 + 5 * 4 + 10 * 2 + 8 + 10 * 2 + 5 + 8 + 5 + 10 + 5, "version 3 inode rows, at most");

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

uint64_t meta_key_dentry_pos(const uint8_t *key)
{
	uint64_t pos = 0;
	for (int i = 0; i < 6; i++)
		pos = pos << 8 | key[META_DENTRY_PREFIX_LEN + i];
	return pos;
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

/* Inode rows, version 3: version u8; mode, uid, gid, nlink, size, blocks as varints
 * (LEB128); mtime i64; atime and ctime as zigzag varints of their distance from mtime
 * (one byte each for a file not touched since it was made); rdev varint; generation u64;
 * chunk_size, parent, flags varints; then a symlink's target. A new file's row takes
 * 34-36 bytes where version 2's fixed 85 did: every create writes one, and every flush
 * and compaction of a big directory's store carries it. */
static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
	for (; v >= 0x80; v >>= 7)
		*p++ = (uint8_t)(v | 0x80);
	*p++ = (uint8_t)v;
	return p;
}

static uint64_t zigzag(int64_t v) { return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63); }
static int64_t unzigzag(uint64_t u) { return (int64_t)((u >> 1) ^ (0 - (u & 1))); }

/* t - base and base + d, wrapping: any two times of the full i64 range round-trip */
static int64_t since(int64_t t, int64_t base) { return (int64_t)((uint64_t)t - (uint64_t)base); }
static int64_t after(int64_t base, int64_t d) { return (int64_t)((uint64_t)base + (uint64_t)d); }

size_t meta_inode_encode(const struct meta_inode *ino, uint8_t *buf, size_t size)
{
	const struct aq_attr *a = &ino->a;
	AQ_ASSERT(size >= META_INODE_FIXED_MAX + ino->target_len);
	AQ_ASSERT(ino->target_len <= AQ_PATH_MAX);
	uint8_t *p = buf;
	*p++ = META_INODE_VERSION;
	p = put_varint(p, a->mode);
	p = put_varint(p, a->uid);
	p = put_varint(p, a->gid);
	p = put_varint(p, a->nlink);
	p = put_varint(p, a->size);
	p = put_varint(p, a->blocks);
	put_le64(p, (uint64_t)a->mtime_ns), p += 8;
	p = put_varint(p, zigzag(since(a->atime_ns, a->mtime_ns)));
	p = put_varint(p, zigzag(since(a->ctime_ns, a->mtime_ns)));
	p = put_varint(p, a->rdev);
	put_le64(p, a->generation), p += 8;
	p = put_varint(p, a->chunk_size);
	p = put_varint(p, ino->parent);
	p = put_varint(p, a->flags);
	AQ_ASSERT((size_t)(p - buf) <= META_INODE_FIXED_MAX);
	memcpy(p, ino->target, ino->target_len);
	return (size_t)(p - buf) + ino->target_len;
}

/* A 32-bit field of a version-3 row: a larger value is a corrupt row. */
static uint32_t rd_varint32(struct rbuf *r)
{
	uint64_t v = rbuf_varint(r);
	r->err |= v > UINT32_MAX;
	return (uint32_t)v;
}

/* Versions 1 and 2: fixed fields (version 1 without flags: read as "may have xattrs"). */
static void decode_fixed(struct rbuf *r, uint8_t version, struct meta_inode *out)
{
	struct aq_attr *a = &out->a;
	a->mode = rbuf_u32(r);
	a->uid = rbuf_u32(r);
	a->gid = rbuf_u32(r);
	a->nlink = rbuf_u32(r);
	a->size = rbuf_u64(r);
	a->blocks = rbuf_u64(r);
	a->atime_ns = (int64_t)rbuf_u64(r);
	a->mtime_ns = (int64_t)rbuf_u64(r);
	a->ctime_ns = (int64_t)rbuf_u64(r);
	a->rdev = rbuf_u32(r);
	a->generation = rbuf_u64(r);
	a->chunk_size = rbuf_u32(r);
	out->parent = rbuf_u64(r);
	a->flags = version == 1 ? AQ_ATTR_XATTRS : rbuf_u32(r);
}

static void decode_v3(struct rbuf *r, struct meta_inode *out)
{
	struct aq_attr *a = &out->a;
	a->mode = rd_varint32(r);
	a->uid = rd_varint32(r);
	a->gid = rd_varint32(r);
	a->nlink = rd_varint32(r);
	a->size = rbuf_varint(r);
	a->blocks = rbuf_varint(r);
	a->mtime_ns = (int64_t)rbuf_u64(r);
	a->atime_ns = after(a->mtime_ns, unzigzag(rbuf_varint(r)));
	a->ctime_ns = after(a->mtime_ns, unzigzag(rbuf_varint(r)));
	a->rdev = rd_varint32(r);
	a->generation = rbuf_u64(r);
	a->chunk_size = rd_varint32(r);
	out->parent = rbuf_varint(r);
	a->flags = rd_varint32(r);
}

int meta_inode_decode(const uint8_t *buf, size_t len, uint64_t ino_nr, struct meta_inode *out)
{
	if (!buf || !len || buf[0] < 1 || buf[0] > META_INODE_VERSION)
		return -EIO;
	struct rbuf r;
	rbuf_init(&r, buf + 1, len - 1);
	memset(&out->a, 0, sizeof(out->a));
	out->a.ino = ino_nr;
	if (buf[0] == 3)
		decode_v3(&r, out);
	else
		decode_fixed(&r, buf[0], out);
	size_t left = r.len - r.pos;
	if (r.err || left > AQ_PATH_MAX)
		return -EIO;
	out->target_len = (uint32_t)left;
	memcpy(out->target, rbuf_bytes(&r, left), left);
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

/*
 * proto.c - frame header and message codecs. Every opcode's payload is a fixed sequence
 * of fields drawn from one ordered list; req_fields[] and reply_fields[] say which. The
 * decoder reads through a bounds-checked cursor and rejects trailing bytes, so a frame
 * either decodes completely or not at all.
 */
#include "proto/proto.h"
#include <limits.h>

_Static_assert(PROTO_HDR_SIZE == 32, "header layout");
_Static_assert(OP_BATCH < OP_MAX_ && OP_TIER < OP_MAX_, "opcode table size");
_Static_assert(PROTO_TIER_SIZE == 9 * 8, "struct proto_tier on the wire");
_Static_assert(PROTO_TIER_INOS_MAX * 8ull <= AQ_FRAME_MAX, "a DEMOTE body fits a frame");

const char *proto_op_name(uint16_t op)
{
	switch (op) {
#define PX(name, num) case num: return #name;
	PROTO_OPS(PX)
#undef PX
	}
	return "UNKNOWN";
}

uint16_t proto_op_named(const char *name, size_t len)
{
	for (uint16_t op = 1; op < OP_MAX_; op++)
		if (strlen(proto_op_name(op)) == len && !strncmp(proto_op_name(op), name, len))
			return op;
	return 0;
}

void proto_hdr_encode(uint8_t out[PROTO_HDR_SIZE], const struct proto_hdr *h)
{
	put_le32(out, h->magic);
	put_le16(out + 4, h->version);
	put_le16(out + 6, h->op);
	put_le64(out + 8, h->req_id);
	put_le32(out + 16, h->epoch);
	put_le16(out + 20, h->status);
	put_le16(out + 22, h->flags);
	put_le32(out + 24, h->payload_len);
	put_le32(out + 28, 0);
}

int proto_hdr_decode(const uint8_t *in, size_t len, struct proto_hdr *h)
{
	if (len < PROTO_HDR_SIZE)
		return -EPROTO;
	h->magic = get_le32(in);
	h->version = get_le16(in + 4);
	h->op = get_le16(in + 6);
	h->req_id = get_le64(in + 8);
	h->epoch = get_le32(in + 16);
	h->status = get_le16(in + 20);
	h->flags = get_le16(in + 22);
	h->payload_len = get_le32(in + 24);
	if (h->magic != PROTO_MAGIC || get_le32(in + 28) != 0)
		return -EPROTO;
	if (h->version != PROTO_VERSION)
		return -AQ_EBAD_VERSION;
	if (h->payload_len > AQ_FRAME_MAX)
		return -EPROTO;
	return 0;
}

void wbuf_init(struct wbuf *w, size_t cap)
{
	w->cap = cap ? cap : 64;
	w->p = aq_malloc(w->cap);
	w->len = 0;
}
void wbuf_free(struct wbuf *w)
{
	free(w->p);
	w->p = NULL;
	w->len = w->cap = 0;
}
void wbuf_reserve(struct wbuf *w, size_t more)
{
	if (w->len + more <= w->cap)
		return;
	size_t cap = w->cap ? w->cap : 64;
	while (cap < w->len + more)
		cap *= 2;
	w->p = aq_realloc(w->p, cap);
	w->cap = cap;
}
void wbuf_put(struct wbuf *w, const void *data, size_t n)
{
	wbuf_reserve(w, n);
	if (n)
		memcpy(w->p + w->len, data, n);
	w->len += n;
}
void wbuf_u8(struct wbuf *w, uint8_t v) { wbuf_put(w, &v, 1); }
void wbuf_u16(struct wbuf *w, uint16_t v) { wbuf_reserve(w, 2); put_le16(w->p + w->len, v); w->len += 2; }
void wbuf_u32(struct wbuf *w, uint32_t v) { wbuf_reserve(w, 4); put_le32(w->p + w->len, v); w->len += 4; }
void wbuf_u64(struct wbuf *w, uint64_t v) { wbuf_reserve(w, 8); put_le64(w->p + w->len, v); w->len += 8; }
void wbuf_str(struct wbuf *w, const void *s, size_t n)
{
	AQ_ASSERT(n <= UINT32_MAX);
	wbuf_u32(w, (uint32_t)n);
	wbuf_put(w, s, n);
}

void proto_attr_put(struct wbuf *w, const struct aq_attr *a)
{
	size_t start = w->len;
	wbuf_u64(w, a->ino);
	wbuf_u64(w, a->size);
	wbuf_u64(w, a->blocks);
	wbuf_u64(w, a->generation);
	wbuf_u64(w, (uint64_t)a->atime_ns);
	wbuf_u64(w, (uint64_t)a->mtime_ns);
	wbuf_u64(w, (uint64_t)a->ctime_ns);
	wbuf_u32(w, a->mode);
	wbuf_u32(w, a->nlink);
	wbuf_u32(w, a->uid);
	wbuf_u32(w, a->gid);
	wbuf_u32(w, a->rdev);
	wbuf_u32(w, a->chunk_size);
	wbuf_u32(w, a->flags);
	wbuf_u32(w, 0); /* reserved */
	AQ_ASSERT(w->len - start == PROTO_ATTR_SIZE);
}

void proto_attr_get(struct rbuf *r, struct aq_attr *a)
{
	a->ino = rbuf_u64(r);
	a->size = rbuf_u64(r);
	a->blocks = rbuf_u64(r);
	a->generation = rbuf_u64(r);
	a->atime_ns = (int64_t)rbuf_u64(r);
	a->mtime_ns = (int64_t)rbuf_u64(r);
	a->ctime_ns = (int64_t)rbuf_u64(r);
	a->mode = rbuf_u32(r);
	a->nlink = rbuf_u32(r);
	a->uid = rbuf_u32(r);
	a->gid = rbuf_u32(r);
	a->rdev = rbuf_u32(r);
	a->chunk_size = rbuf_u32(r);
	a->flags = rbuf_u32(r);
	(void)rbuf_u32(r);
}

void proto_lock_put(uint8_t out[PROTO_LOCK_SIZE], const struct aq_lock *l)
{
	put_le32(out, l->type);
	put_le32(out + 4, l->pid);
	put_le64(out + 8, l->start);
	put_le64(out + 16, l->end);
}

int proto_lock_get(const uint8_t *data, uint32_t len, struct aq_lock *l)
{
	if (len != PROTO_LOCK_SIZE)
		return -EPROTO;
	*l = (struct aq_lock){.type = get_le32(data), .pid = get_le32(data + 4), .start = get_le64(data + 8),
			      .end = get_le64(data + 16)};
	if (l->type > AQ_LK_UN || l->start > l->end || l->end > AQ_LK_END)
		return -EPROTO;
	return 0;
}

/* Request fields, in wire order. */
enum {
	F_CRED = 1u << 0, F_INO = 1u << 1, F_PARENT = 1u << 2, F_NAME = 1u << 3,
	F_NEWPARENT = 1u << 4, F_NAME2 = 1u << 5, F_MODE = 1u << 6, F_RDEV = 1u << 7,
	F_FLAGS = 1u << 8, F_MASK = 1u << 9, F_ATTR = 1u << 10, F_COOKIE = 1u << 11,
	F_SIZE = 1u << 12, F_OFF = 1u << 13, F_TIME = 1u << 14, F_MAX = 1u << 15,
	F_LEN = 1u << 16, F_TARGET = 1u << 17, F_IDX = 1u << 18, F_DATA = 1u << 19,
	F_TXN = 1u << 20,
	F_KNOWN = 1u << 31,
};

static uint32_t req_fields(uint16_t op)
{
	switch (op) {
	case OP_AUTH: return F_KNOWN | F_DATA;
	case OP_MAP: return F_KNOWN;
	case OP_LOOKUP: return F_KNOWN | F_CRED | F_PARENT | F_NAME;
	case OP_GETATTR: return F_KNOWN | F_CRED | F_INO;
	case OP_SETATTR: return F_KNOWN | F_CRED | F_INO | F_MASK | F_ATTR;
	case OP_MKNOD: return F_KNOWN | F_CRED | F_PARENT | F_NAME | F_MODE | F_RDEV | F_FLAGS | F_TXN;
	case OP_MKDIR: return F_KNOWN | F_CRED | F_PARENT | F_NAME | F_MODE | F_TXN;
	case OP_SYMLINK: return F_KNOWN | F_CRED | F_PARENT | F_NAME | F_NAME2 | F_TXN;
	case OP_READLINK: return F_KNOWN | F_CRED | F_INO;
	case OP_UNLINK: return F_KNOWN | F_CRED | F_PARENT | F_NAME | F_FLAGS | F_TXN;
	case OP_RMDIR: return F_KNOWN | F_CRED | F_PARENT | F_NAME | F_TXN;
	case OP_RENAME: return F_KNOWN | F_CRED | F_PARENT | F_NAME | F_NEWPARENT | F_NAME2 | F_FLAGS | F_TXN;
	case OP_LINK: return F_KNOWN | F_CRED | F_INO | F_NEWPARENT | F_NAME2 | F_TXN;
	case OP_ACCESS: return F_KNOWN | F_CRED | F_INO | F_MASK;
	case OP_OPEN: return F_KNOWN | F_CRED | F_INO | F_FLAGS;
	case OP_RELEASE: return F_KNOWN | F_CRED | F_INO;
	case OP_COMMIT_SIZE: return F_KNOWN | F_CRED | F_INO | F_SIZE | F_TIME;
	case OP_READDIR: return F_KNOWN | F_CRED | F_INO | F_COOKIE | F_MAX | F_FLAGS;
	case OP_CHANGES: return F_KNOWN | F_CRED | F_INO | F_COOKIE | F_MAX;
	case OP_SETXATTR: return F_KNOWN | F_CRED | F_INO | F_NAME | F_FLAGS | F_DATA | F_TXN;
	case OP_GETXATTR: return F_KNOWN | F_CRED | F_INO | F_NAME | F_LEN;
	case OP_LISTXATTR: return F_KNOWN | F_CRED | F_INO | F_LEN;
	case OP_REMOVEXATTR: return F_KNOWN | F_CRED | F_INO | F_NAME | F_TXN;
	case OP_STATFS: return F_KNOWN | F_CRED;
	case OP_FSYNC: return F_KNOWN | F_CRED | F_INO | F_FLAGS;
	case OP_WATCH: return F_KNOWN | F_COOKIE | F_FLAGS;
	case OP_REOPEN: return F_KNOWN | F_DATA;
	case OP_CHUNK_WRITE: return F_KNOWN | F_TARGET | F_INO | F_IDX | F_OFF | F_FLAGS | F_DATA | F_SIZE | F_TIME;
	case OP_CHUNK_READ: return F_KNOWN | F_TARGET | F_INO | F_IDX | F_OFF | F_LEN;
	case OP_OPEN_READ: return F_KNOWN | F_CRED | F_INO | F_FLAGS | F_OFF | F_LEN;
	case OP_OPEN_MAP: return F_KNOWN | F_CRED | F_INO | F_FLAGS | F_OFF | F_LEN | F_DATA; /* data: the client's boot id */
	case OP_LOCATE: return F_KNOWN | F_TARGET | F_INO | F_IDX | F_DATA; /* data: the client's boot id */
	case OP_BATCH: return F_KNOWN | F_MAX | F_DATA;
	case OP_TIER: return F_KNOWN | F_CRED | F_INO | F_FLAGS | F_DATA;
	case OP_LOCK: return F_KNOWN | F_INO | F_MODE | F_RDEV | F_FLAGS | F_COOKIE | F_SIZE | F_OFF | F_TIME;
	case OP_CHUNKS: return F_KNOWN | F_INO | F_IDX | F_MAX;
	}
	return 0;
}

bool proto_op_numbered(uint16_t op) { return req_fields(op) & F_TXN; }

void proto_req_encode(struct wbuf *w, const struct proto_req *r) { proto_req_encode_split(w, r, NULL); }

static void cred_put(struct wbuf *w, const struct aq_cred *cr)
{
	AQ_ASSERT(cr->ngroups <= ARRAY_SIZE(cr->groups));
	wbuf_u32(w, cr->uid);
	wbuf_u32(w, cr->gid);
	wbuf_u32(w, cr->ngroups);
	for (uint32_t i = 0; i < cr->ngroups; i++)
		wbuf_u32(w, cr->groups[i]);
}

static int cred_get(struct rbuf *rb, struct aq_cred *cr)
{
	cr->uid = rbuf_u32(rb);
	cr->gid = rbuf_u32(rb);
	cr->ngroups = rbuf_u32(rb);
	if (cr->ngroups > ARRAY_SIZE(cr->groups))
		return -EPROTO;
	for (uint32_t i = 0; i < cr->ngroups; i++)
		cr->groups[i] = rbuf_u32(rb);
	return 0;
}

void proto_req_encode_split(struct wbuf *w, const struct proto_req *r, size_t *data_at)
{
	uint32_t f = req_fields(r->op);
	AQ_ASSERT(f & F_KNOWN);
	if (f & F_CRED)
		cred_put(w, &r->cred);
	if (f & F_INO) wbuf_u64(w, r->ino);
	if (f & F_PARENT) wbuf_u64(w, r->parent);
	if (f & F_NAME) wbuf_str(w, r->name, r->name_len);
	if (f & F_NEWPARENT) wbuf_u64(w, r->newparent);
	if (f & F_NAME2) wbuf_str(w, r->name2, r->name2_len);
	if (f & F_MODE) wbuf_u32(w, r->mode);
	if (f & F_RDEV) wbuf_u32(w, r->rdev);
	if (f & F_FLAGS) wbuf_u32(w, r->flags);
	if (f & F_MASK) wbuf_u32(w, r->mask);
	if (f & F_ATTR) proto_attr_put(w, &r->attr);
	if (f & F_COOKIE) wbuf_u64(w, r->cookie);
	if (f & F_SIZE) wbuf_u64(w, r->size);
	if (f & F_OFF) wbuf_u64(w, r->off);
	if (f & F_TIME) wbuf_u64(w, (uint64_t)r->time_ns);
	if (f & F_MAX) wbuf_u32(w, r->max);
	if (f & F_LEN) wbuf_u32(w, r->len);
	if (f & F_TARGET) wbuf_u32(w, r->target);
	if (f & F_IDX) wbuf_u32(w, r->idx);
	if ((f & F_DATA) && data_at) {
		wbuf_u32(w, r->data_len);
		*data_at = w->len; /* the bytes go here on the wire */
	} else if (f & F_DATA) {
		wbuf_str(w, r->data, r->data_len);
	}
	if (f & F_TXN) {
		wbuf_u64(w, r->txn_client);
		wbuf_u64(w, r->txn_seq);
	}
	if (r->op == OP_CHUNK_WRITE && (r->flags & PROTO_CW_ATTRS)) { /* a trailer, after the bytes */
		cred_put(w, &r->cred);
		wbuf_u32(w, r->mask);
		proto_attr_put(w, &r->attr);
	}
}

/* A name off the wire: bounded, and no NUL inside (the store keeps names as C strings
 * at its edges). Overlong names are let through up to AQ_PATH_MAX so the server can
 * answer ENAMETOOLONG rather than a protocol error. */
static const char *get_name(struct rbuf *rb, uint32_t *len)
{
	const uint8_t *p = rbuf_str(rb, len, AQ_PATH_MAX);
	if (p && memchr(p, 0, *len))
		rb->err = true;
	return (const char *)p;
}

int proto_req_decode(uint16_t op, const uint8_t *p, size_t len, struct proto_req *r)
{
	uint32_t f = req_fields(op);
	if (!(f & F_KNOWN))
		return -EPROTO;
	memset(r, 0, sizeof *r);
	r->op = op;
	struct rbuf rb;
	rbuf_init(&rb, p, len);
	if ((f & F_CRED) && cred_get(&rb, &r->cred))
		return -EPROTO;
	if (f & F_INO) r->ino = rbuf_u64(&rb);
	if (f & F_PARENT) r->parent = rbuf_u64(&rb);
	if (f & F_NAME) r->name = get_name(&rb, &r->name_len);
	if (f & F_NEWPARENT) r->newparent = rbuf_u64(&rb);
	if (f & F_NAME2) r->name2 = get_name(&rb, &r->name2_len);
	if (f & F_MODE) r->mode = rbuf_u32(&rb);
	if (f & F_RDEV) r->rdev = rbuf_u32(&rb);
	if (f & F_FLAGS) r->flags = rbuf_u32(&rb);
	if (f & F_MASK) r->mask = rbuf_u32(&rb);
	if (f & F_ATTR) proto_attr_get(&rb, &r->attr);
	if (f & F_COOKIE) r->cookie = rbuf_u64(&rb);
	if (f & F_SIZE) r->size = rbuf_u64(&rb);
	if (f & F_OFF) r->off = rbuf_u64(&rb);
	if (f & F_TIME) r->time_ns = (int64_t)rbuf_u64(&rb);
	if (f & F_MAX) r->max = rbuf_u32(&rb);
	if (f & F_LEN) r->len = rbuf_u32(&rb);
	if (f & F_TARGET) r->target = rbuf_u32(&rb);
	if (f & F_IDX) r->idx = rbuf_u32(&rb);
	if (f & F_DATA) r->data = rbuf_str(&rb, &r->data_len, AQ_FRAME_MAX);
	if (f & F_TXN) {
		r->txn_client = rbuf_u64(&rb);
		r->txn_seq = rbuf_u64(&rb);
	}
	if (op == OP_CHUNK_WRITE && (r->flags & PROTO_CW_ATTRS)) {
		if (cred_get(&rb, &r->cred))
			return -EPROTO;
		r->mask = rbuf_u32(&rb);
		proto_attr_get(&rb, &r->attr);
	}
	if (rb.err || rb.pos != rb.len)
		return -EPROTO;
	return 0;
}

enum { R_ATTR = 1u << 0, R_SIZE = 1u << 1, R_DATA = 1u << 2, R_ENTRIES = 1u << 3, R_STATFS = 1u << 4,
       R_TIER = 1u << 5, R_KNOWN = 1u << 31 };

static uint32_t reply_fields(uint16_t op)
{
	switch (op) {
	case OP_LOOKUP: case OP_GETATTR: case OP_SETATTR: case OP_MKNOD: case OP_MKDIR:
	case OP_SYMLINK: case OP_LINK: case OP_OPEN: case OP_COMMIT_SIZE:
	case OP_UNLINK: /* PROTO_UNLINK_DIR_ATTR: the directory's attributes after it, else zeros */
		return R_KNOWN | R_ATTR;
	case OP_READLINK: case OP_CHUNK_READ: case OP_HELLO: case OP_MAP: case OP_LOCATE: case OP_LOCK:
	case OP_CHUNKS:
		return R_KNOWN | R_DATA;
	case OP_GETXATTR: case OP_LISTXATTR:
		return R_KNOWN | R_SIZE | R_DATA;
	case OP_OPEN_READ: case OP_OPEN_MAP:
		return R_KNOWN | R_ATTR | R_SIZE | R_DATA;
	case OP_READDIR: case OP_CHANGES: case OP_BATCH:
		return R_KNOWN | R_ENTRIES;
	case OP_STATFS:
		return R_KNOWN | R_STATFS;
	case OP_TIER:
		return R_KNOWN | R_TIER | R_DATA;
	case OP_AUTH: case OP_RMDIR: case OP_RENAME: case OP_ACCESS: case OP_RELEASE:
	case OP_SETXATTR: case OP_REMOVEXATTR: case OP_FSYNC: case OP_CHUNK_WRITE: case OP_WATCH:
	case OP_REOPEN:
		return R_KNOWN;
	}
	return 0;
}

void proto_reply_encode(struct wbuf *w, const struct proto_reply *r)
{
	uint32_t f = reply_fields(r->op);
	AQ_ASSERT(f & R_KNOWN);
	if (f & R_ATTR) proto_attr_put(w, &r->attr);
	if (f & R_SIZE) wbuf_u32(w, r->size);
	if (f & R_DATA) wbuf_str(w, r->data, r->data_len);
	if (f & R_ENTRIES) {
		wbuf_u32(w, r->count);
		wbuf_u8(w, r->eof);
		wbuf_u64(w, r->next);
		wbuf_str(w, r->entries, r->entries_len);
	}
	if (f & R_STATFS) {
		wbuf_u64(w, r->st.total_bytes);
		wbuf_u64(w, r->st.free_bytes);
		wbuf_u64(w, r->st.used_bytes);
		wbuf_u64(w, r->st.files);
		wbuf_u32(w, r->st.servers);
		wbuf_u32(w, r->st.buckets);
		wbuf_u32(w, r->st.targets);
		wbuf_u32(w, r->st.chunk_size);
	}
	if (f & R_TIER) {
		size_t start = w->len;
		const struct proto_tier *t = &r->tier;
		wbuf_u64(w, t->bytes);
		wbuf_u64(w, t->files);
		wbuf_u64(w, t->skipped);
		wbuf_u64(w, t->hot);
		wbuf_u64(w, t->cold);
		wbuf_u64(w, t->both);
		wbuf_u64(w, t->objects);
		wbuf_u64(w, t->object_bytes);
		wbuf_u64(w, t->live_bytes);
		AQ_ASSERT(w->len - start == PROTO_TIER_SIZE);
	}
}

int proto_reply_decode(uint16_t op, const uint8_t *p, size_t len, struct proto_reply *r)
{
	uint32_t f = reply_fields(op);
	if (!(f & R_KNOWN))
		return -EPROTO;
	memset(r, 0, sizeof *r);
	r->op = op;
	struct rbuf rb;
	rbuf_init(&rb, p, len);
	if (f & R_ATTR) proto_attr_get(&rb, &r->attr);
	if (f & R_SIZE) r->size = rbuf_u32(&rb);
	if (f & R_DATA) r->data = rbuf_str(&rb, &r->data_len, AQ_FRAME_MAX);
	if (f & R_ENTRIES) {
		r->count = rbuf_u32(&rb);
		r->eof = rbuf_u8(&rb);
		r->next = rbuf_u64(&rb);
		r->entries = rbuf_str(&rb, &r->entries_len, AQ_FRAME_MAX);
	}
	if (f & R_STATFS) {
		r->st.total_bytes = rbuf_u64(&rb);
		r->st.free_bytes = rbuf_u64(&rb);
		r->st.used_bytes = rbuf_u64(&rb);
		r->st.files = rbuf_u64(&rb);
		r->st.servers = rbuf_u32(&rb);
		r->st.buckets = rbuf_u32(&rb);
		r->st.targets = rbuf_u32(&rb);
		r->st.chunk_size = rbuf_u32(&rb);
	}
	if (f & R_TIER) {
		struct proto_tier *t = &r->tier;
		t->bytes = rbuf_u64(&rb);
		t->files = rbuf_u64(&rb);
		t->skipped = rbuf_u64(&rb);
		t->hot = rbuf_u64(&rb);
		t->cold = rbuf_u64(&rb);
		t->both = rbuf_u64(&rb);
		t->objects = rbuf_u64(&rb);
		t->object_bytes = rbuf_u64(&rb);
		t->live_bytes = rbuf_u64(&rb);
	}
	if (rb.err || rb.pos != rb.len)
		return -EPROTO;
	return 0;
}

void proto_dirent_put(struct wbuf *w, const struct aq_dirent *e, bool plus)
{
	proto_dirent_put_parts(w, e->ino, e->cookie, (uint8_t)e->type, e->name, e->name_len, plus ? &e->attr : NULL);
}

void proto_dirent_put_parts(struct wbuf *w, uint64_t ino, uint64_t cookie, uint8_t type, const char *name,
			    uint32_t name_len, const struct aq_attr *attr)
{
	/* one reserve for the fixed part and the name: a listing encodes millions of these */
	wbuf_reserve(w, 21 + (size_t)name_len);
	uint8_t *p = w->p + w->len;
	put_le64(p, ino);
	put_le64(p + 8, cookie);
	p[16] = type;
	put_le32(p + 17, name_len);
	memcpy(p + 21, name, name_len);
	w->len += 21 + (size_t)name_len;
	if (attr)
		proto_attr_put(w, attr);
}

int proto_dirent_get(struct rbuf *r, struct aq_dirent *e, bool plus)
{
	e->ino = rbuf_u64(r);
	e->cookie = rbuf_u64(r);
	e->type = rbuf_u8(r);
	uint32_t n;
	const uint8_t *name = rbuf_str(r, &n, AQ_NAME_MAX);
	if (r->err || memchr(name, 0, n))
		return -EPROTO;
	memcpy(e->name, name, n);
	e->name[n] = 0;
	e->name_len = n;
	if (plus)
		proto_attr_get(r, &e->attr);
	else
		memset(&e->attr, 0, sizeof e->attr);
	return r->err ? -EPROTO : 0;
}

void proto_change_put(struct wbuf *w, uint64_t ino, uint64_t ts, const char *name, size_t name_len)
{
	wbuf_u64(w, ino);
	wbuf_u64(w, ts);
	wbuf_str(w, name, name_len);
}

int proto_change_get(struct rbuf *r, struct proto_change *c)
{
	c->ino = rbuf_u64(r);
	c->ts = rbuf_u64(r);
	c->name = (const char *)rbuf_str(r, &c->name_len, AQ_NAME_MAX);
	if (r->err || memchr(c->name, 0, c->name_len)) /* as dirents: names never hold a NUL */
		return -EPROTO;
	return 0;
}

void proto_loc_put(struct wbuf *w, const struct proto_loc *l, const uint32_t *crc)
{
	wbuf_u64(w, l->rec_off);
	wbuf_u64(w, l->version);
	wbuf_u32(w, l->idx);
	wbuf_u32(w, l->length);
	wbuf_u32(w, l->in);
	wbuf_u32(w, l->n);
	wbuf_u32(w, l->nblk);
	wbuf_u8(w, 0);
	wbuf_str(w, l->path, l->path_len);
	for (uint32_t b = 0; b < l->nblk; b++)
		wbuf_u32(w, crc[b]);
}

int proto_loc_get(const uint8_t *data, uint32_t len, struct proto_loc *l)
{
	struct rbuf r;
	rbuf_init(&r, data, len);
	l->rec_off = rbuf_u64(&r);
	l->version = rbuf_u64(&r);
	l->idx = rbuf_u32(&r);
	l->length = rbuf_u32(&r);
	l->in = rbuf_u32(&r);
	l->n = rbuf_u32(&r);
	l->nblk = rbuf_u32(&r);
	(void)rbuf_u8(&r);
	l->path = (const char *)rbuf_str(&r, &l->path_len, PATH_MAX - 1);
	if (r.err || l->length > AQ_CHUNK_SIZE_MAX || l->nblk > AQ_CHUNK_SIZE_MAX / AQ_CRC_BLOCK_SIZE)
		return -EPROTO;
	l->crcs = rbuf_bytes(&r, 4 * (size_t)l->nblk);
	uint64_t end = (uint64_t)l->in + l->n;
	if (r.err || r.pos != r.len || !l->path_len || l->path[0] != '/' || memchr(l->path, 0, l->path_len) ||
	    !l->n || end > l->length || l->nblk != (end + AQ_CRC_BLOCK_SIZE - 1) / AQ_CRC_BLOCK_SIZE)
		return -EPROTO;
	return 0;
}

int proto_tier_inos(const uint8_t *data, uint32_t len)
{
	if (len % 8 || len / 8 > PROTO_TIER_INOS_MAX || (len && !data))
		return -EPROTO;
	return (int)(len / 8);
}

int proto_batch_next(struct rbuf *r, struct proto_hdr *h, const uint8_t **payload)
{
	const uint8_t *hb = rbuf_bytes(r, PROTO_HDR_SIZE);
	if (!hb)
		return -EPROTO;
	int rc = proto_hdr_decode(hb, PROTO_HDR_SIZE, h);
	if (rc)
		return rc;
	if (h->op == OP_BATCH) /* no nesting */
		return -EPROTO;
	*payload = rbuf_bytes(r, h->payload_len);
	return *payload ? 0 : -EPROTO;
}

void proto_inval_inode(struct wbuf *w, uint64_t ino)
{
	wbuf_u8(w, PROTO_INVAL_INODE);
	wbuf_u64(w, ino);
}

void proto_inval_entry(struct wbuf *w, uint64_t parent, const char *name, uint32_t len)
{
	wbuf_u8(w, PROTO_INVAL_ENTRY);
	wbuf_u64(w, parent);
	wbuf_str(w, name, len);
}

int proto_inval_next(struct rbuf *r, uint8_t *kind, uint64_t *ino, const char **name, uint32_t *len)
{
	if (r->pos == r->len)
		return 0;
	*kind = rbuf_u8(r);
	*ino = rbuf_u64(r);
	*name = NULL;
	*len = 0;
	if (*kind == PROTO_INVAL_ENTRY) {
		*name = (const char *)rbuf_str(r, len, AQ_NAME_MAX);
		if (*name && memchr(*name, 0, *len))
			return -EPROTO;
	} else if (*kind != PROTO_INVAL_INODE) {
		return -EPROTO;
	}
	return r->err ? -EPROTO : 1;
}

uint8_t *proto_extents_encode(const struct aq_extent *ext, uint32_t n, const uint8_t *const *src, size_t *len)
{
	AQ_ASSERT(n >= 1 && n <= PROTO_CW_EXTENTS_MAX);
	size_t total = 4 + 8 * (size_t)n;
	for (uint32_t i = 0; i < n; i++)
		total += ext[i].len;
	uint8_t *d = aq_malloc(total), *q = d + 4 + 8 * (size_t)n;
	put_le32(d, n);
	for (uint32_t i = 0; i < n; i++) {
		put_le32(d + 4 + 8 * i, ext[i].off);
		put_le32(d + 8 + 8 * i, ext[i].len);
		memcpy(q, src[i], ext[i].len);
		q += ext[i].len;
	}
	*len = total;
	return d;
}

int proto_extents_decode(const uint8_t *p, uint32_t len, struct aq_extent *ext, uint32_t *n,
			 const uint8_t **bytes)
{
	if (len < 4)
		return -EINVAL;
	uint32_t k = get_le32(p);
	if (k == 0 || k > PROTO_CW_EXTENTS_MAX || (uint64_t)len < 4 + 8ull * k)
		return -EINVAL;
	uint64_t total = 0;
	for (uint32_t i = 0; i < k; i++) {
		ext[i].off = get_le32(p + 4 + 8 * i);
		ext[i].len = get_le32(p + 8 + 8 * i);
		total += ext[i].len;
	}
	if (total != len - 4 - 8ull * k)
		return -EINVAL;
	*n = k;
	*bytes = p + 4 + 8ull * k;
	return 0;
}

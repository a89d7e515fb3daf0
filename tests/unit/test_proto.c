/*
 * test_proto.c - unit tests of the wire format (src/proto), the checksums and hashes
 * (src/common/hash.c) and the cluster map (src/common/cluster.c): known vectors, round
 * trips of every request and reply, rejection of every malformed shape we know of,
 * rendezvous placement, and a deterministic fuzz of every decoder. Inputs handed to the
 * decoders are copied into buffers of exactly their length, so an ASan build catches any
 * read past the end. Prints one line per case and "N passed, N failed".
 */
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cluster.h"
#include "common/fdio.h"
#include "common/hash.h"
#include "proto/proto.h"
#include "unit/check.h"

uint32_t crc32c_sw(uint32_t crc, const void *data, size_t len); /* src/common/hash.c */



/* ---- deterministic randomness ------------------------------------------------------- */

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static uint64_t rnd(void) /* splitmix64 */
{
	uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}
static uint32_t rndn(uint32_t n) { return n ? (uint32_t)(rnd() % n) : 0; }
static void rnd_fill(void *buf, size_t n)
{
	uint8_t *p = buf;
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rnd();
}
/* Random bytes with no NUL (valid names). */
static void rnd_name(char *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (char)(1 + rndn(255));
}

/* A copy of p in a buffer of exactly n bytes (ASan sees any overread); free() it. */
static uint8_t *exact(const void *p, size_t n)
{
	uint8_t *b = aq_malloc(n ? n : 1);
	if (n)
		memcpy(b, p, n);
	return b;
}

/* ---- the wire layout, written down independently of proto.c -------------------------- */

enum {
	T_CRED = 1u << 0, T_INO = 1u << 1, T_PARENT = 1u << 2, T_NAME = 1u << 3, T_NEWPARENT = 1u << 4,
	T_NAME2 = 1u << 5, T_MODE = 1u << 6, T_RDEV = 1u << 7, T_FLAGS = 1u << 8, T_MASK = 1u << 9,
	T_ATTR = 1u << 10, T_COOKIE = 1u << 11, T_SIZE = 1u << 12, T_OFF = 1u << 13, T_TIME = 1u << 14,
	T_MAX = 1u << 15, T_LEN = 1u << 16, T_TARGET = 1u << 17, T_IDX = 1u << 18, T_DATA = 1u << 19,
	T_TXN = 1u << 20, /* u64 client, u64 seq: the changes (version 4) */
	T_CW_ATTRS = 1u << 21, /* with PROTO_CW_ATTRS in flags, cred, mask and attr after it all (version 6) */
	T_KNOWN = 1u << 31,
};

static uint32_t spec_req(uint16_t op)
{
	switch (op) {
	case OP_AUTH: return T_KNOWN | T_DATA;
	case OP_MAP: return T_KNOWN;
	case OP_LOOKUP: return T_KNOWN | T_CRED | T_PARENT | T_NAME;
	case OP_GETATTR: return T_KNOWN | T_CRED | T_INO;
	case OP_SETATTR: return T_KNOWN | T_CRED | T_INO | T_MASK | T_ATTR;
	case OP_MKNOD: return T_KNOWN | T_CRED | T_PARENT | T_NAME | T_MODE | T_RDEV | T_FLAGS | T_TXN;
	case OP_MKDIR: return T_KNOWN | T_CRED | T_PARENT | T_NAME | T_MODE | T_TXN;
	case OP_SYMLINK: return T_KNOWN | T_CRED | T_PARENT | T_NAME | T_NAME2 | T_TXN;
	case OP_READLINK: return T_KNOWN | T_CRED | T_INO;
	case OP_UNLINK: return T_KNOWN | T_CRED | T_PARENT | T_NAME | T_FLAGS | T_TXN;
	case OP_RMDIR: return T_KNOWN | T_CRED | T_PARENT | T_NAME | T_TXN;
	case OP_RENAME: return T_KNOWN | T_CRED | T_PARENT | T_NAME | T_NEWPARENT | T_NAME2 | T_FLAGS | T_TXN;
	case OP_LINK: return T_KNOWN | T_CRED | T_INO | T_NEWPARENT | T_NAME2 | T_TXN;
	case OP_ACCESS: return T_KNOWN | T_CRED | T_INO | T_MASK;
	case OP_OPEN: return T_KNOWN | T_CRED | T_INO | T_FLAGS;
	case OP_RELEASE: return T_KNOWN | T_CRED | T_INO;
	case OP_COMMIT_SIZE: return T_KNOWN | T_CRED | T_INO | T_SIZE | T_TIME;
	case OP_READDIR: return T_KNOWN | T_CRED | T_INO | T_COOKIE | T_MAX | T_FLAGS;
	case OP_CHANGES: return T_KNOWN | T_CRED | T_INO | T_COOKIE | T_MAX;
	case OP_SETXATTR: return T_KNOWN | T_CRED | T_INO | T_NAME | T_FLAGS | T_DATA | T_TXN;
	case OP_GETXATTR: return T_KNOWN | T_CRED | T_INO | T_NAME | T_LEN;
	case OP_LISTXATTR: return T_KNOWN | T_CRED | T_INO | T_LEN;
	case OP_REMOVEXATTR: return T_KNOWN | T_CRED | T_INO | T_NAME | T_TXN;
	case OP_STATFS: return T_KNOWN | T_CRED;
	case OP_FSYNC: return T_KNOWN | T_CRED | T_INO | T_FLAGS;
	case OP_WATCH: return T_KNOWN | T_COOKIE | T_FLAGS;
	case OP_REOPEN: return T_KNOWN | T_DATA;
	case OP_CHUNK_WRITE: return T_KNOWN | T_TARGET | T_INO | T_IDX | T_OFF | T_FLAGS | T_DATA | T_SIZE | T_TIME | T_CW_ATTRS;
	case OP_CHUNK_READ: return T_KNOWN | T_TARGET | T_INO | T_IDX | T_OFF | T_LEN;
	case OP_OPEN_READ: return T_KNOWN | T_CRED | T_INO | T_FLAGS | T_OFF | T_LEN;
	case OP_OPEN_MAP: return T_KNOWN | T_CRED | T_INO | T_FLAGS | T_OFF | T_LEN | T_DATA;
	case OP_LOCATE: return T_KNOWN | T_TARGET | T_INO | T_IDX | T_DATA;
	case OP_BATCH: return T_KNOWN | T_MAX | T_DATA;
	case OP_TIER: return T_KNOWN | T_CRED | T_INO | T_FLAGS | T_DATA;
	case OP_LOCK: return T_KNOWN | T_INO | T_MODE | T_RDEV | T_FLAGS | T_COOKIE | T_SIZE | T_OFF | T_TIME;
	case OP_CHUNKS: return T_KNOWN | T_INO | T_IDX | T_MAX;
	}
	return 0;
}

enum { TR_ATTR = 1u << 0, TR_SIZE = 1u << 1, TR_DATA = 1u << 2, TR_ENTRIES = 1u << 3, TR_STATFS = 1u << 4,
       TR_TIER = 1u << 5, TR_KNOWN = 1u << 31 };

static uint32_t spec_reply(uint16_t op)
{
	switch (op) {
	case OP_LOOKUP: case OP_GETATTR: case OP_SETATTR: case OP_MKNOD: case OP_MKDIR:
	case OP_SYMLINK: case OP_LINK: case OP_OPEN: case OP_COMMIT_SIZE: case OP_UNLINK:
		return TR_KNOWN | TR_ATTR;
	case OP_READLINK: case OP_CHUNK_READ: case OP_HELLO: case OP_MAP: case OP_LOCATE:
	case OP_LOCK: /* empty, or the lock in the way (proto_lock_put) */
	case OP_CHUNKS: /* (idx u32, bytes u32) pairs */
		return TR_KNOWN | TR_DATA;
	case OP_GETXATTR: case OP_LISTXATTR:
		return TR_KNOWN | TR_SIZE | TR_DATA;
	case OP_OPEN_READ: /* attributes, the read's status, the bytes */
	case OP_OPEN_MAP:  /* attributes, the read's status, a location (proto_loc) */
		return TR_KNOWN | TR_ATTR | TR_SIZE | TR_DATA;
	case OP_READDIR: case OP_CHANGES: case OP_BATCH:
		return TR_KNOWN | TR_ENTRIES;
	case OP_STATFS:
		return TR_KNOWN | TR_STATFS;
	case OP_TIER:
		return TR_KNOWN | TR_DATA | TR_TIER; /* nine u64 after the text */
	case OP_AUTH: case OP_RMDIR: case OP_RENAME: case OP_ACCESS: case OP_RELEASE:
	case OP_SETXATTR: case OP_REMOVEXATTR: case OP_FSYNC: case OP_CHUNK_WRITE: case OP_WATCH: case OP_REOPEN:
		return TR_KNOWN;
	}
	return 0;
}

#define OP_SCAN_MAX 70 /* opcodes tried by the "every opcode" loops */

/* Storage for the strings a random request points at. */
struct req_store {
	char name[AQ_PATH_MAX], name2[AQ_PATH_MAX];
	uint8_t data[2048];
};

static void rnd_attr(struct aq_attr *a)
{
	a->ino = rnd(); a->size = rnd(); a->blocks = rnd(); a->generation = rnd();
	a->atime_ns = (int64_t)rnd(); a->mtime_ns = (int64_t)rnd(); a->ctime_ns = (int64_t)rnd();
	a->mode = (uint32_t)rnd(); a->nlink = (uint32_t)rnd(); a->uid = (uint32_t)rnd();
	a->gid = (uint32_t)rnd(); a->rdev = (uint32_t)rnd(); a->chunk_size = (uint32_t)rnd();
}

/* Fills every field of r with random values (names within max_name bytes, no NUL). */
static void rnd_req(struct proto_req *r, uint16_t op, struct req_store *st, uint32_t max_name)
{
	memset(r, 0, sizeof *r);
	r->op = op;
	r->cred.uid = (uint32_t)rnd();
	r->cred.gid = (uint32_t)rnd();
	r->cred.ngroups = rndn(33);
	for (uint32_t i = 0; i < r->cred.ngroups; i++)
		r->cred.groups[i] = (uint32_t)rnd();
	r->ino = rnd(); r->parent = rnd(); r->newparent = rnd();
	r->name_len = rndn(max_name + 1);
	rnd_name(st->name, r->name_len);
	r->name = st->name;
	r->name2_len = rndn(max_name + 1);
	rnd_name(st->name2, r->name2_len);
	r->name2 = st->name2;
	r->mode = (uint32_t)rnd(); r->rdev = (uint32_t)rnd(); r->flags = (uint32_t)rnd(); r->mask = (uint32_t)rnd();
	rnd_attr(&r->attr);
	r->cookie = rnd(); r->size = rnd(); r->off = rnd(); r->time_ns = (int64_t)rnd();
	r->max = (uint32_t)rnd(); r->len = (uint32_t)rnd(); r->target = (uint32_t)rnd(); r->idx = (uint32_t)rnd();
	r->data_len = rndn(sizeof st->data + 1);
	rnd_fill(st->data, r->data_len);
	r->data = st->data;
	r->txn_client = rnd(); r->txn_seq = rnd();
}

static size_t spec_req_len(uint32_t f, const struct proto_req *r)
{
	size_t n = 0;
	if (f & T_CRED) n += 12 + 4 * r->cred.ngroups;
	n += 8 * !!(f & T_INO) + 8 * !!(f & T_PARENT) + 8 * !!(f & T_NEWPARENT);
	if (f & T_NAME) n += 4 + r->name_len;
	if (f & T_NAME2) n += 4 + r->name2_len;
	n += 4 * (!!(f & T_MODE) + !!(f & T_RDEV) + !!(f & T_FLAGS) + !!(f & T_MASK));
	if (f & T_ATTR) n += PROTO_ATTR_SIZE;
	n += 8 * (!!(f & T_COOKIE) + !!(f & T_SIZE) + !!(f & T_OFF) + !!(f & T_TIME));
	n += 4 * (!!(f & T_MAX) + !!(f & T_LEN) + !!(f & T_TARGET) + !!(f & T_IDX));
	if (f & T_DATA) n += 4 + r->data_len;
	if (f & T_TXN) n += 16;
	if ((f & T_CW_ATTRS) && (r->flags & PROTO_CW_ATTRS))
		n += 12 + 4 * r->cred.ngroups + 4 + PROTO_ATTR_SIZE;
	return n;
}

/* Compares what opcode f carries; fields it does not carry must have decoded as zero. */
static int req_equal(uint32_t f, const struct proto_req *a, const struct proto_req *b, const char **what)
{
	if ((f & T_CW_ATTRS) && (a->flags & PROTO_CW_ATTRS))
		f |= T_CRED | T_MASK | T_ATTR; /* a CHUNK_WRITE's trailer */
#define SAME(flag, expr, name)                                             \
	do {                                                               \
		bool ok = (f & (flag)) ? (expr) : true;                    \
		if (!ok) { *what = name; return 0; }                       \
	} while (0)
	SAME(T_CRED, a->cred.uid == b->cred.uid && a->cred.gid == b->cred.gid &&
		     a->cred.ngroups == b->cred.ngroups &&
		     !memcmp(a->cred.groups, b->cred.groups, 4 * a->cred.ngroups), "cred");
	SAME(T_INO, a->ino == b->ino, "ino");
	SAME(T_PARENT, a->parent == b->parent, "parent");
	SAME(T_NAME, a->name_len == b->name_len && !memcmp(a->name, b->name, a->name_len), "name");
	SAME(T_NEWPARENT, a->newparent == b->newparent, "newparent");
	SAME(T_NAME2, a->name2_len == b->name2_len && !memcmp(a->name2, b->name2, a->name2_len), "name2");
	SAME(T_MODE, a->mode == b->mode, "mode");
	SAME(T_RDEV, a->rdev == b->rdev, "rdev");
	SAME(T_FLAGS, a->flags == b->flags, "flags");
	SAME(T_MASK, a->mask == b->mask, "mask");
	SAME(T_ATTR, !memcmp(&a->attr, &b->attr, sizeof a->attr), "attr");
	SAME(T_COOKIE, a->cookie == b->cookie, "cookie");
	SAME(T_SIZE, a->size == b->size, "size");
	SAME(T_OFF, a->off == b->off, "off");
	SAME(T_TIME, a->time_ns == b->time_ns, "time");
	SAME(T_MAX, a->max == b->max, "max");
	SAME(T_LEN, a->len == b->len, "len");
	SAME(T_TARGET, a->target == b->target, "target");
	SAME(T_IDX, a->idx == b->idx, "idx");
	SAME(T_DATA, a->data_len == b->data_len && !memcmp(a->data, b->data, a->data_len), "data");
	SAME(T_TXN, a->txn_client == b->txn_client && a->txn_seq == b->txn_seq, "txn");
#undef SAME
	/* b is the decoded one: what the opcode does not carry stays zero */
	static const struct aq_attr zattr;
#define ZERO(flag, expr, name)                                             \
	do {                                                               \
		if (!(f & (flag)) && !(expr)) { *what = "uncarried " name; return 0; } \
	} while (0)
	ZERO(T_CRED, b->cred.uid == 0 && b->cred.ngroups == 0, "cred");
	ZERO(T_INO, b->ino == 0, "ino");
	ZERO(T_PARENT, b->parent == 0, "parent");
	ZERO(T_NAME, b->name_len == 0, "name");
	ZERO(T_NAME2, b->name2_len == 0, "name2");
	ZERO(T_MODE, b->mode == 0, "mode");
	ZERO(T_FLAGS, b->flags == 0, "flags");
	ZERO(T_ATTR, !memcmp(&b->attr, &zattr, sizeof zattr), "attr");
	ZERO(T_DATA, b->data_len == 0, "data");
	ZERO(T_TXN, b->txn_client == 0 && b->txn_seq == 0, "txn");
#undef ZERO
	return 1;
}

/* Encodes a random valid request for op into w (payload only). */
static void enc_req(struct wbuf *w, uint16_t op, struct req_store *st, uint32_t max_name, struct proto_req *out)
{
	struct proto_req r;
	rnd_req(&r, op, st, max_name);
	proto_req_encode(w, &r);
	if (out)
		*out = r;
}

static uint16_t known_ops[64];
static size_t nknown;
static void init_known_ops(void)
{
	nknown = 0;
	for (uint16_t op = 0; op <= OP_SCAN_MAX; op++)
		if (spec_req(op) & T_KNOWN)
			known_ops[nknown++] = op;
}

/* ---- whole writes (src/common/fdio.c) ------------------------------------------------- */

struct drain_arg {
	int fd;
	uint8_t *buf;
	size_t cap, got;
};

static void *drain_main(void *p)
{
	struct drain_arg *a = p;
	ssize_t n;
	while ((n = read(a->fd, a->buf + a->got, a->cap - a->got)) > 0)
		a->got += (size_t)n;
	return NULL;
}

/* fd_self_connected tells a TCP socket connected to itself (bound to a port, then
 * connected to that same port: the simultaneous open that a client reconnecting to a
 * restarting server can stumble into) from one connected to a listener, and from a
 * socket pair. */
static int t_self_connected(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	int self = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(self >= 0 && bind(self, (struct sockaddr *)&sa, sizeof sa) == 0);
	CHECK(getsockname(self, (struct sockaddr *)&sa, &sl) == 0);
	CHECK(connect(self, (struct sockaddr *)&sa, sizeof sa) == 0);
	CHECK(fd_self_connected(self));
	close(self);

	struct sockaddr_in la = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	sl = sizeof la;
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(l >= 0 && c >= 0 && bind(l, (struct sockaddr *)&la, sizeof la) == 0 && listen(l, 1) == 0);
	CHECK(getsockname(l, (struct sockaddr *)&la, &sl) == 0);
	CHECK(connect(c, (struct sockaddr *)&la, sizeof la) == 0);
	int a = accept(l, NULL, NULL);
	CHECK(a >= 0 && !fd_self_connected(c) && !fd_self_connected(a) && !fd_self_connected(l));
	close(a);
	close(c);
	close(l);
	int sv[2];
	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	CHECK(!fd_self_connected(sv[0]));
	close(sv[0]);
	close(sv[1]);
	return 0;
}

/* fd_writev_full writes every byte of every piece, empty pieces anywhere among them
 * included (regression: an empty last piece made it call writev for ever), across
 * partial writes into a small socket buffer. */
static int t_writev_full(void)
{
	enum { LEN = 300000 };
	uint8_t *src = aq_malloc(LEN);
	rnd_fill(src, LEN);
	size_t cuts[][6] = {{0, 0, 1000, 1000, LEN, LEN}, {0, 7, 7, 200000, 200000, LEN}, {0, 0, 0, 0, 0, LEN},
			    {0, LEN, LEN, LEN, LEN, LEN}};
	for (size_t k = 0; k < ARRAY_SIZE(cuts); k++) {
		int sv[2];
		CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
		int small = 4096;
		setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
		struct drain_arg a = {.fd = sv[1], .buf = aq_malloc(LEN + 1), .cap = LEN + 1};
		pthread_t th;
		CHECK(pthread_create(&th, NULL, drain_main, &a) == 0);
		struct iovec iov[5];
		for (int i = 0; i < 5; i++)
			iov[i] = (struct iovec){src + cuts[k][i], cuts[k][i + 1] - cuts[k][i]};
		alarm(20); /* the old loop never returned */
		int rc = fd_writev_full(sv[0], iov, 5, -1);
		alarm(0);
		close(sv[0]);
		pthread_join(th, NULL);
		close(sv[1]);
		bool same = a.got == LEN && memcmp(a.buf, src, LEN) == 0;
		free(a.buf);
		CHECKF(rc == 0 && same, "cuts %zu: rc %d, %zu bytes arrived", k, rc, a.got);
	}
	free(src);
	return 0;
}

/* ---- checksums and hashes ------------------------------------------------------------ */

static int t_crc_vectors(void)
{
	CHECKF(crc32c(0, "123456789", 9) == 0xE3069283u, "%08x", crc32c(0, "123456789", 9));
	CHECK(crc32c_sw(0, "123456789", 9) == 0xE3069283u);
	CHECK(crc32c(0, "", 0) == 0);
	CHECK(crc32c_sw(0, "", 0) == 0);
	CHECK(crc32c(0x12345678u, "", 0) == 0x12345678u); /* empty input leaves the crc alone */
	static const uint8_t zeros[32];
	CHECKF(crc32c(0, zeros, 32) == 0x8A9136AAu, "%08x", crc32c(0, zeros, 32)); /* RFC 3720 B.4 */
	uint8_t ones[32];
	memset(ones, 0xff, sizeof ones);
	CHECKF(crc32c(0, ones, 32) == 0x62A8AB43u, "%08x", crc32c(0, ones, 32));
	/* incremental == one shot */
	const char *s = "The quick brown fox jumps over the lazy dog";
	size_t n = strlen(s);
	for (size_t k = 0; k <= n; k++)
		CHECK(crc32c(crc32c(0, s, k), s + k, n - k) == crc32c(0, s, n));
	return 0;
}

static int t_crc_hw_sw(void)
{
	uint8_t *buf = aq_malloc(8192 + 16);
	int rc = 0;
	for (int i = 0; i < 3000 && !rc; i++) {
		size_t len = rndn(i < 100 ? 40 : 8192);
		size_t align = rndn(16);
		rnd_fill(buf + align, len);
		uint32_t seed = rndn(4) ? (uint32_t)rnd() : 0;
		uint32_t hw = crc32c(seed, buf + align, len), sw = crc32c_sw(seed, buf + align, len);
		if (hw != sw) {
			snprintf(g_why, sizeof g_why, "len %zu align %zu seed %08x: crc32c %08x != sw %08x", len, align,
				 seed, hw, sw);
			rc = -1;
		}
	}
	free(buf);
	return rc;
}

static int t_hash64_pinned(void)
{
	/* Values are persisted (bucket placement, readdir cookies): they must never change. */
	static const struct { const char *s; uint64_t seed, want; } v[] = {
		{ "", 0, 0x8ab5097e7e3522baull },
		{ "a", 0, 0xa66e6fc3955a43d2ull },
		{ "abc", 1, 0x5559db151eba9354ull },
		{ "hello.txt", 0, 0xbaa92c04361fc4d1ull },
		{ "0123456789abcdef", 7, 0x5da405a64fae5c7full },
		{ "0123456789abcdefX", 7, 0xa27c033333e57f61ull },
		{ "a longer name that crosses several sixteen byte blocks", 0xdeadbeef, 0x9f1ccc6eb13595c4ull },
	};
	for (size_t i = 0; i < ARRAY_SIZE(v); i++) {
		uint64_t h = aq_hash64(v[i].s, strlen(v[i].s), v[i].seed);
		CHECKF(h == v[i].want, "aq_hash64(\"%s\", %llu) = 0x%016llxull, pinned 0x%016llxull", v[i].s,
		       (unsigned long long)v[i].seed, (unsigned long long)h, (unsigned long long)v[i].want);
	}
	CHECKF(aq_mix64(1, 2) == 0x60162db2d3f0ffaaull, "aq_mix64(1, 2) = 0x%016llxull", (unsigned long long)aq_mix64(1, 2));
	return 0;
}

static int t_hash64_seed(void)
{
	uint8_t buf[200];
	for (int i = 0; i < 2000; i++) {
		size_t len = 1 + rndn(sizeof buf);
		rnd_fill(buf, len);
		uint64_t seed = rnd();
		uint64_t h = aq_hash64(buf, len, seed);
		CHECK(h == aq_hash64(buf, len, seed));              /* deterministic */
		CHECK(h != aq_hash64(buf, len, seed ^ 1));           /* seed matters */
		CHECK(h != aq_hash64(buf, len, seed + 0x100000000ull));
		size_t bit = rndn((uint32_t)len * 8);
		buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		CHECK(h != aq_hash64(buf, len, seed));               /* every input bit matters */
		CHECK(aq_hash64(buf, len - 1, seed) != aq_hash64(buf, len, seed) || len == 1);
	}
	/* the empty input still depends on the seed */
	CHECK(aq_hash64("", 0, 1) != aq_hash64("", 0, 2));
	return 0;
}

/* ---- frame header -------------------------------------------------------------------- */

static int t_hdr_roundtrip(void)
{
	for (int i = 0; i < 1000; i++) {
		struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = (uint16_t)rnd(),
				      .req_id = rnd(), .epoch = (uint32_t)rnd(), .status = (uint16_t)rnd(),
				      .flags = (uint16_t)rnd(), .payload_len = rndn(AQ_FRAME_MAX + 1)};
		uint8_t b[PROTO_HDR_SIZE];
		proto_hdr_encode(b, &h);
		CHECK(get_le32(b) == PROTO_MAGIC && get_le32(b + 28) == 0);
		uint8_t *x = exact(b, sizeof b);
		struct proto_hdr d;
		int rc = proto_hdr_decode(x, PROTO_HDR_SIZE, &d);
		free(x);
		CHECK(rc == 0);
		CHECK(d.magic == h.magic && d.version == h.version && d.op == h.op && d.req_id == h.req_id &&
		      d.epoch == h.epoch && d.status == h.status && d.flags == h.flags &&
		      d.payload_len == h.payload_len);
	}
	return 0;
}

static int t_hdr_reject(void)
{
	struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = OP_LOOKUP, .req_id = 9,
			      .payload_len = 10};
	uint8_t good[PROTO_HDR_SIZE], b[PROTO_HDR_SIZE];
	struct proto_hdr d;
	proto_hdr_encode(good, &h);
	CHECK(proto_hdr_decode(good, sizeof good, &d) == 0);

	memcpy(b, good, sizeof b);
	b[0] ^= 1; /* bad magic */
	CHECK(proto_hdr_decode(b, sizeof b, &d) == -EPROTO);
	memcpy(b, good, sizeof b);
	put_le16(b + 4, PROTO_VERSION + 1); /* a future version */
	CHECK(proto_hdr_decode(b, sizeof b, &d) == -AQ_EBAD_VERSION);
	put_le16(b + 4, 0);
	CHECK(proto_hdr_decode(b, sizeof b, &d) == -AQ_EBAD_VERSION);
	for (int i = 28; i < 32; i++) { /* nonzero reserved word */
		memcpy(b, good, sizeof b);
		b[i] = 0x80;
		CHECK(proto_hdr_decode(b, sizeof b, &d) == -EPROTO);
	}
	memcpy(b, good, sizeof b);
	put_le32(b + 24, AQ_FRAME_MAX);
	CHECK(proto_hdr_decode(b, sizeof b, &d) == 0 && d.payload_len == AQ_FRAME_MAX);
	put_le32(b + 24, AQ_FRAME_MAX + 1);
	CHECK(proto_hdr_decode(b, sizeof b, &d) == -EPROTO);
	put_le32(b + 24, UINT32_MAX);
	CHECK(proto_hdr_decode(b, sizeof b, &d) == -EPROTO);
	for (size_t n = 0; n < PROTO_HDR_SIZE; n++) { /* short buffer */
		uint8_t *x = exact(good, n);
		int rc = proto_hdr_decode(x, n, &d);
		free(x);
		CHECK(rc == -EPROTO);
	}
	return 0;
}

/* ---- requests ------------------------------------------------------------------------ */

static int t_req_roundtrip(void)
{
	static struct req_store st;
	for (uint16_t op = 0; op <= OP_SCAN_MAX; op++) {
		uint32_t f = spec_req(op);
		if (!(f & T_KNOWN))
			continue;
		for (int it = 0; it < 200; it++) {
			struct proto_req r, d;
			struct wbuf w;
			wbuf_init(&w, 64);
			/* both short names and ones up to the decoder's limit */
			enc_req(&w, op, &st, it % 10 == 0 ? AQ_PATH_MAX : 300, &r);
			size_t want = spec_req_len(f, &r);
			if (w.len != want) {
				snprintf(g_why, sizeof g_why, "%s: encoded %zu bytes, want %zu", proto_op_name(op), w.len,
					 want);
				wbuf_free(&w);
				return -1;
			}
			uint8_t *x = exact(w.p, w.len);
			int rc = proto_req_decode(op, x, w.len, &d);
			const char *what = "?";
			bool ok = rc == 0 && d.op == op && req_equal(f, &r, &d, &what);
			free(x);
			wbuf_free(&w);
			CHECKF(ok, "%s: rc %d, field %s differs", proto_op_name(op), rc, what);
		}
	}
	return 0;
}

/* proto_req_encode_split with the data's bytes put where it says gives the bytes of
 * proto_req_encode, for every opcode that carries data (and the same bytes for one
 * that does not). */
static int t_req_encode_split(void)
{
	struct req_store st;
	for (int i = 0; i < 2000; i++) {
		uint16_t op = known_ops[rndn((uint32_t)nknown)];
		struct proto_req r;
		rnd_req(&r, op, &st, 255);
		struct wbuf whole, split, joined;
		wbuf_init(&whole, 64);
		wbuf_init(&split, 64);
		wbuf_init(&joined, 64);
		proto_req_encode(&whole, &r);
		size_t at = SIZE_MAX;
		proto_req_encode_split(&split, &r, &at);
		bool carries = spec_req(op) & T_DATA;
		if (carries) {
			CHECKF(at <= split.len, "%s: data at %zu of %zu", proto_op_name(op), at, split.len);
			wbuf_put(&joined, split.p, at);
			wbuf_put(&joined, r.data, r.data_len);
			wbuf_put(&joined, split.p + at, split.len - at);
		} else {
			CHECKF(at == SIZE_MAX, "%s carries no data, yet data_at was set", proto_op_name(op));
			wbuf_put(&joined, split.p, split.len);
		}
		CHECKF(joined.len == whole.len && memcmp(joined.p, whole.p, whole.len) == 0, "%s: %zu bytes, not %zu",
		       proto_op_name(op), joined.len, whole.len);
		wbuf_free(&whole);
		wbuf_free(&split);
		wbuf_free(&joined);
	}
	return 0;
}

static int t_req_unknown_op(void)
{
	uint8_t junk[64];
	rnd_fill(junk, sizeof junk);
	struct proto_req d;
	for (uint32_t op = 0; op <= 0xffff; op++) {
		if (spec_req((uint16_t)op) & T_KNOWN)
			continue;
		for (size_t n = 0; n <= sizeof junk; n += 16) {
			uint8_t *x = exact(junk, n);
			int rc = proto_req_decode((uint16_t)op, x, n, &d);
			free(x);
			CHECKF(rc == -EPROTO, "op %u len %zu: rc %d", op, n, rc);
		}
	}
	/* HELLO is server -> client only: never a request */
	CHECK(proto_req_decode(OP_HELLO, junk, 0, &d) == -EPROTO);
	return 0;
}

static int t_req_trailing_and_truncated(void)
{
	static struct req_store st;
	for (size_t k = 0; k < nknown; k++) {
		uint16_t op = known_ops[k];
		for (int it = 0; it < 4; it++) {
			struct wbuf w;
			wbuf_init(&w, 64);
			enc_req(&w, op, &st, 40, NULL);
			if (w.len > 600) /* keep the quadratic loop small */
				w.len = 0, enc_req(&w, op, &st, 4, NULL);
			struct proto_req d;
			/* every strict prefix fails */
			for (size_t n = 0; n < w.len; n++) {
				uint8_t *x = exact(w.p, n);
				int rc = proto_req_decode(op, x, n, &d);
				free(x);
				CHECKF(rc == -EPROTO, "%s: prefix %zu of %zu decoded (rc %d)", proto_op_name(op), n, w.len,
				       rc);
			}
			/* trailing bytes fail */
			wbuf_u8(&w, 0);
			uint8_t *x = exact(w.p, w.len);
			int rc = proto_req_decode(op, x, w.len, &d);
			free(x);
			CHECKF(rc == -EPROTO, "%s: trailing byte accepted", proto_op_name(op));
			wbuf_free(&w);
		}
	}
	return 0;
}

/* A hand-built LOOKUP payload: cred with ngroups groups, parent, then a name whose length
 * field says name_len_field but which carries name_bytes bytes. */
static void lookup_raw(struct wbuf *w, uint32_t ngroups_field, uint32_t ngroups, uint32_t name_len_field,
		       const void *name, uint32_t name_bytes)
{
	wbuf_u32(w, 1000);
	wbuf_u32(w, 1000);
	wbuf_u32(w, ngroups_field);
	for (uint32_t i = 0; i < ngroups; i++)
		wbuf_u32(w, 100 + i);
	wbuf_u64(w, AQ_ROOT_INO);
	wbuf_u32(w, name_len_field);
	wbuf_put(w, name, name_bytes);
}

/* Decodes w's bytes from an exact copy; d points into that copy until the next call. */
static int decode_buf(uint16_t op, const struct wbuf *w, struct proto_req *d)
{
	static uint8_t *x;
	free(x);
	x = exact(w->p, w->len);
	return proto_req_decode(op, x, w->len, d);
}

static int t_req_reject(void)
{
	struct wbuf w;
	struct proto_req d;
	static char big[AQ_PATH_MAX + 2];
	memset(big, 'x', sizeof big);

	/* the baseline decodes */
	wbuf_init(&w, 64);
	lookup_raw(&w, 32, 32, 3, "abc", 3);
	CHECK(decode_buf(OP_LOOKUP, &w, &d) == 0 && d.cred.ngroups == 32 && d.cred.groups[31] == 131 &&
	      d.name_len == 3 && !memcmp(d.name, "abc", 3));
	/* ngroups > 32, even with the groups present */
	w.len = 0;
	lookup_raw(&w, 33, 33, 3, "abc", 3);
	CHECK(decode_buf(OP_LOOKUP, &w, &d) == -EPROTO);
	w.len = 0;
	lookup_raw(&w, UINT32_MAX, 0, 3, "abc", 3);
	CHECK(decode_buf(OP_LOOKUP, &w, &d) == -EPROTO);
	/* a NUL anywhere in a name */
	for (int pos = 0; pos < 3; pos++) {
		char nm[3] = {'a', 'b', 'c'};
		nm[pos] = 0;
		w.len = 0;
		lookup_raw(&w, 0, 0, 3, nm, 3);
		CHECK(decode_buf(OP_LOOKUP, &w, &d) == -EPROTO);
	}
	/* string length larger than what remains */
	uint32_t lens[] = {4, 100, AQ_PATH_MAX, AQ_PATH_MAX + 1, AQ_FRAME_MAX, UINT32_MAX};
	for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
		w.len = 0;
		lookup_raw(&w, 0, 0, lens[i], "abc", 3);
		CHECK(decode_buf(OP_LOOKUP, &w, &d) == -EPROTO);
	}
	/* a name up to AQ_PATH_MAX passes (the server answers ENAMETOOLONG), one byte more does not */
	w.len = 0;
	lookup_raw(&w, 0, 0, AQ_PATH_MAX, big, AQ_PATH_MAX);
	CHECK(decode_buf(OP_LOOKUP, &w, &d) == 0 && d.name_len == AQ_PATH_MAX);
	w.len = 0;
	lookup_raw(&w, 0, 0, AQ_PATH_MAX + 1, big, AQ_PATH_MAX + 1);
	CHECK(decode_buf(OP_LOOKUP, &w, &d) == -EPROTO);

	/* NUL in the second name (SYMLINK target, RENAME new name) */
	struct proto_req r = {.op = OP_SYMLINK, .parent = 1, .name = "a", .name_len = 1, .name2 = "x\0y",
			      .name2_len = 3};
	w.len = 0;
	proto_req_encode(&w, &r);
	CHECK(decode_buf(OP_SYMLINK, &w, &d) == -EPROTO);
	r.name2 = "xzy";
	w.len = 0;
	proto_req_encode(&w, &r);
	CHECK(decode_buf(OP_SYMLINK, &w, &d) == 0);
	r = (struct proto_req){.op = OP_RENAME, .name = "a", .name_len = 1, .name2 = "b\0", .name2_len = 2};
	w.len = 0;
	proto_req_encode(&w, &r);
	CHECK(decode_buf(OP_RENAME, &w, &d) == -EPROTO);

	/* data may hold NULs (xattr values, chunk bytes), but its length is bounded too */
	r = (struct proto_req){.op = OP_SETXATTR, .ino = 5, .name = "user.k", .name_len = 6,
			       .data = (const uint8_t *)"\0\0\0", .data_len = 3};
	w.len = 0;
	proto_req_encode(&w, &r);
	CHECK(decode_buf(OP_SETXATTR, &w, &d) == 0 && d.data_len == 3);
	w.len = 0;
	wbuf_u32(&w, AQ_FRAME_MAX + 1); /* AUTH: data length over the frame limit */
	CHECK(decode_buf(OP_AUTH, &w, &d) == -EPROTO);
	w.len = 0;
	wbuf_u32(&w, 32);
	wbuf_put(&w, big, 31);
	CHECK(decode_buf(OP_AUTH, &w, &d) == -EPROTO);
	wbuf_free(&w);
	return 0;
}

/* ---- replies and their entries -------------------------------------------------------- */

static int t_reply_roundtrip(void)
{
	static uint8_t data[3000];
	for (uint16_t op = 0; op <= OP_SCAN_MAX; op++) {
		uint32_t f = spec_reply(op);
		struct proto_reply d;
		if (!(f & TR_KNOWN)) {
			CHECKF(proto_reply_decode(op, data, 0, &d) == -EPROTO, "op %u", op);
			CHECKF(proto_reply_decode(op, data, 32, &d) == -EPROTO, "op %u", op);
			continue;
		}
		for (int it = 0; it < 100; it++) {
			struct proto_reply r = {.op = op};
			rnd_attr(&r.attr);
			r.size = (uint32_t)rnd();
			r.data_len = rndn(sizeof data / 2);
			rnd_fill(data, sizeof data);
			r.data = data;
			r.count = (uint32_t)rnd();
			r.eof = (uint8_t)rnd();
			r.next = rnd();
			r.entries = data + 1000;
			r.entries_len = rndn(2000);
			r.st = (struct aq_statfs){rnd(), rnd(), rnd(), rnd(), (uint32_t)rnd(), (uint32_t)rnd(),
						  (uint32_t)rnd(), (uint32_t)rnd()};
			r.tier = (struct proto_tier){rnd(), rnd(), rnd(), rnd(), rnd(), rnd(), rnd(), rnd(), rnd()};
			struct wbuf w;
			wbuf_init(&w, 64);
			proto_reply_encode(&w, &r);
			size_t want = (f & TR_ATTR ? PROTO_ATTR_SIZE : 0) + (f & TR_SIZE ? 4 : 0) +
				      (f & TR_DATA ? 4 + r.data_len : 0) + (f & TR_ENTRIES ? 17 + r.entries_len : 0) +
				      (f & TR_STATFS ? 48 : 0) + (f & TR_TIER ? 72 : 0);
			uint8_t *x = exact(w.p, w.len);
			size_t len = w.len;
			wbuf_free(&w);
			int rc = proto_reply_decode(op, x, len, &d);
			bool ok = len == want && rc == 0 && d.op == op;
			if (ok && (f & TR_ATTR))
				ok = !memcmp(&d.attr, &r.attr, sizeof r.attr);
			if (ok && (f & TR_SIZE))
				ok = d.size == r.size;
			if (ok && (f & TR_DATA))
				ok = d.data_len == r.data_len && !memcmp(d.data, r.data, r.data_len);
			if (ok && (f & TR_ENTRIES))
				ok = d.count == r.count && d.eof == r.eof && d.next == r.next &&
				     d.entries_len == r.entries_len && !memcmp(d.entries, r.entries, r.entries_len);
			if (ok && (f & TR_STATFS))
				ok = !memcmp(&d.st, &r.st, sizeof r.st);
			if (ok && (f & TR_TIER))
				ok = !memcmp(&d.tier, &r.tier, sizeof r.tier);
			if (ok && (f & TR_TIER) && (f & TR_DATA)) /* the text comes first, then the figures */
				ok = get_le64(x + 4 + r.data_len) == r.tier.bytes &&
				     get_le64(x + 4 + r.data_len + 64) == r.tier.live_bytes;
			/* every strict prefix and one trailing byte fail */
			for (size_t n = 0; ok && n < len; n += 1 + (n > 120 ? 37 : 0)) {
				struct proto_reply e;
				uint8_t *y = exact(x, n);
				ok = proto_reply_decode(op, y, n, &e) == -EPROTO;
				free(y);
			}
			free(x);
			CHECKF(ok, "%s: reply round trip / truncation (len %zu want %zu rc %d)", proto_op_name(op), len,
			       want, rc);
		}
	}
	return 0;
}

static int t_dirent_roundtrip(void)
{
	for (int plus = 0; plus < 2; plus++) {
		struct wbuf w;
		wbuf_init(&w, 4096);
		static struct aq_dirent in[200];
		for (int i = 0; i < 200; i++) {
			struct aq_dirent *e = &in[i];
			memset(e, 0, sizeof *e);
			e->ino = rnd();
			e->cookie = rnd();
			e->type = rndn(256);
			e->name_len = i == 0 ? 0 : i == 1 ? AQ_NAME_MAX : rndn(AQ_NAME_MAX + 1);
			rnd_name(e->name, e->name_len);
			if (plus)
				rnd_attr(&e->attr);
			proto_dirent_put(&w, e, plus);
		}
		uint8_t *x = exact(w.p, w.len);
		struct rbuf rb;
		rbuf_init(&rb, x, w.len);
		int rc = 0;
		for (int i = 0; i < 200 && !rc; i++) {
			struct aq_dirent d;
			if (proto_dirent_get(&rb, &d, plus) || d.ino != in[i].ino || d.cookie != in[i].cookie ||
			    d.type != in[i].type || d.name_len != in[i].name_len ||
			    memcmp(d.name, in[i].name, d.name_len) || d.name[d.name_len] != 0 ||
			    memcmp(&d.attr, &in[i].attr, sizeof d.attr))
				rc = -1, snprintf(g_why, sizeof g_why, "plus %d: entry %d differs", plus, i);
		}
		if (!rc && rb.pos != rb.len)
			rc = -1, snprintf(g_why, sizeof g_why, "plus %d: bytes left over", plus);
		struct aq_dirent d;
		if (!rc && proto_dirent_get(&rb, &d, plus) != -EPROTO)
			rc = -1, snprintf(g_why, sizeof g_why, "plus %d: read past the end", plus);
		free(x);
		wbuf_free(&w);
		if (rc)
			return rc;
	}
	/* rejects: name over AQ_NAME_MAX, NUL in the name, every truncation */
	struct wbuf w;
	wbuf_init(&w, 512);
	char nm[AQ_NAME_MAX + 1];
	memset(nm, 'n', sizeof nm);
	struct aq_dirent d;
	struct rbuf rb;
	wbuf_u64(&w, 1); wbuf_u64(&w, 2); wbuf_u8(&w, 8); wbuf_str(&w, nm, AQ_NAME_MAX + 1);
	rbuf_init(&rb, w.p, w.len);
	CHECK(proto_dirent_get(&rb, &d, false) == -EPROTO);
	w.len = 0;
	wbuf_u64(&w, 1); wbuf_u64(&w, 2); wbuf_u8(&w, 8); wbuf_str(&w, "a\0b", 3);
	rbuf_init(&rb, w.p, w.len);
	CHECK(proto_dirent_get(&rb, &d, false) == -EPROTO);
	for (int plus = 0; plus < 2; plus++) {
		w.len = 0;
		struct aq_dirent e = {.ino = 7, .cookie = 9, .type = 4, .name_len = 5};
		memcpy(e.name, "hello", 5);
		proto_dirent_put(&w, &e, plus);
		for (size_t n = 0; n < w.len; n++) {
			uint8_t *x = exact(w.p, n);
			rbuf_init(&rb, x, n);
			int rc = proto_dirent_get(&rb, &d, plus);
			free(x);
			CHECKF(rc == -EPROTO, "plus %d prefix %zu", plus, n);
		}
	}
	wbuf_free(&w);
	return 0;
}

/* A CHUNK_WRITE's extent table: what adds up decodes, anything else is EINVAL. */
static int t_extents_decode(void)
{
	static struct aq_extent ext[PROTO_CW_EXTENTS_MAX];
	static uint8_t buf[4 + 8 * (PROTO_CW_EXTENTS_MAX + 1) + 64];
	uint32_t n = 0;
	const uint8_t *bytes = NULL;
	/* two extents, 3 + 5 bytes */
	uint8_t chunk[200] = {0};
	memcpy(chunk + 10, "abc", 3);
	memcpy(chunk + 100, "defgh", 5);
	struct aq_extent two[2] = {{10, 3}, {100, 5}};
	size_t elen = 0;
	const uint8_t *src[2] = {chunk + 10, chunk + 100};
	uint8_t *enc = proto_extents_encode(two, 2, src, &elen);
	CHECK(elen == 28);
	memcpy(buf, enc, elen);
	free(enc);
	CHECK(memcmp(buf + 20, "abcdefgh", 8) == 0);
	CHECK(proto_extents_decode(buf, 28, ext, &n, &bytes) == 0);
	CHECK(n == 2 && ext[0].off == 10 && ext[0].len == 3 && ext[1].off == 100 && ext[1].len == 5);
	CHECK(bytes == buf + 20);
	CHECK(proto_extents_decode(buf, 27, ext, &n, &bytes) == -EINVAL); /* a byte short */
	CHECK(proto_extents_decode(buf, 29, ext, &n, &bytes) == -EINVAL); /* a byte over */
	CHECK(proto_extents_decode(buf, 3, ext, &n, &bytes) == -EINVAL);  /* no count */
	CHECK(proto_extents_decode(buf, 12, ext, &n, &bytes) == -EINVAL); /* half a table */
	put_le32(buf, 0);
	CHECK(proto_extents_decode(buf, 4, ext, &n, &bytes) == -EINVAL); /* none */
	put_le32(buf, PROTO_CW_EXTENTS_MAX + 1);
	memset(buf + 4, 0, sizeof buf - 4);
	CHECK(proto_extents_decode(buf, sizeof buf, ext, &n, &bytes) == -EINVAL); /* too many */
	put_le32(buf, 1);
	put_le32(buf + 4, 0), put_le32(buf + 8, 0xfffffff0u); /* a length past the frame */
	CHECK(proto_extents_decode(buf, 20, ext, &n, &bytes) == -EINVAL);
	return 0;
}

static int t_change_roundtrip(void)
{
	struct wbuf w;
	wbuf_init(&w, 4096);
	static struct { uint64_t ino, ts; char name[AQ_NAME_MAX]; uint32_t len; } in[100];
	for (int i = 0; i < 100; i++) {
		in[i].ino = rnd();
		in[i].ts = rnd();
		in[i].len = i == 0 ? 0 : i == 1 ? AQ_NAME_MAX : rndn(AQ_NAME_MAX + 1);
		rnd_name(in[i].name, in[i].len);
		proto_change_put(&w, in[i].ino, in[i].ts, in[i].name, in[i].len);
	}
	uint8_t *x = exact(w.p, w.len);
	struct rbuf rb;
	rbuf_init(&rb, x, w.len);
	int rc = 0;
	for (int i = 0; i < 100 && !rc; i++) {
		struct proto_change c;
		if (proto_change_get(&rb, &c) || c.ino != in[i].ino || c.ts != in[i].ts || c.name_len != in[i].len ||
		    memcmp(c.name, in[i].name, c.name_len))
			rc = -1, snprintf(g_why, sizeof g_why, "entry %d differs", i);
	}
	struct proto_change c;
	if (!rc && (rb.pos != rb.len || proto_change_get(&rb, &c) != -EPROTO))
		rc = -1, snprintf(g_why, sizeof g_why, "end of entries not detected");
	free(x);
	if (rc) {
		wbuf_free(&w);
		return rc;
	}
	char nm[AQ_NAME_MAX + 1];
	memset(nm, 'n', sizeof nm);
	w.len = 0;
	proto_change_put(&w, 1, 2, nm, AQ_NAME_MAX + 1);
	rbuf_init(&rb, w.p, w.len);
	CHECK(proto_change_get(&rb, &c) == -EPROTO);
	/* regression: a change entry's name with a NUL inside decoded (dirents reject it) */
	w.len = 0;
	proto_change_put(&w, 1, 2, "a\0b", 3);
	rbuf_init(&rb, w.p, w.len);
	CHECK(proto_change_get(&rb, &c) == -EPROTO);
	w.len = 0;
	proto_change_put(&w, 1, 2, "hello", 5);
	for (size_t n = 0; n < w.len; n++) {
		uint8_t *y = exact(w.p, n);
		rbuf_init(&rb, y, n);
		int r2 = proto_change_get(&rb, &c);
		free(y);
		CHECKF(r2 == -EPROTO, "prefix %zu", n);
	}
	wbuf_free(&w);
	return 0;
}

/* ---- locks ---------------------------------------------------------------------------- */

/* A LOCK reply's lock: what goes out comes back; a wrong length, type or range is refused. */
static int t_lock_roundtrip(void)
{
	struct aq_lock in = {.type = AQ_LK_WR, .pid = 4242, .start = 10, .end = AQ_LK_END}, out;
	uint8_t b[PROTO_LOCK_SIZE + 1];
	proto_lock_put(b, &in);
	if (proto_lock_get(b, PROTO_LOCK_SIZE, &out) || memcmp(&in, &out, sizeof in))
		return -1;
	if (proto_lock_get(b, PROTO_LOCK_SIZE - 1, &out) != -EPROTO || proto_lock_get(b, PROTO_LOCK_SIZE + 1, &out) != -EPROTO)
		return -1;
	struct aq_lock bad[] = {{.type = 3}, {.type = AQ_LK_RD, .start = 5, .end = 4},
				{.type = AQ_LK_RD, .end = AQ_LK_END + 1}};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		proto_lock_put(b, &bad[i]);
		if (proto_lock_get(b, PROTO_LOCK_SIZE, &out) != -EPROTO)
			return -1;
	}
	return 0;
}

/* ---- OPEN_MAP locations ------------------------------------------------------------------ */

/* A location comes back as put; every prefix, a byte more, and each field out of shape
 * (a relative path, a NUL in it, bytes past the chunk, blocks that do not cover them, too
 * many blocks) is -EPROTO: a client never reads from a file a malformed reply names. */
static int t_loc_roundtrip(void)
{
	uint32_t crc[4] = {0x11111111, 0x22222222, 0x33333333, 0x44444444};
	struct proto_loc l = {.rec_off = 1u << 20, .version = 9, .idx = 2, .length = 3 * AQ_CRC_BLOCK_SIZE + 5,
			      .in = 100, .n = 3 * AQ_CRC_BLOCK_SIZE - 95, .nblk = 4,
			      .path = "/var/aq/t0/seg-00000001", .path_len = 23};
	struct wbuf w;
	wbuf_init(&w, 256);
	proto_loc_put(&w, &l, crc);
	struct proto_loc g;
	uint8_t *x = exact(w.p, w.len);
	int rc = proto_loc_get(x, (uint32_t)w.len, &g);
	bool same = rc == 0 && g.rec_off == l.rec_off && g.version == l.version && g.idx == l.idx &&
		    g.length == l.length && g.in == l.in && g.n == l.n && g.nblk == 4 &&
		    g.path_len == l.path_len && memcmp(g.path, l.path, l.path_len) == 0 &&
		    get_le32(g.crcs + 12) == crc[3];
	free(x);
	for (size_t n = 0; same && n < w.len; n++) {
		uint8_t *y = exact(w.p, n);
		int r2 = proto_loc_get(y, (uint32_t)n, &g);
		free(y);
		CHECKF(r2 == -EPROTO, "prefix %zu", n);
	}
	wbuf_u8(&w, 0);
	int longer = proto_loc_get(w.p, (uint32_t)w.len, &g);
	struct { const char *why; struct proto_loc l; } bad[] = {
		{"relative path", l}, {"NUL in the path", l}, {"empty path", l}, {"past the chunk", l},
		{"blocks short", l}, {"blocks over", l}, {"nothing to read", l},
	};
	bad[0].l.path = "var/aq/t0/seg-00000001", bad[0].l.path_len = 22;
	bad[1].l.path = "/var/aq\0/seg", bad[1].l.path_len = 12;
	bad[2].l.path_len = 0;
	bad[3].l.n = l.length - l.in + 1, bad[3].l.nblk = 4;
	bad[4].l.nblk = 3;
	bad[5].l.nblk = 5;
	bad[6].l.n = 0, bad[6].l.nblk = 1;
	uint32_t many[AQ_CHUNK_SIZE_MAX / AQ_CRC_BLOCK_SIZE + 1] = {0};
	int wrong = -1;
	for (size_t i = 0; i < ARRAY_SIZE(bad) && wrong < 0; i++) {
		w.len = 0;
		proto_loc_put(&w, &bad[i].l, many);
		if (proto_loc_get(w.p, (uint32_t)w.len, &g) != -EPROTO)
			wrong = (int)i;
	}
	struct proto_loc huge = l;
	huge.length = AQ_CHUNK_SIZE_MAX + AQ_CRC_BLOCK_SIZE, huge.in = 0, huge.n = huge.length;
	huge.nblk = ARRAY_SIZE(many);
	w.len = 0;
	proto_loc_put(&w, &huge, many);
	int toolong = proto_loc_get(w.p, (uint32_t)w.len, &g);
	wbuf_free(&w);
	CHECKF(same, "decoded differently (rc %d)", rc);
	CHECK(longer == -EPROTO);
	CHECKF(wrong < 0, "accepted: %s", wrong < 0 ? "" : bad[wrong].why);
	CHECK(toolong == -EPROTO);
	return 0;
}

/* ---- INVAL pushes ------------------------------------------------------------------------ */

static int t_inval_roundtrip(void)
{
	struct wbuf w;
	wbuf_init(&w, 4096);
	static struct { uint8_t kind; uint64_t ino; char name[AQ_NAME_MAX]; uint32_t len; } in[200];
	for (int i = 0; i < 200; i++) {
		in[i].kind = rndn(2) ? PROTO_INVAL_INODE : PROTO_INVAL_ENTRY;
		in[i].ino = rnd();
		in[i].len = in[i].kind == PROTO_INVAL_INODE ? 0 : i % 50 == 1 ? AQ_NAME_MAX : 1 + rndn(AQ_NAME_MAX);
		rnd_name(in[i].name, in[i].len);
		if (in[i].kind == PROTO_INVAL_INODE)
			proto_inval_inode(&w, in[i].ino);
		else
			proto_inval_entry(&w, in[i].ino, in[i].name, in[i].len);
	}
	uint8_t *x = exact(w.p, w.len);
	struct rbuf rb;
	rbuf_init(&rb, x, w.len);
	uint8_t kind;
	uint64_t ino;
	const char *name;
	uint32_t len;
	int rc = 0;
	for (int i = 0; i < 200 && !rc; i++) {
		if (proto_inval_next(&rb, &kind, &ino, &name, &len) != 1 || kind != in[i].kind || ino != in[i].ino ||
		    len != in[i].len || (len && memcmp(name, in[i].name, len)))
			rc = -1, snprintf(g_why, sizeof g_why, "record %d differs", i);
	}
	if (!rc && proto_inval_next(&rb, &kind, &ino, &name, &len) != 0)
		rc = -1, snprintf(g_why, sizeof g_why, "end of records not detected");
	free(x);
	if (rc) {
		wbuf_free(&w);
		return rc;
	}
	/* every cut short record, an unknown kind, a NUL or an overlong name: -EPROTO */
	w.len = 0;
	proto_inval_entry(&w, 7, "hello", 5);
	for (size_t n = 1; n < w.len; n++) {
		uint8_t *y = exact(w.p, n);
		rbuf_init(&rb, y, n);
		int r2 = proto_inval_next(&rb, &kind, &ino, &name, &len);
		free(y);
		CHECKF(r2 == -EPROTO, "prefix %zu", n);
	}
	w.p[0] = 9;
	rbuf_init(&rb, w.p, w.len);
	CHECK(proto_inval_next(&rb, &kind, &ino, &name, &len) == -EPROTO);
	w.len = 0;
	proto_inval_entry(&w, 7, "a\0b", 3);
	rbuf_init(&rb, w.p, w.len);
	CHECK(proto_inval_next(&rb, &kind, &ino, &name, &len) == -EPROTO);
	char nm[AQ_NAME_MAX + 1];
	memset(nm, 'n', sizeof nm);
	w.len = 0;
	proto_inval_entry(&w, 7, nm, AQ_NAME_MAX + 1);
	rbuf_init(&rb, w.p, w.len);
	CHECK(proto_inval_next(&rb, &kind, &ino, &name, &len) == -EPROTO);
	wbuf_free(&w);
	return 0;
}

/* ---- TIER bodies ------------------------------------------------------------------------ */

static int t_tier_inos(void)
{
	struct wbuf w;
	wbuf_init(&w, 8 * (PROTO_TIER_INOS_MAX + 1));
	CHECK(proto_tier_inos(NULL, 0) == 0);
	for (uint32_t i = 0; i < PROTO_TIER_INOS_MAX + 1; i++)
		wbuf_u64(&w, rnd());
	/* whole numbers of u64 up to the limit decode; anything else does not */
	uint32_t lens[] = {8, 16, 8 * 100, 8 * PROTO_TIER_INOS_MAX};
	for (size_t k = 0; k < ARRAY_SIZE(lens); k++) {
		uint8_t *x = exact(w.p, lens[k]);
		int n = proto_tier_inos(x, lens[k]);
		bool same = n == (int)(lens[k] / 8);
		for (int i = 0; same && i < n; i++)
			same = proto_tier_ino(x, (uint32_t)i) == get_le64(w.p + 8 * i);
		free(x);
		CHECKF(same, "len %u: n %d", lens[k], n);
	}
	uint32_t bad[] = {1, 7, 9, 8 * PROTO_TIER_INOS_MAX + 1, 8 * (PROTO_TIER_INOS_MAX + 1)};
	for (size_t k = 0; k < ARRAY_SIZE(bad); k++) {
		AQ_ASSERT(bad[k] <= w.len);
		uint8_t *x = exact(w.p, bad[k]);
		int rc = proto_tier_inos(x, bad[k]);
		free(x);
		CHECKF(rc == -EPROTO, "len %u accepted", bad[k]);
	}
	/* the shape alone decides: a huge length is refused before any byte is read */
	CHECK(proto_tier_inos(w.p, UINT32_MAX - 7) == -EPROTO);
	CHECK(proto_tier_inos(NULL, 8) == -EPROTO);
	/* a whole DEMOTE request round-trips through the generic decoder */
	struct proto_req r = {.op = OP_TIER, .cred = {.uid = 7}, .flags = PROTO_TIER_DEMOTE, .data = w.p,
			      .data_len = 8 * PROTO_TIER_INOS_MAX};
	struct wbuf e;
	wbuf_init(&e, 64);
	proto_req_encode(&e, &r);
	struct proto_req d;
	CHECK(decode_buf(OP_TIER, &e, &d) == 0 && d.flags == PROTO_TIER_DEMOTE &&
	      proto_tier_inos(d.data, d.data_len) == PROTO_TIER_INOS_MAX);
	wbuf_free(&e);
	wbuf_free(&w);
	return 0;
}

/* ---- batches -------------------------------------------------------------------------- */

/* Appends one sub-frame (header + payload) to w; returns the payload length. */
static uint32_t put_sub(struct wbuf *w, uint16_t op, uint64_t id, const struct wbuf *payload)
{
	struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = op, .req_id = id,
			      .payload_len = (uint32_t)payload->len};
	uint8_t hb[PROTO_HDR_SIZE];
	proto_hdr_encode(hb, &h);
	wbuf_put(w, hb, sizeof hb);
	wbuf_put(w, payload->p, payload->len);
	return (uint32_t)payload->len;
}

static int t_batch(void)
{
	static struct req_store st;
	static const uint16_t ops[] = {OP_LOOKUP, OP_GETATTR, OP_MKNOD, OP_MAP, OP_READDIR};
	struct wbuf b, p;
	wbuf_init(&b, 1024);
	wbuf_init(&p, 256);
	size_t ends[ARRAY_SIZE(ops)];
	for (size_t i = 0; i < ARRAY_SIZE(ops); i++) {
		p.len = 0;
		enc_req(&p, ops[i], &st, 20, NULL);
		put_sub(&b, ops[i], 100 + i, &p);
		ends[i] = b.len;
	}
	/* the whole batch: each sub-frame in order, payloads decode, then the end */
	uint8_t *x = exact(b.p, b.len);
	struct rbuf rb;
	rbuf_init(&rb, x, b.len);
	int rc = 0;
	for (size_t i = 0; i < ARRAY_SIZE(ops) && !rc; i++) {
		struct proto_hdr h;
		const uint8_t *pl;
		struct proto_req d;
		if (proto_batch_next(&rb, &h, &pl) || h.op != ops[i] || h.req_id != 100 + i || rb.pos != ends[i] ||
		    proto_req_decode(h.op, pl, h.payload_len, &d))
			rc = -1, snprintf(g_why, sizeof g_why, "sub-frame %zu", i);
	}
	struct proto_hdr h;
	const uint8_t *pl;
	if (!rc && (rb.pos != rb.len || proto_batch_next(&rb, &h, &pl) != -EPROTO))
		rc = -1, snprintf(g_why, sizeof g_why, "end of batch not detected");
	free(x);
	/* every truncation: the complete sub-frames come out, then an error (or a clean end) */
	for (size_t n = 0; n < b.len && !rc; n++) {
		size_t complete = 0;
		while (complete < ARRAY_SIZE(ops) && ends[complete] <= n)
			complete++;
		x = exact(b.p, n);
		rbuf_init(&rb, x, n);
		size_t got = 0;
		int last;
		while ((last = proto_batch_next(&rb, &h, &pl)) == 0)
			got++;
		free(x);
		if (got != complete || last != -EPROTO)
			rc = -1, snprintf(g_why, sizeof g_why, "prefix %zu: %zu sub-frames, want %zu (rc %d)", n, got,
					  complete, last);
	}
	/* a nested batch, a bad version, a payload over the frame limit */
	p.len = 0;
	wbuf_u32(&p, 0);
	wbuf_u32(&p, 0);
	for (int kind = 0; kind < 3 && !rc; kind++) {
		struct wbuf c;
		wbuf_init(&c, 256);
		put_sub(&c, OP_GETATTR, 1, &p); /* wrong payload for GETATTR, but the header is fine */
		size_t at = c.len;
		put_sub(&c, kind == 0 ? OP_BATCH : OP_GETATTR, 2, &p);
		if (kind == 1)
			put_le16(c.p + at + 4, PROTO_VERSION + 1);
		if (kind == 2)
			put_le32(c.p + at + 24, AQ_FRAME_MAX + 1);
		x = exact(c.p, c.len);
		rbuf_init(&rb, x, c.len);
		int r1 = proto_batch_next(&rb, &h, &pl);
		int r2 = proto_batch_next(&rb, &h, &pl);
		free(x);
		wbuf_free(&c);
		int want = kind == 1 ? -AQ_EBAD_VERSION : -EPROTO;
		if (r1 != 0 || r2 != want)
			rc = -1, snprintf(g_why, sizeof g_why, "kind %d: rc %d %d", kind, r1, r2);
	}
	wbuf_free(&b);
	wbuf_free(&p);
	return rc;
}

/* ---- cluster.conf and placement -------------------------------------------------------- */

static char g_dir[256];

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -errno;
	fputs(text, f);
	fclose(f);
	return 0;
}

static int t_cluster_roundtrip(void)
{
	struct cluster_map m, l;
	char path[400], err[512] = "";
	snprintf(path, sizeof path, "%s/cluster.conf", g_dir);
	cluster_init_single(&m, "127.0.0.1", 7420, 4, 256, 1 << 20);
	m.epoch = 17;
	m.nservers = 3;
	m.servers[1] = (struct cluster_server){.id = 5, .port = 7421};
	snprintf(m.servers[1].addr, sizeof m.servers[1].addr, "node-b.example");
	m.servers[2] = (struct cluster_server){.id = 9, .port = 65535};
	snprintf(m.servers[2].addr, sizeof m.servers[2].addr, "10.0.0.3");
	m.targets[m.ntargets++] = (struct cluster_target){.id = 40, .server = 5, .weight = 3};
	m.targets[m.ntargets++] = (struct cluster_target){.id = 41, .server = 9, .weight = 1};
	CHECK(cluster_save(path, &m) == 0);
	struct stat sb;
	CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0600);
	int rc = cluster_load(path, &l, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK(!strcmp(l.cluster_id, m.cluster_id) && !memcmp(l.secret, m.secret, sizeof m.secret));
	CHECK(l.epoch == 17 && l.nbuckets == 256 && l.chunk_size == 1 << 20);
	CHECK(l.nservers == 3 && l.ntargets == 6);
	for (uint32_t i = 0; i < l.nservers; i++)
		CHECK(l.servers[i].id == m.servers[i].id && l.servers[i].port == m.servers[i].port &&
		      !strcmp(l.servers[i].addr, m.servers[i].addr));
	for (uint32_t i = 0; i < l.ntargets; i++)
		CHECK(l.targets[i].id == m.targets[i].id && l.targets[i].server == m.targets[i].server &&
		      l.targets[i].weight == m.targets[i].weight);
	/* placement agrees between the saved and the loaded map */
	for (uint32_t i = 0; i < 1000; i++)
		CHECK(cluster_chunk_target(&m, i * 7919ull, i) == cluster_chunk_target(&l, i * 7919ull, i));
	/* saving again gives the same file */
	char path2[400];
	snprintf(path2, sizeof path2, "%s/cluster2.conf", g_dir);
	CHECK(cluster_save(path2, &l) == 0);
	char a[8192], b[8192];
	FILE *fa = fopen(path, "r"), *fb = fopen(path2, "r");
	CHECK(fa && fb);
	size_t na = fread(a, 1, sizeof a, fa), nb = fread(b, 1, sizeof b, fb);
	fclose(fa);
	fclose(fb);
	CHECK(na == nb && !memcmp(a, b, na));
	/* comments, blank lines, spaces and unknown keys are fine */
	char hex[2 * CLUSTER_SECRET_SIZE + 1], text[1024];
	hex_encode(m.secret, CLUSTER_SECRET_SIZE, hex);
	snprintf(text, sizeof text, "# c\n\n  secret =  %s  \r\nbuckets=8\nchunk_size = 4096\nfuture_key = 1\n"
		 "server = 0 ::1:7000\ntarget = 0 0 1\n", hex);
	CHECK(write_file(path, text) == 0);
	rc = cluster_load(path, &l, err, sizeof err);
	CHECKF(rc == 0, "%s", err);
	CHECK(l.nbuckets == 8 && l.servers[0].port == 7000 && !strcmp(l.servers[0].addr, "::1"));
	return 0;
}

static int t_cluster_malformed(void)
{
	char path[400], err[256], text[1024];
	snprintf(path, sizeof path, "%s/bad.conf", g_dir);
	const char *hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
	const char *good_tail = "buckets = 8\nchunk_size = 4096\nserver = 0 127.0.0.1:7000\ntarget = 0 0 1\n";
	/* the good file loads: each case below breaks one thing */
	snprintf(text, sizeof text, "secret = %s\n%s", hex, good_tail);
	CHECK(write_file(path, text) == 0);
	struct cluster_map m;
	CHECKF(cluster_load(path, &m, err, sizeof err) == 0, "%s", err);
	const char *bad[] = {
		"secret = 0011\n",                      /* short secret */
		"secret = zz112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
		"just some words\n",                    /* no '=' */
		"server = banana\n",
		"server = 1 hostwithoutport\n",
		"server = 1 host:0\n",
		"server = 1 host:70000\n",
		"server = 1 :7000\n",
		"target = 1 0\n",
		"target = 1 0 0\n",                     /* weight 0 */
		"target = 1 77 1\n",                    /* unknown server */
		"buckets = 0\n",
		"buckets = 5000\n",
		"chunk_size = 100\n",
		"chunk_size = 1000000000\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		/* later keys override earlier ones, so the bad line comes last */
		snprintf(text, sizeof text, "secret = %s\n%s%s", hex, good_tail, bad[i]);
		CHECK(write_file(path, text) == 0);
		err[0] = 0;
		int rc = cluster_load(path, &m, err, sizeof err);
		CHECKF(rc == -EINVAL && err[0], "case %zu (%s): rc %d err '%s'", i, bad[i], rc, err);
	}
	/* missing pieces */
	const char *incomplete[] = {"", "# nothing\n", "buckets = 8\nchunk_size = 4096\nserver = 0 h:1\ntarget = 0 0 1\n"};
	for (size_t i = 0; i < ARRAY_SIZE(incomplete); i++) {
		CHECK(write_file(path, incomplete[i]) == 0);
		err[0] = 0;
		int rc = cluster_load(path, &m, err, sizeof err);
		CHECKF(rc == -EINVAL && err[0], "incomplete case %zu: rc %d", i, rc);
	}
	char missing[400];
	snprintf(missing, sizeof missing, "%s/no-such.conf", g_dir);
	err[0] = 0;
	CHECK(cluster_load(missing, &m, err, sizeof err) == -ENOENT && err[0]);
	return 0;
}

/* fs/inode.c hash() of Linux 6.x, as fuse_iget hashes a node id (iget5_locked(sb, nodeid)),
 * for a table of 2^shift chains and a superblock at sb. */
static unsigned long kernel_inode_hash(unsigned long sb, unsigned long hashval, unsigned shift)
{
	const unsigned long golden = 0x9e37fffffffc0001ul; /* GOLDEN_RATIO_PRIME */
	unsigned long tmp = (hashval * sb) ^ (golden + hashval) / 64;
	tmp = tmp ^ ((tmp ^ golden) >> shift);
	return tmp & ((1ul << shift) - 1);
}

/* The longest chain of the kernel's inode hash holding buckets x seqs inodes. */
static unsigned longest_chain(uint64_t (*node_of)(uint64_t), unsigned buckets, unsigned seqs)
{
	const unsigned shift = 20;
	uint16_t *len = calloc(1u << shift, sizeof *len);
	unsigned worst = 0;
	for (unsigned b = 0; b < buckets; b++)
		for (unsigned q = 1; q <= seqs; q++) {
			unsigned long h = kernel_inode_hash(0xffff888104a2c000ul, node_of(aq_ino_make(b, q)), shift);
			if (++len[h] > worst)
				worst = len[h];
		}
	free(len);
	return worst;
}

static uint64_t node_is_ino(uint64_t ino) { return ino; }

static int t_fuse_node_ids(void)
{
	CHECK(aq_ino_node(AQ_ROOT_INO) == 1); /* FUSE_ROOT_ID */
	CHECK(aq_ino_node(0) == 0);
	uint64_t x = 0x1234;
	for (int i = 0; i < 100000; i++) {
		x = x * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t ino = aq_ino_make((uint32_t)(x >> 52) % AQ_BUCKETS_MAX, x & AQ_INO_SEQ_MASK);
		uint64_t node = aq_ino_node(ino);
		CHECKF(aq_node_ino(node) == ino, "%llx", (unsigned long long)ino);
		CHECK(aq_ino_bucket(node) == aq_ino_bucket(ino));
		CHECK(node > 1 || ino == node);
	}
	/* 256 buckets x 4,000 sequence numbers: with node id = inode number the kernel's
	 * chains are 256 long; spread, about as long as a million random keys in 2^20 chains
	 * make them (~10) */
	CHECK(longest_chain(node_is_ino, 256, 4000) >= 256);
	unsigned worst = longest_chain(aq_ino_node, 256, 4000);
	CHECKF(worst <= 16, "longest chain %u", worst);
	return 0;
}

static int t_placement(void)
{
	static struct cluster_map m4, m5;
	cluster_init_single(&m4, "127.0.0.1", 7420, 4, 64, 1 << 20);
	m5 = m4;
	m5.targets[m5.ntargets++] = (struct cluster_target){.id = 4, .server = 0, .weight = 1};
	enum { N = 100000 };
	uint32_t count[5] = {0}, moved = 0;
	for (uint32_t i = 0; i < N; i++) {
		uint64_t ino = aq_ino_make(i % 64, 2 + i / 16);
		uint32_t idx = i % 16;
		uint32_t t4 = cluster_chunk_target(&m4, ino, idx);
		CHECK(t4 < 4);
		CHECK(t4 == cluster_chunk_target(&m4, ino, idx)); /* deterministic */
		count[t4]++;
		uint32_t t5 = cluster_chunk_target(&m5, ino, idx);
		if (t5 != t4) {
			moved++;
			CHECKF(t5 == 4, "chunk moved between old targets %u -> %u", t4, t5); /* only to the new one */
		}
	}
	for (int t = 0; t < 4; t++)
		CHECKF(count[t] >= N / 4 * 95 / 100 && count[t] <= N / 4 * 105 / 100, "target %d holds %u of %d", t,
		       count[t], N);
	CHECKF(moved >= N * 15 / 100 && moved <= N * 25 / 100, "%u of %d moved", moved, N);
	/* pinned: placement decides where data lives, so it must never change */
	char got[25];
	for (uint32_t i = 0; i < 24; i++)
		got[i] = (char)('0' + cluster_chunk_target(&m4, 1000 + i, i % 3));
	got[24] = 0;
	CHECKF(!strcmp(got, "222323331013333312131220"), "placement of chunks (1000.., i %% 3) is %s", got);
	/* weight: a target of weight 3 among three of weight 1 gets about half */
	m4.targets[0].weight = 3;
	uint32_t heavy = 0;
	for (uint32_t i = 0; i < 20000; i++)
		heavy += cluster_chunk_target(&m4, 1000 + i, i % 7) == m4.targets[0].id;
	CHECKF(heavy > 9000 && heavy < 11000, "weight-3 target holds %u of 20000", heavy);
	return 0;
}

/* ---- deterministic fuzz ---------------------------------------------------------------- */

static uint64_t g_sink; /* keeps the decoders' results alive */

/* Runs every decoder over one buffer of exactly len bytes. */
static void fuzz_one(const uint8_t *buf, size_t len, uint16_t hint_op)
{
	struct proto_hdr h;
	struct proto_req r;
	struct proto_reply rep;
	if (proto_hdr_decode(buf, len, &h) == 0) {
		g_sink += h.op;
		size_t plen = MIN((size_t)h.payload_len, len - PROTO_HDR_SIZE);
		const uint8_t *pl = buf + PROTO_HDR_SIZE;
		if (!proto_req_decode(h.op, pl, plen, &r))
			g_sink += r.name_len + r.data_len;
		if (!proto_reply_decode(h.op, pl, plen, &rep))
			g_sink += rep.data_len;
	}
	/* the whole buffer as a payload of every opcode */
	for (uint16_t op = 0; op <= OP_SCAN_MAX; op++) {
		if (!proto_req_decode(op, buf, len, &r)) {
			g_sink += r.name_len + r.name2_len + r.data_len + (r.name_len ? (uint8_t)r.name[r.name_len - 1] : 0);
			int n = op == OP_TIER ? proto_tier_inos(r.data, r.data_len) : -1;
			for (int i = 0; i < n; i++)
				g_sink += proto_tier_ino(r.data, (uint32_t)i);
		}
		if (!proto_reply_decode(op, buf, len, &rep)) {
			g_sink += rep.data_len + rep.entries_len;
			if (rep.entries_len)
				g_sink += rep.entries[rep.entries_len - 1];
		}
	}
	(void)hint_op;
	/* entry streams and batches */
	struct rbuf rb;
	struct aq_dirent e;
	for (int plus = 0; plus < 2; plus++) {
		rbuf_init(&rb, buf, len);
		while (proto_dirent_get(&rb, &e, plus) == 0)
			g_sink += e.name_len;
	}
	struct proto_change c;
	rbuf_init(&rb, buf, len);
	while (proto_change_get(&rb, &c) == 0)
		g_sink += c.name_len;
	struct proto_loc loc;
	if (proto_loc_get(buf, (uint32_t)len, &loc) == 0)
		g_sink += loc.path_len + (uint8_t)loc.path[loc.path_len - 1] + get_le32(loc.crcs + 4 * (loc.nblk - 1));
	rbuf_init(&rb, buf, len);
	const uint8_t *pl;
	while (proto_batch_next(&rb, &h, &pl) == 0) {
		if (!proto_req_decode(h.op, pl, h.payload_len, &r))
			g_sink += r.name_len;
		if (h.payload_len)
			g_sink += pl[h.payload_len - 1];
	}
}

/* A valid frame (header + payload) or a valid batch payload, for mutation. */
static void valid_input(struct wbuf *w, uint16_t *op_out)
{
	static struct req_store st;
	w->len = 0;
	uint32_t kind = rndn(4);
	if (kind == 3) { /* a batch payload */
		struct wbuf p;
		wbuf_init(&p, 128);
		uint32_t n = 1 + rndn(4);
		for (uint32_t i = 0; i < n; i++) {
			uint16_t op = known_ops[rndn((uint32_t)nknown)];
			if (op == OP_BATCH)
				op = OP_GETATTR;
			p.len = 0;
			enc_req(&p, op, &st, 24, NULL);
			if (p.len > 400)
				p.len = 0, enc_req(&p, op, &st, 2, NULL);
			put_sub(w, op, i, &p);
		}
		wbuf_free(&p);
		*op_out = OP_BATCH;
		return;
	}
	uint16_t op = known_ops[rndn((uint32_t)nknown)];
	struct wbuf p;
	wbuf_init(&p, 128);
	if (kind == 2 && (spec_reply(op) & TR_KNOWN)) { /* a reply */
		uint8_t data[64];
		rnd_fill(data, sizeof data);
		struct proto_reply rep = {.op = op, .data = data, .data_len = rndn(64), .entries = data,
					  .entries_len = rndn(64), .count = rndn(4)};
		rnd_attr(&rep.attr);
		proto_reply_encode(&p, &rep);
	} else {
		enc_req(&p, op, &st, 24, NULL);
		if (p.len > 400)
			p.len = 0, enc_req(&p, op, &st, 2, NULL);
	}
	put_sub(w, op, rnd(), &p);
	wbuf_free(&p);
	*op_out = op;
}

static int t_fuzz(void)
{
	enum { ITERS = 200000 };
	struct wbuf w;
	wbuf_init(&w, 1024);
	uint64_t t0 = aq_mono_ns();
	for (uint32_t it = 0; it < ITERS; it++) {
		uint16_t op = (uint16_t)rndn(OP_SCAN_MAX + 1);
		uint32_t mode = it % 3;
		uint8_t *x;
		size_t len;
		if (mode == 0) { /* random bytes, sometimes behind a valid header */
			len = rndn(rndn(8) ? 96 : 600);
			x = aq_malloc(len ? len : 1);
			rnd_fill(x, len);
			if (len >= PROTO_HDR_SIZE && rndn(2)) {
				struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = op,
						      .payload_len = (uint32_t)(len - PROTO_HDR_SIZE)};
				proto_hdr_encode(x, &h);
			}
		} else {
			valid_input(&w, &op);
			len = w.len;
			if (mode == 1) { /* bit flips */
				x = exact(w.p, len);
				uint32_t flips = 1 + rndn(8);
				for (uint32_t k = 0; k < flips && len; k++) {
					size_t bit = rnd() % (len * 8);
					x[bit / 8] ^= (uint8_t)(1u << (bit % 8));
				}
			} else { /* truncation (and sometimes a flipped length word first) */
				if (len >= 40 && rndn(4) == 0)
					put_le32(w.p + PROTO_HDR_SIZE + rndn((uint32_t)(len - PROTO_HDR_SIZE - 4)),
						 rndn(2) ? (uint32_t)rnd() : rndn(64));
				len = rndn((uint32_t)len + 1);
				x = exact(w.p, len);
			}
		}
		fuzz_one(x, len, op);
		/* and the payload alone (no header) */
		if (len > PROTO_HDR_SIZE) {
			uint8_t *y = exact(x + PROTO_HDR_SIZE, len - PROTO_HDR_SIZE);
			fuzz_one(y, len - PROTO_HDR_SIZE, op);
			free(y);
		}
		free(x);
	}
	wbuf_free(&w);
	printf("  fuzz: %d iterations in %.1fs (sink %llx)\n", ITERS, (aq_mono_ns() - t0) / 1e9,
	       (unsigned long long)g_sink);
	return 0;
}

/* ---- runner ------------------------------------------------------------------------------ */

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "writev_full", t_writev_full },
		{ "self_connected", t_self_connected },
		{ "crc32c_vectors", t_crc_vectors },
		{ "crc32c_hw_vs_sw", t_crc_hw_sw },
		{ "hash64_pinned", t_hash64_pinned },
		{ "hash64_seed", t_hash64_seed },
		{ "hdr_roundtrip", t_hdr_roundtrip },
		{ "hdr_reject", t_hdr_reject },
		{ "req_roundtrip_every_op", t_req_roundtrip },
		{ "req_encode_split", t_req_encode_split },
		{ "req_unknown_op", t_req_unknown_op },
		{ "req_trailing_and_truncated", t_req_trailing_and_truncated },
		{ "req_reject", t_req_reject },
		{ "extents_decode", t_extents_decode },
		{ "reply_roundtrip_every_op", t_reply_roundtrip },
		{ "dirent_roundtrip", t_dirent_roundtrip },
		{ "change_roundtrip", t_change_roundtrip },
		{ "loc_roundtrip", t_loc_roundtrip },
		{ "lock_roundtrip", t_lock_roundtrip },
		{ "inval_roundtrip", t_inval_roundtrip },
		{ "batch", t_batch },
		{ "tier_inos", t_tier_inos },
		{ "cluster_roundtrip", t_cluster_roundtrip },
		{ "cluster_malformed", t_cluster_malformed },
		{ "placement", t_placement },
		{ "fuse_node_ids", t_fuse_node_ids },
		{ "fuzz_decoders", t_fuzz },
	};
	log_min_level = LOG_ERROR;
	init_known_ops();
	snprintf(g_dir, sizeof g_dir, "/tmp/test_proto.XXXXXX");
	if (!mkdtemp(g_dir)) {
		perror("mkdtemp");
		return 1;
	}
	int passed = 0, failed = 0;
	unit_run(tests, ARRAY_SIZE(tests), &passed, &failed);
	nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return unit_report(passed, failed);
}

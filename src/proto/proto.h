/*
 * proto.h - Aquifer's wire format. Pure encoding and decoding, no I/O: the decoders are
 * fuzzed and every one of them checks every length before it reads.
 *
 * A frame is a fixed 32-byte header followed by payload_len bytes of payload:
 *   magic u32 | version u16 | opcode u16 | request id u64 | map epoch u32 |
 *   status u16 | flags u16 | payload_len u32 | reserved u32 (zero)
 * All integers little-endian. Requests carry status 0; a reply carries the request's
 * opcode and id, and its status (Aquifer's own numbers, errors.h). Requests are pipelined:
 * a connection may have many in flight and replies come back in any order.
 *
 * Each opcode's payload is a fixed sequence of fields chosen from one list (the field
 * table in proto.c), so one encoder and one decoder serve every message.
 */
#ifndef AQ_PROTO_H
#define AQ_PROTO_H
#include "common/common.h"
#include "common/rbuf.h"
#include "aq.h"

#define PROTO_MAGIC 0x31465141u /* "AQF1" */
#define PROTO_VERSION 8 /* 2: UNLINK has flags, and its reply the directory's attributes; 3: OPEN_MAP;
			  * 4: changes carry their client id and seq (txn), PROTO_F_RETRY; LOCATE;
			  * 5: CHUNK_WRITE carries a size and time (PROTO_CW_COMMIT); REOPEN;
			  * 6: and a setattr (PROTO_CW_ATTRS); 7: LOCK; 8: CHUNKS */
#define PROTO_HDR_SIZE 32
#define PROTO_NONCE_SIZE 32
#define PROTO_MAC_SIZE 32
#define PROTO_BATCH_MAX 1024      /* sub-requests in one batch frame */
#define PROTO_READDIR_MAX 4096    /* entries in one readdir reply */
#define PROTO_TIER_INOS_MAX 4096  /* inodes in one TIER DEMOTE request */
#define PROTO_TIER_TEXT_MAX 4096  /* bytes of a TIER SET/POLICY body and of a reply's text */
#define PROTO_REOPEN_MAX 4096     /* inodes in one REOPEN request */

#define PROTO_OPS(X)                 \
	X(HELLO, 1)      /* server -> client: challenge nonce */ \
	X(AUTH, 2)                   \
	X(MAP, 3)                    \
	X(LOOKUP, 10)                \
	X(GETATTR, 11)               \
	X(SETATTR, 12)               \
	X(MKNOD, 13)                 \
	X(MKDIR, 14)                 \
	X(SYMLINK, 15)               \
	X(READLINK, 16)              \
	X(UNLINK, 17)                \
	X(RMDIR, 18)                 \
	X(RENAME, 19)                \
	X(LINK, 20)                  \
	X(ACCESS, 21)                \
	X(OPEN, 22)                  \
	X(RELEASE, 23)               \
	X(COMMIT_SIZE, 24)           \
	X(READDIR, 25)               \
	X(CHANGES, 26)               \
	X(SETXATTR, 27)              \
	X(GETXATTR, 28)              \
	X(LISTXATTR, 29)             \
	X(REMOVEXATTR, 30)           \
	X(STATFS, 31)                \
	X(FSYNC, 32)                 \
	X(WATCH, 33)     /* client id in cookie; flags 1: push INVAL frames here */ \
	X(INVAL, 34)     /* server -> client push (PROTO_F_PUSH): what changed */ \
	X(REOPEN, 35)    /* data: inodes (u64 each) the client held open through a connection that broke */ \
	X(LOCK, 36)      /* a byte-range or flock lock (PROTO_LOCK below) */ \
	X(CHUNKS, 37)    /* which of a file's chunks this server's targets hold (PROTO_CHUNK below) */ \
	X(CHUNK_WRITE, 40)           \
	X(CHUNK_READ, 41)            \
	X(OPEN_READ, 42) /* OPEN, then a read of the first chunk it touches */ \
	X(OPEN_MAP, 43)  /* OPEN_READ, with where the bytes lie on disk instead (proto_loc); data: boot id */ \
	X(LOCATE, 44)    /* where a whole chunk lies on disk (proto_loc, or no data); data: boot id */ \
	X(BATCH, 50)                 \
	X(TIER, 60)      /* object tier: sub-command in flags (PROTO_TIER_*) */

enum proto_op {
#define PX(name, num) OP_##name = num,
	PROTO_OPS(PX)
#undef PX
	OP_MAX_ = 64
};
const char *proto_op_name(uint16_t op);
/* The op whose name is the len bytes at name ("CREATE"), or 0. */
uint16_t proto_op_named(const char *name, size_t len);

struct proto_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t op;
	uint64_t req_id;
	uint32_t epoch;
	uint16_t status;
	uint16_t flags;
	uint32_t payload_len;
};
/* CHUNK_WRITE request flags: bit 0 asks for a durable write; PROTO_CW_EXTENTS says the
 * data is a set of extents of the chunk (off unused): u32 n, then n (u32 off, u32 len)
 * sorted and disjoint, then their bytes one after another (all little-endian). */
#define PROTO_CW_SYNC 1u
#define PROTO_CW_EXTENTS 2u
/* Once the bytes are written, commit size and time_ns to the inode as COMMIT_SIZE does:
 * the last write of a flush, when the server that takes it holds the inode's metadata
 * too, saves the flush a round trip. */
#define PROTO_CW_COMMIT 4u
/* Drop the chunk, a hole that reads as zeros (no data, off 0): fallocate's PUNCH_HOLE and
 * ZERO_RANGE over a whole chunk. A server that does not know the flag says EINVAL. */
#define PROTO_CW_PUNCH 8u
/* With PROTO_CW_COMMIT: after the commit, a SETATTR of the inode by cred with mask and
 * attr, which follow the request's other fields (a client's deferred changes, aq.h
 * AQ_SET_DEFER: a copier's times, owner and mode go with the file's bytes in one round
 * trip). An error is the setattr's once the bytes and size are in. */
#define PROTO_CW_ATTRS 16u
#define PROTO_CW_EXTENTS_MAX 1024
/* FSYNC request flags: bit 0, fdatasync; PROTO_FSYNC_DATA_ONLY, and the file's size has
 * not changed since the caller's last full sync, so the metadata log (whose changes an
 * fdatasync does not need) is not synced: only the data targets are. */
#define PROTO_FSYNC_DATASYNC 1u
#define PROTO_FSYNC_DATA_ONLY 2u
/* That data for n extents, the bytes of extent i at src[i]: a malloc'd buffer of *len
 * bytes, the caller's to free. */
uint8_t *proto_extents_encode(const struct aq_extent *ext, uint32_t n, const uint8_t *const *src, size_t *len);
/* Checks and splits such data: fills ext (room for PROTO_CW_EXTENTS_MAX) and *n, and
 * points *bytes at the extents' bytes. -EINVAL when it does not add up. Sorting and
 * overlap are left to the data layer, which refuses them. */
int proto_extents_decode(const uint8_t *p, uint32_t len, struct aq_extent *ext, uint32_t *n,
			 const uint8_t **bytes);
#define PROTO_F_REPLY 1u
#define PROTO_F_SYNC 2u /* CHUNK_WRITE: durable before the reply */
#define PROTO_F_PUSH 4u /* INVAL: sent by the server unasked, request id 0 */
#define PROTO_F_NOREPLY 8u /* RELEASE: the sender waits for no reply, and none is sent. LOCATE:
			    * the same, and the client read the chunk itself (from a location it
			    * holds): aqd counts the read (atime, the object tier) and locates nothing */
#define PROTO_F_RETRY 16u  /* a change sent again after its connection broke: it may have run
			    * (the server looks up its txn first, src/meta/txn.c) */
#define PROTO_F_PEEK 32u   /* LOCATE: where the bytes lie, asked ahead of any read (statahead):
			    * not counted as a read */

/* MKNOD flags beyond AQ_CREATE_EXCL: also open the new (or existing) regular file for
 * this connection, with the open(2) flags carried in rdev, as OPEN would. */
#define PROTO_MKNOD_OPEN (1u << 30)
/* With PROTO_MKNOD_OPEN: an unnamed file in parent (O_TMPFILE), meta_tmpfile's; the
 * request's name is empty. */
#define PROTO_MKNOD_TMPFILE (1u << 29)
/* READDIR flags beyond AQ_READDIR_PLUS: bits 16-31 say the bucket to stop before (0: list
 * to the end), so that one listing split into bucket ranges is read by several streams */
#define PROTO_READDIR_END_SHIFT 16
/* LOCK: ino; cookie, the owner; mode, the type (AQ_LK_*); off and size, the first and last
 * byte; rdev, the pid; flags, aq.h's AQ_LOCK_* or PROTO_LOCK_CANCEL; time_ns, the
 * client's number of a wait (AQ_LOCK_WAIT, PROTO_LOCK_CANCEL). The reply's data is empty,
 * or for AQ_LOCK_TEST the lock in the way (proto_lock_put). A wait is answered when it
 * ends, however long that is: the server holds its reply (src/server/locks.c). */
#define PROTO_LOCK_CANCEL 8u
#define PROTO_LOCK_SIZE 24
void proto_lock_put(uint8_t out[PROTO_LOCK_SIZE], const struct aq_lock *l);
int proto_lock_get(const uint8_t *data, uint32_t len, struct aq_lock *l);
/* CHUNKS: ino; idx, the first chunk to tell of; max, how many at most. The reply's data
 * is the chunks of ino at or past idx that this server's targets hold, in order, each
 * chunk index u32 and bytes u32 (PROTO_CHUNK_SIZE), at most max (PROTO_CHUNKS_MAX): a
 * file's holes for SEEK_DATA and SEEK_HOLE. */
#define PROTO_CHUNK_SIZE 8
#define PROTO_CHUNKS_MAX 4096
/* WATCH flags */
#define PROTO_WATCH_DELIVER 1u
/* UNLINK flags: fill the reply's attributes with the directory's after the unlink (the
 * mount keeps them; a read of the directory's inode the others need not pay for) */
#define PROTO_UNLINK_DIR_ATTR 1u


void proto_hdr_encode(uint8_t out[PROTO_HDR_SIZE], const struct proto_hdr *h);
/* Checks magic, version, reserved bytes and payload_len <= AQ_FRAME_MAX.
 * Returns 0 or -EPROTO (bad magic/length) or -AQ_EBAD_VERSION. */
int proto_hdr_decode(const uint8_t *in, size_t len, struct proto_hdr *h);

/* A growable output buffer. */
struct wbuf {
	uint8_t *p;
	size_t len, cap;
};
void wbuf_init(struct wbuf *w, size_t cap);
void wbuf_free(struct wbuf *w);
void wbuf_reserve(struct wbuf *w, size_t more);
void wbuf_put(struct wbuf *w, const void *data, size_t n);
void wbuf_u8(struct wbuf *w, uint8_t v);
void wbuf_u16(struct wbuf *w, uint16_t v);
void wbuf_u32(struct wbuf *w, uint32_t v);
void wbuf_u64(struct wbuf *w, uint64_t v);
void wbuf_str(struct wbuf *w, const void *s, size_t n); /* u32 length + bytes */


void proto_attr_put(struct wbuf *w, const struct aq_attr *a);
void proto_attr_get(struct rbuf *r, struct aq_attr *a);
#define PROTO_ATTR_SIZE 88

/* A request, decoded. Pointers point into the frame's payload (no copies). */
struct proto_req {
	uint16_t op;
	struct aq_cred cred;
	uint64_t ino, parent, newparent;
	const char *name; uint32_t name_len;
	const char *name2; uint32_t name2_len;
	uint32_t mode, rdev, flags, mask;
	struct aq_attr attr;
	uint64_t cookie, size, off;
	int64_t time_ns;
	uint32_t max, len, target, idx;
	const uint8_t *data; uint32_t data_len;
	/* changes that fail when run twice (MKNOD, MKDIR, SYMLINK, LINK, UNLINK, RMDIR,
	 * RENAME, SETXATTR, REMOVEXATTR): who sent it and its number there; client 0 asks
	 * for no record */
	uint64_t txn_client, txn_seq;
	bool retry; /* not on the wire: the header's PROTO_F_RETRY, set by whoever decodes */
	bool noreply, peek; /* likewise PROTO_F_NOREPLY and PROTO_F_PEEK */
};

/* Does op carry a txn (a change that fails when run twice)? */
bool proto_op_numbered(uint16_t op);
/* Encodes r's payload (the fields its opcode carries) onto w. */
void proto_req_encode(struct wbuf *w, const struct proto_req *r);
/* proto_req_encode without the data's bytes (r->data): their length is written, and
 * *data_at is where in w the bytes belong, for a sender that writes them from where
 * they are (rpc.c: big chunk writes go out without two copies). */
void proto_req_encode_split(struct wbuf *w, const struct proto_req *r, size_t *data_at);
/* Decodes a payload for opcode op. Returns 0, or -EPROTO for an unknown opcode, a short
 * or overlong payload, a length over its limit, a name with a NUL. */
int proto_req_decode(uint16_t op, const uint8_t *p, size_t len, struct proto_req *r);

/* TIER sub-commands (the request's flags). The request carries cred, ino and data:
 *   SET      data: the tier configuration as "key = value" lines (PROTO_TIER_TEXT_MAX)
 *   DEMOTE   data: inode numbers, u64 each (0..PROTO_TIER_INOS_MAX); ino unused
 *   HYDRATE  ino: the file; data empty
 *   USAGE    ino: the file; data empty
 *   POLICY   ino: the directory; data: "cold-after SECONDS", "pin", "clear", or empty to ask
 *   STATUS   data empty
 * Every reply carries struct proto_tier and a text (SET, POLICY, STATUS: see server). An
 * error reply to TIER may carry a text too (why S3 refused), never more than
 * PROTO_TIER_TEXT_MAX bytes. */
enum proto_tier_cmd {
	PROTO_TIER_SET = 1,
	PROTO_TIER_DEMOTE = 2,
	PROTO_TIER_HYDRATE = 3,
	PROTO_TIER_USAGE = 4,
	PROTO_TIER_POLICY = 5,
	PROTO_TIER_STATUS = 6,
};
struct proto_tier {
	uint64_t bytes;                        /* DEMOTE: freed from flash; HYDRATE: recalled */
	uint64_t files, skipped;               /* DEMOTE: inodes handled, refused (no read access, gone) */
	uint64_t hot, cold, both;              /* USAGE: bytes only on flash, only in S3, in both */
	uint64_t objects, object_bytes, live_bytes; /* STATUS: the pack objects of this server */
};
#define PROTO_TIER_SIZE 72
/* The inode numbers of a DEMOTE body: checks the shape (a whole number of u64, at most
 * PROTO_TIER_INOS_MAX) and returns how many, or -EPROTO. proto_tier_ino reads the i-th. */
int proto_tier_inos(const uint8_t *data, uint32_t len);
static inline uint64_t proto_tier_ino(const uint8_t *data, uint32_t i) { return get_le64(data + 8 * (size_t)i); }

/* Replies. Fixed fields per opcode; variable parts (entries) are encoded by the helpers. */
struct proto_reply {
	uint16_t op;
	struct aq_attr attr;
	const uint8_t *data; uint32_t data_len;    /* READLINK, GETXATTR, LISTXATTR, CHUNK_READ, HELLO, MAP, TIER */
	uint32_t size;                             /* GETXATTR/LISTXATTR: the full size; OPEN_READ: the read's status */
	uint32_t count; uint8_t eof; uint64_t next;/* READDIR, CHANGES, BATCH */
	const uint8_t *entries; uint32_t entries_len;
	struct aq_statfs st;
	struct proto_tier tier;                    /* TIER */
};
void proto_reply_encode(struct wbuf *w, const struct proto_reply *r);
int proto_reply_decode(uint16_t op, const uint8_t *p, size_t len, struct proto_reply *r);

/* READDIR entries: ino u64, cookie u64, type u8, name (u32 len + bytes), attr if plus. */
void proto_dirent_put(struct wbuf *w, const struct aq_dirent *e, bool plus);
/* The same entry from its parts (attr NULL: not plus), without a struct aq_dirent. */
void proto_dirent_put_parts(struct wbuf *w, uint64_t ino, uint64_t cookie, uint8_t type, const char *name,
			    uint32_t name_len, const struct aq_attr *attr);
int proto_dirent_get(struct rbuf *r, struct aq_dirent *e, bool plus);
/* CHANGES entries: ino u64, ts u64, name. */
struct proto_change { uint64_t ino, ts; const char *name; uint32_t name_len; };
void proto_change_put(struct wbuf *w, uint64_t ino, uint64_t ts, const char *name, size_t name_len);
int proto_change_get(struct rbuf *r, struct proto_change *c);

/* OPEN_MAP's data: where the bytes an OPEN_READ would carry lie on the server's disk, for
 * a client on the same machine that reads them itself. The request's data is the client's
 * boot id; a server with another one answers no location. Empty data: no location (also
 * when the bytes are elsewhere, not yet in a record, or in S3): read as usual.
 *   rec_off u64 | version u64 | idx u32 | length u32 | in u32 | n u32 | nblk u32 |
 *   0 u8 | path str | crc u32 x nblk
 * The record at rec_off of the file at path holds chunk idx (length bytes, this version);
 * the bytes asked for are its [in, in + n), inside blocks [0, nblk) whose crc32c follow.
 * The u8 said "not in the page cache: read it with O_DIRECT" until readers made that
 * choice themselves (6 Dec 2026); it is written 0 and not read. */
struct proto_loc {
	uint64_t rec_off, version;
	uint32_t idx, length, in, n, nblk;
	const char *path; uint32_t path_len;
	const uint8_t *crcs;  /* nblk of them, u32 little-endian, in the frame */
};
void proto_loc_put(struct wbuf *w, const struct proto_loc *l, const uint32_t *crc);
/* Checks the shape: an absolute path without NUL, in + n inside the chunk and inside the
 * blocks, nblk what they need. 0 or -EPROTO. */
int proto_loc_get(const uint8_t *data, uint32_t len, struct proto_loc *l);

/* INVAL payload: records back to back, each kind u8 then
 *   PROTO_INVAL_INODE: ino u64                 (its attributes or data changed)
 *   PROTO_INVAL_ENTRY: parent u64, name str    (the name now means something else) */
enum { PROTO_INVAL_INODE = 1, PROTO_INVAL_ENTRY = 2 };
void proto_inval_inode(struct wbuf *w, uint64_t ino);
void proto_inval_entry(struct wbuf *w, uint64_t parent, const char *name, uint32_t len);
/* The next record of an INVAL payload: 1 and the record, 0 at the end, -EPROTO. */
int proto_inval_next(struct rbuf *r, uint8_t *kind, uint64_t *ino, const char **name, uint32_t *len);

/* BATCH: the payload is count sub-frames (header + payload each) back to back; the reply
 * likewise holds one reply frame per sub-request. */
int proto_batch_next(struct rbuf *r, struct proto_hdr *h, const uint8_t **payload);

#endif

/*
 * fuzz_proto.c - libFuzzer target for the wire decoders (src/proto). The input is used
 * three ways: its first two bytes pick an opcode and the rest is that opcode's request
 * and reply payload; the whole input is a frame (header, then payload); and the whole
 * input is a batch payload and an entry stream (dirents, changes). Built by `make fuzz`
 * with ASan and UBSan; any crash, overread or undefined behaviour is a decoder bug.
 */
#include "proto/proto.h"

static volatile uint64_t sink; /* keeps decoded values alive */

/* Touches every byte a decoded string claims, so a pointer past the input shows up. */
static void touch(const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		sink += b[i];
}

static void payload(uint16_t op, const uint8_t *p, size_t len)
{
	struct proto_req r;
	if (proto_req_decode(op, p, len, &r) == 0) {
		AQ_ASSERT(r.op == op && r.cred.ngroups <= ARRAY_SIZE(r.cred.groups));
		AQ_ASSERT(r.name_len <= AQ_PATH_MAX && r.name2_len <= AQ_PATH_MAX && r.data_len <= len);
		AQ_ASSERT(!r.name_len || !memchr(r.name, 0, r.name_len));
		AQ_ASSERT(!r.name2_len || !memchr(r.name2, 0, r.name2_len));
		touch(r.name, r.name_len);
		touch(r.name2, r.name2_len);
		touch(r.data, r.data_len);
		/* a TIER DEMOTE body: inode numbers, read as the server does */
		int n = op == OP_TIER ? proto_tier_inos(r.data, r.data_len) : -1;
		AQ_ASSERT(n < 0 || ((uint32_t)n * 8 == r.data_len && n <= PROTO_TIER_INOS_MAX));
		for (int i = 0; i < n; i++)
			sink += proto_tier_ino(r.data, (uint32_t)i);
	}
	struct proto_reply rep;
	if (proto_reply_decode(op, p, len, &rep) == 0) {
		AQ_ASSERT(rep.data_len <= len && rep.entries_len <= len);
		touch(rep.data, rep.data_len);
		touch(rep.entries, rep.entries_len);
		/* the entries of a listing decode as a stream, as the client does */
		struct rbuf rb;
		struct aq_dirent e;
		rbuf_init(&rb, rep.entries, rep.entries_len);
		while (proto_dirent_get(&rb, &e, op == OP_READDIR) == 0)
			AQ_ASSERT(e.name_len <= AQ_NAME_MAX && e.name[e.name_len] == 0);
		struct proto_change c;
		rbuf_init(&rb, rep.entries, rep.entries_len);
		while (proto_change_get(&rb, &c) == 0)
			touch(c.name, c.name_len);
	}
}

static void streams(const uint8_t *p, size_t len)
{
	struct rbuf rb;
	for (int plus = 0; plus < 2; plus++) {
		struct aq_dirent e;
		rbuf_init(&rb, p, len);
		while (proto_dirent_get(&rb, &e, plus) == 0)
			AQ_ASSERT(e.name_len <= AQ_NAME_MAX && rb.pos <= rb.len);
	}
	struct proto_change c;
	rbuf_init(&rb, p, len);
	while (proto_change_get(&rb, &c) == 0)
		AQ_ASSERT(c.name_len <= AQ_NAME_MAX && !memchr(c.name, 0, c.name_len));
	/* an INVAL push, as a client's receiver reads it */
	uint8_t kind;
	uint64_t ino;
	const char *name;
	uint32_t nlen;
	rbuf_init(&rb, p, len);
	while (proto_inval_next(&rb, &kind, &ino, &name, &nlen) == 1)
		AQ_ASSERT(nlen <= AQ_NAME_MAX && rb.pos <= rb.len && (!nlen || !memchr(name, 0, nlen)));
	/* a batch: every sub-frame's payload through its opcode's decoders */
	struct proto_hdr h;
	const uint8_t *sp;
	rbuf_init(&rb, p, len);
	for (int n = 0; n < PROTO_BATCH_MAX && proto_batch_next(&rb, &h, &sp) == 0; n++) {
		AQ_ASSERT(h.op != OP_BATCH && h.payload_len <= len && rb.pos <= rb.len);
		payload(h.op, sp, h.payload_len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* 1: the first two bytes choose the opcode, the rest is its payload */
	if (size >= 2) {
		uint16_t op = (uint16_t)(get_le16(data) % 72); /* mostly real opcodes, some unknown */
		payload(op, data + 2, size - 2);
	}
	/* 2: a whole frame */
	struct proto_hdr h;
	int rc = proto_hdr_decode(data, size, &h);
	if (rc == 0) {
		AQ_ASSERT(h.magic == PROTO_MAGIC && h.version == PROTO_VERSION && h.payload_len <= AQ_FRAME_MAX);
		size_t avail = size - PROTO_HDR_SIZE;
		payload(h.op, data + PROTO_HDR_SIZE, MIN(avail, (size_t)h.payload_len));
		if (h.op == OP_BATCH) {
			struct proto_req br;
			if (proto_req_decode(OP_BATCH, data + PROTO_HDR_SIZE, MIN(avail, (size_t)h.payload_len), &br) == 0)
				streams(br.data, br.data_len);
		}
	} else {
		AQ_ASSERT(rc == -EPROTO || rc == -AQ_EBAD_VERSION);
	}
	/* 3: a batch payload and entry streams */
	streams(data, size);
	return 0;
}

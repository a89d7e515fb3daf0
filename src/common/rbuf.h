/* rbuf.h - a bounds-checked cursor over bytes in memory: wire frames (src/proto) and
 * stored rows (src/meta) alike. Little-endian. */
#ifndef AQ_RBUF_H
#define AQ_RBUF_H
#include "common/common.h"

/* Any read past the end (or a malformed varint) sets err and yields zeros. */
struct rbuf {
	const uint8_t *p;
	size_t len, pos;
	bool err;
};
static inline void rbuf_init(struct rbuf *r, const void *p, size_t len)
{
	r->p = p; r->len = len; r->pos = 0; r->err = false;
}
uint8_t rbuf_u8(struct rbuf *r);
uint16_t rbuf_u16(struct rbuf *r);
uint32_t rbuf_u32(struct rbuf *r);
uint64_t rbuf_u64(struct rbuf *r);
/* An unsigned LEB128 varint of at most 64 bits (ten bytes). */
uint64_t rbuf_varint(struct rbuf *r);
/* A u32-length-prefixed byte string of at most max bytes; points into the buffer. */
const uint8_t *rbuf_str(struct rbuf *r, uint32_t *len, uint32_t max);
const uint8_t *rbuf_bytes(struct rbuf *r, size_t n);
#endif

/* rbuf.c - the bounds-checked byte cursor (see rbuf.h). */
#include "common/rbuf.h"

const uint8_t *rbuf_bytes(struct rbuf *r, size_t n)
{
	if (r->err || n > r->len - r->pos) {
		r->err = true;
		return NULL;
	}
	const uint8_t *p = r->p + r->pos;
	r->pos += n;
	return p;
}
uint8_t rbuf_u8(struct rbuf *r) { const uint8_t *p = rbuf_bytes(r, 1); return p ? p[0] : 0; }
uint16_t rbuf_u16(struct rbuf *r) { const uint8_t *p = rbuf_bytes(r, 2); return p ? get_le16(p) : 0; }
uint32_t rbuf_u32(struct rbuf *r) { const uint8_t *p = rbuf_bytes(r, 4); return p ? get_le32(p) : 0; }
uint64_t rbuf_u64(struct rbuf *r) { const uint8_t *p = rbuf_bytes(r, 8); return p ? get_le64(p) : 0; }

uint64_t rbuf_varint(struct rbuf *r)
{
	uint64_t v = 0;
	for (int shift = 0; shift < 64 && !r->err; shift += 7) {
		uint8_t b = rbuf_u8(r);
		if (shift == 63 && b > 1)
			break; /* past 64 bits */
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return r->err ? 0 : v;
	}
	r->err = true;
	return 0;
}

const uint8_t *rbuf_str(struct rbuf *r, uint32_t *len, uint32_t max)
{
	uint32_t n = rbuf_u32(r);
	if (r->err || n > max) {
		r->err = true;
		*len = 0;
		return NULL;
	}
	*len = n;
	const uint8_t *p = rbuf_bytes(r, n);
	return p ? p : (const uint8_t *)"";
}

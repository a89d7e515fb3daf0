/*
 * format.c - the bytes the segment store persists: the 64-byte record header in segment
 * files and the chunk index key and value in RocksDB. Pure encoding, no I/O. Every
 * integer is little-endian except the key, which is big-endian so that RocksDB's bytewise
 * order sorts the chunks of one inode together and by index.
 *
 * Record header (64 bytes, little-endian):
 *   0 magic u32 | 4 format u16 | 6 flags u16 | 8 ino u64 | 16 idx u32 | 20 length u32
 *   24 version u64 | 32..59 zero | 60 crc32c of bytes 0..59
 *   flags: 0, a whole chunk; DATA_REC_FLAG_OVERLAY, some of its blocks (a format 3 entry's)
 * Index value (format 1):
 *   0 format u8 | 1 segment u32 | 5 offset u64 | 13 length u32 | 17 version u64
 *   25 crc32c u32 per DATA_BLOCK_SIZE block of the data (ceil(length / block) of them)
 * Index value (format 2, a chunk with a copy in S3): format 1's fixed part, then
 *   25 object id u64 | 33 offset of the data in the object u64 | 41 the crcs
 *   segment 0 means the chunk is only in S3.
 * Index value (format 3, a chunk whose blocks lie in several records):
 *   0 format u8 | 1 length u32 | 5 version u64 | 13 records n u8 (1..DATA_RECS_MAX)
 *   14 n x (segment u32, record offset u64, record data length u32)
 *   then per block: record u8, block in the record u8; then the crcs as above.
 */
#include "data/data_internal.h"

_Static_assert(DATA_REC_HDR_SIZE == 64, "the record header is 64 bytes");
_Static_assert(DATA_VAL_FIXED == 1 + 4 + 8 + 4 + 8, "index value fixed part");

void data_hdr_encode(uint8_t out[DATA_REC_HDR_SIZE], const struct data_rec_hdr *h)
{
	AQ_ASSERT(h->length <= DATA_CHUNK_MAX);
	memset(out, 0, DATA_REC_HDR_SIZE);
	put_le32(out + 0, DATA_REC_MAGIC);
	put_le16(out + 4, DATA_REC_FORMAT);
	put_le16(out + 6, h->flags);
	put_le64(out + 8, h->ino);
	put_le32(out + 16, h->idx);
	put_le32(out + 20, h->length);
	put_le64(out + 24, h->version);
	put_le32(out + 60, crc32c(0, out, 60));
}

int data_hdr_decode(const uint8_t in[DATA_REC_HDR_SIZE], struct data_rec_hdr *h)
{
	if (get_le32(in + 0) != DATA_REC_MAGIC || get_le16(in + 4) != DATA_REC_FORMAT)
		return -EIO;
	if (get_le32(in + 60) != crc32c(0, in, 60))
		return -EIO;
	h->ino = get_le64(in + 8);
	h->idx = get_le32(in + 16);
	h->length = get_le32(in + 20);
	h->version = get_le64(in + 24);
	h->flags = get_le16(in + 6);
	if (h->length > DATA_CHUNK_MAX)
		return -EIO;
	return 0;
}

uint64_t data_rec_span(uint32_t length, uint32_t nblk)
{
	uint64_t data = MIN((uint64_t)nblk * DATA_BLOCK_SIZE, (uint64_t)length);
	return data_round_up(DATA_REC_HDR_SIZE + data, DATA_REC_ALIGN);
}

int data_rec_check(const uint8_t *rec, uint64_t ino, uint32_t idx, uint64_t version, uint32_t length,
		   uint32_t nblk, const uint32_t *crc)
{
	struct data_rec_hdr h;
	if (nblk > data_nblocks(length) || data_hdr_decode(rec, &h) || h.ino != ino || h.idx != idx ||
	    h.version != version || h.length != length || h.flags != 0)
		return -AQ_ECORRUPT;
	return data_blocks_check(rec + DATA_REC_HDR_SIZE, length, 0, nblk, crc, NULL) == nblk ? 0 : -AQ_ECORRUPT;
}

uint32_t data_blocks_check(const uint8_t *p, uint32_t length, uint32_t b0, uint32_t b1, const uint32_t *crc,
			   uint32_t *got)
{
	for (uint32_t b = b0; b < b1; b++) {
		uint64_t start = (uint64_t)b * DATA_BLOCK_SIZE;
		uint64_t len = MIN(start + DATA_BLOCK_SIZE, length) - start;
		uint32_t c = crc32c(0, p + (start - (uint64_t)b0 * DATA_BLOCK_SIZE), len);
		if (c != crc[b - b0]) {
			if (got)
				*got = c;
			return b;
		}
	}
	return b1;
}

void data_key(uint8_t out[DATA_KEY_SIZE], uint64_t ino, uint32_t idx)
{
	out[0] = 'C';
	put_be64(out + 1, ino);
	put_be32(out + 9, idx);
}

static size_t map_encode(uint8_t *out, const struct data_entry *e)
{
	AQ_ASSERT(e->nrec >= 1 && e->nrec <= DATA_RECS_MAX && !e->obj);
	uint32_t nb = data_nblocks(e->length);
	out[0] = DATA_VAL_FORMAT_MAP;
	put_le32(out + 1, e->length);
	put_le64(out + 5, e->version);
	out[13] = (uint8_t)e->nrec;
	uint8_t *p = out + DATA_VAL_FIXED_MAP;
	for (uint32_t i = 0; i < e->nrec; i++, p += DATA_VAL_REC_REF) {
		AQ_ASSERT(e->rec[i].seg && e->rec[i].off % DATA_REC_ALIGN == 0);
		put_le32(p, e->rec[i].seg);
		put_le64(p + 4, e->rec[i].off);
		put_le32(p + 12, e->rec[i].length);
	}
	for (uint32_t b = 0; b < nb; b++) {
		*p++ = e->brec[b];
		*p++ = e->bpos[b];
	}
	for (uint32_t b = 0; b < nb; b++, p += 4)
		put_le32(p, e->crc[b]);
	AQ_ASSERT((size_t)(p - out) <= DATA_VAL_MAX);
	return (size_t)(p - out);
}

/* Format 3: every record well formed and every block inside the record it names. */
static int map_decode(const uint8_t *in, size_t len, struct data_entry *e)
{
	if (len < DATA_VAL_FIXED_MAP)
		return -EIO;
	e->length = get_le32(in + 1);
	e->version = get_le64(in + 5);
	e->nrec = in[13];
	e->obj = e->obj_off = 0;
	if (e->length == 0 || e->length > DATA_CHUNK_MAX || e->nrec == 0 || e->nrec > DATA_RECS_MAX)
		return -EIO;
	uint32_t nb = data_nblocks(e->length);
	if (len != DATA_VAL_FIXED_MAP + (size_t)e->nrec * DATA_VAL_REC_REF + 6 * (size_t)nb)
		return -EIO;
	const uint8_t *p = in + DATA_VAL_FIXED_MAP;
	for (uint32_t i = 0; i < e->nrec; i++, p += DATA_VAL_REC_REF) {
		e->rec[i] = (struct data_rec_ref){.seg = get_le32(p), .off = get_le64(p + 4),
						  .length = get_le32(p + 12)};
		if (!e->rec[i].seg || e->rec[i].off % DATA_REC_ALIGN || e->rec[i].length > DATA_CHUNK_MAX)
			return -EIO;
	}
	for (uint32_t b = 0; b < nb; b++) {
		e->brec[b] = *p++;
		e->bpos[b] = *p++;
		if (e->brec[b] >= e->nrec ||
		    (uint64_t)e->bpos[b] * DATA_BLOCK_SIZE + data_block_len(e->length, b) > e->rec[e->brec[b]].length)
			return -EIO;
	}
	for (uint32_t b = 0; b < nb; b++, p += 4)
		e->crc[b] = get_le32(p);
	e->seg = e->rec[0].seg;
	e->off = e->rec[0].off;
	return 0;
}

size_t data_val_encode(uint8_t *out, const struct data_entry *e)
{
	if (e->nrec)
		return map_encode(out, e);
	AQ_ASSERT(e->length <= DATA_CHUNK_MAX);
	AQ_ASSERT(e->off % DATA_REC_ALIGN == 0);
	AQ_ASSERT(e->seg || e->obj);
	uint32_t nb = data_nblocks(e->length);
	size_t fixed = e->obj ? DATA_VAL_FIXED_TIER : DATA_VAL_FIXED;
	out[0] = e->obj ? DATA_VAL_FORMAT_TIER : DATA_VAL_FORMAT;
	put_le32(out + 1, e->seg);
	put_le64(out + 5, e->off);
	put_le32(out + 13, e->length);
	put_le64(out + 17, e->version);
	if (e->obj) {
		put_le64(out + 25, e->obj);
		put_le64(out + 33, e->obj_off);
	}
	for (uint32_t b = 0; b < nb; b++)
		put_le32(out + fixed + 4 * b, e->crc[b]);
	size_t n = fixed + 4 * (size_t)nb;
	AQ_ASSERT(n <= DATA_VAL_MAX);
	return n;
}

int data_val_decode(const uint8_t *in, size_t len, struct data_entry *e)
{
	if (len >= 1 && in[0] == DATA_VAL_FORMAT_MAP)
		return map_decode(in, len, e);
	e->nrec = 0;
	if (len < DATA_VAL_FIXED || (in[0] != DATA_VAL_FORMAT && in[0] != DATA_VAL_FORMAT_TIER))
		return -EIO;
	size_t fixed = in[0] == DATA_VAL_FORMAT_TIER ? DATA_VAL_FIXED_TIER : DATA_VAL_FIXED;
	if (len < fixed)
		return -EIO;
	e->seg = get_le32(in + 1);
	e->off = get_le64(in + 5);
	e->length = get_le32(in + 13);
	e->version = get_le64(in + 17);
	e->obj = fixed == DATA_VAL_FIXED_TIER ? get_le64(in + 25) : 0;
	e->obj_off = fixed == DATA_VAL_FIXED_TIER ? get_le64(in + 33) : 0;
	if (e->length > DATA_CHUNK_MAX || e->off % DATA_REC_ALIGN)
		return -EIO;
	if (fixed == DATA_VAL_FIXED_TIER ? e->obj == 0 : e->seg == 0)
		return -EIO; /* format 2 names an object; a chunk is somewhere */
	uint32_t nb = data_nblocks(e->length);
	if (len != fixed + 4 * (size_t)nb)
		return -EIO;
	for (uint32_t b = 0; b < nb; b++)
		e->crc[b] = get_le32(in + fixed + 4 * b);
	return 0;
}

uint32_t data_entry_recs(const struct data_entry *e, struct data_rec_ref *out)
{
	if (e->nrec) {
		memcpy(out, e->rec, e->nrec * sizeof *out);
		return e->nrec;
	}
	if (!e->seg)
		return 0;
	out[0] = (struct data_rec_ref){.seg = e->seg, .off = e->off, .length = e->length};
	return 1;
}

/*
 * hash.h - checksums and placement hashes. crc32c (Castagnoli) guards every chunk;
 * aq_hash64 is a fast seeded 64-bit hash used for bucket placement, readdir order and
 * rendezvous hashing. Both are stable: their values are stored on disk and must never
 * change between versions.
 */
#ifndef AQ_HASH_H
#define AQ_HASH_H
#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(uint32_t crc, const void *data, size_t len);
uint64_t aq_hash64(const void *data, size_t len, uint64_t seed);
/* Mix two 64-bit values into one (for (inode, index) pairs). */
static inline uint64_t aq_mix64(uint64_t a, uint64_t b)
{
	uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull);
	h ^= h >> 32; h *= 0xD6E8FEB86659FD93ull;
	h ^= h >> 32; h *= 0xD6E8FEB86659FD93ull;
	h ^= h >> 32;
	return h;
}

#endif

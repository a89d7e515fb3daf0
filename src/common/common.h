/*
 * common.h - small helpers every part of Aquifer uses: assertions, little-endian
 * encoding, time, limits. No I/O, no allocation beyond what a caller asks for.
 */
#ifndef AQ_COMMON_H
#define AQ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/errors.h"
#include "common/log.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/* Assertions stay on in every build: a storage system that goes on past a broken
 * invariant corrupts data. */
#define AQ_ASSERT(cond)                                                              \
	do {                                                                         \
		if (unlikely(!(cond)))                                               \
			aq_assert_fail(#cond, __FILE__, __LINE__, __func__);         \
	} while (0)
_Noreturn void aq_assert_fail(const char *cond, const char *file, int line, const char *func);

/* Limits shared by the wire format, the metadata store and the client. */
#define AQ_NAME_MAX 255           /* bytes in one path component, as ext4 */
#define AQ_PATH_MAX 4096          /* bytes in a symlink target or a path */
#define AQ_XATTR_NAME_MAX 255
#define AQ_XATTR_VALUE_MAX 65536
#define AQ_XATTR_LIST_MAX 65536   /* bytes of an inode's names, NULs included (Linux's XATTR_LIST_MAX) */
#define AQ_FRAME_MAX (16u << 20)  /* largest frame payload accepted off the wire */
#define AQ_CHUNK_SIZE_DEFAULT (4u << 20)
#define AQ_CHUNK_SIZE_MAX (8u << 20)
#define AQ_CRC_BLOCK_SIZE (64u << 10) /* chunk data carries a crc32c per block this big */
/* A byte range of a chunk: what a write of extents carries (proto) and applies (data). */
struct aq_extent {
	uint32_t off, len;
};
#define AQ_BUCKETS_DEFAULT 256
#define AQ_BUCKETS_MAX 4096
#define AQ_TARGETS_MAX 256
#define AQ_ROOT_INO 1ull          /* the root directory: bucket 0, sequence 1 */

/* Inode numbers carry their bucket in the top 16 bits. */
#define AQ_INO_BUCKET_SHIFT 48
#define AQ_INO_SEQ_MASK ((1ull << AQ_INO_BUCKET_SHIFT) - 1)
static inline uint32_t aq_ino_bucket(uint64_t ino) { return (uint32_t)(ino >> AQ_INO_BUCKET_SHIFT); }
static inline uint64_t aq_ino_make(uint32_t bucket, uint64_t seq)
{
	return ((uint64_t)bucket << AQ_INO_BUCKET_SHIFT) | (seq & AQ_INO_SEQ_MASK);
}

/* The number the FUSE mount gives the kernel for an inode (its node id), and back. The
 * kernel's inode hash (fs/inode.c hash()) never looks at a node id's top 16 bits, so with
 * node id = inode number the inodes of all buckets that share a sequence number share a
 * chain: once the kernel held the inodes of ~100,000 creates in 256 buckets, every FUSE
 * lookup and create walked chains of up to 256 inodes (12% of a create's CPU). XOR-ing the sequence bits with a multiple of the bucket
 * spreads them; the bucket bits stay, so the map is its own inverse, and bucket 0 (the
 * root, AQ_ROOT_INO = FUSE_ROOT_ID = 1) maps to itself. st_ino stays the inode number. */
static inline uint64_t aq_ino_node(uint64_t ino)
{
	return ino ^ ((uint64_t)aq_ino_bucket(ino) * 0x9E3779B97F4A7C15ull & AQ_INO_SEQ_MASK);
}
static inline uint64_t aq_node_ino(uint64_t node) { return aq_ino_node(node); }

/* Little-endian (wire, disk) and big-endian (RocksDB keys sort bytewise) helpers. */
static inline void put_le16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static inline void put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (8 * i); }
static inline void put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (8 * i); }
static inline uint16_t get_le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t get_le64(const uint8_t *p) { return (uint64_t)get_le32(p) | (uint64_t)get_le32(p + 4) << 32; }
static inline void put_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static inline void put_be32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = v >> (24 - 8 * i); }
static inline void put_be64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = v >> (56 - 8 * i); }
static inline uint16_t get_be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}
static inline uint64_t get_be64(const uint8_t *p) { return (uint64_t)get_be32(p) << 32 | get_be32(p + 4); }

/* Wall-clock time in nanoseconds since the epoch, and a monotonic clock. */
static inline int64_t aq_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static inline uint64_t aq_mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Allocation that cannot fail quietly: out of memory aborts with a message. */
void *aq_malloc(size_t n);
void *aq_calloc(size_t n, size_t size);
/* n bytes aligned to align (a power of two, as O_DIRECT wants), freed by free() */
void *aq_malloc_aligned(size_t align, size_t n);
void *aq_realloc(void *p, size_t n);
char *aq_strdup(const char *s);
/* n bytes (a multiple of AQ_HUGE_PAGE) of memory of its own, AQ_HUGE_PAGE-aligned and
 * asked to be huge pages: an O_DIRECT read into it is one physically contiguous piece, not
 * one per 4 KiB page (a disk takes a bounded number per request). munmap(p, n) frees it. */
#define AQ_HUGE_PAGE (2ull << 20)
void *aq_map_huge(size_t n);
static inline size_t aq_huge_round(size_t n) { return (n + AQ_HUGE_PAGE - 1) / AQ_HUGE_PAGE * AQ_HUGE_PAGE; }

/* This boot of this machine's kernel (/proc/sys/kernel/random/boot_id, 16 bytes): a client
 * and a server that read the same one run on the same machine. 0 or -errno. */
#define AQ_BOOT_ID_SIZE 16
int aq_boot_id(uint8_t out[AQ_BOOT_ID_SIZE]);

#endif

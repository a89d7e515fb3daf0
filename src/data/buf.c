/*
 * buf.c - the aligned buffers that records and O_DIRECT reads go through.
 *
 * A buffer of DATA_BUF_MAPPED_MIN bytes or more is a mapping of its own: whole 2 MiB
 * pages, 2 MiB-aligned and asked to be huge pages (MADV_HUGEPAGE); its class is how many
 * 2 MiB pages (with its header) it takes, so an image's read and a shard record's share
 * one. A freed one waits in a pool for the next I/O of its class while the pool holds less
 * than DATA_BUF_POOL_MAX bytes, else it is unmapped at once; a miss in a full pool unmaps
 * a buffer of another class, so the pool follows the sizes in use. aqd's memory for I/O
 * buffers is therefore what is in flight plus the pool: with 128 workers at most 128 reads
 * are in flight, which the pool's 128 buffers of 2 MiB cover. The compactor thread gives
 * the whole pool back to the kernel once no buffer was handed out for 30 s. Smaller
 * buffers come from posix_memalign, unpooled.
 *
 * Why huge pages: an O_DIRECT read into one is one physically contiguous piece, not one
 * segment per 4 KiB page. A disk takes a bounded number of segments per request
 * (virtio-blk here: 254), so a 1 MiB read into scattered pages is split into two or more
 * requests, and each segment costs the disk (here, the hypervisor) work of its own.
 * Measured here: 1 MiB shard reads at 2.5 GB/s into huge pages against 1.3-1.5 GB/s into
 * scattered ones; 110 KB image reads 5-10% faster.
 *
 * Why not posix_memalign: aligned allocations of about 1 MiB from 128 worker threads
 * fragment glibc's arenas, which keep what is freed: aqd held 2.5 GB after one epoch over
 * 8 GiB of shards read with O_DIRECT. Measurements: docs/performance.md, "aqd's read
 * buffers".
 *
 * Every buffer has one page in front of it with its header, so a free needs no size and
 * the data stays DATA_REC_ALIGN-aligned for O_DIRECT.
 */
#include <sys/mman.h>

#include "data/data_internal.h"

#define BUF_MAGIC 0x46554241u /* "ABUF" */
#define BUF_HDR DATA_REC_ALIGN
#define BUF_HUGE AQ_HUGE_PAGE
/* a chunk, the page an O_DIRECT read may need beyond it, and the header fit the last */
#define BUF_NCLASS ((BUF_HDR + DATA_CHUNK_MAX + 2 * DATA_REC_ALIGN + BUF_HUGE - 1) / BUF_HUGE)

struct buf_hdr {
	uint32_t magic;
	int32_t cls;           /* index into pool.free, or -1: from malloc */
	struct buf_hdr *next;  /* in the pool */
};

static struct {
	pthread_mutex_t lock;
	struct buf_hdr *free[BUF_NCLASS];
	uint64_t bytes;  /* mapped bytes in the pool */
	uint64_t mapped; /* mapped bytes in all, in use or in the pool */
	uint64_t last_ns; /* when a mapped buffer was last handed out (aq_mono_ns) */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Class c is mappings of c + 1 huge pages. */
static uint64_t map_bytes(int cls) { return (uint64_t)(cls + 1) * BUF_HUGE; }

static struct buf_hdr *map_buf(uint64_t n) { return aq_map_huge(n); }

void *data_buf_alloc(size_t size)
{
	struct buf_hdr *h = NULL, *evict = NULL; /* evict: a list through next */
	if (size < DATA_BUF_MAPPED_MIN) {
		void *p = NULL;
		if (posix_memalign(&p, DATA_REC_ALIGN, BUF_HDR + size))
			AQ_ASSERT(!"out of memory");
		h = p;
		h->cls = -1;
	} else {
		int cls = (int)((BUF_HDR + size - 1) / BUF_HUGE);
		AQ_ASSERT(cls < (int)BUF_NCLASS);
		uint64_t n = map_bytes(cls), now = aq_mono_ns();
		pthread_mutex_lock(&pool.lock);
		pool.last_ns = now;
		if ((h = pool.free[cls])) {
			pool.free[cls] = h->next;
			pool.bytes -= n;
		} else {
			/* room in the pool for this one when it is freed: give up buffers of other
			 * classes, the largest first, while the pool is full */
			for (int c = (int)BUF_NCLASS - 1; c >= 0 && pool.bytes + n > DATA_BUF_POOL_MAX; c--)
				while (pool.free[c] && pool.bytes + n > DATA_BUF_POOL_MAX) {
					struct buf_hdr *e = pool.free[c];
					pool.free[c] = e->next;
					pool.bytes -= map_bytes(c);
					pool.mapped -= map_bytes(c);
					e->next = evict;
					evict = e;
				}
			pool.mapped += n;
		}
		pthread_mutex_unlock(&pool.lock);
		while (evict) {
			struct buf_hdr *e = evict;
			evict = e->next;
			munmap(e, map_bytes(e->cls));
		}
		if (!h) {
			h = map_buf(n);
			h->cls = cls;
		}
	}
	h->magic = BUF_MAGIC;
	h->next = NULL;
	return (uint8_t *)h + BUF_HDR;
}

void data_buf_free(void *p)
{
	if (!p)
		return;
	struct buf_hdr *h = (struct buf_hdr *)((uint8_t *)p - BUF_HDR);
	AQ_ASSERT(h->magic == BUF_MAGIC);
	h->magic = 0; /* a second free trips the assertion above */
	if (h->cls < 0) {
		free(h);
		return;
	}
	uint64_t n = map_bytes(h->cls);
	pthread_mutex_lock(&pool.lock);
	bool keep = pool.bytes + n <= DATA_BUF_POOL_MAX;
	if (keep) {
		h->next = pool.free[h->cls];
		pool.free[h->cls] = h;
		pool.bytes += n;
	} else {
		pool.mapped -= n;
	}
	pthread_mutex_unlock(&pool.lock);
	if (!keep)
		munmap(h, n);
}

void data_buf_trim(void)
{
	for (int c = 0; c < (int)BUF_NCLASS; c++) {
		pthread_mutex_lock(&pool.lock);
		struct buf_hdr *h = pool.free[c];
		pool.free[c] = NULL;
		for (struct buf_hdr *e = h; e; e = e->next) {
			pool.bytes -= map_bytes(c);
			pool.mapped -= map_bytes(c);
		}
		pthread_mutex_unlock(&pool.lock);
		while (h) {
			struct buf_hdr *e = h;
			h = e->next;
			munmap(e, map_bytes(c));
		}
	}
}

void data_buf_trim_idle(uint64_t idle_ns)
{
	pthread_mutex_lock(&pool.lock);
	bool idle = pool.bytes && aq_mono_ns() - pool.last_ns >= idle_ns;
	pthread_mutex_unlock(&pool.lock);
	if (idle)
		data_buf_trim();
}

void data_buf_stats(uint64_t *pooled, uint64_t *mapped)
{
	pthread_mutex_lock(&pool.lock);
	*pooled = pool.bytes;
	*mapped = pool.mapped;
	pthread_mutex_unlock(&pool.lock);
}

/*
 * local.c - local reads: a client on the machine its aqd runs on reads a file's first
 * bytes straight from aqd's segment file, as HDFS's short-circuit reads do, instead of
 * having aqd read them and send them down its socket (one copy into aqd, one through
 * TCP, aqd's CPU for both). aqd still answers the OPEN (permissions, attributes) and
 * says where the bytes lie (OPEN_MAP, proto_loc); the client checks the record's header
 * and every block's crc32c against what aqd said, as aqd would.
 *
 * Anything unexpected sends the read through aqd instead: a segment compacted away or a
 * record punched after aqd answered, a corrupt block (aqd then reads it, fails it and
 * logs it), a file this process may not open. The client sends its boot id with the
 * OPEN_MAP, and an aqd with another one (on another machine) answers no location; a
 * client whose local reads keep failing (LOCAL_FAILS_MAX in a row: aqd's files are hidden
 * from it, or a burst of rewrites moved what it was told) stops asking for
 * LOCAL_PAUSE_NS, then tries one again. $AQ_LOCAL_READS=0 turns them off.
 *
 * Past the first bytes, an open file reads any chunk the same way (local_chunk_read): it
 * asks aqd once where the whole chunk lies (LOCATE, answered from the chunk index on
 * aqd's loop), keeps that in a small table, and reads just the blocks a read touches
 * (through the page cache, read_at), each checked against its crc32c. A random 4 KiB read
 * then costs no trip to aqd at all. The table is dropped by
 * a write or truncate through this client and by a push about the inode (the inode's
 * wgen, as read-ahead's windows are), so a reader sees its own writes, and a watching
 * client (the mount) other clients' writes once it has heard of them; a client that does
 * not watch sees those at the next open (close-to-open). A record is never changed in
 * place, so a kept location gives the bytes of the version it named, or a failed check
 * (compacted, punched): the read then goes through aqd and the chunk is located again.
 */
#include "client/client_internal.h"
#include "common/fdio.h"
#include "data/data.h"
#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#define LOCAL_FAILS_MAX 16
#define LOCAL_PAUSE_NS (60ull * 1000000000)

void local_init(struct aq_client *c)
{
	const char *env = getenv("AQ_LOCAL_READS");
	bool on = !(env && strcmp(env, "0") == 0) && aq_boot_id(c->boot_id) == 0;
	atomic_store(&c->local_on, on);
}

bool local_wanted(struct aq_client *c)
{
	return atomic_load(&c->local_on) && aq_mono_ns() >= atomic_load(&c->local_pause_until);
}

static void local_failed(struct aq_client *c, const char *path, int err)
{
	log_debug("local read of %s: %s; reading through aqd", path, strerror(-err));
	if (atomic_fetch_add(&c->local_fails, 1) + 1 < LOCAL_FAILS_MAX)
		return;
	/* after the pause one failure starts the next: no 16 wasted trips per minute */
	atomic_store(&c->local_fails, LOCAL_FAILS_MAX - 1);
	atomic_store(&c->local_pause_until, aq_mono_ns() + LOCAL_PAUSE_NS);
	if (!atomic_exchange(&c->local_paused_once, true))
		log_info("local reads paused after %u failures in a row (the last: %s); reads go through aqd, "
			 "and one is tried again each %llu s", LOCAL_FAILS_MAX, strerror(-err),
			 (unsigned long long)(LOCAL_PAUSE_NS / 1000000000));
}

/* Which blocks of a record [in, in + n) of its chunk touches, and the bytes of the
 * segment file that hold them: from the record's header when they start at its first
 * block (a small file's one read), else from the first block. */
struct piece_span {
	uint32_t end;    /* MIN(in + n, length): zeros past it */
	uint32_t b0, b1; /* the blocks [b0, b1) */
	uint32_t span;   /* their bytes */
	uint64_t data;   /* where block b0 lies in the file */
	uint64_t from;   /* where a read of them with the header they may start with starts */
	uint32_t len;    /* and its bytes */
};

static struct piece_span piece_span(uint64_t rec_off, uint32_t length, uint32_t in, uint32_t n)
{
	struct piece_span ps = {.end = MIN(in + n, length), .b0 = in / DATA_BLOCK_SIZE};
	ps.b1 = in < ps.end ? (ps.end + DATA_BLOCK_SIZE - 1) / DATA_BLOCK_SIZE : ps.b0;
	ps.span = ps.b1 > ps.b0 ? MIN(ps.b1 * DATA_BLOCK_SIZE, length) - ps.b0 * DATA_BLOCK_SIZE : 0;
	ps.data = rec_off + DATA_REC_HDR_SIZE + (uint64_t)ps.b0 * DATA_BLOCK_SIZE;
	ps.from = ps.b0 ? ps.data : rec_off;
	ps.len = ps.span + (ps.b0 ? 0 : DATA_REC_HDR_SIZE);
	return ps;
}

/* Checks the blocks [ps->b0, ps->b1) read to data against crc (block b0's first) and
 * copies the bytes of [in, in + n) into dest block by block, while each is in the cache
 * from its check, unless they were read there (data == dest); the bytes past the
 * record's end read as zeros. 0 or -AQ_ECORRUPT. */
static int blocks_check_copy(const struct piece_span *ps, uint32_t length, const uint32_t *crc, uint32_t in,
			     uint32_t n, const uint8_t *data, uint8_t *dest)
{
	for (uint32_t b = ps->b0; b < ps->b1; b++) {
		const uint8_t *p = data + (size_t)(b - ps->b0) * DATA_BLOCK_SIZE;
		if (data_blocks_check(p, length, b, b + 1, crc + (b - ps->b0), NULL) != b + 1)
			return -AQ_ECORRUPT;
		uint32_t lo = MAX(b * DATA_BLOCK_SIZE, in), hi = MIN((b + 1) * DATA_BLOCK_SIZE, ps->end);
		if (data != dest && hi > lo)
			memcpy(dest + (lo - in), p + (lo - b * DATA_BLOCK_SIZE), hi - lo);
	}
	if (in + n > MAX(ps->end, in))
		memset(dest + (MAX(ps->end, in) - in), 0, in + n - MAX(ps->end, in));
	return 0;
}

/* Reads len bytes at off of path into buf, through the page cache: a block read again
 * (random 4 KiB reads land in the same 64 KiB blocks) is then a copy, and the kernel's
 * read-ahead keeps the disk busy ahead of a sequential reader. Cold blocks of 64 KiB or
 * more went O_DIRECT until 6 Dec 2026: that read random 4 KiB reads at half the rate,
 * and the probe for cached pages before it (a read with RWF_NOWAIT) started the kernel's
 * read-ahead of them anyway, so that a cold image opened through the mount was read from
 * the disk twice (docs/performance.md). */
static int read_at(const char *path, uint64_t off, size_t len, uint8_t *buf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	ssize_t n = fd < 0 ? -1 : pread(fd, buf, len, (off_t)off);
	int rc = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Reads a whole record, span bytes at off (both multiples of DATA_REC_ALIGN) of path, into
 * buf (aligned as much): with O_DIRECT unless its pages are all in the page cache
 * already. A small file opened whole is read once; through the page cache its bytes
 * were copied once more and kept twice, in the segment file's pages and in the reader's
 * (a FUSE inode's, for the mount): 20,000 images through the mount, 6.35k -> 6.9k
 * samples/s (medians of six). */
static int read_record(const char *path, uint64_t off, size_t len, uint8_t *buf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	if (!fd_range_cached(fd, off, len))
		(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT); /* not on tmpfs: buffered then */
	ssize_t n = pread(fd, buf, len, (off_t)off);
	int rc = n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
	close(fd);
	return rc;
}

static void loc_path(const struct proto_loc *l, char path[PATH_MAX])
{
	memcpy(path, l->path, l->path_len); /* proto_loc_get: shorter than PATH_MAX */
	path[l->path_len] = '\0';
}

/* A LOCATE of chunk idx of ino, with this machine's boot id. */
static struct proto_req locate_req(const struct aq_client *c, uint64_t ino, uint32_t idx)
{
	return (struct proto_req){.op = OP_LOCATE, .target = cluster_chunk_target(&c->map, ino, idx), .ino = ino,
				  .idx = idx, .data = c->boot_id, .data_len = sizeof c->boot_id};
}

/* The location a LOCATE reply carries, checked: 0, -EAGAIN when aqd gave none (in S3
 * only, none written, or another machine's client), -EPROTO. */
static int reply_loc(const struct proto_reply *rep, uint32_t idx, struct proto_loc *l)
{
	if (!rep->data_len)
		return -EAGAIN;
	if (proto_loc_get(rep->data, rep->data_len, l) || l->idx != idx || l->in != 0)
		return -EPROTO;
	return 0;
}

int local_read(struct aq_client *c, uint64_t ino, const struct proto_loc *l, uint8_t **mem, const uint8_t **data)
{
	char path[PATH_MAX];
	loc_path(l, path);
	uint64_t span = data_rec_span(l->length, l->nblk);
	uint8_t *buf = aq_malloc_aligned(DATA_REC_ALIGN, span);
	int rc = read_record(path, l->rec_off, span, buf);
	if (!rc) {
		uint32_t crc[AQ_CHUNK_SIZE_MAX / AQ_CRC_BLOCK_SIZE];
		for (uint32_t b = 0; b < l->nblk; b++)
			crc[b] = get_le32(l->crcs + 4 * (size_t)b);
		rc = data_rec_check(buf, ino, l->idx, l->version, l->length, l->nblk, crc);
	}
	if (rc) {
		free(buf);
		local_failed(c, path, rc);
		return rc;
	}
	atomic_store(&c->local_fails, 0);
	*mem = buf;
	*data = buf + DATA_REC_HDR_SIZE + l->in;
	return 0;
}

/* ---- any chunk of an open file ---- */

#define LOC_SLOTS_MAX 4096 /* chunks located per open file (a direct-mapped table by index) */

enum { LOC_EMPTY, LOC_AT, LOC_NONE };
/* aqd counts a chunk's LOCATE as a read of its file (the object tier's least recently
 * read and cold-after rules): a location kept longer would hide a file read all the time
 * through one open handle, which the tier then demoted as cold. */
#define LOC_TTL_NS 1000000000ull
struct loc_slot {
	uint32_t idx;
	uint8_t state;
	unsigned long wgen;        /* the inode's wgen before LOCATE was sent */
	uint64_t at_ns;            /* when (aq_mono_ns): LOC_TTL_NS later it is asked again */
	uint64_t rec_off;          /* the record's header, checked once when located */
	uint32_t length;
	char *path;
	uint32_t *crc;             /* nblk, all of the record's blocks */
};
struct loc_cache {
	pthread_mutex_t mu;
	uint32_t nslots;           /* a power of two: the file's chunks when opened, at most LOC_SLOTS_MAX */
	struct loc_slot s[];
};

static void slot_clear(struct loc_slot *sl)
{
	free(sl->path);
	free(sl->crc);
	*sl = (struct loc_slot){0};
}

void local_chunks_free(struct aq_file *f)
{
	if (!f->locs)
		return;
	for (uint32_t i = 0; i < f->locs->nslots; i++)
		slot_clear(&f->locs->s[i]);
	pthread_mutex_destroy(&f->locs->mu);
	free(f->locs);
	f->locs = NULL;
}

/* Asks aqd where chunk idx lies and checks the record's header there; fills sl (LOC_AT,
 * or LOC_NONE when aqd gives no location). -errno when it could not ask or the header
 * is not that chunk's (the slot stays empty). */
static int locate(struct aq_file *f, uint32_t idx, unsigned long wgen, struct loc_slot *sl)
{
	struct aq_client *c = f->c;
	struct proto_req r = locate_req(c, f->ino, idx);
	struct proto_reply rep;
	struct rpc_call *call = NULL;
	int rc = rpc_do(c, cluster_target_by_id(&c->map, r.target)->server, &r, &rep, &call);
	struct proto_loc l;
	*sl = (struct loc_slot){.idx = idx, .wgen = wgen, .at_ns = aq_mono_ns(), .state = LOC_NONE};
	bool at = false;
	if (!rc) {
		rc = reply_loc(&rep, idx, &l);
		at = rc == 0;
		if (rc == -EAGAIN)
			rc = 0; /* LOC_NONE */
	}
	if (at) {
		uint8_t hdr[DATA_REC_HDR_SIZE];
		char path[PATH_MAX];
		loc_path(&l, path);
		int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
		ssize_t got = fd < 0 ? -1 : pread(fd, hdr, sizeof hdr, (off_t)l.rec_off);
		rc = fd < 0 ? -errno : got != (ssize_t)sizeof hdr ? -EIO
				     : data_rec_check(hdr, f->ino, idx, l.version, l.length, 0, NULL);
		if (fd >= 0)
			close(fd);
		if (rc) {
			local_failed(c, path, rc);
		} else {
			sl->state = LOC_AT;
			sl->rec_off = l.rec_off;
			sl->length = l.length;
			sl->path = strdup(path);
			sl->crc = aq_malloc(4 * (size_t)l.nblk + 4);
			for (uint32_t b = 0; b < l.nblk; b++)
				sl->crc[b] = get_le32(l.crcs + 4 * (size_t)b);
		}
	}
	rpc_free(call);
	return rc;
}

int local_chunk_read(struct aq_file *f, uint32_t idx, uint32_t in, uint32_t n, uint8_t *dest)
{
	struct aq_client *c = f->c;
	if (!local_wanted(c) || !f->st)
		return -EAGAIN;
	if (!f->locs) {
		pthread_mutex_lock(&f->st->mu);
		uint64_t chunks = f->st->chunk_size ? f->st->size / f->st->chunk_size + 1 : 1;
		pthread_mutex_unlock(&f->st->mu);
		uint32_t nslots = 1;
		while (nslots < chunks && nslots < LOC_SLOTS_MAX)
			nslots *= 2;
		struct loc_cache *lc = aq_calloc(1, sizeof *lc + nslots * sizeof lc->s[0]);
		lc->nslots = nslots;
		pthread_mutex_init(&lc->mu, NULL);
		struct loc_cache *none = NULL;
		if (!__atomic_compare_exchange_n(&f->locs, &none, lc, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
			pthread_mutex_destroy(&lc->mu);
			free(lc);
		}
	}
	struct loc_cache *lc = f->locs;
	unsigned long wgen = atomic_load(&f->st->wgen);
	struct loc_slot *sl = &lc->s[idx & (lc->nslots - 1)];
	pthread_mutex_lock(&lc->mu);
	if (sl->state == LOC_EMPTY || sl->idx != idx || sl->wgen != wgen || aq_mono_ns() - sl->at_ns > LOC_TTL_NS) {
		pthread_mutex_unlock(&lc->mu);
		struct loc_slot fresh;
		int rc = locate(f, idx, wgen, &fresh);
		pthread_mutex_lock(&lc->mu);
		slot_clear(sl);
		if (rc) {
			pthread_mutex_unlock(&lc->mu);
			return -EAGAIN;
		}
		*sl = fresh;
	}
	if (sl->state != LOC_AT) {
		pthread_mutex_unlock(&lc->mu);
		return -EAGAIN;
	}
	/* what to read: the blocks of [in, in + n) that the record holds; past it, zeros */
	struct piece_span ps = piece_span(sl->rec_off, sl->length, in, n);
	uint32_t crc[AQ_CHUNK_SIZE_MAX / AQ_CRC_BLOCK_SIZE];
	char path[PATH_MAX];
	uint32_t length = sl->length;
	memcpy(crc, sl->crc + ps.b0, 4 * (size_t)(ps.b1 - ps.b0));
	snprintf(path, sizeof path, "%s", sl->path);
	pthread_mutex_unlock(&lc->mu);
	/* blocks that are exactly the bytes asked go straight to dest, checked there */
	bool straight = in % DATA_BLOCK_SIZE == 0 && ps.end - in == ps.span;
	uint8_t *mem = straight || !ps.span ? NULL : aq_malloc(ps.span), *data = straight ? dest : mem;
	int rc = ps.span ? read_at(path, ps.data, ps.span, data) : 0;
	if (!rc)
		rc = blocks_check_copy(&ps, length, crc, in, n, data, dest);
	free(mem);
	if (rc) {
		pthread_mutex_lock(&lc->mu);
		if (sl->idx == idx && sl->wgen == wgen)
			slot_clear(sl); /* located again next time */
		pthread_mutex_unlock(&lc->mu);
		local_failed(c, path, rc);
		return -EAGAIN;
	}
	atomic_store(&c->local_fails, 0);
	return 0;
}

/* ---- small files located ahead (aq_locate_first, aq_loc_read) ---- */

struct aq_loc {
	uint64_t rec_off, version;
	uint32_t length, nblk, path_len;
	uint8_t crcs[];            /* nblk u32 little-endian, then the path and a NUL */
};

static size_t loc_bytes(uint32_t nblk, uint32_t path_len)
{
	return sizeof(struct aq_loc) + 4 * (size_t)nblk + path_len + 1;
}

static struct aq_loc *loc_new(const struct proto_loc *pl)
{
	struct aq_loc *l = aq_malloc(loc_bytes(pl->nblk, pl->path_len));
	*l = (struct aq_loc){.rec_off = pl->rec_off, .version = pl->version, .length = pl->length, .nblk = pl->nblk,
			     .path_len = pl->path_len};
	memcpy(l->crcs, pl->crcs, 4 * (size_t)pl->nblk);
	char *path = (char *)l->crcs + 4 * (size_t)pl->nblk;
	memcpy(path, pl->path, pl->path_len);
	path[pl->path_len] = '\0';
	return l;
}

int aq_locate_first(struct aq_client *c, const uint64_t *inos, uint32_t n, struct aq_loc **locs)
{
	struct rpc_call **calls = aq_calloc(n ? n : 1, sizeof *calls);
	int rc = 0, found = 0;
	for (uint32_t i = 0; i < n; i++) {
		locs[i] = NULL;
		if (rc || !local_wanted(c))
			continue;
		struct proto_req r = locate_req(c, inos[i], 0);
		struct wbuf w;
		wbuf_init(&w, 64);
		proto_req_encode(&w, &r);
		/* one connection for all: they leave together, in BATCH frames */
		calls[i] = rpc_start_held(c, cluster_target_by_id(&c->map, r.target)->server, OP_LOCATE, PROTO_F_PEEK,
					  &w, 1, &rc);
		wbuf_free(&w);
	}
	for (uint32_t i = 0; i < n; i++) {
		if (!calls[i])
			continue;
		struct proto_reply rep;
		struct proto_loc pl;
		if (!rpc_wait(calls[i]) && !proto_reply_decode(OP_LOCATE, calls[i]->payload, calls[i]->len, &rep) &&
		    !reply_loc(&rep, 0, &pl)) {
			locs[i] = loc_new(&pl);
			found++;
		}
		rpc_free(calls[i]);
	}
	free(calls);
	return rc ? rc : found;
}

struct aq_loc *aq_loc_dup(const struct aq_loc *l)
{
	size_t n = loc_bytes(l->nblk, l->path_len);
	return memcpy(aq_malloc(n), l, n);
}

void aq_loc_free(struct aq_loc *l) { free(l); }

int aq_loc_read(struct aq_client *c, uint64_t ino, const struct aq_loc *l, uint32_t len, void **mem,
		const void **data)
{
	/* a file this client writes: its record holds what aqd has, not what was written
	 * here and not yet sent (the OPEN through aqd reads those through the client) */
	if (len > l->length || !local_wanted(c) || state_writing(c, ino))
		return -EAGAIN;
	struct proto_loc pl = {.rec_off = l->rec_off, .version = l->version, .length = l->length, .n = len,
			       .nblk = l->nblk, .path = (const char *)l->crcs + 4 * (size_t)l->nblk,
			       .path_len = l->path_len, .crcs = l->crcs};
	uint8_t *m;
	const uint8_t *d;
	int rc = local_read(c, ino, &pl, &m, &d);
	if (rc)
		return rc;
	/* counted as a read by aqd, as the OPEN it replaces would have been */
	struct proto_req r = locate_req(c, ino, 0);
	rpc_send_noreply(c, cluster_target_by_id(&c->map, r.target)->server, 1, &r);
	*mem = m;
	*data = d;
	return 0;
}

/* ---- pieces of the batched read ring (ioring.c) ---- */

struct rpc_call *local_locate_start(struct aq_client *c, uint64_t ino, uint32_t idx, uint64_t affinity,
				    struct rpc_cq *cq, void *arg, int *err)
{
	struct proto_req r = locate_req(c, ino, idx);
	struct wbuf w;
	wbuf_init(&w, 64);
	proto_req_encode(&w, &r);
	struct rpc_call *call = rpc_start_ex(c, cluster_target_by_id(&c->map, r.target)->server, OP_LOCATE, &w,
					     affinity, NULL, 0, cq, arg, true, err);
	wbuf_free(&w);
	return call;
}

/* Checks what was read for [in, in + n) of a located piece: the record's header (hdr;
 * NULL when not read) and each block (data: block b0's first byte), and copies the bytes
 * asked into dest (blocks_check_copy). 0 or -AQ_ECORRUPT. */
static int piece_check(uint64_t ino, uint32_t idx, const struct proto_loc *l, const struct piece_span *ps,
		       uint32_t in, uint32_t n, const uint8_t *hdr, const uint8_t *data, uint8_t *dest)
{
	if (hdr && data_rec_check(hdr, ino, idx, l->version, l->length, 0, NULL))
		return -AQ_ECORRUPT;
	uint32_t crc[AQ_CHUNK_SIZE_MAX / AQ_CRC_BLOCK_SIZE];
	for (uint32_t b = ps->b0; b < ps->b1; b++)
		crc[b - ps->b0] = get_le32(l->crcs + 4 * (size_t)b);
	return blocks_check_copy(ps, l->length, crc, in, n, data, dest);
}

/* Counts a local read's outcome: a failure towards the pause, a success resets it. */
static int piece_outcome(struct aq_client *c, const struct proto_loc *l, int rc)
{
	if (rc) {
		char path[PATH_MAX];
		loc_path(l, path);
		local_failed(c, path, rc);
	} else {
		atomic_store(&c->local_fails, 0);
	}
	return rc;
}

int local_locate_ahead(struct aq_client *c, uint32_t idx, const struct rpc_call *call, uint32_t in, uint32_t n,
		       bool *direct, struct proto_loc *l, int *fd)
{
	struct proto_reply rep;
	int rc = call->status;
	if (!rc)
		rc = proto_reply_decode(OP_LOCATE, call->payload, call->len, &rep);
	if (!rc)
		rc = reply_loc(&rep, idx, l);
	if (rc)
		return rc;
	char path[PATH_MAX];
	loc_path(l, path);
	struct piece_span ps = piece_span(l->rec_off, l->length, in, n);
	*fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (*fd < 0) {
		rc = -errno;
		local_failed(c, path, rc);
		return rc;
	}
	/* O_DIRECT when asked and the bytes are not all in the page cache already (and the
	 * file system has it: not tmpfs) */
	*direct = *direct && ps.span && !fd_range_cached(*fd, ps.from, ps.len) &&
		  fcntl(*fd, F_SETFL, fcntl(*fd, F_GETFL) | O_DIRECT) == 0;
	if (!*direct)
		(void)posix_fadvise(*fd, (off_t)ps.from, (off_t)ps.len, POSIX_FADV_WILLNEED);
	return 0;
}

int local_locate_read(struct aq_client *c, uint64_t ino, uint32_t idx, const struct proto_loc *l, int fd, uint32_t in,
		      uint32_t n, uint8_t *dest)
{
	/* the header with the blocks when they start the record (a small file's one read);
	 * past the first block the blocks alone, as local_direct_finish reads them */
	struct piece_span ps = piece_span(l->rec_off, l->length, in, n);
	/* blocks that are exactly the bytes asked (a whole small file; a block-aligned piece)
	 * go straight to dest, checked there: no copy */
	bool straight = in % DATA_BLOCK_SIZE == 0 && ps.end - in == ps.span;
	uint8_t *mem = aq_malloc(DATA_REC_HDR_SIZE + (straight ? 0 : ps.span)), *hdr = ps.b0 ? NULL : mem;
	uint8_t *data = straight ? dest : mem + DATA_REC_HDR_SIZE;
	struct iovec iov[2] = {{mem, DATA_REC_HDR_SIZE}, {data, ps.span}};
	ssize_t got = preadv(fd, hdr ? iov : iov + 1, hdr ? 2 : 1, (off_t)ps.from);
	int rc = got == (ssize_t)ps.len ? 0 : got < 0 ? -errno : -EIO;
	if (!rc)
		rc = piece_check(ino, idx, l, &ps, in, n, hdr, data, dest);
	free(mem);
	return piece_outcome(c, l, rc);
}

void local_direct_span(const struct proto_loc *l, uint32_t in, uint32_t n, uint64_t *off, uint32_t *len)
{
	struct piece_span ps = piece_span(l->rec_off, l->length, in, n);
	*off = ps.from / DATA_REC_ALIGN * DATA_REC_ALIGN;
	*len = (uint32_t)((ps.from + ps.len + DATA_REC_ALIGN - 1) / DATA_REC_ALIGN * DATA_REC_ALIGN - *off);
}

int local_direct_finish(struct aq_client *c, uint64_t ino, uint32_t idx, const struct proto_loc *l, uint32_t in,
			uint32_t n, const uint8_t *mem, uint64_t off, int got, uint8_t *dest)
{
	struct piece_span ps = piece_span(l->rec_off, l->length, in, n);
	int rc = got < 0 ? got : (uint64_t)got < ps.from + ps.len - off ? -EIO : 0;
	/* past the first block the header is not read: the blocks' crc32c, from the index
	 * row of this version, say they are its bytes (as local_chunk_read trusts them, and
	 * local_locate_read) */
	if (!rc)
		rc = piece_check(ino, idx, l, &ps, in, n, ps.b0 ? NULL : mem + (l->rec_off - off), mem + (ps.data - off),
				 dest);
	return piece_outcome(c, l, rc);
}

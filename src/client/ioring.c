/*
 * ioring.c - batched asynchronous reads (aq_ioring_*). Each aq_io is cut at chunk
 * boundaries; every piece is one CHUNK_READ in flight to the target's server, read by the
 * connection's receiver straight into the caller's buffer. On aqd's machine a piece is a
 * LOCATE instead (answered on aqd's loop), and the thread that reaps it reads the bytes
 * from aqd's segment file itself, checked as aqd would (local.c); anything unexpected
 * reads it through aqd. A small piece is read through the page cache, the kernel reading
 * it ahead from when its LOCATE is answered; a big one (a shard's record) with O_DIRECT
 * through the ring's own io_uring, RING_DIRECT_MAX at a time, into buffers the ring keeps,
 * then checked and copied out: one copy, where through aqd it takes two and a TCP stream.
 * Completions arrive on the ring's completion queue; an aq_io is done when its last piece
 * is.
 *
 * Invariant: r->inflight counts submitted aq_ios not yet reaped; pieces of one aq_io are
 * counted in its pending_ field and only this ring's thread touches aq_io fields.
 */
#include "client/client_internal.h"
#include "data/data.h"
#include <liburing.h>
#include <sys/mman.h>
#include <unistd.h>

#define RING_DIRECT_MIN (256u << 10) /* pieces this big or bigger read O_DIRECT */
#define RING_DIRECT_MAX 8            /* O_DIRECT reads in flight per ring */

struct aq_ioring {
	struct aq_client *c;
	uint64_t affinity;        /* the connection this ring's LOCATEs take, together */
	uint32_t depth;
	uint32_t inflight;
	struct rpc_cq cq;
	struct aq_io **ready;     /* finished, not yet reaped */
	uint32_t nready;
	/* located pieces, oldest first, whose bytes the kernel reads ahead or an O_DIRECT read
	 * brings (or will, from unsent on, when one of the RING_DIRECT_MAX in flight lands):
	 * each is taken when the caller waits and no reply is there to take instead */
	struct rpc_list ahead;
	struct rpc_call *unsent;
	struct io_uring uring;    /* the O_DIRECT reads, once uring_state is 1 */
	int uring_state;          /* 0 not yet set up, 1 up, -1 unavailable, -2 broken */
	uint32_t ndirect;         /* O_DIRECT reads sent and not yet taken */
	void *spare[RING_DIRECT_MAX];   /* their buffers, kept for the next ones */
	uint32_t spare_len[RING_DIRECT_MAX], nspare;
};

int aq_ioring_create(struct aq_client *c, uint32_t depth, struct aq_ioring **out)
{
	if (depth == 0 || depth > 65536)
		return -EINVAL;
	struct aq_ioring *r = aq_calloc(1, sizeof *r);
	r->c = c;
	r->depth = depth;
	static atomic_uint_least64_t rings;
	r->affinity = atomic_fetch_add(&rings, 1) + 1;
	rpc_cq_init(&r->cq);
	r->ready = aq_calloc(depth, sizeof *r->ready);
	*out = r;
	return 0;
}

uint32_t aq_ioring_inflight(const struct aq_ioring *r) { return r->inflight; }

/* A piece read from aqd's segment file itself (local.c): its LOCATE's cq_arg. */
struct local_piece {
	struct aq_io *io;
	uint64_t pos;
	uint32_t len;
	uint8_t *dest;
	int fd;                   /* the segment file, while its bytes are read ahead */
	struct proto_loc loc;     /* where they lie: points into the LOCATE call's reply */
	bool direct;              /* read with O_DIRECT into mem, through the ring's io_uring */
	bool sent, landed;
	int got;                  /* the read's result, once landed */
	uint8_t *mem;             /* mem_len bytes, from direct_mem */
	uint64_t off;             /* where in the file the read into mem starts */
	uint32_t mem_len;
};

/* The ring's io_uring, set up on first use; false when the kernel gives none (or
 * $AQ_DATA_NO_URING asks for none, as it does of aqd's segment I/O). */
static bool ring_uring(struct aq_ioring *r)
{
	if (r->uring_state == 0 && getenv("AQ_DATA_NO_URING"))
		r->uring_state = -1;
	if (r->uring_state == 0) {
		int rc = io_uring_queue_init(2 * RING_DIRECT_MAX, &r->uring, 0);
		r->uring_state = rc ? -1 : 1;
		if (rc)
			log_debug("io_uring unavailable (%s): big local reads go through the page cache",
				  strerror(-rc));
	}
	return r->uring_state == 1;
}

/* A buffer of at least len bytes for an O_DIRECT read: a kept one, else a new mapping of
 * huge pages (*len: its size), so that the disk gets a 1 MiB read as one request. */
static uint8_t *direct_mem(struct aq_ioring *r, uint32_t *len)
{
	for (uint32_t i = 0; i < r->nspare; i++) {
		if (r->spare_len[i] >= *len) {
			uint8_t *m = r->spare[i];
			*len = r->spare_len[i];
			r->nspare--;
			r->spare[i] = r->spare[r->nspare];
			r->spare_len[i] = r->spare_len[r->nspare];
			return m;
		}
	}
	*len = (uint32_t)aq_huge_round(*len);
	return aq_map_huge(*len);
}

static void direct_mem_keep(struct aq_ioring *r, uint8_t *m, uint32_t len)
{
	if (r->nspare == RING_DIRECT_MAX) {
		munmap(m, len);
		return;
	}
	r->spare[r->nspare] = m;
	r->spare_len[r->nspare++] = len;
}

/* Sends a direct piece's read; one that cannot be sent lands at once with its error
 * (and is read through aqd). A submit that fails leaves its entry in the queue, where a
 * later submit would hand the kernel a buffer that may be another's by then: the ring
 * sends no more O_DIRECT reads after one (those in flight still land). */
static void direct_send(struct aq_ioring *r, struct local_piece *lp)
{
	uint32_t cs = r->c->map.chunk_size;
	uint32_t len;
	local_direct_span(&lp->loc, (uint32_t)(lp->pos % cs), lp->len, &lp->off, &len);
	lp->sent = true;
	lp->got = -EAGAIN;
	lp->landed = true;
	struct io_uring_sqe *sqe = r->uring_state == 1 ? io_uring_get_sqe(&r->uring) : NULL;
	if (!sqe)
		return; /* the queue has room for every read in flight: only after a failed submit */
	lp->mem_len = len;
	lp->mem = direct_mem(r, &lp->mem_len);
	io_uring_prep_read(sqe, lp->fd, lp->mem, len, lp->off);
	io_uring_sqe_set_data(sqe, lp);
	int rc = io_uring_submit(&r->uring);
	if (rc != 1) {
		log_warn("io_uring_submit: %s; this ring reads big pieces through aqd from now on",
			 strerror(rc < 0 ? -rc : EAGAIN));
		r->uring_state = -2; /* its entry may still be queued: mem is never used again */
		lp->mem = NULL;
		return;
	}
	lp->landed = false;
	r->ndirect++;
}

/* Sends the reads of the direct pieces waiting for room, oldest first. */
static void direct_fill(struct aq_ioring *r)
{
	while (r->unsent && r->ndirect < RING_DIRECT_MAX) {
		struct local_piece *lp = r->unsent->cq_arg;
		r->unsent = r->unsent->cq_next;
		if (lp->direct && !lp->sent)
			direct_send(r, lp);
	}
}

/* Waits for a direct piece's read to land (others that land meanwhile are marked). */
static void direct_wait(struct aq_ioring *r, struct local_piece *lp)
{
	while (!lp->landed) {
		struct io_uring_cqe *cqe;
		int rc = io_uring_wait_cqe(&r->uring, &cqe);
		if (rc == -EINTR || rc == -EAGAIN)
			continue;
		AQ_ASSERT(rc == 0); /* with reads in the kernel's hands their buffers cannot go */
		struct local_piece *x = io_uring_cqe_get_data(cqe);
		x->got = cqe->res;
		x->landed = true;
		r->ndirect--;
		io_uring_cqe_seen(&r->uring, cqe);
	}
}

/* Reads a piece through aqd, here and now (a local read that could not be made, or a
 * piece whose connection failed under it, once the server is back). */
static int piece_through_aqd(struct aq_client *c, uint64_t ino, uint64_t pos, uint32_t len, void *dest, int err)
{
	uint32_t cs = c->map.chunk_size;
	struct rpc_call *call = err ? NULL : chunk_read_start(c, ino, cs, pos, len, dest, NULL, NULL, &err);
	return chunk_read_finish(c, ino, cs, pos, len, dest, call, err);
}

/* Folds one finished piece into its aq_io; queues the aq_io when it is complete. A
 * located piece (its LOCATE answered) goes on the ahead list instead, with the kernel
 * reading its bytes, unless read_now: it is taken off that list and read. */
static void piece_done(struct aq_ioring *r, struct rpc_call *call, bool read_now)
{
	struct aq_io *io;
	int e;
	if (call->op == OP_LOCATE) {
		struct local_piece *lp = call->cq_arg;
		uint32_t cs = r->c->map.chunk_size, idx = (uint32_t)(lp->pos / cs), in = (uint32_t)(lp->pos % cs);
		io = lp->io;
		if (!read_now) {
			lp->direct = lp->len >= RING_DIRECT_MIN && ring_uring(r);
			e = local_locate_ahead(r->c, idx, call, in, lp->len, &lp->direct, &lp->loc, &lp->fd);
			if (!e) {
				rpc_list_push(&r->ahead, call);
				if (lp->direct && !r->unsent)
					r->unsent = call;
				direct_fill(r);
				return;
			}
		} else if (lp->direct) {
			if (!lp->sent) {
				/* not sent for want of room: none is in flight before it, so room now */
				if (r->unsent == call)
					r->unsent = call->cq_next;
				direct_send(r, lp);
			}
			direct_wait(r, lp);
			e = local_direct_finish(r->c, io->ino, idx, &lp->loc, in, lp->len, lp->mem, lp->off, lp->got,
						lp->dest);
			if (lp->mem)
				direct_mem_keep(r, lp->mem, lp->mem_len);
			close(lp->fd);
			direct_fill(r);
		} else {
			e = local_locate_read(r->c, io->ino, idx, &lp->loc, lp->fd, in, lp->len, lp->dest);
			close(lp->fd);
		}
		if (e)
			e = piece_through_aqd(r->c, io->ino, lp->pos, lp->len, lp->dest, 0);
		free(lp);
	} else {
		io = call->cq_arg;
		e = rpc_read_into(call);
		if (e && aq_err_unreachable(e) && !call->answered) {
			/* the connection failed under it: read it again once the server is back */
			uint64_t pos = io->off + (uint64_t)((uint8_t *)call->rdest - (uint8_t *)io->buf);
			e = piece_through_aqd(r->c, io->ino, pos, call->rdest_len, call->rdest, e);
		}
	}
	if (e && !io->err_)
		io->err_ = e;
	rpc_free(call);
	AQ_ASSERT(io->pending_ > 0);
	if (--io->pending_ == 0) {
		if (io->err_)
			io->result = io->err_;
		AQ_ASSERT(r->nready < r->depth);
		r->ready[r->nready++] = io;
	}
}

int aq_ioring_submit(struct aq_ioring *r, struct aq_io *const *ios, uint32_t n)
{
	struct aq_client *c = r->c;
	uint32_t taken = 0;
	bool located = false;
	for (; taken < n && r->inflight < r->depth; taken++) {
		struct aq_io *io = ios[taken];
		io->err_ = 0;
		io->pending_ = 0;
		uint64_t end = MIN(io->off + io->len, io->file_size);
		io->result = end > io->off ? (int64_t)(end - io->off) : 0;
		r->inflight++;
		if (io->result == 0) {
			r->ready[r->nready++] = io;
			continue;
		}
		uint32_t cs = c->map.chunk_size;
		/* on aqd's machine a read is located, then read from aqd's file (local.c) */
		bool local = local_wanted(c);
		/* one extra count while we submit, so an early completion cannot finish it */
		io->pending_ = 1;
		for (uint64_t pos = io->off; pos < end;) {
			uint32_t len = (uint32_t)MIN((uint64_t)(cs - pos % cs), end - pos);
			uint8_t *dest = (uint8_t *)io->buf + (pos - io->off);
			int e = 0;
			io->pending_++;
			struct rpc_call *call = NULL;
			if (local) {
				struct local_piece *lp = aq_malloc(sizeof *lp);
				*lp = (struct local_piece){.io = io, .pos = pos, .len = len, .dest = dest, .fd = -1};
				call = local_locate_start(c, io->ino, (uint32_t)(pos / cs), r->affinity, &r->cq, lp,
							  &e);
				if (!call)
					free(lp);
				located |= call != NULL;
			}
			if (!call)
				call = chunk_read_start(c, io->ino, cs, pos, len, dest, &r->cq, io, &e);
			if (!call) {
				/* no connection now: read it here, once the server is back */
				io->pending_--;
				e = piece_through_aqd(c, io->ino, pos, len, dest, e);
				if (e && !io->err_)
					io->err_ = e;
			}
			pos += len;
		}
		if (--io->pending_ == 0) {
			io->result = io->err_ ? io->err_ : io->result;
			r->ready[r->nready++] = io;
		}
	}
	if (located)
		rpc_send_held(c); /* the LOCATEs held back above, in one frame */
	return (int)taken;
}

int aq_ioring_reap(struct aq_ioring *r, struct aq_io **done, uint32_t max, uint32_t min)
{
	if (min > r->inflight)
		min = r->inflight;
	if (min > max)
		min = max;
	/* gather what has finished, waiting while fewer than min are ready: replies first
	 * (each located piece's read starts), then the oldest piece read ahead (also when a
	 * caller that does not wait has nothing else, so that it sees progress) */
	for (;;) {
		bool need = r->nready < min;
		struct rpc_call *call = rpc_cq_pop(&r->cq, need && !r->ahead.head);
		if (call) {
			piece_done(r, call, false);
		} else if (r->ahead.head && (need || r->nready == 0)) {
			piece_done(r, rpc_list_pop(&r->ahead), true);
		} else {
			break;
		}
	}
	uint32_t n = MIN(max, r->nready);
	for (uint32_t i = 0; i < n; i++)
		done[i] = r->ready[i];
	memmove(r->ready, r->ready + n, (r->nready - n) * sizeof *r->ready);
	r->nready -= n;
	r->inflight -= n;
	return (int)n;
}

void aq_ioring_destroy(struct aq_ioring *r)
{
	if (!r)
		return;
	/* let every piece in flight land before the buffers and the queue go away */
	while (r->inflight) {
		struct aq_io *tmp[64];
		aq_ioring_reap(r, tmp, 64, 1);
	}
	AQ_ASSERT(r->ndirect == 0);
	if (r->uring_state == 1 || r->uring_state == -2)
		io_uring_queue_exit(&r->uring);
	for (uint32_t i = 0; i < r->nspare; i++)
		munmap(r->spare[i], r->spare_len[i]);
	rpc_cq_destroy(&r->cq);
	free(r->ready);
	free(r);
}

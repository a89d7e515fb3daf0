/*
 * ioring.c - batched asynchronous reads (aq_ioring_*). Each aq_io is cut at chunk
 * boundaries; every piece is one CHUNK_READ in flight to the target's server, read by the
 * connection's receiver straight into the caller's buffer. On aqd's machine a piece is a
 * LOCATE instead (answered on aqd's loop), and the thread that reaps it reads the bytes
 * from aqd's segment file itself, checked as aqd would (local.c); anything unexpected
 * reads it through aqd. Completions arrive on the ring's completion queue; an aq_io is
 * done when its last piece is.
 *
 * Invariant: r->inflight counts submitted aq_ios not yet reaped; pieces of one aq_io are
 * counted in its pending_ field and only this ring's thread touches aq_io fields.
 */
#include "client/client_internal.h"
#include <unistd.h>

#define RING_LOCAL_MAX (256u << 10)

struct aq_ioring {
	struct aq_client *c;
	uint32_t depth;
	uint32_t inflight;
	struct rpc_cq cq;
	struct aq_io **ready;     /* finished, not yet reaped */
	uint32_t nready;
	/* located pieces whose bytes the kernel is reading ahead, oldest first: each is read
	 * when the caller waits and no reply is there to take instead */
	struct rpc_call *ahead_head, *ahead_tail;
};

int aq_ioring_create(struct aq_client *c, uint32_t depth, struct aq_ioring **out)
{
	if (depth == 0 || depth > 65536)
		return -EINVAL;
	struct aq_ioring *r = aq_calloc(1, sizeof *r);
	r->c = c;
	r->depth = depth;
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
};

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
			lp->fd = -1;
			e = local_locate_ahead(r->c, idx, call, in, lp->len, &lp->loc, &lp->fd);
			if (!e) {
				call->cq_next = NULL;
				if (r->ahead_tail)
					r->ahead_tail->cq_next = call;
				else
					r->ahead_head = call;
				r->ahead_tail = call;
				return;
			}
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
		/* on aqd's machine a small read is located, then read from aqd's file (local.c);
		 * a big one reads faster through aqd, whose O_DIRECT reads keep the disk busier
		 * than the page cache's read-ahead (docs/performance.md, "The read ring's local
		 * reads") */
		bool local = io->len <= RING_LOCAL_MAX && local_wanted(c);
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
				*lp = (struct local_piece){.io = io, .pos = pos, .len = len, .dest = dest};
				call = local_locate_start(c, io->ino, (uint32_t)(pos / cs), &r->cq, lp, &e);
				if (!call)
					free(lp);
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
		struct rpc_call *call = rpc_cq_pop(&r->cq, need && !r->ahead_head);
		if (call) {
			piece_done(r, call, false);
		} else if (r->ahead_head && (need || r->nready == 0)) {
			call = r->ahead_head;
			r->ahead_head = call->cq_next;
			if (!r->ahead_head)
				r->ahead_tail = NULL;
			piece_done(r, call, true);
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
	rpc_cq_destroy(&r->cq);
	free(r->ready);
	free(r);
}

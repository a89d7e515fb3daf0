/*
 * ioring.c - batched asynchronous reads (aq_ioring_*). Each aq_io is cut at chunk
 * boundaries; every piece is one CHUNK_READ in flight to the target's server, read by the
 * connection's receiver straight into the caller's buffer. Completions arrive on the
 * ring's completion queue; an aq_io is done when its last piece is.
 *
 * Invariant: r->inflight counts submitted aq_ios not yet reaped; pieces of one aq_io are
 * counted in its pending_ field and only this ring's thread touches aq_io fields.
 */
#include "client/client_internal.h"

struct aq_ioring {
	struct aq_client *c;
	uint32_t depth;
	uint32_t inflight;
	struct rpc_cq cq;
	struct aq_io **ready;     /* finished, not yet reaped */
	uint32_t nready;
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

/* Folds one finished piece into its aq_io; queues the aq_io when it is complete. */
static void piece_done(struct aq_ioring *r, struct rpc_call *call)
{
	struct aq_io *io = call->cq_arg;
	int e = rpc_read_into(call);
	if (e && aq_err_unreachable(e) && !call->answered) {
		/* the connection failed under it: read it again once the server is back */
		uint64_t pos = io->off + (uint64_t)((uint8_t *)call->rdest - (uint8_t *)io->buf);
		e = chunk_read_finish(r->c, io->ino, r->c->map.chunk_size, pos, call->rdest_len, call->rdest, NULL, e);
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
		/* one extra count while we submit, so an early completion cannot finish it */
		io->pending_ = 1;
		for (uint64_t pos = io->off; pos < end;) {
			uint32_t len = (uint32_t)MIN((uint64_t)(cs - pos % cs), end - pos);
			int e = 0;
			io->pending_++;
			struct rpc_call *call = chunk_read_start(c, io->ino, cs, pos, len,
								 (uint8_t *)io->buf + (pos - io->off), &r->cq, io, &e);
			if (!call) {
				/* no connection now: read it here, once the server is back */
				io->pending_--;
				e = chunk_read_finish(c, io->ino, cs, pos, len, (uint8_t *)io->buf + (pos - io->off), NULL, e);
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
	/* gather what has finished, waiting while fewer than min are ready */
	for (;;) {
		struct rpc_call *call = rpc_cq_pop(&r->cq, r->nready < min);
		if (!call)
			break;
		piece_done(r, call);
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

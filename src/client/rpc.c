/*
 * rpc.c - libaq's connections: connect and authenticate (HMAC challenge), then pipeline
 * requests. Any thread may send. One reader at a time takes replies off a connection
 * and matches them to calls by request id, so replies may come back in any order: a
 * thread waiting for its reply reads the socket itself when nobody else does (no thread
 * hand-off on the way back, which on a small machine costs as much as the server's
 * work), and the connection's receiver thread reads when calls are pending that nobody
 * waits on. A connection that breaks fails its pending calls with -ENOTCONN; the next
 * call reconnects (a restarted aqd is found again) and rpc_do retries for up to
 * RPC_RECONNECT_S seconds ($AQ_RECONNECT_S).
 */
#include "client/client_internal.h"
#include "common/auth.h"
#include "common/fdio.h"
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static int send_frame(int fd, uint16_t op, uint64_t id, uint32_t epoch, const void *p, size_t len)
{
	struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = op, .req_id = id,
			      .epoch = epoch, .payload_len = (uint32_t)len};
	uint8_t hb[PROTO_HDR_SIZE];
	proto_hdr_encode(hb, &h);
	struct iovec iov[2] = {{hb, sizeof hb}, {(void *)p, len}};
	return fd_writev_full(fd, iov, len ? 2 : 1, -1);
}

/* ---- reply buffers ----
 *
 * A large reply (a listing page, a read that is not received straight into its caller's
 * buffer) lands in a spare buffer when one fits, and its buffer goes back to the spares
 * when the call is freed. With malloc alone, each freed block of the receiver's arena went
 * back to the kernel (glibc trims a thread arena with madvise, a TLB flush across every
 * CPU) and faulted in again on the next reply: a quarter of a million-entry listing's time
 * (docs/performance.md, "Reply buffers"). */

#define SPARE_MIN (64u << 10)     /* smaller replies come from malloc */
#define SPARE_GRAIN (64u << 10)   /* spare sizes are multiples of this */
#define SPARE_BYTES (8u << 20)    /* at most this much kept */

/* A buffer for len bytes; *cap is its size when it may go to the spares, else 0. */
static uint8_t *payload_alloc(struct aq_client *c, uint32_t len, uint32_t *cap)
{
	*cap = 0;
	if (len < SPARE_MIN)
		return aq_malloc(len ? len : 1);
	pthread_mutex_lock(&c->spare_mu);
	uint32_t best = c->nspare;
	for (uint32_t i = 0; i < c->nspare; i++)
		if (c->spare[i].cap >= len && c->spare[i].cap / 2 <= len &&
		    (best == c->nspare || c->spare[i].cap < c->spare[best].cap))
			best = i;
	uint8_t *p = NULL;
	if (best < c->nspare) {
		p = c->spare[best].p;
		*cap = c->spare[best].cap;
		c->spare_bytes -= *cap;
		c->spare[best] = c->spare[--c->nspare];
	}
	pthread_mutex_unlock(&c->spare_mu);
	if (!p) {
		*cap = (uint32_t)(((uint64_t)len + SPARE_GRAIN - 1) / SPARE_GRAIN * SPARE_GRAIN);
		p = aq_malloc(*cap);
	}
	return p;
}

static void payload_release(struct aq_client *c, uint8_t *p, uint32_t cap)
{
	if (cap) {
		pthread_mutex_lock(&c->spare_mu);
		if (c->nspare < ARRAY_SIZE(c->spare) && c->spare_bytes + cap <= SPARE_BYTES) {
			c->spare[c->nspare++] = (struct spare_buf){p, cap};
			c->spare_bytes += cap;
			p = NULL;
		}
		pthread_mutex_unlock(&c->spare_mu);
	}
	free(p);
}

void rpc_spares_free(struct aq_client *c)
{
	for (uint32_t i = 0; i < c->nspare; i++)
		free(c->spare[i].p);
	c->nspare = 0;
	c->spare_bytes = 0;
}

void rpc_replace_payload(struct rpc_call *call, uint8_t *mem)
{
	if (call->cap)
		payload_release(call->conn->client, call->payload, call->cap);
	else
		free(call->payload);
	call->payload = mem;
	call->cap = 0;
	call->len = 0;
}

/* Reads one frame; *payload is malloc'ed (caller frees). */
static int recv_frame(int fd, struct proto_hdr *h, uint8_t **payload)
{
	uint8_t hb[PROTO_HDR_SIZE];
	int rc = fd_read_full(fd, hb, sizeof hb);
	if (rc)
		return rc;
	rc = proto_hdr_decode(hb, sizeof hb, h);
	if (rc)
		return rc;
	*payload = aq_malloc(h->payload_len ? h->payload_len : 1);
	rc = fd_read_full(fd, *payload, h->payload_len);
	if (rc) {
		free(*payload);
		*payload = NULL;
	}
	return rc;
}

static int dial(const struct cluster_server *sv)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res, *ai;
	char port[8];
	snprintf(port, sizeof port, "%u", sv->port);
	if (getaddrinfo(sv->addr, port, &hints, &res))
		return -EHOSTUNREACH;
	int fd = -ECONNREFUSED;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			fd = -errno;
			continue;
		}
		int e = connect(fd, ai->ai_addr, ai->ai_addrlen) ? errno : 0;
		if (!e && !fd_self_connected(fd))
			break;
		if (!e) {
			/* Connected to itself, while aqd restarts on a port of the range the
			 * kernel gives connects (it prefers even ones): refused, as Go's dialer
			 * takes it. Reset, not closed: a closed one would wait in TIME_WAIT,
			 * holding the port for a minute, and the new aqd could not bind it. */
			struct linger reset = {.l_onoff = 1, .l_linger = 0};
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
		}
		close(fd);
		fd = e ? -e : -ECONNREFUSED;
	}
	freeaddrinfo(res);
	if (fd < 0)
		return fd;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	int buf = 4 << 20;
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
	return fd;
}

/* A frame of the handshake, which must come within the client's handshake timeout
 * (SO_RCVTIMEO, whose expiry fails the read with EAGAIN): -ETIMEDOUT when it does not. A
 * server that accepted and never answered is one that could not be reached, and callers
 * try again until their reconnect window is spent, as after a refused connection; as
 * EAGAIN, a lock wait resent after a restart of aqd had ended with it. */
static int recv_handshake_frame(int fd, struct proto_hdr *h, uint8_t **payload)
{
	int rc = recv_frame(fd, h, payload);
	return rc == -EAGAIN || rc == -EWOULDBLOCK ? -ETIMEDOUT : rc;
}

/* One request and its reply on a connection nobody else reads yet (the handshake). */
static int handshake_call(int fd, uint32_t epoch, const struct proto_req *req)
{
	struct wbuf w;
	wbuf_init(&w, 64);
	proto_req_encode(&w, req);
	int rc = send_frame(fd, req->op, 1, epoch, w.p, w.len);
	wbuf_free(&w);
	struct proto_hdr h;
	uint8_t *p = NULL;
	if (!rc)
		rc = recv_handshake_frame(fd, &h, &p);
	if (!rc && h.op != req->op)
		rc = -EPROTO;
	if (!rc && h.status)
		rc = aq_err_from_status(h.status);
	free(p);
	return rc;
}

static void set_recv_timeout(int fd, uint32_t ms)
{
	struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

/* Connects and answers the server's challenge; a watching client also says who it is
 * (and, on the connection that delivers, asks for INVAL frames). Returns an fd, whose
 * reads still time out (the caller's REOPEN is part of the handshake), or -errno. */
static int handshake(struct aq_client *c, uint32_t server, bool deliver)
{
	const struct cluster_server *sv = cluster_server_by_id(&c->map, server);
	if (!sv)
		return -EINVAL;
	int fd = dial(sv);
	if (fd < 0)
		return fd;
	set_recv_timeout(fd, c->handshake_ms);
	struct proto_hdr h;
	uint8_t *p = NULL;
	struct proto_reply rep;
	int rc = recv_handshake_frame(fd, &h, &p);
	if (!rc && (h.op != OP_HELLO || proto_reply_decode(OP_HELLO, p, h.payload_len, &rep) ||
		    rep.data_len != PROTO_NONCE_SIZE))
		rc = -EPROTO;
	if (rc)
		goto fail;
	uint8_t mac[PROTO_MAC_SIZE];
	auth_mac(c->map.secret, sizeof c->map.secret, rep.data, rep.data_len, mac);
	free(p);
	p = NULL;
	struct proto_req req = {.op = OP_AUTH, .data = mac, .data_len = sizeof mac};
	rc = handshake_call(fd, c->map.epoch, &req);
	uint64_t watch_id = atomic_load(&c->watch_id);
	if (!rc && watch_id) {
		struct proto_req wr = {.op = OP_WATCH, .cookie = watch_id, .flags = deliver ? PROTO_WATCH_DELIVER : 0};
		rc = handshake_call(fd, c->map.epoch, &wr);
	}
	if (rc)
		goto fail;
	return fd;
fail:
	free(p);
	close(fd);
	return rc;
}

static void enqueue_and_send(struct rpc_conn *rc, uint16_t op, uint64_t id, uint16_t flags, const struct wbuf *payload,
			     bool hold);
static void drain_locked(struct rpc_conn *rc);
static void send_ext_locked(struct rpc_conn *rc, uint16_t op, uint64_t id, uint16_t flags, const struct wbuf *w,
			    size_t ext_at, const void *ext, size_t ext_len);

static struct rpc_call **pending_slot(struct rpc_conn *rc, uint64_t id)
{
	struct rpc_call **pp = &rc->pending[id % RPC_PENDING_BUCKETS];
	while (*pp && (*pp)->id != id)
		pp = &(*pp)->next;
	return pp;
}

static void pending_add_locked(struct rpc_conn *rc, struct rpc_call *call)
{
	struct rpc_call **slot = &rc->pending[call->id % RPC_PENDING_BUCKETS];
	call->next = *slot;
	*slot = call;
	rc->npending++;
}

static struct rpc_call *pending_take_locked(struct rpc_conn *rc, struct rpc_call **pp)
{
	struct rpc_call *call = *pp;
	*pp = call->next;
	rc->npending--;
	return call;
}

/* Marks a call done: wakes its waiter and announces it on its completion queue. Called
 * with the connection's mu held. */
static void call_done_locked(struct rpc_call *call, int status)
{
	call->done = true;
	call->status = status;
	pthread_cond_signal(&call->cv);
	struct rpc_cq *cq = call->cq;
	if (cq) {
		pthread_mutex_lock(&cq->mu);
		rpc_list_push(&cq->done, call);
		pthread_cond_signal(&cq->cv);
		pthread_mutex_unlock(&cq->mu);
	}
}

void rpc_list_push(struct rpc_list *l, struct rpc_call *call)
{
	call->cq_next = NULL;
	if (l->tail)
		l->tail->cq_next = call;
	else
		l->head = call;
	l->tail = call;
}

struct rpc_call *rpc_list_pop(struct rpc_list *l)
{
	struct rpc_call *call = l->head;
	if (call) {
		l->head = call->cq_next;
		if (!l->head)
			l->tail = NULL;
	}
	return call;
}

void rpc_cq_init(struct rpc_cq *cq)
{
	memset(cq, 0, sizeof *cq);
	pthread_mutex_init(&cq->mu, NULL);
	pthread_cond_init(&cq->cv, NULL);
}

void rpc_cq_destroy(struct rpc_cq *cq)
{
	pthread_mutex_destroy(&cq->mu);
	pthread_cond_destroy(&cq->cv);
}

struct rpc_call *rpc_cq_pop(struct rpc_cq *cq, bool wait)
{
	pthread_mutex_lock(&cq->mu);
	while (wait && !cq->done.head)
		pthread_cond_wait(&cq->cv, &cq->mu);
	struct rpc_call *call = rpc_list_pop(&cq->done);
	pthread_mutex_unlock(&cq->mu);
	return call;
}

int rpc_read_into(struct rpc_call *call)
{
	if (call->status || call->direct)
		return call->status;
	struct proto_reply rep;
	int rc = proto_reply_decode(OP_CHUNK_READ, call->payload, call->len, &rep);
	if (!rc && rep.data_len != call->rdest_len)
		rc = -EPROTO;
	if (!rc)
		memcpy(call->rdest, rep.data, call->rdest_len);
	return rc;
}

static void complete_locked(struct rpc_conn *rc, uint64_t id, int status, const uint8_t *p, uint32_t len)
{
	struct rpc_call **pp = pending_slot(rc, id);
	struct rpc_call *call = *pp;
	if (!call || call->is_batch)
		return;
	pending_take_locked(rc, pp);
	if (!status) {
		call->payload = aq_malloc(len ? len : 1);
		memcpy(call->payload, p, len);
		call->len = len;
	}
	call->answered = p != NULL;
	call_done_locked(call, status);
}

/* Hands each sub-reply of a BATCH reply to its call; a batch that failed as a whole (or a
 * reply that does not parse) fails every call it carried. */
static void complete_batch_locked(struct rpc_conn *rc, struct rpc_call *batch, const struct proto_hdr *h,
				  const uint8_t *payload)
{
	int err = h->status ? aq_err_from_status(h->status) : 0;
	struct proto_reply rep;
	if (!err && proto_reply_decode(OP_BATCH, payload, h->payload_len, &rep))
		err = -EPROTO;
	if (!err) {
		struct rbuf rb;
		rbuf_init(&rb, rep.entries, rep.entries_len);
		for (uint32_t i = 0; i < rep.count; i++) {
			struct proto_hdr sh;
			const uint8_t *sp;
			if (proto_batch_next(&rb, &sh, &sp)) {
				err = -EPROTO;
				break;
			}
			complete_locked(rc, sh.req_id, sh.status ? aq_err_from_status(sh.status) : 0, sp, sh.payload_len);
		}
	}
	/* whatever is still pending of this batch got no answer */
	for (uint32_t i = 0; i < batch->nsubs; i++)
		complete_locked(rc, batch->sub_ids[i], err ? err : -EPROTO, NULL, 0);
}

/* Fails every pending call but one the reader is filling (read_frame), which it
 * completes itself. */
static void fail_pending_locked(struct rpc_conn *rc, int err)
{
	for (int i = 0; i < RPC_PENDING_BUCKETS; i++) {
		struct rpc_call **pp = &rc->pending[i];
		while (*pp) {
			if ((*pp)->filling) {
				pp = &(*pp)->next;
				continue;
			}
			struct rpc_call *call = pending_take_locked(rc, pp);
			if (call->is_batch) {
				rpc_free(call);
				continue;
			}
			call_done_locked(call, err);
		}
	}
}

/* An INVAL frame: counted first (see aq_inval_seq), then each record to the callback. */
static void deliver_invals(struct aq_client *c, const uint8_t *p, uint32_t len)
{
	atomic_fetch_add(&c->inval_seq, 1);
	if (!c->watch_fn)
		return;
	struct rbuf rb;
	rbuf_init(&rb, p, len);
	uint8_t kind;
	uint64_t ino;
	const char *name;
	uint32_t nlen;
	int rc;
	while ((rc = proto_inval_next(&rb, &kind, &ino, &name, &nlen)) > 0) {
		struct aq_inval iv = {.ino = kind == PROTO_INVAL_INODE ? ino : 0,
				      .parent = kind == PROTO_INVAL_ENTRY ? ino : 0, .name = name, .name_len = nlen};
		if (iv.ino)
			state_changed_elsewhere(c, iv.ino);
		if (iv.ino || iv.parent)
			c->watch_fn(c->watch_arg, &iv);
	}
	if (rc < 0)
		log_warn("malformed INVAL frame (%u bytes)", len);
}

/* Takes one frame off the socket and hands it to its call (an INVAL frame to the
 * client's callback). Called by the connection's reader, without mu. Returns 0, or
 * -errno when the connection broke. */
static int read_frame(struct rpc_conn *rc, int fd)
{
	struct proto_hdr h;
	uint8_t hb[PROTO_HDR_SIZE];
	int err = fd_read_full(fd, hb, sizeof hb);
	if (!err)
		err = proto_hdr_decode(hb, sizeof hb, &h);
	if (err)
		return err;
	if (h.op == OP_CHUNK_READ && !h.status && h.payload_len >= 4) {
		/* Straight into the caller's buffer when the call asked for it. The call
		 * stays pending until it is full: the keeper, which may fail a connection's
		 * calls while its reader reads (conn_broken_locked), leaves it to the reader,
		 * so that its caller does not free the buffer under the read. */
		pthread_mutex_lock(&rc->mu);
		struct rpc_call *call = *pending_slot(rc, h.req_id);
		void *dest = call ? call->rdest : NULL;
		bool fits = dest && h.payload_len == 4 + call->rdest_len;
		if (fits)
			call->filling = true;
		pthread_mutex_unlock(&rc->mu);
		if (fits) {
			uint8_t lenb[4];
			err = fd_read_full(fd, lenb, 4);
			if (!err && get_le32(lenb) != call->rdest_len)
				err = -EPROTO;
			if (!err)
				err = fd_read_full(fd, dest, call->rdest_len);
			pthread_mutex_lock(&rc->mu);
			struct rpc_call **pp = pending_slot(rc, h.req_id);
			AQ_ASSERT(*pp == call);
			pending_take_locked(rc, pp);
			call->filling = false;
			call->direct = !err;
			call->answered = !err;
			call_done_locked(call, err ? -ENOTCONN : 0); /* as conn_broken_locked fails the rest */
			pthread_mutex_unlock(&rc->mu);
			return err;
		}
	}
	uint32_t cap;
	uint8_t *p = payload_alloc(rc->client, h.payload_len, &cap);
	err = fd_read_full(fd, p, h.payload_len);
	if (err) {
		payload_release(rc->client, p, cap);
		return err;
	}
	if (h.op == OP_INVAL && (h.flags & PROTO_F_PUSH)) {
		deliver_invals(rc->client, p, h.payload_len);
		payload_release(rc->client, p, cap);
		return 0;
	}
	pthread_mutex_lock(&rc->mu);
	struct rpc_call **pp = pending_slot(rc, h.req_id);
	if (*pp) {
		struct rpc_call *call = pending_take_locked(rc, pp);
		if (call->is_batch) {
			complete_batch_locked(rc, call, &h, p);
			rpc_free(call);
		} else {
			call->payload = p;
			call->len = h.payload_len;
			call->cap = cap;
			call->answered = true;
			call_done_locked(call, h.status ? aq_err_from_status(h.status) : 0);
			p = NULL;
		}
	}
	pthread_mutex_unlock(&rc->mu);
	if (p)
		payload_release(rc->client, p, cap);
	return 0;
}

/* The first connection of a watching client's server takes INVAL frames at any time:
 * its receiver never stops reading. */
static bool always_read(const struct rpc_conn *rc)
{
	const struct aq_client *c = rc->client;
	return (uint32_t)(rc - c->conns) % c->nconns == 0 && atomic_load(&c->watch_id);
}

/* Whether the receiver thread should be reading now. Called with mu held. */
static bool rx_needed_locked(const struct rpc_conn *rc)
{
	return !rc->reading && rc->up && (always_read(rc) || (rc->rx_wanted && rc->npending));
}

/* Asks the receiver to read: calls are pending that nobody waits on. Called with mu held. */
static void rx_kick_locked(struct rpc_conn *rc)
{
	rc->rx_wanted = true;
	if (rx_needed_locked(rc))
		pthread_cond_broadcast(&rc->rx_cv);
}

/* A reader's read failed, or the keeper saw the server hang up: the connection is done,
 * and so are its calls. The socket is shut down, not closed: a reader or sender may
 * still hold its number, and returns at once now; ensure_up_locked closes it once they
 * are gone, so the number cannot pass to another socket under them. mu held. */
static void conn_broken_locked(struct rpc_conn *rc)
{
	rc->up = false;
	if (rc->fd >= 0)
		shutdown(rc->fd, SHUT_RDWR);
	fail_pending_locked(rc, -ENOTCONN);
	pthread_cond_broadcast(&rc->rx_cv);
}

/* Waits up to poll_ns for fd to turn readable without sleeping (see rpc_wait). */
static void poll_readable(int fd, uint64_t poll_ns)
{
	uint64_t until = aq_mono_ns() + poll_ns;
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	while (poll(&pfd, 1, 0) == 0 && aq_mono_ns() < until)
		sched_yield(); /* a thread with work on this CPU goes first */
}

/* Reads one frame as the connection's reader, polling up to poll_ns for it first; a
 * caller reading its own reply names its op (0: the receiver), for the test hook
 * $AQ_TEST_STALL_READER (client.c). Called with mu held and nobody reading; returns with
 * mu held. */
static void read_as_reader_locked(struct rpc_conn *rc, uint64_t poll_ns, uint16_t call_op)
{
	rc->reading = true;
	int fd = rc->fd;
	uint32_t gen = rc->gen;
	pthread_mutex_unlock(&rc->mu);
	if (poll_ns)
		poll_readable(fd, poll_ns);
	if (call_op && call_op == rc->client->test_stall_op)
		usleep(rc->client->test_stall_ms * 1000u);
	int err = read_frame(rc, fd);
	pthread_mutex_lock(&rc->mu);
	/* ensure_up_locked replaces the socket only once this reader is done with it */
	AQ_ASSERT(rc->fd == fd && rc->gen == gen);
	rc->reading = false;
	if (err)
		conn_broken_locked(rc);
	else if (!rc->up)
		pthread_cond_broadcast(&rc->rx_cv); /* ensure_up_locked waits for the last reader */
}

static void *rx_main(void *arg)
{
	struct rpc_conn *rc = arg;
	pthread_mutex_lock(&rc->mu);
	while (rc->up && !rc->rx_stop) {
		if (!rx_needed_locked(rc)) {
			pthread_cond_wait(&rc->rx_cv, &rc->mu);
			continue;
		}
		read_as_reader_locked(rc, 0, 0);
		if (!rc->npending)
			rc->rx_wanted = false;
	}
	rc->rx_exited = true;
	pthread_cond_broadcast(&rc->rx_cv);
	pthread_mutex_unlock(&rc->mu);
	return NULL;
}

static uint32_t server_index(const struct aq_client *c, uint32_t server)
{
	for (uint32_t i = 0; i < c->map.nservers; i++)
		if (c->map.servers[i].id == server)
			return i;
	return 0;
}

bool rpc_retry_wait(struct aq_client *c, uint32_t server, uint64_t *deadline, int attempt)
{
	atomic_bool *down = &c->server_down[server_index(c, server)];
	if (!*deadline)
		*deadline = atomic_load(down) ? aq_mono_ns() : aq_mono_ns() + (uint64_t)c->reconnect_s * 1000000000ull;
	if (aq_mono_ns() >= *deadline) {
		if (!atomic_exchange(down, true))
			log_warn("server %u: no connection for %u s; calls to it fail at once until one is made",
				 server, c->reconnect_s);
		return false;
	}
	usleep(attempt < 10 ? 50000 : 250000);
	return true;
}

static struct rpc_conn *pick_conn(struct aq_client *c, uint32_t server, uint64_t affinity);
static void keeper_start_locked(struct aq_client *c);

void rpc_hold_file(struct aq_client *c, struct aq_file *f, struct rpc_conn *on)
{
	pthread_mutex_lock(&c->held_mu);
	f->held_on = on ? on : pick_conn(c, f->server, f->affinity);
	atomic_fetch_add(&f->held_on->nheld, 1);
	f->hprev = NULL;
	f->hnext = c->held;
	if (c->held)
		c->held->hprev = f;
	c->held = f;
	keeper_start_locked(c);
	pthread_mutex_unlock(&c->held_mu);
}

void rpc_unhold_file(struct aq_client *c, struct aq_file *f)
{
	pthread_mutex_lock(&c->held_mu);
	if (f->held_on) {
		atomic_fetch_sub(&f->held_on->nheld, 1);
		if (f->hprev)
			f->hprev->hnext = f->hnext;
		else
			c->held = f->hnext;
		if (f->hnext)
			f->hnext->hprev = f->hprev;
		f->held_on = NULL;
	}
	pthread_mutex_unlock(&c->held_mu);
}

/* On a connection that comes up again: the files this client holds open through it,
 * named to the server in REOPEN requests before anything else is sent (the server
 * forgot them if it restarted, and keeps an unlinked one only for its holders). */
static int reopen_held(struct aq_client *c, struct rpc_conn *rc, int fd)
{
	uint64_t *inos = NULL;
	uint32_t n = 0, cap = 0;
	pthread_mutex_lock(&c->held_mu);
	for (struct aq_file *f = c->held; f; f = f->hnext) {
		/* a lazy open still in flight is sent again by its first call instead */
		if (f->held_on != rc || !__atomic_load_n(&f->st, __ATOMIC_ACQUIRE))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			inos = aq_realloc(inos, cap * sizeof *inos);
		}
		inos[n++] = f->ino;
	}
	pthread_mutex_unlock(&c->held_mu);
	int err = 0;
	for (uint32_t at = 0; at < n && !err; at += PROTO_REOPEN_MAX) {
		uint32_t k = MIN(n - at, (uint32_t)PROTO_REOPEN_MAX);
		uint8_t *data = aq_malloc(8 * k);
		for (uint32_t i = 0; i < k; i++)
			put_le64(data + 8 * i, inos[at + i]);
		struct proto_req r = {.op = OP_REOPEN, .data = data, .data_len = 8 * k};
		err = handshake_call(fd, c->map.epoch, &r);
		free(data);
	}
	if (n)
		log_info("server %u: %u open files named again after the connection came back%s", rc->server, n,
			 err ? " (failed)" : "");
	free(inos);
	return err;
}

/* Brings the connection up if it is down. Called with rc->mu held.
 *
 * Every wait here lets go of mu, and another caller (or the keeper) may bring the
 * connection up meanwhile, with a new receiver and a new socket: after each wait, look
 * again from the top. A caller that went on waiting for the old receiver to exit waited
 * for good (the new one never exits while the connection is up), and held its FUSE
 * request with it: the hang CI saw twice, with aqd and the mount both alive. */
static int ensure_up_locked(struct rpc_conn *rc)
{
	for (;;) {
		if (rc->up)
			return 0;
		if (rc->rx_running && !rc->rx_exited) {
			/* the receiver leaves once it sees the connection down */
			pthread_cond_broadcast(&rc->rx_cv);
			pthread_cond_wait(&rc->rx_cv, &rc->mu);
			continue;
		}
		/* A caller reading its own reply (rpc_wait) may hold the old socket's number
		 * yet. Closed under it, the number would go to the next socket made, perhaps
		 * another connection's, whose replies it would then take and drop, and whose
		 * reads it would block for good: wait until it has seen the shutdown. */
		if (rc->fd >= 0 && rc->reading) {
			pthread_cond_wait(&rc->rx_cv, &rc->mu);
			continue;
		}
		break;
	}
	if (rc->rx_running) {
		pthread_join(rc->rx, NULL);
		rc->rx_running = false;
		rc->rx_exited = false;
		rc->rx_wanted = false;
	}
	if (rc->fd >= 0) {
		/* a sender holds send_mu while it writes */
		pthread_mutex_lock(&rc->send_mu);
		close(rc->fd);
		rc->fd = -1;
		pthread_mutex_unlock(&rc->send_mu);
	}
	/* frames queued for the old connection belong to calls that already failed */
	pthread_mutex_lock(&rc->q_mu);
	rc->q.len = 0;
	rc->q_count = 0;
	pthread_mutex_unlock(&rc->q_mu);
	struct aq_client *c = rc->client;
	bool deliver = (uint32_t)(rc - c->conns) % c->nconns == 0;
	int fd = handshake(c, rc->server, deliver);
	if (fd >= 0 && rc->gen) {
		int err = reopen_held(c, rc, fd);
		if (err) {
			close(fd);
			fd = err;
		}
	}
	if (fd < 0)
		return fd;
	set_recv_timeout(fd, 0); /* from now on replies take as long as they take */
	/* its receiver first (it waits for mu): a connection nobody reads would hold its
	 * calls for good, and ensure_up_locked would wait for good for it to exit */
	if (pthread_create(&rc->rx, NULL, rx_main, rc)) {
		close(fd);
		return -EAGAIN;
	}
	rc->rx_running = true;
	rc->fd = fd;
	rc->up = true;
	atomic_store(&c->server_down[server_index(c, rc->server)], false);
	if (rc->gen && deliver && c->watch_fn) {
		/* INVAL frames sent while the connection was down are lost: say so */
		atomic_fetch_add(&c->inval_seq, 1);
		state_changed_elsewhere(c, 0);
		struct aq_inval lost = {0};
		c->watch_fn(c->watch_arg, &lost);
	}
	rc->gen++;
	return 0;
}

/* The keeper brings connections back without waiting for the next call after a server
 * restarts: a watching client's connections that take INVAL frames, or changes go
 * unheard meanwhile, and connections that files are open through, so that the server
 * hears of them (REOPEN) before it frees one unlinked meanwhile. */
static void *keeper_main(void *arg)
{
	struct aq_client *c = arg;
	while (!atomic_load(&c->keeper_stop)) {
		usleep(50000);
		for (uint32_t i = 0; i < c->map.nservers * c->nconns; i++) {
			struct rpc_conn *rc = &c->conns[i];
			bool delivers = i % c->nconns == 0 && atomic_load(&c->watch_id);
			if (!delivers && !atomic_load(&rc->nheld))
				continue;
			pthread_mutex_lock(&rc->mu);
			/* a connection nobody reads from shows that its server went only here */
			struct pollfd p = {.fd = rc->fd, .events = POLLRDHUP};
			if (rc->up && poll(&p, 1, 0) == 1 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
				conn_broken_locked(rc);
			if (!rc->up)
				ensure_up_locked(rc); /* fails while the server is down: try again */
			pthread_mutex_unlock(&rc->mu);
		}
	}
	return NULL;
}

/* With c->held_mu held. */
static void keeper_start_locked(struct aq_client *c)
{
	if (!c->keeper_running) {
		pthread_create(&c->keeper, NULL, keeper_main, c);
		c->keeper_running = true;
	}
}

void rpc_keeper_start(struct aq_client *c)
{
	pthread_mutex_lock(&c->held_mu);
	keeper_start_locked(c);
	pthread_mutex_unlock(&c->held_mu);
}

void rpc_keeper_stop(struct aq_client *c)
{
	if (c->keeper_running) {
		atomic_store(&c->keeper_stop, true);
		pthread_join(c->keeper, NULL);
		c->keeper_running = false;
	}
}

int rpc_conn_init(struct aq_client *c, struct rpc_conn *rc, uint32_t server)
{
	memset(rc, 0, sizeof *rc);
	rc->client = c;
	rc->server = server;
	rc->fd = -1;
	rc->next_id = 1;
	pthread_mutex_init(&rc->mu, NULL);
	pthread_mutex_init(&rc->send_mu, NULL);
	pthread_mutex_init(&rc->q_mu, NULL);
	pthread_cond_init(&rc->rx_cv, NULL);
	pthread_cond_init(&rc->q_cv, NULL);
	wbuf_init(&rc->q, 4096);
	pthread_mutex_lock(&rc->mu);
	int err = ensure_up_locked(rc);
	pthread_mutex_unlock(&rc->mu);
	return err;
}

void rpc_conn_fini(struct rpc_conn *rc)
{
	pthread_mutex_lock(&rc->mu);
	if (rc->fd >= 0)
		shutdown(rc->fd, SHUT_RDWR);
	rc->rx_stop = true;
	pthread_cond_broadcast(&rc->rx_cv);
	pthread_mutex_unlock(&rc->mu);
	if (rc->rx_running)
		pthread_join(rc->rx, NULL);
	if (rc->fd >= 0)
		close(rc->fd);
	pthread_mutex_destroy(&rc->mu);
	pthread_mutex_destroy(&rc->send_mu);
	pthread_mutex_destroy(&rc->q_mu);
	pthread_cond_destroy(&rc->rx_cv);
	pthread_cond_destroy(&rc->q_cv);
	wbuf_free(&rc->q);
	free(rc->q_ids);
}

uint64_t rpc_affinity(const struct proto_req *req)
{
	if (req->op == OP_OPEN || req->op == OP_OPEN_READ || req->op == OP_OPEN_MAP || req->op == OP_RELEASE ||
	    req->op == OP_LOCK)
		return req->ino;
	return 0;
}

/* Sends what waits in rc's queue, unless a sender is at it already. */
static void flush_held(struct rpc_conn *rc)
{
	pthread_mutex_lock(&rc->q_mu);
	if (rc->q_count && !rc->sending)
		drain_locked(rc);
	else
		pthread_mutex_unlock(&rc->q_mu);
}

/* Held frames (rpc_release_file's) ride with the next frame sent on their connection;
 * this thread sends those that nothing followed within RPC_HOLD_NS. It sleeps while
 * nothing is held. */
static void *flusher_main(void *arg)
{
	struct aq_client *c = arg;
	pthread_mutex_lock(&c->fl_mu);
	while (!c->fl_stop) {
		if (!c->fl_due) {
			pthread_cond_wait(&c->fl_cv, &c->fl_mu);
			continue;
		}
		c->fl_due = false;
		pthread_mutex_unlock(&c->fl_mu);
		struct timespec ts = {0, RPC_HOLD_NS};
		nanosleep(&ts, NULL);
		for (uint32_t i = 0; i < c->nconns * c->map.nservers; i++)
			flush_held(&c->conns[i]);
		pthread_mutex_lock(&c->fl_mu);
	}
	pthread_mutex_unlock(&c->fl_mu);
	return NULL;
}

/* The connection to server a request with this affinity takes (see rpc_start). */
static struct rpc_conn *pick_conn(struct aq_client *c, uint32_t server, uint64_t affinity)
{
	/* connections of one server are consecutive in c->conns */
	uint32_t base = 0;
	for (uint32_t i = 0; i < c->map.nservers; i++)
		if (c->map.servers[i].id == server)
			base = i * c->nconns;
	if (affinity == RPC_ON_PUSHES)
		return &c->conns[base];
	uint32_t first = atomic_load(&c->pushes_apart) ? 1 : 0;
	uint64_t pick = affinity ? affinity : atomic_fetch_add(&c->rr, 1);
	return &c->conns[base + first + pick % (c->nconns - first)];
}

/* Bytes of a request's payload sent from where they are (send_ext_locked). */
struct rpc_ext {
	size_t at; /* where in the encoded payload they belong */
	const void *p;
	size_t len;
};

/* Sends a request. A sync call is waited on at once by its sender, who then reads the
 * reply itself if nobody else is reading; any other call asks the receiver to read. With
 * ext, the calling thread sends it itself and ext's bytes from where they are. */
static struct rpc_call *start_call(struct aq_client *c, uint32_t server, uint16_t op, uint16_t flags,
				   const struct wbuf *payload, uint64_t affinity, void *rdest, uint32_t rdest_len,
				   struct rpc_cq *cq, void *cq_arg, bool hold, bool sync, const struct rpc_ext *ext,
				   int *err)
{
	struct rpc_conn *rc = pick_conn(c, server, affinity);
	struct rpc_call *call = aq_calloc(1, sizeof *call);
	pthread_cond_init(&call->cv, NULL);
	call->op = op;
	call->conn = rc;
	call->rdest = rdest;
	call->rdest_len = rdest_len;
	call->cq = cq;
	call->cq_arg = cq_arg;
	pthread_mutex_lock(&rc->mu);
	int e = ensure_up_locked(rc);
	if (e) {
		pthread_mutex_unlock(&rc->mu);
		pthread_cond_destroy(&call->cv);
		free(call);
		*err = e;
		return NULL;
	}
	call->id = rc->next_id++;
	pending_add_locked(rc, call);
	if (!sync)
		rx_kick_locked(rc);
	pthread_mutex_lock(&rc->q_mu);
	pthread_mutex_unlock(&rc->mu);
	if (ext)
		send_ext_locked(rc, op, call->id, flags, payload, ext->at, ext->p, ext->len);
	else
		enqueue_and_send(rc, op, call->id, flags, payload, hold);
	return call;
}

/* Sends req on rc with PROTO_F_NOREPLY, held back to leave with the next frame sent
 * there or after RPC_HOLD_NS (the flusher thread); nothing while rc is down. */
static void send_noreply(struct aq_client *c, struct rpc_conn *rc, const struct proto_req *req)
{
	pthread_mutex_lock(&rc->mu);
	if (!rc->up) { /* a RELEASE: the server forgot what the connection held when it went
			* down; a read's count (LOCATE): one read left uncounted */
		pthread_mutex_unlock(&rc->mu);
		return;
	}
	uint64_t id = rc->next_id++;
	pthread_mutex_lock(&rc->q_mu);
	pthread_mutex_unlock(&rc->mu);
	struct wbuf w;
	wbuf_init(&w, 96);
	proto_req_encode(&w, req);
	enqueue_and_send(rc, req->op, id, PROTO_F_NOREPLY, &w, true);
	wbuf_free(&w);
	pthread_mutex_lock(&c->fl_mu);
	if (!c->fl_running && !c->fl_stop)
		c->fl_running = pthread_create(&c->flusher, NULL, flusher_main, c) == 0;
	if (!c->fl_running) { /* no thread to send it later: now */
		pthread_mutex_unlock(&c->fl_mu);
		flush_held(rc);
		return;
	}
	if (!c->fl_due) {
		c->fl_due = true;
		pthread_cond_signal(&c->fl_cv);
	}
	pthread_mutex_unlock(&c->fl_mu);
}

void rpc_release_file(struct aq_client *c, struct aq_file *f, const struct proto_req *req)
{
	/* Where the server counts it open (every open file is held: file_new, open_lazy),
	 * not where its affinity points now: aq_watch sets the first connection apart. */
	AQ_ASSERT(f->held_on);
	send_noreply(c, f->held_on, req);
}

void rpc_send_noreply(struct aq_client *c, uint32_t server, uint64_t affinity, const struct proto_req *req)
{
	send_noreply(c, pick_conn(c, server, affinity), req);
}

struct rpc_call *rpc_start_held(struct aq_client *c, uint32_t server, uint16_t op, uint16_t flags,
				const struct wbuf *payload, uint64_t affinity, int *err)
{
	return start_call(c, server, op, flags, payload, affinity, NULL, 0, NULL, NULL, true, false, NULL, err);
}

void rpc_send_held(struct aq_client *c)
{
	for (uint32_t i = 0; i < c->nconns * c->map.nservers; i++)
		flush_held(&c->conns[i]);
}

void rpc_flusher_stop(struct aq_client *c)
{
	pthread_mutex_lock(&c->fl_mu);
	c->fl_stop = true;
	bool running = c->fl_running;
	pthread_cond_signal(&c->fl_cv);
	pthread_mutex_unlock(&c->fl_mu);
	if (running)
		pthread_join(c->flusher, NULL);
	c->fl_running = false;
	rpc_send_held(c);
}

struct rpc_call *rpc_start(struct aq_client *c, uint32_t server, uint16_t op, const struct wbuf *payload,
			   uint64_t affinity, int *err)
{
	return start_call(c, server, op, 0, payload, affinity, NULL, 0, NULL, NULL, false, false, NULL, err);
}

struct rpc_call *rpc_start_ex(struct aq_client *c, uint32_t server, uint16_t op, const struct wbuf *payload,
			      uint64_t affinity, void *rdest, uint32_t rdest_len, struct rpc_cq *cq, void *cq_arg,
			      bool hold, int *err)
{
	return start_call(c, server, op, 0, payload, affinity, rdest, rdest_len, cq, cq_arg, hold, false, NULL, err);
}

/* Requests whose reply waits on the disk or on S3 (chunk I/O, an OPEN_READ's bytes,
 * fsync, tier moves), or that are big (READDIR pages, which the server spreads over its
 * workers): never in a BATCH, which the server runs on its loop thread, and slept for,
 * not polled for (rpc_wait). */
static bool waits_on_io(uint16_t op)
{
	switch (op) {
	case OP_CHUNK_READ:
	case OP_CHUNK_WRITE:
	case OP_OPEN_READ:
	case OP_FSYNC:
	case OP_TIER:
	case OP_READDIR:
		return true;
	}
	return false;
}

/* LOCK neither: a wait's reply is sent when it ends, and aqd runs a LOCK outside any
 * BATCH (server.c, lock_frame) */
static bool batchable(uint16_t op) { return op != OP_BATCH && op != OP_LOCK && !waits_on_io(op); }

/* The header of a request frame of payload_len bytes on rc. */
static void frame_hdr(const struct rpc_conn *rc, uint16_t op, uint64_t id, uint16_t flags, size_t payload_len,
		      uint8_t hb[PROTO_HDR_SIZE])
{
	struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = op, .req_id = id,
			      .epoch = rc->client->map.epoch, .flags = flags, .payload_len = (uint32_t)payload_len};
	proto_hdr_encode(hb, &h);
}

/* Writes frames to rc's socket fd. Called with mu held (rc up); releases it once the
 * send lock is taken, so that a reconnect cannot close fd under the write. */
static void write_frames_unlock(struct rpc_conn *rc, int fd, struct iovec *iov, int iovcnt)
{
	pthread_mutex_lock(&rc->send_mu);
	pthread_mutex_unlock(&rc->mu);
	if (fd_writev_full(fd, iov, iovcnt, -1))
		shutdown(fd, SHUT_RDWR); /* the reader fails the calls; fd is still ours (send_mu) */
	pthread_mutex_unlock(&rc->send_mu);
}

/* Sends one drained queue: a BATCH frame when it holds several small requests, else the
 * frames back to back. Called without locks; takes mu to register the batch. */
static void send_drained(struct rpc_conn *rc, struct wbuf *frames, const uint64_t *ids, uint32_t n, bool all_batchable)
{
	pthread_mutex_lock(&rc->mu);
	if (!rc->up) {
		pthread_mutex_unlock(&rc->mu);
		return; /* the calls were failed when the connection went down */
	}
	int fd = rc->fd;
	uint8_t hb[PROTO_HDR_SIZE];
	struct iovec iov[3];
	int iovcnt;
	struct wbuf bp = {0};
	if (n > 1 && all_batchable) {
		struct rpc_call *b = aq_calloc(1, sizeof *b);
		pthread_cond_init(&b->cv, NULL);
		b->is_batch = true;
		b->op = OP_BATCH;
		b->conn = rc;
		b->id = rc->next_id++;
		b->sub_ids = aq_malloc(n * sizeof *b->sub_ids);
		memcpy(b->sub_ids, ids, n * sizeof *ids);
		b->nsubs = n;
		pending_add_locked(rc, b);
		/* the BATCH payload: max (u32) then the sub-frames as one string */
		wbuf_init(&bp, 8);
		wbuf_u32(&bp, n);
		wbuf_u32(&bp, (uint32_t)frames->len);
		frame_hdr(rc, OP_BATCH, b->id, 0, bp.len + frames->len, hb);
		iov[0] = (struct iovec){hb, sizeof hb};
		iov[1] = (struct iovec){bp.p, bp.len};
		iov[2] = (struct iovec){frames->p, frames->len};
		iovcnt = 3;
	} else {
		iov[0] = (struct iovec){frames->p, frames->len};
		iovcnt = 1;
	}
	write_frames_unlock(rc, fd, iov, iovcnt);
	wbuf_free(&bp);
}

/* Queues one frame; the first thread to find no sender active becomes the sender and
 * drains the queue until it is empty. Called with q_mu held; returns with it released. */
static void enqueue_and_send(struct rpc_conn *rc, uint16_t op, uint64_t id, uint16_t flags, const struct wbuf *payload,
			     bool hold)
{
	uint8_t hb[PROTO_HDR_SIZE];
	frame_hdr(rc, op, id, flags, payload ? payload->len : 0, hb);
	if (rc->q_count == 0)
		rc->q_batchable = true;
	wbuf_put(&rc->q, hb, sizeof hb);
	if (payload)
		wbuf_put(&rc->q, payload->p, payload->len);
	if (rc->q_count == rc->q_cap) {
		rc->q_cap = rc->q_cap ? 2 * rc->q_cap : 64;
		rc->q_ids = aq_realloc(rc->q_ids, rc->q_cap * sizeof *rc->q_ids);
	}
	rc->q_ids[rc->q_count++] = id;
	rc->q_batchable &= batchable(op);
	if (rc->sending || (hold && rc->q_count < RPC_HOLD_MAX)) {
		pthread_mutex_unlock(&rc->q_mu);
		return;
	}
	drain_locked(rc);
}

/* Sends everything queued on rc, as its sender (rc->sending). Called with q_mu held;
 * returns with it held and the queue empty. */
static void drain_queue_locked(struct rpc_conn *rc)
{
	struct wbuf frames;
	wbuf_init(&frames, 4096);
	uint64_t *ids = NULL;
	uint32_t ids_cap = 0;
	while (rc->q_count) {
		/* take at most PROTO_BATCH_MAX frames or ~1 MiB per send */
		struct wbuf tmp = frames;
		frames = rc->q;
		rc->q = tmp;
		rc->q.len = 0;
		uint32_t n = rc->q_count;
		bool all = rc->q_batchable;
		if (n > ids_cap) {
			ids_cap = n;
			ids = aq_realloc(ids, ids_cap * sizeof *ids);
		}
		memcpy(ids, rc->q_ids, n * sizeof *ids);
		rc->q_count = 0;
		pthread_mutex_unlock(&rc->q_mu);
		if (n > PROTO_BATCH_MAX)
			all = false; /* too many for one batch: plain frames */
		send_drained(rc, &frames, ids, n, all);
		pthread_mutex_lock(&rc->q_mu);
	}
	wbuf_free(&frames);
	free(ids);
}

/* Sends everything queued on rc, becoming its sender. Called with q_mu held and no
 * sender active; returns with q_mu released. */
static void drain_locked(struct rpc_conn *rc)
{
	rc->sending = true;
	drain_queue_locked(rc);
	rc->sending = false;
	pthread_cond_broadcast(&rc->q_cv);
	pthread_mutex_unlock(&rc->q_mu);
}

/* Sends one frame whose payload is w with ext_len bytes at ext inserted at w's byte
 * ext_at, from where they are: this thread becomes rc's sender (after the one at it, if
 * any), sends what was queued before, then this frame, then what came meanwhile. So the
 * bytes at ext are on the socket, or the connection failed, when it returns: the caller
 * may free them. Called with q_mu held; returns with it released. */
static void send_ext_locked(struct rpc_conn *rc, uint16_t op, uint64_t id, uint16_t flags, const struct wbuf *w,
			    size_t ext_at, const void *ext, size_t ext_len)
{
	while (rc->sending)
		pthread_cond_wait(&rc->q_cv, &rc->q_mu);
	rc->sending = true;
	drain_queue_locked(rc);
	pthread_mutex_unlock(&rc->q_mu);

	uint8_t hb[PROTO_HDR_SIZE];
	frame_hdr(rc, op, id, flags, w->len + ext_len, hb);
	struct iovec iov[4] = {{hb, sizeof hb},
			       {w->p, ext_at},
			       {(void *)ext, ext_len},
			       {w->p + ext_at, w->len - ext_at}};
	pthread_mutex_lock(&rc->mu);
	if (rc->up) /* else the call failed when the connection went down */
		write_frames_unlock(rc, rc->fd, iov, 4);
	else
		pthread_mutex_unlock(&rc->mu);

	pthread_mutex_lock(&rc->q_mu);
	drain_queue_locked(rc);
	rc->sending = false;
	pthread_cond_broadcast(&rc->q_cv);
	pthread_mutex_unlock(&rc->q_mu);
}

int rpc_wait(struct rpc_call *call)
{
	struct rpc_conn *rc = call->conn;
	/* A call still held in the queue goes out now (with whatever is queued beside it). */
	pthread_mutex_lock(&rc->q_mu);
	bool queued = false;
	for (uint32_t i = 0; i < rc->q_count && !queued; i++)
		queued = rc->q_ids[i] == call->id;
	if (queued && !rc->sending)
		drain_locked(rc);
	else
		pthread_mutex_unlock(&rc->q_mu);
	/* A metadata reply comes within tens of microseconds. Sleeping for it costs more on
	 * a small VM: the waker's CPU must wake this one from its halt (aqd polls for the
	 * next request for the same reason, net.c). Replies that wait on the disk or on
	 * S3 are slept for: their loaders need the CPU. */
	uint64_t poll_ns = waits_on_io(call->op) ? 0 : (uint64_t)rc->client->poll_us * 1000;
	pthread_mutex_lock(&rc->mu);
	while (!call->done) {
		if (!rc->reading && rc->up)
			read_as_reader_locked(rc, poll_ns, call->op);
		else
			pthread_cond_wait(&call->cv, &rc->mu);
	}
	/* replies still due to others: the receiver takes over */
	if (rc->npending || always_read(rc))
		rx_kick_locked(rc);
	pthread_mutex_unlock(&rc->mu);
	return call->status;
}

void rpc_free(struct rpc_call *call)
{
	if (!call)
		return;
	free(call->sub_ids);
	pthread_cond_destroy(&call->cv);
	rpc_replace_payload(call, NULL);
	free(call);
}

void rpc_number(struct aq_client *c, struct proto_req *r)
{
	if (proto_op_numbered(r->op)) {
		r->txn_client = c->txn_client;
		r->txn_seq = atomic_fetch_add(&c->txn_seq, 1);
	}
}

int rpc_do(struct aq_client *c, uint32_t server, const struct proto_req *req, struct proto_reply *rep,
	   struct rpc_call **callp)
{
	return rpc_do_on(c, server, req, rep, callp, rpc_affinity(req));
}

int rpc_do_on(struct aq_client *c, uint32_t server, const struct proto_req *req, struct proto_reply *rep,
	      struct rpc_call **callp, uint64_t affinity)
{
	struct proto_req numbered = *req;
	rpc_number(c, &numbered);
	/* A big write's bytes go to the socket from the caller's buffer, which stays put
	 * until this returns: two copies of every chunk a writer sends fewer (rpc_ext). */
	struct rpc_ext ext = {.p = req->data, .len = req->data_len};
	bool zero_copy = req->data_len >= RPC_ZERO_COPY_MIN;
	struct wbuf w;
	wbuf_init(&w, 128 + (zero_copy ? 0 : req->data_len) + req->name_len + req->name2_len);
	if (zero_copy)
		proto_req_encode_split(&w, &numbered, &ext.at);
	else
		proto_req_encode(&w, &numbered);
	uint64_t deadline = 0;
	int err;
	struct rpc_call *call = NULL;
	for (int attempt = 0;; attempt++) {
		/* sent again: the server may have run it, and looks for its record first */
		uint16_t flags = attempt ? PROTO_F_RETRY : 0;
		call = start_call(c, server, req->op, flags, &w, affinity, NULL, 0, NULL, NULL, false, true,
				  zero_copy ? &ext : NULL, &err);
		if (call)
			err = rpc_wait(call);
		/* a server that answered ENOTCONN or EHOSTUNREACH (no object tier, S3 down) meant
		 * it: only a connection that failed is worth trying again */
		if (!aq_err_unreachable(err) || (call && call->answered) ||
		    !rpc_retry_wait(c, server, &deadline, attempt))
			break;
		rpc_free(call);
		call = NULL;
	}
	wbuf_free(&w);
	if (!err && rep) {
		err = proto_reply_decode(req->op, call->payload, call->len, rep);
		if (err)
			log_warn("malformed %s reply from server %u", proto_op_name(req->op), server);
	}
	if (err || !callp) {
		rpc_free(call);
		call = NULL;
	}
	if (callp)
		*callp = call;
	return err;
}

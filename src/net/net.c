/*
 * net.c - epoll event loop, frame reassembly, worker pool and reply sending.
 *
 * Threads: one loop thread owns every connection's read side (header and payload
 * buffers) and the epoll set; workers own a frame from dequeue until on_frame returns.
 * Lock order: queue lock and a connection's send lock are never held together.
 */
#include "net/net.h"
#include "common/fdio.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <linux/sockios.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct net_conn {
	int fd;
	atomic_int refs;
	atomic_bool closed;
	pthread_mutex_t send_mu;
	struct net_server *srv;
	struct net_conn *prev, *next; /* server's list, under srv->conns_mu */
	void *data;
	char peer[64];
	/* read side: loop thread only */
	uint8_t hdr[PROTO_HDR_SIZE];
	size_t hdr_got;
	struct proto_hdr h;
	uint8_t *payload;
	size_t payload_got;
};

struct job {
	struct net_conn *c;
	struct proto_hdr h;
	uint8_t *payload;
};

struct net_server {
	struct net_options opt;
	struct net_ops ops;
	void *arg;
	int listen_fd, epfd, wake_fd;
	atomic_bool stopping;
	pthread_t loop_thread;
	pthread_t *workers;
	pthread_mutex_t q_mu;
	pthread_cond_t q_nonempty, q_nonfull;
	struct job *q;
	uint32_t q_head, q_len;
	atomic_uint busy; /* frames handed to workers and not yet handled */
	_Atomic int64_t done_ns; /* when a worker last finished a frame (aq_now_ns; 0 without polling) */
	int64_t quiet_ns; /* when the last frame came that quiets polling (loop thread only) */
	bool q_stop;
	pthread_mutex_t conns_mu;
	struct net_conn *conns;
	uint32_t nconns;
};

/* A chunk write's 4 MiB payload from malloc was a fresh mapping each time once several
 * were in flight (glibc trims its heap): aqd spent a fifth of a writer's time faulting
 * its pages in as the socket's bytes were copied there. */
static uint8_t *payload_alloc(const struct net_server *s, size_t len)
{
	if (len >= NET_BIG_PAYLOAD && s->ops.big_alloc)
		return s->ops.big_alloc(len);
	return aq_malloc(len ? len : 1);
}

static void payload_free(const struct net_server *s, uint8_t *p, size_t len)
{
	if (p && len >= NET_BIG_PAYLOAD && s->ops.big_free)
		s->ops.big_free(p);
	else
		free(p);
}

static void conn_unref(struct net_conn *c)
{
	if (atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	struct net_server *s = c->srv;
	if (s->ops.on_close)
		s->ops.on_close(s->arg, c);
	pthread_mutex_lock(&s->conns_mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		s->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	s->nconns--;
	pthread_mutex_unlock(&s->conns_mu);
	close(c->fd);
	payload_free(s, c->payload, c->h.payload_len);
	pthread_mutex_destroy(&c->send_mu);
	free(c);
}

bool net_conn_try_hold(struct net_conn *c)
{
	int refs = atomic_load(&c->refs);
	while (refs > 0)
		if (atomic_compare_exchange_weak(&c->refs, &refs, refs + 1))
			return true;
	return false;
}

void net_conn_put(struct net_conn *c) { conn_unref(c); }

void *net_conn_data(struct net_conn *c) { return c->data; }
void net_conn_set_data(struct net_conn *c, void *data) { c->data = data; }
const char *net_conn_peer(struct net_conn *c) { return c->peer; }

void net_close(struct net_conn *c)
{
	if (!atomic_exchange(&c->closed, true))
		shutdown(c->fd, SHUT_RDWR); /* the loop sees EOF and lets go of its reference */
}

/* The loop's side of closing: stop watching, drop the loop's reference. */
static void loop_drop(struct net_server *s, struct net_conn *c)
{
	atomic_store(&c->closed, true);
	epoll_ctl(s->epfd, EPOLL_CTL_DEL, c->fd, NULL);
	shutdown(c->fd, SHUT_RDWR);
	conn_unref(c);
}

int net_send(struct net_conn *c, const struct proto_hdr *h, const void *payload, size_t len)
{
	uint8_t hb[PROTO_HDR_SIZE];
	struct proto_hdr hh = *h;
	AQ_ASSERT(len <= AQ_FRAME_MAX);
	hh.payload_len = (uint32_t)len;
	proto_hdr_encode(hb, &hh);
	struct iovec iov[2] = {{hb, sizeof hb}, {(void *)payload, len}};
	if (atomic_load(&c->closed))
		return -ENOTCONN;
	pthread_mutex_lock(&c->send_mu);
	int rc = fd_writev_full(c->fd, iov, len ? 2 : 1, 30000); /* a peer that does not read for 30 s goes */
	pthread_mutex_unlock(&c->send_mu);
	if (rc) {
		log_debug("send to %s failed: %s", c->peer, strerror(-rc));
		net_close(c);
	}
	return rc;
}

int net_send_nowait(struct net_conn *c, const struct proto_hdr *h, const void *payload, size_t len)
{
	if (atomic_load(&c->closed))
		return -ENOTCONN;
	int sndbuf = 0, queued = 0;
	socklen_t sl = sizeof sndbuf;
	pthread_mutex_lock(&c->send_mu);
	bool room = !getsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, &sl) && !ioctl(c->fd, SIOCOUTQ, &queued) &&
		    (size_t)queued + PROTO_HDR_SIZE + len <= (size_t)sndbuf / 2; /* the kernel doubles it */
	pthread_mutex_unlock(&c->send_mu);
	if (!room) {
		log_warn("closing %s: it does not read what is sent to it (%d bytes waiting)", c->peer, queued);
		net_close(c);
		return -EAGAIN;
	}
	return net_send(c, h, payload, len);
}

int net_reply(struct net_conn *c, const struct proto_hdr *req, int status, const void *payload, size_t len)
{
	struct proto_hdr h = {
		.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = req->op, .req_id = req->req_id,
		.epoch = req->epoch, .status = (uint16_t)status, .flags = PROTO_F_REPLY,
	};
	return net_send(c, &h, payload, len);
}

/* Waits for events; polls first when asked to. A wake-up of a sleeping thread on an idle
 * CPU costs that CPU's exit from halt (about 17 us on a VM whose guest halt-polling is
 * off), and a client that waits for each reply pays it on every request: a FUSE create
 * holds its directory's lock across the round trip, so creates in one directory run at
 * the pace of these wake-ups. Polling a little longer than the gap between such
 * requests (poll_us, aqd --poll-us) keeps the loop awake for the next one. It does not
 * poll while a worker has a frame, nor for POLL_QUIET_NS after a frame that quiets
 * polling (net_ops.quiets_poll: reads of file data, whose loaders need the CPU more
 * than a few microseconds of latency). */
#define POLL_QUIET_NS (10 * 1000000LL)
/* Frames up to this big wake the loop when a worker finishes them (loop_main); a stream
 * of big writes keeps the loop busy enough, and its CPU for the workers. */
#define POLL_WAKE_MAX (256u << 10)

static void *worker_main(void *arg)
{
	struct net_server *s = arg;
	for (;;) {
		pthread_mutex_lock(&s->q_mu);
		while (!s->q_len && !s->q_stop)
			pthread_cond_wait(&s->q_nonempty, &s->q_mu);
		if (!s->q_len) {
			pthread_mutex_unlock(&s->q_mu);
			return NULL;
		}
		struct job j = s->q[s->q_head];
		s->q_head = (s->q_head + 1) % s->opt.queue_depth;
		s->q_len--;
		pthread_cond_signal(&s->q_nonfull);
		pthread_mutex_unlock(&s->q_mu);
		if (!atomic_load(&j.c->closed))
			s->ops.on_frame(s->arg, j.c, &j.h, j.payload);
		payload_free(s, j.payload, j.h.payload_len);
		conn_unref(j.c);
		bool wake = s->opt.poll_us && j.h.payload_len <= POLL_WAKE_MAX &&
			    !(s->ops.quiets_poll && s->ops.quiets_poll(s->arg, &j.h));
		if (wake)
			atomic_store(&s->done_ns, aq_now_ns());
		if (atomic_fetch_sub(&s->busy, 1) == 1 && wake) {
			uint64_t one = 1;
			(void)!write(s->wake_fd, &one, sizeof one); /* see loop_main */
		}
	}
}

static void enqueue(struct net_server *s, struct net_conn *c, uint8_t *payload)
{
	atomic_fetch_add(&c->refs, 1);
	atomic_fetch_add(&s->busy, 1);
	pthread_mutex_lock(&s->q_mu);
	while (s->q_len == s->opt.queue_depth && !s->q_stop)
		pthread_cond_wait(&s->q_nonfull, &s->q_mu);
	if (s->q_stop) {
		pthread_mutex_unlock(&s->q_mu);
		payload_free(s, payload, c->h.payload_len);
		conn_unref(c);
		atomic_fetch_sub(&s->busy, 1);
		return;
	}
	s->q[(s->q_head + s->q_len) % s->opt.queue_depth] = (struct job){c, c->h, payload};
	s->q_len++;
	pthread_cond_signal(&s->q_nonempty);
	pthread_mutex_unlock(&s->q_mu);
}

/* Reads what the socket has; returns false when the connection must go. */
static bool conn_read(struct net_server *s, struct net_conn *c)
{
	for (int rounds = 0; rounds < 64; rounds++) {
		ssize_t n;
		if (c->hdr_got < PROTO_HDR_SIZE) {
			n = read(c->fd, c->hdr + c->hdr_got, PROTO_HDR_SIZE - c->hdr_got);
		} else {
			n = read(c->fd, c->payload + c->payload_got, c->h.payload_len - c->payload_got);
		}
		if (n == 0)
			return false;
		if (n < 0)
			return errno == EAGAIN || errno == EINTR;
		if (c->hdr_got < PROTO_HDR_SIZE) {
			c->hdr_got += (size_t)n;
			if (c->hdr_got < PROTO_HDR_SIZE)
				continue;
			int rc = proto_hdr_decode(c->hdr, PROTO_HDR_SIZE, &c->h);
			if (rc) {
				log_warn("dropping connection from %s: bad frame header (%s)", c->peer, aq_strerror(rc));
				return false;
			}
			c->payload = payload_alloc(s, c->h.payload_len);
			c->payload_got = 0;
		} else {
			c->payload_got += (size_t)n;
		}
		if (c->hdr_got == PROTO_HDR_SIZE && c->payload_got == c->h.payload_len) {
			uint8_t *p = c->payload;
			c->payload = NULL;
			c->hdr_got = 0;
			c->payload_got = 0;
			if (s->opt.poll_us && s->ops.quiets_poll && s->ops.quiets_poll(s->arg, &c->h))
				s->quiet_ns = aq_now_ns();
			if (s->ops.run_inline && s->ops.run_inline(s->arg, &c->h, p)) {
				/* the loop's own reference keeps c alive through the call */
				if (!atomic_load(&c->closed))
					s->ops.on_frame(s->arg, c, &c->h, p);
				payload_free(s, p, c->h.payload_len);
			} else {
				enqueue(s, c, p);
			}
		}
	}
	return true; /* more may be waiting: level-triggered epoll calls us again */
}

static void do_accept(struct net_server *s)
{
	for (;;) {
		struct sockaddr_storage sa;
		socklen_t salen = sizeof sa;
		int fd = accept4(s->listen_fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (s->nconns >= s->opt.max_conns) {
			log_warn("refusing connection: %u connections open (limit)", s->nconns);
			close(fd);
			continue;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		int buf = 4 << 20;
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
		struct net_conn *c = aq_calloc(1, sizeof *c);
		c->fd = fd;
		c->srv = s;
		atomic_init(&c->refs, 1);
		pthread_mutex_init(&c->send_mu, NULL);
		char host[64] = "?";
		if (sa.ss_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof host);
		else if (sa.ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host, sizeof host);
		snprintf(c->peer, sizeof c->peer, "%s", host);
		pthread_mutex_lock(&s->conns_mu);
		c->next = s->conns;
		if (s->conns)
			s->conns->prev = c;
		s->conns = c;
		s->nconns++;
		pthread_mutex_unlock(&s->conns_mu);
		if (s->ops.on_accept && !s->ops.on_accept(s->arg, c)) {
			loop_drop(s, c);
			continue;
		}
		struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
		if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev))
			loop_drop(s, c);
	}
}

static int loop_wait(struct net_server *s, struct epoll_event *evs, bool poll)
{
	int n = 0;
	if (poll) {
		int64_t until = aq_now_ns() + (int64_t)s->opt.poll_us * 1000;
		while ((n = epoll_wait(s->epfd, evs, 64, 0)) == 0 && aq_now_ns() < until &&
		       !atomic_load(&s->busy) && !atomic_load(&s->stopping))
			sched_yield(); /* a thread with work on this CPU goes first */
	}
	return n > 0 ? n : epoll_wait(s->epfd, evs, 64, 1000);
}

static void *loop_main(void *arg)
{
	struct net_server *s = arg;
	struct epoll_event evs[64];
	bool poll = false;
	while (!atomic_load(&s->stopping)) {
		int64_t idle = s->opt.poll_us ? aq_now_ns() : 0;
		int n = loop_wait(s, evs, poll);
		/* Poll next time only if this wait was short: an idle server, or one that a
		 * client asks less often than every poll_us, sleeps at once and costs no CPU.
		 * A wait that began while a worker had a frame counts from when it finished,
		 * and the last worker to finish a small frame wakes the loop for it: a client's
		 * next request follows the worker's reply (a FUSE close sends a small file's
		 * bytes through a worker, and the next file's create comes within
		 * microseconds), and found the loop asleep since the hand-off. */
		if (s->opt.poll_us) {
			int64_t now = aq_now_ns();
			idle = MAX(idle, atomic_load(&s->done_ns));
			poll = n > 0 && now - idle <= (int64_t)s->opt.poll_us * 1000 &&
			       now - s->quiet_ns > POLL_QUIET_NS && !atomic_load(&s->busy);
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &s->listen_fd) {
				do_accept(s);
				continue;
			}
			if (p == &s->wake_fd) {
				uint64_t v;
				(void)!read(s->wake_fd, &v, sizeof v);
				continue;
			}
			struct net_conn *c = p;
			bool keep = !atomic_load(&c->closed);
			if (keep && (evs[i].events & EPOLLIN))
				keep = conn_read(s, c);
			if (keep && (evs[i].events & (EPOLLERR | EPOLLHUP)) && !(evs[i].events & EPOLLIN))
				keep = false;
			if (!keep)
				loop_drop(s, c);
		}
	}
	return NULL;
}

static int listen_on(const char *host, uint16_t port)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
	struct addrinfo *res;
	char ps[8];
	snprintf(ps, sizeof ps, "%u", port);
	int rc = getaddrinfo(host, ps, &hints, &res);
	if (rc)
		return -EINVAL;
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, res->ai_addr, res->ai_addrlen) || listen(fd, 1024)) {
		rc = -errno;
		close(fd);
		goto out;
	}
	rc = fd;
out:
	freeaddrinfo(res);
	return rc;
}

int net_start(const struct net_options *opt, const struct net_ops *ops, void *arg, struct net_server **out)
{
	struct net_server *s = aq_calloc(1, sizeof *s);
	s->opt = *opt;
	if (!s->opt.workers)
		s->opt.workers = 16;
	if (!s->opt.queue_depth)
		s->opt.queue_depth = 4096;
	if (!s->opt.max_conns)
		s->opt.max_conns = 4096;
	s->ops = *ops;
	s->arg = arg;
	pthread_mutex_init(&s->q_mu, NULL);
	pthread_cond_init(&s->q_nonempty, NULL);
	pthread_cond_init(&s->q_nonfull, NULL);
	pthread_mutex_init(&s->conns_mu, NULL);
	s->q = aq_calloc(s->opt.queue_depth, sizeof *s->q);
	int fd = listen_on(opt->host, opt->port);
	if (fd < 0) {
		int rc = fd;
		free(s->q);
		free(s);
		return rc;
	}
	s->listen_fd = fd;
	s->epfd = epoll_create1(EPOLL_CLOEXEC);
	s->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &s->listen_fd};
	epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->listen_fd, &ev);
	ev.data.ptr = &s->wake_fd;
	epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wake_fd, &ev);
	s->workers = aq_calloc(s->opt.workers, sizeof *s->workers);
	for (uint32_t i = 0; i < s->opt.workers; i++)
		pthread_create(&s->workers[i], NULL, worker_main, s);
	pthread_create(&s->loop_thread, NULL, loop_main, s);
	*out = s;
	return 0;
}

void net_stop(struct net_server *s)
{
	atomic_store(&s->stopping, true);
	uint64_t one = 1;
	(void)!write(s->wake_fd, &one, sizeof one);
	pthread_join(s->loop_thread, NULL);
	close(s->listen_fd);
	/* let the workers finish what is queued, then stop them */
	pthread_mutex_lock(&s->q_mu);
	s->q_stop = true;
	pthread_cond_broadcast(&s->q_nonempty);
	pthread_cond_broadcast(&s->q_nonfull);
	pthread_mutex_unlock(&s->q_mu);
	for (uint32_t i = 0; i < s->opt.workers; i++)
		pthread_join(s->workers[i], NULL);
	for (;;) {
		pthread_mutex_lock(&s->conns_mu);
		struct net_conn *c = s->conns;
		pthread_mutex_unlock(&s->conns_mu);
		if (!c)
			break;
		loop_drop(s, c);
	}
	close(s->epfd);
	close(s->wake_fd);
	free(s->workers);
	free(s->q);
	free(s);
}

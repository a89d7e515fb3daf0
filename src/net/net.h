/*
 * net.h - the server's network layer: one epoll event loop thread reads frames from every
 * connection and hands each complete frame to a fixed pool of worker threads through a
 * bounded queue; workers send replies themselves (one send lock per connection), so
 * requests on one connection run concurrently and complete out of order. A connection
 * is reference counted: its fd is closed only when the loop and every worker holding a
 * frame from it have let go, so a reply never goes to a reused descriptor.
 */
#ifndef AQ_NET_H
#define AQ_NET_H
#include "common/common.h"
#include "proto/proto.h"

struct net_conn;
struct net_server;

struct net_ops {
	/* A new connection; return false to refuse it. */
	bool (*on_accept)(void *arg, struct net_conn *c);
	/* A complete frame. payload is owned by the callee's frame until return. */
	void (*on_frame)(void *arg, struct net_conn *c, const struct proto_hdr *h, const uint8_t *payload);
	/* The connection is gone (after its last frame was handled). */
	void (*on_close)(void *arg, struct net_conn *c);
	/* May be NULL. True for a frame that is quick and never blocks for long: the loop
	 * thread runs it at once (no hand-off to a worker, no context switch). */
	bool (*run_inline)(void *arg, const struct proto_hdr *h, const uint8_t *payload);
	/* May be NULL. True for a frame whose client needs the CPU more than a quick answer
	 * to its next request (a read of file data by a training job's loaders): the loop
	 * does not poll for a while after it (net.c, loop_wait). */
	bool (*quiets_poll)(void *arg, const struct proto_hdr *h);
	/* May be NULL. Where payloads of NET_BIG_PAYLOAD bytes or more come from (aqd: its
	 * pool of huge-page buffers, src/data/buf.c); smaller ones come from malloc. */
	void *(*big_alloc)(size_t len);
	void (*big_free)(void *p);
};
#define NET_BIG_PAYLOAD (256u << 10)

struct net_options {
	const char *host;
	uint16_t port;
	uint32_t workers;       /* worker threads */
	uint32_t queue_depth;   /* frames queued before the reader waits */
	uint32_t max_conns;
	uint32_t poll_us;       /* how long the loop polls before it sleeps (see loop_wait) */
};

int net_start(const struct net_options *opt, const struct net_ops *ops, void *arg, struct net_server **out);
/* Stops accepting, closes every connection and joins all threads. */
void net_stop(struct net_server *s);

/* Sends one frame; thread-safe. Returns 0 or -errno (the connection is then closed). */
int net_send(struct net_conn *c, const struct proto_hdr *h, const void *payload, size_t len);
/* As net_send for a frame nobody waits on (a push): when the peer has not read enough of
 * what was sent before for this one to fit the socket's buffer, it would block, so the
 * connection is closed instead (-EAGAIN): a stuck peer never stalls the sender. */
int net_send_nowait(struct net_conn *c, const struct proto_hdr *h, const void *payload, size_t len);
/* Sends a reply frame to request h with status and payload (an error reply's payload is
 * empty, or a text that says why: the caller decides). */
int net_reply(struct net_conn *c, const struct proto_hdr *req, int status, const void *payload, size_t len);
/* Drops the connection after frames already queued from it are handled. */
void net_close(struct net_conn *c);
/* A reference on c for a reply sent later from another thread (a lock granted when
 * another let go): false once c is on its way out (its on_close may be running), which
 * then needs none. net_conn_put lets go, and may run on_close. */
bool net_conn_try_hold(struct net_conn *c);
void net_conn_put(struct net_conn *c);
/* Per-connection slot for the layer above. */
void *net_conn_data(struct net_conn *c);
void net_conn_set_data(struct net_conn *c, void *data);
const char *net_conn_peer(struct net_conn *c);

#endif

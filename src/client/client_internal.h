/*
 * client_internal.h - libaq's private structures: pipelined RPC connections and the
 * client's per-inode write state.
 */
#ifndef AQ_CLIENT_INTERNAL_H
#define AQ_CLIENT_INTERNAL_H
#include "aq.h"
#include "common/cluster.h"
#include "proto/proto.h"
#include <pthread.h>
#include <stdatomic.h>

#define RPC_CONNS_DEFAULT 4
#define RPC_PENDING_BUCKETS 256
#define RPC_RECONNECT_S 60      /* how long a call waits for a restarting server ($AQ_RECONNECT_S) */
#define RPC_HANDSHAKE_MS 10000  /* how long a new connection waits for each handshake reply ($AQ_HANDSHAKE_MS) */
#define AQ_CONNECT_WAIT_S 10    /* how long aq_connect waits for one ($AQ_CONNECT_WAIT_S) */
#define RPC_HOLD_MAX 128        /* held-back requests that force a send */
#define RPC_ZERO_COPY_MIN (256u << 10) /* request data this big is sent from where it is */
/* The affinity of a call that must go on the connection that takes the server's pushes
 * (aq_watch_sync): its reply then comes after every push sent before it. */
#define RPC_ON_PUSHES UINT64_MAX
#define RPC_POLL_US 200         /* see rpc_wait ($AQ_POLL_US) */
#define RPC_HOLD_NS 2000000     /* the longest a held RELEASE waits for a frame to ride with */

/* Where finished calls are announced when a caller waits for any of many (the batched
 * read ring). Lock order: a connection's mu before a cq's mu. */
/* Calls in order through their cq_next: a completion queue's, or a list of a caller's. */
struct rpc_list {
	struct rpc_call *head, *tail;
};

struct rpc_cq {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct rpc_list done;
};

struct rpc_call {
	uint64_t id;
	uint16_t op;
	bool done;
	bool is_batch;         /* a BATCH frame's own record: sub_ids, nobody waits on it */
	bool answered;         /* status came from the server's reply, not from the connection */
	uint64_t *sub_ids;
	uint32_t nsubs;
	int status;            /* 0 or -errno */
	uint8_t *payload;      /* reply payload, owned by the call */
	uint32_t len;
	uint32_t cap;          /* payload's size when it is a spare reply buffer (0: malloc'ed) */
	pthread_cond_t cv;
	struct rpc_call *next; /* pending chain */
	struct rpc_conn *conn;
	/* CHUNK_READ: the receiver reads the data straight into rdest (no copy) when the
	 * reply carries exactly rdest_len bytes; payload then stays NULL. */
	void *rdest;
	uint32_t rdest_len;
	bool direct;           /* the data went to rdest */
	bool filling;          /* the reader is reading into rdest: fail_pending_locked leaves it */
	struct rpc_cq *cq;     /* announce completion here too (NULL: no) */
	void *cq_arg;
	struct rpc_call *cq_next;
};

struct rpc_conn {
	struct aq_client *client;
	uint32_t server;
	int fd;
	uint32_t gen;          /* bumped on every reconnect */
	bool up;
	atomic_uint nheld;     /* files open through this connection (rpc_hold_file) */
	pthread_mutex_t mu;    /* guards pending, up, fd changes; lock order: mu before send_mu */
	pthread_mutex_t send_mu;
	pthread_t rx;
	bool rx_running;
	/* One reader at a time takes frames off the socket: a thread waiting in rpc_wait
	 * when nobody reads (its own reply then costs no hand-off), else the receiver
	 * thread, which sleeps on rx_cv until asked (rx_wanted) and reads while calls are
	 * pending; on the connection that delivers INVAL frames it always reads. */
	bool reading;
	bool rx_wanted;
	bool rx_stop;
	bool rx_exited;
	pthread_cond_t rx_cv;
	uint32_t npending;
	struct rpc_call *pending[RPC_PENDING_BUCKETS];
	uint64_t next_id;
	/* Outgoing frames wait here while another thread is sending; the sender takes them
	 * all at once and, when they are small metadata requests, packs them into one BATCH
	 * frame (one server job, one syscall). Lock order: mu before q_mu. */
	pthread_mutex_t q_mu;
	struct wbuf q;
	uint64_t *q_ids;
	uint32_t q_count, q_cap;
	bool q_batchable;
	bool sending;
	pthread_cond_t q_cv;   /* sending went false (a zero-copy sender waits for that) */
};

struct ino_state {
	uint64_t ino;
	uint32_t refs;             /* under client->files_mu */
	struct ino_state *next;
	pthread_mutex_t mu;        /* guards everything below */
	pthread_cond_t grew;       /* size went up (aq_pwrite's wait for an O_DIRECT piece) */
	uint64_t size;
	uint64_t synced_size;      /* the size the last full fsync made durable; UINT64_MAX: none */
	bool size_dirty;
	int64_t mtime_ns;
	uint32_t chunk_size;
	int err;                   /* first write-back error, reported at flush/fsync/close */
	atomic_ulong wgen;         /* bumped by every write and truncate through this client,
				    * and by a push saying another client changed the inode */
	/* buffered writes: up to WCHUNKS chunks, each with up to WEXTENTS ranges */
	struct wchunk **wc;        /* WCHUNKS slots, the array made on the first write, each
				    * slot when first needed */
	uint32_t nwc;              /* slots in use: wc[0 .. nwc) */
	uint64_t wtick;
	/* aq_file_sxid: whether the mode has bits a write may drop (aq_mode_sxid), from the
	 * attributes with the newest ctime this client heard of (attr); a push about the
	 * inode makes it "may have" until attributes say otherwise (set by the connection's
	 * reader, which must not wait for mu: a call holding mu may wait for its reply from
	 * that reader) */
	atomic_bool sxid;
	struct aq_attr attr;       /* those attributes (ctime INT64_MIN: none yet) */
	/* its attributes may have changed in ways this client did not hear of since the open:
	 * a push about it, an xattr change through this client; or (blind_gen, the client's
	 * at the open, moved on) an unlink or rename, whose reply does not say what it did
	 * to the inode it names */
	atomic_bool unsure;
	unsigned long blind_gen;
	uint32_t writers;          /* handles open for writing */
	uint32_t lockers;          /* handles some owner took a lock through (aq_file_lock) */
	/* Attribute changes deferred (aq_setattr with AQ_SET_DEFER): amask's AQ_SET_MODE,
	 * UID, GID, ATIME, MTIME of pend, made by acred, and pend's ctime (the newest change
	 * of the inode through this client since), sent after the buffered writes
	 * (flush_commit_locked). 0: none. */
	uint32_t amask;
	struct aq_attr pend;
	struct aq_cred acred;
	/* aq_mono_ns when buffered writes or an uncommitted size last made it dirty from
	 * clean (0: clean, as far as the write-back thread needs to know) */
	_Atomic uint64_t dirty_ns;
};

/* Buffered writes older than this go to the servers even while the file stays open (the
 * write-back thread, client.c), as the kernel writes dirty pages back: another client
 * sees them, and a crash of this one loses at most this much. */
#define WRITEBACK_AGE_NS (5 * 1000000000LL)

/* A chunk's buffered writes: the ranges written (sorted, neither overlapping nor
 * touching) and their bytes in img, a mapping as big as the chunk that holds byte x of the
 * chunk at img[x], as a page cache does: the kernel gives it a page when a write first
 * touches one, so a chunk costs the pages written, a write costs one copy however ranges
 * merge, and a writer that scatters small writes (a linker, fio's randwrite) is sent one
 * write per chunk. A client's buffered pages are bounded by aq_client.wbuf_max, past which
 * the least recently written chunk of the file being written goes (unless it is the
 * file's only one): a sixteenth of the machine's memory, at least WBUF_MIN and at most
 * WBUF_MAX ($AQ_WRITE_BUFFER_MB sets it), as the kernel lets a tenth to a fifth of it be
 * dirty page cache before writers wait. */
#define WCHUNKS 256
#define WEXTENTS 1023
#define WPAGE 4096u
#define WBUF_MIN (64ull << 20)
#define WBUF_MAX (1024ull << 20)
#define WIMG_POOL 8
#define WIMG_POOL_PAGES 16 /* a mapping with more pages written goes back to the kernel */
struct wchunk {
	uint32_t idx;
	uint32_t n;
	struct wrange {
		uint32_t lo, hi;   /* chunk offsets */
	} ext[WEXTENTS + 1];
	uint8_t *img;              /* NULL until the first write; kept while the slot is the file's only one */
	uint32_t img_pages;        /* how many of img's pages were ever written: in memory */
	uint64_t img_in_memory[AQ_CHUNK_SIZE_MAX / WPAGE / 64]; /* which ones */
	uint32_t npages;           /* pages written since the last send: what the budgets count */
	uint64_t touched[AQ_CHUNK_SIZE_MAX / WPAGE / 64]; /* which ones */
	uint64_t used;             /* st->wtick at its last write: the least recent goes first */
};

struct aq_file {
	struct aq_client *c;
	struct ino_state *st;
	struct aq_cred cred;
	int flags;
	uint32_t server;           /* where it was opened, and RELEASE goes */
	uint64_t affinity;         /* the connection it was opened on (see rpc_start) */
	struct rpc_conn *held_on;  /* that connection, while on the client's held list */
	struct aq_file *hprev, *hnext;
	uint64_t ino;
	/* aq_open_ino_lazy: the OPEN (or OPEN_READ) still in flight; the first call on the
	 * file waits for it (file_ready) and st is set then. An OPEN_READ's bytes (the
	 * file's first AQ_PREFETCH bytes at most) wait in pre for the first read. */
	pthread_mutex_t open_mu;
	struct rpc_call *opening;
	unsigned long open_epoch;
	int open_err;
	struct rpc_call *pre;      /* holds the bytes: pre_data, pre_len (from offset 0) */
	/* owners that took a lock through this handle (under st->mu): its close drops them */
	struct file_locker { uint64_t owner; bool flock; } *lockers;
	uint32_t nlockers;
	const uint8_t *pre_data;
	uint32_t pre_len;
	bool pre_eof;              /* the bytes reach the end of the file */
	int pre_err;               /* the OPEN_READ's read failed: the first read's answer */
	/* read-ahead for a sequential reader (ra.c): two windows, the one being read and the
	 * next, each a run of CHUNK_READs in flight into its own buffer */
	struct loc_cache *locs;    /* local.c: where its chunks lie on this machine's disk */
	pthread_mutex_t ra_mu;
	uint64_t ra_expect;        /* where the next read starts if the reader is sequential */
	uint32_t ra_seq;           /* sequential reads in a row */
	unsigned long ra_wgen;     /* the inode's wgen when the windows were asked for */
	struct ra_win {
		uint8_t *buf;
		uint64_t off;
		uint32_t len;          /* 0: empty */
		struct rpc_call **calls;
		uint32_t ncalls;
		int err;
	} ra[2];
};

/* Read-ahead (ra.c): serves a read of a sequential reader from its windows and keeps the
 * next window in flight. Returns the bytes read (the whole request), or RA_PASS when the
 * caller should read directly (not sequential, too large, or a window failed). */
#define RA_PASS (-100000)
/* A lazy open reads the file's first AQ_PREFETCH bytes with its OPEN (OPEN_READ), unless
 * AQ_PREFETCH_MAX bytes of such reads wait unread already. */
#define AQ_PREFETCH (256u << 10)
#define AQ_PREFETCH_MAX (64ul << 20)
/* local.c: reads of the bytes an OPEN_MAP located, from aqd's segment file. local_read
 * gives *mem (to free) and *data, the location's n bytes, or fails (-errno): read them
 * through aqd then. */
void local_init(struct aq_client *c);
bool local_wanted(struct aq_client *c); /* on, and not paused after failures */
/* Whether this client has ino open for writing, or holds writes or attribute changes
 * to it not yet sent: its bytes on disk may not be what a read must see. */
bool state_writing(struct aq_client *c, uint64_t ino);
int local_read(struct aq_client *c, uint64_t ino, const struct proto_loc *l, uint8_t **mem, const uint8_t **data);
/* local.c, any chunk: reads n bytes at in of chunk idx (chunk size cs) of f into dest from
 * aqd's segment file, at the location LOCATE gave (kept by f until a write or truncate
 * through this client). 0, or -EAGAIN: read them through aqd. */
int local_chunk_read(struct aq_file *f, uint32_t idx, uint32_t in, uint32_t n, uint8_t *dest);
void local_chunks_free(struct aq_file *f);
/* local.c, the read ring's pieces: a LOCATE of chunk idx of ino announced on cq with arg,
 * held back (rpc_start_ex's hold: rpc_send_held sends it) on the connection affinity
 * picks, so that a ring's LOCATEs leave together in one BATCH frame. Once it is done,
 * local_locate_ahead takes the location from its reply (*l, pointing into the call's
 * payload: keep the call) and opens the segment file it names (*fd, to close): with
 * O_DIRECT when *direct asks it and the file allows it (*direct says if it did), else
 * with the kernel starting to read [in, in + n) of the chunk (POSIX_FADV_WILLNEED), which
 * local_locate_read then reads into dest, every block checked (and the record's header,
 * when the piece starts at its first block). A direct piece is read as the file range local_direct_span
 * gives (aligned, *len bytes at *off) into a buffer of the caller's, of which
 * local_direct_finish checks the got bytes that landed and copies the piece into dest.
 * Each: 0, or -errno: read them through aqd then (-EAGAIN: aqd gave no location). */
struct rpc_call *local_locate_start(struct aq_client *c, uint64_t ino, uint32_t idx, uint64_t affinity,
				    struct rpc_cq *cq, void *arg, int *err);
int local_locate_ahead(struct aq_client *c, uint32_t idx, const struct rpc_call *call, uint32_t in, uint32_t n,
		       bool *direct, struct proto_loc *l, int *fd);
int local_locate_read(struct aq_client *c, uint64_t ino, uint32_t idx, const struct proto_loc *l, int fd, uint32_t in,
		      uint32_t n, uint8_t *dest);
void local_direct_span(const struct proto_loc *l, uint32_t in, uint32_t n, uint64_t *off, uint32_t *len);
int local_direct_finish(struct aq_client *c, uint64_t ino, uint32_t idx, const struct proto_loc *l, uint32_t in,
			uint32_t n, const uint8_t *mem, uint64_t off, int got, uint8_t *dest);
/* A push said another client changed inode ino (0: pushes were lost, any inode may have
 * changed): the read-ahead windows and chunk locations of its open files go (wgen). */
void state_changed_elsewhere(struct aq_client *c, uint64_t ino);
#define LOCAL_FIRST_MIN (128u << 10) /* reads at least this big skip read-ahead when local */

ssize_t ra_read(struct aq_file *f, void *buf, size_t len, uint64_t off, uint64_t size, uint32_t cs);
void ra_free(struct aq_file *f);

struct aq_client {
	struct cluster_map map;
	struct aq_cred cred;
	uint32_t nconns;
	uint32_t reconnect_s; /* how long a call waits for a restarting server */
	uint32_t handshake_ms; /* how long a new connection waits for each handshake reply */
	atomic_bool *server_down;     /* per map.servers[i]: a call waited reconnect_s for it in
				       * vain, and no connection to it has come up since */
	uint64_t txn_client;          /* random: names this client's changes (0: none) */
	_Atomic uint64_t txn_seq;     /* the next change's number */
	uint32_t poll_us;     /* a waiter for a metadata reply polls this long before it sleeps */
	uint16_t test_stall_op;       /* tests: $AQ_TEST_STALL_READER (client.c) */
	uint32_t test_stall_ms;
	struct rpc_conn *conns;    /* nconns per server */
	atomic_uint rr;
	pthread_mutex_t files_mu;
	struct ino_state *files[1024];
	/* Counts this client's size changes that reached a server (size commits, truncates).
	 * An attribute reply is only as new as the moment its request left: if the count
	 * moved meanwhile, the server may have answered with the size from before. */
	atomic_ulong size_epoch;
	atomic_ulong prefetch_bytes; /* asked for by OPEN_READs whose bytes are still held */
	atomic_bool local_on;        /* local reads (local.c): open with OPEN_MAP */
	atomic_uint local_fails;     /* local reads failed in a row */
	atomic_uint_least64_t local_pause_until; /* aq_mono_ns: no OPEN_MAP before it */
	atomic_bool local_paused_once;
	uint8_t boot_id[AQ_BOOT_ID_SIZE];
	atomic_ulong wbuf_bytes;     /* buffered writes of all files: their chunks' npages, in bytes */
	uint64_t wbuf_max;           /* the most wbuf_bytes may reach (struct wchunk) */
	/* chunk mappings with few pages given back (wimg_put), for the next file's chunk: a
	 * mapping made and unmapped per small file cost its pages' faults and a TLB flush of
	 * every CPU */
	pthread_mutex_t wimg_mu;
	struct wimg {
		uint8_t *p;
		uint32_t pages;
		uint64_t in_memory[AQ_CHUNK_SIZE_MAX / WPAGE / 64];
	} wimg_pool[WIMG_POOL];
	uint32_t nwimg, wimg_size;
	/* large reply buffers kept for the next replies (rpc.c, "reply buffers") */
	pthread_mutex_t spare_mu; /* a leaf lock */
	struct spare_buf {
		uint8_t *p;
		uint32_t cap;
	} spare[16];
	uint32_t nspare;
	size_t spare_bytes;
	/* the last RECENT_SIZES of those changes, for inodes no longer open (by epoch % N) */
	pthread_mutex_t recent_mu; /* a leaf lock */
	struct recent_size {
		unsigned long epoch;
		uint64_t ino, size;
		int64_t mtime_ns;
	} recent[64];
	/* WATCH (aq_watch): a random id that tells the servers which connections are ours,
	 * and where pushed invalidations go */
	_Atomic uint64_t watch_id;
	aq_inval_fn watch_fn;
	void *watch_arg;
	atomic_ulong inval_seq;
	/* set once WATCH is on everywhere: the first connection of each server then carries
	 * INVAL frames only, so requests never queue behind its always-reading receiver */
	atomic_bool pushes_apart;
	pthread_t flusher;         /* sends held frames nothing followed (rpc_release_file) */
	pthread_mutex_t fl_mu;
	pthread_cond_t fl_cv;
	bool fl_running, fl_due, fl_stop;
	pthread_t keeper;          /* brings INVAL connections back at once (rpc_keeper_start),
				    * and those that files are open through */
	bool keeper_running;
	pthread_mutex_t held_mu;   /* guards held, and keeper_running's start */
	struct aq_file *held;      /* files the servers hold open for this client */
	atomic_bool keeper_stop;
	atomic_uint deferred;      /* files with deferred attribute changes (ino_state.amask) */
	atomic_ulong blind_gen;    /* unlinks and renames this client sent (ino_state.unsure) */
	/* lock waits that hold no caller's thread (aq_file_lock_async): their replies come to
	 * lk_cq, and lk_thread hands each to its callback */
	struct rpc_cq lk_cq;
	pthread_t lk_thread;
	bool lk_running, lk_stop;  /* under lk_cq.mu */
	pthread_t writeback;       /* sends buffered writes older than WRITEBACK_AGE_NS */
	pthread_mutex_t wb_mu;
	pthread_cond_t wb_cv;
	bool wb_running, wb_stop;
};

int rpc_conn_init(struct aq_client *c, struct rpc_conn *rc, uint32_t server);
void rpc_conn_fini(struct rpc_conn *rc);
/* Sends a request to server; returns a call to wait on (NULL with *err on failure).
 * affinity 0 spreads requests over the server's connections; any other value pins them
 * to one connection (the server tracks open files per connection, so an inode's OPEN and
 * RELEASE must travel together: affinity = ino). */
struct rpc_call *rpc_start(struct aq_client *c, uint32_t server, uint16_t op, const struct wbuf *payload,
			   uint64_t affinity, int *err);
/* As rpc_start, and also reads a CHUNK_READ reply's data into rdest and announces the
 * completion on cq (either may be NULL). With hold, the request may wait in the
 * connection's queue (up to RPC_HOLD_MAX of them) until a wait on it or on a later one,
 * so that requests started back to back leave in one BATCH frame. */
struct rpc_call *rpc_start_ex(struct aq_client *c, uint32_t server, uint16_t op, const struct wbuf *payload,
			      uint64_t affinity, void *rdest, uint32_t rdest_len, struct rpc_cq *cq, void *cq_arg,
			      bool hold, int *err);
/* Sends f's RELEASE (req) on the connection the server holds f open through
 * (rpc_hold_file's); the server sends no reply. It waits in the connection's queue to
 * leave with the next frame sent there, or after RPC_HOLD_NS (the flusher thread).
 * Nothing is sent while that connection is down. */
void rpc_release_file(struct aq_client *c, struct aq_file *f, const struct proto_req *req);
/* Sends req to server (on the connection affinity picks) as rpc_release_file sends a
 * RELEASE: no reply, held back; dropped while that connection is down. */
void rpc_send_noreply(struct aq_client *c, uint32_t server, uint64_t affinity, const struct proto_req *req);
/* rpc_start_ex with hold, no data or completion queue, and header flags (PROTO_F_PEEK). */
struct rpc_call *rpc_start_held(struct aq_client *c, uint32_t server, uint16_t op, uint16_t flags,
				const struct wbuf *payload, uint64_t affinity, int *err);
/* Sends what is held back on every connection now. */
void rpc_send_held(struct aq_client *c);
/* Sends what is held and stops the flusher (aq_disconnect). */
void rpc_flusher_stop(struct aq_client *c);
void rpc_list_push(struct rpc_list *l, struct rpc_call *call);
struct rpc_call *rpc_list_pop(struct rpc_list *l); /* the oldest, or NULL */
void rpc_cq_init(struct rpc_cq *cq);
void rpc_cq_destroy(struct rpc_cq *cq);
/* Takes one finished call off cq, waiting for one when wait is set; NULL if none. */
struct rpc_call *rpc_cq_pop(struct rpc_cq *cq, bool wait);
/* Puts a finished CHUNK_READ call's bytes at its rdest (the receiver read them straight
 * there when it could): 0 or -errno. */
int rpc_read_into(struct rpc_call *call);
/* The affinity a request needs (see rpc_start). */
uint64_t rpc_affinity(const struct proto_req *req);
/* Waits for the reply. Returns 0 or -errno; the call keeps the payload until rpc_free. */
int rpc_wait(struct rpc_call *call);
void rpc_free(struct rpc_call *call);
/* Gives the call's payload back and makes mem (malloc'ed, or NULL) its payload. */
void rpc_replace_payload(struct rpc_call *call, uint8_t *mem);
/* Frees the reply buffers kept for later replies (at disconnect). */
void rpc_spares_free(struct aq_client *c);
/* After a call to server failed for want of a connection (attempt: how many failed
 * before): sleeps and returns true while the call may try again, false once its window
 * is over. The window (*deadline, 0 before the first failure) is reconnect_s from the
 * first failure; or nothing, once a call has waited that long in vain and no connection
 * to the server has come up since: a close that flushes many buffered chunks to a server
 * gone for good then fails in one window, not one window per chunk. */
bool rpc_retry_wait(struct aq_client *c, uint32_t server, uint64_t *deadline, int attempt);
/* Gives r, when it is a change (proto_op_numbered), this client's id and its next number. */
void rpc_number(struct aq_client *c, struct proto_req *r);
/* One request and its decoded reply (payload pointers stay valid until rpc_free(*call)).
 * A call whose connection breaks is sent again, marked PROTO_F_RETRY, for up to
 * reconnect_s. */
int rpc_do(struct aq_client *c, uint32_t server, const struct proto_req *req, struct proto_reply *rep,
	   struct rpc_call **call);
/* Starts/stops the thread that keeps a watching client's INVAL connections up. */
void rpc_keeper_start(struct aq_client *c);
void rpc_keeper_stop(struct aq_client *c);
/* Files the server holds open for this client (an OPEN, OPEN_READ or create-and-open):
 * when their connection comes up again after it broke, its handshake names them
 * (REOPEN), so that one unlinked meanwhile is not freed under them; the keeper brings
 * such a connection back at once. on: the connection the open went out on (NULL: the one
 * f's affinity picks). */
void rpc_hold_file(struct aq_client *c, struct aq_file *f, struct rpc_conn *on);
void rpc_unhold_file(struct aq_client *c, struct aq_file *f);
/* As rpc_do, on the connection affinity picks (see rpc_start). */
int rpc_do_on(struct aq_client *c, uint32_t server, const struct proto_req *req, struct proto_reply *rep,
	      struct rpc_call **call, uint64_t affinity);
uint32_t client_meta_server(struct aq_client *c, uint64_t ino);
/* Starts one CHUNK_READ: len bytes at byte pos of ino (not crossing a chunk of cs bytes),
 * received straight into dest; completion announced on cq when cq is set. */
struct rpc_call *chunk_read_start(struct aq_client *c, uint64_t ino, uint32_t cs, uint64_t pos, uint32_t len,
				  void *dest, struct rpc_cq *cq, void *cq_arg, int *err);
/* Waits for a chunk read chunk_read_start began (call NULL: its start failed with err)
 * and puts its bytes at dest. When the connection failed under it before the server
 * answered, it reads the chunk again for up to reconnect_s, as rpc_do does for other
 * calls: a restarting aqd costs a reader a wait, not EIO. 0 or -errno. */
int chunk_read_finish(struct aq_client *c, uint64_t ino, uint32_t cs, uint64_t pos, uint32_t len, void *dest,
		      struct rpc_call *call, int err);

#endif

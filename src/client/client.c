/*
 * client.c - libaq's calls: metadata requests go to the server that owns the bucket of
 * the inode (or of the parent's entry), chunk reads and writes to the server of the
 * target that rendezvous hashing picks. Writes are buffered one chunk per open inode and
 * sent at chunk boundaries, flush, fsync and close; the file's size is committed to its
 * metadata bucket after its data (close-to-open consistency, as NFS gives).
 */
#include "client/client_internal.h"
#include "common/hash.h"
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const struct aq_cred *cred_or_default(struct aq_client *c, const struct aq_cred *cr)
{
	return cr ? cr : &c->cred;
}

uint32_t client_meta_server(struct aq_client *c, uint64_t ino)
{
	return cluster_bucket_server(&c->map, aq_ino_bucket(ino) % c->map.nbuckets);
}

/* The server for a request about a name in parent: bucket hash(parent, name) lives there.
 * With one server this is always server 0; the metadata store places the entry itself. */
static uint32_t name_server(struct aq_client *c, uint64_t parent, const char *name)
{
	(void)name;
	return client_meta_server(c, parent);
}

static int check_name(const char *name)
{
	size_t n = strlen(name);
	if (n == 0)
		return -ENOENT;
	if (n > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	if (strchr(name, '/'))
		return -EINVAL;
	return 0;
}

int aq_connect(const char *cluster_file, struct aq_client **out)
{
	struct aq_client *c = aq_calloc(1, sizeof *c);
	char err[512];
	const char *path = cluster_default_path(cluster_file);
	int rc = cluster_load(path, &c->map, err, sizeof err);
	if (rc) {
		log_error("%s", err);
		free(c);
		return rc;
	}
	signal(SIGPIPE, SIG_IGN);
	c->cred.uid = getuid();
	c->cred.gid = getgid();
	gid_t groups[32];
	int ng = getgroups(32, groups);
	for (int i = 0; i < ng && i < 32; i++)
		c->cred.groups[c->cred.ngroups++] = groups[i];
	pthread_mutex_init(&c->files_mu, NULL);
	pthread_mutex_init(&c->held_mu, NULL);
	pthread_mutex_init(&c->recent_mu, NULL);
	pthread_mutex_init(&c->spare_mu, NULL);
	pthread_mutex_init(&c->fl_mu, NULL);
	rpc_cq_init(&c->lk_cq);
	pthread_cond_init(&c->fl_cv, NULL);
	pthread_mutex_init(&c->wb_mu, NULL);
	pthread_mutex_init(&c->wimg_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->wb_cv, &ca);
	pthread_condattr_destroy(&ca);
	c->nconns = RPC_CONNS_DEFAULT;
	const char *env = getenv("AQ_CONNS");
	if (env && atoi(env) > 0 && atoi(env) <= 64)
		c->nconns = (uint32_t)atoi(env);
	c->reconnect_s = RPC_RECONNECT_S;
	c->server_down = aq_calloc(c->map.nservers ? c->map.nservers : 1, sizeof *c->server_down);
	env = getenv("AQ_RECONNECT_S");
	if (env && atoi(env) > 0 && atoi(env) <= 86400)
		c->reconnect_s = (uint32_t)atoi(env);
	/* names this client's changes, so that one sent again is not run twice (txn.c) */
	while (!c->txn_client && random_bytes(&c->txn_client, sizeof c->txn_client) == 0)
		;
	c->handshake_ms = RPC_HANDSHAKE_MS;
	env = getenv("AQ_HANDSHAKE_MS");
	if (env && atoi(env) > 0 && atoi(env) <= 600000)
		c->handshake_ms = (uint32_t)atoi(env);
	c->poll_us = RPC_POLL_US;
	env = getenv("AQ_POLL_US");
	if (env && atoi(env) >= 0 && atoi(env) <= 10000)
		c->poll_us = (uint32_t)atoi(env);
	/* For the test of a server restart under a caller about to read its own reply:
	 * $AQ_TEST_STALL_READER=OPNAME:MS makes it wait MS ms first (rpc.c, ensure_up_locked) */
	env = getenv("AQ_TEST_STALL_READER");
	const char *colon = env ? strchr(env, ':') : NULL;
	if (colon) {
		c->test_stall_op = proto_op_named(env, (size_t)(colon - env));
		c->test_stall_ms = (uint32_t)atoi(colon + 1);
	}
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
	c->wbuf_max = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page / 16 : WBUF_MIN;
	c->wbuf_max = MIN(MAX(c->wbuf_max, WBUF_MIN), WBUF_MAX);
	env = getenv("AQ_WRITE_BUFFER_MB");
	if (env && atoi(env) > 0 && atoi(env) <= 1 << 20)
		c->wbuf_max = (uint64_t)atoi(env) << 20;
	local_init(c);
	/* A server that is restarting (aqd killed and started again) refuses connections for
	 * a moment: a new client waits for it, up to connect_wait_s, as a connected client's
	 * calls wait reconnect_s; a wrong secret or a bad map fails at once. */
	uint32_t wait_s = AQ_CONNECT_WAIT_S;
	env = getenv("AQ_CONNECT_WAIT_S");
	if (env && atoi(env) >= 0 && atoi(env) <= 86400)
		wait_s = (uint32_t)atoi(env);
	uint64_t deadline = aq_mono_ns() + (uint64_t)wait_s * 1000000000ull;
	c->conns = aq_calloc((size_t)c->nconns * c->map.nservers, sizeof *c->conns);
	uint32_t done = 0;
	for (uint32_t s = 0; s < c->map.nservers; s++)
		for (uint32_t i = 0; i < c->nconns; i++) {
			struct rpc_conn *conn = &c->conns[s * c->nconns + i];
			bool told = false;
			while ((rc = rpc_conn_init(c, conn, c->map.servers[s].id)) && aq_err_unreachable(rc) &&
			       aq_mono_ns() < deadline) {
				rpc_conn_fini(conn);
				if (!told)
					log_info("server %u: %s; waiting up to %u s for it", c->map.servers[s].id,
						 aq_strerror(rc), wait_s);
				told = true;
				usleep(100000);
			}
			done++;
			if (rc)
				goto fail;
		}
	*out = c;
	return 0;
fail:
	for (uint32_t i = 0; i < done; i++)
		rpc_conn_fini(&c->conns[i]);
	free(c->conns);
	free(c->server_down);
	free(c);
	return rc;
}

/* Gives w a chunk's img (see struct wchunk): one given back earlier (its few pages still
 * there, its bytes stale, which only ranges written since are ever read of), else a new
 * mapping, address space only until written. */
static void wimg_get(struct aq_client *c, struct wchunk *w, uint32_t cs)
{
	w->img = NULL;
	pthread_mutex_lock(&c->wimg_mu);
	if (c->nwimg && c->wimg_size == cs) {
		struct wimg *got = &c->wimg_pool[--c->nwimg];
		w->img = got->p;
		w->img_pages = got->pages;
		memcpy(w->img_in_memory, got->in_memory, sizeof w->img_in_memory);
	}
	pthread_mutex_unlock(&c->wimg_mu);
	if (w->img)
		return;
	w->img_pages = 0;
	memset(w->img_in_memory, 0, sizeof w->img_in_memory);
	w->img = mmap(NULL, cs, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (w->img == MAP_FAILED) {
		log_error("out of memory (a write buffer of %u bytes)", cs);
		abort();
	}
}

/* Gives w's img back: to the pool if it has few pages in memory (the pool holds at most
 * WIMG_POOL x WIMG_POOL_PAGES pages no budget counts) and there is room, else unmapped. */
static void wimg_put(struct aq_client *c, struct wchunk *w, uint32_t cs)
{
	if (!w->img)
		return;
	bool kept = false;
	if (w->img_pages <= WIMG_POOL_PAGES) {
		pthread_mutex_lock(&c->wimg_mu);
		if (c->nwimg && c->wimg_size != cs) /* another chunk size: not kept */
			while (c->nwimg)
				munmap(c->wimg_pool[--c->nwimg].p, c->wimg_size);
		kept = c->nwimg < WIMG_POOL;
		if (kept) {
			struct wimg *put = &c->wimg_pool[c->nwimg++];
			c->wimg_size = cs;
			put->p = w->img;
			put->pages = w->img_pages;
			memcpy(put->in_memory, w->img_in_memory, sizeof put->in_memory);
		}
		pthread_mutex_unlock(&c->wimg_mu);
	}
	if (!kept)
		munmap(w->img, cs);
	w->img = NULL;
	w->img_pages = 0;
}

static void wchunks_free(struct aq_client *c, struct ino_state *st)
{
	for (uint32_t k = 0; st->wc && k < WCHUNKS && st->wc[k]; k++) {
		atomic_fetch_sub(&c->wbuf_bytes, (unsigned long)st->wc[k]->npages * WPAGE); /* 0 once sent */
		wimg_put(c, st->wc[k], st->chunk_size);
		free(st->wc[k]);
	}
	free(st->wc);
	st->wc = NULL;
	st->nwc = 0;
}


static void writeback_stop(struct aq_client *c);

static void lock_thread_stop(struct aq_client *c);
static void lock_calls_free(struct aq_client *c);

void aq_disconnect(struct aq_client *c)
{
	if (!c)
		return;
	writeback_stop(c);
	lock_thread_stop(c);
	rpc_keeper_stop(c);
	rpc_flusher_stop(c);
	for (uint32_t i = 0; i < c->nconns * c->map.nservers; i++)
		rpc_conn_fini(&c->conns[i]);
	lock_calls_free(c);
	pthread_mutex_destroy(&c->fl_mu);
	pthread_cond_destroy(&c->fl_cv);
	pthread_mutex_destroy(&c->wb_mu);
	pthread_cond_destroy(&c->wb_cv);
	free(c->conns);
	free(c->server_down);
	for (int i = 0; i < 1024; i++)
		while (c->files[i]) {
			struct ino_state *st = c->files[i];
			c->files[i] = st->next;
			wchunks_free(c, st);
			free(st);
		}
	while (c->nwimg)
		munmap(c->wimg_pool[--c->nwimg].p, c->wimg_size);
	pthread_mutex_destroy(&c->wimg_mu);
	pthread_mutex_destroy(&c->files_mu);
	pthread_mutex_destroy(&c->held_mu);
	pthread_mutex_destroy(&c->recent_mu);
	rpc_spares_free(c);
	pthread_mutex_destroy(&c->spare_mu);
	free(c);
}

void aq_set_cred(struct aq_client *c, const struct aq_cred *cred) { c->cred = *cred; }

/* ---- per-inode write state ---- */

static struct ino_state *state_find_locked(struct aq_client *c, uint64_t ino)
{
	struct ino_state *st = c->files[ino % 1024];
	while (st && st->ino != ino)
		st = st->next;
	return st;
}

/* Keeps a as the newest attributes of st's inode this client heard of, if they are (and
 * whether its mode has bits a write may drop). With st->mu held. */
static void state_note_attr_locked(struct ino_state *st, const struct aq_attr *a)
{
	if (a->ctime_ns >= st->attr.ctime_ns) {
		atomic_store(&st->sxid, aq_mode_sxid(a->mode));
		st->attr = *a;
	}
}

static void state_put(struct aq_client *c, struct ino_state *st);

/* ino's state with a reference (state_put), or NULL when this client does not have it
 * open. Its st->mu is the caller's to take, not under files_mu: st->mu may be held across
 * a call, whose reply the connection's reader delivers only once it had files_mu for a
 * push (state_changed_elsewhere). */
static struct ino_state *state_ref(struct aq_client *c, uint64_t ino)
{
	pthread_mutex_lock(&c->files_mu);
	struct ino_state *st = state_find_locked(c, ino);
	if (st)
		st->refs++;
	pthread_mutex_unlock(&c->files_mu);
	return st;
}

bool state_writing(struct aq_client *c, uint64_t ino)
{
	struct ino_state *st = state_ref(c, ino);
	if (!st)
		return false;
	pthread_mutex_lock(&st->mu);
	bool w = st->writers || st->nwc || st->size_dirty || st->amask;
	pthread_mutex_unlock(&st->mu);
	state_put(c, st);
	return w;
}

/* state_note_attr_locked for a's inode, if this client has it open. */
static void state_note_attr(struct aq_client *c, const struct aq_attr *a)
{
	struct ino_state *st = state_ref(c, a->ino);
	if (st) {
		pthread_mutex_lock(&st->mu);
		state_note_attr_locked(st, a);
		pthread_mutex_unlock(&st->mu);
		state_put(c, st);
	}
}

void state_changed_elsewhere(struct aq_client *c, uint64_t ino)
{
	uint32_t lo = ino ? (uint32_t)(ino % ARRAY_SIZE(c->files)) : 0;
	uint32_t hi = ino ? lo + 1 : (uint32_t)ARRAY_SIZE(c->files); /* its list, or all */
	pthread_mutex_lock(&c->files_mu);
	for (uint32_t i = lo; i < hi; i++)
		for (struct ino_state *st = c->files[i]; st; st = st->next)
			if (!ino || st->ino == ino) {
				atomic_fetch_add(&st->wgen, 1);
				atomic_store(&st->sxid, true); /* a chmod elsewhere, perhaps */
				atomic_store(&st->unsure, true);
			}
	pthread_mutex_unlock(&c->files_mu);
}

static struct ino_state *state_get(struct aq_client *c, uint64_t ino, const struct aq_attr *attr, unsigned long epoch)
{
	pthread_mutex_lock(&c->files_mu);
	struct ino_state *st = state_find_locked(c, ino);
	if (!st) {
		st = aq_calloc(1, sizeof *st);
		st->ino = ino;
		pthread_mutex_init(&st->mu, NULL);
		pthread_cond_init(&st->grew, NULL);
		st->size = attr->size;
		st->synced_size = UINT64_MAX;
		st->chunk_size = attr->chunk_size ? attr->chunk_size : c->map.chunk_size;
		st->attr.ctime_ns = INT64_MIN;
		st->blind_gen = atomic_load(&c->blind_gen);
		state_note_attr_locked(st, attr);
		st->next = c->files[ino % 1024];
		c->files[ino % 1024] = st;
		st->refs++;
		pthread_mutex_unlock(&c->files_mu);
		return st;
	}
	st->refs++;
	pthread_mutex_unlock(&c->files_mu); /* before st->mu: see state_ref */
	pthread_mutex_lock(&st->mu);
	if (!st->size_dirty && !st->nwc && atomic_load(&c->size_epoch) == epoch)
		st->size = attr->size; /* close-to-open: take the server's size */
	state_note_attr_locked(st, attr);
	pthread_mutex_unlock(&st->mu);
	return st;
}

static void state_put(struct aq_client *c, struct ino_state *st)
{
	pthread_mutex_lock(&c->files_mu);
	if (--st->refs == 0) {
		struct ino_state **pp = &c->files[st->ino % 1024];
		while (*pp != st)
			pp = &(*pp)->next;
		*pp = st->next;
		pthread_mutex_unlock(&c->files_mu);
		wchunks_free(c, st);
		pthread_mutex_destroy(&st->mu);
		pthread_cond_destroy(&st->grew);
		free(st);
		return;
	}
	pthread_mutex_unlock(&c->files_mu);
}

/* Records that this client's size of st reached the server. Called with st->mu held,
 * before the state stops looking dirty. */
static void size_reached_server(struct aq_client *c, const struct ino_state *st)
{
	pthread_mutex_lock(&c->recent_mu);
	unsigned long e = atomic_fetch_add(&c->size_epoch, 1) + 1;
	c->recent[e % ARRAY_SIZE(c->recent)] =
		(struct recent_size){.epoch = e, .ino = st->ino, .size = st->size, .mtime_ns = st->mtime_ns};
	pthread_mutex_unlock(&c->recent_mu);
}

/* Bytes rounded up to whole 4 KiB blocks, in 512-byte units: st_blocks of a file that
 * holds them all (the servers count what a file's chunks take, meta_file_blocks). */
static uint64_t blocks_of(uint64_t bytes) { return (bytes + 4095) / 4096 * 8; }

static void take_size(struct aq_attr *a, uint64_t size, int64_t mtime_ns)
{
	/* grown by writes: their bytes count as the commit will count them */
	if (size > a->size)
		a->blocks += blocks_of(size) - blocks_of(a->size);
	a->size = size;
	if (mtime_ns > a->mtime_ns)
		a->mtime_ns = a->ctime_ns = mtime_ns;
}

/* st's deferred attribute changes are gone (sent, or overtaken). With st->mu held. */
static void deferred_clear_locked(struct aq_client *c, struct ino_state *st)
{
	if (st->amask) {
		st->amask = 0;
		atomic_fetch_sub(&c->deferred, 1);
	}
}

/* Shows st's deferred attribute changes on attributes a of its inode. With st->mu held. */
static void deferred_overlay_locked(const struct ino_state *st, struct aq_attr *a)
{
	if (!st->amask)
		return;
	if (st->amask & AQ_SET_MODE)
		a->mode = (a->mode & S_IFMT) | (st->pend.mode & 07777);
	if (st->amask & AQ_SET_UID)
		a->uid = st->pend.uid;
	if (st->amask & AQ_SET_GID)
		a->gid = st->pend.gid;
	if (st->amask & AQ_SET_ATIME)
		a->atime_ns = st->pend.atime_ns;
	if (st->amask & AQ_SET_MTIME)
		a->mtime_ns = st->pend.mtime_ns;
	a->ctime_ns = MAX(a->ctime_ns, st->pend.ctime_ns);
}

/* Overlays this client's view of an inode on attributes from a request sent at size
 * epoch `epoch`: the unflushed size of an open file, or a size this client committed
 * after the request left (the server may have answered before the commit). */
static void overlay_local(struct aq_client *c, struct aq_attr *a, unsigned long epoch)
{
	pthread_mutex_lock(&c->files_mu);
	struct ino_state *st = state_find_locked(c, a->ino);
	if (st) {
		pthread_mutex_lock(&st->mu);
		state_note_attr_locked(st, a); /* a link's, a lookup's: the newest heard of */
		if (st->size_dirty || st->nwc || atomic_load(&c->size_epoch) != epoch)
			take_size(a, st->size, st->mtime_ns);
		deferred_overlay_locked(st, a);
		pthread_mutex_unlock(&st->mu);
	}
	pthread_mutex_unlock(&c->files_mu);
	if (st || atomic_load(&c->size_epoch) == epoch)
		return;
	/* closed meanwhile: the newest size committed since the request left, if any */
	pthread_mutex_lock(&c->recent_mu);
	unsigned long now = atomic_load(&c->size_epoch);
	for (unsigned long e = now; e > epoch && now - e < ARRAY_SIZE(c->recent); e--) {
		const struct recent_size *r = &c->recent[e % ARRAY_SIZE(c->recent)];
		if (r->epoch == e && r->ino == a->ino) {
			take_size(a, r->size, r->mtime_ns);
			break;
		}
	}
	pthread_mutex_unlock(&c->recent_mu);
}

/* One CHUNK_WRITE of st's: len bytes of data at off in chunk idx, or with PROTO_CW_EXTENTS
 * in flags, data that carries its extents (off 0). With commit, and when the server that
 * takes it holds st's metadata too, the write commits st's size and time as well
 * (PROTO_CW_COMMIT): *committed says so; and its deferred attribute changes after them
 * (PROTO_CW_ATTRS), which it then clears. With st->mu held. */
static int chunk_write(struct aq_client *c, struct ino_state *st, uint32_t idx, uint32_t off, const void *data,
		       uint32_t len, uint32_t flags, bool commit, bool *committed)
{
	uint32_t target = cluster_chunk_target(&c->map, st->ino, idx);
	const struct cluster_target *t = cluster_target_by_id(&c->map, target);
	struct proto_req r = {.op = OP_CHUNK_WRITE, .target = target, .ino = st->ino, .idx = idx, .off = off,
			      .flags = flags, .data = data, .data_len = len};
	*committed = commit && st->size_dirty && t->server == client_meta_server(c, st->ino);
	if (*committed) {
		r.flags |= PROTO_CW_COMMIT;
		r.size = st->size;
		r.time_ns = st->mtime_ns;
		if (st->amask) {
			r.flags |= PROTO_CW_ATTRS;
			r.cred = st->acred;
			r.mask = st->amask | AQ_SET_CTIME;
			r.attr = st->pend;
		}
	}
	int rc = rpc_do(c, t->server, &r, NULL, NULL);
	*committed = *committed && !rc;
	if (*committed && (r.flags & PROTO_CW_ATTRS))
		deferred_clear_locked(c, st); /* else deferred_send_locked sends them alone */
	return rc;
}

/* Sends chunk slot k's buffered writes (one range as a plain write, several as one
 * write of extents) and frees the slot (the last one moves into it). With st->mu held. */
_Static_assert(WEXTENTS + 1 <= PROTO_CW_EXTENTS_MAX, "a chunk's ranges fit one write of extents");

static void wchunk_release_locked(struct aq_client *c, struct ino_state *st, uint32_t k);

static int flush_chunk_locked(struct aq_client *c, struct ino_state *st, uint32_t k, bool commit)
{
	AQ_ASSERT(k < st->nwc);
	struct wchunk *w = st->wc[k];
	AQ_ASSERT(w->n >= 1 && w->n <= WEXTENTS + 1 && w->ext[w->n - 1].hi <= st->chunk_size);
	int rc;
	bool committed;
	if (w->n == 1) {
		rc = chunk_write(c, st, w->idx, w->ext[0].lo, w->img + w->ext[0].lo, w->ext[0].hi - w->ext[0].lo, 0,
				 commit, &committed);
	} else {
		struct aq_extent ext[WEXTENTS + 1];
		const uint8_t *src[WEXTENTS + 1];
		for (uint32_t i = 0; i < w->n; i++) {
			ext[i] = (struct aq_extent){.off = w->ext[i].lo, .len = w->ext[i].hi - w->ext[i].lo};
			src[i] = w->img + w->ext[i].lo;
		}
		size_t len;
		uint8_t *d = proto_extents_encode(ext, w->n, src, &len);
		rc = chunk_write(c, st, w->idx, 0, d, (uint32_t)len, PROTO_CW_EXTENTS, commit, &committed);
		free(d);
	}
	if (committed) {
		size_reached_server(c, st);
		st->size_dirty = false;
	}
	wchunk_release_locked(c, st, k);
	if (rc && !st->err)
		st->err = rc;
	return rc;
}

/* Empties chunk slot k (sent, or dropped by a punch of its whole chunk). With st->mu held. */
static void wchunk_release_locked(struct aq_client *c, struct ino_state *st, uint32_t k)
{
	struct wchunk *w = st->wc[k];
	/* Read-ahead windows started while these bytes were only here hold the old ones. */
	atomic_fetch_add(&st->wgen, 1);
	atomic_fetch_sub(&c->wbuf_bytes, (unsigned long)w->npages * WPAGE);
	w->n = 0;
	w->npages = 0;
	memset(w->touched, 0, sizeof w->touched);
	/* The slot goes to the end, where the next new slot finds it. A file written in one
	 * chunk at a time (a sequential writer) keeps the pages for its next chunk; those of
	 * a file written all over go, or they would stay as many as the budget. */
	if (st->nwc > 1)
		wimg_put(c, w, st->chunk_size);
	st->wc[k] = st->wc[--st->nwc];
	st->wc[st->nwc] = w;
}

/* The slot of st's least recently written chunk. With st->mu held and a slot in use. */
static uint32_t wchunk_lru(const struct ino_state *st)
{
	uint32_t lru = 0;
	for (uint32_t j = 1; j < st->nwc; j++)
		if (st->wc[j]->used < st->wc[lru]->used)
			lru = j;
	return lru;
}

static int commit_size_locked(struct aq_client *c, struct ino_state *st);
static int deferred_send_locked(struct aq_client *c, struct ino_state *st);

/* Sends every buffered write of st, then commits its size: with the last write when its
 * server holds the inode's metadata too (a small file written and closed: a create and
 * one write, no COMMIT_SIZE); then its deferred attribute changes. Called with st->mu
 * held. */
static int flush_commit_locked(struct aq_client *c, struct ino_state *st)
{
	int rc = 0;
	while (st->nwc) {
		int r = flush_chunk_locked(c, st, st->nwc - 1, st->nwc == 1 && !rc);
		if (r && !rc)
			rc = r;
	}
	rc = rc ? rc : commit_size_locked(c, st);
	int ra = deferred_send_locked(c, st); /* after the writes: they must not overtake an mtime */
	rc = rc ? rc : ra;
	if (!st->nwc && !st->size_dirty)
		atomic_store(&st->dirty_ns, 0);
	return rc;
}

/* ---- write-back ----
 *
 * Buffered writes and sizes WRITEBACK_AGE_NS old go to the servers from a thread of the
 * client's, while their files stay open, as the kernel writes a local file system's dirty
 * pages back (ext4 within about 30 s): else bytes written through a descriptor kept open
 * (a log, a shard being appended to) reach no server, and no other client, until close,
 * and a crash of this process loses all of them. An error is the file's next write's,
 * flush's or fsync's to report, as one from an eviction is. */

/* Every open file's state with a reference (state_put each, free the array), or with
 * dirty_age_ns only those dirty at least that long. */
static struct ino_state **states_ref(struct aq_client *c, uint64_t dirty_age_ns, size_t *np)
{
	uint64_t now = aq_mono_ns();
	struct ino_state **all = NULL;
	size_t n = 0, cap = 0;
	pthread_mutex_lock(&c->files_mu);
	for (uint32_t i = 0; i < ARRAY_SIZE(c->files); i++)
		for (struct ino_state *st = c->files[i]; st; st = st->next) {
			uint64_t d = atomic_load(&st->dirty_ns);
			if (dirty_age_ns && (!d || now - d < dirty_age_ns))
				continue;
			if (n == cap) {
				cap = cap ? 2 * cap : 64;
				all = aq_realloc(all, cap * sizeof(*all));
			}
			st->refs++;
			all[n++] = st;
		}
	pthread_mutex_unlock(&c->files_mu);
	*np = n;
	return all;
}

static void writeback_pass(struct aq_client *c)
{
	size_t n;
	struct ino_state **due = states_ref(c, WRITEBACK_AGE_NS, &n);
	for (size_t i = 0; i < n; i++) {
		struct ino_state *st = due[i];
		pthread_mutex_lock(&st->mu);
		/* The chunks there now, one at a time: a writer waits for one chunk's send at
		 * most, not for all that a file buffered (up to the client's budget). */
		int rc = 0;
		for (uint32_t left = st->nwc; left > 1 && st->nwc > 1 && !rc; left--) {
			rc = flush_chunk_locked(c, st, wchunk_lru(st), false);
			pthread_mutex_unlock(&st->mu);
			pthread_mutex_lock(&st->mu);
		}
		rc = rc ? rc : flush_commit_locked(c, st);
		if (rc && !st->err)
			st->err = rc;
		pthread_mutex_unlock(&st->mu);
		state_put(c, st);
	}
	free(due);
}

static void *writeback_main(void *arg)
{
	struct aq_client *c = arg;
	pthread_mutex_lock(&c->wb_mu);
	while (!c->wb_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&c->wb_cv, &c->wb_mu, &ts);
		if (c->wb_stop)
			break;
		pthread_mutex_unlock(&c->wb_mu);
		writeback_pass(c);
		pthread_mutex_lock(&c->wb_mu);
	}
	pthread_mutex_unlock(&c->wb_mu);
	return NULL;
}

static void writeback_stop(struct aq_client *c)
{
	pthread_mutex_lock(&c->wb_mu);
	c->wb_stop = true;
	pthread_cond_signal(&c->wb_cv);
	bool running = c->wb_running;
	pthread_mutex_unlock(&c->wb_mu);
	if (running)
		pthread_join(c->writeback, NULL);
}

/* st has writes to send or a size to commit: the write-back thread sends them once they
 * are old enough. With st->mu held. */
static void state_dirtied_locked(struct aq_client *c, struct ino_state *st)
{
	if (atomic_load(&st->dirty_ns))
		return;
	atomic_store(&st->dirty_ns, aq_mono_ns());
	pthread_mutex_lock(&c->wb_mu);
	if (!c->wb_running && !c->wb_stop)
		c->wb_running = pthread_create(&c->writeback, NULL, writeback_main, c) == 0;
	pthread_mutex_unlock(&c->wb_mu);
}

/* The first of w's ranges that ends at x or later (w->n if none): ranges are sorted, and a
 * chunk holds up to WEXTENTS of them, so every write and read through the buffers looks
 * them up by halves. */
static uint32_t wrange_from(const struct wchunk *w, uint32_t x)
{
	uint32_t lo = 0, hi = w->n;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (w->ext[mid].hi < x)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Whether st's buffered writes hold every byte of [off, off + len). With st->mu held. */
static bool wbuf_covers(const struct ino_state *st, uint64_t off, uint64_t len)
{
	uint32_t cs = st->chunk_size;
	while (len > 0) {
		uint32_t idx = (uint32_t)(off / cs), in = (uint32_t)(off % cs);
		uint32_t n = (uint32_t)MIN((uint64_t)(cs - in), len);
		const struct wchunk *w = NULL;
		for (uint32_t k = 0; k < st->nwc && !w; k++)
			if (st->wc[k]->idx == idx)
				w = st->wc[k];
		/* ranges never touch, so a covered piece lies in one: the first that ends past in */
		uint32_t i = w ? wrange_from(w, in + 1) : 0;
		if (!w || i == w->n || w->ext[i].lo > in || in + n > w->ext[i].hi)
			return false;
		off += n;
		len -= n;
	}
	return true;
}

/* Copies st's buffered writes in [off, off + len) over buf (which holds that range);
 * with buf NULL, only says whether there are any. With st->mu held. */
static bool wbuf_overlay(const struct ino_state *st, uint8_t *buf, uint64_t off, uint64_t len)
{
	bool any = false;
	for (uint32_t k = 0; k < st->nwc; k++) {
		const struct wchunk *w = st->wc[k];
		uint64_t base = (uint64_t)w->idx * st->chunk_size;
		if (base >= off + len || off >= base + st->chunk_size)
			continue;
		/* [a, b): the part of the range in this chunk, in chunk offsets */
		uint32_t a = (uint32_t)(MAX(off, base) - base), b = (uint32_t)(MIN(off + len, base + st->chunk_size) - base);
		for (uint32_t i = wrange_from(w, a + 1); i < w->n && w->ext[i].lo < b; i++) {
			if (!buf)
				return true;
			uint32_t lo = MAX(w->ext[i].lo, a), hi = MIN(w->ext[i].hi, b);
			memcpy(buf + (base + lo - off), w->img + lo, hi - lo);
			any = true;
		}
	}
	return any;
}

/* Puts src as the bytes of chunk offsets [lo, hi) in w (a chunk of cs bytes), merging the
 * range with those it overlaps or touches. Returns by how many bytes w's pages grew. */
static int64_t wchunk_put(struct aq_client *c, struct wchunk *w, uint32_t cs, uint32_t lo, uint32_t hi,
			  const uint8_t *src)
{
	if (!w->img)
		wimg_get(c, w, cs);
	memcpy(w->img + lo, src, hi - lo);
	uint32_t fresh = 0;
	for (uint32_t pg = lo / WPAGE; pg <= (hi - 1) / WPAGE; pg++) {
		uint64_t bit = 1ull << (pg % 64);
		fresh += !(w->touched[pg / 64] & bit);
		w->touched[pg / 64] |= bit;
		w->img_pages += !(w->img_in_memory[pg / 64] & bit);
		w->img_in_memory[pg / 64] |= bit;
	}
	w->npages += fresh;
	uint32_t i = wrange_from(w, lo), j = i, L = lo, H = hi; /* ranges [i, j) merge into [L, H) */
	while (j < w->n && w->ext[j].lo <= hi) {
		L = MIN(L, w->ext[j].lo);
		H = MAX(H, w->ext[j].hi);
		j++;
	}
	AQ_ASSERT(lo < hi && (j > i || w->n <= WEXTENTS)); /* the caller sends a chunk past WEXTENTS */
	memmove(&w->ext[i + 1], &w->ext[j], (w->n - j) * sizeof(w->ext[0]));
	w->n = w->n - (j - i) + 1;
	w->ext[i] = (struct wrange){L, H};
	AQ_ASSERT(i == 0 || w->ext[i - 1].hi < L);
	AQ_ASSERT(i + 1 == w->n || H < w->ext[i + 1].lo);
	return (int64_t)fresh * WPAGE;
}

static int commit_size_locked(struct aq_client *c, struct ino_state *st)
{
	if (!st->size_dirty)
		return 0;
	struct proto_req r = {.op = OP_COMMIT_SIZE, .cred = c->cred, .ino = st->ino, .size = st->size,
			      .time_ns = st->mtime_ns};
	struct proto_reply rep;
	int rc = rpc_do(c, client_meta_server(c, st->ino), &r, &rep, NULL);
	if (!rc) {
		size_reached_server(c, st);
		st->size_dirty = false;
	}
	return rc;
}

/* ---- metadata calls ---- */

static int attr_call(struct aq_client *c, uint32_t server, struct proto_req *r, struct aq_attr *out)
{
	struct proto_reply rep;
	int rc = rpc_do(c, server, r, &rep, NULL);
	if (!rc && out)
		*out = rep.attr;
	return rc;
}

int aq_lookup(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, struct aq_attr *out)
{
	size_t n = strlen(name);
	if (n > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	struct proto_req r = {.op = OP_LOOKUP, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)n};
	unsigned long epoch = atomic_load(&c->size_epoch);
	int rc = attr_call(c, name_server(c, parent, name), &r, out);
	if (!rc && out)
		overlay_local(c, out, epoch);
	return rc;
}

int aq_getattr(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, struct aq_attr *out)
{
	struct proto_req r = {.op = OP_GETATTR, .cred = *cred_or_default(c, cred), .ino = ino};
	unsigned long epoch = atomic_load(&c->size_epoch);
	int rc = attr_call(c, client_meta_server(c, ino), &r, out);
	if (!rc)
		overlay_local(c, out, epoch);
	return rc;
}

/* ---- deferred attribute changes ----
 *
 * tar, cp -a and other copiers set a file's times, owner and mode through the descriptor
 * they wrote it with, before they close it: three SETATTR round trips per file, two
 * thirds of an untar's time in the mount. A change the caller lets wait (AQ_SET_DEFER)
 * to a file this client has open for writing, made by root or the owner, is kept with
 * the buffered writes instead and sent after them, when they go: at the file's flush,
 * fsync or close, before any other setattr of it, or by the write-back thread. Until
 * then attributes this client reports show it, and other clients see the file as they
 * see its buffered bytes: as of its close (close-to-open). Only changes whose outcome
 * this client can tell without the server: the checks below are the server's (meta.c),
 * on the newest attributes this client heard of, and nothing changed the inode since the
 * open that this client did not hear the outcome of (no push about it, no xattr change
 * or unlink or rename through this client: unsure, blind_gen). */

static int deferred_send_locked(struct aq_client *c, struct ino_state *st)
{
	if (!st->amask)
		return 0;
	struct proto_req r = {.op = OP_SETATTR, .cred = st->acred, .ino = st->ino, .mask = st->amask | AQ_SET_CTIME,
			      .attr = st->pend};
	struct aq_attr a;
	deferred_clear_locked(c, st);
	int rc = attr_call(c, client_meta_server(c, st->ino), &r, &a);
	if (!rc)
		state_note_attr_locked(st, &a);
	return rc;
}

/* st's bytes changed now (a write, a punch): its mtime and ctime move as a write's, past
 * a deferred mtime, as a write after futimens moves the mtime again. With st->mu held. */
static void state_modified_locked(struct aq_client *c, struct ino_state *st)
{
	st->mtime_ns = aq_now_ns();
	st->pend.ctime_ns = MAX(st->pend.ctime_ns, st->mtime_ns);
	if (st->amask == AQ_SET_MTIME)
		deferred_clear_locked(c, st);
	else
		st->amask &= ~(uint32_t)AQ_SET_MTIME;
}

#define DEFERRABLE (AQ_SET_MODE | AQ_SET_UID | AQ_SET_GID | AQ_SET_ATIME | AQ_SET_MTIME)

/* Defers a setattr of st's inode by cr if it may wait (see above), and fills *out with
 * the attributes as the server will have them. With st->mu held. */
/* st's inode as this client sees it: the newest attributes heard of, with its own size
 * and deferred changes. With st->mu held. */
static void state_view_locked(const struct ino_state *st, struct aq_attr *v)
{
	*v = st->attr;
	take_size(v, st->size, st->mtime_ns);
	deferred_overlay_locked(st, v);
}

static bool defer_locked(struct aq_client *c, struct ino_state *st, const struct aq_cred *cr, uint32_t mask,
			 const struct aq_attr *in, struct aq_attr *out)
{
	struct aq_attr v;
	state_view_locked(st, &v);
	bool sxid = atomic_load(&st->sxid) || aq_mode_sxid(v.mode);
	if (!sxid)
		mask &= ~(uint32_t)AQ_SET_KILL_SXID; /* nothing to drop */
	if (!st->writers || atomic_load(&st->unsure) || st->blind_gen != atomic_load(&c->blind_gen) || !S_ISREG(v.mode) ||
	    (v.flags & (AQ_ATTR_ACL | AQ_ATTR_XATTRS)) || !mask || (mask & ~(uint32_t)DEFERRABLE))
		return false; /* (an ACL or xattrs may change with the mode or owner) */
	if (st->amask && st->acred.uid != cr->uid)
		return false; /* one caller's changes at a time */
	if (cr->uid != 0) {
		/* the owner may set the mode (a setgid only when in the group, which this
		 * client cannot tell) and the times; a chown needs root here */
		if (cr->uid != v.uid || (mask & (AQ_SET_UID | AQ_SET_GID)) || ((mask & AQ_SET_MODE) && (in->mode & S_ISGID)))
			return false;
	} else if ((mask & (AQ_SET_UID | AQ_SET_GID)) && sxid) {
		return false; /* a chown drops setuid and setgid bits, by the caller's groups */
	} else if ((mask & AQ_SET_MODE) && aq_mode_sxid(in->mode) && ((st->amask | mask) & (AQ_SET_UID | AQ_SET_GID))) {
		return false; /* the server drops them for the chown it makes in the same change */
	}
	if (!st->amask) {
		st->acred = *cr;
		atomic_fetch_add(&c->deferred, 1);
	}
	st->amask |= mask;
	if (mask & AQ_SET_MODE)
		st->pend.mode = (v.mode & S_IFMT) | (in->mode & 07777);
	if (mask & AQ_SET_UID)
		st->pend.uid = in->uid;
	if (mask & AQ_SET_GID)
		st->pend.gid = in->gid;
	if (mask & AQ_SET_ATIME)
		st->pend.atime_ns = in->atime_ns;
	if (mask & AQ_SET_MTIME)
		st->pend.mtime_ns = in->mtime_ns;
	st->pend.ctime_ns = MAX(aq_now_ns(), v.ctime_ns); /* a ctime never goes back */
	state_dirtied_locked(c, st);
	deferred_overlay_locked(st, &v);
	*out = v;
	return true;
}

/* Sends st's buffered writes and deferred changes now, if it has deferred some; an error
 * is the file's flush's or close's to report. With st->mu held. */
static void deferred_flush_locked(struct aq_client *c, struct ino_state *st)
{
	if (!st->amask)
		return;
	int rc = flush_commit_locked(c, st);
	if (rc && !st->err)
		st->err = rc;
}

/* This client changes ino's attributes by a call whose reply does not carry them (an
 * xattr's, an ACL's, which may set the mode): its deferred changes go first, as they
 * were made, and no more are deferred while the file stays open. */
static void state_blind_change(struct aq_client *c, uint64_t ino)
{
	struct ino_state *st = state_ref(c, ino);
	if (!st)
		return;
	pthread_mutex_lock(&st->mu);
	atomic_store(&st->unsure, true);
	deferred_flush_locked(c, st);
	pthread_mutex_unlock(&st->mu);
	state_put(c, st);
}

int aq_send_deferred(struct aq_client *c)
{
	if (!atomic_load(&c->deferred))
		return 0;
	size_t n;
	struct ino_state **all = states_ref(c, 0, &n);
	int sent = 0;
	for (size_t i = 0; i < n; i++) {
		struct ino_state *st = all[i];
		pthread_mutex_lock(&st->mu);
		if (st->amask) {
			sent++;
			deferred_flush_locked(c, st);
		}
		pthread_mutex_unlock(&st->mu);
		state_put(c, st);
	}
	free(all);
	return sent;
}

int aq_setattr(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, uint32_t mask, const struct aq_attr *in,
	       struct aq_attr *out)
{
	const struct aq_cred *cr = cred_or_default(c, cred);
	struct ino_state *st = NULL;
	bool data = mask & (AQ_SET_SIZE | AQ_SET_MTIME | AQ_SET_MTIME_NOW);
	if (data || (mask & AQ_SET_DEFER) || atomic_load(&c->deferred))
		st = state_ref(c, ino);
	if (st) {
		pthread_mutex_lock(&st->mu);
		struct aq_attr a;
		if ((mask & AQ_SET_DEFER) && defer_locked(c, st, cr, mask & ~(uint32_t)AQ_SET_DEFER, in, &a)) {
			pthread_mutex_unlock(&st->mu);
			state_put(c, st);
			if (out)
				*out = a;
			return 0;
		}
		/* Buffered writes and the local size must not outlive a truncate, and their
		 * commit must not come after an mtime set: tar sets it with futimens before
		 * close, and the close then committed the time of the writes over it. Changes
		 * deferred before go first, as they were made. */
		if (data || st->amask)
			flush_commit_locked(c, st); /* the server must know this client's size, or it
						     * takes a shrink for growth */
	}
	struct proto_req r = {.op = OP_SETATTR, .cred = *cr, .ino = ino, .mask = mask & ~(uint32_t)AQ_SET_DEFER,
			      .attr = *in};
	struct aq_attr a;
	unsigned long epoch = atomic_load(&c->size_epoch);
	int rc = attr_call(c, client_meta_server(c, ino), &r, &a);
	if (st) {
		if (!rc && data) {
			atomic_fetch_add(&st->wgen, 1); /* read-ahead windows hold the old bytes */
			st->size = a.size;
			st->mtime_ns = a.mtime_ns;
			size_reached_server(c, st);
			st->size_dirty = false;
			epoch = atomic_load(&c->size_epoch); /* this reply is the newest size */
		}
		if (!rc)
			state_note_attr_locked(st, &a);
		pthread_mutex_unlock(&st->mu);
		state_put(c, st);
	} else if (!rc)
		state_note_attr(c, &a);
	if (!rc) {
		overlay_local(c, &a, epoch);
		if (out)
			*out = a;
	}
	return rc;
}

int aq_mknod(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, uint32_t mode,
	     uint32_t rdev, uint32_t flags, struct aq_attr *out)
{
	int rc = check_name(name);
	if (rc)
		return rc;
	struct proto_req r = {.op = OP_MKNOD, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)strlen(name), .mode = mode, .rdev = rdev, .flags = flags};
	return attr_call(c, name_server(c, parent, name), &r, out);
}

int aq_mkdir_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, uint32_t mode,
		struct aq_attr *out)
{
	int rc = check_name(name);
	if (rc)
		return rc;
	struct proto_req r = {.op = OP_MKDIR, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)strlen(name), .mode = mode};
	return attr_call(c, name_server(c, parent, name), &r, out);
}

int aq_symlink_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		  const char *target, struct aq_attr *out)
{
	int rc = check_name(name);
	if (rc)
		return rc;
	size_t tn = strlen(target);
	if (tn == 0)
		return -ENOENT;
	if (tn >= AQ_PATH_MAX)
		return -ENAMETOOLONG;
	struct proto_req r = {.op = OP_SYMLINK, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)strlen(name), .name2 = target, .name2_len = (uint32_t)tn};
	return attr_call(c, name_server(c, parent, name), &r, out);
}

int aq_readlink_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, char *buf, size_t size)
{
	struct proto_req r = {.op = OP_READLINK, .cred = *cred_or_default(c, cred), .ino = ino};
	struct proto_reply rep;
	struct rpc_call *call;
	int rc = rpc_do(c, client_meta_server(c, ino), &r, &rep, &call);
	if (rc)
		return rc;
	size_t n = MIN((size_t)rep.data_len, size ? size - 1 : 0);
	memcpy(buf, rep.data, n);
	if (size)
		buf[n] = 0;
	rc = (int)rep.data_len;
	rpc_free(call);
	return rc;
}

/* UNLINK or RMDIR of name in parent; for an UNLINK with dir, the directory's attributes
 * after it (ino 0 when the server did not send them). */
static int name_op(struct aq_client *c, const struct aq_cred *cred, uint16_t op, uint64_t parent, const char *name,
		   struct aq_attr *dir)
{
	size_t n = strlen(name);
	if (n > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	struct proto_req r = {.op = op, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)n, .flags = dir ? PROTO_UNLINK_DIR_ATTR : 0};
	struct proto_reply rep;
	int rc = rpc_do(c, name_server(c, parent, name), &r, dir ? &rep : NULL, NULL);
	if (dir)
		*dir = rc ? (struct aq_attr){0} : rep.attr;
	return rc;
}

int aq_unlink_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name)
{
	atomic_fetch_add(&c->blind_gen, 1); /* the file's nlink and ctime change, unheard of */
	return name_op(c, cred, OP_UNLINK, parent, name, NULL);
}

int aq_unlink_at_dir(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		     struct aq_attr *dir)
{
	atomic_fetch_add(&c->blind_gen, 1);
	return name_op(c, cred, OP_UNLINK, parent, name, dir);
}

int aq_rmdir_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name)
{
	return name_op(c, cred, OP_RMDIR, parent, name, NULL);
}

int aq_rename_at(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		 uint64_t newparent, const char *newname, uint32_t flags)
{
	if (strlen(name) > AQ_NAME_MAX || strlen(newname) > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	struct proto_req r = {.op = OP_RENAME, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)strlen(name), .newparent = newparent, .name2 = newname,
			      .name2_len = (uint32_t)strlen(newname), .flags = flags};
	atomic_fetch_add(&c->blind_gen, 1); /* a replaced file's nlink, a moved one's ctime */
	return rpc_do(c, name_server(c, parent, name), &r, NULL, NULL);
}

int aq_link_at(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, uint64_t newparent,
	       const char *newname, struct aq_attr *out)
{
	int rc = check_name(newname);
	if (rc)
		return rc;
	struct proto_req r = {.op = OP_LINK, .cred = *cred_or_default(c, cred), .ino = ino, .newparent = newparent,
			      .name2 = newname, .name2_len = (uint32_t)strlen(newname)};
	unsigned long epoch = atomic_load(&c->size_epoch);
	rc = attr_call(c, client_meta_server(c, ino), &r, out);
	if (!rc && out)
		overlay_local(c, out, epoch);
	return rc;
}

int aq_access_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, uint32_t mask)
{
	struct proto_req r = {.op = OP_ACCESS, .cred = *cred_or_default(c, cred), .ino = ino, .mask = mask};
	return rpc_do(c, client_meta_server(c, ino), &r, NULL, NULL);
}

int aq_readdir_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint64_t cookie, uint32_t flags,
		   struct aq_dirent *ents, uint32_t max)
{
	return aq_readdir_ino_end(c, cred, dir, cookie, flags, ents, max, NULL);
}

int aq_readdir_ino_end(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint64_t cookie,
		       uint32_t flags, struct aq_dirent *ents, uint32_t max, bool *at_end)
{
	if (at_end)
		*at_end = false;
	if (max == 0)
		return -EINVAL;
	struct proto_req r = {.op = OP_READDIR, .cred = *cred_or_default(c, cred), .ino = dir, .cookie = cookie,
			      .max = max, .flags = flags};
	struct proto_reply rep;
	struct rpc_call *call;
	unsigned long epoch = atomic_load(&c->size_epoch);
	int rc = rpc_do(c, client_meta_server(c, dir), &r, &rep, &call);
	if (rc)
		return rc;
	struct rbuf rb;
	rbuf_init(&rb, rep.entries, rep.entries_len);
	uint32_t n = 0;
	bool plus = flags & AQ_READDIR_PLUS;
	/* the server may exceed max to keep a hash group together: never write past ents */
	for (; n < rep.count && n < max; n++) {
		if (proto_dirent_get(&rb, &ents[n], plus)) {
			rc = -EPROTO;
			break;
		}
		if (plus)
			overlay_local(c, &ents[n].attr, epoch);
	}
	if (!rc && rep.count > max) {
		/* drop the incomplete group at the end; the caller resumes before it */
		uint64_t last = ents[n - 1].cookie;
		while (n > 0 && ents[n - 1].cookie == last)
			n--;
		if (n == 0)
			rc = -EOVERFLOW;
	} else if (!rc && at_end) {
		*at_end = rep.eof;
	}
	rpc_free(call);
	return rc ? rc : (int)n;
}

/* ---- listing streams ---- */

#define DIR_RANGES 8 /* bucket ranges of one stream, each with a page in flight */

struct dir_range {
	uint64_t cookie;
	uint32_t end;              /* bucket to stop before */
	bool done;
	int attempts;
	struct rpc_call *call;     /* the page in flight */
};

struct aq_dir {
	struct aq_client *c;
	struct aq_cred cred;
	uint64_t dir;
	uint32_t flags, server, nranges, next;
	unsigned long epoch;
	struct dir_range r[DIR_RANGES];
	struct rpc_call *page;     /* the page being handed out */
	struct rbuf rb;
	uint32_t left;             /* its entries not handed out yet */
	int err;
};

static int dir_range_send(struct aq_dir *d, struct dir_range *r)
{
	struct proto_req q = {.op = OP_READDIR, .cred = d->cred, .ino = d->dir, .cookie = r->cookie,
			      .max = PROTO_READDIR_MAX, .flags = d->flags | r->end << PROTO_READDIR_END_SHIFT};
	struct wbuf w;
	wbuf_init(&w, 128);
	proto_req_encode(&w, &q);
	int err = 0;
	/* a server that is restarting is waited for, as rpc_do waits: a listing started
	 * then failed at once with ECONNREFUSED */
	uint64_t deadline = 0;
	for (int attempt = 0;; attempt++) {
		r->call = rpc_start(d->c, d->server, OP_READDIR, &w, 0, &err);
		if (r->call || !aq_err_unreachable(err) || !rpc_retry_wait(d->c, d->server, &deadline, attempt))
			break;
	}
	wbuf_free(&w);
	return r->call ? 0 : err;
}

int aq_dir_open(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint32_t flags, struct aq_dir **out)
{
	if (flags & ~AQ_READDIR_PLUS)
		return -EINVAL;
	struct aq_dir *d = aq_calloc(1, sizeof *d);
	d->c = c;
	d->cred = *cred_or_default(c, cred);
	d->dir = dir;
	d->flags = flags;
	d->server = client_meta_server(c, dir);
	d->epoch = atomic_load(&c->size_epoch);
	uint32_t nb = c->map.nbuckets;
	d->nranges = MIN((uint32_t)DIR_RANGES, nb);
	int rc = 0;
	for (uint32_t i = 0; i < d->nranges; i++) {
		uint32_t start = (uint32_t)((uint64_t)nb * i / d->nranges);
		d->r[i].end = (uint32_t)((uint64_t)nb * (i + 1) / d->nranges);
		d->r[i].cookie = (uint64_t)(start + 1) << 48; /* bucket start, from its first position */
		if (!rc)
			rc = dir_range_send(d, &d->r[i]);
		else
			d->r[i].done = true;
	}
	if (rc) {
		aq_dir_close(d);
		return rc;
	}
	*out = d;
	return 0;
}

/* Takes the next range's page (ranges in turn) and sends that range's next request before
 * the caller sees a single entry, so the server is never idle. 0, or 1 at the end. */
static int dir_next_page(struct aq_dir *d)
{
	struct dir_range *r = NULL;
	for (uint32_t k = 0; k < d->nranges && !r; k++) {
		struct dir_range *x = &d->r[(d->next + k) % d->nranges];
		if (!x->done)
			r = x;
	}
	if (!r)
		return 1;
	d->next = (uint32_t)(r - d->r + 1) % d->nranges;
	int rc = rpc_wait(r->call);
	if (rc && aq_err_unreachable(rc) && !r->call->answered && r->attempts++ < 10 * (int)d->c->reconnect_s) {
		/* the connection broke (a server restart): ask for the same page again, 10 times
		 * a second for as long as a call waits for a restarting server */
		rpc_free(r->call);
		r->call = NULL;
		usleep(100000);
		rc = dir_range_send(d, r);
		if (rc)
			r->done = true;
		return rc;
	}
	struct proto_reply rep;
	if (!rc && proto_reply_decode(OP_READDIR, r->call->payload, r->call->len, &rep))
		rc = -EPROTO;
	if (rc) {
		rpc_free(r->call);
		r->call = NULL;
		r->done = true;
		return rc;
	}
	d->page = r->call;
	r->call = NULL;
	r->attempts = 0;
	rbuf_init(&d->rb, rep.entries, rep.entries_len);
	d->left = rep.count;
	if (rep.eof || rep.count == 0)
		r->done = true;
	else {
		r->cookie = rep.next;
		rc = dir_range_send(d, r);
		if (rc)
			r->done = true;
	}
	return rc;
}

int aq_dir_read(struct aq_dir *d, struct aq_dirent *ents, uint32_t max)
{
	uint32_t n = 0;
	bool plus = d->flags & AQ_READDIR_PLUS;
	while (n < max && !d->err) {
		if (d->left) {
			if (proto_dirent_get(&d->rb, &ents[n], plus)) {
				d->err = -EPROTO;
				break;
			}
			if (plus)
				overlay_local(d->c, &ents[n].attr, d->epoch);
			n++;
			if (--d->left == 0) {
				rpc_free(d->page);
				d->page = NULL;
			}
			continue;
		}
		if (n)
			break; /* hand out what we have rather than wait for the next page */
		int rc = dir_next_page(d);
		if (rc == 1)
			break;
		if (rc < 0)
			d->err = rc;
	}
	return n ? (int)n : d->err;
}

void aq_dir_close(struct aq_dir *d)
{
	if (!d)
		return;
	for (uint32_t i = 0; i < d->nranges; i++) {
		if (d->r[i].call) {
			rpc_wait(d->r[i].call);
			rpc_free(d->r[i].call);
		}
	}
	rpc_free(d->page);
	free(d);
}

/* The permission bits of an access ACL value with only the owner, group and other entries
 * (the kernel's posix_acl_xattr layout: u32 version 2, then u16 tag, u16 perm, u32 id per
 * entry), which says no more than a mode; -1 for any other. */
static int acl_mode_only(const char *name, const void *value, size_t size)
{
	static const uint16_t tags[3] = {0x01, 0x04, 0x20}; /* ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER */
	const uint8_t *p = value;
	if (strcmp(name, "system.posix_acl_access") || size != 4 + 3 * 8 || get_le32(p) != 2)
		return -1;
	int mode = 0;
	for (int i = 0; i < 3; i++) {
		uint16_t perm = get_le16(p + 4 + 8 * i + 2);
		if (get_le16(p + 4 + 8 * i) != tags[i] || perm > 7)
			return -1;
		mode |= perm << (6 - 3 * i);
	}
	return mode;
}

/* aq_setxattr_ino of such an ACL as a deferred chmod, if it may be one (AQ_XATTR_DEFER);
 * -EAGAIN if not. */
static int acl_defer(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int perm)
{
	struct ino_state *st = state_ref(c, ino);
	if (!st)
		return -EAGAIN;
	pthread_mutex_lock(&st->mu);
	struct aq_attr in, out;
	state_view_locked(st, &in);
	in.mode = (in.mode & ~0777u) | (uint32_t)perm; /* the ACL's bits; the rest stay */
	bool ok = defer_locked(c, st, cred_or_default(c, cred), AQ_SET_MODE, &in, &out);
	pthread_mutex_unlock(&st->mu);
	state_put(c, st);
	return ok ? 0 : -EAGAIN;
}

int aq_setxattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, const char *name,
		    const void *value, size_t size, uint32_t flags)
{
	int perm = flags & AQ_XATTR_DEFER && !(flags & AQ_XATTR_REPLACE) ? acl_mode_only(name, value, size) : -1;
	if (perm >= 0 && acl_defer(c, cred, ino, perm) == 0)
		return 0;
	flags &= ~AQ_XATTR_DEFER;
	size_t n = strlen(name);
	if (n > AQ_XATTR_NAME_MAX)
		return -ERANGE;
	if (size > AQ_XATTR_VALUE_MAX)
		return -E2BIG;
	struct proto_req r = {.op = OP_SETXATTR, .cred = *cred_or_default(c, cred), .ino = ino, .name = name,
			      .name_len = (uint32_t)n, .flags = flags, .data = value, .data_len = (uint32_t)size};
	state_blind_change(c, ino);
	return rpc_do(c, client_meta_server(c, ino), &r, NULL, NULL);
}

static int xattr_read(struct aq_client *c, struct proto_req *r, void *value, size_t size)
{
	struct proto_reply rep;
	struct rpc_call *call;
	r->len = (uint32_t)MIN(size, (size_t)AQ_XATTR_VALUE_MAX);
	int rc = rpc_do(c, client_meta_server(c, r->ino), r, &rep, &call);
	if (rc)
		return rc;
	if (size) {
		if (rep.data_len > size) {
			rpc_free(call);
			return -ERANGE;
		}
		memcpy(value, rep.data, rep.data_len);
	}
	rc = (int)rep.size;
	rpc_free(call);
	return rc;
}

int aq_getxattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, const char *name, void *value,
		    size_t size)
{
	size_t n = strlen(name);
	if (n > AQ_XATTR_NAME_MAX)
		return -ERANGE;
	struct proto_req r = {.op = OP_GETXATTR, .cred = *cred_or_default(c, cred), .ino = ino, .name = name,
			      .name_len = (uint32_t)n};
	return xattr_read(c, &r, value, size);
}

int aq_listxattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, char *list, size_t size)
{
	struct proto_req r = {.op = OP_LISTXATTR, .cred = *cred_or_default(c, cred), .ino = ino};
	return xattr_read(c, &r, list, size);
}

int aq_removexattr_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, const char *name)
{
	size_t n = strlen(name);
	if (n > AQ_XATTR_NAME_MAX)
		return -ERANGE;
	struct proto_req r = {.op = OP_REMOVEXATTR, .cred = *cred_or_default(c, cred), .ino = ino, .name = name,
			      .name_len = (uint32_t)n};
	state_blind_change(c, ino);
	return rpc_do(c, client_meta_server(c, ino), &r, NULL, NULL);
}

int aq_statfs(struct aq_client *c, struct aq_statfs *out)
{
	memset(out, 0, sizeof *out);
	for (uint32_t i = 0; i < c->map.nservers; i++) {
		struct proto_req r = {.op = OP_STATFS, .cred = c->cred};
		struct proto_reply rep;
		int rc = rpc_do(c, c->map.servers[i].id, &r, &rep, NULL);
		if (rc)
			return rc;
		out->total_bytes += rep.st.total_bytes;
		out->free_bytes += rep.st.free_bytes;
		out->used_bytes += rep.st.used_bytes;
		out->files += rep.st.files;
	}
	out->servers = c->map.nservers;
	out->buckets = c->map.nbuckets;
	out->targets = c->map.ntargets;
	out->chunk_size = c->map.chunk_size;
	return 0;
}

/* ---- files ---- */

/* The open file for a reply that said "opened": OPEN's, or MKNOD's with PROTO_MKNOD_OPEN
 * (a create without O_EXCL may open a file that existed). With O_TRUNC the file is
 * truncated here, and a gets its attributes after. */
static int file_new(struct aq_client *c, const struct aq_cred *cred, struct aq_attr *a, int flags,
		    unsigned long epoch, uint32_t server, uint64_t affinity, struct aq_file **out)
{
	struct aq_file *f = aq_calloc(1, sizeof *f);
	f->c = c;
	f->cred = *cred;
	f->flags = flags;
	f->server = server;
	f->affinity = affinity;
	f->ino = a->ino;
	pthread_mutex_init(&f->open_mu, NULL);
	pthread_mutex_init(&f->ra_mu, NULL);
	f->st = state_get(c, a->ino, a, epoch);
	if ((flags & O_ACCMODE) != O_RDONLY) {
		pthread_mutex_lock(&f->st->mu);
		f->st->writers++;
		pthread_mutex_unlock(&f->st->mu);
	}
	rpc_hold_file(c, f, NULL);
	if ((flags & O_TRUNC) && (flags & O_ACCMODE) != O_RDONLY && S_ISREG(a->mode) && a->size) {
		struct aq_attr in = {.size = 0};
		int rc = aq_setattr(c, cred, a->ino, AQ_SET_SIZE, &in, a);
		if (rc) {
			aq_close(f);
			return rc;
		}
	}
	*out = f;
	return 0;
}

int aq_open_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int flags, struct aq_file **out)
{
	struct proto_req r = {.op = OP_OPEN, .cred = *cred_or_default(c, cred), .ino = ino, .flags = (uint32_t)flags};
	struct aq_attr a;
	unsigned long epoch = atomic_load(&c->size_epoch);
	uint32_t server = client_meta_server(c, ino);
	int rc = attr_call(c, server, &r, &a);
	if (rc)
		return rc;
	return file_new(c, &r.cred, &a, flags, epoch, server, rpc_affinity(&r), out);
}

/* aq_open_ino_lazy, and with data false aq_open_ino_lazy_nodata. */
static int open_lazy(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int flags, bool data,
		     struct aq_file **out)
{
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return aq_open_ino(c, cred, ino, flags, out);
	struct proto_req r = {.op = OP_OPEN, .cred = *cred_or_default(c, cred), .ino = ino, .flags = (uint32_t)flags};
	struct aq_file *f = aq_calloc(1, sizeof *f);
	f->c = c;
	f->cred = r.cred;
	f->flags = flags;
	f->server = client_meta_server(c, ino);
	f->affinity = rpc_affinity(&r);
	f->ino = ino;
	pthread_mutex_init(&f->open_mu, NULL);
	pthread_mutex_init(&f->ra_mu, NULL);
	f->open_epoch = atomic_load(&c->size_epoch);
	/* Read the file's first bytes with the OPEN, for the read that almost always
	 * follows (a loader reads each sample whole): unless the caller has them, this
	 * client has the inode open already (its writes must reach the server first), or
	 * enough bytes wait unread. */
	bool want = data;
	if (want) {
		pthread_mutex_lock(&c->files_mu);
		want = state_find_locked(c, ino) == NULL;
		pthread_mutex_unlock(&c->files_mu);
	}
	if (want && atomic_fetch_add(&c->prefetch_bytes, AQ_PREFETCH) < AQ_PREFETCH_MAX) {
		r.op = local_wanted(c) ? OP_OPEN_MAP : OP_OPEN_READ;
		r.off = 0;
		r.len = AQ_PREFETCH;
		if (r.op == OP_OPEN_MAP) {
			r.data = c->boot_id;
			r.data_len = sizeof c->boot_id;
		}
	} else if (want) {
		atomic_fetch_sub(&c->prefetch_bytes, AQ_PREFETCH);
	}
	struct wbuf w;
	wbuf_init(&w, 192);
	proto_req_encode(&w, &r);
	int err = 0;
	f->opening = rpc_start(c, f->server, r.op, &w, f->affinity, &err);
	wbuf_free(&w);
	if (!f->opening) {
		if (r.op != OP_OPEN)
			atomic_fetch_sub(&c->prefetch_bytes, AQ_PREFETCH);
		pthread_mutex_destroy(&f->open_mu);
		pthread_mutex_destroy(&f->ra_mu);
		free(f);
		return aq_open_ino(c, cred, ino, flags, out); /* the connection is down: the slow way */
	}
	rpc_hold_file(c, f, f->opening->conn);
	*out = f;
	return 0;
}

int aq_open_ino_lazy(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int flags, struct aq_file **out)
{
	return open_lazy(c, cred, ino, flags, true, out);
}

int aq_open_ino_lazy_nodata(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, int flags,
			    struct aq_file **out)
{
	return open_lazy(c, cred, ino, flags, false, out);
}

/* A lazy file's OPEN, sent again and waited for (rpc_do's retries); sets st on success.
 * Called with open_mu held. */
static int open_now(struct aq_file *f, const struct aq_cred *cred, unsigned long epoch)
{
	struct proto_req r = {.op = OP_OPEN, .cred = *cred, .ino = f->ino, .flags = (uint32_t)f->flags};
	struct aq_attr a;
	int rc = attr_call(f->c, f->server, &r, &a);
	if (!rc) {
		f->cred = *cred;
		__atomic_store_n(&f->st, state_get(f->c, f->ino, &a, epoch), __ATOMIC_RELEASE);
	}
	return rc;
}

/* Lets go of an OPEN_READ call and the bytes it brought (counted in prefetch_bytes from
 * the moment it was sent). */
static void pre_put(struct aq_client *c, struct rpc_call *call)
{
	if (!call)
		return;
	rpc_free(call);
	atomic_fetch_sub(&c->prefetch_bytes, AQ_PREFETCH);
}

/* Takes a file's OPEN_READ bytes away from it: the call that holds them, or NULL. Called
 * with open_mu held (or by the last user). */
static struct rpc_call *pre_detach(struct aq_file *f)
{
	struct rpc_call *call = f->pre;
	f->pre = NULL;
	f->pre_data = NULL;
	f->pre_len = 0;
	return call;
}

/* An OPEN_MAP's answer: the bytes it located, read from aqd's segment file, become the
 * file's first bytes as an OPEN_READ's would (held by the call, whose payload they
 * replace). Returns the call when it holds nothing: no location, or a local read that
 * failed (the first read then goes through aqd). Called with open_mu held. */
static struct rpc_call *pre_local(struct aq_file *f, struct rpc_call *call, const struct proto_reply *rep)
{
	struct proto_loc loc;
	uint8_t *mem;
	const uint8_t *data;
	if (!rep->data_len || proto_loc_get(rep->data, rep->data_len, &loc) || loc.idx != 0 || loc.in != 0 ||
	    loc.n > AQ_PREFETCH || local_read(f->c, f->ino, &loc, &mem, &data))
		return call;
	rpc_replace_payload(call, mem);
	f->pre = call;
	f->pre_data = data;
	f->pre_len = loc.n;
	f->pre_eof = loc.n >= rep->attr.size;
	return NULL;
}

/* Waits for a lazy open's OPEN or OPEN_READ (once); 0, or the open's error for every
 * later call. An OPEN_READ's bytes are kept for the first read. */
static int file_ready(struct aq_file *f)
{
	if (__atomic_load_n(&f->st, __ATOMIC_ACQUIRE))
		return 0;
	pthread_mutex_lock(&f->open_mu);
	if (f->opening) {
		struct rpc_call *call = f->opening;
		struct proto_reply rep;
		int rc = rpc_wait(call);
		bool again = rc && aq_err_unreachable(rc) && !call->answered;
		if (!rc && proto_reply_decode(call->op, call->payload, call->len, &rep))
			rc = -EPROTO;
		if (!rc) {
			struct ino_state *st = state_get(f->c, f->ino, &rep.attr, f->open_epoch);
			__atomic_store_n(&f->st, st, __ATOMIC_RELEASE);
			if (call->op != OP_OPEN && rep.size)
				f->pre_err = aq_err_from_status((uint16_t)rep.size); /* read once, logged once */
			else if (call->op == OP_OPEN_MAP)
				call = pre_local(f, call, &rep);
			else if (call->op == OP_OPEN_READ && rep.data_len <= AQ_PREFETCH) {
				f->pre = call; /* the bytes stay in the call's payload */
				f->pre_data = rep.data;
				f->pre_len = rep.data_len;
				f->pre_eof = rep.data_len >= rep.attr.size;
				call = NULL;
			}
		}
		if (call && call->op != OP_OPEN)
			pre_put(f->c, call);
		else
			rpc_free(call);
		f->opening = NULL;
		if (again) /* the connection broke under the OPEN: ask again */
			rc = open_now(f, &f->cred, f->open_epoch);
		f->open_err = rc;
	}
	int rc = f->open_err;
	pthread_mutex_unlock(&f->open_mu);
	return rc;
}

/* The bytes an OPEN_READ brought are used only while no other handle of this client has
 * the inode: its writes since the open would be missing from them. */
static bool only_handle(struct aq_client *c, struct ino_state *st)
{
	pthread_mutex_lock(&c->files_mu);
	bool alone = st->refs == 1;
	pthread_mutex_unlock(&c->files_mu);
	return alone;
}

/* The first read of a lazy file, from the bytes its OPEN_READ brought when they cover
 * it: len bytes at off, or fewer at the end of the file; *data points into them and
 * *call holds them (the caller frees it with pre_put). Once read, or once any read falls
 * outside them, they go. RA_PASS: read the usual way. */
static ssize_t pre_take(struct aq_file *f, size_t len, uint64_t off, const uint8_t **data, struct rpc_call **call)
{
	*call = NULL;
	if (!__atomic_load_n(&f->pre, __ATOMIC_ACQUIRE) && !__atomic_load_n(&f->pre_err, __ATOMIC_ACQUIRE))
		return RA_PASS;
	ssize_t got = RA_PASS;
	struct aq_client *c = f->c;
	struct ino_state *st = f->st;
	pthread_mutex_lock(&f->open_mu);
	if (f->pre_err && off < AQ_PREFETCH)
		got = f->pre_err;
	f->pre_err = 0;
	if (f->pre) {
		bool covered = off + len <= f->pre_len || (f->pre_eof && off <= f->pre_len);
		if (only_handle(c, st) && covered) {
			*data = f->pre_data + MIN(off, (uint64_t)f->pre_len);
			got = off < f->pre_len ? (ssize_t)MIN(len, (size_t)(f->pre_len - off)) : 0;
		}
		*call = pre_detach(f); /* the caller lets it go (pre_put) */
	}
	pthread_mutex_unlock(&f->open_mu);
	return got;
}

static ssize_t pre_read(struct aq_file *f, void *buf, size_t len, uint64_t off)
{
	const uint8_t *data = NULL;
	struct rpc_call *call;
	ssize_t got = pre_take(f, len, off, &data, &call);
	if (got > 0)
		memcpy(buf, data, (size_t)got);
	pre_put(f->c, call);
	return got;
}

ssize_t aq_pread_held(struct aq_file *f, size_t len, uint64_t off, const void **data, struct aq_bytes **bytes)
{
	*bytes = NULL;
	int rc = file_ready(f);
	if (rc)
		return rc;
	const uint8_t *d = NULL;
	struct rpc_call *call;
	ssize_t got = pre_take(f, len, off, &d, &call);
	if (got < 0 || got == RA_PASS) {
		pre_put(f->c, call);
		return got == RA_PASS ? -EAGAIN : got;
	}
	*data = d;
	*bytes = (struct aq_bytes *)call;
	return got;
}

ssize_t aq_open_bytes(struct aq_file *f, const void **data, bool *eof, struct aq_bytes **bytes)
{
	*bytes = NULL;
	int rc = file_ready(f);
	if (rc)
		return rc;
	ssize_t got = -EAGAIN;
	pthread_mutex_lock(&f->open_mu);
	if (f->pre && only_handle(f->c, f->st)) {
		*data = f->pre_data;
		*eof = f->pre_eof;
		got = f->pre_len;
		*bytes = (struct aq_bytes *)pre_detach(f);
	}
	pthread_mutex_unlock(&f->open_mu);
	return got;
}

void aq_bytes_free(struct aq_bytes *b)
{
	struct rpc_call *call = (struct rpc_call *)b;
	if (call)
		pre_put(call->conn->client, call);
}

int aq_file_reopen(struct aq_file *f, const struct aq_cred *cred)
{
	int rc = file_ready(f);
	if (!rc || (rc != -EACCES && rc != -EPERM))
		return rc;
	pthread_mutex_lock(&f->open_mu);
	if (!f->st)
		f->open_err = open_now(f, cred, atomic_load(&f->c->size_epoch));
	rc = f->open_err;
	pthread_mutex_unlock(&f->open_mu);
	return rc;
}

/* A MKNOD that also opens the regular file it makes (or, without AQ_CREATE_EXCL, finds),
 * with open(2) flags carried in rdev: aq_create_open's, and aq_tmpfile_open's (no name). */
static int mknod_open(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		      uint32_t mode, uint32_t flags, int open_flags, struct aq_attr *out, struct aq_file **f)
{
	struct proto_req r = {.op = OP_MKNOD, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)strlen(name),
			      .mode = S_IFREG | (mode & (07777 | AQ_MODE_UMASK_BITS)),
			      .rdev = (uint32_t)open_flags, .flags = flags | PROTO_MKNOD_OPEN};
	uint32_t server = name_server(c, parent, name);
	/* any connection will do, as long as RELEASE takes the same one */
	uint64_t affinity = atomic_fetch_add(&c->rr, 1) % c->nconns + c->nconns;
	unsigned long epoch = atomic_load(&c->size_epoch);
	struct proto_reply rep;
	int rc = rpc_do_on(c, server, &r, &rep, NULL, affinity);
	if (rc)
		return rc;
	rc = file_new(c, &r.cred, &rep.attr, open_flags, epoch, server, affinity, f);
	if (!rc && out)
		*out = rep.attr;
	return rc;
}

int aq_create_open(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		   uint32_t mode, uint32_t flags, int open_flags, struct aq_attr *out, struct aq_file **f)
{
	int rc = check_name(name);
	if (rc)
		return rc;
	if (flags & ~AQ_CREATE_EXCL)
		return -EINVAL;
	return mknod_open(c, cred, parent, name, mode, flags, open_flags, out, f);
}

int aq_tmpfile_open(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, uint32_t mode, int open_flags,
		    struct aq_attr *out, struct aq_file **f)
{
	if ((open_flags & O_ACCMODE) == O_RDONLY)
		return -EINVAL; /* as open(2): nothing could ever be in it */
	uint32_t flags = PROTO_MKNOD_TMPFILE | ((open_flags & O_EXCL) ? AQ_CREATE_EXCL : 0);
	return mknod_open(c, cred, parent, "", mode, flags, open_flags & ~(O_TMPFILE | O_CREAT | O_EXCL), out, f);
}

int aq_watch(struct aq_client *c, aq_inval_fn fn, void *arg)
{
	uint64_t id = 0;
	if (atomic_load(&c->watch_id))
		return -EBUSY;
	random_bytes(&id, sizeof id);
	id |= 1;
	c->watch_fn = fn;
	c->watch_arg = arg;
	atomic_store(&c->watch_id, id);
	/* every connection says whose it is (so our own changes are not echoed back); the
	 * first of each server's also takes the INVAL frames */
	for (uint32_t s = 0; s < c->map.nservers; s++) {
		for (uint32_t i = 0; i < c->nconns; i++) {
			struct proto_req r = {.op = OP_WATCH, .cookie = id, .flags = i ? 0 : PROTO_WATCH_DELIVER};
			int rc = rpc_do_on(c, c->map.servers[s].id, &r, NULL, NULL, i ? i : c->nconns);
			if (rc)
				return rc;
		}
	}
	atomic_store(&c->pushes_apart, c->nconns > 1);
	rpc_keeper_start(c);
	return 0;
}

/* The server answers a WATCH (it repeats the registration, which changes nothing) on the
 * connection that takes its pushes, after every push it sent there before; the receiver
 * hands a push to the callback before it reads the next frame. */
int aq_watch_sync(struct aq_client *c)
{
	uint64_t id = atomic_load(&c->watch_id);
	if (!id)
		return -EINVAL;
	for (uint32_t s = 0; s < c->map.nservers; s++) {
		struct proto_req r = {.op = OP_WATCH, .cookie = id, .flags = PROTO_WATCH_DELIVER};
		int rc = rpc_do_on(c, c->map.servers[s].id, &r, NULL, NULL, RPC_ON_PUSHES);
		if (rc)
			return rc;
	}
	return 0;
}

uint64_t aq_inval_seq(struct aq_client *c) { return atomic_load(&c->inval_seq); }

uint64_t aq_file_ino(const struct aq_file *f) { return f->ino; }

/* Puts len bytes at off into st's write buffers (sending chunks as the budget asks):
 * what aq_pwrite does once the state's lock is taken. Bytes taken, or -errno. */
static ssize_t buffer_write_locked(struct aq_client *c, struct ino_state *st, const uint8_t *p, size_t len,
				   uint64_t off)
{
	int rc = 0;
	size_t done = 0;
	uint32_t cs = st->chunk_size;
	while (done < len) {
		uint64_t pos = off + done;
		uint32_t idx = (uint32_t)(pos / cs), in = (uint32_t)(pos % cs);
		uint32_t n = (uint32_t)MIN((uint64_t)(cs - in), (uint64_t)(len - done));
		/* Over the budget, the least recently written chunks go first. A file with one
		 * chunk buffered (a sequential writer, at most a chunk) keeps
		 * it: with many such writers at the client's limit, each would otherwise send
		 * its chunk on every write. */
		while (st->nwc > 1 && atomic_load(&c->wbuf_bytes) + n > c->wbuf_max) {
			rc = flush_chunk_locked(c, st, wchunk_lru(st), false);
			if (rc)
				break;
		}
		if (rc)
			break;
		if (!st->wc)
			st->wc = aq_calloc(WCHUNKS, sizeof(*st->wc));
		uint32_t k = 0;
		while (k < st->nwc && st->wc[k]->idx != idx)
			k++;
		if (k == st->nwc && st->nwc == WCHUNKS) {
			rc = flush_chunk_locked(c, st, wchunk_lru(st), false); /* no slot for another chunk */
			if (rc)
				break;
			k = st->nwc;
		}
		if (k == st->nwc) {
			if (!st->wc[k])
				st->wc[k] = aq_calloc(1, sizeof(*st->wc[k]));
			st->nwc++;
			st->wc[k]->idx = idx;
			st->wc[k]->n = 0;
		}
		struct wchunk *w = st->wc[k];
		int64_t grew = wchunk_put(c, w, cs, in, in + n, p + done);
		atomic_fetch_add(&c->wbuf_bytes, (unsigned long)grew);
		w->used = ++st->wtick;
		done += n;
		if ((w->n == 1 && w->ext[0].lo == 0 && w->ext[0].hi == cs) || w->n > WEXTENTS) {
			rc = flush_chunk_locked(c, st, k, false); /* a whole chunk, or too many pieces */
			if (rc)
				break;
		}
	}
	if (done) {
		atomic_fetch_add(&st->wgen, 1);
		if (off + done > st->size) {
			st->size = off + done;
			pthread_cond_broadcast(&st->grew);
		}
		st->size_dirty = true;
		state_modified_locked(c, st);
		state_dirtied_locked(c, st);
	}
	return done ? (ssize_t)done : rc;
}

/* An O_DIRECT write the kernel cut in pieces (a buffer that is not page-aligned spans
 * one page more than a request holds) comes as requests sent at once, which the mount's
 * threads may take in any order. Had the last piece landed first, the size would cover
 * the bytes before it while they are not there, and a reader of an appending writer
 * read zeros (xfstests generic/465; ext4 shows all of an append or none of it). So a
 * write through an O_DIRECT handle that begins past the end, by less than 64 MiB, waits
 * a little for the size to reach it. A writer that leaves a hole waits that long once. */
#define DIO_PIECE_GAP (64u << 20)    /* pieces of one write of up to 64 MiB */
#define DIO_PIECE_WAIT_NS 20000000ll /* 20 ms */

static void dio_piece_wait_locked(struct ino_state *st, uint64_t off)
{
	if (off <= st->size || off - st->size >= DIO_PIECE_GAP)
		return;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += DIO_PIECE_WAIT_NS;
	until.tv_sec += until.tv_nsec / 1000000000;
	until.tv_nsec %= 1000000000;
	while (off > st->size && pthread_cond_timedwait(&st->grew, &st->mu, &until) == 0)
		;
}

ssize_t aq_pwrite(struct aq_file *f, const void *buf, size_t len, uint64_t off)
{
	int rc = file_ready(f);
	if (rc)
		return rc;
	struct ino_state *st = f->st;
	if ((f->flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (len > SSIZE_MAX || off + len < off || off + len > AQ_FILE_SIZE_MAX)
		return -EFBIG;
	pthread_mutex_lock(&st->mu);
	if (f->flags & O_DIRECT)
		dio_piece_wait_locked(st, off);
	/* an earlier write-back failed (ENOSPC...): say so now, as a local fs would */
	ssize_t n = st->err ? st->err : buffer_write_locked(f->c, st, buf, len, off);
	pthread_mutex_unlock(&st->mu);
	return n;
}

ssize_t aq_append(struct aq_file *f, const void *buf, size_t len, uint64_t *off_out)
{
	int rc = file_ready(f);
	if (rc)
		return rc;
	pthread_mutex_lock(&f->st->mu);
	uint64_t off = f->st->size;
	pthread_mutex_unlock(&f->st->mu);
	if (off_out)
		*off_out = off;
	return aq_pwrite(f, buf, len, off);
}

/* PUNCH_HOLE and ZERO_RANGE: [off, off + len) reads as zeros after. A chunk the range
 * covers whole, or to the end of the file, is dropped (a hole, as a truncate drops
 * chunks: no zeros are stored), with whatever this client buffered for it; the rest of
 * the range inside the file is buffered as zeros, as a write of them would be (many
 * small punches cost one chunk rewrite, not one each). With st->mu held. */
static int zero_range_locked(struct aq_client *c, struct ino_state *st, uint64_t off, uint64_t len)
{
	uint64_t cs = st->chunk_size, size = st->size, end = MIN(off + len, size);
	uint8_t *zeros = NULL;
	int rc = 0;
	for (uint64_t pos = off; !rc && pos < end;) {
		uint32_t idx = (uint32_t)(pos / cs), in = (uint32_t)(pos % cs);
		uint32_t n = (uint32_t)MIN(cs - in, end - pos);
		if (in == 0 && (n == cs || pos + n >= size)) {
			for (uint32_t k = 0; k < st->nwc; k++)
				if (st->wc[k]->idx == idx) {
					wchunk_release_locked(c, st, k);
					break;
				}
			bool committed;
			rc = chunk_write(c, st, idx, 0, NULL, 0, PROTO_CW_PUNCH, false, &committed);
			if (rc == -EINVAL)
				rc = -EOPNOTSUPP; /* a server from before PROTO_CW_PUNCH */
		} else {
			if (!zeros)
				zeros = aq_calloc(1, MIN(cs, end - off)); /* no piece is longer */
			ssize_t put = buffer_write_locked(c, st, zeros, n, pos);
			rc = put < 0 ? (int)put : 0;
		}
		pos += n;
	}
	free(zeros);
	/* read-ahead windows and local locations hold the old bytes */
	atomic_fetch_add(&st->wgen, 1);
	return rc;
}

int aq_fallocate(struct aq_file *f, int mode, uint64_t off, uint64_t len)
{
	int rc = file_ready(f);
	if (rc)
		return rc;
	int zero = mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE);
	if ((mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) ||
	    zero == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE) ||
	    (zero == FALLOC_FL_PUNCH_HOLE && !(mode & FALLOC_FL_KEEP_SIZE)))
		return -EOPNOTSUPP; /* as fallocate(2) says for these */
	if (len == 0)
		return -EINVAL;
	if ((f->flags & O_ACCMODE) == O_RDONLY)
		return -EBADF;
	if (off + len < off || off + len > AQ_FILE_SIZE_MAX)
		return -EFBIG;
	if (!zero) {
		/* nothing is reserved (aq.h), but more than is free is refused, as ext4 does
		 * (xfstests generic/213: a 157 GB fallocate with 78 GB free succeeded) */
		pthread_mutex_lock(&f->st->mu);
		uint64_t size = f->st->size;
		pthread_mutex_unlock(&f->st->mu);
		struct aq_statfs sf;
		if (off + len > size && aq_statfs(f->c, &sf) == 0 && off + len - size > sf.free_bytes)
			return -ENOSPC;
	}
	if ((mode & FALLOC_FL_KEEP_SIZE) && !zero)
		return 0; /* nothing is reserved: see aq.h */
	struct ino_state *st = f->st;
	pthread_mutex_lock(&st->mu);
	rc = st->err;
	if (!rc && zero) {
		rc = zero_range_locked(f->c, st, off, len);
		if (!rc) {
			/* the bytes changed: size and mtime (ctime with it) as a write's, committed
			 * with the next flush as a write's are */
			st->size_dirty = true;
			state_modified_locked(f->c, st);
			if (!(mode & FALLOC_FL_KEEP_SIZE) && off + len > st->size)
				st->size = off + len;
			state_dirtied_locked(f->c, st);
		}
	} else if (!rc && off + len > st->size) {
		st->size = off + len;
		st->size_dirty = true;
		state_modified_locked(f->c, st);
		atomic_fetch_add(&st->wgen, 1);
		rc = commit_size_locked(f->c, st);
	}
	pthread_mutex_unlock(&st->mu);
	return rc;
}

struct rpc_call *chunk_read_start(struct aq_client *c, uint64_t ino, uint32_t cs, uint64_t pos, uint32_t len,
				  void *dest, struct rpc_cq *cq, void *cq_arg, int *err)
{
	uint32_t idx = (uint32_t)(pos / cs), in = (uint32_t)(pos % cs);
	AQ_ASSERT(len <= cs - in);
	uint32_t target = cluster_chunk_target(&c->map, ino, idx);
	struct proto_req r = {.op = OP_CHUNK_READ, .target = target, .ino = ino, .idx = idx, .off = in, .len = len};
	struct wbuf w;
	wbuf_init(&w, 64);
	proto_req_encode(&w, &r);
	struct rpc_call *call = rpc_start_ex(c, cluster_target_by_id(&c->map, target)->server, OP_CHUNK_READ, &w, 0,
					     dest, len, cq, cq_arg, false, err);
	wbuf_free(&w);
	return call;
}

int chunk_read_finish(struct aq_client *c, uint64_t ino, uint32_t cs, uint64_t pos, uint32_t len, void *dest,
		      struct rpc_call *call, int err)
{
	uint64_t deadline = 0; /* from the first failure: a read may wait long on S3 first */
	for (int attempt = 0;; attempt++) {
		bool answered = false;
		if (call) {
			err = rpc_wait(call);
			if (!err)
				err = rpc_read_into(call);
			answered = call->answered;
			rpc_free(call);
		}
		uint32_t target = cluster_chunk_target(&c->map, ino, (uint32_t)(pos / cs));
		if (!err || answered || !aq_err_unreachable(err) ||
		    !rpc_retry_wait(c, cluster_target_by_id(&c->map, target)->server, &deadline, attempt))
			return err;
		call = chunk_read_start(c, ino, cs, pos, len, dest, NULL, NULL, &err);
	}
}

ssize_t aq_pread(struct aq_file *f, void *buf, size_t len, uint64_t off)
{
	int rc = file_ready(f);
	if (rc)
		return rc;
	ssize_t pre = pre_read(f, buf, len, off);
	if (pre != RA_PASS)
		return pre;
	struct aq_client *c = f->c;
	struct ino_state *st = f->st;
	if ((f->flags & O_ACCMODE) == O_WRONLY)
		return -EBADF;
	pthread_mutex_lock(&st->mu);
	uint64_t size = st->size;
	uint32_t cs = st->chunk_size;
	if (off >= size) {
		pthread_mutex_unlock(&st->mu);
		return 0;
	}
	len = (size_t)MIN((uint64_t)len, size - off);
	/* Read-your-writes: buffered writes in the range are laid over what the servers
	 * return, with st->mu held throughout so that none is sent (and dropped from the
	 * buffer) between the two. Flushing them instead made a writer that reads back what
	 * it wrote (a linker) pay a chunk rewrite per read. */
	bool mine = wbuf_overlay(st, NULL, off, len);
	bool local = !mine; /* read from aqd's segment files where it can (local.c) */
	if (mine && wbuf_covers(st, off, len)) {
		wbuf_overlay(st, buf, off, len); /* all of it is here: no server to ask */
		pthread_mutex_unlock(&st->mu);
		return (ssize_t)len;
	}
	if (!mine) {
		pthread_mutex_unlock(&st->mu);
		/* On aqd's machine a read this big goes to the segment file at once, before
		 * read-ahead: its size, or the kernel's own read-ahead (FUSE sends them in
		 * parallel), keeps the disk busy, and windows through aqd would only add aqd's
		 * copies (dd of 2 GiB through the mount: 0.88 -> 1.15 GB/s). Reads of another
		 * machine's client, which gets no location, keep their windows. */
		if (len >= LOCAL_FIRST_MIN && off / cs == (off + len - 1) / cs) {
			if (local_chunk_read(f, (uint32_t)(off / cs), (uint32_t)(off % cs), (uint32_t)len, buf) == 0)
				return (ssize_t)len;
			local = false; /* below, the same chunk would be asked again */
		}
		ssize_t ra = ra_read(f, buf, len, off, size, cs);
		if (ra != RA_PASS)
			return ra;
	}
	/* all chunk reads in flight at once, then collected in order */
	uint32_t nchunks = (uint32_t)((off + len - 1) / cs - off / cs + 1);
	struct rpc_call *calls_small[8];
	int errs_small[8];
	struct rpc_call **calls = nchunks <= 8 ? calls_small : aq_calloc(nchunks, sizeof *calls);
	int *errs = nchunks <= 8 ? errs_small : aq_calloc(nchunks, sizeof *errs);
	size_t pos = 0;
	for (uint32_t i = 0; i < nchunks; i++) {
		uint64_t at = off + pos;
		uint32_t n = (uint32_t)MIN((uint64_t)(cs - at % cs), (uint64_t)(len - pos));
		errs[i] = 0;
		calls[i] = NULL;
		/* on aqd's machine, from its segment file (no buffered writes to lay over) */
		if (!local || local_chunk_read(f, (uint32_t)(at / cs), (uint32_t)(at % cs), n, (uint8_t *)buf + pos))
			calls[i] = chunk_read_start(c, st->ino, cs, at, n, (uint8_t *)buf + pos, NULL, NULL, &errs[i]);
		pos += n;
	}
	pos = 0;
	for (uint32_t i = 0; i < nchunks; i++) {
		uint64_t at = off + pos;
		uint32_t n = (uint32_t)MIN((uint64_t)(cs - at % cs), (uint64_t)(len - pos));
		int e = chunk_read_finish(c, st->ino, cs, at, n, (uint8_t *)buf + pos, calls[i], errs[i]);
		if (e && !rc)
			rc = e;
		pos += n;
	}
	if (calls != calls_small) {
		free(calls);
		free(errs);
	}
	if (mine) {
		if (!rc)
			wbuf_overlay(st, buf, off, len);
		pthread_mutex_unlock(&st->mu);
	}
	return rc ? rc : (ssize_t)len;
}

/* Sends st's buffered writes and commits its size. A write-back failure is reported once,
 * by the flush or fsync that comes after it or by this one when it is this flush's own
 * (as Linux reports one to fsync); writes then go on, also once a server that was away is
 * back. Without report (a call that is no flush), a failure of its own is kept for the
 * next flush or fsync instead. With st->mu held. */
static int flush_report_locked(struct aq_client *c, struct ino_state *st, bool report)
{
	int rc = flush_commit_locked(c, st);
	if (!report) {
		if (rc && !st->err)
			st->err = rc;
		return 0;
	}
	if (st->err) {
		if (!rc)
			rc = st->err;
		st->err = 0;
	}
	return rc;
}

int aq_flush(struct aq_file *f)
{
	int rc = file_ready(f);
	if (rc)
		return rc;
	struct ino_state *st = f->st;
	pthread_mutex_lock(&st->mu);
	rc = flush_report_locked(f->c, st, true);
	pthread_mutex_unlock(&st->mu);
	return rc;
}

int aq_fsync(struct aq_file *f, int datasync)
{
	int rc = aq_flush(f);
	if (rc)
		return rc;
	/* An fdatasync needs the metadata only when the size changed (ext4's rule): past the
	 * first full sync of a file whose size stays, only the data targets sync, and the
	 * metadata log (mtime, and everyone else's changes) waits for its next sync. */
	struct ino_state *st = f->st;
	pthread_mutex_lock(&st->mu);
	uint64_t size = st->size;
	bool data_only = datasync && !st->size_dirty && size == st->synced_size;
	pthread_mutex_unlock(&st->mu);
	struct proto_req r = {.op = OP_FSYNC, .cred = f->cred, .ino = f->ino,
			      .flags = (datasync ? PROTO_FSYNC_DATASYNC : 0) | (data_only ? PROTO_FSYNC_DATA_ONLY : 0)};
	/* data and metadata of one file may sit on every server: sync them all */
	for (uint32_t i = 0; !rc && i < f->c->map.nservers; i++)
		rc = rpc_do(f->c, f->c->map.servers[i].id, &r, NULL, NULL);
	if (!rc && !data_only) {
		pthread_mutex_lock(&st->mu);
		st->synced_size = size;
		pthread_mutex_unlock(&st->mu);
	}
	return rc;
}

bool aq_file_direct(const struct aq_file *f) { return f->flags & O_DIRECT; }

int aq_file_getattr(struct aq_file *f, struct aq_attr *out)
{
	return aq_getattr(f->c, &f->cred, f->ino, out);
}

int aq_file_setattr(struct aq_file *f, const struct aq_cred *cred, uint32_t mask, const struct aq_attr *in,
		    struct aq_attr *out)
{
	int rc = file_ready(f);
	if (rc)
		return rc;
	if ((f->flags & O_ACCMODE) != O_RDONLY)
		mask |= AQ_SET_BY_HANDLE;
	return aq_setattr(f->c, cred, f->ino, mask, in, out);
}

bool aq_file_sxid(struct aq_file *f)
{
	return file_ready(f) || atomic_load(&f->st->sxid);
}

/* ---- SEEK_DATA and SEEK_HOLE ---- */

/* The chunks of ino at or past chunk from, in order, max at most, from every server:
 * their indexes to idx[], their bytes to len[]. Returns how many, or -errno. */
static int chunks_from(struct aq_client *c, uint64_t ino, uint32_t from, uint32_t max, uint32_t *idx, uint32_t *len)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < c->map.nservers; i++) {
		struct proto_req r = {.op = OP_CHUNKS, .ino = ino, .idx = from, .max = max};
		struct proto_reply rep;
		struct rpc_call *call = NULL;
		int rc = rpc_do(c, c->map.servers[i].id, &r, &rep, &call);
		if (!rc && (rep.data_len % PROTO_CHUNK_SIZE || rep.data_len / PROTO_CHUNK_SIZE > max))
			rc = -EPROTO;
		for (uint32_t k = 0; !rc && k < rep.data_len / PROTO_CHUNK_SIZE; k++) {
			uint32_t x = get_le32(rep.data + k * PROTO_CHUNK_SIZE), at = n;
			while (at > 0 && idx[at - 1] > x) /* servers' lists merged, the first max kept */
				at--;
			if (at >= max)
				continue;
			uint32_t keep = MIN(n, max - 1);
			memmove(idx + at + 1, idx + at, (keep - at) * sizeof *idx);
			memmove(len + at + 1, len + at, (keep - at) * sizeof *len);
			idx[at] = x;
			len[at] = get_le32(rep.data + k * PROTO_CHUNK_SIZE + 4);
			n = keep + 1;
		}
		rpc_free(call);
		if (rc)
			return rc;
	}
	return (int)n;
}

int64_t aq_file_seek(struct aq_file *f, int64_t off, int whence)
{
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	int rc = file_ready(f);
	if (rc)
		return rc;
	/* what this client holds for the file counts, as ext4 counts dirty pages: sent first
	 * (an error is the next flush's or fsync's to report, not this call's) */
	struct ino_state *st = f->st;
	pthread_mutex_lock(&st->mu);
	flush_report_locked(f->c, st, false);
	uint64_t size = st->size, cs = st->chunk_size;
	pthread_mutex_unlock(&st->mu);
	if (off < 0 || (uint64_t)off >= size)
		return -ENXIO;
	if (!cs)
		return whence == SEEK_DATA ? off : (int64_t)size;
	enum { STEP = 512 };
	uint32_t idx[STEP], len[STEP], from = (uint32_t)MIN((uint64_t)off / cs, UINT32_MAX);
	uint64_t pos = (uint64_t)off; /* SEEK_HOLE: no hole before it */
	for (;;) {
		int n = chunks_from(f->c, f->ino, from, STEP, idx, len);
		if (n < 0)
			return n;
		for (int k = 0; k < n; k++) {
			uint64_t start = idx[k] * cs, end = MIN(start + len[k], size);
			if (start >= size)
				break;
			if (end <= (uint64_t)off)
				continue;
			if (whence == SEEK_DATA)
				return (int64_t)MAX((uint64_t)off, start);
			if (start > pos)
				return (int64_t)pos; /* a chunk never written */
			pos = MAX(pos, end);
			if (end < MIN(start + cs, size))
				return (int64_t)pos; /* the chunk's bytes end before the chunk does */
		}
		if (n < STEP || idx[n - 1] == UINT32_MAX)
			break;
		from = idx[n - 1] + 1;
	}
	return whence == SEEK_DATA ? -ENXIO : (int64_t)MIN(pos, size); /* the end is a hole */
}

/* ---- locks (src/server/locks.c keeps them) ---- */

static struct proto_req lock_req(uint64_t ino, uint64_t owner, uint32_t flags, uint64_t wait_id,
				 const struct aq_lock *lk)
{
	return (struct proto_req){.op = OP_LOCK, .ino = ino, .cookie = owner, .mode = lk->type, .rdev = lk->pid,
				  .flags = flags, .off = lk->start, .size = lk->end, .time_ns = (int64_t)wait_id};
}

/* A connection that broke under a lock call: the server dropped a wait queued through it,
 * and cannot say whether the call ran; the answer fcntl(2) gives when a remote locking
 * protocol fails. */
static int lock_err(int rc) { return aq_err_unreachable(rc) || rc == -ENOTCONN ? -ENOLCK : rc; }

static int lock_call(struct aq_client *c, uint64_t ino, uint64_t owner, uint32_t flags, uint64_t wait_id,
		     struct aq_lock *lk)
{
	struct proto_req r = lock_req(ino, owner, flags, wait_id, lk);
	struct proto_reply rep;
	struct rpc_call *call = NULL;
	int rc = rpc_do(c, client_meta_server(c, ino), &r, &rep, &call);
	if (!rc && (flags & AQ_LOCK_TEST))
		rc = proto_lock_get(rep.data, rep.data_len, lk);
	rpc_free(call);
	return lock_err(rc);
}

/* Notes that owner takes a lock through f, for f's close to drop; before it is asked
 * for, so that a close racing the grant still drops it. */
static void locker_add(struct aq_file *f, uint64_t owner, uint32_t flags, const struct aq_lock *lk)
{
	bool flock = flags & AQ_LOCK_FLOCK;
	if (lk->type == AQ_LK_UN || (flags & AQ_LOCK_TEST))
		return;
	pthread_mutex_lock(&f->st->mu);
	bool known = false;
	for (uint32_t i = 0; i < f->nlockers && !known; i++)
		known = f->lockers[i].owner == owner && f->lockers[i].flock == flock;
	if (!known && !f->nlockers)
		f->st->lockers++;
	if (!known) {
		f->lockers = aq_realloc(f->lockers, (f->nlockers + 1) * sizeof *f->lockers);
		f->lockers[f->nlockers++] = (struct file_locker){owner, flock};
	}
	pthread_mutex_unlock(&f->st->mu);
}

int aq_file_lock(struct aq_file *f, uint64_t owner, uint32_t flags, uint64_t wait_id, struct aq_lock *lk)
{
	if (flags & ~(AQ_LOCK_WAIT | AQ_LOCK_FLOCK | AQ_LOCK_TEST))
		return -EINVAL;
	int rc = file_ready(f);
	if (rc)
		return rc;
	locker_add(f, owner, flags, lk);
	return lock_call(f->c, f->ino, owner, flags, wait_id, lk);
}

/* A wait in flight: what to send again when its connection breaks, and whom to tell. */
struct lock_async {
	aq_lock_done_fn done;
	void *arg;
	struct wbuf req;
	uint32_t server;
	uint64_t affinity, deadline;
	int attempt;
};

static void lock_async_free(struct lock_async *la)
{
	wbuf_free(&la->req);
	free(la);
}

/* Sends la's wait, again after its connection broke (a restarted server holds the locks
 * it held, locks.c, and takes the wait again), trying until the reconnect window is spent
 * (rpc_retry_wait); 0 once it is out. */
static int lock_async_send(struct aq_client *c, struct lock_async *la)
{
	for (;; la->attempt++) {
		int rc;
		if (rpc_start_ex(c, la->server, OP_LOCK, &la->req, la->affinity, NULL, 0, &c->lk_cq, la, false, &rc))
			return 0;
		if (!aq_err_unreachable(rc) || !rpc_retry_wait(c, la->server, &la->deadline, la->attempt))
			return rc;
	}
}

static void *lock_main(void *arg)
{
	struct aq_client *c = arg;
	struct rpc_cq *cq = &c->lk_cq;
	pthread_mutex_lock(&cq->mu);
	for (;;) {
		while (!cq->done.head && !c->lk_stop)
			pthread_cond_wait(&cq->cv, &cq->mu);
		if (c->lk_stop)
			break;
		struct rpc_call *call = rpc_list_pop(&cq->done);
		pthread_mutex_unlock(&cq->mu);
		struct lock_async *la = call->cq_arg;
		int rc = call->status;
		bool broke = (aq_err_unreachable(rc) || rc == -ENOTCONN) && !call->answered;
		rpc_free(call);
		if (broke && !(rc = lock_async_send(c, la)))
			la = NULL; /* out again */
		if (la) {
			la->done(la->arg, lock_err(rc));
			lock_async_free(la);
		}
		pthread_mutex_lock(&cq->mu);
	}
	pthread_mutex_unlock(&cq->mu);
	return NULL;
}

/* Waits answered after the lock thread stopped (aq_disconnect, once no reply can come). */
static void lock_calls_free(struct aq_client *c)
{
	for (struct rpc_call *call; (call = rpc_cq_pop(&c->lk_cq, false));) {
		lock_async_free(call->cq_arg);
		rpc_free(call);
	}
	rpc_cq_destroy(&c->lk_cq);
}

static void lock_thread_stop(struct aq_client *c)
{
	pthread_mutex_lock(&c->lk_cq.mu);
	c->lk_stop = true;
	bool running = c->lk_running;
	pthread_cond_broadcast(&c->lk_cq.cv);
	pthread_mutex_unlock(&c->lk_cq.mu);
	if (running)
		pthread_join(c->lk_thread, NULL);
}

int aq_file_lock_async(struct aq_file *f, uint64_t owner, uint32_t flags, uint64_t wait_id, const struct aq_lock *lk,
		       aq_lock_done_fn done, void *arg)
{
	if (flags & ~(AQ_LOCK_WAIT | AQ_LOCK_FLOCK))
		return -EINVAL;
	int rc = file_ready(f);
	if (rc)
		return rc;
	struct aq_client *c = f->c;
	pthread_mutex_lock(&c->lk_cq.mu);
	if (!c->lk_running && !c->lk_stop && !pthread_create(&c->lk_thread, NULL, lock_main, c))
		c->lk_running = true;
	bool running = c->lk_running;
	pthread_mutex_unlock(&c->lk_cq.mu);
	if (!running)
		return -ENOLCK;
	locker_add(f, owner, flags, lk);
	struct proto_req r = lock_req(f->ino, owner, flags, wait_id, lk);
	struct lock_async *la = aq_calloc(1, sizeof *la);
	*la = (struct lock_async){.done = done, .arg = arg, .server = client_meta_server(c, f->ino),
				  .affinity = rpc_affinity(&r)};
	wbuf_init(&la->req, 96);
	proto_req_encode(&la->req, &r);
	/* the caller waits for a server that is away, as every call does (rpc_do) */
	if ((rc = lock_async_send(c, la))) {
		lock_async_free(la);
		return lock_err(rc);
	}
	return 0;
}

int aq_lock_cancel(struct aq_client *c, uint64_t ino, uint64_t wait_id)
{
	struct aq_lock lk = {.type = AQ_LK_UN};
	return lock_call(c, ino, 0, PROTO_LOCK_CANCEL, wait_id, &lk);
}

static int unlock_all(struct aq_file *f, uint64_t owner, bool flock)
{
	struct aq_lock lk = {.type = AQ_LK_UN, .start = 0, .end = AQ_LK_END};
	return lock_call(f->c, f->ino, owner, flock ? AQ_LOCK_FLOCK : 0, 0, &lk);
}

int aq_file_unlock_owner(struct aq_file *f, uint64_t owner)
{
	/* a lazy open not waited on yet has no state of its own: the inode's, if another
	 * handle of this client has it */
	struct ino_state *st = __atomic_load_n(&f->st, __ATOMIC_ACQUIRE);
	struct ino_state *ref = st ? NULL : state_ref(f->c, f->ino), *use = st ? st : ref;
	bool any = false;
	if (use) {
		pthread_mutex_lock(&use->mu);
		any = use->lockers;
		pthread_mutex_unlock(&use->mu);
	}
	if (ref)
		state_put(f->c, ref);
	return any ? unlock_all(f, owner, false) : 0;
}

/* The close's part: every owner that locked through f lets go of the inode. */
static void file_unlock(struct aq_file *f)
{
	if (!f->nlockers)
		return;
	for (uint32_t i = 0; i < f->nlockers; i++) {
		int rc = unlock_all(f, f->lockers[i].owner, f->lockers[i].flock);
		if (rc)
			log_warn("inode %llu: dropping a lock at close: %s", (unsigned long long)f->ino, aq_strerror(rc));
	}
	pthread_mutex_lock(&f->st->mu);
	f->st->lockers--;
	pthread_mutex_unlock(&f->st->mu);
	free(f->lockers);
}

int aq_close(struct aq_file *f)
{
	if (!f)
		return 0;
	int rc = aq_flush(f);
	if (f->st)
		file_unlock(f);
	pre_put(f->c, pre_detach(f));
	if (f->st && (f->flags & O_ACCMODE) != O_RDONLY) {
		pthread_mutex_lock(&f->st->mu);
		f->st->writers--; /* its flush sent what it deferred */
		pthread_mutex_unlock(&f->st->mu);
	}
	if (f->st) { /* the server holds it open (a lazy open that failed never was) */
		struct proto_req r = {.op = OP_RELEASE, .cred = f->cred, .ino = f->ino};
		rpc_release_file(f->c, f, &r);
		state_put(f->c, f->st);
	}
	rpc_unhold_file(f->c, f);
	ra_free(f);
	local_chunks_free(f);
	pthread_mutex_destroy(&f->open_mu);
	pthread_mutex_destroy(&f->ra_mu);
	free(f);
	return rc;
}

/* ---- paths ---- */

/* Resolves path to its parent directory's attributes and the last component. */
static int resolve_parent(struct aq_client *c, const char *path, struct aq_attr *parent, char *last)
{
	char buf[AQ_PATH_MAX];
	if (strlen(path) >= sizeof buf)
		return -ENAMETOOLONG;
	snprintf(buf, sizeof buf, "%s", path);
	int rc = aq_getattr(c, NULL, AQ_ROOT, parent);
	if (rc)
		return rc;
	char *save = NULL, *comp = strtok_r(buf, "/", &save);
	last[0] = 0;
	while (comp) {
		char *next = strtok_r(NULL, "/", &save);
		if (!next) {
			if (strlen(comp) > AQ_NAME_MAX)
				return -ENAMETOOLONG;
			strcpy(last, comp);
			break;
		}
		if (strcmp(comp, ".")) {
			struct aq_attr a;
			rc = aq_lookup(c, NULL, parent->ino, comp, &a);
			if (rc)
				return rc;
			if (!S_ISDIR(a.mode))
				return -ENOTDIR;
			*parent = a;
		}
		comp = next;
	}
	return 0;
}

int aq_resolve(struct aq_client *c, const char *path, struct aq_attr *out)
{
	struct aq_attr parent;
	char last[AQ_NAME_MAX + 1];
	int rc = resolve_parent(c, path, &parent, last);
	if (rc)
		return rc;
	if (!last[0] || !strcmp(last, ".")) {
		*out = parent;
		return 0;
	}
	return aq_lookup(c, NULL, parent.ino, last, out);
}

int aq_stat(struct aq_client *c, const char *path, struct aq_attr *out) { return aq_resolve(c, path, out); }

int aq_mkdir(struct aq_client *c, const char *path, uint32_t mode)
{
	struct aq_attr parent;
	char last[AQ_NAME_MAX + 1];
	int rc = resolve_parent(c, path, &parent, last);
	if (rc)
		return rc;
	if (!last[0])
		return -EEXIST;
	return aq_mkdir_at(c, NULL, parent.ino, last, mode, NULL);
}

int aq_unlink(struct aq_client *c, const char *path)
{
	struct aq_attr parent;
	char last[AQ_NAME_MAX + 1];
	int rc = resolve_parent(c, path, &parent, last);
	return rc ? rc : aq_unlink_at(c, NULL, parent.ino, last);
}

int aq_rmdir(struct aq_client *c, const char *path)
{
	struct aq_attr parent;
	char last[AQ_NAME_MAX + 1];
	int rc = resolve_parent(c, path, &parent, last);
	if (rc)
		return rc;
	if (!last[0])
		return -EBUSY;
	return aq_rmdir_at(c, NULL, parent.ino, last);
}

int aq_rename(struct aq_client *c, const char *from, const char *to)
{
	struct aq_attr p1, p2;
	char l1[AQ_NAME_MAX + 1], l2[AQ_NAME_MAX + 1];
	int rc = resolve_parent(c, from, &p1, l1);
	if (!rc)
		rc = resolve_parent(c, to, &p2, l2);
	if (rc)
		return rc;
	if (!l1[0] || !l2[0])
		return -EBUSY;
	return aq_rename_at(c, NULL, p1.ino, l1, p2.ino, l2, 0);
}

int aq_open(struct aq_client *c, const char *path, int flags, uint32_t mode, struct aq_file **out)
{
	struct aq_attr parent, a;
	char last[AQ_NAME_MAX + 1];
	int rc = resolve_parent(c, path, &parent, last);
	if (rc)
		return rc;
	if (!last[0])
		a = parent;
	else
		rc = aq_lookup(c, NULL, parent.ino, last, &a);
	if (rc == -ENOENT && (flags & O_CREAT)) {
		rc = aq_mknod(c, NULL, parent.ino, last, S_IFREG | (mode & 07777), 0,
			      (flags & O_EXCL) ? AQ_CREATE_EXCL : 0, &a);
		if (rc == -EEXIST && !(flags & O_EXCL))
			rc = aq_lookup(c, NULL, parent.ino, last, &a);
		else if (!rc)
			flags &= ~O_TRUNC;
	} else if (!rc && (flags & O_CREAT) && (flags & O_EXCL)) {
		return -EEXIST;
	}
	if (rc)
		return rc;
	if (S_ISDIR(a.mode) && (flags & O_ACCMODE) != O_RDONLY)
		return -EISDIR;
	return aq_open_ino(c, NULL, a.ino, flags, out);
}

int aq_changes_ino(struct aq_client *c, const struct aq_cred *cred, uint64_t dir, uint64_t cursor,
		   struct aq_change *out, uint32_t max, uint64_t *next)
{
	if (max == 0)
		return -EINVAL;
	struct proto_req r = {.op = OP_CHANGES, .cred = *cred_or_default(c, cred), .ino = dir, .cookie = cursor,
			      .max = MIN(max, (uint32_t)PROTO_READDIR_MAX)};
	struct proto_reply rep;
	struct rpc_call *call;
	int rc = rpc_do(c, client_meta_server(c, dir), &r, &rep, &call);
	if (rc)
		return rc;
	struct rbuf rb;
	rbuf_init(&rb, rep.entries, rep.entries_len);
	uint32_t n = 0;
	for (; n < rep.count && n < max; n++) {
		struct proto_change ch;
		if (proto_change_get(&rb, &ch) || ch.name_len > AQ_NAME_MAX) {
			rc = -EPROTO;
			break;
		}
		out[n].ino = ch.ino;
		out[n].cursor = ch.ts;
		memcpy(out[n].name, ch.name, ch.name_len);
		out[n].name[ch.name_len] = 0;
	}
	if (!rc && rep.count > max)
		rc = -EPROTO;
	*next = rep.next;
	rpc_free(call);
	return rc ? rc : (int)n;
}

int aq_changes(struct aq_client *c, const char *dir, uint64_t cursor, struct aq_change *out, uint32_t max,
	       uint64_t *next)
{
	struct aq_attr a;
	int rc = aq_resolve(c, dir, &a);
	if (rc)
		return rc;
	if (!S_ISDIR(a.mode))
		return -ENOTDIR;
	return aq_changes_ino(c, NULL, a.ino, cursor, out, max, next);
}

/* ---- asynchronous calls ---- */

struct aq_pending {
	struct aq_client *c;
	struct rpc_call *call;
	uint16_t op;
	int err; /* set when the request could not even be sent */
	unsigned long epoch; /* size epoch when sent, for overlay_local */
	/* a LOOKUP or GETATTR, to ask again if its connection fails */
	struct aq_cred cred;
	uint64_t ino; /* the inode, or the lookup's parent */
	char *name;
};

static int pending_start(struct aq_client *c, uint32_t server, const struct proto_req *r, struct aq_pending **out)
{
	struct aq_pending *p = aq_calloc(1, sizeof *p);
	/* not numbered: an asynchronous call is never sent again (its caller hears
	 * ENOTCONN), so aqd need not keep a record of it */
	struct wbuf w;
	wbuf_init(&w, 128 + r->name_len + r->name2_len);
	proto_req_encode(&w, r);
	p->c = c;
	p->op = r->op;
	p->epoch = atomic_load(&c->size_epoch);
	if (r->op == OP_LOOKUP || r->op == OP_GETATTR) {
		p->cred = r->cred;
		p->ino = r->op == OP_LOOKUP ? r->parent : r->ino;
		p->name = r->op == OP_LOOKUP ? aq_strdup(r->name) : NULL; /* aq_lookup_start: a C string */
	}
	/* One thread's async calls share a connection and are held back briefly, so a burst
	 * of them leaves as one BATCH frame (and a run of creates becomes one write batch). */
	uint64_t affinity = rpc_affinity(r);
	if (!affinity)
		affinity = (uint64_t)pthread_self() | 1;
	p->call = rpc_start_ex(c, server, r->op, &w, affinity, NULL, 0, NULL, NULL, true, &p->err);
	wbuf_free(&w);
	*out = p;
	return 0;
}

int aq_wait(struct aq_pending *p, struct aq_attr *attr)
{
	int rc = p->err;
	bool answered = false;
	if (p->call) {
		rc = rpc_wait(p->call);
		answered = p->call->answered;
		if (!rc && attr) {
			struct proto_reply rep;
			rc = proto_reply_decode(p->op, p->call->payload, p->call->len, &rep);
			if (!rc) {
				*attr = rep.attr;
				if (p->op == OP_LOOKUP || p->op == OP_GETATTR)
					overlay_local(p->c, attr, p->epoch);
			}
		}
		rpc_free(p->call);
	}
	if (rc && aq_err_unreachable(rc) && !answered && (p->op == OP_LOOKUP || p->op == OP_GETATTR)) {
		/* it changes nothing: asked again the synchronous way, which waits for a
		 * restarting server (read_many's lookups failed with ENOTCONN across a restart) */
		struct aq_attr a;
		rc = p->op == OP_LOOKUP ? aq_lookup(p->c, &p->cred, p->ino, p->name, &a) : aq_getattr(p->c, &p->cred, p->ino, &a);
		if (!rc && attr)
			*attr = a;
	}
	free(p->name);
	free(p);
	return rc;
}

int aq_lookup_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		    struct aq_pending **out)
{
	size_t n = strlen(name);
	if (n > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	struct proto_req r = {.op = OP_LOOKUP, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)n};
	return pending_start(c, name_server(c, parent, name), &r, out);
}

int aq_getattr_start(struct aq_client *c, const struct aq_cred *cred, uint64_t ino, struct aq_pending **out)
{
	struct proto_req r = {.op = OP_GETATTR, .cred = *cred_or_default(c, cred), .ino = ino};
	return pending_start(c, client_meta_server(c, ino), &r, out);
}

int aq_mknod_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name, uint32_t mode,
		   uint32_t rdev, uint32_t flags, struct aq_pending **out)
{
	int rc = check_name(name);
	if (rc)
		return rc;
	struct proto_req r = {.op = OP_MKNOD, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)strlen(name), .mode = mode, .rdev = rdev, .flags = flags};
	return pending_start(c, name_server(c, parent, name), &r, out);
}

int aq_unlink_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		    struct aq_pending **out)
{
	size_t n = strlen(name);
	if (n > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	struct proto_req r = {.op = OP_UNLINK, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)n};
	return pending_start(c, name_server(c, parent, name), &r, out);
}

int aq_rename_start(struct aq_client *c, const struct aq_cred *cred, uint64_t parent, const char *name,
		    uint64_t newparent, const char *newname, uint32_t flags, struct aq_pending **out)
{
	if (strlen(name) > AQ_NAME_MAX || strlen(newname) > AQ_NAME_MAX)
		return -ENAMETOOLONG;
	struct proto_req r = {.op = OP_RENAME, .cred = *cred_or_default(c, cred), .parent = parent, .name = name,
			      .name_len = (uint32_t)strlen(name), .newparent = newparent, .name2 = newname,
			      .name2_len = (uint32_t)strlen(newname), .flags = flags};
	return pending_start(c, name_server(c, parent, name), &r, out);
}

/*
 * server.c - request dispatch for aqd. Each frame is decoded (proto_req_decode checks
 * every length; a malformed frame never reaches the stores), authenticated connections
 * only, then handed to the metadata or data layer. Replies carry Aquifer status codes.
 */
#include "server/server.h"
#include "common/auth.h"
#include "server/locks.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#define OPEN_TABLE_SIZE 4096
/* A restarted aqd keeps the locks held before for their clients this long: a client
 * connects again within a second or so (its keeper), NFS waits 90 s. */
#define LOCK_GRACE_NS (30ull * 1000000000ull)
#define RUNNING_MAX 256 /* numbered changes running at once: workers, loop and a batch's creates */

/* A file a connection held open when it broke: its client may name it again (REOPEN)
 * until `until` (aq_mono_ns). */
struct late_open {
	uint64_t ino, until;
};

struct open_ent {
	uint64_t ino;
	uint32_t count;
	struct open_ent *next;
};

struct server {
	struct server_options opt;
	struct cluster_map map;
	struct meta_store *meta;
	struct data_store *data;
	struct net_server *net;
	uint32_t nlocal;                    /* targets of this server */
	uint32_t local_targets[AQ_TARGETS_MAX];
	pthread_mutex_t open_mu;            /* guards open_tab */
	struct open_ent *open_tab[OPEN_TABLE_SIZE];
	pthread_rwlock_t unnamed_rw;        /* read: an unnamed file is made and not yet held
					     * open; write: the collector checks an orphan */
	pthread_t gc_thread;
	pthread_mutex_t gc_mu;
	pthread_cond_t gc_cond;
	bool gc_stop;
	struct tier *tier;
	atomic_uint tier_busy;              /* TIER requests that may wait on S3, running now */
	pthread_mutex_t watch_mu;           /* guards the watchers list */
	struct sconn *watchers;
	atomic_uint nwatchers;
	int boot_err;                       /* aq_boot_id's: no OPEN_MAP locations when set */
	uint8_t boot_id[AQ_BOOT_ID_SIZE];
	uint16_t exit_after;                /* tests: $AQ_TEST_EXIT_AFTER (see server_start) */
	uint16_t hold_first;                /* tests: $AQ_TEST_HOLD_FIRST (see server_start) */
	uint16_t refuse;                    /* tests: $AQ_TEST_REFUSE (see server_start) */
	bool fail_meta_sync;                /* tests: $AQ_TEST_FAIL_META_SYNC */
	uint32_t fail_target_sync;          /* tests: $AQ_TEST_FAIL_TARGET_SYNC (target id + 1; 0: none) */
	uint32_t gc_pause_ms;               /* tests: $AQ_TEST_GC_PAUSE_MS */
	uint32_t hold_ms;
	atomic_bool held;
	pthread_mutex_t late_mu;            /* guards late, nlate */
	struct late_open *late;             /* orphans found at start, and files held open
					     * through a connection that broke: in the order
					     * added, each until its REOPEN deadline */
	uint32_t nlate, late_cap;
	pthread_mutex_t running_mu;         /* guards running, nrunning */
	pthread_cond_t running_done;
	struct meta_txn running[RUNNING_MAX];
	uint32_t nrunning;
	struct lock_table *locks;           /* fcntl and flock locks (locks.c) */
	uint64_t lock_grace_ns;             /* how long a restart keeps locks for their clients */
};

/* Per connection: authentication state, the inodes it holds open, and whether its
 * client watches for changes (WATCH). */
struct sconn {
	bool authed;
	uint8_t nonce[PROTO_NONCE_SIZE];
	pthread_mutex_t mu;
	uint64_t *opens;
	uint32_t nopens, cap;
	struct net_conn *nc;
	uint64_t client_id;         /* from WATCH: every connection of one client says the same */
	bool watching;              /* on the watchers list: INVAL frames go here */
	struct sconn *wprev, *wnext;
};

/* ---- invalidations: what a request changed, pushed to the clients that cache ----
 * A FUSE mount lets the kernel cache entries and attributes for a long time; it stays
 * coherent because every change made through any other client is pushed to it. While a
 * request runs, the names and inodes it changed collect in a per-thread buffer; before
 * the reply leaves, they go to every watching connection of another client. Pushing
 * first means that once a writer hears "done", the invalidation is already on its way. */
static __thread struct wbuf t_inval;

static bool someone_watches(struct server *s) { return atomic_load(&s->nwatchers) > 0; }

static void inval_inode(struct server *s, uint64_t ino)
{
	tier_note_change(s->tier, ino); /* relatime: mtime may be newer than atime now */
	if (!someone_watches(s))
		return;
	if (!t_inval.p)
		wbuf_init(&t_inval, 256);
	proto_inval_inode(&t_inval, ino);
}

static void inval_entry(struct server *s, uint64_t parent, const char *name, uint32_t len)
{
	if (!someone_watches(s))
		return;
	if (!t_inval.p)
		wbuf_init(&t_inval, 256);
	proto_inval_entry(&t_inval, parent, name, len);
}

/* Whether watcher w belongs to another client than the connection origin. */
static bool other_client(const struct sconn *w, const struct sconn *origin)
{
	return w != origin && !(origin->client_id && w->client_id == origin->client_id);
}

/* The inode a name points at, when another client watches and would want to hear that it
 * changed (its link count, its ctime). A lone mount's own unlinks and renames pay nothing:
 * before, its other connections (not on the list) counted it as someone else. */
static uint64_t victim_of(struct server *s, struct sconn *sc, uint64_t parent, const char *name, uint32_t len)
{
	if (!someone_watches(s))
		return 0;
	bool others = false;
	pthread_mutex_lock(&s->watch_mu);
	for (struct sconn *w = s->watchers; w && !others; w = w->wnext)
		others = other_client(w, sc);
	pthread_mutex_unlock(&s->watch_mu);
	if (!others)
		return 0;
	static const struct aq_cred root = {0};
	struct aq_attr a;
	return meta_lookup(s->meta, &root, parent, name, len, &a) ? 0 : a.ino;
}

static void inval_push(struct server *s, struct sconn *origin)
{
	if (!t_inval.len)
		return;
	struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = OP_INVAL, .flags = PROTO_F_PUSH};
	pthread_mutex_lock(&s->watch_mu);
	for (struct sconn *w = s->watchers; w; w = w->wnext)
		if (other_client(w, origin))
			net_send_nowait(w->nc, &h, t_inval.p, t_inval.len); /* a stuck watcher is closed */
	pthread_mutex_unlock(&s->watch_mu);
	t_inval.len = 0;
	if (t_inval.cap > (1u << 20)) {
		wbuf_free(&t_inval);
		memset(&t_inval, 0, sizeof t_inval);
	}
}

/* Who owns the locks a connection takes: its client, once it said who it is (WATCH,
 * client_id); before, the connection itself. */
static uint64_t lock_key(const struct sconn *sc, uint64_t client_id)
{
	return client_id ? client_id : (uint64_t)(uintptr_t)sc;
}

static uint64_t lock_client(const struct sconn *sc) { return lock_key(sc, sc->client_id); }

static void lock_grants_send(void);

static void watch(struct server *s, struct sconn *sc, uint64_t client_id, bool deliver)
{
	if (client_id != sc->client_id) { /* the locks it takes are its client's from now on */
		locks_attach(s->locks, lock_key(sc, client_id), client_id != 0);
		locks_detach(s->locks, lock_client(sc), NULL);
		lock_grants_send();
	}
	pthread_mutex_lock(&s->watch_mu);
	sc->client_id = client_id;
	if (deliver && !sc->watching) {
		sc->watching = true;
		sc->wprev = NULL;
		sc->wnext = s->watchers;
		if (s->watchers)
			s->watchers->wprev = sc;
		s->watchers = sc;
		atomic_fetch_add(&s->nwatchers, 1);
	}
	pthread_mutex_unlock(&s->watch_mu);
}

static void unwatch(struct server *s, struct sconn *sc)
{
	pthread_mutex_lock(&s->watch_mu);
	if (sc->watching) {
		if (sc->wprev)
			sc->wprev->wnext = sc->wnext;
		else
			s->watchers = sc->wnext;
		if (sc->wnext)
			sc->wnext->wprev = sc->wprev;
		sc->watching = false;
		atomic_fetch_sub(&s->nwatchers, 1);
	}
	pthread_mutex_unlock(&s->watch_mu);
}

static void open_ref(struct server *s, uint64_t ino, int delta)
{
	pthread_mutex_lock(&s->open_mu);
	struct open_ent **pp = &s->open_tab[ino % OPEN_TABLE_SIZE];
	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->next;
	if (delta > 0) {
		if (!*pp) {
			*pp = aq_calloc(1, sizeof **pp);
			(*pp)->ino = ino;
		}
		(*pp)->count++;
	} else if (*pp && --(*pp)->count == 0) {
		struct open_ent *e = *pp;
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&s->open_mu);
}

static bool is_open(struct server *s, uint64_t ino)
{
	pthread_mutex_lock(&s->open_mu);
	struct open_ent *e = s->open_tab[ino % OPEN_TABLE_SIZE];
	while (e && e->ino != ino)
		e = e->next;
	pthread_mutex_unlock(&s->open_mu);
	return e != NULL;
}

static void conn_track_open(struct server *s, struct sconn *sc, uint64_t ino)
{
	pthread_mutex_lock(&sc->mu);
	if (sc->nopens == sc->cap) {
		sc->cap = sc->cap ? 2 * sc->cap : 16;
		sc->opens = aq_realloc(sc->opens, sc->cap * sizeof *sc->opens);
	}
	sc->opens[sc->nopens++] = ino;
	pthread_mutex_unlock(&sc->mu);
	open_ref(s, ino, +1);
}

static void conn_track_release(struct server *s, struct sconn *sc, uint64_t ino)
{
	bool found = false;
	pthread_mutex_lock(&sc->mu);
	for (uint32_t i = 0; i < sc->nopens; i++)
		if (sc->opens[i] == ino) {
			sc->opens[i] = sc->opens[--sc->nopens];
			found = true;
			break;
		}
	pthread_mutex_unlock(&sc->mu);
	if (found)
		open_ref(s, ino, -1);
}

static bool local_target(struct server *s, uint32_t target)
{
	for (uint32_t i = 0; i < s->nlocal; i++)
		if (s->local_targets[i] == target)
			return true;
	return false;
}

/* Logs a request that failed, unless the error is an answer a client expects to get
 * (ERANGE: a getxattr or listxattr asking how big the answer is, as every caller does). */
static void log_failure(uint16_t op, uint64_t ino, int rc)
{
	switch (-rc) {
	case ENOENT: case EEXIST: case ENODATA: case ENOTEMPTY: case EACCES: case EPERM: case ENAMETOOLONG:
	case ENOTDIR: case EISDIR: case EINVAL: case EBUSY: case ERANGE: case EXDEV: case EMLINK: case ELOOP:
		return;
	}
	log_warn("%s ino %llx: %s", proto_op_name(op), (unsigned long long)ino, aq_strerror(rc));
}

/* A CHUNK_READ's or CHUNK_WRITE's target and byte range, checked: 0, -AQ_ENOT_OWNER or
 * -EINVAL. */
static int chunk_args(struct server *s, const struct proto_req *r, uint64_t len)
{
	if (!local_target(s, r->target))
		return -AQ_ENOT_OWNER;
	if (r->off > AQ_CHUNK_SIZE_MAX || len > AQ_CHUNK_SIZE_MAX - r->off)
		return -EINVAL;
	return 0;
}

static int truncate_data(void *arg, uint64_t ino, uint64_t new_size, uint32_t chunk_size)
{
	struct server *s = arg;
	for (uint32_t i = 0; i < s->nlocal; i++) {
		int rc = data_truncate(s->data, s->local_targets[i], ino, new_size, chunk_size);
		if (rc)
			return rc;
	}
	return 0;
}

/* Whether the request's data, a client's boot id, is this machine's: a client elsewhere
 * could not open the paths a location names, and gets none. */
/* meta_alloc_fn: what a file's chunks take on the targets, when they are all this
 * server's; a few chunks are looked up where they lie, more by a scan of each target. */
#define ALLOC_LOOKUPS_MAX 8
static int file_bytes(void *arg, uint64_t ino, uint64_t size, uint32_t chunk_size, uint64_t *bytes)
{
	struct server *s = arg;
	if (s->nlocal != s->map.ntargets || !chunk_size)
		return -ENOENT;
	uint64_t nchunks = (size + chunk_size - 1) / chunk_size, b;
	*bytes = 0;
	for (uint64_t idx = 0; nchunks <= ALLOC_LOOKUPS_MAX && idx < nchunks; idx++) {
		int rc = data_chunk_bytes(s->data, cluster_chunk_target(&s->map, ino, (uint32_t)idx), ino,
					  (uint32_t)idx, &b);
		if (rc)
			return rc;
		*bytes += b;
	}
	for (uint32_t i = 0; nchunks > ALLOC_LOOKUPS_MAX && i < s->nlocal; i++) {
		int rc = data_inode_bytes(s->data, s->local_targets[i], ino, &b);
		if (rc)
			return rc;
		*bytes += b;
	}
	return 0;
}

static bool same_machine(const struct server *s, const struct proto_req *r)
{
	return !s->boot_err && r->data_len == sizeof s->boot_id && !memcmp(r->data, s->boot_id, sizeof s->boot_id);
}

/* Appends the proto_loc of bytes [in, in + n) of chunk idx, found at loc. */
static void put_loc(struct wbuf *w, const struct data_loc *loc, uint32_t idx, uint32_t in, uint32_t n)
{
	struct proto_loc pl = {.rec_off = loc->rec_off, .version = loc->version, .idx = idx, .length = loc->length,
			       .in = in, .n = n, .nblk = loc->nblk, .path = loc->path,
			       .path_len = (uint32_t)strlen(loc->path)};
	proto_loc_put(w, &pl, loc->crc);
}

/* OPEN_MAP's data: where bytes [in, in + n) of chunk idx lie on this disk, or nothing
 * (the client then reads them as usual): nothing for a client on another machine (its
 * boot id, the request's data, differs). Runs on the loop: it reads the index, never the
 * data. */
static void open_map_loc(struct server *s, const struct proto_req *r, uint32_t target, uint32_t idx, uint32_t in,
			 uint32_t n, struct wbuf *out)
{
	size_t len_at = out->len;
	wbuf_u32(out, 0);
	if (!n || !same_machine(s, r))
		return;
	struct data_loc *loc = aq_malloc(sizeof *loc);
	if (data_locate(s->data, target, r->ino, idx, in + n, loc) == 0) {
		put_loc(out, loc, idx, in, n);
		put_le32(out->p + len_at, (uint32_t)(out->len - len_at - 4));
		tier_note_read(s->tier, r->ino);
	}
	free(loc);
}

/* LOCATE: where all of a chunk's bytes lie on this disk, for a client on this machine
 * that reads them itself (local reads of any chunk, src/client/local.c); no data when the
 * client is elsewhere or the chunk is not in a record here (none, or only in S3). Like
 * CHUNK_READ it checks no permission: a client that may open the segment file could
 * read it whole anyway. Runs on the loop: it reads the chunk index, never the data.
 * Counted as a read of the file (atime, the object tier), but with PROTO_F_PEEK (the
 * mount locating a directory's files ahead of their opens); with PROTO_F_NOREPLY it is
 * only that count, for a read the client made from a location it held. */
static int locate(struct server *s, const struct proto_req *r, struct wbuf *out)
{
	int rc = chunk_args(s, r, 0);
	if (rc)
		return rc;
	if (r->noreply) {
		tier_note_read(s->tier, r->ino);
		return 0;
	}
	struct proto_reply rep = {.op = OP_LOCATE};
	struct wbuf w = {0};
	struct data_loc *loc = aq_malloc(sizeof *loc);
	if (same_machine(s, r) && data_locate(s->data, r->target, r->ino, r->idx, 0, loc) == 0) {
		wbuf_init(&w, 256);
		put_loc(&w, loc, r->idx, 0, loc->length);
		rep.data = w.p;
		rep.data_len = (uint32_t)w.len;
		if (!r->peek)
			tier_note_read(s->tier, r->ino);
	}
	proto_reply_encode(out, &rep);
	wbuf_free(&w);
	free(loc);
	return 0;
}

static int cmp_chunk(const void *a, const void *b)
{
	uint32_t x = get_le32(a), y = get_le32(b);
	return x < y ? -1 : x > y;
}

/* CHUNKS: the chunks of r->ino at or past r->idx that this server's targets hold, in
 * order, r->max at most: (idx, bytes) pairs. */
static int chunks(struct server *s, const struct proto_req *r, struct wbuf *out)
{
	uint32_t max = MIN(r->max, PROTO_CHUNKS_MAX);
	if (!max)
		return -EINVAL;
	uint32_t *idx = aq_malloc(sizeof *idx * max), *len = aq_malloc(sizeof *len * max);
	struct wbuf w;
	wbuf_init(&w, (size_t)PROTO_CHUNK_SIZE * max);
	int rc = 0;
	for (uint32_t i = 0; i < s->nlocal && rc >= 0; i++) {
		rc = data_chunks(s->data, s->local_targets[i], r->ino, r->idx, max, idx, len);
		for (int k = 0; k < rc; k++) {
			wbuf_u32(&w, idx[k]);
			wbuf_u32(&w, len[k]);
		}
	}
	if (rc >= 0) {
		/* each target's are in order; together the first max of them all */
		size_t n = w.len / PROTO_CHUNK_SIZE;
		qsort(w.p, n, PROTO_CHUNK_SIZE, cmp_chunk);
		struct proto_reply rep = {.op = OP_CHUNKS, .data = w.p,
					  .data_len = (uint32_t)(MIN(n, max) * PROTO_CHUNK_SIZE)};
		proto_reply_encode(out, &rep);
	}
	wbuf_free(&w);
	free(idx);
	free(len);
	return rc < 0 ? rc : 0;
}

/* OPEN_READ: an OPEN, then the bytes the read asks for that lie in its first chunk, when
 * that chunk is on this server: a small file read whole costs one round trip instead of
 * two. The reply is the OPEN's attributes, the read's status and the bytes (none when the
 * chunk is elsewhere or the read starts at the end of the file; the client reads the
 * rest as usual). A chunk that fails to read fails that read, not the open. Runs on a
 * worker: the read may wait on the disk or on S3. OPEN_MAP answers the same with where
 * the bytes lie instead of the bytes (open_map_loc). */
static int open_read(struct server *s, struct sconn *sc, const struct proto_req *r, struct wbuf *out)
{
	if ((r->flags & O_ACCMODE) != O_RDONLY || (r->flags & O_TRUNC))
		return -EINVAL;
	struct aq_attr a;
	int rc = meta_open_file(s->meta, &r->cred, r->ino, (int)r->flags, &a);
	if (rc)
		return rc;
	conn_track_open(s, sc, r->ino);
	uint32_t cs = a.chunk_size ? a.chunk_size : s->map.chunk_size;
	uint32_t idx = 0, in = 0, target = 0, n = 0;
	if (S_ISREG(a.mode) && r->off < a.size && cs) {
		idx = (uint32_t)(r->off / cs);
		in = (uint32_t)(r->off % cs);
		target = cluster_chunk_target(&s->map, r->ino, idx);
		if (local_target(s, target))
			n = (uint32_t)MIN(MIN((uint64_t)r->len, a.size - r->off), (uint64_t)(cs - in));
	}
	proto_attr_put(out, &a);
	size_t status_at = out->len;
	wbuf_u32(out, 0);
	if (r->op == OP_OPEN_MAP) {
		open_map_loc(s, r, target, idx, in, n, out);
		return 0;
	}
	wbuf_u32(out, n);
	if (!n)
		return 0;
	wbuf_reserve(out, n);
	rc = data_read(s->data, target, r->ino, idx, in, out->p + out->len, n);
	if (rc) {
		log_failure(OP_CHUNK_READ, r->ino, rc);
		put_le32(out->p + status_at, (uint32_t)aq_status_from_err(rc));
		put_le32(out->p + status_at + 4, 0);
		return 0;
	}
	out->len += n;
	tier_note_read(s->tier, r->ino);
	return 0;
}

struct dir_fill {
	struct wbuf *w;
	uint32_t count, max;
	size_t max_bytes;
	bool plus;
	uint64_t last_cookie;
};

static int dir_fill_one(void *arg, const char *name, size_t name_len, uint64_t ino, uint32_t dtype, uint64_t cookie,
			const struct aq_attr *attr)
{
	struct dir_fill *df = arg;
	/* Never split entries that share a cookie: the store finishes a group past max. */
	if ((df->count >= df->max || df->w->len >= df->max_bytes) && cookie != df->last_cookie)
		return 1;
	AQ_ASSERT(name_len <= AQ_NAME_MAX && (!df->plus || attr));
	proto_dirent_put_parts(df->w, ino, cookie, (uint8_t)dtype, name, (uint32_t)name_len, df->plus ? attr : NULL);
	df->count++;
	df->last_cookie = cookie;
	return 0;
}

struct change_fill {
	struct wbuf *w;
	uint32_t count;
};

static int change_fill_one(void *arg, const char *name, size_t name_len, uint64_t ino, uint64_t ts)
{
	struct change_fill *cf = arg;
	proto_change_put(cf->w, ino, ts, name, name_len);
	cf->count++;
	return 0;
}

static int sync_meta(void *arg)
{
	struct server *s = arg;
	return s->fail_meta_sync ? -EIO : meta_sync(s->meta);
}

/* data_sync of local target i, or EIO for the target a test hook names when it has
 * something to sync. */
static int sync_target(struct server *s, uint32_t i, bool *meta_done)
{
	uint32_t t = s->local_targets[i];
	if (s->fail_target_sync == t + 1 && data_unsynced(s->data, t))
		return -EIO;
	return data_sync(s->data, t, *meta_done ? NULL : sync_meta, s, meta_done);
}

/* fsync: the metadata log (unless only data was asked for, and no size changed) and
 * every local target. The metadata log syncs while the first written target's segment
 * does, so an fsync waits for two syncs one after the other (segment and metadata log,
 * then the target's index), not three. */
static int fsync_all(struct server *s, bool meta)
{
	bool meta_done = !meta;
	int rc = 0;
	for (uint32_t i = 0; !rc && i < s->nlocal; i++)
		rc = sync_target(s, i, &meta_done);
	return rc || meta_done ? rc : sync_meta(s);
}

/* fsync of one file: the metadata log as fsync_all, and of the local targets only those
 * that hold the file's chunks (cluster_chunk_target of each), not every target another
 * file's writes left unsynced: under dbench an fsync had synced up to four targets one
 * after another (2.1 ms median), and a disk takes concurrent syncs no faster. What other
 * files wrote waits for their own fsync, as on ext4: the metadata log syncs every second
 * anyway, so a size could already be durable before its file's data. A directory, or a
 * file of more chunks than FSYNC_FILE_CHUNKS, or one this server does not know, syncs
 * everything as before. */
#define FSYNC_FILE_CHUNKS 64

static int fsync_file(struct server *s, uint64_t ino, bool meta)
{
	struct aq_attr a;
	if (ino == 0 || meta_getattr(s->meta, ino, &a) != 0)
		return fsync_all(s, meta);
	uint64_t cs = a.chunk_size ? a.chunk_size : s->map.chunk_size;
	uint64_t nchunks = cs ? (a.size + cs - 1) / cs : UINT64_MAX;
	if (!S_ISREG(a.mode) || nchunks > FSYNC_FILE_CHUNKS)
		return fsync_all(s, meta);
	bool want[AQ_TARGETS_MAX] = {false};
	for (uint32_t idx = 0; idx < nchunks; idx++) {
		uint32_t t = cluster_chunk_target(&s->map, ino, idx);
		for (uint32_t i = 0; i < s->nlocal; i++)
			if (s->local_targets[i] == t)
				want[i] = true;
	}
	bool meta_done = !meta;
	int rc = 0;
	for (uint32_t i = 0; !rc && i < s->nlocal; i++)
		if (want[i])
			rc = sync_target(s, i, &meta_done);
	return rc || meta_done ? rc : sync_meta(s);
}

static int do_statfs(struct server *s, struct aq_statfs *st)
{
	memset(st, 0, sizeof *st);
	uint64_t seen_fs[AQ_TARGETS_MAX];
	uint32_t nseen = 0;
	for (uint32_t i = 0; i < s->nlocal; i++) {
		struct data_target_stat ts;
		int rc = data_stat(s->data, s->local_targets[i], &ts);
		if (rc)
			return rc;
		st->used_bytes += ts.used_bytes;
		/* Targets that share one file system (the single-node default) share its
		 * space: count it once, or df would show four times the disk. */
		bool dup = false;
		for (uint32_t j = 0; ts.fs_shared_capacity && j < nseen; j++)
			dup |= seen_fs[j] == ts.fs_id;
		if (dup)
			continue;
		if (ts.fs_shared_capacity)
			seen_fs[nseen++] = ts.fs_id;
		st->total_bytes += ts.capacity_bytes;
		st->free_bytes += ts.free_bytes;
	}
	int rc = meta_count_files(s->meta, &st->files);
	st->servers = s->map.nservers;
	st->buckets = s->map.nbuckets;
	st->targets = s->map.ntargets;
	st->chunk_size = s->map.chunk_size;
	return rc;
}

/* A TIER request (on a worker thread: DEMOTE, HYDRATE and SET wait on S3). At most half
 * the workers wait on S3 at once; a request over that gets EBUSY, which the client retries,
 * so metadata and chunk I/O always find a worker. On success out gets the reply; on
 * failure it gets the text that says why (an error reply's payload, for TIER only). */
static int handle_tier(struct server *s, const struct proto_req *r, struct wbuf *out)
{
	struct proto_reply rep = {.op = OP_TIER};
	char *msg = aq_calloc(1, PROTO_TIER_TEXT_MAX);
	_Static_assert(PROTO_TIER_TEXT_MAX <= TIER_TEXT_MAX, "tier texts fit a reply");
	bool slow = r->flags == PROTO_TIER_SET || r->flags == PROTO_TIER_DEMOTE || r->flags == PROTO_TIER_HYDRATE;
	uint64_t *inos = NULL;
	struct tier_result res = {0};
	int rc = 0;
	if (slow && atomic_fetch_add(&s->tier_busy, 1) >= MAX(1u, s->opt.workers / 2)) {
		rc = -EBUSY;
		goto out;
	}
	switch (r->flags) {
	case PROTO_TIER_SET:
		rc = r->data_len > PROTO_TIER_TEXT_MAX ? -EINVAL
						       : tier_set(s->tier, &r->cred, (const char *)r->data, r->data_len,
								  msg, PROTO_TIER_TEXT_MAX);
		break;
	case PROTO_TIER_DEMOTE: {
		int n = proto_tier_inos(r->data, r->data_len);
		if (n < 0) {
			rc = -EINVAL;
			break;
		}
		inos = aq_malloc((size_t)(n ? n : 1) * sizeof *inos);
		for (int i = 0; i < n; i++)
			inos[i] = proto_tier_ino(r->data, (uint32_t)i);
		rc = tier_demote(s->tier, &r->cred, inos, (uint32_t)n, &res, msg, PROTO_TIER_TEXT_MAX);
		break;
	}
	case PROTO_TIER_HYDRATE:
		rc = r->data_len ? -EINVAL : tier_hydrate(s->tier, &r->cred, r->ino, &res, msg, PROTO_TIER_TEXT_MAX);
		break;
	case PROTO_TIER_USAGE: {
		struct data_tier_usage u;
		rc = r->data_len ? -EINVAL : tier_usage(s->tier, &r->cred, r->ino, &u);
		rep.tier.hot = u.hot;
		rep.tier.cold = u.cold;
		rep.tier.both = u.both;
		break;
	}
	case PROTO_TIER_POLICY:
		rc = r->data_len > 256 ? -EINVAL
				       : tier_policy(s->tier, &r->cred, r->ino, (const char *)r->data, r->data_len, msg,
						     PROTO_TIER_TEXT_MAX);
		if (!rc)
			inval_inode(s, r->ino); /* its trusted.aquifer.tier xattr, and ctime */
		break;
	case PROTO_TIER_STATUS: {
		struct data_tier_stat st;
		rc = r->data_len ? -EINVAL : tier_status(s->tier, &st, msg, PROTO_TIER_TEXT_MAX);
		rep.tier.objects = st.objects;
		rep.tier.object_bytes = st.object_bytes;
		rep.tier.live_bytes = st.live_bytes;
		break;
	}
	default:
		rc = -EINVAL;
		snprintf(msg, PROTO_TIER_TEXT_MAX, "unknown TIER sub-command %u", r->flags);
	}
out:
	if (slow)
		atomic_fetch_sub(&s->tier_busy, 1);
	size_t msg_len = strnlen(msg, PROTO_TIER_TEXT_MAX - 1);
	if (rc) {
		wbuf_put(out, msg, msg_len);
	} else {
		rep.tier.bytes = res.bytes;
		rep.tier.files = res.files;
		rep.tier.skipped = res.skipped;
		rep.data = (const uint8_t *)msg;
		rep.data_len = (uint32_t)msg_len;
		proto_reply_encode(out, &rep);
	}
	free(inos);
	free(msg);
	return rc;
}

/* A CHUNK_WRITE of several extents of one chunk, applied as one new version of it. */
static int chunk_write_extents(struct server *s, const struct proto_req *r)
{
	struct aq_extent *ext = aq_malloc(PROTO_CW_EXTENTS_MAX * sizeof(*ext));
	const uint8_t *bytes = NULL;
	uint32_t n = 0;
	int rc = proto_extents_decode(r->data, r->data_len, ext, &n, &bytes);
	if (rc == 0)
		rc = chunk_args(s, r, 0);
	if (rc == 0)
		rc = data_writev(s->data, r->target, r->ino, r->idx, ext, n, bytes, r->flags & PROTO_CW_SYNC);
	free(ext);
	return rc;
}

static int handle_op(struct server *s, struct sconn *sc, const struct proto_req *r, struct wbuf *out);

/* A change sent again, after its connection broke, that this server had committed: it
 * is answered as its first run would have been, not run twice (an O_EXCL create would
 * say EEXIST, an unlink or a rename ENOENT). Returns 1 with the reply in out, 0 when it
 * never committed (it runs now), or -errno. */
static int replay(struct server *s, struct sconn *sc, const struct proto_req *r, struct wbuf *out)
{
	struct meta_txn tx = {r->txn_client, r->txn_seq};
	uint64_t ino = 0;
	int rc = meta_txn_find(s->meta, &tx, &ino);
	if (rc <= 0)
		return rc;
	struct proto_reply rep = {.op = r->op};
	if (ino) {
		/* what it made or linked, as it is now (gone: someone removed it since) */
		rc = meta_getattr(s->meta, ino, &rep.attr);
		if (rc)
			return rc;
		if (r->op == OP_MKNOD && (r->flags & PROTO_MKNOD_OPEN))
			conn_track_open(s, sc, ino);
	} else if (r->op == OP_UNLINK && (r->flags & PROTO_UNLINK_DIR_ATTR) &&
		   meta_getattr(s->meta, r->parent, &rep.attr)) {
		memset(&rep.attr, 0, sizeof rep.attr);
	}
	log_info("%s sent again by client %016llx (#%llu): done before the restart, answered from its record",
		 proto_op_name(r->op), (unsigned long long)r->txn_client, (unsigned long long)r->txn_seq);
	proto_reply_encode(out, &rep);
	return 1;
}

/* ---- numbered changes running now ----
 * A change's connection can break while aqd runs it and lives on (a network fault, not a
 * restart). Its client sends it again on a new connection, where the record of the first
 * run may not be there yet: the second would run it again (EEXIST for a create), or, were
 * the first still waiting for a lock, the first would run after the client's next change
 * (an rmdir of the directory the client has made again since). So a numbered change holds
 * its (client, seq) while it runs; one that comes with the same waits for it to finish,
 * then looks for its record. A frame whose connection closed before a worker took it never
 * runs (net.c), so the first run is either held here or over. */
enum { RUN_FULL = -1, RUN_BUSY = 0, RUN_HELD = 1 };

static bool running_has_locked(const struct server *s, const struct meta_txn *tx)
{
	for (uint32_t i = 0; i < s->nrunning; i++)
		if (s->running[i].client == tx->client && s->running[i].seq == tx->seq)
			return true;
	return false;
}

/* Holds tx: RUN_HELD, or RUN_BUSY when it is running already (and wait is false), or
 * RUN_FULL when the table is (it then runs unheld). *waited says whether it waited. */
static int running_enter(struct server *s, const struct meta_txn *tx, bool wait, bool *waited)
{
	int rc = RUN_HELD;
	pthread_mutex_lock(&s->running_mu);
	while (running_has_locked(s, tx) && rc == RUN_HELD) {
		if (!wait)
			rc = RUN_BUSY;
		else
			pthread_cond_wait(&s->running_done, &s->running_mu);
		if (waited)
			*waited = true;
	}
	if (rc == RUN_HELD && s->nrunning == RUNNING_MAX)
		rc = RUN_FULL;
	if (rc == RUN_HELD)
		s->running[s->nrunning++] = *tx;
	pthread_mutex_unlock(&s->running_mu);
	return rc;
}

static void running_leave(struct server *s, const struct meta_txn *tx)
{
	pthread_mutex_lock(&s->running_mu);
	for (uint32_t i = 0; i < s->nrunning; i++) {
		if (s->running[i].client == tx->client && s->running[i].seq == tx->seq) {
			s->running[i] = s->running[--s->nrunning];
			break;
		}
	}
	pthread_cond_broadcast(&s->running_done);
	pthread_mutex_unlock(&s->running_mu);
}

/* For the test of a change sent again while its first run goes on: $AQ_TEST_HOLD_FIRST=
 * OPNAME:MS holds the first such change MS milliseconds before it runs (server_start). */
static void test_hold(struct server *s, uint16_t op)
{
	if (op == s->hold_first && !atomic_exchange(&s->held, true)) {
		log_warn("holding %s %u ms before it runs, as $AQ_TEST_HOLD_FIRST asks", proto_op_name(op),
			 s->hold_ms);
		usleep(s->hold_ms * 1000u);
	}
}

/* Executes one decoded request; appends the reply payload to out. Returns 0 or -errno.
 * A numbered change commits the record of itself with it (src/meta/txn.c). */
static int handle(struct server *s, struct sconn *sc, const struct proto_req *r, struct wbuf *out)
{
	if (!proto_op_numbered(r->op) || !r->txn_client)
		return handle_op(s, sc, r, out);
	struct meta_txn tx = {r->txn_client, r->txn_seq};
	bool waited = false;
	bool held = running_enter(s, &tx, true, &waited) == RUN_HELD;
	test_hold(s, r->op);
	int rc = 0;
	if (r->retry || waited)
		rc = replay(s, sc, r, out);
	if (rc == 0) {
		meta_txn_begin(&tx, 1);
		rc = handle_op(s, sc, r, out);
		meta_txn_end();
	} else if (rc > 0) {
		rc = 0;
	}
	if (held)
		running_leave(s, &tx);
	return rc;
}

static int handle_op(struct server *s, struct sconn *sc, const struct proto_req *r, struct wbuf *out)
{
	struct proto_reply rep = {.op = r->op};
	const struct aq_cred *cr = &r->cred;
	int rc = 0;
	switch (r->op) {
	case OP_MAP: {
		char text[256];
		int n = snprintf(text, sizeof text, "epoch = %u\nbuckets = %u\nchunk_size = %u\n", s->map.epoch,
				 s->map.nbuckets, s->map.chunk_size);
		rep.data = (const uint8_t *)text;
		rep.data_len = (uint32_t)n;
		proto_reply_encode(out, &rep);
		return 0;
	}
	case OP_LOOKUP:
		rc = meta_lookup(s->meta, cr, r->parent, r->name, r->name_len, &rep.attr);
		break;
	case OP_GETATTR:
		rc = meta_getattr(s->meta, r->ino, &rep.attr);
		break;
	case OP_SETATTR:
		rc = meta_setattr(s->meta, cr, r->ino, r->mask, &r->attr, &rep.attr);
		if (!rc)
			inval_inode(s, r->ino);
		/* Data past the new size goes whatever size the metadata knew: another client
		 * may have written chunks whose size it has not committed yet. */
		if (!rc && (r->mask & AQ_SET_SIZE) && S_ISREG(rep.attr.mode))
			rc = truncate_data(s, r->ino, r->attr.size, rep.attr.chunk_size);
		break;
	case OP_MKNOD:
		if (r->flags & ~(AQ_CREATE_EXCL | PROTO_MKNOD_OPEN | PROTO_MKNOD_TMPFILE))
			return -EINVAL;
		if (r->flags & PROTO_MKNOD_TMPFILE) {
			if (!(r->flags & PROTO_MKNOD_OPEN) || r->name_len)
				return -EINVAL;
			/* an orphan from its commit on: held open before the collector can see it */
			pthread_rwlock_rdlock(&s->unnamed_rw);
			rc = meta_tmpfile(s->meta, cr, r->parent, r->mode, r->flags & AQ_CREATE_EXCL, &rep.attr);
			if (!rc)
				conn_track_open(s, sc, rep.attr.ino);
			pthread_rwlock_unlock(&s->unnamed_rw);
			break;
		}
		if (r->flags & PROTO_MKNOD_OPEN) {
			/* create-and-open, one round trip for FUSE's create. A file this call
			 * created opens whatever its mode (open(O_CREAT|O_WRONLY, 0444) works);
			 * one that was there is opened as OPEN would, permissions checked. */
			if (!S_ISREG(r->mode))
				return -EINVAL;
			rc = meta_mknod(s->meta, cr, r->parent, r->name, r->name_len, r->mode, 0, AQ_CREATE_EXCL,
					&rep.attr);
			if (!rc) {
				inval_entry(s, r->parent, r->name, r->name_len);
			} else if (rc == -EEXIST && !(r->flags & AQ_CREATE_EXCL)) {
				rc = meta_lookup(s->meta, cr, r->parent, r->name, r->name_len, &rep.attr);
				if (!rc && S_ISDIR(rep.attr.mode))
					rc = -EISDIR;
				else if (!rc && !S_ISREG(rep.attr.mode))
					rc = -EEXIST; /* a symlink, a fifo...: not this call's to open */
				if (!rc)
					rc = meta_open_file(s->meta, cr, rep.attr.ino, (int)r->rdev, &rep.attr);
			}
			if (!rc)
				conn_track_open(s, sc, rep.attr.ino);
			break;
		}
		rc = meta_mknod(s->meta, cr, r->parent, r->name, r->name_len, r->mode, r->rdev, r->flags, &rep.attr);
		if (!rc)
			inval_entry(s, r->parent, r->name, r->name_len);
		break;
	case OP_MKDIR:
		rc = meta_mkdir(s->meta, cr, r->parent, r->name, r->name_len, r->mode, &rep.attr);
		if (!rc)
			inval_entry(s, r->parent, r->name, r->name_len);
		break;
	case OP_SYMLINK:
		rc = meta_symlink(s->meta, cr, r->parent, r->name, r->name_len, r->name2, r->name2_len, &rep.attr);
		if (!rc)
			inval_entry(s, r->parent, r->name, r->name_len);
		break;
	case OP_READLINK: {
		char buf[AQ_PATH_MAX];
		rc = meta_readlink(s->meta, r->ino, buf, sizeof buf);
		if (rc < 0)
			return rc;
		rep.data = (const uint8_t *)buf;
		rep.data_len = (uint32_t)rc;
		proto_reply_encode(out, &rep);
		return 0;
	}
	case OP_UNLINK:
	case OP_RMDIR: {
		uint64_t victim = victim_of(s, sc, r->parent, r->name, r->name_len);
		rc = r->op == OP_UNLINK ? meta_unlink(s->meta, cr, r->parent, r->name, r->name_len)
					: meta_rmdir(s->meta, cr, r->parent, r->name, r->name_len);
		if (!rc) {
			inval_entry(s, r->parent, r->name, r->name_len);
			if (victim)
				inval_inode(s, victim);
			/* the directory's new times, for a mount's cache of it (a directory
			 * whose inode another server holds: none) */
			if (r->op == OP_UNLINK && (r->flags & PROTO_UNLINK_DIR_ATTR) &&
			    meta_getattr(s->meta, r->parent, &rep.attr))
				memset(&rep.attr, 0, sizeof rep.attr);
		}
		break;
	}
	case OP_RENAME: {
		uint64_t moved = victim_of(s, sc, r->parent, r->name, r->name_len);
		uint64_t replaced = victim_of(s, sc, r->newparent, r->name2, r->name2_len);
		rc = meta_rename(s->meta, cr, r->parent, r->name, r->name_len, r->newparent, r->name2, r->name2_len,
				 r->flags);
		if (!rc) {
			inval_entry(s, r->parent, r->name, r->name_len);
			inval_entry(s, r->newparent, r->name2, r->name2_len);
			if (moved)
				inval_inode(s, moved);
			if (replaced)
				inval_inode(s, replaced);
		}
		break;
	}
	case OP_LINK:
		rc = meta_link(s->meta, cr, r->ino, r->newparent, r->name2, r->name2_len, &rep.attr);
		if (!rc) {
			inval_entry(s, r->newparent, r->name2, r->name2_len);
			inval_inode(s, r->ino);
		}
		break;
	case OP_WATCH:
		watch(s, sc, r->cookie, r->flags & PROTO_WATCH_DELIVER);
		break;
	case OP_ACCESS:
		rc = meta_access(s->meta, cr, r->ino, r->mask);
		break;
	case OP_OPEN:
		rc = meta_open_file(s->meta, cr, r->ino, (int)r->flags, &rep.attr);
		if (!rc)
			conn_track_open(s, sc, r->ino);
		break;
	case OP_OPEN_READ:
	case OP_OPEN_MAP:
		return open_read(s, sc, r, out);
	case OP_LOCATE:
		return locate(s, r, out);
	case OP_CHUNKS:
		return chunks(s, r, out);
	case OP_RELEASE:
		conn_track_release(s, sc, r->ino);
		break;
	case OP_REOPEN:
		/* the files a client still holds open through a connection that broke (aqd
		 * restarted, or the network): one unlinked meanwhile stays until it closes it */
		if (r->data_len % 8 || r->data_len / 8 > PROTO_REOPEN_MAX)
			return -EINVAL;
		for (uint32_t i = 0; i < r->data_len / 8; i++) {
			uint64_t ino = get_le64(r->data + 8 * i);
			if (meta_getattr(s->meta, ino, &rep.attr) == 0)
				conn_track_open(s, sc, ino);
		}
		break;
	case OP_COMMIT_SIZE:
		rc = meta_commit_size(s->meta, r->ino, r->size, r->time_ns, &rep.attr);
		if (!rc)
			inval_inode(s, r->ino);
		break;
	case OP_READDIR: {
		struct wbuf ents;
		wbuf_init(&ents, 4096);
		struct dir_fill df = {.w = &ents, .max = MIN(MAX(r->max, 1u), (uint32_t)PROTO_READDIR_MAX),
				      .max_bytes = 1u << 20, .plus = r->flags & AQ_READDIR_PLUS,
				      .last_cookie = UINT64_MAX};
		uint32_t end = r->flags >> PROTO_READDIR_END_SHIFT;
		bool at_end = false;
		rc = meta_readdir_range(s->meta, cr, r->ino, r->cookie, end ? end : UINT32_MAX, df.max, df.plus,
					dir_fill_one, &df, &at_end);
		if (rc >= 0) {
			rep.count = df.count;
			rep.eof = at_end; /* not count < max: a page cut at max_bytes is short */
			rep.next = df.count ? df.last_cookie : r->cookie;
			rep.entries = ents.p;
			rep.entries_len = (uint32_t)ents.len;
			proto_reply_encode(out, &rep);
			rc = 0;
		}
		wbuf_free(&ents);
		return rc;
	}
	case OP_CHANGES: {
		struct wbuf ents;
		wbuf_init(&ents, 4096);
		struct change_fill cf = {.w = &ents};
		uint64_t next = r->cookie;
		rc = meta_changes(s->meta, cr, r->ino, r->cookie, MIN(MAX(r->max, 1u), (uint32_t)PROTO_READDIR_MAX),
				  change_fill_one, &cf, &next);
		if (rc >= 0) {
			rep.count = cf.count;
			rep.next = next;
			rep.entries = ents.p;
			rep.entries_len = (uint32_t)ents.len;
			proto_reply_encode(out, &rep);
			rc = 0;
		}
		wbuf_free(&ents);
		return rc;
	}
	case OP_SETXATTR:
	case OP_GETXATTR:
	case OP_REMOVEXATTR: {
		char name[AQ_XATTR_NAME_MAX + 1];
		if (r->name_len > AQ_XATTR_NAME_MAX)
			return -ERANGE;
		if (r->name_len == 0)
			return -EINVAL;
		memcpy(name, r->name, r->name_len);
		name[r->name_len] = 0;
		if (r->op == OP_SETXATTR) {
			if (r->data_len > AQ_XATTR_VALUE_MAX)
				return -E2BIG;
			rc = meta_setxattr(s->meta, cr, r->ino, name, r->data, r->data_len, r->flags);
			if (!rc)
				inval_inode(s, r->ino); /* ctime, and ACLs the kernel may cache */
			break;
		}
		if (r->op == OP_REMOVEXATTR) {
			rc = meta_removexattr(s->meta, cr, r->ino, name);
			if (!rc)
				inval_inode(s, r->ino);
			break;
		}
		uint8_t *buf = aq_malloc(AQ_XATTR_VALUE_MAX);
		rc = meta_getxattr(s->meta, cr, r->ino, name, buf, MIN(r->len, (uint32_t)AQ_XATTR_VALUE_MAX));
		if (rc >= 0) {
			rep.size = (uint32_t)rc;
			rep.data = buf;
			rep.data_len = r->len ? (uint32_t)rc : 0;
			proto_reply_encode(out, &rep);
			rc = 0;
		}
		free(buf);
		return rc;
	}
	case OP_LISTXATTR: {
		uint32_t cap = MIN(r->len, (uint32_t)AQ_XATTR_VALUE_MAX);
		char *buf = aq_malloc(AQ_XATTR_VALUE_MAX);
		rc = meta_listxattr(s->meta, cr, r->ino, buf, cap);
		if (rc >= 0) {
			rep.size = (uint32_t)rc;
			rep.data = (const uint8_t *)buf;
			rep.data_len = cap ? (uint32_t)rc : 0;
			proto_reply_encode(out, &rep);
			rc = 0;
		}
		free(buf);
		return rc;
	}
	case OP_STATFS:
		rc = do_statfs(s, &rep.st);
		break;
	case OP_FSYNC:
		rc = fsync_file(s, r->ino, !(r->flags & PROTO_FSYNC_DATA_ONLY));
		break;
	case OP_CHUNK_WRITE:
		/* a setattr comes after a commit, and never truncates (OP_SETATTR's path drops
		 * the data past the size): refused before anything is written */
		if ((r->flags & ~(PROTO_CW_SYNC | PROTO_CW_EXTENTS | PROTO_CW_COMMIT | PROTO_CW_PUNCH | PROTO_CW_ATTRS)) ||
		    ((r->flags & PROTO_CW_ATTRS) && (!(r->flags & PROTO_CW_COMMIT) || (r->mask & AQ_SET_SIZE))))
			return -EINVAL;
		if (r->flags & PROTO_CW_PUNCH) {
			rc = r->data_len || r->off || (r->flags & PROTO_CW_EXTENTS) ? -EINVAL : chunk_args(s, r, 0);
			if (!rc)
				rc = data_punch(s->data, r->target, r->ino, r->idx);
		} else if (r->flags & PROTO_CW_EXTENTS) {
			rc = chunk_write_extents(s, r);
		} else if (!(rc = chunk_args(s, r, r->data_len))) {
			rc = data_write(s->data, r->target, r->ino, r->idx, (uint32_t)r->off, r->data, r->data_len,
					r->flags & PROTO_CW_SYNC);
		}
		if (!rc)
			tier_note_change(s->tier, r->ino); /* its size and mtime may commit elsewhere */
		if (!rc && (r->flags & PROTO_CW_COMMIT)) {
			rc = meta_commit_size(s->meta, r->ino, r->size, r->time_ns, &rep.attr);
			if (!rc)
				inval_inode(s, r->ino);
			if (!rc && (r->flags & PROTO_CW_ATTRS))
				rc = meta_setattr(s->meta, &r->cred, r->ino, r->mask, &r->attr, &rep.attr);
		}
		break;
	case OP_CHUNK_READ: {
		/* in a BATCH (a lone one is answered by reply_chunk_read) */
		if ((rc = chunk_args(s, r, r->len)))
			return rc;
		/* Read straight into the reply buffer: u32 length, then the bytes. */
		size_t at = out->len;
		wbuf_u32(out, r->len);
		wbuf_reserve(out, r->len);
		rc = data_read(s->data, r->target, r->ino, r->idx, (uint32_t)r->off, out->p + out->len, r->len);
		if (rc) {
			out->len = at;
			return rc;
		}
		out->len += r->len;
		tier_note_read(s->tier, r->ino);
		return 0;
	}
	case OP_TIER:
		return handle_tier(s, r, out);
	default:
		return -EPROTO;
	}
	if (rc < 0)
		return rc;
	proto_reply_encode(out, &rep);
	return 0;
}

/* Decodes and runs one request; returns the wire status, reply payload in out. */
static int run_one(struct server *s, struct sconn *sc, const struct proto_hdr *h, const uint8_t *payload,
		   struct wbuf *out)
{
	struct proto_req r;
	if (h->epoch && h->epoch != s->map.epoch)
		return AQ_S_STALE_MAP;
	int rc = proto_req_decode(h->op, payload, h->payload_len, &r);
	if (rc) {
		log_debug("malformed %s frame (%u bytes)", proto_op_name(h->op), h->payload_len);
		return AQ_S_PROTO;
	}
	r.retry = h->flags & PROTO_F_RETRY;
	r.noreply = h->flags & PROTO_F_NOREPLY;
	r.peek = h->flags & PROTO_F_PEEK;
	if (h->op == s->refuse) {
		log_warn("refusing %s, as $AQ_TEST_REFUSE asks", proto_op_name(h->op));
		return aq_status_from_err(-EIO);
	}
	rc = handle(s, sc, &r, out);
	if (rc && r.op != OP_TIER)
		out->len = 0; /* error replies carry no payload; TIER's carries why */
	if (rc)
		log_failure(h->op, r.ino ? r.ino : r.parent, rc);
	return rc ? aq_status_from_err(rc) : 0;
}

/* Appends one sub-reply frame to subs. */
static void put_sub_reply(struct wbuf *subs, const struct proto_hdr *sh, int st, const struct wbuf *one)
{
	struct proto_hdr rh = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = sh->op, .req_id = sh->req_id,
			       .epoch = sh->epoch, .status = (uint16_t)st, .flags = PROTO_F_REPLY,
			       .payload_len = st ? 0 : (uint32_t)one->len};
	uint8_t hb[PROTO_HDR_SIZE];
	proto_hdr_encode(hb, &rh);
	wbuf_put(subs, hb, sizeof hb);
	if (!st)
		wbuf_put(subs, one->p, one->len);
}

/* Holds the numbered creates of a run that is to share one write batch. One running
 * already (its first run, its client having sent it again) ends the run before it: it
 * goes alone, through handle, which waits. Returns how many stay in the run. */
static uint32_t hold_run(struct server *s, const struct meta_txn *txs, uint32_t run, bool *held)
{
	for (uint32_t k = 0; k < run; k++) {
		held[k] = false;
		if (!txs[k].client)
			continue;
		int rc = running_enter(s, &txs[k], false, NULL);
		if (rc == RUN_BUSY)
			return k;
		held[k] = rc == RUN_HELD;
	}
	return run;
}

static void release_run(struct server *s, const struct meta_txn *txs, uint32_t run, const bool *held)
{
	for (uint32_t k = 0; k < run; k++)
		if (held[k])
			running_leave(s, &txs[k]);
}

/* Creates that can share one metadata write batch: same directory, mode, flags and caller. */
static bool same_create(const struct proto_req *a, const struct proto_req *b)
{
	return b->op == OP_MKNOD && a->parent == b->parent && a->mode == b->mode && a->rdev == b->rdev &&
	       a->flags == b->flags && a->cred.uid == b->cred.uid && a->cred.gid == b->cred.gid &&
	       a->cred.ngroups == b->cred.ngroups &&
	       !memcmp(a->cred.groups, b->cred.groups, a->cred.ngroups * sizeof a->cred.groups[0]);
}

/* Runs a BATCH frame: every sub-request in order, replies packed into one frame. Runs of
 * creates in one directory go to the metadata store as one write batch (one WAL write,
 * one sync), which is what makes many small creates cheap. Returns the batch's status. */
static int run_batch(struct server *s, struct sconn *sc, const struct proto_hdr *h, const uint8_t *payload,
		     struct wbuf *out)
{
	struct proto_req br;
	if (proto_req_decode(OP_BATCH, payload, h->payload_len, &br) || br.max > PROTO_BATCH_MAX)
		return AQ_S_PROTO;
	struct proto_hdr *shs = aq_calloc(br.max ? br.max : 1, sizeof *shs);
	const uint8_t **sps = aq_calloc(br.max ? br.max : 1, sizeof *sps);
	struct proto_req *reqs = aq_calloc(br.max ? br.max : 1, sizeof *reqs);
	int *decoded = aq_calloc(br.max ? br.max : 1, sizeof *decoded);
	int st = 0;
	struct rbuf rb;
	rbuf_init(&rb, br.data, br.data_len);
	for (uint32_t i = 0; i < br.max && !st; i++) {
		if (proto_batch_next(&rb, &shs[i], &sps[i]))
			st = AQ_S_PROTO;
		else
			/* a create sent again runs on its own (run_one): it may have run; so does one
			 * that opens (an O_TMPFILE's too), which its connection must hold open */
			decoded[i] = shs[i].op == OP_MKNOD && !(shs[i].flags & PROTO_F_RETRY) &&
				     (!shs[i].epoch || shs[i].epoch == s->map.epoch) &&
				     !proto_req_decode(OP_MKNOD, sps[i], shs[i].payload_len, &reqs[i]) &&
				     !(reqs[i].flags & PROTO_MKNOD_OPEN);
	}
	if (!st && rb.pos != rb.len)
		st = AQ_S_PROTO;
	struct wbuf subs, one;
	wbuf_init(&subs, 1024);
	wbuf_init(&one, 256);
	const char *names[PROTO_BATCH_MAX];
	size_t lens[PROTO_BATCH_MAX];
	struct aq_attr outs[64];
	int results[64];
	struct meta_txn txs[64];
	bool held[64];
	uint32_t n = 0;
	while (!st && n < br.max) {
		uint32_t run = 1;
		if (decoded[n]) {
			while (n + run < br.max && run < ARRAY_SIZE(outs) && decoded[n + run] &&
			       same_create(&reqs[n], &reqs[n + run]))
				run++;
		}
		if (run > 1) {
			for (uint32_t k = 0; k < run; k++)
				txs[k] = (struct meta_txn){reqs[n + k].txn_client, reqs[n + k].txn_seq};
			uint32_t keep = hold_run(s, txs, run, held);
			if (keep < 2)
				release_run(s, txs, keep, held); /* what is left goes alone, through handle */
			run = keep < 2 ? 1 : keep;
		}
		if (run > 1) {
			for (uint32_t k = 0; k < run; k++) {
				names[k] = reqs[n + k].name;
				lens[k] = reqs[n + k].name_len;
			}
			const struct proto_req *r0 = &reqs[n];
			meta_txn_begin(txs, run);
			meta_mknod_many(s->meta, &r0->cred, r0->parent, run, names, lens, r0->mode, r0->rdev, r0->flags,
					outs, results);
			meta_txn_end();
			release_run(s, txs, run, held);
			for (uint32_t k = 0; k < run; k++) {
				if (!results[k])
					inval_entry(s, r0->parent, names[k], (uint32_t)lens[k]);
				one.len = 0;
				struct proto_reply rep = {.op = OP_MKNOD, .attr = outs[k]};
				if (!results[k])
					proto_reply_encode(&one, &rep);
				put_sub_reply(&subs, &shs[n + k], results[k] ? aq_status_from_err(results[k]) : 0, &one);
			}
		} else {
			one.len = 0;
			/* a batch runs on the loop thread: nothing in it may wait on S3 (an
			 * OPEN_READ of a file in the object tier would) */
			bool slow = shs[n].op == OP_TIER || shs[n].op == OP_OPEN_READ;
			int sst = slow ? AQ_S_INVAL : run_one(s, sc, &shs[n], sps[n], &one);
			put_sub_reply(&subs, &shs[n], sst, &one);
		}
		n += run;
		/* Stop as soon as the reply cannot fit one frame: 1024 chunk reads would
		 * otherwise pile up gigabytes before the check below. */
		if (subs.len > AQ_FRAME_MAX - 64)
			st = AQ_S_RANGE;
	}
	if (!st) {
		struct proto_reply rep = {.op = OP_BATCH, .count = n, .entries = subs.p, .entries_len = (uint32_t)subs.len};
		proto_reply_encode(out, &rep);
	}
	wbuf_free(&one);
	wbuf_free(&subs);
	free(shs);
	free(sps);
	free(reqs);
	free(decoded);
	return st;
}

/* A CHUNK_READ on its own (not in a batch): the bytes are read into memory that has room
 * for the reply's length word in front, and go out from there, with no copy between the
 * disk (O_DIRECT) or page cache and the socket. Returns false to leave a request it does
 * not take (stale map, malformed, not this server's) to run_one, which answers it. */
static bool reply_chunk_read(struct server *s, struct net_conn *c, const struct proto_hdr *h,
			     const uint8_t *payload)
{
	struct proto_req r;
	if ((h->epoch && h->epoch != s->map.epoch) || proto_req_decode(h->op, payload, h->payload_len, &r) ||
	    chunk_args(s, &r, r.len))
		return false;
	void *mem;
	uint8_t *data;
	int rc = data_read_alloc(s->data, r.target, r.ino, r.idx, (uint32_t)r.off, r.len, 4, &mem, &data);
	if (rc) {
		/* answered here: a second read by run_one would log a corrupt chunk twice */
		log_failure(h->op, r.ino, rc);
		inval_push(s, net_conn_data(c));
		net_reply(c, h, aq_status_from_err(rc), NULL, 0);
		return true;
	}
	tier_note_read(s->tier, r.ino);
	inval_push(s, net_conn_data(c));
	put_le32(data - 4, r.len);
	net_reply(c, h, 0, data - 4, 4 + (size_t)r.len);
	data_buf_free(mem);
	return true;
}

/* ---- locks: a wait's reply is sent when the wait ends ----
 * The lock table ends waits under its mutex (lock_done); their replies go out after it
 * is let go (lock_grants_send), each connection held by a reference meanwhile, so that
 * a reply never waits on a busy socket under the mutex, and never goes to a connection
 * that is gone. */
struct lock_waiter {
	struct net_conn *nc;
	struct proto_hdr h;
	int err;
	struct lock_waiter *next;
};
static __thread struct lock_waiter *t_grants;

static void lock_reply(struct net_conn *c, const struct proto_hdr *req, int err, const struct aq_lock *conflict)
{
	uint8_t lk[PROTO_LOCK_SIZE];
	if (conflict)
		proto_lock_put(lk, conflict);
	struct proto_reply rep = {.op = OP_LOCK, .data = lk, .data_len = conflict && !err ? sizeof lk : 0};
	struct wbuf out;
	wbuf_init(&out, 64);
	proto_reply_encode(&out, &rep);
	net_reply(c, req, aq_status_from_err(err), out.p, out.len);
	wbuf_free(&out);
}

/* locks.c's done: under the table's mutex, so the connection is still there (its
 * on_close drops its waits under that mutex first), unless it is on its way out */
static void lock_done(void *arg, void *waiter, int err)
{
	struct lock_waiter *w = waiter;
	if (err == -ENOTCONN || !net_conn_try_hold(w->nc)) {
		free(w);
		return;
	}
	w->err = err;
	w->next = t_grants;
	t_grants = w;
}

/* Sends the replies of the waits that ended in this thread's last call into the table. */
static void lock_grants_send(void)
{
	struct lock_waiter *w;
	while ((w = t_grants)) { /* a put may run an on_close that ends more waits: one at a time */
		t_grants = w->next;
		lock_reply(w->nc, &w->h, w->err, NULL);
		net_conn_put(w->nc);
		free(w);
	}
}

static void lock_persist(void *arg, uint64_t ino, const uint8_t *row, size_t len)
{
	struct server *s = arg;
	int rc = meta_locks_put(s->meta, ino, row, len);
	if (rc)
		log_warn("inode %llu: cannot keep its locks for a restart: %s", (unsigned long long)ino,
			 aq_strerror(rc));
}

static int lock_row(void *arg, uint64_t ino, const uint8_t *row, size_t len)
{
	struct server *s = arg;
	if (locks_load(s->locks, ino, row, len, s->lock_grace_ns))
		log_warn("inode %llu: a lock row out of shape (%zu bytes), dropped", (unsigned long long)ino, len);
	return 0;
}

/* The locks held before a restart: held again, for their clients to claim by connecting
 * within the grace period (LOCK_GRACE_NS; $AQ_TEST_LOCK_GRACE_MS for tests). */
static int locks_reload(struct server *s)
{
	const char *g = getenv("AQ_TEST_LOCK_GRACE_MS");
	s->lock_grace_ns = g ? strtoull(g, NULL, 10) * 1000000ull : LOCK_GRACE_NS;
	int rc = meta_locks_scan(s->meta, lock_row, s);
	uint32_t held, waiting;
	locks_count(s->locks, &held, &waiting);
	if (held)
		log_info("%u locks held before the restart, kept %llu s for their clients to claim", held,
			 (unsigned long long)(s->lock_grace_ns / 1000000000ull));
	return rc;
}

static void lock_frame(struct server *s, struct sconn *sc, struct net_conn *c, const struct proto_hdr *h,
		       const uint8_t *payload)
{
	struct proto_req r;
	if (proto_req_decode(h->op, payload, h->payload_len, &r)) {
		net_reply(c, h, AQ_S_PROTO, NULL, 0);
		return;
	}
	/* one client's connections share its owners (a mount's lock and its close's unlock
	 * may take two) */
	struct lock_req lr = {.ino = r.ino, .client = lock_client(sc),
			      .owner = r.cookie, .wait_id = (uint64_t)r.time_ns, .type = r.mode, .flags = r.flags,
			      .pid = r.rdev, .start = r.off, .end = r.size};
	struct lock_waiter *w = NULL;
	if (r.flags & AQ_LOCK_WAIT) {
		w = aq_calloc(1, sizeof *w);
		*w = (struct lock_waiter){.nc = c, .h = *h};
	}
	struct aq_lock conflict;
	int rc = locks_run(s->locks, &lr, sc, w, &conflict);
	if (rc != LOCKS_QUEUED) {
		free(w);
		lock_reply(c, h, rc, (r.flags & AQ_LOCK_TEST) ? &conflict : NULL);
	}
	lock_grants_send();
}

static void on_frame(void *arg, struct net_conn *c, const struct proto_hdr *h, const uint8_t *payload)
{
	struct server *s = arg;
	struct sconn *sc = net_conn_data(c);
	meta_thread_init();
	if (h->flags & PROTO_F_REPLY) {
		log_warn("dropping %s: sent a reply frame", net_conn_peer(c));
		net_close(c);
		return;
	}
	if (!sc->authed) {
		struct proto_req r;
		uint8_t mac[PROTO_MAC_SIZE];
		auth_mac(s->map.secret, sizeof s->map.secret, sc->nonce, sizeof sc->nonce, mac);
		if (h->op != OP_AUTH || proto_req_decode(h->op, payload, h->payload_len, &r) ||
		    r.data_len != PROTO_MAC_SIZE || !auth_equal(mac, r.data, PROTO_MAC_SIZE)) {
			log_warn("refusing %s: authentication failed (wrong cluster secret or no AUTH)",
				 net_conn_peer(c));
			net_reply(c, h, AQ_S_AUTH, NULL, 0);
			net_close(c);
			return;
		}
		sc->authed = true;
		net_reply(c, h, 0, NULL, 0);
		return;
	}
	if (h->op == OP_CHUNK_READ && reply_chunk_read(s, c, h, payload))
		return;
	if (h->op == OP_LOCK) {
		lock_frame(s, sc, c, h, payload);
		return;
	}
	struct wbuf out;
	wbuf_init(&out, 256);
	int st = h->op == OP_BATCH ? run_batch(s, sc, h, payload, &out) : run_one(s, sc, h, payload, &out);
	if (st == 0 && h->op == s->exit_after) {
		log_warn("exiting after %s committed, as $AQ_TEST_EXIT_AFTER asks", proto_op_name(h->op));
		_exit(75);
	}
	inval_push(s, sc);
	/* a RELEASE or a read's count nobody waits for (it has nothing to say but "done") */
	if (!((h->op == OP_RELEASE || h->op == OP_LOCATE) && (h->flags & PROTO_F_NOREPLY)))
		net_reply(c, h, st, out.p, out.len);
	wbuf_free(&out);
}

/* Metadata requests take microseconds once the WAL is not synced per request: running
 * them on the loop thread saves two thread hand-offs per request, which on a small
 * machine cost more than the request. Chunk I/O, fsync and per-op WAL syncs go to the
 * workers, where many can wait on the disk at once (and group their syncs). */
static bool run_inline(void *arg, const struct proto_hdr *h, const uint8_t *payload)
{
	struct server *s = arg;
	if (s->opt.meta_sync)
		return false;
	struct proto_req r;
	switch (h->op) {
	case OP_SETATTR:
		/* only a size change may wait on the data (a truncate); owner, mode and times
		 * (tar and rsync set all three on every file) are metadata alone. A request that
		 * does not decode is refused as quickly here. */
		return proto_req_decode(h->op, payload, h->payload_len, &r) || !(r.mask & AQ_SET_SIZE);
	case OP_CHUNK_READ:
	case OP_CHUNK_WRITE:
	case OP_OPEN_READ:
	case OP_FSYNC:
	case OP_RMDIR:
	case OP_STATFS:
	case OP_TIER:
	case OP_CHUNKS: /* scans of each target's index */
		return false;
	case OP_READDIR:
		/* a page is thousands of entries: worth a hand-off, and a listing read in
		 * bucket ranges then runs on several workers at once */
		return false;
	}
	return true;
}

/* Loaders of a training job read file data and need the CPU for what they read: aqd's
 * loop does not poll between their requests. Writes gain from it (an untar of
 * /usr/include: 7.97 -> 6.66 s, docs/performance.md). */
static bool quiets_poll(void *arg, const struct proto_hdr *h)
{
	return h->op == OP_CHUNK_READ || h->op == OP_OPEN_READ || h->op == OP_OPEN_MAP;
}

static bool on_accept(void *arg, struct net_conn *c)
{
	struct sconn *sc = aq_calloc(1, sizeof *sc);
	pthread_mutex_init(&sc->mu, NULL);
	sc->nc = c;
	random_bytes(sc->nonce, sizeof sc->nonce);
	locks_attach(((struct server *)arg)->locks, lock_client(sc), false);
	net_conn_set_data(c, sc);
	struct proto_hdr h = {.magic = PROTO_MAGIC, .version = PROTO_VERSION, .op = OP_HELLO,
			      .flags = PROTO_F_REPLY};
	struct wbuf w;
	wbuf_init(&w, 64);
	struct proto_reply rep = {.op = OP_HELLO, .data = sc->nonce, .data_len = sizeof sc->nonce};
	proto_reply_encode(&w, &rep);
	int rc = net_send(c, &h, w.p, w.len);
	wbuf_free(&w);
	return rc == 0;
}

static void late_add(struct server *s, const uint64_t *inos, uint32_t n);

static void on_close(void *arg, struct net_conn *c)
{
	struct server *s = arg;
	struct sconn *sc = net_conn_data(c);
	if (!sc)
		return;
	unwatch(s, sc);
	locks_detach(s->locks, lock_client(sc), sc);
	lock_grants_send();
	late_add(s, sc->opens, sc->nopens);
	for (uint32_t i = 0; i < sc->nopens; i++)
		open_ref(s, sc->opens[i], -1);
	free(sc->opens);
	pthread_mutex_destroy(&sc->mu);
	free(sc);
	pthread_mutex_lock(&s->gc_mu);
	pthread_cond_signal(&s->gc_cond); /* files unlinked while open may be collectable now */
	pthread_mutex_unlock(&s->gc_mu);
}

/* Drops the records of changes (src/meta/txn.c) older than META_TXN_KEEP_NS, once a
 * minute, and never in aqd's first META_TXN_KEEP_NS: a client still sending a change
 * again from before a restart has that long to find its record. */
static void sweep_txns(struct server *s, uint64_t *next_ns)
{
	if (aq_mono_ns() < *next_ns)
		return;
	*next_ns = aq_mono_ns() + 60ull * 1000000000ull;
	int n;
	do
		n = meta_txn_sweep(s->meta, aq_now_ns() - META_TXN_KEEP_NS);
	while (n == META_TXN_SWEEP_MAX);
	if (n < 0)
		log_warn("dropping old change records: %s", aq_strerror(n));
}

/* ---- files unlinked while open, across a restart ----
 * Which client holds a file open lives in aqd's memory (conn_track_open), so a restart
 * forgets it, and the collector below freed every orphan it found within a second:
 * a program that held an unlinked file open (a temporary file, stress-ng's hdd) got
 * ENOENT for it, and lost what it wrote after. As Ceph's MDS waits for its clients to
 * reconnect before it purges strays, the orphans aqd finds when it starts wait
 * --reclaim-s for their clients, which name the files they hold open when their
 * connection comes up again (REOPEN, in libaq's handshake). */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void reclaim_start(struct server *s)
{
	struct meta_orphan page[128];
	uint64_t inos[ARRAY_SIZE(page)], after = 0;
	uint32_t total = 0;
	for (int n; (n = meta_orphans(s->meta, page, ARRAY_SIZE(page), after)) > 0; total += (uint32_t)n) {
		for (int i = 0; i < n; i++)
			inos[i] = page[i].ino;
		late_add(s, inos, (uint32_t)n);
		after = page[n - 1].ino;
		if (n < (int)ARRAY_SIZE(page))
			break;
	}
	if (total)
		log_info("%u files unlinked while open wait %u s for their clients to reopen them", total,
			 s->opt.reclaim_s);
}

/* A connection that breaks while aqd lives on (a network fault, a client stopped too
 * long) lets go of what it held open just the same, and its client's REOPEN comes a
 * little later: the files it held wait as long as those found at start. */
static void late_add(struct server *s, const uint64_t *inos, uint32_t n)
{
	if (!n)
		return;
	uint64_t until = aq_mono_ns() + (uint64_t)s->opt.reclaim_s * 1000000000ull;
	pthread_mutex_lock(&s->late_mu);
	if (s->nlate + n > s->late_cap) {
		s->late_cap = MAX(s->nlate + n, 2 * s->late_cap);
		s->late = aq_realloc(s->late, s->late_cap * sizeof *s->late);
	}
	for (uint32_t i = 0; i < n; i++)
		s->late[s->nlate++] = (struct late_open){inos[i], until};
	pthread_mutex_unlock(&s->late_mu);
}

/* The orphans found at start and the files held through connections that broke, still
 * within --reclaim-s: a sorted
 * array (*n long, the caller's to free) for one round of the collector. */
static uint64_t *late_snapshot(struct server *s, uint32_t *n)
{
	uint64_t now = aq_mono_ns();
	pthread_mutex_lock(&s->late_mu);
	uint32_t keep = 0;
	for (uint32_t i = 0; i < s->nlate; i++)
		if (s->late[i].until > now)
			s->late[keep++] = s->late[i];
	s->nlate = keep;
	uint64_t *inos = aq_malloc((keep ? keep : 1) * sizeof *inos);
	for (uint32_t i = 0; i < keep; i++)
		inos[i] = s->late[i].ino;
	pthread_mutex_unlock(&s->late_mu);
	qsort(inos, keep, sizeof *inos, cmp_u64);
	*n = keep;
	return inos;
}

/* Whether an orphan may still be claimed (late, nlate: late_snapshot's). */
static bool awaits_reclaim(uint64_t ino, const uint64_t *late, uint32_t nlate)
{
	return nlate && bsearch(&ino, late, nlate, sizeof ino, cmp_u64);
}

/* The orphan collector: frees the data of inodes whose last link went away and that no
 * client holds open, then drops their inode rows. It also syncs the logs each second
 * and drops old change records. */
static void *gc_main(void *arg)
{
	struct server *s = arg;
	uint64_t next_sweep = aq_mono_ns() + (uint64_t)META_TXN_KEEP_NS;
	struct meta_orphan orphans[128];
	for (;;) {
		pthread_mutex_lock(&s->gc_mu);
		if (!s->gc_stop) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			pthread_cond_timedwait(&s->gc_cond, &s->gc_mu, &ts);
		}
		bool stop = s->gc_stop;
		pthread_mutex_unlock(&s->gc_mu);
		if (stop)
			return NULL;
		/* The group commit of last resort: what was acknowledged from the write-ahead
		 * logs (it survives a crash of aqd already) reaches the disk within a second,
		 * as ext4's journal commit does every five. fsync does it at once. */
		int src = meta_sync(s->meta);
		for (uint32_t t = 0; !src && t < s->nlocal; t++) {
			src = data_sync(s->data, s->local_targets[t], NULL, NULL, NULL);
			data_punch_durable(s->data, s->local_targets[t]); /* what fsyncs left too */
		}
		if (src)
			log_error("periodic sync: %s", aq_strerror(src));
		sweep_txns(s, &next_sweep);
		locks_expire(s->locks);
		lock_grants_send();
		uint64_t after = 0;
		uint32_t nlate;
		uint64_t *late = late_snapshot(s, &nlate);
		for (;;) {
			int n = meta_orphans(s->meta, orphans, ARRAY_SIZE(orphans), after);
			if (n <= 0)
				break;
			if (s->gc_pause_ms)
				usleep(s->gc_pause_ms * 1000u);
			for (int i = 0; i < n; i++) {
				after = orphans[i].ino;
				/* an unnamed file listed here committed; if it is not held yet, its
				 * maker holds unnamed_rw until it is */
				pthread_rwlock_wrlock(&s->unnamed_rw);
				bool held = is_open(s, orphans[i].ino);
				pthread_rwlock_unlock(&s->unnamed_rw);
				if (held || awaits_reclaim(orphans[i].ino, late, nlate))
					continue;
				/* named (an unnamed file, linked and closed) since the page was read? */
				int rc = meta_orphan_claim(s->meta, orphans[i].ino);
				if (rc == -ENOENT)
					continue;
				for (uint32_t t = 0; !rc && t < s->nlocal; t++)
					rc = data_delete(s->data, s->local_targets[t], orphans[i].ino);
				if (!rc)
					rc = meta_orphan_done(s->meta, orphans[i].ino);
				if (rc)
					log_warn("collecting orphan %llu: %s", (unsigned long long)orphans[i].ino,
						 aq_strerror(rc));
			}
			if (n < (int)ARRAY_SIZE(orphans))
				break;
		}
		free(late);
	}
}

int server_start(const struct server_options *opt, struct server **out)
{
	struct server *s = aq_calloc(1, sizeof *s);
	char path[4096], err[512];
	int rc;
	s->opt = *opt;
	s->boot_err = aq_boot_id(s->boot_id);
	/* Test hooks, each naming an op (UNLINK, RENAME...):
	 * - $AQ_TEST_EXIT_AFTER=OPNAME makes aqd exit at once after it committed the first
	 *   such request, before the reply goes out, which a kill -9 can do only by luck;
	 * - $AQ_TEST_HOLD_FIRST=OPNAME:MS holds the first such change MS ms (test_hold);
	 * - $AQ_TEST_REFUSE=OPNAME answers every such request EIO: a test that a path does
	 *   without it;
	 * - $AQ_TEST_FAIL_META_SYNC=1 answers EIO to every FSYNC that would sync the
	 *   metadata log: a test that an fdatasync which needs no metadata does not;
	 * - $AQ_TEST_FAIL_TARGET_SYNC=ID answers EIO to every FSYNC that would sync target
	 *   ID while it has something to sync: a test that a file's fsync syncs its own;
	 * - $AQ_TEST_GC_PAUSE_MS=MS makes the orphan collector wait MS ms between reading a
	 *   page of orphans and acting on it: a test that it acts on what is true then. */
	const char *exit_after = getenv("AQ_TEST_EXIT_AFTER");
	const char *hold = getenv("AQ_TEST_HOLD_FIRST");
	const char *refuse = getenv("AQ_TEST_REFUSE");
	const char *colon = hold ? strchr(hold, ':') : NULL;
	s->exit_after = exit_after ? proto_op_named(exit_after, strlen(exit_after)) : 0;
	s->refuse = refuse ? proto_op_named(refuse, strlen(refuse)) : 0;
	s->fail_meta_sync = getenv("AQ_TEST_FAIL_META_SYNC") != NULL;
	const char *fail_target = getenv("AQ_TEST_FAIL_TARGET_SYNC");
	s->fail_target_sync = fail_target ? (uint32_t)strtoul(fail_target, NULL, 10) + 1 : 0;
	const char *gc_pause = getenv("AQ_TEST_GC_PAUSE_MS");
	s->gc_pause_ms = gc_pause ? (uint32_t)strtoul(gc_pause, NULL, 10) : 0;
	if (colon) {
		s->hold_first = proto_op_named(hold, (size_t)(colon - hold));
		s->hold_ms = (uint32_t)strtoul(colon + 1, NULL, 10);
	}
	pthread_mutex_init(&s->running_mu, NULL);
	pthread_mutex_init(&s->late_mu, NULL);
	pthread_cond_init(&s->running_done, NULL);
	pthread_mutex_init(&s->open_mu, NULL);
	pthread_mutex_init(&s->watch_mu, NULL);
	pthread_mutex_init(&s->gc_mu, NULL);
	/* the collector must not wait behind an endless stream of O_TMPFILE opens */
	pthread_rwlockattr_t rwa;
	pthread_rwlockattr_init(&rwa);
	pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&s->unnamed_rw, &rwa);
	pthread_rwlockattr_destroy(&rwa);
	pthread_cond_init(&s->gc_cond, NULL);
	snprintf(path, sizeof path, "%s/cluster.conf", opt->data_dir);
	rc = cluster_load(path, &s->map, err, sizeof err);
	if (rc) {
		log_error("%s", err);
		goto err_free;
	}
	const struct cluster_server *me = cluster_server_by_id(&s->map, opt->server_id);
	if (!me) {
		log_error("server id %u is not in %s", opt->server_id, path);
		rc = -EINVAL;
		goto err_free;
	}
	for (uint32_t i = 0; i < s->map.ntargets; i++)
		if (s->map.targets[i].server == opt->server_id)
			s->local_targets[s->nlocal++] = s->map.targets[i].id;

	snprintf(path, sizeof path, "%s/meta", opt->data_dir);
	struct stat st;
	bool create = stat(path, &st) != 0;
	if (create && mkdir(path, 0700) && errno != EEXIST) {
		rc = -errno;
		log_error("cannot create %s: %s", path, strerror(errno));
		goto err_free;
	}
	struct meta_options mo = {.nbuckets = s->map.nbuckets, .chunk_size = s->map.chunk_size,
				  .sync = opt->meta_sync, .truncate_fn = truncate_data, .alloc_fn = file_bytes,
				  .truncate_arg = s};
	rc = meta_open(path, create, &mo, &s->meta);
	if (rc) {
		log_error("cannot open metadata store %s: %s", path, aq_strerror(rc));
		goto err_free;
	}
	/* Targets are made together with the metadata store: a cluster whose metadata exists
	 * but whose targets are gone must fail loudly, not start empty. targets/ itself may
	 * already exist (a separate file system mounted there). */
	snprintf(path, sizeof path, "%s/targets", opt->data_dir);
	if (create && mkdir(path, 0700) && errno != EEXIST) {
		rc = -errno;
		goto err_meta;
	}
	struct data_options dop = {.ntargets = s->nlocal, .target_ids = s->local_targets,
				   .capacity_bytes = opt->target_capacity_bytes, .direct_min = opt->direct_read_min};
	rc = data_open(path, create, &dop, &s->data);
	if (rc) {
		log_error("cannot open storage targets under %s: %s", path, aq_strerror(rc));
		goto err_meta;
	}
	char prefix[128];
	snprintf(prefix, sizeof prefix, "aquifer/%s/", s->map.cluster_id);
	struct tier_options to = {.data_dir = opt->data_dir, .prefix = prefix, .meta = s->meta, .data = s->data,
				  .ntargets = s->nlocal, .targets = s->local_targets,
				  .interval_s = opt->tier_interval_s};
	rc = tier_open(&to, &s->tier);
	if (rc) {
		log_error("cannot start the object tier: %s", aq_strerror(rc));
		goto err_data;
	}
	struct net_options no = {.host = me->addr, .port = me->port, .workers = opt->workers,
				.poll_us = opt->poll_us};
	struct net_ops ops = {.on_accept = on_accept, .on_frame = on_frame, .on_close = on_close,
			      .run_inline = run_inline, .quiets_poll = quiets_poll, .big_alloc = data_buf_alloc,
			      .big_free = data_buf_free};
	s->locks = locks_new(lock_done, lock_persist, s);
	if ((rc = locks_reload(s)))
		goto err_tier;
	rc = net_start(&no, &ops, s, &s->net);
	if (rc) {
		log_error("cannot listen on %s:%u: %s", me->addr, me->port, aq_strerror(rc));
		goto err_tier;
	}
	reclaim_start(s);
	pthread_create(&s->gc_thread, NULL, gc_main, s);
	log_info("aqd serving %u buckets and %u targets on %s:%u", s->map.nbuckets, s->nlocal, me->addr, me->port);
	*out = s;
	return 0;
err_tier:
	locks_free(s->locks);
	tier_close(s->tier);
err_data:
	data_close(s->data);
err_meta:
	meta_close(s->meta);
err_free:
	free(s);
	return rc;
}

void server_stop(struct server *s)
{
	pthread_mutex_lock(&s->gc_mu);
	s->gc_stop = true;
	pthread_cond_signal(&s->gc_cond);
	pthread_mutex_unlock(&s->gc_mu);
	pthread_join(s->gc_thread, NULL);
	net_stop(s->net);
	locks_free(s->locks);
	tier_close(s->tier); /* after the last request, before the store it attached to */
	meta_sync(s->meta);
	data_close(s->data);
	meta_close(s->meta);
	for (uint32_t i = 0; i < OPEN_TABLE_SIZE; i++)
		while (s->open_tab[i]) {
			struct open_ent *e = s->open_tab[i];
			s->open_tab[i] = e->next;
			free(e);
		}
	free(s->late);
	free(s);
}

/*
 * locks.c - byte-range and flock locks, held in memory (locks.h), and each inode's locks
 * in one row of the metadata store besides (lock_persist_fn), so that a restart of the
 * server finds them again. One mutex guards the table: a lock request is a few list walks
 * and a row write, and locks are taken far more rarely than files are read.
 */
#include "server/locks.h"
#include "proto/proto.h"
#include <pthread.h>

#define LOCK_BUCKETS 1024
#define CLIENT_BUCKETS 256
#define LOCKS_MAX (1u << 20)        /* locks held at once, all owners: past it ENOLCK */
#define FILE_LOCKS_MAX 4096         /* on one inode: its row, written whole on each change, stays under 160 KB */
#define DEADLOCK_STEPS 10           /* waits followed before giving up the search (Linux's MAX_DEADLK_ITERATIONS) */
#define CANCELS_KEPT 64             /* cancels of waits not yet come, remembered ... */
#define CANCEL_KEEP_NS (10ull * 1000000000ull) /* ... this long */
#define LOCK_ROW_REC 38             /* a lock in its inode's row: client, owner, start, end u64; pid u32; type, flock u8 */

struct lk {
	uint64_t client, owner;
	uint64_t start, end;
	uint32_t type, pid;
	bool flock;
	struct lk *next;
};

struct lwait {
	struct lock_req r;
	void *via, *waiter;         /* the connection it came through, the caller's reply state */
	struct lwait *next;
};

/* One inode's locks and waits (FIFO); gone when both are empty. */
struct lfile {
	uint64_t ino;
	uint32_t n;                 /* locks */
	struct lk *locks;
	struct lwait *waits;
	struct lfile *next;
};

/* A client: how many of its connections are open. Its locks go when the last one closes,
 * or, for one the rows of a restart named, when it has not come back by orphan_until. A
 * client that did not say who it is (no WATCH) has one connection, and its locks are not
 * kept across a restart: nobody could claim them. */
struct lclient {
	uint64_t client;
	uint32_t nconns;
	bool durable;
	uint64_t orphan_until;      /* aq_mono_ns; 0: not an orphan */
	struct lclient *next;
};

struct lock_table {
	pthread_mutex_t mu;
	lock_done_fn done;
	lock_persist_fn persist;
	void *arg;
	struct lfile *bucket[LOCK_BUCKETS];
	struct lclient *clients[CLIENT_BUCKETS];
	uint32_t nlocks, nwaits, norphans;
	struct { uint64_t client, wait_id, at; } cancels[CANCELS_KEPT];
	uint32_t ncancel;           /* next slot (a ring) */
};

struct lock_table *locks_new(lock_done_fn done, lock_persist_fn persist, void *arg)
{
	struct lock_table *t = aq_calloc(1, sizeof *t);
	pthread_mutex_init(&t->mu, NULL);
	t->done = done;
	t->persist = persist;
	t->arg = arg;
	return t;
}

static struct lfile **lfile_slot(struct lock_table *t, uint64_t ino)
{
	struct lfile **pp = &t->bucket[(ino * 0x9E3779B97F4A7C15ull) >> 54];
	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->next;
	return pp;
}

static struct lfile *lfile_get(struct lock_table *t, uint64_t ino)
{
	struct lfile **pp = lfile_slot(t, ino);
	if (!*pp) {
		*pp = aq_calloc(1, sizeof **pp);
		(*pp)->ino = ino;
	}
	return *pp;
}

static struct lclient **client_slot(struct lock_table *t, uint64_t client)
{
	struct lclient **pp = &t->clients[(client * 0x9E3779B97F4A7C15ull) >> 56];
	while (*pp && (*pp)->client != client)
		pp = &(*pp)->next;
	return pp;
}

static bool durable(struct lock_table *t, uint64_t client)
{
	struct lclient *lc = *client_slot(t, client);
	return lc && lc->durable;
}

/* lf goes once it holds nothing. */
static void tidy(struct lock_table *t, struct lfile *lf)
{
	if (lf->locks || lf->waits)
		return;
	struct lfile **pp = lfile_slot(t, lf->ino);
	*pp = lf->next;
	free(lf);
}

/* lf's locks changed: its row is written again (the locks of clients that may claim them
 * after a restart; none: the row goes), and lf goes once it holds nothing. */
static void changed(struct lock_table *t, struct lfile *lf)
{
	if (t->persist) {
		uint32_t n = 0;
		for (struct lk *l = lf->locks; l; l = l->next)
			n += durable(t, l->client);
		uint8_t *row = aq_malloc(4 + (size_t)LOCK_ROW_REC * n), *p = row + 4;
		put_le32(row, n);
		for (struct lk *l = lf->locks; l; l = l->next) {
			if (!durable(t, l->client))
				continue;
			put_le64(p, l->client);
			put_le64(p + 8, l->owner);
			put_le64(p + 16, l->start);
			put_le64(p + 24, l->end);
			put_le32(p + 32, l->pid);
			p[36] = (uint8_t)l->type;
			p[37] = l->flock;
			p += LOCK_ROW_REC;
		}
		t->persist(t->arg, lf->ino, row, n ? (size_t)(p - row) : 0);
		free(row);
	}
	tidy(t, lf);
}

static bool same_owner(const struct lk *l, const struct lock_req *r)
{
	return l->client == r->client && l->owner == r->owner;
}

static bool is_flock(const struct lock_req *r) { return r->flags & AQ_LOCK_FLOCK; }

/* Whether l is r's owner's, of r's kind (flock or byte-range). */
static bool mine(const struct lk *l, const struct lock_req *r) { return l->flock == is_flock(r) && same_owner(l, r); }

/* The first lock of another owner, of r's kind, that r's range and type conflict with. */
static struct lk *conflict_of(const struct lfile *lf, const struct lock_req *r)
{
	if (r->type == AQ_LK_UN)
		return NULL;
	for (struct lk *l = lf->locks; l; l = l->next)
		if (l->flock == is_flock(r) && !same_owner(l, r) && l->start <= r->end && r->start <= l->end &&
		    (l->type == AQ_LK_WR || r->type == AQ_LK_WR))
			return l;
	return NULL;
}

static struct lk *lk_new(struct lock_table *t, struct lfile *lf, const struct lock_req *r, uint64_t start,
			 uint64_t end, uint32_t type)
{
	struct lk *l = aq_calloc(1, sizeof *l);
	*l = (struct lk){.client = r->client, .owner = r->owner, .start = start, .end = end, .type = type,
			 .pid = r->pid, .flock = is_flock(r)};
	t->nlocks++;
	lf->n++;
	return l;
}

static void lk_free(struct lock_table *t, struct lfile *lf, struct lk *l)
{
	free(l);
	t->nlocks--;
	lf->n--;
}

/* Whether r fits: a lock adds at most two (a cut in two, the new one); an unlock one, if
 * it cuts one of its owner's locks in two, else none, so that it always works. */
static bool room(const struct lock_table *t, const struct lfile *lf, const struct lock_req *r)
{
	uint32_t more = 2;
	if (r->type == AQ_LK_UN) {
		more = 0;
		for (const struct lk *l = lf ? lf->locks : NULL; l && !more; l = l->next)
			more = mine(l, r) && l->start < r->start && l->end > r->end;
	}
	return !more || (t->nlocks + more <= LOCKS_MAX && (!lf || lf->n + more <= FILE_LOCKS_MAX));
}

/* Puts n where Linux keeps it, as F_GETLK shows (the first conflict in the list): an
 * owner's locks together, sorted by start; a new owner's after everyone's. */
static void insert(struct lfile *lf, struct lk *n)
{
	struct lk **pp = &lf->locks, **after_own = NULL;
	for (; *pp; pp = &(*pp)->next) {
		struct lk *l = *pp;
		if (l->flock != n->flock || l->client != n->client || l->owner != n->owner)
			continue;
		if (l->start > n->start)
			break;
		after_own = &l->next;
	}
	if (!*pp && after_own)
		pp = after_own;
	n->next = *pp;
	*pp = n;
}

/* Sets r's owner's locks over r's range to r's type (AQ_LK_UN: none), merging with its
 * touching ranges of that type and cutting its others around the range. Needs room for
 * two more locks (a cut in two, the new one): the caller checked. */
static void apply(struct lock_table *t, struct lfile *lf, const struct lock_req *r)
{
	uint64_t s = r->start, e = r->end;
	struct lk **pp = &lf->locks;
	while (*pp) {
		struct lk *l = *pp;
		if (!mine(l, r)) {
			pp = &l->next;
			continue;
		}
		bool overlaps = l->start <= e && s <= l->end;
		bool touches = l->start <= (e == AQ_LK_END ? e : e + 1) && (s ? s - 1 : 0) <= l->end;
		if (r->type != AQ_LK_UN && l->type == r->type && touches) {
			/* merged: the owner's other ranges never overlap this one, so cutting them
			 * around the grown range is cutting them around r's */
			s = MIN(s, l->start);
			e = MAX(e, l->end);
		} else if (!overlaps) {
			pp = &l->next;
			continue;
		} else if (l->start < s || l->end > e) {
			/* what is left of l outside [s, e]: one piece, or two */
			if (l->start < s && l->end > e) { /* the right piece follows the left one */
				struct lk *right = lk_new(t, lf, r, e + 1, l->end, l->type);
				right->pid = l->pid;
				right->next = l->next;
				l->next = right;
			}
			if (l->start < s)
				l->end = s - 1;
			else
				l->start = e + 1;
			pp = &l->next;
			continue;
		}
		*pp = l->next;
		lk_free(t, lf, l);
	}
	if (r->type != AQ_LK_UN)
		insert(lf, lk_new(t, lf, r, s, e, r->type));
}

/* Whether owner (client, owner) waits, in byte-range locks, on a lock whose owner in turn
 * waits ... on r's owner: granting r's wait would close a circle. As Linux, it follows
 * one blocker per waiter, DEADLOCK_STEPS at most. */
static bool deadlocks(struct lock_table *t, const struct lock_req *r, const struct lk *blocker)
{
	uint64_t client = blocker->client, owner = blocker->owner;
	for (int step = 0; step < DEADLOCK_STEPS; step++) {
		if (client == r->client && owner == r->owner)
			return true;
		const struct lk *next = NULL;
		for (uint32_t b = 0; b < LOCK_BUCKETS && !next; b++)
			for (struct lfile *lf = t->bucket[b]; lf && !next; lf = lf->next)
				for (struct lwait *w = lf->waits; w && !next; w = w->next)
					if (!is_flock(&w->r) && w->r.client == client && w->r.owner == owner)
						next = conflict_of(lf, &w->r);
		if (!next)
			return false;
		client = next->client;
		owner = next->owner;
	}
	return false;
}

/* Grants the waits of lf that nothing is in the way of any longer, in the order they came
 * (a grant may free others: a downgrade). */
static void wake(struct lock_table *t, struct lfile *lf)
{
	bool progress = true;
	while (progress) {
		progress = false;
		struct lwait **pp = &lf->waits;
		while (*pp) {
			struct lwait *w = *pp;
			if (conflict_of(lf, &w->r) || !room(t, lf, &w->r)) {
				pp = &w->next;
				continue;
			}
			apply(t, lf, &w->r);
			*pp = w->next;
			t->nwaits--;
			t->done(t->arg, w->waiter, 0);
			free(w);
			progress = true;
		}
	}
}

/* flock(2)'s conversion (shared to exclusive, or back) is not atomic on Linux: the old
 * lock goes first, then the new one is asked for, and may wait or fail (flock_lock_inode).
 * Two holders of a shared lock that both ask for an exclusive one then do not wait on
 * each other for ever: the second is granted. Drops r's owner's flock lock of another
 * type; true if there was one. */
static bool flock_convert(struct lock_table *t, struct lfile *lf, const struct lock_req *r)
{
	for (struct lk **pp = &lf->locks; *pp; pp = &(*pp)->next) {
		struct lk *l = *pp;
		if (mine(l, r) && l->type != r->type) {
			*pp = l->next;
			lk_free(t, lf, l);
			return true;
		}
	}
	return false;
}

static bool cancelled_early(struct lock_table *t, const struct lock_req *r)
{
	uint64_t now = aq_mono_ns();
	for (uint32_t i = 0; i < CANCELS_KEPT; i++)
		if (t->cancels[i].at && now - t->cancels[i].at < CANCEL_KEEP_NS &&
		    t->cancels[i].client == r->client && t->cancels[i].wait_id == r->wait_id) {
			t->cancels[i].at = 0;
			return true;
		}
	return false;
}

/* Ends r's wait (client, wait_id) with -EINTR, or remembers the cancel for a wait that
 * has not come yet: the client's INTERRUPT can overtake its request. */
static void cancel(struct lock_table *t, struct lfile *lf, const struct lock_req *r)
{
	for (struct lwait **pp = lf ? &lf->waits : NULL; pp && *pp; pp = &(*pp)->next) {
		struct lwait *w = *pp;
		if (w->r.client == r->client && w->r.wait_id == r->wait_id) {
			*pp = w->next;
			t->nwaits--;
			t->done(t->arg, w->waiter, -EINTR);
			free(w);
			return;
		}
	}
	uint32_t i = t->ncancel++ % CANCELS_KEPT;
	t->cancels[i].client = r->client;
	t->cancels[i].wait_id = r->wait_id;
	t->cancels[i].at = aq_mono_ns();
}

static int check(const struct lock_req *r)
{
	if (r->flags & ~(AQ_LOCK_WAIT | AQ_LOCK_FLOCK | AQ_LOCK_TEST | PROTO_LOCK_CANCEL))
		return -EINVAL;
	if (r->flags & PROTO_LOCK_CANCEL)
		return r->flags == PROTO_LOCK_CANCEL ? 0 : -EINVAL;
	if (r->type > AQ_LK_UN || r->start > r->end || r->end > AQ_LK_END)
		return -EINVAL;
	if ((r->flags & AQ_LOCK_TEST) && (r->type == AQ_LK_UN || (r->flags & AQ_LOCK_WAIT)))
		return -EINVAL;
	if (is_flock(r) && (r->start || r->end != AQ_LK_END))
		return -EINVAL;
	return 0;
}

int locks_run(struct lock_table *t, const struct lock_req *r, void *via, void *waiter, struct aq_lock *conflict)
{
	int rc = check(r);
	if (rc)
		return rc;
	pthread_mutex_lock(&t->mu);
	struct lfile *lf = *lfile_slot(t, r->ino);
	if (r->flags & PROTO_LOCK_CANCEL) {
		cancel(t, lf, r);
		if (lf)
			tidy(t, lf);
		goto out;
	}
	struct lk *in_way = lf ? conflict_of(lf, r) : NULL;
	if (r->flags & AQ_LOCK_TEST) {
		*conflict = in_way ? (struct aq_lock){.type = in_way->type, .pid = in_way->pid, .start = in_way->start,
						      .end = in_way->end}
				   : (struct aq_lock){.type = AQ_LK_UN};
		goto out;
	}
	if (!lf && r->type == AQ_LK_UN)
		goto out;
	if ((r->flags & AQ_LOCK_WAIT) && cancelled_early(t, r)) {
		rc = -EINTR;
		goto out;
	}
	if (in_way && is_flock(r) && flock_convert(t, lf, r)) {
		/* a conversion that must wait or fail has let go of the old lock first */
		wake(t, lf);
		changed(t, lf);
		lf = *lfile_slot(t, r->ino); /* gone if that emptied it */
		in_way = lf ? conflict_of(lf, r) : NULL;
	}
	if (in_way && !(r->flags & AQ_LOCK_WAIT)) {
		rc = -EAGAIN;
		goto out;
	}
	if (in_way && !is_flock(r) && deadlocks(t, r, in_way)) {
		rc = -EDEADLK;
		goto out;
	}
	if (!in_way && !room(t, lf, r)) {
		rc = -ENOLCK;
		goto out;
	}
	lf = lfile_get(t, r->ino);
	if (in_way) {
		struct lwait *w = aq_calloc(1, sizeof *w), **wp = &lf->waits;
		*w = (struct lwait){.r = *r, .via = via, .waiter = waiter};
		while (*wp)
			wp = &(*wp)->next;
		*wp = w;
		t->nwaits++;
		rc = LOCKS_QUEUED;
		goto out;
	}
	apply(t, lf, r);
	wake(t, lf);
	changed(t, lf);
out:
	pthread_mutex_unlock(&t->mu);
	return rc;
}

/* Drops client's locks everywhere, and grants what that frees. */
static void drop_client(struct lock_table *t, uint64_t client)
{
	for (uint32_t b = 0; b < LOCK_BUCKETS; b++) {
		struct lfile *lf = t->bucket[b];
		while (lf) {
			struct lfile *next = lf->next;
			bool dropped = false;
			for (struct lk **pp = &lf->locks; *pp;) {
				struct lk *l = *pp;
				if (l->client != client) {
					pp = &l->next;
					continue;
				}
				*pp = l->next;
				lk_free(t, lf, l);
				dropped = true;
			}
			if (dropped) {
				wake(t, lf);
				changed(t, lf);
			}
			lf = next;
		}
	}
}

void locks_attach(struct lock_table *t, uint64_t client, bool is_durable)
{
	pthread_mutex_lock(&t->mu);
	struct lclient **pp = client_slot(t, client);
	if (!*pp) {
		*pp = aq_calloc(1, sizeof **pp);
		(*pp)->client = client;
	}
	struct lclient *lc = *pp;
	if (lc->orphan_until) {
		lc->orphan_until = 0; /* came back: its locks are its own again */
		t->norphans--;
	}
	lc->nconns++;
	lc->durable = is_durable;
	pthread_mutex_unlock(&t->mu);
}

void locks_detach(struct lock_table *t, uint64_t client, void *via)
{
	pthread_mutex_lock(&t->mu);
	for (uint32_t b = 0; b < LOCK_BUCKETS && via; b++) {
		struct lfile *lf = t->bucket[b];
		while (lf) {
			struct lfile *next = lf->next;
			for (struct lwait **pp = &lf->waits; *pp;) {
				struct lwait *w = *pp;
				if (w->via != via) {
					pp = &w->next;
					continue;
				}
				*pp = w->next;
				t->nwaits--;
				t->done(t->arg, w->waiter, -ENOTCONN);
				free(w);
			}
			tidy(t, lf);
			lf = next;
		}
	}
	struct lclient **pp = client_slot(t, client), *lc = *pp;
	if (lc && lc->nconns && !--lc->nconns) {
		*pp = lc->next;
		free(lc);
		drop_client(t, client);
	}
	pthread_mutex_unlock(&t->mu);
}

int locks_load(struct lock_table *t, uint64_t ino, const uint8_t *row, size_t len, uint64_t grace_ns)
{
	if (len < 4 || len != 4 + (size_t)LOCK_ROW_REC * get_le32(row))
		return -EINVAL;
	uint32_t n = get_le32(row);
	const uint8_t *p = row + 4;
	for (uint32_t i = 0; i < n; i++, p += LOCK_ROW_REC)
		if (p[36] > AQ_LK_WR || p[37] > 1 || get_le64(p + 16) > get_le64(p + 24) || get_le64(p + 24) > AQ_LK_END)
			return -EINVAL;
	pthread_mutex_lock(&t->mu);
	struct lfile *lf = lfile_get(t, ino);
	for (p = row + 4; n--; p += LOCK_ROW_REC) {
		struct lk *l = aq_calloc(1, sizeof *l);
		*l = (struct lk){.client = get_le64(p), .owner = get_le64(p + 8), .start = get_le64(p + 16),
				 .end = get_le64(p + 24), .pid = get_le32(p + 32), .type = p[36], .flock = p[37]};
		insert(lf, l);
		t->nlocks++;
		lf->n++;
		struct lclient **pp = client_slot(t, l->client);
		if (!*pp) {
			*pp = aq_calloc(1, sizeof **pp);
			**pp = (struct lclient){.client = l->client, .durable = true,
						.orphan_until = aq_mono_ns() + grace_ns};
			t->norphans++;
		}
	}
	pthread_mutex_unlock(&t->mu);
	return 0;
}

void locks_expire(struct lock_table *t)
{
	pthread_mutex_lock(&t->mu);
	uint64_t now = aq_mono_ns();
	for (uint32_t b = 0; b < CLIENT_BUCKETS && t->norphans; b++)
		for (struct lclient **pp = &t->clients[b]; *pp;) {
			struct lclient *lc = *pp;
			if (!lc->orphan_until || now < lc->orphan_until) {
				pp = &lc->next;
				continue;
			}
			log_warn("dropping the locks of client %016llx: it did not come back after the restart",
				 (unsigned long long)lc->client);
			*pp = lc->next;
			t->norphans--;
			uint64_t client = lc->client;
			free(lc);
			drop_client(t, client);
		}
	pthread_mutex_unlock(&t->mu);
}

void locks_count(struct lock_table *t, uint32_t *held, uint32_t *waiting)
{
	pthread_mutex_lock(&t->mu);
	*held = t->nlocks;
	*waiting = t->nwaits;
	pthread_mutex_unlock(&t->mu);
}

void locks_free(struct lock_table *t)
{
	if (!t)
		return;
	for (uint32_t b = 0; b < LOCK_BUCKETS; b++)
		while (t->bucket[b]) {
			struct lfile *lf = t->bucket[b];
			t->bucket[b] = lf->next;
			while (lf->locks) {
				struct lk *l = lf->locks;
				lf->locks = l->next;
				free(l);
			}
			while (lf->waits) {
				struct lwait *w = lf->waits;
				lf->waits = w->next;
				t->done(t->arg, w->waiter, -ENOTCONN);
				free(w);
			}
			free(lf);
		}
	for (uint32_t b = 0; b < CLIENT_BUCKETS; b++)
		while (t->clients[b]) {
			struct lclient *lc = t->clients[b];
			t->clients[b] = lc->next;
			free(lc);
		}
	pthread_mutex_destroy(&t->mu);
	free(t);
}

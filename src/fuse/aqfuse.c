/*
 * aqfuse.c - a thin libfuse3 low-level adapter over libaq. A FUSE node id is an Aquifer
 * inode number with its sequence bits scrambled by its bucket (aq_ino_node, common.h: the
 * kernel's inode hash would otherwise put the inodes of all buckets with one sequence
 * number in one chain); the root maps to FUSE_ROOT_ID = 1 = AQ_ROOT. No table is kept and
 * forget is free. Every op turns the kernel's node ids into inode numbers first. Permissions are checked twice: by the kernel (default_permissions, on cached
 * attributes) and by the server on every request with the caller's uid, gid and groups.
 *
 * The kernel caches entries (also negative ones), attributes and pages for
 * --attr-timeout seconds, by default an hour: a stat of a cached file never reaches this
 * process. It stays coherent with other clients because the servers push every change
 * those make (aq_watch); a thread of its own turns them into the kernel's
 * notify_inval_entry/notify_inval_inode (never a request thread: the kernel may hold the
 * directory's lock while it waits on one of those).
 */
#define FUSE_USE_VERSION 312
#include "fuse/aqfuse.h"
#include "aq.h"
#include "common/common.h"
#include "common/hash.h"
#include <fuse_lowlevel.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

_Static_assert(AQFUSE_IOC_HEARD == _IO(0xAF, 1), "the ioctl number aqfuse.h documents");
_Static_assert(FUSE_ROOT_ID == AQ_ROOT, "FUSE and Aquifer share the root inode number");

/* Requests the mount serves at once: its most worker threads, and the kernel's limit on
 * asynchronous requests (read-ahead, async direct I/O). */
#define AQFUSE_MAX_THREADS 64

static struct aq_client *g_client;
static double g_timeout_s = 1.0;
static bool g_read_only;
static struct fuse_session *g_se;
/* A lock was taken through this mount: read-only opens send their FLUSH from now on
 * (op_open) */
static atomic_bool g_locked;

/* ---- invalidations pushed by the servers, applied by one thread ---- */

struct inval_item {
	struct inval_item *next;
	uint64_t ino, parent;
	size_t len;
	char name[];
};

/* Test hook ($AQ_MOUNT_TEST_PUSH_DELAY_MS): apply every push this long late, and take
 * twice as long to hand each invalidation to the kernel, as a busy client may. */
static unsigned g_test_push_delay_ms;

/* $AQ_MOUNT_DIR_CACHE=0: the kernel keeps no listings (op_opendir), for comparisons. */
static bool g_no_dir_cache;
/* The kernel leaves the umask to us (FUSE_CAP_DONT_MASK, taken with POSIX ACLs): a
 * create sends it to the server, which applies it unless the parent's default ACL
 * decides instead. */
static bool g_dont_mask;

/* Listings the kernel may keep (op_opendir). A reconnection to a server, after which
 * pushes may have been missed, starts a new epoch; each slot says which directory it
 * last saw opened, and in which epoch. */
#define LISTING_SLOTS (1u << 16)
static struct {
	pthread_mutex_t mu;
	uint64_t epoch;
	struct listing_slot { uint64_t ino, epoch; } slot[LISTING_SLOTS];
} g_listings = {.mu = PTHREAD_MUTEX_INITIALIZER, .epoch = 1};

/* Whether what the kernel holds of directory ino's listing may be used: always before
 * the first reconnection, after it not on the first open of the directory in this epoch
 * (nor after another directory took its slot), when it may predate a missed push. */
static bool listing_fresh(uint64_t ino)
{
	pthread_mutex_lock(&g_listings.mu);
	struct listing_slot *sl = &g_listings.slot[(ino * 0x9E3779B97F4A7C15ull) >> 48];
	bool keep = g_listings.epoch == 1 || (sl->ino == ino && sl->epoch == g_listings.epoch);
	sl->ino = ino;
	sl->epoch = g_listings.epoch;
	pthread_mutex_unlock(&g_listings.mu);
	return keep;
}

static void listings_forget(void)
{
	pthread_mutex_lock(&g_listings.mu);
	g_listings.epoch++;
	pthread_mutex_unlock(&g_listings.mu);
}

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_cond_t done_cv;        /* an item was handed to the kernel */
	struct inval_item *head, *tail;
	uint64_t queued, done;
	bool stop;
} g_inval = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .done_cv = PTHREAD_COND_INITIALIZER};

static void inval_queue(uint64_t ino, uint64_t parent, const char *name, size_t len)
{
	struct inval_item *it = aq_malloc(sizeof *it + len + 1);
	it->next = NULL;
	it->ino = ino;
	it->parent = parent;
	it->len = len;
	if (len)
		memcpy(it->name, name, len);
	it->name[len] = 0;
	pthread_mutex_lock(&g_inval.mu);
	if (g_inval.tail)
		g_inval.tail->next = it;
	else
		g_inval.head = it;
	g_inval.tail = it;
	g_inval.queued++;
	pthread_cond_signal(&g_inval.cv);
	pthread_mutex_unlock(&g_inval.mu);
}

/* Waits until what was queued before the call has reached the kernel. */
static void inval_drain(void)
{
	pthread_mutex_lock(&g_inval.mu);
	uint64_t upto = g_inval.queued;
	while (g_inval.done < upto && !g_inval.stop)
		pthread_cond_wait(&g_inval.done_cv, &g_inval.mu);
	pthread_mutex_unlock(&g_inval.mu);
}

static void dattr_forget(uint64_t ino);
static void nox_forget(uint64_t ino);
static void stored_forget(uint64_t ino);
static void names_forget(uint64_t ino);
static void ec_pushed(uint64_t parent, const char *name, size_t len, uint64_t ino);
static struct aq_file *held_file(struct fuse_file_info *fi, int *rc);

static void on_inval(void *arg, const struct aq_inval *iv)
{
	if (g_test_push_delay_ms)
		usleep(g_test_push_delay_ms * 1000u);
	/* A reply that raced this push is not kept: the client counted the push
	 * (aq_inval_seq) before this runs, and keep_attr checks that count. */
	dattr_forget(iv->ino ? iv->ino : iv->parent);
	if (!iv->parent) {
		nox_forget(iv->ino);
		stored_forget(iv->ino);
	}
	names_forget(iv->parent ? iv->parent : iv->ino); /* both 0: every directory */
	ec_pushed(iv->parent, iv->name, iv->name_len, iv->ino);
	if (!iv->ino && !iv->parent) {
		listings_forget();
		log_warn("aq mount: a connection to a server was made again; what other clients changed "
			 "meanwhile may show only after --attr-timeout");
		return;
	}
	inval_queue(iv->ino, iv->parent, iv->name, iv->name_len);
}

static void *inval_main(void *arg)
{
	pthread_mutex_lock(&g_inval.mu);
	for (;;) {
		while (!g_inval.head && !g_inval.stop)
			pthread_cond_wait(&g_inval.cv, &g_inval.mu);
		struct inval_item *it = g_inval.head;
		if (!it)
			break;
		g_inval.head = it->next;
		if (!g_inval.head)
			g_inval.tail = NULL;
		pthread_mutex_unlock(&g_inval.mu);
		if (g_test_push_delay_ms)
			usleep(2 * g_test_push_delay_ms * 1000u);
		/* -ENOENT: the kernel did not have it cached, nothing to drop. The kernel
		 * drops the directory's attributes with an entry only if it had the name
		 * cached: a new name changes them as much (mtime, ctime, nlink), so drop
		 * them too, and first: whoever sees the new name then sees the directory's
		 * new times. With them go the directory's pages, the listing the kernel
		 * keeps (op_opendir), which it would otherwise use again without asking. */
		if (it->parent) {
			fuse_lowlevel_notify_inval_inode(g_se, aq_ino_node(it->parent), 0, 0);
			fuse_lowlevel_notify_inval_entry(g_se, aq_ino_node(it->parent), it->name, it->len);
		} else
			fuse_lowlevel_notify_inval_inode(g_se, aq_ino_node(it->ino), 0, 0);
		free(it);
		pthread_mutex_lock(&g_inval.mu);
		g_inval.done++;
		pthread_cond_broadcast(&g_inval.done_cv);
	}
	pthread_mutex_unlock(&g_inval.mu);
	return NULL;
}

/* When a call began: the pushes heard so far (aq_inval_seq) and this mount's own
 * changes so far. A reply may be kept in the caches below only if neither moved while it
 * was out: otherwise it may predate the change (the kernel guards its own cache the same
 * way, with an attribute version). */
struct cseq {
	uint64_t inval, own;
};

static atomic_ulong g_own_changes;
/* Those of them that leave every statahead listing stale (ec_current_locked): all but
 * changes to one inode's bytes or attributes and creates, which take out just the
 * entries they change once the server has the change (own_wrote, made_in). */
static atomic_ulong g_ec_own;

/* This mount changed something (an unlink, a rename): replies and listings older than
 * now may be stale. */
static void own_change(void)
{
	atomic_fetch_add(&g_own_changes, 1);
	atomic_fetch_add(&g_ec_own, 1);
}

/* This mount is changing one inode's bytes or attributes (a write, a truncate, a chmod):
 * replies older than now may be stale; own_wrote(ino) follows once the server has it. */
static void own_write(void) { atomic_fetch_add(&g_own_changes, 1); }

static struct cseq cseq_now(void) { return (struct cseq){aq_inval_seq(g_client), atomic_load(&g_own_changes)}; }

static bool cseq_current(struct cseq s)
{
	return aq_inval_seq(g_client) == s.inval && atomic_load(&g_own_changes) == s.own;
}

/* A reply built from a call that started at seq: if a change was pushed since, the
 * reply may predate it, and the invalidation may have reached the kernel before the
 * reply did. Drop what the reply put in the kernel's cache once more. */
static void recheck(struct cseq seq, uint64_t parent, const char *name, uint64_t ino)
{
	if (aq_inval_seq(g_client) == seq.inval)
		return;
	if (parent)
		inval_queue(0, parent, name, strlen(name));
	if (ino)
		inval_queue(ino, 0, NULL, 0);
}

/* ---- directory attributes, answered here ----
 *
 * The kernel forgets a directory's attributes whenever a create, unlink or rename in it
 * returns, and default_permissions asks for them again before the next one: without
 * this cache every create in a directory costs a GETATTR round trip to its server. A
 * directory's attributes change only through entries made or removed in it, setattr and
 * xattrs on it. What this mount changes it knows the outcome of (a create's parent gets
 * the new inode's ctime as mtime and ctime, exactly as the server merges it), what other
 * clients change the servers push (on_inval drops the directory, and a reply that raced
 * a push is not kept: the same sequence check as recheck). Only used while pushes work. */
#define DATTR_SLOTS 1024

static bool g_cache_on; /* only while the servers push changes */
/* Test hook ($AQ_MOUNT_TEST_KEEP_DELAY_MS): hold every reply this long before it is
 * kept, and an open's first bytes twice as long before they are stored, so a test can
 * put a change in between. */
static unsigned g_test_keep_delay_ms;
static size_t g_page_size = 4096; /* sysconf's, at mount */

static struct {
	pthread_mutex_t mu;
	struct dattr {
		uint64_t ino; /* 0: empty */
		uint64_t expires_ns;
		struct aq_attr a;
	} slot[DATTR_SLOTS];
} g_dattr = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct dattr *dattr_slot(uint64_t ino) { return &g_dattr.slot[(ino * 0x9E3779B97F4A7C15ull) >> 54]; }

/* Keeps directory ino's attributes a from a reply to a call that began at seq, if
 * nothing changed since; else (or a NULL) forgets ino. Called with g_dattr.mu held. */
static void dattr_put_locked(struct cseq seq, uint64_t ino, const struct aq_attr *a)
{
	struct dattr *d = dattr_slot(ino);
	if (a && cseq_current(seq)) {
		d->ino = ino;
		d->a = *a;
		d->expires_ns = aq_mono_ns() + (uint64_t)(g_timeout_s * 1e9);
	} else if (d->ino == ino) {
		d->ino = 0;
	}
}

/* Keeps a directory's attributes from a reply to a call that began at inval seq. */
static void dattr_put(struct cseq seq, const struct aq_attr *a)
{
	if (!g_cache_on || !S_ISDIR(a->mode))
		return;
	pthread_mutex_lock(&g_dattr.mu);
	dattr_put_locked(seq, a->ino, a);
	pthread_mutex_unlock(&g_dattr.mu);
}

static bool dattr_get(uint64_t ino, struct aq_attr *a)
{
	if (!g_cache_on)
		return false;
	pthread_mutex_lock(&g_dattr.mu);
	struct dattr *d = dattr_slot(ino);
	bool hit = d->ino == ino && aq_mono_ns() < d->expires_ns;
	if (hit)
		*a = d->a;
	pthread_mutex_unlock(&g_dattr.mu);
	return hit;
}

/* ino 0: every directory. */
static void dattr_forget(uint64_t ino)
{
	pthread_mutex_lock(&g_dattr.mu);
	if (ino) {
		struct dattr *d = dattr_slot(ino);
		if (d->ino == ino)
			d->ino = 0;
	} else {
		for (size_t i = 0; i < DATTR_SLOTS; i++)
			g_dattr.slot[i].ino = 0;
	}
	pthread_mutex_unlock(&g_dattr.mu);
}

/* A change of this mount's own: dattr_forget, and replies still out may be older. */
static void dattr_drop(uint64_t ino)
{
	own_change();
	dattr_forget(ino);
}

/* This mount made child in parent: the server stamped the parent's mtime and ctime with
 * the child's ctime (and counted a subdirectory as a link). */
static void dattr_created(uint64_t parent, const struct aq_attr *child)
{
	own_write();
	pthread_mutex_lock(&g_dattr.mu);
	struct dattr *d = dattr_slot(parent);
	if (d->ino == parent) {
		d->a.mtime_ns = MAX(d->a.mtime_ns, child->ctime_ns);
		d->a.ctime_ns = MAX(d->a.ctime_ns, child->ctime_ns);
		if (S_ISDIR(child->mode))
			d->a.nlink++;
	}
	pthread_mutex_unlock(&g_dattr.mu);
}

/* After an unlink in parent: keeps the directory's attributes its reply brought (dir;
 * NULL after a failure), unless a push or another change of this mount came while it was
 * out, and counts the change, in one step: a reply to another call that began before
 * this unlink can then not be kept after it (the kernel asks for the directory again
 * right after every unlink: before this, each such GETATTR went to the server). */
static void dattr_unlinked(struct cseq seq, uint64_t parent, const struct aq_attr *dir)
{
	bool keep = g_cache_on && dir && dir->ino == parent && S_ISDIR(dir->mode);
	pthread_mutex_lock(&g_dattr.mu);
	dattr_put_locked(seq, parent, keep ? dir : NULL);
	own_change();
	pthread_mutex_unlock(&g_dattr.mu);
}

/* ---- "no extended attributes", answered here ----
 *
 * ls -l asks two getxattrs per file (security.selinux, system.posix_acl_access): each
 * was a round trip to the inode's server, for attributes almost no file has. Every reply
 * that carries an inode's attributes says whether it may have any (AQ_ATTR_XATTRS); the
 * mount remembers inodes that have none and answers ENODATA, or an empty list, itself.
 * Coherent as the directory attributes above: the servers push every xattr change, a
 * push for the inode forgets it, and a reply that raced a push is not kept. A warm ls -l
 * asks without a lookup first, so the table must hold a whole big directory: 2^20 inode
 * numbers (an inoset). */
#define INOSET_BITS 20

/* A set of inode numbers, one per slot (a collision forgets the older one), forgotten
 * whole once --attr-timeout passes. The table (8 MiB) is allocated on first use. */
struct inoset {
	pthread_mutex_t mu;
	uint64_t *slot; /* inode numbers; 0: empty */
	uint64_t expires_ns;
};

static struct inoset g_nox = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* The slot for ino, with the table fresh. Called with s->mu held. */
static uint64_t *inoset_slot(struct inoset *s, uint64_t ino)
{
	uint64_t now = aq_mono_ns();
	if (!s->slot)
		s->slot = aq_calloc(1ull << INOSET_BITS, sizeof(*s->slot));
	if (now >= s->expires_ns) {
		memset(s->slot, 0, (1ull << INOSET_BITS) * sizeof(*s->slot));
		s->expires_ns = now + (uint64_t)(g_timeout_s * 1e9);
	}
	return &s->slot[(ino * 0x9E3779B97F4A7C15ull) >> (64 - INOSET_BITS)];
}

/* Adds ino when in is true and nothing was pushed or changed here since seq (the fact
 * may predate a change otherwise); else takes it out. */
static void inoset_put(struct inoset *s, struct cseq seq, uint64_t ino, bool in)
{
	pthread_mutex_lock(&s->mu);
	uint64_t *x = inoset_slot(s, ino);
	if (in && cseq_current(seq))
		*x = ino;
	else if (*x == ino)
		*x = 0;
	pthread_mutex_unlock(&s->mu);
}

static bool inoset_has(struct inoset *s, uint64_t ino)
{
	pthread_mutex_lock(&s->mu);
	bool in = *inoset_slot(s, ino) == ino;
	pthread_mutex_unlock(&s->mu);
	return in;
}

/* ino 0: every inode. */
static void inoset_forget(struct inoset *s, uint64_t ino)
{
	pthread_mutex_lock(&s->mu);
	uint64_t *x = inoset_slot(s, ino);
	if (!ino)
		s->expires_ns = 0; /* the next use clears the table */
	else if (*x == ino)
		*x = 0;
	pthread_mutex_unlock(&s->mu);
}

/* An inode's attributes from a reply to a call that began at inval seq. */
static void nox_put(struct cseq seq, const struct aq_attr *a)
{
	if (g_cache_on)
		inoset_put(&g_nox, seq, a->ino, !(a->flags & AQ_ATTR_XATTRS));
}

static bool nox_none(uint64_t ino) { return g_cache_on && inoset_has(&g_nox, ino); }

static void nox_forget(uint64_t ino) { inoset_forget(&g_nox, ino); }

/* A change of this mount's own: nox_forget, and replies still out may be older. */
static void nox_drop(uint64_t ino)
{
	own_change();
	nox_forget(ino);
}

/* ---- free names in directories this mount made, answered here ----
 *
 * Before every create the kernel LOOKUPs the name, to learn it is free: in an ingest that
 * is a round trip to the name's server per file that only ever says ENOENT. A directory
 * this mount made starts empty and, until another client changes it, holds exactly the
 * names this mount put in it. For such a directory the mount keeps a hash of each of
 * those names and answers a LOOKUP of any other name "no such entry" itself, as the
 * kernel's own negative entries do: coherent with other clients through the same pushes
 * (a push about the directory, or a reconnection, forgets it; a reply that raced one is
 * invalidated again by recheck). A hash that matches goes to the server (a name made
 * here whose entry the kernel dropped, or a collision), so the set only has to hold
 * every name that exists: an operation whose outcome is unknown adds its name, an EEXIST
 * (someone else's name, its push still on the way) forgets the directory. At most
 * NAMES_DIRS directories and NAMES_MAX names in all; past that a directory is forgotten
 * and its lookups go to the server, as do those of any directory after --attr-timeout. */
#define NAMES_DIRS 16
#define NAMES_MAX (1u << 21) /* 2^21 names: tables of at most 2^22 slots, 32 MiB */

static struct {
	pthread_mutex_t mu;
	struct names_dir {
		uint64_t ino; /* 0: a free slot */
		uint64_t expires_ns, used;
		uint64_t *h;  /* linear probing; 0: empty */
		uint32_t cap, n;
	} d[NAMES_DIRS];
	uint64_t total, tick;
} g_names = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t name_hash(uint64_t dir, const char *name)
{
	uint64_t h = aq_hash64(name, strlen(name), dir ^ 0x6e616d657366726full);
	return h ? h : 1;
}

/* The directory's entry, if this mount knows all its names. Called with g_names.mu held. */
static struct names_dir *names_find(uint64_t ino)
{
	for (size_t i = 0; i < NAMES_DIRS; i++)
		if (g_names.d[i].ino == ino && ino)
			return &g_names.d[i];
	return NULL;
}

static void names_forget_locked(struct names_dir *d)
{
	g_names.total -= d->n;
	free(d->h);
	memset(d, 0, sizeof *d);
}

/* ino 0: every directory. */
static void names_forget(uint64_t ino)
{
	pthread_mutex_lock(&g_names.mu);
	for (size_t i = 0; i < NAMES_DIRS; i++)
		if (g_names.d[i].ino && (!ino || g_names.d[i].ino == ino))
			names_forget_locked(&g_names.d[i]);
	pthread_mutex_unlock(&g_names.mu);
}

/* The slot of hash h in d: where it is, or the empty one where it would go. */
static uint32_t names_slot(const struct names_dir *d, uint64_t h)
{
	uint32_t i = (uint32_t)(h >> 32) & (d->cap - 1);
	while (d->h[i] && d->h[i] != h)
		i = (i + 1) & (d->cap - 1);
	return i;
}

static void names_insert_locked(struct names_dir *d, uint64_t h)
{
	if (d->h[names_slot(d, h)] == h)
		return;
	if (g_names.total >= NAMES_MAX) {
		names_forget_locked(d);
		return;
	}
	if (2 * (d->n + 1) > d->cap) {
		struct names_dir old = *d;
		d->cap *= 2;
		d->h = aq_calloc(d->cap, sizeof *d->h);
		for (uint32_t i = 0; i < old.cap; i++)
			if (old.h[i])
				d->h[names_slot(d, old.h[i])] = old.h[i];
		free(old.h);
	}
	d->h[names_slot(d, h)] = h;
	d->n++;
	g_names.total++;
}

/* A directory this mount just made: empty, so every name in it is free. */
static void names_start(uint64_t ino)
{
	if (!g_cache_on)
		return;
	pthread_mutex_lock(&g_names.mu);
	struct names_dir *d = names_find(ino), *lru = &g_names.d[0];
	for (size_t i = 0; !d && i < NAMES_DIRS; i++) {
		if (!g_names.d[i].ino) {
			d = &g_names.d[i];
			break;
		}
		if (g_names.d[i].used < lru->used)
			lru = &g_names.d[i];
	}
	if (!d)
		d = lru;
	if (d->ino)
		names_forget_locked(d);
	d->ino = ino;
	d->cap = 1024;
	d->h = aq_calloc(d->cap, sizeof *d->h);
	d->expires_ns = aq_mono_ns() + (uint64_t)(g_timeout_s * 1e9);
	d->used = ++g_names.tick;
	pthread_mutex_unlock(&g_names.mu);
}

/* name may exist in dir now (made, linked or renamed there, or the outcome is unknown). */
static void names_add(uint64_t dir, const char *name)
{
	pthread_mutex_lock(&g_names.mu);
	struct names_dir *d = names_find(dir);
	if (d)
		names_insert_locked(d, name_hash(dir, name));
	pthread_mutex_unlock(&g_names.mu);
}

/* name is gone from dir (unlinked or renamed away here). Backward-shift deletion keeps
 * every other hash reachable from its home slot. */
static void names_remove(uint64_t dir, const char *name)
{
	pthread_mutex_lock(&g_names.mu);
	struct names_dir *d = names_find(dir);
	uint64_t h = d ? name_hash(dir, name) : 0;
	uint32_t i = d ? names_slot(d, h) : 0;
	if (d && d->h[i] == h) {
		uint32_t mask = d->cap - 1, j = i;
		d->h[i] = 0;
		for (;;) {
			j = (j + 1) & mask;
			if (!d->h[j])
				break;
			uint32_t home = (uint32_t)(d->h[j] >> 32) & mask;
			/* move d->h[j] into the hole at i unless its home lies in (i, j] */
			if (((j - home) & mask) >= ((j - i) & mask)) {
				d->h[i] = d->h[j];
				d->h[j] = 0;
				i = j;
			}
		}
		d->n--;
		g_names.total--;
	}
	pthread_mutex_unlock(&g_names.mu);
}

/* True when name is certainly not in dir: this mount knows every name there. */
static bool names_absent(uint64_t dir, const char *name)
{
	if (!g_cache_on)
		return false;
	pthread_mutex_lock(&g_names.mu);
	struct names_dir *d = names_find(dir);
	bool absent = false;
	if (d && aq_mono_ns() >= d->expires_ns)
		names_forget_locked(d);
	else if (d) {
		uint64_t h = name_hash(dir, name);
		absent = d->h[names_slot(d, h)] != h;
		d->used = ++g_names.tick;
	}
	pthread_mutex_unlock(&g_names.mu);
	return absent;
}

/* ---- entries of directories being read through, answered here (statahead) ----
 *
 * A training loader opens every file of a dataset, in random order, epoch after epoch;
 * each open is a LOOKUP the kernel sends unless it still caches the name, which it does
 * not once memory is short (or the page cache was dropped). When a directory draws
 * ECACHE_TRIGGER lookups that found an entry, a thread of the mount lists it once with
 * attributes (readdirplus, a streamed listing) and the mount answers the lookups of the
 * names it holds itself, as Lustre's statahead does. Names it does not hold go to the
 * server as before, so a listing cut short at ECACHE_MAX entries is still right.
 *
 * Many directories are held at once (a dataset in class directories, ImageNet's 1,000,
 * read in one random order), in one table keyed by directory and name and indexed by
 * inode number too, up to ECACHE_MAX entries in all: a listing that would pass it drops
 * the directories answered from least recently. Each directory's lookups are counted on
 * their own (EC_DIRS directories at a time). A directory's listing dropped is not taken
 * out entry by entry: its record's epoch moves on, which leaves its entries dead where
 * they lie, and the table is rebuilt of the live ones once the dead outnumber them.
 *
 * What other clients change arrives by push and takes out just the names and inodes it
 * names (new names were never in a set: an ingest into the directory leaves it
 * standing); pushes that arrive while a listing runs are kept and applied to it when it
 * is done. Changes made through this mount to one inode (a write, a truncate, a chmod)
 * and creates take out what they change the same way once the server has them
 * (own_wrote, made_in); its other changes (an unlink, a rename) are not tracked
 * one by one: any of those since a directory's listing began drops it (g_ec_own). A
 * directory dropped before it paid for itself waits four times as many lookups before
 * its next listing.
 *
 * The listing also asks, a page of entries at a time in one batch, where each small
 * file's bytes lie on this machine (aq_locate_first; files of up to LOCATED_MAX whose
 * first chunk is on a local disk): the open of such a file then reads them itself and
 * asks aqd nothing (op_open, "opens answered from a location"). A location goes with its
 * entry, so the pushes that take an entry out take its location too. */
#define ECACHE_TRIGGER 64
#define ECACHE_MAX (1u << 20) /* entries held; about 170 bytes each, and a located file's 100 more */
#define ECACHE_LOC_PAGE 256   /* entries listed, then located, at a time */
#define LOCATED_MAX (256u << 10) /* the biggest file whose location a listing asks for */
#define EC_DIRS 4096          /* directories whose lookups are counted at once, listed or not */
#define EC_REBUILD_MIN 65536  /* entries the table holds before dead ones are worth a rebuild */

/* Test hook ($AQ_MOUNT_TEST_ECACHE_MAX): hold this many entries at most, and rebuild the
 * table once it holds four times that, so a test drives drops and rebuilds with a few
 * hundred files. */
static uint32_t g_ec_max = ECACHE_MAX, g_ec_rebuild_min = EC_REBUILD_MIN;
/* Test hook ($AQ_MOUNT_TEST_EC_DIRS): count this many directories at most (of EC_DIRS). */
static uint32_t g_ec_dirs = EC_DIRS;

struct eent {
	uint64_t h;         /* ec_hash(dir, name) */
	uint64_t dir;
	uint32_t name_off, name_len;
	uint32_t d, epoch;  /* its directory's record, and that record's epoch when listed */
	struct aq_attr a;   /* a.ino 0: taken out by a push */
	struct aq_loc *loc; /* where a small file's bytes lie on this machine, or NULL */
};

#define EC_PENDING_MAX 4096 /* pushes kept while a listing runs; past that it is given up */

struct ec_push {
	uint64_t parent, ino;
	uint32_t len;
	char name[AQ_NAME_MAX + 1];
};

/* A table of entries, their names, and two indexes (by directory and name, by inode
 * number). A listing builds one of its own; the mount holds one of every directory. */
struct ecset {
	struct eent *ents;
	uint32_t *slot;        /* by name: index + 1 into ents; 0: empty */
	uint32_t *islot;       /* by inode number, the same */
	bool links;            /* some inode has two names here */
	uint32_t cap, n;
	char *names;
	size_t names_len, names_cap;
};

/* A directory whose lookups are counted, and its listing once it has one. */
struct ecdir {
	uint64_t dir;          /* 0: a free record */
	uint32_t epoch;        /* moved on when its listing is dropped: its entries are dead */
	bool listed;
	unsigned long own;     /* g_ec_own when its listing began */
	uint64_t expires_ns, used;
	uint32_t n;            /* entries its listing added */
	uint32_t hits;         /* lookups answered from it */
	uint32_t misses;       /* lookups that found an entry at the server, while not listed */
	uint32_t trigger;      /* misses before its next listing */
};

static void ecset_free(struct ecset *s)
{
	for (uint32_t i = 0; i < s->n; i++)
		aq_loc_free(s->ents[i].loc);
	free(s->ents);
	free(s->slot);
	free(s->islot);
	free(s->names);
	*s = (struct ecset){0};
}

static struct {
	pthread_mutex_t mu;
	struct ecset set;      /* the entries of every directory listed, live and dead */
	uint32_t live;         /* entries of directories listed now */
	struct ecdir dirs[EC_DIRS];
	uint16_t dslot[2 * EC_DIRS]; /* by directory: index + 1 into dirs */
	uint32_t ndirs;        /* records in use */
	uint32_t hand;         /* the next record ec_dir looks at to take over */
	uint64_t tick;         /* for ecdir.used */
	uint64_t gen;          /* bumped by every name or inode a push takes out */
	struct ec_push *pending; /* pushes heard while the listing runs */
	uint32_t npending;
	bool pending_lost;
	uint64_t fill_dir;     /* the directory being listed */
	bool filling, stop;
	pthread_cond_t filled; /* a listing ended (ec_stop waits for it) */
} g_ec = {.mu = PTHREAD_MUTEX_INITIALIZER, .filled = PTHREAD_COND_INITIALIZER};

static uint64_t ec_hash(uint64_t dir, const char *name, size_t len)
{
	uint64_t h = aq_hash64(name, len, 0x7374617461686561ull ^ (dir * 0x9E3779B97F4A7C15ull));
	return h ? h : 1;
}

/* Whether entry e of the mount's table still stands: not taken out, its directory's
 * listing the one that added it. With g_ec.mu held. */
static bool ec_live(const struct eent *e)
{
	const struct ecdir *r = &g_ec.dirs[e->d];
	return e->a.ino && r->listed && r->epoch == e->epoch;
}

/* In a listing's own table every entry stands but those a push took out; in the mount's,
 * ec_live says. */
static bool ec_stands(const struct ecset *s, const struct eent *e)
{
	return s != &g_ec.set ? e->a.ino != 0 : ec_live(e);
}

static uint32_t *ec_ifind(const struct ecset *s, uint64_t ino)
{
	uint32_t i = (uint32_t)((ino * 0x9E3779B97F4A7C15ull) >> 32) & (s->cap - 1);
	while (s->islot[i] && s->ents[s->islot[i] - 1].a.ino != ino)
		i = (i + 1) & (s->cap - 1);
	return &s->islot[i];
}

static uint32_t *ec_find(const struct ecset *s, uint64_t h, uint64_t dir, const char *name, size_t len)
{
	uint32_t i = (uint32_t)(h >> 32) & (s->cap - 1);
	for (; s->slot[i]; i = (i + 1) & (s->cap - 1)) {
		const struct eent *e = &s->ents[s->slot[i] - 1];
		if (e->h == h && e->dir == dir && e->name_len == len && !memcmp(s->names + e->name_off, name, len))
			break;
	}
	return &s->slot[i];
}

/* Puts entry i in both indexes: a slot of the same name, or inode, whose entry no longer
 * stands is given to it; an inode another standing entry has is a second name of it. */
static void ec_index(struct ecset *s, uint32_t i)
{
	const struct eent *e = &s->ents[i];
	uint32_t *sl = ec_find(s, e->h, e->dir, s->names + e->name_off, e->name_len);
	if (*sl && ec_stands(s, &s->ents[*sl - 1]))
		return; /* listed twice (cannot happen; harmless) */
	*sl = i + 1;
	sl = ec_ifind(s, e->a.ino);
	if (*sl && ec_stands(s, &s->ents[*sl - 1]))
		s->links = true;
	else
		*sl = i + 1;
}

/* Adds an entry (a copy of e, with its name), and indexes it. */
static void ec_add(struct ecset *s, const struct eent *e, const char *name)
{
	if (2 * (s->n + 1) > s->cap) {
		uint32_t cap = s->cap ? 2 * s->cap : 4096;
		free(s->slot);
		free(s->islot);
		s->slot = aq_calloc(cap, sizeof *s->slot);
		s->islot = aq_calloc(cap, sizeof *s->islot);
		s->cap = cap;
		s->ents = aq_realloc(s->ents, (size_t)cap / 2 * sizeof *s->ents);
		s->links = false;
		for (uint32_t i = 0; i < s->n; i++)
			if (ec_stands(s, &s->ents[i]))
				ec_index(s, i);
	}
	if (s->names_len + e->name_len > s->names_cap) {
		s->names_cap = MAX(2 * s->names_cap, s->names_len + e->name_len + 65536);
		s->names = aq_realloc(s->names, s->names_cap);
	}
	memcpy(s->names + s->names_len, name, e->name_len);
	struct eent *x = &s->ents[s->n];
	*x = *e;
	x->name_off = (uint32_t)s->names_len;
	s->names_len += e->name_len;
	ec_index(s, s->n++);
}

#define EC_DSLOTS (2 * EC_DIRS)

static uint32_t ec_dhome(uint64_t dir)
{
	return (uint32_t)((dir * 0x9E3779B97F4A7C15ull) >> 32) & (EC_DSLOTS - 1);
}

/* The slot of dir in the index of records, or the empty one where it would go. */
static uint32_t ec_dslot(uint64_t dir)
{
	uint32_t i = ec_dhome(dir);
	while (g_ec.dslot[i] && g_ec.dirs[g_ec.dslot[i] - 1].dir != dir)
		i = (i + 1) & (EC_DSLOTS - 1);
	return i;
}

/* Empties slot i of the index of records, moving back the ones after it that probing
 * would no longer reach (linear probing's deletion). */
static void ec_dslot_clear(uint32_t i)
{
	for (uint32_t j = (i + 1) & (EC_DSLOTS - 1); g_ec.dslot[j]; j = (j + 1) & (EC_DSLOTS - 1)) {
		uint32_t home = ec_dhome(g_ec.dirs[g_ec.dslot[j] - 1].dir);
		/* j's entry stays unless its home lies cyclically outside (i, j] */
		bool stays = i < j ? home > i && home <= j : home > i || home <= j;
		if (!stays) {
			g_ec.dslot[i] = g_ec.dslot[j];
			i = j;
		}
	}
	g_ec.dslot[i] = 0;
}

/* The record of dir, NULL when there is none; with make, one is made if a record is
 * free, or else one of a directory neither listed nor being listed is taken over (the
 * next such after the last one taken: a clock's hand). With g_ec.mu held. */
static struct ecdir *ec_dir(uint64_t dir, bool make)
{
	uint32_t i = ec_dslot(dir);
	if (g_ec.dslot[i] || !make)
		return g_ec.dslot[i] ? &g_ec.dirs[g_ec.dslot[i] - 1] : NULL;
	struct ecdir *r = NULL;
	if (g_ec.ndirs < g_ec_dirs) {
		r = &g_ec.dirs[g_ec.ndirs++];
	} else {
		for (uint32_t k = 0; k < g_ec_dirs && !r; k++) {
			struct ecdir *x = &g_ec.dirs[g_ec.hand++ % g_ec_dirs];
			if (!x->listed && !(g_ec.filling && x->dir == g_ec.fill_dir))
				r = x;
		}
		if (!r)
			return NULL;
		ec_dslot_clear(ec_dslot(r->dir));
		i = ec_dslot(dir);
	}
	/* the epoch carries on: entries a record's last directory left stay dead */
	*r = (struct ecdir){.dir = dir, .epoch = r->epoch + 1, .trigger = ECACHE_TRIGGER, .used = ++g_ec.tick};
	g_ec.dslot[i] = (uint16_t)(r - g_ec.dirs + 1);
	return r;
}

/* Drops a directory's listing. One dropped before it answered as many lookups as it took
 * to start makes the next start costlier. With g_ec.mu held. */
static void ec_drop_locked(struct ecdir *r)
{
	if (!r->listed)
		return;
	r->trigger = r->hits < r->trigger ? MIN(r->trigger * 4, g_ec_max) : ECACHE_TRIGGER;
	r->listed = false;
	r->epoch++;
	g_ec.live -= r->n;
	r->n = 0;
	if (!g_ec.live) /* nothing stands: the memory goes */
		ecset_free(&g_ec.set);
}

static void ec_drop_all_locked(void)
{
	for (uint32_t k = 0; k < g_ec.ndirs; k++)
		ec_drop_locked(&g_ec.dirs[k]);
}

/* Whether r's listing is held and current; one that is stale (a change of this mount's
 * own since its listing began) or old (--attr-timeout) is dropped. With g_ec.mu held. */
static bool ec_current_locked(struct ecdir *r)
{
	if (r && r->listed && (atomic_load(&g_ec_own) != r->own || aq_mono_ns() >= r->expires_ns))
		ec_drop_locked(r);
	return r && r->listed;
}

/* The mount's table made again of the entries that stand. With g_ec.mu held. */
static void ec_rebuild_locked(void)
{
	struct ecset old = g_ec.set, s = {0};
	g_ec.set = s; /* ec_stands judges the table being built as the mount's */
	for (uint32_t i = 0; i < old.n; i++) {
		struct eent *e = &old.ents[i];
		if (ec_live(e)) {
			ec_add(&g_ec.set, e, old.names + e->name_off);
			e->loc = NULL; /* moved */
		}
	}
	ecset_free(&old);
}

struct ec_fill {
	uint64_t dir;
	struct aq_cred cr;
	unsigned long own;
};

/* A push takes out what it names: an entry of a listed directory, or an inode (every
 * name of one with two names here: every listing). Called with g_ec.mu held. */
static void ec_apply_locked(uint64_t parent, const char *name, size_t len, uint64_t ino)
{
	if (!g_ec.live)
		return;
	uint32_t i = *ec_find(&g_ec.set, ec_hash(parent, name, len), parent, name, len);
	if (i && ec_live(&g_ec.set.ents[i - 1])) {
		g_ec.set.ents[i - 1].a.ino = 0; /* the slot stays: probing goes past it */
		g_ec.gen++;
	}
	if (ino) {
		i = *ec_ifind(&g_ec.set, ino);
		if (i && ec_live(&g_ec.set.ents[i - 1]) && g_ec.set.links) {
			ec_drop_all_locked();
			g_ec.gen++;
		} else if (i && ec_live(&g_ec.set.ents[i - 1])) {
			g_ec.set.ents[i - 1].a.ino = 0;
			g_ec.gen++;
		}
	}
}

/* A push from a server (on_inval): parent 0 and ino 0 mean changes were lost. */
static void ec_pushed(uint64_t parent, const char *name, size_t len, uint64_t ino)
{
	pthread_mutex_lock(&g_ec.mu);
	if (!parent && !ino) {
		ec_drop_all_locked();
		g_ec.pending_lost = true;
	} else {
		ec_apply_locked(parent, name, len, ino);
		if (g_ec.filling && (parent == g_ec.fill_dir || ino)) {
			if (g_ec.npending == EC_PENDING_MAX || len > AQ_NAME_MAX) {
				g_ec.pending_lost = true;
			} else {
				if (!g_ec.pending)
					g_ec.pending = aq_malloc(EC_PENDING_MAX * sizeof *g_ec.pending);
				struct ec_push *p = &g_ec.pending[g_ec.npending++];
				p->parent = parent;
				p->ino = ino;
				p->len = (uint32_t)len;
				if (len)
					memcpy(p->name, name, len);
			}
		}
	}
	pthread_mutex_unlock(&g_ec.mu);
}

/* Where the small files of a page of listed entries (s's from first on) lie, asked in one
 * batch; false once a page's small files were found nowhere here (a mount on another
 * machine than the servers, local reads off): the listing asks no more. */
static bool ec_locate(struct ecset *s, uint32_t first)
{
	uint64_t inos[ECACHE_LOC_PAGE];
	uint32_t at[ECACHE_LOC_PAGE], n = 0;
	for (uint32_t i = first; i < s->n && n < ECACHE_LOC_PAGE; i++) {
		const struct aq_attr *a = &s->ents[i].a;
		if (S_ISREG(a->mode) && a->size && a->size <= LOCATED_MAX) {
			at[n] = i;
			inos[n++] = a->ino;
		}
	}
	if (!n)
		return true;
	struct aq_loc *locs[ECACHE_LOC_PAGE];
	int found = aq_locate_first(g_client, inos, n, locs);
	for (uint32_t j = 0; j < n; j++)
		s->ents[at[j]].loc = locs[j];
	return found > 0;
}

/* A listing's entries (s, its own table) joined to the mount's, as directory r's. Room is
 * made first: the directories answered from least recently are dropped while the live
 * entries would pass ECACHE_MAX, and the table is rebuilt once most of it is dead. With
 * g_ec.mu held. */
static void ec_join_locked(struct ecdir *r, struct ecset *s)
{
	while (g_ec.live && g_ec.live + s->n > g_ec_max) {
		struct ecdir *lru = NULL;
		for (uint32_t k = 0; k < g_ec.ndirs; k++)
			if (g_ec.dirs[k].listed && (!lru || g_ec.dirs[k].used < lru->used))
				lru = &g_ec.dirs[k];
		ec_drop_locked(lru);
	}
	if (g_ec.set.n > g_ec_rebuild_min && g_ec.set.n > 2 * (g_ec.live + s->n))
		ec_rebuild_locked();
	r->listed = true;
	r->n = s->n;
	r->hits = 0;
	r->used = ++g_ec.tick;
	g_ec.live += s->n;
	for (uint32_t i = 0; i < s->n; i++) {
		s->ents[i].d = (uint32_t)(r - g_ec.dirs);
		s->ents[i].epoch = r->epoch;
	}
	if (!g_ec.set.n) { /* the first: taken whole */
		g_ec.set = *s;
		*s = (struct ecset){0};
		return;
	}
	for (uint32_t i = 0; i < s->n; i++) {
		ec_add(&g_ec.set, &s->ents[i], s->names + s->ents[i].name_off);
		s->ents[i].loc = NULL; /* moved */
	}
}

static void *ec_fill_main(void *arg)
{
	struct ec_fill *f = arg;
	struct ecset s = {0};
	struct aq_dir *d = NULL;
	const uint32_t page = ECACHE_LOC_PAGE;
	struct aq_dirent *ents = aq_malloc(page * sizeof *ents);
	bool locate = true;
	int rc = aq_dir_open(g_client, &f->cr, f->dir, AQ_READDIR_PLUS, &d);
	while (!rc && s.n < g_ec_max && atomic_load(&g_ec_own) == f->own &&
	       !__atomic_load_n(&g_ec.stop, __ATOMIC_RELAXED)) {
		int n = aq_dir_read(d, ents, page);
		if (n <= 0) {
			rc = n;
			break;
		}
		uint32_t first = s.n;
		for (int i = 0; i < n && s.n < g_ec_max; i++) {
			struct eent e = {.h = ec_hash(f->dir, ents[i].name, ents[i].name_len), .dir = f->dir,
					 .name_len = (uint32_t)ents[i].name_len, .a = ents[i].attr};
			ec_add(&s, &e, ents[i].name);
		}
		if (locate)
			locate = ec_locate(&s, first);
	}
	if (d)
		aq_dir_close(d);
	free(ents);
	pthread_mutex_lock(&g_ec.mu);
	g_ec.filling = false;
	pthread_cond_broadcast(&g_ec.filled);
	struct ecdir *r = ec_dir(f->dir, true);
	if (r && !rc && s.n && atomic_load(&g_ec_own) == f->own && !g_ec.pending_lost && !g_ec.stop) {
		ec_drop_locked(r);
		r->own = f->own;
		r->expires_ns = aq_mono_ns() + (uint64_t)(g_timeout_s * 1e9);
		ec_join_locked(r, &s);
		/* what changed while the listing ran, it may or may not have seen: out */
		for (uint32_t i = 0; i < g_ec.npending && r->listed; i++) {
			const struct ec_push *p = &g_ec.pending[i];
			ec_apply_locked(p->parent, p->name, p->len, p->ino);
		}
	} else if (r) {
		/* changed under the listing, or it failed (no read permission): this directory
		 * waits longer (it alone: one directory's churn left every other one waiting
		 * four times as long from then on) */
		r->trigger = MIN(r->trigger * 4, g_ec_max);
	}
	g_ec.npending = 0;
	g_ec.pending_lost = false;
	free(g_ec.pending);
	g_ec.pending = NULL;
	pthread_mutex_unlock(&g_ec.mu);
	ecset_free(&s);
	free(f);
	return NULL;
}

/* A lookup in dir found an entry at the server: enough of them start a listing. */
static void ec_missed(uint64_t dir, const struct aq_cred *cr)
{
	if (!g_cache_on)
		return;
	pthread_mutex_lock(&g_ec.mu);
	struct ecdir *r = ec_dir(dir, true);
	pthread_t t;
	if (r && !r->listed) {
		r->used = ++g_ec.tick;
		if (++r->misses >= r->trigger && !g_ec.filling && !g_ec.stop) {
			struct ec_fill *f = aq_malloc(sizeof *f);
			*f = (struct ec_fill){.dir = dir, .cr = *cr, .own = atomic_load(&g_ec_own)};
			r->misses = 0;
			g_ec.filling = true;
			g_ec.fill_dir = dir;
			g_ec.npending = 0;
			g_ec.pending_lost = false;
			pthread_attr_t at;
			pthread_attr_init(&at);
			pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
			if (pthread_create(&t, &at, ec_fill_main, f)) {
				g_ec.filling = false;
				free(f);
			}
			pthread_attr_destroy(&at);
		}
	}
	pthread_mutex_unlock(&g_ec.mu);
}

/* At unmount: no new listing, the one running ends before the client goes. */
static void ec_stop(void)
{
	pthread_mutex_lock(&g_ec.mu);
	g_ec.stop = true;
	while (g_ec.filling)
		pthread_cond_wait(&g_ec.filled, &g_ec.mu);
	ec_drop_all_locked();
	ecset_free(&g_ec.set);
	pthread_mutex_unlock(&g_ec.mu);
}

/* The entry for name in dir, if a listing of dir holds it and is current; *gen is the
 * push count then (for ec_recheck). */
static bool ec_get(uint64_t dir, const char *name, struct aq_attr *a, uint64_t *gen)
{
	if (!g_cache_on)
		return false;
	bool hit = false;
	pthread_mutex_lock(&g_ec.mu);
	struct ecdir *r = g_ec.live ? ec_dir(dir, false) : NULL;
	if (ec_current_locked(r)) {
		size_t len = strlen(name);
		uint32_t i = *ec_find(&g_ec.set, ec_hash(dir, name, len), dir, name, len);
		if (i && ec_live(&g_ec.set.ents[i - 1])) {
			*a = g_ec.set.ents[i - 1].a;
			*gen = g_ec.gen;
			r->hits++;
			r->used = ++g_ec.tick;
			hit = true;
		}
	}
	pthread_mutex_unlock(&g_ec.mu);
	return hit;
}

/* After answering from a listing: a push counted before it took the entry out (the
 * server counts, then the callback runs) may have reached the kernel before the answer
 * did. If any push took something out since, or the listing went, the kernel forgets
 * the answer again. */
static void ec_recheck(uint64_t gen, uint64_t parent, const char *name, uint64_t ino)
{
	pthread_mutex_lock(&g_ec.mu);
	struct ecdir *r = ec_dir(parent, false);
	bool moved = g_ec.gen != gen || !r || !r->listed;
	pthread_mutex_unlock(&g_ec.mu);
	if (moved) {
		inval_queue(0, parent, name, strlen(name));
		inval_queue(ino, 0, NULL, 0);
	}
}

/* The entry that stands for inode ino in a current listing, or NULL. With g_ec.mu held. */
static struct eent *ec_ino_locked(uint64_t ino)
{
	uint32_t i = g_ec.live ? *ec_ifind(&g_ec.set, ino) : 0;
	struct eent *e = i ? &g_ec.set.ents[i - 1] : NULL;
	return e && ec_live(e) && ec_current_locked(&g_ec.dirs[e->d]) ? e : NULL;
}

/* The location statahead found for inode ino, a copy (aq_loc_free), with its attributes
 * in *a; NULL when no listing holds one (an entry a push took out is not found by inode). */
static struct aq_loc *ec_loc(uint64_t ino, struct aq_attr *a)
{
	if (!g_cache_on)
		return NULL;
	struct aq_loc *l = NULL;
	pthread_mutex_lock(&g_ec.mu);
	struct eent *e = ec_ino_locked(ino);
	if (e && e->loc) {
		*a = e->a;
		l = aq_loc_dup(e->loc);
	}
	pthread_mutex_unlock(&g_ec.mu);
	return l;
}

/* ino's location led nowhere (the record moved or changed): not asked again. */
static void ec_loc_failed(uint64_t ino)
{
	pthread_mutex_lock(&g_ec.mu);
	struct eent *e = ec_ino_locked(ino);
	if (e) {
		aq_loc_free(e->loc);
		e->loc = NULL;
	}
	pthread_mutex_unlock(&g_ec.mu);
}

/* Inodes open here that aqd may forget while they are, with the newest attributes heard
 * of each: directories (one removed while open, by rmdir or a rename over it, is gone
 * from aqd, yet fstat(2) of its descriptor answers on Linux, with nlink 0: xfstests
 * generic/035), and files opened from a location, which aqd never counted open (freed
 * once unlinked). The kernel asks without the handle, so op_getattr looks here when aqd
 * says ENOENT. */
#define OPEN_INOS_SLOTS 256
struct open_ino {
	struct open_ino *next;
	uint64_t ino;
	uint32_t refs;
	bool known;
	struct aq_attr a;
};
static struct {
	pthread_mutex_t mu;
	atomic_uint n; /* inodes held: keep_attr looks here only when some are */
	struct open_ino *slot[OPEN_INOS_SLOTS];
} g_open_inos = {.mu = PTHREAD_MUTEX_INITIALIZER};

static struct open_ino **open_ino_find_locked(uint64_t ino)
{
	struct open_ino **p = &g_open_inos.slot[(ino * 0x9E3779B97F4A7C15ull) >> 56];
	while (*p && (*p)->ino != ino)
		p = &(*p)->next;
	return p;
}

/* Holds ino, with attributes a when given (a file opened from a location), else those
 * last heard (a directory). */
static void open_ino_hold(uint64_t ino, const struct aq_attr *a)
{
	pthread_mutex_lock(&g_open_inos.mu);
	struct open_ino **p = open_ino_find_locked(ino);
	if (!*p) {
		*p = aq_calloc(1, sizeof **p);
		(*p)->ino = ino;
		atomic_fetch_add(&g_open_inos.n, 1);
	}
	if (a) {
		(*p)->a = *a;
		(*p)->known = true;
	} else if (!(*p)->known) {
		/* the lookup or getattr that came before the open, whatever its age */
		pthread_mutex_lock(&g_dattr.mu);
		struct dattr *d = dattr_slot(ino);
		if (d->ino == ino) {
			(*p)->a = d->a;
			(*p)->known = true;
		}
		pthread_mutex_unlock(&g_dattr.mu);
	}
	(*p)->refs++;
	pthread_mutex_unlock(&g_open_inos.mu);
}

static void open_ino_release(uint64_t ino)
{
	pthread_mutex_lock(&g_open_inos.mu);
	struct open_ino **p = open_ino_find_locked(ino), *od = *p;
	if (od && --od->refs == 0) {
		*p = od->next;
		free(od);
		atomic_fetch_sub(&g_open_inos.n, 1);
	}
	pthread_mutex_unlock(&g_open_inos.mu);
}

static void open_ino_note(const struct aq_attr *a)
{
	if (!S_ISDIR(a->mode) || atomic_load(&g_open_inos.n) == 0)
		return;
	pthread_mutex_lock(&g_open_inos.mu);
	struct open_ino *od = *open_ino_find_locked(a->ino);
	if (od) {
		od->a = *a;
		od->known = true;
	}
	pthread_mutex_unlock(&g_open_inos.mu);
}

/* The attributes of inode ino, open here and removed: what was last heard, nlink 0. */
static bool open_ino_removed(uint64_t ino, struct aq_attr *a)
{
	if (atomic_load(&g_open_inos.n) == 0)
		return false;
	pthread_mutex_lock(&g_open_inos.mu);
	struct open_ino *od = *open_ino_find_locked(ino);
	bool hit = od && od->known;
	if (hit) {
		*a = od->a;
		a->nlink = 0;
	}
	pthread_mutex_unlock(&g_open_inos.mu);
	return hit;
}

/* The server has this mount's change to ino's bytes or attributes (after own_write):
 * statahead takes out its entry, as for a push, where every listing was dropped (a
 * training job writing its log or checkpoints through the mount beside its reads
 * dropped them all at every write). */
static void own_wrote(uint64_t ino) { ec_pushed(0, NULL, 0, ino); }

/* What a reply told about an inode, kept for the kernel's next questions. */
static void keep_attr(struct cseq seq, const struct aq_attr *a)
{
	if (g_test_keep_delay_ms)
		usleep(g_test_keep_delay_ms * 1000u);
	dattr_put(seq, a);
	nox_put(seq, a);
	open_ino_note(a);
}

/* The errno an application gets. A server that stayed unreachable past libaq's
 * reconnect window ($AQ_RECONNECT_S, 60 s) is an I/O error to the application, as a
 * failed disk is on ext4 or a soft NFS mount's lost server: write(2) and fsync(2) have no
 * ECONNREFUSED. The cause goes to the mount's log, at most every 10 s. */
static int posix_err(int rc)
{
	if (!aq_err_unreachable(rc))
		return aq_errno_posix(rc);
	static _Atomic uint64_t logged_ns;
	uint64_t now = aq_mono_ns(), last = atomic_load(&logged_ns);
	if (now - last > 10 * 1000000000ULL && atomic_compare_exchange_strong(&logged_ns, &last, now))
		log_warn("a server is unreachable (%s): answering EIO", aq_strerror(rc));
	return EIO;
}

/* The caller's uid and gid. Supplementary groups cost a read of /proc per request, so
 * they are fetched only when the server refused without them (WITH_GROUPS). */
static void cred_of(fuse_req_t req, struct aq_cred *cr)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	cr->uid = ctx->uid;
	cr->gid = ctx->gid;
	cr->ngroups = 0;
}

/* Adds the caller's supplementary groups; false when it has none beyond its gid. */
static bool cred_add_groups(fuse_req_t req, struct aq_cred *cr)
{
	gid_t groups[32];
	int n = fuse_req_getgroups(req, 32, groups);
	cr->ngroups = 0;
	for (int i = 0; i < n && i < 32; i++)
		if (groups[i] != cr->gid)
			cr->groups[cr->ngroups++] = groups[i];
	return cr->ngroups > 0;
}

/* Runs call with the caller's credentials; on a permission error retries once after
 * sending the attribute changes this mount deferred (the kernel checked against them, the
 * server did not have them yet: a chmod or chown of a file still open for writing), and
 * once with the supplementary groups added. Nothing changed when the server said EACCES
 * or EPERM. */
#define REFUSED(rc) ((rc) == -EACCES || (rc) == -EPERM)
#define WITH_GROUPS(req, cr, call)                                                          \
	({                                                                                  \
		int rc_ = (call);                                                           \
		if (REFUSED(rc_) && aq_send_deferred(g_client))                             \
			rc_ = (call);                                                       \
		if (REFUSED(rc_) && cred_add_groups(req, &(cr)))                            \
			rc_ = (call);                                                       \
		rc_;                                                                        \
	})

static void to_stat(const struct aq_attr *a, struct stat *st)
{
	memset(st, 0, sizeof *st);
	st->st_ino = a->ino;
	st->st_mode = a->mode;
	st->st_nlink = a->nlink;
	st->st_uid = a->uid;
	st->st_gid = a->gid;
	st->st_rdev = a->rdev;
	st->st_size = (off_t)a->size;
	st->st_blocks = (blkcnt_t)a->blocks;
	st->st_blksize = 1 << 20;
	st->st_atim.tv_sec = a->atime_ns / 1000000000;
	st->st_atim.tv_nsec = a->atime_ns % 1000000000;
	st->st_mtim.tv_sec = a->mtime_ns / 1000000000;
	st->st_mtim.tv_nsec = a->mtime_ns % 1000000000;
	st->st_ctim.tv_sec = a->ctime_ns / 1000000000;
	st->st_ctim.tv_nsec = a->ctime_ns % 1000000000;
}

static void to_entry(const struct aq_attr *a, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof *e);
	e->ino = aq_ino_node(a->ino); /* st_ino stays a->ino */
	e->generation = a->generation;
	e->attr_timeout = g_timeout_s;
	e->entry_timeout = g_timeout_s;
	to_stat(a, &e->attr);
}

static void reply_entry_or_err(fuse_req_t req, int rc, const struct aq_attr *a)
{
	if (rc) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	struct fuse_entry_param e;
	to_entry(a, &e);
	fuse_reply_entry(req, &e);
}

#define RO_CHECK(req)                              \
	do {                                       \
		if (g_read_only) {                 \
			fuse_reply_err(req, EROFS); \
			return;                    \
		}                                  \
	} while (0)

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	conn->max_write = 1 << 20;
	conn->max_read = 1 << 20;
	conn->max_readahead = 1 << 20;
	/* asynchronous requests (read-ahead, async direct I/O) the kernel lets out at once:
	 * its default of 12 is below what the threads above can serve */
	conn->max_background = AQFUSE_MAX_THREADS;
	conn->congestion_threshold = AQFUSE_MAX_THREADS * 3 / 4;
	if (conn->capable & FUSE_CAP_READDIRPLUS)
		conn->want |= FUSE_CAP_READDIRPLUS;
	/* Plus only where it pays: the kernel asks for attributes with the first page, and
	 * for the rest only once the lister looks entries up (ls -l, not ls or find): a
	 * page with attributes costs the server an inode read per entry. */
	if (conn->capable & FUSE_CAP_READDIRPLUS_AUTO)
		conn->want |= FUSE_CAP_READDIRPLUS_AUTO;
	if (conn->capable & FUSE_CAP_ASYNC_READ)
		conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* Files keep their page cache across opens (keep_cache), and a push of another
	 * client's change drops it (inval_main). Not FUSE_CAP_AUTO_INVAL_DATA, which drops
	 * it whenever a getattr shows another size or mtime: a write invalidates the size,
	 * so every read after a write asked for the attributes and then dropped the file's
	 * whole page cache for the mtime the write itself had set. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	/* No kernel write-back cache: with it the kernel keeps its own size and times of
	 * every cached regular file and ignores the server's (fuse_get_cache_mask), so a
	 * file another client grew would stay short here (design.md, "No write-back cache"). */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* POSIX ACLs: the kernel keeps each inode's ACLs (fetched with a getxattr, dropped
	 * when its attributes are fetched again or a push invalidates it) and checks them
	 * with default_permissions; the servers keep the mode in step, apply default ACLs on
	 * create and check them again (src/meta/acl.c). With them the kernel would apply the
	 * umask even where a default ACL replaces it, so it is left to the servers. */
	if ((conn->capable & FUSE_CAP_POSIX_ACL) && (conn->capable & FUSE_CAP_DONT_MASK)) {
		conn->want |= FUSE_CAP_POSIX_ACL | FUSE_CAP_DONT_MASK;
		g_dont_mask = true;
	}
}

/* A create's mode with the caller's umask, when the kernel did not apply it. */
static uint32_t create_mode(fuse_req_t req, mode_t mode)
{
	return g_dont_mask ? (uint32_t)mode | AQ_MODE_UMASK(fuse_req_ctx(req)->umask) : (uint32_t)mode;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent_node, const char *name)
{
	uint64_t parent = aq_node_ino(parent_node);
	struct aq_cred cr;
	struct aq_attr a;
	cred_of(req, &cr);
	if (strlen(name) > AQ_NAME_MAX) {
		/* before the caches below, which would call it absent: the kernel lets names
		 * up to FUSE's 1024 bytes through (pjdfstest rename/01.t, link/02.t) */
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	uint64_t gen;
	if (ec_get(parent, name, &a, &gen)) {
		reply_entry_or_err(req, 0, &a);
		ec_recheck(gen, parent, name, a.ino);
		return;
	}
	struct cseq seq = cseq_now();
	int rc = names_absent(parent, name) ? -ENOENT
					    : WITH_GROUPS(req, cr, aq_lookup(g_client, &cr, parent, name, &a));
	if (!rc)
		ec_missed(parent, &cr);
	if (rc == -ENOENT) {
		/* a negative entry: the kernel remembers the name is free (a create by another
		 * client drops it, see inval_main) */
		struct fuse_entry_param e = {.ino = 0, .entry_timeout = g_timeout_s};
		fuse_reply_entry(req, &e);
		recheck(seq, parent, name, 0);
		return;
	}
	if (!rc)
		keep_attr(seq, &a);
	reply_entry_or_err(req, rc, &a);
	if (!rc)
		recheck(seq, parent, name, a.ino);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino_node, struct fuse_file_info *fi)
{
	uint64_t ino = aq_node_ino(ino_node);
	struct aq_attr a;
	struct stat st;
	if (dattr_get(ino, &a)) {
		to_stat(&a, &st);
		fuse_reply_attr(req, &st, g_timeout_s);
		return;
	}
	struct cseq seq = cseq_now();
	int rc = aq_getattr(g_client, NULL, ino, &a);
	if (rc == -ENOENT && open_ino_removed(ino, &a)) {
		to_stat(&a, &st);
		fuse_reply_attr(req, &st, g_timeout_s);
		return;
	}
	if (rc) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	keep_attr(seq, &a);
	to_stat(&a, &st);
	fuse_reply_attr(req, &st, g_timeout_s);
	recheck(seq, 0, NULL, ino);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino_node, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
	uint64_t ino = aq_node_ino(ino_node);
	RO_CHECK(req);
	struct aq_cred cr;
	cred_of(req, &cr);
	struct aq_attr in = {0}, out;
	uint32_t mask = 0;
	if (to_set & FUSE_SET_ATTR_MODE) { mask |= AQ_SET_MODE; in.mode = attr->st_mode; }
	if (to_set & FUSE_SET_ATTR_UID) { mask |= AQ_SET_UID; in.uid = attr->st_uid; }
	if (to_set & FUSE_SET_ATTR_GID) { mask |= AQ_SET_GID; in.gid = attr->st_gid; }
	if (to_set & FUSE_SET_ATTR_SIZE) { mask |= AQ_SET_SIZE; in.size = (uint64_t)attr->st_size; }
	if (to_set & FUSE_SET_ATTR_ATIME_NOW) mask |= AQ_SET_ATIME_NOW;
	else if (to_set & FUSE_SET_ATTR_ATIME) {
		mask |= AQ_SET_ATIME;
		in.atime_ns = attr->st_atim.tv_sec * 1000000000ll + attr->st_atim.tv_nsec;
	}
	if (to_set & FUSE_SET_ATTR_MTIME_NOW) mask |= AQ_SET_MTIME_NOW;
	else if (to_set & FUSE_SET_ATTR_MTIME) {
		mask |= AQ_SET_MTIME;
		in.mtime_ns = attr->st_mtim.tv_sec * 1000000000ll + attr->st_mtim.tv_nsec;
	}
	if (to_set & FUSE_SET_ATTR_CTIME) {
		mask |= AQ_SET_CTIME;
		in.ctime_ns = attr->st_ctim.tv_sec * 1000000000ll + attr->st_ctim.tv_nsec;
	}
	/* a chown, or a truncate by someone without CAP_FSETID (devio.c) */
	if (devio_kill())
		mask |= AQ_SET_KILL_SXID;
	/* tar and cp -a set times, owner and mode through the descriptor they wrote: those
	 * may go with the file's writes (aq.h) */
	mask |= AQ_SET_DEFER;
	/* what those drop depends on the caller's groups (sxid_kill_bits): a member of the
	 * file's group through a supplementary one keeps a setgid without group exec */
	if ((mask & (AQ_SET_KILL_SXID | AQ_SET_SIZE)) && cr.uid != 0)
		cred_add_groups(req, &cr);
	struct cseq seq = cseq_now();
	/* fi: the kernel names the descriptor of a truncate (ftruncate, open with O_TRUNC),
	 * always a regular file's */
	int rc = 0;
	struct aq_file *f = fi && (mask & AQ_SET_SIZE) ? held_file(fi, &rc) : NULL;
	rc = rc ? rc : f ? WITH_GROUPS(req, cr, aq_file_setattr(f, &cr, mask, &in, &out))
		   : WITH_GROUPS(req, cr, aq_setattr(g_client, &cr, ino, mask, &in, &out));
	if (rc) {
		dattr_drop(ino);
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	keep_attr(seq, &out); /* replies older than this one were still out: they fail the check */
	own_write();
	own_wrote(ino);
	struct stat st;
	to_stat(&out, &st);
	fuse_reply_attr(req, &st, g_timeout_s);
	recheck(seq, 0, NULL, ino);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino_node)
{
	uint64_t ino = aq_node_ino(ino_node);
	char buf[AQ_PATH_MAX + 1];
	int rc = aq_readlink_ino(g_client, NULL, ino, buf, sizeof buf);
	if (rc < 0)
		fuse_reply_err(req, posix_err(rc));
	else
		fuse_reply_readlink(req, buf);
}

/* This mount changed directory dir's entries: the listing the kernel keeps of it
 * (FOPEN_CACHE_DIR) loses its pages before the reply. The kernel starts a complete kept
 * listing over by itself once the directory's version moved, but one it had only begun (a
 * reader that stopped after a first getdents) it goes on filling from where it stopped,
 * with what the mount says now, under the old start: a rewound descriptor then listed a
 * removed name or missed a new one (xfstests generic/637, about one run in twenty). A
 * listing with a page gone is never used: the kernel starts it over, or, when it was
 * still being filled, lists through the mount until the inode leaves its cache. */
static void listing_changed(uint64_t dir)
{
	if (g_cache_on && !g_no_dir_cache)
		fuse_lowlevel_notify_inval_inode(g_se, aq_ino_node(dir), 0, 0);
}

/* After a create of name in parent: the parent's attributes as the server now has them,
 * and its names. */
static void made_in(struct cseq seq, uint64_t parent, const char *name, int rc, const struct aq_attr *child)
{
	if (rc == -EEXIST)
		names_forget(parent); /* a name this mount did not know of */
	else
		names_add(parent, name);
	if (!rc) {
		keep_attr(seq, child); /* before dattr_created counts this change */
		dattr_created(parent, child);
		/* statahead: the parent's entry (its times, its link count) and the child's,
		 * if a listing had it (a name another client had made, opened by this create);
		 * a new name was never in a listing */
		own_wrote(parent);
		own_wrote(child->ino);
		listing_changed(parent);
	} else if (rc != -EEXIST && rc != -EACCES && rc != -EPERM)
		dattr_drop(parent);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent_node, const char *name, mode_t mode, dev_t rdev)
{
	uint64_t parent = aq_node_ino(parent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	struct aq_attr a;
	cred_of(req, &cr);
	struct cseq seq = cseq_now();
	int rc = WITH_GROUPS(req, cr, aq_mknod(g_client, &cr, parent, name, create_mode(req, mode), (uint32_t)rdev,
						       AQ_CREATE_EXCL, &a));
	made_in(seq, parent, name, rc, &a);
	reply_entry_or_err(req, rc, &a);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent_node, const char *name, mode_t mode)
{
	uint64_t parent = aq_node_ino(parent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	struct aq_attr a;
	cred_of(req, &cr);
	struct cseq seq = cseq_now();
	int rc = WITH_GROUPS(req, cr, aq_mkdir_at(g_client, &cr, parent, name, create_mode(req, mode), &a));
	made_in(seq, parent, name, rc, &a);
	if (!rc)
		names_start(a.ino);
	reply_entry_or_err(req, rc, &a);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent_node, const char *name)
{
	uint64_t parent = aq_node_ino(parent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	struct aq_attr a;
	cred_of(req, &cr);
	struct cseq seq = cseq_now();
	int rc = WITH_GROUPS(req, cr, aq_symlink_at(g_client, &cr, parent, name, link, &a));
	made_in(seq, parent, name, rc, &a);
	reply_entry_or_err(req, rc, &a);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent_node, const char *name)
{
	uint64_t parent = aq_node_ino(parent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	cred_of(req, &cr);
	struct cseq seq = cseq_now();
	struct aq_attr dir;
	int rc = WITH_GROUPS(req, cr, aq_unlink_at_dir(g_client, &cr, parent, name, &dir));
	if (!rc) {
		names_remove(parent, name);
		listing_changed(parent);
	}
	dattr_unlinked(seq, parent, rc ? NULL : &dir);
	fuse_reply_err(req, posix_err(rc));
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent_node, const char *name)
{
	uint64_t parent = aq_node_ino(parent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	cred_of(req, &cr);
	int rc = WITH_GROUPS(req, cr, aq_rmdir_at(g_client, &cr, parent, name));
	if (!rc) {
		names_remove(parent, name);
		listing_changed(parent);
	}
	dattr_drop(0); /* the parent, and the removed directory, whose number is not known here */
	fuse_reply_err(req, posix_err(rc));
}

static void op_rename(fuse_req_t req, fuse_ino_t parent_node, const char *name, fuse_ino_t newparent_node,
		      const char *newname, unsigned int flags)
{
	uint64_t parent = aq_node_ino(parent_node);
	uint64_t newparent = aq_node_ino(newparent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	cred_of(req, &cr);
	uint32_t f = 0;
	if (flags & RENAME_NOREPLACE)
		f |= AQ_RENAME_NOREPLACE;
	if (flags & RENAME_EXCHANGE)
		f |= AQ_RENAME_EXCHANGE;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	int rc = WITH_GROUPS(req, cr, aq_rename_at(g_client, &cr, parent, name, newparent, newname, f));
	names_add(newparent, newname); /* whatever the outcome: the set may hold too much, never too little */
	if (!rc && !(f & AQ_RENAME_EXCHANGE))
		names_remove(parent, name);
	if (!rc) {
		listing_changed(parent);
		if (newparent != parent)
			listing_changed(newparent);
	}
	dattr_drop(0); /* both parents, and a moved directory's ctime */
	fuse_reply_err(req, posix_err(rc));
}

static void op_link(fuse_req_t req, fuse_ino_t ino_node, fuse_ino_t newparent_node, const char *newname)
{
	uint64_t ino = aq_node_ino(ino_node);
	uint64_t newparent = aq_node_ino(newparent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	struct aq_attr a;
	cred_of(req, &cr);
	struct cseq seq = cseq_now();
	int rc = WITH_GROUPS(req, cr, aq_link_at(g_client, &cr, ino, newparent, newname, &a));
	names_add(newparent, newname);
	if (!rc) {
		nox_put(seq, &a);
		listing_changed(newparent);
	}
	dattr_drop(newparent);
	reply_entry_or_err(req, rc, &a);
}

/* ---- a read-only open's first bytes, put in the kernel's page cache ----
 *
 * A file opened for reading: the bytes its OPEN brought (its first up to 256 KiB) go
 * into the kernel's page cache before the open returns, so that the first read(2) is
 * answered there, without a READ round trip to this mount (a training loader opens,
 * reads whole and closes every sample). The bytes left the server before seq's pushes
 * and own changes may have been accounted for: if either moved, the stored pages may
 * predate a change whose invalidation reached the kernel first, so they go again.
 *
 * Waiting for the bytes is worth it only when the kernel lacks them: g_stored holds the
 * inodes whose first bytes this mount stored, that the kernel has not forgotten and that
 * no push has touched since (writes through this mount keep the kernel's pages right
 * themselves). Their opens return at once and ask the server for no bytes; a read the
 * kernel's cache no longer covers (it evicted the pages) is a plain READ. A warm epoch
 * of 20,000 images went from 8.1k to 7.0k samples/s when every open waited and stored. */
static struct inoset g_stored = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void stored_forget(uint64_t ino) { inoset_forget(&g_stored, ino); }

static void store_first_bytes(struct cseq seq, uint64_t ino, struct aq_file *f)
{
	const void *data;
	bool eof;
	struct aq_bytes *bytes;
	ssize_t n = aq_open_bytes(f, &data, &eof, &bytes);
	/* whole pages only, but for the file's last one */
	size_t len = n <= 0 ? 0 : eof ? (size_t)n : (size_t)n & ~(g_page_size - 1);
	if (len) {
		if (g_test_keep_delay_ms) /* longer than a kept reply is held: a test gets a
					   * GETATTR's reply to the kernel before the bytes */
			usleep(2 * g_test_keep_delay_ms * 1000u);
		struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
		bv.buf[0].mem = (void *)data;
		bool stored = fuse_lowlevel_notify_store(g_se, aq_ino_node(ino), 0, &bv, 0) == 0;
		if (stored && !cseq_current(seq))
			inval_queue(ino, 0, NULL, 0);
		inoset_put(&g_stored, seq, ino, stored);
	}
	aq_bytes_free(bytes);
}

/* The kernel sends FORGET when it drops an inode, and its page cache goes with it: the
 * next open must store the first bytes again. (A page evicted from a live inode is not
 * told; its read is then a plain READ.) Without this, every epoch after a drop of the
 * caches (aq bench train --cold) paid a READ round trip per sample: 4.4-4.8k samples/s
 * against 5.5-5.8k in a fresh mount's first epoch. */
static void op_forget(fuse_req_t req, fuse_ino_t node, uint64_t nlookup)
{
	stored_forget(aq_node_ino(node));
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		stored_forget(aq_node_ino(forgets[i].ino));
	fuse_reply_none(req);
}

/* A write, a truncating open or an fallocate through f (node's) by someone without
 * CAP_FSETID, now that the kernel leaves the setuid and setgid bits to the mount
 * (devio.c): drops them before the bytes land, as Linux does, unless this client knows
 * there are none. The kernel is then told to drop the inode's attributes: after these
 * calls it fetches only size and times again, and kept the old mode for a stat that asks
 * for the mode alone (`stat -c %a`, statx with STATX_MODE; xfstests generic/683). No
 * pages go, so no lock the kernel holds for the call is needed. */
static int kill_sxid(fuse_req_t req, fuse_ino_t node, struct aq_file *f)
{
	if (!aq_file_sxid(f))
		return 0;
	struct aq_cred cr;
	struct aq_attr in = {0}, out;
	cred_of(req, &cr);
	cred_add_groups(req, &cr); /* a group member keeps a setgid without group exec */
	struct cseq seq = cseq_now();
	int rc = aq_file_setattr(f, &cr, AQ_SET_KILL_SXID, &in, &out);
	if (rc)
		return rc;
	keep_attr(seq, &out);
	fuse_lowlevel_notify_inval_inode(g_se, node, -1, 0);
	return 0;
}

/* ---- opens answered from a location ----
 *
 * A read-only open of a small file whose location statahead found (ec_loc): the mount
 * reads its bytes from aqd's segment file itself (aq_loc_read: the record's header and
 * every block's crc32c checked), puts them in the kernel's page cache and answers; aqd
 * is sent no OPEN, only word that the file was read (a LOCATE nobody waits for: its
 * atime, the object tier). A loader that opens, reads whole and closes each sample then
 * waits for no thread of aqd at all (docs/performance.md, "Opens from a location"). The
 * kernel checked the caller's permissions against the attributes it holds
 * (default_permissions), as it does for every open; what aqd would have said of the file
 * is what its entry says, as current as the entry is kept by pushes. The handle holds
 * the bytes until its release: a read the page cache no longer covers is answered from
 * them while nothing changed since the open (no push, no change through this mount), or
 * when aqd no longer has the file (unlinked since: the descriptor keeps what it read, as
 * on ext4); else, and for anything else (a read past them, a lock, fsync), the file is
 * opened at aqd then (held_file). At most HELD_MAX bytes are held at once; past that,
 * opens go to aqd. */
#define HELD_MAX (64u << 20)

struct held {
	uint64_t ino;
	int flags;
	struct cseq seq;     /* before the bytes were located */
	struct aq_cred cr;
	pthread_mutex_t mu;
	struct aq_file *f;   /* opened at aqd once something needs it */
	void *mem;
	const char *data;    /* the file's bytes [0, len) when opened */
	uint32_t len;
};
static atomic_ulong g_held_bytes;

/* fi's handle holds no aq_file but a struct held: its low bit */
static struct held *held_of(const struct fuse_file_info *fi)
{
	return (fi->fh & 1) ? (struct held *)(uintptr_t)(fi->fh & ~(uint64_t)1) : NULL;
}

/* The aq_file behind fi: a held handle's is opened at aqd the first time it is asked
 * for (NULL with *rc then, if that fails). */
static struct aq_file *held_file(struct fuse_file_info *fi, int *rc)
{
	struct held *h = held_of(fi);
	if (!h)
		return (struct aq_file *)(uintptr_t)fi->fh;
	pthread_mutex_lock(&h->mu);
	if (!h->f)
		*rc = aq_open_ino_lazy_nodata(g_client, &h->cr, h->ino, h->flags, &h->f);
	struct aq_file *f = h->f;
	pthread_mutex_unlock(&h->mu);
	return f;
}

static void held_free(struct held *h)
{
	open_ino_release(h->ino);
	atomic_fetch_sub(&g_held_bytes, h->len);
	free(h->mem);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

/* Opens ino for reading from its location, if statahead found one: true once answered. */
static bool open_located(fuse_req_t req, uint64_t ino, fuse_ino_t node, struct cseq seq, struct fuse_file_info *fi)
{
	struct aq_attr a;
	struct aq_loc *l = ec_loc(ino, &a);
	if (!l)
		return false;
	uint32_t len = (uint32_t)a.size; /* at most LOCATED_MAX: aq_loc_read checks it against the record */
	void *mem = NULL;
	const void *data;
	int rc = 0;
	if (atomic_fetch_add(&g_held_bytes, len) + len > HELD_MAX) {
		atomic_fetch_sub(&g_held_bytes, len);
		rc = -ENOMEM;
	} else if (!rc && (rc = aq_loc_read(g_client, ino, l, len, &mem, &data)) != 0) {
		atomic_fetch_sub(&g_held_bytes, len);
		if (rc != -EAGAIN) /* moved or changed: the next open asks aqd */
			ec_loc_failed(ino);
	}
	aq_loc_free(l);
	if (rc)
		return false;
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(len);
	bv.buf[0].mem = (void *)data;
	bool stored = fuse_lowlevel_notify_store(g_se, node, 0, &bv, 0) == 0;
	if (stored && !cseq_current(seq))
		inval_queue(ino, 0, NULL, 0);
	inoset_put(&g_stored, seq, ino, stored);
	struct held *h = aq_calloc(1, sizeof *h);
	*h = (struct held){.ino = ino, .flags = fi->flags, .seq = seq, .mem = mem, .data = data, .len = len};
	cred_of(req, &h->cr);
	pthread_mutex_init(&h->mu, NULL);
	open_ino_hold(ino, &a); /* aqd frees it once unlinked: fstat still answers (op_getattr) */
	fi->fh = (uint64_t)(uintptr_t)h | 1;
	fi->keep_cache = 1;
	fi->noflush = !atomic_load(&g_locked);
	fuse_reply_open(req, fi);
	return true;
}

static void op_open(fuse_req_t req, fuse_ino_t ino_node, struct fuse_file_info *fi)
{
	uint64_t ino = aq_node_ino(ino_node);
	if (g_read_only && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	struct aq_cred cr;
	cred_of(req, &cr);
	struct aq_file *f;
	int rc;
	if ((fi->flags & O_ACCMODE) == O_RDONLY && !(fi->flags & O_TRUNC)) {
		/* the kernel checked permissions (default_permissions): a refusal of the OPEN
		 * (without the caller's groups) is the first read's to report, and op_read
		 * retries it with groups */
		struct cseq seq = cseq_now();
		if (inoset_has(&g_stored, ino)) {
			rc = aq_open_ino_lazy_nodata(g_client, &cr, ino, fi->flags, &f);
		} else if (open_located(req, ino, ino_node, seq, fi)) {
			return;
		} else {
			rc = aq_open_ino_lazy(g_client, &cr, ino, fi->flags, &f);
			if (!rc)
				store_first_bytes(seq, ino, f);
		}
	} else {
		own_write(); /* its size and times may change from now on */
		/* O_APPEND offsets come from the kernel; the file is opened read-write so the
		 * buffered chunk can be read back */
		rc = WITH_GROUPS(req, cr, aq_open_ino(g_client, &cr, ino, fi->flags & ~O_APPEND, &f));
		if (!rc && devio_kill()) { /* O_TRUNC by someone without CAP_FSETID */
			rc = kill_sxid(req, ino_node, f);
			if (rc)
				aq_close(f);
		}
		own_wrote(ino); /* O_TRUNC, and the set-id bits killed */
	}
	if (rc) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	fi->keep_cache = 1; /* see op_init: stale pages go when the attributes change */
	/* nothing to write back through a read-only handle: close(2) need not wait for a
	 * FLUSH round trip (a training loader closes every sample it reads); unless a
	 * process ever locked through this mount: the close of any descriptor of a file
	 * drops the process's fcntl locks on it (op_flush), read-only ones included, and a
	 * lock may come after the open (xfstests generic/478) */
	if ((fi->flags & O_ACCMODE) == O_RDONLY && !atomic_load(&g_locked))
		fi->noflush = 1;
	fuse_reply_open(req, fi);
}

static void op_create(fuse_req_t req, fuse_ino_t parent_node, const char *name, mode_t mode, struct fuse_file_info *fi)
{
	uint64_t parent = aq_node_ino(parent_node);
	RO_CHECK(req);
	struct aq_cred cr;
	struct aq_attr a;
	cred_of(req, &cr);
	struct aq_file *f;
	struct cseq seq = cseq_now();
	bool tmpfile = devio_tmpfile();
	int rc;
	if (tmpfile) { /* O_TMPFILE: no name to remember, nothing new in a listing */
		rc = WITH_GROUPS(req, cr, aq_tmpfile_open(g_client, &cr, parent, create_mode(req, mode & 07777),
							   fi->flags & ~O_APPEND, &a, &f));
		if (!rc)
			keep_attr(seq, &a);
	} else {
		/* create and open in one round trip (O_APPEND offsets come from the kernel).
		 * The name may exist after all, made by another client since this mount heard
		 * it was free: the open then truncates it, as O_TRUNC asks. */
		rc = WITH_GROUPS(req, cr, aq_create_open(g_client, &cr, parent, name, create_mode(req, mode & 07777),
							  (fi->flags & O_EXCL) ? AQ_CREATE_EXCL : 0,
							  fi->flags & ~(O_APPEND | O_CREAT | O_EXCL), &a, &f));
		made_in(seq, parent, name, rc, &a); /* statahead takes out what changed */
		own_write();
		/* Without O_EXCL the name is taken by something this create may not open (a
		 * symlink or fifo another client made since the kernel heard the name was
		 * free): ESTALE makes the kernel look the name up again and open what is
		 * there, as on ext4 (follow the symlink, open the fifo). The reply was a
		 * symlink's attributes before, which the kernel refused: EIO. */
		if (rc == -EEXIST && !(fi->flags & O_EXCL))
			rc = -ESTALE;
	}
	if (rc) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)f;
	struct fuse_entry_param e;
	to_entry(&a, &e);
	fuse_reply_create(req, &e, fi);
	if (!tmpfile)
		recheck(seq, parent, name, a.ino);
}

static void op_read(fuse_req_t req, fuse_ino_t node, size_t size, off_t off, struct fuse_file_info *fi)
{
	/* the page cache let go of what an open from a location stored: its bytes, unless
	 * anything changed since (a push, or a change through this mount) */
	struct held *h = held_of(fi);
	bool from_held = h && (uint64_t)off < h->len;
	if (from_held && cseq_current(h->seq)) {
		fuse_reply_buf(req, h->data + off, MIN(size, h->len - (size_t)off));
		return;
	}
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc);
	if (!f) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	/* the first read of a file its open fetched the start of: straight from those bytes */
	const void *held;
	struct aq_bytes *bytes;
	ssize_t n = aq_pread_held(f, size, (uint64_t)off, &held, &bytes);
	if (n >= 0) {
		fuse_reply_buf(req, held, (size_t)n);
		aq_bytes_free(bytes);
		return;
	}
	/* through FUSE over io_uring, straight into the ring entry the reply goes out from */
	char *ring = uring_reply_space(size);
	char *buf = ring ? ring : aq_malloc(size);
	if (n == -EAGAIN)
		n = aq_pread(f, buf, size, (uint64_t)off);
	if (REFUSED(n)) { /* a lazy open refused without the caller's groups */
		struct aq_cred cr;
		cred_of(req, &cr);
		if (cred_add_groups(req, &cr) && aq_file_reopen(f, &cr) == 0)
			n = aq_pread(f, buf, size, (uint64_t)off);
	}
	if ((n == -ENOENT || n == -ESTALE) && from_held) /* unlinked since: this descriptor */
		fuse_reply_buf(req, h->data + off, MIN(size, h->len - (size_t)off)); /* keeps what it read */
	else if (n < 0)
		fuse_reply_err(req, posix_err((int)n));
	else
		fuse_reply_buf(req, buf, (size_t)n);
	if (!ring)
		free(buf);
}

static void op_write(fuse_req_t req, fuse_ino_t node, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc); /* a read-only handle never writes: the kernel checks */
	own_write();
	if (!rc)
		rc = devio_kill() ? kill_sxid(req, node, f) : 0;
	ssize_t n = rc ? rc : aq_pwrite(f, buf, size, (uint64_t)off);
	own_wrote(aq_node_ino(node)); /* a write aq_pwrite sent (a big one); the flush sends the rest */
	/* An O_DIRECT write: the kernel dropped the range's cached pages before it sent the
	 * write, and again after a synchronous one, but not after an asynchronous one (aio,
	 * io_uring), so a buffered read that ran meanwhile kept the old bytes in the page
	 * cache for every later read (xfstests generic/451). Now that the bytes are here, the
	 * range's pages go; one that a read has locked is waited for, and that read's reply
	 * is on its way already. Only for a handle opened O_DIRECT whose request says so too:
	 * a buffered write holds its pages locked until this reply, and fcntl can turn
	 * O_DIRECT on between its start and its request (xfstests generic/036 toggles it
	 * while writing; waiting for those pages here never ended). */
	if (n > 0 && (fi->flags & O_DIRECT) && aq_file_direct(f))
		fuse_lowlevel_notify_inval_inode(g_se, node, off, n);
	if (n < 0)
		fuse_reply_err(req, posix_err((int)n));
	else
		fuse_reply_write(req, (size_t)n);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t node, int mode, off_t off, off_t len,
			 struct fuse_file_info *fi)
{
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc);
	own_write();
	if (rc) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	/* the kernel names no flag here: root stands for CAP_FSETID, as the server's
	 * truncate does */
	rc = devio_killpriv_v2() && fuse_req_ctx(req)->uid != 0 ? kill_sxid(req, node, f) : 0;
	rc = rc ? rc : aq_fallocate(f, mode, (uint64_t)off, (uint64_t)len);
	own_wrote(aq_node_ino(node));
	fuse_reply_err(req, posix_err(rc));
}

/* A flush, fsync or close failed: the bytes it could not send are gone from the client,
 * and so may be deferred attribute changes (AQ_SET_DEFER) the kernel was told the outcome
 * of. The kernel drops the file's pages, which hold those bytes (a later read on this
 * mount returned bytes no server had, fsstress found), and its attributes, and asks the
 * server again. */
static void write_back_failed(fuse_ino_t node)
{
	fuse_lowlevel_notify_inval_inode(g_se, node, 0, 0);
}

static void op_flush(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc);
	if (!f) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	own_write();
	rc = aq_flush(f); /* read-only handles come here only once a lock was taken (op_open) */
	own_wrote(aq_node_ino(node));
	/* close(2) of any descriptor of a file drops the process's fcntl locks on it (a
	 * read-only handle's close sends no FLUSH: its RELEASE, aq_close, drops what was
	 * locked through it) */
	int lrc = aq_file_unlock_owner(f, fi->lock_owner);
	if (lrc)
		log_warn("inode %llu: dropping locks at close: %s", (unsigned long long)aq_node_ino(node),
			 aq_strerror(lrc));
	if (rc)
		write_back_failed(node);
	fuse_reply_err(req, posix_err(rc));
}

static void op_release(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	struct held *h = held_of(fi);
	struct aq_file *f = h ? h->f : (struct aq_file *)(uintptr_t)fi->fh;
	bool wrote = (fi->flags & O_ACCMODE) != O_RDONLY;
	if (wrote)
		own_write();
	int rc = aq_close(f);
	if (h)
		held_free(h);
	if (wrote)
		own_wrote(aq_node_ino(node));
	if (rc)
		write_back_failed(node);
	fuse_reply_err(req, posix_err(rc));
}

/* SEEK_DATA and SEEK_HOLE (the kernel answers the other lseeks itself): from the chunks
 * the servers hold (aq_file_seek), so cp and tar find a sparse file's holes. */
static void op_lseek(fuse_req_t req, fuse_ino_t node, off_t off, int whence, struct fuse_file_info *fi)
{
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc);
	int64_t at = f ? aq_file_seek(f, off, whence) : rc;
	if (at < 0)
		fuse_reply_err(req, posix_err((int)at));
	else
		fuse_reply_lseek(req, at);
}

/* ---- locks: fcntl (byte-range, OFD) and flock, kept by the servers ----
 * A wait (F_SETLKW, flock without LOCK_NB) waits in the server without holding one of
 * the mount's threads (aq_file_lock_async): a hundred processes waiting on one lock file
 * must not leave none to serve the unlock. A signal for the waiter comes as an
 * INTERRUPT, which ends the wait (aq_lock_cancel): the process sees EINTR, and a killed
 * one dies. */
struct lock_wait {
	fuse_req_t req;
	uint64_t ino, id;
	struct lock_wait *next;
};
static struct {
	pthread_mutex_t mu;
	struct lock_wait *head;
	uint64_t next_id;
} g_lwaits = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* An INTERRUPT for a waiting request: the wait it names, if it has not ended, is
 * cancelled (a cancel that comes after the grant changes nothing). */
static void lock_interrupted(fuse_req_t req, void *data)
{
	uint64_t ino = 0, id = 0;
	pthread_mutex_lock(&g_lwaits.mu);
	for (struct lock_wait *w = g_lwaits.head; w && !id; w = w->next)
		if (w->req == req) {
			ino = w->ino;
			id = w->id;
		}
	pthread_mutex_unlock(&g_lwaits.mu);
	if (id)
		aq_lock_cancel(g_client, ino, id);
}

static void lock_wait_done(void *arg, int rc)
{
	struct lock_wait *w = arg;
	pthread_mutex_lock(&g_lwaits.mu);
	struct lock_wait **pp = &g_lwaits.head;
	while (*pp != w)
		pp = &(*pp)->next;
	*pp = w->next;
	pthread_mutex_unlock(&g_lwaits.mu);
	fuse_reply_err(w->req, posix_err(rc));
	free(w);
}

static void lock_set(fuse_req_t req, struct fuse_file_info *fi, struct aq_lock *lk, uint32_t flags)
{
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc);
	if (!f) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	if (lk->type != AQ_LK_UN)
		atomic_store(&g_locked, true);
	if (!(flags & AQ_LOCK_WAIT)) {
		fuse_reply_err(req, posix_err(aq_file_lock(f, fi->lock_owner, flags, 0, lk)));
		return;
	}
	struct lock_wait *w = aq_calloc(1, sizeof *w);
	w->req = req;
	w->ino = aq_file_ino(f);
	pthread_mutex_lock(&g_lwaits.mu);
	w->id = ++g_lwaits.next_id;
	w->next = g_lwaits.head;
	g_lwaits.head = w;
	pthread_mutex_unlock(&g_lwaits.mu);
	/* called at once if the INTERRUPT came already: the server keeps the cancel for the
	 * wait that follows it */
	fuse_req_interrupt_func(req, lock_interrupted, NULL);
	rc = aq_file_lock_async(f, fi->lock_owner, flags, w->id, lk, lock_wait_done, w);
	if (rc)
		lock_wait_done(w, rc);
}

static uint32_t lock_type(short l_type)
{
	return l_type == F_RDLCK ? AQ_LK_RD : l_type == F_WRLCK ? AQ_LK_WR : AQ_LK_UN;
}

/* libfuse's struct flock: l_start and l_len (0: to the end) from the kernel's range */
static struct aq_lock lock_of(const struct flock *fl)
{
	uint64_t start = (uint64_t)fl->l_start;
	return (struct aq_lock){.type = lock_type(fl->l_type), .pid = (uint32_t)fl->l_pid, .start = start,
				.end = fl->l_len > 0 ? start + (uint64_t)fl->l_len - 1 : AQ_LK_END};
}

static void op_getlk(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi, struct flock *fl)
{
	struct aq_lock lk = lock_of(fl);
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc);
	if (f)
		rc = aq_file_lock(f, fi->lock_owner, AQ_LOCK_TEST, 0, &lk);
	if (rc) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	struct flock out = {.l_type = lk.type == AQ_LK_RD ? F_RDLCK : lk.type == AQ_LK_WR ? F_WRLCK : F_UNLCK,
			    .l_whence = SEEK_SET, .l_start = (off_t)lk.start,
			    .l_len = lk.end == AQ_LK_END ? 0 : (off_t)(lk.end - lk.start + 1), .l_pid = (pid_t)lk.pid};
	fuse_reply_lock(req, &out);
}

static void op_setlk(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi, struct flock *fl, int sleep)
{
	struct aq_lock lk = lock_of(fl);
	lock_set(req, fi, &lk, sleep ? AQ_LOCK_WAIT : 0);
}

static void op_flock(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi, int op)
{
	int kind = op & (LOCK_SH | LOCK_EX | LOCK_UN);
	struct aq_lock lk = {.type = kind == LOCK_SH ? AQ_LK_RD : kind == LOCK_EX ? AQ_LK_WR : AQ_LK_UN,
			     .pid = (uint32_t)fuse_req_ctx(req)->pid, .start = 0, .end = AQ_LK_END};
	lock_set(req, fi, &lk, AQ_LOCK_FLOCK | ((op & LOCK_NB) || kind == LOCK_UN ? 0 : AQ_LOCK_WAIT));
}

static void op_fsync(fuse_req_t req, fuse_ino_t node, int datasync, struct fuse_file_info *fi)
{
	int rc = 0;
	struct aq_file *f = held_file(fi, &rc);
	if (f)
		rc = aq_fsync(f, datasync);
	/* opened from a location (aqd never counted it open), unlinked and freed since:
	 * nothing of it to sync, and ext4 says so with success */
	if (held_of(fi) && posix_err(rc) == ENOENT)
		rc = 0;
	if (rc)
		write_back_failed(node);
	fuse_reply_err(req, posix_err(rc));
}

/* An open directory. The kernel asks for one buffer of entries at a time (a page, or
 * what getdents asked for), each starting where the last one ended: entries are fetched
 * DIR_PAGE per round trip and handed out from here, rather than one trip per buffer. */
#define DIR_PAGE 512

struct dirh {
	pthread_mutex_t mu;
	bool filled, plus, eof;
	uint64_t at;        /* the cookie ents follow */
	struct cseq seq;    /* before ents were fetched */
	uint32_t n, pos;    /* ents held, next to hand out */
	struct aq_dirent *ents;
};

/* The cookie after the last entry handed out. */
static uint64_t dirh_cookie(const struct dirh *dh) { return dh->pos ? dh->ents[dh->pos - 1].cookie : dh->at; }

static void op_opendir(fuse_req_t req, fuse_ino_t ino_node, struct fuse_file_info *fi)
{
	/* No trip to aqd: the kernel checked read permission with its copy of the
	 * attributes (default_permissions), which pushes keep current, and aqd checks again
	 * on every page of the listing (a directory gone or closed meanwhile fails there). */
	struct dirh *dh = aq_calloc(1, sizeof *dh);
	pthread_mutex_init(&dh->mu, NULL);
	fi->fh = (uint64_t)(uintptr_t)dh;
	open_ino_hold(aq_node_ino(ino_node), NULL);
	/* The kernel keeps what a listing returned in the directory's page cache and lists
	 * from there again (FOPEN_CACHE_DIR) until the directory changes: a listing from
	 * the start compares the directory's i_version, which this mount's own changes
	 * bump; a push of another client's change in the directory or to it drops the kept
	 * pages (inval_main). An open without keep_cache drops them: the first one after
	 * pushes may have been missed (a reconnection, listing_fresh). */
	if (g_cache_on && !g_no_dir_cache) {
		fi->cache_readdir = 1;
		fi->keep_cache = listing_fresh(aq_node_ino(ino_node));
	}
	fuse_reply_open(req, fi);
}

#define COOKIE_DOT 1
#define COOKIE_DOTDOT 2

/* Fills one readdir buffer starting at off. "." and ".." get offsets 1 and 2; server
 * cookies start at 1 << 48. Entries sharing a cookie (hash collisions) never straddle
 * two buffers: if one does not fit, its whole group is taken back (the server never
 * splits a group between pages either). */
#define FIRST_PLUS_BYTES 4096 /* see do_readdir */
#define FUSE_DIRENTPLUS_MIN 160 /* the smallest entry with attributes: 152 bytes and a name, 8-aligned */

/* Entries to ask the server for, with room for left bytes of the kernel's buffer. With
 * attributes, what fits and one more, but at least PLUS_WANT_MIN (each costs the server
 * an inode read, and what did not fit serves only the calls after, which mostly come
 * without: a listing's first page fetched 512 for the 25 that fit; but a directory a
 * little bigger than the first page then took a second round trip for its last names,
 * a third of the time of a listing of 31 entries); without, a whole page. */
#define PLUS_WANT_MIN 64
static uint32_t page_want(bool plus, size_t left)
{
	if (!plus)
		return DIR_PAGE;
	size_t fit = MAX(left / FUSE_DIRENTPLUS_MIN + 1, (size_t)PLUS_WANT_MIN);
	return (uint32_t)MIN(fit, (size_t)DIR_PAGE);
}

static void do_readdir(fuse_req_t req, uint64_t ino, size_t size, off_t off, bool plus, struct dirh *dh)
{
	/* The kernel asks for a listing's start with attributes (READDIRPLUS_AUTO), and for
	 * the rest only once lookups in the directory show they pay. Since Linux 6.14 one
	 * request may ask for as much as the reader's buffer holds (glibc: 32 KiB, 2,000
	 * entries with attributes here), so every listing of a directory that size came
	 * with an inode read and a kernel inode per entry, as kernels with page-sized
	 * requests gave only for the first page: the start gets a page here too. */
	if (plus && off == 0 && size > FIRST_PLUS_BYTES)
		size = FIRST_PLUS_BYTES;
	struct aq_cred cr;
	cred_of(req, &cr);
	char *buf = aq_calloc(1, size);
	size_t pos = 0;
	uint64_t cookie = (uint64_t)off;
	int rc = 0;
	bool full = false;
	for (int dot = 0; dot < 2 && !full; dot++) {
		uint64_t next = dot ? COOKIE_DOTDOT : COOKIE_DOT;
		if (cookie >= next)
			continue;
		struct stat st = {.st_ino = ino, .st_mode = S_IFDIR};
		const char *name = dot ? ".." : ".";
		size_t need;
		if (plus) {
			struct fuse_entry_param e = {.attr = st};
			need = fuse_add_direntry_plus(req, buf + pos, size - pos, name, &e, (off_t)next);
		} else {
			need = fuse_add_direntry(req, buf + pos, size - pos, name, &st, (off_t)next);
		}
		if (need > size - pos) {
			full = true;
			break;
		}
		pos += need;
		cookie = next;
	}
	if (cookie < (1ull << 48))
		cookie = 0;
	pthread_mutex_lock(&dh->mu);
	if (!dh->ents)
		dh->ents = aq_malloc(DIR_PAGE * sizeof *dh->ents);
	/* A page with attributes also serves a call without (the kernel's READDIRPLUS_AUTO
	 * asks for them first and then often not): only the other way round fetches again. */
	/* off 0 is a rewind (or the first call): the listing is read again, also when what
	 * this handle holds ends where it began (an empty directory: its "end" answered the
	 * rewind and never showed what was created since, xfstests generic/637) */
	if (!dh->filled || (plus && !dh->plus) || dirh_cookie(dh) != cookie || off == 0) {
		/* a seek, a rewind or the first call: start over at the kernel's offset */
		dh->filled = true;
		dh->plus = plus;
		dh->eof = false;
		dh->at = cookie;
		dh->n = dh->pos = 0;
	}
	/* Entries held from a page fetched before a change of this mount's or a push may be
	 * stale, and with attributes the kernel makes a dentry of each: one of a directory
	 * renamed since moved that directory's dentry back to its old name (the kernel's own
	 * rename had moved it), or failed when another rename held the rename lock, and the
	 * lookups after it then failed with ESTALE (four threads renaming, linking and
	 * making directories, about one run of 30 s in three). They are fetched again from
	 * where the listing stands. */
	if (plus && dh->pos < dh->n && !cseq_current(dh->seq)) {
		dh->at = dirh_cookie(dh);
		dh->n = dh->pos = 0;
		dh->eof = false;
	}
	struct cseq seq = dh->seq; /* of the oldest page handed out from: see recheck below */
	bool any = false;
	uint64_t *given = NULL; /* the inodes whose attributes went to the kernel */
	size_t ngiven = 0, given_cap = 0;
	size_t group_pos = pos;
	uint32_t group_idx = dh->pos;
	while (!full) {
		if (dh->pos == dh->n) {
			if (dh->eof)
				break;
			uint64_t from = dirh_cookie(dh);
			struct cseq s = cseq_now();
			bool at_end = false;
			int n = WITH_GROUPS(req, cr, aq_readdir_ino_end(g_client, &cr, ino, from,
									 plus ? AQ_READDIR_PLUS : 0, dh->ents,
									 page_want(plus, size - pos), &at_end));
			if (n < 0) {
				rc = n;
				break;
			}
			if (!any)
				seq = s;
			dh->seq = s;
			dh->plus = plus;
			dh->at = from;
			dh->n = (uint32_t)n;
			dh->pos = 0;
			group_idx = 0;
			group_pos = pos;
			/* the server said these reach the end: the kernel's next call (at the
			 * last entry's offset) is answered here, without a round trip */
			dh->eof = at_end;
			if (n == 0) {
				dh->eof = true;
				break;
			}
		}
		const struct aq_dirent *de = &dh->ents[dh->pos];
		size_t need;
		if (plus) {
			struct fuse_entry_param e;
			to_entry(&de->attr, &e);
			need = fuse_add_direntry_plus(req, buf + pos, size - pos, de->name, &e, (off_t)de->cookie);
		} else {
			struct stat st = {.st_ino = de->ino, .st_mode = de->type << 12};
			need = fuse_add_direntry(req, buf + pos, size - pos, de->name, &st, (off_t)de->cookie);
		}
		if (need > size - pos) {
			if (dh->pos > group_idx && dh->ents[dh->pos - 1].cookie == de->cookie) {
				pos = group_pos; /* do not split a collision group */
				dh->pos = group_idx;
			}
			full = true;
			break;
		}
		if (dh->pos == 0 || dh->ents[dh->pos - 1].cookie != de->cookie) {
			group_pos = pos;
			group_idx = dh->pos;
		}
		if (plus) {
			nox_put(dh->seq, &de->attr);
			if (ngiven == given_cap) {
				given_cap = given_cap ? 2 * given_cap : 256;
				given = aq_realloc(given, given_cap * sizeof *given);
			}
			given[ngiven++] = de->ino;
		}
		pos += need;
		dh->pos++;
		any = true;
	}
	pthread_mutex_unlock(&dh->mu);
	if (rc && pos == 0)
		fuse_reply_err(req, posix_err(rc));
	else
		fuse_reply_buf(req, buf, pos);
	for (size_t i = 0; i < ngiven; i++)
		recheck(seq, 0, NULL, given[i]); /* an entry taken back above costs a spare drop */
	free(given);
	free(buf);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino_node, size_t size, off_t off, struct fuse_file_info *fi)
{
	uint64_t ino = aq_node_ino(ino_node);
	do_readdir(req, ino, size, off, false, (struct dirh *)(uintptr_t)fi->fh);
}

static void op_readdirplus(fuse_req_t req, fuse_ino_t ino_node, size_t size, off_t off, struct fuse_file_info *fi)
{
	uint64_t ino = aq_node_ino(ino_node);
	do_readdir(req, ino, size, off, true, (struct dirh *)(uintptr_t)fi->fh);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t node, struct fuse_file_info *fi)
{
	struct dirh *dh = (struct dirh *)(uintptr_t)fi->fh;
	open_ino_release(aq_node_ino(node));
	pthread_mutex_destroy(&dh->mu);
	free(dh->ents);
	free(dh);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino_node, int datasync, struct fuse_file_info *fi)
{
	uint64_t ino = aq_node_ino(ino_node);
	struct aq_file *f;
	int rc = aq_open_ino(g_client, NULL, ino, O_RDONLY, &f);
	if (!rc) {
		rc = aq_fsync(f, datasync);
		aq_close(f);
	}
	fuse_reply_err(req, posix_err(rc));
}

/* statfs is answered from the last answer for up to STATFS_TTL_NS, as Lustre's clients
 * keep theirs (statfs_max_age, 1 s), unless this mount changed something since
 * (g_own_changes: a write, a flush of written bytes, a create, an unlink...). stress-ng's
 * link stressor asks before each link, and each was a trip to aqd (100 us, against
 * ext4's 3). Another client's changes show within STATFS_TTL_NS. */
#define STATFS_TTL_NS 1000000000ull
static pthread_mutex_t statfs_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	unsigned long own; /* g_own_changes when it was asked for */
	uint64_t at_ns;    /* 0: never asked */
	struct aq_statfs s;
} statfs_last;

static void op_statfs(fuse_req_t req, fuse_ino_t node)
{
	unsigned long own = atomic_load(&g_own_changes);
	struct aq_statfs s;
	bool have = false;
	pthread_mutex_lock(&statfs_mu);
	if (statfs_last.at_ns && statfs_last.own == own && aq_mono_ns() - statfs_last.at_ns < STATFS_TTL_NS) {
		s = statfs_last.s;
		have = true;
	}
	pthread_mutex_unlock(&statfs_mu);
	if (!have) {
		uint64_t at = aq_mono_ns();
		int rc = aq_statfs(g_client, &s);
		if (rc) {
			fuse_reply_err(req, posix_err(rc));
			return;
		}
		pthread_mutex_lock(&statfs_mu);
		statfs_last.own = own;
		statfs_last.at_ns = at;
		statfs_last.s = s;
		pthread_mutex_unlock(&statfs_mu);
	}
	struct statvfs v = {0};
	v.f_bsize = 4096;
	v.f_frsize = 4096;
	/* Used is what Aquifer holds, as on a file system of its own: on the single-node
	 * default its targets share a file system with everything else, and total - free
	 * had df show that disk's other data (and its reserve) as Aquifer's, 174G "used" on
	 * an empty mount here. Available is what the targets may still take. */
	v.f_blocks = s.total_bytes / 4096;
	v.f_bfree = (s.total_bytes - MIN(s.used_bytes, s.total_bytes)) / 4096;
	v.f_bavail = s.free_bytes / 4096;
	v.f_bfree = MAX(v.f_bfree, v.f_bavail);
	v.f_files = s.files + (1ull << 40);
	v.f_ffree = 1ull << 40;
	v.f_favail = 1ull << 40;
	v.f_namemax = AQ_NAME_MAX;
	fuse_reply_statfs(req, &v);
}

static void op_setxattr(fuse_req_t req, fuse_ino_t ino_node, const char *name, const char *value, size_t size, int flags)
{
	uint64_t ino = aq_node_ino(ino_node);
	RO_CHECK(req);
	struct aq_cred cr;
	cred_of(req, &cr);
	uint32_t f = AQ_XATTR_DEFER; /* cp -a's ACL of the mode alone, a chmod (aq.h) */
	if (flags & XATTR_CREATE)
		f |= AQ_XATTR_CREATE;
	if (flags & XATTR_REPLACE)
		f |= AQ_XATTR_REPLACE;
	int rc = WITH_GROUPS(req, cr, aq_setxattr_ino(g_client, &cr, ino, name, value, size, f));
	dattr_drop(ino);
	nox_drop(ino);
	fuse_reply_err(req, posix_err(rc));
}

static void reply_xattr_result(fuse_req_t req, int rc, const char *buf, size_t size)
{
	if (rc < 0)
		fuse_reply_err(req, posix_err(rc));
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)rc);
	else
		fuse_reply_buf(req, buf, (size_t)rc);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino_node, const char *name, size_t size)
{
	uint64_t ino = aq_node_ino(ino_node);
	/* the namespaces the servers know; the kernel checked permission to read them */
	bool known = !strncmp(name, "user.", 5) || !strncmp(name, "trusted.", 8) ||
		     !strncmp(name, "security.", 9) || !strncmp(name, "system.", 7);
	if (known && nox_none(ino)) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	struct aq_cred cr;
	cred_of(req, &cr);
	char *buf = size ? aq_malloc(size) : NULL;
	int rc = WITH_GROUPS(req, cr, aq_getxattr_ino(g_client, &cr, ino, name, buf, size));
	reply_xattr_result(req, rc, buf, size);
	free(buf);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino_node, size_t size)
{
	uint64_t ino = aq_node_ino(ino_node);
	if (nox_none(ino)) {
		reply_xattr_result(req, 0, NULL, size);
		return;
	}
	struct aq_cred cr;
	cred_of(req, &cr);
	char *buf = size ? aq_malloc(size) : NULL;
	int rc = WITH_GROUPS(req, cr, aq_listxattr_ino(g_client, &cr, ino, buf, size));
	reply_xattr_result(req, rc, buf, size);
	free(buf);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino_node, const char *name)
{
	uint64_t ino = aq_node_ino(ino_node);
	RO_CHECK(req);
	struct aq_cred cr;
	cred_of(req, &cr);
	int rc = WITH_GROUPS(req, cr, aq_removexattr_ino(g_client, &cr, ino, name));
	dattr_drop(ino);
	nox_drop(ino);
	fuse_reply_err(req, posix_err(rc));
}

/* AQFUSE_IOC_HEARD: every push sent before the call applied, the kernel's invalidations
 * included (a mount that does not hear pushes caches nothing to apply them to). Other
 * commands are not this file system's. */
static void op_ioctl(fuse_req_t req, fuse_ino_t node, unsigned int cmd, void *arg, struct fuse_file_info *fi, unsigned flags,
		     const void *in_buf, size_t in_bufsz, size_t out_bufsz)
{
	if ((unsigned)cmd != AQFUSE_IOC_HEARD) {
		fuse_reply_err(req, ENOTTY);
		return;
	}
	int rc = g_cache_on ? aq_watch_sync(g_client) : 0;
	if (rc) {
		fuse_reply_err(req, posix_err(rc));
		return;
	}
	inval_drain();
	fuse_reply_ioctl(req, 0, NULL, 0);
}

static void op_access(fuse_req_t req, fuse_ino_t ino_node, int mask)
{
	uint64_t ino = aq_node_ino(ino_node);
	struct aq_cred cr;
	cred_of(req, &cr);
	if (g_read_only && (mask & W_OK)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	fuse_reply_err(req, posix_err(WITH_GROUPS(req, cr, aq_access_ino(g_client, &cr, ino, (uint32_t)mask))));
}

static const struct fuse_lowlevel_ops aq_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.symlink = op_symlink,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.create = op_create,
	.ioctl = op_ioctl,
	.read = op_read,
	.write = op_write,
	.fallocate = op_fallocate,
	.flush = op_flush,
	.release = op_release,
	.lseek = op_lseek,
	.getlk = op_getlk,
	.setlk = op_setlk,
	.flock = op_flock,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.setxattr = op_setxattr,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.removexattr = op_removexattr,
	.access = op_access,
};

#define MOUNT_BIND_FLAGS (MS_NODIRATIME | MS_STRICTATIME | MS_NOSYMFOLLOW)
/* The per-mount flags the options may ask for, which a bind remount must name again */
#define MOUNT_PER_MOUNT_FLAGS (MS_NOATIME | MS_NOEXEC | MOUNT_BIND_FLAGS)

/* The per-mount flags libfuse cannot pass, set as mount(8) would for a bind mount: a
 * remount must name every per-mount flag the mount keeps, so they come from the options
 * again (not read back: a statvfs would wait on this very mount, which serves nothing
 * yet). */
static int bind_remount(const struct aqfuse_options *opt, bool root)
{
	unsigned long f = MS_REMOUNT | MS_BIND | (opt->mnt_flags & MOUNT_PER_MOUNT_FLAGS);
	if (f & MS_STRICTATIME)
		f &= ~MS_NOATIME;
	if (opt->read_only)
		f |= MS_RDONLY;
	if (opt->nosuid || !root)
		f |= MS_NOSUID;
	if (opt->nodev || !root)
		f |= MS_NODEV;
	return mount(NULL, opt->mountpoint, NULL, f, NULL);
}

int aqfuse_main(const struct aqfuse_options *opt)
{
	/* Fail early, with the library's message, if the cluster cannot be reached. */
	struct aq_client *probe;
	int rc = aq_connect(opt->cluster_file, &probe);
	if (rc) {
		fprintf(stderr, "aq mount: cannot connect to the cluster: %s\n", aq_strerror(rc));
		return 1;
	}
	aq_disconnect(probe);
	g_timeout_s = opt->attr_timeout_s;
	g_read_only = opt->read_only;
	const char *delay = getenv("AQ_MOUNT_TEST_KEEP_DELAY_MS");
	g_test_keep_delay_ms = delay ? (unsigned)atoi(delay) : 0;
	delay = getenv("AQ_MOUNT_TEST_PUSH_DELAY_MS");
	g_test_push_delay_ms = delay ? (unsigned)atoi(delay) : 0;
	const char *ecmax = getenv("AQ_MOUNT_TEST_ECACHE_MAX");
	if (ecmax && atoi(ecmax) > 0) {
		g_ec_max = (uint32_t)atoi(ecmax);
		g_ec_rebuild_min = 4 * g_ec_max;
	}
	const char *ecdirs = getenv("AQ_MOUNT_TEST_EC_DIRS");
	if (ecdirs && atoi(ecdirs) > 0)
		g_ec_dirs = MIN((uint32_t)atoi(ecdirs), EC_DIRS);
	const char *dc = getenv("AQ_MOUNT_DIR_CACHE");
	g_no_dir_cache = dc && strcmp(dc, "0") == 0;
	g_page_size = (size_t)sysconf(_SC_PAGESIZE);

	char optstr[PATH_MAX + 512];
	/* As ext4 (and an NFS or CephFS client): setuid programs and device files work on a
	 * root's mount, unless --nosuid or --nodev says no (libfuse's own default is both
	 * refused; a user's mount, through fusermount3, always is). Any client the cluster
	 * lets in may act as any uid, root included, so a mount that must not trust the
	 * others' setuid programs says --nosuid. The mount's source is the cluster file, as
	 * an NFS mount's is its server and export: `umount FILE` and xfstests' TEST_DEV work;
	 * one whose path libfuse's option syntax cannot carry is "aquifer". */
	bool root = getuid() == 0;
	const char *src = opt->cluster_file && !strpbrk(opt->cluster_file, ",\\ \t\n") ? opt->cluster_file : "aquifer";
	const char *vfs = opt->vfs_opts ? opt->vfs_opts : "";
	if (snprintf(optstr, sizeof optstr,
		     "fsname=%s,subtype=aquifer,default_permissions,max_read=1048576%s%s%s%s%s%s", src,
		     opt->allow_other ? ",allow_other" : "", opt->read_only ? ",ro" : "",
		     root && !opt->nosuid ? ",suid" : "", root && !opt->nodev ? ",dev" : "", *vfs ? "," : "",
		     vfs) >= (int)sizeof optstr) {
		fprintf(stderr, "aq mount: mount options too long\n");
		return 1;
	}
	char *argv[] = {"aq", "-o", optstr, opt->debug ? "-d" : NULL, NULL};
	struct fuse_args args = FUSE_ARGS_INIT(opt->debug ? 4 : 3, argv);
	struct fuse_session *se = fuse_session_new(&args, &aq_ops, sizeof aq_ops, NULL);
	if (!se) {
		fprintf(stderr, "aq mount: cannot create FUSE session\n");
		return 1;
	}
	int status = 1;
	if (fuse_set_signal_handlers(se))
		goto out_destroy;
	/* asked before the mount: the kernel offers the ring in the INIT it sends then.
	 * $AQ_MOUNT_IO_URING=0 declines it as --no-io-uring does, for comparisons. */
	const char *ring_env = getenv("AQ_MOUNT_IO_URING");
	bool ring = !opt->no_io_uring && !(ring_env && strcmp(ring_env, "0") == 0);
	unsigned threads = opt->threads ? opt->threads : 16;
	unsigned ring_threads = ring && uring_kernel_on() ? threads : 0;
	if (fuse_session_mount(se, opt->mountpoint)) {
		fprintf(stderr, "aq mount: cannot mount at %s\n", opt->mountpoint);
		goto out_signals;
	}
	if (devio_install(se, ring_threads)) {
		fprintf(stderr, "aq mount: cannot install the /dev/fuse hooks\n");
		goto out_unmount;
	}
	if ((opt->mnt_flags & MOUNT_BIND_FLAGS) && bind_remount(opt, root)) {
		fprintf(stderr, "aq mount: cannot set nodiratime, strictatime or nosymfollow on %s: %s\n",
			opt->mountpoint, strerror(errno));
		goto out_unmount;
	}
	if (opt->log_path)
		log_set_file(opt->log_path);
	/* Connect after daemonizing: connections and their threads do not survive fork. */
	fuse_daemonize(opt->foreground);
	log_info("aq mount: pid %d serving %s (cluster %s)", (int)getpid(), opt->mountpoint, opt->cluster_file);
	rc = aq_connect(opt->cluster_file, &g_client);
	if (rc) {
		log_error("aq mount: cannot connect to the cluster: %s", aq_strerror(rc));
		goto out_unmount;
	}
	g_se = se;
	pthread_t inval_thread;
	pthread_create(&inval_thread, NULL, inval_main, NULL);
	rc = aq_watch(g_client, on_inval, NULL);
	if (rc && g_timeout_s > 1.0) {
		/* without pushed changes, long caching would hide other clients' changes */
		log_warn("aq mount: the servers do not push changes (%s); caching for 1 s only", aq_strerror(rc));
		g_timeout_s = 1.0;
	}
	g_cache_on = rc == 0;
	/* libfuse runs at most 10 requests at once unless told otherwise: a reader with 32
	 * in flight (fio, a loader with many workers) waited on the mount's threads, with
	 * the disk and both cores partly idle */
	struct fuse_loop_config *cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 0);
	/* with the ring, /dev/fuse carries FORGETs, INTERRUPTs and what comes before the
	 * ring is up: a few idle readers (libfuse starts more while all are busy) */
	fuse_loop_cfg_set_idle_threads(cfg, ring_threads ? 2 : threads);
	fuse_loop_cfg_set_max_threads(cfg, AQFUSE_MAX_THREADS);
	status = fuse_session_loop_mt(se, cfg) ? 1 : 0;
	fuse_loop_cfg_destroy(cfg);
	uring_stop();
	pthread_mutex_lock(&g_inval.mu);
	g_inval.stop = true;
	pthread_cond_signal(&g_inval.cv);
	pthread_mutex_unlock(&g_inval.mu);
	pthread_join(inval_thread, NULL);
	ec_stop();
	aq_disconnect(g_client);
	g_client = NULL;
out_unmount:
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out_destroy:
	fuse_session_destroy(se);
	fuse_opt_free_args(&args);
	return status;
}

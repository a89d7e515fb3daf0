/*
 * test_meta.c - unit tests of the metadata store (src/meta) against a real RocksDB in a
 * temporary directory: namespace operations, partial-row merging, readdir cookies under
 * concurrency, the rmdir fence, rename rules, permissions, xattrs, the changelog and
 * reopening. Prints one line per case and "N passed, N failed".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "meta/meta.h"
#include "meta/meta_internal.h"
#include "unit/check.h"

static char g_dir[256];
static struct meta_store *g_m;
static const struct aq_cred ROOT = { 0 };

#define CHECK_RC(expr, want)                                                                  \
	do {                                                                                  \
		int _rc = (expr);                                                             \
		if (_rc != (want)) {                                                          \
			snprintf(g_why, sizeof(g_why), "line %d: %s = %d (%s), want %d", __LINE__, \
				 #expr, _rc, aq_strerror(_rc), (want));                       \
			return -1;                                                            \
		}                                                                             \
	} while (0)

static struct meta_options opts(void)
{
	return (struct meta_options){ .nbuckets = 64, .chunk_size = 1 << 20, .sync = false };
}

static int mk(uint64_t parent, const char *name, uint32_t mode, struct aq_attr *out)
{
	return meta_mknod(g_m, &ROOT, parent, name, strlen(name), mode, 0, AQ_CREATE_EXCL, out);
}
static int mkd(uint64_t parent, const char *name, struct aq_attr *out)
{
	return meta_mkdir(g_m, &ROOT, parent, name, strlen(name), 0755, out);
}
static int lk(uint64_t parent, const char *name, struct aq_attr *out)
{
	return meta_lookup(g_m, &ROOT, parent, name, strlen(name), out);
}
static int ul(uint64_t parent, const char *name)
{
	return meta_unlink(g_m, &ROOT, parent, name, strlen(name));
}
static int rmd(uint64_t parent, const char *name)
{
	return meta_rmdir(g_m, &ROOT, parent, name, strlen(name));
}
static int ren(uint64_t p, const char *a, uint64_t np, const char *b, uint32_t flags)
{
	return meta_rename(g_m, &ROOT, p, a, strlen(a), np, b, strlen(b), flags);
}

/* Counts dentry and partial rows of dir in every bucket (straight from RocksDB). */
static void count_rows(uint64_t dir, uint64_t *dentries, uint64_t *partials)
{
	*dentries = *partials = 0;
	rocksdb_iterator_t *it = rocksdb_create_iterator(g_m->db, g_m->ropts);
	for (uint32_t b = 0; b < g_m->nbuckets; b++) {
		uint8_t p[META_DENTRY_PREFIX_LEN];
		meta_key_dentry_prefix(p, b, dir);
		for (rocksdb_iter_seek(it, (const char *)p, sizeof(p)); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
			size_t kl;
			const char *k = rocksdb_iter_key(it, &kl);
			if (kl < sizeof(p) || memcmp(k, p, sizeof(p)))
				break;
			(*dentries)++;
		}
		uint8_t pk[META_PARTIAL_KEY_LEN];
		if (meta_get(g_m, pk, meta_key_partial(pk, b, dir), NULL, 0, NULL) == 1)
			(*partials)++;
	}
	rocksdb_iter_destroy(it);
}

/* Pages through every orphan; returns how many times ino is listed, or -1 when the
 * listing is out of order. */
static int orphan_count(uint64_t ino)
{
	struct meta_orphan o[100];
	uint64_t after = 0;
	int found = 0, n;
	while ((n = meta_orphans(g_m, o, 100, after)) > 0) {
		for (int i = 0; i < n; i++) {
			if (o[i].ino <= after)
				return -1;
			after = o[i].ino;
			if (o[i].ino == ino)
				found++;
		}
	}
	return n < 0 ? -1 : found;
}

/* ---- basic ----------------------------------------------------------------------------- */

static int t_create_lookup(void)
{
	struct aq_attr a, b;
	CHECK_RC(meta_getattr(g_m, AQ_ROOT_INO, &a), 0);
	CHECK(S_ISDIR(a.mode) && (a.mode & 07777) == 0755 && a.uid == 0 && a.nlink == 2);
	CHECK_RC(mk(AQ_ROOT_INO, "hello", 0644, &a), 0);
	CHECK(S_ISREG(a.mode) && a.nlink == 1 && a.size == 0 && a.ino != AQ_ROOT_INO);
	CHECK(a.chunk_size == 1 << 20);
	CHECK_RC(lk(AQ_ROOT_INO, "hello", &b), 0);
	CHECK(b.ino == a.ino && b.mode == a.mode && b.generation == a.generation);
	CHECK_RC(meta_getattr(g_m, a.ino, &b), 0);
	CHECK(b.ino == a.ino);
	CHECK_RC(mk(AQ_ROOT_INO, "hello", 0644, NULL), -EEXIST);
	/* open(O_CREAT) without O_EXCL opens the existing file */
	CHECK_RC(meta_mknod(g_m, &ROOT, AQ_ROOT_INO, "hello", 5, 0644, 0, 0, &b), 0);
	CHECK(b.ino == a.ino);
	CHECK_RC(lk(AQ_ROOT_INO, "nothere", &b), -ENOENT);
	char longname[300];
	memset(longname, 'x', 256);
	longname[256] = 0;
	CHECK_RC(mk(AQ_ROOT_INO, longname, 0644, NULL), -ENAMETOOLONG);
	longname[255] = 0;
	CHECK_RC(mk(AQ_ROOT_INO, longname, 0644, NULL), 0);
	CHECK_RC(lk(AQ_ROOT_INO, longname, &b), 0);
	CHECK_RC(mk(AQ_ROOT_INO, "a/b", 0644, NULL), -EINVAL);
	CHECK_RC(meta_mknod(g_m, &ROOT, AQ_ROOT_INO, "", 0, 0644, 0, 0, NULL), -EINVAL);
	CHECK_RC(mk(AQ_ROOT_INO, ".", 0644, NULL), -EEXIST);
	CHECK_RC(mk(AQ_ROOT_INO, "..", 0644, NULL), -EEXIST);
	CHECK_RC(mk(a.ino, "x", 0644, NULL), -ENOTDIR);
	CHECK_RC(lk(AQ_ROOT_INO, ".", &b), 0);
	CHECK(b.ino == AQ_ROOT_INO);
	CHECK_RC(mk(AQ_ROOT_INO, "fifo", S_IFIFO | 0600, &b), 0);
	CHECK(S_ISFIFO(b.mode));
	return 0;
}

static int t_symlink(void)
{
	struct aq_attr a;
	char buf[64];
	CHECK_RC(meta_symlink(g_m, &ROOT, AQ_ROOT_INO, "sl", 2, "some/target", 11, &a), 0);
	CHECK(S_ISLNK(a.mode) && a.size == 11);
	CHECK_RC(meta_readlink(g_m, a.ino, buf, sizeof(buf)), 11);
	CHECK(memcmp(buf, "some/target", 11) == 0);
	struct aq_attr f;
	CHECK_RC(lk(AQ_ROOT_INO, "hello", &f), 0);
	CHECK_RC(meta_readlink(g_m, f.ino, buf, sizeof(buf)), -EINVAL);
	CHECK_RC(meta_symlink(g_m, &ROOT, AQ_ROOT_INO, "sl", 2, "x", 1, NULL), -EEXIST);
	return 0;
}

static int t_mkdir_rmdir(void)
{
	struct aq_attr root0, root1, d, f, sub;
	CHECK_RC(meta_getattr(g_m, AQ_ROOT_INO, &root0), 0);
	CHECK_RC(mkd(AQ_ROOT_INO, "dir1", &d), 0);
	CHECK(S_ISDIR(d.mode) && d.nlink == 2 && d.size == 4096);
	CHECK_RC(meta_getattr(g_m, AQ_ROOT_INO, &root1), 0);
	CHECK(root1.nlink == root0.nlink + 1);
	CHECK(root1.mtime_ns >= root0.mtime_ns);
	CHECK_RC(mk(d.ino, "f", 0644, &f), 0);
	CHECK_RC(mkd(d.ino, "sub", &sub), 0);
	CHECK_RC(meta_getattr(g_m, d.ino, &d), 0);
	CHECK(d.nlink == 3);
	CHECK_RC(rmd(AQ_ROOT_INO, "dir1"), -ENOTEMPTY);
	CHECK_RC(rmd(d.ino, "f"), -ENOTDIR);
	CHECK_RC(ul(d.ino, "sub"), -EISDIR);
	CHECK_RC(rmd(d.ino, "nope"), -ENOENT);
	CHECK_RC(rmd(d.ino, "."), -EINVAL);
	CHECK_RC(mkd(d.ino, "sub", NULL), -EEXIST);
	struct aq_attr dd;
	CHECK_RC(lk(sub.ino, "..", &dd), 0);
	CHECK(dd.ino == d.ino);
	CHECK_RC(rmd(d.ino, "sub"), 0);
	CHECK_RC(meta_getattr(g_m, sub.ino, &sub), -ENOENT);
	CHECK_RC(ul(d.ino, "f"), 0);
	CHECK_RC(rmd(AQ_ROOT_INO, "dir1"), 0);
	CHECK_RC(meta_getattr(g_m, AQ_ROOT_INO, &root1), 0);
	CHECK(root1.nlink == root0.nlink);
	CHECK_RC(lk(AQ_ROOT_INO, "dir1", &d), -ENOENT);
	CHECK_RC(mk(d.ino, "late", 0644, NULL), -ENOENT);
	uint64_t nd, np;
	count_rows(d.ino, &nd, &np);
	CHECK(nd == 0 && np == 0);
	return 0;
}

/* ---- big directory + readdir ----------------------------------------------------------- */

#define BIG_N 20000
#define BIG_DIRS 10
static uint64_t g_big;

struct collect {
	uint32_t n, cap;
	char (*names)[32];
	uint64_t *cookies;
	uint8_t *seen; /* indexed by file number for names "f%d" */
	uint32_t dups, unknown, badattr;
	uint64_t last_cookie;
};

static int collect_fn(void *arg, const char *name, size_t len, uint64_t ino, uint32_t dtype, uint64_t cookie,
		      const struct aq_attr *attr)
{
	struct collect *c = arg;
	char tmp[32];
	if (len >= sizeof(tmp))
		return 0;
	memcpy(tmp, name, len);
	tmp[len] = 0;
	if (c->n < c->cap) {
		memcpy(c->names[c->n], tmp, len + 1);
		c->cookies[c->n] = cookie;
	}
	c->n++;
	c->last_cookie = cookie;
	if (attr && attr->ino != ino)
		c->badattr++;
	int k;
	if (sscanf(tmp, "f%d", &k) == 1 && k >= 0 && k < BIG_N) {
		if (c->seen[k]++)
			c->dups++;
	} else if (tmp[0] != 'd' && tmp[0] != 't') {
		c->unknown++;
	}
	return 0;
}

static int t_bigdir(void)
{
	struct aq_attr d, a;
	char name[32];
	CHECK_RC(mkd(AQ_ROOT_INO, "big", &d), 0);
	g_big = d.ino;
	for (int i = 0; i < BIG_N; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		CHECK_RC(mk(g_big, name, 0644, NULL), 0);
	}
	for (int i = 0; i < BIG_DIRS; i++) {
		snprintf(name, sizeof(name), "d%d", i);
		CHECK_RC(mkd(g_big, name, NULL), 0);
	}
	CHECK_RC(meta_getattr(g_m, g_big, &a), 0);
	CHECK(a.nlink == 2 + BIG_DIRS);
	struct meta_partial sum;
	CHECK_RC(meta_dir_totals(g_m, g_big, &sum), 0);
	CHECK(sum.nentries == BIG_N + BIG_DIRS && sum.nsubdirs == BIG_DIRS);

	/* Full listing in pages. */
	struct collect c = { .cap = BIG_N + BIG_DIRS };
	c.names = calloc(c.cap, 32);
	c.cookies = calloc(c.cap, sizeof(uint64_t));
	c.seen = calloc(BIG_N, 1);
	uint64_t cookie = 0;
	int pages = 0;
	for (;;) {
		int n = meta_readdir(g_m, &ROOT, g_big, cookie, 1000, pages % 2 == 1, collect_fn, &c);
		CHECK(n >= 0);
		if (n == 0)
			break;
		CHECK(c.last_cookie >= (1ull << 48) && c.last_cookie > cookie);
		cookie = c.last_cookie;
		pages++;
	}
	int rc = 0;
	if (c.n != BIG_N + BIG_DIRS || c.dups || c.unknown || c.badattr) {
		snprintf(g_why, sizeof(g_why), "listing: n=%u dups=%u unknown=%u badattr=%u", c.n, c.dups, c.unknown,
			 c.badattr);
		rc = -1;
	}
	for (int i = 0; rc == 0 && i < BIG_N; i++)
		if (c.seen[i] != 1) {
			snprintf(g_why, sizeof(g_why), "f%d seen %d times", i, c.seen[i]);
			rc = -1;
		}
	/* Resume from every 100th cookie: the next entry must be the one after it. */
	for (uint32_t i = 99; rc == 0 && i + 1 < c.n; i += 100) {
		struct collect r = { .cap = 4 };
		r.names = calloc(4, 32);
		r.cookies = calloc(4, sizeof(uint64_t));
		r.seen = calloc(BIG_N, 1);
		int n = meta_readdir(g_m, &ROOT, g_big, c.cookies[i], 3, false, collect_fn, &r);
		if (n < 1 || strcmp(r.names[0], c.names[i + 1]) != 0) {
			snprintf(g_why, sizeof(g_why), "resume at %u: got %d entries, first %s want %s", i, n,
				 n > 0 ? r.names[0] : "-", c.names[i + 1]);
			rc = -1;
		}
		free(r.names);
		free(r.cookies);
		free(r.seen);
	}
	/* Server-reserved small cookies mean "from the start". */
	if (rc == 0) {
		struct collect r = { .cap = 4 };
		r.names = calloc(4, 32);
		r.cookies = calloc(4, sizeof(uint64_t));
		r.seen = calloc(BIG_N, 1);
		int n = meta_readdir(g_m, &ROOT, g_big, 2, 1, false, collect_fn, &r);
		if (n != 1 || strcmp(r.names[0], c.names[0]) != 0) {
			snprintf(g_why, sizeof(g_why), "cookie 2 did not restart");
			rc = -1;
		}
		free(r.names);
		free(r.cookies);
		free(r.seen);
	}
	free(c.names);
	free(c.cookies);
	free(c.seen);
	return rc;
}

struct churn {
	uint64_t dir;
	unsigned names; /* t0 .. t<names - 1> */
	atomic_bool stop;
	int err;
};

static void *churn_main(void *arg)
{
	struct churn *ch = arg;
	char name[32];
	for (unsigned i = 0; !atomic_load(&ch->stop); i++) {
		snprintf(name, sizeof(name), "t%u", i % ch->names);
		int rc = mk(ch->dir, name, 0644, NULL);
		if (rc && rc != -EEXIST)
			ch->err = rc;
		snprintf(name, sizeof(name), "t%u", (i * 7 + 3) % ch->names);
		rc = ul(ch->dir, name);
		if (rc && rc != -ENOENT)
			ch->err = rc;
	}
	return NULL;
}

static int dup_names(struct collect *c)
{
	/* Names are few enough to check by sorting a copy. */
	int dups = 0;
	uint32_t n = MIN(c->n, c->cap);
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t j = i + 1; j < n; j++)
			if (c->names[i][0] == 't' && strcmp(c->names[i], c->names[j]) == 0)
				dups++;
	return dups;
}

/* Lists dirname (nstable files f<i>, and t<j> files another thread creates and unlinks
 * meanwhile) rounds times in pages of 37: every f<i> must come back exactly once and no
 * name twice. */
static int readdir_under_churn(const char *dirname, int nstable, unsigned churn_names, int rounds)
{
	struct aq_attr d;
	char name[32];
	CHECK_RC(mkd(AQ_ROOT_INO, dirname, &d), 0);
	for (int i = 0; i < nstable; i++) {
		snprintf(name, sizeof(name), "f%d", i);
		CHECK_RC(mk(d.ino, name, 0644, NULL), 0);
	}
	struct churn ch = { .dir = d.ino, .names = churn_names };
	pthread_t th;
	pthread_create(&th, NULL, churn_main, &ch);
	int rc = 0;
	for (int round = 0; round < rounds && rc == 0; round++) {
		struct collect c = { .cap = (uint32_t)nstable + churn_names + 16 };
		c.names = calloc(c.cap, 32);
		c.cookies = calloc(c.cap, sizeof(uint64_t));
		c.seen = calloc(BIG_N, 1);
		uint64_t cookie = 0;
		for (;;) {
			int n = meta_readdir(g_m, &ROOT, d.ino, cookie, 37, round & 1, collect_fn, &c);
			if (n < 0) {
				rc = -1;
				snprintf(g_why, sizeof(g_why), "readdir: %s", aq_strerror(n));
				break;
			}
			if (n == 0)
				break;
			cookie = c.last_cookie;
		}
		for (int i = 0; rc == 0 && i < nstable; i++)
			if (c.seen[i] != 1) {
				snprintf(g_why, sizeof(g_why), "round %d: f%d seen %d times", round, i, c.seen[i]);
				rc = -1;
			}
		if (rc == 0 && (c.dups || c.unknown || dup_names(&c))) {
			snprintf(g_why, sizeof(g_why), "round %d: duplicates", round);
			rc = -1;
		}
		free(c.names);
		free(c.cookies);
		free(c.seen);
	}
	atomic_store(&ch.stop, true);
	pthread_join(th, NULL);
	if (rc)
		return rc; /* g_why says which round and name */
	CHECK_RC(ch.err, 0);
	return 0;
}

static int t_readdir_concurrent(void) { return readdir_under_churn("churn", 2000, 500, 5); }

/* Fewer entries than buckets: the listing reads the partial rows and skips the buckets
 * they say are empty, while entries come and go in them. */
static int t_readdir_small_concurrent(void) { return readdir_under_churn("churn_small", 12, 20, 300); }

/* ---- rename --------------------------------------------------------------------------- */

/* Lists dir whole; returns how many "f%d" names came back, with seen[] marked (0 on dups). */
static int list_small(uint64_t dir, uint8_t *seen)
{
	struct collect c = { .cap = 0, .seen = seen };
	memset(seen, 0, BIG_N);
	uint64_t cookie = 0;
	for (;;) {
		uint32_t before = c.n;
		int n = meta_readdir(g_m, &ROOT, dir, cookie, 64, false, collect_fn, &c);
		if (n < 0)
			return n;
		if (c.n == before)
			break;
		cookie = c.last_cookie;
	}
	return c.dups || c.unknown ? -1 : (int)c.n;
}

/* A small directory's listing skips the buckets the directory-sum cache says are empty:
 * creates, unlinks and renames in and out must move those bits, or a listing misses an
 * entry (or scans for nothing). */
static int t_readdir_small_buckets(void)
{
	struct aq_attr d, o, a;
	char name[32], to[32];
	uint8_t *seen = calloc(1, BIG_N);
	CHECK_RC(mkd(AQ_ROOT_INO, "smallb", &d), 0);
	CHECK_RC(mkd(AQ_ROOT_INO, "smallb_other", &o), 0);
	CHECK_RC(mk(d.ino, "f0", 0644, &a), 0);
	CHECK(list_small(d.ino, seen) == 1); /* the cache now holds the directory */
	for (int i = 1; i < 60; i++) {
		snprintf(name, sizeof name, "f%d", i);
		CHECK_RC(mk(d.ino, name, 0644, &a), 0);
	}
	CHECK(list_small(d.ino, seen) == 60);
	for (int i = 0; i < 60; i += 2) {
		snprintf(name, sizeof name, "f%d", i);
		CHECK_RC(ul(d.ino, name), 0);
	}
	CHECK(list_small(d.ino, seen) == 30 && seen[1] && !seen[2]);
	for (int i = 1; i < 20; i += 2) { /* out, then some back under new names */
		snprintf(name, sizeof name, "f%d", i);
		CHECK_RC(ren(d.ino, name, o.ino, name, 0), 0);
	}
	CHECK(list_small(d.ino, seen) == 20 && !seen[1] && seen[21]);
	for (int i = 1; i < 10; i += 2) {
		snprintf(name, sizeof name, "f%d", i);
		snprintf(to, sizeof to, "f%d", 100 + i);
		CHECK_RC(ren(o.ino, name, d.ino, to, 0), 0);
	}
	CHECK(list_small(d.ino, seen) == 25 && seen[101] && seen[109]);
	CHECK(list_small(o.ino, seen) == 5 && seen[11] && !seen[1]);
	free(seen);
	return 0;
}

static int t_rename(void)
{
	struct aq_attr r, a, b, x, y, e, tmp;
	CHECK_RC(mkd(AQ_ROOT_INO, "rn", &r), 0);
	CHECK_RC(mk(r.ino, "a", 0644, &a), 0);
	CHECK_RC(mk(r.ino, "b", 0644, &b), 0);
	/* file over file: b is replaced and becomes an orphan */
	CHECK_RC(ren(r.ino, "a", r.ino, "b", 0), 0);
	CHECK_RC(lk(r.ino, "a", &tmp), -ENOENT);
	CHECK_RC(lk(r.ino, "b", &tmp), 0);
	CHECK(tmp.ino == a.ino);
	CHECK_RC(meta_getattr(g_m, b.ino, &tmp), 0);
	CHECK(tmp.nlink == 0);
	CHECK_RC(orphan_count(b.ino), 1);
	/* a directory cannot move under itself */
	CHECK_RC(mkd(r.ino, "x", &x), 0);
	CHECK_RC(mkd(x.ino, "y", &y), 0);
	CHECK_RC(ren(r.ino, "x", y.ino, "x2", 0), -EINVAL);
	CHECK_RC(ren(r.ino, "x", x.ino, "x2", 0), -EINVAL);
	/* noreplace */
	CHECK_RC(mk(r.ino, "c", 0644, NULL), 0);
	CHECK_RC(ren(r.ino, "b", r.ino, "c", AQ_RENAME_NOREPLACE), -EEXIST);
	CHECK_RC(ren(r.ino, "b", r.ino, "c2", AQ_RENAME_NOREPLACE), 0);
	/* type rules */
	CHECK_RC(ren(r.ino, "c", r.ino, "x", 0), -EISDIR);
	CHECK_RC(ren(r.ino, "x", r.ino, "c", 0), -ENOTDIR);
	CHECK_RC(mkd(r.ino, "e", &e), 0);
	CHECK_RC(ren(r.ino, "e", r.ino, "x", 0), -ENOTEMPTY);
	/* exchange a file and a directory living in different parents */
	CHECK_RC(ren(r.ino, "c", y.ino, "nothere", AQ_RENAME_EXCHANGE), -ENOENT);
	CHECK_RC(mk(y.ino, "yf", 0644, NULL), 0);
	CHECK_RC(ren(r.ino, "e", y.ino, "yf", AQ_RENAME_EXCHANGE), 0);
	CHECK_RC(lk(y.ino, "yf", &tmp), 0);
	CHECK(tmp.ino == e.ino && S_ISDIR(tmp.mode));
	CHECK_RC(lk(e.ino, "..", &tmp), 0);
	CHECK(tmp.ino == y.ino);
	CHECK_RC(lk(r.ino, "e", &tmp), 0);
	CHECK(S_ISREG(tmp.mode));
	CHECK_RC(meta_getattr(g_m, y.ino, &tmp), 0);
	CHECK(tmp.nlink == 3);
	uint32_t rlinks;
	CHECK_RC(meta_getattr(g_m, r.ino, &tmp), 0);
	rlinks = tmp.nlink;
	/* empty dir over empty dir; the victim disappears */
	CHECK_RC(mkd(r.ino, "e1", &a), 0);
	CHECK_RC(mkd(r.ino, "e2", &b), 0);
	CHECK_RC(ren(r.ino, "e1", r.ino, "e2", 0), 0);
	CHECK_RC(meta_getattr(g_m, b.ino, &tmp), -ENOENT);
	CHECK_RC(lk(r.ino, "e2", &tmp), 0);
	CHECK(tmp.ino == a.ino);
	CHECK_RC(meta_getattr(g_m, r.ino, &tmp), 0);
	CHECK(tmp.nlink == rlinks + 1);
	/* move a directory to another parent: counts follow it */
	CHECK_RC(ren(r.ino, "e2", AQ_ROOT_INO, "moved", 0), 0);
	CHECK_RC(meta_getattr(g_m, r.ino, &tmp), 0);
	CHECK(tmp.nlink == rlinks);
	CHECK_RC(lk(a.ino, "..", &tmp), 0);
	CHECK(tmp.ino == AQ_ROOT_INO);
	CHECK_RC(rmd(AQ_ROOT_INO, "moved"), 0);
	CHECK_RC(ren(r.ino, "c", r.ino, "c", 0), 0);
	CHECK_RC(ren(r.ino, "zz", r.ino, "c", 0), -ENOENT);
	struct meta_partial sum;
	CHECK_RC(meta_dir_totals(g_m, r.ino, &sum), 0);
	uint64_t nd, np;
	count_rows(r.ino, &nd, &np);
	CHECK((uint64_t)sum.nentries == nd);
	return 0;
}

/* ---- link / unlink / orphans -------------------------------------------------------------- */

static int t_link(void)
{
	struct aq_attr d, f, t, dd;
	uint64_t files0, files1;
	CHECK_RC(mkd(AQ_ROOT_INO, "ln", &d), 0);
	CHECK_RC(mkd(d.ino, "sub", &dd), 0);
	CHECK_RC(mk(d.ino, "f", 0644, &f), 0);
	CHECK_RC(meta_link(g_m, &ROOT, f.ino, dd.ino, "g", 1, &t), 0);
	CHECK(t.nlink == 2);
	CHECK_RC(meta_link(g_m, &ROOT, f.ino, dd.ino, "g", 1, &t), -EEXIST);
	CHECK_RC(meta_link(g_m, &ROOT, dd.ino, d.ino, "dl", 2, &t), -EPERM);
	CHECK_RC(ul(d.ino, "f"), 0);
	CHECK_RC(meta_getattr(g_m, f.ino, &t), 0);
	CHECK(t.nlink == 1);
	CHECK_RC(orphan_count(f.ino), 0);
	CHECK_RC(meta_count_files(g_m, &files0), 0);
	CHECK_RC(ul(dd.ino, "g"), 0);
	CHECK_RC(meta_getattr(g_m, f.ino, &t), 0);
	CHECK(t.nlink == 0);
	CHECK_RC(meta_link(g_m, &ROOT, f.ino, d.ino, "back", 4, &t), -ENOENT);
	CHECK_RC(orphan_count(f.ino), 1);
	struct meta_orphan o[4];
	CHECK_RC(meta_orphans(g_m, o, 1, f.ino - 1), 1);
	CHECK(o[0].ino == f.ino && o[0].chunk_size == 1 << 20 && o[0].size == 0);
	int n = meta_orphans(g_m, o, 4, f.ino);
	for (int i = 0; i < n; i++)
		CHECK(o[i].ino > f.ino);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.k", "v", 1, 0), 0);
	CHECK_RC(meta_orphan_done(g_m, f.ino), 0);
	CHECK_RC(meta_orphan_done(g_m, f.ino), -ENOENT);
	CHECK_RC(meta_getattr(g_m, f.ino, &t), -ENOENT);
	CHECK_RC(meta_count_files(g_m, &files1), 0);
	CHECK(files1 == files0 - 1);
	return 0;
}

static int count_fn(void *arg, const char *name, size_t len, uint64_t ino, uint64_t ts)
{
	(*(int *)arg)++;
	return 0;
}

/* An unnamed file (O_TMPFILE): an orphan from its commit, in no listing; a link names it
 * once unless it was made with AQ_CREATE_EXCL; the collector's path frees one never named. */
static int t_tmpfile(void)
{
	struct aq_attr d, ro, f, x, t;
	struct aq_cred other = { .uid = 3005, .gid = 3005 };
	uint64_t files0, files1;
	CHECK_RC(mkd(AQ_ROOT_INO, "tmpf", &d), 0);
	CHECK_RC(meta_count_files(g_m, &files0), 0);
	CHECK_RC(meta_tmpfile(g_m, &ROOT, d.ino, 0640 | AQ_MODE_UMASK(022), 0, &f), 0);
	CHECK(f.nlink == 0 && f.mode == (S_IFREG | 0640) && (f.flags & AQ_ATTR_LINKABLE));
	CHECK_RC(orphan_count(f.ino), 1);
	CHECK_RC(meta_count_files(g_m, &files1), 0);
	CHECK(files1 == files0 + 1);
	CHECK_RC(meta_getattr(g_m, d.ino, &t), 0);
	CHECK(t.size == d.size && t.nlink == 2 && t.mtime_ns == d.mtime_ns); /* nothing in the directory */
	uint64_t next;
	int seen = 0;
	CHECK_RC(meta_changes(g_m, &ROOT, d.ino, 0, 100, count_fn, &seen, &next), 0); /* nor in its changes */
	CHECK_RC(meta_tmpfile(g_m, &other, d.ino, 0600, 0, &x), -EACCES); /* needs w on the directory */
	CHECK_RC(meta_tmpfile(g_m, &ROOT, d.ino, S_IFDIR | 0700, 0, &x), -EINVAL);
	CHECK_RC(mk(d.ino, "f", 0644, &ro), 0);
	CHECK_RC(meta_tmpfile(g_m, &ROOT, ro.ino, 0600, 0, &x), -ENOTDIR);
	/* named: the orphan row goes, the flag too, and it counts in the directory */
	CHECK_RC(meta_link(g_m, &ROOT, f.ino, d.ino, "named", 5, &t), 0);
	CHECK(t.nlink == 1 && !(t.flags & AQ_ATTR_LINKABLE));
	CHECK_RC(orphan_count(f.ino), 0);
	CHECK_RC(lk(d.ino, "named", &t), 0);
	CHECK(t.ino == f.ino);
	CHECK_RC(meta_changes(g_m, &ROOT, d.ino, 0, 100, count_fn, &seen, &next), 2); /* f, and now named */
	/* once unlinked again it is an ordinary orphan: no second naming */
	CHECK_RC(ul(d.ino, "named"), 0);
	CHECK_RC(meta_link(g_m, &ROOT, f.ino, d.ino, "again", 5, &t), -ENOENT);
	CHECK_RC(orphan_count(f.ino), 1);
	CHECK_RC(meta_orphan_done(g_m, f.ino), 0);
	/* the collector's claim: refused for a file named since it was listed; once granted,
	 * the file can no longer be named */
	struct aq_attr g;
	CHECK_RC(meta_tmpfile(g_m, &ROOT, d.ino, 0600, 0, &g), 0);
	CHECK_RC(meta_link(g_m, &ROOT, g.ino, d.ino, "late", 4, &t), 0);
	CHECK_RC(meta_orphan_claim(g_m, g.ino), -ENOENT);
	CHECK_RC(ul(d.ino, "late"), 0);
	CHECK_RC(meta_tmpfile(g_m, &ROOT, d.ino, 0600, 0, &x), 0);
	CHECK_RC(meta_orphan_claim(g_m, x.ino), 0);
	CHECK_RC(meta_link(g_m, &ROOT, x.ino, d.ino, "toolate", 7, &t), -ENOENT);
	CHECK_RC(meta_orphan_done(g_m, x.ino), 0);
	CHECK_RC(meta_orphan_claim(g_m, g.ino), 0); /* an unlinked file: its orphan row is back */
	CHECK_RC(meta_orphan_done(g_m, g.ino), 0);
	/* O_EXCL: never named; freed as any orphan */
	CHECK_RC(meta_tmpfile(g_m, &ROOT, d.ino, 0600, AQ_CREATE_EXCL, &x), 0);
	CHECK(x.nlink == 0 && !(x.flags & AQ_ATTR_LINKABLE));
	CHECK_RC(meta_link(g_m, &ROOT, x.ino, d.ino, "never", 5, &t), -ENOENT);
	CHECK_RC(meta_orphan_done(g_m, x.ino), 0);
	CHECK_RC(meta_getattr(g_m, x.ino, &t), -ENOENT);
	CHECK_RC(ul(d.ino, "f"), 0);
	CHECK_RC(meta_orphan_done(g_m, ro.ino), 0);
	CHECK_RC(meta_count_files(g_m, &files1), 0);
	CHECK(files1 == files0);
	return 0;
}

/* ---- rmdir racing creates ------------------------------------------------------------------ */

struct racer {
	uint64_t dir;
	int id;
	pthread_barrier_t *bar;
	atomic_int *done;
	int err;
};

static void *racer_main(void *arg)
{
	struct racer *r = arg;
	char name[32];
	pthread_barrier_wait(r->bar);
	for (int i = 0; i < 1000000; i++) {
		snprintf(name, sizeof(name), "r%d_%d", r->id, i % 8);
		int rc = mk(r->dir, name, 0644, NULL);
		if (rc == -ENOENT)
			break; /* the directory is gone */
		if (rc) {
			r->err = rc;
			break;
		}
		rc = ul(r->dir, name);
		if (rc) {
			r->err = rc;
			break;
		}
	}
	return NULL;
}

static int t_rmdir_race(void)
{
	struct aq_attr base, d;
	CHECK_RC(mkd(AQ_ROOT_INO, "race", &base), 0);
	enum { THREADS = 4, ITERS = 60 };
	int enotempty = 0;
	for (int it = 0; it < ITERS; it++) {
		CHECK_RC(mkd(base.ino, "d", &d), 0);
		pthread_barrier_t bar;
		pthread_barrier_init(&bar, NULL, THREADS + 1);
		struct racer rs[THREADS];
		pthread_t th[THREADS];
		for (int i = 0; i < THREADS; i++) {
			rs[i] = (struct racer){ .dir = d.ino, .id = i, .bar = &bar };
			pthread_create(&th[i], NULL, racer_main, &rs[i]);
		}
		pthread_barrier_wait(&bar);
		int rc;
		while ((rc = rmd(base.ino, "d")) == -ENOTEMPTY)
			enotempty++;
		for (int i = 0; i < THREADS; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&bar);
		CHECK_RC(rc, 0);
		for (int i = 0; i < THREADS; i++)
			CHECK_RC(rs[i].err, 0);
		uint64_t nd, np;
		count_rows(d.ino, &nd, &np);
		CHECK(nd == 0 && np == 0);
		struct aq_attr t;
		CHECK_RC(lk(d.ino, "r0_0", &t), -ENOENT);
		CHECK_RC(meta_getattr(g_m, d.ino, &t), -ENOENT);
	}
	struct aq_attr t;
	CHECK_RC(meta_getattr(g_m, base.ino, &t), 0);
	CHECK(t.nlink == 2);
	if (getenv("TEST_META_VERBOSE"))
		printf("  rmdir saw ENOTEMPTY %d times\n", enotempty);
	return 0;
}

/* ---- permissions ----------------------------------------------------------------------------- */

/* A lookup's parent row comes from a cache: every change of the directory (chmod, chown,
 * rename of the directory, rmdir) shows in the very next lookup. */
static int t_lookup_sees_dir_changes(void)
{
	struct aq_cred u1 = { .uid = 1000, .gid = 1000 };
	struct aq_attr d, sub, t, in = { 0 };
	CHECK_RC(mkd(AQ_ROOT_INO, "dc", &d), 0);
	CHECK_RC(mkd(d.ino, "sub", &sub), 0);
	CHECK_RC(meta_mknod(g_m, &ROOT, sub.ino, "f", 1, 0644, 0, 0, NULL), 0);
	for (int round = 0; round < 3; round++) {
		CHECK_RC(meta_lookup(g_m, &u1, sub.ino, "f", 1, &t), 0);
		in.mode = 0700;
		CHECK_RC(meta_setattr(g_m, &ROOT, sub.ino, AQ_SET_MODE, &in, &t), 0);
		CHECK_RC(meta_lookup(g_m, &u1, sub.ino, "f", 1, &t), -EACCES);
		in.uid = 1000;
		CHECK_RC(meta_setattr(g_m, &ROOT, sub.ino, AQ_SET_UID, &in, &t), 0);
		CHECK_RC(meta_lookup(g_m, &u1, sub.ino, "f", 1, &t), 0);
		in.uid = 0, in.mode = 0755;
		CHECK_RC(meta_setattr(g_m, &ROOT, sub.ino, AQ_SET_UID | AQ_SET_MODE, &in, &t), 0);
	}
	/* ".." follows a rename of the directory */
	struct aq_attr d2;
	CHECK_RC(mkd(AQ_ROOT_INO, "dc2", &d2), 0);
	CHECK_RC(meta_lookup(g_m, &ROOT, sub.ino, "..", 2, &t), 0);
	CHECK(t.ino == d.ino);
	CHECK_RC(meta_rename(g_m, &ROOT, d.ino, "sub", 3, d2.ino, "sub", 3, 0), 0);
	CHECK_RC(meta_lookup(g_m, &ROOT, sub.ino, "..", 2, &t), 0);
	CHECK(t.ino == d2.ino);
	/* a removed directory is gone for lookups at once */
	CHECK_RC(meta_unlink(g_m, &ROOT, sub.ino, "f", 1), 0);
	CHECK_RC(meta_lookup(g_m, &ROOT, sub.ino, "f", 1, &t), -ENOENT);
	CHECK_RC(meta_rmdir(g_m, &ROOT, d2.ino, "sub", 3), 0);
	CHECK_RC(meta_lookup(g_m, &ROOT, sub.ino, "f", 1, &t), -ENOENT);
	return 0;
}

static int t_perms(void)
{
	struct aq_cred u1 = { .uid = 1000, .gid = 1000 }, u2 = { .uid = 1001, .gid = 1001 };
	struct aq_cred g = { .uid = 1002, .gid = 5, .ngroups = 1, .groups = { 1000 } };
	struct aq_attr d, p, f, t, in = { 0 };
	CHECK_RC(mkd(AQ_ROOT_INO, "perm", &d), 0);
	CHECK_RC(meta_mknod(g_m, &u1, d.ino, "no", 2, 0644, 0, 0, NULL), -EACCES);
	/* a private directory owned by u1 */
	CHECK_RC(mkd(AQ_ROOT_INO, "priv", &p), 0);
	in.uid = 1000, in.gid = 1000, in.mode = 0700;
	CHECK_RC(meta_setattr(g_m, &ROOT, p.ino, AQ_SET_UID | AQ_SET_GID | AQ_SET_MODE, &in, &p), 0);
	CHECK(p.uid == 1000 && (p.mode & 07777) == 0700);
	CHECK_RC(meta_mknod(g_m, &u1, p.ino, "mine", 4, 0640, 0, 0, &f), 0);
	CHECK(f.uid == 1000 && f.gid == 1000);
	CHECK_RC(meta_lookup(g_m, &u2, p.ino, "mine", 4, &t), -EACCES);
	CHECK_RC(meta_lookup(g_m, &u1, p.ino, "mine", 4, &t), 0);
	CHECK_RC(meta_readdir(g_m, &u2, p.ino, 0, 10, false, collect_fn, NULL), -EACCES);
	/* chmod: owner or root only */
	in.mode = 0777;
	CHECK_RC(meta_setattr(g_m, &u2, f.ino, AQ_SET_MODE, &in, &t), -EPERM);
	in.mode = 0644;
	CHECK_RC(meta_setattr(g_m, &u1, f.ino, AQ_SET_MODE, &in, &t), 0);
	CHECK((t.mode & 07777) == 0644);
	/* chown: root only; owner may change the group to one of its own */
	in.uid = 1001;
	CHECK_RC(meta_setattr(g_m, &u1, f.ino, AQ_SET_UID, &in, &t), -EPERM);
	in.gid = 7;
	CHECK_RC(meta_setattr(g_m, &u1, f.ino, AQ_SET_GID, &in, &t), -EPERM);
	struct aq_cred u1g = u1;
	u1g.ngroups = 1, u1g.groups[0] = 7;
	CHECK_RC(meta_setattr(g_m, &u1g, f.ino, AQ_SET_GID, &in, &t), 0);
	CHECK(t.gid == 7);
	/* setgid cleared on chmod by a non-member of the file's group */
	in.mode = 02755;
	CHECK_RC(meta_setattr(g_m, &u1, f.ino, AQ_SET_MODE, &in, &t), 0);
	CHECK((t.mode & 07777) == 0755);
	/* open and access */
	in.mode = 0444;
	CHECK_RC(meta_setattr(g_m, &u1, f.ino, AQ_SET_MODE, &in, &t), 0);
	CHECK_RC(meta_open_file(g_m, &u1, f.ino, O_WRONLY, &t), -EACCES);
	CHECK_RC(meta_open_file(g_m, &u1, f.ino, O_RDONLY | O_TRUNC, &t), -EACCES);
	CHECK_RC(meta_open_file(g_m, &u1, f.ino, O_RDONLY, &t), 0);
	CHECK_RC(meta_open_file(g_m, &ROOT, f.ino, O_RDWR, &t), 0);
	CHECK_RC(meta_open_file(g_m, &ROOT, p.ino, O_RDWR, &t), -EISDIR);
	CHECK_RC(meta_access(g_m, &u1, f.ino, W_OK), -EACCES);
	CHECK_RC(meta_access(g_m, &u1, f.ino, R_OK), 0);
	CHECK_RC(meta_access(g_m, &ROOT, f.ino, X_OK), -EACCES);
	CHECK_RC(meta_access(g_m, &u2, f.ino, F_OK), 0);
	in.size = 10;
	CHECK_RC(meta_setattr(g_m, &u1, f.ino, AQ_SET_SIZE, &in, &t), -EACCES);
	/* group permission through supplementary groups */
	in.mode = 0750, in.gid = 1000;
	CHECK_RC(meta_setattr(g_m, &ROOT, p.ino, AQ_SET_MODE | AQ_SET_GID, &in, &t), 0);
	CHECK_RC(meta_lookup(g_m, &g, p.ino, "mine", 4, &t), 0);
	CHECK_RC(meta_unlink(g_m, &g, p.ino, "mine", 4), -EACCES);
	CHECK_RC(meta_unlink(g_m, &u2, p.ino, "mine", 4), -EACCES);
	/* utimens: "now" needs owner or write; explicit times need the owner */
	CHECK_RC(meta_setattr(g_m, &u2, f.ino, AQ_SET_MTIME_NOW, &in, &t), -EACCES);
	in.mtime_ns = 12345;
	CHECK_RC(meta_setattr(g_m, &u2, f.ino, AQ_SET_MTIME, &in, &t), -EPERM);
	CHECK_RC(meta_setattr(g_m, &u1, f.ino, AQ_SET_MTIME, &in, &t), 0);
	CHECK(t.mtime_ns == 12345);
	CHECK_RC(meta_unlink(g_m, &u1, p.ino, "mine", 4), 0);
	return 0;
}

static int t_sticky(void)
{
	struct aq_cred a = { .uid = 2000, .gid = 2000 }, b = { .uid = 2001, .gid = 2001 };
	struct aq_attr d, t, in = { .mode = 01777 };
	CHECK_RC(mkd(AQ_ROOT_INO, "tmp", &d), 0);
	CHECK_RC(meta_setattr(g_m, &ROOT, d.ino, AQ_SET_MODE, &in, &t), 0);
	CHECK_RC(meta_mknod(g_m, &a, d.ino, "af", 2, 0666, 0, 0, &t), 0);
	CHECK_RC(meta_unlink(g_m, &b, d.ino, "af", 2), -EPERM);
	CHECK_RC(meta_rename(g_m, &b, d.ino, "af", 2, d.ino, "bf", 2, 0), -EPERM);
	CHECK_RC(meta_rename(g_m, &a, d.ino, "af", 2, d.ino, "af2", 3, 0), 0);
	CHECK_RC(meta_unlink(g_m, &a, d.ino, "af2", 3), 0);
	/* without the sticky bit b may remove a's file */
	in.mode = 0777;
	CHECK_RC(meta_setattr(g_m, &ROOT, d.ino, AQ_SET_MODE, &in, &t), 0);
	CHECK_RC(meta_mknod(g_m, &a, d.ino, "af", 2, 0666, 0, 0, &t), 0);
	CHECK_RC(meta_unlink(g_m, &b, d.ino, "af", 2), 0);
	return 0;
}

/* AQ_SET_KILL_SXID: what a write by someone without CAP_FSETID drops, who may ask, and
 * that asking with nothing to drop changes nothing. */
static int t_kill_sxid(void)
{
	struct aq_cred w = { .uid = 3000, .gid = 3000 }, member = { .uid = 3001, .gid = 77 };
	struct aq_attr d, f, t, before, in = { .mode = 0777 };
	CHECK_RC(mkd(AQ_ROOT_INO, "sxid", &d), 0);
	CHECK_RC(meta_setattr(g_m, &ROOT, d.ino, AQ_SET_MODE, &in, &t), 0);
	CHECK_RC(meta_mknod(g_m, &ROOT, d.ino, "f", 1, 0600, 0, 0, &f), 0);
	const struct { uint32_t mode, gid; const struct aq_cred *by; uint32_t after; } cases[] = {
		{ 04777, 0, &w, 0777 },  { 02777, 0, &w, 0777 },   { 06777, 0, &w, 0777 },
		{ 02767, 0, &w, 0767 },  /* setgid without group exec: a non-member drops it */
		{ 02767, 77, &member, 02767 }, /* a member keeps it */
		{ 02767, 0, &ROOT, 02767 }, /* and so does root */
		{ 04777, 0, &ROOT, 0777 }, { 0777, 0, &w, 0777 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		in.mode = cases[i].mode, in.gid = cases[i].gid;
		CHECK_RC(meta_setattr(g_m, &ROOT, f.ino, AQ_SET_MODE | AQ_SET_GID, &in, &before), 0);
		CHECK_RC(meta_setattr(g_m, cases[i].by, f.ino, AQ_SET_KILL_SXID, &in, &t), 0);
		CHECK((t.mode & 07777) == cases[i].after);
		if (cases[i].after == cases[i].mode) /* nothing dropped: nothing written */
			CHECK(t.ctime_ns == before.ctime_ns);
	}
	/* someone who may not write the file may not drop its bits, but a handle may */
	in.mode = 04755, in.gid = 0;
	CHECK_RC(meta_setattr(g_m, &ROOT, f.ino, AQ_SET_MODE | AQ_SET_GID, &in, &t), 0);
	CHECK_RC(meta_setattr(g_m, &w, f.ino, AQ_SET_KILL_SXID, &in, &t), -EPERM);
	CHECK_RC(meta_setattr(g_m, &w, f.ino, AQ_SET_KILL_SXID | AQ_SET_BY_HANDLE, &in, &t), 0);
	CHECK((t.mode & 07777) == 0755);
	/* but an empty mask touches ctime, as chown(f, -1, -1) does on Linux (regression:
	 * the shortcut above took it too) */
	CHECK_RC(meta_setattr(g_m, &ROOT, f.ino, 0, &in, &before), 0);
	CHECK_RC(meta_setattr(g_m, &ROOT, f.ino, 0, &in, &t), 0);
	CHECK(t.ctime_ns > before.ctime_ns);
	/* a directory's setgid is inheritance, not privilege */
	in.mode = 02777;
	CHECK_RC(meta_setattr(g_m, &ROOT, d.ino, AQ_SET_MODE, &in, &t), 0);
	CHECK_RC(meta_setattr(g_m, &w, d.ino, AQ_SET_KILL_SXID, &in, &t), 0);
	CHECK((t.mode & 07777) == 02777);
	return 0;
}

/* ---- setattr / size ---------------------------------------------------------------------------- */

static uint64_t g_trunc_ino, g_trunc_size;

static int trunc_fn(void *arg, uint64_t ino, uint64_t new_size, uint32_t chunk_size)
{
	g_trunc_ino = ino;
	g_trunc_size = new_size;
	return 0;
}

static int t_size(void)
{
	struct aq_attr f, t, in = { 0 };
	g_m->truncate_fn = trunc_fn;
	CHECK_RC(mk(AQ_ROOT_INO, "sized", 0644, &f), 0);
	CHECK_RC(meta_commit_size(g_m, f.ino, 5000, 0, &t), 0);
	CHECK(t.size == 5000);
	CHECK_RC(meta_commit_size(g_m, f.ino, 100, 0, &t), 0);
	CHECK(t.size == 5000);
	in.size = 10;
	CHECK_RC(meta_setattr(g_m, &ROOT, f.ino, AQ_SET_SIZE, &in, &t), 0);
	CHECK(t.size == 10 && g_trunc_ino == f.ino && g_trunc_size == 10);
	g_trunc_ino = 0;
	in.size = 100;
	CHECK_RC(meta_setattr(g_m, &ROOT, f.ino, AQ_SET_SIZE, &in, &t), 0);
	CHECK(t.size == 100 && g_trunc_ino == 0);
	g_m->truncate_fn = NULL;
	return 0;
}

/* ---- xattrs ------------------------------------------------------------------------------------ */

static int t_xattr(void)
{
	struct aq_attr f;
	struct aq_cred u = { .uid = 3000, .gid = 3000 };
	char buf[128];
	CHECK_RC(mk(AQ_ROOT_INO, "xa", 0644, &f), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.a", "one", 3, AQ_XATTR_CREATE), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.a", "two", 3, AQ_XATTR_CREATE), -EEXIST);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.b", "x", 1, AQ_XATTR_REPLACE), -ENODATA);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.a", "three", 5, AQ_XATTR_REPLACE), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.b", "", 0, 0), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "trusted.t", "t", 1, 0), 0);
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "user.a", NULL, 0), 5);
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "user.a", buf, 2), -ERANGE);
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "user.a", buf, sizeof(buf)), 5);
	CHECK(memcmp(buf, "three", 5) == 0);
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "user.b", buf, sizeof(buf)), 0);
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "user.zz", buf, sizeof(buf)), -ENODATA);
	CHECK_RC(meta_listxattr(g_m, &ROOT, f.ino, NULL, 0), 7 + 7 + 10);
	CHECK_RC(meta_listxattr(g_m, &ROOT, f.ino, buf, 5), -ERANGE);
	CHECK_RC(meta_listxattr(g_m, &ROOT, f.ino, buf, sizeof(buf)), 24);
	CHECK(memcmp(buf, "trusted.t\0user.a\0user.b\0", 24) == 0);
	CHECK_RC(meta_listxattr(g_m, &u, f.ino, buf, sizeof(buf)), 14);
	CHECK_RC(meta_getxattr(g_m, &u, f.ino, "user.a", buf, sizeof(buf)), 5);
	CHECK_RC(meta_setxattr(g_m, &u, f.ino, "user.c", "x", 1, 0), -EACCES);
	CHECK_RC(meta_setxattr(g_m, &u, f.ino, "trusted.x", "x", 1, 0), -EPERM);
	CHECK_RC(meta_getxattr(g_m, &u, f.ino, "trusted.t", buf, sizeof(buf)), -EPERM);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "bogus.x", "x", 1, 0), -EOPNOTSUPP);
	CHECK_RC(meta_removexattr(g_m, &ROOT, f.ino, "user.a"), 0);
	CHECK_RC(meta_removexattr(g_m, &ROOT, f.ino, "user.a"), -ENODATA);
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "user.a", buf, sizeof(buf)), -ENODATA);
	/* anyone may read security.* and system.* (ls -l does), as on Linux */
	CHECK_RC(meta_getxattr(g_m, &u, f.ino, "security.selinux", buf, sizeof(buf)), -ENODATA);
	CHECK_RC(meta_getxattr(g_m, &u, f.ino, "system.posix_acl_access", NULL, 0), -ENODATA);
	CHECK_RC(meta_setxattr(g_m, &u, f.ino, "security.x", "x", 1, 0), -EPERM);
	/* of "system." only the two ACLs (t_acl) */
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "system.other", "x", 1, 0), -EOPNOTSUPP);

	/* AQ_ATTR_XATTRS: set while any attribute is left, clear after the last goes */
	struct aq_attr a;
	CHECK_RC(mk(AQ_ROOT_INO, "xflag", 0644, &a), 0);
	CHECK(!(a.flags & AQ_ATTR_XATTRS));
	CHECK_RC(meta_setxattr(g_m, &ROOT, a.ino, "user.a", "1", 1, 0), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, a.ino, "user.b", "2", 1, 0), 0);
	CHECK_RC(meta_attr_of(g_m, a.ino, &a), 0);
	CHECK(a.flags & AQ_ATTR_XATTRS);
	CHECK_RC(meta_removexattr(g_m, &ROOT, a.ino, "user.b"), 0);
	CHECK_RC(meta_attr_of(g_m, a.ino, &a), 0);
	CHECK(a.flags & AQ_ATTR_XATTRS);
	CHECK_RC(meta_removexattr(g_m, &ROOT, a.ino, "user.a"), 0);
	CHECK_RC(meta_attr_of(g_m, a.ino, &a), 0);
	CHECK(!(a.flags & AQ_ATTR_XATTRS));
	return 0;
}

/* An inode row of version 2 (fixed fields), as an aqd before format 3 wrote it. */
static size_t v2_row(uint8_t *row, const struct meta_inode *in)
{
	const struct aq_attr *a = &in->a;
	uint8_t *p = row;
	*p++ = 2;
	put_le32(p, a->mode), p += 4;
	put_le32(p, a->uid), p += 4;
	put_le32(p, a->gid), p += 4;
	put_le32(p, a->nlink), p += 4;
	put_le64(p, a->size), p += 8;
	put_le64(p, a->blocks), p += 8;
	put_le64(p, (uint64_t)a->atime_ns), p += 8;
	put_le64(p, (uint64_t)a->mtime_ns), p += 8;
	put_le64(p, (uint64_t)a->ctime_ns), p += 8;
	put_le32(p, a->rdev), p += 4;
	put_le64(p, a->generation), p += 8;
	put_le32(p, a->chunk_size), p += 4;
	put_le64(p, in->parent), p += 8;
	put_le32(p, a->flags), p += 4;
	memcpy(p, in->target, in->target_len);
	return (size_t)(p - row) + in->target_len;
}

static bool same_inode(const struct meta_inode *x, const struct meta_inode *y)
{
	const struct aq_attr *a = &x->a, *b = &y->a;
	return a->ino == b->ino && a->mode == b->mode && a->uid == b->uid && a->gid == b->gid && a->nlink == b->nlink &&
	       a->size == b->size && a->blocks == b->blocks && a->atime_ns == b->atime_ns &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns && a->rdev == b->rdev &&
	       a->generation == b->generation && a->chunk_size == b->chunk_size && a->flags == b->flags &&
	       x->parent == y->parent && x->target_len == y->target_len && !memcmp(x->target, y->target, x->target_len);
}

/* Inode rows of version 3 (varints) round-trip every value, a new file's is small, a row
 * cut short or out of range is refused, not read; rows of versions 1 and 2 read as they
 * did, and one of a store made before format 3 is written anew in the new form when its
 * inode changes. */
static int t_inode_rows(void)
{
	static struct meta_inode in, out;
	static uint8_t row[META_INODE_FIXED_MAX + AQ_PATH_MAX + 16];
	int64_t now = 1765000000123456789;
	in = (struct meta_inode){.a = {.ino = 77, .mode = S_IFREG | 0644, .uid = 1000, .gid = 1000, .nlink = 1,
				       .atime_ns = now, .mtime_ns = now, .ctime_ns = now, .generation = now + 5,
				       .chunk_size = 4 << 20}};
	size_t len = meta_inode_encode(&in, row, sizeof(row));
	CHECK(row[0] == 3 && len <= 36);
	CHECK_RC(meta_inode_decode(row, len, 77, &out), 0);
	CHECK(same_inode(&in, &out));
	/* every fixed part cut short; a symlink's target may be any length, so the row
	 * without one is cut */
	for (size_t cut = 0; cut < len; cut++)
		CHECK_RC(meta_inode_decode(row, cut, 77, &out), -EIO);

	/* the extremes: every field at its largest, times as far from mtime as they go */
	in.a = (struct aq_attr){.ino = 78, .mode = UINT32_MAX, .uid = UINT32_MAX, .gid = UINT32_MAX,
				.nlink = UINT32_MAX, .size = UINT64_MAX, .blocks = UINT64_MAX, .atime_ns = INT64_MIN,
				.mtime_ns = 0, .ctime_ns = INT64_MAX, .rdev = UINT32_MAX, .generation = UINT64_MAX,
				.chunk_size = UINT32_MAX, .flags = UINT32_MAX};
	in.parent = UINT64_MAX;
	in.target_len = AQ_PATH_MAX;
	memset(in.target, 'x', AQ_PATH_MAX);
	len = meta_inode_encode(&in, row, sizeof(row));
	CHECK(len == META_INODE_FIXED_MAX + AQ_PATH_MAX);
	CHECK_RC(meta_inode_decode(row, len, 78, &out), 0);
	CHECK(same_inode(&in, &out));
	CHECK_RC(meta_inode_decode(row, len + 1, 78, &out), -EIO); /* a target past AQ_PATH_MAX */
	in.a.atime_ns = INT64_MAX; /* distances that wrap */
	in.a.mtime_ns = INT64_MIN;
	in.a.ctime_ns = -1;
	in.target_len = 3;
	len = meta_inode_encode(&in, row, sizeof(row));
	CHECK_RC(meta_inode_decode(row, len, 78, &out), 0);
	CHECK(same_inode(&in, &out));

	/* a varint past 64 bits, a 32-bit field over its range, versions unknown */
	uint8_t bad[40] = {3};
	memset(bad + 5, 0xff, 9); /* size: 2^64 + ... */
	bad[14] = 0x02;
	CHECK_RC(meta_inode_decode(bad, sizeof bad, 78, &out), -EIO);
	bad[14] = 0x01; /* UINT64_MAX */
	CHECK_RC(meta_inode_decode(bad, sizeof bad, 78, &out), 0);
	CHECK(out.a.size == UINT64_MAX);
	bad[1] = 0x80, bad[2] = 0x80, bad[3] = 0x80, bad[4] = 0x80, bad[5] = 0x10; /* mode = 2^32 */
	memset(bad + 6, 0, sizeof bad - 6);
	CHECK_RC(meta_inode_decode(bad, sizeof bad, 78, &out), -EIO);
	bad[5] = 0x0f; /* 2^32 - 2^28: in range, and the rest of the row zeros */
	CHECK_RC(meta_inode_decode(bad, sizeof bad, 78, &out), 0);
	for (int v = 0; v < 256; v += 4) {
		bad[0] = (uint8_t)v;
		CHECK_RC(meta_inode_decode(bad, sizeof bad, 78, &out), -EIO);
	}

	/* versions 2 and 1 (version 1 has no flags word: read as "may have attributes") */
	in.a.flags = 0;
	len = v2_row(row, &in);
	CHECK(len == META_INODE_FIXED_LEN_V2 + 3);
	CHECK_RC(meta_inode_decode(row, len, 78, &out), 0);
	CHECK(same_inode(&in, &out));
	row[0] = 1;
	memmove(row + META_INODE_FIXED_LEN_V1, row + META_INODE_FIXED_LEN_V2, 3);
	CHECK_RC(meta_inode_decode(row, META_INODE_FIXED_LEN_V1 + 3, 78, &out), 0);
	in.a.flags = AQ_ATTR_XATTRS;
	CHECK(same_inode(&in, &out));
	CHECK_RC(meta_inode_decode(row, META_INODE_FIXED_LEN_V1 - 1, 78, &out), -EIO);

	/* in a store: a file whose row an older aqd wrote */
	struct aq_attr a, b, c;
	CHECK_RC(mk(AQ_ROOT_INO, "oldrow", 0640, &a), 0);
	CHECK_RC(meta_read_inode(g_m, a.ino, &in), 0);
	uint8_t key[META_INODE_KEY_LEN];
	size_t klen = meta_key_inode(key, a.ino);
	char *err = NULL;
	len = v2_row(row, &in);
	rocksdb_put(g_m->db, g_m->wopts, (const char *)key, klen, (const char *)row, len, &err);
	CHECK(err == NULL);
	CHECK_RC(meta_attr_of(g_m, a.ino, &b), 0);
	CHECK(b.mode == a.mode && b.ctime_ns == a.ctime_ns && b.generation == a.generation);
	b.mode = 0600;
	CHECK_RC(meta_setattr(g_m, &ROOT, a.ino, AQ_SET_MODE, &b, &c), 0);
	char *v = rocksdb_get(g_m->db, g_m->ropts, (const char *)key, klen, &len, &err);
	CHECK(err == NULL && v && v[0] == 3 && len < META_INODE_FIXED_LEN_V2);
	rocksdb_free(v);
	CHECK_RC(meta_attr_of(g_m, a.ino, &b), 0);
	CHECK(b.mode == (S_IFREG | 0600) && b.generation == a.generation && b.uid == a.uid);
	return 0;
}

/* Regression (stress-ng --xattr): a set of a new name read every name the inode had, to
 * check listxattr's 64 KiB, and the scan ran on past the inode's rows, over the deleted
 * rows of other inodes' attributes (a setxattr took 2-6 ms after another file's were
 * removed). Now the inode's summary row says its names' bytes, and scans are bounded to
 * the inode. Counted in RocksDB's perf context, not timed. */
/* An ACL in the kernel's xattr format from (tag, perm, id) triples. */
static size_t acl_of(uint8_t *buf, const uint32_t (*e)[3], uint32_t n)
{
	put_le32(buf, 2);
	for (uint32_t i = 0; i < n; i++) {
		put_le16(buf + 4 + 8 * i, (uint16_t)e[i][0]);
		put_le16(buf + 6 + 8 * i, (uint16_t)e[i][1]);
		put_le32(buf + 8 + 8 * i, e[i][2]);
	}
	return 4 + 8 * (size_t)n;
}

#define NOID 0xffffffffu

static int t_acl(void)
{
	struct aq_cred named = { .uid = 3001, .gid = 3001 }, other = { .uid = 3002, .gid = 3002 };
	struct aq_attr f, d, c;
	uint8_t v[256], got[256];
	/* user::rw- user:3001:rw- group::r-- mask::rw- other::--- */
	static const uint32_t e1[][3] = { { 1, 6, NOID }, { 2, 6, 3001 }, { 4, 4, NOID }, { 0x10, 6, NOID },
					  { 0x20, 0, NOID } };
	size_t n1 = acl_of(v, e1, 5);
	CHECK_RC(mk(AQ_ROOT_INO, "acl_f", 0600, &f), 0);
	CHECK_RC(meta_access(g_m, &named, f.ino, R_OK), -EACCES);
	CHECK_RC(meta_setxattr(g_m, &named, f.ino, "system.posix_acl_access", v, n1, 0), -EPERM); /* not the owner */
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "system.posix_acl_access", v, n1, 0), 0);
	CHECK_RC(meta_attr_of(g_m, f.ino, &f), 0);
	CHECK(f.mode == (S_IFREG | 0660) && (f.flags & AQ_ATTR_ACL) && (f.flags & AQ_ATTR_XATTRS));
	CHECK_RC(meta_access(g_m, &named, f.ino, R_OK | W_OK), 0);
	CHECK_RC(meta_access(g_m, &other, f.ino, R_OK), -EACCES);
	/* chmod 0640: the mask takes the group bits, the named entry keeps rw- */
	struct aq_attr in = { .mode = 0640 }, out;
	CHECK_RC(meta_setattr(g_m, &ROOT, f.ino, AQ_SET_MODE, &in, &out), 0);
	CHECK_RC(meta_access(g_m, &named, f.ino, R_OK), 0);
	CHECK_RC(meta_access(g_m, &named, f.ino, W_OK), -EACCES);
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "system.posix_acl_access", got, sizeof(got)), (int)n1);
	CHECK(get_le16(got + 4 + 8 * 3 + 2) == 4 && get_le16(got + 4 + 8 * 4 + 2) == 0); /* mask r--, other --- */
	/* an ACL the mode says whole: the mode changes, no row stays */
	static const uint32_t e2[][3] = { { 1, 7, NOID }, { 4, 5, NOID }, { 0x20, 1, NOID } };
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "system.posix_acl_access", v, acl_of(v, e2, 3), 0), 0);
	CHECK_RC(meta_attr_of(g_m, f.ino, &f), 0);
	CHECK(f.mode == (S_IFREG | 0751) && !(f.flags & (AQ_ATTR_ACL | AQ_ATTR_XATTRS)));
	CHECK_RC(meta_getxattr(g_m, &ROOT, f.ino, "system.posix_acl_access", got, sizeof(got)), -ENODATA);
	CHECK_RC(meta_removexattr(g_m, &ROOT, f.ino, "system.posix_acl_access"), 0); /* none: fine */
	/* not an ACL: refused, nothing changed */
	static const uint32_t bad[][3] = { { 1, 6, NOID }, { 2, 6, 3001 }, { 4, 4, NOID }, { 0x20, 0, NOID } };
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "system.posix_acl_access", v, acl_of(v, bad, 4), 0), -EINVAL);
	CHECK_RC(meta_attr_of(g_m, f.ino, &f), 0);
	CHECK(f.mode == (S_IFREG | 0751));
	/* a default ACL: only on directories; a new inode takes it instead of the umask */
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "system.posix_acl_default", v, n1, 0), -EACCES);
	CHECK_RC(mkd(AQ_ROOT_INO, "acl_d", &d), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, d.ino, "system.posix_acl_default", v, acl_of(v, e1, 5), 0), 0);
	CHECK_RC(meta_attr_of(g_m, d.ino, &d), 0);
	CHECK(d.mode == (S_IFDIR | 0755) && (d.flags & AQ_ATTR_DACL) && !(d.flags & AQ_ATTR_ACL));
	CHECK_RC(meta_mknod(g_m, &ROOT, d.ino, "c", 1, 0644 | AQ_MODE_UMASK(077), 0, AQ_CREATE_EXCL, &c), 0);
	/* 0644 against user::rw- mask::rw- other::---: rw-r----- with the named entry */
	CHECK(c.mode == (S_IFREG | 0640) && (c.flags & AQ_ATTR_ACL) && !(c.flags & AQ_ATTR_DACL));
	CHECK_RC(meta_access(g_m, &named, c.ino, R_OK), 0);
	CHECK_RC(meta_access(g_m, &named, c.ino, W_OK), -EACCES);
	CHECK_RC(meta_mkdir(g_m, &ROOT, d.ino, "sub", 3, 0777 | AQ_MODE_UMASK(077), &c), 0);
	CHECK(c.mode == (S_IFDIR | 0660) && (c.flags & AQ_ATTR_ACL) && (c.flags & AQ_ATTR_DACL));
	CHECK_RC(meta_getxattr(g_m, &ROOT, c.ino, "system.posix_acl_default", got, sizeof(got)), (int)n1);
	CHECK(memcmp(got, v, n1) == 0);
	/* without a default ACL the umask applies; a header alone removes the default ACL */
	CHECK_RC(meta_setxattr(g_m, &ROOT, d.ino, "system.posix_acl_default", v, 4, 0), 0);
	CHECK_RC(meta_mknod(g_m, &ROOT, d.ino, "u", 1, 0666 | AQ_MODE_UMASK(027), 0, AQ_CREATE_EXCL, &c), 0);
	CHECK(c.mode == (S_IFREG | 0640) && !(c.flags & (AQ_ATTR_ACL | AQ_ATTR_XATTRS)));
	CHECK_RC(meta_attr_of(g_m, d.ino, &d), 0);
	CHECK(!(d.flags & (AQ_ATTR_DACL | AQ_ATTR_XATTRS)));
	return 0;
}

static uint64_t perf_metric_of_set(uint64_t ino, const char *name, int *rc, int metric)
{
	rocksdb_set_perf_level(rocksdb_enable_count);
	rocksdb_perfcontext_t *pc = rocksdb_perfcontext_create();
	rocksdb_perfcontext_reset(pc);
	*rc = meta_setxattr(g_m, &ROOT, ino, name, "v", 1, AQ_XATTR_CREATE);
	uint64_t v = rocksdb_perfcontext_metric(pc, metric);
	rocksdb_perfcontext_destroy(pc);
	rocksdb_set_perf_level(rocksdb_disable);
	return v;
}

static int t_xattr_summary(void)
{
	struct aq_attr f, g, a;
	char name[256];
	CHECK_RC(mkd(AQ_ROOT_INO, "xsum", &a), 0);
	CHECK_RC(mk(a.ino, "f", 0644, &f), 0);
	/* a later file of f's bucket, whose attribute rows sort right after f's (no other
	 * file's between): its names set, then removed */
	for (int i = 0;; i++) {
		snprintf(name, sizeof name, "g%d", i);
		CHECK_RC(mk(a.ino, name, 0644, &g), 0);
		if (aq_ino_bucket(g.ino) == aq_ino_bucket(f.ino))
			break;
	}
	CHECK(g.ino > f.ino);
	enum { GONE = 2000 };
	for (int i = 0; i < GONE; i++) {
		snprintf(name, sizeof name, "user.gone%d", i);
		CHECK_RC(meta_setxattr(g_m, &ROOT, g.ino, name, "v", 1, 0), 0);
	}
	for (int i = 0; i < GONE; i++) {
		snprintf(name, sizeof name, "user.gone%d", i);
		CHECK_RC(meta_removexattr(g_m, &ROOT, g.ino, name), 0);
	}
	CHECK_RC(meta_listxattr(g_m, &ROOT, g.ino, NULL, 0), 0);
	CHECK_RC(meta_attr_of(g_m, g.ino, &g), 0);
	CHECK(!(g.flags & AQ_ATTR_XATTRS));

	/* f's scans stop at f's rows: none of g's deleted ones are stepped over */
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.first", "v", 1, 0), 0);
	rocksdb_set_perf_level(rocksdb_enable_count);
	rocksdb_perfcontext_t *pc = rocksdb_perfcontext_create();
	rocksdb_perfcontext_reset(pc);
	int rc = meta_listxattr(g_m, &ROOT, f.ino, NULL, 0);
	uint64_t skipped = rocksdb_perfcontext_metric(pc, rocksdb_internal_delete_skipped_count);
	rocksdb_perfcontext_destroy(pc);
	rocksdb_set_perf_level(rocksdb_disable);
	CHECK_RC(rc, 11);
	CHECKF(skipped < 10, "%llu deleted rows stepped over by a listxattr", (unsigned long long)skipped);
	CHECK_RC(meta_removexattr(g_m, &ROOT, f.ino, "user.first"), 0);

	/* names fill listxattr's 64 KiB exactly as counted, without reading them back */
	int n = 0;
	for (;; n++) {
		snprintf(name, sizeof name, "user.%0200d", n); /* 205 bytes and a NUL */
		uint64_t read = perf_metric_of_set(f.ino, name, &rc, rocksdb_iter_read_bytes);
		if (rc == -ENOSPC)
			break;
		CHECKF(rc == 0, "name %d: %d", n, rc);
		CHECKF(read == 0, "name %d: the set read %llu bytes of rows", n, (unsigned long long)read);
	}
	CHECKF(n == AQ_XATTR_LIST_MAX / 206, "%d names accepted", n);
	CHECK_RC(meta_listxattr(g_m, &ROOT, f.ino, NULL, 0), n * 206);
	snprintf(name, sizeof name, "user.%0200d", 7);
	CHECK_RC(meta_removexattr(g_m, &ROOT, f.ino, name), 0);
	/* 28 bytes were left, 234 now: 56 of them taken, too few for the name again */
	const char *mid = "user.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, mid, "v", 1, AQ_XATTR_CREATE), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, name, "v", 1, AQ_XATTR_CREATE), -ENOSPC);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, mid, "longer value", 12, AQ_XATTR_REPLACE), 0);

	/* a store from before summary rows: the first change counts the rows */
	uint8_t key[META_XATTR_KEY_MAX];
	size_t klen = meta_key_xattr(key, f.ino, "", 0);
	CHECK_RC(meta_get(g_m, key, klen, NULL, 0, NULL), 1);
	char *err = NULL;
	rocksdb_delete(g_m->db, g_m->wopts, (const char *)key, klen, &err);
	CHECK(err == NULL);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, name, "v", 1, AQ_XATTR_CREATE), -ENOSPC);
	CHECK_RC(meta_removexattr(g_m, &ROOT, f.ino, mid), 0);
	CHECK_RC(meta_get(g_m, key, klen, NULL, 0, NULL), 1);
	CHECK_RC(meta_listxattr(g_m, &ROOT, f.ino, NULL, 0), (n - 1) * 206);

	/* the last name takes the flag and the summary with it; so does the file's end */
	for (int i = 0; i < n; i++) {
		snprintf(name, sizeof name, "user.%0200d", i);
		CHECK_RC(meta_removexattr(g_m, &ROOT, f.ino, name), i == 7 ? -ENODATA : 0);
	}
	CHECK_RC(meta_attr_of(g_m, f.ino, &f), 0);
	CHECK(!(f.flags & AQ_ATTR_XATTRS));
	CHECK_RC(meta_get(g_m, key, klen, NULL, 0, NULL), 0);
	CHECK_RC(meta_setxattr(g_m, &ROOT, f.ino, "user.last", "v", 1, 0), 0);
	CHECK_RC(meta_get(g_m, key, klen, NULL, 0, NULL), 1);
	CHECK_RC(ul(a.ino, "f"), 0);
	return 0;
}

/* ---- changes ------------------------------------------------------------------------------------ */

#define CHG_N 3000
struct chg {
	uint64_t dir;
	atomic_bool done;
	int err;
	uint8_t seen[CHG_N];
	int dups, bad;
	uint64_t last_ts;
};

static void *chg_creator(void *arg)
{
	struct chg *c = arg;
	char name[32];
	for (int i = 0; i < CHG_N; i++) {
		snprintf(name, sizeof(name), "c%d", i);
		int rc = mk(c->dir, name, 0644, NULL);
		if (rc)
			c->err = rc;
	}
	atomic_store(&c->done, true);
	return NULL;
}

static int chg_fn(void *arg, const char *name, size_t len, uint64_t ino, uint64_t ts)
{
	struct chg *c = arg;
	char tmp[64];
	int k;
	memcpy(tmp, name, MIN(len, sizeof(tmp) - 1));
	tmp[MIN(len, sizeof(tmp) - 1)] = 0;
	if (ts <= c->last_ts)
		c->bad++;
	c->last_ts = ts;
	if (sscanf(tmp, "c%d", &k) != 1 || k < 0 || k >= CHG_N) {
		c->bad++;
		return 0;
	}
	if (c->seen[k]++)
		c->dups++;
	return 0;
}

static int t_changes(void)
{
	struct aq_attr d;
	CHECK_RC(mkd(AQ_ROOT_INO, "chg", &d), 0);
	struct chg *c = calloc(1, sizeof(*c));
	c->dir = d.ino;
	pthread_t th;
	pthread_create(&th, NULL, chg_creator, c);
	uint64_t cursor = 0;
	int total = 0;
	for (;;) {
		bool done = atomic_load(&c->done);
		uint64_t next;
		int n = meta_changes(g_m, &ROOT, d.ino, cursor, 97, chg_fn, c, &next);
		if (n < 0 || next < cursor) {
			snprintf(g_why, sizeof(g_why), "changes: %d next %llu cursor %llu", n,
				 (unsigned long long)next, (unsigned long long)cursor);
			pthread_join(th, NULL);
			free(c);
			return -1;
		}
		total += n;
		cursor = next;
		if (done && n == 0)
			break;
	}
	pthread_join(th, NULL);
	int rc = 0;
	if (c->err || c->dups || c->bad || total != CHG_N) {
		snprintf(g_why, sizeof(g_why), "err=%d dups=%d bad=%d total=%d", c->err, c->dups, c->bad, total);
		rc = -1;
	}
	for (int i = 0; rc == 0 && i < CHG_N; i++)
		if (c->seen[i] != 1) {
			snprintf(g_why, sizeof(g_why), "c%d seen %d times", i, c->seen[i]);
			rc = -1;
		}
	/* An unlinked entry leaves the log; a renamed-in one enters it. */
	if (rc == 0) {
		uint64_t next;
		memset(c, 0, sizeof(*c));
		CHECK_RC(ul(d.ino, "c5"), 0);
		CHECK_RC(ren(d.ino, "c6", d.ino, "c7", 0), 0);
		CHECK_RC(meta_changes(g_m, &ROOT, d.ino, 0, 10000, chg_fn, c, &next), CHG_N - 2);
		CHECK(c->seen[5] == 0 && c->seen[6] == 0 && c->seen[7] == 1);
		CHECK_RC(meta_changes(g_m, &ROOT, d.ino, cursor, 10, chg_fn, c, &next), 1); /* c7 again */
	}
	free(c);
	return rc;
}

/* ---- meta_mknod_many ----------------------------------------------------------------------------- */

/* Newest ts seen by meta_changes. */
static int chg_last_fn(void *arg, const char *name, size_t len, uint64_t ino, uint64_t ts)
{
	uint64_t *last = arg;
	*last = MAX(*last, ts);
	return 0;
}

/* Inode rows in m, counted straight from RocksDB. */
static uint64_t scan_inodes(struct meta_store *m)
{
	uint64_t n = 0;
	const char start = MK_INODE;
	rocksdb_iterator_t *it = rocksdb_create_iterator(m->db, m->ropts);
	for (rocksdb_iter_seek(it, &start, 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t kl;
		const char *k = rocksdb_iter_key(it, &kl);
		if (kl < 1 || k[0] != MK_INODE)
			break;
		n++;
	}
	rocksdb_iter_destroy(it);
	return n;
}

static int many(uint64_t dir, const struct aq_cred *cr, uint32_t n, const char *const *names, uint32_t flags,
		struct aq_attr *outs, int *res)
{
	size_t lens[16];
	for (uint32_t i = 0; i < n; i++)
		lens[i] = strlen(names[i]);
	return meta_mknod_many(g_m, cr, dir, n, names, lens, 0644, 0, flags, outs, res);
}

static int t_many(void)
{
	struct aq_attr d, f, t, outs[16];
	int res[16];
	uint64_t files0, files1;
	char longname[AQ_NAME_MAX + 2];
	memset(longname, 'l', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = 0;
	CHECK_RC(mkd(AQ_ROOT_INO, "many", &d), 0);
	CHECK_RC(mk(d.ino, "pre", 0644, &f), 0);
	CHECK_RC(meta_count_files(g_m, &files0), 0);
	const char *mixed[] = { "a", "b", longname, "a", "x/y", "pre", ".", "c" };
	CHECK_RC(many(d.ino, &ROOT, 8, mixed, AQ_CREATE_EXCL, outs, res), 0);
	int want[] = { 0, 0, -ENAMETOOLONG, -EEXIST, -EINVAL, -EEXIST, -EEXIST, 0 };
	for (int i = 0; i < 8; i++)
		CHECK_RC(res[i], want[i]);
	CHECK(S_ISREG(outs[0].mode) && outs[0].nlink == 1 && outs[0].ino != outs[1].ino);
	CHECK_RC(lk(d.ino, "a", &t), 0);
	CHECK(t.ino == outs[0].ino && t.generation == outs[0].generation);
	CHECK_RC(lk(d.ino, "c", &t), 0);
	CHECK(t.ino == outs[7].ino);
	CHECK_RC(meta_count_files(g_m, &files1), 0);
	CHECK(files1 == files0 + 3);
	/* Without EXCL an existing regular file (stored or made earlier in the batch) is returned. */
	const char *open[] = { "pre", "d", "d", "e" };
	CHECK_RC(many(d.ino, &ROOT, 4, open, 0, outs, res), 0);
	CHECK(res[0] == 0 && res[1] == 0 && res[2] == 0 && res[3] == 0);
	CHECK(outs[0].ino == f.ino && outs[2].ino == outs[1].ino && outs[3].ino != outs[1].ino);
	/* ... but not a directory of that name. */
	struct aq_attr sub;
	CHECK_RC(mkd(d.ino, "sub", &sub), 0);
	const char *subn[] = { "sub" };
	CHECK_RC(many(d.ino, &ROOT, 1, subn, 0, outs, res), 0);
	CHECK_RC(res[0], -EEXIST);
	/* Counts: 6 files and 1 subdirectory, merged from the partial rows. */
	struct meta_partial sum;
	CHECK_RC(meta_dir_totals(g_m, d.ino, &sum), 0);
	CHECK(sum.nentries == 7 && sum.nsubdirs == 1);
	CHECK_RC(meta_getattr(g_m, d.ino, &t), 0);
	CHECK(t.nlink == 3);
	/* Per-entry EACCES without W, but an existing file still opens. */
	struct aq_cred u = { .uid = 4000, .gid = 4000 };
	const char *perm[] = { "pre", "new1" };
	CHECK_RC(many(d.ino, &u, 2, perm, 0, outs, res), 0);
	CHECK(res[0] == 0 && outs[0].ino == f.ino);
	CHECK_RC(res[1], -EACCES);
	/* Whole-batch failures. */
	CHECK_RC(many(f.ino, &ROOT, 2, perm, 0, outs, res), -ENOTDIR);
	CHECK(res[0] == -ENOTDIR && res[1] == -ENOTDIR);
	CHECK_RC(many(aq_ino_make(3, 999999), &ROOT, 2, perm, 0, outs, res), -ENOENT);
	CHECK_RC(many(d.ino, &ROOT, 0, perm, 0, outs, res), -EINVAL);
	/* The changelog lists each created entry once. */
	uint64_t next, last = 0;
	CHECK_RC(meta_changes(g_m, &ROOT, d.ino, 0, 100, chg_last_fn, &last, &next), 7);
	/* A full batch spread over every bucket. */
	enum { N = 1024 };
	char (*names)[16] = malloc(N * sizeof(*names));
	const char **np = malloc(N * sizeof(*np));
	size_t *lens = malloc(N * sizeof(*lens));
	struct aq_attr *bo = malloc(N * sizeof(*bo));
	int *br = malloc(N * sizeof(*br));
	for (int i = 0; i < N; i++) {
		lens[i] = (size_t)snprintf(names[i], sizeof(names[i]), "big%d", i);
		np[i] = names[i];
	}
	int rc = meta_mknod_many(g_m, &ROOT, d.ino, N, np, lens, 0644, 0, AQ_CREATE_EXCL, bo, br);
	int bad = 0;
	for (int i = 0; i < N; i++)
		bad += br[i] != 0;
	int rc2 = meta_mknod_many(g_m, &ROOT, d.ino, N + 1, np, lens, 0644, 0, AQ_CREATE_EXCL, bo, br);
	free(names), free(np), free(lens), free(bo), free(br);
	CHECK_RC(rc, 0);
	CHECK(bad == 0);
	CHECK_RC(rc2, -EINVAL);
	CHECK_RC(meta_dir_totals(g_m, d.ino, &sum), 0);
	CHECK(sum.nentries == 7 + N);
	uint64_t nd, np2;
	count_rows(d.ino, &nd, &np2);
	CHECK(nd == 7 + N && np2 == g_m->nbuckets);
	CHECK_RC(meta_count_files(g_m, &files1), 0);
	CHECK(files1 == scan_inodes(g_m));
	return 0;
}

static void *many_racer(void *arg)
{
	struct racer *r = arg;
	char names[8][32];
	const char *np[8];
	size_t lens[8];
	int res[8];
	for (int j = 0; j < 8; j++) {
		lens[j] = (size_t)snprintf(names[j], sizeof(names[j]), "m%d_%d", r->id, j);
		np[j] = names[j];
	}
	pthread_barrier_wait(r->bar);
	/* Bounded: with several racers each holding up to 8 names, rmdir could starve. */
	for (int i = 0; i < 100; i++) {
		int rc = meta_mknod_many(g_m, &ROOT, r->dir, 8, np, lens, 0644, 0, AQ_CREATE_EXCL, NULL, res);
		if (rc == -ENOENT)
			break; /* the directory is gone */
		for (int j = 0; j < 8 && rc == 0; j++)
			rc = res[j] ? res[j] : ul(r->dir, names[j]);
		if (rc) {
			r->err = rc;
			break;
		}
	}
	return NULL;
}

/* Batches racing rmdir of their directory: never an entry (or a partial row) left behind. */
static int t_many_rmdir_race(void)
{
	struct aq_attr base, d, t;
	CHECK_RC(mkd(AQ_ROOT_INO, "mrace", &base), 0);
	enum { THREADS = 3, ITERS = 12 };
	for (int it = 0; it < ITERS; it++) {
		CHECK_RC(mkd(base.ino, "d", &d), 0);
		pthread_barrier_t bar;
		pthread_barrier_init(&bar, NULL, THREADS + 1);
		struct racer rs[THREADS];
		pthread_t th[THREADS];
		for (int i = 0; i < THREADS; i++) {
			rs[i] = (struct racer){ .dir = d.ino, .id = i, .bar = &bar };
			pthread_create(&th[i], NULL, many_racer, &rs[i]);
		}
		pthread_barrier_wait(&bar);
		int rc;
		/* A pause between tries: a spinning rmdir takes every bucket lock and starves
		 * the racers on a small machine (the test then took minutes). */
		while ((rc = rmd(base.ino, "d")) == -ENOTEMPTY)
			usleep(200);
		for (int i = 0; i < THREADS; i++)
			pthread_join(th[i], NULL);
		pthread_barrier_destroy(&bar);
		CHECK_RC(rc, 0);
		for (int i = 0; i < THREADS; i++)
			CHECK_RC(rs[i].err, 0);
		uint64_t nd, np;
		count_rows(d.ino, &nd, &np);
		CHECK(nd == 0 && np == 0);
		CHECK_RC(meta_getattr(g_m, d.ino, &t), -ENOENT);
	}
	uint64_t files;
	CHECK_RC(meta_count_files(g_m, &files), 0);
	CHECK(files == scan_inodes(g_m));
	return 0;
}

/* ---- startup after a crash ------------------------------------------------------------------------ */

struct crash_report {
	uint64_t files;   /* the child's count when it died */
	uint64_t last_ts; /* the newest changelog ts it handed out */
	uint64_t dir;
	int created, orphans, err;
};

/* Makes names nf0..nf(to-1) from `from` in dir of m, 64 at a time, exclusive. */
static int nf_make(struct meta_store *m, uint64_t dir, int from, int to)
{
	char names[64][16];
	const char *np[64];
	size_t lens[64];
	int res[64];
	for (int i = from; i < to; i += 64) {
		int n = MIN(64, to - i);
		for (int j = 0; j < n; j++) {
			lens[j] = (size_t)snprintf(names[j], sizeof(names[j]), "nf%d", i + j);
			np[j] = names[j];
		}
		CHECK_RC(meta_mknod_many(m, &ROOT, dir, (uint32_t)n, np, lens, 0644, 0, AQ_CREATE_EXCL, NULL, res), 0);
		for (int j = 0; j < n; j++)
			CHECK_RC(res[j], 0);
	}
	return 0;
}

/* Every name nf0..nf(to-1), and each of `more`, is taken: alone and in a batch. */
static int nf_all_taken(struct meta_store *m, uint64_t dir, int to, const char *const *more, int nmore)
{
	struct aq_attr t;
	char name[16];
	for (int i = 0; i < to; i++) {
		snprintf(name, sizeof(name), "nf%d", i);
		CHECK_RC(meta_mknod(m, &ROOT, dir, name, strlen(name), 0644, 0, AQ_CREATE_EXCL, &t), -EEXIST);
	}
	size_t lens[8];
	int res[8];
	AQ_ASSERT(nmore <= 8);
	for (int i = 0; i < nmore; i++) {
		lens[i] = strlen(more[i]);
		CHECK_RC(meta_mknod(m, &ROOT, dir, more[i], lens[i], 0644, 0, AQ_CREATE_EXCL, &t), -EEXIST);
	}
	CHECK_RC(meta_mknod_many(m, &ROOT, dir, (uint32_t)nmore, more, lens, 0644, 0, AQ_CREATE_EXCL, NULL, res), 0);
	for (int i = 0; i < nmore; i++)
		CHECK_RC(res[i], -EEXIST);
	return 0;
}

/* Share of never-made names the filter of (bucket 0, dir) rules out, in percent. */
static int nf_free_pct(struct meta_store *m, uint64_t dir)
{
	int free_n = 0;
	pthread_mutex_lock(&m->locks[0]);
	for (int i = 0; i < 1000; i++) {
		char name[16];
		uint8_t key[META_DENTRY_KEY_MAX];
		int len = snprintf(name, sizeof(name), "never%d", i);
		size_t klen = meta_key_dentry(key, 0, dir, meta_dentry_pos(dir, name, (size_t)len), name, (size_t)len);
		free_n += meta_nfilter_free(m, 0, dir, key, klen);
	}
	pthread_mutex_unlock(&m->locks[0]);
	return free_n / 10;
}

/* Threads racing to make the same names (each takes them in its own order, in batches): a
 * name's create succeeds in exactly one. */
struct nf_race {
	struct meta_store *m;
	uint64_t dir;
	int seed, made;
};

#define NF_RACE_NAMES 3000

static void *nf_race_main(void *arg)
{
	struct nf_race *r = arg;
	char names[16][16];
	const char *np[16];
	size_t lens[16];
	int res[16];
	for (int i = 0; i < NF_RACE_NAMES; i += 16) {
		for (int j = 0; j < 16; j++) {
			int k = (int)(((uint64_t)(i + j) * 7919u + (uint64_t)r->seed * 1013u) % NF_RACE_NAMES);
			lens[j] = (size_t)snprintf(names[j], sizeof(names[j]), "race%d", k);
			np[j] = names[j];
		}
		if (meta_mknod_many(r->m, &ROOT, r->dir, 16, np, lens, 0644, 0, AQ_CREATE_EXCL, NULL, res))
			return NULL;
		for (int j = 0; j < 16; j++)
			r->made += res[j] == 0;
	}
	return NULL;
}

/* Name filters (namefilter.c): a create never takes a name the store holds, whether the
 * name came before the filter (its scan), after it (create, rename in, link), past a
 * rebuild, or after a reopen; names unlinked may be made again; a filter over budget is
 * not made and creates still see every name. One bucket, so one pair holds them all. */
static int t_name_filters(void)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/namefilter", g_dir);
	struct meta_options o = { .nbuckets = 1, .chunk_size = 1 << 20 };
	struct meta_store *m;
	struct aq_attr d, other, moved, linked, t;
	CHECK_RC(meta_open(path, true, &o, &m), 0);
	CHECK_RC(meta_mkdir(m, &ROOT, AQ_ROOT_INO, "nf", 2, 0755, &d), 0);
	CHECK_RC(meta_mkdir(m, &ROOT, AQ_ROOT_INO, "other", 5, 0755, &other), 0);
	CHECK_RC(meta_mknod(m, &ROOT, other.ino, "moved", 5, 0644, 0, AQ_CREATE_EXCL, &moved), 0);
	CHECK_RC(meta_mknod(m, &ROOT, other.ino, "linked", 6, 0644, 0, AQ_CREATE_EXCL, &linked), 0);
	int n = META_NFILTER_MIN + 64;
	CHECK_RC(nf_make(m, d.ino, 0, n), 0);
	CHECK(meta_nfilter_names(m, 0, d.ino) == n); /* built from a scan, then one batch */
	CHECK(meta_nfilter_names(m, 0, other.ino) == -1); /* two names: none */
	CHECK(nf_free_pct(m, d.ino) >= 95);
	CHECK_RC(meta_rename(m, &ROOT, other.ino, "moved", 5, d.ino, "moved_in", 8, 0), 0);
	CHECK_RC(meta_link(m, &ROOT, linked.ino, d.ino, "linked_in", 9, &t), 0);
	const char *more[] = { "moved_in", "linked_in" };
	CHECK_RC(nf_all_taken(m, d.ino, n, more, 2), 0);
	/* Names unlinked stay in the filter, and can be made again, and are then taken. */
	CHECK_RC(meta_unlink(m, &ROOT, d.ino, "nf7", 3), 0);
	CHECK_RC(meta_unlink(m, &ROOT, d.ino, "moved_in", 8), 0);
	CHECK(meta_nfilter_names(m, 0, d.ino) == n + 2);
	CHECK_RC(meta_mknod(m, &ROOT, d.ino, "nf7", 3, 0644, 0, AQ_CREATE_EXCL, &t), 0);
	CHECK_RC(meta_mknod(m, &ROOT, d.ino, "moved_in", 8, 0644, 0, AQ_CREATE_EXCL, &t), 0);
	CHECK_RC(nf_all_taken(m, d.ino, n, more, 2), 0);
	/* Past its capacity a create rebuilds it, larger, from a new scan: its count is then
	 * the names the store holds (n2 + 2), not every name ever added (n2 + 4). */
	int n2 = n + 8192;
	CHECK_RC(nf_make(m, d.ino, n, n2), 0);
	CHECK(meta_nfilter_names(m, 0, d.ino) == n2 + 2);
	CHECK_RC(nf_all_taken(m, d.ino, n2, more, 2), 0);
	/* Creates racing in a directory with a filter: every name made once. */
	struct nf_race race[4];
	pthread_t th[4];
	for (int i = 0; i < 4; i++) {
		race[i] = (struct nf_race){ .m = m, .dir = d.ino, .seed = i };
		pthread_create(&th[i], NULL, nf_race_main, &race[i]);
	}
	int made = 0;
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		made += race[i].made;
	}
	CHECK(made == NF_RACE_NAMES);
	/* rmdir lets the directory's filter go. */
	struct aq_attr gone;
	CHECK_RC(meta_mkdir(m, &ROOT, AQ_ROOT_INO, "gone", 4, 0755, &gone), 0);
	CHECK_RC(nf_make(m, gone.ino, 0, n), 0);
	CHECK(meta_nfilter_names(m, 0, gone.ino) == n);
	for (int i = 0; i < n; i++) {
		char name[16];
		snprintf(name, sizeof(name), "nf%d", i);
		CHECK_RC(meta_unlink(m, &ROOT, gone.ino, name, strlen(name)), 0);
	}
	CHECK_RC(meta_rmdir(m, &ROOT, AQ_ROOT_INO, "gone", 4), 0);
	CHECK(meta_nfilter_names(m, 0, gone.ino) == -1);
	meta_close(m);
	/* A reopened store has no filters until creates build them again. */
	CHECK_RC(meta_open(path, false, &o, &m), 0);
	CHECK(meta_nfilter_names(m, 0, d.ino) == -1);
	CHECK_RC(nf_make(m, d.ino, n2, n2 + 64), 0);
	CHECK_RC(nf_make(m, d.ino, n2 + 64, n2 + 128), 0);
	CHECK(meta_nfilter_names(m, 0, d.ino) >= n2);
	CHECK_RC(nf_all_taken(m, d.ino, n2 + 128, more, 2), 0);
	/* Without the memory for one, no filter, and RocksDB answers. */
	meta_close(m);
	CHECK_RC(meta_open(path, false, &o, &m), 0);
	m->nfilter_budget = 4096;
	CHECK_RC(nf_make(m, d.ino, n2 + 128, n2 + 256), 0);
	CHECK(meta_nfilter_names(m, 0, d.ino) == -1);
	CHECK(m->nfilter_scans == 0); /* the budget said no before any scan */
	CHECK_RC(nf_all_taken(m, d.ino, n2 + 256, more, 2), 0);
	meta_close(m);
	return 0;
}

/* The child: fills a 2-bucket store (so counts move their marks), deletes inodes below
 * and above the marks, pushes the clock far ahead, then dies without meta_close. */
static void crash_child(const char *path, int fd)
{
	struct crash_report r = { 0 };
	struct meta_options o = { .nbuckets = 2, .chunk_size = 1 << 20, .sync = false };
	struct meta_store *m;
	struct aq_attr d, t;
	char names[64][32];
	const char *np[64];
	size_t lens[64];
	int res[64];
	r.err = meta_open(path, false, &o, &m);
	if (r.err == 0)
		r.err = meta_mkdir(m, &ROOT, AQ_ROOT_INO, "crash", 5, 0755, &d);
	for (int i = 0; r.err == 0 && i < 1600; i++) {
		snprintf(names[0], sizeof(names[0]), "s%d", i);
		r.err = meta_mknod(m, &ROOT, d.ino, names[0], strlen(names[0]), 0644, 0, AQ_CREATE_EXCL, &t);
		r.created++;
	}
	/* The clock far ahead of real time: only the 'T' row can carry it over the crash. */
	atomic_fetch_add(&m->log_clock, 1000000000000000ull);
	for (int b = 0; r.err == 0 && b < 30; b++) {
		for (int j = 0; j < 64; j++) {
			lens[j] = (size_t)snprintf(names[j], sizeof(names[j]), "b%d_%d", b, j);
			np[j] = names[j];
		}
		r.err = meta_mknod_many(m, &ROOT, d.ino, 64, np, lens, 0644, 0, AQ_CREATE_EXCL, NULL, res);
		for (int j = 0; j < 64 && r.err == 0; j++)
			r.err = res[j];
		r.created += 64;
	}
	/* Delete old (below the marks) and new inodes: unlink, then the collector's step. */
	for (int i = 0; r.err == 0 && i < 3200; i += 7) {
		const char *name = names[0];
		if (i < 1600)
			snprintf(names[0], sizeof(names[0]), "s%d", i);
		else
			snprintf(names[0], sizeof(names[0]), "b%d_%d", (i - 1600) / 64, (i - 1600) % 64);
		r.err = meta_lookup(m, &ROOT, d.ino, name, strlen(name), &t);
		if (r.err == 0)
			r.err = meta_unlink(m, &ROOT, d.ino, name, strlen(name));
		if (r.err == 0 && i % 2)
			r.err = meta_orphan_done(m, t.ino);
		else
			r.orphans++; /* unlinked, its inode row waits for the collector */
		r.created--;
	}
	meta_count_files(m, &r.files);
	r.dir = d.ino;
	r.last_ts = 0;
	uint64_t next;
	meta_changes(m, &ROOT, d.ino, 0, 100000, chg_last_fn, &r.last_ts, &next);
	if (write(fd, &r, sizeof(r)) != sizeof(r))
		_exit(2);
	_exit(0); /* no meta_close: as kill -9 */
}

static int t_crash_reopen(void)
{
	char path[400];
	snprintf(path, sizeof(path), "%s/crash", g_dir);
	struct meta_options o = { .nbuckets = 2, .chunk_size = 1 << 20, .sync = false };
	struct meta_store *m;
	CHECK_RC(meta_open(path, true, &o, &m), 0);
	meta_close(m);
	int fds[2];
	CHECK(pipe(fds) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(fds[0]);
		crash_child(path, fds[1]);
	}
	close(fds[1]);
	struct crash_report r;
	ssize_t got = read(fds[0], &r, sizeof(r));
	int status;
	waitpid(pid, &status, 0);
	close(fds[0]);
	CHECK(got == sizeof(r) && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK_RC(r.err, 0);
	for (int round = 0; round < 2; round++) {
		uint64_t files, next, last = 0;
		struct aq_attr t;
		CHECK_RC(meta_open(path, false, &o, &m), 0);
		CHECK_RC(meta_count_files(m, &files), 0);
		CHECK(files == r.files && files == scan_inodes(m));
		CHECK(files == 2 + (uint64_t)(r.created + r.orphans)); /* + root and the directory */
		CHECK(atomic_load(&m->log_clock) > r.last_ts);
		CHECK_RC(meta_changes(m, &ROOT, r.dir, 0, 100000, chg_last_fn, &last, &next), r.created);
		CHECK(last == r.last_ts);
		/* A create after the reopen sorts after everything before the crash. */
		char name[32];
		snprintf(name, sizeof(name), "after%d", round);
		CHECK_RC(meta_mknod(m, &ROOT, r.dir, name, strlen(name), 0644, 0, AQ_CREATE_EXCL, &t), 0);
		CHECK_RC(meta_changes(m, &ROOT, r.dir, r.last_ts, 10, chg_last_fn, &last, &next), 1);
		CHECK_RC(meta_unlink(m, &ROOT, r.dir, name, strlen(name)), 0);
		CHECK_RC(meta_orphan_done(m, t.ino), 0);
		meta_close(m); /* round 1 opens after a clean close */
	}
	return 0;
}

/* Whether one of this process's RocksDB compaction threads runs at nice 19. */
static bool compaction_thread_niced(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	bool niced = false;
	while (d && (de = readdir(d)) && !niced) {
		char p[300], comm[32] = "";
		snprintf(p, sizeof(p), "/proc/self/task/%s/comm", de->d_name);
		FILE *f = fopen(p, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && !strncmp(comm, "rocksdb:low", 11)) {
			errno = 0;
			niced = getpriority(PRIO_PROCESS, (id_t)atoi(de->d_name)) == 19 && !errno;
		}
		fclose(f);
	}
	if (d)
		closedir(d);
	return niced;
}

/* A store made with leveled compaction (every store before universal compaction became
 * the default), its files spread over levels below 0, opens with the defaults and reads
 * back; the defaults really are universal (an options string RocksDB refused would leave
 * them all unset, with a warning only). */
static int t_leveled_store_opens(void)
{
	char path[400], name[32];
	snprintf(path, sizeof(path), "%s/leveled", g_dir);
	struct meta_options o = { .nbuckets = 4, .chunk_size = 1 << 20 };
	struct meta_store *m;
	setenv("AQ_META_ROCKSDB_OPTIONS",
	       "compaction_style=kCompactionStyleLevel;write_buffer_size=65536;target_file_size_base=65536;"
	       "max_bytes_for_level_base=262144",
	       1);
	int rc = meta_open(path, true, &o, &m);
	unsetenv("AQ_META_ROCKSDB_OPTIONS");
	CHECK_RC(rc, 0);
	CHECK(rocksdb_options_get_compaction_style(m->dbopts) == rocksdb_level_compaction);
	struct aq_attr t;
	for (int i = 0; i < 3000; i++) {
		snprintf(name, sizeof(name), "lv%d", i);
		CHECK_RC(meta_mknod(m, &ROOT, AQ_ROOT, name, strlen(name), 0644, 0, AQ_CREATE_EXCL, &t), 0);
	}
	rocksdb_compact_range(m->db, NULL, 0, NULL, 0);
	CHECK(compaction_thread_niced()); /* compactions yield to aqd's loop */
	long below = 0;
	for (int level = 1; level < 7; level++) {
		char prop[64];
		snprintf(prop, sizeof(prop), "rocksdb.num-files-at-level%d", level);
		char *v = rocksdb_property_value(m->db, prop);
		below += v ? atol(v) : 0;
		rocksdb_free(v);
	}
	CHECK(below > 0);
	meta_close(m);
	CHECK_RC(meta_open(path, false, &o, &m), 0);
	CHECK(rocksdb_options_get_compaction_style(m->dbopts) == rocksdb_universal_compaction);
	uint64_t files;
	CHECK_RC(meta_count_files(m, &files), 0);
	CHECK(files == 3001);
	for (int i = 0; i < 3000; i += 997) {
		snprintf(name, sizeof(name), "lv%d", i);
		CHECK_RC(meta_lookup(m, &ROOT, AQ_ROOT, name, strlen(name), &t), 0);
	}
	CHECK_RC(meta_mknod(m, &ROOT, AQ_ROOT, "after", 5, 0644, 0, AQ_CREATE_EXCL, &t), 0);
	meta_close(m);
	return 0;
}

/* ---- records of changes (txn.c) ---------------------------------------------------------------- */

/* Whether (client, seq) is recorded; the inode it made in *ino. */
static int recorded(uint64_t client, uint64_t seq, uint64_t *ino)
{
	struct meta_txn tx = { client, seq };
	*ino = 0;
	return meta_txn_find(g_m, &tx, ino);
}

static int t_txn(void)
{
	struct aq_attr d, a, outs[3];
	uint64_t ino;
	CHECK(meta_mkdir(g_m, &ROOT, AQ_ROOT_INO, "txn", 3, 0755, &d) == 0);
	/* a create records itself with the inode it made; a failed one records nothing */
	struct meta_txn one = { 0xC1, 1 };
	meta_txn_begin(&one, 1);
	CHECK(meta_mknod(g_m, &ROOT, d.ino, "f", 1, S_IFREG | 0644, 0, AQ_CREATE_EXCL, &a) == 0);
	meta_txn_end();
	CHECK(recorded(0xC1, 1, &ino) == 1 && ino == a.ino);
	struct meta_txn two = { 0xC1, 2 };
	meta_txn_begin(&two, 1);
	CHECK(meta_mknod(g_m, &ROOT, d.ino, "f", 1, S_IFREG | 0644, 0, AQ_CREATE_EXCL, &a) == -EEXIST);
	meta_txn_end();
	CHECK(recorded(0xC1, 2, &ino) == 0);
	CHECK(recorded(0xC2, 1, &ino) == 0); /* another client's */
	/* without a current request nothing is recorded */
	CHECK(meta_mknod(g_m, &ROOT, d.ino, "g", 1, S_IFREG | 0644, 0, AQ_CREATE_EXCL, &a) == 0);
	CHECK(recorded(0xC1, 3, &ino) == 0);
	/* a rename and an unlink record inode 0; the slot of seq 1 + 256 replaces seq 1's */
	struct meta_txn ren = { 0xC1, 1 + META_TXN_SLOTS };
	meta_txn_begin(&ren, 1);
	CHECK(meta_rename(g_m, &ROOT, d.ino, "g", 1, d.ino, "h", 1, 0) == 0);
	meta_txn_end();
	CHECK(recorded(0xC1, ren.seq, &ino) == 1 && ino == 0);
	CHECK(recorded(0xC1, 1, &ino) == 0);
	/* meta_mknod_many: each name's own request, only for the names it made */
	struct meta_txn many[3] = { { 0xC3, 10 }, { 0xC3, 11 }, { 0xC3, 12 } };
	const char *names[3] = { "m0", "f", "m2" };
	size_t lens[3] = { 2, 1, 2 };
	int res[3];
	meta_txn_begin(many, 3);
	CHECK(meta_mknod_many(g_m, &ROOT, d.ino, 3, names, lens, S_IFREG | 0644, 0, AQ_CREATE_EXCL, outs, res) == 0);
	meta_txn_end();
	CHECK(res[0] == 0 && res[1] == -EEXIST && res[2] == 0);
	CHECK(recorded(0xC3, 10, &ino) == 1 && ino == outs[0].ino);
	CHECK(recorded(0xC3, 11, &ino) == 0);
	CHECK(recorded(0xC3, 12, &ino) == 1 && ino == outs[2].ino);
	/* the sweep drops what is older than its cutoff, and nothing younger */
	CHECK(meta_txn_sweep(g_m, aq_now_ns() - 60ll * 1000000000ll) == 0);
	CHECK(recorded(0xC3, 12, &ino) == 1);
	CHECK(meta_txn_sweep(g_m, aq_now_ns() + 1) == 3); /* seq 1 + 256 took seq 1's row */
	CHECK(recorded(0xC3, 12, &ino) == 0 && recorded(0xC1, ren.seq, &ino) == 0);
	return 0;
}

/* ---- reopen ------------------------------------------------------------------------------------ */

static int t_reopen(void)
{
	struct aq_attr before, after, t;
	uint64_t files0, files1;
	struct meta_options o = opts();
	CHECK_RC(lk(AQ_ROOT_INO, "hello", &before), 0);
	CHECK_RC(meta_count_files(g_m, &files0), 0);
	/* The newest inode number per bucket before the close. */
	uint64_t *maxseq = calloc(g_m->nbuckets, sizeof(uint64_t));
	for (uint32_t b = 0; b < g_m->nbuckets; b++)
		maxseq[b] = g_m->seq_next[b];
	meta_close(g_m);
	g_m = NULL;
	o.nbuckets = 16; /* ignored: the store keeps its own */
	CHECK_RC(meta_open(g_dir, false, &o, &g_m), 0);
	CHECK(meta_nbuckets(g_m) == 64);
	CHECK_RC(lk(AQ_ROOT_INO, "hello", &after), 0);
	CHECK(after.ino == before.ino && after.mode == before.mode && after.generation == before.generation);
	CHECK_RC(meta_count_files(g_m, &files1), 0);
	CHECK(files1 == files0);
	CHECK_RC(meta_getattr(g_m, g_big, &t), 0);
	CHECK(t.nlink == 2 + BIG_DIRS);
	CHECK_RC(meta_lookup(g_m, &ROOT, g_big, "f19999", 6, &t), 0);
	struct aq_attr xa;
	CHECK_RC(lk(AQ_ROOT_INO, "xa", &xa), 0);
	CHECK_RC(meta_getxattr(g_m, &ROOT, xa.ino, "user.b", NULL, 0), 0);
	struct aq_attr d;
	CHECK_RC(mkd(AQ_ROOT_INO, "afterreopen", &d), 0);
	char name[32];
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "n%d", i);
		CHECK_RC(mk(d.ino, name, 0644, &t), 0);
		uint32_t b = aq_ino_bucket(t.ino);
		CHECK((t.ino & AQ_INO_SEQ_MASK) >= maxseq[b]);
	}
	free(maxseq);
	/* open(create=false) of a missing store fails */
	struct meta_store *none = NULL;
	char missing[300];
	snprintf(missing, sizeof(missing), "%s/missing", g_dir);
	CHECK(meta_open(missing, false, &o, &none) < 0 && none == NULL);

	/* A store of an older format version (1: before xattr summary rows; 2: before
	 * inode rows of version 3) is upgraded when opened;
	 * one of a version this aqd does not know is refused, not read. */
	uint8_t mkey = MK_SUPER, sb[8];
	size_t sblen = 0;
	char *err = NULL;
	for (int v = 1; v <= META_FORMAT_VERSION + 1; v++) {
		CHECK_RC(meta_get(g_m, &mkey, 1, sb, sizeof sb, &sblen), 1);
		CHECK(sblen == sizeof sb && sb[0] == META_FORMAT_VERSION);
		sb[0] = (uint8_t)v;
		rocksdb_put(g_m->db, g_m->wopts, (const char *)&mkey, 1, (const char *)sb, sizeof sb, &err);
		CHECK(err == NULL);
		meta_close(g_m);
		g_m = NULL;
		if (v > META_FORMAT_VERSION) {
			CHECK_RC(meta_open(g_dir, false, &o, &none), -EIO);
			/* put it back as it was, through RocksDB itself */
			rocksdb_options_t *ro = rocksdb_options_create();
			rocksdb_t *db = rocksdb_open(ro, g_dir, &err);
			CHECK(err == NULL);
			sb[0] = META_FORMAT_VERSION;
			rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
			rocksdb_put(db, wo, (const char *)&mkey, 1, (const char *)sb, sizeof sb, &err);
			CHECK(err == NULL);
			rocksdb_writeoptions_destroy(wo);
			rocksdb_close(db);
			rocksdb_options_destroy(ro);
		}
		CHECK_RC(meta_open(g_dir, false, &o, &g_m), 0);
		CHECK_RC(meta_get(g_m, &mkey, 1, sb, sizeof sb, &sblen), 1);
		CHECK(sb[0] == META_FORMAT_VERSION);
		CHECK_RC(meta_getxattr(g_m, &ROOT, xa.ino, "user.b", NULL, 0), 0);
	}
	return 0;
}

/* ---- benchmark (AQ_META_BENCH=1, or =N for N creates per run) ---------------------------------- */

struct bench_arg {
	struct meta_store *m;
	uint64_t dir;
	int id, count, batch;
	int err;
};

static void *bench_main(void *arg)
{
	struct bench_arg *a = arg;
	enum { MAXB = 64 };
	char names[MAXB][32];
	const char *np[MAXB];
	size_t lens[MAXB];
	struct aq_attr outs[MAXB];
	int res[MAXB];
	for (int i = 0; i < a->count && !a->err;) {
		int k = MIN(MAX(a->batch, 1), a->count - i);
		for (int j = 0; j < k; j++) {
			lens[j] = (size_t)snprintf(names[j], sizeof(names[j]), "t%d_%d", a->id, i + j);
			np[j] = names[j];
		}
		if (a->batch == 0) {
			a->err = meta_mknod(a->m, &ROOT, a->dir, np[0], lens[0], 0644, 0, AQ_CREATE_EXCL, &outs[0]);
		} else {
			a->err = meta_mknod_many(a->m, &ROOT, a->dir, (uint32_t)k, np, lens, 0644, 0, AQ_CREATE_EXCL,
						 outs, res);
			for (int j = 0; j < k && !a->err; j++)
				a->err = res[j];
		}
		i += k;
	}
	return NULL;
}

/* Creates total entries in one fresh directory from 2 threads; returns creates/s or -1. */
/* The directory-sum cache (getattr of a directory) stays equal to the rows in the store
 * while creates, mkdirs, unlinks and rmdirs race getattrs of the same directory. */
struct dirsum_arg {
	uint64_t dir;
	int id;
	volatile bool *stop;
};

static void *dirsum_writer(void *p)
{
	struct dirsum_arg *a = p;
	char name[64];
	for (int i = 0; i < 1500; i++) {
		snprintf(name, sizeof(name), "w%d_%d", a->id, i);
		struct aq_attr o;
		if (i % 3 == 0)
			meta_mkdir(g_m, &ROOT, a->dir, name, strlen(name), 0755, &o);
		else
			meta_mknod(g_m, &ROOT, a->dir, name, strlen(name), S_IFREG | 0644, 0, 0, &o);
		if (i % 5 == 4) {
			snprintf(name, sizeof(name), "w%d_%d", a->id, i - 1);
			if ((i - 1) % 3 == 0)
				meta_rmdir(g_m, &ROOT, a->dir, name, strlen(name));
			else
				meta_unlink(g_m, &ROOT, a->dir, name, strlen(name));
		}
	}
	return NULL;
}

static void *dirsum_reader(void *p)
{
	struct dirsum_arg *a = p;
	while (!*a->stop) {
		struct aq_attr o;
		meta_getattr(g_m, a->dir, &o);
	}
	return NULL;
}

/* meta_attrs_of (readdirplus pages) gives what meta_attr_of gives, for inodes of many
 * buckets in any order, with repeats, a directory (merged link count) and missing ones. */
static int t_attrs_of(void)
{
	struct aq_attr d, sub, a;
	CHECK_RC(mkd(AQ_ROOT_INO, "attrs", &d), 0);
	enum { N = 600 };
	uint64_t inos[N + 4];
	for (int i = 0; i < N; i++) {
		char name[32];
		snprintf(name, sizeof name, "f%d", i);
		CHECK_RC(mk(d.ino, name, 0600 | S_IFREG, &a), 0);
		inos[N - 1 - i] = a.ino;
	}
	CHECK_RC(mkd(d.ino, "sub", &sub), 0);
	CHECK_RC(mkd(sub.ino, "subsub", &a), 0);
	CHECK_RC(ul(d.ino, "f7"), 0);
	inos[N] = sub.ino;
	inos[N + 1] = inos[3]; /* a repeat */
	inos[N + 2] = inos[N - 1 - 7] | 0x7777; /* never made */
	inos[N + 3] = 0;
	struct aq_attr out[N + 4];
	int rcs[N + 4];
	CHECK_RC(meta_attrs_of(g_m, inos, N + 4, out, rcs), 0);
	for (int i = 0; i < N + 4; i++) {
		struct aq_attr one;
		int rc = meta_attr_of(g_m, inos[i], &one);
		if (rc == -EINVAL)
			rc = -ENOENT;
		CHECKF(rcs[i] == rc, "entry %d: %d against %d", i, rcs[i], rc);
		CHECKF(rc || memcmp(&one, &out[i], sizeof one) == 0, "entry %d: other attributes", i);
	}
	CHECKF(rcs[N - 1 - 7] == -ENOENT || out[N - 1 - 7].nlink == 0, "unlinked: %d", rcs[N - 1 - 7]);
	CHECKF(rcs[N + 2] == -ENOENT, "never made: %d", rcs[N + 2]);
	CHECKF(rcs[N + 3] == -ENOENT, "zero: %d", rcs[N + 3]);
	CHECK(out[N].nlink == 3 && S_ISDIR(out[N].mode));
	return 0;
}

/* Regression: readdirplus read a page's inodes by stepping an iterator from one row to the
 * next, and each step walked over every deleted row in between. After creates and unlinks
 * of other files whose inodes sat between the page's, listing a 27-entry directory took
 * 25 ms. Counted in RocksDB's own perf context, not timed. */
static int t_attrs_after_churn(void)
{
	struct aq_attr keep, churn, a;
	CHECK_RC(mkd(AQ_ROOT_INO, "churned_keep", &keep), 0);
	CHECK_RC(mkd(AQ_ROOT_INO, "churned_gone", &churn), 0);
	enum { KEEP = 27, BETWEEN = 400 };
	uint64_t inos[KEEP];
	char name[32];
	for (int i = 0; i < KEEP; i++) {
		snprintf(name, sizeof name, "k%d", i);
		CHECK_RC(mk(keep.ino, name, 0600 | S_IFREG, &a), 0);
		inos[i] = a.ino;
		for (int j = 0; j < BETWEEN; j++) {
			snprintf(name, sizeof name, "c%d.%d", i, j);
			CHECK_RC(mk(churn.ino, name, 0600 | S_IFREG, NULL), 0);
		}
	}
	for (int i = 0; i < KEEP; i++)
		for (int j = 0; j < BETWEEN; j++) {
			snprintf(name, sizeof name, "c%d.%d", i, j);
			CHECK_RC(ul(churn.ino, name), 0);
		}
	struct aq_attr out[KEEP];
	int rcs[KEEP];
	rocksdb_set_perf_level(rocksdb_enable_count);
	rocksdb_perfcontext_t *pc = rocksdb_perfcontext_create();
	rocksdb_perfcontext_reset(pc);
	int rc = meta_attrs_of(g_m, inos, KEEP, out, rcs);
	uint64_t skipped = rocksdb_perfcontext_metric(pc, rocksdb_internal_key_skipped_count) +
			   rocksdb_perfcontext_metric(pc, rocksdb_internal_delete_skipped_count);
	rocksdb_perfcontext_destroy(pc);
	rocksdb_set_perf_level(rocksdb_disable);
	CHECK_RC(rc, 0);
	for (int i = 0; i < KEEP; i++)
		CHECKF(rcs[i] == 0 && out[i].ino == inos[i], "k%d: %d", i, rcs[i]);
	/* Stepping walked over thousands; point reads over none of the churn's rows. */
	CHECKF(skipped < KEEP, "%llu hidden rows walked over to read %d inodes", (unsigned long long)skipped, KEEP);
	return 0;
}

/* Regression: a directory's mtime is the newest of its row's and its partial rows', so
 * a utimes that set it back (rsync -a, tar and cp -a do, after filling the directory)
 * was hidden by the entries made before it. */
static int t_dir_mtime_set(void)
{
	struct aq_attr d, a, in = { 0 };
	CHECK_RC(mkd(AQ_ROOT_INO, "dated", &d), 0);
	char name[32];
	for (int i = 0; i < 40; i++) {
		snprintf(name, sizeof name, "f%d", i);
		CHECK_RC(mk(d.ino, name, 0644, NULL), 0);
	}
	CHECK_RC(meta_getattr(g_m, d.ino, &a), 0); /* the merged sum is cached now */
	CHECK(a.mtime_ns > 1000000000);
	in.mtime_ns = 981173106123456789; /* 2001-02-03 */
	in.atime_ns = 981173106000000000;
	CHECK_RC(meta_setattr(g_m, &ROOT, d.ino, AQ_SET_MTIME | AQ_SET_ATIME, &in, &a), 0);
	CHECKF(a.mtime_ns == in.mtime_ns, "setattr answered mtime %lld", (long long)a.mtime_ns);
	CHECK_RC(meta_getattr(g_m, d.ino, &a), 0);
	CHECKF(a.mtime_ns == in.mtime_ns, "getattr: mtime %lld", (long long)a.mtime_ns);
	CHECK(a.nlink == 2 && a.atime_ns == in.atime_ns);
	struct meta_partial sum;
	CHECK_RC(meta_dir_totals(g_m, d.ino, &sum), 0);
	CHECK(sum.nentries == 40 && sum.mtime_ns <= in.mtime_ns);
	/* a change in the directory after that moves it on again */
	CHECK_RC(mk(d.ino, "later", 0644, NULL), 0);
	CHECK_RC(meta_getattr(g_m, d.ino, &a), 0);
	CHECK(a.mtime_ns > in.mtime_ns);
	return 0;
}

/* rmdir deletes the partial rows the directory has (only those: a tombstone for each
 * of the buckets made every rmdir cost ~0.9 ms), and a rename over an empty directory
 * too: none is left behind. */
static int t_rmdir_partials(void)
{
	struct aq_attr d, e;
	CHECK_RC(mkd(AQ_ROOT_INO, "rp", &d), 0);
	char name[32];
	for (int i = 0; i < 5; i++) {
		snprintf(name, sizeof name, "f%d", i);
		CHECK_RC(mk(d.ino, name, 0644, NULL), 0);
		CHECK_RC(ul(d.ino, name), 0);
	}
	CHECK_RC(mkd(AQ_ROOT_INO, "rp2", &e), 0);
	CHECK_RC(mk(e.ino, "x", 0644, NULL), 0);
	CHECK_RC(ul(e.ino, "x"), 0);
	uint32_t nb = meta_nbuckets(g_m);
	struct meta_partial *p = calloc(nb, sizeof(*p));
	bool *present = calloc(nb, sizeof(*present));
	uint32_t had = 0;
	CHECK_RC(meta_read_partials(g_m, d.ino, 0, nb, p, present), 0);
	for (uint32_t b = 0; b < nb; b++)
		had += present[b];
	CHECK(had >= 1 && had <= 5);
	CHECK_RC(rmd(AQ_ROOT_INO, "rp"), 0);
	CHECK_RC(mkd(AQ_ROOT_INO, "rp3", NULL), 0);
	CHECK_RC(ren(AQ_ROOT_INO, "rp3", AQ_ROOT_INO, "rp2", 0), 0); /* over the empty rp2 */
	uint64_t gone[2] = {d.ino, e.ino};
	for (int k = 0; k < 2; k++) {
		CHECK_RC(meta_read_partials(g_m, gone[k], 0, nb, p, present), 0);
		for (uint32_t b = 0; b < nb; b++)
			CHECKF(!present[b], "dir %d: bucket %u's partial row outlived it", k, b);
	}
	free(p);
	free(present);
	return 0;
}

static int t_dirsum_cache(void)
{
	struct aq_attr d, got;
	CHECK_RC(mkd(AQ_ROOT_INO, "dirsum", &d), 0);
	volatile bool stop = false;
	struct dirsum_arg w[2] = {{d.ino, 0, &stop}, {d.ino, 1, &stop}}, r = {d.ino, 9, &stop};
	pthread_t tw[2], tr;
	pthread_create(&tr, NULL, dirsum_reader, &r);
	for (int i = 0; i < 2; i++)
		pthread_create(&tw[i], NULL, dirsum_writer, &w[i]);
	for (int i = 0; i < 2; i++)
		pthread_join(tw[i], NULL);
	stop = true;
	pthread_join(tr, NULL);
	struct meta_partial truth;
	CHECK_RC(meta_dir_totals(g_m, d.ino, &truth), 0);
	CHECK_RC(meta_getattr(g_m, d.ino, &got), 0);
	CHECK(got.nlink == 2 + truth.nsubdirs);
	CHECK(truth.nentries == 2 * (1500 - 300));
	CHECK(got.mtime_ns >= truth.mtime_ns);
	return 0;
}

static double bench_run(bool sync, int batch, int total)
{
	enum { THREADS = 2 };
	char path[400];
	static int seq;
	snprintf(path, sizeof(path), "%s/bench%d", g_dir, seq++);
	struct meta_options o = { .nbuckets = AQ_BUCKETS_DEFAULT, .chunk_size = 1 << 20, .sync = sync };
	struct meta_store *m;
	struct aq_attr d;
	if (meta_open(path, true, &o, &m))
		return -1;
	if (meta_mkdir(m, &ROOT, AQ_ROOT_INO, "b", 1, 0755, &d)) {
		meta_close(m);
		return -1;
	}
	struct bench_arg a[THREADS];
	pthread_t th[THREADS];
	uint64_t t0 = aq_mono_ns();
	for (int i = 0; i < THREADS; i++) {
		a[i] = (struct bench_arg){ .m = m, .dir = d.ino, .id = i, .count = total / THREADS, .batch = batch };
		pthread_create(&th[i], NULL, bench_main, &a[i]);
	}
	int err = 0;
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		err = err ? err : a[i].err;
	}
	double secs = (aq_mono_ns() - t0) / 1e9;
	uint64_t files = 0;
	meta_count_files(m, &files);
	meta_close(m);
	if (err || files != (uint64_t)total / THREADS * THREADS + 2)
		return -1;
	return total / THREADS * THREADS / secs;
}

static int t_bench(void)
{
	const char *env = getenv("AQ_META_BENCH");
	int total = env && atoi(env) > 1 ? atoi(env) : 200000;
	for (int sync = 0; sync <= 1; sync++) {
		double one = bench_run(sync, 0, total);
		double many = bench_run(sync, 64, total);
		CHECK(one > 0 && many > 0);
		printf("  sync %-3s %d creates, 2 threads: meta_mknod %.0f/s, meta_mknod_many(64) %.0f/s\n",
		       sync ? "on" : "off", total, one, many);
	}
	return 0;
}

/* ---- runner -------------------------------------------------------------------------------------- */

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

int main(void)
{
	struct {
		const char *name;
		int (*fn)(void);
	} tests[] = {
		{ "create_lookup", t_create_lookup },
		{ "symlink", t_symlink },
		{ "mkdir_rmdir", t_mkdir_rmdir },
		{ "bigdir_readdir_20000", t_bigdir },
		{ "readdir_concurrent", t_readdir_concurrent },
		{ "readdir_small_concurrent", t_readdir_small_concurrent },
		{ "rename", t_rename },
		{ "link_unlink_orphan", t_link },
		{ "tmpfile", t_tmpfile },
		{ "rmdir_race", t_rmdir_race },
		{ "permissions", t_perms },
		{ "lookup_sees_dir_changes", t_lookup_sees_dir_changes },
		{ "sticky", t_sticky },
		{ "kill_sxid", t_kill_sxid },
		{ "size_truncate", t_size },
		{ "xattr", t_xattr },
		{ "xattr_summary", t_xattr_summary },
		{ "inode_rows", t_inode_rows },
		{ "acl", t_acl },
		{ "readdir_small_buckets", t_readdir_small_buckets },
		{ "changes", t_changes },
		{ "mknod_many", t_many },
		{ "dirsum_cache", t_dirsum_cache },
		{ "rmdir_partials", t_rmdir_partials },
		{ "dir_mtime_set", t_dir_mtime_set },
		{ "attrs_of", t_attrs_of },
		{ "attrs_after_churn", t_attrs_after_churn },
		{ "mknod_many_rmdir_race", t_many_rmdir_race },
		{ "txn_records", t_txn },
		{ "reopen", t_reopen },
		{ "crash_reopen", t_crash_reopen },
		{ "leveled_store_opens", t_leveled_store_opens },
		{ "name_filters", t_name_filters },
		{ "bench", t_bench }, /* only with AQ_META_BENCH */
	};
	log_min_level = LOG_WARN;
	snprintf(g_dir, sizeof(g_dir), "/tmp/test_meta.XXXXXX");
	if (!mkdtemp(g_dir)) {
		perror("mkdtemp");
		return 1;
	}
	char dbpath[300];
	snprintf(dbpath, sizeof(dbpath), "%s", g_dir);
	struct meta_options o = opts();
	int rc = meta_open(dbpath, true, &o, &g_m);
	if (rc) {
		printf("FAIL open: %s\n", aq_strerror(rc));
		return 1;
	}
	int passed = 0, failed = 0;
	for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
		if (tests[i].fn == t_bench && !getenv("AQ_META_BENCH"))
			continue;
		g_why[0] = 0;
		uint64_t t0 = aq_mono_ns();
		if (tests[i].fn() == 0) {
			printf("ok %s (%.2fs)\n", tests[i].name, (aq_mono_ns() - t0) / 1e9);
			passed++;
		} else {
			printf("FAIL %s: %s\n", tests[i].name, g_why);
			failed++;
		}
		fflush(stdout);
		if (!g_m)
			break;
	}
	meta_close(g_m);
	nftw(g_dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	return unit_report(passed, failed);
}

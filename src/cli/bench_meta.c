/*
 * bench_meta.c - `aq bench meta`: an mdtest-like benchmark of ONE shared directory.
 *
 * Phases, in order: create (empty files "f%09d"), stat of each, lookup of missing names
 * ("m%09d"), list (one full readdir stream), rename within the directory ("f" -> "r"),
 * unlink. The N names are split evenly across T threads. The Aquifer side runs either
 * natively (libaq's asynchronous calls, D in flight per thread in a sliding window) or
 * through the FUSE mount (plain system calls); --compare runs the same phases with the
 * same T on a local directory with system calls, in the same run.
 *
 * Invariants: every operation's result is checked (a create that fails, a stat that does
 * not find its file, a lookup of a missing name that succeeds, a listing that misses or
 * repeats an entry) and any failure aborts the run with a message and exit status 1: a
 * wrong run never prints a number. Each side works in a fresh subdirectory bench-PID
 * that it removes at the end, also after a failure (best effort).
 *
 * Deciles: for create and stat every completed operation bumps one global atomic
 * counter; the thread whose completion reaches a tenth boundary N*k/10 stamps the time,
 * so decile k's rate is (N/10 ops) / (time between boundary k and k+1).
 */
#include "cli/bench.h"
#include "common/cluster.h"
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BM_THREADS_MAX 256
#define BM_DEPTH_MAX 4096
#define BM_LIST_PAGE 4096         /* entries per aq_readdir_ino call (the server's limit) */
#define BM_GETDENTS_BYTES (1u << 20)

enum bm_phase { PH_CREATE, PH_STAT, PH_MISS, PH_LIST, PH_RENAME, PH_UNLINK, PH_COUNT };
static const char *const phase_key[PH_COUNT] = {"create", "stat", "lookup_miss", "list", "rename", "unlink"};

/* One side of the comparison: the directory the phases work in. */
struct bm_side {
	bool native;
	struct aq_client *c;     /* native: the client, and the bench directory's inode */
	uint64_t parent_ino, dir_ino;
	int parent_fd, dir_fd;   /* syscalls: the parent and the bench directory, open */
	char name[64];           /* bench-PID, inside parent */
	char path[PATH_MAX + 64];/* for messages */
	int depth;
};

struct bm_result {
	double rate[PH_COUNT];   /* ops/s; entries/s for list */
	double create_dec[10], stat_dec[10];
	uint64_t client_rss_max_bytes, server_rss_max_bytes;
};

/* The state a phase's threads share. */
struct bm_run {
	struct bm_side *side;
	enum bm_phase ph;
	uint64_t files;
	int threads;
	uint64_t bound[11];            /* ops completed at decile boundary k: files*k/10 */
	_Atomic uint64_t done;
	_Atomic uint64_t dec_ns[11];   /* monotonic time at which bound[k] was reached */
	struct bench_err err;
	pthread_barrier_t start;
	uint64_t t0_ns;
};

struct bm_worker {
	struct bm_run *run;
	uint64_t lo, hi;               /* names [lo, hi) */
	pthread_t tid;
};

static void bm_name(char *buf, size_t size, char prefix, uint64_t i)
{
	snprintf(buf, size, "%c%09llu", prefix, (unsigned long long)i);
}

static void bm_count(struct bm_run *r)
{
	uint64_t n = atomic_fetch_add(&r->done, 1) + 1;
	uint64_t k = n * 10 / r->files;
	/* bound[k] = floor(files*k/10) <= n, so the boundary n equals is k or k+1 */
	for (uint64_t j = k; j <= k + 1 && j <= 10; j++)
		if (r->bound[j] == n)
			atomic_store(&r->dec_ns[j], aq_mono_ns());
}

/* ---- native: libaq's asynchronous calls, a sliding window per thread ---- */

static int native_start(struct bm_run *r, uint64_t i, struct aq_pending **p)
{
	struct bm_side *s = r->side;
	char a[32], b[32];
	switch (r->ph) {
	case PH_CREATE:
		bm_name(a, sizeof a, 'f', i);
		return aq_mknod_start(s->c, NULL, s->dir_ino, a, S_IFREG | 0644, 0, AQ_CREATE_EXCL, p);
	case PH_STAT:
		bm_name(a, sizeof a, 'f', i);
		return aq_lookup_start(s->c, NULL, s->dir_ino, a, p);
	case PH_MISS:
		bm_name(a, sizeof a, 'm', i);
		return aq_lookup_start(s->c, NULL, s->dir_ino, a, p);
	case PH_RENAME:
		bm_name(a, sizeof a, 'f', i);
		bm_name(b, sizeof b, 'r', i);
		return aq_rename_start(s->c, NULL, s->dir_ino, a, s->dir_ino, b, 0, p);
	case PH_UNLINK:
		bm_name(a, sizeof a, 'r', i);
		return aq_unlink_start(s->c, NULL, s->dir_ino, a, p);
	default:
		AQ_ASSERT(!"not a per-name phase");
	}
	return -EINVAL;
}

/* Waits for one call and checks its result; returns 0 or the error it recorded. */
static int native_finish(struct bm_run *r, struct aq_pending *p, uint64_t i)
{
	struct aq_attr a;
	int rc = aq_wait(p, &a);
	if (r->ph == PH_MISS) {
		if (rc == -ENOENT) {
			bm_count(r);
			return 0;
		}
		if (rc == 0)
			rc = -EEXIST;
	} else if (rc == 0 && r->ph == PH_STAT && !S_ISREG(a.mode)) {
		rc = -EINVAL;
	}
	if (rc) {
		bench_fail(&r->err, "%s of name #%llu in %s: %s", phase_key[r->ph], (unsigned long long)i, r->side->path,
			r->ph == PH_MISS && rc == -EEXIST ? "a name that was never created exists" : aq_strerror(rc));
		return rc;
	}
	bm_count(r);
	return 0;
}

static void native_worker(struct bm_worker *w)
{
	struct bm_run *r = w->run;
	uint32_t depth = (uint32_t)r->side->depth;
	struct aq_pending **win = aq_calloc(depth, sizeof *win);
	uint64_t *idx = aq_calloc(depth, sizeof *idx);
	uint32_t head = 0, inflight = 0;
	for (uint64_t i = w->lo; i < w->hi && !bench_failed(&r->err); i++) {
		if (inflight == depth) {
			int rc = native_finish(r, win[head], idx[head]);
			head = (head + 1) % depth;
			inflight--;
			if (rc)
				break;
		}
		uint32_t slot = (head + inflight) % depth;
		int rc = native_start(r, i, &win[slot]);
		if (rc) {
			bench_fail(&r->err, "%s of name #%llu in %s: cannot start: %s", phase_key[r->ph], (unsigned long long)i,
				r->side->path, aq_strerror(rc));
			break;
		}
		idx[slot] = i;
		inflight++;
	}
	/* every started call is waited for, even after a failure: aq_wait frees it */
	while (inflight) {
		native_finish(r, win[head], idx[head]);
		head = (head + 1) % depth;
		inflight--;
	}
	free(win);
	free(idx);
}

/* ---- system calls on a directory (the FUSE mount or the local comparison) ---- */

static int sys_op(struct bm_run *r, uint64_t i)
{
	int dfd = r->side->dir_fd;
	char a[32], b[32];
	struct stat st;
	int rc = 0;
	switch (r->ph) {
	case PH_CREATE: {
		bm_name(a, sizeof a, 'f', i);
		int fd = openat(dfd, a, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
		if (fd < 0 || close(fd))
			rc = -errno;
		break;
	}
	case PH_STAT:
		bm_name(a, sizeof a, 'f', i);
		if (fstatat(dfd, a, &st, AT_SYMLINK_NOFOLLOW))
			rc = -errno;
		else if (!S_ISREG(st.st_mode))
			rc = -EINVAL;
		break;
	case PH_MISS:
		bm_name(a, sizeof a, 'm', i);
		if (fstatat(dfd, a, &st, AT_SYMLINK_NOFOLLOW) == 0)
			rc = -EEXIST;
		else if (errno != ENOENT)
			rc = -errno;
		break;
	case PH_RENAME:
		bm_name(a, sizeof a, 'f', i);
		bm_name(b, sizeof b, 'r', i);
		if (renameat(dfd, a, dfd, b))
			rc = -errno;
		break;
	case PH_UNLINK:
		bm_name(a, sizeof a, 'r', i);
		if (unlinkat(dfd, a, 0))
			rc = -errno;
		break;
	default:
		AQ_ASSERT(!"not a per-name phase");
	}
	if (rc) {
		bench_fail(&r->err, "%s of name #%llu in %s: %s", phase_key[r->ph], (unsigned long long)i, r->side->path,
			r->ph == PH_MISS && rc == -EEXIST ? "a name that was never created exists" : strerror(-rc));
		return rc;
	}
	bm_count(r);
	return 0;
}

static void sys_worker(struct bm_worker *w)
{
	for (uint64_t i = w->lo; i < w->hi && !bench_failed(&w->run->err); i++)
		if (sys_op(w->run, i))
			break;
}

static void *worker_main(void *arg)
{
	struct bm_worker *w = arg;
	pthread_barrier_wait(&w->run->start);
	if (w->run->side->native)
		native_worker(w);
	else
		sys_worker(w);
	return NULL;
}

/* Runs one per-name phase on T threads. Returns 0 and fills the rate (and deciles), or
 * prints the failure and returns -1. */
static int run_phase(struct bm_side *s, enum bm_phase ph, uint64_t files, int threads, double *rate,
		     double *deciles)
{
	struct bm_run *r = aq_calloc(1, sizeof *r);
	struct bm_worker *w = aq_calloc((size_t)threads, sizeof *w);
	r->side = s;
	r->ph = ph;
	r->files = files;
	r->threads = threads;
	for (int k = 0; k <= 10; k++)
		r->bound[k] = files * (uint64_t)k / 10;
	bench_err_init(&r->err);
	pthread_barrier_init(&r->start, NULL, (unsigned)threads + 1);
	for (int t = 0; t < threads; t++) {
		w[t].run = r;
		w[t].lo = files * (uint64_t)t / (uint64_t)threads;
		w[t].hi = files * (uint64_t)(t + 1) / (uint64_t)threads;
		int rc = pthread_create(&w[t].tid, NULL, worker_main, &w[t]);
		AQ_ASSERT(rc == 0);
	}
	r->t0_ns = aq_mono_ns();
	atomic_store(&r->dec_ns[0], r->t0_ns);
	pthread_barrier_wait(&r->start);
	for (int t = 0; t < threads; t++)
		pthread_join(w[t].tid, NULL);
	uint64_t t1 = aq_mono_ns();
	int status = 0;
	if (bench_failed(&r->err)) {
		fprintf(stderr, "aq bench meta: %s\n", r->err.msg);
		status = -1;
	} else {
		AQ_ASSERT(atomic_load(&r->done) == files);
		*rate = (double)files / ((double)(t1 - r->t0_ns) / 1e9);
		for (int k = 0; deciles && k < 10; k++) {
			uint64_t dt = atomic_load(&r->dec_ns[k + 1]) - atomic_load(&r->dec_ns[k]);
			deciles[k] = (double)(r->bound[k + 1] - r->bound[k]) / ((double)MAX(dt, 1u) / 1e9);
		}
	}
	pthread_barrier_destroy(&r->start);
	bench_err_destroy(&r->err);
	free(w);
	free(r);
	return status;
}

/* ---- list: one readdir stream over the whole directory ---- */

/* Marks name "f%09d" in seen; returns 0, or -1 with a message for a stray or repeated name. */
static int list_mark(const char *path, uint8_t *seen, uint64_t files, const char *name, size_t len)
{
	if (len == 1 && name[0] == '.')
		return 0;
	if (len == 2 && name[0] == '.' && name[1] == '.')
		return 0;
	char *end = NULL;
	unsigned long long i = name[0] == 'f' && len > 1 ? strtoull(name + 1, &end, 10) : (unsigned long long)-1;
	if (i >= files || end != name + len) {
		fprintf(stderr, "aq bench meta: list of %s returned '%.*s', a name the benchmark did not create\n", path,
			(int)len, name);
		return -1;
	}
	if (seen[i / 8] & (1u << (i % 8))) {
		fprintf(stderr, "aq bench meta: list of %s returned '%.*s' twice\n", path, (int)len, name);
		return -1;
	}
	seen[i / 8] |= (uint8_t)(1u << (i % 8));
	return 1;
}

/* One listing stream (aq_dir_*: the directory's bucket ranges read with pages in flight),
 * as an application that wants every name would list. */
static int list_native(struct bm_side *s, uint8_t *seen, uint64_t files, uint64_t *count)
{
	struct aq_dirent *ents = aq_malloc(BM_LIST_PAGE * sizeof *ents);
	struct aq_dir *d = NULL;
	int n = aq_dir_open(s->c, NULL, s->dir_ino, 0, &d);
	int status = 0;
	while (n >= 0 && !status) {
		n = aq_dir_read(d, ents, BM_LIST_PAGE);
		if (n <= 0)
			break;
		for (int i = 0; i < n && !status; i++) {
			int m = list_mark(s->path, seen, files, ents[i].name, ents[i].name_len);
			if (m < 0)
				status = -1;
			*count += (uint64_t)MAX(m, 0);
		}
	}
	if (n < 0) {
		fprintf(stderr, "aq bench meta: list of %s: %s\n", s->path, aq_strerror(n));
		status = -1;
	}
	aq_dir_close(d);
	free(ents);
	return status;
}

struct linux_dirent64 {
	uint64_t d_ino;
	int64_t d_off;
	unsigned short d_reclen;
	unsigned char d_type;
	char d_name[];
};

static int list_sys(struct bm_side *s, uint8_t *seen, uint64_t files, uint64_t *count)
{
	int fd = openat(s->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "aq bench meta: open %s: %s\n", s->path, strerror(errno));
		return -1;
	}
	char *buf = aq_malloc(BM_GETDENTS_BYTES);
	int status = 0;
	for (;;) {
		long n = syscall(SYS_getdents64, fd, buf, BM_GETDENTS_BYTES);
		if (n < 0) {
			fprintf(stderr, "aq bench meta: getdents64 %s: %s\n", s->path, strerror(errno));
			status = -1;
			break;
		}
		if (n == 0)
			break;
		for (long off = 0; off < n && !status;) {
			struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
			AQ_ASSERT(d->d_reclen > 0 && off + d->d_reclen <= n);
			int m = list_mark(s->path, seen, files, d->d_name, strlen(d->d_name));
			if (m < 0)
				status = -1;
			*count += (uint64_t)MAX(m, 0);
			off += d->d_reclen;
		}
		if (status)
			break;
	}
	free(buf);
	close(fd);
	return status;
}

static int run_list(struct bm_side *s, uint64_t files, double *rate)
{
	uint8_t *seen = aq_calloc(files / 8 + 1, 1);
	uint64_t count = 0;
	uint64_t t0 = aq_mono_ns();
	int rc = s->native ? list_native(s, seen, files, &count) : list_sys(s, seen, files, &count);
	uint64_t t1 = aq_mono_ns();
	free(seen);
	if (rc)
		return -1;
	if (count != files) {
		fprintf(stderr, "aq bench meta: list of %s returned %llu entries, expected %llu\n", s->path,
			(unsigned long long)count, (unsigned long long)files);
		return -1;
	}
	*rate = (double)files / ((double)MAX(t1 - t0, 1u) / 1e9);
	return 0;
}

/* ---- the bench directory: made fresh, removed at the end ---- */

static int side_open(struct bm_side *s, const char *dir, const char *tag)
{
	snprintf(s->name, sizeof s->name, "bench-%d", (int)getpid());
	snprintf(s->path, sizeof s->path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", s->name);
	if (s->native) {
		struct aq_attr a;
		int rc = aq_resolve(s->c, dir, &a);
		if (!rc && !S_ISDIR(a.mode))
			rc = -ENOTDIR;
		if (rc) {
			fprintf(stderr, "aq bench meta: %s directory %s (inside Aquifer): %s\n", tag, dir, aq_strerror(rc));
			return -1;
		}
		s->parent_ino = a.ino;
		rc = aq_mkdir_at(s->c, NULL, a.ino, s->name, 0755, &a);
		if (rc) {
			fprintf(stderr, "aq bench meta: mkdir %s: %s\n", s->path, aq_strerror(rc));
			return -1;
		}
		s->dir_ino = a.ino;
		return 0;
	}
	s->parent_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->parent_fd < 0) {
		fprintf(stderr, "aq bench meta: %s directory %s: %s\n", tag, dir, strerror(errno));
		return -1;
	}
	if (mkdirat(s->parent_fd, s->name, 0755)) {
		fprintf(stderr, "aq bench meta: mkdir %s: %s\n", s->path, strerror(errno));
		close(s->parent_fd);
		return -1;
	}
	s->dir_fd = openat(s->parent_fd, s->name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dir_fd < 0) {
		fprintf(stderr, "aq bench meta: open %s: %s\n", s->path, strerror(errno));
		unlinkat(s->parent_fd, s->name, AT_REMOVEDIR);
		close(s->parent_fd);
		return -1;
	}
	return 0;
}

/* After a failure: removes whatever is left in the bench directory (best effort). */
static void side_empty(struct bm_side *s)
{
	if (s->native) {
		struct aq_dirent *ents = aq_malloc(BM_LIST_PAGE * sizeof *ents);
		int n;
		/* each pass starts over: the entries of the previous pass are gone */
		while ((n = aq_readdir_ino(s->c, NULL, s->dir_ino, 0, 0, ents, BM_LIST_PAGE)) > 0) {
			int removed = 0;
			for (int i = 0; i < n; i++)
				removed += aq_unlink_at(s->c, NULL, s->dir_ino, ents[i].name) == 0;
			if (!removed)
				break;
		}
		free(ents);
		return;
	}
	DIR *d = fdopendir(dup(s->dir_fd));
	if (!d)
		return;
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			unlinkat(s->dir_fd, e->d_name, 0);
	closedir(d);
}

static int side_close(struct bm_side *s, bool failed)
{
	if (failed)
		side_empty(s);
	int rc;
	if (s->native) {
		rc = aq_rmdir_at(s->c, NULL, s->parent_ino, s->name);
	} else {
		close(s->dir_fd);
		rc = unlinkat(s->parent_fd, s->name, AT_REMOVEDIR) ? -errno : 0;
		close(s->parent_fd);
	}
	if (rc)
		fprintf(stderr, "aq bench meta: rmdir %s: %s\n", s->path, aq_strerror(rc));
	return rc ? -1 : 0;
}

/* ---- aqd's memory, sampled while the Aquifer side runs ---- */

struct rss_sampler {
	pid_t pid;
	_Atomic bool stop;
	uint64_t max_bytes;
	pthread_t tid;
};

static uint64_t proc_rss_bytes(pid_t pid)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	uint64_t kb = 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmRSS: %" SCNu64 " kB", &kb) == 1)
			break;
	fclose(f);
	return kb * 1024;
}

static void *sampler_main(void *arg)
{
	struct rss_sampler *s = arg;
	while (!atomic_load(&s->stop)) {
		s->max_bytes = MAX(s->max_bytes, proc_rss_bytes(s->pid));
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	s->max_bytes = MAX(s->max_bytes, proc_rss_bytes(s->pid));
	return NULL;
}

/* aqd's pid from aqd.pid next to the cluster file; 0 when unknown or not running. */
static pid_t aqd_pid(const char *cluster_file)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	snprintf(dir, sizeof dir, "%s", cluster_default_path(cluster_file));
	snprintf(path, sizeof path, "%s/aqd.pid", dirname(dir));
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int pid = 0;
	if (fscanf(f, "%d", &pid) != 1 || pid <= 0 || proc_rss_bytes(pid) == 0)
		pid = 0;
	fclose(f);
	return pid;
}

/* ---- one side, all phases ---- */

/* With --stop-after, the phases after it do not run (rate -1) and the files stay. */
static int g_last_phase = PH_COUNT - 1;

static int run_side(struct bm_side *s, const char *dir, const char *tag, uint64_t files, int threads,
		    struct bm_result *res)
{
	if (side_open(s, dir, tag))
		return -1;
	int rc = 0;
	for (int ph = g_last_phase + 1; ph < PH_COUNT; ph++)
		res->rate[ph] = -1;
	for (int ph = 0; ph <= g_last_phase && !rc; ph++) {
		if (ph == PH_LIST)
			rc = run_list(s, files, &res->rate[ph]);
		else
			rc = run_phase(s, ph, files, threads, &res->rate[ph],
				       ph == PH_CREATE ? res->create_dec : ph == PH_STAT ? res->stat_dec : NULL);
	}
	if (!rc && g_last_phase < PH_COUNT - 1) {
		fprintf(stderr, "aq bench meta: --stop-after %s: the files stay in %s\n", phase_key[g_last_phase],
			s->path);
		return 0;
	}
	if (side_close(s, rc != 0))
		rc = -1;
	return rc;
}

/* ---- output ---- */

static void json_side(const struct bm_result *r)
{
	printf("{");
	for (int ph = 0; ph < PH_COUNT; ph++)
		if (r->rate[ph] < 0)
			printf("\"%s\":null,", phase_key[ph]);
		else
			printf("\"%s\":%.1f,", phase_key[ph], r->rate[ph]);
	for (int d = 0; d < 2; d++) {
		const double *v = d ? r->stat_dec : r->create_dec;
		printf("\"%s_deciles\":[", d ? "stat" : "create");
		for (int k = 0; k < 10; k++)
			printf("%s%.1f", k ? "," : "", v[k]);
		printf("],");
	}
	printf("\"client_rss_max_bytes\":%" PRIu64 ",\"server_rss_max_bytes\":%" PRIu64 "}", r->client_rss_max_bytes,
	       r->server_rss_max_bytes);
}

static void human_deciles(const char *what, const char *side, const double *v)
{
	char b[32];
	printf("%-6s deciles, %-7s:", what, side);
	for (int k = 0; k < 10; k++)
		printf(" %7s", bench_rate_str(v[k], b, sizeof b));
	printf("   last/first %.2f\n", v[0] > 0 ? v[9] / v[0] : 0.0);
}

static void print_human(const struct bm_result *aq, const struct bm_result *cmp, uint64_t files, int threads,
			const char *via, int depth, const char *aq_path, const char *cmp_path)
{
	char b1[32], b2[32];
	printf("aq bench meta: %llu files in one directory, %d thread%s, via %s", (unsigned long long)files, threads,
	       threads == 1 ? "" : "s", via);
	if (!strcmp(via, "native"))
		printf(" (%d in flight per thread)", depth);
	printf("\n  aquifer: %s\n", aq_path);
	if (cmp)
		printf("  compare: %s\n", cmp_path);
	printf("\n%-12s %12s %12s %8s\n", "phase", "aquifer/s", "compare/s", "ratio");
	for (int ph = 0; ph < PH_COUNT; ph++) {
		if (aq->rate[ph] < 0) {
			printf("%-12s %12s\n", phase_key[ph], "not run");
			continue;
		}
		printf("%-12s %12s", phase_key[ph], bench_rate_str(aq->rate[ph], b1, sizeof b1));
		if (cmp)
			printf(" %12s %8.2f", bench_rate_str(cmp->rate[ph], b2, sizeof b2),
			       cmp->rate[ph] > 0 ? aq->rate[ph] / cmp->rate[ph] : 0.0);
		else
			printf(" %12s %8s", "-", "-");
		printf("%s\n", ph == PH_LIST ? "   (entries/s, one stream)" : "");
	}
	printf("\n");
	human_deciles("create", "aquifer", aq->create_dec);
	if (cmp)
		human_deciles("create", "compare", cmp->create_dec);
	human_deciles("stat", "aquifer", aq->stat_dec);
	if (cmp)
		human_deciles("stat", "compare", cmp->stat_dec);
	printf("\npeak RSS during the aquifer side: client (this process) %s, aqd %s\n",
	       cli_bytes(aq->client_rss_max_bytes, b1, sizeof b1),
	       aq->server_rss_max_bytes ? cli_bytes(aq->server_rss_max_bytes, b2, sizeof b2) : "unknown");
}

static void usage(void)
{
	fprintf(stderr,
		"usage: aq bench meta [--dir PATH] [--files N] [--threads T] [--via native|fuse] [--depth D]\n"
		"                     [--compare DIR] [--stop-after PHASE] [--json] [--cluster FILE]\n"
		"  --dir PATH      native: a directory inside Aquifer (default /); fuse: a directory on the mount\n"
		"  --files N       names in the one shared directory (default 100000)\n"
		"  --threads T     threads on each side (default 2)\n"
		"  --via           native: libaq, D calls in flight per thread; fuse: system calls on the mount\n"
		"  --depth D       native calls in flight per thread (default 64)\n"
		"  --compare DIR   run the same phases on a local directory (e.g. on ext4) in the same run\n"
		"  --stop-after P  run the phases up to P (create, stat, lookup_miss, list, rename) and leave\n"
		"                  the files in place (for very large runs; remove the directory yourself)\n"
		"  --json          print one JSON object\n");
}

int bench_meta(int argc, char **argv)
{
	const char *dir = NULL, *compare = NULL, *cluster = NULL, *via = "native";
	uint64_t files = 100000;
	int threads = 2, depth = 64;
	bool json = false;
	static const struct option lopts[] = {
		{"dir", required_argument, 0, 'd'},     {"files", required_argument, 0, 'n'},
		{"threads", required_argument, 0, 't'}, {"via", required_argument, 0, 'v'},
		{"compare", required_argument, 0, 'C'}, {"json", no_argument, 0, 'j'},
		{"depth", required_argument, 0, 'D'},   {"cluster", required_argument, 0, 'c'},
		{"stop-after", required_argument, 0, 'S'},
		{"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "d:n:t:v:C:jD:c:S:h", lopts, NULL)) != -1) {
		switch (opt) {
		case 'S': {
			int ph = 0;
			while (ph < PH_COUNT - 1 && strcmp(optarg, phase_key[ph]))
				ph++;
			if (ph == PH_COUNT - 1) {
				fprintf(stderr, "aq bench meta: --stop-after: create, stat, lookup_miss, list or rename\n");
				return 2;
			}
			g_last_phase = ph;
			break;
		}
		case 'd': dir = optarg; break;
		case 'n': files = strtoull(optarg, NULL, 10); break;
		case 't': threads = atoi(optarg); break;
		case 'v': via = optarg; break;
		case 'C': compare = optarg; break;
		case 'j': json = true; break;
		case 'D': depth = atoi(optarg); break;
		case 'c': cluster = optarg; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	enum bench_via v;
	if (optind != argc || bench_parse_via(via, &v) || v == VIA_LOCAL) {
		usage();
		return 2;
	}
	bool native = v == VIA_NATIVE;
	if (files < 10 || files > 10000000000ull || threads < 1 || threads > BM_THREADS_MAX || depth < 1 ||
	    depth > BM_DEPTH_MAX) {
		fprintf(stderr, "aq bench meta: --files 10..10^10, --threads 1..%d, --depth 1..%d\n", BM_THREADS_MAX,
			BM_DEPTH_MAX);
		return 2;
	}
	if (!dir) {
		if (!native) {
			fprintf(stderr, "aq bench meta: --via fuse needs --dir, a directory on the mount\n");
			return 2;
		}
		dir = "/";
	}

	struct stat cst = {0};
	if (compare && (stat(compare, &cst) || !S_ISDIR(cst.st_mode))) {
		fprintf(stderr, "aq bench meta: --compare %s: %s\n", compare,
			S_ISDIR(cst.st_mode) || !cst.st_mode ? strerror(errno) : "not a directory");
		return 2;
	}
	if (compare)
		bench_warn_local("aq bench meta", compare);
	struct bm_side aqs = {.native = native, .depth = depth};
	if (native) {
		aqs.c = cli_connect(cluster);
		if (!aqs.c)
			return 1;
	} else {
		bench_warn_not_fuse("aq bench meta", dir);
	}

	struct bm_result aqr = {0}, cmpr = {0};
	struct rss_sampler rs = {.pid = aqd_pid(cluster)};
	if (rs.pid)
		pthread_create(&rs.tid, NULL, sampler_main, &rs);
	int rc = run_side(&aqs, dir, "--dir", files, threads, &aqr);
	if (rs.pid) {
		atomic_store(&rs.stop, true);
		pthread_join(rs.tid, NULL);
		aqr.server_rss_max_bytes = rs.max_bytes;
	}
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	aqr.client_rss_max_bytes = (uint64_t)ru.ru_maxrss * 1024;
	if (aqs.c)
		aq_disconnect(aqs.c);
	if (rc)
		return 1;

	struct bm_side cs = {.native = false};
	if (compare && run_side(&cs, compare, "--compare", files, threads, &cmpr))
		return 1;

	if (json) {
		printf("{\"files\":%llu,\"threads\":%d,\"via\":\"%s\",\"aquifer\":", (unsigned long long)files, threads,
		       via);
		json_side(&aqr);
		printf(",\"compare\":");
		if (compare) {
			cmpr.client_rss_max_bytes = 0; /* measured for the aquifer side only */
			json_side(&cmpr);
		} else {
			printf("null");
		}
		printf("}\n");
	} else {
		print_human(&aqr, compare ? &cmpr : NULL, files, threads, via, depth, aqs.path, cs.path);
	}
	return 0;
}

/*
 * cmd_tier.c - aq tier (set, demote, status, policy, info) and aq prefetch: the object
 * tier from the command line. Paths are inside Aquifer ('/' is its root); a path on an
 * Aquifer FUSE mount of the same cluster is taken too (the mount's prefix is dropped).
 * Trees are walked with readdirplus; files go to the servers in batches (demote: 4096
 * inodes a request) or many at once from a pool of threads (status, prefetch).
 */
#include "cli/cli.h"
#include "common/cluster.h"
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#define TIER_JOBS_DEFAULT 16
#define DEMOTE_BATCH 4096             /* inodes per request: one DEMOTE frame's worth */
#define TIER_JOBS_MAX 256

/* ---- paths and trees ---- */

/* The mount point of the fuse.aquifer mount that holds real (an absolute path), or "". */
static void aquifer_mount_of(const char *real, char *mnt, size_t size)
{
	mnt[0] = 0;
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return;
	char line[8192];
	size_t best = 0;
	while (fgets(line, sizeof line, f)) {
		/* id parent maj:min root mountpoint options... - fstype source superoptions */
		char mp[PATH_MAX], fstype[64];
		const char *dash = strstr(line, " - ");
		if (!dash || sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1 || sscanf(dash + 3, "%63s", fstype) != 1)
			continue;
		if (strcmp(fstype, "fuse.aquifer"))
			continue;
		size_t n = strlen(mp);
		bool under = !strcmp(mp, "/") || (!strncmp(real, mp, n) && (real[n] == '/' || real[n] == 0));
		if (under && n > best) {
			best = n;
			snprintf(mnt, size, "%s", mp);
		}
	}
	fclose(f);
}

/* Turns what the user typed into a path inside Aquifer and resolves it. A path that
 * exists here on an Aquifer mount loses the mount's prefix; anything else is taken as a
 * path inside Aquifer. */
static int resolve_user_path(struct aq_client *c, const char *arg, char *out, size_t size, struct aq_attr *attr)
{
	char real[PATH_MAX], mnt[PATH_MAX];
	struct stat st;
	snprintf(out, size, "%s", arg);
	if (realpath(arg, real) && stat(real, &st) == 0) {
		aquifer_mount_of(real, mnt, sizeof mnt);
		if (mnt[0]) {
			const char *rest = real + (strcmp(mnt, "/") ? strlen(mnt) : 0);
			snprintf(out, size, "%s", *rest ? rest : "/");
			int rc = aq_resolve(c, out, attr);
			if (rc == 0 && attr->ino != (uint64_t)st.st_ino) {
				fprintf(stderr, "aq: %s is on an Aquifer mount of another cluster (%s); use --cluster\n",
					arg, mnt);
				return -EXDEV;
			}
			return rc;
		}
	}
	return aq_resolve(c, out, attr);
}

struct file_ent {
	uint64_t ino, size;
	char *path;
	struct aq_tier_usage usage;
	uint64_t bytes;        /* demote/prefetch: moved */
	int err;
};

struct file_list {
	struct file_ent *v;
	size_t n, cap;
	uint64_t dirs;
};

static void list_add(struct file_list *l, uint64_t ino, uint64_t size, const char *path)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->v = aq_realloc(l->v, l->cap * sizeof *l->v);
	}
	l->v[l->n++] = (struct file_ent){.ino = ino, .size = size, .path = aq_strdup(path)};
}

static void list_free(struct file_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].path);
	free(l->v);
	memset(l, 0, sizeof *l);
}

/* Every regular file at or below path (attr: what path resolved to). Returns 0 or -errno
 * (with a message printed). */
static int collect(struct aq_client *c, const char *cmd, const char *path, const struct aq_attr *attr,
		   struct file_list *out)
{
	if (S_ISREG(attr->mode)) {
		list_add(out, attr->ino, attr->size, path);
		return 0;
	}
	if (!S_ISDIR(attr->mode)) {
		fprintf(stderr, "aq %s: %s: not a regular file or directory\n", cmd, path);
		return -EINVAL;
	}
	struct dir { uint64_t ino; char *path; } *stack = aq_malloc(64 * sizeof *stack);
	size_t nstack = 1, capstack = 64;
	stack[0] = (struct dir){attr->ino, aq_strdup(path)};
	struct aq_dirent *ents = aq_malloc(512 * sizeof *ents);
	int rc = 0;
	while (nstack && !rc) {
		struct dir d = stack[--nstack];
		out->dirs++;
		uint64_t cookie = 0;
		for (;;) {
			int n = aq_readdir_ino(c, NULL, d.ino, cookie, AQ_READDIR_PLUS, ents, 512);
			if (n < 0) {
				fprintf(stderr, "aq %s: %s: %s\n", cmd, d.path, aq_strerror(n));
				rc = n;
				break;
			}
			if (n == 0)
				break;
			for (int i = 0; i < n; i++) {
				const struct aq_dirent *e = &ents[i];
				if (!strcmp(e->name, ".") || !strcmp(e->name, ".."))
					continue;
				size_t plen = strlen(d.path) + 1 + e->name_len + 1;
				char *child = aq_malloc(plen);
				snprintf(child, plen, "%s%s%s", d.path, strcmp(d.path, "/") ? "/" : "", e->name);
				if (S_ISDIR(e->attr.mode)) {
					if (nstack == capstack) {
						capstack *= 2;
						stack = aq_realloc(stack, capstack * sizeof *stack);
					}
					stack[nstack++] = (struct dir){e->ino, child};
					continue;
				}
				if (S_ISREG(e->attr.mode))
					list_add(out, e->ino, e->attr.size, child);
				free(child);
			}
			cookie = ents[n - 1].cookie;
		}
		free(d.path);
	}
	while (nstack)
		free(stack[--nstack].path);
	free(stack);
	free(ents);
	return rc;
}

/* ---- a pool of threads over a file list ---- */

struct pool {
	struct aq_client *c;
	struct file_list *files;
	const size_t *order;   /* indexes of the files to do (NULL: all) */
	size_t n;
	int (*fn)(struct aq_client *c, struct file_ent *f);
	atomic_size_t next, done, failed;
	atomic_uint_fast64_t bytes;
};

static void *pool_main(void *arg)
{
	struct pool *p = arg;
	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->n)
			return NULL;
		struct file_ent *f = &p->files->v[p->order ? p->order[i] : i];
		f->err = p->fn(p->c, f);
		if (f->err) {
			atomic_fetch_add(&p->failed, 1);
			const char *why = aq_tier_last_error();
			fprintf(stderr, "aq: %s: %s\n", f->path, why[0] ? why : aq_strerror(f->err));
		}
		atomic_fetch_add(&p->bytes, f->bytes);
		atomic_fetch_add(&p->done, 1);
	}
}

/* Runs p over jobs threads; tick (may be NULL) is called about every tick_ms until done. */
static void pool_run(struct pool *p, uint32_t jobs, void (*tick)(struct pool *, void *), void *arg,
		     uint32_t tick_ms)
{
	jobs = (uint32_t)MIN((size_t)jobs, MAX(p->n, (size_t)1));
	pthread_t th[TIER_JOBS_MAX];
	for (uint32_t i = 0; i < jobs; i++)
		pthread_create(&th[i], NULL, pool_main, p);
	while (tick && atomic_load(&p->done) < p->n) {
		tick(p, arg);
		usleep(tick_ms * 1000);
	}
	for (uint32_t i = 0; i < jobs; i++)
		pthread_join(th[i], NULL);
}

static int do_usage(struct aq_client *c, struct file_ent *f)
{
	return aq_tier_usage(c, f->ino, &f->usage);
}

static int do_hydrate(struct aq_client *c, struct file_ent *f)
{
	return aq_tier_hydrate(c, f->ino, &f->bytes);
}

/* ---- options shared by the subcommands ---- */

struct tier_args {
	const char *cluster;
	const char *path;
	bool json;
	uint32_t jobs;
};

/* Prints why the last aq_tier_* call failed, in the servers' words. */
static void tier_fail(const char *cmd, const char *what, int rc)
{
	const char *why = aq_tier_last_error();
	const char *hint = rc == -EACCES ? "S3 refused the credentials"
			   : rc == -EHOSTUNREACH || rc == -ETIMEDOUT ? "S3 endpoint unreachable"
			   : rc == -EAGAIN ? "S3 kept answering 503 SlowDown"
			   : rc == -ENOTCONN ? "no object tier attached"
			   : rc == -EPERM ? "not permitted" : aq_strerror(rc);
	fprintf(stderr, "aq %s: %s%s%s%s%s\n", cmd, what ? what : "", what ? ": " : "", hint,
		why[0] && strcmp(why, hint) ? ": " : "", why[0] && strcmp(why, hint) ? why : "");
}

static void print_usage(void)
{
	fprintf(stderr,
		"usage: aq tier set --endpoint URL --bucket B [--region R] [--virtual-host] [--credentials FILE]\n"
		"                   [--high SHARE] [--low SHARE]\n"
		"       aq tier demote PATH\n"
		"       aq tier status PATH [--json]\n"
		"       aq tier policy DIR [--cold-after DURATION | --pin | --clear]\n"
		"       aq tier info [--json]\n"
		"       aq prefetch PATH [--jobs N]\n"
		"  every command takes --cluster FILE; PATH is inside Aquifer (or on its mount).\n"
		"  DURATION: N[s|m|h|d|w], e.g. 30s, 10m, 7d.\n");
}

/* ---- aq tier set ---- */

/* Writes this shell's AWS keys into DIR/s3.credentials.new (0600) beside the cluster file,
 * so that a local aqd started without them can read them; path gets the final name
 * (DIR/s3.credentials), which the caller renames .new to once the servers accepted the
 * keys: wrong keys never replace working ones. Returns 0 or -errno (-ENOENT: no keys in
 * the environment). */
static int write_env_credentials(const char *cluster, char *path, size_t size, char *tmp, size_t tmp_size)
{
	const char *id = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY");
	if (!id || !secret || !*id || !*secret)
		return -ENOENT;
	char real[PATH_MAX];
	if (!realpath(cluster_default_path(cluster), real))
		return -errno;
	const char *dir = dirname(real);
	if (strlen(dir) + 32 > MIN(size, tmp_size))
		return -ENAMETOOLONG;
	snprintf(path, size, "%s/s3.credentials", dir);
	snprintf(tmp, tmp_size, "%s/s3.credentials.new", dir);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	FILE *f = fdopen(fd, "w");
	fchmod(fd, 0600);
	fprintf(f, "# S3 keys for aqd, written by aq tier set from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY\n"
		   "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", id, secret);
	int rc = fflush(f) || fsync(fd) ? -errno : 0;
	fclose(f);
	if (rc)
		unlink(tmp);
	return rc;
}

static int tier_set_cmd(int argc, char **argv)
{
	struct aq_tier_config cfg = {0};
	const char *cluster = NULL, *creds = NULL;
	static const struct option lopts[] = {
		{"endpoint", required_argument, 0, 'e'}, {"bucket", required_argument, 0, 'b'},
		{"region", required_argument, 0, 'r'}, {"virtual-host", no_argument, 0, 'v'},
		{"credentials", required_argument, 0, 'k'}, {"high", required_argument, 0, 'H'},
		{"low", required_argument, 0, 'L'}, {"cluster", required_argument, 0, 'c'}, {0, 0, 0, 0}};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "e:b:r:vk:H:L:c:", lopts, NULL)) != -1) {
		switch (ch) {
		case 'e': snprintf(cfg.endpoint, sizeof cfg.endpoint, "%s", optarg); break;
		case 'b': snprintf(cfg.bucket, sizeof cfg.bucket, "%s", optarg); break;
		case 'r': snprintf(cfg.region, sizeof cfg.region, "%s", optarg); break;
		case 'v': cfg.virtual_host = 1; break;
		case 'k': creds = optarg; break;
		case 'H': cfg.high = atof(optarg); break;
		case 'L': cfg.low = atof(optarg); break;
		case 'c': cluster = optarg; break;
		default: print_usage(); return 2;
		}
	}
	if (optind != argc || !cfg.endpoint[0] || !cfg.bucket[0] || cfg.high < 0 || cfg.high > 1 || cfg.low < 0 ||
	    cfg.low > 1) {
		print_usage();
		return 2;
	}
	char real[PATH_MAX], path[sizeof cfg.credentials_file], pending[sizeof cfg.credentials_file];
	bool env_keys = false;
	const char *keys_from = "aqd's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)";
	if (creds) {
		if (!realpath(creds, real) || strlen(real) >= sizeof cfg.credentials_file) {
			fprintf(stderr, "aq tier set: %s: %s\n", creds, errno ? strerror(errno) : "path too long");
			return 1;
		}
		snprintf(cfg.credentials_file, sizeof cfg.credentials_file, "%s", real);
		keys_from = cfg.credentials_file;
	} else {
		int rc = write_env_credentials(cluster, path, sizeof path, pending, sizeof pending);
		if (rc == 0) {
			env_keys = true;
			snprintf(cfg.credentials_file, sizeof cfg.credentials_file, "%s", pending);
			keys_from = path;
		} else if (rc != -ENOENT) {
			fprintf(stderr, "aq tier set: cannot write %s: %s\n", path, strerror(-rc));
			return 1;
		}
	}
	struct aq_client *c = cli_connect(cluster);
	if (!c)
		return 1;
	int rc = aq_tier_set(c, &cfg);
	if (!rc && env_keys) {
		/* accepted: the keys take their lasting name, and the servers are told it */
		rc = rename(pending, path) ? -errno : 0;
		snprintf(cfg.credentials_file, sizeof cfg.credentials_file, "%s", path);
		if (!rc)
			rc = aq_tier_set(c, &cfg);
	}
	if (env_keys)
		unlink(pending);
	if (rc) {
		tier_fail("tier set", NULL, rc);
		aq_disconnect(c);
		return 1;
	}
	struct aq_tier_status st;
	if (aq_tier_status(c, &st) == 0) {
		printf("object tier: bucket %s at %s (region %s, %s addressing)\n", st.bucket, st.endpoint, st.region,
		       st.virtual_host ? "virtual-host" : "path-style");
		printf("keys from %s\n", keys_from);
		printf("watermarks: demote above %.0f%% full, down to %.0f%%\n", st.high * 100, st.low * 100);
		printf("check: %s\n", st.check);
	}
	aq_disconnect(c);
	return 0;
}

/* ---- aq tier demote / status / prefetch ---- */

static int parse_path_args(int argc, char **argv, struct tier_args *a, bool allow_json, bool allow_jobs)
{
	memset(a, 0, sizeof *a);
	a->jobs = TIER_JOBS_DEFAULT;
	static const struct option lopts[] = {{"cluster", required_argument, 0, 'c'}, {"json", no_argument, 0, 'j'},
					      {"jobs", required_argument, 0, 'J'}, {0, 0, 0, 0}};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:jJ:", lopts, NULL)) != -1) {
		switch (ch) {
		case 'c': a->cluster = optarg; break;
		case 'j': if (!allow_json) return -1; a->json = true; break;
		case 'J':
			if (!allow_jobs)
				return -1;
			a->jobs = (uint32_t)atoi(optarg);
			if (a->jobs < 1 || a->jobs > TIER_JOBS_MAX)
				return -1;
			break;
		default: return -1;
		}
	}
	if (optind != argc - 1)
		return -1;
	a->path = argv[optind];
	return 0;
}

/* Connects, resolves the path and lists its files. Returns the client or NULL. */
static struct aq_client *open_tree(const struct tier_args *a, const char *cmd, char *path, size_t size,
				   struct file_list *files)
{
	struct aq_client *c = cli_connect(a->cluster);
	if (!c)
		return NULL;
	struct aq_attr attr;
	int rc = resolve_user_path(c, a->path, path, size, &attr);
	if (rc) {
		if (rc != -EXDEV)
			fprintf(stderr, "aq %s: %s: %s\n", cmd, a->path, aq_strerror(rc));
		aq_disconnect(c);
		return NULL;
	}
	if (collect(c, cmd, path, &attr, files)) {
		list_free(files);
		aq_disconnect(c);
		return NULL;
	}
	return c;
}

static int tier_demote_cmd(int argc, char **argv)
{
	struct tier_args a;
	if (parse_path_args(argc, argv, &a, false, false)) {
		print_usage();
		return 2;
	}
	char path[AQ_PATH_MAX];
	struct file_list files = {0};
	struct aq_client *c = open_tree(&a, "tier demote", path, sizeof path, &files);
	if (!c)
		return 1;
	uint64_t *inos = aq_malloc((files.n ? files.n : 1) * sizeof *inos);
	for (size_t i = 0; i < files.n; i++)
		inos[i] = files.v[i].ino;
	uint64_t freed = 0, skipped = 0, done = 0;
	int rc = 0;
	uint64_t t0 = aq_mono_ns();
	/* batches of 4096: small files of a tree share pack objects, and a failure says how
	 * far it got */
	for (size_t at = 0; at < files.n && !rc; at += DEMOTE_BATCH) {
		uint32_t k = (uint32_t)MIN(files.n - at, (size_t)DEMOTE_BATCH);
		uint64_t b = 0, s = 0;
		rc = aq_tier_demote(c, inos + at, k, &b, &s);
		if (!rc) {
			freed += b;
			skipped += s;
			done += k;
		}
	}
	double secs = (double)(aq_mono_ns() - t0) / 1e9;
	char b1[32];
	if (rc) {
		char what[AQ_PATH_MAX + 64];
		snprintf(what, sizeof what, "%s (%llu of %zu files done)", path, (unsigned long long)done, files.n);
		tier_fail("tier demote", what, rc);
	} else if (files.n == 1 && !files.dirs) {
		printf("%s: %s freed from flash%s\n", path, cli_bytes(freed, b1, sizeof b1),
		       skipped ? " (skipped: not readable or gone)" : "");
	} else {
		printf("demoted %llu files under %s: %s freed from flash in %.1f s", (unsigned long long)(done - skipped),
		       path, cli_bytes(freed, b1, sizeof b1), secs);
		if (skipped)
			printf(" (%llu skipped: not readable or gone)", (unsigned long long)skipped);
		printf("\n");
	}
	free(inos);
	list_free(&files);
	aq_disconnect(c);
	return rc ? 1 : 0;
}

static int tier_status_cmd(int argc, char **argv)
{
	struct tier_args a;
	if (parse_path_args(argc, argv, &a, true, true)) {
		print_usage();
		return 2;
	}
	char path[AQ_PATH_MAX];
	struct file_list files = {0};
	struct aq_client *c = open_tree(&a, "tier status", path, sizeof path, &files);
	if (!c)
		return 1;
	struct pool p = {.c = c, .files = &files, .n = files.n, .fn = do_usage};
	pool_run(&p, a.jobs, NULL, NULL, 0);
	struct aq_tier_usage sum = {0};
	for (size_t i = 0; i < files.n; i++) {
		sum.hot_bytes += files.v[i].usage.hot_bytes;
		sum.cold_bytes += files.v[i].usage.cold_bytes;
		sum.both_bytes += files.v[i].usage.both_bytes;
	}
	int status = 0;
	if (atomic_load(&p.failed)) {
		fprintf(stderr, "aq tier status: %zu of %zu files could not be asked\n", atomic_load(&p.failed), files.n);
		status = 1;
	} else if (a.json) {
		printf("{\"hot_bytes\":%llu,\"cold_bytes\":%llu,\"both_bytes\":%llu,\"files\":%zu}\n",
		       (unsigned long long)sum.hot_bytes, (unsigned long long)sum.cold_bytes,
		       (unsigned long long)sum.both_bytes, files.n);
	} else {
		char b1[32], b2[32], b3[32];
		if (files.n == 1 && !files.dirs)
			printf("%s: ", path);
		else
			printf("%s: %zu files: ", path, files.n);
		printf("%s on flash only, %s only in S3, %s in both\n", cli_bytes(sum.hot_bytes, b1, sizeof b1),
		       cli_bytes(sum.cold_bytes, b2, sizeof b2), cli_bytes(sum.both_bytes, b3, sizeof b3));
	}
	list_free(&files);
	aq_disconnect(c);
	return status;
}

/* Progress of aq prefetch: a bar redrawn in place on a terminal, a line a second elsewhere. */
struct progress {
	bool tty;
	uint64_t total_bytes;
	uint64_t start_ns, last_ns;
};

static void format_eta(double s, char *buf, size_t size)
{
	if (!isfinite(s) || s < 0)
		snprintf(buf, size, "--");
	else if (s < 60)
		snprintf(buf, size, "%.0fs", s);
	else if (s < 3600)
		snprintf(buf, size, "%.0fm%02.0fs", floor(s / 60), fmod(s, 60));
	else
		snprintf(buf, size, "%.0fh%02.0fm", floor(s / 3600), fmod(s / 60, 60));
}

static void progress_line(struct pool *p, struct progress *pr, bool final)
{
	uint64_t now = aq_mono_ns();
	double secs = (double)(now - pr->start_ns) / 1e9;
	uint64_t bytes = atomic_load(&p->bytes);
	size_t done = atomic_load(&p->done);
	double rate = secs > 0 ? (double)bytes / secs : 0;
	double left = pr->total_bytes > bytes ? (double)(pr->total_bytes - bytes) : 0;
	char eta[32], b1[32], b2[32];
	format_eta(rate > 0 ? left / rate : (done == p->n ? 0 : NAN), eta, sizeof eta);
	cli_bytes(bytes, b1, sizeof b1);
	cli_bytes(pr->total_bytes, b2, sizeof b2);
	if (pr->tty) {
		int width = 30;
		double frac = pr->total_bytes ? (double)bytes / (double)pr->total_bytes : p->n ? (double)done / p->n : 1;
		int fill = (int)(MIN(frac, 1.0) * width);
		char bar[64];
		for (int i = 0; i < width; i++)
			bar[i] = i < fill ? '#' : '.';
		bar[width] = 0;
		printf("\r[%s] %zu/%zu files  %s/%s  %.1f MB/s  ETA %s\033[K", bar, done, p->n, b1, b2, rate / 1e6, eta);
		if (final)
			printf("\n");
	} else {
		printf("prefetch: %zu/%zu files, %s/%s, %.1f MB/s, ETA %s\n", done, p->n, b1, b2, rate / 1e6, eta);
	}
	fflush(stdout);
	pr->last_ns = now;
}

static void progress_tick(struct pool *p, void *arg)
{
	struct progress *pr = arg;
	uint64_t every_ns = pr->tty ? 100000000ull : 1000000000ull;
	if (aq_mono_ns() - pr->last_ns >= every_ns)
		progress_line(p, pr, false);
}

int cmd_prefetch(int argc, char **argv)
{
	struct tier_args a;
	if (parse_path_args(argc, argv, &a, false, true)) {
		fprintf(stderr, "usage: aq prefetch PATH [--jobs N] [--cluster FILE]\n"
				"  brings every file at or below PATH back from S3 to flash, N at once (16)\n");
		return 2;
	}
	char path[AQ_PATH_MAX];
	struct file_list files = {0};
	struct aq_client *c = open_tree(&a, "prefetch", path, sizeof path, &files);
	if (!c)
		return 1;
	/* What is cold, first: the bar's total and the files worth a request. */
	struct pool u = {.c = c, .files = &files, .n = files.n, .fn = do_usage};
	pool_run(&u, a.jobs, NULL, NULL, 0);
	size_t *order = aq_malloc((files.n ? files.n : 1) * sizeof *order), n = 0;
	uint64_t cold = 0;
	for (size_t i = 0; i < files.n; i++)
		if (!files.v[i].err && files.v[i].usage.cold_bytes) {
			order[n++] = i;
			cold += files.v[i].usage.cold_bytes;
		}
	size_t failed = atomic_load(&u.failed);
	struct progress pr = {.tty = isatty(1), .total_bytes = cold, .start_ns = aq_mono_ns()};
	char b1[32];
	printf("prefetch %s: %zu files, %zu with data only in S3 (%s)\n", path, files.n, n,
	       cli_bytes(cold, b1, sizeof b1));
	fflush(stdout);
	struct pool h = {.c = c, .files = &files, .order = order, .n = n, .fn = do_hydrate};
	pr.last_ns = pr.start_ns;
	pool_run(&h, a.jobs, progress_tick, &pr, pr.tty ? 50 : 100);
	if (n)
		progress_line(&h, &pr, true);
	failed += atomic_load(&h.failed);
	double secs = (double)(aq_mono_ns() - pr.start_ns) / 1e9;
	uint64_t bytes = atomic_load(&h.bytes);
	printf("prefetched %zu files, %s in %.1f s (%.1f MB/s)%s\n", n - atomic_load(&h.failed),
	       cli_bytes(bytes, b1, sizeof b1), secs, secs > 0 ? (double)bytes / secs / 1e6 : 0.0,
	       failed ? "" : "; everything is on flash");
	if (failed)
		fprintf(stderr, "aq prefetch: %zu files failed (see above); their data stays in S3 and is read from "
				"there\n", failed);
	free(order);
	list_free(&files);
	aq_disconnect(c);
	return failed ? 1 : 0;
}

/* ---- aq tier policy ---- */

/* "30s", "10m", "2h", "7d", "1w", "90" (seconds) -> seconds; 0 if malformed. */
static uint64_t parse_duration(const char *s)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || end == s || !isfinite(v) || v <= 0)
		return 0;
	double mult = 1;
	if (*end) {
		switch (*end) {
		case 's': mult = 1; break;
		case 'm': mult = 60; break;
		case 'h': mult = 3600; break;
		case 'd': mult = 86400; break;
		case 'w': mult = 7 * 86400; break;
		default: return 0;
		}
		if (end[1])
			return 0;
	}
	double secs = ceil(v * mult);
	return secs >= 1 && secs < 1e12 ? (uint64_t)secs : 0;
}

static void format_rule(const struct aq_tier_rule *r, char *buf, size_t size)
{
	uint64_t s = r->cold_after_s;
	switch (r->kind) {
	case AQ_TIER_RULE_PIN: snprintf(buf, size, "pin"); break;
	case AQ_TIER_RULE_COLD_AFTER:
		if (s % 86400 == 0)
			snprintf(buf, size, "cold-after %llud", (unsigned long long)(s / 86400));
		else if (s % 3600 == 0)
			snprintf(buf, size, "cold-after %lluh", (unsigned long long)(s / 3600));
		else if (s % 60 == 0)
			snprintf(buf, size, "cold-after %llum", (unsigned long long)(s / 60));
		else
			snprintf(buf, size, "cold-after %llus", (unsigned long long)s);
		break;
	default: snprintf(buf, size, "none");
	}
}

static int tier_policy_cmd(int argc, char **argv)
{
	const char *cluster = NULL;
	struct aq_tier_rule rule = {0};
	int nset = 0;
	static const struct option lopts[] = {{"cold-after", required_argument, 0, 'a'}, {"pin", no_argument, 0, 'p'},
					      {"clear", no_argument, 0, 'x'}, {"cluster", required_argument, 0, 'c'},
					      {0, 0, 0, 0}};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "a:pxc:", lopts, NULL)) != -1) {
		switch (ch) {
		case 'a':
			rule.kind = AQ_TIER_RULE_COLD_AFTER;
			rule.cold_after_s = parse_duration(optarg);
			if (!rule.cold_after_s) {
				fprintf(stderr, "aq tier policy: --cold-after %s: a duration is N[s|m|h|d|w], e.g. 7d\n",
					optarg);
				return 2;
			}
			nset++;
			break;
		case 'p': rule.kind = AQ_TIER_RULE_PIN; nset++; break;
		case 'x': rule.kind = AQ_TIER_RULE_NONE; nset++; break;
		case 'c': cluster = optarg; break;
		default: print_usage(); return 2;
		}
	}
	if (optind != argc - 1 || nset > 1) {
		print_usage();
		return 2;
	}
	struct aq_client *c = cli_connect(cluster);
	if (!c)
		return 1;
	char path[AQ_PATH_MAX];
	struct aq_attr attr;
	int rc = resolve_user_path(c, argv[optind], path, sizeof path, &attr);
	if (rc) {
		if (rc != -EXDEV)
			fprintf(stderr, "aq tier policy: %s: %s\n", argv[optind], aq_strerror(rc));
		aq_disconnect(c);
		return 1;
	}
	struct aq_tier_rule own, eff;
	uint64_t from = 0;
	rc = aq_tier_policy(c, attr.ino, nset ? &rule : NULL, &own, &eff, &from);
	if (rc) {
		tier_fail("tier policy", path, rc);
		aq_disconnect(c);
		return 1;
	}
	char o[64], e[64];
	format_rule(&own, o, sizeof o);
	format_rule(&eff, e, sizeof e);
	if (own.kind || !eff.kind)
		printf("%s: %s\n", path, o);
	else
		printf("%s: none of its own; inherits %s (from directory inode %llu)\n", path, e, (unsigned long long)from);
	aq_disconnect(c);
	return 0;
}

/* ---- aq tier info ---- */

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", (unsigned char)*s);
		else
			putchar(*s);
	}
	putchar('"');
}

static int tier_info_cmd(int argc, char **argv)
{
	const char *cluster = NULL;
	bool json = false;
	static const struct option lopts[] = {{"cluster", required_argument, 0, 'c'}, {"json", no_argument, 0, 'j'},
					      {0, 0, 0, 0}};
	int ch;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "c:j", lopts, NULL)) != -1) {
		switch (ch) {
		case 'c': cluster = optarg; break;
		case 'j': json = true; break;
		default: print_usage(); return 2;
		}
	}
	if (optind != argc) {
		print_usage();
		return 2;
	}
	struct aq_client *c = cli_connect(cluster);
	if (!c)
		return 1;
	struct aq_tier_status st;
	int rc = aq_tier_status(c, &st);
	aq_disconnect(c);
	if (rc) {
		tier_fail("tier info", NULL, rc);
		return 1;
	}
	if (json) {
		printf("{\"configured\":%s,\"attached\":%s,\"endpoint\":", st.configured ? "true" : "false",
		       st.attached ? "true" : "false");
		json_str(st.endpoint);
		printf(",\"bucket\":");
		json_str(st.bucket);
		printf(",\"region\":");
		json_str(st.region);
		printf(",\"virtual_host\":%s,\"credentials\":", st.virtual_host ? "true" : "false");
		json_str(st.credentials);
		printf(",\"high\":%.4f,\"low\":%.4f,\"interval_s\":%u,\"check\":", st.high, st.low, st.interval_s);
		json_str(st.check);
		printf(",\"last_error\":");
		json_str(st.last_error);
		printf(",\"objects\":%llu,\"object_bytes\":%llu,\"live_bytes\":%llu,\"passes\":%llu,"
		       "\"rule_demoted_files\":%llu,\"watermark_demoted_files\":%llu,\"demoted_bytes\":%llu,"
		       "\"reclaimed_bytes\":%llu}\n",
		       (unsigned long long)st.objects, (unsigned long long)st.object_bytes,
		       (unsigned long long)st.live_bytes, (unsigned long long)st.passes,
		       (unsigned long long)st.rule_demoted_files, (unsigned long long)st.watermark_demoted_files,
		       (unsigned long long)st.demoted_bytes, (unsigned long long)st.reclaimed_bytes);
		return 0;
	}
	if (!st.configured) {
		printf("no object tier configured (aq tier set --endpoint URL --bucket B)\n");
		return 0;
	}
	char b1[32], b2[32], b3[32];
	printf("bucket      %s at %s (region %s, %s addressing)%s\n", st.bucket, st.endpoint, st.region,
	       st.virtual_host ? "virtual-host" : "path-style", st.attached ? "" : "  NOT ATTACHED");
	printf("keys        %s\n", st.credentials);
	printf("watermarks  demote above %.0f%% full, down to %.0f%%; rules every %u s\n", st.high * 100, st.low * 100,
	       st.interval_s);
	printf("check       %s\n", st.check[0] ? st.check : "(not yet)");
	printf("objects     %llu pack objects, %s, %s of it live\n", (unsigned long long)st.objects,
	       cli_bytes(st.object_bytes, b1, sizeof b1), cli_bytes(st.live_bytes, b2, sizeof b2));
	printf("scanner     %llu passes; demoted %llu files by rule, %llu by watermark (%s); reclaimed %s\n",
	       (unsigned long long)st.passes, (unsigned long long)st.rule_demoted_files,
	       (unsigned long long)st.watermark_demoted_files, cli_bytes(st.demoted_bytes, b1, sizeof b1),
	       cli_bytes(st.reclaimed_bytes, b3, sizeof b3));
	if (st.last_error[0])
		printf("last error  %s\n", st.last_error);
	return 0;
}

int cmd_tier(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} subs[] = {{"set", tier_set_cmd}, {"demote", tier_demote_cmd}, {"status", tier_status_cmd},
		    {"policy", tier_policy_cmd}, {"info", tier_info_cmd}};
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		print_usage();
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(subs); i++)
		if (!strcmp(argv[1], subs[i].name))
			return subs[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "aq tier: unknown subcommand '%s'\n", argv[1]);
	print_usage();
	return 2;
}

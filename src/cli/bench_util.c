/*
 * bench_util.c - helpers the aq bench subcommands share: the first-failure recorder,
 * rate formatting, --via parsing, dropping the page cache and the loopback TCP figure.
 */
#include "cli/bench.h"
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define BENCH_FUSE_MAGIC 0x65735546 /* statfs f_type of a FUSE mount */

void bench_err_init(struct bench_err *e)
{
	pthread_mutex_init(&e->lock, NULL);
	atomic_store(&e->failed, false);
	e->msg[0] = 0;
}

void bench_err_destroy(struct bench_err *e) { pthread_mutex_destroy(&e->lock); }

void bench_fail(struct bench_err *e, const char *fmt, ...)
{
	pthread_mutex_lock(&e->lock);
	if (!atomic_load(&e->failed)) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof e->msg, fmt, ap);
		va_end(ap);
		atomic_store(&e->failed, true);
	}
	pthread_mutex_unlock(&e->lock);
}

const char *bench_rate_str(double r, char *buf, size_t size)
{
	if (r >= 1e6)
		snprintf(buf, size, "%.2fM", r / 1e6);
	else if (r >= 1e4)
		snprintf(buf, size, "%.1fk", r / 1e3);
	else
		snprintf(buf, size, "%.0f", r);
	return buf;
}

static const char *const via_names[] = {[VIA_NATIVE] = "native", [VIA_FUSE] = "fuse", [VIA_LOCAL] = "local"};

int bench_parse_via(const char *s, enum bench_via *out)
{
	for (size_t i = 0; i < ARRAY_SIZE(via_names); i++)
		if (!strcmp(s, via_names[i])) {
			*out = (enum bench_via)i;
			return 0;
		}
	return -1;
}

const char *bench_via_name(enum bench_via v)
{
	AQ_ASSERT((size_t)v < ARRAY_SIZE(via_names));
	return via_names[v];
}

void bench_warn_not_fuse(const char *prog, const char *path)
{
	struct statfs sf;
	if (statfs(path, &sf) == 0 && (uint32_t)sf.f_type != BENCH_FUSE_MAGIC)
		fprintf(stderr, "%s: warning: %s is not on a FUSE mount\n", prog, path);
}

/* A local side on a loop device reads through the loop driver and its backing file's page
 * cache: on this project's test machine 1.5-1.7x slower than the disk under it, which made
 * Aquifer look faster than a real local copy (docs/performance.md). Say so beside the
 * figures. */
#define BENCH_LOOP_MAJOR 7 /* block major of /dev/loopN */

/* Whether the file system of device dev is mounted with online discard (ext4's, xfs's
 * `discard`, in its super block options in /proc/self/mountinfo). */
static bool mounted_discard(dev_t dev)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return false;
	char line[4096];
	bool discard = false;
	while (!discard && fgets(line, sizeof line, f)) {
		unsigned maj, mnr;
		char *sep = strstr(line, " - ");
		if (!sep || sscanf(line, "%*s %*s %u:%u", &maj, &mnr) != 2 || maj != major(dev) || mnr != minor(dev))
			continue;
		char *opts = strrchr(sep, ' '); /* " - type source OPTIONS" */
		for (char *save = NULL, *o = opts ? strtok_r(opts + 1, ",\n", &save) : NULL; o && !discard;
		     o = strtok_r(NULL, ",\n", &save))
			discard = strcmp(o, "discard") == 0;
	}
	fclose(f);
	return discard;
}

void bench_warn_local(const char *prog, const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return;
	if (major(st.st_dev) == BENCH_LOOP_MAJOR)
		fprintf(stderr,
			"%s: warning: %s is on a loop device (/dev/loop%u), which reads and writes slower than the "
			"disk under it: the comparison favours Aquifer; put the local side on the file system "
			"that holds aqd's data\n",
			prog, path, minor(st.st_dev));
	/* it trims what a removal freed as its journal commits: after a million files were
	 * removed there, creates ran at 2k/s instead of 40k for minutes (docs/performance.md) */
	if (mounted_discard(st.st_dev))
		fprintf(stderr,
			"%s: warning: %s is on a file system mounted with discard: for minutes after a big "
			"removal there (a previous run's files) it runs many times slower, which favours Aquifer; "
			"leave it idle a while between runs and check the local side's deciles\n",
			prog, path);
}

int bench_pwrite_all(struct aq_file *af, int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = af ? aq_pwrite(af, (const char *)buf + done, len - done, off + done)
			       : pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (n <= 0)
			return n == 0 ? -EIO : af ? (int)n : -errno;
		done += (size_t)n;
	}
	return 0;
}

int bench_drop_caches(void)
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = write(fd, "3\n", 2) == 2 ? 0 : -errno;
	close(fd);
	return rc;
}

/* Pulls end.sum_received.bits_per_second out of iperf3's -J report; < 0 if absent. */
static double iperf_bits_per_s(const char *json)
{
	const char *p = strstr(json, "\"end\"");
	p = p ? strstr(p, "\"sum_received\"") : NULL;
	p = p ? strstr(p, "\"bits_per_second\"") : NULL;
	p = p ? strchr(p, ':') : NULL;
	if (!p)
		return -1;
	char *end;
	double v = strtod(p + 1, &end);
	return end == p + 1 ? -1 : v;
}

/* Runs the iperf3 client once; returns its -J output (caller frees) or NULL. */
static char *iperf_client(int port, int seconds)
{
	char cmd[128];
	snprintf(cmd, sizeof cmd, "iperf3 -c 127.0.0.1 -p %d -t %d -J 2>/dev/null", port, seconds);
	FILE *f = popen(cmd, "r");
	if (!f)
		return NULL;
	size_t cap = 1 << 16, len = 0;
	char *out = aq_malloc(cap);
	size_t n;
	while ((n = fread(out + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 == cap)
			out = aq_realloc(out, cap *= 2);
	}
	out[len] = 0;
	if (pclose(f) != 0) {
		free(out);
		return NULL;
	}
	return out;
}

double bench_loopback_mb_per_s(int seconds)
{
	int port = cli_free_port();
	if (port < 0)
		return -1;
	char portstr[16];
	snprintf(portstr, sizeof portstr, "%d", port);
	pid_t server = fork();
	if (server < 0)
		return -1;
	if (server == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		execlp("iperf3", "iperf3", "-s", "-1", "-p", portstr, (char *)NULL);
		_exit(127);
	}
	double bps = -1;
	/* the server needs a moment to listen: a refused client is tried again */
	for (int attempt = 0; attempt < 20 && bps < 0; attempt++) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		nanosleep(&ts, NULL);
		int st;
		if (waitpid(server, &st, WNOHANG) == server) {
			server = 0; /* gone: iperf3 is missing or could not listen */
			break;
		}
		char *out = iperf_client(port, seconds);
		if (out) {
			bps = iperf_bits_per_s(out);
			free(out);
		}
	}
	if (server > 0) {
		if (bps < 0)
			kill(server, SIGTERM);
		waitpid(server, NULL, 0);
	}
	return bps < 0 ? -1 : bps / 8 / 1e6;
}

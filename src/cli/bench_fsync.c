/*
 * bench_fsync.c - `aq bench fsync`: what a database, a log or fio's --fsync=1 sees. In a
 * file of each size, written and synced first, a 4 KiB pwrite at a random 4 KiB-aligned
 * place and then fsync, --ops times; the latency of each pair, as median, 90th and 99th
 * percentile, on a directory on the mount and (--compare) on a local one in the same run,
 * the sides taking turns file size by file size. The file's bytes are checked against
 * what was written before it is removed: a wrong byte fails the run.
 */
#include <fcntl.h>
#include <getopt.h>
#include <unistd.h>

#include "cli/bench.h"
#include "common/fdio.h"

#define BF_SIZES_MAX 16
#define BF_WRITE 4096u

struct bf_result {
	double median_us, p90_us, p99_us, ops_per_s;
};

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* One file of size bytes in dir: written and synced, then ops pairs of a 4 KiB write and
 * an fsync, timed; then the file is read back against the model and removed. Returns 0,
 * or -1 after printing why. */
static int run_size(const char *dir, const char *flag, uint64_t size, uint32_t ops, bool datasync,
		    struct bf_result *out)
{
	char path[DS_PATH_MAX];
	snprintf(path, sizeof path, "%s/aq-bench-fsync.%d", dir, (int)getpid());
	uint8_t *model = aq_malloc(size), *back = aq_malloc(size);
	double *lat = aq_malloc(ops * sizeof *lat);
	/* the bytes of write i (0: the file's first) are ds_fill's under key i, as gen's are */
	ds_fill(ds_key(size, 0), 0, model, size);
	int rc = -1, fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "aq bench fsync: %s %s: create %s: %s\n", flag, dir, path, strerror(errno));
		goto out;
	}
	if (bench_pwrite_all(NULL, fd, model, size, 0) || fsync(fd)) {
		fprintf(stderr, "aq bench fsync: %s: write %s: %s\n", flag, path, strerror(errno));
		goto out;
	}
	uint64_t t0 = aq_mono_ns();
	for (uint32_t i = 0; i < ops; i++) {
		uint64_t key = ds_key(size, i + 1), off = aq_mix64(key, 0) % (size / BF_WRITE) * BF_WRITE;
		ds_fill(key, off, model + off, BF_WRITE);
		uint64_t a = aq_mono_ns();
		if (bench_pwrite_all(NULL, fd, model + off, BF_WRITE, off) || (datasync ? fdatasync(fd) : fsync(fd))) {
			fprintf(stderr, "aq bench fsync: %s: write and fsync %s: %s\n", flag, path, strerror(errno));
			goto out;
		}
		lat[i] = (double)(aq_mono_ns() - a) / 1e3;
	}
	double secs = (double)(aq_mono_ns() - t0) / 1e9;
	int e = fd_read_full(fd, back, size); /* the offset is still 0: only pwrites so far */
	if (e || memcmp(back, model, size)) {
		fprintf(stderr, "aq bench fsync: %s: %s reads back %s\n", flag, path,
			e ? strerror(e == -ECONNRESET ? EIO : -e) : "wrong bytes");
		goto out;
	}
	qsort(lat, ops, sizeof *lat, cmp_double);
	out->median_us = lat[ops / 2];
	out->p90_us = lat[(uint64_t)ops * 90 / 100];
	out->p99_us = lat[(uint64_t)ops * 99 / 100];
	out->ops_per_s = ops / secs;
	rc = 0;
out:
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	free(model);
	free(back);
	free(lat);
	return rc;
}

static void usage(void)
{
	printf("usage: aq bench fsync --dir DIR [--compare DIR] [--sizes B1,B2,...] [--ops N] [--datasync] [--json]\n"
	       "  In a file of each size (default 4096,1048576,4194304), written and synced first, N times\n"
	       "  (default 300) a 4 KiB pwrite at a random 4 KiB-aligned place and fsync; prints the\n"
	       "  median, 90th and 99th percentile latency of the pair and pairs per second, for DIR\n"
	       "  (a directory on the mount) and the --compare directory (e.g. on ext4) in the same run.\n"
	       "  --datasync: fdatasync instead of fsync (what SQLite and PostgreSQL call).\n"
	       "  --json: {\"ops\":N,\"aquifer\":{\"SIZE\":{\"median_us\":..,\"p90_us\":..,\"p99_us\":..,\n"
	       "  \"ops_per_s\":..},...},\"compare\":{same keys}|null}\n");
}

static void json_side(const uint64_t *sizes, int n, const struct bf_result *r)
{
	printf("{");
	for (int i = 0; i < n; i++)
		printf("%s\"%llu\":{\"median_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"ops_per_s\":%.1f}",
		       i ? "," : "", (unsigned long long)sizes[i], r[i].median_us, r[i].p90_us, r[i].p99_us,
		       r[i].ops_per_s);
	printf("}");
}

int bench_fsync(int argc, char **argv)
{
	const char *dir = NULL, *compare = NULL, *sizes_arg = "4096,1048576,4194304";
	uint32_t ops = 300;
	bool json = false, datasync = false;
	static const struct option lopts[] = {
		{"datasync", no_argument, 0, 'D'},
		{"dir", required_argument, 0, 'd'}, {"compare", required_argument, 0, 'C'},
		{"sizes", required_argument, 0, 's'}, {"ops", required_argument, 0, 'n'},
		{"json", no_argument, 0, 'j'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "d:C:s:n:jDh", lopts, NULL)) != -1) {
		switch (opt) {
		case 'd': dir = optarg; break;
		case 'C': compare = optarg; break;
		case 's': sizes_arg = optarg; break;
		case 'n': ops = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'j': json = true; break;
		case 'D': datasync = true; break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	uint64_t sizes[BF_SIZES_MAX];
	int nsizes = 0;
	for (const char *p = sizes_arg; *p && nsizes < BF_SIZES_MAX;) {
		char *end;
		uint64_t v = strtoull(p, &end, 10);
		if (end == p || v < BF_WRITE || v % BF_WRITE || v > (1ull << 30) || (*end && *end != ',')) {
			fprintf(stderr, "aq bench fsync: --sizes: multiples of 4096 up to 1 GiB, comma-separated\n");
			return 2;
		}
		sizes[nsizes++] = v;
		p = *end ? end + 1 : end;
	}
	if (!dir || optind != argc || nsizes == 0 || ops < 10 || ops > 1000000) {
		usage();
		return 2;
	}
	bench_warn_not_fuse("aq bench fsync", dir);
	if (compare)
		bench_warn_local("aq bench fsync", compare);
	struct bf_result aq[BF_SIZES_MAX], cmp[BF_SIZES_MAX];
	for (int i = 0; i < nsizes; i++) {
		if (run_size(dir, "--dir", sizes[i], ops, datasync, &aq[i]))
			return 1;
		if (compare && run_size(compare, "--compare", sizes[i], ops, datasync, &cmp[i]))
			return 1;
	}
	if (json) {
		printf("{\"ops\":%u,\"sync\":\"%s\",\"aquifer\":", ops, datasync ? "fdatasync" : "fsync");
		json_side(sizes, nsizes, aq);
		printf(",\"compare\":");
		if (compare)
			json_side(sizes, nsizes, cmp);
		else
			printf("null");
		printf("}\n");
		return 0;
	}
	printf("4 KiB pwrite + %s at random places, %u per file; latency in µs (median / p90 / p99)\n",
	       datasync ? "fdatasync" : "fsync", ops);
	printf("%12s  %26s %10s", "file size", "aquifer", "pairs/s");
	if (compare)
		printf("  %26s %10s  %s", "compare", "pairs/s", "median ratio");
	printf("\n");
	for (int i = 0; i < nsizes; i++) {
		char sz[32], a[64], c[64];
		cli_bytes(sizes[i], sz, sizeof sz);
		snprintf(a, sizeof a, "%.0f / %.0f / %.0f", aq[i].median_us, aq[i].p90_us, aq[i].p99_us);
		printf("%12s  %26s %10.0f", sz, a, aq[i].ops_per_s);
		if (compare) {
			snprintf(c, sizeof c, "%.0f / %.0f / %.0f", cmp[i].median_us, cmp[i].p90_us, cmp[i].p99_us);
			printf("  %26s %10.0f  %.2fx", c, cmp[i].ops_per_s, aq[i].median_us / cmp[i].median_us);
		}
		printf("\n");
	}
	return 0;
}

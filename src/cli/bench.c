/*
 * bench.c - `aq bench SUBCOMMAND`: the benchmarks that produce the figures in
 * docs/performance.md. Each subcommand lives in its own bench_*.c file and returns a
 * process exit status; a benchmark whose run is wrong (an operation fails, a listing
 * misses an entry) exits non-zero rather than printing a number.
 */
#include "cli/cli.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} benches[] = {
	{"meta", bench_meta,
	 "meta [--dir PATH] [--files N] [--threads T] [--via native|fuse] [--depth D] [--compare DIR] [--json]\n"
	 "        create, stat, lookup of missing names, list, rename, unlink in one shared directory"},
	{"gen", bench_gen,
	 "gen [--kind images|shards] [--files N] [--file-size BYTES] [--dir PATH] [--via native|fuse|local]\n"
	 "        [--local DIR] [--seed S]\n"
	 "        writes a training dataset with a MANIFEST of every file's crc32c"},
	{"train", bench_train,
	 "train [--dir PATH] [--via native|fuse|local] [--workers W] [--accelerators S] [--batch B]\n"
	 "        [--compute-us U] [--epochs E] [--cold] [--compare-local DIR] [--find-max] [--stage-to DIR] [--json]\n"
	 "        a simulated training job: samples/s, MB/s and accelerator utilization, every sample verified"},
	{"fsync", bench_fsync,
	 "fsync --dir DIR [--compare DIR] [--sizes B1,B2,...] [--ops N] [--datasync] [--json]\n"
	 "        4 KiB writes each followed by fsync in files of each size: latency beside a local directory"},
	{"tier", bench_tier,
	 "tier [--dir PATH] [--files N] [--file-size BYTES] [--threads T] [--rounds R] [--json]\n"
	 "        demote, cold-read and prefetch MB/s through the object tier, each beside plain S3 PUTs/GETs\n"
	 "        of the same bytes against the same server (curl --aws-sigv4), every file verified"},
};

static void bench_usage(FILE *f)
{
	fprintf(f, "usage: aq bench SUBCOMMAND [options]\n\nsubcommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(benches); i++)
		fprintf(f, "  aq bench %s\n", benches[i].help);
}

int cmd_bench(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		bench_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(benches); i++)
		if (!strcmp(argv[1], benches[i].name))
			return benches[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "aq bench: unknown benchmark '%s'\n", argv[1]);
	bench_usage(stderr);
	return 2;
}

/*
 * bench_gen.c - `aq bench gen`: writes a synthetic training dataset (bench.h describes
 * the format) for `aq bench train`: many image-sized files or a few large shards, each
 * with deterministic pseudo-random content, and a MANIFEST with every file's size and
 * crc32c (and every shard record's crc32c).
 *
 * --via native writes through libaq into a directory inside Aquifer; fuse and local write
 * with system calls into a host directory (the mount, or any local file system); --local
 * DIR writes the same files into a second, local directory in the same pass.
 *
 * Invariants: MANIFEST is removed first and written last, so a directory with a MANIFEST
 * holds every file it lists; every write is checked, and a failure exits non-zero.
 */
#include "cli/bench.h"
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#define GEN_THREADS_MAX 64
#define GEN_RECORD_MAX (64u << 20)
#define GEN_IMAGE_MEAN 110000ull
#define GEN_IMAGE_FILES 200000u
#define GEN_SHARD_BYTES (512ull << 20)
#define GEN_SHARD_FILES 16u
#define GEN_PIECE_BYTES (4u << 20)    /* images larger than this are written in pieces */

/* Where files go: a directory inside Aquifer (c != NULL) or a host directory. */
struct gen_dest {
	struct aq_client *c;
	uint64_t dir_ino;
	uint64_t *class_ino;    /* native, with classes: each class directory's */
	int dir_fd;
	const char *path;
};

struct gen_run {
	struct ds_manifest m;
	uint64_t file_size;
	struct gen_dest dest[2];  /* [0] the dataset, [1] --local (path NULL when absent) */
	int ndest;
	_Atomic uint32_t next;
	_Atomic uint64_t bytes;
	struct bench_err err;
};

/* An open file in one destination. */
struct gen_out {
	struct aq_file *af;
	int fd;
};

/* Opens file i, name (a path under the destination's directory), for writing. */
static int dest_open(const struct gen_dest *d, const struct ds_manifest *m, uint32_t i, const char *name,
		     struct gen_out *o)
{
	o->af = NULL;
	o->fd = -1;
	if (!d->c) {
		o->fd = openat(d->dir_fd, name, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
		return o->fd < 0 ? -errno : 0;
	}
	uint64_t parent = m->classes ? d->class_ino[i % m->classes] : d->dir_ino;
	const char *base = m->classes ? strchr(name, '/') + 1 : name;
	struct aq_attr a;
	int rc = aq_mknod(d->c, NULL, parent, base, S_IFREG | 0644, 0, 0, &a);
	if (rc == -EEXIST)
		rc = aq_lookup(d->c, NULL, parent, base, &a);
	if (!rc && !S_ISREG(a.mode))
		rc = -EISDIR;
	return rc ? rc : aq_open_ino(d->c, NULL, a.ino, O_WRONLY | O_TRUNC, &o->af);
}

static int dest_close(struct gen_out *o)
{
	if (o->af)
		return aq_close(o->af);
	return o->fd >= 0 && close(o->fd) ? -errno : 0;
}

/* Writes file i to every destination and fills its manifest entry. Returns 0 or records
 * the failure and returns -1. */
static int gen_file(struct gen_run *g, uint32_t i, uint8_t *buf)
{
	struct ds_file *f = &g->m.files[i];
	char name[64];
	ds_name(&g->m, i, name, sizeof name);
	f->name = aq_strdup(name);
	f->size = g->m.kind == DS_IMAGES ? ds_image_size(g->m.seed, i, g->file_size) : g->file_size;
	uint64_t piece = g->m.kind == DS_SHARDS ? g->m.record_bytes : GEN_PIECE_BYTES;
	if (g->m.kind == DS_SHARDS) {
		f->nrec = ds_nrec(f->size, g->m.record_bytes);
		f->rec_crc = aq_calloc(MAX(f->nrec, 1u), sizeof *f->rec_crc);
	}
	struct gen_out out[2];
	int nopen = 0, rc = 0, bad = 0;
	const char *what = "create";
	for (; nopen < g->ndest; nopen++) {
		if ((rc = dest_open(&g->dest[nopen], &g->m, i, name, &out[nopen]))) {
			bad = nopen; /* not open: not closed below */
			goto out;
		}
	}
	uint64_t key = ds_key(g->m.seed, i);
	uint32_t crc = 0;
	what = "write";
	for (uint64_t off = 0, r = 0; off < f->size && !rc; off += piece, r++) {
		size_t len = (size_t)MIN(piece, f->size - off);
		ds_fill(key, off, buf, len);
		crc = crc32c(crc, buf, len);
		if (f->rec_crc)
			f->rec_crc[r] = crc32c(0, buf, len);
		for (int d = 0; d < g->ndest && !rc; d++)
			if ((rc = bench_pwrite_all(out[d].af, out[d].fd, buf, len, off)))
				bad = d;
	}
	f->crc = crc;
out:
	for (int d = 0; d < nopen; d++) {
		int e = dest_close(&out[d]);
		if (!rc && e) {
			rc = e;
			bad = d;
			what = "close";
		}
	}
	if (rc) {
		bench_fail(&g->err, "%s %s/%s: %s", what, g->dest[bad].path, name, aq_strerror(rc));
		return -1;
	}
	atomic_fetch_add(&g->bytes, f->size * (uint64_t)g->ndest);
	return 0;
}

static void *gen_worker(void *arg)
{
	struct gen_run *g = arg;
	uint64_t piece = g->m.kind == DS_SHARDS ? g->m.record_bytes : MIN(GEN_PIECE_BYTES, g->file_size * 2);
	uint8_t *buf = aq_malloc(piece);
	while (!bench_failed(&g->err)) {
		uint32_t i = atomic_fetch_add(&g->next, 1);
		if (i >= g->m.nfiles || gen_file(g, i, buf))
			break;
	}
	free(buf);
	return NULL;
}

/* Opens (making it if missing) the directory of a destination, and its class directories;
 * removes a stale MANIFEST. */
static int dest_prepare(struct gen_dest *d, const struct ds_manifest *m, const char *tag)
{
	int rc;
	if (d->c) {
		struct aq_attr a;
		rc = aq_resolve(d->c, d->path, &a);
		if (rc == -ENOENT && !(rc = aq_mkdir(d->c, d->path, 0755)))
			rc = aq_resolve(d->c, d->path, &a);
		if (!rc && !S_ISDIR(a.mode))
			rc = -ENOTDIR;
		if (!rc) {
			d->dir_ino = a.ino;
			rc = aq_unlink_at(d->c, NULL, a.ino, DS_MANIFEST);
			rc = rc == -ENOENT ? 0 : rc;
		}
	} else {
		if (mkdir(d->path, 0755) && errno != EEXIST)
			rc = -errno;
		else if ((d->dir_fd = open(d->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
			rc = -errno;
		else
			rc = unlinkat(d->dir_fd, DS_MANIFEST, 0) && errno != ENOENT ? -errno : 0;
	}
	char what[DS_PATH_MAX];
	if (!rc && m->classes) {
		if (d->c)
			d->class_ino = aq_calloc(m->classes, sizeof *d->class_ino);
		if ((rc = ds_make_classes(d->c, d->path, m, d->class_ino, what, sizeof what))) {
			fprintf(stderr, "aq bench gen: mkdir %s: %s\n", what, aq_strerror(rc));
			return rc;
		}
	}
	if (rc)
		fprintf(stderr, "aq bench gen: %s %s%s: %s\n", tag, d->path, d->c ? " (inside Aquifer)" : "",
			aq_strerror(rc));
	return rc;
}

static void usage(void)
{
	fprintf(stderr,
		"usage: aq bench gen [--kind images|shards] [--files N] [--file-size BYTES] [--dir PATH]\n"
		"                    [--via native|fuse|local] [--local DIR] [--seed S] [--threads T]\n"
		"                    [--record-bytes BYTES] [--classes K] [--json] [--cluster FILE]\n"
		"  --kind          images: many files of about --file-size bytes (+-30%%; default 200000 x 110000)\n"
		"                  shards: a few files of exactly --file-size bytes (default 16 x 512 MiB)\n"
		"  --dir PATH      native: a directory inside Aquifer (default /dataset); fuse, local: a host\n"
		"                  directory (the mount, or any local file system). Made if missing.\n"
		"  --via           native (libaq, default), fuse or local (system calls)\n"
		"  --local DIR     also write the same files into DIR (a local file system)\n"
		"  --seed S        content seed (default 1)\n"
		"  --threads T     files written at once (default 4)\n"
		"  --record-bytes  shards: the sample size aq bench train reads (default 1048576)\n"
		"  --classes K     images: in K class directories class-0000... (file i in i %% K), as\n"
		"                  ImageNet's are; default 0, all in --dir itself\n"
		"  --json          print one JSON object\n");
}

int bench_gen(int argc, char **argv)
{
	const char *kind = "images", *dir = NULL, *local = NULL, *cluster = NULL, *via_s = "native";
	uint64_t files = 0, file_size = 0, seed = 1, record_bytes = 1u << 20, classes = 0;
	int threads = 4;
	bool json = false;
	static const struct option lopts[] = {
		{"kind", required_argument, 0, 'k'},    {"files", required_argument, 0, 'n'},
		{"file-size", required_argument, 0, 's'}, {"dir", required_argument, 0, 'd'},
		{"via", required_argument, 0, 'v'},     {"local", required_argument, 0, 'L'},
		{"seed", required_argument, 0, 'S'},    {"threads", required_argument, 0, 't'},
		{"record-bytes", required_argument, 0, 'r'}, {"json", no_argument, 0, 'j'},
		{"cluster", required_argument, 0, 'c'}, {"help", no_argument, 0, 'h'},
		{"classes", required_argument, 0, 'K'}, {0, 0, 0, 0}};
	int opt;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "k:n:s:d:v:L:S:t:r:jc:hK:", lopts, NULL)) != -1) {
		switch (opt) {
		case 'k': kind = optarg; break;
		case 'n': files = strtoull(optarg, NULL, 10); break;
		case 's': file_size = strtoull(optarg, NULL, 10); break;
		case 'd': dir = optarg; break;
		case 'v': via_s = optarg; break;
		case 'L': local = optarg; break;
		case 'S': seed = strtoull(optarg, NULL, 10); break;
		case 't': threads = atoi(optarg); break;
		case 'r': record_bytes = strtoull(optarg, NULL, 10); break;
		case 'j': json = true; break;
		case 'c': cluster = optarg; break;
		case 'K': classes = strtoull(optarg, NULL, 10); break;
		case 'h': usage(); return 0;
		default: usage(); return 2;
		}
	}
	enum bench_via via;
	bool images = !strcmp(kind, "images");
	if (optind != argc || bench_parse_via(via_s, &via) || (!images && strcmp(kind, "shards"))) {
		usage();
		return 2;
	}
	files = files ? files : images ? GEN_IMAGE_FILES : GEN_SHARD_FILES;
	file_size = file_size ? file_size : images ? GEN_IMAGE_MEAN : GEN_SHARD_BYTES;
	if (files > DS_FILES_MAX || threads < 1 || threads > GEN_THREADS_MAX || record_bytes < 1 ||
	    record_bytes > GEN_RECORD_MAX || file_size > (1ull << 40)) {
		fprintf(stderr, "aq bench gen: --files 1..%u, --threads 1..%d, --record-bytes 1..%u, --file-size up to 1 TiB\n",
			DS_FILES_MAX, GEN_THREADS_MAX, GEN_RECORD_MAX);
		return 2;
	}
	if (classes > DS_CLASSES_MAX || (classes && !images)) {
		fprintf(stderr, "aq bench gen: --classes 0..%u, for --kind images\n", DS_CLASSES_MAX);
		return 2;
	}
	if (!dir) {
		if (via != VIA_NATIVE) {
			fprintf(stderr, "aq bench gen: --via %s needs --dir, a host directory\n", via_s);
			return 2;
		}
		dir = "/dataset";
	}
	if (via == VIA_FUSE)
		bench_warn_not_fuse("aq bench gen", dir);

	struct gen_run *g = aq_calloc(1, sizeof *g);
	g->m = (struct ds_manifest){.kind = images ? DS_IMAGES : DS_SHARDS, .seed = seed,
				    .record_bytes = images ? 0 : record_bytes, .classes = (uint32_t)classes,
				    .nfiles = (uint32_t)files};
	g->m.files = aq_calloc(files, sizeof *g->m.files);
	g->file_size = file_size;
	g->dest[0] = (struct gen_dest){.path = dir, .dir_fd = -1};
	g->dest[1] = (struct gen_dest){.path = local, .dir_fd = -1};
	g->ndest = local ? 2 : 1;
	bench_err_init(&g->err);
	int status = 1;
	if (via == VIA_NATIVE && !(g->dest[0].c = cli_connect(cluster)))
		goto out;
	if (dest_prepare(&g->dest[0], &g->m, "--dir") || (local && dest_prepare(&g->dest[1], &g->m, "--local")))
		goto out;

	uint64_t t0 = aq_mono_ns();
	pthread_t tids[GEN_THREADS_MAX];
	int nthreads = (int)MIN((uint64_t)threads, files);
	for (int t = 0; t < nthreads; t++)
		AQ_ASSERT(pthread_create(&tids[t], NULL, gen_worker, g) == 0);
	for (int t = 0; t < nthreads; t++)
		pthread_join(tids[t], NULL);
	if (bench_failed(&g->err)) {
		fprintf(stderr, "aq bench gen: %s\n", g->err.msg);
		goto out;
	}
	size_t mlen;
	char *text = ds_manifest_format(&g->m, &mlen);
	for (int d = 0; d < g->ndest; d++) {
		int rc = ds_write_file(g->dest[d].c, g->dest[d].path, DS_MANIFEST, text, mlen);
		if (rc) {
			fprintf(stderr, "aq bench gen: write %s/%s: %s\n", g->dest[d].path, DS_MANIFEST, aq_strerror(rc));
			free(text);
			goto out;
		}
	}
	free(text);
	double secs = (double)(aq_mono_ns() - t0) / 1e9;
	uint64_t bytes = atomic_load(&g->bytes) / (uint64_t)g->ndest;
	if (json) {
		printf("{\"kind\":\"%s\",\"via\":\"%s\",\"files\":%" PRIu64 ",\"classes\":%" PRIu64
		       ",\"bytes\":%" PRIu64 ",\"seconds\":%.3f,\"mb_per_s\":%.1f}\n",
		       kind, via_s, files, classes, bytes, secs, (double)bytes * g->ndest / 1e6 / MAX(secs, 1e-9));
	} else {
		char b[32];
		printf("aq bench gen: %" PRIu64 " %s (%s) in %s%s%s via %s, %.1f s, %.1f MB/s written\n", files, kind,
		       cli_bytes(bytes, b, sizeof b), dir, local ? " and " : "", local ? local : "", via_s, secs,
		       (double)bytes * g->ndest / 1e6 / MAX(secs, 1e-9));
	}
	status = 0;
out:
	for (int d = 0; d < 2; d++) {
		if (g->dest[d].dir_fd >= 0)
			close(g->dest[d].dir_fd);
		free(g->dest[d].class_ino);
	}
	if (g->dest[0].c)
		aq_disconnect(g->dest[0].c);
	bench_err_destroy(&g->err);
	ds_manifest_free(&g->m);
	free(g);
	return status;
}

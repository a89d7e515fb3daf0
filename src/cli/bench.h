/*
 * bench.h - what the aq bench subcommands share: the first-failure recorder, rate
 * formatting, the --via choice, dropping the page cache, the loopback TCP figure
 * (bench_util.c), and the synthetic dataset format that `aq bench gen` writes and
 * `aq bench train` reads back and verifies (bench_dataset.c).
 */
#ifndef AQ_CLI_BENCH_H
#define AQ_CLI_BENCH_H
#include "cli/cli.h"
#include "common/hash.h"
#include <pthread.h>
#include <stdatomic.h>

/* ---- bench_util.c ---- */

/* The first failure of a run; later ones are dropped (they are usually echoes). */
struct bench_err {
	pthread_mutex_t lock;
	_Atomic bool failed;
	char msg[512];
};
void bench_err_init(struct bench_err *e);
void bench_err_destroy(struct bench_err *e);
void bench_fail(struct bench_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline bool bench_failed(struct bench_err *e) { return atomic_load(&e->failed); }

/* "1.23M", "45.6k", "789": rates for human output. */
const char *bench_rate_str(double r, char *buf, size_t size);

/* How a benchmark reaches its files: libaq (paths inside Aquifer), or system calls on
 * the FUSE mount or on a local file system (host paths). */
enum bench_via { VIA_NATIVE, VIA_FUSE, VIA_LOCAL };
/* Returns 0 and sets *out, or -1 for a name that is not native, fuse or local. */
int bench_parse_via(const char *s, enum bench_via *out);
const char *bench_via_name(enum bench_via v);
/* Warns on stderr (as prog) when path is not on a FUSE mount. */
void bench_warn_not_fuse(const char *prog, const char *path);
/* Warns when path (a local side) is on a loop device, or on a file system mounted with
 * online discard. */
void bench_warn_local(const char *prog, const char *path);

/* Writes all len bytes at off to a libaq file (af != NULL) or a file descriptor.
 * Returns 0 or a negative error. */
int bench_pwrite_all(struct aq_file *af, int fd, const void *buf, size_t len, uint64_t off);

/* sync(), then writes 3 to /proc/sys/vm/drop_caches. Returns 0 or -errno (-EACCES when
 * not root). */
int bench_drop_caches(void);

/* Loopback TCP bandwidth in MB/s (10^6 bytes), measured with iperf3 for `seconds`
 * (`iperf3 -s -1` and `iperf3 -c 127.0.0.1 -J`). Returns a negative value when iperf3 is
 * missing or its run fails. */
double bench_loopback_mb_per_s(int seconds);

/* ---- bench_dataset.c: the synthetic dataset ----
 *
 * A dataset is a directory of files and a text file MANIFEST, written last:
 *
 *   aquifer-dataset 1 kind=images files=N seed=S record_bytes=0
 *   img-00000000.bin SIZE CRC32C
 *   ...
 *
 * For shards (record_bytes > 0) each line goes on with the crc32c of every record of
 * record_bytes (the last one may be short): `shard-00000.bin SIZE CRC32C R0 R1 ...`. The
 * content of file i is ds_fill(ds_key(seed, i), ...), so any byte can be regenerated.
 * A "sample" is a whole file (images) or one record of a shard (shards). Images may lie
 * in class directories, as ImageNet's do: the header then ends ` classes=K` and each
 * name is a class directory's and a file's, `class-0003/img-00000003.bin`. */
#define DS_MANIFEST "MANIFEST"
#define DS_FILES_MAX 100000000u
#define DS_CLASSES_MAX 100000u
#define DS_MANIFEST_MAX (1ull << 30)   /* bytes of manifest text a reader accepts */
#define DS_PATH_MAX 4352                /* a directory path plus one name */

enum ds_kind { DS_IMAGES, DS_SHARDS };

struct ds_file {
	char *name;
	uint64_t size;
	uint32_t crc;           /* crc32c of the whole file */
	uint32_t nrec;          /* shards: records; images: 0 */
	uint32_t *rec_crc;      /* shards: crc32c of each record */
	uint64_t ino;           /* native: from the listing (0 until then) */
};

struct ds_manifest {
	enum ds_kind kind;
	uint64_t seed;
	uint64_t record_bytes;  /* shards only */
	uint32_t classes;       /* images: in this many class directories (0: all in one) */
	uint32_t nfiles;
	struct ds_file *files;
};

const char *ds_kind_name(enum ds_kind k);
/* The name of file i ("img-%08u.bin", "shard-%05u.bin"; with classes, in the class
 * directory i % classes: "class-0007/img-00000007.bin"). */
void ds_name(const struct ds_manifest *m, uint32_t i, char *buf, size_t size);
/* The name of class directory k ("class-%04u"). */
void ds_class_name(uint32_t k, char *buf, size_t size);
/* Makes the class directories of m in dir (inside Aquifer with c, else a host directory);
 * those there already are kept. With inos (c only), each one's inode number. Returns 0
 * or a negative error, with the failing path in what. */
int ds_make_classes(struct aq_client *c, const char *dir, const struct ds_manifest *m, uint64_t *inos,
		    char *what, size_t what_size);
/* The content key of file i. */
static inline uint64_t ds_key(uint64_t seed, uint32_t i) { return aq_mix64(seed, (uint64_t)i + 1); }
/* Fills buf with the bytes [off, off + len) of the file whose key is key. */
void ds_fill(uint64_t key, uint64_t off, void *buf, size_t len);
/* The size of image i: mean_bytes +-30%, deterministic in (seed, i). */
uint64_t ds_image_size(uint64_t seed, uint32_t i, uint64_t mean_bytes);
/* Records of a file of size bytes. */
static inline uint32_t ds_nrec(uint64_t size, uint64_t record_bytes)
{
	return (uint32_t)((size + record_bytes - 1) / record_bytes);
}

/* The manifest as text; the caller frees it. */
char *ds_manifest_format(const struct ds_manifest *m, size_t *len);
/* Parses manifest text (modified in place). Returns 0, or -1 with a message in err. On
 * success m owns what it points to: free with ds_manifest_free. */
int ds_manifest_parse(char *text, size_t len, struct ds_manifest *m, char *err, size_t errsize);
void ds_manifest_free(struct ds_manifest *m);

/* Whole small files through a --via: dir is inside Aquifer (native, c != NULL) or a host
 * path. Write creates or truncates. Read returns a NUL-terminated buffer the caller frees.
 * Both return 0 or a negative error (aq_strerror text). */
int ds_write_file(struct aq_client *c, const char *dir, const char *name, const void *buf, size_t len);
int ds_read_file(struct aq_client *c, const char *dir, const char *name, uint64_t max_len, char **buf,
		 size_t *len);
/* "dir/name" (no doubled slash). */
void ds_join(char *buf, size_t size, const char *dir, const char *name);
#endif

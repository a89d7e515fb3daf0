/*
 * bench_dataset.c - the synthetic dataset of `aq bench gen` and `aq bench train`: file
 * names, deterministic content, image sizes, and the MANIFEST that lists every file's
 * size and crc32c (and every shard record's crc32c) so that a reader can verify every
 * sample it reads. The format is described in bench.h.
 *
 * Invariant: the content of a file depends only on (seed, file index) and the byte
 * offset, never on how or in what pieces it was written, so a writer may fill a file in
 * any order and a checker may regenerate any range.
 */
#include "cli/bench.h"
#include <fcntl.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#define DS_HEADER "aquifer-dataset 1"

static const char *const kind_names[] = {[DS_IMAGES] = "images", [DS_SHARDS] = "shards"};

const char *ds_kind_name(enum ds_kind k)
{
	AQ_ASSERT((size_t)k < ARRAY_SIZE(kind_names));
	return kind_names[k];
}

void ds_class_name(uint32_t k, char *buf, size_t size)
{
	snprintf(buf, size, "class-%04u", k);
}

void ds_name(const struct ds_manifest *m, uint32_t i, char *buf, size_t size)
{
	if (m->kind == DS_SHARDS) {
		snprintf(buf, size, "shard-%05u.bin", i);
	} else if (!m->classes) {
		snprintf(buf, size, "img-%08u.bin", i);
	} else {
		char cls[32];
		ds_class_name(i % m->classes, cls, sizeof cls);
		snprintf(buf, size, "%s/img-%08u.bin", cls, i);
	}
}

int ds_make_classes(struct aq_client *c, const char *dir, const struct ds_manifest *m, uint64_t *inos,
		    char *what, size_t what_size)
{
	for (uint32_t k = 0; k < m->classes; k++) {
		char cls[32], path[DS_PATH_MAX];
		ds_class_name(k, cls, sizeof cls);
		ds_join(path, sizeof path, dir, cls);
		int rc;
		if (c) {
			struct aq_attr a;
			rc = aq_mkdir(c, path, 0755);
			if ((!rc || rc == -EEXIST) && !(rc = aq_resolve(c, path, &a)) && !S_ISDIR(a.mode))
				rc = -ENOTDIR;
			if (!rc && inos)
				inos[k] = a.ino;
		} else {
			rc = mkdir(path, 0755) && errno != EEXIST ? -errno : 0;
		}
		if (rc) {
			snprintf(what, what_size, "%s", path);
			return rc;
		}
	}
	return 0;
}

void ds_fill(uint64_t key, uint64_t off, void *buf, size_t len)
{
	uint8_t *p = buf;
	/* byte q of the file is byte q % 8 (little-endian) of aq_mix64(key, q / 8) */
	for (; len && (off & 7); off++, len--)
		*p++ = (uint8_t)(aq_mix64(key, off >> 3) >> (8 * (off & 7)));
	for (; len >= 8; off += 8, len -= 8, p += 8)
		put_le64(p, aq_mix64(key, off >> 3));
	for (; len; off++, len--)
		*p++ = (uint8_t)(aq_mix64(key, off >> 3) >> (8 * (off & 7)));
}

uint64_t ds_image_size(uint64_t seed, uint32_t i, uint64_t mean_bytes)
{
	/* uniform in [0.7, 1.3] x mean, in thousandths */
	uint64_t permille = 700 + aq_mix64(seed ^ 0x5A5A5A5A5A5A5A5Aull, i) % 601;
	return MAX(mean_bytes * permille / 1000, 1u);
}

char *ds_manifest_format(const struct ds_manifest *m, size_t *len)
{
	size_t cap = 192, used = 0;
	for (uint32_t i = 0; i < m->nfiles; i++)
		cap += strlen(m->files[i].name) + 40 + 9 * (size_t)m->files[i].nrec;
	char *buf = aq_malloc(cap);
	used += (size_t)snprintf(buf, cap, DS_HEADER " kind=%s files=%u seed=%" PRIu64 " record_bytes=%" PRIu64,
				 ds_kind_name(m->kind), m->nfiles, m->seed, m->record_bytes);
	if (m->classes)
		used += (size_t)snprintf(buf + used, cap - used, " classes=%u", m->classes);
	buf[used++] = '\n';
	for (uint32_t i = 0; i < m->nfiles; i++) {
		const struct ds_file *f = &m->files[i];
		used += (size_t)snprintf(buf + used, cap - used, "%s %" PRIu64 " %08x", f->name, f->size, f->crc);
		for (uint32_t r = 0; r < f->nrec; r++)
			used += (size_t)snprintf(buf + used, cap - used, " %08x", f->rec_crc[r]);
		buf[used++] = '\n';
		AQ_ASSERT(used < cap);
	}
	buf[used] = 0;
	*len = used;
	return buf;
}

static bool parse_u64(const char *s, int base, uint64_t *out)
{
	if (!s || !*s || *s == '-')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	*out = v;
	return !errno && !*end;
}

void ds_manifest_free(struct ds_manifest *m)
{
	for (uint32_t i = 0; m->files && i < m->nfiles; i++) {
		free(m->files[i].name);
		free(m->files[i].rec_crc);
	}
	free(m->files);
	memset(m, 0, sizeof *m);
}

/* A file's name: one name, or with classes a directory's and one inside it. */
static bool name_ok(const struct ds_manifest *m, const char *name)
{
	const char *slash = strchr(name, '/');
	const char *base = slash ? slash + 1 : name;
	size_t dlen = slash ? (size_t)(slash - name) : 0;
	if (slash && (!m->classes || !dlen || dlen > AQ_NAME_MAX || !strncmp(name, ".", dlen) ||
		      !strncmp(name, "..", dlen)))
		return false;
	return *base && strlen(base) <= AQ_NAME_MAX && !strchr(base, '/') && strcmp(base, ".") && strcmp(base, "..");
}

/* Parses one file line (tokens split in place). Returns 0 or -1 with err set. */
static int parse_file_line(char *line, const struct ds_manifest *m, struct ds_file *f, char *err, size_t errsize)
{
	char *save = NULL;
	char *name = strtok_r(line, " ", &save);
	char *size = strtok_r(NULL, " ", &save);
	char *crc = strtok_r(NULL, " ", &save);
	uint64_t v, c;
	if (!name || !name_ok(m, name) || !parse_u64(size, 10, &v) ||
	    !parse_u64(crc, 16, &c) || c > UINT32_MAX) {
		snprintf(err, errsize, "malformed line '%.80s'", name ? name : "");
		return -1;
	}
	f->name = aq_strdup(name);
	f->size = v;
	f->crc = (uint32_t)c;
	if (m->kind == DS_SHARDS) {
		f->nrec = ds_nrec(v, m->record_bytes);
		f->rec_crc = aq_calloc(MAX(f->nrec, 1u), sizeof *f->rec_crc);
		for (uint32_t r = 0; r < f->nrec; r++) {
			if (!parse_u64(strtok_r(NULL, " ", &save), 16, &c) || c > UINT32_MAX) {
				snprintf(err, errsize, "%s: record %u's crc32c is missing or malformed", name, r);
				return -1;
			}
			f->rec_crc[r] = (uint32_t)c;
		}
	}
	if (strtok_r(NULL, " ", &save)) {
		snprintf(err, errsize, "%s: trailing fields", name);
		return -1;
	}
	return 0;
}

int ds_manifest_parse(char *text, size_t len, struct ds_manifest *m, char *err, size_t errsize)
{
	memset(m, 0, sizeof *m);
	AQ_ASSERT(text[len] == 0);
	char *save = NULL;
	char *line = strtok_r(text, "\n", &save);
	char kind[16];
	uint64_t nfiles;
	int used = 0;
	int more = 0;
	if (!line || sscanf(line, DS_HEADER " kind=%15s files=%" SCNu64 " seed=%" SCNu64 " record_bytes=%" SCNu64 "%n",
			    kind, &nfiles, &m->seed, &m->record_bytes, &used) != 4 ||
	    (line[used] && (sscanf(line + used, " classes=%u%n", &m->classes, &more) != 1 || line[used + more] ||
			    !m->classes || m->classes > DS_CLASSES_MAX || strcmp(kind, "images")))) {
		snprintf(err, errsize, "not an aq bench gen manifest (first line '%.80s')", line ? line : "");
		return -1;
	}
	if (!strcmp(kind, "images") && m->record_bytes == 0) {
		m->kind = DS_IMAGES;
	} else if (!strcmp(kind, "shards") && m->record_bytes > 0 && m->record_bytes <= (1u << 30)) {
		m->kind = DS_SHARDS;
	} else {
		snprintf(err, errsize, "unknown kind '%s' or bad record_bytes %" PRIu64, kind, m->record_bytes);
		return -1;
	}
	if (nfiles == 0 || nfiles > DS_FILES_MAX) {
		snprintf(err, errsize, "files=%" PRIu64 " is out of range", nfiles);
		return -1;
	}
	m->files = aq_calloc(nfiles, sizeof *m->files);
	for (uint64_t i = 0; i < nfiles; i++, m->nfiles++) {
		line = strtok_r(NULL, "\n", &save);
		if (!line) {
			snprintf(err, errsize, "lists %" PRIu64 " files, header says %" PRIu64, i, nfiles);
			goto err;
		}
		if (parse_file_line(line, m, &m->files[i], err, errsize)) {
			m->nfiles++; /* so that free sees what this line allocated */
			goto err;
		}
	}
	if (strtok_r(NULL, "\n", &save)) {
		snprintf(err, errsize, "more lines than the %" PRIu64 " files the header lists", nfiles);
		goto err;
	}
	return 0;
err:
	ds_manifest_free(m);
	return -1;
}

void ds_join(char *buf, size_t size, const char *dir, const char *name)
{
	size_t n = strlen(dir);
	snprintf(buf, size, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
}

int ds_write_file(struct aq_client *c, const char *dir, const char *name, const void *buf, size_t len)
{
	char path[DS_PATH_MAX];
	ds_join(path, sizeof path, dir, name);
	struct aq_file *f = NULL;
	int fd = -1, rc;
	if (c)
		rc = aq_open(c, path, O_CREAT | O_WRONLY | O_TRUNC, 0644, &f);
	else
		rc = (fd = open(path, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644)) < 0 ? -errno : 0;
	if (rc)
		return rc;
	rc = bench_pwrite_all(f, fd, buf, len, 0);
	int e = f ? aq_close(f) : close(fd) ? -errno : 0;
	return rc ? rc : e;
}

int ds_read_file(struct aq_client *c, const char *dir, const char *name, uint64_t max_len, char **buf,
		 size_t *len)
{
	char path[DS_PATH_MAX];
	ds_join(path, sizeof path, dir, name);
	uint64_t size;
	int rc = 0;
	struct aq_file *f = NULL;
	int fd = -1;
	if (c) {
		struct aq_attr a = {0};
		rc = aq_open(c, path, O_RDONLY, 0, &f);
		if (!rc)
			rc = aq_file_getattr(f, &a);
		size = a.size;
	} else {
		struct stat st;
		fd = open(path, O_RDONLY | O_CLOEXEC);
		rc = fd < 0 || fstat(fd, &st) ? -errno : 0;
		size = rc ? 0 : (uint64_t)st.st_size;
	}
	if (!rc && size > max_len)
		rc = -EFBIG;
	char *out = NULL;
	uint64_t done = 0;
	if (!rc) {
		out = aq_malloc(size + 1);
		while (done < size) {
			ssize_t n = c ? aq_pread(f, out + done, size - done, done) : pread(fd, out + done, size - done, (off_t)done);
			if (n <= 0) {
				rc = n < 0 ? (c ? (int)n : -errno) : -EIO; /* short: the file shrank */
				break;
			}
			done += (uint64_t)n;
		}
	}
	if (f)
		aq_close(f);
	if (fd >= 0)
		close(fd);
	if (rc) {
		free(out);
		return rc;
	}
	out[size] = 0;
	*buf = out;
	*len = size;
	return 0;
}

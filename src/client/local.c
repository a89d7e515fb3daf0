/*
 * local.c - local reads: a client on the machine its aqd runs on reads a file's first
 * bytes straight from aqd's segment file, as HDFS's short-circuit reads do, instead of
 * having aqd read them and send them down its socket (one copy into aqd, one through
 * TCP, aqd's CPU for both). aqd still answers the OPEN (permissions, attributes) and
 * says where the bytes lie (OPEN_MAP, proto_loc); the client checks the record's header
 * and every block's crc32c against what aqd said, as aqd would.
 *
 * Anything unexpected sends the read through aqd instead: a segment compacted away or a
 * record punched after aqd answered, a corrupt block (aqd then reads it, fails it and
 * logs it), a file this process may not open. The client sends its boot id with the
 * OPEN_MAP, and an aqd with another one (on another machine) answers no location; a
 * client whose local reads keep failing (LOCAL_FAILS_MAX in a row: aqd's files are hidden
 * from it, or a burst of rewrites moved what it was told) stops asking for
 * LOCAL_PAUSE_NS, then tries one again. $AQ_LOCAL_READS=0 turns them off.
 */
#include "client/client_internal.h"
#include "data/data.h"
#include <fcntl.h>
#include <unistd.h>

#define LOCAL_FAILS_MAX 16
#define LOCAL_PAUSE_NS (60ull * 1000000000)

void local_init(struct aq_client *c)
{
	const char *env = getenv("AQ_LOCAL_READS");
	bool on = !(env && strcmp(env, "0") == 0) && aq_boot_id(c->boot_id) == 0;
	atomic_store(&c->local_on, on);
}

bool local_wanted(struct aq_client *c)
{
	return atomic_load(&c->local_on) && aq_mono_ns() >= atomic_load(&c->local_pause_until);
}

static void local_failed(struct aq_client *c, const char *path, int err)
{
	log_debug("local read of %s: %s; reading through aqd", path, strerror(-err));
	if (atomic_fetch_add(&c->local_fails, 1) + 1 < LOCAL_FAILS_MAX)
		return;
	/* after the pause one failure starts the next: no 16 wasted trips per minute */
	atomic_store(&c->local_fails, LOCAL_FAILS_MAX - 1);
	atomic_store(&c->local_pause_until, aq_mono_ns() + LOCAL_PAUSE_NS);
	if (!atomic_exchange(&c->local_paused_once, true))
		log_info("local reads paused after %u failures in a row (the last: %s); reads go through aqd, "
			 "and one is tried again each %llu s", LOCAL_FAILS_MAX, strerror(-err),
			 (unsigned long long)(LOCAL_PAUSE_NS / 1000000000));
}

/* Reads the record span at rec_off; O_DIRECT where asked and the file system takes it. */
static int read_span(const char *path, bool direct, uint8_t *buf, uint64_t span, uint64_t rec_off)
{
	/* O_NONBLOCK: a path that names a FIFO must not hang the reader (the check fails) */
	int flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
	int fd = direct ? open(path, flags | O_DIRECT) : -1;
	if (fd < 0)
		fd = open(path, flags);
	if (fd < 0)
		return -errno;
	uint64_t got = 0;
	int rc = 0;
	while (got < span) {
		ssize_t n = pread(fd, buf + got, span - got, (off_t)(rec_off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO; /* short: the file is not what aqd described */
			break;
		}
		got += (uint64_t)n;
	}
	close(fd);
	return rc;
}

int local_read(struct aq_client *c, uint64_t ino, const struct proto_loc *l, uint8_t **mem, const uint8_t **data)
{
	char path[PATH_MAX];
	memcpy(path, l->path, l->path_len); /* proto_loc_get: shorter than PATH_MAX */
	path[l->path_len] = '\0';
	uint64_t span = data_rec_span(l->length, l->nblk);
	uint8_t *buf = NULL;
	if (posix_memalign((void **)&buf, 4096, span))
		return -ENOMEM;
	int rc = read_span(path, l->direct, buf, span, l->rec_off);
	if (!rc) {
		uint32_t crc[AQ_CHUNK_SIZE_MAX / AQ_CRC_BLOCK_SIZE];
		for (uint32_t b = 0; b < l->nblk; b++)
			crc[b] = get_le32(l->crcs + 4 * (size_t)b);
		rc = data_rec_check(buf, ino, l->idx, l->version, l->length, l->nblk, crc);
	}
	if (rc) {
		free(buf);
		local_failed(c, path, rc);
		return rc;
	}
	atomic_store(&c->local_fails, 0);
	*mem = buf;
	*data = buf + DATA_REC_HDR_SIZE + l->in;
	return 0;
}

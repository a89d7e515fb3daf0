/*
 * store.c - the segment store: opening targets (segment files + RocksDB chunk index),
 * writing a chunk as a new record appended to the active segment, reading with a crc32c
 * check of every block touched, truncate/delete, sync and stats.
 *
 * A write never changes bytes an index entry points to: it appends a whole new version of
 * the chunk and then switches the index entry, so a crash at any point leaves either the
 * old or the new version visible, never a mix. The index put is the commit point.
 * Locks and invariants are described in data_internal.h.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/fdio.h"
#include "data/data_internal.h"

struct data_target *data_target_get(struct data_store *ds, uint32_t target)
{
	for (uint32_t i = 0; i < ds->ntargets; i++)
		if (ds->targets[i].id == target)
			return &ds->targets[i];
	return NULL;
}

/* Binary search; caller holds t->lock or t->seg_lock (the table changes under both). */
struct data_seg *data_seg_find(struct data_target *t, uint32_t no)
{
	uint32_t lo = 0, hi = t->nsegs;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (t->segs[mid].no == no)
			return &t->segs[mid];
		if (t->segs[mid].no < no)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static struct data_seg *seg_active(struct data_target *t)
{
	AQ_ASSERT(t->nsegs > 0);
	return &t->segs[t->nsegs - 1];
}

static void seg_path(const struct data_target *t, uint32_t no, char *buf, size_t size)
{
	snprintf(buf, size, "%s/seg-%08u", t->dir, no);
}

static int dir_fsync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) ? -errno : 0;
	close(fd);
	return rc;
}

/* Inserts a segment into the table (kept sorted). Caller holds seg_lock exclusive or is
 * the only thread that can see t (open). */
static void seg_insert(struct data_target *t, const struct data_seg *s)
{
	if (t->nsegs == t->segs_cap) {
		t->segs_cap = t->segs_cap ? 2 * t->segs_cap : 16;
		t->segs = aq_realloc(t->segs, t->segs_cap * sizeof *t->segs);
	}
	uint32_t i = t->nsegs;
	while (i > 0 && t->segs[i - 1].no > s->no) {
		t->segs[i] = t->segs[i - 1];
		i--;
	}
	t->segs[i] = *s;
	t->nsegs++;
}

void data_seg_close(struct data_seg *s)
{
	close(s->fd);
	if (s->dfd >= 0)
		close(s->dfd);
}

/* Creates segment file `no` and makes it the active one. The directory is fsync'ed so
 * that a record the index points to never lives in a file that a crash forgets. */
static int seg_create(struct data_target *t, uint32_t no)
{
	char path[PATH_MAX];
	seg_path(t, no, path, sizeof path);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		int rc = -errno;
		log_error("target %u: create %s: %s", t->id, path, strerror(-rc));
		return rc;
	}
	int rc = dir_fsync(t->dir);
	if (rc) {
		log_error("target %u: fsync %s: %s", t->id, t->dir, strerror(-rc));
		close(fd);
		unlink(path);
		return rc;
	}
	struct data_seg s = {.no = no, .fd = fd, .dfd = DATA_DFD_UNOPENED};
	pthread_rwlock_wrlock(&t->seg_lock);
	AQ_ASSERT(t->nsegs == 0 || t->segs[t->nsegs - 1].no < no);
	seg_insert(t, &s);
	t->active_end = 0;
	pthread_rwlock_unlock(&t->seg_lock);
	return 0;
}

int data_seal_active_locked(struct data_target *t)
{
	struct data_seg *s = seg_active(t);
	if (t->active_end == 0)
		return 0;
	int rc = data_io_fdatasync(s->fd);
	return rc ? rc : seg_create(t, s->no + 1);
}

/* Gives a dead record's space back. Caller holds seg_lock exclusive: readers look a
 * record up and read it under seg_lock shared, so none is reading this one, and the
 * segment table cannot change. */
static void punch_one_seglocked(struct data_target *t, const struct data_dead *d)
{
	struct data_seg *s = data_seg_find(t, d->seg); /* gone: compaction removed it */
	if (s && fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)d->off, (off_t)d->size) == 0)
		__atomic_store_n(&s->punched, MIN(s->punched + d->size, __atomic_load_n(&s->total, __ATOMIC_ACQUIRE)),
				 __ATOMIC_RELAXED);
}

/* Takes the first n queued records off the list. */
static void dead_shift_locked(struct data_target *t, uint32_t n)
{
	memmove(t->dead, t->dead + n, (t->ndead - n) * sizeof *t->dead);
	t->ndead -= n;
	t->ndead_durable = t->ndead_durable > n ? t->ndead_durable - n : 0;
	if (!t->ndead && t->dead_cap > 4096) { /* a big delete's list goes, not its peak */
		free(t->dead);
		t->dead = NULL;
		t->dead_cap = 0;
	}
}

void data_punch_queued_locked(struct data_target *t)
{
	if (!t->ndead)
		return;
	pthread_rwlock_wrlock(&t->seg_lock);
	for (uint32_t i = 0; i < t->ndead; i++)
		punch_one_seglocked(t, &t->dead[i]);
	pthread_rwlock_unlock(&t->seg_lock);
	dead_shift_locked(t, t->ndead);
}

void data_punch_durable(struct data_store *ds, uint32_t target)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return;
	pthread_mutex_lock(&t->lock);
	uint32_t n = t->ndead_durable;
	struct data_dead *d = n ? aq_malloc(n * sizeof *d) : NULL;
	if (n) {
		memcpy(d, t->dead, n * sizeof *d);
		dead_shift_locked(t, n);
	}
	pthread_mutex_unlock(&t->lock);
	/* One at a time, so that readers and writers wait for one punch at most: a second
	 * of fsyncs can queue a thousand. A segment is never appended to where a record
	 * was, so a punch may come after others wrote. */
	for (uint32_t i = 0; i < n; i++) {
		pthread_rwlock_wrlock(&t->seg_lock);
		punch_one_seglocked(t, &d[i]);
		pthread_rwlock_unlock(&t->seg_lock);
	}
	free(d);
}

void data_drop_record_locked(struct data_target *t, uint32_t seg, uint64_t off, uint32_t length)
{
	struct data_seg *s = seg ? data_seg_find(t, seg) : NULL;
	if (!s)
		return;
	uint64_t size = data_rec_size(length);
	AQ_ASSERT(s->live >= size);
	s->live -= size;
	if (t->ndead == t->dead_cap) {
		t->dead_cap = t->dead_cap ? 2 * t->dead_cap : 64;
		t->dead = aq_realloc(t->dead, t->dead_cap * sizeof *t->dead);
	}
	t->dead[t->ndead++] = (struct data_dead){.seg = seg, .off = off, .size = size};
}

void data_drop_records_locked(struct data_target *t, const struct data_entry *old, const struct data_entry *new)
{
	struct data_rec_ref o[DATA_RECS_MAX], n[DATA_RECS_MAX];
	uint32_t no = data_entry_recs(old, o), nn = new ? data_entry_recs(new, n) : 0;
	for (uint32_t i = 0; i < no; i++) {
		bool kept = false;
		for (uint32_t j = 0; j < nn && !kept; j++)
			kept = o[i].seg == n[j].seg && o[i].off == n[j].off;
		if (!kept)
			data_drop_record_locked(t, o[i].seg, o[i].off, o[i].length);
	}
}

static uint64_t used_bytes(const struct data_target *t)
{
	uint64_t used = 0;
	for (uint32_t i = 0; i < t->nsegs; i++)
		used += t->segs[i].total -
			MIN(__atomic_load_n(&t->segs[i].punched, __ATOMIC_RELAXED), t->segs[i].total);
	return used;
}

/* The file system's size and what a target may still take from it (after the reserve). */
static int fs_space(const struct data_target *t, bool use_reserve, uint64_t *size, uint64_t *avail)
{
	struct statvfs sv;
	if (statvfs(t->dir, &sv))
		return -errno;
	*size = (uint64_t)sv.f_blocks * sv.f_frsize;
	uint64_t free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
	/* Keep a little back so that RocksDB, logs and compaction can still write. */
	uint64_t reserve = use_reserve ? 0 : MIN(*size / 100, DATA_RESERVE_MAX);
	*avail = free_bytes > reserve ? free_bytes - reserve : 0;
	return 0;
}

static int space_check(struct data_target *t, uint64_t rec_size, bool use_reserve)
{
	if (!use_reserve && t->capacity_bytes && used_bytes(t) + rec_size > t->capacity_bytes)
		return -ENOSPC;
	uint64_t size = 0, avail = 0;
	int rc = fs_space(t, use_reserve, &size, &avail);
	if (rc)
		return rc;
	return avail < rec_size ? -ENOSPC : 0;
}

static int seg_dfd(struct data_target *t, struct data_seg *s);

/* Writes the record at `at` in segment s: a big one with O_DIRECT, from the aligned
 * buffers records are built in (data_buf_alloc). Through the page cache, aqd spent
 * over a third of a sequential writer's time copying records into it, and the kernel
 * wrote them out anyway. A file system that refuses the flag for writes gets buffered
 * ones from then on. */
static int seg_write(struct data_store *ds, struct data_target *t, struct data_seg *s, const void *rec,
		     uint64_t rec_size, uint64_t at, bool direct)
{
	int fd = -1;
	if (direct && rec_size >= DATA_DIRECT_WRITE_MIN && (uintptr_t)rec % DATA_REC_ALIGN == 0 &&
	    !__atomic_load_n(&ds->no_direct_writes, __ATOMIC_RELAXED))
		fd = seg_dfd(t, s);
	if (fd < 0)
		return data_io_write(s->fd, rec, rec_size, at);
	int rc = data_io_write(fd, rec, rec_size, at);
	if (rc == -EINVAL) {
		if (!__atomic_exchange_n(&ds->no_direct_writes, true, __ATOMIC_RELAXED))
			log_warn("target %u: O_DIRECT writes fail with EINVAL; writes stay buffered", t->id);
		rc = data_io_write(s->fd, rec, rec_size, at);
	}
	if (!rc)
		__atomic_fetch_add(&t->direct_writes, 1, __ATOMIC_RELAXED);
	return rc;
}

int data_append_locked(struct data_store *ds, struct data_target *t, const void *rec, uint64_t rec_size,
		       bool use_reserve, bool direct, uint32_t *seg, uint64_t *off)
{
	AQ_ASSERT(rec_size % DATA_REC_ALIGN == 0 && rec_size <= t->segment_bytes);
	int rc = space_check(t, rec_size, use_reserve);
	if (rc == -ENOSPC && t->ndead && data_sync_locked(t) == 0)
		rc = space_check(t, rec_size, use_reserve); /* with the queued punches done */
	if (rc) {
		data_kick_compactor(ds); /* dead space may be waiting to be reclaimed */
		return rc;
	}
	struct data_seg *s = seg_active(t);
	if (t->active_end + rec_size > t->segment_bytes && t->active_end > 0) {
		/* Seal: a sealed segment is durable, so compaction and crash recovery never
		 * need to look at anything but the active segment's tail. */
		rc = data_io_fdatasync(s->fd);
		if (rc)
			return rc;
		rc = seg_create(t, s->no + 1);
		if (rc)
			return rc;
		s = seg_active(t);
		data_kick_compactor(ds);
	}
	uint64_t at = t->active_end;
	rc = seg_write(ds, t, s, rec, rec_size, at, direct);
	if (rc) {
		/* Give back whatever part of the record reached the file: the index never
		 * points past active_end, so nothing visible changes. */
		if (ftruncate(s->fd, (off_t)at))
			log_error("target %u: seg %u: truncate back to %llu: %s", t->id, s->no,
				  (unsigned long long)at, strerror(errno));
		if (rc == -EDQUOT || rc == -EFBIG)
			rc = -ENOSPC;
		if (rc != -ENOSPC)
			log_error("target %u: seg %u: write %llu bytes at %llu: %s", t->id, s->no,
				  (unsigned long long)rec_size, (unsigned long long)at, strerror(-rc));
		return rc;
	}
	t->active_end += rec_size;
	t->appends++;
	__atomic_store_n(&s->total, t->active_end, __ATOMIC_RELEASE);
	*seg = s->no;
	*off = at;
	return 0;
}

/* Undoes the last append (its index put failed). Caller holds t->lock. */
static void append_undo(struct data_target *t, uint32_t seg, uint64_t off, uint64_t rec_size)
{
	struct data_seg *s = seg_active(t);
	AQ_ASSERT(s->no == seg && off + rec_size == t->active_end);
	if (ftruncate(s->fd, (off_t)off) == 0) {
		t->active_end = off;
		__atomic_store_n(&s->total, off, __ATOMIC_RELEASE);
	}
}

/* Syncs the active segment, running overlap (if given) while the disk works, then the
 * index's WAL: an entry is never durable before its record. The dead records queued so
 * far are then safe to punch (ndead_durable). *ran tells whether overlap ran: not for
 * a target nothing was written to since its last sync. */
static int sync_locked(struct data_target *t, int (*overlap)(void *), void *arg, bool *ran)
{
	/* An fsync asks every target, and most were not written since their last sync:
	 * those have nothing to make durable (the sequence number is read before the sync,
	 * so an index write that races it is synced by the next one). */
	uint64_t seq = rocksdb_get_latest_sequence_number(t->db);
	if (t->appends == t->synced_appends && seq == t->synced_seq) {
		t->ndead_durable = t->ndead; /* what made them dead is durable already */
		return 0;
	}
	struct data_io_sync op;
	data_io_fdatasync_start(seg_active(t)->fd, &op);
	int orc = 0;
	if (overlap) {
		orc = overlap(arg);
		*ran = true;
	}
	int rc = data_io_fdatasync_wait(&op);
	if (rc)
		return rc;
	char *err = NULL;
	rocksdb_flush_wal(t->db, 1, &err);
	if (err) {
		log_error("target %u: flush index WAL: %s", t->id, err);
		rocksdb_free(err);
		return -EIO;
	}
	t->synced_appends = t->appends;
	t->synced_seq = seq;
	t->syncs++;
	t->ndead_durable = t->ndead;
	return orc;
}

int data_sync_locked(struct data_target *t)
{
	int rc = sync_locked(t, NULL, NULL, NULL);
	if (!rc)
		data_punch_queued_locked(t);
	return rc;
}

int data_index_get(struct data_target *t, uint64_t ino, uint32_t idx, struct data_entry *e, bool *found)
{
	uint8_t key[DATA_KEY_SIZE];
	data_key(key, ino, idx);
	char *err = NULL;
	size_t vlen = 0;
	char *val = rocksdb_get(t->db, t->ropt, (const char *)key, sizeof key, &vlen, &err);
	if (err) {
		log_error("target %u: index get ino %llx idx %u: %s", t->id, (unsigned long long)ino, idx, err);
		rocksdb_free(err);
		return -EIO;
	}
	*found = val != NULL;
	if (!val)
		return 0;
	int rc = data_val_decode((const uint8_t *)val, vlen, e);
	rocksdb_free(val);
	if (rc)
		log_error("target %u: malformed index entry for ino %llx idx %u (%zu bytes)", t->id,
			  (unsigned long long)ino, idx, vlen);
	return rc;
}

/* A run of whole blocks [b0, b1) of a chunk to read into dst (dst = data byte b0 * block). */
struct block_range {
	uint32_t b0, b1;
	uint8_t *dst;
};

/* The segment of record r of chunk (ino, idx) v<version>, once it is checked to hold the
 * whole record. Caller holds t->lock or t->seg_lock shared, so the segment cannot go away. */
static struct data_seg *rec_seg(struct data_target *t, uint64_t ino, uint32_t idx, uint64_t version,
				const struct data_rec_ref *r)
{
	struct data_seg *s = data_seg_find(t, r->seg);
	if (!s) {
		log_error("target %u: ino %llx idx %u v%llu: index points to missing segment %u", t->id,
			  (unsigned long long)ino, idx, (unsigned long long)version, r->seg);
		return NULL;
	}
	/* Readers hold only seg_lock while writers grow total under t->lock: atomic. */
	uint64_t total = __atomic_load_n(&s->total, __ATOMIC_ACQUIRE);
	if (r->off + data_rec_size(r->length) > total) {
		log_error("target %u: ino %llx idx %u v%llu: record at seg %u off %llu past segment end %llu",
			  t->id, (unsigned long long)ino, idx, (unsigned long long)version, r->seg,
			  (unsigned long long)r->off, (unsigned long long)total);
		return NULL;
	}
	return s;
}

/* The segment of e's one whole record (e->nrec == 0), checked as rec_seg does. */
static struct data_seg *entry_seg(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e)
{
	struct data_rec_ref r = {.seg = e->seg, .off = e->off, .length = e->length};
	return rec_seg(t, ino, idx, e->version, &r);
}

/* Checks blocks [b0, b1) of entry e, read to p, against their crc32c. Returns 0 or
 * -AQ_ECORRUPT (logged with the chunk's identity). */
static int check_blocks(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e,
			uint32_t b0, uint32_t b1, const uint8_t *p)
{
	uint32_t crc = 0, b = data_blocks_check(p, e->length, b0, b1, e->crc + b0, &crc);
	if (b == b1)
		return 0;
	struct data_rec_ref r = {0};
	if (e->seg)
		data_entry_block(e, b, &r);
	log_error("target %u: chunk ino %llx idx %u v%llu block %u (seg %u record %llu): "
		  "crc32c %08x, index says %08x: corrupt",
		  t->id, (unsigned long long)ino, idx, (unsigned long long)e->version, b, r.seg,
		  (unsigned long long)r.off, crc, e->crc[b]);
	return -AQ_ECORRUPT;
}

/* Reads the ranges of entry e in one batch and checks every block's crc32c. Caller holds
 * t->lock or t->seg_lock shared, so the segment cannot go away. Returns 0, -EIO,
 * -AQ_ECORRUPT (logged with the chunk's identity). */
static int read_blocks(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e,
		       const struct block_range *r, unsigned n)
{
	if (e->seg == 0) {
		/* only in S3: ranged GETs, checked against the same crcs */
		for (unsigned i = 0; i < n; i++) {
			uint64_t start = (uint64_t)r[i].b0 * DATA_BLOCK_SIZE;
			uint64_t end = MIN((uint64_t)r[i].b1 * DATA_BLOCK_SIZE, e->length);
			int rc = tier_read_blocks(t, ino, idx, e, start, end - start, r[i].dst);
			if (rc)
				return rc;
		}
		return 0;
	}
	/* One I/O per run of blocks that lie one after another in one record: a whole
	 * record's range is one I/O, a map's one per piece. */
	struct data_io one[2], *io = one;
	unsigned nio = 0, cap = ARRAY_SIZE(one);
	for (unsigned i = 0; i < n; i++) {
		AQ_ASSERT(r[i].b0 < r[i].b1 && r[i].b1 <= data_nblocks(e->length));
		uint8_t *dst = r[i].dst;
		for (uint32_t b = r[i].b0; b < r[i].b1;) {
			struct data_rec_ref rec, next;
			uint64_t at = data_entry_block(e, b, &rec), len = 0;
			uint32_t b1 = b;
			do {
				len += data_block_len(e->length, b1);
				b1++;
			} while (b1 < r[i].b1 && data_entry_block(e, b1, &next) == at + len && next.seg == rec.seg);
			struct data_seg *s = rec_seg(t, ino, idx, e->version, &rec);
			if (!s) {
				if (io != one)
					free(io);
				return -EIO;
			}
			if (nio == cap) {
				cap *= 4;
				io = io == one ? memcpy(aq_malloc(cap * sizeof *io), one, sizeof one)
					       : aq_realloc(io, cap * sizeof *io);
			}
			io[nio++] = (struct data_io){.fd = s->fd, .buf = dst, .len = len, .off = at};
			dst += len;
			b = b1;
		}
	}
	int rc = data_io_read(io, nio);
	if (io != one)
		free(io);
	if (rc) {
		log_error("target %u: ino %llx idx %u v%llu: read: %s", t->id, (unsigned long long)ino, idx,
			  (unsigned long long)e->version, strerror(-rc));
		return rc;
	}
	for (unsigned i = 0; i < n && !rc; i++)
		rc = check_blocks(t, ino, idx, e, r[i].b0, r[i].b1, r[i].dst);
	return rc;
}

int data_read_chunk(struct data_target *t, uint64_t ino, uint32_t idx, const struct data_entry *e, uint8_t *dst)
{
	if (e->length == 0)
		return 0;
	struct block_range r = {.b0 = 0, .b1 = data_nblocks(e->length), .dst = dst};
	return read_blocks(t, ino, idx, e, &r, 1);
}

/* Fills in the header of a record whose data (length bytes at rec + header) is in place,
 * and zeroes the padding. */
static void rec_finish(uint8_t *rec, uint32_t length, uint64_t ino, uint32_t idx, uint64_t version, uint16_t flags)
{
	memset(rec + DATA_REC_HDR_SIZE + length, 0, data_rec_size(length) - DATA_REC_HDR_SIZE - length);
	struct data_rec_hdr h = {.ino = ino, .idx = idx, .length = length, .version = version, .flags = flags};
	data_hdr_encode(rec, &h);
}

/* As rec_finish for a record of the whole chunk e, whose block crcs it computes. */
static void rec_seal(uint8_t *rec, uint64_t ino, uint32_t idx, struct data_entry *e)
{
	const uint8_t *data = rec + DATA_REC_HDR_SIZE;
	for (uint32_t b = 0; b < data_nblocks(e->length); b++)
		e->crc[b] = crc32c(0, data + (uint64_t)b * DATA_BLOCK_SIZE, data_block_len(e->length, b));
	rec_finish(rec, e->length, ino, idx, e->version, 0);
}

/* Appends the finished record (rec_len bytes of data) and points the index at e: at the
 * record for a whole one (e->nrec 0), else with the record as e's last. Old's records
 * that e no longer points to become dead. Caller holds t->lock. */
static int commit_record_locked(struct data_store *ds, struct data_target *t, uint64_t ino, uint32_t idx,
				const uint8_t *rec, uint32_t rec_len, struct data_entry *e,
				const struct data_entry *old, bool sync, bool direct)
{
	uint64_t rec_size = data_rec_size(rec_len);
	uint32_t seg;
	uint64_t off;
	int rc = data_append_locked(ds, t, rec, rec_size, false, direct, &seg, &off);
	if (rc)
		return rc;
	if (sync) {
		rc = data_io_fdatasync(seg_active(t)->fd);
		if (rc) {
			log_error("target %u: fdatasync seg %u: %s", t->id, seg, strerror(-rc));
			append_undo(t, seg, off, rec_size);
			return rc;
		}
	}
	if (e->nrec) {
		e->rec[e->nrec - 1] = (struct data_rec_ref){.seg = seg, .off = off, .length = rec_len};
		e->seg = e->rec[0].seg;
		e->off = e->rec[0].off;
	} else {
		e->seg = seg;
		e->off = off;
	}
	uint8_t key[DATA_KEY_SIZE], val[DATA_VAL_MAX];
	data_key(key, ino, idx);
	size_t vlen = data_val_encode(val, e);
	char *err = NULL;
	rocksdb_put(t->db, sync ? t->wopt_sync : t->wopt, (const char *)key, sizeof key, (const char *)val, vlen,
		    &err);
	if (err) {
		log_error("target %u: index put ino %llx idx %u: %s", t->id, (unsigned long long)ino, idx, err);
		rocksdb_free(err);
		append_undo(t, seg, off, rec_size);
		return -EIO;
	}
	data_seg_find(t, seg)->live += rec_size;
	if (old) {
		data_drop_records_locked(t, old, e);
		if (sync)
			data_punch_queued_locked(t); /* the WAL is synced up to this put */
		if (old->obj)
			tier_unref_locked(t, old->obj, old->length);
	} else {
		t->chunks++;
	}
	return 0;
}

/* True when [a, b) lies inside the union of the n sorted, disjoint extents. */
static bool covered(const struct aq_extent *ext, uint32_t n, uint32_t a, uint32_t b)
{
	for (uint32_t i = 0; i < n && a < b; i++) {
		if (ext[i].off > a)
			return false;
		if (ext[i].off + ext[i].len > a)
			a = ext[i].off + ext[i].len;
	}
	return a >= b;
}

/* Copies the extents' bytes that fall in block b into dst (block b's first byte). */
static void put_extents(uint8_t *dst, uint32_t b, const struct aq_extent *ext, uint32_t n, const uint8_t *bytes)
{
	uint64_t lo = (uint64_t)b * DATA_BLOCK_SIZE, hi = lo + DATA_BLOCK_SIZE;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t a = MAX(lo, (uint64_t)ext[i].off), z = MIN(hi, (uint64_t)ext[i].off + ext[i].len);
		if (a < z)
			memcpy(dst + (a - lo), bytes + (a - ext[i].off), z - a);
		bytes += ext[i].len;
	}
}

/* A new whole version of the chunk: old (NULL: none) with the extents applied, new_len
 * bytes, one record. Reads back only the old blocks that the extents do not cover whole:
 * a whole-chunk write or an append at a block boundary reads nothing, and a corrupt block
 * that is overwritten whole is replaced rather than refused. Caller holds t->lock. */
static int write_whole_locked(struct data_store *ds, struct data_target *t, uint64_t ino, uint32_t idx,
			      const struct aq_extent *ext, uint32_t n, const uint8_t *bytes,
			      const struct data_entry *old, uint32_t new_len, struct data_entry *e, bool sync)
{
	uint32_t old_len = old ? old->length : 0;
	uint8_t *rec = data_buf_alloc(data_rec_size(new_len));
	uint8_t *data = rec + DATA_REC_HDR_SIZE;
	int rc = 0;
	uint32_t nb = data_nblocks(old_len);
	bool read_back = false; /* old bytes kept: a writer at work inside the chunk */
	for (uint32_t b = 0; b < nb && rc == 0;) {
		uint32_t b1 = b;
		while (b1 < nb && !covered(ext, n, b1 * DATA_BLOCK_SIZE, MIN((b1 + 1) * DATA_BLOCK_SIZE, old_len)))
			b1++;
		if (b1 > b) {
			struct block_range r = {.b0 = b, .b1 = b1, .dst = data + (uint64_t)b * DATA_BLOCK_SIZE};
			read_back = true;
			rc = read_blocks(t, ino, idx, old, &r, 1);
		}
		b = b1 + 1;
	}
	if (!rc) {
		/* Zeros where the chunk grows and no extent lands (the last extent ends the
		 * chunk when it grows): a new 4 MiB chunk used to be zeroed whole and then
		 * overwritten whole, a tenth of aqd's time under a sequential writer. */
		uint32_t at = old_len;
		for (uint32_t i = 0; i < n && at < new_len; i++) {
			if (ext[i].off > at)
				memset(data + at, 0, ext[i].off - at);
			at = MAX(at, ext[i].off + ext[i].len);
		}
		AQ_ASSERT(at == new_len);
		for (uint32_t i = 0; i < n; i++) {
			memcpy(data + ext[i].off, bytes, ext[i].len);
			bytes += ext[i].len;
		}
		e->nrec = 0;
		e->length = new_len;
		e->version = old ? old->version + 1 : 1;
		e->obj = e->obj_off = 0; /* a new version lives on flash only */
		rec_seal(rec, ino, idx, e);
		rc = commit_record_locked(ds, t, ino, idx, rec, new_len, e, old, sync, !read_back);
	}
	data_buf_free(rec);
	return rc;
}

/* Whether the extents go into old as an overlay: a record of only the blocks they change
 * (touch[b]), the chunk's other blocks staying where they are. It pays when they are under
 * half of the chunk's blocks (a 4 KiB write into a 4 MiB chunk then writes 64 KiB, not
 * 4 MiB, and reads at most the one block it shares), and is kept bounded: at most
 * DATA_RECS_MAX records per chunk, and records of at most twice the chunk's bytes, so a
 * chunk's dead blocks cost bounded space and its reads a bounded number of pieces; past
 * either, the write rewrites the chunk whole, which folds the overlays in. On true, e is
 * the new entry with the overlay as its last record (place and crcs of the touched blocks
 * still to be filled in). */
static bool plan_overlay(const struct data_entry *old, uint32_t new_len, const struct aq_extent *ext, uint32_t n,
			 bool *touch, struct data_entry *e)
{
	uint32_t nb = data_nblocks(new_len), nb_old = data_nblocks(old->length), ntouch = 0;
	if (!old->seg || old->length == 0)
		return false; /* only in S3: a write brings it back whole */
	for (uint32_t b = 0; b < nb; b++) {
		/* Blocks the extents reach, and when the chunk grows every block from the one
		 * the old end is in: a partial last block is rewritten at its new length. */
		touch[b] = b >= old->length / DATA_BLOCK_SIZE && new_len > old->length;
		for (uint32_t i = 0; i < n && !touch[b]; i++)
			touch[b] = ext[i].off < (b + 1) * DATA_BLOCK_SIZE &&
				   ext[i].off + ext[i].len > b * DATA_BLOCK_SIZE;
		ntouch += touch[b];
	}
	if (2 * ntouch >= nb)
		return false;
	/* The old records some untouched block still needs, renumbered in their order. */
	struct data_rec_ref rec[DATA_RECS_MAX];
	uint32_t nrec = data_entry_recs(old, rec), map[DATA_RECS_MAX], kept = 0;
	bool used[DATA_RECS_MAX] = {false};
	for (uint32_t b = 0; b < nb_old; b++)
		if (!touch[b])
			used[old->nrec ? old->brec[b] : 0] = true;
	uint64_t bytes = 0;
	for (uint32_t i = 0; i < nrec; i++) {
		if (!used[i])
			continue;
		map[i] = kept;
		e->rec[kept++] = rec[i];
		bytes += rec[i].length;
	}
	uint32_t olen = 0;
	for (uint32_t b = 0; b < nb; b++)
		olen += touch[b] ? data_block_len(new_len, b) : 0;
	if (kept + 1 > DATA_RECS_MAX || bytes + olen > 2 * (uint64_t)new_len)
		return false;
	e->nrec = kept + 1;
	e->rec[kept] = (struct data_rec_ref){.length = olen};
	e->length = new_len;
	e->version = old->version + 1;
	e->obj = e->obj_off = 0;
	uint32_t pos = 0;
	for (uint32_t b = 0; b < nb; b++) {
		if (touch[b]) {
			e->brec[b] = (uint8_t)kept;
			e->bpos[b] = (uint8_t)pos++;
			continue;
		}
		e->brec[b] = (uint8_t)map[old->nrec ? old->brec[b] : 0];
		e->bpos[b] = old->nrec ? old->bpos[b] : (uint8_t)b;
		e->crc[b] = old->crc[b];
	}
	return true;
}

/* Writes the overlay plan_overlay planned: the touched blocks, old bytes read back only
 * for those the extents cover in part. Caller holds t->lock. */
static int write_overlay_locked(struct data_store *ds, struct data_target *t, uint64_t ino, uint32_t idx,
				const struct aq_extent *ext, uint32_t n, const uint8_t *bytes,
				const struct data_entry *old, const bool *touch, struct data_entry *e, bool sync)
{
	uint32_t olen = e->rec[e->nrec - 1].length, nb = data_nblocks(e->length), nb_old = data_nblocks(old->length);
	uint8_t *rec = data_buf_alloc(data_rec_size(olen)), *data = rec + DATA_REC_HDR_SIZE;
	int rc = 0;
	/* Old blocks the extents cover in part, read in runs (touched blocks lie one after
	 * another in the record). */
	for (uint32_t b = 0; b < nb_old && !rc;) {
		uint32_t b1 = b;
		while (b1 < nb_old && touch[b1] &&
		       !covered(ext, n, b1 * DATA_BLOCK_SIZE, b1 * DATA_BLOCK_SIZE + data_block_len(old->length, b1)))
			b1++;
		if (b1 > b) {
			struct block_range r = {.b0 = b, .b1 = b1, .dst = data + (uint64_t)e->bpos[b] * DATA_BLOCK_SIZE};
			rc = read_blocks(t, ino, idx, old, &r, 1);
		}
		b = b1 + 1;
	}
	for (uint32_t b = 0; b < nb && !rc; b++) {
		if (!touch[b])
			continue;
		uint8_t *dst = data + (uint64_t)e->bpos[b] * DATA_BLOCK_SIZE;
		uint64_t lo = (uint64_t)b * DATA_BLOCK_SIZE;
		uint32_t kept = old->length > lo ? (uint32_t)MIN(old->length - lo, DATA_BLOCK_SIZE) : 0;
		if (kept < data_block_len(e->length, b))
			memset(dst + kept, 0, data_block_len(e->length, b) - kept); /* past the old end */
		put_extents(dst, b, ext, n, bytes);
		e->crc[b] = crc32c(0, dst, data_block_len(e->length, b));
	}
	if (!rc) {
		rec_finish(rec, olen, ino, idx, e->version, DATA_REC_FLAG_OVERLAY);
		rc = commit_record_locked(ds, t, ino, idx, rec, olen, e, old, sync, false);
	}
	data_buf_free(rec);
	return rc;
}

int data_writev(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, const struct aq_extent *ext,
		uint32_t n, const void *bytes, bool sync)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	if (n == 0)
		return 0;
	uint32_t end = 0;
	for (uint32_t i = 0; i < n; i++) {
		if ((uint64_t)ext[i].off + ext[i].len > DATA_CHUNK_MAX || ext[i].len == 0 ||
		    (i > 0 && ext[i].off < ext[i - 1].off + ext[i - 1].len))
			return -EINVAL; /* out of the chunk, empty, unsorted or overlapping */
		end = ext[i].off + ext[i].len;
	}
	AQ_ASSERT(bytes);

	pthread_mutex_lock(&t->lock);
	struct data_entry *old = aq_malloc(sizeof *old), *e = aq_malloc(sizeof *e);
	bool found = false;
	int rc = data_index_get(t, ino, idx, old, &found);
	if (!rc) {
		uint32_t new_len = MAX(found ? old->length : 0, end);
		bool touch[DATA_BLOCKS_MAX];
		if (found && plan_overlay(old, new_len, ext, n, touch, e))
			rc = write_overlay_locked(ds, t, ino, idx, ext, n, bytes, old, touch, e, sync);
		else
			rc = write_whole_locked(ds, t, ino, idx, ext, n, bytes, found ? old : NULL, new_len, e, sync);
	}
	pthread_mutex_unlock(&t->lock);
	free(old);
	free(e);
	return rc;
}

int data_write(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off, const void *buf,
	       uint32_t len, bool sync)
{
	struct aq_extent one = {.off = off, .len = len};
	return data_writev(ds, target, ino, idx, &one, len ? 1 : 0, buf, sync);
}

/* Where a read's bytes go: into buf, or (buf NULL) into memory the read allocates, with
 * head writable bytes before the data (see data_read_alloc). */
struct read_dst {
	void *buf;
	uint32_t head;
	void *mem;
	uint8_t *data;
};

/* The destination for len bytes: buf, or head + len bytes allocated now. */
static uint8_t *dst_bytes(struct read_dst *d, uint32_t len)
{
	if (d->buf)
		return d->buf;
	d->mem = data_buf_alloc((size_t)d->head + len + 1);
	d->data = (uint8_t *)d->mem + d->head;
	return d->data;
}

/* The segment's O_DIRECT descriptor (for reads, and big appends to the active segment),
 * opened on first use; -1 when it cannot be (a file system without O_DIRECT, or a
 * segment compaction just unlinked). */
static int seg_dfd(struct data_target *t, struct data_seg *s)
{
	int fd = __atomic_load_n(&s->dfd, __ATOMIC_ACQUIRE);
	if (fd != DATA_DFD_UNOPENED)
		return fd;
	char path[PATH_MAX];
	seg_path(t, s->no, path, sizeof path);
	int nfd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (nfd < 0) {
		log_debug("target %u: O_DIRECT open of %s: %s; buffered I/O", t->id, path, strerror(errno));
		nfd = -1;
	}
	int expect = DATA_DFD_UNOPENED;
	if (!__atomic_compare_exchange_n(&s->dfd, &expect, nfd, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		if (nfd >= 0)
			close(nfd);
		return expect;
	}
	return nfd;
}

/* The blocks a read of bytes [off, end) of a chunk touches: [b0, b1), which are the
 * chunk's bytes [start, start + len). */
struct block_span {
	uint32_t b0, b1;
	uint64_t start, len;
};

/* Reads data bytes [off, end) of entry e (blocks sp, len bytes asked for) with O_DIRECT:
 * the aligned span of the record goes straight from the disk into an aligned buffer,
 * with no page cache in between (no copy out of it, no pages to fill and reclaim, no
 * read-ahead past the record). Returns -EAGAIN where O_DIRECT cannot be used, so that
 * the caller reads buffered. Caller holds seg_lock shared. */
static int read_direct(struct data_store *ds, struct data_target *t, struct data_seg *s, uint64_t ino,
		       uint32_t idx, const struct data_entry *e, const struct block_span *sp, uint32_t off,
		       uint32_t end, uint32_t len, struct read_dst *d)
{
	int dfd = seg_dfd(t, s);
	if (dfd < 0)
		return -EAGAIN;
	/* The record starts aligned and its header is 64 bytes: reading from the aligned
	 * offset below the span's first data byte puts the data at skip in the buffer. */
	uint64_t foff = e->off + sp->start;
	uint64_t fend = data_round_up(e->off + DATA_REC_HDR_SIZE + sp->start + sp->len, DATA_REC_ALIGN);
	size_t skip = DATA_REC_HDR_SIZE + (off - sp->start);
	AQ_ASSERT(d->buf || d->head <= DATA_REC_HDR_SIZE);
	size_t size = data_round_up(MAX(fend - foff, skip + len), DATA_REC_ALIGN);
	uint8_t *abuf = data_buf_alloc(size);
	struct data_io io = {.fd = dfd, .buf = abuf, .len = fend - foff, .off = foff};
	int rc = data_io_read(&io, 1);
	if (rc == -EINVAL) {
		/* the file system takes the flag at open but not these reads: never again */
		if (__atomic_exchange_n(&ds->direct_min, UINT32_MAX, __ATOMIC_RELAXED) != UINT32_MAX)
			log_warn("target %u: O_DIRECT reads fail with EINVAL; reads stay buffered", t->id);
		data_buf_free(abuf);
		return -EAGAIN;
	}
	if (rc) {
		log_error("target %u: ino %llx idx %u: read seg %u: %s", t->id, (unsigned long long)ino, idx,
			  e->seg, strerror(-rc));
		data_buf_free(abuf);
		return rc;
	}
	rc = check_blocks(t, ino, idx, e, sp->b0, sp->b1, abuf + DATA_REC_HDR_SIZE);
	if (rc) {
		data_buf_free(abuf);
		return rc;
	}
	memset(abuf + skip + (end - off), 0, off + len - end);
	__atomic_fetch_add(&t->direct_reads, 1, __ATOMIC_RELAXED);
	if (d->buf) {
		memcpy(d->buf, abuf + skip, len);
		data_buf_free(abuf);
	} else {
		d->mem = abuf;
		d->data = abuf + skip;
	}
	return 0;
}

static int read_chunk_range(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off,
			    uint32_t len, struct read_dst *d)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	if ((uint64_t)off + len > DATA_CHUNK_MAX)
		return -EINVAL;
	if (len == 0) {
		dst_bytes(d, 0);
		return 0;
	}
	struct data_entry *e = aq_malloc(sizeof *e);
	uint8_t *bounce = NULL;
	bool found = false, recalled = false;
	int rc;

again:
	/* Shared from the lookup to the end of the I/O: compaction cannot unlink the
	 * segment the entry points to in between. */
	pthread_rwlock_rdlock(&t->seg_lock);
	rc = data_index_get(t, ino, idx, e, &found);
	if (rc)
		goto out;
	if (found && e->seg == 0 && !recalled && off < e->length) {
		/* Cold: bring the whole chunk back to flash, then read it from there. With
		 * no room on flash, read the blocks straight from S3 instead. */
		pthread_rwlock_unlock(&t->seg_lock);
		recalled = true;
		rc = tier_recall_chunk(t, ino, idx);
		if (rc == 0 || rc == -ENOSPC)
			goto again;
		free(e);
		return rc;
	}
	uint32_t end = found ? MIN(off + len, e->length) : 0;
	if (off >= end) {
		memset(dst_bytes(d, len), 0, len);
		goto out;
	}
	struct block_span sp = {.b0 = off / DATA_BLOCK_SIZE, .b1 = data_nblocks(end)};
	sp.start = (uint64_t)sp.b0 * DATA_BLOCK_SIZE;
	sp.len = MIN((uint64_t)sp.b1 * DATA_BLOCK_SIZE, e->length) - sp.start;
	/* O_DIRECT for a span of direct_min (64 KiB) or more not in the page cache: measured
	 * here, into huge-page buffers (buf.c), 110 KB images through FUSE with 4 loaders,
	 * one read at a time per loader: 3.8-4.4k samples/s buffered, 5.4-5.5k direct; native,
	 * 256 reads in flight: 6.0-6.6k buffered, 9.8-11.8k direct; 1 MiB reads gain at any
	 * depth (fio, depth 1: 370 MB/s buffered, 2.3 GB/s direct). What stays buffered is a
	 * small read, which the page cache's read-ahead serves as well as the disk. */
	uint32_t direct_min = __atomic_load_n(&ds->direct_min, __ATOMIC_RELAXED);
	if (e->seg != 0 && e->nrec == 0 && sp.len >= direct_min) {
		struct data_seg *s = entry_seg(t, ino, idx, e);
		if (!s) {
			rc = -EIO;
			goto out;
		}
		if (!fd_range_cached(s->fd, e->off + DATA_REC_HDR_SIZE + sp.start, sp.len)) {
			rc = read_direct(ds, t, s, ino, idx, e, &sp, off, end, len, d);
			if (rc != -EAGAIN)
				goto out;
		}
	}
	uint8_t *out = dst_bytes(d, len);
	/* Straight into the destination when the blocks fit it exactly. */
	bool in_place = sp.start == off && sp.len <= len;
	uint8_t *dst = in_place ? out : (bounce = aq_malloc(sp.len));
	struct block_range r = {.b0 = sp.b0, .b1 = sp.b1, .dst = dst};
	rc = read_blocks(t, ino, idx, e, &r, 1);
	if (rc)
		goto out;
	if (!in_place)
		memcpy(out, bounce + (off - sp.start), end - off);
	memset(out + (end - off), 0, off + len - end);
out:
	pthread_rwlock_unlock(&t->seg_lock);
	free(bounce);
	free(e);
	if (rc && !d->buf) {
		data_buf_free(d->mem);
		d->mem = NULL;
		d->data = NULL;
	}
	return rc;
}

int data_locate(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t end,
		struct data_loc *loc)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	if (end > DATA_CHUNK_MAX)
		return -EINVAL;
	struct data_entry *e = aq_malloc(sizeof *e);
	bool found = false;
	pthread_rwlock_rdlock(&t->seg_lock);
	int rc = data_index_get(t, ino, idx, e, &found);
	if (!rc && found && end == 0)
		end = e->length;
	if (!rc && found && e->nrec) {
		/* in several records: read through aqd now, and from one record once folded */
		pthread_mutex_lock(&t->fold_mu);
		uint32_t i = 0;
		while (i < t->nfold && (t->fold[i].ino != ino || t->fold[i].idx != idx))
			i++;
		if (i == t->nfold && t->nfold < DATA_FOLD_QUEUE)
			t->fold[t->nfold++] = (struct data_chunk_id){.ino = ino, .idx = idx, .version = e->version,
								     .at_ns = aq_mono_ns()};
		else if (i < t->nfold && t->fold[i].version != e->version)
			t->fold[i].version = e->version, t->fold[i].at_ns = aq_mono_ns(); /* written since */
		pthread_mutex_unlock(&t->fold_mu);
	}
	if (!rc && (!found || e->seg == 0 || e->nrec || end == 0 || end > e->length))
		rc = -EAGAIN; /* a map (overlays) too: its blocks are in several records */
	struct data_seg *s = rc ? NULL : entry_seg(t, ino, idx, e);
	if (!rc && !s)
		rc = -EIO;
	if (!rc) {
		seg_path(t, s->no, loc->path, sizeof loc->path);
		loc->rec_off = e->off;
		loc->version = e->version;
		loc->length = e->length;
		loc->nblk = data_nblocks(end);
		memcpy(loc->crc, e->crc, loc->nblk * sizeof loc->crc[0]);
	}
	pthread_rwlock_unlock(&t->seg_lock);
	free(e);
	return rc;
}

int data_read(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off, void *buf,
	      uint32_t len)
{
	struct read_dst d = {.buf = buf};
	return read_chunk_range(ds, target, ino, idx, off, len, &d);
}

int data_read_alloc(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint32_t off,
		    uint32_t len, uint32_t head, void **mem, uint8_t **data)
{
	AQ_ASSERT(head <= DATA_REC_HDR_SIZE);
	struct read_dst d = {.head = head};
	int rc = read_chunk_range(ds, target, ino, idx, off, len, &d);
	if (rc)
		return rc;
	*mem = d.mem;
	*data = d.data;
	return 0;
}

/* Drops every chunk of ino from chunk cut_idx up to (not including) end_idx; with
 * cut_off > 0 chunk cut_idx keeps its first cut_off bytes instead (rewritten shortened, so
 * that extending it again reads zeros). One RocksDB batch, so the cut is all or nothing;
 * with sync a synced one, after which the dropped records are punched at once. */
static int drop_range(struct data_store *ds, struct data_target *t, uint64_t ino, uint32_t cut_idx, uint32_t cut_off,
		      uint32_t end_idx, bool sync)
{
	uint8_t start[DATA_KEY_SIZE];
	data_key(start, ino, cut_idx);
	/* the records of the chunks dropped or cut, and their S3 copies' bytes */
	struct dead { struct data_rec_ref r; uint64_t obj; uint32_t obj_len; } *dead = NULL;
	size_t ndead = 0, dead_cap = 0, nchunks = 0;
	struct data_entry *e = aq_malloc(sizeof *e), *ne = NULL;
	uint8_t *rec = NULL;
	int rc = 0;

	pthread_mutex_lock(&t->lock);
	rocksdb_writebatch_t *batch = rocksdb_writebatch_create();
	rocksdb_iterator_t *it = rocksdb_create_iterator(t->db, t->ropt);
	for (rocksdb_iter_seek(it, (const char *)start, sizeof start); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *key = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen != DATA_KEY_SIZE || memcmp(key, start, 9) != 0)
			break;
		uint32_t idx = get_be32(key + 9);
		if (idx >= end_idx)
			break;
		const uint8_t *val = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		rc = data_val_decode(val, vlen, e);
		if (rc) {
			log_error("target %u: malformed index entry for ino %llx idx %u", t->id,
				  (unsigned long long)ino, idx);
			goto out;
		}
		if (idx == cut_idx && cut_off > 0) {
			if (e->length <= cut_off)
				continue;
			ne = aq_malloc(sizeof *ne);
			/* Room for the whole last block: it is read (and checked) whole. */
			rec = data_buf_alloc(data_rec_size(MIN(data_nblocks(cut_off) * DATA_BLOCK_SIZE, e->length)));
			struct block_range r = {.b0 = 0, .b1 = data_nblocks(cut_off), .dst = rec + DATA_REC_HDR_SIZE};
			rc = read_blocks(t, ino, idx, e, &r, 1);
			if (rc)
				goto out;
			ne->nrec = 0;
			ne->length = cut_off;
			ne->version = e->version + 1;
			ne->obj = ne->obj_off = 0;
			rec_seal(rec, ino, idx, ne);
			/* A truncate frees space: let it use the reserve on a full target. */
			rc = data_append_locked(ds, t, rec, data_rec_size(cut_off), true, false, &ne->seg, &ne->off);
			if (rc)
				goto out;
			uint8_t v[DATA_VAL_MAX];
			size_t n = data_val_encode(v, ne);
			rocksdb_writebatch_put(batch, (const char *)key, klen, (const char *)v, n);
		} else {
			rocksdb_writebatch_delete(batch, (const char *)key, klen);
		}
		struct data_rec_ref r[DATA_RECS_MAX];
		uint32_t nr = data_entry_recs(e, r);
		if (ndead + nr + 1 > dead_cap) {
			dead_cap = 2 * dead_cap + DATA_RECS_MAX + 1;
			dead = aq_realloc(dead, dead_cap * sizeof *dead);
		}
		for (uint32_t i = 0; i < nr; i++)
			dead[ndead++] = (struct dead){.r = r[i]};
		if (e->obj)
			dead[ndead++] = (struct dead){.obj = e->obj, .obj_len = e->length};
		nchunks++;
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	if (!err && nchunks)
		rocksdb_write(t->db, sync ? t->wopt_sync : t->wopt, batch, &err);
	if (err) {
		log_error("target %u: truncate ino %llx: %s", t->id, (unsigned long long)ino, err);
		rocksdb_free(err);
		rc = -EIO;
		goto out; /* a shortened record already appended is dead space, not counted live */
	}
	for (size_t i = 0; i < ndead; i++) {
		data_drop_record_locked(t, dead[i].r.seg, dead[i].r.off, dead[i].r.length);
		if (dead[i].obj)
			tier_unref_locked(t, dead[i].obj, dead[i].obj_len);
	}
	t->chunks -= nchunks;
	if (ne) {
		data_seg_find(t, ne->seg)->live += data_rec_size(ne->length);
		t->chunks++;
	}
	if (sync)
		data_punch_queued_locked(t);
out:
	rocksdb_iter_destroy(it);
	rocksdb_writebatch_destroy(batch);
	pthread_mutex_unlock(&t->lock);
	free(dead);
	data_buf_free(rec);
	free(ne);
	free(e);
	return rc;
}

static uint64_t taken(uint32_t length) { return ((uint64_t)length + 4095) / 4096 * 4096; }

int data_chunk_bytes(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx, uint64_t *bytes)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	struct data_entry *e = aq_malloc(sizeof *e);
	bool found = false;
	int rc = data_index_get(t, ino, idx, e, &found);
	*bytes = !rc && found ? taken(e->length) : 0;
	free(e);
	return rc;
}

int data_chunks(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t from, uint32_t max, uint32_t *idx,
		uint32_t *len)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	uint8_t start[DATA_KEY_SIZE];
	data_key(start, ino, from);
	struct data_entry *e = aq_malloc(sizeof *e);
	rocksdb_iterator_t *it = rocksdb_create_iterator(t->db, t->ropt);
	int rc = 0;
	uint32_t n = 0;
	for (rocksdb_iter_seek(it, (const char *)start, sizeof start); rocksdb_iter_valid(it) && !rc && n < max;
	     rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const uint8_t *key = (const uint8_t *)rocksdb_iter_key(it, &klen);
		if (klen != DATA_KEY_SIZE || memcmp(key, start, 9) != 0)
			break;
		const uint8_t *val = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		if ((rc = data_val_decode(val, vlen, e)))
			break;
		idx[n] = get_be32(key + 9);
		len[n++] = e->length;
	}
	char *err = NULL;
	rocksdb_iter_get_error(it, &err);
	if (err) {
		log_error("target %u: index scan of ino %llx: %s", t->id, (unsigned long long)ino, err);
		rocksdb_free(err);
		rc = -EIO;
	}
	rocksdb_iter_destroy(it);
	free(e);
	return rc ? rc : (int)n;
}

int data_inode_bytes(struct data_store *ds, uint32_t target, uint64_t ino, uint64_t *bytes)
{
	enum { STEP = 256 };
	uint32_t idx[STEP], len[STEP], from = 0;
	int n;
	*bytes = 0;
	while ((n = data_chunks(ds, target, ino, from, STEP, idx, len)) > 0) {
		for (int i = 0; i < n; i++)
			*bytes += taken(len[i]);
		if (n < STEP || idx[n - 1] == UINT32_MAX)
			break;
		from = idx[n - 1] + 1;
	}
	return n < 0 ? n : 0;
}

int data_truncate(struct data_store *ds, uint32_t target, uint64_t ino, uint64_t new_size, uint32_t chunk_size)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	if (chunk_size == 0 || chunk_size > DATA_CHUNK_MAX)
		return -EINVAL;
	uint64_t cut_idx = new_size / chunk_size;
	if (cut_idx > UINT32_MAX)
		return 0; /* every chunk index is below the cut */
	return drop_range(ds, t, ino, (uint32_t)cut_idx, (uint32_t)(new_size % chunk_size), UINT32_MAX, false);
}

int data_punch(struct data_store *ds, uint32_t target, uint64_t ino, uint32_t idx)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	if (idx == UINT32_MAX)
		return -EINVAL;
	/* fallocate's PUNCH_HOLE asks for the space back: synced, so it comes back at once, as
	 * ext4 gives it */
	return drop_range(ds, t, ino, idx, 0, idx + 1, true);
}

int data_delete(struct data_store *ds, uint32_t target, uint64_t ino)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	int rc = drop_range(ds, t, ino, 0, 0, UINT32_MAX, false);
	if (!rc)
		data_kick_compactor(ds);
	return rc;
}

int data_sync(struct data_store *ds, uint32_t target, int (*overlap)(void *), void *arg, bool *ran)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	pthread_mutex_lock(&t->lock);
	int rc = sync_locked(t, overlap, arg, ran);
	pthread_mutex_unlock(&t->lock);
	return rc;
}

bool data_unsynced(struct data_store *ds, uint32_t target)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return false;
	pthread_mutex_lock(&t->lock);
	bool dirty = t->appends != t->synced_appends || rocksdb_get_latest_sequence_number(t->db) != t->synced_seq;
	pthread_mutex_unlock(&t->lock);
	return dirty;
}

int data_stat(struct data_store *ds, uint32_t target, struct data_target_stat *out)
{
	struct data_target *t = data_target_get(ds, target);
	if (!t)
		return -AQ_ENOT_OWNER;
	memset(out, 0, sizeof *out);
	out->target = target;
	uint64_t fs_size = 0, fs_avail = 0;
	int rc = fs_space(t, false, &fs_size, &fs_avail);
	if (rc)
		return rc;
	/* The segment table under seg_lock (it changes under both locks), not t->lock, which
	 * an fsync holds through its fdatasync: a statfs waited behind each (250 us median
	 * under dbench). The counts are read as they are, as a statfs of ext4 reads its own. */
	pthread_rwlock_rdlock(&t->seg_lock);
	out->used_bytes = used_bytes(t);
	for (uint32_t i = 0; i < t->nsegs; i++)
		out->live_bytes += __atomic_load_n(&t->segs[i].live, __ATOMIC_RELAXED);
	out->segments = t->nsegs;
	pthread_rwlock_unlock(&t->seg_lock);
	out->chunks = __atomic_load_n(&t->chunks, __ATOMIC_RELAXED);
	out->direct_reads = __atomic_load_n(&t->direct_reads, __ATOMIC_RELAXED);
	out->direct_writes = __atomic_load_n(&t->direct_writes, __ATOMIC_RELAXED);
	out->syncs = __atomic_load_n(&t->syncs, __ATOMIC_RELAXED);
	out->folds = __atomic_load_n(&t->folds, __ATOMIC_RELAXED);
	if (t->capacity_bytes) {
		out->capacity_bytes = t->capacity_bytes;
		uint64_t left = t->capacity_bytes > out->used_bytes ? t->capacity_bytes - out->used_bytes : 0;
		out->free_bytes = MIN(left, fs_avail);
	} else {
		out->capacity_bytes = fs_size;
		out->free_bytes = fs_avail;
		out->fs_shared_capacity = true;
	}
	struct stat st;
	if (stat(t->dir, &st) == 0)
		out->fs_id = (uint64_t)st.st_dev;
	return 0;
}

/* Finds the segment files, opens the index and rebuilds the per-segment accounting from
 * it. The index is the truth: the active segment's end is past its last byte on disk and
 * past every record the index points to, so no append can overwrite a live record. */
static int target_open(struct data_target *t, bool create)
{
	char path[PATH_MAX];
	int rc = 0;
	DIR *d = opendir(t->dir);
	if (!d)
		return -errno;
	struct dirent *de;
	while ((de = readdir(d))) {
		unsigned no;
		char tail;
		if (strlen(de->d_name) != 12 || sscanf(de->d_name, "seg-%8u%c", &no, &tail) != 1 || no == 0)
			continue;
		seg_path(t, no, path, sizeof path);
		int fd = open(path, O_RDWR | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st)) {
			rc = -errno;
			log_error("target %u: open %s: %s", t->id, path, strerror(-rc));
			if (fd >= 0)
				close(fd);
			break;
		}
		/* A record cut short by a crash leaves a ragged end: the next append starts
		 * at the next aligned offset. */
		struct data_seg s = {.no = no, .fd = fd, .dfd = DATA_DFD_UNOPENED, .total = data_round_up((uint64_t)st.st_size, DATA_REC_ALIGN)};
		seg_insert(t, &s);
	}
	closedir(d);
	if (rc)
		return rc;

	snprintf(path, sizeof path, "%s/index", t->dir);
	char *err = NULL;
	/* The index is small and shares its disk with the segments: no preallocated WAL or
	 * manifest (RocksDB would otherwise reserve about 70 MiB per target up front, and a
	 * full disk would fail the index before the data). */
	rocksdb_get_options_from_string(t->dbopt, "allow_fallocate=false;write_buffer_size=8388608;"
				       "manifest_preallocation_size=65536", t->dbopt, &err);
	if (err) {
		log_warn("target %u: index options: %s", t->id, err);
		rocksdb_free(err);
		err = NULL;
	}
	rocksdb_options_set_block_based_table_factory(t->dbopt, t->ds->index_topts);
	rocksdb_options_set_create_if_missing(t->dbopt, create);
	t->db = rocksdb_open(t->dbopt, path, &err);
	if (err) {
		log_error("target %u: open index %s: %s", t->id, path, err);
		rc = strstr(err, "does not exist") ? -ENOENT : -EIO;
		rocksdb_free(err);
		t->db = NULL;
		return rc;
	}
	if (t->nsegs == 0) {
		rc = seg_create(t, 1);
		if (rc)
			return rc;
	}

	rc = tier_open_target(t); /* the object table, before the scan counts its live bytes */
	if (rc)
		return rc;
	struct data_entry *e = aq_malloc(sizeof *e);
	uint64_t lost = 0;
	rocksdb_iterator_t *it = rocksdb_create_iterator(t->db, t->ropt);
	for (rocksdb_iter_seek(it, "C", 1); rocksdb_iter_valid(it); rocksdb_iter_next(it)) {
		size_t klen, vlen;
		const char *key = rocksdb_iter_key(it, &klen);
		if (klen == 0 || key[0] != 'C')
			break;
		const uint8_t *val = (const uint8_t *)rocksdb_iter_value(it, &vlen);
		struct data_seg *s = NULL;
		if (klen != DATA_KEY_SIZE || data_val_decode(val, vlen, e) || (e->seg && !(s = data_seg_find(t, e->seg)))) {
			lost++; /* reads of it say -EIO; a scrub or fsck repairs it */
			continue;
		}
		t->chunks++;
		if (e->obj)
			tier_count_live(t, get_be64((const uint8_t *)key + 1), get_be32((const uint8_t *)key + 9), e);
		struct data_rec_ref r[DATA_RECS_MAX];
		for (uint32_t i = 0, nr = data_entry_recs(e, r); i < nr; i++) {
			s = data_seg_find(t, r[i].seg);
			if (!s) {
				lost++;
				continue;
			}
			uint64_t rec_size = data_rec_size(r[i].length);
			s->live += rec_size;
			s->total = MAX(s->total, r[i].off + rec_size);
		}
	}
	rocksdb_iter_get_error(it, &err);
	rocksdb_iter_destroy(it);
	free(e);
	if (err) {
		log_error("target %u: scan index: %s", t->id, err);
		rocksdb_free(err);
		return -EIO;
	}
	if (lost)
		log_error("target %u: %llu index entries are malformed or point to missing segments", t->id,
			  (unsigned long long)lost);
	tier_note_dead(t);
	t->active_end = seg_active(t)->total;
	for (uint32_t i = 0; i < t->nsegs; i++) {
		struct data_seg *s = &t->segs[i];
		AQ_ASSERT(s->live <= s->total);
		struct stat st;
		/* holes punched before the restart: what the file no longer occupies */
		if (fstat(s->fd, &st) == 0 && (uint64_t)st.st_blocks * 512 < s->total)
			s->punched = s->total - (uint64_t)st.st_blocks * 512;
	}
	return 0;
}

static void target_close(struct data_target *t)
{
	if (t->db && t->ndead) {
		pthread_mutex_lock(&t->lock);
		data_sync_locked(t); /* and the queued punches */
		pthread_mutex_unlock(&t->lock);
	}
	free(t->dead);
	if (t->db)
		rocksdb_close(t->db);
	for (uint32_t i = 0; i < t->nsegs; i++)
		data_seg_close(&t->segs[i]);
	free(t->segs);
	free(t->objs);
	if (t->dbopt)
		rocksdb_options_destroy(t->dbopt);
	if (t->wopt)
		rocksdb_writeoptions_destroy(t->wopt);
	if (t->wopt_sync)
		rocksdb_writeoptions_destroy(t->wopt_sync);
	if (t->ropt)
		rocksdb_readoptions_destroy(t->ropt);
	pthread_mutex_destroy(&t->lock);
	pthread_mutex_destroy(&t->compact_lock);
	pthread_mutex_destroy(&t->fold_mu);
	pthread_rwlock_destroy(&t->seg_lock);
	free(t->dir);
}

static int mkdir_ok(const char *path)
{
	return mkdir(path, 0755) == 0 || errno == EEXIST ? 0 : -errno;
}

int data_open(const char *dir, bool create, const struct data_options *opt, struct data_store **out)
{
	if (!dir || !opt || opt->ntargets == 0 || opt->ntargets > AQ_TARGETS_MAX || !opt->target_ids)
		return -EINVAL;
	for (uint32_t i = 0; i < opt->ntargets; i++)
		for (uint32_t j = 0; j < i; j++)
			if (opt->target_ids[i] == opt->target_ids[j])
				return -EINVAL;
	uint64_t segment_bytes = opt->segment_bytes ? opt->segment_bytes : DATA_SEGMENT_SIZE;
	if (segment_bytes % DATA_REC_ALIGN || segment_bytes < data_rec_size(DATA_CHUNK_MAX))
		return -EINVAL;
	int rc = 0;
	if (create && (rc = mkdir_ok(dir)))
		return rc;

	struct data_store *ds = aq_calloc(1, sizeof *ds);
	ds->direct_min = opt->direct_min ? opt->direct_min : DATA_DIRECT_MIN_DEFAULT;
	/* Every chunk read starts with an index lookup. RocksDB's default, an 8 MiB block
	 * cache per index and no filter, kept a few tens of thousands of entries: past that
	 * each read took the index block from the OS page cache, and with the page cache
	 * dropped, from the disk, before the data. One cache for all targets (index entries
	 * are ~60 bytes: 256 MiB holds millions), bloom filters, hashed keys in blocks. */
	ds->index_cache = rocksdb_cache_create_lru(DATA_INDEX_CACHE_BYTES);
	ds->index_topts = rocksdb_block_based_options_create();
	rocksdb_block_based_options_set_block_cache(ds->index_topts, ds->index_cache);
	rocksdb_block_based_options_set_filter_policy(ds->index_topts, rocksdb_filterpolicy_create_bloom(10));
	rocksdb_block_based_options_set_data_block_index_type(
		ds->index_topts, rocksdb_block_based_table_data_block_index_type_binary_search_and_hash);
	ds->targets = aq_calloc(opt->ntargets, sizeof *ds->targets);
	pthread_mutex_init(&ds->bg_lock, NULL);
	pthread_cond_init(&ds->bg_cond, NULL);
	pthread_rwlock_init(&ds->tier_lock, NULL);
	pthread_rwlockattr_t rwa;
	pthread_rwlockattr_init(&rwa);
	/* Compaction must get its turn to unlink a segment under a steady stream of reads. */
	pthread_rwlockattr_setkind_np(&rwa, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (uint32_t i = 0; i < opt->ntargets; i++) {
		struct data_target *t = &ds->targets[i];
		char path[PATH_MAX];
		snprintf(path, sizeof path, "%s/t%u", dir, i);
		t->ds = ds;
		t->id = opt->target_ids[i];
		t->dir = aq_strdup(path);
		t->capacity_bytes = opt->capacity_bytes;
		t->segment_bytes = segment_bytes;
		pthread_mutex_init(&t->lock, NULL);
		pthread_mutex_init(&t->fold_mu, NULL);
		pthread_mutex_init(&t->compact_lock, NULL);
		pthread_rwlock_init(&t->seg_lock, &rwa);
		t->dbopt = rocksdb_options_create();
		t->wopt = rocksdb_writeoptions_create();
		t->wopt_sync = rocksdb_writeoptions_create();
		rocksdb_writeoptions_set_sync(t->wopt_sync, 1);
		t->ropt = rocksdb_readoptions_create();
		ds->ntargets = i + 1;
		struct stat st;
		if (create)
			rc = mkdir_ok(path);
		else if (stat(path, &st))
			rc = -errno;
		if (!rc)
			rc = target_open(t, create);
		if (rc) {
			log_error("open target %u at %s: %s", t->id, path, strerror(-rc));
			break;
		}
	}
	pthread_rwlockattr_destroy(&rwa);
	if (!rc)
		rc = data_compactor_start(ds);
	if (rc) {
		data_close(ds);
		return rc;
	}
	*out = ds;
	return 0;
}

void data_close(struct data_store *ds)
{
	if (!ds)
		return;
	data_compactor_stop(ds);
	for (uint32_t i = 0; i < ds->ntargets; i++)
		target_close(&ds->targets[i]);
	free(ds->targets);
	rocksdb_block_based_options_destroy(ds->index_topts);
	rocksdb_cache_destroy(ds->index_cache);
	pthread_mutex_destroy(&ds->bg_lock);
	pthread_cond_destroy(&ds->bg_cond);
	pthread_rwlock_destroy(&ds->tier_lock);
	free(ds);
}

/*
 * ra.c - read-ahead for sequential readers of one open file (aq_pread). After
 * RA_MIN_SEQ reads that each start where the last ended, the file keeps a window of
 * RA_WINDOW bytes in flight ahead of the reader: its CHUNK_READs leave at once, and once
 * the reader is half way through a window, the next one is asked for. Reads of a window
 * are served from its buffer; anything else (a seek, a big read, a failed window) goes
 * the direct way. A write or truncate through this client drops the windows (the inode's
 * wgen), so a reader always sees its own writes; so does a push saying another client
 * changed the inode, on a client that watches (the mount). One that does not sees other
 * clients' writes at the next open, as with the page cache (close-to-open).
 */
#include "client/client_internal.h"

#define RA_MIN_SEQ 2
#define RA_WINDOW (4u << 20)

static void win_drop(struct ra_win *w)
{
	for (uint32_t i = 0; i < w->ncalls; i++) {
		if (w->calls[i]) {
			rpc_wait(w->calls[i]); /* the receiver writes into buf: wait before reuse */
			rpc_free(w->calls[i]);
		}
	}
	free(w->calls);
	w->calls = NULL;
	w->ncalls = 0;
	w->len = 0;
	w->err = 0;
}

/* Asks for [off, off + len) (len <= RA_WINDOW, inside the file): one CHUNK_READ per chunk
 * piece, straight into the window's buffer. */
static void win_start(struct aq_file *f, struct ra_win *w, uint64_t off, uint32_t len, uint32_t cs)
{
	if (!w->buf)
		w->buf = aq_malloc(RA_WINDOW);
	uint32_t n = (uint32_t)((off + len - 1) / cs - off / cs + 1);
	w->calls = aq_calloc(n, sizeof *w->calls);
	w->ncalls = n;
	w->off = off;
	w->len = len;
	w->err = 0;
	uint32_t pos = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint64_t at = off + pos;
		uint32_t k = (uint32_t)MIN((uint64_t)(cs - at % cs), (uint64_t)(len - pos));
		int e = 0;
		w->calls[i] = chunk_read_start(f->c, f->ino, cs, at, k, w->buf + pos, NULL, NULL, &e);
		if (!w->calls[i] && !w->err)
			w->err = e;
		pos += k;
	}
}

/* Waits for every piece of a window; 0 or the first error. */
static int win_wait(struct ra_win *w)
{
	for (uint32_t i = 0; i < w->ncalls; i++) {
		struct rpc_call *call = w->calls[i];
		if (!call)
			continue;
		int e = rpc_wait(call);
		if (!e)
			e = rpc_read_into(call);
		if (e && !w->err)
			w->err = e;
		rpc_free(call);
		w->calls[i] = NULL;
	}
	return w->err;
}

static bool win_covers(const struct ra_win *w, uint64_t off)
{
	return w->len && off >= w->off && off < w->off + w->len;
}

static bool ra_disabled(void)
{
	static int off = -1; /* $AQ_NO_READAHEAD turns it off, for comparisons */
	if (off < 0)
		off = getenv("AQ_NO_READAHEAD") != NULL;
	return off;
}

ssize_t ra_read(struct aq_file *f, void *buf, size_t len, uint64_t off, uint64_t size, uint32_t cs)
{
	if (len == 0 || len >= RA_WINDOW / 2 || ra_disabled())
		return RA_PASS; /* a big read is its own read-ahead */
	pthread_mutex_lock(&f->ra_mu);
	unsigned long wgen = atomic_load(&f->st->wgen);
	if (wgen != f->ra_wgen) {
		win_drop(&f->ra[0]);
		win_drop(&f->ra[1]);
		f->ra_wgen = wgen;
	}
	bool seq = off == f->ra_expect;
	f->ra_seq = seq ? f->ra_seq + 1 : 0;
	f->ra_expect = off + len;
	if (f->ra_seq < RA_MIN_SEQ) {
		if (!seq) {
			win_drop(&f->ra[0]);
			win_drop(&f->ra[1]);
		}
		pthread_mutex_unlock(&f->ra_mu);
		return RA_PASS;
	}
	struct ra_win *cur = &f->ra[0], *next = &f->ra[1];
	if (!win_covers(cur, off) && win_covers(next, off)) {
		struct ra_win t = *cur; /* the reader moved on: next becomes current */
		*cur = *next;
		*next = t;
		win_drop(next);
	}
	if (!win_covers(cur, off)) {
		win_drop(cur);
		win_drop(next);
		win_start(f, cur, off, (uint32_t)MIN((uint64_t)RA_WINDOW, size - off), cs);
	}
	uint64_t cur_end = cur->off + cur->len;
	if (!next->len && cur_end < size && off + len > cur->off + cur->len / 2)
		win_start(f, next, cur_end, (uint32_t)MIN((uint64_t)RA_WINDOW, size - cur_end), cs);
	ssize_t rc = (ssize_t)len;
	size_t done = 0;
	for (int k = 0; k < 2 && done < len; k++) {
		struct ra_win *w = k ? next : cur;
		uint64_t at = off + done;
		if (!win_covers(w, at) || win_wait(w)) {
			rc = RA_PASS;
			break;
		}
		size_t n = (size_t)MIN((uint64_t)(len - done), w->off + w->len - at);
		memcpy((uint8_t *)buf + done, w->buf + (at - w->off), n);
		done += n;
	}
	if (rc == RA_PASS || done < len) {
		win_drop(cur);
		win_drop(next);
		f->ra_seq = 0;
		rc = RA_PASS;
	}
	pthread_mutex_unlock(&f->ra_mu);
	return rc;
}

void ra_free(struct aq_file *f)
{
	for (int k = 0; k < 2; k++) {
		win_drop(&f->ra[k]);
		free(f->ra[k].buf);
	}
}

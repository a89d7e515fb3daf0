/*
 * FUSE over io_uring (Linux 6.14): the kernel hands requests to the mount through ring
 * entries instead of read(2) on /dev/fuse, and takes each reply with the fetch of the
 * next request in one io_uring_enter, where a read and a writev were two system calls.
 * The kernel keeps one queue per possible CPU and gives a request to an entry of the
 * queue of the CPU its caller runs on; every queue needs an entry before any is used.
 *
 * libfuse 3.14 does not speak it, so the mount drives it beside libfuse: the INIT reply
 * gets FUSE_OVER_IO_URING (devio.c), and the mount's --threads threads (at least 2 per
 * queue), each with an io_uring and an entry of its own, register their entries. Each
 * thread runs on its queue's CPU (pin_to_queue), the CPU its requests' callers ran on.
 * A thread takes a request from its entry, lays it out as read(2) would have given it
 * and hands it to libfuse (fuse_session_process_buf); the handler's reply, from this
 * thread or any other (an answer that came later), reaches devio's writev hook, which
 * gives it to uring_reply when it answers a ring request. FORGETs and INTERRUPTs still come through /dev/fuse,
 * as do requests sent before every queue had an entry, and notifications go out there.
 *
 * An entry holds its request until the reply, so a request answered later (a lock wait,
 * which may last for ever) parks its entry and its thread registers a new one; the
 * answer, given by another thread, wakes the entry's thread (an eventfd read in its
 * ring), which commits it, so the kernel's next request for that entry is delivered on
 * the thread that serves it. Entries are never unregistered (the kernel has no way), so
 * the pool keeps the most that were ever parked at once, up to URING_ENTS_MAX.
 *
 * A ring entry is two buffers the kernel writes into: a header (the request's header
 * and its first argument, up to 128 bytes) and a payload (the other arguments, up to
 * max_write). The payload buffer sits REQ_SLACK bytes into its mapping, so the header
 * and first argument are copied in front of it and the request is one run of bytes.
 */
#define FUSE_USE_VERSION 312
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "aqfuse.h"
#include "common/common.h"
#include "common/log.h"

/* From Linux 6.14's <linux/fuse.h>, which Debian 12's headers predate. */
#define URING_HDR_SZ 128
#define URING_OP_SZ 128
struct uring_ent_in_out {
	uint64_t flags;
	uint64_t commit_id; /* the request's unique */
	uint32_t payload_sz;
	uint32_t padding;
	uint64_t reserved;
};
struct uring_req_header {
	char in_out[URING_HDR_SZ]; /* fuse_in_header in, fuse_out_header out */
	char op_in[URING_OP_SZ];   /* the request's first argument */
	struct uring_ent_in_out ent;
};
struct uring_cmd_req {
	uint64_t flags;
	uint64_t commit_id;
	uint16_t qid;
	uint8_t padding[6];
};
enum { URING_CMD_REGISTER = 1, URING_CMD_COMMIT_AND_FETCH = 2 };
_Static_assert(sizeof(struct uring_req_header) == 288 && sizeof(struct uring_cmd_req) == 24, "the kernel's layout");

#define REQ_SLACK 4096 /* room before the payload for the header and first argument */
#define URING_THREADS_MAX 64
#define URING_ENTS_MAX 4096 /* entries in all, parked ones included */
#define TAG_WAKE 1         /* user_data of a thread's eventfd read; entries are pointers */

struct ring_thr;

/* One request buffer the kernel knows. Its thread serves it; a request whose handler
 * returns unanswered (a lock wait) parks it, and the answer, from another thread, gives
 * it back to its thread to commit. */
struct ring_ent {
	struct ring_thr *thr;
	struct uring_req_header *hdr;
	struct iovec iov[2];     /* hdr, payload: what REGISTER and each commit name */
	uint8_t *map;            /* REQ_SLACK + payload */
	uint8_t *payload;
	_Atomic uint64_t unique; /* the request in the mount's hands, 0 when none */
	struct ring_ent *next;   /* on its thread's list to commit */
	pthread_mutex_t mu;      /* the fields below */
	bool serving;            /* its handler runs: the payload holds the request's bytes */
	bool has_payload;
	bool replied;
	uint8_t *stage;          /* a reply given while serving a request with a payload */
	size_t stage_cap;
};

/* A thread with its io_uring, serving entries of one queue. */
struct ring_thr {
	struct io_uring ring;
	pthread_t thread;
	uint16_t qid;
	int efd;                 /* written when a parked entry has its answer */
	uint64_t efd_val;
	pthread_mutex_t mu;      /* to_commit */
	struct ring_ent *to_commit;
	struct ring_ent *first;  /* made by uring_prepare, registered once the ring runs */
};

static struct {
	struct fuse_session *se;
	int fd;
	size_t payload_size;
	unsigned nthr;
	struct ring_thr *thr;
	pthread_mutex_t mu;      /* all, nall, state, stop, serving */
	pthread_cond_t idle;
	struct ring_ent **all;   /* every entry made, for answers given by other threads */
	unsigned nall, capall;
	enum { RING_NONE, RING_PREPARED, RING_RUNNING, RING_ABANDONED } state; /* go waits on it */
	pthread_cond_t go;
	bool stop;
	unsigned serving;
	unsigned queues, per_queue;
	bool turned_on; /* this mount turned the fuse module's enable_uring on */
} g_ring = {.mu = PTHREAD_MUTEX_INITIALIZER, .idle = PTHREAD_COND_INITIALIZER, .go = PTHREAD_COND_INITIALIZER};

static _Thread_local struct ring_ent *t_ent; /* the entry this thread serves now */

/* Queues the kernel keeps: one per possible CPU, /sys/devices/system/cpu/possible ("0-3"). */
static unsigned possible_cpus(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/possible", "r");
	unsigned n = 0;
	if (f) {
		char line[256];
		if (fgets(line, sizeof line, f)) {
			for (char *p = line; *p && *p != '\n';) {
				unsigned a = (unsigned)strtoul(p, &p, 10), b = a;
				if (*p == '-')
					b = (unsigned)strtoul(p + 1, &p, 10);
				n = b + 1 > n ? b + 1 : n;
				if (*p == ',')
					p++;
				else
					break;
			}
		}
		fclose(f);
	}
	return n ? n : (unsigned)sysconf(_SC_NPROCESSORS_CONF);
}

static struct io_uring_sqe *get_sqe(struct ring_thr *t)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
	if (!sqe) { /* the queue holds a few: make room */
		io_uring_submit(&t->ring);
		sqe = io_uring_get_sqe(&t->ring);
	}
	return sqe;
}

static void submit_cmd(struct ring_thr *t, struct ring_ent *e, uint32_t op, uint64_t commit_id)
{
	struct io_uring_sqe *sqe = get_sqe(t);
	/* an SQE128's second half is the command; GCC sizes sqe->cmd by its declaration, [0] */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#pragma GCC diagnostic ignored "-Wstringop-overflow"
	memset(sqe, 0, 2 * sizeof *sqe);
#pragma GCC diagnostic pop
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = g_ring.fd;
	sqe->cmd_op = op;
	sqe->addr = (uint64_t)(uintptr_t)e->iov;
	sqe->len = 2;
	sqe->user_data = (uint64_t)(uintptr_t)e;
	struct uring_cmd_req req = {.commit_id = commit_id, .qid = t->qid};
	memcpy((uint8_t *)sqe + offsetof(struct io_uring_sqe, cmd), &req, sizeof req);
}

static void arm_wake(struct ring_thr *t)
{
	struct io_uring_sqe *sqe = get_sqe(t);
	io_uring_prep_read(sqe, t->efd, &t->efd_val, sizeof t->efd_val, 0);
	sqe->user_data = TAG_WAKE;
}

/* Frees an entry the kernel never held (one not in g_ring.all, or all of them). */
static void ent_free(struct ring_ent *e)
{
	if (e->map != MAP_FAILED)
		munmap(e->map, REQ_SLACK + g_ring.payload_size);
	free(e->hdr);
	free(e);
}

/* A new entry of thread t, not yet registered (NULL past URING_ENTS_MAX). */
static struct ring_ent *ent_alloc(struct ring_thr *t)
{
	size_t map_size = REQ_SLACK + g_ring.payload_size;
	struct ring_ent *e = calloc(1, sizeof *e);
	if (!e)
		return NULL;
	e->map = mmap(NULL, map_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	e->hdr = aligned_alloc(64, sizeof *e->hdr);
	pthread_mutex_lock(&g_ring.mu);
	bool room = g_ring.nall < URING_ENTS_MAX && e->map != MAP_FAILED && e->hdr;
	if (room && g_ring.nall == g_ring.capall) {
		unsigned cap = g_ring.capall ? 2 * g_ring.capall : 64;
		struct ring_ent **all = realloc(g_ring.all, cap * sizeof *all);
		if (all) {
			g_ring.all = all;
			g_ring.capall = cap;
		}
		room = all != NULL;
	}
	if (room)
		g_ring.all[g_ring.nall++] = e;
	pthread_mutex_unlock(&g_ring.mu);
	if (!room) {
		ent_free(e);
		return NULL;
	}
	e->thr = t;
	e->payload = e->map + REQ_SLACK;
	e->iov[0] = (struct iovec){e->hdr, sizeof *e->hdr};
	e->iov[1] = (struct iovec){e->payload, g_ring.payload_size};
	pthread_mutex_init(&e->mu, NULL);
	return e;
}

/* A new entry of thread t, registered with the kernel (NULL past URING_ENTS_MAX). */
static struct ring_ent *ent_new(struct ring_thr *t)
{
	struct ring_ent *e = ent_alloc(t);
	if (e)
		submit_cmd(t, e, URING_CMD_REGISTER, 0);
	return e;
}

/* Lays the request in e's buffers out as read(2) on /dev/fuse gives it and hands it to
 * libfuse. Returns true when it was answered, false when its answer comes later. */
static bool serve(struct ring_ent *e)
{
	struct fuse_in_header in;
	memcpy(&in, e->hdr->in_out, sizeof in);
	size_t psz = e->hdr->ent.payload_sz;
	pthread_mutex_lock(&e->mu);
	e->replied = false;
	e->serving = true;
	e->has_payload = psz > 0;
	pthread_mutex_unlock(&e->mu);
	atomic_store(&e->unique, in.unique);
	t_ent = e;
	if (in.len < sizeof in + psz || in.len - sizeof in - psz > URING_OP_SZ || psz > g_ring.payload_size) {
		log_error("aq mount: a ring request (opcode %u) of %u bytes with %zu of payload", in.opcode, in.len,
			  psz);
		struct fuse_out_header out = {.len = sizeof out, .error = -EIO, .unique = in.unique};
		struct iovec iov = {&out, sizeof out};
		uring_reply(&iov, 1);
	} else {
		size_t opsz = in.len - sizeof in - psz;
		uint8_t *start = e->payload - opsz - sizeof in;
		memcpy(start, &in, sizeof in);
		memcpy(start + sizeof in, e->hdr->op_in, opsz);
		devio_note(start, in.len);
		struct fuse_buf fb = {.mem = start, .size = in.len};
		fuse_session_process_buf(g_ring.se, &fb);
	}
	t_ent = NULL;
	pthread_mutex_lock(&e->mu);
	e->serving = false;
	bool replied = e->replied;
	if (replied && e->stage && e->hdr->ent.payload_sz && e->has_payload)
		memcpy(e->payload, e->stage, e->hdr->ent.payload_sz);
	pthread_mutex_unlock(&e->mu);
	return replied;
}

static void commit(struct ring_ent *e)
{
	uint64_t unique = atomic_exchange(&e->unique, 0);
	submit_cmd(e->thr, e, URING_CMD_COMMIT_AND_FETCH, unique);
}

/* Keeps t on the CPU of its queue: a caller that waits for its request then hands its
 * CPU to the thread that serves it, with no wake-up of the other CPU in between and back.
 * 20,000 images through the mount, 4 loaders, page cache dropped, three alternated rounds:
 * 5.1-7.0k unpinned against 5.7-7.9k samples/s (docs/performance.md); creates, renames
 * and lookups of missing names of 30,000 files were faster too.
 * Where the CPU is not the mount's to use (a cpuset), the thread runs anywhere.
 * $AQ_MOUNT_RING_PIN=0 leaves every thread unpinned, for comparisons. */
static void pin_to_queue(const struct ring_thr *t)
{
	const char *env = getenv("AQ_MOUNT_RING_PIN");
	if (env && strcmp(env, "0") == 0)
		return;
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	CPU_SET(t->qid, &cpus);
	(void)pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);
}

static void *thr_main(void *arg)
{
	struct ring_thr *t = arg;
	pthread_mutex_lock(&g_ring.mu);
	while (g_ring.state == RING_PREPARED)
		pthread_cond_wait(&g_ring.go, &g_ring.mu);
	bool go = g_ring.state == RING_RUNNING;
	pthread_mutex_unlock(&g_ring.mu);
	if (!go)
		return NULL;
	pin_to_queue(t);
	arm_wake(t);
	submit_cmd(t, t->first, URING_CMD_REGISTER, 0);
	/* live: entries the kernel holds (registered, or committed and fetching); parked:
	 * entries whose request waits for its answer, which this thread must commit */
	unsigned live = 1, parked = 0;
	while (live || parked) {
		struct io_uring_cqe *cqe;
		int rc = io_uring_submit_and_wait(&t->ring, 1);
		while (rc == -EINTR || (rc >= 0 && io_uring_peek_cqe(&t->ring, &cqe) != 0))
			rc = io_uring_wait_cqe(&t->ring, &cqe) == -EINTR ? -EINTR : 0;
		if (rc < 0) {
			log_error("aq mount: io_uring_enter on a FUSE ring: %s", strerror(-rc));
			break;
		}
		int res = cqe->res;
		uint64_t tag = cqe->user_data;
		io_uring_cqe_seen(&t->ring, cqe);
		if (tag == TAG_WAKE) {
			/* answers to parked requests: commit them here, so that the kernel's
			 * next request for each is delivered on this thread */
			pthread_mutex_lock(&t->mu);
			struct ring_ent *list = t->to_commit;
			t->to_commit = NULL;
			pthread_mutex_unlock(&t->mu);
			for (struct ring_ent *e = list, *next; e; e = next) {
				next = e->next;
				commit(e);
				live++;
				parked--;
			}
			arm_wake(t);
			continue;
		}
		struct ring_ent *e = (void *)(uintptr_t)tag;
		if (res < 0) {
			/* ENOTCONN, ECANCELED: the mount is going away. Anything else: the
			 * kernel would not take the entry, and /dev/fuse serves. */
			if (res != -ENOTCONN && res != -ECANCELED)
				log_warn("aq mount: the kernel refused a FUSE ring entry: %s", strerror(-res));
			live--;
			continue;
		}
		pthread_mutex_lock(&g_ring.mu);
		bool stop = g_ring.stop;
		if (!stop)
			g_ring.serving++;
		pthread_mutex_unlock(&g_ring.mu);
		if (stop)
			break;
		bool replied = serve(e);
		pthread_mutex_lock(&g_ring.mu);
		if (--g_ring.serving == 0 && g_ring.stop)
			pthread_cond_broadcast(&g_ring.idle);
		pthread_mutex_unlock(&g_ring.mu);
		if (replied) {
			commit(e);
		} else {
			/* parked until its answer: another entry takes this one's place, so
			 * that waits (locks) do not use up the queue */
			live--;
			parked++;
			if (ent_new(t))
				live++;
		}
	}
	return NULL;
}

void *uring_reply_space(size_t len)
{
	struct ring_ent *e = t_ent;
	return e && !e->has_payload && len <= g_ring.payload_size ? e->payload : NULL;
}

bool uring_reply(const struct iovec *iov, int count)
{
	if (!g_ring.nthr || count < 1 || iov[0].iov_len < sizeof(struct fuse_out_header))
		return false; /* no ring (yet): INIT's reply, and all before it */
	const struct fuse_out_header *out = iov[0].iov_base;
	if (!out->unique)
		return false;
	struct ring_ent *e = t_ent && atomic_load(&t_ent->unique) == out->unique ? t_ent : NULL;
	if (!e) { /* an answer given by another thread, or to a request read from /dev/fuse */
		pthread_mutex_lock(&g_ring.mu);
		for (unsigned i = 0; i < g_ring.nall && !e; i++)
			if (atomic_load(&g_ring.all[i]->unique) == out->unique)
				e = g_ring.all[i];
		pthread_mutex_unlock(&g_ring.mu);
		if (!e)
			return false;
	}
	size_t n = 0;
	for (int i = 1; i < count; i++)
		n += iov[i].iov_len;
	pthread_mutex_lock(&e->mu);
	memcpy(e->hdr->in_out, out, sizeof *out);
	struct fuse_out_header *h = (void *)e->hdr->in_out;
	if (n > g_ring.payload_size) {
		log_error("aq mount: a reply of %zu bytes does not fit a FUSE ring entry", n);
		h->error = -EIO;
		h->len = sizeof *h;
		n = 0;
	}
	/* while its handler runs, the payload still holds the request's own bytes */
	uint8_t *to = e->payload;
	if (e->serving && e->has_payload && n) {
		if (n > e->stage_cap) {
			uint8_t *stage = realloc(e->stage, n);
			if (!stage) {
				h->error = -ENOMEM;
				h->len = sizeof *h;
				n = 0;
			} else {
				e->stage = stage;
				e->stage_cap = n;
			}
		}
		to = e->stage;
	}
	for (int i = 1, at = 0; i < count && n; at += (int)iov[i].iov_len, i++)
		if (to + at != iov[i].iov_base) /* else read there already (uring_reply_space) */
			memcpy(to + at, iov[i].iov_base, iov[i].iov_len);
	e->hdr->ent.payload_sz = (uint32_t)n;
	e->replied = true;
	bool parked = !e->serving;
	pthread_mutex_unlock(&e->mu);
	if (parked) {
		struct ring_thr *t = e->thr;
		pthread_mutex_lock(&t->mu);
		e->next = t->to_commit;
		t->to_commit = e;
		pthread_mutex_unlock(&t->mu);
		uint64_t one = 1;
		if (write(t->efd, &one, sizeof one) < 0)
			log_error("aq mount: cannot wake a FUSE ring thread: %s", strerror(errno));
	}
	return true;
}

#define ENABLE_URING "/sys/module/fuse/parameters/enable_uring"

bool uring_kernel_on(void)
{
	char v = 0;
	int fd = open(ENABLE_URING, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false; /* a kernel without it (before 6.14, or built without) */
	bool on = read(fd, &v, 1) == 1 && v == 'Y';
	close(fd);
	if (on || geteuid() != 0)
		return on;
	/* Off by default. The switch only lets the kernel offer the ring to FUSE servers,
	 * which each choose whether to take it; so a root mount turns it on. */
	fd = open(ENABLE_URING, O_WRONLY | O_CLOEXEC);
	on = fd >= 0 && write(fd, "Y", 1) == 1;
	if (fd >= 0)
		close(fd);
	g_ring.turned_on = on; /* said once the mount logs to its file (uring_go) */
	return on;
}

int uring_prepare(struct fuse_session *se, int fd, size_t payload_size, unsigned threads)
{
	/* Once the INIT reply offers the ring, the kernel holds every request until each
	 * queue has an entry (or a registration fails): so everything that can fail
	 * happens here, before, and threads wait for uring_go to register. */
	unsigned queues = possible_cpus();
	threads = MAX(2u, MIN(URING_THREADS_MAX, threads / queues));
	struct ring_thr *thr = calloc((size_t)queues * threads, sizeof *thr);
	if (!thr)
		return -ENOMEM;
	g_ring.se = se;
	g_ring.fd = fd;
	g_ring.payload_size = payload_size;
	g_ring.queues = queues;
	g_ring.per_queue = threads;
	g_ring.state = RING_PREPARED;
	unsigned n = 0;
	int rc = 0;
	for (; n < queues * threads && !rc; n++) {
		struct ring_thr *t = &thr[n];
		t->qid = (uint16_t)(n / threads);
		pthread_mutex_init(&t->mu, NULL);
		t->efd = eventfd(0, EFD_CLOEXEC);
		if (t->efd < 0) {
			rc = -errno;
			break;
		}
		rc = io_uring_queue_init(8, &t->ring, IORING_SETUP_SQE128);
		if (rc) {
			close(t->efd);
			break;
		}
		t->first = ent_alloc(t);
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setstacksize(&attr, 1 << 20);
		rc = !t->first ? -ENOMEM : -pthread_create(&t->thread, &attr, thr_main, t);
		pthread_attr_destroy(&attr);
		if (rc) {
			io_uring_queue_exit(&t->ring);
			close(t->efd);
			break;
		}
	}
	if (rc) {
		/* nothing was offered: the threads made so far end, their entries (never
		 * registered) go, and the mount serves through /dev/fuse */
		log_warn("aq mount: cannot set up FUSE over io_uring (%s); serving through /dev/fuse", strerror(-rc));
		uring_go(false);
		for (unsigned i = 0; i < n; i++) {
			pthread_join(thr[i].thread, NULL);
			io_uring_queue_exit(&thr[i].ring);
			close(thr[i].efd);
		}
		for (unsigned i = 0; i < g_ring.nall; i++)
			ent_free(g_ring.all[i]);
		g_ring.nall = 0;
		free(thr);
		return rc;
	}
	g_ring.thr = thr;
	g_ring.nthr = n;
	return 0;
}

void uring_go(bool offered)
{
	pthread_mutex_lock(&g_ring.mu);
	if (g_ring.state == RING_PREPARED)
		g_ring.state = offered ? RING_RUNNING : RING_ABANDONED;
	bool running = g_ring.state == RING_RUNNING;
	pthread_cond_broadcast(&g_ring.go);
	pthread_mutex_unlock(&g_ring.mu);
	if (running)
		log_info("aq mount: FUSE over io_uring, %u queues of %u threads, %zu-byte entries%s", g_ring.queues,
			 g_ring.per_queue, g_ring.payload_size,
			 g_ring.turned_on ? " (this mount turned on " ENABLE_URING ")" : "");
}

void uring_stop(void)
{
	/* requests being served finish (a few seconds at most); threads that are woken
	 * later serve nothing, and the kernel ends what they hold when the mount goes */
	pthread_mutex_lock(&g_ring.mu);
	g_ring.stop = true;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 5;
	while (g_ring.serving && pthread_cond_timedwait(&g_ring.idle, &g_ring.mu, &until) == 0)
		;
	pthread_mutex_unlock(&g_ring.mu);
}

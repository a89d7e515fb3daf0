/*
 * locks.h - the byte-range (fcntl, OFD) and flock(2) locks of the inodes a server holds,
 * kept in its memory: what every client's processes hold and wait for, so that processes
 * on two machines exclude each other as two on one machine do. The rules are Linux's
 * (fs/locks.c): an owner's ranges of one type merge, a lock over another of its own
 * replaces that part, a conflict is another owner's overlapping range where either is a
 * write lock, flock locks are whole-file and never meet byte-range ones, and a wait that
 * would close a circle of byte-range waiters is EDEADLK.
 *
 * An owner is (client, owner): the client that sent the request (one number for all its
 * connections, locks_attach) and the kernel's lock owner (a process's files for fcntl, an
 * open file for OFD and flock). A client's locks last while it has a connection open;
 * each inode's locks are also written to a row (lock_persist_fn), and a restarted server
 * loads them (locks_load) for their clients to claim by connecting again within a grace
 * period (locks_attach) or lose (locks_expire).
 */
#ifndef AQ_LOCKS_H
#define AQ_LOCKS_H
#include "common/common.h"
#include "aq.h"

struct lock_req {
	uint64_t ino, client, owner;
	uint64_t wait_id;       /* AQ_LOCK_WAIT and AQ_LOCK_CANCEL: the client's number of the wait */
	uint32_t type;          /* AQ_LK_RD, AQ_LK_WR, AQ_LK_UN */
	uint32_t flags;         /* AQ_LOCK_* */
	uint32_t pid;
	uint64_t start, end;    /* inclusive, end at most AQ_LK_END */
};

/* A queued wait ended: err 0 (granted), -EINTR (cancelled), -ENOTCONN (its connection
 * went). Called with the table's mutex held, once per waiter; waiter is the caller's. */
typedef void (*lock_done_fn)(void *arg, void *waiter, int err);
/* ino's locks are now row (len bytes; 0: none): the caller keeps it for locks_load. Called
 * with the table's mutex held, in the order of the changes. */
typedef void (*lock_persist_fn)(void *arg, uint64_t ino, const uint8_t *row, size_t len);

struct lock_table;
struct lock_table *locks_new(lock_done_fn done, lock_persist_fn persist, void *arg);
void locks_free(struct lock_table *t);

#define LOCKS_QUEUED 1
/* Runs r, which came through the connection via. Returns 0 (taken, dropped, cancelled;
 * for AQ_LOCK_TEST, *conflict is the first lock in the way or has type AQ_LK_UN), -EAGAIN
 * (in the way, no wait), -EDEADLK, -EINTR (a wait cancelled before it came), -ENOLCK (the
 * inode holds 4,096 locks, or the table a million), -EINVAL; or LOCKS_QUEUED: the wait is queued, and done(waiter) will say
 * how it ended. */
int locks_run(struct lock_table *t, const struct lock_req *r, void *via, void *waiter, struct aq_lock *conflict);
/* A connection of client opened (durable: the client said who it is, and may claim its
 * locks after a restart); an orphaned client that attaches has its locks back. */
void locks_attach(struct lock_table *t, uint64_t client, bool durable);
/* A connection of client (via) closed: its waits end, and when it was the client's last,
 * the client's locks go and what they kept out is granted. */
void locks_detach(struct lock_table *t, uint64_t client, void *via);
/* A row a restart found: its locks are held again, by clients that are orphans until they
 * attach, for grace_ns. -EINVAL for a row out of shape (nothing is loaded). */
int locks_load(struct lock_table *t, uint64_t ino, const uint8_t *row, size_t len, uint64_t grace_ns);
/* Drops the locks of orphans whose grace is over (called each second). */
void locks_expire(struct lock_table *t);
/* Locks held now, and waits queued (tests, stats). */
void locks_count(struct lock_table *t, uint32_t *held, uint32_t *waiting);

#endif

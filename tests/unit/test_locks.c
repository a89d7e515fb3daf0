/*
 * test_locks.c - unit tests of the server's lock table (src/server/locks.c) where the
 * integration tests cannot reach cheaply: the limits, the rows written for a restart and
 * read back, clients that come back or do not. (The rules a program sees are checked
 * against the kernel's in tests/integration/test_locks.py.) Prints one line per case and
 * "N passed, N failed".
 */
#include "server/locks.h"
#include "unit/check.h"

static int g_done, g_done_err;
static uint8_t g_row[1 << 20];
static size_t g_row_len;
static uint64_t g_row_ino;
static uint32_t g_rows_written;

static void done(void *arg, void *waiter, int err)
{
	g_done++;
	g_done_err = err;
}

static void persist(void *arg, uint64_t ino, const uint8_t *row, size_t len)
{
	g_row_ino = ino;
	g_row_len = len;
	memcpy(g_row, row, len);
	g_rows_written++;
}

static struct lock_req req(uint64_t client, uint64_t owner, uint32_t type, uint64_t start, uint64_t end)
{
	return (struct lock_req){.ino = 7, .client = client, .owner = owner, .type = type, .start = start, .end = end,
				 .pid = 100};
}

/* One inode holds at most 4096 locks (its row is rewritten whole on each change): past
 * that ENOLCK, and what is held still works. */
static int t_file_limit(void)
{
	struct lock_table *t = locks_new(done, NULL, NULL);
	locks_attach(t, 1, true);
	int rc = 0;
	uint32_t n = 0;
	for (; n < 5000; n++) { /* apart, so they never merge */
		struct lock_req r = req(1, 1, AQ_LK_WR, 2 * n, 2 * n);
		if ((rc = locks_run(t, &r, t, NULL, NULL)))
			break;
	}
	CHECK(rc == -ENOLCK && n >= 4000 && n < 4096);
	uint32_t held, waiting;
	locks_count(t, &held, &waiting);
	CHECK(held == n && waiting == 0);
	struct lock_req un = req(1, 1, AQ_LK_UN, 0, AQ_LK_END), other = req(1, 1, AQ_LK_WR, 0, 0);
	other.ino = 8; /* another inode has room */
	CHECK(locks_run(t, &other, t, NULL, NULL) == 0);
	CHECK(locks_run(t, &un, t, NULL, NULL) == 0);
	locks_count(t, &held, &waiting);
	CHECK(held == 1);
	locks_free(t);
	return 0;
}

/* The row of an inode's locks holds the durable clients' locks; a table that loads it
 * holds them for the grace period, gives them back to a client that attaches, and drops
 * the others' when the grace is over (granting a wait they kept out). */
static int t_rows_and_restart(void)
{
	struct lock_table *t = locks_new(done, persist, NULL);
	locks_attach(t, 1, true);
	locks_attach(t, 2, true);
	locks_attach(t, 3, false); /* said nothing of who it is: not kept */
	struct lock_req a = req(1, 10, AQ_LK_WR, 0, 9), b = req(2, 20, AQ_LK_RD, 20, 29), c = req(3, 30, AQ_LK_RD, 40, 49);
	CHECK(!locks_run(t, &a, t, NULL, NULL) && !locks_run(t, &b, t, NULL, NULL) && !locks_run(t, &c, t, NULL, NULL));
	CHECK(g_row_ino == 7 && g_row_len == 4 + 2 * 38);
	uint8_t row[256];
	size_t len = g_row_len;
	memcpy(row, g_row, len);
	locks_free(t);

	t = locks_new(done, persist, NULL);
	CHECK(locks_load(t, 7, row, len - 1, 1000000000ull) == -EINVAL); /* out of shape: nothing */
	row[4 + 36] = 9;
	CHECK(locks_load(t, 7, row, len, 1000000000ull) == -EINVAL);
	row[4 + 36] = AQ_LK_WR;
	CHECK(locks_load(t, 7, row, len, 0) == 0);
	uint32_t held, waiting;
	locks_count(t, &held, &waiting);
	CHECK(held == 2);
	locks_attach(t, 1, true); /* client 1 comes back; 2 does not */
	struct lock_req x = req(4, 40, AQ_LK_WR, 0, 100);
	x.flags = AQ_LOCK_WAIT;
	locks_attach(t, 4, true);
	int waiter;
	CHECK(locks_run(t, &x, t, &waiter, NULL) == LOCKS_QUEUED);
	struct aq_lock in_way;
	struct lock_req test = req(4, 41, AQ_LK_WR, 25, 25), test0 = req(4, 41, AQ_LK_WR, 5, 5);
	test.flags = test0.flags = AQ_LOCK_TEST;
	CHECK(!locks_run(t, &test, t, NULL, &in_way) && in_way.type == AQ_LK_RD && in_way.start == 20);
	g_done = 0;
	locks_expire(t); /* grace 0: client 2's lock goes, client 1's stays, the wait stays */
	CHECK(!locks_run(t, &test, t, NULL, &in_way) && in_way.type == AQ_LK_UN);
	CHECK(!locks_run(t, &test0, t, NULL, &in_way) && in_way.type == AQ_LK_WR && in_way.start == 0);
	CHECK(g_done == 0);
	locks_detach(t, 1, NULL); /* its last connection: its lock goes, the wait is granted */
	CHECK(g_done == 1 && g_done_err == 0);
	locks_count(t, &held, &waiting);
	CHECK(held == 1 && waiting == 0);
	locks_free(t);
	return 0;
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "file_limit", t_file_limit },
		{ "rows_and_restart", t_rows_and_restart },
	};
	return unit_main(tests, ARRAY_SIZE(tests));
}

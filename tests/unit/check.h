/*
 * check.h - what the unit test programs share: a test is a function that returns 0, or -1
 * with g_why saying what failed (the CHECK macros set it), and unit_run runs a table of
 * them, a line each ("ok NAME (S)" or "FAIL NAME: WHY"); unit_report ends the program.
 */
#ifndef AQ_TEST_CHECK_H
#define AQ_TEST_CHECK_H
#include "common/common.h"
#include "common/log.h"
#include <stdio.h>
#include <string.h>

static char g_why[1024];

#define CHECK(cond)                                                                           \
	do {                                                                                  \
		if (!(cond)) {                                                                \
			snprintf(g_why, sizeof(g_why), "line %d: %s", __LINE__, #cond);       \
			return -1;                                                            \
		}                                                                             \
	} while (0)
#define CHECKF(cond, ...)                                                                     \
	do {                                                                                  \
		if (!(cond)) {                                                                \
			int _n = snprintf(g_why, sizeof(g_why), "line %d: %s: ", __LINE__, #cond); \
			snprintf(g_why + _n, sizeof(g_why) - (size_t)_n, __VA_ARGS__);        \
			return -1;                                                            \
		}                                                                             \
	} while (0)
#define CHECK_STR(got, want)                                                                  \
	do {                                                                                  \
		if (strcmp((got), (want))) {                                                  \
			snprintf(g_why, sizeof(g_why), "line %d: got \"%s\", want \"%s\"", __LINE__, \
				 (got), (want));                                              \
			return -1;                                                            \
		}                                                                             \
	} while (0)

struct unit_test {
	const char *name;
	int (*fn)(void);
};

/* Runs n tests in order, adding to *passed and *failed. */
static inline void unit_run(const struct unit_test *t, size_t n, int *passed, int *failed)
{
	for (size_t i = 0; i < n; i++) {
		g_why[0] = 0;
		uint64_t t0 = aq_mono_ns();
		if (t[i].fn() == 0) {
			printf("ok %s (%.2fs)\n", t[i].name, (double)(aq_mono_ns() - t0) / 1e9);
			(*passed)++;
		} else {
			printf("FAIL %s: %s\n", t[i].name, g_why);
			(*failed)++;
		}
		fflush(stdout);
	}
}

/* The program's last line and exit status: "N passed, N failed"; a run of no test fails,
 * as a failure does. */
static inline int unit_report(int passed, int failed)
{
	printf("%d passed, %d failed\n", passed, failed);
	return failed || !passed ? 1 : 0;
}

/* main() of a program whose tests need nothing set up around them. */
static inline int unit_main(const struct unit_test *t, size_t n)
{
	log_min_level = LOG_ERROR;
	int passed = 0, failed = 0;
	unit_run(t, n, &passed, &failed);
	return unit_report(passed, failed);
}

#endif

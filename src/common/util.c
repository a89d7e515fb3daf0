/* util.c - assertion failure, logging and allocation helpers, the boot id. */
#include "common/common.h"
#include <pthread.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/time.h>
#include <unistd.h>

int log_min_level = LOG_INFO;
static FILE *log_file;

void log_set_file(const char *path)
{
	FILE *f = fopen(path, "a");
	if (f) {
		setvbuf(f, NULL, _IOLBF, 0);
		log_file = f;
	}
}

void log_msg(enum log_level level, const char *file, int line, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warn", "error"};
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	gmtime_r(&tv.tv_sec, &tm);
	const char *base = strrchr(file, '/');
	fprintf(log_file ? log_file : stderr, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%d] %s:%d: %s\n",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		(long)tv.tv_usec / 1000, names[level], (int)getpid(), base ? base + 1 : file, line, msg);
}

_Noreturn void aq_assert_fail(const char *cond, const char *file, int line, const char *func)
{
	log_msg(LOG_ERROR, file, line, "assertion failed in %s: %s", func, cond);
	abort();
}

void *aq_malloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) { log_error("out of memory (%zu bytes)", n); abort(); }
	return p;
}
void *aq_malloc_aligned(size_t align, size_t n)
{
	void *p;
	if (posix_memalign(&p, align, n ? n : 1)) { log_error("out of memory (%zu bytes)", n); abort(); }
	return p;
}
void *aq_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) { log_error("out of memory (%zu x %zu bytes)", n, size); abort(); }
	return p;
}
void *aq_map_huge(size_t n)
{
	/* over-map so that an aligned start lies inside, then trim both ends */
	size_t span = n + AQ_HUGE_PAGE;
	uint8_t *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) { log_error("out of memory (%zu bytes mapped)", n); abort(); }
	uint8_t *a = (uint8_t *)(((uintptr_t)p + AQ_HUGE_PAGE - 1) / AQ_HUGE_PAGE * AQ_HUGE_PAGE);
	if (a > p)
		munmap(p, (size_t)(a - p));
	if (a + n < p + span)
		munmap(a + n, (size_t)(p + span - (a + n)));
	(void)madvise(a, n, MADV_HUGEPAGE); /* a hint: small pages still work */
	return a;
}
void *aq_realloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) { log_error("out of memory (%zu bytes)", n); abort(); }
	return q;
}
char *aq_strdup(const char *s)
{
	char *p = strdup(s);
	if (!p) { log_error("out of memory"); abort(); }
	return p;
}

int aq_boot_id(uint8_t out[AQ_BOOT_ID_SIZE])
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
	if (!f)
		return -errno;
	char text[64];
	bool ok = fgets(text, sizeof text, f) != NULL;
	fclose(f);
	size_t n = 0;
	for (const char *p = text; ok && *p && *p != '\n' && n < 2 * AQ_BOOT_ID_SIZE; p++) {
		if (*p == '-')
			continue;
		int v = *p >= '0' && *p <= '9' ? *p - '0' : *p >= 'a' && *p <= 'f' ? *p - 'a' + 10 : -1;
		if (v < 0)
			return -EINVAL;
		out[n / 2] = (uint8_t)(n % 2 ? out[n / 2] | v : v << 4);
		n++;
	}
	return ok && n == 2 * AQ_BOOT_ID_SIZE ? 0 : -EINVAL;
}

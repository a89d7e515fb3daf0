/*
 * main.c - aqd's entry point: parses options, takes the data directory's lock, starts the
 * server, writes DIR/aqd.pid, and stops cleanly on SIGTERM or SIGINT.
 */
#include "server/server.h"
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: aqd --data DIR [--server-id N] [--workers N] [--log FILE] [--sync-each-op] [--debug]\n"
			"           [--tier-interval SECONDS] [--target-capacity BYTES] [--direct-read-min BYTES|off]\n"
			"           [--poll-us MICROSECONDS] [--reclaim-s SECONDS]\n"
			"  Serves the metadata buckets and storage targets of DIR/cluster.conf's server N.\n"
			"  Every change is in the write-ahead log before its reply (it survives a crash of\n"
			"  aqd); the log reaches the disk on fsync and at least once a second, or before\n"
			"  every reply with --sync-each-op.\n"
			"  --tier-interval: how often the object tier applies rules and watermarks (60).\n"
			"  --target-capacity: a quota per storage target (suffix K, M, G, T), instead of\n"
			"  the size of the file system that holds it.\n"
			"  --direct-read-min: chunk reads not in the page cache go to the disk with O_DIRECT\n"
			"  when they are at least this many bytes (64K); off: never.\n"
			"  --poll-us: after a request that came within this long of the last, the event\n"
			"  loop polls this long for the next before it sleeps (200; 0: never polls).\n"
			"  --reclaim-s: files unlinked while open that aqd finds when it starts, or that a\n"
			"  connection held when it broke, are kept this long for their clients to\n"
			"  reconnect and claim them (120).\n"
			"  S3 keys for the object tier: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the\n"
			"  credentials file that DIR/tier.conf names.\n");
}

/* "64M" -> 67108864; 0 on a malformed value. */
static uint64_t parse_bytes(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	int shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end || v > (UINT64_MAX >> shift))
		return 0;
	return (uint64_t)v << shift;
}

#define AQD_POLL_US_DEFAULT 200 /* docs/design.md, "Polling before sleeping" */
/* Twice the clients' default reconnect window ($AQ_RECONNECT_S, 60 s): docs/design.md,
 * "Open files outlive a restart of aqd". */
#define AQD_RECLAIM_S_DEFAULT 120

/* "200" -> 200; -1 on anything but a decimal number. */
static long parse_long(const char *s)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	return errno || end == s || *end ? -1 : v;
}

int main(int argc, char **argv)
{
	struct server_options opt = {.workers = 128, .meta_sync = false, .tier_interval_s = 60};
	const char *log_path = NULL;
	static const struct option lopts[] = {
		{"data", required_argument, 0, 'd'}, {"server-id", required_argument, 0, 's'},
		{"workers", required_argument, 0, 'w'}, {"log", required_argument, 0, 'l'},
		{"sync-each-op", no_argument, 0, 'n'}, {"debug", no_argument, 0, 'D'},
		{"tier-interval", required_argument, 0, 'i'}, {"target-capacity", required_argument, 0, 'C'},
		{"direct-read-min", required_argument, 0, 'R'}, {"poll-us", required_argument, 0, 'P'},
		{"reclaim-s", required_argument, 0, 'r'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	int c;
	long interval = 60, poll_us = AQD_POLL_US_DEFAULT, reclaim_s = AQD_RECLAIM_S_DEFAULT;
	const char *capacity = NULL, *direct_min = NULL;
	while ((c = getopt_long(argc, argv, "d:s:w:l:nDi:C:R:P:r:h", lopts, NULL)) != -1) {
		switch (c) {
		case 'd': opt.data_dir = optarg; break;
		case 's': opt.server_id = (uint32_t)atoi(optarg); break;
		case 'w': opt.workers = (uint32_t)atoi(optarg); break;
		case 'l': log_path = optarg; break;
		case 'n': opt.meta_sync = true; break;
		case 'D': log_min_level = LOG_DEBUG; break;
		case 'i': interval = parse_long(optarg); break;
		case 'C': capacity = optarg; break;
		case 'R': direct_min = optarg; break;
		case 'P': poll_us = parse_long(optarg); break;
		case 'r': reclaim_s = parse_long(optarg); break;
		default: usage(); return c == 'h' ? 0 : 2;
		}
	}
	if (!opt.data_dir) {
		usage();
		return 2;
	}
	if (log_path)
		log_set_file(log_path);
	if (opt.workers < 1 || opt.workers > 1024) {
		log_error("--workers must be 1..1024");
		return 2;
	}
	if (interval < 1 || interval > 86400) {
		log_error("--tier-interval must be 1..86400 seconds");
		return 2;
	}
	opt.tier_interval_s = (uint32_t)interval;
	if (poll_us < 0 || poll_us > 100000) {
		log_error("--poll-us must be 0..100000 microseconds");
		return 2;
	}
	opt.poll_us = (uint32_t)poll_us;
	if (reclaim_s < 0 || reclaim_s > 86400) {
		log_error("--reclaim-s must be 0..86400 seconds");
		return 2;
	}
	opt.reclaim_s = (uint32_t)reclaim_s;
	if (capacity && (opt.target_capacity_bytes = parse_bytes(capacity)) < (1u << 20)) {
		log_error("--target-capacity must be a size of at least 1M (e.g. 64M, 10G)");
		return 2;
	}
	if (direct_min) {
		uint64_t v = strcmp(direct_min, "off") ? parse_bytes(direct_min) : UINT32_MAX;
		if (v < 4096 || v > UINT32_MAX) {
			log_error("--direct-read-min must be a size of at least 4K (e.g. 64K, 1M) or off");
			return 2;
		}
		opt.direct_read_min = (uint32_t)v;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/aqd.lock", opt.data_dir);
	int lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (lock_fd < 0 || flock(lock_fd, LOCK_EX | LOCK_NB)) {
		log_error("cannot lock %s: %s (is another aqd serving this directory?)", path, strerror(errno));
		return 1;
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL); /* every thread inherits the mask; main waits */
	signal(SIGPIPE, SIG_IGN);

	struct server *s;
	int rc = server_start(&opt, &s);
	if (rc)
		return 1;
	snprintf(path, sizeof path, "%s/aqd.pid", opt.data_dir);
	FILE *f = fopen(path, "w");
	if (f) {
		fprintf(f, "%d\n", (int)getpid());
		fclose(f);
	}
	int sig;
	sigwait(&set, &sig);
	log_info("aqd stopping (signal %d)", sig);
	server_stop(s);
	unlink(path);
	log_info("aqd stopped");
	return 0;
}

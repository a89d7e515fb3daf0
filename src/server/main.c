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
			"  Serves the metadata buckets and storage targets of DIR/cluster.conf's server N.\n"
			"  Every change is in the write-ahead log before its reply (it survives a crash of\n"
			"  aqd); the log reaches the disk on fsync and at least once a second, or before\n"
			"  every reply with --sync-each-op.\n");
}

int main(int argc, char **argv)
{
	struct server_options opt = {.workers = 32, .meta_sync = false};
	const char *log_path = NULL;
	static const struct option lopts[] = {
		{"data", required_argument, 0, 'd'}, {"server-id", required_argument, 0, 's'},
		{"workers", required_argument, 0, 'w'}, {"log", required_argument, 0, 'l'},
		{"sync-each-op", no_argument, 0, 'n'}, {"debug", no_argument, 0, 'D'},
		{"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
	int c;
	while ((c = getopt_long(argc, argv, "d:s:w:l:nDh", lopts, NULL)) != -1) {
		switch (c) {
		case 'd': opt.data_dir = optarg; break;
		case 's': opt.server_id = (uint32_t)atoi(optarg); break;
		case 'w': opt.workers = (uint32_t)atoi(optarg); break;
		case 'l': log_path = optarg; break;
		case 'n': opt.meta_sync = true; break;
		case 'D': log_min_level = LOG_DEBUG; break;
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

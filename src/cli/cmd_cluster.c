/*
 * cmd_cluster.c - aq up, down, mount, umount, status, changes: the commands that start,
 * stop and inspect a cluster.
 */
#include "cli/cli.h"
#include "common/cluster.h"
#include "fuse/aqfuse.h"
#include <dirent.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

const char *cli_bytes(uint64_t n, char *buf, size_t size)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	int u = 0;
	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", v, units[u]);
	return buf;
}

struct aq_client *cli_connect(const char *cluster_file)
{
	struct aq_client *c;
	const char *path = cluster_default_path(cluster_file);
	int rc = aq_connect(path, &c);
	if (rc) {
		fprintf(stderr, "aq: cannot connect to the cluster of %s: %s\n", path, aq_strerror(rc));
		return NULL;
	}
	return c;
}

int cli_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof sa;
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) || getsockname(fd, (struct sockaddr *)&sa, &len)) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return ntohs(sa.sin_port);
}

/* bin/aqd next to this bin/aq */
static void sibling_path(const char *name, char *out, size_t size)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0) {
		snprintf(out, size, "%s", name);
		return;
	}
	self[n] = 0;
	snprintf(out, size, "%s/%s", dirname(self), name);
}

/* The absolute form of path (relative to cwd), from the real path of its directory and
 * its last name: never a stat of path itself, which on a mount whose daemon is gone can
 * wait forever. */
static bool abs_mountpoint(const char *path, const char *cwd, char *out, size_t size)
{
	char tmp[PATH_MAX], dir[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s%s%s", path[0] == '/' ? "" : cwd, path[0] == '/' ? "" : "/", path) >=
	    (int)sizeof tmp)
		return false;
	size_t n = strlen(tmp);
	while (n > 1 && tmp[n - 1] == '/')
		tmp[--n] = 0;
	char *slash = strrchr(tmp, '/');
	*slash = 0;
	if (!realpath(tmp[0] ? tmp : "/", dir))
		return false;
	return snprintf(out, size, "%s/%s", strcmp(dir, "/") ? dir : "", slash + 1) < (int)size;
}

/* Whether an Aquifer mount is the topmost at mnt. Only Aquifer's: aq up, mount, umount
 * and down unmount what they find there, and a file system the user mounted at that
 * point (Aquifer may be mounted over it) is not theirs to touch. */
static bool is_mounted(const char *mnt)
{
	char real[PATH_MAX];
	if (!abs_mountpoint(mnt, ".", real, sizeof real))
		return false;
	FILE *f = fopen("/proc/self/mountinfo", "r");
	if (!f)
		return false;
	char line[4096];
	bool aquifer = false;
	while (fgets(line, sizeof line, f)) {
		char mp[PATH_MAX], type[64];
		/* id parent maj:min root mountpoint options... - fstype source options; a
		 * later line at the same point is mounted over the earlier ones */
		const char *dash = strstr(line, " - ");
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) == 1 && !strcmp(mp, real))
			aquifer = dash && sscanf(dash + 3, "%63s", type) == 1 && !strcmp(type, "fuse.aquifer");
	}
	fclose(f);
	return aquifer;
}

enum proc_state { PROC_GONE, PROC_LIVE, PROC_EXITING };

/* Whether pid runs program name (its command name; NULL: any), from /proc/PID/stat.
 * PROC_GONE: no such process, a zombie (it has let go of its files, lock and port), or
 * another program (a pid file that outlived its aqd, the number reused). PROC_EXITING:
 * on its way out (PF_EXITING), which a kill -9 of a big process stays for a second or
 * two while the kernel frees its memory, still holding aqd.lock and its port.
 * kill(pid, 0) calls every one of them alive but a process that is gone. */
static enum proc_state proc_state(pid_t pid, const char *name)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "re");
	if (!f)
		return PROC_GONE;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	char *comm = strchr(buf, '('), *end = strrchr(buf, ')');
	if (!comm || !end || end < comm)
		return PROC_GONE;
	*end = 0;
	char state = 0;
	unsigned long flags = 0;
	/* after the name: state ppid pgrp session tty_nr tpgid flags */
	if ((name && strcmp(comm + 1, name)) || sscanf(end + 1, " %c %*d %*d %*d %*d %*d %lu", &state, &flags) != 2 ||
	    state == 'Z' || state == 'X')
		return PROC_GONE;
	return flags & 0x4 /* PF_EXITING */ ? PROC_EXITING : PROC_LIVE;
}

/* The pid of the aqd serving data, or 0 (its pid file names no live aqd). *exiting (if
 * not NULL) gets the pid of one on its way out, else 0. */
static pid_t read_pid(const char *data, pid_t *exiting)
{
	char path[PATH_MAX];
	snprintf(path, sizeof path, "%s/aqd.pid", data);
	if (exiting)
		*exiting = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return 0;
	int pid = 0;
	if (fscanf(f, "%d", &pid) != 1)
		pid = 0;
	fclose(f);
	enum proc_state st = pid > 0 ? proc_state(pid, "aqd") : PROC_GONE;
	if (st == PROC_EXITING && exiting)
		*exiting = pid;
	return st == PROC_LIVE ? pid : 0;
}

/* Waits up to tenths / 10 s for aqd pid to be gone; true once it is. */
static bool wait_gone(pid_t pid, int tenths)
{
	for (int i = 0; i < tenths && proc_state(pid, "aqd") != PROC_GONE; i++)
		usleep(100000);
	return proc_state(pid, "aqd") == PROC_GONE;
}

static int run_wait(char *const argv[])
{
	pid_t pid = fork();
	if (pid == 0) {
		execv(argv[0], argv);
		_exit(127);
	}
	int st;
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* mkdir -p */
static void mkdir_p(const char *path, mode_t mode)
{
	char buf[PATH_MAX];
	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++)
		if (*p == '/') {
			*p = 0;
			mkdir(buf, 0755);
			*p = '/';
		}
	mkdir(buf, mode);
}

struct up_opts {
	char data[PATH_MAX];
	char mnt[PATH_MAX];
	uint32_t targets, buckets, chunk_size;
	bool no_mount;
	char **aqd_args;       /* after "--": passed to aqd when up starts it */
	int naqd_args;
};

static int parse_up(int argc, char **argv, struct up_opts *o, const char *cmd)
{
	const char *data = "./var", *mnt = "./mnt";
	memset(o, 0, sizeof *o);
	o->targets = 4;
	o->buckets = AQ_BUCKETS_DEFAULT;
	o->chunk_size = AQ_CHUNK_SIZE_DEFAULT;
	static const struct option lopts[] = {{"data", required_argument, 0, 'd'}, {"mount", required_argument, 0, 'm'},
					      {"targets", required_argument, 0, 't'}, {"buckets", required_argument, 0, 'b'},
					      {"chunk-size", required_argument, 0, 'c'}, {"no-mount", no_argument, 0, 'n'},
					      {0, 0, 0, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "d:m:t:b:c:n", lopts, NULL)) != -1) {
		switch (c) {
		case 'd': data = optarg; break;
		case 'm': mnt = optarg; break;
		case 't': o->targets = (uint32_t)atoi(optarg); break;
		case 'b': o->buckets = (uint32_t)atoi(optarg); break;
		case 'c': o->chunk_size = (uint32_t)atoi(optarg); break;
		case 'n': o->no_mount = true; break;
		default:
			fprintf(stderr, "usage: aq %s [--data DIR] [--mount DIR] [-- AQD-OPTIONS...]\n", cmd);
			return -1;
		}
	}
	if (optind < argc && strcmp(argv[optind - 1], "--")) {
		fprintf(stderr, "aq %s: unexpected argument %s (options for aqd go after --)\n", cmd, argv[optind]);
		return -1;
	}
	o->aqd_args = argv + optind;
	o->naqd_args = argc - optind;
	if (o->targets < 1 || o->targets > AQ_TARGETS_MAX || o->buckets < 1 || o->buckets > AQ_BUCKETS_MAX ||
	    o->chunk_size < 65536 || o->chunk_size > AQ_CHUNK_SIZE_MAX || o->chunk_size % 4096) {
		fprintf(stderr, "aq %s: --targets 1..%d, --buckets 1..%d, --chunk-size 64 KiB..8 MiB in 4 KiB steps\n",
			cmd, AQ_TARGETS_MAX, AQ_BUCKETS_MAX);
		return -1;
	}
	mkdir_p(data, 0700);
	if (!realpath(data, o->data)) {
		fprintf(stderr, "aq %s: cannot use data directory %s: %s\n", cmd, data, strerror(errno));
		return -1;
	}
	if (!o->no_mount) {
		mkdir_p(mnt, 0755);
		if (!realpath(mnt, o->mnt)) {
			fprintf(stderr, "aq %s: cannot use mount point %s: %s\n", cmd, mnt, strerror(errno));
			return -1;
		}
	}
	return 0;
}

static bool mount_daemon_alive(const char *mnt);
static int unmount(const char *mnt);

/* A mount at mnt whose daemon is gone (kill -9, OOM) answers every call with ENOTCONN
 * until it is unmounted: unmounts it. 0: nothing mounted there now, 1: a live mount
 * serves mnt, -1: a dead one could not be removed. */
static int clear_dead_mount(const char *mnt, const char *who)
{
	if (!is_mounted(mnt))
		return 0;
	if (mount_daemon_alive(mnt))
		return 1;
	if (unmount(mnt) != 0 || is_mounted(mnt)) {
		fprintf(stderr, "%s: %s is a mount whose daemon is gone, and it cannot be unmounted\n", who, mnt);
		return -1;
	}
	fprintf(stderr, "%s: removed the mount at %s, whose daemon was gone\n", who, mnt);
	return 0;
}

int cmd_up(int argc, char **argv)
{
	struct up_opts o;
	if (parse_up(argc, argv, &o, "up"))
		return 2;
	char conf[PATH_MAX + 32], path[PATH_MAX + 32];
	snprintf(conf, sizeof conf, "%s/cluster.conf", o.data);
	struct stat st;
	if (stat(conf, &st) != 0) {
		int port = cli_free_port();
		if (port <= 0) {
			fprintf(stderr, "aq up: no free TCP port on 127.0.0.1\n");
			return 1;
		}
		struct cluster_map m;
		cluster_init_single(&m, "127.0.0.1", (uint16_t)port, o.targets, o.buckets, o.chunk_size);
		int rc = cluster_save(conf, &m);
		if (rc) {
			fprintf(stderr, "aq up: cannot write %s: %s\n", conf, strerror(-rc));
			return 1;
		}
		printf("formatted a single-node cluster in %s (%u buckets, %u targets, port %d)\n", o.data, o.buckets,
		       o.targets, port);
	}
	pid_t exiting;
	pid_t pid = read_pid(o.data, &exiting);
	if (exiting && !wait_gone(exiting, 300)) {
		/* a new aqd could not take the lock nor the port before the old one lets go */
		fprintf(stderr, "aq up: the last aqd (pid %d) is still exiting after 30 s\n", (int)exiting);
		return 1;
	}
	if (!pid) {
		char aqd[PATH_MAX], logf[PATH_MAX + 16];
		sibling_path("aqd", aqd, sizeof aqd);
		snprintf(logf, sizeof logf, "%s/aqd.log", o.data);
		pid = fork();
		if (pid == 0) {
			setsid();
			int fd = open("/dev/null", O_RDWR);
			dup2(fd, 0);
			int lf = open(logf, O_WRONLY | O_CREAT | O_APPEND, 0600);
			dup2(lf >= 0 ? lf : fd, 1);
			dup2(lf >= 0 ? lf : fd, 2);
			char **args = aq_calloc((size_t)o.naqd_args + 6, sizeof *args);
			int k = 0;
			args[k++] = "aqd";
			args[k++] = "--data";
			args[k++] = o.data;
			args[k++] = "--log";
			args[k++] = logf;
			for (int i = 0; i < o.naqd_args; i++)
				args[k++] = o.aqd_args[i];
			execv(aqd, args);
			_exit(127);
		}
		/* wait until it answers; each try fails at once, so that an aqd that exits is
		 * seen between them ($AQ_CONNECT_WAIT_S as the caller had it, afterwards) */
		struct aq_client *c = NULL;
		const char *was = getenv("AQ_CONNECT_WAIT_S");
		char *saved = was ? aq_strdup(was) : NULL;
		setenv("AQ_CONNECT_WAIT_S", "0", 1);
		for (int i = 0; i < 300; i++) {
			int wst;
			if (waitpid(pid, &wst, WNOHANG) == pid) {
				fprintf(stderr, "aq up: aqd exited at start; see %s\n", logf);
				return 1;
			}
			if (read_pid(o.data, NULL) && aq_connect(conf, &c) == 0)
				break;
			c = NULL;
			usleep(100000);
		}
		if (saved)
			setenv("AQ_CONNECT_WAIT_S", saved, 1);
		else
			unsetenv("AQ_CONNECT_WAIT_S");
		free(saved);
		if (!c) {
			fprintf(stderr, "aq up: aqd did not answer within 30 s; see %s\n", logf);
			return 1;
		}
		aq_disconnect(c);
		printf("aqd running (pid %d), log %s\n", (int)pid, logf);
	} else {
		printf("aqd already running (pid %d)\n", (int)pid);
	}
	if (o.no_mount)
		return 0;
	int live = clear_dead_mount(o.mnt, "aq up");
	if (live < 0)
		return 1;
	if (live) {
		printf("already mounted at %s\n", o.mnt);
		return 0;
	}
	char aq[PATH_MAX];
	sibling_path("aq", aq, sizeof aq);
	char *margv[] = {aq, "mount", o.mnt, "--cluster", conf, getuid() == 0 ? "--allow-other" : NULL, NULL};
	int rc = run_wait(margv);
	for (int i = 0; rc == 0 && i < 100 && !is_mounted(o.mnt); i++)
		usleep(100000);
	if (rc != 0 || !is_mounted(o.mnt)) {
		fprintf(stderr, "aq up: mount at %s failed\n", o.mnt);
		return 1;
	}
	snprintf(path, sizeof path, "%s", o.mnt);
	printf("mounted at %s, log %s/mount.log\n", path, o.data);
	return 0;
}

/* Whether a live `aq mount` process serves mnt. */
static bool mount_daemon_alive(const char *mnt)
{
	char want[PATH_MAX];
	DIR *d = opendir("/proc");
	if (!d || !abs_mountpoint(mnt, ".", want, sizeof want)) {
		if (d)
			closedir(d);
		return true; /* cannot tell: the gentle way */
	}
	bool alive = false;
	struct dirent *e;
	while (!alive && (e = readdir(d))) {
		char path[300], args[4096], got[PATH_MAX];
		if (e->d_name[0] < '1' || e->d_name[0] > '9' || atoi(e->d_name) == (int)getpid())
			continue; /* not this process: `aq mount MNT` asks before it mounts */
		/* the command name first: reading a process's cmdline takes its memory map's
		 * lock, which a process faulting on the dead mount may hold for good */
		snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd >= 0 ? read(fd, args, sizeof args - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n != 3 || memcmp(args, "aq\n", 3))
			continue;
		snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		n = fd >= 0 ? read(fd, args, sizeof args - 1) : -1;
		if (fd >= 0)
			close(fd);
		if (n <= 0)
			continue;
		args[n] = 0;
		/* argv: .../aq mount MOUNTPOINT ... */
		const char *a0 = args, *a1 = a0 + strlen(a0) + 1, *a2 = a1 < args + n ? a1 + strlen(a1) + 1 : NULL;
		const char *base = strrchr(a0, '/');
		if (!a2 || a2 >= args + n || strcmp(base ? base + 1 : a0, "aq") || strcmp(a1, "mount"))
			continue;
		if (a2[0] != '/') {
			/* given relative: the daemon has moved to / since, so where it pointed
			 * is not known; one with our last name may be ours (never abort a live
			 * mount) */
			const char *b = strrchr(want, '/'), *g = strrchr(a2, '/');
			if (strcmp(g ? g + 1 : a2, b + 1))
				continue;
		} else if (!abs_mountpoint(a2, "/", got, sizeof got) || strcmp(got, want)) {
			continue;
		}
		alive = proc_state(atoi(e->d_name), NULL) == PROC_LIVE; /* not a zombie, not exiting */
	}
	closedir(d);
	return alive;
}

static int unmount(const char *mnt)
{
	if (!is_mounted(mnt))
		return 0;
	if (getuid() == 0 && umount2(mnt, 0) == 0)
		return 0;
	/* A mount whose daemon died (kill -9, OOM) can leave programs waiting on it for
	 * good: a thread of the dead daemon may be stuck writing an invalidation for a
	 * directory whose lock a waiting rename holds, so the daemon never finishes dying
	 * and the kernel never fails what waits (a chaos run hit it). A forced unmount
	 * aborts the connection: the waiters get ENOTCONN and the daemon exits. */
	if (getuid() == 0 && !mount_daemon_alive(mnt)) {
		umount2(mnt, MNT_FORCE);
		if (umount2(mnt, 0) == 0)
			return 0;
	}
	char *argv[] = {"/bin/fusermount3", "-u", (char *)mnt, NULL};
	if (run_wait(argv) == 0)
		return 0;
	/* busy: detach it so the daemon can exit once users let go */
	if (getuid() == 0 && umount2(mnt, MNT_DETACH) == 0)
		return 0;
	char *argz[] = {"/bin/fusermount3", "-u", "-z", (char *)mnt, NULL};
	return run_wait(argz) == 0 ? 0 : -1;
}

int cmd_down(int argc, char **argv)
{
	struct up_opts o;
	if (parse_up(argc, argv, &o, "down"))
		return 2;
	int status = 0;
	if (!o.no_mount && unmount(o.mnt)) {
		fprintf(stderr, "aq down: cannot unmount %s\n", o.mnt);
		status = 1;
	}
	pid_t exiting;
	pid_t pid = read_pid(o.data, &exiting);
	if (pid) {
		kill(pid, SIGTERM);
		if (!wait_gone(pid, 300)) {
			fprintf(stderr, "aq down: aqd (pid %d) did not stop in 30 s; killing it\n", (int)pid);
			kill(pid, SIGKILL);
			wait_gone(pid, 300);
		}
		printf("aqd stopped\n");
	} else if (exiting) {
		wait_gone(exiting, 300); /* killed already: let it finish */
	}
	return status;
}

/* Takes mount(8)'s comma-separated options (-o, an fstab entry's fourth field) into o:
 * Aquifer's own (ro, nosuid, nodev, allow_other, attr_timeout=S, threads=N,
 * no_io_uring), the flags the kernel applies to any mount (noatime, noexec...: into
 * o->mnt_flags, and those libfuse passes on by name into vfs, which o->vfs_opts points
 * at), and what only mount(8) and fstab use (defaults, noauto, _netdev...), which is
 * dropped. 0, or -1 after saying which option it does not know. */
static int mount_opts(char *list, struct aqfuse_options *o, char *vfs, size_t vfs_size)
{
	/* set, clear: the flag it asks for, or takes back (the last one said wins, as with
	 * mount(8)); libfuse: it passes the name to the kernel itself, else aqfuse sets the
	 * flag by a bind remount */
	static const struct { const char *name; unsigned long set, clear; bool libfuse; } kernel[] = {
		{"noatime", MS_NOATIME, 0, true}, {"atime", 0, MS_NOATIME, true},
		{"noexec", MS_NOEXEC, 0, true}, {"exec", 0, MS_NOEXEC, true},
		{"sync", MS_SYNCHRONOUS, 0, true}, {"async", 0, MS_SYNCHRONOUS, true},
		{"dirsync", MS_DIRSYNC, 0, true}, {"nodiratime", MS_NODIRATIME, 0, false},
		{"strictatime", MS_STRICTATIME, 0, false}, {"norelatime", MS_STRICTATIME, 0, false},
		{"nosymfollow", MS_NOSYMFOLLOW, 0, false}};
	/* mount(8)'s and fstab's own, and the defaults of a new mount */
	static const char *const ignored[] = {"defaults", "rw", "auto", "noauto", "user", "nouser", "users",
					      "_netdev", "nofail", "default_permissions", "suid", "dev", "subtype",
					      "fsname", "relatime", "diratime", "nostrictatime", "symfollow"};
	vfs[0] = 0;
	o->vfs_opts = vfs;
	for (char *save = NULL, *opt = strtok_r(list, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(opt, '=');
		size_t klen = eq ? (size_t)(eq - opt) : strlen(opt);
		bool known = false;
		for (size_t i = 0; i < ARRAY_SIZE(kernel) && !known; i++) {
			if (eq || strcmp(opt, kernel[i].name))
				continue;
			known = true;
			o->mnt_flags = (o->mnt_flags & ~kernel[i].clear) | kernel[i].set;
			if (!kernel[i].libfuse)
				continue;
			if (strlen(vfs) + strlen(opt) + 2 > vfs_size) {
				fprintf(stderr, "aq mount: too many mount options\n");
				return -1;
			}
			strcat(strcat(vfs, *vfs ? "," : ""), opt);
		}
		for (size_t i = 0; i < ARRAY_SIZE(ignored) && !known; i++)
			known = strlen(ignored[i]) == klen && !strncmp(opt, ignored[i], klen);
		if (known || !strncmp(opt, "x-", 2) || !strncmp(opt, "comment=", 8))
			continue;
		if (!strcmp(opt, "ro"))
			o->read_only = true;
		else if (!strcmp(opt, "nosuid"))
			o->nosuid = true;
		else if (!strcmp(opt, "nodev"))
			o->nodev = true;
		else if (!strcmp(opt, "allow_other"))
			o->allow_other = true;
		else if (eq && !strncmp(opt, "attr_timeout=", 13))
			o->attr_timeout_s = atof(eq + 1);
		else if (eq && !strncmp(opt, "threads=", 8))
			o->threads = (unsigned)atoi(eq + 1);
		else if (!strcmp(opt, "no_io_uring"))
			o->no_io_uring = true;
		else {
			fprintf(stderr, "aq mount: unknown mount option '%s'\n", opt);
			return -1;
		}
	}
	return 0;
}

int cmd_mount(int argc, char **argv)
{
	struct aqfuse_options o = {.attr_timeout_s = 3600, .threads = 16};
	char vfs[256];
	static const struct option lopts[] = {
		{"cluster", required_argument, 0, 'c'}, {"foreground", no_argument, 0, 'f'},
		{"allow-other", no_argument, 0, 'a'}, {"ro", no_argument, 0, 'r'},
		{"attr-timeout", required_argument, 0, 't'}, {"threads", required_argument, 0, 'T'},
		{"debug", no_argument, 0, 'd'}, {"log", required_argument, 0, 'l'},
		{"nosuid", no_argument, 0, 'S'}, {"nodev", no_argument, 0, 'D'},
		{"options", required_argument, 0, 'o'}, {"no-io-uring", no_argument, 0, 'U'}, {0, 0, 0, 0}};
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:fart:T:dl:SDo:U", lopts, NULL)) != -1) {
		switch (c) {
		case 'c': o.cluster_file = optarg; break;
		case 'f': o.foreground = true; break;
		case 'a': o.allow_other = true; break;
		case 'r': o.read_only = true; break;
		case 't': o.attr_timeout_s = atof(optarg); break;
		case 'T': o.threads = (unsigned)atoi(optarg); break;
		case 'd': o.debug = true; o.foreground = true; break;
		case 'l': o.log_path = optarg; break;
		case 'S': o.nosuid = true; break;
		case 'D': o.nodev = true; break;
		case 'U': o.no_io_uring = true; break;
		case 'o':
			if (mount_opts(optarg, &o, vfs, sizeof vfs))
				return 2;
			break;
		default: goto usage;
		}
	}
	if (optind != argc - 1)
		goto usage;
	o.mountpoint = argv[optind];
	int live = clear_dead_mount(o.mountpoint, "aq mount");
	if (live > 0) /* as mount(8) does: a second mount would hide the first */
		fprintf(stderr, "aq mount: %s is already an Aquifer mount\n", o.mountpoint);
	if (live)
		return 1;
	o.cluster_file = cluster_default_path(o.cluster_file);
	char real[PATH_MAX];
	if (realpath(o.cluster_file, real))
		o.cluster_file = real; /* the daemon changes directory to / */
	/* In the background its stderr is /dev/null: it logs next to the cluster file (aq up's
	 * DATA/mount.log) unless told where, or nowhere when it may not write there. */
	char logp[PATH_MAX], dir[PATH_MAX];
	if (o.log_path && o.log_path[0] != '/') {
		if (!getcwd(dir, sizeof dir) || snprintf(logp, sizeof logp, "%s/%s", dir, o.log_path) >= (int)sizeof logp)
			goto usage;
		o.log_path = logp; /* the daemon changes directory to / */
	}
	if (!o.log_path && !o.foreground) {
		snprintf(dir, sizeof dir, "%s", o.cluster_file);
		char *slash = strrchr(dir, '/');
		if (slash && slash != dir) {
			*slash = 0;
			if (access(dir, W_OK) == 0 && snprintf(logp, sizeof logp, "%s/mount.log", dir) < (int)sizeof logp)
				o.log_path = logp;
		}
	}
	return aqfuse_main(&o);
usage:
	fprintf(stderr, "usage: aq mount MOUNTPOINT [--cluster FILE] [--foreground] [--allow-other] [--ro] "
			"[--nosuid] [--nodev] [--attr-timeout SECONDS] [--threads N] [--no-io-uring] [--log FILE] "
			"[-o OPTIONS]\n");
	return 2;
}

int cmd_mount_helper(int argc, char **argv)
{
	/* mount(8) runs /sbin/mount.fuse.aquifer SOURCE DIR [-sfnv] [-o OPTIONS] for
	 * `mount -t fuse.aquifer SOURCE DIR` and fstab lines; mount.fuse3 runs the type's
	 * program, `aquifer SOURCE DIR -o OPTIONS`. SOURCE is the cluster file. */
	const char *src = NULL, *dir = NULL, *opts = NULL;
	bool fake = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-o") && i + 1 < argc)
			opts = argv[++i];
		else if (!strncmp(argv[i], "-o", 2) && argv[i][2])
			opts = argv[i] + 2;
		else if (!strcmp(argv[i], "-t") && i + 1 < argc)
			i++; /* the type, fuse.aquifer */
		else if (!strcmp(argv[i], "-f"))
			fake = true; /* mount -f: everything but the mount itself */
		else if (argv[i][0] == '-')
			continue; /* -s (sloppy), -n (no mtab), -v: nothing to do */
		else if (!src)
			src = argv[i];
		else if (!dir)
			dir = argv[i];
	}
	if (fake)
		return 0;
	if (!src || !dir) {
		fprintf(stderr, "usage: mount.fuse.aquifer CLUSTER_FILE MOUNTPOINT [-o OPTIONS]\n");
		return 2;
	}
	char *margv[] = {"mount", (char *)dir, "--cluster", (char *)src, opts ? "-o" : NULL, (char *)opts, NULL};
	return cmd_mount(opts ? 6 : 4, margv);
}

int cmd_umount(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: aq umount MOUNTPOINT\n");
		return 2;
	}
	if (unmount(argv[1])) {
		fprintf(stderr, "aq umount: cannot unmount %s\n", argv[1]);
		return 1;
	}
	return 0;
}

/* The mount's AQFUSE_IOC_HEARD, for scripts: what other clients finished before this
 * shows on the mount that holds PATH once it returns. */
int cmd_heard(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: aq heard PATH  (a file or directory on an Aquifer mount)\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "aq heard: %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	int rc = ioctl(fd, AQFUSE_IOC_HEARD);
	int err = errno;
	close(fd);
	if (rc) {
		fprintf(stderr, "aq heard: %s: %s\n", argv[1],
			err == ENOTTY ? "not on an Aquifer mount" : strerror(err));
		return 1;
	}
	return 0;
}

static const char *cluster_opt(int argc, char **argv, int *first_free)
{
	const char *cluster = NULL;
	int j = 1;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cluster") && i + 1 < argc)
			cluster = argv[++i];
		else
			argv[j++] = argv[i];
	}
	*first_free = j;
	return cluster;
}

int cmd_status(int argc, char **argv)
{
	int n;
	const char *cluster = cluster_opt(argc, argv, &n);
	bool json = n > 1 && !strcmp(argv[1], "--json");
	struct aq_client *c = cli_connect(cluster);
	if (!c)
		return 1;
	struct aq_statfs s;
	int rc = aq_statfs(c, &s);
	if (rc) {
		fprintf(stderr, "aq status: %s\n", aq_strerror(rc));
		aq_disconnect(c);
		return 1;
	}
	struct cluster_map m;
	char err[256], b1[32], b2[32], b3[32];
	cluster_load(cluster_default_path(cluster), &m, err, sizeof err);
	if (json) {
		printf("{\"servers\":%u,\"buckets\":%u,\"targets\":%u,\"chunk_size\":%u,\"total_bytes\":%llu,"
		       "\"used_bytes\":%llu,\"free_bytes\":%llu,\"files\":%llu}\n",
		       s.servers, s.buckets, s.targets, s.chunk_size, (unsigned long long)s.total_bytes,
		       (unsigned long long)s.used_bytes, (unsigned long long)s.free_bytes, (unsigned long long)s.files);
	} else {
		printf("cluster   %s\n", m.cluster_id);
		for (uint32_t i = 0; i < m.nservers; i++)
			printf("server    %u  %s:%u  up\n", m.servers[i].id, m.servers[i].addr, m.servers[i].port);
		printf("buckets   %u\n", s.buckets);
		printf("targets   %u\n", s.targets);
		printf("chunk     %s\n", cli_bytes(s.chunk_size, b1, sizeof b1));
		printf("space     %s used, %s free of %s\n", cli_bytes(s.used_bytes, b1, sizeof b1),
		       cli_bytes(s.free_bytes, b2, sizeof b2), cli_bytes(s.total_bytes, b3, sizeof b3));
		printf("files     %llu\n", (unsigned long long)s.files);
	}
	aq_disconnect(c);
	return 0;
}

int cmd_changes(int argc, char **argv)
{
	int n;
	const char *cluster = cluster_opt(argc, argv, &n);
	const char *dir = NULL;
	uint64_t cursor = 0;
	long limit = -1;
	for (int i = 1; i < n; i++) {
		if (!strcmp(argv[i], "--since") && i + 1 < n)
			cursor = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--limit") && i + 1 < n)
			limit = atol(argv[++i]);
		else if (!dir && argv[i][0] != '-')
			dir = argv[i];
		else
			dir = NULL, i = n;
	}
	if (!dir) {
		fprintf(stderr, "usage: aq changes DIR [--since CURSOR] [--limit N] [--cluster FILE]\n"
				"  prints one created entry per line (cursor, inode, name), then 'next CURSOR'\n");
		return 2;
	}
	struct aq_client *c = cli_connect(cluster);
	if (!c)
		return 1;
	struct aq_change *ch = aq_malloc(1024 * sizeof *ch);
	int status = 0;
	long printed = 0;
	for (;;) {
		uint32_t want = 1024;
		if (limit >= 0 && limit - printed < want)
			want = (uint32_t)(limit - printed);
		if (want == 0)
			break;
		uint64_t next;
		int got = aq_changes(c, dir, cursor, ch, want, &next);
		if (got < 0) {
			fprintf(stderr, "aq changes: %s: %s\n", dir, aq_strerror(got));
			status = 1;
			break;
		}
		for (int i = 0; i < got; i++)
			printf("%llu %llu %s\n", (unsigned long long)ch[i].cursor, (unsigned long long)ch[i].ino,
			       ch[i].name);
		printed += got;
		cursor = next;
		if ((uint32_t)got < want)
			break;
	}
	if (!status)
		printf("next %llu\n", (unsigned long long)cursor);
	free(ch);
	aq_disconnect(c);
	return status;
}

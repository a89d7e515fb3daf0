/* main.c - `aq`, the command line: dispatches to a subcommand. */
#include "cli/cli.h"

static const struct {
	const char *name;
	int (*fn)(int, char **);
	const char *help;
} cmds[] = {
	{"up", cmd_up, "up [--data DIR] [--mount DIR] [-- AQD-OPTIONS]  format if new, start aqd, mount"},
	{"down", cmd_down, "down [--data DIR] [--mount DIR] unmount and stop aqd"},
	{"mount", cmd_mount,
	 "mount MOUNTPOINT [--cluster FILE] [--foreground] [--allow-other] [--ro] [--nosuid] [--nodev]\n"
	 "           [--attr-timeout S] [--threads N] [--no-io-uring] [-o MOUNT_OPTIONS]"},
	{"umount", cmd_umount, "umount MOUNTPOINT"},
	{"heard", cmd_heard, "heard PATH                       returns once the mount holding PATH shows what other clients finished"},
	{"status", cmd_status, "status [--cluster FILE]          servers, buckets, targets, space, files"},
	{"changes", cmd_changes, "changes DIR [--since CURSOR] [--limit N] [--cluster FILE]  entries created in DIR"},
	{"tier", cmd_tier, "tier set|demote|status|policy|info ...  the S3 object tier (aq tier --help)"},
	{"prefetch", cmd_prefetch, "prefetch PATH [--jobs N]         brings a tree back from S3 to flash, with progress"},
	{"bench", cmd_bench, "bench meta [--dir PATH] [--files N] [--threads T] [--via native|fuse] [--compare DIR] [--json]"},
};

static void usage(FILE *f)
{
	fprintf(f, "usage: aq COMMAND [options]\n\ncommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		fprintf(f, "  aq %s\n", cmds[i].help);
	fprintf(f, "\nCommands that talk to a cluster find it by --cluster FILE, else $AQ_CLUSTER, else "
		   "./var/cluster.conf.\n");
}

int main(int argc, char **argv)
{
	const char *self = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	if (!strcmp(self, "mount.fuse.aquifer") || !strcmp(self, "aquifer"))
		return cmd_mount_helper(argc, argv);
	if (argc < 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "aq: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}

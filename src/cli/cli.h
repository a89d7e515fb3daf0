/* cli.h - the aq command line's subcommands. Each returns a process exit status. */
#ifndef AQ_CLI_H
#define AQ_CLI_H
#include "aq.h"
#include "common/common.h"

int cmd_up(int argc, char **argv);
int cmd_down(int argc, char **argv);
int cmd_mount(int argc, char **argv);
/* argv[0] mount.fuse.aquifer or aquifer: mount(8)'s helper, SOURCE DIR [-o OPTIONS] */
int cmd_mount_helper(int argc, char **argv);
int cmd_umount(int argc, char **argv);
int cmd_heard(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_changes(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tier(int argc, char **argv);
int cmd_prefetch(int argc, char **argv);

/* aq bench's subcommands (bench.c dispatches). */
int bench_meta(int argc, char **argv);
int bench_gen(int argc, char **argv);
int bench_train(int argc, char **argv);
int bench_tier(int argc, char **argv);
int bench_fsync(int argc, char **argv);

/* Connects as every command does: --cluster FILE, else $AQ_CLUSTER, else ./var/cluster.conf.
 * Prints a clear message and returns NULL on failure. */
struct aq_client *cli_connect(const char *cluster_file);
/* A TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int cli_free_port(void);
/* Human-readable bytes ("1.5 GiB"). */
const char *cli_bytes(uint64_t n, char *buf, size_t size);
#endif

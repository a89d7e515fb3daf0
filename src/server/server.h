/*
 * server.h - aqd: the metadata buckets and storage targets of one host behind one
 * network endpoint. server.c decodes requests and calls meta_* and data_*; it also
 * tracks which inodes clients hold open (so the orphan collector keeps their data until
 * the last close) and runs that collector, and it hands TIER requests to the object tier
 * (src/tier), which also runs its own scanner thread.
 */
#ifndef AQ_SERVER_H
#define AQ_SERVER_H
#include "common/cluster.h"
#include "data/data.h"
#include "meta/meta.h"
#include "net/net.h"
#include "tier/tier.h"

struct server_options {
	const char *data_dir;    /* holds cluster.conf, meta/, targets/ */
	uint32_t server_id;
	uint32_t workers;
	bool meta_sync;          /* sync the metadata WAL on every commit */
	uint32_t tier_interval_s;        /* object tier scanner period (0: 60 s) */
	uint64_t target_capacity_bytes;  /* per-target quota (0: the file system's size) */
	uint32_t direct_read_min;        /* see data_options.direct_min */
	uint32_t poll_us;                /* see net_options.poll_us */
	uint32_t reclaim_s;              /* how long orphans found at start wait for REOPEN */
};

struct server;
int server_start(const struct server_options *opt, struct server **out);
void server_stop(struct server *s);
#endif

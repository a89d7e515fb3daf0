/*
 * tier_internal.h - the state of one server's object tier, shared by tier.c (requests,
 * configuration) and scan.c (last reads, the scanner).
 *
 * Lock order: set_mu, then mu, then reads_mu (a leaf). mu is never held across an S3
 * call or a data-layer call that may reach S3: those run with a pointer taken under mu,
 * which stays valid because a replaced client is only retired, and freed at close.
 */
#ifndef AQ_TIER_INTERNAL_H
#define AQ_TIER_INTERNAL_H
#include "tier/tier.h"
#include <pthread.h>

struct s3_client;

#define TIER_RETIRED_MAX 64           /* replaced S3 clients kept until close */
#define TIER_READS_CAP (1u << 17)     /* last-read table slots (power of two) */
#define TIER_BATCH_MAX 4096           /* inodes per data_demote call from the scanner */
#define TIER_CANDIDATES_MAX (1u << 18) /* watermark candidates kept per pass (the oldest) */
#define TIER_RELATIME_NS (24ll * 3600 * 1000000000) /* atime written at least this often */
#define TIER_FAIL_BACKOFF_S 10        /* a pass that failed on S3: the next waits this long */

/* One recently read inode: when, and whether its atime may need writing. */
struct tier_read {
	uint64_t ino;                 /* 0: free slot */
	int64_t read_ns;
	/* Reads before this need no atime written: the metadata's atime is newer than its
	 * mtime and younger than TIER_RELATIME_NS (0: unknown, ask the metadata). */
	int64_t quiet_until;
	uint32_t changes;             /* tier_note_change calls: a check older than one is stale */
	bool dirty;
};

struct tier {
	struct tier_options opt;
	uint32_t targets[AQ_TARGETS_MAX];
	char prefix[256];
	char conf_path[4200];

	pthread_mutex_t set_mu;       /* one configuration change at a time */
	pthread_mutex_t mu;           /* guards everything from here to the scanner's figures */
	bool configured;              /* tier.conf exists (conf holds it) */
	struct tier_conf conf;
	struct s3_client *s3;         /* attached to the data store; NULL: none */
	struct s3_client *retired[TIER_RETIRED_MAX];
	uint32_t nretired;
	bool check_due;               /* the scanner should s3_check the attached bucket */
	char check[256];              /* the last check's line */
	char last_error[512];         /* the scanner's last failure ("" after a clean pass) */
	uint64_t passes, rule_files, watermark_files, demoted_bytes, reclaimed_bytes;
	bool rules_changed;           /* a POLICY came in: walk at the next pass */
	uint64_t rules_seen;          /* directories with a rule in the last walk */

	pthread_mutex_t reads_mu;     /* guards reads, nreads, reads_dropped */
	struct tier_read *reads;
	uint32_t nreads;
	uint64_t reads_dropped;

	pthread_t thread;
	pthread_mutex_t run_mu;
	pthread_cond_t run_cv;
	bool stop;
};

extern const struct aq_cred tier_root_cred;

/* The attached client (NULL: none), to call without mu held. */
struct s3_client *tier_client(struct tier *t);
/* Demotes n inodes on every local target (on those in only, when only is not NULL).
 * Returns bytes freed or -errno; msg says why on failure. */
int64_t tier_demote_local(struct tier *t, const uint64_t *inos, uint32_t n, const bool *only, char *msg,
			  size_t msg_size);
/* The directory's own rule (TIER_RULE_NONE when it has none or an unreadable one). */
void tier_rule_of(struct tier *t, uint64_t dir, struct tier_rule *out);
/* The most recent read of ino this server remembers (0: none). */
int64_t tier_last_read(struct tier *t, uint64_t ino);
/* Writes remembered read times to metadata as atime (relatime: when atime <= mtime or is
 * a day old; every remembered time when all is set, as at close). */
void tier_flush_reads(struct tier *t, bool all);
/* Loads the keys and opens a client for conf. Returns 0 or -errno with why in msg. */
int tier_client_open(const struct tier_conf *conf, struct s3_client **out, char *msg, size_t msg_size);
/* The scanner thread. */
void *tier_scan_main(void *arg);

#endif

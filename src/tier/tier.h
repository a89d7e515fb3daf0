/*
 * tier.h - the object tier of one aqd: which bucket (DATA/tier.conf), the S3 client that
 * the storage targets use, the per-directory rules (cold-after, pin), the files' last-read
 * times, and the scanner thread that applies rules, capacity watermarks and pack-object
 * reclaim. The data layer (src/data/tier.c) moves chunks between flash and S3 and keeps
 * their accounting; this module decides which files go and when, and answers TIER.
 *
 * Invariants:
 * - tier.conf never holds a secret: keys come from aqd's environment (AWS_ACCESS_KEY_ID,
 *   AWS_SECRET_ACCESS_KEY) or the credentials file it names (mode 0600), and are never
 *   logged or put in a reply.
 * - A configuration is written (and attached) only after S3 accepted its credentials; a
 *   bucket that still holds live pack objects is never swapped for another one.
 * - A pinned file is never demoted by a rule or a watermark (a user's demote still may).
 * - Nothing here frees flash itself: data_demote does, after S3 confirmed the upload.
 */
#ifndef AQ_TIER_H
#define AQ_TIER_H
#include "common/common.h"
#include "aq.h"
#include "data/data.h"
#include "meta/meta.h"

#define TIER_CONF_FILE "tier.conf"
#define TIER_XATTR "trusted.aquifer.tier"    /* a directory's rule, as tier_rule_format writes it */
#define TIER_HIGH_DEFAULT 0.85
#define TIER_LOW_DEFAULT 0.70
#define TIER_RECLAIM_START 0.13              /* share of dead object bytes that starts reclaim */
#define TIER_RECLAIM_STOP 0.07
#define TIER_TEXT_MAX 4096                   /* a configuration, a rule, a status text */
#define TIER_COLD_AFTER_MAX_S (100ull * 365 * 86400)

/* ---- configuration and rules as text (conf.c, pure) ---- */

struct tier_conf {
	char endpoint[256];
	char bucket[64];
	char region[32];
	bool virtual_host;
	char credentials_file[1024];   /* "" : aqd's environment */
	double high, low;              /* watermarks: share of a target's capacity */
};
/* Parses "key = value" lines (endpoint, bucket, region, virtual_host, credentials_file,
 * high, low; '#' comments). Unset high/low take the defaults. Returns 0, or -EINVAL with
 * the reason in err (an unknown key, a secret, a value that does not fit or parse). */
int tier_conf_parse(const char *text, size_t len, struct tier_conf *out, char *err, size_t err_size);
/* Writes c as that text into buf (NUL-terminated); returns its length or -ENAMETOOLONG. */
int tier_conf_format(const struct tier_conf *c, char *buf, size_t size);

enum tier_rule_kind { TIER_RULE_NONE = 0, TIER_RULE_COLD_AFTER = 1, TIER_RULE_PIN = 2 };
struct tier_rule {
	enum tier_rule_kind kind;
	uint64_t cold_after_s;         /* TIER_RULE_COLD_AFTER: 1..TIER_COLD_AFTER_MAX_S */
};
/* "cold-after SECONDS", "pin" or "clear" (TIER_RULE_NONE). Returns 0 or -EINVAL. */
int tier_rule_parse(const char *text, size_t len, struct tier_rule *out);
/* The text tier_rule_parse reads back ("" for NONE); returns its length. */
int tier_rule_format(const struct tier_rule *r, char *buf, size_t size);

/* ---- the tier of one server (tier.c, scan.c) ---- */

struct tier_options {
	const char *data_dir;          /* holds tier.conf */
	const char *prefix;            /* object names start with it: "aquifer/<cluster id>/" */
	struct meta_store *meta;
	struct data_store *data;
	uint32_t ntargets;             /* local targets */
	const uint32_t *targets;
	uint32_t interval_s;           /* scanner pass period (rules, watermarks, reclaim) */
};

struct tier;
/* Reads tier.conf if there is one and attaches its bucket (without waiting on S3: the
 * scanner checks it and says so in the log), then starts the scanner. Returns 0 or -errno
 * (a tier.conf that does not parse stops aqd: better than running with data unreachable). */
int tier_open(const struct tier_options *opt, struct tier **out);
/* Stops the scanner, writes pending last-read times, detaches the bucket from the data
 * store and frees the S3 clients. No request may be in flight. */
void tier_close(struct tier *t);

/* A chunk of ino was read: cheap, from any thread (the read path calls it). */
void tier_note_read(struct tier *t, uint64_t ino);
/* ino's data or attributes changed through this server (its mtime may be newer than its
 * atime now): the next read of it asks relatime again. Cheap, from any thread. */
void tier_note_change(struct tier *t, uint64_t ino);

/* The TIER requests. Each returns 0 or -errno; where a text is given (msg, at most
 * msg_size bytes, NUL-terminated), it says why a request failed, or what a query found. */
struct tier_result {
	uint64_t bytes, files, skipped;
};
/* Root only. Parses conf, loads the keys, checks the bucket (s3_check), writes tier.conf
 * (0600) and attaches. On failure nothing changes and msg says why (S3's own words). */
int tier_set(struct tier *t, const struct aq_cred *cr, const char *conf, size_t len, char *msg, size_t msg_size);
/* Demotes the files among inos that cr may read (others count as skipped) on every local
 * target. bytes: freed from flash. */
int tier_demote(struct tier *t, const struct aq_cred *cr, const uint64_t *inos, uint32_t n, struct tier_result *out,
		char *msg, size_t msg_size);
/* Brings ino's cold chunks back to flash on every local target; counts as a read. */
int tier_hydrate(struct tier *t, const struct aq_cred *cr, uint64_t ino, struct tier_result *out, char *msg,
		 size_t msg_size);
int tier_usage(struct tier *t, const struct aq_cred *cr, uint64_t ino, struct data_tier_usage *out);
/* rule NULL (len 0) asks; otherwise sets the rule of directory dir (root or the owner).
 * Either way msg gets "own = RULE\neffective = RULE\nfrom = INO\n". */
int tier_policy(struct tier *t, const struct aq_cred *cr, uint64_t dir, const char *rule, size_t len, char *msg,
		size_t msg_size);
/* Configuration (no secrets) and scanner figures as "key = value" lines in msg; out gets
 * the pack objects summed over local targets. */
int tier_status(struct tier *t, struct data_tier_stat *out, char *msg, size_t msg_size);

#endif

/*
 * tier.c - the object tier's configuration and its requests (SET, DEMOTE, HYDRATE, USAGE,
 * POLICY, STATUS). Requests run on aqd's worker threads: DEMOTE and HYDRATE wait on S3.
 * A configuration reaches tier.conf only after S3 accepted it, so a typo or a wrong key
 * never replaces a working tier, and aqd restarts with what last worked.
 */
#include "tier/tier_internal.h"
#include "s3/s3.h"
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

const struct aq_cred tier_root_cred = {.uid = 0, .gid = 0};

struct s3_client *tier_client(struct tier *t)
{
	pthread_mutex_lock(&t->mu);
	struct s3_client *s3 = t->s3;
	pthread_mutex_unlock(&t->mu);
	return s3;
}

/* The calling thread's S3 text, or "" (the data layer may have called S3 elsewhere). */
static const char *s3_why(void)
{
	const char *e = s3_last_error();
	return e ? e : "";
}

int tier_client_open(const struct tier_conf *conf, struct s3_client **out, char *msg, size_t msg_size)
{
	struct s3_config cfg;
	memset(&cfg, 0, sizeof cfg);
	_Static_assert(sizeof cfg.endpoint >= sizeof conf->endpoint && sizeof cfg.bucket >= sizeof conf->bucket &&
			       sizeof cfg.region >= sizeof conf->region,
		       "tier.conf fields fit the S3 configuration");
	snprintf(cfg.endpoint, sizeof cfg.endpoint, "%s", conf->endpoint);
	snprintf(cfg.bucket, sizeof cfg.bucket, "%s", conf->bucket);
	snprintf(cfg.region, sizeof cfg.region, "%s", conf->region);
	cfg.virtual_host = conf->virtual_host;
	const char *file = conf->credentials_file[0] ? conf->credentials_file : NULL;
	int rc = s3_load_credentials(&cfg, file);
	if (rc) {
		if (file)
			snprintf(msg, msg_size, "cannot load S3 credentials from %s: %s%s", file, aq_strerror(rc),
				 rc == -EPERM ? " (it must be a regular file of mode 0600)" : "");
		else
			snprintf(msg, msg_size, "no S3 credentials: aqd's environment has no AWS_ACCESS_KEY_ID and "
						"AWS_SECRET_ACCESS_KEY (or pass a credentials file)");
		goto out;
	}
	rc = s3_open(&cfg, out);
	if (rc)
		snprintf(msg, msg_size, "S3 configuration refused: %s %s", aq_strerror(rc), s3_why());
out:
	/* the keys were copied by s3_open: wipe this stack copy */
	explicit_bzero(cfg.access_key, sizeof cfg.access_key);
	explicit_bzero(cfg.secret_key, sizeof cfg.secret_key);
	return rc;
}

/* Makes s3 the attached client (NULL: none); the old one is retired, not freed: a request
 * on another thread may still be using it. Called with mu held. */
static int attach_locked(struct tier *t, struct s3_client *s3)
{
	if (t->s3) {
		if (t->nretired == TIER_RETIRED_MAX)
			return -EBUSY;
		t->retired[t->nretired++] = t->s3;
	}
	t->s3 = s3;
	data_set_tier(t->opt.data, s3, t->prefix);
	return 0;
}

static int read_conf_file(const char *path, char *buf, size_t size, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ssize_t n = read(fd, buf, size);
	int rc = n < 0 ? -errno : (size_t)n == size ? -EFBIG : 0;
	close(fd);
	*len = n > 0 ? (size_t)n : 0;
	return rc;
}

/* Writes text as path atomically (temporary file, fsync, rename, fsync of the directory),
 * mode 0600. */
static int write_conf_file(const char *dir, const char *path, const char *text, size_t len)
{
	char tmp[4300];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	int rc = 0;
	if (fchmod(fd, 0600) || write(fd, text, len) != (ssize_t)len || fsync(fd))
		rc = errno ? -errno : -EIO;
	close(fd);
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

int tier_open(const struct tier_options *opt, struct tier **out)
{
	AQ_ASSERT(opt->ntargets <= AQ_TARGETS_MAX);
	struct tier *t = aq_calloc(1, sizeof *t);
	t->opt = *opt;
	memcpy(t->targets, opt->targets, opt->ntargets * sizeof *opt->targets);
	t->opt.targets = t->targets;
	if (!t->opt.interval_s)
		t->opt.interval_s = 60;
	snprintf(t->prefix, sizeof t->prefix, "%s", opt->prefix);
	t->opt.prefix = t->prefix;
	snprintf(t->conf_path, sizeof t->conf_path, "%s/%s", opt->data_dir, TIER_CONF_FILE);
	pthread_mutex_init(&t->set_mu, NULL);
	pthread_mutex_init(&t->mu, NULL);
	pthread_mutex_init(&t->reads_mu, NULL);
	pthread_mutex_init(&t->run_mu, NULL);
	pthread_cond_init(&t->run_cv, NULL);
	t->reads = aq_calloc(TIER_READS_CAP, sizeof *t->reads);
	t->rules_changed = true; /* walk once after start */

	char text[TIER_TEXT_MAX + 1], msg[512];
	size_t len;
	int rc = read_conf_file(t->conf_path, text, sizeof text, &len);
	if (rc == 0) {
		rc = tier_conf_parse(text, len, &t->conf, msg, sizeof msg);
		if (rc) {
			log_error("%s: %s", t->conf_path, msg);
			goto err;
		}
		t->configured = true;
		struct s3_client *s3;
		rc = tier_client_open(&t->conf, &s3, msg, sizeof msg);
		if (rc) {
			/* keep serving: the scanner tries again each pass (keys may come later) */
			log_error("object tier: bucket %s at %s not attached: %s", t->conf.bucket, t->conf.endpoint, msg);
			snprintf(t->last_error, sizeof t->last_error, "%s", msg);
		} else {
			attach_locked(t, s3);
			t->check_due = true;
			log_info("object tier: bucket %s at %s attached (prefix %s)", t->conf.bucket, t->conf.endpoint,
				 t->prefix);
		}
	} else if (rc != -ENOENT) {
		log_error("cannot read %s: %s", t->conf_path, aq_strerror(rc));
		goto err;
	}
	rc = pthread_create(&t->thread, NULL, tier_scan_main, t);
	if (rc) {
		rc = -rc;
		goto err;
	}
	*out = t;
	return 0;
err:
	if (t->s3) {
		data_set_tier(t->opt.data, NULL, NULL);
		s3_close(t->s3);
	}
	free(t->reads);
	free(t);
	return rc;
}

void tier_close(struct tier *t)
{
	if (!t)
		return;
	pthread_mutex_lock(&t->run_mu);
	t->stop = true;
	pthread_cond_signal(&t->run_cv);
	pthread_mutex_unlock(&t->run_mu);
	pthread_join(t->thread, NULL);
	tier_flush_reads(t, true);
	data_set_tier(t->opt.data, NULL, NULL);
	if (t->s3)
		s3_close(t->s3);
	for (uint32_t i = 0; i < t->nretired; i++)
		s3_close(t->retired[i]);
	free(t->reads);
	pthread_mutex_destroy(&t->set_mu);
	pthread_mutex_destroy(&t->mu);
	pthread_mutex_destroy(&t->reads_mu);
	pthread_mutex_destroy(&t->run_mu);
	pthread_cond_destroy(&t->run_cv);
	free(t);
}

/* Pack objects of every local target, summed. Returns 0 or the first error. */
static int stat_objects(struct tier *t, struct data_tier_stat *sum)
{
	memset(sum, 0, sizeof *sum);
	int first = 0;
	for (uint32_t i = 0; i < t->opt.ntargets; i++) {
		struct data_tier_stat ts;
		int rc = data_tier_stat(t->opt.data, t->targets[i], &ts);
		if (rc) {
			first = first ? first : rc;
			continue;
		}
		sum->objects += ts.objects;
		sum->object_bytes += ts.object_bytes;
		sum->live_bytes += ts.live_bytes;
	}
	return first;
}

int tier_set(struct tier *t, const struct aq_cred *cr, const char *text, size_t len, char *msg, size_t msg_size)
{
	if (cr->uid != 0) {
		snprintf(msg, msg_size, "only root may configure the object tier");
		return -EPERM;
	}
	struct tier_conf conf;
	int rc = tier_conf_parse(text, len, &conf, msg, msg_size);
	if (rc)
		return rc;
	pthread_mutex_lock(&t->set_mu);
	pthread_mutex_lock(&t->mu);
	bool moving = t->configured && strcmp(t->conf.bucket, conf.bucket);
	char old_bucket[sizeof conf.bucket];
	snprintf(old_bucket, sizeof old_bucket, "%s", t->conf.bucket);
	bool full = t->s3 && t->nretired == TIER_RETIRED_MAX;
	pthread_mutex_unlock(&t->mu);
	if (full) {
		snprintf(msg, msg_size, "the object tier was reconfigured too often since aqd started; restart aqd");
		rc = -EOVERFLOW; /* not EBUSY: the client retries that */
		goto out;
	}
	if (moving) {
		/* cold chunks live in the old bucket: another one would make them unreachable */
		struct data_tier_stat st;
		rc = stat_objects(t, &st);
		if (rc || st.objects) {
			snprintf(msg, msg_size,
				 "bucket %s still holds %llu pack objects of this cluster; bring their data back "
				 "(aq prefetch /) before moving to bucket %s%s%s",
				 old_bucket, (unsigned long long)st.objects, conf.bucket, rc ? ": " : "",
				 rc ? aq_strerror(rc) : "");
			rc = -ENOTEMPTY;
			goto out;
		}
	}
	struct s3_client *s3;
	rc = tier_client_open(&conf, &s3, msg, msg_size);
	if (rc)
		goto out;
	char check[256];
	rc = s3_check(s3, check, sizeof check);
	if (rc) {
		snprintf(msg, msg_size, "%s", check[0] ? check : aq_strerror(rc));
		s3_close(s3);
		goto out;
	}
	char conf_text[TIER_TEXT_MAX];
	int n = tier_conf_format(&conf, conf_text, sizeof conf_text);
	rc = n < 0 ? n : write_conf_file(t->opt.data_dir, t->conf_path, conf_text, (size_t)n);
	if (rc) {
		snprintf(msg, msg_size, "cannot write %s: %s", t->conf_path, aq_strerror(rc));
		s3_close(s3);
		goto out;
	}
	pthread_mutex_lock(&t->mu);
	rc = attach_locked(t, s3);
	AQ_ASSERT(rc == 0); /* room was checked above, under set_mu */
	t->conf = conf;
	t->configured = true;
	t->check_due = false;
	t->last_error[0] = 0;
	snprintf(t->check, sizeof t->check, "%s", check);
	pthread_mutex_unlock(&t->mu);
	snprintf(msg, msg_size, "%s", check);
	log_info("object tier: bucket %s at %s (region %s) attached: %s", conf.bucket, conf.endpoint, conf.region,
		 check);
out:
	pthread_mutex_unlock(&t->set_mu);
	if (rc)
		log_warn("object tier: aq tier set refused: %s", msg);
	return rc;
}

int64_t tier_demote_local(struct tier *t, const uint64_t *inos, uint32_t n, const bool *only, char *msg,
			  size_t msg_size)
{
	int64_t freed = 0;
	for (uint32_t i = 0; i < t->opt.ntargets; i++) {
		if (only && !only[i])
			continue;
		int64_t r = data_demote(t->opt.data, t->targets[i], inos, n);
		if (r < 0) {
			const char *why = s3_why();
			snprintf(msg, msg_size, "demote on target %u: %s%s%s; nothing of the failed pack was freed "
						"from flash",
				 t->targets[i], r == -EHOSTUNREACH || r == -ETIMEDOUT ? "S3 unreachable"
						: r == -EAGAIN ? "S3 kept answering 503 SlowDown"
						: r == -EACCES ? "S3 refused the credentials"
						: r == -ENOTCONN ? "no object tier configured (aq tier set)"
						: aq_strerror((int)r),
				 why[0] ? ": " : "", why);
			return r;
		}
		freed += r;
	}
	return freed;
}

/* Returns 0 when cr may read ino, a regular file; -errno otherwise. */
static int may_read_file(struct tier *t, const struct aq_cred *cr, uint64_t ino)
{
	struct aq_attr a;
	int rc = meta_getattr(t->opt.meta, ino, &a);
	if (rc)
		return rc;
	if (S_ISDIR(a.mode))
		return -EISDIR;
	if (!S_ISREG(a.mode))
		return -EINVAL;
	return meta_access(t->opt.meta, cr, ino, R_OK);
}

int tier_demote(struct tier *t, const struct aq_cred *cr, const uint64_t *inos, uint32_t n, struct tier_result *out,
		char *msg, size_t msg_size)
{
	memset(out, 0, sizeof *out);
	if (!tier_client(t)) {
		pthread_mutex_lock(&t->mu);
		if (t->configured)
			snprintf(msg, msg_size, "object tier not attached: %s", t->last_error);
		else
			snprintf(msg, msg_size, "no object tier configured: run aq tier set first");
		pthread_mutex_unlock(&t->mu);
		return -ENOTCONN;
	}
	uint64_t *ok = aq_malloc((n ? n : 1) * sizeof *ok);
	uint32_t nok = 0;
	for (uint32_t i = 0; i < n; i++) {
		if (may_read_file(t, cr, inos[i]))
			out->skipped++;
		else
			ok[nok++] = inos[i];
	}
	int64_t r = nok ? tier_demote_local(t, ok, nok, NULL, msg, msg_size) : 0;
	free(ok);
	if (r < 0)
		return (int)r;
	out->bytes = (uint64_t)r;
	out->files = nok;
	pthread_mutex_lock(&t->mu);
	t->demoted_bytes += (uint64_t)r;
	pthread_mutex_unlock(&t->mu);
	return 0;
}

int tier_hydrate(struct tier *t, const struct aq_cred *cr, uint64_t ino, struct tier_result *out, char *msg,
		 size_t msg_size)
{
	memset(out, 0, sizeof *out);
	int rc = may_read_file(t, cr, ino);
	if (rc)
		return rc;
	/* a prefetched file is about to be read: the rules must not send it back at once */
	tier_note_read(t, ino);
	for (uint32_t i = 0; i < t->opt.ntargets; i++) {
		int64_t r = data_hydrate(t->opt.data, t->targets[i], ino);
		if (r < 0) {
			const char *why = s3_why();
			snprintf(msg, msg_size, "recall on target %u: %s%s%s", t->targets[i],
				 r == -EHOSTUNREACH || r == -ETIMEDOUT ? "S3 unreachable" : aq_strerror((int)r),
				 why[0] ? ": " : "", why);
			return (int)r;
		}
		out->bytes += (uint64_t)r;
	}
	out->files = 1;
	return 0;
}

int tier_usage(struct tier *t, const struct aq_cred *cr, uint64_t ino, struct data_tier_usage *out)
{
	memset(out, 0, sizeof *out);
	int rc = may_read_file(t, cr, ino);
	if (rc)
		return rc;
	for (uint32_t i = 0; i < t->opt.ntargets; i++) {
		struct data_tier_usage u;
		rc = data_tier_usage(t->opt.data, t->targets[i], ino, &u);
		if (rc)
			return rc;
		out->hot += u.hot;
		out->cold += u.cold;
		out->both += u.both;
	}
	return 0;
}

void tier_rule_of(struct tier *t, uint64_t dir, struct tier_rule *out)
{
	char buf[128];
	memset(out, 0, sizeof *out);
	int n = meta_getxattr(t->opt.meta, &tier_root_cred, dir, TIER_XATTR, buf, sizeof buf);
	if (n <= 0)
		return;
	if (tier_rule_parse(buf, (size_t)n, out))
		log_debug("directory %llx: unreadable %s, ignored", (unsigned long long)dir, TIER_XATTR);
}

int tier_policy(struct tier *t, const struct aq_cred *cr, uint64_t dir, const char *text, size_t len, char *msg,
		size_t msg_size)
{
	struct aq_attr a;
	int rc = meta_getattr(t->opt.meta, dir, &a);
	if (rc)
		return rc;
	if (!S_ISDIR(a.mode))
		return -ENOTDIR;
	if (len) {
		struct tier_rule rule;
		if (tier_rule_parse(text, len, &rule)) {
			snprintf(msg, msg_size, "a rule is \"cold-after SECONDS\", \"pin\" or \"clear\"");
			return -EINVAL;
		}
		if (cr->uid != 0 && cr->uid != a.uid) {
			snprintf(msg, msg_size, "only root or the directory's owner may set its rule");
			return -EPERM;
		}
		char val[64];
		int n = tier_rule_format(&rule, val, sizeof val);
		if (rule.kind == TIER_RULE_NONE) {
			rc = meta_removexattr(t->opt.meta, &tier_root_cred, dir, TIER_XATTR);
			if (rc == -ENODATA)
				rc = 0;
		} else {
			rc = meta_setxattr(t->opt.meta, &tier_root_cred, dir, TIER_XATTR, val, (size_t)n, 0);
		}
		if (rc)
			return rc;
		pthread_mutex_lock(&t->mu);
		t->rules_changed = true;
		pthread_mutex_unlock(&t->mu);
		log_info("object tier: directory %llx rule set to \"%s\" by uid %u", (unsigned long long)dir,
			 n ? val : "clear", cr->uid);
	}
	/* The effective rule is the nearest one up the tree (a directory's own wins). */
	struct tier_rule own, eff;
	tier_rule_of(t, dir, &own);
	eff = own;
	uint64_t from = own.kind ? dir : 0, cur = dir;
	for (int depth = 0; !eff.kind && cur != AQ_ROOT_INO && depth < 4096; depth++) {
		struct aq_attr parent;
		if (meta_lookup(t->opt.meta, &tier_root_cred, cur, "..", 2, &parent))
			break;
		cur = parent.ino;
		tier_rule_of(t, cur, &eff);
		if (eff.kind)
			from = cur;
	}
	char own_text[64], eff_text[64];
	tier_rule_format(&own, own_text, sizeof own_text);
	tier_rule_format(&eff, eff_text, sizeof eff_text);
	snprintf(msg, msg_size, "own = %s\neffective = %s\nfrom = %llu\n", own_text, eff_text, (unsigned long long)from);
	return 0;
}

int tier_status(struct tier *t, struct data_tier_stat *out, char *msg, size_t msg_size)
{
	int src = stat_objects(t, out);
	pthread_mutex_lock(&t->mu);
	const struct tier_conf *c = &t->conf;
	char cred[1100];
	if (!t->configured)
		cred[0] = 0;
	else if (c->credentials_file[0])
		snprintf(cred, sizeof cred, "file %s", c->credentials_file);
	else
		snprintf(cred, sizeof cred, "environment");
	snprintf(msg, msg_size,
		 "configured = %d\nattached = %d\nendpoint = %s\nbucket = %s\nregion = %s\nvirtual_host = %d\n"
		 "credentials = %s\nhigh = %.4f\nlow = %.4f\ninterval_s = %u\ncheck = %s\nlast_error = %s%s%s\n"
		 "passes = %llu\nrule_demoted_files = %llu\nwatermark_demoted_files = %llu\ndemoted_bytes = %llu\n"
		 "reclaimed_bytes = %llu\n",
		 t->configured, t->s3 != NULL, t->configured ? c->endpoint : "", t->configured ? c->bucket : "",
		 t->configured ? c->region : "", c->virtual_host, cred, t->configured ? c->high : 0,
		 t->configured ? c->low : 0, t->opt.interval_s, t->check, t->last_error,
		 src && src != -ENOSYS && !t->last_error[0] ? "object statistics: " : "",
		 src && src != -ENOSYS && !t->last_error[0] ? aq_strerror(src) : "", (unsigned long long)t->passes,
		 (unsigned long long)t->rule_files, (unsigned long long)t->watermark_files,
		 (unsigned long long)t->demoted_bytes, (unsigned long long)t->reclaimed_bytes);
	pthread_mutex_unlock(&t->mu);
	return 0;
}

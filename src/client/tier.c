/*
 * tier.c - libaq's object-tier calls: one TIER request (sub-command in flags) per server.
 * A file's chunks may sit on every server's targets, so DEMOTE, HYDRATE and USAGE go to
 * all of them and their answers are summed, as aq_fsync does. TIER requests are never
 * batched (a batch runs on the server's loop thread; these wait on S3), and a server
 * whose S3 workers are all busy answers EBUSY, which is retried here with backoff.
 */
#include "client/client_internal.h"
#include <unistd.h>

#define TIER_BUSY_WAIT_S 600          /* how long a call keeps retrying a busy server */
#define TIER_ERROR_MAX 1024

static __thread char tier_error[TIER_ERROR_MAX];

const char *aq_tier_last_error(void) { return tier_error; }

/* Keeps the server's text (one line per line, no control characters) or err's. */
static void set_error(int err, const uint8_t *text, uint32_t len)
{
	if (!text || !len) {
		snprintf(tier_error, sizeof tier_error, "%s", aq_strerror(err));
		return;
	}
	size_t n = MIN((size_t)len, sizeof tier_error - 1);
	for (size_t i = 0; i < n; i++)
		tier_error[i] = text[i] == '\n' || (text[i] >= 0x20 && text[i] != 0x7f) ? (char)text[i] : '?';
	tier_error[n] = 0;
}

/* One TIER request to server, retried while the connection is down (as rpc_do does) or the
 * server is busy. On success rep points into *callp's payload (rpc_free it). */
static int tier_call(struct aq_client *c, uint32_t server, const struct proto_req *req, struct proto_reply *rep,
		     struct rpc_call **callp)
{
	AQ_ASSERT(req->op == OP_TIER);
	struct wbuf w;
	wbuf_init(&w, 128 + req->data_len);
	proto_req_encode(&w, req);
	uint64_t start = aq_mono_ns(), deadline = 0;
	int err;
	struct rpc_call *call = NULL;
	for (int attempt = 0;; attempt++) {
		call = rpc_start(c, server, OP_TIER, &w, 0, &err);
		if (call)
			err = rpc_wait(call);
		bool answered = call && call->answered;
		uint64_t waited_s = (aq_mono_ns() - start) / 1000000000ull;
		bool busy = answered && err == -EBUSY && waited_s < TIER_BUSY_WAIT_S;
		if (!busy && (answered || !aq_err_unreachable(err)))
			break;
		rpc_free(call);
		call = NULL;
		/* a server away: one reconnect window for all calls, as rpc_do waits */
		if (!busy && !rpc_retry_wait(c, server, &deadline, attempt))
			break;
		if (busy)
			usleep(attempt < 10 ? 20000u << MIN(attempt, 3) : 250000);
	}
	wbuf_free(&w);
	if (!err) {
		err = proto_reply_decode(OP_TIER, call->payload, call->len, rep);
		if (err)
			log_warn("malformed TIER reply from server %u", server);
	}
	if (err) {
		set_error(err, call && call->answered ? call->payload : NULL, call ? call->len : 0);
		rpc_free(call);
		call = NULL;
	} else {
		tier_error[0] = 0;
	}
	*callp = call;
	return err;
}

/* Sends r to every server and sums the numbers of the answers (skipped: the most any
 * server skipped: each sees the same inodes). fn, when given, also sees each reply. */
static int tier_all(struct aq_client *c, const struct proto_req *r, struct proto_tier *sum,
		    void (*fn)(void *arg, uint32_t i, const struct proto_reply *rep), void *arg)
{
	memset(sum, 0, sizeof *sum);
	for (uint32_t i = 0; i < c->map.nservers; i++) {
		struct proto_reply rep;
		struct rpc_call *call;
		int rc = tier_call(c, c->map.servers[i].id, r, &rep, &call);
		if (rc)
			return rc;
		const struct proto_tier *t = &rep.tier;
		sum->bytes += t->bytes;
		sum->files += t->files;
		sum->skipped = MAX(sum->skipped, t->skipped);
		sum->hot += t->hot;
		sum->cold += t->cold;
		sum->both += t->both;
		sum->objects += t->objects;
		sum->object_bytes += t->object_bytes;
		sum->live_bytes += t->live_bytes;
		if (fn)
			fn(arg, i, &rep);
		rpc_free(call);
	}
	return 0;
}

/* A value must be one line of text without '=' surprises: it goes into "key = value" lines. */
static bool one_line(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

int aq_tier_set(struct aq_client *c, const struct aq_tier_config *cfg)
{
	if (!one_line(cfg->endpoint) || !one_line(cfg->bucket) || !one_line(cfg->region) ||
	    !one_line(cfg->credentials_file) || !cfg->endpoint[0] || !cfg->bucket[0]) {
		snprintf(tier_error, sizeof tier_error, "endpoint and bucket are needed; no value may hold a control "
							"character");
		return -EINVAL;
	}
	char text[4096];
	int n = snprintf(text, sizeof text,
			 "endpoint = %.255s\nbucket = %.63s\nregion = %.31s\nvirtual_host = %d\ncredentials_file = %.1023s\n",
			 cfg->endpoint, cfg->bucket, cfg->region, cfg->virtual_host ? 1 : 0, cfg->credentials_file);
	if (cfg->high)
		n += snprintf(text + n, sizeof text - (size_t)n, "high = %.4f\n", cfg->high);
	if (cfg->low)
		n += snprintf(text + n, sizeof text - (size_t)n, "low = %.4f\n", cfg->low);
	AQ_ASSERT(n > 0 && (size_t)n < sizeof text);
	struct proto_req r = {.op = OP_TIER, .cred = c->cred, .flags = PROTO_TIER_SET, .data = (const uint8_t *)text,
			      .data_len = (uint32_t)n};
	struct proto_tier sum;
	return tier_all(c, &r, &sum, NULL, NULL);
}

int aq_tier_demote(struct aq_client *c, const uint64_t *inos, uint32_t n, uint64_t *bytes, uint64_t *skipped)
{
	uint64_t freed = 0, skip = 0;
	int rc = 0;
	struct wbuf body;
	wbuf_init(&body, 8 * (size_t)MIN(n, (uint32_t)PROTO_TIER_INOS_MAX) + 8);
	for (uint32_t at = 0; at < n && !rc; at += PROTO_TIER_INOS_MAX) {
		uint32_t k = MIN(n - at, (uint32_t)PROTO_TIER_INOS_MAX);
		body.len = 0;
		for (uint32_t i = 0; i < k; i++)
			wbuf_u64(&body, inos[at + i]);
		struct proto_req r = {.op = OP_TIER, .cred = c->cred, .flags = PROTO_TIER_DEMOTE, .data = body.p,
				      .data_len = (uint32_t)body.len};
		struct proto_tier sum;
		rc = tier_all(c, &r, &sum, NULL, NULL);
		freed += sum.bytes;
		skip += sum.skipped;
	}
	wbuf_free(&body);
	if (bytes)
		*bytes = freed;
	if (skipped)
		*skipped = skip;
	return rc;
}

int aq_tier_hydrate(struct aq_client *c, uint64_t ino, uint64_t *bytes)
{
	struct proto_req r = {.op = OP_TIER, .cred = c->cred, .flags = PROTO_TIER_HYDRATE, .ino = ino};
	struct proto_tier sum;
	int rc = tier_all(c, &r, &sum, NULL, NULL);
	if (!rc && bytes)
		*bytes = sum.bytes;
	return rc;
}

int aq_tier_usage(struct aq_client *c, uint64_t ino, struct aq_tier_usage *out)
{
	struct proto_req r = {.op = OP_TIER, .cred = c->cred, .flags = PROTO_TIER_USAGE, .ino = ino};
	memset(out, 0, sizeof *out);
	struct proto_tier sum;
	int rc = tier_all(c, &r, &sum, NULL, NULL);
	if (!rc) {
		out->hot_bytes = sum.hot;
		out->cold_bytes = sum.cold;
		out->both_bytes = sum.both;
	}
	return rc;
}

/* The value of key in "key = value" lines, copied into out ("" when absent). */
static void text_value(const uint8_t *text, uint32_t len, const char *key, char *out, size_t size)
{
	size_t klen = strlen(key);
	const char *p = (const char *)text, *end = p + len;
	out[0] = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		if ((size_t)(le - p) > klen + 2 && !memcmp(p, key, klen) && !memcmp(p + klen, " =", 2)) {
			const char *v = p + klen + 2;
			if (v < le && *v == ' ')
				v++;
			size_t n = MIN((size_t)(le - v), size - 1);
			memcpy(out, v, n);
			out[n] = 0;
			return;
		}
		p = nl ? nl + 1 : end;
	}
}

static uint64_t text_u64(const uint8_t *text, uint32_t len, const char *key)
{
	char v[32];
	text_value(text, len, key, v, sizeof v);
	return strtoull(v, NULL, 10);
}

static void parse_rule(const char *s, struct aq_tier_rule *out)
{
	memset(out, 0, sizeof *out);
	if (!strcmp(s, "pin")) {
		out->kind = AQ_TIER_RULE_PIN;
	} else if (!strncmp(s, "cold-after ", 11)) {
		out->kind = AQ_TIER_RULE_COLD_AFTER;
		out->cold_after_s = strtoull(s + 11, NULL, 10);
	}
}

int aq_tier_policy(struct aq_client *c, uint64_t dir, const struct aq_tier_rule *set, struct aq_tier_rule *own,
		   struct aq_tier_rule *effective, uint64_t *from)
{
	char text[64] = "";
	if (set) {
		switch (set->kind) {
		case AQ_TIER_RULE_NONE: snprintf(text, sizeof text, "clear"); break;
		case AQ_TIER_RULE_PIN: snprintf(text, sizeof text, "pin"); break;
		case AQ_TIER_RULE_COLD_AFTER:
			snprintf(text, sizeof text, "cold-after %llu", (unsigned long long)set->cold_after_s);
			break;
		default:
			snprintf(tier_error, sizeof tier_error, "unknown rule kind %u", set->kind);
			return -EINVAL;
		}
	}
	struct proto_req r = {.op = OP_TIER, .cred = c->cred, .flags = PROTO_TIER_POLICY, .ino = dir,
			      .data = (const uint8_t *)text, .data_len = (uint32_t)strlen(text)};
	struct proto_reply rep;
	struct rpc_call *call;
	int rc = tier_call(c, client_meta_server(c, dir), &r, &rep, &call);
	if (rc)
		return rc;
	char v[64];
	if (own) {
		text_value(rep.data, rep.data_len, "own", v, sizeof v);
		parse_rule(v, own);
	}
	if (effective) {
		text_value(rep.data, rep.data_len, "effective", v, sizeof v);
		parse_rule(v, effective);
	}
	if (from)
		*from = text_u64(rep.data, rep.data_len, "from");
	rpc_free(call);
	return 0;
}

/* One server's STATUS text into out: the configuration from the first server (it is the
 * same on all), the scanner's counters summed. */
static void status_one(void *arg, uint32_t i, const struct proto_reply *rep)
{
	struct aq_tier_status *out = arg;
	const uint8_t *t = rep->data;
	uint32_t n = rep->data_len;
	if (i == 0) {
		char v[64];
		out->configured = (int)text_u64(t, n, "configured");
		out->attached = (int)text_u64(t, n, "attached");
		text_value(t, n, "endpoint", out->endpoint, sizeof out->endpoint);
		text_value(t, n, "bucket", out->bucket, sizeof out->bucket);
		text_value(t, n, "region", out->region, sizeof out->region);
		out->virtual_host = (int)text_u64(t, n, "virtual_host");
		text_value(t, n, "credentials", out->credentials, sizeof out->credentials);
		text_value(t, n, "high", v, sizeof v);
		out->high = strtod(v, NULL);
		text_value(t, n, "low", v, sizeof v);
		out->low = strtod(v, NULL);
		out->interval_s = (uint32_t)text_u64(t, n, "interval_s");
		text_value(t, n, "check", out->check, sizeof out->check);
	}
	/* the first server whose scanner is in trouble says why */
	if (!out->last_error[0])
		text_value(t, n, "last_error", out->last_error, sizeof out->last_error);
	out->passes += text_u64(t, n, "passes");
	out->rule_demoted_files += text_u64(t, n, "rule_demoted_files");
	out->watermark_demoted_files += text_u64(t, n, "watermark_demoted_files");
	out->demoted_bytes += text_u64(t, n, "demoted_bytes");
	out->reclaimed_bytes += text_u64(t, n, "reclaimed_bytes");
}

int aq_tier_status(struct aq_client *c, struct aq_tier_status *out)
{
	struct proto_req r = {.op = OP_TIER, .cred = c->cred, .flags = PROTO_TIER_STATUS};
	memset(out, 0, sizeof *out);
	struct proto_tier sum;
	int rc = tier_all(c, &r, &sum, status_one, out);
	out->objects = sum.objects;
	out->object_bytes = sum.object_bytes;
	out->live_bytes = sum.live_bytes;
	return rc;
}

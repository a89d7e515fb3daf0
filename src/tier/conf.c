/*
 * conf.c - tier.conf and directory rules as text. Pure: no I/O, so the parsers are unit
 * tested with every malformed shape. Every value is bounded by its field; a line that
 * names a secret is refused (secrets stay in the environment or the credentials file).
 */
#include "tier/tier.h"
#include <math.h>

static const char *skip_blank(const char *s, const char *end)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	return s;
}

static const char *trim_end(const char *s, const char *end)
{
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		end--;
	return end;
}

/* Copies [s, e) into out (size bytes with the NUL); -1 if it does not fit or holds a
 * control character (a value is one line of text). */
static int copy_value(const char *s, const char *e, char *out, size_t size)
{
	size_t n = (size_t)(e - s);
	if (n >= size)
		return -1;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return -1;
	memcpy(out, s, n);
	out[n] = 0;
	return 0;
}

static int parse_share(const char *v, double *out)
{
	char *end;
	errno = 0;
	double d = strtod(v, &end);
	if (errno || end == v || *end || !isfinite(d) || d <= 0 || d > 1)
		return -1;
	*out = d;
	return 0;
}

int tier_conf_parse(const char *text, size_t len, struct tier_conf *out, char *err, size_t err_size)
{
	memset(out, 0, sizeof *out);
	if (len > TIER_TEXT_MAX) {
		snprintf(err, err_size, "configuration longer than %d bytes", TIER_TEXT_MAX);
		return -EINVAL;
	}
	const char *p = text, *end = text + len;
	int lineno = 0;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		lineno++;
		const char *s = skip_blank(p, le), *e = trim_end(s, le);
		p = nl ? nl + 1 : end;
		if (s == e || *s == '#')
			continue;
		const char *eq = memchr(s, '=', (size_t)(e - s));
		if (!eq) {
			snprintf(err, err_size, "line %d: expected key = value", lineno);
			return -EINVAL;
		}
		char key[32], val[1024];
		const char *ke = trim_end(s, eq), *vs = skip_blank(eq + 1, e);
		if (copy_value(s, ke, key, sizeof key)) {
			snprintf(err, err_size, "line %d: key too long", lineno);
			return -EINVAL;
		}
		if (copy_value(vs, e, val, sizeof val)) {
			snprintf(err, err_size, "line %d: %s: value too long or not one line of text", lineno, key);
			return -EINVAL;
		}
		int bad = 0;
		if (!strcmp(key, "endpoint"))
			bad = copy_value(val, val + strlen(val), out->endpoint, sizeof out->endpoint);
		else if (!strcmp(key, "bucket"))
			bad = copy_value(val, val + strlen(val), out->bucket, sizeof out->bucket);
		else if (!strcmp(key, "region"))
			bad = copy_value(val, val + strlen(val), out->region, sizeof out->region);
		else if (!strcmp(key, "credentials_file"))
			bad = copy_value(val, val + strlen(val), out->credentials_file, sizeof out->credentials_file);
		else if (!strcmp(key, "virtual_host")) {
			bad = strcmp(val, "0") && strcmp(val, "1") ? -1 : 0;
			out->virtual_host = val[0] == '1';
		}
		else if (!strcmp(key, "high"))
			bad = parse_share(val, &out->high);
		else if (!strcmp(key, "low"))
			bad = parse_share(val, &out->low);
		else if (strstr(key, "secret") || strstr(key, "access_key") || strstr(key, "password")) {
			snprintf(err, err_size, "line %d: %s: secrets do not belong in tier.conf (use aqd's environment "
						"or a credentials file of mode 0600)", lineno, key);
			return -EINVAL;
		} else {
			snprintf(err, err_size, "line %d: unknown key %s", lineno, key);
			return -EINVAL;
		}
		if (bad) {
			snprintf(err, err_size, "line %d: %s: value too long or malformed", lineno, key);
			return -EINVAL;
		}
	}
	if (strncmp(out->endpoint, "http://", 7) && strncmp(out->endpoint, "https://", 8)) {
		snprintf(err, err_size, "endpoint must start with http:// or https://");
		return -EINVAL;
	}
	if (!out->bucket[0] || strchr(out->bucket, '/') || strchr(out->bucket, ' ')) {
		snprintf(err, err_size, "bucket must be a bucket name (no '/' or space)");
		return -EINVAL;
	}
	if (!out->region[0])
		snprintf(out->region, sizeof out->region, "us-east-1");
	if (!out->high)
		out->high = TIER_HIGH_DEFAULT;
	if (!out->low)
		out->low = TIER_LOW_DEFAULT < out->high ? TIER_LOW_DEFAULT : out->high * 0.8;
	if (out->low >= out->high) {
		snprintf(err, err_size, "low watermark (%.2f) must be below high (%.2f)", out->low, out->high);
		return -EINVAL;
	}
	return 0;
}

int tier_conf_format(const struct tier_conf *c, char *buf, size_t size)
{
	int n = snprintf(buf, size,
			 "# Aquifer object tier, written by aq tier set. No secrets here: aqd takes the keys\n"
			 "# from its environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY) or credentials_file.\n"
			 "endpoint = %s\nbucket = %s\nregion = %s\nvirtual_host = %d\ncredentials_file = %s\n"
			 "high = %.4f\nlow = %.4f\n",
			 c->endpoint, c->bucket, c->region, c->virtual_host ? 1 : 0, c->credentials_file, c->high, c->low);
	if (n < 0 || (size_t)n >= size)
		return -ENAMETOOLONG;
	return n;
}

int tier_rule_parse(const char *text, size_t len, struct tier_rule *out)
{
	memset(out, 0, sizeof *out);
	char buf[64];
	const char *s = skip_blank(text, text + len), *e = trim_end(s, text + len);
	while (e > s && e[-1] == '\n')
		e = trim_end(s, e - 1);
	if (copy_value(s, e, buf, sizeof buf))
		return -EINVAL;
	if (!strcmp(buf, "clear"))
		return 0;
	if (!strcmp(buf, "pin")) {
		out->kind = TIER_RULE_PIN;
		return 0;
	}
	if (strncmp(buf, "cold-after ", 11))
		return -EINVAL;
	const char *v = buf + 11;
	if (*v < '0' || *v > '9')
		return -EINVAL;
	char *end;
	errno = 0;
	unsigned long long secs = strtoull(v, &end, 10);
	if (errno || *end || secs < 1 || secs > TIER_COLD_AFTER_MAX_S)
		return -EINVAL;
	out->kind = TIER_RULE_COLD_AFTER;
	out->cold_after_s = secs;
	return 0;
}

int tier_rule_format(const struct tier_rule *r, char *buf, size_t size)
{
	switch (r->kind) {
	case TIER_RULE_PIN:
		return snprintf(buf, size, "pin");
	case TIER_RULE_COLD_AFTER:
		return snprintf(buf, size, "cold-after %llu", (unsigned long long)r->cold_after_s);
	default:
		if (size)
			buf[0] = 0;
		return 0;
	}
}

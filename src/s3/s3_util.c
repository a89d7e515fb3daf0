/*
 * s3_util.c - the pure parts of the S3 client: URLs and their AWS percent-encoding, fields
 * of XML replies, status-to-errno mapping, backoff delays, credentials text. No I/O and
 * no allocation, so that tests/unit/test_s3url.c checks them without a server.
 */
#include <ctype.h>
#include <strings.h>

#include "s3/s3_internal.h"

static bool s3_unreserved(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

int s3_uri_encode(const char *src, bool keep_slash, char *out, size_t outlen)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = 0;
	AQ_ASSERT(outlen > 0);
	for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
		/* isalnum() is locale-dependent only above 0x7f, which we always encode */
		if (*p < 0x80 && (s3_unreserved(*p) || (keep_slash && *p == '/'))) {
			if (n + 1 >= outlen)
				return -ENAMETOOLONG;
			out[n++] = (char)*p;
		} else {
			if (n + 3 >= outlen)
				return -ENAMETOOLONG;
			out[n++] = '%';
			out[n++] = hex[*p >> 4];
			out[n++] = hex[*p & 15];
		}
	}
	out[n] = 0;
	return (int)n;
}

/* Appends s to out at *n; false when it does not fit. */
static bool s3_append(char *out, size_t outlen, size_t *n, const char *s, size_t len)
{
	if (len >= outlen - *n)
		return false;
	memcpy(out + *n, s, len);
	*n += len;
	out[*n] = 0;
	return true;
}

int s3_build_url(const struct s3_config *cfg, const char *key, const char *query, char *out, size_t outlen)
{
	const char *ep = cfg->endpoint;
	size_t scheme_len;
	if (strncmp(ep, "http://", 7) == 0)
		scheme_len = 7;
	else if (strncmp(ep, "https://", 8) == 0)
		scheme_len = 8;
	else
		return -EINVAL;
	size_t ep_len = strnlen(ep, sizeof cfg->endpoint);
	while (ep_len > scheme_len && ep[ep_len - 1] == '/') /* "http://h:9000/" names the same server */
		ep_len--;
	if (ep_len == scheme_len || !cfg->bucket[0] || strchr(cfg->bucket, '/'))
		return -EINVAL;

	size_t n = 0;
	bool ok;
	out[0] = 0;
	if (cfg->virtual_host) {
		ok = s3_append(out, outlen, &n, ep, scheme_len) &&
		     s3_append(out, outlen, &n, cfg->bucket, strlen(cfg->bucket)) &&
		     s3_append(out, outlen, &n, ".", 1) &&
		     s3_append(out, outlen, &n, ep + scheme_len, ep_len - scheme_len) &&
		     s3_append(out, outlen, &n, "/", 1);
	} else {
		/* no trailing slash after a bucket: S3 servers read "/bucket/" as an empty key */
		ok = s3_append(out, outlen, &n, ep, ep_len) && s3_append(out, outlen, &n, "/", 1) &&
		     s3_append(out, outlen, &n, cfg->bucket, strlen(cfg->bucket));
		if (ok && key)
			ok = s3_append(out, outlen, &n, "/", 1);
	}
	if (!ok)
		return -ENAMETOOLONG;
	if (key) {
		int len = s3_uri_encode(key, true, out + n, outlen - n);
		if (len < 0)
			return len;
		n += (size_t)len;
	}
	if (query && *query && !(s3_append(out, outlen, &n, "?", 1) && s3_append(out, outlen, &n, query, strlen(query))))
		return -ENAMETOOLONG;
	return (int)n;
}

int s3_xml_value(const char *xml, size_t len, const char *tag, char *out, size_t outlen)
{
	static const struct { const char *ent; char c; } ents[] = {
		{ "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' },
	};
	char open[80], close[80];
	AQ_ASSERT(outlen > 0);
	snprintf(open, sizeof open, "<%s>", tag);
	snprintf(close, sizeof close, "</%s>", tag);
	const char *b = memmem(xml, len, open, strlen(open));
	if (!b)
		return -ENOENT;
	b += strlen(open);
	const char *e = memmem(b, len - (size_t)(b - xml), close, strlen(close));
	if (!e)
		return -ENOENT;
	size_t n = 0;
	while (b < e && n + 1 < outlen) {
		char c = *b++;
		if (c == '&') {
			for (size_t i = 0; i < ARRAY_SIZE(ents); i++) {
				size_t el = strlen(ents[i].ent);
				if ((size_t)(e - b) >= el - 1 && memcmp(b - 1, ents[i].ent, el) == 0) {
					c = ents[i].c;
					b += el - 1;
					break;
				}
			}
		}
		out[n++] = c;
	}
	out[n] = 0;
	return 0;
}

int s3_status_errno(long status, const char *code, bool *retry)
{
	/* S3 sends SlowDown as 503, some S3-compatible stores as 400 or 429 */
	*retry = status >= 500 || status == 408 || status == 429 || !strcmp(code, "SlowDown") ||
		 !strcmp(code, "RequestTimeout") || !strcmp(code, "InternalError");
	if (status >= 200 && status < 300 && !code[0])
		return 0;
	if (*retry)
		return -EAGAIN;
	switch (status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 400:
		return -EINVAL;
	default:
		return -EIO;
	}
}

uint32_t s3_backoff_ms(int retry, uint32_t rnd)
{
	uint32_t base = S3_BACKOFF_FIRST_MS;
	for (int i = 1; i < retry && base < S3_BACKOFF_MAX_MS; i++)
		base *= 2;
	base = MIN(base, S3_BACKOFF_MAX_MS);
	return base / 2 + rnd % (base / 2 + 1);
}

/* Trims blanks at both ends of s[0..*len) in place; returns the new start. */
static char *s3_trim(char *s, size_t *len)
{
	while (*len && isspace((unsigned char)*s)) {
		s++;
		(*len)--;
	}
	while (*len && isspace((unsigned char)s[*len - 1]))
		(*len)--;
	return s;
}

/* Copies value[0..len) into dst (dst_size bytes, NUL included); false if it does not fit. */
static bool s3_copy_value(char *dst, size_t dst_size, const char *value, size_t len)
{
	if (len == 0 || len >= dst_size)
		return false;
	memcpy(dst, value, len);
	dst[len] = 0;
	return true;
}

int s3_parse_credentials(const char *text, struct s3_config *cfg)
{
	bool in_default = true; /* lines before any [section] count as [default] */
	bool have_access = false, have_secret = false, bad = false;
	char line[512];
	for (const char *p = text; *p;) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		size_t copy = MIN(len, sizeof line - 1);
		memcpy(line, p, copy);
		line[copy] = 0;
		p += len + (nl ? 1 : 0);

		char *s = s3_trim(line, &copy);
		s[copy] = 0;
		if (!copy || s[0] == '#' || s[0] == ';')
			continue;
		if (s[0] == '[') {
			char *end = strchr(s, ']');
			size_t nlen = end ? (size_t)(end - s - 1) : 0;
			char *name = s3_trim(s + 1, &nlen);
			in_default = end && nlen == 7 && !strncmp(name, "default", 7);
			continue;
		}
		char *eq = strchr(s, '=');
		if (!eq || !in_default)
			continue;
		size_t klen = (size_t)(eq - s), vlen = copy - klen - 1;
		char *k = s3_trim(s, &klen);
		char *v = s3_trim(eq + 1, &vlen);
		if (klen == 17 && !strncasecmp(k, "aws_access_key_id", 17)) {
			have_access = s3_copy_value(cfg->access_key, sizeof cfg->access_key, v, vlen);
			bad |= !have_access;
		} else if (klen == 21 && !strncasecmp(k, "aws_secret_access_key", 21)) {
			have_secret = s3_copy_value(cfg->secret_key, sizeof cfg->secret_key, v, vlen);
			bad |= !have_secret;
		}
	}
	return have_access && have_secret && !bad ? 0 : -EINVAL;
}

/*
 * s3_internal.h - the pure parts of the S3 client (no I/O, no curl), exposed for unit
 * tests: URL building and AWS percent-encoding, XML reply fields, the mapping of HTTP
 * status and S3 error code to errno, backoff delays, credentials text.
 */
#ifndef AQ_S3_INTERNAL_H
#define AQ_S3_INTERNAL_H
#include "common/common.h"
#include "s3/s3.h"

#define S3_KEY_MAX 1024 /* bytes in an object key, as S3 */
#define S3_BACKOFF_FIRST_MS 50
#define S3_BACKOFF_MAX_MS 2000

/* Percent-encodes src the way SigV4 canonicalizes it: A-Z a-z 0-9 - . _ ~ stay, and '/'
 * too when keep_slash (object key paths); every other byte becomes %XX (upper case hex).
 * Returns the length written (out is NUL-terminated) or -ENAMETOOLONG if out is short. */
int s3_uri_encode(const char *src, bool keep_slash, char *out, size_t outlen);

/* Writes the URL of key in cfg's bucket into out: endpoint/bucket/key (path style) or
 * scheme://bucket.host[:port]/key (cfg->virtual_host). key NULL addresses the bucket
 * itself (".../bucket" with no trailing slash, or "scheme://bucket.host/"). query, when
 * not NULL, is appended after '?' as is: the caller passes it canonical (names sorted,
 * values encoded with s3_uri_encode(..., false, ...)), since curl signs it verbatim.
 * Returns the length, -EINVAL for an endpoint that is not http(s)://host, or -ENAMETOOLONG. */
int s3_build_url(const struct s3_config *cfg, const char *key, const char *query, char *out, size_t outlen);

/* Copies the text of the first <tag>...</tag> in xml[0..len) into out, with the five XML
 * entities decoded and truncated to outlen - 1 bytes. Returns 0 or -ENOENT. */
int s3_xml_value(const char *xml, size_t len, const char *tag, char *out, size_t outlen);

/* The errno for an HTTP status (with code, the S3 <Code>, possibly "") and whether the
 * request is worth retrying (5xx, 408, 429, SlowDown, RequestTimeout, InternalError).
 * Returns 0 for 2xx. */
int s3_status_errno(long status, const char *code, bool *retry);

/* Milliseconds to wait before retry number retry (1 for the first): 50 ms doubling up to
 * 2 s, with "equal jitter" (half fixed, half drawn from rnd) so that clients that failed
 * together do not come back together. */
uint32_t s3_backoff_ms(int retry, uint32_t rnd);

/* Parses ~/.aws/credentials text: aws_access_key_id and aws_secret_access_key lines before
 * any section or in [default]. Fills cfg's keys; -EINVAL when one is missing or too long. */
int s3_parse_credentials(const char *text, struct s3_config *cfg);

#endif

/*
 * s3.h - a small S3 client over libcurl: whole-object PUT (multipart above 16 MiB), ranged
 * GET, DELETE and a reachability check against one bucket, signed with AWS SigV4.
 *
 * Every call is thread-safe and returns 0 or -errno:
 *   -EACCES   credentials refused (AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId)
 *   -ENOENT   no such key or bucket
 *   -EINVAL   request refused as malformed (400)
 *   -EIO      anything else S3 answered that is not success, or a body of the wrong length
 *   -EAGAIN   S3 kept answering 5xx / SlowDown through every retry
 *   -EHOSTUNREACH, -ETIMEDOUT   S3 could not be reached (connect, reset, stall) through every retry
 * Transient failures are retried with exponential backoff and jitter (at most S3_ATTEMPTS
 * tries, no new try after S3_RETRY_DEADLINE_MS), so a caller never loops itself. After a
 * failure, s3_last_error() holds one line for humans on the failing thread, e.g.
 * "S3 403 SignatureDoesNotMatch: The request signature we calculated does not match...".
 * The secret key is never logged nor put in an error text.
 */
#ifndef AQ_S3_H
#define AQ_S3_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct s3_config {
	char endpoint[256];   /* http://127.0.0.1:9000 or https://s3.amazonaws.com */
	char bucket[64];
	char region[32];      /* default "us-east-1" */
	bool virtual_host;    /* bucket.host/key instead of host/bucket/key (path style is the default) */
	char access_key[128];
	char secret_key[128];
};

#define S3_ATTEMPTS 6                       /* tries of one request, the first included */
#define S3_RETRY_DEADLINE_MS 20000          /* no retry starts later than this after the first try */
#define S3_MULTIPART_THRESHOLD (16u << 20)  /* objects larger than this go up in parts */
#define S3_PART_SIZE (8u << 20)             /* smallest part of a multipart upload */
#define S3_UPLOAD_THREADS 4                 /* parts in flight at once */

/* Fills access_key/secret_key from $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY, or, when
 * file != NULL, from that file: `aws_access_key_id = ...` and `aws_secret_access_key = ...`
 * lines before any section or in [default], as ~/.aws/credentials. The file must be a
 * regular file of mode 0600 or stricter: otherwise -EPERM and a log line that says why.
 * -ENOENT when the file or variables are missing, -EINVAL when a key is absent or too long. */
int s3_load_credentials(struct s3_config *cfg, const char *file);

struct s3_client;
/* Checks cfg (endpoint http:// or https://, a bucket name, both keys) and copies it: the
 * caller's cfg may go away. -EINVAL on a bad config. */
int s3_open(const struct s3_config *cfg, struct s3_client **out);
/* Frees s; no call may be in flight on it. */
void s3_close(struct s3_client *s);

/* Checks that the bucket answers and accepts the credentials (GET ?list-type=2&max-keys=1).
 * Writes one line into msg either way ("bucket b at http://... reachable" or the error). */
int s3_check(struct s3_client *s, char *msg, size_t msglen);
/* Stores len bytes as key. Returns only once S3 confirmed: 200 with an ETag, or for a
 * multipart upload (len > S3_MULTIPART_THRESHOLD) a CompleteMultipartUpload reply that
 * holds no <Error>; a failed multipart upload is aborted. */
int s3_put(struct s3_client *s, const char *key, const void *buf, size_t len);
/* Reads exactly len bytes at off of key into buf; a shorter body is -EIO (buf contents
 * undefined then). len 0 returns 0 without a request. */
int s3_get(struct s3_client *s, const char *key, uint64_t off, void *buf, size_t len);
/* Deletes key; a key that does not exist counts as deleted (a bucket that does not is
 * -ENOENT). */
int s3_delete(struct s3_client *s, const char *key);
/* The calling thread's text for its last failed call ("" if none). */
const char *s3_last_error(void);

#endif

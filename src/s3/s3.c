/*
 * s3.c - the S3 client: requests over libcurl, signed by curl (CURLOPT_AWS_SIGV4), retried
 * here, and multipart uploads.
 *
 * Signing: curl 7.88 signs the query string verbatim and every header we add, so every
 * request carries x-amz-content-sha256 with the real SHA-256 of its body (of "" when it has
 * none): the signature then covers the payload, and servers that insist on the header
 * (s3rver, S3 itself) get it. Queries are built canonical by hand (names sorted, values
 * encoded, "uploads=" rather than "uploads").
 *
 * Threads: each thread keeps one curl easy handle (made on first use, freed at thread
 * exit) and reuses it for every client and request, which keeps its connections alive
 * between requests; a handle is never shared, so no lock guards one. A client is
 * immutable after s3_open, so any number of threads may use it at once.
 *
 * Retries: connection failures, stalls, 5xx, 408, 429, SlowDown, RequestTimeout and
 * InternalError are retried (S3_ATTEMPTS tries, backoff from s3_backoff_ms, none started
 * after S3_RETRY_DEADLINE_MS); each retry is logged at info, the final failure is left to
 * the caller to log with s3_last_error().
 */
#include <curl/curl.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "s3/s3_internal.h"

#define S3_XML_MAX (1u << 20)         /* reply bytes kept for parsing (errors, multipart replies) */
#define S3_ERR_MAX 512
#define S3_CREDENTIALS_MAX (64u << 10) /* a credentials file larger than this is not one */
#define S3_CONNECT_TIMEOUT_MS 2000
#define S3_LOW_SPEED_BYTES 1024        /* a transfer slower than this ... */
#define S3_LOW_SPEED_S 10              /* ... for this many seconds has stalled: retried */
/* CompleteMultipartUpload can take minutes on S3, which keeps the connection alive by
 * sending a space every few seconds meanwhile: only silence counts as a stall there. */
#define S3_COMPLETE_LOW_SPEED_S 60
#define S3_MAX_PARTS 10000             /* S3's limit on the parts of one upload */
#define S3_UPLOAD_ID_MAX 1024
/* endpoint, bucket, encoded key, encoded upload id and the rest of a query */
#define S3_URL_MAX (sizeof(((struct s3_config *)0)->endpoint) + 64 + 3 * S3_KEY_MAX + 3 * S3_UPLOAD_ID_MAX + 128)

/* SHA-256 of the empty string: x-amz-content-sha256 of every bodiless request. */
#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct s3_client {
	struct s3_config cfg;
	char sigv4[64]; /* "aws:amz:REGION:s3" */
};

/* One request and, after each try, what came back. */
struct s3_req {
	const char *method;        /* GET, PUT, POST, DELETE */
	const char *key;           /* NULL: the bucket itself */
	const char *query;         /* canonical query, or NULL */
	const void *body;          /* PUT and POST payload (may be NULL with body_len 0) */
	size_t body_len;
	const char *content_type;  /* sent (and so signed) when not NULL */
	bool ranged;               /* GET of range_len bytes at range_off */
	uint64_t range_off;
	size_t range_len;
	uint8_t *out;              /* a GET's 2xx body goes here, at most out_cap bytes */
	size_t out_cap;
	bool error_in_200;         /* CompleteMultipartUpload: a 200 may carry an <Error> ... */
	bool slow_reply;           /* ... and it may take minutes to come */

	CURL *curl;
	long status;
	size_t body_pos;           /* next upload byte */
	size_t out_len;
	bool out_overflow;         /* the server sent more than out_cap: the rest was dropped */
	int64_t range_start;       /* first byte of a 206's Content-Range, -1 if none */
	char etag[128];
	char code[64];             /* <Code> of an error reply */
	char *xml;                 /* other bodies, truncated at S3_XML_MAX; owned, freed by s3_req_free */
	size_t xml_len, xml_cap;
};

static pthread_once_t s3_once = PTHREAD_ONCE_INIT;
static int s3_init_rc;
static pthread_key_t s3_handle_key;
static _Thread_local CURL *tls_handle;
static _Thread_local char tls_error[S3_ERR_MAX];
static _Thread_local uint64_t tls_rng;

const char *s3_last_error(void) { return tls_error; }

static void s3_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void s3_set_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tls_error, sizeof tls_error, fmt, ap);
	va_end(ap);
}

/* ---- per-thread curl handles ----------------------------------------------------------- */

static void s3_handle_free(void *h) { curl_easy_cleanup(h); }

/* A forked child must not drive the parent's connections: it forgets the handle (the
 * sockets are the parent's) and makes its own on first use. */
static void s3_atfork_child(void)
{
	tls_handle = NULL;
	pthread_setspecific(s3_handle_key, NULL);
}

static void s3_global_init(void)
{
	CURLcode cc = curl_global_init(CURL_GLOBAL_DEFAULT);
	if (cc != CURLE_OK) {
		log_error("curl_global_init: %s", curl_easy_strerror(cc));
		s3_init_rc = -ENOMEM;
		return;
	}
	AQ_ASSERT(pthread_key_create(&s3_handle_key, s3_handle_free) == 0);
	AQ_ASSERT(pthread_atfork(NULL, NULL, s3_atfork_child) == 0);
}

/* The calling thread's easy handle, reset to defaults (connections kept), or NULL. */
static CURL *s3_handle(void)
{
	if (!tls_handle) {
		tls_handle = curl_easy_init();
		if (!tls_handle)
			return NULL;
		pthread_setspecific(s3_handle_key, tls_handle);
	}
	curl_easy_reset(tls_handle);
	return tls_handle;
}

/* ---- one try of one request ------------------------------------------------------------- */

static void s3_xml_append(struct s3_req *r, const char *data, size_t n)
{
	n = MIN(n, S3_XML_MAX - r->xml_len);
	if (!n)
		return;
	if (r->xml_len + n + 1 > r->xml_cap) {
		r->xml_cap = MAX(r->xml_cap * 2, r->xml_len + n + 1);
		r->xml = aq_realloc(r->xml, r->xml_cap);
	}
	memcpy(r->xml + r->xml_len, data, n);
	r->xml_len += n;
	r->xml[r->xml_len] = 0;
}

static size_t s3_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nmemb;
	long status = 0;
	curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &status);
	if (r->out && status / 100 == 2) {
		if (n > r->out_cap - r->out_len) {
			/* keep what was asked for, then abort: never past the caller's buffer */
			memcpy(r->out + r->out_len, data, r->out_cap - r->out_len);
			r->out_len = r->out_cap;
			r->out_overflow = true;
			return 0;
		}
		memcpy(r->out + r->out_len, data, n);
		r->out_len += n;
		return n;
	}
	s3_xml_append(r, data, n);
	return n;
}

static size_t s3_on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = size * nmemb;
	if (n >= 5 && !memcmp(data, "HTTP/", 5)) { /* a new response (after 100 Continue) */
		r->etag[0] = 0;
		r->range_start = -1;
	} else if (n > 20 && !strncasecmp(data, "Content-Range: bytes ", 20)) {
		char line[128];
		snprintf(line, sizeof line, "%.*s", (int)(n - 20), data + 20);
		char *end;
		unsigned long long start = strtoull(line, &end, 10);
		r->range_start = end != line && *end == '-' && start <= INT64_MAX ? (int64_t)start : -1;
	} else if (n > 5 && !strncasecmp(data, "ETag:", 5)) {
		size_t len = n - 5;
		const char *v = data + 5;
		while (len && (*v == ' ' || *v == '\t'))
			v++, len--;
		while (len && (v[len - 1] == '\r' || v[len - 1] == '\n' || v[len - 1] == ' '))
			len--;
		len = MIN(len, sizeof r->etag - 1);
		memcpy(r->etag, v, len);
		r->etag[len] = 0;
	}
	return n;
}

static size_t s3_on_upload(char *dst, size_t size, size_t nmemb, void *arg)
{
	struct s3_req *r = arg;
	size_t n = MIN(size * nmemb, r->body_len - r->body_pos);
	memcpy(dst, (const uint8_t *)r->body + r->body_pos, n);
	r->body_pos += n;
	return n;
}

static int s3_on_seek(void *arg, curl_off_t off, int origin)
{
	struct s3_req *r = arg;
	if (origin != SEEK_SET || off < 0 || (uint64_t)off > r->body_len)
		return CURL_SEEKFUNC_CANTSEEK;
	r->body_pos = (size_t)off;
	return CURL_SEEKFUNC_OK;
}

/* Connection-level failures worth another try; *err gets the errno if they persist. */
static bool s3_curl_retryable(CURLcode cc, int *err)
{
	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		*err = -ETIMEDOUT;
		return true;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
		*err = -EHOSTUNREACH;
		return true;
	default:
		*err = -EIO;
		return false;
	}
}

static void s3_setup(struct s3_client *s, struct s3_req *r, const char *url, struct curl_slist *hdrs,
		     char *curl_err)
{
	CURL *h = r->curl;
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "aquifer-s3/1");
	curl_easy_setopt(h, CURLOPT_PATH_AS_IS, 1L); /* a key "a/../b" is a key, not a path */
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);   /* threads: no SIGALRM for timeouts */
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)S3_CONNECT_TIMEOUT_MS);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, r->slow_reply ? 1L : (long)S3_LOW_SPEED_BYTES);
	curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, r->slow_reply ? (long)S3_COMPLETE_LOW_SPEED_S : (long)S3_LOW_SPEED_S);
	curl_easy_setopt(h, CURLOPT_USERNAME, s->cfg.access_key);
	curl_easy_setopt(h, CURLOPT_PASSWORD, s->cfg.secret_key);
	curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, s3_on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, s3_on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, r);
	if (!strcmp(r->method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(h, CURLOPT_READFUNCTION, s3_on_upload);
		curl_easy_setopt(h, CURLOPT_READDATA, r);
		curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, s3_on_seek);
		curl_easy_setopt(h, CURLOPT_SEEKDATA, r);
		curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
	} else if (!strcmp(r->method, "POST")) {
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, r->body ? r->body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
	} else if (strcmp(r->method, "GET")) {
		curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r->method);
	}
}

/* One try. Returns 0 or -errno with tls_error set; *retry tells whether another try may
 * succeed. */
static int s3_attempt(struct s3_client *s, struct s3_req *r, const char *url, struct curl_slist *hdrs,
		      bool *retry)
{
	char curl_err[CURL_ERROR_SIZE] = "";
	*retry = false;
	r->curl = s3_handle();
	if (!r->curl) {
		s3_set_error("S3 %s: curl_easy_init failed", r->method);
		return -ENOMEM;
	}
	r->status = 0;
	r->body_pos = 0;
	r->out_len = 0;
	r->out_overflow = false;
	r->range_start = -1;
	r->etag[0] = 0;
	r->code[0] = 0;
	r->xml_len = 0;
	if (r->xml)
		r->xml[0] = 0;
	s3_setup(s, r, url, hdrs, curl_err);

	CURLcode cc = curl_easy_perform(r->curl);
	curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &r->status);
	curl_easy_setopt(r->curl, CURLOPT_ERRORBUFFER, NULL); /* curl_err is about to go away */
	/* Some servers send more than the range asked for (s3rver reads "bytes=0-0" as "bytes=0-");
	 * the bytes asked for came first, so they are kept and s3_get checks where they start. */
	if (cc == CURLE_WRITE_ERROR && r->out_overflow) {
		log_debug("S3 %s %s: reply longer than the %zu bytes asked for; the rest dropped", r->method, url,
			  r->out_cap);
		cc = CURLE_OK;
	}
	if (cc != CURLE_OK) {
		int err;
		*retry = s3_curl_retryable(cc, &err);
		s3_set_error("S3 %s %s: %s", r->method, url, curl_err[0] ? curl_err : curl_easy_strerror(cc));
		return err;
	}

	char msg[256] = "";
	bool is_error = r->status / 100 != 2 || (r->error_in_200 && r->xml && strstr(r->xml, "<Error>"));
	if (!is_error)
		return 0;
	if (r->xml_len) {
		s3_xml_value(r->xml, r->xml_len, "Code", r->code, sizeof r->code);
		s3_xml_value(r->xml, r->xml_len, "Message", msg, sizeof msg);
	}
	int err = s3_status_errno(r->status, r->code, retry);
	if (err == 0) /* a 200 whose body says <Error> with no code */
		err = -EIO;
	s3_set_error("S3 %ld %s: %s (%s %s)", r->status, r->code[0] ? r->code : "(no error code)",
		     msg[0] ? msg : "(no message)", r->method, url);
	return err;
}

/* ---- requests with retries ------------------------------------------------------------ */

static uint32_t s3_rand(void)
{
	if (!tls_rng)
		tls_rng = aq_mono_ns() ^ ((uint64_t)pthread_self() << 16) ^ 0x9E3779B97F4A7C15ull;
	tls_rng ^= tls_rng << 13; /* xorshift64 */
	tls_rng ^= tls_rng >> 7;
	tls_rng ^= tls_rng << 17;
	return (uint32_t)(tls_rng >> 32);
}

static void s3_sha256_hex(const void *buf, size_t len, char out[65])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t md[SHA256_DIGEST_LENGTH];
	SHA256(buf, len, md);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = 0;
}

/* Appends "name: value" to *list; false when curl is out of memory. */
static bool s3_header(struct curl_slist **list, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool s3_header(struct curl_slist **list, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	struct curl_slist *l = curl_slist_append(*list, line);
	if (!l)
		return false;
	*list = l;
	return true;
}

/* Sends r, retrying transient failures. Returns 0 or -errno (tls_error set). r->xml is
 * the caller's to free (s3_req_free) either way. */
static int s3_request(struct s3_client *s, struct s3_req *r)
{
	char url[S3_URL_MAX], sha[65];
	int rc = s3_build_url(&s->cfg, r->key, r->query, url, sizeof url);
	if (rc < 0) {
		s3_set_error("S3 %s %s: cannot build a URL for it (%s)", r->method, r->key ? r->key : "(bucket)",
			     strerror(-rc));
		return rc;
	}
	if (r->body_len)
		s3_sha256_hex(r->body, r->body_len, sha);
	else
		memcpy(sha, S3_EMPTY_SHA256, sizeof sha);

	struct curl_slist *hdrs = NULL;
	bool ok = s3_header(&hdrs, "x-amz-content-sha256: %s", sha);
	if (ok && r->ranged)
		ok = s3_header(&hdrs, "Range: bytes=%" PRIu64 "-%" PRIu64, r->range_off,
			       r->range_off + r->range_len - 1);
	if (ok && r->content_type)
		ok = s3_header(&hdrs, "Content-Type: %s", r->content_type);
	if (!ok) {
		curl_slist_free_all(hdrs);
		s3_set_error("S3 %s: out of memory building headers", r->method);
		return -ENOMEM;
	}

	uint64_t start_ns = aq_mono_ns();
	bool retry = false;
	int attempt;
	for (attempt = 1;; attempt++) {
		rc = s3_attempt(s, r, url, hdrs, &retry);
		if (rc == 0 || !retry || attempt >= S3_ATTEMPTS)
			break;
		uint32_t delay_ms = s3_backoff_ms(attempt, s3_rand());
		if ((aq_mono_ns() - start_ns) / 1000000 + delay_ms > S3_RETRY_DEADLINE_MS)
			break;
		log_info("%s; retry %d of %d in %u ms", tls_error, attempt, S3_ATTEMPTS - 1, delay_ms);
		usleep(delay_ms * 1000u);
	}
	curl_slist_free_all(hdrs);
	if (rc && retry) {
		size_t n = strlen(tls_error);
		snprintf(tls_error + n, sizeof tls_error - n, " [gave up after %d tries, %.1f s]", attempt,
			 (double)(aq_mono_ns() - start_ns) / 1e9);
	}
	return rc;
}

static void s3_req_free(struct s3_req *r)
{
	free(r->xml);
	r->xml = NULL;
}

/* ---- credentials and clients ------------------------------------------------------------ */

static int s3_credentials_env(struct s3_config *cfg)
{
	const char *ak = getenv("AWS_ACCESS_KEY_ID"), *sk = getenv("AWS_SECRET_ACCESS_KEY");
	if (!ak || !*ak || !sk || !*sk) {
		log_error("S3 credentials: $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY must both be set");
		return -ENOENT;
	}
	if (strlen(ak) >= sizeof cfg->access_key || strlen(sk) >= sizeof cfg->secret_key) {
		log_error("S3 credentials: $AWS_ACCESS_KEY_ID or $AWS_SECRET_ACCESS_KEY is too long");
		return -EINVAL;
	}
	strcpy(cfg->access_key, ak);
	strcpy(cfg->secret_key, sk);
	return 0;
}

int s3_load_credentials(struct s3_config *cfg, const char *file)
{
	if (!file)
		return s3_credentials_env(cfg);
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int err = -errno;
		log_error("S3 credentials: cannot open %s: %s", file, strerror(errno));
		return err;
	}
	/* fstat the open file, not the name: what is checked is what is read */
	struct stat st;
	int rc = 0;
	char *text = NULL;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		log_error("S3 credentials: cannot stat %s: %s", file, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		rc = -EPERM;
		log_error("S3 credentials: %s is %s mode %04o: it must be a regular file of mode 0600 or "
			  "stricter (chmod 600 %s)", file, S_ISREG(st.st_mode) ? "a file of" : "not a regular file,",
			  (unsigned)(st.st_mode & 07777), file);
		goto out;
	}
	if (st.st_size > (off_t)S3_CREDENTIALS_MAX) {
		rc = -EFBIG;
		log_error("S3 credentials: %s is %lld bytes, not a credentials file", file, (long long)st.st_size);
		goto out;
	}
	text = aq_malloc((size_t)st.st_size + 1);
	ssize_t n = pread(fd, text, (size_t)st.st_size, 0);
	if (n < 0) {
		rc = -errno;
		log_error("S3 credentials: cannot read %s: %s", file, strerror(errno));
		goto out;
	}
	text[n] = 0;
	rc = s3_parse_credentials(text, cfg);
	if (rc < 0)
		log_error("S3 credentials: %s has no usable aws_access_key_id and aws_secret_access_key "
			  "(before any section or in [default], each under %zu bytes)", file, sizeof cfg->secret_key);
out:
	if (text) {
		explicit_bzero(text, (size_t)st.st_size + 1);
		free(text);
	}
	close(fd);
	return rc;
}

/* Every field terminated, the endpoint a URL, the keys there. */
static bool s3_config_ok(const struct s3_config *cfg)
{
	char url[S3_URL_MAX];
#define S3_TERMINATED(f) (memchr((f), 0, sizeof(f)) != NULL)
	if (!S3_TERMINATED(cfg->endpoint) || !S3_TERMINATED(cfg->bucket) || !S3_TERMINATED(cfg->region) ||
	    !S3_TERMINATED(cfg->access_key) || !S3_TERMINATED(cfg->secret_key))
		return false;
#undef S3_TERMINATED
	/* a ':' would end the region early in curl's "aws:amz:REGION:s3" */
	return s3_build_url(cfg, NULL, NULL, url, sizeof url) > 0 && cfg->access_key[0] && cfg->secret_key[0] &&
	       !strchr(cfg->region, ':');
}

int s3_open(const struct s3_config *cfg, struct s3_client **out)
{
	pthread_once(&s3_once, s3_global_init);
	if (s3_init_rc) {
		s3_set_error("S3: libcurl failed to initialize");
		return s3_init_rc;
	}
	if (!s3_config_ok(cfg)) {
		s3_set_error("S3: bad config: endpoint must be http(s)://host[:port], and bucket, access and "
			     "secret key must be set");
		return -EINVAL;
	}
	struct s3_client *s = aq_calloc(1, sizeof *s);
	s->cfg = *cfg;
	if (!s->cfg.region[0])
		strcpy(s->cfg.region, "us-east-1");
	snprintf(s->sigv4, sizeof s->sigv4, "aws:amz:%s:s3", s->cfg.region);
	*out = s;
	return 0;
}

void s3_close(struct s3_client *s)
{
	if (!s)
		return;
	explicit_bzero(s->cfg.secret_key, sizeof s->cfg.secret_key);
	free(s);
}

/* ---- operations --------------------------------------------------------------------------- */

static int s3_check_key(const char *op, const char *key)
{
	size_t len = key ? strnlen(key, S3_KEY_MAX + 1) : 0;
	if (len == 0 || len > S3_KEY_MAX) {
		s3_set_error("S3 %s: key must be 1 to %d bytes", op, S3_KEY_MAX);
		return len ? -ENAMETOOLONG : -EINVAL;
	}
	return 0;
}

int s3_check(struct s3_client *s, char *msg, size_t msglen)
{
	struct s3_req r = { .method = "GET", .query = "list-type=2&max-keys=1" };
	int rc = s3_request(s, &r);
	s3_req_free(&r);
	if (rc == 0)
		snprintf(msg, msglen, "bucket %s at %s reachable, credentials accepted", s->cfg.bucket,
			 s->cfg.endpoint);
	else
		snprintf(msg, msglen, "bucket %s at %s: %s", s->cfg.bucket, s->cfg.endpoint, tls_error);
	return rc;
}

/* A single PUT of the whole object (or, with query, of one part). Copies the ETag S3
 * returned into etag. */
static int s3_put_one(struct s3_client *s, const char *key, const char *query, const void *buf, size_t len,
		      char *etag, size_t etag_len)
{
	struct s3_req r = {
		.method = "PUT", .key = key, .query = query, .body = buf, .body_len = len,
		.content_type = query ? NULL : "application/octet-stream",
	};
	int rc = s3_request(s, &r);
	if (rc == 0 && !r.etag[0]) {
		s3_set_error("S3 PUT %s: %ld without an ETag: not confirmed", key, r.status);
		rc = -EIO;
	}
	if (rc == 0)
		snprintf(etag, etag_len, "%s", r.etag);
	s3_req_free(&r);
	return rc;
}

/* A multipart upload in flight: parts are claimed from next by up to S3_UPLOAD_THREADS
 * threads; the first failure stops the others from claiming more. */
struct s3_mpu {
	struct s3_client *s;
	const char *key;
	const uint8_t *buf;
	size_t len, part_size;
	uint32_t nparts;
	char upload_id[S3_UPLOAD_ID_MAX];
	char upload_query[S3_UPLOAD_ID_MAX * 3 + 16]; /* "uploadId=..." */
	char (*etags)[128];
	atomic_uint next;
	atomic_int rc;        /* the first failure; whoever sets it writes err */
	char err[S3_ERR_MAX]; /* that failure's s3_last_error(), read by the caller after the joins */
};

static void *s3_mpu_worker(void *arg)
{
	struct s3_mpu *m = arg;
	char query[sizeof m->upload_query + 32];
	for (;;) {
		uint32_t i = atomic_fetch_add(&m->next, 1);
		if (i >= m->nparts || atomic_load(&m->rc))
			break;
		size_t off = (size_t)i * m->part_size, len = MIN(m->part_size, m->len - off);
		/* names sorted: partNumber < uploadId ('p' < 'u') */
		snprintf(query, sizeof query, "partNumber=%u&%s", i + 1, m->upload_query);
		int rc = s3_put_one(m->s, m->key, query, m->buf + off, len, m->etags[i], sizeof m->etags[i]);
		if (rc < 0) {
			int zero = 0;
			if (atomic_compare_exchange_strong(&m->rc, &zero, rc))
				snprintf(m->err, sizeof m->err, "part %u: %.480s", i + 1, tls_error);
			break;
		}
	}
	return NULL;
}

static int s3_mpu_start(struct s3_mpu *m)
{
	struct s3_req r = {
		.method = "POST", .key = m->key, .query = "uploads=", .content_type = "application/octet-stream",
	};
	int rc = s3_request(m->s, &r);
	if (rc == 0 && (!r.xml || s3_xml_value(r.xml, r.xml_len, "UploadId", m->upload_id, sizeof m->upload_id) ||
			!m->upload_id[0])) {
		s3_set_error("S3 POST %s?uploads: reply has no UploadId", m->key);
		rc = -EIO;
	}
	s3_req_free(&r);
	if (rc)
		return rc;
	char enc[S3_UPLOAD_ID_MAX * 3];
	AQ_ASSERT(s3_uri_encode(m->upload_id, false, enc, sizeof enc) >= 0);
	snprintf(m->upload_query, sizeof m->upload_query, "uploadId=%s", enc);
	return 0;
}

/* Runs the part uploads on this thread and up to S3_UPLOAD_THREADS - 1 more. */
static int s3_mpu_parts(struct s3_mpu *m)
{
	pthread_t tids[S3_UPLOAD_THREADS - 1];
	int nthreads = 0;
	for (uint32_t i = 1; i < MIN(m->nparts, (uint32_t)S3_UPLOAD_THREADS); i++) {
		/* fewer threads only makes the upload slower: go on with those we have */
		if (pthread_create(&tids[nthreads], NULL, s3_mpu_worker, m) != 0)
			break;
		nthreads++;
	}
	s3_mpu_worker(m);
	for (int i = 0; i < nthreads; i++)
		pthread_join(tids[i], NULL);
	int rc = atomic_load(&m->rc);
	if (rc)
		s3_set_error("%s", m->err);
	return rc;
}

static int s3_mpu_complete(struct s3_mpu *m)
{
	size_t cap = 128 + (size_t)m->nparts * (64 + sizeof m->etags[0]), n = 0;
	char *xml = aq_malloc(cap);
	n += (size_t)snprintf(xml + n, cap - n, "<CompleteMultipartUpload>");
	for (uint32_t i = 0; i < m->nparts; i++) {
		/* ETags are hex in quotes: nothing in them needs XML escaping */
		AQ_ASSERT(!strpbrk(m->etags[i], "<>&"));
		n += (size_t)snprintf(xml + n, cap - n, "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", i + 1,
				      m->etags[i]);
	}
	n += (size_t)snprintf(xml + n, cap - n, "</CompleteMultipartUpload>");
	AQ_ASSERT(n < cap);
	struct s3_req r = {
		.method = "POST", .key = m->key, .query = m->upload_query, .body = xml, .body_len = n,
		.content_type = "application/xml", .error_in_200 = true, .slow_reply = true,
	};
	int rc = s3_request(m->s, &r);
	if (rc == 0 && (!r.xml || !strstr(r.xml, "CompleteMultipartUploadResult"))) {
		s3_set_error("S3 POST %s?uploadId: %ld reply is not a CompleteMultipartUploadResult", m->key, r.status);
		rc = -EIO;
	}
	s3_req_free(&r);
	free(xml);
	return rc;
}

/* Best effort: an upload left behind only costs storage until a lifecycle rule drops it. */
static void s3_mpu_abort(struct s3_mpu *m)
{
	char keep[S3_ERR_MAX];
	snprintf(keep, sizeof keep, "%s", tls_error); /* the caller wants the first failure */
	struct s3_req r = { .method = "DELETE", .key = m->key, .query = m->upload_query };
	int rc = s3_request(m->s, &r);
	if (rc < 0 && rc != -ENOENT)
		log_warn("S3 abort of multipart upload of %s failed (parts stay until a lifecycle rule drops "
			 "them): %s", m->key, tls_error);
	s3_req_free(&r);
	snprintf(tls_error, sizeof tls_error, "%s", keep);
}

static int s3_put_multipart(struct s3_client *s, const char *key, const void *buf, size_t len)
{
	struct s3_mpu *m = aq_calloc(1, sizeof *m);
	m->s = s;
	m->key = key;
	m->buf = buf;
	m->len = len;
	/* 8 MiB parts, larger (whole MiB) when 10000 of them would not hold the object */
	size_t min_part = (len + S3_MAX_PARTS - 1) / S3_MAX_PARTS;
	m->part_size = MAX((size_t)S3_PART_SIZE, (min_part + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1));
	m->nparts = (uint32_t)((len + m->part_size - 1) / m->part_size);
	AQ_ASSERT(m->nparts >= 2 && m->nparts <= S3_MAX_PARTS);
	m->etags = aq_calloc(m->nparts, sizeof m->etags[0]);

	int rc = s3_mpu_start(m);
	if (rc == 0) {
		rc = s3_mpu_parts(m);
		if (rc == 0)
			rc = s3_mpu_complete(m);
		if (rc)
			s3_mpu_abort(m);
	}
	free(m->etags);
	free(m);
	return rc;
}

int s3_put(struct s3_client *s, const char *key, const void *buf, size_t len)
{
	char etag[128];
	int rc = s3_check_key("PUT", key);
	if (rc)
		return rc;
	if (len > S3_MULTIPART_THRESHOLD)
		return s3_put_multipart(s, key, buf, len);
	return s3_put_one(s, key, NULL, buf, len, etag, sizeof etag);
}

int s3_get(struct s3_client *s, const char *key, uint64_t off, void *buf, size_t len)
{
	int rc = s3_check_key("GET", key);
	if (rc || len == 0)
		return rc;
	if (off + len < off) {
		s3_set_error("S3 GET %s: range %" PRIu64 "+%zu overflows", key, off, len);
		return -EINVAL;
	}
	struct s3_req r = {
		.method = "GET", .key = key, .ranged = true, .range_off = off, .range_len = len, .out = buf,
		.out_cap = len,
	};
	rc = s3_request(s, &r);
	/* a 200 is the whole object, which is right only from its first byte */
	bool right_place = (r.status == 206 && r.range_start == (int64_t)off) || (r.status == 200 && off == 0);
	if (rc == 0 && !right_place) {
		s3_set_error("S3 GET %s: %ld with Content-Range from %" PRId64 " for a range at %" PRIu64, key,
			     r.status, r.range_start, off);
		rc = -EIO;
	} else if (rc == 0 && r.out_len != len) {
		s3_set_error("S3 GET %s: %zu bytes at %" PRIu64 " instead of %zu (object shorter?)", key, r.out_len,
			     off, len);
		rc = -EIO;
	}
	s3_req_free(&r);
	return rc;
}

int s3_delete(struct s3_client *s, const char *key)
{
	int rc = s3_check_key("DELETE", key);
	if (rc)
		return rc;
	struct s3_req r = { .method = "DELETE", .key = key };
	rc = s3_request(s, &r);
	/* the key is gone either way; a missing bucket is a configuration error */
	if (rc == -ENOENT && strcmp(r.code, "NoSuchBucket"))
		rc = 0;
	s3_req_free(&r);
	return rc;
}

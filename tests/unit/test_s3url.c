/*
 * test_s3url.c - unit tests of the S3 client's pure parts (src/s3/s3_util.c): URLs in path
 * and virtual-host style, AWS percent-encoding, XML error fields, the status-to-errno map,
 * backoff bounds and credentials parsing; and of what needs no S3 server: loading
 * credentials (file modes, environment), config checks, and that an endpoint where nothing
 * listens fails with -EHOSTUNREACH in bounded time. tests/integration/test_s3client.py
 * covers the rest against a real S3-compatible server. Prints "N passed, N failed".
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include "s3/s3_internal.h"
#include "unit/check.h"

static char g_dir[64];


static struct s3_config cfg_of(const char *endpoint, const char *bucket, bool vhost)
{
	struct s3_config c = { .virtual_host = vhost };
	snprintf(c.endpoint, sizeof c.endpoint, "%s", endpoint);
	snprintf(c.bucket, sizeof c.bucket, "%s", bucket);
	return c;
}

static int t_url_path_style(void)
{
	char url[512];
	struct s3_config c = cfg_of("http://127.0.0.1:9000", "bkt", false);
	CHECK(s3_build_url(&c, "dir/file name.bin", NULL, url, sizeof url) > 0);
	CHECK_STR(url, "http://127.0.0.1:9000/bkt/dir/file%20name.bin");
	/* the bucket itself: no trailing slash (s3rver and S3 read "/bkt/" as an empty key) */
	CHECK(s3_build_url(&c, NULL, "list-type=2&max-keys=1", url, sizeof url) > 0);
	CHECK_STR(url, "http://127.0.0.1:9000/bkt?list-type=2&max-keys=1");
	c = cfg_of("https://s3.amazonaws.com/", "bkt", false); /* a trailing slash is dropped */
	CHECK(s3_build_url(&c, "k", "uploads=", url, sizeof url) > 0);
	CHECK_STR(url, "https://s3.amazonaws.com/bkt/k?uploads=");
	return 0;
}

static int t_url_virtual_host(void)
{
	char url[512];
	struct s3_config c = cfg_of("http://127.0.0.1:9000", "bkt", true);
	int n = s3_build_url(&c, "a/b", NULL, url, sizeof url);
	CHECK_STR(url, "http://bkt.127.0.0.1:9000/a/b");
	CHECK(n == (int)strlen(url));
	CHECK(s3_build_url(&c, NULL, NULL, url, sizeof url) > 0);
	CHECK_STR(url, "http://bkt.127.0.0.1:9000/");
	c = cfg_of("https://s3.eu-west-1.amazonaws.com/", "data", true);
	CHECK(s3_build_url(&c, "x y", "partNumber=3&uploadId=a%2Fb", url, sizeof url) > 0);
	CHECK_STR(url, "https://data.s3.eu-west-1.amazonaws.com/x%20y?partNumber=3&uploadId=a%2Fb");
	return 0;
}

static int t_url_rejects(void)
{
	char url[64];
	struct s3_config c = cfg_of("ftp://host", "b", false);
	CHECK(s3_build_url(&c, "k", NULL, url, sizeof url) == -EINVAL);
	c = cfg_of("http://", "b", false);
	CHECK(s3_build_url(&c, "k", NULL, url, sizeof url) == -EINVAL);
	c = cfg_of("http://h", "", false);
	CHECK(s3_build_url(&c, "k", NULL, url, sizeof url) == -EINVAL);
	c = cfg_of("http://h", "a/b", false);
	CHECK(s3_build_url(&c, "k", NULL, url, sizeof url) == -EINVAL);
	c = cfg_of("http://h", "b", false);
	char key[100];
	memset(key, 'k', sizeof key - 1);
	key[sizeof key - 1] = 0;
	CHECK(s3_build_url(&c, key, NULL, url, sizeof url) == -ENAMETOOLONG);
	memset(key, ' ', 20); /* fits unencoded, not encoded */
	key[20] = 0;
	CHECK(s3_build_url(&c, key, NULL, url, sizeof url) == -ENAMETOOLONG);
	CHECK(s3_build_url(&c, "k", NULL, url, 12) == -ENAMETOOLONG); /* "http://h/b/k" is 12 */
	CHECK(s3_build_url(&c, "k", NULL, url, 13) == 12);
	return 0;
}

static int t_uri_encode(void)
{
	char out[128];
	CHECK(s3_uri_encode("AZaz09-._~", false, out, sizeof out) == 10);
	CHECK_STR(out, "AZaz09-._~");
	s3_uri_encode("a/b c+d=e&f%g", true, out, sizeof out);
	CHECK_STR(out, "a/b%20c%2Bd%3De%26f%25g");
	s3_uri_encode("a/b", false, out, sizeof out); /* query values: '/' encoded */
	CHECK_STR(out, "a%2Fb");
	s3_uri_encode("\xc3\xa9\x01\x7f", true, out, sizeof out);
	CHECK_STR(out, "%C3%A9%01%7F");
	CHECK(s3_uri_encode("ab", false, out, 3) == 2);
	CHECK(s3_uri_encode("abc", false, out, 3) == -ENAMETOOLONG);
	CHECK(s3_uri_encode(" ", false, out, 3) == -ENAMETOOLONG);
	CHECK(s3_uri_encode(" ", false, out, 4) == 3);
	return 0;
}

static int t_xml_value(void)
{
	const char *x = "<?xml version=\"1.0\"?>\n<Error><Code>SignatureDoesNotMatch</Code>"
			"<Message>a &lt;b&gt; &amp; &quot;c&quot; &apos;d&apos; &bogus;</Message></Error>";
	char out[64];
	CHECK(s3_xml_value(x, strlen(x), "Code", out, sizeof out) == 0);
	CHECK_STR(out, "SignatureDoesNotMatch");
	CHECK(s3_xml_value(x, strlen(x), "Message", out, sizeof out) == 0);
	CHECK_STR(out, "a <b> & \"c\" 'd' &bogus;");
	CHECK(s3_xml_value(x, strlen(x), "UploadId", out, sizeof out) == -ENOENT);
	CHECK(s3_xml_value(x, strlen(x), "Code", out, 5) == 0);
	CHECK_STR(out, "Sign");
	/* the length bounds the search: a tag past len is not found */
	CHECK(s3_xml_value(x, 40, "Code", out, sizeof out) == -ENOENT);
	const char *open_only = "<UploadId>abc";
	CHECK(s3_xml_value(open_only, strlen(open_only), "UploadId", out, sizeof out) == -ENOENT);
	return 0;
}

static int t_status_errno(void)
{
	bool retry;
	CHECK(s3_status_errno(200, "", &retry) == 0 && !retry);
	CHECK(s3_status_errno(206, "", &retry) == 0 && !retry);
	CHECK(s3_status_errno(403, "SignatureDoesNotMatch", &retry) == -EACCES && !retry);
	CHECK(s3_status_errno(403, "InvalidAccessKeyId", &retry) == -EACCES && !retry);
	CHECK(s3_status_errno(404, "NoSuchKey", &retry) == -ENOENT && !retry);
	CHECK(s3_status_errno(400, "InvalidArgument", &retry) == -EINVAL && !retry);
	CHECK(s3_status_errno(400, "RequestTimeout", &retry) == -EAGAIN && retry);
	CHECK(s3_status_errno(416, "InvalidRange", &retry) == -EIO && !retry);
	CHECK(s3_status_errno(503, "SlowDown", &retry) == -EAGAIN && retry);
	CHECK(s3_status_errno(500, "", &retry) == -EAGAIN && retry);
	CHECK(s3_status_errno(502, "", &retry) == -EAGAIN && retry);
	CHECK(s3_status_errno(429, "", &retry) == -EAGAIN && retry);
	/* a 200 CompleteMultipartUpload reply that holds an <Error> */
	CHECK(s3_status_errno(200, "InternalError", &retry) == -EAGAIN && retry);
	CHECK(s3_status_errno(200, "EntityTooSmall", &retry) == -EIO && !retry);
	return 0;
}

static int t_backoff(void)
{
	uint32_t total_max = 0;
	for (int retry = 1; retry < S3_ATTEMPTS; retry++) {
		uint32_t lo = s3_backoff_ms(retry, 0), hi = s3_backoff_ms(retry, UINT32_MAX - 1);
		uint32_t base = MIN((uint32_t)S3_BACKOFF_FIRST_MS << (retry - 1), (uint32_t)S3_BACKOFF_MAX_MS);
		CHECK(lo == base / 2);
		CHECK(hi >= lo && hi <= base);
		for (uint32_t r = 0; r < 5000; r += 7)
			CHECK(s3_backoff_ms(retry, r) >= lo && s3_backoff_ms(retry, r) <= base);
		total_max += base;
	}
	CHECK(s3_backoff_ms(1, 0) == 25 && s3_backoff_ms(1, 25) == 50);
	CHECK(s3_backoff_ms(30, 0) == S3_BACKOFF_MAX_MS / 2); /* capped, no overflow */
	CHECK(s3_backoff_ms(30, S3_BACKOFF_MAX_MS / 2) == S3_BACKOFF_MAX_MS);
	CHECK(total_max < 10000); /* all the sleeping of one request stays well under 30 s */
	return 0;
}

static int t_parse_credentials(void)
{
	struct s3_config c = { 0 };
	CHECK(s3_parse_credentials("aws_access_key_id=AK\naws_secret_access_key = S/K+\n", &c) == 0);
	CHECK_STR(c.access_key, "AK");
	CHECK_STR(c.secret_key, "S/K+");
	memset(&c, 0, sizeof c);
	const char *multi = "# comment\n[other]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n"
			    "\n[ default ]\r\n  aws_access_key_id = AK2  \r\n; x\naws_secret_access_key=SK2\r\n"
			    "region = eu-west-1\n[prod]\naws_secret_access_key = PROD\n";
	CHECK(s3_parse_credentials(multi, &c) == 0);
	CHECK_STR(c.access_key, "AK2");
	CHECK_STR(c.secret_key, "SK2");
	memset(&c, 0, sizeof c);
	CHECK(s3_parse_credentials("aws_access_key_id = AK\n", &c) == -EINVAL);
	CHECK(s3_parse_credentials("[prod]\naws_access_key_id = AK\naws_secret_access_key = SK\n", &c) == -EINVAL);
	CHECK(s3_parse_credentials("aws_access_key_id =\naws_secret_access_key = SK\n", &c) == -EINVAL);
	char big[400];
	int n = snprintf(big, sizeof big, "aws_access_key_id = AK\naws_secret_access_key = ");
	memset(big + n, 's', 200);
	big[n + 200] = 0;
	CHECK(s3_parse_credentials(big, &c) == -EINVAL);
	return 0;
}

static int write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	fclose(f);
	return chmod(path, mode);
}

static int t_load_credentials(void)
{
	char path[128];
	struct s3_config c = { 0 };
	snprintf(path, sizeof path, "%s/credentials", g_dir);
	CHECK(write_file(path, "[default]\naws_access_key_id = AKF\naws_secret_access_key = SKF\n", 0644) == 0);
	CHECK(s3_load_credentials(&c, path) == -EPERM); /* readable by others: refused */
	CHECK(chmod(path, 0640) == 0);
	CHECK(s3_load_credentials(&c, path) == -EPERM);
	CHECK(chmod(path, 0400) == 0);
	CHECK(s3_load_credentials(&c, path) == 0);
	CHECK_STR(c.access_key, "AKF");
	CHECK_STR(c.secret_key, "SKF");
	CHECK(s3_load_credentials(&c, g_dir) == -EPERM); /* a directory is not a credentials file */
	snprintf(path, sizeof path, "%s/missing", g_dir);
	CHECK(s3_load_credentials(&c, path) == -ENOENT);

	memset(&c, 0, sizeof c);
	setenv("AWS_ACCESS_KEY_ID", "AKE", 1);
	setenv("AWS_SECRET_ACCESS_KEY", "SKE", 1);
	CHECK(s3_load_credentials(&c, NULL) == 0);
	CHECK_STR(c.access_key, "AKE");
	CHECK_STR(c.secret_key, "SKE");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	CHECK(s3_load_credentials(&c, NULL) == -ENOENT);
	unsetenv("AWS_ACCESS_KEY_ID");
	return 0;
}

static int t_open_rejects(void)
{
	struct s3_client *s = NULL;
	struct s3_config c = cfg_of("http://127.0.0.1:9", "b", false);
	CHECK(s3_open(&c, &s) == -EINVAL); /* no keys */
	strcpy(c.access_key, "AK");
	strcpy(c.secret_key, "SK");
	CHECK(s3_open(&c, &s) == 0);
	s3_close(s);
	c = cfg_of("127.0.0.1:9000", "b", false);
	strcpy(c.access_key, "AK");
	strcpy(c.secret_key, "SK");
	CHECK(s3_open(&c, &s) == -EINVAL);
	return 0;
}

/* A port that was just free: nothing listens there, so connecting is refused. */
static int free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len))
		return -1;
	close(fd);
	return ntohs(a.sin_port);
}

static int t_unreachable_is_bounded(void)
{
	int port = free_port();
	CHECK(port > 0);
	struct s3_config c = cfg_of("", "b", false);
	snprintf(c.endpoint, sizeof c.endpoint, "http://127.0.0.1:%d", port);
	strcpy(c.access_key, "AK");
	strcpy(c.secret_key, "SECRET-NEVER-SHOWN");
	struct s3_client *s;
	CHECK(s3_open(&c, &s) == 0);
	char msg[600], buf[4];
	uint64_t t0 = aq_mono_ns();
	int rc = s3_check(s, msg, sizeof msg);
	double secs = (double)(aq_mono_ns() - t0) / 1e9;
	int rc2 = s3_get(s, "k", 0, buf, sizeof buf);
	s3_close(s);
	CHECK(rc == -EHOSTUNREACH && rc2 == -EHOSTUNREACH);
	CHECK(secs < 10); /* 6 tries, backoff at most 50+100+200+400+800 ms */
	CHECK(secs > 0.1);
	CHECK(strstr(msg, "gave up after 6 tries"));
	CHECK(!strstr(msg, "SECRET-NEVER-SHOWN") && !strstr(s3_last_error(), "SECRET-NEVER-SHOWN"));
	return 0;
}

static int t_key_limits(void)
{
	struct s3_client *s;
	struct s3_config c = cfg_of("http://127.0.0.1:9", "b", false);
	strcpy(c.access_key, "AK");
	strcpy(c.secret_key, "SK");
	CHECK(s3_open(&c, &s) == 0);
	static char key[S3_KEY_MAX + 2];
	memset(key, 'k', S3_KEY_MAX + 1);
	char buf[1];
	/* rejected before any request: nothing listens on port 9 and no retry delay is paid */
	uint64_t t0 = aq_mono_ns();
	CHECK(s3_put(s, key, buf, 1) == -ENAMETOOLONG);
	CHECK(s3_get(s, "", 0, buf, 1) == -EINVAL);
	CHECK(s3_delete(s, NULL) == -EINVAL);
	CHECK(s3_get(s, "k", UINT64_MAX, buf, 1) == -EINVAL);
	CHECK(s3_get(s, "k", 0, buf, 0) == 0);
	CHECK(aq_mono_ns() - t0 < 100000000ull);
	s3_close(s);
	return 0;
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "url_path_style", t_url_path_style },
		{ "url_virtual_host", t_url_virtual_host },
		{ "url_rejects", t_url_rejects },
		{ "uri_encode", t_uri_encode },
		{ "xml_value", t_xml_value },
		{ "status_errno", t_status_errno },
		{ "backoff", t_backoff },
		{ "parse_credentials", t_parse_credentials },
		{ "load_credentials", t_load_credentials },
		{ "open_rejects", t_open_rejects },
		{ "key_limits", t_key_limits },
		{ "unreachable_is_bounded", t_unreachable_is_bounded },
	};
	log_min_level = LOG_ERROR;
	snprintf(g_dir, sizeof g_dir, "/tmp/test_s3url.XXXXXX");
	if (!mkdtemp(g_dir)) {
		perror("mkdtemp");
		return 1;
	}
	int passed = 0, failed = 0;
	unit_run(tests, ARRAY_SIZE(tests), &passed, &failed);
	char path[128];
	snprintf(path, sizeof path, "%s/credentials", g_dir);
	unlink(path);
	rmdir(g_dir);
	return unit_report(passed, failed);
}

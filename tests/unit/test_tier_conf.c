/*
 * test_tier_conf.c - unit tests of the object tier's texts (src/tier/conf.c): tier.conf
 * parsing and writing (round trip, defaults, every refusal: unknown keys, secrets, values
 * too long or not one line, bad endpoints and watermarks) and directory rules. Prints one
 * line per case and "N passed, N failed".
 */
#include "tier/tier.h"
#include "unit/check.h"



static int parse(const char *text, struct tier_conf *c, char *err)
{
	return tier_conf_parse(text, strlen(text), c, err, 256);
}

static int t_conf_roundtrip(void)
{
	struct tier_conf c, d;
	char err[256], buf[TIER_TEXT_MAX];
	CHECK(parse("endpoint = http://127.0.0.1:9000\nbucket = b\n", &c, err) == 0);
	CHECK(!strcmp(c.endpoint, "http://127.0.0.1:9000") && !strcmp(c.bucket, "b"));
	CHECK(!strcmp(c.region, "us-east-1") && !c.virtual_host && !c.credentials_file[0]);
	CHECK(c.high == TIER_HIGH_DEFAULT && c.low == TIER_LOW_DEFAULT);
	/* everything set, comments, blanks, spaces and CRLF */
	CHECK(parse("# c\n\n  endpoint=https://s3.example.com  \r\nbucket = data\nregion = eu-west-1\n"
		    "virtual_host = 1\ncredentials_file = /etc/aq/keys\nhigh = 0.9\nlow = 0.5", &c, err) == 0);
	CHECK(!strcmp(c.endpoint, "https://s3.example.com") && !strcmp(c.region, "eu-west-1"));
	CHECK(c.virtual_host && !strcmp(c.credentials_file, "/etc/aq/keys") && c.high == 0.9 && c.low == 0.5);
	int n = tier_conf_format(&c, buf, sizeof buf);
	CHECK(n > 0 && (size_t)n == strlen(buf));
	CHECK(tier_conf_parse(buf, (size_t)n, &d, err, sizeof err) == 0);
	CHECK(!memcmp(&c, &d, sizeof c));
	CHECK(tier_conf_format(&c, buf, 10) == -ENAMETOOLONG);
	/* a high mark alone: the low one stays below it */
	CHECK(parse("endpoint = http://h\nbucket = b\nhigh = 0.6\n", &c, err) == 0 && c.low < c.high);
	return 0;
}

static int t_conf_refusals(void)
{
	struct tier_conf c;
	char err[256];
	static const char *bad[] = {
		"bucket = b\n",                                           /* no endpoint */
		"endpoint = ftp://h\nbucket = b\n",                       /* not http(s) */
		"endpoint = http://h\n",                                  /* no bucket */
		"endpoint = http://h\nbucket = a/b\n",                    /* not a bucket name */
		"endpoint = http://h\nbucket = b\ncolour = red\n",        /* unknown key */
		"endpoint = http://h\nbucket = b\njust words\n",          /* no '=' */
		"endpoint = http://h\nbucket = b\nvirtual_host = yes\n",  /* 0 or 1 */
		"endpoint = http://h\nbucket = b\nhigh = 1.5\n",          /* a share is in (0, 1] */
		"endpoint = http://h\nbucket = b\nhigh = 0\n",
		"endpoint = http://h\nbucket = b\nhigh = nan\n",
		"endpoint = http://h\nbucket = b\nlow = 0.9\nhigh = 0.8\n", /* low below high */
		"endpoint = http://h\nbucket = b\nhigh = 0.8x\n",
		"endpoint = http://h\nbucket = b\nregion = \x01\n",       /* control character */
		"endpoint = http://h\nbucket = 0123456789012345678901234567890123456789012345678901234567890123456789\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err[0] = 0;
		if (parse(bad[i], &c, err) != -EINVAL || !err[0]) {
			snprintf(g_why, sizeof g_why, "accepted or no reason: %s", bad[i]);
			return -1;
		}
	}
	/* secrets are refused by name, and the reason says where keys belong */
	CHECK(parse("endpoint = http://h\nbucket = b\naws_secret_access_key = x\n", &c, err) == -EINVAL);
	CHECK(strstr(err, "secrets do not belong"));
	CHECK(parse("endpoint = http://h\nbucket = b\naccess_key = x\n", &c, err) == -EINVAL);
	/* an overlong value or key, and a text over the limit */
	char big[TIER_TEXT_MAX + 2];
	memset(big, 'x', sizeof big);
	CHECK(tier_conf_parse(big, sizeof big, &c, err, sizeof err) == -EINVAL);
	snprintf(big, sizeof big, "endpoint = http://%0300d\nbucket = b\n", 0);
	CHECK(parse(big, &c, err) == -EINVAL);
	snprintf(big, sizeof big, "%040d = 1\n", 0);
	CHECK(parse(big, &c, err) == -EINVAL);
	/* a NUL inside the text ends nothing early: it is a control character in a value */
	static const char nul[] = "endpoint = http://h\nbucket = b\0c\n";
	CHECK(tier_conf_parse(nul, sizeof nul - 1, &c, err, sizeof err) == -EINVAL);
	return 0;
}

static int t_rules(void)
{
	struct tier_rule r;
	char buf[64];
	CHECK(tier_rule_parse("pin", 3, &r) == 0 && r.kind == TIER_RULE_PIN);
	CHECK(tier_rule_parse("clear", 5, &r) == 0 && r.kind == TIER_RULE_NONE);
	CHECK(tier_rule_parse("cold-after 30", 13, &r) == 0 && r.kind == TIER_RULE_COLD_AFTER && r.cold_after_s == 30);
	CHECK(tier_rule_parse(" cold-after 7\n", 14, &r) == 0 && r.cold_after_s == 7);
	static const char *bad[] = {"", "pinned", "cold-after", "cold-after ", "cold-after 0", "cold-after -1",
				    "cold-after 1x", "cold-after 99999999999999999999", "cold-after 4000000000000",
				    "cold-after  5", "PIN"};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		if (tier_rule_parse(bad[i], strlen(bad[i]), &r) != -EINVAL) {
			snprintf(g_why, sizeof g_why, "accepted rule \"%s\"", bad[i]);
			return -1;
		}
	struct tier_rule rules[] = {{TIER_RULE_NONE, 0}, {TIER_RULE_PIN, 0}, {TIER_RULE_COLD_AFTER, 1},
				    {TIER_RULE_COLD_AFTER, TIER_COLD_AFTER_MAX_S}};
	for (size_t i = 0; i < ARRAY_SIZE(rules); i++) {
		int n = tier_rule_format(&rules[i], buf, sizeof buf);
		struct tier_rule back;
		if (rules[i].kind == TIER_RULE_NONE) {
			CHECK(n == 0 && buf[0] == 0);
			continue;
		}
		CHECK(n > 0 && tier_rule_parse(buf, (size_t)n, &back) == 0);
		CHECK(back.kind == rules[i].kind && back.cold_after_s == rules[i].cold_after_s);
	}
	return 0;
}

int main(void)
{
	static const struct unit_test tests[] = {
		{ "conf_roundtrip", t_conf_roundtrip },
		{ "conf_refusals", t_conf_refusals },
		{ "rules", t_rules },
	};
	return unit_main(tests, ARRAY_SIZE(tests));
}

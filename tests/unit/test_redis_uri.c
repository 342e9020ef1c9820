/*
 * test_redis_uri.c - unit tests of backend/redis/uri.c.
 *
 * A table of good URIs with what they parse to, and a table of bad ones
 * with the reason each must give; no message may quote a password.
 */
#include "backend/redis/uri.h"

#include <check.h>
#include <errno.h>
#include <string.h>

struct good {
	const char *uri; /* after "redis:" */
	const char *user, *host0, *host1, *prefix;
	int port0, port1;
	size_t nnodes;
	int ttl, connect, delay;
};

static const struct good goods[] = {
	{ "//127.0.0.1:6379", "", "127.0.0.1", NULL, "dlock", 6379, 0, 1, 15000,
	  2000, 5000 },
	{ "//localhost", "", "localhost", NULL, "dlock", 6379, 0, 1, 15000,
	  2000, 5000 },
	{ "//h:1/", "", "h", NULL, "dlock", 1, 0, 1, 15000, 2000, 5000 },
	{ "//app@h:7000/my_ns-1.x", "app", "h", NULL, "my_ns-1.x", 7000, 0, 1,
	  15000, 2000, 5000 },
	{ "//[::1]:6380/p?ttl_ms=3000", "", "::1", NULL, "p", 6380, 0, 1, 3000,
	  750, 1000 },
	{ "//[fe80::1%eth0]", "", "fe80::1%eth0", NULL, "dlock", 6379, 0, 1,
	  15000, 2000, 5000 },
	{ "//a:1,b:2,c:3?lock_delay_ms=0", "", "a", "b", "dlock", 1, 2, 3,
	  15000, 2000, 0 },
	{ "//a:1?ttl_ms=1000&connect_timeout_ms=100&lock_delay_ms=600000", "",
	  "a", NULL, "dlock", 1, 0, 1, 1000, 100, 600000 },
	{ "//a:65535?connect_timeout_ms=5000", "", "a", NULL, "dlock", 65535, 0,
	  1, 15000, 5000, 5000 },
};

START_TEST(test_good)
{
	const struct good *g = &goods[_i];
	struct redis_uri u;
	char err[256] = "";

	ck_assert_msg(redis_uri_parse(g->uri, &u, err, sizeof(err)) == 0,
		      "%s: %s", g->uri, err);
	ck_assert_str_eq(u.user, g->user);
	ck_assert_uint_eq(u.nnodes, g->nnodes);
	ck_assert_str_eq(u.nodes[0].host, g->host0);
	ck_assert_int_eq(u.nodes[0].port, g->port0);
	if (g->host1) {
		ck_assert_str_eq(u.nodes[1].host, g->host1);
		ck_assert_int_eq(u.nodes[1].port, g->port1);
	}
	ck_assert_str_eq(u.prefix, g->prefix);
	ck_assert_int_eq(u.ttl_ms, g->ttl);
	ck_assert_int_eq(u.connect_timeout_ms, g->connect);
	ck_assert_int_eq(u.lock_delay_ms, g->delay);
}
END_TEST

struct bad {
	const char *uri;
	const char *reason; /* a substring of the message */
};

static const struct bad bads[] = {
	{ "", "expected redis://" },
	{ "127.0.0.1:6379", "expected redis://" },
	{ "//", "empty host" },
	{ "//:6379", "empty host" },
	{ "//h:", "empty port" },
	{ "//h:0", "bad port" },
	{ "//h:65536", "bad port" },
	{ "//h:12a", "bad port" },
	{ "//h:-1", "bad port" },
	{ "//h:1,", "empty host" },
	{ "//h:1,,g:2", "empty host" },
	{ "//h:1,h:1", "listed twice" },
	{ "//user:hunter2@h:1", "passwords go in the config file" },
	{ "//:hunter2@h:1", "passwords go in the config file" },
	{ "//@h:1", "empty user" },
	{ "//::1:6379", "brackets" },
	{ "//[::1", "unclosed" },
	{ "//[::1]x", "expected ':'" },
	{ "//[::1]:", "empty port" },
	{ "//h h:1", "bad character" },
	{ "//h:1/a:b", "prefix may hold only" },
	{ "//h:1/a{b}", "prefix may hold only" },
	{ "//h:1?ttl=5", "unknown query key 'ttl'" },
	{ "//h:1?ttl_ms", "without '='" },
	{ "//h:1?ttl_ms=", "ttl_ms must be a number" },
	{ "//h:1?ttl_ms=999", "ttl_ms must be a number from 1000" },
	{ "//h:1?ttl_ms=15s", "ttl_ms must be a number" },
	{ "//h:1?ttl_ms=+5000", "ttl_ms must be a number" },
	{ "//h:1?ttl_ms=99999999999", "ttl_ms must be a number" },
	{ "//h:1?ttl_ms=5000&ttl_ms=6000", "given twice" },
	{ "//h:1?ttl_ms=5000&", "trailing '&'" },
	{ "//h:1?connect_timeout_ms=50", "connect_timeout_ms must be" },
	{ "//h:1?ttl_ms=2000&connect_timeout_ms=1000", "below ttl_ms / 2" },
	{ "//h:1?lock_delay_ms=-1", "lock_delay_ms must be" },
	{ "//a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8", "too many nodes" },
};

START_TEST(test_bad)
{
	const struct bad *b = &bads[_i];
	struct redis_uri u;
	char err[256] = "";

	ck_assert_int_eq(redis_uri_parse(b->uri, &u, err, sizeof(err)),
			 -EINVAL);
	ck_assert_msg(strstr(err, b->reason) != NULL, "%s: '%s' lacks '%s'",
		      b->uri, err, b->reason);
	ck_assert_msg(strstr(err, "hunter2") == NULL,
		      "%s: message quotes the "
		      "password: %s",
		      b->uri, err);
	ck_assert_msg(strncmp(err, "malformed redis URI: ", 21) == 0, "%s",
		      err);
}
END_TEST

/* a long host name, user and prefix hit their limits, not the buffers */
START_TEST(test_limits)
{
	char uri[1024], err[256];
	struct redis_uri u;

	memset(uri, 0, sizeof(uri));
	strcpy(uri, "//");
	memset(uri + 2, 'h', 300);
	ck_assert_int_eq(redis_uri_parse(uri, &u, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "host name too long"));

	memset(uri, 0, sizeof(uri));
	strcpy(uri, "//h:1/");
	memset(uri + 6, 'p', 64);
	ck_assert_int_eq(redis_uri_parse(uri, &u, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "prefix too long"));
	uri[6 + 63] = '\0';
	ck_assert_int_eq(redis_uri_parse(uri, &u, err, sizeof(err)), 0);
	ck_assert_uint_eq(strlen(u.prefix), 63);

	/* a tiny err buffer is never overrun */
	ck_assert_int_eq(redis_uri_parse("//h:0", &u, err, 8), -EINVAL);
	ck_assert_uint_eq(strlen(err), 7);
}
END_TEST

static Suite *redis_uri_suite(void)
{
	Suite *s = suite_create("redis_uri");
	TCase *tc = tcase_create("parse");

	tcase_add_loop_test(tc, test_good, 0, sizeof(goods) / sizeof(goods[0]));
	tcase_add_loop_test(tc, test_bad, 0, sizeof(bads) / sizeof(bads[0]));
	tcase_add_test(tc, test_limits);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(redis_uri_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

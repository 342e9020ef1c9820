/*
 * test_pg_uri.c - unit tests of backend/pg/uri.c.
 *
 * A table of good URIs with what they parse to, a table of bad ones with
 * the reason each must give (no message may quote a password), the limits
 * of every buffer, the libpq parameters a URI turns into (hosts rotated
 * for failover, the password only when given), and the backend registry's
 * two schemes.
 */
#include "backend/pg/uri.h"
#include "backend/backend.h"

#include <check.h>
#include <errno.h>
#include <string.h>

struct good {
	const char *uri; /* after "postgresql:" */
	const char *user, *host0, *host1, *db, *schema;
	int port0, port1;
	size_t nhosts;
	int ttl, connect, delay;
	const char *sslmode, *tsa;
};

static const struct good goods[] = {
	{ "//127.0.0.1/db", "", "127.0.0.1", NULL, "db", "dlock", 5432, 0, 1,
	  15000, 2000, 5000, "", "" },
	{ "//localhost:6543/my-db.x_1", "", "localhost", NULL, "my-db.x_1",
	  "dlock", 6543, 0, 1, 15000, 2000, 5000, "", "" },
	{ "//app@h:1/d?schema=locks_2", "app", "h", NULL, "d", "locks_2", 1, 0,
	  1, 15000, 2000, 5000, "", "" },
	{ "//[::1]:5433/d?ttl_ms=3000", "", "::1", NULL, "d", "dlock", 5433, 0,
	  1, 3000, 750, 1000, "", "" },
	{ "//[fe80::1%eth0]/d", "", "fe80::1%eth0", NULL, "d", "dlock", 5432, 0,
	  1, 15000, 2000, 5000, "", "" },
	{ "//a:1,b:2/d?target_session_attrs=read-write", "", "a", "b", "d",
	  "dlock", 1, 2, 2, 15000, 2000, 5000, "", "read-write" },
	{ "//%2Fvar%2Frun%2Fpostgresql/d", "", "/var/run/postgresql", NULL, "d",
	  "dlock", 5432, 0, 1, 15000, 2000, 5000, "", "" },
	{ "//u@%2ftmp%2fpg.X:7/d?sslmode=disable", "u", "/tmp/pg.X", NULL, "d",
	  "dlock", 7, 0, 1, 15000, 2000, 5000, "disable", "" },
	{ "//h/d?ttl_ms=1000&connect_timeout_ms=100&lock_delay_ms=600000", "",
	  "h", NULL, "d", "dlock", 5432, 0, 1, 1000, 100, 600000, "", "" },
	{ "//h/d?sslmode=verify-full&schema=_x", "", "h", NULL, "d", "_x", 5432,
	  0, 1, 15000, 2000, 5000, "verify-full", "" },
	{ "//h/d?lock_delay_ms=0&connect_timeout_ms=5000", "", "h", NULL, "d",
	  "dlock", 5432, 0, 1, 15000, 5000, 0, "", "" },
};

START_TEST(test_good)
{
	const struct good *g = &goods[_i];
	struct pg_uri u;
	char err[256] = "";

	ck_assert_msg(pg_uri_parse(g->uri, &u, err, sizeof(err)) == 0, "%s: %s",
		      g->uri, err);
	ck_assert_str_eq(u.user, g->user);
	ck_assert_uint_eq(u.nhosts, g->nhosts);
	ck_assert_str_eq(u.hosts[0].host, g->host0);
	ck_assert_int_eq(u.hosts[0].port, g->port0);
	if (g->host1) {
		ck_assert_str_eq(u.hosts[1].host, g->host1);
		ck_assert_int_eq(u.hosts[1].port, g->port1);
	}
	ck_assert_str_eq(u.dbname, g->db);
	ck_assert_str_eq(u.schema, g->schema);
	ck_assert_int_eq(u.ttl_ms, g->ttl);
	ck_assert_int_eq(u.connect_timeout_ms, g->connect);
	ck_assert_int_eq(u.lock_delay_ms, g->delay);
	ck_assert_str_eq(u.sslmode, g->sslmode);
	ck_assert_str_eq(u.target_session_attrs, g->tsa);
}
END_TEST

struct bad {
	const char *uri;
	const char *reason; /* a substring of the message */
};

static const struct bad bads[] = {
	{ "", "expected postgresql://" },
	{ "h/d", "expected postgresql://" },
	{ "//", "empty host" },
	{ "///d", "empty host" },
	{ "//:5432/d", "empty host" },
	{ "//h", "missing /DBNAME" },
	{ "//h?schema=x", "missing /DBNAME" },
	{ "//h/", "empty database" },
	{ "//h/?ttl_ms=3000", "empty database" },
	{ "//h/a b", "database name may hold only" },
	{ "//h/a'b", "database name may hold only" },
	{ "//h:/d", "empty port" },
	{ "//h:0/d", "bad port" },
	{ "//h:65536/d", "bad port" },
	{ "//h:12a/d", "bad port" },
	{ "//h,/d", "empty host" },
	{ "//h:1,h:1/d", "listed twice" },
	{ "//user:hunter2@h/d", "passwords go in the config file" },
	{ "//:hunter2@h/d", "passwords go in the config file" },
	{ "//h/d?password=hunter2", "passwords go in the config file" },
	{ "//h/d?sslpassword=hunter2", "passwords go in the config file" },
	{ "//@h/d", "empty user" },
	{ "//a@b@h/d", "more than one '@'" },
	{ "//u$er@h/d", "bad character in user" },
	{ "//::1/d", "brackets" },
	{ "//[::1/d", "unclosed" },
	{ "//[::1]x/d", "expected ':'" },
	{ "//h h/d", "bad character in host" },
	{ "//%2Fa%2/d", "truncated" },
	{ "//%2Fa%zz/d", "bad %-escape" },
	{ "//%2Fa%2Cb/d", "bad character in socket" },
	{ "//%2Fa%20b/d", "bad character in socket" },
	{ "//%2Fa%5Cb/d", "bad character in socket" },
	{ "//%61b/d", "must be absolute" },
	{ "//%2Fa/b/d", "database name may hold only" },
	{ "//h/d?schema=", "schema must be" },
	{ "//h/d?schema=Abc", "schema must be" },
	{ "//h/d?schema=a-b", "schema must be" },
	{ "//h/d?schema=a.b", "schema must be" },
	{ "//h/d?schema=9a", "schema must be" },
	{ "//h/d?schema=pg_a", "schema must be" },
	{ "//h/d?schema=a%22", "schema must be" },
	{ "//h/d?schema=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "schema "
								    "must be" },
	{ "//h/d?ttl=5", "unknown query key 'ttl'" },
	{ "//h/d?options=-c", "unknown query key 'options'" },
	{ "//h/d?ttl_ms", "without '='" },
	{ "//h/d?ttl_ms=", "ttl_ms must be a number" },
	{ "//h/d?ttl_ms=999", "ttl_ms must be a number from 1000" },
	{ "//h/d?ttl_ms=+5000", "ttl_ms must be a number" },
	{ "//h/d?ttl_ms=5000&ttl_ms=6000", "given twice" },
	{ "//h/d?ttl_ms=5000&", "trailing '&'" },
	{ "//h/d?connect_timeout_ms=50", "connect_timeout_ms must be" },
	{ "//h/d?ttl_ms=2000&connect_timeout_ms=1000", "below ttl_ms / 2" },
	{ "//h/d?lock_delay_ms=-1", "lock_delay_ms must be" },
	{ "//h/d?sslmode=on", "sslmode must be" },
	{ "//h/d?sslmode=", "sslmode must be" },
	{ "//h/d?target_session_attrs=rw", "target_session_attrs must be" },
	{ "//a,b,c,d,e,f,g,h,i/d", "too many hosts" },
};

START_TEST(test_bad)
{
	const struct bad *b = &bads[_i];
	struct pg_uri u;
	char err[256] = "";

	ck_assert_int_eq(pg_uri_parse(b->uri, &u, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, b->reason) != NULL, "%s: '%s' lacks '%s'",
		      b->uri, err, b->reason);
	ck_assert_msg(strstr(err, "hunter2") == NULL,
		      "%s: message quotes the password: %s", b->uri, err);
	ck_assert_msg(strncmp(err, "malformed postgresql URI: ", 26) == 0, "%s",
		      err);
}
END_TEST

/* long names hit their limits, not the buffers */
START_TEST(test_limits)
{
	char uri[1024], err[256];
	struct pg_uri u;

	memset(uri, 0, sizeof(uri));
	strcpy(uri, "//");
	memset(uri + 2, 'h', 300);
	strcat(uri, "/d");
	ck_assert_int_eq(pg_uri_parse(uri, &u, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "host name too long"));

	memset(uri, 0, sizeof(uri));
	strcpy(uri, "//h/");
	memset(uri + 4, 'd', 64);
	ck_assert_int_eq(pg_uri_parse(uri, &u, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "database name too long"));
	uri[4 + 63] = '\0';
	ck_assert_int_eq(pg_uri_parse(uri, &u, err, sizeof(err)), 0);
	ck_assert_uint_eq(strlen(u.dbname), 63);

	memset(uri, 0, sizeof(uri));
	strcpy(uri, "//");
	memset(uri + 2, 'u', 64);
	strcat(uri, "@h/d");
	ck_assert_int_eq(pg_uri_parse(uri, &u, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "user name too long"));

	/* a socket directory as long as a host name may be, and longer */
	memset(uri, 0, sizeof(uri));
	strcpy(uri, "//%2F");
	memset(uri + 5, 's', 254);
	strcat(uri, "/d");
	ck_assert_int_eq(pg_uri_parse(uri, &u, err, sizeof(err)), 0);
	ck_assert_uint_eq(strlen(u.hosts[0].host), 255);
	memset(uri, 0, sizeof(uri));
	strcpy(uri, "//%2F");
	memset(uri + 5, 's', 255);
	strcat(uri, "/d");
	ck_assert_int_eq(pg_uri_parse(uri, &u, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "socket directory too long"));

	/* 40 characters of schema are fine */
	ck_assert_int_eq(pg_uri_parse("//h/d?schema="
				      "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				      "a",
				      &u, err, sizeof(err)),
			 0);
	ck_assert_uint_eq(strlen(u.schema), 40);

	/* a tiny err buffer is never overrun */
	ck_assert_int_eq(pg_uri_parse("//h:0/d", &u, err, 8), -EINVAL);
	ck_assert_uint_eq(strlen(err), 7);
}
END_TEST

static const char *ci_get(const struct pg_conninfo *ci, const char *kw)
{
	for (size_t i = 0; ci->kw[i]; i++)
		if (strcmp(ci->kw[i], kw) == 0)
			return ci->val[i];
	return NULL;
}

START_TEST(test_conninfo)
{
	struct pg_conninfo ci;
	struct pg_uri u;
	char err[256];
	size_t n = 0;

	ck_assert_int_eq(pg_uri_parse("//me@a:1,%2Frun%2Fpg:2,[::1]/db?"
				      "ttl_ms=6000&sslmode=require&"
				      "target_session_attrs=read-write",
				      &u, err, sizeof(err)),
			 0);
	pg_uri_conninfo(&u, 0, "dlockfs h worker", NULL, &ci);
	ck_assert_str_eq(ci_get(&ci, "host"), "a,/run/pg,::1");
	ck_assert_str_eq(ci_get(&ci, "port"), "1,2,5432");
	ck_assert_str_eq(ci_get(&ci, "dbname"), "db");
	ck_assert_str_eq(ci_get(&ci, "user"), "me");
	ck_assert_str_eq(ci_get(&ci, "sslmode"), "require");
	ck_assert_str_eq(ci_get(&ci, "target_session_attrs"), "read-write");
	ck_assert_str_eq(ci_get(&ci, "application_name"), "dlockfs h worker");
	ck_assert_str_eq(ci_get(&ci, "tcp_user_timeout"), "1500");
	ck_assert_str_eq(ci_get(&ci, "keepalives_idle"), "2");
	/* session settings are SET after connecting: poolers refuse them */
	ck_assert_ptr_null(ci_get(&ci, "options"));
	/* no password unless given: libpq's ~/.pgpass then applies */
	ck_assert_ptr_null(ci_get(&ci, "password"));
	while (ci.kw[n])
		n++;
	ck_assert_uint_lt(n, PG_CONNINFO_MAX);

	/* the failover list rotates: a host that timed out goes last */
	pg_uri_conninfo(&u, 1, "x", "pw", &ci);
	ck_assert_str_eq(ci_get(&ci, "host"), "/run/pg,::1,a");
	ck_assert_str_eq(ci_get(&ci, "port"), "2,5432,1");
	ck_assert_str_eq(ci_get(&ci, "password"), "pw");
	pg_uri_conninfo(&u, 5, "x", NULL, &ci);
	ck_assert_str_eq(ci_get(&ci, "host"), "::1,a,/run/pg");

	/* no user, no sslmode: libpq's defaults */
	ck_assert_int_eq(pg_uri_parse("//h/d", &u, err, sizeof(err)), 0);
	pg_uri_conninfo(&u, 0, "x", NULL, &ci);
	ck_assert_ptr_null(ci_get(&ci, "user"));
	ck_assert_ptr_null(ci_get(&ci, "sslmode"));
	ck_assert_ptr_null(ci_get(&ci, "target_session_attrs"));
}
END_TEST

/* both schemes reach the backend; the check refuses what the parser does */
START_TEST(test_registry)
{
	char err[256];

	ck_assert_ptr_eq(dl_backend_find("postgresql://h/d"), &dl_pg_ops);
	ck_assert_ptr_eq(dl_backend_find("postgres://h/d"), &dl_pg_alias_ops);
	ck_assert_int_eq(
		dl_backend_check_uri("postgresql://h/d", err, sizeof(err)), 0);
	ck_assert_int_eq(dl_backend_check_uri("postgres://h:1,g:2/d?ttl_ms="
					      "3000",
					      err, sizeof(err)),
			 0);
	ck_assert_int_eq(dl_backend_check_uri("postgresql://u:pw@h/d", err,
					      sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "config file"));
	ck_assert_int_eq(dl_backend_check_uri("postgresq://h/d", err,
					      sizeof(err)),
			 -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "postgresql"));
	ck_assert(dl_pg_ops.shared);
}
END_TEST

static Suite *pg_uri_suite(void)
{
	Suite *s = suite_create("pg_uri");
	TCase *tc = tcase_create("parse");

	tcase_add_loop_test(tc, test_good, 0, sizeof(goods) / sizeof(goods[0]));
	tcase_add_loop_test(tc, test_bad, 0, sizeof(bads) / sizeof(bads[0]));
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_conninfo);
	tcase_add_test(tc, test_registry);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pg_uri_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}

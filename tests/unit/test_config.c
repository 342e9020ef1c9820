/*
 * test_config.c - unit tests of backend/util/config.c.
 *
 * Parsing from strings (table of good and bad inputs), last-wins lookup,
 * the secret-key rule, and loading real files made with mkstemp() in /tmp
 * with various modes.  No message may ever quote a value.
 */
#include "backend/util/config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SECRET "hunter2-s3cr3t"

/* ------------------------------------------------------------- parsing */

START_TEST(test_parse_good)
{
	struct dl_config cfg = { 0 };
	char err[256] = "";
	const char *text = "# dlockfs\n"
			   "\n"
			   "backend = redis://127.0.0.1:6379/0\n"
			   "  lock.timeout_ms=1500  \n"
			   "\t   # indented comment\n"
			   "host-id =\tnode_1\r\n"
			   "empty =\n"
			   "url = a=b#c  d\n"
			   "last=no newline";

	ck_assert_int_eq(dl_config_parse(&cfg, text, "t", err, sizeof(err)), 0);
	ck_assert_uint_eq(cfg.n, 6);
	ck_assert_str_eq(dl_config_get(&cfg, "backend"), "redis://"
							 "127.0.0.1:6379/0");
	ck_assert_str_eq(dl_config_get(&cfg, "lock.timeout_ms"), "1500");
	ck_assert_str_eq(dl_config_get(&cfg, "host-id"), "node_1");
	ck_assert_str_eq(dl_config_get(&cfg, "empty"), "");
	ck_assert_str_eq(dl_config_get(&cfg, "url"), "a=b#c  d");
	ck_assert_str_eq(dl_config_get(&cfg, "last"), "no newline");
	ck_assert_ptr_null(dl_config_get(&cfg, "missing"));
	ck_assert_ptr_null(dl_config_get(&cfg, "Backend")); /* case matters */
	ck_assert_ptr_null(dl_config_get(&cfg, "#"));
	ck_assert_str_eq(cfg.v[0].key, "backend"); /* file order kept */
	dl_config_free(&cfg);
	ck_assert_ptr_null(cfg.v);
	ck_assert_uint_eq(cfg.n, 0);
	dl_config_free(&cfg);
}
END_TEST

static const char *const empty_texts[] = {
	"", "\n", "\n\n\n", "# only = a comment\n", "   \t\r\n", "#\n  #x\n",
};

START_TEST(test_parse_empty)
{
	struct dl_config cfg = { 0 };

	ck_assert_int_eq(dl_config_parse(&cfg, empty_texts[_i], "t", NULL, 0),
			 0);
	ck_assert_uint_eq(cfg.n, 0);
	dl_config_free(&cfg);
}
END_TEST

START_TEST(test_last_wins)
{
	struct dl_config cfg = { 0 };

	ck_assert_int_eq(
		dl_config_parse(&cfg, "k=1\nj=x\nk = 2\n", "a", NULL, 0), 0);
	ck_assert_str_eq(dl_config_get(&cfg, "k"), "2");
	/* a second source appends, and its values win too */
	ck_assert_int_eq(dl_config_parse(&cfg, "k=3\n", "b", NULL, 0), 0);
	ck_assert_str_eq(dl_config_get(&cfg, "k"), "3");
	ck_assert_str_eq(dl_config_get(&cfg, "j"), "x");
	ck_assert_uint_eq(cfg.n, 4);
	dl_config_free(&cfg);
}
END_TEST

/* secrets go, wiped; the rest keeps its order and its last-wins values */
START_TEST(test_forget_secrets)
{
	struct dl_config cfg = { 0 };

	ck_assert_int_eq(dl_config_parse(&cfg,
					 "a=1\nredis_password=" SECRET "\n"
					 "b=2\nPassword=x\na=3\n"
					 "zk_password=y\nredis_user=u\n",
					 "t", NULL, 0),
			 0);
	ck_assert_uint_eq(cfg.n, 7);
	dl_config_forget_secrets(&cfg);
	ck_assert_uint_eq(cfg.n, 4);
	ck_assert_ptr_null(dl_config_get(&cfg, "redis_password"));
	ck_assert_ptr_null(dl_config_get(&cfg, "Password"));
	ck_assert_ptr_null(dl_config_get(&cfg, "zk_password"));
	ck_assert_str_eq(dl_config_get(&cfg, "a"), "3");
	ck_assert_str_eq(dl_config_get(&cfg, "b"), "2");
	ck_assert_str_eq(dl_config_get(&cfg, "redis_user"), "u");
	ck_assert_str_eq(cfg.v[0].key, "a");
	ck_assert_str_eq(cfg.v[1].key, "b");
	for (size_t i = 0; i < cfg.n; i++)
		ck_assert_ptr_null(strstr(cfg.v[i].value, SECRET));
	dl_config_forget_secrets(&cfg); /* nothing left to forget */
	ck_assert_uint_eq(cfg.n, 4);
	dl_config_free(&cfg);
}
END_TEST

static const struct {
	const char *text;
	const char *where; /* must appear in err */
} bad_cases[] = {
	{ "a=1\nb=2\nnonsense\n", "cfg:3:" },
	{ "password " SECRET "\n", "cfg:1:" },
	{ "= " SECRET "\n", "cfg:1:" },
	{ "a=1\n\n# c\nbad key = " SECRET "\n", "cfg:4:" },
	{ "a=1\r\nk\xc3\xa9y=" SECRET "\n", "cfg:2:" },
	{ "a/b=1\n", "cfg:1:" },
	{ "[section]\n", "cfg:1:" },
	{ "a=1\n" SECRET, "cfg:2:" },
};

START_TEST(test_parse_bad)
{
	struct dl_config cfg = { 0 };
	char err[256] = "";

	ck_assert_int_eq(dl_config_parse(&cfg, "keep = me\n", "first", NULL, 0),
			 0);
	ck_assert_int_eq(dl_config_parse(&cfg, bad_cases[_i].text, "cfg", err,
					 sizeof(err)),
			 -EINVAL);
	ck_assert_msg(strstr(err, bad_cases[_i].where) != NULL,
		      "err \"%s\" lacks \"%s\"", err, bad_cases[_i].where);
	ck_assert_msg(strstr(err, SECRET) == NULL, "err leaks: %s", err);
	/* the failed call appended nothing */
	ck_assert_uint_eq(cfg.n, 1);
	ck_assert_str_eq(dl_config_get(&cfg, "keep"), "me");
	ck_assert_ptr_null(dl_config_get(&cfg, "a"));
	dl_config_free(&cfg);
}
END_TEST

START_TEST(test_err_small_buffer)
{
	struct dl_config cfg = { 0 };
	char err[8];

	memset(err, 'x', sizeof(err));
	ck_assert_int_eq(dl_config_parse(&cfg, "oops\n", "a-long-name", err,
					 sizeof(err)),
			 -EINVAL);
	ck_assert_uint_eq(strlen(err), sizeof(err) - 1);
	ck_assert_int_eq(dl_config_parse(&cfg, "oops\n", "n", NULL, 0),
			 -EINVAL);
	dl_config_free(&cfg);
}
END_TEST

static const struct {
	const char *key;
	int secret;
} secret_cases[] = {
	{ "password", 1 },
	{ "redis_password", 1 },
	{ "pg.admin_password", 1 },
	{ "PASSWORD", 1 },
	{ "Redis_Password", 1 },
	{ "_password", 1 },
	{ "passwords", 0 },
	{ "password_file", 0 },
	{ "redispassword", 0 },
	{ "redis_password_file", 0 },
	{ "user", 0 },
	{ "", 0 },
	{ "pass", 0 },
};

START_TEST(test_is_secret)
{
	ck_assert_msg(!!dl_config_is_secret(secret_cases[_i].key) ==
			      secret_cases[_i].secret,
		      "key \"%s\"", secret_cases[_i].key);
}
END_TEST

/* ------------------------------------------------------------- loading */

/* A temporary file holding @text with mode @mode; returns its path. */
static char *tmpfile_with(const char *text, mode_t mode)
{
	static char path[64];
	size_t len = strlen(text);
	int fd;

	snprintf(path, sizeof(path), "/tmp/dlockfs-cfg-XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	ck_assert_int_eq(fchmod(fd, mode), 0);
	ck_assert_int_eq(close(fd), 0);
	return path;
}

static const struct {
	mode_t mode;
	int ret;
} mode_cases[] = {
	{ 0600, 0 },	  { 0400, 0 },	    { 0700, 0 },
	{ 0644, -EPERM }, { 0640, -EPERM }, { 0604, -EPERM },
	{ 0610, -EPERM }, { 0601, -EPERM }, { 0666, -EPERM },
};

START_TEST(test_load_secret_modes)
{
	struct dl_config cfg = { 0 };
	char err[512] = "";
	char *path = tmpfile_with("backend = redis://h\n"
				  "redis_password = " SECRET "\n",
				  mode_cases[_i].mode);
	int ret = dl_config_load(&cfg, path, err, sizeof(err));

	unlink(path);
	ck_assert_msg(ret == mode_cases[_i].ret, "mode %o: ret %d (%s)",
		      (unsigned)mode_cases[_i].mode, ret, err);
	ck_assert_msg(strstr(err, SECRET) == NULL, "err leaks: %s", err);
	if (ret == 0) {
		ck_assert_str_eq(dl_config_get(&cfg, "redis_password"), SECRET);
		ck_assert_str_eq(dl_config_get(&cfg, "backend"), "redis://h");
	} else {
		ck_assert_uint_eq(cfg.n, 0);
		ck_assert_ptr_nonnull(strstr(err, path));
		ck_assert_ptr_nonnull(strstr(err, "redis_password"));
	}
	dl_config_free(&cfg);
}
END_TEST

START_TEST(test_load_public_ok)
{
	struct dl_config cfg = { 0 };
	char err[512] = "";
	char *path = tmpfile_with("# no secrets here\nmount = /mnt/x\n", 0644);

	ck_assert_int_eq(dl_config_load(&cfg, path, err, sizeof(err)), 0);
	unlink(path);
	ck_assert_str_eq(dl_config_get(&cfg, "mount"), "/mnt/x");
	dl_config_free(&cfg);
}
END_TEST

START_TEST(test_load_refused_keeps_cfg)
{
	struct dl_config cfg = { 0 };
	char err[512] = "";
	char *path;

	ck_assert_int_eq(dl_config_parse(&cfg, "a = 1\n", "x", NULL, 0), 0);
	path = tmpfile_with("a = 2\npassword = " SECRET "\n", 0644);
	ck_assert_int_eq(dl_config_load(&cfg, path, err, sizeof(err)), -EPERM);
	unlink(path);
	ck_assert_uint_eq(cfg.n, 1);
	ck_assert_str_eq(dl_config_get(&cfg, "a"), "1");
	ck_assert_ptr_null(strstr(err, SECRET));
	dl_config_free(&cfg);
}
END_TEST

START_TEST(test_load_errors)
{
	struct dl_config cfg = { 0 };
	char err[512] = "";
	char *path;

	ck_assert_int_eq(dl_config_load(&cfg, "/nonexistent/dlockfs.conf", err,
					sizeof(err)),
			 -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "/nonexistent/dlockfs.conf"));

	ck_assert_int_eq(dl_config_load(&cfg, "/tmp", err, sizeof(err)),
			 -EINVAL);

	path = tmpfile_with("ok = 1\nredis_password " SECRET "\n", 0600);
	ck_assert_int_eq(dl_config_load(&cfg, path, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, ":2:") != NULL, "err: %s", err);
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_ptr_null(strstr(err, SECRET));
	unlink(path);
	ck_assert_uint_eq(cfg.n, 0);

	/* a NUL byte would silently cut the file short: refuse it */
	path = tmpfile_with("", 0600);
	{
		FILE *f = fopen(path, "w");

		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fwrite("a=1\n\0b=2\n", 1, 9, f), 9);
		ck_assert_int_eq(fclose(f), 0);
	}
	ck_assert_int_eq(dl_config_load(&cfg, path, err, sizeof(err)), -EINVAL);
	unlink(path);
	ck_assert_uint_eq(cfg.n, 0);
	dl_config_free(&cfg);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("parse");

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))
	tcase_add_test(tc, test_parse_good);
	tcase_add_loop_test(tc, test_parse_empty, 0, NELEM(empty_texts));
	tcase_add_test(tc, test_last_wins);
	tcase_add_loop_test(tc, test_parse_bad, 0, NELEM(bad_cases));
	tcase_add_test(tc, test_err_small_buffer);
	tcase_add_loop_test(tc, test_is_secret, 0, NELEM(secret_cases));
	tcase_add_test(tc, test_forget_secrets);
	suite_add_tcase(s, tc);

	tc = tcase_create("load");
	tcase_add_loop_test(tc, test_load_secret_modes, 0, NELEM(mode_cases));
	tcase_add_test(tc, test_load_public_ok);
	tcase_add_test(tc, test_load_refused_keeps_cfg);
	tcase_add_test(tc, test_load_errors);
	suite_add_tcase(s, tc);
#undef NELEM
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

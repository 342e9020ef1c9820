/*
 * test_local_versions.c - the versions of the "local:" backend (issue 14):
 * 0 until the first bump, one more per bump, never a lost bump under
 * concurrent callers, independent per name, untouched by locks and
 * breaks.
 */
#include <check.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"

static void cb_granted(void *ctx, uint64_t wait_id, const struct dl_grant *g)
{
	(void)ctx, (void)wait_id, (void)g;
}

static void cb_failed(void *ctx, uint64_t wait_id, int err)
{
	(void)ctx, (void)wait_id, (void)err;
}

static void cb_lost(void *ctx, const char *res, enum dl_space space,
		    uint64_t owner, int err)
{
	(void)ctx, (void)res, (void)space, (void)owner, (void)err;
}

static struct dl_lease lease = { 0, INT64_MAX, 0, 0 };
static const struct dl_backend_cb cb = {
	.granted = cb_granted,
	.failed = cb_failed,
	.lost = cb_lost,
};

static struct dl_backend *open_local(void)
{
	struct dl_backend_conf conf = {
		.uri = "local:",
		.host_id = "h1",
		.incarnation = 1,
		.lease = &lease,
	};
	struct dl_backend *be = NULL;
	char err[256];

	ck_assert_int_eq(dl_backend_open(&conf, &cb, &be, err, sizeof(err)), 0);
	return be;
}

START_TEST(test_zero_then_one_per_bump)
{
	struct dl_backend *be = open_local();
	struct dl_version v;

	ck_assert_int_eq(dl_backend_version(be, "f", &v), 0);
	ck_assert_uint_eq(v.version, 0);
	ck_assert_str_eq(v.host, "");
	ck_assert_int_eq(v.changed_ms, 0);
	ck_assert_int_eq(dl_backend_bump(be, "f", &v), 0);
	ck_assert_uint_eq(v.version, 1);
	ck_assert_int_eq(dl_backend_bump(be, "f", &v), 0);
	ck_assert_uint_eq(v.version, 2);
	ck_assert_str_eq(v.host, "h1");
	ck_assert_int_gt(v.changed_ms, 1600000000000LL);
	ck_assert_int_eq(dl_backend_version(be, "f", &v), 0);
	ck_assert_uint_eq(v.version, 2);
	/* another name, and a name that differs in one byte, are apart */
	ck_assert_int_eq(dl_backend_version(be, "f\n", &v), 0);
	ck_assert_uint_eq(v.version, 0);
	ck_assert_int_eq(dl_backend_version(be, "g", &v), 0);
	ck_assert_uint_eq(v.version, 0);
	dl_backend_close(be);
}
END_TEST

START_TEST(test_locks_and_break_keep_it)
{
	struct dl_backend *be = open_local();
	struct dl_lock_req r = {
		.resource = "f",
		.space = DL_SPACE_POSIX,
		.type = DL_WRLCK,
		.start = 0,
		.end = DL_RANGE_EOF,
		.owner = 7,
		.pid = 1,
	};
	struct dl_grant g;
	struct dl_version v;

	ck_assert_int_eq(dl_backend_bump(be, "f", &v), 0);
	ck_assert_int_eq(dl_backend_lock(be, &r, &g), 0);
	ck_assert_int_eq(dl_backend_break_lock(be, "f"), 0);
	ck_assert_int_eq(dl_backend_lock(be, &r, &g), 0);
	ck_assert_int_eq(dl_backend_release_owner(be, "f", DL_SPACE_POSIX, 7,
						  DL_TOKEN_ALL),
			 0);
	ck_assert_int_eq(dl_backend_version(be, "f", &v), 0);
	ck_assert_uint_eq(v.version, 1);
	dl_backend_close(be);
}
END_TEST

#define BUMPERS 4
#define BUMPS	2000

static void *bumper(void *arg)
{
	struct dl_version v;

	for (int i = 0; i < BUMPS; i++)
		if (dl_backend_bump(arg, "shared", &v) != 0)
			return (void *)1;
	return NULL;
}

START_TEST(test_no_lost_bump)
{
	struct dl_backend *be = open_local();
	pthread_t t[BUMPERS];
	struct dl_version v;
	void *ret;

	for (int i = 0; i < BUMPERS; i++)
		ck_assert_int_eq(pthread_create(&t[i], NULL, bumper, be), 0);
	for (int i = 0; i < BUMPERS; i++) {
		ck_assert_int_eq(pthread_join(t[i], &ret), 0);
		ck_assert_ptr_null(ret);
	}
	ck_assert_int_eq(dl_backend_version(be, "shared", &v), 0);
	ck_assert_uint_eq(v.version, BUMPERS * BUMPS);
	dl_backend_close(be);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("local_versions");
	TCase *tc = tcase_create("versions");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_zero_then_one_per_bump);
	tcase_add_test(tc, test_locks_and_break_keep_it);
	tcase_add_test(tc, test_no_lost_bump);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

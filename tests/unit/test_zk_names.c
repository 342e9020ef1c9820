/*
 * test_zk_names.c - unit tests of backend/zk/names.c (resource name ->
 * znode component, SHA-256) and of the zk:// URI check.
 *
 * The encoding must be valid for ZooKeeper (no '/', NUL, "." or ".."
 * alone, bounded length) and collision-free: checked on a table, by a
 * randomized round trip, and against known SHA-256 vectors.
 */
#include "backend/backend.h"
#include "backend/zk/names.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void encode(const char *name, size_t len, char *out, bool *hashed)
{
	*hashed = zk_name_encode(name, len, out);
}

/* every encoding is a valid, bounded znode component */
static void check_valid(const char *enc)
{
	size_t l = strlen(enc);

	ck_assert_uint_gt(l, 0);
	ck_assert_uint_le(l, ZK_NAME_MAX);
	ck_assert_str_ne(enc, ".");
	ck_assert_str_ne(enc, "..");
	for (size_t i = 0; i < l; i++) {
		unsigned char c = (unsigned char)enc[i];

		ck_assert_msg(c > 0x20 && c < 0x7f && c != '/',
			      "bad byte 0x%02x in '%s'", c, enc);
	}
}

START_TEST(test_table)
{
	static const struct {
		const char *name;
		const char *enc;
	} cases[] = {
		{ "plain.txt", "plain.txt" },
		{ "a-b_c.D9", "a-b_c.D9" },
		{ "dir/file", "dir%2Ffile" },
		{ "a b", "a%20b" },
		{ "100%", "100%25" },
		{ "%25", "%2525" },
		{ ".", "%2E" },
		{ "..", "%2E%2E" },
		{ "...", "..." },
		{ ".hidden", ".hidden" },
		{ "h-abc", "%68-abc" },
		{ "hh-abc", "hh-abc" },
		{ "", "%" },
		{ "caf\xc3\xa9", "caf%C3%A9" },
		{ "new\nline", "new%0Aline" },
		{ "zookeeper", "zookeeper" },
	};
	char out[ZK_NAME_BUF], back[512];
	bool hashed;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = strlen(cases[i].name);

		encode(cases[i].name, len, out, &hashed);
		ck_assert(!hashed);
		ck_assert_str_eq(out, cases[i].enc);
		check_valid(out);
		ck_assert_int_eq(zk_name_decode(out, back, sizeof(back)),
				 (long)len);
		ck_assert_mem_eq(back, cases[i].name, len);
	}
}
END_TEST

START_TEST(test_long_names_hash)
{
	char name[1000], out[ZK_NAME_BUF], out2[ZK_NAME_BUF], back[64];
	bool hashed;

	/* 200 safe bytes still fit, 201 do not */
	memset(name, 'x', sizeof(name));
	encode(name, ZK_NAME_MAX, out, &hashed);
	ck_assert(!hashed);
	ck_assert_uint_eq(strlen(out), ZK_NAME_MAX);
	encode(name, ZK_NAME_MAX + 1, out, &hashed);
	ck_assert(hashed);
	ck_assert_uint_eq(strlen(out), 66);
	ck_assert(strncmp(out, "h-", 2) == 0);
	check_valid(out);
	ck_assert_int_eq(zk_name_decode(out, back, sizeof(back)), -1);
	/* 67 escaped bytes (201 chars) hash too */
	memset(name, '/', 67);
	encode(name, 67, out, &hashed);
	ck_assert(hashed);
	encode(name, 66, out, &hashed);
	ck_assert(!hashed);
	/* different long names, different hashes; same name, same hash */
	memset(name, 'x', sizeof(name));
	encode(name, 500, out, &hashed);
	name[499] = 'y';
	encode(name, 500, out2, &hashed);
	ck_assert_str_ne(out, out2);
	encode(name, 500, out, &hashed);
	ck_assert_str_eq(out, out2);
	/* a plain name that looks like a hash is not one */
	encode(out, strlen(out), out2, &hashed);
	ck_assert(!hashed);
	ck_assert_str_ne(out, out2);
}
END_TEST

/* random byte strings: valid, and decode gives the name back */
START_TEST(test_random_roundtrip)
{
	static const char alphabet[] = "aZ09._-%/ .\n\x01\xff"
				       "h";
	char name[300], out[ZK_NAME_BUF], back[400];
	bool hashed;

	srand(4242);
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = (size_t)(rand() % 120);

		for (size_t i = 0; i < len; i++)
			name[i] = rand() % 3 ? alphabet[rand() %
							(sizeof(alphabet) - 1)]
					     : (char)(rand() % 256);
		encode(name, len, out, &hashed);
		check_valid(out);
		if (hashed) {
			ck_assert(strncmp(out, "h-", 2) == 0);
			continue;
		}
		ck_assert(strncmp(out, "h-", 2) != 0);
		ck_assert_int_eq(zk_name_decode(out, back, sizeof(back)),
				 (long)len);
		ck_assert_mem_eq(back, name, len);
	}
}
END_TEST

START_TEST(test_sha256_vectors)
{
	static const struct {
		const char *in;
		const char *hex;
	} v[] = {
		{ "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b"
		      "7852b855" },
		{ "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410f"
			 "f61f20015ad" },
		{ "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
		  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db"
		  "06c1" },
	};
	struct zk_sha256 c;
	uint8_t d[32];
	char hex[65];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		zk_sha256_init(&c);
		zk_sha256_update(&c, v[i].in, strlen(v[i].in));
		zk_sha256_final(&c, d);
		zk_hex(d, 32, hex);
		ck_assert_str_eq(hex, v[i].hex);
	}
	/* a million 'a', fed in odd pieces */
	{
		char buf[1000];

		memset(buf, 'a', sizeof(buf));
		zk_sha256_init(&c);
		for (int i = 0; i < 1000; i++) {
			zk_sha256_update(&c, buf, 333);
			zk_sha256_update(&c, buf, 667);
		}
		zk_sha256_final(&c, d);
		zk_hex(d, 32, hex);
		ck_assert_str_eq(hex, "cdc76e5c9914fb9281a1c7e284d73e67"
				      "f1809a48a497200e046d39ccc7112cd0");
	}
}
END_TEST

START_TEST(test_hex)
{
	char hex[16];
	unsigned char back[8];

	zk_hex("\x00\xff\x10", 3, hex);
	ck_assert_str_eq(hex, "00ff10");
	ck_assert_int_eq(zk_unhex(hex, 6, back, sizeof(back)), 3);
	ck_assert_mem_eq(back, "\x00\xff\x10", 3);
	ck_assert_int_eq(zk_unhex("0", 1, back, sizeof(back)), -1);
	ck_assert_int_eq(zk_unhex("zz", 2, back, sizeof(back)), -1);
	ck_assert_int_eq(zk_unhex("0011223344556677", 16, back, 7), -1);
}
END_TEST

START_TEST(test_uri)
{
	static const char *good[] = {
		"zk://127.0.0.1:2181/dlock",
		"zk://a:1,b:2,c:65535/x/y",
		"zk://zk1.example:2181/dlock?session_timeout_ms=4000",
		"zk://h:1/d?lock_delay_ms=0",
		"zk://h:1/d?session_timeout_ms=4000&lock_delay_ms=1500",
		"zk://h:1/d?lock_delay_ms=600000&session_timeout_ms=100",
	};
	static const char *bad[] = {
		"zk:127.0.0.1:2181/dlock",
		"zk://127.0.0.1:2181",
		"zk://127.0.0.1:2181/",
		"zk:///dlock",
		"zk://127.0.0.1/dlock",
		"zk://127.0.0.1:0/dlock",
		"zk://127.0.0.1:70000/dlock",
		"zk://:2181/dlock",
		"zk://a:1,/dlock",
		"zk://user:pw@127.0.0.1:2181/dlock",
		"zk://127.0.0.1:2181/dlock/",
		"zk://127.0.0.1:2181/a//b",
		"zk://127.0.0.1:2181/a/../b",
		"zk://127.0.0.1:2181/a b",
		"zk://127.0.0.1:2181/dlock?session_timeout_ms=abc",
		"zk://127.0.0.1:2181/dlock?session_timeout_ms=5",
		"zk://127.0.0.1:2181/dlock?timeout=5000",
		"zk://h:1/d?lock_delay_ms=-1",
		"zk://h:1/d?lock_delay_ms=600001",
		"zk://h:1/d?lock_delay_ms=",
		"zk://h:1/d?lock_delay_ms=10x",
		"zk://h:1/d?session_timeout_ms=4000&",
		"zk://h:1/d?session_timeout_ms=4000&&lock_delay_ms=1",
		"zk://h:1/d?lock_delay_ms=99999999999999999999",
	};
	char err[256];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(dl_backend_check_uri(good[i], err, sizeof(err)) ==
				      0,
			      "%s: %s", good[i], err);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		ck_assert_msg(dl_backend_check_uri(bad[i], err, sizeof(err)) ==
				      -EINVAL,
			      "accepted %s", bad[i]);
		ck_assert_msg(err[0] && !strchr(err, '\n'), "%s: no reason",
			      bad[i]);
		/* a reason never quotes a password */
		ck_assert_ptr_null(strstr(err, "pw@"));
	}
}
END_TEST

static Suite *zk_names_suite(void)
{
	Suite *s = suite_create("zk_names");
	TCase *tc = tcase_create("core");

	/* 20000 random round trips take seconds under the sanitizers */
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_table);
	tcase_add_test(tc, test_long_names_hash);
	tcase_add_test(tc, test_random_roundtrip);
	tcase_add_test(tc, test_sha256_vectors);
	tcase_add_test(tc, test_hex);
	tcase_add_test(tc, test_uri);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(zk_names_suite());
	int failed;

	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

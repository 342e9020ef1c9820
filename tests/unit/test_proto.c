/*
 * test_proto.c - the control socket's frames: every type round-trips,
 * every malformed frame of a table is refused with the right error, and a
 * fuzz loop (random bytes, mutated and truncated valid frames, oversized
 * and huge-length frames) never makes the decoder read out of bounds or
 * accept a frame it cannot re-encode identically.  Run it under ASan
 * (contrib/test.sh does) to catch the out-of-bounds reads.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fs/ctl/proto.h"

static unsigned char buf[DL_PROTO_MAX_FRAME + 64];

static int enc(const struct dl_proto_msg *m)
{
	int n = proto_encode(m, buf, sizeof(buf));

	ck_assert_int_gt(n, 0);
	return n;
}

START_TEST(test_roundtrip_lock)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_LOCK, .id = 42 } }, d;
	int n;

	m.kind = DLK_OFD;
	m.ltype = DLP_WRLCK;
	m.flags = DLP_F_FD | DLP_F_WAIT;
	m.l_start = -5;
	m.l_len = INT64_MIN;
	proto_str(&m, 0, "app");
	proto_str(&m, 1, "/srv/app");
	n = enc(&m);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);
	ck_assert_uint_eq(d.hdr.id, 42);
	ck_assert_uint_eq(d.hdr.version, DL_PROTO_VERSION);
	ck_assert_uint_eq(d.kind, DLK_OFD);
	ck_assert_uint_eq(d.ltype, DLP_WRLCK);
	ck_assert_uint_eq(d.flags, DLP_F_FD | DLP_F_WAIT);
	ck_assert(d.l_start == -5 && d.l_len == INT64_MIN);
	ck_assert_uint_eq(d.nstr, 2);
	ck_assert(proto_streq(&d.str[0], "app"));
	ck_assert(proto_streq(&d.str[1], "/srv/app"));
}
END_TEST

START_TEST(test_roundtrip_reply_item)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_ITEM, .id = 7 } }, d;
	int n;

	m.space = 1;
	m.ltype = DLP_RDLCK;
	m.waiting = 1;
	m.start = 10;
	m.end = UINT64_MAX;
	m.owner = 0xd10c000000000001ULL;
	m.pid = 1234;
	m.token = 99;
	m.since_ms = 1700000000000LL;
	proto_str(&m, 0, "app/x.lock");
	proto_str(&m, 1, "hostA");
	n = enc(&m);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);
	ck_assert(d.space == 1 && d.ltype == DLP_RDLCK && d.waiting == 1);
	ck_assert(d.start == 10 && d.end == UINT64_MAX);
	ck_assert(d.owner == m.owner && d.pid == 1234 && d.token == 99);
	ck_assert(d.since_ms == m.since_ms);
	ck_assert(proto_streq(&d.str[1], "hostA"));

	memset(&m, 0, sizeof(m));
	m.hdr.type = DLP_REPLY;
	m.err = -EAGAIN;
	proto_str(&m, 0, "why");
	n = enc(&m);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);
	ck_assert_int_eq(d.err, -EAGAIN);
}
END_TEST

START_TEST(test_roundtrip_small)
{
	struct dl_proto_msg m = { 0 }, d;
	int n;

	m.hdr.type = DLP_CLOSED;
	m.dev = UINT64_MAX;
	m.ino = 12345;
	n = enc(&m);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);
	ck_assert(d.dev == UINT64_MAX && d.ino == 12345);

	memset(&m, 0, sizeof(m));
	m.hdr.type = DLP_CANCEL;
	m.target_id = 77;
	n = enc(&m);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);
	ck_assert_uint_eq(d.target_id, 77);

	memset(&m, 0, sizeof(m));
	m.hdr.type = DLP_STATUS;
	n = enc(&m);
	ck_assert_int_eq(n, DL_PROTO_HDR_LEN);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);

	memset(&m, 0, sizeof(m));
	m.hdr.type = DLP_LIST;
	n = enc(&m); /* every resource */
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);
	ck_assert_uint_eq(d.nstr, 0);
}
END_TEST

/* a valid named LOCK frame to mutate */
static int valid_frame(void)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_LOCK, .id = 1 } };

	m.kind = DLK_NAMED;
	m.ltype = DLP_WRLCK;
	proto_str(&m, 0, "job");
	return enc(&m);
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

START_TEST(test_malformed)
{
	struct dl_proto_msg d;
	int n = valid_frame();

	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), 0);
	/* short, empty */
	ck_assert_int_eq(proto_decode(buf, 0, &d), -EBADMSG);
	ck_assert_int_eq(proto_decode(buf, DL_PROTO_HDR_LEN - 1, &d), -EBADMSG);
	/* truncated: len says more than there is */
	ck_assert_int_eq(proto_decode(buf, (size_t)n - 1, &d), -EBADMSG);
	/* trailing byte */
	buf[n] = 0;
	ck_assert_int_eq(proto_decode(buf, (size_t)n + 1, &d), -EBADMSG);
	/* huge length field */
	put32(buf + 8, 0xffffffffu);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	/* oversized frame */
	ck_assert_int_eq(proto_decode(buf, DL_PROTO_MAX_FRAME + 1, &d),
			 -EBADMSG);
	/* magic */
	buf[0] ^= 1;
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	/* version: its own error, id kept for the reply */
	put16(buf + 4, DL_PROTO_VERSION + 1);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EPROTONOSUPPORT);
	ck_assert_uint_eq(d.hdr.id, 1);
	n = valid_frame();
	/* unknown type, a gap in the table */
	put16(buf + 6, 60);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	put16(buf + 6, 0xffff);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	/* bad kind, type, flags, padding */
	buf[16] = 9;
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	buf[17] = 3;
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	buf[17] = DLP_UNLCK; /* LOCK of nothing */
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	buf[18] = 0x80;
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	buf[18] = DLP_F_FD; /* a named lock with a descriptor */
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	buf[19] = 1;
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	/* string length past the end; a NUL inside a string */
	put16(buf + 16 + 24, 200);
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
	n = valid_frame();
	buf[16 + 24 + 2] = '\0';
	ck_assert_int_eq(proto_decode(buf, (size_t)n, &d), -EBADMSG);
}
END_TEST

START_TEST(test_encode_limits)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_LOCK } };
	char *big = malloc(DL_PROTO_MAX_STR + 2);

	ck_assert_ptr_nonnull(big);
	memset(big, 'a', DL_PROTO_MAX_STR + 1);
	big[DL_PROTO_MAX_STR + 1] = '\0';
	m.kind = DLK_NAMED;
	m.ltype = DLP_WRLCK;
	proto_str(&m, 0, big);
	ck_assert_int_eq(proto_encode(&m, buf, sizeof(buf)), -EMSGSIZE);
	big[DL_PROTO_MAX_STR] = '\0';
	proto_str(&m, 0, big);
	ck_assert_int_gt(proto_encode(&m, buf, sizeof(buf)), 0);
	ck_assert_int_eq(proto_encode(&m, buf, 40), -EMSGSIZE);
	m.hdr.type = 60;
	ck_assert_int_eq(proto_encode(&m, buf, sizeof(buf)), -EINVAL);
	free(big);
}
END_TEST

/*
 * Fuzz: whatever the input, decode returns 0 or a negative errno, and a
 * frame it accepts re-encodes to the very same bytes.  Inputs are copied
 * into exactly-sized heap blocks so ASan sees any read past the end.
 */
START_TEST(test_fuzz)
{
	unsigned seed = 12345;
	struct dl_proto_msg d;

	for (int i = 0; i < 200000; i++) {
		size_t len;
		unsigned char *p;
		int n, mode = rand_r(&seed) % 4, ret;

		if (mode == 0) { /* random bytes */
			len = (size_t)(rand_r(&seed) % 128);
			p = malloc(len ? len : 1);
			for (size_t k = 0; k < len; k++)
				p[k] = (unsigned char)rand_r(&seed);
		} else { /* a valid frame, mutated and/or truncated */
			n = valid_frame();
			if (mode == 3) /* oversized */
				n = DL_PROTO_MAX_FRAME + 1 + rand_r(&seed) % 16;
			len = (size_t)n;
			if (mode == 2 && len)
				len = (size_t)(rand_r(&seed) % (int)len);
			p = malloc(len ? len : 1);
			memcpy(p, buf, len);
			for (int k = rand_r(&seed) % 4; k > 0 && len; k--)
				p[(size_t)rand_r(&seed) % len] =
					(unsigned char)rand_r(&seed);
			if (len > 12 && rand_r(&seed) % 8 == 0)
				put32(p + 8, (uint32_t)rand_r(&seed) << 8);
		}
		ret = proto_decode(p, len, &d);
		ck_assert(ret == 0 || ret == -EBADMSG ||
			  ret == -EPROTONOSUPPORT);
		if (ret == 0) {
			n = proto_encode(&d, buf, sizeof(buf));
			ck_assert_int_eq(n, (int)len);
			ck_assert(memcmp(buf, p, len) == 0);
		}
		free(p);
	}
}
END_TEST

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_roundtrip_lock);
	tcase_add_test(tc, test_roundtrip_reply_item);
	tcase_add_test(tc, test_roundtrip_small);
	tcase_add_test(tc, test_malformed);
	tcase_add_test(tc, test_encode_limits);
	tcase_add_test(tc, test_fuzz);
	tcase_set_timeout(tc, 60);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_suite());
	int failed;

	srunner_set_fork_status(sr, CK_FORK);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

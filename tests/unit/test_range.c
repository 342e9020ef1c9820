/*
 * test_range.c - unit tests of backend/range.c.
 *
 * Table-driven cases for the conversions, the conflict rule and the
 * merge/split/convert edge cases, then a randomized comparison against a
 * brute-force model: one array per owner over a 64-byte universe holding
 * none/read/write (plus the fencing token that granted each byte).  The
 * universe is placed at offset 0 (byte 63 standing for "63 to EOF") and at
 * UINT64_MAX - 63 (byte 63 is UINT64_MAX itself), so both overflow edges
 * are exercised.  The seed is printed on failure; RANGE_SEED overrides it.
 */
#include "backend/range.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U64 UINT64_MAX

/*
 * ck_assert*() reports a passing check to the parent through a pipe in
 * fork mode; the model loops check millions of things, so they only call
 * into Check on failure.
 */
#define REQUIRE(cond, ...)                         \
	do {                                       \
		if (!(cond))                       \
			ck_abort_msg(__VA_ARGS__); \
	} while (0)

/* ---------------------------------------------------------------- helpers */

static struct dl_range_lock mk(uint64_t owner, enum dl_lock_type type,
			       uint64_t start, uint64_t end, uint64_t token)
{
	struct dl_range_lock l = {
		.start = start,
		.end = end,
		.owner = owner,
		.token = token,
		.since_ms = (int64_t)token * 10,
		.pid = (uint32_t)(1000 + token),
		.type = type,
	};
	return l;
}

static void apply_ok(struct dl_range_set *set, uint64_t owner,
		     enum dl_lock_type type, uint64_t start, uint64_t end,
		     uint64_t token)
{
	struct dl_range_lock req = mk(owner, type, start, end, token);

	ck_assert_int_eq(range_set_apply(set, &req), 0);
}

struct piece {
	uint64_t owner, start, end, token;
	enum dl_lock_type type;
};

/* The set must be exactly @want (in order), metadata following the token. */
static void expect(const struct dl_range_set *set, const struct piece *want,
		   size_t n)
{
	ck_assert_uint_eq(set->n, n);
	for (size_t i = 0; i < n; i++) {
		const struct dl_range_lock *l = &set->v[i];

		ck_assert_msg(l->owner == want[i].owner &&
				      l->start == want[i].start &&
				      l->end == want[i].end &&
				      l->type == want[i].type &&
				      l->token == want[i].token,
			      "piece %zu: got owner %" PRIu64 " [%" PRIu64
			      ", %" PRIu64 "] type %d token %" PRIu64,
			      i, l->owner, l->start, l->end, (int)l->type,
			      l->token);
		ck_assert_uint_eq(l->pid, 1000 + l->token);
		ck_assert_int_eq(l->since_ms, (int64_t)l->token * 10);
	}
}

/* ------------------------------------------------------ flock conversion */

static const struct {
	int64_t l_start, l_len;
	int ret;
	uint64_t start, end;
} from_cases[] = {
	{ 0, 0, 0, 0, U64 },
	{ 5, 0, 0, 5, U64 },
	{ 10, 5, 0, 10, 14 },
	{ 0, 1, 0, 0, 0 },
	{ 10, -5, 0, 5, 9 },
	{ 10, -10, 0, 0, 9 },
	{ 1, -1, 0, 0, 0 },
	{ 10, -11, -EINVAL, 0, 0 },
	{ 0, -1, -EINVAL, 0, 0 },
	{ -1, 5, -EINVAL, 0, 0 },
	{ -1, 0, -EINVAL, 0, 0 },
	{ INT64_MIN, 1, -EINVAL, 0, 0 },
	{ 0, INT64_MAX, 0, 0, INT64_MAX - 1 },
	{ 1, INT64_MAX, 0, 1, U64 }, /* reaches OFFSET_MAX: to EOF */
	{ 2, INT64_MAX, -EINVAL, 0, 0 },
	{ INT64_MAX, 1, 0, INT64_MAX, U64 },
	{ INT64_MAX, 2, -EINVAL, 0, 0 },
	{ INT64_MAX, 0, 0, INT64_MAX, U64 },
	{ INT64_MAX - 1, 1, 0, INT64_MAX - 1, INT64_MAX - 1 },
	{ INT64_MAX, -INT64_MAX, 0, 0, INT64_MAX - 1 },
	{ INT64_MAX, INT64_MIN, -EINVAL, 0, 0 },
	{ 0, INT64_MIN, -EINVAL, 0, 0 },
	{ INT64_MAX, -1, 0, INT64_MAX - 1, INT64_MAX - 1 },
};

START_TEST(test_from_flock)
{
	uint64_t s = 77, e = 77;
	int ret = range_from_flock(from_cases[_i].l_start, from_cases[_i].l_len,
				   &s, &e);

	ck_assert_msg(ret == from_cases[_i].ret, "case %d: ret %d", _i, ret);
	if (ret == 0) {
		ck_assert_uint_eq(s, from_cases[_i].start);
		ck_assert_uint_eq(e, from_cases[_i].end);
	} else {
		ck_assert_uint_eq(s, 77); /* untouched on failure */
		ck_assert_uint_eq(e, 77);
	}
}
END_TEST

static const struct {
	uint64_t start, end;
	int64_t l_start, l_len;
} to_cases[] = {
	{ 0, U64, 0, 0 },
	{ 10, 14, 10, 5 },
	{ 0, 0, 0, 1 },
	{ 5, INT64_MAX, 5, 0 },
	{ 0, INT64_MAX - 1, 0, INT64_MAX },
	{ INT64_MAX - 1, INT64_MAX - 1, INT64_MAX - 1, 1 },
	{ U64, U64, INT64_MAX, 0 },
	{ (uint64_t)INT64_MAX + 5, U64, INT64_MAX, 0 },
};

START_TEST(test_to_flock)
{
	int64_t ls = -7, ll = -7;

	range_to_flock(to_cases[_i].start, to_cases[_i].end, &ls, &ll);
	ck_assert_int_eq(ls, to_cases[_i].l_start);
	ck_assert_int_eq(ll, to_cases[_i].l_len);
}
END_TEST

/* Every valid (l_start, l_len) survives from_flock -> to_flock. */
START_TEST(test_flock_roundtrip)
{
	static const int64_t starts[] = {
		0, 1, 7, 4096, INT64_MAX - 2, INT64_MAX - 1, INT64_MAX
	};
	static const int64_t lens[] = { 0,	   1,	       2,
					3,	   100,	       INT64_MAX - 1,
					INT64_MAX, -1,	       -2,
					-4096,	   -INT64_MAX, INT64_MIN };

	for (size_t i = 0; i < sizeof(starts) / sizeof(starts[0]); i++) {
		for (size_t j = 0; j < sizeof(lens) / sizeof(lens[0]); j++) {
			uint64_t s, e;
			int64_t ls, ll;

			if (range_from_flock(starts[i], lens[j], &s, &e) < 0)
				continue;
			ck_assert_uint_le(s, e);
			range_to_flock(s, e, &ls, &ll);
			ck_assert_uint_eq((uint64_t)ls, s);
			if (e == U64)
				ck_assert_int_eq(ll, 0);
			else
				ck_assert_uint_eq((uint64_t)ll, e - s + 1);
		}
	}
}
END_TEST

/* ---------------------------------------------------------- conflict rule */

static const struct {
	enum dl_lock_type held, req;
	uint64_t hs, he, rs, re;
	uint64_t ho, ro;
	bool conflict;
} conflict_cases[] = {
	{ DL_RDLCK, DL_RDLCK, 0, 9, 5, 15, 1, 2, false },
	{ DL_RDLCK, DL_WRLCK, 0, 9, 5, 15, 1, 2, true },
	{ DL_WRLCK, DL_RDLCK, 0, 9, 5, 15, 1, 2, true },
	{ DL_WRLCK, DL_WRLCK, 0, 9, 5, 15, 1, 2, true },
	{ DL_WRLCK, DL_WRLCK, 0, 9, 5, 15, 1, 1, false },  /* same owner */
	{ DL_WRLCK, DL_UNLCK, 0, 9, 5, 15, 1, 2, false },  /* unlock */
	{ DL_WRLCK, DL_WRLCK, 0, 9, 10, 15, 1, 2, false }, /* adjacent */
	{ DL_WRLCK, DL_WRLCK, 10, 15, 0, 9, 1, 2, false },
	{ DL_WRLCK, DL_WRLCK, 0, 9, 9, 9, 1, 2, true }, /* one byte */
	{ DL_WRLCK, DL_WRLCK, 9, 9, 0, 9, 1, 2, true },
	{ DL_WRLCK, DL_RDLCK, 0, U64, U64, U64, 1, 2, true },
	{ DL_WRLCK, DL_RDLCK, U64, U64, 0, U64 - 1, 1, 2, false },
	{ DL_WRLCK, DL_RDLCK, 0, 0, 0, U64, U64, 0, true },
	{ DL_RDLCK, DL_WRLCK, 5, U64, 0, 4, 1, 2, false },
};

START_TEST(test_conflicts)
{
	struct dl_range_lock h =
		mk(conflict_cases[_i].ho, conflict_cases[_i].held,
		   conflict_cases[_i].hs, conflict_cases[_i].he, 1);
	struct dl_range_lock r =
		mk(conflict_cases[_i].ro, conflict_cases[_i].req,
		   conflict_cases[_i].rs, conflict_cases[_i].re, 2);

	ck_assert_msg(range_conflicts(&h, &r) == conflict_cases[_i].conflict,
		      "case %d", _i);
}
END_TEST

START_TEST(test_overlap)
{
	ck_assert(range_overlap(0, U64, U64, U64));
	ck_assert(range_overlap(0, 0, 0, U64));
	ck_assert(!range_overlap(0, 9, 10, U64));
	ck_assert(!range_overlap(U64, U64, 0, U64 - 1));
	ck_assert(range_overlap(5, 5, 5, 5));
}
END_TEST

/* Lowest start wins; among equal starts the first in set order. */
START_TEST(test_find_conflict_order)
{
	struct dl_range_set set = { 0 };
	struct dl_range_lock req = mk(4, DL_WRLCK, 0, 100, 9);
	const struct dl_range_lock *c;

	apply_ok(&set, 1, DL_WRLCK, 50, 60, 1);
	apply_ok(&set, 3, DL_RDLCK, 10, 15, 2);
	apply_ok(&set, 2, DL_WRLCK, 10, 20, 3);
	apply_ok(&set, 2, DL_RDLCK, 0, 5, 4);
	c = range_set_find_conflict(&set, &req);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->start, 0);
	ck_assert_uint_eq(c->owner, 2);

	req.start = 6;
	c = range_set_find_conflict(&set, &req);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->start, 10);
	ck_assert_uint_eq(c->owner, 2); /* owner 2 sorts before owner 3 */

	req.type = DL_RDLCK; /* only write locks block a read */
	c = range_set_find_conflict(&set, &req);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->owner, 2);
	ck_assert_uint_eq(c->token, 3);

	req.start = 21;
	c = range_set_find_conflict(&set, &req);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->owner, 1);

	req.type = DL_UNLCK;
	ck_assert_ptr_null(range_set_find_conflict(&set, &req));

	req = mk(2, DL_RDLCK, 0, U64, 9); /* own locks never block */
	c = range_set_find_conflict(&set, &req);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->owner, 1);
	req.type = DL_WRLCK;
	c = range_set_find_conflict(&set, &req);
	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->owner, 3);
	req = mk(2, DL_WRLCK, 61, U64, 9);
	ck_assert_ptr_null(range_set_find_conflict(&set, &req));
	range_set_free(&set);
}
END_TEST

/* ------------------------------------------------ merge / split / convert */

START_TEST(test_split_middle)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_RDLCK, 0, 99, 1);
	apply_ok(&set, 1, DL_UNLCK, 40, 59, 2);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 39, 1, DL_RDLCK },
				       { 1, 60, 99, 1, DL_RDLCK } },
	       2);
	range_set_free(&set);
}
END_TEST

START_TEST(test_convert_middle)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_RDLCK, 0, 99, 1);
	apply_ok(&set, 1, DL_WRLCK, 40, 59, 2);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 39, 1, DL_RDLCK },
				       { 1, 40, 59, 2, DL_WRLCK },
				       { 1, 60, 99, 1, DL_RDLCK } },
	       3);
	/* and back: the three pieces merge into one read lock */
	apply_ok(&set, 1, DL_RDLCK, 40, 59, 3);
	expect(&set, (const struct piece[]){ { 1, 0, 99, 3, DL_RDLCK } }, 1);
	range_set_free(&set);
}
END_TEST

START_TEST(test_convert_whole_and_edges)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_RDLCK, 10, 19, 1);
	apply_ok(&set, 1, DL_WRLCK, 10, 19, 2);
	expect(&set, (const struct piece[]){ { 1, 10, 19, 2, DL_WRLCK } }, 1);
	apply_ok(&set, 1, DL_RDLCK, 10, 12, 3); /* left edge */
	expect(&set,
	       (const struct piece[]){ { 1, 10, 12, 3, DL_RDLCK },
				       { 1, 13, 19, 2, DL_WRLCK } },
	       2);
	apply_ok(&set, 1, DL_RDLCK, 17, 25, 4); /* right edge, sticking out */
	expect(&set,
	       (const struct piece[]){ { 1, 10, 12, 3, DL_RDLCK },
				       { 1, 13, 16, 2, DL_WRLCK },
				       { 1, 17, 25, 4, DL_RDLCK } },
	       3);
	apply_ok(&set, 1, DL_RDLCK, 13, 16, 5); /* fill the hole */
	expect(&set, (const struct piece[]){ { 1, 10, 25, 5, DL_RDLCK } }, 1);
	range_set_free(&set);
}
END_TEST

START_TEST(test_adjacent_merge)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_RDLCK, 10, 19, 1);
	apply_ok(&set, 1, DL_RDLCK, 0, 9, 2);
	expect(&set, (const struct piece[]){ { 1, 0, 19, 2, DL_RDLCK } }, 1);
	apply_ok(&set, 1, DL_RDLCK, 20, 29, 3);
	expect(&set, (const struct piece[]){ { 1, 0, 29, 3, DL_RDLCK } }, 1);
	/* a different type next door stays apart */
	apply_ok(&set, 1, DL_WRLCK, 30, 39, 4);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 29, 3, DL_RDLCK },
				       { 1, 30, 39, 4, DL_WRLCK } },
	       2);
	/* a lock inside an equal one still takes the new grant's token */
	apply_ok(&set, 1, DL_RDLCK, 5, 6, 5);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 29, 5, DL_RDLCK },
				       { 1, 30, 39, 4, DL_WRLCK } },
	       2);
	/* bridging a gap joins both sides */
	apply_ok(&set, 1, DL_WRLCK, 50, 59, 6);
	apply_ok(&set, 1, DL_WRLCK, 40, 49, 7);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 29, 5, DL_RDLCK },
				       { 1, 30, 59, 7, DL_WRLCK } },
	       2);
	range_set_free(&set);
}
END_TEST

START_TEST(test_span_mixed)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_RDLCK, 0, 9, 1);
	apply_ok(&set, 1, DL_WRLCK, 20, 29, 2);
	apply_ok(&set, 1, DL_RDLCK, 40, 49, 3);
	apply_ok(&set, 1, DL_WRLCK, 5, 44, 4);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 4, 1, DL_RDLCK },
				       { 1, 5, 44, 4, DL_WRLCK },
				       { 1, 45, 49, 3, DL_RDLCK } },
	       3);
	apply_ok(&set, 1, DL_RDLCK, 3, 46, 5);
	expect(&set, (const struct piece[]){ { 1, 0, 49, 5, DL_RDLCK } }, 1);
	apply_ok(&set, 1, DL_UNLCK, 0, U64, 6);
	ck_assert_uint_eq(set.n, 0);
	range_set_free(&set);
}
END_TEST

START_TEST(test_unlock_nothing)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_UNLCK, 0, U64, 1); /* empty set */
	ck_assert_uint_eq(set.n, 0);
	apply_ok(&set, 1, DL_WRLCK, 10, 19, 2);
	apply_ok(&set, 2, DL_WRLCK, 30, 39, 3);
	apply_ok(&set, 1, DL_UNLCK, 20, 29, 4); /* in the gap, adjacent */
	apply_ok(&set, 1, DL_UNLCK, 0, 9, 4);
	apply_ok(&set, 3, DL_UNLCK, 0, U64, 4); /* an owner holding nothing */
	apply_ok(&set, 2, DL_UNLCK, 10, 19, 4); /* another owner's bytes */
	expect(&set,
	       (const struct piece[]){ { 1, 10, 19, 2, DL_WRLCK },
				       { 2, 30, 39, 3, DL_WRLCK } },
	       2);
	range_set_free(&set);
}
END_TEST

START_TEST(test_start_zero)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_RDLCK, 5, U64, 1);
	apply_ok(&set, 1, DL_RDLCK, 0, 4, 2);
	expect(&set, (const struct piece[]){ { 1, 0, U64, 2, DL_RDLCK } }, 1);
	apply_ok(&set, 1, DL_UNLCK, 0, 0, 3);
	expect(&set, (const struct piece[]){ { 1, 1, U64, 2, DL_RDLCK } }, 1);
	apply_ok(&set, 1, DL_WRLCK, 0, 0, 4);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 0, 4, DL_WRLCK },
				       { 1, 1, U64, 2, DL_RDLCK } },
	       2);
	apply_ok(&set, 1, DL_WRLCK, 0, 1, 5);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 1, 5, DL_WRLCK },
				       { 1, 2, U64, 2, DL_RDLCK } },
	       2);
	range_set_free(&set);
}
END_TEST

START_TEST(test_end_max)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_WRLCK, 0, U64, 1);
	apply_ok(&set, 1, DL_UNLCK, U64, U64, 2);
	expect(&set, (const struct piece[]){ { 1, 0, U64 - 1, 1, DL_WRLCK } },
	       1);
	apply_ok(&set, 1, DL_WRLCK, U64, U64, 3);
	expect(&set, (const struct piece[]){ { 1, 0, U64, 3, DL_WRLCK } }, 1);
	apply_ok(&set, 1, DL_RDLCK, U64 - 1, U64 - 1, 4);
	expect(&set,
	       (const struct piece[]){ { 1, 0, U64 - 2, 3, DL_WRLCK },
				       { 1, U64 - 1, U64 - 1, 4, DL_RDLCK },
				       { 1, U64, U64, 3, DL_WRLCK } },
	       3);
	apply_ok(&set, 1, DL_UNLCK, 1, U64 - 1, 5);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 0, 3, DL_WRLCK },
				       { 1, U64, U64, 3, DL_WRLCK } },
	       2);
	apply_ok(&set, 1, DL_WRLCK, 1, U64 - 1, 6);
	expect(&set, (const struct piece[]){ { 1, 0, U64, 6, DL_WRLCK } }, 1);
	range_set_free(&set);
}
END_TEST

START_TEST(test_einval)
{
	struct dl_range_set set = { 0 };
	struct dl_range_lock req = mk(1, DL_WRLCK, 10, 9, 1);

	apply_ok(&set, 1, DL_RDLCK, 0, 99, 1);
	ck_assert_int_eq(range_set_apply(&set, &req), -EINVAL);
	req = mk(1, DL_UNLCK, U64, 0, 2);
	ck_assert_int_eq(range_set_apply(&set, &req), -EINVAL);
	req = mk(1, (enum dl_lock_type)7, 0, 9, 3);
	ck_assert_int_eq(range_set_apply(&set, &req), -EINVAL);
	req = mk(1, (enum dl_lock_type) - 1, 0, 9, 3);
	ck_assert_int_eq(range_set_apply(&set, &req), -EINVAL);
	expect(&set, (const struct piece[]){ { 1, 0, 99, 1, DL_RDLCK } }, 1);
	range_set_free(&set);
}
END_TEST

START_TEST(test_owners_sorted_and_removed)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, U64, DL_RDLCK, 0, 9, 1);
	apply_ok(&set, 5, DL_RDLCK, 20, 29, 2);
	apply_ok(&set, 0, DL_RDLCK, 0, 9, 3);
	apply_ok(&set, 5, DL_RDLCK, 0, 9, 4);
	apply_ok(&set, 5, DL_WRLCK, 40, U64, 5);
	apply_ok(&set, 1, DL_RDLCK, 5, 6, 6);
	/* apply() ignores other owners: owner 1 overlaps owner 5 freely */
	expect(&set,
	       (const struct piece[]){ { 0, 0, 9, 3, DL_RDLCK },
				       { 1, 5, 6, 6, DL_RDLCK },
				       { 5, 0, 9, 4, DL_RDLCK },
				       { 5, 20, 29, 2, DL_RDLCK },
				       { 5, 40, U64, 5, DL_WRLCK },
				       { U64, 0, 9, 1, DL_RDLCK } },
	       6);
	ck_assert(range_set_owner_has(&set, 5));
	ck_assert(range_set_owner_has(&set, 0));
	ck_assert(range_set_owner_has(&set, U64));
	ck_assert(!range_set_owner_has(&set, 2));
	ck_assert(!range_set_owner_has(&set, U64 - 1));
	ck_assert_uint_eq(range_set_remove_owner(&set, 5, DL_TOKEN_ALL), 3);
	ck_assert_uint_eq(range_set_remove_owner(&set, 5, DL_TOKEN_ALL), 0);
	ck_assert_uint_eq(range_set_remove_owner(&set, 7, DL_TOKEN_ALL), 0);
	ck_assert(!range_set_owner_has(&set, 5));
	expect(&set,
	       (const struct piece[]){ { 0, 0, 9, 3, DL_RDLCK },
				       { 1, 5, 6, 6, DL_RDLCK },
				       { U64, 0, 9, 1, DL_RDLCK } },
	       3);
	ck_assert_uint_eq(range_set_remove_owner(&set, U64, DL_TOKEN_ALL), 1);
	ck_assert_uint_eq(range_set_remove_owner(&set, 0, DL_TOKEN_ALL), 1);
	ck_assert_uint_eq(range_set_remove_owner(&set, 1, DL_TOKEN_ALL), 1);
	ck_assert_uint_eq(set.n, 0);
	range_set_free(&set);
	ck_assert_ptr_null(set.v);
	ck_assert_uint_eq(set.cap, 0);
	range_set_free(&set); /* twice is harmless */
	ck_assert(!range_set_owner_has(&set, 0));
	ck_assert_uint_eq(range_set_remove_owner(&set, 0, DL_TOKEN_ALL), 0);
}
END_TEST

/* A release names the grants it ends: newer grants survive it. */
START_TEST(test_remove_owner_upto_token)
{
	struct dl_range_set set = { 0 };

	apply_ok(&set, 1, DL_WRLCK, 0, 9, 1);
	apply_ok(&set, 1, DL_RDLCK, 20, 29, 2);
	apply_ok(&set, 1, DL_WRLCK, 40, 49, 3);
	apply_ok(&set, 2, DL_WRLCK, 100, 109, 4);
	/* merging into a newer grant carries the piece past the release */
	apply_ok(&set, 1, DL_WRLCK, 10, 15, 5);
	ck_assert_uint_eq(range_set_remove_owner(&set, 1, 3), 2);
	expect(&set,
	       (const struct piece[]){ { 1, 0, 15, 5, DL_WRLCK },
				       { 2, 100, 109, 4, DL_WRLCK } },
	       2);
	ck_assert_uint_eq(range_set_remove_owner(&set, 1, 4), 0);
	ck_assert_uint_eq(range_set_remove_owner(&set, 1, 5), 1);
	ck_assert_uint_eq(range_set_remove_owner(&set, 2, 0), 0);
	ck_assert_uint_eq(set.n, 1);
	range_set_free(&set);
}
END_TEST

/* Pieces left over from a split keep their grant; merged ones take the new. */
START_TEST(test_token_rules)
{
	struct dl_range_set set = { 0 };
	struct dl_range_lock req = mk(1, DL_RDLCK, 0, 9, 1);

	req.pid = 4242;
	req.since_ms = 123456;
	ck_assert_int_eq(range_set_apply(&set, &req), 0);
	ck_assert_uint_eq(set.v[0].pid, 4242);
	ck_assert_int_eq(set.v[0].since_ms, 123456);
	apply_ok(&set, 1, DL_UNLCK, 3, 4, 2);
	ck_assert_uint_eq(set.n, 2);
	for (size_t i = 0; i < 2; i++) {
		ck_assert_uint_eq(set.v[i].token, 1);
		ck_assert_uint_eq(set.v[i].pid, 4242);
		ck_assert_int_eq(set.v[i].since_ms, 123456);
	}
	apply_ok(&set, 1, DL_RDLCK, 4, 4, 3); /* merges with [5, 9] */
	ck_assert_uint_eq(set.n, 2);
	ck_assert_uint_eq(set.v[0].end, 2);
	ck_assert_uint_eq(set.v[0].token, 1);
	ck_assert_uint_eq(set.v[0].pid, 4242);
	ck_assert_int_eq(set.v[0].since_ms, 123456);
	ck_assert_uint_eq(set.v[1].start, 4);
	ck_assert_uint_eq(set.v[1].end, 9);
	ck_assert_uint_eq(set.v[1].token, 3);
	ck_assert_uint_eq(set.v[1].pid, 1003);
	ck_assert_int_eq(set.v[1].since_ms, 30);
	range_set_free(&set);
}
END_TEST

/* -------------------------------------------------- randomized vs. model */

#define UNIV 64 /* model bytes; byte UNIV - 1 also stands for "to EOF" */
#define NOWN 4
#define NOPS 25000

static const uint64_t owners[NOWN] = { 0, 1, (uint64_t)1 << 63, U64 };

struct model {
	enum dl_lock_type t[NOWN][UNIV];
	uint64_t tok[NOWN][UNIV];
};

static uint64_t rng_state;

static uint64_t rng(void) /* splitmix64: the same stream everywhere */
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rnd(unsigned n)
{
	return (unsigned)(rng() % n);
}

static uint64_t base_seed(void)
{
	const char *s = getenv("RANGE_SEED");

	return s && *s ? strtoull(s, NULL, 0) : 20240611ULL;
}

/* Model byte -> offset, and back. */
static uint64_t to_off(uint64_t base, unsigned b, bool is_end)
{
	return is_end && b == UNIV - 1 ? U64 : base + b;
}

static int owner_idx(uint64_t owner)
{
	for (int i = 0; i < NOWN; i++)
		if (owners[i] == owner)
			return i;
	return -1;
}

/* Structure and contents of @set must equal @m exactly. */
static void check_against_model(const struct dl_range_set *set,
				const struct model *m, uint64_t base,
				uint64_t seed, int op)
{
	enum dl_lock_type seen[NOWN][UNIV];

	memset(seen, 0, sizeof(seen));
	for (size_t i = 0; i < set->n; i++) {
		const struct dl_range_lock *l = &set->v[i];
		int o = owner_idx(l->owner);
		uint64_t lo, hi;

		REQUIRE(o >= 0, "seed=%" PRIu64 " op=%d: bad owner", seed, op);
		REQUIRE(l->type == DL_RDLCK || l->type == DL_WRLCK,
			"seed=%" PRIu64 " op=%d: bad type", seed, op);
		REQUIRE(l->start <= l->end && l->start >= base &&
				l->start - base < UNIV &&
				(l->end == U64 || l->end - base < UNIV - 1),
			"seed=%" PRIu64 " op=%d: bad range [%" PRIu64
			", %" PRIu64 "]",
			seed, op, l->start, l->end);
		if (i > 0) {
			const struct dl_range_lock *p = &set->v[i - 1];

			REQUIRE(p->owner < l->owner || (p->owner == l->owner &&
							p->start < l->start),
				"seed=%" PRIu64 " op=%d: unsorted at %zu", seed,
				op, i);
			if (p->owner == l->owner) {
				REQUIRE(p->end < l->start,
					"seed=%" PRIu64 " op=%d: overlap at "
					"%zu",
					seed, op, i);
				REQUIRE(p->type != l->type ||
						l->start - 1 > p->end,
					"seed=%" PRIu64 " op=%d: unmerged at "
					"%zu",
					seed, op, i);
			}
		}
		lo = l->start - base;
		hi = l->end == U64 ? UNIV - 1 : l->end - base;
		for (uint64_t b = lo; b <= hi; b++) {
			REQUIRE(seen[o][b] == DL_UNLCK,
				"seed=%" PRIu64 " op=%d: double byte", seed,
				op);
			seen[o][b] = l->type;
			REQUIRE(l->token == m->tok[o][b],
				"seed=%" PRIu64 " op=%d: owner %d byte %" PRIu64
				" token %" PRIu64 " want %" PRIu64,
				seed, op, o, b, l->token, m->tok[o][b]);
			REQUIRE(l->pid == (uint32_t)(l->token * 7 + 1) &&
					l->since_ms == (int64_t)l->token * 3,
				"seed=%" PRIu64 " op=%d: metadata", seed, op);
		}
	}
	for (int o = 0; o < NOWN; o++)
		for (int b = 0; b < UNIV; b++)
			REQUIRE(seen[o][b] == m->t[o][b],
				"seed=%" PRIu64 " op=%d: owner %d byte %d "
				"is %d, model %d",
				seed, op, o, b, (int)seen[o][b],
				(int)m->t[o][b]);
}

static void random_run(uint64_t seed, uint64_t base)
{
	struct model m;
	struct dl_range_set set = { 0 };
	unsigned granted = 0, refused = 0;

	memset(&m, 0, sizeof(m));
	rng_state = seed;
	for (int op = 1; op <= NOPS; op++) {
		int o = (int)rnd(NOWN);
		unsigned kind = rnd(100), s, e;
		struct dl_range_lock req;
		const struct dl_range_lock *c;
		bool model_conflict = false;
		uint64_t best = U64;

		/* ranges: start 0 and "to EOF" often, short pieces mostly */
		s = rnd(5) == 0 ? 0 : rnd(UNIV);
		if (s == UNIV - 1 || rnd(4) == 0)
			e = UNIV - 1;
		else if (rnd(3) == 0)
			e = s + rnd(UNIV - 1 - s);
		else
			e = s + rnd(4);
		if (e > UNIV - 1) /* here s < UNIV - 1 */
			e = UNIV - 2;

		if (kind < 2) { /* the owner goes away */
			size_t had = 0;

			for (size_t i = 0; i < set.n; i++)
				had += set.v[i].owner == owners[o];
			REQUIRE(range_set_remove_owner(&set, owners[o],
						       DL_TOKEN_ALL) == had,
				"seed=%" PRIu64 " op=%d: remove_owner", seed,
				op);
			memset(m.t[o], 0, sizeof(m.t[o]));
			memset(m.tok[o], 0, sizeof(m.tok[o]));
			check_against_model(&set, &m, base, seed, op);
			continue;
		}
		req.start = to_off(base, s, false);
		req.end = to_off(base, e, true);
		req.owner = owners[o];
		req.token = (uint64_t)op;
		req.pid = (uint32_t)(req.token * 7 + 1);
		req.since_ms = (int64_t)req.token * 3;
		req.type = kind < 40   ? DL_RDLCK
			   : kind < 70 ? DL_WRLCK
				       : DL_UNLCK;

		for (int q = 0; q < NOWN && req.type != DL_UNLCK; q++) {
			if (q == o)
				continue;
			for (unsigned b = s; b <= e; b++)
				if (m.t[q][b] == DL_WRLCK ||
				    (m.t[q][b] == DL_RDLCK &&
				     req.type == DL_WRLCK))
					model_conflict = true;
		}
		c = range_set_find_conflict(&set, &req);
		REQUIRE((c != NULL) == model_conflict,
			"seed=%" PRIu64 " op=%d: conflict %d, model %d", seed,
			op, c != NULL, model_conflict);
		if (c) {
			size_t first = set.n;

			REQUIRE(c >= set.v && c < set.v + set.n,
				"seed=%" PRIu64 " op=%d: not in set", seed, op);
			REQUIRE(range_conflicts(c, &req),
				"seed=%" PRIu64 " op=%d: not a conflict", seed,
				op);
			for (size_t i = 0; i < set.n; i++) {
				if (!range_conflicts(&set.v[i], &req))
					continue;
				if (first == set.n || set.v[i].start < best) {
					best = set.v[i].start;
					first = i;
				}
			}
			REQUIRE(c == &set.v[first],
				"seed=%" PRIu64 " op=%d: start %" PRIu64
				", lowest is %" PRIu64,
				seed, op, c->start, best);
		}
		if (kind >= 85 || c) { /* F_GETLK only, or refused */
			refused += c != NULL;
			check_against_model(&set, &m, base, seed, op);
			continue;
		}

		REQUIRE(range_set_apply(&set, &req) == 0,
			"seed=%" PRIu64 " op=%d: apply failed", seed, op);
		granted++;
		for (unsigned b = s; b <= e; b++) {
			m.t[o][b] = req.type;
			m.tok[o][b] = req.type == DL_UNLCK ? 0 : req.token;
		}
		if (req.type != DL_UNLCK) {
			/* the maximal run of this type is one lock: new grant */
			int lo = (int)s, hi = (int)e;

			while (lo > 0 && m.t[o][lo - 1] == req.type)
				lo--;
			while (hi < UNIV - 1 && m.t[o][hi + 1] == req.type)
				hi++;
			for (int b = lo; b <= hi; b++)
				m.tok[o][b] = req.token;
		}
		check_against_model(&set, &m, base, seed, op);
	}
	/* the run must have exercised both outcomes */
	REQUIRE(granted > NOPS / 4 && refused > NOPS / 20,
		"seed=%" PRIu64 ": granted %u refused %u", seed, granted,
		refused);
	range_set_free(&set);
}

START_TEST(test_random_vs_model)
{
	uint64_t seed = base_seed() + (uint64_t)(_i / 2);
	uint64_t base = _i % 2 ? U64 - (UNIV - 1) : 0;

	random_run(seed, base);
}
END_TEST

static Suite *range_suite(void)
{
	Suite *s = suite_create("range");
	TCase *tc = tcase_create("flock");

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))
	tcase_add_loop_test(tc, test_from_flock, 0, NELEM(from_cases));
	tcase_add_loop_test(tc, test_to_flock, 0, NELEM(to_cases));
	tcase_add_test(tc, test_flock_roundtrip);
	suite_add_tcase(s, tc);

	tc = tcase_create("conflict");
	tcase_add_loop_test(tc, test_conflicts, 0, NELEM(conflict_cases));
	tcase_add_test(tc, test_overlap);
	tcase_add_test(tc, test_find_conflict_order);
	suite_add_tcase(s, tc);

	tc = tcase_create("apply");
	tcase_add_test(tc, test_split_middle);
	tcase_add_test(tc, test_convert_middle);
	tcase_add_test(tc, test_convert_whole_and_edges);
	tcase_add_test(tc, test_adjacent_merge);
	tcase_add_test(tc, test_span_mixed);
	tcase_add_test(tc, test_unlock_nothing);
	tcase_add_test(tc, test_start_zero);
	tcase_add_test(tc, test_end_max);
	tcase_add_test(tc, test_einval);
	tcase_add_test(tc, test_owners_sorted_and_removed);
	tcase_add_test(tc, test_token_rules);
	tcase_add_test(tc, test_remove_owner_upto_token);
	suite_add_tcase(s, tc);

	tc = tcase_create("random");
	tcase_set_timeout(tc, 120);
	/* even: universe at offset 0; odd: at UINT64_MAX - 63 */
	tcase_add_loop_test(tc, test_random_vs_model, 0, 6);
	suite_add_tcase(s, tc);
#undef NELEM
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(range_suite());
	int failed;

	printf("range: random seed %" PRIu64 " (set RANGE_SEED to change)\n",
	       base_seed());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * pg_range.c - the PL/pgSQL range rules of backend/pg/schema.sql against
 * backend/range.c, the reference: the same random operations applied to
 * both must leave the same locks.
 *
 * One resource, a few owners (one with the high bit set: bigint
 * negative), offsets near 0, near 2^63 and up to UINT64_MAX (to EOF), so
 * every "s - 1" and "e + 1" edge is hit.  Each step is one of:
 *   lock    SCHEMA.apply() with a type  vs  range_set_apply()
 *           (and whether an exclusive lock of the owner turned shared)
 *   unlock  SCHEMA.unlock() with or without a max token  vs
 *           range_set_apply(DL_UNLCK) on the pieces up to that token
 *   release SCHEMA.release() with or without a max token  vs
 *           range_set_remove_owner()
 *   getlk   SCHEMA.getlk() and SCHEMA.blocked()  vs
 *           range_set_find_conflict() (the lowest start)
 * after which every lock (owner, type, range, token, pid) must be equal.
 *
 * usage: pg_range CONNINFO SCHEMA [STEPS [SEED]]
 * Prints "ok N steps" or the first difference; exit 0 or 1.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "backend/range.h"

#define RES "range-test"

static PGconn *conn;
static const char *schema;
static char lease[24];
static uint64_t rng;

static uint64_t rnd(void)
{
	/* xorshift64* */
	rng ^= rng >> 12;
	rng ^= rng << 25;
	rng ^= rng >> 27;
	return rng * 2685821657736338717ULL;
}

static const uint64_t owners[] = { 1, 2, 0xfedcba9876543210ULL };

static uint64_t offset(void)
{
	static const uint64_t bases[] = { 0, (uint64_t)INT64_MAX - 20,
					  UINT64_MAX - 20 };
	uint64_t b = bases[rnd() % 3];

	return b + rnd() % 21;
}

static void range(uint64_t *s, uint64_t *e)
{
	uint64_t a = offset(), b = offset();

	if (rnd() % 5 == 0)
		b = DL_RANGE_EOF;
	*s = a < b ? a : b;
	*e = a < b ? b : a;
}

/* run @sql with text parameters (NULL: SQL NULL); exits on an error */
static PGresult *q(const char *sql, int n, const char *const *v)
{
	PGresult *r = PQexecParams(conn, sql, n, NULL, v, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "pg_range: %s: %s", sql,
			PQresultErrorMessage(r));
		exit(1);
	}
	return r;
}

/* @fmt with every "%s" replaced by @a (the schema), in a static buffer */
static char *sqlf(const char *fmt, const char *a)
{
	static char buf[1024];
	size_t o = 0;

	for (const char *p = fmt; *p && o + 64 < sizeof(buf); p++) {
		if (p[0] == '%' && p[1] == 's') {
			o += (size_t)snprintf(buf + o, sizeof(buf) - o, "%s",
					      a);
			p++;
		} else {
			buf[o++] = *p;
		}
	}
	buf[o] = '\0';
	return buf;
}

static void u64s(char buf[24], uint64_t v)
{
	snprintf(buf, 24, "%" PRIu64, v);
}

static void i64s(char buf[24], uint64_t v)
{
	snprintf(buf, 24, "%" PRId64, (int64_t)v);
}

static int lock_cmp(const void *a, const void *b)
{
	const struct dl_range_lock *x = a, *y = b;

	if (x->owner != y->owner)
		return x->owner < y->owner ? -1 : 1;
	return x->start < y->start ? -1 : x->start > y->start;
}

static void dump(const char *what, const struct dl_range_lock *v, size_t n)
{
	fprintf(stderr, "  %s:\n", what);
	for (size_t i = 0; i < n; i++)
		fprintf(stderr,
			"    owner %" PRIx64 " %c [%" PRIu64 ", %" PRIu64
			"] token %" PRIu64 " pid %u\n",
			v[i].owner, v[i].type == DL_WRLCK ? 'W' : 'R',
			v[i].start, v[i].end, v[i].token, v[i].pid);
}

/* the server's locks equal the model's; false (with a dump) if not */
static bool same(const struct dl_range_set *set, const char *step)
{
	PGresult *r = q(sqlf("SELECT owner, type, r_start, r_end, token, pid "
			     "FROM %s.held WHERE res = '" RES "'::bytea",
			     schema),
			0, NULL);
	size_t n = (size_t)PQntuples(r);
	struct dl_range_lock *db = calloc(n + 1, sizeof(*db));
	struct dl_range_lock *ref = calloc(set->n + 1, sizeof(*ref));
	bool ok = n == set->n;

	for (size_t i = 0; i < n; i++) {
		db[i].owner =
			(uint64_t)strtoll(PQgetvalue(r, (int)i, 0), NULL, 10);
		db[i].type = atoi(PQgetvalue(r, (int)i, 1)) == 2 ? DL_WRLCK
								 : DL_RDLCK;
		db[i].start = strtoull(PQgetvalue(r, (int)i, 2), NULL, 10);
		db[i].end = strtoull(PQgetvalue(r, (int)i, 3), NULL, 10);
		db[i].token = strtoull(PQgetvalue(r, (int)i, 4), NULL, 10);
		db[i].pid = (uint32_t)atoi(PQgetvalue(r, (int)i, 5));
	}
	PQclear(r);
	memcpy(ref, set->v, set->n * sizeof(*ref));
	qsort(db, n, sizeof(*db), lock_cmp);
	qsort(ref, set->n, sizeof(*ref), lock_cmp);
	for (size_t i = 0; ok && i < n; i++)
		ok = db[i].owner == ref[i].owner && db[i].type == ref[i].type &&
		     db[i].start == ref[i].start && db[i].end == ref[i].end &&
		     db[i].token == ref[i].token && db[i].pid == ref[i].pid;
	if (!ok) {
		fprintf(stderr, "pg_range: after %s the locks differ\n", step);
		dump("range.c", ref, set->n);
		dump("schema.sql", db, n);
	}
	free(db);
	free(ref);
	return ok;
}

/* does @owner hold an exclusive lock over [s, e]? */
static bool has_write_over(const struct dl_range_set *set, uint64_t owner,
			   uint64_t s, uint64_t e)
{
	for (size_t i = 0; i < set->n; i++)
		if (set->v[i].owner == owner && set->v[i].type == DL_WRLCK &&
		    range_overlap(set->v[i].start, set->v[i].end, s, e))
			return true;
	return false;
}

/* the model of an unlock limited to pieces granted up to @max */
static void model_unlock(struct dl_range_set *set, uint64_t owner, uint64_t s,
			 uint64_t e, uint64_t max)
{
	struct dl_range_set mine = { 0 }, keep = { 0 };
	struct dl_range_lock u = {
		.start = s, .end = e, .owner = owner, .type = DL_UNLCK
	};

	/* an owner's locks are disjoint: split them by token, unlock the
	 * older ones, put the newer ones back whole */
	for (size_t i = 0; i < set->n; i++) {
		struct dl_range_set *to = set->v[i].owner == owner &&
							  set->v[i].token <= max
						  ? &mine
						  : &keep;

		to->v = realloc(to->v, (to->n + 1) * sizeof(*to->v));
		to->v[to->n++] = set->v[i];
		to->cap = to->n;
	}
	range_set_apply(&mine, &u);
	range_set_free(set);
	*set = keep;
	for (size_t i = 0; i < mine.n; i++) {
		set->v = realloc(set->v, (set->n + 1) * sizeof(*set->v));
		set->v[set->n++] = mine.v[i];
		set->cap = set->n;
	}
	qsort(set->v, set->n, sizeof(*set->v), lock_cmp);
	range_set_free(&mine);
}

int main(int argc, char **argv)
{
	struct dl_range_set set = { 0 };
	long steps = argc > 3 ? atol(argv[3]) : 3000;
	char step[160];
	PGresult *r;

	if (argc < 3) {
		fprintf(stderr, "usage: pg_range CONNINFO SCHEMA [STEPS "
				"[SEED]]\n");
		return 2;
	}
	rng = argc > 4 ? strtoull(argv[4], NULL, 10) : 88172645463325252ULL;
	if (!rng)
		rng = 1;
	schema = argv[2];
	conn = PQconnectdb(argv[1]);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pg_range: %s", PQerrorMessage(conn));
		return 1;
	}
	r = q(sqlf("SELECT %s.reg('range', 1, '00000000000000aa', 3600000, 0)",
		   schema),
	      0, NULL);
	snprintf(lease, sizeof(lease), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);

	for (long i = 1; i <= steps; i++) {
		uint64_t owner = owners[rnd() % 3], s, e, tok = (uint64_t)i;
		char so[24], ss[24], se[24], st[24], sp[24], sm[24], sty[4];
		unsigned op = (unsigned)(rnd() % 20);
		uint32_t pid = (uint32_t)(rnd() % 1000);

		range(&s, &e);
		i64s(so, owner);
		u64s(ss, s);
		u64s(se, e);
		u64s(st, tok);
		snprintf(sp, sizeof(sp), "%u", pid);
		if (op < 11) { /* lock */
			enum dl_lock_type t = rnd() % 2 ? DL_WRLCK : DL_RDLCK;
			struct dl_range_lock l = { .start = s,
						   .end = e,
						   .owner = owner,
						   .token = tok,
						   .pid = pid,
						   .type = t };
			bool freed = t == DL_RDLCK &&
				     has_write_over(&set, owner, s, e);
			const char *v[8] = {
				RES, lease, so, sty, ss, se, st, sp
			};

			snprintf(sty, sizeof(sty), "%d", (int)t);
			snprintf(step, sizeof(step),
				 "step %ld: lock %c [%s, %s] owner %s", i,
				 t == DL_WRLCK ? 'W' : 'R', ss, se, so);
			range_set_apply(&set, &l);
			r = q(sqlf("SELECT %s.apply(%s.res_key($1::bytea), "
				   "$1::bytea, 1::smallint, $2, $3, "
				   "$4::smallint, $5, $6, $7, $8, 'h', NULL)",
				   schema),
			      8, v);
			if ((PQgetvalue(r, 0, 0)[0] == 't') != freed) {
				fprintf(stderr,
					"pg_range: %s: freed %s, "
					"expected %d\n",
					step, PQgetvalue(r, 0, 0), freed);
				return 1;
			}
			PQclear(r);
		} else if (op < 15) { /* unlock, maybe up to a token */
			uint64_t max = rnd() % 2 ? rnd() % (uint64_t)i
						 : UINT64_MAX;
			const char *v[6] = {
				lease, RES, ss,
				se,    so,  max == UINT64_MAX ? NULL : sm
			};

			u64s(sm, max);
			snprintf(step, sizeof(step),
				 "step %ld: unlock [%s, %s] owner %s max %s", i,
				 ss, se, so, v[5] ? sm : "all");
			model_unlock(&set, owner, s, e, max);
			PQclear(q(sqlf("SELECT %s.unlock($1, $2::bytea, "
				       "1::smallint, $3, $4, $5, $6)",
				       schema),
				  6, v));
		} else if (op < 16) { /* release */
			uint64_t max = rnd() % 2 ? rnd() % (uint64_t)i
						 : UINT64_MAX;
			const char *v[4] = { lease, RES, so,
					     max == UINT64_MAX ? NULL : sm };

			u64s(sm, max);
			snprintf(step, sizeof(step),
				 "step %ld: release owner %s max %s", i, so,
				 v[3] ? sm : "all");
			range_set_remove_owner(&set, owner, max);
			PQclear(q(sqlf("SELECT %s.release($1, $2::bytea, "
				       "1::smallint, $3, $4)",
				       schema),
				  4, v));
		} else { /* getlk */
			enum dl_lock_type t = rnd() % 2 ? DL_WRLCK : DL_RDLCK;
			struct dl_range_lock l = {
				.start = s, .end = e, .owner = owner, .type = t
			};
			const struct dl_range_lock *c =
				range_set_find_conflict(&set, &l);
			const char *v[6] = { lease, RES, sty, ss, se, so };
			bool blocked;

			snprintf(sty, sizeof(sty), "%d", (int)t);
			snprintf(step, sizeof(step),
				 "step %ld: getlk %c [%s, %s] owner %s", i,
				 t == DL_WRLCK ? 'W' : 'R', ss, se, so);
			r = q(sqlf("SELECT o_start, o_owner FROM %s.getlk($1, "
				   "$2::bytea, 1::smallint, $3::smallint, $4, "
				   "$5, $6)",
				   schema),
			      6, v);
			if ((PQntuples(r) == 1) != (c != NULL) ||
			    (c && strtoull(PQgetvalue(r, 0, 0), NULL, 10) !=
					  c->start)) {
				fprintf(stderr,
					"pg_range: %s: server says %s, "
					"range.c %s\n",
					step,
					PQntuples(r) ? PQgetvalue(r, 0, 0)
						     : "none",
					c ? "a conflict" : "none");
				return 1;
			}
			PQclear(r);
			r = q(sqlf("SELECT %s.blocked(%s.res_key($2::bytea), "
				   "$2::bytea, 1::smallint, $1, $6, "
				   "$3::smallint, $4, $5)",
				   schema),
			      6, v);
			blocked = PQgetvalue(r, 0, 0)[0] == 't';
			PQclear(r);
			if (blocked != (c != NULL)) {
				fprintf(stderr, "pg_range: %s: blocked() %d\n",
					step, blocked);
				return 1;
			}
		}
		if (!same(&set, step))
			return 1;
	}
	printf("ok %ld steps, %zu locks at the end\n", steps, set.n);
	range_set_free(&set);
	PQfinish(conn);
	return 0;
}

/*
 * pg_be.c - races of the PostgreSQL backend, driven through backend.h.
 *
 * usage: pg_be SCENARIO URI CONNINFO
 *
 * Each scenario opens two backends ("hosts" a and b) on the real server
 * pg_be.sh started (URI, schema "be", ttl_ms=3000), arms the test-only
 * fault points of backend/pg (DLOCKFS_TEST_PG_FAULT, read at open) to
 * widen a race, and checks the contract of backend.h: every queued
 * request is answered exactly once, grants name their lease, the lease
 * fence (struct dl_lease) is kept, nothing is left in the tables, a poke
 * reaches the other holders' cb->revoke only.  A separate libpq
 * connection (CONNINFO) plays the operator.  Every wait is bounded; "no
 * callback" is checked over a quiet period, or, for revokes, by a later
 * poke that must arrive first (a daemon's notifications come in commit
 * order).  Scenario poke_upgrade expects URI to name a schema of
 * version 1 that pg_be.sh made.
 * Prints "ok SCENARIO" or "FAIL SCENARIO: why" and exits 0 or 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "backend/backend.h"
#include "backend/pg/internal.h"
#include "backend/util/log.h"
#include "tests/integration/be_harness.h"

#define TTL_MS	 3000
#define QUIET_MS 1000 /* "nothing more comes" */

static const char *uri, *conninfo;
static PGconn *op; /* the operator's connection */

/* how host @name opens, with the fault points @fault armed */
static struct be_open open_as(const char *name, const char *fault)
{
	return (struct be_open){ .uri = uri,
				 .incarnation = (uint64_t)getpid() * 1000 +
						(uint64_t)name[0],
				 .fault_var = "DLOCKFS_TEST_PG_FAULT",
				 .fault = fault };
}

static void host_open(struct be_host *h, const char *name, const char *fault)
{
	struct be_open o = open_as(name, fault);

	be_host_open(h, name, &o);
}

static struct dl_lock_req req(const char *res, enum dl_lock_type t,
			      uint64_t owner, uint64_t wait_id)
{
	return (struct dl_lock_req){ .resource = res,
				     .space = DL_SPACE_POSIX,
				     .type = t,
				     .start = 0,
				     .end = DL_RANGE_EOF,
				     .owner = owner,
				     .pid = 42,
				     .wait_id = wait_id };
}

/* one number from the operator's SQL */
static long sql_long(const char *sql)
{
	PGresult *r = PQexec(op, sql);
	long v;

	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
		be_fail("%s: %s", sql, PQresultErrorMessage(r));
	v = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return v;
}

static void sql_run(const char *sql)
{
	PGresult *r = PQexec(op, sql);

	if (PQresultStatus(r) != PGRES_COMMAND_OK &&
	    PQresultStatus(r) != PGRES_TUPLES_OK)
		be_fail("%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

static long rows(void)
{
	return sql_long("SELECT (SELECT count(*) FROM be.held) + "
			"(SELECT count(*) FROM be.queue)");
}

static void expect(int got, int want, const char *what)
{
	if (got != want)
		be_fail("%s: %d (%s), expected %d", what, got,
			got < 0 ? strerror(-got) : "", want);
}

/* ---- scenarios ------------------------------------------------------- */

/* a grant, a queued request served by the release, F_GETLK and list from
 * the other host, the fence, nothing left behind */
static void sc_handoff(void)
{
	struct dl_lock_req ra = req("h", DL_WRLCK, 1, 0), rb;
	struct dl_grant ga, gb;
	struct dl_lock_info info;
	struct be_host a, b;
	struct be_event e;
	int64_t now = dl_mono_ms();

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	if (atomic_load(&a.lease.until_ms) <= now ||
	    atomic_load(&a.lease.until_ms) > now + TTL_MS)
		be_fail("fence after open: until %" PRId64 ", now %" PRId64,
			atomic_load(&a.lease.until_ms), now);
	expect(dl_backend_lock(a.be, &ra, &ga), 0, "a locks");
	if (ga.lease != atomic_load(&a.lease.gen) || !ga.token)
		be_fail("grant of a: token %" PRIu64 " lease %" PRIu64,
			ga.token, ga.lease);
	rb = req("h", DL_WRLCK, 2, 0);
	expect(dl_backend_lock(b.be, &rb, &gb), -EAGAIN, "b without waiting");
	rb.wait_id = 11;
	expect(dl_backend_lock(b.be, &rb, &gb), -EINPROGRESS, "b queues");
	expect(dl_backend_getlk(b.be, &rb, &info), 1, "b's getlk");
	if (strcmp(info.host, "a") || info.owner != 1 || info.mine ||
	    info.pid != 42 || info.token != ga.token)
		be_fail("getlk from b: host %s owner %" PRIu64 " mine %d",
			info.host, info.owner, info.mine);
	if (be_quiet_count(&b, 11))
		be_fail("b was answered while a holds the lock");
	ra.type = DL_UNLCK;
	expect(dl_backend_unlock(a.be, &ra), 0, "a unlocks");
	e = be_await_event(&b, 11, BE_BOUND_MS);
	if (e.kind != 'g' || e.grant.token <= ga.token ||
	    e.grant.lease != atomic_load(&b.lease.gen))
		be_fail("b's wait ended with '%c' token %" PRIu64, e.kind,
			e.grant.token);
	if (be_quiet_count(&b, 11) != 1)
		be_fail("b's wait was answered twice");
	expect(dl_backend_release_owner(b.be, "h", DL_SPACE_POSIX, 2,
					DL_TOKEN_ALL),
	       0, "b releases");
	if (rows())
		be_fail("%ld rows left", rows());
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * A cancel that loses to the grant (the cancel is delayed, the grant
 * lands first): answered once, by the callback, cancel says -ENOENT; and
 * quick cancels racing unlocks: each wait answered exactly once, and a
 * cancelled one leaves nothing on the server.
 */
static void sc_cancel_race(void)
{
	struct dl_lock_req ra = req("c", DL_WRLCK, 1, 0), rb;
	struct dl_grant g;
	struct be_host a, b;
	int ret;

	host_open(&a, "a", NULL);
	host_open(&b, "b", "delay_cancel:400");
	expect(dl_backend_lock(a.be, &ra, &g), 0, "a locks");
	rb = req("c", DL_WRLCK, 2, 21);
	expect(dl_backend_lock(b.be, &rb, &g), -EINPROGRESS, "b queues");
	ra.type = DL_UNLCK;
	expect(dl_backend_unlock(a.be, &ra), 0, "a unlocks");
	ret = dl_backend_cancel(b.be, 21); /* sleeps 400 ms first */
	expect(ret, -ENOENT, "the late cancel");
	if (be_quiet_count(&b, 21) != 1 || be_events(&b, 21, 'g') != 1)
		be_fail("the granted wait has %d answers",
			be_events(&b, 21, 0));
	expect(dl_backend_release_owner(b.be, "c", DL_SPACE_POSIX, 2,
					DL_TOKEN_ALL),
	       0, "b releases");
	be_host_close(&b);

	host_open(&b, "b", NULL);
	for (uint64_t i = 1; i <= 15; i++) {
		ra.type = DL_WRLCK;
		expect(dl_backend_lock(a.be, &ra, &g), 0, "a locks again");
		rb = req("c", DL_WRLCK, 2, 100 + i);
		expect(dl_backend_lock(b.be, &rb, &g), -EINPROGRESS,
		       "b queues again");
		ra.type = DL_UNLCK;
		expect(dl_backend_unlock(a.be, &ra), 0, "a unlocks again");
		ret = dl_backend_cancel(b.be, 100 + i);
		if (ret == 0) {
			if (be_quiet_count(&b, 100 + i) != 0)
				be_fail("a cancelled wait was answered too");
		} else if (ret == -ENOENT) {
			struct be_event e =
				be_await_event(&b, 100 + i, BE_BOUND_MS);

			if (e.kind != 'g' || be_quiet_count(&b, 100 + i) != 1)
				be_fail("wait %" PRIu64 " answered %d times", i,
					be_events(&b, 100 + i, 0));
		} else {
			be_fail("cancel: %s", strerror(-ret));
		}
		expect(dl_backend_release_owner(b.be, "c", DL_SPACE_POSIX, 2,
						DL_TOKEN_ALL),
		       0, "b releases");
		if (rows())
			be_fail("round %" PRIu64 ": %ld rows left after the "
				"cancel or release",
				i, rows());
	}
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * The answer of a statement is lost (the connection dies after the send,
 * as in a network blip): the backend asks again on a fresh connection and
 * the idempotent request is granted or queued once.
 */
static void sc_indoubt(void)
{
	struct dl_lock_req ra = req("d", DL_WRLCK, 1, 0), rb;
	struct dl_grant g;
	struct be_host a, b;
	long n;

	host_open(&a, "a", "drop_result:1");
	expect(dl_backend_lock(a.be, &ra, &g), 0, "a locks, answer lost once");
	n = sql_long("SELECT count(*) FROM be.held WHERE res = 'd'");
	if (n != 1)
		be_fail("the retried lock made %ld rows", n);
	host_open(&b, "b", "drop_result:1");
	rb = req("d", DL_WRLCK, 2, 31);
	expect(dl_backend_lock(b.be, &rb, &g), -EINPROGRESS,
	       "b queues, answer lost once");
	n = sql_long("SELECT count(*) FROM be.queue");
	if (n != 1)
		be_fail("the retried wait made %ld queue rows", n);
	ra.type = DL_UNLCK;
	expect(dl_backend_unlock(a.be, &ra), 0, "a unlocks");
	if (be_await_event(&b, 31, BE_BOUND_MS).kind != 'g' ||
	    be_quiet_count(&b, 31) != 1)
		be_fail("b's wait answered %d times", be_events(&b, 31, 0));
	expect(dl_backend_release_owner(b.be, "d", DL_SPACE_POSIX, 2,
					DL_TOKEN_ALL),
	       0, "b releases");
	if (rows())
		be_fail("%ld rows left", rows());
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * The server ends b's lease (as an expiry would): b learns it at its next
 * renewal, reports its lock lost and fails its queued wait before anyone
 * else could get them, changes its gen, and keeps working with a new
 * lease; a gets the lock.
 */
static void sc_lease_lost(void)
{
	struct dl_lock_req rb = req("l", DL_WRLCK, 2, 0), rw, ra;
	struct dl_grant g;
	struct be_host a, b;
	uint64_t gen;
	struct be_event e;
	int nlost, lost_err;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	expect(dl_backend_lock(b.be, &rb, &g), 0, "b locks");
	ra = req("l2", DL_WRLCK, 1, 0);
	expect(dl_backend_lock(a.be, &ra, &g), 0, "a locks l2");
	rw = req("l2", DL_RDLCK, 3, 41);
	expect(dl_backend_lock(b.be, &rw, &g), -EINPROGRESS, "b waits for l2");
	gen = atomic_load(&b.lease.gen);
	sql_run("UPDATE be.leases SET expires = clock_timestamp() - "
		"interval '1 ms' WHERE host = 'b'");
	e = be_await_event(&b, 41, TTL_MS + BE_BOUND_MS);
	if (e.kind != 'f' || e.err != -ENOLCK)
		be_fail("b's wait ended with '%c' %d", e.kind, e.err);
	/* the loss is reported by the renewal that finds the lease gone,
	 * which may come after the safety re-check failed the wait */
	be_wait_lost(&b, 1, TTL_MS + BE_BOUND_MS);
	nlost = be_nlost(&b, &lost_err);
	if (nlost != 1 || lost_err != -ENOLCK)
		be_fail("b reported %d lost locks (%d)", nlost, lost_err);
	if (atomic_load(&b.lease.gen) == gen)
		be_fail("b's gen did not change");
	ra = req("l", DL_WRLCK, 1, 51);
	if (dl_backend_lock(a.be, &ra, &g) != 0 &&
	    be_await_event(&a, 51, BE_BOUND_MS).kind != 'g')
		be_fail("a never got the lock of b's dead lease");
	/* b works again, under a new lease */
	rb = req("l3", DL_WRLCK, 2, 0);
	expect(dl_backend_lock(b.be, &rb, &g), 0, "b locks under a new lease");
	if (g.lease != atomic_load(&b.lease.gen) || g.lease == gen)
		be_fail("b's new grant names lease %" PRIu64, g.lease);
	expect(dl_backend_release_owner(b.be, "l3", DL_SPACE_POSIX, 2,
					DL_TOKEN_ALL),
	       0, "b releases l3");
	expect(dl_backend_release_owner(a.be, "l", DL_SPACE_POSIX, 1,
					DL_TOKEN_ALL),
	       0, "a releases l");
	expect(dl_backend_release_owner(a.be, "l2", DL_SPACE_POSIX, 1,
					DL_TOKEN_ALL),
	       0, "a releases l2");
	be_host_close(&a);
	be_host_close(&b);
	if (rows())
		be_fail("%ld rows left after both closed", rows());
}

/* cancelled waits (interrupted F_SETLKW) leave no row behind */
static void sc_eintr(void)
{
	struct dl_lock_req ra = req("e", DL_WRLCK, 1, 0), rb;
	struct dl_grant g;
	struct be_host a, b;
	long n;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	expect(dl_backend_lock(a.be, &ra, &g), 0, "a locks");
	for (uint64_t i = 1; i <= 10; i++) {
		rb = req("e", i % 2 ? DL_WRLCK : DL_RDLCK, 10 + i, 60 + i);
		expect(dl_backend_lock(b.be, &rb, &g), -EINPROGRESS,
		       "b queues");
	}
	n = sql_long("SELECT count(*) FROM be.queue");
	if (n != 10)
		be_fail("%ld queued", n);
	for (uint64_t i = 1; i <= 10; i++)
		expect(dl_backend_cancel(b.be, 60 + i), 0, "b cancels");
	if (sql_long("SELECT count(*) FROM be.queue"))
		be_fail("queue rows left after the cancels");
	ra.type = DL_UNLCK;
	expect(dl_backend_unlock(a.be, &ra), 0, "a unlocks");
	for (uint64_t i = 1; i <= 10; i++)
		if (be_quiet_count(&b, 60 + i))
			be_fail("a cancelled wait was granted");
	if (rows())
		be_fail("%ld rows left", rows());
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * Both tries of a lock lose their answer, so it may have been granted: the
 * backend takes it back with an unlock of its whole range (the token is
 * unknown).  That unlock must run before the owner's next lock, or it ends
 * the newer grant and b gets the lock too.  The keeper's first try of the
 * take-back fails, as if the server were still down.
 */
static void sc_indoubt_relock(void)
{
	struct dl_lock_req ra = req("i", DL_WRLCK, 1, 0),
			   rb = req("i", DL_WRLCK, 2, 0);
	struct dl_grant g;
	struct be_host a, b;
	int64_t end;
	int ret;

	host_open(&a, "a", "drop_result:2,fail_job:1");
	host_open(&b, "b", NULL);
	expect(dl_backend_lock(a.be, &ra, &g), -ENOLCK,
	       "a locks, both answers lost");
	/* refused (-ENOLCK) while the take-back has not reached the server */
	end = dl_mono_ms() + BE_BOUND_MS;
	while ((ret = dl_backend_lock(a.be, &ra, &g)) == -ENOLCK &&
	       dl_mono_ms() < end)
		usleep(10000);
	expect(ret, 0, "a locks again");
	while (be_retrying(&a) > 0) {
		if (dl_mono_ms() > end)
			be_fail("the take-back is still not done after %d ms",
				BE_BOUND_MS);
		usleep(10000);
	}
	expect(dl_backend_lock(b.be, &rb, &g), -EAGAIN,
	       "b locks what a holds (the take-back must not end a's newer "
	       "grant)");
	expect(dl_backend_release_owner(a.be, "i", DL_SPACE_POSIX, 1,
					DL_TOKEN_ALL),
	       0, "a releases");
	if (rows())
		be_fail("%ld rows left", rows());
	be_host_close(&a);
	be_host_close(&b);
}

/* ---- poke / revoke ---------------------------------------------------- */

/* @h's revoke number @i (from 1) named @res */
static void check_revoke(struct be_host *h, int i, const char *res)
{
	const char *got;

	got = be_revoked(h, i - 1);
	if (!got || strcmp(got, res) != 0)
		be_fail("revoke %d of %s names %zu bytes \"%.40s\", expected "
			"%zu bytes \"%.40s\"",
			i, h->name, got ? strlen(got) : 0, got ? got : "(none)",
			strlen(res), res);
}

/* @from pokes @res: @h's cb->revoke is called, as its number @n, with
 * @res, within the bound */
static void poke_reaches(struct be_host *from, const char *res,
			 struct be_host *h, int n)
{
	int got;

	expect(dl_backend_poke(from->be, res), 0, "poke");
	got = be_wait_revoked(h, n, BE_BOUND_MS);
	if (got != n)
		be_fail("%s poked a lock of %s: %s has had %d revokes, "
			"expected %d",
			from->name, h->name, h->name, got, n);
	check_revoke(h, n, res);
}

static void lock_in(struct be_host *h, const char *res, enum dl_space space,
		    enum dl_lock_type t, uint64_t owner)
{
	struct dl_lock_req r = req(res, t, owner, 0);
	struct dl_grant g;

	r.space = space;
	expect(dl_backend_lock(h->be, &r, &g), 0, "lock");
}

static void release_in(struct be_host *h, const char *res, enum dl_space space,
		       uint64_t owner)
{
	expect(dl_backend_release_owner(h->be, res, space, owner, DL_TOKEN_ALL),
	       0, "release");
}

/*
 * a holds "x" in both spaces (two owners: told once) and b holds it too
 * (shared); b's poke reaches a, never b.  Each poke that must tell a
 * daemon nothing (a resource nobody holds, its own lock, a lock released)
 * is followed by a poke of its sentinel ("s" of a, "t" of b): the next
 * revoke it gets must name the sentinel, as its notifications come in
 * commit order.  Names of any bytes arrive intact; c, holding nothing,
 * is never told anything.
 */
static void sc_poke(void)
{
	static const char odd[] = "with space\nnew line\xff\x01 end";
	char longname[1001], *big = malloc(5999);
	struct be_host a, b, c;
	int64_t t0;

	for (size_t i = 0; i < 1000; i++)
		longname[i] = (char)(1 + i % 255); /* every byte but NUL */
	longname[1000] = '\0';
	if (!big)
		be_fail("out of memory");
	memset(big, 'n', 5998); /* longest a poke can name (PG_POKE_MAX) */
	big[5997] = '\0';
	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	host_open(&c, "c", NULL);
	lock_in(&a, "x", DL_SPACE_FLOCK, DL_RDLCK, 1);
	lock_in(&a, "x", DL_SPACE_POSIX, DL_RDLCK, 2);
	lock_in(&b, "x", DL_SPACE_POSIX, DL_RDLCK, 3);
	lock_in(&a, "s", DL_SPACE_POSIX, DL_WRLCK, 6);
	lock_in(&b, "t", DL_SPACE_FLOCK, DL_WRLCK, 7);

	t0 = dl_mono_ms();
	poke_reaches(&b, "x", &a, 1);
	dl_log(DL_LOG_NOTICE, "pg_be: poke to revoke in %" PRId64 " ms",
	       dl_mono_ms() - t0);
	/* b's poke of "x" did not reach b */
	poke_reaches(&c, "t", &b, 1);

	/* nobody holds "free"; a's poke of "x" reaches b (its 2nd) but not
	 * a; then a's 2nd revoke must be its sentinel (and not a 2nd "x"
	 * of b's first poke, for a's second owner) */
	expect(dl_backend_poke(b.be, "free"), 0, "poke of a free resource");
	expect(dl_backend_poke(c.be, "free"), 0, "poke of a free resource");
	poke_reaches(&a, "x", &b, 2);
	poke_reaches(&c, "s", &a, 2);

	/* odd bytes, either space */
	lock_in(&a, odd, DL_SPACE_POSIX, DL_WRLCK, 4);
	lock_in(&a, longname, DL_SPACE_FLOCK, DL_WRLCK, 5);
	poke_reaches(&b, odd, &a, 3);
	poke_reaches(&c, longname, &a, 4);
	lock_in(&a, big, DL_SPACE_POSIX, DL_WRLCK, 8);
	poke_reaches(&b, big, &a, 5);
	/* a byte longer: not sent (best effort), nobody held it anyway */
	big[5997] = 'n';
	big[5998] = '\0';
	expect(dl_backend_poke(b.be, big), 0, "poke of a too long name");
	big[5997] = '\0';
	release_in(&a, big, DL_SPACE_POSIX, 8);

	/* released: a poke tells nobody */
	release_in(&a, "x", DL_SPACE_FLOCK, 1);
	release_in(&a, "x", DL_SPACE_POSIX, 2);
	release_in(&b, "x", DL_SPACE_POSIX, 3);
	release_in(&a, odd, DL_SPACE_POSIX, 4);
	release_in(&a, longname, DL_SPACE_FLOCK, 5);
	expect(dl_backend_poke(c.be, "x"), 0, "poke after the release");
	expect(dl_backend_poke(c.be, odd), 0, "poke after the release");
	poke_reaches(&b, "s", &a, 6);
	poke_reaches(&a, "t", &b, 3);

	/* and nothing more comes, to anyone */
	be_quiet_count(&a, 0);
	if (be_nrevoked(&a) != 6 || be_nrevoked(&b) != 3 ||
	    be_nrevoked(&c) != 0)
		be_fail("revokes after the quiet period: a %d b %d c %d",
			be_nrevoked(&a), be_nrevoked(&b), be_nrevoked(&c));
	release_in(&a, "s", DL_SPACE_POSIX, 6);
	release_in(&b, "t", DL_SPACE_FLOCK, 7);
	if (rows())
		be_fail("%ld rows left", rows());
	be_host_close(&a);
	be_host_close(&b);
	be_host_close(&c);
	free(big);
}

/* the schema the URI names, in @buf */
static const char *uri_schema(char *buf, size_t len)
{
	const char *sch = strstr(uri, "schema=");

	if (!sch)
		be_fail("URI names no schema");
	sch += strlen("schema=");
	snprintf(buf, len, "%.*s", (int)strcspn(sch, "&"), sch);
	return buf;
}

/* the schema's meta table as max(version) * 10 + its rows */
static long meta_of(const char *sch)
{
	char sql[256];

	snprintf(sql, sizeof(sql),
		 "SELECT max(version) * 10 + count(*) FROM %s.meta", sch);
	return sql_long(sql);
}

/*
 * The schema (URI's, made at version 1 by pg_be.sh as a dlockfs without
 * poke did) is upgraded by the first open, in one go to the current
 * version: one row more in meta, a poke reaches the holder, a bump
 * counts.
 */
static void sc_poke_upgrade(void)
{
	struct dl_version v;
	struct be_host a, b;
	char sch[64];

	uri_schema(sch, sizeof(sch));
	if (meta_of(sch) != 11)
		be_fail("the schema is not at version 1 before the test: %ld",
			meta_of(sch));
	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	if (meta_of(sch) != PG_SCHEMA_VERSION * 10 + 2)
		be_fail("meta after the upgrade: %ld (max version * 10 + rows)",
			meta_of(sch));
	lock_in(&a, "u", DL_SPACE_FLOCK, DL_WRLCK, 1);
	poke_reaches(&b, "u", &a, 1);
	release_in(&a, "u", DL_SPACE_FLOCK, 1);
	expect(dl_backend_bump(b.be, "u", &v), 0, "b bumps");
	expect(dl_backend_version(a.be, "u", &v), 0, "a reads the version");
	if (v.version != 1 || strcmp(v.host, "b") != 0)
		be_fail("version after the upgrade: %" PRIu64 " by \"%s\"",
			v.version, v.host);
	be_host_close(&a);
	be_host_close(&b);
}

/* ---- versions --------------------------------------------------------- */

static void clear_versions(void)
{
	sql_run("DELETE FROM be.res_versions");
}

/* @h reads @res: version @want, last bumped by @host ("" never) */
static void version_is(struct be_host *h, const char *res, uint64_t want,
		       const char *host)
{
	struct dl_version v = be_version(h, res);

	if (v.version != want || strcmp(v.host, host) != 0 ||
	    (!want && v.changed_ms))
		be_fail("%s reads \"%.40s\" (%zu bytes): %" PRIu64 " by \"%s\"",
			h->name, res, strlen(res), v.version, v.host);
}

/* @h bumps @res: the version after it is @want */
static void bump_to(struct be_host *h, const char *res, uint64_t want)
{
	struct dl_version v = be_bump(h, res);

	if (v.version != want || strcmp(v.host, h->name) != 0)
		be_fail("%s bumps \"%.40s\" (%zu bytes) to %" PRIu64, h->name,
			res, strlen(res), v.version);
}

/*
 * Never bumped: 0, "", 0.  Bumps count from 1 with the host and the
 * server's time, read back the same from the other host and after both
 * closed; a bump whose answer is lost is asked again and counted once,
 * and so is one that gets no answer at all (-ENOLCK, but it ran).
 */
static void sc_version(void)
{
	struct dl_version v;
	struct be_host a, b, c;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	clear_versions();
	version_is(&a, "v", 0, "");
	version_is(&b, "v", 0, "");
	be_two_bumps(&a, &b, "v");
	version_is(&a, "v2", 0, "");
	bump_to(&b, "v", 3);
	if (sql_long("SELECT count(*) FROM be.versions WHERE resource = 'v' "
		     "AND version = 3 AND host = 'b'") != 1)
		be_fail("be.versions does not show v at 3 by b");
	be_host_close(&a);
	be_host_close(&b);

	/* no daemon left: the version stays */
	host_open(&a, "a", "drop_result:1");
	version_is(&a, "v", 3, "b"); /* its answer lost once: read again */
	bump_to(&a, "v", 4);	     /* not lost: the fault is spent */
	be_host_close(&a);
	host_open(&a, "a", "drop_result:1");
	bump_to(&a, "v", 5); /* answer lost, asked again: counted once */
	host_open(&c, "c", "drop_result:2");
	expect(dl_backend_bump(c.be, "v", &v), -ENOLCK,
	       "c bumps, both answers lost");
	version_is(&a, "v", 6, "c"); /* it ran, once */
	bump_to(&c, "v", 7);
	be_host_close(&a);
	be_host_close(&c);
}

/*
 * Two hosts bump one resource at once, from two threads each (50 bumps
 * per host, on several connections): every bump gets its own version,
 * 1 to 100 with none twice, and the version ends at 100.
 */
static void sc_version_race(void)
{
	struct be_host a, b;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	clear_versions();
	be_bump_race(&a, &b, "race", 2, 25);
	if (sql_long("SELECT version FROM be.res_versions WHERE res = "
		     "'race'") != 100 ||
	    sql_long("SELECT count(*) FROM be.res_versions") != 1)
		be_fail("after the race: version %ld in %ld rows",
			sql_long("SELECT max(version) FROM be.res_versions"),
			sql_long("SELECT count(*) FROM be.res_versions"));
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * Names of awkward bytes (new line, '%', quotes, backslash, invalid
 * UTF-8, 255 bytes, a whole path's 4095 bytes and its twin) each have
 * their own version: name i bumped i + 1 times, by both hosts in turn,
 * reads i + 1.  The view shows valid UTF-8 as text and the rest escaped.
 */
static void sc_version_names(void)
{
	static char n255[256], n254y[256], path[4096], twin[4096];
	const char *names[] = {
		n255,	    n254y,	   "new\nline",	  "100%",    "%25",
		"quote'",   "dq\"",	   "back\\slash", "\xff",    "\xfe",
		"\xff\xfe", "caf\xc3\xa9", "caf\xe9",	  "\x01ctl", " ",
		path,	    twin,
	};
	size_t n = sizeof(names) / sizeof(names[0]);
	struct be_host a, b;

	memset(n255, 'x', 255);
	memset(n254y, 'x', 254);
	n254y[254] = 'y';
	for (size_t i = 0; i < 4095; i++)
		path[i] = (char)(1 + i % 255); /* every byte but NUL */
	memcpy(twin, path, sizeof(path));
	twin[4094] = 'z';
	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	clear_versions();
	for (size_t i = 0; i < n; i++)
		for (uint64_t k = 1; k <= i + 1; k++)
			bump_to(k % 2 ? &a : &b, names[i], k);
	for (size_t i = 0; i < n; i++)
		version_is(i % 2 ? &a : &b, names[i], i + 1,
			   (i + 1) % 2 ? "a" : "b");
	if (sql_long("SELECT count(*) FROM be.res_versions") != (long)n)
		be_fail("%ld version rows for %zu names",
			sql_long("SELECT count(*) FROM be.res_versions"), n);
	if (sql_long("SELECT count(*) FROM be.versions WHERE resource IN "
		     "('café', 'caf\\351', '\\377\\376', E'new\\nline')") != 4)
		be_fail("be.versions shows the names wrong");
	version_is(&a, "never", 0, "");
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * Versions are not locks: a break, a lease that died (purged by the next
 * lock, its records collected by gc()) and a clean close leave them be.
 */
static void sc_version_keep(void)
{
	struct dl_lock_req r;
	struct dl_grant g;
	struct be_host a, b;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	clear_versions();
	bump_to(&a, "k", 1);
	bump_to(&a, "k", 2);
	lock_in(&a, "k", DL_SPACE_POSIX, DL_WRLCK, 1);
	expect(dl_backend_break_lock(b.be, "k"), 0, "b breaks a's lock");
	version_is(&b, "k", 2, "a");
	lock_in(&a, "k", DL_SPACE_FLOCK, DL_WRLCK, 2);
	if (sql_long("SELECT be.break_lock('k')") != 1)
		be_fail("the operator's break_lock found no holder");
	version_is(&b, "k", 2, "a");

	lock_in(&a, "k2", DL_SPACE_POSIX, DL_WRLCK, 3);
	bump_to(&a, "k2", 1);
	/* a's lease died long ago: b's lock purges it, gc() forgets it */
	sql_run("UPDATE be.leases SET expires = clock_timestamp() - "
		"interval '2 hours' WHERE host = 'a'");
	r = req("k2", DL_WRLCK, 4, 0);
	(void)dl_backend_lock(b.be, &r, &g); /* granted, or in a lock-delay */
	sql_run("SELECT be.gc()");
	if (sql_long("SELECT count(*) FROM be.held h WHERE NOT EXISTS "
		     "(SELECT 1 FROM be.leases l WHERE l.id = h.lease)"))
		be_fail("gc() left locks of a dead lease");
	version_is(&b, "k2", 1, "a");
	version_is(&b, "k", 2, "a");
	bump_to(&b, "k2", 2);
	release_in(&b, "k2", DL_SPACE_POSIX, 4);
	be_host_close(&a);
	be_host_close(&b);
	if (sql_long("SELECT sum(version) FROM be.res_versions") != 4)
		be_fail("versions after both closed: %ld in all",
			sql_long("SELECT sum(version) FROM be.res_versions"));
}

/*
 * The schema (URI's, made at version 2 by pg_be.sh as a dlockfs before
 * versions did, with a lock in it) is upgraded by the first open: the
 * current version in meta, the lock kept, versions work; a schema newer
 * than the daemon is refused.
 */
static void sc_version_upgrade(void)
{
	char sch[64], sql[512], err[512];
	struct be_host a;
	struct be_open o;
	int ret;

	uri_schema(sch, sizeof(sch));
	if (meta_of(sch) != 21)
		be_fail("the schema is not at version 2 before the test: %ld",
			meta_of(sch));
	snprintf(sql, sizeof(sql),
		 "SELECT r FROM %s.lock(%s.reg('old', 1, '00000000000000aa', "
		 "600000, 0), 'kept'::bytea, 1::smallint, 2::smallint, 0, 9, "
		 "7, 42, NULL)",
		 sch, sch);
	if (sql_long(sql) != 1)
		be_fail("no lock in the version 2 schema");
	host_open(&a, "a", NULL);
	if (meta_of(sch) != PG_SCHEMA_VERSION * 10 + 2)
		be_fail("meta after the upgrade: %ld (max version * 10 + rows)",
			meta_of(sch));
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM %s.locks WHERE resource = 'kept' AND "
		 "host = 'old' AND range = '0-9'",
		 sch);
	if (sql_long(sql) != 1)
		be_fail("the lock did not survive the upgrade");
	version_is(&a, "kept", 0, "");
	bump_to(&a, "kept", 1);
	snprintf(sql, sizeof(sql),
		 "SELECT version FROM %s.versions WHERE resource = 'kept'",
		 sch);
	if (sql_long(sql) != 1)
		be_fail("%s.versions does not show the bump", sch);
	be_host_close(&a);

	/* a newer dlockfs upgraded it meanwhile: refused by name */
	snprintf(sql, sizeof(sql), "INSERT INTO %s.meta (version) VALUES (%d)",
		 sch, PG_SCHEMA_VERSION + 1);
	sql_run(sql);
	o = open_as("a", NULL);
	ret = be_host_try_open(&a, "a", &o, err, sizeof(err));
	if (ret == 0)
		be_host_close(&a);
	snprintf(sql, sizeof(sql), "version %d", PG_SCHEMA_VERSION + 1);
	if (ret != -EINVAL || !strstr(err, sql))
		be_fail("open of a version %d schema: %d (%s)",
			PG_SCHEMA_VERSION + 1, ret, err);
	snprintf(sql, sizeof(sql), "DELETE FROM %s.meta WHERE version = %d",
		 sch, PG_SCHEMA_VERSION + 1);
	sql_run(sql);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} scs[] = {
		{ "handoff", sc_handoff },
		{ "cancel_race", sc_cancel_race },
		{ "indoubt", sc_indoubt },
		{ "lease_lost", sc_lease_lost },
		{ "eintr", sc_eintr },
		{ "indoubt_relock", sc_indoubt_relock },
		{ "poke", sc_poke },
		{ "poke_upgrade", sc_poke_upgrade },
		{ "version", sc_version },
		{ "version_race", sc_version_race },
		{ "version_names", sc_version_names },
		{ "version_keep", sc_version_keep },
		{ "version_upgrade", sc_version_upgrade },
	};

	if (argc != 4) {
		fprintf(stderr, "usage: pg_be SCENARIO URI CONNINFO\n");
		return 2;
	}
	be_case = argv[1];
	be_quiet_ms = QUIET_MS;
	uri = argv[2];
	conninfo = argv[3];
	dl_log_init("pg_be", DL_LOG_WARNING, false);
	op = PQconnectdb(conninfo);
	if (PQstatus(op) != CONNECTION_OK)
		be_fail("operator connection: %s", PQerrorMessage(op));
	/* what a failed scenario left must not fail the next one */
	sql_run("DO $$ BEGIN IF to_regclass('be.held') IS NOT NULL THEN "
		"DELETE FROM be.held; DELETE FROM be.queue; END IF; END $$");
	for (size_t i = 0; i < sizeof(scs) / sizeof(scs[0]); i++) {
		if (strcmp(scs[i].name, be_case) == 0) {
			scs[i].fn();
			be_ok();
			PQfinish(op);
			return 0;
		}
	}
	be_fail("unknown scenario");
}

/*
 * redis_be.c - races of the Redis backend, driven through backend.h.
 *
 * usage: redis_be SCENARIO PORT[,PORT...]
 *
 * Each scenario opens two or more backends ("hosts") on real redis-servers
 * that redis_be.sh started on loopback ports, arms the test-only fault
 * points of backend/redis/fault.c (DLOCKFS_TEST_REDIS_FAULT, read at open) to
 * widen a race, and checks the contract of backend.h: every queued
 * request is answered exactly once, grants name their lease, the lease
 * fence (struct dl_lease) is kept, a poke reaches every other holder's
 * revoke once and never the poker's.  A separate hiredis connection plays
 * the server's side (a lease that vanished, records left behind).  Every
 * wait is bounded; "no callback" is checked over a quiet period.
 * Prints "ok SCENARIO" or "FAIL SCENARIO: why" and exits 0 or 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "backend/backend.h"
#include "backend/util/log.h"
#include "tests/integration/be_harness.h"

#define TTL_MS	  3000
#define QUIET_MS  1500 /* "nothing more comes" */
#define MAX_NODES 3

static int ports[MAX_NODES], nports;
static char prefix[64];

static redisContext *raw(int node);
static size_t subscribers(int node);

static void host_open(struct be_host *h, const char *name, const char *fault)
{
	size_t before[MAX_NODES];
	char uri[512];
	struct be_open o = { .uri = uri,
			     .incarnation = (uint64_t)getpid() * 1000 +
					    (uint64_t)name[0],
			     .fault_var = "DLOCKFS_TEST_REDIS_FAULT",
			     .fault = fault };
	int64_t end;
	size_t len;

	len = (size_t)snprintf(uri, sizeof(uri), "redis://");
	for (int i = 0; i < nports; i++)
		len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					"%s127.0.0.1:%d", i ? "," : "",
					ports[i]);
	snprintf(uri + len, sizeof(uri) - len, "/%s?ttl_ms=%d", prefix, TTL_MS);
	for (int i = 0; i < nports; i++)
		before[i] = subscribers(i);
	be_host_open(h, name, &o);
	/* its subscribers listen before it locks: a grant published before
	 * would reach it only through the keeper, which delay_deliver
	 * keeps quiet */
	end = dl_mono_ms() + BE_BOUND_MS;
	for (int i = 0; i < nports; i++)
		while (subscribers(i) <= before[i]) {
			if (dl_mono_ms() > end)
				be_fail("open %s: no subscriber on node %d",
					name, i);
			usleep(10000);
		}
}

static struct dl_lock_req req_of(const char *res, uint64_t owner,
				 uint64_t wait_id)
{
	struct dl_lock_req r = { .resource = res,
				 .space = DL_SPACE_FLOCK,
				 .type = DL_WRLCK,
				 .start = 0,
				 .end = DL_RANGE_EOF,
				 .owner = owner,
				 .pid = 1,
				 .wait_id = wait_id };
	return r;
}

static int do_lock(struct be_host *h, const char *res, uint64_t owner,
		   uint64_t wait_id, struct dl_grant *g)
{
	struct dl_lock_req r = req_of(res, owner, wait_id);
	struct dl_grant dummy;

	return dl_backend_lock(h->be, &r, g ? g : &dummy);
}

static int do_unlock(struct be_host *h, const char *res, uint64_t owner)
{
	struct dl_lock_req r = req_of(res, owner, 0);

	r.type = DL_UNLCK;
	return dl_backend_unlock(h->be, &r);
}

static void do_poke(struct be_host *h, const char *res)
{
	char buf[128];
	int ret = dl_backend_poke(h->be, res);

	if (ret != 0)
		be_fail("%s's poke of \"%s\" gave %d", h->name,
			be_shown(res, buf, sizeof(buf)), ret);
}

/* @poker pokes @res: @h's revoke number @n (from 1) comes within the
 * bound, for @res */
static void expect_revoke(struct be_host *poker, struct be_host *h, int n,
			  const char *res, const char *what)
{
	char want[128], got[128];
	int64_t start = dl_mono_ms();
	const char *name;
	int have;

	do_poke(poker, res);
	have = be_wait_revoked(h, n, BE_BOUND_MS);

	if (have < n)
		be_fail("%s: %s's revoke not called within %d ms", what,
			h->name, BE_BOUND_MS);
	if (have > n)
		be_fail("%s: %s's revoke called %d times, expected %d", what,
			h->name, have, n);
	name = be_revoked(h, n - 1);
	if (!name || strcmp(name, res) != 0)
		be_fail("%s: revoke of \"%s\", expected \"%s\"", what,
			name ? be_shown(name, got, sizeof(got)) : "(no memory)",
			be_shown(res, want, sizeof(want)));
	printf("  %s: revoke %" PRId64 " ms after the poke\n", what,
	       dl_mono_ms() - start);
}

/* ---- the server's side -------------------------------------------------- */

static redisContext *raw(int node)
{
	redisContext *c = redisConnect("127.0.0.1", ports[node]);

	if (!c || c->err)
		be_fail("raw connection to node %d", node);
	return c;
}

/* the leases of host @host vanish on @node (as if they had expired) */
static void kill_leases(int node, const char *host)
{
	redisContext *c = raw(node);
	redisReply *r = redisCommand(c, "HGETALL %s:hosts", prefix);

	for (size_t i = 0;
	     r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2) {
		redisReply *d;

		if (strcmp(r->element[i + 1]->str, host) != 0)
			continue;
		d = redisCommand(c, "HDEL %s:leases %s", prefix,
				 r->element[i]->str);
		if (d)
			freeReplyObject(d);
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
}

/* the channels of our prefix with a subscriber on @node */
static size_t subscribers(int node)
{
	redisContext *c = raw(node);
	redisReply *r = redisCommand(c, "PUBSUB CHANNELS %s:*", prefix);
	size_t n = r && r->type == REDIS_REPLY_ARRAY ? r->elements : 0;

	if (r)
		freeReplyObject(r);
	redisFree(c);
	return n;
}

/* host @host has a live lease registered on @node */
static bool host_registered(int node, const char *host)
{
	redisContext *c = raw(node);
	redisReply *r = redisCommand(c, "HGETALL %s:hosts", prefix);
	bool found = false;

	for (size_t i = 0;
	     r && r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements && !found;
	     i += 2) {
		redisReply *d;

		if (strcmp(r->element[i + 1]->str, host) != 0)
			continue;
		d = redisCommand(c, "HEXISTS %s:leases %s", prefix,
				 r->element[i]->str);
		found = d && d->type == REDIS_REPLY_INTEGER && d->integer == 1;
		if (d)
			freeReplyObject(d);
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return found;
}

static long long hlen(int node, const char *kind, const char *res)
{
	redisContext *c = raw(node);
	redisReply *r = redisCommand(c, "HLEN %s:%s:%s", prefix, kind, res);
	long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;

	if (r)
		freeReplyObject(r);
	redisFree(c);
	return v;
}

/* the enqueue time of the only queued record of @res on @node */
static long long waiter_since(int node, const char *res)
{
	redisContext *c = raw(node);
	redisReply *r = redisCommand(c, "HVALS %s:w:%s", prefix, res);
	long long since = -1;

	if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 1) {
		/* SEQ SPACE T S E OWNER PID SINCE MODE */
		const char *p = r->element[0]->str;

		for (int f = 0; f < 7 && p; f++) {
			p = strchr(p, ' ');
			if (p)
				p++;
		}
		if (p)
			since = atoll(p);
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return since;
}

static bool wait_gen_change(struct be_host *h, uint64_t old, int64_t ms)
{
	int64_t end = dl_mono_ms() + ms;

	while (dl_mono_ms() < end) {
		if (atomic_load(&h->lease.gen) != old)
			return true;
		usleep(10000);
	}
	return false;
}

static bool wait_trusted(struct be_host *h, int64_t ms)
{
	int64_t end = dl_mono_ms() + ms;

	while (dl_mono_ms() < end) {
		if (dl_lease_trusted(&h->lease, atomic_load(&h->lease.gen),
				     dl_mono_ms()))
			return true;
		usleep(10000);
	}
	return false;
}

static void check_fresh_lease(struct be_host *h, const char *what)
{
	uint64_t gen = atomic_load(&h->lease.gen);
	int64_t until = atomic_load(&h->lease.until_ms), now = dl_mono_ms();

	if (gen == 0)
		be_fail("%s: lease gen is 0 (not maintained)", what);
	if (until <= now || until > now + TTL_MS)
		be_fail("%s: until_ms %" PRId64 " not within (now, now + ttl] "
			"(now %" PRId64 ")",
			what, until, now);
}

/* ---- scenarios ---------------------------------------------------------- */

/* item 1: gen and until kept, every grant names its lease */
static void sc_lease(void)
{
	struct be_host a, b;
	struct dl_grant g;
	struct be_event e;
	uint64_t gen;
	int ret;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	check_fresh_lease(&a, "after open");
	gen = atomic_load(&a.lease.gen);
	if (do_lock(&a, "r1", 1, 0, &g) != 0)
		be_fail("lock r1");
	if (g.lease != gen)
		be_fail("synchronous grant names lease %" PRIu64 ", current "
			"%" PRIu64,
			g.lease, gen);
	if (do_lock(&b, "r2", 2, 0, NULL) != 0)
		be_fail("b lock r2");
	ret = do_lock(&a, "r2", 1, 11, &g);
	if (ret != -EINPROGRESS)
		be_fail("queued lock gave %d", ret);
	do_unlock(&b, "r2", 2);
	e = be_expect_one(&a, 11, "queued grant");
	if (e.kind != 'g' || e.grant.lease != gen)
		be_fail("queued grant: kind %c lease %" PRIu64 ", current "
			"%" PRIu64,
			e.kind, e.grant.lease, gen);

	for (int i = 0; i < nports; i++)
		kill_leases(i, "a");
	if (!wait_gen_change(&a, gen, BE_BOUND_MS))
		be_fail("lease vanished on the server: gen still %" PRIu64,
			gen);
	if (!be_wait_lost(&a, 2, BE_BOUND_MS))
		be_fail("held locks not reported lost");
	if (dl_lease_trusted(&a.lease, gen, dl_mono_ms()))
		be_fail("old lease %" PRIu64 " still trusted", gen);
	if (!wait_trusted(&a, BE_BOUND_MS))
		be_fail("no trusted lease after re-registration");
	check_fresh_lease(&a, "after re-registration");
	if (do_lock(&a, "r3", 1, 0, &g) != 0)
		be_fail("lock r3");
	if (g.lease != atomic_load(&a.lease.gen) || g.lease == gen)
		be_fail("grant after the loss names lease %" PRIu64, g.lease);
	be_host_close(&a);
	be_host_close(&b);
}

struct lock_thread {
	pthread_t t;
	struct be_host *h;
	const char *res;
	uint64_t owner, wait_id;
	int ret;
	int64_t done_at;
};

static void *lock_main(void *arg)
{
	struct lock_thread *lt = arg;

	lt->ret = do_lock(lt->h, lt->res, lt->owner, lt->wait_id, NULL);
	lt->done_at = dl_mono_ms();
	return NULL;
}

/* item 2: a request sent while the lease is replaced is still answered */
static void sc_relock_race(void)
{
	struct be_host a, b;
	struct lock_thread lt;
	struct be_event e;
	uint64_t gen;
	int64_t changed;

	host_open(&b, "b", NULL);
	host_open(&a, "a", nports > 1 ? "delay_lock:3000" : "delay_lock:6000");
	if (do_lock(&b, "r", 2, 0, NULL) != 0)
		be_fail("b lock");
	gen = atomic_load(&a.lease.gen);
	lt = (struct lock_thread){
		.h = &a, .res = "r", .owner = 1, .wait_id = 21
	};
	pthread_create(&lt.t, NULL, lock_main, &lt);
	for (int i = 0; i < nports; i++)
		kill_leases(i, "a");
	if (!wait_gen_change(&a, gen, BE_BOUND_MS))
		be_fail("the lease was not replaced");
	changed = dl_mono_ms();
	pthread_join(lt.t, NULL);
	if (lt.done_at < changed)
		be_fail("race not hit: lock() returned before the lease "
			"changed");
	if (lt.ret == -ENOLCK) {
		be_expect_none(&a, 21, "lock failed synchronously");
		printf("  lock() answered -ENOLCK synchronously\n");
		goto out;
	}
	if (lt.ret != -EINPROGRESS)
		be_fail("lock() gave %d", lt.ret);
	do_unlock(&b, "r", 2);
	e = be_expect_one(&a, 21, "request sent during the lease change");
	if (e.kind == 'g' && e.grant.lease != atomic_load(&a.lease.gen))
		be_fail("granted under lease %" PRIu64 ", current "
			"%" PRIu64,
			e.grant.lease, atomic_load(&a.lease.gen));
	printf("  answered: %c lease %" PRIu64 "\n", e.kind, e.grant.lease);
out:
	be_host_close(&a);
	be_host_close(&b);
}

struct cancel_thread {
	pthread_t t;
	struct be_host *h;
	uint64_t wait_id;
	int ret;
	int64_t done_at;
};

static void *cancel_main(void *arg)
{
	struct cancel_thread *ct = arg;

	ct->ret = dl_backend_cancel(ct->h->be, ct->wait_id);
	ct->done_at = dl_mono_ms();
	return NULL;
}

/* item 3: cancel racing a lease loss: answered exactly once */
static void sc_cancel_race(void)
{
	struct be_host a, b;
	struct cancel_thread ct;
	uint64_t gen;
	int64_t changed;

	host_open(&b, "b", NULL);
	host_open(&a, "a", "delay_cancel:6000");
	if (do_lock(&b, "r", 2, 0, NULL) != 0)
		be_fail("b lock");
	if (do_lock(&a, "r", 1, 31, NULL) != -EINPROGRESS)
		be_fail("a not queued");
	gen = atomic_load(&a.lease.gen);
	ct = (struct cancel_thread){ .h = &a, .wait_id = 31 };
	pthread_create(&ct.t, NULL, cancel_main, &ct);
	for (int i = 0; i < nports; i++)
		kill_leases(i, "a");
	if (!wait_gen_change(&a, gen, BE_BOUND_MS))
		be_fail("the lease was not replaced");
	changed = dl_mono_ms();
	pthread_join(ct.t, NULL);
	if (ct.done_at < changed)
		be_fail("race not hit: cancel() returned before the lease "
			"changed");
	if (ct.ret == 0) {
		be_expect_none(&a, 31, "cancel during a lease loss");
	} else if (ct.ret == -ENOENT) {
		be_expect_one(&a, 31, "cancel -ENOENT during a lease loss");
	} else {
		be_fail("cancel gave %d (the caller cannot answer)", ct.ret);
	}
	printf("  cancel gave %d\n", ct.ret);
	be_host_close(&a);
	be_host_close(&b);
}

/* item 4: a failed unlock / release is retried in the background */
static void sc_unlock_retry(void)
{
	struct be_host a, b;
	struct be_event e;
	int ret;

	host_open(&b, "b", NULL);
	host_open(&a, "a", "fail_unlock:1,fail_release:1");
	if (do_lock(&a, "r", 1, 0, NULL) != 0)
		be_fail("a lock");
	if (do_lock(&b, "r", 2, 41, NULL) != -EINPROGRESS)
		be_fail("b not queued");
	ret = do_unlock(&a, "r", 1);
	printf("  unlock with the server unreachable: %d\n", ret);
	e = be_expect_one(&b, 41, "lock freed by a failed unlock");
	if (e.kind != 'g')
		be_fail("b's wait failed: %d", e.err);

	if (do_lock(&b, "s", 2, 0, NULL) != 0)
		be_fail("b lock s");
	if (do_lock(&a, "s", 1, 42, NULL) != -EINPROGRESS)
		be_fail("a not queued on s");
	ret = dl_backend_release_owner(b.be, "s", DL_SPACE_FLOCK, 2,
				       UINT64_MAX);
	(void)ret;
	be_host_close(&b);
	host_open(&b, "b", "fail_release:1");
	if (do_lock(&b, "t", 2, 0, NULL) != 0)
		be_fail("b lock t");
	if (do_lock(&a, "t", 1, 43, NULL) != -EINPROGRESS)
		be_fail("a not queued on t");
	ret = dl_backend_release_owner(b.be, "t", DL_SPACE_FLOCK, 2,
				       UINT64_MAX);
	printf("  release with the server unreachable: %d\n", ret);
	e = be_expect_one(&a, 43, "lock freed by a failed release");
	if (e.kind != 'g')
		be_fail("a's wait failed: %d", e.err);
	be_host_close(&a);
	be_host_close(&b);
}

/* item 5: a lease lost on a majority never revives under its old name */
static void sc_redlock_revive(void)
{
	struct be_host a, b;
	struct be_event e;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	if (do_lock(&a, "r", 1, 0, NULL) != 0)
		be_fail("a lock");
	kill_leases(1, "a");
	kill_leases(2, "a");
	if (!be_wait_lost(&a, 1, BE_BOUND_MS))
		be_fail("a's lock not reported lost");
	/* a registers a lease on those nodes again: its old records must
	 * not come back with it */
	for (int i = 1; i < nports; i++) {
		int64_t end = dl_mono_ms() + BE_BOUND_MS;

		while (!host_registered(i, "a")) {
			if (dl_mono_ms() > end)
				be_fail("a did not register again on node %d",
					i);
			usleep(20000);
		}
	}
	if (do_lock(&b, "r", 2, 51, NULL) != -EINPROGRESS) {
		printf("  b got it at once\n");
		goto out;
	}
	e = be_expect_one(&b, 51, "lock of a lost lease");
	if (e.kind != 'g')
		be_fail("b's wait failed: %d", e.err);
out:
	be_host_close(&a);
	be_host_close(&b);
}

/* items 3, 6: out of memory anywhere never drops a decided answer */
static void sc_nomem(void)
{
	struct be_host a, b;

	host_open(&a, "a", NULL);
	for (int n = 1; n <= 14; n++) {
		char fault[32];
		uint64_t id = 100 + (uint64_t)n * 2;
		int ret;

		if (do_lock(&a, "r", 1, 0, NULL) != 0 ||
		    do_lock(&a, "s", 1, 0, NULL) != 0)
			be_fail("a lock");
		snprintf(fault, sizeof(fault), "nomem:%d", n);
		host_open(&b, "b", fault);
		ret = do_lock(&b, "r", 2, id, NULL);
		if (ret == -EINPROGRESS) {
			do_unlock(&a, "r", 1);
			be_expect_one(&b, id,
				      "grant with an allocation failing");
		} else if (ret != -ENOMEM) {
			be_fail("nomem:%d: lock gave %d", n, ret);
		}
		ret = do_lock(&b, "s", 2, id + 1, NULL);
		if (ret == -EINPROGRESS) {
			ret = dl_backend_cancel(b.be, id + 1);
			if (ret == 0)
				be_expect_none(&b, id + 1, "cancel");
			else if (ret == -ENOENT)
				be_expect_one(&b, id + 1, "cancel -ENOENT");
			else
				be_fail("nomem:%d: cancel gave %d", n, ret);
		}
		be_host_close(&b);
		do_unlock(&a, "r", 1);
		do_unlock(&a, "s", 1);
	}
	be_host_close(&a);
}

/* item 7: a cancel that could not be sent leaves no record behind */
static void sc_cancel_orphan(void)
{
	struct be_host a, b;
	int64_t end;
	int ret;

	host_open(&a, "a", NULL);
	host_open(&b, "b", "fail_cancel:1");
	if (do_lock(&a, "r", 1, 0, NULL) != 0)
		be_fail("a lock");
	if (do_lock(&b, "r", 2, 71, NULL) != -EINPROGRESS)
		be_fail("b not queued");
	ret = dl_backend_cancel(b.be, 71);
	if (ret == -ENOENT)
		be_expect_one(&b, 71, "cancel -ENOENT");
	else if (ret != 0)
		be_fail("cancel gave %d", ret);
	end = dl_mono_ms() + BE_BOUND_MS;
	for (int i = 0; i < nports; i++) {
		while (hlen(i, "w", "r") != 0) {
			if (dl_mono_ms() > end)
				be_fail("node %d keeps a queued record of the "
					"cancelled wait",
					i);
			usleep(20000);
		}
	}
	be_expect_none(&b, 71, "cancelled");
	be_host_close(&a);
	be_host_close(&b);
}

struct find_arg {
	uint64_t owner;
	const char *res; /* set: only its records */
	int found;
	struct dl_lock_info info;
};

static int find_fn(const struct dl_lock_info *info, void *arg)
{
	struct find_arg *f = arg;

	if (info->owner == f->owner &&
	    (!f->res || strcmp(info->resource, f->res) == 0)) {
		f->found++;
		f->info = *info;
		f->info.resource = NULL; /* valid during the call only */
	}
	return 0;
}

static struct find_arg list_owner(struct be_host *h, const char *res,
				  uint64_t owner)
{
	struct find_arg f = { .owner = owner };

	if (dl_backend_list(h->be, res, find_fn, &f) < 0)
		be_fail("list on %s", h->name);
	return f;
}

/* item 8: a waiter's since_ms is the same on every node and host */
static void sc_since(void)
{
	struct be_host a, b;
	struct find_arg fa, fb;
	long long s0;

	host_open(&a, "a", NULL);
	host_open(&b, "b", "delay_lock:40");
	if (do_lock(&a, "r", 1, 0, NULL) != 0)
		be_fail("a lock");
	if (do_lock(&b, "r", 2, 81, NULL) != -EINPROGRESS)
		be_fail("b not queued");
	s0 = waiter_since(0, "r");
	for (int i = 1; i < nports; i++)
		if (waiter_since(i, "r") != s0)
			be_fail("enqueue time %lld on node 0, %lld on node %d",
				s0, waiter_since(i, "r"), i);
	fa = list_owner(&a, "r", 2);
	fb = list_owner(&b, "r", 2);
	if (fa.found != 1 || fb.found != 1 || !fa.info.waiting ||
	    !fb.info.waiting)
		be_fail("the waiter is not listed as waiting by both hosts");
	if (fa.info.since_ms != fb.info.since_ms)
		be_fail("since_ms %" PRId64 " on a, %" PRId64 " on b",
			fa.info.since_ms, fb.info.since_ms);
	dl_backend_cancel(b.be, 81);
	be_host_close(&a);
	be_host_close(&b);
}

/* item 8: a grant this daemon has not processed yet is still a wait */
static void sc_mine_waiting(void)
{
	struct be_host a, b;
	struct find_arg f;
	int64_t end;

	host_open(&a, "a", NULL);
	host_open(&b, "b", "delay_deliver:3000");
	if (do_lock(&a, "r", 1, 0, NULL) != 0)
		be_fail("a lock");
	if (do_lock(&b, "r", 2, 91, NULL) != -EINPROGRESS)
		be_fail("b not queued");
	do_unlock(&a, "r", 1);
	/* the server granted it: a sees b as a holder */
	end = dl_mono_ms() + BE_BOUND_MS;
	for (;;) {
		f = list_owner(&a, "r", 2);
		if (f.found == 1 && !f.info.waiting)
			break;
		if (dl_mono_ms() > end)
			be_fail("the server did not hand the lock to b");
		usleep(20000);
	}
	if (be_events(&b, 91, 0))
		be_fail("race not hit: b processed its grant already");
	f = list_owner(&b, "r", 2);
	if (f.found != 1 || !f.info.waiting || !f.info.mine)
		be_fail("b lists its unprocessed grant as found=%d waiting=%d "
			"mine=%d",
			f.found, f.info.waiting, f.info.mine);
	be_expect_one(&b, 91, "delayed grant");
	f = list_owner(&b, "r", 2);
	if (f.found != 1 || f.info.waiting)
		be_fail("b's processed grant not listed as held");
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * Redlock: a grant or a queued request may be missing on a minority of
 * nodes (a node that answered a retry before the others, or was down).
 * A listing is the union of the nodes' records, so a host never misses
 * its own lock or wait there (the cache's idle check gave a file back
 * while a lock and waiters were on the other two nodes, and the unlock of
 * that lock was then never sent: seen as waiters stuck in redis_redlock).
 */
static void sc_list_union(void)
{
	struct be_host a, b;
	struct find_arg f;
	redisContext *c;
	redisReply *r;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	if (do_lock(&a, "r", 1, 0, NULL) != 0)
		be_fail("a lock");
	if (do_lock(&b, "r", 2, 95, NULL) != -EINPROGRESS)
		be_fail("b not queued");
	/* node 0 forgets both */
	c = raw(0);
	r = redisCommand(c, "DEL %s:g:r %s:w:r", prefix, prefix);
	if (!r || r->type != REDIS_REPLY_INTEGER || r->integer != 2)
		be_fail("node 0 did not have the lock and the wait");
	freeReplyObject(r);
	redisFree(c);
	f = list_owner(&a, "r", 1);
	if (f.found != 1 || f.info.waiting || !f.info.mine)
		be_fail("a lists its lock as found=%d waiting=%d mine=%d",
			f.found, f.info.waiting, f.info.mine);
	f = list_owner(&b, "r", 2);
	if (f.found != 1 || !f.info.waiting || !f.info.mine)
		be_fail("b lists its wait as found=%d waiting=%d mine=%d",
			f.found, f.info.waiting, f.info.mine);
	f = list_owner(&b, "r", 1);
	if (f.found != 1 || f.info.waiting || f.info.mine)
		be_fail("b lists a's lock as found=%d waiting=%d mine=%d",
			f.found, f.info.waiting, f.info.mine);
	/* the overview (no file) finds r on the nodes that have it */
	f = (struct find_arg){ .owner = 1, .res = "r" };
	if (dl_backend_list(b.be, NULL, find_fn, &f) < 0)
		be_fail("b's overview");
	if (f.found != 1 || f.info.waiting || f.info.mine)
		be_fail("b's overview shows a's lock as found=%d waiting=%d "
			"mine=%d",
			f.found, f.info.waiting, f.info.mine);
	do_unlock(&a, "r", 1);
	be_expect_one(&b, 95, "grant on two nodes of three");
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * A lock whose answer is lost may have been granted: the backend takes it
 * back with an unlock of its whole range (the token is unknown).  That
 * unlock must reach the server before the owner's next lock there, or it
 * ends the newer grant and another host gets the lock too (seen in the
 * fault suite as two SQLite writers after a Redis restart).  The first
 * try of the take-back fails here, as if the server were still down.
 */
static void sc_indoubt_relock(void)
{
	struct be_host a, b;
	char fault[64];
	int64_t end;
	int ret;

	snprintf(fault, sizeof(fault), "lose_lock:%d,fail_unlock:%d", nports,
		 nports);
	host_open(&b, "b", NULL);
	host_open(&a, "a", fault);
	ret = do_lock(&a, "r", 1, 0, NULL);
	if (ret != -ENOLCK)
		be_fail("a lock whose answer was lost gave %d", ret);
	/* refused (-ENOLCK) while the take-back has not reached the server */
	end = dl_mono_ms() + BE_BOUND_MS;
	while ((ret = do_lock(&a, "r", 1, 0, NULL)) == -ENOLCK &&
	       dl_mono_ms() < end)
		usleep(10000);
	if (ret != 0)
		be_fail("a's lock again gave %d", ret);
	while (be_retrying(&a) > 0) {
		if (dl_mono_ms() > end)
			be_fail("the take-back is still not done after %d ms",
				BE_BOUND_MS);
		usleep(10000);
	}
	ret = do_lock(&b, "r", 2, 0, NULL);
	if (ret != -EAGAIN)
		be_fail("b's lock of what a holds gave %d: the take-back of "
			"the in-doubt lock ended a's newer grant",
			ret);
	be_host_close(&a);
	be_host_close(&b);
}

/*
 * A poke reaches the revoke of every other daemon holding the resource in
 * either space, once (Redlock: once although every node tells it), with
 * the resource's bytes intact; never the poker's own revoke, and nobody's
 * for a resource nobody holds.  Publishes on one channel arrive in order,
 * so a stray revoke from an earlier poke would come before the awaited
 * one and show in its count; the last check covers the quiet period.
 */
static void sc_poke(void)
{
	static const char odd[] = "odd name\n\xff end ";
	struct dl_lock_req r;
	struct be_host a, b;

	host_open(&a, "a", NULL);
	host_open(&b, "b", NULL);
	do_poke(&b, "x"); /* nobody holds it */
	if (do_lock(&a, "x", 1, 0, NULL) != 0)
		be_fail("a lock x");
	do_poke(&a, "x"); /* its own lock */
	expect_revoke(&b, &a, 1, "x", "flock lock poked");

	/* POSIX space, both hold a range: only the other one is asked */
	r = req_of("y", 1, 0);
	r.space = DL_SPACE_POSIX;
	r.end = 9;
	if (dl_backend_lock(a.be, &r, &(struct dl_grant){ 0 }) != 0)
		be_fail("a lock y");
	r.owner = 2;
	r.start = 100;
	r.end = 199;
	if (dl_backend_lock(b.be, &r, &(struct dl_grant){ 0 }) != 0)
		be_fail("b lock y");
	expect_revoke(&b, &a, 2, "y", "POSIX lock poked by another holder");
	expect_revoke(&a, &b, 1, "y", "POSIX lock poked back");

	if (do_lock(&a, odd, 1, 0, NULL) != 0)
		be_fail("a lock the odd name");
	expect_revoke(&b, &a, 3, odd, "odd name poked");

	/* given back: a poke finds nobody */
	if (do_unlock(&a, "x", 1) != 0)
		be_fail("a unlock x");
	do_poke(&b, "x");
	do_poke(&a, "nobody");
	usleep(QUIET_MS * 1000);
	if (be_wait_revoked(&a, 4, 0) != 3 || be_wait_revoked(&b, 2, 0) != 1)
		be_fail("revokes: a %d (expected 3), b %d (expected 1)",
			be_wait_revoked(&a, 4, 0), be_wait_revoked(&b, 2, 0));
	be_host_close(&a);
	be_host_close(&b);
}

/* ---- versions ---------------------------------------------------------- */

#define BUMPERS	    4	/* threads per host */
#define BUMPS	    250 /* per thread: N = BUMPERS * BUMPS per host */
#define TOTAL_BUMPS (2 * BUMPERS * BUMPS)

/* @res is at @version, last bumped by @host ("" and 0 ms: never) */
static void expect_version(struct be_host *h, const char *res, uint64_t version,
			   const char *host, const char *what)
{
	struct dl_version v = be_version(h, res);
	char buf[128];

	if (v.version != version || strcmp(v.host, host) != 0 ||
	    (version == 0) != (v.changed_ms == 0))
		be_fail("%s: \"%s\" read by %s is %" PRIu64 " by \"%s\" at "
			"%" PRId64 ", expected %" PRIu64 " by "
			"\"%s\"",
			what, be_shown(res, buf, sizeof(buf)), h->name,
			v.version, v.host, v.changed_ms, version, host);
}

/* dl_backend_list() callback: counts what is listed on another resource
 * than @arg */
static int count_other_fn(const struct dl_lock_info *info, void *arg)
{
	struct find_arg *f = arg;

	if (!info->resource || strcmp(info->resource, "v") != 0)
		f->found++;
	return 0;
}

/*
 * Optimistic concurrency (issue 14): a resource's version, P:v:R, counted
 * on the server apart from its locks.  Never bumped reads 0; each bump
 * adds exactly one, also when two hosts bump at once from several
 * threads; odd names have versions of their own; breaking, losing and
 * purging locks, listing them, reopening the backend and a server that
 * stops answering for a while leave it alone.  Redlock: not offered.
 */
static void sc_version(void)
{
	static char longname[256], hugename[4001];
	static const char *const odd[] = {
		"dir/new\nline", "100% %s %n", "\xff\xfe\xc3(bad utf-8",
		longname,	 hugename,     "g:v",
		":v:",
	};
	static const unsigned odd_bumps[] = { 1, 2, 3, 4, 5, 6, 7 };
	struct find_arg f = { 0 };
	const char *last = NULL; /* the host that bumped "hot" last */
	struct dl_version v, w;
	struct be_host a, b;
	redisContext *c;
	redisReply *r;
	int64_t t0;
	int ret, failed = 0;

	host_open(&a, "a", NULL);
	if (nports > 1) {
		if (dl_backend_version(a.be, "v", &v) != -EOPNOTSUPP ||
		    dl_backend_bump(a.be, "v", &v) != -EOPNOTSUPP)
			be_fail("Redlock offers versions it cannot count");
		be_host_close(&a);
		return;
	}
	host_open(&b, "b", NULL);
	memset(longname, 'n', sizeof(longname) - 1);
	longname[0] = '\x01';
	memset(hugename, 'h', sizeof(hugename) - 1);

	expect_version(&a, "v", 0, "", "never bumped");
	be_two_bumps(&a, &b, "v");

	/* two daemons, several threads each: no bump lost, none doubled */
	last = be_bump_race(&a, &b, "hot", BUMPERS, BUMPS);

	/* odd names: each its own record, its bytes intact */
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		expect_version(&b, odd[i], 0, "", "odd name, never bumped");
		for (unsigned j = 0; j < odd_bumps[i]; j++)
			be_bump(i % 2 ? &a : &b, odd[i]);
	}
	c = raw(0);
	for (size_t i = 0; i < sizeof(odd) / sizeof(odd[0]); i++) {
		char buf[128];

		expect_version(&a, odd[i], odd_bumps[i], i % 2 ? "a" : "b",
			       "odd name");
		r = redisCommand(c, "HGET %s:v:%b n", prefix, odd[i],
				 strlen(odd[i]));
		if (!r || r->type != REDIS_REPLY_STRING ||
		    strtoull(r->str, NULL, 10) != odd_bumps[i])
			be_fail("no record %s:v:%s of %u", prefix,
				be_shown(odd[i], buf, sizeof(buf)),
				odd_bumps[i]);
		freeReplyObject(r);
	}

	/* locks come and go around it: a break, a lease lost and purged */
	if (do_lock(&a, "v", 1, 0, NULL) != 0)
		be_fail("a lock v");
	ret = dl_backend_break_lock(b.be, "v");
	if (ret != 0)
		be_fail("break gave %d", ret);
	if (!be_wait_lost(&a, 1, BE_BOUND_MS))
		be_fail("the broken lock was not reported lost");
	expect_version(&b, "v", 2, "a", "after a break");
	if (do_lock(&a, "v", 1, 0, NULL) != 0)
		be_fail("a lock v again");
	kill_leases(0, "a");
	if (!be_wait_lost(&a, 2, BE_BOUND_MS))
		be_fail("the lock of the vanished lease was not reported lost");
	ret = do_lock(&b, "v", 2, 0, NULL); /* purges a's dead record */
	if (ret != 0 && ret != -EAGAIN)
		be_fail("b lock v gave %d", ret);
	expect_version(&b, "v", 2, "a", "after a lease loss and purge");
	/* "v" is the only resource with locks left: no version record is
	 * listed as one */
	if (dl_backend_list(a.be, NULL, count_other_fn, &f) < 0)
		be_fail("list of every resource");
	if (f.found)
		be_fail("list of every resource shows %d lock(s) on resources "
			"that only have a version",
			f.found);

	/* an error answer, then a server that stops answering for a while:
	 * -ENOLCK, and the backend reconnects */
	r = redisCommand(c, "SET %s:v:wrongtype x", prefix);
	freeReplyObject(r);
	if (dl_backend_version(a.be, "wrongtype", &v) != -ENOLCK ||
	    dl_backend_bump(a.be, "wrongtype", &v) != -ENOLCK)
		be_fail("an error answer did not give -ENOLCK");
	r = redisCommand(c, "CLIENT PAUSE 1200");
	freeReplyObject(r);
	ret = dl_backend_bump(a.be, "v", &v);
	if (ret != -ENOLCK)
		be_fail("a bump while the server does not answer gave %d", ret);
	t0 = dl_mono_ms();
	while ((ret = dl_backend_bump(a.be, "v", &v)) == -ENOLCK &&
	       dl_mono_ms() < t0 + BE_BOUND_MS) {
		failed++;
		usleep(20000);
	}
	if (ret != 0)
		be_fail("no bump within %d ms of the pause: %d", BE_BOUND_MS,
			ret);
	/* each unanswered bump may have run once the pause ended */
	if (v.version < 3 || v.version > 3 + 1 + (uint64_t)failed)
		be_fail("%d bump(s) unanswered, then one more: %" PRIu64,
			1 + failed, v.version);
	w = v;
	redisFree(c);

	/* versions outlive their daemons */
	be_host_close(&a);
	be_host_close(&b);
	host_open(&a, "a", NULL);
	expect_version(&a, "v", w.version, "a", "after reopen");
	expect_version(&a, "hot", TOTAL_BUMPS, last, "after reopen");
	v = be_bump(&a, "hot");
	if (v.version != TOTAL_BUMPS + 1)
		be_fail("bump after reopen gave %" PRIu64, v.version);
	be_host_close(&a);
}

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} sc[] = {
		{ "lease", sc_lease },
		{ "relock_race", sc_relock_race },
		{ "cancel_race", sc_cancel_race },
		{ "unlock_retry", sc_unlock_retry },
		{ "redlock_revive", sc_redlock_revive },
		{ "nomem", sc_nomem },
		{ "cancel_orphan", sc_cancel_orphan },
		{ "since", sc_since },
		{ "mine_waiting", sc_mine_waiting },
		{ "list_union", sc_list_union },
		{ "indoubt_relock", sc_indoubt_relock },
		{ "poke", sc_poke },
		{ "version", sc_version },
	};
	char *p;

	if (argc != 3) {
		fprintf(stderr, "usage: redis_be SCENARIO PORT[,PORT...]\n");
		return 2;
	}
	be_case = argv[1];
	be_quiet_ms = QUIET_MS;
	for (p = argv[2]; *p && nports < MAX_NODES;) {
		ports[nports++] = (int)strtol(p, &p, 10);
		if (*p == ',')
			p++;
	}
	dl_log_init("redis_be",
		    getenv("REDIS_BE_DEBUG") ? DL_LOG_DEBUG : DL_LOG_WARNING,
		    false);
	for (size_t i = 0; i < sizeof(sc) / sizeof(sc[0]); i++) {
		if (strcmp(sc[i].name, be_case) != 0)
			continue;
		snprintf(prefix, sizeof(prefix), "be%d%s", (int)getpid(),
			 be_case);
		sc[i].fn();
		be_ok();
		return 0;
	}
	fprintf(stderr, "unknown scenario %s\n", be_case);
	return 2;
}

/*
 * redis_scale.c - the cost of a lock on a file that already holds many
 * ranges, on the Redis backend, driven through backend.h (no FUSE).
 *
 * usage: redis_scale PORT[,PORT...] [N1 N2 OWNERS BLOCK]
 *
 * One backend ("host") on the redis-servers redis_scale.sh started.  Owner
 * 1 takes N1 (10000) single-byte POSIX write locks on one file, on even
 * bytes so nothing merges; then OWNERS (5) more owners take N2 (2000) each,
 * interleaved on the even bytes after those, alternating read and write
 * locks.  The time per lock is reported for every BLOCK (1000) locks: a
 * lock decided by one server-side script that scans or re-serialises the
 * file's ranges grows with their number (quadratic in total), one that
 * searches them does not.  Asserts the last block's mean is at most
 * 3 x the first's + 1 ms, then checks the result: in Redlock mode (three
 * ports), a lock granted by one node of three is undone there exactly;
 * list() shows every range once, getlk() finds the right holder, a
 * conflicting lock is refused, an unlock splits a merged range, and
 * releasing every owner leaves nothing.  Prints the numbers and "ok scale"
 * or "FAIL scale: why".
 */
#include <errno.h>
#include <stdbool.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/util/log.h"
#include "tests/integration/be_harness.h"

#define TTL_MS	  10000
#define MAX_NODES 3
#define RES	  "scale"

static int ports[MAX_NODES], nports, nopen;
static char prefix[64];

static void on_granted(void *ctx, uint64_t id, const struct dl_grant *g)
{
	be_fail("unexpected grant callback for wait %" PRIu64, id);
}

static void on_failed(void *ctx, uint64_t id, int err)
{
	be_fail("unexpected failure callback for wait %" PRIu64 ": %s", id,
		strerror(-err));
}

static void on_lost(void *ctx, const char *res, enum dl_space space,
		    uint64_t owner, int err)
{
	be_fail("lock of owner %" PRIu64 " on %s lost: %s", owner, res,
		strerror(-err));
}

/* no lock here ever waits, or is lost: every callback fails the test */
static const struct dl_backend_cb no_callbacks = { .granted = on_granted,
						   .failed = on_failed,
						   .lost = on_lost };

/* host @h: a backend on nodes [first, first + n) of the servers */
static void host_open(struct be_host *h, int first, int n)
{
	char uri[512];
	struct be_open o = { .uri = uri,
			     .incarnation = (uint64_t)getpid() * 10 +
					    (uint64_t)nopen++,
			     .cb = &no_callbacks };
	size_t len;

	len = (size_t)snprintf(uri, sizeof(uri), "redis://");
	for (int i = first; i < first + n; i++)
		len += (size_t)snprintf(uri + len, sizeof(uri) - len,
					"%s127.0.0.1:%d", i > first ? "," : "",
					ports[i]);
	snprintf(uri + len, sizeof(uri) - len, "/%s?ttl_ms=%d", prefix, TTL_MS);
	be_host_open(h, "scale", &o);
}

static int64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static struct dl_lock_req posix(uint64_t owner, enum dl_lock_type type,
				uint64_t start, uint64_t end)
{
	struct dl_lock_req r = { .resource = RES,
				 .space = DL_SPACE_POSIX,
				 .type = type,
				 .start = start,
				 .end = end,
				 .owner = owner,
				 .pid = (uint32_t)owner };
	return r;
}

struct tally {
	long n, bad;
};

static int count_one(const struct dl_lock_info *info, void *arg)
{
	struct tally *t = arg;

	t->n++;
	if (info->waiting || info->start != info->end || !info->token)
		t->bad++;
	return 0;
}

struct snap {
	struct dl_lock_info *v;
	size_t n, cap;
};

static int snap_one(const struct dl_lock_info *info, void *arg)
{
	struct snap *s = arg;

	if (s->n == s->cap) {
		s->cap = s->cap ? 2 * s->cap : 1024;
		s->v = realloc(s->v, s->cap * sizeof(*s->v));
		if (!s->v)
			be_fail("out of memory");
	}
	s->v[s->n] = *info;
	s->v[s->n].resource = NULL;
	s->v[s->n].since_ms = 0; /* listed with the lister's clock */
	memset(s->v[s->n].host, 0, sizeof(s->v[s->n].host));
	s->n++;
	return 0;
}

static int info_cmp(const void *a, const void *b)
{
	const struct dl_lock_info *x = a, *y = b;

	if (x->owner != y->owner)
		return x->owner < y->owner ? -1 : 1;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return 0;
}

/* the holders of RES as node @node has them, sorted */
static struct snap snapshot(struct dl_backend *on_node)
{
	struct snap s = { 0 };

	if (dl_backend_list(on_node, RES, snap_one, &s) < 0)
		be_fail("list on one node");
	qsort(s.v, s.n, sizeof(*s.v), info_cmp);
	return s;
}

static bool snap_equal(const struct snap *a, const struct snap *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++) {
		const struct dl_lock_info *x = &a->v[i], *y = &b->v[i];

		if (x->owner != y->owner || x->type != y->type ||
		    x->start != y->start || x->end != y->end ||
		    x->token != y->token || x->pid != y->pid ||
		    x->waiting != y->waiting)
			return false;
	}
	return true;
}

/*
 * Redlock: a lock that only node 0 grants (nodes 1 and 2 hold a conflict,
 * put there by a second host that uses those two only) is undone on node
 * 0, which must then hold exactly what it held before: a merge of owner
 * 1's write ranges, and a conversion of some of them to a read lock.
 */
static void redlock_undo(struct dl_backend *be, long n1)
{
	static struct be_host hb, hc;
	struct dl_backend *b, *c;
	struct dl_lock_req r;
	struct dl_grant g;
	struct snap before, after;
	int64_t t0;

	if (n1 < 100)
		be_fail("redlock undo needs N1 >= 100");
	host_open(&hb, 1, 2);
	host_open(&hc, 0, 1);
	b = hb.be;
	c = hc.be;
	r = posix(7, DL_WRLCK, 5, 5);
	if (dl_backend_lock(b, &r, &g) != 0)
		be_fail("the second host could not lock byte 5");
	r = posix(7, DL_WRLCK, 131, 131);
	if (dl_backend_lock(b, &r, &g) != 0)
		be_fail("the second host could not lock byte 131");
	before = snapshot(c);
	t0 = now_us();
	r = posix(1, DL_WRLCK, 0, 20);
	if (dl_backend_lock(be, &r, &g) != -EAGAIN)
		be_fail("a lock that one node of three granted was not "
			"refused");
	r = posix(1, DL_RDLCK, 110, 131);
	if (dl_backend_lock(be, &r, &g) != -EAGAIN)
		be_fail("a lock that one node of three granted was not "
			"refused");
	printf("two undone Redlock locks: %.1f ms\n",
	       (double)(now_us() - t0) / 1000);
	after = snapshot(c);
	if (!snap_equal(&before, &after))
		be_fail("node 0 holds %zu ranges after the undo, %zu before, "
			"or other ones",
			after.n, before.n);
	for (long i = 0; i < 2; i++) {
		r = posix(7, DL_UNLCK, i ? 131 : 5, i ? 131 : 5);
		if (dl_backend_unlock(b, &r) != 0)
			be_fail("the second host could not unlock");
	}
	free(before.v);
	free(after.v);
	be_host_close(&hc);
	be_host_close(&hb);
}

int main(int argc, char **argv)
{
	long n1 = 10000, n2 = 2000, owners = 5, block = 1000, nblocks, done = 0;
	double *us, first, last;
	static struct be_host host;
	struct dl_backend *be;
	struct dl_lock_info info;
	struct dl_lock_req r;
	struct dl_grant g;
	struct tally t = { 0 };
	int64_t t0;
	char *p;
	int ret;

	be_case = "scale";
	if (argc != 2 && argc != 6) {
		fprintf(stderr, "usage: redis_scale PORT[,PORT...] [N1 N2 "
				"OWNERS "
				"BLOCK]\n");
		return 2;
	}
	for (p = argv[1]; *p && nports < MAX_NODES;) {
		ports[nports++] = (int)strtol(p, &p, 10);
		if (*p == ',')
			p++;
	}
	if (argc == 6) {
		n1 = atol(argv[2]);
		n2 = atol(argv[3]);
		owners = atol(argv[4]);
		block = atol(argv[5]);
	}
	if (n1 < block || block < 1 || owners < 0 || owners > 14 ||
	    (n1 + n2 * owners) % block)
		be_fail("bad sizes");
	nblocks = (n1 + n2 * owners) / block;
	us = calloc((size_t)nblocks, sizeof(*us));
	if (!us)
		be_fail("out of memory");
	dl_log_init("redis_scale",
		    getenv("REDIS_BE_DEBUG") ? DL_LOG_DEBUG : DL_LOG_WARNING,
		    false);
	snprintf(prefix, sizeof(prefix), "scale%d", (int)getpid());
	host_open(&host, 0, nports);
	be = host.be;

	/* owner 1: even bytes 0 .. 2 (n1 - 1); owner k: byte 2 (n1 + j
	 * owners + k - 2) for its j-th lock, so the owners interleave */
	t0 = now_us();
	for (long i = 0; i < n1 + n2 * owners; i++) {
		uint64_t owner = i < n1 ? 1 : 2 + (uint64_t)((i - n1) % owners);
		enum dl_lock_type type = owner == 1 || owner % 2 ? DL_WRLCK
								 : DL_RDLCK;

		r = posix(owner, type, 2 * (uint64_t)i, 2 * (uint64_t)i);
		ret = dl_backend_lock(be, &r, &g);
		if (ret != 0)
			be_fail("lock %ld (owner %" PRIu64 "): %s", i, owner,
				strerror(-ret));
		if (++done % block == 0) {
			int64_t t1 = now_us();

			us[done / block - 1] = (double)(t1 - t0) / block;
			printf("block %ld (%ld ranges on the file): %.1f us "
			       "per lock\n",
			       done / block, done, us[done / block - 1]);
			fflush(stdout);
			t0 = t1;
		}
	}
	first = us[0];
	last = us[nblocks - 1];
	printf("first block %.1f us/lock, last %.1f us/lock (bound %.1f)\n",
	       first, last, 3 * first + 1000);

	if (nports == 3)
		redlock_undo(be, n1);

	/* every range is listed once, as a holder */
	t0 = now_us();
	ret = dl_backend_list(be, RES, count_one, &t);
	printf("list of %ld ranges: %.1f ms\n", t.n,
	       (double)(now_us() - t0) / 1000);
	if (ret < 0 || t.n != n1 + n2 * owners || t.bad)
		be_fail("list: ret %d, %ld entries (%ld bad), expected %ld",
			ret, t.n, t.bad, n1 + n2 * owners);

	/* getlk over the last range of owner 1 and the first of owner 2 */
	r = posix(99, DL_WRLCK, 2 * (uint64_t)(n1 - 1), 2 * (uint64_t)n1 + 1);
	if (dl_backend_getlk(be, &r, &info) != 1 || info.owner != 1 ||
	    info.start != 2 * (uint64_t)(n1 - 1) || info.type != DL_WRLCK)
		be_fail("getlk did not report owner 1's last range");
	r.start = 2 * (uint64_t)n1 - 1;
	if (owners && (dl_backend_getlk(be, &r, &info) != 1 ||
		       info.owner != 2 || info.start != 2 * (uint64_t)n1))
		be_fail("getlk did not report owner 2's first range");
	/* a gap is free; a byte held is not, even to a read lock of a
	 * write-locked byte */
	r = posix(99, DL_WRLCK, 1, 1);
	if (dl_backend_lock(be, &r, &g) != 0)
		be_fail("a free byte between two ranges was refused");
	r = posix(99, DL_RDLCK, 2 * (uint64_t)(n1 / 2), 2 * (uint64_t)(n1 / 2));
	if (dl_backend_lock(be, &r, &g) != -EAGAIN)
		be_fail("a read lock on a write-locked byte was granted");
	/* owner 1 merges its first 100 ranges and the gaps into one, then
	 * unlocks a byte in the middle: two ranges */
	r = posix(1, DL_WRLCK, 0, 198);
	if (dl_backend_lock(be, &r, &g) == 0)
		be_fail("owner 1 was granted byte 1, held by owner 99");
	r = posix(1, DL_WRLCK, 2, 198);
	if (dl_backend_lock(be, &r, &g) != 0)
		be_fail("owner 1 could not merge its own ranges");
	r = posix(1, DL_UNLCK, 100, 100);
	if (dl_backend_unlock(be, &r) != 0)
		be_fail("owner 1 could not unlock byte 100");
	r = posix(99, DL_WRLCK, 100, 100);
	if (dl_backend_lock(be, &r, &g) != 0)
		be_fail("byte 100, unlocked from a merged range, is not free");
	r = posix(99, DL_WRLCK, 101, 101);
	if (dl_backend_lock(be, &r, &g) != -EAGAIN)
		be_fail("byte 101 of owner 1's merged range is free");

	/* release everything */
	t0 = now_us();
	for (uint64_t o = 1; o < 2 + (uint64_t)owners; o++)
		if (dl_backend_release_owner(be, RES, DL_SPACE_POSIX, o,
					     DL_TOKEN_ALL) < 0)
			be_fail("release of owner %" PRIu64, o);
	printf("release of %ld owners: %.1f ms\n", owners + 1,
	       (double)(now_us() - t0) / 1000);
	if (dl_backend_release_owner(be, RES, DL_SPACE_POSIX, 99,
				     DL_TOKEN_ALL) < 0)
		be_fail("release of owner 99");
	memset(&t, 0, sizeof(t));
	if (dl_backend_list(be, RES, count_one, &t) < 0 || t.n)
		be_fail("%ld ranges left after every owner released", t.n);
	be_host_close(&host);

	if (last > 3 * first + 1000)
		be_fail("the last block took %.1f us per lock, the first %.1f: "
			"the cost grows with the ranges on the file",
			last, first);
	free(us);
	be_ok();
	return 0;
}

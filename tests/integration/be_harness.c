/*
 * be_harness.c - hosts, their callback recorder, bounded waits and the
 * FAIL/ok lines of the backend-level test drivers (be_harness.h).
 *
 * A callback only records, under the host's mutex, and broadcasts the
 * host's condition; every wait here is a timed wait on that condition
 * (CLOCK_MONOTONIC) or a quiet period's sleep, never an unbounded one.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/util/clock.h"
#include "tests/integration/be_harness.h"

const char *be_case = "setup";
int be_quiet_ms = 1000;

void be_fail(const char *fmt, ...)
{
	va_list ap;

	printf("FAIL %s: ", be_case);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	_exit(1);
}

void be_ok(void)
{
	printf("ok %s\n", be_case);
	fflush(stdout);
}

const char *be_shown(const char *res, char *buf, size_t len)
{
	size_t o = 0;

	if (!res)
		return "(none)";
	for (const unsigned char *p = (const unsigned char *)res;
	     *p && o + 5 < len; p++)
		o += (size_t)snprintf(
			buf + o, len - o,
			*p >= 0x21 && *p < 0x7f ? "%c" : "\\x%02x", *p);
	buf[o] = '\0';
	return buf;
}

/* a CLOCK_MONOTONIC deadline @ms from now, for the hosts' conditions */
static void be_deadline(int64_t ms, struct timespec *ts)
{
	int64_t end = dl_mono_ms() + ms;

	ts->tv_sec = end / 1000;
	ts->tv_nsec = (end % 1000) * 1000000L;
}

/* ---- the recorder ---------------------------------------------------- */

static void be_record(struct be_host *h, const struct be_event *e)
{
	pthread_mutex_lock(&h->mutex);
	if (h->nev < BE_MAX_EVENTS)
		h->ev[h->nev++] = *e;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->mutex);
}

static void be_on_granted(void *ctx, uint64_t id, const struct dl_grant *g)
{
	be_record(ctx, &(struct be_event){ id, 'g', *g, 0 });
}

static void be_on_failed(void *ctx, uint64_t id, int err)
{
	be_record(ctx, &(struct be_event){ id, 'f', { 0 }, err });
}

static void be_on_lost(void *ctx, const char *res, enum dl_space space,
		       uint64_t owner, int err)
{
	struct be_host *h = ctx;

	pthread_mutex_lock(&h->mutex);
	h->nlost++;
	h->lost_err = err;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->mutex);
}

static void be_on_revoke(void *ctx, const char *res)
{
	struct be_host *h = ctx;
	char *copy = strdup(res);

	pthread_mutex_lock(&h->mutex);
	if (h->nrevoked < BE_MAX_REVOKES)
		h->revoked[h->nrevoked] = copy;
	else
		free(copy);
	h->nrevoked++;
	pthread_cond_broadcast(&h->cond);
	pthread_mutex_unlock(&h->mutex);
}

/* ---- hosts ----------------------------------------------------------- */

int be_host_try_open(struct be_host *h, const char *name,
		     const struct be_open *o, char *err, size_t errlen)
{
	struct dl_backend_cb cb = { .ctx = h,
				    .granted = be_on_granted,
				    .failed = be_on_failed,
				    .lost = be_on_lost,
				    .revoke = be_on_revoke };
	struct dl_backend_conf conf = { 0 };
	pthread_condattr_t ca;
	int ret;

	if (o->cb) {
		cb = *o->cb;
		cb.ctx = h;
	}
	memset(h, 0, sizeof(*h));
	h->name = name;
	pthread_mutex_init(&h->mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cond, &ca);
	pthread_condattr_destroy(&ca);
	atomic_init(&h->lease.gen, 0);
	atomic_init(&h->lease.until_ms, INT64_MAX);
	conf.uri = o->uri;
	conf.host_id = name;
	conf.incarnation = o->incarnation;
	conf.lease = &h->lease;
	if (o->fault_var && o->fault)
		setenv(o->fault_var, o->fault, 1);
	ret = dl_backend_open(&conf, &cb, &h->be, err, errlen);
	if (o->fault_var)
		unsetenv(o->fault_var);
	if (ret < 0) {
		pthread_cond_destroy(&h->cond);
		pthread_mutex_destroy(&h->mutex);
	}
	return ret;
}

void be_host_open(struct be_host *h, const char *name, const struct be_open *o)
{
	char err[512];

	if (be_host_try_open(h, name, o, err, sizeof(err)) < 0)
		be_fail("open %s: %s", name, err);
}

void be_host_close(struct be_host *h)
{
	dl_backend_close(h->be);
	h->be = NULL;
	for (int i = 0; i < h->nrevoked && i < BE_MAX_REVOKES; i++)
		free(h->revoked[i]);
	h->nrevoked = 0;
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->mutex);
}

/* ---- waiting for callbacks ------------------------------------------- */

/* be_events() with the mutex held */
static int be_events_locked(struct be_host *h, uint64_t wait_id, int kind)
{
	int n = 0;

	for (int i = 0; i < h->nev; i++)
		if ((wait_id == BE_ANY_WAIT || h->ev[i].wait_id == wait_id) &&
		    (!kind || h->ev[i].kind == kind))
			n++;
	return n;
}

int be_events(struct be_host *h, uint64_t wait_id, int kind)
{
	int n;

	pthread_mutex_lock(&h->mutex);
	n = be_events_locked(h, wait_id, kind);
	pthread_mutex_unlock(&h->mutex);
	return n;
}

struct be_event be_await_event(struct be_host *h, uint64_t wait_id, int64_t ms)
{
	struct be_event e = { 0 };
	struct timespec ts;

	be_deadline(ms, &ts);
	pthread_mutex_lock(&h->mutex);
	while (!be_events_locked(h, wait_id, 0) &&
	       pthread_cond_timedwait(&h->cond, &h->mutex, &ts) == 0)
		;
	for (int i = 0; i < h->nev; i++)
		if (h->ev[i].wait_id == wait_id) {
			e = h->ev[i];
			break;
		}
	pthread_mutex_unlock(&h->mutex);
	return e;
}

int be_quiet_count(struct be_host *h, uint64_t wait_id)
{
	usleep((useconds_t)be_quiet_ms * 1000);
	return be_events(h, wait_id, 0);
}

struct be_event be_expect_one(struct be_host *h, uint64_t wait_id,
			      const char *what)
{
	struct be_event e = be_await_event(h, wait_id, BE_BOUND_MS);
	int n;

	if (!e.kind)
		be_fail("%s: no callback for wait %" PRIu64 " within %d ms "
			"(the request hangs)",
			what, wait_id, BE_BOUND_MS);
	n = be_quiet_count(h, wait_id);
	if (n != 1)
		be_fail("%s: %d callbacks for wait %" PRIu64, what, n, wait_id);
	return e;
}

void be_expect_none(struct be_host *h, uint64_t wait_id, const char *what)
{
	if (be_quiet_count(h, wait_id))
		be_fail("%s: a callback for wait %" PRIu64 " after cancel "
			"returned 0",
			what, wait_id);
}

/* @h's counter *@count (nlost, nrevoked) once it is @n, or after @ms */
static int be_wait_count(struct be_host *h, const int *count, int n, int64_t ms)
{
	struct timespec ts;
	int got;

	be_deadline(ms, &ts);
	pthread_mutex_lock(&h->mutex);
	while (*count < n &&
	       pthread_cond_timedwait(&h->cond, &h->mutex, &ts) == 0)
		;
	got = *count;
	pthread_mutex_unlock(&h->mutex);
	return got;
}

bool be_wait_lost(struct be_host *h, int n, int64_t ms)
{
	return be_wait_count(h, &h->nlost, n, ms) >= n;
}

int be_nlost(struct be_host *h, int *err)
{
	int n;

	pthread_mutex_lock(&h->mutex);
	n = h->nlost;
	if (err)
		*err = h->lost_err;
	pthread_mutex_unlock(&h->mutex);
	return n;
}

int be_wait_revoked(struct be_host *h, int n, int64_t ms)
{
	return be_wait_count(h, &h->nrevoked, n, ms);
}

int be_nrevoked(struct be_host *h)
{
	return be_wait_revoked(h, 0, 0);
}

const char *be_revoked(struct be_host *h, int i)
{
	const char *res = NULL;

	/* a kept slot is written once, before nrevoked counts it */
	pthread_mutex_lock(&h->mutex);
	if (i >= 0 && i < h->nrevoked && i < BE_MAX_REVOKES)
		res = h->revoked[i];
	pthread_mutex_unlock(&h->mutex);
	return res;
}

size_t be_retrying(struct be_host *h)
{
	char buf[512];
	const char *p;

	if (dl_backend_status(h->be, buf, sizeof(buf)) < 0 ||
	    !(p = strstr(buf, "retrying=")))
		be_fail("status of %s has no retrying=: %s", h->name, buf);
	return (size_t)strtoul(p + strlen("retrying="), NULL, 10);
}

/* ---- versions -------------------------------------------------------- */

#define BE_SKEW_MS 2000 /* the server's clock vs ours: the same machine */

/* @h reads (@bump false) or bumps @res's version */
static struct dl_version be_version_op(struct be_host *h, const char *res,
				       bool bump)
{
	struct dl_version v;
	char buf[128];
	int ret;

	memset(&v, 0x5a, sizeof(v)); /* a field left unset shows */
	ret = bump ? dl_backend_bump(h->be, res, &v)
		   : dl_backend_version(h->be, res, &v);
	if (ret != 0)
		be_fail("%s: %s of \"%s\": %d (%s)", h->name,
			bump ? "bump" : "version",
			be_shown(res, buf, sizeof(buf)), ret, strerror(-ret));
	return v;
}

struct dl_version be_version(struct be_host *h, const char *res)
{
	return be_version_op(h, res, false);
}

struct dl_version be_bump(struct be_host *h, const char *res)
{
	return be_version_op(h, res, true);
}

struct dl_version be_two_bumps(struct be_host *a, struct be_host *b,
			       const char *res)
{
	struct dl_version v1, v2, v;
	int64_t t0, t1;

	t0 = dl_now_ms();
	v1 = be_bump(a, res);
	v2 = be_bump(a, res);
	t1 = dl_now_ms();
	if (v1.version != 1 || v2.version != 2 ||
	    strcmp(v1.host, a->name) != 0 || strcmp(v2.host, a->name) != 0)
		be_fail("two bumps gave %" PRIu64 " by \"%s\" and %" PRIu64
			" by \"%s\"",
			v1.version, v1.host, v2.version, v2.host);
	if (v1.changed_ms < t0 - BE_SKEW_MS ||
	    v2.changed_ms > t1 + BE_SKEW_MS || v2.changed_ms < v1.changed_ms)
		be_fail("bumped at %" PRId64 " and %" PRId64
			", not within [%" PRId64 ", %" PRId64 "]",
			v1.changed_ms, v2.changed_ms, t0, t1);
	v = be_version(b, res); /* the other host sees it at once */
	if (v.version != 2 || strcmp(v.host, a->name) != 0 ||
	    v.changed_ms != v2.changed_ms)
		be_fail("%s reads %" PRIu64 " by \"%s\" at %" PRId64, b->name,
			v.version, v.host, v.changed_ms);
	return v2;
}

struct be_bumper {
	pthread_t tid;
	struct be_host *h;
	const char *res;
	pthread_barrier_t *start;
	int bumps;
	uint64_t *got; /* its versions, in order */
	int err;
	char badhost[DL_HOST_MAX];
};

static void *be_bumper_main(void *arg)
{
	struct be_bumper *bu = arg;

	pthread_barrier_wait(bu->start);
	for (int i = 0; i < bu->bumps; i++) {
		struct dl_version v;
		int ret = dl_backend_bump(bu->h->be, bu->res, &v);

		if (ret != 0) {
			bu->err = ret;
			break;
		}
		if (strcmp(v.host, bu->h->name) != 0)
			snprintf(bu->badhost, sizeof(bu->badhost), "%s",
				 v.host);
		bu->got[i] = v.version;
	}
	return NULL;
}

const char *be_bump_race(struct be_host *a, struct be_host *b, const char *res,
			 int threads, int bumps)
{
	int nb = 2 * threads;
	uint64_t total = (uint64_t)nb * (uint64_t)bumps;
	struct be_bumper *bu = calloc((size_t)nb, sizeof(*bu));
	uint64_t *got = calloc(total, sizeof(*got));
	bool *seen = calloc(total + 1, sizeof(*seen));
	int64_t t0 = dl_mono_ms(), lo = dl_now_ms();
	const char *last = NULL; /* the host that got the last version */
	pthread_barrier_t start;
	struct dl_version v;

	if (!bu || !got || !seen)
		be_fail("out of memory");
	pthread_barrier_init(&start, NULL, (unsigned)nb);
	for (int i = 0; i < nb; i++) {
		bu[i] = (struct be_bumper){ .h = i % 2 ? b : a,
					    .res = res,
					    .start = &start,
					    .bumps = bumps,
					    .got = got + (size_t)i * bumps };
		if (pthread_create(&bu[i].tid, NULL, be_bumper_main, &bu[i]))
			be_fail("pthread_create");
	}
	for (int i = 0; i < nb; i++)
		pthread_join(bu[i].tid, NULL);
	pthread_barrier_destroy(&start);
	for (int i = 0; i < nb; i++) {
		if (bu[i].err)
			be_fail("concurrent bumps: %s's bump: %d (%s)",
				bu[i].h->name, bu[i].err, strerror(-bu[i].err));
		if (bu[i].badhost[0])
			be_fail("concurrent bumps: %s's bump reported host %s",
				bu[i].h->name, bu[i].badhost);
		for (int k = 0; k < bumps; k++) {
			uint64_t x = bu[i].got[k];

			if (x == 0 || x > total || seen[x])
				be_fail("concurrent bumps: bump %d of thread "
					"%d got version %" PRIu64
					" (twice, or out of 1..%" PRIu64 ")",
					k, i, x, total);
			seen[x] = true;
			if (k && x <= bu[i].got[k - 1])
				be_fail("concurrent bumps: thread %d's "
					"versions went back",
					i);
			if (x == total)
				last = bu[i].h->name;
		}
	}
	v = be_version(a, res);
	if (v.version != total || strcmp(v.host, last) != 0 ||
	    v.changed_ms < lo - BE_SKEW_MS ||
	    v.changed_ms > dl_now_ms() + BE_SKEW_MS)
		be_fail("after %" PRIu64 " concurrent bumps: version %" PRIu64
			" by \"%s\" at %" PRId64 ", expected by \"%s\"",
			total, v.version, v.host, v.changed_ms, last);
	printf("# %" PRIu64 " concurrent bumps from 2 hosts x %d threads in "
	       "%" PRId64 " ms\n",
	       total, threads, dl_mono_ms() - t0);
	free(seen);
	free(got);
	free(bu);
	return last;
}

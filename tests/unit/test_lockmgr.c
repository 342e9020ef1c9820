/*
 * test_lockmgr.c - unit tests of the lock manager (fs/lock/) against the
 * fake backend (fake_backend.c), which decides nothing by itself: every
 * grant, failure, loss and listing is the test's.
 *
 * Covered: the request life cycle; a loss followed by a re-grant; races
 * of an interrupt with a grant (forced at each point with the fake's
 * hooks, then played by two threads many times); releases named by token
 * against grants that overtake them; lock_timeout; deadlock detection (2-
 * and 3-owner cycles here, a cycle through another host, a cycle a second
 * look no longer sees, the timer's re-check, OFD requests and one process
 * with two owners left out); the write fence (lost marks, an expired or
 * replaced lease); owner ids shown; the xattr text; destroy.
 *
 * Deterministic: no sleep synchronises anything.  Answers are awaited on
 * a condition variable with a bound (WAIT_MS); races are forced from the
 * fake's hooks on the racing thread itself, and the threaded race test
 * checks invariants that hold whichever side wins.
 */
#include "fs/lock/internal.h"
#include "tests/unit/fake_backend.h"

#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/util/clock.h"

#define WAIT_MS 6000 /* bound on any wait for an answer */
#define EOF_	DL_RANGE_EOF

static struct lockmgr *lm;
static struct fake_backend *fb;

/* ---- fixture ------------------------------------------------------------- */

static int name_of(void *ctx, uint64_t obj, char **out)
{
	return asprintf(out, "file%" PRIu64, obj) < 0 ? -ENOMEM : 0;
}

static void start(unsigned lock_timeout_s, int deadlock_delay_ms)
{
	struct lockmgr_conf conf = {
		.backend = { .uri = "fake:",
			     .host_id = "hostA",
			     .incarnation = 1 },
		.lock_timeout_s = lock_timeout_s,
		.deadlock_delay_ms = deadlock_delay_ms,
		.name = name_of,
	};
	char err[256] = "";
	int ret = lockmgr_create_ops(&conf, &fake_backend_ops, &lm, err,
				     sizeof(err));

	ck_assert_msg(ret == 0, "lockmgr_create_ops: %d %s", ret, err);
	fb = fake_last();
	ck_assert_ptr_nonnull(fb);
}

/* deadlock checks at once, on the submitting thread: the cases below
 * see their outcome when submit() returns */
static void setup(void)
{
	start(0, -1);
}

static void setup_timeout(void)
{
	start(1, -1);
}

#define DELAY_MS 200

/* as the daemon on a remote backend: a wait is checked after DELAY_MS */
static void setup_delayed(void)
{
	start(0, DELAY_MS);
}

static void teardown(void)
{
	if (lm)
		lockmgr_destroy(lm);
	lm = NULL;
	fb = NULL;
}

/* ---- answers ------------------------------------------------------------- */

struct ans {
	pthread_mutex_t mu;
	pthread_cond_t cv; /* CLOCK_MONOTONIC */
	int n;		   /* done() calls: must end at exactly 1 */
	int err;
};

static void ans_init(struct ans *a)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&a->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&a->cv, &ca);
	pthread_condattr_destroy(&ca);
	a->n = 0;
	a->err = 1;
}

static void ans_done(void *arg, int err)
{
	struct ans *a = arg;

	pthread_mutex_lock(&a->mu);
	a->n++;
	a->err = err;
	pthread_cond_broadcast(&a->cv);
	pthread_mutex_unlock(&a->mu);
}

static int ans_n(struct ans *a)
{
	int n;

	pthread_mutex_lock(&a->mu);
	n = a->n;
	pthread_mutex_unlock(&a->mu);
	return n;
}

/* wait (at most @ms) for the answer; true once there is one */
static bool ans_wait(struct ans *a, int64_t ms)
{
	int64_t until = dl_mono_ms() + ms;
	struct timespec ts = { until / 1000, (until % 1000) * 1000000 };
	int n;

	pthread_mutex_lock(&a->mu);
	while (a->n == 0 &&
	       pthread_cond_timedwait(&a->cv, &a->mu, &ts) != ETIMEDOUT)
		;
	n = a->n;
	pthread_mutex_unlock(&a->mu);
	return n > 0;
}

/* ---- requests ------------------------------------------------------------ */

static struct lockmgr_req rq(uint64_t obj, uint64_t owner, uint32_t pid,
			     enum dl_lock_type type, bool wait)
{
	struct lockmgr_req r = {
		.obj = obj,
		.space = DL_SPACE_POSIX,
		.type = type,
		.start = 0,
		.end = EOF_,
		.owner = owner,
		.pid = pid,
		.wait = wait,
	};
	return r;
}

static struct lockmgr_req rq_range(uint64_t obj, uint64_t owner, uint64_t start,
				   uint64_t end, bool wait)
{
	struct lockmgr_req r = rq(obj, owner, 100, DL_WRLCK, wait);

	r.start = start;
	r.end = end;
	return r;
}

static uint64_t submit(const struct lockmgr_req *r, struct ans *a)
{
	uint64_t id;

	ans_init(a);
	id = lockmgr_prepare(lm, r, ans_done, a);
	ck_assert_uint_ne(id, 0);
	lockmgr_submit(lm, id);
	return id;
}

/* a request decided before lockmgr_submit() returns */
static int lock_now(const struct lockmgr_req *r)
{
	struct ans a;

	submit(r, &a);
	ck_assert_int_eq(ans_n(&a), 1);
	return a.err;
}

/* a request left queued by lockmgr_submit() */
static uint64_t lock_queued(const struct lockmgr_req *r, struct ans *a)
{
	uint64_t id = submit(r, a);

	ck_assert_int_eq(ans_n(a), 0);
	ck_assert(fake_is_queued(fb, id));
	return id;
}

/* end a queued wait by interrupting it: answered -EINTR at once */
static void interrupt_now(uint64_t id, struct ans *a)
{
	lockmgr_interrupt(lm, id);
	ck_assert_int_eq(ans_n(a), 1);
	ck_assert_int_eq(a->err, -EINTR);
}

struct counts {
	size_t held, waiting, lost;
};

static struct counts counts(void)
{
	struct counts c = { 0, 0, 0 };
	char *text = NULL, *p;

	ck_assert_int_eq(lockmgr_status(lm, "fake:", &text), 0);
	p = strstr(text, "held=");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(sscanf(p, "held=%zu waiting=%zu lost=%zu", &c.held,
				&c.waiting, &c.lost),
			 3);
	free(text);
	return c;
}

#define ASSERT_COUNTS(h, w, l)                      \
	do {                                        \
		struct counts c_ = counts();        \
		ck_assert_uint_eq(c_.held, (h));    \
		ck_assert_uint_eq(c_.waiting, (w)); \
		ck_assert_uint_eq(c_.lost, (l));    \
	} while (0)

/* ---- the request life cycle ---------------------------------------------- */

START_TEST(t_lifecycle)
{
	struct lockmgr_req a = rq(1, 1, 100, DL_WRLCK, false);
	struct lockmgr_req b = rq(1, 2, 200, DL_WRLCK, false);
	struct dl_lock_info info;
	struct ans ab;
	uint64_t id;
	unsigned nlock;

	ck_assert_int_eq(lock_now(&a), 0);
	ASSERT_COUNTS(1, 0, 0);
	ck_assert_int_eq(lock_now(&b), -EAGAIN);
	ck_assert_int_eq(lockmgr_getlk(lm, &b, &info), 1);
	ck_assert_uint_eq(info.owner, 1);
	ck_assert_uint_eq(info.pid, 100);

	b.wait = true;
	id = lock_queued(&b, &ab);
	ASSERT_COUNTS(1, 1, 0);
	ck_assert_int_eq(fake_grant(fb, id), 0);
	ck_assert_int_eq(ans_n(&ab), 1);
	ck_assert_int_eq(ab.err, 0);
	ASSERT_COUNTS(2, 0, 0);

	/* an unlock of everything ends the hold */
	ck_assert_int_eq(lockmgr_unlock(lm, &a), 0);
	ck_assert_uint_eq(fake_nheld(fb, 1), 0);
	ASSERT_COUNTS(1, 0, 0);

	/* the backend's refusal is the answer */
	fake_set_lock_error(fb, -ENOLCK);
	ck_assert_int_eq(lock_now(&a), -ENOLCK);
	ASSERT_COUNTS(1, 0, 0);

	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 2);
	ck_assert_uint_eq(fake_nheld(fb, 0), 0);
	ASSERT_COUNTS(0, 0, 0);

	/* interrupted between prepare and submit: never sent */
	nlock = fake_calls(fb).lock;
	ans_init(&ab);
	id = lockmgr_prepare(lm, &b, ans_done, &ab);
	lockmgr_interrupt(lm, id);
	ck_assert_int_eq(ans_n(&ab), 0);
	lockmgr_submit(lm, id);
	ck_assert_int_eq(ans_n(&ab), 1);
	ck_assert_int_eq(ab.err, -EINTR);
	ck_assert_uint_eq(fake_calls(fb).lock, nlock);
	ASSERT_COUNTS(0, 0, 0);
}
END_TEST

/* ---- lost locks ------------------------------------------------------------ */

struct lost_seen {
	int n;
	uint64_t obj, owner;
	enum dl_space space;
};

static void on_lost(void *ctx, uint64_t obj, enum dl_space space,
		    uint64_t owner)
{
	struct lost_seen *s = ctx;

	s->n++;
	s->obj = obj;
	s->space = space;
	s->owner = owner;
}

static bool describe_has(uint64_t obj, bool waiters, const char *needle)
{
	char *text = NULL;
	bool found;

	ck_assert_int_eq(lockmgr_describe(lm, obj, waiters, &text), 0);
	found = strstr(text, needle) != NULL;
	free(text);
	return found;
}

/*
 * A loss is reported before the lock can be granted again (the backends'
 * order, DESIGN §3).  The owner must release the lost lock first; its
 * next grant is then trusted again: neither the old loss nor a late
 * duplicate report of it marks the new grant, nor the file it came
 * through.  The file the lost lock was taken through stays fenced.
 */
START_TEST(t_lost_before_regrant)
{
	struct lost_seen seen = { 0 };
	struct lockmgr_file f1, f2;
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, false);
	uint64_t t1;
	unsigned nlock;

	lockmgr_set_lost_hook(lm, on_lost, &seen);
	lockmgr_file_init(&f1);
	lockmgr_file_init(&f2);
	r.file = &f1;
	ck_assert_int_eq(lock_now(&r), 0);
	t1 = fake_max_token(fb, "file1", 1);
	ck_assert_uint_ne(t1, 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &f1, 100), 0);

	ck_assert_uint_eq(
		fake_lose(fb, "file1", DL_SPACE_POSIX, 1, -ECONNABORTED), 1);
	ck_assert_int_eq(seen.n, 1);
	ck_assert_uint_eq(seen.obj, 1);
	ck_assert_uint_eq(seen.owner, 1);
	ck_assert_int_eq(seen.space, DL_SPACE_POSIX);
	ck_assert(atomic_load(&f1.lost));
	ck_assert_int_eq(lockmgr_write_check(lm, &f1, 0), -EIO);
	ck_assert_int_eq(lockmgr_pid_check(lm, 100), -EIO);
	ck_assert_int_eq(lockmgr_pid_check(lm, 101), 0);
	ASSERT_COUNTS(1, 0, 1);
	ck_assert(describe_has(1, false, "posix lost host=hostA"));

	/* as NFS: no new lock before the lost one is released */
	nlock = fake_calls(fb).lock;
	r.file = &f2;
	ck_assert_int_eq(lock_now(&r), -EIO);
	ck_assert_uint_eq(fake_calls(fb).lock, nlock);

	ck_assert_int_eq(lockmgr_unlock(lm, &r), 0);
	ASSERT_COUNTS(0, 0, 0);
	ck_assert_int_eq(lockmgr_pid_check(lm, 100), 0);

	/* a late report of the old loss, before the re-grant: no hold now */
	ck_assert_uint_eq(
		fake_lose(fb, "file1", DL_SPACE_POSIX, 1, -ECONNABORTED), 0);
	ck_assert_int_eq(seen.n, 1);
	ASSERT_COUNTS(0, 0, 0);

	/* the re-grant is trusted, and so is the file it came through */
	ck_assert_int_eq(lock_now(&r), 0);
	ck_assert_uint_gt(fake_max_token(fb, "file1", 1), t1);
	ASSERT_COUNTS(1, 0, 0);
	ck_assert(!atomic_load(&f2.lost));
	ck_assert_int_eq(lockmgr_write_check(lm, &f2, 100), 0);
	ck_assert_int_eq(lockmgr_pid_check(lm, 100), 0);
	ck_assert(!describe_has(1, false, " lost "));

	/* the file of the lost lock stays fenced (sticky) */
	ck_assert_int_eq(lockmgr_write_check(lm, &f1, 0), -EIO);
	lockmgr_set_lost_hook(lm, NULL, NULL);
}
END_TEST

/*
 * A wait of the owner that is granted after the loss was reported leaves
 * the hold lost (lockmgr_submit() refuses the owner until it releases):
 * the grant is answered, but the owner's locks there stay untrusted.
 */
START_TEST(t_lost_then_queued_grant)
{
	struct lockmgr_req r = rq_range(1, 1, 0, 9, false);
	struct lockmgr_req q = rq_range(1, 1, 20, 29, true);
	struct ans aq;
	uint64_t id;

	ck_assert_int_eq(lock_now(&r), 0);
	fake_set_queue_all(fb, true);
	id = lock_queued(&q, &aq);
	fake_set_queue_all(fb, false);
	fake_lose(fb, "file1", DL_SPACE_POSIX, 1, -ECONNABORTED);
	ASSERT_COUNTS(1, 1, 1);
	ck_assert_int_eq(fake_grant(fb, id), 0);
	ck_assert_int_eq(ans_n(&aq), 1);
	ck_assert_int_eq(aq.err, 0);
	ASSERT_COUNTS(1, 0, 1);
	ck_assert_int_eq(lockmgr_pid_check(lm, 100), -EIO);
	ck_assert_int_eq(lock_now(&r), -EIO);

	/* the release names the newest grant: the fake ends it too */
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_uint_eq(fake_nheld(fb, 1), 0);
	ASSERT_COUNTS(0, 0, 0);
	ck_assert_int_eq(lock_now(&r), 0);
}
END_TEST

/* ---- interrupt against grant ----------------------------------------------- */

START_TEST(t_cancel_interrupt_wins)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, true);
	struct ans a;
	uint64_t id;

	fake_set_queue_all(fb, true);
	id = lock_queued(&r, &a);
	ASSERT_COUNTS(0, 1, 0);
	interrupt_now(id, &a);
	ck_assert_uint_eq(fake_nqueued(fb), 0);
	/* the backend cannot answer a cancelled wait any more */
	ck_assert_int_eq(fake_grant(fb, id), -ENOENT);
	ck_assert_int_eq(ans_n(&a), 1);
	lockmgr_interrupt(lm, id); /* twice, or late: harmless */
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_uint_eq(fake_nheld(fb, 0), 0);
	ASSERT_COUNTS(0, 0, 0);
}
END_TEST

/*
 * A hook that grants a queued request, once: @id, or (0) the one the
 * backend call is about.  @res gets fake_grant()'s result after it has
 * returned, whichever thread made the call (the timer's, say).
 */
struct grant_at {
	uint64_t id;
	struct ans res;
};

static void grant_at_init(struct grant_at *g, uint64_t id)
{
	g->id = id;
	ans_init(&g->res);
}

static void hook_grant(struct fake_backend *f, enum fake_point at,
		       const char *resource, uint64_t wait_id, void *arg)
{
	struct grant_at *g = arg;

	fake_set_hook(f, at, NULL, NULL);
	ans_done(&g->res, fake_grant(f, g->id ? g->id : wait_id));
}

/* the hook ran once and its grant succeeded */
static void assert_granted_by_hook(struct grant_at *g)
{
	ck_assert(ans_wait(&g->res, WAIT_MS));
	ck_assert_int_eq(g->res.n, 1);
	ck_assert_int_eq(g->res.err, 0);
}

/* the grant arrives while the interrupt is in the backend's cancel() */
START_TEST(t_cancel_grant_wins)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, true);
	struct grant_at g;
	struct ans a;
	uint64_t id;

	fake_set_queue_all(fb, true);
	id = lock_queued(&r, &a);
	grant_at_init(&g, 0);
	fake_set_hook(fb, FAKE_AT_CANCEL, hook_grant, &g);
	lockmgr_interrupt(lm, id);
	assert_granted_by_hook(&g);
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_int_eq(a.err, 0);
	ck_assert_uint_eq(fake_calls(fb).cancel, 1);
	ck_assert_uint_eq(fake_nqueued(fb), 0);
	ASSERT_COUNTS(1, 0, 0);
	lockmgr_interrupt(lm, id);
	ck_assert_int_eq(ans_n(&a), 1);
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_uint_eq(fake_nheld(fb, 0), 0);
	ASSERT_COUNTS(0, 0, 0);
}
END_TEST

/*
 * The grant is decided in the store (cancel() says -ENOENT) but its notice
 * has not arrived when the interrupt comes: the interrupt must not answer,
 * the late grant does.
 */
START_TEST(t_cancel_grant_in_flight)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, true);
	struct ans a;
	uint64_t id;

	fake_set_queue_all(fb, true);
	id = lock_queued(&r, &a);
	ck_assert_int_eq(fake_grant_later(fb, id), 0);
	lockmgr_interrupt(lm, id);
	ck_assert_uint_eq(fake_calls(fb).cancel, 1);
	ck_assert_int_eq(ans_n(&a), 0);
	ASSERT_COUNTS(0, 1, 0);
	/* a second interrupt does not cancel twice */
	lockmgr_interrupt(lm, id);
	ck_assert_uint_eq(fake_calls(fb).cancel, 1);
	ck_assert_uint_eq(fake_deliver(fb), 1);
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_int_eq(a.err, 0);
	ASSERT_COUNTS(1, 0, 0);
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_uint_eq(fake_nheld(fb, 0), 0);
}
END_TEST

static void hook_interrupt(struct fake_backend *f, enum fake_point at,
			   const char *resource, uint64_t wait_id, void *arg)
{
	fake_set_hook(f, at, NULL, NULL);
	lockmgr_interrupt(lm, wait_id);
}

/* the interrupt arrives while lock() is queueing the request */
START_TEST(t_interrupt_during_submit)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, true);
	struct ans a;

	fake_set_queue_all(fb, true);
	fake_set_hook(fb, FAKE_AT_LOCK, hook_interrupt, NULL);
	submit(&r, &a);
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_int_eq(a.err, -EINTR);
	ck_assert_uint_eq(fake_calls(fb).cancel, 1);
	ck_assert_uint_eq(fake_nqueued(fb), 0);
	ck_assert_uint_eq(fake_nheld(fb, 0), 0);
	ASSERT_COUNTS(0, 0, 0);
}
END_TEST

static void hook_grant_then_interrupt(struct fake_backend *f,
				      enum fake_point at, const char *resource,
				      uint64_t wait_id, void *arg)
{
	hook_grant(f, at, resource, wait_id, arg);
	lockmgr_interrupt(lm, wait_id);
}

/* the grant's callback comes before lock() has returned, then the
 * interrupt: the grant is the answer */
START_TEST(t_grant_during_submit)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, true);
	struct grant_at g;
	struct ans a;

	fake_set_queue_all(fb, true);
	grant_at_init(&g, 0);
	fake_set_hook(fb, FAKE_AT_LOCK, hook_grant_then_interrupt, &g);
	submit(&r, &a);
	assert_granted_by_hook(&g);
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_int_eq(a.err, 0);
	ck_assert_uint_eq(fake_calls(fb).cancel, 0);
	ASSERT_COUNTS(1, 0, 0);
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_uint_eq(fake_nheld(fb, 0), 0);
}
END_TEST

struct race {
	pthread_barrier_t *bar;
	uint64_t id;
	int grant_ret;
};

static void *race_interrupt(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(r->bar);
	lockmgr_interrupt(lm, r->id);
	return NULL;
}

static void *race_grant(void *arg)
{
	struct race *r = arg;

	pthread_barrier_wait(r->bar);
	r->grant_ret = fake_grant(fb, r->id);
	return NULL;
}

/*
 * The interrupt and the grant on two threads at once, many times: exactly
 * one answer each time, and the state matches it (granted: held here and
 * in the backend; interrupted: nothing held, nothing queued).
 */
START_TEST(t_cancel_race_threads)
{
	unsigned wins[2] = { 0, 0 };

	fake_set_queue_all(fb, true);
	for (int i = 0; i < 400; i++) {
		struct lockmgr_req r = rq(1 + i % 3, 1, 100, DL_WRLCK, true);
		pthread_barrier_t bar;
		struct race rc = { &bar, 0, 1 };
		pthread_t t1, t2;
		struct ans a;

		pthread_barrier_init(&bar, NULL, 2);
		rc.id = lock_queued(&r, &a);
		pthread_create(&t1, NULL, race_interrupt, &rc);
		pthread_create(&t2, NULL, race_grant, &rc);
		pthread_join(t1, NULL);
		pthread_join(t2, NULL);
		pthread_barrier_destroy(&bar);

		/* both threads are done: every answer has been made */
		ck_assert_int_eq(ans_n(&a), 1);
		ck_assert_uint_eq(fake_nqueued(fb), 0);
		if (a.err == 0) {
			wins[0]++;
			ck_assert_int_eq(rc.grant_ret, 0);
			ck_assert_uint_eq(fake_nheld(fb, 1), 1);
			ASSERT_COUNTS(1, 0, 0);
			lockmgr_release_owner(lm, r.obj, DL_SPACE_POSIX, 1);
		} else {
			wins[1]++;
			ck_assert_int_eq(a.err, -EINTR);
			ck_assert_int_eq(rc.grant_ret, -ENOENT);
		}
		ck_assert_uint_eq(fake_nheld(fb, 0), 0);
		ASSERT_COUNTS(0, 0, 0);
	}
	fprintf(stderr, "cancel race: grant won %u, interrupt won %u\n",
		wins[0], wins[1]);
}
END_TEST

/* ---- releases named by token ------------------------------------------- */

/* owner 1 holds [0,9] of file1 and waits for [20,29] (a queued request
 * the test grants when it chooses); returns the wait id */
static uint64_t held_and_waiting(struct ans *aq, uint64_t *t1)
{
	struct lockmgr_req r = rq_range(1, 1, 0, 9, false);
	struct lockmgr_req q = rq_range(1, 1, 20, 29, true);
	uint64_t id;

	ck_assert_int_eq(lock_now(&r), 0);
	*t1 = fake_max_token(fb, "file1", 1);
	fake_set_queue_all(fb, true);
	id = lock_queued(&q, aq);
	fake_set_queue_all(fb, false);
	return id;
}

/* a grant that overtakes a close's release is not ended by it */
START_TEST(t_release_token_named)
{
	struct grant_at g;
	struct ans aq;
	uint64_t t1, t2;

	grant_at_init(&g, held_and_waiting(&aq, &t1));
	fake_set_hook(fb, FAKE_AT_RELEASE, hook_grant, &g);
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	assert_granted_by_hook(&g);
	ck_assert_int_eq(ans_n(&aq), 1);
	ck_assert_int_eq(aq.err, 0);
	ck_assert_uint_eq(fake_calls(fb).last_release_max_token, t1);
	t2 = fake_max_token(fb, "file1", 1);
	ck_assert_uint_gt(t2, t1);
	ck_assert_uint_eq(fake_nheld(fb, 1), 1); /* the newer grant lives */
	ASSERT_COUNTS(1, 0, 0);

	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_uint_eq(fake_calls(fb).last_release_max_token, t2);
	ck_assert_uint_eq(fake_nheld(fb, 1), 0);
	ASSERT_COUNTS(0, 0, 0);
}
END_TEST

/* a grant during an unlock of everything keeps the owner's hold */
START_TEST(t_unlock_keeps_newer_grant)
{
	struct lockmgr_req all = rq(1, 1, 100, DL_UNLCK, false);
	struct grant_at g;
	struct ans aq;
	uint64_t t1, t2;
	unsigned nrel;

	grant_at_init(&g, held_and_waiting(&aq, &t1));
	fake_set_hook(fb, FAKE_AT_UNLOCK, hook_grant, &g);
	ck_assert_int_eq(lockmgr_unlock(lm, &all), 0);
	assert_granted_by_hook(&g);
	ck_assert_int_eq(ans_n(&aq), 1);
	ck_assert_int_eq(aq.err, 0);
	t2 = fake_max_token(fb, "file1", 1);
	ck_assert_uint_gt(t2, t1);
	ASSERT_COUNTS(1, 0, 0);

	nrel = fake_calls(fb).release;
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_uint_eq(fake_calls(fb).release, nrel + 1);
	ck_assert_uint_eq(fake_calls(fb).last_release_max_token, t2);
	ck_assert_uint_eq(fake_nheld(fb, 1), 0);
	ASSERT_COUNTS(0, 0, 0);

	/* nothing held: a close costs no backend call */
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_uint_eq(fake_calls(fb).release, nrel + 1);
}
END_TEST

/* the last close of an open file ends the locks taken only through it */
START_TEST(t_release_file)
{
	struct lockmgr_file f, g;
	struct lockmgr_req ofd = rq(1, 0xf11e, 100, DL_WRLCK, false);
	struct lockmgr_req px = rq(2, 7, 100, DL_RDLCK, false);
	uint64_t token;
	unsigned nrel;

	lockmgr_file_init(&f);
	lockmgr_file_init(&g);
	ofd.file = &f;
	ofd.ofd = true;
	ck_assert_int_eq(lock_now(&ofd), 0);
	ck_assert_uint_eq(atomic_load(&f.nholds), 1);
	token = fake_max_token(fb, "file1", 0xf11e);
	lockmgr_release_file(lm, 1, &f);
	ck_assert_uint_eq(fake_calls(fb).last_release_max_token, token);
	ck_assert_uint_eq(fake_nheld(fb, 0xf11e), 0);
	ck_assert_uint_eq(atomic_load(&f.nholds), 0);
	ASSERT_COUNTS(0, 0, 0);

	/* one owner through two files: the hold lives until both go */
	px.file = &f;
	ck_assert_int_eq(lock_now(&px), 0);
	px.file = &g;
	ck_assert_int_eq(lock_now(&px), 0);
	ck_assert_uint_eq(fake_nheld(fb, 7), 2);
	token = fake_max_token(fb, "file2", 7);
	nrel = fake_calls(fb).release;
	lockmgr_release_file(lm, 2, &f);
	ck_assert_uint_eq(fake_calls(fb).release, nrel);
	ASSERT_COUNTS(1, 0, 0);
	lockmgr_release_file(lm, 2, &g);
	ck_assert_uint_eq(fake_calls(fb).release, nrel + 1);
	ck_assert_uint_eq(fake_calls(fb).last_release_max_token, token);
	ck_assert_uint_eq(fake_nheld(fb, 7), 0);
	ASSERT_COUNTS(0, 0, 0);
}
END_TEST

/* ---- lock_timeout ------------------------------------------------------------ */

START_TEST(t_lock_timeout)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, true);
	struct grant_at g;
	struct ans a;
	int64_t t0;

	fake_set_queue_all(fb, true);
	t0 = dl_mono_ms();
	lock_queued(&r, &a);
	ck_assert(ans_wait(&a, WAIT_MS));
	ck_assert_int_eq(a.err, -EDEADLK);
	ck_assert_int_ge(dl_mono_ms() - t0, 900);
	ck_assert_uint_eq(fake_calls(fb).cancel, 1);
	ck_assert_uint_eq(fake_nqueued(fb), 0);
	ASSERT_COUNTS(0, 0, 0);

	/* the grant wins against the timeout's cancel: it is the answer */
	grant_at_init(&g, 0);
	fake_set_hook(fb, FAKE_AT_CANCEL, hook_grant, &g);
	lock_queued(&r, &a);
	ck_assert(ans_wait(&a, WAIT_MS));
	assert_granted_by_hook(&g);
	ck_assert_int_eq(a.err, 0);
	ck_assert_int_eq(ans_n(&a), 1);
	ASSERT_COUNTS(1, 0, 0);
}
END_TEST

/* ---- deadlock detection -------------------------------------------------------- */

/* owner @owner of process @pid holds all of file@obj */
static void hold(uint64_t obj, uint64_t owner, uint32_t pid, bool ofd)
{
	struct lockmgr_req r = rq(obj, owner, pid, DL_WRLCK, false);

	r.ofd = ofd;
	ck_assert_int_eq(lock_now(&r), 0);
}

static struct lockmgr_req wants(uint64_t obj, uint64_t owner, uint32_t pid,
				bool ofd)
{
	struct lockmgr_req r = rq(obj, owner, pid, DL_WRLCK, true);

	r.ofd = ofd;
	return r;
}

START_TEST(t_deadlock_two)
{
	struct lockmgr_req ra = wants(2, 1, 100, false);
	struct lockmgr_req rb = wants(1, 2, 200, false);
	struct ans a, b;
	uint64_t ida;

	hold(1, 1, 100, false);
	hold(2, 2, 200, false);
	ida = lock_queued(&ra, &a);
	/* B closes the cycle: its wait is the newest, it fails at once */
	submit(&rb, &b);
	ck_assert_int_eq(ans_n(&b), 1);
	ck_assert_int_eq(b.err, -EDEADLK);
	ck_assert_uint_eq(fake_nqueued(fb), 1);
	ck_assert_int_eq(ans_n(&a), 0);
	interrupt_now(ida, &a);
}
END_TEST

/* with a delay: the deadlock is still found, DELAY_MS after the wait
 * that closes it, on the timer thread */
START_TEST(t_deadlock_delayed)
{
	struct lockmgr_req ra = wants(2, 1, 100, false);
	struct lockmgr_req rb = wants(1, 2, 200, false);
	struct ans a, b;
	uint64_t ida;
	int64_t t0;

	hold(1, 1, 100, false);
	hold(2, 2, 200, false);
	ida = lock_queued(&ra, &a);
	t0 = dl_mono_ms();
	submit(&rb, &b);
	ck_assert_int_eq(ans_n(&b), 0);
	ck_assert(ans_wait(&b, WAIT_MS));
	ck_assert_int_eq(b.err, -EDEADLK);
	ck_assert_int_ge(dl_mono_ms() - t0, DELAY_MS);
	ck_assert_int_eq(ans_n(&a), 0);
	interrupt_now(ida, &a);
}
END_TEST

/* with a delay: a wait granted before its check is never checked, so it
 * costs no listing at all */
START_TEST(t_deadlock_delay_no_listing)
{
	struct lockmgr_req r = wants(1, 1, 100, false);
	struct ans a;
	uint64_t id;

	hold(1, 2, 200, false);
	id = lock_queued(&r, &a);
	ck_assert_int_eq(fake_grant(fb, id), 0);
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_int_eq(a.err, 0);
	/* "never": quiet past the moment its check would have run */
	usleep((DELAY_MS + 300) * 1000);
	ck_assert_uint_eq(fake_calls(fb).list, 0);
	ck_assert_uint_eq(fake_calls(fb).list_all, 0);
}
END_TEST

START_TEST(t_deadlock_three)
{
	struct lockmgr_req ra = wants(2, 1, 100, false);
	struct lockmgr_req rb = wants(3, 2, 200, false);
	struct lockmgr_req rc = wants(1, 3, 300, false);
	struct ans a, b, c;
	uint64_t ida, idb;

	hold(1, 1, 100, false);
	hold(2, 2, 200, false);
	hold(3, 3, 300, false);
	ida = lock_queued(&ra, &a);
	idb = lock_queued(&rb, &b);
	submit(&rc, &c);
	ck_assert_int_eq(ans_n(&c), 1);
	ck_assert_int_eq(c.err, -EDEADLK);
	ck_assert_int_eq(ans_n(&a), 0);
	ck_assert_int_eq(ans_n(&b), 0);
	interrupt_now(ida, &a);
	interrupt_now(idb, &b);
	ASSERT_COUNTS(3, 0, 0);
}
END_TEST

/* hostB's owner 77 holds file2 and waits for file1, held by our owner 1 */
static void foreign_cycle_half(int64_t since)
{
	struct fake_lock x = {
		.resource = "file2",
		.host = "hostB",
		.owner = 77,
		.pid = 500,
		.space = DL_SPACE_POSIX,
		.type = DL_WRLCK,
		.start = 0,
		.end = EOF_,
	};

	fake_add(fb, &x);
	x.resource = "file1";
	x.waiting = true;
	x.since_ms = since;
	fake_add(fb, &x);
	hold(1, 1, 100, false);
}

START_TEST(t_deadlock_cross_host)
{
	struct lockmgr_req r = wants(2, 1, 100, false);
	struct ans a;

	foreign_cycle_half(1); /* hostB's wait is the older */
	submit(&r, &a);
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_int_eq(a.err, -EDEADLK);
	ck_assert_uint_eq(fake_nqueued(fb), 0);
	/* two checks, each listing everything once */
	ck_assert_uint_eq(fake_calls(fb).list_all, 2);
}
END_TEST

struct vanish {
	unsigned lists;
};

/* the second check's listing no longer has hostB's wait */
static void hook_vanish(struct fake_backend *f, enum fake_point at,
			const char *resource, uint64_t wait_id, void *arg)
{
	struct vanish *v = arg;

	if (resource == NULL && ++v->lists == 2)
		ck_assert_uint_eq(fake_remove(f, "hostB", 77, true), 1);
}

START_TEST(t_deadlock_no_false_cycle)
{
	struct lockmgr_req r = wants(2, 1, 100, false);
	struct vanish v = { 0 };
	struct ans a;
	uint64_t id;

	foreign_cycle_half(1);
	fake_set_hook(fb, FAKE_AT_LIST, hook_vanish, &v);
	id = submit(&r, &a);
	/* the first check saw a cycle (else no second listing) */
	ck_assert_uint_eq(v.lists, 2);
	ck_assert_int_eq(ans_n(&a), 0);
	ck_assert(fake_is_queued(fb, id));
	fake_set_hook(fb, FAKE_AT_LIST, NULL, NULL);
	interrupt_now(id, &a);
}
END_TEST

/* our wait is the older: hostB must fail its own; we look again later
 * (the timer's re-check) and fail then if the cycle is still there */
START_TEST(t_deadlock_recheck)
{
	struct lockmgr_req r = wants(2, 1, 100, false);
	struct ans a;
	int64_t t0;

	foreign_cycle_half(fake_clock(fb) + 1000);
	t0 = dl_mono_ms();
	submit(&r, &a);
	ck_assert_int_eq(ans_n(&a), 0);
	ck_assert(ans_wait(&a, WAIT_MS));
	ck_assert_int_eq(a.err, -EDEADLK);
	ck_assert_int_ge(dl_mono_ms() - t0, 1500);
	ck_assert_uint_eq(fake_nqueued(fb), 0);
}
END_TEST

/*
 * A holder of this host that the backend lists before its grant reached
 * the manager (no hold here yet) is not an edge: B's grant of file3 is
 * decided but not delivered when A's check walks, and B's queued wait for
 * file3 must not be taken for a wait of a holder.
 */
START_TEST(t_deadlock_listed_before_grant)
{
	struct lockmgr_req b3 = wants(3, 2, 200, false);
	struct lockmgr_req b2 = wants(2, 2, 200, false);
	struct lockmgr_req a3 = wants(3, 1, 100, false);
	struct ans ab3, ab2, aa3;
	uint64_t idb3, idb2, ida3;

	hold(2, 1, 100, false);
	fake_set_queue_all(fb, true);
	idb3 = lock_queued(&b3, &ab3);
	fake_set_queue_all(fb, false);
	ck_assert_int_eq(fake_grant_later(fb, idb3), 0);
	idb2 = lock_queued(&b2, &ab2);
	ida3 = lock_queued(&a3, &aa3);
	ck_assert_uint_eq(fake_deliver(fb), 1);
	ck_assert_int_eq(ab3.err, 0);
	interrupt_now(ida3, &aa3);
	interrupt_now(idb2, &ab2);
}
END_TEST

/* as Linux: OFD requests neither are checked nor make edges */
START_TEST(t_deadlock_ofd_excluded)
{
	struct lockmgr_req ra = wants(2, 1, 100, true);
	struct lockmgr_req rb = wants(1, 2, 200, false);
	struct lockmgr_req rc = wants(4, 3, 300, false);
	struct lockmgr_req rd = wants(3, 4, 400, true);
	struct ans a, b, c, d;
	uint64_t ida, idb, idc, idd;
	unsigned nlist;

	/* the OFD wait comes first: the POSIX one does not see it */
	hold(1, 1, 100, true);
	hold(2, 2, 200, false);
	nlist = fake_calls(fb).list;
	ida = lock_queued(&ra, &a);
	ck_assert_uint_eq(fake_calls(fb).list, nlist); /* not checked */
	idb = lock_queued(&rb, &b);
	ck_assert_uint_gt(fake_calls(fb).list, nlist); /* checked */

	/* the OFD wait closes the cycle: not checked */
	hold(3, 3, 300, false);
	hold(4, 4, 400, true);
	idc = lock_queued(&rc, &c);
	nlist = fake_calls(fb).list;
	idd = lock_queued(&rd, &d);
	ck_assert_uint_eq(fake_calls(fb).list, nlist);

	ck_assert_int_eq(ans_n(&a) + ans_n(&b) + ans_n(&c) + ans_n(&d), 0);
	interrupt_now(ida, &a);
	interrupt_now(idb, &b);
	interrupt_now(idc, &c);
	interrupt_now(idd, &d);
}
END_TEST

/* two owners of one process (an OFD lock and its process, as FUSE names
 * them) are not a cycle of processes */
START_TEST(t_deadlock_one_process)
{
	struct lockmgr_req ra = wants(2, 1, 100, false);
	struct lockmgr_req rb = wants(1, 2, 100, false);
	struct ans a, b;
	uint64_t ida, idb;

	hold(1, 1, 100, false);
	hold(2, 2, 100, false);
	ida = lock_queued(&ra, &a);
	idb = lock_queued(&rb, &b);
	ck_assert_int_eq(ans_n(&a) + ans_n(&b), 0);
	interrupt_now(ida, &a);
	interrupt_now(idb, &b);
}
END_TEST

/* ---- the write fence ------------------------------------------------------- */

START_TEST(t_fence_lost_mark)
{
	struct lockmgr_file f, g;
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, false);

	lockmgr_file_init(&f);
	lockmgr_file_init(&g);
	r.file = &f;
	ck_assert_int_eq(lock_now(&r), 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 0), 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 0), 0);

	fake_lose(fb, "file1", DL_SPACE_POSIX, 1, -ECONNABORTED);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 0), -EIO);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 555), -EIO);
	/* another file: fenced only for the process of the lost lock */
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 0), 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 555), 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 100), -EIO);

	/* released: the process may write again; the file stays fenced */
	lockmgr_release_file(lm, 1, &f);
	ASSERT_COUNTS(0, 0, 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 100), 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 0), -EIO);
}
END_TEST

/* an unlock the backend could not confirm (it retries in the background,
 * the range ends at a moment nobody knows): the owner is fenced as after
 * a loss, until it releases */
START_TEST(t_fence_failed_unlock)
{
	struct lockmgr_file f;
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, false);
	struct lockmgr_req part = r;

	lockmgr_file_init(&f);
	r.file = &f;
	ck_assert_int_eq(lock_now(&r), 0);
	part.type = DL_UNLCK;
	part.start = 10;
	part.end = 19;
	fake_set_unlock_error(fb, -ENOLCK);
	ck_assert_int_eq(lockmgr_unlock(lm, &part), -ENOLCK);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 0), -EIO);
	/* the owner must release before it locks the file again */
	ck_assert_int_eq(lock_now(&r), -EIO);
	lockmgr_release_file(lm, 1, &f);
	ASSERT_COUNTS(0, 0, 0);
	ck_assert_int_eq(lock_now(&r), 0);
	lockmgr_release_file(lm, 1, &f); /* f is on this stack */
	ASSERT_COUNTS(0, 0, 0);
}
END_TEST

START_TEST(t_fence_lease)
{
	struct lockmgr_file f, g, h, k;
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, false);
	struct lockmgr_req s = rq(2, 2, 200, DL_WRLCK, false);
	struct lockmgr_req t = rq(5, 5, 500, DL_WRLCK, false);
	int64_t now = dl_mono_ms();

	lockmgr_file_init(&f);
	lockmgr_file_init(&g);
	lockmgr_file_init(&h);
	lockmgr_file_init(&k);
	ck_assert_uint_eq(atomic_load(&lockmgr_lease(lm)->gen), 1);
	r.file = &f;
	ck_assert_int_eq(lock_now(&r), 0);
	t.file = &k;
	ck_assert_int_eq(lock_now(&t), 0);
	ck_assert_uint_eq(atomic_load(&f.lease), 1);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 100), 0);

	/* lease 1 expires by the clock: refused before anyone noticed */
	fake_set_lease(fb, 1, now - 1);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 0), -EIO);
	ck_assert(atomic_load(&f.lost)); /* and marked, for good */
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 0), 0);
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 100), -EIO);
	ck_assert_int_eq(lockmgr_pid_check(lm, 100), -EIO);
	ck_assert_int_eq(lockmgr_pid_check(lm, 999), 0);
	fake_set_lease(fb, 1, INT64_MAX);
	ck_assert_int_eq(lockmgr_write_check(lm, &f, 0), -EIO);
	ck_assert_int_eq(lockmgr_pid_check(lm, 100), 0);

	/* lease 1 replaced by lease 2: its grants are untrusted, lease 2's
	 * are fine */
	fake_set_lease(fb, 2, INT64_MAX);
	ck_assert_int_eq(lockmgr_write_check(lm, &k, 0), -EIO);
	ck_assert_int_eq(lockmgr_pid_check(lm, 500), 0); /* nothing lost */
	s.file = &h;
	ck_assert_int_eq(lock_now(&s), 0);
	ck_assert_uint_eq(atomic_load(&h.lease), 2);
	ck_assert_int_eq(lockmgr_write_check(lm, &h, 200), 0);
	r.file = &g;
	lockmgr_release_owner(lm, 1, DL_SPACE_POSIX, 1);
	ck_assert_int_eq(lock_now(&r), 0); /* owner 1 again, lease 2 */
	ck_assert_int_eq(lockmgr_write_check(lm, &g, 100), 0);
}
END_TEST

#define FENCE_ROUNDS 20000

struct fence_reader {
	struct lockmgr_file *_Atomic f; /* the file being locked now */
	atomic_bool stop;
	unsigned refused;
	unsigned long checks;
};

static void *fence_reader_main(void *arg)
{
	struct fence_reader *r = arg;

	while (!atomic_load(&r->stop)) {
		if (lockmgr_write_check(lm, atomic_load(&r->f), 0) < 0)
			r->refused++;
		r->checks++;
	}
	return NULL;
}

/*
 * The first lock through a file, while another thread writes through it:
 * the writer must never see the file held before the lease of its lock is
 * stored (it would judge the lock by lease 0, refuse, and fence the file
 * for good).  The lease never changes here, so every refusal is wrong.
 * (A wrong publication order is caught with some probability per round;
 * a right one never fails.)
 */
START_TEST(t_fence_first_grant)
{
	struct lockmgr_file *files = calloc(FENCE_ROUNDS, sizeof(*files));
	struct fence_reader rd = { .refused = 0 };
	pthread_t t;

	ck_assert_ptr_nonnull(files);
	for (int i = 0; i < FENCE_ROUNDS; i++)
		lockmgr_file_init(&files[i]);
	atomic_init(&rd.f, &files[0]);
	atomic_init(&rd.stop, false);
	pthread_create(&t, NULL, fence_reader_main, &rd);
	for (int i = 0; i < FENCE_ROUNDS; i++) {
		struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, false);

		r.file = &files[i];
		atomic_store(&rd.f, &files[i]);
		ck_assert_int_eq(lock_now(&r), 0);
		ck_assert_int_eq(lockmgr_unlock(lm, &r), 0);
	}
	atomic_store(&rd.stop, true);
	pthread_join(t, NULL);
	ck_assert_msg(rd.refused == 0, "%u of %lu writes refused", rd.refused,
		      rd.checks);
	for (int i = 0; i < FENCE_ROUNDS; i++)
		ck_assert(!atomic_load(&files[i].lost));
	free(files);
}
END_TEST

/* ---- what the manager shows --------------------------------------------------- */

START_TEST(t_owner_shown)
{
	/* SipHash-2-4 reference vector: key 00..0f, message 00..07 */
	const uint64_t key[2] = { 0x0706050403020100ULL,
				  0x0f0e0d0c0b0a0908ULL };
	uint64_t a = lockmgr_owner_shown(lm, 1), b = lockmgr_owner_shown(lm, 2);

	ck_assert_uint_eq(lm_siphash24(key, 0x0706050403020100ULL),
			  0x93f5f5799a932462ULL);
	ck_assert_uint_eq(lockmgr_owner_shown(lm, 1), a);
	ck_assert_uint_ne(a, b);
	ck_assert_uint_ne(a, 1);
}
END_TEST

START_TEST(t_describe)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, false);
	struct fake_lock w = {
		.resource = "file1",
		.host = "hostB",
		.owner = 9,
		.pid = 900,
		.space = DL_SPACE_FLOCK,
		.type = DL_RDLCK,
		.start = 0,
		.end = EOF_,
		.waiting = true,
	};
	char want[128], *text = NULL;
	uint64_t token = 0;

	ck_assert_int_eq(lock_now(&r), 0);
	fake_add(fb, &w);
	snprintf(want, sizeof(want),
		 "posix exclusive 0-EOF host=hostA pid=100 owner=%016" PRIx64
		 " token=%" PRIu64 " since=1970-01-01T00:16:40.000Z\n",
		 lockmgr_owner_shown(lm, 1), fake_max_token(fb, "file1", 1));
	ck_assert_int_eq(lockmgr_describe(lm, 1, false, &text), 0);
	ck_assert_str_eq(text, want);
	free(text);
	ck_assert(describe_has(1, true,
			       "flock shared 0-EOF host=hostB "
			       "pid=900"));
	ck_assert(!describe_has(1, true, "hostA"));

	ck_assert_int_eq(lockmgr_token(lm, 1, 100, &token), 0);
	ck_assert_uint_eq(token, fake_max_token(fb, "file1", 1));
	ck_assert_int_eq(lockmgr_token(lm, 1, 999, &token), -ENODATA);
	ck_assert(lockmgr_shared(lm));
}
END_TEST

static void hook_release_seen(struct fake_backend *f, enum fake_point at,
			      const char *resource, uint64_t wait_id, void *arg)
{
	(*(unsigned *)arg)++;
}

/* destroy ends every wait with ENOLCK and releases every lock */
START_TEST(t_destroy)
{
	struct lockmgr_req r = rq(1, 1, 100, DL_WRLCK, false);
	struct lockmgr_req q = rq(1, 2, 200, DL_WRLCK, true);
	unsigned releases = 0;
	struct ans a;

	ck_assert_int_eq(lock_now(&r), 0);
	lock_queued(&q, &a);
	fake_set_hook(fb, FAKE_AT_RELEASE, hook_release_seen, &releases);
	lockmgr_destroy(lm);
	lm = NULL;
	ck_assert_int_eq(ans_n(&a), 1);
	ck_assert_int_eq(a.err, -ENOLCK);
	ck_assert_uint_eq(releases, 1);
	ck_assert_ptr_null(fake_last()); /* closed */
}
END_TEST

/* ---- the suite ------------------------------------------------------------- */

static Suite *lockmgr_suite(void)
{
	Suite *s = suite_create("lockmgr");
	TCase *tc = tcase_create("core");
	TCase *tt = tcase_create("lock_timeout");
	TCase *td = tcase_create("deadlock_delay");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, t_lifecycle);
	tcase_add_test(tc, t_lost_before_regrant);
	tcase_add_test(tc, t_lost_then_queued_grant);
	tcase_add_test(tc, t_cancel_interrupt_wins);
	tcase_add_test(tc, t_cancel_grant_wins);
	tcase_add_test(tc, t_cancel_grant_in_flight);
	tcase_add_test(tc, t_interrupt_during_submit);
	tcase_add_test(tc, t_grant_during_submit);
	tcase_add_test(tc, t_cancel_race_threads);
	tcase_add_test(tc, t_release_token_named);
	tcase_add_test(tc, t_unlock_keeps_newer_grant);
	tcase_add_test(tc, t_release_file);
	tcase_add_test(tc, t_deadlock_two);
	tcase_add_test(tc, t_deadlock_three);
	tcase_add_test(tc, t_deadlock_cross_host);
	tcase_add_test(tc, t_deadlock_no_false_cycle);
	tcase_add_test(tc, t_deadlock_recheck);
	tcase_add_test(tc, t_deadlock_listed_before_grant);
	tcase_add_test(tc, t_deadlock_ofd_excluded);
	tcase_add_test(tc, t_deadlock_one_process);
	tcase_add_test(tc, t_fence_lost_mark);
	tcase_add_test(tc, t_fence_failed_unlock);
	tcase_add_test(tc, t_fence_lease);
	tcase_add_test(tc, t_fence_first_grant);
	tcase_add_test(tc, t_owner_shown);
	tcase_add_test(tc, t_describe);
	tcase_add_test(tc, t_destroy);
	suite_add_tcase(s, tc);

	tcase_add_checked_fixture(td, setup_delayed, teardown);
	tcase_set_timeout(td, 60);
	tcase_add_test(td, t_deadlock_delayed);
	tcase_add_test(td, t_deadlock_delay_no_listing);
	suite_add_tcase(s, td);

	tcase_add_checked_fixture(tt, setup_timeout, teardown);
	tcase_set_timeout(tt, 60);
	tcase_add_test(tt, t_lock_timeout);
	suite_add_tcase(s, tt);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(lockmgr_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/*
 * be_harness.h - what the drivers that test a backend through backend.h
 * share (redis/redis_be.c, redis/redis_scale.c, pg/pg_be.c, zk/zk_poke.c,
 * zk/zk_version.c).
 *
 * A "host" is one open backend: its lease storage and a recorder of its
 * callbacks (grants and failures by wait id, lost locks, revokes).  The
 * harness opens and closes hosts, waits for what they record, reads and
 * bumps versions, and reports: "FAIL CASE: why" and exit 1, or "ok CASE".
 * It knows no backend, server or scenario: each driver builds its URI,
 * arms its backend's fault points and plays the server's side itself.
 *
 * Every wait is bounded and is a condition wait on the monotonic clock;
 * "nothing more comes" is checked over a quiet period (be_quiet_ms).
 *
 * Locking: a host's mutex guards what its callbacks record (ev, nev,
 * nlost, lost_err, revoked, nrevoked); cond is broadcast on each record.
 * No other mutex is taken with it, and none is held across a backend call.
 */
#ifndef BE_HARNESS_H
#define BE_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

#define BE_BOUND_MS    8000	  /* every awaited event */
#define BE_MAX_EVENTS  64	  /* grants and failures kept per host */
#define BE_MAX_REVOKES 64	  /* revoked resources kept per host */
#define BE_ANY_WAIT    UINT64_MAX /* be_events(): every wait id */

/* a cb->granted or cb->failed */
struct be_event {
	uint64_t wait_id;
	int kind; /* 'g' granted, 'f' failed; 0: none came */
	struct dl_grant grant;
	int err;
};

struct be_host {
	const char *name; /* its host id */
	struct dl_backend *be;
	struct dl_lease lease;
	pthread_mutex_t mutex;
	pthread_cond_t cond;		   /* CLOCK_MONOTONIC */
	struct be_event ev[BE_MAX_EVENTS]; /* in order; later ones dropped */
	int nev;
	int nlost;
	int lost_err; /* of the last lost lock */
	/* cb->revoke's resources, in order (NULL: no memory for the copy);
	 * nrevoked counts every revoke, also those past BE_MAX_REVOKES */
	char *revoked[BE_MAX_REVOKES];
	int nrevoked;
};

/* how a host opens: all that is the driver's, not the harness's */
struct be_open {
	const char *uri;
	uint64_t incarnation;
	/* the backend's test-only fault points: @fault_var is set to
	 * @fault while the backend opens (it reads them then); NULL: none */
	const char *fault_var;
	const char *fault;
	/* callbacks of the driver's own, called with ctx = the host;
	 * NULL: the harness's recorder */
	const struct dl_backend_cb *cb;
};

/* the scenario or case that runs, for the FAIL and ok lines ("setup") */
extern const char *be_case;
/* how long "nothing more comes" is watched, in ms (1000) */
extern int be_quiet_ms;

/* prints "FAIL CASE: why" and exits 1, from any thread */
void be_fail(const char *fmt, ...)
	__attribute__((format(printf, 1, 2), noreturn));
/* prints "ok CASE" */
void be_ok(void);

/* @res, printable in a message (odd bytes as \xNN, long names cut) */
const char *be_shown(const char *res, char *buf, size_t len);

/*
 * be_host_try_open() - open host @name as @o says into @h (all of it
 * reset); 0, or the backend's error with a reason in @err (@h then needs
 * no close).
 * be_host_open() - the same; an error fails the test ("open NAME: why").
 * be_host_close() - close the backend and forget what was recorded.
 */
int be_host_try_open(struct be_host *h, const char *name,
		     const struct be_open *o, char *err, size_t errlen);
void be_host_open(struct be_host *h, const char *name, const struct be_open *o);
void be_host_close(struct be_host *h);

/* the number of @h's callbacks for @wait_id (BE_ANY_WAIT: every one) of
 * kind @kind ('g', 'f'; 0: either) */
int be_events(struct be_host *h, uint64_t wait_id, int kind);
/* the first callback for @wait_id, once there is one or after @ms (kind 0:
 * none came) */
struct be_event be_await_event(struct be_host *h, uint64_t wait_id, int64_t ms);
/* the number of callbacks for @wait_id after a quiet period */
int be_quiet_count(struct be_host *h, uint64_t wait_id);
/* exactly one callback for @wait_id within the bound, and none more over a
 * quiet period: returns it; otherwise fails, saying @what */
struct be_event be_expect_one(struct be_host *h, uint64_t wait_id,
			      const char *what);
/* no callback for @wait_id (cancel returned 0) over a quiet period */
void be_expect_none(struct be_host *h, uint64_t wait_id, const char *what);

/* whether @h has had @n lost locks within @ms */
bool be_wait_lost(struct be_host *h, int n, int64_t ms);
/* @h's lost locks so far; *@err (may be NULL) the last one's error */
int be_nlost(struct be_host *h, int *err);

/* the number of revokes @h has had once it has @n, or after @ms */
int be_wait_revoked(struct be_host *h, int n, int64_t ms);
int be_nrevoked(struct be_host *h);
/* the resource of @h's revoke @i (from 0), NULL: none (yet), or not kept */
const char *be_revoked(struct be_host *h, int i);

/* the backend's jobs left to retry, from its status line ("retrying=") */
size_t be_retrying(struct be_host *h);

/* @h reads / bumps @res's version; an error fails the test */
struct dl_version be_version(struct be_host *h, const char *res);
struct dl_version be_bump(struct be_host *h, const char *res);
/*
 * @a bumps @res, never bumped, twice: versions 1 and 2, by @a, at the
 * server's clock (this machine's: within 2 s of ours), in order; @b then
 * reads the second.  Returns it.
 */
struct dl_version be_two_bumps(struct be_host *a, struct be_host *b,
			       const char *res);
/*
 * @a and @b bump @res, at 0, at once, from @threads threads each, @bumps
 * times per thread: every bump answers 0 with its own host, a version of
 * its own in 1..N (N the number of bumps) that grows within a thread; @a
 * then reads N, by the host that got it, at the server's clock.  Prints
 * the time it took.  Returns the name of the host that got N.
 */
const char *be_bump_race(struct be_host *a, struct be_host *b, const char *res,
			 int threads, int bumps);

#endif /* BE_HARNESS_H */

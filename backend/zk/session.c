/*
 * session.c - ZooKeeper sessions and what hangs on them: the lease, the
 * lease thread, lock-delay and the liveness nodes behind it, and giving a
 * session up.
 *
 * Sessions.  The session is the lease.  A heartbeat (async exists every
 * timeout/5, from the lease thread) records when the server last answered
 * a request we sent at time t; held locks are trusted until t + timeout -
 * margin (the first connection counts from its answer: the margin covers
 * its latency).  conf->lease publishes it: gen = the session's generation
 * (grants report it), until_ms = that deadline; on an expiry event or an
 * abandonment gen first moves to a number no session has, and until_ms to
 * 0, before anything else is done.  Past the deadline, or on ZOO_EXPIRED_
 * SESSION_STATE, the session is abandoned (zk_abandon): cb->lost for every
 * held (resource, space, owner), cb->failed(-ENOLCK) for every wait, the
 * handle is closed (ephemeral nodes go) and the worker starts a fresh
 * session for new requests.  While the connection is down (session maybe
 * alive) new requests wait at most min(timeout, 5 s) (zk_connect_wait) and
 * then fail with -ENOLCK; unlocks never wait (ops.c).
 *
 * Lock-delay.  A lock freed by the end of its session (expiry, or a
 * daemon giving its session up) stays unavailable for lock_delay_ms; a
 * clean release hands over at once.  Each session first creates its
 * liveness node CHROOT/s/SESSIONID (zk_register); ZooKeeper deletes a
 * session's ephemeral nodes, this one included, in the one transaction
 * that ends it, while a releasing owner deletes its request node during
 * its session.  So a waiter whose watched blocker (whose session it read
 * from the node's ephemeralOwner) is gone checks CHROOT/s/SESSIONID
 * (zk_check_freed): still there, a release; gone too, an expiry, and the
 * waiter waits lock_delay_ms before it takes the lock - its own node is
 * first in the queue, so every other request, on any host, waits too.
 * The delay is the waiter's daemon's lock_delay_ms (give every host the
 * same).  A lock freed by an expiry while nobody waited for it is free at
 * once (nobody saw it go).
 *
 * Owns: struct zk_sess and its reference count, zb->sess/state/
 * negotiated_ms/last_ok_ms/hb_gen/hb_sent_ms/need_session/expired_pending/
 * connected_pending/gen_counter/sessions_lost, conf->lease, the liveness
 * nodes, zk_abandon, the lease thread, the test hooks' helpers.  Does
 * not: decide grants (grant.c), re-evaluate the waiters a lock-delay ends
 * (worker.c: wake_at), nor restart a session itself (the worker calls
 * zk_session_start once zk_abandon asked for it with need_session).
 *
 * Locking.
 *  - zk_global_watcher runs on the library's completion thread: it asks
 *    the library for the negotiated timeout first, then takes zb->mutex,
 *    records the state, revokes the lease of an expired session and flags
 *    the worker (expired_pending, connected_pending); nothing else.
 *    zk_hb_done, the heartbeat's completion, likewise: it only moves
 *    last_ok_ms and republishes the lease.
 *  - zk_lease_*_locked, zk_sess_connected: zb->mutex held.  The lease is
 *    written only under zb->mutex (so gen and until_ms of one session are
 *    never interleaved with another's) and read without it.
 *  - A session's reference is taken under zb->mutex (zk_sess_get, or
 *    refs++ where the current session is read); zk_sess_put drops it and
 *    closes the handle when it was the last, with the mutex dropped, since
 *    zookeeper_close() waits for the completion thread, which may be
 *    waiting for zb->mutex.  The backend's own reference is dropped by
 *    zk_abandon (or zk_close).
 *  - zk_abandon runs on the worker (expiry) or the lease thread (lease
 *    ran out), never on the completion thread (it closes the handle); it
 *    unlinks everything under the mutex - an owner whose busy flag is held
 *    is only marked stale, a busy waiter is left to the worker, which
 *    finds its session gone - and reports with the mutex dropped, without
 *    allocating (the report lists run through the entries themselves).
 *  - zk_register and zk_check_freed make sync calls: worker (or open,
 *    before the worker exists), holding a session reference, no mutex;
 *    s->registered and the waiter's blk_* and delay_until fields belong
 *    to that thread (the waiter's busy flag).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/util/log.h"
#include "backend/zk/internal.h"

#define ZK_CONNECT_WAIT_MAX_MS 5000 /* bound of a new request's wait */
#define ZK_LOG_LIMIT_MS	       5000 /* the library's messages: one per 5 s */

/* ---- small helpers --------------------------------------------------- */

/* a test hook's value: 0 (inert) unless the variable is set */
int zk_test_env(const char *name)
{
	const char *v = getenv(name);

	return v ? atoi(v) : 0;
}

/* the test hooks' pause (no mutex held); nothing when @ms <= 0 */
void zk_test_sleep(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (ms % 1000) * 1000000L };

	if (ms > 0)
		nanosleep(&ts, NULL);
}

/* mutex held: wait on zb->cond until @deadline (CLOCK_MONOTONIC ms) */
void zk_cond_wait_until(struct zk_backend *zb, int64_t deadline)
{
	struct timespec ts = { .tv_sec = deadline / 1000,
			       .tv_nsec = (deadline % 1000) * 1000000 };

	pthread_cond_timedwait(&zb->cond, &zb->mutex, &ts);
}

/* ---- the lease (backend.h's struct dl_lease) ------------------------- */

/*
 * mutex held: the trusted-until deadline of the current session, by the
 * same arithmetic the lease thread uses to give the session up.
 */
static int64_t zk_lease_deadline_locked(const struct zk_backend *zb)
{
	int to = zb->negotiated_ms ? zb->negotiated_ms : zb->timeout_ms;
	int64_t margin = to / 8 > 100 ? to / 8 : 100;

	return zb->last_ok_ms + to - margin;
}

/*
 * mutex held: publish the lease of session @s (the current, connected
 * one): gen first, then the deadline.  Grants of @s carry s->gen.
 */
static void zk_lease_publish_locked(struct zk_backend *zb,
				    const struct zk_sess *s)
{
	if (zb->sess != s || !zb->last_ok_ms)
		return;
	if (atomic_load(&zb->lfence->gen) != s->gen)
		atomic_store(&zb->lfence->gen, (uint64_t)s->gen);
	atomic_store(&zb->lfence->until_ms, zk_lease_deadline_locked(zb));
}

/*
 * mutex held: session @gen is given up or gone: a fresh lease number
 * (never a session's) first, so its grants can never look trusted again,
 * then "nothing trusted" until the next session publishes its own.
 */
static void zk_lease_revoke_locked(struct zk_backend *zb, unsigned gen)
{
	if (atomic_load(&zb->lfence->gen) == gen)
		atomic_store(&zb->lfence->gen, (uint64_t)++zb->gen_counter);
	atomic_store(&zb->lfence->until_ms, 0);
}

/* ---- sessions -------------------------------------------------------- */

/*
 * The library logs every failed connection attempt, several per second
 * and per server while a server is down: one line per ZK_LOG_LIMIT_MS, with
 * the count of the dropped ones.
 */
static void zk_log_cb(const char *msg)
{
	size_t l = strlen(msg);

	while (l && (msg[l - 1] == '\n' || msg[l - 1] == '\r'))
		l--;
	dl_log_ratelimited(DL_LOG_WARNING, ZK_LOG_LIMIT_MS, "zookeeper: %.*s",
			   (int)l, msg);
}

/* mutex held: session @s (current) is connected; s->recv_ms is set */
static void zk_sess_connected(struct zk_backend *zb, struct zk_sess *s)
{
	zb->negotiated_ms = s->recv_ms;
	if (zb->state != ZOO_CONNECTED_STATE)
		zb->connected_pending = true;
	if (zb->last_ok_ms == 0)
		zb->last_ok_ms = dl_mono_ms();
	zk_lease_publish_locked(zb, s);
}

/* the session watcher: the completion thread, records and signals only */
static void zk_global_watcher(zhandle_t *zh, int type, int state,
			      const char *path, void *ctx)
{
	struct zk_sess *s = ctx;
	struct zk_backend *zb;
	int recv_ms;

	(void)path;
	if (type != ZOO_SESSION_EVENT || !s)
		return;
	zb = s->zb;
	/* a library call: before our mutex (valid once connected) */
	recv_ms = state == ZOO_CONNECTED_STATE ? zoo_recv_timeout(zh) : 0;
	pthread_mutex_lock(&zb->mutex);
	s->state = state;
	if (state == ZOO_CONNECTED_STATE)
		s->recv_ms = recv_ms;
	if (zb->sess != s) {
		pthread_mutex_unlock(&zb->mutex);
		return; /* abandoned, or not yet published (session_start) */
	}
	if (state == ZOO_CONNECTED_STATE) {
		zk_sess_connected(zb, s);
	} else if (state == ZOO_EXPIRED_SESSION_STATE ||
		   state == ZOO_AUTH_FAILED_STATE) {
		/* the server already let our locks go: stop trusting them
		 * now, not when the worker gets to zk_abandon() */
		zk_lease_revoke_locked(zb, s->gen);
		zb->expired_pending = true;
	}
	zb->state = state;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
}

/* start a new session (worker or open); 0 or -ENOMEM/-EINVAL */
int zk_session_start(struct zk_backend *zb)
{
	struct zk_sess *s = calloc(1, sizeof(*s));
	int timeout;

	if (!s)
		return -ENOMEM;
	s->zb = zb;
	pthread_mutex_lock(&zb->mutex);
	s->gen = ++zb->gen_counter;
	s->state = ZOO_CONNECTING_STATE;
	timeout = zb->timeout_ms;
	pthread_mutex_unlock(&zb->mutex);
	s->refs = 1; /* the backend's reference: dropped when abandoned */
	s->zh = zookeeper_init2(zb->hosts, zk_global_watcher, timeout, NULL, s,
				0, zk_log_cb);
	if (!s->zh) {
		int err = errno ? -errno : -EINVAL;

		free(s);
		return err;
	}
	if (zb->auth)
		zoo_add_auth(s->zh, "digest", zb->auth, (int)strlen(zb->auth),
			     NULL, NULL);
	pthread_mutex_lock(&zb->mutex);
	zb->sess = s;
	zb->state = ZOO_CONNECTING_STATE;
	zb->last_ok_ms = 0;
	zb->need_session = false;
	/* the watcher may have seen the connection before zb->sess was set */
	if (s->state == ZOO_CONNECTED_STATE)
		zk_sess_connected(zb, s);
	else if (s->state == ZOO_EXPIRED_SESSION_STATE ||
		 s->state == ZOO_AUTH_FAILED_STATE)
		zb->expired_pending = true;
	zb->state = s->state;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

/* drop a reference; the last one of a dead session closes it */
void zk_sess_put(struct zk_backend *zb, struct zk_sess *s)
{
	bool close_it;

	pthread_mutex_lock(&zb->mutex);
	close_it = --s->refs == 0;
	pthread_mutex_unlock(&zb->mutex);
	if (close_it) {
		zookeeper_close(s->zh);
		zk_held_arms_free(s);
		free(s);
	}
}

/*
 * The current session once connected, waiting at most @wait_ms; a
 * reference the caller drops with zk_sess_put().  -ENOLCK when none.
 */
int zk_sess_get(struct zk_backend *zb, int64_t wait_ms, struct zk_sess **out)
{
	int64_t deadline = dl_mono_ms() + wait_ms;

	pthread_mutex_lock(&zb->mutex);
	while (!zb->stopping &&
	       (!zb->sess || zb->state != ZOO_CONNECTED_STATE)) {
		if (dl_mono_ms() >= deadline) {
			pthread_mutex_unlock(&zb->mutex);
			return -ENOLCK;
		}
		zk_cond_wait_until(zb, deadline);
	}
	if (zb->stopping) {
		pthread_mutex_unlock(&zb->mutex);
		return -ENOLCK;
	}
	zb->sess->refs++;
	*out = zb->sess;
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

/* how long a new request waits for a connection */
int64_t zk_connect_wait(struct zk_backend *zb)
{
	return zb->timeout_ms < ZK_CONNECT_WAIT_MAX_MS ? zb->timeout_ms
						       : ZK_CONNECT_WAIT_MAX_MS;
}

/* ---- liveness nodes and lock-delay ----------------------------------- */

/* the path of session @sid's liveness node */
static void zk_sess_path(const struct zk_backend *zb, int64_t sid, char *buf,
			 size_t len)
{
	snprintf(buf, len, "%s/s/%016" PRIx64, zb->root, (uint64_t)sid);
}

/*
 * Create session @s's liveness node, CHROOT/s/SESSIONID (ephemeral), that
 * tells the waiters of other hosts a release from an expiry (see
 * zk_check_freed).  Until it exists, a release of ours looks like an
 * expiry and costs the next holder lock_delay_ms: slower, never unsafe.
 */
void zk_register(struct zk_backend *zb, struct zk_sess *s)
{
	const clientid_t *cid = zoo_client_id(s->zh);
	char path[ZK_ROOT_MAX + 32];
	int rc;

	if (s->registered || !cid || !cid->client_id)
		return;
	zk_sess_path(zb, cid->client_id, path, sizeof(path));
	rc = zoo_create(s->zh, path, NULL, -1, zb->acl, ZOO_EPHEMERAL, NULL, 0);
	if (rc == ZNONODE) {
		char parent[ZK_ROOT_MAX + 4];

		snprintf(parent, sizeof(parent), "%s/s", zb->root);
		rc = zk_make_path(zb, s->zh, parent);
		if (rc == ZOK)
			rc = zoo_create(s->zh, path, NULL, -1, zb->acl,
					ZOO_EPHEMERAL, NULL, 0);
	}
	if (rc == ZOK || rc == ZNODEEXISTS)
		s->registered = true;
	else
		dl_log(DL_LOG_WARNING, "zk: create %s: %s; will retry", path,
		       zerror(rc));
}

/*
 * Lock-delay.  The blocker @w last watched is gone: was it released, or
 * freed by the end of its session?  A session's liveness node (see
 * zk_register) and its ephemeral request nodes go in one transaction when
 * it ends, and a releasing owner deletes its node while its session
 * lives; so a blocker that is gone while its session's node is gone too
 * was freed by an expiry (or the session's close), and @w waits
 * lock_delay_ms from now before it takes the lock.  Its own node stays
 * first in the queue meanwhile, so everybody else waits too.  Busy held.
 */
void zk_check_freed(struct zk_backend *zb, struct zk_sess *s,
		    struct zk_waiter *w)
{
	char path[ZK_ROOT_MAX + 32];
	struct Stat st;
	int rc;

	if (!w->blk_path[0] || !zb->lock_delay_ms || w->delay_until)
		return;
	rc = zoo_exists(s->zh, w->blk_path, 0, &st);
	if (rc != ZNONODE)
		return; /* still there, or we cannot tell yet */
	zk_sess_path(zb, w->blk_sid, path, sizeof(path));
	rc = zoo_exists(s->zh, path, 0, &st);
	if (rc == ZNONODE) {
		w->delay_until = dl_mono_ms() + zb->lock_delay_ms;
		dl_log(DL_LOG_NOTICE,
		       "zk: %s was freed by the end of session 0x%" PRIx64
		       ", not released: wait %" PRIu64 " lock-delay %d ms "
		       "before taking it",
		       w->blk_path, (uint64_t)w->blk_sid, w->wait_id,
		       zb->lock_delay_ms);
	}
	w->blk_path[0] = '\0';
}

/* ---- abandoning a session -------------------------------------------- */

/*
 * Give up session @gen (expired, or its lease ran out): every lock of it
 * is lost, every wait fails, the handle is closed and the worker starts a
 * new session.  Not on the ZooKeeper completion thread.
 */
void zk_abandon(struct zk_backend *zb, unsigned gen, const char *why)
{
	/* reported after the mutex is dropped; linked through the entries
	 * themselves, so that no report is lost to an allocation failure */
	struct zk_owner *lost = NULL;
	struct zk_waiter *failed = NULL;
	size_t nlost = 0, nfailed = 0;
	struct zk_waiter **wp;
	struct zk_sess *old;

	zk_test_sleep(zb->test_abandon_delay_ms);
	pthread_mutex_lock(&zb->mutex);
	old = zb->sess;
	if (!old || old->gen != gen) {
		pthread_mutex_unlock(&zb->mutex);
		return;
	}
	/* before anything else: no write may trust this session again */
	zk_lease_revoke_locked(zb, gen);
	old->dead = true;
	zb->sess = NULL;
	zb->state = ZOO_NOTCONNECTED_STATE;
	zb->need_session = true;
	zb->sessions_lost++;
	for (size_t b = 0; b < ZK_BUCKETS; b++) {
		for (struct zk_owner *ow = zb->owners[b], *next; ow;
		     ow = next) {
			bool holds = false;

			next = ow->next;
			for (struct zk_node *n = ow->nodes; n; n = n->next)
				if (n->gen == gen && n->ranges.n)
					holds = true;
			if (holds && !ow->lost_queued) {
				ow->lost_queued = true;
				ow->refs++;
				ow->lost_next = lost;
				lost = ow;
				nlost++;
			}
			if (ow->busy) {
				ow->stale = true;
			} else {
				zk_owner_purge(ow, 0);
				ow->refs++;
				zk_owner_put_locked(zb, ow);
			}
		}
	}
	for (wp = &zb->waiters; *wp;) {
		struct zk_waiter *w = *wp;

		if (w->busy) { /* the worker finds the session gone */
			wp = &w->next;
			continue;
		}
		*wp = w->next;
		zb->nwaiters--;
		zk_owner_put_locked(zb, w->ow);
		zk_node_free(w->node);
		w->ow = NULL;
		w->node = NULL;
		w->next = failed;
		failed = w;
		nfailed++;
	}
	while (zb->orphans) {
		struct zk_orphan *o = zb->orphans;

		zb->orphans = o->next;
		free(o);
	}
	/* closing the session deletes its ephemeral nodes */
	while (zb->cancelled) {
		struct zk_node *n = zb->cancelled;

		zb->cancelled = n->next;
		zk_node_free(n);
	}
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);

	dl_log(DL_LOG_WARNING,
	       "zk: session %u %s: %zu lock(s) lost, %zu "
	       "wait(s) failed; starting a new session",
	       gen, why, nlost, nfailed);
	for (struct zk_owner *ow = lost; ow; ow = ow->lost_next)
		zb->cb.lost(zb->cb.ctx, ow->resource, ow->space, ow->owner,
			    -ENOLCK);
	while (failed) {
		struct zk_waiter *w = failed;

		failed = w->next;
		zb->cb.failed(zb->cb.ctx, w->wait_id, -ENOLCK);
		free(w);
	}
	pthread_mutex_lock(&zb->mutex);
	while (lost) {
		struct zk_owner *ow = lost;

		lost = ow->lost_next;
		ow->lost_queued = false;
		zk_owner_put_locked(zb, ow);
	}
	pthread_mutex_unlock(&zb->mutex);
	zk_sess_put(zb, old);
}

/* ---- the lease thread ------------------------------------------------ */

/* a heartbeat in flight (at most one per session: zb->hb_gen) */
struct zk_hb {
	struct zk_backend *zb;
	unsigned gen;
	int64_t sent;
};

/* a heartbeat's answer: the completion thread (ZCLOSING when its handle
 * closes first); records and signals only */
static void zk_hb_done(int rc, const struct Stat *stat, const void *data)
{
	const struct zk_hb *hb = data;
	struct zk_backend *zb = hb->zb;

	(void)stat;
	pthread_mutex_lock(&zb->mutex);
	if (zb->hb_gen == hb->gen)
		zb->hb_gen = 0;
	if (zb->sess && zb->sess->gen == hb->gen &&
	    (rc == ZOK || rc == ZNONODE) && hb->sent > zb->last_ok_ms) {
		zb->last_ok_ms = hb->sent;
		zk_lease_publish_locked(zb, zb->sess);
	}
	pthread_mutex_unlock(&zb->mutex);
	free((void *)hb);
}

/* do we hold or wait for anything in session @gen? (mutex held) */
static bool zk_has_state(struct zk_backend *zb, unsigned gen)
{
	if (zb->nwaiters)
		return true;
	for (size_t b = 0; b < ZK_BUCKETS; b++)
		for (struct zk_owner *ow = zb->owners[b]; ow; ow = ow->next)
			for (struct zk_node *n = ow->nodes; n; n = n->next)
				if (n->gen == gen && n->ranges.n)
					return true;
	return false;
}

/*
 * Lease thread: renew (heartbeat) and, when the server has not answered
 * for timeout - margin, give the session up before the server can hand
 * our locks to somebody else.
 */
void *zk_lease_main(void *arg)
{
	struct zk_backend *zb = arg;

	pthread_mutex_lock(&zb->mutex);
	while (!zb->stopping) {
		int64_t now = dl_mono_ms(), period, deadline, next;
		int to = zb->negotiated_ms ? zb->negotiated_ms : zb->timeout_ms;

		period = to / 5 > 20 ? to / 5 : 20;
		deadline = zk_lease_deadline_locked(zb);
		if (zb->sess && zb->last_ok_ms && now >= deadline &&
		    zk_has_state(zb, zb->sess->gen)) {
			unsigned gen = zb->sess->gen;

			pthread_mutex_unlock(&zb->mutex);
			zk_abandon(zb, gen,
				   "lease ran out (no answer from "
				   "the server for the session timeout)");
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		/* one heartbeat a period (not at every wake-up: the
		 * condition is broadcast for much else), and at once when the
		 * last answer is a period old (back from a disconnection; a
		 * new session starts its lease at its connection); one left
		 * unanswered by a session that ended (its completion may
		 * never run) does not hold up the next */
		if (zb->sess && zb->state == ZOO_CONNECTED_STATE &&
		    zb->hb_gen != zb->sess->gen &&
		    (now - zb->hb_sent_ms >= period ||
		     now - zb->last_ok_ms >= period)) {
			struct zk_hb *hb = malloc(sizeof(*hb));
			struct zk_sess *s = zb->sess;

			if (hb) {
				*hb = (struct zk_hb){ zb, s->gen, now };
				zb->hb_gen = s->gen;
				zb->hb_sent_ms = now;
				s->refs++;
				pthread_mutex_unlock(&zb->mutex);
				if (zoo_aexists(s->zh, "/", 0, zk_hb_done,
						hb) != ZOK) {
					free(hb);
					pthread_mutex_lock(&zb->mutex);
					if (zb->hb_gen == s->gen)
						zb->hb_gen = 0;
					pthread_mutex_unlock(&zb->mutex);
				}
				zk_sess_put(zb, s);
				if (zb->test_hb_pause_ms > 0) {
					dl_log(DL_LOG_WARNING,
					       "zk: test hook: heartbeat sent, "
					       "pausing %d ms",
					       zb->test_hb_pause_ms);
					zk_test_sleep(zb->test_hb_pause_ms);
				}
				pthread_mutex_lock(&zb->mutex);
			}
		}
		/* the mutex was dropped for the heartbeat: zk_close's stop
		 * may have been broadcast meanwhile, to nobody waiting, and
		 * would otherwise be seen only a period later (timeout / 5:
		 * 12 s for a 60 s session, the daemon's exit held up as long) */
		if (zb->stopping)
			break;
		next = zb->hb_sent_ms + period > now ? zb->hb_sent_ms + period
						     : now + period;
		if (zb->last_ok_ms && zb->sess && deadline > now &&
		    deadline < next)
			next = deadline;
		zk_cond_wait_until(zb, next);
	}
	pthread_mutex_unlock(&zb->mutex);
	return NULL;
}

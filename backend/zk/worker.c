/*
 * worker.c - the worker thread and what it serves: queued requests
 * (waiters), the watches that wake them, the watches on our granted nodes
 * (breaks), and the work a reconnection leaves.
 *
 * Waiting.  A blocked node watches only its nearest earlier blocker
 * (zoo_wget: data change or deletion both fire); the watch event kicks the
 * worker thread, which re-evaluates (zk_reevaluate).  One release wakes
 * only the requests that watched it ("wakeups" in status counts these
 * events).  Before it re-evaluates, the worker asks session.c whether the
 * blocker went with its session (zk_check_freed): then the grant waits
 * for lock-delay (wake_at).  A waiter whose evaluation failed is retried a
 * second later (wake_at) rather than left.
 *
 * Breaks.  An administrator's break (inspect.c, any host) deletes every
 * granted node of a resource; waiting nodes stay, so waiters are served in
 * order.  Each granted node of ours carries a data watch (armed at the
 * grant without waiting, zk_held_arm_async; re-armed after each change
 * event, zk_held_arm).  When one of our nodes is gone and
 * we did not delete it ourselves - we empty a node's ranges, under the
 * mutex, before we delete it, so a vanished node that still has ranges
 * was taken from us - the worker drops it and reports cb->lost
 * (-ECONNABORTED).
 *
 * Pokes.  Another daemon that wants a resource we hold rewrites one of
 * our granted nodes there unchanged (inspect.c, zk_poke): the same watch
 * fires, the node is still there, and its version is not the one our last
 * write of it left (n->version, owner.c): the worker calls cb->revoke with
 * the resource, once per version it sees (see internal.h).
 *
 * Reconnection.  On every (re)connection the worker kicks every waiter,
 * retries the held-node looks that failed, and reconciles: creates the
 * session's liveness node, deletes orphaned creates and the nodes of
 * requests cancelled while disconnected, writes every dirty node of idle
 * owners.  It also starts a new session when zk_abandon asked for one, and
 * abandons a session whose expiry the watcher reported.
 *
 * Every request is answered once: lock() returns, or its waiter is
 * decided by exactly one of the worker (granted, or failed when its
 * session is gone) and zk_abandon (failed), or cancel() returns 0 after
 * unlinking it.
 *
 * Owns: zb->waiters/nwaiters/wakeups, zb->held_evs, the consumption of
 * zb->orphans and zb->cancelled, zb->reconcile, the worker thread.  Does
 * not: decide grants (grant.c), write an owner's nodes itself (owner.c),
 * give a session up on the clock (the lease thread, session.c).
 *
 * Locking.
 *  - zk_node_watcher, zk_held_watcher and zk_held_armed run on the
 *    library's completion thread: they only set a waiter's kick flag or
 *    queue a zk_held_ev (and take an arm off its session's list), under
 *    zb->mutex, and signal zb->cond.  zk_held_queue is callable from any
 *    thread without the mutex.
 *  - The worker sleeps on zb->cond with zb->mutex held, picks one piece
 *    of work under it, and drops it for the work: every ZooKeeper call
 *    and every backend.h callback here runs with no mutex held; after
 *    one it checks stopping again before it sleeps.
 *  - zk_reevaluate takes the waiter's busy flag, then its owner's (in
 *    that order; cancel() waits for the waiter's, zk_abandon skips a busy
 *    waiter and marks a busy owner stale).  While both are held the
 *    waiter's node and blk_* fields are the worker's.  It reports the
 *    decision only after clearing both: a callback finds nothing of ours
 *    held.
 *  - zk_held_check (and zk_held_poked, only when a version differs) and
 *    zk_reconcile take an owner's busy flag the same way (zk_reconcile
 *    only idle owners', never waiting for one).  cb->revoke is called
 *    with no mutex and no busy flag held, holding an owner reference.
 *  - Every ZooKeeper call holds a session reference (zk_sess_get or
 *    refs++ under the mutex), dropped before the next piece of work.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/util/log.h"
#include "backend/zk/internal.h"

/* ---- waiters --------------------------------------------------------- */

/* mutex held: the waiter of @id, or NULL (decided or cancelled) */
struct zk_waiter *zk_waiter_find(struct zk_backend *zb, uint64_t id)
{
	for (struct zk_waiter *w = zb->waiters; w; w = w->next)
		if (w->wait_id == id)
			return w;
	return NULL;
}

/* mutex held: unlink @w (the caller frees it and puts its owner) */
void zk_waiter_unlink(struct zk_backend *zb, struct zk_waiter *w)
{
	struct zk_waiter **p = &zb->waiters;

	while (*p && *p != w)
		p = &(*p)->next;
	if (*p) {
		*p = w->next;
		zb->nwaiters--;
	}
}

/* a blocker we watch changed or went: kick its waiter (completion thread) */
static void zk_node_watcher(zhandle_t *zh, int type, int state,
			    const char *path, void *ctx)
{
	const struct zk_sess *s = zoo_get_context(zh);
	uint64_t id = (uint64_t)(uintptr_t)ctx;
	struct zk_backend *zb;
	struct zk_waiter *w;

	(void)state;
	(void)path;
	if (!s || type == ZOO_SESSION_EVENT)
		return;
	zb = s->zb;
	pthread_mutex_lock(&zb->mutex);
	w = zk_waiter_find(zb, id);
	if (w) {
		zb->wakeups++;
		w->kick = true;
		pthread_cond_broadcast(&zb->cond);
	}
	pthread_mutex_unlock(&zb->mutex);
}

/*
 * Watch @blk for our waiter @wait_id.  Returns true when it changed since
 * it was evaluated (or is gone), so the caller re-evaluates at once.
 */
bool zk_watch(zhandle_t *zh, const struct zk_blocker *blk, uint64_t wait_id)
{
	char buf[16];
	int len = sizeof(buf);
	struct Stat st;
	int rc = zoo_wget(zh, blk->path, zk_node_watcher,
			  (void *)(uintptr_t)wait_id, buf, &len, &st);

	return rc != ZOK || st.version != blk->version;
}

/* ---- watches on our granted nodes (breaks, pokes) -------------------- */

/* queue a look at our granted node @path of session @gen for the worker;
 * any thread, mutex not held */
void zk_held_queue(struct zk_backend *zb, unsigned gen, const char *path,
		   bool deleted, bool retry)
{
	struct zk_held_ev *ev = calloc(1, sizeof(*ev));

	if (!ev) {
		dl_log(DL_LOG_ERR, "zk: watch event on %s dropped: %s", path,
		       strerror(ENOMEM));
		return;
	}
	ev->gen = gen;
	ev->deleted = deleted;
	ev->retry = retry;
	snprintf(ev->path, sizeof(ev->path), "%s", path);
	pthread_mutex_lock(&zb->mutex);
	ev->next = zb->held_evs;
	zb->held_evs = ev;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
}

/* a watch on our granted node fired (completion thread): queue a look */
static void zk_held_watcher(zhandle_t *zh, int type, int state,
			    const char *path, void *ctx)
{
	const struct zk_sess *s = zoo_get_context(zh);

	(void)state;
	(void)ctx;
	if (!s || type == ZOO_SESSION_EVENT || !path)
		return;
	zk_held_queue(s->zb, s->gen, path, type == ZOO_DELETED_EVENT, false);
}

/* watch our granted node @path (data change or deletion); a ZooKeeper rc,
 * and on ZOK its data version in *@version (else -1) */
int zk_held_arm(zhandle_t *zh, const char *path, int32_t *version)
{
	char buf[16];
	int len = sizeof(buf);
	struct Stat st;
	int rc = zoo_wget(zh, path, zk_held_watcher, NULL, buf, &len, &st);

	*version = rc == ZOK ? st.version : -1;
	return rc;
}

/* a watch arm on its way (zk_held_arm_async), on its session's list */
struct zk_arm {
	struct zk_arm *next; /* s->arms; zb->mutex */
	struct zk_sess *s;
	int32_t version; /* our last write of the node */
	char path[ZK_PATH_MAX];
};

/* mutex held: take @a off its session's list of arms on their way */
static void zk_arm_unlink_locked(struct zk_arm *a)
{
	struct zk_arm **p = &a->s->arms;

	while (*p && *p != a)
		p = &(*p)->next;
	if (*p)
		*p = a->next;
}

/*
 * The answer to zk_held_arm_async (completion thread, so @a's session is
 * still open): a version we did not write, a node gone, or no answer is
 * looked at by the worker, as after zk_held_arm.  Nothing is looked at
 * for a session no longer current: zk_abandon reported its locks lost,
 * and a closing handle (ZCLOSING) is one of those or the backend's end.
 */
static void zk_held_armed(int rc, const char *value, int value_len,
			  const struct Stat *stat, const void *data)
{
	struct zk_arm *a = (struct zk_arm *)data;
	struct zk_sess *s = a->s;
	struct zk_backend *zb = s->zb;
	bool current;

	(void)value;
	(void)value_len;
	pthread_mutex_lock(&zb->mutex);
	zk_arm_unlink_locked(a);
	current = zb->sess == s;
	pthread_mutex_unlock(&zb->mutex);
	if (current && rc != ZCLOSING &&
	    (rc != ZOK || stat->version != a->version))
		zk_held_queue(zb, s->gen, a->path, rc == ZNONODE,
			      rc != ZOK && rc != ZNONODE);
	free(a);
}

/*
 * zk_held_arm without waiting for the answer: the grant is reported while
 * the read that arms the watch is on its way, and the caller's next
 * request follows it in the same session (one round trip less per lock).
 * The session answers in order, so a poke or a break that the read missed
 * fires the watch, and one it saw shows in the answer (zk_held_armed):
 * either way the worker looks, as after a synchronous arm.  A connection
 * lost first answers ZCONNECTIONLOSS: the worker arms it again once
 * reconnected.  Nothing waits for the answer, so none ever holds up
 * anything; the library does not promise one when its handle closes
 * (a completion queued as the handle closes may never run), so the arm
 * stays on its session's list until answered, and goes with the session
 * otherwise (zk_held_arms_free).
 */
void zk_held_arm_async(struct zk_backend *zb, struct zk_sess *s,
		       const char *path, int32_t version)
{
	struct zk_arm *a = malloc(sizeof(*a));
	int rc;

	if (!a) {
		int32_t v;

		rc = zk_held_arm(s->zh, path, &v);
		if (rc != ZOK || v != version)
			zk_held_queue(zb, s->gen, path, rc == ZNONODE,
				      rc != ZOK && rc != ZNONODE);
		return;
	}
	a->s = s;
	a->version = version;
	snprintf(a->path, sizeof(a->path), "%s", path);
	/* linked first: the answer may come before zoo_awget returns */
	pthread_mutex_lock(&zb->mutex);
	a->next = s->arms;
	s->arms = a;
	pthread_mutex_unlock(&zb->mutex);
	rc = zoo_awget(s->zh, path, zk_held_watcher, NULL, zk_held_armed, a);
	if (rc != ZOK) {
		/* not sent (a session no longer usable, or no memory): the
		 * worker arms it once reconnected.  @a stays listed, since
		 * the library may have registered its completion anyway */
		zk_held_queue(zb, s->gen, path, false, true);
	}
}

/* free the arms of @s that were never answered: its handle is closed (no
 * completion can run any more) and nobody else holds @s */
void zk_held_arms_free(struct zk_sess *s)
{
	while (s->arms) {
		struct zk_arm *a = s->arms;

		s->arms = a->next;
		free(a);
	}
}

/*
 * Worker: our granted node @path of session @gen is at data version
 * @version.  Newer than our last write of it: somebody poked it (see
 * internal.h); then returns its owner with a reference, for cb->revoke,
 * and records the version so that the poke is reported once.  NULL when
 * the write was ours (or the node is no longer ours, or its last write of
 * ours is still to be made: a failed write may have landed).  The busy
 * flag is only waited for when the versions differ, to let a write of
 * ours that the server answered record its version first.
 */
static struct zk_owner *zk_held_poked(struct zk_backend *zb, const char *path,
				      unsigned gen, int32_t version)
{
	struct zk_owner *ow;
	struct zk_node *n;
	bool poked = false;

	pthread_mutex_lock(&zb->mutex);
	ow = zk_held_find(zb, path, gen, &n);
	if (!ow || !n->ranges.n || n->version >= version) {
		pthread_mutex_unlock(&zb->mutex);
		return NULL;
	}
	ow->refs++;
	while (ow->busy)
		pthread_cond_wait(&zb->cond, &zb->mutex);
	ow->busy = true;
	for (n = ow->nodes; n; n = n->next) {
		if (n->gen != gen || strcmp(n->path, path) != 0)
			continue;
		if (n->ranges.n && !n->dirty && n->version < version) {
			n->version = version;
			poked = true;
		}
		break;
	}
	zk_owner_unbusy_locked(zb, ow);
	if (!poked) {
		zk_owner_put_locked(zb, ow);
		ow = NULL;
	}
	pthread_mutex_unlock(&zb->mutex);
	return ow;
}

/*
 * Worker: a watch on our granted node @ev->path fired.  Re-arm it while
 * the node exists, and report a poke (cb->revoke) when its version is not
 * one of our writes; when it is gone although it still had ranges (we
 * empty them before deleting our own nodes), somebody broke it: drop it
 * and report the owner's lock lost.  Frees or requeues @ev.
 */
static void zk_held_check(struct zk_backend *zb, struct zk_held_ev *ev)
{
	struct zk_owner *ow;
	struct zk_node *n, **p;
	struct zk_sess *s = NULL;
	bool lost = false;

	pthread_mutex_lock(&zb->mutex);
	if (zb->sess && zb->sess->gen == ev->gen) {
		s = zb->sess;
		s->refs++;
	}
	pthread_mutex_unlock(&zb->mutex);
	if (!s)
		goto out_free; /* abandoned: zk_abandon reported its locks */
	if (!ev->deleted) {
		int32_t version;
		int rc = zk_held_arm(s->zh, ev->path, &version);

		if (rc != ZOK && rc != ZNONODE) {
			/* not connected: look again once it is back */
			ev->retry = true;
			pthread_mutex_lock(&zb->mutex);
			ev->next = zb->held_evs;
			zb->held_evs = ev;
			pthread_mutex_unlock(&zb->mutex);
			zk_sess_put(zb, s);
			return;
		}
		if (rc == ZOK) {
			/* still there, watched again: our write, or a poke */
			ow = zk_held_poked(zb, ev->path, ev->gen, version);
			if (ow && zb->cb.revoke) {
				dl_log(DL_LOG_DEBUG,
				       "zk: %s owner=%016" PRIx64 " poked by "
				       "another host (%s): asking for it back",
				       ow->resource, ow->owner, ev->path);
				zb->cb.revoke(zb->cb.ctx, ow->resource);
			}
			if (ow) {
				pthread_mutex_lock(&zb->mutex);
				zk_owner_put_locked(zb, ow);
				pthread_mutex_unlock(&zb->mutex);
			}
			goto out_sess;
		}
	}

	pthread_mutex_lock(&zb->mutex);
	ow = zk_held_find(zb, ev->path, ev->gen, &n);
	if (!ow || !n->ranges.n) {
		pthread_mutex_unlock(&zb->mutex);
		goto out_sess; /* we deleted it ourselves */
	}
	ow->refs++;
	while (ow->busy)
		pthread_cond_wait(&zb->cond, &zb->mutex);
	ow->busy = true;
	for (p = &ow->nodes; *p; p = &(*p)->next) {
		n = *p;
		if (n->gen == ev->gen && n->ranges.n &&
		    strcmp(n->path, ev->path) == 0) {
			*p = n->next;
			zk_node_free(n);
			lost = true;
			break;
		}
	}
	zk_owner_unbusy_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
	if (lost) {
		dl_log(DL_LOG_WARNING,
		       "zk: lock of %s owner=%016" PRIx64 " broken: %s was "
		       "deleted by someone else",
		       ow->resource, ow->owner, ev->path);
		zb->cb.lost(zb->cb.ctx, ow->resource, ow->space, ow->owner,
			    -ECONNABORTED);
	}
	pthread_mutex_lock(&zb->mutex);
	zk_owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
out_sess:
	zk_sess_put(zb, s);
out_free:
	free(ev);
}

/* ---- re-evaluating a waiter ------------------------------------------ */

/*
 * Worker: re-evaluate waiter @id.  Calls cb->granted or cb->failed when
 * it is decided, with no mutex held.
 */
static void zk_reevaluate(struct zk_backend *zb, uint64_t id)
{
	struct zk_waiter *w;
	struct zk_owner *ow;
	struct zk_blocker blk;
	struct zk_sess *s = NULL;
	bool jumped, again, session_gone;
	uint64_t token, lease;
	int64_t wake_at;
	int ret;

	pthread_mutex_lock(&zb->mutex);
	w = zk_waiter_find(zb, id);
	if (!w || w->busy) {
		pthread_mutex_unlock(&zb->mutex);
		return;
	}
	w->busy = true;
	w->kick = false;
	ow = w->ow;
	while (ow->busy)
		pthread_cond_wait(&zb->cond, &zb->mutex);
	ow->busy = true;
	if (zb->sess && zb->state == ZOO_CONNECTED_STATE &&
	    zb->sess->gen == w->node->gen) {
		s = zb->sess;
		s->refs++;
	}
	pthread_mutex_unlock(&zb->mutex);

	ret = -EAGAIN; /* not connected: the reconnect kicks it again */
	wake_at = 0;
	if (s) {
		do {
			again = false;
			zk_check_freed(zb, s, w);
			ret = zk_evaluate(zb, s->zh, ow, w->node, NULL, &blk,
					  &jumped);
			if (ret == 0) {
				snprintf(w->blk_path, sizeof(w->blk_path), "%s",
					 blk.path);
				w->blk_sid = blk.sid;
				again = zk_watch(s->zh, &blk, id);
			}
		} while (again);
		if (ret == 1 && w->delay_until > dl_mono_ms()) {
			/* lock-delay: not before the delay is over */
			wake_at = w->delay_until;
			ret = -EINPROGRESS;
		} else if (ret == 1) {
			ret = zk_finish_grant(zb, s, ow, w->node, jumped);
		} else if (ret == 0) {
			ret = -EINPROGRESS;
		}
		/* an error (ENOMEM...): try again in a while */
		if (ret != 0 && ret != -EINPROGRESS && ret != -EAGAIN)
			wake_at = dl_mono_ms() + 1000;
	}

	pthread_mutex_lock(&zb->mutex);
	w->busy = false;
	w->wake_at = wake_at;
	session_gone = !zb->sess || zb->sess->gen != w->node->gen;
	zk_owner_unbusy_locked(zb, ow);
	if (ret != 0 && !session_gone) {
		/* still waiting; on an error, again once connected */
		pthread_mutex_unlock(&zb->mutex);
		if (ret != -EINPROGRESS && ret != -EAGAIN)
			dl_log(DL_LOG_WARNING,
			       "zk: evaluating wait %" PRIu64 ": %s", id,
			       strerror(-ret));
		if (s)
			zk_sess_put(zb, s);
		return;
	}
	/* decided: granted (the node is now the owner's), or its session
	 * was abandoned while we looked */
	token = w->node->czxid;
	lease = w->node->gen;
	zk_waiter_unlink(zb, w);
	if (ret != 0)
		zk_node_free(w->node);
	zk_owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
	if (s)
		zk_sess_put(zb, s);
	free(w);
	if (ret == 0) {
		struct dl_grant g = { .token = token, .lease = lease };

		dl_log(DL_LOG_DEBUG,
		       "zk: granted wait %" PRIu64 " token %" PRIu64, id,
		       token);
		zb->cb.granted(zb->cb.ctx, id, &g);
	} else {
		zb->cb.failed(zb->cb.ctx, id, -ENOLCK);
	}
}

/* ---- after a reconnection -------------------------------------------- */

/* delete creates whose answer a connection drop swallowed, and the
 * waiting nodes of requests cancelled while disconnected */
static void zk_clean_orphans(struct zk_backend *zb, struct zk_sess *s)
{
	for (;;) {
		struct zk_node *n;
		int rc = ZOK;

		pthread_mutex_lock(&zb->mutex);
		n = zb->cancelled;
		if (n)
			zb->cancelled = n->next;
		pthread_mutex_unlock(&zb->mutex);
		if (!n)
			break;
		if (n->gen == s->gen) {
			rc = zoo_delete(s->zh, n->path, -1);
			dl_log(DL_LOG_INFO, "zk: removed cancelled %s: %s",
			       n->path, zerror(rc));
		}
		if (rc != ZOK && rc != ZNONODE) {
			pthread_mutex_lock(&zb->mutex);
			n->next = zb->cancelled;
			zb->cancelled = n;
			pthread_mutex_unlock(&zb->mutex);
			return;
		}
		zk_node_free(n);
	}
	for (;;) {
		struct String_vector kids = { 0 };
		struct zk_orphan *o;
		char path[ZK_PATH_MAX];
		int rc;

		pthread_mutex_lock(&zb->mutex);
		o = zb->orphans;
		if (o)
			zb->orphans = o->next;
		pthread_mutex_unlock(&zb->mutex);
		if (!o)
			return;
		if (o->gen != s->gen) {
			free(o);
			continue;
		}
		rc = zoo_get_children(s->zh, o->parent, 0, &kids);
		if (rc == ZOK) {
			for (int i = 0; i < kids.count; i++) {
				if (strncmp(kids.data[i], o->prefix,
					    strlen(o->prefix)) != 0)
					continue;
				snprintf(path, sizeof(path), "%s/%s", o->parent,
					 kids.data[i]);
				rc = zoo_delete(s->zh, path, -1);
				dl_log(DL_LOG_INFO, "zk: removed orphan %s: %s",
				       path, zerror(rc));
			}
			deallocate_String_vector(&kids);
		}
		if (rc != ZOK && rc != ZNONODE) {
			/* not connected again: keep it for the next time */
			pthread_mutex_lock(&zb->mutex);
			o->next = zb->orphans;
			zb->orphans = o;
			pthread_mutex_unlock(&zb->mutex);
			return;
		}
		free(o);
	}
}

/* write the dirty nodes of every idle owner */
static void zk_reconcile(struct zk_backend *zb)
{
	struct zk_sess *s;

	if (zk_sess_get(zb, 0, &s) < 0)
		return;
	zk_register(zb, s);
	zk_clean_orphans(zb, s);
	for (size_t b = 0; b < ZK_BUCKETS; b++) {
		for (;;) {
			struct zk_owner *ow, *found = NULL;
			bool dirty = false;

			pthread_mutex_lock(&zb->mutex);
			for (ow = zb->owners[b]; ow && !found; ow = ow->next) {
				if (ow->busy)
					continue;
				for (struct zk_node *n = ow->nodes; n;
				     n = n->next)
					if (n->dirty && n->gen == s->gen)
						found = ow;
			}
			if (found) {
				found->busy = true;
				found->refs++;
			}
			pthread_mutex_unlock(&zb->mutex);
			if (!found)
				break;
			zk_owner_flush(zb, s, found);
			zk_parent_cleanup(zb, s->zh, found);
			for (struct zk_node *n = found->nodes; n; n = n->next)
				dirty = dirty || (n->dirty && n->gen == s->gen);
			zk_owner_release(zb, found);
			if (dirty)
				goto out; /* connection gone again: next time */
		}
	}
out:
	zk_sess_put(zb, s);
}

/* ---- the thread ------------------------------------------------------ */

/*
 * The worker: one piece of work per round, in this order - a new session,
 * an expiry, a reconnection's kicks, reconciling, a held-node event, a
 * kicked waiter - then sleep on zb->cond until the next wake_at.
 */
void *zk_worker_main(void *arg)
{
	struct zk_backend *zb = arg;

	pthread_mutex_lock(&zb->mutex);
	while (!zb->stopping) {
		struct zk_held_ev *ev, **evp;
		struct zk_waiter *w;
		int64_t wake;

		if (zb->need_session && !zb->sess) {
			pthread_mutex_unlock(&zb->mutex);
			if (zk_session_start(zb) < 0) {
				pthread_mutex_lock(&zb->mutex);
				/* a stop broadcast while the mutex was
				 * dropped woke nobody */
				if (!zb->stopping)
					zk_cond_wait_until(zb,
							   dl_mono_ms() + 1000);
				continue;
			}
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		if (zb->expired_pending) {
			unsigned gen = zb->sess ? zb->sess->gen : 0;

			zb->expired_pending = false;
			pthread_mutex_unlock(&zb->mutex);
			zk_abandon(zb, gen, "expired");
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		if (zb->connected_pending) {
			zb->connected_pending = false;
			for (w = zb->waiters; w; w = w->next)
				w->kick = true;
			for (ev = zb->held_evs; ev; ev = ev->next)
				ev->retry = false;
			zb->reconcile = true;
			continue;
		}
		if (zb->reconcile && zb->state == ZOO_CONNECTED_STATE) {
			zb->reconcile = false;
			pthread_mutex_unlock(&zb->mutex);
			zk_reconcile(zb);
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		for (evp = &zb->held_evs; *evp; evp = &(*evp)->next)
			if (!(*evp)->retry &&
			    ((*evp)->deleted ||
			     zb->state == ZOO_CONNECTED_STATE))
				break;
		if (*evp) {
			ev = *evp;
			*evp = ev->next;
			pthread_mutex_unlock(&zb->mutex);
			zk_held_check(zb, ev);
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		wake = 0;
		for (w = zb->waiters; w; w = w->next) {
			if (w->wake_at && w->wake_at <= dl_mono_ms()) {
				w->wake_at = 0;
				w->kick = true;
			}
			if (w->wake_at && (!wake || w->wake_at < wake))
				wake = w->wake_at;
		}
		for (w = zb->waiters; w; w = w->next)
			if (w->kick && !w->busy &&
			    zb->state == ZOO_CONNECTED_STATE)
				break;
		if (w) {
			uint64_t id = w->wait_id;

			pthread_mutex_unlock(&zb->mutex);
			zk_test_sleep(zb->test_kick_delay_ms);
			zk_reevaluate(zb, id);
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		if (wake)
			zk_cond_wait_until(zb, wake);
		else
			pthread_cond_wait(&zb->cond, &zb->mutex);
	}
	pthread_mutex_unlock(&zb->mutex);
	return NULL;
}

/*
 * ops.c - the "zk://" backend's dl_backend_ops: open and close, and the
 * requests of one owner (lock, unlock, cancel, release_owner) and status.
 * inspect.c has getlk, list, break_lock, poke, version and bump.
 *
 * lock() takes the owner's entry (busy), waits at most min(timeout, 5 s)
 * for a connection, then answers from the owner's cached nodes when it
 * can (already held, same mode, downgrade) - only after the server
 * confirmed them (zk_owner_verify) - or creates a request node and
 * evaluates it once (grant.c): granted, -EAGAIN, or queued as a waiter
 * (worker.c) when the request has a wait id.  Unlocks never fail: they
 * are applied locally and written when the connection returns (holding
 * longer than asked is safe), and a cancel keeps the waiting node on
 * zb->cancelled to delete it then.  release_owner drops only the nodes
 * granted with a token <= max_token: a node of a newer grant survives a
 * late release.
 *
 * Owns: the ops table, the backend's life (open: parse the URI, read the
 * credentials, start the first session and wait for it, create CHROOT/r,
 * start the worker and lease threads; close: the reverse), the
 * classification of a POSIX request against what its owner holds.  Does
 * not: decide grants (grant.c), wait for them (worker.c), keep the lease
 * (session.c).  Deadlocks that cross hosts are detected by the lock
 * manager from list(), not here (lock_timeout ends the rest).
 *
 * Locking.  Each op runs on its caller's thread, any number at once, and
 * serialises with the other ops of the same owner through the entry's
 * busy flag (zk_owner_acquire); its ZooKeeper calls run with that flag and
 * a session reference held and zb->mutex dropped.  lock() links a waiter
 * under zb->mutex, only while its session is still current; from then on
 * it may be decided before lock() has returned -EINPROGRESS (backend.h
 * allows it): failed by zk_abandon at any time, granted by the worker once
 * the owner's busy flag is released - so lock() finds it again by wait id
 * under the mutex, never through its pointer.  cancel() waits for the
 * worker to leave the waiter (w->busy) and unlinks it under the mutex;
 * whoever unlinks a waiter answers it.  status reads the counters
 * under the mutex and asks the library for the session id outside it.
 * open runs alone (but for its first session's watcher, which it reads
 * under the mutex) until the threads start; close runs after every other
 * op has returned, and joins the threads before it frees.
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

/* the first connection at start: session_timeout_ms within these bounds */
#define ZK_START_WAIT_MIN_MS 10000
#define ZK_START_WAIT_MAX_MS 30000

/* ---- open and close -------------------------------------------------- */

/* stop both threads, close the session (its ephemeral nodes go at once)
 * and free everything; no other call runs any more (backend.h) */
static void zk_close(struct dl_backend *be)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_sess *s;

	pthread_mutex_lock(&zb->mutex);
	zb->stopping = true;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
	if (zb->threads_started) {
		pthread_join(zb->worker, NULL);
		pthread_join(zb->lease, NULL);
	}
	pthread_mutex_lock(&zb->mutex);
	s = zb->sess;
	zb->sess = NULL;
	pthread_mutex_unlock(&zb->mutex);
	/* closing the session deletes our ephemeral nodes at once */
	if (s)
		zk_sess_put(zb, s);
	while (zb->waiters) {
		struct zk_waiter *w = zb->waiters;

		zb->waiters = w->next;
		zk_node_free(w->node);
		free(w);
	}
	for (size_t b = 0; b < ZK_BUCKETS; b++) {
		while (zb->owners[b]) {
			struct zk_owner *ow = zb->owners[b];

			zb->owners[b] = ow->next;
			zk_owner_purge(ow, 0);
			free(ow->name_hex);
			free(ow);
		}
	}
	while (zb->orphans) {
		struct zk_orphan *o = zb->orphans;

		zb->orphans = o->next;
		free(o);
	}
	while (zb->cancelled) {
		struct zk_node *n = zb->cancelled;

		zb->cancelled = n->next;
		zk_node_free(n);
	}
	while (zb->held_evs) {
		struct zk_held_ev *ev = zb->held_evs;

		zb->held_evs = ev->next;
		free(ev);
	}
	pthread_cond_destroy(&zb->cond);
	pthread_mutex_destroy(&zb->mutex);
	if (zb->auth) {
		explicit_bzero(zb->auth, strlen(zb->auth));
		free(zb->auth);
	}
	free(zb->hosts);
	free(zb);
}

/* see the file comment: the backend's life */
static int zk_open(const struct dl_backend_conf *conf,
		   const struct dl_backend_cb *cb, struct dl_backend **out,
		   char *err, size_t errlen)
{
	const char *rest = strchr(conf->uri, ':') + 1;
	const char *user = NULL, *pass = NULL;
	struct zk_backend *zb;
	pthread_condattr_t ca;
	struct zk_sess *s;
	struct zk_uri u;
	int ret, rc, start_ms, state, negotiated_ms;

	ret = zk_uri_parse(rest, &u, err, errlen);
	if (ret < 0)
		return ret;
	if (conf->config) {
		user = dl_config_get(conf->config, "zk_user");
		pass = dl_config_get(conf->config, "zk_password");
	}
	if ((user != NULL) != (pass != NULL) || (user && strchr(user, ':'))) {
		snprintf(err, errlen,
			 "zk: set both zk_user and zk_password "
			 "in the config file (and no ':' in zk_user)");
		zk_uri_free(&u);
		return -EINVAL;
	}
	zb = calloc(1, sizeof(*zb));
	if (!zb) {
		zk_uri_free(&u);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	zb->base.ops = &dl_zk_ops;
	zb->cb = *cb;
	snprintf(zb->host, sizeof(zb->host), "%s", conf->host_id);
	zk_hex(zb->host, strlen(zb->host), zb->host_hex);
	zb->incarnation = conf->incarnation;
	zb->lfence = conf->lease;
	/* nothing is trusted until the first session answers */
	atomic_store(&zb->lfence->until_ms, 0);
	zb->hosts = u.hosts;
	snprintf(zb->root, sizeof(zb->root), "%s", u.root);
	snprintf(zb->base_path, sizeof(zb->base_path), "%s/r", u.root);
	snprintf(zb->vbase_path, sizeof(zb->vbase_path), "%s/v", u.root);
	free(u.root);
	zb->timeout_ms = u.timeout_ms;
	zb->lock_delay_ms = u.lock_delay_ms;
	zb->test_abandon_delay_ms = zk_test_env("DLOCKFS_TEST_ZK_ABANDON_DELAY_"
						"MS");
	zb->test_kick_delay_ms = zk_test_env("DLOCKFS_TEST_ZK_KICK_DELAY_MS");
	zb->test_hb_pause_ms = zk_test_env("DLOCKFS_TEST_ZK_HB_PAUSE_MS");
	zb->containers = true;
	zb->acl = &ZOO_OPEN_ACL_UNSAFE;
	if (user) {
		size_t l = strlen(user) + strlen(pass) + 2;

		zb->auth = malloc(l);
		if (!zb->auth) {
			free(zb->hosts);
			free(zb);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		snprintf(zb->auth, l, "%s:%s", user, pass);
		zb->acl = &ZOO_CREATOR_ALL_ACL;
	}
	pthread_mutex_init(&zb->mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&zb->cond, &ca);
	pthread_condattr_destroy(&ca);
	zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);

	ret = zk_session_start(zb);
	if (ret < 0) {
		snprintf(err, errlen, "zk: cannot start a session with %s: %s",
			 zb->hosts, strerror(-ret));
		goto out_close;
	}
	/* the first connection, bounded whatever session_timeout_ms says: a
	 * daemon that cannot reach its lock store exits and does not mount */
	start_ms = zb->timeout_ms < ZK_START_WAIT_MIN_MS ? ZK_START_WAIT_MIN_MS
		   : zb->timeout_ms > ZK_START_WAIT_MAX_MS
			   ? ZK_START_WAIT_MAX_MS
			   : zb->timeout_ms;
	ret = zk_sess_get(zb, start_ms, &s);
	if (ret < 0) {
		/* the watcher (completion thread) writes zb->state */
		pthread_mutex_lock(&zb->mutex);
		state = zb->state;
		pthread_mutex_unlock(&zb->mutex);
		snprintf(err, errlen,
			 "zk: cannot connect to %s within %d s (state %s)",
			 zb->hosts, start_ms / 1000, zk_state_name(state));
		goto out_close;
	}
	rc = zk_make_path(zb, s->zh, zb->base_path);
	if (rc == ZOK)
		zk_register(zb, s);
	zk_sess_put(zb, s);
	if (rc != ZOK) {
		snprintf(err, errlen, "zk: cannot create %s: %s%s",
			 zb->base_path, zerror(rc),
			 rc == ZNOAUTH ? " (check zk_user/zk_password)" : "");
		ret = zk_errno(rc);
		goto out_close;
	}
	ret = -pthread_create(&zb->worker, NULL, zk_worker_main, zb);
	if (ret == 0) {
		ret = -pthread_create(&zb->lease, NULL, zk_lease_main, zb);
		if (ret < 0) {
			pthread_mutex_lock(&zb->mutex);
			zb->stopping = true;
			pthread_cond_broadcast(&zb->cond);
			pthread_mutex_unlock(&zb->mutex);
			pthread_join(zb->worker, NULL);
		}
	}
	if (ret < 0) {
		snprintf(err, errlen, "zk: cannot start threads: %s",
			 strerror(-ret));
		goto out_close;
	}
	zb->threads_started = true;
	pthread_mutex_lock(&zb->mutex);
	negotiated_ms = zb->negotiated_ms;
	pthread_mutex_unlock(&zb->mutex);
	dl_log(DL_LOG_INFO,
	       "zk: connected to %s, root %s, session timeout "
	       "%d ms (negotiated %d), lock-delay %d ms%s",
	       zb->hosts, zb->root, zb->timeout_ms, negotiated_ms,
	       zb->lock_delay_ms, zb->auth ? ", digest auth" : "");
	*out = &zb->base;
	return 0;

out_close:
	zk_close(&zb->base);
	return ret;
}

/* ---- lock ------------------------------------------------------------ */

/* a request backend.h allows (an unlock: any type) */
bool zk_req_valid(const struct dl_lock_req *req, bool unlock)
{
	if (req->start > req->end || (unsigned)req->space > DL_SPACE_POSIX)
		return false;
	if (unlock)
		return true;
	return req->type == DL_RDLCK || req->type == DL_WRLCK;
}

/* the token of the owner's node covering byte @at (0 if none) */
static uint64_t zk_owner_token_at(const struct zk_owner *ow, uint64_t at)
{
	for (const struct zk_node *n = ow->nodes; n; n = n->next)
		for (size_t i = 0; i < n->ranges.n; i++)
			if (n->ranges.v[i].start <= at &&
			    at <= n->ranges.v[i].end)
				return n->czxid;
	return 0;
}

/* what a POSIX request means for an owner holding @set */
enum zk_kind { ZK_SATISFIED, ZK_REDUCE, ZK_GROW };

static enum zk_kind zk_classify(const struct dl_range_set *set,
				const struct dl_lock_req *req)
{
	uint64_t pos = req->start;
	bool same = true;

	/* set holds one owner (0) sorted by start */
	for (size_t i = 0; i < set->n; i++) {
		const struct dl_range_lock *l = &set->v[i];

		if (l->end < pos)
			continue;
		if (l->start > req->end)
			break;
		if (l->start > pos)
			return ZK_GROW; /* a gap: new bytes */
		if (req->type == DL_WRLCK && l->type == DL_RDLCK)
			return ZK_GROW; /* upgrade */
		if (l->type != req->type)
			same = false;
		if (l->end >= req->end)
			return same ? ZK_SATISFIED : ZK_REDUCE;
		pos = l->end + 1;
	}
	return ZK_GROW;
}

/*
 * Before answering from @ow's cached nodes (already held, same mode,
 * downgrade): the nodes covering [start, end] must still be on the server
 * and @s must still be the current session, since a break or an expiry
 * may not have reached the worker yet (ZooKeeper delivers a watch event
 * before the answer of a later request of the same session, so a
 * successful exists proves the node is there).  Busy held.  0, or -ENOLCK
 * (a vanished node is handed to the worker, which reports it lost).
 */
static int zk_owner_verify(struct zk_backend *zb, struct zk_sess *s,
			   struct zk_owner *ow, uint64_t start, uint64_t end)
{
	bool alive;

	for (const struct zk_node *n = ow->nodes; n; n = n->next) {
		bool covers = false;
		struct Stat st;
		int rc;

		for (size_t i = 0; i < n->ranges.n && !covers; i++)
			covers = range_overlap(n->ranges.v[i].start,
					       n->ranges.v[i].end, start, end);
		if (!covers)
			continue;
		rc = zoo_exists(s->zh, n->path, 0, &st);
		if (rc == ZNONODE) {
			dl_log(DL_LOG_WARNING,
			       "zk: %s owner=%016" PRIx64 ": %s is gone; not "
			       "reporting it held",
			       ow->resource, ow->owner, n->path);
			zk_held_queue(zb, s->gen, n->path, true, false);
			return -ENOLCK;
		}
		if (rc != ZOK)
			return zk_errno(rc);
	}
	pthread_mutex_lock(&zb->mutex);
	alive = zb->sess == s && !ow->stale;
	pthread_mutex_unlock(&zb->mutex);
	return alive ? 0 : -ENOLCK;
}

/* downgrade to read every byte of [start, end] the owner holds (busy) */
static void zk_owner_downgrade(struct zk_backend *zb, struct zk_sess *s,
			       struct zk_owner *ow,
			       const struct dl_lock_req *req)
{
	for (struct zk_node *n = ow->nodes; n; n = n->next) {
		struct dl_range_lock pieces[64];
		size_t np = 0;

		for (size_t i = 0; i < n->ranges.n && np < 64; i++) {
			const struct dl_range_lock *l = &n->ranges.v[i];

			if (l->type != DL_WRLCK ||
			    !range_overlap(l->start, l->end, req->start,
					   req->end))
				continue;
			pieces[np] = *l;
			pieces[np].type = DL_RDLCK;
			if (pieces[np].start < req->start)
				pieces[np].start = req->start;
			if (pieces[np].end > req->end)
				pieces[np].end = req->end;
			np++;
		}
		if (!np)
			continue;
		pthread_mutex_lock(&zb->mutex);
		for (size_t i = 0; i < np; i++)
			range_set_apply(&n->ranges, &pieces[i]);
		pthread_mutex_unlock(&zb->mutex);
		n->dirty = true;
	}
	zk_owner_flush(zb, s, ow);
}

/* lock(): see the file comment; the owner's busy flag held throughout */
static int zk_lock_req(struct zk_backend *zb, const struct dl_lock_req *req,
		       struct dl_grant *grant)
{
	struct zk_owner *ow;
	struct zk_sess *s;
	struct zk_node *n = NULL;
	struct zk_blocker blk;
	struct dl_range_set set = { 0 };
	struct String_vector kids = { 0 };
	bool jumped, listed;
	int ret;

	if (!zk_req_valid(req, false))
		return -EINVAL;
	ow = zk_owner_acquire(zb, req->resource, req->space, req->owner);
	if (!ow)
		return -ENOMEM;
	ret = zk_sess_get(zb, zk_connect_wait(zb), &s);
	if (ret < 0) {
		dl_log(DL_LOG_NOTICE,
		       "zk: lock %s: no connection to "
		       "ZooKeeper within %" PRId64 " ms",
		       req->resource, zk_connect_wait(zb));
		goto out_owner;
	}
	pthread_mutex_lock(&zb->mutex);
	zk_owner_purge(ow, s->gen);
	pthread_mutex_unlock(&zb->mutex);
	zk_owner_flush(zb, s, ow);

	if (req->space == DL_SPACE_FLOCK) {
		bool have = false, same = false;

		for (struct zk_node *f = ow->nodes; f; f = f->next)
			for (size_t i = 0; i < f->ranges.n; i++) {
				have = true;
				same = f->ranges.v[i].type == req->type;
			}
		if (have && same) {
			ret = zk_owner_verify(zb, s, ow, 0, DL_RANGE_EOF);
			grant->token = zk_owner_token_at(ow, 0);
			goto out_sess;
		}
		/* as flock(2): a conversion drops the old lock first */
		if (have)
			zk_owner_reduce(zb, s, ow, 0, DL_RANGE_EOF);
	} else {
		ret = zk_owner_set(ow, &set);
		if (ret < 0)
			goto out_sess;
		switch (zk_classify(&set, req)) {
		case ZK_SATISFIED:
			ret = zk_owner_verify(zb, s, ow, req->start, req->end);
			grant->token = zk_owner_token_at(ow, req->start);
			goto out_sess;
		case ZK_REDUCE:
			ret = zk_owner_verify(zb, s, ow, req->start, req->end);
			if (ret == 0)
				zk_owner_downgrade(zb, s, ow, req);
			grant->token = zk_owner_token_at(ow, req->start);
			goto out_sess;
		case ZK_GROW:
			break;
		}
	}

	n = calloc(1, sizeof(*n));
	if (!n) {
		ret = -ENOMEM;
		goto out_sess;
	}
	n->pid = req->pid;
	n->wait_id = req->wait_id;
	ret = range_set_apply(&n->ranges,
			      &(struct dl_range_lock){ .start = req->start,
						       .end = req->end,
						       .type = req->type });
	if (ret < 0)
		goto out_node;
	ret = zk_create_node(zb, s, ow, n, &kids, &listed);
	if (ret < 0)
		goto out_node;
	ret = zk_evaluate(zb, s->zh, ow, n, listed ? &kids : NULL, &blk,
			  &jumped);
	deallocate_String_vector(&kids);
	if (ret == 1) {
		uint64_t t = n->czxid;

		ret = zk_finish_grant(zb, s, ow, n, jumped);
		if (ret == 0) {
			grant->token = t;
			n = NULL;
		}
		goto out_delete;
	}
	if (ret == 0 && req->wait_id) {
		struct zk_waiter *w = calloc(1, sizeof(*w));

		if (!w) {
			ret = -ENOMEM;
			goto out_delete;
		}
		w->wait_id = req->wait_id;
		w->ow = ow;
		w->node = n;
		snprintf(w->blk_path, sizeof(w->blk_path), "%s", blk.path);
		w->blk_sid = blk.sid;
		pthread_mutex_lock(&zb->mutex);
		if (zb->sess != s) {
			pthread_mutex_unlock(&zb->mutex);
			free(w);
			ret = -ENOLCK;
			goto out_delete;
		}
		ow->refs++;
		w->next = zb->waiters;
		zb->waiters = w;
		zb->nwaiters++;
		pthread_mutex_unlock(&zb->mutex);
		n = NULL;
		if (zk_watch(s->zh, &blk, req->wait_id)) {
			pthread_mutex_lock(&zb->mutex);
			w = zk_waiter_find(zb, req->wait_id);
			if (w)
				w->kick = true;
			pthread_cond_broadcast(&zb->cond);
			pthread_mutex_unlock(&zb->mutex);
		}
		ret = -EINPROGRESS;
		goto out_sess;
	}
	if (ret == 0)
		ret = -EAGAIN;

out_delete:
	if (n && n->path[0]) {
		int rc = zoo_delete(s->zh, n->path, -1);

		if (rc != ZOK && rc != ZNONODE) {
			/* keep it to delete later, as an empty node */
			range_set_free(&n->ranges);
			n->dirty = true;
			pthread_mutex_lock(&zb->mutex);
			n->next = ow->nodes;
			ow->nodes = n;
			pthread_mutex_unlock(&zb->mutex);
			n = NULL;
		}
	}
	if (n)
		zk_parent_cleanup(zb, s->zh, ow);
out_node:
	zk_node_free(n);
out_sess:
	grant->lease = s->gen;
	range_set_free(&set);
	zk_sess_put(zb, s);
out_owner:
	zk_owner_release(zb, ow);
	return ret;
}

static int zk_lock(struct dl_backend *be, const struct dl_lock_req *req,
		   struct dl_grant *grant)
{
	return zk_lock_req(zk_of(be), req, grant);
}

/* ---- unlock, release, cancel ----------------------------------------- */

/* unlock(): applied at once, written now or once reconnected; never fails */
static int zk_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_owner *ow;
	struct zk_sess *s = NULL;

	if (!zk_req_valid(req, true))
		return -EINVAL;
	ow = zk_owner_acquire(zb, req->resource, req->space, req->owner);
	if (!ow)
		return -ENOMEM;
	if (ow->nodes) {
		/* unlocks never fail: without a connection they are
		 * written when it is back (or the session ends them) */
		if (zk_sess_get(zb, 0, &s) < 0)
			s = NULL;
		if (s) {
			pthread_mutex_lock(&zb->mutex);
			zk_owner_purge(ow, s->gen);
			pthread_mutex_unlock(&zb->mutex);
		}
		zk_owner_reduce(zb, s, ow, req->start, req->end);
		if (s) {
			zk_parent_cleanup(zb, s->zh, ow);
			zk_sess_put(zb, s);
		} else {
			pthread_mutex_lock(&zb->mutex);
			zb->reconcile = true;
			pthread_mutex_unlock(&zb->mutex);
		}
	}
	zk_owner_release(zb, ow);
	return 0;
}

/* drop the owner's nodes granted with a token (czxid) <= @max_token: a
 * node created by a newer grant survives a late release */
static int zk_release_owner(struct dl_backend *be, const char *resource,
			    enum dl_space space, uint64_t owner,
			    uint64_t max_token)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_owner *ow;
	struct zk_sess *s = NULL;

	ow = zk_owner_acquire(zb, resource, space, owner);
	if (!ow)
		return -ENOMEM;
	if (ow->nodes) {
		if (zk_sess_get(zb, 0, &s) < 0)
			s = NULL;
		pthread_mutex_lock(&zb->mutex);
		if (s)
			zk_owner_purge(ow, s->gen);
		for (struct zk_node *n = ow->nodes; n; n = n->next)
			if (n->czxid <= max_token && n->ranges.n) {
				range_set_free(&n->ranges);
				n->dirty = true;
			}
		if (!s)
			zb->reconcile = true;
		pthread_mutex_unlock(&zb->mutex);
		if (s) {
			zk_owner_flush(zb, s, ow);
			zk_parent_cleanup(zb, s->zh, ow);
			zk_sess_put(zb, s);
		}
	}
	zk_owner_release(zb, ow);
	return 0;
}

/* cancel(): 0 when we unlinked the waiter (no callback comes), -ENOENT
 * when it was already decided */
static int zk_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_waiter *w;
	struct zk_sess *s;
	struct zk_node *n;
	struct zk_owner *ow;

	pthread_mutex_lock(&zb->mutex);
	for (;;) {
		w = zk_waiter_find(zb, wait_id);
		if (!w || !w->busy)
			break;
		pthread_cond_wait(&zb->cond, &zb->mutex);
	}
	if (!w) {
		pthread_mutex_unlock(&zb->mutex);
		return -ENOENT; /* granted or failed: its callback is due */
	}
	zk_waiter_unlink(zb, w);
	n = w->node;
	ow = w->ow;
	pthread_mutex_unlock(&zb->mutex);
	free(w);

	/*
	 * Delete the waiting node; nothing is left behind.  Without a
	 * connection (the session may well be alive, and its node would
	 * block every later conflicting request on every host until it
	 * ends) the node itself is kept on zb->cancelled - no allocation, so
	 * no failure - and deleted on reconnect; the end of its session
	 * deletes it otherwise.  The caller never waits for a connection.
	 */
	if (zk_sess_get(zb, 0, &s) == 0) {
		if (s->gen == n->gen) {
			int rc = zoo_delete(s->zh, n->path, -1);

			if (rc == ZOK || rc == ZNONODE) {
				zk_node_free(n);
				n = NULL;
			}
		}
		zk_sess_put(zb, s);
	}
	pthread_mutex_lock(&zb->mutex);
	if (n) {
		dl_log(DL_LOG_INFO, "zk: cancel: %s deleted once reconnected",
		       n->path);
		n->next = zb->cancelled;
		zb->cancelled = n;
		zb->reconcile = true;
		pthread_cond_broadcast(&zb->cond);
	}
	zk_owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

/* ---- status and the table -------------------------------------------- */

/* one status line; see the file comment for its locking */
static int zk_status(struct dl_backend *be, char *buf, size_t len)
{
	struct zk_backend *zb = zk_of(be);
	const clientid_t *cid = NULL;
	struct zk_sess *s = NULL;
	unsigned gen = 0;
	size_t held = 0;
	int64_t sid = 0;

	/*
	 * The session id is asked of the library, so without our mutex:
	 * take a reference under it, ask, drop the reference (which may
	 * close an abandoned session's handle: never under the mutex).
	 */
	pthread_mutex_lock(&zb->mutex);
	if (zb->sess && zb->state == ZOO_CONNECTED_STATE) {
		s = zb->sess;
		s->refs++;
		gen = s->gen;
	}
	pthread_mutex_unlock(&zb->mutex);
	if (s) {
		cid = zoo_client_id(s->zh);
		sid = cid ? cid->client_id : 0;
		zk_sess_put(zb, s);
	}
	pthread_mutex_lock(&zb->mutex);
	/* the line describes one moment: no id of a session that went (or
	 * stopped being connected) while we asked */
	if (!zb->sess || zb->sess->gen != gen ||
	    zb->state != ZOO_CONNECTED_STATE)
		sid = 0;
	for (size_t b = 0; b < ZK_BUCKETS; b++)
		for (struct zk_owner *ow = zb->owners[b]; ow; ow = ow->next) {
			bool has = false;

			for (struct zk_node *n = ow->nodes; n; n = n->next)
				has = has || n->ranges.n;
			held += has;
		}
	snprintf(buf, len,
		 "health=%s session=0x%" PRIx64 " timeout_ms=%d "
		 "held=%zu waiting=%zu wakeups=%" PRIu64 " sessions_lost="
		 "%" PRIu64,
		 zb->sess ? zk_state_name(zb->state) : "expired", (uint64_t)sid,
		 zb->negotiated_ms ? zb->negotiated_ms : zb->timeout_ms, held,
		 zb->nwaiters, zb->wakeups, zb->sessions_lost);
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

const struct dl_backend_ops dl_zk_ops = {
	.scheme = "zk",
	.guarantee = "strong: ZooKeeper quorum writes (linearizable), FIFO "
		     "queue per file; the session is the lease: a host cut off "
		     "longer than the session timeout loses its locks "
		     "(reported "
		     "lost before the server can re-grant them)",
	.shared = true,
	.check_uri = zk_check_uri,
	.open = zk_open,
	.close = zk_close,
	.lock = zk_lock,
	.unlock = zk_unlock,
	.cancel = zk_cancel,
	.release_owner = zk_release_owner,
	.getlk = zk_getlk,
	.list = zk_list,
	.status = zk_status,
	.break_lock = zk_break_lock,
	.poke = zk_poke,
	.version = zk_version,
	.bump = zk_bump,
};

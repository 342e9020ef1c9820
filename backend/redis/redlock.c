/*
 * redlock.c - Redlock: a lock on several independent nodes, granted when
 * a majority granted it within its validity (ttl - elapsed - drift).
 *
 * Owns: the quorum decision (redis_redlock_try()), undoing a minority or
 * late grant with the undo records the script returned, removing our
 * notify-mode waiters, lock() for several nodes, and the retry of a
 * queued wait (run by the keeper when a node published "W" or at the
 * re-check).  Does not: keep per-node lease state (lease.c renames a node
 * whose lease is gone, and loses the whole lease when that leaves a lock
 * without a majority), or act on a "G" publish (sub.c ignores it here).
 *
 * Locking: every round trip is made with no mutex held; rb->mutex is
 * taken briefly to register, re-insert, unlink or answer a wait, to add a
 * held entry and to queue a job.  A wait being sent (RW_SENDING) is freed
 * only by the lock() call that sent it.  A wait being retried is marked
 * busy under the mutex; until the retry clears it nobody else frees it
 * (cancel() only sets cancelled, losses skip it), so the retry may use it
 * again once it re-takes the mutex.  Callbacks: redis_redlock_lock() runs
 * on the caller's thread and reports nothing itself, but
 * redis_lease_gone() may (losses and failures of the lease's other locks
 * and waits); redis_redlock_retry() runs on the keeper and answers its
 * wait there.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "backend/redis/internal.h"

/* ---- on every node of a mask (no mutex held) ----------------------------- */

/* Redlock: take back what nodes in @mask granted, with their undo records
 * @prev */
static void redis_redlock_undo(struct redis_backend *rb,
			       const struct dl_lock_req *req, unsigned mask,
			       char **prev)
{
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		redisReply *r;
		uint64_t name = 0;

		if (!(mask & (1u << i)))
			continue;
		r = redis_node_simple(rb, &rb->nodes[i], "undo", req,
				      prev[i] ? prev[i] : "", NULL, &name);
		if (r) {
			freeReplyObject(r);
		} else {
			/* the lock expires with the node's lease at worst */
			pthread_mutex_lock(&rb->mutex);
			redis_job_add(rb, RJ_UNLOCK, i, redis_node_name(rb, i),
				      req, DL_TOKEN_ALL);
			pthread_mutex_unlock(&rb->mutex);
		}
	}
}

/* Redlock: remove our queued record of @req on the nodes in @mask; a node
 * that cannot be reached gets it removed by the keeper later */
void redis_redlock_cancel_on(struct redis_backend *rb,
			     const struct dl_lock_req *req, unsigned mask)
{
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		redisReply *r;

		if (!(mask & (1u << i)))
			continue;
		r = redis_node_simple(rb, &rb->nodes[i], "cancel", req, NULL,
				      NULL, NULL);
		if (r) {
			freeReplyObject(r);
			continue;
		}
		pthread_mutex_lock(&rb->mutex);
		redis_job_add(rb, RJ_CANCEL, i, redis_node_name(rb, i), req,
			      DL_TOKEN_ALL);
		pthread_mutex_unlock(&rb->mutex);
	}
}

/* ---- the quorum, lock() and the retry ------------------------------------ */

/*
 * Redlock: try on every node under gen @gen.  Returns 0 (granted by a
 * majority within the validity, *mask_out = granting nodes), -EAGAIN (a
 * majority answered but not all granted; queued as notify-waiter where
 * @wait_id, with enqueue time @since), or -ENOLCK (no majority answered,
 * or the lease changed).
 */
static int redis_redlock_try(struct redis_backend *rb,
			     const struct dl_lock_req *req, uint64_t wait_id,
			     int64_t since, uint64_t gen, uint64_t *token,
			     unsigned *mask_out)
{
	char *prev[REDIS_URI_MAX_NODES] = { 0 };
	unsigned granted = 0, answered = 0, queued = 0;
	int64_t start = dl_mono_ms(), validity;
	uint64_t best = 0;
	int ret;

	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		enum redis_outcome o = RO_ERROR;
		uint64_t g, name, tok = 0;
		bool indoubt = false, settled;
		char lease[17];

		pthread_mutex_lock(&rb->mutex);
		settled = redis_jobs_settle(rb, i, req) == 0;
		pthread_mutex_unlock(&rb->mutex);
		if (!settled)
			continue; /* that node does not answer this time */
		for (int attempt = 0; attempt < 2; attempt++) {
			if (redis_node_lease(rb, n, lease, &g, &name) < 0 ||
			    g != gen) {
				o = RO_ERROR;
				indoubt = false;
				break;
			}
			redis_fault_sleep(rb->fault.delay_lock);
			o = redis_node_lock(rb, n, lease, req, wait_id, 'n',
					    since, &tok, &prev[i], &indoubt);
			if (o != RO_LEASE)
				break;
			redis_lease_gone(rb, n, name);
		}
		if (o == RO_ERROR && indoubt) {
			pthread_mutex_lock(&rb->mutex);
			redis_job_add(rb, wait_id ? RJ_CANCEL : RJ_UNLOCK, i,
				      name, req, DL_TOKEN_ALL);
			pthread_mutex_unlock(&rb->mutex);
		}
		if (o == RO_GRANTED) {
			granted |= 1u << i;
			if (tok > best)
				best = tok;
		}
		if (o == RO_QUEUED)
			queued |= 1u << i;
		if (o == RO_GRANTED || o == RO_QUEUED || o == RO_CONFLICT)
			answered |= 1u << i;
	}
	validity = rb->uri.ttl_ms - (dl_mono_ms() - start) - rb->drift_ms;
	if (redis_popcount(granted) >= rb->majority && validity > 0) {
		*token = best;
		*mask_out = granted;
		if (queued)
			redis_redlock_cancel_on(rb, req, queued);
		ret = 0;
	} else {
		redis_redlock_undo(rb, req, granted, prev);
		ret = redis_popcount(answered) >= rb->majority ? -EAGAIN
							       : -ENOLCK;
		if (ret == -ENOLCK && queued)
			redis_redlock_cancel_on(rb, req, queued);
	}
	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		free(prev[i]);
	return ret;
}

int redis_redlock_lock(struct redis_backend *rb, const struct dl_lock_req *req,
		       struct dl_grant *grant)
{
	char *none[REDIS_URI_MAX_NODES] = { 0 };
	struct redis_held *spare = NULL;
	struct redis_wait *w = NULL;
	int64_t since = dl_now_ms();
	unsigned mask = 0;
	uint64_t gen, token = 0;
	bool undo = false;
	int ret;

	if (req->wait_id) {
		w = redis_wait_new(rb, req);
		if (!w)
			return -ENOMEM;
	} else {
		spare = redis_held_alloc(rb, req);
		if (!spare)
			return -ENOMEM;
	}
	pthread_mutex_lock(&rb->mutex);
	gen = rb->epoch;
	if (w) {
		w->gen = gen;
		w->since = since;
		w->state = RW_SENDING;
		redis_wait_insert(rb, w);
	}
	pthread_mutex_unlock(&rb->mutex);
	ret = redis_redlock_try(rb, req, req->wait_id, since, gen, &token,
				&mask);
	pthread_mutex_lock(&rb->mutex);
	if (rb->epoch != gen && (ret == 0 || ret == -EAGAIN)) {
		/* under a lease given up meanwhile */
		undo = ret == 0;
		ret = -ENOLCK;
	}
	if (ret == 0) {
		redis_held_add(rb, w ? &w->spare : &spare, req->resource,
			       req->space, req->owner, mask, token);
		grant->token = token;
		grant->lease = gen;
	}
	if (w)
		redis_wait_unlink(rb, w);
	if (ret == -EAGAIN && w) {
		w->state = RW_QUEUED;
		redis_wait_insert(rb, w);
		w = NULL;
		ret = -EINPROGRESS;
	}
	pthread_mutex_unlock(&rb->mutex);
	if (undo)
		redis_redlock_undo(rb, req, mask, none);
	redis_wait_free(w);
	redis_held_free(spare);
	return ret;
}

/* Redlock: retry wait @id on every node */
void redis_redlock_retry(struct redis_backend *rb, uint64_t id)
{
	char *none[REDIS_URI_MAX_NODES] = { 0 };
	struct redis_note *notes = NULL;
	struct dl_lock_req req;
	struct redis_wait *w;
	uint64_t token = 0, gen;
	int64_t since;
	unsigned mask = 0;
	bool drop = false;
	char *res;
	int ret;

	pthread_mutex_lock(&rb->mutex);
	w = redis_wait_find(rb, id);
	if (!w || w->busy || w->state != RW_QUEUED) {
		pthread_mutex_unlock(&rb->mutex);
		return;
	}
	res = strdup(w->res);
	if (!res) {
		pthread_mutex_unlock(&rb->mutex);
		return; /* the next re-check tries again */
	}
	w->busy = true;
	w->woken = false;
	gen = w->gen;
	since = w->since;
	req = w->req;
	pthread_mutex_unlock(&rb->mutex);
	req.resource = res;
	ret = redis_redlock_try(rb, &req, id, since, gen, &token, &mask);
	pthread_mutex_lock(&rb->mutex);
	w->busy = false; /* nobody frees a busy wait */
	if (w->cancelled || rb->epoch != gen) {
		redis_wait_unlink(rb, w);
		if (!w->cancelled)
			redis_wait_answer(w, 0, -ENOLCK, &notes);
		redis_wait_free(w);
		drop = true;
	} else if (ret == 0) {
		redis_wait_unlink(rb, w);
		redis_held_add(rb, &w->spare, w->res, w->req.space,
			       w->req.owner, mask, token);
		redis_wait_answer(w, token, 0, &notes);
		redis_wait_free(w);
	}
	pthread_mutex_unlock(&rb->mutex);
	if (drop) {
		/* nobody waits for it any more: give it back */
		if (ret == 0)
			redis_redlock_undo(rb, &req, mask, none);
		redis_redlock_cancel_on(rb, &req, (1u << rb->uri.nnodes) - 1);
	}
	free(res);
	redis_notes_run(rb, notes);
}

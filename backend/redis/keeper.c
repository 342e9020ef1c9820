/*
 * keeper.c - the keeper thread: renewals, ending lease names given up,
 * the left-over jobs, and the safety re-check of queued waits.
 *
 * Owns: the keeper's schedule (a renewal every ttl/3, a re-check every
 * REDIS_RECHECK_MS while there are waits or jobs), rb->kick and
 * rb->kick_renew (others set them, the keeper clears them when it acts),
 * and running rb->jobs.  Does not: decide a lease's fate (lease.c),
 * deliver a grant itself (sub.c's redis_deliver_grant() does, for the
 * re-check too), or retry a Redlock wait itself (redlock.c).
 *
 * Locking: the loop runs under rb->mutex and sleeps on rb->cond
 * (redis_nap()), and drops the mutex for every round trip: it takes a
 * snapshot under the mutex (names to drop, the job list, the wait ids to
 * re-check grouped by resource), works without it, and looks each wait up
 * again by id under the mutex before answering it (it may have been
 * answered, cancelled or failed meanwhile; one being cancelled is left to
 * cancel()).  The job list is taken out of rb->jobs as a whole into
 * rb->running, so only the keeper runs jobs; unfinished ones are put back
 * when the pass ends, and a lock call that must wait for its owner's jobs
 * (redis_jobs_settle(), which sees both lists) waits for the end of a
 * pass (rb->gate); a lock with no job of its own does not wait.  Its callbacks
 * (grants and failures of the re-check, what renewals and Redlock
 * retries decide) are made on this thread with no mutex held.  It is
 * woken by a first wait (redis_wait_insert()), a job (redis_job_add()), a
 * lease change, a subscriber (re)connecting or hearing "W", and close().
 *
 * Known wrinkle (Redlock, left as it is): the loop ends each pass by
 * setting rb->kick while any wait is marked woken, but only waits in
 * RW_QUEUED are retried (which clears the mark).  A "W" that arrives for
 * a wait still being sent by lock() therefore keeps the keeper passing
 * without a nap - re-checking every other queued wait each time - until
 * that lock() call has its answers from every node and re-queues the
 * wait (or drops it).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "backend/redis/internal.h"

#define REDIS_RECHECK_MS 1000 /* safety re-check of queued waits */
#define REDIS_POLL_MAX	 512  /* wait ids per re-check call */

/* sleep @ms or until stopping, on rb->cond (mutex held): the keeper and
 * the subscribers; any broadcast of rb->cond ends it early */
void redis_nap(struct redis_backend *rb, int64_t ms)
{
	int64_t until = dl_mono_ms() + ms;
	struct timespec ts = { until / 1000, (until % 1000) * 1000000 };

	if (!rb->stopping)
		pthread_cond_timedwait(&rb->cond, &rb->mutex, &ts);
}

/* ---- the re-check and the jobs (no mutex held) --------------------------- */

/* the safety re-check of our queued waits on @resource (single node) */
static void redis_keeper_poll(struct redis_backend *rb, const char *resource,
			      const uint64_t *ids, size_t nids)
{
	struct redis_node *n = &rb->nodes[0];
	struct redis_note *notes = NULL;
	char lease[17];
	char(*hex)[17];
	const char **extra;
	redisReply *r;
	uint64_t gen, name;
	int ret;

	if (redis_node_lease(rb, n, lease, &gen, &name) < 0)
		return;
	hex = calloc(nids, sizeof(*hex));
	extra = calloc(nids, sizeof(*extra));
	if (!hex || !extra)
		goto out_free; /* the next re-check tries again */
	for (size_t i = 0; i < nids; i++) {
		redis_hex16(hex[i], ids[i]);
		extra[i] = hex[i];
	}
	/* one call per resource, in slices of a bounded size */
	for (size_t off = 0; off < nids; off += REDIS_POLL_MAX) {
		size_t cnt = nids - off < REDIS_POLL_MAX ? nids - off
							 : REDIS_POLL_MAX;

		ret = redis_node_script(rb, n, "poll", resource, lease,
					(int)cnt, extra + off, NULL, &r, NULL);
		if (ret < 0)
			break;
		pthread_mutex_lock(&rb->mutex);
		for (size_t i = 0; i < cnt && i < r->elements; i++) {
			const redisReply *e = r->element[i];
			struct redis_wait *w =
				redis_wait_find(rb, ids[off + i]);
			uint64_t tok;

			if (!w || w->name != name || w->gen != rb->epoch ||
			    w->state != RW_QUEUED)
				continue;
			if (e->type == REDIS_REPLY_STRING && e->len == 1 &&
			    e->str[0] == 'q')
				continue;
			if (redis_reply_u64(e, &tok)) {
				if (!rb->fault.delay_deliver)
					redis_deliver_grant(rb, name,
							    w->wait_id, tok, 1,
							    &notes);
			} else if (!w->cancelling) {
				/* neither queued nor granted: the server
				 * lost it (restart, our lease purged) */
				redis_wait_unlink(rb, w);
				redis_wait_answer(w, 0, -ENOLCK, &notes);
				redis_wait_free(w);
			}
		}
		pthread_mutex_unlock(&rb->mutex);
		freeReplyObject(r);
	}
out_free:
	free(hex);
	free(extra);
	redis_notes_run(rb, notes);
}

/* work left by failed calls; a job whose node is still down stays.  The
 * pass's jobs stay in rb->running, unchanged but for their done mark,
 * until it ends: redis_job_pending() sees them */
static void redis_keeper_jobs(struct redis_backend *rb)
{
	struct redis_job *run;
	size_t done = 0;

	pthread_mutex_lock(&rb->mutex);
	run = rb->jobs;
	rb->jobs = NULL;
	rb->running = run;
	dl_jobgate_begin(&rb->gate);
	pthread_mutex_unlock(&rb->mutex);
	for (struct redis_job *j = run; j; j = j->next) {
		struct redis_node *n = &rb->nodes[j->node];
		redisReply *r = NULL;
		uint64_t name = 0;
		char max[24];

		pthread_mutex_lock(&rb->mutex);
		name = n->name;
		pthread_mutex_unlock(&rb->mutex);
		if (j->name != name) { /* that lease is given up anyway */
			j->done = true;
			continue;
		}
	again:
		snprintf(max, sizeof(max), "%" PRIu64, j->max_token);
		switch (j->kind) {
		case RJ_RELEASE:
			r = redis_node_simple(rb, n, "release", &j->req, max,
					      NULL, &name);
			break;
		case RJ_UNLOCK:
			j->req.type = DL_UNLCK;
			r = redis_node_simple(rb, n, "unlock", &j->req, max,
					      NULL, &name);
			break;
		case RJ_CANCEL:
			r = redis_node_simple(rb, n, "cancel", &j->req, NULL,
					      NULL, &name);
			if (r && name == j->name && r->elements >= 2) {
				uint64_t tok = DL_TOKEN_ALL;

				/* granted meanwhile: unlock what it got */
				redis_reply_u64(r->element[1], &tok);
				freeReplyObject(r);
				j->kind = RJ_UNLOCK;
				j->max_token = tok;
				goto again;
			}
			break;
		}
		if (r && name == j->name && j->kind != RJ_CANCEL &&
		    r->elements && redis_reply_int(r->element[0]) == 0) {
			/* the owner holds nothing more there */
			pthread_mutex_lock(&rb->mutex);
			if (rb->uri.nnodes == 1)
				redis_held_remove(rb, j->res, j->req.space,
						  j->req.owner, j->max_token);
			pthread_mutex_unlock(&rb->mutex);
		}
		if (r) {
			freeReplyObject(r);
			j->done = true;
		}
	}
	pthread_mutex_lock(&rb->mutex);
	while (run) {
		struct redis_job *j = run;

		run = j->next;
		if (j->done) {
			free(j);
			done++;
			continue;
		}
		j->next = rb->jobs;
		rb->jobs = j;
	}
	rb->running = NULL;
	rb->njobs -= done;
	dl_jobgate_end(&rb->gate); /* wakes redis_jobs_settle() */
	pthread_mutex_unlock(&rb->mutex);
}

struct redis_job_key {
	struct redis_backend *rb;
	unsigned node;
	const struct dl_lock_req *req;
};

static bool redis_job_in(const struct redis_job *j,
			 const struct redis_job_key *k)
{
	for (; j; j = j->next)
		if (j->node == k->node && j->req.owner == k->req->owner &&
		    j->req.space == k->req->space &&
		    strcmp(j->res, k->req->resource) == 0)
			return true;
	return false;
}

/* a job of the caller's owner there: waiting, or in the keeper's pass */
static bool redis_job_pending(void *arg)
{
	const struct redis_job_key *k = arg;

	return redis_job_in(k->rb->jobs, k) || redis_job_in(k->rb->running, k);
}

/* before a lock of @req is sent to node @node: that owner's jobs on that
 * resource there are done first (backend/util/jobgate.h); mutex held.  0,
 * or -ENOLCK: one is left and the lock must not be sent */
int redis_jobs_settle(struct redis_backend *rb, unsigned node,
		      const struct dl_lock_req *req)
{
	struct redis_job_key k = { rb, node, req };

	if (!rb->jobs && !rb->running)
		return 0; /* the common case */
	return dl_jobgate_settle(&rb->gate, rb->uri.ttl_ms, redis_job_pending,
				 &k);
}

/* ---- the keeper thread --------------------------------------------------- */

struct redis_pollset {
	char *resource;
	uint64_t *ids;
	size_t n;
};

void *redis_keeper_main(void *arg)
{
	struct redis_backend *rb = arg;
	int64_t renew_every = rb->uri.ttl_ms / 3;
	int64_t next_renew = 0, next_check = 0;

	pthread_mutex_lock(&rb->mutex);
	dl_jobgate_keeper_start(&rb->gate);
	while (!rb->stopping) {
		int64_t now = dl_mono_ms(), wake;
		bool renew, check, jobs, drops = false;
		char drop[REDIS_URI_MAX_NODES][17];

		renew = rb->kick_renew || now >= next_renew;
		check = (rb->nwaits || rb->jobs) &&
			(rb->kick || now >= next_check);
		jobs = check && rb->jobs != NULL;
		for (unsigned i = 0; i < rb->uri.nnodes; i++)
			if (rb->nodes[i].drop[0])
				drops = true;
		if (!renew && !check && !drops) {
			wake = next_renew;
			if ((rb->nwaits || rb->jobs) && next_check < wake)
				wake = next_check;
			redis_nap(rb, wake - now);
			continue;
		}
		rb->kick = false;
		rb->kick_renew = false;
		for (unsigned i = 0; i < rb->uri.nnodes; i++) {
			memcpy(drop[i], rb->nodes[i].drop, 17);
			rb->nodes[i].drop[0] = '\0';
		}
		pthread_mutex_unlock(&rb->mutex);

		/* end abandoned leases at once: their records die (a node
		 * that cannot be reached lets them expire) */
		for (unsigned i = 0; i < rb->uri.nnodes; i++) {
			redisReply *r;

			if (drop[i][0] &&
			    redis_node_script(rb, &rb->nodes[i], "drop", "",
					      drop[i], 0, NULL, NULL, &r,
					      NULL) == 0)
				freeReplyObject(r);
		}
		if (renew) {
			next_renew = dl_mono_ms() + renew_every;
			for (unsigned i = 0; i < rb->uri.nnodes; i++)
				redis_node_renew(rb, &rb->nodes[i]);
		}
		if (check)
			next_check = dl_mono_ms() + REDIS_RECHECK_MS;
		if (jobs)
			redis_keeper_jobs(rb);
		if (check) {
			struct redis_pollset *sets = NULL;
			uint64_t *retry = NULL;
			size_t nsets = 0, nretry = 0;

			/* snapshot: (resource, ids) groups, or Redlock ids */
			pthread_mutex_lock(&rb->mutex);
			for (size_t b = 0; b < REDIS_BUCKETS; b++) {
				for (struct redis_wait *w = rb->waits[b]; w;
				     w = w->next) {
					if (w->state != RW_QUEUED ||
					    w->cancelling || w->busy)
						continue;
					if (rb->uri.nnodes > 1) {
						uint64_t *p = realloc(
							retry,
							(nretry + 1) *
								sizeof(*p));

						if (!p)
							continue;
						retry = p;
						retry[nretry++] = w->wait_id;
						continue;
					}
					size_t s;

					for (s = 0; s < nsets; s++)
						if (strcmp(sets[s].resource,
							   w->res) == 0)
							break;
					if (s == nsets) {
						struct redis_pollset *p = realloc(
							sets, (nsets +
							       1) * sizeof(*p));

						if (!p)
							continue;
						sets = p;
						sets[s] = (struct redis_pollset){
							strdup(w->res), NULL, 0
						};
						if (!sets[s].resource)
							continue;
						nsets++;
					}
					uint64_t *ids = realloc(
						sets[s].ids,
						(sets[s].n + 1) * sizeof(*ids));

					if (!ids)
						continue;
					sets[s].ids = ids;
					ids[sets[s].n++] = w->wait_id;
				}
			}
			pthread_mutex_unlock(&rb->mutex);
			for (size_t s = 0; s < nsets; s++) {
				redis_keeper_poll(rb, sets[s].resource,
						  sets[s].ids, sets[s].n);
				free(sets[s].resource);
				free(sets[s].ids);
			}
			for (size_t i = 0; i < nretry; i++)
				redis_redlock_retry(rb, retry[i]);
			free(sets);
			free(retry);
		}
		pthread_mutex_lock(&rb->mutex);
		/* Redlock: a "retry" publish is served at once */
		if (rb->uri.nnodes > 1) {
			for (size_t b = 0; b < REDIS_BUCKETS && !rb->kick; b++)
				for (struct redis_wait *w = rb->waits[b]; w;
				     w = w->next)
					if (w->woken)
						rb->kick = true;
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	return NULL;
}

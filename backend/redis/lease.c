/*
 * lease.c - our lease on each node: its names, registration, renewal,
 * the fence the daemon reads (struct dl_lease), what happens when it is
 * lost, and the watchdog thread that loses it by the clock.
 *
 * Owns: rb->epoch (= lease->gen) and rb->names, each node's name,
 * registered, renewed_at, trusted and drop, the acks a renewal carries,
 * and every store to *rb->lease after open().  Does not: schedule the
 * renewals (the keeper calls redis_node_renew() every ttl/3 or when
 * kicked), send the "drop" of a name given up (the keeper does, from
 * node->drop), or deliver grants (sub.c).
 *
 * Locking: rb->mutex guards all of the above.  Functions marked "mutex
 * held" are called with it; redis_node_lease() and redis_node_renew()
 * take it themselves and drop it for their round trip, then check under
 * it that the node's name (and gen) did not change meanwhile before they
 * trust the answer: a name is never reused, so an answer about an old
 * name is ignored.  *rb->lease is stored under rb->mutex, gen before
 * until_ms (redis_lose_all()), and until_ms after every change of a
 * deadline, of the trusted nodes or of a held mask (redis_lease_publish()).
 * A loss (redis_lose_all(), redis_lose_node()) bumps the gen, reports and
 * fails into notes under the mutex, renames the node(s) (which shuts the
 * subscriber's socket down so it resubscribes) and kicks the keeper; the
 * callbacks are made by the thread that saw the loss once it drops the
 * mutex: redis_lease_gone() on the keeper (a renewal) or on a lock()
 * caller (a refused request), the watchdog on its own thread.
 *
 * The watchdog sleeps on rb->cond until the earliest deadline of a
 * trusted node and loses the lease (Redlock: that node) when it passes;
 * whatever moves a deadline broadcasts rb->cond.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "backend/redis/internal.h"
#include "backend/util/log.h"

/* ---- names and the fence (mutex held) ------------------------------------ */

/* the name of our lease number @epoch, as the server sees it: 16 hex
 * digits, never the same for two incarnations or two numbers */
void redis_lease_name(const struct redis_backend *rb, uint64_t epoch,
		      char buf[17])
{
	redis_hex16(buf, rb->inc_base + epoch * 0x9E3779B97F4A7C15ULL);
}

static int64_t redis_node_deadline(const struct redis_backend *rb,
				   const struct redis_node *n)
{
	/* by our monotonic clock, strictly before the server (which started
	 * counting after our send) expires it */
	return n->renewed_at + rb->uri.ttl_ms - rb->margin_ms - rb->drift_ms;
}

/* the time until which a majority of the nodes in @mask is trusted, 0 */
static int64_t redis_mask_until(const struct redis_backend *rb, unsigned mask)
{
	int64_t d[REDIS_URI_MAX_NODES];
	unsigned k = 0;

	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		if ((mask & (1u << i)) && rb->nodes[i].trusted)
			d[k++] = redis_node_deadline(rb, &rb->nodes[i]);
	if (k < rb->majority)
		return 0;
	/* the majority-th latest deadline: sort descending (k <= 7) */
	for (unsigned i = 0; i < k; i++)
		for (unsigned j = i + 1; j < k; j++)
			if (d[j] > d[i]) {
				int64_t t = d[i];

				d[i] = d[j];
				d[j] = t;
			}
	return d[rb->majority - 1];
}

/*
 * Store lease->until_ms for the current gen: the earliest time at which a
 * lock we hold could stop being held by a majority of its nodes (single
 * node: that node's deadline), 0 without a trusted lease.  Called after
 * every change of a deadline, of the trusted nodes or of a held mask.
 */
void redis_lease_publish(struct redis_backend *rb)
{
	unsigned all = (1u << rb->uri.nnodes) - 1;
	int64_t until = redis_mask_until(rb, all);

	for (unsigned m = 1; m <= all && until; m++) {
		int64_t u;

		if (!rb->mask_refs[m])
			continue;
		u = redis_mask_until(rb, m);
		if (u < until)
			until = u;
	}
	atomic_store(&rb->lease->until_ms, until);
}

/* ---- losses (mutex held, but for redis_lease_gone()) --------------------- */

/*
 * Our queued waits in bucket @b end with -ENOLCK: the lease they were
 * queued under is gone.  Those in flight (a lock() call, a keeper retry)
 * are left to their thread, which sees the new gen; one being cancelled
 * is left to redis_cancel(), which returns 0 for it.  Mutex held.
 */
static void redis_fail_queued_waits(struct redis_backend *rb, size_t b,
				    struct redis_note **notes)
{
	for (struct redis_wait **p = &rb->waits[b]; *p;) {
		struct redis_wait *w = *p;

		if (w->state == RW_SENDING || w->busy) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		rb->nwaits--;
		if (w->cancelling) {
			w->end = RWE_LOST;
			continue;
		}
		redis_wait_answer(w, 0, -ENOLCK, notes);
		redis_wait_free(w);
	}
}

/* node @n gets a fresh lease name; the old one is ended there (keeper) and
 * never registered again, so records reported lost cannot revive */
static void redis_node_rename(struct redis_backend *rb, struct redis_node *n)
{
	redis_lease_name(rb, n->name, n->drop);
	n->name = ++rb->names;
	n->registered = false;
	n->trusted = false;
	/* resubscribe on the new lease's channel */
	if (n->sub_fd >= 0)
		shutdown(n->sub_fd, SHUT_RDWR);
}

/*
 * Every lock of this daemon is gone or cannot be trusted: bump the gen
 * first (grants of the old one are never trusted again), report each
 * held lock lost, fail each queued wait, and serve new requests under a
 * fresh lease with fresh names.  Mutex held; callbacks go to @notes.
 */
static void redis_lose_all(struct redis_backend *rb, const char *why,
			   struct redis_note **notes)
{
	char old[17];
	size_t nlost = 0;

	rb->epoch++;
	atomic_store(&rb->lease->gen, rb->epoch);
	atomic_store(&rb->lease->until_ms, 0);
	redis_lease_name(rb, rb->nodes[0].name, old);
	for (size_t b = 0; b < REDIS_BUCKETS; b++) {
		while (rb->held[b]) {
			redis_held_lose(rb, &rb->held[b], -ENOLCK, notes);
			nlost++;
		}
		redis_fail_queued_waits(rb, b, notes);
	}
	/* left-over work of the old names: their records die with them */
	while (rb->jobs) {
		struct redis_job *j = rb->jobs;

		rb->jobs = j->next;
		rb->njobs--;
		free(j);
	}
	rb->nacks = 0;
	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		redis_node_rename(rb, &rb->nodes[i]);
	rb->kick = true;
	rb->kick_renew = true;
	pthread_cond_broadcast(&rb->cond);
	dl_log(nlost ? DL_LOG_WARNING : DL_LOG_INFO,
	       "redis: lease %s %s: %zu lock(s) lost, new lease %" PRIu64 " for"
	       " new"
	       " req"
	       "uest"
	       "s",
	       old, why, nlost, rb->epoch);
}

/*
 * Redlock: node @n can no longer vouch for our records.  If some held
 * lock is left without a majority of trusted nodes (or no majority is
 * trusted at all), the whole lease is lost: one gen fences every grant,
 * so a lost lock must not leave the others trusted (redis_lose_all).  Otherwise
 * only @n takes a new name.  Mutex held.
 */
static void redis_lose_node(struct redis_backend *rb, struct redis_node *n,
			    const char *why, struct redis_note **notes)
{
	unsigned trusted = 0, all = (1u << rb->uri.nnodes) - 1;
	bool lost = false;

	n->trusted = false;
	dl_log(DL_LOG_WARNING, "redis %s:%d: lease %s", n->addr.host,
	       n->addr.port, why);
	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		if (rb->nodes[i].trusted)
			trusted |= 1u << i;
	if (redis_popcount(trusted) < rb->majority)
		lost = true;
	for (unsigned m = 1; m <= all && !lost; m++)
		if (rb->mask_refs[m] &&
		    redis_popcount(m & trusted) < rb->majority)
			lost = true;
	if (lost) {
		redis_lose_all(rb, why, notes);
		return;
	}
	/* the records on @n are not ours any more */
	for (size_t b = 0; b < REDIS_BUCKETS; b++)
		for (struct redis_held *h = rb->held[b]; h; h = h->next) {
			redis_mask_ref(rb, h->mask, -1);
			h->mask &= ~(1u << n->idx);
			redis_mask_ref(rb, h->mask, 1);
		}
	redis_node_rename(rb, n);
	rb->kick = true;
	rb->kick_renew = true;
	pthread_cond_broadcast(&rb->cond);
	redis_lease_publish(rb);
}

/* the server says our lease @name on @n is gone (restarted empty, expired) */
void redis_lease_gone(struct redis_backend *rb, struct redis_node *n,
		      uint64_t name)
{
	struct redis_note *notes = NULL;

	pthread_mutex_lock(&rb->mutex);
	if (n->name == name) {
		if (rb->uri.nnodes == 1)
			redis_lose_all(rb, "is gone on the server", &notes);
		else
			redis_lose_node(rb, n, "is gone on the server", &notes);
	}
	pthread_mutex_unlock(&rb->mutex);
	redis_notes_run(rb, notes);
}

/* ---- registration and renewal (no mutex held) ---------------------------- */

/*
 * Make sure our current lease exists on @n: register it if needed.
 * Returns 0 with the lease name in @lease, its id in *name and the gen it
 * belongs to in *gen, or -ENOLCK.
 */
int redis_node_lease(struct redis_backend *rb, struct redis_node *n,
		     char lease[17], uint64_t *gen, uint64_t *name)
{
	const char *extra[1] = { rb->host_id };
	redisReply *r;
	int64_t sent;
	bool have;
	int ret;

	pthread_mutex_lock(&rb->mutex);
	*gen = rb->epoch;
	*name = n->name;
	have = n->registered;
	pthread_mutex_unlock(&rb->mutex);
	redis_lease_name(rb, *name, lease);
	if (have)
		return 0;
	sent = dl_mono_ms();
	ret = redis_node_script(rb, n, "reg", "", lease, 1, extra, NULL, &r,
				NULL);
	if (ret < 0)
		return -ENOLCK;
	freeReplyObject(r);
	pthread_mutex_lock(&rb->mutex);
	if (n->name == *name && rb->epoch == *gen) {
		n->registered = true;
		n->renewed_at = sent;
		n->trusted = true;
		redis_lease_publish(rb);
		pthread_cond_broadcast(&rb->cond); /* new watchdog deadline */
	} else {
		ret = -ENOLCK;
	}
	pthread_mutex_unlock(&rb->mutex);
	if (ret == 0)
		dl_log(DL_LOG_DEBUG, "redis %s:%d: lease %s registered",
		       n->addr.host, n->addr.port, lease);
	return ret;
}

/* renew our lease on @n, forgetting delivered grants; one round trip */
void redis_node_renew(struct redis_backend *rb, struct redis_node *n)
{
	char lease[17], ackbuf[REDIS_MAX_ACKS][17];
	const char *extra[REDIS_MAX_ACKS];
	uint64_t acks[REDIS_MAX_ACKS];
	size_t nacks = 0;
	redisReply *r;
	uint64_t gen, name;
	int64_t sent;
	int ret;

	if (redis_node_lease(rb, n, lease, &gen, &name) < 0)
		return;
	pthread_mutex_lock(&rb->mutex);
	if (n->name == name && rb->uri.nnodes == 1) {
		nacks = rb->nacks;
		memcpy(acks, rb->acks, nacks * sizeof(acks[0]));
		rb->nacks = 0;
	}
	pthread_mutex_unlock(&rb->mutex);
	for (size_t i = 0; i < nacks; i++) {
		redis_hex16(ackbuf[i], acks[i]);
		extra[i] = ackbuf[i];
	}
	sent = dl_mono_ms();
	ret = redis_node_script(rb, n, "renew", "", lease, (int)nacks,
				nacks ? extra : NULL, NULL, &r, NULL);
	if (ret < 0) {
		atomic_fetch_add(&rb->lease->renew_failures, 1);
		/* forget them next time */
		pthread_mutex_lock(&rb->mutex);
		for (size_t i = 0;
		     i < nacks && n->name == name && rb->nacks < REDIS_MAX_ACKS;
		     i++)
			rb->acks[rb->nacks++] = acks[i];
		pthread_mutex_unlock(&rb->mutex);
		return;
	}
	if (r->elements >= 1 && redis_reply_int(r->element[0]) == 1) {
		struct redis_note *notes = NULL;

		atomic_fetch_add(&rb->lease->renewals, 1);
		pthread_mutex_lock(&rb->mutex);
		if (n->name == name && n->registered) {
			n->renewed_at = sent;
			n->trusted = true;
			redis_lease_publish(rb);
			pthread_cond_broadcast(&rb->cond);
		}
		/* breaks whose publish we may have missed */
		for (size_t i = 1; i < r->elements; i++)
			if (r->element[i]->type == REDIS_REPLY_STRING)
				redis_deliver_break(rb, n, name,
						    r->element[i]->str,
						    r->element[i]->len, &notes);
		pthread_mutex_unlock(&rb->mutex);
		redis_notes_run(rb, notes);
	} else {
		atomic_fetch_add(&rb->lease->renew_failures, 1);
		redis_lease_gone(rb, n, name);
	}
	freeReplyObject(r);
}

/* ---- the watchdog: lost before re-granted -------------------------------- */

void *redis_watchdog_main(void *arg)
{
	struct redis_backend *rb = arg;

	pthread_mutex_lock(&rb->mutex);
	while (!rb->stopping) {
		int64_t now = dl_mono_ms(), next = 0;
		struct redis_note *notes = NULL;

		for (unsigned i = 0; i < rb->uri.nnodes; i++) {
			struct redis_node *n = &rb->nodes[i];
			int64_t deadline;

			if (!n->trusted)
				continue;
			deadline = redis_node_deadline(rb, n);
			if (now < deadline) {
				if (!next || deadline < next)
					next = deadline;
				continue;
			}
			if (rb->uri.nnodes == 1)
				redis_lose_all(rb,
					       "could not be renewed in time",
					       &notes);
			else
				redis_lose_node(rb, n,
						"could not be renewed in time",
						&notes);
		}
		if (notes) {
			pthread_mutex_unlock(&rb->mutex);
			redis_notes_run(rb, notes);
			pthread_mutex_lock(&rb->mutex);
			continue;
		}
		if (next) {
			struct timespec ts = { next / 1000,
					       (next % 1000) * 1000000 };

			pthread_cond_timedwait(&rb->cond, &rb->mutex, &ts);
		} else {
			pthread_cond_wait(&rb->cond, &rb->mutex);
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	return NULL;
}

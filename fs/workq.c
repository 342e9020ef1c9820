/*
 * workq.c - a small pool of threads that run items in order per key
 * (workq.h).
 *
 * A thread takes the first queued item whose key no other thread is
 * running; an item whose key is busy waits, and so do the items behind it
 * with that key, which keeps per-key order.  The scan is linear in the
 * queue: it holds what one daemon's clients have in flight, bounded by
 * the socket's per-uid caps.
 */
#include <errno.h>
#include <signal.h>

#include "fs/workq.h"

static bool workq_key_busy(const struct workq *wq, const void *key)
{
	if (!key)
		return false;
	for (unsigned i = 0; i < wq->nthreads; i++)
		if (wq->slots[i].busy == key)
			return true;
	return false;
}

/* the first runnable item, unlinked; NULL if none.  Under the mutex. */
static struct workq_item *workq_take(struct workq *wq)
{
	struct workq_item **pp, *prev = NULL;

	for (pp = &wq->head; *pp; prev = *pp, pp = &(*pp)->next) {
		struct workq_item *it = *pp;
		bool earlier = false;

		if (workq_key_busy(wq, it->key))
			continue;
		/* an earlier item of the same key waits: keep the order */
		for (struct workq_item *x = wq->head; x != it && it->key;
		     x = x->next)
			if (x->key == it->key) {
				earlier = true;
				break;
			}
		if (earlier)
			continue;
		*pp = it->next;
		if (wq->tail == it)
			wq->tail = prev;
		it->next = NULL;
		return it;
	}
	return NULL;
}

static void *workq_main(void *arg)
{
	struct workq_slot *self = arg;
	struct workq *wq = self->wq;

	pthread_mutex_lock(&wq->mutex);
	for (;;) {
		struct workq_item *it = workq_take(wq);

		if (!it) {
			if (wq->stopping && !wq->head)
				break;
			pthread_cond_wait(&wq->cond, &wq->mutex);
			continue;
		}
		self->busy = it->key;
		pthread_mutex_unlock(&wq->mutex);
		it->run(it);
		pthread_mutex_lock(&wq->mutex);
		self->busy = NULL;
		/* an item of that key may be runnable now: this thread takes
		 * it on its next turn, so nobody needs waking */
	}
	pthread_mutex_unlock(&wq->mutex);
	return NULL;
}

int workq_start(struct workq *wq, unsigned nthreads)
{
	sigset_t all, old;
	int ret = 0;

	if (nthreads == 0 || nthreads > WORKQ_MAX_THREADS)
		return -EINVAL;
	*wq = (struct workq){ .nthreads = 0 };
	pthread_mutex_init(&wq->mutex, NULL);
	pthread_cond_init(&wq->cond, NULL);
	/* signals are the main thread's business */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (unsigned i = 0; i < nthreads; i++) {
		wq->slots[i] = (struct workq_slot){ .wq = wq };
		ret = -pthread_create(&wq->slots[i].thread, NULL, workq_main,
				      &wq->slots[i]);
		if (ret < 0)
			break;
		wq->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0)
		workq_stop(wq);
	return ret;
}

void workq_push(struct workq *wq, struct workq_item *it)
{
	it->next = NULL;
	pthread_mutex_lock(&wq->mutex);
	if (wq->tail)
		wq->tail->next = it;
	else
		wq->head = it;
	wq->tail = it;
	/* one idle thread is enough (a busy one looks again when done);
	 * waking them all would have them fight for the mutex */
	pthread_cond_signal(&wq->cond);
	pthread_mutex_unlock(&wq->mutex);
}

void workq_stop(struct workq *wq)
{
	pthread_mutex_lock(&wq->mutex);
	wq->stopping = true;
	pthread_cond_broadcast(&wq->cond);
	pthread_mutex_unlock(&wq->mutex);
	for (unsigned i = 0; i < wq->nthreads; i++)
		pthread_join(wq->slots[i].thread, NULL);
	wq->nthreads = 0;
	pthread_cond_destroy(&wq->cond);
	pthread_mutex_destroy(&wq->mutex);
}

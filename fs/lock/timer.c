/*
 * timer.c - the manager's timer thread: lock_timeout expiries, the first
 * deadlock check of a wait on a remote backend, and the deadlock re-checks
 * deadlock.c schedules.
 *
 * Owns: the thread (lockmgr.timer), and the reading of each queued
 * waiter's deadline (set by lockmgr_submit() when lock_timeout is on),
 * dlcheck (set by lockmgr_submit(): conf.deadlock_delay_ms after the wait
 * was queued, so a wait granted sooner is never checked and costs no
 * listing) and recheck (set by lm_deadlock_check()).
 *
 * Does not: decide anything itself.  An expiry ends the wait through
 * lm_cancel(..., -EDEADLK) exactly as an interrupt would (so a grant that
 * wins the race still answers 0), and a re-check is lm_deadlock_check()
 * with final set (the first check: without).  All run on this thread, so done() of an expired or
 * deadlocked wait runs here, and a re-check's backend listings (round
 * trips on a remote backend) delay the next expiry by as long as they take.
 *
 * Locking: the thread sleeps on lockmgr.timer_cond (CLOCK_MONOTONIC) with
 * lockmgr.mutex, scans the waiters under it, and drops it before acting:
 * lm_cancel() and lm_deadlock_check() call the backend and done().  Whoever
 * sets a deadline or a recheck signals timer_cond under the mutex; so does
 * lm_timer_stop() after setting stopping.  One expiry or re-check per
 * scan; the scan starts again after each, since the list may have changed
 * while the mutex was dropped.
 */
#include "fs/lock/internal.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "backend/util/clock.h"

/* lock_timeout expiries and deadlock re-checks */
static void *timer_main(void *arg)
{
	struct lockmgr *lm = arg;

	pthread_mutex_lock(&lm->mutex);
	while (!lm->stopping) {
		int64_t now = dl_mono_ms(), next = 0;
		uint64_t expired = 0, recheck = 0, first = 0;
		struct lm_waiter *w;

		for (w = lm->waiters.next; w != &lm->waiters; w = w->next) {
			if (w->state != W_QUEUED || w->cancelling)
				continue;
			if (w->deadline && w->deadline <= now) {
				expired = w->id;
				break;
			}
			if (w->recheck && w->recheck <= now) {
				w->recheck = 0;
				recheck = w->id;
				break;
			}
			if (w->dlcheck && w->dlcheck <= now) {
				w->dlcheck = 0;
				first = w->id;
				break;
			}
			if (w->deadline && (!next || w->deadline < next))
				next = w->deadline;
			if (w->recheck && (!next || w->recheck < next))
				next = w->recheck;
			if (w->dlcheck && (!next || w->dlcheck < next))
				next = w->dlcheck;
		}
		if (expired || recheck || first) {
			pthread_mutex_unlock(&lm->mutex);
			if (expired) {
				lm_metrics_timeout();
				lm_cancel(lm, expired, -EDEADLK);
			} else
				lm_deadlock_check(lm, recheck ? recheck : first,
						  recheck != 0);
			pthread_mutex_lock(&lm->mutex);
			continue;
		}
		if (next) {
			struct timespec ts = { .tv_sec = next / 1000,
					       .tv_nsec = (next % 1000) *
							  1000000 };

			pthread_cond_timedwait(&lm->timer_cond, &lm->mutex,
					       &ts);
		} else {
			pthread_cond_wait(&lm->timer_cond, &lm->mutex);
		}
	}
	pthread_mutex_unlock(&lm->mutex);
	return NULL;
}

int lm_timer_start(struct lockmgr *lm)
{
	int ret = pthread_create(&lm->timer, NULL, timer_main, lm);

	if (ret)
		return -ret;
	lm->timer_started = true;
	return 0;
}

void lm_timer_stop(struct lockmgr *lm)
{
	pthread_mutex_lock(&lm->mutex);
	lm->stopping = true;
	pthread_cond_signal(&lm->timer_cond);
	pthread_mutex_unlock(&lm->mutex);
	if (lm->timer_started)
		pthread_join(lm->timer, NULL);
}

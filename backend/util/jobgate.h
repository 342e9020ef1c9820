/*
 * jobgate.h - an owner's left-over jobs are done before its next lock.
 *
 * The Redis and PostgreSQL backends leave work that a call could not
 * finish (an unlock or release no server confirmed, the take-back of a
 * lock whose answer was lost) to their keeper thread, which retries it.
 * The take-back of an in-doubt lock ends every grant of its range, since
 * the token the server gave is unknown; if it reached the server after the
 * same owner's next lock there was granted, it would end that newer grant
 * and another host could get the lock too.  So a lock of (resource,
 * space, owner) is sent only once no job of that owner on that resource is
 * left: the caller waits for a pass of the keeper over its jobs that
 * started after the call (bounded), and fails with -ENOLCK when a job is
 * still left after it (its server is still down: the lock would fail
 * anyway).
 *
 * The gate counts the keeper's passes; the backend keeps its own job list
 * and tells the gate when a pass begins and ends.  Its pending() must see
 * the jobs of the pass running too (taken out of the list, put back if
 * unfinished when it ends): a lock with no job of its own left then never
 * waits for a pass (it did: with the server down a pass lasts a reconnect
 * backoff per job, and every lock waited for it before its own try).
 * Locking: every function
 * is called with the backend's mutex held (@mutex below, the one @cond
 * waits with); settle() waits on @cond, a CLOCK_MONOTONIC condition
 * variable the keeper's pass end broadcasts.
 */
#ifndef DL_JOBGATE_H
#define DL_JOBGATE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct dl_jobgate {
	pthread_mutex_t *mutex;
	pthread_cond_t *cond; /* CLOCK_MONOTONIC */
	bool *kick;	      /* set: the keeper runs its jobs now */
	const bool *stopping;
	pthread_t keeper; /* valid once keeper_started */
	bool keeper_started;
	bool running;  /* the keeper has taken the job list out */
	uint64_t pass; /* passes the keeper finished */
};

void dl_jobgate_init(struct dl_jobgate *g, pthread_mutex_t *mutex,
		     pthread_cond_t *cond, bool *kick, const bool *stopping);
void dl_jobgate_keeper_start(struct dl_jobgate *g);
void dl_jobgate_begin(struct dl_jobgate *g);
void dl_jobgate_end(struct dl_jobgate *g);
/* @pending(@arg): a job of the caller's owner on its resource is left in
 * the backend's list (mutex held).  0, or -ENOLCK */
int dl_jobgate_settle(struct dl_jobgate *g, int64_t bound_ms,
		      bool (*pending)(void *arg), void *arg);

#endif /* DL_JOBGATE_H */

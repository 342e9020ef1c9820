/*
 * jobgate.c - an owner's left-over jobs are done before its next lock
 * (see jobgate.h for why and for the locking).
 */
#include "backend/util/jobgate.h"

#include <errno.h>
#include <time.h>

#include "backend/util/clock.h"

void dl_jobgate_init(struct dl_jobgate *g, pthread_mutex_t *mutex,
		     pthread_cond_t *cond, bool *kick, const bool *stopping)
{
	*g = (struct dl_jobgate){
		.mutex = mutex, .cond = cond, .kick = kick, .stopping = stopping
	};
}

/* called by the keeper thread as it starts */
void dl_jobgate_keeper_start(struct dl_jobgate *g)
{
	g->keeper = pthread_self();
	g->keeper_started = true;
}

/* the keeper takes the job list out */
void dl_jobgate_begin(struct dl_jobgate *g)
{
	g->running = true;
}

/* the keeper put back what is left */
void dl_jobgate_end(struct dl_jobgate *g)
{
	g->running = false;
	g->pass++;
	pthread_cond_broadcast(g->cond);
}

int dl_jobgate_settle(struct dl_jobgate *g, int64_t bound_ms,
		      bool (*pending)(void *arg), void *arg)
{
	int64_t until = dl_mono_ms() + bound_ms;
	struct timespec ts = { until / 1000, (until % 1000) * 1000000 };
	uint64_t seen = UINT64_MAX, full;

	/* the keeper ran its jobs before the work that locks */
	if (g->keeper_started && pthread_equal(pthread_self(), g->keeper))
		return pending(arg) ? -ENOLCK : 0;
	/* a whole pass that starts after now: the one running may have
	 * passed the job already, and puts it back only when it ends */
	full = g->pass + (g->running ? 2 : 1);
	for (;;) {
		bool mine = pending(arg);

		if (!mine)
			return 0;
		if (g->pass >= full || *g->stopping || dl_mono_ms() >= until)
			return -ENOLCK;
		if (mine && seen != g->pass) {
			seen = g->pass; /* one kick per pass */
			*g->kick = true;
			pthread_cond_broadcast(g->cond);
		}
		pthread_cond_timedwait(g->cond, g->mutex, &ts);
	}
}

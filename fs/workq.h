/*
 * workq.h - a small pool of threads that run items in order per key.
 *
 * The control socket's thread must never wait on the backend (a
 * ZooKeeper lock can take seconds under faults, a deadlock check on Redis
 * scans every resource): it hands each backend call to a workq and goes
 * on serving other clients.  Items pushed with the same non-NULL key run
 * one at a time, in push order (a client's requests keep their order);
 * items of different keys, or with a NULL key, run in parallel.
 *
 * An item's run() owns the item (frees it or passes it on).  workq_stop()
 * runs every item still queued before the threads exit, so nothing pushed
 * is ever dropped.  Locking: one mutex guards the queue and the set of
 * keys in progress; run() is called with no lock held.
 */
#ifndef DL_WORKQ_H
#define DL_WORKQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define WORKQ_MAX_THREADS 8

struct workq_item {
	struct workq_item *next;
	const void *key; /* serialise with items of the same key; NULL: none */
	void (*run)(struct workq_item *it);
};

struct workq;

struct workq_slot {
	struct workq *wq;
	pthread_t thread;
	const void *busy; /* the key it runs (NULL: none or keyless) */
};

struct workq {
	pthread_mutex_t mutex; /* guards everything below but the threads */
	pthread_cond_t cond;
	struct workq_item *head, *tail; /* queued, in push order */
	struct workq_slot slots[WORKQ_MAX_THREADS];
	unsigned nthreads;
	bool stopping;
};

/* start @nthreads (1..WORKQ_MAX_THREADS) threads; 0 or a negative errno */
int workq_start(struct workq *wq, unsigned nthreads);

/* queue @it (never fails: the item is the caller's memory) */
void workq_push(struct workq *wq, struct workq_item *it);

/* run what is queued, then stop and join the threads */
void workq_stop(struct workq *wq);

#endif /* DL_WORKQ_H */

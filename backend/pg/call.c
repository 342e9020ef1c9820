/*
 * call.c - the worker threads of the PostgreSQL backend: each owns one
 * connection (pb->workers[i].conn, touched by no other thread) and runs,
 * one at a time, the requests callers queue (struct pg_call).
 *
 * A caller (a FUSE worker, the control socket, the lock manager's timer)
 * blocks in pg_call_run() for one round trip at most: a request that
 * cannot be granted is queued on the server and answered later through
 * the callbacks, never by holding a thread.  Its deadline is
 * connect_timeout_ms from when it was asked: a worker does not start a
 * request whose deadline passed, and connects by it.
 *
 * Every statement is idempotent (a lock asked again by its owner finds
 * its own grant, an unlock or cancel done twice is done once, a bump
 * carries an id its second try finds), so a statement whose connection
 * died before its answer came - a pg_terminate_backend, a server
 * restart, a network blip - is sent once more on a fresh connection,
 * by the same deadline;
 * only when that fails too does the caller
 * get -ENOLCK, with "in doubt" set if either attempt may have run.
 *
 * A call goes to the worker that went idle last (a stack, pb->idle): its
 * connection's server process is the one most recently busy, so calls
 * made one at a time - a handoff between two hosts - all use the same
 * warm thread and server process instead of going round all eight.
 * When none is idle, the call is queued, and each worker takes queued
 * calls before it goes idle.
 *
 * Locking: the queue (pb->qhead, qtail), the idle stack, each worker's
 * handed call and each call's done flag are guarded by pb->mutex; a
 * worker runs a call without it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg/internal.h"
#include "backend/util/log.h"

int64_t pg_call_deadline(const struct pg_backend *pb)
{
	return dl_mono_ms() + pb->uri.connect_timeout_ms;
}

static void call_exec(struct pg_backend *pb, struct pg_conn *pc,
		      struct pg_call *call)
{
	bool indoubt = false;
	int ret = -ENOLCK;

	call->err = -ENOLCK;
	if (dl_mono_ms() >= call->deadline)
		return;
	if (call->with_lease) {
		if (pg_lease_ensure(pb, pc, call->deadline, &call->gen,
				    &call->lease_id) < 0)
			return;
		pg_i64(call->lease_buf, (uint64_t)call->lease_id);
		call->values[0] = call->lease_buf;
		call->lengths[0] = 0;
		call->formats[0] = 0;
	}
	if (call->prepare)
		call->prepare(pb, call);
	/* the second try keeps the call's deadline: when the server is
	 * down, each worker's first call meets its dead connection, and a
	 * fresh deadline for the try on a new one (waiting out the reconnect
	 * backoff) made a caller wait for ENOLCK well past
	 * connect_timeout_ms */
	for (int attempt = 0; attempt < 2; attempt++) {
		bool d = false;

		ret = pg_exec(pb, pc, call->sql, call->nparams, call->values,
			      call->lengths, call->formats, call->deadline,
			      &call->res, &d);
		indoubt |= d;
		if (ret != -ECONNRESET)
			break;
		dl_log(DL_LOG_DEBUG,
		       "postgresql: connection lost during a request%s: "
		       "trying again on a new one",
		       d ? " (in doubt)" : "");
	}
	if (ret == 0) {
		call->err = 0;
		return;
	}
	call->err = ret == -EIO ? -EIO : -ENOLCK;
	call->indoubt = indoubt;
}

/* the next call for @wk: its handed one, else the queue's first (mutex
 * held); NULL: none */
static struct pg_call *worker_next(struct pg_backend *pb, struct pg_worker *wk)
{
	struct pg_call *call = wk->call;

	if (call) {
		wk->call = NULL;
		return call;
	}
	call = pb->qhead;
	if (call) {
		pb->qhead = call->next;
		if (!pb->qhead)
			pb->qtail = NULL;
	}
	return call;
}

static void *worker_main(void *arg)
{
	struct pg_worker *wk = arg;
	struct pg_backend *pb = wk->pb;

	pthread_mutex_lock(&pb->mutex);
	for (;;) {
		struct pg_call *call;

		while (!(call = worker_next(pb, wk)) && !pb->stopping) {
			if (!wk->idle) {
				wk->idle = true;
				wk->next_idle = pb->idle;
				pb->idle = wk;
			}
			pthread_cond_wait(&wk->cond, &pb->mutex);
		}
		if (!call)
			break; /* stopping, nothing left */
		pthread_mutex_unlock(&pb->mutex);

		call_exec(pb, &wk->conn, call);

		pthread_mutex_lock(&pb->mutex);
		call->done = true;
		pthread_cond_signal(&call->cond);
	}
	pthread_mutex_unlock(&pb->mutex);
	return NULL;
}

int pg_call_run(struct pg_backend *pb, struct pg_call *call)
{
	call->next = NULL;
	call->res = NULL;
	call->done = false;
	call->indoubt = false;
	call->err = -ENOLCK;
	if (!call->deadline)
		call->deadline = pg_call_deadline(pb);
	pthread_cond_init(&call->cond, NULL);
	pthread_mutex_lock(&pb->mutex);
	if (pb->stopping) {
		pthread_mutex_unlock(&pb->mutex);
		pthread_cond_destroy(&call->cond);
		return -ENOLCK;
	}
	if (pb->idle) {
		struct pg_worker *wk = pb->idle;

		pb->idle = wk->next_idle;
		wk->idle = false;
		wk->call = call;
		pthread_cond_signal(&wk->cond);
	} else {
		if (pb->qtail)
			pb->qtail->next = call;
		else
			pb->qhead = call;
		pb->qtail = call;
	}
	while (!call->done)
		pthread_cond_wait(&call->cond, &pb->mutex);
	pthread_mutex_unlock(&pb->mutex);
	pthread_cond_destroy(&call->cond);
	return call->err;
}

int pg_workers_start(struct pg_backend *pb)
{
	for (int i = 0; i < PG_WORKERS; i++) {
		struct pg_worker *wk = &pb->workers[i];
		int ret;

		wk->pb = pb;
		wk->conn.role = "worker";
		ret = pthread_create(&wk->thread, NULL, worker_main, wk);
		if (ret)
			return -ret;
		wk->started = true;
	}
	return 0;
}

/* after pb->stopping is set: the queue is drained, then they end */
void pg_workers_stop(struct pg_backend *pb)
{
	pthread_mutex_lock(&pb->mutex);
	for (int i = 0; i < PG_WORKERS; i++)
		pthread_cond_signal(&pb->workers[i].cond);
	pthread_mutex_unlock(&pb->mutex);
	for (int i = 0; i < PG_WORKERS; i++) {
		struct pg_worker *wk = &pb->workers[i];

		if (wk->started)
			pthread_join(wk->thread, NULL);
		wk->started = false;
		pg_disconnect(&wk->conn);
	}
}

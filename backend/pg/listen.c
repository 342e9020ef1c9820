/*
 * listen.c - the listener thread of the PostgreSQL backend: it owns
 * pb->listen_conn, LISTENs on this daemon's channel (SCHEMA_INCARNATION,
 * one for all its leases) and turns notifications into callbacks:
 *
 *   'G LEASE WAITID TOKEN'  a queued request was granted (by the handoff
 *                           of whoever released the lock): report it
 *   'B LEASE'               an administrator broke some of our locks:
 *                           the keeper renews now and learns which
 *
 * A notification is sent by the granting transaction and delivered only
 * when it commits, so it never announces a grant that could still be
 * rolled back.  One lost with a connection is caught by the keeper's
 * safety re-check; after every (re)connect the keeper re-checks and
 * renews at once.  Waiting is poll() on the connection and on an eventfd
 * (pb->wake_fd) that close() writes: no polling of the server.
 *
 * Locking: the connection is this thread's only (open() sets it up
 * before the thread starts); pb->mutex only to deliver.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/pg/internal.h"
#include "backend/util/log.h"

int pg_listen_setup(struct pg_backend *pb, struct pg_conn *pc, char *err,
		    size_t errlen)
{
	char sql[96];

	snprintf(sql, sizeof(sql), "LISTEN \"%s\"", pb->channel);
	return pg_exec_simple(pb, pc, sql, pg_call_deadline(pb), NULL, err,
			      errlen);
}

void pg_listener_wake(struct pg_backend *pb)
{
	uint64_t one = 1;

	if (write(pb->wake_fd, &one, sizeof(one)) < 0)
		dl_log(DL_LOG_DEBUG, "postgresql: listener wake: %s",
		       strerror(errno));
}

static void listener_message(struct pg_backend *pb, const char *msg)
{
	struct pg_note *notes = NULL;
	uint64_t wid, token;
	int64_t lease;

	if (sscanf(msg, "G %" SCNd64 " %" SCNx64 " %" SCNu64, &lease, &wid,
		   &token) == 3) {
		pthread_mutex_lock(&pb->mutex);
		pg_deliver_grant(pb, lease, wid, token, &notes);
		pthread_mutex_unlock(&pb->mutex);
		pg_notes_run(pb, notes);
	} else if (sscanf(msg, "B %" SCNd64, &lease) == 1) {
		pthread_mutex_lock(&pb->mutex);
		if (lease == pb->lease_id)
			pg_keeper_kick(pb, true);
		pthread_mutex_unlock(&pb->mutex);
	}
}

/* wait for the connection or the wake-up, at most @ms (-1: for ever);
 * true when the connection has input */
static bool listener_wait(struct pg_backend *pb, int sock, int ms)
{
	struct pollfd p[2] = { { .fd = pb->wake_fd, .events = POLLIN },
			       { .fd = sock, .events = POLLIN } };
	uint64_t v;

	if (poll(p, sock >= 0 ? 2 : 1, ms) <= 0)
		return false;
	if (p[0].revents && read(pb->wake_fd, &v, sizeof(v)) < 0)
		v = 0;
	return sock >= 0 && p[1].revents;
}

static bool stopping(struct pg_backend *pb)
{
	bool s;

	pthread_mutex_lock(&pb->mutex);
	s = pb->stopping;
	pthread_mutex_unlock(&pb->mutex);
	return s;
}

void *pg_listener_main(void *arg)
{
	struct pg_backend *pb = arg;
	struct pg_conn *pc = &pb->listen_conn;
	int backoff = PG_BACKOFF_MIN_MS;
	char err[256];

	while (!stopping(pb)) {
		PGnotify *n;

		if (!pc->c) {
			if (pg_connect(pb, pc, pg_call_deadline(pb), err,
				       sizeof(err)) < 0 ||
			    pg_listen_setup(pb, pc, err, sizeof(err)) < 0) {
				dl_log(DL_LOG_DEBUG, "postgresql: listener: %s",
				       err);
				pg_disconnect(pc);
				listener_wait(pb, -1, backoff);
				backoff = backoff * 2 > PG_BACKOFF_MAX_MS
						  ? PG_BACKOFF_MAX_MS
						  : backoff * 2;
				continue;
			}
			backoff = PG_BACKOFF_MIN_MS;
			dl_log(DL_LOG_DEBUG, "postgresql: listening on %s",
			       pb->channel);
			/* notifications may have been missed: re-check
			 * and renew now */
			pthread_mutex_lock(&pb->mutex);
			pg_keeper_kick(pb, true);
			pg_keeper_kick(pb, false);
			pthread_mutex_unlock(&pb->mutex);
		}
		if (listener_wait(pb, PQsocket(pc->c), -1) &&
		    !PQconsumeInput(pc->c)) {
			dl_log(DL_LOG_DEBUG,
			       "postgresql: listener lost its connection: %s",
			       PQerrorMessage(pc->c));
			pg_disconnect(pc);
			continue;
		}
		while ((n = PQnotifies(pc->c))) {
			listener_message(pb, n->extra);
			PQfreemem(n);
		}
	}
	return NULL;
}

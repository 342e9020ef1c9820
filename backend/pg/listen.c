/*
 * listen.c - the listener thread of the PostgreSQL backend: it owns
 * pb->listen_conn, LISTENs on this daemon's channel (SCHEMA_INCARNATION,
 * one for all its leases) and turns notifications into callbacks:
 *
 *   'G LEASE WAITID TOKEN'  a queued request was granted (by the handoff
 *                           of whoever released the lock): report it
 *   'B LEASE'               an administrator broke some of our locks:
 *                           the keeper renews now and learns which
 *   'P RESOURCE'            another daemon pokes a resource we hold a
 *                           lock on (schema.sql's poke(); RESOURCE in
 *                           base64, without line breaks, since a name is
 *                           any bytes and a payload is text):
 *                           cb->revoke(resource), if there is one
 *
 * A notification is sent by the granting transaction and delivered only
 * when it commits, so it never announces a grant that could still be
 * rolled back.  One lost with a connection is caught by the keeper's
 * safety re-check; after every (re)connect the keeper re-checks and
 * renews at once; a lost poke is repeated by its waiter.  A revoke is
 * passed on as it comes, without checking what we hold: a lock granted
 * to us just before may not be in our books yet, and one given back
 * since is the lock manager's to ignore.  Waiting is poll() on the
 * connection and on an eventfd (pb->wake_fd) that close() writes: no
 * polling of the server.
 *
 * Locking: the connection is this thread's only (open() sets it up
 * before the thread starts); pb->mutex only to deliver, never held
 * across a callback.
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

/* the value of base64 digit @c, or -1 */
static int b64_digit(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/*
 * b64_name() - decode @in (base64 with '=' padding, as PostgreSQL's
 * encode() writes it, without line breaks) into a malloc'd C string.
 * NULL when it is not valid, decodes to a NUL byte or to nothing, or
 * memory is short.
 */
static char *b64_name(const char *in)
{
	size_t len = strlen(in), n = 0;
	uint32_t acc = 0;
	int bits = 0;
	char *out;

	if (!len || len % 4)
		return NULL;
	out = malloc(len / 4 * 3 + 1);
	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i++) {
		int d = b64_digit(in[i]);

		if (d < 0) {
			/* padding: only at the end, at most two */
			if (in[i] != '=' || i + 2 < len ||
			    (i + 1 < len && in[i + 1] != '='))
				goto out_free;
			break;
		}
		acc = acc << 6 | (uint32_t)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n] = (char)(acc >> bits & 0xff);
			if (!out[n++])
				goto out_free;
		}
	}
	if (!n)
		goto out_free;
	out[n] = '\0';
	return out;

out_free:
	free(out);
	return NULL;
}

/* a poke: cb->revoke, no mutex held */
static void listener_poke(struct pg_backend *pb, const char *b64)
{
	char *res;

	if (!pb->cb.revoke)
		return;
	res = b64_name(b64);
	if (!res) {
		dl_log(DL_LOG_WARNING,
		       "postgresql: a poke names no valid resource: %.64s",
		       b64);
		return;
	}
	pb->cb.revoke(pb->cb.ctx, res);
	free(res);
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
	} else if (strncmp(msg, "P ", 2) == 0) {
		listener_poke(pb, msg + 2);
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

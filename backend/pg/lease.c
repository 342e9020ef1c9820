/*
 * lease.c - the PostgreSQL backend's lease, and the threads that keep it:
 *
 *  - one lease row per daemon incarnation at a time (SCHEMA.leases),
 *    registered on first need (pg_lease_ensure()) and renewed by the
 *    keeper every ttl/3 in one statement (renew()), which also forgets
 *    the grants this daemon received and reports locks an administrator
 *    broke.  Its expiry is the server's clock + ttl_ms; a lock of an
 *    expired lease is purged by the next operation on its resource, which
 *    then stays unavailable for lock_delay_ms (schema.sql);
 *  - the fence: lease->until_ms = (send time of the last good renewal) +
 *    ttl_ms - margin, by our monotonic clock, strictly before the server
 *    (which started counting after our send) can expire it.  The
 *    watchdog thread sleeps until that deadline; when it passes without
 *    a renewal, or the server says the lease is gone, lose_all(): the gen
 *    changes first, every held lock is reported lost, every queued wait
 *    fails with ENOLCK, and new requests get a fresh lease.  The old one
 *    is ended on the server (drop_lease()) when it can be reached: a
 *    lease reported lost is never renewed again, so its locks can never
 *    come back;
 *  - the keeper thread also runs the safety re-check of our queued
 *    requests (poll(), once a second while any is queued: a NOTIFY lost
 *    with a connection, the end of a lock-delay), and the work left over
 *    from requests that got no answer (pg_job).
 *
 * Connections: the keeper thread owns pb->keeper_conn.  pg_lease_ensure()
 * runs on the connection of its caller (a worker's, or the keeper's).
 * Locking: see internal.h; pb->mutex is never held across a statement.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/pg/internal.h"
#include "backend/util/log.h"

void pg_fault_sleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (ms > 0)
		nanosleep(&ts, NULL);
}

/* true when a fault counter was armed and this call consumes it */
bool pg_fault_take(atomic_int *n)
{
	int v = atomic_load(n);

	while (v > 0)
		if (atomic_compare_exchange_weak(n, &v, v - 1))
			return true;
	return false;
}

static int64_t val_i64(const PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return 0;
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* wait on pb->cond until mono @until (mutex held); false on timeout */
static bool cond_wait_until(struct pg_backend *pb, int64_t until)
{
	struct timespec ts = { until / 1000, (until % 1000) * 1000000 };

	return pthread_cond_timedwait(&pb->cond, &pb->mutex, &ts) == 0;
}

void pg_lease_publish(struct pg_backend *pb)
{
	int64_t until = 0;

	if (pb->trusted && pb->lease_id)
		until = pb->renewed_at + pb->uri.ttl_ms - pb->margin_ms;
	atomic_store(&pb->lease->until_ms, until);
}

void pg_keeper_kick(struct pg_backend *pb, bool renew)
{
	if (renew)
		pb->kick_renew = true;
	else
		pb->kick = true;
	pthread_cond_broadcast(&pb->cond);
}

/* a lease to end on the server (mutex held) */
static void drop_later(struct pg_backend *pb, int64_t id)
{
	if (!id)
		return;
	if (pb->ndrops == PG_MAX_DROPS) {
		/* the oldest expires by itself */
		memmove(pb->drops, pb->drops + 1,
			(PG_MAX_DROPS - 1) * sizeof(pb->drops[0]));
		pb->ndrops--;
	}
	pb->drops[pb->ndrops++] = id;
}

int pg_lease_ensure(struct pg_backend *pb, struct pg_conn *pc, int64_t deadline,
		    uint64_t *gen, int64_t *id)
{
	char ttl[16], delay[16], pid[16];
	const char *v[5];
	PGresult *r = NULL;
	bool indoubt;
	int64_t sent, got = 0;
	uint64_t g;
	int ret;

	pthread_mutex_lock(&pb->mutex);
	while (!pb->lease_id && pb->registering && !pb->stopping)
		if (!cond_wait_until(pb, deadline) && dl_mono_ms() >= deadline)
			break;
	if (pb->lease_id) {
		*gen = pb->epoch;
		*id = pb->lease_id;
		pthread_mutex_unlock(&pb->mutex);
		return 0;
	}
	if (pb->registering || pb->stopping) {
		pthread_mutex_unlock(&pb->mutex);
		return -ENOLCK;
	}
	pb->registering = true;
	g = pb->epoch;
	pthread_mutex_unlock(&pb->mutex);

	snprintf(ttl, sizeof(ttl), "%d", pb->uri.ttl_ms);
	snprintf(delay, sizeof(delay), "%d", pb->uri.lock_delay_ms);
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	v[0] = pb->host_id;
	v[1] = pid;
	v[2] = pb->inc_hex;
	v[3] = ttl;
	v[4] = delay;
	sent = dl_mono_ms();
	ret = pg_exec(pb, pc, PG_SQL_REG, 5, v, NULL, NULL, deadline, &r,
		      &indoubt);
	if (ret == 0) {
		got = val_i64(r, 0, 0);
		PQclear(r);
		if (got <= 0)
			ret = -EIO;
	}

	pthread_mutex_lock(&pb->mutex);
	pb->registering = false;
	if (ret == 0 && (pb->epoch != g || pb->stopping)) {
		drop_later(pb, got); /* of a gen given up meanwhile */
		ret = -ENOLCK;
	} else if (ret == 0) {
		pb->lease_id = got;
		pb->renewed_at = sent;
		pb->trusted = true;
		pg_lease_publish(pb);
		*gen = pb->epoch;
		*id = got;
	} else {
		ret = -ENOLCK;
	}
	pthread_cond_broadcast(&pb->cond); /* waiters; the watchdog */
	pthread_mutex_unlock(&pb->mutex);
	if (ret == 0)
		dl_log(DL_LOG_DEBUG, "postgresql: lease %" PRId64 " registered",
		       got);
	return ret;
}

/*
 * Our queued waits end with -ENOLCK: the lease they were queued under is
 * gone.  Those in flight (a lock() call) are left to their thread, which
 * sees the new gen; one being cancelled is left to pg_cancel(), which
 * returns 0 for it.  Mutex held.
 */
static void fail_queued_waits(struct pg_backend *pb, size_t b,
			      struct pg_note **notes)
{
	for (struct pg_wait **p = &pb->waits[b]; *p;) {
		struct pg_wait *w = *p;

		if (w->state == PW_SENDING) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		pb->nwaits--;
		if (w->cancelling) {
			w->end = PWE_LOST;
			continue;
		}
		pg_wait_answer(w, 0, -ENOLCK, notes);
		pg_wait_free(w);
	}
}

/*
 * Every lock of this daemon is gone or cannot be trusted: bump the gen
 * first (grants of the old one are never trusted again), report each
 * held lock lost, fail each queued wait, end the old lease on the server
 * and serve new requests under a fresh one.  Mutex held.
 */
static void lose_all(struct pg_backend *pb, const char *why,
		     struct pg_note **notes)
{
	int64_t old = pb->lease_id;
	size_t nlost = 0;

	pb->epoch++;
	atomic_store(&pb->lease->gen, pb->epoch);
	atomic_store(&pb->lease->until_ms, 0);
	for (size_t b = 0; b < PG_BUCKETS; b++) {
		while (pb->held[b]) {
			pg_held_lose(pb, &pb->held[b], -ENOLCK, notes);
			nlost++;
		}
		fail_queued_waits(pb, b, notes);
	}
	/* left-over work of the old lease: its records die with it */
	while (pb->jobs) {
		struct pg_job *j = pb->jobs;

		pb->jobs = j->next;
		pb->njobs--;
		free(j);
	}
	pb->nacks = 0;
	drop_later(pb, old);
	pb->lease_id = 0;
	pb->trusted = false;
	pg_keeper_kick(pb, true);
	dl_log(nlost ? DL_LOG_WARNING : DL_LOG_INFO,
	       "postgresql: lease %" PRId64 " %s: %zu lock(s) lost; new "
	       "requests get a new lease",
	       old, why, nlost);
}

void pg_lease_gone(struct pg_backend *pb, int64_t id)
{
	struct pg_note *notes = NULL;

	pthread_mutex_lock(&pb->mutex);
	if (id && pb->lease_id == id)
		lose_all(pb, "is gone on the server", &notes);
	pthread_mutex_unlock(&pb->mutex);
	pg_notes_run(pb, notes);
}

void pg_lease_lose_all(struct pg_backend *pb, const char *why)
{
	struct pg_note *notes = NULL;

	pthread_mutex_lock(&pb->mutex);
	if (pb->lease_id || pb->nheld || pb->nwaits)
		lose_all(pb, why, &notes);
	pthread_mutex_unlock(&pb->mutex);
	pg_notes_run(pb, notes);
}

bool pg_deliver_grant(struct pg_backend *pb, int64_t lease_id, uint64_t wait_id,
		      uint64_t token, struct pg_note **notes)
{
	struct pg_wait *w = pg_wait_find(pb, wait_id);

	if (!w || w->lease_id != lease_id || w->gen != pb->epoch)
		return false; /* delivered already, or of a lease given up */
	pg_wait_unlink(pb, w);
	pg_held_add(pb, &w->spare, w->res, w->req.space, w->req.owner, token);
	if (pb->nacks < PG_MAX_ACKS)
		pb->acks[pb->nacks++] = (int64_t)wait_id;
	pg_wait_answer(w, token, 0, notes);
	if (w->cancelling)
		w->end = PWE_GRANTED; /* pg_cancel() frees it */
	else
		pg_wait_free(w);
	return true;
}

/* an administrator broke locks of @owner on @res up to @token under lease
 * @lease_id: if we still hold them, they are lost.  Mutex held. */
static void deliver_break(struct pg_backend *pb, int64_t lease_id,
			  enum dl_space space, uint64_t owner, const char *res,
			  uint64_t token, struct pg_note **notes)
{
	struct pg_held **p;

	if (lease_id != pb->lease_id)
		return;
	p = pg_held_slot(pb, res, space, owner);
	if (*p && (*p)->max_token <= token)
		pg_held_lose(pb, p, -ECONNABORTED, notes);
}

/* a bytea of a result row as a C string, malloc'd; NULL on -ENOMEM */
static char *val_bytea(const PGresult *r, int row, int col)
{
	size_t len = 0;
	unsigned char *b = PQunescapeBytea(
		(const unsigned char *)PQgetvalue(r, row, col), &len);
	char *s;

	if (!b)
		return NULL;
	s = malloc(len + 1);
	if (s) {
		memcpy(s, b, len);
		s[len] = '\0';
	}
	PQfreemem(b);
	return s;
}

/* renew our lease (registering one if there is none); one round trip */
static void keeper_renew(struct pg_backend *pb)
{
	int64_t acks[PG_MAX_ACKS], id, sent;
	struct pg_note *notes = NULL;
	const char *v[2];
	char idbuf[24], *arr;
	size_t nacks, off = 0;
	PGresult *r = NULL;
	bool indoubt;
	uint64_t gen;
	int ret;

	pthread_mutex_lock(&pb->mutex);
	id = pb->lease_id;
	nacks = pb->nacks;
	memcpy(acks, pb->acks, nacks * sizeof(acks[0]));
	pb->nacks = 0;
	pthread_mutex_unlock(&pb->mutex);
	if (!id) {
		pg_lease_ensure(pb, &pb->keeper_conn, pg_call_deadline(pb),
				&gen, &id);
		return;
	}
	arr = malloc(nacks * 24 + 3);
	if (!arr) {
		nacks = 0; /* acknowledged next time */
	} else {
		arr[off++] = '{';
		for (size_t i = 0; i < nacks; i++)
			off += (size_t)snprintf(arr + off, 24, "%s%" PRId64,
						i ? "," : "", acks[i]);
		arr[off++] = '}';
		arr[off] = '\0';
	}
	pg_i64(idbuf, (uint64_t)id);
	v[0] = idbuf;
	v[1] = arr ? arr : "{}";
	sent = dl_mono_ms();
	ret = pg_exec(pb, &pb->keeper_conn, PG_SQL_RENEW, 2, v, NULL, NULL,
		      pg_call_deadline(pb), &r, &indoubt);
	free(arr);
	if (ret < 0) {
		atomic_fetch_add(&pb->lease->renew_failures, 1);
		/* acknowledge them next time */
		pthread_mutex_lock(&pb->mutex);
		for (size_t i = 0;
		     i < nacks && pb->lease_id == id && pb->nacks < PG_MAX_ACKS;
		     i++)
			pb->acks[pb->nacks++] = acks[i];
		pthread_mutex_unlock(&pb->mutex);
		return;
	}
	if (PQntuples(r) < 1 || strcmp(PQgetvalue(r, 0, 0), "R") != 0) {
		atomic_fetch_add(&pb->lease->renew_failures, 1);
		PQclear(r);
		pg_lease_gone(pb, id);
		return;
	}
	atomic_fetch_add(&pb->lease->renewals, 1);
	pthread_mutex_lock(&pb->mutex);
	if (pb->lease_id == id) {
		pb->renewed_at = sent;
		pb->trusted = true;
		pg_lease_publish(pb);
		pthread_cond_broadcast(&pb->cond); /* new watchdog deadline */
	}
	for (int i = 1; i < PQntuples(r); i++) {
		char *res = val_bytea(r, i, 3);

		if (!res) {
			/* the next renewal reports it again; the lock is
			 * fenced by the lease meanwhile */
			dl_log(DL_LOG_ERR, "postgresql: out of memory reading "
					   "a break");
			continue;
		}
		deliver_break(pb, id,
			      val_i64(r, i, 1) ? DL_SPACE_POSIX
					       : DL_SPACE_FLOCK,
			      (uint64_t)val_i64(r, i, 2), res,
			      (uint64_t)val_i64(r, i, 4), &notes);
		free(res);
	}
	pthread_mutex_unlock(&pb->mutex);
	PQclear(r);
	pg_notes_run(pb, notes);
}

/* the safety re-check of our queued waits @ids on @resource */
static void keeper_poll(struct pg_backend *pb, const char *resource,
			const uint64_t *ids, size_t nids)
{
	struct pg_note *notes = NULL;
	char idbuf[24], *arr = NULL;
	const char *v[3];
	int len[3] = { 0, (int)strlen(resource), 0 };
	int fmt[3] = { 0, 1, 0 };
	PGresult *r;
	int64_t id;
	bool indoubt;

	pthread_mutex_lock(&pb->mutex);
	id = pb->lease_id;
	pthread_mutex_unlock(&pb->mutex);
	if (!id)
		return;
	pg_i64(idbuf, (uint64_t)id);
	arr = malloc(PG_POLL_MAX * 24 + 3);
	if (!arr)
		return; /* the next re-check tries again */
	/* one call per resource, in slices of a bounded size */
	for (size_t off = 0; off < nids; off += PG_POLL_MAX) {
		size_t cnt = nids - off < PG_POLL_MAX ? nids - off
						      : PG_POLL_MAX;
		size_t o = 0;

		arr[o++] = '{';
		for (size_t i = 0; i < cnt; i++) {
			char b[24];

			pg_i64(b, ids[off + i]);
			o += (size_t)snprintf(arr + o, 24, "%s%s", i ? "," : "",
					      b);
		}
		arr[o++] = '}';
		arr[o] = '\0';
		v[0] = idbuf;
		v[1] = resource;
		v[2] = arr;
		if (pg_exec(pb, &pb->keeper_conn, PG_SQL_POLL, 3, v, len, fmt,
			    pg_call_deadline(pb), &r, &indoubt) < 0)
			break;
		pthread_mutex_lock(&pb->mutex);
		for (int i = 0; i < PQntuples(r); i++) {
			uint64_t wid = (uint64_t)val_i64(r, i, 0);
			const char *state = PQgetvalue(r, i, 1);
			struct pg_wait *w = pg_wait_find(pb, wid);

			if (!w || w->lease_id != id || w->gen != pb->epoch ||
			    w->state != PW_QUEUED || state[0] == 'q')
				continue;
			if (state[0] == 'g') {
				pg_deliver_grant(pb, id, wid,
						 (uint64_t)val_i64(r, i, 2),
						 &notes);
			} else if (!w->cancelling) {
				/* neither queued nor granted: the server
				 * lost it (our lease purged) */
				pg_wait_unlink(pb, w);
				pg_wait_answer(w, 0, -ENOLCK, &notes);
				pg_wait_free(w);
			}
		}
		pthread_mutex_unlock(&pb->mutex);
		PQclear(r);
	}
	free(arr);
	pg_notes_run(pb, notes);
}

/* one statement of a job, under its lease; the result or NULL */
static PGresult *job_exec(struct pg_backend *pb, const struct pg_job *j,
			  enum pg_sql q)
{
	char lease[24], space[4], s[24], e[24], owner[24], max[24], wid[24];
	const char *v[7];
	int len[7] = { 0 }, fmt[7] = { 0 };
	PGresult *r = NULL;
	bool indoubt;
	int n;

	if (pg_fault_take(&pb->fault.fail_job))
		return NULL; /* test fault: as if the server were down */
	pg_i64(lease, (uint64_t)j->lease_id);
	snprintf(space, sizeof(space), "%d", (int)j->req.space);
	snprintf(s, sizeof(s), "%" PRIu64, j->req.start);
	snprintf(e, sizeof(e), "%" PRIu64, j->req.end);
	pg_i64(owner, j->req.owner);
	pg_i64(max, j->max_token);
	pg_i64(wid, j->req.wait_id);
	v[0] = lease;
	v[1] = j->res;
	len[1] = (int)strlen(j->res);
	fmt[1] = 1;
	v[2] = space;
	switch (q) {
	case PG_SQL_UNLOCK: /* lease, res, space, s, e, owner, max */
		v[3] = s;
		v[4] = e;
		v[5] = owner;
		v[6] = j->max_token == DL_TOKEN_ALL ? NULL : max;
		n = 7;
		break;
	case PG_SQL_RELEASE: /* lease, res, space, owner, max */
		v[3] = owner;
		v[4] = j->max_token == DL_TOKEN_ALL ? NULL : max;
		n = 5;
		break;
	default: /* cancel: lease, res, wait */
		v[2] = wid;
		n = 3;
		break;
	}
	if (pg_exec(pb, &pb->keeper_conn, q, n, v, len, fmt,
		    pg_call_deadline(pb), &r, &indoubt) < 0)
		return NULL;
	return r;
}

/* work left by failed calls; a job whose server is still down stays.  The
 * pass's jobs stay in pb->running, unchanged but for their done mark,
 * until it ends: job_pending() sees them */
static void keeper_jobs(struct pg_backend *pb)
{
	struct pg_job *run;
	size_t done = 0;

	pthread_mutex_lock(&pb->mutex);
	run = pb->jobs;
	pb->jobs = NULL;
	pb->running = run;
	dl_jobgate_begin(&pb->gate);
	pthread_mutex_unlock(&pb->mutex);
	for (struct pg_job *j = run; j; j = j->next) {
		PGresult *r = NULL;
		int64_t id;

		pthread_mutex_lock(&pb->mutex);
		id = pb->lease_id;
		pthread_mutex_unlock(&pb->mutex);
		if (j->lease_id != id) { /* that lease is given up anyway */
			j->done = true;
			continue;
		}
	again:
		switch (j->kind) {
		case PJ_RELEASE:
			r = job_exec(pb, j, PG_SQL_RELEASE);
			break;
		case PJ_UNLOCK:
			r = job_exec(pb, j, PG_SQL_UNLOCK);
			break;
		case PJ_CANCEL:
			r = job_exec(pb, j, PG_SQL_CANCEL);
			if (r && !PQgetisnull(r, 0, 1)) {
				/* granted meanwhile: unlock what it got */
				j->kind = PJ_UNLOCK;
				j->max_token = (uint64_t)val_i64(r, 0, 1);
				PQclear(r);
				goto again;
			}
			break;
		}
		if (r && j->kind != PJ_CANCEL && val_i64(r, 0, 0) == 0) {
			/* the owner holds nothing more there */
			pthread_mutex_lock(&pb->mutex);
			pg_held_remove(pb, j->res, j->req.space, j->req.owner,
				       j->max_token);
			pthread_mutex_unlock(&pb->mutex);
		}
		if (r) {
			PQclear(r);
			j->done = true;
		}
	}
	pthread_mutex_lock(&pb->mutex);
	while (run) {
		struct pg_job *j = run;

		run = j->next;
		if (j->done) {
			free(j);
			done++;
			continue;
		}
		j->next = pb->jobs;
		pb->jobs = j;
	}
	pb->running = NULL;
	pb->njobs -= done;
	dl_jobgate_end(&pb->gate); /* wakes pg_jobs_settle() */
	pthread_mutex_unlock(&pb->mutex);
}

struct job_key {
	struct pg_backend *pb;
	const struct dl_lock_req *req;
};

static bool job_in(const struct pg_job *j, const struct dl_lock_req *req)
{
	for (; j; j = j->next)
		if (j->req.owner == req->owner && j->req.space == req->space &&
		    strcmp(j->res, req->resource) == 0)
			return true;
	return false;
}

/* a job of the caller's owner there: waiting, or in the keeper's pass */
static bool job_pending(void *arg)
{
	const struct job_key *k = arg;

	return job_in(k->pb->jobs, k->req) || job_in(k->pb->running, k->req);
}

/* before a lock of @req is sent: that owner's jobs on that resource are
 * done first (backend/util/jobgate.h), by @deadline; mutex held.  0, or
 * -ENOLCK: one is left and the lock must not be sent.  With the server
 * down, at once: no pass can do the job (each lasts a reconnect backoff),
 * and the lock would fail too */
int pg_jobs_settle(struct pg_backend *pb, const struct dl_lock_req *req,
		   int64_t deadline)
{
	struct job_key k = { pb, req };
	int64_t left = deadline - dl_mono_ms();

	if (!pb->jobs && !pb->running)
		return 0; /* the common case */
	if (!pb->up && job_pending(&k))
		return -ENOLCK;
	return dl_jobgate_settle(&pb->gate, left > 0 ? left : 0, job_pending,
				 &k);
}

/* end the leases given up; those the server did not confirm are tried
 * again next time (one that is never reached expires by itself) */
static void keeper_drops(struct pg_backend *pb)
{
	int64_t drops[PG_MAX_DROPS];
	size_t n;

	pthread_mutex_lock(&pb->mutex);
	n = pb->ndrops;
	memcpy(drops, pb->drops, n * sizeof(drops[0]));
	pb->ndrops = 0;
	pthread_mutex_unlock(&pb->mutex);
	for (size_t i = 0; i < n; i++) {
		char idbuf[24];
		const char *v[1] = { idbuf };
		PGresult *r;
		bool indoubt;

		pg_i64(idbuf, (uint64_t)drops[i]);
		if (pg_exec(pb, &pb->keeper_conn, PG_SQL_DROP, 1, v, NULL, NULL,
			    pg_call_deadline(pb), &r, &indoubt) == 0) {
			PQclear(r);
			continue;
		}
		pthread_mutex_lock(&pb->mutex);
		drop_later(pb, drops[i]);
		pthread_mutex_unlock(&pb->mutex);
	}
}

struct pg_pollset {
	char *resource;
	uint64_t *ids;
	size_t n;
};

/* our queued waits grouped by resource (a snapshot) */
static size_t keeper_pollsets(struct pg_backend *pb, struct pg_pollset **out)
{
	struct pg_pollset *sets = NULL;
	size_t nsets = 0;

	pthread_mutex_lock(&pb->mutex);
	for (size_t b = 0; b < PG_BUCKETS; b++) {
		for (struct pg_wait *w = pb->waits[b]; w; w = w->next) {
			uint64_t *ids;
			size_t s;

			if (w->state != PW_QUEUED || w->cancelling)
				continue;
			for (s = 0; s < nsets; s++)
				if (strcmp(sets[s].resource, w->res) == 0)
					break;
			if (s == nsets) {
				struct pg_pollset *p =
					realloc(sets, (nsets + 1) * sizeof(*p));

				if (!p)
					continue;
				sets = p;
				sets[s] = (struct pg_pollset){ strdup(w->res),
							       NULL, 0 };
				if (!sets[s].resource)
					continue;
				nsets++;
			}
			ids = realloc(sets[s].ids,
				      (sets[s].n + 1) * sizeof(*ids));
			if (!ids)
				continue;
			sets[s].ids = ids;
			ids[sets[s].n++] = w->wait_id;
		}
	}
	pthread_mutex_unlock(&pb->mutex);
	*out = sets;
	return nsets;
}

static void nap(struct pg_backend *pb, int64_t ms)
{
	if (!pb->stopping)
		cond_wait_until(pb, dl_mono_ms() + ms);
}

void *pg_keeper_main(void *arg)
{
	struct pg_backend *pb = arg;
	int64_t renew_every = pb->uri.ttl_ms / 3;
	int64_t next_renew = dl_mono_ms() + renew_every, next_check = 0;
	int64_t next_drop = 0;

	pthread_mutex_lock(&pb->mutex);
	dl_jobgate_keeper_start(&pb->gate);
	while (!pb->stopping) {
		int64_t now = dl_mono_ms(), wake;
		bool renew, check, jobs, drops;

		renew = pb->kick_renew || now >= next_renew;
		check = (pb->nwaits || pb->jobs) &&
			(pb->kick || now >= next_check);
		jobs = check && pb->jobs;
		drops = pb->ndrops > 0 && now >= next_drop;
		if (!renew && !check && !drops) {
			wake = next_renew;
			if ((pb->nwaits || pb->jobs) && next_check < wake)
				wake = next_check;
			if (pb->ndrops && next_drop < wake)
				wake = next_drop;
			nap(pb, wake - now);
			continue;
		}
		pb->kick = false;
		pb->kick_renew = false;
		pthread_mutex_unlock(&pb->mutex);

		if (drops)
			keeper_drops(pb);
		/* a drop the server did not confirm: again in a second */
		next_drop = dl_mono_ms() + PG_RECHECK_MS;
		if (renew) {
			next_renew = dl_mono_ms() + renew_every;
			keeper_renew(pb);
		}
		if (check)
			next_check = dl_mono_ms() + PG_RECHECK_MS;
		if (jobs)
			keeper_jobs(pb);
		if (check) {
			struct pg_pollset *sets;
			size_t n = keeper_pollsets(pb, &sets);

			for (size_t s = 0; s < n; s++) {
				keeper_poll(pb, sets[s].resource, sets[s].ids,
					    sets[s].n);
				free(sets[s].resource);
				free(sets[s].ids);
			}
			free(sets);
		}
		pthread_mutex_lock(&pb->mutex);
		/* a renewal that failed is retried soon, not in ttl/3: the
		 * lease has margin for about two of them */
		if (!pb->trusted || !pb->up)
			if (next_renew > dl_mono_ms() + PG_BACKOFF_MAX_MS)
				next_renew = dl_mono_ms() + PG_BACKOFF_MAX_MS;
	}
	pthread_mutex_unlock(&pb->mutex);
	return NULL;
}

/* ---- the watchdog: lost before re-granted ------------------------------ */

void *pg_watchdog_main(void *arg)
{
	struct pg_backend *pb = arg;

	pthread_mutex_lock(&pb->mutex);
	while (!pb->stopping) {
		struct pg_note *notes = NULL;
		int64_t deadline;

		if (!pb->trusted || !pb->lease_id) {
			pthread_cond_wait(&pb->cond, &pb->mutex);
			continue;
		}
		deadline = pb->renewed_at + pb->uri.ttl_ms - pb->margin_ms;
		if (dl_mono_ms() < deadline) {
			cond_wait_until(pb, deadline);
			continue;
		}
		lose_all(pb, "could not be renewed in time", &notes);
		pthread_mutex_unlock(&pb->mutex);
		pg_notes_run(pb, notes);
		pthread_mutex_lock(&pb->mutex);
	}
	pthread_mutex_unlock(&pb->mutex);
	return NULL;
}

/*
 * ops.c - the "postgresql://" (and "postgres://") backend: cluster-wide
 * locks kept as rows in PostgreSQL, reached only through
 * backend/backend.h.
 *
 * Every decision (conflict check, POSIX merge/split/convert, the flock
 * conversion rule, the FIFO queue, handoff on release, purge of dead
 * leases, lock-delay, break) is made inside the server by one PL/pgSQL
 * function per operation (schema.sql), in one transaction that first
 * serialises on its resource; the decision and its effects commit
 * together.  A request is one statement, one round trip, run by a worker
 * thread on its own connection (call.c).  This file turns requests into
 * statements and answers into results and callbacks, and keeps the
 * bookkeeping (track.c) needed to report grants and losses:
 *
 *  - lock(): granted (0), conflict (-EAGAIN), or queued on the server
 *    (-EINPROGRESS; the grant comes later as a NOTIFY to the listener,
 *    or through the keeper's safety re-check).  The wait is registered
 *    under the lease the request is sent with before it is sent, so its
 *    grant is recognised whichever thread reports it; a request that
 *    got no answer is undone in the background (a job) and reported
 *    -ENOLCK, with any lock its owner held there reported lost;
 *  - unlock(), release_owner(): the server hands the freed bytes to its
 *    queue in the same transaction; one that got no answer is retried by
 *    the keeper, bounded by the newest grant processed when it was asked
 *    for, so a later grant to the same owner survives the retry;
 *  - cancel(): a wait being cancelled belongs to pg_cancel() until it
 *    returns, so every request is answered exactly once;
 *  - poke(): one statement that NOTIFYs the other holders' daemons; their
 *    listeners call cb->revoke (listen.c).  Nothing is tracked: a poke
 *    lost with a connection is repeated by the waiter.
 *  - version(), bump(): a resource's content version (schema.sql's
 *    res_versions), apart from the locks: no lease needed, nothing
 *    tracked.  A bump carries an id of its own, so one asked again after
 *    its answer was lost (call.c) is counted once.
 *
 * Threads and locking: see internal.h.  No callback runs with pb->mutex
 * held; lock() may call back (a loss it saw) before it returns.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "backend/pg/internal.h"
#include "backend/util/log.h"

static struct pg_backend *pg_of(struct dl_backend *be)
{
	return (struct pg_backend *)be;
}

static void fault_parse(struct pg_fault *f)
{
	const char *s = getenv("DLOCKFS_TEST_PG_FAULT");

	while (s && *s) {
		char name[32];
		int v, len = 0;

		if (sscanf(s, "%31[a-z_]:%d%n", name, &v, &len) < 2 || !len)
			break;
		if (strcmp(name, "delay_lock") == 0)
			f->delay_lock = v;
		else if (strcmp(name, "delay_cancel") == 0)
			f->delay_cancel = v;
		else if (strcmp(name, "drop_result") == 0)
			atomic_store(&f->drop_result, v);
		else if (strcmp(name, "fail_job") == 0)
			atomic_store(&f->fail_job, v);
		dl_log(DL_LOG_WARNING, "postgresql: test fault %s:%d", name, v);
		s += len;
		if (*s == ',')
			s++;
	}
}

static bool req_valid(const struct dl_lock_req *req, bool unlock)
{
	if (!req->resource || req->start > req->end ||
	    (unsigned)req->space > DL_SPACE_POSIX)
		return false;
	return unlock || req->type == DL_RDLCK || req->type == DL_WRLCK;
}

static int64_t val_i64(const PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return 0;
	return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static uint64_t val_u64(const PGresult *r, int row, int col)
{
	if (PQgetisnull(r, row, col))
		return 0;
	return strtoull(PQgetvalue(r, row, col), NULL, 10);
}

/* text buffers of a request's parameters */
struct pg_args {
	char space[4], type[4], start[24], end[24], owner[24], pid[16],
		wait[24], max[24];
};

static void args_fill(struct pg_args *a, const struct dl_lock_req *req)
{
	snprintf(a->space, sizeof(a->space), "%d", (int)req->space);
	snprintf(a->type, sizeof(a->type), "%d", (int)req->type);
	snprintf(a->start, sizeof(a->start), "%" PRIu64, req->start);
	snprintf(a->end, sizeof(a->end), "%" PRIu64, req->end);
	pg_i64(a->owner, req->owner);
	snprintf(a->pid, sizeof(a->pid), "%u", req->pid);
	pg_i64(a->wait, req->wait_id);
}

/* the resource as parameter @i: raw bytes (bytea, binary format) */
static void call_resource(struct pg_call *call, int i, const char *res)
{
	call->values[i] = res;
	call->lengths[i] = (int)strlen(res);
	call->formats[i] = 1;
}

/* ---- lock ----------------------------------------------------------------- */

enum pg_outcome {
	PO_GRANTED,
	PO_CONFLICT,
	PO_QUEUED,
	PO_LEASE, /* our lease is gone there */
	PO_ERROR,
};

/* run by the worker once the lease is known, before the request is sent:
 * register the wait under that lease */
static void lock_prepare(struct pg_backend *pb, struct pg_call *call)
{
	struct pg_wait *w = call->arg;

	pthread_mutex_lock(&pb->mutex);
	w->gen = call->gen;
	w->lease_id = call->lease_id;
	w->state = PW_SENDING;
	pg_wait_insert(pb, w);
	call->prepared = true; /* from now on, w may be granted and freed */
	pthread_mutex_unlock(&pb->mutex);
	pg_fault_sleep(pb->fault.delay_lock);
}

static int pg_lock(struct dl_backend *be, const struct dl_lock_req *req,
		   struct dl_grant *grant)
{
	struct pg_backend *pb = pg_of(be);
	enum pg_outcome o = PO_ERROR;
	struct pg_note *notes = NULL;
	struct pg_held *spare = NULL;
	struct pg_wait *w = NULL;
	struct pg_call call;
	struct pg_args a;
	uint64_t token = 0, gen = 0;
	int64_t lease_id = 0;
	bool indoubt = false, inserted = false;
	/* one deadline for the whole request: waiting for the owner's
	 * left-over jobs, then the statement (each with a deadline of its
	 * own let a lock with the server down fail after twice the bound) */
	int64_t deadline = pg_call_deadline(pb);
	int ret;

	if (!req_valid(req, false))
		return -EINVAL;
	grant->token = 0;
	grant->lease = 0;
	if (req->wait_id) {
		w = pg_wait_new(req);
		if (!w)
			return -ENOMEM;
	} else {
		spare = pg_held_alloc(req);
		if (!spare)
			return -ENOMEM;
	}
	pthread_mutex_lock(&pb->mutex);
	ret = pg_jobs_settle(pb, req, deadline);
	pthread_mutex_unlock(&pb->mutex);
	if (ret < 0) {
		pg_wait_free(w);
		pg_held_free(spare);
		return ret;
	}
	args_fill(&a, req);
	for (int attempt = 0; attempt < 2; attempt++) {
		memset(&call, 0, sizeof(call));
		call.deadline = deadline;
		call.sql = PG_SQL_LOCK;
		call.nparams = 9;
		call.with_lease = true;
		call_resource(&call, 1, req->resource);
		call.values[2] = a.space;
		call.values[3] = a.type;
		call.values[4] = a.start;
		call.values[5] = a.end;
		call.values[6] = a.owner;
		call.values[7] = a.pid;
		call.values[8] = req->wait_id ? a.wait : NULL;
		call.prepare = w ? lock_prepare : NULL;
		call.arg = w;
		ret = pg_call_run(pb, &call);
		inserted = call.prepared;
		gen = call.gen;
		lease_id = call.lease_id;
		indoubt = call.indoubt;
		o = PO_ERROR;
		if (ret == 0 && PQntuples(call.res) == 1) {
			switch (val_i64(call.res, 0, 0)) {
			case 1:
				o = PO_GRANTED;
				token = val_u64(call.res, 0, 1);
				break;
			case 0:
				o = PO_CONFLICT;
				break;
			case 2:
				o = w ? PO_QUEUED : PO_ERROR;
				break;
			case -1:
				o = PO_LEASE;
				break;
			}
		}
		PQclear(call.res);
		if (o != PO_LEASE)
			break;
		if (w && inserted) {
			bool mine;

			/* refused: not queued by this try */
			pthread_mutex_lock(&pb->mutex);
			mine = pg_wait_unlink_id(pb, req->wait_id, w);
			pthread_mutex_unlock(&pb->mutex);
			inserted = false;
			if (!mine) /* granted by an earlier try, and freed */
				return -EINPROGRESS;
		}
		pg_lease_gone(pb, lease_id);
	}

	pthread_mutex_lock(&pb->mutex);
	if (w && inserted && !pg_wait_unlink_id(pb, req->wait_id, w)) {
		/* sent but not in the table any more: its grant was
		 * reported (pg_deliver_grant() is the only one to unlink a
		 * wait being sent); a retry after a lost answer may have
		 * been granted once more, with a newer token */
		struct pg_held *h = *pg_held_slot(pb, req->resource, req->space,
						  req->owner);

		if (o == PO_GRANTED && h && token > h->max_token)
			h->max_token = token;
		w = NULL; /* freed by pg_deliver_grant() */
		ret = -EINPROGRESS;
		goto out_unlock;
	}
	if (pb->epoch != gen && (o == PO_GRANTED || o == PO_QUEUED)) {
		/* under a lease given up meanwhile: its records die with it */
		o = PO_ERROR;
		indoubt = false;
	}
	switch (o) {
	case PO_GRANTED:
		pg_held_add(pb, w ? &w->spare : &spare, req->resource,
			    req->space, req->owner, token);
		grant->token = token;
		grant->lease = gen;
		ret = 0;
		break;
	case PO_QUEUED:
		w->state = PW_QUEUED;
		pg_wait_insert(pb, w);
		w = NULL; /* the table owns it */
		ret = -EINPROGRESS;
		break;
	case PO_CONFLICT:
		ret = -EAGAIN;
		break;
	default:
		ret = -ENOLCK;
		if (indoubt && pb->epoch == gen && lease_id) {
			struct pg_held **p = pg_held_slot(
				pb, req->resource, req->space, req->owner);

			/* the request may have run: take it back later */
			pg_job_add(pb, req->wait_id ? PJ_CANCEL : PJ_UNLOCK,
				   lease_id, req, DL_TOKEN_ALL);
			if (*p)
				pg_held_lose(pb, p, -ENOLCK, &notes);
		}
		break;
	}
out_unlock:
	pthread_mutex_unlock(&pb->mutex);
	pg_wait_free(w);
	pg_held_free(spare);
	pg_notes_run(pb, notes);
	return ret;
}

/* ---- unlock, release, cancel -------------------------------------------- */

static int pg_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct pg_backend *pb = pg_of(be);
	uint64_t max = DL_TOKEN_ALL;
	struct pg_call call = { 0 };
	struct pg_held *h;
	struct pg_args a;
	int ret;

	if (!req_valid(req, true))
		return -EINVAL;
	pthread_mutex_lock(&pb->mutex);
	h = *pg_held_slot(pb, req->resource, req->space, req->owner);
	if (h)
		max = h->max_token;
	pthread_mutex_unlock(&pb->mutex);
	args_fill(&a, req);
	pg_i64(a.max, max);
	call.sql = PG_SQL_UNLOCK;
	call.nparams = 7;
	call.with_lease = true;
	call_resource(&call, 1, req->resource);
	call.values[2] = a.space;
	call.values[3] = a.start;
	call.values[4] = a.end;
	call.values[5] = a.owner;
	call.values[6] = max == DL_TOKEN_ALL ? NULL : a.max;
	ret = pg_call_run(pb, &call);
	pthread_mutex_lock(&pb->mutex);
	if (ret == 0 && PQntuples(call.res) == 1 &&
	    val_i64(call.res, 0, 0) == 0)
		pg_held_remove(pb, req->resource, req->space, req->owner, max);
	if (ret < 0 && (call.lease_id || pb->lease_id))
		/* nobody will ask again: retry until done or the lease is
		 * given up (its records die with it) */
		pg_job_add(pb, PJ_UNLOCK,
			   call.lease_id ? call.lease_id : pb->lease_id, req,
			   max);
	pthread_mutex_unlock(&pb->mutex);
	PQclear(call.res);
	return ret < 0 ? -ENOLCK : 0;
}

static int pg_release_owner(struct dl_backend *be, const char *resource,
			    enum dl_space space, uint64_t owner,
			    uint64_t max_token)
{
	struct pg_backend *pb = pg_of(be);
	struct dl_lock_req req = { .resource = resource,
				   .space = space,
				   .type = DL_UNLCK,
				   .start = 0,
				   .end = DL_RANGE_EOF,
				   .owner = owner };
	struct pg_call call = { 0 };
	struct pg_args a;
	int ret;

	args_fill(&a, &req);
	pg_i64(a.max, max_token);
	call.sql = PG_SQL_RELEASE;
	call.nparams = 5;
	call.with_lease = true;
	call_resource(&call, 1, resource);
	call.values[2] = a.space;
	call.values[3] = a.owner;
	call.values[4] = max_token == DL_TOKEN_ALL ? NULL : a.max;
	ret = pg_call_run(pb, &call);
	pthread_mutex_lock(&pb->mutex);
	if (ret == 0 && PQntuples(call.res) == 1 &&
	    val_i64(call.res, 0, 0) == 0)
		pg_held_remove(pb, resource, space, owner, max_token);
	if (ret < 0 && (call.lease_id || pb->lease_id))
		pg_job_add(pb, PJ_RELEASE,
			   call.lease_id ? call.lease_id : pb->lease_id, &req,
			   max_token);
	pthread_mutex_unlock(&pb->mutex);
	PQclear(call.res);
	return ret < 0 ? -ENOLCK : 0;
}

/*
 * A wait marked cancelling belongs to this call until it returns: a
 * grant reported meanwhile or a lease loss only mark it, so it is
 * answered exactly once (-ENOENT: by the callback, 0: by the caller).
 */
static int pg_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct pg_backend *pb = pg_of(be);
	struct pg_note *notes = NULL;
	struct pg_call call = { 0 };
	char lease[24], wid[24];
	struct pg_wait *w;
	int ret;

	pthread_mutex_lock(&pb->mutex);
	w = pg_wait_find(pb, wait_id);
	if (!w || w->state != PW_QUEUED || w->cancelling) {
		pthread_mutex_unlock(&pb->mutex);
		return -ENOENT;
	}
	w->cancelling = true;
	pthread_mutex_unlock(&pb->mutex);
	pg_fault_sleep(pb->fault.delay_cancel);

	/* under the lease it was queued with, whatever the current one */
	pg_i64(lease, (uint64_t)w->lease_id);
	pg_i64(wid, wait_id);
	call.sql = PG_SQL_CANCEL;
	call.nparams = 3;
	call.values[0] = lease;
	call_resource(&call, 1, w->res);
	call.values[2] = wid;
	ret = pg_call_run(pb, &call);

	pthread_mutex_lock(&pb->mutex);
	if (w->end == PWE_GRANTED) {
		ret = -ENOENT; /* its grant was reported */
	} else if (w->end == PWE_LOST) {
		ret = 0; /* its lease is given up: its record dies with it */
	} else if (ret < 0 || PQntuples(call.res) != 1) {
		/* unknown: forget the wait; the keeper removes the record,
		 * or unlocks it if the server granted it meanwhile */
		pg_wait_unlink(pb, w);
		pg_job_add(pb, PJ_CANCEL, w->lease_id, &w->req, DL_TOKEN_ALL);
		ret = 0;
	} else if (val_i64(call.res, 0, 0) == 0 &&
		   !PQgetisnull(call.res, 0, 1)) {
		w->cancelling = false;
		if (pg_deliver_grant(pb, w->lease_id, wait_id,
				     val_u64(call.res, 0, 1), &notes)) {
			w = NULL; /* freed there */
			ret = -ENOENT;
		} else {
			pg_wait_unlink(pb, w);
			ret = 0;
		}
	} else {
		/* removed, or neither queued nor granted any more */
		pg_wait_unlink(pb, w);
		ret = 0;
	}
	pthread_mutex_unlock(&pb->mutex);
	PQclear(call.res);
	pg_wait_free(w);
	pg_notes_run(pb, notes);
	return ret;
}

/* ---- getlk, list, break ------------------------------------------------- */

/* a lock row (type, start, end, lease, owner, pid, token, since, host from
 * column @c) into @info */
static void info_fill(const PGresult *r, int row, int c,
		      struct dl_lock_info *info, int64_t mine)
{
	int64_t lease = val_i64(r, row, c + 3);

	info->type = val_i64(r, row, c) == 2 ? DL_WRLCK : DL_RDLCK;
	info->start = val_u64(r, row, c + 1);
	info->end = val_u64(r, row, c + 2);
	info->owner = (uint64_t)val_i64(r, row, c + 4);
	info->pid = (uint32_t)val_i64(r, row, c + 5);
	info->token = (uint64_t)val_i64(r, row, c + 6);
	info->since_ms = val_i64(r, row, c + 7);
	snprintf(info->host, sizeof(info->host), "%s",
		 PQgetvalue(r, row, c + 8));
	info->mine = lease == mine;
}

static int pg_getlk(struct dl_backend *be, const struct dl_lock_req *req,
		    struct dl_lock_info *conflict)
{
	struct pg_backend *pb = pg_of(be);
	struct pg_call call = { 0 };
	struct pg_args a;
	int ret;

	if (!req_valid(req, false))
		return -EINVAL;
	args_fill(&a, req);
	call.sql = PG_SQL_GETLK;
	call.nparams = 7;
	call.with_lease = true;
	call_resource(&call, 1, req->resource);
	call.values[2] = a.space;
	call.values[3] = a.type;
	call.values[4] = a.start;
	call.values[5] = a.end;
	call.values[6] = a.owner;
	ret = pg_call_run(pb, &call);
	if (ret < 0)
		return -ENOLCK;
	ret = 0;
	if (PQntuples(call.res) == 1) {
		memset(conflict, 0, sizeof(*conflict));
		conflict->space = req->space;
		info_fill(call.res, 0, 0, conflict, call.lease_id);
		ret = 1;
	}
	PQclear(call.res);
	return ret;
}

/* a bytea value as a C string, malloc'd (cut at a NUL); NULL: -ENOMEM */
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

/*
 * Every holder then waiter of @resource (NULL: of all), in one snapshot.
 * A waiter's since_ms is its enqueue time by the server's clock, the same
 * whoever lists it.  A grant to one of our owners that this daemon has
 * not processed yet (its token is newer than any we reported) is listed
 * as a wait: the lock manager still waits for it.
 */
static int pg_list(struct dl_backend *be, const char *resource,
		   dl_lock_info_fn fn, void *arg)
{
	struct pg_backend *pb = pg_of(be);
	struct pg_call call = { 0 };
	struct dl_lock_info *v = NULL;
	char **names = NULL;
	int64_t mine;
	int ret, n = 0;

	call.sql = PG_SQL_LIST;
	call.nparams = 1;
	if (resource)
		call_resource(&call, 0, resource);
	ret = pg_call_run(pb, &call);
	if (ret < 0)
		return -ENOLCK;
	n = PQntuples(call.res);
	v = calloc((size_t)n + 1, sizeof(*v));
	names = calloc((size_t)n + 1, sizeof(*names));
	if (!v || !names) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (int i = 0; i < n; i++) {
		names[i] = resource ? NULL : val_bytea(call.res, i, 1);
		if (!resource && !names[i]) {
			ret = -ENOMEM;
			goto out_free;
		}
	}
	pthread_mutex_lock(&pb->mutex);
	mine = pb->lease_id;
	for (int i = 0; i < n; i++) {
		struct dl_lock_info *info = &v[i];
		const char *res = resource ? resource : names[i];

		info->space = val_i64(call.res, i, 2) ? DL_SPACE_POSIX
						      : DL_SPACE_FLOCK;
		info->waiting = PQgetvalue(call.res, i, 0)[0] == 'w';
		/* type, start, end, lease, owner, pid, token, since, host */
		info_fill(call.res, i, 3, info, mine);
		if (info->mine && !info->waiting) {
			struct pg_held *h = *pg_held_slot(pb, res, info->space,
							  info->owner);

			if (!h || info->token > h->max_token) {
				info->waiting = true;
				info->token = 0;
			}
		}
		info->resource = res;
	}
	pthread_mutex_unlock(&pb->mutex);
	for (int i = 0; i < n; i++)
		if (fn(&v[i], arg))
			break;
	ret = 0;
out_free:
	for (int i = 0; names && i < n; i++)
		free(names[i]);
	free(names);
	free(v);
	PQclear(call.res);
	return ret;
}

/*
 * An administrator breaks @resource: its holders' daemons learn it through
 * their channel or their next renewal.  0, -ENOENT when nothing was held,
 * -ENOLCK when the server did not answer.
 */
static int pg_break_lock(struct dl_backend *be, const char *resource)
{
	struct pg_backend *pb = pg_of(be);
	struct pg_call call = { 0 };
	int64_t n;

	call.sql = PG_SQL_BREAK;
	call.nparams = 1;
	call_resource(&call, 0, resource);
	if (pg_call_run(pb, &call) < 0)
		return -ENOLCK;
	n = PQntuples(call.res) == 1 ? val_i64(call.res, 0, 0) : 0;
	PQclear(call.res);
	dl_log(DL_LOG_NOTICE,
	       "postgresql: lock of %s broken (%" PRId64 " holder(s))",
	       resource, n);
	return n ? 0 : -ENOENT;
}

/*
 * Ask the other daemons that hold a lock on @resource to give it back
 * (schema.sql's poke()): the server tells each on its channel, this
 * daemon (its incarnation) left out.  0, -EINVAL without a resource, or
 * -ENOLCK when the server did not answer.  A name too long for a NOTIFY
 * payload (over PG_POKE_MAX bytes; a path is at most 4095) is not sent:
 * 0, best effort, its holders give it back in their own time.
 */
static int pg_poke(struct dl_backend *be, const char *resource)
{
	struct pg_backend *pb = pg_of(be);
	struct pg_call call = { 0 };
	int64_t n;

	if (!resource)
		return -EINVAL;
	if (strlen(resource) > PG_POKE_MAX) {
		dl_log(DL_LOG_DEBUG,
		       "postgresql: poke: a name of %zu bytes is too long "
		       "to send",
		       strlen(resource));
		return 0;
	}
	call.sql = PG_SQL_POKE;
	call.nparams = 2;
	call.values[0] = pb->inc_hex;
	call_resource(&call, 1, resource);
	if (pg_call_run(pb, &call) < 0)
		return -ENOLCK;
	n = PQntuples(call.res) == 1 ? val_i64(call.res, 0, 0) : 0;
	PQclear(call.res);
	dl_log(DL_LOG_DEBUG, "postgresql: poke %s: %" PRId64 " daemon(s) told",
	       resource, n);
	return 0;
}

/* ---- versions ------------------------------------------------------------ */

/* a (version, host, changed) row into @out; no row: never bumped */
static int version_fill(const PGresult *r, struct dl_version *out)
{
	memset(out, 0, sizeof(*out));
	if (PQntuples(r) == 0)
		return 0;
	if (PQntuples(r) != 1 || PQnfields(r) != 3 || PQgetisnull(r, 0, 0))
		return -EIO;
	out->version = val_u64(r, 0, 0);
	snprintf(out->host, sizeof(out->host), "%s", PQgetvalue(r, 0, 1));
	out->changed_ms = val_i64(r, 0, 2);
	return 0;
}

/*
 * The version of @resource (schema.sql's version_of()): the last committed
 * bump, read without a lock.  0, -EINVAL without a resource, or -ENOLCK
 * when the server did not answer.
 */
static int pg_version(struct dl_backend *be, const char *resource,
		      struct dl_version *out)
{
	struct pg_backend *pb = pg_of(be);
	struct pg_call call = { 0 };
	int ret;

	if (!resource)
		return -EINVAL;
	call.sql = PG_SQL_VERSION;
	call.nparams = 1;
	call_resource(&call, 0, resource);
	if (pg_call_run(pb, &call) < 0)
		return -ENOLCK;
	ret = version_fill(call.res, out);
	PQclear(call.res);
	if (ret < 0) {
		dl_log(DL_LOG_ERR, "postgresql: version of %s: a bad answer",
		       resource);
		return -ENOLCK;
	}
	return 0;
}

/*
 * Add one to the version of @resource (schema.sql's bump(), under the
 * resource's advisory lock: two daemons bumping at once get two
 * versions).  Its id (incarnation:number) makes the retry of a bump
 * whose answer was lost (call.c) find it done instead of bumping again.
 * 0 with *out the version after it, -EINVAL without a resource, or
 * -ENOLCK when the server did not answer (the bump may have run).
 */
static int pg_bump(struct dl_backend *be, const char *resource,
		   struct dl_version *out)
{
	struct pg_backend *pb = pg_of(be);
	struct pg_call call = { 0 };
	char id[48];
	int ret;

	if (!resource)
		return -EINVAL;
	snprintf(id, sizeof(id), "%s:%016" PRIxFAST64, pb->inc_hex,
		 atomic_fetch_add(&pb->bump_seq, 1) + 1);
	call.sql = PG_SQL_BUMP;
	call.nparams = 3;
	call.values[0] = pb->host_id;
	call_resource(&call, 1, resource);
	call.values[2] = id;
	if (pg_call_run(pb, &call) < 0) {
		dl_log(DL_LOG_DEBUG, "postgresql: bump %s: %s", resource,
		       call.indoubt ? "no answer (it may have run)"
				    : "server unreachable");
		return -ENOLCK;
	}
	ret = version_fill(call.res, out);
	if (ret == 0 && !out->version)
		ret = -EIO; /* bump() always returns a row */
	PQclear(call.res);
	if (ret < 0) {
		dl_log(DL_LOG_ERR, "postgresql: bump %s: a bad answer",
		       resource);
		return -ENOLCK;
	}
	return 0;
}

static int pg_status(struct dl_backend *be, char *buf, size_t len)
{
	struct pg_backend *pb = pg_of(be);
	int64_t ago = -1, lease;
	char version[32];
	size_t held, waiting, retrying;
	bool ok;

	pthread_mutex_lock(&pb->mutex);
	ok = pb->up && pb->trusted;
	if (pb->trusted)
		ago = dl_mono_ms() - pb->renewed_at;
	lease = pb->lease_id;
	held = pb->nheld;
	waiting = pb->nwaits;
	retrying = pb->njobs;
	snprintf(version, sizeof(version), "%s",
		 pb->server_version[0] ? pb->server_version : "?");
	pthread_mutex_unlock(&pb->mutex);
	snprintf(buf, len,
		 "health=%s server=%s schema=%s lease=%" PRId64
		 " lease_ms=%d last_renew_ms_ago=%" PRId64 " held=%zu "
		 "waiting=%zu retrying=%zu",
		 ok ? "ok" : "down", version, pb->uri.schema, lease,
		 pb->uri.ttl_ms, ago, held, waiting, retrying);
	return 0;
}

/* ---- open, close ---------------------------------------------------------- */

static int pg_check_uri(const char *rest, char *err, size_t errlen)
{
	struct pg_uri u;

	return pg_uri_parse(rest, &u, err, errlen);
}

static void pg_close(struct dl_backend *be);

static int pg_open(const struct dl_backend_conf *conf,
		   const struct dl_backend_cb *cb, struct dl_backend **out,
		   char *err, size_t errlen)
{
	const char *rest = strchr(conf->uri, ':') + 1;
	struct pg_backend *pb;
	pthread_condattr_t ca;
	char why[512] = "";
	const char *pw;
	int64_t id;
	uint64_t gen, seq;
	int ret;

	pb = calloc(1, sizeof(*pb));
	if (!pb) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	pb->base.ops = dl_backend_find(conf->uri);
	pb->cb = *cb;
	pb->wake_fd = -1;
	ret = pg_uri_parse(rest, &pb->uri, err, errlen);
	if (ret < 0) {
		free(pb);
		return ret;
	}
	fault_parse(&pb->fault);
	snprintf(pb->host_id, sizeof(pb->host_id), "%s", conf->host_id);
	snprintf(pb->inc_hex, sizeof(pb->inc_hex), "%016" PRIx64,
		 conf->incarnation);
	snprintf(pb->channel, sizeof(pb->channel), "%s_%s", pb->uri.schema,
		 pb->inc_hex);
	pb->margin_ms = pb->uri.ttl_ms / 10 > 500 ? pb->uri.ttl_ms / 10 : 500;
	pb->lease = conf->lease;
	pb->epoch = 1;
	/* bump ids count from a random start: a backend opened again with
	 * the same incarnation (tests do) never repeats an earlier id */
	if (getrandom(&seq, sizeof(seq), 0) != (ssize_t)sizeof(seq))
		seq = (uint64_t)dl_mono_ms() << 20 ^ (uint64_t)getpid();
	atomic_init(&pb->bump_seq, seq);
	/* no trusted lease until one is registered */
	atomic_store(&pb->lease->gen, pb->epoch);
	atomic_store(&pb->lease->until_ms, 0);
	pb->keeper_conn.role = "keeper";
	pb->listen_conn.role = "listener";
	pthread_mutex_init(&pb->mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&pb->cond, &ca);
	pthread_condattr_destroy(&ca);
	dl_jobgate_init(&pb->gate, &pb->mutex, &pb->cond, &pb->kick,
			&pb->stopping);
	for (int i = 0; i < PG_WORKERS; i++)
		pthread_cond_init(&pb->workers[i].cond, NULL);
	pw = conf->config ? dl_config_get(conf->config, "pg_password") : NULL;
	if (pw && *pw) {
		pb->password = strdup(pw);
		if (!pb->password) {
			snprintf(err, errlen, "out of memory");
			ret = -ENOMEM;
			goto out_close;
		}
	}
	pb->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (pb->wake_fd < 0 || pg_sql_init(pb) < 0) {
		snprintf(err, errlen, "cannot set up: %s", strerror(errno));
		ret = -ENOMEM;
		goto out_close;
	}

	/* a first connection checks the credentials and the server, creates
	 * the schema on first use and registers our lease */
	ret = pg_connect(pb, &pb->keeper_conn, pg_call_deadline(pb), why,
			 sizeof(why));
	if (ret == 0)
		ret = pg_schema_install(pb, &pb->keeper_conn, why, sizeof(why));
	if (ret == 0 && pg_lease_ensure(pb, &pb->keeper_conn,
					pg_call_deadline(pb), &gen, &id) < 0) {
		snprintf(why, sizeof(why), "lease registration failed");
		ret = -ENOLCK;
	}
	if (ret == 0)
		ret = pg_connect(pb, &pb->listen_conn, pg_call_deadline(pb),
				 why, sizeof(why));
	if (ret == 0)
		ret = pg_listen_setup(pb, &pb->listen_conn, why, sizeof(why));
	if (ret < 0) {
		snprintf(err, errlen, "cannot use PostgreSQL at %s%s/%s: %s",
			 pb->uri.hosts[0].host,
			 pb->uri.nhosts > 1 ? ",..." : "", pb->uri.dbname, why);
		ret = ret == -EACCES || ret == -EINVAL ? ret : -ENOLCK;
		goto out_close;
	}

	pb->opened = true;
	ret = pg_workers_start(pb);
	if (ret == 0) {
		ret = -pthread_create(&pb->keeper, NULL, pg_keeper_main, pb);
		pb->keeper_started = ret == 0;
	}
	if (ret == 0) {
		ret = -pthread_create(&pb->watchdog, NULL, pg_watchdog_main,
				      pb);
		pb->watchdog_started = ret == 0;
	}
	if (ret == 0) {
		ret = -pthread_create(&pb->listener, NULL, pg_listener_main,
				      pb);
		pb->listener_started = ret == 0;
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
			 strerror(-ret));
		goto out_close;
	}
	dl_log(DL_LOG_INFO,
	       "postgresql: %zu host(s), database %s, schema %s, server %s, "
	       "lease %" PRId64 " (%d ms), lock-delay %d ms",
	       pb->uri.nhosts, pb->uri.dbname, pb->uri.schema,
	       pb->server_version, id, pb->uri.ttl_ms, pb->uri.lock_delay_ms);
	*out = &pb->base;
	return 0;

out_close:
	pg_close(&pb->base);
	return ret;
}

static void pg_close(struct dl_backend *be)
{
	struct pg_backend *pb = pg_of(be);
	int64_t id;

	pthread_mutex_lock(&pb->mutex);
	pb->stopping = true;
	pthread_cond_broadcast(&pb->cond);
	pthread_mutex_unlock(&pb->mutex);
	if (pb->wake_fd >= 0)
		pg_listener_wake(pb);
	if (pb->keeper_started)
		pthread_join(pb->keeper, NULL);
	if (pb->watchdog_started)
		pthread_join(pb->watchdog, NULL);
	if (pb->listener_started)
		pthread_join(pb->listener, NULL);
	pg_workers_stop(pb);

	/* a clean stop: our lease ends now (the lock manager has released
	 * everything already); nothing of it is trusted any more */
	atomic_store(&pb->lease->gen, pb->epoch + 1);
	atomic_store(&pb->lease->until_ms, 0);
	id = pb->lease_id;
	if (id && pb->up && pb->sql[PG_SQL_DROP]) {
		char idbuf[24];
		const char *v[1] = { idbuf };
		PGresult *r;
		bool indoubt;

		pg_i64(idbuf, (uint64_t)id);
		if (pg_exec(pb, &pb->keeper_conn, PG_SQL_DROP, 1, v, NULL, NULL,
			    pg_call_deadline(pb), &r, &indoubt) == 0)
			PQclear(r);
	}
	pg_disconnect(&pb->keeper_conn);
	pg_disconnect(&pb->listen_conn);

	for (size_t b = 0; b < PG_BUCKETS; b++) {
		while (pb->held[b]) {
			struct pg_held *h = pb->held[b];

			pb->held[b] = h->next;
			pg_held_free(h);
		}
		while (pb->waits[b]) {
			struct pg_wait *w = pb->waits[b];

			pb->waits[b] = w->next;
			pg_wait_free(w);
		}
	}
	while (pb->jobs) {
		struct pg_job *j = pb->jobs;

		pb->jobs = j->next;
		free(j);
	}
	if (pb->password) {
		explicit_bzero(pb->password, strlen(pb->password));
		free(pb->password);
	}
	pg_sql_free(pb);
	if (pb->wake_fd >= 0)
		close(pb->wake_fd);
	for (int i = 0; i < PG_WORKERS; i++)
		pthread_cond_destroy(&pb->workers[i].cond);
	pthread_cond_destroy(&pb->cond);
	pthread_mutex_destroy(&pb->mutex);
	free(pb);
}

#define PG_GUARANTEE                                                       \
	"as durable as the PostgreSQL server: grants commit with the "     \
	"database (a failover to an asynchronous replica can lose recent " \
	"grants; their holders are told when their lease is gone); "       \
	"FIFO per file; leases by the server's clock"

/* the two spellings of the scheme share everything else */
#define PG_OPS(name)                                                           \
	{                                                                      \
		.scheme = (name), .guarantee = PG_GUARANTEE, .shared = true,   \
		.check_uri = pg_check_uri, .open = pg_open, .close = pg_close, \
		.lock = pg_lock, .unlock = pg_unlock, .cancel = pg_cancel,     \
		.release_owner = pg_release_owner, .getlk = pg_getlk,          \
		.list = pg_list, .status = pg_status,                          \
		.break_lock = pg_break_lock, .poke = pg_poke,                  \
		.version = pg_version, .bump = pg_bump,                        \
	}

const struct dl_backend_ops dl_pg_ops = PG_OPS("postgresql");
/* libpq's other spelling of the scheme */
const struct dl_backend_ops dl_pg_alias_ops = PG_OPS("postgres");

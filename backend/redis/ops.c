/*
 * ops.c - the "redis" dl_backend_ops table and the ops callers make:
 * lock() (a single node here; several nodes in redlock.c), unlock(),
 * cancel(), release_owner(), break_lock(), poke(), version(), bump(),
 * getlk(), list(), status().
 *
 * Owns: argument checks; the single-node lock protocol (a wait is
 * registered under the gen and lease name it is sent with, so whichever
 * thread sees its grant recognises it; a request whose lease was replaced
 * in flight fails unless its grant was reported already); the cancel
 * protocol (a wait being cancelled belongs to cancel() until it returns);
 * which failures become keeper jobs; and how getlk() and list() read the
 * script's listing.  Does not: speak the wire (conn.c), keep the lease
 * (lease.c), or start threads (open.c).
 *
 * Locking: every op runs on its caller's thread and makes its round trips
 * with no mutex held; it takes rb->mutex only to read or change the
 * tables (table.c) and never across a call into conn.c.  Callbacks made
 * here, after the mutex is dropped: a single-node lock() reports the loss
 * of its lock when the request's outcome is unknown, and (through
 * redis_lease_gone()) the losses and failures of a lease it finds gone;
 * cancel() reports the grant of the wait it cancels when the server had
 * granted it first (and returns -ENOENT).  The other ops make no
 * callback; list()'s @fn is called with no mutex held.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "backend/redis/internal.h"
#include "backend/util/log.h"

/* ---- requests ------------------------------------------------------------ */

static int redis_check_uri(const char *rest, char *err, size_t errlen)
{
	struct redis_uri u;

	return redis_uri_parse(rest, &u, err, errlen);
}

static int redis_req_valid(const struct dl_lock_req *req, bool unlock)
{
	if (!req->resource || req->start > req->end ||
	    (unsigned)req->space > DL_SPACE_POSIX)
		return false;
	return unlock || req->type == DL_RDLCK || req->type == DL_WRLCK;
}

/*
 * Single node: the server queues, hands over and publishes.  The owner's
 * jobs on the resource are done first (redis_jobs_settle()).  The wait is
 * registered under the gen and lease name the request is sent with, so
 * its grant is recognised whichever thread reports it; a request whose
 * lease was replaced in flight is answered -ENOLCK here unless its grant
 * was reported already (then -EINPROGRESS: answered by the callback).
 */
static int redis_lock_single(struct redis_backend *rb,
			     const struct dl_lock_req *req,
			     struct dl_grant *grant)
{
	struct redis_node *n = &rb->nodes[0];
	struct redis_note *notes = NULL;
	struct redis_held *spare = NULL;
	struct redis_wait *w = NULL;
	enum redis_outcome o = RO_ERROR;
	uint64_t gen = 0, name = 0, token = 0;
	bool indoubt = false, inserted = false;
	char lease[17];
	int ret;

	if (req->wait_id) {
		w = redis_wait_new(rb, req);
		if (!w)
			return -ENOMEM;
	} else {
		spare = redis_held_alloc(rb, req);
		if (!spare)
			return -ENOMEM;
	}
	pthread_mutex_lock(&rb->mutex);
	ret = redis_jobs_settle(rb, 0, req);
	pthread_mutex_unlock(&rb->mutex);
	if (ret < 0) {
		redis_wait_free(w);
		redis_held_free(spare);
		return ret;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		indoubt = false;
		if (redis_node_lease(rb, n, lease, &gen, &name) < 0) {
			o = RO_ERROR;
			break;
		}
		if (w) {
			pthread_mutex_lock(&rb->mutex);
			w->gen = gen;
			w->name = name;
			w->state = RW_SENDING;
			redis_wait_insert(rb, w);
			inserted = true;
			pthread_mutex_unlock(&rb->mutex);
		}
		redis_fault_sleep(rb->fault.delay_lock);
		o = redis_node_lock(rb, n, lease, req, req->wait_id, 'g', 0,
				    &token, NULL, &indoubt);
		if (o != RO_LEASE)
			break;
		if (w) {
			pthread_mutex_lock(&rb->mutex);
			/* refused: never queued, so never granted */
			redis_wait_unlink(rb, w);
			inserted = false;
			pthread_mutex_unlock(&rb->mutex);
		}
		redis_lease_gone(rb, n, name);
	}

	pthread_mutex_lock(&rb->mutex);
	if (w) {
		/* sent but not in the table any more: its grant was
		 * reported (redis_deliver_grant() is the only one to unlink a
		 * wait being sent, and it freed it: look it up by the id of
		 * the request, not by w->wait_id) */
		if (!redis_wait_unlink_id(rb, req->wait_id, w) && inserted) {
			w = NULL; /* freed by redis_deliver_grant() */
			ret = -EINPROGRESS;
			goto out_unlock;
		}
	}
	if (rb->epoch != gen && (o == RO_GRANTED || o == RO_QUEUED)) {
		/* under a lease given up meanwhile: its records die with it */
		o = RO_ERROR;
		indoubt = false;
	}
	switch (o) {
	case RO_GRANTED:
		redis_held_add(rb, w ? &w->spare : &spare, req->resource,
			       req->space, req->owner, 1, token);
		grant->token = token;
		grant->lease = gen;
		ret = 0;
		break;
	case RO_QUEUED:
		w->state = RW_QUEUED;
		redis_wait_insert(rb, w);
		w = NULL; /* the table owns it */
		ret = -EINPROGRESS;
		break;
	case RO_CONFLICT:
		ret = -EAGAIN;
		break;
	default:
		ret = -ENOLCK;
		if (indoubt && rb->epoch == gen) {
			struct redis_held **p = redis_held_slot(
				rb, req->resource, req->space, req->owner);

			/* the script may have run: take it back later */
			redis_job_add(rb, req->wait_id ? RJ_CANCEL : RJ_UNLOCK,
				      0, name, req, DL_TOKEN_ALL);
			if (*p)
				redis_held_lose(rb, p, -ENOLCK, &notes);
		}
		break;
	}
out_unlock:
	pthread_mutex_unlock(&rb->mutex);
	redis_wait_free(w);
	redis_held_free(spare);
	redis_notes_run(rb, notes);
	return ret;
}

static int redis_lock(struct dl_backend *be, const struct dl_lock_req *req,
		      struct dl_grant *grant)
{
	struct redis_backend *rb = redis_of(be);

	if (!redis_req_valid(req, false))
		return -EINVAL;
	grant->token = 0;
	grant->lease = 0;
	if (rb->uri.nnodes == 1)
		return redis_lock_single(rb, req, grant);
	return redis_redlock_lock(rb, req, grant);
}

/*
 * Unlock on every node.  A node that cannot confirm it gets the unlock
 * again from the keeper until it is done or the lease is given up (the
 * records die with it), bounded by the newest grant processed so far so
 * that a later grant of the same owner survives the retry.  0 when a
 * majority confirmed, else -ENOLCK (the retry goes on).
 */
static int redis_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct redis_backend *rb = redis_of(be);
	unsigned ok = 0, still = 0, all = (1u << rb->uri.nnodes) - 1;
	uint64_t max = DL_TOKEN_ALL;
	struct redis_held *h;
	char maxs[24];

	if (!redis_req_valid(req, true))
		return -EINVAL;
	pthread_mutex_lock(&rb->mutex);
	h = *redis_held_slot(rb, req->resource, req->space, req->owner);
	if (h)
		max = h->max_token;
	pthread_mutex_unlock(&rb->mutex);
	snprintf(maxs, sizeof(maxs), "%" PRIu64, max);
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		uint64_t name = 0;
		redisReply *r = redis_node_simple(rb, &rb->nodes[i], "unlock",
						  req, maxs, NULL, &name);

		if (!r) {
			pthread_mutex_lock(&rb->mutex);
			redis_job_add(rb, RJ_UNLOCK, i, redis_node_name(rb, i),
				      req, max);
			pthread_mutex_unlock(&rb->mutex);
			continue;
		}
		ok |= 1u << i;
		if (r->elements && redis_reply_int(r->element[0]) == 1)
			still |= 1u << i;
		freeReplyObject(r);
	}
	if (ok == all && !still) {
		pthread_mutex_lock(&rb->mutex);
		redis_held_remove(rb, req->resource, req->space, req->owner,
				  max);
		pthread_mutex_unlock(&rb->mutex);
	}
	return redis_popcount(ok) >= rb->majority ? 0 : -ENOLCK;
}

/*
 * Single node: a wait marked cancelling belongs to this call until it
 * returns: a grant reported meanwhile or a lease loss only mark it, so it
 * is answered exactly once (-ENOENT: by the callback, 0: by the caller).
 */
static int redis_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct redis_backend *rb = redis_of(be);
	struct redis_note *notes = NULL;
	struct redis_wait *w;
	uint64_t tok, name = 0;
	redisReply *r;
	int ret;

	pthread_mutex_lock(&rb->mutex);
	w = redis_wait_find(rb, wait_id);
	if (!w || w->state != RW_QUEUED || w->cancelling) {
		pthread_mutex_unlock(&rb->mutex);
		return -ENOENT;
	}
	if (rb->uri.nnodes > 1) {
		struct dl_lock_req req = w->req;

		/* Redlock: we decide grants ourselves */
		if (w->busy) {
			w->cancelled = true; /* the keeper gives it back */
			pthread_mutex_unlock(&rb->mutex);
			return 0;
		}
		redis_wait_unlink(rb, w);
		pthread_mutex_unlock(&rb->mutex);
		redis_fault_sleep(rb->fault.delay_cancel);
		redis_redlock_cancel_on(rb, &req, (1u << rb->uri.nnodes) - 1);
		redis_wait_free(w);
		return 0;
	}
	w->cancelling = true;
	pthread_mutex_unlock(&rb->mutex);
	redis_fault_sleep(rb->fault.delay_cancel);
	r = redis_node_simple(rb, &rb->nodes[0], "cancel", &w->req, NULL, NULL,
			      &name);

	pthread_mutex_lock(&rb->mutex);
	if (w->end == RWE_GRANTED) {
		ret = -ENOENT; /* its grant was reported */
	} else if (w->end == RWE_LOST) {
		ret = 0; /* its lease is given up: its record dies with it */
	} else if (!r) {
		/* unknown: forget the wait; the keeper removes the record,
		 * or unlocks it if the server granted it meanwhile (a job
		 * of a lease given up meanwhile is dropped: the record
		 * dies with that lease) */
		redis_wait_unlink(rb, w);
		redis_job_add(rb, RJ_CANCEL, 0, w->name, &w->req, DL_TOKEN_ALL);
		ret = 0;
	} else if (name != w->name) {
		redis_wait_unlink(rb,
				  w); /* sent under a newer lease: see above */
		ret = 0;
	} else if (r->elements >= 2 && redis_reply_u64(r->element[1], &tok)) {
		w->cancelling = false;
		if (redis_deliver_grant(rb, w->name, wait_id, tok, 1, &notes)) {
			w = NULL; /* freed there */
			ret = -ENOENT;
		} else {
			redis_wait_unlink(rb, w);
			ret = 0;
		}
	} else {
		/* removed, or neither queued nor granted any more */
		redis_wait_unlink(rb, w);
		ret = 0;
	}
	pthread_mutex_unlock(&rb->mutex);
	if (r)
		freeReplyObject(r);
	redis_wait_free(w);
	redis_notes_run(rb, notes);
	return ret;
}

/*
 * Release on every node; a node that cannot confirm it gets it again
 * from the keeper.  The lock is forgotten (no loss report) only once
 * every node confirmed the owner holds nothing more.
 */
static int redis_release_owner(struct dl_backend *be, const char *resource,
			       enum dl_space space, uint64_t owner,
			       uint64_t max_token)
{
	struct redis_backend *rb = redis_of(be);
	struct dl_lock_req req = { .resource = resource,
				   .space = space,
				   .type = DL_UNLCK,
				   .start = 0,
				   .end = DL_RANGE_EOF,
				   .owner = owner };
	unsigned ok = 0, still = 0, all = (1u << rb->uri.nnodes) - 1;
	char max[24];

	snprintf(max, sizeof(max), "%" PRIu64, max_token);
	req.pid = 0;
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		redisReply *r = redis_node_simple(rb, &rb->nodes[i], "release",
						  &req, max, NULL, NULL);

		if (r) {
			ok |= 1u << i;
			if (r->elements && redis_reply_int(r->element[0]) == 1)
				still |= 1u << i;
			freeReplyObject(r);
			continue;
		}
		/* nobody will ask again: retry until it is done or the
		 * lease is given up */
		pthread_mutex_lock(&rb->mutex);
		redis_job_add(rb, RJ_RELEASE, i, redis_node_name(rb, i), &req,
			      max_token);
		pthread_mutex_unlock(&rb->mutex);
	}
	if (ok == all && !still) {
		pthread_mutex_lock(&rb->mutex);
		redis_held_remove(rb, resource, space, owner, max_token);
		pthread_mutex_unlock(&rb->mutex);
	}
	return redis_popcount(ok) >= rb->majority ? 0 : -ENOLCK;
}

/*
 * An administrator breaks @resource on every node: its holders' daemons
 * learn it through their channel or their next renewal.  0, -ENOENT when
 * nothing was held, -ENOLCK when no node answered.
 */
static int redis_break_lock(struct dl_backend *be, const char *resource)
{
	struct redis_backend *rb = redis_of(be);
	unsigned ok = 0;
	int64_t removed = 0;

	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		redisReply *r;
		char lease[17];
		uint64_t gen, name;

		if (redis_node_lease(rb, n, lease, &gen, &name) < 0 ||
		    redis_node_script(rb, n, "break", resource, lease, 0, NULL,
				      NULL, &r, NULL) < 0)
			continue;
		ok |= 1u << i;
		if (r->elements && redis_reply_int(r->element[0]) > 0)
			removed += redis_reply_int(r->element[0]);
		freeReplyObject(r);
	}
	if (!ok)
		return -ENOLCK;
	dl_log(DL_LOG_NOTICE,
	       "redis: lock of %s broken (%" PRId64 " owner record(s) on %u "
	       "node(s))",
	       resource, removed, redis_popcount(ok));
	return removed ? 0 : -ENOENT;
}

/*
 * Ask the other holders of @resource for it back: the script of each node
 * publishes "P SRC SEQ RESOURCE" to every other lease holding it there,
 * one round trip per node.  Every node is told (a Redlock holder may be
 * missing on some), under the same SRC SEQ, so that a holder told by
 * several nodes calls its revoke once (sub.c).  Best effort: nothing is
 * retried, the caller pokes again while it waits.  0 when a majority of
 * the nodes answered, else -ENOLCK.
 */
static int redis_poke(struct dl_backend *be, const char *resource)
{
	struct redis_backend *rb = redis_of(be);
	char src[17], seq[17];
	const char *extra[2] = { src, seq };
	unsigned ok = 0;
	int64_t told = 0;

	if (!resource)
		return -EINVAL;
	redis_hex16(src, rb->poke_src);
	redis_hex16(seq, atomic_fetch_add(&rb->poke_seq, 1) + 1);
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		redisReply *r;
		char lease[17];
		uint64_t gen, name;

		/* our own name there: the script tells every lease but it */
		if (redis_node_lease(rb, n, lease, &gen, &name) < 0 ||
		    redis_node_script(rb, n, "poke", resource, lease, 2, extra,
				      NULL, &r, NULL) < 0)
			continue;
		ok |= 1u << i;
		if (r->elements && redis_reply_int(r->element[0]) > 0)
			told += redis_reply_int(r->element[0]);
		freeReplyObject(r);
	}
	dl_log(DL_LOG_DEBUG,
	       "redis: poke %s of %s: %" PRId64 " holder(s) told on %u "
	       "node(s)",
	       seq, resource, told, redis_popcount(ok));
	return redis_popcount(ok) >= rb->majority ? 0 : -ENOLCK;
}

/* ---- versions ------------------------------------------------------------ */

/*
 * Run version op @op ("version" or "bump") for @resource on the single
 * node and read its answer {n, host, ms} into @out.  The record is
 * P:v:R, apart from the locks: it needs no lease (a daemon whose lease is
 * being replaced still bumps what it changed) and nothing that purges
 * lock records touches it (redis.lua).
 *
 * Redlock: not offered (-EOPNOTSUPP).  Independent nodes cannot add one
 * atomically: each node would order two concurrent bumps its own way, so
 * both bumpers could read the same number from their majorities, and a
 * node that restarted empty would count from 0 again.
 *
 * 0, -EOPNOTSUPP, -EINVAL, -ENOMEM, or -ENOLCK: the node is unreachable
 * or answered an error (a bump may then have happened or not).
 */
static int redis_version_op(struct redis_backend *rb, const char *op,
			    const char *resource, struct dl_version *out)
{
	const char *extra[1] = { rb->host_id };
	bool bump = strcmp(op, "bump") == 0;
	redisReply *r, **e;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!resource)
		return -EINVAL;
	if (rb->uri.nnodes > 1)
		return -EOPNOTSUPP;
	ret = redis_node_call(rb, &rb->nodes[0], op, "v", resource, "",
			      bump ? 1 : 0, extra, NULL, &r, NULL);
	if (ret < 0) {
		dl_log(DL_LOG_DEBUG, "redis: %s of %s: %s", op, resource,
		       strerror(-ret));
		return ret;
	}
	e = r->element;
	if (r->elements != 3 || !redis_reply_u64(e[0], &out->version) ||
	    e[1]->type != REDIS_REPLY_STRING || e[1]->len >= DL_HOST_MAX ||
	    (e[2]->type != REDIS_REPLY_STRING &&
	     e[2]->type != REDIS_REPLY_INTEGER)) {
		dl_log(DL_LOG_ERR, "redis: %s of %s: unexpected answer", op,
		       resource);
		memset(out, 0, sizeof(*out));
		freeReplyObject(r);
		return -ENOLCK;
	}
	memcpy(out->host, e[1]->str, e[1]->len);
	out->host[e[1]->len] = '\0';
	out->changed_ms = redis_reply_int(e[2]);
	freeReplyObject(r);
	return 0;
}

static int redis_version(struct dl_backend *be, const char *resource,
			 struct dl_version *out)
{
	return redis_version_op(redis_of(be), "version", resource, out);
}

static int redis_bump(struct dl_backend *be, const char *resource,
		      struct dl_version *out)
{
	return redis_version_op(redis_of(be), "bump", resource, out);
}

/* ---- inspection ---------------------------------------------------------- */

static bool redis_reply_hex(const redisReply *r, uint64_t *v)
{
	char *end;

	if (r->type != REDIS_REPLY_STRING || r->len != 16)
		return false;
	errno = 0;
	*v = strtoull(r->str, &end, 16);
	return errno == 0 && *end == '\0';
}

/* @e: T S E LEASE OWNER pid token since host, as the script lists them;
 * @mine: our lease name on the node that answered */
static bool redis_info_fill(redisReply **e, struct dl_lock_info *info,
			    const char *space, bool waiting, const char *mine)
{
	uint64_t lease;

	memset(info, 0, sizeof(*info));
	info->space = space[0] == '0' ? DL_SPACE_FLOCK : DL_SPACE_POSIX;
	if (e[0]->type != REDIS_REPLY_STRING)
		return false;
	info->type = e[0]->str[0] == 'W' ? DL_WRLCK : DL_RDLCK;
	if (!redis_reply_hex(e[1], &info->start) ||
	    !redis_reply_hex(e[2], &info->end) ||
	    !redis_reply_hex(e[3], &lease) ||
	    !redis_reply_hex(e[4], &info->owner))
		return false;
	info->pid = (uint32_t)redis_reply_int(e[5]);
	if (!redis_reply_u64(e[6], &info->token))
		info->token = 0;
	info->since_ms = redis_reply_int(e[7]);
	if (e[8]->type == REDIS_REPLY_STRING)
		snprintf(info->host, sizeof(info->host), "%.*s", (int)e[8]->len,
			 e[8]->str);
	info->mine = strcmp(e[3]->str, mine) == 0;
	info->waiting = waiting;
	return true;
}

static int redis_getlk(struct dl_backend *be, const struct dl_lock_req *req,
		       struct dl_lock_info *conflict)
{
	struct redis_backend *rb = redis_of(be);
	unsigned answered = 0;
	int ret = 0;

	if (!redis_req_valid(req, false))
		return -EINVAL;
	/* Redlock: a conflict on any node is reported (conservative) */
	for (unsigned i = 0; i < rb->uri.nnodes && ret == 0; i++) {
		redisReply *r = redis_node_simple(rb, &rb->nodes[i], "getlk",
						  req, NULL, NULL, NULL);

		if (!r)
			continue;
		answered++;
		if (r->elements >= 10 && redis_reply_int(r->element[0]) == 1) {
			char space[2] = { req->space == DL_SPACE_FLOCK ? '0'
								       : '1',
					  0 };

			char mine[17];

			pthread_mutex_lock(&rb->mutex);
			redis_lease_name(rb, rb->nodes[i].name, mine);
			pthread_mutex_unlock(&rb->mutex);
			if (redis_info_fill(r->element + 1, conflict, space,
					    false, mine))
				ret = 1;
		}
		freeReplyObject(r);
	}
	if (!ret && answered < rb->majority)
		return -ENOLCK;
	return ret;
}

/* the same record as another node's (Redlock): same kind, owner, range */
static struct dl_lock_info *redis_info_same(struct dl_lock_info *v, size_t n,
					    const struct dl_lock_info *x)
{
	for (size_t i = 0; i < n; i++)
		if (v[i].waiting == x->waiting && v[i].space == x->space &&
		    v[i].owner == x->owner && v[i].type == x->type &&
		    v[i].start == x->start && v[i].end == x->end &&
		    strcmp(v[i].host, x->host) == 0)
			return &v[i];
	return NULL;
}

/* add node @node's records of @resource to @v (*n of them): 0, or -ENOLCK
 * when the node does not answer */
static int redis_list_node(struct redis_backend *rb, unsigned node,
			   const char *resource, struct dl_lock_info **v,
			   size_t *n)
{
	struct dl_lock_info *nv, x;
	redisReply *r = NULL;
	char mine[17] = "";
	uint64_t gen, name;

	if (redis_node_lease(rb, &rb->nodes[node], mine, &gen, &name) < 0 ||
	    redis_node_script(rb, &rb->nodes[node], "list", resource, mine, 0,
			      NULL, NULL, &r, NULL) < 0)
		return -ENOLCK;
	nv = realloc(*v, (*n + r->elements / 11 + 1) * sizeof(**v));
	if (!nv) {
		freeReplyObject(r);
		return -ENOMEM;
	}
	*v = nv;
	for (size_t i = 0; i + 11 <= r->elements; i += 11) {
		redisReply **e = r->element + i;
		struct dl_lock_info *same;

		if (e[0]->type != REDIS_REPLY_STRING ||
		    e[1]->type != REDIS_REPLY_STRING ||
		    !redis_info_fill(e + 2, &x, e[1]->str, e[0]->str[0] == 'w',
				     mine))
			continue;
		same = redis_info_same(*v, *n, &x);
		if (!same) {
			(*v)[(*n)++] = x;
			continue;
		}
		/* node tokens differ: the grant reported the greatest */
		if (x.token > same->token)
			same->token = x.token;
		if (x.since_ms < same->since_ms)
			same->since_ms = x.since_ms;
		same->mine |= x.mine;
	}
	freeReplyObject(r);
	return 0;
}

/*
 * Every holder and waiter of @resource.  One node: its records.  Redlock:
 * the union of every node's records (a grant or a queued request may be
 * missing on a minority: a node that answered a retry before the others,
 * or one that was down), from a majority of nodes at least, so a lock
 * this host holds or waits for is never missed (the cache's idle check
 * relies on it).  A waiter's since_ms is its enqueue time as stored on
 * the server (in Redlock the time sent with it to every node), the same
 * whoever lists it.  A grant to one of our owners that this daemon has not
 * processed yet (its token is newer than any we reported) is listed as a
 * wait: the lock manager still waits for it.
 */
static int redis_list_one(struct redis_backend *rb, const char *resource,
			  dl_lock_info_fn fn, void *arg, bool *stop)
{
	struct dl_lock_info *v = NULL;
	unsigned answered = 0;
	size_t n = 0;
	int ret = 0;

	for (unsigned i = 0; i < rb->uri.nnodes && ret != -ENOMEM; i++) {
		ret = redis_list_node(rb, i, resource, &v, &n);
		if (ret == 0)
			answered++;
	}
	if (ret == -ENOMEM || answered < rb->majority) {
		free(v);
		return ret == -ENOMEM ? ret : -ENOLCK;
	}
	pthread_mutex_lock(&rb->mutex);
	for (size_t i = 0; i < n; i++) {
		struct dl_lock_info *info = &v[i];

		if (info->mine && !info->waiting) {
			struct redis_held *h = *redis_held_slot(
				rb, resource, info->space, info->owner);

			if (!h || info->token > h->max_token) {
				info->waiting = true;
				info->token = 0;
			}
		}
		info->resource = resource;
	}
	pthread_mutex_unlock(&rb->mutex);
	for (size_t i = 0; i < n && !*stop; i++)
		if (fn(&v[i], arg))
			*stop = true;
	free(v);
	return 0;
}

/* the names of the resources with holders on node @node, added to *@names
 * (SCAN of the granted hashes of the prefix: a resource with waiters only
 * has holders elsewhere, or gets them at the next re-check; a resource's
 * version, P:v:R, is no lock and never matches).  0 or -ENOLCK, -EIO,
 * -ENOMEM */
static int redis_scan_node(struct redis_backend *rb, unsigned node,
			   char ***names, size_t *n, size_t *cap)
{
	char pattern[REDIS_URI_PREFIX_MAX + 8], cursor[32] = "0";
	size_t plen = strlen(rb->uri.prefix);

	snprintf(pattern, sizeof(pattern), "%s:g:*", rb->uri.prefix);
	do {
		const char *argv[6] = { "SCAN",	 cursor,  "MATCH",
					pattern, "COUNT", "500" };
		struct redis_conn *c = redis_conn_get(rb, &rb->nodes[node]);
		redisReply *r;

		if (!c)
			return -ENOLCK;
		r = redisCommandArgv(c->c, 6, argv, NULL);
		if (!r) {
			redisFree(c->c);
			c->c = NULL;
			redis_conn_put(c);
			return -ENOLCK;
		}
		redis_conn_put(c);
		if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
			freeReplyObject(r);
			return -EIO;
		}
		snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
		for (size_t i = 0; i < r->element[1]->elements; i++) {
			const redisReply *k = r->element[1]->element[i];

			if (k->len < plen + 3)
				continue;
			if (*n == *cap) {
				size_t nc = *cap ? *cap * 2 : 64;
				char **nv = realloc(*names, nc * sizeof(*nv));

				if (!nv) {
					freeReplyObject(r);
					return -ENOMEM;
				}
				*names = nv;
				*cap = nc;
			}
			(*names)[*n] =
				strndup(k->str + plen + 3, k->len - plen - 3);
			if (!(*names)[*n]) {
				freeReplyObject(r);
				return -ENOMEM;
			}
			(*n)++;
		}
		freeReplyObject(r);
	} while (strcmp(cursor, "0") != 0);
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int redis_list(struct dl_backend *be, const char *resource,
		      dl_lock_info_fn fn, void *arg)
{
	struct redis_backend *rb = redis_of(be);
	char **names = NULL;
	size_t n = 0, cap = 0;
	unsigned answered = 0;
	bool stop = false;
	int ret = 0;

	if (resource)
		return redis_list_one(rb, resource, fn, arg, &stop);
	/* every resource with holders on any node that answers (in Redlock
	 * mode a grant may be missing on a minority, node 0 included), each
	 * listed once, from a majority's union (redis_list_one) */
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		ret = redis_scan_node(rb, i, &names, &n, &cap);
		if (ret == -ENOMEM)
			goto out;
		if (ret == 0)
			answered++;
	}
	ret = answered >= rb->majority ? 0 : -ENOLCK;
	if (ret < 0)
		goto out;
	qsort(names, n, sizeof(*names), name_cmp);
	for (size_t i = 0; i < n && !stop && ret == 0; i++)
		if (i == 0 || strcmp(names[i], names[i - 1]) != 0)
			ret = redis_list_one(rb, names[i], fn, arg, &stop);
out:
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return ret;
}

static int redis_status(struct dl_backend *be, char *buf, size_t len)
{
	struct redis_backend *rb = redis_of(be);
	unsigned up = 0;
	int64_t ago = -1, now = dl_mono_ms();
	size_t held, waiting, retrying;

	pthread_mutex_lock(&rb->mutex);
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];

		if (n->up && n->trusted)
			up++;
		if (n->trusted && (ago < 0 || now - n->renewed_at < ago))
			ago = now - n->renewed_at;
	}
	held = rb->nheld;
	waiting = rb->nwaits;
	retrying = rb->njobs;
	pthread_mutex_unlock(&rb->mutex);
	snprintf(buf, len,
		 "health=%s nodes=%u/%zu lease_ms=%d "
		 "last_renew_ms_ago=%" PRId64 " held=%zu waiting=%zu "
		 "retrying=%zu",
		 up >= rb->majority ? "ok" : "down", up, rb->uri.nnodes,
		 rb->uri.ttl_ms, ago, held, waiting, retrying);
	return 0;
}

/* ---- the table ----------------------------------------------------------- */

const struct dl_backend_ops dl_redis_ops = {
	.scheme = "redis",
	.guarantee = "single Redis: as strong as that one server (async "
		     "replication or a restart without persistence may lose "
		     "locks); several nodes: Redlock majority of independent "
		     "nodes, clock-drift bound",
	.shared = true,
	.check_uri = redis_check_uri,
	.open = redis_open,
	.close = redis_close,
	.lock = redis_lock,
	.unlock = redis_unlock,
	.cancel = redis_cancel,
	.release_owner = redis_release_owner,
	.getlk = redis_getlk,
	.list = redis_list,
	.status = redis_status,
	.break_lock = redis_break_lock,
	.poke = redis_poke,
	.version = redis_version,
	.bump = redis_bump,
};

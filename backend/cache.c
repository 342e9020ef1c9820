/*
 * cache.c - same-host lock caching with revocation (issue 12), one layer
 * over any remote backend that can poke (backend.h).
 *
 * The right.  For each resource R the cluster keeps, next to R's records,
 * an ordinary lock on the companion resource "//right/R" (a name no path
 * can have), held by the pseudo-owner CACHE_OWNER of a host:
 *  - exclusive: the host *caches* R.  No other host has a record on R, so
 *    this host decides every lock of R in its own embedded engine (a
 *    "local:" backend), with the same range logic, FIFO and semantics,
 *    without a round trip;
 *  - shared: the host works on R *directly*: its requests on R go to the
 *    backend as without the cache.  A host holds it while it may have a
 *    record on R, so nobody caches R meanwhile.
 * A host takes the exclusive right, non-blocking, when it first needs R
 * (it succeeds only when no other host works on R), else the shared one.
 * A shared request that waits for another host's exclusive right pokes
 * that host (ops->poke, again every second while it waits); the caching
 * host then gives the right back: it writes its exact locks of R into the
 * backend as ordinary records (with their owners and pids), then moves its
 * local waiters there, then converts its right to shared.  The waiting
 * host's request then meets only the locks that really conflict.  Safety
 * comes from the order: every record is in the backend before the right
 * stops being exclusive.  An idle right (nothing held or queued for
 * cache_idle_ms) is given back on its own; after a revocation the host does
 * not cache R again for CACHE_NOCACHE_MS (no ping-pong on a contended
 * file).
 *
 * Tokens.  Every token this layer reports is the backend's token shifted
 * left by TOK_SHIFT bits.  A grant decided locally under a right of
 * backend token T reports (T << TOK_SHIFT) + n for its n-th local grant:
 * the backends' tokens come from one cluster-wide counter, so these sit
 * strictly between every grant before the right and every grant after it.
 * A release naming a local token is translated back: to the engine's token
 * of that grant while the right is held, or to the newest backend token of
 * the revocation that wrote it into the backend.
 *
 * Leases.  The right lives under the host's lease like any lock: a local
 * grant reports the right's lease, so the daemon's clock fence covers it;
 * a right the backend reports lost (lease, break) loses every local lock
 * under it (cb->lost) before anyone else can be granted it.
 *
 * cache=off is this layer too, taking only shared rights (cb->caching
 * false): a file another host caches is asked back before this host's
 * first request on it, so hosts with either setting can share a cluster.
 * Only the backend-level tests open a store without it (DL_CACHE_NONE).
 *
 * Locking: one mutex, cache.mutex, guards every table here and is held
 * across every call into the engine (in-process, never waits); it is never
 * held across a call into the remote backend.  A resource in transition
 * (acquiring, revoking, releasing, waiting for its shared right) is
 * "busy": lock requests on it queue here and are replayed by the worker
 * thread, other calls wait on cache.cond.  The engine's callbacks run
 * inside engine calls, hence under the mutex: they only record what to
 * tell the lock manager (struct cache_note), told once the mutex is
 * dropped.  The worker thread gives rights back (revocations, idle), pokes
 * again, and replays queued requests.
 */
#include "backend/cache.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/util/hash.h"
#include "backend/util/log.h"

#define CACHE_OWNER	   0xdc0c0000cac4e001ULL
#define CACHE_RIGHT_PREFIX "//right/"
#define TOK_SHIFT	   20
#define TOK_LOCAL_MAX	   ((1ULL << TOK_SHIFT) - 1)
#define CACHE_INTERNAL	   (1ULL << 63) /* wait ids of our own requests */
#define CACHE_BUCKETS	   4096
#define CACHE_NOCACHE_MS   2000
#define CACHE_REPOKE_MS	   1000
#define CACHE_WAIT_MS	   60000 /* a call waiting for a transition */
/* a non-blocking request that must first take a file back from another
 * host, which does not answer (dead, cut off): it gets EAGAIN after this
 * (the file is that host's until its lease ends) */
#define CACHE_TRYLOCK_MS 1000
#define CACHE_BREAK_MS	 5000 /* a break waits this long for a give-back */

/* a right held exclusively, from its grant to its revocation or loss */
struct cache_epoch {
	struct cache_epoch *next; /* older */
	uint64_t right;		  /* backend token of the right */
	uint64_t lease;		  /* lease of its grant */
	uint64_t *etok;		  /* engine token of local grant i + 1 */
	size_t n, cap;
	uint64_t flushed; /* newest backend token its revocation wrote */
};

enum cache_state {
	CS_NONE,   /* no right */
	CS_CACHED, /* exclusive right: R is decided in the engine */
	CS_DIRECT, /* shared right: R's requests go to the backend */
};

struct cache_pend {
	struct cache_pend *next;
	struct dl_lock_req req;
	uint64_t id; /* wait_id, or answer_id of a non-blocking request */
	int64_t deadline_ms; /* a non-blocking request: EAGAIN after */
};

struct cache_res {
	struct cache_res *next; /* hash chain */
	char *name;
	char *right;
	enum cache_state state;
	bool busy;	   /* a transition is in progress */
	bool waiting_rd;   /* our shared request for the right is queued */
	bool revoke;	   /* asked for it back */
	bool queued;	   /* on the worker's job list */
	uint64_t gen;	   /* bumped by every change of state */
	uint64_t rd_id;	   /* wait id of the queued shared request */
	unsigned users;	   /* threads inside a call on it */
	unsigned inflight; /* backend calls on R in flight (direct) */
	unsigned ewaiters; /* its routes of kind RT_ENGINE */
	int64_t last_use_ms, nocache_until_ms, poked_ms, revoke_t0_ms;
	struct cache_epoch *epochs; /* newest first */
	struct cache_pend *pend, **pend_tail;
	struct cache_res *jnext; /* worker's job list */
};

enum route_kind { RT_ENGINE, RT_PENDING, RT_MOVING, RT_INTERNAL };

/* where a wait of the lock manager (or our own) is */
struct cache_route {
	struct cache_route *next;
	uint64_t id;
	enum route_kind kind;
	struct cache_res *res;
	struct dl_lock_req req; /* RT_ENGINE: to move it at a revocation */
};

enum note_kind { N_GRANTED, N_FAILED, N_LOST };

struct cache_note {
	struct cache_note *next;
	enum note_kind kind;
	uint64_t id;
	struct dl_grant grant;
	int err;
	enum dl_space space;
	uint64_t owner;
	char resource[];
};

struct cache_backend {
	struct dl_backend base;
	struct dl_backend_ops ops; /* cache_ops, named after the remote */
	struct dl_backend_cb up;   /* the lock manager */
	struct dl_backend *remote;
	struct dl_backend *engine;
	struct dl_lease *lease;
	char host[DL_HOST_MAX];
	unsigned idle_ms;
	unsigned nocache_ms; /* no new right after a revocation for */
	bool caching;	     /* cache=on; off: shared rights only */
	/* test fault (DLOCKFS_TEST_CACHE_RIGHT_DELAY_MS): an exclusive
	 * right granted by the backend is taken in this much later, so a
	 * poke can arrive while it is on its way */
	unsigned test_right_delay_ms;
	pthread_mutex_t mutex;
	pthread_cond_t cond;	  /* state changes */
	pthread_cond_t work_cond; /* the worker's wake-up */
	pthread_t worker;
	bool stopping;
	/* guarded by mutex: */
	struct cache_res *buckets[CACHE_BUCKETS];
	struct cache_route *routes[CACHE_BUCKETS];
	struct cache_res *jobs, **jobs_tail;
	uint64_t next_internal;
	size_t nres, ncached, ndirect;
	/* counters, for the status */
	uint64_t local_grants, rights_taken, revocations, revoke_ms_total,
		revoke_ms_max;
};

static __thread struct cache_note *tl_notes;

static struct cache_backend *cache_of(struct dl_backend *be)
{
	return (struct cache_backend *)be;
}

/* ---- notes: what to tell the lock manager once the mutex is dropped --- */

static void note_add(enum note_kind kind, uint64_t id, const struct dl_grant *g,
		     int err, const char *resource, enum dl_space space,
		     uint64_t owner)
{
	size_t len = resource ? strlen(resource) : 0;
	struct cache_note *n = calloc(1, sizeof(*n) + len + 1);

	if (!n) {
		dl_log(DL_LOG_ERR, "cache: out of memory for a notice");
		return;
	}
	n->kind = kind;
	n->id = id;
	if (g)
		n->grant = *g;
	n->err = err;
	n->space = space;
	n->owner = owner;
	if (resource)
		memcpy(n->resource, resource, len + 1);
	/* kept in order: appended */
	struct cache_note **p = &tl_notes;

	while (*p)
		p = &(*p)->next;
	*p = n;
}

/* call with the mutex dropped */
static void notes_run(struct cache_backend *cb)
{
	while (tl_notes) {
		struct cache_note *n = tl_notes;

		tl_notes = n->next;
		if (n->kind == N_GRANTED)
			cb->up.granted(cb->up.ctx, n->id, &n->grant);
		else if (n->kind == N_FAILED)
			cb->up.failed(cb->up.ctx, n->id, n->err);
		else
			cb->up.lost(cb->up.ctx, n->resource, n->space, n->owner,
				    n->err);
		free(n);
	}
}

static void unlock_and_notify(struct cache_backend *cb)
{
	pthread_mutex_unlock(&cb->mutex);
	notes_run(cb);
}

/* ---- tables (mutex held) ---------------------------------------------- */

static size_t name_bucket(const char *name)
{
	uint64_t h = 1469598103934665603ULL;

	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 1099511628211ULL;
	return (size_t)(h % CACHE_BUCKETS);
}

static struct cache_res *res_find(struct cache_backend *cb, const char *name)
{
	struct cache_res *r = cb->buckets[name_bucket(name)];

	while (r && strcmp(r->name, name) != 0)
		r = r->next;
	return r;
}

static struct cache_res *res_get(struct cache_backend *cb, const char *name)
{
	struct cache_res *r = res_find(cb, name);
	size_t b;

	if (r)
		return r;
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->name = strdup(name);
	if (r->name &&
	    asprintf(&r->right, "%s%s", CACHE_RIGHT_PREFIX, name) < 0)
		r->right = NULL;
	if (!r->name || !r->right) {
		free(r->name);
		free(r);
		return NULL;
	}
	r->pend_tail = &r->pend;
	r->last_use_ms = dl_mono_ms();
	b = name_bucket(name);
	r->next = cb->buckets[b];
	cb->buckets[b] = r;
	cb->nres++;
	return r;
}

static void epochs_free(struct cache_res *r)
{
	while (r->epochs) {
		struct cache_epoch *e = r->epochs;

		r->epochs = e->next;
		free(e->etok);
		free(e);
	}
}

/* free @r when nothing refers to it any more */
static void res_put(struct cache_backend *cb, struct cache_res *r)
{
	struct cache_res **p;

	if (r->state != CS_NONE || r->busy || r->users || r->pend ||
	    r->queued || r->inflight)
		return;
	p = &cb->buckets[name_bucket(r->name)];
	while (*p != r)
		p = &(*p)->next;
	*p = r->next;
	cb->nres--;
	epochs_free(r);
	free(r->name);
	free(r->right);
	free(r);
}

static struct cache_route **route_slot(struct cache_backend *cb, uint64_t id)
{
	struct cache_route **p = &cb->routes[dl_hash_mix64(id, 12)];

	while (*p && (*p)->id != id)
		p = &(*p)->next;
	return p;
}

/* every kind change goes here: r->ewaiters counts the engine's waiters */
static void route_kind(struct cache_route *rt, enum route_kind kind)
{
	if (rt->kind == RT_ENGINE)
		rt->res->ewaiters--;
	rt->kind = kind;
	if (kind == RT_ENGINE)
		rt->res->ewaiters++;
}

static struct cache_route *route_add(struct cache_backend *cb, uint64_t id,
				     enum route_kind kind, struct cache_res *r,
				     const struct dl_lock_req *req)
{
	struct cache_route **p = route_slot(cb, id);
	struct cache_route *rt = *p;

	if (!rt) {
		rt = calloc(1, sizeof(*rt));
		if (!rt)
			return NULL;
		rt->id = id;
		rt->kind = RT_PENDING;
		rt->res = r;
		*p = rt;
		r->users++; /* a route pins its resource */
	} else if (rt->res != r) {
		route_kind(rt, RT_PENDING);
		rt->res->users--;
		rt->res = r;
		r->users++;
	}
	route_kind(rt, kind);
	if (req)
		rt->req = *req;
	return rt;
}

static void route_del(struct cache_backend *cb, uint64_t id)
{
	struct cache_route **p = route_slot(cb, id);
	struct cache_route *rt = *p;

	if (!rt)
		return;
	*p = rt->next;
	route_kind(rt, RT_PENDING);
	rt->res->users--;
	free(rt);
}

static void job_add(struct cache_backend *cb, struct cache_res *r)
{
	if (r->queued)
		return;
	r->queued = true;
	r->jnext = NULL;
	*cb->jobs_tail = r;
	cb->jobs_tail = &r->jnext;
	pthread_cond_signal(&cb->work_cond);
}

/* ---- tokens ------------------------------------------------------------ */

static uint64_t tok_up(uint64_t t)
{
	return t > (UINT64_MAX >> TOK_SHIFT) ? UINT64_MAX : t << TOK_SHIFT;
}

/* the engine token of local token @t, or 0 when it is not of the
 * current epoch (nothing of it can be in the engine) */
static uint64_t tok_engine(const struct cache_res *r, uint64_t t)
{
	const struct cache_epoch *e = r->epochs;
	uint64_t seq = t & TOK_LOCAL_MAX;

	if (t == DL_TOKEN_ALL)
		return DL_TOKEN_ALL;
	if (!e || (t >> TOK_SHIFT) != e->right || e->flushed)
		return (t >> TOK_SHIFT) > (e ? e->right : 0) ? DL_TOKEN_ALL : 0;
	if (seq == 0 || e->n == 0)
		return 0;
	/* past the epoch's grants: a token of a store that restarted
	 * empty and counts again from 1 (Redis without persistence) */
	return seq <= e->n ? e->etok[seq - 1] : e->etok[e->n - 1];
}

/* the backend token a release of @t names */
static uint64_t tok_down(const struct cache_res *r, uint64_t t)
{
	if (t == DL_TOKEN_ALL)
		return DL_TOKEN_ALL;
	if ((t & TOK_LOCAL_MAX) == 0)
		return t >> TOK_SHIFT;
	for (const struct cache_epoch *e = r ? r->epochs : NULL; e; e = e->next)
		if (e->right == t >> TOK_SHIFT)
			return e->flushed ? e->flushed : t >> TOK_SHIFT;
	return t >> TOK_SHIFT;
}

/* the local token of engine token @etok (a listed or conflicting lock) */
static uint64_t tok_local(const struct cache_res *r, uint64_t etok)
{
	const struct cache_epoch *e = r->epochs;
	size_t lo = 0, hi;

	if (!e || !e->n || !etok)
		return 0;
	hi = e->n;
	while (lo < hi) { /* first grant with an engine token >= etok */
		size_t mid = lo + (hi - lo) / 2;

		if (e->etok[mid] < etok)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == e->n)
		lo = e->n - 1;
	return (e->right << TOK_SHIFT) + lo + 1;
}

/*
 * Room in the current epoch for every grant the engine can make next: one
 * at once and one per waiter queued there.  Called before every engine
 * call that may grant, so that a grant is never made that epoch_grant()
 * could not record (the engine would hold a lock nobody reported).
 * 0 or -ENOMEM (then make no such call).
 */
static int epoch_room(struct cache_res *r)
{
	struct cache_epoch *e = r->epochs;
	size_t need = e->n + r->ewaiters + 1, nc = e->cap ? e->cap : 16;
	uint64_t *v;

	if (e->cap >= need)
		return 0;
	while (nc < need)
		nc *= 2;
	v = realloc(e->etok, nc * sizeof(*v));
	if (!v)
		return -ENOMEM;
	e->etok = v;
	e->cap = nc;
	return 0;
}

/* a local grant of engine token @etok: its reported grant */
static int epoch_grant(struct cache_backend *cb, struct cache_res *r,
		       uint64_t etok, struct dl_grant *out)
{
	struct cache_epoch *e = r->epochs;

	if (e->n == e->cap && epoch_room(r) < 0) {
		/* cannot happen: epoch_room() ran before the engine call */
		dl_log(DL_LOG_ERR, "cache: %s: a local grant not recorded",
		       r->name);
		return -ENOMEM;
	}
	e->etok[e->n++] = etok;
	out->token = (e->right << TOK_SHIFT) + e->n;
	out->lease = e->lease;
	/* the first grant of a right drops the kernel's view; the next
	 * ones need not: nobody else locked the file since */
	out->coherent = e->n > 1;
	cb->local_grants++;
	if (e->n >= TOK_LOCAL_MAX - 1 && !r->revoke) {
		/* no local token left: give the right back */
		r->revoke = true;
		r->revoke_t0_ms = dl_mono_ms();
		job_add(cb, r);
	}
	return 0;
}

/* ---- the engine's callbacks: inside engine calls, mutex held ----------- */

static void engine_granted(void *ctx, uint64_t wait_id,
			   const struct dl_grant *grant)
{
	struct cache_backend *cb = ctx;
	struct cache_route *rt = *route_slot(cb, wait_id);
	struct dl_grant g = { 0 };

	if (!rt || rt->kind != RT_ENGINE) {
		dl_log(DL_LOG_ERR,
		       "cache: engine grant for unknown wait %" PRIu64,
		       wait_id);
		return;
	}
	if (epoch_grant(cb, rt->res, grant->token, &g) < 0) {
		note_add(N_FAILED, wait_id, NULL, -ENOMEM, NULL, 0, 0);
	} else {
		rt->res->last_use_ms = dl_mono_ms();
		note_add(N_GRANTED, wait_id, &g, 0, NULL, 0, 0);
	}
	route_del(cb, wait_id);
}

static void engine_failed(void *ctx, uint64_t wait_id, int err)
{
	struct cache_backend *cb = ctx;

	route_del(cb, wait_id);
	note_add(N_FAILED, wait_id, NULL, err, NULL, 0, 0);
}

static void engine_lost(void *ctx, const char *resource, enum dl_space space,
			uint64_t owner, int err)
{
	(void)ctx;
	note_add(N_LOST, 0, NULL, err, resource, space, owner);
}

/* ---- engine helpers (mutex held) -------------------------------------- */

struct engine_snap {
	struct dl_lock_info *v;
	size_t n, cap;
	bool any;
};

static int snap_one(const struct dl_lock_info *info, void *arg)
{
	struct engine_snap *s = arg;

	s->any = true;
	if (info->waiting)
		return 0; /* waiters are known by their routes */
	if (s->n == s->cap) {
		size_t nc = s->cap ? s->cap * 2 : 8;
		void *p = realloc(s->v, nc * sizeof(*s->v));

		if (!p)
			return -ENOMEM;
		s->v = p;
		s->cap = nc;
	}
	s->v[s->n] = *info;
	s->v[s->n].resource = NULL;
	s->n++;
	return 0;
}

static bool engine_empty(struct cache_backend *cb, struct cache_res *r)
{
	struct engine_snap s = { 0 };

	dl_backend_list(cb->engine, r->name, snap_one, &s);
	free(s.v);
	return !s.any;
}

/* the right is gone: every local lock under it is lost, every local
 * waiter fails; the engine forgets R */
static void lose_local(struct cache_backend *cb, struct cache_res *r, int err)
{
	struct engine_snap s = { 0 };

	dl_backend_list(cb->engine, r->name, snap_one, &s);
	for (size_t i = 0; i < CACHE_BUCKETS; i++) {
		struct cache_route **p = &cb->routes[i];

		while (*p) {
			struct cache_route *rt = *p;

			if (rt->res == r && rt->kind == RT_ENGINE &&
			    dl_backend_cancel(cb->engine, rt->id) == 0) {
				note_add(N_FAILED, rt->id, NULL, -ENOLCK, NULL,
					 0, 0);
				*p = rt->next;
				r->users--;
				free(rt);
				continue;
			}
			p = &rt->next;
		}
	}
	for (size_t i = 0; i < s.n; i++) {
		note_add(N_LOST, 0, NULL, err, r->name, s.v[i].space,
			 s.v[i].owner);
		dl_backend_release_owner(cb->engine, r->name, s.v[i].space,
					 s.v[i].owner, DL_TOKEN_ALL);
	}
	free(s.v);
}

static void set_state(struct cache_backend *cb, struct cache_res *r,
		      enum cache_state st)
{
	if (r->state == CS_CACHED)
		cb->ncached--;
	else if (r->state == CS_DIRECT)
		cb->ndirect--;
	r->state = st;
	if (st == CS_CACHED)
		cb->ncached++;
	else if (st == CS_DIRECT)
		cb->ndirect++;
	if (st != CS_CACHED)
		r->revoke = false;
	r->gen++;
	pthread_cond_broadcast(&cb->cond);
}

/* end a transition: replay what queued meanwhile */
static void res_settle(struct cache_backend *cb, struct cache_res *r)
{
	r->busy = false;
	pthread_cond_broadcast(&cb->cond);
	if (r->pend || r->revoke)
		job_add(cb, r);
}

/* wait until @r is not busy or @deadline; false on timeout */
static bool wait_settled_until(struct cache_backend *cb, struct cache_res *r,
			       int64_t deadline)
{
	while (r->busy && !cb->stopping) {
		struct timespec ts;
		int64_t now = dl_mono_ms();

		if (now >= deadline)
			return false;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 50 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&cb->cond, &cb->mutex, &ts);
	}
	return !r->busy;
}

/* wait (bounded) until nothing is on its way on @r: no transition, no
 * request queued here or in flight to the backend, no revocation due */
static void wait_quiet(struct cache_backend *cb, struct cache_res *r)
{
	int64_t deadline = dl_mono_ms() + CACHE_WAIT_MS;

	r->users++;
	while (!cb->stopping && dl_mono_ms() < deadline &&
	       (r->busy || r->pend || r->inflight ||
		(r->state == CS_CACHED && r->revoke))) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += 10 * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&cb->cond, &cb->mutex, &ts);
	}
	r->users--;
}

static void right_req(const struct cache_res *r, enum dl_lock_type type,
		      uint64_t wait_id, struct dl_lock_req *out)
{
	*out = (struct dl_lock_req){
		.resource = r->right,
		.space = DL_SPACE_FLOCK,
		.type = type,
		.start = 0,
		.end = DL_RANGE_EOF,
		.owner = CACHE_OWNER,
		.pid = 0,
		.wait_id = wait_id,
	};
}

/*
 * Take a right for @r (state CS_NONE, not busy; mutex held, dropped and
 * retaken).  0: r->state is CACHED or DIRECT; -EINPROGRESS: our shared
 * request is queued behind another host's exclusive right (r busy,
 * waiting_rd); else an error.
 */
static int right_take(struct cache_backend *cb, struct cache_res *r)
{
	struct dl_lock_req q;
	struct dl_grant g = { .token = 0, .lease = 0 };
	bool excl = cb->caching && dl_mono_ms() >= r->nocache_until_ms;
	uint64_t id;
	int ret;

	r->busy = true;
	if (excl) {
		right_req(r, DL_WRLCK, 0, &q);
		pthread_mutex_unlock(&cb->mutex);
		ret = dl_backend_lock(cb->remote, &q, &g);
		if (ret == 0 && cb->test_right_delay_ms) {
			dl_log(DL_LOG_WARNING,
			       "cache: test fault: %s: right %u ms late",
			       r->name, cb->test_right_delay_ms);
			usleep(cb->test_right_delay_ms * 1000u);
		}
		pthread_mutex_lock(&cb->mutex);
		if (ret == 0) {
			struct cache_epoch *e = calloc(1, sizeof(*e));

			if (!e) {
				/* give it back: we cannot track it */
				pthread_mutex_unlock(&cb->mutex);
				dl_backend_release_owner(cb->remote, r->right,
							 DL_SPACE_FLOCK,
							 CACHE_OWNER,
							 DL_TOKEN_ALL);
				pthread_mutex_lock(&cb->mutex);
				res_settle(cb, r);
				return -ENOMEM;
			}
			e->right = g.token;
			e->lease = g.lease;
			e->next = r->epochs;
			r->epochs = e;
			cb->rights_taken++;
			dl_log(DL_LOG_DEBUG, "cache: %s: cached here", r->name);
			set_state(cb, r, CS_CACHED);
			res_settle(cb, r);
			return 0;
		}
		if (ret != -EAGAIN) {
			res_settle(cb, r);
			return ret;
		}
	}
	if (excl) {
		/* another host has a right: if it caches R, ask for it back
		 * now, before our request is queued (a round trip sooner) */
		pthread_mutex_unlock(&cb->mutex);
		dl_backend_poke(cb->remote, r->right);
		pthread_mutex_lock(&cb->mutex);
		r->poked_ms = dl_mono_ms();
	}
	id = CACHE_INTERNAL | ++cb->next_internal;
	if (!route_add(cb, id, RT_INTERNAL, r, NULL)) {
		res_settle(cb, r);
		return -ENOMEM;
	}
	r->rd_id = id;
	r->waiting_rd = true;
	right_req(r, DL_RDLCK, id, &q);
	pthread_mutex_unlock(&cb->mutex);
	ret = dl_backend_lock(cb->remote, &q, &g);
	if (ret == -EINPROGRESS && !excl)
		dl_backend_poke(cb->remote, r->right);
	pthread_mutex_lock(&cb->mutex);
	if (ret == -EINPROGRESS) {
		if (r->waiting_rd) { /* not granted meanwhile */
			if (!excl)
				r->poked_ms = dl_mono_ms();
			return -EINPROGRESS;
		}
		/* granted or failed by a callback already */
		return r->state == CS_DIRECT ? 0 : -ENOLCK;
	}
	route_del(cb, id);
	r->waiting_rd = false;
	if (ret == 0)
		set_state(cb, r, CS_DIRECT);
	dl_log(DL_LOG_DEBUG, "cache: %s: shared right: %s", r->name,
	       ret == 0 ? "granted" : strerror(-ret));
	res_settle(cb, r);
	return ret;
}

/* ---- the remote backend's callbacks ------------------------------------ */

static const char *right_of(const char *resource)
{
	size_t n = strlen(CACHE_RIGHT_PREFIX);

	return strncmp(resource, CACHE_RIGHT_PREFIX, n) == 0 ? resource + n
							     : NULL;
}

/* our own shared request for a right was answered: 0 granted, or why not
 * (mutex held) */
static void rd_answered(struct cache_backend *cb, uint64_t wait_id, int err)
{
	struct cache_route *rt = *route_slot(cb, wait_id);
	struct cache_res *r;

	if (!rt || rt->kind != RT_INTERNAL)
		return;
	r = rt->res;
	route_del(cb, wait_id);
	if (!r->waiting_rd || r->rd_id != wait_id)
		return;
	r->waiting_rd = false;
	if (err == 0) {
		set_state(cb, r, CS_DIRECT);
	} else {
		/* the requests that waited for it fail as a lock would */
		while (r->pend) {
			struct cache_pend *p = r->pend;

			r->pend = p->next;
			route_del(cb, p->id);
			note_add(N_FAILED, p->id, NULL,
				 err == -EDEADLK ? -ENOLCK : err, NULL, 0, 0);
			free(p);
		}
		r->pend_tail = &r->pend;
		set_state(cb, r, CS_NONE);
	}
	res_settle(cb, r);
}

static void remote_granted(void *ctx, uint64_t wait_id,
			   const struct dl_grant *grant)
{
	struct cache_backend *cb = ctx;

	if (!(wait_id & CACHE_INTERNAL)) {
		struct dl_grant g = { .token = tok_up(grant->token),
				      .lease = grant->lease };

		cb->up.granted(cb->up.ctx, wait_id, &g);
		return;
	}
	pthread_mutex_lock(&cb->mutex);
	rd_answered(cb, wait_id, 0);
	pthread_mutex_unlock(&cb->mutex);
}

static void remote_failed(void *ctx, uint64_t wait_id, int err)
{
	struct cache_backend *cb = ctx;

	if (!(wait_id & CACHE_INTERNAL)) {
		cb->up.failed(cb->up.ctx, wait_id, err);
		return;
	}
	pthread_mutex_lock(&cb->mutex);
	rd_answered(cb, wait_id, err);
	unlock_and_notify(cb);
}

static void remote_lost(void *ctx, const char *resource, enum dl_space space,
			uint64_t owner, int err)
{
	struct cache_backend *cb = ctx;
	const char *name = right_of(resource);
	struct cache_res *r;

	if (!name) {
		cb->up.lost(cb->up.ctx, resource, space, owner, err);
		return;
	}
	if (owner != CACHE_OWNER)
		return;
	pthread_mutex_lock(&cb->mutex);
	r = res_find(cb, name);
	if (r && r->state == CS_CACHED) {
		dl_log(DL_LOG_WARNING,
		       "cache: the right on %s is lost (%s): its local locks "
		       "are lost",
		       name, strerror(-err));
		lose_local(cb, r, err);
		set_state(cb, r, CS_NONE);
	} else if (r && r->state == CS_DIRECT) {
		/* R's own records are reported one by one */
		set_state(cb, r, CS_NONE);
	}
	unlock_and_notify(cb);
}

static void remote_revoke(void *ctx, const char *resource)
{
	struct cache_backend *cb = ctx;
	const char *name = right_of(resource);
	struct cache_res *r;

	if (!name)
		return;
	pthread_mutex_lock(&cb->mutex);
	r = res_find(cb, name);
	/* also while our right is on its way (busy, no state yet): a poke
	 * sent as soon as the other host met our new right must not be lost
	 * (it was: the other host's trylock waited for the next poke, a
	 * second, and failed with EAGAIN); the right, once it is here, is
	 * given back at once, and a shared one or none forgets the flag */
	if (r && !r->revoke &&
	    (r->state == CS_CACHED || (r->busy && r->state == CS_NONE))) {
		dl_log(DL_LOG_DEBUG, "cache: %s: another host asks for it",
		       name);
		r->revoke = true;
		r->revoke_t0_ms = dl_mono_ms();
		job_add(cb, r);
	}
	pthread_mutex_unlock(&cb->mutex);
}

/* ---- revocation (worker) ------------------------------------------------ */

static int route_cmp(const void *a, const void *b)
{
	const struct cache_route *x = *(struct cache_route *const *)a;
	const struct cache_route *y = *(struct cache_route *const *)b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * Give the exclusive right on @r back (mutex held, r CACHED, not busy):
 * its exact locks into the backend, then its waiters, then the right to
 * shared.  Returns with the mutex held.
 */
static void revoke_right(struct cache_backend *cb, struct cache_res *r)
{
	struct engine_snap s = { 0 };
	struct cache_route **moving = NULL;
	size_t nmove = 0, cap = 0;
	struct cache_epoch *e = r->epochs;
	uint64_t gen, newest = 0;
	struct dl_lock_req q;
	struct dl_grant g = { 0 };
	int ret = 0;

	r->busy = true;
	gen = r->gen;
	if (dl_backend_list(cb->engine, r->name, snap_one, &s) < 0)
		goto retry;
	/* the waiters leave the engine first: no grant may come from it */
	for (size_t i = 0; i < CACHE_BUCKETS; i++) {
		for (struct cache_route *rt = cb->routes[i]; rt;
		     rt = rt->next) {
			if (rt->res != r || rt->kind != RT_ENGINE)
				continue;
			if (nmove == cap) {
				size_t nc = cap ? cap * 2 : 8;
				void *p = realloc(moving, nc * sizeof(*moving));

				if (!p)
					goto retry;
				moving = p;
				cap = nc;
			}
			moving[nmove++] = rt;
		}
	}
	/* in arrival order: the lock manager's wait ids grow */
	if (nmove)
		qsort(moving, nmove, sizeof(*moving), route_cmp);
	for (size_t i = 0; i < nmove; i++) {
		if (dl_backend_cancel(cb->engine, moving[i]->id) == 0)
			route_kind(moving[i], RT_MOVING);
		else
			moving[i] = NULL; /* granted: a holder now */
	}
	pthread_mutex_unlock(&cb->mutex);
	notes_run(cb);

	/* 1. the holders, exactly */
	for (size_t i = 0; i < s.n && ret == 0; i++) {
		q = (struct dl_lock_req){
			.resource = r->name,
			.space = s.v[i].space,
			.type = s.v[i].type,
			.start = s.v[i].start,
			.end = s.v[i].end,
			.owner = s.v[i].owner,
			.pid = s.v[i].pid,
		};
		ret = dl_backend_lock(cb->remote, &q, &g);
		if (ret == 0 && g.token > newest)
			newest = g.token;
		if (ret == -EAGAIN) {
			/* nobody else may hold R while we cache it */
			dl_log(DL_LOG_ERR,
			       "cache: %s: the backend refused a lock held "
			       "under our right; it is lost",
			       r->name);
			pthread_mutex_lock(&cb->mutex);
			note_add(N_LOST, 0, NULL, -ENOLCK, r->name,
				 s.v[i].space, s.v[i].owner);
			pthread_mutex_unlock(&cb->mutex);
			notes_run(cb);
			ret = 0;
		}
	}
	if (ret < 0) {
		/* the backend is away: keep the right, put the waiters back,
		 * try again later; what was written is harmless (the same
		 * locks, merged) */
		pthread_mutex_lock(&cb->mutex);
		for (size_t i = 0; i < nmove; i++) {
			struct cache_route *rt = moving[i];
			struct dl_grant eg = { 0 };
			int er;

			if (!rt)
				continue;
			route_kind(rt, RT_ENGINE);
			er = epoch_room(r);
			if (er == 0)
				er = dl_backend_lock(cb->engine, &rt->req, &eg);
			if (er == 0)
				engine_granted(cb, rt->id, &eg);
			else if (er != -EINPROGRESS)
				engine_failed(cb, rt->id, er);
		}
		goto retry_locked;
	}
	/* 2. the waiters, in their order */
	for (size_t i = 0; i < nmove; i++) {
		struct cache_route *rt = moving[i];
		struct dl_lock_req wq;
		uint64_t id;

		if (!rt)
			continue;
		pthread_mutex_lock(&cb->mutex);
		id = rt->id;
		wq = rt->req;
		pthread_mutex_unlock(&cb->mutex);
		ret = dl_backend_lock(cb->remote, &wq, &g);
		/* now the backend's: a cancel that waited goes there */
		pthread_mutex_lock(&cb->mutex);
		route_del(cb, id);
		pthread_cond_broadcast(&cb->cond);
		pthread_mutex_unlock(&cb->mutex);
		if (ret == 0) {
			g.token = tok_up(g.token);
			cb->up.granted(cb->up.ctx, id, &g);
		} else if (ret != -EINPROGRESS) {
			cb->up.failed(cb->up.ctx, id, ret);
		}
	}
	/* 3. the right becomes shared */
	right_req(r, DL_RDLCK, 0, &q);
	ret = dl_backend_lock(cb->remote, &q, &g);
	if (ret < 0)
		dl_log(DL_LOG_WARNING,
		       "cache: %s: could not share the right (%s); it is "
		       "given back when idle",
		       r->name, strerror(-ret));
	pthread_mutex_lock(&cb->mutex);
	if (r->gen == gen) {
		int64_t now = dl_mono_ms(), waited = now - r->revoke_t0_ms;

		for (size_t i = 0; i < s.n; i++)
			dl_backend_release_owner(cb->engine, r->name,
						 s.v[i].space, s.v[i].owner,
						 DL_TOKEN_ALL);
		if (e)
			e->flushed = newest ? newest : e->right;
		r->nocache_until_ms = now + cb->nocache_ms;
		r->last_use_ms = now;
		cb->revocations++;
		cb->revoke_ms_total += (uint64_t)waited;
		if ((uint64_t)waited > cb->revoke_ms_max)
			cb->revoke_ms_max = (uint64_t)waited;
		set_state(cb, r, CS_DIRECT);
		dl_log(DL_LOG_DEBUG,
		       "cache: %s: given back (%zu locks, %zu waiters) %" PRId64
		       " ms after it was asked",
		       r->name, s.n, nmove, waited);
	}
	res_settle(cb, r);
	free(s.v);
	free(moving);
	unlock_and_notify(cb);
	pthread_mutex_lock(&cb->mutex);
	return;
retry:
	pthread_mutex_unlock(&cb->mutex);
	pthread_mutex_lock(&cb->mutex);
retry_locked:
	free(s.v);
	free(moving);
	r->busy = false;
	pthread_cond_broadcast(&cb->cond);
	/* the worker's sweep tries again (r->revoke stays set) */
	unlock_and_notify(cb);
	pthread_mutex_lock(&cb->mutex);
}

/* ---- the lock path ----------------------------------------------------- */

static int queue_pending(struct cache_backend *cb, struct cache_res *r,
			 const struct dl_lock_req *req)
{
	uint64_t id = req->wait_id ? req->wait_id : req->answer_id;
	struct cache_pend *p;

	if (!id)
		return -EWOULDBLOCK; /* the caller wants an answer now */
	p = calloc(1, sizeof(*p));
	if (!p || !route_add(cb, id, RT_PENDING, r, NULL)) {
		free(p);
		return -ENOMEM;
	}
	p->req = *req;
	p->req.resource = r->name;
	p->id = id;
	if (!req->wait_id)
		p->deadline_ms = dl_mono_ms() + CACHE_TRYLOCK_MS;
	*r->pend_tail = p;
	r->pend_tail = &p->next;
	return -EINPROGRESS;
}

/*
 * One lock request on @r (mutex held; may drop and retake it).  Queues it
 * here while @r is in transition; with @replay, a request that was queued
 * here is answered through the callbacks instead of the return value.
 */
static int lock_locked(struct cache_backend *cb, struct cache_res *r,
		       const struct dl_lock_req *req, struct dl_grant *grant)
{
	struct dl_lock_req q = *req;
	int ret;

	q.resource = r->name;
	for (;;) {
		if (cb->stopping)
			return -ENOLCK;
		/* asked for it back: no new local grant, so that the other
		 * host's request meets ours in the store's FIFO */
		if (r->busy || (r->state == CS_CACHED && r->revoke)) {
			ret = queue_pending(cb, r, &q);
			if (ret != -EWOULDBLOCK)
				return ret;
			if (!r->busy) /* a caller that must have an answer */
				goto cached;
			if (!wait_settled_until(
				    cb, r, dl_mono_ms() + CACHE_TRYLOCK_MS))
				return r->busy ? -EAGAIN : -ENOLCK;
			continue;
		}
		if (r->state == CS_NONE) {
			ret = right_take(cb, r);
			if (ret == -EINPROGRESS)
				continue; /* busy: queued above */
			if (ret < 0)
				return ret;
			continue;
		}
		if (r->state == CS_CACHED) {
		cached:;
			struct dl_grant eg = { .token = 0, .lease = 0 };
			struct cache_epoch *e = r->epochs;

			if (!dl_lease_trusted(cb->lease, e->lease,
					      dl_mono_ms())) {
				/* the lease went: so did the right */
				lose_local(cb, r, -ENOLCK);
				set_state(cb, r, CS_NONE);
				continue;
			}
			if (q.wait_id &&
			    !route_add(cb, q.wait_id, RT_ENGINE, r, &q))
				return -ENOMEM;
			r->last_use_ms = dl_mono_ms();
			ret = epoch_room(r);
			if (ret == 0)
				ret = dl_backend_lock(cb->engine, &q, &eg);
			if (ret == 0) {
				if (q.wait_id)
					route_del(cb, q.wait_id);
				return epoch_grant(cb, r, eg.token, grant);
			}
			if (ret != -EINPROGRESS && q.wait_id)
				route_del(cb, q.wait_id);
			return ret;
		}
		/* CS_DIRECT */
		r->inflight++;
		r->last_use_ms = dl_mono_ms();
		pthread_mutex_unlock(&cb->mutex);
		ret = dl_backend_lock(cb->remote, &q, grant);
		pthread_mutex_lock(&cb->mutex);
		r->inflight--;
		r->last_use_ms = dl_mono_ms();
		if (ret == 0)
			grant->token = tok_up(grant->token);
		return ret;
	}
}

static int cache_lock(struct dl_backend *be, const struct dl_lock_req *req,
		      struct dl_grant *grant)
{
	struct cache_backend *cb = cache_of(be);
	struct cache_res *r;
	int ret;

	if (req->type == DL_UNLCK)
		return -EINVAL;
	pthread_mutex_lock(&cb->mutex);
	r = res_get(cb, req->resource);
	if (!r) {
		pthread_mutex_unlock(&cb->mutex);
		return -ENOMEM;
	}
	r->users++;
	ret = lock_locked(cb, r, req, grant);
	r->users--;
	res_put(cb, r);
	unlock_and_notify(cb);
	return ret;
}

/* replay the requests that queued while @r was busy (worker; mutex held) */
static void replay(struct cache_backend *cb, struct cache_res *r)
{
	while (r->pend && !r->busy) {
		struct cache_pend *p = r->pend;
		struct dl_grant g = { .token = 0, .lease = 0 };
		struct cache_route *rt;
		uint64_t id = p->id;
		int ret;

		r->pend = p->next;
		if (!r->pend)
			r->pend_tail = &r->pend;
		/* on its way: a cancel waits until it is somewhere */
		route_add(cb, id, RT_MOVING, r, NULL);
		/* -EINPROGRESS: queued (here again, or in a store) */
		ret = lock_locked(cb, r, &p->req, &g);
		rt = *route_slot(cb, id);
		if (rt && rt->kind == RT_MOVING) { /* in the store, or done */
			route_del(cb, id);
			pthread_cond_broadcast(&cb->cond);
		}
		if (ret == 0)
			note_add(N_GRANTED, id, &g, 0, NULL, 0, 0);
		else if (ret != -EINPROGRESS)
			note_add(N_FAILED, id, NULL, ret, NULL, 0, 0);
		free(p);
		/* tell now: a done() may lock again */
		unlock_and_notify(cb);
		pthread_mutex_lock(&cb->mutex);
	}
}

/* ---- the other requests ------------------------------------------------ */

/*
 * Settle @r for a call that needs a decided state (mutex held): waits for
 * a transition, takes a right when there is none and @take.  0 with
 * r->state CACHED or DIRECT, 1 with CS_NONE (nothing held here: @take
 * false), or a negative errno.
 */
static int settle_until(struct cache_backend *cb, struct cache_res *r,
			bool take, int64_t deadline)
{
	for (;;) {
		int ret;

		if (cb->stopping)
			return -ENOLCK;
		/* waiting for a shared right, this host holds nothing here */
		if (r->busy && r->waiting_rd && r->state == CS_NONE && !take)
			return 1;
		if (r->busy) {
			if (!wait_settled_until(cb, r, deadline))
				return -ETIMEDOUT;
			continue;
		}
		if (r->state != CS_NONE)
			return 0;
		if (!take)
			return 1;
		ret = right_take(cb, r);
		if (ret < 0 && ret != -EINPROGRESS)
			return ret;
	}
}

static int settle(struct cache_backend *cb, struct cache_res *r, bool take)
{
	int ret = settle_until(cb, r, take, dl_mono_ms() + CACHE_WAIT_MS);

	return ret == -ETIMEDOUT ? -ENOLCK : ret;
}

static int cache_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct cache_backend *cb = cache_of(be);
	struct cache_res *r;
	int ret;

	pthread_mutex_lock(&cb->mutex);
	r = res_find(cb, req->resource);
	if (!r) {
		pthread_mutex_unlock(&cb->mutex);
		return 0; /* nothing held here */
	}
	r->users++;
	ret = settle(cb, r, false);
	if (ret == 0 && r->state == CS_CACHED) {
		struct dl_lock_req q = *req;

		q.resource = r->name;
		r->last_use_ms = dl_mono_ms();
		ret = dl_backend_unlock(cb->engine, &q);
	} else if (ret == 0) {
		r->inflight++;
		pthread_mutex_unlock(&cb->mutex);
		ret = dl_backend_unlock(cb->remote, req);
		pthread_mutex_lock(&cb->mutex);
		r->inflight--;
		r->last_use_ms = dl_mono_ms();
	} else if (ret == 1) {
		ret = 0;
	}
	r->users--;
	res_put(cb, r);
	unlock_and_notify(cb);
	return ret;
}

static int cache_release_owner(struct dl_backend *be, const char *resource,
			       enum dl_space space, uint64_t owner,
			       uint64_t max_token)
{
	struct cache_backend *cb = cache_of(be);
	struct cache_res *r;
	int ret;

	pthread_mutex_lock(&cb->mutex);
	r = res_find(cb, resource);
	if (!r) {
		pthread_mutex_unlock(&cb->mutex);
		return 0;
	}
	r->users++;
	ret = settle(cb, r, false);
	if (ret == 0 && r->state == CS_CACHED) {
		r->last_use_ms = dl_mono_ms();
		ret = dl_backend_release_owner(cb->engine, r->name, space,
					       owner, tok_engine(r, max_token));
	} else if (ret == 0) {
		uint64_t down = tok_down(r, max_token);

		r->inflight++;
		pthread_mutex_unlock(&cb->mutex);
		ret = dl_backend_release_owner(cb->remote, resource, space,
					       owner, down);
		pthread_mutex_lock(&cb->mutex);
		r->inflight--;
		r->last_use_ms = dl_mono_ms();
	} else if (ret == 1) {
		ret = 0;
	}
	r->users--;
	res_put(cb, r);
	unlock_and_notify(cb);
	return ret;
}

static int cache_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct cache_backend *cb = cache_of(be);
	int64_t deadline = dl_mono_ms() + CACHE_WAIT_MS;
	struct cache_route *rt;
	int ret;

	pthread_mutex_lock(&cb->mutex);
	for (;;) {
		rt = *route_slot(cb, wait_id);
		if (!rt || rt->kind != RT_MOVING || dl_mono_ms() > deadline)
			break;
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&cb->cond, &cb->mutex, &ts);
	}
	if (rt && rt->kind == RT_ENGINE) {
		ret = dl_backend_cancel(cb->engine, wait_id);
		if (ret == 0)
			route_del(cb, wait_id);
		unlock_and_notify(cb);
		return ret;
	}
	if (rt && rt->kind == RT_PENDING) {
		struct cache_res *r = rt->res;

		for (struct cache_pend **p = &r->pend; *p; p = &(*p)->next) {
			struct cache_pend *pe = *p;

			if (pe->id != wait_id)
				continue;
			*p = pe->next;
			if (!*p)
				r->pend_tail = p;
			free(pe);
			break;
		}
		route_del(cb, wait_id);
		res_put(cb, r);
		pthread_mutex_unlock(&cb->mutex);
		return 0;
	}
	pthread_mutex_unlock(&cb->mutex);
	return dl_backend_cancel(cb->remote, wait_id);
}

static void local_info(struct cache_backend *cb, const struct cache_res *r,
		       struct dl_lock_info *info)
{
	if (!info->waiting)
		info->token = tok_local(r, info->token);
	snprintf(info->host, sizeof(info->host), "%s", cb->host);
}

static int cache_getlk(struct dl_backend *be, const struct dl_lock_req *req,
		       struct dl_lock_info *conflict)
{
	struct cache_backend *cb = cache_of(be);
	struct cache_res *r;
	int ret;

	pthread_mutex_lock(&cb->mutex);
	r = res_get(cb, req->resource);
	if (!r) {
		pthread_mutex_unlock(&cb->mutex);
		return -ENOMEM;
	}
	r->users++;
	/* the answer is due soon: a caching host that does not give the
	 * file back within CACHE_TRYLOCK_MS is reported as what it holds,
	 * the whole file (as a non-blocking lock gets EAGAIN) */
	ret = settle_until(cb, r, true, dl_mono_ms() + CACHE_TRYLOCK_MS);
	if (ret == -ETIMEDOUT) {
		struct dl_lock_req q;

		right_req(r, DL_WRLCK, 0, &q);
		r->inflight++;
		pthread_mutex_unlock(&cb->mutex);
		ret = dl_backend_getlk(cb->remote, &q, conflict);
		pthread_mutex_lock(&cb->mutex);
		r->inflight--;
		if (ret == 1) {
			conflict->space = req->space;
			conflict->token = tok_up(conflict->token);
		} else if (ret == 0) {
			ret = -ENOLCK; /* gone meanwhile: ask again */
		}
	} else if (ret == 0 && r->state == CS_CACHED) {
		struct dl_lock_req q = *req;

		q.resource = r->name;
		r->last_use_ms = dl_mono_ms();
		ret = dl_backend_getlk(cb->engine, &q, conflict);
		if (ret == 1)
			local_info(cb, r, conflict);
	} else if (ret == 0) {
		r->inflight++;
		pthread_mutex_unlock(&cb->mutex);
		ret = dl_backend_getlk(cb->remote, req, conflict);
		pthread_mutex_lock(&cb->mutex);
		r->inflight--;
		r->last_use_ms = dl_mono_ms();
		if (ret == 1)
			conflict->token = tok_up(conflict->token);
	}
	r->users--;
	res_put(cb, r);
	pthread_mutex_unlock(&cb->mutex);
	return ret;
}

/* ---- listing ----------------------------------------------------------- */

struct list_ctx {
	struct cache_backend *cb;
	dl_lock_info_fn fn;
	void *arg;
	const char *only; /* resource asked for, or NULL */
	struct dl_lock_info *v;
	size_t n, cap;
	char **names;
};

static int list_collect(const struct dl_lock_info *info, void *arg)
{
	struct list_ctx *lc = arg;

	if (lc->n == lc->cap) {
		size_t nc = lc->cap ? lc->cap * 2 : 16;
		void *p = realloc(lc->v, nc * sizeof(*lc->v));
		void *q = realloc(lc->names, nc * sizeof(*lc->names));

		if (p)
			lc->v = p;
		if (q)
			lc->names = q;
		if (!p || !q)
			return -ENOMEM;
		lc->cap = nc;
	}
	lc->v[lc->n] = *info;
	lc->names[lc->n] = info->resource ? strdup(info->resource) : NULL;
	lc->n++;
	return 0;
}

/* the remote's rows: tokens shifted; a right shows as a whole-file lock
 * of its resource by its host's cache (owner CACHE_OWNER, pid 0) */
static int list_remote(const struct dl_lock_info *info, void *arg)
{
	struct list_ctx *lc = arg;
	struct dl_lock_info i = *info;
	const char *name = info->resource;

	i.token = tok_up(info->token);
	if (name && right_of(name)) {
		if (info->type != DL_WRLCK || info->mine)
			return 0; /* a shared right says nothing */
		i.resource = right_of(name);
	}
	return lc->fn(&i, lc->arg);
}

static int list_right_only(const struct dl_lock_info *info, void *arg)
{
	struct list_ctx *lc = arg;
	struct dl_lock_info i = *info;

	if (info->type != DL_WRLCK || info->mine)
		return 0;
	i.token = tok_up(info->token);
	i.resource = lc->only;
	return lc->fn(&i, lc->arg);
}

static int cache_list(struct dl_backend *be, const char *resource,
		      dl_lock_info_fn fn, void *arg)
{
	struct cache_backend *cb = cache_of(be);
	struct list_ctx lc = { .cb = cb, .fn = fn, .arg = arg };
	struct cache_res *r = NULL;
	int ret = 0;

	pthread_mutex_lock(&cb->mutex);
	if (resource)
		r = res_get(cb, resource);
	/* one file is listed exactly: from a right of our own, so a host
	 * that caches it gives it back first (within CACHE_TRYLOCK_MS, or
	 * its whole-file right is what shows) */
	if (r && r->state == CS_NONE && !r->busy) {
		r->users++;
		settle_until(cb, r, true, dl_mono_ms() + CACHE_TRYLOCK_MS);
		r->users--;
	}
	/* a file in transition is listed once it settled (bounded): its
	 * locks are then where they stay, not on their way */
	if (r)
		wait_quiet(cb, r);
	/* what the engine decides: snapshot under the mutex */
	ret = dl_backend_list(cb->engine, resource, list_collect, &lc);
	for (size_t i = 0; i < lc.n; i++) {
		struct cache_res *lr =
			resource ? r
				 : (lc.names[i] ? res_find(cb, lc.names[i])
						: NULL);

		if (lr)
			local_info(cb, lr, &lc.v[i]);
	}
	pthread_mutex_unlock(&cb->mutex);
	for (size_t i = 0; i < lc.n && ret == 0; i++) {
		lc.v[i].resource = lc.names[i];
		ret = fn(&lc.v[i], arg);
	}
	for (size_t i = 0; i < lc.n; i++)
		free(lc.names[i]);
	free(lc.v);
	free(lc.names);
	if (ret != 0)
		return ret < 0 ? ret : 0;
	ret = dl_backend_list(cb->remote, resource, list_remote, &lc);
	if (ret == 0 && resource) {
		char *right;

		if (asprintf(&right, "%s%s", CACHE_RIGHT_PREFIX, resource) < 0)
			return -ENOMEM;
		lc.only = resource;
		ret = dl_backend_list(cb->remote, right, list_right_only, &lc);
		free(right);
	}
	return ret > 0 ? 0 : ret;
}

static int cache_status(struct dl_backend *be, char *buf, size_t len)
{
	struct cache_backend *cb = cache_of(be);
	char inner[1024];
	int ret = dl_backend_status(cb->remote, inner, sizeof(inner));

	if (ret < 0)
		snprintf(inner, sizeof(inner), "error: %s", strerror(-ret));
	pthread_mutex_lock(&cb->mutex);
	snprintf(buf, len,
		 "%s cache=%s cached=%zu direct=%zu local_grants=%" PRIu64
		 " rights_taken=%" PRIu64 " revocations=%" PRIu64 " revoke_"
		 "wait_ms_"
		 "total="
		 "%" PRIu64 " revoke_wait_ms_max=%" PRIu64 " cache_idle_ms=%u",
		 inner, cb->caching ? "on" : "off", cb->ncached, cb->ndirect,
		 cb->local_grants, cb->rights_taken, cb->revocations,
		 cb->revoke_ms_total, cb->revoke_ms_max, cb->idle_ms);
	pthread_mutex_unlock(&cb->mutex);
	return 0;
}

static int cache_stats(struct dl_backend *be, struct dl_cache_stats *st)
{
	struct cache_backend *cb = cache_of(be);

	pthread_mutex_lock(&cb->mutex);
	*st = (struct dl_cache_stats){
		.cached = cb->ncached,
		.direct = cb->ndirect,
		.local_grants = cb->local_grants,
		.rights_taken = cb->rights_taken,
		.revocations = cb->revocations,
		.revoke_wait_ms = cb->revoke_ms_total,
	};
	pthread_mutex_unlock(&cb->mutex);
	return 0;
}

/*
 * An administrator's break, decided on exact locks: the file is taken back
 * first (a revocation, as for a lock) and its records are broken in the
 * backend; a file cached here loses its local locks.  A caching host that
 * does not answer within CACHE_BREAK_MS has its right broken instead: the
 * locks it decided under it are lost there (its daemon learns it as the
 * backend reports any break).
 */
static int cache_break_lock(struct dl_backend *be, const char *resource)
{
	struct cache_backend *cb = cache_of(be);
	struct cache_res *r;
	bool mine = false;
	char *right;
	int ret, rret;

	pthread_mutex_lock(&cb->mutex);
	r = res_get(cb, resource);
	if (!r) {
		pthread_mutex_unlock(&cb->mutex);
		return -ENOMEM;
	}
	r->users++;
	ret = settle_until(cb, r, true, dl_mono_ms() + CACHE_BREAK_MS);
	if (ret == 0 && r->state == CS_CACHED) {
		mine = !engine_empty(cb, r);
		lose_local(cb, r, -ECONNABORTED);
		epochs_free(r);
		set_state(cb, r, CS_NONE);
		r->busy = true;
		pthread_mutex_unlock(&cb->mutex);
		notes_run(cb);
		dl_backend_release_owner(cb->remote, r->right, DL_SPACE_FLOCK,
					 CACHE_OWNER, DL_TOKEN_ALL);
		pthread_mutex_lock(&cb->mutex);
		res_settle(cb, r);
		r->users--;
		res_put(cb, r);
		pthread_mutex_unlock(&cb->mutex);
		rret = dl_backend_break_lock(cb->remote, resource);
		return mine && rret == -ENOENT ? 0 : rret;
	}
	r->users--;
	res_put(cb, r);
	unlock_and_notify(cb);
	if (ret == 0) /* direct: R's records are exact */
		return dl_backend_break_lock(cb->remote, resource);
	if (ret != -ETIMEDOUT)
		return ret;
	if (asprintf(&right, "%s%s", CACHE_RIGHT_PREFIX, resource) < 0)
		return -ENOMEM;
	ret = dl_backend_break_lock(cb->remote, right);
	free(right);
	if (ret < 0 && ret != -ENOENT)
		return ret;
	rret = dl_backend_break_lock(cb->remote, resource);
	return ret == 0 && rret == -ENOENT ? 0 : rret;
}

/* ---- the worker --------------------------------------------------------- */

struct mine_ctx {
	bool any;
};

static int mine_one(const struct dl_lock_info *info, void *arg)
{
	struct mine_ctx *m = arg;

	if (info->mine) {
		m->any = true;
		return 1;
	}
	return 0;
}

/* give an idle right back (mutex held, r not busy) */
static void idle_release(struct cache_backend *cb, struct cache_res *r)
{
	struct mine_ctx m = { false };
	uint64_t gen;
	int ret = 0;

	if (r->state == CS_CACHED && !engine_empty(cb, r))
		return;
	if (r->state == CS_DIRECT && r->inflight)
		return;
	r->busy = true;
	gen = r->gen;
	pthread_mutex_unlock(&cb->mutex);
	if (r->state == CS_DIRECT)
		ret = dl_backend_list(cb->remote, r->name, mine_one, &m);
	if (ret >= 0 && !m.any)
		ret = dl_backend_release_owner(cb->remote, r->right,
					       DL_SPACE_FLOCK, CACHE_OWNER,
					       DL_TOKEN_ALL);
	pthread_mutex_lock(&cb->mutex);
	r->last_use_ms = dl_mono_ms();
	if (ret >= 0 && !m.any && r->gen == gen) {
		epochs_free(r);
		set_state(cb, r, CS_NONE);
	}
	res_settle(cb, r);
}

/* non-blocking requests that waited too long for another host: EAGAIN */
static void expire_trylocks(struct cache_backend *cb, struct cache_res *r,
			    int64_t now)
{
	struct cache_pend **pp = &r->pend;

	while (*pp) {
		struct cache_pend *p = *pp;

		if (!p->deadline_ms || now < p->deadline_ms) {
			pp = &p->next;
			continue;
		}
		*pp = p->next;
		route_del(cb, p->id);
		note_add(N_FAILED, p->id, NULL, -EAGAIN, NULL, 0, 0);
		free(p);
	}
	r->pend_tail = pp;
}

static void sweep(struct cache_backend *cb, int64_t now, char ***poke,
		  size_t *npoke)
{
	for (size_t b = 0; b < CACHE_BUCKETS; b++) {
		struct cache_res *next;

		for (struct cache_res *r = cb->buckets[b]; r; r = next) {
			next = r->next;
			if (r->busy && r->pend)
				expire_trylocks(cb, r, now);
			if (r->busy) {
				if (r->waiting_rd &&
				    now - r->poked_ms >= CACHE_REPOKE_MS) {
					char **p = realloc(
						*poke,
						(*npoke + 1) * sizeof(**poke));

					if (p) {
						*poke = p;
						p[*npoke] = strdup(r->right);
						if (p[*npoke])
							(*npoke)++;
					}
					r->poked_ms = now;
				}
				continue;
			}
			if (r->state == CS_CACHED && r->revoke) {
				job_add(cb, r);
				continue;
			}
			if (r->state != CS_NONE && !r->users &&
			    now - r->last_use_ms >= (int64_t)cb->idle_ms) {
				job_add(cb, r);
				continue;
			}
			if (r->state == CS_NONE && !r->users && !r->pend &&
			    now - r->last_use_ms >= 10 * (int64_t)cb->idle_ms)
				res_put(cb, r);
		}
	}
}

static void *cache_worker(void *arg)
{
	struct cache_backend *cb = arg;
	int64_t next_sweep = dl_mono_ms();
	/* often enough for trylock deadlines and idle rights */
	unsigned period = cb->idle_ms / 2 < 100 ? cb->idle_ms / 2 : 100;

	if (period < 20)
		period = 20;
	pthread_mutex_lock(&cb->mutex);
	while (!cb->stopping) {
		int64_t now = dl_mono_ms();
		char **poke = NULL;
		size_t npoke = 0;

		if (now >= next_sweep) {
			sweep(cb, now, &poke, &npoke);
			next_sweep = now + period;
			if (tl_notes) {
				unlock_and_notify(cb);
				pthread_mutex_lock(&cb->mutex);
			}
		}
		if (npoke) {
			pthread_mutex_unlock(&cb->mutex);
			for (size_t i = 0; i < npoke; i++) {
				dl_backend_poke(cb->remote, poke[i]);
				free(poke[i]);
			}
			free(poke);
			pthread_mutex_lock(&cb->mutex);
		}
		if (cb->jobs) {
			struct cache_res *r = cb->jobs;

			cb->jobs = r->jnext;
			if (!cb->jobs)
				cb->jobs_tail = &cb->jobs;
			r->queued = false;
			r->users++;
			if (!r->busy && r->state == CS_CACHED && r->revoke)
				revoke_right(cb, r);
			if (!r->busy && r->pend)
				replay(cb, r);
			if (!r->busy && !r->pend && !r->revoke &&
			    r->state != CS_NONE &&
			    dl_mono_ms() - r->last_use_ms >=
				    (int64_t)cb->idle_ms &&
			    r->users == 1)
				idle_release(cb, r);
			r->users--;
			res_put(cb, r);
			continue;
		}
		struct timespec ts;
		int64_t wait = next_sweep - dl_mono_ms();

		if (wait > 0) {
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += wait / 1000;
			ts.tv_nsec += (wait % 1000) * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&cb->work_cond, &cb->mutex, &ts);
		}
	}
	pthread_mutex_unlock(&cb->mutex);
	return NULL;
}

/* ---- life cycle --------------------------------------------------------- */

static void cache_close(struct dl_backend *be)
{
	struct cache_backend *cb = cache_of(be);

	pthread_mutex_lock(&cb->mutex);
	cb->stopping = true;
	pthread_cond_broadcast(&cb->work_cond);
	pthread_cond_broadcast(&cb->cond);
	pthread_mutex_unlock(&cb->mutex);
	pthread_join(cb->worker, NULL);
	/* the lock manager released every lock: give the rights back */
	for (size_t b = 0; b < CACHE_BUCKETS; b++) {
		for (struct cache_res *r = cb->buckets[b]; r; r = r->next) {
			if (r->state != CS_NONE || r->waiting_rd)
				dl_backend_release_owner(cb->remote, r->right,
							 DL_SPACE_FLOCK,
							 CACHE_OWNER,
							 DL_TOKEN_ALL);
		}
	}
	dl_backend_close(cb->remote);
	dl_backend_close(cb->engine);
	for (size_t b = 0; b < CACHE_BUCKETS; b++) {
		while (cb->buckets[b]) {
			struct cache_res *r = cb->buckets[b];

			cb->buckets[b] = r->next;
			while (r->pend) {
				struct cache_pend *p = r->pend;

				r->pend = p->next;
				free(p);
			}
			epochs_free(r);
			free(r->name);
			free(r->right);
			free(r);
		}
		while (cb->routes[b]) {
			struct cache_route *rt = cb->routes[b];

			cb->routes[b] = rt->next;
			free(rt);
		}
	}
	pthread_cond_destroy(&cb->cond);
	pthread_cond_destroy(&cb->work_cond);
	pthread_mutex_destroy(&cb->mutex);
	free(cb);
}

/* versions are not cached: every read and bump goes to the store */
static int cache_version(struct dl_backend *be, const char *resource,
			 struct dl_version *out)
{
	return dl_backend_version(cache_of(be)->remote, resource, out);
}

static int cache_bump(struct dl_backend *be, const char *resource,
		      struct dl_version *out)
{
	return dl_backend_bump(cache_of(be)->remote, resource, out);
}

static const struct dl_backend_ops cache_ops = {
	.scheme = "cache",
	.guarantee = "same-host lock caching over the backend below",
	.shared = true,
	.inproc = false,
	.close = cache_close,
	.lock = cache_lock,
	.unlock = cache_unlock,
	.cancel = cache_cancel,
	.release_owner = cache_release_owner,
	.getlk = cache_getlk,
	.list = cache_list,
	.status = cache_status,
	.break_lock = cache_break_lock,
	.cache_stats = cache_stats,
	.version = cache_version,
	.bump = cache_bump,
};

int dl_cache_open(const struct dl_backend_conf *conf,
		  const struct dl_backend_ops *remote_ops,
		  const struct dl_backend_cb *up, struct dl_backend **out,
		  char *err, size_t errlen)
{
	struct dl_backend_conf ec = *conf;
	struct dl_backend_cb rcb, ecb;
	struct cache_backend *cb;
	pthread_condattr_t ca;
	int ret;

	if (!remote_ops->poke) { /* backend.c opens cache=off without us */
		snprintf(err, errlen,
			 "cache=on: the %s backend cannot ask another host "
			 "for a lock back",
			 remote_ops->scheme);
		return -EINVAL;
	}
	cb = calloc(1, sizeof(*cb));
	if (!cb) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	cb->ops = cache_ops;
	cb->ops.scheme = remote_ops->scheme;
	cb->ops.guarantee = remote_ops->guarantee;
	cb->base.ops = &cb->ops;
	cb->up = *up;
	cb->lease = conf->lease;
	cb->caching = conf->cache == DL_CACHE_ON;
	cb->idle_ms = conf->cache_idle_ms ? conf->cache_idle_ms : 1000;
	cb->nocache_ms = conf->cache_nocache_ms ? conf->cache_nocache_ms
						: CACHE_NOCACHE_MS;
	snprintf(cb->host, sizeof(cb->host), "%s", conf->host_id);
	if (getenv("DLOCKFS_TEST_CACHE_RIGHT_DELAY_MS"))
		cb->test_right_delay_ms = (unsigned)strtoul(
			getenv("DLOCKFS_TEST_CACHE_RIGHT_DELAY_MS"), NULL, 10);
	cb->jobs_tail = &cb->jobs;
	pthread_mutex_init(&cb->mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&cb->cond, &ca);
	pthread_cond_init(&cb->work_cond, &ca);
	pthread_condattr_destroy(&ca);

	ecb = (struct dl_backend_cb){ .ctx = cb,
				      .granted = engine_granted,
				      .failed = engine_failed,
				      .lost = engine_lost };
	ec.uri = "local:";
	ret = dl_local_ops.open(&ec, &ecb, &cb->engine, err, errlen);
	if (ret < 0)
		goto out_free;
	rcb = (struct dl_backend_cb){ .ctx = cb,
				      .granted = remote_granted,
				      .failed = remote_failed,
				      .lost = remote_lost,
				      .revoke = remote_revoke };
	ret = remote_ops->open(conf, &rcb, &cb->remote, err, errlen);
	if (ret < 0)
		goto out_engine;
	ret = -pthread_create(&cb->worker, NULL, cache_worker, cb);
	if (ret < 0) {
		snprintf(err, errlen, "cache: cannot start its thread");
		dl_backend_close(cb->remote);
		goto out_engine;
	}
	*out = &cb->base;
	return 0;
out_engine:
	dl_backend_close(cb->engine);
out_free:
	pthread_cond_destroy(&cb->cond);
	pthread_cond_destroy(&cb->work_cond);
	pthread_mutex_destroy(&cb->mutex);
	free(cb);
	return ret;
}

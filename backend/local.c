/*
 * local.c - the embedded "local:" backend: the lock table of one host, kept
 * in this process.
 *
 * It is what a remote backend is for the cluster, for one daemon: granted
 * locks per resource and lock space (a struct dl_range_set each), and one
 * FIFO queue of waiting requests.  An unlock hands the lock to the waiters
 * in arrival order inside the same critical section, so a process that
 * re-locks in a loop cannot overtake a waiter.  Like Linux, a request is
 * granted whenever no granted lock conflicts with it; queued requests do
 * not block newcomers (that would make an owner wait for itself and invent
 * deadlocks a local filesystem does not have).
 *
 * There are no leases: the daemon that holds the locks is the store.
 * Versions (dl_backend_ops.version) live in a table of their own, apart
 * from the locks, and like them only as long as this process.
 *
 * Locking: one mutex, local_backend.mutex, guards everything below it.
 * Callbacks are collected under it and run after it is dropped.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "backend/util/hash.h"

#define LOCAL_BUCKETS 4096

struct local_resource {
	struct local_resource *next; /* hash chain */
	struct dl_range_set sets[2]; /* indexed by enum dl_space */
	unsigned nwaiters;
	char name[];
};

/* a resource's version, kept from its first bump until close */
struct local_version {
	struct local_version *next; /* hash chain */
	struct dl_version v;
	char name[];
};

struct local_waiter {
	struct local_waiter *next, *prev; /* global FIFO, arrival order */
	struct local_waiter *hnext;	  /* hash chain by wait id */
	struct local_resource *res;
	struct dl_lock_req req; /* req.resource points to res->name */
	int64_t since_ms;
};

struct local_backend {
	struct dl_backend base;
	struct dl_backend_cb cb;
	char host[DL_HOST_MAX];
	pthread_mutex_t mutex;
	/* guarded by mutex: */
	struct local_resource *buckets[LOCAL_BUCKETS];
	struct local_waiter queue; /* list head of the FIFO */
	/* the same waiters by wait id: a cancel costs O(1) */
	struct local_waiter *wbuckets[LOCAL_BUCKETS];
	uint64_t next_token; /* fencing tokens: one counter, so they
				      grow strictly per resource too */
	size_t nresources;
	size_t nwaiters;
	struct local_version *vbuckets[LOCAL_BUCKETS];
};

/* a grant to report once the mutex is dropped */
struct local_grant {
	uint64_t wait_id;
	uint64_t token;
};

struct local_grants {
	struct local_grant *v;
	size_t n;
};

static struct local_backend *local_of(struct dl_backend *be)
{
	return (struct local_backend *)be;
}

static struct local_waiter **wait_slot(struct local_backend *lb,
				       uint64_t wait_id)
{
	struct local_waiter **p = &lb->wbuckets[wait_id % LOCAL_BUCKETS];

	while (*p && (*p)->req.wait_id != wait_id)
		p = &(*p)->hnext;
	return p;
}

/* take @w off the FIFO and the id hash (mutex held) */
static void wait_unlink(struct local_backend *lb, struct local_waiter *w)
{
	struct local_waiter **p = wait_slot(lb, w->req.wait_id);

	if (*p == w)
		*p = w->hnext;
	w->prev->next = w->next;
	w->next->prev = w->prev;
	w->res->nwaiters--;
	lb->nwaiters--;
}

static uint64_t name_hash(const char *s)
{
	return dl_fnv1a_str(DL_FNV_OFFSET, s);
}

static struct local_resource **res_slot(struct local_backend *lb,
					const char *name)
{
	struct local_resource **p =
		&lb->buckets[name_hash(name) % LOCAL_BUCKETS];

	while (*p && strcmp((*p)->name, name) != 0)
		p = &(*p)->next;
	return p;
}

static struct local_resource *res_find(struct local_backend *lb,
				       const char *name)
{
	return *res_slot(lb, name);
}

static struct local_resource *res_get(struct local_backend *lb,
				      const char *name)
{
	struct local_resource **p = res_slot(lb, name);
	size_t len = strlen(name);

	if (*p)
		return *p;
	*p = calloc(1, sizeof(**p) + len + 1);
	if (!*p)
		return NULL;
	memcpy((*p)->name, name, len + 1);
	lb->nresources++;
	return *p;
}

/* free @res when nothing refers to it any more */
static void res_put(struct local_backend *lb, struct local_resource *res)
{
	struct local_resource **p;

	if (res->sets[0].n || res->sets[1].n || res->nwaiters)
		return;
	p = res_slot(lb, res->name);
	*p = res->next;
	range_set_free(&res->sets[0]);
	range_set_free(&res->sets[1]);
	free(res);
	lb->nresources--;
}

static void req_to_range(const struct dl_lock_req *req, uint64_t token,
			 int64_t since, struct dl_range_lock *rl)
{
	*rl = (struct dl_range_lock){
		.start = req->start,
		.end = req->end,
		.owner = req->owner,
		.token = token,
		.since_ms = since,
		.pid = req->pid,
		.type = req->type,
	};
}

static bool req_valid(const struct dl_lock_req *req, bool unlock)
{
	if (req->start > req->end || (unsigned)req->space > DL_SPACE_POSIX)
		return false;
	if (unlock)
		return true;
	return req->type == DL_RDLCK || req->type == DL_WRLCK;
}

/*
 * One pass over the waiters of @res, in arrival order; the number of
 * grants made.  Grants to report are appended to @out; on -ENOMEM for
 * that array a waiter simply stays queued until the next change.
 */
static size_t grant_pass(struct local_backend *lb, struct local_resource *res,
			 struct local_grants *out)
{
	struct local_waiter *w, *next;
	size_t before = out->n;

	for (w = lb->queue.next; w != &lb->queue && res->nwaiters; w = next) {
		struct dl_range_set *set = &res->sets[w->req.space];
		struct dl_range_lock rl;
		struct local_grant *g;

		next = w->next;
		if (w->res != res)
			continue;
		req_to_range(&w->req, 0, 0, &rl);
		if (range_set_find_conflict(set, &rl))
			continue;
		g = realloc(out->v, (out->n + 1) * sizeof(*g));
		if (!g)
			break;
		out->v = g;
		rl.token = ++lb->next_token;
		rl.since_ms = dl_now_ms();
		if (range_set_apply(set, &rl) < 0) {
			lb->next_token--;
			break;
		}
		g[out->n++] = (struct local_grant){ w->req.wait_id, rl.token };
		wait_unlink(lb, w);
		free(w);
	}
	return out->n - before;
}

/*
 * Grant what can be granted to the waiters of @res.  A grant can free
 * bytes for an earlier waiter (it may turn its owner's write lock into a
 * read lock), so passes repeat until one grants nothing.
 */
static void grant_waiters(struct local_backend *lb, struct local_resource *res,
			  struct local_grants *out)
{
	while (res->nwaiters && grant_pass(lb, res, out))
		;
}

/* drop the mutex, then report @g */
static void unlock_and_report(struct local_backend *lb, struct local_grants *g)
{
	pthread_mutex_unlock(&lb->mutex);
	for (size_t i = 0; i < g->n; i++) {
		struct dl_grant gr = { .token = g->v[i].token, .lease = 0 };

		lb->cb.granted(lb->cb.ctx, g->v[i].wait_id, &gr);
	}
	free(g->v);
}

static int local_check_uri(const char *rest, char *err, size_t errlen)
{
	if (*rest) {
		snprintf(err, errlen,
			 "malformed local URI: 'local:' takes nothing after "
			 "the colon");
		return -EINVAL;
	}
	return 0;
}

static int local_open(const struct dl_backend_conf *conf,
		      const struct dl_backend_cb *cb, struct dl_backend **out,
		      char *err, size_t errlen)
{
	struct local_backend *lb = calloc(1, sizeof(*lb));

	if (!lb) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	lb->base.ops = &dl_local_ops;
	lb->cb = *cb;
	snprintf(lb->host, sizeof(lb->host), "%s", conf->host_id);
	pthread_mutex_init(&lb->mutex, NULL);
	lb->queue.next = lb->queue.prev = &lb->queue;
	*out = &lb->base;
	return 0;
}

static void local_close(struct dl_backend *be)
{
	struct local_backend *lb = local_of(be);

	while (lb->queue.next != &lb->queue) {
		struct local_waiter *w = lb->queue.next;

		lb->queue.next = w->next;
		free(w);
	}
	for (size_t i = 0; i < LOCAL_BUCKETS; i++) {
		while (lb->buckets[i]) {
			struct local_resource *r = lb->buckets[i];

			lb->buckets[i] = r->next;
			range_set_free(&r->sets[0]);
			range_set_free(&r->sets[1]);
			free(r);
		}
		while (lb->vbuckets[i]) {
			struct local_version *v = lb->vbuckets[i];

			lb->vbuckets[i] = v->next;
			free(v);
		}
	}
	pthread_mutex_destroy(&lb->mutex);
	free(lb);
}

static int local_lock(struct dl_backend *be, const struct dl_lock_req *req,
		      struct dl_grant *grant)
{
	struct local_backend *lb = local_of(be);
	struct local_grants grants = { 0 };
	struct local_resource *res;
	struct dl_range_lock rl;
	struct local_waiter *w;
	int ret;

	if (!req_valid(req, false))
		return -EINVAL;
	/* allocate before taking the mutex: nothing to undo on -ENOMEM */
	w = req->wait_id ? calloc(1, sizeof(*w)) : NULL;
	if (req->wait_id && !w)
		return -ENOMEM;

	pthread_mutex_lock(&lb->mutex);
	res = res_get(lb, req->resource);
	if (!res) {
		ret = -ENOMEM;
		goto out_unlock;
	}
	req_to_range(req, 0, 0, &rl);
	if (req->space == DL_SPACE_FLOCK) {
		/*
		 * As flock(2) on Linux: converting a lock first drops the old
		 * one (waking others), then asks for the new one; a failed
		 * LOCK_NB conversion leaves no lock at all.
		 */
		struct dl_range_set *set = &res->sets[DL_SPACE_FLOCK];

		for (size_t i = 0; i < set->n; i++) {
			if (set->v[i].owner != req->owner)
				continue;
			if (set->v[i].type == req->type) {
				*grant = (struct dl_grant){
					.token = set->v[i].token, .lease = 0
				};
				ret = 0;
				goto out_unlock;
			}
			range_set_remove_owner(set, req->owner, DL_TOKEN_ALL);
			grant_waiters(lb, res, &grants);
			break;
		}
	}
	if (range_set_find_conflict(&res->sets[req->space], &rl)) {
		if (!w) {
			ret = -EAGAIN;
			goto out_unlock;
		}
		w->res = res;
		w->req = *req;
		w->req.resource = res->name;
		w->since_ms = dl_now_ms();
		w->prev = lb->queue.prev;
		w->next = &lb->queue;
		w->prev->next = w;
		lb->queue.prev = w;
		w->hnext = lb->wbuckets[req->wait_id % LOCAL_BUCKETS];
		lb->wbuckets[req->wait_id % LOCAL_BUCKETS] = w;
		res->nwaiters++;
		lb->nwaiters++;
		w = NULL;
		ret = -EINPROGRESS;
		goto out_unlock;
	}
	rl.token = ++lb->next_token;
	rl.since_ms = dl_now_ms();
	ret = range_set_apply(&res->sets[req->space], &rl);
	if (ret == 0) {
		*grant = (struct dl_grant){ .token = rl.token, .lease = 0 };
		/* a POSIX conversion to shared may unblock readers */
		if (req->space == DL_SPACE_POSIX)
			grant_waiters(lb, res, &grants);
	} else {
		lb->next_token--;
	}

out_unlock:
	if (res)
		res_put(lb, res);
	unlock_and_report(lb, &grants);
	free(w);
	return ret;
}

static int local_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct local_backend *lb = local_of(be);
	struct local_grants grants = { 0 };
	struct local_resource *res;
	struct dl_range_lock rl;
	int ret = 0;

	if (!req_valid(req, true))
		return -EINVAL;
	pthread_mutex_lock(&lb->mutex);
	res = res_find(lb, req->resource);
	if (res) {
		req_to_range(req, 0, 0, &rl);
		rl.type = DL_UNLCK;
		ret = range_set_apply(&res->sets[req->space], &rl);
		grant_waiters(lb, res, &grants);
		res_put(lb, res);
	}
	unlock_and_report(lb, &grants);
	return ret;
}

static int local_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct local_backend *lb = local_of(be);
	struct local_waiter *w;
	int ret = -ENOENT;

	pthread_mutex_lock(&lb->mutex);
	w = *wait_slot(lb, wait_id);
	if (w) {
		wait_unlink(lb, w);
		res_put(lb, w->res);
		free(w);
		ret = 0;
	}
	pthread_mutex_unlock(&lb->mutex);
	return ret;
}

static int local_release_owner(struct dl_backend *be, const char *resource,
			       enum dl_space space, uint64_t owner,
			       uint64_t max_token)
{
	struct local_backend *lb = local_of(be);
	struct local_grants grants = { 0 };
	struct local_resource *res;

	pthread_mutex_lock(&lb->mutex);
	res = res_find(lb, resource);
	if (res &&
	    range_set_remove_owner(&res->sets[space], owner, max_token)) {
		grant_waiters(lb, res, &grants);
		res_put(lb, res);
	}
	unlock_and_report(lb, &grants);
	return 0;
}

static void fill_info(const struct local_backend *lb, enum dl_space space,
		      const struct dl_range_lock *rl, bool waiting,
		      struct dl_lock_info *info)
{
	*info = (struct dl_lock_info){
		.space = space,
		.type = rl->type,
		.start = rl->start,
		.end = rl->end,
		.owner = rl->owner,
		.mine = true,
		.waiting = waiting,
		.pid = rl->pid,
		.token = rl->token,
		.since_ms = rl->since_ms,
	};
	snprintf(info->host, sizeof(info->host), "%s", lb->host);
}

static int local_getlk(struct dl_backend *be, const struct dl_lock_req *req,
		       struct dl_lock_info *conflict)
{
	struct local_backend *lb = local_of(be);
	const struct dl_range_lock *c = NULL;
	struct local_resource *res;
	struct dl_range_lock rl;

	if (!req_valid(req, false))
		return -EINVAL;
	req_to_range(req, 0, 0, &rl);
	pthread_mutex_lock(&lb->mutex);
	res = res_find(lb, req->resource);
	if (res)
		c = range_set_find_conflict(&res->sets[req->space], &rl);
	if (c)
		fill_info(lb, req->space, c, false, conflict);
	pthread_mutex_unlock(&lb->mutex);
	return c != NULL;
}

struct local_snapshot {
	struct dl_lock_info *v;
	size_t n, cap;
};

/* a slot for one more entry, or NULL on -ENOMEM */
static struct dl_lock_info *snapshot_push(struct local_snapshot *snap)
{
	if (snap->n == snap->cap) {
		size_t nc = snap->cap ? snap->cap * 2 : 16;
		void *p = realloc(snap->v, nc * sizeof(*snap->v));

		if (!p)
			return NULL;
		snap->v = p;
		snap->cap = nc;
	}
	return &snap->v[snap->n++];
}

/* Snapshot under the mutex, call @fn outside it: @fn may call us back. */
static int local_list(struct dl_backend *be, const char *resource,
		      dl_lock_info_fn fn, void *arg)
{
	struct local_backend *lb = local_of(be);
	struct local_snapshot snap = { 0 };
	struct dl_lock_info *info;
	bool named = false;
	int ret = 0;

	pthread_mutex_lock(&lb->mutex);
	for (size_t b = 0; b < LOCAL_BUCKETS; b++) {
		for (struct local_resource *r = lb->buckets[b]; r;
		     r = r->next) {
			if (resource && strcmp(resource, r->name) != 0)
				continue;
			for (int s = 0; s < 2; s++) {
				for (size_t i = 0; i < r->sets[s].n; i++) {
					info = snapshot_push(&snap);
					if (!info) {
						ret = -ENOMEM;
						goto out_unlock;
					}
					fill_info(lb, (enum dl_space)s,
						  &r->sets[s].v[i], false,
						  info);
					info->resource = r->name;
				}
			}
		}
	}
	for (struct local_waiter *w = lb->queue.next; w != &lb->queue;
	     w = w->next) {
		struct dl_range_lock rl;

		if (resource && strcmp(resource, w->res->name) != 0)
			continue;
		info = snapshot_push(&snap);
		if (!info) {
			ret = -ENOMEM;
			goto out_unlock;
		}
		req_to_range(&w->req, 0, w->since_ms, &rl);
		fill_info(lb, w->req.space, &rl, true, info);
		info->resource = w->res->name;
	}
	/* names are given when all resources are listed: copies, since @fn
	 * runs unlocked */
	named = true;
	for (size_t i = 0; i < snap.n; i++) {
		const char *name = snap.v[i].resource;

		snap.v[i].resource = NULL;
		if (resource || ret)
			continue;
		snap.v[i].resource = strdup(name);
		if (!snap.v[i].resource)
			ret = -ENOMEM;
	}
out_unlock:
	pthread_mutex_unlock(&lb->mutex);
	for (size_t i = 0; ret == 0 && i < snap.n; i++)
		if (fn(&snap.v[i], arg))
			break;
	/* copies or NULL once named; before, pointers into the table */
	for (size_t i = 0; named && i < snap.n; i++)
		free((char *)snap.v[i].resource);
	free(snap.v);
	return ret;
}

/*
 * An administrator breaks @resource: every lock goes, each owner is told
 * (before the freed locks are handed to waiters, so the old holder is
 * marked lost before anyone else can act), waiters are served.
 */
static int local_break_lock(struct dl_backend *be, const char *resource)
{
	struct local_backend *lb = local_of(be);
	struct local_grants grants = { 0 };
	struct local_resource *res;
	struct dl_range_lock *gone[2] = { NULL, NULL };
	size_t ngone[2] = { 0, 0 };

	pthread_mutex_lock(&lb->mutex);
	res = res_find(lb, resource);
	if (!res || (!res->sets[0].n && !res->sets[1].n)) {
		pthread_mutex_unlock(&lb->mutex);
		return -ENOENT;
	}
	for (int s = 0; s < 2; s++) {
		/* take the arrays whole: nothing to allocate, nothing to fail */
		gone[s] = res->sets[s].v;
		ngone[s] = res->sets[s].n;
		res->sets[s] = (struct dl_range_set){ 0 };
	}
	grant_waiters(lb, res, &grants);
	res_put(lb, res);
	pthread_mutex_unlock(&lb->mutex);

	for (int s = 0; s < 2; s++) {
		for (size_t i = 0; i < ngone[s]; i++) {
			bool seen = false;

			/* once per owner: an owner may hold several ranges */
			for (size_t j = 0; j < i; j++)
				seen |= gone[s][j].owner == gone[s][i].owner;
			if (!seen)
				lb->cb.lost(lb->cb.ctx, resource,
					    (enum dl_space)s, gone[s][i].owner,
					    -ECONNABORTED);
		}
		free(gone[s]);
	}
	for (size_t i = 0; i < grants.n; i++) {
		struct dl_grant gr = { .token = grants.v[i].token, .lease = 0 };

		lb->cb.granted(lb->cb.ctx, grants.v[i].wait_id, &gr);
	}
	free(grants.v);
	return 0;
}

static struct local_version **version_slot(struct local_backend *lb,
					   const char *name)
{
	struct local_version **p =
		&lb->vbuckets[name_hash(name) % LOCAL_BUCKETS];

	while (*p && strcmp((*p)->name, name) != 0)
		p = &(*p)->next;
	return p;
}

static int local_version(struct dl_backend *be, const char *resource,
			 struct dl_version *out)
{
	struct local_backend *lb = local_of(be);
	struct local_version *v;

	pthread_mutex_lock(&lb->mutex);
	v = *version_slot(lb, resource);
	*out = v ? v->v : (struct dl_version){ 0 };
	pthread_mutex_unlock(&lb->mutex);
	return 0;
}

static int local_bump(struct dl_backend *be, const char *resource,
		      struct dl_version *out)
{
	struct local_backend *lb = local_of(be);
	struct local_version **p;
	size_t len = strlen(resource);

	pthread_mutex_lock(&lb->mutex);
	p = version_slot(lb, resource);
	if (!*p) {
		*p = calloc(1, sizeof(**p) + len + 1);
		if (!*p) {
			pthread_mutex_unlock(&lb->mutex);
			return -ENOMEM;
		}
		memcpy((*p)->name, resource, len + 1);
	}
	(*p)->v.version++;
	snprintf((*p)->v.host, sizeof((*p)->v.host), "%s", lb->host);
	(*p)->v.changed_ms = dl_now_ms();
	*out = (*p)->v;
	pthread_mutex_unlock(&lb->mutex);
	return 0;
}

static int local_status(struct dl_backend *be, char *buf, size_t len)
{
	struct local_backend *lb = local_of(be);
	size_t nres, nwait;

	pthread_mutex_lock(&lb->mutex);
	nres = lb->nresources;
	nwait = lb->nwaiters;
	pthread_mutex_unlock(&lb->mutex);
	snprintf(buf, len, "health=ok resources=%zu waiters=%zu", nres, nwait);
	return 0;
}

const struct dl_backend_ops dl_local_ops = {
	.scheme = "local",
	.guarantee = "one host only: locks live in this daemon's memory",
	.inproc = true,
	.check_uri = local_check_uri,
	.open = local_open,
	.close = local_close,
	.lock = local_lock,
	.unlock = local_unlock,
	.cancel = local_cancel,
	.release_owner = local_release_owner,
	.getlk = local_getlk,
	.list = local_list,
	.status = local_status,
	.break_lock = local_break_lock,
	.version = local_version,
	.bump = local_bump,
};

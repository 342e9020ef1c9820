/*
 * fake_backend.c - the in-memory backend of the lock manager's unit test
 * (see fake_backend.h for what the test controls).
 *
 * Locking: fake_backend.mutex guards both entry lists, the counters, the
 * clock and the switches; hooks are set before the calls that run them.
 * Callbacks (cb->granted/failed/lost) and hooks run after the mutex is
 * dropped, on the thread of the call that decided them, as the contract
 * of backend.h requires of a real backend.
 */
#include "tests/unit/fake_backend.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fake_entry {
	struct fake_entry *next;
	char *resource;
	enum dl_space space;
	enum dl_lock_type type;
	uint64_t start, end;
	char host[DL_HOST_MAX];
	uint64_t owner;
	bool mine;
	uint32_t pid;
	uint64_t token;	  /* held entries */
	uint64_t wait_id; /* this host's queued requests */
	int64_t since_ms;
};

struct fake_hook {
	fake_hook_fn fn;
	void *arg;
};

/* a grant decided, its callback held back (fake_grant_later) */
struct fake_pending {
	struct fake_pending *next;
	uint64_t wait_id;
	struct dl_grant grant;
};

struct fake_backend {
	struct dl_backend base;
	struct dl_backend_cb cb;
	struct dl_lease *lease;
	char host[DL_HOST_MAX];
	pthread_mutex_t mutex;
	/* guarded by mutex: */
	struct fake_entry *held;  /* granted locks, every host */
	struct fake_entry *waits; /* queued requests, every host */
	uint64_t next_token;
	int64_t clock_ms;
	bool queue_all;
	int lock_error, unlock_error;
	struct fake_calls calls;
	struct fake_hook hooks[FAKE_NPOINTS];
	struct fake_pending *pending; /* in decision order */
};

static struct fake_backend *last;

static struct fake_backend *fake_of(struct dl_backend *be)
{
	return (struct fake_backend *)be;
}

static void hook(struct fake_backend *fb, enum fake_point at,
		 const char *resource, uint64_t wait_id)
{
	struct fake_hook h;

	pthread_mutex_lock(&fb->mutex);
	h = fb->hooks[at];
	pthread_mutex_unlock(&fb->mutex);
	if (h.fn)
		h.fn(fb, at, resource, wait_id, h.arg);
}

static struct fake_entry *entry_new(const struct dl_lock_req *req,
				    const char *host, bool mine)
{
	struct fake_entry *e = calloc(1, sizeof(*e));

	if (!e)
		abort();
	e->resource = strdup(req->resource);
	if (!e->resource)
		abort();
	e->space = req->space;
	e->type = req->type;
	e->start = req->start;
	e->end = req->end;
	snprintf(e->host, sizeof(e->host), "%s", host);
	e->owner = req->owner;
	e->mine = mine;
	e->pid = req->pid;
	return e;
}

static void entry_free(struct fake_entry *e)
{
	free(e->resource);
	free(e);
}

static bool same_owner(const struct fake_entry *e, const struct dl_lock_req *r)
{
	return e->mine && e->owner == r->owner;
}

/* the first held lock that conflicts with @r; mutex held */
static struct fake_entry *conflict(struct fake_backend *fb,
				   const struct dl_lock_req *r)
{
	for (struct fake_entry *e = fb->held; e; e = e->next)
		if (e->space == r->space && !same_owner(e, r) &&
		    strcmp(e->resource, r->resource) == 0 &&
		    range_overlap(e->start, e->end, r->start, r->end) &&
		    (e->type == DL_WRLCK || r->type == DL_WRLCK))
			return e;
	return NULL;
}

static void push(struct fake_entry **list, struct fake_entry *e)
{
	struct fake_entry **p = list;

	while (*p) /* keep arrival order */
		p = &(*p)->next;
	*p = e;
}

/* unlink and return the queued request @wait_id of this host; mutex held */
static struct fake_entry *take_wait(struct fake_backend *fb, uint64_t wait_id)
{
	for (struct fake_entry **p = &fb->waits; *p; p = &(*p)->next) {
		struct fake_entry *e = *p;

		if (e->mine && e->wait_id == wait_id) {
			*p = e->next;
			e->next = NULL;
			return e;
		}
	}
	return NULL;
}

static void info_of(const struct fake_backend *fb, const struct fake_entry *e,
		    bool waiting, struct dl_lock_info *info)
{
	*info = (struct dl_lock_info){
		.space = e->space,
		.type = e->type,
		.start = e->start,
		.end = e->end,
		.owner = e->owner,
		.mine = e->mine,
		.waiting = waiting,
		.pid = e->pid,
		.token = waiting ? 0 : e->token,
		.since_ms = e->since_ms,
		.resource = e->resource,
	};
	snprintf(info->host, sizeof(info->host), "%s", e->host);
}

/* ---- ops ---------------------------------------------------------------- */

static int fake_check_uri(const char *uri, char *err, size_t errlen)
{
	return 0;
}

static int fake_open(const struct dl_backend_conf *conf,
		     const struct dl_backend_cb *cb, struct dl_backend **out,
		     char *err, size_t errlen)
{
	struct fake_backend *fb = calloc(1, sizeof(*fb));

	if (!fb)
		return -ENOMEM;
	fb->base.ops = &fake_backend_ops;
	fb->cb = *cb;
	fb->lease = conf->lease;
	snprintf(fb->host, sizeof(fb->host), "%s", conf->host_id);
	pthread_mutex_init(&fb->mutex, NULL);
	fb->clock_ms = 1000000;
	/* a leased backend: gen 1, trusted until the test says otherwise */
	atomic_store(&fb->lease->gen, 1);
	atomic_store(&fb->lease->until_ms, INT64_MAX);
	last = fb;
	*out = &fb->base;
	return 0;
}

static void free_list(struct fake_entry *e)
{
	while (e) {
		struct fake_entry *next = e->next;

		entry_free(e);
		e = next;
	}
}

static void fake_close(struct dl_backend *be)
{
	struct fake_backend *fb = fake_of(be);

	free_list(fb->held);
	free_list(fb->waits);
	while (fb->pending) {
		struct fake_pending *p = fb->pending;

		fb->pending = p->next;
		free(p);
	}
	pthread_mutex_destroy(&fb->mutex);
	if (last == fb)
		last = NULL;
	free(fb);
}

static int fake_lock(struct dl_backend *be, const struct dl_lock_req *req,
		     struct dl_grant *grant)
{
	struct fake_backend *fb = fake_of(be);
	struct fake_entry *e;
	int ret;

	pthread_mutex_lock(&fb->mutex);
	fb->calls.lock++;
	if (fb->lock_error) {
		ret = fb->lock_error;
		fb->lock_error = 0;
		pthread_mutex_unlock(&fb->mutex);
		return ret;
	}
	if ((fb->queue_all && req->wait_id) || conflict(fb, req)) {
		if (!req->wait_id) {
			pthread_mutex_unlock(&fb->mutex);
			return -EAGAIN;
		}
		e = entry_new(req, fb->host, true);
		e->wait_id = req->wait_id;
		e->since_ms = fb->clock_ms++;
		push(&fb->waits, e);
		pthread_mutex_unlock(&fb->mutex);
		hook(fb, FAKE_AT_LOCK, req->resource, req->wait_id);
		return -EINPROGRESS;
	}
	e = entry_new(req, fb->host, true);
	e->token = ++fb->next_token;
	e->since_ms = fb->clock_ms++;
	push(&fb->held, e);
	grant->token = e->token;
	grant->lease = atomic_load(&fb->lease->gen);
	pthread_mutex_unlock(&fb->mutex);
	return 0;
}

static int fake_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct fake_backend *fb = fake_of(be);
	struct fake_entry **p;

	pthread_mutex_lock(&fb->mutex);
	fb->calls.unlock++;
	if (fb->unlock_error) {
		int err = fb->unlock_error;

		fb->unlock_error = 0;
		pthread_mutex_unlock(&fb->mutex);
		return err;
	}
	for (p = &fb->held; *p;) {
		struct fake_entry *e = *p;

		if (!same_owner(e, req) || e->space != req->space ||
		    strcmp(e->resource, req->resource) != 0 ||
		    !range_overlap(e->start, e->end, req->start, req->end)) {
			p = &e->next;
			continue;
		}
		if (e->start < req->start && e->end > req->end) {
			/* split: keep both sides */
			struct fake_entry *r = calloc(1, sizeof(*r));

			if (!r)
				abort();
			*r = *e;
			r->resource = strdup(e->resource);
			if (!r->resource)
				abort();
			r->start = req->end + 1;
			e->end = req->start - 1;
			r->next = e->next;
			e->next = r;
			p = &r->next;
		} else if (e->start < req->start) {
			e->end = req->start - 1;
			p = &e->next;
		} else if (e->end > req->end) {
			e->start = req->end + 1;
			p = &e->next;
		} else {
			*p = e->next;
			entry_free(e);
		}
	}
	pthread_mutex_unlock(&fb->mutex);
	hook(fb, FAKE_AT_UNLOCK, req->resource, 0);
	return 0;
}

static int fake_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct fake_backend *fb = fake_of(be);
	struct fake_entry *e;

	hook(fb, FAKE_AT_CANCEL, NULL, wait_id);
	pthread_mutex_lock(&fb->mutex);
	fb->calls.cancel++;
	e = take_wait(fb, wait_id);
	pthread_mutex_unlock(&fb->mutex);
	if (!e)
		return -ENOENT;
	entry_free(e);
	return 0;
}

static int fake_release_owner(struct dl_backend *be, const char *resource,
			      enum dl_space space, uint64_t owner,
			      uint64_t max_token)
{
	struct fake_backend *fb = fake_of(be);

	hook(fb, FAKE_AT_RELEASE, resource, 0);
	pthread_mutex_lock(&fb->mutex);
	fb->calls.release++;
	fb->calls.last_release_max_token = max_token;
	for (struct fake_entry **p = &fb->held; *p;) {
		struct fake_entry *e = *p;

		if (e->mine && e->owner == owner && e->space == space &&
		    e->token <= max_token &&
		    strcmp(e->resource, resource) == 0) {
			*p = e->next;
			entry_free(e);
		} else {
			p = &e->next;
		}
	}
	pthread_mutex_unlock(&fb->mutex);
	return 0;
}

static int fake_getlk(struct dl_backend *be, const struct dl_lock_req *req,
		      struct dl_lock_info *out)
{
	struct fake_backend *fb = fake_of(be);
	struct fake_entry *e;

	pthread_mutex_lock(&fb->mutex);
	fb->calls.getlk++;
	e = conflict(fb, req);
	if (e) {
		info_of(fb, e, false, out);
		out->resource = NULL; /* valid during a callback only */
	}
	pthread_mutex_unlock(&fb->mutex);
	return e ? 1 : 0;
}

static int fake_list(struct dl_backend *be, const char *resource,
		     dl_lock_info_fn fn, void *arg)
{
	struct fake_backend *fb = fake_of(be);
	struct dl_lock_info *v = NULL;
	size_t n = 0, cap = 0;
	bool stop = false;

	hook(fb, FAKE_AT_LIST, resource, 0);
	/* a snapshot, so that @fn runs without the mutex */
	pthread_mutex_lock(&fb->mutex);
	fb->calls.list++;
	if (!resource)
		fb->calls.list_all++;
	for (int pass = 0; pass < 2; pass++) {
		for (struct fake_entry *e = pass ? fb->waits : fb->held; e;
		     e = e->next) {
			if (resource && strcmp(resource, e->resource) != 0)
				continue;
			if (n == cap) {
				cap = cap ? cap * 2 : 8;
				v = realloc(v, cap * sizeof(*v));
				if (!v)
					abort();
			}
			info_of(fb, e, pass == 1, &v[n]);
			v[n].resource = strdup(e->resource);
			if (!v[n].resource)
				abort();
			n++;
		}
	}
	pthread_mutex_unlock(&fb->mutex);
	for (size_t i = 0; i < n; i++) {
		if (!stop && fn(&v[i], arg))
			stop = true; /* stopped early: not an error */
		free((char *)v[i].resource);
	}
	free(v);
	return 0;
}

static int fake_status(struct dl_backend *be, char *buf, size_t len)
{
	snprintf(buf, len, "health=ok");
	return 0;
}

const struct dl_backend_ops fake_backend_ops = {
	.scheme = "fake",
	.guarantee = "whatever the test decides",
	.shared = true,
	.check_uri = fake_check_uri,
	.open = fake_open,
	.close = fake_close,
	.lock = fake_lock,
	.unlock = fake_unlock,
	.cancel = fake_cancel,
	.release_owner = fake_release_owner,
	.getlk = fake_getlk,
	.list = fake_list,
	.status = fake_status,
	.break_lock = NULL,
};

/* ---- the test's controls ------------------------------------------------ */

struct fake_backend *fake_last(void)
{
	return last;
}

void fake_set_queue_all(struct fake_backend *fb, bool on)
{
	pthread_mutex_lock(&fb->mutex);
	fb->queue_all = on;
	pthread_mutex_unlock(&fb->mutex);
}

void fake_set_lock_error(struct fake_backend *fb, int err)
{
	pthread_mutex_lock(&fb->mutex);
	fb->lock_error = err;
	pthread_mutex_unlock(&fb->mutex);
}

void fake_set_unlock_error(struct fake_backend *fb, int err)
{
	pthread_mutex_lock(&fb->mutex);
	fb->unlock_error = err;
	pthread_mutex_unlock(&fb->mutex);
}

/* move queued @wait_id to the held locks; mutex held */
static int decide_grant(struct fake_backend *fb, uint64_t wait_id,
			struct dl_grant *g)
{
	struct fake_entry *e = take_wait(fb, wait_id);

	if (!e)
		return -ENOENT;
	e->wait_id = 0;
	e->token = ++fb->next_token;
	e->since_ms = fb->clock_ms++;
	push(&fb->held, e);
	g->token = e->token;
	g->lease = atomic_load(&fb->lease->gen);
	return 0;
}

int fake_grant(struct fake_backend *fb, uint64_t wait_id)
{
	struct dl_grant g;
	int ret;

	pthread_mutex_lock(&fb->mutex);
	ret = decide_grant(fb, wait_id, &g);
	pthread_mutex_unlock(&fb->mutex);
	if (ret == 0)
		fb->cb.granted(fb->cb.ctx, wait_id, &g);
	return ret;
}

int fake_grant_later(struct fake_backend *fb, uint64_t wait_id)
{
	struct fake_pending *p = calloc(1, sizeof(*p)), **tail;
	int ret;

	if (!p)
		abort();
	pthread_mutex_lock(&fb->mutex);
	ret = decide_grant(fb, wait_id, &p->grant);
	if (ret == 0) {
		p->wait_id = wait_id;
		for (tail = &fb->pending; *tail; tail = &(*tail)->next)
			;
		*tail = p;
		p = NULL;
	}
	pthread_mutex_unlock(&fb->mutex);
	free(p);
	return ret;
}

size_t fake_deliver(struct fake_backend *fb)
{
	struct fake_pending *list;
	size_t n = 0;

	pthread_mutex_lock(&fb->mutex);
	list = fb->pending;
	fb->pending = NULL;
	pthread_mutex_unlock(&fb->mutex);
	while (list) {
		struct fake_pending *p = list;

		list = p->next;
		fb->cb.granted(fb->cb.ctx, p->wait_id, &p->grant);
		free(p);
		n++;
	}
	return n;
}

int fake_fail(struct fake_backend *fb, uint64_t wait_id, int err)
{
	struct fake_entry *e;

	pthread_mutex_lock(&fb->mutex);
	e = take_wait(fb, wait_id);
	pthread_mutex_unlock(&fb->mutex);
	if (!e)
		return -ENOENT;
	entry_free(e);
	fb->cb.failed(fb->cb.ctx, wait_id, err);
	return 0;
}

size_t fake_lose(struct fake_backend *fb, const char *resource,
		 enum dl_space space, uint64_t owner, int err)
{
	size_t n = 0;

	pthread_mutex_lock(&fb->mutex);
	for (struct fake_entry **p = &fb->held; *p;) {
		struct fake_entry *e = *p;

		if (e->mine && e->owner == owner && e->space == space &&
		    strcmp(e->resource, resource) == 0) {
			*p = e->next;
			entry_free(e);
			n++;
		} else {
			p = &e->next;
		}
	}
	pthread_mutex_unlock(&fb->mutex);
	fb->cb.lost(fb->cb.ctx, resource, space, owner, err);
	return n;
}

void fake_add(struct fake_backend *fb, const struct fake_lock *l)
{
	struct dl_lock_req req = {
		.resource = l->resource,
		.space = l->space,
		.type = l->type,
		.start = l->start,
		.end = l->end,
		.owner = l->owner,
		.pid = l->pid,
	};
	struct fake_entry *e = entry_new(&req, l->host, false);

	pthread_mutex_lock(&fb->mutex);
	e->since_ms = l->since_ms ? l->since_ms : fb->clock_ms++;
	if (!l->waiting)
		e->token = ++fb->next_token;
	push(l->waiting ? &fb->waits : &fb->held, e);
	pthread_mutex_unlock(&fb->mutex);
}

size_t fake_remove(struct fake_backend *fb, const char *host, uint64_t owner,
		   bool waiting)
{
	size_t n = 0;

	pthread_mutex_lock(&fb->mutex);
	for (struct fake_entry **p = waiting ? &fb->waits : &fb->held; *p;) {
		struct fake_entry *e = *p;

		if (!e->mine && e->owner == owner &&
		    strcmp(e->host, host) == 0) {
			*p = e->next;
			entry_free(e);
			n++;
		} else {
			p = &e->next;
		}
	}
	pthread_mutex_unlock(&fb->mutex);
	return n;
}

size_t fake_nqueued(struct fake_backend *fb)
{
	size_t n = 0;

	pthread_mutex_lock(&fb->mutex);
	for (struct fake_entry *e = fb->waits; e; e = e->next)
		n += e->mine;
	pthread_mutex_unlock(&fb->mutex);
	return n;
}

bool fake_is_queued(struct fake_backend *fb, uint64_t wait_id)
{
	bool found = false;

	pthread_mutex_lock(&fb->mutex);
	for (struct fake_entry *e = fb->waits; e && !found; e = e->next)
		found = e->mine && e->wait_id == wait_id;
	pthread_mutex_unlock(&fb->mutex);
	return found;
}

size_t fake_nheld(struct fake_backend *fb, uint64_t owner)
{
	size_t n = 0;

	pthread_mutex_lock(&fb->mutex);
	for (struct fake_entry *e = fb->held; e; e = e->next)
		n += e->mine && (!owner || e->owner == owner);
	pthread_mutex_unlock(&fb->mutex);
	return n;
}

uint64_t fake_max_token(struct fake_backend *fb, const char *resource,
			uint64_t owner)
{
	uint64_t t = 0;

	pthread_mutex_lock(&fb->mutex);
	for (struct fake_entry *e = fb->held; e; e = e->next)
		if (e->mine && e->owner == owner &&
		    strcmp(e->resource, resource) == 0 && e->token > t)
			t = e->token;
	pthread_mutex_unlock(&fb->mutex);
	return t;
}

int64_t fake_clock(struct fake_backend *fb)
{
	int64_t t;

	pthread_mutex_lock(&fb->mutex);
	t = fb->clock_ms;
	pthread_mutex_unlock(&fb->mutex);
	return t;
}

void fake_set_lease(struct fake_backend *fb, uint64_t gen, int64_t until_ms)
{
	/* as a backend must: gen first, then until_ms */
	atomic_store(&fb->lease->gen, gen);
	atomic_store(&fb->lease->until_ms, until_ms);
}

struct fake_calls fake_calls(struct fake_backend *fb)
{
	struct fake_calls c;

	pthread_mutex_lock(&fb->mutex);
	c = fb->calls;
	pthread_mutex_unlock(&fb->mutex);
	return c;
}

void fake_set_hook(struct fake_backend *fb, enum fake_point at, fake_hook_fn fn,
		   void *arg)
{
	pthread_mutex_lock(&fb->mutex);
	fb->hooks[at].fn = fn;
	fb->hooks[at].arg = arg;
	pthread_mutex_unlock(&fb->mutex);
}

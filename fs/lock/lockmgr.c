/*
 * lockmgr.c - the lock manager's core: its objects, holds and waiters, the
 * life of a request from lockmgr_prepare() to its done(), releases, and
 * the manager's own life cycle (see lockmgr.h for the contract).
 *
 * Owns, all guarded by lockmgr.mutex (internal.h):
 *  - objs: one struct lm_obj per locked object (inode, or a control socket
 *    id), with its bound resource name and its holds;
 *  - holds: per (owner, lock space) on an object, "this owner may hold
 *    locks here", with the open files it locked through and the newest
 *    token granted (what a release may end).  A hold is made by every
 *    grant and removed when the owner's locks there are released in full,
 *    so a close of a file nobody locked costs no backend call;
 *  - waiters: every request between lockmgr_prepare() and its done(), in
 *    one list in arrival order and a hash by id (wait ids are unique and
 *    never reused), so finding one costs O(1) however many wait.  A waiter
 *    goes W_PREPARED -> W_SUBMITTING (in dl_backend_lock()) -> W_QUEUED
 *    (the backend queued it), and ends in exactly one place: the submitter
 *    (an immediate answer), cb_granted()/cb_failed(), or lm_cancel() once
 *    the backend's cancel() returned 0.  The first of them to find it in
 *    the hash under the mutex unlinks it; the others find nothing.
 *
 * The two hash tables (objects by id, waiters by id) are fixed arrays of
 * chains keyed by integers, written here rather than taken from uthash:
 * a chain is a pointer in the struct and a mix of the key (util/hash.h),
 * no allocation on insert (which could fail under the manager's mutex
 * with a lock already granted), and every walk of all holds (lost
 * notices, the deadlock walk) visits the buckets in order.
 *
 * Does not: walk the wait-for graph (deadlock.c), run timers (timer.c),
 * mark or check lost locks and leases (fence.c), or format text for
 * xattrs (inspect.c).  It never talks to FUSE or the socket: answers go
 * through done(), on whatever thread decided them.
 *
 * Threads that run this file:
 *  - front-end threads: FUSE workers (lockops.c: setlk, flock, flush,
 *    release; the FUSE interrupt callback, with libfuse's request lock
 *    held, for lockmgr_interrupt()) and the control socket's thread and
 *    workers (fs/ctl/) call prepare/submit/interrupt/unlock/getlk/release_*;
 *  - backend threads run cb_granted() and cb_failed(): a backend's own
 *    thread (redis subscriber/keeper, zk worker) or the thread of another
 *    call into the backend (an unlock or release that hands a lock over,
 *    a cancel that finds a grant), never with a backend lock held;
 *  - the timer thread runs lm_cancel() (lock_timeout);
 *  - lockmgr_create() and lockmgr_destroy() run on the main thread
 *    (main.c, directly or through lockops_init/destroy), destroy after
 *    the session and the control socket have stopped.
 * So done() runs on any of them: the submitter (an answer at once, a
 * deadlock found at submission, an interrupt before queueing), a backend
 * thread, the interrupting thread, the timer thread or the destroyer.
 *
 * Locking: lockmgr.mutex only, as a leaf (internal.h): each backend call
 * and each done() is made after dropping it, and whatever a call needs
 * across it (the object) is pinned first.
 *
 * lockmgr_destroy() stops the timer, cancels every queued wait (-ENOLCK),
 * releases every hold with DL_TOKEN_ALL, closes the backend, then frees
 * what is left without an answer: a request still W_PREPARED or
 * W_SUBMITTING (the caller's rule: none may be), or one whose cancel()
 * said -ENOENT and whose callback the backend's close() never made.
 */
#include "fs/lock/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "backend/util/clock.h"
#include "backend/util/hash.h"
#include "backend/util/log.h"

/* ---- objects and holds (mutex held) ---------------------------------- */

static struct lm_obj **obj_slot(struct lockmgr *lm, uint64_t obj)
{
	struct lm_obj **p = &lm->objs[dl_hash_mix64(obj, LM_BUCKET_BITS)];

	while (*p && (*p)->obj != obj)
		p = &(*p)->next;
	return p;
}

struct lm_obj *lm_obj_find(struct lockmgr *lm, uint64_t obj)
{
	return *obj_slot(lm, obj);
}

/* find or create; takes @name (freed when not needed), NULL on -ENOMEM */
static struct lm_obj *obj_get(struct lockmgr *lm, uint64_t obj, char *name)
{
	struct lm_obj **p = obj_slot(lm, obj);

	if (*p) {
		free(name);
		return *p;
	}
	*p = calloc(1, sizeof(**p));
	if (!*p) {
		free(name);
		return NULL;
	}
	(*p)->obj = obj;
	(*p)->resource = name;
	return *p;
}

/* free @o once no hold, waiter or call refers to it */
void lm_obj_put(struct lockmgr *lm, struct lm_obj *o)
{
	struct lm_obj **p;

	if (o->holds || o->pins)
		return;
	p = obj_slot(lm, o->obj);
	*p = o->next;
	free(o->resource);
	free(o);
}

struct lm_hold *lm_hold_find(struct lm_obj *o, uint64_t owner,
			     enum dl_space space)
{
	struct lm_hold *h;

	for (h = o->holds; h; h = h->next)
		if (h->owner == owner && h->space == space)
			return h;
	return NULL;
}

/* record a grant; uses *spare if a new hold is needed */
static void hold_add(struct lockmgr *lm, struct lm_obj *o,
		     const struct lockmgr_req *req,
		     const struct dl_grant *grant, struct lm_hold **spare)
{
	struct lm_hold *h = lm_hold_find(o, req->owner, req->space);
	uint64_t token = grant->token;

	/* a grant that raced with a loss stays lost: lockmgr_submit()
	 * refuses new requests of a lost hold until it is released */
	if (!h) {
		h = *spare;
		*spare = NULL;
		*h = (struct lm_hold){ .owner = req->owner,
				       .space = req->space,
				       .pid = req->pid };
		h->next = o->holds;
		o->holds = h;
		lm->nholds++;
	}
	if (token > h->max_token)
		h->max_token = token;
	if (!req->file || h->untracked)
		return;
	for (unsigned i = 0; i < h->nfiles; i++) {
		if (h->files[i] == req->file) {
			lm_file_note_grant(req->file, grant->lease, false);
			return;
		}
	}
	if (h->nfiles == LM_HOLD_FILES) {
		h->untracked = true;
	} else {
		h->files[h->nfiles++] = req->file;
		lm_file_note_grant(req->file, grant->lease, true);
	}
}

/* forget @file; true when it was the last file of a tracked hold */
static bool hold_forget_file(struct lm_hold *h, struct lockmgr_file *file)
{
	for (unsigned i = 0; i < h->nfiles; i++) {
		if (h->files[i] != file)
			continue;
		atomic_fetch_sub(&file->nholds, 1);
		h->files[i] = h->files[--h->nfiles];
		return h->nfiles == 0 && !h->untracked;
	}
	return false;
}

static void hold_remove(struct lockmgr *lm, struct lm_obj *o, struct lm_hold *h)
{
	struct lm_hold **p = &o->holds;

	while (*p != h)
		p = &(*p)->next;
	*p = h->next;
	if (h->lost)
		lm->nlost--;
	lm->nholds--;
	for (unsigned i = 0; i < h->nfiles; i++)
		atomic_fetch_sub(&h->files[i]->nholds, 1);
	free(h);
}

/* ---- waiters (mutex held) -------------------------------------------- */

static struct lm_waiter **waiter_slot(struct lockmgr *lm, uint64_t id)
{
	struct lm_waiter **p = &lm->wbuckets[id % LM_WBUCKETS];

	while (*p && (*p)->id != id)
		p = &(*p)->hnext;
	return p;
}

/* wait ids are consecutive: a plain modulo spreads them evenly */
struct lm_waiter *lm_waiter_find(struct lockmgr *lm, uint64_t id)
{
	return *waiter_slot(lm, id);
}

/* unlink @w and drop its pin; the caller calls done() and frees it */
void lm_waiter_unlink(struct lockmgr *lm, struct lm_waiter *w)
{
	struct lm_waiter **p = waiter_slot(lm, w->id);

	*p = w->hnext;
	w->prev->next = w->next;
	w->next->prev = w->prev;
	lm->nwaiters--;
	if (w->o) {
		w->o->pins--;
		lm_obj_put(lm, w->o);
		w->o = NULL;
	}
}

void lm_waiter_finish(struct lockmgr *lm, struct lm_waiter *w, int err)
{
	lm_metrics_request(w->req.space, w->req.ofd,
			   w->req.wait ? LM_KIND_LOCK : LM_KIND_TRYLOCK, err);
	if (err == 0)
		lm_metrics_granted_after(dl_mono_ns() - w->t0_ns);
	w->done(w->arg, err);
	free(w->spare);
	free(w);
}

void lm_req_to_backend(const struct lockmgr_req *r, const char *resource,
		       uint64_t wait_id, struct dl_lock_req *out)
{
	*out = (struct dl_lock_req){
		.resource = resource,
		.space = r->space,
		.type = r->type,
		.start = r->start,
		.end = r->end,
		.owner = r->owner,
		.pid = r->pid,
		.wait_id = wait_id,
	};
}

const char *lm_space_name(enum dl_space s)
{
	return s == DL_SPACE_FLOCK ? "flock" : "posix";
}

const char *lm_type_name(enum dl_lock_type t)
{
	return t == DL_WRLCK   ? "exclusive"
	       : t == DL_RDLCK ? "shared"
			       : "unlock";
}

/* ---- backend callbacks ------------------------------------------------ */

static void cb_granted(void *ctx, uint64_t wait_id,
		       const struct dl_grant *grant)
{
	struct lockmgr *lm = ctx;
	struct lm_waiter *w;

	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, wait_id);
	if (!w) {
		pthread_mutex_unlock(&lm->mutex);
		dl_log(DL_LOG_ERR, "grant for unknown wait %" PRIu64, wait_id);
		return;
	}
	hold_add(lm, w->o, &w->req, grant, &w->spare);
	if (w->req.coherent)
		*w->req.coherent = grant->coherent;
	dl_log(DL_LOG_DEBUG,
	       "granted %s %s %s [%" PRIu64 ",%" PRIu64 "] owner=%" PRIx64
	       " token=%" PRIu64 " lease=%" PRIu64 " after waiting",
	       w->o->resource, lm_space_name(w->req.space),
	       lm_type_name(w->req.type), w->req.start, w->req.end,
	       w->req.owner, grant->token, grant->lease);
	lm_waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	lm_waiter_finish(lm, w, 0);
}

static void cb_failed(void *ctx, uint64_t wait_id, int err)
{
	struct lockmgr *lm = ctx;
	struct lm_waiter *w;

	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, wait_id);
	if (w)
		lm_waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	if (w)
		lm_waiter_finish(lm, w, err);
}

/* ---- waits: cancel ---------------------------------------------------- */

/* end a queued wait with @err, unless the backend already decided it */
void lm_cancel(struct lockmgr *lm, uint64_t id, int err)
{
	struct lm_waiter *w;

	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, id);
	if (!w || w->state != W_QUEUED || w->cancelling) {
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	w->cancelling = true;
	pthread_mutex_unlock(&lm->mutex);

	if (LM_TIMED(LM_OP_CANCEL, dl_backend_cancel(lm->be, id)) != 0)
		return; /* granted or failed meanwhile: its callback answers */

	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, id);
	if (w)
		lm_waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	if (w) {
		dl_log(DL_LOG_DEBUG, "wait %" PRIu64 " ended: %s", id,
		       strerror(-err));
		lm_waiter_finish(lm, w, err);
	}
}

/* ---- requests ---------------------------------------------------------- */

uint64_t lockmgr_prepare(struct lockmgr *lm, const struct lockmgr_req *req,
			 lockmgr_done_fn done, void *arg)
{
	struct lm_waiter *w = calloc(1, sizeof(*w));
	uint64_t id;

	if (!w)
		return 0;
	w->spare = calloc(1, sizeof(*w->spare));
	if (!w->spare) {
		free(w);
		return 0;
	}
	w->req = *req;
	w->done = done;
	w->arg = arg;
	w->state = W_PREPARED;
	w->t0_ns = dl_mono_ns();
	pthread_mutex_lock(&lm->mutex);
	id = w->id = ++lm->next_id;
	w->prev = lm->waiters.prev;
	w->next = &lm->waiters;
	w->prev->next = w;
	lm->waiters.prev = w;
	w->hnext = lm->wbuckets[id % LM_WBUCKETS];
	lm->wbuckets[id % LM_WBUCKETS] = w;
	lm->nwaiters++;
	pthread_mutex_unlock(&lm->mutex);
	return id;
}

/*
 * find or bind the object of @obj and pin it; NULL with *err on failure.
 * An unbound object takes the name @resource, else asks conf.name.
 */
struct lm_obj *lm_pin_obj(struct lockmgr *lm, uint64_t obj,
			  const char *resource, int *err)
{
	struct lm_obj *o;
	char *name = NULL;

	pthread_mutex_lock(&lm->mutex);
	o = lm_obj_find(lm, obj);
	if (!o) {
		pthread_mutex_unlock(&lm->mutex);
		if (resource) {
			name = strdup(resource);
			*err = name ? 0 : -ENOMEM;
		} else if (lm->conf.name) {
			*err = lm->conf.name(lm->conf.name_ctx, obj, &name);
		} else {
			*err = -EINVAL;
		}
		if (*err < 0)
			return NULL;
		pthread_mutex_lock(&lm->mutex);
		o = obj_get(lm, obj, name);
		if (!o) {
			pthread_mutex_unlock(&lm->mutex);
			*err = -ENOMEM;
			return NULL;
		}
	}
	o->pins++;
	pthread_mutex_unlock(&lm->mutex);
	return o;
}

void lm_unpin_obj(struct lockmgr *lm, struct lm_obj *o)
{
	pthread_mutex_lock(&lm->mutex);
	o->pins--;
	lm_obj_put(lm, o);
	pthread_mutex_unlock(&lm->mutex);
}

void lockmgr_submit(struct lockmgr *lm, uint64_t id)
{
	struct dl_lock_req breq;
	struct lm_waiter *w;
	struct lm_obj *o;
	struct dl_grant grant = { .token = 0, .lease = 0 };
	int ret;

	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, id);
	/* state is read under the mutex: once submitted, a callback may
	 * complete and free the waiter at any moment */
	if (w && w->state != W_PREPARED)
		w = NULL;
	pthread_mutex_unlock(&lm->mutex);
	if (!w)
		return;

	/* w cannot go away before it is submitted: only we complete it */
	o = lm_pin_obj(lm, w->req.obj, w->req.resource, &ret);
	pthread_mutex_lock(&lm->mutex);
	if (!o || w->interrupted || lm->stopping) {
		ret = o ? -EINTR : ret;
	} else {
		struct lm_hold *h = lm_hold_find(o, w->req.owner, w->req.space);

		/* as NFS: a lost lock must be released (unlock or close)
		 * before its owner locks the file again */
		ret = h && h->lost ? -EIO : 0;
	}
	if (ret < 0) {
		if (o) {
			o->pins--;
			lm_obj_put(lm, o);
		}
		lm_waiter_unlink(lm, w);
		pthread_mutex_unlock(&lm->mutex);
		lm_waiter_finish(lm, w, ret);
		return;
	}
	w->o = o;		/* the pin now belongs to the waiter */
	w->req.resource = NULL; /* the caller's string: used only above */
	w->state = W_SUBMITTING;
	lm_req_to_backend(&w->req, o->resource, w->req.wait ? id : 0, &breq);
	breq.answer_id = id; /* a cache may answer a trylock later */
	pthread_mutex_unlock(&lm->mutex);

	ret = LM_TIMED(LM_OP_LOCK, dl_backend_lock(lm->be, &breq, &grant));

	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, id);
	if (!w) { /* granted or failed already, by a callback */
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	if (ret == -EINPROGRESS) {
		/* as Linux: OFD requests are left out of deadlock detection */
		bool check = w->req.space == DL_SPACE_POSIX && !w->req.ofd &&
			     w->req.wait;
		bool intr = w->interrupted;

		w->state = W_QUEUED;
		if (lm->conf.lock_timeout_s) {
			w->deadline = dl_mono_ms() +
				      (int64_t)lm->conf.lock_timeout_s * 1000;
			pthread_cond_signal(&lm->timer_cond);
		}
		if (check && lm->conf.deadlock_delay_ms > 0) {
			/* most waits end sooner: they cost no listing */
			w->dlcheck = dl_mono_ms() + lm->conf.deadlock_delay_ms;
			pthread_cond_signal(&lm->timer_cond);
			check = false;
		}
		dl_log(DL_LOG_DEBUG,
		       "queued %s %s %s [%" PRIu64 ",%" PRIu64
		       "] owner=%" PRIx64 " wait=%" PRIu64,
		       o->resource, lm_space_name(w->req.space),
		       lm_type_name(w->req.type), w->req.start, w->req.end,
		       w->req.owner, id);
		pthread_mutex_unlock(&lm->mutex);
		if (intr)
			lm_cancel(lm, id, -EINTR);
		else if (check)
			lm_deadlock_check(lm, id, false);
		return;
	}
	if (ret == 0) {
		hold_add(lm, o, &w->req, &grant, &w->spare);
		if (w->req.coherent)
			*w->req.coherent = grant.coherent;
	}
	dl_log(DL_LOG_DEBUG,
	       "%s %s %s %s [%" PRIu64 ",%" PRIu64 "] owner=%" PRIx64 " pid=%u:"
	       " %s",
	       ret == 0 ? "granted" : "refused", o->resource,
	       lm_space_name(w->req.space), lm_type_name(w->req.type),
	       w->req.start, w->req.end, w->req.owner, w->req.pid,
	       ret == 0 ? "ok" : strerror(-ret));
	lm_waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	lm_waiter_finish(lm, w, ret);
}

void lockmgr_interrupt(struct lockmgr *lm, uint64_t id)
{
	struct lm_waiter *w;
	bool queued;

	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, id);
	if (!w) {
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	w->interrupted = true;
	queued = w->state == W_QUEUED;
	pthread_mutex_unlock(&lm->mutex);
	if (queued)
		lm_cancel(lm, id, -EINTR);
	/* otherwise lockmgr_submit() sees the flag */
}

int lockmgr_unlock(struct lockmgr *lm, const struct lockmgr_req *req)
{
	struct dl_lock_req breq;
	uint64_t max_token;
	struct lm_hold *h;
	struct lm_obj *o;
	int ret;

	pthread_mutex_lock(&lm->mutex);
	o = lm_obj_find(lm, req->obj);
	h = o ? lm_hold_find(o, req->owner, req->space) : NULL;
	if (!h) {
		/* every grant makes a hold: no hold, nothing to unlock */
		pthread_mutex_unlock(&lm->mutex);
		return 0;
	}
	o->pins++;
	max_token = h->max_token;
	lm_req_to_backend(req, o->resource, 0, &breq);
	breq.type = DL_UNLCK;
	pthread_mutex_unlock(&lm->mutex);

	ret = LM_TIMED(LM_OP_UNLOCK, dl_backend_unlock(lm->be, &breq));
	lm_metrics_request(req->space, req->ofd, LM_KIND_UNLOCK, ret);
	if (ret == -ENOLCK) {
		/* the backend ends the range later, at a moment nobody
		 * knows: the owner's writes are no longer protected, so its
		 * lock is lost (fenced until it releases), as on a loss */
		lm_metrics_lost(LM_LOST_UNLOCK);
		lm_mark_lost(lm, o->resource, req->space, req->owner, ret);
	}
	pthread_mutex_lock(&lm->mutex);
	if (ret == 0 && req->start == 0 && req->end == DL_RANGE_EOF) {
		/* all gone, unless a grant of another thread came meanwhile */
		h = lm_hold_find(o, req->owner, req->space);
		if (h && h->max_token == max_token)
			hold_remove(lm, o, h);
	}
	o->pins--;
	lm_obj_put(lm, o);
	pthread_mutex_unlock(&lm->mutex);
	return ret;
}

int lockmgr_getlk(struct lockmgr *lm, const struct lockmgr_req *req,
		  struct dl_lock_info *info)
{
	struct dl_lock_req breq;
	struct lm_obj *o;
	int ret;

	o = lm_pin_obj(lm, req->obj, req->resource, &ret);
	if (!o)
		return ret;
	lm_req_to_backend(req, o->resource, 0, &breq);
	ret = LM_TIMED(LM_OP_GETLK, dl_backend_getlk(lm->be, &breq, info));
	lm_metrics_request(req->space, req->ofd, LM_KIND_GETLK,
			   ret < 0 ? ret : 0);
	lm_unpin_obj(lm, o);
	return ret;
}

/* release (space, owner) pairs of @o collected by the caller */
struct lm_release {
	enum dl_space space;
	uint64_t owner;
	uint64_t max_token;
};

static void lm_release_many(struct lockmgr *lm, struct lm_obj *o,
			    const struct lm_release *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		int ret = LM_TIMED(LM_OP_RELEASE,
				   dl_backend_release_owner(
					   lm->be, o->resource, v[i].space,
					   v[i].owner, v[i].max_token));

		if (ret < 0)
			dl_log(DL_LOG_WARNING,
			       "release %s %s owner=%" PRIx64 ": %s",
			       o->resource, lm_space_name(v[i].space),
			       v[i].owner, strerror(-ret));
	}
}

void lockmgr_release_owner(struct lockmgr *lm, uint64_t obj,
			   enum dl_space space, uint64_t owner)
{
	struct lm_release rel = { space, owner, 0 };
	struct lm_hold *h;
	struct lm_obj *o;

	pthread_mutex_lock(&lm->mutex);
	o = lm_obj_find(lm, obj);
	h = o ? lm_hold_find(o, owner, space) : NULL;
	if (!h) {
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	rel.max_token = h->max_token;
	hold_remove(lm, o, h);
	o->pins++;
	pthread_mutex_unlock(&lm->mutex);

	lm_release_many(lm, o, &rel, 1);
	lm_unpin_obj(lm, o);
}

void lockmgr_release_file(struct lockmgr *lm, uint64_t obj,
			  struct lockmgr_file *file)
{
	struct lm_release *rel = NULL;
	struct lm_hold *h, *next;
	struct lm_obj *o;
	size_t n = 0, cap = 0;

	pthread_mutex_lock(&lm->mutex);
	o = lm_obj_find(lm, obj);
	if (!o) {
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	for (h = o->holds; h; h = next) {
		next = h->next;
		if (!hold_forget_file(h, file))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 4;
			struct lm_release *p = realloc(rel, nc * sizeof(*p));

			if (!p) {
				/* keep the hold: the unmount releases it */
				h->untracked = true;
				continue;
			}
			rel = p;
			cap = nc;
		}
		rel[n++] =
			(struct lm_release){ h->space, h->owner, h->max_token };
		hold_remove(lm, o, h);
	}
	if (!n) {
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	o->pins++;
	pthread_mutex_unlock(&lm->mutex);

	lm_release_many(lm, o, rel, n);
	free(rel);
	lm_unpin_obj(lm, o);
}

bool lockmgr_shared(struct lockmgr *lm)
{
	return lm->be->ops->shared;
}

bool lockmgr_inproc(struct lockmgr *lm)
{
	return lm->be->ops->inproc;
}

/* ---- life cycle -------------------------------------------------------- */

int lockmgr_create(const struct lockmgr_conf *conf, struct lockmgr **out,
		   char *err, size_t errlen)
{
	return lockmgr_create_ops(conf, NULL, out, err, errlen);
}

int lockmgr_create_ops(const struct lockmgr_conf *conf,
		       const struct dl_backend_ops *ops, struct lockmgr **out,
		       char *err, size_t errlen)
{
	struct dl_backend_cb cb = { .granted = cb_granted,
				    .failed = cb_failed,
				    .lost = lm_cb_lost };
	pthread_condattr_t ca;
	struct lockmgr *lm;
	int ret;

	lm = calloc(1, sizeof(*lm));
	if (!lm)
		return -ENOMEM;
	lm->conf = *conf;
	lm->host_id = strdup(conf->backend.host_id);
	if (!lm->host_id) {
		ret = -ENOMEM;
		goto out_free;
	}
	lm->conf.backend.host_id = lm->host_id;
	if (getrandom(lm->owner_key, sizeof(lm->owner_key), 0) !=
	    (ssize_t)sizeof(lm->owner_key)) {
		ret = -errno;
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		goto out_free;
	}
	ret = lm_lease_create(lm);
	if (ret < 0)
		goto out_free;
	lm->conf.backend.lease = lm->lease;
	lm->waiters.next = lm->waiters.prev = &lm->waiters;
	pthread_mutex_init(&lm->mutex, NULL);
	pthread_mutex_init(&lm->hook_mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&lm->timer_cond, &ca);
	pthread_condattr_destroy(&ca);

	cb.ctx = lm;
	if (ops)
		ret = ops->open(&lm->conf.backend, &cb, &lm->be, err, errlen);
	else
		ret = dl_backend_open(&lm->conf.backend, &cb, &lm->be, err,
				      errlen);
	if (ret < 0)
		goto out_destroy;
	if (lm->conf.deadlock_delay_ms == 0)
		lm->conf.deadlock_delay_ms =
			lm->be->ops->inproc ? -1 : LM_DEADLOCK_DELAY_MS;
	ret = lm_timer_start(lm);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start timer thread: %s",
			 strerror(-ret));
		goto out_close;
	}
	*out = lm;
	return 0;

out_close:
	dl_backend_close(lm->be);
out_destroy:
	pthread_cond_destroy(&lm->timer_cond);
	pthread_mutex_destroy(&lm->mutex);
	pthread_mutex_destroy(&lm->hook_mutex);
	lm_lease_destroy(lm);
out_free:
	free(lm->host_id);
	free(lm);
	return ret;
}

void lockmgr_destroy(struct lockmgr *lm)
{
	lm_timer_stop(lm);

	/*
	 * End every wait with ENOLCK, not EINTR: no signal is pending, and
	 * the kernel would turn EINTR into ERESTARTSYS ("Unknown error 512").
	 */
	for (;;) {
		struct lm_waiter *w;
		uint64_t id = 0;

		pthread_mutex_lock(&lm->mutex);
		for (w = lm->waiters.next; w != &lm->waiters; w = w->next)
			if (w->state == W_QUEUED && !w->cancelling) {
				id = w->id;
				break;
			}
		pthread_mutex_unlock(&lm->mutex);
		if (!id)
			break;
		lm_cancel(lm, id, -ENOLCK);
	}

	/* release every lock this daemon holds */
	for (size_t b = 0; b < LM_BUCKETS; b++) {
		for (;;) {
			struct lm_release rel;
			struct lm_obj *o;

			pthread_mutex_lock(&lm->mutex);
			o = lm->objs[b];
			while (o && !o->holds)
				o = o->next;
			if (!o) {
				pthread_mutex_unlock(&lm->mutex);
				break;
			}
			rel = (struct lm_release){ o->holds->space,
						   o->holds->owner,
						   DL_TOKEN_ALL };
			hold_remove(lm, o, o->holds);
			o->pins++;
			pthread_mutex_unlock(&lm->mutex);
			lm_release_many(lm, o, &rel, 1);
			lm_unpin_obj(lm, o);
		}
	}
	dl_backend_close(lm->be);
	for (size_t b = 0; b < LM_BUCKETS; b++) {
		while (lm->objs[b]) {
			struct lm_obj *o = lm->objs[b];

			lm->objs[b] = o->next;
			free(o->resource);
			free(o);
		}
	}
	while (lm->waiters.next != &lm->waiters) {
		struct lm_waiter *w = lm->waiters.next;

		lm->waiters.next = w->next;
		free(w->spare);
		free(w);
	}
	pthread_cond_destroy(&lm->timer_cond);
	pthread_mutex_destroy(&lm->mutex);
	pthread_mutex_destroy(&lm->hook_mutex);
	lm_lease_destroy(lm);
	free(lm->host_id);
	free(lm);
}

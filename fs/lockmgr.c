/*
 * lockmgr.c - the per-host lock manager (see lockmgr.h for the contract).
 *
 * What it keeps, all guarded by lockmgr.mutex:
 *  - objs: one struct lm_obj per locked object (inode), with its bound
 *    resource name and its holds;
 *  - holds: per (owner, lock space) on an object, "this owner may hold
 *    locks here", with the open file it locked through.  A hold is made by
 *    every grant and removed when the owner's locks there are released in
 *    full, so a close of a file nobody locked costs no backend call;
 *  - waiters: every request between lockmgr_prepare() and its done(), in
 *    one list in arrival order and a hash by id (wait ids are unique and
 *    never reused), so finding one costs O(1) however many wait.
 *
 * Mutex order: lockmgr.mutex is a leaf with respect to the backend: it is
 * never held across a backend call, nor across done() (which replies to
 * FUSE), because backends call us back from unlocking threads.
 *
 * Deadlock detection follows Linux's posix_locks_deadlock(): only POSIX
 * record locks, a bounded walk of "owner waits for holder" edges.  Edges
 * come from the backend's list of holders; an owner's own waits come from
 * this host's waiters or, for another host's owner, from the backend's
 * list of every resource, so the graph spans hosts.
 */
#include "fs/lockmgr.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "backend/util/hash.h"
#include "backend/util/log.h"

#define LM_BUCKET_BITS	       10
#define LM_BUCKETS	       (1u << LM_BUCKET_BITS)
#define LM_WBUCKETS	       4096 /* wait ids, for O(1) lookups */
#define LM_DEADLOCK_MAX_OWNERS 64   /* bound on the wait-for graph walk */
/* a cycle's older waits look again after this (see lm_deadlock_check) */
#define LM_DEADLOCK_RECHECK_MS 2000
#define LM_HOLD_FILES	       4

struct lm_hold {
	struct lm_hold *next;
	uint64_t owner;
	enum dl_space space;
	/*
	 * The open files the owner locked through.  When the last of them is
	 * released the owner's locks here go too: that ends OFD locks (whose
	 * owner is the open file description) and is a no-op for a process's
	 * POSIX locks, which its closes have already dropped.  Past
	 * LM_HOLD_FILES files we stop tracking and rely on flush alone.
	 */
	struct lockmgr_file *files[LM_HOLD_FILES];
	unsigned nfiles;
	bool untracked;
	bool lost;    /* the backend no longer has its locks */
	uint32_t pid; /* the process that took it (lockmgr_pid_check) */
	int64_t lost_ms;
	uint64_t max_token; /* newest grant: what a release may end */
};

struct lm_obj {
	struct lm_obj *next; /* hash chain */
	uint64_t obj;
	char *resource;
	struct lm_hold *holds;
	unsigned pins; /* waiters and calls in flight that use resource */
};

enum lm_wstate {
	W_PREPARED,   /* registered, not yet sent */
	W_SUBMITTING, /* in the backend call */
	W_QUEUED,     /* the backend queued it: a callback will follow */
};

struct lm_waiter {
	struct lm_waiter *next, *prev; /* in arrival order */
	struct lm_waiter *hnext;       /* hash chain by id */
	uint64_t id;
	struct lockmgr_req req;
	struct lm_obj *o;      /* pinned from submit to completion */
	struct lm_hold *spare; /* allocated up front: a grant cannot fail */
	enum lm_wstate state;
	bool interrupted;
	bool cancelling;
	int64_t deadline; /* monotonic ms, 0: none */
	int64_t recheck;  /* monotonic ms of a deadlock re-check, 0: none */
	lockmgr_done_fn done;
	void *arg;
};

struct lockmgr {
	struct dl_backend *be;
	struct lockmgr_conf conf;
	char *host_id;
	/* the backend's lease fence, in a shared page when lease_fd >= 0 */
	struct dl_lease *lease;
	int lease_fd;
	uint64_t owner_key[2]; /* lockmgr_owner_shown(); set at create */
	pthread_mutex_t mutex;
	pthread_cond_t timer_cond; /* CLOCK_MONOTONIC */
	pthread_t timer;
	bool timer_started;
	/* guarded by mutex: */
	bool stopping;
	struct lm_obj *objs[LM_BUCKETS];
	struct lm_waiter waiters; /* list head */
	struct lm_waiter *wbuckets[LM_WBUCKETS];
	uint64_t next_id;
	size_t nwaiters;
	size_t nholds;
	atomic_size_t nlost; /* read without the mutex too */
	/* hook_mutex guards lost_hook and lost_ctx and is held while the hook
	 * runs, so that once lockmgr_set_lost_hook() returns the old hook is
	 * neither running nor about to; it is a leaf below nothing of ours */
	pthread_mutex_t hook_mutex;
	lockmgr_lost_fn lost_hook;
	void *lost_ctx;
};

/* ---- objects and holds (mutex held) ---------------------------------- */

static struct lm_obj **obj_slot(struct lockmgr *lm, uint64_t obj)
{
	struct lm_obj **p = &lm->objs[dl_hash_mix64(obj, LM_BUCKET_BITS)];

	while (*p && (*p)->obj != obj)
		p = &(*p)->next;
	return p;
}

static struct lm_obj *obj_find(struct lockmgr *lm, uint64_t obj)
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
static void obj_put(struct lockmgr *lm, struct lm_obj *o)
{
	struct lm_obj **p;

	if (o->holds || o->pins)
		return;
	p = obj_slot(lm, o->obj);
	*p = o->next;
	free(o->resource);
	free(o);
}

static struct lm_hold *hold_find(struct lm_obj *o, uint64_t owner,
				 enum dl_space space)
{
	struct lm_hold *h;

	for (h = o->holds; h; h = h->next)
		if (h->owner == owner && h->space == space)
			return h;
	return NULL;
}

/*
 * A lock granted under lease @lease is now held through @f: its writes are
 * fenced by that lease.  Of two leases the older one wins, so a file that
 * still holds a lock of a lease that ended stays fenced by it.
 */
static void file_note_grant(struct lockmgr_file *f, uint64_t lease, bool added)
{
	uint64_t cur = atomic_load(&f->lease);

	if (added && atomic_fetch_add(&f->nholds, 1) == 0)
		cur = 0;
	if (!cur || lease < cur)
		atomic_store(&f->lease, lease);
}

/* record a grant; uses *spare if a new hold is needed */
static void hold_add(struct lockmgr *lm, struct lm_obj *o,
		     const struct lockmgr_req *req,
		     const struct dl_grant *grant, struct lm_hold **spare)
{
	struct lm_hold *h = hold_find(o, req->owner, req->space);
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
			file_note_grant(req->file, grant->lease, false);
			return;
		}
	}
	if (h->nfiles == LM_HOLD_FILES) {
		h->untracked = true;
	} else {
		h->files[h->nfiles++] = req->file;
		file_note_grant(req->file, grant->lease, true);
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
static struct lm_waiter *waiter_find(struct lockmgr *lm, uint64_t id)
{
	return *waiter_slot(lm, id);
}

/* unlink @w and drop its pin; the caller calls done() and frees it */
static void waiter_unlink(struct lockmgr *lm, struct lm_waiter *w)
{
	struct lm_waiter **p = waiter_slot(lm, w->id);

	*p = w->hnext;
	w->prev->next = w->next;
	w->next->prev = w->prev;
	lm->nwaiters--;
	if (w->o) {
		w->o->pins--;
		obj_put(lm, w->o);
		w->o = NULL;
	}
}

static void waiter_finish(struct lockmgr *lm, struct lm_waiter *w, int err)
{
	w->done(w->arg, err);
	free(w->spare);
	free(w);
}

static void req_to_backend(const struct lockmgr_req *r, const char *resource,
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

static const char *space_name(enum dl_space s)
{
	return s == DL_SPACE_FLOCK ? "flock" : "posix";
}

static const char *type_name(enum dl_lock_type t)
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
	w = waiter_find(lm, wait_id);
	if (!w) {
		pthread_mutex_unlock(&lm->mutex);
		dl_log(DL_LOG_ERR, "grant for unknown wait %" PRIu64, wait_id);
		return;
	}
	hold_add(lm, w->o, &w->req, grant, &w->spare);
	dl_log(DL_LOG_DEBUG,
	       "granted %s %s %s [%" PRIu64 ",%" PRIu64 "] owner=%" PRIx64
	       " token=%" PRIu64 " lease=%" PRIu64 " after waiting",
	       w->o->resource, space_name(w->req.space), type_name(w->req.type),
	       w->req.start, w->req.end, w->req.owner, grant->token,
	       grant->lease);
	waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	waiter_finish(lm, w, 0);
}

static void cb_failed(void *ctx, uint64_t wait_id, int err)
{
	struct lockmgr *lm = ctx;
	struct lm_waiter *w;

	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, wait_id);
	if (w)
		waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	if (w)
		waiter_finish(lm, w, err);
}

static void cb_lost(void *ctx, const char *resource, enum dl_space space,
		    uint64_t owner, int err)
{
	struct lockmgr *lm = ctx;
	uint64_t objs[16];
	size_t nobjs = 0;

	pthread_mutex_lock(&lm->mutex);
	for (size_t b = 0; b < LM_BUCKETS; b++) {
		for (struct lm_obj *o = lm->objs[b]; o; o = o->next) {
			struct lm_hold *h;

			if (strcmp(o->resource, resource) != 0)
				continue;
			h = hold_find(o, owner, space);
			if (!h || h->lost)
				continue;
			h->lost = true;
			h->lost_ms = dl_now_ms();
			lm->nlost++;
			for (unsigned i = 0; i < h->nfiles; i++)
				atomic_store(&h->files[i]->lost, true);
			/* one resource is bound to very few objects */
			if (nobjs < sizeof(objs) / sizeof(objs[0]))
				objs[nobjs++] = o->obj;
			dl_log(DL_LOG_WARNING,
			       "lock lost: %s %s owner=%" PRIx64 ": %s; writes "
			       "through its descriptors now fail with EIO",
			       resource, space_name(space), owner,
			       strerror(-err));
		}
	}
	pthread_mutex_unlock(&lm->mutex);
	pthread_mutex_lock(&lm->hook_mutex);
	for (size_t i = 0; lm->lost_hook && i < nobjs; i++)
		lm->lost_hook(lm->lost_ctx, objs[i], space, owner);
	pthread_mutex_unlock(&lm->hook_mutex);
}

/* ---- waits: cancel, deadlock, timeout ---------------------------------- */

/* end a queued wait with @err, unless the backend already decided it */
static void lm_cancel(struct lockmgr *lm, uint64_t id, int err)
{
	struct lm_waiter *w;

	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, id);
	if (!w || w->state != W_QUEUED || w->cancelling) {
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	w->cancelling = true;
	pthread_mutex_unlock(&lm->mutex);

	if (dl_backend_cancel(lm->be, id) != 0)
		return; /* granted or failed meanwhile: its callback answers */

	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, id);
	if (w)
		waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	if (w) {
		dl_log(DL_LOG_DEBUG, "wait %" PRIu64 " ended: %s", id,
		       strerror(-err));
		waiter_finish(lm, w, err);
	}
}

/* an owner of the wait-for graph: this host's, or another host's */
struct lm_gowner {
	char host[DL_HOST_MAX];
	uint64_t owner;
	bool mine;
};

/* a request some owner waits with */
struct lm_gwait {
	struct lm_gowner who;
	char *resource;
	struct dl_lock_req req; /* space, type, range */
	int64_t since_ms;	/* its enqueue time, as the backend keeps it */
};

/* an owner the walk reached, and the wait of its parent it blocks */
struct lm_gnode {
	struct lm_gowner who;
	uint32_t pid;
	int parent;	   /* index in lm_graph.seen; -1: the requester */
	int64_t via_since; /* since_ms of the parent's wait */
};

/* one POSIX hold of this host, for telling a real grant from a listed one */
struct lm_ghold {
	char *resource;
	uint64_t owner;
};

struct lm_graph {
	struct lm_gnode seen[LM_DEADLOCK_MAX_OWNERS]; /* the BFS queue too */
	size_t nseen;
	struct lm_gwait *waits; /* every queued request: listed once, lazily */
	size_t nwaits, capwaits;
	bool listed;
	struct lm_ghold *holds; /* this host's live POSIX holds */
	size_t nholds;
	struct lm_gwait root; /* the request being checked */
	/* enqueue times of this host's waits: only once a cycle is found
	 * (they need the full backend listing, and only choose the victim) */
	bool timed;
};

/* the key that orders waits: the newest wait of a cycle is its victim */
struct lm_wkey {
	int64_t since_ms;
	const char *host;
	uint64_t owner;
};

static int wkey_cmp(const struct lm_wkey *a, const struct lm_wkey *b)
{
	int c;

	if (a->since_ms != b->since_ms)
		return a->since_ms < b->since_ms ? -1 : 1;
	c = strcmp(a->host, b->host);
	if (c)
		return c;
	return a->owner < b->owner ? -1 : a->owner > b->owner;
}

static bool gowner_eq(const struct lm_gowner *a, const struct lm_gowner *b)
{
	return a->owner == b->owner && a->mine == b->mine &&
	       (a->mine || strcmp(a->host, b->host) == 0);
}

static void graph_visit(struct lm_graph *g, const struct lm_gowner *who,
			uint32_t pid, int parent, int64_t via_since)
{
	for (size_t i = 0; i < g->nseen; i++)
		if (gowner_eq(&g->seen[i].who, who))
			return;
	if (g->nseen < LM_DEADLOCK_MAX_OWNERS) /* bounded, as in Linux */
		g->seen[g->nseen++] =
			(struct lm_gnode){ *who, pid, parent, via_since };
}

static int collect_wait(const struct dl_lock_info *info, void *arg)
{
	struct lm_graph *g = arg;
	struct lm_gwait *w;

	if (!info->waiting || !info->resource || info->space != DL_SPACE_POSIX)
		return 0;
	if (g->nwaits == g->capwaits) {
		size_t nc = g->capwaits ? g->capwaits * 2 : 16;
		void *p = realloc(g->waits, nc * sizeof(*g->waits));

		if (!p)
			return 1;
		g->waits = p;
		g->capwaits = nc;
	}
	w = &g->waits[g->nwaits];
	w->resource = strdup(info->resource);
	if (!w->resource)
		return 1;
	memset(&w->who, 0, sizeof(w->who));
	snprintf(w->who.host, sizeof(w->who.host), "%s", info->host);
	w->who.owner = info->owner;
	w->who.mine = info->mine;
	w->req = (struct dl_lock_req){ .space = info->space,
				       .type = info->type,
				       .start = info->start,
				       .end = info->end };
	w->since_ms = info->since_ms;
	g->nwaits++;
	return 0;
}

static void graph_list(struct lockmgr *lm, struct lm_graph *g)
{
	if (!g->listed) {
		g->listed = true;
		dl_backend_list(lm->be, NULL, collect_wait, g);
	}
}

/* the backend's enqueue time of this host's wait @w (newest if unknown,
 * or in a walk that does not need it) */
static int64_t graph_since(struct lockmgr *lm, struct lm_graph *g,
			   const struct lm_gwait *w)
{
	if (!g->timed)
		return INT64_MAX;
	graph_list(lm, g);
	for (size_t i = 0; i < g->nwaits; i++) {
		const struct lm_gwait *x = &g->waits[i];

		if (x->who.mine && x->who.owner == w->who.owner &&
		    x->req.start == w->req.start && x->req.end == w->req.end &&
		    x->req.type == w->req.type &&
		    strcmp(x->resource, w->resource) == 0)
			return x->since_ms;
	}
	return INT64_MAX;
}

/* the holders of @w's resource that block it join the walk; true when
 * one of them is the requester */
struct lm_probe {
	struct lm_graph *g;
	const struct lm_gwait *w;
	int from; /* index of the owner that waits with @w */
	bool found;
};

/* is this host's @owner really holding POSIX locks of @resource?  A
 * listing can show a queued request as granted before we know it is */
static bool graph_holds(const struct lm_graph *g, const char *resource,
			uint64_t owner)
{
	for (size_t i = 0; i < g->nholds; i++)
		if (g->holds[i].owner == owner &&
		    strcmp(g->holds[i].resource, resource) == 0)
			return true;
	return false;
}

static int probe_holder(const struct dl_lock_info *info, void *arg)
{
	struct lm_probe *p = arg;
	const struct dl_lock_req *r = &p->w->req;
	struct lm_gowner who = { .owner = info->owner, .mine = info->mine };

	snprintf(who.host, sizeof(who.host), "%s", info->host);
	if (info->waiting || info->space != r->space ||
	    !range_overlap(info->start, info->end, r->start, r->end) ||
	    (info->type != DL_WRLCK && r->type != DL_WRLCK) ||
	    gowner_eq(&who, &p->w->who))
		return 0;
	if (info->mine && !graph_holds(p->g, p->w->resource, info->owner))
		return 0;
	if (gowner_eq(&who, &p->g->seen[0].who)) {
		p->found = true;
		return 1;
	}
	graph_visit(p->g, &who, info->pid, p->from, p->w->since_ms);
	return 0;
}

/* the waits of seen[@k]: the request itself for the requester, this
 * host's queued requests for its other owners, else the backend's list */
static size_t graph_waits(struct lockmgr *lm, struct lm_graph *g, size_t k,
			  struct lm_gwait *out, size_t max)
{
	const struct lm_gowner *who = &g->seen[k].who;
	size_t n = 0;

	if (k == 0) {
		out[0] = g->root;
		out[0].resource = strdup(g->root.resource);
		return out[0].resource ? 1 : 0;
	}
	if (who->mine) {
		pthread_mutex_lock(&lm->mutex);
		for (struct lm_waiter *w = lm->waiters.next;
		     w != &lm->waiters && n < max; w = w->next) {
			if (w->req.owner != who->owner ||
			    w->state != W_QUEUED || w->req.ofd ||
			    w->req.space != DL_SPACE_POSIX || !w->o)
				continue;
			out[n].who = *who;
			out[n].resource = strdup(w->o->resource);
			req_to_backend(&w->req, NULL, 0, &out[n].req);
			if (out[n].resource)
				n++;
		}
		pthread_mutex_unlock(&lm->mutex);
		for (size_t i = 0; i < n; i++)
			out[i].since_ms = graph_since(lm, g, &out[i]);
		return n;
	}
	graph_list(lm, g);
	for (size_t i = 0; i < g->nwaits && n < max; i++) {
		if (!gowner_eq(&g->waits[i].who, who))
			continue;
		out[n] = g->waits[i];
		out[n].resource = strdup(g->waits[i].resource);
		if (out[n].resource)
			n++;
	}
	return n;
}

/*
 * The cycle that ends with seen[@k]'s wait @last (blocked by the
 * requester): is the requester's wait its newest, so its victim?  And is
 * it a cycle of processes at all: two owners of one process on one host
 * are an OFD lock and its process (the kernel names both by their lock
 * owner alone), and Linux leaves OFD locks out of deadlock detection.
 */
static void graph_cycle(struct lockmgr *lm, const struct lm_graph *g, size_t k,
			const struct lm_gwait *last, bool *victim, bool *real)
{
	struct lm_wkey root = { g->root.since_ms, lm->host_id,
				g->root.who.owner };
	struct lm_wkey newest = { last->since_ms,
				  last->who.mine ? lm->host_id : last->who.host,
				  last->who.owner };
	int path[LM_DEADLOCK_MAX_OWNERS];
	size_t n = 0;

	for (int i = (int)k; i >= 0 && n < LM_DEADLOCK_MAX_OWNERS;
	     i = g->seen[i].parent) {
		path[n++] = i;
		if (i > 0) {
			const struct lm_gnode *p = &g->seen[g->seen[i].parent];
			struct lm_wkey key = { g->seen[i].via_since,
					       p->who.mine ? lm->host_id
							   : p->who.host,
					       p->who.owner };

			if (g->seen[i].parent > 0 &&
			    wkey_cmp(&key, &newest) > 0)
				newest = key;
		}
	}
	*victim = wkey_cmp(&root, &newest) >= 0;
	*real = true;
	for (size_t i = 0; i < n; i++) {
		for (size_t j = i + 1; j < n; j++) {
			const struct lm_gnode *a = &g->seen[path[i]];
			const struct lm_gnode *b = &g->seen[path[j]];

			if (a->pid && a->pid == b->pid &&
			    a->who.mine == b->who.mine &&
			    (a->who.mine ||
			     strcmp(a->who.host, b->who.host) == 0))
				*real = false;
		}
	}
}

/* one breadth-first walk from the root; 1 when it closes a real cycle */
static int graph_walk(struct lockmgr *lm, struct lm_graph *g, bool *victim)
{
	int found = 0;

	for (size_t next = 0; next < g->nseen && !found; next++) {
		struct lm_gwait waits[8];
		size_t n = graph_waits(lm, g, next, waits, 8);

		for (size_t i = 0; i < n; i++) {
			struct lm_probe p = { g, &waits[i], (int)next, false };
			bool real = false;

			if (!found &&
			    dl_backend_list(lm->be, waits[i].resource,
					    probe_holder, &p) == 0 &&
			    p.found) {
				graph_cycle(lm, g, next, &waits[i], victim,
					    &real);
				found = real;
			}
			free(waits[i].resource);
		}
	}
	return found;
}

/*
 * Would queued request @id close a cycle of POSIX waits?  Walk breadth
 * first from its blockers: a blocker that itself waits contributes that
 * wait's blockers, until the requester shows up (a deadlock) or the bound
 * is reached (assume none, as Linux does).  The graph spans hosts: the
 * backend lists every holder, and the waits of other hosts' owners.
 * Returns 1 (a cycle; *victim: the request is its newest wait), 0, or -1
 * when the request is no longer queued.
 */
static int lm_find_cycle(struct lockmgr *lm, uint64_t id, bool *victim)
{
	struct lm_graph *g = calloc(1, sizeof(*g));
	int found = 0;
	struct lm_waiter *w;

	if (!g)
		return 0;
	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, id);
	if (!w || w->state != W_QUEUED || w->cancelling || !w->o) {
		pthread_mutex_unlock(&lm->mutex);
		found = -1;
		goto out;
	}
	g->root.who = (struct lm_gowner){ .owner = w->req.owner, .mine = true };
	g->root.resource = strdup(w->o->resource);
	req_to_backend(&w->req, NULL, 0, &g->root.req);
	g->seen[g->nseen++] =
		(struct lm_gnode){ g->root.who, w->req.pid, -1, 0 };
	/* this host's live POSIX holds (the mutex is a leaf: copy them) */
	for (size_t b = 0; b < LM_BUCKETS && g->root.resource; b++) {
		for (struct lm_obj *o = lm->objs[b]; o; o = o->next) {
			for (struct lm_hold *h = o->holds; h; h = h->next) {
				struct lm_ghold *p;

				if (h->space != DL_SPACE_POSIX || h->lost)
					continue;
				p = realloc(g->holds,
					    (g->nholds + 1) * sizeof(*p));
				if (!p)
					continue;
				g->holds = p;
				p[g->nholds].owner = h->owner;
				p[g->nholds].resource = strdup(o->resource);
				if (p[g->nholds].resource)
					g->nholds++;
			}
		}
	}
	pthread_mutex_unlock(&lm->mutex);
	if (!g->root.resource)
		goto out;
	/* first without enqueue times; a cycle found is walked again with
	 * them, to choose its victim */
	found = graph_walk(lm, g, victim);
	if (found > 0) {
		g->timed = true;
		g->nseen = 1;
		g->root.since_ms = graph_since(lm, g, &g->root);
		found = graph_walk(lm, g, victim);
	}
out:
	for (size_t i = 0; i < g->nwaits; i++)
		free(g->waits[i].resource);
	for (size_t i = 0; i < g->nholds; i++)
		free(g->holds[i].resource);
	free(g->waits);
	free(g->holds);
	free(g->root.resource);
	free(g);
	return found;
}

/*
 * Deadlock check of queued request @id (DESIGN §2: EDEADLK).  A cycle is
 * believed only when a second walk over fresh listings finds it again, so
 * listings taken at different moments cannot invent one.  Of the waits of
 * a cycle only the newest fails (every host orders them alike, by the
 * backend's enqueue time), so two hosts that close a cycle at the same
 * moment do not both fail; the others check once more a little later
 * (@final), in case the newest one's check ran before the cycle closed.
 */
static void lm_deadlock_check(struct lockmgr *lm, uint64_t id, bool final)
{
	bool victim = false;
	struct lm_waiter *w;

	if (lm_find_cycle(lm, id, &victim) <= 0)
		return;
	if (lm_find_cycle(lm, id, &victim) <= 0)
		return;
	if (victim || final) {
		dl_log(DL_LOG_DEBUG, "wait %" PRIu64 ": deadlock", id);
		lm_cancel(lm, id, -EDEADLK);
		return;
	}
	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, id);
	if (w && w->state == W_QUEUED && !w->cancelling) {
		w->recheck = dl_mono_ms() + LM_DEADLOCK_RECHECK_MS;
		pthread_cond_signal(&lm->timer_cond);
	}
	pthread_mutex_unlock(&lm->mutex);
}

/* lock_timeout expiries and deadlock re-checks */
static void *timer_main(void *arg)
{
	struct lockmgr *lm = arg;

	pthread_mutex_lock(&lm->mutex);
	while (!lm->stopping) {
		int64_t now = dl_mono_ms(), next = 0;
		uint64_t expired = 0, recheck = 0;
		struct lm_waiter *w;

		for (w = lm->waiters.next; w != &lm->waiters; w = w->next) {
			if (w->state != W_QUEUED || w->cancelling)
				continue;
			if (w->deadline && w->deadline <= now) {
				expired = w->id;
				break;
			}
			if (w->recheck && w->recheck <= now) {
				w->recheck = 0;
				recheck = w->id;
				break;
			}
			if (w->deadline && (!next || w->deadline < next))
				next = w->deadline;
			if (w->recheck && (!next || w->recheck < next))
				next = w->recheck;
		}
		if (expired || recheck) {
			pthread_mutex_unlock(&lm->mutex);
			if (expired)
				lm_cancel(lm, expired, -EDEADLK);
			else
				lm_deadlock_check(lm, recheck, true);
			pthread_mutex_lock(&lm->mutex);
			continue;
		}
		if (next) {
			struct timespec ts = { .tv_sec = next / 1000,
					       .tv_nsec = (next % 1000) *
							  1000000 };

			pthread_cond_timedwait(&lm->timer_cond, &lm->mutex,
					       &ts);
		} else {
			pthread_cond_wait(&lm->timer_cond, &lm->mutex);
		}
	}
	pthread_mutex_unlock(&lm->mutex);
	return NULL;
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
static struct lm_obj *lm_pin_obj(struct lockmgr *lm, uint64_t obj,
				 const char *resource, int *err)
{
	struct lm_obj *o;
	char *name = NULL;

	pthread_mutex_lock(&lm->mutex);
	o = obj_find(lm, obj);
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

static void lm_unpin_obj(struct lockmgr *lm, struct lm_obj *o)
{
	pthread_mutex_lock(&lm->mutex);
	o->pins--;
	obj_put(lm, o);
	pthread_mutex_unlock(&lm->mutex);
}

void lockmgr_submit(struct lockmgr *lm, uint64_t id)
{
	struct dl_lock_req breq;
	struct lm_waiter *w;
	struct lm_obj *o;
	struct dl_grant grant = { 0, 0 };
	int ret;

	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, id);
	pthread_mutex_unlock(&lm->mutex);
	if (!w || w->state != W_PREPARED)
		return;

	/* w cannot go away before it is submitted: only we complete it */
	o = lm_pin_obj(lm, w->req.obj, w->req.resource, &ret);
	pthread_mutex_lock(&lm->mutex);
	if (!o || w->interrupted || lm->stopping) {
		ret = o ? -EINTR : ret;
	} else {
		struct lm_hold *h = hold_find(o, w->req.owner, w->req.space);

		/* as NFS: a lost lock must be released (unlock or close)
		 * before its owner locks the file again */
		ret = h && h->lost ? -EIO : 0;
	}
	if (ret < 0) {
		if (o) {
			o->pins--;
			obj_put(lm, o);
		}
		waiter_unlink(lm, w);
		pthread_mutex_unlock(&lm->mutex);
		waiter_finish(lm, w, ret);
		return;
	}
	w->o = o;		/* the pin now belongs to the waiter */
	w->req.resource = NULL; /* the caller's string: used only above */
	w->state = W_SUBMITTING;
	req_to_backend(&w->req, o->resource, w->req.wait ? id : 0, &breq);
	pthread_mutex_unlock(&lm->mutex);

	ret = dl_backend_lock(lm->be, &breq, &grant);

	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, id);
	if (!w) { /* granted or failed already, by a callback */
		pthread_mutex_unlock(&lm->mutex);
		return;
	}
	if (ret == -EINPROGRESS) {
		/* as Linux: OFD requests are left out of deadlock detection */
		bool check = w->req.space == DL_SPACE_POSIX && !w->req.ofd;
		bool intr = w->interrupted;

		w->state = W_QUEUED;
		if (lm->conf.lock_timeout_s) {
			w->deadline = dl_mono_ms() +
				      (int64_t)lm->conf.lock_timeout_s * 1000;
			pthread_cond_signal(&lm->timer_cond);
		}
		dl_log(DL_LOG_DEBUG,
		       "queued %s %s %s [%" PRIu64 ",%" PRIu64
		       "] owner=%" PRIx64 " wait=%" PRIu64,
		       o->resource, space_name(w->req.space),
		       type_name(w->req.type), w->req.start, w->req.end,
		       w->req.owner, id);
		pthread_mutex_unlock(&lm->mutex);
		if (intr)
			lm_cancel(lm, id, -EINTR);
		else if (check)
			lm_deadlock_check(lm, id, false);
		return;
	}
	if (ret == 0)
		hold_add(lm, o, &w->req, &grant, &w->spare);
	dl_log(DL_LOG_DEBUG,
	       "%s %s %s %s [%" PRIu64 ",%" PRIu64 "] owner=%" PRIx64 " pid=%u:"
	       " %s",
	       ret == 0 ? "granted" : "refused", o->resource,
	       space_name(w->req.space), type_name(w->req.type), w->req.start,
	       w->req.end, w->req.owner, w->req.pid,
	       ret == 0 ? "ok" : strerror(-ret));
	waiter_unlink(lm, w);
	pthread_mutex_unlock(&lm->mutex);
	waiter_finish(lm, w, ret);
}

void lockmgr_interrupt(struct lockmgr *lm, uint64_t id)
{
	struct lm_waiter *w;
	bool queued;

	pthread_mutex_lock(&lm->mutex);
	w = waiter_find(lm, id);
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
	o = obj_find(lm, req->obj);
	h = o ? hold_find(o, req->owner, req->space) : NULL;
	if (!h) {
		/* every grant makes a hold: no hold, nothing to unlock */
		pthread_mutex_unlock(&lm->mutex);
		return 0;
	}
	o->pins++;
	max_token = h->max_token;
	req_to_backend(req, o->resource, 0, &breq);
	breq.type = DL_UNLCK;
	pthread_mutex_unlock(&lm->mutex);

	ret = dl_backend_unlock(lm->be, &breq);

	pthread_mutex_lock(&lm->mutex);
	if (ret == 0 && req->start == 0 && req->end == DL_RANGE_EOF) {
		/* all gone, unless a grant of another thread came meanwhile */
		h = hold_find(o, req->owner, req->space);
		if (h && h->max_token == max_token)
			hold_remove(lm, o, h);
	}
	o->pins--;
	obj_put(lm, o);
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
	req_to_backend(req, o->resource, 0, &breq);
	ret = dl_backend_getlk(lm->be, &breq, info);
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
		int ret = dl_backend_release_owner(lm->be, o->resource,
						   v[i].space, v[i].owner,
						   v[i].max_token);

		if (ret < 0)
			dl_log(DL_LOG_WARNING,
			       "release %s %s owner=%" PRIx64 ": %s",
			       o->resource, space_name(v[i].space), v[i].owner,
			       strerror(-ret));
	}
}

void lockmgr_release_owner(struct lockmgr *lm, uint64_t obj,
			   enum dl_space space, uint64_t owner)
{
	struct lm_release rel = { space, owner, 0 };
	struct lm_hold *h;
	struct lm_obj *o;

	pthread_mutex_lock(&lm->mutex);
	o = obj_find(lm, obj);
	h = o ? hold_find(o, owner, space) : NULL;
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
	o = obj_find(lm, obj);
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

/* ---- fencing writes ----------------------------------------------------- */

void lockmgr_file_init(struct lockmgr_file *file)
{
	atomic_init(&file->lost, false);
	atomic_init(&file->lease, 0);
	atomic_init(&file->nholds, 0);
}

/* lockmgr_pid_check() at time @now */
static int lm_pid_check(struct lockmgr *lm, uint32_t pid, int64_t now)
{
	uint64_t gen = atomic_load(&lm->lease->gen);
	bool trusted = dl_lease_trusted(lm->lease, gen, now);
	int ret = 0;

	if (!pid || (trusted && atomic_load(&lm->nlost) == 0))
		return 0;
	pthread_mutex_lock(&lm->mutex);
	for (size_t b = 0; b < LM_BUCKETS && !ret; b++)
		for (struct lm_obj *o = lm->objs[b]; o && !ret; o = o->next)
			for (struct lm_hold *h = o->holds; h; h = h->next)
				if (h->pid == pid && (h->lost || !trusted)) {
					ret = -EIO;
					break;
				}
	pthread_mutex_unlock(&lm->mutex);
	return ret;
}

int lockmgr_write_check(struct lockmgr *lm, struct lockmgr_file *file,
			uint32_t pid)
{
	int64_t now = dl_mono_ms();
	uint64_t lease;

	if (atomic_load(&file->lost))
		return -EIO;
	if (atomic_load(&file->nholds) == 0)
		return lm_pid_check(lm, pid, now);
	lease = atomic_load(&file->lease);
	if (dl_lease_trusted(lm->lease, lease, now))
		return lm_pid_check(lm, pid, now);
	/*
	 * The lease may already be gone (a freeze, a partition): another host
	 * can be granted the lock at any moment, whether or not a thread of
	 * ours has noticed.  Refuse, as the lost mark will once it is set.
	 */
	if (!atomic_exchange(&file->lost, true))
		dl_log(DL_LOG_WARNING,
		       "write refused: lease %" PRIu64 " of a lock held "
		       "through this file is no longer trusted",
		       lease);
	return -EIO;
}

int lockmgr_pid_check(struct lockmgr *lm, uint32_t pid)
{
	return lm_pid_check(lm, pid, dl_mono_ms());
}

const struct dl_lease *lockmgr_lease(struct lockmgr *lm)
{
	return lm->lease;
}

int lockmgr_lease_memfd(struct lockmgr *lm)
{
	return lm->lease_fd;
}

/* the lease fence lives in a page of its own, shareable with shim clients */
static int lease_create(struct lockmgr *lm)
{
	long pg = sysconf(_SC_PAGESIZE);
	void *m;
	int fd;

	lm->lease_fd = -1;
	fd = memfd_create("dlock-lease", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd >= 0 && ftruncate(fd, pg) == 0 &&
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) ==
		    0) {
		m = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, 0);
		if (m != MAP_FAILED) {
			lm->lease = m;
			lm->lease_fd = fd;
			goto init;
		}
	}
	if (fd >= 0)
		close(fd);
	lm->lease = calloc(1, sizeof(*lm->lease));
	if (!lm->lease)
		return -ENOMEM;
init:
	atomic_init(&lm->lease->gen, 0);
	atomic_init(&lm->lease->until_ms, INT64_MAX);
	return 0;
}

static void lease_destroy(struct lockmgr *lm)
{
	if (lm->lease_fd >= 0) {
		munmap(lm->lease, (size_t)sysconf(_SC_PAGESIZE));
		close(lm->lease_fd);
	} else {
		free(lm->lease);
	}
	lm->lease = NULL;
}

/* ---- inspection -------------------------------------------------------- */

#define LM_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define LM_SIPROUND                   \
	do {                          \
		v0 += v1;             \
		v1 = LM_ROTL(v1, 13); \
		v1 ^= v0;             \
		v0 = LM_ROTL(v0, 32); \
		v2 += v3;             \
		v3 = LM_ROTL(v3, 16); \
		v3 ^= v2;             \
		v0 += v3;             \
		v3 = LM_ROTL(v3, 21); \
		v3 ^= v0;             \
		v2 += v1;             \
		v1 = LM_ROTL(v1, 17); \
		v1 ^= v2;             \
		v2 = LM_ROTL(v2, 32); \
	} while (0)

/*
 * lockmgr_owner_shown(): SipHash-2-4 of an owner id under a key drawn at
 * start.  Stable while the daemon runs (two entries of one
 * owner show the same id), and tells nothing of our memory or counters.
 */
uint64_t lockmgr_owner_shown(struct lockmgr *lm, uint64_t owner)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ lm->owner_key[0];
	uint64_t v1 = 0x646f72616e646f6dULL ^ lm->owner_key[1];
	uint64_t v2 = 0x6c7967656e657261ULL ^ lm->owner_key[0];
	uint64_t v3 = 0x7465646279746573ULL ^ lm->owner_key[1];
	const uint64_t b = 8ULL << 56;

	v3 ^= owner;
	LM_SIPROUND;
	LM_SIPROUND;
	v0 ^= owner;
	v3 ^= b;
	LM_SIPROUND;
	LM_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	LM_SIPROUND;
	LM_SIPROUND;
	LM_SIPROUND;
	LM_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

struct lm_text {
	char *buf;
	size_t len, cap;
	int err;
};

static void text_add(struct lm_text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void text_add(struct lm_text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->err)
		return;
	for (;;) {
		size_t room = t->cap - t->len;

		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->err = -EINVAL;
			return;
		}
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t nc = (t->cap + (size_t)n + 1) * 2;
		char *p = realloc(t->buf, nc);

		if (!p) {
			t->err = -ENOMEM;
			return;
		}
		t->buf = p;
		t->cap = nc;
	}
}

static void text_time(struct lm_text *t, int64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char b[32];

	gmtime_r(&s, &tm);
	strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
	text_add(t, "%s.%03dZ", b, (int)(ms % 1000));
}

static void text_range(struct lm_text *t, uint64_t start, uint64_t end)
{
	if (end == DL_RANGE_EOF)
		text_add(t, " %" PRIu64 "-EOF", start);
	else
		text_add(t, " %" PRIu64 "-%" PRIu64, start, end);
}

struct lm_describe {
	struct lockmgr *lm;
	struct lm_text *t;
	bool waiters;
};

static int describe_one(const struct dl_lock_info *info, void *arg)
{
	struct lm_describe *d = arg;

	if (info->waiting != d->waiters)
		return 0;
	text_add(d->t, "%s %s", space_name(info->space), type_name(info->type));
	text_range(d->t, info->start, info->end);
	text_add(d->t, " host=%s pid=%u owner=%016" PRIx64, info->host,
		 info->pid, lockmgr_owner_shown(d->lm, info->owner));
	if (!info->waiting)
		text_add(d->t, " token=%" PRIu64, info->token);
	text_add(d->t, " since=");
	text_time(d->t, info->since_ms);
	text_add(d->t, "\n");
	return 0;
}

int lockmgr_describe(struct lockmgr *lm, uint64_t obj, bool waiters, char **out)
{
	struct lm_text t = { 0 };
	struct lm_describe d = { lm, &t, waiters };
	struct lm_obj *o;
	int ret;

	o = lm_pin_obj(lm, obj, NULL, &ret);
	if (!o)
		return ret;
	ret = dl_backend_list(lm->be, o->resource, describe_one, &d);
	if (!waiters) {
		pthread_mutex_lock(&lm->mutex);
		for (struct lm_hold *h = o->holds; h; h = h->next) {
			if (!h->lost)
				continue;
			text_add(&t,
				 "%s lost host=%s owner=%016" PRIx64 " since=",
				 space_name(h->space), lm->host_id,
				 lockmgr_owner_shown(lm, h->owner));
			text_time(&t, h->lost_ms);
			text_add(&t, "\n");
		}
		pthread_mutex_unlock(&lm->mutex);
	}
	lm_unpin_obj(lm, o);
	text_add(&t, "%s", "");
	if (ret == 0)
		ret = t.err;
	if (ret < 0) {
		free(t.buf);
		return ret;
	}
	*out = t.buf;
	return 0;
}

struct lm_token {
	uint32_t pid;
	uint64_t token;
};

static int token_one(const struct dl_lock_info *info, void *arg)
{
	struct lm_token *k = arg;

	if (!info->waiting && info->mine && info->pid == k->pid &&
	    info->token > k->token)
		k->token = info->token;
	return 0;
}

int lockmgr_token(struct lockmgr *lm, uint64_t obj, uint32_t pid,
		  uint64_t *token)
{
	struct lm_token k = { pid, 0 };
	struct lm_obj *o;
	int ret;

	o = lm_pin_obj(lm, obj, NULL, &ret);
	if (!o)
		return ret;
	ret = dl_backend_list(lm->be, o->resource, token_one, &k);
	lm_unpin_obj(lm, o);
	if (ret == 0 && k.token == 0)
		ret = -ENODATA;
	*token = k.token;
	return ret;
}

int lockmgr_status(struct lockmgr *lm, const char *backend_shown, char **out)
{
	struct lm_text t = { 0 };
	char bs[256];
	size_t nholds, nwaiters, nlost;
	int ret;

	ret = dl_backend_status(lm->be, bs, sizeof(bs));
	if (ret < 0)
		snprintf(bs, sizeof(bs), "health=down (%s)", strerror(-ret));
	pthread_mutex_lock(&lm->mutex);
	nholds = lm->nholds;
	nwaiters = lm->nwaiters;
	nlost = lm->nlost;
	pthread_mutex_unlock(&lm->mutex);
	text_add(&t,
		 "host_id=%s\nbackend=%s\nguarantee=%s\nbackend_status=%s\n"
		 "held=%zu waiting=%zu lost=%zu\nlock_timeout=%u\nversion=%s\n",
		 lm->host_id, backend_shown, lm->be->ops->guarantee, bs, nholds,
		 nwaiters, nlost, lm->conf.lock_timeout_s, DLOCKFS_VERSION);
	if (t.err) {
		free(t.buf);
		return t.err;
	}
	*out = t.buf;
	return 0;
}

bool lockmgr_shared(struct lockmgr *lm)
{
	return lm->be->ops->shared;
}

int lockmgr_list(struct lockmgr *lm, const char *resource, dl_lock_info_fn fn,
		 void *arg)
{
	return dl_backend_list(lm->be, resource, fn, arg);
}

int lockmgr_break(struct lockmgr *lm, const char *resource)
{
	int ret = dl_backend_break_lock(lm->be, resource);

	dl_log(ret == 0 ? DL_LOG_NOTICE : DL_LOG_WARNING,
	       "break %s by an administrator: %s", resource,
	       ret == 0 ? "done" : strerror(-ret));
	return ret;
}

void lockmgr_set_lost_hook(struct lockmgr *lm, lockmgr_lost_fn fn, void *ctx)
{
	pthread_mutex_lock(&lm->hook_mutex);
	lm->lost_ctx = ctx;
	lm->lost_hook = fn;
	pthread_mutex_unlock(&lm->hook_mutex);
}

/* ---- life cycle -------------------------------------------------------- */

int lockmgr_create(const struct lockmgr_conf *conf, struct lockmgr **out,
		   char *err, size_t errlen)
{
	struct dl_backend_cb cb = { .granted = cb_granted,
				    .failed = cb_failed,
				    .lost = cb_lost };
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
	ret = lease_create(lm);
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
	ret = dl_backend_open(&lm->conf.backend, &cb, &lm->be, err, errlen);
	if (ret < 0)
		goto out_destroy;
	ret = -pthread_create(&lm->timer, NULL, timer_main, lm);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start timer thread: %s",
			 strerror(-ret));
		goto out_close;
	}
	lm->timer_started = true;
	*out = lm;
	return 0;

out_close:
	dl_backend_close(lm->be);
out_destroy:
	pthread_cond_destroy(&lm->timer_cond);
	pthread_mutex_destroy(&lm->mutex);
	pthread_mutex_destroy(&lm->hook_mutex);
	lease_destroy(lm);
out_free:
	free(lm->host_id);
	free(lm);
	return ret;
}

void lockmgr_destroy(struct lockmgr *lm)
{
	pthread_mutex_lock(&lm->mutex);
	lm->stopping = true;
	pthread_cond_signal(&lm->timer_cond);
	pthread_mutex_unlock(&lm->mutex);
	if (lm->timer_started)
		pthread_join(lm->timer, NULL);

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
	lease_destroy(lm);
	free(lm->host_id);
	free(lm);
}

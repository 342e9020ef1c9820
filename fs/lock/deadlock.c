/*
 * deadlock.c - EDEADLK: the walk of the wait-for graph that a queued POSIX
 * request may close (DESIGN §2).
 *
 * Owns: the graph of one check (struct lm_graph, on the heap, private to
 * the checking thread), the choice of a cycle's victim, and the decision
 * to fail a wait with EDEADLK (through lm_cancel(), so a grant that wins
 * the race still answers 0).
 *
 * As Linux's posix_locks_deadlock(): only POSIX record locks (never flock,
 * never OFD locks: a request with req.ofd set is neither checked nor an
 * edge), a walk bounded at LM_DEADLOCK_MAX_OWNERS owners beyond which no
 * cycle is assumed.  Edges are "owner waits for holder": a wait's blockers
 * come from the backend's list of the resource's holders; an owner's waits
 * are the request itself for the requester, this host's queued requests
 * for its other owners, and, for another host's owner, the backend's list
 * of every resource (listed once per walk), so the graph spans hosts.  A
 * listed holder of this host that has no live POSIX hold here is skipped:
 * a listing may show a queued request as granted before its callback ran.
 * Two owners of one pid on one host are an OFD lock and its process, not
 * a cycle of processes.
 *
 * Listings are taken at different moments, so nothing here is a
 * snapshot: a cycle is believed only when a second walk over fresh
 * listings finds it again.  Of the waits of a cycle only the newest (the
 * backend's enqueue time, then host, then owner: every host orders them
 * alike) fails, so two hosts closing a cycle at once do not both fail;
 * the others look once more LM_DEADLOCK_RECHECK_MS later (the timer's
 * final re-check), in case the newest one's check ran before the cycle
 * closed.  Enqueue times of this host's waits need the full listing, so
 * they are read only once a cycle is found (a second, timed walk).
 *
 * Does not: keep any state between checks, fail another host's waits, or
 * detect cycles through flock locks.  Nor does it look again when the
 * graph changes later: a wait is checked when it is queued (and once more
 * by the timer if that check saw a cycle it was not the victim of), so a
 * cycle closed by a grant - a lock handed to a waiter that others wait
 * for - is seen by no check (Linux re-checks a waiter each time it wakes).
 *
 * Threads: on a remote backend lm_deadlock_check() runs on the timer
 * thread, once the wait has been queued for conf.deadlock_delay_ms (most
 * waits end sooner and never cost a listing; a deadlock is reported that
 * much later), and again there for a re-check.  On an in-process backend
 * (or with a negative delay) the first check runs on the thread that
 * submitted the request, right after the backend queued it.  Its backend
 * list() calls are round trips on a remote backend, made without any
 * mutex.
 *
 * Locking: lockmgr.mutex is taken only to copy out the requester's wait,
 * this host's live POSIX holds and its owners' queued waits (strings are
 * duplicated: nothing of the manager is used after the mutex is dropped),
 * and to schedule a re-check.  Never held across dl_backend_list().
 */
#include "fs/lock/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/util/clock.h"
#include "backend/util/log.h"

#define LM_DEADLOCK_MAX_OWNERS 64 /* bound on the wait-for graph walk */
/* a cycle's older waits look again after this (see lm_deadlock_check) */
#define LM_DEADLOCK_RECHECK_MS 2000

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
		LM_TIMED(LM_OP_LIST,
			 dl_backend_list(lm->be, NULL, collect_wait, g));
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
			lm_req_to_backend(&w->req, NULL, 0, &out[n].req);
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
			    LM_TIMED(LM_OP_LIST,
				     dl_backend_list(lm->be, waits[i].resource,
						     probe_holder, &p)) == 0 &&
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
	w = lm_waiter_find(lm, id);
	if (!w || w->state != W_QUEUED || w->cancelling || !w->o) {
		pthread_mutex_unlock(&lm->mutex);
		found = -1;
		goto out;
	}
	g->root.who = (struct lm_gowner){ .owner = w->req.owner, .mine = true };
	g->root.resource = strdup(w->o->resource);
	lm_req_to_backend(&w->req, NULL, 0, &g->root.req);
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
void lm_deadlock_check(struct lockmgr *lm, uint64_t id, bool final)
{
	bool victim = false;
	struct lm_waiter *w;

	if (lm_find_cycle(lm, id, &victim) <= 0)
		return;
	if (lm_find_cycle(lm, id, &victim) <= 0)
		return;
	if (victim || final) {
		char what[160] = "";

		pthread_mutex_lock(&lm->mutex);
		w = lm_waiter_find(lm, id);
		if (w && w->o && w->o->resource)
			snprintf(what, sizeof(what), " on %s (pid %u)",
				 w->o->resource, (unsigned)w->req.pid);
		pthread_mutex_unlock(&lm->mutex);
		dl_log(DL_LOG_NOTICE,
		       "deadlock: wait %" PRIu64 "%s refused with EDEADLK", id,
		       what);
		lm_metrics_deadlock();
		lm_cancel(lm, id, -EDEADLK);
		return;
	}
	pthread_mutex_lock(&lm->mutex);
	w = lm_waiter_find(lm, id);
	if (w && w->state == W_QUEUED && !w->cancelling) {
		w->recheck = dl_mono_ms() + LM_DEADLOCK_RECHECK_MS;
		pthread_cond_signal(&lm->timer_cond);
	}
	pthread_mutex_unlock(&lm->mutex);
}

/*
 * table.c - the Redis backend's bookkeeping: what this daemon holds
 * (held), its queued requests (waits), the work left for the keeper
 * (jobs), and the notes that carry callbacks out of the mutex.
 *
 * Owns: the hash tables rb->held (by resource, space and owner) and
 * rb->waits (by wait id), rb->nheld, rb->nwaits, rb->mask_refs, the job
 * list rb->jobs, the allocation of entries whose answers are ready in
 * advance (redis_wait_new(), redis_held_alloc(): once a request is
 * queued, answering it or reporting its loss needs no memory), and
 * redis_notes_run(), which makes the callbacks.  Does not: talk to Redis,
 * decide what an answer means, or run a thread; the lease fence that a
 * held mask change moves is computed by lease.c (redis_lease_publish()).
 *
 * Locking: the functions marked "mutex held" read or change the tables
 * and are called with rb->mutex held; the allocators and the frees take
 * no lock and are only given entries no other thread can reach (not yet
 * in a table, or unlinked from it).  redis_wait_insert() (the first wait)
 * and redis_job_add() broadcast rb->cond: the keeper has work.
 * redis_notes_run() is called with no mutex held, on the thread that
 * made the decisions, and makes rb->cb's callbacks there, in order.
 */
#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend/redis/internal.h"
#include "backend/util/hash.h"
#include "backend/util/log.h"

/* ---- notes: callbacks decided under the mutex, made after it ------------ */

static struct redis_note *redis_note_alloc(struct redis_backend *rb,
					   const char *resource)
{
	size_t len = resource ? strlen(resource) : 0;
	struct redis_note *n =
		redis_fault_calloc(&rb->fault, 1, sizeof(*n) + len + 1);

	if (n && len)
		memcpy(n->resource, resource, len + 1);
	return n;
}

static void redis_note_push(struct redis_note **list, struct redis_note *n)
{
	n->next = *list;
	*list = n;
}

/* make the callbacks, in the order they were decided; no mutex held */
void redis_notes_run(struct redis_backend *rb, struct redis_note *list)
{
	struct redis_note *rev = NULL;

	while (list) {
		struct redis_note *n = list;

		list = n->next;
		n->next = rev;
		rev = n;
	}
	while (rev) {
		struct redis_note *n = rev;

		rev = n->next;
		if (n->kind == RN_GRANTED) {
			struct dl_grant g = { .token = n->token,
					      .lease = n->lease };

			rb->cb.granted(rb->cb.ctx, n->wait_id, &g);
		} else if (n->kind == RN_FAILED)
			rb->cb.failed(rb->cb.ctx, n->wait_id, n->err);
		else
			rb->cb.lost(rb->cb.ctx, n->resource, n->space, n->owner,
				    n->err);
		free(n);
	}
}

/* ---- held (mutex held; not the allocator and the free) ------------------ */

static uint64_t redis_hash(const char *s, uint64_t x)
{
	return dl_fnv1a_str(DL_FNV_OFFSET ^ x, s);
}

struct redis_held **redis_held_slot(struct redis_backend *rb, const char *res,
				    enum dl_space space, uint64_t owner)
{
	struct redis_held **p =
		&rb->held[redis_hash(res, owner ^ space) % REDIS_BUCKETS];

	while (*p && ((*p)->owner != owner || (*p)->space != space ||
		      strcmp((*p)->resource, res) != 0))
		p = &(*p)->next;
	return p;
}

void redis_held_free(struct redis_held *h)
{
	if (h) {
		free(h->lost);
		free(h);
	}
}

/* an entry for held and its loss report, allocated before the request */
struct redis_held *redis_held_alloc(struct redis_backend *rb,
				    const struct dl_lock_req *req)
{
	size_t len = strlen(req->resource);
	struct redis_held *h =
		redis_fault_calloc(&rb->fault, 1, sizeof(*h) + len + 1);

	if (!h)
		return NULL;
	h->lost = redis_note_alloc(rb, req->resource);
	if (!h->lost) {
		free(h);
		return NULL;
	}
	h->space = req->space;
	h->owner = req->owner;
	memcpy(h->resource, req->resource, len + 1);
	return h;
}

void redis_mask_ref(struct redis_backend *rb, unsigned mask, int delta)
{
	rb->mask_refs[mask] += (unsigned)delta;
}

/* a grant of @token on nodes @mask; takes *spare when the entry is new */
void redis_held_add(struct redis_backend *rb, struct redis_held **spare,
		    const char *res, enum dl_space space, uint64_t owner,
		    unsigned mask, uint64_t token)
{
	struct redis_held **p = redis_held_slot(rb, res, space, owner), *h = *p;

	if (h) {
		/* pieces granted by different majorities: trust the common
		 * nodes only (conservative) */
		redis_mask_ref(rb, h->mask, -1);
		h->mask &= mask;
		redis_mask_ref(rb, h->mask, 1);
	} else {
		h = *spare;
		*spare = NULL;
		assert(h);
		h->next = NULL;
		h->mask = mask;
		*p = h;
		rb->nheld++;
		redis_mask_ref(rb, mask, 1);
	}
	if (token > h->max_token)
		h->max_token = token;
	if (rb->uri.nnodes > 1)
		redis_lease_publish(rb);
}

static void redis_held_unlink(struct redis_backend *rb, struct redis_held **p)
{
	struct redis_held *h = *p;

	*p = h->next;
	redis_mask_ref(rb, h->mask, -1);
	rb->nheld--;
}

/* forget a lock released for good, unless a newer grant than @max_token
 * came meanwhile */
void redis_held_remove(struct redis_backend *rb, const char *res,
		       enum dl_space space, uint64_t owner, uint64_t max_token)
{
	struct redis_held **p = redis_held_slot(rb, res, space, owner), *h = *p;

	if (!h || h->max_token > max_token)
		return;
	redis_held_unlink(rb, p);
	redis_held_free(h);
}

/* the lock is gone: report it through its ready note */
void redis_held_lose(struct redis_backend *rb, struct redis_held **p, int err,
		     struct redis_note **notes)
{
	struct redis_held *h = *p;

	redis_held_unlink(rb, p);
	h->lost->kind = RN_LOST;
	h->lost->space = h->space;
	h->lost->owner = h->owner;
	h->lost->err = err;
	redis_note_push(notes, h->lost);
	h->lost = NULL;
	redis_held_free(h);
}

/* ---- waits (mutex held; not the allocator and the free) ----------------- */

static struct redis_wait **redis_wait_slot(struct redis_backend *rb,
					   uint64_t id)
{
	struct redis_wait **p =
		&rb->waits[dl_hash_mix64(id, REDIS_BUCKET_BITS)];

	while (*p && (*p)->wait_id != id)
		p = &(*p)->next;
	return p;
}

struct redis_wait *redis_wait_find(struct redis_backend *rb, uint64_t id)
{
	return *redis_wait_slot(rb, id);
}

void redis_wait_insert(struct redis_backend *rb, struct redis_wait *w)
{
	struct redis_wait **p = redis_wait_slot(rb, w->wait_id);

	w->next = *p;
	*p = w;
	/* the first wait: the keeper may nap until its next renewal, but
	 * the once-a-second re-check starts now */
	if (rb->nwaits++ == 0)
		pthread_cond_broadcast(&rb->cond);
}

/* unlink @w, queued under @id, if it is in the table; true if it was.
 * Reads *w only when it is there: a wait being sent may have been freed
 * by redis_deliver_grant() meanwhile */
bool redis_wait_unlink_id(struct redis_backend *rb, uint64_t id,
			  struct redis_wait *w)
{
	struct redis_wait **p = redis_wait_slot(rb, id);

	if (*p != w)
		return false;
	*p = w->next;
	rb->nwaits--;
	return true;
}

/* unlink @w if it is in the table; true if it was */
bool redis_wait_unlink(struct redis_backend *rb, struct redis_wait *w)
{
	return redis_wait_unlink_id(rb, w->wait_id, w);
}

/* a wait with its answer and its held entry allocated: once queued, its
 * answer never needs memory */
struct redis_wait *redis_wait_new(struct redis_backend *rb,
				  const struct dl_lock_req *req)
{
	size_t len = strlen(req->resource);
	struct redis_wait *w =
		redis_fault_calloc(&rb->fault, 1, sizeof(*w) + len + 1);

	if (!w)
		return NULL;
	w->note = redis_note_alloc(rb, NULL);
	w->spare = redis_held_alloc(rb, req);
	if (!w->note || !w->spare) {
		free(w->note);
		redis_held_free(w->spare);
		free(w);
		return NULL;
	}
	memcpy(w->res, req->resource, len + 1);
	w->req = *req;
	w->req.resource = w->res;
	w->wait_id = req->wait_id;
	return w;
}

void redis_wait_free(struct redis_wait *w)
{
	if (w) {
		free(w->note);
		redis_held_free(w->spare);
		free(w);
	}
}

/* answer @w through its ready note (granted when @err is 0) */
void redis_wait_answer(struct redis_wait *w, uint64_t token, int err,
		       struct redis_note **notes)
{
	struct redis_note *n = w->note;

	assert(n);
	w->note = NULL;
	n->kind = err ? RN_FAILED : RN_GRANTED;
	n->wait_id = w->wait_id;
	n->token = token;
	n->lease = w->gen;
	n->err = err;
	redis_note_push(notes, n);
}

/* ---- jobs (mutex held) --------------------------------------------------- */

/* the lease name our records on node @node carry now; mutex held */
uint64_t redis_node_name(struct redis_backend *rb, unsigned node)
{
	return rb->nodes[node].name;
}

/* retry @req on node @node in the background, as lease name @name */
void redis_job_add(struct redis_backend *rb, enum redis_job_kind kind,
		   unsigned node, uint64_t name, const struct dl_lock_req *req,
		   uint64_t max_token)
{
	size_t len = strlen(req->resource);
	struct redis_job *j =
		redis_fault_calloc(&rb->fault, 1, sizeof(*j) + len + 1);

	if (!j) {
		dl_log(DL_LOG_ERR,
		       "redis: out of memory: %s left to expire "
		       "with the lease",
		       req->resource);
		return;
	}
	j->kind = kind;
	j->node = node;
	j->name = name;
	j->max_token = max_token;
	memcpy(j->res, req->resource, len + 1);
	j->req = *req;
	j->req.resource = j->res;
	j->next = rb->jobs;
	rb->jobs = j;
	rb->njobs++;
	rb->kick = true;
	pthread_cond_broadcast(&rb->cond);
}

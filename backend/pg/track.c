/*
 * track.c - what the PostgreSQL backend remembers between requests: the
 * locks this daemon holds (to report them lost), its queued requests (to
 * recognise their grants, whichever thread learns of them), work left
 * over from calls that got no answer, and the callbacks to make.
 *
 * The server is the truth; these tables only say what to tell the lock
 * manager.  Everything a request may have to report is allocated before
 * the request is sent, so once the server has decided, telling it never
 * needs memory: a wait carries its answer (a note) and its held entry; a
 * held entry carries its loss report.
 *
 * Locking: every function taking a struct pg_backend runs with pb->mutex
 * held, except pg_notes_run() (which must run without it: it calls the
 * lock manager back).  The *_alloc/new/free helpers touch no shared state.
 */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "backend/pg/internal.h"
#include "backend/util/hash.h"
#include "backend/util/log.h"

struct pg_note *pg_note_alloc(const char *resource)
{
	size_t len = resource ? strlen(resource) : 0;
	struct pg_note *n = calloc(1, sizeof(*n) + len + 1);

	if (n && len)
		memcpy(n->resource, resource, len + 1);
	return n;
}

void pg_note_push(struct pg_note **list, struct pg_note *n)
{
	n->next = *list;
	*list = n;
}

/* make the callbacks, in the order they were decided; no mutex held */
void pg_notes_run(struct pg_backend *pb, struct pg_note *list)
{
	struct pg_note *rev = NULL;

	while (list) {
		struct pg_note *n = list;

		list = n->next;
		n->next = rev;
		rev = n;
	}
	while (rev) {
		struct pg_note *n = rev;

		rev = n->next;
		if (n->kind == PN_GRANTED) {
			struct dl_grant g = { .token = n->token,
					      .lease = n->lease };

			pb->cb.granted(pb->cb.ctx, n->wait_id, &g);
		} else if (n->kind == PN_FAILED) {
			pb->cb.failed(pb->cb.ctx, n->wait_id, n->err);
		} else {
			pb->cb.lost(pb->cb.ctx, n->resource, n->space, n->owner,
				    n->err);
		}
		free(n);
	}
}

/* ---- held ----------------------------------------------------------------- */

struct pg_held **pg_held_slot(struct pg_backend *pb, const char *res,
			      enum dl_space space, uint64_t owner)
{
	uint64_t h = dl_fnv1a_str(DL_FNV_OFFSET ^ owner ^ space, res);
	struct pg_held **p = &pb->held[h % PG_BUCKETS];

	while (*p && ((*p)->owner != owner || (*p)->space != space ||
		      strcmp((*p)->resource, res) != 0))
		p = &(*p)->next;
	return p;
}

void pg_held_free(struct pg_held *h)
{
	if (h) {
		free(h->lost);
		free(h);
	}
}

struct pg_held *pg_held_alloc(const struct dl_lock_req *req)
{
	size_t len = strlen(req->resource);
	struct pg_held *h = calloc(1, sizeof(*h) + len + 1);

	if (!h)
		return NULL;
	h->lost = pg_note_alloc(req->resource);
	if (!h->lost) {
		free(h);
		return NULL;
	}
	h->space = req->space;
	h->owner = req->owner;
	memcpy(h->resource, req->resource, len + 1);
	return h;
}

/* a grant of @token; takes *spare when the entry is new */
void pg_held_add(struct pg_backend *pb, struct pg_held **spare, const char *res,
		 enum dl_space space, uint64_t owner, uint64_t token)
{
	struct pg_held **p = pg_held_slot(pb, res, space, owner), *h = *p;

	if (!h) {
		h = *spare;
		*spare = NULL;
		assert(h);
		h->next = NULL;
		*p = h;
		pb->nheld++;
	}
	if (token > h->max_token)
		h->max_token = token;
}

static void held_unlink(struct pg_backend *pb, struct pg_held **p)
{
	*p = (*p)->next;
	pb->nheld--;
}

/* forget a lock released for good, unless a newer grant than @max_token
 * came meanwhile */
void pg_held_remove(struct pg_backend *pb, const char *res, enum dl_space space,
		    uint64_t owner, uint64_t max_token)
{
	struct pg_held **p = pg_held_slot(pb, res, space, owner), *h = *p;

	if (!h || h->max_token > max_token)
		return;
	held_unlink(pb, p);
	pg_held_free(h);
}

/* the lock is gone: report it through its ready note */
void pg_held_lose(struct pg_backend *pb, struct pg_held **p, int err,
		  struct pg_note **notes)
{
	struct pg_held *h = *p;

	held_unlink(pb, p);
	h->lost->kind = PN_LOST;
	h->lost->space = h->space;
	h->lost->owner = h->owner;
	h->lost->err = err;
	pg_note_push(notes, h->lost);
	h->lost = NULL;
	pg_held_free(h);
}

/* ---- waits ---------------------------------------------------------------- */

static struct pg_wait **wait_slot(struct pg_backend *pb, uint64_t id)
{
	struct pg_wait **p = &pb->waits[dl_hash_mix64(id, 10)];

	while (*p && (*p)->wait_id != id)
		p = &(*p)->next;
	return p;
}

struct pg_wait *pg_wait_find(struct pg_backend *pb, uint64_t id)
{
	return *wait_slot(pb, id);
}

void pg_wait_insert(struct pg_backend *pb, struct pg_wait *w)
{
	struct pg_wait **p = wait_slot(pb, w->wait_id);

	w->next = *p;
	*p = w;
	/* the first wait: the keeper may nap until its next renewal, but
	 * the once-a-second re-check starts now */
	if (pb->nwaits++ == 0)
		pthread_cond_broadcast(&pb->cond);
}

/* unlink the wait of id @id if it is @w; @w is not read unless it is
 * there (it may have been freed: a grant delivered meanwhile) */
bool pg_wait_unlink_id(struct pg_backend *pb, uint64_t id,
		       const struct pg_wait *w)
{
	struct pg_wait **p = wait_slot(pb, id);

	if (*p != w)
		return false;
	*p = w->next;
	pb->nwaits--;
	return true;
}

bool pg_wait_unlink(struct pg_backend *pb, struct pg_wait *w)
{
	return pg_wait_unlink_id(pb, w->wait_id, w);
}

struct pg_wait *pg_wait_new(const struct dl_lock_req *req)
{
	size_t len = strlen(req->resource);
	struct pg_wait *w = calloc(1, sizeof(*w) + len + 1);

	if (!w)
		return NULL;
	w->note = pg_note_alloc(NULL);
	w->spare = pg_held_alloc(req);
	if (!w->note || !w->spare) {
		free(w->note);
		pg_held_free(w->spare);
		free(w);
		return NULL;
	}
	memcpy(w->res, req->resource, len + 1);
	w->req = *req;
	w->req.resource = w->res;
	w->wait_id = req->wait_id;
	return w;
}

void pg_wait_free(struct pg_wait *w)
{
	if (w) {
		free(w->note);
		pg_held_free(w->spare);
		free(w);
	}
}

/* answer @w through its ready note (granted when @err is 0) */
void pg_wait_answer(struct pg_wait *w, uint64_t token, int err,
		    struct pg_note **notes)
{
	struct pg_note *n = w->note;

	assert(n);
	w->note = NULL;
	n->kind = err ? PN_FAILED : PN_GRANTED;
	n->wait_id = w->wait_id;
	n->token = token;
	n->lease = w->gen;
	n->err = err;
	pg_note_push(notes, n);
}

/* ---- jobs ----------------------------------------------------------------- */

/* retry @req in the background, under lease @lease_id */
void pg_job_add(struct pg_backend *pb, enum pg_job_kind kind, int64_t lease_id,
		const struct dl_lock_req *req, uint64_t max_token)
{
	size_t len = strlen(req->resource);
	struct pg_job *j = calloc(1, sizeof(*j) + len + 1);

	if (!j) {
		dl_log(DL_LOG_ERR,
		       "postgresql: out of memory: %s left to expire with the "
		       "lease",
		       req->resource);
		return;
	}
	j->kind = kind;
	j->lease_id = lease_id;
	j->max_token = max_token;
	memcpy(j->res, req->resource, len + 1);
	j->req = *req;
	j->req.resource = j->res;
	j->next = pb->jobs;
	pb->jobs = j;
	pb->njobs++;
	pb->kick = true;
	pthread_cond_broadcast(&pb->cond);
}

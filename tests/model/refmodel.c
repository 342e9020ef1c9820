/*
 * refmodel.c - the reference of the lock contract (see refmodel.h).
 *
 * Written for clarity, not speed: every question is answered by a scan of
 * the whole state, and every change that frees bytes runs the waiters
 * again until nothing more can be granted.  The byte-range arithmetic is
 * backend/range.c's, so the model and the backends share exactly one
 * definition of merge, split and conversion; what the model adds is who
 * may be granted when.
 *
 * Invariants: m->v is sorted by seq; a granted node (FIFO) never has an
 * empty range set; the granted nodes of one owner are disjoint.
 */
#include "tests/model/refmodel.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void m_oom(void)
{
	fprintf(stderr, "model: out of memory\n");
	abort();
}

static void set_apply(struct dl_range_set *set, const struct dl_range_lock *l)
{
	if (range_set_apply(set, l) < 0)
		m_oom();
}

static struct dl_range_lock rl_make(uint64_t owner, enum dl_lock_type type,
				    uint64_t start, uint64_t end)
{
	return (struct dl_range_lock){
		.start = start, .end = end, .owner = owner, .type = type
	};
}

void m_init(struct m_model *m, enum m_policy policy)
{
	memset(m, 0, sizeof(*m));
	m->policy = policy;
}

static void node_drop(struct m_model *m, size_t i)
{
	range_set_free(&m->v[i].ranges);
	memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(m->v[0]));
	m->n--;
}

void m_free(struct m_model *m)
{
	while (m->n)
		node_drop(m, m->n - 1);
	free(m->v);
	for (int r = 0; r < M_MAX_RES; r++)
		for (int s = 0; s < 2; s++)
			range_set_free(&m->held[r][s]);
	free(m->granted);
	memset(m, 0, sizeof(*m));
}

static struct m_node *node_add(struct m_model *m, uint64_t key, int res,
			       enum dl_space space, enum dl_lock_type type,
			       uint64_t start, uint64_t end, uint64_t wait_id)
{
	struct m_node *nd;

	if (m->n == m->cap) {
		size_t cap = m->cap ? 2 * m->cap : 32;
		void *p = realloc(m->v, cap * sizeof(*m->v));

		if (!p)
			m_oom();
		m->v = p;
		m->cap = cap;
	}
	nd = &m->v[m->n++];
	*nd = (struct m_node){ .seq = ++m->seq,
			       .key = key,
			       .res = res,
			       .space = space,
			       .wait_id = wait_id };
	set_apply(&nd->ranges, &(struct dl_range_lock){ .start = start,
							.end = end,
							.type = type });
	return nd;
}

static void grant_note(struct m_model *m, uint64_t wait_id, bool second)
{
	if (!wait_id)
		return;
	if (m->ngranted == m->gcap) {
		size_t cap = m->gcap ? 2 * m->gcap : 16;
		void *p = realloc(m->granted, cap * sizeof(*m->granted));

		if (!p)
			m_oom();
		m->granted = p;
		m->gcap = cap;
	}
	m->granted[m->ngranted++] = (struct m_grant){ wait_id, second };
}

const struct m_grant *m_take_grants(struct m_model *m, size_t *n)
{
	*n = m->ngranted;
	m->ngranted = 0;
	return m->granted;
}

/* do two lists of pieces (of different owners) conflict? */
static bool sets_conflict(const struct dl_range_set *a,
			  const struct dl_range_set *b)
{
	for (size_t i = 0; i < a->n; i++)
		for (size_t j = 0; j < b->n; j++)
			if ((a->v[i].type == DL_WRLCK ||
			     b->v[j].type == DL_WRLCK) &&
			    range_overlap(a->v[i].start, a->v[i].end,
					  b->v[j].start, b->v[j].end))
				return true;
	return false;
}

static bool same_place(const struct m_node *a, int res, enum dl_space space)
{
	return a->res == res && a->space == space;
}

/* ------------------------------------------------------------- holders */

void m_holders(const struct m_model *m, int res, enum dl_space space,
	       struct dl_range_set *out)
{
	range_set_free(out);
	if (m->policy == M_POLICY_LINUX) {
		const struct dl_range_set *h = &m->held[res][space];

		for (size_t i = 0; i < h->n; i++)
			set_apply(out, &h->v[i]);
		return;
	}
	/* FIFO: an owner's granted nodes are disjoint; merged as POSIX does */
	for (size_t i = 0; i < m->n; i++) {
		const struct m_node *nd = &m->v[i];

		if (!nd->granted || !same_place(nd, res, space))
			continue;
		for (size_t k = 0; k < nd->ranges.n; k++) {
			struct dl_range_lock l = nd->ranges.v[k];

			l.owner = nd->key;
			set_apply(out, &l);
		}
	}
}

bool m_getlk(const struct m_model *m, uint64_t key, int res,
	     enum dl_space space, enum dl_lock_type type, uint64_t start,
	     uint64_t end)
{
	struct dl_range_set h = { 0 };
	struct dl_range_lock want = rl_make(key, type, start, end);
	bool c;

	m_holders(m, res, space, &h);
	c = range_set_find_conflict(&h, &want) != NULL;
	range_set_free(&h);
	return c;
}

bool m_waiting(const struct m_model *m, uint64_t wait_id)
{
	for (size_t i = 0; i < m->n; i++)
		if (!m->v[i].granted && m->v[i].wait_id == wait_id)
			return true;
	return false;
}

bool m_owner_waits(const struct m_model *m, uint64_t key)
{
	for (size_t i = 0; i < m->n; i++)
		if (!m->v[i].granted && m->v[i].key == key)
			return true;
	return false;
}

/* ------------------------------------------------------ LINUX policy */

static bool lx_blocked(const struct m_model *m, const struct m_node *w)
{
	struct dl_range_lock want = w->ranges.v[0];

	want.owner = w->key;
	return range_set_find_conflict(&m->held[w->res][w->space], &want);
}

/* grant the waiters of @res in arrival order, until none more can be */
static void lx_settle(struct m_model *m, int res)
{
	bool changed;
	int pass = 0;

	do {
		changed = false;
		pass++;
		for (size_t i = 0; i < m->n; i++) {
			struct m_node *w = &m->v[i];
			struct dl_range_lock l;

			if (w->res != res || lx_blocked(m, w))
				continue;
			l = w->ranges.v[0];
			l.owner = w->key;
			set_apply(&m->held[w->res][w->space], &l);
			grant_note(m, w->wait_id, pass > 1);
			node_drop(m, i);
			i--;
			changed = true;
		}
	} while (changed && !m->single_pass);
}

static int lx_lock(struct m_model *m, uint64_t key, int res,
		   enum dl_space space, enum dl_lock_type type, uint64_t start,
		   uint64_t end, uint64_t wait_id)
{
	struct dl_range_set *set = &m->held[res][space];
	struct dl_range_lock want = rl_make(key, type, start, end);

	if (space == DL_SPACE_FLOCK && range_set_owner_has(set, key)) {
		for (size_t i = 0; i < set->n; i++)
			if (set->v[i].owner == key && set->v[i].type == type)
				return 0;
		range_set_remove_owner(set, key, DL_TOKEN_ALL);
		lx_settle(m, res);
	}
	if (range_set_find_conflict(set, &want)) {
		if (!wait_id)
			return -EAGAIN;
		node_add(m, key, res, space, type, start, end, wait_id);
		return -EINPROGRESS;
	}
	set_apply(set, &want);
	/* a POSIX lock may convert to shared: the waiters look again */
	if (space == DL_SPACE_POSIX)
		lx_settle(m, res);
	return 0;
}

/* ------------------------------------------------------- FIFO policy */

/*
 * The rule for node @i: true when granted, with *jumped when exception
 * (2) was used (see refmodel.h).
 */
static bool ff_grantable(const struct m_model *m, size_t i, bool *jumped)
{
	const struct m_node *nd = &m->v[i];
	bool blocked = false;

	*jumped = false;
	for (size_t j = 0; j < m->n && !blocked; j++) {
		const struct m_node *e = &m->v[j];
		bool exempt = false;

		if (j == i || !same_place(e, nd->res, nd->space) ||
		    e->key == nd->key ||
		    !sets_conflict(&e->ranges, &nd->ranges))
			continue;
		if (e->seq > nd->seq) {
			blocked = e->jumped;
			continue;
		}
		for (size_t k = 0; k < m->n && !e->jumped && !exempt; k++) {
			const struct m_node *f = &m->v[k];

			/* a jumped node of ours blocks e wherever it is
			 * (backend/zk/owner.c folds an owner's bytes into its
			 * newest node and marks it jumped) */
			exempt = f->granted && f->key == nd->key &&
				 same_place(f, nd->res, nd->space) &&
				 (f->seq < e->seq || f->jumped) &&
				 sets_conflict(&f->ranges, &e->ranges);
		}
		if (exempt)
			*jumped = true;
		else
			blocked = true;
	}
	return !blocked;
}

/* unlock [start, end] in every granted node of @key; drop emptied ones */
static void ff_reduce(struct m_model *m, uint64_t key, int res,
		      enum dl_space space, uint64_t start, uint64_t end,
		      uint64_t except_seq)
{
	struct dl_range_lock ul = rl_make(0, DL_UNLCK, start, end);

	for (size_t i = 0; i < m->n; i++) {
		struct m_node *nd = &m->v[i];

		if (!nd->granted || nd->key != key || nd->seq == except_seq ||
		    !same_place(nd, res, space))
			continue;
		set_apply(&nd->ranges, &ul);
		if (nd->ranges.n == 0) {
			node_drop(m, i);
			i--;
		}
	}
}

/* node @i was granted: mark it, trim the owner's older nodes */
static void ff_finish(struct m_model *m, size_t i, bool jumped)
{
	struct m_node *nd = &m->v[i];
	struct dl_range_lock l = nd->ranges.v[0];
	uint64_t seq = nd->seq;

	nd->granted = true;
	nd->jumped = jumped;
	m->njumped += jumped;
	grant_note(m, nd->wait_id, false);
	ff_reduce(m, nd->key, nd->res, nd->space, l.start, l.end, seq);
}

static void ff_settle(struct m_model *m)
{
	bool changed;

	do {
		changed = false;
		for (size_t i = 0; i < m->n && !changed; i++) {
			bool jumped;

			if (m->v[i].granted || !ff_grantable(m, i, &jumped))
				continue;
			ff_finish(m, i, jumped);
			changed = true;
		}
	} while (changed);
}

/* the owner's locks, merged (owner 0) */
static void ff_owner_set(const struct m_model *m, uint64_t key, int res,
			 enum dl_space space, struct dl_range_set *out)
{
	for (size_t i = 0; i < m->n; i++) {
		const struct m_node *nd = &m->v[i];

		if (!nd->granted || nd->key != key ||
		    !same_place(nd, res, space))
			continue;
		for (size_t k = 0; k < nd->ranges.n; k++)
			set_apply(out, &nd->ranges.v[k]);
	}
}

enum ff_kind { FF_SATISFIED, FF_REDUCE, FF_GROW };

/* what a POSIX request means for an owner holding @set */
static enum ff_kind ff_classify(const struct dl_range_set *set,
				enum dl_lock_type type, uint64_t start,
				uint64_t end)
{
	uint64_t pos = start;
	bool same = true;

	for (size_t i = 0; i < set->n; i++) {
		const struct dl_range_lock *l = &set->v[i];

		if (l->end < pos)
			continue;
		if (l->start > end || l->start > pos)
			return FF_GROW;
		if (type == DL_WRLCK && l->type == DL_RDLCK)
			return FF_GROW;
		if (l->type != type)
			same = false;
		if (l->end >= end)
			return same ? FF_SATISFIED : FF_REDUCE;
		pos = l->end + 1;
	}
	return FF_GROW;
}

/* downgrade to shared every byte of [start, end] the owner holds */
static void ff_downgrade(struct m_model *m, uint64_t key, int res,
			 enum dl_space space, uint64_t start, uint64_t end)
{
	for (size_t i = 0; i < m->n; i++) {
		struct m_node *nd = &m->v[i];
		struct dl_range_set pieces = { 0 };

		if (!nd->granted || nd->key != key ||
		    !same_place(nd, res, space))
			continue;
		for (size_t k = 0; k < nd->ranges.n; k++) {
			struct dl_range_lock l = nd->ranges.v[k];

			if (l.type != DL_WRLCK ||
			    !range_overlap(l.start, l.end, start, end))
				continue;
			l.type = DL_RDLCK;
			if (l.start < start)
				l.start = start;
			if (l.end > end)
				l.end = end;
			set_apply(&pieces, &l);
		}
		for (size_t k = 0; k < pieces.n; k++)
			set_apply(&nd->ranges, &pieces.v[k]);
		range_set_free(&pieces);
	}
}

static int ff_lock(struct m_model *m, uint64_t key, int res,
		   enum dl_space space, enum dl_lock_type type, uint64_t start,
		   uint64_t end, uint64_t wait_id)
{
	struct dl_range_set own = { 0 };
	struct m_node *nd;
	bool jumped;

	ff_owner_set(m, key, res, space, &own);
	if (space == DL_SPACE_FLOCK && own.n) {
		bool same = own.v[0].type == type;

		range_set_free(&own);
		if (same)
			return 0;
		ff_reduce(m, key, res, space, 0, DL_RANGE_EOF, 0);
		ff_settle(m);
	} else if (space == DL_SPACE_POSIX) {
		enum ff_kind k = ff_classify(&own, type, start, end);

		range_set_free(&own);
		if (k == FF_SATISFIED)
			return 0;
		if (k == FF_REDUCE) {
			ff_downgrade(m, key, res, space, start, end);
			ff_settle(m);
			return 0;
		}
	}
	range_set_free(&own);
	nd = node_add(m, key, res, space, type, start, end, wait_id);
	if (ff_grantable(m, m->n - 1, &jumped)) {
		nd->wait_id = 0; /* granted at once: no callback */
		ff_finish(m, m->n - 1, jumped);
		ff_settle(m);
		return 0;
	}
	if (wait_id)
		return -EINPROGRESS;
	node_drop(m, m->n - 1);
	return -EAGAIN;
}

/* ------------------------------------------------------------- both */

int m_lock(struct m_model *m, uint64_t key, int res, enum dl_space space,
	   enum dl_lock_type type, uint64_t start, uint64_t end,
	   uint64_t wait_id)
{
	assert(res >= 0 && res < M_MAX_RES && start <= end);
	if (m->policy == M_POLICY_LINUX)
		return lx_lock(m, key, res, space, type, start, end, wait_id);
	return ff_lock(m, key, res, space, type, start, end, wait_id);
}

void m_unlock(struct m_model *m, uint64_t key, int res, enum dl_space space,
	      uint64_t start, uint64_t end)
{
	if (m->policy == M_POLICY_LINUX) {
		struct dl_range_lock ul = rl_make(key, DL_UNLCK, start, end);

		set_apply(&m->held[res][space], &ul);
		lx_settle(m, res);
		return;
	}
	ff_reduce(m, key, res, space, start, end, 0);
	ff_settle(m);
}

void m_release(struct m_model *m, uint64_t key, int res, enum dl_space space)
{
	if (m->policy == M_POLICY_LINUX) {
		size_t gone = range_set_remove_owner(&m->held[res][space], key,
						     DL_TOKEN_ALL);

		/* single pass as local.c: a release of nothing runs nobody */
		if (gone || !m->single_pass || m->noop_release_settles)
			lx_settle(m, res);
		return;
	}
	ff_reduce(m, key, res, space, 0, DL_RANGE_EOF, 0);
	ff_settle(m);
}

int m_cancel(struct m_model *m, uint64_t wait_id)
{
	for (size_t i = 0; i < m->n; i++) {
		if (m->v[i].granted || m->v[i].wait_id != wait_id)
			continue;
		node_drop(m, i);
		/* FIFO: a waiting node blocks later ones; LINUX: no-op */
		if (m->policy == M_POLICY_FIFO)
			ff_settle(m);
		return 0;
	}
	return -ENOENT;
}

/*
 * grant.c - which queued request nodes are granted: a snapshot of one
 * resource's children, and the rule applied to it.
 *
 * The rule.  A node N of owner O is granted when no node E of another
 * owner, same space and resource, with conflicting ranges, is earlier
 * (smaller sequence number) - ZooKeeper's FIFO - except:
 *  (1) O's own nodes never block N;
 *  (2) an earlier E that is blocked by a granted node F of O (F earlier
 *      than E, conflicting with it) does not block N: E waits for O anyway,
 *      so waiting for E would be a deadlock that Linux does not have (the
 *      classic case: O holds a read lock, E waits to write, O upgrades).
 * A node granted through (2) is marked "jumped" in its data before the
 * grant is reported (owner.c, zk_finish_grant), and a jumped node blocks
 * the later-created E's it overtook: without the mark, E would be granted
 * as soon as O trims F.  Exception (2) also holds for an E blocked by a
 * jumped node of O (a jumped node blocks every conflicting node, earlier
 * or later).
 *
 * Every evaluator decides only about its own nodes (zk_evaluate), and
 * only needs facts it can know reliably: other owners' nodes as they are
 * in ZooKeeper, and which of O's nodes are granted (local, stable while
 * O's entry is busy).  A blocked node is told which node to watch: its
 * nearest earlier blocker (or a later jumped one), so that one release
 * wakes only the requests that wait for it.  For inspection,
 * zk_classify_snap applies the same rule to everybody's nodes, our own
 * taken as this daemon knows them.
 *
 * Owns: the snapshot (zk_snapshot: children in one call, their data in
 * pipelined async gets), the rule, the choice of the blocker to watch.
 * Does not: write anything, watch anything (worker.c arms the watch),
 * apply a grant (owner.c), nor wait for lock-delay (session.c).
 *
 * Locking.  Never takes zb->mutex: zk_evaluate's caller holds the owner's
 * busy flag, which keeps ow->nodes still, and holds a session reference
 * for @zh.  zk_snapshot runs on a caller's or the worker's thread, never
 * on the completion thread (it waits for the completions); its gets complete on the library's completion thread in
 * zk_get_done, which fills only its own zk_child and takes only the
 * batch's mutex, to count down; the batch's mutex is never held with
 * zb->mutex.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/zk/internal.h"

/* ---- the snapshot ---------------------------------------------------- */

/* free a snapshot's nodes (the snapshot itself is the caller's) */
void zk_snap_free(struct zk_snap *s)
{
	for (size_t i = 0; i < s->n; i++) {
		range_set_free(&s->v[i].ranges);
		free(s->v[i].data);
	}
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

/* qsort: by sequence number */
static int zk_child_cmp(const void *a, const void *b)
{
	const struct zk_child *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* an outstanding batch of async gets */
struct zk_batch {
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	size_t pending;
};

struct zk_get_ctx {
	struct zk_batch *b;
	struct zk_child *c;
};

/* one get answered (completion thread): fill its child, count down */
static void zk_get_done(int rc, const char *value, int value_len,
			const struct Stat *stat, const void *data)
{
	const struct zk_get_ctx *g = data;
	struct zk_child *c = g->c;

	c->rc = rc;
	if (rc == ZOK) {
		c->st = *stat;
		/* NUL-terminated: zk_parse uses sscanf/strtoul on it */
		c->data = value_len > 0 ? malloc((size_t)value_len + 1) : NULL;
		if (c->data) {
			memcpy(c->data, value, (size_t)value_len);
			c->data[value_len] = '\0';
			c->len = value_len;
		}
	}
	pthread_mutex_lock(&g->b->mutex);
	if (--g->b->pending == 0)
		pthread_cond_signal(&g->b->cond);
	pthread_mutex_unlock(&g->b->mutex);
}

/*
 * Read the request nodes under @parent, sorted by sequence, skipping the
 * names in @skip (our own, already known): the children are @given, when
 * the caller read them already (in the round trip of its create), or
 * read here.  Their data is fetched with
 * pipelined async gets, in sequence order (one session's requests are
 * answered in order, so a later read never sees an older state).  Nodes
 * gone meanwhile or of another full name stay !valid.
 * Returns 0, -ENOENT (no parent), -ENOLCK, -ENOMEM.
 */
int zk_snapshot(zhandle_t *zh, const char *parent, const char *name_hex,
		const char *const *skip, size_t nskip,
		const struct String_vector *given, struct zk_snap *out)
{
	struct String_vector read = { 0 };
	const struct String_vector *kids = given ? given : &read;
	struct zk_batch b = { .pending = 0 };
	struct zk_get_ctx *ctx = NULL;
	char path[ZK_PATH_MAX];
	int rc, ret = 0;

	out->v = NULL;
	out->n = 0;
	if (!given) {
		rc = zoo_get_children(zh, parent, 0, &read);
		if (rc != ZOK)
			return zk_errno(rc);
	}
	if (kids->count == 0)
		goto out;
	out->v = calloc((size_t)kids->count, sizeof(*out->v));
	ctx = calloc((size_t)kids->count, sizeof(*ctx));
	if (!out->v || !ctx) {
		ret = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < kids->count; i++) {
		struct zk_child *c = &out->v[out->n];

		if (strlen(kids->data[i]) >= sizeof(c->name) ||
		    strncmp(kids->data[i], "q-", 2) != 0)
			continue;
		snprintf(c->name, sizeof(c->name), "%s", kids->data[i]);
		c->seq = zk_seq_of(c->name);
		c->rc = ZNONODE;
		out->n++;
	}
	qsort(out->v, out->n, sizeof(*out->v), zk_child_cmp);

	pthread_mutex_init(&b.mutex, NULL);
	pthread_cond_init(&b.cond, NULL);
	for (size_t i = 0; i < out->n; i++) {
		bool skipped = false;

		for (size_t k = 0; k < nskip && !skipped; k++)
			skipped = strcmp(skip[k], out->v[i].name) == 0;
		if (skipped)
			continue;
		snprintf(path, sizeof(path), "%s/%s", parent, out->v[i].name);
		ctx[i] = (struct zk_get_ctx){ &b, &out->v[i] };
		/* counted before it is sent, the mutex not held across the
		 * call: the completion thread takes it in zk_get_done */
		pthread_mutex_lock(&b.mutex);
		b.pending++;
		pthread_mutex_unlock(&b.mutex);
		rc = zoo_aget(zh, path, 0, zk_get_done, &ctx[i]);
		if (rc != ZOK) {
			pthread_mutex_lock(&b.mutex);
			b.pending--;
			pthread_mutex_unlock(&b.mutex);
			ret = zk_errno(rc);
			break;
		}
	}
	pthread_mutex_lock(&b.mutex);
	while (b.pending)
		pthread_cond_wait(&b.cond, &b.mutex);
	pthread_mutex_unlock(&b.mutex);
	pthread_cond_destroy(&b.cond);
	pthread_mutex_destroy(&b.mutex);

	for (size_t i = 0; i < out->n && ret == 0; i++) {
		struct zk_child *c = &out->v[i];

		if (c->rc == ZOK)
			zk_parse(c, name_hex);
		else if (c->rc != ZNONODE)
			ret = zk_errno(c->rc);
		free(c->data);
		c->data = NULL;
	}
out:
	free(ctx);
	deallocate_String_vector(&read);
	if (ret < 0)
		zk_snap_free(out);
	return ret;
}

/* ---- the rule -------------------------------------------------------- */

/* the base name of a path */
static const char *zk_base(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* do two lists of pieces (of different owners) conflict? */
static bool zk_ranges_conflict(const struct dl_range_set *a,
			       const struct dl_range_set *b)
{
	for (size_t i = 0; i < a->n; i++)
		for (size_t j = 0; j < b->n; j++) {
			const struct dl_range_lock *x = &a->v[i], *y = &b->v[j];

			if ((x->type == DL_WRLCK || y->type == DL_WRLCK) &&
			    range_overlap(x->start, x->end, y->start, y->end))
				return true;
		}
	return false;
}

/*
 * Decide about our request node @n of @ow (busy held), on the children
 * @kids of its resource (NULL: read them now): 1 granted (with
 * *jumped when exception (2) was used), 0 blocked (*blk: the node to
 * watch), or a negative errno.
 */
int zk_evaluate(struct zk_backend *zb, zhandle_t *zh, struct zk_owner *ow,
		const struct zk_node *n, const struct String_vector *kids,
		struct zk_blocker *blk, bool *jumped)
{
	const char *skip[64];
	size_t nskip = 0;
	struct zk_snap snap;
	const struct zk_child *best = NULL;
	int ret;

	*jumped = false;
	skip[nskip++] = zk_base(n->path);
	for (const struct zk_node *f = ow->nodes; f && nskip < 64; f = f->next)
		skip[nskip++] = zk_base(f->path);
	ret = zk_snapshot(zh, ow->parent, ow->name_hex, skip, nskip, kids,
			  &snap);
	if (ret == -ENOENT)
		return -ENOLCK; /* our own node's parent vanished: confused */
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < snap.n; i++) {
		const struct zk_child *e = &snap.v[i];
		bool exempt = false;

		if (!e->valid || e->space != (int)ow->space ||
		    (e->inc == zb->incarnation && e->owner == ow->owner))
			continue; /* (1): our own owner never blocks us */
		if (!zk_ranges_conflict(&e->ranges, &n->ranges))
			continue;
		if (e->seq > n->seq) {
			/* a later node only blocks when it overtook us */
			if (e->jumped && (!best || best->seq > n->seq))
				best = e;
			continue;
		}
		/* (2): e waits for a granted node of ours (an earlier
		 * one, or a jumped one, which blocks e wherever it is) */
		if (!e->jumped)
			for (const struct zk_node *f = ow->nodes; f && !exempt;
			     f = f->next)
				exempt = f->gen == n->gen &&
					 (f->seq < e->seq || f->jumped) &&
					 zk_ranges_conflict(&f->ranges,
							    &e->ranges);
		if (exempt) {
			*jumped = true;
			continue;
		}
		/* the nearest earlier blocker is the one to watch */
		if (!best || best->seq > n->seq || e->seq > best->seq)
			best = e;
	}
	if (best) {
		snprintf(blk->path, sizeof(blk->path), "%s/%s", ow->parent,
			 best->name);
		blk->version = best->st.version;
		blk->sid = best->st.ephemeralOwner;
	}
	zk_snap_free(&snap);
	return best ? 0 : 1;
}

/* ---- the rule, for inspection ---------------------------------------- */

/*
 * Grant status of every node of @snap, for inspection: our own nodes as
 * this daemon knows them (c->local, see zk_mark_local), the others by the
 * rule.  Our node is held only once its grant was processed here: by the
 * rule alone, a node whose predecessor just went would look granted while
 * its request still waits - a wait-for cycle that never existed.
 */
void zk_classify_snap(struct zk_snap *snap)
{
	for (size_t i = 0; i < snap->n; i++)
		if (snap->v[i].local >= 0)
			snap->v[i].granted = snap->v[i].local == 1;
	for (size_t i = 0; i < snap->n; i++) {
		struct zk_child *x = &snap->v[i];
		bool blocked = false;

		if (!x->valid || x->local >= 0)
			continue;
		if (x->jumped) {
			x->granted = true;
			continue;
		}
		for (size_t j = 0; j < snap->n && !blocked; j++) {
			struct zk_child *e = &snap->v[j];
			bool exempt = false;

			if (j == i || !e->valid || e->space != x->space ||
			    (e->inc == x->inc && e->owner == x->owner) ||
			    !zk_ranges_conflict(&e->ranges, &x->ranges))
				continue;
			if (j > i) {
				blocked = e->jumped;
				continue;
			}
			if (!e->granted)
				for (size_t k = 0; k < snap->n && !exempt;
				     k++) {
					struct zk_child *f = &snap->v[k];

					/* earlier and granted, or jumped */
					exempt = f->valid &&
						 ((k < j && f->granted) ||
						  f->jumped) &&
						 f->space == x->space &&
						 f->inc == x->inc &&
						 f->owner == x->owner &&
						 zk_ranges_conflict(&f->ranges,
								    &e->ranges);
				}
			blocked = !exempt;
		}
		x->granted = !blocked;
	}
}

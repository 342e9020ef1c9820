/*
 * owner.c - our owners and their granted nodes: the owner table, writing
 * the nodes (create, rewrite, delete), applying a grant, trimming.
 *
 * An owner entry is a (resource, space, owner) of this daemon; its node
 * list holds its granted request nodes (a waiting node belongs to its
 * waiter, worker.c, until granted).
 *
 * Ranges.  Each byte an owner holds is covered by exactly one of its
 * granted nodes.  Reductions (unlock, downgrade, release) rewrite or
 * delete the owner's nodes in place, so it keeps its queue position and no
 * later node can sneak in.  Growth (new bytes, upgrade) creates a new node
 * that waits by the rule (grant.c); once granted, it takes over the bytes
 * of the owner's older nodes (written first, marked jumped so it still
 * blocks whatever they blocked) and those go: an owner keeps one node per
 * resource, however many locks it adds (zk_finish_grant).  flock
 * conversion deletes the old node first, as Linux drops the old lock
 * first (ops.c).  Fencing token = the granting node's czxid (zxids grow
 * strictly cluster-wide); a piece merged into a newer grant carries its
 * token.  We empty a node's ranges, under the mutex, before we delete it,
 * so a vanished node that still has ranges was taken from us (a break,
 * worker.c).  A write that fails for want of a connection marks the node
 * dirty; the worker writes it once reconnected.  A create whose answer a
 * connection drop swallowed is remembered on zb->orphans (by its request
 * number) for the worker to delete.
 *
 * Owns: zb->owners and the entries' refs/busy/stale, zb->next_req, the
 * container fallback (zb->containers), the nodes' data in ZooKeeper.
 * Does not: decide whether a node is granted (grant.c), wait for anything
 * (worker.c), nor report to backend.h (ops.c answers, worker.c and
 * session.c call back).
 *
 * Locking.
 *  - zk_owner_acquire() takes a reference and the busy flag (waiting on
 *    zb->cond for it); zk_owner_release() gives both back.  Everything
 *    else here that writes ZooKeeper runs with the busy flag held and the
 *    mutex dropped, on a caller's or the worker's thread, with a session
 *    reference: ZooKeeper calls never under zb->mutex.  (zk_make_path also
 *    serves open, zk_register and bump, for CHROOT/r, CHROOT/s and
 *    CHROOT/v: no owner.)  zb->containers, zb->next_req and zb->orphans
 *    are read and written in short critical sections between the calls.
 *  - The busy holder changes the node list and, once a node is linked,
 *    its ranges only under zb->mutex, so that readers holding only the
 *    mutex (zk_abandon, zk_status, zk_mark_local, zk_held_find) see a
 *    consistent list; it reads both without the mutex.  n->dirty is the
 *    busy holder's (zk_reconcile reads it under the mutex, of idle owners
 *    only).
 *  - zk_*_locked and zk_owner_purge, zk_held_find: zb->mutex held.  An
 *    entry is freed by zk_owner_put_locked once unused, idle and empty.
 *  - zk_finish_grant arms the watch on the granted node without waiting
 *    for the answer (zk_held_arm_async); its events, and an answer that
 *    needs a look, reach the worker through zk_held_queue (no mutex held).
 *  - Every write of a node records the version it left in n->version
 *    (under zb->mutex once the node is linked), so that the worker tells
 *    our own writes from a poke (internal.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/util/hash.h"
#include "backend/util/log.h"
#include "backend/zk/internal.h"

#define ZK_CREATE_TRIES 5
#define ZK_FOLD_MAX	1024 /* pieces in one node (~48 bytes each) */

/* ---- owners ---------------------------------------------------------- */

/* the bucket of an owner entry */
static uint64_t zk_hash(const char *s, enum dl_space space, uint64_t owner)
{
	return dl_fnv1a_str(DL_FNV_OFFSET ^ owner ^ ((uint64_t)space << 63), s);
}

/* mutex held: the link to the entry of (@res, @space, @owner), or to
 * where it would go */
static struct zk_owner **zk_owner_slot(struct zk_backend *zb, const char *res,
				       enum dl_space space, uint64_t owner)
{
	struct zk_owner **p =
		&zb->owners[zk_hash(res, space, owner) % ZK_BUCKETS];

	while (*p && ((*p)->owner != owner || (*p)->space != space ||
		      strcmp((*p)->resource, res) != 0))
		p = &(*p)->next;
	return p;
}

/* free an unlinked node (NULL is fine) */
void zk_node_free(struct zk_node *n)
{
	if (!n)
		return;
	range_set_free(&n->ranges);
	free(n);
}

/* free the nodes of @ow not of generation @gen (mutex held, busy or idle) */
void zk_owner_purge(struct zk_owner *ow, unsigned gen)
{
	struct zk_node **p = &ow->nodes;

	while (*p) {
		struct zk_node *n = *p;

		if (n->gen != gen) {
			*p = n->next;
			zk_node_free(n);
		} else {
			p = &n->next;
		}
	}
}

/* find or make the entry of (@res, @space, @owner), take a ref and wait
 * until it is not busy, then mark it busy.  NULL on -ENOMEM. */
struct zk_owner *zk_owner_acquire(struct zk_backend *zb, const char *res,
				  enum dl_space space, uint64_t owner)
{
	struct zk_owner **p, *ow;

	pthread_mutex_lock(&zb->mutex);
	p = zk_owner_slot(zb, res, space, owner);
	ow = *p;
	if (!ow) {
		size_t len = strlen(res);
		char enc[ZK_NAME_BUF];

		ow = calloc(1, sizeof(*ow) + len + 1);
		if (ow)
			ow->name_hex = malloc(2 * len + 1);
		if (!ow || !ow->name_hex) {
			free(ow);
			pthread_mutex_unlock(&zb->mutex);
			return NULL;
		}
		memcpy(ow->resource, res, len + 1);
		zk_hex(res, len, ow->name_hex);
		zk_name_encode(res, len, enc);
		snprintf(ow->parent, sizeof(ow->parent), "%s/%s", zb->base_path,
			 enc);
		ow->space = space;
		ow->owner = owner;
		*p = ow;
	}
	ow->refs++;
	while (ow->busy)
		pthread_cond_wait(&zb->cond, &zb->mutex);
	ow->busy = true;
	pthread_mutex_unlock(&zb->mutex);
	return ow;
}

/* mutex held: drop a ref; free the entry when unused and empty */
void zk_owner_put_locked(struct zk_backend *zb, struct zk_owner *ow)
{
	struct zk_owner **p;

	if (--ow->refs || ow->busy || ow->nodes)
		return;
	p = zk_owner_slot(zb, ow->resource, ow->space, ow->owner);
	*p = ow->next;
	free(ow->name_hex);
	free(ow);
}

/* mutex held: clear busy, purging the nodes of an abandoned session */
void zk_owner_unbusy_locked(struct zk_backend *zb, struct zk_owner *ow)
{
	if (ow->stale) {
		zk_owner_purge(ow, zb->sess ? zb->sess->gen : 0);
		ow->stale = false;
	}
	ow->busy = false;
	pthread_cond_broadcast(&zb->cond);
}

/* end an operation: clear busy and drop the operation's ref */
void zk_owner_release(struct zk_backend *zb, struct zk_owner *ow)
{
	pthread_mutex_lock(&zb->mutex);
	zk_owner_unbusy_locked(zb, ow);
	zk_owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
}

/* the owner's whole lock set (busy held) */
int zk_owner_set(const struct zk_owner *ow, struct dl_range_set *out)
{
	for (const struct zk_node *n = ow->nodes; n; n = n->next)
		for (size_t i = 0; i < n->ranges.n; i++)
			if (range_set_apply(out, &n->ranges.v[i]) < 0) {
				range_set_free(out);
				return -ENOMEM;
			}
	return 0;
}

/* ---- writing our nodes ----------------------------------------------- */

/* @dst = a copy of @src (empty when out of memory) */
static void zk_range_copy(struct dl_range_set *dst,
			  const struct dl_range_set *src)
{
	/* callers reserve nothing: a failed copy leaves dst empty */
	range_set_free(dst);
	for (size_t i = 0; i < src->n; i++)
		if (range_set_apply(dst, &src->v[i]) < 0) {
			range_set_free(dst);
			return;
		}
}

static bool zk_ranges_equal(const struct dl_range_set *a,
			    const struct dl_range_set *b)
{
	if (a->n != b->n)
		return false;
	for (size_t i = 0; i < a->n; i++)
		if (a->v[i].start != b->v[i].start ||
		    a->v[i].end != b->v[i].end || a->v[i].type != b->v[i].type)
			return false;
	return true;
}

/* write @n's ranges (delete it when empty); busy held.  Marks it dirty on
 * a connection problem (written again later).  Returns 0 or -ENOLCK. */
static int zk_node_sync(struct zk_backend *zb, zhandle_t *zh,
			struct zk_owner *ow, struct zk_node *n)
{
	int rc, len;

	if (n->ranges.n == 0) {
		rc = zoo_delete(zh, n->path, -1);
		if (rc == ZNONODE)
			rc = ZOK;
	} else {
		char *data = zk_format(zb, ow, n, &len);
		struct Stat st;

		if (!data) {
			n->dirty = true;
			return -ENOMEM;
		}
		rc = zoo_set2(zh, n->path, data, len, -1, &st);
		free(data);
		if (rc == ZOK) {
			/* our own write: not a poke (worker.c) */
			pthread_mutex_lock(&zb->mutex);
			n->version = st.version;
			pthread_mutex_unlock(&zb->mutex);
		}
		if (rc == ZNONODE) {
			/* taken from us (a break): the worker reports it */
			zk_held_queue(zb, n->gen, n->path, true, false);
			n->dirty = false;
			return -ENOLCK;
		}
	}
	if (rc != ZOK) {
		dl_log(DL_LOG_WARNING, "zk: write %s: %s; will retry", n->path,
		       zerror(rc));
		n->dirty = true;
		return zk_errno(rc);
	}
	n->dirty = false;
	return 0;
}

/* after the container-less fallback, remove an empty resource node */
void zk_parent_cleanup(struct zk_backend *zb, zhandle_t *zh,
		       struct zk_owner *ow)
{
	bool containers;

	pthread_mutex_lock(&zb->mutex);
	containers = zb->containers;
	pthread_mutex_unlock(&zb->mutex);
	if (!containers && !ow->nodes)
		zoo_delete(zh, ow->parent, -1); /* ZNOTEMPTY: others use it */
}

/* write every dirty node and drop the emptied ones (busy held) */
void zk_owner_flush(struct zk_backend *zb, struct zk_sess *s,
		    struct zk_owner *ow)
{
	struct zk_node **p = &ow->nodes;

	while (*p) {
		struct zk_node *n = *p;

		if (n->gen == s->gen && n->dirty)
			zk_node_sync(zb, s->zh, ow, n);
		if (n->gen == s->gen && !n->dirty && n->ranges.n == 0) {
			pthread_mutex_lock(&zb->mutex);
			*p = n->next;
			pthread_mutex_unlock(&zb->mutex);
			zk_node_free(n);
		} else {
			p = &n->next;
		}
	}
}

/* apply an unlock of [start, end] to every node of @ow, writing them */
void zk_owner_reduce(struct zk_backend *zb, struct zk_sess *s,
		     struct zk_owner *ow, uint64_t start, uint64_t end)
{
	struct dl_range_lock ul = { .start = start,
				    .end = end,
				    .type = DL_UNLCK };

	for (struct zk_node *n = ow->nodes; n; n = n->next) {
		size_t before = n->ranges.n;
		struct dl_range_set old = { 0 };

		zk_range_copy(&old, &n->ranges);
		pthread_mutex_lock(&zb->mutex);
		range_set_apply(&n->ranges, &ul);
		pthread_mutex_unlock(&zb->mutex);
		if (before != n->ranges.n || !zk_ranges_equal(&old, &n->ranges))
			n->dirty = true;
		range_set_free(&old);
	}
	if (s)
		zk_owner_flush(zb, s, ow);
}

/* create the resource node (container when possible) */
static int zk_make_parent(struct zk_backend *zb, zhandle_t *zh,
			  const char *parent)
{
	bool containers;
	int rc;

	pthread_mutex_lock(&zb->mutex);
	containers = zb->containers;
	pthread_mutex_unlock(&zb->mutex);
	rc = zoo_create(zh, parent, NULL, -1, zb->acl,
			containers ? ZOO_CONTAINER : ZOO_PERSISTENT, NULL, 0);
	if (containers &&
	    (rc == ZUNIMPLEMENTED || rc == ZBADARGUMENTS || rc == ZAPIERROR)) {
		dl_log(DL_LOG_NOTICE,
		       "zk: server has no container nodes (%s); "
		       "using persistent ones, deleted when empty",
		       zerror(rc));
		pthread_mutex_lock(&zb->mutex);
		zb->containers = false;
		pthread_mutex_unlock(&zb->mutex);
		rc = zoo_create(zh, parent, NULL, -1, zb->acl, ZOO_PERSISTENT,
				NULL, 0);
	}
	return rc == ZNODEEXISTS ? ZOK : rc;
}

/* create every component of @path as a persistent node */
int zk_make_path(struct zk_backend *zb, zhandle_t *zh, const char *path)
{
	char buf[ZK_PATH_MAX];
	int rc = ZOK;

	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1;; p++) {
		if (*p == '/' || *p == '\0') {
			char c = *p;

			*p = '\0';
			rc = zoo_create(zh, buf, NULL, -1, zb->acl,
					ZOO_PERSISTENT, NULL, 0);
			if (rc == ZNODEEXISTS)
				rc = ZOK;
			if (rc != ZOK)
				return rc;
			*p = c;
			if (!c)
				break;
		}
	}
	return rc;
}

/* a create and the read of its parent's children, sent together */
struct zk_pair {
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	int pending;
	int crc, krc; /* the create's and the read's ZooKeeper rc */
	char *path;   /* the created node's */
	size_t pathlen;
	struct Stat st;
	struct String_vector *kids;
};

static void zk_pair_done(struct zk_pair *p)
{
	if (--p->pending == 0)
		pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->mutex);
}

/* completion thread: the answers, copied (they live for the call only) */
static void zk_pair_created(int rc, const char *path, const struct Stat *st,
			    const void *data)
{
	struct zk_pair *p = (struct zk_pair *)data;

	pthread_mutex_lock(&p->mutex);
	p->crc = rc;
	if (rc == ZOK) {
		snprintf(p->path, p->pathlen, "%s", path);
		p->st = *st;
	}
	zk_pair_done(p);
}

static void zk_pair_listed(int rc, const struct String_vector *kids,
			   const void *data)
{
	struct zk_pair *p = (struct zk_pair *)data;
	struct String_vector *v = p->kids;

	pthread_mutex_lock(&p->mutex);
	p->krc = rc;
	if (rc == ZOK && kids->count > 0) {
		v->data = calloc((size_t)kids->count, sizeof(*v->data));
		for (int i = 0; v->data && i < kids->count; i++) {
			v->data[i] = strdup(kids->data[i]);
			if (!v->data[i])
				break;
			v->count++;
		}
		if (v->count < kids->count) {
			deallocate_String_vector(v);
			p->krc = ZSYSTEMERROR;
		}
	}
	zk_pair_done(p);
}

/*
 * The create of zk_create_node with the read of @parent's children right
 * behind it, in the same round trip: the session answers in order, so the
 * children include the new node and whatever came before it.  Returns the
 * create's rc; *@listed tells whether @kids was read (the caller frees it).
 */
static int zk_create_listed(struct zk_backend *zb, struct zk_sess *s,
			    const char *parent, const char *prefix,
			    const char *data, int len, struct zk_node *n,
			    struct Stat *st, struct String_vector *kids,
			    bool *listed)
{
	struct zk_pair p = {
		.crc = ZSYSTEMERROR,
		.krc = ZSYSTEMERROR,
		.path = n->path,
		.pathlen = sizeof(n->path),
		.kids = kids,
	};
	int rc;

	pthread_mutex_init(&p.mutex, NULL);
	pthread_cond_init(&p.cond, NULL);
	/* counted before the send: the completion may come first */
	p.pending = 2;
	rc = zoo_acreate2(s->zh, prefix, data, len, zb->acl,
			  ZOO_EPHEMERAL_SEQUENTIAL, zk_pair_created, &p);
	if (rc != ZOK) {
		p.crc = rc;
		p.pending = 0;
	} else if (zoo_aget_children(s->zh, parent, 0, zk_pair_listed, &p) !=
		   ZOK) {
		pthread_mutex_lock(&p.mutex);
		p.pending--;
		pthread_mutex_unlock(&p.mutex);
	}
	pthread_mutex_lock(&p.mutex);
	while (p.pending)
		pthread_cond_wait(&p.cond, &p.mutex);
	pthread_mutex_unlock(&p.mutex);
	pthread_cond_destroy(&p.cond);
	pthread_mutex_destroy(&p.mutex);
	*st = p.st;
	*listed = p.crc == ZOK && p.krc == ZOK;
	if (!*listed)
		deallocate_String_vector(kids);
	return p.crc;
}

/*
 * Create the request node @n for @ow (n->ranges, pid, wait_id set).
 * Fills path, seq, czxid, ctime, gen.  With @kids, the children of the
 * resource are read in the same round trip, and *@listed says whether
 * they were (then the caller frees @kids).  On a connection problem the
 * create may have happened: it is remembered as an orphan and deleted
 * later.
 */
int zk_create_node(struct zk_backend *zb, struct zk_sess *s,
		   struct zk_owner *ow, struct zk_node *n,
		   struct String_vector *kids, bool *listed)
{
	char prefix[ZK_PATH_MAX], *data;
	struct Stat st;
	uint64_t req;
	int rc = ZOK, len;

	pthread_mutex_lock(&zb->mutex);
	req = ++zb->next_req;
	pthread_mutex_unlock(&zb->mutex);
	n->ctime = dl_now_ms();
	data = zk_format(zb, ow, n, &len);
	if (!data)
		return -ENOMEM;
	snprintf(prefix, sizeof(prefix), "%s/q-%016" PRIx64 "-%016" PRIx64 "-",
		 ow->parent, zb->incarnation, req);
	if (listed)
		*listed = false;
	for (int tries = 0; tries < ZK_CREATE_TRIES; tries++) {
		if (tries == 0 && kids)
			rc = zk_create_listed(zb, s, ow->parent, prefix, data,
					      len, n, &st, kids, listed);
		else
			rc = zoo_create2(s->zh, prefix, data, len, zb->acl,
					 ZOO_EPHEMERAL_SEQUENTIAL, n->path,
					 sizeof(n->path), &st);
		if (rc != ZNONODE)
			break;
		/* no resource node yet (or a container just reaped) */
		rc = zk_make_parent(zb, s->zh, ow->parent);
		if (rc == ZNONODE)
			rc = zk_make_path(zb, s->zh, zb->base_path);
		if (rc != ZOK)
			break;
	}
	free(data);
	if (rc == ZOK) {
		n->seq = zk_seq_of(n->path);
		n->czxid = (uint64_t)st.czxid;
		n->version = st.version;
		n->gen = s->gen;
		return 0;
	}
	if (rc == ZCONNECTIONLOSS || rc == ZOPERATIONTIMEOUT) {
		struct zk_orphan *o = calloc(1, sizeof(*o));

		if (o) {
			o->gen = s->gen;
			snprintf(o->parent, sizeof(o->parent), "%s",
				 ow->parent);
			snprintf(o->prefix, sizeof(o->prefix),
				 "q-%016" PRIx64 "-%016" PRIx64 "-",
				 zb->incarnation, req);
			pthread_mutex_lock(&zb->mutex);
			o->next = zb->orphans;
			zb->orphans = o;
			pthread_mutex_unlock(&zb->mutex);
		}
	}
	dl_log(DL_LOG_WARNING, "zk: create under %s: %s", ow->parent,
	       zerror(rc));
	return zk_errno(rc);
}

/* ---- applying a grant ------------------------------------------------ */

/*
 * @n was granted: mark it jumped if needed, trim @ow's older nodes of the
 * bytes @n covers, and add @n to @ow's nodes.  -ENOLCK when the session
 * was abandoned meanwhile (n is then freed).
 */
int zk_finish_grant(struct zk_backend *zb, struct zk_sess *s,
		    struct zk_owner *ow, struct zk_node *n, bool jumped)
{
	struct dl_range_set merged = { 0 }, mine = { 0 };
	bool alive, fold = false;
	int rc;

	/*
	 * Fold: @n takes over every byte of the owner's older nodes, which
	 * then go, so an owner keeps one node per resource however many
	 * locks it adds (a node per call made every evaluation read them
	 * all).  The bytes move to a later node, so @n is marked jumped: it
	 * keeps blocking the nodes created between them that those bytes
	 * blocked.  A piece merged into a newer grant carries its token.
	 */
	for (const struct zk_node *f = ow->nodes; f; f = f->next)
		if (f->gen == n->gen)
			for (size_t i = 0; i < f->ranges.n; i++) {
				fold = true;
				if (range_set_apply(&merged, &f->ranges.v[i]) <
				    0)
					fold = false;
			}
	for (size_t i = 0; fold && i < n->ranges.n; i++)
		if (range_set_apply(&merged, &n->ranges.v[i]) < 0)
			fold = false;
	if (fold && merged.n > ZK_FOLD_MAX)
		fold = false; /* node data stays well below jute.maxbuffer */
	if (fold || jumped) {
		bool was_jumped = n->jumped;
		struct Stat st;
		int len;
		char *data;

		if (fold) {
			mine = n->ranges;
			n->ranges = merged;
			merged = (struct dl_range_set){ 0 };
		}
		n->jumped = true;
		data = zk_format(zb, ow, n, &len);
		rc = data ? zoo_set2(s->zh, n->path, data, len, -1, &st)
			  : ZSYSTEMERROR;
		free(data);
		if (rc == ZOK)
			n->version = st.version; /* not linked yet */
		if (rc != ZOK) {
			if (fold) {
				merged = n->ranges;
				n->ranges = mine;
				mine = (struct dl_range_set){ 0 };
			}
			n->jumped = was_jumped;
			range_set_free(&merged);
			return zk_errno(rc);
		}
	}
	range_set_free(&merged);
	range_set_free(&mine);
	/* trim: the older nodes lose what @n now covers (all, when folded) */
	for (size_t i = 0; i < n->ranges.n; i++)
		zk_owner_reduce(zb, NULL, ow, n->ranges.v[i].start,
				n->ranges.v[i].end);
	pthread_mutex_lock(&zb->mutex);
	alive = zb->sess == s && !ow->stale;
	if (alive) {
		n->next = ow->nodes;
		ow->nodes = n;
	}
	pthread_mutex_unlock(&zb->mutex);
	if (!alive)
		return -ENOLCK;
	zk_owner_flush(zb, s, ow);
	/* so that a break of it, and a poke, from any host, reach us; a
	 * version we did not write: poked while it waited (the poker saw it
	 * granted first), the worker reports it (ow is still busy: n is
	 * ours to read) */
	zk_held_arm_async(zb, s, n->path, n->version);
	return 0;
}

/* ---- lookups --------------------------------------------------------- */

/* mutex held: the owner holding node @path of session @gen, or NULL */
struct zk_owner *zk_held_find(struct zk_backend *zb, const char *path,
			      unsigned gen, struct zk_node **np)
{
	for (size_t b = 0; b < ZK_BUCKETS; b++)
		for (struct zk_owner *ow = zb->owners[b]; ow; ow = ow->next)
			for (struct zk_node *n = ow->nodes; n; n = n->next)
				if (n->gen == gen &&
				    strcmp(n->path, path) == 0) {
					*np = n;
					return ow;
				}
	return NULL;
}

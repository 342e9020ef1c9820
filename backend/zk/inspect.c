/*
 * inspect.c - getlk, list, break_lock and poke: reading (and, for a
 * break, deleting; for a poke, rewriting unchanged) everybody's request
 * nodes of a resource.  And version and bump, on the version nodes.
 *
 * Inspection.  list() reads a resource's children in one call and their
 * data in pipelined gets (grant.c, zk_snapshot); our own nodes are
 * reported held only once this daemon has processed their grant
 * (zk_mark_local: by the rule alone, a node whose predecessor just went
 * looks held while its request still waits - a wait-for cycle that never
 * existed); since_ms is the node's ctime on the server, the same on every
 * host.  An owner's granted pieces are merged as POSIX merges them, each
 * keeping its own token.  list(NULL) walks every resource; a hashed
 * resource name cannot be decoded, so its locks are reported unnamed.
 *
 * Breaks.  break_lock deletes every granted node of a resource, of any
 * host; waiting nodes stay, so waiters are served in order.  Each
 * holder's daemon learns it through the watch on its node (worker.c).
 *
 * Pokes.  poke rewrites one granted node of each other daemon holding the
 * resource (by the incarnation in its data; our own are skipped) with the
 * data it just read, conditionally on the version it read: the content
 * stays what its holder last wrote, only the version moves, and the
 * holder's watch on its node fires (worker.c reports cb->revoke).  A
 * version that moved meanwhile (the holder rewrote it) is read again, a
 * vanished node (released) gives way to that daemon's next one.  No node
 * is created: nothing to clean up (internal.h, "Pokes").
 *
 * Versions (backend.h's version and bump).  A resource's version lives
 * in its own PERSISTENT node CHROOT/v/NAME (NAME: names.c, as for
 * CHROOT/r/NAME), outside CHROOT/r, so no lock operation, break, listing,
 * cleanup or session end ever touches it.  A bump is one unconditional
 * set of the node's data to our host id: the server adds one to the
 * node's stat.version atomically and answers with the new stat, so
 * concurrent bumps, from any hosts, each get their own version; version =
 * stat.version + 1 (the create that is the first bump leaves 0, so it
 * reads 1), changed_ms = stat.mtime (the server's clock, the same for
 * every reader).  stat.version is a 32-bit int: read as unsigned, a
 * file's versions increase for 2^32 bumps (then they would start over).
 * A read syncs first (sent together with the get, so no extra round trip
 * of our own), so that it is at least as new as every bump that
 * completed anywhere before it began: a
 * lockless reader that reads the version, the file, then the version
 * again sees every bump made meanwhile.  A hashed NAME is not checked
 * against the full name (a version node's data is the host id alone, the
 * full name would be rewritten by every bump): two names share a version
 * only through a SHA-256 collision.
 *
 * Owns: the reports (struct dl_lock_info), the break, the poke, CHROOT/v.
 * Does not: the rule (grant.c: zk_classify_snap), nor report anything to
 * backend.h's callbacks (the holders' workers do).
 *
 * Locking.  Caller's thread, no owner's busy flag: these only read
 * ZooKeeper (a break deletes other hosts' nodes too, and a poke rewrites
 * them, as ZooKeeper lets anybody), holding a session reference,
 * zb->mutex dropped.  zk_mark_local reads our owners' node lists under
 * zb->mutex, in one critical section per snapshot, with no ZooKeeper call
 * in it.  Callbacks of list() (@fn) run with no mutex held.  version
 * waits (on its own mutex and condition, on the caller's thread) for the
 * completion of its sync, which only records and signals.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/util/log.h"
#include "backend/zk/internal.h"

/* info about piece @rl of node @c */
static void zk_fill(const struct zk_backend *zb, const struct zk_child *c,
		    const struct dl_range_lock *rl, struct dl_lock_info *info)
{
	*info = (struct dl_lock_info){
		.space = (enum dl_space)c->space,
		.type = rl->type,
		.start = rl->start,
		.end = rl->end,
		.owner = c->owner,
		.mine = c->inc == zb->incarnation,
		.waiting = !c->granted,
		.pid = c->pid,
		.token = c->granted ? (uint64_t)c->st.czxid : 0,
		.since_ms = c->st.ctime ? c->st.ctime : c->since,
	};
	snprintf(info->host, sizeof(info->host), "%s", c->host);
}

/* which nodes of @snap (children of @parent) are ours, and held here */
static void zk_mark_local(struct zk_backend *zb, const char *parent,
			  struct zk_snap *snap)
{
	char path[ZK_PATH_MAX];

	pthread_mutex_lock(&zb->mutex);
	for (size_t i = 0; i < snap->n; i++) {
		struct zk_child *c = &snap->v[i];
		struct zk_node *n = NULL;

		c->local = -1;
		if (!c->valid || c->inc != zb->incarnation)
			continue;
		snprintf(path, sizeof(path), "%s/%s", parent, c->name);
		c->local = zb->sess &&
			   zk_held_find(zb, path, zb->sess->gen, &n) &&
			   n->ranges.n;
	}
	pthread_mutex_unlock(&zb->mutex);
}

/* a snapshot of @resource (@name_hex NULL: of the encoded @enc) */
static int zk_read_resource(struct zk_backend *zb, const char *resource,
			    const char *enc, struct zk_snap *snap)
{
	char parent[ZK_PARENT_MAX], e[ZK_NAME_BUF], *hex = NULL;
	struct zk_sess *s;
	int ret;

	/* empty, so a caller may free it whatever happens (no session) */
	snap->v = NULL;
	snap->n = 0;
	if (resource) {
		size_t len = strlen(resource);

		hex = malloc(2 * len + 1);
		if (!hex)
			return -ENOMEM;
		zk_hex(resource, len, hex);
		zk_name_encode(resource, len, e);
		enc = e;
	}
	snprintf(parent, sizeof(parent), "%s/%s", zb->base_path, enc);
	ret = zk_sess_get(zb, zk_connect_wait(zb), &s);
	if (ret == 0) {
		ret = zk_snapshot(s->zh, parent, hex, NULL, 0, NULL, snap);
		zk_sess_put(zb, s);
	}
	free(hex);
	if (ret == -ENOENT) {
		snap->v = NULL;
		snap->n = 0;
		ret = 0;
	}
	if (ret == 0) {
		zk_mark_local(zb, parent, snap);
		zk_classify_snap(snap);
	}
	return ret;
}

/*
 * The granted locks of the owner of snap->v[i], merged as POSIX merges
 * them (adjacent pieces of one type held through several nodes are one
 * lock).  Returns false when an earlier node of the owner already
 * reported them (so each owner is reported once).
 */
static bool zk_merge_owner(const struct zk_snap *snap, size_t i,
			   struct dl_range_set *merged)
{
	const struct zk_child *c = &snap->v[i];

	for (size_t j = 0; j < i; j++) {
		const struct zk_child *o = &snap->v[j];

		if (o->valid && o->granted && o->space == c->space &&
		    o->inc == c->inc && o->owner == c->owner)
			return false;
	}
	for (size_t j = i; j < snap->n; j++) {
		const struct zk_child *o = &snap->v[j];

		if (!o->valid || !o->granted || o->space != c->space ||
		    o->inc != c->inc || o->owner != c->owner)
			continue;
		for (size_t k = 0; k < o->ranges.n; k++) {
			struct dl_range_lock rl = o->ranges.v[k];

			rl.token = (uint64_t)o->st.czxid;
			rl.since_ms = o->st.ctime;
			rl.pid = o->pid;
			range_set_apply(merged, &rl);
		}
	}
	return true;
}

/* info about merged lock @rl of @c's owner */
static void zk_fill_merged(const struct zk_backend *zb,
			   const struct zk_child *c,
			   const struct dl_range_lock *rl,
			   struct dl_lock_info *info)
{
	struct zk_child tmp = *c;

	tmp.st.czxid = (int64_t)rl->token;
	tmp.st.ctime = rl->since_ms;
	tmp.pid = rl->pid;
	zk_fill(zb, &tmp, rl, info);
}

/* getlk(): the conflicting lock with the lowest start: 1 found, 0 none */
int zk_getlk(struct dl_backend *be, const struct dl_lock_req *req,
	     struct dl_lock_info *conflict)
{
	struct zk_backend *zb = zk_of(be);
	struct dl_range_lock want = { .start = req->start,
				      .end = req->end,
				      .type = req->type,
				      .owner = 1 };
	struct dl_range_lock best = { 0 };
	size_t bi = 0;
	bool found = false;
	struct zk_snap snap;
	int ret;

	if (!zk_req_valid(req, false))
		return -EINVAL;
	ret = zk_read_resource(zb, req->resource, NULL, &snap);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < snap.n; i++) {
		const struct zk_child *c = &snap.v[i];
		struct dl_range_set merged = { 0 };

		if (!c->valid || !c->granted || c->space != (int)req->space ||
		    (c->inc == zb->incarnation && c->owner == req->owner) ||
		    !zk_merge_owner(&snap, i, &merged))
			continue;
		for (size_t k = 0; k < merged.n; k++) {
			struct dl_range_lock held = merged.v[k];

			held.owner = 2;
			if (range_conflicts(&held, &want) &&
			    (!found || held.start < best.start)) {
				best = merged.v[k];
				bi = i;
				found = true;
			}
		}
		range_set_free(&merged);
	}
	if (found)
		zk_fill_merged(zb, &snap.v[bi], &best, conflict);
	zk_snap_free(&snap);
	return found;
}

/* report @snap: holders (merged per owner) then waiters; 1 when @fn stopped */
/* @resource names the snapshot's resource in each info (NULL: unknown) */
static int zk_report(struct zk_backend *zb, struct zk_snap *snap,
		     const char *resource, dl_lock_info_fn fn, void *arg)
{
	struct dl_lock_info info;

	for (size_t i = 0; i < snap->n; i++) {
		struct zk_child *c = &snap->v[i];
		struct dl_range_set merged = { 0 };

		if (!c->valid || !c->granted ||
		    !zk_merge_owner(snap, i, &merged))
			continue;
		for (size_t k = 0; k < merged.n; k++) {
			zk_fill_merged(zb, c, &merged.v[k], &info);
			info.resource = resource;
			if (fn(&info, arg)) {
				range_set_free(&merged);
				return 1;
			}
		}
		range_set_free(&merged);
	}
	for (size_t i = 0; i < snap->n; i++) {
		struct zk_child *c = &snap->v[i];

		if (!c->valid || c->granted)
			continue;
		for (size_t k = 0; k < c->ranges.n; k++) {
			zk_fill(zb, c, &c->ranges.v[k], &info);
			info.resource = resource;
			if (fn(&info, arg))
				return 1;
		}
	}
	return 0;
}

/* list(): every lock of @resource (NULL: of every resource) */
int zk_list(struct dl_backend *be, const char *resource, dl_lock_info_fn fn,
	    void *arg)
{
	struct zk_backend *zb = zk_of(be);
	struct String_vector kids = { 0 };
	struct zk_snap snap;
	struct zk_sess *s;
	int ret, rc;

	if (resource) {
		ret = zk_read_resource(zb, resource, NULL, &snap);
		if (ret == 0)
			zk_report(zb, &snap, resource, fn, arg);
		zk_snap_free(&snap);
		return ret;
	}
	ret = zk_sess_get(zb, zk_connect_wait(zb), &s);
	if (ret < 0)
		return ret;
	rc = zoo_get_children(s->zh, zb->base_path, 0, &kids);
	zk_sess_put(zb, s);
	if (rc != ZOK)
		return zk_errno(rc);
	for (int i = 0; i < kids.count && ret == 0; i++) {
		/* a hashed name cannot be decoded: its locks go unnamed */
		char name[ZK_NAME_BUF * 4];
		bool named = zk_name_decode(kids.data[i], name, sizeof(name)) >=
			     0;

		ret = zk_read_resource(zb, NULL, kids.data[i], &snap);
		if (ret == 0 &&
		    zk_report(zb, &snap, named ? name : NULL, fn, arg))
			i = kids.count;
		zk_snap_free(&snap);
	}
	deallocate_String_vector(&kids);
	return ret;
}

/*
 * An administrator breaks @resource: every granted request node goes (of
 * any host; waiting ones stay, so the waiters are served in order).  Each
 * holder's daemon learns it through the watch on its node.  0, -ENOENT
 * when nothing was held, -ENOLCK when ZooKeeper is unreachable.
 */
int zk_break_lock(struct dl_backend *be, const char *resource)
{
	struct zk_backend *zb = zk_of(be);
	char parent[ZK_PARENT_MAX], enc[ZK_NAME_BUF], path[ZK_PATH_MAX];
	size_t len = strlen(resource), removed = 0;
	struct zk_snap snap;
	struct zk_sess *s;
	char *hex;
	int ret;

	hex = malloc(2 * len + 1);
	if (!hex)
		return -ENOMEM;
	zk_hex(resource, len, hex);
	zk_name_encode(resource, len, enc);
	snprintf(parent, sizeof(parent), "%s/%s", zb->base_path, enc);
	ret = zk_sess_get(zb, zk_connect_wait(zb), &s);
	if (ret < 0)
		goto out_free;
	ret = zk_snapshot(s->zh, parent, hex, NULL, 0, NULL, &snap);
	if (ret == -ENOENT)
		goto out_sess;
	if (ret < 0)
		goto out_sess;
	zk_mark_local(zb, parent, &snap);
	zk_classify_snap(&snap);
	for (size_t i = 0; i < snap.n; i++) {
		const struct zk_child *c = &snap.v[i];
		int rc;

		if (!c->valid || !c->granted || !c->ranges.n)
			continue;
		snprintf(path, sizeof(path), "%s/%s", parent, c->name);
		rc = zoo_delete(s->zh, path, -1);
		if (rc == ZOK) {
			removed++;
			dl_log(DL_LOG_INFO,
			       "zk: break %s: removed %s (host=%s "
			       "owner=%016" PRIx64 ")",
			       resource, c->name, c->host, c->owner);
		} else if (rc != ZNONODE) {
			dl_log(DL_LOG_WARNING, "zk: break %s: delete %s: %s",
			       resource, path, zerror(rc));
			ret = zk_errno(rc);
			break;
		}
	}
	zk_snap_free(&snap);
	if (ret == 0) {
		dl_log(DL_LOG_NOTICE,
		       "zk: lock of %s broken (%zu request node(s) removed)",
		       resource, removed);
		ret = removed ? 0 : -ENOENT;
	}
out_sess:
	zk_sess_put(zb, s);
out_free:
	free(hex);
	return ret;
}

/* a poke rewrites a node whose version keeps moving at most this often */
#define ZK_POKE_TRIES 3

/*
 * Rewrite node @path with the data it has, at the version read, so that
 * only its version moves (a poke, see the file comment).  A ZooKeeper rc:
 * ZOK, ZNONODE (gone), ZBADVERSION (its holder kept rewriting it), or
 * another error; ZSYSTEMERROR when out of memory.
 */
static int zk_poke_node(zhandle_t *zh, const char *path)
{
	int cap = 4096, rc = ZBADVERSION;

	for (int tries = 0; tries < ZK_POKE_TRIES && rc == ZBADVERSION;
	     tries++) {
		char *buf = malloc((size_t)cap);
		int len = cap;
		struct Stat st;

		if (!buf)
			return ZSYSTEMERROR;
		rc = zoo_get(zh, path, 0, buf, &len, &st);
		if (rc == ZOK && st.dataLength > cap) {
			/* a node of many pieces: read it whole */
			cap = st.dataLength;
			rc = ZBADVERSION;
		} else if (rc == ZOK) {
			rc = zoo_set(zh, path, len < 0 ? NULL : buf, len,
				     st.version);
		}
		free(buf);
	}
	return rc;
}

/*
 * Ask every other daemon holding a lock on @resource (either space) to
 * give it back (backend.h): one granted node of each is rewritten
 * unchanged.  0 (also when nobody else holds it, or a node could not be
 * poked for want of rights: logged), -ENOLCK when ZooKeeper is
 * unreachable, -ENOMEM.
 */
int zk_poke(struct dl_backend *be, const char *resource)
{
	struct zk_backend *zb = zk_of(be);
	char parent[ZK_PARENT_MAX], enc[ZK_NAME_BUF], path[ZK_PATH_MAX];
	size_t npoked = 0;
	uint64_t *poked = NULL;
	struct zk_sess *s = NULL;
	struct zk_snap snap;
	int ret;

	ret = zk_read_resource(zb, resource, NULL, &snap);
	if (ret < 0)
		return ret;
	zk_name_encode(resource, strlen(resource), enc);
	snprintf(parent, sizeof(parent), "%s/%s", zb->base_path, enc);
	for (size_t i = 0; i < snap.n; i++) {
		const struct zk_child *c = &snap.v[i];
		bool done = false;
		int rc;

		if (!c->valid || !c->granted || !c->ranges.n ||
		    c->inc == zb->incarnation)
			continue; /* never our own: backend.h */
		for (size_t k = 0; k < npoked && !done; k++)
			done = poked[k] == c->inc;
		if (done)
			continue; /* one poke per daemon */
		if (!poked) {
			poked = calloc(snap.n, sizeof(*poked));
			ret = poked ? zk_sess_get(zb, zk_connect_wait(zb), &s)
				    : -ENOMEM;
			if (ret < 0)
				break;
		}
		snprintf(path, sizeof(path), "%s/%s", parent, c->name);
		rc = zk_poke_node(s->zh, path);
		if (rc == ZOK) {
			poked[npoked++] = c->inc;
			dl_log(DL_LOG_DEBUG,
			       "zk: poke %s: asked host=%s (%s) for it back",
			       resource, c->host, c->name);
		} else if (rc == ZNONODE || rc == ZBADVERSION) {
			continue; /* released, or busy: its next node */
		} else {
			dl_log(DL_LOG_WARNING, "zk: poke %s: set %s: %s",
			       resource, path, zerror(rc));
			if (rc == ZNOAUTH)
				continue; /* other credentials: best effort */
			ret = rc == ZSYSTEMERROR ? -ENOMEM : -ENOLCK;
			break;
		}
	}
	if (s)
		zk_sess_put(zb, s);
	free(poked);
	zk_snap_free(&snap);
	return ret;
}

/* ---- versions -------------------------------------------------------- */

/* bump's tries when the node vanishes between a failed set and a create */
#define ZK_BUMP_TRIES 4

/* one pipelined sync (version()): its completion only records and signals */
struct zk_sync_wait {
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	bool done;
	int rc;
};

/* completion thread: record the answer, wake the caller (see the file
 * comment of internal.h: nothing else may happen here) */
static void zk_sync_done(int rc, const char *value, const void *data)
{
	struct zk_sync_wait *w = (struct zk_sync_wait *)data;

	(void)value;
	pthread_mutex_lock(&w->mutex);
	w->rc = rc;
	w->done = true;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->mutex);
}

/* @resource's version node, CHROOT/v/NAME (names.c's encoding) */
static void zk_version_path(const struct zk_backend *zb, const char *resource,
			    char *buf, size_t len)
{
	char enc[ZK_NAME_BUF];

	zk_name_encode(resource, strlen(resource), enc);
	snprintf(buf, len, "%s/%s", zb->vbase_path, enc);
}

/* a ZooKeeper error of version() or bump() in backend.h's words, which
 * are 0, -ENOLCK or -ENOMEM only: a refusal (rights, a node gone wrong)
 * is the store being unusable too, so it is logged, then -ENOLCK */
static int zk_version_errno(const char *op, const char *path, int rc)
{
	if (rc == ZOK)
		return 0;
	if (rc == ZSYSTEMERROR || rc == ZMARSHALLINGERROR)
		return -ENOMEM;
	dl_log(zk_errno(rc) == -ENOLCK ? DL_LOG_NOTICE : DL_LOG_WARNING,
	       "zk: %s %s: %s", op, path, zerror(rc));
	return -ENOLCK;
}

/* the version a node's stat tells (see the file comment: versions) */
static void zk_version_fill(const struct Stat *st, const char *host, int len,
			    struct dl_version *out)
{
	if (len < 0)
		len = 0;
	if (len > DL_HOST_MAX - 1)
		len = DL_HOST_MAX - 1;
	*out = (struct dl_version){
		.version = (uint64_t)(uint32_t)st->version + 1,
		.changed_ms = st->mtime,
	};
	memcpy(out->host, host, (size_t)len);
	out->host[len] = '\0';
}

/*
 * The version node of @resource into @path (ZK_PATH_MAX) and a session to
 * ask on, into *s (zk_sess_put() it); 0 or -ENOLCK after a log line
 * naming @what.
 */
static int zk_version_start(struct zk_backend *zb, const char *what,
			    const char *resource, char *path,
			    struct zk_sess **s)
{
	int ret;

	zk_version_path(zb, resource, path, ZK_PATH_MAX);
	ret = zk_sess_get(zb, zk_connect_wait(zb), s);
	if (ret < 0)
		dl_log(DL_LOG_NOTICE,
		       "zk: %s %s: no connection to ZooKeeper within %" PRId64
		       " ms",
		       what, resource, zk_connect_wait(zb));
	return ret;
}

/*
 * version(): read @resource's version node after a sync, so that the
 * answer is at least as new as every bump that completed, on any host,
 * before the call (a ZooKeeper read alone may come from a follower that
 * lags).  A missing node is version 0, host "", ms 0.  0, -ENOLCK (no
 * connection within zk_connect_wait, or the request failed), -ENOMEM.
 */
int zk_version(struct dl_backend *be, const char *resource,
	       struct dl_version *out)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_sync_wait w = { .done = false };
	char path[ZK_PATH_MAX], host[DL_HOST_MAX];
	int len = (int)sizeof(host) - 1, rc, src;
	struct zk_sess *s;
	struct Stat st;
	int ret;

	ret = zk_version_start(zb, "version", resource, path, &s);
	if (ret < 0)
		return ret;
	pthread_mutex_init(&w.mutex, NULL);
	pthread_cond_init(&w.cond, NULL);
	/* the sync and the get are pipelined: one session's requests are
	 * answered in order, so the get sees what the sync waited for */
	src = zoo_async(s->zh, zb->base_path, zk_sync_done, &w);
	rc = zoo_get(s->zh, path, 0, host, &len, &st);
	if (src == ZOK) {
		pthread_mutex_lock(&w.mutex);
		while (!w.done)
			pthread_cond_wait(&w.cond, &w.mutex);
		src = w.rc;
		pthread_mutex_unlock(&w.mutex);
	}
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.mutex);
	zk_sess_put(zb, s);
	if (src != ZOK)
		return zk_version_errno("version (sync)", path, src);
	if (rc == ZNONODE) {
		*out = (struct dl_version){ .version = 0 };
		return 0;
	}
	if (rc != ZOK)
		return zk_version_errno("version", path, rc);
	zk_version_fill(&st, host, len, out);
	return 0;
}

/*
 * bump(): one unconditional set of @resource's version node with our host
 * id: the server adds one to the node's version atomically, so two hosts
 * bumping at once get two versions.  The first bump creates the node (and
 * CHROOT/v); a create that loses a race to another host's sets instead.
 * 0 with *out the version after our bump, -ENOLCK (on a lost connection
 * the bump may or may not have happened: never retried), -ENOMEM.
 */
int zk_bump(struct dl_backend *be, const char *resource, struct dl_version *out)
{
	struct zk_backend *zb = zk_of(be);
	int hlen = (int)strlen(zb->host), rc = ZNONODE;
	char path[ZK_PATH_MAX];
	struct zk_sess *s;
	struct Stat st;
	int ret;

	ret = zk_version_start(zb, "bump", resource, path, &s);
	if (ret < 0)
		return ret;
	for (int tries = 0; tries < ZK_BUMP_TRIES && rc == ZNONODE; tries++) {
		rc = zoo_set2(s->zh, path, zb->host, hlen, -1, &st);
		if (rc != ZNONODE)
			break;
		/* never bumped: ours is the first (stat.version 0) */
		rc = zoo_create2(s->zh, path, zb->host, hlen, zb->acl,
				 ZOO_PERSISTENT, NULL, 0, &st);
		if (rc == ZNONODE) {
			/* no CHROOT/v yet */
			rc = zk_make_path(zb, s->zh, zb->vbase_path);
			if (rc == ZOK)
				rc = zoo_create2(s->zh, path, zb->host, hlen,
						 zb->acl, ZOO_PERSISTENT, NULL,
						 0, &st);
		}
		if (rc == ZNODEEXISTS)
			rc = ZNONODE; /* another host's first bump: set it */
	}
	zk_sess_put(zb, s);
	if (rc != ZOK)
		return zk_version_errno("bump", path, rc);
	zk_version_fill(&st, zb->host, hlen, out);
	return 0;
}

/*
 * zookeeper.c - the "zk://" backend: cluster-wide locks on ZooKeeper
 * (libzookeeper_mt), herd-free and FIFO, with the session as the lease.
 *
 * Layout in ZooKeeper, under CHROOT (created when missing):
 *   CHROOT/r/NAME          one CONTAINER node per resource (NAME from
 *                          zk_names.c; persistent + delete-if-empty when the
 *                          server has no containers)
 *   CHROOT/r/NAME/q-IIII-  one EPHEMERAL|SEQUENTIAL node per request of one
 *     RRRR-SSSSSSSSSS      owner; IIII = our incarnation, RRRR = a request
 *                          number (so a create lost to a connection drop can
 *                          be found and deleted), S = the sequence number.
 *   CHROOT/s/SESSIONID     one EPHEMERAL node per live session (lock-delay).
 * A node's data (text, see zk_format) carries the full resource name, the
 * space, the owner ("incarnation/owner"), host, pid, wait id, enqueue time,
 * an optional "jumped" mark and the list of ranges it covers.
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
 * grant is reported, and a jumped node blocks the later-created E's it
 * overtook: without the mark, E would be granted as soon as O trims F.
 * Every evaluator decides only about its own nodes, and only needs facts
 * it can know reliably: other owners' nodes as they are in ZooKeeper, and
 * which of O's nodes are granted (local, stable while O's entry is busy).
 *
 * Exception (2) also holds for an E blocked by a jumped node of O (a
 * jumped node blocks every conflicting node, earlier or later).
 *
 * Ranges.  Each byte an owner holds is covered by exactly one of its
 * granted nodes.  Reductions (unlock, downgrade, release) rewrite or
 * delete the owner's nodes in place, so it keeps its queue position and no
 * later node can sneak in.  Growth (new bytes, upgrade) creates a new node
 * that waits by the rule; once granted, it takes over the bytes of the
 * owner's older nodes (written first, marked jumped so it still blocks
 * whatever they blocked) and those go: an owner keeps one node per
 * resource, however many locks it adds (zk_finish_grant).  flock
 * conversion deletes the old node first, as Linux drops the old lock
 * first.  Fencing token = the granting node's czxid (zxids grow strictly
 * cluster-wide); a piece merged into a newer grant carries its token.
 *
 * Waiting.  A blocked node watches only its nearest earlier blocker
 * (zoo_wget: data change or deletion both fire); the watch event kicks the
 * worker thread, which re-evaluates.  One release wakes only the requests
 * that watched it ("wakeups" in status counts these events).
 *
 * Sessions.  The session is the lease.  A heartbeat (async exists every
 * timeout/5) records when the server last answered a request we sent at
 * time t; held locks are trusted until t + timeout - margin (the first
 * connection counts from its answer: the margin covers its latency).
 * conf->lease publishes it: gen = the session's generation (grants report
 * it), until_ms = that deadline; on an expiry event or an abandonment gen
 * first moves to a number no session has, and until_ms to 0, before
 * anything else is done.  Past the deadline, or on ZOO_EXPIRED_SESSION_
 * STATE, the session is abandoned: cb->lost for every held (resource,
 * space, owner), cb->failed(-ENOLCK) for every wait, the handle is closed
 * (ephemeral nodes go) and a fresh session is started for new requests.
 * While the connection is down (session maybe alive) new requests wait at
 * most min(timeout, 5 s) and then fail with -ENOLCK; unlocks never fail:
 * they are applied locally and written when the connection returns
 * (holding longer than asked is safe), and a cancel keeps the waiting
 * node on zb->cancelled to delete it then.  An answer from the owner's
 * cached nodes (already held, same mode, downgrade) is given only after
 * the server confirmed them (owner_verify).
 *
 * Lock-delay.  A lock freed by the end of its session (expiry, or a
 * daemon giving its session up) stays unavailable for lock_delay_ms; a
 * clean release hands over at once.  Each session first creates its
 * liveness node CHROOT/s/SESSIONID; ZooKeeper deletes a session's
 * ephemeral nodes, this one included, in the one transaction that ends
 * it, while a releasing owner deletes its request node during its session.
 * So a waiter whose watched blocker (whose session it read from the
 * node's ephemeralOwner) is gone checks CHROOT/s/SESSIONID: still there,
 * a release; gone too, an expiry, and the waiter waits lock_delay_ms
 * before it takes the lock - its own node is first in the queue, so every
 * other request, on any host, waits too.  The delay is the waiter's
 * daemon's lock_delay_ms (give every host the same).  A lock freed by an
 * expiry while nobody waited for it is free at once (nobody saw it go).
 *
 * Inspection.  list() reads a resource's children in one call and their
 * data in pipelined gets; our own nodes are reported held only once this
 * daemon has processed their grant (by the rule alone, a node whose
 * predecessor just went looks held while its request still waits: a
 * wait-for cycle that never existed); since_ms is the node's ctime on the
 * server, the same on every host.
 *
 * Threads and locks.  zk_backend.mutex guards every field marked so and
 * every owner, node and waiter; it is never held across a ZooKeeper call
 * (zoo_client_id included) nor a backend.h callback.  Callbacks run on the
 * worker thread (grants after a wait, failures, lost locks), on the lease
 * thread (an abandoned session's) or on the caller's thread (none: lock()
 * answers through its return value).  The only other mutex, a batch's in
 * zk_snapshot, is taken alone.  An owner entry's "busy" flag serialises the
 * operations of one owner (ZooKeeper calls happen with busy set, mutex
 * dropped); only the busy holder changes its node list, under the mutex.
 * Sync ZooKeeper calls run on the caller's thread, the worker thread or the
 * lease thread, never on the library's completion thread (that deadlocks),
 * whose watchers only set flags and signal.  zk_backend.cond (monotonic)
 * signals every state change.  A session handle is reference counted; the
 * last reference of an abandoned session closes it, never under the mutex.
 *
 * Breaks.  An administrator's break (any host) deletes every granted node
 * of a resource; waiting nodes stay, so waiters are served in order.  Each
 * granted node of ours carries a data watch (zoo_wget, re-armed by the
 * worker after each change event).  When one of our nodes is gone and we
 * did not delete it ourselves - we empty a node's ranges, under the mutex,
 * before we delete it, so a vanished node that still has ranges was taken
 * from us - the worker drops it and reports cb->lost(-ECONNABORTED).
 *
 * Every request is answered once: lock() returns, or its waiter is
 * decided by exactly one of the worker (granted, or failed when its
 * session is gone) and zk_abandon (failed), or cancel() returns 0 after
 * unlinking it; the reports of an abandonment need no allocation, and a
 * waiter whose evaluation failed is retried (wake_at) rather than left.
 *
 * Test hooks (inert unless set): DLOCKFS_TEST_ZK_ABANDON_DELAY_MS delays
 * zk_abandon (a daemon slow to notice a lost session); DLOCKFS_TEST_ZK_
 * KICK_DELAY_MS delays each re-evaluation of a woken waiter (a daemon slow
 * to notice its grant).
 *
 * Not done here: deadlocks that cross hosts are detected by the lock
 * manager from list(), not here (lock_timeout ends the rest).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the synchronous API of libzookeeper_mt */
#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "backend/backend.h"
#include "backend/util/hash.h"
#include "backend/util/log.h"
#include "backend/zk_names.h"

#define ZK_BUCKETS	       1024
#define ZK_DEFAULT_TIMEOUT_MS  10000
#define ZK_CONNECT_WAIT_MAX_MS 5000 /* bound of a new request's wait */
#define ZK_ROOT_MAX	       256  /* CHROOT + "/r" */
#define ZK_PARENT_MAX	       (ZK_ROOT_MAX + 3 + ZK_NAME_BUF)
#define ZK_PATH_MAX	       1024 /* parent + "/q-..." always fits */
#define ZK_DATA_INIT	       1024
#define ZK_CREATE_TRIES	       5
#define ZK_FOLD_MAX	       1024 /* pieces in one node (~48 bytes each) */

/* the first connection at start: session_timeout_ms within these bounds */
#define ZK_START_WAIT_MIN_MS 10000
#define ZK_START_WAIT_MAX_MS 30000
#define ZK_LOG_LIMIT_MS	     5000 /* the library's messages: one per 5 s */

/* ---- data structures ------------------------------------------------- */

/* one granted request node of one of our owners */
struct zk_node {
	struct zk_node *next;
	char path[ZK_PATH_MAX];
	uint64_t seq;
	uint64_t czxid; /* the fencing token of its grant */
	int64_t ctime;
	uint32_t pid;
	uint64_t wait_id;
	bool jumped;
	bool dirty;		    /* ranges not yet written to ZooKeeper */
	unsigned gen;		    /* session generation it lives in */
	struct dl_range_set ranges; /* owner field: 0 */
};

/* a (resource, space, owner) of this daemon: its granted nodes */
struct zk_owner {
	struct zk_owner *next; /* hash chain */
	enum dl_space space;
	uint64_t owner;
	unsigned refs;	  /* operations and waiters using it */
	bool busy;	  /* an operation owns the node list */
	bool stale;	  /* session abandoned while busy: purge on release */
	bool lost_queued; /* on a zk_abandon() report list */
	struct zk_owner *lost_next; /* that list (holds a ref) */
	struct zk_node *nodes;
	char parent[ZK_PARENT_MAX];
	char *name_hex; /* full name, hex, as stored in node data */
	char resource[];
};

struct zk_waiter {
	struct zk_waiter *next;
	uint64_t wait_id;
	struct zk_owner *ow;  /* holds a ref */
	struct zk_node *node; /* the waiting request node, not yet granted */
	bool kick;	      /* re-evaluate */
	bool busy;	      /* the worker evaluates it */
	int64_t wake_at;      /* mono ms: kick then (lock-delay, retry) */
	/* the busy holder's: the blocker last watched, and the end of the
	 * lock-delay once that blocker was freed by its session's end */
	char blk_path[ZK_PATH_MAX];
	int64_t blk_sid;
	int64_t delay_until;
};

/* one ZooKeeper session; the handle's context, so watchers know it */
struct zk_sess {
	struct zk_backend *zb;
	zhandle_t *zh;
	unsigned gen;
	unsigned refs; /* guarded by zb->mutex */
	int state;     /* guarded by zb->mutex: its last ZOO_*_STATE */
	bool dead;
	bool registered; /* its liveness node exists (worker, open only) */
};

struct zk_backend {
	struct dl_backend base;
	struct dl_backend_cb cb;
	char host[DL_HOST_MAX];
	char host_hex[2 * DL_HOST_MAX + 1];
	uint64_t incarnation;
	char *hosts; /* connect string */
	char root[ZK_ROOT_MAX];
	char base_path[ZK_ROOT_MAX + 2]; /* root + "/r" */
	int timeout_ms;			 /* asked for */
	int lock_delay_ms;		 /* see zk_check_freed() */
	char *auth;			 /* "user:password", never logged */
	struct ACL_vector *acl;
	struct dl_lease *lfence; /* conf->lease; see zk_lease_publish_locked() */
	/* test hook, 0 unless DLOCKFS_TEST_ZK_ABANDON_DELAY_MS is set: how
	 * long zk_abandon() dawdles before it acts (a daemon slow to notice
	 * that its session is gone) */
	int test_abandon_delay_ms;
	/* test hook, 0 unless DLOCKFS_TEST_ZK_KICK_DELAY_MS is set: how long
	 * the worker dawdles before it re-evaluates a kicked waiter (a
	 * daemon slow to notice that its request was granted) */
	int test_kick_delay_ms;

	pthread_mutex_t mutex;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	pthread_t worker, lease;
	bool threads_started;
	/* guarded by mutex: */
	bool stopping;
	bool containers;      /* the server knows CONTAINER nodes */
	struct zk_sess *sess; /* current session, NULL while restarting */
	int state;	      /* its last ZOO_*_STATE */
	int negotiated_ms;
	int64_t last_ok_ms; /* send time of the newest answered request */
	bool hb_inflight;
	bool need_session;
	bool expired_pending;
	bool connected_pending;
	bool reconcile;
	unsigned gen_counter;
	uint64_t next_req;
	uint64_t wakeups;
	uint64_t sessions_lost;
	struct zk_owner *owners[ZK_BUCKETS];
	struct zk_waiter *waiters;
	size_t nwaiters;
	/* orphaned creates to clean: parent + name prefix, per generation */
	struct zk_orphan {
		struct zk_orphan *next;
		unsigned gen;
		char parent[ZK_PARENT_MAX];
		char prefix[96];
	} * orphans;
	/* waiting nodes of cancelled requests still to delete */
	struct zk_node *cancelled;
	/* watch events on our granted nodes, checked by the worker */
	struct zk_held_ev {
		struct zk_held_ev *next;
		unsigned gen;
		bool deleted; /* a deletion event: gone, no need to look */
		bool retry;   /* a look failed: again once reconnected */
		char path[ZK_PATH_MAX];
	} * held_evs;
};

static void zk_held_queue(struct zk_backend *zb, unsigned gen, const char *path,
			  bool deleted, bool retry);

static struct zk_backend *zk_of(struct dl_backend *be)
{
	return (struct zk_backend *)be;
}

/* ---- small helpers ----------------------------------------------------- */

/* a test hook's value: 0 (inert) unless the variable is set */
static int zk_test_env(const char *name)
{
	const char *v = getenv(name);

	return v ? atoi(v) : 0;
}

/* the test hooks' pause (no mutex held); nothing when @ms <= 0 */
static void zk_test_sleep(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000,
			       .tv_nsec = (ms % 1000) * 1000000L };

	if (ms > 0)
		nanosleep(&ts, NULL);
}

/* a ZooKeeper error as a negative errno (backend.h's vocabulary) */
static int zk_errno(int rc)
{
	if (rc == ZOK)
		return 0;
	if (rc == ZNONODE)
		return -ENOENT;
	if (rc == ZNODEEXISTS)
		return -EEXIST;
	if (rc == ZNOTEMPTY)
		return -ENOTEMPTY;
	if (rc == ZMARSHALLINGERROR || rc == ZSYSTEMERROR)
		return -ENOMEM;
	if (rc == ZNOAUTH || rc == ZAUTHFAILED)
		return -EACCES;
	/* connection loss, timeout, expired, closing, invalid state... */
	return -ENOLCK;
}

static void zk_cond_wait_until(struct zk_backend *zb, int64_t deadline)
{
	struct timespec ts = { .tv_sec = deadline / 1000,
			       .tv_nsec = (deadline % 1000) * 1000000 };

	pthread_cond_timedwait(&zb->cond, &zb->mutex, &ts);
}

static const char *zk_state_name(int state)
{
	if (state == ZOO_CONNECTED_STATE)
		return "ok";
	if (state == ZOO_EXPIRED_SESSION_STATE)
		return "expired";
	if (state == ZOO_AUTH_FAILED_STATE)
		return "auth-failed";
	return "connecting";
}

static void range_copy(struct dl_range_set *dst, const struct dl_range_set *src)
{
	/* callers reserve nothing: a failed copy leaves dst empty */
	range_set_free(dst);
	for (size_t i = 0; i < src->n; i++)
		if (range_set_apply(dst, &src->v[i]) < 0) {
			range_set_free(dst);
			return;
		}
}

static bool ranges_equal(const struct dl_range_set *a,
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

/* do two lists of pieces (of different owners) conflict? */
static bool ranges_conflict(const struct dl_range_set *a,
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

/* ---- node data -------------------------------------------------------- */

/* text of a node: see the file comment.  malloc'd, *len set; NULL: ENOMEM */
static char *zk_format(const struct zk_backend *zb, const struct zk_owner *ow,
		       const struct zk_node *n, int *len)
{
	size_t cap = strlen(ow->name_hex) + strlen(zb->host_hex) + 256 +
		     n->ranges.n * 48;
	char *buf = malloc(cap);
	size_t o;

	if (!buf)
		return NULL;
	o = (size_t)snprintf(buf, cap,
			     "dlock1\nn=%s\ns=%d\no=%016" PRIx64 "/%016" PRIx64
			     "\nh=%s\np=%u\nw=%" PRIu64 "\nt=%" PRId64 "\n%s",
			     ow->name_hex, (int)ow->space, zb->incarnation,
			     ow->owner, zb->host_hex, n->pid, n->wait_id,
			     n->ctime, n->jumped ? "j=1\n" : "");
	for (size_t i = 0; i < n->ranges.n && o < cap; i++)
		o += (size_t)snprintf(
			buf + o, cap - o, "r=%c %" PRIu64 " %" PRIu64 "\n",
			n->ranges.v[i].type == DL_WRLCK ? 'w' : 'r',
			n->ranges.v[i].start, n->ranges.v[i].end);
	*len = (int)(o < cap ? o : cap);
	return buf;
}

/* a request node as read from ZooKeeper */
struct zk_child {
	char name[96];
	uint64_t seq;
	bool valid; /* read, parsed, same resource */
	bool jumped;
	bool granted; /* by the rule (inspection only) */
	int local;    /* ours: 1 held (grant processed), 0 not yet; -1 not */
	int space;
	uint64_t inc, owner;
	uint32_t pid;
	uint64_t wait_id;
	int64_t since;
	char host[DL_HOST_MAX];
	struct Stat st;
	struct dl_range_set ranges;
	/* raw data while reading */
	char *data;
	int len;
	int rc;
};

struct zk_snap {
	struct zk_child *v;
	size_t n;
};

static void snap_free(struct zk_snap *s)
{
	for (size_t i = 0; i < s->n; i++) {
		range_set_free(&s->v[i].ranges);
		free(s->v[i].data);
	}
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

/* parse @c->data; @name_hex NULL accepts any resource */
static void zk_parse(struct zk_child *c, const char *name_hex)
{
	char *p = c->data, *end, *line;
	bool name_ok = name_hex == NULL;

	c->valid = false;
	if (!p || c->len < 7 || strncmp(p, "dlock1\n", 7) != 0)
		return;
	end = p + c->len;
	for (line = p + 7; line < end;) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t l = nl ? (size_t)(nl - line) : (size_t)(end - line);

		if (l > 2 && line[1] == '=') {
			char *v = line + 2;
			size_t vl = l - 2;

			switch (line[0]) {
			case 'n':
				if (name_hex && strlen(name_hex) == vl &&
				    memcmp(name_hex, v, vl) == 0)
					name_ok = true;
				break;
			case 's':
				c->space = v[0] == '1' ? DL_SPACE_POSIX
						       : DL_SPACE_FLOCK;
				break;
			case 'o':
				if (sscanf(v, "%16" SCNx64 "/%16" SCNx64,
					   &c->inc, &c->owner) != 2)
					return;
				break;
			case 'h': {
				long hl = zk_unhex(v, vl, c->host,
						   sizeof(c->host) - 1);

				c->host[hl > 0 ? hl : 0] = '\0';
				break;
			}
			case 'p':
				c->pid = (uint32_t)strtoul(v, NULL, 10);
				break;
			case 'w':
				c->wait_id = strtoull(v, NULL, 10);
				break;
			case 't':
				c->since = strtoll(v, NULL, 10);
				break;
			case 'j':
				c->jumped = v[0] == '1';
				break;
			case 'r': {
				struct dl_range_lock rl = { 0 };
				char t;

				if (sscanf(v, "%c %" SCNu64 " %" SCNu64, &t,
					   &rl.start, &rl.end) != 3 ||
				    rl.start > rl.end)
					return;
				rl.type = t == 'w' ? DL_WRLCK : DL_RDLCK;
				if (range_set_apply(&c->ranges, &rl) < 0)
					return;
				break;
			}
			default:
				break;
			}
		}
		line += l + 1;
	}
	c->valid = name_ok;
}

/* the sequence number: the last 10 digits of a sequential node's name */
static uint64_t zk_seq_of(const char *name)
{
	size_t l = strlen(name);

	return l >= 10 ? strtoull(name + l - 10, NULL, 10) : 0;
}

static int child_cmp(const void *a, const void *b)
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
 * names in @skip (our own, already known).  Their data is fetched with
 * pipelined async gets, in sequence order (one session's requests are
 * answered in order, so a later read never sees an older state).  Nodes
 * gone meanwhile or of another full name stay !valid.
 * Returns 0, -ENOENT (no parent), -ENOLCK, -ENOMEM.
 */
static int zk_snapshot(zhandle_t *zh, const char *parent, const char *name_hex,
		       const char *const *skip, size_t nskip,
		       struct zk_snap *out)
{
	struct String_vector kids = { 0 };
	struct zk_batch b = { .pending = 0 };
	struct zk_get_ctx *ctx = NULL;
	char path[ZK_PATH_MAX];
	int rc, ret = 0;

	out->v = NULL;
	out->n = 0;
	rc = zoo_get_children(zh, parent, 0, &kids);
	if (rc != ZOK)
		return zk_errno(rc);
	if (kids.count == 0)
		goto out;
	out->v = calloc((size_t)kids.count, sizeof(*out->v));
	ctx = calloc((size_t)kids.count, sizeof(*ctx));
	if (!out->v || !ctx) {
		ret = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < kids.count; i++) {
		struct zk_child *c = &out->v[out->n];

		if (strlen(kids.data[i]) >= sizeof(c->name) ||
		    strncmp(kids.data[i], "q-", 2) != 0)
			continue;
		snprintf(c->name, sizeof(c->name), "%s", kids.data[i]);
		c->seq = zk_seq_of(c->name);
		c->rc = ZNONODE;
		out->n++;
	}
	qsort(out->v, out->n, sizeof(*out->v), child_cmp);

	pthread_mutex_init(&b.mutex, NULL);
	pthread_cond_init(&b.cond, NULL);
	pthread_mutex_lock(&b.mutex);
	for (size_t i = 0; i < out->n; i++) {
		bool skipped = false;

		for (size_t k = 0; k < nskip && !skipped; k++)
			skipped = strcmp(skip[k], out->v[i].name) == 0;
		if (skipped)
			continue;
		snprintf(path, sizeof(path), "%s/%s", parent, out->v[i].name);
		ctx[i] = (struct zk_get_ctx){ &b, &out->v[i] };
		b.pending++;
		rc = zoo_aget(zh, path, 0, zk_get_done, &ctx[i]);
		if (rc != ZOK) {
			b.pending--;
			ret = zk_errno(rc);
			break;
		}
	}
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
	deallocate_String_vector(&kids);
	if (ret < 0)
		snap_free(out);
	return ret;
}

/* ---- the lease (backend.h's struct dl_lease) ---------------------------- */

/*
 * mutex held: the trusted-until deadline of the current session, by the
 * same arithmetic the lease thread uses to give the session up.
 */
static int64_t zk_lease_deadline_locked(const struct zk_backend *zb)
{
	int to = zb->negotiated_ms ? zb->negotiated_ms : zb->timeout_ms;
	int64_t margin = to / 8 > 100 ? to / 8 : 100;

	return zb->last_ok_ms + to - margin;
}

/*
 * mutex held: publish the lease of session @s (the current, connected
 * one): gen first, then the deadline.  Grants of @s carry s->gen.
 */
static void zk_lease_publish_locked(struct zk_backend *zb,
				    const struct zk_sess *s)
{
	if (zb->sess != s || !zb->last_ok_ms)
		return;
	if (atomic_load(&zb->lfence->gen) != s->gen)
		atomic_store(&zb->lfence->gen, (uint64_t)s->gen);
	atomic_store(&zb->lfence->until_ms, zk_lease_deadline_locked(zb));
}

/*
 * mutex held: session @gen is given up or gone: a fresh lease number
 * (never a session's) first, so its grants can never look trusted again,
 * then "nothing trusted" until the next session publishes its own.
 */
static void zk_lease_revoke_locked(struct zk_backend *zb, unsigned gen)
{
	if (atomic_load(&zb->lfence->gen) == gen)
		atomic_store(&zb->lfence->gen, (uint64_t)++zb->gen_counter);
	atomic_store(&zb->lfence->until_ms, 0);
}

/* ---- sessions ---------------------------------------------------------- */

/*
 * The library logs every failed connection attempt, several per second
 * and per server while a server is down: one line per ZK_LOG_LIMIT_MS, with
 * the count of the dropped ones.
 */
static void zk_log_cb(const char *msg)
{
	size_t l = strlen(msg);

	while (l && (msg[l - 1] == '\n' || msg[l - 1] == '\r'))
		l--;
	dl_log_ratelimited(DL_LOG_WARNING, ZK_LOG_LIMIT_MS, "zookeeper: %.*s",
			   (int)l, msg);
}

static void zk_global_watcher(zhandle_t *zh, int type, int state,
			      const char *path, void *ctx);

/* mutex held: session @s (current) is connected */
static void zk_sess_connected(struct zk_backend *zb, struct zk_sess *s)
{
	zb->negotiated_ms = zoo_recv_timeout(s->zh);
	if (zb->state != ZOO_CONNECTED_STATE)
		zb->connected_pending = true;
	if (zb->last_ok_ms == 0)
		zb->last_ok_ms = dl_mono_ms();
	zk_lease_publish_locked(zb, s);
}

/* start a new session (worker or open); 0 or -ENOMEM/-EINVAL */
static int zk_session_start(struct zk_backend *zb)
{
	struct zk_sess *s = calloc(1, sizeof(*s));
	int timeout;

	if (!s)
		return -ENOMEM;
	s->zb = zb;
	pthread_mutex_lock(&zb->mutex);
	s->gen = ++zb->gen_counter;
	s->state = ZOO_CONNECTING_STATE;
	timeout = zb->timeout_ms;
	pthread_mutex_unlock(&zb->mutex);
	s->refs = 1; /* the backend's reference: dropped when abandoned */
	s->zh = zookeeper_init2(zb->hosts, zk_global_watcher, timeout, NULL, s,
				0, zk_log_cb);
	if (!s->zh) {
		int err = errno ? -errno : -EINVAL;

		free(s);
		return err;
	}
	if (zb->auth)
		zoo_add_auth(s->zh, "digest", zb->auth, (int)strlen(zb->auth),
			     NULL, NULL);
	pthread_mutex_lock(&zb->mutex);
	zb->sess = s;
	zb->state = ZOO_CONNECTING_STATE;
	zb->last_ok_ms = 0;
	zb->need_session = false;
	/* the watcher may have seen the connection before zb->sess was set */
	if (s->state == ZOO_CONNECTED_STATE)
		zk_sess_connected(zb, s);
	else if (s->state == ZOO_EXPIRED_SESSION_STATE ||
		 s->state == ZOO_AUTH_FAILED_STATE)
		zb->expired_pending = true;
	zb->state = s->state;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

/* drop a reference; the last one of a dead session closes it */
static void zk_sess_put(struct zk_backend *zb, struct zk_sess *s)
{
	bool close_it;

	pthread_mutex_lock(&zb->mutex);
	close_it = --s->refs == 0;
	pthread_mutex_unlock(&zb->mutex);
	if (close_it) {
		zookeeper_close(s->zh);
		free(s);
	}
}

/*
 * The current session once connected, waiting at most @wait_ms; a
 * reference the caller drops with zk_sess_put().  -ENOLCK when none.
 */
static int zk_sess_get(struct zk_backend *zb, int64_t wait_ms,
		       struct zk_sess **out)
{
	int64_t deadline = dl_mono_ms() + wait_ms;

	pthread_mutex_lock(&zb->mutex);
	while (!zb->stopping &&
	       (!zb->sess || zb->state != ZOO_CONNECTED_STATE)) {
		if (dl_mono_ms() >= deadline) {
			pthread_mutex_unlock(&zb->mutex);
			return -ENOLCK;
		}
		zk_cond_wait_until(zb, deadline);
	}
	if (zb->stopping) {
		pthread_mutex_unlock(&zb->mutex);
		return -ENOLCK;
	}
	zb->sess->refs++;
	*out = zb->sess;
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

/* how long a new request waits for a connection */
static int64_t zk_connect_wait(struct zk_backend *zb)
{
	return zb->timeout_ms < ZK_CONNECT_WAIT_MAX_MS ? zb->timeout_ms
						       : ZK_CONNECT_WAIT_MAX_MS;
}

/* ---- owners ------------------------------------------------------------ */

static uint64_t zk_hash(const char *s, enum dl_space space, uint64_t owner)
{
	return dl_fnv1a_str(DL_FNV_OFFSET ^ owner ^ ((uint64_t)space << 63), s);
}

static struct zk_owner **owner_slot(struct zk_backend *zb, const char *res,
				    enum dl_space space, uint64_t owner)
{
	struct zk_owner **p =
		&zb->owners[zk_hash(res, space, owner) % ZK_BUCKETS];

	while (*p && ((*p)->owner != owner || (*p)->space != space ||
		      strcmp((*p)->resource, res) != 0))
		p = &(*p)->next;
	return p;
}

static void node_free(struct zk_node *n)
{
	if (!n)
		return;
	range_set_free(&n->ranges);
	free(n);
}

/* free the nodes of @ow not of generation @gen (mutex held, busy or idle) */
static void owner_purge(struct zk_owner *ow, unsigned gen)
{
	struct zk_node **p = &ow->nodes;

	while (*p) {
		struct zk_node *n = *p;

		if (n->gen != gen) {
			*p = n->next;
			node_free(n);
		} else {
			p = &n->next;
		}
	}
}

/* find or make the entry of (@res, @space, @owner), take a ref and wait
 * until it is not busy, then mark it busy.  NULL on -ENOMEM. */
static struct zk_owner *owner_acquire(struct zk_backend *zb, const char *res,
				      enum dl_space space, uint64_t owner)
{
	struct zk_owner **p, *ow;

	pthread_mutex_lock(&zb->mutex);
	p = owner_slot(zb, res, space, owner);
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
static void owner_put_locked(struct zk_backend *zb, struct zk_owner *ow)
{
	struct zk_owner **p;

	if (--ow->refs || ow->busy || ow->nodes)
		return;
	p = owner_slot(zb, ow->resource, ow->space, ow->owner);
	*p = ow->next;
	free(ow->name_hex);
	free(ow);
}

/* mutex held: clear busy, purging the nodes of an abandoned session */
static void owner_unbusy_locked(struct zk_backend *zb, struct zk_owner *ow)
{
	if (ow->stale) {
		owner_purge(ow, zb->sess ? zb->sess->gen : 0);
		ow->stale = false;
	}
	ow->busy = false;
	pthread_cond_broadcast(&zb->cond);
}

/* end an operation: clear busy and drop the operation's ref */
static void owner_release(struct zk_backend *zb, struct zk_owner *ow)
{
	pthread_mutex_lock(&zb->mutex);
	owner_unbusy_locked(zb, ow);
	owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
}

/* the owner's whole lock set (busy held) */
static int owner_set(const struct zk_owner *ow, struct dl_range_set *out)
{
	for (const struct zk_node *n = ow->nodes; n; n = n->next)
		for (size_t i = 0; i < n->ranges.n; i++)
			if (range_set_apply(out, &n->ranges.v[i]) < 0) {
				range_set_free(out);
				return -ENOMEM;
			}
	return 0;
}

/* ---- writing our nodes ------------------------------------------------- */

/* write @n's ranges (delete it when empty); busy held.  Marks it dirty on
 * a connection problem (written again later).  Returns 0 or -ENOLCK. */
static int node_sync(struct zk_backend *zb, zhandle_t *zh, struct zk_owner *ow,
		     struct zk_node *n)
{
	int rc, len;

	if (n->ranges.n == 0) {
		rc = zoo_delete(zh, n->path, -1);
		if (rc == ZNONODE)
			rc = ZOK;
	} else {
		char *data = zk_format(zb, ow, n, &len);

		if (!data) {
			n->dirty = true;
			return -ENOMEM;
		}
		rc = zoo_set(zh, n->path, data, len, -1);
		free(data);
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
static void zk_parent_cleanup(struct zk_backend *zb, zhandle_t *zh,
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
static void owner_flush(struct zk_backend *zb, struct zk_sess *s,
			struct zk_owner *ow)
{
	struct zk_node **p = &ow->nodes;

	while (*p) {
		struct zk_node *n = *p;

		if (n->gen == s->gen && n->dirty)
			node_sync(zb, s->zh, ow, n);
		if (n->gen == s->gen && !n->dirty && n->ranges.n == 0) {
			pthread_mutex_lock(&zb->mutex);
			*p = n->next;
			pthread_mutex_unlock(&zb->mutex);
			node_free(n);
		} else {
			p = &n->next;
		}
	}
}

/* apply an unlock of [start, end] to every node of @ow, writing them */
static void owner_reduce(struct zk_backend *zb, struct zk_sess *s,
			 struct zk_owner *ow, uint64_t start, uint64_t end)
{
	struct dl_range_lock ul = { .start = start,
				    .end = end,
				    .type = DL_UNLCK };

	for (struct zk_node *n = ow->nodes; n; n = n->next) {
		size_t before = n->ranges.n;
		struct dl_range_set old = { 0 };

		range_copy(&old, &n->ranges);
		pthread_mutex_lock(&zb->mutex);
		range_set_apply(&n->ranges, &ul);
		pthread_mutex_unlock(&zb->mutex);
		if (before != n->ranges.n || !ranges_equal(&old, &n->ranges))
			n->dirty = true;
		range_set_free(&old);
	}
	if (s)
		owner_flush(zb, s, ow);
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
static int zk_make_path(struct zk_backend *zb, zhandle_t *zh, const char *path)
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

/*
 * Create the request node @n for @ow (n->ranges, pid, wait_id set).
 * Fills path, seq, czxid, ctime, gen.  On a connection problem the create
 * may have happened: it is remembered as an orphan and deleted later.
 */
static int zk_create_node(struct zk_backend *zb, struct zk_sess *s,
			  struct zk_owner *ow, struct zk_node *n)
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
	for (int tries = 0; tries < ZK_CREATE_TRIES; tries++) {
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

/* ---- the rule ---------------------------------------------------------- */

struct zk_blocker {
	char path[ZK_PATH_MAX];
	int version;
	int64_t sid; /* its session (ephemeralOwner) */
};

/* the base name of a path */
static const char *zk_base(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/*
 * Decide about our request node @n of @ow (busy held): 1 granted (with
 * *jumped when exception (2) was used), 0 blocked (*blk: the node to
 * watch), or a negative errno.
 */
static int zk_evaluate(struct zk_backend *zb, zhandle_t *zh,
		       struct zk_owner *ow, const struct zk_node *n,
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
	ret = zk_snapshot(zh, ow->parent, ow->name_hex, skip, nskip, &snap);
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
		if (!ranges_conflict(&e->ranges, &n->ranges))
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
				exempt =
					f->gen == n->gen &&
					(f->seq < e->seq || f->jumped) &&
					ranges_conflict(&f->ranges, &e->ranges);
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
	snap_free(&snap);
	return best ? 0 : 1;
}

static void zk_held_watcher(zhandle_t *zh, int type, int state,
			    const char *path, void *ctx);

/* queue a look at our granted node @path of session @gen for the worker;
 * any thread, mutex not held */
static void zk_held_queue(struct zk_backend *zb, unsigned gen, const char *path,
			  bool deleted, bool retry)
{
	struct zk_held_ev *ev = calloc(1, sizeof(*ev));

	if (!ev) {
		dl_log(DL_LOG_ERR, "zk: watch event on %s dropped: %s", path,
		       strerror(ENOMEM));
		return;
	}
	ev->gen = gen;
	ev->deleted = deleted;
	ev->retry = retry;
	snprintf(ev->path, sizeof(ev->path), "%s", path);
	pthread_mutex_lock(&zb->mutex);
	ev->next = zb->held_evs;
	zb->held_evs = ev;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
}

/* watch our granted node @path (data change or deletion); a ZooKeeper rc */
static int zk_held_arm(zhandle_t *zh, const char *path)
{
	char buf[16];
	int len = sizeof(buf);
	struct Stat st;

	return zoo_wget(zh, path, zk_held_watcher, NULL, buf, &len, &st);
}

/*
 * @n was granted: mark it jumped if needed, trim @ow's older nodes of the
 * bytes @n covers, and add @n to @ow's nodes.  -ENOLCK when the session
 * was abandoned meanwhile (n is then freed).
 */
static int zk_finish_grant(struct zk_backend *zb, struct zk_sess *s,
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
		int len;
		char *data;

		if (fold) {
			mine = n->ranges;
			n->ranges = merged;
			merged = (struct dl_range_set){ 0 };
		}
		n->jumped = true;
		data = zk_format(zb, ow, n, &len);
		rc = data ? zoo_set(s->zh, n->path, data, len, -1)
			  : ZSYSTEMERROR;
		free(data);
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
		owner_reduce(zb, NULL, ow, n->ranges.v[i].start,
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
	owner_flush(zb, s, ow);
	/* so that a break of it, from any host, reaches us */
	rc = zk_held_arm(s->zh, n->path);
	if (rc != ZOK)
		zk_held_queue(zb, s->gen, n->path, rc == ZNONODE,
			      rc != ZNONODE);
	return 0;
}

static void zk_node_watcher(zhandle_t *zh, int type, int state,
			    const char *path, void *ctx);

/*
 * Watch @blk for our waiter @wait_id.  Returns true when it changed since
 * it was evaluated (or is gone), so the caller re-evaluates at once.
 */
static bool zk_watch(zhandle_t *zh, const struct zk_blocker *blk,
		     uint64_t wait_id)
{
	char buf[16];
	int len = sizeof(buf);
	struct Stat st;
	int rc = zoo_wget(zh, blk->path, zk_node_watcher,
			  (void *)(uintptr_t)wait_id, buf, &len, &st);

	return rc != ZOK || st.version != blk->version;
}

/* ---- waiters ----------------------------------------------------------- */

static struct zk_waiter *waiter_find(struct zk_backend *zb, uint64_t id)
{
	for (struct zk_waiter *w = zb->waiters; w; w = w->next)
		if (w->wait_id == id)
			return w;
	return NULL;
}

/* mutex held: unlink @w (the caller frees it and puts its owner) */
static void waiter_unlink(struct zk_backend *zb, struct zk_waiter *w)
{
	struct zk_waiter **p = &zb->waiters;

	while (*p && *p != w)
		p = &(*p)->next;
	if (*p) {
		*p = w->next;
		zb->nwaiters--;
	}
}

/* the path of session @sid's liveness node */
static void zk_sess_path(const struct zk_backend *zb, int64_t sid, char *buf,
			 size_t len)
{
	snprintf(buf, len, "%s/s/%016" PRIx64, zb->root, (uint64_t)sid);
}

/*
 * Lock-delay.  The blocker @w last watched is gone: was it released, or
 * freed by the end of its session?  A session's liveness node (see
 * zk_register) and its ephemeral request nodes go in one transaction when
 * it ends, and a releasing owner deletes its node while its session
 * lives; so a blocker that is gone while its session's node is gone too
 * was freed by an expiry (or the session's close), and @w waits
 * lock_delay_ms from now before it takes the lock.  Its own node stays
 * first in the queue meanwhile, so everybody else waits too.  Busy held.
 */
static void zk_check_freed(struct zk_backend *zb, struct zk_sess *s,
			   struct zk_waiter *w)
{
	char path[ZK_ROOT_MAX + 32];
	struct Stat st;
	int rc;

	if (!w->blk_path[0] || !zb->lock_delay_ms || w->delay_until)
		return;
	rc = zoo_exists(s->zh, w->blk_path, 0, &st);
	if (rc != ZNONODE)
		return; /* still there, or we cannot tell yet */
	zk_sess_path(zb, w->blk_sid, path, sizeof(path));
	rc = zoo_exists(s->zh, path, 0, &st);
	if (rc == ZNONODE) {
		w->delay_until = dl_mono_ms() + zb->lock_delay_ms;
		dl_log(DL_LOG_NOTICE,
		       "zk: %s was freed by the end of session 0x%" PRIx64
		       ", not released: wait %" PRIu64 " lock-delay %d ms "
		       "before taking it",
		       w->blk_path, (uint64_t)w->blk_sid, w->wait_id,
		       zb->lock_delay_ms);
	}
	w->blk_path[0] = '\0';
}

/*
 * Worker: re-evaluate waiter @id.  Calls cb->granted or cb->failed when
 * it is decided, with no mutex held.
 */
static void zk_reevaluate(struct zk_backend *zb, uint64_t id)
{
	struct zk_waiter *w;
	struct zk_owner *ow;
	struct zk_blocker blk;
	struct zk_sess *s = NULL;
	bool jumped, again, session_gone;
	uint64_t token, lease;
	int64_t wake_at;
	int ret;

	pthread_mutex_lock(&zb->mutex);
	w = waiter_find(zb, id);
	if (!w || w->busy) {
		pthread_mutex_unlock(&zb->mutex);
		return;
	}
	w->busy = true;
	w->kick = false;
	ow = w->ow;
	while (ow->busy)
		pthread_cond_wait(&zb->cond, &zb->mutex);
	ow->busy = true;
	if (zb->sess && zb->state == ZOO_CONNECTED_STATE &&
	    zb->sess->gen == w->node->gen) {
		s = zb->sess;
		s->refs++;
	}
	pthread_mutex_unlock(&zb->mutex);

	ret = -EAGAIN; /* not connected: the reconnect kicks it again */
	wake_at = 0;
	if (s) {
		do {
			again = false;
			zk_check_freed(zb, s, w);
			ret = zk_evaluate(zb, s->zh, ow, w->node, &blk,
					  &jumped);
			if (ret == 0) {
				snprintf(w->blk_path, sizeof(w->blk_path), "%s",
					 blk.path);
				w->blk_sid = blk.sid;
				again = zk_watch(s->zh, &blk, id);
			}
		} while (again);
		if (ret == 1 && w->delay_until > dl_mono_ms()) {
			/* lock-delay: not before the delay is over */
			wake_at = w->delay_until;
			ret = -EINPROGRESS;
		} else if (ret == 1) {
			ret = zk_finish_grant(zb, s, ow, w->node, jumped);
		} else if (ret == 0) {
			ret = -EINPROGRESS;
		}
		/* an error (ENOMEM...): try again in a while */
		if (ret != 0 && ret != -EINPROGRESS && ret != -EAGAIN)
			wake_at = dl_mono_ms() + 1000;
	}

	pthread_mutex_lock(&zb->mutex);
	w->busy = false;
	w->wake_at = wake_at;
	session_gone = !zb->sess || zb->sess->gen != w->node->gen;
	owner_unbusy_locked(zb, ow);
	if (ret != 0 && !session_gone) {
		/* still waiting; on an error, again once connected */
		pthread_mutex_unlock(&zb->mutex);
		if (ret != -EINPROGRESS && ret != -EAGAIN)
			dl_log(DL_LOG_WARNING,
			       "zk: evaluating wait %" PRIu64 ": %s", id,
			       strerror(-ret));
		if (s)
			zk_sess_put(zb, s);
		return;
	}
	/* decided: granted (the node is now the owner's), or its session
	 * was abandoned while we looked */
	token = w->node->czxid;
	lease = w->node->gen;
	waiter_unlink(zb, w);
	if (ret != 0)
		node_free(w->node);
	owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
	if (s)
		zk_sess_put(zb, s);
	free(w);
	if (ret == 0) {
		struct dl_grant g = { token, lease };

		dl_log(DL_LOG_DEBUG,
		       "zk: granted wait %" PRIu64 " token %" PRIu64, id,
		       token);
		zb->cb.granted(zb->cb.ctx, id, &g);
	} else {
		zb->cb.failed(zb->cb.ctx, id, -ENOLCK);
	}
}

/* ---- abandoning a session ---------------------------------------------- */

/*
 * Give up session @gen (expired, or its lease ran out): every lock of it
 * is lost, every wait fails, the handle is closed and the worker starts a
 * new session.  Not on the ZooKeeper completion thread.
 */
static void zk_abandon(struct zk_backend *zb, unsigned gen, const char *why)
{
	/* reported after the mutex is dropped; linked through the entries
	 * themselves, so that no report is lost to an allocation failure */
	struct zk_owner *lost = NULL;
	struct zk_waiter *failed = NULL;
	size_t nlost = 0, nfailed = 0;
	struct zk_waiter **wp;
	struct zk_sess *old;

	zk_test_sleep(zb->test_abandon_delay_ms);
	pthread_mutex_lock(&zb->mutex);
	old = zb->sess;
	if (!old || old->gen != gen) {
		pthread_mutex_unlock(&zb->mutex);
		return;
	}
	/* before anything else: no write may trust this session again */
	zk_lease_revoke_locked(zb, gen);
	old->dead = true;
	zb->sess = NULL;
	zb->state = ZOO_NOTCONNECTED_STATE;
	zb->need_session = true;
	zb->sessions_lost++;
	for (size_t b = 0; b < ZK_BUCKETS; b++) {
		for (struct zk_owner *ow = zb->owners[b], *next; ow;
		     ow = next) {
			bool holds = false;

			next = ow->next;
			for (struct zk_node *n = ow->nodes; n; n = n->next)
				if (n->gen == gen && n->ranges.n)
					holds = true;
			if (holds && !ow->lost_queued) {
				ow->lost_queued = true;
				ow->refs++;
				ow->lost_next = lost;
				lost = ow;
				nlost++;
			}
			if (ow->busy) {
				ow->stale = true;
			} else {
				owner_purge(ow, 0);
				ow->refs++;
				owner_put_locked(zb, ow);
			}
		}
	}
	for (wp = &zb->waiters; *wp;) {
		struct zk_waiter *w = *wp;

		if (w->busy) { /* the worker finds the session gone */
			wp = &w->next;
			continue;
		}
		*wp = w->next;
		zb->nwaiters--;
		owner_put_locked(zb, w->ow);
		node_free(w->node);
		w->ow = NULL;
		w->node = NULL;
		w->next = failed;
		failed = w;
		nfailed++;
	}
	while (zb->orphans) {
		struct zk_orphan *o = zb->orphans;

		zb->orphans = o->next;
		free(o);
	}
	/* closing the session deletes its ephemeral nodes */
	while (zb->cancelled) {
		struct zk_node *n = zb->cancelled;

		zb->cancelled = n->next;
		node_free(n);
	}
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);

	dl_log(DL_LOG_WARNING,
	       "zk: session %u %s: %zu lock(s) lost, %zu "
	       "wait(s) failed; starting a new session",
	       gen, why, nlost, nfailed);
	for (struct zk_owner *ow = lost; ow; ow = ow->lost_next)
		zb->cb.lost(zb->cb.ctx, ow->resource, ow->space, ow->owner,
			    -ENOLCK);
	while (failed) {
		struct zk_waiter *w = failed;

		failed = w->next;
		zb->cb.failed(zb->cb.ctx, w->wait_id, -ENOLCK);
		free(w);
	}
	pthread_mutex_lock(&zb->mutex);
	while (lost) {
		struct zk_owner *ow = lost;

		lost = ow->lost_next;
		ow->lost_queued = false;
		owner_put_locked(zb, ow);
	}
	pthread_mutex_unlock(&zb->mutex);
	zk_sess_put(zb, old);
}

/* ---- watchers (ZooKeeper's completion thread: flags only) -------------- */

static void zk_global_watcher(zhandle_t *zh, int type, int state,
			      const char *path, void *ctx)
{
	struct zk_sess *s = ctx;
	struct zk_backend *zb;

	(void)zh;
	(void)path;
	if (type != ZOO_SESSION_EVENT || !s)
		return;
	zb = s->zb;
	pthread_mutex_lock(&zb->mutex);
	s->state = state;
	if (zb->sess != s) {
		pthread_mutex_unlock(&zb->mutex);
		return; /* abandoned, or not yet published (session_start) */
	}
	if (state == ZOO_CONNECTED_STATE) {
		zk_sess_connected(zb, s);
	} else if (state == ZOO_EXPIRED_SESSION_STATE ||
		   state == ZOO_AUTH_FAILED_STATE) {
		/* the server already let our locks go: stop trusting them
		 * now, not when the worker gets to zk_abandon() */
		zk_lease_revoke_locked(zb, s->gen);
		zb->expired_pending = true;
	}
	zb->state = state;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
}

static void zk_node_watcher(zhandle_t *zh, int type, int state,
			    const char *path, void *ctx)
{
	const struct zk_sess *s = zoo_get_context(zh);
	uint64_t id = (uint64_t)(uintptr_t)ctx;
	struct zk_backend *zb;
	struct zk_waiter *w;

	(void)state;
	(void)path;
	if (!s || type == ZOO_SESSION_EVENT)
		return;
	zb = s->zb;
	pthread_mutex_lock(&zb->mutex);
	w = waiter_find(zb, id);
	if (w) {
		zb->wakeups++;
		w->kick = true;
		pthread_cond_broadcast(&zb->cond);
	}
	pthread_mutex_unlock(&zb->mutex);
}

static void zk_held_watcher(zhandle_t *zh, int type, int state,
			    const char *path, void *ctx)
{
	const struct zk_sess *s = zoo_get_context(zh);

	(void)state;
	(void)ctx;
	if (!s || type == ZOO_SESSION_EVENT || !path)
		return;
	zk_held_queue(s->zb, s->gen, path, type == ZOO_DELETED_EVENT, false);
}

/* ---- worker and lease threads ----------------------------------------- */

/* mutex held: the owner holding node @path of session @gen, or NULL */
static struct zk_owner *zk_held_find(struct zk_backend *zb, const char *path,
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

/*
 * Worker: a watch on our granted node @ev->path fired.  Re-arm it while
 * the node exists; when it is gone although it still had ranges (we empty
 * them before deleting our own nodes), somebody broke it: drop it and
 * report the owner's lock lost.  Frees or requeues @ev.
 */
static void zk_held_check(struct zk_backend *zb, struct zk_held_ev *ev)
{
	struct zk_owner *ow;
	struct zk_node *n, **p;
	struct zk_sess *s = NULL;
	bool lost = false;

	pthread_mutex_lock(&zb->mutex);
	if (zb->sess && zb->sess->gen == ev->gen) {
		s = zb->sess;
		s->refs++;
	}
	pthread_mutex_unlock(&zb->mutex);
	if (!s)
		goto out_free; /* abandoned: zk_abandon reported its locks */
	if (!ev->deleted) {
		int rc = zk_held_arm(s->zh, ev->path);

		if (rc != ZOK && rc != ZNONODE) {
			/* not connected: look again once it is back */
			ev->retry = true;
			pthread_mutex_lock(&zb->mutex);
			ev->next = zb->held_evs;
			zb->held_evs = ev;
			pthread_mutex_unlock(&zb->mutex);
			zk_sess_put(zb, s);
			return;
		}
		if (rc == ZOK)
			goto out_sess; /* still ours, watched again */
	}

	pthread_mutex_lock(&zb->mutex);
	ow = zk_held_find(zb, ev->path, ev->gen, &n);
	if (!ow || !n->ranges.n) {
		pthread_mutex_unlock(&zb->mutex);
		goto out_sess; /* we deleted it ourselves */
	}
	ow->refs++;
	while (ow->busy)
		pthread_cond_wait(&zb->cond, &zb->mutex);
	ow->busy = true;
	for (p = &ow->nodes; *p; p = &(*p)->next) {
		n = *p;
		if (n->gen == ev->gen && n->ranges.n &&
		    strcmp(n->path, ev->path) == 0) {
			*p = n->next;
			node_free(n);
			lost = true;
			break;
		}
	}
	owner_unbusy_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
	if (lost) {
		dl_log(DL_LOG_WARNING,
		       "zk: lock of %s owner=%016" PRIx64 " broken: %s was "
		       "deleted by someone else",
		       ow->resource, ow->owner, ev->path);
		zb->cb.lost(zb->cb.ctx, ow->resource, ow->space, ow->owner,
			    -ECONNABORTED);
	}
	pthread_mutex_lock(&zb->mutex);
	owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
out_sess:
	zk_sess_put(zb, s);
out_free:
	free(ev);
}

/* delete creates whose answer a connection drop swallowed, and the
 * waiting nodes of requests cancelled while disconnected */
static void zk_clean_orphans(struct zk_backend *zb, struct zk_sess *s)
{
	for (;;) {
		struct zk_node *n;
		int rc = ZOK;

		pthread_mutex_lock(&zb->mutex);
		n = zb->cancelled;
		if (n)
			zb->cancelled = n->next;
		pthread_mutex_unlock(&zb->mutex);
		if (!n)
			break;
		if (n->gen == s->gen) {
			rc = zoo_delete(s->zh, n->path, -1);
			dl_log(DL_LOG_INFO, "zk: removed cancelled %s: %s",
			       n->path, zerror(rc));
		}
		if (rc != ZOK && rc != ZNONODE) {
			pthread_mutex_lock(&zb->mutex);
			n->next = zb->cancelled;
			zb->cancelled = n;
			pthread_mutex_unlock(&zb->mutex);
			return;
		}
		node_free(n);
	}
	for (;;) {
		struct String_vector kids = { 0 };
		struct zk_orphan *o;
		char path[ZK_PATH_MAX];
		int rc;

		pthread_mutex_lock(&zb->mutex);
		o = zb->orphans;
		if (o)
			zb->orphans = o->next;
		pthread_mutex_unlock(&zb->mutex);
		if (!o)
			return;
		if (o->gen != s->gen) {
			free(o);
			continue;
		}
		rc = zoo_get_children(s->zh, o->parent, 0, &kids);
		if (rc == ZOK) {
			for (int i = 0; i < kids.count; i++) {
				if (strncmp(kids.data[i], o->prefix,
					    strlen(o->prefix)) != 0)
					continue;
				snprintf(path, sizeof(path), "%s/%s", o->parent,
					 kids.data[i]);
				rc = zoo_delete(s->zh, path, -1);
				dl_log(DL_LOG_INFO, "zk: removed orphan %s: %s",
				       path, zerror(rc));
			}
			deallocate_String_vector(&kids);
		}
		if (rc != ZOK && rc != ZNONODE) {
			/* not connected again: keep it for the next time */
			pthread_mutex_lock(&zb->mutex);
			o->next = zb->orphans;
			zb->orphans = o;
			pthread_mutex_unlock(&zb->mutex);
			return;
		}
		free(o);
	}
}

/*
 * Create session @s's liveness node, CHROOT/s/SESSIONID (ephemeral), that
 * tells the waiters of other hosts a release from an expiry (see
 * zk_check_freed).  Until it exists, a release of ours looks like an
 * expiry and costs the next holder lock_delay_ms: slower, never unsafe.
 */
static void zk_register(struct zk_backend *zb, struct zk_sess *s)
{
	const clientid_t *cid = zoo_client_id(s->zh);
	char path[ZK_ROOT_MAX + 32];
	int rc;

	if (s->registered || !cid || !cid->client_id)
		return;
	zk_sess_path(zb, cid->client_id, path, sizeof(path));
	rc = zoo_create(s->zh, path, NULL, -1, zb->acl, ZOO_EPHEMERAL, NULL, 0);
	if (rc == ZNONODE) {
		char parent[ZK_ROOT_MAX + 4];

		snprintf(parent, sizeof(parent), "%s/s", zb->root);
		rc = zk_make_path(zb, s->zh, parent);
		if (rc == ZOK)
			rc = zoo_create(s->zh, path, NULL, -1, zb->acl,
					ZOO_EPHEMERAL, NULL, 0);
	}
	if (rc == ZOK || rc == ZNODEEXISTS)
		s->registered = true;
	else
		dl_log(DL_LOG_WARNING, "zk: create %s: %s; will retry", path,
		       zerror(rc));
}

/* write the dirty nodes of every idle owner */
static void zk_reconcile(struct zk_backend *zb)
{
	struct zk_sess *s;

	if (zk_sess_get(zb, 0, &s) < 0)
		return;
	zk_register(zb, s);
	zk_clean_orphans(zb, s);
	for (size_t b = 0; b < ZK_BUCKETS; b++) {
		for (;;) {
			struct zk_owner *ow, *found = NULL;
			bool dirty = false;

			pthread_mutex_lock(&zb->mutex);
			for (ow = zb->owners[b]; ow && !found; ow = ow->next) {
				if (ow->busy)
					continue;
				for (struct zk_node *n = ow->nodes; n;
				     n = n->next)
					if (n->dirty && n->gen == s->gen)
						found = ow;
			}
			if (found) {
				found->busy = true;
				found->refs++;
			}
			pthread_mutex_unlock(&zb->mutex);
			if (!found)
				break;
			owner_flush(zb, s, found);
			zk_parent_cleanup(zb, s->zh, found);
			for (struct zk_node *n = found->nodes; n; n = n->next)
				dirty = dirty || (n->dirty && n->gen == s->gen);
			owner_release(zb, found);
			if (dirty)
				goto out; /* connection gone again: next time */
		}
	}
out:
	zk_sess_put(zb, s);
}

static void *zk_worker_main(void *arg)
{
	struct zk_backend *zb = arg;

	pthread_mutex_lock(&zb->mutex);
	while (!zb->stopping) {
		struct zk_held_ev *ev, **evp;
		struct zk_waiter *w;
		int64_t wake;

		if (zb->need_session && !zb->sess) {
			pthread_mutex_unlock(&zb->mutex);
			if (zk_session_start(zb) < 0) {
				pthread_mutex_lock(&zb->mutex);
				zk_cond_wait_until(zb, dl_mono_ms() + 1000);
				continue;
			}
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		if (zb->expired_pending) {
			unsigned gen = zb->sess ? zb->sess->gen : 0;

			zb->expired_pending = false;
			pthread_mutex_unlock(&zb->mutex);
			zk_abandon(zb, gen, "expired");
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		if (zb->connected_pending) {
			zb->connected_pending = false;
			for (w = zb->waiters; w; w = w->next)
				w->kick = true;
			for (ev = zb->held_evs; ev; ev = ev->next)
				ev->retry = false;
			zb->reconcile = true;
			continue;
		}
		if (zb->reconcile && zb->state == ZOO_CONNECTED_STATE) {
			zb->reconcile = false;
			pthread_mutex_unlock(&zb->mutex);
			zk_reconcile(zb);
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		for (evp = &zb->held_evs; *evp; evp = &(*evp)->next)
			if (!(*evp)->retry &&
			    ((*evp)->deleted ||
			     zb->state == ZOO_CONNECTED_STATE))
				break;
		if (*evp) {
			ev = *evp;
			*evp = ev->next;
			pthread_mutex_unlock(&zb->mutex);
			zk_held_check(zb, ev);
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		wake = 0;
		for (w = zb->waiters; w; w = w->next) {
			if (w->wake_at && w->wake_at <= dl_mono_ms()) {
				w->wake_at = 0;
				w->kick = true;
			}
			if (w->wake_at && (!wake || w->wake_at < wake))
				wake = w->wake_at;
		}
		for (w = zb->waiters; w; w = w->next)
			if (w->kick && !w->busy &&
			    zb->state == ZOO_CONNECTED_STATE)
				break;
		if (w) {
			uint64_t id = w->wait_id;

			pthread_mutex_unlock(&zb->mutex);
			zk_test_sleep(zb->test_kick_delay_ms);
			zk_reevaluate(zb, id);
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		if (wake)
			zk_cond_wait_until(zb, wake);
		else
			pthread_cond_wait(&zb->cond, &zb->mutex);
	}
	pthread_mutex_unlock(&zb->mutex);
	return NULL;
}

struct zk_hb {
	struct zk_backend *zb;
	unsigned gen;
	int64_t sent;
};

static void zk_hb_done(int rc, const struct Stat *stat, const void *data)
{
	const struct zk_hb *hb = data;
	struct zk_backend *zb = hb->zb;

	(void)stat;
	pthread_mutex_lock(&zb->mutex);
	zb->hb_inflight = false;
	if (zb->sess && zb->sess->gen == hb->gen &&
	    (rc == ZOK || rc == ZNONODE) && hb->sent > zb->last_ok_ms) {
		zb->last_ok_ms = hb->sent;
		zk_lease_publish_locked(zb, zb->sess);
	}
	pthread_mutex_unlock(&zb->mutex);
	free((void *)hb);
}

/* do we hold or wait for anything in session @gen? (mutex held) */
static bool zk_has_state(struct zk_backend *zb, unsigned gen)
{
	if (zb->nwaiters)
		return true;
	for (size_t b = 0; b < ZK_BUCKETS; b++)
		for (struct zk_owner *ow = zb->owners[b]; ow; ow = ow->next)
			for (struct zk_node *n = ow->nodes; n; n = n->next)
				if (n->gen == gen && n->ranges.n)
					return true;
	return false;
}

/*
 * Lease thread: renew (heartbeat) and, when the server has not answered
 * for timeout - margin, give the session up before the server can hand
 * our locks to somebody else.
 */
static void *zk_lease_main(void *arg)
{
	struct zk_backend *zb = arg;

	pthread_mutex_lock(&zb->mutex);
	while (!zb->stopping) {
		int64_t now = dl_mono_ms(), period, deadline;
		int to = zb->negotiated_ms ? zb->negotiated_ms : zb->timeout_ms;

		period = to / 5 > 20 ? to / 5 : 20;
		deadline = zk_lease_deadline_locked(zb);
		if (zb->sess && zb->last_ok_ms && now >= deadline &&
		    zk_has_state(zb, zb->sess->gen)) {
			unsigned gen = zb->sess->gen;

			pthread_mutex_unlock(&zb->mutex);
			zk_abandon(zb, gen,
				   "lease ran out (no answer from "
				   "the server for the session timeout)");
			pthread_mutex_lock(&zb->mutex);
			continue;
		}
		if (zb->sess && zb->state == ZOO_CONNECTED_STATE &&
		    !zb->hb_inflight) {
			struct zk_hb *hb = malloc(sizeof(*hb));
			struct zk_sess *s = zb->sess;

			if (hb) {
				*hb = (struct zk_hb){ zb, s->gen, now };
				zb->hb_inflight = true;
				s->refs++;
				pthread_mutex_unlock(&zb->mutex);
				if (zoo_aexists(s->zh, "/", 0, zk_hb_done,
						hb) != ZOK) {
					free(hb);
					pthread_mutex_lock(&zb->mutex);
					zb->hb_inflight = false;
					pthread_mutex_unlock(&zb->mutex);
				}
				zk_sess_put(zb, s);
				pthread_mutex_lock(&zb->mutex);
			}
		}
		if (zb->last_ok_ms && zb->sess && deadline > now &&
		    deadline < now + period)
			zk_cond_wait_until(zb, deadline);
		else
			zk_cond_wait_until(zb, now + period);
	}
	pthread_mutex_unlock(&zb->mutex);
	return NULL;
}

/* ---- URI --------------------------------------------------------------- */

struct zk_uri {
	char *hosts;
	char *root;
	int timeout_ms;
	int lock_delay_ms; /* -1 until set: a third of timeout_ms */
};

static void zk_uri_free(struct zk_uri *u)
{
	free(u->hosts);
	free(u->root);
}

/* parse "//HOST:PORT[,HOST:PORT...]/CHROOT[?PARAM=N[&PARAM=N]]", PARAM
 * session_timeout_ms or lock_delay_ms */
static int zk_uri_parse(const char *rest, struct zk_uri *u, char *err,
			size_t errlen)
{
	const char *h, *slash, *q;
	size_t hl, rl;

	memset(u, 0, sizeof(*u));
	u->timeout_ms = ZK_DEFAULT_TIMEOUT_MS;
	u->lock_delay_ms = -1;
	if (strncmp(rest, "//", 2) != 0) {
		snprintf(err, errlen,
			 "malformed zk URI: expected "
			 "zk://HOST:PORT[,HOST:PORT...]/CHROOT");
		return -EINVAL;
	}
	h = rest + 2;
	slash = strchr(h, '/');
	if (!slash) {
		snprintf(err, errlen,
			 "malformed zk URI: a /CHROOT path is "
			 "required (e.g. zk://127.0.0.1:2181/dlock)");
		return -EINVAL;
	}
	hl = (size_t)(slash - h);
	if (hl == 0) {
		snprintf(err, errlen, "malformed zk URI: no HOST:PORT");
		return -EINVAL;
	}
	/* each host: non-empty name, ':' and a port 1..65535 */
	for (const char *p = h; p < slash;) {
		const char *comma = memchr(p, ',', (size_t)(slash - p));
		const char *e = comma ? comma : slash;
		const char *colon = NULL;
		char *end;
		long port;

		for (const char *c = p; c < e; c++) {
			if (*c == ':')
				colon = c;
			if (*c == '@' || *c == '?' || *c == ' ') {
				snprintf(err, errlen,
					 "malformed zk URI: bad "
					 "character '%c' in the host list "
					 "(credentials go in the config file: "
					 "zk_user, zk_password)",
					 *c);
				return -EINVAL;
			}
		}
		if (!colon || colon == p || colon + 1 == e) {
			snprintf(err, errlen,
				 "malformed zk URI: each server "
				 "must be HOST:PORT");
			return -EINVAL;
		}
		port = strtol(colon + 1, &end, 10);
		if (end != e || port < 1 || port > 65535) {
			snprintf(err, errlen,
				 "malformed zk URI: bad port "
				 "'%.*s'",
				 (int)(e - colon - 1), colon + 1);
			return -EINVAL;
		}
		p = comma ? comma + 1 : slash;
		if (comma && p == slash) {
			snprintf(err, errlen,
				 "malformed zk URI: empty server "
				 "in the host list");
			return -EINVAL;
		}
	}
	q = strchr(slash, '?');
	rl = q ? (size_t)(q - slash) : strlen(slash);
	if (rl < 2 || slash[rl - 1] == '/' || memmem(slash, rl, "//", 2) ||
	    rl >= ZK_ROOT_MAX - 2) {
		snprintf(err, errlen,
			 "malformed zk URI: CHROOT must be a "
			 "path like /dlock (no trailing or double '/')");
		return -EINVAL;
	}
	for (size_t i = 0; i < rl; i++) {
		unsigned char c = (unsigned char)slash[i];

		if (c < 0x21 || c > 0x7e) {
			snprintf(err, errlen,
				 "malformed zk URI: CHROOT holds "
				 "a blank or non-printable character");
			return -EINVAL;
		}
		if (c == '.' && slash[i - 1] == '/' &&
		    (i + 1 == rl || slash[i + 1] == '/' ||
		     (slash[i + 1] == '.' &&
		      (i + 2 == rl || slash[i + 2] == '/')))) {
			snprintf(err, errlen,
				 "malformed zk URI: CHROOT must "
				 "not hold '.' or '..' components");
			return -EINVAL;
		}
	}
	for (const char *v = q ? q + 1 : NULL; v;) {
		const char *amp = strchr(v, '&');
		size_t vl = amp ? (size_t)(amp - v) : strlen(v);
		char num[16], *end;
		int *dst;
		long t, lo, hi;

		if (vl > 19 && strncmp(v, "session_timeout_ms=", 19) == 0) {
			dst = &u->timeout_ms;
			v += 19, vl -= 19, lo = 100, hi = 600000;
		} else if (vl > 14 && strncmp(v, "lock_delay_ms=", 14) == 0) {
			dst = &u->lock_delay_ms;
			v += 14, vl -= 14, lo = 0, hi = 600000;
		} else {
			snprintf(err, errlen,
				 "malformed zk URI: unknown parameter '%.*s' "
				 "(known: session_timeout_ms=100..600000, "
				 "lock_delay_ms=0..600000)",
				 (int)vl, v);
			return -EINVAL;
		}
		snprintf(num, sizeof(num), "%.*s", (int)vl, v);
		errno = 0;
		t = strtol(num, &end, 10);
		if (errno || end == num || *end || vl >= sizeof(num) ||
		    t < lo || t > hi) {
			snprintf(err, errlen,
				 "malformed zk URI: %s must be %ld..%ld%s",
				 dst == &u->timeout_ms ? "session_timeout_ms"
						       : "lock_delay_ms",
				 lo, hi,
				 dst == &u->timeout_ms ? ""
						       : " (0: none; default: "
							 "a third of "
							 "session_timeout_ms)");
			return -EINVAL;
		}
		*dst = (int)t;
		v = amp ? amp + 1 : NULL;
	}
	if (u->lock_delay_ms < 0)
		u->lock_delay_ms = u->timeout_ms / 3;
	u->hosts = strndup(h, hl);
	u->root = strndup(slash, rl);
	if (!u->hosts || !u->root) {
		zk_uri_free(u);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int zk_check_uri(const char *rest, char *err, size_t errlen)
{
	struct zk_uri u;
	int ret = zk_uri_parse(rest, &u, err, errlen);

	if (ret == 0)
		zk_uri_free(&u);
	return ret;
}

/* ---- ops --------------------------------------------------------------- */

static void zk_close(struct dl_backend *be);

static int zk_open(const struct dl_backend_conf *conf,
		   const struct dl_backend_cb *cb, struct dl_backend **out,
		   char *err, size_t errlen)
{
	const char *rest = strchr(conf->uri, ':') + 1;
	const char *user = NULL, *pass = NULL;
	struct zk_backend *zb;
	pthread_condattr_t ca;
	struct zk_sess *s;
	struct zk_uri u;
	int ret, rc, start_ms;

	ret = zk_uri_parse(rest, &u, err, errlen);
	if (ret < 0)
		return ret;
	if (conf->config) {
		user = dl_config_get(conf->config, "zk_user");
		pass = dl_config_get(conf->config, "zk_password");
	}
	if ((user != NULL) != (pass != NULL) || (user && strchr(user, ':'))) {
		snprintf(err, errlen,
			 "zk: set both zk_user and zk_password "
			 "in the config file (and no ':' in zk_user)");
		zk_uri_free(&u);
		return -EINVAL;
	}
	zb = calloc(1, sizeof(*zb));
	if (!zb) {
		zk_uri_free(&u);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	zb->base.ops = &dl_zk_ops;
	zb->cb = *cb;
	snprintf(zb->host, sizeof(zb->host), "%s", conf->host_id);
	zk_hex(zb->host, strlen(zb->host), zb->host_hex);
	zb->incarnation = conf->incarnation;
	zb->lfence = conf->lease;
	/* nothing is trusted until the first session answers */
	atomic_store(&zb->lfence->until_ms, 0);
	zb->hosts = u.hosts;
	snprintf(zb->root, sizeof(zb->root), "%s", u.root);
	snprintf(zb->base_path, sizeof(zb->base_path), "%s/r", u.root);
	free(u.root);
	zb->timeout_ms = u.timeout_ms;
	zb->lock_delay_ms = u.lock_delay_ms;
	zb->test_abandon_delay_ms = zk_test_env("DLOCKFS_TEST_ZK_ABANDON_DELAY_"
						"MS");
	zb->test_kick_delay_ms = zk_test_env("DLOCKFS_TEST_ZK_KICK_DELAY_MS");
	zb->containers = true;
	zb->acl = &ZOO_OPEN_ACL_UNSAFE;
	if (user) {
		size_t l = strlen(user) + strlen(pass) + 2;

		zb->auth = malloc(l);
		if (!zb->auth) {
			free(zb->hosts);
			free(zb);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		snprintf(zb->auth, l, "%s:%s", user, pass);
		zb->acl = &ZOO_CREATOR_ALL_ACL;
	}
	pthread_mutex_init(&zb->mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&zb->cond, &ca);
	pthread_condattr_destroy(&ca);
	zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);

	ret = zk_session_start(zb);
	if (ret < 0) {
		snprintf(err, errlen, "zk: cannot start a session with %s: %s",
			 zb->hosts, strerror(-ret));
		goto out_close;
	}
	/* the first connection, bounded whatever session_timeout_ms says: a
	 * daemon that cannot reach its lock store exits and does not mount */
	start_ms = zb->timeout_ms < ZK_START_WAIT_MIN_MS ? ZK_START_WAIT_MIN_MS
		   : zb->timeout_ms > ZK_START_WAIT_MAX_MS
			   ? ZK_START_WAIT_MAX_MS
			   : zb->timeout_ms;
	ret = zk_sess_get(zb, start_ms, &s);
	if (ret < 0) {
		snprintf(err, errlen,
			 "zk: cannot connect to %s within %d s (state %s)",
			 zb->hosts, start_ms / 1000, zk_state_name(zb->state));
		goto out_close;
	}
	rc = zk_make_path(zb, s->zh, zb->base_path);
	if (rc == ZOK)
		zk_register(zb, s);
	zk_sess_put(zb, s);
	if (rc != ZOK) {
		snprintf(err, errlen, "zk: cannot create %s: %s%s",
			 zb->base_path, zerror(rc),
			 rc == ZNOAUTH ? " (check zk_user/zk_password)" : "");
		ret = zk_errno(rc);
		goto out_close;
	}
	ret = -pthread_create(&zb->worker, NULL, zk_worker_main, zb);
	if (ret == 0) {
		ret = -pthread_create(&zb->lease, NULL, zk_lease_main, zb);
		if (ret < 0) {
			pthread_mutex_lock(&zb->mutex);
			zb->stopping = true;
			pthread_cond_broadcast(&zb->cond);
			pthread_mutex_unlock(&zb->mutex);
			pthread_join(zb->worker, NULL);
		}
	}
	if (ret < 0) {
		snprintf(err, errlen, "zk: cannot start threads: %s",
			 strerror(-ret));
		goto out_close;
	}
	zb->threads_started = true;
	dl_log(DL_LOG_INFO,
	       "zk: connected to %s, root %s, session timeout "
	       "%d ms (negotiated %d), lock-delay %d ms%s",
	       zb->hosts, zb->root, zb->timeout_ms, zb->negotiated_ms,
	       zb->lock_delay_ms, zb->auth ? ", digest auth" : "");
	*out = &zb->base;
	return 0;

out_close:
	zk_close(&zb->base);
	return ret;
}

static void zk_close(struct dl_backend *be)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_sess *s;

	pthread_mutex_lock(&zb->mutex);
	zb->stopping = true;
	pthread_cond_broadcast(&zb->cond);
	pthread_mutex_unlock(&zb->mutex);
	if (zb->threads_started) {
		pthread_join(zb->worker, NULL);
		pthread_join(zb->lease, NULL);
	}
	pthread_mutex_lock(&zb->mutex);
	s = zb->sess;
	zb->sess = NULL;
	pthread_mutex_unlock(&zb->mutex);
	/* closing the session deletes our ephemeral nodes at once */
	if (s)
		zk_sess_put(zb, s);
	while (zb->waiters) {
		struct zk_waiter *w = zb->waiters;

		zb->waiters = w->next;
		node_free(w->node);
		free(w);
	}
	for (size_t b = 0; b < ZK_BUCKETS; b++) {
		while (zb->owners[b]) {
			struct zk_owner *ow = zb->owners[b];

			zb->owners[b] = ow->next;
			owner_purge(ow, 0);
			free(ow->name_hex);
			free(ow);
		}
	}
	while (zb->orphans) {
		struct zk_orphan *o = zb->orphans;

		zb->orphans = o->next;
		free(o);
	}
	while (zb->cancelled) {
		struct zk_node *n = zb->cancelled;

		zb->cancelled = n->next;
		node_free(n);
	}
	while (zb->held_evs) {
		struct zk_held_ev *ev = zb->held_evs;

		zb->held_evs = ev->next;
		free(ev);
	}
	pthread_cond_destroy(&zb->cond);
	pthread_mutex_destroy(&zb->mutex);
	if (zb->auth) {
		explicit_bzero(zb->auth, strlen(zb->auth));
		free(zb->auth);
	}
	free(zb->hosts);
	free(zb);
}

static bool req_valid(const struct dl_lock_req *req, bool unlock)
{
	if (req->start > req->end || (unsigned)req->space > DL_SPACE_POSIX)
		return false;
	if (unlock)
		return true;
	return req->type == DL_RDLCK || req->type == DL_WRLCK;
}

/* the token of the owner's node covering byte @at (0 if none) */
static uint64_t owner_token_at(const struct zk_owner *ow, uint64_t at)
{
	for (const struct zk_node *n = ow->nodes; n; n = n->next)
		for (size_t i = 0; i < n->ranges.n; i++)
			if (n->ranges.v[i].start <= at &&
			    at <= n->ranges.v[i].end)
				return n->czxid;
	return 0;
}

/* what a POSIX request means for an owner holding @set */
enum zk_kind { ZK_SATISFIED, ZK_REDUCE, ZK_GROW };

static enum zk_kind zk_classify(const struct dl_range_set *set,
				const struct dl_lock_req *req)
{
	uint64_t pos = req->start;
	bool same = true;

	/* set holds one owner (0) sorted by start */
	for (size_t i = 0; i < set->n; i++) {
		const struct dl_range_lock *l = &set->v[i];

		if (l->end < pos)
			continue;
		if (l->start > req->end)
			break;
		if (l->start > pos)
			return ZK_GROW; /* a gap: new bytes */
		if (req->type == DL_WRLCK && l->type == DL_RDLCK)
			return ZK_GROW; /* upgrade */
		if (l->type != req->type)
			same = false;
		if (l->end >= req->end)
			return same ? ZK_SATISFIED : ZK_REDUCE;
		pos = l->end + 1;
	}
	return ZK_GROW;
}

/*
 * Before answering from @ow's cached nodes (already held, same mode,
 * downgrade): the nodes covering [start, end] must still be on the server
 * and @s must still be the current session, since a break or an expiry
 * may not have reached the worker yet (ZooKeeper delivers a watch event
 * before the answer of a later request of the same session, so a
 * successful exists proves the node is there).  Busy held.  0, or -ENOLCK
 * (a vanished node is handed to the worker, which reports it lost).
 */
static int owner_verify(struct zk_backend *zb, struct zk_sess *s,
			struct zk_owner *ow, uint64_t start, uint64_t end)
{
	bool alive;

	for (const struct zk_node *n = ow->nodes; n; n = n->next) {
		bool covers = false;
		struct Stat st;
		int rc;

		for (size_t i = 0; i < n->ranges.n && !covers; i++)
			covers = range_overlap(n->ranges.v[i].start,
					       n->ranges.v[i].end, start, end);
		if (!covers)
			continue;
		rc = zoo_exists(s->zh, n->path, 0, &st);
		if (rc == ZNONODE) {
			dl_log(DL_LOG_WARNING,
			       "zk: %s owner=%016" PRIx64 ": %s is gone; not "
			       "reporting it held",
			       ow->resource, ow->owner, n->path);
			zk_held_queue(zb, s->gen, n->path, true, false);
			return -ENOLCK;
		}
		if (rc != ZOK)
			return zk_errno(rc);
	}
	pthread_mutex_lock(&zb->mutex);
	alive = zb->sess == s && !ow->stale;
	pthread_mutex_unlock(&zb->mutex);
	return alive ? 0 : -ENOLCK;
}

/* downgrade to read every byte of [start, end] the owner holds (busy) */
static void owner_downgrade(struct zk_backend *zb, struct zk_sess *s,
			    struct zk_owner *ow, const struct dl_lock_req *req)
{
	for (struct zk_node *n = ow->nodes; n; n = n->next) {
		struct dl_range_lock pieces[64];
		size_t np = 0;

		for (size_t i = 0; i < n->ranges.n && np < 64; i++) {
			const struct dl_range_lock *l = &n->ranges.v[i];

			if (l->type != DL_WRLCK ||
			    !range_overlap(l->start, l->end, req->start,
					   req->end))
				continue;
			pieces[np] = *l;
			pieces[np].type = DL_RDLCK;
			if (pieces[np].start < req->start)
				pieces[np].start = req->start;
			if (pieces[np].end > req->end)
				pieces[np].end = req->end;
			np++;
		}
		if (!np)
			continue;
		pthread_mutex_lock(&zb->mutex);
		for (size_t i = 0; i < np; i++)
			range_set_apply(&n->ranges, &pieces[i]);
		pthread_mutex_unlock(&zb->mutex);
		n->dirty = true;
	}
	owner_flush(zb, s, ow);
}

static int zk_lock_req(struct zk_backend *zb, const struct dl_lock_req *req,
		       struct dl_grant *grant);

static int zk_lock(struct dl_backend *be, const struct dl_lock_req *req,
		   struct dl_grant *grant)
{
	return zk_lock_req(zk_of(be), req, grant);
}

static int zk_lock_req(struct zk_backend *zb, const struct dl_lock_req *req,
		       struct dl_grant *grant)
{
	struct zk_owner *ow;
	struct zk_sess *s;
	struct zk_node *n = NULL;
	struct zk_blocker blk;
	struct dl_range_set set = { 0 };
	bool jumped;
	int ret;

	if (!req_valid(req, false))
		return -EINVAL;
	ow = owner_acquire(zb, req->resource, req->space, req->owner);
	if (!ow)
		return -ENOMEM;
	ret = zk_sess_get(zb, zk_connect_wait(zb), &s);
	if (ret < 0) {
		dl_log(DL_LOG_NOTICE,
		       "zk: lock %s: no connection to "
		       "ZooKeeper within %" PRId64 " ms",
		       req->resource, zk_connect_wait(zb));
		goto out_owner;
	}
	pthread_mutex_lock(&zb->mutex);
	owner_purge(ow, s->gen);
	pthread_mutex_unlock(&zb->mutex);
	owner_flush(zb, s, ow);

	if (req->space == DL_SPACE_FLOCK) {
		bool have = false, same = false;

		for (struct zk_node *f = ow->nodes; f; f = f->next)
			for (size_t i = 0; i < f->ranges.n; i++) {
				have = true;
				same = f->ranges.v[i].type == req->type;
			}
		if (have && same) {
			ret = owner_verify(zb, s, ow, 0, DL_RANGE_EOF);
			grant->token = owner_token_at(ow, 0);
			goto out_sess;
		}
		/* as flock(2): a conversion drops the old lock first */
		if (have)
			owner_reduce(zb, s, ow, 0, DL_RANGE_EOF);
	} else {
		ret = owner_set(ow, &set);
		if (ret < 0)
			goto out_sess;
		switch (zk_classify(&set, req)) {
		case ZK_SATISFIED:
			ret = owner_verify(zb, s, ow, req->start, req->end);
			grant->token = owner_token_at(ow, req->start);
			goto out_sess;
		case ZK_REDUCE:
			ret = owner_verify(zb, s, ow, req->start, req->end);
			if (ret == 0)
				owner_downgrade(zb, s, ow, req);
			grant->token = owner_token_at(ow, req->start);
			goto out_sess;
		case ZK_GROW:
			break;
		}
	}

	n = calloc(1, sizeof(*n));
	if (!n) {
		ret = -ENOMEM;
		goto out_sess;
	}
	n->pid = req->pid;
	n->wait_id = req->wait_id;
	ret = range_set_apply(&n->ranges,
			      &(struct dl_range_lock){ .start = req->start,
						       .end = req->end,
						       .type = req->type });
	if (ret < 0)
		goto out_node;
	ret = zk_create_node(zb, s, ow, n);
	if (ret < 0)
		goto out_node;
	ret = zk_evaluate(zb, s->zh, ow, n, &blk, &jumped);
	if (ret == 1) {
		uint64_t t = n->czxid;

		ret = zk_finish_grant(zb, s, ow, n, jumped);
		if (ret == 0) {
			grant->token = t;
			n = NULL;
		}
		goto out_delete;
	}
	if (ret == 0 && req->wait_id) {
		struct zk_waiter *w = calloc(1, sizeof(*w));

		if (!w) {
			ret = -ENOMEM;
			goto out_delete;
		}
		w->wait_id = req->wait_id;
		w->ow = ow;
		w->node = n;
		snprintf(w->blk_path, sizeof(w->blk_path), "%s", blk.path);
		w->blk_sid = blk.sid;
		pthread_mutex_lock(&zb->mutex);
		if (zb->sess != s) {
			pthread_mutex_unlock(&zb->mutex);
			free(w);
			ret = -ENOLCK;
			goto out_delete;
		}
		ow->refs++;
		w->next = zb->waiters;
		zb->waiters = w;
		zb->nwaiters++;
		pthread_mutex_unlock(&zb->mutex);
		n = NULL;
		if (zk_watch(s->zh, &blk, req->wait_id)) {
			pthread_mutex_lock(&zb->mutex);
			w = waiter_find(zb, req->wait_id);
			if (w)
				w->kick = true;
			pthread_cond_broadcast(&zb->cond);
			pthread_mutex_unlock(&zb->mutex);
		}
		ret = -EINPROGRESS;
		goto out_sess;
	}
	if (ret == 0)
		ret = -EAGAIN;

out_delete:
	if (n && n->path[0]) {
		int rc = zoo_delete(s->zh, n->path, -1);

		if (rc != ZOK && rc != ZNONODE) {
			/* keep it to delete later, as an empty node */
			range_set_free(&n->ranges);
			n->dirty = true;
			pthread_mutex_lock(&zb->mutex);
			n->next = ow->nodes;
			ow->nodes = n;
			pthread_mutex_unlock(&zb->mutex);
			n = NULL;
		}
	}
	if (n)
		zk_parent_cleanup(zb, s->zh, ow);
out_node:
	node_free(n);
out_sess:
	grant->lease = s->gen;
	range_set_free(&set);
	zk_sess_put(zb, s);
out_owner:
	owner_release(zb, ow);
	return ret;
}

static int zk_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_owner *ow;
	struct zk_sess *s = NULL;

	if (!req_valid(req, true))
		return -EINVAL;
	ow = owner_acquire(zb, req->resource, req->space, req->owner);
	if (!ow)
		return -ENOMEM;
	if (ow->nodes) {
		/* unlocks never fail: without a connection they are
		 * written when it is back (or the session ends them) */
		if (zk_sess_get(zb, 0, &s) < 0)
			s = NULL;
		if (s) {
			pthread_mutex_lock(&zb->mutex);
			owner_purge(ow, s->gen);
			pthread_mutex_unlock(&zb->mutex);
		}
		owner_reduce(zb, s, ow, req->start, req->end);
		if (s) {
			zk_parent_cleanup(zb, s->zh, ow);
			zk_sess_put(zb, s);
		} else {
			pthread_mutex_lock(&zb->mutex);
			zb->reconcile = true;
			pthread_mutex_unlock(&zb->mutex);
		}
	}
	owner_release(zb, ow);
	return 0;
}

/* drop the owner's nodes granted with a token (czxid) <= @max_token: a
 * node created by a newer grant survives a late release */
static int zk_release_owner(struct dl_backend *be, const char *resource,
			    enum dl_space space, uint64_t owner,
			    uint64_t max_token)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_owner *ow;
	struct zk_sess *s = NULL;

	ow = owner_acquire(zb, resource, space, owner);
	if (!ow)
		return -ENOMEM;
	if (ow->nodes) {
		if (zk_sess_get(zb, 0, &s) < 0)
			s = NULL;
		pthread_mutex_lock(&zb->mutex);
		if (s)
			owner_purge(ow, s->gen);
		for (struct zk_node *n = ow->nodes; n; n = n->next)
			if (n->czxid <= max_token && n->ranges.n) {
				range_set_free(&n->ranges);
				n->dirty = true;
			}
		if (!s)
			zb->reconcile = true;
		pthread_mutex_unlock(&zb->mutex);
		if (s) {
			owner_flush(zb, s, ow);
			zk_parent_cleanup(zb, s->zh, ow);
			zk_sess_put(zb, s);
		}
	}
	owner_release(zb, ow);
	return 0;
}

static int zk_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct zk_backend *zb = zk_of(be);
	struct zk_waiter *w;
	struct zk_sess *s;
	struct zk_node *n;
	struct zk_owner *ow;

	pthread_mutex_lock(&zb->mutex);
	for (;;) {
		w = waiter_find(zb, wait_id);
		if (!w || !w->busy)
			break;
		pthread_cond_wait(&zb->cond, &zb->mutex);
	}
	if (!w) {
		pthread_mutex_unlock(&zb->mutex);
		return -ENOENT; /* granted or failed: its callback is due */
	}
	waiter_unlink(zb, w);
	n = w->node;
	ow = w->ow;
	pthread_mutex_unlock(&zb->mutex);
	free(w);

	/*
	 * Delete the waiting node; nothing is left behind.  Without a
	 * connection (the session may well be alive, and its node would
	 * block every later conflicting request on every host until it
	 * ends) the node itself is kept on zb->cancelled - no allocation, so
	 * no failure - and deleted on reconnect; the end of its session
	 * deletes it otherwise.  The caller never waits for a connection.
	 */
	if (zk_sess_get(zb, 0, &s) == 0) {
		if (s->gen == n->gen) {
			int rc = zoo_delete(s->zh, n->path, -1);

			if (rc == ZOK || rc == ZNONODE) {
				node_free(n);
				n = NULL;
			}
		}
		zk_sess_put(zb, s);
	}
	pthread_mutex_lock(&zb->mutex);
	if (n) {
		dl_log(DL_LOG_INFO, "zk: cancel: %s deleted once reconnected",
		       n->path);
		n->next = zb->cancelled;
		zb->cancelled = n;
		zb->reconcile = true;
		pthread_cond_broadcast(&zb->cond);
	}
	owner_put_locked(zb, ow);
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

/* ---- inspection -------------------------------------------------------- */

/*
 * Grant status of every node of @snap, for inspection: our own nodes as
 * this daemon knows them (c->local, see zk_mark_local), the others by the
 * rule.  Our node is held only once its grant was processed here: by the
 * rule alone, a node whose predecessor just went would look granted while
 * its request still waits - a wait-for cycle that never existed.
 */
static void zk_classify_snap(struct zk_snap *snap)
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
			    !ranges_conflict(&e->ranges, &x->ranges))
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
						 ranges_conflict(&f->ranges,
								 &e->ranges);
				}
			blocked = !exempt;
		}
		x->granted = !blocked;
	}
}

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
		ret = zk_snapshot(s->zh, parent, hex, NULL, 0, snap);
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

static int zk_getlk(struct dl_backend *be, const struct dl_lock_req *req,
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

	if (!req_valid(req, false))
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
	snap_free(&snap);
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

static int zk_list(struct dl_backend *be, const char *resource,
		   dl_lock_info_fn fn, void *arg)
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
		snap_free(&snap);
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
		snap_free(&snap);
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
static int zk_break_lock(struct dl_backend *be, const char *resource)
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
	ret = zk_snapshot(s->zh, parent, hex, NULL, 0, &snap);
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
	snap_free(&snap);
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

static int zk_status(struct dl_backend *be, char *buf, size_t len)
{
	struct zk_backend *zb = zk_of(be);
	const clientid_t *cid = NULL;
	struct zk_sess *s = NULL;
	size_t held = 0;
	int64_t sid = 0;

	/* the session id, asked of the library without our mutex */
	pthread_mutex_lock(&zb->mutex);
	if (zb->sess && zb->state == ZOO_CONNECTED_STATE) {
		s = zb->sess;
		s->refs++;
	}
	pthread_mutex_unlock(&zb->mutex);
	if (s) {
		cid = zoo_client_id(s->zh);
		sid = cid ? cid->client_id : 0;
		zk_sess_put(zb, s);
	}
	pthread_mutex_lock(&zb->mutex);
	for (size_t b = 0; b < ZK_BUCKETS; b++)
		for (struct zk_owner *ow = zb->owners[b]; ow; ow = ow->next) {
			bool has = false;

			for (struct zk_node *n = ow->nodes; n; n = n->next)
				has = has || n->ranges.n;
			held += has;
		}
	snprintf(buf, len,
		 "health=%s session=0x%" PRIx64 " timeout_ms=%d "
		 "held=%zu waiting=%zu wakeups=%" PRIu64 " sessions_lost="
		 "%" PRIu64,
		 zb->sess ? zk_state_name(zb->state) : "expired", (uint64_t)sid,
		 zb->negotiated_ms ? zb->negotiated_ms : zb->timeout_ms, held,
		 zb->nwaiters, zb->wakeups, zb->sessions_lost);
	pthread_mutex_unlock(&zb->mutex);
	return 0;
}

const struct dl_backend_ops dl_zk_ops = {
	.scheme = "zk",
	.guarantee = "strong: ZooKeeper quorum writes (linearizable), FIFO "
		     "queue per file; the session is the lease: a host cut off "
		     "longer than the session timeout loses its locks "
		     "(reported "
		     "lost before the server can re-grant them)",
	.shared = true,
	.check_uri = zk_check_uri,
	.open = zk_open,
	.close = zk_close,
	.lock = zk_lock,
	.unlock = zk_unlock,
	.cancel = zk_cancel,
	.release_owner = zk_release_owner,
	.getlk = zk_getlk,
	.list = zk_list,
	.status = zk_status,
	.break_lock = zk_break_lock,
};

/*
 * internal.h - what the files of the ZooKeeper backend ("zk://") share:
 * its state, the constants that size it, and every function one of its
 * files calls in another.  Included by the files of backend/zk/ only:
 * the rest of dlockfs knows this backend as dl_zk_ops (backend.h),
 * nothing more.  Not here: a file's own helpers (static in it).
 *
 * Cluster-wide locks on ZooKeeper (libzookeeper_mt), herd-free and FIFO,
 * with the session as the lease.  The files, each of which opens with
 * what it owns and its own locking rules:
 *   uri.c      the zk:// URI                                       pure
 *   names.c/h  resource name -> znode component, SHA-256, hex     pure
 *   codec.c    a node's data text, sequence numbers, error codes  pure
 *   grant.c    a resource's snapshot and the grant rule
 *   owner.c    our owners and their granted nodes: create, write,
 *              fold a grant into one node, trim, verify
 *   session.c  sessions, the lease and the lease thread, lock-delay,
 *              liveness nodes, abandoning a session
 *   worker.c   the worker thread: waiters, watches, reconnection work
 *   inspect.c  getlk, list, break and poke (anybody's nodes,
 *              read-mostly); version and bump (CHROOT/v)
 *   ops.c      the dl_backend_ops table: open, close, lock, unlock,
 *              cancel, release_owner, status
 *
 * Layout in ZooKeeper, under CHROOT (created when missing):
 *   CHROOT/r/NAME          one CONTAINER node per resource (NAME from
 *                          names.c; persistent + delete-if-empty when the
 *                          server has no containers)
 *   CHROOT/r/NAME/q-IIII-  one EPHEMERAL|SEQUENTIAL node per request of one
 *     RRRR-SSSSSSSSSS      owner; IIII = our incarnation, RRRR = a request
 *                          number (so a create lost to a connection drop can
 *                          be found and deleted), S = the sequence number.
 *   CHROOT/s/SESSIONID     one EPHEMERAL node per live session (lock-delay).
 *   CHROOT/v/NAME          one PERSISTENT node per resource ever bumped:
 *                          its version (backend.h's dl_version) is the
 *                          node's stat.version + 1, its data the host id
 *                          of the last bump, its mtime the time of it.
 *                          Apart from CHROOT/r so that nothing that walks
 *                          or cleans the lock nodes (list, break, the empty
 *                          parent cleanup, sessions ending) ever sees it.
 * A node's data (codec.c) carries the full resource name, the space, the
 * owner, host, pid, wait id, enqueue time, an optional "jumped" mark and
 * the ranges it covers.
 *
 * Pokes (backend.h's poke and cb->revoke) add no node: a daemon asks the
 * holders of a resource for it back by rewriting, unchanged, one granted
 * request node of each other daemon (inspect.c, zk_poke: a conditional
 * set at the version it just read, so the content can never go back to
 * an older state).  The node's version moves, and the watch its holder
 * keeps on each granted node anyway (breaks, worker.c) fires.  The holder
 * records the version of each of its own writes (zk_node.version), so a
 * version it did not write is a poke: its worker calls cb->revoke once.
 * The holder is named by the node's data (o=INCARNATION/OWNER, h=HOST;
 * its ephemeralOwner is the holder's session), so the poker skips its own
 * incarnation's nodes and pokes one node per other daemon.  Nothing is
 * created, so nothing is left behind; a new session's granted nodes are
 * watched like the old ones', and the library re-registers the watches
 * after a reconnection (a poke made meanwhile fires then).  Best effort:
 * a poke that races with its holder's own rewrite of that node is lost
 * (the poker pokes again, backend.h).  Cost: a waiter that watches the
 * poked node wakes up and re-evaluates once for nothing.
 *
 * Threads.  Five kinds run this code:
 *  - callers: the daemon's threads in backend.h's ops, any number at once;
 *  - the worker (worker.c, one): starts sessions, abandons an expired one,
 *    re-evaluates waiters, checks the watch events of our granted nodes,
 *    writes what a disconnection left unwritten;
 *  - the lease thread (session.c, one): heartbeats, and abandons a session
 *    whose lease ran out;
 *  - the library's I/O thread (one per handle): the network; it reaches
 *    our code only through zk_log_cb (which any library call may reach);
 *  - the library's completion thread (one per handle): every watcher and
 *    async completion of the handle (zk_global_watcher, zk_node_watcher,
 *    zk_held_watcher, zk_held_armed, zk_get_done, zk_hb_done,
 *    zk_sync_done).  These only record, queue and signal: a sync call
 *    there waits for a completion that only this thread can deliver
 *    (deadlock), and zookeeper_close() there would join the thread
 *    itself.  Sync calls run on callers, the worker and the lease thread
 *    only.
 * backend.h callbacks: cb->granted from the worker; cb->failed from the
 * worker and from zk_abandon (worker or lease thread); cb->lost from the
 * worker (a break) and from zk_abandon; cb->revoke from the worker (a
 * poke).  lock() answers through its return value, never through a
 * callback on the caller's thread.
 *
 * Locks.
 *  - zb->mutex guards the fields marked so below, every owner entry's
 *    hash link, refs, busy, stale and lost_* fields, the links of its node
 *    list and, once linked, the nodes' ranges, every waiter's link, kick,
 *    busy and wake_at, and each session's refs and state.  It is NEVER
 *    held across a ZooKeeper library call of any kind (sync, async, or an
 *    accessor such as zoo_client_id or zoo_recv_timeout): the library's
 *    threads run our watchers, which take it.  Never held across a
 *    backend.h callback (backend.h), nor across zookeeper_close(), which
 *    waits for the completion thread, which may be waiting for the mutex.
 *  - A snapshot batch's mutex (grant.c) guards only its count of
 *    outstanding gets; never held with zb->mutex nor across a call.
 *  - So no thread ever holds two of our mutexes: there is no lock order
 *    between mutexes.  The busy flags are sleeping locks taken under
 *    zb->mutex (waited for on zb->cond), held with the mutex dropped:
 *    ow->busy serialises the operations of one owner (its ZooKeeper calls
 *    happen with it set); only its holder changes the owner's node list,
 *    under the mutex, and it may read the list without it.  w->busy: the
 *    worker evaluates the waiter.  Order: a waiter's busy, then its
 *    owner's; a thread holds at most one owner's busy flag.  lock() holds
 *    its owner's flag while it waits (at most zk_connect_wait) for a
 *    connection, so the worker, waiting for that flag, can be late by as
 *    much; never stuck, and the lease is revoked by the watcher anyway.
 *  - zb->cond (CLOCK_MONOTONIC) is broadcast on every change that anybody
 *    waits for: busy cleared, session state, a waiter kicked, a watch
 *    event queued, stopping.  A broadcast wakes only the threads already
 *    waiting: a thread that dropped the mutex checks again what it waits
 *    for (stopping above all) before it sleeps on zb->cond.
 *  - A session (struct zk_sess) is reference counted under zb->mutex;
 *    whoever uses s->zh holds a reference, and the last reference of an
 *    abandoned session closes its handle (zk_sess_put, mutex dropped).
 *  - conf->lease (zb->lfence) is atomic: written under zb->mutex only,
 *    read by the daemon without any lock (session.c).
 *  - Set by zk_open before any session or thread exists and read-only
 *    after: cb, host, host_hex, incarnation, hosts, root, base_path,
 *    vbase_path, timeout_ms, lock_delay_ms, auth, acl, lfence, the test
 *    hooks.
 *
 * Test hooks (inert unless set): DLOCKFS_TEST_ZK_ABANDON_DELAY_MS delays
 * zk_abandon (a daemon slow to notice a lost session); DLOCKFS_TEST_ZK_
 * KICK_DELAY_MS delays each re-evaluation of a woken waiter (a daemon slow
 * to notice its grant); DLOCKFS_TEST_ZK_HB_PAUSE_MS makes the lease thread
 * pause after each heartbeat it sends, with the mutex dropped (a slow
 * send: a stop made then must still end the daemon at once).
 */
#ifndef DL_ZK_INTERNAL_H
#define DL_ZK_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* the synchronous API of libzookeeper_mt */
#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "backend/backend.h"
#include "backend/zk/names.h"

#define ZK_BUCKETS    1024 /* owner hash table */
#define ZK_ROOT_MAX   256  /* CHROOT + "/r" */
#define ZK_PARENT_MAX (ZK_ROOT_MAX + 3 + ZK_NAME_BUF)
#define ZK_PATH_MAX   1024 /* parent + "/q-..." always fits */

/* ---- data structures ------------------------------------------------- */

/*
 * One request node of one of our owners: granted once on its owner's
 * list, waiting while a waiter's, deleting on zb->cancelled.  Set before
 * it is linked, then read-only: path, seq, czxid, ctime, pid, wait_id,
 * jumped, gen.  ranges: see "Locks" above.  dirty: the owner's busy holder
 * (an idle owner's is read under the mutex).  version: the data version
 * our last write of it left (a newer one is a poke); written by the busy
 * holder under zb->mutex once the node is linked, read under either.
 */
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
	int32_t version;	    /* after our last write (pokes) */
	unsigned gen;		    /* session generation it lives in */
	struct dl_range_set ranges; /* owner field: 0 */
};

/* a (resource, space, owner) of this daemon: its granted nodes (owner.c).
 * space, owner, parent, name_hex, resource: read-only once made */
struct zk_owner {
	struct zk_owner *next; /* hash chain; mutex */
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

/* a queued request (worker.c); wait_id and ow read-only once linked */
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

struct zk_arm; /* worker.c */

/* one ZooKeeper session; the handle's context, so watchers know it.
 * zb, zh, gen: read-only once published */
struct zk_sess {
	struct zk_backend *zb;
	zhandle_t *zh;
	unsigned gen;
	unsigned refs; /* guarded by zb->mutex */
	int state;     /* guarded by zb->mutex: its last ZOO_*_STATE */
	int recv_ms;   /* guarded by zb->mutex: the negotiated timeout, as
			* the watcher read it (outside the mutex) */
	bool dead;     /* guarded by zb->mutex: abandoned (nothing reads it) */
	bool registered; /* its liveness node exists (worker, open only) */
	/* guarded by zb->mutex: the watch arms sent on zh and not answered
	 * yet (zk_held_arm_async); freed by their answer or, when none came
	 * before the handle closed, with the session */
	struct zk_arm *arms;
};

struct zk_backend {
	struct dl_backend base;
	struct dl_backend_cb cb;
	char host[DL_HOST_MAX];
	char host_hex[2 * DL_HOST_MAX + 1];
	uint64_t incarnation;
	char *hosts; /* connect string */
	char root[ZK_ROOT_MAX];
	char base_path[ZK_ROOT_MAX + 2];  /* root + "/r" */
	char vbase_path[ZK_ROOT_MAX + 2]; /* root + "/v": versions */
	int timeout_ms;			  /* asked for */
	int lock_delay_ms;		  /* see zk_check_freed() */
	char *auth;			  /* "user:password", never logged */
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
	/* test hook, 0 unless DLOCKFS_TEST_ZK_HB_PAUSE_MS is set: how long
	 * the lease thread pauses, mutex dropped, after sending a heartbeat
	 * (logged as it starts, so a test can act inside the pause) */
	int test_hb_pause_ms;

	pthread_mutex_t mutex;
	pthread_cond_t cond; /* CLOCK_MONOTONIC */
	pthread_t worker, lease;
	bool threads_started; /* open and close only */
	/* guarded by mutex: */
	bool stopping;
	bool containers;      /* the server knows CONTAINER nodes */
	struct zk_sess *sess; /* current session, NULL while restarting */
	int state;	      /* its last ZOO_*_STATE */
	int negotiated_ms;
	int64_t last_ok_ms; /* send time of the newest answered request */
	unsigned hb_gen;    /* session of the heartbeat in flight; 0 none */
	int64_t hb_sent_ms; /* when the last heartbeat was sent */
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

/* a request node as read from ZooKeeper (grant.c): private to its reader */
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

/* the request nodes of one resource, by sequence number */
struct zk_snap {
	struct zk_child *v;
	size_t n;
};

/* the node a waiting request watches (grant.c decides, worker.c waits) */
struct zk_blocker {
	char path[ZK_PATH_MAX];
	int version;
	int64_t sid; /* its session (ephemeralOwner) */
};

/* a parsed zk:// URI (uri.c) */
struct zk_uri {
	char *hosts;
	char *root;
	int timeout_ms;
	int lock_delay_ms; /* -1 until set: a third of timeout_ms */
};

static inline struct zk_backend *zk_of(struct dl_backend *be)
{
	return (struct zk_backend *)be;
}

/* ---- uri.c ------------------------------------------------------------- */

int zk_uri_parse(const char *rest, struct zk_uri *u, char *err, size_t errlen);
void zk_uri_free(struct zk_uri *u);
int zk_check_uri(const char *rest, char *err, size_t errlen);

/* ---- codec.c ----------------------------------------------------------- */

int zk_errno(int rc);
const char *zk_state_name(int state);
char *zk_format(const struct zk_backend *zb, const struct zk_owner *ow,
		const struct zk_node *n, int *len);
void zk_parse(struct zk_child *c, const char *name_hex);
uint64_t zk_seq_of(const char *name);

/* ---- grant.c ----------------------------------------------------------- */

int zk_snapshot(zhandle_t *zh, const char *parent, const char *name_hex,
		const char *const *skip, size_t nskip,
		const struct String_vector *given, struct zk_snap *out);
void zk_snap_free(struct zk_snap *s);
int zk_evaluate(struct zk_backend *zb, zhandle_t *zh, struct zk_owner *ow,
		const struct zk_node *n, const struct String_vector *kids,
		struct zk_blocker *blk, bool *jumped);
void zk_classify_snap(struct zk_snap *snap);

/* ---- session.c --------------------------------------------------------- */

int zk_test_env(const char *name);
void zk_test_sleep(int ms);
void zk_cond_wait_until(struct zk_backend *zb, int64_t deadline);
int zk_session_start(struct zk_backend *zb);
int zk_sess_get(struct zk_backend *zb, int64_t wait_ms, struct zk_sess **out);
void zk_sess_put(struct zk_backend *zb, struct zk_sess *s);
int64_t zk_connect_wait(struct zk_backend *zb);
void zk_register(struct zk_backend *zb, struct zk_sess *s);
void zk_check_freed(struct zk_backend *zb, struct zk_sess *s,
		    struct zk_waiter *w);
void zk_abandon(struct zk_backend *zb, unsigned gen, const char *why);
void *zk_lease_main(void *arg);

/* ---- owner.c ----------------------------------------------------------- */

void zk_node_free(struct zk_node *n);
struct zk_owner *zk_owner_acquire(struct zk_backend *zb, const char *res,
				  enum dl_space space, uint64_t owner);
void zk_owner_release(struct zk_backend *zb, struct zk_owner *ow);
void zk_owner_put_locked(struct zk_backend *zb, struct zk_owner *ow);
void zk_owner_unbusy_locked(struct zk_backend *zb, struct zk_owner *ow);
void zk_owner_purge(struct zk_owner *ow, unsigned gen);
int zk_owner_set(const struct zk_owner *ow, struct dl_range_set *out);
void zk_owner_flush(struct zk_backend *zb, struct zk_sess *s,
		    struct zk_owner *ow);
void zk_owner_reduce(struct zk_backend *zb, struct zk_sess *s,
		     struct zk_owner *ow, uint64_t start, uint64_t end);
void zk_parent_cleanup(struct zk_backend *zb, zhandle_t *zh,
		       struct zk_owner *ow);
int zk_make_path(struct zk_backend *zb, zhandle_t *zh, const char *path);
int zk_create_node(struct zk_backend *zb, struct zk_sess *s,
		   struct zk_owner *ow, struct zk_node *n,
		   struct String_vector *kids, bool *listed);
int zk_finish_grant(struct zk_backend *zb, struct zk_sess *s,
		    struct zk_owner *ow, struct zk_node *n, bool jumped);
struct zk_owner *zk_held_find(struct zk_backend *zb, const char *path,
			      unsigned gen, struct zk_node **np);

/* ---- worker.c ---------------------------------------------------------- */

struct zk_waiter *zk_waiter_find(struct zk_backend *zb, uint64_t id);
void zk_waiter_unlink(struct zk_backend *zb, struct zk_waiter *w);
bool zk_watch(zhandle_t *zh, const struct zk_blocker *blk, uint64_t wait_id);
void zk_held_queue(struct zk_backend *zb, unsigned gen, const char *path,
		   bool deleted, bool retry);
int zk_held_arm(zhandle_t *zh, const char *path, int32_t *version);
void zk_held_arm_async(struct zk_backend *zb, struct zk_sess *s,
		       const char *path, int32_t version);
void zk_held_arms_free(struct zk_sess *s);
void *zk_worker_main(void *arg);

/* ---- ops.c ------------------------------------------------------------- */

bool zk_req_valid(const struct dl_lock_req *req, bool unlock);

/* ---- inspect.c --------------------------------------------------------- */

int zk_getlk(struct dl_backend *be, const struct dl_lock_req *req,
	     struct dl_lock_info *conflict);
int zk_list(struct dl_backend *be, const char *resource, dl_lock_info_fn fn,
	    void *arg);
int zk_break_lock(struct dl_backend *be, const char *resource);
int zk_poke(struct dl_backend *be, const char *resource);
int zk_version(struct dl_backend *be, const char *resource,
	       struct dl_version *out);
int zk_bump(struct dl_backend *be, const char *resource,
	    struct dl_version *out);

#endif /* DL_ZK_INTERNAL_H */

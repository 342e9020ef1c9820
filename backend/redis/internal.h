/*
 * internal.h - what the files of the "redis://" backend share, and nobody
 * else: its structs, constants and the prototypes between its files.
 * Never included outside backend/redis/ (the daemon sees backend.h and
 * dl_redis_ops only).
 *
 * The backend: cluster-wide locks kept in Redis.  Every decision
 * (conflict check, POSIX merge/split/convert, FIFO queue, handoff on
 * release, purge of dead leases, lock-delay) is made atomically on the
 * server by redis.lua: loaded once as a function library and called with
 * FCALL on Redis >= 7, run with EVALSHA otherwise (or where FUNCTION LOAD
 * is refused).  A request is one command, one round trip; nothing else is
 * sent on its connection.  The C side only moves requests and answers,
 * keeps the lease alive and keeps the local bookkeeping needed to report
 * losses:
 *
 *  - a lease per daemon incarnation, numbered by a gen (struct dl_lease,
 *    the caller's write fence): P:leases[LEASE] = server expiry, renewed
 *    every ttl/3 in one round trip per node.  A record whose lease is
 *    dead is purged by the next script touching its resource, with a
 *    lock-delay.  lease->until_ms = (send time of the last good renewal)
 *    + ttl - margin by our monotonic clock, strictly before the server
 *    could expire it (0 while nothing is trusted).  When the lease cannot
 *    be trusted any more - at that deadline (watchdog) or at once when the
 *    server says it is gone - gen is bumped first, every lock we hold is
 *    reported lost, every queued wait fails, and a fresh lease with fresh
 *    names serves new requests; an old name is ended and never registered
 *    again, so records reported lost can never revive;
 *  - held: what this daemon holds, per (resource, space, owner), with the
 *    newest token processed and a loss report allocated in advance;
 *  - waits: our queued requests by wait id, each registered under the gen
 *    and lease name it is sent with, and carrying its answer allocated in
 *    advance: once a request is queued its answer needs no memory.  A
 *    grant arrives as a publish "G WAITID TOKEN" on P:inc:LEASE
 *    (subscriber thread) or through the safety re-check every second
 *    (keeper thread), delivered once and reported with the gen it was
 *    made under.  A wait being cancelled belongs to redis_cancel() until
 *    it returns; a grant or lease loss meanwhile only marks it, so every
 *    request is answered exactly once (callback, synchronous result, or
 *    cancel() == 0);
 *  - jobs: unlocks, releases and cancels no node confirmed, retried by
 *    the keeper until done or until the lease name they belong to is
 *    given up (its records die with it); a retried unlock ends only
 *    grants up to the newest one processed when it was asked for.
 *
 * Redlock mode (several independent nodes): each request runs on every
 * node; a lock is granted when a majority granted it within its validity
 * (ttl - elapsed - drift), otherwise it is undone everywhere.  Waiters
 * are parked on every node in "notify" mode ('n') with one enqueue time
 * sent by us (so every node lists the same since_ms): a release publishes
 * "W WAITID" and the keeper retries on all nodes (no cross-node FIFO).
 * Each node has its own lease name.  until_ms is the earliest time at
 * which some held lock stops having a majority of trusted nodes.  A node
 * whose lease is lost takes a new name; if that leaves a held lock (or
 * the lease itself) without a majority, the whole lease is lost as above.
 *
 * Pokes (ops->poke, for backend/cache.c): the script publishes "P SRC
 * SEQ RESOURCE" on the channel of every other lease holding the resource;
 * the subscriber calls cb->revoke.  SRC names the poking daemon
 * incarnation (rb->poke_src) and SEQ its poke, so a daemon drops a poke of
 * its own (its lease renamed under a poke in flight) and, in Redlock mode
 * where every node tells it, the copies of a poke it has delivered
 * already (the last REDIS_POKES_SEEN pokes are remembered; a copy arriving
 * later still is delivered again: harmless, see sub.c).  Nothing is kept
 * or retried: the poker pokes again while it waits.
 *
 * Versions (ops->version, ops->bump; optimistic concurrency): one hash
 * P:v:R per resource, apart from its locks, read and bumped by one
 * script call each (the bump's time is the server's).  No lease, no
 * purge, no break touches it.  Single node only: Redlock answers
 * -EOPNOTSUPP (independent nodes cannot count without losing a bump).
 *
 * What it deliberately does not do: Redis Cluster (keys of a script span
 * slots), TLS, or any decision outside the script.
 *
 * The files (each one's comment says what it owns and its own rules):
 *   ops.c      the dl_backend_ops table, single-node lock(), unlock(),
 *              cancel(), release_owner(), getlk(), list(), status(),
 *              break_lock(), poke(), version(), bump()
 *   open.c     open() and close(): setup, first contact, threads
 *   conn.c     one node's wire: connection pool, connect/AUTH, loading
 *              redis.lua, running one script op, encoding and decoding
 *   table.c    the bookkeeping under rb->mutex: held, waits, jobs, notes
 *   lease.c    lease names, registration, renewal, the fence, losses,
 *              the watchdog thread
 *   keeper.c   the keeper thread: renewals, drops, re-checks, jobs
 *   sub.c      the subscriber threads and the delivery of grants,
 *              breaks and pokes
 *   redlock.c  the Redlock quorum: try, undo, cancel, keeper retries
 *   fault.c    test-only fault injection (DLOCKFS_TEST_REDIS_FAULT)
 *   uri.c      the URI parser (pure)
 *
 * Threads.  Callers of the ops (any number, concurrently, except that
 * open() and close() run alone); one keeper; one watchdog; one subscriber
 * per node.
 *
 * Locking.
 *  - rb->mutex guards everything marked "guarded by rb->mutex" below:
 *    the tables (held, waits, jobs, acks, pokes, the counters, mask_refs), the
 *    per-node lease and reachability state, epoch and names, and the
 *    thread controls (stopping, kick, kick_renew).  Every field of a
 *    struct redis_held, and every mutable field of a struct redis_wait
 *    once it is in rb->waits, is guarded by it too.  rb->cond (on
 *    CLOCK_MONOTONIC) goes with it: the keeper, the watchdog and the
 *    subscribers sleep on it (redis_nap() or directly); anything that
 *    gives one of them work broadcasts.
 *  - each pooled connection has its own mutex guarding its hiredis
 *    context.  Order: a connection's mutex, then rb->mutex (conn.c takes
 *    rb->mutex to read and set a node's backoff while it holds one);
 *    never a connection's mutex while rb->mutex is held, and never two
 *    connection mutexes at once.  No network I/O happens under rb->mutex;
 *    it does happen under a connection's mutex (that is what it is for).
 *  - immutable after open(), read without a lock: uri, host_id, user,
 *    password, inc_base, majority, margin_ms, drift_ms, fname, fn_text,
 *    fn_len, ttl, delay, poke_src, nodes[] and each node's rb, idx and
 *    addr, the fault delays, and the wait_id, req and res of a wait.
 *  - atomics, no lock: rb->fcall (true -> false only), the fault
 *    counters, each node's round-robin counter rr, rb->poke_seq, and
 *    *rb->lease.  The
 *    lease is written only under rb->mutex (or in open()/close() while no
 *    other thread runs), gen first, then until_ms (backend.h); the daemon
 *    reads it with no lock of ours.
 *  - rb->sha: see conn.c (written under a connection mutex only).
 *
 * Callbacks (rb->cb).  None is ever made while any mutex of this backend
 * is held: a decision made under rb->mutex is written into a note
 * allocated in advance (struct redis_note), pushed on a list local to the
 * deciding thread, and redis_notes_run() makes the callbacks in order once
 * rb->mutex is dropped, on that same thread:
 *   subscriber  granted (a "G" publish), lost (an "L" break publish),
 *               revoke (a "P" poke publish; no note: nothing is decided
 *               under the mutex but whether it is a copy)
 *   keeper      granted and failed (re-check, Redlock retry), lost and
 *               failed (a renewal or a retry that finds the lease gone),
 *               lost (a break a renewal reads)
 *   watchdog    lost and failed (the lease deadline passed)
 *   lock()      lost and failed of any lock or wait, when its request
 *               finds the lease gone; lost of that lock when a request's
 *               outcome is unknown (these may come before lock() returns)
 *   cancel()    granted, for the wait being cancelled (then -ENOENT)
 * unlock(), release_owner(), getlk(), list(), status(), break_lock(),
 * poke(), version() and bump() make no callback (poke() never calls this
 * daemon's revoke; list()'s @fn is called with no mutex held).
 */
#ifndef DL_REDIS_INTERNAL_H
#define DL_REDIS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "backend/backend.h"
#include "backend/redis/uri.h"
#include "backend/util/jobgate.h"

#define REDIS_POOL	     8 /* command connections per node */
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 1000
#define REDIS_BUCKET_BITS    10
#define REDIS_BUCKETS	     (1u << REDIS_BUCKET_BITS)
#define REDIS_MAX_ACKS	     256
#define REDIS_POKES_SEEN     64 /* pokes remembered to drop their copies */

struct redis_backend;

/* test-only fault points (fault.c); the delays are fixed at open */
struct redis_fault {
	int delay_lock, delay_cancel, delay_deliver;
	atomic_int fail_unlock, fail_release, fail_cancel;
	atomic_int lose_lock; /* lock scripts that run but whose answer is lost */
	atomic_int nomem;
};

struct redis_conn {
	pthread_mutex_t mutex; /* guards c */
	redisContext *c;
};

struct redis_node {
	struct redis_backend *rb;
	unsigned idx;
	struct redis_uri_node addr;
	struct redis_conn pool[REDIS_POOL];
	atomic_uint rr;
	pthread_t sub_thread; /* set by open(), joined by close() */
	bool sub_started;
	/* guarded by rb->mutex: */
	bool up;	  /* the last command got an answer */
	int64_t retry_at; /* mono ms: no connect attempt before */
	int backoff_ms;
	uint64_t name;	    /* our lease's name here: redis_lease_name(name) */
	bool registered;    /* that name is registered on the node */
	int64_t renewed_at; /* mono ms: send time of the last good renewal */
	bool trusted;	    /* our lease there is certainly alive */
	int sub_fd;	    /* subscriber socket, -1 */
	char drop[17];	    /* a lease given up, to end there; "" none */
};

/* callbacks collected under the mutex, made after it is dropped; each is
 * allocated before its decision can be made, so none is ever dropped.
 * A note belongs to whoever holds the pointer: a held entry or a wait
 * (its report, ready), then a thread's local list, then
 * redis_notes_run(), which frees it */
struct redis_note {
	struct redis_note *next;
	enum { RN_GRANTED, RN_FAILED, RN_LOST } kind;
	uint64_t wait_id, token, lease, owner;
	enum dl_space space;
	int err;
	char resource[];
};

/* what this daemon holds: one entry per (resource, space, owner); in
 * rb->held, guarded by rb->mutex */
struct redis_held {
	struct redis_held *next;
	enum dl_space space;
	uint64_t owner;
	uint64_t max_token;	 /* newest grant processed */
	unsigned mask;		 /* nodes holding it */
	struct redis_note *lost; /* its loss report, ready */
	char resource[];
};

enum redis_wstate {
	RW_SENDING, /* lock() in flight */
	RW_QUEUED,  /* queued in Redis: a grant or failure will follow */
};

/* what a wait being cancelled became meanwhile (the cancel decides) */
enum redis_wend {
	RWE_NONE,
	RWE_GRANTED, /* its grant was reported */
	RWE_LOST,    /* its lease was given up: nothing left to cancel */
};

/*
 * One of our queued (or being queued) requests.  wait_id, req and res are
 * fixed by redis_wait_new(); the rest is guarded by rb->mutex while the
 * wait is in rb->waits.  Who may free it:
 *  - RW_SENDING: the lock() call that inserted it, except that on a
 *    single node redis_deliver_grant() unlinks and frees it when its
 *    grant is published before lock() has its answer (lock() then
 *    returns -EINPROGRESS and must not touch it again);
 *  - RW_QUEUED: whoever answers it (subscriber, keeper, watchdog, a
 *    lock() that finds the lease gone); but while cancelling is set only
 *    redis_cancel() frees it (the others set end), and while busy only
 *    the keeper's Redlock retry does (cancel() sets cancelled).
 */
struct redis_wait {
	struct redis_wait *next;
	uint64_t wait_id;
	struct dl_lock_req req; /* req.resource points to res */
	uint64_t gen;		/* the lease it was queued under */
	uint64_t name;		/* single node: that lease's name */
	int64_t since; /* Redlock: enqueue time, the same on every node */
	enum redis_wstate state;
	bool cancelling; /* redis_cancel() owns it: nobody else frees it */
	enum redis_wend end;
	bool woken;		  /* Redlock: a node said "retry" */
	bool busy;		  /* Redlock: the keeper is retrying it */
	bool cancelled;		  /* Redlock: cancel() won while busy */
	struct redis_note *note;  /* its answer, ready */
	struct redis_held *spare; /* its entry in held, ready */
	char res[];
};

/* work left over from a failed or unanswered call, retried by the keeper
 * until done or until the lease it was made under is given up (its
 * records die with it).  rb->jobs is guarded by rb->mutex; the keeper
 * takes the whole list out and owns the jobs it took until it puts the
 * unfinished ones back.  An owner's jobs on a resource are done before its
 * next lock there is sent (redis_jobs_settle(), backend/util/jobgate.h):
 * the unlock of an in-doubt lock ends every grant of its range, so it must
 * not reach the server after a newer one */
enum redis_job_kind {
	RJ_RELEASE, /* release_owner */
	RJ_UNLOCK,  /* unlock [start, end] */
	RJ_CANCEL,  /* an orphaned wait: cancel, or unlock if granted */
};

struct redis_job {
	struct redis_job *next; /* unchanged while in a keeper's pass */
	enum redis_job_kind kind;
	bool done; /* in a keeper's pass: done, freed when the pass ends */
	unsigned node;
	uint64_t name;	    /* the node's lease name it must run under */
	uint64_t max_token; /* what it may end: grants up to this token */
	struct dl_lock_req req;
	char res[];
};

struct redis_backend {
	struct dl_backend base;
	struct dl_backend_cb cb;
	struct redis_uri uri;
	char host_id[DL_HOST_MAX];
	char user[REDIS_URI_USER_MAX];
	char *password; /* never logged */
	uint64_t inc_base;
	unsigned majority;
	int margin_ms;	/* lost this long before the lease could end */
	int drift_ms;	/* Redlock clock-drift allowance */
	char sha[41];	/* of redis_lua; fixed (see conn.c) */
	char fname[32]; /* its function: dlockfs_ + hash of redis_lua */
	char *fn_text;	/* the library: a naming header + redis_lua */
	size_t fn_len;
	atomic_bool fcall;	   /* FCALL fname, false: EVALSHA sha */
	char ttl[16], delay[16];   /* ARGV[4], ARGV[5] */
	uint64_t poke_src;	   /* names this incarnation's pokes */
	_Atomic uint64_t poke_seq; /* pokes sent so far */
	struct redis_node *nodes;
	struct dl_lease *lease;	  /* the caller's fence: gen, until_ms */
	struct redis_fault fault; /* tests only */
	pthread_t keeper, watchdog;
	bool keeper_started, watchdog_started;

	pthread_mutex_t mutex;
	/* CLOCK_MONOTONIC: keeper, watchdog and subscribers sleep on it */
	pthread_cond_t cond;
	/* guarded by mutex: */
	bool stopping;
	bool kick;	 /* keeper: re-check waits now */
	bool kick_renew; /* keeper: renew now */
	uint64_t epoch;	 /* current lease = lease->gen, from 1 */
	uint64_t names;	 /* lease names handed out so far */
	struct redis_held *held[REDIS_BUCKETS];
	struct redis_wait *waits[REDIS_BUCKETS];
	struct redis_job *jobs;
	struct redis_job *running; /* the keeper's pass: taken out of jobs */
	size_t njobs;		   /* in rb->jobs or running */
	struct dl_jobgate gate;	   /* jobs before the owner's next lock */
	uint64_t acks[REDIS_MAX_ACKS]; /* delivered grants to forget */
	size_t nacks;
	/* the last pokes delivered (a ring, oldest overwritten) */
	struct {
		uint64_t src, seq;
	} pokes[REDIS_POKES_SEEN];
	unsigned npokes; /* pokes delivered; the next slot is % SEEN */
	size_t nheld, nwaits;
	/* held entries per node mask: the fence of the weakest */
	unsigned mask_refs[1u << REDIS_URI_MAX_NODES];
};

/* what a lock script answered on one node */
enum redis_outcome {
	RO_GRANTED,
	RO_CONFLICT,
	RO_QUEUED,
	RO_LEASE, /* our lease is gone there */
	RO_ERROR,
};

static inline struct redis_backend *redis_of(struct dl_backend *be)
{
	return (struct redis_backend *)be;
}

static inline unsigned redis_popcount(unsigned m)
{
	return (unsigned)__builtin_popcount(m);
}

/* ---- fault.c: test-only fault points ------------------------------------ */

void redis_fault_parse(struct redis_fault *f);
void redis_fault_sleep(int ms);
bool redis_fault_fail(struct redis_fault *f, const char *op);
bool redis_fault_lose(struct redis_fault *f, const char *op);
void *redis_fault_calloc(struct redis_fault *f, size_t n, size_t size);

/* ---- conn.c: one node's wire (no rb->mutex held by the caller) ---------- */

void redis_hex16(char buf[17], uint64_t v);
bool redis_reply_u64(const redisReply *r, uint64_t *v);
int64_t redis_reply_int(const redisReply *r);
redisContext *redis_connect(struct redis_backend *rb, struct redis_node *n,
			    bool blocking_reads, char *err, size_t errlen);
int redis_library_init(struct redis_backend *rb);
int redis_load_script(struct redis_backend *rb, redisContext *c,
		      const struct redis_node *n, char *err, size_t errlen);
struct redis_conn *redis_conn_get(struct redis_backend *rb,
				  struct redis_node *n);
void redis_conn_put(struct redis_conn *c);
int redis_node_script(struct redis_backend *rb, struct redis_node *n,
		      const char *op, const char *resource, const char *lease,
		      int nextra, const char *const *extra,
		      const size_t *extralen, redisReply **out, bool *indoubt);
int redis_node_call(struct redis_backend *rb, struct redis_node *n,
		    const char *op, const char *kinds, const char *resource,
		    const char *lease, int nextra, const char *const *extra,
		    const size_t *extralen, redisReply **out, bool *indoubt);
enum redis_outcome redis_node_lock(struct redis_backend *rb,
				   struct redis_node *n, const char *lease,
				   const struct dl_lock_req *req,
				   uint64_t wait_id, char mode, int64_t since,
				   uint64_t *token, char **prev, bool *indoubt);
redisReply *redis_node_simple(struct redis_backend *rb, struct redis_node *n,
			      const char *op, const struct dl_lock_req *req,
			      const char *arg11, bool *indoubt,
			      uint64_t *name_out);

/* ---- table.c: bookkeeping; "mutex held" means rb->mutex ----------------- */

void redis_notes_run(struct redis_backend *rb, struct redis_note *list);
struct redis_held **redis_held_slot(struct redis_backend *rb, const char *res,
				    enum dl_space space, uint64_t owner);
void redis_held_free(struct redis_held *h);
struct redis_held *redis_held_alloc(struct redis_backend *rb,
				    const struct dl_lock_req *req);
void redis_mask_ref(struct redis_backend *rb, unsigned mask, int delta);
void redis_held_add(struct redis_backend *rb, struct redis_held **spare,
		    const char *res, enum dl_space space, uint64_t owner,
		    unsigned mask, uint64_t token);
void redis_held_remove(struct redis_backend *rb, const char *res,
		       enum dl_space space, uint64_t owner, uint64_t max_token);
void redis_held_lose(struct redis_backend *rb, struct redis_held **p, int err,
		     struct redis_note **notes);
struct redis_wait *redis_wait_find(struct redis_backend *rb, uint64_t id);
void redis_wait_insert(struct redis_backend *rb, struct redis_wait *w);
bool redis_wait_unlink(struct redis_backend *rb, struct redis_wait *w);
bool redis_wait_unlink_id(struct redis_backend *rb, uint64_t id,
			  struct redis_wait *w);
struct redis_wait *redis_wait_new(struct redis_backend *rb,
				  const struct dl_lock_req *req);
void redis_wait_free(struct redis_wait *w);
void redis_wait_answer(struct redis_wait *w, uint64_t token, int err,
		       struct redis_note **notes);
uint64_t redis_node_name(struct redis_backend *rb, unsigned node);
void redis_job_add(struct redis_backend *rb, enum redis_job_kind kind,
		   unsigned node, uint64_t name, const struct dl_lock_req *req,
		   uint64_t max_token);

/* ---- lease.c: the lease, its fence and its loss; the watchdog ----------- */

void redis_lease_name(const struct redis_backend *rb, uint64_t epoch,
		      char buf[17]);
void redis_lease_publish(struct redis_backend *rb);
void redis_lease_gone(struct redis_backend *rb, struct redis_node *n,
		      uint64_t name);
int redis_node_lease(struct redis_backend *rb, struct redis_node *n,
		     char lease[17], uint64_t *gen, uint64_t *name);
void redis_node_renew(struct redis_backend *rb, struct redis_node *n);
void *redis_watchdog_main(void *arg);

/* ---- keeper.c: the keeper thread ---------------------------------------- */

void redis_nap(struct redis_backend *rb, int64_t ms);
void *redis_keeper_main(void *arg);
int redis_jobs_settle(struct redis_backend *rb, unsigned node,
		      const struct dl_lock_req *req);

/* ---- sub.c: the subscribers and delivery -------------------------------- */

bool redis_deliver_grant(struct redis_backend *rb, uint64_t name, uint64_t id,
			 uint64_t token, unsigned mask,
			 struct redis_note **notes);
void redis_deliver_break(struct redis_backend *rb, struct redis_node *n,
			 uint64_t name, const char *entry, size_t len,
			 struct redis_note **notes);
void *redis_sub_main(void *arg);

/* ---- redlock.c: several nodes ------------------------------------------- */

void redis_redlock_cancel_on(struct redis_backend *rb,
			     const struct dl_lock_req *req, unsigned mask);
int redis_redlock_lock(struct redis_backend *rb, const struct dl_lock_req *req,
		       struct dl_grant *grant);
void redis_redlock_retry(struct redis_backend *rb, uint64_t id);

/* ---- open.c ------------------------------------------------------------- */

int redis_open(const struct dl_backend_conf *conf,
	       const struct dl_backend_cb *cb, struct dl_backend **out,
	       char *err, size_t errlen);
void redis_close(struct dl_backend *be);

#endif /* DL_REDIS_INTERNAL_H */

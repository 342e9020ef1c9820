/*
 * internal.h - what the files of the PostgreSQL backend share; nothing
 * outside backend/pg/ includes it (the daemon reaches the backend through
 * backend/backend.h only).
 *
 *   uri.c     the URI and the libpq parameters it gives (pure)
 *   conn.c    connections: connect with a deadline, run a statement with a
 *             deadline, the schema installed once, server health
 *   call.c    the worker threads that run requests for callers
 *   track.c   the daemon's bookkeeping: what it holds, what it waits for,
 *             work left over, callbacks to make (pb->mutex held)
 *   lease.c   the lease: registration, renewal (keeper thread), the
 *             trusted-until fence (watchdog thread), losses, the safety
 *             re-check of queued requests
 *   listen.c  the listener thread: LISTEN on this daemon's channel (grants,
 *             breaks, pokes of what this daemon holds)
 *   ops.c     the backend ops (open, close, lock, ..., poke, version, bump)
 *   schema.sql  every lock decision, in PL/pgSQL (built in as a string)
 *
 * Threads and connections.  libpq connections are not thread-safe, so each
 * belongs to exactly one thread: pb->workers[i].conn to worker i (which
 * runs the callers' requests, call.c), pb->keeper_conn to the keeper
 * (renewals, re-checks, retries, drops), pb->listen_conn to the listener.
 * open() uses the keeper's and the listener's before those threads start,
 * close() the keeper's after they stopped.  A caller of the backend ops
 * never touches a connection: it queues a struct pg_call and waits for a
 * worker to answer it (a round trip, never a lock wait: a request that
 * cannot be granted is queued on the server and answered later through
 * the callbacks).
 *
 * Locking: one mutex, pb->mutex, guards every field marked so below and
 * the call queue; nothing is called back, and no statement is run, with it
 * held.  Callbacks are collected as notes under it and made after it is
 * dropped, on the thread that decided them: the listener (a NOTIFY), the
 * keeper (re-check, renewal), the watchdog (a loss by the clock) or the
 * caller of an op (a loss seen by a request, a grant found by cancel).
 * cb->revoke (a poke) needs no bookkeeping: the listener makes it
 * straight from the NOTIFY, without taking the mutex at all.
 * pb->cond (CLOCK_MONOTONIC) wakes the keeper, the watchdog and threads
 * waiting for a lease registration; each worker has its own (a call is
 * handed to the worker that went idle last, whose connection and server
 * process are warm, so calls made one at a time use one); each call has
 * its own condition for its caller.
 */
#ifndef DL_PG_INTERNAL_H
#define DL_PG_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <libpq-fe.h>

#include "backend/backend.h"
#include "backend/pg/uri.h"
#include "backend/util/jobgate.h"

#define PG_SCHEMA_VERSION     4	   /* schema.sql's sections */
#define PG_WORKERS	      8	   /* request connections */
#define PG_RECHECK_MS	      1000 /* safety re-check of queued waits */
#define PG_BACKOFF_MIN_MS     100
#define PG_BACKOFF_MAX_MS     1000
#define PG_BUCKETS	      1024
#define PG_MAX_ACKS	      256 /* delivered grants to forget */
#define PG_MAX_DROPS	      8	  /* leases given up, to end on the server */
#define PG_MAX_PARAMS	      9
#define PG_POLL_MAX	      512 /* wait ids per re-check call */
#define PG_SERVER_VERSION_MIN 110000
/* the longest resource a poke can name: its base64 must fit a NOTIFY
 * payload (< 8000 bytes) after "P " */
#define PG_POKE_MAX 5997

/* the statements, prepared once per connection */
enum pg_sql {
	PG_SQL_LOCK,
	PG_SQL_UNLOCK,
	PG_SQL_RELEASE,
	PG_SQL_CANCEL,
	PG_SQL_POLL,
	PG_SQL_GETLK,
	PG_SQL_LIST,
	PG_SQL_BREAK,
	PG_SQL_REG,
	PG_SQL_RENEW,
	PG_SQL_DROP,
	PG_SQL_POKE,
	PG_SQL_VERSION,
	PG_SQL_BUMP,
	PG_SQL_N,
};

struct pg_conn {
	PGconn *c;	   /* NULL: not connected */
	const char *role;  /* "worker", "keeper", "listener" */
	unsigned prepared; /* bit (1 << enum pg_sql): prepared on c */
};

/* a callback to make once the mutex is dropped; allocated before its
 * decision can be made, so none is ever dropped */
struct pg_note {
	struct pg_note *next;
	enum { PN_GRANTED, PN_FAILED, PN_LOST } kind;
	uint64_t wait_id, token, lease, owner;
	enum dl_space space;
	int err;
	char resource[];
};

/* what this daemon holds: one entry per (resource, space, owner) */
struct pg_held {
	struct pg_held *next;
	enum dl_space space;
	uint64_t owner;
	uint64_t max_token;   /* newest grant processed */
	struct pg_note *lost; /* its loss report, ready */
	char resource[];
};

enum pg_wstate {
	PW_SENDING, /* lock() in flight */
	PW_QUEUED,  /* queued on the server: a grant or failure will follow */
};

/* what a wait being cancelled became meanwhile (the cancel decides) */
enum pg_wend {
	PWE_NONE,
	PWE_GRANTED, /* its grant was reported */
	PWE_LOST,    /* its lease was given up: nothing left to cancel */
};

struct pg_wait {
	struct pg_wait *next;
	uint64_t wait_id;
	struct dl_lock_req req; /* req.resource points to res */
	uint64_t gen;		/* the lease it was sent under */
	int64_t lease_id;	/* that lease's id on the server */
	enum pg_wstate state;
	bool cancelling; /* pg_cancel() owns it: nobody else frees it */
	enum pg_wend end;
	struct pg_note *note;  /* its answer, ready */
	struct pg_held *spare; /* its entry in held, ready */
	char res[];
};

/* work left over from a failed or unanswered call, retried by the keeper
 * until done or until the lease it was made under is given up (its
 * records die with it).  An owner's jobs on a resource are done before its
 * next lock there is sent (pg_jobs_settle(), backend/util/jobgate.h) */
enum pg_job_kind {
	PJ_RELEASE, /* release_owner */
	PJ_UNLOCK,  /* unlock [start, end] */
	PJ_CANCEL,  /* an orphaned wait: cancel, or unlock if granted */
};

struct pg_job {
	struct pg_job *next; /* unchanged while in a keeper's pass */
	enum pg_job_kind kind;
	bool done; /* in a keeper's pass: done, freed when the pass ends */
	int64_t lease_id;   /* the lease it must run under */
	uint64_t max_token; /* what it may end: grants up to this token */
	struct dl_lock_req req;
	char res[];
};

struct pg_backend;

/*
 * A request run by a worker for a caller (call.c).  The caller fills the
 * "in" part, pg_call_run() queues it and waits until a worker has filled
 * the "out" part.  With @with_lease, values[0] is set by the worker to
 * the current lease id (registering one first if there is none) and
 * @prepare, if set, runs once the lease is known, before the first send
 * (no mutex held).
 */
struct pg_call {
	struct pg_call *next;
	/* in */
	enum pg_sql sql;
	int nparams;
	const char *values[PG_MAX_PARAMS];
	int lengths[PG_MAX_PARAMS];
	int formats[PG_MAX_PARAMS];
	bool with_lease;
	void (*prepare)(struct pg_backend *pb, struct pg_call *call);
	void *arg;
	bool prepared;	  /* prepare() ran (set by it, under pb->mutex) */
	int64_t deadline; /* mono ms: not sent after it */
	/* out */
	PGresult *res; /* the caller PQclear()s it */
	int err;       /* 0, -ENOLCK (no answer), -EIO (refused) */
	bool indoubt;  /* sent without an answer: it may have run */
	uint64_t gen;  /* with_lease: the lease it ran under */
	int64_t lease_id;
	char lease_buf[24];
	bool done;
	pthread_cond_t cond;
};

struct pg_worker {
	struct pg_backend *pb;
	pthread_t thread;
	bool started;
	struct pg_conn conn; /* this worker's only */
	/* guarded by pb->mutex: */
	pthread_cond_t cond;  /* a call for it, or stopping */
	struct pg_call *call; /* handed to it, not started yet */
	bool idle;	      /* on pb->idle */
	struct pg_worker *next_idle;
};

/*
 * Test-only fault injection (inert unless DLOCKFS_TEST_PG_FAULT is set
 * when the backend is opened): "delay_lock:MS" sleeps after a lock
 * request's wait is registered and before it is sent; "delay_cancel:MS"
 * before a cancel is sent; "drop_result:N" makes the next N statements of
 * the workers lose their connection after they were sent (an in-doubt
 * answer, as a network blip would); "fail_job:N" makes the keeper's next
 * N tries of left-over jobs fail as if the server were down.
 */
struct pg_fault {
	int delay_lock, delay_cancel;
	atomic_int drop_result, fail_job;
};

struct pg_backend {
	struct dl_backend base;
	struct dl_backend_cb cb;
	struct pg_uri uri;
	char host_id[DL_HOST_MAX];
	char inc_hex[17];	/* this incarnation, hex: the channel suffix */
	char channel[64];	/* SCHEMA_INC: the NOTIFY channel of us */
	char *password;		/* config pg_password; never logged */
	char *sql[PG_SQL_N];	/* statement texts with the schema */
	int margin_ms;		/* lost this long before the lease ends */
	struct dl_lease *lease; /* the caller's fence: gen, until_ms */
	struct pg_fault fault;	/* tests only */
	struct pg_worker workers[PG_WORKERS];
	struct pg_conn keeper_conn; /* the keeper's (open/close: theirs) */
	struct pg_conn listen_conn; /* the listener's (open: its) */
	pthread_t keeper, watchdog, listener;
	bool keeper_started, watchdog_started, listener_started;
	int wake_fd; /* eventfd: wakes the listener */
	bool opened; /* open() succeeded (set before the threads start) */
	/* the last bump's number (any thread; from a random start): with
	 * inc_hex, its id */
	atomic_uint_fast64_t bump_seq;

	pthread_mutex_t mutex;
	pthread_cond_t cond;	/* CLOCK_MONOTONIC */
	struct pg_worker *idle; /* idle workers, the last one idle first */
	/* guarded by mutex: */
	bool stopping;
	struct pg_call *qhead, *qtail; /* calls waiting for a worker */
	/* server health, shared by every connection */
	bool up;	  /* the last connect or statement got an answer */
	bool was_up;	  /* it was up once: a recovery is worth a line */
	int64_t retry_at; /* mono ms: no connect attempt before */
	int backoff_ms;
	size_t first_host; /* the host libpq tries first (rotates on a
			      connect timeout) */
	char server_version[32];
	char timeline[9]; /* the server's WAL timeline, hex ("" unknown) */
	/* the lease */
	uint64_t epoch;	    /* current lease = lease->gen, from 1 */
	int64_t lease_id;   /* its id on the server; 0: none registered */
	bool registering;   /* a thread registers one now */
	int64_t renewed_at; /* mono ms: send time of the last good renewal */
	bool trusted;	    /* the lease is certainly alive */
	int64_t drops[PG_MAX_DROPS]; /* leases given up, to end */
	size_t ndrops;
	bool kick;	 /* keeper: re-check waits and jobs now */
	bool kick_renew; /* keeper: renew now */
	struct pg_held *held[PG_BUCKETS];
	struct pg_wait *waits[PG_BUCKETS];
	struct pg_job *jobs;
	struct pg_job *running;	   /* the keeper's pass: taken out of jobs */
	size_t njobs;		   /* in jobs or running */
	struct dl_jobgate gate;	   /* jobs before the owner's next lock */
	int64_t acks[PG_MAX_ACKS]; /* delivered grants (wait ids) to forget */
	size_t nacks;
	size_t nheld, nwaits;
};

/* ---- conn.c ----------------------------------------------------------- */

/*
 * pg_connect() - make sure @pc is connected (a new connection is checked:
 * server version, no transaction-mode pooler, prepared statements on
 * demand).  Returns 0, or -ENOLCK (server unreachable, in its reconnect
 * backoff, or the deadline passed) / -EACCES (refused: authentication,
 * a pooler, a too-old server) with the reason in @err.
 */
int pg_connect(struct pg_backend *pb, struct pg_conn *pc, int64_t deadline,
	       char *err, size_t errlen);
void pg_disconnect(struct pg_conn *pc);

/*
 * pg_exec() - run prepared statement @q with @n parameters on @pc
 * (connecting first, by @deadline); the statement itself has
 * connect_timeout_ms from its send.  Returns 0 with the rows in *out, or
 * -ENOLCK when no answer came (*indoubt: it was sent, so it may have
 * run), or -EIO when the server refused it (it did not run).
 */
int pg_exec(struct pg_backend *pb, struct pg_conn *pc, enum pg_sql q, int n,
	    const char *const *values, const int *lengths, const int *formats,
	    int64_t deadline, PGresult **out, bool *indoubt);

/* pg_exec_simple() - a text statement without parameters (no prepare);
 * 0 with *out (may be NULL if unwanted), -ENOLCK or -EIO, reason in @err */
int pg_exec_simple(struct pg_backend *pb, struct pg_conn *pc, const char *sql,
		   int64_t deadline, PGresult **out, char *err, size_t errlen);

/* pg_schema_install() - create the schema and its objects on first use;
 * 0, or a negative errno with the reason in @err */
int pg_schema_install(struct pg_backend *pb, struct pg_conn *pc, char *err,
		      size_t errlen);

/* pg_sql_init() - the statement texts for pb->uri.schema; 0 or -ENOMEM */
int pg_sql_init(struct pg_backend *pb);
void pg_sql_free(struct pg_backend *pb);

/* ---- call.c ----------------------------------------------------------- */

int pg_workers_start(struct pg_backend *pb);
void pg_workers_stop(struct pg_backend *pb);
/* queue @call, wait for its answer; returns call->err */
int pg_call_run(struct pg_backend *pb, struct pg_call *call);
/* the caller's deadline of a new request */
int64_t pg_call_deadline(const struct pg_backend *pb);

/* ---- track.c (pb->mutex held unless said otherwise) -------------------- */

struct pg_note *pg_note_alloc(const char *resource); /* any thread */
void pg_note_push(struct pg_note **list, struct pg_note *n);
void pg_notes_run(struct pg_backend *pb, struct pg_note *list); /* unlocked */

struct pg_held **pg_held_slot(struct pg_backend *pb, const char *res,
			      enum dl_space space, uint64_t owner);
struct pg_held *pg_held_alloc(const struct dl_lock_req *req); /* any */
void pg_held_free(struct pg_held *h);			      /* any */
void pg_held_add(struct pg_backend *pb, struct pg_held **spare, const char *res,
		 enum dl_space space, uint64_t owner, uint64_t token);
void pg_held_remove(struct pg_backend *pb, const char *res, enum dl_space space,
		    uint64_t owner, uint64_t max_token);
void pg_held_lose(struct pg_backend *pb, struct pg_held **p, int err,
		  struct pg_note **notes);

struct pg_wait *pg_wait_new(const struct dl_lock_req *req); /* any */
void pg_wait_free(struct pg_wait *w);			    /* any */
struct pg_wait *pg_wait_find(struct pg_backend *pb, uint64_t id);
void pg_wait_insert(struct pg_backend *pb, struct pg_wait *w);
bool pg_wait_unlink(struct pg_backend *pb, struct pg_wait *w);
bool pg_wait_unlink_id(struct pg_backend *pb, uint64_t id,
		       const struct pg_wait *w);
void pg_wait_answer(struct pg_wait *w, uint64_t token, int err,
		    struct pg_note **notes);

void pg_job_add(struct pg_backend *pb, enum pg_job_kind kind, int64_t lease_id,
		const struct dl_lock_req *req, uint64_t max_token);

/* ---- lease.c ---------------------------------------------------------- */

/*
 * pg_lease_ensure() - the current lease (*gen, *id), registering one on
 * @pc if there is none (or waiting, by @deadline, for the thread that
 * does).  0 or -ENOLCK.  Mutex not held.
 */
int pg_lease_ensure(struct pg_backend *pb, struct pg_conn *pc, int64_t deadline,
		    uint64_t *gen, int64_t *id);
/* the server says lease @id is gone (mutex not held) */
void pg_lease_gone(struct pg_backend *pb, int64_t id);
/* every lock is lost, whatever the lease: @why completes "lease N ..."
 * (mutex not held) */
void pg_lease_lose_all(struct pg_backend *pb, const char *why);
/* a grant for queued wait @wait_id of lease @lease_id (mutex held);
 * true when it was reported */
bool pg_deliver_grant(struct pg_backend *pb, int64_t lease_id, uint64_t wait_id,
		      uint64_t token, struct pg_note **notes);
/* wake the keeper: @renew renews now, else re-check now (mutex held) */
void pg_keeper_kick(struct pg_backend *pb, bool renew);
void *pg_keeper_main(void *arg);
int pg_jobs_settle(struct pg_backend *pb, const struct dl_lock_req *req,
		   int64_t deadline);
void *pg_watchdog_main(void *arg);
/* lease->until_ms from renewed_at (mutex held) */
void pg_lease_publish(struct pg_backend *pb);

/* ---- listen.c --------------------------------------------------------- */

/* LISTEN on @pc (open: before the thread starts); 0 or -errno + @err */
int pg_listen_setup(struct pg_backend *pb, struct pg_conn *pc, char *err,
		    size_t errlen);
void *pg_listener_main(void *arg);
void pg_listener_wake(struct pg_backend *pb);

/* ---- small shared helpers --------------------------------------------- */

/* an unsigned 64-bit id as the decimal of the bigint with its bits */
static inline void pg_i64(char buf[24], uint64_t v)
{
	snprintf(buf, 24, "%lld", (long long)(int64_t)v);
}

/* mark the server unreachable / reachable (mutex not held) */
void pg_set_down(struct pg_backend *pb, const char *why);
void pg_set_up(struct pg_backend *pb, PGconn *c, const char *timeline);

void pg_fault_sleep(int ms);
bool pg_fault_take(atomic_int *n);

#endif /* DL_PG_INTERNAL_H */

/*
 * redis.c - the "redis://" backend: cluster-wide locks kept in Redis.
 *
 * Every decision (conflict check, POSIX merge/split/convert, FIFO queue,
 * handoff on release, purge of dead leases, lock-delay) is made atomically
 * on the server by backend/redis.lua: loaded once as a function library
 * and called with FCALL on Redis >= 7, run with EVALSHA otherwise (or
 * where FUNCTION LOAD is refused).  A request is one command, one round
 * trip; nothing else is sent on its connection.
 * This file only moves requests and answers, keeps the lease alive and
 * keeps the local bookkeeping needed to report losses:
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
 * What it deliberately does not do: Redis Cluster (keys of a script span
 * slots), TLS, or any decision outside the script.
 *
 * Locking: redis_backend.mutex guards the tables, node lease state and
 * counters; each pooled connection has its own mutex, taken before
 * rb->mutex when both are held (conn -> rb), never the other way.  No
 * callback runs while any of them is held: callbacks are collected as
 * notes under rb->mutex and made after it is dropped, on the thread that
 * decided them - the subscriber (publishes), the keeper (re-checks,
 * Redlock retries), the watchdog (losses by the clock), or the caller of
 * lock()/cancel() (a loss seen by a request, a grant found by cancel).
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "backend/backend.h"
#include "backend/util/hash.h"
#include "backend/util/log.h"
#include "backend/redis_lua.h"
#include "backend/redis_uri.h"

#define REDIS_POOL	     4	  /* command connections per node */
#define REDIS_RECHECK_MS     1000 /* safety re-check of queued waits */
#define REDIS_BACKOFF_MIN_MS 100
#define REDIS_BACKOFF_MAX_MS 1000
#define REDIS_BUCKETS	     1024
#define REDIS_MAX_ACKS	     256
#define REDIS_POLL_MAX	     512 /* wait ids per re-check call */

struct redis_backend;

/*
 * Test-only fault injection (compiled in always, inert unless the
 * environment variable DLOCKFS_TEST_REDIS_FAULT is set when the backend
 * is opened): a comma-separated list of POINT:N, used by
 * tests/integration/redis/redis_be.c to hit races at will:
 *   delay_lock:MS     sleep after a lock request's wait is registered,
 *                     before the request is sent
 *   delay_cancel:MS   sleep before a cancel is sent
 *   delay_deliver:MS  the subscriber sleeps before delivering a message,
 *                     and the safety re-check leaves grants to it
 *   fail_unlock:N, fail_release:N, fail_cancel:N
 *                     the next N scripts of that op fail as if the node
 *                     were unreachable (nothing sent)
 *   nomem:N           the Nth bookkeeping allocation after open fails
 */
struct redis_fault {
	int delay_lock, delay_cancel, delay_deliver;
	atomic_int fail_unlock, fail_release, fail_cancel;
	atomic_int nomem;
};

static void fault_parse(struct redis_fault *f)
{
	const char *s = getenv("DLOCKFS_TEST_REDIS_FAULT");

	while (s && *s) {
		char name[32];
		int v, len = 0;

		if (sscanf(s, "%31[a-z_]:%d%n", name, &v, &len) < 2 || !len)
			break;
		if (strcmp(name, "delay_lock") == 0)
			f->delay_lock = v;
		else if (strcmp(name, "delay_cancel") == 0)
			f->delay_cancel = v;
		else if (strcmp(name, "delay_deliver") == 0)
			f->delay_deliver = v;
		else if (strcmp(name, "fail_unlock") == 0)
			atomic_store(&f->fail_unlock, v);
		else if (strcmp(name, "fail_release") == 0)
			atomic_store(&f->fail_release, v);
		else if (strcmp(name, "fail_cancel") == 0)
			atomic_store(&f->fail_cancel, v);
		else if (strcmp(name, "nomem") == 0)
			atomic_store(&f->nomem, v);
		dl_log(DL_LOG_WARNING, "redis: test fault %s:%d", name, v);
		s += len;
		if (*s == ',')
			s++;
	}
}

static void fault_sleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (ms > 0)
		nanosleep(&ts, NULL);
}

/* true when a fault counter was armed and this call consumes it */
static bool fault_take(atomic_int *n)
{
	int v = atomic_load(n);

	while (v > 0)
		if (atomic_compare_exchange_weak(n, &v, v - 1))
			return true;
	return false;
}

static bool fault_fail(struct redis_fault *f, const char *op)
{
	if (strcmp(op, "unlock") == 0)
		return fault_take(&f->fail_unlock);
	if (strcmp(op, "release") == 0)
		return fault_take(&f->fail_release);
	if (strcmp(op, "cancel") == 0)
		return fault_take(&f->fail_cancel);
	return false;
}

/* calloc of bookkeeping, failing once where nomem:N says */
static void *fault_calloc(struct redis_fault *f, size_t n, size_t size)
{
	if (atomic_load(&f->nomem) > 0 && atomic_fetch_sub(&f->nomem, 1) == 1)
		return NULL;
	return calloc(n, size);
}

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
	pthread_t sub_thread;
	bool sub_started;
	/* guarded by rb->mutex: */
	bool up;	  /* the last command got an answer */
	int64_t retry_at; /* mono ms: no connect attempt before */
	int backoff_ms;
	uint64_t name;	    /* our lease's name here: lease_name(name) */
	bool registered;    /* that name is registered on the node */
	int64_t renewed_at; /* mono ms: send time of the last good renewal */
	bool trusted;	    /* our lease there is certainly alive */
	int sub_fd;	    /* subscriber socket, -1 */
	char drop[17];	    /* a lease given up, to end there; "" none */
};

/* callbacks collected under the mutex, made after it is dropped; each is
 * allocated before its decision can be made, so none is ever dropped */
struct redis_note {
	struct redis_note *next;
	enum { RN_GRANTED, RN_FAILED, RN_LOST } kind;
	uint64_t wait_id, token, lease, owner;
	enum dl_space space;
	int err;
	char resource[];
};

/* what this daemon holds: one entry per (resource, space, owner) */
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
 * records die with it) */
enum redis_job_kind {
	RJ_RELEASE, /* release_owner */
	RJ_UNLOCK,  /* unlock [start, end] */
	RJ_CANCEL,  /* an orphaned wait: cancel, or unlock if granted */
};

struct redis_job {
	struct redis_job *next;
	enum redis_job_kind kind;
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
	char sha[41];	/* of redis_lua; fixed */
	char fname[32]; /* its function: dlockfs_ + hash of redis_lua */
	char *fn_text;	/* the library: a naming header + redis_lua */
	size_t fn_len;
	atomic_bool fcall;	 /* FCALL fname, false: EVALSHA sha */
	char ttl[16], delay[16]; /* ARGV[4], ARGV[5] */
	struct redis_node *nodes;
	struct dl_lease *lease;	  /* the caller's fence: gen, until_ms */
	struct redis_fault fault; /* tests only */
	pthread_t keeper, watchdog;
	bool keeper_started, watchdog_started;

	pthread_mutex_t mutex;
	pthread_cond_t cond; /* CLOCK_MONOTONIC: keeper and watchdog */
	/* guarded by mutex: */
	bool stopping;
	bool kick;	 /* keeper: re-check waits now */
	bool kick_renew; /* keeper: renew now */
	uint64_t epoch;	 /* current lease = lease->gen, from 1 */
	uint64_t names;	 /* lease names handed out so far */
	struct redis_held *held[REDIS_BUCKETS];
	struct redis_wait *waits[REDIS_BUCKETS];
	struct redis_job *jobs;
	uint64_t acks[REDIS_MAX_ACKS]; /* delivered grants to forget */
	size_t nacks;
	size_t nheld, nwaits;
	/* held entries per node mask: the fence of the weakest */
	unsigned mask_refs[1u << REDIS_URI_MAX_NODES];
};

static struct redis_backend *redis_of(struct dl_backend *be)
{
	return (struct redis_backend *)be;
}

/* ---- small helpers ------------------------------------------------------ */

static uint64_t redis_hash(const char *s, uint64_t x)
{
	return dl_fnv1a_str(DL_FNV_OFFSET ^ x, s);
}

static void hex16(char buf[17], uint64_t v)
{
	snprintf(buf, 17, "%016" PRIx64, v);
}

static void lease_name(const struct redis_backend *rb, uint64_t epoch,
		       char buf[17])
{
	hex16(buf, rb->inc_base + epoch * 0x9E3779B97F4A7C15ULL);
}

static unsigned popcount(unsigned m)
{
	return (unsigned)__builtin_popcount(m);
}

static bool reply_u64(const redisReply *r, uint64_t *v)
{
	char *end;

	if (r->type == REDIS_REPLY_INTEGER) {
		*v = (uint64_t)r->integer;
		return r->integer >= 0;
	}
	if (r->type != REDIS_REPLY_STRING || r->len == 0)
		return false;
	errno = 0;
	*v = strtoull(r->str, &end, 10);
	return errno == 0 && *end == '\0';
}

static bool reply_hex(const redisReply *r, uint64_t *v)
{
	char *end;

	if (r->type != REDIS_REPLY_STRING || r->len != 16)
		return false;
	errno = 0;
	*v = strtoull(r->str, &end, 16);
	return errno == 0 && *end == '\0';
}

static int64_t reply_int(const redisReply *r)
{
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return -2;
}

static struct redis_note *note_alloc(struct redis_backend *rb,
				     const char *resource)
{
	size_t len = resource ? strlen(resource) : 0;
	struct redis_note *n =
		fault_calloc(&rb->fault, 1, sizeof(*n) + len + 1);

	if (n && len)
		memcpy(n->resource, resource, len + 1);
	return n;
}

static void note_push(struct redis_note **list, struct redis_note *n)
{
	n->next = *list;
	*list = n;
}

/* make the callbacks, in the order they were decided; no mutex held */
static void notes_run(struct redis_backend *rb, struct redis_note *list)
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
			struct dl_grant g = { n->token, n->lease };

			rb->cb.granted(rb->cb.ctx, n->wait_id, &g);
		} else if (n->kind == RN_FAILED)
			rb->cb.failed(rb->cb.ctx, n->wait_id, n->err);
		else
			rb->cb.lost(rb->cb.ctx, n->resource, n->space, n->owner,
				    n->err);
		free(n);
	}
}

/* ---- the lease fence (mutex held) ------------------------------------------ */

static int64_t node_deadline(const struct redis_backend *rb,
			     const struct redis_node *n)
{
	/* by our monotonic clock, strictly before the server (which started
	 * counting after our send) expires it */
	return n->renewed_at + rb->uri.ttl_ms - rb->margin_ms - rb->drift_ms;
}

/* the time until which a majority of the nodes in @mask is trusted, 0 */
static int64_t mask_until(const struct redis_backend *rb, unsigned mask)
{
	int64_t d[REDIS_URI_MAX_NODES];
	unsigned k = 0;

	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		if ((mask & (1u << i)) && rb->nodes[i].trusted)
			d[k++] = node_deadline(rb, &rb->nodes[i]);
	if (k < rb->majority)
		return 0;
	/* the majority-th latest deadline: sort descending (k <= 7) */
	for (unsigned i = 0; i < k; i++)
		for (unsigned j = i + 1; j < k; j++)
			if (d[j] > d[i]) {
				int64_t t = d[i];

				d[i] = d[j];
				d[j] = t;
			}
	return d[rb->majority - 1];
}

/*
 * Store lease->until_ms for the current gen: the earliest time at which a
 * lock we hold could stop being held by a majority of its nodes (single
 * node: that node's deadline), 0 without a trusted lease.  Called after
 * every change of a deadline, of the trusted nodes or of a held mask.
 */
static void lease_publish(struct redis_backend *rb)
{
	unsigned all = (1u << rb->uri.nnodes) - 1;
	int64_t until = mask_until(rb, all);

	for (unsigned m = 1; m <= all && until; m++) {
		int64_t u;

		if (!rb->mask_refs[m])
			continue;
		u = mask_until(rb, m);
		if (u < until)
			until = u;
	}
	atomic_store(&rb->lease->until_ms, until);
}

/* ---- held and waits tables (mutex held) ------------------------------- */

static struct redis_held **held_slot(struct redis_backend *rb, const char *res,
				     enum dl_space space, uint64_t owner)
{
	struct redis_held **p =
		&rb->held[redis_hash(res, owner ^ space) % REDIS_BUCKETS];

	while (*p && ((*p)->owner != owner || (*p)->space != space ||
		      strcmp((*p)->resource, res) != 0))
		p = &(*p)->next;
	return p;
}

static void held_free(struct redis_held *h)
{
	if (h) {
		free(h->lost);
		free(h);
	}
}

/* an entry for held and its loss report, allocated before the request */
static struct redis_held *held_alloc(struct redis_backend *rb,
				     const struct dl_lock_req *req)
{
	size_t len = strlen(req->resource);
	struct redis_held *h =
		fault_calloc(&rb->fault, 1, sizeof(*h) + len + 1);

	if (!h)
		return NULL;
	h->lost = note_alloc(rb, req->resource);
	if (!h->lost) {
		free(h);
		return NULL;
	}
	h->space = req->space;
	h->owner = req->owner;
	memcpy(h->resource, req->resource, len + 1);
	return h;
}

static void mask_ref(struct redis_backend *rb, unsigned mask, int delta)
{
	rb->mask_refs[mask] += (unsigned)delta;
}

/* a grant of @token on nodes @mask; takes *spare when the entry is new */
static void held_add(struct redis_backend *rb, struct redis_held **spare,
		     const char *res, enum dl_space space, uint64_t owner,
		     unsigned mask, uint64_t token)
{
	struct redis_held **p = held_slot(rb, res, space, owner), *h = *p;

	if (h) {
		/* pieces granted by different majorities: trust the common
		 * nodes only (conservative) */
		mask_ref(rb, h->mask, -1);
		h->mask &= mask;
		mask_ref(rb, h->mask, 1);
	} else {
		h = *spare;
		*spare = NULL;
		assert(h);
		h->next = NULL;
		h->mask = mask;
		*p = h;
		rb->nheld++;
		mask_ref(rb, mask, 1);
	}
	if (token > h->max_token)
		h->max_token = token;
	if (rb->uri.nnodes > 1)
		lease_publish(rb);
}

static void held_unlink(struct redis_backend *rb, struct redis_held **p)
{
	struct redis_held *h = *p;

	*p = h->next;
	mask_ref(rb, h->mask, -1);
	rb->nheld--;
}

/* forget a lock released for good, unless a newer grant than @max_token
 * came meanwhile */
static void held_remove(struct redis_backend *rb, const char *res,
			enum dl_space space, uint64_t owner, uint64_t max_token)
{
	struct redis_held **p = held_slot(rb, res, space, owner), *h = *p;

	if (!h || h->max_token > max_token)
		return;
	held_unlink(rb, p);
	held_free(h);
}

/* the lock is gone: report it through its ready note */
static void held_lose(struct redis_backend *rb, struct redis_held **p, int err,
		      struct redis_note **notes)
{
	struct redis_held *h = *p;

	held_unlink(rb, p);
	h->lost->kind = RN_LOST;
	h->lost->space = h->space;
	h->lost->owner = h->owner;
	h->lost->err = err;
	note_push(notes, h->lost);
	h->lost = NULL;
	held_free(h);
}

static struct redis_wait **wait_slot(struct redis_backend *rb, uint64_t id)
{
	struct redis_wait **p = &rb->waits[(id * 0x9E3779B97F4A7C15ULL) >> 54];

	while (*p && (*p)->wait_id != id)
		p = &(*p)->next;
	return p;
}

static struct redis_wait *wait_find(struct redis_backend *rb, uint64_t id)
{
	return *wait_slot(rb, id);
}

static void wait_insert(struct redis_backend *rb, struct redis_wait *w)
{
	struct redis_wait **p = wait_slot(rb, w->wait_id);

	w->next = *p;
	*p = w;
	/* the first wait: the keeper may nap until its next renewal, but
	 * the once-a-second re-check starts now */
	if (rb->nwaits++ == 0)
		pthread_cond_broadcast(&rb->cond);
}

/* unlink @w if it is in the table; true if it was */
static bool wait_unlink(struct redis_backend *rb, struct redis_wait *w)
{
	struct redis_wait **p = wait_slot(rb, w->wait_id);

	if (*p != w)
		return false;
	*p = w->next;
	rb->nwaits--;
	return true;
}

/* a wait with its answer and its held entry allocated: once queued, its
 * answer never needs memory */
static struct redis_wait *wait_new(struct redis_backend *rb,
				   const struct dl_lock_req *req)
{
	size_t len = strlen(req->resource);
	struct redis_wait *w =
		fault_calloc(&rb->fault, 1, sizeof(*w) + len + 1);

	if (!w)
		return NULL;
	w->note = note_alloc(rb, NULL);
	w->spare = held_alloc(rb, req);
	if (!w->note || !w->spare) {
		free(w->note);
		held_free(w->spare);
		free(w);
		return NULL;
	}
	memcpy(w->res, req->resource, len + 1);
	w->req = *req;
	w->req.resource = w->res;
	w->wait_id = req->wait_id;
	return w;
}

static void wait_free(struct redis_wait *w)
{
	if (w) {
		free(w->note);
		held_free(w->spare);
		free(w);
	}
}

/* answer @w through its ready note (granted when @err is 0) */
static void wait_answer(struct redis_wait *w, uint64_t token, int err,
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
	note_push(notes, n);
}

/* the lease name our records on node @node carry now; mutex held */
static uint64_t node_name(struct redis_backend *rb, unsigned node)
{
	return rb->nodes[node].name;
}

/* retry @req on node @node in the background, as lease name @name */
static void job_add(struct redis_backend *rb, enum redis_job_kind kind,
		    unsigned node, uint64_t name, const struct dl_lock_req *req,
		    uint64_t max_token)
{
	size_t len = strlen(req->resource);
	struct redis_job *j = fault_calloc(&rb->fault, 1, sizeof(*j) + len + 1);

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
	rb->kick = true;
	pthread_cond_broadcast(&rb->cond);
}

/* ---- connections ---------------------------------------------------------- */

static void node_set_down(struct redis_backend *rb, struct redis_node *n)
{
	int64_t now = dl_mono_ms();

	pthread_mutex_lock(&rb->mutex);
	if (n->up)
		dl_log(DL_LOG_WARNING, "redis %s:%d: unreachable", n->addr.host,
		       n->addr.port);
	n->up = false;
	n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2
				      : REDIS_BACKOFF_MIN_MS;
	if (n->backoff_ms > REDIS_BACKOFF_MAX_MS)
		n->backoff_ms = REDIS_BACKOFF_MAX_MS;
	n->retry_at = now + n->backoff_ms;
	pthread_mutex_unlock(&rb->mutex);
}

static void node_set_up(struct redis_backend *rb, struct redis_node *n)
{
	pthread_mutex_lock(&rb->mutex);
	if (!n->up)
		dl_log(DL_LOG_INFO, "redis %s:%d: reachable", n->addr.host,
		       n->addr.port);
	n->up = true;
	n->backoff_ms = 0;
	n->retry_at = 0;
	pthread_mutex_unlock(&rb->mutex);
}

/*
 * AUTH if configured; 0, or -EACCES with the server's reason in @err, or
 * -EIO/-ENOMEM.
 *
 * rb->password is the daemon's only copy of the password.  hiredis would
 * copy the command into two buffers that it frees without wiping (the
 * formatted command and the output buffer), so we format it, send it on
 * the (blocking, send-timed) socket ourselves and wipe it; hiredis only
 * reads the reply.
 */
static int redis_auth(struct redis_backend *rb, redisContext *c, char *err,
		      size_t errlen)
{
	const char *argv[3] = { "AUTH" };
	size_t lens[3] = { 4 };
	redisReply *r = NULL;
	int argc = 1, ret = 0, len;
	size_t off = 0;
	char *cmd;

	if (!rb->password)
		return 0;
	if (rb->user[0]) {
		argv[argc] = rb->user;
		lens[argc++] = strlen(rb->user);
	}
	argv[argc] = rb->password;
	lens[argc++] = strlen(rb->password);
	len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0) {
		snprintf(err, errlen, "AUTH: out of memory");
		return -ENOMEM;
	}
	while (off < (size_t)len) {
		ssize_t w =
			send(c->fd, cmd + off, (size_t)len - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			snprintf(err, errlen, "AUTH: %s",
				 w < 0 ? strerror(errno) : "short write");
			break;
		}
		off += (size_t)w;
	}
	explicit_bzero(cmd, (size_t)len);
	redisFreeCommand(cmd);
	if (off < (size_t)len)
		return -EIO;
	if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
		snprintf(err, errlen, "AUTH: %s", c->errstr);
		return -EIO;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		/* the server's message never quotes the password */
		snprintf(err, errlen, "AUTH refused: %.*s", (int)r->len,
			 r->str);
		ret = -EACCES;
	}
	freeReplyObject(r);
	return ret;
}

/* a new connection to @n, authenticated; NULL with a reason in @err */
static redisContext *redis_connect(struct redis_backend *rb,
				   struct redis_node *n, bool blocking_reads,
				   char *err, size_t errlen)
{
	struct timeval tv = { rb->uri.connect_timeout_ms / 1000,
			      (rb->uri.connect_timeout_ms % 1000) * 1000 };
	struct timeval none = { 0, 0 };
	redisContext *c;

	c = redisConnectWithTimeout(n->addr.host, n->addr.port, tv);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (c->err) {
		snprintf(err, errlen, "%s", c->errstr);
		redisFree(c);
		return NULL;
	}
	/* commands time out like connects; a subscriber waits for ever
	 * (keepalive and the keeper notice a dead server) */
	if (redisSetTimeout(c, blocking_reads ? none : tv) != REDIS_OK ||
	    redisEnableKeepAlive(c) != REDIS_OK) {
		snprintf(err, errlen, "%s", c->errstr);
		redisFree(c);
		return NULL;
	}
	if (redis_auth(rb, c, err, errlen) < 0) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/*
 * The library text for FUNCTION LOAD and its names, from a hash of
 * redis_lua: daemons of different versions sharing one server each call
 * their own code.  0 or -ENOMEM.
 */
static int redis_library_init(struct redis_backend *rb)
{
	static const char fmt[] = "#!lua name=%s\n"
				  "local DLOCKFS_FUNCTION = '%s'\n";
	uint64_t h = dl_fnv1a(DL_FNV_OFFSET, redis_lua, sizeof(redis_lua) - 1);
	size_t hlen;

	snprintf(rb->fname, sizeof(rb->fname), "dlockfs_%016" PRIx64, h);
	hlen = (size_t)snprintf(NULL, 0, fmt, rb->fname, rb->fname);
	rb->fn_len = hlen + sizeof(redis_lua) - 1;
	rb->fn_text = malloc(rb->fn_len + 1);
	if (!rb->fn_text)
		return -ENOMEM;
	snprintf(rb->fn_text, hlen + 1, fmt, rb->fname, rb->fname);
	memcpy(rb->fn_text + hlen, redis_lua, sizeof(redis_lua));
	atomic_store(&rb->fcall, true);
	return 0;
}

/*
 * FUNCTION LOAD on @c.  Returns 0 when the library is there (loaded now
 * or already), -ENOTSUP when the server has no functions or this user
 * may not load them (the whole backend then uses EVALSHA for good), or
 * -EIO with the reason in @err.
 */
static int redis_load_function(struct redis_backend *rb, redisContext *c,
			       const struct redis_node *n, char *err,
			       size_t errlen)
{
	const char *argv[3] = { "FUNCTION", "LOAD", rb->fn_text };
	size_t lens[3] = { 8, 4, rb->fn_len };
	redisReply *r = redisCommandArgv(c, 3, argv, lens);
	int ret = 0;

	if (!r) {
		snprintf(err, errlen, "FUNCTION LOAD: %s", c->errstr);
		return -EIO;
	}
	if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "already exists")) {
		ret = 0; /* the same text: another connection loaded it */
	} else if (r->type == REDIS_REPLY_ERROR &&
		   (strncmp(r->str, "ERR unknown", 11) == 0 ||
		    strncmp(r->str, "NOPERM", 6) == 0)) {
		if (atomic_exchange(&rb->fcall, false))
			dl_log(DL_LOG_INFO,
			       "redis %s:%d: no FUNCTION LOAD (%.*s): using "
			       "EVALSHA",
			       n->addr.host, n->addr.port,
			       (int)strcspn(r->str, ","), r->str);
		ret = -ENOTSUP;
	} else if (r->type != REDIS_REPLY_STRING) {
		snprintf(err, errlen, "FUNCTION LOAD refused: %.*s",
			 r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
			 r->type == REDIS_REPLY_ERROR ? r->str : "");
		ret = -EIO;
	}
	freeReplyObject(r);
	return ret;
}

/* FUNCTION LOAD, or SCRIPT LOAD without functions, on @c; 0 or -EIO */
static int redis_load_script(struct redis_backend *rb, redisContext *c,
			     const struct redis_node *n, char *err,
			     size_t errlen)
{
	const char *argv[3] = { "SCRIPT", "LOAD", redis_lua };
	size_t lens[3] = { 6, 4, sizeof(redis_lua) - 1 };
	redisReply *r;
	int ret = 0;

	if (atomic_load(&rb->fcall)) {
		ret = redis_load_function(rb, c, n, err, errlen);
		if (ret != -ENOTSUP)
			return ret;
		ret = 0;
	}
	r = redisCommandArgv(c, 3, argv, lens);
	if (!r) {
		snprintf(err, errlen, "SCRIPT LOAD: %s", c->errstr);
		return -EIO;
	}
	if (r->type != REDIS_REPLY_STRING || r->len != 40) {
		snprintf(err, errlen, "SCRIPT LOAD refused: %.*s",
			 r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
			 r->type == REDIS_REPLY_ERROR ? r->str : "");
		ret = -EIO;
	} else {
		memcpy(rb->sha, r->str, 40); /* the same everywhere */
		rb->sha[40] = '\0';
	}
	freeReplyObject(r);
	return ret;
}

/*
 * A locked connection to @n, connected; NULL when the node is down (in
 * its backoff, or the connect failed within connect_timeout_ms).
 */
static struct redis_conn *conn_get(struct redis_backend *rb,
				   struct redis_node *n)
{
	unsigned start = atomic_fetch_add(&n->rr, 1);
	struct redis_conn *c = NULL;
	char err[256];
	bool wait;

	for (unsigned i = 0; i < REDIS_POOL && !c; i++)
		if (pthread_mutex_trylock(
			    &n->pool[(start + i) % REDIS_POOL].mutex) == 0)
			c = &n->pool[(start + i) % REDIS_POOL];
	if (!c) {
		c = &n->pool[start % REDIS_POOL];
		pthread_mutex_lock(&c->mutex);
	}
	if (c->c)
		return c;
	pthread_mutex_lock(&rb->mutex);
	wait = dl_mono_ms() < n->retry_at;
	pthread_mutex_unlock(&rb->mutex);
	if (!wait) {
		c->c = redis_connect(rb, n, false, err, sizeof(err));
		if (c->c &&
		    redis_load_script(rb, c->c, n, err, sizeof(err)) < 0) {
			redisFree(c->c);
			c->c = NULL;
		}
		if (c->c) {
			node_set_up(rb, n);
			return c;
		}
		dl_log(DL_LOG_DEBUG, "redis %s:%d: %s", n->addr.host,
		       n->addr.port, err);
		node_set_down(rb, n);
	}
	pthread_mutex_unlock(&c->mutex);
	return NULL;
}

static void conn_put(struct redis_conn *c)
{
	pthread_mutex_unlock(&c->mutex);
}

/* a server that forgot our code (restart, FLUSH) */
static bool reply_no_code(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR &&
	       (strncmp(r->str, "NOSCRIPT", 8) == 0 ||
		strncmp(r->str, "ERR Function not found", 22) == 0);
}

#define REDIS_ARGV_STACK 24  /* arguments built without malloc */
#define REDIS_KEYS_STACK 768 /* bytes of the three key names */

/*
 * Run script op @op on node @n for @resource ("" for none) as lease
 * @lease, with @nextra op-specific arguments: FCALL FNAME 3 KEYS... or
 * EVALSHA SHA 3 KEYS..., then ARGV.  Returns 0 and the reply (an array),
 * or -ENOLCK: the node is down or the call failed; *indoubt then says
 * whether the script may have run.  The common case allocates nothing
 * but hiredis's own buffers.
 */
static int node_script(struct redis_backend *rb, struct redis_node *n,
		       const char *op, const char *resource, const char *lease,
		       int nextra, const char *const *extra,
		       const size_t *extralen, redisReply **out, bool *indoubt)
{
	const char *argv_stack[REDIS_ARGV_STACK], **argv = argv_stack;
	size_t lens_stack[REDIS_ARGV_STACK], *lens = lens_stack;
	char keys_stack[REDIS_KEYS_STACK], *keys = keys_stack;
	size_t plen = strlen(rb->uri.prefix), rlen = strlen(resource);
	size_t klen = plen + 3 + rlen, nargs = (size_t)nextra + 11;
	struct redis_conn *c;
	redisReply *r = NULL;
	int argc = 0, ret = -ENOLCK;

	*out = NULL;
	if (indoubt)
		*indoubt = false;
	if (fault_fail(&rb->fault, op))
		return -ENOLCK;
	if (nargs > REDIS_ARGV_STACK) {
		argv = calloc(nargs, sizeof(*argv));
		lens = calloc(nargs, sizeof(*lens));
	}
	if (3 * klen > sizeof(keys_stack))
		keys = malloc(3 * klen);
	if (!keys || !argv || !lens) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (int k = 0; k < 3; k++) {
		char *key = keys + k * klen;

		memcpy(key, rb->uri.prefix, plen);
		key[plen] = ':';
		key[plen + 1] = "gwd"[k];
		key[plen + 2] = ':';
		memcpy(key + plen + 3, resource, rlen);
		argv[3 + k] = key;
		lens[3 + k] = klen;
	}
	argv[2] = "3";
	argv[6] = op;
	argv[7] = rb->uri.prefix;
	argv[8] = lease;
	argv[9] = rb->ttl;
	argv[10] = rb->delay;
	argc = 11;
	for (int i = 0; i < nextra; i++) {
		argv[argc] = extra[i];
		lens[argc++] = extralen ? extralen[i] : strlen(extra[i]);
	}

	c = conn_get(rb, n);
	if (!c)
		goto out_free;
	for (int attempt = 0; attempt < 2; attempt++) {
		char err[256];

		/* read each time: a reload may have switched to EVALSHA */
		if (atomic_load(&rb->fcall)) {
			argv[0] = "FCALL";
			argv[1] = rb->fname;
		} else {
			argv[0] = "EVALSHA";
			argv[1] = rb->sha;
		}
		for (int i = 0; i < 11; i++)
			if (i < 3 || i > 5)
				lens[i] = strlen(argv[i]);
		r = redisCommandArgv(c->c, argc, argv, lens);
		if (!r)
			break;
		if (reply_no_code(r) && attempt == 0) {
			freeReplyObject(r);
			r = NULL;
			if (redis_load_script(rb, c->c, n, err, sizeof(err)) <
			    0) {
				dl_log(DL_LOG_WARNING, "redis %s:%d: %s",
				       n->addr.host, n->addr.port, err);
				break;
			}
			continue;
		}
		break;
	}
	if (!r) {
		if (c->c->err) {
			dl_log(DL_LOG_DEBUG, "redis %s:%d: %s: %s",
			       n->addr.host, n->addr.port, op, c->c->errstr);
			redisFree(c->c);
			c->c = NULL;
			if (indoubt)
				*indoubt = true;
			conn_put(c);
			node_set_down(rb, n);
			goto out_free;
		}
		conn_put(c);
		goto out_free;
	}
	conn_put(c);
	if (r->type != REDIS_REPLY_ARRAY) {
		dl_log(DL_LOG_ERR, "redis %s:%d: %s: unexpected answer: %.*s",
		       n->addr.host, n->addr.port, op,
		       r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
		       r->type == REDIS_REPLY_ERROR ? r->str : "");
		freeReplyObject(r);
		goto out_free;
	}
	*out = r;
	ret = 0;
out_free:
	if (keys != keys_stack)
		free(keys);
	if (argv != argv_stack) {
		free(argv);
		free(lens);
	}
	return ret;
}

/* ---- leases --------------------------------------------------------------- */

/*
 * Our queued waits in bucket @b end with -ENOLCK: the lease they were
 * queued under is gone.  Those in flight (a lock() call, a keeper retry)
 * are left to their thread, which sees the new gen; one being cancelled
 * is left to redis_cancel(), which returns 0 for it.  Mutex held.
 */
static void fail_queued_waits(struct redis_backend *rb, size_t b,
			      struct redis_note **notes)
{
	for (struct redis_wait **p = &rb->waits[b]; *p;) {
		struct redis_wait *w = *p;

		if (w->state == RW_SENDING || w->busy) {
			p = &w->next;
			continue;
		}
		*p = w->next;
		rb->nwaits--;
		if (w->cancelling) {
			w->end = RWE_LOST;
			continue;
		}
		wait_answer(w, 0, -ENOLCK, notes);
		wait_free(w);
	}
}

/* node @n gets a fresh lease name; the old one is ended there (keeper) and
 * never registered again, so records reported lost cannot revive */
static void node_rename(struct redis_backend *rb, struct redis_node *n)
{
	lease_name(rb, n->name, n->drop);
	n->name = ++rb->names;
	n->registered = false;
	n->trusted = false;
	/* resubscribe on the new lease's channel */
	if (n->sub_fd >= 0)
		shutdown(n->sub_fd, SHUT_RDWR);
}

/*
 * Every lock of this daemon is gone or cannot be trusted: bump the gen
 * first (grants of the old one are never trusted again), report each
 * held lock lost, fail each queued wait, and serve new requests under a
 * fresh lease with fresh names.  Mutex held; callbacks go to @notes.
 */
static void lose_all(struct redis_backend *rb, const char *why,
		     struct redis_note **notes)
{
	char old[17];
	size_t nlost = 0;

	rb->epoch++;
	atomic_store(&rb->lease->gen, rb->epoch);
	atomic_store(&rb->lease->until_ms, 0);
	lease_name(rb, rb->nodes[0].name, old);
	for (size_t b = 0; b < REDIS_BUCKETS; b++) {
		while (rb->held[b]) {
			held_lose(rb, &rb->held[b], -ENOLCK, notes);
			nlost++;
		}
		fail_queued_waits(rb, b, notes);
	}
	/* left-over work of the old names: their records die with them */
	while (rb->jobs) {
		struct redis_job *j = rb->jobs;

		rb->jobs = j->next;
		free(j);
	}
	rb->nacks = 0;
	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		node_rename(rb, &rb->nodes[i]);
	rb->kick = true;
	rb->kick_renew = true;
	pthread_cond_broadcast(&rb->cond);
	dl_log(nlost ? DL_LOG_WARNING : DL_LOG_INFO,
	       "redis: lease %s %s: %zu lock(s) lost, new lease %" PRIu64 " for"
	       " new"
	       " req"
	       "uest"
	       "s",
	       old, why, nlost, rb->epoch);
}

/*
 * Redlock: node @n can no longer vouch for our records.  If some held
 * lock is left without a majority of trusted nodes (or no majority is
 * trusted at all), the whole lease is lost: one gen fences every grant,
 * so a lost lock must not leave the others trusted (lose_all).  Otherwise
 * only @n takes a new name.  Mutex held.
 */
static void lose_node(struct redis_backend *rb, struct redis_node *n,
		      const char *why, struct redis_note **notes)
{
	unsigned trusted = 0, all = (1u << rb->uri.nnodes) - 1;
	bool lost = false;

	n->trusted = false;
	dl_log(DL_LOG_WARNING, "redis %s:%d: lease %s", n->addr.host,
	       n->addr.port, why);
	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		if (rb->nodes[i].trusted)
			trusted |= 1u << i;
	if (popcount(trusted) < rb->majority)
		lost = true;
	for (unsigned m = 1; m <= all && !lost; m++)
		if (rb->mask_refs[m] && popcount(m & trusted) < rb->majority)
			lost = true;
	if (lost) {
		lose_all(rb, why, notes);
		return;
	}
	/* the records on @n are not ours any more */
	for (size_t b = 0; b < REDIS_BUCKETS; b++)
		for (struct redis_held *h = rb->held[b]; h; h = h->next) {
			mask_ref(rb, h->mask, -1);
			h->mask &= ~(1u << n->idx);
			mask_ref(rb, h->mask, 1);
		}
	node_rename(rb, n);
	rb->kick = true;
	rb->kick_renew = true;
	pthread_cond_broadcast(&rb->cond);
	lease_publish(rb);
}

/* the server says our lease @name on @n is gone (restarted empty, expired) */
static void lease_gone(struct redis_backend *rb, struct redis_node *n,
		       uint64_t name)
{
	struct redis_note *notes = NULL;

	pthread_mutex_lock(&rb->mutex);
	if (n->name == name) {
		if (rb->uri.nnodes == 1)
			lose_all(rb, "is gone on the server", &notes);
		else
			lose_node(rb, n, "is gone on the server", &notes);
	}
	pthread_mutex_unlock(&rb->mutex);
	notes_run(rb, notes);
}

/*
 * Make sure our current lease exists on @n: register it if needed.
 * Returns 0 with the lease name in @lease, its id in *name and the gen it
 * belongs to in *gen, or -ENOLCK.
 */
static int node_lease(struct redis_backend *rb, struct redis_node *n,
		      char lease[17], uint64_t *gen, uint64_t *name)
{
	const char *extra[1] = { rb->host_id };
	redisReply *r;
	int64_t sent;
	bool have;
	int ret;

	pthread_mutex_lock(&rb->mutex);
	*gen = rb->epoch;
	*name = n->name;
	have = n->registered;
	pthread_mutex_unlock(&rb->mutex);
	lease_name(rb, *name, lease);
	if (have)
		return 0;
	sent = dl_mono_ms();
	ret = node_script(rb, n, "reg", "", lease, 1, extra, NULL, &r, NULL);
	if (ret < 0)
		return -ENOLCK;
	freeReplyObject(r);
	pthread_mutex_lock(&rb->mutex);
	if (n->name == *name && rb->epoch == *gen) {
		n->registered = true;
		n->renewed_at = sent;
		n->trusted = true;
		lease_publish(rb);
		pthread_cond_broadcast(&rb->cond); /* new watchdog deadline */
	} else {
		ret = -ENOLCK;
	}
	pthread_mutex_unlock(&rb->mutex);
	if (ret == 0)
		dl_log(DL_LOG_DEBUG, "redis %s:%d: lease %s registered",
		       n->addr.host, n->addr.port, lease);
	return ret;
}

static void deliver_break(struct redis_backend *rb, struct redis_node *n,
			  uint64_t name, const char *entry, size_t len,
			  struct redis_note **notes);

/* renew our lease on @n, forgetting delivered grants; one round trip */
static void node_renew(struct redis_backend *rb, struct redis_node *n)
{
	char lease[17], ackbuf[REDIS_MAX_ACKS][17];
	const char *extra[REDIS_MAX_ACKS];
	uint64_t acks[REDIS_MAX_ACKS];
	size_t nacks = 0;
	redisReply *r;
	uint64_t gen, name;
	int64_t sent;
	int ret;

	if (node_lease(rb, n, lease, &gen, &name) < 0)
		return;
	pthread_mutex_lock(&rb->mutex);
	if (n->name == name && rb->uri.nnodes == 1) {
		nacks = rb->nacks;
		memcpy(acks, rb->acks, nacks * sizeof(acks[0]));
		rb->nacks = 0;
	}
	pthread_mutex_unlock(&rb->mutex);
	for (size_t i = 0; i < nacks; i++) {
		hex16(ackbuf[i], acks[i]);
		extra[i] = ackbuf[i];
	}
	sent = dl_mono_ms();
	ret = node_script(rb, n, "renew", "", lease, (int)nacks,
			  nacks ? extra : NULL, NULL, &r, NULL);
	if (ret < 0) {
		/* forget them next time */
		pthread_mutex_lock(&rb->mutex);
		for (size_t i = 0;
		     i < nacks && n->name == name && rb->nacks < REDIS_MAX_ACKS;
		     i++)
			rb->acks[rb->nacks++] = acks[i];
		pthread_mutex_unlock(&rb->mutex);
		return;
	}
	if (r->elements >= 1 && reply_int(r->element[0]) == 1) {
		struct redis_note *notes = NULL;

		pthread_mutex_lock(&rb->mutex);
		if (n->name == name && n->registered) {
			n->renewed_at = sent;
			n->trusted = true;
			lease_publish(rb);
			pthread_cond_broadcast(&rb->cond);
		}
		/* breaks whose publish we may have missed */
		for (size_t i = 1; i < r->elements; i++)
			if (r->element[i]->type == REDIS_REPLY_STRING)
				deliver_break(rb, n, name, r->element[i]->str,
					      r->element[i]->len, &notes);
		pthread_mutex_unlock(&rb->mutex);
		notes_run(rb, notes);
	} else {
		lease_gone(rb, n, name);
	}
	freeReplyObject(r);
}

/* ---- delivery ------------------------------------------------------------- */

/*
 * A grant for queued wait @id of lease name @name (single node); mutex
 * held.  Returns true when it was reported.  A wait of an older gen is left to its lock() call (it answers
 * -ENOLCK itself) or was failed already.
 */
static bool deliver_grant(struct redis_backend *rb, uint64_t name, uint64_t id,
			  uint64_t token, unsigned mask,
			  struct redis_note **notes)
{
	struct redis_wait *w = wait_find(rb, id);

	if (!w || w->name != name || w->gen != rb->epoch)
		return false; /* delivered already, or of a lease given up */
	wait_unlink(rb, w);
	held_add(rb, &w->spare, w->res, w->req.space, w->req.owner, mask,
		 token);
	if (rb->uri.nnodes == 1 && rb->nacks < REDIS_MAX_ACKS)
		rb->acks[rb->nacks++] = id;
	wait_answer(w, token, 0, notes);
	if (w->cancelling)
		w->end = RWE_GRANTED; /* redis_cancel() frees it */
	else
		wait_free(w);
	return true;
}

/*
 * An administrator broke a lock of lease name @name on @n: @entry is
 * "SPACE OWNER RESOURCE" (the resource last: it may hold blanks).  If we
 * still hold it, it is lost.  Mutex held.
 */
static void deliver_break(struct redis_backend *rb, struct redis_node *n,
			  uint64_t name, const char *entry, size_t len,
			  struct redis_note **notes)
{
	char head[40], *res, *end;
	enum dl_space space;
	struct redis_held **p;
	uint64_t owner;
	size_t hlen;
	const char *sp;

	if (len < 5 || (entry[0] != '0' && entry[0] != '1') || entry[1] != ' ')
		return;
	sp = memchr(entry + 2, ' ', len - 2);
	if (!sp || (size_t)(sp - entry) >= sizeof(head))
		return;
	hlen = (size_t)(sp - entry);
	memcpy(head, entry, hlen);
	head[hlen] = '\0';
	owner = strtoull(head + 2, &end, 16);
	if (*end != '\0')
		return;
	space = entry[0] == '0' ? DL_SPACE_FLOCK : DL_SPACE_POSIX;
	res = strndup(sp + 1, len - hlen - 1);
	if (!res) {
		/* the renewal that reads the break set again is the
		 * retry; the lock is fenced by the lease meanwhile */
		dl_log(DL_LOG_ERR, "redis: out of memory reading a break");
		return;
	}
	p = held_slot(rb, res, space, owner);
	if (n->name == name && *p)
		held_lose(rb, p, -ECONNABORTED, notes);
	free(res);
}

/* ---- subscriber ----------------------------------------------------------- */

static void sub_message(struct redis_backend *rb, struct redis_node *n,
			uint64_t name, const char *msg, size_t len)
{
	struct redis_note *notes = NULL;
	char buf[64];
	uint64_t id, token = 0;
	char kind;

	fault_sleep(rb->fault.delay_deliver);
	if (len > 2 && msg[0] == 'L' && msg[1] == ' ') {
		pthread_mutex_lock(&rb->mutex);
		deliver_break(rb, n, name, msg + 2, len - 2, &notes);
		pthread_mutex_unlock(&rb->mutex);
		notes_run(rb, notes);
		return;
	}
	if (len >= sizeof(buf))
		return;
	memcpy(buf, msg, len);
	buf[len] = '\0';
	if (sscanf(buf, "%c %" SCNx64 " %" SCNu64, &kind, &id, &token) < 2)
		return;
	pthread_mutex_lock(&rb->mutex);
	if (kind == 'G' && rb->uri.nnodes == 1) {
		deliver_grant(rb, name, id, token, 1u << n->idx, &notes);
	} else if (kind == 'W') {
		struct redis_wait *w = wait_find(rb, id);

		if (w && w->gen == rb->epoch) {
			w->woken = true;
			rb->kick = true;
			pthread_cond_broadcast(&rb->cond);
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	notes_run(rb, notes);
}

/* sleep @ms or until stopping; mutex held */
static void redis_nap(struct redis_backend *rb, int64_t ms)
{
	int64_t until = dl_mono_ms() + ms;
	struct timespec ts = { until / 1000, (until % 1000) * 1000000 };

	if (!rb->stopping)
		pthread_cond_timedwait(&rb->cond, &rb->mutex, &ts);
}

static void *sub_main(void *arg)
{
	struct redis_node *n = arg;
	struct redis_backend *rb = n->rb;
	int backoff = REDIS_BACKOFF_MIN_MS;

	pthread_mutex_lock(&rb->mutex);
	while (!rb->stopping) {
		uint64_t name = n->name;
		char lease[17], chan[REDIS_URI_PREFIX_MAX + 32], err[256];
		const char *argv[2] = { "SUBSCRIBE", chan };
		redisContext *c;
		redisReply *r;

		pthread_mutex_unlock(&rb->mutex);
		lease_name(rb, name, lease);
		snprintf(chan, sizeof(chan), "%s:inc:%s", rb->uri.prefix,
			 lease);
		c = redis_connect(rb, n, true, err, sizeof(err));
		r = c ? redisCommandArgv(c, 2, argv, NULL) : NULL;
		pthread_mutex_lock(&rb->mutex);
		if (!r || r->type != REDIS_REPLY_ARRAY || n->name != name) {
			if (r)
				freeReplyObject(r);
			if (c)
				redisFree(c);
			if (n->name == name)
				redis_nap(rb, backoff);
			backoff = backoff * 2 > REDIS_BACKOFF_MAX_MS
					  ? REDIS_BACKOFF_MAX_MS
					  : backoff * 2;
			continue;
		}
		freeReplyObject(r);
		backoff = REDIS_BACKOFF_MIN_MS;
		n->sub_fd = c->fd;
		/* publishes may have been missed: re-check and renew now (a
		 * server restarted empty shows as a lease gone) */
		rb->kick = true;
		rb->kick_renew = true;
		pthread_cond_broadcast(&rb->cond);
		pthread_mutex_unlock(&rb->mutex);

		while (redisGetReply(c, (void **)&r) == REDIS_OK) {
			if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
			    r->element[2]->type == REDIS_REPLY_STRING)
				sub_message(rb, n, name, r->element[2]->str,
					    r->element[2]->len);
			freeReplyObject(r);
		}

		pthread_mutex_lock(&rb->mutex);
		n->sub_fd = -1;
		redisFree(c);
		if (!rb->stopping && n->name == name) {
			dl_log(DL_LOG_DEBUG,
			       "redis %s:%d: subscriber lost its "
			       "connection",
			       n->addr.host, n->addr.port);
			rb->kick = true;
			rb->kick_renew = true;
			pthread_cond_broadcast(&rb->cond);
			redis_nap(rb, REDIS_BACKOFF_MIN_MS);
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	return NULL;
}

/* ---- requests (single node and Redlock) ----------------------------------- */

struct redis_lockargs {
	char space[2], type[2], start[17], end[17], owner[17], pid[12],
		wait[17], mode[2], since[24];
	const char *v[9];
};

static void lockargs_fill(struct redis_lockargs *a,
			  const struct dl_lock_req *req, uint64_t wait_id,
			  char mode, int64_t since)
{
	a->space[0] = req->space == DL_SPACE_FLOCK ? '0' : '1';
	a->space[1] = '\0';
	a->type[0] = req->type == DL_WRLCK   ? 'W'
		     : req->type == DL_RDLCK ? 'R'
					     : 'U';
	a->type[1] = '\0';
	hex16(a->start, req->start);
	hex16(a->end, req->end);
	hex16(a->owner, req->owner);
	snprintf(a->pid, sizeof(a->pid), "%u", req->pid);
	if (wait_id)
		hex16(a->wait, wait_id);
	else
		a->wait[0] = '\0';
	a->mode[0] = mode;
	a->mode[1] = '\0';
	if (since > 0)
		snprintf(a->since, sizeof(a->since), "%" PRId64, since);
	else
		a->since[0] = '\0';
	a->v[0] = a->space;
	a->v[1] = a->type;
	a->v[2] = a->start;
	a->v[3] = a->end;
	a->v[4] = a->owner;
	a->v[5] = a->pid;
	a->v[6] = a->wait;
	a->v[7] = a->mode;
	a->v[8] = a->since;
}

enum redis_outcome {
	RO_GRANTED,
	RO_CONFLICT,
	RO_QUEUED,
	RO_LEASE, /* our lease is gone there */
	RO_ERROR,
};

/*
 * One lock script on one node as lease @lease.  @since: the enqueue time
 * to store for a queued request (Redlock, the same on every node), 0: the
 * server's clock.  On RO_GRANTED, *token and (if @prev) a copy of the
 * undo record the script returns (opaque here: what the grant replaced on
 * that node, a few ranges, not the owner's whole list), for an undo.
 */
static enum redis_outcome node_lock(struct redis_backend *rb,
				    struct redis_node *n, const char *lease,
				    const struct dl_lock_req *req,
				    uint64_t wait_id, char mode, int64_t since,
				    uint64_t *token, char **prev, bool *indoubt)
{
	struct redis_lockargs a;
	enum redis_outcome o = RO_ERROR;
	redisReply *r;
	int64_t v;

	*indoubt = false;
	lockargs_fill(&a, req, wait_id, mode, since);
	if (node_script(rb, n, "lock", req->resource, lease, 9, a.v, NULL, &r,
			indoubt) < 0)
		return RO_ERROR;
	v = r->elements ? reply_int(r->element[0]) : -2;
	if (v == 1 && r->elements >= 3 && reply_u64(r->element[1], token)) {
		o = RO_GRANTED;
		if (prev) {
			*prev = r->element[2]->type == REDIS_REPLY_STRING
					? strdup(r->element[2]->str)
					: strdup("");
			if (!*prev)
				*prev = strdup(""); /* best effort */
		}
	} else if (v == 0) {
		o = RO_CONFLICT;
	} else if (v == 2) {
		o = RO_QUEUED;
	} else if (v == -1) {
		o = RO_LEASE;
	}
	freeReplyObject(r);
	return o;
}

/*
 * A simple op (unlock, release, undo, cancel) on one node under its
 * current lease; reply or NULL.  @arg11: unlock and release: the newest
 * token it may end ("" all); undo: the lock's undo record.  *name_out: the
 * lease name it ran under.
 */
static redisReply *node_simple(struct redis_backend *rb, struct redis_node *n,
			       const char *op, const struct dl_lock_req *req,
			       const char *arg11, bool *indoubt,
			       uint64_t *name_out)
{
	struct redis_lockargs a;
	const char *extra[6];
	char lease[17];
	uint64_t gen, name;
	redisReply *r;

	if (indoubt)
		*indoubt = false;
	if (node_lease(rb, n, lease, &gen, &name) < 0)
		return NULL;
	if (name_out)
		*name_out = name;
	lockargs_fill(&a, req, 0, 'g', 0);
	if (strcmp(op, "cancel") == 0) {
		hex16(a.wait, req->wait_id);
		extra[0] = a.wait;
		if (node_script(rb, n, op, req->resource, lease, 1, extra, NULL,
				&r, indoubt) < 0)
			return NULL;
		return r;
	}
	/* [6] space [7] type [8] start [9] end [10] owner [11] arg11 */
	extra[0] = a.space;
	extra[1] = a.type;
	extra[2] = a.start;
	extra[3] = a.end;
	extra[4] = a.owner;
	extra[5] = arg11 ? arg11 : "";
	if (node_script(rb, n, op, req->resource, lease, arg11 ? 6 : 5, extra,
			NULL, &r, indoubt) < 0)
		return NULL;
	return r;
}

static int redis_req_valid(const struct dl_lock_req *req, bool unlock)
{
	if (!req->resource || req->start > req->end ||
	    (unsigned)req->space > DL_SPACE_POSIX)
		return false;
	return unlock || req->type == DL_RDLCK || req->type == DL_WRLCK;
}

/*
 * Single node: the server queues, hands over and publishes.  The wait is
 * registered under the gen and lease name the request is sent with, so
 * its grant is recognised whichever thread reports it; a request whose
 * lease was replaced in flight is answered -ENOLCK here unless its grant
 * was reported already (then -EINPROGRESS: answered by the callback).
 */
static int redis_lock_single(struct redis_backend *rb,
			     const struct dl_lock_req *req,
			     struct dl_grant *grant)
{
	struct redis_node *n = &rb->nodes[0];
	struct redis_note *notes = NULL;
	struct redis_held *spare = NULL;
	struct redis_wait *w = NULL;
	enum redis_outcome o = RO_ERROR;
	uint64_t gen = 0, name = 0, token = 0;
	bool indoubt = false, inserted = false;
	char lease[17];
	int ret;

	if (req->wait_id) {
		w = wait_new(rb, req);
		if (!w)
			return -ENOMEM;
	} else {
		spare = held_alloc(rb, req);
		if (!spare)
			return -ENOMEM;
	}
	for (int attempt = 0; attempt < 2; attempt++) {
		indoubt = false;
		if (node_lease(rb, n, lease, &gen, &name) < 0) {
			o = RO_ERROR;
			break;
		}
		if (w) {
			pthread_mutex_lock(&rb->mutex);
			w->gen = gen;
			w->name = name;
			w->state = RW_SENDING;
			wait_insert(rb, w);
			inserted = true;
			pthread_mutex_unlock(&rb->mutex);
		}
		fault_sleep(rb->fault.delay_lock);
		o = node_lock(rb, n, lease, req, req->wait_id, 'g', 0, &token,
			      NULL, &indoubt);
		if (o != RO_LEASE)
			break;
		if (w) {
			pthread_mutex_lock(&rb->mutex);
			/* refused: never queued, so never granted */
			wait_unlink(rb, w);
			inserted = false;
			pthread_mutex_unlock(&rb->mutex);
		}
		lease_gone(rb, n, name);
	}

	pthread_mutex_lock(&rb->mutex);
	if (w) {
		/* sent but not in the table any more: its grant was
		 * reported (deliver_grant() is the only one to unlink a
		 * wait being sent) */
		if (!wait_unlink(rb, w) && inserted) {
			w = NULL; /* freed by deliver_grant() */
			ret = -EINPROGRESS;
			goto out_unlock;
		}
	}
	if (rb->epoch != gen && (o == RO_GRANTED || o == RO_QUEUED)) {
		/* under a lease given up meanwhile: its records die with it */
		o = RO_ERROR;
		indoubt = false;
	}
	switch (o) {
	case RO_GRANTED:
		held_add(rb, w ? &w->spare : &spare, req->resource, req->space,
			 req->owner, 1, token);
		grant->token = token;
		grant->lease = gen;
		ret = 0;
		break;
	case RO_QUEUED:
		w->state = RW_QUEUED;
		wait_insert(rb, w);
		w = NULL; /* the table owns it */
		ret = -EINPROGRESS;
		break;
	case RO_CONFLICT:
		ret = -EAGAIN;
		break;
	default:
		ret = -ENOLCK;
		if (indoubt && rb->epoch == gen) {
			struct redis_held **p = held_slot(
				rb, req->resource, req->space, req->owner);

			/* the script may have run: take it back later */
			job_add(rb, req->wait_id ? RJ_CANCEL : RJ_UNLOCK, 0,
				name, req, DL_TOKEN_ALL);
			if (*p)
				held_lose(rb, p, -ENOLCK, &notes);
		}
		break;
	}
out_unlock:
	pthread_mutex_unlock(&rb->mutex);
	wait_free(w);
	held_free(spare);
	notes_run(rb, notes);
	return ret;
}

/* Redlock: take back what nodes in @mask granted, with their undo records
 * @prev */
static void redlock_undo(struct redis_backend *rb,
			 const struct dl_lock_req *req, unsigned mask,
			 char **prev)
{
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		redisReply *r;
		uint64_t name = 0;

		if (!(mask & (1u << i)))
			continue;
		r = node_simple(rb, &rb->nodes[i], "undo", req,
				prev[i] ? prev[i] : "", NULL, &name);
		if (r) {
			freeReplyObject(r);
		} else {
			/* the lock expires with the node's lease at worst */
			pthread_mutex_lock(&rb->mutex);
			job_add(rb, RJ_UNLOCK, i, node_name(rb, i), req,
				DL_TOKEN_ALL);
			pthread_mutex_unlock(&rb->mutex);
		}
	}
}

/* Redlock: remove our queued record of @req on the nodes in @mask; a node
 * that cannot be reached gets it removed by the keeper later */
static void redlock_cancel_on(struct redis_backend *rb,
			      const struct dl_lock_req *req, unsigned mask)
{
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		redisReply *r;

		if (!(mask & (1u << i)))
			continue;
		r = node_simple(rb, &rb->nodes[i], "cancel", req, NULL, NULL,
				NULL);
		if (r) {
			freeReplyObject(r);
			continue;
		}
		pthread_mutex_lock(&rb->mutex);
		job_add(rb, RJ_CANCEL, i, node_name(rb, i), req, DL_TOKEN_ALL);
		pthread_mutex_unlock(&rb->mutex);
	}
}

/*
 * Redlock: try on every node under gen @gen.  Returns 0 (granted by a
 * majority within the validity, *mask_out = granting nodes), -EAGAIN (a
 * majority answered but not all granted; queued as notify-waiter where
 * @wait_id, with enqueue time @since), or -ENOLCK (no majority answered,
 * or the lease changed).
 */
static int redlock_try(struct redis_backend *rb, const struct dl_lock_req *req,
		       uint64_t wait_id, int64_t since, uint64_t gen,
		       uint64_t *token, unsigned *mask_out)
{
	char *prev[REDIS_URI_MAX_NODES] = { 0 };
	unsigned granted = 0, answered = 0, queued = 0;
	int64_t start = dl_mono_ms(), validity;
	uint64_t best = 0;
	int ret;

	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		enum redis_outcome o = RO_ERROR;
		uint64_t g, name, tok = 0;
		bool indoubt = false;
		char lease[17];

		for (int attempt = 0; attempt < 2; attempt++) {
			if (node_lease(rb, n, lease, &g, &name) < 0 ||
			    g != gen) {
				o = RO_ERROR;
				indoubt = false;
				break;
			}
			fault_sleep(rb->fault.delay_lock);
			o = node_lock(rb, n, lease, req, wait_id, 'n', since,
				      &tok, &prev[i], &indoubt);
			if (o != RO_LEASE)
				break;
			lease_gone(rb, n, name);
		}
		if (o == RO_ERROR && indoubt) {
			pthread_mutex_lock(&rb->mutex);
			job_add(rb, wait_id ? RJ_CANCEL : RJ_UNLOCK, i, name,
				req, DL_TOKEN_ALL);
			pthread_mutex_unlock(&rb->mutex);
		}
		if (o == RO_GRANTED) {
			granted |= 1u << i;
			if (tok > best)
				best = tok;
		}
		if (o == RO_QUEUED)
			queued |= 1u << i;
		if (o == RO_GRANTED || o == RO_QUEUED || o == RO_CONFLICT)
			answered |= 1u << i;
	}
	validity = rb->uri.ttl_ms - (dl_mono_ms() - start) - rb->drift_ms;
	if (popcount(granted) >= rb->majority && validity > 0) {
		*token = best;
		*mask_out = granted;
		if (queued)
			redlock_cancel_on(rb, req, queued);
		ret = 0;
	} else {
		redlock_undo(rb, req, granted, prev);
		ret = popcount(answered) >= rb->majority ? -EAGAIN : -ENOLCK;
		if (ret == -ENOLCK && queued)
			redlock_cancel_on(rb, req, queued);
	}
	for (unsigned i = 0; i < rb->uri.nnodes; i++)
		free(prev[i]);
	return ret;
}

static int redis_lock_redlock(struct redis_backend *rb,
			      const struct dl_lock_req *req,
			      struct dl_grant *grant)
{
	char *none[REDIS_URI_MAX_NODES] = { 0 };
	struct redis_held *spare = NULL;
	struct redis_wait *w = NULL;
	int64_t since = dl_now_ms();
	unsigned mask = 0;
	uint64_t gen, token = 0;
	bool undo = false;
	int ret;

	if (req->wait_id) {
		w = wait_new(rb, req);
		if (!w)
			return -ENOMEM;
	} else {
		spare = held_alloc(rb, req);
		if (!spare)
			return -ENOMEM;
	}
	pthread_mutex_lock(&rb->mutex);
	gen = rb->epoch;
	if (w) {
		w->gen = gen;
		w->since = since;
		w->state = RW_SENDING;
		wait_insert(rb, w);
	}
	pthread_mutex_unlock(&rb->mutex);
	ret = redlock_try(rb, req, req->wait_id, since, gen, &token, &mask);
	pthread_mutex_lock(&rb->mutex);
	if (rb->epoch != gen && (ret == 0 || ret == -EAGAIN)) {
		/* under a lease given up meanwhile */
		undo = ret == 0;
		ret = -ENOLCK;
	}
	if (ret == 0) {
		held_add(rb, w ? &w->spare : &spare, req->resource, req->space,
			 req->owner, mask, token);
		grant->token = token;
		grant->lease = gen;
	}
	if (w)
		wait_unlink(rb, w);
	if (ret == -EAGAIN && w) {
		w->state = RW_QUEUED;
		wait_insert(rb, w);
		w = NULL;
		ret = -EINPROGRESS;
	}
	pthread_mutex_unlock(&rb->mutex);
	if (undo)
		redlock_undo(rb, req, mask, none);
	wait_free(w);
	held_free(spare);
	return ret;
}

/* ---- the keeper: renewals, re-checks, left-over work ----------------------- */

/* the safety re-check of our queued waits on @resource (single node) */
static void keeper_poll(struct redis_backend *rb, const char *resource,
			const uint64_t *ids, size_t nids)
{
	struct redis_node *n = &rb->nodes[0];
	struct redis_note *notes = NULL;
	char lease[17];
	char(*hex)[17];
	const char **extra;
	redisReply *r;
	uint64_t gen, name;
	int ret;

	if (node_lease(rb, n, lease, &gen, &name) < 0)
		return;
	hex = calloc(nids, sizeof(*hex));
	extra = calloc(nids, sizeof(*extra));
	if (!hex || !extra)
		goto out_free; /* the next re-check tries again */
	for (size_t i = 0; i < nids; i++) {
		hex16(hex[i], ids[i]);
		extra[i] = hex[i];
	}
	/* one call per resource, in slices of a bounded size */
	for (size_t off = 0; off < nids; off += REDIS_POLL_MAX) {
		size_t cnt = nids - off < REDIS_POLL_MAX ? nids - off
							 : REDIS_POLL_MAX;

		ret = node_script(rb, n, "poll", resource, lease, (int)cnt,
				  extra + off, NULL, &r, NULL);
		if (ret < 0)
			break;
		pthread_mutex_lock(&rb->mutex);
		for (size_t i = 0; i < cnt && i < r->elements; i++) {
			const redisReply *e = r->element[i];
			struct redis_wait *w = wait_find(rb, ids[off + i]);
			uint64_t tok;

			if (!w || w->name != name || w->gen != rb->epoch ||
			    w->state != RW_QUEUED)
				continue;
			if (e->type == REDIS_REPLY_STRING && e->len == 1 &&
			    e->str[0] == 'q')
				continue;
			if (reply_u64(e, &tok)) {
				if (!rb->fault.delay_deliver)
					deliver_grant(rb, name, w->wait_id, tok,
						      1, &notes);
			} else if (!w->cancelling) {
				/* neither queued nor granted: the server
				 * lost it (restart, our lease purged) */
				wait_unlink(rb, w);
				wait_answer(w, 0, -ENOLCK, &notes);
				wait_free(w);
			}
		}
		pthread_mutex_unlock(&rb->mutex);
		freeReplyObject(r);
	}
out_free:
	free(hex);
	free(extra);
	notes_run(rb, notes);
}

/* Redlock: retry wait @id on every node */
static void keeper_retry(struct redis_backend *rb, uint64_t id)
{
	char *none[REDIS_URI_MAX_NODES] = { 0 };
	struct redis_note *notes = NULL;
	struct dl_lock_req req;
	struct redis_wait *w;
	uint64_t token = 0, gen;
	int64_t since;
	unsigned mask = 0;
	bool drop = false;
	char *res;
	int ret;

	pthread_mutex_lock(&rb->mutex);
	w = wait_find(rb, id);
	if (!w || w->busy || w->state != RW_QUEUED) {
		pthread_mutex_unlock(&rb->mutex);
		return;
	}
	res = strdup(w->res);
	if (!res) {
		pthread_mutex_unlock(&rb->mutex);
		return; /* the next re-check tries again */
	}
	w->busy = true;
	w->woken = false;
	gen = w->gen;
	since = w->since;
	req = w->req;
	pthread_mutex_unlock(&rb->mutex);
	req.resource = res;
	ret = redlock_try(rb, &req, id, since, gen, &token, &mask);
	pthread_mutex_lock(&rb->mutex);
	w->busy = false; /* nobody frees a busy wait */
	if (w->cancelled || rb->epoch != gen) {
		wait_unlink(rb, w);
		if (!w->cancelled)
			wait_answer(w, 0, -ENOLCK, &notes);
		wait_free(w);
		drop = true;
	} else if (ret == 0) {
		wait_unlink(rb, w);
		held_add(rb, &w->spare, w->res, w->req.space, w->req.owner,
			 mask, token);
		wait_answer(w, token, 0, &notes);
		wait_free(w);
	}
	pthread_mutex_unlock(&rb->mutex);
	if (drop) {
		/* nobody waits for it any more: give it back */
		if (ret == 0)
			redlock_undo(rb, &req, mask, none);
		redlock_cancel_on(rb, &req, (1u << rb->uri.nnodes) - 1);
	}
	free(res);
	notes_run(rb, notes);
}

/* work left by failed calls; a job whose node is still down stays */
static void keeper_jobs(struct redis_backend *rb)
{
	struct redis_job *todo, *keep = NULL;

	pthread_mutex_lock(&rb->mutex);
	todo = rb->jobs;
	rb->jobs = NULL;
	pthread_mutex_unlock(&rb->mutex);
	while (todo) {
		struct redis_job *j = todo;
		struct redis_node *n = &rb->nodes[j->node];
		redisReply *r = NULL;
		uint64_t name = 0;
		char max[24];

		todo = j->next;
		pthread_mutex_lock(&rb->mutex);
		name = n->name;
		pthread_mutex_unlock(&rb->mutex);
		if (j->name != name) { /* that lease is given up anyway */
			free(j);
			continue;
		}
		snprintf(max, sizeof(max), "%" PRIu64, j->max_token);
		switch (j->kind) {
		case RJ_RELEASE:
			r = node_simple(rb, n, "release", &j->req, max, NULL,
					&name);
			break;
		case RJ_UNLOCK:
			j->req.type = DL_UNLCK;
			r = node_simple(rb, n, "unlock", &j->req, max, NULL,
					&name);
			break;
		case RJ_CANCEL:
			r = node_simple(rb, n, "cancel", &j->req, NULL, NULL,
					&name);
			if (r && name == j->name && r->elements >= 2) {
				uint64_t tok = DL_TOKEN_ALL;

				/* granted meanwhile: unlock what it got */
				reply_u64(r->element[1], &tok);
				freeReplyObject(r);
				j->kind = RJ_UNLOCK;
				j->max_token = tok;
				j->next = todo;
				todo = j;
				continue;
			}
			break;
		}
		if (r && name == j->name && j->kind != RJ_CANCEL &&
		    r->elements && reply_int(r->element[0]) == 0) {
			/* the owner holds nothing more there */
			pthread_mutex_lock(&rb->mutex);
			if (rb->uri.nnodes == 1)
				held_remove(rb, j->res, j->req.space,
					    j->req.owner, j->max_token);
			pthread_mutex_unlock(&rb->mutex);
		}
		if (r) {
			freeReplyObject(r);
			free(j);
		} else {
			j->next = keep;
			keep = j;
		}
	}
	if (keep) {
		pthread_mutex_lock(&rb->mutex);
		while (keep) {
			struct redis_job *j = keep;

			keep = j->next;
			j->next = rb->jobs;
			rb->jobs = j;
		}
		pthread_mutex_unlock(&rb->mutex);
	}
}

struct redis_pollset {
	char *resource;
	uint64_t *ids;
	size_t n;
};

static void *keeper_main(void *arg)
{
	struct redis_backend *rb = arg;
	int64_t renew_every = rb->uri.ttl_ms / 3;
	int64_t next_renew = 0, next_check = 0;

	pthread_mutex_lock(&rb->mutex);
	while (!rb->stopping) {
		int64_t now = dl_mono_ms(), wake;
		bool renew, check, jobs, drops = false;
		char drop[REDIS_URI_MAX_NODES][17];

		renew = rb->kick_renew || now >= next_renew;
		check = (rb->nwaits || rb->jobs) &&
			(rb->kick || now >= next_check);
		jobs = check && rb->jobs != NULL;
		for (unsigned i = 0; i < rb->uri.nnodes; i++)
			if (rb->nodes[i].drop[0])
				drops = true;
		if (!renew && !check && !drops) {
			wake = next_renew;
			if ((rb->nwaits || rb->jobs) && next_check < wake)
				wake = next_check;
			redis_nap(rb, wake - now);
			continue;
		}
		rb->kick = false;
		rb->kick_renew = false;
		for (unsigned i = 0; i < rb->uri.nnodes; i++) {
			memcpy(drop[i], rb->nodes[i].drop, 17);
			rb->nodes[i].drop[0] = '\0';
		}
		pthread_mutex_unlock(&rb->mutex);

		/* end abandoned leases at once: their records die (a node
		 * that cannot be reached lets them expire) */
		for (unsigned i = 0; i < rb->uri.nnodes; i++) {
			redisReply *r;

			if (drop[i][0] &&
			    node_script(rb, &rb->nodes[i], "drop", "", drop[i],
					0, NULL, NULL, &r, NULL) == 0)
				freeReplyObject(r);
		}
		if (renew) {
			next_renew = dl_mono_ms() + renew_every;
			for (unsigned i = 0; i < rb->uri.nnodes; i++)
				node_renew(rb, &rb->nodes[i]);
		}
		if (check)
			next_check = dl_mono_ms() + REDIS_RECHECK_MS;
		if (jobs)
			keeper_jobs(rb);
		if (check) {
			struct redis_pollset *sets = NULL;
			uint64_t *retry = NULL;
			size_t nsets = 0, nretry = 0;

			/* snapshot: (resource, ids) groups, or Redlock ids */
			pthread_mutex_lock(&rb->mutex);
			for (size_t b = 0; b < REDIS_BUCKETS; b++) {
				for (struct redis_wait *w = rb->waits[b]; w;
				     w = w->next) {
					if (w->state != RW_QUEUED ||
					    w->cancelling || w->busy)
						continue;
					if (rb->uri.nnodes > 1) {
						uint64_t *p = realloc(
							retry,
							(nretry + 1) *
								sizeof(*p));

						if (!p)
							continue;
						retry = p;
						retry[nretry++] = w->wait_id;
						continue;
					}
					size_t s;

					for (s = 0; s < nsets; s++)
						if (strcmp(sets[s].resource,
							   w->res) == 0)
							break;
					if (s == nsets) {
						struct redis_pollset *p = realloc(
							sets, (nsets +
							       1) * sizeof(*p));

						if (!p)
							continue;
						sets = p;
						sets[s] = (struct redis_pollset){
							strdup(w->res), NULL, 0
						};
						if (!sets[s].resource)
							continue;
						nsets++;
					}
					uint64_t *ids = realloc(
						sets[s].ids,
						(sets[s].n + 1) * sizeof(*ids));

					if (!ids)
						continue;
					sets[s].ids = ids;
					ids[sets[s].n++] = w->wait_id;
				}
			}
			pthread_mutex_unlock(&rb->mutex);
			for (size_t s = 0; s < nsets; s++) {
				keeper_poll(rb, sets[s].resource, sets[s].ids,
					    sets[s].n);
				free(sets[s].resource);
				free(sets[s].ids);
			}
			for (size_t i = 0; i < nretry; i++)
				keeper_retry(rb, retry[i]);
			free(sets);
			free(retry);
		}
		pthread_mutex_lock(&rb->mutex);
		/* Redlock: a "retry" publish is served at once */
		if (rb->uri.nnodes > 1) {
			for (size_t b = 0; b < REDIS_BUCKETS && !rb->kick; b++)
				for (struct redis_wait *w = rb->waits[b]; w;
				     w = w->next)
					if (w->woken)
						rb->kick = true;
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	return NULL;
}

/* ---- the watchdog: lost before re-granted ------------------------------ */

static void *watchdog_main(void *arg)
{
	struct redis_backend *rb = arg;

	pthread_mutex_lock(&rb->mutex);
	while (!rb->stopping) {
		int64_t now = dl_mono_ms(), next = 0;
		struct redis_note *notes = NULL;

		for (unsigned i = 0; i < rb->uri.nnodes; i++) {
			struct redis_node *n = &rb->nodes[i];
			int64_t deadline;

			if (!n->trusted)
				continue;
			deadline = node_deadline(rb, n);
			if (now < deadline) {
				if (!next || deadline < next)
					next = deadline;
				continue;
			}
			if (rb->uri.nnodes == 1)
				lose_all(rb, "could not be renewed in time",
					 &notes);
			else
				lose_node(rb, n, "could not be renewed in time",
					  &notes);
		}
		if (notes) {
			pthread_mutex_unlock(&rb->mutex);
			notes_run(rb, notes);
			pthread_mutex_lock(&rb->mutex);
			continue;
		}
		if (next) {
			struct timespec ts = { next / 1000,
					       (next % 1000) * 1000000 };

			pthread_cond_timedwait(&rb->cond, &rb->mutex, &ts);
		} else {
			pthread_cond_wait(&rb->cond, &rb->mutex);
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	return NULL;
}

/* ---- ops ------------------------------------------------------------------ */

static int redis_check_uri(const char *rest, char *err, size_t errlen)
{
	struct redis_uri u;

	return redis_uri_parse(rest, &u, err, errlen);
}

static void redis_close(struct dl_backend *be);

static int redis_open(const struct dl_backend_conf *conf,
		      const struct dl_backend_cb *cb, struct dl_backend **out,
		      char *err, size_t errlen)
{
	const char *rest = strchr(conf->uri, ':') + 1;
	struct redis_backend *rb;
	const char *pw, *user;
	pthread_condattr_t ca;
	unsigned reached = 0;
	char why[256] = "";
	int ret;

	rb = calloc(1, sizeof(*rb));
	if (!rb) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rb->base.ops = &dl_redis_ops;
	rb->cb = *cb;
	fault_parse(&rb->fault);
	ret = redis_uri_parse(rest, &rb->uri, err, errlen);
	if (ret < 0) {
		free(rb);
		return ret;
	}
	snprintf(rb->host_id, sizeof(rb->host_id), "%s", conf->host_id);
	snprintf(rb->ttl, sizeof(rb->ttl), "%d", rb->uri.ttl_ms);
	snprintf(rb->delay, sizeof(rb->delay), "%d", rb->uri.lock_delay_ms);
	rb->inc_base = conf->incarnation;
	rb->lease = conf->lease;
	rb->epoch = 1;
	/* no trusted lease until one is registered */
	atomic_store(&rb->lease->gen, rb->epoch);
	atomic_store(&rb->lease->until_ms, 0);
	rb->majority = (unsigned)rb->uri.nnodes / 2 + 1;
	rb->margin_ms = rb->uri.ttl_ms / 10 > 500 ? rb->uri.ttl_ms / 10 : 500;
	rb->drift_ms = rb->uri.nnodes > 1 ? rb->uri.ttl_ms / 100 + 2 : 0;
	user = conf->config ? dl_config_get(conf->config, "redis_user") : NULL;
	pw = conf->config ? dl_config_get(conf->config, "redis_password")
			  : NULL;
	snprintf(rb->user, sizeof(rb->user), "%s",
		 rb->uri.user[0] ? rb->uri.user
		 : user		 ? user
				 : "");
	if (pw && *pw) {
		rb->password = strdup(pw);
		if (!rb->password) {
			free(rb);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
	}
	pthread_mutex_init(&rb->mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rb->cond, &ca);
	pthread_condattr_destroy(&ca);
	rb->nodes = calloc(rb->uri.nnodes, sizeof(*rb->nodes));
	if (!rb->nodes || redis_library_init(rb) < 0) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto out_close;
	}
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];

		n->rb = rb;
		n->idx = i;
		n->addr = rb->uri.nodes[i];
		n->sub_fd = -1;
		n->name = ++rb->names;
		for (int k = 0; k < REDIS_POOL; k++)
			pthread_mutex_init(&n->pool[k].mutex, NULL);
	}

	/* a first connection (checks AUTH, loads the script) and the lease
	 * on each node; a majority must answer */
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		redisContext *c;
		char lease[17];
		uint64_t gen, name;

		c = redis_connect(rb, n, false, why, sizeof(why));
		if (c && redis_load_script(rb, c, n, why, sizeof(why)) == 0) {
			n->pool[0].c = c;
			n->up = true;
			if (node_lease(rb, n, lease, &gen, &name) == 0)
				reached++;
			else
				snprintf(why, sizeof(why),
					 "lease registration failed");
		} else {
			if (c)
				redisFree(c);
			dl_log(DL_LOG_WARNING, "redis %s:%d: %s", n->addr.host,
			       n->addr.port, why);
			n->retry_at = dl_mono_ms() + REDIS_BACKOFF_MIN_MS;
		}
	}
	if (reached < rb->majority) {
		snprintf(err, errlen,
			 "cannot reach Redis (%u of %zu node(s) "
			 "answered, %u needed): %s",
			 reached, rb->uri.nnodes, rb->majority, why);
		ret = -ENOLCK;
		goto out_close;
	}

	ret = -pthread_create(&rb->keeper, NULL, keeper_main, rb);
	if (ret == 0) {
		rb->keeper_started = true;
		ret = -pthread_create(&rb->watchdog, NULL, watchdog_main, rb);
	}
	if (ret == 0)
		rb->watchdog_started = true;
	for (unsigned i = 0; ret == 0 && i < rb->uri.nnodes; i++) {
		ret = -pthread_create(&rb->nodes[i].sub_thread, NULL, sub_main,
				      &rb->nodes[i]);
		if (ret == 0)
			rb->nodes[i].sub_started = true;
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
			 strerror(-ret));
		goto out_close;
	}
	dl_log(DL_LOG_INFO,
	       "redis: %zu node(s), prefix %s, lease %d ms, "
	       "lock-delay %d ms%s",
	       rb->uri.nnodes, rb->uri.prefix, rb->uri.ttl_ms,
	       rb->uri.lock_delay_ms, rb->uri.nnodes > 1 ? " (Redlock)" : "");
	*out = &rb->base;
	return 0;

out_close:
	redis_close(&rb->base);
	return ret;
}

static void redis_close(struct dl_backend *be)
{
	struct redis_backend *rb = redis_of(be);
	char lease[17];

	pthread_mutex_lock(&rb->mutex);
	rb->stopping = true;
	pthread_cond_broadcast(&rb->cond);
	for (unsigned i = 0; rb->nodes && i < rb->uri.nnodes; i++)
		if (rb->nodes[i].sub_fd >= 0)
			shutdown(rb->nodes[i].sub_fd, SHUT_RDWR);
	pthread_mutex_unlock(&rb->mutex);
	if (rb->keeper_started)
		pthread_join(rb->keeper, NULL);
	if (rb->watchdog_started)
		pthread_join(rb->watchdog, NULL);
	for (unsigned i = 0; rb->nodes && i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];

		if (n->sub_started) {
			/* it may have connected after the shutdown above */
			for (;;) {
				struct timespec ts;
				int ret;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += 100000000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				ret = pthread_timedjoin_np(n->sub_thread, NULL,
							   &ts);
				if (ret != ETIMEDOUT)
					break;
				pthread_mutex_lock(&rb->mutex);
				if (n->sub_fd >= 0)
					shutdown(n->sub_fd, SHUT_RDWR);
				pthread_mutex_unlock(&rb->mutex);
			}
		}
	}
	/* a clean stop: our lease ends now (the lock manager has released
	 * everything already); nothing of it is trusted any more */
	if (rb->lease) {
		atomic_store(&rb->lease->gen, rb->epoch + 1);
		atomic_store(&rb->lease->until_ms, 0);
	}
	for (unsigned i = 0; rb->nodes && i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		redisReply *r;

		lease_name(rb, n->name, lease);
		if (n->registered && n->up &&
		    node_script(rb, n, "drop", "", lease, 0, NULL, NULL, &r,
				NULL) == 0)
			freeReplyObject(r);
		for (int k = 0; k < REDIS_POOL; k++) {
			if (n->pool[k].c)
				redisFree(n->pool[k].c);
			pthread_mutex_destroy(&n->pool[k].mutex);
		}
	}
	for (size_t b = 0; b < REDIS_BUCKETS; b++) {
		while (rb->held[b]) {
			struct redis_held *h = rb->held[b];

			rb->held[b] = h->next;
			held_free(h);
		}
		while (rb->waits[b]) {
			struct redis_wait *w = rb->waits[b];

			rb->waits[b] = w->next;
			wait_free(w);
		}
	}
	while (rb->jobs) {
		struct redis_job *j = rb->jobs;

		rb->jobs = j->next;
		free(j);
	}
	free(rb->nodes);
	free(rb->fn_text);
	if (rb->password) {
		explicit_bzero(rb->password, strlen(rb->password));
		free(rb->password);
	}
	pthread_cond_destroy(&rb->cond);
	pthread_mutex_destroy(&rb->mutex);
	free(rb);
}

static int redis_lock(struct dl_backend *be, const struct dl_lock_req *req,
		      struct dl_grant *grant)
{
	struct redis_backend *rb = redis_of(be);

	if (!redis_req_valid(req, false))
		return -EINVAL;
	grant->token = 0;
	grant->lease = 0;
	if (rb->uri.nnodes == 1)
		return redis_lock_single(rb, req, grant);
	return redis_lock_redlock(rb, req, grant);
}

/*
 * Unlock on every node.  A node that cannot confirm it gets the unlock
 * again from the keeper until it is done or the lease is given up (the
 * records die with it), bounded by the newest grant processed so far so
 * that a later grant of the same owner survives the retry.  0 when a
 * majority confirmed, else -ENOLCK (the retry goes on).
 */
static int redis_unlock(struct dl_backend *be, const struct dl_lock_req *req)
{
	struct redis_backend *rb = redis_of(be);
	unsigned ok = 0, still = 0, all = (1u << rb->uri.nnodes) - 1;
	uint64_t max = DL_TOKEN_ALL;
	struct redis_held *h;
	char maxs[24];

	if (!redis_req_valid(req, true))
		return -EINVAL;
	pthread_mutex_lock(&rb->mutex);
	h = *held_slot(rb, req->resource, req->space, req->owner);
	if (h)
		max = h->max_token;
	pthread_mutex_unlock(&rb->mutex);
	snprintf(maxs, sizeof(maxs), "%" PRIu64, max);
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		uint64_t name = 0;
		redisReply *r = node_simple(rb, &rb->nodes[i], "unlock", req,
					    maxs, NULL, &name);

		if (!r) {
			pthread_mutex_lock(&rb->mutex);
			job_add(rb, RJ_UNLOCK, i, node_name(rb, i), req, max);
			pthread_mutex_unlock(&rb->mutex);
			continue;
		}
		ok |= 1u << i;
		if (r->elements && reply_int(r->element[0]) == 1)
			still |= 1u << i;
		freeReplyObject(r);
	}
	if (ok == all && !still) {
		pthread_mutex_lock(&rb->mutex);
		held_remove(rb, req->resource, req->space, req->owner, max);
		pthread_mutex_unlock(&rb->mutex);
	}
	return popcount(ok) >= rb->majority ? 0 : -ENOLCK;
}

/*
 * Single node: a wait marked cancelling belongs to this call until it
 * returns: a grant reported meanwhile or a lease loss only mark it, so it
 * is answered exactly once (-ENOENT: by the callback, 0: by the caller).
 */
static int redis_cancel(struct dl_backend *be, uint64_t wait_id)
{
	struct redis_backend *rb = redis_of(be);
	struct redis_note *notes = NULL;
	struct redis_wait *w;
	uint64_t tok, name = 0;
	redisReply *r;
	int ret;

	pthread_mutex_lock(&rb->mutex);
	w = wait_find(rb, wait_id);
	if (!w || w->state != RW_QUEUED || w->cancelling) {
		pthread_mutex_unlock(&rb->mutex);
		return -ENOENT;
	}
	if (rb->uri.nnodes > 1) {
		struct dl_lock_req req = w->req;

		/* Redlock: we decide grants ourselves */
		if (w->busy) {
			w->cancelled = true; /* the keeper gives it back */
			pthread_mutex_unlock(&rb->mutex);
			return 0;
		}
		wait_unlink(rb, w);
		pthread_mutex_unlock(&rb->mutex);
		fault_sleep(rb->fault.delay_cancel);
		redlock_cancel_on(rb, &req, (1u << rb->uri.nnodes) - 1);
		wait_free(w);
		return 0;
	}
	w->cancelling = true;
	pthread_mutex_unlock(&rb->mutex);
	fault_sleep(rb->fault.delay_cancel);
	r = node_simple(rb, &rb->nodes[0], "cancel", &w->req, NULL, NULL,
			&name);

	pthread_mutex_lock(&rb->mutex);
	if (w->end == RWE_GRANTED) {
		ret = -ENOENT; /* its grant was reported */
	} else if (w->end == RWE_LOST) {
		ret = 0; /* its lease is given up: its record dies with it */
	} else if (!r) {
		/* unknown: forget the wait; the keeper removes the record,
		 * or unlocks it if the server granted it meanwhile (a job
		 * of a lease given up meanwhile is dropped: the record
		 * dies with that lease) */
		wait_unlink(rb, w);
		job_add(rb, RJ_CANCEL, 0, w->name, &w->req, DL_TOKEN_ALL);
		ret = 0;
	} else if (name != w->name) {
		wait_unlink(rb, w); /* sent under a newer lease: see above */
		ret = 0;
	} else if (r->elements >= 2 && reply_u64(r->element[1], &tok)) {
		w->cancelling = false;
		if (deliver_grant(rb, w->name, wait_id, tok, 1, &notes)) {
			w = NULL; /* freed there */
			ret = -ENOENT;
		} else {
			wait_unlink(rb, w);
			ret = 0;
		}
	} else {
		/* removed, or neither queued nor granted any more */
		wait_unlink(rb, w);
		ret = 0;
	}
	pthread_mutex_unlock(&rb->mutex);
	if (r)
		freeReplyObject(r);
	wait_free(w);
	notes_run(rb, notes);
	return ret;
}

/*
 * Release on every node; a node that cannot confirm it gets it again
 * from the keeper.  The lock is forgotten (no loss report) only once
 * every node confirmed the owner holds nothing more.
 */
static int redis_release_owner(struct dl_backend *be, const char *resource,
			       enum dl_space space, uint64_t owner,
			       uint64_t max_token)
{
	struct redis_backend *rb = redis_of(be);
	struct dl_lock_req req = { .resource = resource,
				   .space = space,
				   .type = DL_UNLCK,
				   .start = 0,
				   .end = DL_RANGE_EOF,
				   .owner = owner };
	unsigned ok = 0, still = 0, all = (1u << rb->uri.nnodes) - 1;
	char max[24];

	snprintf(max, sizeof(max), "%" PRIu64, max_token);
	req.pid = 0;
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		redisReply *r = node_simple(rb, &rb->nodes[i], "release", &req,
					    max, NULL, NULL);

		if (r) {
			ok |= 1u << i;
			if (r->elements && reply_int(r->element[0]) == 1)
				still |= 1u << i;
			freeReplyObject(r);
			continue;
		}
		/* nobody will ask again: retry until it is done or the
		 * lease is given up */
		pthread_mutex_lock(&rb->mutex);
		job_add(rb, RJ_RELEASE, i, node_name(rb, i), &req, max_token);
		pthread_mutex_unlock(&rb->mutex);
	}
	if (ok == all && !still) {
		pthread_mutex_lock(&rb->mutex);
		held_remove(rb, resource, space, owner, max_token);
		pthread_mutex_unlock(&rb->mutex);
	}
	return popcount(ok) >= rb->majority ? 0 : -ENOLCK;
}

/*
 * An administrator breaks @resource on every node: its holders' daemons
 * learn it through their channel or their next renewal.  0, -ENOENT when
 * nothing was held, -ENOLCK when no node answered.
 */
static int redis_break_lock(struct dl_backend *be, const char *resource)
{
	struct redis_backend *rb = redis_of(be);
	unsigned ok = 0;
	int64_t removed = 0;

	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		redisReply *r;
		char lease[17];
		uint64_t gen, name;

		if (node_lease(rb, n, lease, &gen, &name) < 0 ||
		    node_script(rb, n, "break", resource, lease, 0, NULL, NULL,
				&r, NULL) < 0)
			continue;
		ok |= 1u << i;
		if (r->elements && reply_int(r->element[0]) > 0)
			removed += reply_int(r->element[0]);
		freeReplyObject(r);
	}
	if (!ok)
		return -ENOLCK;
	dl_log(DL_LOG_NOTICE,
	       "redis: lock of %s broken (%" PRId64 " owner record(s) on %u "
	       "node(s))",
	       resource, removed, popcount(ok));
	return removed ? 0 : -ENOENT;
}

/* @e: T S E LEASE OWNER pid token since host, as the script lists them;
 * @mine: our lease name on the node that answered */
static bool info_fill(redisReply **e, struct dl_lock_info *info,
		      const char *space, bool waiting, const char *mine)
{
	uint64_t lease;

	memset(info, 0, sizeof(*info));
	info->space = space[0] == '0' ? DL_SPACE_FLOCK : DL_SPACE_POSIX;
	if (e[0]->type != REDIS_REPLY_STRING)
		return false;
	info->type = e[0]->str[0] == 'W' ? DL_WRLCK : DL_RDLCK;
	if (!reply_hex(e[1], &info->start) || !reply_hex(e[2], &info->end) ||
	    !reply_hex(e[3], &lease) || !reply_hex(e[4], &info->owner))
		return false;
	info->pid = (uint32_t)reply_int(e[5]);
	if (!reply_u64(e[6], &info->token))
		info->token = 0;
	info->since_ms = reply_int(e[7]);
	if (e[8]->type == REDIS_REPLY_STRING)
		snprintf(info->host, sizeof(info->host), "%.*s", (int)e[8]->len,
			 e[8]->str);
	info->mine = strcmp(e[3]->str, mine) == 0;
	info->waiting = waiting;
	return true;
}

static int redis_getlk(struct dl_backend *be, const struct dl_lock_req *req,
		       struct dl_lock_info *conflict)
{
	struct redis_backend *rb = redis_of(be);
	unsigned answered = 0;
	int ret = 0;

	if (!redis_req_valid(req, false))
		return -EINVAL;
	/* Redlock: a conflict on any node is reported (conservative) */
	for (unsigned i = 0; i < rb->uri.nnodes && ret == 0; i++) {
		redisReply *r = node_simple(rb, &rb->nodes[i], "getlk", req,
					    NULL, NULL, NULL);

		if (!r)
			continue;
		answered++;
		if (r->elements >= 10 && reply_int(r->element[0]) == 1) {
			char space[2] = { req->space == DL_SPACE_FLOCK ? '0'
								       : '1',
					  0 };

			char mine[17];

			pthread_mutex_lock(&rb->mutex);
			lease_name(rb, rb->nodes[i].name, mine);
			pthread_mutex_unlock(&rb->mutex);
			if (info_fill(r->element + 1, conflict, space, false,
				      mine))
				ret = 1;
		}
		freeReplyObject(r);
	}
	if (!ret && answered < rb->majority)
		return -ENOLCK;
	return ret;
}

/*
 * Every holder and waiter of @resource, from the first node answering.
 * A waiter's since_ms is its enqueue time as stored on the server (in
 * Redlock the time sent with it to every node), the same whoever lists
 * it.  A grant to one of our owners that this daemon has not processed
 * yet (its token is newer than any we reported) is listed as a wait:
 * the lock manager still waits for it.
 */
static int redis_list_one(struct redis_backend *rb, const char *resource,
			  dl_lock_info_fn fn, void *arg, bool *stop)
{
	struct dl_lock_info *v = NULL;
	redisReply *r = NULL;
	char mine[17] = "";
	size_t n = 0;
	int ret = -ENOLCK;

	for (unsigned i = 0; i < rb->uri.nnodes && !r; i++) {
		uint64_t gen, name;

		if (node_lease(rb, &rb->nodes[i], mine, &gen, &name) == 0)
			node_script(rb, &rb->nodes[i], "list", resource, mine,
				    0, NULL, NULL, &r, NULL);
	}
	if (!r)
		return ret;
	v = calloc(r->elements / 11 + 1, sizeof(*v));
	if (!v) {
		freeReplyObject(r);
		return -ENOMEM;
	}
	pthread_mutex_lock(&rb->mutex);
	for (size_t i = 0; i + 11 <= r->elements; i += 11) {
		redisReply **e = r->element + i;
		struct dl_lock_info *info = &v[n];

		if (e[0]->type != REDIS_REPLY_STRING ||
		    e[1]->type != REDIS_REPLY_STRING)
			continue;
		if (!info_fill(e + 2, info, e[1]->str, e[0]->str[0] == 'w',
			       mine))
			continue;
		if (info->mine && !info->waiting) {
			struct redis_held *h = *held_slot(
				rb, resource, info->space, info->owner);

			if (!h || info->token > h->max_token) {
				info->waiting = true;
				info->token = 0;
			}
		}
		info->resource = resource;
		n++;
	}
	pthread_mutex_unlock(&rb->mutex);
	freeReplyObject(r);
	for (size_t i = 0; i < n && !*stop; i++)
		if (fn(&v[i], arg))
			*stop = true;
	free(v);
	return 0;
}

static int redis_list(struct dl_backend *be, const char *resource,
		      dl_lock_info_fn fn, void *arg)
{
	struct redis_backend *rb = redis_of(be);
	struct redis_conn *c = NULL;
	char pattern[REDIS_URI_PREFIX_MAX + 8], cursor[32] = "0";
	size_t plen = strlen(rb->uri.prefix);
	bool stop = false;
	int ret = 0;

	if (resource)
		return redis_list_one(rb, resource, fn, arg, &stop);
	/* every resource with holders: SCAN the granted hashes of the
	 * prefix (a resource with waiters only has holders elsewhere, or
	 * gets them at the next re-check) */
	for (const char *kind = "g"; *kind && !stop; kind++) {
		snprintf(pattern, sizeof(pattern), "%s:%c:*", rb->uri.prefix,
			 *kind);
		snprintf(cursor, sizeof(cursor), "0");
		do {
			const char *argv[6] = { "SCAN",	 cursor,  "MATCH",
						pattern, "COUNT", "500" };
			redisReply *r;

			c = conn_get(rb, &rb->nodes[0]);
			if (!c)
				return -ENOLCK;
			r = redisCommandArgv(c->c, 6, argv, NULL);
			if (!r) {
				redisFree(c->c);
				c->c = NULL;
				conn_put(c);
				return -ENOLCK;
			}
			conn_put(c);
			if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
				freeReplyObject(r);
				return -EIO;
			}
			snprintf(cursor, sizeof(cursor), "%s",
				 r->element[0]->str);
			for (size_t i = 0; i < r->element[1]->elements && !stop;
			     i++) {
				const redisReply *k = r->element[1]->element[i];
				char *name;

				if (k->len < plen + 3)
					continue;
				name = strndup(k->str + plen + 3,
					       k->len - plen - 3);
				if (!name)
					continue;
				ret = redis_list_one(rb, name, fn, arg, &stop);
				free(name);
			}
			freeReplyObject(r);
		} while (strcmp(cursor, "0") != 0 && !stop);
	}
	return ret;
}

static int redis_status(struct dl_backend *be, char *buf, size_t len)
{
	struct redis_backend *rb = redis_of(be);
	unsigned up = 0;
	int64_t ago = -1, now = dl_mono_ms();
	size_t held, waiting;

	pthread_mutex_lock(&rb->mutex);
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];

		if (n->up && n->trusted)
			up++;
		if (n->trusted && (ago < 0 || now - n->renewed_at < ago))
			ago = now - n->renewed_at;
	}
	held = rb->nheld;
	waiting = rb->nwaits;
	pthread_mutex_unlock(&rb->mutex);
	snprintf(buf, len,
		 "health=%s nodes=%u/%zu lease_ms=%d "
		 "last_renew_ms_ago=%" PRId64 " held=%zu waiting=%zu",
		 up >= rb->majority ? "ok" : "down", up, rb->uri.nnodes,
		 rb->uri.ttl_ms, ago, held, waiting);
	return 0;
}

const struct dl_backend_ops dl_redis_ops = {
	.scheme = "redis",
	.guarantee = "single Redis: as strong as that one server (async "
		     "replication or a restart without persistence may lose "
		     "locks); several nodes: Redlock majority of independent "
		     "nodes, clock-drift bound",
	.shared = true,
	.check_uri = redis_check_uri,
	.open = redis_open,
	.close = redis_close,
	.lock = redis_lock,
	.unlock = redis_unlock,
	.cancel = redis_cancel,
	.release_owner = redis_release_owner,
	.getlk = redis_getlk,
	.list = redis_list,
	.status = redis_status,
	.break_lock = redis_break_lock,
};

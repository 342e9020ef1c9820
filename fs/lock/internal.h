/*
 * internal.h - what the files of fs/lock/ share, and nobody else sees.
 *
 * Owns: the manager's state (struct lockmgr), its objects, holds and
 * waiters, and the helpers one file of the manager offers another.  Front
 * ends include lockmgr.h only; the unit test (tests/unit/test_lockmgr.c)
 * includes this file too, for lockmgr_create_ops() and lm_siphash24().
 *
 * Does not: declare anything a front-end may call, or any FUSE type.
 *
 * Locking rules (every file of fs/lock/ follows them):
 *
 *  - lockmgr.mutex guards everything below "guarded by mutex" in struct
 *    lockmgr, every field of every struct lm_obj and struct lm_hold, and
 *    of every struct lm_waiter the fields state, interrupted, cancelling,
 *    deadline, recheck, o, spare, req.resource and the list and hash
 *    links.  A waiter's id, done, arg and the rest of req are written once
 *    by lockmgr_prepare() and only read afterwards.
 *  - lockmgr.mutex is a leaf: it is never held across a backend call, a
 *    done() callback, conf.name() or the lost hook (dl_log() is called
 *    under it: it takes no lock of ours).  Backends call us back from
 *    threads that may be inside lockmgr calls of ours (an unlock that
 *    hands a lock over), so holding it across any of those would deadlock.
 *    The timer thread sleeps on timer_cond with it.
 *  - hook_mutex guards lost_hook and lost_ctx and is held while the hook
 *    runs; it is never taken with lockmgr.mutex held, nor the other way.
 *    Order: hook_mutex -> whatever the hook takes (ctlsock.qmutex).
 *  - Read without a mutex: the fields set at create and never changed (be,
 *    conf, host_id, lease, lease_fd, owner_key, timer), an object's
 *    resource name (set when it is bound, freed with the object; a reader
 *    outside the mutex holds a pin), nlost (an atomic, written under the
 *    mutex), the backend's struct dl_lease (the backend's atomics), and
 *    the atomics of struct lockmgr_file (see fence.c for who writes them).
 *
 * Objects live while a hold, a waiter or a call pins them (o->pins): a
 * function that drops the mutex to call the backend with o->resource takes
 * a pin first and gives it back with lm_unpin_obj().
 */
#ifndef DL_LOCK_INTERNAL_H
#define DL_LOCK_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "fs/lock/lockmgr.h"
#include "fs/lock/metrics.h"

#define LM_BUCKET_BITS 10
#define LM_BUCKETS     (1u << LM_BUCKET_BITS)
#define LM_WBUCKETS    4096 /* wait ids, for O(1) lookups */
#define LM_HOLD_FILES  4

struct lm_hold {
	struct lm_hold *next;
	uint64_t owner;
	enum dl_space space;
	/*
	 * The open files the owner locked through.  When the last of them is
	 * released the owner's locks here go too: that ends OFD locks (whose
	 * owner is the open file description) and is a no-op for a process's
	 * POSIX locks, which its closes have already dropped.  Past
	 * LM_HOLD_FILES files we stop tracking and rely on flush alone.
	 */
	struct lockmgr_file *files[LM_HOLD_FILES];
	unsigned nfiles;
	bool untracked;
	bool lost;    /* the backend no longer has its locks */
	uint32_t pid; /* the process that took it (lockmgr_pid_check) */
	int64_t lost_ms;
	uint64_t max_token; /* newest grant: what a release may end */
};

struct lm_obj {
	struct lm_obj *next; /* hash chain */
	uint64_t obj;
	char *resource;
	struct lm_hold *holds;
	unsigned pins; /* waiters and calls in flight that use resource */
};

enum lm_wstate {
	W_PREPARED,   /* registered, not yet sent */
	W_SUBMITTING, /* in the backend call */
	W_QUEUED,     /* the backend queued it: a callback will follow */
};

struct lm_waiter {
	struct lm_waiter *next, *prev; /* in arrival order */
	struct lm_waiter *hnext;       /* hash chain by id */
	uint64_t id;
	struct lockmgr_req req;
	struct lm_obj *o;      /* pinned from submit to completion */
	struct lm_hold *spare; /* allocated up front: a grant cannot fail */
	enum lm_wstate state;
	bool interrupted;
	bool cancelling;
	int64_t deadline; /* monotonic ms, 0: none */
	int64_t recheck;  /* monotonic ms of a deadlock re-check, 0: none */
	int64_t dlcheck;  /* monotonic ms of its first deadlock check */
	int64_t t0_ns;	  /* when it was asked for (metrics) */
	lockmgr_done_fn done;
	void *arg;
};

/* the owners lockmgr_owner_new() makes: tagged, never a kernel's */
#define LM_OWNER_TAG 0xd10c000000000000ULL

struct lockmgr {
	struct dl_backend *be;
	_Atomic uint64_t next_owner; /* lockmgr_owner_new() */
	struct lockmgr_conf conf;
	char *host_id;
	/* the backend's lease fence, in a shared page when lease_fd >= 0 */
	struct dl_lease *lease;
	int lease_fd;
	uint64_t owner_key[2]; /* lockmgr_owner_shown(); set at create */
	pthread_mutex_t mutex;
	pthread_cond_t timer_cond; /* CLOCK_MONOTONIC */
	pthread_t timer;
	bool timer_started;
	/* guarded by mutex: */
	bool stopping;
	struct lm_obj *objs[LM_BUCKETS];
	struct lm_waiter waiters; /* list head */
	struct lm_waiter *wbuckets[LM_WBUCKETS];
	uint64_t next_id;
	size_t nwaiters;
	size_t nholds;
	atomic_size_t nlost; /* read without the mutex too */
	/* hook_mutex guards lost_hook and lost_ctx and is held while the hook
	 * runs, so that once lockmgr_set_lost_hook() returns the old hook is
	 * neither running nor about to; it is a leaf below nothing of ours */
	pthread_mutex_t hook_mutex;
	lockmgr_lost_fn lost_hook;
	void *lost_ctx;
};

/* ---- lockmgr.c: objects, holds, waiters (mutex held unless noted) ---- */

struct lm_obj *lm_obj_find(struct lockmgr *lm, uint64_t obj);
/* free @o once no hold, waiter or call refers to it */
void lm_obj_put(struct lockmgr *lm, struct lm_obj *o);
struct lm_hold *lm_hold_find(struct lm_obj *o, uint64_t owner,
			     enum dl_space space);
struct lm_waiter *lm_waiter_find(struct lockmgr *lm, uint64_t id);
/* unlink @w and drop its pin; the caller calls done() and frees it */
void lm_waiter_unlink(struct lockmgr *lm, struct lm_waiter *w);
/* mutex NOT held: call done() and free @w */
void lm_waiter_finish(struct lockmgr *lm, struct lm_waiter *w, int err);
void lm_req_to_backend(const struct lockmgr_req *r, const char *resource,
		       uint64_t wait_id, struct dl_lock_req *out);
const char *lm_space_name(enum dl_space s);
const char *lm_type_name(enum dl_lock_type t);

/*
 * Mutex NOT held.  lm_pin_obj() finds or binds the object of @obj and
 * pins it (NULL with *err on failure; it may call conf.name);
 * lm_unpin_obj() gives the pin back.
 */
struct lm_obj *lm_pin_obj(struct lockmgr *lm, uint64_t obj,
			  const char *resource, int *err);
void lm_unpin_obj(struct lockmgr *lm, struct lm_obj *o);

/* mutex NOT held: end the queued wait @id with @err, unless the backend
 * already decided it (its callback answers then) */
void lm_cancel(struct lockmgr *lm, uint64_t id, int err);

/*
 * Test hook: lockmgr_create() with the backend opened through @ops
 * directly instead of by conf->backend.uri's scheme (the registry of
 * backend.c knows only real backends).  @ops NULL is lockmgr_create().
 * The daemon never passes anything but NULL.
 */
int lockmgr_create_ops(const struct lockmgr_conf *conf,
		       const struct dl_backend_ops *ops, struct lockmgr **out,
		       char *err, size_t errlen);

/* ---- deadlock.c (mutex NOT held) -------------------------------------- */

/* the EDEADLK check of queued request @id; @final: the timer's re-check */
void lm_deadlock_check(struct lockmgr *lm, uint64_t id, bool final);

/* ---- timer.c ------------------------------------------------------------ */

/* start the timer thread (0 or a negative errno); stop it: sets stopping
 * and joins it (mutex NOT held) */
int lm_timer_start(struct lockmgr *lm);
void lm_timer_stop(struct lockmgr *lm);

/* ---- fence.c ------------------------------------------------------------ */

/* mutex held: a lock granted under lease @lease is now held through @f
 * (@added: by a hold that did not name @f before) */
void lm_file_note_grant(struct lockmgr_file *f, uint64_t lease, bool added);
/* the backend's cb->lost (mutex NOT held) */
void lm_cb_lost(void *ctx, const char *resource, enum dl_space space,
		uint64_t owner, int err);
/* what lm_cb_lost() does, without counting it (the caller did) */
void lm_mark_lost(struct lockmgr *lm, const char *resource, enum dl_space space,
		  uint64_t owner, int err);
/* at create / destroy: the lease page (0 or -ENOMEM) */
int lm_lease_create(struct lockmgr *lm);
void lm_lease_destroy(struct lockmgr *lm);

/* ---- inspect.c ---------------------------------------------------------- */

/* SipHash-2-4 of the one 8-byte little-endian word @m under @key */
uint64_t lm_siphash24(const uint64_t key[2], uint64_t m);

#endif /* DL_LOCK_INTERNAL_H */

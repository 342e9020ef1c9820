/*
 * lockmgr.h - the per-host lock manager: its whole public API.
 *
 * One manager serves every front-end (the FUSE mount: lockops.c and
 * passthrough.c; the control socket: fs/ctl/).  It turns front-end
 * requests into backend requests and keeps what only this host knows:
 * which local owners hold or wait for which locks through which open
 * files, the name each locked object is known by in the cluster, waits
 * (interrupt, lock_timeout, deadlock), and locks that were lost.
 *
 * It does not: include FUSE or socket headers, reply to anyone (answers go
 * through done()), invalidate caches (fs/grantq.c does, for lockops.c), or
 * decide conflicts (the backend does).  Its implementation is split by
 * concept under fs/lock/ (lockmgr.c requests, deadlock.c, timer.c,
 * fence.c, inspect.c; internal.h is private to them).
 *
 * An object ("obj") is what a front-end locks: the FUSE inode number, or
 * an id of the control socket's own (fs/ctl/owners.c, high bit set).  Its
 * resource name (the cluster-wide name) is looked up once, when the first
 * lock or wait on it starts, and kept while any remains, so a rename of a
 * locked file cannot make its unlock miss.
 *
 * Requests complete through a callback: lockmgr_submit() calls done()
 * exactly once, either before it returns or later from whichever thread
 * learns the outcome (an unlocking thread, a backend thread, the timer,
 * an interrupting thread).  done() is never called with a manager mutex
 * held.
 *
 * Rules for callers: every function may be called from any thread, with
 * no lock of the caller's that the manager's callbacks (done(), the lost
 * hook, conf.name) also take; conf.name runs on the calling thread without
 * a manager mutex.  lockmgr_destroy() only once no other call is in flight
 * and no request is between lockmgr_prepare() and lockmgr_submit().
 */
#ifndef DL_LOCKMGR_H
#define DL_LOCKMGR_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

struct lockmgr;

/*
 * struct lockmgr_file - what the manager keeps in a front-end's open file
 * (embedded in it) so that writers can be fenced without a lookup: a lock
 * taken through the file that was lost, and the lease its live locks were
 * granted under.  All fields are atomics, written by the manager only.
 */
struct lockmgr_file {
	atomic_bool lost;	/* sticky: a lock taken through it was lost */
	_Atomic uint64_t lease; /* dl_lease gen of its locks' grants */
	atomic_uint nholds;	/* holds that name this file (0: unfenced) */
};

typedef void (*lockmgr_done_fn)(void *arg, int err);
/* the resource name of @obj, malloc'd; 0 or a negative errno */
typedef int (*lockmgr_name_fn)(void *ctx, uint64_t obj, char **out);

/* see lockmgr_conf.deadlock_delay_ms */
#define LM_DEADLOCK_DELAY_MS 100

struct lockmgr_conf {
	struct dl_backend_conf backend;
	unsigned lock_timeout_s; /* 0: wait forever */
	/* a queued POSIX wait is checked for a deadlock once it has waited
	 * this long (a wait granted sooner costs no listing): 0 means
	 * LM_DEADLOCK_DELAY_MS on a remote backend and at once on an
	 * in-process one; negative: at once, on the submitting thread */
	int deadlock_delay_ms;
	lockmgr_name_fn name; /* may be NULL when every request names
				 its resource (lockmgr_req.resource) */
	void *name_ctx;
};

/* A lock or unlock request of a front-end. */
struct lockmgr_req {
	uint64_t obj;
	struct lockmgr_file *file; /* the open file it came through, or NULL */
	enum dl_space space;
	enum dl_lock_type type;
	uint64_t start, end;
	uint64_t owner;
	uint32_t pid;
	bool wait;
	bool ofd; /* an OFD lock, when the front-end can tell (the shim) */
	/*
	 * Optional: the resource name to bind @obj to when it is not bound
	 * yet, instead of asking conf.name (the control socket names objects
	 * itself).  Read only during lockmgr_submit() and lockmgr_getlk().
	 */
	const char *resource;
	/*
	 * Optional: set before done(0) to whether the grant left this host's
	 * cached view of the file valid (dl_grant.coherent): a front-end may
	 * then skip dropping its caches.  Untouched on failure.
	 */
	bool *coherent;
};

/* a lock of @obj held by @owner in @space is lost (see lockmgr_set_lost_hook) */
typedef void (*lockmgr_lost_fn)(void *ctx, uint64_t obj, enum dl_space space,
				uint64_t owner);

int lockmgr_create(const struct lockmgr_conf *conf, struct lockmgr **out,
		   char *err, size_t errlen);
/* fail every wait with -ENOLCK, release every lock, close the backend */
void lockmgr_destroy(struct lockmgr *lm);

/*
 * lockmgr_prepare() - register a lock request (type RD/WR) and return its
 * wait id (never 0), or 0 on -ENOMEM.  Nothing is asked of the backend yet:
 * this lets the front-end arm its interrupt hook first.
 * lockmgr_submit() - send it; done(arg, err) follows exactly once with 0
 * (granted), -EAGAIN, -EDEADLK (cycle or lock_timeout), -EINTR, -ENOLCK,
 * or -EIO when the owner's lock on the object was lost and is not yet
 * released (as NFS: the owner must unlock or close first).
 */
uint64_t lockmgr_prepare(struct lockmgr *lm, const struct lockmgr_req *req,
			 lockmgr_done_fn done, void *arg);
void lockmgr_submit(struct lockmgr *lm, uint64_t wait_id);

/* lockmgr_interrupt() - the caller gave up (signal): end the wait with
 * -EINTR unless it is already decided.  Safe with any id, any time. */
void lockmgr_interrupt(struct lockmgr *lm, uint64_t wait_id);

/* unlock [start,end] of req->owner (req->type is ignored) */
int lockmgr_unlock(struct lockmgr *lm, const struct lockmgr_req *req);

/* F_GETLK: 0 no conflict, 1 *info filled, negative errno */
int lockmgr_getlk(struct lockmgr *lm, const struct lockmgr_req *req,
		  struct dl_lock_info *info);

/* drop every lock of @owner on @obj in @space (close, flock release) */
void lockmgr_release_owner(struct lockmgr *lm, uint64_t obj,
			   enum dl_space space, uint64_t owner);

/*
 * lockmgr_release_file() - the last reference to the open file @file is
 * going away: owners whose every lock here was taken through @file lose
 * them (its flock lock, its OFD locks), and @file is forgotten.
 */
void lockmgr_release_file(struct lockmgr *lm, uint64_t obj,
			  struct lockmgr_file *file);

/*
 * lockmgr_file_init() - a new open file: not locked, not lost.
 * lockmgr_write_check() - may process @pid (0: any) write through @file
 * now?  0, or -EIO when a lock taken through it was lost or its lease is
 * no longer trusted by the monotonic clock (DESIGN §3: fencing by the
 * clock; the file is then marked lost as well), or when @pid fails
 * lockmgr_pid_check() at the same instant.  No round trip: call it before
 * every write-class operation, after the request was read.
 */
void lockmgr_file_init(struct lockmgr_file *file);
int lockmgr_write_check(struct lockmgr *lm, struct lockmgr_file *file,
			uint32_t pid);

/*
 * lockmgr_pid_check() - may process @pid change files now?  -EIO when a
 * lock it holds here was lost, or when it holds locks and the lease is no
 * longer trusted by the clock; else 0.  Costs a clock read and two atomic
 * loads while nothing is lost; a scan of the holds otherwise.
 */
int lockmgr_pid_check(struct lockmgr *lm, uint32_t pid);

/*
 * lockmgr_lease() - the lease fence the backend keeps (struct dl_lease);
 * lockmgr_lease_memfd() - a memfd whose first bytes are that struct, for
 * sharing it read-only with shim clients, or -1 when there is none.
 */
const struct dl_lease *lockmgr_lease(struct lockmgr *lm);
int lockmgr_lease_memfd(struct lockmgr *lm);

/*
 * Inspection.  lockmgr_describe() writes the text of user.dlock.locks
 * (@waiters false) or user.dlock.waiters (true) for @obj into a malloc'd
 * string; lockmgr_token() finds the newest fencing token held by @pid on
 * @obj (-ENODATA if none); lockmgr_status() the text of user.dlock.status.
 */
int lockmgr_describe(struct lockmgr *lm, uint64_t obj, bool waiters,
		     char **out);
int lockmgr_token(struct lockmgr *lm, uint64_t obj, uint32_t pid,
		  uint64_t *token);
int lockmgr_status(struct lockmgr *lm, const char *backend_shown, char **out);
/* the metrics in the Prometheus text format (fs/lock/metrics.c), malloc'd
 * in *out; 0 or -ENOMEM */
int lockmgr_metrics(struct lockmgr *lm, char **out);

/*
 * lockmgr_owner_shown() - the id an owner is shown by in xattrs and
 * dlockctl: a keyed hash (key drawn at start), stable while the daemon
 * runs, telling nothing of the owner ids themselves.
 */
uint64_t lockmgr_owner_shown(struct lockmgr *lm, uint64_t owner);

/*
 * lockmgr_owner_new() - an owner id for an owner a front end makes itself
 * (a FUSE open file's flock locks, a shim process, an open file
 * description, a dlockctl connection): unique while the manager lives,
 * never reused, tagged so that it is no kernel lock owner.  Any thread.
 */
uint64_t lockmgr_owner_new(struct lockmgr *lm);

/* true when other hosts share the backend (and, usually, the files) */
bool lockmgr_shared(struct lockmgr *lm);

/* true when no call of the manager waits on I/O (an in-process backend):
 * a thread that must not wait may call it directly */
bool lockmgr_inproc(struct lockmgr *lm);

/* lockmgr_list() - dl_backend_list() on the manager's backend */
int lockmgr_list(struct lockmgr *lm, const char *resource, dl_lock_info_fn fn,
		 void *arg);

/*
 * lockmgr_break() - an administrator removes every lock of @resource in
 * the backend; their holders' daemons learn they are lost.  0, -EOPNOTSUPP
 * when the backend cannot, or another negative errno.
 */
int lockmgr_break(struct lockmgr *lm, const char *resource);

/*
 * Versions (fs/lock/versions.c): lockmgr_version() reads @resource's
 * version from the store, lockmgr_bump() adds one to it there.  0,
 * -EOPNOTSUPP when the backend keeps none, or the backend's error (a
 * failed bump is logged).  One round trip each, no lock taken.
 */
int lockmgr_version(struct lockmgr *lm, const char *resource,
		    struct dl_version *out);
int lockmgr_bump(struct lockmgr *lm, const char *resource,
		 struct dl_version *out);

/*
 * lockmgr_set_lost_hook() - also tell @fn (after the manager has marked
 * the hold lost, without its mutex held) about every lost lock.  One hook;
 * set it before locks are taken through the front-end that wants it.
 */
void lockmgr_set_lost_hook(struct lockmgr *lm, lockmgr_lost_fn fn, void *ctx);

#endif /* DL_LOCKMGR_H */

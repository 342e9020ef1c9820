/*
 * backend.h - the only door to a lock store.
 *
 * A backend keeps the granted locks and the queued requests of the whole
 * cluster (or, for "local:", of this process).  The daemon reaches it only
 * through the inline wrappers below; it never includes a client library's
 * headers, and a backend never includes FUSE's.
 *
 * Identity.  A lock belongs to an owner: this daemon's host id and
 * incarnation (given at open) plus the local owner id of the request (the
 * kernel's lock owner).  Resources are names (the path relative to the
 * mount root); a backend maps any byte string to a valid, collision-free
 * key of its own.
 *
 * Asynchrony.  A request with a nonzero wait_id may be queued: lock()
 * returns -EINPROGRESS and later exactly one of cb->granted / cb->failed is
 * called with that wait_id, unless cancel() returned 0 first.  Callbacks run
 * on a backend thread or on the thread of another call into the backend
 * (an unlock that hands the lock over), but never while the backend holds a
 * lock of its own, and never before lock() has queued the request, so the
 * caller must be ready to be called back before lock() returns.  Callers
 * must not hold a mutex across a backend call that a callback also takes.
 *
 * Errors are negative errnos: -EAGAIN conflict, -EINPROGRESS queued,
 * -ENOLCK the store cannot grant safely (unreachable, lease gone), -ENOENT
 * nothing to cancel, -EINVAL bad argument, -ENOMEM.
 */
#ifndef DL_BACKEND_H
#define DL_BACKEND_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/util/config.h"
#include "backend/range.h"
#include "backend/util/clock.h"

#define DL_HOST_MAX 64

enum dl_space {
	DL_SPACE_FLOCK =
		0, /* flock(2): whole file, owner = open file description */
	DL_SPACE_POSIX = 1, /* fcntl/lockf/OFD record locks */
};

/* A lock, unlock or test request. */
struct dl_lock_req {
	const char *resource; /* path relative to the mount root */
	enum dl_space space;
	enum dl_lock_type type; /* DL_RDLCK, DL_WRLCK; DL_UNLCK for unlock */
	uint64_t start;		/* inclusive range; flock: 0..DL_RANGE_EOF */
	uint64_t end;
	uint64_t owner;	  /* local owner id (kernel lock owner) */
	uint32_t pid;	  /* caller's pid, as F_GETLK reports it */
	uint64_t wait_id; /* nonzero: queue when blocked */
	/* the caller's id of this request even when wait_id is 0: a layer
	 * that must first ask another host (backend/cache.c) may answer a
	 * non-blocking request later, through cb->granted / cb->failed
	 * (-EAGAIN), after returning -EINPROGRESS.  Backends that never do
	 * that ignore it; 0: the caller wants an answer at once */
	uint64_t answer_id;
};

/* A granted lock or a queued request, for F_GETLK and inspection. */
struct dl_lock_info {
	enum dl_space space;
	enum dl_lock_type type;
	uint64_t start;
	uint64_t end;
	char host[DL_HOST_MAX]; /* host id of the owner's daemon */
	uint64_t owner;		/* owner id on that host */
	bool mine;		/* owner belongs to this daemon incarnation */
	bool waiting;		/* a queued request, not a grant */
	uint32_t pid;
	uint64_t token;	  /* fencing token (0 for a waiter) */
	int64_t since_ms; /* wall clock, ms: grant or enqueue time */
	/* the resource, when the backend knows it (list of all resources);
	 * valid during the callback only; NULL: the one asked for */
	const char *resource;
};

/*
 * Fencing by the clock (DESIGN §3).  A backend whose locks live under a
 * lease keeps this up to date; the daemon reads it, without a round trip,
 * before every write through a locked descriptor (and the shim reads the
 * same memory through a shared page).  The storage belongs to the caller
 * (struct dl_backend_conf.lease), initialised to { 0, INT64_MAX }: a
 * backend without leases ("local:") never touches it and its locks never
 * expire.
 *
 * @gen names the lease that grants are made under, from 1 up; it changes
 * before anything else whenever that lease is lost, given up or replaced,
 * so a grant of an older lease can never look trusted again.  @until_ms is
 * the monotonic time (dl_mono_ms()) before which the locks of lease @gen
 * are certainly still held: the renewal send time + lease - margin,
 * strictly before the store could hand them to another host.  A backend
 * stores @gen first, then @until_ms (sequentially consistent atomics), and
 * a reader loads gen, until, gen (dl_lease_trusted()).
 */
struct dl_lease {
	_Atomic uint64_t gen;
	_Atomic int64_t until_ms;
	/* for the metrics only: renewals of the lease that the store
	 * confirmed, and renewals that failed (no answer, or the lease was
	 * gone); a backend whose client library keeps the lease (ZooKeeper's
	 * session) leaves them at 0 */
	_Atomic uint64_t renewals;
	_Atomic uint64_t renew_failures;
};

/* What a grant reports: its fencing token and the lease it lives under. */
struct dl_grant {
	uint64_t token;
	uint64_t lease; /* dl_lease.gen at the grant */
	/* decided here under a cached right held since an earlier grant
	 * on the file here (backend/cache.c): no other host can have
	 * written it under a lock since, so the kernel's cached view of it
	 * need not be dropped */
	bool coherent;
};

/* true when a lock granted under lease @gen is still trusted at @now_ms */
static inline bool dl_lease_trusted(const struct dl_lease *l, uint64_t gen,
				    int64_t now_ms)
{
	uint64_t g1 = atomic_load(&l->gen);
	int64_t until = atomic_load(&l->until_ms);
	uint64_t g2 = atomic_load(&l->gen);

	return g1 == gen && g2 == gen && now_ms < until;
}

/* Called by a backend; see "Asynchrony" above. */
struct dl_backend_cb {
	void *ctx;
	void (*granted)(void *ctx, uint64_t wait_id,
			const struct dl_grant *grant);
	void (*failed)(void *ctx, uint64_t wait_id, int err);
	/* a lock this daemon held is gone (lease ended, broken by an admin) */
	void (*lost)(void *ctx, const char *resource, enum dl_space space,
		     uint64_t owner, int err);
	/* optional: another daemon poked @resource, on which this daemon
	 * holds a lock (ops->poke): it asks for it back */
	void (*revoke)(void *ctx, const char *resource);
};

struct dl_backend_conf {
	const char *uri;
	const char *host_id;
	uint64_t incarnation;
	const struct dl_config *config; /* options and secrets; may be NULL */
	struct dl_lease *lease;		/* see struct dl_lease; never NULL */
	/* same-host caching (backend/cache.c); ignored by a backend that
	 * is not shared */
	enum dl_cache_mode {
		/* the store alone: no rights are taken or honoured (the
		 * backend-level tests); never for a mount of a cluster */
		DL_CACHE_NONE = 0,
		/* cache=off: the cache's shared right on every file in use,
		 * so a file cached by another host is asked back first, but
		 * nothing is cached here */
		DL_CACHE_AWARE,
		/* cache=on: decide a file's locks here while no other host
		 * uses it */
		DL_CACHE_ON,
	} cache;
	unsigned cache_idle_ms; /* give an unused file back after; 0: 1000 */
	/* after a revocation, do not cache the file again for; 0: 2000
	 * (the model test makes it short, so that rights come and go) */
	unsigned cache_nocache_ms;
};

/* Each backend embeds this as its first member. */
struct dl_backend {
	const struct dl_backend_ops *ops;
};

typedef int (*dl_lock_info_fn)(const struct dl_lock_info *info, void *arg);

/*
 * The version of a file's content, cluster-wide (optimistic concurrency,
 * README "Optimistic updates").  It lives in the store next to the file's
 * locks but apart from them: no lease, no purge, it outlives every daemon.
 * A resource never bumped has version 0, host "", changed_ms 0.
 */
struct dl_version {
	uint64_t version;
	char host[DL_HOST_MAX]; /* host id of the daemon that bumped last */
	int64_t changed_ms;	/* wall clock (ms since the epoch) of then */
};

/* what same-host caching (backend/cache.c) counts, for the metrics */
struct dl_cache_stats {
	uint64_t cached, direct; /* files now decided here / in the store */
	uint64_t local_grants;	 /* locks granted here, no round trip */
	uint64_t rights_taken;	 /* files cached */
	uint64_t revocations;	 /* files given back to another host */
	uint64_t revoke_wait_ms; /* total, from the ask to the give-back */
};

struct dl_backend_ops {
	const char *scheme;    /* "local", "redis", ... */
	const char *guarantee; /* one line for the status xattr and README */
	/* other hosts share the store (and, usually, the files): the daemon
	 * must invalidate its kernel caches of a file after each grant */
	bool shared;
	/* every call is answered from this process's memory, never waiting
	 * on I/O or on another host: a caller that must not wait (the
	 * control socket's thread) may call it directly */
	bool inproc;
	/* check the part of @uri after "scheme:"; no connection is made */
	int (*check_uri)(const char *uri, char *err, size_t errlen);
	int (*open)(const struct dl_backend_conf *conf,
		    const struct dl_backend_cb *cb, struct dl_backend **out,
		    char *err, size_t errlen);
	void (*close)(struct dl_backend *be);
	int (*lock)(struct dl_backend *be, const struct dl_lock_req *req,
		    struct dl_grant *grant);
	int (*unlock)(struct dl_backend *be, const struct dl_lock_req *req);
	int (*cancel)(struct dl_backend *be, uint64_t wait_id);
	int (*release_owner)(struct dl_backend *be, const char *resource,
			     enum dl_space space, uint64_t owner,
			     uint64_t max_token);
	int (*getlk)(struct dl_backend *be, const struct dl_lock_req *req,
		     struct dl_lock_info *conflict);
	int (*list)(struct dl_backend *be, const char *resource,
		    dl_lock_info_fn fn, void *arg);
	int (*status)(struct dl_backend *be, char *buf, size_t len);
	/* optional (NULL: -EOPNOTSUPP): an administrator removes every lock
	 * of @resource; each removed lock's owner is reported through
	 * cb->lost (-ECONNABORTED) to its daemon, waiters are served */
	int (*break_lock)(struct dl_backend *be, const char *resource);
	/* optional (NULL: -EOPNOTSUPP): ask every other daemon that holds a
	 * lock on @resource (either space) to give it back: soon after, each
	 * such daemon's cb->revoke(@resource) is called once.  Best effort
	 * (a message may be lost with a connection): a caller that waits for
	 * the lock pokes again about once a second.  Never calls this
	 * daemon's own cb->revoke.  0, or -ENOLCK when the store cannot be
	 * reached */
	int (*poke)(struct dl_backend *be, const char *resource);
	/* optional (NULL: -EOPNOTSUPP): the cache's counters */
	int (*cache_stats)(struct dl_backend *be, struct dl_cache_stats *st);
	/* optional (NULL: -EOPNOTSUPP): read @resource's version (struct
	 * dl_version); 0, -ENOLCK when the store cannot be reached, -ENOMEM */
	int (*version)(struct dl_backend *be, const char *resource,
		       struct dl_version *out);
	/* optional (NULL: -EOPNOTSUPP): add one to @resource's version,
	 * atomically in the store (two daemons bumping at once give two
	 * versions), recording this daemon's host id and the time; *out gets
	 * the version after the bump.  0, -ENOLCK, -ENOMEM.  On -ENOLCK the
	 * bump may or may not have happened */
	int (*bump)(struct dl_backend *be, const char *resource,
		    struct dl_version *out);
};

/* the backends this build knows, one file each */
extern const struct dl_backend_ops dl_local_ops;
extern const struct dl_backend_ops dl_redis_ops;
extern const struct dl_backend_ops dl_zk_ops;
extern const struct dl_backend_ops dl_pg_ops;	    /* postgresql:// */
extern const struct dl_backend_ops dl_pg_alias_ops; /* postgres:// */

/*
 * dl_backend_find() - the ops table for @uri's scheme, or NULL.
 * dl_backend_check_uri() - 0, or -EINVAL with a one-line reason in @err.
 * dl_backend_open() - connect; 0 or a negative errno with a reason in @err.
 */
const struct dl_backend_ops *dl_backend_find(const char *uri);
int dl_backend_check_uri(const char *uri, char *err, size_t errlen);
int dl_backend_open(const struct dl_backend_conf *conf,
		    const struct dl_backend_cb *cb, struct dl_backend **out,
		    char *err, size_t errlen);

/*
 * dl_uri_redact() - copy @uri to @buf with any password ("user:pass@")
 * replaced by "***", for logs and the status xattr.
 */
void dl_uri_redact(const char *uri, char *buf, size_t len);

static inline void dl_backend_close(struct dl_backend *be)
{
	be->ops->close(be);
}

/* 0 granted (*grant filled), -EAGAIN, -EINPROGRESS (queued), -ENOLCK,
 * -ENOMEM */
static inline int dl_backend_lock(struct dl_backend *be,
				  const struct dl_lock_req *req,
				  struct dl_grant *grant)
{
	return be->ops->lock(be, req, grant);
}

/* unlock [start,end] of req->owner in req->space; 0 or -ENOLCK/-ENOMEM */
static inline int dl_backend_unlock(struct dl_backend *be,
				    const struct dl_lock_req *req)
{
	return be->ops->unlock(be, req);
}

/*
 * 0 removed from the queue (no callback will come: the caller answers), or
 * -ENOENT already granted/failed (its callback is due or done).  Nothing
 * else: a backend that cannot reach its store now still answers 0 and
 * removes the queued record later (on reconnect, or with its lease).
 */
static inline int dl_backend_cancel(struct dl_backend *be, uint64_t wait_id)
{
	return be->ops->cancel(be, wait_id);
}

/*
 * drop the locks of @owner on @resource in @space that were granted with a
 * token <= @max_token (DL_TOKEN_ALL: all of them) and hand the freed bytes
 * to waiters.  A release names the grants it ends (DESIGN §3): a grant
 * that raced ahead of a close, whose token is newer, survives it.  A lock
 * piece merged into a newer grant carries the newer token and survives too.
 */
static inline int dl_backend_release_owner(struct dl_backend *be,
					   const char *resource,
					   enum dl_space space, uint64_t owner,
					   uint64_t max_token)
{
	return be->ops->release_owner(be, resource, space, owner, max_token);
}

/* 0 no conflict, 1 *conflict filled, negative errno */
static inline int dl_backend_getlk(struct dl_backend *be,
				   const struct dl_lock_req *req,
				   struct dl_lock_info *conflict)
{
	return be->ops->getlk(be, req, conflict);
}

/* calls @fn for every holder then every waiter of @resource (NULL: all
 * resources) until @fn returns nonzero; returns 0 or a negative errno */
static inline int dl_backend_list(struct dl_backend *be, const char *resource,
				  dl_lock_info_fn fn, void *arg)
{
	return be->ops->list(be, resource, fn, arg);
}

static inline int dl_backend_status(struct dl_backend *be, char *buf,
				    size_t len)
{
	return be->ops->status(be, buf, len);
}

/* 0, -EOPNOTSUPP when the backend has no break_lock, or its error */
static inline int dl_backend_break_lock(struct dl_backend *be,
					const char *resource)
{
	if (!be->ops->break_lock)
		return -EOPNOTSUPP;
	return be->ops->break_lock(be, resource);
}

/* 0 with @st filled, or -EOPNOTSUPP: no cache */
static inline int dl_backend_cache_stats(struct dl_backend *be,
					 struct dl_cache_stats *st)
{
	if (!be->ops->cache_stats)
		return -EOPNOTSUPP;
	return be->ops->cache_stats(be, st);
}

/* 0, -EOPNOTSUPP when the backend has no poke, or its error */
static inline int dl_backend_poke(struct dl_backend *be, const char *resource)
{
	if (!be->ops->poke)
		return -EOPNOTSUPP;
	return be->ops->poke(be, resource);
}

/* 0 with *out filled, -EOPNOTSUPP, or the backend's error */
static inline int dl_backend_version(struct dl_backend *be,
				     const char *resource,
				     struct dl_version *out)
{
	if (!be->ops->version)
		return -EOPNOTSUPP;
	return be->ops->version(be, resource, out);
}

/* 0 with *out the new version, -EOPNOTSUPP, or the backend's error */
static inline int dl_backend_bump(struct dl_backend *be, const char *resource,
				  struct dl_version *out)
{
	if (!be->ops->bump)
		return -EOPNOTSUPP;
	return be->ops->bump(be, resource, out);
}

#endif /* DL_BACKEND_H */

/*
 * fake_backend.h - an in-memory struct dl_backend_ops whose every outcome
 * the test decides, for tests/unit/test_lockmgr.c.
 *
 * Open it through lockmgr_create_ops(&conf, &fake_backend_ops, ...) (the
 * test hook of fs/lock/internal.h: backend.c's registry knows only real
 * backends); fake_last() then names the instance.
 *
 * Decisions.  lock() grants at once when no held lock of another owner
 * conflicts (and the queue-all switch is off); otherwise a request with a
 * wait id is queued (-EINPROGRESS) and stays queued until the test calls
 * fake_grant() or fake_fail(), or the manager cancels it; one without is
 * refused (-EAGAIN).  Queued requests never block anyone (as local.c), and
 * fake_grant() ignores conflicts.  Nothing is ever granted by itself.
 * fake_lose() drops an owner's held locks and reports cb->lost; other
 * hosts' locks and waits are made up with fake_add() and fake_remove().
 *
 * Semantics kept from the real backends: exactly one of granted/failed per
 * queued request unless cancel() returned 0; release_owner() ends only
 * grants with a token <= max_token; tokens grow; a grant reports the lease
 * gen current at the grant; list() gives holders then waiters, with
 * resource names and enqueue times (a fake clock: +1 per enqueue or grant,
 * so order is deterministic).  POSIX merging and lock conversion are NOT
 * modelled: a lock adds an entry, an unlock trims the owner's entries.
 *
 * Threads.  Every function may be called from any thread.  One mutex
 * guards the fake's tables; no callback and no hook runs with it held, so
 * a hook may call fake_grant() or the manager.
 *
 * Hooks let a test act at a precise moment of a backend call, on the
 * thread making it (no sleeps): FAKE_AT_LOCK after lock() queued a request
 * (before it returns -EINPROGRESS), FAKE_AT_CANCEL on entry of cancel(),
 * FAKE_AT_UNLOCK after unlock() applied, FAKE_AT_RELEASE on entry of
 * release_owner(), FAKE_AT_LIST on entry of list().
 */
#ifndef FAKE_BACKEND_H
#define FAKE_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"

struct fake_backend;

extern const struct dl_backend_ops fake_backend_ops;

/* the instance the last open() made, or NULL after its close() */
struct fake_backend *fake_last(void);

/* every request with a wait id queues, conflict or not */
void fake_set_queue_all(struct fake_backend *fb, bool on);
/* the next lock() returns @err (0: back to normal decisions) */
void fake_set_lock_error(struct fake_backend *fb, int err);
/* the next unlock() returns @err and changes nothing (as a real backend
 * whose server did not answer: it retries in the background) */
void fake_set_unlock_error(struct fake_backend *fb, int err);

/* decide queued request @wait_id; 0, or -ENOENT when it is not queued
 * (cancelled or decided already): then no callback is made */
int fake_grant(struct fake_backend *fb, uint64_t wait_id);
int fake_fail(struct fake_backend *fb, uint64_t wait_id, int err);
/* grant @wait_id now (a cancel() finds it decided) but make the callback
 * only at fake_deliver(): a grant decided in the store whose notice is
 * still on its way */
int fake_grant_later(struct fake_backend *fb, uint64_t wait_id);
/* make the callbacks fake_grant_later() held back, in order; how many */
size_t fake_deliver(struct fake_backend *fb);

/* drop this host's locks of @owner on @resource in @space and report
 * cb->lost, whether or not any were held (a late report); returns how
 * many entries were dropped */
size_t fake_lose(struct fake_backend *fb, const char *resource,
		 enum dl_space space, uint64_t owner, int err);

/* a lock or wait of another host (or of nobody the manager knows) */
struct fake_lock {
	const char *resource;
	const char *host;
	uint64_t owner;
	uint32_t pid;
	enum dl_space space;
	enum dl_lock_type type;
	uint64_t start, end;
	bool waiting;
	int64_t since_ms; /* 0: the fake clock */
};
void fake_add(struct fake_backend *fb, const struct fake_lock *l);
/* remove the entries of @host's @owner that are waits (@waiting) or
 * holds; returns how many */
size_t fake_remove(struct fake_backend *fb, const char *host, uint64_t owner,
		   bool waiting);

/* this host's queued requests; this host's held entries of @owner (0:
 * of anyone); the newest token of @owner on @resource (0: none) */
size_t fake_nqueued(struct fake_backend *fb);
bool fake_is_queued(struct fake_backend *fb, uint64_t wait_id);
size_t fake_nheld(struct fake_backend *fb, uint64_t owner);
uint64_t fake_max_token(struct fake_backend *fb, const char *resource,
			uint64_t owner);
/* the fake clock: the since_ms the next enqueue or grant will get */
int64_t fake_clock(struct fake_backend *fb);

/* the lease fence the manager gave at open */
void fake_set_lease(struct fake_backend *fb, uint64_t gen, int64_t until_ms);

struct fake_calls {
	unsigned lock, unlock, cancel, release, getlk, list, list_all;
	uint64_t last_release_max_token;
};
struct fake_calls fake_calls(struct fake_backend *fb);

enum fake_point {
	FAKE_AT_LOCK,
	FAKE_AT_CANCEL,
	FAKE_AT_UNLOCK,
	FAKE_AT_RELEASE,
	FAKE_AT_LIST,
	FAKE_NPOINTS,
};
/* @resource: the call's (NULL for cancel, or a list of everything) */
typedef void (*fake_hook_fn)(struct fake_backend *fb, enum fake_point at,
			     const char *resource, uint64_t wait_id, void *arg);
void fake_set_hook(struct fake_backend *fb, enum fake_point at, fake_hook_fn fn,
		   void *arg);

#endif /* FAKE_BACKEND_H */

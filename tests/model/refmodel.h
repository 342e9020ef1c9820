/*
 * refmodel.h - the reference of the lock contract (DESIGN §2), in memory,
 * for the model test (tests/model/model.c).
 *
 * It holds what every backend must agree on: the granted locks of each
 * (resource, lock space) and the queue of waiting requests, and it decides
 * each request by the byte-range rules of backend/range.c (conflict,
 * merge, split, in-place conversion) plus the queueing rule of the
 * backend under test:
 *
 *  - M_POLICY_LINUX ("local:" and Redis): as on a local Linux filesystem,
 *    a request is granted whenever no granted lock of another owner
 *    conflicts with it; waiting requests block nobody.  A change that
 *    frees bytes hands them to the waiters in arrival order, again and
 *    again until none more can be granted (a grant that converts its
 *    owner's lock to shared can unblock an earlier waiter, as a
 *    downgrade wakes the blocked in fs/locks.c).
 *  - M_POLICY_FIFO (ZooKeeper): every request is a node in one queue per
 *    resource; a node is granted when no earlier node of another owner
 *    conflicts with it, except (2) an earlier node that itself waits for
 *    a granted node of the requester does not count (it would be a
 *    deadlock Linux does not have); a node granted that way is "jumped"
 *    and blocks the earlier nodes it overtook.  Reductions (unlock,
 *    downgrade, close) change the owner's nodes in place; growth makes a
 *    new node that queues, and once granted trims the owner's older
 *    nodes.  See the head of backend/zk/grant.c.
 *
 * Both: flock(2) is the whole file; the same mode again is a no-op; a
 * conversion first drops the old lock (waking others), then asks for the
 * new one, so a failed LOCK_NB conversion leaves no lock.  Closing a
 * descriptor (release) drops an owner's granted locks, not its waits.
 *
 * An owner is a key: host index << 32 | local owner id.  Pure: no I/O, no
 * threads; allocation failures abort (a test program).
 */
#ifndef DL_REFMODEL_H
#define DL_REFMODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/range.h"

#define M_MAX_RES 4

enum m_policy {
	M_POLICY_LINUX,
	M_POLICY_FIFO,
};

/* a request: a waiting one (both policies) or a granted node (FIFO) */
struct m_node {
	uint64_t seq; /* arrival order */
	uint64_t key; /* owner */
	int res;
	enum dl_space space;
	struct dl_range_set ranges; /* owner 0; a waiter: the one asked */
	bool granted;
	bool jumped;
	uint64_t wait_id;
};

/* a grant to a queued request, reported through cb->granted */
struct m_grant {
	uint64_t wait_id;
	/* LINUX: made by a second pass over the waiters, which a backend
	 * that runs them once per change misses (see single_pass) */
	bool second_pass;
};

struct m_model {
	enum m_policy policy;
	/* deliberate deviations from the contract, to match a backend with
	 * a known issue (see KNOWN_ISSUES in model.c) */
	bool single_pass; /* LINUX: one pass over the waiters per change */
	bool noop_release_settles; /* with single_pass: a release that
				      dropped nothing still runs the waiters
				      (redis.lua does, local.c does not) */
	struct dl_range_set held[M_MAX_RES][2]; /* LINUX: owner = key */
	struct m_node *v;			/* in seq order */
	size_t n, cap;
	uint64_t seq;
	unsigned long njumped;	 /* FIFO: grants through exception (2) */
	struct m_grant *granted; /* grants since m_take_grants() */
	size_t ngranted, gcap;
};

void m_init(struct m_model *m, enum m_policy policy);
void m_free(struct m_model *m);

/* 0 granted, -EAGAIN, -EINPROGRESS (queued; wait_id != 0) */
int m_lock(struct m_model *m, uint64_t key, int res, enum dl_space space,
	   enum dl_lock_type type, uint64_t start, uint64_t end,
	   uint64_t wait_id);
void m_unlock(struct m_model *m, uint64_t key, int res, enum dl_space space,
	      uint64_t start, uint64_t end);
/* drop every granted lock of @key (close, process exit) */
void m_release(struct m_model *m, uint64_t key, int res, enum dl_space space);
/* 0 removed, -ENOENT not waiting */
int m_cancel(struct m_model *m, uint64_t wait_id);
/* true when a granted lock of another owner conflicts */
bool m_getlk(const struct m_model *m, uint64_t key, int res,
	     enum dl_space space, enum dl_lock_type type, uint64_t start,
	     uint64_t end);

/* the granted locks of (@res, @space), merged per owner (owner = key) */
void m_holders(const struct m_model *m, int res, enum dl_space space,
	       struct dl_range_set *out);
bool m_waiting(const struct m_model *m, uint64_t wait_id);
bool m_owner_waits(const struct m_model *m, uint64_t key);
/* the grants since the last call; *n set, valid until the next model
 * call */
const struct m_grant *m_take_grants(struct m_model *m, size_t *n);

#endif /* DL_REFMODEL_H */

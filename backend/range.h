/*
 * range.h - pure byte-range lock logic shared by every backend.
 *
 * A struct dl_range_set holds the granted locks of one lock space (flock or
 * POSIX) on one resource.  The rules are those of Linux fs/locks.c:
 *
 *  - ranges are [start, end] with an inclusive end; end == DL_RANGE_EOF
 *    means "to end of file, including bytes not yet written";
 *  - two locks conflict when their ranges overlap, their owners differ and
 *    at least one of them is a write lock;
 *  - the locks of one owner never overlap each other: a new lock replaces
 *    the owner's old locks on the bytes it covers (converting shared <->
 *    exclusive in place), merges with the owner's adjacent or overlapping
 *    locks of the same type, and an unlock of the middle of a lock leaves
 *    two pieces.
 *
 * This module does no I/O, takes no locks and knows nothing of FUSE or of
 * any backend: callers serialise access to a set themselves.  Every
 * function that can fail allocates before it changes anything, so a failed
 * call leaves the set exactly as it was.
 *
 * Invariant kept: set->v is sorted by (owner, start) and the locks of one
 * owner are disjoint and never adjacent-with-equal-type.
 */
#ifndef DL_RANGE_H
#define DL_RANGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DL_RANGE_EOF UINT64_MAX

enum dl_lock_type {
	DL_UNLCK = 0,
	DL_RDLCK = 1,
	DL_WRLCK = 2,
};

/* One granted lock, or (in a request) the lock asked for. */
struct dl_range_lock {
	uint64_t start;	  /* first byte */
	uint64_t end;	  /* last byte, inclusive; DL_RANGE_EOF = to EOF */
	uint64_t owner;	  /* opaque owner key, compared for equality only */
	uint64_t token;	  /* fencing token of the grant that made it */
	int64_t since_ms; /* wall-clock ms of that grant */
	uint32_t pid;	  /* pid reported by F_GETLK */
	enum dl_lock_type type; /* DL_RDLCK or DL_WRLCK (DL_UNLCK in a request) */
};

struct dl_range_set {
	struct dl_range_lock *v;
	size_t n;
	size_t cap;
};

/*
 * range_from_flock() - convert an absolute (l_start, l_len) pair, as the
 * kernel hands it to FUSE (l_len == 0: to EOF; negative l_len: the bytes
 * before l_start), to an inclusive [start, end] range.
 * Returns 0, or -EINVAL when the range is empty, negative or overflows.
 */
int range_from_flock(int64_t l_start, int64_t l_len, uint64_t *start,
		     uint64_t *end);

/*
 * range_to_flock() - the inverse: *l_len is 0 for a range to EOF.
 */
void range_to_flock(uint64_t start, uint64_t end, int64_t *l_start,
		    int64_t *l_len);

/* range_overlap() - true when [s1,e1] and [s2,e2] share a byte. */
static inline bool range_overlap(uint64_t s1, uint64_t e1, uint64_t s2,
				 uint64_t e2)
{
	return s1 <= e2 && s2 <= e1;
}

/*
 * range_conflicts() - true when granted lock @held blocks request @req
 * (overlap, different owners, at least one write lock).  A request of type
 * DL_UNLCK conflicts with nothing.
 */
bool range_conflicts(const struct dl_range_lock *held,
		     const struct dl_range_lock *req);

/*
 * range_set_find_conflict() - the conflicting lock with the lowest start
 * (ties: the first in set order), or NULL when @req can be granted.
 */
const struct dl_range_lock *
range_set_find_conflict(const struct dl_range_set *set,
			const struct dl_range_lock *req);

/*
 * range_set_apply() - apply a lock (DL_RDLCK/DL_WRLCK) or unlock (DL_UNLCK)
 * of @req->owner over [@req->start, @req->end], with POSIX merge, split and
 * convert.  Locks created or merged by a lock request take @req's token,
 * pid and since_ms; pieces left over from a split keep their own.
 * The caller has already checked for conflicts with other owners; this
 * function does not look at them.
 * Returns 0, -EINVAL (start > end or bad type) or -ENOMEM (set unchanged).
 */
int range_set_apply(struct dl_range_set *set, const struct dl_range_lock *req);

/*
 * range_set_remove_owner() - drop the locks of @owner whose token is at
 * most @max_token (DL_TOKEN_ALL: every lock of @owner).  Locks made or
 * merged by a newer grant survive: a release names the grants it
 * releases, so a late release cannot free a newer lock.
 * Returns the number of locks removed.
 */
#define DL_TOKEN_ALL UINT64_MAX
size_t range_set_remove_owner(struct dl_range_set *set, uint64_t owner,
			      uint64_t max_token);

/* range_set_owner_has() - true when @owner holds any lock in @set. */
bool range_set_owner_has(const struct dl_range_set *set, uint64_t owner);

/* range_set_free() - release the memory; the set is empty afterwards. */
void range_set_free(struct dl_range_set *set);

#endif /* DL_RANGE_H */

/*
 * range.c - POSIX byte-range lock rules, as in Linux fs/locks.c
 * (posix_lock_inode): conflict test, merge, split and in-place conversion.
 *
 * Deliberately pure: no I/O, no threads, no FUSE, no backend.  The caller
 * serialises access to a set and checks other owners' conflicts first.
 *
 * Invariants kept on every return:
 *  - set->v[0..n) is sorted by (owner, start), so one owner's locks form a
 *    contiguous slice;
 *  - inside a slice the locks are disjoint, start <= end, type is DL_RDLCK
 *    or DL_WRLCK, and two neighbours of equal type are never adjacent (the
 *    merge is maximal);
 *  - a failing call has changed nothing: the only allocation happens
 *    before the first write.
 *
 * Arithmetic never computes end + 1 (end may be DL_RANGE_EOF = UINT64_MAX):
 * "a touches b on the right" is written b.start - 1 <= a.end, guarded by
 * start > 0, exactly as fs/locks.c does.
 */
#include "backend/range.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int range_from_flock(int64_t l_start, int64_t l_len, uint64_t *start,
		     uint64_t *end)
{
	uint64_t s, e;

	if (l_start < 0)
		return -EINVAL;
	if (l_len > 0) {
		/* l_start + l_len - 1 must fit in an off_t */
		if (l_len - 1 > INT64_MAX - l_start)
			return -EINVAL;
		s = (uint64_t)l_start;
		e = (uint64_t)l_start + (uint64_t)(l_len - 1);
	} else if (l_len < 0) {
		/* the -l_len bytes before l_start; l_start >= 0 so no overflow */
		if (l_start + l_len < 0)
			return -EINVAL;
		s = (uint64_t)(l_start + l_len);
		e = (uint64_t)l_start - 1;
	} else {
		s = (uint64_t)l_start;
		e = DL_RANGE_EOF;
	}
	/*
	 * As in the kernel, whose OFFSET_MAX is its "to EOF": no file has a
	 * byte past INT64_MAX, so a range reaching it is a range to EOF.
	 */
	if (e >= (uint64_t)INT64_MAX)
		e = DL_RANGE_EOF;
	*start = s;
	*end = e;
	return 0;
}

void range_to_flock(uint64_t start, uint64_t end, int64_t *l_start,
		    int64_t *l_len)
{
	/* offsets past INT64_MAX cannot be expressed in an off_t: clamp */
	*l_start = start > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)start;
	if (end >= (uint64_t)INT64_MAX)
		*l_len = 0;
	else
		*l_len = (int64_t)(end - start + 1);
}

bool range_conflicts(const struct dl_range_lock *held,
		     const struct dl_range_lock *req)
{
	if (req->type == DL_UNLCK || held->owner == req->owner)
		return false;
	if (held->type != DL_WRLCK && req->type != DL_WRLCK)
		return false;
	return range_overlap(held->start, held->end, req->start, req->end);
}

const struct dl_range_lock *
range_set_find_conflict(const struct dl_range_set *set,
			const struct dl_range_lock *req)
{
	const struct dl_range_lock *best = NULL;

	for (size_t i = 0; i < set->n; i++) {
		const struct dl_range_lock *l = &set->v[i];

		if (range_conflicts(l, req) &&
		    (!best || l->start < best->start))
			best = l;
	}
	return best;
}

/* First index in [0, n) whose owner is >= @owner (or > when @after). */
static size_t range_owner_bound(const struct dl_range_set *set, uint64_t owner,
				bool after)
{
	size_t lo = 0, hi = set->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t o = set->v[mid].owner;

		if (o < owner || (after && o == owner))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* True when @l lies wholly before [s, ...] without touching byte s - 1. */
static bool range_left_apart(const struct dl_range_lock *l, uint64_t s)
{
	return s > 0 && l->end < s - 1;
}

/* True when @l lies wholly after [..., e] without touching byte e + 1. */
static bool range_right_apart(const struct dl_range_lock *l, uint64_t e)
{
	return l->start > 0 && l->start - 1 > e;
}

/* Make room for @need locks in total; the contents are not touched. */
static int range_set_reserve(struct dl_range_set *set, size_t need)
{
	struct dl_range_lock *v;
	size_t cap;

	if (need <= set->cap)
		return 0;
	cap = set->cap ? set->cap : 8;
	while (cap < need) {
		if (cap > SIZE_MAX / 2 / sizeof(*v))
			return -ENOMEM;
		cap *= 2;
	}
	v = realloc(set->v, cap * sizeof(*v));
	if (!v)
		return -ENOMEM;
	set->v = v;
	set->cap = cap;
	return 0;
}

int range_set_apply(struct dl_range_set *set, const struct dl_range_lock *req)
{
	struct dl_range_lock out[3];
	size_t lo, hi, a, b, nout = 0;
	uint64_t s = req->start, e = req->end;
	struct dl_range_lock merged;
	bool lock;
	int ret;

	if (s > e)
		return -EINVAL;
	if (req->type != DL_UNLCK && req->type != DL_RDLCK &&
	    req->type != DL_WRLCK)
		return -EINVAL;
	lock = req->type != DL_UNLCK;

	/* the owner's slice, then the run [a, b) of its locks touching [s, e] */
	lo = range_owner_bound(set, req->owner, false);
	hi = range_owner_bound(set, req->owner, true);
	a = lo;
	b = hi;
	while (a < b) { /* ends increase along a slice: binary search */
		size_t mid = a + (b - a) / 2;

		if (range_left_apart(&set->v[mid], s))
			a = mid + 1;
		else
			b = mid;
	}
	for (b = a; b < hi && !range_right_apart(&set->v[b], e); b++)
		;

	/*
	 * Only the first and last lock of the run can stick out of [s, e]
	 * (those in between lie inside it).  A lock of the requested type is
	 * absorbed by the new lock; any other keeps its own part outside
	 * [s, e], with its own token, pid and since_ms.
	 */
	merged = *req;
	for (size_t i = a; i < b; i++) {
		const struct dl_range_lock *l = &set->v[i];

		if (lock && l->type == req->type) {
			if (l->start < merged.start)
				merged.start = l->start;
			if (l->end > merged.end)
				merged.end = l->end;
		} else if (i == a && l->start < s) {
			out[nout] = *l;
			if (out[nout].end > s - 1)
				out[nout].end = s - 1;
			nout++;
		}
	}
	if (lock)
		out[nout++] = merged;
	if (b > a) {
		const struct dl_range_lock *l = &set->v[b - 1];

		if (!(lock && l->type == req->type) && l->end > e) {
			out[nout] = *l;
			if (out[nout].start < e + 1)
				out[nout].start =
					e + 1; /* l->end > e: no overflow */
			nout++;
		}
	}

	/* allocate before mutating: a failure leaves the set as it was */
	if (nout > b - a) {
		ret = range_set_reserve(set, set->n + (nout - (b - a)));
		if (ret < 0)
			return ret;
	}
	if (nout != b - a)
		memmove(&set->v[a + nout], &set->v[b],
			(set->n - b) * sizeof(set->v[0]));
	if (nout)
		memcpy(&set->v[a], out, nout * sizeof(out[0]));
	set->n = set->n - (b - a) + nout;
	return 0;
}

size_t range_set_remove_owner(struct dl_range_set *set, uint64_t owner,
			      uint64_t max_token)
{
	size_t lo = range_owner_bound(set, owner, false);
	size_t hi = range_owner_bound(set, owner, true);
	size_t keep = lo;

	/* compact the owner's run, keeping the locks of newer grants */
	for (size_t i = lo; i < hi; i++)
		if (set->v[i].token > max_token)
			set->v[keep++] = set->v[i];
	if (keep < hi) {
		memmove(&set->v[keep], &set->v[hi],
			(set->n - hi) * sizeof(set->v[0]));
		set->n -= hi - keep;
	}
	return hi - keep;
}

bool range_set_owner_has(const struct dl_range_set *set, uint64_t owner)
{
	size_t lo = range_owner_bound(set, owner, false);

	return lo < set->n && set->v[lo].owner == owner;
}

void range_set_free(struct dl_range_set *set)
{
	free(set->v);
	set->v = NULL;
	set->n = 0;
	set->cap = 0;
}

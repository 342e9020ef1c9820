/*
 * fence.c - fencing writes (DESIGN §3): lost locks, the lease page, and
 * the checks a front-end makes before every write.
 *
 * Owns:
 *  - lost marks.  lm_cb_lost() is the backend's cb->lost: it marks the
 *    holds of (resource, space, owner) lost (hold.lost, lost_ms,
 *    lockmgr.nlost) and the open files they locked through (the sticky
 *    lockmgr_file.lost), then tells the front-end's lost hook.  A lost
 *    hold stays until its owner releases it (unlock of everything, close):
 *    meanwhile lockmgr_submit() refuses the owner's new requests on that
 *    object with -EIO, as NFS does, and a grant of a wait that raced with
 *    the loss keeps the hold lost;
 *  - the lease page: the struct dl_lease the backend keeps, in a sealed
 *    one-page memfd when possible (shared read-only with shim clients by
 *    fs/ctl/), else on the heap;
 *  - struct lockmgr_file's atomics.  lost is set (never cleared, but by
 *    lockmgr_file_init()) by lm_cb_lost() under lockmgr.mutex or by
 *    lockmgr_write_check() without it.  lease and nholds are written only
 *    under lockmgr.mutex (lm_file_note_grant() from hold_add(), and the
 *    hold bookkeeping of lockmgr.c) and read without it, nholds first:
 *    so a grant stores the lease before it counts the file as held;
 *  - lockmgr_write_check() and lockmgr_pid_check(): no round trip, no
 *    mutex while nothing is lost and the lease is trusted (a clock read
 *    and a few atomic loads); a scan of the holds under lockmgr.mutex
 *    otherwise.
 *
 * Does not: decide that a lock is lost (the backend does, by its lease or
 * an administrator's break), release a lost lock, or fence the writes of
 * shim clients (fs/ctl/fence.c does, from the lost hook, with its fence pages).
 *
 * Threads: lm_cb_lost() runs on a backend thread (redis watchdog or
 * subscriber, zk worker) or on the thread of another backend call (a
 * lock() or cancel() that finds the lease gone, a break_lock() on
 * "local:"), never with a backend lock held.  The checks run on FUSE
 * workers (passthrough.c) before each write-class request.  The lost hook
 * is set by the control socket's start and stop (main thread).
 *
 * Locking: lockmgr.mutex for the marks, dropped before the hook runs;
 * hook_mutex around the hook (and around lockmgr_set_lost_hook()), so the
 * hook may take its own front-end's mutex (ctlsock.qmutex) but must not
 * call back into the manager.  The two are never held together.
 */
#include "fs/lock/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "backend/util/clock.h"
#include "backend/util/log.h"

/* ---- lost locks ---------------------------------------------------------- */

void lm_cb_lost(void *ctx, const char *resource, enum dl_space space,
		uint64_t owner, int err)
{
	lm_metrics_lost(err == -ECONNABORTED ? LM_LOST_BROKEN
			: err == -ENOLCK     ? LM_LOST_LEASE
					     : LM_LOST_OTHER);
	lm_mark_lost(ctx, resource, space, owner, err);
}

void lm_mark_lost(struct lockmgr *lm, const char *resource, enum dl_space space,
		  uint64_t owner, int err)
{
	uint64_t objs[16];
	size_t nobjs = 0;

	pthread_mutex_lock(&lm->mutex);
	for (size_t b = 0; b < LM_BUCKETS; b++) {
		for (struct lm_obj *o = lm->objs[b]; o; o = o->next) {
			struct lm_hold *h;

			if (strcmp(o->resource, resource) != 0)
				continue;
			h = lm_hold_find(o, owner, space);
			if (!h || h->lost)
				continue;
			h->lost = true;
			h->lost_ms = dl_now_ms();
			lm->nlost++;
			for (unsigned i = 0; i < h->nfiles; i++)
				atomic_store(&h->files[i]->lost, true);
			/* one resource is bound to very few objects */
			if (nobjs < sizeof(objs) / sizeof(objs[0]))
				objs[nobjs++] = o->obj;
			dl_log(DL_LOG_WARNING,
			       "lock lost: %s %s owner=%" PRIx64 " pid %u: %s; "
			       "writes through its descriptors now fail with "
			       "EIO",
			       resource, lm_space_name(space), owner,
			       (unsigned)h->pid, strerror(-err));
		}
	}
	pthread_mutex_unlock(&lm->mutex);
	pthread_mutex_lock(&lm->hook_mutex);
	for (size_t i = 0; lm->lost_hook && i < nobjs; i++)
		lm->lost_hook(lm->lost_ctx, objs[i], space, owner);
	pthread_mutex_unlock(&lm->hook_mutex);
}

void lockmgr_set_lost_hook(struct lockmgr *lm, lockmgr_lost_fn fn, void *ctx)
{
	pthread_mutex_lock(&lm->hook_mutex);
	lm->lost_ctx = ctx;
	lm->lost_hook = fn;
	pthread_mutex_unlock(&lm->hook_mutex);
}

/* ---- fencing writes ------------------------------------------------------ */

/*
 * A lock granted under lease @lease is now held through @f: its writes are
 * fenced by that lease.  Of two leases the older one wins, so a file that
 * still holds a lock of a lease that ended stays fenced by it.
 */
void lm_file_note_grant(struct lockmgr_file *f, uint64_t lease, bool added)
{
	/* only writers under lockmgr.mutex: nothing changes between the
	 * loads and the stores below but lock-free readers' views */
	uint64_t cur = added && atomic_load(&f->nholds) == 0
			       ? 0
			       : atomic_load(&f->lease);

	if (!cur || lease < cur)
		atomic_store(&f->lease, lease);
	/* counted only once its lease is stored: lockmgr_write_check() must
	 * never see the file held with the lease of holds that are gone */
	if (added)
		atomic_fetch_add(&f->nholds, 1);
}

void lockmgr_file_init(struct lockmgr_file *file)
{
	atomic_init(&file->lost, false);
	atomic_init(&file->lease, 0);
	atomic_init(&file->nholds, 0);
}

/* lockmgr_pid_check() at time @now */
static int lm_pid_check(struct lockmgr *lm, uint32_t pid, int64_t now)
{
	uint64_t gen = atomic_load(&lm->lease->gen);
	bool trusted = dl_lease_trusted(lm->lease, gen, now);
	int ret = 0;

	if (!pid || (trusted && atomic_load(&lm->nlost) == 0))
		return 0;
	pthread_mutex_lock(&lm->mutex);
	for (size_t b = 0; b < LM_BUCKETS && !ret; b++)
		for (struct lm_obj *o = lm->objs[b]; o && !ret; o = o->next)
			for (struct lm_hold *h = o->holds; h; h = h->next)
				if (h->pid == pid && (h->lost || !trusted)) {
					ret = -EIO;
					break;
				}
	pthread_mutex_unlock(&lm->mutex);
	return ret;
}

int lockmgr_write_check(struct lockmgr *lm, struct lockmgr_file *file,
			uint32_t pid)
{
	int64_t now = dl_mono_ms();
	uint64_t lease;

	if (atomic_load(&file->lost))
		return -EIO;
	if (atomic_load(&file->nholds) == 0)
		return lm_pid_check(lm, pid, now);
	lease = atomic_load(&file->lease);
	if (dl_lease_trusted(lm->lease, lease, now))
		return lm_pid_check(lm, pid, now);
	/*
	 * The lease may already be gone (a freeze, a partition): another host
	 * can be granted the lock at any moment, whether or not a thread of
	 * ours has noticed.  Refuse, as the lost mark will once it is set.
	 */
	if (!atomic_exchange(&file->lost, true))
		dl_log(DL_LOG_WARNING,
		       "write refused: lease %" PRIu64 " of a lock held "
		       "through this file is no longer trusted",
		       lease);
	return -EIO;
}

int lockmgr_pid_check(struct lockmgr *lm, uint32_t pid)
{
	return lm_pid_check(lm, pid, dl_mono_ms());
}

/* ---- the lease page -------------------------------------------------------- */

const struct dl_lease *lockmgr_lease(struct lockmgr *lm)
{
	return lm->lease;
}

int lockmgr_lease_memfd(struct lockmgr *lm)
{
	return lm->lease_fd;
}

/* the lease fence lives in a page of its own, shareable with shim clients */
int lm_lease_create(struct lockmgr *lm)
{
	long pg = sysconf(_SC_PAGESIZE);
	void *m;
	int fd;

	lm->lease_fd = -1;
	fd = memfd_create("dlock-lease", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd >= 0 && ftruncate(fd, pg) == 0 &&
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) ==
		    0) {
		m = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, 0);
		if (m != MAP_FAILED) {
			lm->lease = m;
			lm->lease_fd = fd;
			goto init;
		}
	}
	if (fd >= 0)
		close(fd);
	lm->lease = calloc(1, sizeof(*lm->lease));
	if (!lm->lease)
		return -ENOMEM;
init:
	atomic_init(&lm->lease->gen, 0);
	atomic_init(&lm->lease->until_ms, INT64_MAX);
	return 0;
}

void lm_lease_destroy(struct lockmgr *lm)
{
	if (lm->lease_fd >= 0) {
		munmap(lm->lease, (size_t)sysconf(_SC_PAGESIZE));
		close(lm->lease_fd);
	} else {
		free(lm->lease);
	}
	lm->lease = NULL;
}

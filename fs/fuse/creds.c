/*
 * creds.c - acting as the caller.
 *
 * With allow_other and a root daemon, every operation that creates,
 * opens or changes a file runs with the caller's fsuid, fsgid and
 * supplementary groups (all per thread: raw syscalls, not glibc's
 * process-wide setgroups), so the backing filesystem checks permissions,
 * assigns owners and clears set-id bits as it would for the caller.  The
 * groups are read from /proc/PID/task/PID/status.  pt_change_enter() also
 * refuses a process that the lock manager fences (a lost lock, a lease
 * the clock no longer vouches for).  FUSE worker threads; no shared state.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "backend/util/log.h"
#include "fs/fuse/internal.h"

/* /proc/self/fd/N: how to reach an O_PATH descriptor by path */
void pt_proc_path(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

static int pt_setfsuid(uid_t uid)
{
#ifdef SYS_setfsuid32
	return (int)syscall(SYS_setfsuid32, uid);
#else
	return (int)syscall(SYS_setfsuid, uid);
#endif
}

static int pt_setfsgid(gid_t gid)
{
#ifdef SYS_setfsgid32
	return (int)syscall(SYS_setfsgid32, gid);
#else
	return (int)syscall(SYS_setfsgid, gid);
#endif
}

/* setgroups(2) of this thread only: glibc's applies to every thread */
static int pt_setgroups(int n, const gid_t *list)
{
	return (int)syscall(SYS_setgroups, (size_t)n, list);
}

/*
 * pt_caller_groups() - take on the supplementary groups of the caller of
 * @req in this thread (libfuse reads them from /proc/PID/task/PID/status).
 * A caller that is already gone, or whose groups cannot be read, gets
 * none: it must never keep ours.  Returns 0 or a negative errno.
 */
static int pt_caller_groups(fuse_req_t req)
{
	gid_t stack[64], *list = stack;
	int n, ret;

	n = fuse_req_getgroups(req, 64, stack);
	if (n > 64) {
		list = malloc((size_t)n * sizeof(*list));
		if (list)
			n = fuse_req_getgroups(req, n, list);
		else
			n = 0;
	}
	if (n < 0) {
		dl_log(DL_LOG_DEBUG, "groups of pid %d: %s",
		       (int)fuse_req_ctx(req)->pid, strerror(-n));
		n = 0;
	}
	ret = pt_setgroups(n, list) == -1 ? -errno : 0;
	if (list != stack)
		free(list);
	return ret;
}

/*
 * pt_creds_enter() - act as the caller of @req in this thread (allow_other
 * only): its supplementary groups first (setgroups needs CAP_SETGID, which
 * a non-zero fsuid does not take away, but better while we are still
 * root), then fsgid and fsuid.  setfsuid() reports no errors, so we read
 * the value back.  Returns 0 or -EPERM.
 */
int pt_creds_enter(fuse_req_t req, struct pt_creds *old)
{
	const struct pt_inode_table *t = dl_fs_of(req)->inodes;
	const struct fuse_ctx *ctx;
	int err;

	old->active = false;
	if (!t->switch_creds)
		return 0;
	ctx = fuse_req_ctx(req);
	old->t = t;
	err = pt_caller_groups(req);
	if (err < 0) {
		dl_log(DL_LOG_ERR, "setgroups for uid %u: %s",
		       (unsigned)ctx->uid, strerror(-err));
		pt_setgroups(t->ngroups, t->groups);
		return -EPERM;
	}
	old->gid = (gid_t)pt_setfsgid(ctx->gid);
	old->uid = (uid_t)pt_setfsuid(ctx->uid);
	old->active = true;
	if ((gid_t)pt_setfsgid((gid_t)-1) != ctx->gid ||
	    (uid_t)pt_setfsuid((uid_t)-1) != ctx->uid) {
		pt_setfsuid(old->uid);
		pt_setfsgid(old->gid);
		pt_setgroups(t->ngroups, t->groups);
		old->active = false;
		dl_log(DL_LOG_ERR, "setfsuid(%u)/setfsgid(%u) failed",
		       (unsigned)ctx->uid, (unsigned)ctx->gid);
		return -EPERM;
	}
	return 0;
}

/*
 * pt_change_enter() - the start of a request that changes the file system:
 * a process whose lock was lost, or that holds locks under a lease the
 * clock no longer vouches for, changes nothing on the mount (DESIGN §3;
 * as NFS fails a process's I/O after a lost lock), so that it cannot, for
 * example, delete the journal another host's SQLite now owns.  Then act as
 * the caller (pt_creds_enter).  Returns 0, -EIO or -EPERM.
 */
int pt_change_enter(fuse_req_t req, struct pt_creds *old)
{
	old->active = false;
	if (lockmgr_pid_check(dl_fs_of(req)->lm,
			      (uint32_t)fuse_req_ctx(req)->pid) < 0)
		return -EIO;
	return pt_creds_enter(req, old);
}

/* undo pt_creds_enter(); preserves errno */
void pt_creds_leave(const struct pt_creds *old)
{
	int saved = errno;

	if (old->active) {
		pt_setfsuid(old->uid);
		pt_setfsgid(old->gid);
		if (pt_setgroups(old->t->ngroups, old->t->groups) == -1)
			dl_log(DL_LOG_ERR, "setgroups back: %s",
			       strerror(errno));
	}
	errno = saved;
}

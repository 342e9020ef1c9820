/*
 * lockops.c - FUSE's lock operations in front of the lock manager.
 *
 * The kernel sends flock(2) as FUSE_SETLK with the flock flag (owner: the
 * open file description), fcntl/lockf/OFD locks as FUSE_SETLK(W) (owner:
 * the process's files table, or the open file description for OFD locks),
 * and never drops FUSE locks by itself: closing a descriptor arrives here
 * as flush (drop the closing process's POSIX locks), the last close of a
 * description as release (drop its flock and OFD locks).
 *
 * A blocking request keeps its fuse_req_t and is answered by the manager's
 * done() callback, from whichever thread learns of the grant: no worker
 * thread waits for a lock.  A signal to the waiting process arrives as a
 * FUSE interrupt and ends the wait with EINTR (the kernel restarts the
 * call when the handler asked for SA_RESTART, as it does on ext4).
 *
 * F_GETLK and the user.dlock.* xattrs ask the backend and, under the
 * cache, may first take the file back from another host (a second at
 * most): on a shared backend they run on a pool of their own (fs->slowq)
 * and answer from there, so they never hold a FUSE worker either.
 */
#include "fs/fuse/lockops.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include "backend/util/log.h"
#include "fs/grantq.h"
#include "fs/fuse/versions.h"
#include "fs/lock/lockmgr.h"
#include "fs/workq.h"

#define LK_SLOW_THREADS 4

#define XATTR_PREFIX "user.dlock."
/* the kernel's XATTR_SIZE_MAX: getxattr(2) asks for no more than this and
 * turns our ERANGE into E2BIG beyond it */
#define LO_XATTR_MAX 65536

static struct lockmgr *lm_of(fuse_req_t req)
{
	return dl_fs_of(req)->lm;
}

/* a lock request between its submission and its answer */
struct lk_call {
	struct grantq_item item; /* first: grantq hands it back */
	fuse_req_t req;
	bool coherent; /* the grant left the kernel's view valid */
};

static void lk_answer(struct grantq_item *item)
{
	struct lk_call *c = (struct lk_call *)item;

	fuse_reply_err(c->req, 0);
	free(c);
}

/*
 * The manager's done(), on whichever thread learns the outcome.  A grant
 * on a shared backend first drops what the kernel cached of the file
 * (another host may have written it while we did not hold the lock); that
 * runs on grantq's thread, never here (see grantq.h).
 */
static void lk_done(void *arg, int err)
{
	struct lk_call *c = arg;
	struct dl_fs *fs = dl_fs_of(c->req);

	if (err == 0 && fs->grantq && !c->coherent) {
		grantq_push(fs->grantq, &c->item);
		return;
	}
	fuse_reply_err(c->req, -err);
	free(c);
}

/* FUSE_INTERRUPT for a waiting request; @data is its wait id */
static void lk_interrupt(fuse_req_t req, void *data)
{
	lockmgr_interrupt(lm_of(req), (uint64_t)(uintptr_t)data);
}

/*
 * Before a release of an exclusive lock becomes visible to other hosts,
 * what was written reaches the backing store (DESIGN §3): close() of a
 * duplicate flushes as a close does (NFS writes back here), without
 * closing the descriptor.  Used before unlocks and downgrades; the close
 * paths flush in passthrough.c.
 */
static void lk_flush(struct dl_file *f)
{
	int fd = dup(f->fd);

	/* out of descriptors: write back and wait, without a new one */
	if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
		if (sync_file_range(f->fd, 0, 0,
				    SYNC_FILE_RANGE_WAIT_BEFORE |
					    SYNC_FILE_RANGE_WRITE |
					    SYNC_FILE_RANGE_WAIT_AFTER) == 0 ||
		    errno == EINVAL || errno == ESPIPE)
			return;
	} else if (fd >= 0 && close(fd) == 0) {
		return;
	}
	dl_log(DL_LOG_WARNING, "flush before unlock of inode %" PRIu64 ": %s",
	       (uint64_t)f->ino, strerror(errno));
}

static void lk_lock(fuse_req_t req, const struct lockmgr_req *r0)
{
	struct lockmgr *lm = lm_of(req);
	struct lk_call *c = calloc(1, sizeof(*c));
	struct lockmgr_req rq = *r0, *r = &rq;
	uint64_t id;

	if (!c) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	c->req = req;
	c->item.ino = (fuse_ino_t)r->obj;
	c->item.done = lk_answer;
	rq.coherent = &c->coherent;
	id = lockmgr_prepare(lm, r, lk_done, c);
	if (!id) {
		free(c);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* armed before submission, so no interrupt can fall in between */
	if (r->wait)
		fuse_req_interrupt_func(req, lk_interrupt,
					(void *)(uintptr_t)id);
	lockmgr_submit(lm, id);
}

static int type_from_flock(short l_type, enum dl_lock_type *t)
{
	switch (l_type) {
	case F_RDLCK:
		*t = DL_RDLCK;
		return 0;
	case F_WRLCK:
		*t = DL_WRLCK;
		return 0;
	case F_UNLCK:
		*t = DL_UNLCK;
		return 0;
	default:
		return -EINVAL;
	}
}

/* the type and byte range of @lock into @r; 0 or -EINVAL */
static int req_from_flock(const struct flock *lock, struct lockmgr_req *r)
{
	int ret = type_from_flock(lock->l_type, &r->type);

	return ret ? ret
		   : range_from_flock(lock->l_start, lock->l_len, &r->start,
				      &r->end);
}

static void lo_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock, int sleep)
{
	struct lockmgr_req r = {
		.obj = ino,
		.file = &dl_file_of(fi)->lk,
		.space = DL_SPACE_POSIX,
		.owner = fi->lock_owner,
		.pid = (uint32_t)lock->l_pid,
		.wait = sleep != 0,
	};
	int ret;

	ret = req_from_flock(lock, &r);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (r.type != DL_WRLCK) { /* an unlock or a downgrade */
		lk_flush(dl_file_of(fi));
		ver_session_end(dl_fs_of(req), ino, dl_file_of(fi));
	}
	if (r.type == DL_UNLCK) {
		fuse_reply_err(req, -lockmgr_unlock(lm_of(req), &r));
		return;
	}
	lk_lock(req, &r);
}

/*
 * The owner of a flock lock is the open file description.  The kernel names
 * it by the address of its struct file, which a new open can reuse while
 * the old one's FUSE_RELEASE is still queued (release is asynchronous), so
 * we name it by our own file handle's owner id instead (lockmgr_owner_new:
 * never reused), which lives until that release.
 */
static void lo_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     int op)
{
	struct lockmgr_req r = {
		.obj = ino,
		.file = &dl_file_of(fi)->lk,
		.space = DL_SPACE_FLOCK,
		.start = 0,
		.end = DL_RANGE_EOF,
		.owner = dl_file_of(fi)->owner,
		.pid = (uint32_t)fuse_req_ctx(req)->pid,
		.wait = !(op & LOCK_NB),
	};

	switch (op & ~LOCK_NB) {
	case LOCK_SH:
		lk_flush(dl_file_of(fi)); /* a downgrade, maybe */
		ver_session_end(dl_fs_of(req), ino, dl_file_of(fi));
		r.type = DL_RDLCK;
		break;
	case LOCK_EX:
		r.type = DL_WRLCK;
		break;
	case LOCK_UN:
		lk_flush(dl_file_of(fi));
		ver_session_end(dl_fs_of(req), ino, dl_file_of(fi));
		fuse_reply_err(req, -lockmgr_unlock(lm_of(req), &r));
		return;
	default:
		fuse_reply_err(req, EINVAL);
		return;
	}
	lk_lock(req, &r);
}

/* the lowest-starting lock of one owner of ours that overlaps a range */
struct lo_own {
	uint64_t owner, start, end;
	bool found;
	struct dl_lock_info info;
};

static int lo_own_one(const struct dl_lock_info *info, void *arg)
{
	struct lo_own *o = arg;

	if (info->mine && !info->waiting && info->space == DL_SPACE_POSIX &&
	    info->owner == o->owner && info->start <= o->end &&
	    o->start <= info->end &&
	    (!o->found || info->start < o->info.start)) {
		o->info = *info;
		o->info.resource = NULL; /* valid during the callback only */
		o->found = true;
	}
	return 0;
}

/*
 * F_OFD_GETLK with l_type F_UNLCK (Linux >= 6.7; plain F_GETLK refuses it
 * with EINVAL before it reaches us): "which lock does this open file
 * description itself hold in the range?", answered with the lock (the
 * first by start, as the kernel's list order gives it) or F_UNLCK.  The
 * kernel names the description by fi->lock_owner, as for its OFD locks.
 * The resource is the file's current name: a file renamed while locked
 * answers F_UNLCK (its locks live under the old name).  0: none, 1: @info
 * filled, or a negative errno.
 */
static int lo_getlk_own(struct dl_fs *fs, fuse_ino_t ino,
			const struct lockmgr_req *r, struct dl_lock_info *info)
{
	struct lo_own o = { .owner = r->owner,
			    .start = r->start,
			    .end = r->end };
	char *resource;
	int ret;

	ret = dl_fs_resource(fs, ino, &resource);
	if (ret < 0)
		return ret;
	ret = lockmgr_list(fs->lm, resource, lo_own_one, &o);
	free(resource);
	if (ret < 0)
		return ret;
	if (!o.found)
		return 0;
	*info = o.info;
	return 1;
}

/* F_GETLK of @r (parsed from @lock), answered */
static void getlk_answer(fuse_req_t req, fuse_ino_t ino,
			 const struct lockmgr_req *r, struct flock *lock)
{
	struct dl_lock_info info;
	int ret = r->type == DL_UNLCK
			  ? lo_getlk_own(dl_fs_of(req), ino, r, &info)
			  : lockmgr_getlk(lm_of(req), r, &info);

	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (ret == 0) {
		lock->l_type = F_UNLCK;
	} else {
		int64_t start, len;

		range_to_flock(info.start, info.end, &start, &len);
		lock->l_type = info.type == DL_WRLCK ? F_WRLCK : F_RDLCK;
		lock->l_whence = SEEK_SET;
		lock->l_start = start;
		lock->l_len = len;
		lock->l_pid = (pid_t)info.pid;
	}
	fuse_reply_lock(req, lock);
}

/* a request answered on fs->slowq */
struct lk_slow {
	struct workq_item item;
	fuse_req_t req;
	fuse_ino_t ino;
	struct lockmgr_req r; /* F_GETLK */
	struct flock lock;
	size_t size; /* getxattr: the caller's buffer */
	char attr[]; /* getxattr: the name after "user.dlock." */
};

static void getlk_run(struct workq_item *it)
{
	struct lk_slow *s = (struct lk_slow *)it;

	getlk_answer(s->req, s->ino, &s->r, &s->lock);
	free(s);
}

static void lo_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		     struct flock *lock)
{
	struct dl_fs *fs = dl_fs_of(req);
	struct lockmgr_req r = {
		.obj = ino,
		.space = DL_SPACE_POSIX,
		.owner = fi->lock_owner,
		.pid = (uint32_t)lock->l_pid,
	};
	struct lk_slow *s;
	int ret;

	ret = req_from_flock(lock, &r);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (!fs->slowq) {
		getlk_answer(req, ino, &r, lock);
		return;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	*s = (struct lk_slow){ .item.run = getlk_run,
			       .req = req,
			       .ino = ino,
			       .r = r,
			       .lock = *lock };
	workq_push(fs->slowq, &s->item);
}

void lockops_fill(struct fuse_lowlevel_ops *ops)
{
	ops->setlk = lo_setlk;
	ops->getlk = lo_getlk;
	ops->flock = lo_flock;
}

void lockops_flush(struct dl_fs *fs, fuse_ino_t ino, struct dl_file *f,
		   uint64_t lock_owner)
{
	lockmgr_release_owner(fs->lm, ino, DL_SPACE_POSIX, lock_owner);
}

void lockops_release(struct dl_fs *fs, fuse_ino_t ino, struct dl_file *f,
		     const struct fuse_file_info *fi)
{
	lockmgr_release_file(fs->lm, ino, &f->lk);
}

bool lockops_is_virtual_xattr(const char *name)
{
	return strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) == 0;
}

/*
 * lo_xattr_fit() - make the text of a list xattr fit in one xattr value
 * (64 KiB; more fails with E2BIG in getxattr(2)): keep whole lines from the
 * start and end with a line "… N more" (dlockctl locks shows them all).
 * Returns the new length of @text.
 */
static size_t lo_xattr_fit(char *text)
{
	/* "… " + 20 digits + " more\n", with room to spare */
	const size_t reserve = 40;
	size_t len = strlen(text), keep = 0, more = 0;
	char *p;

	if (len <= LO_XATTR_MAX)
		return len;
	for (p = text; *p;) {
		char *nl = strchr(p, '\n');
		size_t end = nl ? (size_t)(nl - text) + 1 : len;

		if (end + reserve > LO_XATTR_MAX)
			break;
		keep = end;
		p = text + end;
	}
	for (p = text + keep; *p; p++)
		more += *p == '\n';
	if (len && text[len - 1] != '\n')
		more++;
	return keep + (size_t)sprintf(text + keep, "\u2026 %zu more\n", more);
}

/* the value of user.dlock.@attr, answered */
static void xattr_answer(fuse_req_t req, fuse_ino_t ino, const char *attr,
			 size_t size)
{
	struct dl_fs *fs = dl_fs_of(req);
	char *text = NULL;
	size_t len;
	int ret;

	if (strcmp(attr, "locks") == 0 || strcmp(attr, "waiters") == 0) {
		ret = lockmgr_describe(fs->lm, ino, attr[0] == 'w', &text);
	} else if (strcmp(attr, "token") == 0) {
		uint64_t token;

		ret = lockmgr_token(fs->lm, ino,
				    (uint32_t)fuse_req_ctx(req)->pid, &token);
		if (ret == 0 && asprintf(&text, "%" PRIu64, token) < 0)
			ret = -ENOMEM;
	} else if (strcmp(attr, "status") == 0 && ino == FUSE_ROOT_ID) {
		ret = lockmgr_status(fs->lm, fs->backend_redacted, &text);
	} else {
		ret = ver_getxattr(fs, ino, attr, &text);
	}
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	len = lo_xattr_fit(text);
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, text, len);
	free(text);
}

static void xattr_run(struct workq_item *it)
{
	struct lk_slow *s = (struct lk_slow *)it;

	xattr_answer(s->req, s->ino, s->attr, s->size);
	free(s);
}

void lockops_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		      size_t size)
{
	struct dl_fs *fs = dl_fs_of(req);
	const char *attr = name + strlen(XATTR_PREFIX);
	size_t n = strlen(attr) + 1;
	struct lk_slow *s;

	if (!fs->slowq) {
		xattr_answer(req, ino, attr, size);
		return;
	}
	s = calloc(1, sizeof(*s) + n);
	if (!s) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	s->item.run = xattr_run;
	s->req = req;
	s->ino = ino;
	s->size = size;
	memcpy(s->attr, attr, n);
	workq_push(fs->slowq, &s->item);
}

static int lockops_name(void *ctx, uint64_t obj, char **out)
{
	return dl_fs_resource(ctx, (fuse_ino_t)obj, out);
}

int lockops_init(struct dl_fs *fs, char *err, size_t errlen)
{
	struct lockmgr_conf conf = {
		.backend = {
			.uri = fs->opt.backend,
			.host_id = fs->opt.host_id,
			.config = &fs->config,
			.cache = fs->opt.cache,
			.cache_idle_ms = fs->opt.cache_idle_ms,
		},
		.lock_timeout_s = fs->opt.lock_timeout,
		.name = lockops_name,
		.name_ctx = fs,
	};
	int ret;

	/* a fresh incarnation per start: a restarted daemon owns nothing */
	if (getrandom(&conf.backend.incarnation,
		      sizeof(conf.backend.incarnation), 0) < 0)
		conf.backend.incarnation = ((uint64_t)getpid() << 32) ^
					   (uint64_t)dl_now_ms();
	ret = lockmgr_create(&conf, &fs->lm, err, errlen);
	if (ret < 0)
		return ret;
	/*
	 * Another host may write the file while we do not hold its lock: on
	 * a shared backend every grant first drops the kernel's cached pages
	 * and attributes (no writeback cache is in use, so nothing dirty is
	 * lost).
	 */
	if (lockmgr_shared(fs->lm)) {
		ret = grantq_start(fs->se, &fs->grantq);
		if (ret == 0) {
			fs->slowq = calloc(1, sizeof(*fs->slowq));
			ret = !fs->slowq
				      ? -ENOMEM
				      : workq_start(fs->slowq, LK_SLOW_THREADS);
			if (ret < 0) {
				free(fs->slowq);
				fs->slowq = NULL;
				grantq_stop(fs->grantq);
				fs->grantq = NULL;
			}
		}
		if (ret < 0) {
			snprintf(err, errlen, "cannot start a thread: %s",
				 strerror(-ret));
			lockmgr_destroy(fs->lm);
			fs->lm = NULL;
			return ret;
		}
	}
	ret = ver_init(fs);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
			 strerror(-ret));
		lockops_destroy(fs);
		return ret;
	}
	dl_log(DL_LOG_INFO, "host %s, backend %s, lock_timeout %us",
	       fs->opt.host_id, fs->backend_redacted, fs->opt.lock_timeout);
	return 0;
}

void lockops_destroy(struct dl_fs *fs)
{
	if (!fs->lm)
		return;
	if (fs->slowq) { /* what is queued is answered first */
		workq_stop(fs->slowq);
		free(fs->slowq);
		fs->slowq = NULL;
	}
	ver_stop(fs); /* replaces under way end first */
	lockmgr_destroy(fs->lm);
	ver_destroy(fs);
	fs->lm = NULL;
	if (fs->grantq) {
		grantq_stop(fs->grantq);
		fs->grantq = NULL;
	}
}

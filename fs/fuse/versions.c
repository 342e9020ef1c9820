/*
 * versions.c - file versions in the mount (see versions.h).
 *
 * A session's changes are marked in its open file (dl_file.wrote, set by
 * passthrough.c on every change) and published by one bump when the
 * session ends, before the close or unlock that ends it is answered: a
 * host that takes the lock next, or reads the version after the close,
 * sees the new number.  A bump that fails leaves the mark, so the next end
 * of a session tries again, and the close reports EIO.
 *
 * A replace (setxattr user.dlock.replace on the new file) takes two
 * exclusive whole-file locks on the target, flock's then POSIX's, as an
 * owner of its own on an object of its own (VER_OBJ_TAG): no FUSE worker
 * waits for them, a signal to the caller interrupts the wait.  Once both
 * are granted, a thread of ours (never a backend thread: a ZooKeeper
 * completion must not wait on ZooKeeper) compares the version, renames
 * in the backing directory, bumps, drops the locks and answers.
 *
 * Locking: none of its own; the open file's mark is an atomic, a replace
 * call is owned by whichever single step runs it.
 */
#include "fs/fuse/versions.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/util/log.h"
#include "fs/fuse/internal.h"
#include "fs/naming.h"
#include "fs/workq.h"

/* the objects of replaces: FUSE inode numbers are user-space addresses
 * (below 2^47), the control socket's objects have bit 63 (CTL_OBJ_TAG) */
#define VER_OBJ_TAG (1ULL << 62)
#define VER_THREADS 2

struct ver_state {
	struct workq wq;
	atomic_uint_fast64_t next_obj;
	atomic_bool stopping; /* ver_stop() began: no more pushes */
};

int ver_init(struct dl_fs *fs)
{
	struct ver_state *vs;
	int ret;

	fs->ver = NULL;
	if (!fs->opt.versions)
		return 0;
	vs = calloc(1, sizeof(*vs));
	if (!vs)
		return -ENOMEM;
	ret = workq_start(&vs->wq, VER_THREADS);
	if (ret < 0) {
		free(vs);
		return ret;
	}
	fs->ver = vs;
	return 0;
}

void ver_stop(struct dl_fs *fs)
{
	if (!fs->ver)
		return;
	atomic_store(&fs->ver->stopping, true);
	workq_stop(&fs->ver->wq);
}

void ver_destroy(struct dl_fs *fs)
{
	free(fs->ver);
	fs->ver = NULL;
}

/* "DIR/NAME", or NAME in the root; malloc'd or NULL */
static char *ver_join(const char *dir, const char *name)
{
	char *out;

	if (asprintf(&out, "%s%s%s", dir, *dir ? "/" : "", name) < 0)
		return NULL;
	return out;
}

static int ver_bump_resource(struct dl_fs *fs, const char *resource)
{
	struct dl_version v;

	/* a file unlinked before it was named has no name to version */
	if (strncmp(resource, "//", 2) == 0)
		return 0;
	return lockmgr_bump(fs->lm, resource, &v);
}

/* bump the name of @ino now; 0 or a negative errno (logged) */
static int ver_bump_of(struct dl_fs *fs, fuse_ino_t ino)
{
	char *name;
	int ret = dl_fs_resource(fs, ino, &name);

	if (ret == 0) {
		ret = ver_bump_resource(fs, name);
		free(name);
	}
	return ret;
}

/* the resource name of @child in the directory @dir; 0, -ENOTDIR, or a
 * negative errno */
static int ver_name_in(struct dl_fs *fs, fuse_ino_t dir, const char *child,
		       char **out)
{
	struct stat st;
	char *name;
	int ret;

	if (fstat(pt_fd(fs, dir), &st) == -1 || !S_ISDIR(st.st_mode))
		return -ENOTDIR;
	ret = dl_fs_resource(fs, dir, &name);
	if (ret < 0)
		return ret;
	*out = ver_join(name, child);
	free(name);
	return *out ? 0 : -ENOMEM;
}

int ver_session_end(struct dl_fs *fs, fuse_ino_t ino, struct dl_file *f)
{
	int ret;

	if (!fs->ver || !atomic_exchange(&f->wrote, false))
		return 0;
	ret = ver_bump_of(fs, ino);
	if (ret == 0 || ret == -EOPNOTSUPP || ret == -ESTALE)
		return 0;
	atomic_store(&f->wrote, true);
	return -EIO;
}

void ver_bump_ino(struct dl_fs *fs, fuse_ino_t ino)
{
	if (fs->ver)
		ver_bump_of(fs, ino);
}

void ver_bump_name(struct dl_fs *fs, fuse_ino_t parent, const char *name)
{
	char *path;

	if (!fs->ver || ver_name_in(fs, parent, name, &path) < 0)
		return;
	ver_bump_resource(fs, path);
	free(path);
}

/*
 * Is an exclusive lock held on @ino, by anyone, in either space?  A test
 * for a shared whole-file lock of an owner of nobody's (F_GETLK): no lock
 * is taken, no record written.  1, 0 or a negative errno.
 */
static int ver_writer(struct dl_fs *fs, fuse_ino_t ino)
{
	for (int s = DL_SPACE_FLOCK; s <= DL_SPACE_POSIX; s++) {
		struct lockmgr_req r = {
			.obj = ino,
			.space = (enum dl_space)s,
			.type = DL_RDLCK,
			.start = 0,
			.end = DL_RANGE_EOF,
			.owner = lockmgr_owner_new(fs->lm),
		};
		struct dl_lock_info info;
		int ret = lockmgr_getlk(fs->lm, &r, &info);

		if (ret != 0)
			return ret;
	}
	return 0;
}

/* "version:NAME" on a directory: NAME in it, which may not exist */
static const char *ver_child(const char *attr, const char *what)
{
	size_t len = strlen(what);
	const char *name = attr + len + 1;

	if (strncmp(attr, what, len) != 0 || attr[len] != ':' || !*name ||
	    strchr(name, '/') || strcmp(name, ".") == 0 ||
	    strcmp(name, "..") == 0)
		return NULL;
	return name;
}

int ver_getxattr(struct dl_fs *fs, fuse_ino_t ino, const char *attr,
		 char **text)
{
	const char *child = NULL;
	struct dl_version v;
	char *name;
	bool all;
	int ret;

	if (!fs->ver)
		return -ENODATA;
	if (strcmp(attr, "writer") == 0) {
		ret = ver_writer(fs, ino);
		if (ret < 0)
			return ret;
		return asprintf(text, "%d", ret) < 0 ? -ENOMEM : 0;
	}
	if (strcmp(attr, "version") == 0 || (child = ver_child(attr, "versio"
								     "n")))
		all = false;
	else if (strcmp(attr, "lastchange") == 0 ||
		 (child = ver_child(attr, "lastchange")))
		all = true;
	else
		return -ENODATA;
	ret = child ? ver_name_in(fs, ino, child, &name)
		    : dl_fs_resource(fs, ino, &name);
	if (ret == -ENOTDIR)
		return -ENODATA; /* NAME: only on a directory */
	if (ret < 0)
		return ret;
	ret = lockmgr_version(fs->lm, name, &v);
	free(name);
	if (ret < 0)
		return ret;
	if (!all)
		ret = asprintf(text, "%" PRIu64, v.version);
	else
		ret = asprintf(text, "%" PRIu64 " %s %" PRId64, v.version,
			       v.host[0] ? v.host : "-", v.changed_ms);
	return ret < 0 ? -ENOMEM : 0;
}

/* ---- replace -------------------------------------------------------- */

struct rp_call {
	struct workq_item item; /* first: the workq hands it back */
	fuse_req_t req;
	struct dl_fs *fs;
	fuse_ino_t ino; /* the new file */
	uint64_t if_version;
	char *target;
	uint64_t obj, owner;
	_Atomic uint64_t wait_id; /* the lock wait an interrupt ends */
	atomic_bool interrupted;
	enum dl_space space; /* the lock being taken */
};

/*
 * A path relative to the mount root: not empty, no leading or doubled
 * '/', no "." or ".." component, no trailing '/'.
 */
static bool rp_path_ok(const char *p)
{
	if (!*p || *p == '/')
		return false;
	for (const char *c = p; *c;) {
		size_t len = strcspn(c, "/");

		if (len == 0 || (len == 1 && c[0] == '.') ||
		    (len == 2 && c[0] == '.' && c[1] == '.'))
			return false;
		c += len;
		if (*c == '/' && !*++c)
			return false;
	}
	return true;
}

/* "N TARGET": N decimal without sign, then one space; 0 or -EINVAL */
static int rp_parse(const char *value, size_t size, uint64_t *n, char **target)
{
	uint64_t v = 0;
	size_t i = 0;

	if (size == 0 || memchr(value, '\0', size))
		return -EINVAL;
	for (; i < size && value[i] >= '0' && value[i] <= '9'; i++) {
		unsigned d = (unsigned)(value[i] - '0');

		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	if (i == 0 || i >= size || value[i] != ' ')
		return -EINVAL;
	i++;
	*target = strndup(value + i, size - i);
	if (!*target)
		return -ENOMEM;
	if (!rp_path_ok(*target) || strlen(*target) >= PATH_MAX) {
		free(*target);
		*target = NULL;
		return -EINVAL;
	}
	*n = v;
	return 0;
}

/* set while rp_interrupt() runs on this thread (libfuse holds the
 * request's mutex around it) */
static _Thread_local bool rp_in_interrupt;

static void rp_finish(struct rp_call *c, int err)
{
	/*
	 * No interrupt callback may touch @c once it is freed: clearing the
	 * callback waits for one in progress (it holds the request's mutex),
	 * unless we are inside it, which runs no other at the same time.
	 * After the reply libfuse calls none.
	 */
	if (!rp_in_interrupt)
		fuse_req_interrupt_func(c->req, NULL, NULL);
	fuse_reply_err(c->req, -err);
	free(c->target);
	free(c);
}

static void rp_unlock(struct rp_call *c)
{
	lockmgr_release_owner(c->fs->lm, c->obj, DL_SPACE_POSIX, c->owner);
	lockmgr_release_owner(c->fs->lm, c->obj, DL_SPACE_FLOCK, c->owner);
}

static void rp_interrupt(fuse_req_t req, void *data)
{
	struct rp_call *c = data;

	(void)req;
	rp_in_interrupt = true;
	atomic_store(&c->interrupted, true);
	lockmgr_interrupt(c->fs->lm, atomic_load(&c->wait_id));
	rp_in_interrupt = false;
}

/*
 * The directory of @path (relative to the backing directory), opened for
 * reading, with the last component of @path in *base; -1 with errno.
 */
static int rp_dir_open(struct dl_fs *fs, const char *path, const char **base)
{
	const char *slash = strrchr(path, '/');
	char *dir;
	int dfd;

	*base = slash ? slash + 1 : path;
	dir = slash ? strndup(path, (size_t)(slash - path)) : strdup(".");
	if (!dir)
		return -1;
	dfd = openat(fs->backing_fd, dir,
		     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	free(dir);
	return dfd;
}

/*
 * The rename changed the name @path behind the kernel's back: make the
 * change of its directory durable, and drop the kernel's entry for it when
 * the kernel knows the directory (on "local:" entries live a second).
 */
static void rp_publish(struct dl_fs *fs, const char *path)
{
	const char *base;
	fuse_ino_t parent;
	int dfd = rp_dir_open(fs, path, &base);

	if (dfd < 0 || fsync(dfd) == -1)
		dl_log(DL_LOG_WARNING,
		       "replace: fsync of the directory of %s: %s", path,
		       strerror(errno));
	if (dfd < 0)
		return;
	parent = pt_known(fs, dfd);
	if (parent)
		fuse_lowlevel_notify_inval_entry(fs->se, parent, base,
						 strlen(base));
	close(dfd);
}

/* fsync the file behind the O_PATH descriptor @fd; 0 or a negative errno */
static int rp_sync_file(int fd)
{
	char proc[64];
	int rfd, ret = 0;

	pt_proc_path(fd, proc, sizeof(proc));
	rfd = open(proc, O_RDONLY | O_CLOEXEC);
	if (rfd < 0)
		return -errno;
	if (fsync(rfd) == -1 && errno != EINVAL)
		ret = -errno;
	close(rfd);
	return ret;
}

/* under both locks: compare, rename, bump; 0 or a negative errno */
static int rp_apply(struct rp_call *c)
{
	struct dl_fs *fs = c->fs;
	int fd = pt_fd(fs, c->ino);
	struct dl_version v;
	struct stat a, b;
	struct pt_creds cr;
	char *src = NULL;
	int ret;

	ret = lockmgr_version(fs->lm, c->target, &v);
	if (ret < 0)
		return ret;
	if (v.version != c->if_version)
		return -ESTALE;
	ret = naming_of_fd(fd, fs->opt.backing, fs->backing_fd, &src);
	if (ret < 0)
		return ret == -ESTALE ? -ENOENT : ret;
	/* the new file must still be where its name says */
	if (strncmp(src, "//", 2) == 0 || fstat(fd, &a) == -1 ||
	    fstatat(fs->backing_fd, src, &b, AT_SYMLINK_NOFOLLOW) == -1 ||
	    a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		ret = -ENOENT;
		goto out;
	}
	ret = rp_sync_file(fd);
	if (ret < 0)
		goto out;
	ret = pt_change_enter(c->req, &cr);
	if (ret == 0 &&
	    renameat(fs->backing_fd, src, fs->backing_fd, c->target) == -1)
		ret = -errno;
	pt_creds_leave(&cr);
	if (ret < 0)
		goto out;
	rp_publish(fs, src);
	rp_publish(fs, c->target);
	/* the rename happened: a version that cannot be published is an
	 * error the caller must see (EIO), not a conflict */
	if (lockmgr_bump(fs->lm, c->target, &v) < 0)
		ret = -EIO;
	ver_bump_resource(fs, src);
	dl_log(DL_LOG_DEBUG, "replace %s: version %" PRIu64, c->target,
	       v.version);
out:
	free(src);
	return ret;
}

static void rp_run(struct workq_item *it)
{
	struct rp_call *c = (struct rp_call *)it;
	int ret = rp_apply(c);

	rp_unlock(c);
	rp_finish(c, ret);
}

static void rp_lock(struct rp_call *c, enum dl_space space);

/* the manager's done() of either lock */
static void rp_done(void *arg, int err)
{
	struct rp_call *c = arg;

	if (!err && atomic_load(&c->fs->ver->stopping))
		err = -ENOLCK;
	if (err) {
		rp_unlock(c);
		rp_finish(c, err);
	} else if (c->space == DL_SPACE_FLOCK) {
		rp_lock(c, DL_SPACE_POSIX);
	} else {
		c->item.run = rp_run;
		workq_push(&c->fs->ver->wq, &c->item);
	}
}

static void rp_lock(struct rp_call *c, enum dl_space space)
{
	struct lockmgr_req r = {
		.obj = c->obj,
		.space = space,
		.type = DL_WRLCK,
		.start = 0,
		.end = DL_RANGE_EOF,
		.owner = c->owner,
		.pid = (uint32_t)fuse_req_ctx(c->req)->pid,
		.wait = true,
		.resource = c->target,
	};
	uint64_t id;

	c->space = space;
	id = lockmgr_prepare(c->fs->lm, &r, rp_done, c);
	if (!id) {
		rp_unlock(c);
		rp_finish(c, -ENOMEM);
		return;
	}
	atomic_store(&c->wait_id, id);
	if (atomic_load(&c->interrupted))
		lockmgr_interrupt(c->fs->lm, id);
	lockmgr_submit(c->fs->lm, id);
}

void ver_replace(fuse_req_t req, fuse_ino_t ino, const char *value, size_t size)
{
	struct dl_fs *fs = dl_fs_of(req);
	struct rp_call *c;
	struct stat st;
	int ret;

	if (!fs->ver) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = rp_parse(value, size, &c->if_version, &c->target);
	if (ret == 0 &&
	    (fstat(pt_fd(fs, ino), &st) == -1 || !S_ISREG(st.st_mode)))
		ret = -EINVAL;
	if (ret < 0) {
		free(c->target);
		free(c);
		fuse_reply_err(req, -ret);
		return;
	}
	c->req = req;
	c->fs = fs;
	c->ino = ino;
	c->obj = VER_OBJ_TAG | atomic_fetch_add(&fs->ver->next_obj, 1);
	c->owner = lockmgr_owner_new(fs->lm);
	/* armed before the first wait: no interrupt falls in between */
	fuse_req_interrupt_func(req, rp_interrupt, c);
	rp_lock(c, DL_SPACE_FLOCK);
}

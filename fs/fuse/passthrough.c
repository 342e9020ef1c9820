/*
 * passthrough.c - the FUSE low-level passthrough over BACKING_DIR.
 *
 * Inodes are entries of the inode table (inode.c); the operations that
 * act as the caller go through creds.c.  Open files and directories carry a struct dl_file in fi->fh.  This file
 * knows nothing about locks: it calls the lockops_* hooks at flush and
 * release, refuses writes through a file whose lock was lost, and leaves
 * the "user.dlock.*" xattrs to lockops.c.
 *
 * It deliberately does not enable the writeback cache: a write must reach
 * the backing store before the lock that covers it can be released.
 *
 * With allow_other and a root daemon, every operation that creates,
 * opens or changes a file runs with the caller's fsuid, fsgid and
 * supplementary groups (all per thread: raw syscalls, not glibc's
 * process-wide setgroups), so the backing filesystem checks permissions,
 * assigns owners and clears set-id bits as it would for the caller.  A
 * write to a file with a set-id bit runs as the caller too, so that the
 * backing filesystem clears the bits by its rules (pt_is_killpriv).
 *
 * Descriptors: one O_PATH descriptor per inode the kernel knows (until its
 * forget), one per open file or directory; a root daemon raises its own
 * RLIMIT_NOFILE to fs.nr_open at start, and a shortage of its own is
 * answered ENFILE, never the caller's EMFILE.
 *
 * Invariants: an entry lives while its lookup count is non-zero (the root
 * never goes); the count and the hash chains are guarded by
 * pt_inode_table.lock, the descriptor and the key never change.
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

#include "backend/backend.h"
#include "backend/util/log.h"
#include "fs/fuse/internal.h"
#include "fs/fuse/lockops.h"
#include "fs/fuse/versions.h"

static struct dl_file *pt_file_new(struct dl_fs *fs, int fd, fuse_ino_t ino)
{
	struct dl_file *f = malloc(sizeof(*f));

	if (!f)
		return NULL;
	f->fd = fd;
	f->ino = ino;
	f->owner = lockmgr_owner_new(fs->lm);
	lockmgr_file_init(&f->lk);
	atomic_init(&f->wrote, false);
	return f;
}

static struct pt_dir *pt_dir_of(const struct fuse_file_info *fi)
{
	return (struct pt_dir *)(uintptr_t)fi->fh;
}

static void pt_init(void *userdata, struct fuse_conn_info *conn)
{
	/* writes must reach the backing store before a lock is released */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/*
	 * The kernel clears set-id bits on a write, truncate or chown: it
	 * sends us a chmod as the writer first (see pt_is_killpriv), and we
	 * leave the clearing to the backing filesystem, which does it under
	 * its own rules because those operations run as the caller.
	 */
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	/* fuse_ino_t values are addresses, not stable handles */
	conn->want &= ~FUSE_CAP_EXPORT_SUPPORT;
	/* FUSE_CAP_POSIX_LOCKS and FUSE_CAP_FLOCK_LOCKS stay as libfuse set
	 * them: on, because lockops_fill() provides the lock operations */
}

static void pt_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int err = pt_do_lookup(dl_fs_of(req), parent, name, &e);

	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_entry(req, &e);
}

static void pt_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	pt_forget_one(dl_fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void pt_forget_multi(fuse_req_t req, size_t count,
			    struct fuse_forget_data *forgets)
{
	struct dl_fs *fs = dl_fs_of(req);

	for (size_t i = 0; i < count; i++)
		pt_forget_one(fs, forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void pt_getattr(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct stat st;

	if (fstatat(pt_fd(dl_fs_of(req), ino), "", &st,
		    AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1) {
		fuse_reply_err(req, errno);
		return;
	}
	fuse_reply_attr(req, &st, dl_fs_of(req)->inodes->timeout);
}

/* the changes of setattr, in the order chmod, chown, truncate, utimens */
static int pt_do_setattr(struct dl_fs *fs, fuse_ino_t ino, int ifd,
			 const struct stat *attr, int valid,
			 struct fuse_file_info *fi)
{
	int fd = fi ? dl_file_of(fi)->fd : -1;
	char proc[64];

	/* a truncate through a locked file is a write: fenced */
	if ((valid & FUSE_SET_ATTR_SIZE) && fi &&
	    lockmgr_write_check(fs->lm, &dl_file_of(fi)->lk, 0) < 0)
		return -EIO;

	pt_proc_path(ifd, proc, sizeof(proc));
	if (valid & FUSE_SET_ATTR_MODE) {
		if ((fd != -1 ? fchmod(fd, attr->st_mode)
			      : chmod(proc, attr->st_mode)) == -1)
			return -errno;
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = valid & FUSE_SET_ATTR_UID ? attr->st_uid
						      : (uid_t)-1;
		gid_t gid = valid & FUSE_SET_ATTR_GID ? attr->st_gid
						      : (gid_t)-1;

		if (fchownat(ifd, "", uid, gid,
			     AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
			return -errno;
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		if ((fd != -1 ? ftruncate(fd, attr->st_size)
			      : truncate(proc, attr->st_size)) == -1)
			return -errno;
		/* a change: through a file it ends with the session, by
		 * path it is visible now */
		if (fi)
			ver_wrote(dl_file_of(fi));
		else
			ver_bump_ino(fs, ino);
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
		struct timespec tv[2] = {
			{ .tv_nsec = UTIME_OMIT },
			{ .tv_nsec = UTIME_OMIT },
		};

		if (valid & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (valid & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (valid & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		if ((fd != -1 ? futimens(fd, tv)
			      : utimensat(ifd, "", tv,
					  AT_EMPTY_PATH |
						  AT_SYMLINK_NOFOLLOW)) == -1)
			return -errno;
	}
	return 0;
}

/*
 * pt_is_killpriv() - is this chmod the kernel clearing set-id bits before a
 * write or truncate by someone who does not own the file?  It comes as a
 * chmod in the writer's name that only removes S_ISUID/S_ISGID, which the
 * writer could not do itself (EPERM, and the write failed with it).  We
 * let it through without a change: the write or truncate that follows
 * runs as the caller (pt_write_as_caller, pt_do_setattr), and the backing
 * filesystem clears the bits then by its own rules, as ext4 would for the
 * caller.  With default_permissions the kernel refuses every other chmod
 * by a non-owner before it reaches us; without it such a chmod changes
 * nothing.
 */
static bool pt_is_killpriv(fuse_req_t req, int ifd, const struct stat *attr,
			   int valid)
{
	const mode_t setid = S_ISUID | S_ISGID;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;

	if (!(valid & FUSE_SET_ATTR_MODE) ||
	    !dl_fs_of(req)->inodes->switch_creds || ctx->uid == 0 ||
	    fstat(ifd, &st) == -1 || ctx->uid == st.st_uid ||
	    !S_ISREG(st.st_mode))
		return false;
	return (attr->st_mode & 07777 & ~setid) ==
		       (st.st_mode & 07777 & ~setid) &&
	       (attr->st_mode & setid & ~st.st_mode) == 0 &&
	       (attr->st_mode & setid) != (st.st_mode & setid);
}

static void pt_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		       int valid, struct fuse_file_info *fi)
{
	int ifd = pt_fd(dl_fs_of(req), ino);
	struct pt_creds cr;
	int err;

	if (pt_is_killpriv(req, ifd, attr, valid))
		valid &= ~FUSE_SET_ATTR_MODE;
	err = pt_change_enter(req, &cr);
	if (!err)
		err = pt_do_setattr(dl_fs_of(req), ino, ifd, attr, valid, fi);
	pt_creds_leave(&cr);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	pt_getattr(req, ino, fi);
}

static void pt_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t n = readlinkat(pt_fd(dl_fs_of(req), ino), "", buf, sizeof(buf));

	if (n == -1) {
		fuse_reply_err(req, errno);
		return;
	}
	if ((size_t)n == sizeof(buf)) {
		fuse_reply_err(req, ENAMETOOLONG);
		return;
	}
	buf[n] = '\0';
	fuse_reply_readlink(req, buf);
}

enum pt_make_kind { PT_MKNOD, PT_MKDIR, PT_SYMLINK };

/* create @name in @parent as the caller, then answer with its entry */
static void pt_make(fuse_req_t req, fuse_ino_t parent, const char *name,
		    enum pt_make_kind kind, mode_t mode, dev_t rdev,
		    const char *link)
{
	struct dl_fs *fs = dl_fs_of(req);
	int dfd = pt_fd(fs, parent);
	struct fuse_entry_param e;
	struct pt_creds cr;
	int err, res = -1;

	err = pt_change_enter(req, &cr);
	if (!err) {
		switch (kind) {
		case PT_MKNOD:
			res = mknodat(dfd, name, mode, rdev);
			break;
		case PT_MKDIR:
			res = mkdirat(dfd, name, mode);
			break;
		case PT_SYMLINK:
			res = symlinkat(link, dfd, name);
			break;
		}
		err = res == -1 ? -errno : 0;
	}
	pt_creds_leave(&cr);
	if (!err)
		err = pt_do_lookup(fs, parent, name, &e);
	if (err)
		fuse_reply_err(req, -err);
	else
		fuse_reply_entry(req, &e);
}

static void pt_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, dev_t rdev)
{
	pt_make(req, parent, name, PT_MKNOD, mode, rdev, NULL);
}

static void pt_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode)
{
	pt_make(req, parent, name, PT_MKDIR, mode, 0, NULL);
}

static void pt_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		       const char *name)
{
	pt_make(req, parent, name, PT_SYMLINK, 0, 0, link);
}

static void pt_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		    const char *newname)
{
	struct dl_fs *fs = dl_fs_of(req);
	struct pt_inode *in = pt_inode(fs, ino);
	struct fuse_entry_param e;
	struct pt_creds cr;
	char proc[64];
	int err;

	memset(&e, 0, sizeof(e));
	e.attr_timeout = fs->inodes->timeout;
	e.entry_timeout = fs->inodes->timeout;
	pt_proc_path(in->fd, proc, sizeof(proc));

	/* linkat(AT_EMPTY_PATH) would need CAP_DAC_READ_SEARCH */
	err = pt_change_enter(req, &cr);
	if (!err && linkat(AT_FDCWD, proc, pt_fd(fs, newparent), newname,
			   AT_SYMLINK_FOLLOW) == -1)
		err = -errno;
	pt_creds_leave(&cr);
	if (!err && fstatat(in->fd, "", &e.attr,
			    AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == -1)
		err = -errno;
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	pthread_mutex_lock(&fs->inodes->lock);
	in->nlookup++;
	pthread_mutex_unlock(&fs->inodes->lock);
	e.ino = ino;
	fuse_reply_entry(req, &e);
}

static void pt_remove_name(fuse_req_t req, fuse_ino_t parent, const char *name,
			   int flags)
{
	struct pt_creds cr;
	int err;

	err = pt_change_enter(req, &cr);
	if (!err && unlinkat(pt_fd(dl_fs_of(req), parent), name, flags) == -1)
		err = -errno;
	pt_creds_leave(&cr);
	if (!err && !(flags & AT_REMOVEDIR))
		ver_bump_name(dl_fs_of(req), parent, name);
	fuse_reply_err(req, -err);
}

static void pt_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pt_remove_name(req, parent, name, 0);
}

static void pt_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	pt_remove_name(req, parent, name, AT_REMOVEDIR);
}

static void pt_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname,
		      unsigned int flags)
{
	struct dl_fs *fs = dl_fs_of(req);
	struct pt_creds cr;
	int err;

	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = pt_change_enter(req, &cr);
	if (!err && renameat2(pt_fd(fs, parent), name, pt_fd(fs, newparent),
			      newname, flags) == -1)
		err = -errno;
	pt_creds_leave(&cr);
	/* both names changed: one lost its file, one has another */
	if (!err) {
		ver_bump_name(fs, parent, name);
		ver_bump_name(fs, newparent, newname);
	}
	fuse_reply_err(req, -err);
}

static void pt_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct pt_dir *d = calloc(1, sizeof(*d));
	struct pt_creds cr;
	char proc[64];
	int err, fd = -1;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/*
	 * Through /proc/self/fd, not openat(fd, "."): resolving "." needs
	 * search permission on the directory, and open(2) of a directory
	 * needs only read permission (ls of a 0744 directory by others).
	 */
	pt_proc_path(pt_fd(dl_fs_of(req), ino), proc, sizeof(proc));
	err = pt_creds_enter(req, &cr);
	if (!err) {
		fd = open(proc, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd == -1)
			err = -pt_fd_errno(errno);
	}
	pt_creds_leave(&cr);
	if (err)
		goto out_free;
	d->dp = fdopendir(fd);
	if (!d->dp) {
		err = -errno;
		goto out_close;
	}
	d->f.fd = fd;
	d->f.ino = ino;
	d->f.owner = lockmgr_owner_new(dl_fs_of(req)->lm);
	lockmgr_file_init(&d->f.lk);
	fi->fh = (uintptr_t)&d->f;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* interrupted: the kernel will send no releasedir */
		closedir(d->dp);
		free(d);
	}
	return;

out_close:
	close(fd);
out_free:
	free(d);
	fuse_reply_err(req, -err);
}

static bool pt_is_dot(const char *name)
{
	return name[0] == '.' &&
	       (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

static void pt_do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi, bool plus)
{
	struct dl_fs *fs = dl_fs_of(req);
	struct pt_dir *d = pt_dir_of(fi);
	char *buf = calloc(1, size), *p;
	size_t rem = size;
	int err = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != d->offset) {
		seekdir(d->dp, off);
		d->entry = NULL;
		d->offset = off;
	}
	p = buf;
	for (;;) {
		struct fuse_entry_param e;
		const char *name;
		size_t entsize;
		off_t next;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno;
				break;
			}
		}
		next = d->entry->d_off;
		name = d->entry->d_name;
		memset(&e, 0, sizeof(e));
		/* ino 0 in readdirplus: a name without attributes */
		if (!plus || pt_is_dot(name) ||
		    pt_do_lookup(fs, ino, name, &e) != 0) {
			memset(&e, 0, sizeof(e));
			e.attr.st_ino = d->entry->d_ino;
			e.attr.st_mode = (mode_t)d->entry->d_type << 12;
		}
		if (plus)
			entsize = fuse_add_direntry_plus(req, p, rem, name, &e,
							 next);
		else
			entsize = fuse_add_direntry(req, p, rem, name, &e.attr,
						    next);
		if (entsize > rem) {
			if (e.ino)
				pt_forget_one(fs, e.ino, 1);
			break;
		}
		p += entsize;
		rem -= entsize;
		d->entry = NULL;
		d->offset = next;
	}
	/* an error after some entries: send those, the next call sees it */
	if (err && rem == size)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

static void pt_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	pt_do_readdir(req, ino, size, off, fi, false);
}

static void pt_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off, struct fuse_file_info *fi)
{
	pt_do_readdir(req, ino, size, off, fi, true);
}

static void pt_releasedir(fuse_req_t req, fuse_ino_t ino,
			  struct fuse_file_info *fi)
{
	struct pt_dir *d = pt_dir_of(fi);

	closedir(d->dp);
	free(d);
	fuse_reply_err(req, 0);
}

static void pt_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	int fd = dirfd(pt_dir_of(fi)->dp);
	int res = datasync ? fdatasync(fd) : fsync(fd);

	fuse_reply_err(req, res == -1 ? errno : 0);
}

/* hand @fd to the kernel as a new open file of @ino; replies */
static void pt_reply_open(fuse_req_t req, int fd, fuse_ino_t ino,
			  struct fuse_file_info *fi,
			  const struct fuse_entry_param *e, bool changed)
{
	struct dl_file *f = pt_file_new(dl_fs_of(req), fd, ino);
	int res;

	if (!f) {
		close(fd);
		if (e)
			pt_forget_one(dl_fs_of(req), e->ino, 1);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fi->fh = (uintptr_t)f;
	if (changed)
		ver_wrote(f); /* created or truncated */
	res = e ? fuse_reply_create(req, e, fi) : fuse_reply_open(req, fi);
	if (res == -ENOENT) {
		/* interrupted: the kernel will send no release */
		close(fd);
		free(f);
		if (e)
			pt_forget_one(dl_fs_of(req), e->ino, 1);
	}
}

static void pt_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode, struct fuse_file_info *fi)
{
	struct dl_fs *fs = dl_fs_of(req);
	struct fuse_entry_param e;
	struct pt_creds cr;
	int err, fd = -1;
	bool created = false;

	err = pt_change_enter(req, &cr);
	if (!err) {
		int flags = (fi->flags | O_CREAT | O_CLOEXEC) & ~O_NOFOLLOW;

		/* whether we create it decides whether its version moves */
		fd = openat(pt_fd(fs, parent), name, flags | O_EXCL, mode);
		created = fd != -1;
		if (fd == -1 && errno == EEXIST && !(flags & O_EXCL))
			fd = openat(pt_fd(fs, parent), name, flags, mode);
		if (fd == -1)
			err = -pt_fd_errno(errno);
	}
	pt_creds_leave(&cr);
	if (!err) {
		err = pt_do_lookup(fs, parent, name, &e);
		if (err)
			close(fd);
	}
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	pt_reply_open(req, fd, e.ino, fi, &e, created || (fi->flags & O_TRUNC));
}

static void pt_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pt_creds cr;
	char proc[64];
	int err, fd = -1;

	pt_proc_path(pt_fd(dl_fs_of(req), ino), proc, sizeof(proc));
	err = fi->flags & O_TRUNC ? pt_change_enter(req, &cr)
				  : pt_creds_enter(req, &cr);
	if (!err) {
		fd = open(proc,
			  (fi->flags | O_CLOEXEC) & ~(O_NOFOLLOW | O_CREAT));
		if (fd == -1)
			err = -pt_fd_errno(errno);
	}
	pt_creds_leave(&cr);
	if (err) {
		fuse_reply_err(req, -err);
		return;
	}
	pt_reply_open(req, fd, ino, fi, NULL, fi->flags & O_TRUNC);
}

static void pt_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = dl_file_of(fi)->fd;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

/* a write through @f: refused when the file's own lock or the calling
 * process's locks cannot be trusted (lockmgr_write_check, pt_change_enter) */
static bool pt_write_fenced(fuse_req_t req, struct dl_file *f)
{
	struct lockmgr *lm = dl_fs_of(req)->lm;

	return lockmgr_write_check(lm, &f->lk,
				   (uint32_t)fuse_req_ctx(req)->pid) < 0;
}

/*
 * pt_write_as_caller() - should a write to @fd run with the caller's
 * credentials?  Only when the file has a set-id bit, so that the backing
 * filesystem clears it exactly as it would for the caller (suid always,
 * sgid with group execute or when the caller is not in the file's group,
 * neither for a caller with CAP_FSETID); as root the bits would stay.  Any
 * other write runs as the daemon: the caller's access was checked at
 * open, as the kernel does.
 */
static bool pt_write_as_caller(fuse_req_t req, int fd)
{
	struct stat st;

	return dl_fs_of(req)->inodes->switch_creds && fstat(fd, &st) == 0 &&
	       (st.st_mode & (S_ISUID | S_ISGID)) && S_ISREG(st.st_mode);
}

static void pt_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in,
			 off_t off, struct fuse_file_info *fi)
{
	struct dl_file *f = dl_file_of(fi);
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	struct pt_creds cr = { .active = false };
	ssize_t res;

	/* as Linux NFS does: no write under a lock we no longer hold, nor
	 * under one whose lease the clock no longer vouches for */
	if (pt_write_fenced(req, f)) {
		fuse_reply_err(req, EIO);
		return;
	}
	if (pt_write_as_caller(req, f->fd)) {
		int err = pt_creds_enter(req, &cr);

		if (err) {
			fuse_reply_err(req, -err);
			return;
		}
	}
	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = f->fd;
	out.buf[0].pos = off;
	res = fuse_buf_copy(&out, in, 0);
	pt_creds_leave(&cr);
	if (res > 0)
		ver_wrote(f);
	if (res < 0)
		fuse_reply_err(req, (int)-res);
	else
		fuse_reply_write(req, (size_t)res);
}

/*
 * pt_flush_data() - what a close() of @fd would flush, without closing it:
 * close() of a duplicate runs the backing filesystem's flush (NFS writes
 * back and reports its errors here).  With no descriptor to spare we write
 * the dirty pages back and wait for them instead: the caller's close()
 * must not fail for our want of a descriptor.  Returns 0 or the errno of
 * the flush.
 */
static int pt_flush_data(int fd)
{
	int dupfd = dup(fd);

	if (dupfd != -1)
		return close(dupfd) == -1 && errno != EINTR ? errno : 0;
	if (errno != EMFILE && errno != ENFILE && errno != ENOMEM)
		return 0; /* EBADF cannot happen: fd is ours until release */
	if (sync_file_range(fd, 0, 0,
			    SYNC_FILE_RANGE_WAIT_BEFORE |
				    SYNC_FILE_RANGE_WRITE |
				    SYNC_FILE_RANGE_WAIT_AFTER) == -1 &&
	    (errno == EIO || errno == ENOSPC))
		return errno;
	return 0;
}

static void pt_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct dl_file *f = dl_file_of(fi);
	int err;

	/*
	 * The flush comes first: what we wrote must reach the backing store
	 * before another host can be granted the locks this close drops
	 * (DESIGN §3).
	 */
	err = pt_flush_data(f->fd);
	/* then the version, before the locks go (and the close returns) */
	if (ver_session_end(dl_fs_of(req), ino, f) < 0 && !err)
		err = EIO;
	lockops_flush(dl_fs_of(req), ino, f, fi->lock_owner);
	fuse_reply_err(req, err);
}

static void pt_release(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	struct dl_file *f = dl_file_of(fi);

	/* the close flushes (NFS) before the flock/OFD locks go */
	close(f->fd);
	ver_session_end(dl_fs_of(req), ino, f);
	lockops_release(dl_fs_of(req), ino, f, fi);
	free(f);
	fuse_reply_err(req, 0);
}

static void pt_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		     struct fuse_file_info *fi)
{
	int fd = dl_file_of(fi)->fd;
	int res = datasync ? fdatasync(fd) : fsync(fd);

	fuse_reply_err(req, res == -1 ? errno : 0);
}

static void pt_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs st;

	if (fstatvfs(pt_fd(dl_fs_of(req), ino), &st) == -1)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &st);
}

static void pt_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			 off_t length, struct fuse_file_info *fi)
{
	struct dl_file *f = dl_file_of(fi);
	struct pt_creds cr = { .active = false };
	int err = 0;

	if (pt_write_fenced(req, f)) {
		fuse_reply_err(req, EIO);
		return;
	}
	/* it clears set-id bits as a write does */
	if (pt_write_as_caller(req, f->fd))
		err = pt_creds_enter(req, &cr);
	if (!err && fallocate(f->fd, mode, offset, length) == -1)
		err = -errno;
	pt_creds_leave(&cr);
	if (!err)
		ver_wrote(f);
	fuse_reply_err(req, -err);
}

static void pt_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	off_t res = lseek(dl_file_of(fi)->fd, off, whence);

	if (res == -1)
		fuse_reply_err(req, errno);
	else
		fuse_reply_lseek(req, res);
}

static void pt_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct pt_creds cr;
	char proc[64];
	int err;

	pt_proc_path(pt_fd(dl_fs_of(req), ino), proc, sizeof(proc));
	err = pt_creds_enter(req, &cr);
	if (!err && faccessat(AT_FDCWD, proc, mask, AT_EACCESS) == -1)
		err = -errno;
	pt_creds_leave(&cr);
	fuse_reply_err(req, -err);
}

/*
 * Extended attributes: an O_PATH descriptor has no f*xattr(), so we go
 * through /proc/self/fd/N, which resolves to the inode itself.
 */
static void pt_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct pt_creds cr;
	char proc[64], *buf = NULL;
	ssize_t n = -1;
	int err;

	if (lockops_is_virtual_xattr(name)) {
		lockops_getxattr(req, ino, name, size);
		return;
	}
	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	pt_proc_path(pt_fd(dl_fs_of(req), ino), proc, sizeof(proc));
	err = pt_creds_enter(req, &cr);
	if (!err) {
		n = getxattr(proc, name, buf, size);
		if (n == -1)
			err = -errno;
	}
	pt_creds_leave(&cr);
	if (err)
		fuse_reply_err(req, -err);
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
	free(buf);
}

static void pt_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct pt_creds cr;
	char proc[64], *buf = NULL;
	ssize_t n = -1;
	int err;

	if (size) {
		buf = malloc(size);
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
	}
	pt_proc_path(pt_fd(dl_fs_of(req), ino), proc, sizeof(proc));
	err = pt_creds_enter(req, &cr);
	if (!err) {
		n = listxattr(proc, buf, size);
		if (n == -1)
			err = -errno;
	}
	pt_creds_leave(&cr);
	if (err)
		fuse_reply_err(req, -err);
	else if (size)
		fuse_reply_buf(req, buf, (size_t)n);
	else
		fuse_reply_xattr(req, (size_t)n);
	free(buf);
}

static void pt_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			const char *value, size_t size, int flags)
{
	struct pt_creds cr;
	char proc[64];
	int err;

	if (strcmp(name, "user.dlock.replace") == 0) {
		ver_replace(req, ino, value, size);
		return;
	}
	/* the lock xattrs are views, not data */
	if (lockops_is_virtual_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	pt_proc_path(pt_fd(dl_fs_of(req), ino), proc, sizeof(proc));
	err = pt_change_enter(req, &cr);
	if (!err && setxattr(proc, name, value, size, flags) == -1)
		err = -errno;
	pt_creds_leave(&cr);
	fuse_reply_err(req, -err);
}

static void pt_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct pt_creds cr;
	char proc[64];
	int err;

	if (lockops_is_virtual_xattr(name)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	pt_proc_path(pt_fd(dl_fs_of(req), ino), proc, sizeof(proc));
	err = pt_change_enter(req, &cr);
	if (!err && removexattr(proc, name) == -1)
		err = -errno;
	pt_creds_leave(&cr);
	fuse_reply_err(req, -err);
}

void dl_passthrough_ops(struct fuse_lowlevel_ops *ops)
{
	ops->init = pt_init;
	ops->lookup = pt_lookup;
	ops->forget = pt_forget;
	ops->forget_multi = pt_forget_multi;
	ops->getattr = pt_getattr;
	ops->setattr = pt_setattr;
	ops->readlink = pt_readlink;
	ops->mknod = pt_mknod;
	ops->mkdir = pt_mkdir;
	ops->symlink = pt_symlink;
	ops->link = pt_link;
	ops->unlink = pt_unlink;
	ops->rmdir = pt_rmdir;
	ops->rename = pt_rename;
	ops->opendir = pt_opendir;
	ops->readdir = pt_readdir;
	ops->readdirplus = pt_readdirplus;
	ops->releasedir = pt_releasedir;
	ops->fsyncdir = pt_fsyncdir;
	ops->create = pt_create;
	ops->open = pt_open;
	ops->read = pt_read;
	ops->write_buf = pt_write_buf;
	ops->flush = pt_flush;
	ops->release = pt_release;
	ops->fsync = pt_fsync;
	ops->statfs = pt_statfs;
	ops->fallocate = pt_fallocate;
	ops->lseek = pt_lseek;
	ops->access = pt_access;
	ops->setxattr = pt_setxattr;
	ops->getxattr = pt_getxattr;
	ops->listxattr = pt_listxattr;
	ops->removexattr = pt_removexattr;
}

/*
 * opcount.c - FUSE requests by opcode, for the metrics
 * (dlockfs_fuse_requests_total): dl_fuse_count_ops() puts a counting
 * wrapper in front of every operation the daemon implements.  A wrapper
 * costs one relaxed atomic add and one indirect call.  The wrappers follow
 * fuse_lowlevel.h's prototypes (FUSE_USE_VERSION 314), one per operation.
 */
#include <stdatomic.h>
#include <stddef.h>

#include "fs/fuse/internal.h"
#include "fs/lock/metrics.h"

enum {
	OP_LOOKUP,
	OP_FORGET,
	OP_FORGET_MULTI,
	OP_GETATTR,
	OP_SETATTR,
	OP_READLINK,
	OP_MKNOD,
	OP_MKDIR,
	OP_SYMLINK,
	OP_LINK,
	OP_UNLINK,
	OP_RMDIR,
	OP_RENAME,
	OP_OPENDIR,
	OP_READDIR,
	OP_READDIRPLUS,
	OP_RELEASEDIR,
	OP_FSYNCDIR,
	OP_CREATE,
	OP_OPEN,
	OP_READ,
	OP_WRITE_BUF,
	OP_FLUSH,
	OP_RELEASE,
	OP_FSYNC,
	OP_STATFS,
	OP_FALLOCATE,
	OP_LSEEK,
	OP_ACCESS,
	OP_SETXATTR,
	OP_GETXATTR,
	OP_LISTXATTR,
	OP_REMOVEXATTR,
	OP_GETLK,
	OP_SETLK,
	OP_FLOCK,
	OP_N
};

static const char *const op_names[OP_N] = {
	[OP_LOOKUP] = "lookup",
	[OP_FORGET] = "forget",
	[OP_FORGET_MULTI] = "forget_multi",
	[OP_GETATTR] = "getattr",
	[OP_SETATTR] = "setattr",
	[OP_READLINK] = "readlink",
	[OP_MKNOD] = "mknod",
	[OP_MKDIR] = "mkdir",
	[OP_SYMLINK] = "symlink",
	[OP_LINK] = "link",
	[OP_UNLINK] = "unlink",
	[OP_RMDIR] = "rmdir",
	[OP_RENAME] = "rename",
	[OP_OPENDIR] = "opendir",
	[OP_READDIR] = "readdir",
	[OP_READDIRPLUS] = "readdirplus",
	[OP_RELEASEDIR] = "releasedir",
	[OP_FSYNCDIR] = "fsyncdir",
	[OP_CREATE] = "create",
	[OP_OPEN] = "open",
	[OP_READ] = "read",
	[OP_WRITE_BUF] = "write_buf",
	[OP_FLUSH] = "flush",
	[OP_RELEASE] = "release",
	[OP_FSYNC] = "fsync",
	[OP_STATFS] = "statfs",
	[OP_FALLOCATE] = "fallocate",
	[OP_LSEEK] = "lseek",
	[OP_ACCESS] = "access",
	[OP_SETXATTR] = "setxattr",
	[OP_GETXATTR] = "getxattr",
	[OP_LISTXATTR] = "listxattr",
	[OP_REMOVEXATTR] = "removexattr",
	[OP_GETLK] = "getlk",
	[OP_SETLK] = "setlk",
	[OP_FLOCK] = "flock",
};

static _Atomic uint64_t op_counts[OP_N];
static struct fuse_lowlevel_ops orig;

static inline void op_count(unsigned op)
{
	atomic_fetch_add_explicit(&op_counts[op], 1, memory_order_relaxed);
}

static void w_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	op_count(OP_LOOKUP);
	orig.lookup(req, parent, name);
}

static void w_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	op_count(OP_FORGET);
	orig.forget(req, ino, nlookup);
}

static void w_forget_multi(fuse_req_t req, size_t count,
			   struct fuse_forget_data *forgets)
{
	op_count(OP_FORGET_MULTI);
	orig.forget_multi(req, count, forgets);
}

static void w_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	op_count(OP_GETATTR);
	orig.getattr(req, ino, fi);
}

static void w_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
		      int to_set, struct fuse_file_info *fi)
{
	op_count(OP_SETATTR);
	orig.setattr(req, ino, attr, to_set, fi);
}

static void w_readlink(fuse_req_t req, fuse_ino_t ino)
{
	op_count(OP_READLINK);
	orig.readlink(req, ino);
}

static void w_mknod(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode, dev_t rdev)
{
	op_count(OP_MKNOD);
	orig.mknod(req, parent, name, mode, rdev);
}

static void w_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		    mode_t mode)
{
	op_count(OP_MKDIR);
	orig.mkdir(req, parent, name, mode);
}

static void w_symlink(fuse_req_t req, const char *link, fuse_ino_t parent,
		      const char *name)
{
	op_count(OP_SYMLINK);
	orig.symlink(req, link, parent, name);
}

static void w_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent,
		   const char *newname)
{
	op_count(OP_LINK);
	orig.link(req, ino, newparent, newname);
}

static void w_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	op_count(OP_UNLINK);
	orig.unlink(req, parent, name);
}

static void w_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	op_count(OP_RMDIR);
	orig.rmdir(req, parent, name);
}

static void w_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		     fuse_ino_t newparent, const char *newname,
		     unsigned int flags)
{
	op_count(OP_RENAME);
	orig.rename(req, parent, name, newparent, newname, flags);
}

static void w_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	op_count(OP_OPENDIR);
	orig.opendir(req, ino, fi);
}

static void w_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	op_count(OP_READDIR);
	orig.readdir(req, ino, size, off, fi);
}

static void w_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, struct fuse_file_info *fi)
{
	op_count(OP_READDIRPLUS);
	orig.readdirplus(req, ino, size, off, fi);
}

static void w_releasedir(fuse_req_t req, fuse_ino_t ino,
			 struct fuse_file_info *fi)
{
	op_count(OP_RELEASEDIR);
	orig.releasedir(req, ino, fi);
}

static void w_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
		       struct fuse_file_info *fi)
{
	op_count(OP_FSYNCDIR);
	orig.fsyncdir(req, ino, datasync, fi);
}

static void w_create(fuse_req_t req, fuse_ino_t parent, const char *name,
		     mode_t mode, struct fuse_file_info *fi)
{
	op_count(OP_CREATE);
	orig.create(req, parent, name, mode, fi);
}

static void w_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	op_count(OP_OPEN);
	orig.open(req, ino, fi);
}

static void w_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	op_count(OP_READ);
	orig.read(req, ino, size, off, fi);
}

static void w_write_buf(fuse_req_t req, fuse_ino_t ino,
			struct fuse_bufvec *bufv, off_t off,
			struct fuse_file_info *fi)
{
	op_count(OP_WRITE_BUF);
	orig.write_buf(req, ino, bufv, off, fi);
}

static void w_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	op_count(OP_FLUSH);
	orig.flush(req, ino, fi);
}

static void w_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	op_count(OP_RELEASE);
	orig.release(req, ino, fi);
}

static void w_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi)
{
	op_count(OP_FSYNC);
	orig.fsync(req, ino, datasync, fi);
}

static void w_statfs(fuse_req_t req, fuse_ino_t ino)
{
	op_count(OP_STATFS);
	orig.statfs(req, ino);
}

static void w_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
			off_t length, struct fuse_file_info *fi)
{
	op_count(OP_FALLOCATE);
	orig.fallocate(req, ino, mode, offset, length, fi);
}

static void w_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		    struct fuse_file_info *fi)
{
	op_count(OP_LSEEK);
	orig.lseek(req, ino, off, whence, fi);
}

static void w_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	op_count(OP_ACCESS);
	orig.access(req, ino, mask);
}

static void w_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		       const char *value, size_t size, int flags)
{
	op_count(OP_SETXATTR);
	orig.setxattr(req, ino, name, value, size, flags);
}

static void w_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		       size_t size)
{
	op_count(OP_GETXATTR);
	orig.getxattr(req, ino, name, size);
}

static void w_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	op_count(OP_LISTXATTR);
	orig.listxattr(req, ino, size);
}

static void w_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	op_count(OP_REMOVEXATTR);
	orig.removexattr(req, ino, name);
}

static void w_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct flock *lock)
{
	op_count(OP_GETLK);
	orig.getlk(req, ino, fi, lock);
}

static void w_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    struct flock *lock, int sleep)
{
	op_count(OP_SETLK);
	orig.setlk(req, ino, fi, lock, sleep);
}

static void w_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
		    int op)
{
	op_count(OP_FLOCK);
	orig.flock(req, ino, fi, op);
}

void dl_fuse_count_ops(struct fuse_lowlevel_ops *ops)
{
	orig = *ops;
	if (ops->lookup)
		ops->lookup = w_lookup;
	if (ops->forget)
		ops->forget = w_forget;
	if (ops->forget_multi)
		ops->forget_multi = w_forget_multi;
	if (ops->getattr)
		ops->getattr = w_getattr;
	if (ops->setattr)
		ops->setattr = w_setattr;
	if (ops->readlink)
		ops->readlink = w_readlink;
	if (ops->mknod)
		ops->mknod = w_mknod;
	if (ops->mkdir)
		ops->mkdir = w_mkdir;
	if (ops->symlink)
		ops->symlink = w_symlink;
	if (ops->link)
		ops->link = w_link;
	if (ops->unlink)
		ops->unlink = w_unlink;
	if (ops->rmdir)
		ops->rmdir = w_rmdir;
	if (ops->rename)
		ops->rename = w_rename;
	if (ops->opendir)
		ops->opendir = w_opendir;
	if (ops->readdir)
		ops->readdir = w_readdir;
	if (ops->readdirplus)
		ops->readdirplus = w_readdirplus;
	if (ops->releasedir)
		ops->releasedir = w_releasedir;
	if (ops->fsyncdir)
		ops->fsyncdir = w_fsyncdir;
	if (ops->create)
		ops->create = w_create;
	if (ops->open)
		ops->open = w_open;
	if (ops->read)
		ops->read = w_read;
	if (ops->write_buf)
		ops->write_buf = w_write_buf;
	if (ops->flush)
		ops->flush = w_flush;
	if (ops->release)
		ops->release = w_release;
	if (ops->fsync)
		ops->fsync = w_fsync;
	if (ops->statfs)
		ops->statfs = w_statfs;
	if (ops->fallocate)
		ops->fallocate = w_fallocate;
	if (ops->lseek)
		ops->lseek = w_lseek;
	if (ops->access)
		ops->access = w_access;
	if (ops->setxattr)
		ops->setxattr = w_setxattr;
	if (ops->getxattr)
		ops->getxattr = w_getxattr;
	if (ops->listxattr)
		ops->listxattr = w_listxattr;
	if (ops->removexattr)
		ops->removexattr = w_removexattr;
	if (ops->getlk)
		ops->getlk = w_getlk;
	if (ops->setlk)
		ops->setlk = w_setlk;
	if (ops->flock)
		ops->flock = w_flock;
	lm_metrics_table("dlockfs_fuse_requests_total",
			 "FUSE requests by opcode.", "opcode", op_names,
			 op_counts, OP_N);
}

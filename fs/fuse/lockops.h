/*
 * lockops.h - the FUSE side of locking: flock/setlk/getlk handlers, the
 * release of locks on flush and release, and the inspection xattrs.
 * passthrough.c calls the hooks below; they never reply to the request
 * except lockops_getxattr(), which always does.
 */
#ifndef DL_LOCKOPS_H
#define DL_LOCKOPS_H

#include "fs/fuse/fs.h"

/* Start the lock manager and its backend (after the session exists). */
int lockops_init(struct dl_fs *fs, char *err, size_t errlen);
/* Release every lock of this daemon and stop the backend. */
void lockops_destroy(struct dl_fs *fs);

/* fill ops->flock, ops->setlk, ops->getlk */
void lockops_fill(struct fuse_lowlevel_ops *ops);

/* flush: as on a local filesystem, closing any descriptor of a file drops
 * the POSIX locks its process (@lock_owner) holds on the file. */
void lockops_flush(struct dl_fs *fs, fuse_ino_t ino, struct dl_file *f,
		   uint64_t lock_owner);
/* release: the last close of an open file description drops its flock
 * lock and its OFD locks.  Call after closing f->fd (which flushes it),
 * before freeing f. */
void lockops_release(struct dl_fs *fs, fuse_ino_t ino, struct dl_file *f,
		     const struct fuse_file_info *fi);

/* names "user.dlock.*" are ours: not stored, not listed, not settable */
bool lockops_is_virtual_xattr(const char *name);
/* answer getxattr of a virtual name (replies to @req) */
void lockops_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
		      size_t size);

#endif /* DL_LOCKOPS_H */

/*
 * versions.h - file versions in the mount: optimistic concurrency (README
 * "Optimistic updates").
 *
 * Every file name has a version in the store (dl_backend_ops.version),
 * cluster-wide, 0 until the first change.  A change through the mount
 * becomes visible, and bumps the version by one, when the writing session
 * ends: at the close or the unlock (or downgrade) through a descriptor
 * that wrote, truncated, fallocated, was opened with O_TRUNC or created
 * the file, whichever comes first; at once for a truncate by path, a
 * rename (both names) and an unlink.  No round trip on a read or a write.
 *
 * The xattrs: user.dlock.version (the number), user.dlock.lastchange
 * ("VERSION HOST MS"), and user.dlock.replace, set on a new file with the
 * value "N TARGET": under exclusive locks on TARGET in both lock spaces,
 * taken by the daemon, rename the new file over TARGET if TARGET's
 * version is still N (else ESTALE), and bump it.
 */
#ifndef DL_FUSE_VERSIONS_H
#define DL_FUSE_VERSIONS_H

#include <stdatomic.h>
#include <stdbool.h>

#include "fs/fuse/fs.h"

/*
 * ver_init() - start the threads that finish replaces; 0 or a negative
 * errno.  ver_stop() - finish the replaces under way (the lock manager
 * still lives); ver_destroy() - free what is left, once the lock manager
 * is gone (it answered the replaces still waiting for a lock).
 */
int ver_init(struct dl_fs *fs);
void ver_stop(struct dl_fs *fs);
void ver_destroy(struct dl_fs *fs);

/* a change through @f: its session ends with a bump */
static inline void ver_wrote(struct dl_file *f)
{
	atomic_store_explicit(&f->wrote, true, memory_order_relaxed);
}

/*
 * ver_session_end() - the session of @f (on @ino) ends: bump the file's
 * version if it changed since the last bump.  0, or -EIO when the bump
 * failed (then the next end of a session tries again).
 */
int ver_session_end(struct dl_fs *fs, fuse_ino_t ino, struct dl_file *f);

/* bump @ino's version now (a truncate by path); failures are logged */
void ver_bump_ino(struct dl_fs *fs, fuse_ino_t ino);

/* bump the version of the name @name in the directory @parent (unlink,
 * rename); failures are logged */
void ver_bump_name(struct dl_fs *fs, fuse_ino_t parent, const char *name);

/* user.dlock.version and user.dlock.lastchange of @ino (@attr without
 * the prefix): 0 with the malloc'd text, -ENODATA for another name, or a
 * negative errno */
int ver_getxattr(struct dl_fs *fs, fuse_ino_t ino, const char *attr,
		 char **text);

/* setxattr(user.dlock.replace) on @ino: replies, now or later */
void ver_replace(fuse_req_t req, fuse_ino_t ino, const char *value,
		 size_t size);

#endif /* DL_FUSE_VERSIONS_H */

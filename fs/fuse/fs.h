/*
 * fs.h - state shared by the parts of the dlockfs daemon.
 *
 * passthrough.c owns the inode table and the file handles; lockops.c and
 * fs/lock/ own everything about locks.  They meet here: struct dl_fs is
 * the per-mount state reached from fuse_req_userdata(), struct dl_file is
 * fi->fh of every open regular file.
 */
#ifndef DL_FS_H
#define DL_FS_H

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend/util/config.h"
#include "fs/lock/lockmgr.h"

struct lockmgr;
struct pt_inode_table;
struct grantq;
struct ver_state;

/* Command line and config-file options (see README "Options"). */
struct dl_options {
	char *backend;		  /* -o backend=URI, default "local:" */
	char *host_id;		  /* -o host_id=NAME, default the hostname */
	char *config;		  /* -o config=FILE */
	unsigned lock_timeout;	  /* -o lock_timeout=SECONDS, 0 = forever */
	char *backing;		  /* BACKING_DIR, made absolute */
	char *mountpoint;	  /* MOUNTPOINT, made absolute */
	bool foreground;	  /* -f */
	bool debug;		  /* -d */
	int log_level;		  /* -o log_level=: enum dl_log_level */
	bool allow_other;	  /* -o allow_other was given */
	enum dl_cache_mode cache; /* -o cache=on|off (issue 12) */
	unsigned cache_idle_ms;	  /* -o cache_idle_ms=N */
	bool versions;		  /* -o versions=on|off (issue 14) */
};

struct dl_fs {
	struct dl_options opt;
	struct dl_config config;
	int backing_fd; /* O_PATH | O_DIRECTORY of BACKING_DIR */
	struct fuse_session *se;
	struct pt_inode_table *inodes; /* passthrough.c's */
	struct lockmgr *lm;	       /* lockops.c's */
	struct grantq *grantq;	       /* lockops.c's; NULL on local: */
	struct workq *slowq;	       /* lockops.c's; NULL on local: */
	char *backend_redacted;	       /* backend URI without secrets */
	struct ver_state *ver;	       /* versions.c's; NULL: versions off */
};

/* fi->fh of an open regular file or directory. */
struct dl_file {
	int fd;
	fuse_ino_t ino;
	uint64_t owner; /* of its flock locks (lockmgr_owner_new) */
	/* the lock manager's fence of writes through this file */
	struct lockmgr_file lk;
	/* changed since its last bump (fs/fuse/versions.h) */
	atomic_bool wrote;
};

static inline struct dl_fs *dl_fs_of(fuse_req_t req)
{
	return (struct dl_fs *)fuse_req_userdata(req);
}

static inline struct dl_file *dl_file_of(const struct fuse_file_info *fi)
{
	return (struct dl_file *)(uintptr_t)fi->fh;
}

/*
 * passthrough.c
 * dl_passthrough_ops() - fill every operation except the lock ops.
 * dl_fs_resource() - the resource name of @ino: its path relative to
 *   BACKING_DIR without a leading '/', malloc'd in *out.  Returns 0 or a
 *   negative errno.
 * dl_fs_init()/dl_fs_destroy() - the inode table.
 */
void dl_passthrough_ops(struct fuse_lowlevel_ops *ops);
/* opcount.c: count every filled operation of @ops (the metrics) */
void dl_fuse_count_ops(struct fuse_lowlevel_ops *ops);
int dl_fs_resource(struct dl_fs *fs, fuse_ino_t ino, char **out);
int dl_fs_init(struct dl_fs *fs);
void dl_fs_destroy(struct dl_fs *fs);

#endif /* DL_FS_H */

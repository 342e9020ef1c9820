/*
 * internal.h - what the passthrough's files share (fs/fuse/): the inode
 * table, an open directory, the caller's credentials.  Not for use
 * outside fs/fuse/.
 *
 * Locking: pt_inode_table.lock guards the lookup counts and the hash
 * chains; an entry's descriptor and key never change.  struct pt_creds is
 * per thread (the switch is made with raw per-thread syscalls).
 */
#ifndef DL_FUSE_INTERNAL_H
#define DL_FUSE_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <errno.h>
#include <sys/types.h>

#include <dirent.h>

#include "fs/fuse/fs.h"

/*
 * attribute and entry cache timeouts, seconds.  With a shared backend other
 * hosts change the backing directory behind the kernel's back (NFS, one
 * directory mounted twice), so nothing is cached: SQLite, for one, must see
 * at once that another host deleted its journal.
 */
#define PT_TIMEOUT	  1.0
#define PT_TIMEOUT_SHARED 0.0
#define PT_MIN_BUCKETS	  1024

struct pt_inode {
	struct pt_inode *next; /* hash chain, guarded by table->lock */
	int fd;		       /* O_PATH | O_NOFOLLOW, never changes */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup; /* guarded by table->lock */
};

struct pt_inode_table {
	pthread_mutex_t lock; /* guards buckets, count, every nlookup */
	struct pt_inode **buckets;
	size_t nbuckets; /* a power of two */
	size_t count;
	struct pt_inode root; /* fd: fs->backing_fd, main.c closes it */
	bool switch_creds;    /* allow_other and we are root */
	double timeout;	      /* entry and attribute cache timeout */
	/* the daemon's own supplementary groups, put back after each caller's
	 * (read once at init, before any FUSE thread exists) */
	gid_t *groups;
	int ngroups;
};

/* an open directory: fi->fh points at .f, which comes first */
struct pt_dir {
	struct dl_file f;
	DIR *dp;
	struct dirent *entry; /* read but not yet sent */
	off_t offset;
};

struct pt_creds {
	bool active;
	uid_t uid;
	gid_t gid;
	const struct pt_inode_table *t; /* the groups to put back */
};

static inline struct pt_inode *pt_inode(struct dl_fs *fs, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return &fs->inodes->root;
	return (struct pt_inode *)(uintptr_t)ino;
}

static inline int pt_fd(struct dl_fs *fs, fuse_ino_t ino)
{
	return pt_inode(fs, ino)->fd;
}

/*
 * An errno of a syscall that made a descriptor in the daemon.  EMFILE there
 * is our table, not the caller's: the caller's own may have room, so it is
 * told ENFILE ("the system is out of them") instead.
 */
static inline int pt_fd_errno(int err)
{
	return err == EMFILE ? ENFILE : err;
}

void pt_forget_one(struct dl_fs *fs, fuse_ino_t ino, uint64_t n);
int pt_do_lookup(struct dl_fs *fs, fuse_ino_t parent, const char *name,
		 struct fuse_entry_param *e);
void pt_proc_path(int fd, char *buf, size_t len);
/* the inode number the kernel knows the file behind @fd by, or 0 when it
 * knows none (a hint: the kernel may forget it at any time) */
fuse_ino_t pt_known(struct dl_fs *fs, int fd);
int pt_creds_enter(fuse_req_t req, struct pt_creds *old);
int pt_change_enter(fuse_req_t req, struct pt_creds *old);
void pt_creds_leave(const struct pt_creds *old);

#endif /* DL_FUSE_INTERNAL_H */

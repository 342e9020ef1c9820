/*
 * inode.c - the passthrough's inode table, and the cluster-wide name of
 * an inode (dl_fs_resource, naming.h), which the lock ops need.
 *
 * Every inode the kernel knows is an O_PATH descriptor in a table keyed
 * by (st_dev, st_ino), with the kernel's lookup count; fuse_ino_t is the
 * address of the table entry (FUSE_ROOT_ID is the backing directory).  An
 * entry lives while its lookup count is non-zero (the root never goes);
 * the count and the hash chains are guarded by pt_inode_table.lock, the
 * descriptor and the key never change.
 *
 * The table is written here, not taken from uthash, because it must grow
 * under its own mutex without ever failing a lookup the kernel already
 * counted (a failed allocation leaves the old buckets in use), and its
 * entries' addresses are the kernel's inode numbers.
 *
 * Descriptors: one O_PATH descriptor per inode the kernel knows (until its
 * forget); a root daemon raises its own RLIMIT_NOFILE to fs.nr_open at
 * start, and a shortage of its own is answered ENFILE, never the
 * caller's EMFILE.
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
#include "fs/naming.h"

static fuse_ino_t pt_ino_of(struct pt_inode_table *t, struct pt_inode *in)
{
	return in == &t->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)in;
}

static size_t pt_hash(dev_t dev, ino_t ino, size_t nbuckets)
{
	uint64_t d = (uint64_t)dev;
	uint64_t h = (uint64_t)ino ^ (d << 32 | d >> 32);

	h *= 0x9e3779b97f4a7c15ULL;
	h ^= h >> 31;
	return (size_t)h & (nbuckets - 1);
}

/* caller holds t->lock */
static struct pt_inode *pt_find(struct pt_inode_table *t, dev_t dev, ino_t ino)
{
	struct pt_inode *in = t->buckets[pt_hash(dev, ino, t->nbuckets)];

	while (in && !(in->dev == dev && in->ino == ino))
		in = in->next;
	return in;
}

/* caller holds t->lock; a failed resize only makes chains longer */
static void pt_insert(struct pt_inode_table *t, struct pt_inode *in)
{
	size_t h;

	if (t->count >= t->nbuckets * 2) {
		size_t n = t->nbuckets * 2;
		struct pt_inode **b = calloc(n, sizeof(*b));

		if (b) {
			for (size_t i = 0; i < t->nbuckets; i++) {
				struct pt_inode *p = t->buckets[i], *next;

				for (; p; p = next) {
					next = p->next;
					h = pt_hash(p->dev, p->ino, n);
					p->next = b[h];
					b[h] = p;
				}
			}
			free(t->buckets);
			t->buckets = b;
			t->nbuckets = n;
		}
	}
	h = pt_hash(in->dev, in->ino, t->nbuckets);
	in->next = t->buckets[h];
	t->buckets[h] = in;
	t->count++;
}

/* caller holds t->lock */
static void pt_remove(struct pt_inode_table *t, struct pt_inode *in)
{
	struct pt_inode **pp =
		&t->buckets[pt_hash(in->dev, in->ino, t->nbuckets)];

	while (*pp != in)
		pp = &(*pp)->next;
	*pp = in->next;
	t->count--;
}

void pt_forget_one(struct dl_fs *fs, fuse_ino_t ino, uint64_t n)
{
	struct pt_inode_table *t = fs->inodes;
	struct pt_inode *in = pt_inode(fs, ino);
	bool gone = false;

	if (in == &t->root)
		return;
	pthread_mutex_lock(&t->lock);
	if (in->nlookup < n) {
		/* the kernel never forgets more than it looked up */
		dl_log(DL_LOG_ERR, "forget: ino %llu: %llu > nlookup %llu",
		       (unsigned long long)in->ino, (unsigned long long)n,
		       (unsigned long long)in->nlookup);
		n = in->nlookup;
	}
	in->nlookup -= n;
	if (in->nlookup == 0) {
		pt_remove(t, in);
		gone = true;
	}
	pthread_mutex_unlock(&t->lock);
	if (gone) {
		close(in->fd);
		free(in);
	}
}

/*
 * Every open file costs us a descriptor, and every inode the kernel keeps
 * looked up one more: a caller whose own limit is as high as ours could
 * otherwise run us out before itself.  A root daemon (CAP_SYS_RESOURCE)
 * takes the system's per-process ceiling, fs.nr_open; otherwise the soft
 * limit goes up to the hard one.
 */
static void pt_raise_nofile(void)
{
	struct rlimit rl;
	unsigned long nr_open = 0;
	FILE *f = fopen("/proc/sys/fs/nr_open", "re");

	if (f) {
		if (fscanf(f, "%lu", &nr_open) != 1)
			nr_open = 0;
		fclose(f);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (nr_open > rl.rlim_max) {
		struct rlimit up = { nr_open, nr_open };

		if (setrlimit(RLIMIT_NOFILE, &up) == 0) {
			dl_log(DL_LOG_DEBUG, "RLIMIT_NOFILE raised to %lu",
			       nr_open);
			return;
		}
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	dl_log(DL_LOG_DEBUG, "RLIMIT_NOFILE %llu",
	       (unsigned long long)rl.rlim_cur);
}

/* the daemon's own supplementary groups into @t; 0 or -errno */
static int pt_save_groups(struct pt_inode_table *t)
{
	int n = getgroups(0, NULL);

	if (n < 0)
		return -errno;
	t->groups = calloc((size_t)n + 1, sizeof(gid_t));
	if (!t->groups)
		return -ENOMEM;
	n = getgroups(n, t->groups);
	if (n < 0)
		return -errno;
	t->ngroups = n;
	return 0;
}

int dl_fs_init(struct dl_fs *fs)
{
	const struct dl_backend_ops *ops;
	struct pt_inode_table *t;
	struct stat st;
	int err;

	pt_raise_nofile();
	if (fstat(fs->backing_fd, &st) == -1)
		return -errno;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->nbuckets = PT_MIN_BUCKETS;
	t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
	if (!t->buckets) {
		err = -ENOMEM;
		goto out_free;
	}
	err = -pthread_mutex_init(&t->lock, NULL);
	if (err)
		goto out_free_buckets;
	t->root.fd = fs->backing_fd;
	t->root.dev = st.st_dev;
	t->root.ino = st.st_ino;
	t->root.nlookup = 2;
	pt_insert(t, &t->root);
	t->switch_creds = fs->opt.allow_other && geteuid() == 0;
	if (t->switch_creds) {
		err = pt_save_groups(t);
		if (err)
			goto out_mutex;
	}
	ops = dl_backend_find(fs->opt.backend);
	t->timeout = ops && ops->shared ? PT_TIMEOUT_SHARED : PT_TIMEOUT;
	fs->inodes = t;
	return 0;

out_mutex:
	free(t->groups);
	pthread_mutex_destroy(&t->lock);
out_free_buckets:
	free(t->buckets);
out_free:
	free(t);
	return err;
}

void dl_fs_destroy(struct dl_fs *fs)
{
	struct pt_inode_table *t = fs->inodes;

	if (!t)
		return;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct pt_inode *in = t->buckets[i], *next;

		for (; in; in = next) {
			next = in->next;
			if (in == &t->root)
				continue;
			close(in->fd);
			free(in);
		}
	}
	pthread_mutex_destroy(&t->lock);
	free(t->groups);
	free(t->buckets);
	free(t);
	fs->inodes = NULL;
}

/*
 * pt_do_lookup() - look @name up in @parent and take one lookup reference
 * on its entry.  Returns 0 with @e filled, or a negative errno.
 */
int pt_do_lookup(struct dl_fs *fs, fuse_ino_t parent, const char *name,
		 struct fuse_entry_param *e)
{
	struct pt_inode_table *t = fs->inodes;
	struct pt_inode *in, *fresh;
	int fd, err;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = t->timeout;
	e->entry_timeout = t->timeout;

	fd = openat(pt_fd(fs, parent), name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd == -1)
		return -pt_fd_errno(errno);
	if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) ==
	    -1) {
		err = -errno;
		goto out_close;
	}
	fresh = calloc(1, sizeof(*fresh));
	if (!fresh) {
		err = -ENOMEM;
		goto out_close;
	}

	pthread_mutex_lock(&t->lock);
	in = pt_find(t, e->attr.st_dev, e->attr.st_ino);
	if (in) {
		in->nlookup++;
	} else {
		in = fresh;
		in->fd = fd;
		in->dev = e->attr.st_dev;
		in->ino = e->attr.st_ino;
		in->nlookup = 1;
		pt_insert(t, in);
		fresh = NULL;
		fd = -1;
	}
	pthread_mutex_unlock(&t->lock);

	free(fresh);
	if (fd != -1)
		close(fd);
	e->ino = pt_ino_of(t, in);
	return 0;

out_close:
	close(fd);
	return err;
}

/* the resource name of an inode: fs/naming.h, through the backing store */
fuse_ino_t pt_known(struct dl_fs *fs, int fd)
{
	struct pt_inode_table *t = fs->inodes;
	struct pt_inode *in;
	fuse_ino_t ino = 0;
	struct stat st;

	if (fstat(fd, &st) == -1)
		return 0;
	pthread_mutex_lock(&t->lock);
	in = pt_find(t, st.st_dev, st.st_ino);
	if (in && in->nlookup)
		ino = pt_ino_of(t, in);
	pthread_mutex_unlock(&t->lock);
	return ino;
}

int dl_fs_resource(struct dl_fs *fs, fuse_ino_t ino, char **out)
{
	int err;

	if (ino == FUSE_ROOT_ID) {
		*out = strdup("");
		return *out ? 0 : -ENOMEM;
	}
	err = naming_of_fd(pt_fd(fs, ino), fs->opt.backing, fs->backing_fd,
			   out);
	if (err == -ESTALE)
		dl_log(DL_LOG_DEBUG, "resource: inode %ju is not under %s",
		       (uintmax_t)ino, fs->opt.backing);
	return err;
}

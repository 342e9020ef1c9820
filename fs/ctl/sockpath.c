/*
 * sockpath.c - the socket's path: refuse a directory another user could
 * change, never follow a symlink or delete what is not a socket, take the
 * PATH.lock flock that makes one daemon per socket, listen; and raise the
 * descriptor limit.  Runs at start (main thread) and from
 * ctlsock_check_path() before the mount.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "backend/util/log.h"
#include "backend/range.h"
#include "fs/naming.h"

#include "fs/ctl/internal.h"

/*
 * May the socket live in directory @dir (lstat'd as @st)?  It must be a
 * directory (or a symlink to one, the link itself ours) owned by root or
 * by us, and not writable by others unless sticky: else its owner, or
 * anyone who may write in it, could put their own socket where clients
 * look for ours.  0, or -EPERM with a reason in @err.
 */
static int ctl_dir_ok(const char *dir, struct stat *st, const char *path,
		      char *err, size_t errlen)
{
	uid_t me = geteuid();

	if (S_ISLNK(st->st_mode)) {
		if (st->st_uid != 0 && st->st_uid != me) {
			snprintf(err, errlen,
				 "socket %s: its directory %s is a symlink "
				 "owned by uid %u",
				 path, dir, (unsigned)st->st_uid);
			return -EPERM;
		}
		if (stat(dir, st) == -1) {
			snprintf(err, errlen, "socket %s: %s: %s", path, dir,
				 strerror(errno));
			return -errno;
		}
	}
	if (!S_ISDIR(st->st_mode)) {
		snprintf(err, errlen, "socket %s: %s is not a directory", path,
			 dir);
		return -ENOTDIR;
	}
	if (st->st_uid != 0 && st->st_uid != me) {
		snprintf(err, errlen,
			 "socket %s: its directory %s is owned by uid %u (want "
			 "root%s)",
			 path, dir, (unsigned)st->st_uid,
			 me ? " or the daemon's user" : "");
		return -EPERM;
	}
	if ((st->st_mode & (S_IWGRP | S_IWOTH)) && !(st->st_mode & S_ISVTX)) {
		snprintf(err, errlen,
			 "socket %s: its directory %s is group- or "
			 "world-writable without the sticky bit",
			 path, dir);
		return -EPERM;
	}
	return 0;
}

int ctlsock_check_path(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	char *dir, *lock, *slash;
	struct stat st;
	int ret = 0;

	if (path[0] != '/') {
		snprintf(err, errlen,
			 "bad socket '%s': want an absolute path or none",
			 path);
		return -EINVAL;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen,
			 "socket path %s is too long (%zu bytes, at most %zu)",
			 path, strlen(path), sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	/* the directory it goes in, or the nearest existing ancestor that
	 * the missing ones will be created in */
	dir = strdup(path);
	if (!dir) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (;;) {
		slash = strrchr(dir, '/');
		slash[slash == dir] = '\0'; /* "/x" -> "/" */
		if (lstat(dir, &st) == 0)
			break;
		if (errno != ENOENT) {
			ret = -errno;
			snprintf(err, errlen, "socket %s: %s: %s", path, dir,
				 strerror(errno));
			free(dir);
			return ret;
		}
	}
	ret = ctl_dir_ok(dir, &st, path, err, errlen);
	free(dir);
	if (ret < 0)
		return ret;
	/* never replace what is not a socket, never follow a symlink */
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		if (S_ISDIR(st.st_mode))
			snprintf(err, errlen, "socket %s is a directory", path);
		else
			snprintf(err, errlen,
				 "socket %s: a %s is there, not a socket; "
				 "refusing to replace it",
				 path,
				 S_ISLNK(st.st_mode)   ? "symlink"
				 : S_ISREG(st.st_mode) ? "regular file"
						       : "file");
		return -EEXIST;
	}
	if (asprintf(&lock, "%s.lock", path) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (lstat(lock, &st) == 0 &&
	    (!S_ISREG(st.st_mode) ||
	     (st.st_uid != geteuid() && st.st_uid != 0))) {
		snprintf(err, errlen,
			 "socket %s: %s is not a regular file of ours (%s, uid "
			 "%u); refusing to use it",
			 path, lock,
			 S_ISLNK(st.st_mode) ? "a symlink" : "another file",
			 (unsigned)st.st_uid);
		ret = -EPERM;
	}
	free(lock);
	return ret;
}

/* mkdir -p the directory of @path: 0755, whatever the umask */
static int ctl_mkdirs(const char *path)
{
	char *dir = strdup(path), *s;
	int ret = 0;

	if (!dir)
		return -ENOMEM;
	s = strrchr(dir, '/');
	if (s && s != dir) {
		*s = '\0';
		for (s = dir + 1; ret == 0; s++) {
			bool last = *s == '\0';

			if (*s != '/' && !last)
				continue;
			*s = '\0';
			if (mkdir(dir, 0755) == 0) {
				if (chmod(dir, 0755) == -1)
					ret = -errno;
			} else if (errno != EEXIST) {
				ret = -errno;
			}
			if (last)
				break;
			*s = '/';
		}
	}
	free(dir);
	return ret;
}

int ctl_listen(struct ctlsock *cs, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char *lockpath = NULL;
	struct stat st;
	int ret;

	ret = ctlsock_check_path(cs->path, err, errlen);
	if (ret < 0)
		return ret;
	ret = ctl_mkdirs(cs->path);
	if (ret < 0) {
		snprintf(err, errlen, "cannot create the directory of %s: %s",
			 cs->path, strerror(-ret));
		return ret;
	}
	/* again, now that the directory exists */
	ret = ctlsock_check_path(cs->path, err, errlen);
	if (ret < 0)
		return ret;
	if (asprintf(&lockpath, "%s.lock", cs->path) < 0)
		return -ENOMEM;
	cs->lockfile = open(lockpath,
			    O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK |
				    O_NOCTTY | O_CLOEXEC,
			    0600);
	if (cs->lockfile < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", lockpath,
			 errno == ELOOP ? "a symlink; refusing to follow it"
					: strerror(errno));
		free(lockpath);
		return ret;
	}
	if (fstat(cs->lockfile, &st) == -1 || !S_ISREG(st.st_mode) ||
	    (st.st_uid != geteuid() && st.st_uid != 0)) {
		snprintf(err, errlen, "%s: not a regular file of ours",
			 lockpath);
		free(lockpath);
		return -EPERM;
	}
	free(lockpath);
	if (flock(cs->lockfile, LOCK_EX | LOCK_NB) == -1) {
		ret = errno == EWOULDBLOCK ? -EADDRINUSE : -errno;
		snprintf(err, errlen, "socket %s: %s", cs->path,
			 ret == -EADDRINUSE ? "another daemon serves it"
					    : strerror(-ret));
		return ret;
	}
	/* ours now: a socket there is a dead daemon's; anything else is
	 * not ours to delete */
	if (lstat(cs->path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen,
				 "socket %s: not a socket is there; refusing "
				 "to replace it",
				 cs->path);
			return -EEXIST;
		}
		unlink(cs->path);
	}
	strcpy(sa.sun_path, cs->path);
	cs->lfd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK,
			 0);
	if (cs->lfd < 0 ||
	    bind(cs->lfd, (struct sockaddr *)&sa, sizeof(sa)) == -1 ||
	    fchmodat(AT_FDCWD, cs->path, 0666, 0) == -1 ||
	    listen(cs->lfd, 128) == -1) {
		ret = -errno;
		snprintf(err, errlen, "socket %s: %s", cs->path,
			 strerror(errno));
		return ret;
	}
	return 0;
}

/* every client costs descriptors: take all the hard limit allows */
void ctl_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			dl_log(DL_LOG_WARNING, "ctl: RLIMIT_NOFILE: %s",
			       strerror(errno));
	}
}

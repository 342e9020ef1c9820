/*
 * peer.c - who is at the other end of a connection: a pidfd of the
 * connecting process (SO_PEERPIDFD, or pidfd_open checked against
 * SO_PEERCRED so that a recycled pid cannot pass for it) and its
 * supplementary groups (SO_PEERGROUPS).  Called on the socket thread at
 * accept; no state.
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

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* the pid a pidfd names (fdinfo "Pid:"), 0 when it has exited */
static pid_t ctl_pidfd_pid(int pidfd)
{
	char path[64], line[128];
	long pid = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Pid: %ld", &pid) == 1)
			break;
	fclose(f);
	return pid > 0 ? (pid_t)pid : 0;
}

/* do the real and effective ids of live process @pid match @cred? */
static bool ctl_cred_match(pid_t pid, const struct ucred *cred)
{
	char path[64], line[256];
	unsigned long r, e, s, f;
	int found = 0;
	FILE *fp;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	fp = fopen(path, "re");
	if (!fp)
		return false;
	while (fgets(line, sizeof(line), fp)) {
		if (sscanf(line, "Uid: %lu %lu %lu %lu", &r, &e, &s, &f) == 4)
			found += e == cred->uid;
		else if (sscanf(line, "Gid: %lu %lu %lu %lu", &r, &e, &s, &f) ==
			 4)
			found += e == cred->gid;
	}
	fclose(fp);
	return found == 2;
}

/*
 * A pidfd of the process that connected @fd, and its pid: the identity a
 * connection keeps, which a reused pid cannot take over.  SO_PEERPIDFD
 * where the kernel has it; else pidfd_open() of the SO_PEERCRED pid, then
 * a check that this process has the connecting credentials, made while
 * the pidfd shows it alive (so it was the process we read).  Returns the
 * pidfd, or -1 when the connecting process is gone.
 */
int ctl_peer_pidfd(int fd, const struct ucred *cred, pid_t *pid)
{
	socklen_t len = sizeof(int);
	int pidfd = -1;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) == -1 ||
	    pidfd < 0) {
		if (errno == ESRCH)
			return -1;
		pidfd = ctl_pidfd_open(cred->pid);
		if (pidfd < 0)
			return -1;
		if (!ctl_cred_match(cred->pid, cred) ||
		    ctl_pidfd_exited(pidfd)) {
			close(pidfd);
			return -1;
		}
		*pid = cred->pid;
		return pidfd;
	}
	fcntl(pidfd, F_SETFD, FD_CLOEXEC);
	*pid = ctl_pidfd_pid(pidfd);
	if (*pid <= 0 || ctl_pidfd_exited(pidfd)) {
		close(pidfd);
		return -1;
	}
	return pidfd;
}

/* the peer's groups (SO_PEERGROUPS) and @gid, in a malloc'd array */
int ctl_peer_groups(int fd, gid_t gid, gid_t **out, size_t *n)
{
	socklen_t len = 64 * sizeof(gid_t);
	gid_t *g = NULL;

	for (int tries = 0; tries < 4; tries++) {
		gid_t *ng = realloc(g, len + sizeof(gid_t));

		if (!ng) {
			free(g);
			return -ENOMEM;
		}
		g = ng;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g + 1, &len) ==
		    0) {
			g[0] = gid;
			*out = g;
			*n = 1 + len / sizeof(gid_t);
			return 0;
		}
		if (errno != ERANGE)
			break;
	}
	/* no groups known: the primary one only */
	g[0] = gid;
	*out = g;
	*n = 1;
	return 0;
}

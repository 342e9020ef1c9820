/*
 * ctlsock.h - the daemon's control socket: the second front-end of the
 * lock manager, serving the LD_PRELOAD shim and dlockctl (protocol in
 * proto.h).
 *
 * One thread polls the listening socket, every client connection, a pidfd
 * per client process and per locked open file description, and an eventfd
 * on which the manager's done() callbacks and the workers' finished
 * backend calls post their results.  It never waits for a lock nor for
 * the backend: every call that reaches the backend runs on a worker
 * (fs/ctl/jobs.c).  The implementation is the rest of fs/ctl/.
 */
#ifndef DL_CTLSOCK_H
#define DL_CTLSOCK_H

#include <stddef.h>

struct ctlsock;
struct dl_config;
struct lockmgr;

struct ctlsock_conf {
	const char *path;		/* socket path */
	struct lockmgr *lm;		/* the manager it fronts */
	const char *backend_shown;	/* backend URI without secrets */
	const char *mountpoint;		/* the mount (files in it are named as
				      the mount names them), or NULL */
	const struct dl_config *config; /* paths, shared_names, limits
					   (fs/ctl/policy.h), or NULL */
};

/*
 * ctlsock_start() - create the socket (its directory 0755 if missing, the
 * socket 0666: access is checked on the descriptors clients pass) and
 * start serving.  PATH.lock, flocked while we serve, tells a second
 * daemon that the socket is taken.  Returns 0, -EADDRINUSE when another
 * daemon serves @path, or another negative errno, with a reason in @err.
 */
int ctlsock_start(const struct ctlsock_conf *conf, struct ctlsock **out,
		  char *err, size_t errlen);

/*
 * ctlsock_check_path() - may a daemon serve socket @path?  Absolute, short
 * enough; its directory (or the nearest existing ancestor, when missing)
 * owned by root or the daemon's user and not writable by others unless
 * sticky; nothing but a socket at PATH, nothing but a regular file of ours
 * at PATH.lock (no symlinks).  Creates nothing.  0, or a negative errno
 * with a one-line reason in @err.
 */
int ctlsock_check_path(const char *path, char *err, size_t errlen);

/*
 * ctlsock_stop() - stop serving: end every wait (EINTR), release every
 * lock taken through the socket, remove the socket.  Call before the
 * lock manager is destroyed.
 */
void ctlsock_stop(struct ctlsock *cs);

#endif /* DL_CTLSOCK_H */

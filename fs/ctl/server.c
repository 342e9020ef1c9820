/*
 * server.c - the control socket's event loop: the lock manager's front
 * end for processes outside the mount (the LD_PRELOAD shim) and for
 * dlockctl.
 *
 * Owns the listening socket, the connections and their output queues, the
 * epoll loop of the socket thread, the completion queues (ctl_done() of
 * a lock request, a job's done(), a lost-lock notice) and start and stop.
 * It decides nothing about locks: requests.c translates requests into
 * lock-manager calls, owners.c keeps who may hold what, jobs.c runs the
 * calls that reach the backend on workers.
 *
 * Who a request is from, and what it locks, come from the kernel, never
 * from the frame: the caller's pid and uid from SO_PEERCRED and a pidfd
 * (peer.c), the file from the descriptor passed with SCM_RIGHTS, its
 * cluster-wide name from the daemon's own configuration (naming.h,
 * policy.h).
 *
 * Threads: see internal.h.  Everything here runs on the socket thread
 * except ctl_done() (any thread: queues under qmutex, wakes the eventfd)
 * and ctlsock_start()/ctlsock_stop() (the main thread, while the socket
 * thread is not running).
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

static int64_t ctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int ctl_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* do descriptors @a (ours) and @b of process @pid share a description? */
bool ctl_same_file(pid_t self, int a, pid_t pid, int b)
{
	return syscall(SYS_kcmp, self, pid, KCMP_FILE, a, b) == 0;
}

bool ctl_pidfd_exited(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return pidfd < 0 || poll(&p, 1, 0) > 0;
}

int ctl_ep_add(struct ctlsock *cs, int fd, uint32_t events, struct ctl_ep *ep)
{
	struct epoll_event ev = { .events = events, .data.ptr = ep };

	return epoll_ctl(cs->epfd, EPOLL_CTL_ADD, fd, &ev) == -1 ? -errno : 0;
}

void ctl_ep_del(struct ctlsock *cs, int fd)
{
	if (fd >= 0)
		epoll_ctl(cs->epfd, EPOLL_CTL_DEL, fd, NULL);
}

void ctl_warn_limited(struct ctlsock *cs, const char *fmt, ...)
{
	int64_t now = ctl_now_ms();
	char msg[256];
	va_list ap;

	if (now < cs->log_quiet_until_ms) {
		cs->log_dropped++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (cs->log_dropped)
		dl_log(DL_LOG_WARNING, "%s (and %u more such messages)", msg,
		       cs->log_dropped);
	else
		dl_log(DL_LOG_WARNING, "%s", msg);
	cs->log_dropped = 0;
	cs->log_quiet_until_ms = now + 1000;
}

/* queue or send one frame; false when the connection must be dropped */
bool ctl_conn_send(struct ctlsock *cs, struct ctl_conn *c,
		   const struct dl_proto_msg *m)
{
	unsigned char buf[DL_PROTO_MAX_FRAME];
	struct ctl_out *o;
	int len = proto_encode(m, buf, sizeof(buf));

	if (len < 0) {
		dl_log(DL_LOG_ERR, "ctl: cannot encode a %s ctl_reply: %s",
		       proto_type_name(m->hdr.type), strerror(-len));
		return false;
	}
	if (!c->out) {
		ssize_t n = send(c->fd, buf, (size_t)len,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n == len)
			return true;
		if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
			return false;
	}
	if (c->out_bytes + (size_t)len > CTL_MAX_OUT)
		return false; /* a client that does not read its answers */
	o = malloc(sizeof(*o) + (size_t)len);
	if (!o)
		return false;
	o->next = NULL;
	o->len = (size_t)len;
	memcpy(o->buf, buf, (size_t)len);
	if (c->out_tail)
		c->out_tail->next = o;
	else
		c->out = o;
	c->out_tail = o;
	c->out_bytes += (size_t)len;
	if (!c->want_out) {
		struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT,
					  .data.ptr = &c->ep };

		epoll_ctl(cs->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = true;
	}
	return true;
}

/* EPOLLOUT: send what is queued; false on a dead connection */
static bool conn_flush(struct ctlsock *cs, struct ctl_conn *c)
{
	while (c->out) {
		struct ctl_out *o = c->out;
		ssize_t n = send(c->fd, o->buf, o->len,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n != (ssize_t)o->len)
			return false;
		c->out = o->next;
		if (!c->out)
			c->out_tail = NULL;
		c->out_bytes -= o->len;
		free(o);
	}
	if (c->want_out) {
		struct epoll_event ev = { .events = EPOLLIN,
					  .data.ptr = &c->ep };

		epoll_ctl(cs->epfd, EPOLL_CTL_MOD, c->fd, &ev);
		c->want_out = false;
	}
	return true;
}

bool ctl_reply(struct ctlsock *cs, struct ctl_conn *c, uint32_t id, int err,
	       const char *text)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_REPLY, .id = id } };

	m.err = err;
	if (text)
		proto_str(&m, 0, text);
	return ctl_conn_send(cs, c, &m);
}

/* the ctlsock whose socket thread this is (NULL on other threads) */
static _Thread_local struct ctlsock *ctl_this_thread;

void ctl_wake(struct ctlsock *cs)
{
	uint64_t one = 1;

	/* the socket thread itself (an inline job, a grant made while it
	 * submitted): it drains once the event is handled, no syscall */
	if (ctl_this_thread == cs) {
		cs->self_woken = true;
		return;
	}
	if (write(cs->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		dl_log(DL_LOG_ERR, "ctl: eventfd: %s", strerror(errno));
}

/* the manager's done(): queue it for the socket thread */
void ctl_done(void *arg, int err)
{
	struct ctl_pend *p = arg;
	struct ctlsock *cs = p->cs;

	pthread_mutex_lock(&cs->qmutex);
	p->err = err;
	p->qnext = NULL;
	if (cs->qtail)
		cs->qtail->qnext = p;
	else
		cs->qhead = p;
	cs->qtail = p;
	pthread_cond_broadcast(&cs->qcond);
	pthread_mutex_unlock(&cs->qmutex);
	ctl_wake(cs);
}

static void ctl_drain(struct ctlsock *cs)
{
	struct ctl_job *j;
	struct ctl_pend *p;
	struct ctl_lost *l;
	uint64_t v;

	if (read(cs->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		dl_log(DL_LOG_ERR, "ctl: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&cs->qmutex);
	p = cs->qhead;
	cs->qhead = cs->qtail = NULL;
	j = cs->jhead;
	cs->jhead = cs->jtail = NULL;
	l = cs->lost;
	cs->lost = NULL;
	pthread_mutex_unlock(&cs->qmutex);
	while (j) {
		struct ctl_job *next = j->qnext;

		ctl_job_complete(cs, j);
		j = next;
	}
	while (p) {
		struct ctl_pend *next = p->qnext;

		ctl_pend_complete(cs, p);
		p = next;
	}
	while (l) {
		struct ctl_lost *next = l->next;

		ctl_fence_lost(cs, l);
		free(l);
		l = next;
	}
}

void ctl_conn_close(struct ctlsock *cs, struct ctl_conn *c)
{
	struct ctl_conn **pp;
	struct ctl_proc *p = c->proc;
	const void *saved_key;

	for (pp = &cs->conns; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (!*pp)
		return; /* already closed */
	*pp = c->next;
	cs->nconns--;
	ctl_ep_del(cs, c->fd);
	close(c->fd);
	/* its backend calls run after those it asked for */
	saved_key = cs->jkey;
	cs->jkey = c;
	/* its waits end (EINTR); their done() finds no connection */
	while (c->pend) {
		struct ctl_pend *pend = c->pend;

		ctl_conn_forget_pend(c, pend);
		pend->conn = NULL;
		ctl_wait_job(cs, JOB_INTERRUPT, pend->wait_id);
	}
	while (c->jobs)
		ctl_job_forget_conn(c->jobs);
	while (c->nnamed) {
		ctl_release(cs, c->named[c->nnamed - 1]->id, DL_SPACE_FLOCK,
			    c->owner);
		ctl_objset_del(cs, c->named, &c->nnamed, c->nnamed - 1);
		c->user->locks--;
	}
	free(c->named);
	free(c->gids);
	c->user->conns--;
	ctl_user_free_maybe(cs, c->user);
	while (c->out) {
		struct ctl_out *o = c->out;

		c->out = o->next;
		free(o);
	}
	free(c);

	p->nconns--;
	if (!p->dead && ctl_pidfd_exited(p->pidfd)) {
		ctl_proc_exit(cs, p);
	} else if (!p->dead && p->nconns == 0) {
		/*
		 * Alive without a connection: it exec'd (or is dying and
		 * its pidfd does not show it yet).  exec closed its
		 * close-on-exec descriptors, and that dropped its POSIX locks
		 * on their files unless another descriptor remains.
		 */
		for (size_t i = p->nposix; i-- > 0;)
			if (!ctl_proc_has_inode(p->pid, p->posix[i]->dev,
						p->posix[i]->ino))
				ctl_proc_release_posix(cs, p, i);
		ctl_desc_check_many(cs, false, 0, 0, p->pid);
	}
	ctl_proc_free_maybe(cs, p);
	cs->jkey = saved_key;
}

/* take the listening socket out of (@pause) or back into the poll set */
static void ctl_listen_pause(struct ctlsock *cs, bool pause)
{
	struct epoll_event ev = { .events = pause ? 0 : EPOLLIN,
				  .data.ptr = &cs->listen_ep };

	cs->accept_backoff_until_ms =
		pause ? ctl_now_ms() + CTL_ACCEPT_BACKOFF_MS : 0;
	epoll_ctl(cs->epfd, EPOLL_CTL_MOD, cs->lfd, &ev);
}

static void conn_accept(struct ctlsock *cs)
{
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	struct ctl_user *u;
	struct ctl_conn *c;
	int fd, pidfd;
	pid_t pid;

	fd = accept4(cs->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (fd < 0) {
		if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
			return;
		/* out of descriptors or memory: stop listening a while
		 * rather than spin on a queue we cannot take from */
		ctl_warn_limited(cs, "ctl: accept: %s; pausing %d ms",
				 strerror(errno), CTL_ACCEPT_BACKOFF_MS);
		ctl_listen_pause(cs, true);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == -1 ||
	    cred.pid <= 0) {
		close(fd);
		return;
	}
	pidfd = ctl_peer_pidfd(fd, &cred, &pid);
	if (pidfd < 0) {
		/* it connected and went (its pid may serve another process
		 * by now): nobody to serve */
		close(fd);
		return;
	}
	u = ctl_user_get(cs, cred.uid);
	if (!u || (cred.uid != 0 && cs->pol.max_conns &&
		   u->conns >= cs->pol.max_conns)) {
		if (u)
			ctl_warn_limited(cs,
					 "ctl: uid %u has %u connections "
					 "(max_conns_per_uid): refused",
					 (unsigned)cred.uid, u->conns);
		close(pidfd);
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(pidfd);
		close(fd);
		ctl_user_free_maybe(cs, u);
		return;
	}
	c->user = u;
	c->fd = fd;
	c->pid = pid;
	c->uid = cred.uid;
	if (ctl_peer_groups(fd, cred.gid, &c->gids, &c->ngids) < 0) {
		close(pidfd);
		close(fd);
		free(c);
		return;
	}
	c->cid = ++cs->next_cid;
	c->owner = lockmgr_owner_new(cs->lm);
	c->ep = (struct ctl_ep){ EP_CONN, c };
	c->proc = ctl_proc_get(cs, pid, pidfd, u);
	if (!c->proc || ctl_ep_add(cs, fd, EPOLLIN, &c->ep) < 0) {
		dl_log(DL_LOG_WARNING, "ctl: cannot take a client (pid %d)",
		       (int)pid);
		close(fd);
		free(c->gids);
		free(c);
		ctl_user_free_maybe(cs, u);
		return;
	}
	c->proc->nconns++;
	u->conns++;
	c->next = cs->conns;
	cs->conns = c;
	cs->nconns++;
}

/* read and serve one frame; false when the connection is done */
static bool conn_input(struct ctlsock *cs, struct ctl_conn *c)
{
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int) * CTL_MAX_FDS)];
	} ctl;
	struct iovec iov = { cs->rbuf, DL_PROTO_MAX_FRAME + 1 };
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.buf,
			     .msg_controllen = sizeof(ctl.buf) };
	int fds[CTL_MAX_FDS], nfds = 0, ret;
	struct dl_proto_msg m;
	struct cmsghdr *cm;
	ssize_t n;
	bool ok;

	n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN || errno == EINTR;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		for (size_t i = 0;
		     i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int),
			       sizeof(fd));
			if (nfds < CTL_MAX_FDS)
				fds[nfds++] = fd;
			else
				close(fd);
		}
	}
	if (n == 0) {
		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		return false;
	}
	if (mh.msg_flags & MSG_TRUNC)
		ret = -EBADMSG;
	else
		ret = proto_decode(cs->rbuf, (size_t)n, &m);
	if (ret == 0 && (nfds > 1 || (mh.msg_flags & MSG_CTRUNC)))
		ret = -EBADMSG;
	if (ret < 0) {
		const char *why = ret == -EPROTONOSUPPORT ? "unsupported "
							    "protocol version "
							    "(this "
							    "daemon speaks "
							    "version 2)"
							  : "malformed frame";

		for (int i = 0; i < nfds; i++)
			close(fds[i]);
		dl_log(DL_LOG_DEBUG, "ctl: pid %d: %s; closing", (int)c->pid,
		       why);
		ctl_reply(cs, c, ret == -EPROTONOSUPPORT ? m.hdr.id : 0, ret,
			  why);
		conn_flush(cs, c);
		return false;
	}
	ok = ctl_conn_request(cs, c, &m, nfds ? fds[0] : -1);
	return ok;
}

static void ctl_event(struct ctlsock *cs, struct epoll_event *ev)
{
	struct ctl_ep *ep = ev->data.ptr;

	switch (ep->kind) {
	case EP_LISTEN:
		conn_accept(cs);
		break;
	case EP_WAKE:
		ctl_drain(cs);
		break;
	case EP_CONN: {
		struct ctl_conn *c = ep->ptr;
		bool ok = true;

		if (ev->events & EPOLLOUT)
			ok = conn_flush(cs, c);
		if (ok && (ev->events & EPOLLIN))
			ok = conn_input(cs, c);
		else if (ok && (ev->events & (EPOLLHUP | EPOLLERR)))
			ok = false;
		if (!ok)
			ctl_conn_close(cs, c);
		break;
	}
	case EP_PROC:
		ctl_proc_exit(cs, ep->ptr);
		ctl_proc_free_maybe(cs, ep->ptr);
		break;
	case EP_DESC: {
		struct ctl_desc *d = ep->ptr;

		d->pending++;
		ctl_desc_unwatch(cs, d); /* that process is gone */
		ctl_desc_check(cs, d, 0);
		d->pending--;
		ctl_desc_free_maybe(cs, d);
		break;
	}
	}
}

static void *ctl_main(void *arg)
{
	struct ctlsock *cs = arg;

	ctl_this_thread = cs;
	while (!cs->stopping) {
		struct epoll_event ev;
		int timeout = -1, n;

		if (cs->accept_backoff_until_ms) {
			int64_t left =
				cs->accept_backoff_until_ms - ctl_now_ms();

			if (left <= 0) {
				ctl_listen_pause(cs, false);
			} else {
				timeout = (int)left;
			}
		}
		n = epoll_wait(cs->epfd, &ev, 1, timeout);

		if (n < 0 && errno != EINTR) {
			dl_log(DL_LOG_ERR, "ctl: epoll_wait: %s",
			       strerror(errno));
			break;
		}
		if (n == 1)
			ctl_event(cs, &ev);
		/* a drain can complete work that queues more (a release
		 * that grants a waiter, inline on local:): drain until none */
		while (cs->self_woken) {
			cs->self_woken = false;
			ctl_drain(cs);
		}
	}
	return NULL;
}

static void ctl_free(struct ctlsock *cs)
{
	if (cs->jobs_on) { /* a start that failed after the workers */
		workq_stop(&cs->jobs);
		cs->jobs_on = false;
	}
	if (cs->lfd >= 0) {
		struct stat st;

		close(cs->lfd);
		if (lstat(cs->path, &st) == 0 && S_ISSOCK(st.st_mode))
			unlink(cs->path);
	}
	if (cs->lockfile >= 0)
		close(cs->lockfile);
	if (cs->epfd >= 0)
		close(cs->epfd);
	if (cs->wakefd >= 0)
		close(cs->wakefd);
	while (cs->lost) {
		struct ctl_lost *l = cs->lost;

		cs->lost = l->next;
		free(l);
	}
	pthread_mutex_destroy(&cs->qmutex);
	pthread_cond_destroy(&cs->qcond);
	ctlpol_free(&cs->pol);
	{
		struct ctl_user *u, *tmp;

		HASH_ITER(hh, cs->users, u, tmp)
		{
			HASH_DELETE(hh, cs->users, u);
			free(u);
		}
	}
	free(cs->rbuf);
	free(cs->path);
	free(cs->mountpoint);
	free(cs->backend_shown);
	free(cs);
}

int ctlsock_start(const struct ctlsock_conf *conf, struct ctlsock **out,
		  char *err, size_t errlen)
{
	struct ctlsock *cs = calloc(1, sizeof(*cs));
	sigset_t all, old;
	int ret;

	if (!cs)
		return -ENOMEM;
	cs->lfd = cs->lockfile = cs->epfd = cs->wakefd = -1;
	pthread_mutex_init(&cs->qmutex, NULL);
	pthread_cond_init(&cs->qcond, NULL);
	cs->lm = conf->lm;
	cs->self = getpid();
	cs->path = strdup(conf->path);
	cs->backend_shown =
		strdup(conf->backend_shown ? conf->backend_shown : "");
	cs->mountpoint = conf->mountpoint ? strdup(conf->mountpoint) : NULL;
	cs->rbuf = malloc(DL_PROTO_MAX_FRAME + 1);
	if (!cs->path || !cs->backend_shown || !cs->rbuf ||
	    (conf->mountpoint && !cs->mountpoint)) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out_free;
	}
	ctl_raise_nofile();
	ret = ctlpol_load(&cs->pol, conf->config, err, errlen);
	if (ret < 0)
		goto out_free;
	ret = ctl_listen(cs, err, errlen);
	if (ret < 0)
		goto out_free;
	cs->epfd = epoll_create1(EPOLL_CLOEXEC);
	cs->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	cs->listen_ep = (struct ctl_ep){ EP_LISTEN, NULL };
	cs->wake_ep = (struct ctl_ep){ EP_WAKE, NULL };
	if (cs->epfd < 0 || cs->wakefd < 0 ||
	    ctl_ep_add(cs, cs->lfd, EPOLLIN, &cs->listen_ep) < 0 ||
	    ctl_ep_add(cs, cs->wakefd, EPOLLIN, &cs->wake_ep) < 0) {
		ret = -errno;
		snprintf(err, errlen, "control socket: %s", strerror(errno));
		goto out_free;
	}
	ret = workq_start(&cs->jobs, CTL_JOB_THREADS);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start the socket's workers: %s",
			 strerror(-ret));
		goto out_free;
	}
	cs->jobs_on = true;
	cs->jobs_inline = lockmgr_inproc(cs->lm);
	lockmgr_set_lost_hook(cs->lm, ctl_lost, cs);
	/* signals are the main thread's business */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&cs->thread, NULL, ctl_main, cs);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret < 0) {
		snprintf(err, errlen, "cannot start the socket thread: %s",
			 strerror(-ret));
		goto out_free;
	}
	dl_log(DL_LOG_INFO, "control socket %s", cs->path);
	*out = cs;
	return 0;

out_free:
	ctl_free(cs);
	return ret;
}

void ctlsock_stop(struct ctlsock *cs)
{
	struct timespec ts;
	bool leak = false;

	if (!cs)
		return;
	lockmgr_set_lost_hook(cs->lm, NULL, NULL);
	cs->stopping = true;
	ctl_wake(cs);
	pthread_join(cs->thread, NULL);
	/* what the workers have runs; from now on the calls run here */
	workq_stop(&cs->jobs);
	cs->jobs_on = false;
	ctl_drain(cs);

	/* every connection goes, as if its client had exited */
	while (cs->conns)
		ctl_conn_close(cs, cs->conns);
	/* their waits end: wait (bounded) for every done() */
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += CTL_STOP_WAIT_MS / 1000;
	for (;;) {
		pthread_mutex_lock(&cs->qmutex);
		while (!cs->qhead && !cs->jhead && cs->npend)
			if (pthread_cond_timedwait(&cs->qcond, &cs->qmutex,
						   &ts) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&cs->qmutex);
		if (!cs->qhead && !cs->jhead) {
			leak = cs->npend != 0;
			break;
		}
		ctl_drain(cs);
	}
	while (cs->procs && !leak) {
		struct ctl_proc *p = cs->procs;

		p->nconns = 0;
		if (p->dead) {
			cs->procs = p->next;
			free(p->posix);
			if (p->fence)
				munmap(p->fence, DL_FENCE_PAGE_SIZE);
			if (p->fence_fd >= 0)
				close(p->fence_fd);
			free(p);
			continue;
		}
		ctl_proc_exit(cs, p);
		ctl_proc_free_maybe(cs, p);
	}
	while (cs->descs && !leak) {
		struct ctl_desc *d = cs->descs;

		d->pending = 0;
		ctl_desc_release(cs, d);
	}
	if (leak) {
		/* a done() may still come: keep what it would touch */
		dl_log(DL_LOG_ERR, "ctl: %zu requests undecided at exit",
		       cs->npend);
		return;
	}
	dl_log(DL_LOG_INFO, "control socket %s closed", cs->path);
	ctl_free(cs);
}

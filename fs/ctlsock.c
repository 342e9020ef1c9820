/*
 * ctlsock.c - the control socket: the lock manager's front-end for
 * processes outside the mount (the LD_PRELOAD shim) and for dlockctl.
 *
 * Who a request is from, and what it locks, come from the kernel, never
 * from the frame: the caller's pid and uid from SO_PEERCRED, the file from
 * the descriptor passed with SCM_RIGHTS (fstat, /proc/self/fd).  Only the
 * cluster-wide *name* of a file uses what the shim says (its DLOCK_PATHS
 * label and prefix), after checking that the file really lies under that
 * prefix.
 *
 * Owners, as the kernel has them:
 *  - POSIX (fcntl, lockf) locks belong to the process: struct ctl_proc,
 *    one per client pid, however many connections it opens (a shim uses
 *    one per thread busy in a call).  They survive exec (the pid stays)
 *    and end when the process dies (its pidfd polls readable), when it
 *    tells us it closed a descriptor of the file (DLP_CLOSED), or when its
 *    last connection closes and no descriptor of the file is left in it
 *    (exec closed the close-on-exec ones).
 *  - flock and OFD locks belong to the open file description: struct
 *    ctl_desc keeps a duplicate of the first descriptor locked through it,
 *    and a later request is matched to it with kcmp(KCMP_FILE).  Our
 *    duplicate keeps the description alive, so "last close" is found by
 *    looking: when the process we watch (pidfd) exits, or a client tells
 *    us it closed a descriptor of the file, or a client's connection
 *    closes, we look through /proc/PID/fd of every process (watched one
 *    first) for one still holding the description; found, we watch that
 *    process; none, the locks go.  That covers fork, exec, descriptors
 *    passed on, and children that do not run the shim at all.
 *  - named locks (dlockctl run) belong to the connection that took them.
 *
 * Lost locks (a break, a lease that ended) fail the holder's writes with
 * EIO, as Linux NFS does: each client process that asks (DLP_FENCE, after
 * a grant) gets a fence page (proto.h), a memfd shared read-only with it,
 * where ctl_lost() has the socket thread set the file's slot lost.  A
 * POSIX lock marks its process; a flock/OFD lock every fenced process
 * still holding the description.
 *
 * Threads: everything here runs on the socket thread except ctl_done()
 * and ctl_lost(), which only queue a record under ctlsock.qmutex and wake
 * the thread through an eventfd.  Objects are freed only on the socket
 * thread, after their epoll registration is gone; epoll_wait returns one
 * event at a time, so no event can name an object freed by an earlier one.
 */
#include "fs/ctlsock.h"

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
#include "fs/ctl_policy.h"
#include "fs/lock/lockmgr.h"
#include "fs/proto.h"

#define CTL_OBJ_TAG	      (1ULL << 63) /* FUSE inode numbers are pointers */
#define CTL_OWNER_TAG	      0xd10c000000000000ULL
#define CTL_MAX_FDS	      4
#define CTL_MAX_OUT	      (4u << 20) /* queued reply bytes before we give up */
#define CTL_NAME_MAX	      4096
#define CTL_STOP_WAIT_MS      5000
#define CTL_ACCEPT_BACKOFF_MS 100

enum ctl_ep_kind { EP_LISTEN, EP_WAKE, EP_CONN, EP_PROC, EP_DESC };

/* what an epoll event points to */
struct ctl_ep {
	enum ctl_ep_kind kind;
	void *ptr;
};

/* a lockable thing: a file (dev, ino, cluster name) or a named lock */
struct ctl_obj {
	struct ctl_obj *next;
	uint64_t id; /* the manager's obj: CTL_OBJ_TAG | n */
	dev_t dev;
	ino_t ino;
	bool named;
	unsigned refs;
	char *name;
};

struct ctl_proc {
	struct ctl_proc *next;
	pid_t pid;
	int pidfd;
	uint64_t owner;
	unsigned nconns;
	unsigned refs; /* requests in flight */
	bool dead;
	struct ctl_ep ep;
	struct ctl_user *user; /* charged for its posix set */
	/* files where it may hold POSIX locks (each holds an obj ref) */
	struct ctl_obj **posix;
	size_t nposix, capposix;
	/* its fence page (proto.h), made at its first FENCE; -1, NULL */
	int fence_fd;
	struct dl_fence_slot *fence;
};

/* a lost lock, from the manager's hook to the socket thread */
struct ctl_lost {
	struct ctl_lost *next;
	uint64_t obj;
	enum dl_space space;
	uint64_t owner;
};

struct ctl_desc {
	struct ctl_desc *next;
	uint64_t owner;
	struct ctl_obj *obj; /* ref */
	int fd;		     /* our duplicate of the description */
	pid_t watch;	     /* a process seen holding it */
	int pidfd;	     /* of @watch, in epoll; -1 */
	struct ctl_ep ep;
	struct ctl_user *user; /* charged for flock and ofd */
	bool flock, ofd;       /* may hold locks in these spaces */
	bool released;	       /* nobody holds it any more */
	unsigned pending;      /* requests in flight */
};

struct ctl_out {
	struct ctl_out *next;
	size_t len;
	unsigned char buf[];
};

struct ctl_pend;

struct ctl_conn {
	struct ctl_conn *next;
	int fd;
	uint32_t cid;
	pid_t pid;
	uid_t uid;
	gid_t *gids; /* its primary and supplementary groups */
	size_t ngids;
	struct ctl_proc *proc;
	struct ctl_user *user;
	struct ctl_ep ep;
	struct ctl_out *out, *out_tail;
	size_t out_bytes;
	bool want_out;
	uint64_t owner;		/* of its named locks */
	struct ctl_pend *pend;	/* requests in flight */
	struct ctl_obj **named; /* named locks it may hold (refs) */
	size_t nnamed, capnamed;
};

/*
 * What one uid holds through the socket (its caps: ctl_policy.h).  @locks
 * counts lock records: each file in a process's POSIX set, each flock or
 * OFD space of a description, each named lock of a connection; a record
 * lasts until the locks it may hold are dropped (close, exit, unlock of a
 * flock, OFD or named lock).
 */
struct ctl_user {
	struct ctl_user *next;
	uid_t uid;
	unsigned conns, waits, locks;
	unsigned refs; /* process and description records charged to it */
};

/* a lock request between lockmgr_prepare() and its done() */
struct ctl_pend {
	struct ctl_pend *next;	 /* in conn->pend */
	struct ctl_pend **pprev; /* O(1) removal from conn->pend */
	struct ctl_user *user;	 /* its waits++ */
	struct ctl_pend *qnext;	 /* in the completion queue */
	struct ctlsock *cs;
	struct ctl_conn *conn; /* NULL once the connection is gone */
	uint32_t req_id;
	uint64_t wait_id;
	uint8_t kind;
	uint64_t owner;
	struct ctl_obj *obj;   /* ref */
	struct ctl_proc *proc; /* ref */
	struct ctl_desc *desc; /* pending++ */
	int err;
};

struct ctlsock {
	struct ctlsock_conf conf;
	char *path, *mountpoint, *backend_shown;
	struct ctl_policy pol;
	struct lockmgr *lm;
	int lfd, lockfile, epfd, wakefd;
	pthread_t thread;
	pid_t self;
	struct ctl_ep listen_ep, wake_ep;
	/* socket thread only: */
	struct ctl_conn *conns;
	struct ctl_proc *procs;
	struct ctl_desc *descs;
	struct ctl_obj *objs;
	struct ctl_user *users;
	uint64_t next_obj, next_owner;
	int64_t accept_backoff_until_ms, log_quiet_until_ms;
	unsigned log_dropped;
	uint32_t next_cid;
	size_t nconns, nprocs, ndescs, npend;
	unsigned char *rbuf;
	bool stopping;
	/* guarded by qmutex: completions and lost-lock notices */
	pthread_mutex_t qmutex;
	pthread_cond_t qcond;
	struct ctl_pend *qhead, *qtail;
	struct ctl_lost *lost;
};

/* ---- small helpers ----------------------------------------------------- */

static int64_t ctl_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ctl_pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/* do descriptors @a (ours) and @b of process @pid share a description? */
static bool ctl_same_file(pid_t self, int a, pid_t pid, int b)
{
	return syscall(SYS_kcmp, self, pid, KCMP_FILE, a, b) == 0;
}

static bool ctl_pidfd_exited(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };

	return pidfd < 0 || poll(&p, 1, 0) > 0;
}

static int ctl_ep_add(struct ctlsock *cs, int fd, uint32_t events,
		      struct ctl_ep *ep)
{
	struct epoll_event ev = { .events = events, .data.ptr = ep };

	return epoll_ctl(cs->epfd, EPOLL_CTL_ADD, fd, &ev) == -1 ? -errno : 0;
}

static void ctl_ep_del(struct ctlsock *cs, int fd)
{
	if (fd >= 0)
		epoll_ctl(cs->epfd, EPOLL_CTL_DEL, fd, NULL);
}

/* ---- per-uid accounting ------------------------------------------------ */

static struct ctl_user *user_get(struct ctlsock *cs, uid_t uid)
{
	struct ctl_user *u;

	for (u = cs->users; u; u = u->next)
		if (u->uid == uid)
			return u;
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->uid = uid;
	u->next = cs->users;
	cs->users = u;
	return u;
}

static void user_free_maybe(struct ctlsock *cs, struct ctl_user *u)
{
	struct ctl_user **pp;

	if (!u || u->conns || u->waits || u->locks || u->refs)
		return;
	for (pp = &cs->users; *pp != u; pp = &(*pp)->next)
		;
	*pp = u->next;
	free(u);
}

/*
 * A warning that a client can provoke at will: at most one a second, with
 * a count of those left out, so a flood cannot flood the log too.
 */
static void ctl_warn_limited(struct ctlsock *cs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void ctl_warn_limited(struct ctlsock *cs, const char *fmt, ...)
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

/* ---- objects ----------------------------------------------------------- */

static struct ctl_obj *obj_get(struct ctlsock *cs, dev_t dev, ino_t ino,
			       bool named, const char *name)
{
	struct ctl_obj *o;

	for (o = cs->objs; o; o = o->next)
		if (o->named == named && o->dev == dev && o->ino == ino &&
		    strcmp(o->name, name) == 0) {
			o->refs++;
			return o;
		}
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->name = strdup(name);
	if (!o->name) {
		free(o);
		return NULL;
	}
	o->id = CTL_OBJ_TAG | ++cs->next_obj;
	o->dev = dev;
	o->ino = ino;
	o->named = named;
	o->refs = 1;
	o->next = cs->objs;
	cs->objs = o;
	return o;
}

static void obj_put(struct ctlsock *cs, struct ctl_obj *o)
{
	struct ctl_obj **p;

	if (!o || --o->refs)
		return;
	for (p = &cs->objs; *p != o; p = &(*p)->next)
		;
	*p = o->next;
	free(o->name);
	free(o);
}

static bool objset_has(struct ctl_obj *const *v, size_t n,
		       const struct ctl_obj *o)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == o)
			return true;
	return false;
}

/* add @o to a set of refs (one ref per member); 1 added, 0 already
 * there, or -ENOMEM */
static int objset_add(struct ctl_obj ***v, size_t *n, size_t *cap,
		      struct ctl_obj *o)
{
	if (objset_has(*v, *n, o))
		return 0;
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 4;
		void *p = realloc(*v, nc * sizeof(**v));

		if (!p)
			return -ENOMEM;
		*v = p;
		*cap = nc;
	}
	(*v)[(*n)++] = o;
	o->refs++;
	return 1;
}

/* remove member @i, giving its ref back */
static void objset_del(struct ctlsock *cs, struct ctl_obj **v, size_t *n,
		       size_t i)
{
	struct ctl_obj *o = v[i];

	v[i] = v[--*n];
	obj_put(cs, o);
}

/* ---- processes --------------------------------------------------------- */

static void proc_free_maybe(struct ctlsock *cs, struct ctl_proc *p)
{
	struct ctl_proc **pp;

	if (!p->dead || p->nconns || p->refs)
		return;
	for (pp = &cs->procs; *pp != p; pp = &(*pp)->next)
		;
	*pp = p->next;
	cs->nprocs--;
	free(p->posix);
	if (p->fence)
		munmap(p->fence, DL_FENCE_PAGE_SIZE);
	if (p->fence_fd >= 0)
		close(p->fence_fd);
	p->user->refs--;
	user_free_maybe(cs, p->user);
	free(p);
}

static void proc_release_posix(struct ctlsock *cs, struct ctl_proc *p, size_t i)
{
	lockmgr_release_owner(cs->lm, p->posix[i]->id, DL_SPACE_POSIX,
			      p->owner);
	objset_del(cs, p->posix, &p->nposix, i);
	p->user->locks--;
	user_free_maybe(cs, p->user);
}

/* the process is gone: every POSIX lock it held goes with it */
static void proc_exit(struct ctlsock *cs, struct ctl_proc *p)
{
	if (p->dead)
		return;
	dl_log(DL_LOG_DEBUG, "ctl: process %d exited", (int)p->pid);
	while (p->nposix)
		proc_release_posix(cs, p, p->nposix - 1);
	p->dead = true;
	ctl_ep_del(cs, p->pidfd);
	close(p->pidfd);
	p->pidfd = -1;
	/* the caller calls proc_free_maybe() */
}

/*
 * Take over @pidfd (a live process, numbered @pid): the record of that
 * process, made if new.  A live record of the same pid is the same
 * process: it was alive when @pidfd was taken, and pids are unique among
 * the living.
 */
static struct ctl_proc *proc_get(struct ctlsock *cs, pid_t pid, int pidfd,
				 struct ctl_user *u)
{
	struct ctl_proc *p;

	for (p = cs->procs; p; p = p->next) {
		if (p->pid != pid || p->dead)
			continue;
		if (!ctl_pidfd_exited(p->pidfd)) {
			close(pidfd);
			return p;
		}
		/* that pid died and was reused before we noticed */
		proc_exit(cs, p);
		proc_free_maybe(cs, p);
		break;
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		close(pidfd);
		return NULL;
	}
	p->pid = pid;
	p->fence_fd = -1;
	p->pidfd = pidfd;
	p->user = u;
	p->ep = (struct ctl_ep){ EP_PROC, p };
	if (ctl_ep_add(cs, p->pidfd, EPOLLIN, &p->ep) < 0) {
		close(p->pidfd);
		free(p);
		return NULL;
	}
	p->owner = CTL_OWNER_TAG | ++cs->next_owner;
	p->next = cs->procs;
	cs->procs = p;
	cs->nprocs++;
	u->refs++;
	return p;
}

/* does @pid have a descriptor of (@dev, @ino) open? */
static bool proc_has_inode(pid_t pid, dev_t dev, ino_t ino)
{
	char dir[64], path[64 + 256 + 2];
	struct dirent *e;
	bool found = false;
	struct stat st;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		found = stat(path, &st) == 0 && st.st_dev == dev &&
			st.st_ino == ino;
	}
	closedir(d);
	return found;
}

/* ---- open file descriptions -------------------------------------------- */

/* does @pid hold the description @fd of ours? */
static bool proc_has_desc(struct ctlsock *cs, pid_t pid, int fd)
{
	char dir[64];
	struct dirent *e;
	bool found = false;
	DIR *d;

	if (pid <= 0 || pid == cs->self)
		return false;
	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return false;
	while (!found && (e = readdir(d))) {
		char *end;
		long n;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		n = strtol(e->d_name, &end, 10);
		if (*end || n > INT_MAX)
			continue;
		found = ctl_same_file(cs->self, fd, pid, (int)n);
	}
	closedir(d);
	return found;
}

/* a process holding @d's description: @hint first, then everyone; 0 none */
static pid_t desc_find_holder(struct ctlsock *cs, struct ctl_desc *d,
			      pid_t hint)
{
	struct dirent *e;
	pid_t found = 0;
	DIR *proc;

	if (proc_has_desc(cs, hint, d->fd))
		return hint;
	if (hint != d->watch && proc_has_desc(cs, d->watch, d->fd))
		return d->watch;
	proc = opendir("/proc");
	if (!proc)
		return d->watch ? d->watch : 1; /* cannot look: keep it */
	while (!found && (e = readdir(proc))) {
		char *end;
		long n;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		n = strtol(e->d_name, &end, 10);
		if (*end || n == hint || n == d->watch)
			continue;
		if (proc_has_desc(cs, (pid_t)n, d->fd))
			found = (pid_t)n;
	}
	closedir(proc);
	return found;
}

static void desc_unwatch(struct ctlsock *cs, struct ctl_desc *d)
{
	ctl_ep_del(cs, d->pidfd);
	if (d->pidfd >= 0)
		close(d->pidfd);
	d->pidfd = -1;
	d->watch = 0;
}

static void desc_watch(struct ctlsock *cs, struct ctl_desc *d, pid_t pid)
{
	int pfd;

	if (d->watch == pid && d->pidfd >= 0)
		return;
	pfd = ctl_pidfd_open(pid);
	if (pfd < 0)
		return; /* already gone: its exit was our event */
	desc_unwatch(cs, d);
	d->pidfd = pfd;
	d->watch = pid;
	if (ctl_ep_add(cs, pfd, EPOLLIN, &d->ep) < 0) {
		dl_log(DL_LOG_WARNING, "ctl: cannot watch pid %d", (int)pid);
		close(pfd);
		d->pidfd = -1;
	}
}

static void desc_free_maybe(struct ctlsock *cs, struct ctl_desc *d)
{
	struct ctl_desc **p;

	if (d->pending || (!d->released && (d->flock || d->ofd)))
		return;
	for (p = &cs->descs; *p != d; p = &(*p)->next)
		;
	*p = d->next;
	cs->ndescs--;
	desc_unwatch(cs, d);
	close(d->fd);
	obj_put(cs, d->obj);
	d->user->refs--;
	user_free_maybe(cs, d->user);
	free(d);
}

/* nobody holds the description any more: its locks go */
static void desc_release(struct ctlsock *cs, struct ctl_desc *d)
{
	dl_log(DL_LOG_DEBUG, "ctl: last close of a description of %s",
	       d->obj->name);
	if (d->flock)
		lockmgr_release_owner(cs->lm, d->obj->id, DL_SPACE_FLOCK,
				      d->owner);
	if (d->ofd)
		lockmgr_release_owner(cs->lm, d->obj->id, DL_SPACE_POSIX,
				      d->owner);
	d->user->locks -= (unsigned)d->flock + (unsigned)d->ofd;
	user_free_maybe(cs, d->user);
	d->flock = d->ofd = false;
	d->released = true;
	desc_unwatch(cs, d);
	desc_free_maybe(cs, d);
}

/*
 * Something may have closed @d's last descriptor (@hint: the process it
 * concerns): look for a holder, twice before giving up, so that a fork
 * racing with the first pass over /proc cannot hide one.
 */
static void desc_check(struct ctlsock *cs, struct ctl_desc *d, pid_t hint)
{
	pid_t holder;

	if (d->released)
		return;
	holder = desc_find_holder(cs, d, hint);
	if (!holder)
		holder = desc_find_holder(cs, d, hint);
	if (holder)
		desc_watch(cs, d, holder);
	else
		desc_release(cs, d);
}

/* check every description of (@dev, @ino), or watched by @pid */
static void desc_check_many(struct ctlsock *cs, bool by_inode, dev_t dev,
			    ino_t ino, pid_t pid)
{
	struct ctl_desc *d, *next;

	/* desc_check() may free d: hold it through pending */
	for (d = cs->descs; d; d = next) {
		bool match = by_inode ? d->obj->dev == dev && d->obj->ino == ino
				      : d->watch == pid;

		if (match && !d->released) {
			d->pending++;
			desc_check(cs, d, pid);
			d->pending--;
		}
		next = d->next;
		desc_free_maybe(cs, d);
	}
}

/* the description of @fd among ours, or NULL */
static struct ctl_desc *desc_find(struct ctlsock *cs, struct ctl_obj *o, int fd)
{
	for (struct ctl_desc *d = cs->descs; d; d = d->next)
		if (!d->released && d->obj->dev == o->dev &&
		    d->obj->ino == o->ino &&
		    ctl_same_file(cs->self, d->fd, cs->self, fd))
			return d;
	return NULL;
}

/* a new description record taking over @fd (closed on failure) */
static struct ctl_desc *desc_new(struct ctlsock *cs, struct ctl_obj *o, int fd,
				 struct ctl_user *u)
{
	struct ctl_desc *d = calloc(1, sizeof(*d));

	if (!d) {
		close(fd);
		return NULL;
	}
	d->owner = CTL_OWNER_TAG | ++cs->next_owner;
	d->user = u;
	u->refs++;
	d->obj = o;
	o->refs++;
	d->fd = fd;
	d->pidfd = -1;
	d->ep = (struct ctl_ep){ EP_DESC, d };
	d->next = cs->descs;
	cs->descs = d;
	cs->ndescs++;
	return d;
}

/* ---- output ------------------------------------------------------------ */

static void conn_close(struct ctlsock *cs, struct ctl_conn *c);

/* queue or send one frame; false when the connection must be dropped */
static bool conn_send(struct ctlsock *cs, struct ctl_conn *c,
		      const struct dl_proto_msg *m)
{
	unsigned char buf[DL_PROTO_MAX_FRAME];
	struct ctl_out *o;
	int len = proto_encode(m, buf, sizeof(buf));

	if (len < 0) {
		dl_log(DL_LOG_ERR, "ctl: cannot encode a %s reply: %s",
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

static bool reply(struct ctlsock *cs, struct ctl_conn *c, uint32_t id, int err,
		  const char *text)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_REPLY, .id = id } };

	m.err = err;
	if (text)
		proto_str(&m, 0, text);
	return conn_send(cs, c, &m);
}

/* ---- completions (any thread -> socket thread) -------------------------- */

static void ctl_wake(struct ctlsock *cs)
{
	uint64_t one = 1;

	if (write(cs->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		dl_log(DL_LOG_ERR, "ctl: eventfd: %s", strerror(errno));
}

/* the manager's done(): queue it for the socket thread */
static void ctl_done(void *arg, int err)
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

/* the manager's lost hook (any thread): queue it for the socket thread */
static void ctl_lost(void *ctx, uint64_t obj, enum dl_space space,
		     uint64_t owner)
{
	struct ctlsock *cs = ctx;
	struct ctl_lost *l = malloc(sizeof(*l));

	if (!l) {
		dl_log(DL_LOG_ERR,
		       "ctl: lost lock of owner %016" PRIx64 ": no memory to "
		       "fence its writes",
		       owner);
		return;
	}
	*l = (struct ctl_lost){ NULL, obj, space, owner };
	pthread_mutex_lock(&cs->qmutex);
	l->next = cs->lost;
	cs->lost = l;
	pthread_mutex_unlock(&cs->qmutex);
	ctl_wake(cs);
}

/* set the slots of (@dev, @ino) in @p's fence page lost */
static void fence_mark(struct ctl_proc *p, dev_t dev, ino_t ino)
{
	if (!p->fence || p->dead)
		return;
	for (size_t i = 0; i < DL_FENCE_SLOTS; i++) {
		struct dl_fence_slot *s = &p->fence[i];

		if (s->used && s->dev == dev && s->ino == ino &&
		    !__atomic_load_n(&s->lost, __ATOMIC_RELAXED)) {
			__atomic_store_n(&s->lost, 1, __ATOMIC_RELEASE);
			dl_log(DL_LOG_NOTICE,
			       "ctl: pid %d: lock lost, its writes to %ju:%ju "
			       "now fail with EIO",
			       (int)p->pid, (uintmax_t)dev, (uintmax_t)ino);
		}
	}
}

/* a lock of @l->owner on @l->obj is lost: fence its holders' writes */
static void fence_lost(struct ctlsock *cs, const struct ctl_lost *l)
{
	struct ctl_obj *o;

	for (o = cs->objs; o && o->id != l->obj; o = o->next)
		;
	if (!o || o->named)
		return;
	for (struct ctl_proc *p = cs->procs; p; p = p->next)
		if (p->owner == l->owner)
			fence_mark(p, o->dev, o->ino);
	for (struct ctl_desc *d = cs->descs; d; d = d->next) {
		if (d->owner != l->owner)
			continue;
		for (struct ctl_proc *p = cs->procs; p; p = p->next)
			if (p->fence && !p->dead &&
			    proc_has_desc(cs, p->pid, d->fd))
				fence_mark(p, o->dev, o->ino);
	}
}

static void conn_forget_pend(struct ctl_conn *c, struct ctl_pend *p)
{
	(void)c;
	if (!p->pprev)
		return;
	*p->pprev = p->next;
	if (p->next)
		p->next->pprev = p->pprev;
	p->next = NULL;
	p->pprev = NULL;
}

/*
 * The uid a grant of @kind on @o would be charged to (ctl_user's @locks),
 * and whether it would start a new lock record (false: the owner may
 * already hold locks there, so the grant adds nothing to count).
 */
static struct ctl_user *hold_charge(uint8_t kind, struct ctl_proc *proc,
				    struct ctl_conn *c, struct ctl_desc *d,
				    const struct ctl_obj *o, bool *isnew)
{
	switch (kind) {
	case DLK_POSIX:
		*isnew = !objset_has(proc->posix, proc->nposix, o);
		return proc->user;
	case DLK_NAMED:
		*isnew = !objset_has(c->named, c->nnamed, o);
		return c->user;
	case DLK_FLOCK:
		*isnew = !d->flock;
		return d->user;
	default:
		*isnew = !d->ofd;
		return d->user;
	}
}

/* would a new record charged to @u pass max_locks_per_uid? */
static bool hold_over_cap(const struct ctlsock *cs, const struct ctl_user *u)
{
	return u->uid != 0 && cs->pol.max_locks &&
	       u->locks >= cs->pol.max_locks;
}

static void hold_warn(struct ctlsock *cs, const struct ctl_user *u)
{
	ctl_warn_limited(cs,
			 "ctl: uid %u holds %u lock records "
			 "(max_locks_per_uid): refused",
			 (unsigned)u->uid, u->locks);
}

/*
 * A grant that would start a record past the cap (others of the uid's
 * requests were granted meanwhile): give it back and answer ENOLCK.  The
 * owner held nothing there (a new record), so releasing its whole space
 * on the file releases just this grant.
 */
static bool pend_over_cap(struct ctlsock *cs, struct ctl_pend *p)
{
	bool isnew;
	struct ctl_user *u;

	if (p->kind == DLK_NAMED && !p->conn)
		return false; /* released below anyway */
	u = hold_charge(p->kind, p->proc, p->conn, p->desc, p->obj, &isnew);
	if (!isnew || !hold_over_cap(cs, u))
		return false;
	lockmgr_release_owner(cs->lm, p->obj->id,
			      p->kind == DLK_POSIX || p->kind == DLK_OFD
				      ? DL_SPACE_POSIX
				      : DL_SPACE_FLOCK,
			      p->owner);
	hold_warn(cs, u);
	return true;
}

/* a decided request: record the grant, answer, drop the references */
static void pend_complete(struct ctlsock *cs, struct ctl_pend *p)
{
	struct ctl_conn *c = p->conn;
	struct ctl_desc *d = p->desc;
	int err = p->err;

	if (c)
		conn_forget_pend(c, p);
	if (err == 0 && pend_over_cap(cs, p))
		err = -ENOLCK;
	if (err == 0) {
		int added;

		switch (p->kind) {
		case DLK_POSIX:
			added = p->proc->dead ? -1
					      : objset_add(&p->proc->posix,
							   &p->proc->nposix,
							   &p->proc->capposix,
							   p->obj);
			if (added < 0)
				lockmgr_release_owner(cs->lm, p->obj->id,
						      DL_SPACE_POSIX,
						      p->proc->owner);
			else if (added)
				p->proc->user->locks++;
			break;
		case DLK_OFD:
		case DLK_FLOCK:
			if (!(p->kind == DLK_FLOCK ? d->flock : d->ofd))
				d->user->locks++;
			if (p->kind == DLK_FLOCK)
				d->flock = true;
			else
				d->ofd = true;
			if (d->released) {
				/* its last holder went while it waited */
				d->released = false;
				desc_release(cs, d);
			} else if (d->pidfd < 0) {
				desc_watch(cs, d, p->proc->pid);
				if (d->pidfd < 0) /* died meanwhile */
					desc_check(cs, d, 0);
			}
			break;
		case DLK_NAMED:
			added = c ? objset_add(&c->named, &c->nnamed,
					       &c->capnamed, p->obj)
				  : -1;
			if (added < 0)
				lockmgr_release_owner(cs->lm, p->obj->id,
						      DL_SPACE_FLOCK, p->owner);
			else if (added)
				c->user->locks++;
			break;
		default:
			break;
		}
	}
	if (c && !reply(cs, c, p->req_id, err, NULL))
		conn_close(cs, c);
	if (d) {
		d->pending--;
		desc_free_maybe(cs, d);
	}
	obj_put(cs, p->obj);
	p->proc->refs--;
	proc_free_maybe(cs, p->proc);
	p->user->waits--;
	user_free_maybe(cs, p->user);
	cs->npend--;
	free(p);
}

static void ctl_drain(struct ctlsock *cs)
{
	struct ctl_pend *p;
	struct ctl_lost *l;
	uint64_t v;

	if (read(cs->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		dl_log(DL_LOG_ERR, "ctl: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&cs->qmutex);
	p = cs->qhead;
	cs->qhead = cs->qtail = NULL;
	l = cs->lost;
	cs->lost = NULL;
	pthread_mutex_unlock(&cs->qmutex);
	while (p) {
		struct ctl_pend *next = p->qnext;

		pend_complete(cs, p);
		p = next;
	}
	while (l) {
		struct ctl_lost *next = l->next;

		fence_lost(cs, l);
		free(l);
		l = next;
	}
}

/* ---- naming ------------------------------------------------------------- */

/*
 * The cluster-wide name of the file behind @fd: inside our mount, its path
 * relative to the mount root (as the mount names it); else the label of
 * the daemon's own paths= prefix it lies under (ctl_policy.h).  Nothing
 * the client says takes part: its DLOCK_PATHS only chose to send the
 * file.  Returns 0 with a malloc'd *out, or a negative errno and a reason.
 */
static int ctl_name(struct ctlsock *cs, int fd, char **out, const char **why)
{
	char link[64], path[PATH_MAX + 1];
	const char *rel;
	ssize_t n;
	size_t plen;
	int ret;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0 || path[0] != '/') {
		*why = "the descriptor is not a file with a path";
		return -EBADF;
	}
	path[n] = '\0';
	if (n > 10 && strcmp(path + n - 10, " (deleted)") == 0) {
		*why = "the file was deleted";
		return -ENOENT;
	}
	if (cs->mountpoint) {
		plen = strlen(cs->mountpoint);
		if (strncmp(path, cs->mountpoint, plen) == 0 &&
		    (path[plen] == '/' || path[plen] == '\0')) {
			rel = path + plen + (path[plen] == '/');
			*out = strdup(rel[0] ? rel : ".");
			return *out ? 0 : -ENOMEM;
		}
	}
	ret = ctlpol_name(&cs->pol, path, out);
	if (ret == -ENOENT) {
		*why = "the file lies under no prefix of the daemon's paths= "
		       "(its configuration names the files it locks)";
		return -ENOLCK;
	}
	return ret;
}

/*
 * The resource of named lock @name (@len bytes) for connection @c: its
 * uid's namespace, or a namespace its groups share; root may name another
 * user's lock as "UID/NAME" (to list or break it).
 */
static int ctl_named(struct ctlsock *cs, const struct ctl_conn *c,
		     const char *name, size_t len, bool literal, char **out)
{
	size_t i = 0;

	while (i < len && name[i] >= '0' && name[i] <= '9')
		i++;
	if (literal && c->uid == 0 && i > 0 && i < len && name[i] == '/')
		return asprintf(out, "name:%.*s", (int)len, name) < 0 ? -ENOMEM
								      : 0;
	return ctlpol_named(&cs->pol, name, len, c->uid, c->gids, c->ngids,
			    out);
}

/* ---- requests ----------------------------------------------------------- */

struct ctl_req {
	struct ctlsock *cs;
	struct ctl_conn *c;
	const struct dl_proto_msg *m;
	int fd; /* received, or -1; ours to close unless taken (-1) */
	const char *why;
};

/* a descriptor opened with O_PATH names a file the caller may not be
 * able to open: as the kernel's lock calls, refuse it */
static int req_no_opath(struct ctl_req *r)
{
	int fl = fcntl(r->fd, F_GETFL);

	if (fl == -1)
		return -errno;
	if (fl & O_PATH) {
		r->why = "an O_PATH descriptor is refused";
		return -EBADF;
	}
	return 0;
}

/* the object a lock request is about; 0 or -errno (r->why set) */
static int req_obj(struct ctl_req *r, struct ctl_obj **out)
{
	struct ctlsock *cs = r->cs;
	const struct dl_proto_msg *m = r->m;
	struct stat st;
	char *name = NULL;
	int ret;

	if (m->kind == DLK_NAMED) {
		if (m->str[0].len == 0 || m->str[0].len > CTL_NAME_MAX) {
			r->why = "a lock name must have 1 to 4096 bytes";
			return -EINVAL;
		}
		ret = ctl_named(cs, r->c, m->str[0].p, m->str[0].len, false,
				&name);
		if (ret < 0)
			return ret;
		*out = obj_get(cs, 0, 0, true, name);
		free(name);
		return *out ? 0 : -ENOMEM;
	}
	if (fstat(r->fd, &st) == -1)
		return -errno;
	if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
		r->why = "not a regular file or directory";
		return -EBADF;
	}
	ret = ctl_name(cs, r->fd, &name, &r->why);
	if (ret < 0)
		return ret;
	*out = obj_get(cs, st.st_dev, st.st_ino, false, name);
	free(name);
	return *out ? 0 : -ENOMEM;
}

/* the kernel's access rules: a description opened with O_PATH locks
 * nothing; a POSIX write lock needs it writable, a read lock readable */
static int req_access(struct ctl_req *r)
{
	int fl, acc;

	if (r->m->kind == DLK_NAMED)
		return 0;
	fl = fcntl(r->fd, F_GETFL);
	if (fl == -1)
		return -errno;
	if (fl & O_PATH) {
		r->why = "an O_PATH descriptor cannot be locked";
		return -EBADF;
	}
	if (r->m->kind == DLK_FLOCK || r->m->hdr.type == DLP_UNLOCK ||
	    r->m->hdr.type == DLP_GETLK)
		return 0;
	acc = fl & O_ACCMODE;
	if (r->m->ltype == DLP_WRLCK && acc == O_RDONLY) {
		r->why = "a write lock needs a descriptor open for writing";
		return -EBADF;
	}
	if (r->m->ltype == DLP_RDLCK && acc == O_WRONLY) {
		r->why = "a read lock needs a descriptor open for reading";
		return -EBADF;
	}
	return 0;
}

/* fill @lr from the message (range, type, space) */
static int req_fill(struct ctl_req *r, struct lockmgr_req *lr)
{
	const struct dl_proto_msg *m = r->m;

	*lr = (struct lockmgr_req){
		.type = (enum dl_lock_type)m->ltype,
		.pid = (uint32_t)r->c->pid,
		.wait = (m->flags & DLP_F_WAIT) != 0,
		.ofd = m->kind == DLK_OFD,
	};
	if (m->kind == DLK_FLOCK || m->kind == DLK_NAMED) {
		lr->space = DL_SPACE_FLOCK;
		lr->start = 0;
		lr->end = DL_RANGE_EOF;
		return 0;
	}
	lr->space = DL_SPACE_POSIX;
	if (range_from_flock(m->l_start, m->l_len, &lr->start, &lr->end) < 0) {
		r->why = "bad byte range";
		return -EINVAL;
	}
	return 0;
}

/*
 * The common start of a lock, unlock or test: the request, its access
 * check and its object, referenced (the caller obj_put()s it).
 */
static int req_begin(struct ctl_req *r, struct lockmgr_req *lr,
		     struct ctl_obj **o)
{
	int ret = req_fill(r, lr);

	if (ret == 0)
		ret = req_access(r);
	if (ret == 0)
		ret = req_obj(r, o);
	if (ret == 0) {
		lr->obj = (*o)->id;
		lr->resource = (*o)->name;
	}
	return ret;
}

/*
 * The owner of a POSIX request (the process) or a named one (the
 * connection); false for flock and OFD requests, whose owner is the open
 * file description.
 */
static bool req_conn_owner(const struct ctl_req *r, uint64_t *owner)
{
	switch (r->m->kind) {
	case DLK_POSIX:
		*owner = r->c->proc->owner;
		return true;
	case DLK_NAMED:
		*owner = r->c->owner;
		return true;
	default:
		return false;
	}
}

static int do_lock(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	struct ctl_conn *c = r->c;
	const struct dl_proto_msg *m = r->m;
	struct ctl_desc *d = NULL;
	struct lockmgr_req lr;
	struct ctl_obj *o;
	struct ctl_pend *p;
	int ret;

	if (c->uid != 0 && cs->pol.max_waits &&
	    c->user->waits >= cs->pol.max_waits) {
		ctl_warn_limited(cs,
				 "ctl: uid %u has %u requests in flight "
				 "(max_waits_per_uid): refused",
				 (unsigned)c->uid, c->user->waits);
		r->why = "too many requests in flight for this user "
			 "(max_waits_per_uid)";
		return -ENOLCK;
	}
	ret = req_begin(r, &lr, &o);
	if (ret < 0)
		return ret;
	if (!req_conn_owner(r, &lr.owner)) {
		d = desc_find(cs, o, r->fd);
		if (!d) {
			d = desc_new(cs, o, r->fd, c->user);
			r->fd = -1;
			if (!d) {
				obj_put(cs, o);
				return -ENOMEM;
			}
		}
		lr.owner = d->owner;
	}
	{
		bool isnew;
		struct ctl_user *u =
			hold_charge(m->kind, c->proc, c, d, o, &isnew);

		if (isnew && hold_over_cap(cs, u)) {
			hold_warn(cs, u);
			r->why = "too many locks held by this user "
				 "(max_locks_per_uid)";
			obj_put(cs, o);
			if (d)
				desc_free_maybe(cs, d);
			return -ENOLCK;
		}
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		obj_put(cs, o);
		if (d)
			desc_free_maybe(cs, d);
		return -ENOMEM;
	}
	*p = (struct ctl_pend){ .cs = cs,
				.conn = c,
				.req_id = m->hdr.id,
				.kind = m->kind,
				.obj = o,
				.proc = c->proc,
				.desc = d,
				.user = c->user };
	c->user->waits++;
	c->proc->refs++;
	if (d)
		d->pending++;
	cs->npend++;
	p->owner = lr.owner;
	p->wait_id = lockmgr_prepare(cs->lm, &lr, ctl_done, p);
	if (!p->wait_id) {
		p->err = -ENOMEM;
		p->conn = NULL; /* answered by our caller */
		pend_complete(cs, p);
		return -ENOMEM;
	}
	p->next = c->pend;
	if (p->next)
		p->next->pprev = &p->next;
	p->pprev = &c->pend;
	c->pend = p;
	lockmgr_submit(cs->lm, p->wait_id);
	return 1; /* answered by pend_complete() */
}

static int do_unlock(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	struct ctl_conn *c = r->c;
	struct ctl_desc *d = NULL;
	struct lockmgr_req lr;
	struct ctl_obj *o;
	int ret;

	ret = req_begin(r, &lr, &o);
	if (ret < 0)
		return ret;
	lr.type = DL_UNLCK;
	if (!req_conn_owner(r, &lr.owner)) {
		d = desc_find(cs, o, r->fd);
		if (!d) { /* never locked through it: nothing to do */
			obj_put(cs, o);
			return 0;
		}
		lr.owner = d->owner;
	}
	ret = lockmgr_unlock(cs->lm, &lr);
	if (ret == 0 && r->m->kind == DLK_FLOCK) {
		if (d->flock)
			d->user->locks--;
		d->flock = false;
		desc_free_maybe(cs, d);
	} else if (ret == 0 && r->m->kind == DLK_NAMED) {
		for (size_t i = 0; i < c->nnamed; i++)
			if (c->named[i] == o) {
				objset_del(cs, c->named, &c->nnamed, i);
				c->user->locks--;
				break;
			}
	}
	obj_put(cs, o);
	return ret;
}

static int do_getlk(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	struct ctl_conn *c = r->c;
	struct dl_proto_msg rep = { .hdr = { .type = DLP_REPLY,
					     .id = r->m->hdr.id } };
	struct dl_lock_info info;
	struct ctl_desc *d;
	struct lockmgr_req lr;
	struct ctl_obj *o;
	int ret;

	ret = req_begin(r, &lr, &o);
	if (ret < 0)
		return ret;
	if (!req_conn_owner(r, &lr.owner)) {
		d = desc_find(cs, o, r->fd);
		/* no record: it holds nothing, any fresh owner will do */
		lr.owner = d ? d->owner : CTL_OWNER_TAG | ++cs->next_owner;
	}
	ret = lockmgr_getlk(cs->lm, &lr, &info);
	obj_put(cs, o);
	if (ret < 0)
		return ret;
	if (ret == 1) {
		rep.found = true;
		rep.space = (uint8_t)info.space;
		rep.ltype = (uint8_t)info.type;
		rep.start = info.start;
		rep.end = info.end;
		rep.owner = lockmgr_owner_shown(cs->lm, info.owner);
		rep.pid = info.pid;
		rep.token = info.token;
		rep.since_ms = info.since_ms;
		proto_str(&rep, 0, info.host);
	}
	return conn_send(cs, c, &rep) ? 1 : -EPIPE;
}

static int do_closed(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	struct ctl_proc *p = r->c->proc;
	dev_t dev = (dev_t)r->m->dev;
	ino_t ino = (ino_t)r->m->ino;

	/* as on a local filesystem: any close drops the process's POSIX
	 * locks on the file */
	for (size_t i = p->nposix; i-- > 0;)
		if (p->posix[i]->dev == dev && p->posix[i]->ino == ino)
			proc_release_posix(cs, p, i);
	desc_check_many(cs, true, dev, ino, p->pid);
	/* its last descriptor of the file: the fence slots are free again */
	if (p->fence && !proc_has_inode(p->pid, dev, ino))
		for (size_t i = 0; i < DL_FENCE_SLOTS; i++)
			if (p->fence[i].used && p->fence[i].dev == dev &&
			    p->fence[i].ino == ino) {
				__atomic_store_n(&p->fence[i].lost, 0,
						 __ATOMIC_RELAXED);
				p->fence[i].used = 0;
				p->fence[i].dev = p->fence[i].ino = 0;
			}
	return 0;
}

/* make @p's fence page: a sealed memfd we map writable */
static int fence_create(struct ctl_proc *p)
{
	int fd, ret;
	void *m;

	fd = memfd_create("dlock-fence", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (fd < 0)
		return -errno;
	if (ftruncate(fd, DL_FENCE_PAGE_SIZE) == -1 ||
	    fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) ==
		    -1)
		goto out_close;
	m = mmap(NULL, DL_FENCE_PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED,
		 fd, 0);
	if (m == MAP_FAILED)
		goto out_close;
	p->fence_fd = fd;
	p->fence = m;
	return 0;

out_close:
	ret = -errno;
	close(fd);
	return ret;
}

/* send @m with descriptor @fd now (the shim waits for it: nothing is
 * queued before it); false when the connection must be dropped */
static bool conn_send_fd(struct ctl_conn *c, const struct dl_proto_msg *m,
			 int fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	unsigned char buf[DL_PROTO_HDR_LEN + 64];
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov,
			     .msg_iovlen = 1,
			     .msg_control = ctl.b,
			     .msg_controllen = sizeof(ctl.b) };
	int len = proto_encode(m, buf, sizeof(buf));

	if (len < 0 || c->out)
		return false;
	iov = (struct iovec){ buf, (size_t)len };
	memset(&ctl, 0, sizeof(ctl));
	CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
	CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
	CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
	return sendmsg(c->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) == len;
}

/* reply @m with a read-only description of memfd @fd (a shared page):
 * 1, or a negative errno when the connection must be dropped */
static int conn_send_ro(struct ctl_conn *c, const struct dl_proto_msg *m,
			int fd)
{
	char link[64];
	bool ok;
	int ro;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ro = open(link, O_RDONLY | O_CLOEXEC);
	if (ro < 0)
		return -errno;
	ok = conn_send_fd(c, m, ro);
	close(ro);
	return ok ? 1 : -EPIPE;
}

/*
 * FENCE: a slot in the caller's fence page for the descriptor's file (one
 * not lost yet), and the page itself, read-only, when asked.
 */
static int do_fence(struct ctl_req *r)
{
	struct dl_proto_msg rep = { .hdr = { .type = DLP_REPLY,
					     .id = r->m->hdr.id } };
	struct ctl_proc *p = r->c->proc;
	size_t i, free_slot = DL_FENCE_SLOTS;
	uint64_t lease, old;
	struct stat st;
	int ret;

	ret = req_no_opath(r);
	if (ret < 0)
		return ret;
	if (fstat(r->fd, &st) == -1)
		return -errno;
	if (r->m->flags & DLP_F_LEASE) {
		int lfd = lockmgr_lease_memfd(r->cs->lm);

		if (lfd < 0) {
			r->why = "no lease page";
			return -EOPNOTSUPP;
		}
		return conn_send_ro(r->c, &rep, lfd);
	}
	if (!p->fence) {
		ret = fence_create(p);
		if (ret < 0) {
			r->why = "cannot make the fence page";
			return ret;
		}
	}
	for (i = 0; i < DL_FENCE_SLOTS; i++) {
		const struct dl_fence_slot *s = &p->fence[i];

		if (!s->used) {
			if (free_slot == DL_FENCE_SLOTS)
				free_slot = i;
		} else if (s->dev == st.st_dev && s->ino == st.st_ino &&
			   !__atomic_load_n(&s->lost, __ATOMIC_RELAXED)) {
			break;
		}
	}
	if (i == DL_FENCE_SLOTS) {
		if (free_slot == DL_FENCE_SLOTS) {
			r->why = "the fence page is full";
			return -ENOSPC;
		}
		i = free_slot;
		p->fence[i].dev = st.st_dev;
		p->fence[i].ino = st.st_ino;
		__atomic_store_n(&p->fence[i].lease, 0, __ATOMIC_RELAXED);
		p->fence[i].used = 1;
	}
	/* a FENCE follows a grant: its locks live under the current lease
	 * (or an older one, which fences it sooner) */
	lease = atomic_load(&lockmgr_lease(r->cs->lm)->gen);
	old = __atomic_load_n(&p->fence[i].lease, __ATOMIC_RELAXED);
	if (!old || (lease && lease < old))
		__atomic_store_n(&p->fence[i].lease, lease, __ATOMIC_RELEASE);
	rep.start = i;
	if (!(r->m->flags & DLP_F_PAGE))
		return conn_send(r->cs, r->c, &rep) ? 1 : -EPIPE;
	return conn_send_ro(r->c, &rep, p->fence_fd);
}

static int do_cancel(struct ctl_req *r)
{
	for (struct ctl_pend *p = r->c->pend; p; p = p->next)
		if (p->req_id == r->m->target_id) {
			lockmgr_interrupt(r->cs->lm, p->wait_id);
			break;
		}
	return 1; /* no answer of its own: the request's answer follows */
}

static int do_status(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	char *text = NULL, *out = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *f;
	int ret;

	ret = lockmgr_status(cs->lm, cs->backend_shown, &text);
	if (ret < 0)
		return ret;
	f = open_memstream(&out, &len);
	if (!f) {
		free(text);
		return -ENOMEM;
	}
	/* one key=value per line: split "held=1 waiting=0 lost=0" */
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "held=", 5) == 0) {
			for (char *s = line; *s; s++)
				if (*s == ' ')
					*s = '\n';
		}
		fprintf(f, "%s\n", line);
	}
	fprintf(f,
		"mode=%s\nsocket=%s\nclients=%zu\nprocesses=%zu\n"
		"descriptions=%zu\nrequests=%zu\n",
		cs->mountpoint ? "mount" : "agent", cs->path, cs->nconns,
		cs->nprocs, cs->ndescs, cs->npend);
	if (cs->mountpoint)
		fprintf(f, "mountpoint=%s\n", cs->mountpoint);
	free(text);
	if (fclose(f) != 0) {
		free(out);
		return -ENOMEM;
	}
	ret = reply(cs, r->c, r->m->hdr.id, 0, out) ? 1 : -EPIPE;
	free(out);
	return ret;
}

/* the resource a LIST or BREAK is about (NULL: all, LIST only) */
static int req_resource(struct ctl_req *r, char **out)
{
	const struct dl_proto_msg *m = r->m;
	int ret;

	*out = NULL;
	if ((m->flags & DLP_F_FD) && r->c->uid != 0) {
		ret = req_no_opath(r);
		if (ret < 0)
			return ret;
	}
	if (m->flags & DLP_F_FD)
		return ctl_name(r->cs, r->fd, out, &r->why);
	if (m->nstr == 0)
		return 0;
	if (m->str[0].len == 0) {
		r->why = "empty resource name";
		return -EINVAL;
	}
	if (m->str[0].len > 5 && memcmp(m->str[0].p, "name:", 5) == 0)
		return ctl_named(r->cs, r->c, m->str[0].p + 5,
				 (size_t)m->str[0].len - 5, true, out);
	*out = strndup(m->str[0].p, m->str[0].len);
	return *out ? 0 : -ENOMEM;
}

/* ---- what a caller may see --------------------------------------------- */

/* the access checks of one LIST, made as the caller (ctl_acc_main) */
struct ctl_acc {
	uid_t uid;
	const gid_t *gids; /* [0]: its primary group */
	size_t ngids;
	char **paths; /* NULL: no local path, not visible */
	bool *ok;
	size_t n;
};

/*
 * A thread of its own takes on the caller's uid, gid and groups (raw
 * system calls: they change this thread only, and its credentials die
 * with it) and asks the kernel whether the caller could open each path.
 */
static void *ctl_acc_main(void *arg)
{
	struct ctl_acc *a = arg;

	if (a->uid != geteuid() &&
	    (syscall(SYS_setgroups, a->ngids, a->gids) == -1 ||
	     syscall(SYS_setresgid, -1, a->gids[0], -1) == -1 ||
	     syscall(SYS_setresuid, -1, a->uid, -1) == -1))
		return NULL; /* cannot act as the caller: it sees none */
	for (size_t i = 0; i < a->n; i++)
		a->ok[i] = a->paths[i] && (faccessat(AT_FDCWD, a->paths[i],
						     R_OK, AT_EACCESS) == 0 ||
					   faccessat(AT_FDCWD, a->paths[i],
						     W_OK, AT_EACCESS) == 0);
	return NULL;
}

/* run @a's checks; -errno when no thread could be made */
static int ctl_acc_run(struct ctl_acc *a)
{
	pthread_t t;
	int ret = -pthread_create(&t, NULL, ctl_acc_main, a);

	if (ret == 0)
		pthread_join(t, NULL);
	return ret;
}

/* a named lock @res ("name:...") visible to @c: its namespace, or one
 * shared with its groups */
static bool ctl_named_visible(const struct ctlsock *cs,
			      const struct ctl_conn *c, const char *res)
{
	const char *n = res + 5;
	size_t i = 0;
	char own[32];

	snprintf(own, sizeof(own), "%u/", (unsigned)c->uid);
	if (strncmp(n, own, strlen(own)) == 0)
		return true;
	while (n[i] >= '0' && n[i] <= '9')
		i++;
	if (i > 0 && n[i] == '/')
		return false; /* another user's namespace */
	return ctlpol_shared(&cs->pol, n, strlen(n), c->gids, c->ngids);
}

/* is @owner (of this daemon) one of the processes or connections of
 * @c's user? */
static bool ctl_owner_of_uid(const struct ctlsock *cs, uid_t uid,
			     uint64_t owner)
{
	for (const struct ctl_conn *o = cs->conns; o; o = o->next)
		if (o->uid == uid &&
		    (o->owner == owner || o->proc->owner == owner))
			return true;
	return false;
}

struct ctl_item {
	struct dl_lock_info info;
	char *res;
};

struct ctl_list {
	struct ctlsock *cs;
	struct ctl_conn *c;
	uint32_t id;
	const char *resource;
	bool failed;
	bool filter; /* collect in @items, sent after ctl_list_filter() */
	struct ctl_item *items;
	size_t nitems, capitems;
};

static bool list_send(struct ctl_list *l, const struct dl_lock_info *info,
		      const char *res)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_ITEM, .id = l->id } };

	m.space = (uint8_t)info->space;
	m.ltype = (uint8_t)info->type;
	m.waiting = info->waiting;
	m.start = info->start;
	m.end = info->end;
	m.owner = lockmgr_owner_shown(l->cs->lm, info->owner);
	m.pid = info->pid;
	m.token = info->token;
	m.since_ms = info->since_ms;
	proto_str(&m, 0, res);
	proto_str(&m, 1, info->host);
	return conn_send(l->cs, l->c, &m);
}

static int list_one(const struct dl_lock_info *info, void *arg)
{
	struct ctl_list *l = arg;
	const char *res = info->resource ? info->resource
			  : l->resource	 ? l->resource
					 : "?";
	struct ctl_item *it;

	if (!l->filter) {
		if (!list_send(l, info, res)) {
			l->failed = true;
			return 1;
		}
		return 0;
	}
	if (l->nitems == l->capitems) {
		size_t nc = l->capitems ? l->capitems * 2 : 16;

		it = realloc(l->items, nc * sizeof(*it));
		if (!it)
			return -ENOMEM;
		l->items = it;
		l->capitems = nc;
	}
	it = &l->items[l->nitems];
	it->info = *info;
	it->info.resource = NULL;
	it->res = strdup(res);
	if (!it->res)
		return -ENOMEM;
	l->nitems++;
	return 0;
}

/*
 * A non-root caller sees a lock when it is its own, a named lock of its
 * namespaces, or a lock on a file it could open here (the resource mapped
 * back through paths= or the mount, checked with its credentials).
 */
static int ctl_list_filter(struct ctl_list *l)
{
	struct ctl_conn *c = l->c;
	struct ctl_acc a = { .uid = c->uid,
			     .gids = c->gids,
			     .ngids = c->ngids,
			     .n = l->nitems };
	bool *vis = calloc(l->nitems + 1, sizeof(*vis));
	int ret = 0;

	a.paths = calloc(l->nitems + 1, sizeof(*a.paths));
	a.ok = calloc(l->nitems + 1, sizeof(*a.ok));
	if (!vis || !a.paths || !a.ok) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < l->nitems; i++) {
		const struct ctl_item *it = &l->items[i];

		if (strncmp(it->res, "name:", 5) == 0)
			vis[i] = ctl_named_visible(l->cs, c, it->res);
		else if (it->info.mine &&
			 ctl_owner_of_uid(l->cs, c->uid, it->info.owner))
			vis[i] = true;
		else if (ctlpol_local(&l->cs->pol, l->cs->mountpoint, it->res,
				      &a.paths[i]) == -ENOMEM)
			ret = -ENOMEM;
	}
	if (ret == 0)
		ret = ctl_acc_run(&a);
	for (size_t i = 0; ret == 0 && i < l->nitems; i++)
		if ((vis[i] || a.ok[i]) &&
		    !list_send(l, &l->items[i].info, l->items[i].res)) {
			l->failed = true;
			break;
		}
out:
	for (size_t i = 0; i < l->nitems; i++) {
		free(l->items[i].res);
		if (a.paths)
			free(a.paths[i]);
	}
	free(l->items);
	free(a.paths);
	free(a.ok);
	free(vis);
	return ret;
}

static int do_list(struct ctl_req *r)
{
	struct ctl_list l = { .cs = r->cs, .c = r->c, .id = r->m->hdr.id };
	char *res;
	int ret;

	ret = req_resource(r, &res);
	if (ret < 0)
		return ret;
	l.resource = res;
	/* root sees all; so does a caller about the descriptor it holds */
	l.filter = r->c->uid != 0 && !(r->m->flags & DLP_F_FD);
	if (l.filter && res && strncmp(res, "name:", 5) != 0) {
		/* a name it chose: one it could not open answers as one
		 * nobody locks, exists or not */
		char *path = NULL;
		bool ok = false;
		struct ctl_acc a = { .uid = r->c->uid,
				     .gids = r->c->gids,
				     .ngids = r->c->ngids,
				     .paths = &path,
				     .ok = &ok,
				     .n = 1 };

		ret = ctlpol_local(&r->cs->pol, r->cs->mountpoint, res, &path);
		if (ret != -ENOMEM)
			ret = ctl_acc_run(&a);
		free(path);
		if (ret < 0 || !ok) {
			free(res);
			return ret == -ENOMEM ? ret : 0;
		}
	}
	ret = lockmgr_list(r->cs->lm, res, list_one, &l);
	if (l.filter) {
		int fret = ctl_list_filter(&l);

		if (ret >= 0 && fret < 0)
			ret = fret;
	}
	free(res);
	if (l.failed)
		return -EPIPE;
	return ret;
}

static int do_break(struct ctl_req *r)
{
	char *res;
	int ret;

	if (r->c->uid != 0) {
		r->why = "only root may break a lock";
		return -EPERM;
	}
	ret = req_resource(r, &res);
	if (ret < 0)
		return ret;
	if (!res) {
		r->why = "break needs a file or a resource name";
		return -EINVAL;
	}
	dl_log(DL_LOG_NOTICE, "ctl: pid %d (uid 0) breaks %s", (int)r->c->pid,
	       res);
	ret = lockmgr_break(r->cs->lm, res);
	if (ret == -ENOENT)
		r->why = "no lock is held on it";
	else if (ret == -EOPNOTSUPP)
		r->why = "this backend cannot break locks";
	free(res);
	return ret;
}

/* serve one decoded request; false when the connection must go */
static bool conn_request(struct ctlsock *cs, struct ctl_conn *c,
			 const struct dl_proto_msg *m, int fd)
{
	struct ctl_req r = { cs, c, m, fd, NULL };
	bool wants_fd = m->flags & DLP_F_FD;
	bool ok = true;
	int ret;

	if (wants_fd != (fd >= 0) && m->hdr.type != DLP_CLOSED) {
		ret = -EBADMSG;
		r.why = wants_fd ? "the frame announces a descriptor it lacks"
				 : "a descriptor came with a frame not "
				   "announcing one";
		goto out_reply;
	}
	/* the process this connection speaks for is gone: whoever holds
	 * the connection now is not it (DESIGN §7) */
	if (m->hdr.type != DLP_STATUS && m->hdr.type != DLP_LIST &&
	    (c->proc->dead || ctl_pidfd_exited(c->proc->pidfd))) {
		ret = -ESRCH;
		r.why = "the process that opened this connection has exited";
		goto out_reply;
	}
	switch (m->hdr.type) {
	case DLP_LOCK:
		ret = do_lock(&r);
		break;
	case DLP_UNLOCK:
		ret = do_unlock(&r);
		break;
	case DLP_GETLK:
		ret = do_getlk(&r);
		break;
	case DLP_CLOSED:
		ret = fd >= 0 ? -EBADMSG : do_closed(&r);
		break;
	case DLP_CANCEL:
		ret = do_cancel(&r);
		break;
	case DLP_STATUS:
		ret = do_status(&r);
		break;
	case DLP_LIST:
		ret = do_list(&r);
		break;
	case DLP_BREAK:
		ret = do_break(&r);
		break;
	case DLP_FENCE:
		ret = do_fence(&r);
		break;
	default:
		ret = -EBADMSG;
		r.why = "not a request";
		break;
	}
out_reply:
	if (r.fd >= 0)
		close(r.fd);
	if (ret == -EPIPE)
		return false;
	if (ret != 1)
		ok = reply(cs, c, m->hdr.id, ret < 0 ? ret : 0, r.why);
	if (ret < 0 && r.why)
		dl_log(DL_LOG_DEBUG, "ctl: pid %d %s: %s (%s)", (int)c->pid,
		       proto_type_name(m->hdr.type), strerror(-ret), r.why);
	/* a malformed frame, or a process gone, ends the conversation */
	return ok && ret != -EBADMSG && ret != -ESRCH;
}

/* ---- connections -------------------------------------------------------- */

static void conn_close(struct ctlsock *cs, struct ctl_conn *c)
{
	struct ctl_conn **pp;
	struct ctl_proc *p = c->proc;

	for (pp = &cs->conns; *pp && *pp != c; pp = &(*pp)->next)
		;
	if (!*pp)
		return; /* already closed */
	*pp = c->next;
	cs->nconns--;
	ctl_ep_del(cs, c->fd);
	close(c->fd);
	/* its waits end (EINTR); their done() finds no connection */
	while (c->pend) {
		struct ctl_pend *pend = c->pend;

		conn_forget_pend(c, pend);
		pend->conn = NULL;
		lockmgr_interrupt(cs->lm, pend->wait_id);
	}
	while (c->nnamed) {
		lockmgr_release_owner(cs->lm, c->named[c->nnamed - 1]->id,
				      DL_SPACE_FLOCK, c->owner);
		objset_del(cs, c->named, &c->nnamed, c->nnamed - 1);
		c->user->locks--;
	}
	free(c->named);
	free(c->gids);
	c->user->conns--;
	user_free_maybe(cs, c->user);
	while (c->out) {
		struct ctl_out *o = c->out;

		c->out = o->next;
		free(o);
	}
	free(c);

	p->nconns--;
	if (!p->dead && ctl_pidfd_exited(p->pidfd)) {
		proc_exit(cs, p);
	} else if (!p->dead && p->nconns == 0) {
		/*
		 * Alive without a connection: it exec'd (or is dying and
		 * its pidfd does not show it yet).  exec closed its
		 * close-on-exec descriptors, and that dropped its POSIX locks
		 * on their files unless another descriptor remains.
		 */
		for (size_t i = p->nposix; i-- > 0;)
			if (!proc_has_inode(p->pid, p->posix[i]->dev,
					    p->posix[i]->ino))
				proc_release_posix(cs, p, i);
		desc_check_many(cs, false, 0, 0, p->pid);
	}
	proc_free_maybe(cs, p);
}

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
static int ctl_peer_pidfd(int fd, const struct ucred *cred, pid_t *pid)
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
static int ctl_peer_groups(int fd, gid_t gid, gid_t **out, size_t *n)
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
	u = user_get(cs, cred.uid);
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
		user_free_maybe(cs, u);
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
	c->owner = CTL_OWNER_TAG | ++cs->next_owner;
	c->ep = (struct ctl_ep){ EP_CONN, c };
	c->proc = proc_get(cs, pid, pidfd, u);
	if (!c->proc || ctl_ep_add(cs, fd, EPOLLIN, &c->ep) < 0) {
		dl_log(DL_LOG_WARNING, "ctl: cannot take a client (pid %d)",
		       (int)pid);
		close(fd);
		free(c->gids);
		free(c);
		user_free_maybe(cs, u);
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
		reply(cs, c, ret == -EPROTONOSUPPORT ? m.hdr.id : 0, ret, why);
		conn_flush(cs, c);
		return false;
	}
	ok = conn_request(cs, c, &m, nfds ? fds[0] : -1);
	return ok;
}

/* ---- the thread ---------------------------------------------------------- */

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
			conn_close(cs, c);
		break;
	}
	case EP_PROC:
		proc_exit(cs, ep->ptr);
		proc_free_maybe(cs, ep->ptr);
		break;
	case EP_DESC: {
		struct ctl_desc *d = ep->ptr;

		d->pending++;
		desc_unwatch(cs, d); /* that process is gone */
		desc_check(cs, d, 0);
		d->pending--;
		desc_free_maybe(cs, d);
		break;
	}
	}
}

static void *ctl_main(void *arg)
{
	struct ctlsock *cs = arg;

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
	}
	return NULL;
}

/* ---- life cycle ---------------------------------------------------------- */

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

static int ctl_listen(struct ctlsock *cs, char *err, size_t errlen)
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

static void ctl_free(struct ctlsock *cs)
{
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
	while (cs->users) {
		struct ctl_user *u = cs->users;

		cs->users = u->next;
		free(u);
	}
	free(cs->rbuf);
	free(cs->path);
	free(cs->mountpoint);
	free(cs->backend_shown);
	free(cs);
}

/* every client costs descriptors: take all the hard limit allows */
static void ctl_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
			dl_log(DL_LOG_WARNING, "ctl: RLIMIT_NOFILE: %s",
			       strerror(errno));
	}
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

	/* every connection goes, as if its client had exited */
	while (cs->conns)
		conn_close(cs, cs->conns);
	/* their waits end: wait (bounded) for every done() */
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += CTL_STOP_WAIT_MS / 1000;
	for (;;) {
		pthread_mutex_lock(&cs->qmutex);
		while (!cs->qhead && cs->npend)
			if (pthread_cond_timedwait(&cs->qcond, &cs->qmutex,
						   &ts) == ETIMEDOUT)
				break;
		pthread_mutex_unlock(&cs->qmutex);
		if (!cs->qhead) {
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
		proc_exit(cs, p);
		proc_free_maybe(cs, p);
	}
	while (cs->descs && !leak) {
		struct ctl_desc *d = cs->descs;

		d->pending = 0;
		desc_release(cs, d);
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

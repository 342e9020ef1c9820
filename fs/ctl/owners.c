/*
 * owners.c - who may hold what through the socket, as the kernel has it.
 *
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
 *  - struct ctl_user counts what one uid holds (connections, requests in
 *    flight, lock records) against the caps of policy.h.
 *
 * The records say what an owner *may* hold; the lock manager knows what
 * it does hold.  Dropping a record releases the owner's locks through
 * ctl_release() (a job).  Socket thread only; no locks of its own.
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

struct ctl_user *ctl_user_get(struct ctlsock *cs, uid_t uid)
{
	struct ctl_user *u, *in;

	HASH_FIND(hh, cs->users, &uid, sizeof(uid), u);
	if (u)
		return u;
	u = calloc(1, sizeof(*u));
	if (!u)
		return NULL;
	u->uid = uid;
	HASH_ADD(hh, cs->users, uid, sizeof(u->uid), u);
	HASH_FIND(hh, cs->users, &uid, sizeof(uid), in);
	if (in != u) { /* out of memory */
		free(u);
		return NULL;
	}
	return u;
}

void ctl_user_free_maybe(struct ctlsock *cs, struct ctl_user *u)
{
	if (!u || u->conns || u->waits || u->locks || u->refs)
		return;
	HASH_DELETE(hh, cs->users, u);
	free(u);
}

/* an object's hash key: named, dev, ino and name, malloc'd */
static char *ctl_obj_key(dev_t dev, ino_t ino, bool named, const char *name,
			 size_t *len)
{
	uint64_t d = (uint64_t)dev, i = (uint64_t)ino;
	size_t nlen = strlen(name);
	char *k = malloc(1 + 2 * sizeof(uint64_t) + nlen);

	if (!k)
		return NULL;
	k[0] = named;
	memcpy(k + 1, &d, sizeof(d));
	memcpy(k + 1 + sizeof(d), &i, sizeof(i));
	memcpy(k + 1 + 2 * sizeof(d), name, nlen);
	*len = 1 + 2 * sizeof(uint64_t) + nlen;
	return k;
}

static void ctl_obj_free(struct ctl_obj *o)
{
	free(o->key);
	free(o->name);
	free(o);
}

struct ctl_obj *ctl_obj_get(struct ctlsock *cs, dev_t dev, ino_t ino,
			    bool named, const char *name)
{
	struct ctl_obj *o, *in;
	size_t klen;
	char *key = ctl_obj_key(dev, ino, named, name, &klen);

	if (!key)
		return NULL;
	HASH_FIND(hh, cs->objs, key, klen, o);
	if (o) {
		free(key);
		o->refs++;
		return o;
	}
	o = calloc(1, sizeof(*o));
	if (!o || !(o->name = strdup(name))) {
		free(o);
		free(key);
		return NULL;
	}
	o->key = key;
	o->keylen = klen;
	o->id = CTL_OBJ_TAG | ++cs->next_obj;
	o->dev = dev;
	o->ino = ino;
	o->named = named;
	o->refs = 1;
	HASH_ADD_KEYPTR(hh, cs->objs, o->key, o->keylen, o);
	HASH_FIND(hh, cs->objs, key, klen, in);
	if (in != o) { /* out of memory */
		ctl_obj_free(o);
		return NULL;
	}
	HASH_ADD(hh_id, cs->objs_by_id, id, sizeof(o->id), o);
	HASH_FIND(hh_id, cs->objs_by_id, &o->id, sizeof(o->id), in);
	if (in != o) {
		HASH_DELETE(hh, cs->objs, o);
		ctl_obj_free(o);
		return NULL;
	}
	return o;
}

struct ctl_obj *ctl_obj_by_id(struct ctlsock *cs, uint64_t id)
{
	struct ctl_obj *o;

	HASH_FIND(hh_id, cs->objs_by_id, &id, sizeof(id), o);
	return o;
}

void ctl_obj_put(struct ctlsock *cs, struct ctl_obj *o)
{
	if (!o || --o->refs)
		return;
	HASH_DELETE(hh, cs->objs, o);
	HASH_DELETE(hh_id, cs->objs_by_id, o);
	ctl_obj_free(o);
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
int ctl_objset_add(struct ctl_obj ***v, size_t *n, size_t *cap,
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
void ctl_objset_del(struct ctlsock *cs, struct ctl_obj **v, size_t *n, size_t i)
{
	struct ctl_obj *o = v[i];

	v[i] = v[--*n];
	ctl_obj_put(cs, o);
}

void ctl_proc_free_maybe(struct ctlsock *cs, struct ctl_proc *p)
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
	ctl_user_free_maybe(cs, p->user);
	free(p);
}

void ctl_proc_release_posix(struct ctlsock *cs, struct ctl_proc *p, size_t i)
{
	ctl_release(cs, p->posix[i]->id, DL_SPACE_POSIX, p->owner);
	ctl_objset_del(cs, p->posix, &p->nposix, i);
	p->user->locks--;
	ctl_user_free_maybe(cs, p->user);
}

/* the process is gone: every POSIX lock it held goes with it */
void ctl_proc_exit(struct ctlsock *cs, struct ctl_proc *p)
{
	if (p->dead)
		return;
	dl_log(DL_LOG_DEBUG, "ctl: process %d exited", (int)p->pid);
	while (p->nposix)
		ctl_proc_release_posix(cs, p, p->nposix - 1);
	p->dead = true;
	HASH_DELETE(hh, cs->live, p);
	ctl_ep_del(cs, p->pidfd);
	close(p->pidfd);
	p->pidfd = -1;
	/* the caller calls ctl_proc_free_maybe() */
}

/*
 * Take over @pidfd (a live process, numbered @pid): the record of that
 * process, made if new.  A live record of the same pid is the same
 * process: it was alive when @pidfd was taken, and pids are unique among
 * the living.
 */
struct ctl_proc *ctl_proc_get(struct ctlsock *cs, pid_t pid, int pidfd,
			      struct ctl_user *u)
{
	struct ctl_proc *p, *in;

	HASH_FIND(hh, cs->live, &pid, sizeof(pid), p);
	if (p) {
		if (!ctl_pidfd_exited(p->pidfd)) {
			close(pidfd);
			return p;
		}
		/* that pid died and was reused before we noticed */
		ctl_proc_exit(cs, p);
		ctl_proc_free_maybe(cs, p);
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
	p->owner = lockmgr_owner_new(cs->lm);
	HASH_ADD(hh, cs->live, pid, sizeof(p->pid), p);
	HASH_FIND(hh, cs->live, &pid, sizeof(pid), in);
	if (in != p) { /* out of memory */
		ctl_ep_del(cs, p->pidfd);
		close(p->pidfd);
		free(p);
		return NULL;
	}
	p->next = cs->procs;
	cs->procs = p;
	cs->nprocs++;
	u->refs++;
	return p;
}

/* does @pid have a descriptor of (@dev, @ino) open? */
bool ctl_proc_has_inode(pid_t pid, dev_t dev, ino_t ino)
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

/* does @pid hold the description @fd of ours? */
bool ctl_proc_has_desc(struct ctlsock *cs, pid_t pid, int fd)
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

	if (ctl_proc_has_desc(cs, hint, d->fd))
		return hint;
	if (hint != d->watch && ctl_proc_has_desc(cs, d->watch, d->fd))
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
		if (ctl_proc_has_desc(cs, (pid_t)n, d->fd))
			found = (pid_t)n;
	}
	closedir(proc);
	return found;
}

void ctl_desc_unwatch(struct ctlsock *cs, struct ctl_desc *d)
{
	ctl_ep_del(cs, d->pidfd);
	if (d->pidfd >= 0)
		close(d->pidfd);
	d->pidfd = -1;
	d->watch = 0;
}

void ctl_desc_watch(struct ctlsock *cs, struct ctl_desc *d, pid_t pid)
{
	int pfd;

	if (d->watch == pid && d->pidfd >= 0)
		return;
	pfd = ctl_pidfd_open(pid);
	if (pfd < 0)
		return; /* already gone: its exit was our event */
	ctl_desc_unwatch(cs, d);
	d->pidfd = pfd;
	d->watch = pid;
	if (ctl_ep_add(cs, pfd, EPOLLIN, &d->ep) < 0) {
		dl_log(DL_LOG_WARNING, "ctl: cannot watch pid %d", (int)pid);
		close(pfd);
		d->pidfd = -1;
	}
}

void ctl_desc_free_maybe(struct ctlsock *cs, struct ctl_desc *d)
{
	struct ctl_desc **p;

	if (d->pending || (!d->released && (d->flock || d->ofd)))
		return;
	for (p = &cs->descs; *p != d; p = &(*p)->next)
		;
	*p = d->next;
	cs->ndescs--;
	ctl_desc_unwatch(cs, d);
	close(d->fd);
	ctl_obj_put(cs, d->obj);
	d->user->refs--;
	ctl_user_free_maybe(cs, d->user);
	free(d);
}

/* nobody holds the description any more: its locks go */
void ctl_desc_release(struct ctlsock *cs, struct ctl_desc *d)
{
	dl_log(DL_LOG_DEBUG, "ctl: last close of a description of %s",
	       d->obj->name);
	if (d->flock)
		ctl_release(cs, d->obj->id, DL_SPACE_FLOCK, d->owner);
	if (d->ofd)
		ctl_release(cs, d->obj->id, DL_SPACE_POSIX, d->owner);
	d->user->locks -= (unsigned)d->flock + (unsigned)d->ofd;
	ctl_user_free_maybe(cs, d->user);
	d->flock = d->ofd = false;
	d->released = true;
	ctl_desc_unwatch(cs, d);
	ctl_desc_free_maybe(cs, d);
}

/*
 * Something may have closed @d's last descriptor (@hint: the process it
 * concerns): look for a holder, twice before giving up, so that a fork
 * racing with the first pass over /proc cannot hide one.
 */
void ctl_desc_check(struct ctlsock *cs, struct ctl_desc *d, pid_t hint)
{
	pid_t holder;

	if (d->released)
		return;
	holder = desc_find_holder(cs, d, hint);
	if (!holder)
		holder = desc_find_holder(cs, d, hint);
	if (holder)
		ctl_desc_watch(cs, d, holder);
	else
		ctl_desc_release(cs, d);
}

/* check every description of (@dev, @ino), or watched by @pid */
void ctl_desc_check_many(struct ctlsock *cs, bool by_inode, dev_t dev,
			 ino_t ino, pid_t pid)
{
	struct ctl_desc *d, *next;

	/* ctl_desc_check() may free d: hold it through pending */
	for (d = cs->descs; d; d = next) {
		bool match = by_inode ? d->obj->dev == dev && d->obj->ino == ino
				      : d->watch == pid;

		if (match && !d->released) {
			d->pending++;
			ctl_desc_check(cs, d, pid);
			d->pending--;
		}
		next = d->next;
		ctl_desc_free_maybe(cs, d);
	}
}

/* the description of @fd among ours, or NULL */
struct ctl_desc *ctl_desc_find(struct ctlsock *cs, struct ctl_obj *o, int fd)
{
	for (struct ctl_desc *d = cs->descs; d; d = d->next)
		if (!d->released && d->obj->dev == o->dev &&
		    d->obj->ino == o->ino &&
		    ctl_same_file(cs->self, d->fd, cs->self, fd))
			return d;
	return NULL;
}

/* a new description record taking over @fd (closed on failure) */
struct ctl_desc *ctl_desc_new(struct ctlsock *cs, struct ctl_obj *o, int fd,
			      struct ctl_user *u)
{
	struct ctl_desc *d = calloc(1, sizeof(*d));

	if (!d) {
		close(fd);
		return NULL;
	}
	d->owner = lockmgr_owner_new(cs->lm);
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

/*
 * The uid a grant of @kind on @o would be charged to (ctl_user's @locks),
 * and whether it would start a new lock record (false: the owner may
 * already hold locks there, so the grant adds nothing to count).
 */
struct ctl_user *ctl_hold_charge(uint8_t kind, struct ctl_proc *proc,
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
bool ctl_hold_over_cap(const struct ctlsock *cs, const struct ctl_user *u)
{
	return u->uid != 0 && cs->pol.max_locks &&
	       u->locks >= cs->pol.max_locks;
}

void ctl_hold_warn(struct ctlsock *cs, const struct ctl_user *u)
{
	ctl_warn_limited(cs,
			 "ctl: uid %u holds %u lock records "
			 "(max_locks_per_uid): refused",
			 (unsigned)u->uid, u->locks);
}

/*
 * fence.c - lost locks fail the holder's writes with EIO, as Linux NFS
 * does.
 *
 * Each client process that asks (DLP_FENCE, after a grant) gets a fence
 * page (proto.h): a sealed memfd we map writable and pass read-only,
 * with one slot per file it locked.  The lock manager's lost hook
 * (ctl_lost(), any thread) queues a notice for the socket thread, which
 * sets the slot lost: a POSIX lock marks its process, a flock/OFD lock
 * every fenced process still holding the description.  The lease page
 * (the lock manager's, passed read-only with DLP_F_LEASE) lets the shim
 * fence by the clock as well.  Socket thread only, but ctl_lost().
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

/* the manager's lost hook (any thread): queue it for the socket thread */
void ctl_lost(void *ctx, uint64_t obj, enum dl_space space, uint64_t owner)
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
void ctl_fence_lost(struct ctlsock *cs, const struct ctl_lost *l)
{
	struct ctl_obj *o = ctl_obj_by_id(cs, l->obj);

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
			    ctl_proc_has_desc(cs, p->pid, d->fd))
				fence_mark(p, o->dev, o->ino);
	}
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

/* ctl_reply @m with a read-only description of memfd @fd (a shared page):
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
int ctl_do_fence(struct ctl_req *r)
{
	struct dl_proto_msg rep = { .hdr = { .type = DLP_REPLY,
					     .id = r->m->hdr.id } };
	struct ctl_proc *p = r->c->proc;
	size_t i, free_slot = DL_FENCE_SLOTS;
	uint64_t lease, old;
	struct stat st;
	int ret;

	ret = ctl_req_no_opath(r);
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
		return ctl_conn_send(r->cs, r->c, &rep) ? 1 : -EPIPE;
	return conn_send_ro(r->c, &rep, p->fence_fd);
}

/*
 * requests.c - the control socket's requests, translated into lock
 * manager calls.
 *
 * Each handler validates a decoded frame (proto.h), names the object
 * (naming.h for the mount, policy.h for paths= and named locks), finds
 * the owner (owners.c) and either answers at once or hands the backend
 * call to a job (jobs.c) whose done() answers.  A lock request is a
 * struct ctl_pend between lockmgr_prepare() and its ctl_done(), recorded
 * as held (owners.c) when ctl_pend_complete() runs on the socket thread.
 * Socket thread only.
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

void ctl_conn_forget_pend(struct ctl_conn *c, struct ctl_pend *p)
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
	u = ctl_hold_charge(p->kind, p->proc, p->conn, p->desc, p->obj, &isnew);
	if (!isnew || !ctl_hold_over_cap(cs, u))
		return false;
	ctl_release(cs, p->obj->id,
		    p->kind == DLK_POSIX || p->kind == DLK_OFD ? DL_SPACE_POSIX
							       : DL_SPACE_FLOCK,
		    p->owner);
	ctl_hold_warn(cs, u);
	return true;
}

/* a decided request: record the grant, answer, drop the references */
void ctl_pend_complete(struct ctlsock *cs, struct ctl_pend *p)
{
	struct ctl_conn *c = p->conn;
	struct ctl_desc *d = p->desc;
	int err = p->err;

	if (c)
		ctl_conn_forget_pend(c, p);
	if (err == 0 && pend_over_cap(cs, p))
		err = -ENOLCK;
	if (err == 0) {
		int added;

		switch (p->kind) {
		case DLK_POSIX:
			added = p->proc->dead
					? -1
					: ctl_objset_add(&p->proc->posix,
							 &p->proc->nposix,
							 &p->proc->capposix,
							 p->obj);
			if (added < 0)
				ctl_release(cs, p->obj->id, DL_SPACE_POSIX,
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
				ctl_desc_release(cs, d);
			} else if (d->pidfd < 0) {
				ctl_desc_watch(cs, d, p->proc->pid);
				if (d->pidfd < 0) /* died meanwhile */
					ctl_desc_check(cs, d, 0);
			}
			break;
		case DLK_NAMED:
			added = c ? ctl_objset_add(&c->named, &c->nnamed,
						   &c->capnamed, p->obj)
				  : -1;
			if (added < 0)
				ctl_release(cs, p->obj->id, DL_SPACE_FLOCK,
					    p->owner);
			else if (added)
				c->user->locks++;
			break;
		default:
			break;
		}
	}
	if (c && !ctl_reply(cs, c, p->req_id, err, NULL))
		ctl_conn_close(cs, c);
	if (d) {
		d->pending--;
		ctl_desc_free_maybe(cs, d);
	}
	ctl_obj_put(cs, p->obj);
	p->proc->refs--;
	ctl_proc_free_maybe(cs, p->proc);
	p->user->waits--;
	ctl_user_free_maybe(cs, p->user);
	cs->npend--;
	free(p);
}

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
	ssize_t n;
	int ret;

	/* a file of our mount: named as the mount names it */
	if (cs->mountpoint) {
		ret = naming_of_fd(fd, cs->mountpoint, -1, out);
		if (ret != -ESTALE)
			return ret;
	}
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

/* a descriptor opened with O_PATH names a file the caller may not be
 * able to open: as the kernel's lock calls, refuse it */
int ctl_req_no_opath(struct ctl_req *r)
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
		*out = ctl_obj_get(cs, 0, 0, true, name);
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
	*out = ctl_obj_get(cs, st.st_dev, st.st_ino, false, name);
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
 * check and its object, referenced (the caller ctl_obj_put()s it).
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
		d = ctl_desc_find(cs, o, r->fd);
		if (!d) {
			d = ctl_desc_new(cs, o, r->fd, c->user);
			r->fd = -1;
			if (!d) {
				ctl_obj_put(cs, o);
				return -ENOMEM;
			}
		}
		lr.owner = d->owner;
	}
	{
		bool isnew;
		struct ctl_user *u =
			ctl_hold_charge(m->kind, c->proc, c, d, o, &isnew);

		if (isnew && ctl_hold_over_cap(cs, u)) {
			ctl_hold_warn(cs, u);
			r->why = "too many locks held by this user "
				 "(max_locks_per_uid)";
			ctl_obj_put(cs, o);
			if (d)
				ctl_desc_free_maybe(cs, d);
			return -ENOLCK;
		}
	}
	p = calloc(1, sizeof(*p));
	if (!p) {
		ctl_obj_put(cs, o);
		if (d)
			ctl_desc_free_maybe(cs, d);
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
		ctl_pend_complete(cs, p);
		return -ENOMEM;
	}
	p->next = c->pend;
	if (p->next)
		p->next->pprev = &p->next;
	p->pprev = &c->pend;
	c->pend = p;
	ctl_wait_job(cs, JOB_SUBMIT, p->wait_id);
	return 1; /* answered by ctl_pend_complete() */
}

/* an unlock is done: what its owner may hold, then the answer */
static void unlock_done(struct ctlsock *cs, struct ctl_job *j)
{
	struct ctl_desc *d = j->d;
	struct ctl_conn *c = j->conn;

	if (j->err == 0 && j->lkind == DLK_FLOCK) {
		if (d->flock)
			d->user->locks--;
		d->flock = false;
	} else if (j->err == 0 && j->lkind == DLK_NAMED && c) {
		for (size_t i = 0; i < c->nnamed; i++)
			if (c->named[i] == j->o) {
				ctl_objset_del(cs, c->named, &c->nnamed, i);
				c->user->locks--;
				break;
			}
	}
	if (c && !ctl_reply(cs, c, j->req_id, j->err, NULL))
		ctl_conn_close(cs, c);
}

static int do_unlock(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	struct ctl_conn *c = r->c;
	struct ctl_desc *d = NULL;
	struct lockmgr_req lr;
	struct ctl_obj *o;
	struct ctl_job *j;
	int ret;

	ret = req_begin(r, &lr, &o);
	if (ret < 0)
		return ret;
	lr.type = DL_UNLCK;
	if (!req_conn_owner(r, &lr.owner)) {
		d = ctl_desc_find(cs, o, r->fd);
		if (!d) { /* never locked through it: nothing to do */
			ctl_obj_put(cs, o);
			return 0;
		}
		lr.owner = d->owner;
	}
	j = ctl_job_new(cs, JOB_UNLOCK);
	if (!j) {
		ctl_obj_put(cs, o);
		return -ENOMEM;
	}
	j->lr = lr;
	j->o = o; /* our ref: lr.resource is its name */
	j->d = d;
	if (d)
		d->pending++;
	j->lkind = r->m->kind;
	j->done = unlock_done;
	ctl_job_answer(j, c, r->m->hdr.id);
	ctl_job_push(cs, j);
	return 1;
}

static void getlk_done(struct ctlsock *cs, struct ctl_job *j)
{
	struct dl_proto_msg rep = { .hdr = { .type = DLP_REPLY,
					     .id = j->req_id } };
	const struct dl_lock_info *info = &j->info;

	if (!j->conn)
		return;
	rep.err = j->err < 0 ? j->err : 0;
	if (j->err == 1) {
		rep.found = true;
		rep.space = (uint8_t)info->space;
		rep.ltype = (uint8_t)info->type;
		rep.start = info->start;
		rep.end = info->end;
		rep.owner = lockmgr_owner_shown(cs->lm, info->owner);
		rep.pid = info->pid;
		rep.token = info->token;
		rep.since_ms = info->since_ms;
		proto_str(&rep, 0, info->host);
	}
	if (!ctl_conn_send(cs, j->conn, &rep))
		ctl_conn_close(cs, j->conn);
}

static int do_getlk(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	struct ctl_conn *c = r->c;
	struct ctl_desc *d;
	struct lockmgr_req lr;
	struct ctl_obj *o;
	struct ctl_job *j;
	int ret;

	ret = req_begin(r, &lr, &o);
	if (ret < 0)
		return ret;
	if (!req_conn_owner(r, &lr.owner)) {
		d = ctl_desc_find(cs, o, r->fd);
		/* no record: it holds nothing, any fresh owner will do */
		lr.owner = d ? d->owner : lockmgr_owner_new(cs->lm);
	}
	j = ctl_job_new(cs, JOB_GETLK);
	if (!j) {
		ctl_obj_put(cs, o);
		return -ENOMEM;
	}
	j->lr = lr;
	j->o = o; /* our ref: lr.resource is its name */
	j->done = getlk_done;
	ctl_job_answer(j, c, r->m->hdr.id);
	ctl_job_push(cs, j);
	return 1;
}

static int do_closed(struct ctl_req *r)
{
	struct ctlsock *cs = r->cs;
	struct ctl_proc *p = r->c->proc;
	dev_t dev = (dev_t)r->m->dev;
	ino_t ino = (ino_t)r->m->ino;

	if (r->fd >= 0)
		return -EBADMSG; /* CLOSED names a file, never passes one */
	/* as on a local filesystem: any close drops the process's POSIX
	 * locks on the file */
	for (size_t i = p->nposix; i-- > 0;)
		if (p->posix[i]->dev == dev && p->posix[i]->ino == ino)
			ctl_proc_release_posix(cs, p, i);
	ctl_desc_check_many(cs, true, dev, ino, p->pid);
	/* its last descriptor of the file: the fence slots are free again */
	if (p->fence && !ctl_proc_has_inode(p->pid, dev, ino))
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

static int do_cancel(struct ctl_req *r)
{
	for (struct ctl_pend *p = r->c->pend; p; p = p->next)
		if (p->req_id == r->m->target_id) {
			ctl_wait_job(r->cs, JOB_INTERRUPT, p->wait_id);
			break;
		}
	return 1; /* no answer of its own: the request's answer follows */
}

/* the manager's status text plus the socket's own counters */
static void status_done(struct ctlsock *cs, struct ctl_job *j)
{
	char *out = NULL, *line, *save = NULL;
	size_t len = 0;
	FILE *f;

	if (j->err < 0) {
		ctl_job_reply(cs, j, j->err, NULL);
		return;
	}
	f = open_memstream(&out, &len);
	if (!f) {
		ctl_job_reply(cs, j, -ENOMEM, NULL);
		return;
	}
	/* one key=value per line: split "held=1 waiting=0 lost=0" */
	for (line = strtok_r(j->text, "\n", &save); line;
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
	if (fclose(f) != 0) {
		free(out);
		ctl_job_reply(cs, j, -ENOMEM, NULL);
		return;
	}
	ctl_job_reply(cs, j, 0, out);
	free(out);
}

/*
 * METRICS: lockmgr_metrics() reads counters and takes the manager's mutex
 * briefly, never the backend, so it runs here on the socket thread.  The
 * text is longer than a frame's string: it goes as ITEMs of whole lines
 * (str[0]; str[1] empty), then the REPLY.
 */
static int do_metrics(struct ctl_req *r)
{
	char *text = NULL, *p, *end;
	int ret = lockmgr_metrics(r->cs->lm, &text);

	if (ret < 0)
		return ret;
	for (p = text; *p; p = end) {
		struct dl_proto_msg m = { .hdr = { .type = DLP_ITEM,
						   .id = r->m->hdr.id } };
		char save;

		end = p + strlen(p);
		if (end - p > DL_PROTO_MAX_STR - 1) {
			end = p + DL_PROTO_MAX_STR - 1;
			while (end > p && end[-1] != '\n')
				end--;
			if (end == p) /* one line longer than a string */
				end = p + DL_PROTO_MAX_STR - 1;
		}
		save = *end;
		*end = '\0';
		proto_str(&m, 0, p);
		proto_str(&m, 1, "");
		if (!ctl_conn_send(r->cs, r->c, &m)) {
			free(text);
			return 1; /* the connection is going */
		}
		*end = save;
	}
	free(text);
	return 0;
}

static int do_status(struct ctl_req *r)
{
	struct ctl_job *j = ctl_job_new(r->cs, JOB_STATUS);

	if (!j)
		return -ENOMEM;
	j->done = status_done;
	ctl_job_answer(j, r->c, r->m->hdr.id);
	ctl_job_push(r->cs, j);
	return 1;
}

/* the resource a LIST or BREAK is about (NULL: all, LIST only) */
int ctl_req_resource(struct ctl_req *r, char **out)
{
	const struct dl_proto_msg *m = r->m;
	int ret;

	*out = NULL;
	if ((m->flags & DLP_F_FD) && r->c->uid != 0) {
		ret = ctl_req_no_opath(r);
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

static void break_done(struct ctlsock *cs, struct ctl_job *j)
{
	ctl_job_reply(cs, j, j->err,
		      j->err == -ENOENT	      ? "no lock is held on it"
		      : j->err == -EOPNOTSUPP ? "this backend cannot break "
						"locks"
					      : NULL);
}

static int do_break(struct ctl_req *r)
{
	struct ctl_job *j;
	char *res;
	int ret;

	if (r->c->uid != 0) {
		r->why = "only root may break a lock";
		return -EPERM;
	}
	ret = ctl_req_resource(r, &res);
	if (ret < 0)
		return ret;
	if (!res) {
		r->why = "break needs a file or a resource name";
		return -EINVAL;
	}
	dl_log(DL_LOG_NOTICE, "ctl: pid %d (uid 0) breaks %s", (int)r->c->pid,
	       res);
	j = ctl_job_new(r->cs, JOB_BREAK);
	if (!j) {
		free(res);
		return -ENOMEM;
	}
	j->text = res;
	j->done = break_done;
	ctl_job_answer(j, r->c, r->m->hdr.id);
	ctl_job_push(r->cs, j);
	return 1;
}

/* the handler of each request type; 1: it answers (or needs no answer) */
static int (*const ctl_handlers[DLP_TYPE_MAX])(struct ctl_req *r) = {
	[DLP_LOCK] = do_lock,	    [DLP_UNLOCK] = do_unlock,
	[DLP_GETLK] = do_getlk,	    [DLP_CLOSED] = do_closed,
	[DLP_CANCEL] = do_cancel,   [DLP_STATUS] = do_status,
	[DLP_LIST] = ctl_do_list,   [DLP_BREAK] = do_break,
	[DLP_FENCE] = ctl_do_fence, [DLP_METRICS] = do_metrics,
};

/* serve one decoded request; false when the connection must go */
bool ctl_conn_request(struct ctlsock *cs, struct ctl_conn *c,
		      const struct dl_proto_msg *m, int fd)
{
	struct ctl_req r = { cs, c, m, fd, NULL };
	bool wants_fd = m->flags & DLP_F_FD;
	bool ok = true;
	int ret;

	/* the backend calls it makes run in order, after earlier ones of
	 * this connection, and its answer after them */
	cs->jkey = c;
	cs->jpushed = 0;

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
	    m->hdr.type != DLP_METRICS &&
	    (c->proc->dead || ctl_pidfd_exited(c->proc->pidfd))) {
		ret = -ESRCH;
		r.why = "the process that opened this connection has exited";
		goto out_reply;
	}
	if (m->hdr.type < DLP_TYPE_MAX && ctl_handlers[m->hdr.type]) {
		ret = ctl_handlers[m->hdr.type](&r);
	} else {
		ret = -EBADMSG;
		r.why = "not a request";
	}
out_reply:
	if (r.fd >= 0)
		close(r.fd);
	cs->jkey = NULL;
	if (ret == -EPIPE)
		return false;
	if (ret != 1 && cs->jpushed) {
		struct ctl_job *j = ctl_job_new(cs, JOB_NOP);

		if (j) {
			j->wi.key = c;
			j->err = ret < 0 ? ret : 0;
			j->why = r.why;
			j->done = ctl_nop_done;
			ctl_job_answer(j, c, m->hdr.id);
			ctl_job_push(cs, j);
			ret = 1;
		}
	}
	if (ret != 1)
		ok = ctl_reply(cs, c, m->hdr.id, ret < 0 ? ret : 0, r.why);
	if (ret < 0 && r.why)
		dl_log(DL_LOG_DEBUG, "ctl: pid %d %s: %s (%s)", (int)c->pid,
		       proto_type_name(m->hdr.type), strerror(-ret), r.why);
	/* a malformed frame, or a process gone, ends the conversation */
	return ok && ret != -EBADMSG && ret != -ESRCH;
}

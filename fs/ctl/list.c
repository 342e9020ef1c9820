/*
 * list.c - LIST (dlockctl locks) and what a caller may see.
 *
 * Root sees everything; so does a caller about a descriptor it passes.
 * Otherwise a caller sees its own locks, the named locks of its
 * namespaces, and the locks of files it could open on this host: each
 * resource is mapped back to a local path (policy.h) and checked with the
 * caller's credentials by a short-lived thread that takes them on
 * (ctl_acc_main).  The listing itself is a job (the backend is asked on a
 * worker); filtering and sending happen on the socket thread.
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

/*
 * Is @owner (of this daemon) an open file description of a shim client?
 * In the POSIX space such an owner holds OFD locks: a process's fcntl
 * locks belong to its struct ctl_proc.  A lock taken through a mount or
 * on another host is not known to be one (FUSE does not tell OFD locks
 * from a process's, and the backends do not record it).
 */
static bool ctl_owner_is_desc(const struct ctlsock *cs, uint64_t owner)
{
	for (const struct ctl_desc *d = cs->descs; d; d = d->next)
		if (d->owner == owner)
			return true;
	return false;
}

static bool list_send(struct ctl_list *l, const struct dl_lock_info *info,
		      const char *res)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_ITEM, .id = l->id } };

	/* ITEM's found: an OFD lock (proto.h) */
	m.found = info->space == DL_SPACE_POSIX && info->mine &&
		  ctl_owner_is_desc(l->cs, info->owner);
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
	return ctl_conn_send(l->cs, l->c, &m);
}

/* a worker: collect one item (sent by list_done() on the socket thread) */
int ctl_list_one(const struct dl_lock_info *info, void *arg)
{
	struct ctl_list *l = arg;
	const char *res = info->resource ? info->resource
			  : l->resource	 ? l->resource
					 : "?";
	struct ctl_item *it;

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
static int ctl_list_filter(struct ctl_list *l, bool *keep)
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
		keep[i] = vis[i] || a.ok[i];
out:
	for (size_t i = 0; i < l->nitems && a.paths; i++)
		free(a.paths[i]);
	free(a.paths);
	free(a.ok);
	free(vis);
	return ret;
}

/* the items a LIST collected: those the caller may see, then the end */
static void list_done(struct ctlsock *cs, struct ctl_job *j)
{
	struct ctl_list *l = &j->list;
	bool *keep = calloc(l->nitems + 1, sizeof(*keep));
	int ret = j->err < 0 ? j->err : 0;

	l->c = j->conn;
	if (!keep && ret == 0)
		ret = -ENOMEM;
	if (l->c && ret == 0) {
		if (l->filter)
			ret = ctl_list_filter(l, keep);
		else
			memset(keep, 1, l->nitems * sizeof(*keep));
	}
	for (size_t i = 0; l->c && ret == 0 && i < l->nitems; i++)
		if (keep[i] &&
		    !list_send(l, &l->items[i].info, l->items[i].res)) {
			ctl_conn_close(cs, l->c);
			l->c = j->conn = NULL;
		}
	ctl_job_reply(cs, j, ret, NULL);
	for (size_t i = 0; i < l->nitems; i++)
		free(l->items[i].res);
	free(l->items);
	free(keep);
}

int ctl_do_list(struct ctl_req *r)
{
	struct ctl_list l = { .cs = r->cs, .c = r->c, .id = r->m->hdr.id };
	struct ctl_job *j;
	char *res;
	int ret;

	ret = ctl_req_resource(r, &res);
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
	j = ctl_job_new(r->cs, JOB_LIST);
	if (!j) {
		free(res);
		return -ENOMEM;
	}
	j->text = res; /* l.resource */
	j->list = l;
	j->done = list_done;
	ctl_job_answer(j, r->c, r->m->hdr.id);
	ctl_job_push(r->cs, j);
	return 1;
}

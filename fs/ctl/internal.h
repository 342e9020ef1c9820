/*
 * internal.h - what the control socket's files share (the files of fs/ctl/); not
 * for use outside fs/ctl/.
 *
 * Threads and locks (the whole socket server):
 *  - The socket thread (server.c: ctl_main) owns every struct below but
 *    the completion queues: connections, processes, descriptions, objects,
 *    users and the jobs' socket-side fields.  Nothing else reads them.
 *  - Worker threads (jobs.c, a workq) run the backend calls of struct
 *    ctl_job; they touch only the job itself (and the lock manager, which
 *    has its own mutex).
 *  - Lock-manager threads (a backend callback, the timer, a worker) call
 *    ctl_done() and ctl_lost(), which only queue a record under
 *    ctlsock.qmutex and wake the socket thread through its eventfd; so do
 *    workers finishing a job.  qmutex is a leaf: nothing is called with
 *    it held.
 *  - Objects are freed only on the socket thread, after their epoll
 *    registration is gone; epoll_wait returns one event at a time, so no
 *    event can name an object freed by an earlier one.
 *  - Start and stop run on the main thread while the socket thread does
 *    not run (before it starts, after it is joined); jobs then run inline.
 */
#ifndef DL_CTL_INTERNAL_H
#define DL_CTL_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

/* uthash: a failed allocation leaves the table as it was (we check),
 * instead of exiting */
#define HASH_NONFATAL_OOM 1
#include <uthash.h>

#include "backend/backend.h"
#include "fs/ctl/policy.h"
#include "fs/ctl/proto.h"
#include "fs/ctl/ctlsock.h"
#include "fs/lock/lockmgr.h"
#include "fs/workq.h"

#define CTL_OBJ_TAG	      (1ULL << 63) /* FUSE inode numbers are pointers */
#define CTL_MAX_FDS	      4
#define CTL_MAX_OUT	      (4u << 20) /* queued ctl_reply bytes before we give up */
#define CTL_NAME_MAX	      4096
#define CTL_STOP_WAIT_MS      5000
#define CTL_ACCEPT_BACKOFF_MS 100
#define CTL_JOB_THREADS	      4 /* backend calls in parallel (ctl_job) */

enum ctl_ep_kind { EP_LISTEN, EP_WAKE, EP_CONN, EP_PROC, EP_DESC };

/* what an epoll event points to */
struct ctl_ep {
	enum ctl_ep_kind kind;
	void *ptr;
};

/* a lockable thing: a file (dev, ino, cluster name) or a named lock */
struct ctl_obj {
	UT_hash_handle hh;    /* cs->objs, by @key */
	UT_hash_handle hh_id; /* cs->objs_by_id, by @id */
	char *key;	      /* named, dev, ino, name (ctl_obj_key) */
	size_t keylen;
	uint64_t id; /* the manager's obj: CTL_OBJ_TAG | n */
	dev_t dev;
	ino_t ino;
	bool named;
	unsigned refs;
	char *name;
};

struct ctl_proc {
	struct ctl_proc *next; /* cs->procs: every record */
	UT_hash_handle hh;     /* cs->live, by @pid, while not @dead */
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
	struct ctl_job *jobs;	/* backend calls in flight that answer it */
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
	UT_hash_handle hh; /* cs->users, by @uid */
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

/*
 * A backend call made for the socket thread by a worker (ctl_jobs, a
 * workq): the socket thread never waits on the backend.  run() happens on
 * a worker with no ctlsock state touched but what the job carries; then
 * done(), if any, on the socket thread, which answers the client.  Jobs
 * pushed while one request is served (or one connection closed) share
 * its connection as their workq key, so they run in order, and a request
 * whose handler pushed jobs is answered after the last of them.
 */
enum ctl_job_kind {
	JOB_NOP,       /* only its done() (an answer after other jobs) */
	JOB_SUBMIT,    /* lockmgr_submit(wait_id) */
	JOB_INTERRUPT, /* lockmgr_interrupt(wait_id) */
	JOB_RELEASE,   /* lockmgr_release_owner(obj, space, owner) */
	JOB_UNLOCK,    /* lockmgr_unlock(lr) -> err */
	JOB_GETLK,     /* lockmgr_getlk(lr) -> err, info */
	JOB_STATUS,    /* lockmgr_status() -> err, text */
	JOB_LIST,      /* lockmgr_list(res) -> err, list.items */
	JOB_BREAK,     /* lockmgr_break(res) -> err */
};

struct ctl_list;

struct ctl_item {
	struct dl_lock_info info;
	char *res;
};

struct ctl_list {
	struct ctlsock *cs;
	struct ctl_conn *c;
	uint32_t id;
	const char *resource;
	bool filter; /* send only what ctl_list_filter() lets through */
	struct ctl_item *items;
	size_t nitems, capitems;
};

struct ctl_job {
	struct workq_item wi; /* first: the workq hands it back */
	struct ctlsock *cs;
	enum ctl_job_kind kind;
	void (*done)(struct ctlsock *cs, struct ctl_job *j);
	struct ctl_job *qnext; /* in the completion queue */
	struct ctl_conn *conn; /* to answer; NULL once it is gone */
	struct ctl_job *cnext; /* in conn->jobs */
	struct ctl_job **cpprev;
	uint32_t req_id;
	uint8_t lkind; /* DLK_* of an unlock */
	int err;
	const char *why;
	uint64_t wait_id, obj, owner;
	enum dl_space space;
	struct lockmgr_req lr;
	struct ctl_obj *o;  /* ref, of UNLOCK and GETLK */
	struct ctl_desc *d; /* pending++, of UNLOCK */
	struct dl_lock_info info;
	char *text; /* STATUS: the manager's text; LIST, BREAK: the resource */
	struct ctl_list list;
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
	struct ctl_obj *objs, *objs_by_id; /* uthash */
	struct ctl_proc *live;		   /* uthash of the live @procs */
	struct ctl_user *users;
	uint64_t next_obj;
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
	struct ctl_job *jhead, *jtail;
	struct ctl_lost *lost;
	/* backend calls: the workers, and (socket thread) the key and count
	 * of the jobs of the request being served */
	struct workq jobs;
	bool jobs_on;	  /* false: run jobs inline (start, stop) */
	bool jobs_inline; /* an in-process backend: no call waits */
	/* socket thread only: it queued work for itself (ctl_wake) */
	bool self_woken;
	const void *jkey;
	unsigned jpushed;
};

struct ctl_req {
	struct ctlsock *cs;
	struct ctl_conn *c;
	const struct dl_proto_msg *m;
	int fd; /* received, or -1; ours to close unless taken (-1) */
	const char *why;
};

/* ---- server.c: the event loop, connections, output, completions, start and stop */

int ctl_pidfd_open(pid_t pid);
bool ctl_same_file(pid_t self, int a, pid_t pid, int b);
bool ctl_pidfd_exited(int pidfd);
int ctl_ep_add(struct ctlsock *cs, int fd, uint32_t events, struct ctl_ep *ep);
void ctl_ep_del(struct ctlsock *cs, int fd);
void ctl_warn_limited(struct ctlsock *cs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
bool ctl_conn_send(struct ctlsock *cs, struct ctl_conn *c,
		   const struct dl_proto_msg *m);
bool ctl_reply(struct ctlsock *cs, struct ctl_conn *c, uint32_t id, int err,
	       const char *text);
void ctl_wake(struct ctlsock *cs);
void ctl_done(void *arg, int err);
void ctl_conn_close(struct ctlsock *cs, struct ctl_conn *c);

/* ---- owners.c: per-uid accounting and caps, objects, processes, descriptions */

struct ctl_user *ctl_user_get(struct ctlsock *cs, uid_t uid);
void ctl_user_free_maybe(struct ctlsock *cs, struct ctl_user *u);
struct ctl_obj *ctl_obj_get(struct ctlsock *cs, dev_t dev, ino_t ino,
			    bool named, const char *name);
void ctl_obj_put(struct ctlsock *cs, struct ctl_obj *o);
struct ctl_obj *ctl_obj_by_id(struct ctlsock *cs, uint64_t id);
int ctl_objset_add(struct ctl_obj ***v, size_t *n, size_t *cap,
		   struct ctl_obj *o);
void ctl_objset_del(struct ctlsock *cs, struct ctl_obj **v, size_t *n,
		    size_t i);
void ctl_proc_free_maybe(struct ctlsock *cs, struct ctl_proc *p);
void ctl_proc_release_posix(struct ctlsock *cs, struct ctl_proc *p, size_t i);
void ctl_proc_exit(struct ctlsock *cs, struct ctl_proc *p);
struct ctl_proc *ctl_proc_get(struct ctlsock *cs, pid_t pid, int pidfd,
			      struct ctl_user *u);
bool ctl_proc_has_inode(pid_t pid, dev_t dev, ino_t ino);
bool ctl_proc_has_desc(struct ctlsock *cs, pid_t pid, int fd);
void ctl_desc_unwatch(struct ctlsock *cs, struct ctl_desc *d);
void ctl_desc_watch(struct ctlsock *cs, struct ctl_desc *d, pid_t pid);
void ctl_desc_free_maybe(struct ctlsock *cs, struct ctl_desc *d);
void ctl_desc_release(struct ctlsock *cs, struct ctl_desc *d);
void ctl_desc_check(struct ctlsock *cs, struct ctl_desc *d, pid_t hint);
void ctl_desc_check_many(struct ctlsock *cs, bool by_inode, dev_t dev,
			 ino_t ino, pid_t pid);
struct ctl_desc *ctl_desc_find(struct ctlsock *cs, struct ctl_obj *o, int fd);
struct ctl_desc *ctl_desc_new(struct ctlsock *cs, struct ctl_obj *o, int fd,
			      struct ctl_user *u);
struct ctl_user *ctl_hold_charge(uint8_t kind, struct ctl_proc *proc,
				 struct ctl_conn *c, struct ctl_desc *d,
				 const struct ctl_obj *o, bool *isnew);
bool ctl_hold_over_cap(const struct ctlsock *cs, const struct ctl_user *u);
void ctl_hold_warn(struct ctlsock *cs, const struct ctl_user *u);

/* ---- jobs.c: backend calls on the workers (struct ctl_job) */

struct ctl_job *ctl_job_new(struct ctlsock *cs, enum ctl_job_kind kind);
void ctl_job_answer(struct ctl_job *j, struct ctl_conn *c, uint32_t req_id);
void ctl_job_forget_conn(struct ctl_job *j);
void ctl_job_push(struct ctlsock *cs, struct ctl_job *j);
void ctl_wait_job(struct ctlsock *cs, enum ctl_job_kind kind, uint64_t wait_id);
void ctl_release(struct ctlsock *cs, uint64_t obj, enum dl_space space,
		 uint64_t owner);
void ctl_job_complete(struct ctlsock *cs, struct ctl_job *j);
void ctl_job_reply(struct ctlsock *cs, struct ctl_job *j, int err,
		   const char *text);
void ctl_nop_done(struct ctlsock *cs, struct ctl_job *j);

/* ---- fence.c: fence pages and lost-lock notices */

void ctl_lost(void *ctx, uint64_t obj, enum dl_space space, uint64_t owner);
void ctl_fence_lost(struct ctlsock *cs, const struct ctl_lost *l);
int ctl_do_fence(struct ctl_req *r);

/* ---- requests.c: the request handlers */

void ctl_conn_forget_pend(struct ctl_conn *c, struct ctl_pend *p);
void ctl_pend_complete(struct ctlsock *cs, struct ctl_pend *p);
int ctl_req_no_opath(struct ctl_req *r);
int ctl_req_resource(struct ctl_req *r, char **out);
bool ctl_conn_request(struct ctlsock *cs, struct ctl_conn *c,
		      const struct dl_proto_msg *m, int fd);

/* ---- list.c: LIST, and what a caller may see */

int ctl_list_one(const struct dl_lock_info *info, void *arg);
int ctl_do_list(struct ctl_req *r);

/* ---- peer.c: who is at the other end of a connection */

int ctl_peer_pidfd(int fd, const struct ucred *cred, pid_t *pid);
int ctl_peer_groups(int fd, gid_t gid, gid_t **out, size_t *n);

/* ---- sockpath.c: the socket's path, directory and descriptor limit */

int ctl_listen(struct ctlsock *cs, char *err, size_t errlen);
void ctl_raise_nofile(void);

#endif /* DL_CTL_INTERNAL_H */

/*
 * jobs.c - backend calls off the socket thread (struct ctl_job).
 *
 * The socket thread never waits on the backend: a lock submission, a
 * cancel, a release, an unlock, GETLK, LIST, STATUS and BREAK are jobs
 * that a workq (fs/workq.h, CTL_JOB_THREADS threads) runs.  Jobs pushed
 * while one request is served, or one connection closed, carry that
 * connection as their key, so they run in the order they were asked, and
 * a request whose handler pushed jobs is answered (ctl_nop_done) after
 * the last of them.  A job's run() touches only the job and the lock
 * manager; its done() runs back on the socket thread (ctl_drain), which
 * owns everything else, and answers the client if it is still there.
 * Before the workers start and once they are stopped (ctlsock_stop), jobs
 * run inline on the calling thread; so do they on an in-process backend
 * (local:), whose calls never wait: a handoff to a worker and back would
 * only double the cost of a lock (about 80 to 180 us per lock and unlock
 * through the shim, measured on this project's 2-core machine).
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

/* worker thread (or inline at start and stop): the call, then done() */
static void job_run(struct workq_item *wi)
{
	struct ctl_job *j = (struct ctl_job *)wi;
	struct ctlsock *cs = j->cs;
	struct lockmgr *lm = cs->lm;

	switch (j->kind) {
	case JOB_NOP:
		break;
	case JOB_SUBMIT:
		lockmgr_submit(lm, j->wait_id);
		break;
	case JOB_INTERRUPT:
		lockmgr_interrupt(lm, j->wait_id);
		break;
	case JOB_RELEASE:
		lockmgr_release_owner(lm, j->obj, j->space, j->owner);
		break;
	case JOB_UNLOCK:
		j->err = lockmgr_unlock(lm, &j->lr);
		break;
	case JOB_GETLK:
		j->err = lockmgr_getlk(lm, &j->lr, &j->info);
		break;
	case JOB_STATUS:
		j->err = lockmgr_status(lm, cs->backend_shown, &j->text);
		break;
	case JOB_LIST:
		j->err = lockmgr_list(lm, j->text, ctl_list_one, &j->list);
		break;
	case JOB_BREAK:
		j->err = lockmgr_break(lm, j->text);
		break;
	}
	if (!j->done) {
		free(j);
		return;
	}
	pthread_mutex_lock(&cs->qmutex);
	j->qnext = NULL;
	if (cs->jtail)
		cs->jtail->qnext = j;
	else
		cs->jhead = j;
	cs->jtail = j;
	pthread_cond_broadcast(&cs->qcond);
	pthread_mutex_unlock(&cs->qmutex);
	ctl_wake(cs);
}

/* a job keyed like the request being served; NULL on -ENOMEM */
struct ctl_job *ctl_job_new(struct ctlsock *cs, enum ctl_job_kind kind)
{
	struct ctl_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->cs = cs;
	j->kind = kind;
	j->wi.key = cs->jkey;
	j->wi.run = job_run;
	return j;
}

/* @j will answer request @req_id of @c (done() finds c NULL if it went) */
void ctl_job_answer(struct ctl_job *j, struct ctl_conn *c, uint32_t req_id)
{
	j->conn = c;
	j->req_id = req_id;
	j->cnext = c->jobs;
	if (j->cnext)
		j->cnext->cpprev = &j->cnext;
	j->cpprev = &c->jobs;
	c->jobs = j;
}

void ctl_job_forget_conn(struct ctl_job *j)
{
	if (!j->cpprev)
		return;
	*j->cpprev = j->cnext;
	if (j->cnext)
		j->cnext->cpprev = j->cpprev;
	j->cnext = NULL;
	j->cpprev = NULL;
	j->conn = NULL;
}

void ctl_job_push(struct ctlsock *cs, struct ctl_job *j)
{
	cs->jpushed++;
	if (cs->jobs_on && !cs->jobs_inline)
		workq_push(&cs->jobs, &j->wi);
	else
		job_run(&j->wi);
}

/* a lock or wait id handed to a worker: submit or interrupt */
void ctl_wait_job(struct ctlsock *cs, enum ctl_job_kind kind, uint64_t wait_id)
{
	struct ctl_job *j = ctl_job_new(cs, kind);

	if (!j) { /* out of memory: block rather than lose it */
		if (kind == JOB_SUBMIT)
			lockmgr_submit(cs->lm, wait_id);
		else
			lockmgr_interrupt(cs->lm, wait_id);
		return;
	}
	j->wait_id = wait_id;
	ctl_job_push(cs, j);
}

/* drop every lock of @owner on @obj in @space, on a worker */
void ctl_release(struct ctlsock *cs, uint64_t obj, enum dl_space space,
		 uint64_t owner)
{
	struct ctl_job *j = ctl_job_new(cs, JOB_RELEASE);

	if (!j) { /* out of memory: release here rather than leak it */
		lockmgr_release_owner(cs->lm, obj, space, owner);
		return;
	}
	j->obj = obj;
	j->space = space;
	j->owner = owner;
	ctl_job_push(cs, j);
}

/* a job is back on the socket thread: its done(), then its references */
void ctl_job_complete(struct ctlsock *cs, struct ctl_job *j)
{
	j->done(cs, j);
	ctl_job_forget_conn(j);
	if (j->o)
		ctl_obj_put(cs, j->o);
	if (j->d) {
		j->d->pending--;
		ctl_desc_free_maybe(cs, j->d);
	}
	free(j->text);
	free(j);
}

/* answer a job's request (nothing if its connection went) */
void ctl_job_reply(struct ctlsock *cs, struct ctl_job *j, int err,
		   const char *text)
{
	if (j->conn && !ctl_reply(cs, j->conn, j->req_id, err, text))
		ctl_conn_close(cs, j->conn);
}

/* the answer to a request whose backend calls are done */
void ctl_nop_done(struct ctlsock *cs, struct ctl_job *j)
{
	ctl_job_reply(cs, j, j->err, j->why);
}

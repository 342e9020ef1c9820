/*
 * grantq.h - answers to granted lock requests that must first drop the
 * kernel's cached pages of the file (DESIGN §3, coherence).
 *
 * The kernel's page invalidation (fuse_lowlevel_notify_inval_inode) waits
 * for every page lock of the file, and a page stays locked while a read or
 * write request on it waits for the daemon's answer.  So it must never run
 * on a thread that such a request could need: not a FUSE worker (an
 * unlocking worker hands the lock over), not a backend thread.  grantq
 * runs it on a thread of its own that serves nothing else; the grant is
 * answered after the invalidation returns, so the new holder never reads
 * pages cached before its grant.
 */
#ifndef DL_GRANTQ_H
#define DL_GRANTQ_H

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>

struct grantq;

/* one queued answer; allocated by the caller up front, so that queueing a
 * decided grant cannot fail.  grantq frees nothing: done() does. */
struct grantq_item {
	struct grantq_item *next;
	fuse_ino_t ino;
	/* after the invalidation: answer and free the item */
	void (*done)(struct grantq_item *item);
};

/* 0 or a negative errno (thread creation) */
int grantq_start(struct fuse_session *se, struct grantq **out);
/* queue @item: invalidate @item->ino, then @item->done(item) */
void grantq_push(struct grantq *q, struct grantq_item *item);
/* serve what is queued, then stop the thread */
void grantq_stop(struct grantq *q);

#endif /* DL_GRANTQ_H */

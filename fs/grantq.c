/*
 * grantq.c - the invalidate-then-answer thread (see grantq.h).
 *
 * One mutex guards the queue and the stop flag; it is a leaf, never held
 * across the invalidation or an answer.  Items are served in the order
 * they were queued.
 */
#include "fs/grantq.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "backend/util/log.h"

struct grantq {
	struct fuse_session *se;
	pthread_t thread;
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	/* guarded by mutex: */
	struct grantq_item *head, **tail;
	bool stopping;
};

static void grantq_serve(struct grantq *q, struct grantq_item *it)
{
	int ret = fuse_lowlevel_notify_inval_inode(q->se, it->ino, 0, 0);

	if (ret < 0 && ret != -ENOENT)
		dl_log(DL_LOG_WARNING, "invalidate inode %" PRIu64 ": %s",
		       (uint64_t)it->ino, strerror(-ret));
	it->done(it);
}

static void *grantq_main(void *arg)
{
	struct grantq *q = arg;

	pthread_mutex_lock(&q->mutex);
	for (;;) {
		struct grantq_item *it = q->head;

		if (!it) {
			if (q->stopping)
				break;
			pthread_cond_wait(&q->cond, &q->mutex);
			continue;
		}
		q->head = it->next;
		if (!q->head)
			q->tail = &q->head;
		pthread_mutex_unlock(&q->mutex);
		grantq_serve(q, it);
		pthread_mutex_lock(&q->mutex);
	}
	pthread_mutex_unlock(&q->mutex);
	return NULL;
}

int grantq_start(struct fuse_session *se, struct grantq **out)
{
	struct grantq *q = calloc(1, sizeof(*q));
	int ret;

	if (!q)
		return -ENOMEM;
	q->se = se;
	q->tail = &q->head;
	pthread_mutex_init(&q->mutex, NULL);
	pthread_cond_init(&q->cond, NULL);
	ret = pthread_create(&q->thread, NULL, grantq_main, q);
	if (ret) {
		pthread_cond_destroy(&q->cond);
		pthread_mutex_destroy(&q->mutex);
		free(q);
		return -ret;
	}
	*out = q;
	return 0;
}

void grantq_push(struct grantq *q, struct grantq_item *item)
{
	item->next = NULL;
	pthread_mutex_lock(&q->mutex);
	*q->tail = item;
	q->tail = &item->next;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mutex);
}

void grantq_stop(struct grantq *q)
{
	pthread_mutex_lock(&q->mutex);
	q->stopping = true;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->mutex);
	pthread_join(q->thread, NULL);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->mutex);
	free(q);
}

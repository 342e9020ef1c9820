/*
 * sub.c - the subscriber threads, one per node, and the delivery of what
 * they hear: grants to our queued waits, breaks of our locks and pokes.
 *
 * A subscriber SUBSCRIBEs to P:inc:LEASE of its node's current lease name
 * on a connection of its own (blocking reads without a timeout: TCP
 * keepalive, the renewals and the re-check notice a dead server) and
 * hands each publish to redis_sub_message(): "G WAITID TOKEN" a grant
 * (single node only), "W WAITID" a Redlock retry (marked for the keeper),
 * "L SPACE OWNER RESOURCE" a lock broken by an administrator, "P SRC SEQ
 * RESOURCE" another daemon asks for a resource we hold (cb->revoke, if
 * set).  When the name changes (lease.c shuts the socket down) or the
 * connection drops, it subscribes again and kicks the keeper to re-check
 * and renew: publishes may have been missed meanwhile (a lost poke is
 * sent again by its poker).
 *
 * Owns: the subscriber's connection and node->sub_fd, and delivery:
 * redis_deliver_grant() (also called by the keeper's re-check and by
 * cancel()), redis_deliver_break() (also called by a renewal) and the
 * delivery of pokes, once per poke: a poke of our own (SRC is
 * rb->poke_src) is dropped, and so is a copy of one of the last
 * REDIS_POKES_SEEN pokes delivered (Redlock: every node tells us).  An
 * older copy is delivered again and a poke may cross our release of the
 * resource: both harmless, as a revoke asks for what the caller may have
 * given back already.  Does not: send commands (a subscribed connection
 * only listens), fail a wait, or act on a "G" in Redlock mode (grants
 * there are decided by redlock.c).
 *
 * Locking: the loop holds rb->mutex except while it connects and while it
 * blocks reading.  node->sub_fd is set, cleared and its connection freed
 * under rb->mutex, and the other threads only shutdown(2) it under
 * rb->mutex, so none of them touches a closed or reused descriptor.  The
 * name is read before subscribing and checked again under the mutex when
 * the fd is published: a rename in between is seen there (the connection
 * is dropped and the loop subscribes to the new name), one after it shuts
 * the socket down.  The
 * delivery functions are called with rb->mutex held and push notes; the
 * callbacks of a publish are made on the subscriber thread once the mutex
 * is dropped.  Pokes: whether one is a copy is decided under rb->mutex
 * (rb->pokes) and cb->revoke is called once it is dropped.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "backend/redis/internal.h"
#include "backend/util/log.h"

/* ---- delivery (mutex held) ----------------------------------------------- */

/*
 * A grant for queued wait @id of lease name @name (single node); mutex
 * held.  Returns true when it was reported.  A wait of an older gen is
 * left to its lock() call (it answers -ENOLCK itself) or was failed
 * already.  The wait is freed here - even one still being sent, whose
 * lock() call then finds it gone from the table - unless cancel() owns
 * it (then it is only marked RWE_GRANTED).
 */
bool redis_deliver_grant(struct redis_backend *rb, uint64_t name, uint64_t id,
			 uint64_t token, unsigned mask,
			 struct redis_note **notes)
{
	struct redis_wait *w = redis_wait_find(rb, id);

	if (!w || w->name != name || w->gen != rb->epoch)
		return false; /* delivered already, or of a lease given up */
	redis_wait_unlink(rb, w);
	redis_held_add(rb, &w->spare, w->res, w->req.space, w->req.owner, mask,
		       token);
	if (rb->uri.nnodes == 1 && rb->nacks < REDIS_MAX_ACKS)
		rb->acks[rb->nacks++] = id;
	redis_wait_answer(w, token, 0, notes);
	if (w->cancelling)
		w->end = RWE_GRANTED; /* redis_cancel() frees it */
	else
		redis_wait_free(w);
	return true;
}

/*
 * An administrator broke a lock of lease name @name on @n: @entry is
 * "SPACE OWNER RESOURCE" (the resource last: it may hold blanks).  If we
 * still hold it, it is lost.  Mutex held.
 */
void redis_deliver_break(struct redis_backend *rb, struct redis_node *n,
			 uint64_t name, const char *entry, size_t len,
			 struct redis_note **notes)
{
	char head[40], *res, *end;
	enum dl_space space;
	struct redis_held **p;
	uint64_t owner;
	size_t hlen;
	const char *sp;

	if (len < 5 || (entry[0] != '0' && entry[0] != '1') || entry[1] != ' ')
		return;
	sp = memchr(entry + 2, ' ', len - 2);
	if (!sp || (size_t)(sp - entry) >= sizeof(head))
		return;
	hlen = (size_t)(sp - entry);
	memcpy(head, entry, hlen);
	head[hlen] = '\0';
	owner = strtoull(head + 2, &end, 16);
	if (*end != '\0')
		return;
	space = entry[0] == '0' ? DL_SPACE_FLOCK : DL_SPACE_POSIX;
	res = strndup(sp + 1, len - hlen - 1);
	if (!res) {
		/* the renewal that reads the break set again is the
		 * retry; the lock is fenced by the lease meanwhile */
		dl_log(DL_LOG_ERR, "redis: out of memory reading a break");
		return;
	}
	p = redis_held_slot(rb, res, space, owner);
	if (n->name == name && *p)
		redis_held_lose(rb, p, -ECONNABORTED, notes);
	free(res);
}

/*
 * A poke: @msg is "SRC SEQ RESOURCE" (the resource last, raw bytes).
 * cb->revoke is called, with no mutex held, unless the poke is our own,
 * a copy of one delivered already, or reached an old name of ours.
 */
static void redis_deliver_poke(struct redis_backend *rb, struct redis_node *n,
			       uint64_t name, const char *msg, size_t len)
{
	uint64_t src, seq;
	char head[34], *end, *res;
	bool deliver = true;

	if (!rb->cb.revoke || len < 35 || msg[16] != ' ' || msg[33] != ' ' ||
	    memchr(msg + 34, '\0', len - 34))
		return;
	memcpy(head, msg, 33);
	head[16] = head[33] = '\0';
	src = strtoull(head, &end, 16);
	if (end != head + 16)
		return;
	seq = strtoull(head + 17, &end, 16);
	if (end != head + 33)
		return;
	res = strndup(msg + 34, len - 34);
	if (!res) {
		/* the poker pokes again while it waits */
		dl_log(DL_LOG_ERR, "redis: out of memory reading a poke");
		return;
	}
	pthread_mutex_lock(&rb->mutex);
	if (src == rb->poke_src || n->name != name) {
		deliver = false;
	} else {
		for (unsigned i = 0; i < REDIS_POKES_SEEN && deliver; i++)
			if (rb->pokes[i].src == src && rb->pokes[i].seq == seq)
				deliver = false;
	}
	if (deliver) {
		unsigned slot = rb->npokes++ % REDIS_POKES_SEEN;

		rb->pokes[slot].src = src;
		rb->pokes[slot].seq = seq;
	}
	pthread_mutex_unlock(&rb->mutex);
	if (deliver)
		rb->cb.revoke(rb->cb.ctx, res);
	free(res);
}

/* ---- the subscriber thread ----------------------------------------------- */

/* one publish on our channel; no mutex held */
static void redis_sub_message(struct redis_backend *rb, struct redis_node *n,
			      uint64_t name, const char *msg, size_t len)
{
	struct redis_note *notes = NULL;
	char buf[64];
	uint64_t id, token = 0;
	char kind;

	redis_fault_sleep(rb->fault.delay_deliver);
	if (len > 2 && msg[0] == 'L' && msg[1] == ' ') {
		pthread_mutex_lock(&rb->mutex);
		redis_deliver_break(rb, n, name, msg + 2, len - 2, &notes);
		pthread_mutex_unlock(&rb->mutex);
		redis_notes_run(rb, notes);
		return;
	}
	if (len > 2 && msg[0] == 'P' && msg[1] == ' ') {
		redis_deliver_poke(rb, n, name, msg + 2, len - 2);
		return;
	}
	if (len >= sizeof(buf))
		return;
	memcpy(buf, msg, len);
	buf[len] = '\0';
	if (sscanf(buf, "%c %" SCNx64 " %" SCNu64, &kind, &id, &token) < 2)
		return;
	pthread_mutex_lock(&rb->mutex);
	if (kind == 'G' && rb->uri.nnodes == 1) {
		redis_deliver_grant(rb, name, id, token, 1u << n->idx, &notes);
	} else if (kind == 'W') {
		struct redis_wait *w = redis_wait_find(rb, id);

		if (w && w->gen == rb->epoch) {
			w->woken = true;
			rb->kick = true;
			pthread_cond_broadcast(&rb->cond);
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	redis_notes_run(rb, notes);
}

void *redis_sub_main(void *arg)
{
	struct redis_node *n = arg;
	struct redis_backend *rb = n->rb;
	int backoff = REDIS_BACKOFF_MIN_MS;

	pthread_mutex_lock(&rb->mutex);
	while (!rb->stopping) {
		uint64_t name = n->name;
		char lease[17], chan[REDIS_URI_PREFIX_MAX + 32], err[256];
		const char *argv[2] = { "SUBSCRIBE", chan };
		redisContext *c;
		redisReply *r;

		pthread_mutex_unlock(&rb->mutex);
		redis_lease_name(rb, name, lease);
		snprintf(chan, sizeof(chan), "%s:inc:%s", rb->uri.prefix,
			 lease);
		c = redis_connect(rb, n, true, err, sizeof(err));
		r = c ? redisCommandArgv(c, 2, argv, NULL) : NULL;
		pthread_mutex_lock(&rb->mutex);
		if (!r || r->type != REDIS_REPLY_ARRAY || n->name != name) {
			if (r)
				freeReplyObject(r);
			if (c)
				redisFree(c);
			if (n->name == name)
				redis_nap(rb, backoff);
			backoff = backoff * 2 > REDIS_BACKOFF_MAX_MS
					  ? REDIS_BACKOFF_MAX_MS
					  : backoff * 2;
			continue;
		}
		freeReplyObject(r);
		backoff = REDIS_BACKOFF_MIN_MS;
		n->sub_fd = c->fd;
		/* publishes may have been missed: re-check and renew now (a
		 * server restarted empty shows as a lease gone) */
		rb->kick = true;
		rb->kick_renew = true;
		pthread_cond_broadcast(&rb->cond);
		pthread_mutex_unlock(&rb->mutex);

		while (redisGetReply(c, (void **)&r) == REDIS_OK) {
			if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
			    r->element[2]->type == REDIS_REPLY_STRING)
				redis_sub_message(rb, n, name,
						  r->element[2]->str,
						  r->element[2]->len);
			freeReplyObject(r);
		}

		pthread_mutex_lock(&rb->mutex);
		n->sub_fd = -1;
		redisFree(c);
		if (!rb->stopping && n->name == name) {
			dl_log(DL_LOG_DEBUG,
			       "redis %s:%d: subscriber lost its "
			       "connection",
			       n->addr.host, n->addr.port);
			rb->kick = true;
			rb->kick_renew = true;
			pthread_cond_broadcast(&rb->cond);
			redis_nap(rb, REDIS_BACKOFF_MIN_MS);
		}
	}
	pthread_mutex_unlock(&rb->mutex);
	return NULL;
}

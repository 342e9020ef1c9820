/*
 * open.c - open() and close() of the Redis backend: the struct, the first
 * contact with every node (AUTH, loading redis.lua, registering the
 * lease; a majority must answer), and the threads.
 *
 * Owns: the lifetime of struct redis_backend, its nodes and their pools,
 * and of the keeper, the watchdog and the subscribers.  Does not: serve
 * requests (ops.c) or keep the lease (lease.c, keeper.c).
 *
 * Locking: open() runs alone until it starts the threads (the keeper, the
 * watchdog, then one subscriber per node); what it set before is read
 * without a lock afterwards (internal.h lists those fields).  close() is
 * called when no op is in flight and none will come: under rb->mutex it
 * sets stopping, broadcasts rb->cond and shuts the subscribers' sockets
 * down; it joins the keeper and the watchdog, then each subscriber,
 * shutting its socket down again (under the mutex) every 100 ms until it
 * exits, since it may have connected after the first shutdown.  With
 * every thread joined it ends our lease names and frees everything with
 * no lock.  No callback is made from here.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "backend/redis/internal.h"
#include "backend/util/hash.h"
#include "backend/util/log.h"

int redis_open(const struct dl_backend_conf *conf,
	       const struct dl_backend_cb *cb, struct dl_backend **out,
	       char *err, size_t errlen)
{
	const char *rest = strchr(conf->uri, ':') + 1;
	struct redis_backend *rb;
	const char *pw, *user;
	pthread_condattr_t ca;
	unsigned reached = 0;
	char why[256] = "";
	int ret;

	rb = calloc(1, sizeof(*rb));
	if (!rb) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	rb->base.ops = &dl_redis_ops;
	rb->cb = *cb;
	redis_fault_parse(&rb->fault);
	ret = redis_uri_parse(rest, &rb->uri, err, errlen);
	if (ret < 0) {
		free(rb);
		return ret;
	}
	snprintf(rb->host_id, sizeof(rb->host_id), "%s", conf->host_id);
	snprintf(rb->ttl, sizeof(rb->ttl), "%d", rb->uri.ttl_ms);
	snprintf(rb->delay, sizeof(rb->delay), "%d", rb->uri.lock_delay_ms);
	rb->inc_base = conf->incarnation;
	/* host id and incarnation: distinct daemons' pokes never share a
	 * name, as a receiver drops a poke whose name it has seen */
	rb->poke_src = dl_fnv1a(dl_fnv1a_str(DL_FNV_OFFSET, conf->host_id),
				&conf->incarnation, sizeof(conf->incarnation));
	rb->lease = conf->lease;
	rb->epoch = 1;
	/* no trusted lease until one is registered */
	atomic_store(&rb->lease->gen, rb->epoch);
	atomic_store(&rb->lease->until_ms, 0);
	rb->majority = (unsigned)rb->uri.nnodes / 2 + 1;
	rb->margin_ms = rb->uri.ttl_ms / 10 > 500 ? rb->uri.ttl_ms / 10 : 500;
	rb->drift_ms = rb->uri.nnodes > 1 ? rb->uri.ttl_ms / 100 + 2 : 0;
	user = conf->config ? dl_config_get(conf->config, "redis_user") : NULL;
	pw = conf->config ? dl_config_get(conf->config, "redis_password")
			  : NULL;
	snprintf(rb->user, sizeof(rb->user), "%s",
		 rb->uri.user[0] ? rb->uri.user
		 : user		 ? user
				 : "");
	if (pw && *pw) {
		rb->password = strdup(pw);
		if (!rb->password) {
			free(rb);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
	}
	pthread_mutex_init(&rb->mutex, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&rb->cond, &ca);
	pthread_condattr_destroy(&ca);
	dl_jobgate_init(&rb->gate, &rb->mutex, &rb->cond, &rb->kick,
			&rb->stopping);
	rb->nodes = calloc(rb->uri.nnodes, sizeof(*rb->nodes));
	if (!rb->nodes || redis_library_init(rb) < 0) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto out_close;
	}
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];

		n->rb = rb;
		n->idx = i;
		n->addr = rb->uri.nodes[i];
		n->sub_fd = -1;
		n->name = ++rb->names;
		for (int k = 0; k < REDIS_POOL; k++)
			pthread_mutex_init(&n->pool[k].mutex, NULL);
	}

	/* a first connection (checks AUTH, loads the script) and the lease
	 * on each node; a majority must answer */
	for (unsigned i = 0; i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		redisContext *c;
		char lease[17];
		uint64_t gen, name;

		c = redis_connect(rb, n, false, why, sizeof(why));
		if (c && redis_load_script(rb, c, n, why, sizeof(why)) == 0) {
			n->pool[0].c = c;
			n->up = true;
			if (redis_node_lease(rb, n, lease, &gen, &name) == 0)
				reached++;
			else
				snprintf(why, sizeof(why),
					 "lease registration failed");
		} else {
			if (c)
				redisFree(c);
			dl_log(DL_LOG_WARNING, "redis %s:%d: %s", n->addr.host,
			       n->addr.port, why);
			n->retry_at = dl_mono_ms() + REDIS_BACKOFF_MIN_MS;
		}
	}
	if (reached < rb->majority) {
		snprintf(err, errlen,
			 "cannot reach Redis (%u of %zu node(s) "
			 "answered, %u needed): %s",
			 reached, rb->uri.nnodes, rb->majority, why);
		ret = -ENOLCK;
		goto out_close;
	}

	ret = -pthread_create(&rb->keeper, NULL, redis_keeper_main, rb);
	if (ret == 0) {
		rb->keeper_started = true;
		ret = -pthread_create(&rb->watchdog, NULL, redis_watchdog_main,
				      rb);
	}
	if (ret == 0)
		rb->watchdog_started = true;
	for (unsigned i = 0; ret == 0 && i < rb->uri.nnodes; i++) {
		ret = -pthread_create(&rb->nodes[i].sub_thread, NULL,
				      redis_sub_main, &rb->nodes[i]);
		if (ret == 0)
			rb->nodes[i].sub_started = true;
	}
	if (ret < 0) {
		snprintf(err, errlen, "cannot start a thread: %s",
			 strerror(-ret));
		goto out_close;
	}
	dl_log(DL_LOG_INFO,
	       "redis: %zu node(s), prefix %s, lease %d ms, "
	       "lock-delay %d ms%s",
	       rb->uri.nnodes, rb->uri.prefix, rb->uri.ttl_ms,
	       rb->uri.lock_delay_ms, rb->uri.nnodes > 1 ? " (Redlock)" : "");
	*out = &rb->base;
	return 0;

out_close:
	redis_close(&rb->base);
	return ret;
}

void redis_close(struct dl_backend *be)
{
	struct redis_backend *rb = redis_of(be);
	char lease[17];

	pthread_mutex_lock(&rb->mutex);
	rb->stopping = true;
	pthread_cond_broadcast(&rb->cond);
	for (unsigned i = 0; rb->nodes && i < rb->uri.nnodes; i++)
		if (rb->nodes[i].sub_fd >= 0)
			shutdown(rb->nodes[i].sub_fd, SHUT_RDWR);
	pthread_mutex_unlock(&rb->mutex);
	if (rb->keeper_started)
		pthread_join(rb->keeper, NULL);
	if (rb->watchdog_started)
		pthread_join(rb->watchdog, NULL);
	for (unsigned i = 0; rb->nodes && i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];

		if (n->sub_started) {
			/* it may have connected after the shutdown above */
			for (;;) {
				struct timespec ts;
				int ret;

				clock_gettime(CLOCK_REALTIME, &ts);
				ts.tv_nsec += 100000000;
				if (ts.tv_nsec >= 1000000000) {
					ts.tv_sec++;
					ts.tv_nsec -= 1000000000;
				}
				ret = pthread_timedjoin_np(n->sub_thread, NULL,
							   &ts);
				if (ret != ETIMEDOUT)
					break;
				pthread_mutex_lock(&rb->mutex);
				if (n->sub_fd >= 0)
					shutdown(n->sub_fd, SHUT_RDWR);
				pthread_mutex_unlock(&rb->mutex);
			}
		}
	}
	/* a clean stop: our lease ends now (the lock manager has released
	 * everything already); nothing of it is trusted any more */
	if (rb->lease) {
		atomic_store(&rb->lease->gen, rb->epoch + 1);
		atomic_store(&rb->lease->until_ms, 0);
	}
	for (unsigned i = 0; rb->nodes && i < rb->uri.nnodes; i++) {
		struct redis_node *n = &rb->nodes[i];
		redisReply *r;

		redis_lease_name(rb, n->name, lease);
		if (n->registered && n->up &&
		    redis_node_script(rb, n, "drop", "", lease, 0, NULL, NULL,
				      &r, NULL) == 0)
			freeReplyObject(r);
		for (int k = 0; k < REDIS_POOL; k++) {
			if (n->pool[k].c)
				redisFree(n->pool[k].c);
			pthread_mutex_destroy(&n->pool[k].mutex);
		}
	}
	for (size_t b = 0; b < REDIS_BUCKETS; b++) {
		while (rb->held[b]) {
			struct redis_held *h = rb->held[b];

			rb->held[b] = h->next;
			redis_held_free(h);
		}
		while (rb->waits[b]) {
			struct redis_wait *w = rb->waits[b];

			rb->waits[b] = w->next;
			redis_wait_free(w);
		}
	}
	while (rb->jobs) {
		struct redis_job *j = rb->jobs;

		rb->jobs = j->next;
		free(j);
	}
	free(rb->nodes);
	free(rb->fn_text);
	if (rb->password) {
		explicit_bzero(rb->password, strlen(rb->password));
		free(rb->password);
	}
	pthread_cond_destroy(&rb->cond);
	pthread_mutex_destroy(&rb->mutex);
	free(rb);
}

/*
 * inspect.c - what the manager shows: the ids owners are shown by, the
 * text of the user.dlock.* xattrs and of the status, and the
 * administrator's list and break.
 *
 * Owns: lockmgr_owner_shown() (SipHash-2-4 under lockmgr.owner_key, drawn
 * from getrandom() at create: owner ids are kernel lock owners, that is
 * addresses, and flock owners are our own file handles, so they are never
 * shown as they are), lockmgr_describe(), lockmgr_token(),
 * lockmgr_status(), lockmgr_list() and lockmgr_break().
 *
 * Does not: change any state of the manager (lockmgr_break() asks the
 * backend; the losses it causes come back through cb->lost like any
 * other), or limit the size of its text (lockops.c fits it to an xattr).
 * The backend's list is the truth for holders and waiters; the manager
 * adds only what the backend no longer has: this host's lost holds.
 *
 * Threads: FUSE workers (getxattr, lockops.c) and the control socket's
 * thread (status, list, break, getlk's owner) call in; none of it runs on
 * a backend or timer thread.
 *
 * Locking: the object of a describe/token is pinned (lm_pin_obj()) for its
 * backend list() call, made without any mutex; lockmgr.mutex is taken
 * only to read the lost holds and the counters.  owner_key, host_id and
 * conf are immutable after create and read without it.
 */
#include "fs/lock/internal.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/util/log.h"

/* ---- owner ids shown ----------------------------------------------- */

#define LM_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define LM_SIPROUND                   \
	do {                          \
		v0 += v1;             \
		v1 = LM_ROTL(v1, 13); \
		v1 ^= v0;             \
		v0 = LM_ROTL(v0, 32); \
		v2 += v3;             \
		v3 = LM_ROTL(v3, 16); \
		v3 ^= v2;             \
		v0 += v3;             \
		v3 = LM_ROTL(v3, 21); \
		v3 ^= v0;             \
		v2 += v1;             \
		v1 = LM_ROTL(v1, 17); \
		v1 ^= v2;             \
		v2 = LM_ROTL(v2, 32); \
	} while (0)

/*
 * SipHash-2-4 (Aumasson and Bernstein) of one 8-byte message: the word @m
 * as its little-endian bytes, key words k0 = @key[0], k1 = @key[1].
 */
uint64_t lm_siphash24(const uint64_t key[2], uint64_t m)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ key[0];
	uint64_t v1 = 0x646f72616e646f6dULL ^ key[1];
	uint64_t v2 = 0x6c7967656e657261ULL ^ key[0];
	uint64_t v3 = 0x7465646279746573ULL ^ key[1];
	const uint64_t b = 8ULL << 56;

	v3 ^= m;
	LM_SIPROUND;
	LM_SIPROUND;
	v0 ^= m;
	v3 ^= b;
	LM_SIPROUND;
	LM_SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	LM_SIPROUND;
	LM_SIPROUND;
	LM_SIPROUND;
	LM_SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/*
 * lockmgr_owner_shown(): SipHash-2-4 of an owner id under a key drawn at
 * start.  Stable while the daemon runs (two entries of one
 * owner show the same id), and tells nothing of our memory or counters.
 */
uint64_t lockmgr_owner_shown(struct lockmgr *lm, uint64_t owner)
{
	return lm_siphash24(lm->owner_key, owner);
}

uint64_t lockmgr_owner_new(struct lockmgr *lm)
{
	return LM_OWNER_TAG | (atomic_fetch_add(&lm->next_owner, 1) + 1);
}

/* ---- xattr text ------------------------------------------------------- */

struct lm_text {
	char *buf;
	size_t len, cap;
	int err;
};

static void text_add(struct lm_text *t, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void text_add(struct lm_text *t, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (t->err)
		return;
	for (;;) {
		size_t room = t->cap - t->len;

		va_start(ap, fmt);
		n = vsnprintf(t->buf ? t->buf + t->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->err = -EINVAL;
			return;
		}
		if ((size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t nc = (t->cap + (size_t)n + 1) * 2;
		char *p = realloc(t->buf, nc);

		if (!p) {
			t->err = -ENOMEM;
			return;
		}
		t->buf = p;
		t->cap = nc;
	}
}

static void text_time(struct lm_text *t, int64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char b[32];

	gmtime_r(&s, &tm);
	strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
	text_add(t, "%s.%03dZ", b, (int)(ms % 1000));
}

static void text_range(struct lm_text *t, uint64_t start, uint64_t end)
{
	if (end == DL_RANGE_EOF)
		text_add(t, " %" PRIu64 "-EOF", start);
	else
		text_add(t, " %" PRIu64 "-%" PRIu64, start, end);
}

struct lm_describe {
	struct lockmgr *lm;
	struct lm_text *t;
	bool waiters;
};

static int describe_one(const struct dl_lock_info *info, void *arg)
{
	struct lm_describe *d = arg;

	if (info->waiting != d->waiters)
		return 0;
	text_add(d->t, "%s %s", lm_space_name(info->space),
		 lm_type_name(info->type));
	text_range(d->t, info->start, info->end);
	text_add(d->t, " host=%s pid=%u owner=%016" PRIx64, info->host,
		 info->pid, lockmgr_owner_shown(d->lm, info->owner));
	if (!info->waiting)
		text_add(d->t, " token=%" PRIu64, info->token);
	text_add(d->t, " since=");
	text_time(d->t, info->since_ms);
	text_add(d->t, "\n");
	return 0;
}

int lockmgr_describe(struct lockmgr *lm, uint64_t obj, bool waiters, char **out)
{
	struct lm_text t = { 0 };
	struct lm_describe d = { lm, &t, waiters };
	struct lm_obj *o;
	int ret;

	o = lm_pin_obj(lm, obj, NULL, &ret);
	if (!o)
		return ret;
	ret = dl_backend_list(lm->be, o->resource, describe_one, &d);
	if (!waiters) {
		pthread_mutex_lock(&lm->mutex);
		for (struct lm_hold *h = o->holds; h; h = h->next) {
			if (!h->lost)
				continue;
			text_add(&t,
				 "%s lost host=%s owner=%016" PRIx64 " since=",
				 lm_space_name(h->space), lm->host_id,
				 lockmgr_owner_shown(lm, h->owner));
			text_time(&t, h->lost_ms);
			text_add(&t, "\n");
		}
		pthread_mutex_unlock(&lm->mutex);
	}
	lm_unpin_obj(lm, o);
	text_add(&t, "%s", "");
	if (ret == 0)
		ret = t.err;
	if (ret < 0) {
		free(t.buf);
		return ret;
	}
	*out = t.buf;
	return 0;
}

struct lm_token {
	uint32_t pid;
	uint64_t token;
};

static int token_one(const struct dl_lock_info *info, void *arg)
{
	struct lm_token *k = arg;

	if (!info->waiting && info->mine && info->pid == k->pid &&
	    info->token > k->token)
		k->token = info->token;
	return 0;
}

int lockmgr_token(struct lockmgr *lm, uint64_t obj, uint32_t pid,
		  uint64_t *token)
{
	struct lm_token k = { pid, 0 };
	struct lm_obj *o;
	int ret;

	o = lm_pin_obj(lm, obj, NULL, &ret);
	if (!o)
		return ret;
	ret = dl_backend_list(lm->be, o->resource, token_one, &k);
	lm_unpin_obj(lm, o);
	if (ret == 0 && k.token == 0)
		ret = -ENODATA;
	*token = k.token;
	return ret;
}

int lockmgr_status(struct lockmgr *lm, const char *backend_shown, char **out)
{
	struct lm_text t = { 0 };
	char bs[256];
	size_t nholds, nwaiters, nlost;
	int ret;

	ret = dl_backend_status(lm->be, bs, sizeof(bs));
	if (ret < 0)
		snprintf(bs, sizeof(bs), "health=down (%s)", strerror(-ret));
	pthread_mutex_lock(&lm->mutex);
	nholds = lm->nholds;
	nwaiters = lm->nwaiters;
	nlost = lm->nlost;
	pthread_mutex_unlock(&lm->mutex);
	text_add(&t,
		 "host_id=%s\nbackend=%s\nguarantee=%s\nbackend_status=%s\n"
		 "held=%zu waiting=%zu lost=%zu\nlock_timeout=%u\nversion=%s\n",
		 lm->host_id, backend_shown, lm->be->ops->guarantee, bs, nholds,
		 nwaiters, nlost, lm->conf.lock_timeout_s, DLOCKFS_VERSION);
	if (t.err) {
		free(t.buf);
		return t.err;
	}
	*out = t.buf;
	return 0;
}

int lockmgr_list(struct lockmgr *lm, const char *resource, dl_lock_info_fn fn,
		 void *arg)
{
	return dl_backend_list(lm->be, resource, fn, arg);
}

int lockmgr_break(struct lockmgr *lm, const char *resource)
{
	int ret = dl_backend_break_lock(lm->be, resource);

	dl_log(ret == 0 ? DL_LOG_NOTICE : DL_LOG_WARNING,
	       "break %s by an administrator: %s", resource,
	       ret == 0 ? "done" : strerror(-ret));
	return ret;
}

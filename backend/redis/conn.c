/*
 * conn.c - one Redis node's wire: the connection pool, connecting and
 * AUTH, loading redis.lua (a function library, or a script where
 * functions are missing or refused), running one script op, and the
 * encoding of the ops' arguments and answers.
 *
 * Owns: struct redis_conn (REDIS_POOL connections per node), a node's
 * reachability and reconnect backoff (up, retry_at, backoff_ms),
 * rb->fcall, rb->sha, rb->fname and rb->fn_text, and the calling
 * convention of redis.lua (KEYS P:g:R P:w:R P:d:R, or P:v:R alone for
 * the version ops; ARGV op, prefix, lease, ttl, lock-delay, then the
 * op's own).  Does not: decide anything from an answer beyond its shape
 * (the callers do), keep a table, or retry later (a failed call is
 * reported; the keeper runs jobs).  The subscriber's connection is made
 * here (redis_connect()) but owned by sub.c.
 *
 * Locking:
 *  - a pooled connection is used only by the thread holding its mutex:
 *    redis_conn_get() returns one locked (any free one of the pool, else
 *    it waits for the one chosen round-robin), redis_conn_put() unlocks
 *    it.  Connecting, AUTH, loading the script and every command on it
 *    happen under that mutex, never under rb->mutex.
 *  - rb->mutex is taken inside a connection's mutex, briefly, to read and
 *    set the node's up, retry_at and backoff_ms (redis_conn_get(),
 *    redis_node_set_up(), redis_node_set_down()); never the other way
 *    round.  Nothing here may be called with rb->mutex held, and nothing
 *    here makes a callback.  redis_node_simple() calls redis_node_lease()
 *    (lease.c), which takes rb->mutex with no connection held.
 *  - rb->fcall is atomic and only goes from true to false (a server
 *    without functions, or a user who may not load them: EVALSHA for
 *    good).  rb->sha is written by redis_load_script() under a
 *    connection's mutex only - two threads may write it at once - and
 *    read by redis_node_script() with no lock: a known, benign data race,
 *    left as it was.  Every writer writes the same 40 bytes (the SHA-1 of
 *    redis_lua); a reader racing the first write (fcall just turned false
 *    on another connection) may send an empty or partial SHA, which the
 *    server answers NOSCRIPT, and that reloads the script and retries.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>

#include "backend/redis/internal.h"
#include "backend/redis_lua.h"
#include "backend/util/hash.h"
#include "backend/util/log.h"

/* ---- encoding and decoding ----------------------------------------------- */

void redis_hex16(char buf[17], uint64_t v)
{
	snprintf(buf, 17, "%016" PRIx64, v);
}

bool redis_reply_u64(const redisReply *r, uint64_t *v)
{
	char *end;

	if (r->type == REDIS_REPLY_INTEGER) {
		*v = (uint64_t)r->integer;
		return r->integer >= 0;
	}
	if (r->type != REDIS_REPLY_STRING || r->len == 0)
		return false;
	errno = 0;
	*v = strtoull(r->str, &end, 10);
	return errno == 0 && *end == '\0';
}

int64_t redis_reply_int(const redisReply *r)
{
	if (r->type == REDIS_REPLY_INTEGER)
		return r->integer;
	if (r->type == REDIS_REPLY_STRING)
		return strtoll(r->str, NULL, 10);
	return -2;
}

/* ---- reachability (takes rb->mutex) -------------------------------------- */

static void redis_node_set_down(struct redis_backend *rb, struct redis_node *n)
{
	int64_t now = dl_mono_ms();

	pthread_mutex_lock(&rb->mutex);
	if (n->up)
		dl_log(DL_LOG_WARNING, "redis %s:%d: unreachable", n->addr.host,
		       n->addr.port);
	n->up = false;
	n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2
				      : REDIS_BACKOFF_MIN_MS;
	if (n->backoff_ms > REDIS_BACKOFF_MAX_MS)
		n->backoff_ms = REDIS_BACKOFF_MAX_MS;
	n->retry_at = now + n->backoff_ms;
	pthread_mutex_unlock(&rb->mutex);
}

static void redis_node_set_up(struct redis_backend *rb, struct redis_node *n)
{
	pthread_mutex_lock(&rb->mutex);
	if (!n->up)
		dl_log(DL_LOG_INFO, "redis %s:%d: reachable", n->addr.host,
		       n->addr.port);
	n->up = true;
	n->backoff_ms = 0;
	n->retry_at = 0;
	pthread_mutex_unlock(&rb->mutex);
}

/* ---- connecting, AUTH, loading the code ---------------------------------- */

/*
 * AUTH if configured; 0, or -EACCES with the server's reason in @err, or
 * -EIO/-ENOMEM.
 *
 * rb->password is the daemon's only copy of the password.  hiredis would
 * copy the command into two buffers that it frees without wiping (the
 * formatted command and the output buffer), so we format it, send it on
 * the (blocking, send-timed) socket ourselves and wipe it; hiredis only
 * reads the reply.
 */
static int redis_auth(struct redis_backend *rb, redisContext *c, char *err,
		      size_t errlen)
{
	const char *argv[3] = { "AUTH" };
	size_t lens[3] = { 4 };
	redisReply *r = NULL;
	int argc = 1, ret = 0, len;
	size_t off = 0;
	char *cmd;

	if (!rb->password)
		return 0;
	if (rb->user[0]) {
		argv[argc] = rb->user;
		lens[argc++] = strlen(rb->user);
	}
	argv[argc] = rb->password;
	lens[argc++] = strlen(rb->password);
	len = redisFormatCommandArgv(&cmd, argc, argv, lens);
	if (len < 0) {
		snprintf(err, errlen, "AUTH: out of memory");
		return -ENOMEM;
	}
	while (off < (size_t)len) {
		ssize_t w =
			send(c->fd, cmd + off, (size_t)len - off, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			snprintf(err, errlen, "AUTH: %s",
				 w < 0 ? strerror(errno) : "short write");
			break;
		}
		off += (size_t)w;
	}
	explicit_bzero(cmd, (size_t)len);
	redisFreeCommand(cmd);
	if (off < (size_t)len)
		return -EIO;
	if (redisGetReply(c, (void **)&r) != REDIS_OK || !r) {
		snprintf(err, errlen, "AUTH: %s", c->errstr);
		return -EIO;
	}
	if (r->type == REDIS_REPLY_ERROR) {
		/* the server's message never quotes the password */
		snprintf(err, errlen, "AUTH refused: %.*s", (int)r->len,
			 r->str);
		ret = -EACCES;
	}
	freeReplyObject(r);
	return ret;
}

/* a new connection to @n, authenticated; NULL with a reason in @err */
redisContext *redis_connect(struct redis_backend *rb, struct redis_node *n,
			    bool blocking_reads, char *err, size_t errlen)
{
	struct timeval tv = { rb->uri.connect_timeout_ms / 1000,
			      (rb->uri.connect_timeout_ms % 1000) * 1000 };
	struct timeval none = { 0, 0 };
	redisContext *c;

	c = redisConnectWithTimeout(n->addr.host, n->addr.port, tv);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (c->err) {
		snprintf(err, errlen, "%s", c->errstr);
		redisFree(c);
		return NULL;
	}
	/* commands time out like connects; a subscriber waits for ever
	 * (keepalive and the keeper notice a dead server) */
	if (redisSetTimeout(c, blocking_reads ? none : tv) != REDIS_OK ||
	    redisEnableKeepAlive(c) != REDIS_OK) {
		snprintf(err, errlen, "%s", c->errstr);
		redisFree(c);
		return NULL;
	}
	if (redis_auth(rb, c, err, errlen) < 0) {
		redisFree(c);
		return NULL;
	}
	return c;
}

/*
 * The library text for FUNCTION LOAD and its names, from a hash of
 * redis_lua: daemons of different versions sharing one server each call
 * their own code.  0 or -ENOMEM.
 */
int redis_library_init(struct redis_backend *rb)
{
	static const char fmt[] = "#!lua name=%s\n"
				  "local DLOCKFS_FUNCTION = '%s'\n";
	uint64_t h = dl_fnv1a(DL_FNV_OFFSET, redis_lua, sizeof(redis_lua) - 1);
	size_t hlen;

	snprintf(rb->fname, sizeof(rb->fname), "dlockfs_%016" PRIx64, h);
	hlen = (size_t)snprintf(NULL, 0, fmt, rb->fname, rb->fname);
	rb->fn_len = hlen + sizeof(redis_lua) - 1;
	rb->fn_text = malloc(rb->fn_len + 1);
	if (!rb->fn_text)
		return -ENOMEM;
	snprintf(rb->fn_text, hlen + 1, fmt, rb->fname, rb->fname);
	memcpy(rb->fn_text + hlen, redis_lua, sizeof(redis_lua));
	atomic_store(&rb->fcall, true);
	return 0;
}

/*
 * FUNCTION LOAD on @c.  Returns 0 when the library is there (loaded now
 * or already), -ENOTSUP when the server has no functions or this user
 * may not load them (the whole backend then uses EVALSHA for good), or
 * -EIO with the reason in @err.
 */
static int redis_load_function(struct redis_backend *rb, redisContext *c,
			       const struct redis_node *n, char *err,
			       size_t errlen)
{
	const char *argv[3] = { "FUNCTION", "LOAD", rb->fn_text };
	size_t lens[3] = { 8, 4, rb->fn_len };
	redisReply *r = redisCommandArgv(c, 3, argv, lens);
	int ret = 0;

	if (!r) {
		snprintf(err, errlen, "FUNCTION LOAD: %s", c->errstr);
		return -EIO;
	}
	if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "already exists")) {
		ret = 0; /* the same text: another connection loaded it */
	} else if (r->type == REDIS_REPLY_ERROR &&
		   (strncmp(r->str, "ERR unknown", 11) == 0 ||
		    strncmp(r->str, "NOPERM", 6) == 0)) {
		if (atomic_exchange(&rb->fcall, false))
			dl_log(DL_LOG_INFO,
			       "redis %s:%d: no FUNCTION LOAD (%.*s): using "
			       "EVALSHA",
			       n->addr.host, n->addr.port,
			       (int)strcspn(r->str, ","), r->str);
		ret = -ENOTSUP;
	} else if (r->type != REDIS_REPLY_STRING) {
		snprintf(err, errlen, "FUNCTION LOAD refused: %.*s",
			 r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
			 r->type == REDIS_REPLY_ERROR ? r->str : "");
		ret = -EIO;
	}
	freeReplyObject(r);
	return ret;
}

/* FUNCTION LOAD, or SCRIPT LOAD without functions, on @c; 0 or -EIO */
int redis_load_script(struct redis_backend *rb, redisContext *c,
		      const struct redis_node *n, char *err, size_t errlen)
{
	const char *argv[3] = { "SCRIPT", "LOAD", redis_lua };
	size_t lens[3] = { 6, 4, sizeof(redis_lua) - 1 };
	redisReply *r;
	int ret = 0;

	if (atomic_load(&rb->fcall)) {
		ret = redis_load_function(rb, c, n, err, errlen);
		if (ret != -ENOTSUP)
			return ret;
		ret = 0;
	}
	r = redisCommandArgv(c, 3, argv, lens);
	if (!r) {
		snprintf(err, errlen, "SCRIPT LOAD: %s", c->errstr);
		return -EIO;
	}
	if (r->type != REDIS_REPLY_STRING || r->len != 40) {
		snprintf(err, errlen, "SCRIPT LOAD refused: %.*s",
			 r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
			 r->type == REDIS_REPLY_ERROR ? r->str : "");
		ret = -EIO;
	} else {
		memcpy(rb->sha, r->str, 40); /* the same everywhere */
		rb->sha[40] = '\0';
	}
	freeReplyObject(r);
	return ret;
}

/* ---- the pool ------------------------------------------------------------ */

/*
 * A locked connection to @n, connected; NULL when the node is down (in
 * its backoff, or the connect failed within connect_timeout_ms).
 */
struct redis_conn *redis_conn_get(struct redis_backend *rb,
				  struct redis_node *n)
{
	unsigned start = atomic_fetch_add(&n->rr, 1);
	struct redis_conn *c = NULL;
	char err[256];
	bool wait;

	for (unsigned i = 0; i < REDIS_POOL && !c; i++)
		if (pthread_mutex_trylock(
			    &n->pool[(start + i) % REDIS_POOL].mutex) == 0)
			c = &n->pool[(start + i) % REDIS_POOL];
	if (!c) {
		c = &n->pool[start % REDIS_POOL];
		pthread_mutex_lock(&c->mutex);
	}
	if (c->c)
		return c;
	pthread_mutex_lock(&rb->mutex);
	wait = dl_mono_ms() < n->retry_at;
	pthread_mutex_unlock(&rb->mutex);
	if (!wait) {
		c->c = redis_connect(rb, n, false, err, sizeof(err));
		if (c->c &&
		    redis_load_script(rb, c->c, n, err, sizeof(err)) < 0) {
			redisFree(c->c);
			c->c = NULL;
		}
		if (c->c) {
			redis_node_set_up(rb, n);
			return c;
		}
		dl_log(DL_LOG_DEBUG, "redis %s:%d: %s", n->addr.host,
		       n->addr.port, err);
		redis_node_set_down(rb, n);
	}
	pthread_mutex_unlock(&c->mutex);
	return NULL;
}

void redis_conn_put(struct redis_conn *c)
{
	pthread_mutex_unlock(&c->mutex);
}

/* ---- one script op ------------------------------------------------------- */

/* a server that forgot our code (restart, FLUSH) */
static bool redis_reply_no_code(const redisReply *r)
{
	return r->type == REDIS_REPLY_ERROR &&
	       (strncmp(r->str, "NOSCRIPT", 8) == 0 ||
		strncmp(r->str, "ERR Function not found", 22) == 0);
}

#define REDIS_ARGV_STACK 24  /* arguments built without malloc */
#define REDIS_KEYS_STACK 768 /* bytes of the key names */

/*
 * Run script op @op on node @n for @resource ("" for none) as lease
 * @lease, with @nextra op-specific arguments: FCALL FNAME 3 KEYS... or
 * EVALSHA SHA 3 KEYS..., then ARGV.  Returns 0 and the reply (an array),
 * or -ENOLCK: the node is down or the call failed; *indoubt then says
 * whether the script may have run.  The common case allocates nothing
 * but hiredis's own buffers.
 */
int redis_node_script(struct redis_backend *rb, struct redis_node *n,
		      const char *op, const char *resource, const char *lease,
		      int nextra, const char *const *extra,
		      const size_t *extralen, redisReply **out, bool *indoubt)
{
	return redis_node_call(rb, n, op, "gwd", resource, lease, nextra, extra,
			       extralen, out, indoubt);
}

/*
 * redis_node_script() with the keys P:K:R for each kind letter K of
 * @kinds (1 to 3 of them, in that order) instead of P:g:R P:w:R P:d:R:
 * the version ops declare their own key only.
 */
int redis_node_call(struct redis_backend *rb, struct redis_node *n,
		    const char *op, const char *kinds, const char *resource,
		    const char *lease, int nextra, const char *const *extra,
		    const size_t *extralen, redisReply **out, bool *indoubt)
{
	const char *argv_stack[REDIS_ARGV_STACK], **argv = argv_stack;
	size_t lens_stack[REDIS_ARGV_STACK], *lens = lens_stack;
	char keys_stack[REDIS_KEYS_STACK], *keys = keys_stack;
	size_t plen = strlen(rb->uri.prefix), rlen = strlen(resource);
	size_t nkeys = strlen(kinds), klen = plen + 3 + rlen;
	size_t base = 3 + nkeys, nargs = (size_t)nextra + base + 5;
	static const char *const numkeys[] = { "0", "1", "2", "3" };
	struct redis_conn *c;
	redisReply *r = NULL;
	int argc = 0, ret = -ENOLCK;

	assert(nkeys >= 1 && nkeys <= 3);
	*out = NULL;
	if (indoubt)
		*indoubt = false;
	if (redis_fault_fail(&rb->fault, op))
		return -ENOLCK;
	if (nargs > REDIS_ARGV_STACK) {
		argv = calloc(nargs, sizeof(*argv));
		lens = calloc(nargs, sizeof(*lens));
	}
	if (nkeys * klen > sizeof(keys_stack))
		keys = malloc(nkeys * klen);
	if (!keys || !argv || !lens) {
		ret = -ENOMEM;
		goto out_free;
	}
	for (size_t k = 0; k < nkeys; k++) {
		char *key = keys + k * klen;

		memcpy(key, rb->uri.prefix, plen);
		key[plen] = ':';
		key[plen + 1] = kinds[k];
		key[plen + 2] = ':';
		memcpy(key + plen + 3, resource, rlen);
		argv[3 + k] = key;
		lens[3 + k] = klen;
	}
	argv[2] = numkeys[nkeys];
	argv[base] = op;
	argv[base + 1] = rb->uri.prefix;
	argv[base + 2] = lease;
	argv[base + 3] = rb->ttl;
	argv[base + 4] = rb->delay;
	argc = (int)base + 5;
	for (int i = 0; i < nextra; i++) {
		argv[argc] = extra[i];
		lens[argc++] = extralen ? extralen[i] : strlen(extra[i]);
	}

	c = redis_conn_get(rb, n);
	if (!c)
		goto out_free;
	for (int attempt = 0; attempt < 2; attempt++) {
		char err[256];

		/* read each time: a reload may have switched to EVALSHA */
		if (atomic_load(&rb->fcall)) {
			argv[0] = "FCALL";
			argv[1] = rb->fname;
		} else {
			argv[0] = "EVALSHA";
			argv[1] = rb->sha;
		}
		for (size_t i = 0; i < base + 5; i++)
			if (i < 3 || i >= base)
				lens[i] = strlen(argv[i]);
		r = redisCommandArgv(c->c, argc, argv, lens);
		if (!r)
			break;
		if (redis_reply_no_code(r) && attempt == 0) {
			freeReplyObject(r);
			r = NULL;
			if (redis_load_script(rb, c->c, n, err, sizeof(err)) <
			    0) {
				dl_log(DL_LOG_WARNING, "redis %s:%d: %s",
				       n->addr.host, n->addr.port, err);
				break;
			}
			continue;
		}
		break;
	}
	if (!r) {
		if (c->c->err) {
			dl_log(DL_LOG_DEBUG, "redis %s:%d: %s: %s",
			       n->addr.host, n->addr.port, op, c->c->errstr);
			redisFree(c->c);
			c->c = NULL;
			if (indoubt)
				*indoubt = true;
			redis_conn_put(c);
			redis_node_set_down(rb, n);
			goto out_free;
		}
		redis_conn_put(c);
		goto out_free;
	}
	redis_conn_put(c);
	if (redis_fault_lose(&rb->fault, op)) {
		freeReplyObject(r); /* it ran: as if the answer never came */
		if (indoubt)
			*indoubt = true;
		goto out_free;
	}
	if (r->type != REDIS_REPLY_ARRAY) {
		dl_log(DL_LOG_ERR, "redis %s:%d: %s: unexpected answer: %.*s",
		       n->addr.host, n->addr.port, op,
		       r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
		       r->type == REDIS_REPLY_ERROR ? r->str : "");
		freeReplyObject(r);
		goto out_free;
	}
	*out = r;
	ret = 0;
out_free:
	if (keys != keys_stack)
		free(keys);
	if (argv != argv_stack) {
		free(argv);
		free(lens);
	}
	return ret;
}

/* ---- the ops' arguments -------------------------------------------------- */

struct redis_lockargs {
	char space[2], type[2], start[17], end[17], owner[17], pid[12],
		wait[17], mode[2], since[24];
	const char *v[9];
};

static void redis_lockargs_fill(struct redis_lockargs *a,
				const struct dl_lock_req *req, uint64_t wait_id,
				char mode, int64_t since)
{
	a->space[0] = req->space == DL_SPACE_FLOCK ? '0' : '1';
	a->space[1] = '\0';
	a->type[0] = req->type == DL_WRLCK   ? 'W'
		     : req->type == DL_RDLCK ? 'R'
					     : 'U';
	a->type[1] = '\0';
	redis_hex16(a->start, req->start);
	redis_hex16(a->end, req->end);
	redis_hex16(a->owner, req->owner);
	snprintf(a->pid, sizeof(a->pid), "%u", req->pid);
	if (wait_id)
		redis_hex16(a->wait, wait_id);
	else
		a->wait[0] = '\0';
	a->mode[0] = mode;
	a->mode[1] = '\0';
	if (since > 0)
		snprintf(a->since, sizeof(a->since), "%" PRId64, since);
	else
		a->since[0] = '\0';
	a->v[0] = a->space;
	a->v[1] = a->type;
	a->v[2] = a->start;
	a->v[3] = a->end;
	a->v[4] = a->owner;
	a->v[5] = a->pid;
	a->v[6] = a->wait;
	a->v[7] = a->mode;
	a->v[8] = a->since;
}

/*
 * One lock script on one node as lease @lease.  @since: the enqueue time
 * to store for a queued request (Redlock, the same on every node), 0: the
 * server's clock.  On RO_GRANTED, *token and (if @prev) a copy of the
 * undo record the script returns (opaque here: what the grant replaced on
 * that node, a few ranges, not the owner's whole list), for an undo.
 */
enum redis_outcome redis_node_lock(struct redis_backend *rb,
				   struct redis_node *n, const char *lease,
				   const struct dl_lock_req *req,
				   uint64_t wait_id, char mode, int64_t since,
				   uint64_t *token, char **prev, bool *indoubt)
{
	struct redis_lockargs a;
	enum redis_outcome o = RO_ERROR;
	redisReply *r;
	int64_t v;

	*indoubt = false;
	redis_lockargs_fill(&a, req, wait_id, mode, since);
	if (redis_node_script(rb, n, "lock", req->resource, lease, 9, a.v, NULL,
			      &r, indoubt) < 0)
		return RO_ERROR;
	v = r->elements ? redis_reply_int(r->element[0]) : -2;
	if (v == 1 && r->elements >= 3 &&
	    redis_reply_u64(r->element[1], token)) {
		o = RO_GRANTED;
		if (prev) {
			*prev = r->element[2]->type == REDIS_REPLY_STRING
					? strdup(r->element[2]->str)
					: strdup("");
			if (!*prev)
				*prev = strdup(""); /* best effort */
		}
	} else if (v == 0) {
		o = RO_CONFLICT;
	} else if (v == 2) {
		o = RO_QUEUED;
	} else if (v == -1) {
		o = RO_LEASE;
	}
	freeReplyObject(r);
	return o;
}

/*
 * A simple op (unlock, release, undo, cancel) on one node under its
 * current lease; reply or NULL.  @arg11: unlock and release: the newest
 * token it may end ("" all); undo: the lock's undo record.  *name_out: the
 * lease name it ran under.
 */
redisReply *redis_node_simple(struct redis_backend *rb, struct redis_node *n,
			      const char *op, const struct dl_lock_req *req,
			      const char *arg11, bool *indoubt,
			      uint64_t *name_out)
{
	struct redis_lockargs a;
	const char *extra[6];
	char lease[17];
	uint64_t gen, name;
	redisReply *r;

	if (indoubt)
		*indoubt = false;
	if (redis_node_lease(rb, n, lease, &gen, &name) < 0)
		return NULL;
	if (name_out)
		*name_out = name;
	redis_lockargs_fill(&a, req, 0, 'g', 0);
	if (strcmp(op, "cancel") == 0) {
		redis_hex16(a.wait, req->wait_id);
		extra[0] = a.wait;
		if (redis_node_script(rb, n, op, req->resource, lease, 1, extra,
				      NULL, &r, indoubt) < 0)
			return NULL;
		return r;
	}
	/* [6] space [7] type [8] start [9] end [10] owner [11] arg11 */
	extra[0] = a.space;
	extra[1] = a.type;
	extra[2] = a.start;
	extra[3] = a.end;
	extra[4] = a.owner;
	extra[5] = arg11 ? arg11 : "";
	if (redis_node_script(rb, n, op, req->resource, lease, arg11 ? 6 : 5,
			      extra, NULL, &r, indoubt) < 0)
		return NULL;
	return r;
}

/*
 * model.c - the model test of the lock contract (issue 8).
 *
 * Seeded random sequences of lock, unlock, F_GETLK, conversion, close,
 * process exit, blocking waits and cancels, from several owners on two or
 * three hosts, in both lock spaces, with ranges at the edges (0, 2^63-1,
 * EOF), are applied to a backend and to the reference model
 * (tests/model/refmodel.c, built on backend/range.c).  After every step
 * the step's result and the grants the backend reported are compared with
 * the model's; every --check-every steps and at the end, the whole lock
 * table (dl_backend_list(): holders and waiters, per host, owner, range
 * and type) is compared too.  So the four implementations of the lock
 * rule - range.c, redis.lua, the ZooKeeper grant rule, local.c's
 * flock/FIFO code - are held to one definition.
 *
 * Hosts: each is its own dl_backend_open() on one URI (own host id,
 * incarnation and lease storage), so they share the store.  "local:" is
 * per process: one instance, and the hosts are owner namespaces.  Every
 * run starts in a fresh namespace (Redis prefix, ZooKeeper chroot).
 *
 * Deterministic given the seed: one driver thread makes every call and
 * generates the next step from the model's state only; the callbacks just
 * record.  After a step the driver waits (bounded) for exactly the grants
 * the model expects; a grant it does not expect, a failure or a loss is a
 * mismatch.
 *
 * On a mismatch it prints the backend, the seed and the step, then
 * shrinks: replays the prefix checking the whole table after every step
 * (the first step that differs), then removes steps (ddmin) while the
 * replay still fails, within --shrink-secs, and prints the shortest
 * failing sequence it found.
 *
 * Known issues: a backend that differs from the contract, with the
 * difference understood and reported, can be run with --known=ID: the
 * model then takes on that backend's behaviour for that one point, and
 * says so in the log (table KNOWN_ISSUES below).  Nothing else loosens
 * the comparison.
 *
 * Exit status: 0 all equal, 1 a mismatch, 2 usage or setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/util/log.h"
#include "tests/model/refmodel.h"

#define MAX_HOSTS  3
#define MAX_OWNERS 8
#define MSG_MAX	   8192
/* --cache: steps per round; each round ends with every owner's exit */
#define CACHE_ROUND 60
/* --known=late-grant: the Redis keeper (backend/redis/keeper.c) re-checks
 * a wait every second, but a keeper asleep when the wait was queued wakes
 * only for its next renewal (ttl / 3 = 5 s by default) */
#define LATE_GRANT_MS 8000

/* ------------------------------------------------------------ options */

enum be_kind { BE_LOCAL, BE_REDIS, BE_ZK, BE_PG };

struct opts {
	enum be_kind kind;
	const char *server; /* HOST:PORT of Redis or ZooKeeper */
	int hosts, owners, res;
	size_t steps;
	uint64_t seed;
	unsigned check_every;
	int grant_ms; /* bound of the wait for an expected grant */
	int quiet_ms; /* at the end: time for late, unexpected callbacks */
	int shrink_secs;
	bool shrink;
	bool full_edges; /* offsets past 2^63-1 other than EOF, too */
	bool verbose;
	bool busy_owners; /* a waiting owner may take POSIX locks */
	int slow_ms;	  /* an expected grant must arrive within this */
	int policy; /* -1: the backend's; else forced (checks the checker) */
	bool single_pass; /* --known=single-pass */
	bool late_grant;  /* --known=late-grant */
	bool cache;	  /* --cache: every host under backend/cache.c */
	bool mixed;	  /* --mixed: as --cache, odd hosts with cache=off */
};

static struct opts opt = {
	.kind = BE_LOCAL,
	.hosts = 2,
	.owners = 3,
	.res = 2,
	.steps = 2000,
	.seed = 1,
	.check_every = 10,
	.grant_ms = 3000,
	.slow_ms = -1,
	.policy = -1,
	.quiet_ms = -1,
	.shrink_secs = 60,
	.shrink = true,
	.full_edges = true,
	.busy_owners = true,
};

static const char *kind_name(enum be_kind k)
{
	return k == BE_LOCAL   ? "local"
	       : k == BE_REDIS ? "redis"
	       : k == BE_ZK    ? "zk"
			       : "pg";
}

/*
 * Deviations from the contract that are known and reported, each with the
 * backends it concerns.  --known=ID makes the model follow the backend on
 * that one point; run.sh names the IDs it passes.
 */
static const struct known_issue {
	const char *id;
	const char *backends;
	const char *what;
} KNOWN_ISSUES[] = {
	{ "single-pass", "local",
	  "the waiters are run once per change: a grant that converts its "
	  "owner's lock to shared does not wake an earlier waiter it "
	  "unblocks; that waiter waits for the next change of the file's "
	  "locks (the model runs the waiters once, as local.c)" },
	{ "late-grant", "redis",
	  "the same single pass in redis.lua; the waiter it misses is "
	  "granted by the keeper's safety re-check (op_poll), which runs "
	  "every second once the keeper is awake but can start a renewal "
	  "period (ttl/3) after the wait was queued: such grants may take "
	  "up to 8 s, where every other grant must arrive within --slow-ms" },
};

/* --------------------------------------------------------------- rng */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rng_below(uint64_t *s, unsigned n)
{
	return (unsigned)(rng_next(s) % n);
}

/* ------------------------------------------------------------- steps */

enum op { OP_LOCK, OP_UNLOCK, OP_GETLK, OP_CLOSE, OP_EXIT, OP_CANCEL };

struct step {
	enum op op;
	int host;
	uint32_t owner;
	int res;
	enum dl_space space;
	enum dl_lock_type type;
	uint64_t start, end;
	uint64_t wait_id; /* OP_LOCK: 0 non-blocking; OP_CANCEL: the wait */
	bool conversion;  /* OP_LOCK of an owner's lock, other type */
};

struct steps {
	struct step *v;
	size_t n, cap;
};

/* room for one more element in the array *@v of *@n of *@cap (each
 * @size bytes); exits on out of memory, as the test driver may */
static void *grow(void *v, size_t *cap, size_t n, size_t size)
{
	if (n == *cap) {
		size_t nc = *cap ? 2 * *cap : 64;

		v = realloc(v, nc * size);
		if (!v) {
			fprintf(stderr, "model: out of memory\n");
			exit(2);
		}
		*cap = nc;
	}
	return v;
}

static void steps_push(struct steps *sl, const struct step *s)
{
	sl->v = grow(sl->v, &sl->cap, sl->n, sizeof(*sl->v));
	sl->v[sl->n++] = *s;
}

static const char *fmt_off(uint64_t v, char *buf, size_t len)
{
	const uint64_t h = (uint64_t)INT64_MAX;

	if (v == DL_RANGE_EOF)
		snprintf(buf, len, "EOF");
	else if (v >= DL_RANGE_EOF - 4)
		snprintf(buf, len, "EOF-%" PRIu64, DL_RANGE_EOF - v);
	else if (v == h)
		snprintf(buf, len, "2^63-1");
	else if (v == h + 1)
		snprintf(buf, len, "2^63");
	else if (v > h && v - h < 5)
		snprintf(buf, len, "2^63+%" PRIu64, v - h - 1);
	else if (v < h && h - v < 5)
		snprintf(buf, len, "2^63-%" PRIu64, h - v + 1);
	else
		snprintf(buf, len, "%" PRIu64, v);
	return buf;
}

static const char *type_name(enum dl_lock_type t)
{
	return t == DL_WRLCK ? "W" : t == DL_RDLCK ? "R" : "U";
}

static const char *space_name(enum dl_space s)
{
	return s == DL_SPACE_FLOCK ? "flock" : "posix";
}

static void step_fmt(const struct step *s, char *buf, size_t len)
{
	char a[24], b[24];
	int o = snprintf(buf, len, "h%d.o%u ", s->host, s->owner);

	if (o < 0 || (size_t)o >= len)
		return;
	buf += o;
	len -= (size_t)o;
	switch (s->op) {
	case OP_LOCK:
		snprintf(buf, len, "%s %s f%d %s [%s, %s]%s%s", "lock",
			 space_name(s->space), s->res, type_name(s->type),
			 fmt_off(s->start, a, sizeof(a)),
			 fmt_off(s->end, b, sizeof(b)),
			 s->wait_id ? " wait" : " nb", s->wait_id ? "" : "");
		if (s->wait_id) {
			size_t l = strlen(buf);

			snprintf(buf + l, len - l, "#%" PRIu64, s->wait_id);
		}
		break;
	case OP_UNLOCK:
		snprintf(buf, len, "unlock %s f%d [%s, %s]",
			 space_name(s->space), s->res,
			 fmt_off(s->start, a, sizeof(a)),
			 fmt_off(s->end, b, sizeof(b)));
		break;
	case OP_GETLK:
		snprintf(buf, len, "getlk %s f%d %s [%s, %s]",
			 space_name(s->space), s->res, type_name(s->type),
			 fmt_off(s->start, a, sizeof(a)),
			 fmt_off(s->end, b, sizeof(b)));
		break;
	case OP_CLOSE:
		snprintf(buf, len, "close f%d (release posix)", s->res);
		break;
	case OP_EXIT:
		snprintf(buf, len, "exit (cancel waits, release all)");
		break;
	case OP_CANCEL:
		snprintf(buf, len, "cancel wait#%" PRIu64, s->wait_id);
		break;
	}
}

static bool parse_off(const char *t, uint64_t *v)
{
	const uint64_t h = (uint64_t)INT64_MAX;
	unsigned long long k = 0;
	char *end;

	if (strcmp(t, "EOF") == 0) {
		*v = DL_RANGE_EOF;
	} else if (sscanf(t, "EOF-%llu", &k) == 1) {
		*v = DL_RANGE_EOF - k;
	} else if (strcmp(t, "2^63-1") == 0) {
		*v = h;
	} else if (sscanf(t, "2^63-%llu", &k) == 1) {
		*v = h + 1 - k;
	} else if (strcmp(t, "2^63") == 0) {
		*v = h + 1;
	} else if (sscanf(t, "2^63+%llu", &k) == 1) {
		*v = h + 1 + k;
	} else {
		errno = 0;
		*v = strtoull(t, &end, 10);
		return errno == 0 && end != t && *end == '\0';
	}
	return true;
}

/*
 * The inverse of step_fmt(), for --replay: "h0.o1 lock posix f0 R [1, EOF]
 * wait#7", optionally after a step number.  true when parsed.
 */
static bool step_parse(const char *line, struct step *st)
{
	char op[16], sp[16], ty[8], a[24], b[24], w[24];
	unsigned host, owner, res;
	unsigned long long id;
	int n = 0;

	memset(st, 0, sizeof(*st));
	while (*line == ' ' || *line == '\t' || (*line >= '0' && *line <= '9'))
		line++;
	if (sscanf(line, "h%u.o%u %15s %n", &host, &owner, op, &n) < 3)
		return false;
	st->host = (int)host;
	st->owner = owner;
	line += n;
	if (strcmp(op, "lock") == 0 || strcmp(op, "getlk") == 0) {
		st->op = op[0] == 'l' ? OP_LOCK : OP_GETLK;
		if (sscanf(line, "%15s f%u %7s [%23[^,], %23[^]]] %23s", sp,
			   &res, ty, a, b, w) < 5)
			return false;
		if (st->op == OP_LOCK && sscanf(w, "wait#%llu", &id) == 1)
			st->wait_id = id;
		st->type = ty[0] == 'W' ? DL_WRLCK : DL_RDLCK;
	} else if (strcmp(op, "unlock") == 0) {
		st->op = OP_UNLOCK;
		if (sscanf(line, "%15s f%u [%23[^,], %23[^]]]", sp, &res, a,
			   b) != 4)
			return false;
	} else if (strcmp(op, "close") == 0) {
		st->op = OP_CLOSE;
		return sscanf(line, "f%u", &res) == 1 &&
		       (st->res = (int)res, true);
	} else if (strcmp(op, "exit") == 0) {
		st->op = OP_EXIT;
		return true;
	} else if (strcmp(op, "cancel") == 0) {
		st->op = OP_CANCEL;
		if (sscanf(line, "wait#%llu", &id) != 1)
			return false;
		st->wait_id = id;
		return true;
	} else {
		return false;
	}
	st->res = (int)res;
	st->space = strcmp(sp, "flock") == 0 ? DL_SPACE_FLOCK : DL_SPACE_POSIX;
	return parse_off(a, &st->start) && parse_off(b, &st->end) &&
	       st->start <= st->end;
}

/* ------------------------------------------------------------ events */

enum ev_kind { EV_GRANTED, EV_FAILED, EV_LOST };

struct event {
	enum ev_kind kind;
	int host;
	uint64_t wait_id;
	int err;
	enum dl_space space;
	uint64_t owner;
	char res[32];
};

/* ev_mutex guards every field of events; callbacks only append */
static pthread_mutex_t ev_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cond;
static struct {
	struct event *v;
	size_t n, cap;
} events;

static void ev_push(const struct event *e)
{
	pthread_mutex_lock(&ev_mutex);
	if (events.n == events.cap) {
		size_t cap = events.cap ? 2 * events.cap : 256;
		void *p = realloc(events.v, cap * sizeof(*events.v));

		if (!p) {
			pthread_mutex_unlock(&ev_mutex);
			fprintf(stderr, "model: out of memory in a callback\n");
			abort();
		}
		events.v = p;
		events.cap = cap;
	}
	events.v[events.n++] = *e;
	pthread_cond_broadcast(&ev_cond);
	pthread_mutex_unlock(&ev_mutex);
}

struct host {
	int idx;
	struct dl_backend *be;
	struct dl_lease lease;
	char id[16];
};

static void cb_granted(void *ctx, uint64_t wait_id, const struct dl_grant *g)
{
	const struct host *h = ctx;

	ev_push(&(struct event){
		.kind = EV_GRANTED, .host = h->idx, .wait_id = wait_id });
}

static void cb_failed(void *ctx, uint64_t wait_id, int err)
{
	const struct host *h = ctx;

	ev_push(&(struct event){ .kind = EV_FAILED,
				 .host = h->idx,
				 .wait_id = wait_id,
				 .err = err });
}

static void cb_lost(void *ctx, const char *resource, enum dl_space space,
		    uint64_t owner, int err)
{
	const struct host *h = ctx;
	struct event e = { .kind = EV_LOST,
			   .host = h->idx,
			   .err = err,
			   .space = space,
			   .owner = owner };

	snprintf(e.res, sizeof(e.res), "%s", resource ? resource : "?");
	ev_push(&e);
}

/* ------------------------------------------------------------- stats */

/* what a run exercised, printed with PASS (so a weak run shows) */
static struct {
	unsigned long lock[3]; /* granted, -EAGAIN, queued */
	unsigned long conversions, unlocks, getlk, getlk_conflict, closes,
		exits, cancels, grants, second_pass, jumped, edge_ranges,
		tables;
	unsigned long cache_local, cache_revocations; /* --cache */
} stats;

/* -------------------------------------------------------------- runs */

/* one run: fresh namespace, fresh backends, the model */
struct run {
	struct host hosts[MAX_HOSTS];
	int nbe; /* backend instances: 1 for local */
	struct m_model m;
	size_t ev_seen; /* events already matched */
	char msg[MSG_MAX];
	size_t msg_len;
	/* --cache: a lock the model grants at once that the cache queued
	 * first (to take the file back from another host): its grant comes
	 * through the callback, 0 if none */
	uint64_t late_id;
};

static const char *res_name(int r)
{
	static const char *names[M_MAX_RES] = { "model/f0", "model/dir/f1",
						"model/f2", "model/f3" };

	return names[r];
}

static uint64_t key_of(int host, uint32_t owner)
{
	return (uint64_t)host << 32 | owner;
}

static struct host *host_for(struct run *r, int host)
{
	return &r->hosts[opt.kind == BE_LOCAL ? 0 : host];
}

/* the owner id the backend sees: local: the key (hosts are namespaces) */
static uint64_t be_owner(int host, uint32_t owner)
{
	return opt.kind == BE_LOCAL ? key_of(host, owner) : owner;
}

static void say(struct run *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* append to the mismatch report */
static void say(struct run *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->msg_len >= sizeof(r->msg) - 1)
		return;
	va_start(ap, fmt);
	n = vsnprintf(r->msg + r->msg_len, sizeof(r->msg) - r->msg_len, fmt,
		      ap);
	va_end(ap);
	if (n > 0)
		r->msg_len += (size_t)n;
	if (r->msg_len >= sizeof(r->msg))
		r->msg_len = sizeof(r->msg) - 1;
}

static unsigned run_counter;

static int run_open(struct run *r)
{
	char uri[512], err[256];
	struct dl_backend_cb cb = { .granted = cb_granted,
				    .failed = cb_failed,
				    .lost = cb_lost };
	unsigned id = ++run_counter;

	memset(r, 0, sizeof(*r));
	m_init(&r->m, opt.policy >= 0	  ? (enum m_policy)opt.policy
		      : opt.kind == BE_ZK ? M_POLICY_FIFO
					  : M_POLICY_LINUX);
	r->m.single_pass = opt.single_pass;
	r->m.noop_release_settles = opt.kind == BE_REDIS;
	pthread_mutex_lock(&ev_mutex);
	events.n = 0;
	pthread_mutex_unlock(&ev_mutex);

	switch (opt.kind) {
	case BE_LOCAL:
		snprintf(uri, sizeof(uri), "local:");
		break;
	case BE_REDIS:
		snprintf(uri, sizeof(uri), "redis://%s/model-%d-%u", opt.server,
			 (int)getpid(), id);
		break;
	case BE_ZK:
		snprintf(uri, sizeof(uri),
			 "zk://%s/dlmodel-%d-%u?session_timeout_ms=10000",
			 opt.server, (int)getpid(), id);
		break;
	case BE_PG: /* --server ROLE@HOST:PORT/DB: a schema per run */
		snprintf(uri, sizeof(uri),
			 "postgresql://%s?schema=m%d_%u&ttl_ms=10000",
			 opt.server, (int)getpid(), id);
		break;
	}
	r->nbe = opt.kind == BE_LOCAL ? 1 : opt.hosts;
	for (int i = 0; i < r->nbe; i++) {
		struct host *h = &r->hosts[i];
		struct dl_backend_conf conf = {
			.uri = uri,
			.lease = &h->lease,
			.cache = !opt.cache	      ? DL_CACHE_NONE
				 : opt.mixed && i % 2 ? DL_CACHE_AWARE
						      : DL_CACHE_ON,
			/* short: rights go and come
						 * back during a run */
			.cache_idle_ms = 50,
			.cache_nocache_ms = 1
		};
		int ret;

		h->idx = i;
		atomic_init(&h->lease.gen, 0);
		atomic_init(&h->lease.until_ms, INT64_MAX);
		snprintf(h->id, sizeof(h->id), "h%d", i);
		conf.host_id = h->id;
		/* unique per instance: the owner is host + incarnation */
		conf.incarnation = (uint64_t)getpid() << 24 |
				   (uint64_t)id << 4 | (uint64_t)i;
		cb.ctx = h;
		ret = dl_backend_open(&conf, &cb, &h->be, err, sizeof(err));
		if (ret < 0) {
			fprintf(stderr, "model: cannot open %s as %s: %s\n",
				uri, h->id, err);
			for (int j = 0; j < i; j++)
				dl_backend_close(r->hosts[j].be);
			m_free(&r->m);
			return ret;
		}
	}
	return 0;
}

/* --cache: add a counter of the cache's status line to @sum */
static void cache_count(const char *status, const char *key, unsigned long *sum)
{
	const char *p = strstr(status, key);

	if (p)
		*sum += strtoul(p + strlen(key), NULL, 10);
}

static void run_close(struct run *r)
{
	for (int i = 0; i < r->nbe; i++) {
		char st[1024];

		if (opt.cache &&
		    dl_backend_status(r->hosts[i].be, st, sizeof(st)) == 0) {
			cache_count(st, " local_grants=", &stats.cache_local);
			cache_count(st,
				    " revocations=", &stats.cache_revocations);
		}
		dl_backend_close(r->hosts[i].be);
	}
	stats.jumped += r->m.njumped;
	m_free(&r->m);
}

static int64_t mono_ms(void)
{
	return dl_mono_ms();
}

/*
 * Match the callbacks against the grants the model made, waiting at most
 * opt.grant_ms for the missing ones.  0, or 1 with the report filled.
 */
static int settle(struct run *r, const struct m_grant *exp, size_t nexp,
		  int64_t t0)
{
	int64_t deadline = mono_ms() + opt.grant_ms;
	bool seen[64] = { false };

	/* late-grant: the re-check may come after a renewal period */
	for (size_t i = 0; i < nexp && opt.late_grant; i++)
		if (exp[i].second_pass)
			deadline = mono_ms() + LATE_GRANT_MS;
	size_t nseen = 0;
	int ret = 0;

	if (nexp > 64)
		nexp = 64; /* never happens: at most owners x hosts waits */
	pthread_mutex_lock(&ev_mutex);
	for (;;) {
		for (; r->ev_seen < events.n && !ret; r->ev_seen++) {
			const struct event *e = &events.v[r->ev_seen];
			size_t i;

			if (e->kind == EV_FAILED) {
				say(r,
				    "host h%d: wait#%" PRIu64 " failed: %s "
				    "(no failure is expected)\n",
				    e->host, e->wait_id, strerror(-e->err));
				ret = 1;
				continue;
			}
			if (e->kind == EV_LOST) {
				say(r,
				    "host h%d: lost %s lock of owner %" PRIu64
				    " on %s: %s (no loss is expected)\n",
				    e->host, space_name(e->space), e->owner,
				    e->res, strerror(-e->err));
				ret = 1;
				continue;
			}
			for (i = 0; i < nexp; i++)
				if (!seen[i] && exp[i].wait_id == e->wait_id)
					break;
			if (i == nexp) {
				say(r,
				    "host h%d: granted wait#%" PRIu64 ", which "
				    "the "
				    "model "
				    "%s\n",
				    e->host, e->wait_id,
				    m_waiting(&r->m, e->wait_id)
					    ? "says still waits"
					    : "does not have (granted before, "
					      "cancelled or never queued)");
				ret = 1;
				continue;
			}
			seen[i] = true;
			nseen++;
			if (mono_ms() - t0 > opt.slow_ms &&
			    !(exp[i].second_pass && opt.late_grant)) {
				say(r,
				    "wait#%" PRIu64 " was granted only after "
				    "%" PRId64 " ms (a grant "
				    "is due at "
				    "once; "
				    "--slow-ms %d)%s\n",
				    e->wait_id, mono_ms() - t0, opt.slow_ms,
				    exp[i].second_pass ? ": a second pass over "
							 "the "
							 "waiters grants it"
						       : "");
				ret = 1;
			}
		}
		if (ret || nseen == nexp)
			break;
		{
			int64_t now = mono_ms();
			struct timespec ts;

			if (now >= deadline)
				break;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			ts.tv_sec += (deadline - now) / 1000;
			ts.tv_nsec += (deadline - now) % 1000 * 1000000;
			if (ts.tv_nsec >= 1000000000) {
				ts.tv_sec++;
				ts.tv_nsec -= 1000000000;
			}
			pthread_cond_timedwait(&ev_cond, &ev_mutex, &ts);
		}
	}
	pthread_mutex_unlock(&ev_mutex);
	if (!ret && nseen < nexp) {
		for (size_t i = 0; i < nexp; i++)
			if (!seen[i])
				say(r,
				    "wait#%" PRIu64 ": the model granted it%s, "
				    "no grant arrived within %d ms\n",
				    exp[i].wait_id,
				    exp[i].second_pass ? " (in a second pass "
							 "over the "
							 "waiters)"
						       : "",
				    opt.grant_ms);
		ret = 1;
	}
	return ret;
}

/* ------------------------------------------------------ lock tables */

struct entry {
	enum dl_space space;
	uint64_t key;
	enum dl_lock_type type;
	uint64_t start, end;
	bool waiting;
};

struct table {
	struct entry *v;
	size_t n, cap;
	bool bad; /* an entry we cannot map (host id, mine flag) */
	char why[256];
	int lister;
	bool mine_only; /* --cache: each host lists its own locks */
};

static void table_push(struct table *t, const struct entry *e)
{
	t->v = grow(t->v, &t->cap, t->n, sizeof(*t->v));
	t->v[t->n++] = *e;
}

static int list_cb(const struct dl_lock_info *info, void *arg)
{
	struct table *t = arg;
	struct entry e = { .space = info->space,
			   .type = info->type,
			   .start = info->start,
			   .end = info->end,
			   .waiting = info->waiting };
	int host;

	if (t->mine_only && !info->mine)
		return 0;
	if (opt.kind == BE_LOCAL) {
		e.key = info->owner;
	} else {
		if (sscanf(info->host, "h%d", &host) != 1 || host < 0 ||
		    host >= opt.hosts) {
			t->bad = true;
			snprintf(t->why, sizeof(t->why),
				 "an entry names host '%s'", info->host);
			return 0;
		}
		if (info->mine != (host == t->lister)) {
			t->bad = true;
			snprintf(t->why, sizeof(t->why),
				 "listed by h%d: an entry of h%d has mine=%d",
				 t->lister, host, info->mine);
		}
		e.key = key_of(host, (uint32_t)info->owner);
		if (info->owner > UINT32_MAX) {
			t->bad = true;
			snprintf(t->why, sizeof(t->why),
				 "an entry names owner %" PRIu64, info->owner);
		}
	}
	table_push(t, &e);
	return 0;
}

static int entry_cmp(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;

	if (x->space != y->space)
		return x->space < y->space ? -1 : 1;
	if (x->key != y->key)
		return x->key < y->key ? -1 : 1;
	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return (int)x->type - (int)y->type;
}

static bool entry_eq(const struct entry *x, const struct entry *y)
{
	return entry_cmp(x, y) == 0;
}

static void entry_say(struct run *r, const char *tag, const struct entry *e)
{
	char a[24], b[24];

	say(r, "    %s %s h%u.o%u %s [%s, %s]\n", tag, space_name(e->space),
	    (unsigned)(e->key >> 32), (unsigned)(e->key & 0xffffffffu),
	    type_name(e->type), fmt_off(e->start, a, sizeof(a)),
	    fmt_off(e->end, b, sizeof(b)));
}

/* holders (sorted) then waiters (arrival order) of @res by the model */
static void model_table(struct run *r, int res, struct table *t)
{
	for (int s = 0; s < 2; s++) {
		struct dl_range_set h = { 0 };

		m_holders(&r->m, res, (enum dl_space)s, &h);
		for (size_t i = 0; i < h.n; i++)
			table_push(t, &(struct entry){
					      .space = (enum dl_space)s,
					      .key = h.v[i].owner,
					      .type = h.v[i].type,
					      .start = h.v[i].start,
					      .end = h.v[i].end,
				      });
		range_set_free(&h);
	}
	for (size_t i = 0; i < r->m.n; i++) {
		const struct m_node *nd = &r->m.v[i];

		if (nd->granted || nd->res != res)
			continue;
		table_push(t, &(struct entry){ .space = nd->space,
					       .key = nd->key,
					       .type = nd->ranges.v[0].type,
					       .start = nd->ranges.v[0].start,
					       .end = nd->ranges.v[0].end,
					       .waiting = true });
	}
}

/* split @t into its holders, sorted, and its waiters, in order */
static size_t table_split(struct table *t)
{
	struct entry *tmp = malloc((t->n + 1) * sizeof(*tmp));
	size_t nh = 0, k = 0;

	if (!tmp) {
		fprintf(stderr, "model: out of memory\n");
		exit(2);
	}
	for (size_t i = 0; i < t->n; i++)
		if (!t->v[i].waiting)
			tmp[nh++] = t->v[i];
	k = nh;
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].waiting)
			tmp[k++] = t->v[i];
	qsort(tmp, nh, sizeof(*tmp), entry_cmp);
	if (t->n)
		memcpy(t->v, tmp, t->n * sizeof(*tmp));
	free(tmp);
	return nh;
}

/* compare the whole lock table; 0 equal, 1 with the report filled;
 * @dump: report the tables even when equal */
static int compare_tables(struct run *r, int lister, bool dump)
{
	int ret = 0;

	for (int res = 0; res < opt.res; res++) {
		struct table got = { .lister = lister }, want = { 0 };
		size_t gh, wh;
		bool same;
		int rc;

		/* --cache: a file cached by a host is listed by that host
		 * only: the table is the union of each host's own locks */
		got.mine_only = opt.cache;
		rc = 0;
		for (int h = 0; h < r->nbe && rc >= 0; h++) {
			if (!opt.cache && h != lister)
				continue;
			got.lister = h;
			rc = dl_backend_list(r->hosts[h].be, res_name(res),
					     list_cb, &got);
		}
		got.lister = lister;
		if (rc < 0) {
			say(r, "list %s from h%d: %s\n", res_name(res), lister,
			    strerror(-rc));
			free(got.v);
			return 1;
		}
		model_table(r, res, &want);
		stats.tables++;
		gh = table_split(&got);
		wh = table_split(&want);
		/* --cache: a union, its waiters are not in one order */
		if (opt.cache && got.n > gh)
			qsort(got.v + gh, got.n - gh, sizeof(*got.v),
			      entry_cmp);
		if (opt.cache && want.n > wh)
			qsort(want.v + wh, want.n - wh, sizeof(*want.v),
			      entry_cmp);
		same = !got.bad && got.n == want.n && gh == wh;
		for (size_t i = 0; same && i < got.n; i++)
			same = entry_eq(&got.v[i], &want.v[i]) &&
			       got.v[i].waiting == want.v[i].waiting;
		if (!same || dump) {
			say(r, "lock table of %s %s (listed by h%d)%s%s\n",
			    res_name(res), same ? "after it" : "differs",
			    lister, got.bad ? ": " : "",
			    got.bad ? got.why : "");
			say(r, "  backend:\n");
			for (size_t i = 0; i < got.n; i++)
				entry_say(r, i < gh ? "held" : "wait",
					  &got.v[i]);
			say(r, "  model:\n");
			for (size_t i = 0; i < want.n; i++)
				entry_say(r, i < wh ? "held" : "wait",
					  &want.v[i]);
			ret = !same;
		}
		free(got.v);
		free(want.v);
		if (ret)
			break;
	}
	return ret;
}

/* ------------------------------------------------------- generation */

static uint64_t pick_small(uint64_t *rng)
{
	return rng_below(rng, 9);
}

static uint64_t pick_high(uint64_t *rng)
{
	static const uint64_t full[] = {
		(uint64_t)INT64_MAX - 2, (uint64_t)INT64_MAX - 1,
		(uint64_t)INT64_MAX,	 (uint64_t)INT64_MAX + 1,
		DL_RANGE_EOF - 1,	 DL_RANGE_EOF,
	};
	static const uint64_t daemon[] = {
		(uint64_t)INT64_MAX - 2,
		(uint64_t)INT64_MAX - 1,
		DL_RANGE_EOF,
	};

	if (opt.full_edges)
		return full[rng_below(rng, sizeof(full) / sizeof(full[0]))];
	return daemon[rng_below(rng, sizeof(daemon) / sizeof(daemon[0]))];
}

/* a POSIX range: small offsets, to EOF, and the edges near 2^63 */
static void pick_range(uint64_t *rng, uint64_t *s, uint64_t *e)
{
	unsigned k = rng_below(rng, 100);
	uint64_t a, b;

	if (k < 45) {
		a = pick_small(rng);
		b = pick_small(rng);
	} else if (k < 60) {
		a = pick_small(rng);
		b = DL_RANGE_EOF;
	} else if (k < 68) {
		a = 0;
		b = DL_RANGE_EOF;
	} else if (k < 85) {
		a = pick_high(rng);
		b = pick_high(rng);
	} else {
		a = pick_small(rng);
		b = pick_high(rng);
	}
	if (!opt.full_edges && a == DL_RANGE_EOF)
		a = (uint64_t)INT64_MAX; /* the daemon's largest start */
	*s = a < b ? a : b;
	*e = a < b ? b : a;
}

/* a random lock of @key held in the model, or false */
static bool pick_held(struct run *r, uint64_t *rng, uint64_t key,
		      struct step *st)
{
	struct dl_range_lock cand[64];
	int cres[64], cspace[64];
	size_t n = 0;

	for (int res = 0; res < opt.res; res++)
		for (int s = 0; s < 2; s++) {
			struct dl_range_set h = { 0 };

			m_holders(&r->m, res, (enum dl_space)s, &h);
			for (size_t i = 0; i < h.n && n < 64; i++) {
				if (h.v[i].owner != key)
					continue;
				cand[n] = h.v[i];
				cres[n] = res;
				cspace[n++] = s;
			}
			range_set_free(&h);
		}
	if (!n)
		return false;
	n = rng_below(rng, (unsigned)n);
	st->res = cres[n];
	st->space = (enum dl_space)cspace[n];
	st->start = cand[n].start;
	st->end = cand[n].end;
	st->type = cand[n].type;
	return true;
}

/* a random pending wait: its id, and its owner in @st; or 0 */
static uint64_t pick_wait(struct run *r, uint64_t *rng, struct step *st)
{
	size_t n = 0, k;

	for (size_t i = 0; i < r->m.n; i++)
		n += !r->m.v[i].granted;
	if (!n)
		return 0;
	k = rng_below(rng, (unsigned)n);
	for (size_t i = 0; i < r->m.n; i++) {
		const struct m_node *nd = &r->m.v[i];

		if (nd->granted || k-- != 0)
			continue;
		st->host = (int)(nd->key >> 32);
		st->owner = (uint32_t)nd->key;
		return nd->wait_id;
	}
	return 0;
}

static uint64_t next_wait_id;

static void gen_step(struct run *r, uint64_t *rng, struct step *st)
{
	unsigned k;
	uint64_t key;
	bool waits;

	memset(st, 0, sizeof(*st));
	st->host = (int)rng_below(rng, (unsigned)opt.hosts);
	st->owner = 1 + rng_below(rng, (unsigned)opt.owners);
	st->res = (int)rng_below(rng, (unsigned)opt.res);
	st->space = rng_below(rng, 100) < 35 ? DL_SPACE_FLOCK : DL_SPACE_POSIX;
	st->type = rng_below(rng, 2) ? DL_WRLCK : DL_RDLCK;
	if (st->space == DL_SPACE_FLOCK) {
		st->start = 0;
		st->end = DL_RANGE_EOF;
	} else {
		pick_range(rng, &st->start, &st->end);
	}
	key = key_of(st->host, st->owner);
	waits = m_owner_waits(&r->m, key);
	k = rng_below(rng, 100);
	/*
	 * An owner blocked in a wait unlocks, closes, exits, cancels - or,
	 * unless --no-busy-owners, takes a POSIX lock without waiting (another
	 * thread of the process, as Linux allows: the requests are
	 * independent).
	 */
	if (waits && k < 55) {
		if (opt.busy_owners && rng_below(rng, 100) < 30) {
			st->op = OP_LOCK;
			if (st->space == DL_SPACE_FLOCK) {
				st->space = DL_SPACE_POSIX;
				pick_range(rng, &st->start, &st->end);
			}
			return;
		}
		k = 55 + rng_below(rng, 45);
	}
	if (k < 28) {
		st->op = OP_LOCK;
	} else if (k < 42) {
		st->op = OP_LOCK;
		st->wait_id = ++next_wait_id;
	} else if (k < 55) {
		st->op = OP_LOCK;
		if (pick_held(r, rng, key, st)) {
			st->conversion = true;
			st->type = st->type == DL_WRLCK ? DL_RDLCK : DL_WRLCK;
		}
		if (rng_below(rng, 100) < 40)
			st->wait_id = ++next_wait_id;
	} else if (k < 68) {
		st->op = OP_UNLOCK;
		if (rng_below(rng, 2))
			pick_held(r, rng, key, st);
		if (st->space == DL_SPACE_FLOCK) {
			st->start = 0;
			st->end = DL_RANGE_EOF;
		}
	} else if (k < 80) {
		st->op = OP_GETLK;
	} else if (k < 87) {
		st->op = OP_CLOSE;
	} else if (k < 91) {
		st->op = OP_EXIT;
	} else {
		st->op = OP_CANCEL;
		st->wait_id = pick_wait(r, rng, st);
		if (!st->wait_id)
			st->op = OP_GETLK;
	}
}

/* ------------------------------------------------------------ steps */

static const char *err_name(int e)
{
	static char buf[32];

	switch (e) {
	case 0:
		return "0";
	case -EAGAIN:
		return "-EAGAIN";
	case -EINPROGRESS:
		return "-EINPROGRESS";
	case -ENOENT:
		return "-ENOENT";
	case -ENOLCK:
		return "-ENOLCK";
	case -EINVAL:
		return "-EINVAL";
	case 1:
		return "1";
	default:
		snprintf(buf, sizeof(buf), "%d", e);
		return buf;
	}
}

/* is @st a no-op in the current state (a shrunk sequence left it)? */
static bool step_moot(struct run *r, const struct step *st)
{
	if (st->op == OP_LOCK)
		return m_owner_waits(&r->m, key_of(st->host, st->owner)) &&
		       (!opt.busy_owners || st->wait_id ||
			st->space == DL_SPACE_FLOCK);
	if (st->op == OP_CANCEL)
		return !m_waiting(&r->m, st->wait_id);
	return false;
}

static int expect_eq(struct run *r, const char *what, int got, int want)
{
	if (got == want)
		return 0;
	say(r, "%s returned %s, the model says %s\n", what, err_name(got),
	    err_name(want));
	return 1;
}

static int do_getlk(struct run *r, const struct step *st)
{
	struct dl_lock_req req = { .resource = res_name(st->res),
				   .space = st->space,
				   .type = st->type,
				   .start = st->start,
				   .end = st->end,
				   .owner = be_owner(st->host, st->owner),
				   .pid = 1000 + st->owner };
	struct dl_lock_info c = { 0 };
	uint64_t key = key_of(st->host, st->owner);
	bool want = m_getlk(&r->m, key, st->res, st->space, st->type, st->start,
			    st->end);
	struct dl_range_set h = { 0 };
	struct dl_range_lock me = { .start = st->start,
				    .end = st->end,
				    .owner = key,
				    .type = st->type };
	uint64_t ckey;
	int host, got;
	bool real = false;

	got = dl_backend_getlk(host_for(r, st->host)->be, &req, &c);
	if (got < 0 || got != (int)want)
		return expect_eq(r, "getlk", got, want);
	if (!got)
		return 0;
	if (opt.kind == BE_LOCAL) {
		ckey = c.owner;
	} else if (sscanf(c.host, "h%d", &host) == 1) {
		ckey = key_of(host, (uint32_t)c.owner);
	} else {
		say(r, "getlk reports host '%s'\n", c.host);
		return 1;
	}
	m_holders(&r->m, st->res, st->space, &h);
	for (size_t i = 0; i < h.n && !real; i++)
		real = h.v[i].owner == ckey && h.v[i].type == c.type &&
		       h.v[i].start == c.start && h.v[i].end == c.end &&
		       c.space == st->space && range_conflicts(&h.v[i], &me);
	range_set_free(&h);
	if (!real) {
		struct entry e = {
			c.space, ckey, c.type, c.start, c.end, false
		};

		say(r, "getlk reports a conflict the model does not hold:\n");
		entry_say(r, "held", &e);
	}
	return !real;
}

static int quiet_cb(const struct dl_lock_info *info, void *arg)
{
	(void)info;
	(void)arg;
	return 0;
}

/*
 * --cache: let what @st set off settle before the next step: a request
 * that asked another host for a file back is in the store once that host
 * gave it back (a listing of a file waits for its transitions, on each
 * host).  The step's host first: its request is what moves.
 */
static void cache_quiet(struct run *r, const struct step *st)
{
	for (int res = 0; res < opt.res; res++) {
		if (st->op != OP_EXIT && res != st->res)
			continue;
		dl_backend_list(r->hosts[st->host].be, res_name(res), quiet_cb,
				NULL);
		for (int h = 0; h < r->nbe; h++)
			dl_backend_list(r->hosts[h].be, res_name(res), quiet_cb,
					NULL);
	}
}

/* apply @st to the backend and the model; 0 equal, 1 mismatch */
static int do_step(struct run *r, const struct step *st)
{
	uint64_t key = key_of(st->host, st->owner);
	struct host *h = host_for(r, st->host);
	struct dl_lock_req req = { .resource = res_name(st->res),
				   .space = st->space,
				   .type = st->type,
				   .start = st->start,
				   .end = st->end,
				   .owner = be_owner(st->host, st->owner),
				   .pid = 1000 + st->owner,
				   .wait_id = st->wait_id };
	struct dl_grant g;
	int want, got, bad = 0;

	switch (st->op) {
	case OP_LOCK:
		want = m_lock(&r->m, key, st->res, st->space, st->type,
			      st->start, st->end, st->wait_id);
		got = dl_backend_lock(h->be, &req, &g);
		if (opt.cache && want == 0 && got == -EINPROGRESS &&
		    st->wait_id) {
			r->late_id = st->wait_id;
			got = 0;
		}
		stats.lock[want == 0 ? 0 : want == -EAGAIN ? 1 : 2]++;
		stats.conversions += st->conversion;
		stats.edge_ranges += st->end > (uint64_t)INT64_MAX - 3 &&
				     st->end != DL_RANGE_EOF;
		return expect_eq(r, "lock", got, want);
	case OP_UNLOCK:
		req.type = DL_UNLCK;
		req.wait_id = 0;
		stats.unlocks++;
		m_unlock(&r->m, key, st->res, st->space, st->start, st->end);
		return expect_eq(r, "unlock", dl_backend_unlock(h->be, &req),
				 0);
	case OP_GETLK:
		stats.getlk++;
		stats.getlk_conflict += m_getlk(&r->m, key, st->res, st->space,
						st->type, st->start, st->end);
		return do_getlk(r, st);
	case OP_CLOSE:
		stats.closes++;
		m_release(&r->m, key, st->res, DL_SPACE_POSIX);
		return expect_eq(
			r, "release_owner",
			dl_backend_release_owner(
				h->be, res_name(st->res), DL_SPACE_POSIX,
				be_owner(st->host, st->owner), DL_TOKEN_ALL),
			0);
	case OP_EXIT:
		stats.exits++;
		/* the kernel ends the process's waits, then closes its files */
		for (size_t i = 0; i < r->m.n && !bad; i++) {
			const struct m_node *nd = &r->m.v[i];
			uint64_t id = nd->wait_id;

			if (nd->granted || nd->key != key)
				continue;
			m_cancel(&r->m, id);
			i = (size_t)-1; /* the nodes moved: rescan */
			bad = expect_eq(r, "cancel (exit)",
					dl_backend_cancel(h->be, id), 0);
		}
		for (int res = 0; res < opt.res && !bad; res++)
			for (int s = 0; s < 2 && !bad; s++) {
				m_release(&r->m, key, res, (enum dl_space)s);
				bad = expect_eq(
					r, "release_owner (exit)",
					dl_backend_release_owner(
						h->be, res_name(res),
						(enum dl_space)s,
						be_owner(st->host, st->owner),
						DL_TOKEN_ALL),
					0);
			}
		return bad;
	case OP_CANCEL:
		stats.cancels++;
		want = m_cancel(&r->m, st->wait_id);
		return expect_eq(r, "cancel",
				 dl_backend_cancel(h->be, st->wait_id), want);
	}
	return 0;
}

/* --------------------------------------------------------- executing */

struct failure {
	size_t step; /* index of the failing step; steps.n: at the end */
	char msg[MSG_MAX];
};

static double now_s(void)
{
	return (double)mono_ms() / 1000.0;
}

/*
 * Run @sl (generating @gen_steps more into it from @seed when > 0) in a
 * fresh namespace.  Checks the table every @every steps and at the end.
 * Returns 0 equal, 1 mismatch (*f filled), -1 setup error.
 */
static int run_steps(struct steps *sl, size_t gen_steps, uint64_t seed,
		     unsigned every, bool log_steps, struct failure *f)
{
	struct run *r = calloc(1, sizeof(*r));
	uint64_t rng = seed;
	size_t total = gen_steps ? gen_steps : sl->n;
	int ret = 0;

	if (!r || run_open(r) < 0) {
		free(r);
		return -1;
	}
	next_wait_id = 0;
	size_t slots = (size_t)(opt.hosts * opt.owners);

	for (size_t i = 0; i < total && !ret; i++) {
		const struct m_grant *exp;
		struct m_grant *late = NULL;
		size_t nexp;
		struct step st;
		int64_t t0;
		char line[256];

		if (gen_steps && opt.cache &&
		    i % CACHE_ROUND >= CACHE_ROUND - slots) {
			/* --cache: the end of a round, every owner exits,
			 * so that the next round starts on free files */
			size_t j = i % CACHE_ROUND - (CACHE_ROUND - slots);

			memset(&st, 0, sizeof(st));
			st.op = OP_EXIT;
			st.host = (int)(j / (size_t)opt.owners);
			st.owner = 1 + (uint32_t)(j % (size_t)opt.owners);
			steps_push(sl, &st);
		} else if (gen_steps) {
			gen_step(r, &rng, &st);
			steps_push(sl, &st);
		} else {
			st = sl->v[i];
		}
		if (step_moot(r, &st))
			continue;
		if (log_steps) {
			step_fmt(&st, line, sizeof(line));
			fprintf(stderr, "  #%zu %s\n", i, line);
		}
		/* --cache: a pause longer than cache_idle_ms between rounds,
		 * so that the rights are given back, and taken again */
		if (opt.cache && i % CACHE_ROUND == 0 && i)
			usleep(80 * 1000);
		t0 = mono_ms();
		r->late_id = 0;
		ret = do_step(r, &st);
		if (!ret && opt.cache)
			cache_quiet(r, &st);
		exp = m_take_grants(&r->m, &nexp);
		if (r->late_id) {
			struct m_grant *v = malloc((nexp + 1) * sizeof(*v));

			if (!v) {
				fprintf(stderr, "model: out of memory\n");
				exit(2);
			}
			if (nexp)
				memcpy(v, exp, nexp * sizeof(*v));
			v[nexp] = (struct m_grant){ .wait_id = r->late_id };
			exp = late = v;
			nexp++;
		}
		stats.grants += nexp;
		for (size_t k = 0; k < nexp; k++)
			stats.second_pass += exp[k].second_pass;
		if (!ret)
			ret = settle(r, exp, nexp, t0);
		if (!ret && every && (i + 1) % every == 0)
			ret = compare_tables(r, (int)(i / every) % r->nbe,
					     false);
		if (ret)
			f->step = i;
		free(late);
		late = NULL;
	}
	if (!ret) {
		/* late callbacks: a grant nobody should get */
		int q = opt.quiet_ms >= 0 ? opt.quiet_ms
					  : (opt.kind == BE_LOCAL ? 0 : 200);

		if (q)
			usleep((useconds_t)q * 1000);
		ret = settle(r, NULL, 0, mono_ms());
		for (int lister = 0; lister < r->nbe && !ret; lister++)
			ret = compare_tables(r, lister, false);
		if (ret)
			f->step = total;
	}
	if (ret && r->msg_len && !strstr(r->msg, "lock table of"))
		compare_tables(r, 0, true); /* for the report */
	for (int i = 0; ret && i < r->nbe; i++) {
		char st[256];

		if (dl_backend_status(r->hosts[i].be, st, sizeof(st)) == 0)
			say(r, "  status of h%d: %s\n", i, st);
	}
	if (ret)
		snprintf(f->msg, sizeof(f->msg), "%s", r->msg);
	if (ret && getenv("MODEL_HOLD_MS")) {
		/* a post-mortem look at the store while the hosts live */
		printf("model: holding the failed run for %s ms\n",
		       getenv("MODEL_HOLD_MS"));
		usleep((useconds_t)atoi(getenv("MODEL_HOLD_MS")) * 1000);
	}
	run_close(r);
	free(r);
	return ret;
}

static void print_steps(const struct steps *sl, size_t n)
{
	char line[256];

	for (size_t i = 0; i < n && i < sl->n; i++) {
		step_fmt(&sl->v[i], line, sizeof(line));
		printf("    %3zu  %s\n", i + 1, line);
	}
}

/* a copy of @sl without [from, to) */
static void steps_without(const struct steps *sl, size_t from, size_t to,
			  struct steps *out)
{
	out->n = 0;
	for (size_t i = 0; i < sl->n; i++)
		if (i < from || i >= to)
			steps_push(out, &sl->v[i]);
}

/*
 * Shrink the failing sequence @sl: first the shortest prefix (checking
 * the table after every step), then ddmin over the steps, within
 * opt.shrink_secs.  @sl holds the result.
 */
static void shrink(struct steps *sl, struct failure *f)
{
	double end = now_s() + opt.shrink_secs;
	struct steps cand = { 0 };
	struct failure cf;
	unsigned trials = 0;
	size_t n = 2;
	int ret;

	ret = run_steps(sl, 0, 0, 1, false, &cf);
	trials++;
	if (ret != 1) {
		printf("  replay of the failing prefix %s: the failure is "
		       "timing-dependent; reporting the prefix as is\n",
		       ret == 0 ? "passed" : "could not start");
		return;
	}
	*f = cf;
	if (cf.step < sl->n)
		sl->n = cf.step + 1;
	printf("  shortest failing prefix: %zu steps\n", sl->n);
	while (sl->n >= 2 && now_s() < end) {
		size_t chunk = (sl->n + n - 1) / n;
		bool reduced = false;

		for (size_t i = 0; i < n && now_s() < end; i++) {
			size_t from = i * chunk;
			size_t to = from + chunk < sl->n ? from + chunk : sl->n;

			if (from >= sl->n)
				break;
			steps_without(sl, from, to, &cand);
			ret = run_steps(&cand, 0, 0, 1, false, &cf);
			trials++;
			if (ret != 1)
				continue;
			if (cf.step < cand.n)
				cand.n = cf.step + 1;
			sl->n = 0;
			for (size_t k = 0; k < cand.n; k++)
				steps_push(sl, &cand.v[k]);
			*f = cf;
			n = n > 2 ? n - 1 : 2;
			reduced = true;
			break;
		}
		if (!reduced) {
			if (n >= sl->n)
				break;
			n = 2 * n < sl->n ? 2 * n : sl->n;
		}
	}
	printf("  shrunk to %zu steps in %u replays%s\n", sl->n, trials,
	       now_s() >= end ? " (time limit: maybe not minimal)" : "");
	free(cand.v);
}

/* -------------------------------------------------------------- main */

static void usage(void)
{
	fprintf(stderr, "usage: model [--backend local|redis|zk|pg] [--server "
			"HOST:PORT | ROLE@HOST:PORT/DB]\n"
			"             [--hosts 2|3] [--owners N] [--res N] "
			"[--steps N] [--seed N]\n"
			"             [--check-every K] [--grant-ms MS] "
			"[--quiet-ms MS]\n"
			"             [--no-shrink] [--shrink-secs S] "
			"[--edges daemon|full]\n"
			"             [--known ID[,ID]] [--replay FILE] "
			"[--verbose] [--cache|--mixed]\n"
			"             [--policy linux|fifo]  (force the "
			"model's "
			"queueing rule:\n"
			"             checks that the test tells them apart)\n"
			"known issues:\n");
	for (size_t i = 0; i < sizeof(KNOWN_ISSUES) / sizeof(KNOWN_ISSUES[0]);
	     i++)
		fprintf(stderr, "  %s (%s): %s\n", KNOWN_ISSUES[i].id,
			KNOWN_ISSUES[i].backends, KNOWN_ISSUES[i].what);
	exit(2);
}

/* --replay FILE: steps as printed by a failure, one a line */
static int read_steps(const char *path, struct steps *sl)
{
	FILE *fp = fopen(path, "r");
	char line[512];
	unsigned ln = 0;

	if (!fp) {
		fprintf(stderr, "model: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), fp)) {
		struct step st;
		char *p = line;

		ln++;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '#' || *p == '\n' || *p == '\0')
			continue;
		if (!step_parse(p, &st) || st.host >= opt.hosts ||
		    st.owner < 1 || st.owner > (uint32_t)opt.owners ||
		    st.res >= opt.res) {
			fprintf(stderr,
				"model: %s:%u: not a step (or outside "
				"--hosts/--owners/--res): %s",
				path, ln, line);
			fclose(fp);
			return -1;
		}
		steps_push(sl, &st);
	}
	fclose(fp);
	opt.steps = sl->n;
	return 0;
}

static int known_set(const char *list)
{
	char *copy = strdup(list), *save = NULL;

	if (!copy)
		return -1;
	for (char *t = strtok_r(copy, ",", &save); t;
	     t = strtok_r(NULL, ",", &save)) {
		if (strcmp(t, "single-pass") == 0) {
			opt.single_pass = true;
		} else if (strcmp(t, "late-grant") == 0) {
			opt.late_grant = true;
		} else {
			fprintf(stderr, "model: unknown issue '%s'\n", t);
			free(copy);
			return -1;
		}
		printf("KNOWN ISSUE applied on %s: %s\n", kind_name(opt.kind),
		       t);
	}
	free(copy);
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "backend", required_argument, NULL, 'b' },
		{ "server", required_argument, NULL, 'S' },
		{ "hosts", required_argument, NULL, 'H' },
		{ "owners", required_argument, NULL, 'o' },
		{ "res", required_argument, NULL, 'r' },
		{ "steps", required_argument, NULL, 'n' },
		{ "seed", required_argument, NULL, 's' },
		{ "check-every", required_argument, NULL, 'k' },
		{ "grant-ms", required_argument, NULL, 'g' },
		{ "slow-ms", required_argument, NULL, 'W' },
		{ "quiet-ms", required_argument, NULL, 'q' },
		{ "no-shrink", no_argument, NULL, 'N' },
		{ "shrink-secs", required_argument, NULL, 'T' },
		{ "edges", required_argument, NULL, 'e' },
		{ "known", required_argument, NULL, 'K' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "replay", required_argument, NULL, 'R' },
		{ "policy", required_argument, NULL, 'P' },
		{ "no-busy-owners", no_argument, NULL, 'B' },
		{ "cache", no_argument, NULL, 'C' },
		{ "mixed", no_argument, NULL, 'X' },
		{ NULL, 0, NULL, 0 },
	};
	const char *known = NULL, *replay = NULL;
	pthread_condattr_t ca;
	struct steps sl = { 0 };
	struct failure f = { 0 };
	double t0;
	int c, ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'b':
			if (strcmp(optarg, "local") == 0)
				opt.kind = BE_LOCAL;
			else if (strcmp(optarg, "redis") == 0)
				opt.kind = BE_REDIS;
			else if (strcmp(optarg, "zk") == 0)
				opt.kind = BE_ZK;
			else if (strcmp(optarg, "pg") == 0)
				opt.kind = BE_PG;
			else
				usage();
			break;
		case 'S':
			opt.server = optarg;
			break;
		case 'H':
			opt.hosts = atoi(optarg);
			break;
		case 'o':
			opt.owners = atoi(optarg);
			break;
		case 'r':
			opt.res = atoi(optarg);
			break;
		case 'n':
			opt.steps = strtoull(optarg, NULL, 10);
			break;
		case 's':
			opt.seed = strtoull(optarg, NULL, 0);
			break;
		case 'k':
			opt.check_every = (unsigned)atoi(optarg);
			break;
		case 'g':
			opt.grant_ms = atoi(optarg);
			break;
		case 'W':
			opt.slow_ms = atoi(optarg);
			break;
		case 'q':
			opt.quiet_ms = atoi(optarg);
			break;
		case 'N':
			opt.shrink = false;
			break;
		case 'T':
			opt.shrink_secs = atoi(optarg);
			break;
		case 'e':
			opt.full_edges = strcmp(optarg, "daemon") != 0;
			break;
		case 'K':
			known = optarg;
			break;
		case 'v':
			opt.verbose = true;
			break;
		case 'R':
			replay = optarg;
			break;
		case 'B':
			opt.busy_owners = false;
			break;
		case 'C':
			opt.cache = true;
			break;
		case 'X':
			opt.cache = opt.mixed = true;
			break;
		case 'P':
			opt.policy = strcmp(optarg, "fifo") == 0
					     ? M_POLICY_FIFO
					     : M_POLICY_LINUX;
			break;
		default:
			usage();
		}
	}
	if (optind != argc || opt.hosts < 1 || opt.hosts > MAX_HOSTS ||
	    opt.owners < 1 || opt.owners > MAX_OWNERS || opt.res < 1 ||
	    opt.res > M_MAX_RES || (opt.kind != BE_LOCAL && !opt.server))
		usage();
	if (known && known_set(known) < 0)
		return 2;
	/* ZooKeeper grants go through a watch and the worker thread,
	 * PostgreSQL's through a NOTIFY after a durable commit */
	if (opt.slow_ms < 0)
		opt.slow_ms = opt.kind == BE_ZK || opt.kind == BE_PG ? 2000
								     : 800;
	dl_log_init("model", DL_LOG_WARNING, false);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&ev_cond, &ca);
	pthread_condattr_destroy(&ca);

	if (replay && read_steps(replay, &sl) < 0)
		return 2;
	printf("model: backend=%s hosts=%d owners=%d files=%d steps=%zu "
	       "%s%" PRIu64 " edges=%s\n",
	       kind_name(opt.kind), opt.hosts, opt.owners, opt.res, opt.steps,
	       replay ? "(replayed) seed=" : "seed=", opt.seed,
	       opt.full_edges ? "full" : "daemon");
	t0 = now_s();
	ret = run_steps(&sl, replay ? 0 : opt.steps, opt.seed, opt.check_every,
			opt.verbose, &f);
	if (ret < 0) {
		free(sl.v);
		return 2;
	}
	if (ret == 0) {
		printf("model: PASS backend=%s hosts=%d seed=%" PRIu64 " steps="
		       "%zu in "
		       "%.1f "
		       "s\n",
		       kind_name(opt.kind), opt.hosts, opt.seed, opt.steps,
		       now_s() - t0);
		printf("  locks granted=%lu eagain=%lu queued=%lu "
		       "(conversions %lu, edge ends %lu); grants to waiters "
		       "%lu (second pass %lu, jumped %lu); unlocks %lu; getlk "
		       "%lu (conflict %lu); closes %lu; exits %lu; cancels "
		       "%lu; tables compared %lu\n",
		       stats.lock[0], stats.lock[1], stats.lock[2],
		       stats.conversions, stats.edge_ranges, stats.grants,
		       stats.second_pass, stats.jumped, stats.unlocks,
		       stats.getlk, stats.getlk_conflict, stats.closes,
		       stats.exits, stats.cancels, stats.tables);
		if (opt.cache)
			printf("  cache: %lu locks decided locally, %lu "
			       "revocations\n",
			       stats.cache_local, stats.cache_revocations);
		free(sl.v);
		return 0;
	}
	printf("model: FAIL backend=%s hosts=%d seed=%" PRIu64 " at step %zu "
	       "of %zu\n%s",
	       kind_name(opt.kind), opt.hosts, opt.seed, f.step + 1, opt.steps,
	       f.msg);
	printf("  reproduce: model --backend %s --hosts %d --owners %d "
	       "--res %d --seed %" PRIu64 " --steps %zu%s%s\n",
	       kind_name(opt.kind), opt.hosts, opt.owners, opt.res, opt.seed,
	       f.step + 1, opt.full_edges ? "" : " --edges daemon",
	       opt.kind == BE_LOCAL ? "" : " --server HOST:PORT");
	if (f.step < sl.n)
		sl.n = f.step + 1;
	if (opt.shrink) {
		shrink(&sl, &f);
		printf("model: shortest failing sequence (%zu steps, "
		       "seed %" PRIu64 "):\n",
		       sl.n, opt.seed);
		print_steps(&sl, sl.n);
		printf("  fails with:\n%s", f.msg);
	}
	free(sl.v);
	return 1;
}

/*
 * zk_version.c - the ZooKeeper backend's version and bump (optimistic
 * concurrency, backend.h), driven through backend.h against a real server
 * (zk_version.sh starts it).
 *
 * usage: zk_version HOST:PORT SERVER_PID
 *
 * Two backends ("hosts" a and b, each its own incarnation) share one fresh
 * chroot.  A resource never bumped reads 0/""/0; bumps count from 1 with
 * the bumping host's id and the server's time; both hosts bumping one
 * resource from two threads each end at exactly the sum, every bump with
 * a version of its own; awkward names (a newline, '%', '/', invalid
 * UTF-8, 255 bytes, the empty name) keep versions of their own; a break,
 * an unlock (which removes the resource's lock node), listings and a new
 * session (close and reopen) leave versions alone, and a separate
 * ZooKeeper handle sees each version node persistent, outside the lock
 * nodes.  Last, SERVER_PID (the test's own server) is killed and version
 * and bump must answer -ENOLCK, within a bound.  Every wait is bounded.
 * Prints "ok CASE" per case, or "FAIL CASE: why" and exits 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "backend/backend.h"
#include "backend/util/clock.h"

#define BOUND_MS   8000 /* connecting the test's own handle */
#define NTHREADS   2	/* bumping threads per host */
#define NBUMPS	   25	/* bumps per thread: N = 50 per host */
#define SKEW_MS	   2000 /* server clock vs ours: same machine */
#define NOLCK_MS   1500 /* session timeout of the host that loses it */
#define NOLCK_WAIT 4000 /* a call without a server answers within */

struct host {
	const char *name;
	struct dl_backend *be;
	struct dl_lease lease;
	pthread_mutex_t mutex;
	int nlost;
};

static const char *what = "setup";
static char root[64];
static zhandle_t *zh;

static void fail(const char *fmt, ...)
{
	va_list ap;

	printf("FAIL %s: ", what);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	_exit(1);
}

static void ok(void)
{
	printf("ok %s\n", what);
	fflush(stdout);
}

/* a name printable in a message */
static const char *shown(const char *res, char *buf, size_t len)
{
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)res;
	     *p && o + 5 < len; p++)
		o += (size_t)snprintf(
			buf + o, len - o,
			*p >= 0x20 && *p < 0x7f ? "%c" : "\\x%02x", *p);
	buf[o] = '\0';
	return buf;
}

/* ---- hosts ----------------------------------------------------------- */

static void on_granted(void *ctx, uint64_t id, const struct dl_grant *g)
{
	(void)ctx;
	(void)id;
	(void)g;
}

static void on_failed(void *ctx, uint64_t id, int err)
{
	(void)ctx;
	(void)id;
	(void)err;
}

static void on_lost(void *ctx, const char *res, enum dl_space space,
		    uint64_t owner, int err)
{
	struct host *h = ctx;

	(void)res;
	(void)space;
	(void)owner;
	(void)err;
	pthread_mutex_lock(&h->mutex);
	h->nlost++;
	pthread_mutex_unlock(&h->mutex);
}

static void host_open(struct host *h, const char *name, const char *hosts,
		      uint64_t incarnation, int timeout_ms)
{
	struct dl_backend_cb cb = { .ctx = h,
				    .granted = on_granted,
				    .failed = on_failed,
				    .lost = on_lost };
	struct dl_backend_conf conf = { 0 };
	char uri[512], err[256];

	h->name = name;
	h->nlost = 0;
	pthread_mutex_init(&h->mutex, NULL);
	atomic_init(&h->lease.gen, 0);
	atomic_init(&h->lease.until_ms, INT64_MAX);
	snprintf(uri, sizeof(uri), "zk://%s%s?session_timeout_ms=%d", hosts,
		 root, timeout_ms);
	conf.uri = uri;
	conf.host_id = name;
	conf.incarnation = incarnation;
	conf.lease = &h->lease;
	if (dl_backend_open(&conf, &cb, &h->be, err, sizeof(err)) < 0)
		fail("open %s: %s", name, err);
}

static void host_close(struct host *h)
{
	dl_backend_close(h->be);
	h->be = NULL;
	pthread_mutex_destroy(&h->mutex);
}

static struct dl_version get(struct host *h, const char *res)
{
	struct dl_version v;
	char buf[128];
	int ret;

	memset(&v, 0x5a, sizeof(v));
	ret = dl_backend_version(h->be, res, &v);
	if (ret != 0)
		fail("%s: version of %s: %s", h->name,
		     shown(res, buf, sizeof(buf)), strerror(-ret));
	return v;
}

static struct dl_version bump(struct host *h, const char *res)
{
	struct dl_version v;
	char buf[128];
	int ret;

	memset(&v, 0x5a, sizeof(v));
	ret = dl_backend_bump(h->be, res, &v);
	if (ret != 0)
		fail("%s: bump of %s: %s", h->name,
		     shown(res, buf, sizeof(buf)), strerror(-ret));
	return v;
}

/* @v is version @want, last bumped by @host within [lo, hi] (ms) */
static void expect(const char *who, const char *res, const struct dl_version *v,
		   uint64_t want, const char *host, int64_t lo, int64_t hi)
{
	char buf[128];

	if (v->version != want || strcmp(v->host, host) != 0 ||
	    v->changed_ms < lo || v->changed_ms > hi)
		fail("%s: %s is %" PRIu64 " by \"%.64s\" at %" PRId64 ", "
		     "expected"
		     " "
		     "%" PRIu64 " by \"%s\" in [%" PRId64 ", %" PRId64 "]",
		     who, shown(res, buf, sizeof(buf)), v->version, v->host,
		     v->changed_ms, want, host, lo, hi);
}

static void expect_none(struct host *h, const char *res)
{
	struct dl_version v = get(h, res);

	expect(h->name, res, &v, 0, "", 0, 0);
}

static struct dl_lock_req flock_req(const char *res, enum dl_lock_type type,
				    uint64_t owner)
{
	return (struct dl_lock_req){ .resource = res,
				     .space = DL_SPACE_FLOCK,
				     .type = type,
				     .start = 0,
				     .end = DL_RANGE_EOF,
				     .owner = owner,
				     .pid = 1 };
}

static int count_info(const struct dl_lock_info *info, void *arg)
{
	(void)info;
	(*(int *)arg)++;
	return 0;
}

/* the number of locks list() reports, of @res (NULL: everywhere) */
static int nlisted(struct host *h, const char *res)
{
	int n = 0, ret = dl_backend_list(h->be, res, count_info, &n);

	if (ret < 0)
		fail("%s: list: %s", h->name, strerror(-ret));
	return n;
}

/* ---- the test's own handle ------------------------------------------- */

static pthread_mutex_t conn_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t conn_cond = PTHREAD_COND_INITIALIZER;
static bool conn_up;

static void conn_watcher(zhandle_t *z, int type, int state, const char *path,
			 void *ctx)
{
	(void)z;
	(void)path;
	(void)ctx;
	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&conn_mutex);
	conn_up = state == ZOO_CONNECTED_STATE;
	pthread_cond_broadcast(&conn_cond);
	pthread_mutex_unlock(&conn_mutex);
}

static void zk_connect(const char *hosts)
{
	struct timespec ts;

	zh = zookeeper_init(hosts, conn_watcher, 10000, NULL, NULL, 0);
	if (!zh)
		fail("zookeeper_init %s: %s", hosts, strerror(errno));
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += BOUND_MS / 1000;
	pthread_mutex_lock(&conn_mutex);
	while (!conn_up &&
	       pthread_cond_timedwait(&conn_cond, &conn_mutex, &ts) == 0)
		;
	pthread_mutex_unlock(&conn_mutex);
	if (!conn_up)
		fail("no connection to %s within %d ms", hosts, BOUND_MS);
}

/* the children of @path: a count, and whether one is named @name */
static int children(const char *path, const char *name, bool *has)
{
	struct String_vector kids = { 0 };
	int rc = zoo_get_children(zh, path, 0, &kids), n;

	*has = false;
	if (rc == ZNONODE)
		return 0;
	if (rc != ZOK)
		fail("children of %s: %s", path, zerror(rc));
	for (int i = 0; i < kids.count; i++)
		*has = *has || strcmp(kids.data[i], name) == 0;
	n = kids.count;
	deallocate_String_vector(&kids);
	return n;
}

/* CHROOT/v/@enc is a persistent node of version @want */
static void expect_node(const char *enc, uint64_t want)
{
	char path[512];
	struct Stat st;
	bool has;
	int rc;

	snprintf(path, sizeof(path), "%s/v/%s", root, enc);
	rc = zoo_exists(zh, path, 0, &st);
	if (rc != ZOK)
		fail("exists %s: %s", path, zerror(rc));
	if (st.ephemeralOwner != 0)
		fail("%s is ephemeral", path);
	if ((uint64_t)st.version + 1 != want)
		fail("%s: stat.version %d, expected %" PRIu64, path, st.version,
		     want - 1);
	snprintf(path, sizeof(path), "%s/v", root);
	children(path, enc, &has);
	if (!has)
		fail("%s is not among the children of %s", enc, path);
}

/* ---- concurrent bumps ------------------------------------------------ */

struct bumper {
	pthread_t tid;
	struct host *h;
	const char *res;
	uint64_t got[NBUMPS];
	int err;
	char badhost[DL_HOST_MAX];
};

static void *bumper_main(void *arg)
{
	struct bumper *b = arg;

	for (int i = 0; i < NBUMPS; i++) {
		struct dl_version v;
		int ret = dl_backend_bump(b->h->be, b->res, &v);

		if (ret != 0) {
			b->err = ret;
			break;
		}
		if (strcmp(v.host, b->h->name) != 0)
			snprintf(b->badhost, sizeof(b->badhost), "%s", v.host);
		b->got[i] = v.version;
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static void concurrent(struct host *a, struct host *b, const char *res)
{
	static struct bumper bs[2 * NTHREADS];
	static uint64_t all[2 * NTHREADS * NBUMPS];
	struct dl_version v;
	int64_t t0 = dl_mono_ms(), lo = dl_now_ms();
	size_t n = 0;

	for (int i = 0; i < 2 * NTHREADS; i++) {
		bs[i].h = i % 2 ? b : a;
		bs[i].res = res;
		if (pthread_create(&bs[i].tid, NULL, bumper_main, &bs[i]))
			fail("pthread_create");
	}
	for (int i = 0; i < 2 * NTHREADS; i++) {
		pthread_join(bs[i].tid, NULL);
		if (bs[i].err)
			fail("%s: bump: %s", bs[i].h->name,
			     strerror(-bs[i].err));
		if (bs[i].badhost[0])
			fail("%s's bump reported host %s", bs[i].h->name,
			     bs[i].badhost);
		for (int k = 0; k < NBUMPS; k++)
			all[n++] = bs[i].got[k];
	}
	qsort(all, n, sizeof(all[0]), cmp_u64);
	for (size_t i = 0; i < n; i++)
		if (all[i] != i + 1)
			fail("bump %zu of %zu answered version %" PRIu64
			     " (lost or duplicate)",
			     i + 1, n, all[i]);
	v = get(a, res);
	if (v.version != n ||
	    (strcmp(v.host, a->name) != 0 && strcmp(v.host, b->name) != 0) ||
	    v.changed_ms < lo - SKEW_MS || v.changed_ms > dl_now_ms() + SKEW_MS)
		fail("after %zu bumps: version %" PRIu64 " by %s at %" PRId64,
		     n, v.version, v.host, v.changed_ms);
	printf("# %zu concurrent bumps from 2 hosts x %d threads in %" PRId64
	       " ms\n",
	       n, NTHREADS, dl_mono_ms() - t0);
}

/* ---- the cases ------------------------------------------------------- */

int main(int argc, char **argv)
{
	static struct host a, b, d;
	static char longa[256], longb[256], longc[401];
	/* distinct names whose encodings must not meet (names.h) */
	const char *names[] = {
		"",    "new\nline",	"%",   "%25", "a/b", "a%2Fb",
		"a_b", "\xff\xfe\xc3(", ".",   "..",  "h-x", "%68-x",
		longa, longb,		longc,
	};
	const size_t nnames = sizeof(names) / sizeof(names[0]);
	uint64_t inc = (uint64_t)getpid() << 8;
	struct dl_version v, v1, v2;
	struct dl_lock_req r;
	struct dl_grant g;
	int64_t lo, t0;
	pid_t server;
	char path[128];
	bool has;
	int ret;

	if (argc != 3) {
		fprintf(stderr, "usage: zk_version HOST:PORT SERVER_PID\n");
		return 2;
	}
	server = (pid_t)atol(argv[2]);
	zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
	snprintf(root, sizeof(root), "/dlock-version-%d", (int)getpid());
	/* 255 bytes: too long for a plain znode name, stored hashed */
	memset(longa, 'n', sizeof(longa) - 1);
	memset(longb, 'n', sizeof(longb) - 1);
	longb[254] = 'm';
	for (size_t i = 0; i < sizeof(longc) - 1; i++)
		longc[i] = (char)("x/\n%\xe9"[i % 5]);
	zk_connect(argv[1]);
	host_open(&a, "hosta", argv[1], inc + 1, 4000);
	host_open(&b, "hostb", argv[1], inc + 2, 4000);

	what = "never bumped";
	expect_none(&a, "f");
	expect_none(&b, "f");
	ok();

	what = "bump twice";
	lo = dl_now_ms();
	v1 = bump(&a, "f");
	expect("hosta", "f", &v1, 1, "hosta", lo - SKEW_MS,
	       dl_now_ms() + SKEW_MS);
	v2 = bump(&a, "f");
	expect("hosta", "f", &v2, 2, "hosta", v1.changed_ms,
	       dl_now_ms() + SKEW_MS);
	v = get(&b, "f"); /* the other host sees it at once */
	expect("hostb", "f", &v, 2, "hosta", v2.changed_ms, v2.changed_ms);
	v = bump(&b, "f");
	expect("hostb", "f", &v, 3, "hostb", v2.changed_ms,
	       dl_now_ms() + SKEW_MS);
	v = get(&a, "f");
	expect("hosta", "f", &v, 3, "hostb", v2.changed_ms,
	       dl_now_ms() + SKEW_MS);
	expect_node("f", 3);
	ok();

	what = "concurrent";
	concurrent(&a, &b, "hot");
	expect_node("hot", 2 * NTHREADS * NBUMPS);
	ok();

	what = "names";
	for (size_t i = 0; i < nnames; i++)
		expect_none(&b, names[i]);
	for (size_t i = 0; i < nnames; i++)
		for (size_t k = 0; k <= i; k++)
			bump(k % 2 ? &b : &a, names[i]);
	for (size_t i = 0; i < nnames; i++) {
		v = get(i % 2 ? &a : &b, names[i]);
		expect("names", names[i], &v, i + 1, i % 2 ? "hostb" : "hosta",
		       lo - SKEW_MS, dl_now_ms() + SKEW_MS);
	}
	/* one node per name bumped, none for a name only read */
	snprintf(path, sizeof(path), "%s/v", root);
	if (children(path, "f", &has) != (int)nnames + 2)
		fail("%d version nodes for %zu bumped names",
		     children(path, "f", &has), nnames + 2);
	ok();

	what = "locks and listings";
	/* a lock on a bumped resource, broken by the other host */
	r = flock_req("f", DL_WRLCK, 7);
	ret = dl_backend_lock(a.be, &r, &g);
	if (ret != 0)
		fail("lock f: %s", strerror(-ret));
	v1 = bump(&a, "f");
	if (nlisted(&b, NULL) != 1 || nlisted(&b, "f") != 1)
		fail("list: %d lock(s) in all, %d on f; expected 1 and 1",
		     nlisted(&b, NULL), nlisted(&b, "f"));
	ret = dl_backend_break_lock(b.be, "f");
	if (ret != 0)
		fail("break f: %s", strerror(-ret));
	t0 = dl_mono_ms();
	for (;;) {
		pthread_mutex_lock(&a.mutex);
		ret = a.nlost;
		pthread_mutex_unlock(&a.mutex);
		if (ret || dl_mono_ms() - t0 > BOUND_MS)
			break;
		usleep(10000);
	}
	if (!ret)
		fail("hosta was not told of the break within %d ms", BOUND_MS);
	v = get(&b, "f");
	expect("hostb", "f", &v, 4, "hosta", v1.changed_ms, v1.changed_ms);
	r.type = DL_UNLCK;
	dl_backend_unlock(a.be, &r);
	/* a lock taken and given back: its resource node goes, not this */
	r = flock_req("hot", DL_RDLCK, 8);
	ret = dl_backend_lock(b.be, &r, &g);
	if (ret != 0)
		fail("lock hot: %s", strerror(-ret));
	r.type = DL_UNLCK;
	dl_backend_unlock(b.be, &r);
	if (nlisted(&a, NULL) != 0)
		fail("list: %d lock(s) left, or versions listed",
		     nlisted(&a, NULL));
	expect_node("f", 4);
	expect_node("hot", 2 * NTHREADS * NBUMPS);
	ok();

	what = "new session";
	host_close(&a);
	host_open(&a, "hosta", argv[1], inc + 3, 4000);
	v = get(&a, "f");
	expect("hosta", "f", &v, 4, "hosta", v1.changed_ms, v1.changed_ms);
	v = get(&a, "hot");
	if (v.version != 2 * NTHREADS * NBUMPS)
		fail("hot is %" PRIu64 " after a new session", v.version);
	for (size_t i = 0; i < nnames; i++)
		if (get(&a, names[i]).version != i + 1)
			fail("name %zu lost its version", i);
	v = bump(&a, "f");
	expect("hosta", "f", &v, 5, "hosta", v1.changed_ms,
	       dl_now_ms() + SKEW_MS);
	ok();

	what = "no server";
	host_open(&d, "hostd", argv[1], inc + 4, NOLCK_MS);
	host_close(&a);
	host_close(&b);
	zookeeper_close(zh);
	if (kill(server, SIGKILL) < 0)
		fail("kill %d: %s", (int)server, strerror(errno));
	t0 = dl_mono_ms();
	ret = dl_backend_version(d.be, "f", &v);
	if (ret != -ENOLCK)
		fail("version without a server: %d (%s)", ret, strerror(-ret));
	ret = dl_backend_bump(d.be, "f", &v);
	if (ret != -ENOLCK)
		fail("bump without a server: %d (%s)", ret, strerror(-ret));
	if (dl_mono_ms() - t0 > 2 * NOLCK_WAIT)
		fail("-ENOLCK took %" PRId64 " ms", dl_mono_ms() - t0);
	printf("# -ENOLCK twice in %" PRId64 " ms\n", dl_mono_ms() - t0);
	host_close(&d);
	ok();
	return 0;
}

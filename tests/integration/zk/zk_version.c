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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/util/clock.h"
#include "tests/integration/be_harness.h"
#include "tests/integration/zk/zk_handle.h"

#define NTHREADS   2	/* bumping threads per host */
#define NBUMPS	   25	/* bumps per thread: N = 50 per host */
#define SKEW_MS	   2000 /* server clock vs ours: same machine */
#define NOLCK_MS   1500 /* session timeout of the host that loses it */
#define NOLCK_WAIT 4000 /* a call without a server answers within */

static char root[64];
static zhandle_t *zh;

/* ---- hosts ----------------------------------------------------------- */

static void host_open(struct be_host *h, const char *name, const char *hosts,
		      uint64_t incarnation, int timeout_ms)
{
	char uri[512];
	struct be_open o = { .uri = uri, .incarnation = incarnation };

	snprintf(uri, sizeof(uri), "zk://%s%s?session_timeout_ms=%d", hosts,
		 root, timeout_ms);
	be_host_open(h, name, &o);
}

/* @v is version @want, last bumped by @host within [lo, hi] (ms) */
static void expect(const char *who, const char *res, const struct dl_version *v,
		   uint64_t want, const char *host, int64_t lo, int64_t hi)
{
	char buf[128];

	if (v->version != want || strcmp(v->host, host) != 0 ||
	    v->changed_ms < lo || v->changed_ms > hi)
		be_fail("%s: %s is %" PRIu64 " by \"%.64s\" at %" PRId64
			", expected %" PRIu64 " by \"%s\" in [%" PRId64
			", %" PRId64 "]",
			who, be_shown(res, buf, sizeof(buf)), v->version,
			v->host, v->changed_ms, want, host, lo, hi);
}

static void expect_none(struct be_host *h, const char *res)
{
	struct dl_version v = be_version(h, res);

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
static int nlisted(struct be_host *h, const char *res)
{
	int n = 0, ret = dl_backend_list(h->be, res, count_info, &n);

	if (ret < 0)
		be_fail("%s: list: %s", h->name, strerror(-ret));
	return n;
}

/* ---- the test's own handle ------------------------------------------- */

/* the children of @path: a count, and whether one is named @name */
static int children(const char *path, const char *name, bool *has)
{
	struct String_vector kids = { 0 };
	int rc = zoo_get_children(zh, path, 0, &kids), n;

	*has = false;
	if (rc == ZNONODE)
		return 0;
	if (rc != ZOK)
		be_fail("children of %s: %s", path, zerror(rc));
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
		be_fail("exists %s: %s", path, zerror(rc));
	if (st.ephemeralOwner != 0)
		be_fail("%s is ephemeral", path);
	if ((uint64_t)st.version + 1 != want)
		be_fail("%s: stat.version %d, expected %" PRIu64, path,
			st.version, want - 1);
	snprintf(path, sizeof(path), "%s/v", root);
	children(path, enc, &has);
	if (!has)
		be_fail("%s is not among the children of %s", enc, path);
}

/* ---- the cases ------------------------------------------------------- */

int main(int argc, char **argv)
{
	static struct be_host a, b, d;
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
	zh = zk_handle_open(argv[1]);
	host_open(&a, "hosta", argv[1], inc + 1, 4000);
	host_open(&b, "hostb", argv[1], inc + 2, 4000);

	be_case = "never bumped";
	expect_none(&a, "f");
	expect_none(&b, "f");
	be_ok();

	be_case = "bump twice";
	lo = dl_now_ms();
	v2 = be_two_bumps(&a, &b, "f");
	v = be_bump(&b, "f");
	expect("hostb", "f", &v, 3, "hostb", v2.changed_ms,
	       dl_now_ms() + SKEW_MS);
	v = be_version(&a, "f");
	expect("hosta", "f", &v, 3, "hostb", v2.changed_ms,
	       dl_now_ms() + SKEW_MS);
	expect_node("f", 3);
	be_ok();

	be_case = "concurrent";
	be_bump_race(&a, &b, "hot", NTHREADS, NBUMPS);
	expect_node("hot", 2 * NTHREADS * NBUMPS);
	be_ok();

	be_case = "names";
	for (size_t i = 0; i < nnames; i++)
		expect_none(&b, names[i]);
	for (size_t i = 0; i < nnames; i++)
		for (size_t k = 0; k <= i; k++)
			be_bump(k % 2 ? &b : &a, names[i]);
	for (size_t i = 0; i < nnames; i++) {
		v = be_version(i % 2 ? &a : &b, names[i]);
		expect("names", names[i], &v, i + 1, i % 2 ? "hostb" : "hosta",
		       lo - SKEW_MS, dl_now_ms() + SKEW_MS);
	}
	/* one node per name bumped, none for a name only read */
	snprintf(path, sizeof(path), "%s/v", root);
	if (children(path, "f", &has) != (int)nnames + 2)
		be_fail("%d version nodes for %zu bumped names",
			children(path, "f", &has), nnames + 2);
	be_ok();

	be_case = "locks and listings";
	/* a lock on a bumped resource, broken by the other host */
	r = flock_req("f", DL_WRLCK, 7);
	ret = dl_backend_lock(a.be, &r, &g);
	if (ret != 0)
		be_fail("lock f: %s", strerror(-ret));
	v1 = be_bump(&a, "f");
	if (nlisted(&b, NULL) != 1 || nlisted(&b, "f") != 1)
		be_fail("list: %d lock(s) in all, %d on f; expected 1 and 1",
			nlisted(&b, NULL), nlisted(&b, "f"));
	ret = dl_backend_break_lock(b.be, "f");
	if (ret != 0)
		be_fail("break f: %s", strerror(-ret));
	if (!be_wait_lost(&a, 1, BE_BOUND_MS))
		be_fail("hosta was not told of the break within %d ms",
			BE_BOUND_MS);
	v = be_version(&b, "f");
	expect("hostb", "f", &v, 4, "hosta", v1.changed_ms, v1.changed_ms);
	r.type = DL_UNLCK;
	dl_backend_unlock(a.be, &r);
	/* a lock taken and given back: its resource node goes, not this */
	r = flock_req("hot", DL_RDLCK, 8);
	ret = dl_backend_lock(b.be, &r, &g);
	if (ret != 0)
		be_fail("lock hot: %s", strerror(-ret));
	r.type = DL_UNLCK;
	dl_backend_unlock(b.be, &r);
	if (nlisted(&a, NULL) != 0)
		be_fail("list: %d lock(s) left, or versions listed",
			nlisted(&a, NULL));
	expect_node("f", 4);
	expect_node("hot", 2 * NTHREADS * NBUMPS);
	be_ok();

	be_case = "new session";
	be_host_close(&a);
	host_open(&a, "hosta", argv[1], inc + 3, 4000);
	v = be_version(&a, "f");
	expect("hosta", "f", &v, 4, "hosta", v1.changed_ms, v1.changed_ms);
	v = be_version(&a, "hot");
	if (v.version != 2 * NTHREADS * NBUMPS)
		be_fail("hot is %" PRIu64 " after a new session", v.version);
	for (size_t i = 0; i < nnames; i++)
		if (be_version(&a, names[i]).version != i + 1)
			be_fail("name %zu lost its version", i);
	v = be_bump(&a, "f");
	expect("hosta", "f", &v, 5, "hosta", v1.changed_ms,
	       dl_now_ms() + SKEW_MS);
	be_ok();

	be_case = "no server";
	host_open(&d, "hostd", argv[1], inc + 4, NOLCK_MS);
	be_host_close(&a);
	be_host_close(&b);
	zookeeper_close(zh);
	if (kill(server, SIGKILL) < 0)
		be_fail("kill %d: %s", (int)server, strerror(errno));
	t0 = dl_mono_ms();
	ret = dl_backend_version(d.be, "f", &v);
	if (ret != -ENOLCK)
		be_fail("version without a server: %d (%s)", ret,
			strerror(-ret));
	ret = dl_backend_bump(d.be, "f", &v);
	if (ret != -ENOLCK)
		be_fail("bump without a server: %d (%s)", ret, strerror(-ret));
	if (dl_mono_ms() - t0 > 2 * NOLCK_WAIT)
		be_fail("-ENOLCK took %" PRId64 " ms", dl_mono_ms() - t0);
	printf("# -ENOLCK twice in %" PRId64 " ms\n", dl_mono_ms() - t0);
	be_host_close(&d);
	be_ok();
	return 0;
}

/*
 * zk_poke.c - the ZooKeeper backend's poke and cb->revoke, driven through
 * backend.h against a real server (zk_poke.sh starts it).
 *
 * usage: zk_poke HOST:PORT
 *
 * Three backends ("hosts" a, b, c, each its own incarnation) share one
 * fresh chroot.  A poke of a resource must reach every other host that
 * holds a lock on it (either space) once, with the resource's bytes
 * intact, and never the poker itself nor a host that only waits; a poke
 * of a free resource, or of one only the poker holds, calls nothing.  A
 * separate ZooKeeper handle lists the chroot before and after each poke:
 * the same nodes with the same data (a poke leaves nothing behind), and
 * no request node once everything is unlocked.  Every wait is bounded
 * (condition waits); "nothing more" is checked over a quiet period.
 * Prints "ok CASE" per case, or "FAIL CASE: why" and exits 1.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/util/log.h"
#include "tests/integration/be_harness.h"
#include "tests/integration/zk/zk_handle.h"

#define QUIET_MS 700 /* "nothing more comes" */
#define MAX_TREE 256

/* one znode as the test's own handle saw it */
struct znode {
	char path[1024];
	char *data;
	int len;
};

struct tree {
	struct znode v[MAX_TREE];
	int n;
};

static char root[64];
static zhandle_t *zh;

/* ---- hosts ----------------------------------------------------------- */

static void host_open(struct be_host *h, const char *name, const char *hosts,
		      uint64_t incarnation)
{
	char uri[512];
	struct be_open o = { .uri = uri, .incarnation = incarnation };

	snprintf(uri, sizeof(uri), "zk://%s%s?session_timeout_ms=4000", hosts,
		 root);
	be_host_open(h, name, &o);
}

static struct dl_lock_req req_of(const char *res, enum dl_space space,
				 enum dl_lock_type type, uint64_t owner,
				 uint64_t wait_id)
{
	struct dl_lock_req r = { .resource = res,
				 .space = space,
				 .type = type,
				 .start = 0,
				 .end = space == DL_SPACE_FLOCK ? DL_RANGE_EOF
								: 99,
				 .owner = owner,
				 .pid = 1,
				 .wait_id = wait_id };
	return r;
}

/* lock, expecting @want (0 granted, -EINPROGRESS queued) */
static void do_lock(struct be_host *h, const char *res, enum dl_space space,
		    enum dl_lock_type type, uint64_t owner, uint64_t wait_id,
		    int want)
{
	struct dl_lock_req r = req_of(res, space, type, owner, wait_id);
	struct dl_grant g;
	int ret = dl_backend_lock(h->be, &r, &g);

	if (ret != want)
		be_fail("%s: lock %s owner %" PRIu64 ": %d (%s), expected %d",
			h->name, res, owner, ret, strerror(-ret), want);
}

/* lock [start, end] of a POSIX owner, expecting a grant */
static void do_lock_range(struct be_host *h, const char *res,
			  enum dl_lock_type type, uint64_t owner,
			  uint64_t start, uint64_t end)
{
	struct dl_lock_req r = req_of(res, DL_SPACE_POSIX, type, owner, 0);
	struct dl_grant g;
	int ret;

	r.start = start;
	r.end = end;
	ret = dl_backend_lock(h->be, &r, &g);
	if (ret != 0)
		be_fail("%s: lock %s [%" PRIu64 ", %" PRIu64 "]: %s", h->name,
			res, start, end, strerror(-ret));
}

static void do_unlock_range(struct be_host *h, const char *res,
			    enum dl_space space, uint64_t owner, uint64_t start,
			    uint64_t end)
{
	struct dl_lock_req r = req_of(res, space, DL_UNLCK, owner, 0);
	int ret;

	r.start = start;
	r.end = end;
	ret = dl_backend_unlock(h->be, &r);
	if (ret < 0)
		be_fail("%s: unlock %s: %s", h->name, res, strerror(-ret));
}

static void do_unlock(struct be_host *h, const char *res, enum dl_space space,
		      uint64_t owner)
{
	do_unlock_range(h, res, space, owner, 0, DL_RANGE_EOF);
}

/* @h got exactly the revokes @names[0..n) since it had @base, and none
 * comes after them over a quiet period */
static void expect_revokes(struct be_host *h, int base,
			   const char *const *names, int n)
{
	char b1[128], b2[128];
	int got = be_wait_revoked(h, base + n, BE_BOUND_MS);

	if (got < base + n)
		be_fail("%s: %d revoke(s) within %d ms, expected %d", h->name,
			got - base, BE_BOUND_MS, n);
	got = be_wait_revoked(h, base + n + 1, QUIET_MS);
	if (got != base + n)
		be_fail("%s: %d revokes, expected %d (the last: %s)", h->name,
			got - base, n,
			be_shown(be_revoked(h, got - 1), b1, sizeof(b1)));
	for (int i = 0; i < n; i++) {
		bool found = false;

		for (int k = base; k < base + n && !found; k++) {
			const char *res = be_revoked(h, k);

			found = res && strcmp(res, names[i]) == 0;
		}
		if (!found)
			be_fail("%s: no revoke of \"%s\" (got \"%s\")", h->name,
				be_shown(names[i], b1, sizeof(b1)),
				be_shown(be_revoked(h, base + i), b2,
					 sizeof(b2)));
	}
}

/* ---- the tree, through the test's own handle ------------------------- */

static void tree_free(struct tree *t)
{
	for (int i = 0; i < t->n; i++)
		free(t->v[i].data);
	t->n = 0;
}

/* every node under @path (itself included), with its data */
static void tree_walk(const char *path, struct tree *t)
{
	struct String_vector kids = { 0 };
	struct znode *z;
	struct Stat st;
	int rc;

	if (t->n == MAX_TREE)
		be_fail("more than %d nodes under %s", MAX_TREE, root);
	z = &t->v[t->n];
	snprintf(z->path, sizeof(z->path), "%s", path);
	z->data = malloc(65536);
	z->len = 65536;
	rc = z->data ? zoo_get(zh, path, 0, z->data, &z->len, &st)
		     : ZSYSTEMERROR;
	if (rc == ZNONODE) {
		free(z->data);
		return;
	}
	if (rc != ZOK)
		be_fail("get %s: %s", path, zerror(rc));
	t->n++;
	rc = zoo_get_children(zh, path, 0, &kids);
	if (rc == ZNONODE)
		return;
	if (rc != ZOK)
		be_fail("children of %s: %s", path, zerror(rc));
	for (int i = 0; i < kids.count; i++) {
		char sub[1024];

		snprintf(sub, sizeof(sub), "%s/%s", path, kids.data[i]);
		tree_walk(sub, t);
	}
	deallocate_String_vector(&kids);
}

static void tree_read(struct tree *t)
{
	t->n = 0;
	tree_walk(root, t);
}

static bool is_request(const char *path)
{
	const char *base = strrchr(path, '/');

	return base && strncmp(base + 1, "q-", 2) == 0;
}

static const struct znode *tree_find(const struct tree *t, const char *path)
{
	for (int i = 0; i < t->n; i++)
		if (strcmp(t->v[i].path, path) == 0)
			return &t->v[i];
	return NULL;
}

/* @after has no node that @before had not, every request node of @before
 * and the same data in each (an empty resource node may have been reaped
 * by the server meanwhile: not the poke's doing) */
static void tree_same(const struct tree *before, const struct tree *after)
{
	for (int i = 0; i < after->n; i++)
		if (!tree_find(before, after->v[i].path))
			be_fail("the poke left %s behind", after->v[i].path);
	for (int i = 0; i < before->n; i++) {
		const struct znode *x = &before->v[i];
		const struct znode *y = tree_find(after, x->path);

		if (!y && is_request(x->path))
			be_fail("%s is gone after the poke", x->path);
		if (y && (x->len != y->len ||
			  (x->len > 0 &&
			   memcmp(x->data, y->data, (size_t)x->len) != 0)))
			be_fail("the poke changed the data of %s", x->path);
	}
}

/* how many request nodes ("q-...") are left */
static int tree_requests(const struct tree *t)
{
	int n = 0;

	for (int i = 0; i < t->n; i++)
		n += is_request(t->v[i].path);
	return n;
}

/* @poker pokes @res: 0, and no node more, less or rewritten */
static void poke(struct be_host *poker, const char *res)
{
	static struct tree before, after;
	char b[128];
	int ret;

	tree_read(&before);
	ret = dl_backend_poke(poker->be, res);
	if (ret != 0)
		be_fail("%s: poke \"%s\": %d (%s)", poker->name,
			be_shown(res, b, sizeof(b)), ret, strerror(-ret));
	tree_read(&after);
	tree_same(&before, &after);
	tree_free(&before);
	tree_free(&after);
}

/* ---- the cases ------------------------------------------------------- */

int main(int argc, char **argv)
{
	static struct be_host a, b, c;
	static struct tree t;
	char odd[] = "dir/odd name\nwith\xff bytes %2F";
	char longname[400];
	uint64_t inc = (uint64_t)getpid() << 8;
	int64_t t0;
	int ra, rb, rc, nlost, nfailed;

	if (argc != 2) {
		fprintf(stderr, "usage: zk_poke HOST:PORT\n");
		return 2;
	}
	be_quiet_ms = QUIET_MS;
	zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
	snprintf(root, sizeof(root), "/dlock-poke-%d", (int)getpid());
	/* a name too long for a znode component: stored hashed (names.h) */
	for (size_t i = 0; i < sizeof(longname) - 1; i++)
		longname[i] = (char)("abc \t\x80\xfe/"[i % 9]);
	longname[sizeof(longname) - 1] = '\0';
	zh = zk_handle_open(argv[1]);
	host_open(&a, "hosta", argv[1], inc + 1);
	host_open(&b, "hostb", argv[1], inc + 2);
	host_open(&c, "hostc", argv[1], inc + 3);

	be_case = "posix";
	do_lock(&a, "x", DL_SPACE_POSIX, DL_WRLCK, 1, 0, 0);
	t0 = dl_mono_ms();
	poke(&b, "x");
	if (be_wait_revoked(&a, 1, BE_BOUND_MS) == 1)
		printf("# revoke %" PRId64 " ms after the poke began (it "
		       "lists the tree twice)\n",
		       dl_mono_ms() - t0);
	expect_revokes(&a, 0, (const char *[]){ "x" }, 1);
	be_ok();

	be_case = "flock";
	do_lock(&a, "y", DL_SPACE_FLOCK, DL_WRLCK, 2, 0, 0);
	poke(&b, "y");
	expect_revokes(&a, 1, (const char *[]){ "y" }, 1);
	be_ok();

	be_case = "nobody";
	poke(&b, "nobody holds this");
	poke(&a, "nobody holds this");
	be_ok();

	be_case = "self";
	poke(&a, "x");
	poke(&a, "y");
	if (be_wait_revoked(&a, 3, QUIET_MS) != 2)
		be_fail("hosta was asked by itself");
	be_ok();

	be_case = "again"; /* each poke is one more revoke */
	poke(&b, "x");
	poke(&c, "x");
	expect_revokes(&a, 2, (const char *[]){ "x", "x" }, 2);
	be_ok();

	be_case = "odd names";
	do_lock(&a, odd, DL_SPACE_POSIX, DL_RDLCK, 3, 0, 0);
	do_lock(&a, longname, DL_SPACE_FLOCK, DL_WRLCK, 4, 0, 0);
	poke(&b, odd);
	poke(&b, longname);
	expect_revokes(&a, 4, (const char *[]){ odd, longname }, 2);
	be_ok();

	be_case = "own writes"; /* our rewrites of our nodes are no pokes */
	do_lock_range(&a, "o", DL_WRLCK, 11, 0, 99);
	do_unlock_range(&a, "o", DL_SPACE_POSIX, 11, 10, 19);
	do_lock_range(&a, "o", DL_WRLCK, 11, 200, 299);
	do_lock_range(&a, "o", DL_RDLCK, 11, 50, 59);
	if (be_wait_revoked(&a, 7, QUIET_MS) != 6)
		be_fail("hosta took its own writes for a poke");
	poke(&b, "o");
	expect_revokes(&a, 6, (const char *[]){ "o" }, 1);
	do_unlock(&a, "o", DL_SPACE_POSIX, 11);
	be_ok();

	be_case = "two spaces, two owners"; /* one revoke per daemon */
	do_lock(&a, "m", DL_SPACE_FLOCK, DL_RDLCK, 5, 0, 0);
	do_lock(&a, "m", DL_SPACE_POSIX, DL_RDLCK, 6, 0, 0);
	do_lock(&a, "m", DL_SPACE_POSIX, DL_RDLCK, 7, 0, 0);
	poke(&b, "m");
	expect_revokes(&a, 7, (const char *[]){ "m" }, 1);
	be_ok();

	be_case = "shared"; /* every other holder, never the poker */
	do_lock(&a, "r", DL_SPACE_POSIX, DL_RDLCK, 8, 0, 0);
	do_lock(&b, "r", DL_SPACE_POSIX, DL_RDLCK, 8, 0, 0);
	do_lock(&c, "r", DL_SPACE_FLOCK, DL_RDLCK, 8, 0, 0);
	poke(&b, "r");
	expect_revokes(&a, 8, (const char *[]){ "r" }, 1);
	expect_revokes(&c, 0, (const char *[]){ "r" }, 1);
	be_ok();

	be_case = "waiter"; /* a host that only waits is not asked */
	do_lock(&c, "w", DL_SPACE_POSIX, DL_WRLCK, 9, 0, 0);
	do_lock(&a, "w", DL_SPACE_POSIX, DL_WRLCK, 10, 77, -EINPROGRESS);
	poke(&b, "w");
	expect_revokes(&c, 1, (const char *[]){ "w" }, 1);
	if (be_nrevoked(&a) != 9)
		be_fail("hosta was asked for a lock it only waits for");
	do_unlock(&c, "w", DL_SPACE_POSIX, 9);
	if (be_await_event(&a, 77, BE_BOUND_MS).kind != 'g')
		be_fail("hosta's wait was not granted within %d ms",
			BE_BOUND_MS);
	/* granted now: a poke reaches it */
	poke(&c, "w");
	expect_revokes(&a, 9, (const char *[]){ "w" }, 1);
	be_ok();

	be_case = "released"; /* once given back, nothing to ask for */
	do_unlock(&a, "x", DL_SPACE_POSIX, 1);
	poke(&b, "x");
	if (be_wait_revoked(&a, 11, QUIET_MS) != 10)
		be_fail("hosta was asked for a lock it gave back");
	be_ok();

	be_case = "tidy";
	ra = be_nrevoked(&a);
	rb = be_nrevoked(&b);
	rc = be_nrevoked(&c);
	if (rb != 0)
		be_fail("hostb was asked %d times for what it poked itself",
			rb);
	do_unlock(&a, "y", DL_SPACE_FLOCK, 2);
	do_unlock(&a, odd, DL_SPACE_POSIX, 3);
	do_unlock(&a, longname, DL_SPACE_FLOCK, 4);
	do_unlock(&a, "m", DL_SPACE_FLOCK, 5);
	do_unlock(&a, "m", DL_SPACE_POSIX, 6);
	do_unlock(&a, "m", DL_SPACE_POSIX, 7);
	do_unlock(&a, "r", DL_SPACE_POSIX, 8);
	do_unlock(&b, "r", DL_SPACE_POSIX, 8);
	do_unlock(&c, "r", DL_SPACE_FLOCK, 8);
	do_unlock(&a, "w", DL_SPACE_POSIX, 10);
	tree_read(&t);
	if (tree_requests(&t))
		be_fail("%d request node(s) left after every unlock",
			tree_requests(&t));
	tree_free(&t);
	nlost = be_nlost(&a, NULL) + be_nlost(&b, NULL) + be_nlost(&c, NULL);
	nfailed = be_events(&a, BE_ANY_WAIT, 'f') +
		  be_events(&b, BE_ANY_WAIT, 'f') +
		  be_events(&c, BE_ANY_WAIT, 'f');
	if (be_nrevoked(&a) != ra || be_nrevoked(&c) != rc || nlost || nfailed)
		be_fail("unexpected callbacks: revokes a %d c %d, lost %d, "
			"failed %d",
			be_nrevoked(&a) - ra, be_nrevoked(&c) - rc, nlost,
			nfailed);
	be_ok();

	be_host_close(&a);
	be_host_close(&b);
	be_host_close(&c);
	zookeeper_close(zh);
	return 0;
}

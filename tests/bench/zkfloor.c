/*
 * zkfloor.c - the floor under a ZooKeeper-backed lock: what a bare
 * libzookeeper_mt client pays per lock cycle against the same server.
 *
 * One cycle = create EPHEMERAL|SEQUENTIAL (take a place in the queue) +
 * delete (release): the two writes of the classic lock recipe, with no
 * queue to read.  Also times the recipe's uncontended minimum, create +
 * get_children + delete (dlockfs's lock + unlock), and a bare exists (one
 * round trip).  Prints cycles/s and p50/p99 per cycle.  With
 * --clients N, then N processes, each with its own session and parent
 * node, run create + delete cycles at once: the floor of N lockers on N
 * files through one daemon; then the same N processes run the recipe
 * (create + get_children + delete, what a lock needs at least); then N
 * threads of one process run the recipe on ONE shared session, as the
 * daemon's callers do: whether one session in order costs throughput
 * against N sessions.  A measuring program, not a test: it fails only
 * when a call it times fails.
 *
 * usage: zkfloor [--seconds S] [--iters N] [--clients N] HOST:PORT
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADED 1
#include <zookeeper/zookeeper.h>

#include "clients.h"

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

enum kind { K_CREATE_DELETE, K_RECIPE, K_EXISTS };

static const char *const kind_name[] = {
	"create(E|S) + delete",
	"create(E|S) + get_children + delete",
	"exists (one round trip)",
};

/* run one kind; prints a row; 0 or -1 when a call failed */
static int run(zhandle_t *zh, enum kind k, size_t iters, double seconds)
{
	uint64_t *lat = malloc(iters * sizeof(*lat));
	uint64_t t0, end;
	size_t n = 0;
	char path[256];
	int rc = ZOK;

	if (!lat)
		return -1;
	t0 = now_ns();
	end = t0 + (uint64_t)(seconds * 1e9);
	while (n < iters && now_ns() < end) {
		uint64_t s = now_ns();
		struct String_vector kids = { 0 };
		struct Stat st;

		if (k == K_EXISTS) {
			rc = zoo_exists(zh, "/zkfloor", 0, &st);
		} else {
			rc = zoo_create(zh, "/zkfloor/q-", "x", 1,
					&ZOO_OPEN_ACL_UNSAFE,
					ZOO_EPHEMERAL_SEQUENTIAL, path,
					sizeof(path));
			if (rc == ZOK && k == K_RECIPE) {
				rc = zoo_get_children(zh, "/zkfloor", 0, &kids);
				deallocate_String_vector(&kids);
			}
			if (rc == ZOK)
				rc = zoo_delete(zh, path, -1);
		}
		if (rc != ZOK) {
			fprintf(stderr, "zkfloor: %s: %s\n", kind_name[k],
				zerror(rc));
			free(lat);
			return -1;
		}
		lat[n++] = now_ns() - s;
	}
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("%-40s %10.0f/s  p50 %7.1f us  p99 %7.1f us  (%zu cycles)\n",
	       kind_name[k], n / ((now_ns() - t0) / 1e9),
	       n ? lat[n / 2] / 1e3 : 0.0, n ? lat[n * 99 / 100] / 1e3 : 0.0,
	       n);
	free(lat);
	return 0;
}

/* a connected session to @hosts, or NULL with a message */
static zhandle_t *zk_open(const char *hosts)
{
	zhandle_t *zh = zookeeper_init(hosts, NULL, 10000, NULL, NULL, 0);

	if (!zh) {
		fprintf(stderr, "zkfloor: zookeeper_init: %s\n",
			strerror(errno));
		return NULL;
	}
	for (int i = 0; i < 100 && zoo_state(zh) != ZOO_CONNECTED_STATE; i++)
		usleep(100000);
	if (zoo_state(zh) != ZOO_CONNECTED_STATE) {
		fprintf(stderr, "zkfloor: cannot connect to %s\n", hosts);
		zookeeper_close(zh);
		return NULL;
	}
	return zh;
}

struct client_arg {
	const char *hosts;
	double seconds;
	size_t iters;
	bool recipe;   /* + get_children between create and delete */
	zhandle_t *zh; /* shared by the threads of shared_run(); or NULL */
};

/* client @i's cycles under its own parent, on @a->zh or a session of its
 * own, until the time is up: create + delete, or the recipe */
static uint64_t client_run(unsigned i, void *arg)
{
	const struct client_arg *a = arg;
	char dir[64], node[80], path[256];
	uint64_t n = 0, end;
	zhandle_t *zh = a->zh ? a->zh : zk_open(a->hosts);
	int rc;

	if (!zh)
		return UINT64_MAX;
	snprintf(dir, sizeof(dir), "/zkfloor-%d-%d-%u", (int)getppid(),
		 (int)getpid(), i);
	snprintf(node, sizeof(node), "%s/q-", dir);
	rc = zoo_create(zh, dir, NULL, -1, &ZOO_OPEN_ACL_UNSAFE, ZOO_PERSISTENT,
			NULL, 0);
	end = now_ns() + (uint64_t)(a->seconds * 1e9);
	while (rc == ZOK && n < a->iters && now_ns() < end) {
		rc = zoo_create(zh, node, "x", 1, &ZOO_OPEN_ACL_UNSAFE,
				ZOO_EPHEMERAL_SEQUENTIAL, path, sizeof(path));
		if (rc == ZOK && a->recipe) {
			struct String_vector kids = { 0 };

			rc = zoo_get_children(zh, dir, 0, &kids);
			deallocate_String_vector(&kids);
		}
		if (rc == ZOK)
			rc = zoo_delete(zh, path, -1);
		n += rc == ZOK;
	}
	if (rc != ZOK)
		fprintf(stderr, "zkfloor: client %u: %s\n", i, zerror(rc));
	zoo_delete(zh, dir, -1);
	if (!a->zh)
		zookeeper_close(zh);
	return rc == ZOK ? n : UINT64_MAX;
}

struct shared_thread {
	pthread_t t;
	unsigned i;
	const struct client_arg *a;
	uint64_t n;
};

static void *shared_main(void *arg)
{
	struct shared_thread *st = arg;

	st->n = client_run(st->i, (void *)st->a);
	return NULL;
}

/* @n threads run the recipe at once on ONE session; prints a row like
 * bench_clients(); 0 or 1 when one failed */
static int shared_run(unsigned n, const struct client_arg *ca)
{
	struct client_arg a = *ca;
	struct shared_thread st[64];
	uint64_t total = 0, start, ns;
	unsigned started = 0;
	char what[64];
	int rc = 0;

	a.recipe = true;
	a.zh = zk_open(a.hosts);
	if (!a.zh)
		return 1;
	start = now_ns();
	for (; started < n; started++) {
		st[started] = (struct shared_thread){ .i = started, .a = &a };
		if (pthread_create(&st[started].t, NULL, shared_main,
				   &st[started])) {
			rc = 1;
			break;
		}
	}
	for (unsigned i = 0; i < started; i++) {
		pthread_join(st[i].t, NULL);
		if (st[i].n == UINT64_MAX)
			rc = 1;
		else
			total += st[i].n;
	}
	ns = now_ns() - start;
	zookeeper_close(a.zh);
	snprintf(what, sizeof(what), "%u threads, one session, the recipe", n);
	printf("  %-40s %8.0f /s  (%llu cycles)\n", what,
	       (double)total * 1e9 / (double)(ns ? ns : 1),
	       (unsigned long long)total);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "iters", required_argument, NULL, 'n' },
		{ "clients", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	double seconds = 3.0;
	size_t iters = 1000000;
	unsigned nclients = 0;
	zhandle_t *zh;
	int c, rc, ret = 0;

	while ((c = getopt_long(argc, argv, "s:n:c:", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			nclients = (unsigned)strtoul(optarg, NULL, 10);
			break;
		case 's':
			seconds = atof(optarg);
			break;
		case 'n':
			iters = (size_t)strtoull(optarg, NULL, 10);
			break;
		default:
			goto usage;
		}
	}
	if (optind + 1 != argc || seconds <= 0 || iters == 0 || nclients > 64)
		goto usage;
	zoo_set_debug_level(ZOO_LOG_LEVEL_ERROR);
	zh = zk_open(argv[optind]);
	if (!zh)
		return 1;
	rc = zoo_create(zh, "/zkfloor", NULL, -1, &ZOO_OPEN_ACL_UNSAFE,
			ZOO_PERSISTENT, NULL, 0);
	if (rc != ZOK && rc != ZNODEEXISTS) {
		fprintf(stderr, "zkfloor: create /zkfloor: %s\n", zerror(rc));
		zookeeper_close(zh);
		return 1;
	}
	for (int k = K_CREATE_DELETE; k <= K_EXISTS && ret == 0; k++)
		ret = run(zh, (enum kind)k, iters, seconds);
	zoo_delete(zh, "/zkfloor", -1);
	zookeeper_close(zh);
	if (ret == 0 && nclients) {
		struct client_arg ca = { argv[optind], seconds, iters, false,
					 NULL };
		char what[64];

		snprintf(what, sizeof(what),
			 "%u clients, create(E|S) + delete each", nclients);
		ret = bench_clients(what, nclients, client_run, &ca);
		ca.recipe = true;
		snprintf(what, sizeof(what), "%u clients, the recipe each",
			 nclients);
		ret |= bench_clients(what, nclients, client_run, &ca);
		ret |= shared_run(nclients, &ca);
	}
	return ret ? 1 : 0;
usage:
	fprintf(stderr, "usage: zkfloor [--seconds S] [--iters N] "
			"[--clients N (at most 64)] HOST:PORT\n");
	return 2;
}

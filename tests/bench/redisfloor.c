/*
 * redisfloor.c - the floor under a Redis-backed lock: what a bare hiredis
 * client pays per lock cycle against the same server.
 *
 * One cycle = SET key val NX PX ttl (take) + EVALSHA of the classic
 * compare-and-delete script (release): two round trips, like dlockfs's
 * lock + unlock.  Also times a bare PING (one round trip).  Prints
 * cycles/s and p50/p99 per cycle.  With --clients N, then N processes,
 * each with its own connection and key, run the same cycle at once: the
 * floor of N lockers on N files through one daemon.  A measuring
 * program, not a test.
 *
 * usage: redisfloor [--seconds S] [--iters N] [--clients N] HOST PORT
 */
#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "clients.h"

static const char cad[] = "if redis.call('GET', KEYS[1]) == ARGV[1] then "
			  "return redis.call('DEL', KEYS[1]) else return 0 end";

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

static double pct_us(const uint64_t *v, size_t n, unsigned p)
{
	size_t rank = (n * p + 99) / 100;

	return (double)v[rank ? rank - 1 : 0] / 1e3;
}

/* 0, or -1 with a message: a reply of the expected type */
static int expect(redisContext *c, redisReply *r, int type, const char *what)
{
	if (!r) {
		fprintf(stderr, "redisfloor: %s: %s\n", what, c->errstr);
		return -1;
	}
	if (r->type != type) {
		fprintf(stderr, "redisfloor: %s: unexpected reply %.*s\n", what,
			r->type == REDIS_REPLY_ERROR ? (int)r->len : 0,
			r->type == REDIS_REPLY_ERROR ? r->str : "");
		freeReplyObject(r);
		return -1;
	}
	freeReplyObject(r);
	return 0;
}

static void report(const char *what, uint64_t *lat, size_t n, uint64_t ns)
{
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("  %-34s %10.0f /s  p50 %8.2f us  p99 %8.2f us  (%zu)\n", what,
	       (double)n * 1e9 / (double)(ns ? ns : 1), pct_us(lat, n, 50),
	       pct_us(lat, n, 99), n);
}

/* one lock cycle: SET NX PX + compare-and-delete; 0 or -1 (a message) */
static int cycle(redisContext *c, const char *sha, const char *key,
		 const char *val)
{
	if (expect(c, redisCommand(c, "SET %s %s NX PX 15000", key, val),
		   REDIS_REPLY_STATUS, "SET NX PX") ||
	    expect(c, redisCommand(c, "EVALSHA %s 1 %s %s", sha, key, val),
		   REDIS_REPLY_INTEGER, "EVALSHA"))
		return -1;
	return 0;
}

struct client_arg {
	const char *host, *sha;
	int port;
	double seconds;
	size_t iters;
};

/* one --clients process: cycles on its own key until the time is up */
static uint64_t client_run(unsigned i, void *arg)
{
	const struct client_arg *a = arg;
	struct timeval tv = { 2, 0 };
	char key[64], val[64];
	uint64_t n, start;
	redisContext *c;

	c = redisConnectWithTimeout(a->host, a->port, tv);
	if (!c || c->err) {
		fprintf(stderr, "redisfloor: client %u: cannot connect\n", i);
		return UINT64_MAX;
	}
	redisSetTimeout(c, tv);
	snprintf(key, sizeof(key), "redisfloor:%d:%u", (int)getppid(), i);
	snprintf(val, sizeof(val), "owner-%d", (int)getpid());
	start = now_ns();
	for (n = 0; n < a->iters && now_ns() - start < a->seconds * 1e9; n++)
		if (cycle(c, a->sha, key, val))
			return UINT64_MAX;
	redisFree(c);
	return n;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "iters", required_argument, NULL, 'n' },
		{ "clients", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	double seconds = 3;
	size_t iters = 20000, n;
	struct timeval tv = { 2, 0 };
	char sha[41], key[64], val[64];
	uint64_t *lat, t0, start;
	redisContext *c;
	redisReply *r;
	unsigned nclients = 0;
	int opt;

	while ((opt = getopt_long(argc, argv, "s:n:c:", opts, NULL)) != -1) {
		if (opt == 's')
			seconds = atof(optarg);
		else if (opt == 'c')
			nclients = (unsigned)strtoul(optarg, NULL, 10);
		else if (opt == 'n')
			iters = (size_t)strtoull(optarg, NULL, 10);
		else
			goto usage;
	}
	if (argc - optind != 2 || seconds <= 0 || iters == 0 || nclients > 64)
		goto usage;
	c = redisConnectWithTimeout(argv[optind], atoi(argv[optind + 1]), tv);
	if (!c || c->err) {
		fprintf(stderr, "redisfloor: connect: %s\n",
			c ? c->errstr : "out of memory");
		return 1;
	}
	redisSetTimeout(c, tv);
	lat = calloc(iters, sizeof(*lat));
	if (!lat)
		return 1;
	r = redisCommand(c, "SCRIPT LOAD %s", cad);
	if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
		fprintf(stderr, "redisfloor: SCRIPT LOAD failed\n");
		return 1;
	}
	memcpy(sha, r->str, 41);
	freeReplyObject(r);
	snprintf(key, sizeof(key), "redisfloor:%d", (int)getpid());
	snprintf(val, sizeof(val), "owner-%d", (int)getpid());
	printf("bare hiredis client against %s:%s\n", argv[optind],
	       argv[optind + 1]);

	/* one round trip */
	start = now_ns();
	for (n = 0; n < iters && now_ns() - start < seconds * 1e9; n++) {
		t0 = now_ns();
		if (expect(c, redisCommand(c, "PING"), REDIS_REPLY_STATUS,
			   "PING"))
			return 1;
		lat[n] = now_ns() - t0;
	}
	report("PING (one round trip)", lat, n, now_ns() - start);

	/* SET NX PX + compare-and-delete */
	start = now_ns();
	for (n = 0; n < iters && now_ns() - start < seconds * 1e9; n++) {
		t0 = now_ns();
		if (cycle(c, sha, key, val))
			return 1;
		lat[n] = now_ns() - t0;
	}
	report("SET NX PX + EVALSHA del (cycle)", lat, n, now_ns() - start);
	free(lat);
	redisFree(c);
	fflush(stdout);
	if (nclients) {
		struct client_arg ca = { argv[optind], sha,
					 atoi(argv[optind + 1]), seconds,
					 iters };
		char what[64];

		snprintf(what, sizeof(what), "%u clients, a key each (cycle)",
			 nclients);
		return bench_clients(what, nclients, client_run, &ca);
	}
	return 0;
usage:
	fprintf(stderr, "usage: redisfloor [--seconds S] [--iters N] "
			"[--clients N (at most 64)] HOST PORT\n");
	return 2;
}

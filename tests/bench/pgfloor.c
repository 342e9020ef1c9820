/*
 * pgfloor.c - the floor under a PostgreSQL-backed lock: what a bare libpq
 * client pays per lock cycle against the same server.
 *
 *  - SELECT 1: one round trip, nothing written;
 *  - pg_advisory_lock(k) + pg_advisory_unlock(k): two round trips, a
 *    session lock in server memory (nothing written, nothing survives a
 *    restart, no queue one can inspect);
 *  - the classic "locks table": INSERT ... ON CONFLICT DO NOTHING + DELETE,
 *    two autocommit round trips, each a committed (WAL-flushed) write:
 *    the durable floor;
 *  - with --clients N: N processes, each with its own connection and
 *    row, run the locks-table cycle at once (the floor of N lockers on N
 *    files through one daemon); with SCHEMA too, then N processes, each
 *    with its own lease and resource, call dlockfs's lock() + unlock()
 *    (the same floor with our SQL: what is left is the daemon's);
 *  - a bare handoff: two processes, each with its own connection
 *    LISTENing on its own channel, pass one locks-table row back and
 *    forth: one autocommit statement moves the row to the other and
 *    NOTIFYs it (delivered at the durable commit), the other waits for
 *    the notification and hands the row back.  The floor of any
 *    cross-host handoff that tells the next holder only after the grant
 *    is durable, without FUSE or a daemon;
 *  - with SCHEMA: dlockfs's own lock() + release() functions called
 *    directly (the server's share of a dlockfs lock + unlock).
 * Every statement is prepared once.  Prints cycles/s and p50/p99 per
 * cycle.  A measuring program, not a test.
 *
 * usage: pgfloor [--seconds S] [--iters N] [--clients N] CONNINFO [SCHEMA]
 */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "clients.h"

static PGconn *conn;

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

static void report(const char *what, uint64_t *lat, size_t n, uint64_t ns)
{
	qsort(lat, n, sizeof(*lat), cmp_u64);
	printf("  %-40s %8.0f /s  p50 %8.2f us  p99 %8.2f us  (%zu)\n", what,
	       (double)n * 1e9 / (double)(ns ? ns : 1), pct_us(lat, n, 50),
	       pct_us(lat, n, 99), n);
}

/* run @sql once (no parameters); exits on an error */
static void run(const char *sql)
{
	PGresult *r = PQexec(conn, sql);

	if (PQresultStatus(r) != PGRES_COMMAND_OK &&
	    PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "pgfloor: %s: %s", sql,
			PQresultErrorMessage(r));
		exit(1);
	}
	PQclear(r);
}

static void prepare(const char *name, const char *sql)
{
	PGresult *r = PQprepare(conn, name, sql, 0, NULL);

	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "pgfloor: prepare %s: %s", sql,
			PQresultErrorMessage(r));
		exit(1);
	}
	PQclear(r);
}

/* a lease of dlockfs's SCHEMA for host @host, its id in @lease; exits on
 * an error */
static void lease_reg(const char *schema, const char *host, char *lease,
		      size_t len)
{
	char sql[256];
	PGresult *r;

	snprintf(sql, sizeof(sql),
		 "SELECT %.64s.reg('%.64s', %d, '00000000000000ff', 600000, "
		 "0)",
		 schema, host, (int)getpid());
	r = PQexec(conn, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "pgfloor: %s", PQresultErrorMessage(r));
		exit(1);
	}
	snprintf(lease, len, "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
}

static void lease_drop(const char *schema, const char *lease)
{
	char sql[128];

	snprintf(sql, sizeof(sql), "SELECT %.64s.drop_lease(%.32s)", schema,
		 lease);
	run(sql);
}

/* run prepared @name with @n text parameters; exits on an error */
static void exec(const char *name, int n, const char *const *v)
{
	PGresult *r = PQexecPrepared(conn, name, n, v, NULL, NULL, 0);

	if (PQresultStatus(r) != PGRES_COMMAND_OK &&
	    PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "pgfloor: %s: %s", name,
			PQresultErrorMessage(r));
		exit(1);
	}
	PQclear(r);
}

/* time @n_stmts prepared statements per cycle */
static void bench(const char *what, double seconds, size_t iters, uint64_t *lat,
		  const char *const *names, int nstmts, const int *nparams,
		  const char *const *const *params)
{
	uint64_t start = now_ns(), t0;
	size_t n;

	for (n = 0; n < iters && now_ns() - start < seconds * 1e9; n++) {
		t0 = now_ns();
		for (int i = 0; i < nstmts; i++)
			exec(names[i], nparams[i], params[i]);
		lat[n] = now_ns() - t0;
	}
	report(what, lat, n, now_ns() - start);
}

struct client_arg {
	const char *info; /* the conninfo */
	double seconds;
	size_t iters;
	const char *schema; /* dclient_run(): dlockfs's schema */
};

/* one --clients process: its own connection and row, the locks-table
 * cycle until the time is up */
static uint64_t client_run(unsigned i, void *arg)
{
	const struct client_arg *a = arg;
	char res[64], owner[32];
	const char *v[] = { res, owner };
	uint64_t n, start = now_ns();

	/* the parent's connection is left alone: never used here */
	conn = PQconnectdb(a->info);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pgfloor: %s", PQerrorMessage(conn));
		return UINT64_MAX;
	}
	snprintf(res, sizeof(res), "pgfloor-%d-%u", (int)getppid(), i);
	snprintf(owner, sizeof(owner), "%d", (int)getpid());
	prepare("tins", "INSERT INTO pgfloor_locks (res, owner) "
			"VALUES ($1, $2) ON CONFLICT DO NOTHING");
	prepare("tdel", "DELETE FROM pgfloor_locks WHERE res = $1 "
			"AND owner = $2");
	for (n = 0; n < a->iters && now_ns() - start < a->seconds * 1e9; n++) {
		exec("tins", 2, v);
		exec("tdel", 2, v);
	}
	PQfinish(conn);
	return n;
}

/* one --clients process with SCHEMA: its own connection, lease and
 * resource, dlockfs's lock() + unlock() (what a daemon's fcntl
 * lock+unlock sends) until the time is up */
static uint64_t dclient_run(unsigned i, void *arg)
{
	const struct client_arg *a = arg;
	char res[64], lease[32], sql[256];
	const char *v[] = { lease, res };
	uint64_t n, start;

	conn = PQconnectdb(a->info);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pgfloor: %s", PQerrorMessage(conn));
		return UINT64_MAX;
	}
	snprintf(res, sizeof(res), "pgfloor-%d-%u", (int)getppid(), i);
	lease_reg(a->schema, res, lease, sizeof(lease));
	snprintf(sql, sizeof(sql),
		 "SELECT r, token FROM %.64s.lock($1, $2::bytea, 1::smallint, "
		 "2::smallint, 0, 18446744073709551615, 1, 1, 1)",
		 a->schema);
	prepare("dlock", sql);
	snprintf(sql, sizeof(sql),
		 "SELECT %.64s.unlock($1, $2::bytea, 1::smallint, 0, "
		 "18446744073709551615, 1, NULL)",
		 a->schema);
	prepare("dunlock", sql);
	start = now_ns();
	for (n = 0; n < a->iters && now_ns() - start < a->seconds * 1e9; n++) {
		exec("dlock", 2, v);
		exec("dunlock", 2, v);
	}
	lease_drop(a->schema, lease);
	PQfinish(conn);
	return n;
}

/* wait (at most 5 s) for one notification on conn; 0 or -1 */
static int wait_notify(void)
{
	for (;;) {
		struct pollfd p = { .fd = PQsocket(conn), .events = POLLIN };
		PGnotify *n = PQnotifies(conn);

		if (n) {
			PQfreemem(n);
			return 0;
		}
		if (poll(&p, 1, 5000) != 1 || !PQconsumeInput(conn))
			return -1;
	}
}

/* hand the row to @to (then NOTIFYed), on conn; exits on an error */
static void hand(const char *res, const char *to)
{
	const char *v[] = { res, to };

	exec("hand", 2, v);
}

static void handoff_prepare(const char *me)
{
	char sql[64];

	snprintf(sql, sizeof(sql), "LISTEN pgfloor_%s", me);
	run(sql);
	prepare("hand", "WITH u AS (UPDATE pgfloor_locks SET owner = $2 "
			"WHERE res = $1 RETURNING owner) "
			"SELECT pg_notify('pgfloor_' || owner, '') FROM u");
}

/*
 * The bare handoff: a child on its own connection hands the row back each
 * time it gets it; we time the round trip (two handoffs).
 */
static void handoff_bench(const char *info, const char *res, double seconds,
			  size_t iters, uint64_t *lat)
{
	uint64_t start, t0;
	size_t n;
	pid_t child;

	run("INSERT INTO pgfloor_locks (res, owner) VALUES ('hand', 'a')");
	handoff_prepare("a");
	fflush(NULL);
	child = fork();
	if (child < 0) {
		perror("pgfloor: fork");
		exit(1);
	}
	if (child == 0) {
		conn = PQconnectdb(info); /* the parent's is left alone */
		if (PQstatus(conn) != CONNECTION_OK)
			_exit(1);
		handoff_prepare("b");
		hand(res, "a"); /* ready: the first round trip starts */
		while (wait_notify() == 0)
			hand(res, "a");
		_exit(0);
	}
	if (wait_notify() < 0) {
		fprintf(stderr, "pgfloor: the handoff partner did not start\n");
		exit(1);
	}
	start = now_ns();
	for (n = 0; n < iters && now_ns() - start < seconds * 1e9; n++) {
		t0 = now_ns();
		hand(res, "b");
		if (wait_notify() < 0) {
			fprintf(stderr, "pgfloor: no handoff back\n");
			exit(1);
		}
		lat[n] = (now_ns() - t0) / 2;
	}
	report("bare handoff via NOTIFY, 2 connections", lat, n,
	       (now_ns() - start) / 2);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "seconds", required_argument, NULL, 's' },
		{ "iters", required_argument, NULL, 'n' },
		{ "clients", required_argument, NULL, 'c' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned nclients = 0;
	double seconds = 3;
	size_t iters = 100000;
	char key[32], res[64], sql[512], lease[32];
	const char *schema = NULL;
	uint64_t *lat;
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
	if (argc - optind < 1 || argc - optind > 2 || seconds <= 0 ||
	    iters == 0 || nclients > 64)
		goto usage;
	if (argc - optind == 2)
		schema = argv[optind + 1];
	conn = PQconnectdb(argv[optind]);
	if (PQstatus(conn) != CONNECTION_OK) {
		fprintf(stderr, "pgfloor: %s", PQerrorMessage(conn));
		return 1;
	}
	lat = calloc(iters, sizeof(*lat));
	if (!lat)
		return 1;
	printf("bare libpq client, PostgreSQL %s, synchronous_commit=%s\n",
	       PQparameterStatus(conn, "server_version"),
	       PQgetvalue(PQexec(conn, "SHOW synchronous_commit"), 0, 0));
	snprintf(key, sizeof(key), "%d", (int)getpid());
	snprintf(res, sizeof(res), "pgfloor-%d", (int)getpid());

	prepare("one", "SELECT 1");
	{
		const char *names[] = { "one" };
		const int np[] = { 0 };
		const char *const *p[] = { NULL };

		bench("SELECT 1 (one round trip)", seconds, iters, lat, names,
		      1, np, p);
	}

	prepare("alock", "SELECT pg_advisory_lock($1::bigint)");
	prepare("aunlock", "SELECT pg_advisory_unlock($1::bigint)");
	{
		const char *names[] = { "alock", "aunlock" };
		const int np[] = { 1, 1 };
		const char *k[] = { key };
		const char *const *p[] = { k, k };

		bench("pg_advisory_lock + unlock (cycle)", seconds, iters, lat,
		      names, 2, np, p);
	}

	run("CREATE TABLE IF NOT EXISTS pgfloor_locks (res text PRIMARY KEY, "
	    "owner text NOT NULL, since timestamptz NOT NULL DEFAULT now())");
	prepare("tins", "INSERT INTO pgfloor_locks (res, owner) VALUES ($1, "
			"$2) ON CONFLICT DO NOTHING");
	prepare("tdel", "DELETE FROM pgfloor_locks WHERE res = $1 AND "
			"owner = $2");
	{
		const char *names[] = { "tins", "tdel" };
		const int np[] = { 2, 2 };
		const char *v[] = { res, key };
		const char *const *p[] = { v, v };

		bench("locks table INSERT ON CONFLICT + DELETE", seconds, iters,
		      lat, names, 2, np, p);
	}
	if (nclients) {
		struct client_arg ca = { argv[optind], seconds, iters, schema };
		char what[64];

		snprintf(what, sizeof(what),
			 "%u clients, locks table, a row each", nclients);
		if (bench_clients(what, nclients, client_run, &ca))
			return 1;
		snprintf(what, sizeof(what),
			 "%u clients, lock() + unlock(), a file each",
			 nclients);
		if (schema && bench_clients(what, nclients, dclient_run, &ca))
			return 1;
	}
	handoff_bench(argv[optind], "hand", seconds, iters, lat);
	run("DROP TABLE pgfloor_locks");

	if (schema) {
		lease_reg(schema, "pgfloor", lease, sizeof(lease));
		snprintf(sql, sizeof(sql),
			 "SELECT r, token FROM %.64s.lock($1, $2::bytea, "
			 "0::smallint, 2::smallint, 0, 18446744073709551615, "
			 "1, 1, NULL)",
			 schema);
		prepare("dlock", sql);
		snprintf(sql, sizeof(sql),
			 "SELECT %.64s.release($1, $2::bytea, 0::smallint, 1, "
			 "NULL)",
			 schema);
		prepare("drel", sql);
		{
			const char *names[] = { "dlock", "drel" };
			const int np[] = { 2, 2 };
			const char *v[] = { lease, res };
			const char *const *p[] = { v, v };

			bench("dlockfs lock() + release() in SQL", seconds,
			      iters, lat, names, 2, np, p);
		}
		lease_drop(schema, lease);
	}
	free(lat);
	PQfinish(conn);
	return 0;
usage:
	fprintf(stderr, "usage: pgfloor [--seconds S] [--iters N] "
			"[--clients N (at most 64)] CONNINFO [SCHEMA]\n");
	return 2;
}

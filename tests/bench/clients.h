/*
 * clients.h - the --clients part of the floor programs: N forked clients
 * run the same cycle at once, each on a connection and a key of its own,
 * and their cycles are added up (the floor of N processes on N files).
 * A child reports its count through a pipe; the parent times the whole.
 */
#ifndef DL_BENCH_CLIENTS_H
#define DL_BENCH_CLIENTS_H

#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* client @i's cycles, or UINT64_MAX when it failed (after a message) */
typedef uint64_t (*bench_client_fn)(unsigned i, void *arg);

static inline uint64_t bench_clients_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Run @n clients at once and print "  WHAT  RATE /s  (CYCLES cycles)".
 * Returns 0, or 1 when a client failed.
 */
static inline int bench_clients(const char *what, unsigned n,
				bench_client_fn fn, void *arg)
{
	uint64_t total = 0, c, start, ns;
	int p[2], status, rc = 0;

	fflush(stdout);
	if (pipe(p) < 0)
		return 1;
	start = bench_clients_ns();
	for (unsigned i = 0; i < n; i++) {
		pid_t pid = fork();

		if (pid < 0)
			return 1;
		if (pid == 0) {
			close(p[0]);
			c = fn(i, arg);
			_exit(c != UINT64_MAX && write(p[1], &c, sizeof(c)) ==
							 (ssize_t)sizeof(c)
				      ? 0
				      : 1);
		}
	}
	close(p[1]);
	while (read(p[0], &c, sizeof(c)) == (ssize_t)sizeof(c))
		total += c;
	close(p[0]);
	ns = bench_clients_ns() - start;
	while (wait(&status) > 0)
		if (!WIFEXITED(status) || WEXITSTATUS(status))
			rc = 1;
	printf("  %-40s %8.0f /s  (%llu cycles)\n", what,
	       (double)total * 1e9 / (double)(ns ? ns : 1),
	       (unsigned long long)total);
	return rc;
}

#endif /* DL_BENCH_CLIENTS_H */

/*
 * fault.c - test-only fault injection of the Redis backend.
 *
 * Compiled in always, inert unless the environment variable
 * DLOCKFS_TEST_REDIS_FAULT is set when the backend is opened: a
 * comma-separated list of POINT:N, used by
 * tests/integration/redis/redis_be.c to hit races at will:
 *   delay_lock:MS     sleep after a lock request's wait is registered,
 *                     before the request is sent
 *   delay_cancel:MS   sleep before a cancel is sent
 *   delay_deliver:MS  the subscriber sleeps before delivering a message,
 *                     and the safety re-check leaves grants to it
 *   fail_unlock:N, fail_release:N, fail_cancel:N
 *                     the next N scripts of that op fail as if the node
 *                     were unreachable (nothing sent)
 *   lose_lock:N       the next N lock scripts run on the server, but
 *                     their answers are lost as if the connection broke
 *                     before they arrived (the request is in doubt)
 *   nomem:N           the Nth bookkeeping allocation after open fails
 *
 * Owns: the parsing of that variable into struct redis_fault and the
 * primitives the fault points call.  Does not: decide where the points
 * are; their callers do (ops.c and redlock.c: delay_lock, delay_cancel;
 * sub.c and keeper.c: delay_deliver; conn.c's redis_node_script(): the
 * fail_* and lose_* counters; table.c's allocators: nomem).
 *
 * Locking: none of its own.  The delays are written by redis_open()
 * before any thread starts and only read afterwards; the counters are
 * atomics that any thread may consume.  redis_fault_sleep() is only
 * called with no mutex held; redis_fault_calloc() may be called with
 * rb->mutex held (redis_job_add()).
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/redis/internal.h"
#include "backend/util/log.h"

void redis_fault_parse(struct redis_fault *f)
{
	const char *s = getenv("DLOCKFS_TEST_REDIS_FAULT");

	while (s && *s) {
		char name[32];
		int v, len = 0;

		if (sscanf(s, "%31[a-z_]:%d%n", name, &v, &len) < 2 || !len)
			break;
		if (strcmp(name, "delay_lock") == 0)
			f->delay_lock = v;
		else if (strcmp(name, "delay_cancel") == 0)
			f->delay_cancel = v;
		else if (strcmp(name, "delay_deliver") == 0)
			f->delay_deliver = v;
		else if (strcmp(name, "fail_unlock") == 0)
			atomic_store(&f->fail_unlock, v);
		else if (strcmp(name, "fail_release") == 0)
			atomic_store(&f->fail_release, v);
		else if (strcmp(name, "fail_cancel") == 0)
			atomic_store(&f->fail_cancel, v);
		else if (strcmp(name, "lose_lock") == 0)
			atomic_store(&f->lose_lock, v);
		else if (strcmp(name, "nomem") == 0)
			atomic_store(&f->nomem, v);
		dl_log(DL_LOG_WARNING, "redis: test fault %s:%d", name, v);
		s += len;
		if (*s == ',')
			s++;
	}
}

void redis_fault_sleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	if (ms > 0)
		nanosleep(&ts, NULL);
}

/* true when a fault counter was armed and this call consumes it */
static bool redis_fault_take(atomic_int *n)
{
	int v = atomic_load(n);

	while (v > 0)
		if (atomic_compare_exchange_weak(n, &v, v - 1))
			return true;
	return false;
}

bool redis_fault_fail(struct redis_fault *f, const char *op)
{
	if (strcmp(op, "unlock") == 0)
		return redis_fault_take(&f->fail_unlock);
	if (strcmp(op, "release") == 0)
		return redis_fault_take(&f->fail_release);
	if (strcmp(op, "cancel") == 0)
		return redis_fault_take(&f->fail_cancel);
	return false;
}

/* true when @op's answer is to be lost (its script did run) */
bool redis_fault_lose(struct redis_fault *f, const char *op)
{
	return strcmp(op, "lock") == 0 && redis_fault_take(&f->lose_lock);
}

/* calloc of bookkeeping, failing once where nomem:N says */
void *redis_fault_calloc(struct redis_fault *f, size_t n, size_t size)
{
	if (atomic_load(&f->nomem) > 0 && atomic_fetch_sub(&f->nomem, 1) == 1)
		return NULL;
	return calloc(n, size);
}

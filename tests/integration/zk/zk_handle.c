/*
 * zk_handle.c - the ZooKeeper drivers' own client session (zk_handle.h).
 *
 * The session watcher only records whether the session is connected, under
 * conn.mutex, and broadcasts conn.cond; the open waits on it, bounded.
 */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "tests/integration/be_harness.h"
#include "tests/integration/zk/zk_handle.h"

static struct {
	pthread_mutex_t mutex;
	pthread_cond_t cond;
	bool connected;
} conn = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false };

static void conn_watcher(zhandle_t *z, int type, int state, const char *path,
			 void *ctx)
{
	if (type != ZOO_SESSION_EVENT)
		return;
	pthread_mutex_lock(&conn.mutex);
	conn.connected = state == ZOO_CONNECTED_STATE;
	pthread_cond_broadcast(&conn.cond);
	pthread_mutex_unlock(&conn.mutex);
}

zhandle_t *zk_handle_open(const char *hosts)
{
	struct timespec ts;
	zhandle_t *zh;
	bool up;

	zh = zookeeper_init(hosts, conn_watcher, 10000, NULL, NULL, 0);
	if (!zh)
		be_fail("zookeeper_init %s: %s", hosts, strerror(errno));
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += BE_BOUND_MS / 1000;
	pthread_mutex_lock(&conn.mutex);
	while (!conn.connected &&
	       pthread_cond_timedwait(&conn.cond, &conn.mutex, &ts) == 0)
		;
	up = conn.connected;
	pthread_mutex_unlock(&conn.mutex);
	if (!up)
		be_fail("no connection to %s within %d ms", hosts, BE_BOUND_MS);
	return zh;
}

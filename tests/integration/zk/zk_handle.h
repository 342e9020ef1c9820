/*
 * zk_handle.h - the ZooKeeper drivers' own client session (zk_poke.c,
 * zk_version.c), apart from the backend's: it reads the tree the backend
 * wrote, to check it from outside.  Nothing here is the backend's code.
 */
#ifndef ZK_HANDLE_H
#define ZK_HANDLE_H

#ifndef THREADED
#define THREADED 1
#endif
#include <zookeeper/zookeeper.h>

/* a session with @hosts, connected within BE_BOUND_MS, or the test fails */
zhandle_t *zk_handle_open(const char *hosts);

#endif /* ZK_HANDLE_H */

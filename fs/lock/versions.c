/*
 * versions.c - the lock manager's door to the store's file versions
 * (optimistic concurrency, README "Optimistic updates").
 *
 * A version is not a lock: the manager keeps nothing of it and decides
 * nothing about it; it only passes the call on, so that front ends reach
 * the store through the manager alone.
 */
#include <string.h>

#include "backend/util/log.h"
#include "fs/lock/internal.h"

int lockmgr_version(struct lockmgr *lm, const char *resource,
		    struct dl_version *out)
{
	return dl_backend_version(lm->be, resource, out);
}

int lockmgr_bump(struct lockmgr *lm, const char *resource,
		 struct dl_version *out)
{
	int ret = dl_backend_bump(lm->be, resource, out);

	if (ret < 0 && ret != -EOPNOTSUPP)
		dl_log(DL_LOG_WARNING, "version of %s not bumped: %s", resource,
		       strerror(-ret));
	return ret;
}

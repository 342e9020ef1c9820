/*
 * cache.h - same-host lock caching over a remote backend (cache.c).
 *
 * dl_backend_open() wraps a remote backend in it for cache=on and for
 * cache=off (shared rights only, see cache.c): the daemon sees one more
 * struct dl_backend, with the same contract.
 */
#ifndef DL_CACHE_H
#define DL_CACHE_H

#include "backend/backend.h"

/*
 * dl_cache_open() - open @remote_ops with @conf under a cache that talks to
 * the caller through @up.  0, or a negative errno with a reason in @err
 * (-EINVAL: the backend cannot poke, so it cannot be cached).
 */
int dl_cache_open(const struct dl_backend_conf *conf,
		  const struct dl_backend_ops *remote_ops,
		  const struct dl_backend_cb *up, struct dl_backend **out,
		  char *err, size_t errlen);

#endif /* DL_CACHE_H */

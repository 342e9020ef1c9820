/*
 * backend.c - the registry that maps a URI scheme to a backend's ops table,
 * plus the helpers every backend shares (URI redaction, clocks).
 */
#include "backend/backend.h"
#include "backend/cache.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static const struct dl_backend_ops *const registry[] = {
	&dl_local_ops, &dl_redis_ops, &dl_zk_ops, &dl_pg_ops, &dl_pg_alias_ops,
};

/* length of the scheme of @uri ("local" in "local:"), or 0 if malformed */
static size_t uri_scheme_len(const char *uri)
{
	size_t i = 0;

	while ((uri[i] >= 'a' && uri[i] <= 'z') ||
	       (uri[i] >= '0' && uri[i] <= '9') ||
	       (i > 0 && (uri[i] == '+' || uri[i] == '-' || uri[i] == '.')))
		i++;
	return uri[i] == ':' ? i : 0;
}

const struct dl_backend_ops *dl_backend_find(const char *uri)
{
	size_t n = uri_scheme_len(uri);

	if (n == 0)
		return NULL;
	for (size_t i = 0; i < sizeof(registry) / sizeof(registry[0]); i++)
		if (strlen(registry[i]->scheme) == n &&
		    strncmp(registry[i]->scheme, uri, n) == 0)
			return registry[i];
	return NULL;
}

int dl_backend_check_uri(const char *uri, char *err, size_t errlen)
{
	const struct dl_backend_ops *ops;
	size_t n = uri_scheme_len(uri);

	if (n == 0) {
		snprintf(err, errlen,
			 "malformed backend URI (expected SCHEME:..., e.g. "
			 "local:)");
		return -EINVAL;
	}
	ops = dl_backend_find(uri);
	if (!ops) {
		snprintf(err, errlen,
			 "unknown backend scheme '%.*s' (known: local, redis, "
			 "zk, postgresql)",
			 (int)n, uri);
		return -EINVAL;
	}
	return ops->check_uri(uri + n + 1, err, errlen);
}

int dl_backend_open(const struct dl_backend_conf *conf,
		    const struct dl_backend_cb *cb, struct dl_backend **out,
		    char *err, size_t errlen)
{
	const struct dl_backend_ops *ops;
	int ret = dl_backend_check_uri(conf->uri, err, errlen);

	if (ret < 0)
		return ret;
	ops = dl_backend_find(conf->uri);
	/*
	 * Only a shared store has something to cache: on local: every lock
	 * is decided on this host already, and cache=on changes nothing.
	 * A shared store that cannot poke refuses cache=on (dl_cache_open).
	 */
	if (ops->shared && (conf->cache == DL_CACHE_ON ||
			    (conf->cache == DL_CACHE_AWARE && ops->poke)))
		return dl_cache_open(conf, ops, cb, out, err, errlen);
	return ops->open(conf, cb, out, err, errlen);
}

void dl_uri_redact(const char *uri, char *buf, size_t len)
{
	const char *auth = strstr(uri, "://");
	const char *at, *colon, *slash;

	if (len == 0)
		return;
	if (!auth) {
		snprintf(buf, len, "%s", uri);
		return;
	}
	auth += 3;
	slash = strchr(auth, '/');
	at = memchr(auth, '@', slash ? (size_t)(slash - auth) : strlen(auth));
	colon = at ? memchr(auth, ':', (size_t)(at - auth)) : NULL;
	if (!colon) {
		snprintf(buf, len, "%s", uri);
		return;
	}
	snprintf(buf, len, "%.*s:***%s", (int)(colon - uri), uri, at);
}

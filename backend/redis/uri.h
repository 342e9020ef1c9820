/*
 * uri.h - parsing of "redis://" backend URIs.
 *
 *   redis://[USER@]HOST:PORT[,HOST:PORT...][/PREFIX][?KEY=N&...]
 *
 * HOST is a name, an IPv4 address or a bracketed IPv6 address
 * ("[::1]:6379"); PORT defaults to 6379.  Several addresses are
 * independent nodes (Redlock).  PREFIX ([A-Za-z0-9_.-], default "dlock")
 * namespaces the keys; it holds no ':' so "PREFIX:kind:resource" can never
 * be read two ways.  Query keys: ttl_ms (lease, default 15000, >= 1000),
 * connect_timeout_ms (default 2000, or ttl_ms / 4 if smaller; below
 * ttl_ms / 2), lock_delay_ms (default ttl_ms / 3).
 *
 * Pure: no I/O, no allocation, no state: any thread may call it.  A
 * password in the URI is refused: it would show in ps(1) and in the mount
 * table; it belongs in the config file.
 */
#ifndef DL_REDIS_URI_H
#define DL_REDIS_URI_H

#include <stddef.h>

#define REDIS_URI_MAX_NODES  7
#define REDIS_URI_HOST_MAX   256
#define REDIS_URI_USER_MAX   128
#define REDIS_URI_PREFIX_MAX 64

struct redis_uri_node {
	char host[REDIS_URI_HOST_MAX]; /* without brackets */
	int port;
};

struct redis_uri {
	char user[REDIS_URI_USER_MAX]; /* "" when absent */
	struct redis_uri_node nodes[REDIS_URI_MAX_NODES];
	size_t nnodes;
	char prefix[REDIS_URI_PREFIX_MAX];
	int ttl_ms;
	int connect_timeout_ms;
	int lock_delay_ms;
};

/*
 * redis_uri_parse() - parse @rest, the part of the URI after "redis:".
 * Returns 0 with *out filled, or -EINVAL with a one-line reason in @err
 * (which never quotes a password).
 */
int redis_uri_parse(const char *rest, struct redis_uri *out, char *err,
		    size_t errlen);

#endif /* DL_REDIS_URI_H */

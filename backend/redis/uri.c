/*
 * uri.c - strict parsing of "redis://" URIs (see uri.h).
 *
 * Every refusal names one reason.  Numbers are decimal digits only, in
 * range; unknown or repeated query keys, empty hosts, bad ports, duplicate
 * nodes and passwords are refused rather than guessed at.
 *
 * Owns: the URI grammar and its defaults.  Does not: connect, read the
 * config file (user and password from there are merged by open.c), or
 * allocate.  Locking: none needed - pure, no state; any thread may call
 * it (the unit test links it alone).
 */
#include "backend/redis/uri.h"
#include "backend/util/uri.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define REDIS_DEFAULT_PORT 6379

static int uri_fail(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "malformed redis URI: %s", msg);
	return -EINVAL;
}

/* one "HOST[:PORT]" of s[0..len) */
static int uri_node(const char *s, size_t len, struct redis_uri_node *n,
		    char *err, size_t errlen)
{
	struct dl_uri_hostport hp;
	const char *why;

	if (dl_uri_hostport(s, len, REDIS_DEFAULT_PORT, &hp, &why) < 0)
		return uri_fail(err, errlen, why);
	for (size_t i = 0; i < hp.hlen && !hp.ipv6; i++)
		if (!dl_uri_host_char(hp.host[i]))
			return uri_fail(err, errlen,
					"bad character in host name");
	if (hp.hlen >= sizeof(n->host))
		return uri_fail(err, errlen, "host name too long");
	memcpy(n->host, hp.host, hp.hlen);
	n->host[hp.hlen] = '\0';
	n->port = hp.port;
	return 0;
}

static int uri_query(const char *q, struct redis_uri *u, char *err,
		     size_t errlen)
{
	static const struct {
		const char *key;
		long min, max;
	} keys[] = {
		{ "ttl_ms", 1000, 3600000 },
		{ "connect_timeout_ms", 100, 60000 },
		{ "lock_delay_ms", 0, 600000 },
	};
	bool seen[3] = { false };
	bool delay_set = false;

	while (*q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		const char *eq = memchr(q, '=', len);
		size_t klen, k;
		long v;

		if (!eq)
			return uri_fail(err, errlen, "query item without '='");
		klen = (size_t)(eq - q);
		for (k = 0; k < 3; k++)
			if (strlen(keys[k].key) == klen &&
			    strncmp(keys[k].key, q, klen) == 0)
				break;
		if (k == 3) {
			char msg[160];

			snprintf(msg, sizeof(msg),
				 "unknown query key '%.*s' "
				 "(known: ttl_ms, connect_timeout_ms, "
				 "lock_delay_ms)",
				 (int)(klen < 40 ? klen : 40), q);
			return uri_fail(err, errlen, msg);
		}
		if (seen[k]) {
			char msg[80];

			snprintf(msg, sizeof(msg), "query key '%s' given twice",
				 keys[k].key);
			return uri_fail(err, errlen, msg);
		}
		seen[k] = true;
		v = dl_uri_number(eq + 1, len - klen - 1, keys[k].min,
				  keys[k].max);
		if (v < 0) {
			char msg[120];

			snprintf(msg, sizeof(msg),
				 "%s must be a number from %ld to %ld",
				 keys[k].key, keys[k].min, keys[k].max);
			return uri_fail(err, errlen, msg);
		}
		if (k == 0)
			u->ttl_ms = (int)v;
		else if (k == 1)
			u->connect_timeout_ms = (int)v;
		else {
			u->lock_delay_ms = (int)v;
			delay_set = true;
		}
		if (!amp)
			break;
		q = amp + 1;
		if (!*q)
			return uri_fail(err, errlen, "trailing '&'");
	}
	if (!delay_set)
		u->lock_delay_ms = u->ttl_ms / 3;
	/* a short lease needs a short connect timeout by default */
	if (!seen[1] && u->connect_timeout_ms > u->ttl_ms / 4)
		u->connect_timeout_ms = u->ttl_ms / 4;
	return 0;
}

int redis_uri_parse(const char *rest, struct redis_uri *out, char *err,
		    size_t errlen)
{
	struct redis_uri u;
	const char *auth, *end, *at, *p;
	int ret;

	memset(&u, 0, sizeof(u));
	u.ttl_ms = 15000;
	u.connect_timeout_ms = 2000;
	snprintf(u.prefix, sizeof(u.prefix), "dlock");

	if (strncmp(rest, "//", 2) != 0)
		return uri_fail(err, errlen, "expected redis://HOST:PORT");
	auth = rest + 2;
	end = auth + strcspn(auth, "/?");
	at = memchr(auth, '@', (size_t)(end - auth));
	if (at) {
		size_t ulen = (size_t)(at - auth);

		if (memchr(auth, ':', ulen))
			return uri_fail(err, errlen,
					"a password in the URI is refused: "
					"passwords go "
					"in the config file (redis_password)");
		if (ulen == 0)
			return uri_fail(err, errlen,
					"empty user name before '@'");
		if (ulen >= sizeof(u.user))
			return uri_fail(err, errlen, "user name too long");
		for (size_t i = 0; i < ulen; i++)
			if (!dl_uri_host_char(auth[i]) && auth[i] != '@')
				return uri_fail(err, errlen,
						"bad character in user name");
		memcpy(u.user, auth, ulen);
		auth = at + 1;
	}
	if (auth == end)
		return uri_fail(err, errlen, "empty host");
	for (p = auth; p <= end;) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end;

		if (u.nnodes == REDIS_URI_MAX_NODES)
			return uri_fail(err, errlen,
					"too many nodes (at most 7)");
		ret = uri_node(p, (size_t)(stop - p), &u.nodes[u.nnodes], err,
			       errlen);
		if (ret < 0)
			return ret;
		for (size_t i = 0; i < u.nnodes; i++)
			if (u.nodes[i].port == u.nodes[u.nnodes].port &&
			    strcmp(u.nodes[i].host, u.nodes[u.nnodes].host) ==
				    0)
				return uri_fail(err, errlen,
						"the same node is listed "
						"twice");
		u.nnodes++;
		if (!comma)
			break;
		p = comma + 1;
	}
	p = end;
	if (*p == '/') {
		size_t len = strcspn(++p, "?");

		if (len) {
			if (len >= sizeof(u.prefix))
				return uri_fail(err, errlen,
						"prefix too long (at most 63)");
			for (size_t i = 0; i < len; i++)
				if (!dl_uri_host_char(p[i]))
					return uri_fail(err, errlen,
							"the prefix may hold "
							"only letters, digits, "
							"'-', '.' and '_'");
			memcpy(u.prefix, p, len);
			u.prefix[len] = '\0';
		}
		p += len;
	}
	if (*p == '?') {
		ret = uri_query(p + 1, &u, err, errlen);
		if (ret < 0)
			return ret;
	} else {
		u.lock_delay_ms = u.ttl_ms / 3;
	}
	if (u.connect_timeout_ms >= u.ttl_ms / 2)
		return uri_fail(err, errlen,
				"connect_timeout_ms must be below ttl_ms / 2");
	*out = u;
	return 0;
}

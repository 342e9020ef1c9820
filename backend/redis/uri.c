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

/* decimal [min, max] from s[0..len); -1 if not */
static long uri_number(const char *s, size_t len, long min, long max)
{
	long v = 0;

	if (len == 0 || len > 9)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v < min || v > max ? -1 : v;
}

static bool host_char_ok(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

/* one "HOST[:PORT]" of s[0..len) */
static int uri_node(const char *s, size_t len, struct redis_uri_node *n,
		    char *err, size_t errlen)
{
	const char *host, *port = NULL;
	size_t hlen, plen = 0;

	if (len == 0)
		return uri_fail(err, errlen, "empty host");
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);

		if (!close)
			return uri_fail(err, errlen,
					"unclosed '[' in IPv6 address");
		host = s + 1;
		hlen = (size_t)(close - host);
		for (size_t i = 0; i < hlen; i++)
			if (!(host_char_ok(host[i]) || host[i] == ':' ||
			      host[i] == '%'))
				return uri_fail(err, errlen,
						"bad character in IPv6 "
						"address");
		if (close + 1 < s + len) {
			if (close[1] != ':')
				return uri_fail(err, errlen,
						"expected ':' after ']'");
			port = close + 2;
			plen = (size_t)(s + len - port);
			if (plen == 0)
				return uri_fail(err, errlen, "empty port");
		}
	} else {
		const char *colon = memchr(s, ':', len);

		host = s;
		hlen = colon ? (size_t)(colon - s) : len;
		if (colon) {
			port = colon + 1;
			plen = (size_t)(s + len - port);
			if (memchr(port, ':', plen))
				return uri_fail(err, errlen,
						"an IPv6 address needs "
						"brackets: [::1]:6379");
			if (plen == 0)
				return uri_fail(err, errlen, "empty port");
		}
		for (size_t i = 0; i < hlen; i++)
			if (!host_char_ok(host[i]))
				return uri_fail(err, errlen,
						"bad character in host name");
	}
	if (hlen == 0)
		return uri_fail(err, errlen, "empty host");
	if (hlen >= sizeof(n->host))
		return uri_fail(err, errlen, "host name too long");
	memcpy(n->host, host, hlen);
	n->host[hlen] = '\0';
	n->port = REDIS_DEFAULT_PORT;
	if (port) {
		long p = uri_number(port, plen, 1, 65535);

		if (p < 0)
			return uri_fail(err, errlen, "bad port (1-65535)");
		n->port = (int)p;
	}
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
		v = uri_number(eq + 1, len - klen - 1, keys[k].min,
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
			if (!host_char_ok(auth[i]) && auth[i] != '@')
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
				if (!host_char_ok(p[i]))
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

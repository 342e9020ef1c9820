/*
 * uri.c - the zk:// URI: "zk://HOST:PORT[,HOST:PORT...]/CHROOT" with the
 * optional parameters session_timeout_ms=100..600000 (default 10000) and
 * lock_delay_ms=0..600000 (default a third of the session timeout).
 *
 * Owns: parsing and checking the URI (zk_uri_parse for open,
 * zk_check_uri for backend.h's check_uri), each refusal with a one-line
 * reason.  Does not: connect, create CHROOT (ops.c does), nor take
 * credentials - they go in the config file (zk_user, zk_password), and a
 * '@' in the host list is refused so that a password never lands in a
 * URI, a log line or a process list.
 *
 * Locking: none.  Pure (no I/O, no ZooKeeper, no shared state): callable
 * from any thread, before any backend exists.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/zk/internal.h"

#define ZK_DEFAULT_TIMEOUT_MS 10000

/* free what zk_uri_parse allocated */
void zk_uri_free(struct zk_uri *u)
{
	free(u->hosts);
	free(u->root);
}

/* parse "//HOST:PORT[,HOST:PORT...]/CHROOT[?PARAM=N[&PARAM=N]]", PARAM
 * session_timeout_ms or lock_delay_ms */
int zk_uri_parse(const char *rest, struct zk_uri *u, char *err, size_t errlen)
{
	const char *h, *slash, *q;
	size_t hl, rl;

	memset(u, 0, sizeof(*u));
	u->timeout_ms = ZK_DEFAULT_TIMEOUT_MS;
	u->lock_delay_ms = -1;
	if (strncmp(rest, "//", 2) != 0) {
		snprintf(err, errlen,
			 "malformed zk URI: expected "
			 "zk://HOST:PORT[,HOST:PORT...]/CHROOT");
		return -EINVAL;
	}
	h = rest + 2;
	slash = strchr(h, '/');
	if (!slash) {
		snprintf(err, errlen,
			 "malformed zk URI: a /CHROOT path is "
			 "required (e.g. zk://127.0.0.1:2181/dlock)");
		return -EINVAL;
	}
	hl = (size_t)(slash - h);
	if (hl == 0) {
		snprintf(err, errlen, "malformed zk URI: no HOST:PORT");
		return -EINVAL;
	}
	/* each host: non-empty name, ':' and a port 1..65535 */
	for (const char *p = h; p < slash;) {
		const char *comma = memchr(p, ',', (size_t)(slash - p));
		const char *e = comma ? comma : slash;
		const char *colon = NULL;
		char *end;
		long port;

		for (const char *c = p; c < e; c++) {
			if (*c == ':')
				colon = c;
			if (*c == '@' || *c == '?' || *c == ' ') {
				snprintf(err, errlen,
					 "malformed zk URI: bad "
					 "character '%c' in the host list "
					 "(credentials go in the config file: "
					 "zk_user, zk_password)",
					 *c);
				return -EINVAL;
			}
		}
		if (!colon || colon == p || colon + 1 == e) {
			snprintf(err, errlen,
				 "malformed zk URI: each server "
				 "must be HOST:PORT");
			return -EINVAL;
		}
		port = strtol(colon + 1, &end, 10);
		if (end != e || port < 1 || port > 65535) {
			snprintf(err, errlen,
				 "malformed zk URI: bad port "
				 "'%.*s'",
				 (int)(e - colon - 1), colon + 1);
			return -EINVAL;
		}
		p = comma ? comma + 1 : slash;
		if (comma && p == slash) {
			snprintf(err, errlen,
				 "malformed zk URI: empty server "
				 "in the host list");
			return -EINVAL;
		}
	}
	q = strchr(slash, '?');
	rl = q ? (size_t)(q - slash) : strlen(slash);
	if (rl < 2 || slash[rl - 1] == '/' || memmem(slash, rl, "//", 2) ||
	    rl >= ZK_ROOT_MAX - 2) {
		snprintf(err, errlen,
			 "malformed zk URI: CHROOT must be a "
			 "path like /dlock (no trailing or double '/')");
		return -EINVAL;
	}
	for (size_t i = 0; i < rl; i++) {
		unsigned char c = (unsigned char)slash[i];

		if (c < 0x21 || c > 0x7e) {
			snprintf(err, errlen,
				 "malformed zk URI: CHROOT holds "
				 "a blank or non-printable character");
			return -EINVAL;
		}
		if (c == '.' && slash[i - 1] == '/' &&
		    (i + 1 == rl || slash[i + 1] == '/' ||
		     (slash[i + 1] == '.' &&
		      (i + 2 == rl || slash[i + 2] == '/')))) {
			snprintf(err, errlen,
				 "malformed zk URI: CHROOT must "
				 "not hold '.' or '..' components");
			return -EINVAL;
		}
	}
	for (const char *v = q ? q + 1 : NULL; v;) {
		const char *amp = strchr(v, '&');
		size_t vl = amp ? (size_t)(amp - v) : strlen(v);
		char num[16], *end;
		int *dst;
		long t, lo, hi;

		if (vl > 19 && strncmp(v, "session_timeout_ms=", 19) == 0) {
			dst = &u->timeout_ms;
			v += 19, vl -= 19, lo = 100, hi = 600000;
		} else if (vl > 14 && strncmp(v, "lock_delay_ms=", 14) == 0) {
			dst = &u->lock_delay_ms;
			v += 14, vl -= 14, lo = 0, hi = 600000;
		} else {
			snprintf(err, errlen,
				 "malformed zk URI: unknown parameter '%.*s' "
				 "(known: session_timeout_ms=100..600000, "
				 "lock_delay_ms=0..600000)",
				 (int)vl, v);
			return -EINVAL;
		}
		snprintf(num, sizeof(num), "%.*s", (int)vl, v);
		errno = 0;
		t = strtol(num, &end, 10);
		if (errno || end == num || *end || vl >= sizeof(num) ||
		    t < lo || t > hi) {
			snprintf(err, errlen,
				 "malformed zk URI: %s must be %ld..%ld%s",
				 dst == &u->timeout_ms ? "session_timeout_ms"
						       : "lock_delay_ms",
				 lo, hi,
				 dst == &u->timeout_ms ? ""
						       : " (0: none; default: "
							 "a third of "
							 "session_timeout_ms)");
			return -EINVAL;
		}
		*dst = (int)t;
		v = amp ? amp + 1 : NULL;
	}
	if (u->lock_delay_ms < 0)
		u->lock_delay_ms = u->timeout_ms / 3;
	u->hosts = strndup(h, hl);
	u->root = strndup(slash, rl);
	if (!u->hosts || !u->root) {
		zk_uri_free(u);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* backend.h's check_uri: the URI parses (@rest: after "zk:") */
int zk_check_uri(const char *rest, char *err, size_t errlen)
{
	struct zk_uri u;
	int ret = zk_uri_parse(rest, &u, err, errlen);

	if (ret == 0)
		zk_uri_free(&u);
	return ret;
}

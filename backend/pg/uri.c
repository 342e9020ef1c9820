/*
 * uri.c - strict parsing of "postgresql://" URIs (see uri.h).
 *
 * Every refusal names one reason.  Numbers are decimal digits only, in
 * range; unknown or repeated query keys, empty hosts, bad ports, duplicate
 * hosts, bad schema names and passwords are refused rather than guessed
 * at.  What libpq would interpret (service files, options=...) is not
 * accepted here, so that the URI says everything the daemon does.
 */
#include "backend/pg/uri.h"
#include "backend/util/uri.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define PG_DEFAULT_PORT 5432

static int uri_fail(char *err, size_t errlen, const char *msg)
{
	snprintf(err, errlen, "malformed postgresql URI: %s", msg);
	return -EINVAL;
}

/*
 * A percent-encoded socket directory s[0..len) into @out: an absolute
 * path of printable characters without ',' (libpq's list separator).
 */
static int uri_socket_dir(const char *s, size_t len, char *out, size_t outlen,
			  char *err, size_t errlen)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return uri_fail(err, errlen,
						"truncated %-escape in socket "
						"directory");
			hi = dl_uri_hex(s[i + 1]);
			lo = dl_uri_hex(s[i + 2]);
			if (hi < 0 || lo < 0)
				return uri_fail(err, errlen,
						"bad %-escape in socket "
						"directory");
			c = (unsigned char)(hi * 16 + lo);
			i += 2;
		} else if (!dl_uri_host_char((char)c)) {
			return uri_fail(err, errlen,
					"bad character in socket directory "
					"(write '/' as %2F)");
		}
		if (c < 0x21 || c > 0x7e || c == ',' || c == '\\')
			return uri_fail(err, errlen,
					"bad character in socket directory");
		if (n + 1 >= outlen)
			return uri_fail(err, errlen,
					"socket directory too long");
		out[n++] = (char)c;
	}
	out[n] = '\0';
	if (out[0] != '/')
		return uri_fail(err, errlen,
				"a socket directory must be absolute "
				"(%2F...)");
	return 0;
}

/* one "HOST[:PORT]" of s[0..len) */
static int uri_host(const char *s, size_t len, struct pg_uri_host *h, char *err,
		    size_t errlen)
{
	struct dl_uri_hostport hp;
	const char *why;
	int ret;

	if (dl_uri_hostport(s, len, PG_DEFAULT_PORT, &hp, &why) < 0)
		return uri_fail(err, errlen, why);
	h->port = hp.port;
	if (!hp.ipv6 && hp.host[0] == '%') {
		ret = uri_socket_dir(hp.host, hp.hlen, h->host, sizeof(h->host),
				     err, errlen);
		return ret < 0 ? ret : 0;
	}
	for (size_t i = 0; i < hp.hlen && !hp.ipv6; i++)
		if (!dl_uri_host_char(hp.host[i]))
			return uri_fail(err, errlen,
					"bad character in host name");
	if (hp.hlen >= sizeof(h->host))
		return uri_fail(err, errlen, "host name too long");
	memcpy(h->host, hp.host, hp.hlen);
	h->host[hp.hlen] = '\0';
	return 0;
}

/* a schema name usable unquoted, and as the prefix of a channel name */
static bool schema_ok(const char *s, size_t len)
{
	if (len == 0 || len >= PG_URI_SCHEMA_MAX)
		return false;
	if (s[0] >= '0' && s[0] <= '9')
		return false;
	if (len >= 3 && strncmp(s, "pg_", 3) == 0)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return false;
	return true;
}

static bool enum_ok(const char *v, size_t len, const char *const *allowed)
{
	for (size_t i = 0; allowed[i]; i++)
		if (strlen(allowed[i]) == len &&
		    strncmp(allowed[i], v, len) == 0)
			return true;
	return false;
}

static const char *const sslmodes[] = { "disable", "allow",	"prefer",
					"require", "verify-ca", "verify-full",
					NULL };
static const char *const tsattrs[] = { "any",	    "read-write",
				       "read-only", "primary",
				       "standby",   "prefer-standby",
				       NULL };

enum uri_key {
	K_SCHEMA,
	K_TTL,
	K_CONNECT,
	K_DELAY,
	K_SSLMODE,
	K_TSA,
	K_NKEYS,
};

static const char *const key_names[K_NKEYS] = {
	"schema",	 "ttl_ms",  "connect_timeout_ms",
	"lock_delay_ms", "sslmode", "target_session_attrs",
};

static int uri_query(const char *q, struct pg_uri *u, char *err, size_t errlen)
{
	static const long lim[][2] = {
		[K_TTL] = { 1000, 3600000 },
		[K_CONNECT] = { 100, 60000 },
		[K_DELAY] = { 0, 600000 },
	};
	bool seen[K_NKEYS] = { false };

	while (*q) {
		const char *amp = strchr(q, '&');
		size_t len = amp ? (size_t)(amp - q) : strlen(q);
		const char *eq = memchr(q, '=', len);
		const char *v;
		size_t klen, vlen, k;
		char msg[200];
		long n;

		if (!eq)
			return uri_fail(err, errlen, "query item without '='");
		klen = (size_t)(eq - q);
		v = eq + 1;
		vlen = len - klen - 1;
		if ((klen == 8 && strncmp(q, "password", 8) == 0) ||
		    (klen == 11 && strncmp(q, "sslpassword", 11) == 0))
			return uri_fail(err, errlen,
					"a password in the URI is refused: "
					"passwords go in the config file "
					"(pg_password) or ~/.pgpass");
		for (k = 0; k < K_NKEYS; k++)
			if (strlen(key_names[k]) == klen &&
			    strncmp(key_names[k], q, klen) == 0)
				break;
		if (k == K_NKEYS) {
			snprintf(msg, sizeof(msg),
				 "unknown query key '%.*s' (known: schema, "
				 "ttl_ms, connect_timeout_ms, lock_delay_ms, "
				 "sslmode, target_session_attrs)",
				 (int)(klen < 40 ? klen : 40), q);
			return uri_fail(err, errlen, msg);
		}
		if (seen[k]) {
			snprintf(msg, sizeof(msg), "query key '%s' given twice",
				 key_names[k]);
			return uri_fail(err, errlen, msg);
		}
		seen[k] = true;
		switch (k) {
		case K_SCHEMA:
			if (!schema_ok(v, vlen))
				return uri_fail(err, errlen,
						"schema must be 1-40 of "
						"[a-z0-9_], not starting with "
						"a digit or 'pg_'");
			memcpy(u->schema, v, vlen);
			u->schema[vlen] = '\0';
			break;
		case K_SSLMODE:
			if (!enum_ok(v, vlen, sslmodes))
				return uri_fail(err, errlen,
						"sslmode must be disable, "
						"allow, prefer, require, "
						"verify-ca or verify-full");
			memcpy(u->sslmode, v, vlen);
			u->sslmode[vlen] = '\0';
			break;
		case K_TSA:
			if (!enum_ok(v, vlen, tsattrs))
				return uri_fail(err, errlen,
						"target_session_attrs must be "
						"any, read-write, read-only, "
						"primary, standby or "
						"prefer-standby");
			memcpy(u->target_session_attrs, v, vlen);
			u->target_session_attrs[vlen] = '\0';
			break;
		default:
			n = dl_uri_number(v, vlen, lim[k][0], lim[k][1]);
			if (n < 0) {
				snprintf(msg, sizeof(msg),
					 "%s must be a number from %ld to %ld",
					 key_names[k], lim[k][0], lim[k][1]);
				return uri_fail(err, errlen, msg);
			}
			if (k == K_TTL)
				u->ttl_ms = (int)n;
			else if (k == K_CONNECT)
				u->connect_timeout_ms = (int)n;
			else
				u->lock_delay_ms = (int)n;
			break;
		}
		if (!amp)
			break;
		q = amp + 1;
		if (!*q)
			return uri_fail(err, errlen, "trailing '&'");
	}
	if (!seen[K_DELAY])
		u->lock_delay_ms = u->ttl_ms / 3;
	/* a short lease needs a short connect timeout by default */
	if (!seen[K_CONNECT] && u->connect_timeout_ms > u->ttl_ms / 4)
		u->connect_timeout_ms = u->ttl_ms / 4;
	return 0;
}

int pg_uri_parse(const char *rest, struct pg_uri *out, char *err, size_t errlen)
{
	const char *auth, *end, *at, *p;
	struct pg_uri u;
	size_t len;
	int ret;

	memset(&u, 0, sizeof(u));
	u.ttl_ms = 15000;
	u.connect_timeout_ms = 2000;
	snprintf(u.schema, sizeof(u.schema), "dlock");

	if (strncmp(rest, "//", 2) != 0)
		return uri_fail(err, errlen,
				"expected postgresql://HOST[:PORT]/DBNAME");
	auth = rest + 2;
	end = auth + strcspn(auth, "/?");
	at = memchr(auth, '@', (size_t)(end - auth));
	if (at) {
		size_t ulen = (size_t)(at - auth);

		if (memchr(auth, ':', ulen))
			return uri_fail(err, errlen,
					"a password in the URI is refused: "
					"passwords go in the config file "
					"(pg_password) or ~/.pgpass");
		if (ulen == 0)
			return uri_fail(err, errlen,
					"empty user name before '@'");
		if (ulen >= sizeof(u.user))
			return uri_fail(err, errlen, "user name too long");
		for (size_t i = 0; i < ulen; i++)
			if (!dl_uri_host_char(auth[i]))
				return uri_fail(err, errlen,
						"bad character in user name");
		memcpy(u.user, auth, ulen);
		auth = at + 1;
		if (memchr(auth, '@', (size_t)(end - auth)))
			return uri_fail(err, errlen, "more than one '@'");
	}
	if (auth == end)
		return uri_fail(err, errlen, "empty host");
	for (p = auth; p <= end;) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end;

		if (u.nhosts == PG_URI_MAX_HOSTS)
			return uri_fail(err, errlen,
					"too many hosts (at most 8)");
		ret = uri_host(p, (size_t)(stop - p), &u.hosts[u.nhosts], err,
			       errlen);
		if (ret < 0)
			return ret;
		for (size_t i = 0; i < u.nhosts; i++)
			if (u.hosts[i].port == u.hosts[u.nhosts].port &&
			    strcmp(u.hosts[i].host, u.hosts[u.nhosts].host) ==
				    0)
				return uri_fail(err, errlen,
						"the same host is listed "
						"twice");
		u.nhosts++;
		if (!comma)
			break;
		p = comma + 1;
	}
	p = end;
	if (*p != '/')
		return uri_fail(err, errlen,
				"missing /DBNAME after the host list");
	len = strcspn(++p, "?");
	if (len == 0)
		return uri_fail(err, errlen, "empty database name");
	if (len >= sizeof(u.dbname))
		return uri_fail(err, errlen,
				"database name too long (at most 63)");
	for (size_t i = 0; i < len; i++)
		if (!dl_uri_host_char(p[i]))
			return uri_fail(err, errlen,
					"the database name may hold only "
					"letters, digits, '-', '.' and '_'");
	memcpy(u.dbname, p, len);
	u.dbname[len] = '\0';
	p += len;
	if (*p == '?') {
		ret = uri_query(p + 1, &u, err, errlen);
		if (ret < 0)
			return ret;
	} else {
		u.lock_delay_ms = u.ttl_ms / 3;
		if (u.connect_timeout_ms > u.ttl_ms / 4)
			u.connect_timeout_ms = u.ttl_ms / 4;
	}
	if (u.connect_timeout_ms >= u.ttl_ms / 2)
		return uri_fail(err, errlen,
				"connect_timeout_ms must be below ttl_ms / 2");
	*out = u;
	return 0;
}

void pg_uri_conninfo(const struct pg_uri *u, size_t first, const char *appname,
		     const char *password, struct pg_conninfo *ci)
{
	size_t hoff = 0, poff = 0, k = 0;
	int idle;

	memset(ci, 0, sizeof(*ci));
	for (size_t i = 0; i < u->nhosts; i++) {
		const struct pg_uri_host *h =
			&u->hosts[(first + i) % u->nhosts];
		int n;

		n = snprintf(ci->hosts + hoff, sizeof(ci->hosts) - hoff, "%s%s",
			     i ? "," : "", h->host);
		if (n > 0)
			hoff += (size_t)n;
		n = snprintf(ci->ports + poff, sizeof(ci->ports) - poff, "%s%d",
			     i ? "," : "", h->port);
		if (n > 0)
			poff += (size_t)n;
	}
	/* a dead server shows on an idle connection within about a lease */
	idle = u->ttl_ms / 3000;
	snprintf(ci->keepalive_idle, sizeof(ci->keepalive_idle), "%d",
		 idle > 0 ? idle : 1);
	snprintf(ci->user_timeout, sizeof(ci->user_timeout), "%d",
		 u->connect_timeout_ms);
	snprintf(ci->appname, sizeof(ci->appname), "%s", appname);

#define KV(k_, v_)                   \
	do {                         \
		ci->kw[k] = (k_);    \
		ci->val[k++] = (v_); \
	} while (0)
	KV("host", ci->hosts);
	KV("port", ci->ports);
	KV("dbname", u->dbname);
	if (u->user[0])
		KV("user", u->user);
	if (password)
		KV("password", password);
	if (u->sslmode[0])
		KV("sslmode", u->sslmode);
	if (u->target_session_attrs[0])
		KV("target_session_attrs", u->target_session_attrs);
	KV("application_name", ci->appname);
	KV("keepalives", "1");
	KV("keepalives_idle", ci->keepalive_idle);
	KV("keepalives_interval", "1");
	KV("keepalives_count", "3");
	KV("tcp_user_timeout", ci->user_timeout);
#undef KV
	/* ci->kw[k] == NULL ends the list (memset above) */
}

/*
 * uri.h - parsing of "postgresql://" (and "postgres://") backend URIs,
 * and the libpq connection keywords they turn into.
 *
 *   postgresql://[USER@]HOST[:PORT][,HOST[:PORT]...]/DBNAME[?KEY=VALUE&...]
 *
 * HOST is a name, an IPv4 address, a bracketed IPv6 address ("[::1]"), or
 * a percent-encoded Unix socket directory ("%2Fvar%2Frun%2Fpostgresql");
 * PORT defaults to 5432 (for a socket directory it picks the socket file).
 * Several hosts are libpq's own failover list: libpq tries them in order
 * (with target_session_attrs=read-write it finds the primary).  USER
 * defaults to libpq's (PGUSER, else the login name).
 *
 * Query keys: schema (default "dlock"; 1-40 of [a-z0-9_], not starting
 * with a digit nor with "pg_"), ttl_ms (the lease, default 15000, >=
 * 1000), connect_timeout_ms (default 2000, or ttl_ms / 4 if smaller; below
 * ttl_ms / 2), lock_delay_ms (default ttl_ms / 3), sslmode and
 * target_session_attrs (libpq's values, passed through).
 *
 * A password is refused wherever it appears in the URI ("user:pw@",
 * "?password="): it would show in ps(1) and in the mount table.  It comes
 * from the config file (pg_password) or libpq's own files (~/.pgpass).
 *
 * Pure: no I/O, no allocation, no libpq.
 */
#ifndef DL_PG_URI_H
#define DL_PG_URI_H

#include <stddef.h>

#define PG_URI_MAX_HOSTS  8
#define PG_URI_HOST_MAX	  256
#define PG_URI_NAME_MAX	  64 /* user, dbname: NAMEDATALEN - 1 */
#define PG_URI_SCHEMA_MAX 41
#define PG_URI_ENUM_MAX	  16

struct pg_uri_host {
	char host[PG_URI_HOST_MAX]; /* no brackets; a socket dir: "/..." */
	int port;
};

struct pg_uri {
	char user[PG_URI_NAME_MAX]; /* "" when absent: libpq's default */
	struct pg_uri_host hosts[PG_URI_MAX_HOSTS];
	size_t nhosts;
	char dbname[PG_URI_NAME_MAX];
	char schema[PG_URI_SCHEMA_MAX];
	int ttl_ms;
	int connect_timeout_ms;
	int lock_delay_ms;
	char sslmode[PG_URI_ENUM_MAX];		    /* "": libpq's default */
	char target_session_attrs[PG_URI_ENUM_MAX]; /* "": libpq's */
};

/*
 * pg_uri_parse() - parse @rest, the part of the URI after "postgresql:"
 * or "postgres:".  Returns 0 with *out filled, or -EINVAL with a one-line
 * reason in @err (which never quotes a password).
 */
int pg_uri_parse(const char *rest, struct pg_uri *out, char *err,
		 size_t errlen);

#define PG_CONNINFO_MAX 16

/* libpq keywords and values (NULL-terminated arrays) and their storage */
struct pg_conninfo {
	const char *kw[PG_CONNINFO_MAX];
	const char *val[PG_CONNINFO_MAX];
	char hosts[PG_URI_MAX_HOSTS * PG_URI_HOST_MAX];
	char ports[PG_URI_MAX_HOSTS * 8];
	char keepalive_idle[16];
	char user_timeout[16];
	char appname[64];
};

/*
 * pg_uri_conninfo() - the libpq parameters of @u: its hosts starting with
 * the @first-th (modulo their number: a host that timed out goes last
 * next time), application_name @appname, @password (NULL: libpq's own
 * sources), TCP keepalives and user timeout from the lease.  (Session
 * settings are SET after connecting: a pooler refuses startup options.)  @ci keeps pointers to
 * @password, which must outlive its use.
 */
void pg_uri_conninfo(const struct pg_uri *u, size_t first, const char *appname,
		     const char *password, struct pg_conninfo *ci);

#endif /* DL_PG_URI_H */

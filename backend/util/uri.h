/*
 * uri.h - the pieces every backend's URI parser shares: decimal numbers
 * in a range, hex digits, host-name characters, and splitting one
 * "HOST[:PORT]" or "[IPV6][:PORT]" of a host list.
 *
 * Pure: no allocation, no I/O.  Each backend keeps its own scheme, query
 * keys and error prefix (backend/redis/uri.c, backend/pg/uri.c).
 */
#ifndef DL_URI_H
#define DL_URI_H

#include <stdbool.h>
#include <stddef.h>

/* decimal in [min, max] from s[0..len) (at most 9 digits); -1 if not */
long dl_uri_number(const char *s, size_t len, long min, long max);

/* the value of hex digit @c, or -1 */
int dl_uri_hex(char c);

/* a character of a host name or IPv4 address as we accept them */
bool dl_uri_host_char(char c);

/* one entry of a host list, split (pointers into the caller's string) */
struct dl_uri_hostport {
	const char *host; /* without brackets; not validated unless IPv6 */
	size_t hlen;	  /* > 0 */
	bool ipv6;	  /* was in brackets (characters checked) */
	int port;	  /* the default when none was given */
};

/*
 * dl_uri_hostport() - split s[0..len) into host and port (1..65535,
 * @defport if absent).  Returns 0, or -EINVAL with *why set to a short
 * reason ("empty host", "bad port (1-65535)", ...).
 */
int dl_uri_hostport(const char *s, size_t len, int defport,
		    struct dl_uri_hostport *out, const char **why);

#endif /* DL_URI_H */

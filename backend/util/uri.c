/*
 * uri.c - what the backends' URI parsers share (uri.h).
 */
#include <errno.h>
#include <string.h>

#include "backend/util/uri.h"

long dl_uri_number(const char *s, size_t len, long min, long max)
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

int dl_uri_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

bool dl_uri_host_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

int dl_uri_hostport(const char *s, size_t len, int defport,
		    struct dl_uri_hostport *out, const char **why)
{
	const char *port = NULL;
	size_t plen = 0;

	*out = (struct dl_uri_hostport){ .port = defport };
	if (len == 0) {
		*why = "empty host";
		return -EINVAL;
	}
	if (s[0] == '[') {
		const char *close = memchr(s, ']', len);

		if (!close) {
			*why = "unclosed '[' in IPv6 address";
			return -EINVAL;
		}
		out->host = s + 1;
		out->hlen = (size_t)(close - out->host);
		out->ipv6 = true;
		for (size_t i = 0; i < out->hlen; i++)
			if (!(dl_uri_host_char(out->host[i]) ||
			      out->host[i] == ':' || out->host[i] == '%')) {
				*why = "bad character in IPv6 address";
				return -EINVAL;
			}
		if (close + 1 < s + len) {
			if (close[1] != ':') {
				*why = "expected ':' after ']'";
				return -EINVAL;
			}
			port = close + 2;
			plen = (size_t)(s + len - port);
		}
	} else {
		const char *colon = memchr(s, ':', len);

		out->host = s;
		out->hlen = colon ? (size_t)(colon - s) : len;
		if (colon) {
			port = colon + 1;
			plen = (size_t)(s + len - port);
			if (memchr(port, ':', plen)) {
				*why = "an IPv6 address needs brackets: "
				       "[::1]:PORT";
				return -EINVAL;
			}
		}
	}
	if (port && plen == 0) {
		*why = "empty port";
		return -EINVAL;
	}
	if (out->hlen == 0) {
		*why = "empty host";
		return -EINVAL;
	}
	if (port) {
		long p = dl_uri_number(port, plen, 1, 65535);

		if (p < 0) {
			*why = "bad port (1-65535)";
			return -EINVAL;
		}
		out->port = (int)p;
	}
	return 0;
}

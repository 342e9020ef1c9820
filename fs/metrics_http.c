/*
 * metrics_http.c - the Prometheus endpoint (see metrics_http.h).
 *
 * libmicrohttpd does the HTTP: one internal polling thread, a few
 * connections at most, short timeouts.  GET (or HEAD) /metrics answers
 * the text exposition format 0.0.4; / answers a pointer to it; any other
 * path is 404 and any other method 405.  The handler only reads atomics
 * and takes the lock manager's mutex briefly (lockmgr_metrics()): a scrape
 * never waits on the backend.
 */
#include "fs/metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "fs/lock/lockmgr.h"

struct dl_metrics_http {
	struct MHD_Daemon *d;
	struct lockmgr *lm;
};

union dl_sockaddr {
	struct sockaddr sa;
	struct sockaddr_in in;
	struct sockaddr_in6 in6;
};

/* parse @spec into @a; 0 or -EINVAL with a reason */
static int parse_addr(const char *spec, union dl_sockaddr *a, char *err,
		      size_t errlen)
{
	const char *colon = strrchr(spec, ':');
	char host[64], *end;
	unsigned long port;
	size_t hlen;

	if (!colon || colon == spec || !colon[1]) {
		snprintf(err, errlen,
			 "bad metrics address '%s': want HOST:PORT, e.g. "
			 "127.0.0.1:9464 or [::1]:9464",
			 spec);
		return -EINVAL;
	}
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port == 0 || port > 65535 || colon[1] == '+' ||
	    colon[1] == '-') {
		snprintf(err, errlen,
			 "bad metrics address '%s': the port must be "
			 "1..65535",
			 spec);
		return -EINVAL;
	}
	hlen = (size_t)(colon - spec);
	memset(a, 0, sizeof(*a));
	if (spec[0] == '[') {
		if (hlen < 3 || spec[hlen - 1] != ']' ||
		    hlen - 2 >= sizeof(host))
			goto bad_host;
		memcpy(host, spec + 1, hlen - 2);
		host[hlen - 2] = '\0';
		a->in6.sin6_family = AF_INET6;
		a->in6.sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host, &a->in6.sin6_addr) != 1)
			goto bad_host;
		return 0;
	}
	if (hlen >= sizeof(host))
		goto bad_host;
	memcpy(host, spec, hlen);
	host[hlen] = '\0';
	a->in.sin_family = AF_INET;
	a->in.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &a->in.sin_addr) == 1)
		return 0;
bad_host:
	snprintf(err, errlen,
		 "bad metrics address '%s': want a numeric IPv4 address or "
		 "a bracketed IPv6 one (127.0.0.1:9464, [::1]:9464)",
		 spec);
	return -EINVAL;
}

int dl_metrics_listen(const char *spec, char *err, size_t errlen)
{
	union dl_sockaddr a;
	socklen_t len;
	int fd, one = 1, ret = parse_addr(spec, &a, err, errlen);

	if (ret)
		return ret;
	len = a.sa.sa_family == AF_INET6 ? sizeof(a.in6) : sizeof(a.in);
	fd = socket(a.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, &a.sa, len) < 0 || listen(fd, 16) < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot serve metrics on %s: %s", spec,
			 strerror(-ret));
		if (fd >= 0)
			close(fd);
		return ret;
	}
	return fd;
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned status,
			     const char *type, char *body, size_t len,
			     enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, body, mode);
	enum MHD_Result ret;

	if (!r) {
		if (mode == MHD_RESPMEM_MUST_FREE)
			free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c,
			      const char *url, const char *method,
			      const char *version, const char *upload,
			      size_t *upload_size, void **state)
{
	static char not_found[] = "not found: the metrics are at /metrics\n";
	static char index[] = "dlockfs: the metrics are at /metrics\n";
	static char bad_method[] = "only GET and HEAD\n";
	struct dl_metrics_http *h = cls;
	char *text = NULL;

	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 &&
	    strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain",
			     bad_method, sizeof(bad_method) - 1,
			     MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/") == 0)
		return reply(c, MHD_HTTP_OK, "text/plain", index,
			     sizeof(index) - 1, MHD_RESPMEM_PERSISTENT);
	if (strcmp(url, "/metrics") != 0)
		return reply(c, MHD_HTTP_NOT_FOUND, "text/plain", not_found,
			     sizeof(not_found) - 1, MHD_RESPMEM_PERSISTENT);
	if (lockmgr_metrics(h->lm, &text) != 0)
		return MHD_NO; /* out of memory: the connection is closed */
	return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
		     text, strlen(text), MHD_RESPMEM_MUST_FREE);
}

int dl_metrics_http_start(int fd, struct lockmgr *lm,
			  struct dl_metrics_http **out, char *err,
			  size_t errlen)
{
	struct dl_metrics_http *h = calloc(1, sizeof(*h));
	int ret;

	if (!h) {
		close(fd);
		snprintf(err, errlen, "metrics: out of memory");
		return -ENOMEM;
	}
	h->lm = lm;
	errno = 0;
	/* the port given is ignored with a socket of our own */
	h->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
				1, NULL, NULL, handle, h,
				MHD_OPTION_LISTEN_SOCKET, fd,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)16,
				MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
				MHD_OPTION_END);
	if (!h->d) {
		ret = errno ? -errno : -ENOMEM;
		snprintf(err, errlen, "cannot serve metrics: %s",
			 strerror(-ret));
		close(fd);
		free(h);
		return ret;
	}
	*out = h;
	return 0;
}

void dl_metrics_http_stop(struct dl_metrics_http *h)
{
	if (!h)
		return;
	MHD_stop_daemon(h->d);
	free(h);
}

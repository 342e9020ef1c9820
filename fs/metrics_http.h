/*
 * metrics_http.h - -o metrics=ADDR:PORT: the lock manager's metrics
 * (lockmgr_metrics()) served as GET /metrics in the Prometheus text
 * format, by libmicrohttpd on a thread of its own.
 */
#ifndef DL_METRICS_HTTP_H
#define DL_METRICS_HTTP_H

#include <stddef.h>

struct lockmgr;
struct dl_metrics_http;

/*
 * dl_metrics_addr_check() - is @spec "HOST:PORT" with a numeric IPv4
 * address ("127.0.0.1:9464") or a bracketed IPv6 one ("[::1]:9464") and a
 * port 1..65535?  0, or -EINVAL with a one-line reason in @err.
 */
int dl_metrics_addr_check(const char *spec, char *err, size_t errlen);

/*
 * dl_metrics_http_start() - listen on @spec and serve @lm's metrics.
 * Returns 0, or a negative errno with a one-line reason in @err (a port
 * already in use: -EADDRINUSE).
 */
int dl_metrics_http_start(const char *spec, struct lockmgr *lm,
			  struct dl_metrics_http **out, char *err,
			  size_t errlen);

/* stop serving (NULL: nothing); waits for a scrape in progress */
void dl_metrics_http_stop(struct dl_metrics_http *h);

#endif /* DL_METRICS_HTTP_H */

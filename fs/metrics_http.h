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
 * dl_metrics_listen() - a listening socket on @spec: "HOST:PORT" with a
 * numeric IPv4 address ("127.0.0.1:9464") or a bracketed IPv6 one
 * ("[::1]:9464") and a port 1..65535.  Made while the options are checked,
 * so a bad address or a port in use is a usage error before anything
 * starts.  Returns the descriptor, or a negative errno with a one-line
 * reason in @err.
 */
int dl_metrics_listen(const char *spec, char *err, size_t errlen);

/*
 * dl_metrics_http_start() - serve @lm's metrics on @fd (from
 * dl_metrics_listen(); the server owns it from now on, even on failure).
 * Returns 0, or a negative errno with a one-line reason in @err.
 */
int dl_metrics_http_start(int fd, struct lockmgr *lm,
			  struct dl_metrics_http **out, char *err,
			  size_t errlen);

/* stop serving (NULL: nothing); waits for a scrape in progress */
void dl_metrics_http_stop(struct dl_metrics_http *h);

#endif /* DL_METRICS_HTTP_H */

/*
 * log.c - dl_log(): stderr in the foreground, syslog once daemonised;
 * dl_log_limited(): the same, at most one line per interval.
 */
#include "backend/util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>

enum dl_log_level dl_log_max = DL_LOG_NOTICE;
static bool log_syslog;

void dl_log_init(const char *ident, enum dl_log_level max, bool use_syslog)
{
	dl_log_max = max;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_CONS, LOG_DAEMON);
}

static const char *const log_names[] = {
	[DL_LOG_ERR] = "error",	    [DL_LOG_WARNING] = "warning",
	[DL_LOG_NOTICE] = "notice", [DL_LOG_INFO] = "info",
	[DL_LOG_DEBUG] = "debug",
};

int dl_log_level_parse(const char *name, enum dl_log_level *out)
{
	for (int l = DL_LOG_ERR; l <= DL_LOG_DEBUG; l++)
		if (strcmp(name, log_names[l]) == 0 ||
		    (l == DL_LOG_ERR && strcmp(name, "err") == 0)) {
			*out = (enum dl_log_level)l;
			return 0;
		}
	return -1;
}

/* one line: @fmt/@ap, then @suffix (may be "") */
static void log_write(enum dl_log_level level, const char *suffix,
		      const char *fmt, va_list ap)
{
	char msg[1024];

	if (!fmt) /* never from our callers; keeps -Wformat-overflow quiet */
		return;
	if (log_syslog) {
		if (!suffix[0]) {
			vsyslog((int)level, fmt, ap);
			return;
		}
		vsnprintf(msg, sizeof(msg), fmt, ap);
		syslog((int)level, "%s%s", msg, suffix);
		return;
	}
	flockfile(stderr);
	fprintf(stderr, "dlockfs: %s: ", log_names[level]);
	vfprintf(stderr, fmt, ap);
	fputs(suffix, stderr);
	fputc('\n', stderr);
	funlockfile(stderr);
}

void dl_log_msg(enum dl_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_write(level, "", fmt, ap);
	va_end(ap);
}

static int64_t log_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void dl_log_limited(struct dl_log_limit *lim, enum dl_log_level level,
		    const char *fmt, ...)
{
	int interval = lim->interval_ms > 0 ? lim->interval_ms
					    : DL_LOG_LIMIT_DEFAULT_MS;
	int64_t now, next;
	char suffix[64] = "";
	unsigned dropped;
	va_list ap;

	if (level > dl_log_max)
		return;
	now = log_mono_ms();
	next = atomic_load(&lim->next_ms);
	/* one thread wins the slot; the others count themselves */
	if (now < next || !atomic_compare_exchange_strong(&lim->next_ms, &next,
							  now + interval)) {
		atomic_fetch_add(&lim->suppressed, 1);
		return;
	}
	dropped = atomic_exchange(&lim->suppressed, 0);
	if (dropped)
		snprintf(suffix, sizeof(suffix),
			 " (%u similar message%s suppressed)", dropped,
			 dropped == 1 ? "" : "s");
	va_start(ap, fmt);
	log_write(level, suffix, fmt, ap);
	va_end(ap);
}

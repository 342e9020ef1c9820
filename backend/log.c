/*
 * log.c - dl_log(): stderr in the foreground, syslog once daemonised.
 */
#include "backend/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

enum dl_log_level dl_log_max = DL_LOG_NOTICE;
static bool log_syslog;

void dl_log_init(const char *ident, enum dl_log_level max, bool use_syslog)
{
	dl_log_max = max;
	log_syslog = use_syslog;
	if (use_syslog)
		openlog(ident, LOG_PID | LOG_CONS, LOG_DAEMON);
}

void dl_log_msg(enum dl_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (log_syslog) {
		vsyslog((int)level, fmt, ap);
	} else {
		static const char *const names[] = {
			[DL_LOG_ERR] = "error",
			[DL_LOG_WARNING] = "warning",
			[DL_LOG_NOTICE] = "notice",
			[DL_LOG_INFO] = "info",
			[DL_LOG_DEBUG] = "debug",
		};
		flockfile(stderr);
		fprintf(stderr, "dlockfs: %s: ", names[level]);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		funlockfile(stderr);
	}
	va_end(ap);
}

/*
 * log.h - the one logger of dlockfs.
 *
 * dl_log() checks the level before formatting anything.  Messages go to
 * stderr while the daemon runs in the foreground and to syslog once it has
 * daemonised.  Never pass a secret to it.
 */
#ifndef DL_LOG_H
#define DL_LOG_H

#include <stdbool.h>

enum dl_log_level {
	DL_LOG_ERR = 3,
	DL_LOG_WARNING = 4,
	DL_LOG_NOTICE = 5,
	DL_LOG_INFO = 6,
	DL_LOG_DEBUG = 7,
};

extern enum dl_log_level dl_log_max;

void dl_log_init(const char *ident, enum dl_log_level max, bool use_syslog);
void dl_log_msg(enum dl_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define dl_log(level, ...)                                \
	do {                                              \
		if ((level) <= dl_log_max)                \
			dl_log_msg((level), __VA_ARGS__); \
	} while (0)

#endif /* DL_LOG_H */

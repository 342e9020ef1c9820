/*
 * log.h - the one logger of dlockfs.
 *
 * dl_log() checks the level before formatting anything.  Messages go to
 * stderr while the daemon runs in the foreground and to syslog once it has
 * daemonised.  Never pass a secret to it.
 *
 * A message that a loop can repeat (a failing accept(), a reconnect, a
 * library's retry chatter) goes through dl_log_ratelimited() or
 * dl_log_limited() instead: at most one line per interval per call site
 * (or per struct dl_log_limit), the first one at once; the next line that
 * passes says how many were dropped meanwhile, so nothing is lost silently
 * and a tight failure loop cannot flood syslog.
 */
#ifndef DL_LOG_H
#define DL_LOG_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum dl_log_level {
	DL_LOG_ERR = 3,
	DL_LOG_WARNING = 4,
	DL_LOG_NOTICE = 5,
	DL_LOG_INFO = 6,
	DL_LOG_DEBUG = 7,
};

extern enum dl_log_level dl_log_max;

void dl_log_init(const char *ident, enum dl_log_level max, bool use_syslog);
/* a level by its name (error or err, warning, notice, info, debug) into
 * *out: 0, or -1 for another name */
int dl_log_level_parse(const char *name, enum dl_log_level *out);
void dl_log_msg(enum dl_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define dl_log(level, ...)                                \
	do {                                              \
		if ((level) <= dl_log_max)                \
			dl_log_msg((level), __VA_ARGS__); \
	} while (0)

/*
 * The state of one rate limit: lock-free, so any thread may share it.
 * Initialise with DL_LOG_LIMIT_INIT(ms) (static or in a struct); a zeroed
 * one uses DL_LOG_LIMIT_DEFAULT_MS.
 */
struct dl_log_limit {
	int interval_ms;
	_Atomic int64_t next_ms;     /* monotonic: when a line may pass again */
	_Atomic unsigned suppressed; /* lines dropped since the last one */
};

#define DL_LOG_LIMIT_DEFAULT_MS 5000
#define DL_LOG_LIMIT_INIT(ms)       \
	{                           \
		.interval_ms = (ms) \
	}

/*
 * dl_log_limited() - dl_log() through @lim: the line is written if the
 * interval has passed since the last line written through @lim (it then
 * ends with "(N similar messages suppressed)" when some were), else it is
 * only counted.  Checks the level first.
 */
void dl_log_limited(struct dl_log_limit *lim, enum dl_log_level level,
		    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* dl_log_ratelimited() - the same with one limit per call site */
#define dl_log_ratelimited(level, interval_ms, ...)                  \
	do {                                                         \
		static struct dl_log_limit dl_log_site_ =            \
			DL_LOG_LIMIT_INIT(interval_ms);              \
		dl_log_limited(&dl_log_site_, (level), __VA_ARGS__); \
	} while (0)

#endif /* DL_LOG_H */

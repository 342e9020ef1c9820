/*
 * cli.h - dlockctl's edge towards its user: the exit statuses, the messages
 * on stderr, the usage line, and the few settings of the whole process.
 *
 * Exit status: 0 done; 1 the lock or the lock record was not there (a
 * timeout, a conflict, nothing to break); 2 usage error; 3 the daemon
 * cannot be reached or spoke nonsense; 4 the daemon refused (permission,
 * a file it will not name, a backend error); 5 the file changed (replace:
 * its version was not the one given; read: it changed during every
 * attempt).  `run` exits with the command's status (128+N for a signal,
 * 126/127 when it cannot be run).
 */
#ifndef DLOCKCTL_CLI_H
#define DLOCKCTL_CLI_H

#include <stdbool.h>
#include <stdio.h>

#define EX_NOLOCK  1
#define EX_USAGE   2
#define EX_DAEMON  3
#define EX_REFUSED 4
#define EX_CHANGED 5

/*
 * The process-wide settings, set once by main() before a command runs and
 * only read afterwards:
 *   g_socket  the daemon's control socket (--socket, $DLOCK_SOCKET, default)
 *   g_json    --json: status, locks and break answer in JSON (a command's
 *             own -J sets it too)
 *   g_utf8    the locale's character set is UTF-8: printable UTF-8 passes
 *             through the table; else every byte >= 0x80 is escaped
 */
extern const char *g_socket;
extern bool g_json;
extern bool g_utf8;

/* print the usage synopsis to @f */
void cli_usage_line(FILE *f);

/* "dlockctl: MESSAGE" and the usage synopsis on stderr; returns EX_USAGE */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "dlockctl: MESSAGE" on stderr; returns @code */
int cli_fail(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#endif /* DLOCKCTL_CLI_H */

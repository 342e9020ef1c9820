/*
 * cli.c - dlockctl's messages to its user: the usage synopsis and the
 * "dlockctl: ..." lines on stderr that go with a non-zero exit status;
 * and the definitions of the process-wide settings (see cli.h).
 *
 * It neither parses options nor decides an exit status: callers pass the
 * status and get it back, so that `return cli_fail(EX_DAEMON, ...)` reads
 * as what it does.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "fs/dlockctl/cli.h"

const char *g_socket;
bool g_json;
bool g_utf8;

/* the synopsis, for --help on stdout and after a usage error on stderr */
void cli_usage_line(FILE *f)
{
	fputs("usage: dlockctl [--socket PATH] [--json] status [-r | -J]\n"
	      "       dlockctl [--socket PATH] [--json] locks [-o COLUMNS] [-n]"
	      " [-r | -J] [PATH | name:NAME]\n"
	      "       dlockctl [--socket PATH] break PATH | name:NAME\n"
	      "       dlockctl [--socket PATH] metrics\n"
	      "       dlockctl [--json] version [-J] FILE\n"
	      "       dlockctl replace --if-version N NEWFILE TARGET\n"
	      "       dlockctl read [--retries N] FILE\n"
	      "       dlockctl --version | --help\n"
	      "       dlockctl [--socket PATH] run --lock NAME [--lock NAME...]"
	      " [--shared] [--timeout SECONDS] -- COMMAND [ARG...]\n",
	      f);
}

/* "dlockctl: MESSAGE" on stderr */
static void cli_vmsg(const char *fmt, va_list ap)
{
	fputs("dlockctl: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

/* returns EX_USAGE, after the message and the synopsis */
int cli_usage(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_vmsg(fmt, ap);
	va_end(ap);
	cli_usage_line(stderr);
	return EX_USAGE;
}

/* returns @code, after the message */
int cli_fail(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cli_vmsg(fmt, ap);
	va_end(ap);
	return code;
}

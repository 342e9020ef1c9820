/*
 * main.c - dlockctl, the administrator's view of dlockfs through a
 * daemon's control socket: status, the locks of the cluster, breaking a
 * stuck lock, and running a command under named locks taken in one
 * canonical order; and, through the xattrs of a mount's files rather than
 * the socket, the files' versions (version, replace, read: version.c).
 *
 * This file reads the global options (--socket, --json, --help,
 * --version), sets the process-wide settings of cli.h, and hands the rest
 * of the command line to one command.  It holds no state of its own: the
 * daemon answers from its lock manager and backend.  The exit statuses are
 * listed in cli.h.
 */
#include <getopt.h>
#include <langinfo.h>
#include <locale.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/ctl/proto.h"
#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/commands.h"
#include "fs/dlockctl/table.h"

/* --help, on stdout */
static void help(void)
{
	cli_usage_line(stdout);
	fputs("\n"
	      "Commands:\n"
	      "  status          the daemon, its backend and its health\n"
	      "  locks           holders and waiters: of PATH or name:NAME,"
	      " else all\n"
	      "  break           remove every lock of PATH or name:NAME"
	      " (root)\n"
	      "  run             run COMMAND under named locks\n"
	      "  metrics         the daemon's metrics, Prometheus text format\n"
	      "  version         FILE's version and its last change (no"
	      " socket)\n"
	      "  replace         rename NEWFILE over TARGET if TARGET's"
	      " version is N\n"
	      "  read            FILE to stdout, read while no writer was"
	      " at work\n"
	      "\n"
	      "Options:\n"
	      "  -S, --socket PATH     the daemon's control socket (default"
	      " $DLOCK_SOCKET, else " DL_SOCKET_DEFAULT ")\n"
	      "  -j, --json            status and locks as JSON\n"
	      "  -h, --help            this text\n"
	      "  -V, --version         the version\n"
	      "\n"
	      "status options:\n"
	      "  -r, --raw             the daemon's key=value lines\n"
	      "  -J, --json            a JSON object\n"
	      "\n"
	      "locks options:\n"
	      "  -o, --output COLUMNS  the columns to show (+COLUMNS: add to"
	      " the default)\n"
	      "  -n, --noheadings      no header line\n"
	      "  -r, --raw             unaligned, one space between fields\n"
	      "  -J, --json            a JSON array (every column without"
	      " -o)\n"
	      "\n"
	      "version options:\n"
	      "  -J, --json            a JSON object\n"
	      "\n"
	      "replace options:\n"
	      "  --if-version N        replace only if TARGET's version is"
	      " N (required)\n"
	      "\n"
	      "read options:\n"
	      "  --retries N           read again at most N times (default"
	      " 5)\n"
	      "\n"
	      "Columns:\n",
	      stdout);
	table_help_columns();
	fputs("\nExit status: 0 done, 1 no lock (held, timeout, nothing to"
	      " break), 2 usage,\n3 daemon unreachable, 4 refused, 5 the file"
	      " changed (replace, read);\nrun: the command's.\n",
	      stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd;
	int opt;

	setlocale(LC_CTYPE, "");
	g_utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
	g_socket = getenv("DLOCK_SOCKET");
	if (!g_socket || !g_socket[0])
		g_socket = DL_SOCKET_DEFAULT;
	while ((opt = getopt_long(argc, argv, "+S:jhV", opts, NULL)) != -1) {
		switch (opt) {
		case 'V':
			printf("dlockctl %s\n", DLOCKFS_VERSION);
			return 0;
		case 'S':
			g_socket = optarg;
			break;
		case 'j':
			g_json = true;
			break;
		case 'h':
			help();
			return 0;
		default:
			cli_usage_line(stderr);
			return EX_USAGE;
		}
	}
	if (optind >= argc)
		return cli_usage("missing command");
	cmd = argv[optind];
	argc -= optind;
	argv += optind;
	if (strcmp(cmd, "status") == 0)
		return cmd_status(argc, argv);
	if (strcmp(cmd, "locks") == 0)
		return cmd_locks(argc, argv);
	if (strcmp(cmd, "break") == 0)
		return cmd_break(argc, argv);
	if (strcmp(cmd, "run") == 0)
		return cmd_run(argc, argv);
	if (strcmp(cmd, "metrics") == 0)
		return cmd_metrics(argc, argv);
	if (strcmp(cmd, "version") == 0)
		return cmd_version(argc, argv);
	if (strcmp(cmd, "replace") == 0)
		return cmd_replace(argc, argv);
	if (strcmp(cmd, "read") == 0)
		return cmd_read(argc, argv);
	return cli_usage("unknown command '%s'", cmd);
}

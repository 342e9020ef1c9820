/*
 * run.c - `dlockctl run`: take named locks, run a command, release them.
 *
 * The locks are taken in sorted order whatever order the --lock options
 * came in, the classic rule that keeps two `run`s from deadlocking each
 * other.  They belong to our connection to the daemon, so they go when we
 * exit, however we exit; we wait for the command with the terminal's
 * SIGINT and SIGQUIT ignored (they reach the command) and exit with its
 * status (128+N for a signal, 126/127 when it cannot be run).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fs/ctl/proto.h"
#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/commands.h"
#include "fs/dlockctl/conn.h"

/* qsort() order of lock names: strcmp() */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Take named lock @name on @conn, waiting until @deadline (monotonic ms;
 * 0: for ever, -1: not at all).  Returns 0, or an exit status after a
 * message: EX_NOLOCK (timed out, held by another, a deadlock), else as
 * ctl_verdict().
 */
static int take(struct ctl_conn *conn, const char *name, bool shared,
		int64_t deadline)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_LOCK } }, rep;
	int ret;

	m.kind = DLK_NAMED;
	m.ltype = shared ? DLP_RDLCK : DLP_WRLCK;
	/* --timeout 0: do not wait at all */
	m.flags = deadline < 0 ? 0 : DLP_F_WAIT;
	if (deadline < 0)
		deadline = 0;
	proto_str(&m, 0, name);
	ret = ctl_send(conn, &m, -1);
	if (ret)
		return ret;
	ret = ctl_recv(conn, m.hdr.id, &rep, deadline, NULL, NULL);
	if (ret == -ETIMEDOUT) {
		struct dl_proto_msg c = { .hdr = { .type = DLP_CANCEL } };
		uint32_t id = m.hdr.id;

		c.target_id = id;
		ret = ctl_send(conn, &c, -1);
		if (ret)
			return ret;
		ret = ctl_recv(conn, id, &rep, 0, NULL, NULL);
		if (ret == 0 && rep.err == -EINTR)
			return cli_fail(EX_NOLOCK,
					"timed out waiting for lock %s", name);
	}
	if (ret < 0)
		return cli_fail(EX_DAEMON, "lost the daemon: %s",
				strerror(-ret));
	if (rep.err == -EDEADLK || rep.err == -EAGAIN)
		return cli_fail(EX_NOLOCK, "lock %s: %s", name,
				rep.err == -EAGAIN ? "held by another"
						   : strerror(EDEADLK));
	return ctl_verdict(&rep, name);
}

#define CTL_RUN_MAX_LOCKS 256

/* dlockctl run --lock NAME... [--shared] [--timeout S] -- COMMAND... */
int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lock", required_argument, NULL, 'l' },
		{ "shared", no_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	char *names[CTL_RUN_MAX_LOCKS];
	struct ctl_conn conn;
	int nnames = 0, opt, ret, status;
	double timeout = -1;
	bool shared = false;
	int64_t deadline = 0;
	pid_t pid;

	optind = 1;
	while ((opt = getopt_long(argc, argv, "+l:st:", opts, NULL)) != -1) {
		char *end;

		switch (opt) {
		case 'l':
			if (!optarg[0] || strlen(optarg) > DL_PROTO_MAX_STR)
				return cli_usage("a lock name must have 1 to "
						 "%d "
						 "bytes",
						 DL_PROTO_MAX_STR);
			if (nnames == CTL_RUN_MAX_LOCKS)
				return cli_usage("at most %d --lock names",
						 CTL_RUN_MAX_LOCKS);
			names[nnames++] = optarg;
			break;
		case 's':
			shared = true;
			break;
		case 't':
			errno = 0;
			timeout = strtod(optarg, &end);
			if (errno || *end || end == optarg || timeout < 0 ||
			    timeout > 1e9)
				return cli_usage("bad --timeout '%s': want "
						 "seconds "
						 ">= 0",
						 optarg);
			break;
		default:
			return cli_usage("bad run option");
		}
	}
	if (!nnames)
		return cli_usage("run needs at least one --lock NAME");
	if (optind >= argc)
		return cli_usage("run needs -- COMMAND");
	/* the canonical order: every `run` takes shared names alike */
	qsort(names, (size_t)nnames, sizeof(*names), cmp_str);
	ret = ctl_connect(&conn, g_socket);
	if (ret)
		return ret;
	if (timeout == 0)
		deadline = -1;
	else if (timeout > 0)
		deadline = ctl_mono_ms() + (int64_t)(timeout * 1000) + 1;
	for (int i = 0; i < nnames; i++) {
		if (i && strcmp(names[i], names[i - 1]) == 0)
			continue;
		ret = take(&conn, names[i], shared, deadline);
		if (ret)
			return ret; /* our exit releases what we hold */
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return cli_fail(EX_DAEMON, "fork: %s", strerror(errno));
	if (pid == 0) {
		execvp(argv[optind], argv + optind);
		fprintf(stderr, "dlockctl: %s: %s\n", argv[optind],
			strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	/* the terminal's signals reach the command; we wait for it */
	signal(SIGINT, SIG_IGN);
	signal(SIGQUIT, SIG_IGN);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return cli_fail(EX_DAEMON, "waitpid: %s",
					strerror(errno));
	close(conn.fd); /* releases the locks */
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/*
 * locks.c - `dlockctl locks`: the holders and waiters of one file, one
 * named lock, or every resource the backend lists; and `dlockctl break`,
 * which removes every lock of a resource (root only, the daemon checks).
 *
 * A file is passed to the daemon as a descriptor we opened, never as a
 * path: the daemon names it from its own configuration, and lists only
 * what we could open.  Showing the answer is table.c's part.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs/ctl/proto.h"
#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/commands.h"
#include "fs/dlockctl/conn.h"
#include "fs/dlockctl/table.h"

/* an ITEM of LIST into @arg (struct lk_items); out of memory: ->nomem */
static void item_add(const struct dl_proto_msg *m, void *arg)
{
	struct lk_items *items = arg;
	struct lk_item *it;

	if (items->n == items->cap) {
		size_t nc = items->cap ? items->cap * 2 : 16;

		it = realloc(items->v, nc * sizeof(*it));
		if (!it) {
			items->nomem = true;
			return;
		}
		items->v = it;
		items->cap = nc;
	}
	it = &items->v[items->n];
	*it = (struct lk_item){
		.path = malloc(m->str[0].len + 1u),
		.host = malloc(m->str[1].len + 1u),
		.path_len = m->str[0].len,
		.host_len = m->str[1].len,
		.space = m->space,
		.ltype = m->ltype,
		.waiting = m->waiting,
		.ofd = m->found, /* ITEM: an OFD lock (proto.h) */
		.start = m->start,
		.end = m->end,
		.owner = m->owner,
		.token = m->token,
		.pid = m->pid,
		.since_ms = m->since_ms,
	};
	if (!it->path || !it->host) {
		free(it->path);
		free(it->host);
		items->nomem = true;
		return;
	}
	memcpy(it->path, m->str[0].p, m->str[0].len);
	memcpy(it->host, m->str[1].p, m->str[1].len);
	items->n++;
}

/* free what item_add() copied */
static void items_free(struct lk_items *items)
{
	for (size_t i = 0; i < items->n; i++) {
		free(items->v[i].path);
		free(items->v[i].host);
	}
	free(items->v);
}

/* /proc/PID/comm of the holder when it runs on our daemon's host, into
 * it->comm; left "" when it does not or cannot be read */
static void item_comm(struct lk_item *it, const char *host_id)
{
	char p[64];
	ssize_t n;
	int fd;

	if (!host_id || !it->pid || strlen(host_id) != it->host_len ||
	    memcmp(host_id, it->host, it->host_len) != 0)
		return;
	snprintf(p, sizeof(p), "/proc/%" PRIu32 "/comm", it->pid);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	n = read(fd, it->comm, sizeof(it->comm) - 1);
	close(fd);
	if (n > 0 && it->comm[n - 1] == '\n')
		n--;
	it->comm[n > 0 ? n : 0] = '\0';
}

/*
 * Fill a LIST/BREAK target: "name:NAME" and anything given with --resource
 * is a resource name; else a path, passed as a descriptor with the
 * DLOCK_PATHS prefix that covers it.  Returns 0 and *fd (or -1), or an
 * exit status after a message.
 */
static int target(const char *arg, struct dl_proto_msg *m, int *fd)
{
	*fd = -1;
	if (strncmp(arg, "name:", 5) == 0) {
		if (!arg[5])
			return cli_usage("empty lock name in '%s'", arg);
		proto_str(m, 0, arg);
		return 0;
	}
	/* a descriptor we could read or write: the daemon names the file
	 * from its own configuration, and lists what we could open */
	*fd = open(arg, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (*fd < 0 && errno == EACCES)
		*fd = open(arg, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (*fd < 0)
		return cli_fail(EX_USAGE, "%s: %s", arg, strerror(errno));
	m->flags |= DLP_F_FD;
	return 0;
}

/* the options of `locks`; 0, or an exit status after a message */
static int locks_opts(int argc, char **argv, struct table_opts *o)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "noheadings", no_argument, NULL, 'n' },
		{ "raw", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'J' },
		{ NULL, 0, NULL, 0 },
	};
	const char *list = NULL;
	int opt;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "o:nrJ", opts, NULL)) != -1) {
		switch (opt) {
		case 'o':
			list = optarg;
			break;
		case 'n':
			o->noheadings = true;
			break;
		case 'r':
			o->raw = true;
			break;
		case 'J':
			o->json = true;
			break;
		default:
			return cli_usage("bad locks option");
		}
	}
	if (o->raw && o->json)
		return cli_usage("--raw and --json exclude each other");
	if (list)
		return table_parse_columns(o, list);
	/* the table's default columns; JSON gets them all */
	table_default_columns(o);
	return 0;
}

/* dlockctl locks [-o COLUMNS] [-n] [-r | -J] [PATH | name:NAME] */
int cmd_locks(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_LIST } }, rep;
	struct table_opts o = { .json = g_json };
	struct lk_items items = { .n = 0 };
	struct ctl_conn conn;
	char *host_id = NULL;
	int fd = -1, ret;

	ret = locks_opts(argc, argv, &o);
	if (ret)
		return ret;
	if (argc - optind > 1)
		return cli_usage("locks takes at most one PATH or name:NAME");
	if (argc - optind == 1) {
		ret = target(argv[optind], &m, &fd);
		if (ret)
			return ret;
	}
	ret = ctl_connect(&conn, g_socket);
	if (ret == 0 && table_has_column(&o, COL_COMMAND))
		host_id = status_host_id(&conn);
	if (ret == 0)
		ret = ctl_call(&conn, &m, fd, &rep, item_add, &items);
	if (ret == 0)
		ret = ctl_verdict(&rep, "locks");
	if (ret == 0 && items.nomem)
		ret = cli_fail(EX_DAEMON, "out of memory");
	for (size_t i = 0; ret == 0 && i < items.n; i++)
		item_comm(&items.v[i], host_id);
	if (ret == 0)
		ret = o.json ? table_print_json(&o, &items)
			     : table_print(&o, &items);
	free(host_id);
	items_free(&items);
	return ret;
}

/* dlockctl break PATH | name:NAME */
int cmd_break(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_BREAK } }, rep;
	struct ctl_conn conn;
	int fd = -1, ret;

	if (argc != 2)
		return cli_usage("break takes one PATH or name:NAME");
	ret = target(argv[1], &m, &fd);
	if (ret)
		return ret;
	ret = ctl_connect(&conn, g_socket);
	if (!ret)
		ret = ctl_call(&conn, &m, fd, &rep, NULL, NULL);
	if (ret)
		return ret;
	ret = ctl_verdict(&rep, "break");
	if (ret == 0 && g_json)
		printf("{\"broken\": true}\n");
	else if (ret == 0)
		printf("broken: %s\n", argv[1]);
	return ret;
}

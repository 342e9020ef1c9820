/*
 * metrics.c - `dlockctl metrics`: the daemon's metrics in the Prometheus
 * text format, as the daemon wrote them, for node_exporter's textfile
 * collector.
 *
 * The text is passed through unchanged (it is the daemon's own, and a
 * scraper reads it byte for byte); a write error is reported and fails.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "fs/ctl/proto.h"
#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/commands.h"
#include "fs/dlockctl/conn.h"

/* METRICS: each ITEM is whole lines of the text */
static void metrics_piece(const struct dl_proto_msg *m, void *arg)
{
	if (m->nstr)
		fwrite(m->str[0].p, 1, m->str[0].len, stdout);
}

/* dlockctl metrics */
int cmd_metrics(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_METRICS } }, rep;
	struct ctl_conn conn;
	int ret;

	if (argc > 1)
		return cli_usage("metrics takes no argument");
	ret = ctl_connect(&conn, g_socket);
	if (ret)
		return ret;
	ret = ctl_call(&conn, &m, -1, &rep, metrics_piece, NULL);
	if (ret == 0)
		ret = ctl_verdict(&rep, "metrics");
	if (fflush(stdout) != 0 && ret == 0)
		ret = cli_fail(EX_DAEMON, "metrics: %s", strerror(errno));
	return ret;
}

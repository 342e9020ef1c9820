/*
 * commands.h - dlockctl's commands, called by main() with the arguments
 * from the command's name on (argv[0] is the name).  Each returns the
 * process's exit status (see cli.h), after a message when it is not 0.
 */
#ifndef DLOCKCTL_COMMANDS_H
#define DLOCKCTL_COMMANDS_H

#include "fs/dlockctl/conn.h"

int cmd_status(int argc, char **argv);	/* status.c */
int cmd_metrics(int argc, char **argv); /* metrics.c */
int cmd_locks(int argc, char **argv);	/* locks.c */
int cmd_break(int argc, char **argv);	/* locks.c */
int cmd_run(int argc, char **argv);	/* run.c */
int cmd_version(int argc, char **argv); /* version.c */
int cmd_replace(int argc, char **argv); /* version.c */
int cmd_read(int argc, char **argv);	/* version.c */

/*
 * The host id of the daemon on connection @c (status.c), malloc'd; NULL
 * when it cannot tell (after a message if the daemon failed us).
 */
char *status_host_id(struct ctl_conn *c);

#endif /* DLOCKCTL_COMMANDS_H */

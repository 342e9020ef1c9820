/*
 * dlockctl.c - the administrator's view of dlockfs through a daemon's
 * control socket: status, the locks of the cluster, breaking a stuck lock,
 * and running a command under named locks taken in one canonical order.
 *
 * It holds no state of its own: the daemon answers from its lock manager
 * and backend.  Named locks of `run` belong to our connection, so they go
 * when we exit, however we exit.
 *
 * Exit status: 0 done; 1 the lock or the lock record was not there (a
 * timeout, a conflict, nothing to break); 2 usage error; 3 the daemon
 * cannot be reached or spoke nonsense; 4 the daemon refused (permission,
 * a file it will not name, a backend error).  `run` exits with the
 * command's status (128+N for a signal, 126/127 when it cannot be run).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fs/ctl/proto.h"

#define EX_NOLOCK  1
#define EX_USAGE   2
#define EX_DAEMON  3
#define EX_REFUSED 4

static const char *g_socket;
static bool g_json;
static int g_conn = -1;
static uint32_t g_id;
static unsigned char g_buf[DL_PROTO_MAX_FRAME];

static void usage_line(FILE *f)
{
	fputs("usage: dlockctl [--socket PATH] [--json] status\n"
	      "       dlockctl [--socket PATH] [--json] locks [PATH | "
	      "name:NAME]\n"
	      "       dlockctl [--socket PATH] break PATH | name:NAME\n"
	      "       dlockctl [--socket PATH] run --lock NAME [--lock NAME...]"
	      " [--shared] [--timeout SECONDS] -- COMMAND [ARG...]\n",
	      f);
}

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
	va_list ap;

	fputs("dlockctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage_line(stderr);
	return EX_USAGE;
}

static int fail(int code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int fail(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("dlockctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* ---- talking to the daemon ----------------------------------------------- */

static int ctl_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(g_socket) >= sizeof(sa.sun_path))
		return fail(EX_USAGE, "socket path %s is too long", g_socket);
	strcpy(sa.sun_path, g_socket);
	g_conn = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (g_conn < 0 ||
	    connect(g_conn, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		return fail(EX_DAEMON,
			    "cannot reach the dlockfs daemon at %s: %s",
			    g_socket, strerror(errno));
	return 0;
}

/* send @m (with @fd when >= 0); 0 or EX_DAEMON */
static int ctl_send(struct dl_proto_msg *m, int fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int len;

	m->hdr.id = ++g_id;
	len = proto_encode(m, g_buf, sizeof(g_buf));
	if (len < 0)
		return fail(EX_USAGE, "request too large");
	iov = (struct iovec){ g_buf, (size_t)len };
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
	}
	if (sendmsg(g_conn, &mh, MSG_NOSIGNAL) != len)
		return fail(EX_DAEMON, "lost the daemon: %s", strerror(errno));
	return 0;
}

/*
 * Read frames until the REPLY to request @id, passing ITEMs to @item.
 * @deadline_ms (monotonic, 0: none) bounds the wait: -ETIMEDOUT.
 * Returns 0 (verdict in rep->err) or a negative errno (connection).
 */
static int ctl_recv(uint32_t id, struct dl_proto_msg *rep, int64_t deadline_ms,
		    void (*item)(const struct dl_proto_msg *))
{
	for (;;) {
		ssize_t n;

		if (deadline_ms) {
			struct pollfd p = { .fd = g_conn, .events = POLLIN };
			struct timespec ts;
			int64_t now, left;

			clock_gettime(CLOCK_MONOTONIC, &ts);
			now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
			left = deadline_ms - now;
			if (left <= 0)
				return -ETIMEDOUT;
			if (poll(&p, 1,
				 (int)(left > INT_MAX ? INT_MAX : left)) == 0)
				return -ETIMEDOUT;
		}
		n = recv(g_conn, g_buf, sizeof(g_buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		if (proto_decode(g_buf, (size_t)n, rep) < 0)
			return -EBADMSG;
		if (rep->hdr.id != id)
			continue;
		if (rep->hdr.type == DLP_ITEM) {
			if (item)
				item(rep);
			continue;
		}
		if (rep->hdr.type == DLP_REPLY)
			return 0;
	}
}

/* one request, one answer; EX_DAEMON after a message on failure */
static int ctl_call(struct dl_proto_msg *m, int fd, struct dl_proto_msg *rep,
		    void (*item)(const struct dl_proto_msg *))
{
	int ret = ctl_send(m, fd);

	if (ret)
		return ret;
	ret = ctl_recv(m->hdr.id, rep, 0, item);
	if (ret < 0)
		return fail(EX_DAEMON, "lost the daemon: %s", strerror(-ret));
	return 0;
}

/*
 * Write @n bytes of @s for a terminal: a control byte (< 0x20, 0x7f) and
 * the backslash itself come out escaped (\n, \t, \r, \\, \xHH), so a
 * name cannot add lines or terminal escapes to the output; with @keep_nl
 * newlines stay (the daemon's own line breaks).
 */
static void esc_write(FILE *f, const char *s, size_t n, bool keep_nl)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '\\')
			fputs("\\\\", f);
		else if (c == '\n' && keep_nl)
			fputc(c, f);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c == '\r')
			fputs("\\r", f);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
}

static int verdict(const struct dl_proto_msg *rep, const char *what)
{
	char *why = NULL;
	size_t len = 0;
	FILE *f;

	if (rep->err == 0)
		return 0;
	f = open_memstream(&why, &len);
	if (f) {
		if (rep->nstr) {
			fputs(" (", f);
			esc_write(f, rep->str[0].p, rep->str[0].len, false);
			fputc(')', f);
		}
		if (fclose(f) != 0) {
			free(why);
			why = NULL;
		}
	}
	fail(0, "%s: %s%s", what, strerror(-rep->err), why ? why : "");
	free(why);
	return rep->err == -ENOENT || rep->err == -EAGAIN ? EX_NOLOCK
							  : EX_REFUSED;
}

/* ---- output ---------------------------------------------------------------- */

static void json_str(const char *s, size_t n)
{
	putchar('"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void print_time(int64_t ms)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	char b[32];

	gmtime_r(&s, &tm);
	strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%S", &tm);
	printf("%s.%03dZ", b, (int)(ms % 1000));
}

static unsigned g_nitems;

static void print_item(const struct dl_proto_msg *m)
{
	const char *space = m->space ? "posix" : "flock";
	const char *mode = m->ltype == DLP_WRLCK ? "exclusive" : "shared";

	if (g_json) {
		printf("%s\n  {\"resource\": ", g_nitems ? "," : "");
		json_str(m->str[0].p, m->str[0].len);
		printf(", \"space\": \"%s\", \"mode\": \"%s\", \"start\": "
		       "%" PRIu64 ", \"end\": ",
		       space, mode, m->start);
		if (m->end == UINT64_MAX)
			printf("null");
		else
			printf("%" PRIu64, m->end);
		printf(", \"host\": ");
		json_str(m->str[1].p, m->str[1].len);
		printf(", \"pid\": %u, \"owner\": \"%016" PRIx64 "\", "
		       "\"token\": %" PRIu64 ", \"since\": \"",
		       m->pid, m->owner, m->token);
		print_time(m->since_ms);
		printf("\", \"waiting\": %s}", m->waiting ? "true" : "false");
	} else {
		esc_write(stdout, m->str[0].p, m->str[0].len, false);
		printf(" %s %s %" PRIu64 "-", space,
		       m->waiting ? "waiting" : mode, m->start);
		if (m->end == UINT64_MAX)
			printf("EOF");
		else
			printf("%" PRIu64, m->end);
		fputs(" host=", stdout);
		esc_write(stdout, m->str[1].p, m->str[1].len, false);
		printf(" pid=%u owner=%016" PRIx64, m->pid, m->owner);
		if (!m->waiting)
			printf(" token=%" PRIu64, m->token);
		printf(" since=");
		print_time(m->since_ms);
		printf("\n");
	}
	g_nitems++;
}

/* ---- naming a target ---------------------------------------------------------- */

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
			return usage("empty lock name in '%s'", arg);
		proto_str(m, 0, arg);
		return 0;
	}
	/* a descriptor we could read or write: the daemon names the file
	 * from its own configuration, and lists what we could open */
	*fd = open(arg, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (*fd < 0 && errno == EACCES)
		*fd = open(arg, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (*fd < 0)
		return fail(EX_USAGE, "%s: %s", arg, strerror(errno));
	m->flags |= DLP_F_FD;
	return 0;
}

/* ---- commands ------------------------------------------------------------------ */

static int cmd_status(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_STATUS } }, rep;
	char *text, *line, *save = NULL;
	bool first = true;
	int ret;

	if (argc > 1)
		return usage("status takes no argument");
	ret = ctl_connect();
	if (!ret)
		ret = ctl_call(&m, -1, &rep, NULL);
	if (ret)
		return ret;
	ret = verdict(&rep, "status");
	if (ret)
		return ret;
	text = rep.nstr ? strndup(rep.str[0].p, rep.str[0].len) : strdup("");
	if (!text)
		return fail(EX_DAEMON, "out of memory");
	if (!g_json) {
		esc_write(stdout, text, strlen(text), true);
		free(text);
		return 0;
	}
	printf("{");
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *eq = strchr(line, '=');
		const char *v;

		if (!eq)
			continue;
		*eq = '\0';
		v = eq + 1;
		printf("%s\n  ", first ? "" : ",");
		json_str(line, strlen(line));
		printf(": ");
		if (v[0] && strspn(v, "0123456789") == strlen(v) &&
		    strlen(v) < 19)
			printf("%s", v);
		else
			json_str(v, strlen(v));
		first = false;
	}
	printf("\n}\n");
	free(text);
	return 0;
}

static int cmd_locks(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_LIST } }, rep;
	int fd = -1, ret;

	if (argc > 2)
		return usage("locks takes at most one PATH or name:NAME");
	if (argc == 2) {
		ret = target(argv[1], &m, &fd);
		if (ret)
			return ret;
	}
	ret = ctl_connect();
	if (ret)
		return ret;
	if (g_json)
		printf("[");
	ret = ctl_call(&m, fd, &rep, print_item);
	if (g_json)
		printf("%s]\n", g_nitems ? "\n" : "");
	if (ret)
		return ret;
	return verdict(&rep, "locks");
}

static int cmd_break(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_BREAK } }, rep;
	int fd = -1, ret;

	if (argc != 2)
		return usage("break takes one PATH or name:NAME");
	ret = target(argv[1], &m, &fd);
	if (ret)
		return ret;
	ret = ctl_connect();
	if (!ret)
		ret = ctl_call(&m, fd, &rep, NULL);
	if (ret)
		return ret;
	ret = verdict(&rep, "break");
	if (ret == 0 && g_json)
		printf("{\"broken\": true}\n");
	else if (ret == 0)
		printf("broken: %s\n", argv[1]);
	return ret;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* take named lock @name; 0, or an exit status after a message */
static int take(const char *name, bool shared, int64_t deadline)
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
	ret = ctl_send(&m, -1);
	if (ret)
		return ret;
	ret = ctl_recv(m.hdr.id, &rep, deadline, NULL);
	if (ret == -ETIMEDOUT) {
		struct dl_proto_msg c = { .hdr = { .type = DLP_CANCEL } };
		uint32_t id = m.hdr.id;

		c.target_id = id;
		ret = ctl_send(&c, -1);
		if (ret)
			return ret;
		ret = ctl_recv(id, &rep, 0, NULL);
		if (ret == 0 && rep.err == -EINTR)
			return fail(EX_NOLOCK, "timed out waiting for lock %s",
				    name);
	}
	if (ret < 0)
		return fail(EX_DAEMON, "lost the daemon: %s", strerror(-ret));
	if (rep.err == -EDEADLK || rep.err == -EAGAIN)
		return fail(EX_NOLOCK, "lock %s: %s", name,
			    rep.err == -EAGAIN ? "held by another"
					       : strerror(EDEADLK));
	return verdict(&rep, name);
}

#define CTL_RUN_MAX_LOCKS 256

static int cmd_run(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "lock", required_argument, NULL, 'l' },
		{ "shared", no_argument, NULL, 's' },
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	char *names[CTL_RUN_MAX_LOCKS];
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
				return usage("a lock name must have 1 to %d "
					     "bytes",
					     DL_PROTO_MAX_STR);
			if (nnames == CTL_RUN_MAX_LOCKS)
				return usage("at most %d --lock names",
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
				return usage("bad --timeout '%s': want seconds "
					     ">= 0",
					     optarg);
			break;
		default:
			return usage("bad run option");
		}
	}
	if (!nnames)
		return usage("run needs at least one --lock NAME");
	if (optind >= argc)
		return usage("run needs -- COMMAND");
	/* the canonical order: every `run` takes shared names alike */
	qsort(names, (size_t)nnames, sizeof(*names), cmp_str);
	ret = ctl_connect();
	if (ret)
		return ret;
	if (timeout == 0)
		deadline = -1;
	else if (timeout > 0)
		deadline = mono_ms() + (int64_t)(timeout * 1000) + 1;
	for (int i = 0; i < nnames; i++) {
		if (i && strcmp(names[i], names[i - 1]) == 0)
			continue;
		ret = take(names[i], shared, deadline);
		if (ret)
			return ret; /* our exit releases what we hold */
	}
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		return fail(EX_DAEMON, "fork: %s", strerror(errno));
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
			return fail(EX_DAEMON, "waitpid: %s", strerror(errno));
	close(g_conn); /* releases the locks */
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd;
	int opt;

	g_socket = getenv("DLOCK_SOCKET");
	if (!g_socket || !g_socket[0])
		g_socket = DL_SOCKET_DEFAULT;
	while ((opt = getopt_long(argc, argv, "+S:jh", opts, NULL)) != -1) {
		switch (opt) {
		case 'S':
			g_socket = optarg;
			break;
		case 'j':
			g_json = true;
			break;
		case 'h':
			usage_line(stdout);
			return 0;
		default:
			usage_line(stderr);
			return EX_USAGE;
		}
	}
	if (optind >= argc)
		return usage("missing command");
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
	return usage("unknown command '%s'", cmd);
}

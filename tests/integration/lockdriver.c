/*
 * lockdriver.c - lock scenarios run by real processes in a directory.
 *
 * Each scenario forks a few "workers": processes that open files and take
 * locks on command from the scenario process, which talks to them through
 * pipes and asserts the exact outcome of every call (return value, errno,
 * what F_GETLK reports).  Nothing is synchronised with sleeps: a grant is a
 * bounded wait for the worker's answer; "still blocked" is a bounded wait
 * until /proc/PID/syscall shows the worker inside the lock call followed by
 * 300 ms without an answer (a negative check).
 *
 * The same scenarios run against a plain local directory, where the
 * kernel's own lock code is the reference (every scenario must pass there),
 * and against a dlockfs mount, which must behave identically.  --dlockfs
 * adds checks of the user.dlock.* xattrs and the dlockfs-only scenarios.
 *
 * It deliberately does not mount anything: the shell tests do that.
 *
 * Usage: lockdriver [OPTIONS] DIR [all | SCENARIO...]
 * Output: one line per scenario, "ok NAME", "skip NAME: why" or
 * "FAIL NAME: reason".  Exit 0 when nothing failed, 1 otherwise, 2 on a
 * usage error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define PATH_LEN	 1024
#define MAX_WORKERS	 8
#define BLOCKED_QUIET_MS 300 /* "still blocked": no answer for this long */
#define REPORT_LEN	 2048

/* options */
static const char *g_dir;
static bool g_dlockfs;
static int g_lock_timeout; /* seconds the mount was given, 0 = none */
static int g_nwaiters = 100;
static int g_churn_iter = 2000;	 /* cycles per churning process */
static int g_timeout_ms = 10000; /* every single wait */
static int g_scenario_timeout_s = 120;
static bool g_verbose;
static bool g_strict; /* async release after close fails */

/* per scenario (in the scenario process) */
static char g_file[PATH_LEN];  /* the scenario's lock file */
static char g_file2[PATH_LEN]; /* a second, unrelated file */
static int g_report_fd = -1;
static const char *g_scenario;

/* ------------------------------------------------------------------ */
/* small helpers */

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *errname(int e)
{
	static char buf[32];

	switch (e) {
	case 0:
		return "success";
	case EAGAIN:
		return "EAGAIN";
	case EACCES:
		return "EACCES";
	case EDEADLK:
		return "EDEADLK";
	case EINTR:
		return "EINTR";
	case ENOLCK:
		return "ENOLCK";
	case EBADF:
		return "EBADF";
	case EINVAL:
		return "EINVAL";
	case ENOSYS:
		return "ENOSYS";
	case EIO:
		return "EIO";
	case ENOENT:
		return "ENOENT";
	case EPERM:
		return "EPERM";
	case EOPNOTSUPP:
		return "EOPNOTSUPP";
	case ENODATA:
		return "ENODATA";
	case ETIMEDOUT:
		return "ETIMEDOUT";
	default:
		snprintf(buf, sizeof(buf), "errno %d", e);
		return buf;
	}
}

static const char *typename(int t)
{
	switch (t) {
	case F_RDLCK:
		return "F_RDLCK";
	case F_WRLCK:
		return "F_WRLCK";
	case F_UNLCK:
		return "F_UNLCK";
	default:
		return "F_???";
	}
}

static const char *cmdname(int c)
{
	switch (c) {
	case F_SETLK:
		return "F_SETLK";
	case F_SETLKW:
		return "F_SETLKW";
	case F_GETLK:
		return "F_GETLK";
	case F_OFD_SETLK:
		return "F_OFD_SETLK";
	case F_OFD_SETLKW:
		return "F_OFD_SETLKW";
	case F_OFD_GETLK:
		return "F_OFD_GETLK";
	default:
		return "F_???";
	}
}

static const char *lockfname(int c)
{
	switch (c) {
	case F_LOCK:
		return "F_LOCK";
	case F_TLOCK:
		return "F_TLOCK";
	case F_ULOCK:
		return "F_ULOCK";
	case F_TEST:
		return "F_TEST";
	default:
		return "F_???";
	}
}

static void flockname(int how, char *buf, size_t len)
{
	const char *base;

	switch (how & ~LOCK_NB) {
	case LOCK_SH:
		base = "LOCK_SH";
		break;
	case LOCK_EX:
		base = "LOCK_EX";
		break;
	case LOCK_UN:
		base = "LOCK_UN";
		break;
	default:
		base = "LOCK_???";
		break;
	}
	snprintf(buf, len, "%s%s", base, (how & LOCK_NB) ? "|LOCK_NB" : "");
}

static ssize_t read_full(int fd, void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, (char *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int write_full(int fd, const void *buf, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, (const char *)buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		done += (size_t)n;
	}
	return 0;
}

/* close every descriptor above 2 except @keep1 and @keep2 */
static void close_other_fds(int keep1, int keep2)
{
	long max = sysconf(_SC_OPEN_MAX);

	if (max < 0 || max > 65536)
		max = 65536;
	for (int fd = 3; fd < max; fd++)
		if (fd != keep1 && fd != keep2)
			close(fd);
}

/* ------------------------------------------------------------------ */
/* workers: processes that execute lock calls on command */

enum op {
	OP_OPEN,     /* path -> fd */
	OP_CLOSE,    /* fd */
	OP_DUP,	     /* fd -> new fd */
	OP_FLOCK,    /* fd, how */
	OP_FCNTL,    /* fd, cmd, type, whence, start, len -> flock */
	OP_LOCKF,    /* fd, cmd, start (lseek), len */
	OP_LSEEK,    /* fd, start */
	OP_TRUNCATE, /* fd, len */
	OP_SIGSETUP, /* SIGUSR1 handler without SA_RESTART */
	OP_GETXATTR, /* path, name (in buf) -> value in buf */
};

struct req {
	int op;
	int fd;
	int cmd;
	int how;
	short type;
	short whence;
	int64_t start;
	int64_t len;
	char path[PATH_LEN];
	char name[64];
};

struct rsp {
	int rc;
	int err;
	struct flock fl;
	int buflen;
	char buf[1024];
};

struct worker {
	const char *name;
	pid_t pid;
	int to;	      /* commands to the worker */
	int from;     /* answers from the worker */
	bool pending; /* a command was sent and not yet answered */
	bool dead;
	char what[160]; /* the pending command, for messages */
};

static struct worker g_workers[MAX_WORKERS];
static int g_nworkers;

static void on_sigusr1(int sig)
{
	(void)sig;
}

static void worker_exec(const struct req *r, struct rsp *s)
{
	struct flock fl;

	errno = 0;
	switch (r->op) {
	case OP_OPEN:
		s->rc = open(r->path, O_RDWR | O_CREAT, 0644);
		break;
	case OP_CLOSE:
		s->rc = close(r->fd);
		break;
	case OP_DUP:
		s->rc = dup(r->fd);
		break;
	case OP_FLOCK:
		s->rc = flock(r->fd, r->how);
		break;
	case OP_FCNTL:
		memset(&fl, 0, sizeof(fl));
		fl.l_type = r->type;
		fl.l_whence = r->whence;
		fl.l_start = r->start;
		fl.l_len = r->len;
		s->rc = fcntl(r->fd, r->cmd, &fl);
		s->fl = fl;
		break;
	case OP_LOCKF:
		if (lseek(r->fd, r->start, SEEK_SET) < 0) {
			s->rc = -1;
			break;
		}
		s->rc = lockf(r->fd, r->cmd, r->len);
		break;
	case OP_LSEEK:
		s->rc = lseek(r->fd, r->start, SEEK_SET) < 0 ? -1 : 0;
		break;
	case OP_TRUNCATE:
		s->rc = ftruncate(r->fd, r->len);
		break;
	case OP_SIGSETUP: {
		struct sigaction sa;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = on_sigusr1;
		sa.sa_flags = 0; /* no SA_RESTART: the lock call must fail */
		sigemptyset(&sa.sa_mask);
		s->rc = sigaction(SIGUSR1, &sa, NULL);
		break;
	}
	case OP_GETXATTR: {
		ssize_t n =
			getxattr(r->path, r->name, s->buf, sizeof(s->buf) - 1);

		s->rc = n < 0 ? -1 : 0;
		s->buflen = n < 0 ? 0 : (int)n;
		s->buf[s->buflen] = '\0';
		break;
	}
	default:
		s->rc = -1;
		errno = EINVAL;
		break;
	}
	s->err = s->rc < 0 ? errno : 0;
}

static void __attribute__((noreturn)) worker_main(int in, int out, pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	close_other_fds(in, out);
	for (;;) {
		struct req r;
		struct rsp s;

		if (read_full(in, &r, sizeof(r)) != (ssize_t)sizeof(r))
			_exit(0);
		memset(&s, 0, sizeof(s));
		worker_exec(&r, &s);
		if (write_full(out, &s, sizeof(s)) < 0)
			_exit(1);
	}
}

/* ------------------------------------------------------------------ */
/* failing a scenario */

static void kill_workers(void)
{
	for (int i = 0; i < g_nworkers; i++) {
		struct worker *w = &g_workers[i];

		if (w->dead)
			continue;
		kill(w->pid, SIGKILL);
		waitpid(w->pid, NULL, 0);
		w->dead = true;
	}
}

static void cleanup_files(void)
{
	if (g_file[0])
		unlink(g_file);
	if (g_file2[0])
		unlink(g_file2);
}

static void __attribute__((noreturn, format(printf, 2, 3)))
fail_at(int line, const char *fmt, ...)
{
	char msg[REPORT_LEN];
	int n;
	va_list ap;

	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n >= 0 && (size_t)n < sizeof(msg) - 24)
		snprintf(msg + n, sizeof(msg) - (size_t)n, " (line %d)", line);
	for (char *p = msg; *p; p++)
		if (*p == '\n')
			*p = ' ';
	if (g_report_fd >= 0)
		write_full(g_report_fd, msg, strlen(msg));
	kill_workers();
	cleanup_files();
	_exit(1);
}

#define FAIL(...) fail_at(__LINE__, __VA_ARGS__)
#define CHECK(cond, ...)                   \
	do {                               \
		if (!(cond))               \
			FAIL(__VA_ARGS__); \
	} while (0)

static void __attribute__((noreturn)) skip_scenario(const char *why)
{
	if (g_report_fd >= 0)
		write_full(g_report_fd, why, strlen(why));
	kill_workers();
	cleanup_files();
	_exit(77);
}

/* ------------------------------------------------------------------ */
/* talking to workers */

static struct worker *w_new(const char *name)
{
	int to[2], from[2];
	pid_t parent = getpid();
	struct worker *w;

	if (g_nworkers == MAX_WORKERS)
		FAIL("too many workers");
	if (pipe(to) < 0 || pipe(from) < 0)
		FAIL("pipe: %s", strerror(errno));
	w = &g_workers[g_nworkers];
	memset(w, 0, sizeof(*w));
	w->name = name;
	w->pid = fork();
	if (w->pid < 0)
		FAIL("fork: %s", strerror(errno));
	if (w->pid == 0) {
		close(to[1]);
		close(from[0]);
		worker_main(to[0], from[1], parent);
	}
	g_nworkers++;
	close(to[0]);
	close(from[1]);
	w->to = to[1];
	w->from = from[0];
	return w;
}

static void describe(const struct req *r, char *buf, size_t len)
{
	char how[32];

	switch (r->op) {
	case OP_OPEN:
		snprintf(buf, len, "open");
		break;
	case OP_CLOSE:
		snprintf(buf, len, "close(%d)", r->fd);
		break;
	case OP_DUP:
		snprintf(buf, len, "dup(%d)", r->fd);
		break;
	case OP_FLOCK:
		flockname(r->how, how, sizeof(how));
		snprintf(buf, len, "flock(%d, %s)", r->fd, how);
		break;
	case OP_FCNTL:
		snprintf(buf, len,
			 "fcntl(%d, %s, %s whence %d start %" PRId64
			 " len %" PRId64 ")",
			 r->fd, cmdname(r->cmd), typename(r->type), r->whence,
			 r->start, r->len);
		break;
	case OP_LOCKF:
		snprintf(buf, len,
			 "lockf(%d, %s, %" PRId64 ") at offset %" PRId64, r->fd,
			 lockfname(r->cmd), r->len, r->start);
		break;
	case OP_LSEEK:
		snprintf(buf, len, "lseek(%d, %" PRId64 ")", r->fd, r->start);
		break;
	case OP_TRUNCATE:
		snprintf(buf, len, "ftruncate(%d, %" PRId64 ")", r->fd, r->len);
		break;
	case OP_SIGSETUP:
		snprintf(buf, len, "sigaction(SIGUSR1)");
		break;
	case OP_GETXATTR:
		snprintf(buf, len, "getxattr(%s)", r->name);
		break;
	default:
		snprintf(buf, len, "op %d", r->op);
		break;
	}
}

static void w_send(struct worker *w, const struct req *r, int line)
{
	if (w->dead)
		fail_at(line, "%s: worker is dead", w->name);
	if (w->pending)
		fail_at(line, "%s: still busy with %s", w->name, w->what);
	describe(r, w->what, sizeof(w->what));
	if (g_verbose)
		fprintf(stderr, "  [%s] %s: %s\n", g_scenario, w->name,
			w->what);
	if (write_full(w->to, r, sizeof(*r)) < 0)
		fail_at(line, "%s: cannot send %s: %s", w->name, w->what,
			strerror(errno));
	w->pending = true;
}

/* wait up to @ms for the answer; false on timeout */
static bool w_poll(struct worker *w, int ms)
{
	struct pollfd p = { .fd = w->from, .events = POLLIN };
	int64_t deadline = now_ms() + ms;

	for (;;) {
		int64_t left = deadline - now_ms();
		int n = poll(&p, 1, left < 0 ? 0 : (int)left);

		if (n > 0)
			return true;
		if (n < 0 && errno == EINTR)
			continue;
		return false;
	}
}

static void w_recv(struct worker *w, struct rsp *s, int ms, int line)
{
	if (!w_poll(w, ms))
		fail_at(line, "%s: no answer to %s within %d ms", w->name,
			w->what, ms);
	if (read_full(w->from, s, sizeof(*s)) != (ssize_t)sizeof(*s))
		fail_at(line, "%s: died during %s", w->name, w->what);
	w->pending = false;
	if (g_verbose)
		fprintf(stderr, "  [%s] %s: %s -> %d %s\n", g_scenario, w->name,
			w->what, s->rc, errname(s->err));
}

static struct rsp w_do(struct worker *w, const struct req *r, int line)
{
	struct rsp s;

	w_send(w, r, line);
	w_recv(w, &s, g_timeout_ms, line);
	return s;
}

static void expect_err(struct worker *w, const struct rsp *s, int want,
		       int line)
{
	if (want == 0 && s->rc < 0)
		fail_at(line, "%s: %s failed with %s, expected success",
			w->name, w->what, errname(s->err));
	if (want != 0 && s->rc >= 0)
		fail_at(line, "%s: %s succeeded, expected %s", w->name, w->what,
			errname(want));
	if (want != 0 && s->err != want)
		fail_at(line, "%s: %s failed with %s, expected %s", w->name,
			w->what, errname(s->err), errname(want));
}

/* is @pid inside system call @sysno?  1 yes, 0 no, -1 cannot tell */
static int in_syscall(pid_t pid, long sysno)
{
	char path[64], buf[128];
	long nr;
	int fd;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/syscall", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if (sscanf(buf, "%ld", &nr) != 1)
		return 0; /* "running" */
	return nr == sysno;
}

/*
 * Assert that @w's pending call is blocked: wait (bounded) until the
 * worker sits inside @sysno, then require 300 ms without an answer.
 */
static void expect_blocked_at(struct worker *w, long sysno, int line)
{
	int64_t deadline = now_ms() + g_timeout_ms;
	struct rsp s;

	for (;;) {
		int r = in_syscall(w->pid, sysno);

		if (r != 0)
			break; /* inside it, or /proc cannot tell */
		if (w_poll(w, 10))
			goto answered;
		if (now_ms() > deadline)
			fail_at(line, "%s: %s never entered the lock call",
				w->name, w->what);
	}
	if (!w_poll(w, BLOCKED_QUIET_MS))
		return;
answered:
	w_recv(w, &s, 0, line);
	fail_at(line, "%s: %s should block but returned %d (%s)", w->name,
		w->what, s.rc, errname(s.err));
}

/* ---- the operations, as the scenarios use them ---- */

static int op_open_at(struct worker *w, const char *path, int line)
{
	struct req r = { .op = OP_OPEN };
	struct rsp s;

	snprintf(r.path, sizeof(r.path), "%s", path);
	s = w_do(w, &r, line);
	expect_err(w, &s, 0, line);
	return s.rc;
}

static int op_dup_at(struct worker *w, int fd, int line)
{
	struct req r = { .op = OP_DUP, .fd = fd };
	struct rsp s = w_do(w, &r, line);

	expect_err(w, &s, 0, line);
	return s.rc;
}

static void op_simple_at(struct worker *w, int op, int fd, int64_t arg,
			 int line)
{
	struct req r = { .op = op, .fd = fd, .start = arg, .len = arg };
	struct rsp s = w_do(w, &r, line);

	expect_err(w, &s, 0, line);
}

static struct req flock_req(int fd, int how)
{
	struct req r = { .op = OP_FLOCK, .fd = fd, .how = how };

	return r;
}

static struct req fcntl_req(int fd, int cmd, int type, int whence,
			    int64_t start, int64_t len)
{
	struct req r = { .op = OP_FCNTL,
			 .fd = fd,
			 .cmd = cmd,
			 .type = (short)type,
			 .whence = (short)whence,
			 .start = start,
			 .len = len };

	return r;
}

static struct req lockf_req(int fd, int cmd, int64_t off, int64_t len)
{
	struct req r = {
		.op = OP_LOCKF, .fd = fd, .cmd = cmd, .start = off, .len = len
	};

	return r;
}

static void op_expect_at(struct worker *w, struct req r, int want, int line)
{
	struct rsp s = w_do(w, &r, line);

	expect_err(w, &s, want, line);
}

#define ANY_PID INT_MIN

/* run a GETLK-type request and compare what it reports */
static void op_getlk_at(struct worker *w, int fd, int cmd, int type,
			int64_t start, int64_t len, int want_type,
			int64_t want_start, int64_t want_len, int want_pid,
			int line)
{
	struct req r = fcntl_req(fd, cmd, type, SEEK_SET, start, len);
	struct rsp s = w_do(w, &r, line);
	const struct flock *fl = &s.fl;

	expect_err(w, &s, 0, line);
	if (fl->l_type != want_type)
		fail_at(line,
			"%s: %s reported %s (start %jd len %jd pid %d),"
			" expected %s",
			w->name, w->what, typename(fl->l_type),
			(intmax_t)fl->l_start, (intmax_t)fl->l_len,
			(int)fl->l_pid, typename(want_type));
	if (want_type == F_UNLCK)
		return;
	if (fl->l_whence != SEEK_SET || fl->l_start != want_start ||
	    fl->l_len != want_len ||
	    (want_pid != ANY_PID && fl->l_pid != want_pid))
		fail_at(line,
			"%s: %s reported %s whence %d start %jd len %jd"
			" pid %d, expected whence 0 start %jd len %jd pid %d",
			w->name, w->what, typename(fl->l_type), fl->l_whence,
			(intmax_t)fl->l_start, (intmax_t)fl->l_len,
			(int)fl->l_pid, (intmax_t)want_start,
			(intmax_t)want_len, want_pid);
}

static void send_at(struct worker *w, struct req r, int line)
{
	w_send(w, &r, line);
}

static void result_at(struct worker *w, int want, int ms, int line)
{
	struct rsp s;

	w_recv(w, &s, ms, line);
	expect_err(w, &s, want, line);
}

static void kill9_at(struct worker *w, int line)
{
	int st;

	if (kill(w->pid, SIGKILL) < 0)
		fail_at(line, "kill %s: %s", w->name, strerror(errno));
	if (waitpid(w->pid, &st, 0) < 0)
		fail_at(line, "waitpid %s: %s", w->name, strerror(errno));
	w->dead = true;
}

static int open_file_at(struct worker *w, int line)
{
	return op_open_at(w, g_file, line);
}

#define OPEN(w)		   open_file_at((w), __LINE__)
#define OPEN2(w)	   op_open_at((w), g_file2, __LINE__)
#define DUP(w, fd)	   op_dup_at((w), (fd), __LINE__)
#define CLOSE(w, fd)	   op_simple_at((w), OP_CLOSE, (fd), 0, __LINE__)
#define TRUNCATE(w, fd, n) op_simple_at((w), OP_TRUNCATE, (fd), (n), __LINE__)
#define LSEEK(w, fd, n)	   op_simple_at((w), OP_LSEEK, (fd), (n), __LINE__)
#define FLOCK(w, fd, how, want) \
	op_expect_at((w), flock_req((fd), (how)), (want), __LINE__)
#define LK(w, fd, cmd, type, start, len, want)                                 \
	op_expect_at((w),                                                      \
		     fcntl_req((fd), (cmd), (type), SEEK_SET, (start), (len)), \
		     (want), __LINE__)
#define LKW(w, fd, cmd, type, whence, start, len, want)                        \
	op_expect_at((w),                                                      \
		     fcntl_req((fd), (cmd), (type), (whence), (start), (len)), \
		     (want), __LINE__)
#define LOCKF(w, fd, cmd, off, len, want)                               \
	op_expect_at((w), lockf_req((fd), (cmd), (off), (len)), (want), \
		     __LINE__)
#define GETLK(w, fd, type, start, len, wt, ws, wl, wp)                      \
	op_getlk_at((w), (fd), F_GETLK, (type), (start), (len), (wt), (ws), \
		    (wl), (wp), __LINE__)
#define OFD_GETLK(w, fd, type, start, len, wt, ws, wl)                    \
	op_getlk_at((w), (fd), F_OFD_GETLK, (type), (start), (len), (wt), \
		    (ws), (wl), -1, __LINE__)
#define UNLOCKED(w, fd, type, start, len)                                      \
	op_getlk_at((w), (fd), F_GETLK, (type), (start), (len), F_UNLCK, 0, 0, \
		    0, __LINE__)
#define SEND_FLOCK(w, fd, how) send_at((w), flock_req((fd), (how)), __LINE__)
#define SEND_LK(w, fd, cmd, type, start, len)                                  \
	send_at((w), fcntl_req((fd), (cmd), (type), SEEK_SET, (start), (len)), \
		__LINE__)
#define SEND_LOCKF(w, fd, cmd, off, len) \
	send_at((w), lockf_req((fd), (cmd), (off), (len)), __LINE__)
#define BLOCKED(w, sysno) expect_blocked_at((w), (sysno), __LINE__)
#define RESULT(w, want)	  result_at((w), (want), g_timeout_ms, __LINE__)
#define KILL9(w)	  kill9_at((w), __LINE__)
#define SIGSETUP(w)	  op_simple_at((w), OP_SIGSETUP, -1, 0, __LINE__)

static void interrupt_at(struct worker *w, int line)
{
	if (kill(w->pid, SIGUSR1) < 0)
		fail_at(line, "kill -USR1 %s: %s", w->name, strerror(errno));
}

#define INTERRUPT(w) interrupt_at((w), __LINE__)

/*
 * A flock lock or an OFD lock is released by the last close of its open
 * file description.  A local filesystem does that before close() returns;
 * FUSE sends that release (FUSE_RELEASE) in the background, so a check
 * right after the close may race with the daemon.  These helpers check at
 * once and, if the lock is still there, wait (bounded) for it to go and
 * print a note, or fail with --strict.
 */
static void note_async_at(struct worker *w, int64_t ms, int line)
{
	if (g_strict)
		fail_at(line,
			"%s: %s found the lock still held after the "
			"holder's last close",
			w->name, w->what);
	fprintf(stderr,
		"note %s: lock released %" PRId64 " ms after the "
		"last close, not at once (asynchronous FUSE_RELEASE; line "
		"%d)\n",
		g_scenario, ms, line);
}

/* flock @how (without LOCK_NB) must succeed now or very soon */
static void flock_after_close_at(struct worker *w, int fd, int how, int line)
{
	struct req r = flock_req(fd, how | LOCK_NB);
	struct rsp s = w_do(w, &r, line);
	int64_t t0 = now_ms();

	if (s.rc == 0)
		return;
	expect_err(w, &s, EWOULDBLOCK, line);
	r = flock_req(fd, how);
	w_send(w, &r, line);
	w_recv(w, &s, g_timeout_ms, line);
	expect_err(w, &s, 0, line);
	note_async_at(w, now_ms() - t0, line);
}

/* F_OFD_GETLK of @type over [start, start+len) must soon report nothing */
static void ofd_free_after_close_at(struct worker *w, int fd, int type,
				    int64_t start, int64_t len, int line)
{
	int64_t t0 = now_ms();
	bool first = true;

	for (;;) {
		struct req r =
			fcntl_req(fd, F_OFD_GETLK, type, SEEK_SET, start, len);
		struct rsp s = w_do(w, &r, line);

		expect_err(w, &s, 0, line);
		if (s.fl.l_type == F_UNLCK)
			break;
		if (first && g_strict)
			note_async_at(w, 0, line); /* fails */
		first = false;
		if (now_ms() - t0 > g_timeout_ms)
			fail_at(line,
				"%s: %s still reports %s start %jd len "
				"%jd after the holder closed",
				w->name, w->what, typename(s.fl.l_type),
				(intmax_t)s.fl.l_start, (intmax_t)s.fl.l_len);
		poll(NULL, 0, 10); /* bounded re-check, see above */
	}
	if (!first)
		note_async_at(w, now_ms() - t0, line);
}

#define FLOCK_AFTER_CLOSE(w, fd, how) \
	flock_after_close_at((w), (fd), (how), __LINE__)
#define OFD_FREE_AFTER_CLOSE(w, fd, type, start, len) \
	ofd_free_after_close_at((w), (fd), (type), (start), (len), __LINE__)

/* ------------------------------------------------------------------ */
/* the user.dlock.* xattrs (dlockfs only) */

/* value of @name on @path in @buf; returns its length or -errno */
static int xattr_read(const char *path, const char *name, char *buf, size_t len)
{
	ssize_t n = getxattr(path, name, buf, len - 1);

	if (n < 0) {
		buf[0] = '\0';
		return -errno;
	}
	buf[n] = '\0';
	return (int)n;
}

static bool blank(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\n' && *s != '\t')
			return false;
	return true;
}

/* how many lines of @val hold @pid as a field ("1234" or "pid=1234")? */
static int lines_with_pid(const char *val, pid_t pid)
{
	char copy[8192], want[24];
	char *save_line = NULL;
	int count = 0;

	snprintf(copy, sizeof(copy), "%s", val);
	snprintf(want, sizeof(want), "%d", (int)pid);
	for (char *l = strtok_r(copy, "\n", &save_line); l;
	     l = strtok_r(NULL, "\n", &save_line)) {
		char *save_f = NULL;

		for (char *f = strtok_r(l, " \t", &save_f); f;
		     f = strtok_r(NULL, " \t", &save_f))
			if (strcmp(f, want) == 0 ||
			    (strncmp(f, "pid=", 4) == 0 &&
			     strcmp(f + 4, want) == 0)) {
				count++;
				break;
			}
	}
	return count;
}

static int count_lines(const char *val)
{
	int n = 0;
	bool in_line = false;

	for (; *val; val++) {
		if (*val == '\n') {
			in_line = false;
		} else if (!in_line && !blank((char[]){ *val, 0 })) {
			in_line = true;
			n++;
		}
	}
	return n;
}

/* dlockfs: no queued request may remain for the file */
static void expect_no_waiters_at(int line)
{
	char buf[8192];
	int n;

	if (!g_dlockfs)
		return;
	n = xattr_read(g_file, "user.dlock.waiters", buf, sizeof(buf));
	if (n == -ENODATA)
		return;
	if (n < 0)
		fail_at(line, "getxattr user.dlock.waiters: %s", errname(-n));
	if (!blank(buf))
		fail_at(line, "user.dlock.waiters is not empty: \"%s\"", buf);
}

/* dlockfs: the number of granted locks listed for the file */
static int xattr_lock_count_at(int line)
{
	char buf[8192];
	int n = xattr_read(g_file, "user.dlock.locks", buf, sizeof(buf));

	if (n == -ENODATA)
		return 0;
	if (n < 0)
		fail_at(line, "getxattr user.dlock.locks: %s", errname(-n));
	return count_lines(buf);
}

#define NO_WAITERS() expect_no_waiters_at(__LINE__)

/* ------------------------------------------------------------------ */
/* scenarios: flock */

static void sc_flock_ex_ex(void)
{
	struct worker *a = w_new("A"), *b = w_new("B");
	int fa = OPEN(a), fb = OPEN(b), fa2;

	FLOCK(a, fa, LOCK_EX, 0);
	FLOCK(b, fb, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	FLOCK(b, fb, LOCK_SH | LOCK_NB, EWOULDBLOCK);
	/* flock belongs to the open file description: a second open in the
	 * same process conflicts too */
	fa2 = OPEN(a);
	FLOCK(a, fa2, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	/* taking it again through the same description is a no-op */
	FLOCK(a, fa, LOCK_EX | LOCK_NB, 0);
	FLOCK(a, fa, LOCK_UN, 0);
	FLOCK(b, fb, LOCK_EX | LOCK_NB, 0);
	FLOCK(a, fa2, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	FLOCK(b, fb, LOCK_UN, 0);
	FLOCK(a, fa2, LOCK_EX | LOCK_NB, 0);
}

static void sc_flock_sh_sh(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	FLOCK(a, fa, LOCK_SH, 0);
	FLOCK(b, fb, LOCK_SH | LOCK_NB, 0);
	FLOCK(c, fc, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	FLOCK(c, fc, LOCK_SH | LOCK_NB, 0);
	FLOCK(a, fa, LOCK_UN, 0);
	FLOCK(c, fc, LOCK_UN, 0);
	FLOCK(a, fa, LOCK_EX | LOCK_NB, EWOULDBLOCK); /* B still shares */
	FLOCK(b, fb, LOCK_UN, 0);
	FLOCK(a, fa, LOCK_EX | LOCK_NB, 0);
}

static void sc_flock_sh_ex(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	FLOCK(a, fa, LOCK_SH, 0);
	FLOCK(b, fb, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	/* sole holder upgrades, then downgrades */
	FLOCK(a, fa, LOCK_EX | LOCK_NB, 0);
	FLOCK(b, fb, LOCK_SH | LOCK_NB, EWOULDBLOCK);
	FLOCK(a, fa, LOCK_SH, 0);
	FLOCK(b, fb, LOCK_SH | LOCK_NB, 0);
	FLOCK(c, fc, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	FLOCK(a, fa, LOCK_UN, 0);
	FLOCK(b, fb, LOCK_UN, 0);
	FLOCK(c, fc, LOCK_EX | LOCK_NB, 0);
}

static void sc_flock_handoff(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	FLOCK(a, fa, LOCK_EX, 0);
	SEND_FLOCK(b, fb, LOCK_EX);
	BLOCKED(b, SYS_flock);
	FLOCK(a, fa, LOCK_UN, 0);
	RESULT(b, 0);
	FLOCK(c, fc, LOCK_SH | LOCK_NB, EWOULDBLOCK);
	/* a shared waiter is woken by the release too */
	SEND_FLOCK(c, fc, LOCK_SH);
	BLOCKED(c, SYS_flock);
	FLOCK(b, fb, LOCK_UN, 0);
	RESULT(c, 0);
	FLOCK(a, fa, LOCK_SH | LOCK_NB, 0);
	NO_WAITERS();
}

static void sc_flock_close(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c), fa2, fb2;

	FLOCK(a, fa, LOCK_EX, 0);
	fa2 = DUP(a, fa);
	CLOSE(a, fa);
	/* the dup still refers to the locked open file description */
	FLOCK(b, fb, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	CLOSE(a, fa2);
	FLOCK_AFTER_CLOSE(b, fb, LOCK_EX);
	/* closing another description of the file does not release it */
	fb2 = OPEN(b);
	CLOSE(b, fb2);
	FLOCK(c, fc, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	CLOSE(b, fb);
	FLOCK_AFTER_CLOSE(c, fc, LOCK_EX);
}

static void sc_flock_kill(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	FLOCK(a, fa, LOCK_EX, 0);
	SEND_FLOCK(b, fb, LOCK_EX);
	BLOCKED(b, SYS_flock);
	KILL9(a);
	RESULT(b, 0);
	FLOCK(c, fc, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	KILL9(b);
	FLOCK_AFTER_CLOSE(c, fc, LOCK_EX);
	NO_WAITERS();
}

static void sc_flock_eintr(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C"),
		      *d = w_new("D");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c), fd = OPEN(d);

	SIGSETUP(b);
	FLOCK(a, fa, LOCK_EX, 0);
	SEND_FLOCK(b, fb, LOCK_EX);
	BLOCKED(b, SYS_flock);
	INTERRUPT(b);
	RESULT(b, EINTR);
	NO_WAITERS();
	FLOCK(a, fa, LOCK_UN, 0);
	/* the interrupted request left nothing behind */
	FLOCK(c, fc, LOCK_EX | LOCK_NB, 0);
	FLOCK(b, fb, LOCK_SH | LOCK_NB, EWOULDBLOCK);
	FLOCK(c, fc, LOCK_UN, 0);
	FLOCK(d, fd, LOCK_EX | LOCK_NB, 0);
	FLOCK(d, fd, LOCK_UN, 0);
	NO_WAITERS();
	if (g_dlockfs)
		CHECK(xattr_lock_count_at(__LINE__) == 0, "user.dlock.locks "
							  "lists locks after "
							  "everything was "
							  "released");
}

/* ------------------------------------------------------------------ */
/* scenarios: POSIX record locks */

static void sc_posix_adjacent(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	LK(a, fa, F_SETLK, F_WRLCK, 0, 10, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 10, 10, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 9, 1, EAGAIN);
	LK(a, fa, F_SETLK, F_WRLCK, 10, 1, EAGAIN);
	LK(c, fc, F_SETLK, F_RDLCK, 19, 1, EAGAIN);
	LK(c, fc, F_SETLK, F_WRLCK, 20, 10, 0);
	GETLK(c, fc, F_WRLCK, 9, 1, F_WRLCK, 0, 10, a->pid);
	GETLK(a, fa, F_WRLCK, 15, 1, F_WRLCK, 10, 10, b->pid);
	GETLK(b, fb, F_RDLCK, 25, 100, F_WRLCK, 20, 10, c->pid);
	UNLOCKED(a, fa, F_WRLCK, 30, 0);
}

static void sc_posix_overlap(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	LK(a, fa, F_SETLK, F_WRLCK, 0, 100, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 50, 100, EAGAIN);
	LK(b, fb, F_SETLK, F_RDLCK, 99, 1, EAGAIN);
	LK(b, fb, F_SETLK, F_WRLCK, 0, 0, EAGAIN);
	LK(b, fb, F_SETLK, F_RDLCK, 100, 10, 0);
	LK(a, fa, F_SETLK, F_UNLCK, 0, 100, 0);
	LK(a, fa, F_SETLK, F_RDLCK, 0, 100, 0);
	LK(b, fb, F_SETLK, F_RDLCK, 50, 100, 0); /* readers overlap */
	LK(c, fc, F_SETLK, F_WRLCK, 120, 1, EAGAIN);
	LK(c, fc, F_SETLK, F_WRLCK, 150, 0, 0); /* to EOF */
	GETLK(b, fb, F_WRLCK, 1000000, 1, F_WRLCK, 150, 0, c->pid);
	LK(a, fa, F_SETLK, F_RDLCK, 149, 2, EAGAIN);
	GETLK(a, fa, F_RDLCK, 149, 2, F_WRLCK, 150, 0, c->pid);
}

static void sc_posix_split(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	LK(a, fa, F_SETLK, F_WRLCK, 0, 30, 0);
	LK(a, fa, F_SETLK, F_UNLCK, 10, 10, 0); /* leaves [0,10) [20,30) */
	LK(b, fb, F_SETLK, F_WRLCK, 10, 10, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 9, 1, EAGAIN);
	LK(b, fb, F_SETLK, F_WRLCK, 20, 1, EAGAIN);
	GETLK(c, fc, F_WRLCK, 0, 1, F_WRLCK, 0, 10, a->pid);
	GETLK(c, fc, F_RDLCK, 5, 1, F_WRLCK, 0, 10, a->pid);
	GETLK(c, fc, F_WRLCK, 25, 5, F_WRLCK, 20, 10, a->pid);
	GETLK(c, fc, F_WRLCK, 12, 3, F_WRLCK, 10, 10, b->pid);
	UNLOCKED(c, fc, F_WRLCK, 30, 0);
	LK(b, fb, F_SETLK, F_UNLCK, 10, 10, 0);
	UNLOCKED(c, fc, F_WRLCK, 10, 10);
	GETLK(c, fc, F_WRLCK, 9, 1, F_WRLCK, 0, 10, a->pid);
	GETLK(c, fc, F_WRLCK, 20, 1, F_WRLCK, 20, 10, a->pid);
	LK(c, fc, F_SETLK, F_WRLCK, 10, 10, 0);
}

static void sc_posix_merge(void)
{
	struct worker *a = w_new("A"), *c = w_new("C");
	int fa = OPEN(a), fc = OPEN(c);

	LK(a, fa, F_SETLK, F_WRLCK, 0, 10, 0);
	LK(a, fa, F_SETLK, F_WRLCK, 10, 10, 0);
	GETLK(c, fc, F_WRLCK, 15, 1, F_WRLCK, 0, 20, a->pid);
	LK(a, fa, F_SETLK, F_WRLCK, 30, 10, 0);
	GETLK(c, fc, F_WRLCK, 35, 1, F_WRLCK, 30, 10, a->pid);
	LK(a, fa, F_SETLK, F_WRLCK, 15, 20, 0); /* bridges the gap */
	GETLK(c, fc, F_WRLCK, 39, 1, F_WRLCK, 0, 40, a->pid);
	/* different types do not merge */
	LK(a, fa, F_SETLK, F_RDLCK, 40, 10, 0);
	GETLK(c, fc, F_WRLCK, 45, 1, F_RDLCK, 40, 10, a->pid);
	GETLK(c, fc, F_RDLCK, 0, 100, F_WRLCK, 0, 40, a->pid);
}

static void sc_posix_convert(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	LK(a, fa, F_SETLK, F_RDLCK, 0, 100, 0);
	LK(b, fb, F_SETLK, F_RDLCK, 0, 100, 0);
	LK(a, fa, F_SETLK, F_WRLCK, 0, 100, EAGAIN); /* B shares */
	GETLK(c, fc, F_WRLCK, 50, 1, F_RDLCK, 0, 100, ANY_PID);
	LK(b, fb, F_SETLK, F_UNLCK, 0, 100, 0);
	/* A kept its shared lock through the failed upgrade */
	GETLK(c, fc, F_WRLCK, 50, 1, F_RDLCK, 0, 100, a->pid);
	LK(a, fa, F_SETLK, F_WRLCK, 0, 100, 0); /* upgrade in place */
	GETLK(c, fc, F_RDLCK, 50, 1, F_WRLCK, 0, 100, a->pid);
	LK(a, fa, F_SETLK, F_RDLCK, 0, 100, 0); /* downgrade in place */
	LK(c, fc, F_SETLK, F_RDLCK, 0, 100, 0);
	LK(c, fc, F_SETLK, F_UNLCK, 0, 0, 0);
	/* upgrading the middle splits the shared lock in three */
	LK(a, fa, F_SETLK, F_WRLCK, 40, 20, 0);
	GETLK(c, fc, F_RDLCK, 0, 100, F_WRLCK, 40, 20, a->pid);
	GETLK(c, fc, F_WRLCK, 0, 1, F_RDLCK, 0, 40, a->pid);
	GETLK(c, fc, F_WRLCK, 99, 1, F_RDLCK, 60, 40, a->pid);
	LK(c, fc, F_SETLK, F_RDLCK, 0, 40, 0);
	LK(c, fc, F_SETLK, F_RDLCK, 60, 40, 0);
	LK(c, fc, F_SETLK, F_RDLCK, 59, 1, EAGAIN);
	LK(c, fc, F_SETLK, F_WRLCK, 0, 1, EAGAIN);
}

static void sc_posix_whence(void)
{
	struct worker *a = w_new("A"), *c = w_new("C");
	int fa = OPEN(a), fc = OPEN(c);

	TRUNCATE(a, fa, 40);
	/* SEEK_END: the last 10 bytes */
	LKW(a, fa, F_SETLK, F_WRLCK, SEEK_END, -10, 10, 0);
	GETLK(c, fc, F_WRLCK, 35, 1, F_WRLCK, 30, 10, a->pid);
	/* SEEK_CUR */
	LSEEK(a, fa, 10);
	LKW(a, fa, F_SETLK, F_WRLCK, SEEK_CUR, 0, 5, 0);
	GETLK(c, fc, F_WRLCK, 12, 1, F_WRLCK, 10, 5, a->pid);
	/* a negative length covers the bytes before start */
	LK(a, fa, F_SETLK, F_RDLCK, 25, -5, 0);
	GETLK(c, fc, F_WRLCK, 22, 1, F_RDLCK, 20, 5, a->pid);
	/* len 0 reaches past the end of the file, however far it grows */
	LK(a, fa, F_SETLK, F_WRLCK, 100, 0, 0);
	GETLK(c, fc, F_WRLCK, (int64_t)1 << 40, 1, F_WRLCK, 100, 0, a->pid);
	LK(c, fc, F_SETLK, F_WRLCK, 99, 1, 0);
	LK(c, fc, F_SETLK, F_WRLCK, 100, 1, EAGAIN);
	LK(c, fc, F_SETLK, F_WRLCK, INT64_MAX - 1, 1, EAGAIN);
}

static void sc_posix_close_any_fd(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c), fo, fa2, fb2;

	LK(a, fa, F_SETLK, F_WRLCK, 0, 10, 0);
	/* closing a descriptor of another file releases nothing */
	fo = OPEN2(a);
	CLOSE(a, fo);
	LK(b, fb, F_SETLK, F_WRLCK, 0, 10, EAGAIN);
	/* closing any descriptor of this file releases A's locks */
	fa2 = OPEN(a);
	CLOSE(a, fa2);
	GETLK(a, fa, F_WRLCK, 0, 10, F_UNLCK, 0, 0, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 0, 10, 0);
	/* even a dup of the locking descriptor */
	LK(b, fb, F_SETLK, F_RDLCK, 20, 10, 0);
	fb2 = DUP(b, fb);
	CLOSE(b, fb2);
	UNLOCKED(c, fc, F_WRLCK, 0, 0);
	LK(c, fc, F_SETLK, F_WRLCK, 0, 30, 0);
	/* A's descriptor still works, and C's close releases only C's */
	LK(a, fa, F_SETLK, F_WRLCK, 40, 10, 0);
	CLOSE(c, fc);
	GETLK(b, fb, F_WRLCK, 0, 100, F_WRLCK, 40, 10, a->pid);
}

static void sc_posix_handoff(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	LK(a, fa, F_SETLK, F_WRLCK, 0, 1, 0);
	SEND_LK(b, fb, F_SETLKW, F_WRLCK, 0, 1);
	BLOCKED(b, SYS_fcntl);
	LK(a, fa, F_SETLK, F_UNLCK, 0, 1, 0);
	RESULT(b, 0);
	GETLK(c, fc, F_RDLCK, 0, 1, F_WRLCK, 0, 1, b->pid);
	/* releasing part of the blocking range is not enough */
	LK(a, fa, F_SETLK, F_WRLCK, 100, 100, 0);
	SEND_LK(b, fb, F_SETLKW, F_WRLCK, 140, 20);
	BLOCKED(b, SYS_fcntl);
	LK(a, fa, F_SETLK, F_UNLCK, 100, 45, 0);
	BLOCKED(b, SYS_fcntl);
	LK(a, fa, F_SETLK, F_UNLCK, 145, 55, 0);
	RESULT(b, 0);
	GETLK(c, fc, F_RDLCK, 150, 1, F_WRLCK, 140, 20, b->pid);
	/* a reader waiting behind a writer */
	SEND_LK(c, fc, F_SETLKW, F_RDLCK, 0, 200);
	BLOCKED(c, SYS_fcntl);
	LK(b, fb, F_SETLK, F_UNLCK, 0, 0, 0);
	RESULT(c, 0);
	LK(a, fa, F_SETLK, F_RDLCK, 0, 200, 0);
	NO_WAITERS();
}

static void sc_posix_kill(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	LK(a, fa, F_SETLK, F_WRLCK, 0, 10, 0);
	LK(a, fa, F_SETLK, F_RDLCK, 50, 10, 0);
	SEND_LK(b, fb, F_SETLKW, F_WRLCK, 5, 1);
	BLOCKED(b, SYS_fcntl);
	KILL9(a);
	RESULT(b, 0);
	GETLK(c, fc, F_WRLCK, 0, 100, F_WRLCK, 5, 1, b->pid);
	LK(c, fc, F_SETLK, F_WRLCK, 50, 10, 0);
	NO_WAITERS();
}

static void sc_posix_eintr(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C"),
		      *d = w_new("D");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c), fd = OPEN(d);

	SIGSETUP(b);
	LK(a, fa, F_SETLK, F_WRLCK, 0, 10, 0);
	SEND_LK(b, fb, F_SETLKW, F_WRLCK, 0, 10);
	BLOCKED(b, SYS_fcntl);
	INTERRUPT(b);
	RESULT(b, EINTR);
	NO_WAITERS();
	LK(a, fa, F_SETLK, F_UNLCK, 0, 10, 0);
	/* a third process gets it at once: the interrupted request is gone */
	LK(c, fc, F_SETLK, F_WRLCK, 0, 10, 0);
	GETLK(b, fb, F_WRLCK, 0, 10, F_WRLCK, 0, 10, c->pid);
	LK(c, fc, F_SETLK, F_UNLCK, 0, 10, 0);
	/* and it is never granted later */
	UNLOCKED(d, fd, F_WRLCK, 0, 10);
	LK(d, fd, F_SETLK, F_WRLCK, 0, 10, 0);
	GETLK(b, fb, F_WRLCK, 0, 10, F_WRLCK, 0, 10, d->pid);
	LK(d, fd, F_SETLK, F_UNLCK, 0, 10, 0);
	NO_WAITERS();
	if (g_dlockfs)
		CHECK(xattr_lock_count_at(__LINE__) == 0, "user.dlock.locks "
							  "lists locks after "
							  "everything was "
							  "released");
	/* the interrupted process can still lock normally */
	LK(b, fb, F_SETLK, F_WRLCK, 0, 10, 0);
}

static void sc_flock_fcntl_independent(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	FLOCK(a, fa, LOCK_EX, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 0, 0, 0); /* whole file */
	FLOCK(c, fc, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	LK(c, fc, F_SETLK, F_RDLCK, 0, 1, EAGAIN);
	GETLK(c, fc, F_WRLCK, 0, 0, F_WRLCK, 0, 0, b->pid);
	FLOCK(b, fb, LOCK_SH | LOCK_NB, EWOULDBLOCK);
	LK(a, fa, F_SETLK, F_RDLCK, 0, 1, EAGAIN);
	/* releasing one kind leaves the other */
	FLOCK(a, fa, LOCK_UN, 0);
	LK(c, fc, F_SETLK, F_RDLCK, 0, 1, EAGAIN);
	FLOCK(c, fc, LOCK_EX | LOCK_NB, 0);
	LK(b, fb, F_SETLK, F_UNLCK, 0, 0, 0);
	FLOCK(b, fb, LOCK_EX | LOCK_NB, EWOULDBLOCK);
	/* one process holding both kinds on one file */
	LK(c, fc, F_SETLK, F_WRLCK, 0, 0, 0);
	GETLK(a, fa, F_RDLCK, 0, 0, F_WRLCK, 0, 0, c->pid);
}

static void sc_ofd(void)
{
	struct worker *w = w_new("W"), *b = w_new("B");
	int f1 = OPEN(w), f2 = OPEN(w), f3, fb = OPEN(b);

	/* two open file descriptions of one process conflict */
	LK(w, f1, F_OFD_SETLK, F_WRLCK, 0, 10, 0);
	LK(w, f2, F_OFD_SETLK, F_WRLCK, 5, 10, EAGAIN);
	LK(w, f2, F_OFD_SETLK, F_RDLCK, 9, 1, EAGAIN);
	OFD_GETLK(w, f2, F_WRLCK, 0, 1, F_WRLCK, 0, 10);
	LK(w, f2, F_OFD_SETLK, F_WRLCK, 20, 10, 0);
	OFD_GETLK(w, f1, F_RDLCK, 25, 1, F_WRLCK, 20, 10);
	/* and with the process's classic POSIX locks */
	f3 = OPEN(w);
	LK(w, f3, F_SETLK, F_WRLCK, 0, 1, EAGAIN);
	LK(w, f3, F_SETLK, F_WRLCK, 40, 1, 0);
	/* a local filesystem reports the classic holder's pid here; through
	 * FUSE the kernel derives l_pid = -1 from the request's kind, so the
	 * pid is not compared when the kinds differ */
	op_getlk_at(w, f1, F_OFD_GETLK, F_WRLCK, 40, 1, F_WRLCK, 40, 1, ANY_PID,
		    __LINE__);
	/* ... and with other processes; F_GETLK of an OFD lock reports
	 * pid -1 on a local filesystem, which FUSE cannot express (the
	 * kernel maps the daemon's pid through find_pid_ns), so the pid is
	 * not compared here either */
	LK(b, fb, F_SETLK, F_WRLCK, 25, 1, EAGAIN);
	GETLK(b, fb, F_WRLCK, 25, 1, F_WRLCK, 20, 10, ANY_PID);
	OFD_GETLK(b, fb, F_WRLCK, 25, 1, F_WRLCK, 20, 10);
	/* closing another descriptor drops the classic locks only */
	CLOSE(w, f3);
	OFD_GETLK(b, fb, F_WRLCK, 40, 1, F_UNLCK, 0, 0);
	OFD_GETLK(b, fb, F_WRLCK, 0, 1, F_WRLCK, 0, 10);
	OFD_GETLK(b, fb, F_WRLCK, 20, 1, F_WRLCK, 20, 10);
	/* closing one description drops only its own locks */
	CLOSE(w, f1);
	OFD_FREE_AFTER_CLOSE(b, fb, F_WRLCK, 0, 10);
	OFD_GETLK(b, fb, F_WRLCK, 20, 1, F_WRLCK, 20, 10);
	/* a blocked OFD request is granted when the holder closes */
	SEND_LK(b, fb, F_OFD_SETLKW, F_WRLCK, 20, 1);
	BLOCKED(b, SYS_fcntl);
	CLOSE(w, f2);
	RESULT(b, 0);
	f1 = OPEN(w);
	OFD_GETLK(w, f1, F_RDLCK, 0, 100, F_WRLCK, 20, 1);
	NO_WAITERS();
}

static void sc_lockf(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);

	LOCKF(a, fa, F_LOCK, 0, 10, 0);
	LOCKF(b, fb, F_TLOCK, 0, 10, EAGAIN);
	LOCKF(b, fb, F_TLOCK, 9, 1, EAGAIN);
	LOCKF(b, fb, F_TEST, 5, 1, EACCES);
	LOCKF(b, fb, F_TEST, 10, 10, 0);
	LOCKF(a, fa, F_TEST, 0, 10, 0); /* own lock */
	LOCKF(b, fb, F_TLOCK, 10, 10, 0);
	GETLK(c, fc, F_RDLCK, 0, 5, F_WRLCK, 0, 10, a->pid);
	/* a blocked F_LOCK is granted when the holder unlocks */
	SEND_LOCKF(b, fb, F_LOCK, 0, 5);
	BLOCKED(b, SYS_fcntl);
	LOCKF(a, fa, F_ULOCK, 0, 3, 0);
	BLOCKED(b, SYS_fcntl);
	LOCKF(a, fa, F_ULOCK, 3, 7, 0);
	RESULT(b, 0);
	GETLK(c, fc, F_WRLCK, 0, 1, F_WRLCK, 0, 5, b->pid);
	LOCKF(b, fb, F_LOCK, 5, 5, 0);			     /* fills the gap */
	GETLK(c, fc, F_WRLCK, 0, 1, F_WRLCK, 0, 20, b->pid); /* merged */
	/* len 0: from the offset to the end of the file and beyond */
	LOCKF(c, fc, F_LOCK, 100, 0, 0);
	LOCKF(a, fa, F_TLOCK, (int64_t)1 << 30, 1, EAGAIN);
	LOCKF(a, fa, F_TLOCK, 99, 1, 0);
	GETLK(a, fa, F_WRLCK, 5000, 1, F_WRLCK, 100, 0, c->pid);
	LOCKF(c, fc, F_ULOCK, 100, 0, 0);
	LOCKF(a, fa, F_TLOCK, 100, 0, 0);
}

static void sc_edeadlk(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C"),
		      *d = w_new("D");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c), fd = OPEN(d);

	/* two owners */
	LK(a, fa, F_SETLK, F_WRLCK, 0, 1, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 1, 1, 0);
	SEND_LK(a, fa, F_SETLKW, F_WRLCK, 1, 1);
	BLOCKED(a, SYS_fcntl);
	LK(b, fb, F_SETLKW, F_WRLCK, 0, 1, EDEADLK);
	BLOCKED(a, SYS_fcntl); /* A still waits */
	LK(b, fb, F_SETLK, F_UNLCK, 1, 1, 0);
	RESULT(a, 0);
	GETLK(d, fd, F_WRLCK, 1, 1, F_WRLCK, 0, 2, a->pid);
	LK(a, fa, F_SETLK, F_UNLCK, 0, 0, 0);
	/* three owners: A waits for B, B waits for C, C closes the cycle */
	LK(a, fa, F_SETLK, F_WRLCK, 10, 1, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 11, 1, 0);
	LK(c, fc, F_SETLK, F_WRLCK, 12, 1, 0);
	SEND_LK(a, fa, F_SETLKW, F_WRLCK, 11, 1);
	BLOCKED(a, SYS_fcntl);
	SEND_LK(b, fb, F_SETLKW, F_WRLCK, 12, 1);
	BLOCKED(b, SYS_fcntl);
	LK(c, fc, F_SETLKW, F_WRLCK, 10, 1, EDEADLK);
	/* no cycle: a waiter on an unrelated holder is not a deadlock */
	LK(d, fd, F_SETLK, F_WRLCK, 20, 1, 0);
	LK(c, fc, F_SETLK, F_UNLCK, 12, 1, 0);
	RESULT(b, 0);
	LK(b, fb, F_SETLK, F_UNLCK, 11, 2, 0);
	RESULT(a, 0);
	GETLK(d, fd, F_WRLCK, 11, 1, F_WRLCK, 10, 2, a->pid);
	NO_WAITERS();
}

static void sc_getlk(void)
{
	struct worker *a = w_new("A"), *b = w_new("B");
	int fa = OPEN(a), fb = OPEN(b);

	UNLOCKED(b, fb, F_WRLCK, 0, 0);
	LK(a, fa, F_SETLK, F_RDLCK, 5, 10, 0);
	GETLK(b, fb, F_WRLCK, 0, 100, F_RDLCK, 5, 10, a->pid);
	GETLK(b, fb, F_WRLCK, 14, 1, F_RDLCK, 5, 10, a->pid);
	UNLOCKED(b, fb, F_WRLCK, 15, 10);
	UNLOCKED(b, fb, F_WRLCK, 0, 5);
	UNLOCKED(b, fb, F_RDLCK, 0, 100);
	/* a process's own locks never conflict with it */
	UNLOCKED(a, fa, F_WRLCK, 0, 100);
	LK(a, fa, F_SETLK, F_WRLCK, 50, 0, 0);
	GETLK(b, fb, F_RDLCK, 60, 1, F_WRLCK, 50, 0, a->pid);
	GETLK(b, fb, F_RDLCK, 0, 0, F_WRLCK, 50, 0, a->pid);
	/* F_GETLK does not take anything */
	LK(b, fb, F_SETLK, F_RDLCK, 20, 10, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 0, 5, 0);
	GETLK(a, fa, F_WRLCK, 0, 1, F_WRLCK, 0, 5, b->pid);
}

/* ------------------------------------------------------------------ */
/* many waiters: one holder, N processes blocked, all served one by one */

struct many_shared {
	int holders;	/* processes inside the lock right now */
	int violations; /* times holders exceeded 1 */
};

static void __attribute__((noreturn))
waiter_main(int idx, bool use_flock, int ready_w, int granted_w,
	    struct many_shared *sh, pid_t parent)
{
	int fd, rc;
	char c = 'r';

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(3);
	close_other_fds(ready_w, granted_w);
	fd = open(g_file, O_RDWR);
	if (fd < 0)
		_exit(4);
	if (write_full(ready_w, &c, 1) < 0)
		_exit(5);
	if (use_flock) {
		rc = flock(fd, LOCK_EX);
	} else {
		struct flock fl = { .l_type = F_WRLCK,
				    .l_whence = SEEK_SET,
				    .l_start = 0,
				    .l_len = 1 };

		rc = fcntl(fd, F_SETLKW, &fl);
	}
	if (rc < 0)
		_exit(6);
	if (__atomic_add_fetch(&sh->holders, 1, __ATOMIC_SEQ_CST) != 1)
		__atomic_add_fetch(&sh->violations, 1, __ATOMIC_SEQ_CST);
	if (write_full(granted_w, &idx, sizeof(idx)) < 0)
		_exit(7);
	__atomic_sub_fetch(&sh->holders, 1, __ATOMIC_SEQ_CST);
	if (use_flock) {
		rc = flock(fd, LOCK_UN);
	} else {
		struct flock fl = { .l_type = F_UNLCK,
				    .l_whence = SEEK_SET,
				    .l_start = 0,
				    .l_len = 1 };

		rc = fcntl(fd, F_SETLK, &fl);
	}
	_exit(rc < 0 ? 8 : 0);
}

static void many_waiters(bool use_flock)
{
	struct worker *a = w_new("holder");
	int fa = OPEN(a), n = g_nwaiters;
	int ready[2], granted[2], got = 0, left;
	long sysno = use_flock ? SYS_flock : SYS_fcntl;
	pid_t *pids = calloc((size_t)n, sizeof(*pids));
	bool *seen = calloc((size_t)n, sizeof(*seen));
	struct many_shared *sh;
	int64_t deadline;

	CHECK(pids && seen, "out of memory");
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(sh, 0, sizeof(*sh));
	CHECK(pipe(ready) == 0 && pipe(granted) == 0, "pipe: %s",
	      strerror(errno));

	if (use_flock)
		FLOCK(a, fa, LOCK_EX, 0);
	else
		LK(a, fa, F_SETLK, F_WRLCK, 0, 1, 0);

	for (int i = 0; i < n; i++) {
		pid_t parent = getpid();

		pids[i] = fork();
		if (pids[i] < 0) {
			int e = errno;

			for (int j = 0; j < i; j++)
				kill(pids[j], SIGKILL);
			FAIL("fork of waiter %d: %s", i, strerror(e));
		}
		if (pids[i] == 0)
			waiter_main(i, use_flock, ready[1], granted[1], sh,
				    parent);
	}
	close(ready[1]);
	close(granted[1]);

	/* every waiter opened the file and is about to lock */
	deadline = now_ms() + g_timeout_ms;
	for (left = n; left > 0;) {
		struct pollfd p = { .fd = ready[0], .events = POLLIN };
		char buf[256];
		ssize_t r;

		if (poll(&p, 1, (int)(deadline - now_ms())) <= 0)
			break;
		r = read(ready[0], buf, sizeof(buf));
		if (r <= 0)
			break;
		left -= (int)r;
	}
	if (left > 0) {
		for (int i = 0; i < n; i++)
			kill(pids[i], SIGKILL);
		FAIL("%d of %d waiters never got ready", left, n);
	}
	/* ... and every one of them is blocked inside the lock call */
	deadline = now_ms() + 3 * g_timeout_ms;
	for (int i = 0; i < n; i++) {
		while (in_syscall(pids[i], sysno) == 0) {
			struct pollfd p = { .fd = granted[0],
					    .events = POLLIN };

			if (poll(&p, 1, 10) > 0 || now_ms() > deadline) {
				for (int j = 0; j < n; j++)
					kill(pids[j], SIGKILL);
				FAIL("waiter %d is not blocked in the lock call"
				     " (granted early or stuck elsewhere)",
				     i);
			}
		}
	}
	{
		struct pollfd p = { .fd = granted[0], .events = POLLIN };

		if (poll(&p, 1, BLOCKED_QUIET_MS) > 0) {
			for (int j = 0; j < n; j++)
				kill(pids[j], SIGKILL);
			FAIL("a waiter was granted while the holder held it");
		}
	}
	if (g_dlockfs) {
		char buf[65536];
		int r = xattr_read(g_file, "user.dlock.waiters", buf,
				   sizeof(buf));

		if (r < 0 && r != -ERANGE) {
			for (int j = 0; j < n; j++)
				kill(pids[j], SIGKILL);
			FAIL("getxattr user.dlock.waiters: %s", errname(-r));
		}
		if (r >= 0 && count_lines(buf) != n) {
			int lines = count_lines(buf);

			for (int j = 0; j < n; j++)
				kill(pids[j], SIGKILL);
			FAIL("user.dlock.waiters lists %d requests, %d are "
			     "blocked",
			     lines, n);
		}
	}

	/* release: all must be served, one at a time */
	if (use_flock)
		FLOCK(a, fa, LOCK_UN, 0);
	else
		LK(a, fa, F_SETLK, F_UNLCK, 0, 1, 0);
	deadline = now_ms() + 3 * g_timeout_ms;
	while (got < n) {
		struct pollfd p = { .fd = granted[0], .events = POLLIN };
		int idx;

		if (poll(&p, 1, (int)(deadline - now_ms())) <= 0)
			break;
		if (read_full(granted[0], &idx, sizeof(idx)) !=
		    (ssize_t)sizeof(idx))
			break;
		if (idx < 0 || idx >= n || seen[idx]) {
			for (int j = 0; j < n; j++)
				kill(pids[j], SIGKILL);
			FAIL("waiter %d reported twice", idx);
		}
		seen[idx] = true;
		got++;
	}
	if (got < n) {
		for (int j = 0; j < n; j++)
			kill(pids[j], SIGKILL);
		FAIL("only %d of %d waiters were granted the lock", got, n);
	}
	for (int i = 0; i < n; i++) {
		int st;

		CHECK(waitpid(pids[i], &st, 0) == pids[i], "waitpid: %s",
		      strerror(errno));
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "waiter %d ended with status %#x", i, st);
	}
	CHECK(sh->violations == 0,
	      "%d times two waiters held the lock at "
	      "once",
	      sh->violations);
	if (use_flock)
		FLOCK(a, fa, LOCK_EX | LOCK_NB, 0);
	else
		LK(a, fa, F_SETLK, F_WRLCK, 0, 1, 0);
	NO_WAITERS();
	free(pids);
	free(seen);
}

static void sc_many_waiters_fcntl(void)
{
	many_waiters(false);
}

static void sc_many_waiters_flock(void)
{
	many_waiters(true);
}

/* ------------------------------------------------------------------ */
/*
 * churn: several processes each loop "open, lock (blocking), read-modify-
 * write a counter in the file, close" without an explicit unlock, so every
 * release is the close.  The lock must exclude at every moment (checked in
 * shared memory) and no increment may be lost.  Through FUSE the release
 * of a flock or OFD lock (FUSE_RELEASE) is sent in the background and the
 * kernel's owner id of an open file description is derived from its
 * address, which the next open of the same process very often reuses: a
 * late release must not drop the lock of the new description.
 */

enum churn_kind { CHURN_FLOCK, CHURN_POSIX, CHURN_OFD };

#define CHURN_PROCS 8

static int churn_lock(int fd, enum churn_kind kind)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	switch (kind) {
	case CHURN_FLOCK:
		return flock(fd, LOCK_EX);
	case CHURN_POSIX:
		return fcntl(fd, F_SETLKW, &fl);
	case CHURN_OFD:
		return fcntl(fd, F_OFD_SETLKW, &fl);
	}
	return -1;
}

static void spin_us(int us)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000000 +
			 (t.tv_nsec - t0.tv_nsec) / 1000 <
		 us);
}

static void __attribute__((noreturn))
churn_main(enum churn_kind kind, int done_w, struct many_shared *sh,
	   pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(3);
	close_other_fds(done_w, -1);
	for (int i = 0; i < g_churn_iter; i++) {
		uint64_t v = 0;
		int fd = open(g_file, O_RDWR);

		if (fd < 0)
			_exit(4);
		if (churn_lock(fd, kind) < 0)
			_exit(5);
		if (__atomic_add_fetch(&sh->holders, 1, __ATOMIC_SEQ_CST) != 1)
			__atomic_add_fetch(&sh->violations, 1,
					   __ATOMIC_SEQ_CST);
		if (pread(fd, &v, sizeof(v), 0) < 0)
			_exit(6);
		v++;
		if (pwrite(fd, &v, sizeof(v), 0) != (ssize_t)sizeof(v))
			_exit(7);
		/* hold a little longer (busy, no syscalls): a wider window
		 * in which a double grant shows */
		spin_us(50);
		__atomic_sub_fetch(&sh->holders, 1, __ATOMIC_SEQ_CST);
		if (close(fd) < 0)
			_exit(8);
	}
	_exit(0);
}

static void churn(enum churn_kind kind)
{
	struct worker *a = w_new("A");
	int fa = OPEN(a), done[2];
	pid_t pids[CHURN_PROCS];
	struct many_shared *sh;
	struct req r;
	struct rsp s;
	uint64_t v = 0;
	int64_t deadline;

	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE,
		  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(sh != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(sh, 0, sizeof(*sh));
	CHECK(pipe(done) == 0, "pipe: %s", strerror(errno));
	for (int i = 0; i < CHURN_PROCS; i++) {
		pid_t parent = getpid();

		pids[i] = fork();
		CHECK(pids[i] >= 0, "fork: %s", strerror(errno));
		if (pids[i] == 0)
			churn_main(kind, done[1], sh, parent);
	}
	close(done[1]);
	/* every child holds done[1]: EOF when all have exited */
	deadline = now_ms() + 6 * g_timeout_ms;
	for (;;) {
		struct pollfd p = { .fd = done[0], .events = POLLIN };
		char c;
		int64_t left = deadline - now_ms();

		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			for (int i = 0; i < CHURN_PROCS; i++)
				kill(pids[i], SIGKILL);
			FAIL("churning processes still running after %d ms "
			     "(%d double grants seen so far)",
			     6 * g_timeout_ms, sh->violations);
		}
		if (read(done[0], &c, 1) <= 0)
			break;
	}
	for (int i = 0; i < CHURN_PROCS; i++) {
		int st;

		CHECK(waitpid(pids[i], &st, 0) == pids[i], "waitpid: %s",
		      strerror(errno));
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		      "churning process %d ended with status %#x "
		      "(%d double grants seen)",
		      i, st, sh->violations);
	}
	CHECK(sh->violations == 0,
	      "the lock was held by two processes at "
	      "once %d times in %d lock/close cycles",
	      sh->violations, CHURN_PROCS * g_churn_iter);
	/* the counter: read it through a worker (and its own descriptor) */
	r = (struct req){
		.op = OP_FCNTL, .fd = fa, .cmd = F_GETLK, .type = F_WRLCK
	};
	s = w_do(a, &r, __LINE__);
	expect_err(a, &s, 0, __LINE__);
	CHECK(s.fl.l_type == F_UNLCK || kind != CHURN_POSIX, "a POSIX lock "
							     "survived its "
							     "holder's close");
	{
		int fd = open(g_file, O_RDONLY);

		CHECK(fd >= 0, "open: %s", strerror(errno));
		CHECK(pread(fd, &v, sizeof(v), 0) == (ssize_t)sizeof(v), "canno"
									 "t "
									 "read "
									 "the "
									 "count"
									 "er");
		close(fd);
	}
	CHECK(v == (uint64_t)CHURN_PROCS * (uint64_t)g_churn_iter,
	      "counter is %" PRIu64 ", expected %d: increments were lost", v,
	      CHURN_PROCS * g_churn_iter);
	NO_WAITERS();
}

static void sc_flock_churn(void)
{
	churn(CHURN_FLOCK);
}

static void sc_posix_churn(void)
{
	churn(CHURN_POSIX);
}

static void sc_ofd_churn(void)
{
	churn(CHURN_OFD);
}

/* ------------------------------------------------------------------ */
/* dlockfs only */

static struct rsp xattr_of_at(struct worker *w, const char *name, int line)
{
	struct req r = { .op = OP_GETXATTR };
	struct rsp s;

	snprintf(r.path, sizeof(r.path), "%s", g_file);
	snprintf(r.name, sizeof(r.name), "%s", name);
	s = w_do(w, &r, line);
	expect_err(w, &s, 0, line);
	return s;
}

static uint64_t token_of_at(struct worker *w, int line)
{
	struct rsp s = xattr_of_at(w, "user.dlock.token", line);
	char *end;
	unsigned long long v;

	while (s.buflen > 0 &&
	       (s.buf[s.buflen - 1] == '\n' || s.buf[s.buflen - 1] == ' '))
		s.buf[--s.buflen] = '\0';
	errno = 0;
	v = strtoull(s.buf, &end, 10);
	if (s.buflen == 0 || *end != '\0' || errno)
		fail_at(line, "%s: user.dlock.token is \"%s\", not a number",
			w->name, s.buf);
	return v;
}

static void sc_xattr(void)
{
	struct worker *a = w_new("A"), *b = w_new("B"), *c = w_new("C");
	int fa = OPEN(a), fb = OPEN(b), fc = OPEN(c);
	char buf[8192];
	uint64_t ta, tc;
	int n;

	LK(a, fa, F_SETLK, F_WRLCK, 0, 10, 0);
	FLOCK(b, fb, LOCK_SH, 0);
	n = xattr_read(g_file, "user.dlock.locks", buf, sizeof(buf));
	CHECK(n >= 0, "getxattr user.dlock.locks: %s", errname(-n));
	CHECK(lines_with_pid(buf, a->pid) == 1,
	      "user.dlock.locks has no single line for pid %d: \"%s\"",
	      (int)a->pid, buf);
	CHECK(lines_with_pid(buf, b->pid) == 1,
	      "user.dlock.locks has no single line for pid %d: \"%s\"",
	      (int)b->pid, buf);
	CHECK(count_lines(buf) == 2,
	      "user.dlock.locks: expected 2 lines: "
	      "\"%s\"",
	      buf);
	NO_WAITERS();
	ta = token_of_at(a, __LINE__);

	/* a queued request shows in the waiters */
	SEND_LK(c, fc, F_SETLKW, F_WRLCK, 5, 1);
	BLOCKED(c, SYS_fcntl);
	n = xattr_read(g_file, "user.dlock.waiters", buf, sizeof(buf));
	CHECK(n >= 0, "getxattr user.dlock.waiters: %s", errname(-n));
	CHECK(lines_with_pid(buf, c->pid) == 1 && count_lines(buf) == 1,
	      "user.dlock.waiters should hold one line for pid %d: \"%s\"",
	      (int)c->pid, buf);
	LK(a, fa, F_SETLK, F_UNLCK, 0, 0, 0);
	RESULT(c, 0);
	NO_WAITERS();
	/* fencing tokens grow strictly per resource */
	tc = token_of_at(c, __LINE__);
	CHECK(tc > ta,
	      "token of the later grant %" PRIu64 " is not above "
	      "the earlier %" PRIu64,
	      tc, ta);
	LK(c, fc, F_SETLK, F_UNLCK, 0, 0, 0);
	FLOCK(b, fb, LOCK_UN, 0);
	CHECK(xattr_lock_count_at(__LINE__) == 0, "user.dlock.locks not empty "
						  "after every lock was "
						  "released");
	/* the virtual names are not listed */
	n = (int)listxattr(g_file, buf, sizeof(buf));
	CHECK(n >= 0, "listxattr: %s", strerror(errno));
	for (int off = 0; off < n; off += (int)strlen(buf + off) + 1)
		CHECK(strncmp(buf + off, "user.dlock.", 11) != 0,
		      "listxattr lists %s", buf + off);
}

static void sc_lock_timeout(void)
{
	struct worker *a = w_new("A"), *b = w_new("B");
	int fa = OPEN(a), fb = OPEN(b);
	int64_t t0, ms;

	if (g_lock_timeout <= 0)
		skip_scenario("needs --lock-timeout=SECONDS (the value the "
			      "mount was given)");
	LK(a, fa, F_SETLK, F_WRLCK, 0, 10, 0);
	t0 = now_ms();
	SEND_LK(b, fb, F_SETLKW, F_WRLCK, 0, 10);
	result_at(b, EDEADLK, g_lock_timeout * 1000 + g_timeout_ms, __LINE__);
	ms = now_ms() - t0;
	CHECK(ms >= g_lock_timeout * 1000 - 250 &&
		      ms <= g_lock_timeout * 1000 + 3000,
	      "F_SETLKW timed out after %" PRId64 " ms, lock_timeout is %d s",
	      ms, g_lock_timeout);
	NO_WAITERS();
	LK(b, fb, F_SETLK, F_WRLCK, 0, 10, EAGAIN);
	LK(a, fa, F_SETLK, F_UNLCK, 0, 10, 0);
	LK(b, fb, F_SETLK, F_WRLCK, 0, 10, 0);
}

/* ------------------------------------------------------------------ */
/* the table and the runner */

#define SC_DLOCKFS  1 /* needs a dlockfs mount (--dlockfs) */
#define SC_EXPLICIT 2 /* not part of "all"; name it */

struct scenario {
	const char *name;
	void (*fn)(void);
	int flags;
	const char *what;
};

static const struct scenario scenarios[] = {
	{ "flock_ex_ex", sc_flock_ex_ex, 0, "exclusive vs exclusive" },
	{ "flock_sh_sh", sc_flock_sh_sh, 0, "shared + shared" },
	{ "flock_sh_ex", sc_flock_sh_ex, 0, "shared vs exclusive, convert" },
	{ "flock_handoff", sc_flock_handoff, 0, "blocked waiter gets it" },
	{ "flock_close", sc_flock_close, 0, "release on last close" },
	{ "flock_kill", sc_flock_kill, 0, "release on kill -9" },
	{ "flock_eintr", sc_flock_eintr, 0, "signal interrupts LOCK_EX" },
	{ "posix_adjacent", sc_posix_adjacent, 0, "adjacent ranges" },
	{ "posix_overlap", sc_posix_overlap, 0, "overlapping ranges" },
	{ "posix_split", sc_posix_split, 0, "unlock the middle" },
	{ "posix_merge", sc_posix_merge, 0, "same-owner ranges merge" },
	{ "posix_convert", sc_posix_convert, 0, "shared <-> exclusive" },
	{ "posix_whence", sc_posix_whence, 0, "SEEK_CUR/SEEK_END/len<=0" },
	{ "posix_close_any_fd", sc_posix_close_any_fd, 0,
	  "closing any fd drops the process's locks" },
	{ "posix_handoff", sc_posix_handoff, 0, "blocked F_SETLKW" },
	{ "posix_kill", sc_posix_kill, 0, "release on kill -9" },
	{ "posix_eintr", sc_posix_eintr, 0, "signal interrupts F_SETLKW" },
	{ "flock_fcntl_independent", sc_flock_fcntl_independent, 0,
	  "flock and fcntl never conflict" },
	{ "ofd", sc_ofd, 0, "open file description locks" },
	{ "lockf", sc_lockf, 0, "lockf F_LOCK/F_TLOCK/F_ULOCK/F_TEST" },
	{ "edeadlk", sc_edeadlk, 0, "deadlock cycles" },
	{ "getlk", sc_getlk, 0, "F_GETLK reports" },
	{ "many_waiters_fcntl", sc_many_waiters_fcntl, 0,
	  "N blocked F_SETLKW" },
	{ "many_waiters_flock", sc_many_waiters_flock, 0, "N blocked flock" },
	{ "flock_churn", sc_flock_churn, 0,
	  "open/flock/close loops: exclusion, no lost update" },
	{ "posix_churn", sc_posix_churn, 0,
	  "open/F_SETLKW/close loops: exclusion, no lost update" },
	{ "ofd_churn", sc_ofd_churn, 0,
	  "open/F_OFD_SETLKW/close loops: exclusion, no lost update" },
	{ "xattr", sc_xattr, SC_DLOCKFS, "user.dlock.* xattrs" },
	{ "lock_timeout", sc_lock_timeout, SC_DLOCKFS | SC_EXPLICIT,
	  "blocked F_SETLKW times out with EDEADLK" },
};

#define NSCENARIOS (sizeof(scenarios) / sizeof(scenarios[0]))

/* run one scenario in its own process group; 0 ok, 1 failed, 77 skipped */
static int run_scenario(const struct scenario *sc)
{
	int rep[2], st = 0;
	char reason[REPORT_LEN + 1];
	size_t got = 0;
	pid_t pid;
	int64_t deadline;
	bool timed_out = false;

	if ((sc->flags & SC_DLOCKFS) && !g_dlockfs) {
		printf("skip %s: needs a dlockfs mount (--dlockfs)\n",
		       sc->name);
		return 77;
	}
	if (pipe(rep) < 0) {
		printf("FAIL %s: pipe: %s\n", sc->name, strerror(errno));
		return 1;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		printf("FAIL %s: fork: %s\n", sc->name, strerror(errno));
		return 1;
	}
	if (pid == 0) {
		setpgid(0, 0);
		close(rep[0]);
		g_report_fd = rep[1];
		g_scenario = sc->name;
		snprintf(g_file, sizeof(g_file), "%s/ld-%s-%d", g_dir, sc->name,
			 (int)getppid());
		snprintf(g_file2, sizeof(g_file2), "%s/ld-%s-%d.other", g_dir,
			 sc->name, (int)getppid());
		unlink(g_file);
		unlink(g_file2);
		sc->fn();
		kill_workers();
		cleanup_files();
		_exit(0);
	}
	setpgid(pid, pid);
	close(rep[1]);
	deadline = now_ms() + (int64_t)g_scenario_timeout_s * 1000;
	for (;;) {
		struct pollfd p = { .fd = rep[0], .events = POLLIN };
		int64_t left = deadline - now_ms();
		int n = poll(&p, 1, left < 0 ? 0 : (int)left);
		ssize_t r;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			timed_out = true;
			break;
		}
		r = read(rep[0], reason + got, REPORT_LEN - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == REPORT_LEN)
			break;
	}
	reason[got] = '\0';
	close(rep[0]);
	if (timed_out)
		kill(-pid, SIGKILL);
	waitpid(pid, &st, 0);
	kill(-pid, SIGKILL); /* strays, if any */

	if (timed_out) {
		char f[PATH_LEN];

		printf("FAIL %s: timed out after %d s%s%s\n", sc->name,
		       g_scenario_timeout_s, got ? "; " : "", reason);
		snprintf(f, sizeof(f), "%s/ld-%s-%d", g_dir, sc->name,
			 (int)getpid());
		unlink(f);
		return 1;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
		printf("ok %s\n", sc->name);
		return 0;
	}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
		printf("skip %s: %s\n", sc->name, reason);
		return 77;
	}
	if (WIFSIGNALED(st))
		printf("FAIL %s: killed by signal %d%s%s\n", sc->name,
		       WTERMSIG(st), got ? "; " : "", reason);
	else
		printf("FAIL %s: %s\n", sc->name, got ? reason : "(no reason)");
	return 1;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: lockdriver [OPTIONS] DIR [all | SCENARIO...]\n"
		"Run lock scenarios with several processes in DIR (created "
		"files are\n"
		"named ld-*).  Prints \"ok NAME\", \"skip NAME: why\" or "
		"\"FAIL NAME: why\".\n"
		"  --reference        DIR is a plain local directory "
		"(default): skip the\n"
		"                     dlockfs-only scenarios and xattr checks\n"
		"  --dlockfs          DIR is on a dlockfs mount: also check "
		"user.dlock.*\n"
		"  --lock-timeout=S   the mount has lock_timeout=S (for "
		"lock_timeout)\n"
		"  --waiters=N        processes in the many_waiters scenarios "
		"(%d)\n"
		"  --churn=N          lock/close cycles per process in *_churn "
		"(%d)\n"
		"  --timeout=MS       bound of every single wait (%d)\n"
		"  --strict           fail, rather than note, when a flock or "
		"OFD lock is\n"
		"                     still held right after its last close "
		"returned\n"
		"  --list             list the scenarios\n"
		"  -v, --verbose      trace every call on stderr\n"
		"\"all\" is every scenario but the explicit ones "
		"(lock_timeout).\n",
		g_nwaiters, g_churn_iter, g_timeout_ms);
}

static int parse_int(const char *s, int min, int max, int *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min || v > max)
		return -1;
	*out = (int)v;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "reference", no_argument, NULL, 'R' },
		{ "dlockfs", no_argument, NULL, 'D' },
		{ "lock-timeout", required_argument, NULL, 'T' },
		{ "waiters", required_argument, NULL, 'n' },
		{ "churn", required_argument, NULL, 'C' },
		{ "timeout", required_argument, NULL, 't' },
		{ "list", no_argument, NULL, 'l' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "strict", no_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c, failed = 0, passed = 0, skipped = 0;
	struct stat st;
	struct rlimit rl;

	while ((c = getopt_long(argc, argv, "vhn:t:", longopts, NULL)) != -1) {
		switch (c) {
		case 'R':
			g_dlockfs = false;
			break;
		case 'D':
			g_dlockfs = true;
			break;
		case 'T':
			if (parse_int(optarg, 1, 3600, &g_lock_timeout) < 0)
				goto bad;
			break;
		case 'n':
			if (parse_int(optarg, 1, 2000, &g_nwaiters) < 0)
				goto bad;
			break;
		case 'C':
			if (parse_int(optarg, 1, 1000000, &g_churn_iter) < 0)
				goto bad;
			break;
		case 't':
			if (parse_int(optarg, 100, 600000, &g_timeout_ms) < 0)
				goto bad;
			break;
		case 'l':
			for (size_t i = 0; i < NSCENARIOS; i++)
				printf("%-24s %s%s\n", scenarios[i].name,
				       scenarios[i].what,
				       (scenarios[i].flags & SC_DLOCKFS) ? " ["
									   "dlo"
									   "ckf"
									   "s]"
									 : "");
			return 0;
		case 'v':
			g_verbose = true;
			break;
		case 'S':
			g_strict = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			goto bad;
		}
	}
	if (optind >= argc)
		goto bad;
	g_dir = argv[optind++];
	if (stat(g_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "lockdriver: %s is not a directory\n", g_dir);
		return 2;
	}
	/* a FAIL line must reach the log even if we are killed later */
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* the many-waiters scenarios hold a pipe per process at most */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	g_scenario_timeout_s = 30 + 6 * g_timeout_ms / 1000;

	if (optind == argc ||
	    (optind + 1 == argc && strcmp(argv[optind], "all") == 0)) {
		for (size_t i = 0; i < NSCENARIOS; i++) {
			int flags = scenarios[i].flags;

			if (flags & SC_EXPLICIT)
				continue;
			if ((flags & SC_DLOCKFS) && !g_dlockfs)
				continue;
			switch (run_scenario(&scenarios[i])) {
			case 0:
				passed++;
				break;
			case 77:
				skipped++;
				break;
			default:
				failed++;
				break;
			}
		}
	} else {
		for (int a = optind; a < argc; a++) {
			size_t i;

			for (i = 0; i < NSCENARIOS; i++)
				if (strcmp(scenarios[i].name, argv[a]) == 0)
					break;
			if (i == NSCENARIOS) {
				fprintf(stderr,
					"lockdriver: no scenario %s "
					"(see --list)\n",
					argv[a]);
				return 2;
			}
		}
		for (int a = optind; a < argc; a++)
			for (size_t i = 0; i < NSCENARIOS; i++)
				if (strcmp(scenarios[i].name, argv[a]) == 0)
					switch (run_scenario(&scenarios[i])) {
					case 0:
						passed++;
						break;
					case 77:
						skipped++;
						break;
					default:
						failed++;
						break;
					}
	}
	printf("# %d ok, %d failed, %d skipped (%s, %s)\n", passed, failed,
	       skipped, g_dir, g_dlockfs ? "dlockfs" : "reference");
	return failed ? 1 : 0;
bad:
	usage(stderr);
	return 2;
}

/*
 * main.c - the dlockfs command: parse and check the options, mount,
 * start the lock manager, serve FUSE until unmounted or signalled.
 *
 * Every usage error - including a control socket that cannot be ours and
 * a mount option the kernel would refuse - is found before anything is
 * mounted and is reported as one line "dlockfs: <reason>" with exit
 * status 2.  A failure after that (backend connection, mount) exits 1.
 * The backend is connected and the socket is up before we mount, so a
 * daemon that fails to start never leaves a mount behind.  Exit 0 after a
 * clean stop.
 *
 * We fork to the background ourselves instead of calling fuse_daemonize():
 * the lock manager starts threads, which would not survive a later fork,
 * and its errors (backend unreachable) must still reach the terminal and
 * the exit status of the command that started us.
 *
 * Secrets: config values are never printed (the file may hold
 * credentials); a secret given as -o is refused without being echoed; the
 * config's copy of a secret is wiped once the backend has its own; the
 * daemon is not dumpable (no core dump, no ptrace by its own uid) unless
 * -d asks for debugging.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fuse_opt.h>
#include <systemd/sd-daemon.h>
#include <libmount.h>

#include "backend/backend.h"
#include "backend/util/config.h"
#include "backend/util/log.h"
#include "fs/ctl/ctlsock.h"
#include "fs/ctl/policy.h"
#include "fs/ctl/proto.h"
#include "fs/fuse/fs.h"
#include "fs/metrics_http.h"
#include "fs/fuse/lockops.h"
#include "fs/lock/lockmgr.h"

#define EXIT_USAGE 2

/* what the command line said, before defaults and the config file */
struct main_args {
	char *backend;
	char *host_id;
	char *config;
	char *lock_timeout;
	char *cache;	     /* -o cache=on|off */
	char *cache_idle_ms; /* -o cache_idle_ms=N */
	char *versions;	     /* -o versions=on|off */
	char *socket;	     /* -o socket=PATH; "none": no socket */
	char *log_level;     /* -o log_level=NAME */
	char *metrics;	     /* -o metrics=ADDR:PORT */
	int metrics_fd;	     /* its listening socket, or -1 */
	char *pos[2];	     /* BACKING_DIR, MOUNTPOINT */
	int npos;
	char *extra;	     /* the first surplus argument */
	char *bad_option;    /* the first unknown option */
	char *secret_option; /* the name of the first secret given as -o */
	int blksize;	     /* -o blksize=: the kernel refuses it for us */
	int foreground;
	int debug;
	int help;
	int version;
	int allow_other;
	int default_permissions;
	int agent; /* --agent: no mount, the socket only */
	char *ctl; /* control socket policy options, "key=value\n" lines */
};

enum {
	KEY_FOREGROUND,
	KEY_DEBUG,
	KEY_HELP,
	KEY_VERSION,
	KEY_ALLOW_OTHER,
	KEY_DEFAULT_PERMISSIONS,
	KEY_AGENT,
	KEY_CTL,
};

#define MAIN_OPT(t, p)                              \
	{                                           \
		t, offsetof(struct main_args, p), 1 \
	}

static const struct fuse_opt main_opts[] = {
	MAIN_OPT("backend=%s", backend),
	MAIN_OPT("host_id=%s", host_id),
	MAIN_OPT("config=%s", config),
	MAIN_OPT("lock_timeout=%s", lock_timeout),
	MAIN_OPT("cache=%s", cache),
	MAIN_OPT("cache_idle_ms=%s", cache_idle_ms),
	MAIN_OPT("versions=%s", versions),
	MAIN_OPT("socket=%s", socket),
	MAIN_OPT("log_level=%s", log_level),
	MAIN_OPT("metrics=%s", metrics),
	FUSE_OPT_KEY("--agent", KEY_AGENT),
	FUSE_OPT_KEY("paths=", KEY_CTL),
	FUSE_OPT_KEY("shared_names=", KEY_CTL),
	FUSE_OPT_KEY("max_conns_per_uid=", KEY_CTL),
	FUSE_OPT_KEY("max_waits_per_uid=", KEY_CTL),
	FUSE_OPT_KEY("max_locks_per_uid=", KEY_CTL),
	FUSE_OPT_KEY("-f", KEY_FOREGROUND),
	FUSE_OPT_KEY("-d", KEY_DEBUG),
	FUSE_OPT_KEY("--debug", KEY_DEBUG),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_KEY("default_permissions", KEY_DEFAULT_PERMISSIONS),
	FUSE_OPT_END
};

/*
 * Until the file system is mounted, libfuse's error messages are kept
 * here so that we can report them as our one line; afterwards they go
 * through dl_log().  Only the main thread runs before the mount.
 */
static bool main_capture = true;
static char main_captured[512];

static void main_fuse_log(enum fuse_log_level level, const char *fmt,
			  va_list ap)
{
	char msg[1024];
	const char *m = msg;
	size_t n;

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (main_capture && level <= FUSE_LOG_ERR) {
		/* libfuse writes one line in several pieces: keep the first
		 * line whole */
		n = strlen(main_captured);
		if (n == 0 || main_captured[n - 1] != '\n')
			snprintf(main_captured + n, sizeof(main_captured) - n,
				 "%.*s", (int)(sizeof(main_captured) - n - 1),
				 msg);
		return;
	}
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	if (strncmp(m, "fuse: ", 6) == 0)
		m += 6;
	dl_log(level < FUSE_LOG_ERR ? DL_LOG_ERR : (enum dl_log_level)level,
	       "%s", m);
}

/* the first line libfuse reported while we were capturing, or NULL */
static const char *main_fuse_error(void)
{
	char *m = main_captured;

	if (!m[0])
		return NULL;
	m[strcspn(m, "\n")] = '\0';
	if (strncmp(m, "fuse: ", 6) == 0)
		m += 6;
	return m;
}

/*
 * Options mount(8) and fstab add for themselves (mount.fuse3 drops most of
 * them, a hand-written unit or a script may not): accepted and ignored,
 * as other FUSE file systems do.  rw, ro, dev, suid, exec and their no-
 * forms are kernel options and go on to libfuse.
 */
static bool main_mount_only_option(const char *arg)
{
	static const char *const flags[] = {
		"auto",	 "noauto", "_netdev", "nofail", "user",
		"users", "nouser", "owner",   "group",	"defaults",
	};

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (strcmp(arg, flags[i]) == 0)
			return true;
	return strncmp(arg, "x-", 2) == 0 || strncmp(arg, "comment=", 8) == 0;
}

/* is -o @arg ("name" or "name=value") a secret such as redis_password? */
static bool main_secret_option(const char *arg)
{
	char *name = strndup(arg, strcspn(arg, "="));
	bool secret = !name || dl_config_is_secret(name);

	free(name);
	return secret;
}

static int main_opt_proc(void *data, const char *arg, int key,
			 struct fuse_args *outargs)
{
	struct main_args *a = data;

	switch (key) {
	case KEY_FOREGROUND:
		a->foreground = 1;
		return 0;
	case KEY_DEBUG:
		/* as with every FUSE file system, -d implies -f */
		a->debug = 1;
		a->foreground = 1;
		return 1;
	case KEY_HELP:
		a->help = 1;
		return 0;
	case KEY_VERSION:
		a->version = 1;
		return 0;
	case KEY_ALLOW_OTHER:
		a->allow_other = 1;
		return 1;
	case KEY_DEFAULT_PERMISSIONS:
		a->default_permissions = 1;
		return 1;
	case KEY_AGENT:
		a->agent = 1;
		return 0;
	case KEY_CTL: {
		/* kept as config lines: they override the file's */
		char *n = NULL;

		if (asprintf(&n, "%s%s\n", a->ctl ? a->ctl : "", arg) < 0)
			return -1;
		free(a->ctl);
		a->ctl = n;
		return 0;
	}
	case FUSE_OPT_KEY_NONOPT:
		if (a->npos < 2)
			a->pos[a->npos++] = strdup(arg);
		else if (!a->extra)
			a->extra = strdup(arg);
		return 0;
	case FUSE_OPT_KEY_OPT:
	default:
		/* "-x" is never a FUSE -o option; "-o name" goes to libfuse,
		 * which rejects what it does not know */
		if (arg[0] == '-') {
			if (!a->bad_option)
				a->bad_option = strdup(arg);
			return 0;
		}
		/* never handed on: libfuse would quote it in its error */
		if (main_secret_option(arg)) {
			if (!a->secret_option)
				a->secret_option =
					strndup(arg, strcspn(arg, "="));
			return 0;
		}
		if (main_mount_only_option(arg))
			return 0;
		/* only a block-device mount (fuseblk) takes it: the mount
		 * would fail with EINVAL */
		if (strncmp(arg, "blksize=", 8) == 0) {
			a->blksize = 1;
			return 0;
		}
		return 1;
	}
}

static void main_usage(const char *prog)
{
	printf("usage: %s [-f] [-d] [-o OPTIONS] BACKING_DIR MOUNTPOINT\n"
	       "       %s --agent [-f] [-d] [-o OPTIONS]\n"
	       "\n"
	       "Mount BACKING_DIR on MOUNTPOINT; file locks taken in the\n"
	       "mount are cluster-wide locks held on a shared backend.\n"
	       "With --agent, mount nothing and serve only the control\n"
	       "socket (for the LD_PRELOAD shim and dlockctl).\n"
	       "\n"
	       "  -f                     stay in the foreground\n"
	       "  -d                     debug output (implies -f)\n"
	       "  -h, --help             print this help and exit\n"
	       "  -V, --version          print the version and exit\n"
	       "\n"
	       "dlockfs options (-o):\n"
	       "  backend=URI            lock store: local: (default),\n"
	       "                         redis://HOST:PORT[,...]/PREFIX,\n"
	       "                         zk://HOST:PORT[,...]/CHROOT,\n"
	       "                         postgresql://USER@HOST[:PORT]/DB\n"
	       "  host_id=NAME           this host's name in the cluster\n"
	       "                         (default: the hostname)\n"
	       "  config=FILE            key = value file (backend, host_id,\n"
	       "                         lock_timeout, credentials); the\n"
	       "                         command line wins\n"
	       "  lock_timeout=SECONDS   give up a blocking lock with EDEADLK\n"
	       "                         after SECONDS (0 = wait forever)\n"
	       "  cache=on|off           decide a file's locks on this host\n"
	       "                         while no other host uses it (remote\n"
	       "                         backends; default on; hosts may\n"
	       "                         differ: off still asks a file\n"
	       "                         another host caches back first)\n"
	       "  cache_idle_ms=N        give an unused file back after N ms\n"
	       "                         (default 1000)\n"
	       "  versions=on|off        keep a version per file in the\n"
	       "                         backend, bumped when a writer closes\n"
	       "                         or unlocks (default on)\n"
	       "  socket=PATH            control socket (default\n"
	       "                         " DL_SOCKET_DEFAULT ";\n"
	       "                         none: no socket)\n"
	       "  log_level=LEVEL        err, warning, notice, info\n"
	       "                         (default) or debug\n"
	       "  metrics=ADDR:PORT      serve Prometheus metrics at\n"
	       "                         http://ADDR:PORT/metrics\n"
	       "\n"
	       "FUSE options (-o), passed to the kernel, for example:\n"
	       "  allow_other, default_permissions, ro, auto_unmount\n"
	       "  (use allow_other together with default_permissions)\n",
	       prog, prog);
}

static void main_error(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static void main_error(const char *fmt, ...)
{
	va_list ap;

	fputs("dlockfs: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* a non-negative decimal integer that fits an unsigned; 0 or -EINVAL */
static int main_parse_seconds(const char *s, unsigned *out)
{
	unsigned long v;
	char *end;

	if (!s[0] || s[0] < '0' || s[0] > '9')
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > UINT_MAX)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* -o cache=, cache_idle_ms=, versions= or their config keys; 0 or
 * -EINVAL (said) */
static int main_cache_options(const struct main_args *a, struct dl_fs *fs)
{
	const char *v = a->versions ? a->versions
				    : dl_config_get(&fs->config, "versions");
	const char *c = a->cache ? a->cache
				 : dl_config_get(&fs->config, "cache");
	const char *idle = a->cache_idle_ms ? a->cache_idle_ms
					    : dl_config_get(&fs->config, "cache"
									 "_idle"
									 "_ms");

	if (c && strcmp(c, "on") != 0 && strcmp(c, "off") != 0) {
		main_error("bad cache '%s'%s%s: want on or off", c,
			   a->cache ? "" : " in ",
			   a->cache ? "" : fs->opt.config);
		return -EINVAL;
	}
	fs->opt.cache = !c || strcmp(c, "on") == 0 ? DL_CACHE_ON
						   : DL_CACHE_AWARE;
	if (v && strcmp(v, "on") != 0 && strcmp(v, "off") != 0) {
		main_error("bad versions '%s'%s%s: want on or off", v,
			   a->versions ? "" : " in ",
			   a->versions ? "" : fs->opt.config);
		return -EINVAL;
	}
	fs->opt.versions = !v || strcmp(v, "on") == 0;
	if (idle && (main_parse_seconds(idle, &fs->opt.cache_idle_ms) ||
		     fs->opt.cache_idle_ms == 0)) {
		main_error("bad cache_idle_ms '%s'%s%s: want a positive number "
			   "of milliseconds",
			   idle, a->cache_idle_ms ? "" : " in ",
			   a->cache_idle_ms ? "" : fs->opt.config);
		return -EINVAL;
	}
	return 0;
}

/* is the absolute, resolved @path a mount point?  1, 0 or -errno */
static int main_is_mountpoint(const char *path)
{
	struct libmnt_table *tb;
	struct stat st, pst;
	char *parent;
	int found;

	if (asprintf(&parent, "%s/..", path) == -1)
		return -ENOMEM;
	if (stat(path, &st) == -1 || stat(parent, &pst) == -1) {
		free(parent);
		return -errno;
	}
	free(parent);
	if (st.st_dev != pst.st_dev || st.st_ino == pst.st_ino)
		return 1;

	/* a bind mount keeps st_dev: ask the kernel's table too (libmount
	 * parses /proc/self/mountinfo, escapes and all) */
	tb = mnt_new_table();
	if (!tb)
		return -ENOMEM;
	found = mnt_table_parse_file(tb, "/proc/self/mountinfo") == 0 &&
		mnt_table_find_target(tb, path, MNT_ITER_BACKWARD) != NULL;
	mnt_unref_table(tb);
	return found;
}

/* realpath() of a directory argument; NULL after reporting why */
static char *main_dir(const char *what, const char *arg)
{
	struct stat st;
	char *path;

	if (stat(arg, &st) == -1) {
		main_error("%s %s: %s", what, arg, strerror(errno));
		return NULL;
	}
	if (!S_ISDIR(st.st_mode)) {
		main_error("%s %s: not a directory", what, arg);
		return NULL;
	}
	path = realpath(arg, NULL);
	if (!path)
		main_error("%s %s: %s", what, arg, strerror(errno));
	return path;
}

/* the control socket's path: command line, config file, default */
static const char *main_socket(const struct main_args *a,
			       const struct dl_fs *fs)
{
	const char *v = a->socket ? a->socket
				  : dl_config_get(&fs->config, "socket");

	return v ? v : DL_SOCKET_DEFAULT;
}

/* a socket asked for (not the default): failing to serve it is fatal */
static bool main_socket_explicit(const struct main_args *a,
				 const struct dl_fs *fs)
{
	return a->socket || dl_config_get(&fs->config, "socket");
}

/*
 * main_check_socket() - could ctlsock_start() serve @path?  Its failures
 * that a user can fix, found before anything starts: 0, or EXIT_USAGE
 * after printing one line.  Creates nothing.  With @in_use, a socket that
 * another daemon serves is one of them (for a mount; the agent reports it
 * later, with exit 1, as it always did).  A race with another daemon
 * starting at the same moment is still caught by ctlsock_start().
 */
static int main_check_socket(const char *path, bool in_use)
{
	struct sockaddr_un sa;
	char *lock, *dir, *slash, err[512];
	struct stat st;
	int fd, ret = 0;

	if (path[0] != '/') {
		main_error("bad socket '%s': want an absolute path or none",
			   path);
		return EXIT_USAGE;
	}
	if (strlen(path) >= sizeof(sa.sun_path)) {
		main_error("socket path %s is too long (%zu bytes, at most "
			   "%zu)",
			   path, strlen(path), sizeof(sa.sun_path) - 1);
		return EXIT_USAGE;
	}
	if (ctlsock_check_path(path, err, sizeof(err)) < 0) {
		main_error("%s",
			   err); /* its directory, symlinks, non-sockets */
		return EXIT_USAGE;
	}
	/* the daemon that serves it holds an flock on PATH.lock (ctlsock.c) */
	if (asprintf(&lock, "%s.lock", path) == -1) {
		main_error("out of memory");
		return EXIT_USAGE;
	}
	fd = in_use ? open(lock, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY |
					 O_CLOEXEC)
		    : -1;
	free(lock);
	if (fd != -1) {
		if (flock(fd, LOCK_EX | LOCK_NB) == -1 && errno == EWOULDBLOCK)
			ret = EXIT_USAGE;
		close(fd); /* drops the flock if we took it */
		if (ret) {
			main_error("socket %s: another daemon serves it", path);
			return ret;
		}
	}
	/* what does not exist yet will be created in the nearest existing
	 * ancestor: it must be a directory we may write in */
	dir = strdup(path);
	if (!dir) {
		main_error("out of memory");
		return EXIT_USAGE;
	}
	for (;;) {
		slash = strrchr(dir, '/');
		slash[slash == dir] = '\0'; /* "/x" -> "/" */
		if (stat(dir, &st) == 0)
			break;
		if (errno != ENOENT) {
			main_error("cannot create socket %s: %s: %s", path, dir,
				   strerror(errno));
			ret = EXIT_USAGE;
			goto out_free;
		}
	}
	if (!S_ISDIR(st.st_mode)) {
		main_error("cannot create socket %s: %s is not a directory",
			   path, dir);
		ret = EXIT_USAGE;
	} else if (access(dir, W_OK | X_OK) == -1) {
		main_error("cannot create socket %s: %s: %s", path, dir,
			   strerror(errno));
		ret = EXIT_USAGE;
	}
out_free:
	free(dir);
	return ret;
}

/* take @cmd, else the config file's @key, else @def (may be NULL) */
static char *main_pick(const char *cmd, const struct dl_config *cfg,
		       const char *key, const char *def)
{
	const char *v = cmd ? cmd : dl_config_get(cfg, key);

	if (!v)
		v = def;
	return v ? strdup(v) : NULL;
}

/* -o metrics=, else the config's metrics, else NULL (off) */
static const char *main_metrics(const struct main_args *a,
				const struct dl_fs *fs)
{
	return a->metrics ? a->metrics : dl_config_get(&fs->config, "metrics");
}

/* -o log_level= or the config's log_level (-d: debug); 0 or EXIT_USAGE */
static int main_setup_log_level(const struct main_args *a, struct dl_fs *fs)
{
	const char *v = a->log_level ? a->log_level
				     : dl_config_get(&fs->config, "log_level");
	enum dl_log_level l;

	fs->opt.log_level = a->debug ? DL_LOG_DEBUG : DL_LOG_INFO;
	if (!v || a->debug)
		return 0;
	if (dl_log_level_parse(v, &l) == 0) {
		fs->opt.log_level = l;
		return 0;
	}
	if (a->log_level)
		main_error("bad log_level '%s': want err, warning, notice, "
			   "info or debug",
			   v);
	else
		main_error("bad log_level in %s: want err, warning, notice, "
			   "info or debug",
			   fs->opt.config);
	return EXIT_USAGE;
}

/*
 * main_setup() - turn the parsed arguments into fs->opt and fs->config.
 * Returns 0, or EXIT_USAGE after printing one line.
 */
static int main_setup(struct main_args *a, struct dl_fs *fs)
{
	char err[256], host[HOST_NAME_MAX + 1];
	const char *timeout, *sock;
	size_t blen;
	int res;

	if (a->bad_option) {
		main_error("unknown option '%s' (see --help)", a->bad_option);
		return EXIT_USAGE;
	}
	if (a->secret_option) {
		/* the name only: the value must not reach a terminal or log */
		main_error("-o %s: secrets are not taken from the command line "
			   "(every user can read it); put it in the config "
			   "file (-o config=FILE, mode 0600)",
			   a->secret_option);
		return EXIT_USAGE;
	}
	if (a->blksize) {
		main_error("-o blksize: only block-device FUSE file systems "
			   "(fuseblk) take it");
		return EXIT_USAGE;
	}
	if (a->agent && a->npos) {
		main_error("--agent mounts nothing: unexpected argument '%s' "
			   "(see --help)",
			   a->pos[0]);
		return EXIT_USAGE;
	}
	if (a->socket && (!a->socket[0] || (strcmp(a->socket, "none") != 0 &&
					    a->socket[0] != '/'))) {
		main_error("bad socket '%s': want an absolute path or none",
			   a->socket);
		return EXIT_USAGE;
	}
	if (a->agent && a->socket && strcmp(a->socket, "none") == 0) {
		main_error("--agent needs a socket: socket=none makes no "
			   "sense");
		return EXIT_USAGE;
	}
	if (a->extra) {
		main_error("unexpected argument '%s' (see --help)", a->extra);
		return EXIT_USAGE;
	}

	if (a->config) {
		fs->opt.config = realpath(a->config, NULL);
		if (!fs->opt.config) {
			main_error("config file %s: %s", a->config,
				   strerror(errno));
			return EXIT_USAGE;
		}
		err[0] = '\0';
		if (dl_config_load(&fs->config, fs->opt.config, err,
				   sizeof(err)) != 0) {
			main_error("%s",
				   err[0] ? err : "cannot load config file");
			return EXIT_USAGE;
		}
	}

	/* BACKING_DIR and MOUNTPOINT: the command line, else the config
	 * file's backing and mountpoint (dlockfs@NAME.service) */
	if (!a->agent) {
		const char *keys[2] = { "backing", "mountpoint" };

		for (int i = 0; i < 2; i++)
			if (!a->pos[i] && dl_config_get(&fs->config, keys[i]))
				a->pos[i] = strdup(
					dl_config_get(&fs->config, keys[i]));
		if (!a->pos[0] || !a->pos[1]) {
			main_error("missing %s (see --help)",
				   a->pos[0] ? "MOUNTPOINT"
					     : "BACKING_DIR and MOUNTPOINT");
			return EXIT_USAGE;
		}
	}
	if (main_setup_log_level(a, fs))
		return EXIT_USAGE;
	if (main_metrics(a, fs)) {
		a->metrics_fd = dl_metrics_listen(main_metrics(a, fs), err,
						  sizeof(err));
		if (a->metrics_fd < 0) {
			main_error("%s", err);
			return EXIT_USAGE;
		}
	}

	if (gethostname(host, sizeof(host)) == -1)
		snprintf(host, sizeof(host), "localhost");
	host[sizeof(host) - 1] = '\0';
	fs->opt.backend =
		main_pick(a->backend, &fs->config, "backend", "local:");
	fs->opt.host_id = main_pick(a->host_id, &fs->config, "host_id", host);
	if (!fs->opt.backend || !fs->opt.host_id) {
		main_error("out of memory");
		return EXIT_USAGE;
	}

	err[0] = '\0';
	if (dl_backend_check_uri(fs->opt.backend, err, sizeof(err)) != 0) {
		main_error("%s", err[0] ? err : "bad backend URI");
		return EXIT_USAGE;
	}
	blen = strlen(fs->opt.backend) + 16;
	fs->backend_redacted = malloc(blen);
	if (!fs->backend_redacted) {
		main_error("out of memory");
		return EXIT_USAGE;
	}
	dl_uri_redact(fs->opt.backend, fs->backend_redacted, blen);

	if (!fs->opt.host_id[0]) {
		main_error("host_id must not be empty");
		return EXIT_USAGE;
	}
	timeout = a->lock_timeout ? a->lock_timeout
				  : dl_config_get(&fs->config, "lock_timeout");
	if (timeout && main_parse_seconds(timeout, &fs->opt.lock_timeout)) {
		/* a value from the config file is not shown */
		if (a->lock_timeout)
			main_error("bad lock_timeout '%s': want a non-negative "
				   "number of seconds",
				   timeout);
		else
			main_error("bad lock_timeout in %s: want a "
				   "non-negative number of seconds",
				   fs->opt.config);
		return EXIT_USAGE;
	}

	if (main_cache_options(a, fs))
		return EXIT_USAGE;

	/* the agent cannot run without its socket; a mount without the
	 * default one only warns */
	sock = main_socket(a, fs);
	if (strcmp(sock, "none") != 0 &&
	    (a->agent || main_socket_explicit(a, fs)) &&
	    main_check_socket(sock, !a->agent))
		return EXIT_USAGE;

	fs->opt.foreground = a->foreground;
	fs->opt.debug = a->debug;
	if (a->agent)
		return 0;
	fs->opt.backing = main_dir("BACKING_DIR", a->pos[0]);
	if (!fs->opt.backing)
		return EXIT_USAGE;
	fs->opt.mountpoint = main_dir("MOUNTPOINT", a->pos[1]);
	if (!fs->opt.mountpoint)
		return EXIT_USAGE;
	res = main_is_mountpoint(fs->opt.mountpoint);
	if (res < 0) {
		main_error("MOUNTPOINT %s: %s", fs->opt.mountpoint,
			   strerror(-res));
		return EXIT_USAGE;
	}
	if (res) {
		main_error("MOUNTPOINT %s is already a mount point",
			   fs->opt.mountpoint);
		return EXIT_USAGE;
	}
	/* a mount inside its own backing directory would look itself up */
	blen = strlen(fs->opt.backing);
	if (strcmp(fs->opt.backing, fs->opt.mountpoint) != 0 &&
	    (strcmp(fs->opt.backing, "/") == 0 ||
	     (strncmp(fs->opt.mountpoint, fs->opt.backing, blen) == 0 &&
	      fs->opt.mountpoint[blen] == '/'))) {
		main_error("MOUNTPOINT %s is inside BACKING_DIR %s",
			   fs->opt.mountpoint, fs->opt.backing);
		return EXIT_USAGE;
	}

	fs->opt.foreground = a->foreground;
	fs->opt.debug = a->debug;
	fs->opt.allow_other = a->allow_other;
	return 0;
}

/* one O_PATH descriptor per known inode: take every descriptor we may */
static void main_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/*
 * main_background() - fork; the parent waits for the child's word on
 * startup and exits with it (0 ready, 1 failed).  Returns the write end
 * of the pipe in the child, or -1 after reporting an error.
 */
static int main_background(void)
{
	int p[2];
	char status;
	ssize_t n;

	if (pipe2(p, O_CLOEXEC) == -1) {
		main_error("pipe: %s", strerror(errno));
		return -1;
	}
	switch (fork()) {
	case -1:
		main_error("fork: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	case 0:
		close(p[0]);
		setsid();
		return p[1];
	default:
		close(p[1]);
		do {
			n = read(p[0], &status, 1);
		} while (n == -1 && errno == EINTR);
		if (n != 1) {
			main_error("the daemon died during startup");
			_exit(1);
		}
		_exit(status ? 1 : 0);
	}
}

/* the child is ready: detach from the terminal and release the parent */
static void main_detach(int ready_fd)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	char ok = 0;

	if (null != -1) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	if (write(ready_fd, &ok, 1) != 1)
		dl_log(DL_LOG_WARNING,
		       "cannot tell the parent we are ready: %s",
		       strerror(errno));
	close(ready_fd);
}

static void main_free(struct dl_fs *fs, struct main_args *a)
{
	free(fs->opt.backend);
	free(fs->opt.host_id);
	free(fs->opt.config);
	free(fs->opt.backing);
	free(fs->opt.mountpoint);
	free(fs->backend_redacted);
	dl_config_free(&fs->config);
	free(fs);

	free(a->backend);
	free(a->host_id);
	free(a->config);
	free(a->lock_timeout);
	free(a->cache);
	free(a->cache_idle_ms);
	free(a->versions);
	free(a->socket);
	free(a->log_level);
	free(a->metrics);
	if (a->metrics_fd >= 0)
		close(a->metrics_fd);
	free(a->ctl);
	free(a->pos[0]);
	free(a->pos[1]);
	free(a->extra);
	free(a->bad_option);
	free(a->secret_option);
}

/*
 * Tell systemd (Type=notify; NOTIFY_SOCKET set) that we serve: sent once
 * the backend has answered and the mount (or the agent's socket) is up,
 * from the process that serves, so MAINPID is right after a fork too.
 * Without NOTIFY_SOCKET it does nothing.
 */
static void main_notify_ready(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static void main_notify_ready(const char *fmt, ...)
{
	char status[512];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(status, sizeof(status), fmt, ap);
	va_end(ap);
	r = sd_notifyf(0, "READY=1\nMAINPID=%lu\nSTATUS=%s",
		       (unsigned long)getpid(), status);
	if (r < 0)
		dl_log(DL_LOG_WARNING, "cannot notify systemd: %s",
		       strerror(-r));
}

/*
 * Serve the metrics on the socket dl_metrics_listen() made at start (none:
 * nothing to do); it becomes the server's.  0, or -1 after the message.
 */
static int main_metrics_start(int *fd, struct lockmgr *lm,
			      struct dl_metrics_http **mh)
{
	char err[256];
	int s = *fd;

	if (s < 0)
		return 0;
	*fd = -1;
	if (dl_metrics_http_start(s, lm, mh, err, sizeof(err)) != 0) {
		main_error("%s", err);
		return -1;
	}
	return 0;
}

/*
 * main_agent() - --agent: run the lock manager and the control socket
 * with nothing mounted, until SIGINT, SIGTERM or SIGHUP.  Returns the exit
 * status.
 */
static int main_agent(struct dl_fs *fs, const char *sock, int *metrics_fd)
{
	struct dl_metrics_http *mh = NULL;
	struct lockmgr_conf conf = {
		.backend = {
			.uri = fs->opt.backend,
			.host_id = fs->opt.host_id,
			.config = &fs->config,
			.cache = fs->opt.cache,
			.cache_idle_ms = fs->opt.cache_idle_ms,
		},
		.lock_timeout_s = fs->opt.lock_timeout,
	};
	struct ctlsock_conf cc = {
		.path = sock,
		.backend_shown = fs->backend_redacted,
		.config = &fs->config,
	};
	struct ctlsock *cs = NULL;
	struct lockmgr *lm = NULL;
	int sig, ready_fd = -1, ret = 1;
	char err[256];
	sigset_t set;

	/* taken by sigwait() below; the threads we start inherit the mask */
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (!fs->opt.foreground) {
		ready_fd = main_background();
		if (ready_fd == -1)
			return 1;
	}
	/* a fresh incarnation per start: a restarted daemon owns nothing */
	conf.backend.incarnation = ((uint64_t)getpid() << 32) ^
				   (uint64_t)dl_now_ms() ^
				   ((uint64_t)(uintptr_t)&conf << 16);
	err[0] = '\0';
	if (lockmgr_create(&conf, &lm, err, sizeof(err)) != 0) {
		main_error("%s",
			   err[0] ? err : "cannot start the lock manager");
		goto out;
	}
	dl_config_forget_secrets(&fs->config); /* the backend has its copy */
	cc.lm = lm;
	if (main_metrics_start(metrics_fd, lm, &mh))
		goto out_lm;
	err[0] = '\0';
	if (ctlsock_start(&cc, &cs, err, sizeof(err)) != 0) {
		main_error("%s", err[0] ? err : "cannot start the socket");
		goto out_lm;
	}
	if (chdir("/") == -1)
		dl_log(DL_LOG_WARNING, "chdir /: %s", strerror(errno));
	if (ready_fd != -1) {
		dl_log_init("dlockfs", fs->opt.log_level, true);
		main_detach(ready_fd);
		ready_fd = -1;
	}
	dl_log(DL_LOG_INFO, "agent: host %s, backend %s, socket %s",
	       fs->opt.host_id, fs->backend_redacted, sock);
	main_notify_ready("agent: host %s, backend %s, socket %s",
			  fs->opt.host_id, fs->backend_redacted, sock);
	if (sigwait(&set, &sig) == 0)
		dl_log(DL_LOG_INFO, "signal %d: stopping", sig);
	sd_notify(0, "STOPPING=1");
	ret = 0;
	ctlsock_stop(cs);
out_lm:
	dl_metrics_http_stop(mh);
	lockmgr_destroy(lm);
out:
	if (ready_fd != -1) {
		char fail = 1;

		if (write(ready_fd, &fail, 1) != 1)
			ret = 1;
		close(ready_fd);
	}
	return ret;
}

/*
 * A shell starts a background job of a non-interactive script with SIGINT
 * (and SIGQUIT) ignored, and libfuse installs its handlers only for
 * signals left at SIG_DFL: such a daemon would not stop on SIGINT.  SIGINT
 * and SIGTERM always stop us; SIGHUP stays ignored under nohup.
 */
static void main_default_signals(void)
{
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct main_args a = { .metrics_fd = -1 };
	struct fuse_lowlevel_ops ops = { 0 };
	struct fuse_loop_config *loop;
	struct ctlsock *cs = NULL;
	struct dl_metrics_http *mh = NULL;
	struct dl_fs *fs;
	char err[256], *fsname = NULL, *o = NULL;
	int ret = 1, ready_fd = -1;

	fuse_set_log_func(main_fuse_log);
	fs = calloc(1, sizeof(*fs));
	if (!fs) {
		main_error("out of memory");
		return 1;
	}
	fs->backing_fd = -1;

	if (fuse_opt_parse(&args, &a, main_opts, main_opt_proc) == -1) {
		main_error("%s", main_fuse_error() ? main_fuse_error()
						   : "bad command line");
		ret = EXIT_USAGE;
		goto out_free;
	}
	/* before any secret is read: no core dump, no ptrace by our own
	 * uid, no /proc/PID/mem for it; -d keeps them for debugging */
	if (!a.debug && prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == -1) {
		main_error("prctl(PR_SET_DUMPABLE): %s", strerror(errno));
		goto out_free;
	}
	main_default_signals();
	if (a.help) {
		main_usage(argv[0]);
		ret = 0;
		goto out_free;
	}
	if (a.version) {
		printf("dlockfs %s\n", DLOCKFS_VERSION);
		ret = 0;
		goto out_free;
	}
	ret = main_setup(&a, fs);
	if (ret == 0 && a.ctl &&
	    dl_config_parse(&fs->config, a.ctl, "-o", err, sizeof(err)) < 0) {
		main_error("%s", err);
		ret = EXIT_USAGE;
	}
	if (ret == 0) {
		/* paths=, shared_names=, max_*_per_uid=: checked now, not
		 * when the socket starts, so a bad one is a usage error in
		 * every mode (the socket loads them again) */
		struct ctl_policy pol = { 0 };

		if (ctlpol_load(&pol, &fs->config, err, sizeof(err)) < 0) {
			main_error("%s", err);
			ret = EXIT_USAGE;
		}
		ctlpol_free(&pol);
	}
	if (ret)
		goto out_free;
	ret = 1;
	dl_log_init("dlockfs", fs->opt.log_level, false);
	if (a.agent) {
		ret = main_agent(fs, main_socket(&a, fs), &a.metrics_fd);
		goto out_free;
	}

	fs->backing_fd =
		open(fs->opt.backing, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fs->backing_fd == -1) {
		main_error("BACKING_DIR %s: %s", fs->opt.backing,
			   strerror(errno));
		ret = EXIT_USAGE;
		goto out_free;
	}
	main_raise_nofile();
	ret = -dl_fs_init(fs);
	if (ret) {
		main_error("cannot set up the inode table: %s", strerror(ret));
		ret = 1;
		goto out_close;
	}
	ret = 1;

	dl_passthrough_ops(&ops);
	lockops_fill(&ops);
	dl_fuse_count_ops(&ops);

	/* fsname=dlockfs:BACKING_DIR,subtype=dlockfs before the user's -o */
	if (asprintf(&fsname, "fsname=dlockfs:%s", fs->opt.backing) == -1 ||
	    fuse_opt_add_opt_escaped(&o, fsname) == -1 ||
	    fuse_opt_add_opt(&o, "subtype=dlockfs") == -1 ||
	    fuse_opt_insert_arg(&args, 1, "-o") == -1 ||
	    fuse_opt_insert_arg(&args, 2, o) == -1) {
		main_error("out of memory");
		goto out_fs;
	}
	main_captured[0] = '\0';
	fs->se = fuse_session_new(&args, &ops, sizeof(ops), fs);
	if (!fs->se) {
		/* libfuse rejects the -o options it does not know here */
		main_error("%s", main_fuse_error() ? main_fuse_error()
						   : "cannot create the FUSE "
						     "session");
		ret = EXIT_USAGE;
		goto out_fs;
	}

	/* everything that can fail to start, before the mount: a daemon
	 * that cannot reach its backend leaves nothing mounted */
	if (!fs->opt.foreground) {
		ready_fd = main_background();
		if (ready_fd == -1)
			goto out_session;
	}
	err[0] = '\0';
	if (lockops_init(fs, err, sizeof(err)) != 0) {
		main_error("%s",
			   err[0] ? err : "cannot start the lock manager");
		goto out_session;
	}
	dl_config_forget_secrets(&fs->config); /* the backend has its copy */
	if (main_metrics_start(&a.metrics_fd, fs->lm, &mh))
		goto out_lockops;
	if (strcmp(main_socket(&a, fs), "none") != 0) {
		struct ctlsock_conf cc = {
			.path = main_socket(&a, fs),
			.lm = fs->lm,
			.backend_shown = fs->backend_redacted,
			.mountpoint = fs->opt.mountpoint,
			.config = &fs->config,
		};

		err[0] = '\0';
		if (ctlsock_start(&cc, &cs, err, sizeof(err)) != 0) {
			/* asked for: fatal; the default: the mount still
			 * serves (another daemon may own the socket) */
			if (main_socket_explicit(&a, fs)) {
				main_error("%s", err);
				goto out_lockops;
			}
			dl_log(DL_LOG_WARNING, "no control socket: %s", err);
			cs = NULL;
		}
	}
	if (fuse_set_signal_handlers(fs->se) != 0) {
		main_error("cannot install signal handlers");
		goto out_ctl;
	}
	main_captured[0] = '\0';
	if (fuse_session_mount(fs->se, fs->opt.mountpoint) != 0) {
		main_error("cannot mount on %s%s%s", fs->opt.mountpoint,
			   main_fuse_error() ? ": " : "",
			   main_fuse_error() ? main_fuse_error() : "");
		goto out_signals;
	}
	main_capture = false;

	if (chdir("/") == -1)
		dl_log(DL_LOG_WARNING, "chdir /: %s", strerror(errno));
	if (ready_fd != -1) {
		dl_log_init("dlockfs", fs->opt.log_level, true);
		main_detach(ready_fd);
		ready_fd = -1;
	}
	/* the kernel has already applied the caller's umask to every mode
	 * it sends; ours must not take more bits away */
	umask(0);
	dl_log(DL_LOG_INFO, "mounted %s on %s", fs->opt.backing,
	       fs->opt.mountpoint);
	main_notify_ready("serving %s on %s, host %s, backend %s",
			  fs->opt.backing, fs->opt.mountpoint, fs->opt.host_id,
			  fs->backend_redacted);
	/* without it the kernel checks no search permission on directories
	 * it has cached, and we open files by descriptor, not by path */
	if (a.allow_other && !a.default_permissions)
		dl_log(DL_LOG_WARNING, "allow_other without "
				       "default_permissions: directory "
				       "permissions are not enforced for other "
				       "users");

	loop = fuse_loop_cfg_create();
	if (!loop) {
		dl_log(DL_LOG_ERR, "cannot create the loop config");
		goto out_stop;
	}
	fuse_loop_cfg_set_clone_fd(loop, 0);
	fuse_loop_cfg_set_idle_threads(loop, 10);
	ret = fuse_session_loop_mt(fs->se, loop);
	fuse_loop_cfg_destroy(loop);
	/* a signal handled by libfuse is a clean stop */
	if (ret == SIGTERM || ret == SIGINT || ret == SIGHUP) {
		dl_log(DL_LOG_INFO, "signal %d: unmounting", ret);
		ret = 0;
	} else if (ret) {
		dl_log(DL_LOG_ERR, "session loop failed: %d", ret);
		ret = 1;
	}

out_stop:
	sd_notify(0, "STOPPING=1");
	/* waiters are answered and locks released while still mounted */
	ctlsock_stop(cs);
	cs = NULL;
	dl_metrics_http_stop(mh);
	mh = NULL;
	lockops_destroy(fs);
	fuse_session_unmount(fs->se);
out_signals:
	fuse_remove_signal_handlers(fs->se);
out_ctl:
	ctlsock_stop(cs);
out_lockops:
	dl_metrics_http_stop(mh);
	lockops_destroy(fs);
out_session:
	fuse_session_destroy(fs->se);
	fs->se = NULL;
out_fs:
	dl_fs_destroy(fs);
out_close:
	close(fs->backing_fd);
out_free:
	if (ready_fd != -1) {
		char fail = 1;

		if (write(ready_fd, &fail, 1) != 1)
			ret = 1;
		close(ready_fd);
	}
	free(fsname);
	free(o);
	fuse_opt_free_args(&args);
	main_free(fs, &a);
	return ret;
}

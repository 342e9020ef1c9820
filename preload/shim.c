/*
 * shim.c - libdlock_preload.so: cluster-wide file locks for unmodified
 * programs, for files outside any dlockfs mount.
 *
 * With LD_PRELOAD, flock(), fcntl()/fcntl64() lock commands and lockf()
 * on a file under a DLOCK_PATHS prefix are sent, with the descriptor
 * itself, to the local dlockfs daemon's control socket (DLOCK_SOCKET);
 * the daemon decides them through its lock manager and backend.  Every
 * other call, and every file elsewhere or inside a dlockfs mount (the
 * mount locks those itself), goes straight to libc.
 *
 * Kernel semantics, and how they are kept:
 *  - POSIX locks belong to the process: the daemon keys them by our pid.
 *    close(), fclose(), dup2()/dup3() over a descriptor of a file this
 *    process locked (or inherited across exec) tell the daemon, which
 *    drops the process's POSIX locks on that file, as the kernel does on
 *    any close.  A child after fork() holds none (the daemon knows it by
 *    its own pid); exec keeps them (same pid).
 *  - flock and OFD locks belong to the open file description: the daemon
 *    keeps a duplicate and finds "last close" itself (see fs/ctl/owners.c),
 *    so they follow the description across fork, exec and children that
 *    do not even run the shim.
 *  - A blocking wait is a read on our connection: a signal whose handler
 *    lacks SA_RESTART interrupts it, we cancel the request and return
 *    EINTR unless the grant won the race; with SA_RESTART the read
 *    restarts, as the kernel restarts F_SETLKW.
 *  - The kernel lock is taken too (after the cluster grant; released
 *    first), so processes on this host that do not run the shim are
 *    excluded as well; DLOCK_KERNEL_LOCK=0 turns that off.
 *  - Fail closed: no daemon, no lock (ENOLCK and one line on stderr),
 *    unless DLOCK_FALLBACK=local (kernel lock only, one warning).
 *  - A lost lock (break, lease ended) fails writes with EIO, as Linux NFS
 *    does: after a grant the descriptor is registered with the daemon
 *    (DLP_FENCE) and in fence_fds[] (its duplicates too: dup, dup2, dup3,
 *    F_DUPFD); the daemon sets the file's slot in our read-only fence
 *    page (proto.h) when the lock is lost.  write and friends on a
 *    registered descriptor check that slot (two atomic loads, one for any
 *    other descriptor) and fail with EIO until the descriptor is closed;
 *    reads are untouched.  A child after fork starts with no registered
 *    descriptor (its own locks register it again): an inherited flock
 *    description is fenced in the parent only.  exec drops the
 *    registrations too.
 *
 * Threads: each call borrows a connection from a small pool (one per call
 * in flight, so a blocked waiter never holds up another thread); the pool
 * and the tables below have their own mutexes, never held across a call
 * to the daemon.  Only the intercepted symbols are exported.
 *
 * Why one file of ~1,400 lines: an interposer's state (the real libc
 * entry points, the configuration, the descriptor and fence tables, the
 * connection pool) is shared by every part of it, and must never be
 * reachable from the program it is loaded into.  In one file all of it is
 * static, and the sections below (configuration; which descriptors are
 * ours; the connection pool; talking to the daemon; the lock calls; the
 * exported symbols) read in the order a call goes through them.
 */
/* define fcntl and lockf themselves, not the fcntl64/lockf64 redirects */
#undef _FILE_OFFSET_BITS
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "fs/ctl/proto.h"

#define SHIM_EXPORT    __attribute__((visibility("default")))
#define SHIM_MAX_PATHS 32
#define SHIM_POOL      8
#define SHIM_CACHE     64
#define SHIM_FENCE_FDS 65536 /* descriptors above are not fenced */
#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

/* ---- configuration (read once) ------------------------------------------ */

struct shim_path {
	char *label;  /* the cluster-wide name of the prefix */
	char *prefix; /* canonical (realpath) prefix, as /proc shows paths */
	size_t len;
};

static struct {
	struct shim_path paths[SHIM_MAX_PATHS];
	unsigned npaths;
	char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	bool fallback_local;
	bool kernel_lock;
	bool debug;
	bool server_uid_set; /* DLOCK_SERVER_UID: a non-root daemon we trust */
	uid_t server_uid;
} cfg;

static pthread_once_t cfg_once = PTHREAD_ONCE_INIT;

/* real libc functions */
static int (*real_flock)(int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_close)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_dup)(int);
static int (*real_fclose)(FILE *);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off64_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static ssize_t (*real_pwritev64)(int, const struct iovec *, int, off64_t);
static ssize_t (*real_pwritev2)(int, const struct iovec *, int, off_t, int);
static ssize_t (*real_pwritev64v2)(int, const struct iovec *, int, off64_t,
				   int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off64_t);
static int (*real_fallocate)(int, int, off_t, off_t);
static int (*real_fallocate64)(int, int, off64_t, off64_t);
static int (*real_posix_fallocate)(int, off_t, off_t);
static int (*real_posix_fallocate64)(int, off64_t, off64_t);

static void shim_debug(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));

static void shim_debug(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	if (!cfg.debug)
		return;
	n = snprintf(buf, sizeof(buf), "dlock[%d]: ", (int)getpid());
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
	va_end(ap);
	n = (int)strlen(buf);
	if (n < (int)sizeof(buf) - 1)
		buf[n++] = '\n';
	/* real_write: ours would wait for the shim_init() we may be in */
	if (real_write && real_write(STDERR_FILENO, buf, (size_t)n) < 0)
		return;
}

static void shim_resolve(void)
{
	real_flock = (int (*)(int, int))dlsym(RTLD_NEXT, "flock");
	real_fcntl = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl64");
	if (!real_fcntl)
		real_fcntl = (int (*)(int, int, ...))dlsym(RTLD_NEXT, "fcntl");
	real_close = (int (*)(int))dlsym(RTLD_NEXT, "close");
	real_dup2 = (int (*)(int, int))dlsym(RTLD_NEXT, "dup2");
	real_dup3 = (int (*)(int, int, int))dlsym(RTLD_NEXT, "dup3");
	real_dup = (int (*)(int))dlsym(RTLD_NEXT, "dup");
	real_fclose = (int (*)(FILE *))dlsym(RTLD_NEXT, "fclose");
	*(void **)&real_pwrite = dlsym(RTLD_NEXT, "pwrite");
	*(void **)&real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
	*(void **)&real_writev = dlsym(RTLD_NEXT, "writev");
	*(void **)&real_pwritev = dlsym(RTLD_NEXT, "pwritev");
	*(void **)&real_pwritev64 = dlsym(RTLD_NEXT, "pwritev64");
	*(void **)&real_pwritev2 = dlsym(RTLD_NEXT, "pwritev2");
	*(void **)&real_pwritev64v2 = dlsym(RTLD_NEXT, "pwritev64v2");
	*(void **)&real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
	*(void **)&real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
	*(void **)&real_fallocate = dlsym(RTLD_NEXT, "fallocate");
	*(void **)&real_fallocate64 = dlsym(RTLD_NEXT, "fallocate64");
	*(void **)&real_posix_fallocate = dlsym(RTLD_NEXT, "posix_fallocate");
	*(void **)&real_posix_fallocate64 = dlsym(RTLD_NEXT, "posix_"
							     "fallocate64");
	*(void **)&real_write = dlsym(RTLD_NEXT, "write");
}

/* one DLOCK_PATHS entry: PREFIX or LABEL=PREFIX */
static void shim_add_path(const char *entry)
{
	const char *eq = strchr(entry, '=');
	struct shim_path *p;
	char *given, *real;
	size_t n;

	if (!entry[0] || cfg.npaths == SHIM_MAX_PATHS)
		return;
	given = strdup(eq ? eq + 1 : entry);
	if (!given)
		return;
	n = strlen(given);
	while (n > 1 && given[n - 1] == '/')
		given[--n] = '\0';
	if (given[0] != '/') {
		shim_debug("DLOCK_PATHS entry '%s' ignored: not absolute",
			   entry);
		free(given);
		return;
	}
	real = realpath(given, NULL);
	p = &cfg.paths[cfg.npaths];
	p->prefix = real ? real : strdup(given);
	p->label = eq ? strndup(entry, (size_t)(eq - entry)) : strdup(given);
	free(given);
	if (!p->prefix || !p->label || !p->label[0]) {
		free(p->prefix);
		free(p->label);
		return;
	}
	p->len = strcmp(p->prefix, "/") == 0 ? 0 : strlen(p->prefix);
	cfg.npaths++;
	shim_debug("covering %s as '%s'", p->prefix, p->label);
}

static void shim_config(void)
{
	const char *s;
	char *list, *save = NULL, *e;

	shim_resolve();
	s = getenv("DLOCK_DEBUG");
	cfg.debug = s && s[0] && strcmp(s, "0") != 0;
	s = getenv("DLOCK_SOCKET");
	snprintf(cfg.socket, sizeof(cfg.socket), "%s",
		 s && s[0] ? s : DL_SOCKET_DEFAULT);
	s = getenv("DLOCK_FALLBACK");
	cfg.fallback_local = s && strcmp(s, "local") == 0;
	s = getenv("DLOCK_KERNEL_LOCK");
	cfg.kernel_lock = !(s && strcmp(s, "0") == 0);
	s = getenv("DLOCK_SERVER_UID");
	if (s && s[0]) {
		char *end;
		unsigned long v;

		errno = 0;
		v = strtoul(s, &end, 10);
		if (!errno && !*end && v < (uid_t)-1) {
			cfg.server_uid = (uid_t)v;
			cfg.server_uid_set = true;
		} else {
			shim_debug("DLOCK_SERVER_UID '%s' ignored: not a uid",
				   s);
		}
	}
	s = getenv("DLOCK_PATHS");
	if (!s || !(list = strdup(s)))
		return;
	for (e = strtok_r(list, ":", &save); e; e = strtok_r(NULL, ":", &save))
		shim_add_path(e);
	free(list);
}

static void shim_init(void)
{
	pthread_once(&cfg_once, shim_config);
}

/* ---- which descriptors are ours ----------------------------------------- */

/* is device @dev a dlockfs mount?  1 yes, 0 no */
static int shim_is_dlockfs(dev_t dev)
{
	char line[4096], want[32];
	int found = 0;
	FILE *f;

	snprintf(want, sizeof(want), " %u:%u ", major(dev), minor(dev));
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return 0;
	while (!found && fgets(line, sizeof(line), f)) {
		char *sep;

		if (!strstr(line, want))
			continue;
		sep = strstr(line, " - ");
		found = sep && strncmp(sep + 3, "fuse.dlockfs ", 13) == 0;
	}
	real_fclose(f);
	return found;
}

struct shim_cover {
	dev_t dev;
	ino_t ino;
	int path; /* index in cfg.paths, -1: not ours */
};

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shim_cover cache[SHIM_CACHE];
static unsigned cache_next;

/*
 * Is @fd a file the cluster locks?  Returns the DLOCK_PATHS index, or -1
 * (libc decides); fills *st.
 */
static int shim_cover(int fd, struct stat *st)
{
	char link[64], path[PATH_MAX];
	struct statfs sfs;
	int idx = -1;
	ssize_t n;

	if (!cfg.npaths || fstat(fd, st) == -1 ||
	    (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode)))
		return -1;
	pthread_mutex_lock(&cache_mu);
	for (unsigned i = 0; i < SHIM_CACHE; i++)
		if (cache[i].dev == st->st_dev && cache[i].ino == st->st_ino &&
		    (cache[i].dev || cache[i].ino)) {
			idx = cache[i].path;
			pthread_mutex_unlock(&cache_mu);
			return idx;
		}
	pthread_mutex_unlock(&cache_mu);

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return -1;
	path[n] = '\0';
	for (unsigned i = 0; i < cfg.npaths && idx < 0; i++) {
		const struct shim_path *p = &cfg.paths[i];

		if (strncmp(path, p->prefix, p->len) == 0 &&
		    (path[p->len] == '/' || path[p->len] == '\0'))
			idx = (int)i;
	}
	/* a dlockfs mount locks its files itself */
	if (idx >= 0 && fstatfs(fd, &sfs) == 0 &&
	    sfs.f_type == FUSE_SUPER_MAGIC && shim_is_dlockfs(st->st_dev))
		idx = -1;
	pthread_mutex_lock(&cache_mu);
	cache[cache_next++ % SHIM_CACHE] =
		(struct shim_cover){ st->st_dev, st->st_ino, idx };
	pthread_mutex_unlock(&cache_mu);
	shim_debug("%s: %s", path, idx >= 0 ? "cluster lock" : "libc");
	return idx;
}

/*
 * Files whose close the daemon must hear of: this process locked them or
 * inherited a descriptor of them across exec.
 */
struct shim_file {
	dev_t dev;
	ino_t ino;
};

static pthread_mutex_t files_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shim_file *files;
static size_t nfiles, capfiles;
static atomic_size_t files_count; /* read without files_mu: fast path */

static void files_add(dev_t dev, ino_t ino)
{
	pthread_mutex_lock(&files_mu);
	for (size_t i = 0; i < nfiles; i++)
		if (files[i].dev == dev && files[i].ino == ino)
			goto out;
	if (nfiles == capfiles) {
		size_t nc = capfiles ? capfiles * 2 : 8;
		void *p = realloc(files, nc * sizeof(*files));

		if (!p)
			goto out; /* then its close goes unreported: exit
				     still releases everything */
		files = p;
		capfiles = nc;
	}
	files[nfiles++] = (struct shim_file){ dev, ino };
	atomic_store(&files_count, nfiles);
out:
	pthread_mutex_unlock(&files_mu);
}

static bool files_has(dev_t dev, ino_t ino)
{
	bool found = false;

	pthread_mutex_lock(&files_mu);
	for (size_t i = 0; i < nfiles && !found; i++)
		found = files[i].dev == dev && files[i].ino == ino;
	pthread_mutex_unlock(&files_mu);
	return found;
}

/*
 * Fencing: fence_fds[fd] is 1 + the slot of fd's file in fence_page, or 0
 * for a descriptor never locked through the shim.  Lock-free: written on a
 * grant (after the page is mapped), cleared on close/dup2/dup3 and in a
 * fork child; read on every write.
 */
static _Atomic(const struct dl_fence_slot *) fence_page;
/* the daemon's lease page (proto.h), mapped at the first fence; NULL: none */
static _Atomic(const struct dl_lease *) lease_page;
static _Atomic uint16_t fence_fds[SHIM_FENCE_FDS];
static atomic_int fence_hi; /* 1 + the highest fd ever registered */

/* is a lock granted under lease @gen still trusted now (by the clock)? */
static bool fence_trusted(uint64_t gen)
{
	const struct dl_lease *lp = atomic_load(&lease_page);
	struct timespec ts;

	if (!gen || !lp)
		return true;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return dl_lease_trusted(
		lp, gen, (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
}

/* has the lock behind @fd been lost?  The write path's only check */
static inline bool fence_lost(int fd)
{
	const struct dl_fence_slot *pg;
	unsigned slot;

	if ((unsigned)fd >= SHIM_FENCE_FDS)
		return false;
	slot = atomic_load_explicit(&fence_fds[fd], memory_order_relaxed);
	if (__builtin_expect(!slot, 1))
		return false;
	pg = atomic_load_explicit(&fence_page, memory_order_acquire);
	if (!pg)
		return false;
	if (__atomic_load_n(&pg[slot - 1].lost, __ATOMIC_ACQUIRE))
		return true;
	return !fence_trusted(pg[slot - 1].lease);
}

static void fence_forget(int fd)
{
	if ((unsigned)fd < SHIM_FENCE_FDS &&
	    atomic_load_explicit(&fence_fds[fd], memory_order_relaxed))
		atomic_store_explicit(&fence_fds[fd], 0, memory_order_relaxed);
}

static void fence_set(int fd, unsigned slot)
{
	int hi = atomic_load(&fence_hi);

	atomic_store(&fence_fds[fd], (uint16_t)slot);
	while (hi < fd + 1 &&
	       !atomic_compare_exchange_weak(&fence_hi, &hi, fd + 1))
		;
}

/* @newfd is now a duplicate of @oldfd: it shares its fence */
static void fence_dup(int oldfd, int newfd)
{
	unsigned slot = 0;

	if (newfd < 0 || (unsigned)newfd >= SHIM_FENCE_FDS)
		return;
	if ((unsigned)oldfd < SHIM_FENCE_FDS)
		slot = atomic_load(&fence_fds[oldfd]);
	if (slot)
		fence_set(newfd, slot);
	else
		fence_forget(newfd);
}

/* ---- the connection pool ------------------------------------------------- */

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static int pool[SHIM_POOL];
static unsigned npool;
static atomic_uint next_id;
static atomic_bool warned, refused_warned;
static atomic_uint untrusted_uid; /* of the last daemon we would not trust */

/* conn_get(): the socket's server is not a daemon we trust */
#define SHIM_UNTRUSTED (-EKEYREJECTED)

/*
 * Whoever serves the socket gets our descriptors: it must be root, our own
 * user, or the uid DLOCK_SERVER_UID names (SO_PEERCRED: the credentials of
 * the process that called listen(), which no file mode can fake).
 */
static bool shim_trusted(int fd)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) == -1)
		return false;
	if (cr.uid == 0 || cr.uid == geteuid() ||
	    (cfg.server_uid_set && cr.uid == cfg.server_uid))
		return true;
	atomic_store(&untrusted_uid, (unsigned)cr.uid);
	return false;
}

/* a connection to the daemon, or a negative errno */
static int conn_get(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	pthread_mutex_lock(&pool_mu);
	if (npool) {
		fd = pool[--npool];
		pthread_mutex_unlock(&pool_mu);
		return fd;
	}
	pthread_mutex_unlock(&pool_mu);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	memcpy(sa.sun_path, cfg.socket, sizeof(sa.sun_path));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == -1) {
		err = errno;
		real_close(fd);
		return -err;
	}
	if (!shim_trusted(fd)) {
		real_close(fd);
		return SHIM_UNTRUSTED;
	}
	return fd;
}

static void conn_put(int fd)
{
	pthread_mutex_lock(&pool_mu);
	if (npool < SHIM_POOL) {
		pool[npool++] = fd;
		fd = -1;
	}
	pthread_mutex_unlock(&pool_mu);
	if (fd >= 0)
		real_close(fd);
}

/* fork: the child must not speak on its parent's connections */
static void atfork_prepare(void)
{
	pthread_mutex_lock(&pool_mu);
	pthread_mutex_lock(&files_mu);
	pthread_mutex_lock(&cache_mu);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&cache_mu);
	pthread_mutex_unlock(&files_mu);
	pthread_mutex_unlock(&pool_mu);
}

static void atfork_child(void)
{
	const struct dl_fence_slot *pg = atomic_exchange(&fence_page, NULL);
	int hi = atomic_load(&fence_hi);

	while (npool)
		real_close(pool[--npool]);
	/* our parent's page: its locks, not ours (see the top) */
	for (int i = 0; i < hi; i++)
		fence_forget(i);
	atomic_store(&fence_hi, 0);
	if (pg)
		munmap((void *)pg, DL_FENCE_PAGE_SIZE);
	atfork_parent();
}

/* ---- talking to the daemon ----------------------------------------------- */

/* the daemon is unreachable: say so once (per process) */
static void shim_unreachable(int err, const char *what)
{
	if (atomic_exchange(&warned, true))
		return;
	if (cfg.fallback_local)
		fprintf(stderr,
			"dlock: cannot reach the lock daemon at %s (%s); "
			"DLOCK_FALLBACK=local: taking host-local kernel locks "
			"only\n",
			cfg.socket, strerror(-err));
	else
		fprintf(stderr,
			"dlock: %s refused (ENOLCK): cannot reach the "
			"lock daemon at %s: %s\n",
			what, cfg.socket, strerror(-err));
}

/*
 * rpc() - send @req (with descriptor @fd when >= 0) and wait for its
 * reply in *rep.  A signal that interrupts the wait cancels a request
 * with DLP_F_WAIT; the daemon's answer still decides.  Returns 0 (the
 * daemon's verdict is rep->err), or -ENOTCONN and friends when the daemon
 * cannot be reached or went away.
 */
static int rpc(struct dl_proto_msg *req, int fd, struct dl_proto_msg *rep,
	       unsigned char *buf, int *rfd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} rctl;
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	bool cancelled = false;
	int conn, len, ret;
	ssize_t n;

	conn = conn_get();
	if (conn < 0)
		return conn;
	req->hdr.id = atomic_fetch_add(&next_id, 1) + 1;
	len = proto_encode(req, buf, DL_PROTO_MAX_FRAME);
	if (len < 0) {
		conn_put(conn);
		return len;
	}
	iov = (struct iovec){ buf, (size_t)len };
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
	}
	do {
		n = sendmsg(conn, &mh, MSG_NOSIGNAL);
	} while (n < 0 && errno == EINTR);
	if (n != len) {
		ret = n < 0 ? -errno : -EIO;
		goto out_drop;
	}
	for (;;) {
		struct msghdr rh = { .msg_iov = &iov, .msg_iovlen = 1 };

		iov = (struct iovec){ buf, DL_PROTO_MAX_FRAME };
		if (rfd) {
			rh.msg_control = rctl.b;
			rh.msg_controllen = sizeof(rctl.b);
		}
		n = recvmsg(conn, &rh, MSG_CMSG_CLOEXEC);
		if (n > 0 && rfd && rh.msg_controllen) {
			struct cmsghdr *cm = CMSG_FIRSTHDR(&rh);

			if (cm && cm->cmsg_level == SOL_SOCKET &&
			    cm->cmsg_type == SCM_RIGHTS &&
			    cm->cmsg_len == CMSG_LEN(sizeof(int))) {
				if (*rfd >= 0)
					real_close(*rfd);
				memcpy(rfd, CMSG_DATA(cm), sizeof(int));
			}
		}
		if (n < 0 && errno == EINTR) {
			struct dl_proto_msg c = {
				.hdr = { .type = DLP_CANCEL }
			};
			unsigned char cb[64];

			if (cancelled || !(req->flags & DLP_F_WAIT))
				continue;
			cancelled = true;
			c.target_id = req->hdr.id;
			len = proto_encode(&c, cb, sizeof(cb));
			if (len > 0 &&
			    send(conn, cb, (size_t)len, MSG_NOSIGNAL) != len) {
				ret = -EIO;
				goto out_drop;
			}
			continue;
		}
		if (n <= 0) {
			ret = n < 0 ? -errno : -ECONNRESET;
			goto out_drop;
		}
		ret = proto_decode(buf, (size_t)n, rep);
		if (ret < 0)
			goto out_drop;
		if (rep->hdr.type == DLP_REPLY && rep->hdr.id == req->hdr.id)
			break;
	}
	conn_put(conn);
	return 0;

out_drop:
	real_close(conn);
	return ret;
}

/*
 * A request about descriptor @fd: the descriptor is all we send.  The
 * daemon names the file from its own paths= (DLOCK_PATHS only chose to
 * send it), so a label of ours could not name another user's file.
 */
static void req_fd(struct dl_proto_msg *m)
{
	m->flags |= DLP_F_FD;
}

/*
 * Ask the daemon.  Returns its verdict (0 or -errno), or -ENOLCK after
 * saying once that it cannot be reached; *unreachable tells which.
 */
static int shim_ask(struct dl_proto_msg *req, int fd, struct dl_proto_msg *rep,
		    const char *what, bool *unreachable)
{
	unsigned char *buf = malloc(DL_PROTO_MAX_FRAME);
	int ret;

	*unreachable = false;
	if (!buf)
		return -ENOLCK;
	ret = rpc(req, fd, rep, buf, NULL);
	if (ret == SHIM_UNTRUSTED) {
		/* fail closed, fallback or not; an unlock or close has
		 * nothing to undo there: nothing was locked through it */
		free(buf);
		*unreachable = req->hdr.type == DLP_UNLOCK ||
			       req->hdr.type == DLP_CLOSED;
		if (!*unreachable && !atomic_exchange(&warned, true))
			fprintf(stderr,
				"dlock: %s refused (ENOLCK): the lock daemon "
				"at "
				"%s runs as uid %u, not root (set "
				"DLOCK_SERVER_UID=%u to trust it)\n",
				what, cfg.socket, atomic_load(&untrusted_uid),
				atomic_load(&untrusted_uid));
		return -ENOLCK;
	}
	if (ret < 0) {
		free(buf);
		*unreachable = true;
		shim_unreachable(ret, what);
		return -ENOLCK;
	}
	/* a file the daemon will not name (not under its paths=): a setup
	 * error, said once per process like an unreachable daemon */
	if (rep->err == -ENOLCK && rep->nstr &&
	    !atomic_exchange(&refused_warned, true))
		fprintf(stderr, "dlock: %s refused (ENOLCK): %.*s\n", what,
			(int)rep->str[0].len, rep->str[0].p);
	free(buf);
	return rep->err;
}

/*
 * The daemon's lease page, once per process (see proto.h): without it the
 * shim fences by the lost mark only.  @buf: DL_PROTO_MAX_FRAME bytes.
 */
static void shim_lease_page(int fd, unsigned char *buf)
{
	struct dl_proto_msg req = { .hdr = { .type = DLP_FENCE } }, rep;
	const struct dl_lease *none = NULL;
	long pgsz = sysconf(_SC_PAGESIZE);
	int rfd = -1;
	void *m;

	req.flags = DLP_F_FD | DLP_F_LEASE;
	if (rpc(&req, fd, &rep, buf, &rfd) < 0 || rep.err < 0 || rfd < 0)
		goto out;
	m = mmap(NULL, (size_t)pgsz, PROT_READ, MAP_SHARED, rfd, 0);
	if (m == MAP_FAILED)
		goto out;
	if (!atomic_compare_exchange_strong(&lease_page, &none, m))
		munmap(m, (size_t)pgsz);
out:
	if (rfd >= 0)
		real_close(rfd);
}

/*
 * shim_fence() - after a grant on @fd (file @st): have the daemon watch
 * it for a lost lock.  Best effort: an old daemon, a full page or no
 * memory leave the lock in place, only unfenced.
 */
static void shim_fence(int fd, const struct stat *st)
{
	struct dl_proto_msg req = { .hdr = { .type = DLP_FENCE } }, rep;
	const struct dl_fence_slot *pg = atomic_load(&fence_page), *mine;
	unsigned char *buf;
	int rfd = -1, saved = errno;
	unsigned slot;

	if ((unsigned)fd >= SHIM_FENCE_FDS)
		return;
	slot = atomic_load(&fence_fds[fd]);
	/* registered already, for this file, not lost: nothing to ask */
	if (slot && pg && pg[slot - 1].dev == (uint64_t)st->st_dev &&
	    pg[slot - 1].ino == (uint64_t)st->st_ino &&
	    !__atomic_load_n(&pg[slot - 1].lost, __ATOMIC_ACQUIRE))
		return;
	buf = malloc(DL_PROTO_MAX_FRAME);
	if (!buf)
		return;
	req.flags = DLP_F_FD | (pg ? 0 : DLP_F_PAGE);
	if (rpc(&req, fd, &rep, buf, &rfd) < 0 || rep.err < 0 ||
	    rep.start >= DL_FENCE_SLOTS)
		goto out;
	if (rfd >= 0) {
		void *m = mmap(NULL, DL_FENCE_PAGE_SIZE, PROT_READ, MAP_SHARED,
			       rfd, 0);
		const struct dl_fence_slot *none = NULL;

		if (m == MAP_FAILED)
			goto out;
		/* another thread may have mapped it first: the same file */
		if (!atomic_compare_exchange_strong(&fence_page, &none, m))
			munmap(m, DL_FENCE_PAGE_SIZE);
	}
	mine = atomic_load(&fence_page);
	if (!mine)
		goto out;
	if (!atomic_load(&lease_page))
		shim_lease_page(fd, buf);
	fence_set(fd, (unsigned)rep.start + 1);
out:
	if (rfd >= 0)
		real_close(rfd);
	free(buf);
	errno = saved;
}

/* ---- the lock calls ------------------------------------------------------ */

static bool is_lock_cmd(int cmd)
{
	return cmd == F_SETLK || cmd == F_SETLKW || cmd == F_GETLK ||
	       cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW || cmd == F_OFD_GETLK;
}

/* make @fl's start absolute (SEEK_SET), as the kernel does */
static int abs_start(int fd, const struct flock *fl, const struct stat *st,
		     int64_t *start)
{
	int64_t base;

	switch (fl->l_whence) {
	case SEEK_SET:
		base = 0;
		break;
	case SEEK_CUR:
		base = lseek(fd, 0, SEEK_CUR);
		if (base < 0)
			return -errno;
		break;
	case SEEK_END:
		base = st->st_size;
		break;
	default:
		return -EINVAL;
	}
	if (__builtin_add_overflow(base, (int64_t)fl->l_start, start))
		return -EOVERFLOW;
	return 0;
}

static int shim_fcntl_lock(int fd, int cmd, struct flock *fl)
{
	bool ofd = cmd == F_OFD_SETLK || cmd == F_OFD_SETLKW ||
		   cmd == F_OFD_GETLK;
	bool getlk = cmd == F_GETLK || cmd == F_OFD_GETLK;
	bool wait = cmd == F_SETLKW || cmd == F_OFD_SETLKW;
	struct dl_proto_msg req = { 0 }, rep;
	bool unreachable;
	struct stat st;
	int64_t start = 0;
	int path, ret, saved = errno;

	shim_init();
	path = shim_cover(fd, &st);
	if (path < 0)
		return real_fcntl(fd, cmd, fl);
	if (fl->l_type != F_RDLCK && fl->l_type != F_WRLCK &&
	    fl->l_type != F_UNLCK) {
		errno = EINVAL;
		return -1;
	}
	if (ofd && fl->l_pid != 0) {
		errno = EINVAL;
		return -1;
	}
	ret = abs_start(fd, fl, &st, &start);
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	req.kind = ofd ? DLK_OFD : DLK_POSIX;
	req.ltype = fl->l_type == F_RDLCK   ? DLP_RDLCK
		    : fl->l_type == F_WRLCK ? DLP_WRLCK
					    : DLP_UNLCK;
	req.l_start = start;
	req.l_len = fl->l_len;
	req_fd(&req);

	if (getlk) {
		struct flock k = *fl;

		if (fl->l_type == F_UNLCK) {
			errno = EINVAL;
			return -1;
		}
		/* a lock of this host, shimmed or not, is a kernel lock */
		if (real_fcntl(fd, cmd, &k) == -1)
			return -1;
		if (k.l_type != F_UNLCK) {
			*fl = k;
			errno = saved;
			return 0;
		}
		req.hdr.type = DLP_GETLK;
		ret = shim_ask(&req, fd, &rep, "F_GETLK", &unreachable);
		if (unreachable && cfg.fallback_local) {
			*fl = k;
			errno = saved;
			return 0;
		}
		if (ret < 0) {
			errno = -ret;
			return -1;
		}
		if (!rep.found) {
			fl->l_type = F_UNLCK;
		} else {
			fl->l_type = rep.ltype == DLP_WRLCK ? F_WRLCK : F_RDLCK;
			fl->l_whence = SEEK_SET;
			fl->l_start = (off_t)rep.start;
			fl->l_len = rep.end == UINT64_MAX
					    ? 0
					    : (off_t)(rep.end - rep.start + 1);
			fl->l_pid = ofd ? -1 : (pid_t)rep.pid;
		}
		errno = saved;
		return 0;
	}

	if (fl->l_type == F_UNLCK) {
		if (cfg.kernel_lock && real_fcntl(fd, cmd, fl) == -1)
			return -1;
		req.hdr.type = DLP_UNLOCK;
		ret = shim_ask(&req, fd, &rep, "unlock", &unreachable);
		/* a daemon that is gone holds nothing of ours any more */
		if (ret < 0 && !unreachable) {
			errno = -ret;
			return -1;
		}
		errno = saved;
		return 0;
	}

	if (cfg.kernel_lock && !wait) {
		/* a conflicting lock of this host answers at once */
		struct flock k = *fl;
		int gcmd = ofd ? F_OFD_GETLK : F_GETLK;

		if (real_fcntl(fd, gcmd, &k) == 0 && k.l_type != F_UNLCK) {
			errno = EAGAIN;
			return -1;
		}
	}
	req.hdr.type = DLP_LOCK;
	if (wait)
		req.flags |= DLP_F_WAIT;
	ret = shim_ask(&req, fd, &rep, "fcntl lock", &unreachable);
	if (unreachable && cfg.fallback_local)
		return real_fcntl(fd, cmd, fl);
	if (ret < 0) {
		errno = -ret;
		return -1;
	}
	files_add(st.st_dev, st.st_ino);
	shim_fence(fd, &st);
	if (cfg.kernel_lock && real_fcntl(fd, cmd, fl) == -1) {
		int err = errno;

		/* undo, as well as a range unlock can (see README) */
		req.hdr.type = DLP_UNLOCK;
		req.flags &= (uint8_t)~DLP_F_WAIT;
		shim_ask(&req, fd, &rep, "unlock", &unreachable);
		errno = err;
		return -1;
	}
	errno = saved;
	return 0;
}

static int shim_flock(int fd, int op)
{
	struct dl_proto_msg req = { 0 }, rep;
	bool unreachable;
	struct stat st;
	int path, ret, saved = errno;

	shim_init();
	path = shim_cover(fd, &st);
	if (path < 0)
		return real_flock(fd, op);
	switch (op & ~LOCK_NB) {
	case LOCK_SH:
		req.ltype = DLP_RDLCK;
		break;
	case LOCK_EX:
		req.ltype = DLP_WRLCK;
		break;
	case LOCK_UN:
		req.ltype = DLP_UNLCK;
		break;
	default:
		errno = EINVAL;
		return -1;
	}
	req.kind = DLK_FLOCK;
	req_fd(&req);
	if (req.ltype == DLP_UNLCK) {
		if (cfg.kernel_lock && real_flock(fd, op) == -1)
			return -1;
		req.hdr.type = DLP_UNLOCK;
		ret = shim_ask(&req, fd, &rep, "unlock", &unreachable);
		if (ret < 0 && !unreachable) {
			errno = -ret;
			return -1;
		}
		errno = saved;
		return 0;
	}
	req.hdr.type = DLP_LOCK;
	if (!(op & LOCK_NB))
		req.flags |= DLP_F_WAIT;
	ret = shim_ask(&req, fd, &rep, "flock", &unreachable);
	if (unreachable && cfg.fallback_local)
		return real_flock(fd, op);
	if (ret < 0) {
		errno = ret == -EAGAIN ? EWOULDBLOCK : -ret;
		return -1;
	}
	files_add(st.st_dev, st.st_ino);
	shim_fence(fd, &st);
	if (cfg.kernel_lock && real_flock(fd, op) == -1) {
		int err = errno;

		/* as a failed flock conversion on Linux: no lock left */
		req.hdr.type = DLP_UNLOCK;
		req.flags = 0;
		req_fd(&req);
		shim_ask(&req, fd, &rep, "unlock", &unreachable);
		errno = err;
		return -1;
	}
	errno = saved;
	return 0;
}

/* a descriptor of (dev, ino) was closed: the daemon drops what goes */
static void shim_closed(dev_t dev, ino_t ino)
{
	struct dl_proto_msg req = { .hdr = { .type = DLP_CLOSED } }, rep;
	bool unreachable;
	int saved = errno;

	req.dev = dev;
	req.ino = ino;
	shim_ask(&req, -1, &rep, "close", &unreachable);
	errno = saved;
}

/* is @fd a descriptor whose close the daemon must hear of? */
static bool shim_watched(int fd, struct stat *st)
{
	if (!atomic_load(&files_count) || fd < 0)
		return false;
	return fstat(fd, st) == 0 && files_has(st->st_dev, st->st_ino);
}

/* ---- exported symbols ----------------------------------------------------- */

SHIM_EXPORT int flock(int fd, int op)
{
	return shim_flock(fd, op);
}

/* not a lock command: libc's; a duplicate shares the fence */
static int shim_fcntl_other(int fd, int cmd, void *arg)
{
	int ret = real_fcntl(fd, cmd, arg);

	if (ret >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
		fence_dup(fd, ret);
	return ret;
}

SHIM_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	shim_init();
	if (is_lock_cmd(cmd) && arg)
		return shim_fcntl_lock(fd, cmd, arg);
	return shim_fcntl_other(fd, cmd, arg);
}

SHIM_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	shim_init();
	if (is_lock_cmd(cmd) && arg)
		return shim_fcntl_lock(fd, cmd, arg);
	return shim_fcntl_other(fd, cmd, arg);
}

/* lockf(3) is fcntl on [current offset, +len), as glibc does it */
static int shim_lockf(int fd, int cmd, off_t len)
{
	struct flock fl = { .l_whence = SEEK_CUR, .l_start = 0, .l_len = len };

	switch (cmd) {
	case F_TEST:
		fl.l_type = F_WRLCK;
		if (shim_fcntl_lock(fd, F_GETLK, &fl) == -1)
			return -1;
		if (fl.l_type == F_UNLCK || fl.l_pid == getpid())
			return 0;
		errno = EACCES;
		return -1;
	case F_ULOCK:
		fl.l_type = F_UNLCK;
		return shim_fcntl_lock(fd, F_SETLK, &fl);
	case F_LOCK:
		fl.l_type = F_WRLCK;
		return shim_fcntl_lock(fd, F_SETLKW, &fl);
	case F_TLOCK:
		fl.l_type = F_WRLCK;
		return shim_fcntl_lock(fd, F_SETLK, &fl);
	default:
		errno = EINVAL;
		return -1;
	}
}

SHIM_EXPORT int lockf(int fd, int cmd, off_t len)
{
	return shim_lockf(fd, cmd, len);
}

SHIM_EXPORT int lockf64(int fd, int cmd, off_t len)
{
	return shim_lockf(fd, cmd, len);
}

SHIM_EXPORT int close(int fd)
{
	struct stat st;
	int ret;

	shim_init();
	fence_forget(fd);
	if (!shim_watched(fd, &st))
		return real_close(fd);
	ret = real_close(fd);
	shim_closed(st.st_dev, st.st_ino);
	return ret;
}

SHIM_EXPORT int fclose(FILE *f)
{
	struct stat st;
	bool watched;
	int ret;

	shim_init();
	if (f)
		fence_forget(fileno(f));
	watched = f && shim_watched(fileno(f), &st);
	ret = real_fclose(f);
	if (watched)
		shim_closed(st.st_dev, st.st_ino);
	return ret;
}

SHIM_EXPORT int dup(int oldfd)
{
	int ret;

	shim_init();
	ret = real_dup(oldfd);
	fence_dup(oldfd, ret);
	return ret;
}

SHIM_EXPORT int dup2(int oldfd, int newfd)
{
	struct stat st;
	bool watched;
	int ret;

	shim_init();
	watched = oldfd != newfd && shim_watched(newfd, &st);
	ret = real_dup2(oldfd, newfd);
	if (ret >= 0 && oldfd != newfd)
		fence_dup(oldfd, newfd);
	if (watched && ret >= 0)
		shim_closed(st.st_dev, st.st_ino);
	return ret;
}

SHIM_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	struct stat st;
	bool watched;
	int ret;

	shim_init();
	watched = oldfd != newfd && shim_watched(newfd, &st);
	ret = real_dup3(oldfd, newfd, flags);
	if (ret >= 0)
		fence_dup(oldfd, newfd);
	if (watched && ret >= 0)
		shim_closed(st.st_dev, st.st_ino);
	return ret;
}

/*
 * Writes: EIO through a descriptor whose lock was lost (see the top);
 * everything else straight to libc.  shim_init() first: another
 * library's constructor may write before ours ran.
 */
#define SHIM_FENCED(fd, fail)                              \
	do {                                               \
		shim_init();                               \
		if (__builtin_expect(fence_lost(fd), 0)) { \
			errno = EIO;                       \
			return fail;                       \
		}                                          \
	} while (0)

SHIM_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	SHIM_FENCED(fd, -1);
	return real_write(fd, buf, n);
}

SHIM_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	SHIM_FENCED(fd, -1);
	return real_pwrite(fd, buf, n, off);
}

SHIM_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	SHIM_FENCED(fd, -1);
	return real_pwrite64(fd, buf, n, off);
}

SHIM_EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
	SHIM_FENCED(fd, -1);
	return real_writev(fd, iov, cnt);
}

SHIM_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	SHIM_FENCED(fd, -1);
	return real_pwritev(fd, iov, cnt, off);
}

SHIM_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int cnt,
			      off64_t off)
{
	SHIM_FENCED(fd, -1);
	return real_pwritev64(fd, iov, cnt, off);
}

SHIM_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int cnt,
			     off_t off, int flags)
{
	SHIM_FENCED(fd, -1);
	if (!real_pwritev2) {
		errno = ENOSYS;
		return -1;
	}
	return real_pwritev2(fd, iov, cnt, off, flags);
}

SHIM_EXPORT ssize_t pwritev64v2(int fd, const struct iovec *iov, int cnt,
				off64_t off, int flags)
{
	SHIM_FENCED(fd, -1);
	if (!real_pwritev64v2) {
		errno = ENOSYS;
		return -1;
	}
	return real_pwritev64v2(fd, iov, cnt, off, flags);
}

SHIM_EXPORT int ftruncate(int fd, off_t len)
{
	SHIM_FENCED(fd, -1);
	return real_ftruncate(fd, len);
}

SHIM_EXPORT int ftruncate64(int fd, off64_t len)
{
	SHIM_FENCED(fd, -1);
	return real_ftruncate64(fd, len);
}

SHIM_EXPORT int fallocate(int fd, int mode, off_t off, off_t len)
{
	SHIM_FENCED(fd, -1);
	return real_fallocate(fd, mode, off, len);
}

SHIM_EXPORT int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	SHIM_FENCED(fd, -1);
	return real_fallocate64(fd, mode, off, len);
}

/* posix_fallocate returns the error instead of setting errno */
SHIM_EXPORT int posix_fallocate(int fd, off_t off, off_t len)
{
	shim_init();
	if (fence_lost(fd))
		return EIO;
	return real_posix_fallocate(fd, off, len);
}

SHIM_EXPORT int posix_fallocate64(int fd, off64_t off, off64_t len)
{
	shim_init();
	if (fence_lost(fd))
		return EIO;
	return real_posix_fallocate64(fd, off, len);
}

/*
 * At start (also after exec): descriptors inherited open on covered files
 * may carry locks (a flock description, this pid's POSIX locks across
 * exec); their closes must reach the daemon too.
 */
__attribute__((constructor)) static void shim_start(void)
{
	struct dirent *e;
	DIR *d;

	shim_init();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
	if (!cfg.npaths)
		return;
	d = opendir("/proc/self/fd");
	if (!d)
		return;
	while ((e = readdir(d))) {
		struct stat st;
		int fd = atoi(e->d_name);

		if (e->d_name[0] < '0' || e->d_name[0] > '9' || fd == dirfd(d))
			continue;
		if (shim_cover(fd, &st) >= 0)
			files_add(st.st_dev, st.st_ino);
	}
	closedir(d);
}

/*
 * lockbench.c - what a lock costs in a given directory.
 *
 * For every DIR on the command line, on a scratch file created in it, it
 * times:
 *  (a) uncontended fcntl(F_SETLK, F_WRLCK) + fcntl(F_SETLK, F_UNLCK) on the
 *      whole file: cycles/s and the latency of one cycle;
 *  (b) the same with flock(LOCK_EX) + flock(LOCK_UN);
 *  (c) a ping-pong of exclusive POSIX locks between two processes, taken with
 *      blocking F_SETLKW, where every acquisition is a true handoff from the
 *      other process (protocol at pp_run());
 *  (d) the floor of a FUSE round trip: faccessat() of a name never used
 *      before, which fails with ENOENT.  No dentry, positive or negative,
 *      can exist for a fresh name, so the kernel has to send one FUSE_LOOKUP
 *      whatever entry or negative timeouts the daemon chose; a stat() of an
 *      existing file would be answered from the attribute cache instead.
 * and prints one row per number with the directories side by side.  On a
 * FUSE mount a lock + unlock is two requests (two FUSE_SETLK), hence the
 * extra row lock+unlock / (2 x round trip): near 1 means the lock manager
 * adds little to the kernel <-> daemon trip itself; far below 1 means the
 * kernel decided the locks without asking the daemon.
 *
 * A measuring program, not a test: it never judges a number.  It fails
 * (exit 1, after printing what it has) only when a call it times fails.
 * Every measurement stops after --iters operations or --seconds, whichever
 * comes first; an alarm kills the program if a call hangs far beyond that.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/magic.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

#define DEFAULT_ITERS	20000
#define DEFAULT_SECONDS 3.0
/* untimed operations first, so one-off costs (first lookup, first lock
 * state allocated by a daemon) do not land in the percentiles */
#define WARMUP 50
/* the alarm fires this long after a measurement should have ended */
#define HANG_MARGIN_S 30

struct config {
	size_t iters;
	double seconds;
	uint64_t limit_ns;
};

static struct config cfg = {
	.iters = DEFAULT_ITERS,
	.seconds = DEFAULT_SECONDS,
};

/* --pair: process B of the ping-pong opens the scratch file through this
 * directory (a second mount of the same backing directory: another host) */
static int pair_dirfd = -1;
/* --procs N: N-process throughput instead of the table */
static int tp_procs;

/* One directory under test and the scratch file made in it. */
struct target {
	const char *dir;
	int col; /* 1-based column in the table */
	int dirfd;
	int fd;	       /* the scratch file, O_RDWR */
	char name[64]; /* its name inside dir */
	const char *fstype;
	bool fuse;
	unsigned long nx_seq; /* counter making (d)'s names fresh */
	char nx_name[64];     /* (d)'s next name, built outside the timing */
};

/* One measurement on one target; err != 0 leaves the numbers unset. */
struct result {
	int err;	/* 0 or a negative errno */
	size_t n;	/* timed operations */
	double per_s;	/* operations (cycles) per second */
	double mean_us; /* wall time / n */
	double p50_us;
	double p99_us;
};

/*
 * An uncontended operation, timed in a loop by bench_loop(): prep (if set)
 * runs untimed before every run.  Both return 0 or a negative errno.
 */
struct bench_op {
	int (*prep)(struct target *t);
	int (*run)(struct target *t);
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

/* Nearest-rank percentile of the sorted lat[0..n), in microseconds. */
static double percentile_us(const uint64_t *lat, size_t n, unsigned pct)
{
	size_t rank = (n * pct + 99) / 100;

	if (rank == 0)
		rank = 1;
	return (double)lat[rank - 1] / 1e3;
}

/* Fill r from n latencies (sorted in place) spanning elapsed_ns of wall time,
 * counting ops_per_sample operations per latency sample. */
static void result_fill(struct result *r, uint64_t *lat, size_t n,
			uint64_t elapsed_ns, double ops_per_sample)
{
	qsort(lat, n, sizeof(*lat), cmp_u64);
	r->err = 0;
	r->n = n;
	if (elapsed_ns == 0)
		elapsed_ns = 1;
	r->per_s = (double)n * ops_per_sample * 1e9 / (double)elapsed_ns;
	r->mean_us = (double)elapsed_ns / 1e3 / (double)n;
	r->p50_us = percentile_us(lat, n, 50);
	r->p99_us = percentile_us(lat, n, 99);
}

static int set_lock(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = start,
		.l_len = len,
	};

	while (fcntl(fd, cmd, &fl) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int fcntl_cycle(struct target *t)
{
	int err = set_lock(t->fd, F_SETLK, F_WRLCK, 0, 0);

	if (err)
		return err;
	return set_lock(t->fd, F_SETLK, F_UNLCK, 0, 0);
}

static int flock_cycle(struct target *t)
{
	if (flock(t->fd, LOCK_EX) < 0)
		return -errno;
	if (flock(t->fd, LOCK_UN) < 0)
		return -errno;
	return 0;
}

static int lookup_prep(struct target *t)
{
	int len = snprintf(t->nx_name, sizeof(t->nx_name),
			   "lockbench.%ld.%d.nx.%lu", (long)getpid(), t->col,
			   t->nx_seq++);

	return len > 0 && (size_t)len < sizeof(t->nx_name) ? 0 : -ENAMETOOLONG;
}

static int lookup_fresh(struct target *t)
{
	if (faccessat(t->dirfd, t->nx_name, F_OK, 0) == 0)
		return -EEXIST; /* somebody made our "fresh" name */
	return errno == ENOENT ? 0 : -errno;
}

static const struct bench_op op_fcntl = { NULL, fcntl_cycle };
static const struct bench_op op_flock = { NULL, flock_cycle };
static const struct bench_op op_lookup = { lookup_prep, lookup_fresh };

/* Time op on t: WARMUP untimed runs, then up to cfg.iters timed ones or
 * cfg.seconds.  Returns 0 or the first failure's negative errno. */
static int bench_loop(struct target *t, const struct bench_op *op,
		      struct result *r)
{
	uint64_t *lat, start, t0, t1 = 0;
	size_t i, n = 0;
	int err = 0;

	lat = malloc(cfg.iters * sizeof(*lat));
	if (!lat)
		return -ENOMEM;
	for (i = 0; i < WARMUP; i++) {
		err = op->prep ? op->prep(t) : 0;
		if (!err)
			err = op->run(t);
		if (err)
			goto out_free;
	}
	start = now_ns();
	while (n < cfg.iters) {
		if (op->prep) {
			err = op->prep(t);
			if (err)
				goto out_free;
		}
		t0 = now_ns();
		err = op->run(t);
		t1 = now_ns();
		if (err)
			goto out_free;
		lat[n++] = t1 - t0;
		if (t1 - start >= cfg.limit_ns)
			break;
	}
	result_fill(r, lat, n, t1 - start, 1.0);
out_free:
	free(lat);
	return err;
}

/*
 * (c) ping-pong.  Three one-byte POSIX locks L0, L1, L2 on the scratch file.
 * Process A (the parent) starts holding L0 and L1, process B (the child)
 * holding L2.  Each process holds two cyclically consecutive locks {i, i+1};
 * a step releases i and then blocks in F_SETLKW on i+2, which the other
 * process holds:
 *
 *	A {0,1}: release 0, wait 2   B {2}: wait 0 -> B {2,0}
 *	                             B: release 2, wait 1 -> A {1,2}
 *	A: release 1, wait 0 -> B {0,1} ...
 *
 * The lock a process waits for is released by the other only after that
 * other has itself acquired the lock just given up, so no process can take
 * back its own lock: every acquisition is a handoff from the other process
 * and the two strictly alternate.  Numbering the handoffs 0, 1, 2, ... B
 * makes the even ones and A the odd ones.
 *
 * The releaser stamps CLOCK_MONOTONIC into rel_ns[i] just before its
 * F_UNLCK; the acquirer subtracts that from the time its F_SETLKW returned.
 * So a handoff latency covers the unlock request, the wakeup of the waiter
 * and the reply to its lock request.  The pipe only tells A that B holds L2;
 * after that the processes synchronise through the locks alone.
 *
 * A decides when to stop (iteration count or time): it sets stop and then
 * releases everything; B's acquisition that follows sees stop and B ends.
 * A failing side sets abort and lets its locks go (unlock or exit), so the
 * other side wakes up, sees abort and ends too.
 */
struct pp_shm {
	uint64_t rel_ns[3]; /* when lock byte i was last released */
	uint64_t t_start;   /* A, just before the first release */
	uint64_t t_end;	    /* B, its last acquisition */
	size_t n;	    /* handoffs made, set by B at the end */
	int stop;	    /* A is done, set before its last release */
	int abort;	    /* a side failed */
	int child_err;	    /* B's negative errno */
	uint64_t lat[];	    /* lat[h]: latency of handoff h */
};

#define PP_LOCKS 3

/* Release lock byte old and wait for want; store the handoff's latency. */
static int pp_step(int fd, struct pp_shm *shm, int old, int want, size_t h)
{
	uint64_t t;
	int err;

	__atomic_store_n(&shm->rel_ns[old], now_ns(), __ATOMIC_RELEASE);
	err = set_lock(fd, F_SETLK, F_UNLCK, old, 1);
	if (err)
		return err;
	err = set_lock(fd, F_SETLKW, F_WRLCK, want, 1);
	if (err)
		return err;
	t = now_ns();
	shm->lat[h] = t - __atomic_load_n(&shm->rel_ns[want], __ATOMIC_ACQUIRE);
	return 0;
}

/* Process B, child of A (parent_pid).  Never returns. */
static void pp_child(struct target *t, struct pp_shm *shm, int ready_fd,
		     pid_t parent_pid)
{
	int fd, old = 2, want = 0, err;
	size_t h = 0;
	uint64_t t_acq;

	/* a dead A frees every lock: B alone would spin until its alarm */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent_pid)
		_exit(1);
	alarm((unsigned)cfg.seconds + HANG_MARGIN_S);
	fd = openat(pair_dirfd >= 0 ? pair_dirfd : t->dirfd, t->name,
		    O_RDWR | O_CLOEXEC);
	err = fd < 0 ? -errno : set_lock(fd, F_SETLK, F_WRLCK, 2, 1);
	if (err)
		goto out_fail;
	if (write(ready_fd, "r", 1) != 1) {
		err = -errno;
		goto out_fail;
	}
	close(ready_fd);

	/* handoff 0: the first lock A gives up */
	err = set_lock(fd, F_SETLKW, F_WRLCK, want, 1);
	if (err)
		goto out_fail;
	t_acq = now_ns();
	shm->lat[0] =
		t_acq - __atomic_load_n(&shm->rel_ns[0], __ATOMIC_ACQUIRE);
	for (;;) {
		if (__atomic_load_n(&shm->abort, __ATOMIC_ACQUIRE))
			_exit(1);
		if (__atomic_load_n(&shm->stop, __ATOMIC_ACQUIRE))
			break;
		want = (want + 1) % PP_LOCKS;
		h += 2;
		err = pp_step(fd, shm, old, want, h);
		if (err)
			goto out_fail;
		t_acq = now_ns();
		old = (old + 1) % PP_LOCKS;
	}
	shm->t_end = t_acq;
	shm->n = h + 1;
	_exit(set_lock(fd, F_SETLK, F_UNLCK, 0, 0) ? 1 : 0);

out_fail:
	shm->child_err = err;
	__atomic_store_n(&shm->abort, 1, __ATOMIC_RELEASE);
	_exit(1);
}

/* Process A's side; the caller made shm and holds L0 and L1 on t->fd. */
static int pp_parent(struct target *t, struct pp_shm *shm, size_t cap,
		     pid_t child, int ready_fd)
{
	int old = 0, want = 2, err = 0, uerr, status;
	long h = -1; /* A's last handoff; B ends on h + 1 */
	char c;
	pid_t w;

	if (read(ready_fd, &c, 1) != 1) {
		err = shm->child_err ? shm->child_err : -ECHILD;
		goto out_wait;
	}
	shm->t_start = now_ns();
	while ((size_t)(h + 3) < cap &&
	       now_ns() - shm->t_start < cfg.limit_ns) {
		err = pp_step(t->fd, shm, old, want, (size_t)(h + 2));
		if (err)
			break;
		h += 2;
		if (__atomic_load_n(&shm->abort, __ATOMIC_ACQUIRE)) {
			err = shm->child_err ? shm->child_err : -ECHILD;
			break;
		}
		old = (old + 1) % PP_LOCKS;
		want = (want + 1) % PP_LOCKS;
	}
	if (err)
		__atomic_store_n(&shm->abort, 1, __ATOMIC_RELEASE);
	else
		__atomic_store_n(&shm->stop, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&shm->rel_ns[old], now_ns(), __ATOMIC_RELEASE);
	uerr = set_lock(t->fd, F_SETLK, F_UNLCK, 0, 0);
	if (uerr && !err)
		err = uerr;
out_wait:
	do
		w = waitpid(child, &status, 0);
	while (w < 0 && errno == EINTR);
	if (!err && (w < 0 || !WIFEXITED(status) || WEXITSTATUS(status)))
		err = shm->child_err ? shm->child_err : -ECHILD;
	return err;
}

static int pp_run(struct target *t, struct result *r)
{
	size_t cap = cfg.iters < 3 ? 3 : cfg.iters; /* B, A, B at least */
	pid_t parent_pid = getpid();
	size_t len = sizeof(struct pp_shm) + cap * sizeof(uint64_t);
	struct pp_shm *shm;
	int pipefd[2], err;
	pid_t child;

	shm = mmap(NULL, len, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shm == MAP_FAILED)
		return -errno;
	if (pipe(pipefd) < 0) {
		err = -errno;
		goto out_unmap;
	}
	err = set_lock(t->fd, F_SETLK, F_WRLCK, 0, 2); /* L0 and L1 */
	if (err)
		goto out_close;
	fflush(NULL);
	child = fork();
	if (child < 0) {
		err = -errno;
		goto out_unlock;
	}
	if (child == 0) {
		close(pipefd[0]);
		pp_child(t, shm, pipefd[1], parent_pid);
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	err = pp_parent(t, shm, cap, child, pipefd[0]);
	if (!err) {
		/* n handoffs: two per ping-pong cycle */
		result_fill(r, shm->lat, shm->n, shm->t_end - shm->t_start,
			    0.5);
	}
out_unlock:
	set_lock(t->fd, F_SETLK, F_UNLCK, 0, 0);
out_close:
	close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
out_unmap:
	munmap(shm, len);
	return err;
}

static const char *fs_name(long type)
{
	switch (type) {
	case FUSE_SUPER_MAGIC:
		return "fuse";
	case TMPFS_MAGIC:
		return "tmpfs";
	case EXT4_SUPER_MAGIC: /* == EXT2/EXT3 */
		return "ext4";
	case XFS_SUPER_MAGIC:
		return "xfs";
	case BTRFS_SUPER_MAGIC:
		return "btrfs";
	case OVERLAYFS_SUPER_MAGIC:
		return "overlay";
	case NFS_SUPER_MAGIC:
		return "nfs";
	default:
		return "other";
	}
}

/* Open t->dir and create the scratch file.  Returns 0 or a negative errno
 * (with a message printed). */
static int target_open(struct target *t)
{
	struct statfs sfs;
	int err;

	t->dirfd = open(t->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (t->dirfd < 0) {
		err = -errno;
		fprintf(stderr, "lockbench: open %s: %s\n", t->dir,
			strerror(-err));
		return err;
	}
	if (fstatfs(t->dirfd, &sfs) < 0) {
		err = -errno;
		fprintf(stderr, "lockbench: statfs %s: %s\n", t->dir,
			strerror(-err));
		goto out_close_dir;
	}
	t->fstype = fs_name((long)sfs.f_type);
	t->fuse = sfs.f_type == FUSE_SUPER_MAGIC;
	/* two DIRs may be one directory seen twice (a mount and its backing) */
	snprintf(t->name, sizeof(t->name), "lockbench.%ld.%d.lock",
		 (long)getpid(), t->col);
	t->fd = openat(t->dirfd, t->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC,
		       0644);
	if (t->fd < 0) {
		err = -errno;
		fprintf(stderr, "lockbench: create %s/%s: %s\n", t->dir,
			t->name, strerror(-err));
		goto out_close_dir;
	}
	return 0;

out_close_dir:
	close(t->dirfd);
	t->dirfd = -1;
	return err;
}

static void target_close(struct target *t)
{
	if (t->fd >= 0) {
		close(t->fd);
		if (unlinkat(t->dirfd, t->name, 0) < 0)
			fprintf(stderr, "lockbench: unlink %s/%s: %s\n", t->dir,
				t->name, strerror(errno));
	}
	if (t->dirfd >= 0)
		close(t->dirfd);
}

enum { M_FCNTL, M_FLOCK, M_PINGPONG, M_LOOKUP, M_COUNT };

static const char *const m_title[M_COUNT] = {
	[M_FCNTL] = "(a) fcntl F_SETLK wrlock+unlock",
	[M_FLOCK] = "(b) flock LOCK_EX+LOCK_UN",
	[M_PINGPONG] = "(c) fcntl F_SETLKW ping-pong",
	[M_LOOKUP] = "(d) round trip: lookup fresh name",
};

/* Run measurement m on t into r; the alarm bounds a hung call. */
static void measure(struct target *t, int m, struct result *r)
{
	alarm((unsigned)cfg.seconds + HANG_MARGIN_S);
	fprintf(stderr, "lockbench: [%d] %s: %s\n", t->col, t->dir, m_title[m]);
	switch (m) {
	case M_FCNTL:
		r->err = bench_loop(t, &op_fcntl, r);
		break;
	case M_FLOCK:
		r->err = bench_loop(t, &op_flock, r);
		break;
	case M_PINGPONG:
		r->err = pp_run(t, r);
		break;
	default:
		r->err = bench_loop(t, &op_lookup, r);
		break;
	}
	alarm(0);
	if (r->err)
		fprintf(stderr, "lockbench: [%d] %s: %s failed: %s\n", t->col,
			t->dir, m_title[m], strerror(-r->err));
}

#define LABEL_W 30
#define CELL_W	14

static double get_per_s(const struct result *r)
{
	return r->per_s;
}

static double get_p50(const struct result *r)
{
	return r->p50_us;
}

static double get_p99(const struct result *r)
{
	return r->p99_us;
}

static double get_n(const struct result *r)
{
	return (double)r->n;
}

/* One line: the label, then get(result of measurement m) per directory
 * with that many decimals. */
static void print_row(const char *label, const struct result *res, int ndirs,
		      int m, double (*get)(const struct result *), int decimals)
{
	char cell[32];
	int i;

	printf("  %-*s", LABEL_W - 2, label);
	for (i = 0; i < ndirs; i++) {
		const struct result *r = &res[i * M_COUNT + m];

		if (r->err)
			snprintf(cell, sizeof(cell), "error");
		else
			snprintf(cell, sizeof(cell), "%.*f", decimals, get(r));
		printf("%*s", CELL_W, cell);
	}
	putchar('\n');
}

/* The lock+unlock / (2 x round trip) lines, FUSE columns only. */
static void print_ratio(const char *label, const struct target *tg,
			const struct result *res, int ndirs, int m)
{
	const struct result *l, *rt;
	char cell[32];
	int i;

	printf("  %-*s", LABEL_W - 2, label);
	for (i = 0; i < ndirs; i++) {
		l = &res[i * M_COUNT + m];
		rt = &res[i * M_COUNT + M_LOOKUP];
		if (!tg[i].fuse || l->err || rt->err)
			snprintf(cell, sizeof(cell), "-");
		else
			snprintf(cell, sizeof(cell), "%.2f / %.2f",
				 l->p50_us / (2 * rt->p50_us),
				 l->mean_us / (2 * rt->mean_us));
		printf("%*s", CELL_W, cell);
	}
	putchar('\n');
}

static void print_table(const struct target *tg, const struct result *res,
			int ndirs)
{
	static const char *const lat_unit[M_COUNT] = {
		[M_FCNTL] = "cycle",
		[M_FLOCK] = "cycle",
		[M_PINGPONG] = "handoff",
		[M_LOOKUP] = "op",
	};
	const struct result *l, *rt;
	char label[32], head[32];
	int i, m;

	printf("\nlockbench: up to %zu operations or %g s per measurement\n",
	       cfg.iters, cfg.seconds);
	for (i = 0; i < ndirs; i++)
		printf("  [%d] %-6s %s%s\n", i + 1, tg[i].fstype, tg[i].dir,
		       tg[i].fuse ? "  (FUSE mount)" : "");
	printf("\n%-*s", LABEL_W, "");
	for (i = 0; i < ndirs; i++) {
		snprintf(head, sizeof(head), "[%d] %s", i + 1, tg[i].fstype);
		printf("%*s", CELL_W, head);
	}
	putchar('\n');
	for (m = 0; m < M_COUNT; m++) {
		printf("%s\n", m_title[m]);
		print_row(m == M_LOOKUP ? "ops/s" : "cycles/s", res, ndirs, m,
			  get_per_s, 0);
		snprintf(label, sizeof(label), "%s p50 us", lat_unit[m]);
		print_row(label, res, ndirs, m, get_p50, 2);
		snprintf(label, sizeof(label), "%s p99 us", lat_unit[m]);
		print_row(label, res, ndirs, m, get_p99, 2);
		print_row("samples", res, ndirs, m, get_n, 0);
	}
	printf("lock+unlock / (2 x round trip), p50 / mean\n");
	print_ratio("(a) fcntl / (2 x (d))", tg, res, ndirs, M_FCNTL);
	print_ratio("(b) flock / (2 x (d))", tg, res, ndirs, M_FLOCK);

	/* A lock+unlock cheaper than one round trip never reached the daemon. */
	for (i = 0; i < ndirs; i++) {
		rt = &res[i * M_COUNT + M_LOOKUP];
		if (!tg[i].fuse || rt->err)
			continue;
		for (m = M_FCNTL; m <= M_FLOCK; m++) {
			l = &res[i * M_COUNT + m];
			if (!l->err && l->p50_us < rt->p50_us)
				printf("note: [%d] %s lock+unlock is cheaper "
				       "than one round trip:\n"
				       "      the kernel decided these locks "
				       "without asking the daemon\n",
				       i + 1, m == M_FCNTL ? "fcntl" : "flock");
		}
	}
	printf("\n(a),(b) cycle = lock + unlock of the whole file, "
	       "uncontended.\n"
	       "(c) cycle = two handoffs A->B->A; handoff = from just before "
	       "one process's\n"
	       "    F_UNLCK to the other's F_SETLKW returning.\n"
	       "(d) faccessat(F_OK) of a never-used name -> ENOENT: one "
	       "FUSE_LOOKUP\n"
	       "    per op on a FUSE mount, whatever its entry/negative "
	       "timeouts.\n");
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: lockbench [--iters N] [--seconds S] DIR [DIR...]\n"
		"       lockbench --pair [--iters N] [--seconds S] DIR_A "
		"DIR_B\n"
		"       lockbench --procs N [--seconds S] DIR\n"
		"  --iters N     at most N timed operations per measurement "
		"(default %d)\n"
		"  --seconds S   at most S seconds per measurement (default "
		"%.0f)\n"
		"  --pair        ping-pong (c) between a process in DIR_A and "
		"one in\n"
		"                DIR_B (two mounts of one backing directory: "
		"two hosts)\n"
		"  --procs N     throughput of N processes doing fcntl "
		"lock+unlock\n"
		"                cycles, on one shared file and on one file "
		"each\n",
		DEFAULT_ITERS, DEFAULT_SECONDS);
}

/* ---- --procs: N processes, one file or N files ------------------------- */

/* child: cycles on @path until @stop; counts into *count */
static void tp_child(const char *path, volatile int *stop, uint64_t *count,
		     uint64_t *lat, size_t cap)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	uint64_t n = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	alarm((unsigned)cfg.seconds + HANG_MARGIN_S);
	if (fd < 0)
		_exit(1);
	while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
		uint64_t t0 = now_ns();

		if (set_lock(fd, F_SETLKW, F_WRLCK, 0, 0) ||
		    set_lock(fd, F_SETLK, F_UNLCK, 0, 0))
			_exit(1);
		if (n < cap)
			lat[n] = now_ns() - t0;
		n++;
	}
	*count = n;
	_exit(0);
}

/* one run: N processes on one file (shared) or N files; fills r */
static int tp_run(const char *dir, int nprocs, bool shared, struct result *r)
{
	size_t cap = 200000;
	size_t len = sizeof(int) * 16 + (size_t)nprocs * (8 + cap * 8);
	char *shm = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	volatile int *stop = (volatile int *)shm;
	uint64_t *counts = (uint64_t *)(shm + 64), *all, t0, total = 0;
	pid_t *pids;
	int err = 0;
	size_t nlat = 0;

	if (shm == MAP_FAILED)
		return -errno;
	pids = calloc((size_t)nprocs, sizeof(*pids));
	if (!pids) {
		munmap(shm, len);
		return -ENOMEM;
	}
	t0 = now_ns();
	for (int i = 0; i < nprocs; i++) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/.lockbench-tp-%d-%d", dir,
			 (int)getpid(), shared ? 0 : i);
		fflush(NULL);
		pids[i] = fork();
		if (pids[i] == 0)
			tp_child(path, stop, &counts[i],
				 counts + nprocs + (size_t)i * cap, cap);
		if (pids[i] < 0) {
			err = -errno;
			break;
		}
	}
	while (!err && now_ns() - t0 < cfg.limit_ns)
		usleep(10000);
	__atomic_store_n((int *)stop, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < nprocs; i++) {
		int st;

		if (pids[i] <= 0)
			continue;
		if (waitpid(pids[i], &st, 0) < 0 || !WIFEXITED(st) ||
		    WEXITSTATUS(st))
			err = err ? err : -EIO;
	}
	if (!err) {
		uint64_t elapsed = now_ns() - t0;

		all = calloc((size_t)nprocs * cap, sizeof(*all));
		if (!all) {
			err = -ENOMEM;
		} else {
			for (int i = 0; i < nprocs; i++) {
				uint64_t k = counts[i] < cap ? counts[i] : cap;

				memcpy(all + nlat,
				       counts + nprocs + (size_t)i * cap,
				       k * sizeof(*all));
				nlat += k;
				total += counts[i];
			}
			result_fill(r, all, nlat ? nlat : 1, elapsed, 1.0);
			r->per_s = (double)total * 1e9 / (double)elapsed;
			free(all);
		}
	}
	for (int i = 0; i < (shared ? 1 : nprocs); i++) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/.lockbench-tp-%d-%d", dir,
			 (int)getpid(), i);
		unlink(path);
	}
	free(pids);
	munmap(shm, len);
	return err;
}

static int tp_main(const char *dir)
{
	struct result r[2] = { { 0 } };
	int err = 0;

	for (int k = 0; k < 2 && !err; k++)
		err = tp_run(dir, tp_procs, k == 0, &r[k]);
	if (err) {
		fprintf(stderr, "lockbench: --procs on %s: %s\n", dir,
			strerror(-err));
		return 1;
	}
	printf("%d-process fcntl lock+unlock throughput in %s\n", tp_procs,
	       dir);
	printf("  %-28s %12.0f cycles/s  p50 %9.2f us  p99 %9.2f us\n",
	       "one shared file (contended)", r[0].per_s, r[0].p50_us,
	       r[0].p99_us);
	printf("  %-28s %12.0f cycles/s  p50 %9.2f us  p99 %9.2f us\n",
	       "one file per process", r[1].per_s, r[1].p50_us, r[1].p99_us);
	return 0;
}

/* ---- --pair: the ping-pong between two directories ---------------------- */

static int pair_main(const char *a, const char *b)
{
	struct target t = { .dir = a, .fd = -1, .col = 1 };
	struct result r = { 0 };
	int err;

	pair_dirfd = open(b, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (pair_dirfd < 0) {
		fprintf(stderr, "lockbench: %s: %s\n", b, strerror(errno));
		return 1;
	}
	if (target_open(&t))
		return 1;
	/* the other mount must see the file A made */
	err = faccessat(pair_dirfd, t.name, F_OK, 0) ? -errno : pp_run(&t, &r);
	target_close(&t);
	close(pair_dirfd);
	if (err) {
		fprintf(stderr, "lockbench: --pair: %s\n", strerror(-err));
		return 1;
	}
	printf("(c) ping-pong handoff between %s and %s\n", a, b);
	printf("  %-20s %12.0f\n  %-20s %12.2f\n  %-20s %12.2f\n  %-20s "
	       "%12zu\n",
	       "cycles/s", r.per_s, "handoff p50 us", r.p50_us,
	       "handoff p99 us", r.p99_us, "samples", r.n);
	return 0;
}

/* Returns 0, or -EINVAL with a message printed. */
static int parse_args(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "iters", required_argument, NULL, 'n' },
		{ "seconds", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ "pair", no_argument, NULL, 'P' },
		{ "procs", required_argument, NULL, 'p' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned long long v;
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "n:s:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			errno = 0;
			v = strtoull(optarg, &end, 10);
			if (errno || *end || end == optarg || v == 0 ||
			    v > 100000000ull || optarg[0] == '-') {
				fprintf(stderr,
					"lockbench: --iters: want "
					"1..100000000, got '%s'\n",
					optarg);
				return -EINVAL;
			}
			cfg.iters = (size_t)v;
			break;
		case 's':
			errno = 0;
			cfg.seconds = strtod(optarg, &end);
			if (errno || *end || end == optarg ||
			    !(cfg.seconds > 0 && cfg.seconds <= 3600)) {
				fprintf(stderr,
					"lockbench: --seconds: want (0, 3600], "
					"got '%s'\n",
					optarg);
				return -EINVAL;
			}
			break;
		case 'P':
			pair_dirfd = -2; /* opened in pair_main() */
			break;
		case 'p':
			tp_procs = atoi(optarg);
			if (tp_procs < 1 || tp_procs > 64) {
				fprintf(stderr, "lockbench: --procs: want "
						"1..64\n");
				return -EINVAL;
			}
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -EINVAL;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return -EINVAL;
	}
	cfg.limit_ns = (uint64_t)(cfg.seconds * 1e9);
	return 0;
}

int main(int argc, char **argv)
{
	struct target *tg;
	struct result *res;
	int ndirs, i, m, opened = 0, failed = 0, rc = 2;

	if (parse_args(argc, argv))
		return 2;
	if (pair_dirfd == -2) {
		if (argc - optind != 2) {
			usage(stderr);
			return 2;
		}
		pair_dirfd = -1;
		return pair_main(argv[optind], argv[optind + 1]);
	}
	if (tp_procs) {
		int ret = 0;

		for (i = optind; i < argc; i++)
			ret |= tp_main(argv[i]);
		return ret;
	}
	ndirs = argc - optind;
	tg = calloc((size_t)ndirs, sizeof(*tg));
	res = calloc((size_t)ndirs * M_COUNT, sizeof(*res));
	if (!tg || !res) {
		fprintf(stderr, "lockbench: out of memory\n");
		goto out_free;
	}
	for (opened = 0; opened < ndirs; opened++) {
		tg[opened].dir = argv[optind + opened];
		tg[opened].fd = -1;
		tg[opened].col = opened + 1;
		if (target_open(&tg[opened]))
			goto out_close;
	}
	for (i = 0; i < ndirs; i++) {
		for (m = 0; m < M_COUNT; m++) {
			measure(&tg[i], m, &res[i * M_COUNT + m]);
			failed |= res[i * M_COUNT + m].err != 0;
		}
	}
	print_table(tg, res, ndirs);
	rc = failed ? 1 : 0;
out_close:
	while (opened-- > 0)
		target_close(&tg[opened]);
out_free:
	free(res);
	free(tg);
	return rc;
}

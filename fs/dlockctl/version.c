/*
 * version.c - optimistic concurrency from the command line (issue 14):
 * `dlockctl version` shows a file's cluster-wide version, `replace`
 * renames a new file over a target only if the target's version is still
 * the one the caller read (a compare-and-swap), and `read` copies a file
 * to stdout only when no writer touched it while it was read.
 *
 * All three speak to the daemon through the xattrs of the files in its
 * mount (user.dlock.version, .lastchange, .replace and .writer; see
 * dlockfs(8)), not through the control socket: the mount is the daemon,
 * and the kernel checks the caller's access to the file as for any xattr.
 *
 * Does not: take a lock (`read` looks at the locks and the version before
 * and after it reads; the daemon takes replace's lock itself), or retry a
 * replace (a caller that lost the race must build its new file again from
 * the new content: the example loop of dlockctl(8)).
 *
 * A replace names its target to the daemon by its path relative to the
 * mount's root; the mount and its root come from /proc/self/mountinfo,
 * matched by the device of the target's directory, so a path through a
 * symlink or a bind mount names the same file the daemon sees.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/commands.h"
#include "fs/dlockctl/text.h"

#define XA_VERSION    "user.dlock.version"
#define XA_LASTCHANGE "user.dlock.lastchange"
#define XA_REPLACE    "user.dlock.replace"
#define XA_WRITER     "user.dlock.writer"

/* `read`: attempts after the first one by default, and the back-off
 * between two attempts (doubling from the first, at most the last) */
#define READ_RETRIES	    5
#define READ_BACKOFF_MS	    2
#define READ_BACKOFF_MAX_MS 200

/* ---- the mount ------------------------------------------------------ */

/* decode mountinfo's octal escapes (\040 for a space...) in place */
static void mi_unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
		    s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 +
				      (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

/* the length of mount point @mp when it is @path or one of its parents,
 * else 0 (both canonical: no trailing '/' but for "/" itself) */
static size_t mi_covers(const char *mp, const char *path)
{
	size_t n = strlen(mp);

	if (n == 1 && mp[0] == '/')
		return 1;
	if (strncmp(mp, path, n) != 0 || (path[n] != '/' && path[n] != '\0'))
		return 0;
	return n;
}

/* a dlockfs mount: fs/main.c mounts with subtype=dlockfs and
 * fsname=dlockfs:BACKING; without subtypes the type is plain fuse */
static bool mi_is_dlockfs(const char *type, const char *source)
{
	if (strcmp(type, "fuse.dlockfs") == 0)
		return true;
	return (strcmp(type, "fuse") == 0 || strcmp(type, "fuseblk") == 0) &&
	       strncmp(source, "dlockfs", 7) == 0;
}

/* @s without empty components: no leading, trailing or double '/' */
static void rel_squeeze(char *s)
{
	char *o = s;

	for (const char *p = s; *p; p++)
		if (*p != '/' || (o > s && o[-1] != '/'))
			*o++ = *p;
	if (o > s && o[-1] == '/')
		o--;
	*o = '\0';
}

/*
 * The name of @path (canonical, absolute) inside the dlockfs mount of
 * device @dev that covers it: the mount's root inside the file system
 * joined with what follows the mount point, without a leading '/' ("" for
 * the root itself), malloc'd into *rel.  Returns 0; -ENOENT when no
 * dlockfs mount of @dev covers @path; -ENOMEM, or another negative errno
 * when mountinfo cannot be read.
 */
static int mount_rel(dev_t dev, const char *path, char **rel)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL, *best_root = NULL;
	size_t cap = 0, best = 0;
	int ret = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char *fld[6], *save = NULL, *type, *source, *tok;
		unsigned int maj, min;
		size_t n, k;

		line[strcspn(line, "\n")] = '\0';
		/* ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [TAGS...] - TYPE SRC */
		for (k = 0, tok = strtok_r(line, " ", &save); tok && k < 6;
		     tok = k < 6 ? strtok_r(NULL, " ", &save) : NULL)
			fld[k++] = tok;
		if (k < 6 || sscanf(fld[2], "%u:%u", &maj, &min) != 2 ||
		    makedev(maj, min) != dev)
			continue;
		while ((tok = strtok_r(NULL, " ", &save)) && strcmp(tok, "-"))
			;
		type = tok ? strtok_r(NULL, " ", &save) : NULL;
		source = type ? strtok_r(NULL, " ", &save) : NULL;
		if (!source || !mi_is_dlockfs(type, source))
			continue;
		mi_unescape(fld[3]);
		mi_unescape(fld[4]);
		n = mi_covers(fld[4], path);
		/* the longest covering mount point; the later of two equal
		 * ones is the one on top */
		if (!n || n < best)
			continue;
		free(best_root);
		best_root = malloc(strlen(fld[3]) + strlen(path) + 2);
		if (!best_root) {
			ret = -ENOMEM;
			break;
		}
		/* ROOT, '/', what follows the mount point; squeezed below */
		sprintf(best_root, "%s/%s", fld[3], path + n);
		best = n;
		ret = 0;
	}
	if (ferror(f) && ret != -ENOMEM)
		ret = -EIO;
	free(line);
	fclose(f);
	if (ret < 0) {
		free(best_root);
		return ret;
	}
	rel_squeeze(best_root);
	*rel = best_root;
	return 0;
}

/*
 * Check that @path (canonical) of device @dev is in a dlockfs mount, for
 * @what; *rel gets its name there when @rel is not NULL.  Returns 0, or
 * an exit status after a message.
 */
static int in_mount(const char *what, dev_t dev, const char *path, char **rel)
{
	char *r = NULL;
	int ret = mount_rel(dev, path, &r);

	if (ret == -ENOENT)
		return cli_fail(EX_USAGE, "%s: not in a dlockfs mount", what);
	if (ret < 0)
		return cli_fail(EX_REFUSED,
				"cannot read /proc/self/mountinfo: %s",
				strerror(-ret));
	if (rel)
		*rel = r;
	else
		free(r);
	return 0;
}

/*
 * FILE, which must exist: its canonical path and stat into @st, and a
 * check that it is in a dlockfs mount.  Returns 0, or an exit status after
 * a message.
 */
static int existing(const char *file, struct stat *st)
{
	char *canon = realpath(file, NULL);
	int ret;

	if (!canon || stat(canon, st) < 0) {
		ret = errno;
		free(canon);
		return cli_fail(EX_USAGE, "%s: %s", file, strerror(ret));
	}
	ret = in_mount(file, st->st_dev, canon, NULL);
	free(canon);
	return ret;
}

/* ---- xattrs --------------------------------------------------------- */

/*
 * The value of xattr @name of @path (or of descriptor @fd when >= 0),
 * NUL-terminated, malloc'd into *out.  Returns 0, or a negative errno.
 */
static int xa_get(const char *path, int fd, const char *name, char **out)
{
	char small[256];
	ssize_t n0 = fd >= 0 ? fgetxattr(fd, name, small, sizeof(small) - 1)
			     : getxattr(path, name, small, sizeof(small) - 1);

	/* the values of ours are short: one call, not a size probe first
	 * (each call is a round trip to the backend) */
	if (n0 >= 0) {
		small[n0] = '\0';
		*out = strdup(small);
		return *out ? 0 : -ENOMEM;
	}
	if (errno != ERANGE)
		return -errno;
	for (;;) {
		ssize_t n = fd >= 0 ? fgetxattr(fd, name, NULL, 0)
				    : getxattr(path, name, NULL, 0);
		char *buf;

		if (n < 0)
			return -errno;
		buf = malloc((size_t)n + 1);
		if (!buf)
			return -ENOMEM;
		n = fd >= 0 ? fgetxattr(fd, name, buf, (size_t)n)
			    : getxattr(path, name, buf, (size_t)n);
		if (n >= 0) {
			buf[n] = '\0';
			*out = buf;
			return 0;
		}
		free(buf);
		/* grown since we asked for its size: again */
		if (errno != ERANGE)
			return -errno;
	}
}

/*
 * xa_get_named() - xa_get() of @path; when @path does not exist (a removed
 * name, or one never used), the daemon's answer about that name asked of
 * its directory instead: "NAME:BASENAME" (dlockfs(8)).
 */
static int xa_get_named(const char *path, const char *name, char **out)
{
	const char *slash = strrchr(path, '/'), *base;
	char *dir, *attr;
	int ret = xa_get(path, -1, name, out);

	if (ret != -ENOENT)
		return ret;
	base = slash ? slash + 1 : path;
	if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return ret;
	dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path))
		    : strdup(".");
	if (!dir || asprintf(&attr, "%s:%s", name, base) < 0) {
		free(dir);
		return -ENOMEM;
	}
	ret = xa_get(dir, -1, attr, out);
	free(attr);
	free(dir);
	return ret;
}

/*
 * A decimal number of at most @max: digits only (no sign, no blank), no
 * overflow.  Returns 0 and *v, or -EINVAL.
 */
static int parse_dec(const char *s, uint64_t max, uint64_t *v)
{
	uint64_t x = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		if (x > (max - (uint64_t)(*s - '0')) / 10)
			return -EINVAL;
		x = x * 10 + (uint64_t)(*s - '0');
	}
	*v = x;
	return 0;
}

/* the message and exit status of errno @err from the daemon about @what */
static int xa_fail(const char *what, int err)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
	case EISDIR:
	case EINVAL:
		return cli_fail(EX_USAGE, "%s: %s", what, strerror(err));
	case EINTR:
	case EDEADLK:
		return cli_fail(EX_NOLOCK, "%s: lock not obtained: %s", what,
				strerror(err));
	case ENOLCK:
		return cli_fail(EX_REFUSED,
				"%s: the backend cannot be reached"
				" (%s)",
				what, strerror(err));
	case EOPNOTSUPP:
	case ENODATA:
		return cli_fail(EX_REFUSED,
				"%s: the daemon keeps no versions"
				" (%s)",
				what, strerror(err));
	default:
		return cli_fail(EX_REFUSED, "%s: %s", what, strerror(err));
	}
}

/*
 * The version of @path (or of descriptor @fd when >= 0) into *v.  Returns
 * 0, or an exit status after a message.
 */
static int get_version(const char *path, int fd, uint64_t *v)
{
	char *text;
	int ret = xa_get(path, fd, XA_VERSION, &text);

	if (ret < 0)
		return xa_fail(path, -ret);
	ret = parse_dec(text, UINT64_MAX, v);
	free(text);
	if (ret < 0)
		return cli_fail(EX_REFUSED, "%s: the daemon gave a bad version",
				path);
	return 0;
}

/* ---- version -------------------------------------------------------- */

/* @ms (wall clock) as local time, e.g. 2024-05-01T12:03:04.123+02:00 */
static void time_local(int64_t ms, char *b, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	char zone[8] = "";
	struct tm tm;
	size_t n;

	localtime_r(&s, &tm);
	n = strftime(b, len, "%Y-%m-%dT%H:%M:%S", &tm);
	/* +0200 -> +02:00 */
	if (strftime(zone, sizeof(zone), "%z", &tm) == 5) {
		memmove(zone + 4, zone + 3, 2);
		zone[3] = ':';
		zone[6] = '\0';
	}
	snprintf(b + n, len - n, ".%03d%s", (int)(ms % 1000), zone);
}

/* {"version": N, "host": HOST or null, "changed_ms": MS} on stdout */
static int version_json(uint64_t v, const char *host, int64_t ms)
{
	json_t *j = json_object();
	int bad;

	if (!j)
		return text_json_print(NULL);
	bad = json_object_set_new(j, "version", text_json_u64(v));
	if (host)
		bad |= text_json_set_bytes(j, "host", host, strlen(host));
	else
		bad |= json_object_set_new(j, "host", json_null());
	bad |= json_object_set_new(j, "changed_ms", json_integer(ms));
	if (bad) {
		json_decref(j);
		j = NULL;
	}
	return text_json_print(j);
}

/* dlockctl version [-J] FILE */
int cmd_version(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ NULL, 0, NULL, 0 },
	};
	char *text, *host, *sp;
	uint64_t v;
	int64_t ms = 0;
	uint64_t ums;
	struct stat st;
	int opt, ret;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "J", opts, NULL)) != -1) {
		if (opt != 'J')
			return cli_usage("bad version option");
		g_json = true;
	}
	if (argc - optind != 1)
		return cli_usage("version takes one FILE");
	/* a removed name has a version too: asked of its directory */
	if (lstat(argv[optind], &st) == 0 || errno != ENOENT) {
		ret = existing(argv[optind], &st);
		if (ret)
			return ret;
	}
	ret = xa_get_named(argv[optind], XA_LASTCHANGE, &text);
	if (ret < 0)
		return xa_fail(argv[optind], -ret);
	/* VERSION HOST MS: the host id between the first and last blank */
	host = strchr(text, ' ');
	sp = strrchr(text, ' ');
	if (!host || sp == host)
		goto bad;
	*host++ = '\0';
	*sp++ = '\0';
	if (parse_dec(text, UINT64_MAX, &v) < 0 ||
	    parse_dec(sp, INT64_MAX, &ums) < 0)
		goto bad;
	ms = (int64_t)ums;
	if (strcmp(host, "-") == 0)
		host = NULL;
	if (g_json) {
		ret = version_json(v, host, ms);
		free(text);
		return ret;
	}
	printf("%" PRIu64 "\n", v);
	if (host && v) {
		char when[64];

		time_local(ms, when, sizeof(when));
		fputs("changed by ", stdout);
		text_escape(stdout, host, strlen(host), false);
		printf(" at %s\n", when);
	} else {
		puts("never changed");
	}
	free(text);
	return 0;
bad:
	free(text);
	return cli_fail(EX_REFUSED, "%s: the daemon gave a bad %s",
			argv[optind], XA_LASTCHANGE);
}

/* ---- replace -------------------------------------------------------- */

/*
 * TARGET, which may not exist: its name in the dlockfs mount into *rel
 * and the device of its directory into *dev (a symlink: of the file it
 * points to).  Returns 0, or EX_USAGE
 * after a message.
 */
static int replace_target(const char *target, dev_t *dev, char **rel)
{
	const char *slash = strrchr(target, '/'), *base;
	char *dir, *canon, *path;
	struct stat st;
	int ret;

	base = slash ? slash + 1 : target;
	if (!*base)
		return cli_fail(EX_USAGE, "%s: names a directory", target);
	if (strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return cli_fail(EX_USAGE, "%s: names a directory", target);
	if (!slash)
		dir = strdup(".");
	else if (slash == target)
		dir = strdup("/");
	else
		dir = strndup(target, (size_t)(slash - target));
	if (!dir)
		return cli_fail(EX_REFUSED, "out of memory");
	canon = realpath(dir, NULL);
	if (!canon || stat(canon, &st) < 0) {
		ret = cli_fail(EX_USAGE, "%s: %s", dir, strerror(errno));
		goto out_free;
	}
	if (!S_ISDIR(st.st_mode)) {
		ret = cli_fail(EX_USAGE, "%s: %s", dir, strerror(ENOTDIR));
		goto out_free;
	}
	*dev = st.st_dev;
	if (asprintf(&path, "%s%s%s", canon, strcmp(canon, "/") ? "/" : "",
		     base) < 0) {
		ret = cli_fail(EX_REFUSED, "out of memory");
		goto out_free;
	}
	/*
	 * A symlink is followed, to the file `version TARGET` shows (the
	 * kernel has no user.* xattrs on a symlink): replacing the link
	 * itself would compare a version no one can read.
	 */
	if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
		char *res = realpath(path, NULL);

		if (!res || stat(res, &st) < 0) {
			ret = cli_fail(EX_USAGE, "%s: %s", target,
				       strerror(errno));
			free(res);
			goto out_path;
		}
		free(path);
		path = res;
		*dev = st.st_dev;
	}
	if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
		ret = cli_fail(EX_USAGE, "%s: %s", target, strerror(EISDIR));
	else
		ret = in_mount(target, *dev, path, rel);
out_path:
	free(path);
out_free:
	free(canon);
	free(dir);
	return ret;
}

/*
 * After ESTALE: the version TARGET has now, on stdout, and why on stderr.
 * Returns EX_CHANGED, or another exit status when it cannot be read.
 */
static int replace_changed(const char *target)
{
	uint64_t v;
	char *text;
	int ret = xa_get_named(target, XA_VERSION, &text);

	if (ret < 0)
		return xa_fail(target, -ret);
	ret = parse_dec(text, UINT64_MAX, &v);
	free(text);
	if (ret < 0)
		return cli_fail(EX_REFUSED, "%s: the daemon gave a bad version",
				target);
	printf("%" PRIu64 "\n", v);
	fflush(stdout);
	return cli_fail(EX_CHANGED, "%s changed: version is now %" PRIu64,
			target, v);
}

/* dlockctl replace --if-version N NEWFILE TARGET */
int cmd_replace(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "if-version", required_argument, NULL, 'v' },
		{ NULL, 0, NULL, 0 },
	};
	const char *nv = NULL, *newfile, *target;
	char *rel = NULL, *canon = NULL, *value = NULL;
	struct stat st, tst;
	uint64_t n, v;
	dev_t tdev = 0;
	int opt, fd, ret;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt != 'v')
			return cli_usage("bad replace option");
		nv = optarg;
	}
	if (!nv)
		return cli_usage("replace needs --if-version N");
	if (argc - optind != 2)
		return cli_usage("replace takes NEWFILE and TARGET");
	newfile = argv[optind];
	target = argv[optind + 1];
	/* a bad value is one line, as every bad input here */
	if (parse_dec(nv, UINT64_MAX, &n) < 0)
		return cli_fail(EX_USAGE,
				"--if-version: '%s' is not a decimal number"
				" (0 to 18446744073709551615)",
				nv);
	ret = replace_target(target, &tdev, &rel);
	if (ret)
		return ret;
	/* NEWFILE: a regular file, checked before open() (a FIFO blocks) */
	canon = realpath(newfile, NULL);
	if (!canon || stat(canon, &st) < 0) {
		ret = cli_fail(EX_USAGE, "%s: %s", newfile, strerror(errno));
		goto out_free;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = cli_fail(EX_USAGE, "%s: not a regular file", newfile);
		goto out_free;
	}
	ret = in_mount(newfile, st.st_dev, canon, NULL);
	if (ret)
		goto out_free;
	if (st.st_dev != tdev) {
		ret = cli_fail(EX_USAGE, "%s and %s are not in the same mount",
			       newfile, target);
		goto out_free;
	}
	if (stat(target, &tst) == 0 && tst.st_dev == st.st_dev &&
	    tst.st_ino == st.st_ino) {
		ret = cli_fail(EX_USAGE, "%s and %s are the same file", newfile,
			       target);
		goto out_free;
	}
	if (asprintf(&value, "%" PRIu64 " %s", n, rel) < 0) {
		value = NULL;
		ret = cli_fail(EX_REFUSED, "out of memory");
		goto out_free;
	}
	fd = open(canon, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		ret = cli_fail(errno == EACCES ? EX_REFUSED : EX_USAGE,
			       "%s: %s", newfile, strerror(errno));
		goto out_free;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ret = cli_fail(EX_USAGE, "%s: not a regular file", newfile);
		goto out_close;
	}
	if (fsetxattr(fd, XA_REPLACE, value, strlen(value), 0) < 0) {
		ret = errno == ESTALE ? replace_changed(target)
				      : xa_fail(target, errno);
		goto out_close;
	}
	/*
	 * The daemon found version n under its exclusive lock and bumped it
	 * once: n + 1 (reading it back could see another host's replace
	 * that came right after, or nothing once that one unlinked our
	 * file).  Only a writer that changed the file without a lock in
	 * that instant can have made it more; then the caller's next
	 * replace meets a conflict and retries, which is safe.
	 */
	v = n + 1;
	printf("%" PRIu64 "\n", v);
	ret = 0;
out_close:
	close(fd);
out_free:
	free(value);
	free(canon);
	free(rel);
	return ret;
}

/* ---- read ----------------------------------------------------------- */

/*
 * Whether a writer may be at work on @path, into *held: an exclusive
 * lock, of any host, in either lock space (user.dlock.writer: the daemon
 * asks the backend as F_GETLK does, taking no lock).  Returns 0, or an
 * exit status after a message.
 */
static int writer_held(const char *path, bool *held)
{
	char *text;
	int ret = xa_get(path, -1, XA_WRITER, &text);

	*held = false;
	if (ret < 0)
		return xa_fail(path, -ret);
	*held = strcmp(text, "0") != 0;
	free(text);
	return 0;
}

/* sleep before retry number @retry (1...): a few ms, doubling, bounded,
 * with jitter so that readers that failed together spread out */
static void backoff(unsigned long retry)
{
	long ms = READ_BACKOFF_MS;
	struct timespec ts;

	for (unsigned long i = 1; i < retry && ms < READ_BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > READ_BACKOFF_MAX_MS)
		ms = READ_BACKOFF_MAX_MS;
	ms += rand() % (ms / 2 + 1);
	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

struct rd_buf {
	char *p;
	size_t len, cap;
};

/*
 * The whole content of @path, by a new open (FUSE drops the file's page
 * cache at open), into @b.  Returns 0, or an exit status after a message.
 */
static int read_all(const char *path, struct rd_buf *b)
{
	int fd = open(path, O_RDONLY | O_NOCTTY | O_CLOEXEC), ret = 0;

	if (fd < 0)
		return cli_fail(errno == EACCES ? EX_REFUSED : EX_USAGE,
				"%s: %s", path, strerror(errno));
	b->len = 0;
	for (;;) {
		ssize_t n;

		if (b->cap - b->len < 65536) {
			size_t nc = b->cap ? b->cap * 2 : 65536 * 2;
			char *p = realloc(b->p, nc);

			if (!p) {
				ret = cli_fail(EX_REFUSED, "out of memory");
				break;
			}
			b->p = p;
			b->cap = nc;
		}
		n = read(fd, b->p + b->len, b->cap - b->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = errno == EISDIR ? EX_USAGE : EX_REFUSED;
			ret = cli_fail(ret, "%s: %s", path, strerror(errno));
			break;
		}
		if (n == 0)
			break;
		b->len += (size_t)n;
	}
	close(fd);
	return ret;
}

/* all of @b to stdout; 0, or EX_REFUSED after a message */
static int write_out(const struct rd_buf *b)
{
	for (size_t off = 0; off < b->len;) {
		ssize_t n = write(STDOUT_FILENO, b->p + off, b->len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return cli_fail(EX_REFUSED, "stdout: %s",
					strerror(errno));
		off += (size_t)n;
	}
	return 0;
}

/*
 * No writer at work on @file, into *same: its version is still @v1 and no
 * exclusive lock is held.  The writer check comes first: a writer bumps
 * the version before it lets its lock go, so one that was at work during
 * the read either still holds it or has moved the version already.
 * Returns 0, or an exit status after a message.
 */
static int read_settled(const char *file, uint64_t v1, bool *same)
{
	uint64_t v2;
	bool held;
	int ret = writer_held(file, &held);

	*same = false;
	if (ret || held)
		return ret;
	ret = get_version(file, -1, &v2);
	*same = ret == 0 && v1 == v2;
	return ret;
}

/*
 * One attempt of `read`: the version and no writer, the content, then
 * no writer and the same version.  0 with the copy in @b, -1 when a writer was at work
 * (try again), or an exit status after a message.
 */
static int read_once(const char *file, struct rd_buf *b)
{
	uint64_t v1;
	bool held, same;
	int ret = get_version(file, -1, &v1);

	if (ret == 0)
		ret = writer_held(file, &held);
	if (ret == 0 && held)
		return -1;
	if (ret == 0)
		ret = read_all(file, b);
	if (ret == 0)
		ret = read_settled(file, v1, &same);
	if (ret == 0 && !same)
		return -1;
	return ret;
}

/* dlockctl read [--retries N] FILE */
int cmd_read(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "retries", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	uint64_t retries = READ_RETRIES;
	struct rd_buf b = { NULL, 0, 0 };
	const char *file;
	unsigned long retry;
	struct stat st;
	int opt, ret;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (opt != 'r')
			return cli_usage("bad read option");
		if (parse_dec(optarg, 1000000, &retries) < 0)
			return cli_usage("--retries: '%s' is not a number from"
					 " 0 to 1000000",
					 optarg);
	}
	if (argc - optind != 1)
		return cli_usage("read takes one FILE");
	file = argv[optind];
	ret = existing(file, &st);
	if (ret)
		return ret;
	/* a FIFO would block the open: files only */
	if (!S_ISREG(st.st_mode))
		return cli_fail(EX_USAGE, "%s: not a regular file", file);
	srand((unsigned int)getpid() ^ (unsigned int)time(NULL));
	for (retry = 0;; retry++) {
		if (retry > retries) {
			ret = cli_fail(EX_CHANGED,
				       "%s: a writer was at work at each of"
				       " %lu attempts",
				       file, retry);
			break;
		}
		if (retry)
			backoff(retry);
		ret = read_once(file, &b);
		if (ret < 0)
			continue;
		if (ret == 0)
			ret = write_out(&b);
		break;
	}
	free(b.p);
	return ret;
}

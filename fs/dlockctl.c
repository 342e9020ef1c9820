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
#include <jansson.h>
#include <langinfo.h>
#include <limits.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

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
	fputs("usage: dlockctl [--socket PATH] [--json] status [-r | -J]\n"
	      "       dlockctl [--socket PATH] [--json] locks [-o COLUMNS] [-n]"
	      " [-r | -J] [PATH | name:NAME]\n"
	      "       dlockctl [--socket PATH] break PATH | name:NAME\n"
	      "       dlockctl [--socket PATH] metrics\n"
	      "       dlockctl --version | --help\n"
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

/* ---- text for people: escaping, UTF-8, JSON strings ---------------------- */

/* the locale's character set is UTF-8 (set in main): printable UTF-8
 * passes through the table; else every byte >= 0x80 is escaped */
static bool g_utf8;

/*
 * The well-formed UTF-8 sequence (RFC 3629: no overlong form, no
 * surrogate, at most U+10FFFF) at the start of @s, of at most @n bytes:
 * its length, and its code point in *cp; 0 when there is none.
 */
static size_t utf8_seq(const unsigned char *s, size_t n, uint32_t *cp)
{
	uint32_t c = s[0], min;
	size_t len;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		len = 2, c &= 0x1f, min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		len = 3, c &= 0x0f, min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		len = 4, c &= 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

/* a bidirectional formatting control: it would reorder the line */
static bool is_bidi_control(uint32_t c)
{
	return c == 0x061c || c == 0x200e || c == 0x200f ||
	       (c >= 0x202a && c <= 0x202e) || (c >= 0x2066 && c <= 0x2069);
}

/*
 * The display width of code point @c when it may reach a terminal as is,
 * else -1: a control (C0, DEL, C1), a bidirectional control, a line or
 * paragraph separator, or anything wcwidth() calls unprintable.
 */
static int cp_width(uint32_t c)
{
	if (c < 0x20 || (c >= 0x7f && c < 0xa0) || is_bidi_control(c) ||
	    c == 0x2028 || c == 0x2029)
		return -1;
	if (c < 0x7f)
		return 1;
	return wcwidth((wchar_t)c);
}

/*
 * @n bytes of @s for a table cell, as lslocks shows names: a byte that is
 * not part of a printable character, and the backslash, become \xHH; in
 * @raw output the space too, so that fields never contain one.  Returns a
 * malloc'd string (NULL: out of memory) and its display width in *width.
 */
static char *cell_escape(const char *s, size_t n, bool raw, size_t *width)
{
	char *out = malloc(n * 4 + 1), *o = out;
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	*width = 0;
	if (!out)
		return NULL;
	while (i < n) {
		uint32_t cp = 0;
		size_t len = u[i] < 0x80 || g_utf8 ? utf8_seq(u + i, n - i, &cp)
						   : 0;
		int w = len ? cp_width(cp) : -1;

		if (cp == '\\' || (raw && cp == ' '))
			w = -1;
		if (w < 0) {
			/* all of an unprintable character, or one stray byte */
			for (size_t k = 0; k < (len ? len : 1); k++)
				o += sprintf(o, "\\x%02x", u[i + k]);
			*width += 4 * (len ? len : 1);
			i += len ? len : 1;
			continue;
		}
		memcpy(o, u + i, len);
		o += len;
		*width += (size_t)w;
		i += len;
	}
	*o = '\0';
	return out;
}

/*
 * @n bytes of @s as a JSON string: well-formed UTF-8 as it is (jansson
 * escapes what JSON needs), every byte outside a well-formed sequence as
 * U+FFFD; *exact tells whether the string holds the bytes exactly.
 */
static json_t *json_bytes(const char *s, size_t n, bool *exact)
{
	const unsigned char *u = (const unsigned char *)s;
	char *buf = malloc(n * 3 + 1), *o = buf;
	json_t *j;

	*exact = true;
	if (!buf)
		return NULL;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t len = utf8_seq(u + i, n - i, &cp);

		if (len) {
			memcpy(o, u + i, len);
			o += len;
			i += len;
		} else {
			memcpy(o, "\xef\xbf\xbd", 3); /* U+FFFD */
			o += 3;
			i++;
			*exact = false;
		}
	}
	j = json_stringn(buf, (size_t)(o - buf));
	free(buf);
	return j;
}

/* set @key of @obj to @n bytes of @s; when they are not UTF-8, also
 * KEY_hex: the exact bytes, two lowercase hex digits each.  -1: ENOMEM */
static int json_set_bytes(json_t *obj, const char *key, const char *s, size_t n)
{
	char hkey[64], *hex;
	bool exact;
	int ret;

	if (json_object_set_new(obj, key, json_bytes(s, n, &exact)) < 0)
		return -1;
	if (exact)
		return 0;
	hex = malloc(n * 2 + 1);
	if (!hex)
		return -1;
	for (size_t i = 0; i < n; i++)
		sprintf(hex + 2 * i, "%02x", (unsigned char)s[i]);
	hex[2 * n] = '\0';
	snprintf(hkey, sizeof(hkey), "%s_hex", key);
	ret = json_object_set_new(obj, hkey, json_string(hex));
	free(hex);
	return ret;
}

/* an unsigned number: a JSON integer, or a string of its digits when it
 * does not fit jansson's (signed 64-bit) integers */
static json_t *json_u64(uint64_t v)
{
	char b[24];

	if (v <= INT64_MAX)
		return json_integer((json_int_t)v);
	snprintf(b, sizeof(b), "%" PRIu64, v);
	return json_string(b);
}

/* print @j and a newline; EX_DAEMON after a message when it cannot */
static int json_print(json_t *j)
{
	int ret = j ? json_dumpf(j, stdout, JSON_INDENT(2)) : -1;

	json_decref(j);
	if (ret < 0)
		return fail(EX_DAEMON, "out of memory");
	putchar('\n');
	return 0;
}

/* ---- the locks table --------------------------------------------------- */

enum col {
	COL_PATH,
	COL_TYPE,
	COL_MODE,
	COL_START,
	COL_END,
	COL_HOST,
	COL_PID,
	COL_COMMAND,
	COL_TOKEN,
	COL_SINCE,
	COL_WAITING,
	COL_OWNER,
	NCOLS,
};

static const struct col_def {
	const char *name;
	bool right; /* a number: right-aligned */
	bool dflt;  /* shown without -o */
	const char *help;
} cols[NCOLS] = {
	[COL_PATH] = { "PATH", false, true, "resource (file or name:NAME)" },
	[COL_TYPE] = { "TYPE", false, true, "flock, posix, ofd or named" },
	[COL_MODE] = { "MODE", false, true, "READ or WRITE" },
	[COL_START] = { "START", true, true, "first byte" },
	[COL_END] = { "END", true, true, "last byte, EOF: to the end" },
	[COL_HOST] = { "HOST", false, true, "host id of the holder's daemon" },
	[COL_PID] = { "PID", true, true, "process that took it" },
	[COL_COMMAND] = { "COMMAND", false, true,
			  "its command on this host, else -" },
	[COL_TOKEN] = { "TOKEN", true, true, "fencing token, - when waiting" },
	[COL_SINCE] = { "SINCE", false, true, "granted or queued at" },
	[COL_WAITING] = { "WAITING", false, true, "yes: a queued request" },
	[COL_OWNER] = { "OWNER", false, false, "opaque owner id" },
};

/* one lock of the answer, copied out of the receive buffer */
struct lk_item {
	char *path, *host;
	size_t path_len, host_len;
	char comm[64]; /* "" when not known */
	uint8_t space, ltype, waiting, ofd;
	uint64_t start, end, owner, token;
	uint32_t pid;
	int64_t since_ms;
};

static struct {
	struct lk_item *v;
	size_t n, cap;
	bool nomem;
} g_items;

static void item_add(const struct dl_proto_msg *m)
{
	struct lk_item *it;

	if (g_items.n == g_items.cap) {
		size_t nc = g_items.cap ? g_items.cap * 2 : 16;

		it = realloc(g_items.v, nc * sizeof(*it));
		if (!it) {
			g_items.nomem = true;
			return;
		}
		g_items.v = it;
		g_items.cap = nc;
	}
	it = &g_items.v[g_items.n];
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
		g_items.nomem = true;
		return;
	}
	memcpy(it->path, m->str[0].p, m->str[0].len);
	memcpy(it->host, m->str[1].p, m->str[1].len);
	g_items.n++;
}

static void items_free(void)
{
	for (size_t i = 0; i < g_items.n; i++) {
		free(g_items.v[i].path);
		free(g_items.v[i].host);
	}
	free(g_items.v);
}

static const char *item_type(const struct lk_item *it)
{
	if (it->space != 0)
		return it->ofd ? "ofd" : "posix";
	return it->path_len >= 5 && memcmp(it->path, "name:", 5) == 0 ? "named"
								      : "flock";
}

/* /proc/PID/comm of the holder when it runs on our daemon's host */
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

/* @ms (wall clock) as local time, e.g. 2024-05-01T12:03:04+02:00 */
static void since_local(int64_t ms, char *b, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	localtime_r(&s, &tm);
	n = strftime(b, len, "%Y-%m-%dT%H:%M:%S%z", &tm);
	/* +0200 -> +02:00 */
	if (n >= 5 && n + 1 < len) {
		memmove(b + n - 1, b + n - 2, 3);
		b[n - 2] = ':';
	}
}

/* @ms (wall clock) in UTC with milliseconds: 2024-05-01T10:03:04.123Z */
static void since_utc(int64_t ms, char *b, size_t len)
{
	time_t s = (time_t)(ms / 1000);
	struct tm tm;
	size_t n;

	gmtime_r(&s, &tm);
	n = strftime(b, len, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(b + n, len - n, ".%03dZ", (int)(ms % 1000));
}

/* the text of column @c for @it: *s and *n (into @b, or the item) */
static void cell_text(const struct lk_item *it, enum col c, char *b, size_t len,
		      const char **s, size_t *n)
{
	*s = b;
	switch (c) {
	case COL_PATH:
		*s = it->path;
		*n = it->path_len;
		return;
	case COL_HOST:
		*s = it->host;
		*n = it->host_len;
		return;
	case COL_TYPE:
		*s = item_type(it);
		break;
	case COL_MODE:
		*s = it->ltype == DLP_WRLCK ? "WRITE" : "READ";
		break;
	case COL_START:
		snprintf(b, len, "%" PRIu64, it->start);
		break;
	case COL_END:
		if (it->end == UINT64_MAX)
			*s = "EOF";
		else
			snprintf(b, len, "%" PRIu64, it->end);
		break;
	case COL_PID:
		snprintf(b, len, "%" PRIu32, it->pid);
		break;
	case COL_COMMAND:
		*s = it->comm[0] ? it->comm : "-";
		break;
	case COL_TOKEN:
		if (it->waiting)
			*s = "-";
		else
			snprintf(b, len, "%" PRIu64, it->token);
		break;
	case COL_SINCE:
		since_local(it->since_ms, b, len);
		break;
	case COL_WAITING:
		*s = it->waiting ? "yes" : "no";
		break;
	case COL_OWNER:
	default:
		snprintf(b, len, "%016" PRIx64, it->owner);
		break;
	}
	*n = strlen(*s);
}

/* the value of column @c for @it in @obj (key: the column's name in
 * lower case); -1: out of memory */
static int cell_json(json_t *obj, const struct lk_item *it, enum col c)
{
	char key[16], b[64];
	const char *s;
	size_t n;
	json_t *v;

	for (n = 0; cols[c].name[n] && n + 1 < sizeof(key); n++)
		key[n] = (char)(cols[c].name[n] | 0x20);
	key[n] = '\0';
	switch (c) {
	case COL_PATH:
		return json_set_bytes(obj, key, it->path, it->path_len);
	case COL_HOST:
		return json_set_bytes(obj, key, it->host, it->host_len);
	case COL_COMMAND:
		if (!it->comm[0])
			return json_object_set_new(obj, key, json_null());
		return json_set_bytes(obj, key, it->comm, strlen(it->comm));
	case COL_START:
		v = json_u64(it->start);
		break;
	case COL_END:
		v = it->end == UINT64_MAX ? json_null() : json_u64(it->end);
		break;
	case COL_PID:
		v = json_integer(it->pid);
		break;
	case COL_TOKEN:
		v = it->waiting ? json_null() : json_u64(it->token);
		break;
	case COL_SINCE:
		since_utc(it->since_ms, b, sizeof(b));
		v = json_string(b);
		break;
	case COL_WAITING:
		v = json_boolean(it->waiting);
		break;
	default:
		cell_text(it, c, b, sizeof(b), &s, &n);
		v = json_stringn(s, n);
		break;
	}
	return json_object_set_new(obj, key, v);
}

struct table_opts {
	enum col sel[64];
	size_t nsel;
	bool noheadings, raw, json;
};

/*
 * Parse -o LIST (comma-separated, any case; "+LIST" adds to the default
 * columns) into @o.  0, or EX_USAGE after one line.
 */
static int parse_columns(struct table_opts *o, const char *list)
{
	const char *p = list;

	o->nsel = 0;
	if (*p == '+') {
		for (size_t c = 0; c < NCOLS; c++)
			if (cols[c].dflt)
				o->sel[o->nsel++] = (enum col)c;
		p++;
	}
	for (;;) {
		size_t len = strcspn(p, ",");
		size_t c;

		for (c = 0; c < NCOLS; c++)
			if (strlen(cols[c].name) == len &&
			    strncasecmp(cols[c].name, p, len) == 0)
				break;
		if (c == NCOLS)
			return fail(EX_USAGE, "unknown column '%.*s'", (int)len,
				    p);
		if (o->nsel == sizeof(o->sel) / sizeof(o->sel[0]))
			return fail(EX_USAGE, "too many columns");
		o->sel[o->nsel++] = (enum col)c;
		if (!p[len])
			return 0;
		p += len + 1;
	}
}

static int print_json(const struct table_opts *o)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < g_items.n; i++) {
		json_t *obj = json_object();

		if (!obj || json_array_append_new(arr, obj) < 0)
			goto nomem;
		for (size_t k = 0; k < o->nsel; k++)
			if (cell_json(obj, &g_items.v[i], o->sel[k]) < 0)
				goto nomem;
	}
	return json_print(arr);
nomem:
	json_decref(arr);
	return fail(EX_DAEMON, "out of memory");
}

/* one row (@cells[0..nsel)); @w: the column widths, NULL: raw */
static void print_row(const struct table_opts *o, char **cells,
		      const size_t *cw, const size_t *w)
{
	for (size_t k = 0; k < o->nsel; k++) {
		bool last = k + 1 == o->nsel;
		size_t pad = w ? w[k] - cw[k] : 0;

		if (k)
			putchar(' ');
		if (cols[o->sel[k]].right)
			printf("%*s", (int)pad, "");
		fputs(cells[k], stdout);
		if (!cols[o->sel[k]].right && !last)
			printf("%*s", (int)pad, "");
	}
	putchar('\n');
}

/* the cells of row @r (0: the header, else item r - 1), escaped */
static int row_cells(const struct table_opts *o, size_t r, char **cells,
		     size_t *cw)
{
	for (size_t k = 0; k < o->nsel; k++) {
		char b[64];
		const char *s = cols[o->sel[k]].name;
		size_t n = strlen(s);

		if (r)
			cell_text(&g_items.v[r - 1], o->sel[k], b, sizeof(b),
				  &s, &n);
		cells[k] = cell_escape(s, n, o->raw, &cw[k]);
		if (!cells[k])
			return -1;
	}
	return 0;
}

static int print_table(const struct table_opts *o)
{
	size_t nrows = g_items.n + 1, ncells = nrows * o->nsel;
	char **cells = calloc(ncells + 1, sizeof(*cells));
	size_t *cw = calloc(ncells + 1, sizeof(*cw));
	size_t w[64] = { 0 };
	int ret = 0;

	for (size_t r = 0; cells && cw && r < nrows && ret == 0; r++)
		ret = row_cells(o, r, cells + r * o->nsel, cw + r * o->nsel);
	if (!cells || !cw || ret) {
		ret = fail(EX_DAEMON, "out of memory");
		goto out;
	}
	for (size_t r = o->noheadings ? 1 : 0; r < nrows; r++)
		for (size_t k = 0; k < o->nsel; k++)
			if (cw[r * o->nsel + k] > w[k])
				w[k] = cw[r * o->nsel + k];
	for (size_t r = o->noheadings ? 1 : 0; r < nrows; r++)
		print_row(o, cells + r * o->nsel, cw + r * o->nsel,
			  o->raw ? NULL : w);
out:
	for (size_t i = 0; cells && i < ncells; i++)
		free(cells[i]);
	free(cells);
	free(cw);
	return ret;
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

/* ---- status ---------------------------------------------------------------- */

/* the daemon's status text, parsed: key=value lines */
struct kv {
	char *key, *val;
};

struct kvs {
	struct kv v[64];
	size_t n;
};

/* split @text (modified) into key=value lines; others are skipped */
static void kv_parse(char *text, const char *sep, struct kvs *kv)
{
	char *line, *save = NULL;

	kv->n = 0;
	for (line = strtok_r(text, sep, &save); line;
	     line = strtok_r(NULL, sep, &save)) {
		char *eq = strchr(line, '=');

		if (!eq && kv->n && sep[0] == ' ') {
			/* "health=down (Connection refused)": a value
			 * with spaces goes on */
			for (char *q = line - 1;
			     q >= kv->v[kv->n - 1].val && (!*q || *q == ' ');
			     q--)
				*q = ' ';
			continue;
		}
		if (!eq || kv->n == sizeof(kv->v) / sizeof(kv->v[0]))
			continue;
		*eq = '\0';
		kv->v[kv->n++] = (struct kv){ line, eq + 1 };
	}
}

static const char *kv_get(const struct kvs *kv, const char *key)
{
	for (size_t i = 0; i < kv->n; i++)
		if (strcmp(kv->v[i].key, key) == 0)
			return kv->v[i].val;
	return NULL;
}

/* a value as JSON: a number when it is one (up to 18 digits, maybe with
 * a minus sign), else a string */
static json_t *json_value(const char *v)
{
	size_t d = strspn(v + (v[0] == '-'), "0123456789");

	if (d && d < 19 && !v[(v[0] == '-') + d])
		return json_integer(strtoll(v, NULL, 10));
	return json_string(v);
}

/* the status as one JSON object: the daemon's keys, and backend_state
 * (the fields of backend_status) */
static int status_json(const struct kvs *kv, const struct kvs *be)
{
	json_t *o = json_object(), *b = json_object();

	for (size_t i = 0; o && i < kv->n; i++)
		json_object_set_new(o, kv->v[i].key, json_value(kv->v[i].val));
	for (size_t i = 0; b && i < be->n; i++)
		json_object_set_new(b, be->v[i].key, json_value(be->v[i].val));
	if (o && b)
		json_object_set_new(o, "backend_state", b);
	else
		json_decref(b);
	return json_print(o);
}

/* one line of the status for people */
struct sline {
	const char *label;
	char *text; /* malloc'd */
};

struct slines {
	struct sline v[64];
	size_t n;
};

static void sl_add(struct slines *sl, const char *label, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void sl_add(struct slines *sl, const char *label, const char *fmt, ...)
{
	va_list ap;
	char *t;

	if (sl->n == sizeof(sl->v) / sizeof(sl->v[0]))
		return;
	va_start(ap, fmt);
	if (vasprintf(&t, fmt, ap) >= 0)
		sl->v[sl->n++] = (struct sline){ label, t };
	va_end(ap);
}

/* "ok" and friends in words */
static const char *health_words(const char *h)
{
	static const char *const words[][2] = {
		{ "ok", "healthy" },
		{ "down", "down" },
		{ "connecting", "connecting" },
		{ "expired", "session expired" },
		{ "auth-failed", "authentication failed" },
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcmp(h, words[i][0]) == 0)
			return words[i][1];
	return h;
}

/* labels of the daemon's keys and of the backend's, in the order shown;
 * NULL: shown in status_head() */
static const char *const status_labels[][2] = {
	{ "host_id", NULL },
	{ "mode", NULL },
	{ "mountpoint", NULL },
	{ "backend", NULL },
	{ "guarantee", NULL },
	{ "backend_status", NULL },
	{ "held", "held locks" },
	{ "waiting", "waiting requests" },
	{ "lost", "lost locks" },
	{ "lock_timeout", "lock timeout" },
	{ "socket", "socket" },
	{ "clients", "socket clients" },
	{ "processes", "client processes" },
	{ "descriptions", "descriptions" },
	{ "requests", "requests in flight" },
	{ "version", "version" },
};

static const char *const backend_labels[][2] = {
	{ "health", NULL },
	{ "lease_ms", NULL },
	{ "last_renew_ms_ago", NULL },
	{ "nodes", "backend nodes up" },
	{ "server", "backend server" },
	{ "schema", "backend schema" },
	{ "lease", "backend lease id" },
	{ "session", "backend session" },
	{ "timeout_ms", "session timeout ms" },
	{ "resources", "backend resources" },
	{ "held", "backend held" },
	{ "waiting", "backend waiting" },
	{ "waiters", "backend waiters" },
	{ "retrying", "backend retrying" },
	{ "wakeups", "backend wakeups" },
	{ "sessions_lost", "sessions lost" },
};

#define NLABELS(l) (sizeof(l) / sizeof((l)[0]))

/* the fields of @kv that @labels name, in their order */
static void status_known(struct slines *sl, const struct kvs *kv,
			 const char *const (*labels)[2], size_t nlabels)
{
	for (size_t i = 0; i < nlabels; i++) {
		const char *v = kv_get(kv, labels[i][0]);

		if (!v || !labels[i][1])
			continue;
		if (strcmp(labels[i][0], "lock_timeout") == 0)
			sl_add(sl, labels[i][1],
			       strcmp(v, "0") ? "%s s" : "%.0snone", v);
		else
			sl_add(sl, labels[i][1], "%s", v);
	}
}

/* the fields of @kv that @labels do not know, labelled by their key */
static void status_unknown(struct slines *sl, const struct kvs *kv,
			   const char *const (*labels)[2], size_t nlabels)
{
	for (size_t i = 0; i < kv->n; i++) {
		size_t k = 0;

		while (k < nlabels && strcmp(labels[k][0], kv->v[i].key) != 0)
			k++;
		if (k == nlabels)
			sl_add(sl, kv->v[i].key, "%s", kv->v[i].val);
	}
}

/* the lines that are more than one field, or come first */
static void status_head(struct slines *sl, const struct kvs *kv,
			const struct kvs *be)
{
	const char *mode = kv_get(kv, "mode"), *mnt = kv_get(kv, "mountpoint");
	const char *health = kv_get(be, "health");
	const char *lease = kv_get(be, "lease_ms");
	const char *ago = kv_get(be, "last_renew_ms_ago");

	if (kv_get(kv, "host_id"))
		sl_add(sl, "host", "%s", kv_get(kv, "host_id"));
	if (mode)
		sl_add(sl, "mode", "%s%s%s", mode, mnt ? " on " : "",
		       mnt ? mnt : "");
	sl_add(sl, "backend", "%s (%s)", kv_get(kv, "backend") ?: "?",
	       health ? health_words(health) : "health unknown");
	if (kv_get(kv, "guarantee"))
		sl_add(sl, "guarantee", "%s", kv_get(kv, "guarantee"));
	if (lease && ago && ago[0] == '-')
		sl_add(sl, "lease", "%s ms, never renewed", lease);
	else if (lease && ago)
		sl_add(sl, "lease", "%s ms, renewed %s ms ago", lease, ago);
	else if (lease)
		sl_add(sl, "lease", "%s ms", lease);
}

static void status_print(const struct kvs *kv, const struct kvs *be)
{
	struct slines sl = { .n = 0 };
	size_t w = 0;

	status_head(&sl, kv, be);
	status_known(&sl, be, backend_labels, NLABELS(backend_labels));
	status_known(&sl, kv, status_labels, NLABELS(status_labels));
	status_unknown(&sl, kv, status_labels, NLABELS(status_labels));
	status_unknown(&sl, be, backend_labels, NLABELS(backend_labels));
	for (size_t i = 0; i < sl.n; i++)
		if (strlen(sl.v[i].label) > w)
			w = strlen(sl.v[i].label);
	for (size_t i = 0; i < sl.n; i++) {
		printf("%s:%*s ", sl.v[i].label,
		       (int)(w - strlen(sl.v[i].label)), "");
		esc_write(stdout, sl.v[i].text, strlen(sl.v[i].text), false);
		putchar('\n');
		free(sl.v[i].text);
	}
}

/* ask for the status: its text (malloc'd) in *text; 0 or an exit status */
static int status_text(char **text)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_STATUS } }, rep;
	int ret = ctl_call(&m, -1, &rep, NULL);

	if (ret == 0)
		ret = verdict(&rep, "status");
	if (ret)
		return ret;
	*text = rep.nstr ? strndup(rep.str[0].p, rep.str[0].len) : strdup("");
	return *text ? 0 : fail(EX_DAEMON, "out of memory");
}

static int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "raw", no_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'J' },
		{ NULL, 0, NULL, 0 },
	};
	struct kvs kv, be;
	char *text, *bs = NULL;
	bool raw = false;
	int opt, ret;

	optind = 0;
	while ((opt = getopt_long(argc, argv, "rJ", opts, NULL)) != -1) {
		if (opt == 'r')
			raw = true;
		else if (opt == 'J')
			g_json = true;
		else
			return usage("bad status option");
	}
	if (optind < argc)
		return usage("status takes no argument");
	if (raw && g_json)
		return usage("--raw and --json exclude each other");
	ret = ctl_connect();
	if (!ret)
		ret = status_text(&text);
	if (ret)
		return ret;
	if (raw) {
		esc_write(stdout, text, strlen(text), true);
		free(text);
		return 0;
	}
	kv_parse(text, "\n", &kv);
	if (kv_get(&kv, "backend_status"))
		bs = strdup(kv_get(&kv, "backend_status"));
	be.n = 0;
	if (bs)
		kv_parse(bs, " ", &be);
	if (g_json)
		ret = status_json(&kv, &be);
	else
		status_print(&kv, &be);
	free(bs);
	free(text);
	return ret;
}

/* ---- locks --------------------------------------------------------------------- */

/* the host id of the daemon: COMMAND is known for its processes only */
static char *own_host_id(void)
{
	struct kvs kv;
	char *text, *id = NULL;

	if (status_text(&text) != 0)
		return NULL;
	kv_parse(text, "\n", &kv);
	if (kv_get(&kv, "host_id"))
		id = strdup(kv_get(&kv, "host_id"));
	free(text);
	return id;
}

static bool cols_have(const struct table_opts *o, enum col c)
{
	for (size_t k = 0; k < o->nsel; k++)
		if (o->sel[k] == c)
			return true;
	return false;
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
			return usage("bad locks option");
		}
	}
	if (o->raw && o->json)
		return usage("--raw and --json exclude each other");
	if (list)
		return parse_columns(o, list);
	/* the table's default columns; JSON gets them all */
	for (size_t c = 0; c < NCOLS; c++)
		if (cols[c].dflt || o->json)
			o->sel[o->nsel++] = (enum col)c;
	return 0;
}

static int cmd_locks(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_LIST } }, rep;
	struct table_opts o = { .json = g_json };
	char *host_id = NULL;
	int fd = -1, ret;

	ret = locks_opts(argc, argv, &o);
	if (ret)
		return ret;
	if (argc - optind > 1)
		return usage("locks takes at most one PATH or name:NAME");
	if (argc - optind == 1) {
		ret = target(argv[optind], &m, &fd);
		if (ret)
			return ret;
	}
	ret = ctl_connect();
	if (ret == 0 && cols_have(&o, COL_COMMAND))
		host_id = own_host_id();
	if (ret == 0)
		ret = ctl_call(&m, fd, &rep, item_add);
	if (ret == 0)
		ret = verdict(&rep, "locks");
	if (ret == 0 && g_items.nomem)
		ret = fail(EX_DAEMON, "out of memory");
	for (size_t i = 0; ret == 0 && i < g_items.n; i++)
		item_comm(&g_items.v[i], host_id);
	if (ret == 0)
		ret = o.json ? print_json(&o) : print_table(&o);
	free(host_id);
	items_free();
	return ret;
}

/* ---- break, run ---------------------------------------------------------------- */

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

/* METRICS: each ITEM is whole lines of the text */
static void metrics_piece(const struct dl_proto_msg *m)
{
	if (m->nstr)
		fwrite(m->str[0].p, 1, m->str[0].len, stdout);
}

static int cmd_metrics(int argc, char **argv)
{
	struct dl_proto_msg m = { .hdr = { .type = DLP_METRICS } }, rep;
	int ret;

	if (argc > 1)
		return usage("metrics takes no argument");
	ret = ctl_connect();
	if (ret)
		return ret;
	ret = ctl_call(&m, -1, &rep, metrics_piece);
	if (ret == 0)
		ret = verdict(&rep, "metrics");
	if (fflush(stdout) != 0 && ret == 0)
		ret = fail(EX_DAEMON, "metrics: %s", strerror(errno));
	return ret;
}

static void help(void)
{
	usage_line(stdout);
	fputs("\n"
	      "Commands:\n"
	      "  status          the daemon, its backend and its health\n"
	      "  locks           holders and waiters: of PATH or name:NAME,"
	      " else all\n"
	      "  break           remove every lock of PATH or name:NAME"
	      " (root)\n"
	      "  run             run COMMAND under named locks\n"
	      "  metrics         the daemon's metrics, Prometheus text format\n"
	      "\n"
	      "Options:\n"
	      "  -S, --socket PATH     the daemon's control socket (default"
	      " $DLOCK_SOCKET, else " DL_SOCKET_DEFAULT ")\n"
	      "  -j, --json            status and locks as JSON\n"
	      "  -h, --help            this text\n"
	      "  -V, --version         the version\n"
	      "\n"
	      "status options:\n"
	      "  -r, --raw             the daemon's key=value lines\n"
	      "  -J, --json            a JSON object\n"
	      "\n"
	      "locks options:\n"
	      "  -o, --output COLUMNS  the columns to show (+COLUMNS: add to"
	      " the default)\n"
	      "  -n, --noheadings      no header line\n"
	      "  -r, --raw             unaligned, one space between fields\n"
	      "  -J, --json            a JSON array (every column without"
	      " -o)\n"
	      "\n"
	      "Columns:\n",
	      stdout);
	for (size_t c = 0; c < NCOLS; c++)
		printf("  %-8s %s%s\n", cols[c].name, cols[c].help,
		       cols[c].dflt ? "" : " (not shown by default)");
	fputs("\nExit status: 0 done, 1 no lock (held, timeout, nothing to"
	      " break), 2 usage,\n3 daemon unreachable, 4 refused; run: the"
	      " command's.\n",
	      stdout);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "socket", required_argument, NULL, 'S' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *cmd;
	int opt;

	setlocale(LC_CTYPE, "");
	g_utf8 = strcmp(nl_langinfo(CODESET), "UTF-8") == 0;
	g_socket = getenv("DLOCK_SOCKET");
	if (!g_socket || !g_socket[0])
		g_socket = DL_SOCKET_DEFAULT;
	while ((opt = getopt_long(argc, argv, "+S:jhV", opts, NULL)) != -1) {
		switch (opt) {
		case 'V':
			printf("dlockctl %s\n", DLOCKFS_VERSION);
			return 0;
		case 'S':
			g_socket = optarg;
			break;
		case 'j':
			g_json = true;
			break;
		case 'h':
			help();
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
	if (strcmp(cmd, "metrics") == 0)
		return cmd_metrics(argc, argv);
	return usage("unknown command '%s'", cmd);
}

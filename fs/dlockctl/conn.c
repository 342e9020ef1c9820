/*
 * conn.c - talking to the daemon over its control socket: a SOCK_SEQPACKET
 * connection, one frame per message (fs/ctl/proto.h), a descriptor passed
 * with SCM_RIGHTS when the request names a file.
 *
 * It keeps no state beyond struct ctl_conn and holds no lock of its own:
 * what the daemon grants belongs to the connection and goes when it is
 * closed, however dlockctl exits.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/conn.h"
#include "fs/dlockctl/text.h"

/* returns the monotonic clock in milliseconds; cannot fail */
int64_t ctl_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Connect @c to the socket at @path.  Returns 0, or an exit status after a
 * message: EX_USAGE (the path is too long), EX_DAEMON (nobody answers).
 */
int ctl_connect(struct ctl_conn *c, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	c->id = 0;
	if (strlen(path) >= sizeof(sa.sun_path))
		return cli_fail(EX_USAGE, "socket path %s is too long", path);
	strcpy(sa.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (c->fd < 0 ||
	    connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) == -1)
		return cli_fail(EX_DAEMON,
				"cannot reach the dlockfs daemon at %s: %s",
				path, strerror(errno));
	return 0;
}

/*
 * Send @m (with @fd when >= 0) under the next request id, left in
 * m->hdr.id.  Returns 0, or an exit status after a message: EX_USAGE (it
 * does not fit a frame), EX_DAEMON (the connection is gone).
 */
int ctl_send(struct ctl_conn *c, struct dl_proto_msg *m, int fd)
{
	union {
		struct cmsghdr h;
		char b[CMSG_SPACE(sizeof(int))];
	} ctl;
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int len;

	m->hdr.id = ++c->id;
	len = proto_encode(m, c->buf, sizeof(c->buf));
	if (len < 0)
		return cli_fail(EX_USAGE, "request too large");
	iov = (struct iovec){ c->buf, (size_t)len };
	if (fd >= 0) {
		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = sizeof(ctl.b);
		CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
	}
	if (sendmsg(c->fd, &mh, MSG_NOSIGNAL) != len)
		return cli_fail(EX_DAEMON, "lost the daemon: %s",
				strerror(errno));
	return 0;
}

/*
 * Read frames until the REPLY to request @id, passing ITEMs to @item (with
 * @arg) and skipping the frames of other requests.  @deadline_ms
 * (monotonic, 0: none) bounds the wait.  Returns 0 (the verdict in
 * rep->err), or a negative errno: -ETIMEDOUT at the deadline, -EBADMSG for
 * a frame that does not decode, else what the connection failed with.
 * Prints nothing.
 */
int ctl_recv(struct ctl_conn *c, uint32_t id, struct dl_proto_msg *rep,
	     int64_t deadline_ms,
	     void (*item)(const struct dl_proto_msg *, void *), void *arg)
{
	for (;;) {
		ssize_t n;

		if (deadline_ms) {
			struct pollfd p = { .fd = c->fd, .events = POLLIN };
			int64_t left = deadline_ms - ctl_mono_ms();

			if (left <= 0)
				return -ETIMEDOUT;
			if (poll(&p, 1,
				 (int)(left > INT_MAX ? INT_MAX : left)) == 0)
				return -ETIMEDOUT;
		}
		n = recv(c->fd, c->buf, sizeof(c->buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -ECONNRESET;
		if (proto_decode(c->buf, (size_t)n, rep) < 0)
			return -EBADMSG;
		if (rep->hdr.id != id)
			continue;
		if (rep->hdr.type == DLP_ITEM) {
			if (item)
				item(rep, arg);
			continue;
		}
		if (rep->hdr.type == DLP_REPLY)
			return 0;
	}
}

/*
 * One request, one answer: send @m (with @fd when >= 0), wait for its
 * REPLY in @rep, ITEMs to @item.  Returns 0 (the verdict in rep->err), or
 * an exit status after a message (EX_USAGE, EX_DAEMON: see ctl_send()).
 */
int ctl_call(struct ctl_conn *c, struct dl_proto_msg *m, int fd,
	     struct dl_proto_msg *rep,
	     void (*item)(const struct dl_proto_msg *, void *), void *arg)
{
	int ret = ctl_send(c, m, fd);

	if (ret)
		return ret;
	ret = ctl_recv(c, m->hdr.id, rep, 0, item, arg);
	if (ret < 0)
		return cli_fail(EX_DAEMON, "lost the daemon: %s",
				strerror(-ret));
	return 0;
}

/*
 * The daemon's verdict on request @what.  Returns 0 when it was done;
 * else, after "WHAT: ERROR (the daemon's reason)", EX_NOLOCK for ENOENT
 * and EAGAIN (no such lock, a conflict), EX_REFUSED for anything else.
 */
int ctl_verdict(const struct dl_proto_msg *rep, const char *what)
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
			text_escape(f, rep->str[0].p, rep->str[0].len, false);
			fputc(')', f);
		}
		if (fclose(f) != 0) {
			free(why);
			why = NULL;
		}
	}
	cli_fail(0, "%s: %s%s", what, strerror(-rep->err), why ? why : "");
	free(why);
	return rep->err == -ENOENT || rep->err == -EAGAIN ? EX_NOLOCK
							  : EX_REFUSED;
}

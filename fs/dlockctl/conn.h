/*
 * conn.h - one connection to the daemon's control socket (ctl_): connect,
 * send a request (maybe with a descriptor), read its ITEMs and its REPLY,
 * and turn a refusal into a message and an exit status.
 */
#ifndef DLOCKCTL_CONN_H
#define DLOCKCTL_CONN_H

#include <stdint.h>

#include "fs/ctl/proto.h"

/*
 * A connection.  A decoded message points into @buf, so an answer is good
 * until the next ctl_recv() on the same connection.
 */
struct ctl_conn {
	int fd;
	uint32_t id; /* of the last request sent */
	unsigned char buf[DL_PROTO_MAX_FRAME];
};

/* the monotonic clock in milliseconds */
int64_t ctl_mono_ms(void);

int ctl_connect(struct ctl_conn *c, const char *path);
int ctl_send(struct ctl_conn *c, struct dl_proto_msg *m, int fd);
int ctl_recv(struct ctl_conn *c, uint32_t id, struct dl_proto_msg *rep,
	     int64_t deadline_ms,
	     void (*item)(const struct dl_proto_msg *, void *), void *arg);
int ctl_call(struct ctl_conn *c, struct dl_proto_msg *m, int fd,
	     struct dl_proto_msg *rep,
	     void (*item)(const struct dl_proto_msg *, void *), void *arg);
int ctl_verdict(const struct dl_proto_msg *rep, const char *what);

#endif /* DLOCKCTL_CONN_H */

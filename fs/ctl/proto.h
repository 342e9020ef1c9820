/*
 * proto.h - the control socket's wire protocol, shared by the daemon
 * (ctlsock.c), the LD_PRELOAD shim and dlockctl.
 *
 * Transport: an AF_UNIX SOCK_SEQPACKET socket, so every frame is one
 * packet and a descriptor passed with SCM_RIGHTS arrives with the frame it
 * belongs to.  A frame is a 16-byte header followed by a body of exactly
 * hdr.len bytes: a fixed part per message type, then that type's strings,
 * each a little-endian u16 length and the bytes (no NUL, no terminator).
 * Integers are little-endian.  Nothing in a frame is trusted: the daemon
 * takes the file from the descriptor it received and the caller's pid and
 * uid from SO_PEERCRED.
 *
 * Versioning: every frame carries DL_PROTO_VERSION.  A daemon answers a
 * frame of another version with an error reply (-EPROTONOSUPPORT) and
 * closes the connection; so does it for any frame proto_decode() refuses.
 *
 * This file does no I/O and allocates nothing: proto_decode() points into
 * the caller's buffer.  It is fuzzed by tests/unit/test_proto.c.
 */
#ifndef DL_PROTO_H
#define DL_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DL_PROTO_MAGIC	   0x4b4c4c44u /* "DLLK" */
#define DL_PROTO_VERSION   3
#define DL_PROTO_HDR_LEN   16
#define DL_PROTO_MAX_FRAME 65536 /* header included */
#define DL_PROTO_MAX_STR   4096
#define DL_PROTO_MAX_STRS  3
#define DL_SOCKET_DEFAULT  "/run/dlockfs/dlockfs.sock"

enum dl_proto_type {
	/* requests (client -> daemon) */
	DLP_LOCK = 1,	/* lock; a descriptor, or a named lock */
	DLP_UNLOCK = 2, /* lock body, type ignored */
	DLP_GETLK = 3,	/* lock body */
	DLP_CLOSED = 4, /* the caller closed a descriptor of dev/ino */
	DLP_CANCEL = 5, /* give up the waiting request number target_id */
	DLP_STATUS = 6, /* daemon and backend status */
	DLP_LIST = 7,	/* holders and waiters: a descriptor, a name, or all */
	DLP_BREAK = 8,	/* remove every lock of a resource (root only) */
	DLP_FENCE = 9,	/* watch the descriptor's file for lost locks */
	DLP_METRICS = 10, /* the metrics text: ITEMs (str[0]: a piece of
			   * it, whole lines), then REPLY */
	/* replies (daemon -> client) */
	DLP_REPLY = 64, /* the end of the answer to request hdr.id */
	DLP_ITEM = 65,	/* one lock of a DLP_LIST answer, before its REPLY */
	DLP_TYPE_MAX = 66,
};

/* the lock's owner on the caller's side, and so its release rules */
enum dl_proto_kind {
	DLK_POSIX = 0, /* fcntl/lockf: the calling process */
	DLK_OFD = 1,   /* F_OFD_*: the open file description */
	DLK_FLOCK = 2, /* flock(2): the open file description */
	DLK_NAMED = 3, /* a named lock ("name:NAME"), no descriptor; owned
			* by the connection */
};

#define DLP_F_WAIT  0x01 /* queue when blocked */
#define DLP_F_FD    0x02 /* a descriptor comes with the frame */
#define DLP_F_PAGE  0x04 /* FENCE: send me my fence page (a descriptor) */
#define DLP_F_LEASE 0x08 /* FENCE: send me the lease page (a descriptor) */

/*
 * The fence page (version 3): one per client process, made by the daemon
 * at the process's first FENCE and passed read-only with that reply
 * (DLP_F_PAGE).  FENCE names a file by the descriptor passed with it; the
 * reply's start is the slot the daemon keeps for that file in the page.
 * When a lock of the process on that file is lost, the daemon sets the
 * slot's lost to 1, so the shim fails writes with EIO without asking; a
 * later FENCE of the file gets another slot.  A slot (lost or not) is
 * recycled once the process has told the daemon (CLOSED) of a close that
 * left it no descriptor of the file.
 *
 * Fencing by the clock (DESIGN §3): a slot also names the lease its locks
 * were granted under (0: a backend without leases).  The lease page, one
 * for the daemon, passed read-only with the reply to a FENCE that sets
 * DLP_F_LEASE, starts with the backend's struct dl_lease (backend.h); the
 * shim refuses a write when dl_lease_trusted(page, slot.lease, now) is
 * false, whether or not the daemon has set lost yet (a frozen daemon
 * cannot).
 */
struct dl_fence_slot {
	uint64_t dev, ino;
	uint32_t used;
	uint32_t lost;	/* read with an atomic load */
	uint64_t lease; /* read with an atomic load */
};

#define DL_FENCE_PAGE_SIZE 65536
#define DL_FENCE_SLOTS	   (DL_FENCE_PAGE_SIZE / sizeof(struct dl_fence_slot))

/* lock types, as enum dl_lock_type */
#define DLP_UNLCK 0
#define DLP_RDLCK 1
#define DLP_WRLCK 2

struct dl_proto_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t type;
	uint32_t len; /* body bytes after the header */
	uint32_t id;  /* request number, echoed by the replies */
};

/*
 * A decoded frame.  Which fields mean something depends on hdr.type; the
 * strings point into the decoded buffer and are not NUL-terminated.
 */
struct dl_proto_str {
	const char *p;
	uint16_t len;
};

struct dl_proto_msg {
	struct dl_proto_hdr hdr;
	/* LOCK, UNLOCK, GETLK */
	uint8_t kind;	 /* enum dl_proto_kind */
	uint8_t ltype;	 /* DLP_RDLCK/WRLCK/UNLCK */
	uint8_t flags;	 /* DLP_F_* */
	int64_t l_start; /* absolute start, as struct flock after SEEK_SET */
	int64_t l_len;	 /* 0: to EOF; negative: bytes before l_start */
	/* CLOSED */
	uint64_t dev, ino;
	/* CANCEL */
	uint32_t target_id;
	/* REPLY */
	int32_t err; /* 0 or a negative errno */
	/*
	 * REPLY to LOCK: token; to GETLK: the conflict (found), ITEM: a lock.
	 * In an ITEM, found set means an OFD lock (space 1): its owner is an
	 * open file description the daemon knows (taken through the shim).
	 * Clear: flock, or a POSIX-space lock not known to be OFD (fcntl or
	 * lockf; an OFD lock taken through a mount or on another host looks
	 * the same).  Daemons before this always sent 0; clients that do
	 * not know it ignore it.
	 */
	bool found;
	uint8_t space; /* enum dl_space */
	uint8_t waiting;
	uint64_t start, end; /* inclusive range, end UINT64_MAX = EOF */
	uint64_t owner;
	uint32_t pid;
	uint64_t token;
	int64_t since_ms;
	/*
	 * strings: LOCK/UNLOCK/GETLK with DLP_F_FD: none (a version-3
	 * client's [label, prefix] are accepted and ignored: the daemon
	 * names files from its own configuration); named: [name], in the
	 * caller's namespace.  LIST/BREAK: [] all (LIST only), [name] a
	 * resource ("name:NAME" in the caller's namespace), or DLP_F_FD.  REPLY: [message] (error text, STATUS
	 * text), GETLK reply: [host]; ITEM: [resource, host].  FENCE: none
	 * (flags: DLP_F_FD, DLP_F_PAGE).
	 */
	struct dl_proto_str str[DL_PROTO_MAX_STRS];
	unsigned nstr;
};

/*
 * proto_decode() - check and decode the frame @buf of @len bytes (one
 * packet).  Returns 0, -EPROTONOSUPPORT for a frame of another version
 * (msg->hdr is filled, so the error reply can echo its id), or -EBADMSG
 * for anything else malformed: short, long, bad magic, unknown type,
 * string out of bounds or holding a NUL, trailing bytes, bad field values.
 */
int proto_decode(const void *buf, size_t len, struct dl_proto_msg *msg);

/*
 * proto_encode() - write @msg (hdr.type, hdr.id and that type's fields;
 * magic, version and len are filled in) to @buf of @cap bytes.  Returns
 * the frame length, or -EMSGSIZE when it does not fit or a string is too
 * long, -EINVAL for an unknown type.
 */
int proto_encode(const struct dl_proto_msg *msg, void *buf, size_t cap);

/* proto_str() - set string @i of @msg (nstr grows to cover it) */
void proto_str(struct dl_proto_msg *msg, unsigned i, const char *s);

/* proto_streq() - does @s equal the NUL-terminated @c? */
bool proto_streq(const struct dl_proto_str *s, const char *c);

/* proto_type_name() - "LOCK", ... for logs; "?" when unknown */
const char *proto_type_name(unsigned type);

#endif /* DL_PROTO_H */

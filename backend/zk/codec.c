/*
 * codec.c - translation between ZooKeeper's vocabulary and ours: the data
 * text of a request node, the sequence number of its name, the library's
 * error codes and session states.
 *
 * A node's data (zk_format writes it, zk_parse reads it):
 *   dlock1            version line
 *   n=HEX             the full resource name, hex (names.c encodes the
 *                     znode name, which may be a hash: this one decides)
 *   s=0|1             the space (enum dl_space: flock, POSIX)
 *   o=INC/OWNER       16 hex digits each: incarnation and local owner
 *   h=HEX             host id, hex
 *   p=PID             the requesting process
 *   w=WAITID          the request's wait id (0: not queued)
 *   t=MS              enqueue time, wall clock ms
 *   j=1               only when "jumped" (grant.c)
 *   r=w|r START END   one line per range, inclusive
 * Unknown lines are skipped, so a newer writer stays readable.
 *
 * Owns: those formats and zk_errno()'s mapping to backend.h's errnos.
 * Does not: read or write ZooKeeper (grant.c and owner.c do), decide
 * anything about a node (grant.c), encode names (names.c).
 *
 * Locking: none.  Pure functions of their arguments; zk_format() reads
 * only fields of zb, ow and n that are read-only or private to its caller
 * (the node is not linked yet, or its owner's busy flag is held).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/zk/internal.h"

/* a ZooKeeper error as a negative errno (backend.h's vocabulary) */
int zk_errno(int rc)
{
	if (rc == ZOK)
		return 0;
	if (rc == ZNONODE)
		return -ENOENT;
	if (rc == ZNODEEXISTS)
		return -EEXIST;
	if (rc == ZNOTEMPTY)
		return -ENOTEMPTY;
	if (rc == ZMARSHALLINGERROR || rc == ZSYSTEMERROR)
		return -ENOMEM;
	if (rc == ZNOAUTH || rc == ZAUTHFAILED)
		return -EACCES;
	/* connection loss, timeout, expired, closing, invalid state... */
	return -ENOLCK;
}

/* a ZOO_*_STATE as status shows it (health=) */
const char *zk_state_name(int state)
{
	if (state == ZOO_CONNECTED_STATE)
		return "ok";
	if (state == ZOO_EXPIRED_SESSION_STATE)
		return "expired";
	if (state == ZOO_AUTH_FAILED_STATE)
		return "auth-failed";
	return "connecting";
}

/* text of a node: see the file comment.  malloc'd, *len set; NULL: ENOMEM */
char *zk_format(const struct zk_backend *zb, const struct zk_owner *ow,
		const struct zk_node *n, int *len)
{
	size_t cap = strlen(ow->name_hex) + strlen(zb->host_hex) + 256 +
		     n->ranges.n * 48;
	char *buf = malloc(cap);
	size_t o;

	if (!buf)
		return NULL;
	o = (size_t)snprintf(buf, cap,
			     "dlock1\nn=%s\ns=%d\no=%016" PRIx64 "/%016" PRIx64
			     "\nh=%s\np=%u\nw=%" PRIu64 "\nt=%" PRId64 "\n%s",
			     ow->name_hex, (int)ow->space, zb->incarnation,
			     ow->owner, zb->host_hex, n->pid, n->wait_id,
			     n->ctime, n->jumped ? "j=1\n" : "");
	for (size_t i = 0; i < n->ranges.n && o < cap; i++)
		o += (size_t)snprintf(
			buf + o, cap - o, "r=%c %" PRIu64 " %" PRIu64 "\n",
			n->ranges.v[i].type == DL_WRLCK ? 'w' : 'r',
			n->ranges.v[i].start, n->ranges.v[i].end);
	*len = (int)(o < cap ? o : cap);
	return buf;
}

/* parse @c->data; @name_hex NULL accepts any resource */
void zk_parse(struct zk_child *c, const char *name_hex)
{
	char *p = c->data, *end, *line;
	bool name_ok = name_hex == NULL;

	c->valid = false;
	if (!p || c->len < 7 || strncmp(p, "dlock1\n", 7) != 0)
		return;
	end = p + c->len;
	for (line = p + 7; line < end;) {
		char *nl = memchr(line, '\n', (size_t)(end - line));
		size_t l = nl ? (size_t)(nl - line) : (size_t)(end - line);

		if (l > 2 && line[1] == '=') {
			char *v = line + 2;
			size_t vl = l - 2;

			switch (line[0]) {
			case 'n':
				if (name_hex && strlen(name_hex) == vl &&
				    memcmp(name_hex, v, vl) == 0)
					name_ok = true;
				break;
			case 's':
				c->space = v[0] == '1' ? DL_SPACE_POSIX
						       : DL_SPACE_FLOCK;
				break;
			case 'o':
				if (sscanf(v, "%16" SCNx64 "/%16" SCNx64,
					   &c->inc, &c->owner) != 2)
					return;
				break;
			case 'h': {
				long hl = zk_unhex(v, vl, c->host,
						   sizeof(c->host) - 1);

				c->host[hl > 0 ? hl : 0] = '\0';
				break;
			}
			case 'p':
				c->pid = (uint32_t)strtoul(v, NULL, 10);
				break;
			case 'w':
				c->wait_id = strtoull(v, NULL, 10);
				break;
			case 't':
				c->since = strtoll(v, NULL, 10);
				break;
			case 'j':
				c->jumped = v[0] == '1';
				break;
			case 'r': {
				struct dl_range_lock rl = { 0 };
				char t;

				if (sscanf(v, "%c %" SCNu64 " %" SCNu64, &t,
					   &rl.start, &rl.end) != 3 ||
				    rl.start > rl.end)
					return;
				rl.type = t == 'w' ? DL_WRLCK : DL_RDLCK;
				if (range_set_apply(&c->ranges, &rl) < 0)
					return;
				break;
			}
			default:
				break;
			}
		}
		line += l + 1;
	}
	c->valid = name_ok;
}

/* the sequence number: the last 10 digits of a sequential node's name */
uint64_t zk_seq_of(const char *name)
{
	size_t l = strlen(name);

	return l >= 10 ? strtoull(name + l - 10, NULL, 10) : 0;
}

/*
 * proto.c - encode and decode control socket frames (see proto.h).
 *
 * The decoder is the daemon's first line of defence against a hostile
 * peer: it reads nothing beyond @len, accepts exactly one layout per type
 * and leaves every semantic check (which fields go together) to a table,
 * so that a frame either decodes completely or is refused.
 */
#include "fs/ctl/proto.h"

#include <errno.h>
#include <string.h>

/* body layout of each type: fixed bytes, then min..max strings */
struct proto_layout {
	const char *name;
	uint16_t fixed;
	uint8_t min_str, max_str;
};

#define LOCK_FIXED   24
#define CLOSED_FIXED 16
#define CANCEL_FIXED 8
#define TARGET_FIXED 8
#define REPLY_FIXED  56

static const struct proto_layout layouts[DLP_TYPE_MAX] = {
	[DLP_LOCK] = { "LOCK", LOCK_FIXED, 0, 2 },
	[DLP_UNLOCK] = { "UNLOCK", LOCK_FIXED, 0, 2 },
	[DLP_GETLK] = { "GETLK", LOCK_FIXED, 0, 2 },
	[DLP_CLOSED] = { "CLOSED", CLOSED_FIXED, 0, 0 },
	[DLP_CANCEL] = { "CANCEL", CANCEL_FIXED, 0, 0 },
	[DLP_STATUS] = { "STATUS", 0, 0, 0 },
	[DLP_LIST] = { "LIST", TARGET_FIXED, 0, 2 },
	[DLP_BREAK] = { "BREAK", TARGET_FIXED, 0, 2 },
	[DLP_FENCE] = { "FENCE", TARGET_FIXED, 0, 0 },
	[DLP_METRICS] = { "METRICS", 0, 0, 0 },
	[DLP_REPLY] = { "REPLY", REPLY_FIXED, 0, 3 },
	[DLP_ITEM] = { "ITEM", REPLY_FIXED, 2, 2 },
};

const char *proto_type_name(unsigned type)
{
	if (type >= DLP_TYPE_MAX || !layouts[type].name)
		return "?";
	return layouts[type].name;
}

/* ---- little-endian access ---------------------------------------------- */

static uint64_t get_le(const unsigned char *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

static void put_le(unsigned char *p, uint64_t v, unsigned n)
{
	for (unsigned i = 0; i < n; i++, v >>= 8)
		p[i] = (unsigned char)v;
}

/* ---- decode ------------------------------------------------------------ */

/* the fields each type needs together; -EBADMSG when they do not fit */
static int proto_check(const struct dl_proto_msg *m)
{
	bool fd = m->flags & DLP_F_FD;

	switch (m->hdr.type) {
	case DLP_LOCK:
	case DLP_UNLOCK:
	case DLP_GETLK:
		if (m->kind > DLK_NAMED || m->ltype > DLP_WRLCK ||
		    (m->flags & ~(DLP_F_WAIT | DLP_F_FD)))
			return -EBADMSG;
		/* with a descriptor, the strings (a version-3 client's
		 * label and prefix) are ignored */
		if (m->kind == DLK_NAMED ? fd || m->nstr != 1 : !fd)
			return -EBADMSG;
		if (m->hdr.type == DLP_LOCK && m->ltype == DLP_UNLCK)
			return -EBADMSG;
		if (m->hdr.type == DLP_GETLK && m->ltype == DLP_UNLCK)
			return -EBADMSG;
		return 0;
	case DLP_LIST:
	case DLP_BREAK:
		if (m->flags & ~DLP_F_FD)
			return -EBADMSG;
		if (!fd && m->nstr > 1)
			return -EBADMSG;
		return 0;
	case DLP_FENCE:
		if ((m->flags & ~(DLP_F_FD | DLP_F_PAGE | DLP_F_LEASE)) || !fd)
			return -EBADMSG;
		return 0;
	case DLP_REPLY:
	case DLP_ITEM:
		if (m->space > 1 || m->ltype > DLP_WRLCK || m->waiting > 1 ||
		    m->err > 0)
			return -EBADMSG;
		return 0;
	default:
		return 0;
	}
}

int proto_decode(const void *buf, size_t len, struct dl_proto_msg *m)
{
	const unsigned char *p = buf, *b, *end;
	const struct proto_layout *l;

	memset(m, 0, sizeof(*m));
	if (len < DL_PROTO_HDR_LEN || len > DL_PROTO_MAX_FRAME)
		return -EBADMSG;
	m->hdr.magic = (uint32_t)get_le(p, 4);
	m->hdr.version = (uint16_t)get_le(p + 4, 2);
	m->hdr.type = (uint16_t)get_le(p + 6, 2);
	m->hdr.len = (uint32_t)get_le(p + 8, 4);
	m->hdr.id = (uint32_t)get_le(p + 12, 4);
	if (m->hdr.magic != DL_PROTO_MAGIC)
		return -EBADMSG;
	if (m->hdr.version != DL_PROTO_VERSION)
		return -EPROTONOSUPPORT;
	if (m->hdr.len != len - DL_PROTO_HDR_LEN)
		return -EBADMSG;
	if (m->hdr.type >= DLP_TYPE_MAX || !layouts[m->hdr.type].name)
		return -EBADMSG;
	l = &layouts[m->hdr.type];
	b = p + DL_PROTO_HDR_LEN;
	end = p + len;
	if ((size_t)(end - b) < l->fixed)
		return -EBADMSG;

	switch (m->hdr.type) {
	case DLP_LOCK:
	case DLP_UNLOCK:
	case DLP_GETLK:
		m->kind = b[0];
		m->ltype = b[1];
		m->flags = b[2];
		if (b[3] || get_le(b + 4, 4))
			return -EBADMSG;
		m->l_start = (int64_t)get_le(b + 8, 8);
		m->l_len = (int64_t)get_le(b + 16, 8);
		break;
	case DLP_CLOSED:
		m->dev = get_le(b, 8);
		m->ino = get_le(b + 8, 8);
		break;
	case DLP_CANCEL:
		m->target_id = (uint32_t)get_le(b, 4);
		if (get_le(b + 4, 4))
			return -EBADMSG;
		break;
	case DLP_LIST:
	case DLP_BREAK:
	case DLP_FENCE:
		m->flags = b[0];
		if (get_le(b + 1, 7))
			return -EBADMSG;
		break;
	case DLP_REPLY:
	case DLP_ITEM:
		m->err = (int32_t)get_le(b, 4);
		if (b[4] > 1)
			return -EBADMSG;
		m->found = b[4];
		m->space = b[5];
		m->ltype = b[6];
		m->waiting = b[7];
		m->start = get_le(b + 8, 8);
		m->end = get_le(b + 16, 8);
		m->owner = get_le(b + 24, 8);
		m->pid = (uint32_t)get_le(b + 32, 4);
		if (get_le(b + 36, 4))
			return -EBADMSG;
		m->token = get_le(b + 40, 8);
		m->since_ms = (int64_t)get_le(b + 48, 8);
		break;
	default:
		break;
	}
	b += l->fixed;

	while (b < end) {
		uint16_t n;

		if (m->nstr == l->max_str || end - b < 2)
			return -EBADMSG;
		n = (uint16_t)get_le(b, 2);
		b += 2;
		if (n > DL_PROTO_MAX_STR || (size_t)(end - b) < n ||
		    memchr(b, '\0', n))
			return -EBADMSG;
		m->str[m->nstr].p = (const char *)b;
		m->str[m->nstr].len = n;
		m->nstr++;
		b += n;
	}
	if (m->nstr < l->min_str)
		return -EBADMSG;
	return proto_check(m);
}

/* ---- encode ------------------------------------------------------------ */

int proto_encode(const struct dl_proto_msg *m, void *buf, size_t cap)
{
	unsigned char *p = buf, *b;
	const struct proto_layout *l;
	size_t len;

	if (m->hdr.type >= DLP_TYPE_MAX || !layouts[m->hdr.type].name ||
	    m->nstr > DL_PROTO_MAX_STRS)
		return -EINVAL;
	l = &layouts[m->hdr.type];
	len = DL_PROTO_HDR_LEN + l->fixed;
	for (unsigned i = 0; i < m->nstr; i++) {
		if (m->str[i].len > DL_PROTO_MAX_STR)
			return -EMSGSIZE;
		len += 2 + m->str[i].len;
	}
	if (len > cap || len > DL_PROTO_MAX_FRAME)
		return -EMSGSIZE;
	memset(p, 0, DL_PROTO_HDR_LEN + l->fixed);
	put_le(p, DL_PROTO_MAGIC, 4);
	put_le(p + 4, DL_PROTO_VERSION, 2);
	put_le(p + 6, m->hdr.type, 2);
	put_le(p + 8, len - DL_PROTO_HDR_LEN, 4);
	put_le(p + 12, m->hdr.id, 4);
	b = p + DL_PROTO_HDR_LEN;

	switch (m->hdr.type) {
	case DLP_LOCK:
	case DLP_UNLOCK:
	case DLP_GETLK:
		b[0] = m->kind;
		b[1] = m->ltype;
		b[2] = m->flags;
		put_le(b + 8, (uint64_t)m->l_start, 8);
		put_le(b + 16, (uint64_t)m->l_len, 8);
		break;
	case DLP_CLOSED:
		put_le(b, m->dev, 8);
		put_le(b + 8, m->ino, 8);
		break;
	case DLP_CANCEL:
		put_le(b, m->target_id, 4);
		break;
	case DLP_LIST:
	case DLP_BREAK:
	case DLP_FENCE:
		b[0] = m->flags;
		break;
	case DLP_REPLY:
	case DLP_ITEM:
		put_le(b, (uint32_t)m->err, 4);
		b[4] = m->found;
		b[5] = m->space;
		b[6] = m->ltype;
		b[7] = m->waiting;
		put_le(b + 8, m->start, 8);
		put_le(b + 16, m->end, 8);
		put_le(b + 24, m->owner, 8);
		put_le(b + 32, m->pid, 4);
		put_le(b + 40, m->token, 8);
		put_le(b + 48, (uint64_t)m->since_ms, 8);
		break;
	default:
		break;
	}
	b += l->fixed;
	for (unsigned i = 0; i < m->nstr; i++) {
		put_le(b, m->str[i].len, 2);
		if (m->str[i].len)
			memcpy(b + 2, m->str[i].p, m->str[i].len);
		b += 2 + m->str[i].len;
	}
	return (int)len;
}

void proto_str(struct dl_proto_msg *m, unsigned i, const char *s)
{
	size_t n = s ? strlen(s) : 0;

	if (i >= DL_PROTO_MAX_STRS)
		return;
	m->str[i].p = s ? s : "";
	/* too long: proto_encode() refuses it rather than cutting it */
	m->str[i].len = n > UINT16_MAX ? UINT16_MAX : (uint16_t)n;
	if (i >= m->nstr)
		m->nstr = i + 1;
}

bool proto_streq(const struct dl_proto_str *s, const char *c)
{
	size_t n = strlen(c);

	return s->len == n && memcmp(s->p, c, n) == 0;
}

/*
 * names.h - resource names as ZooKeeper znode components, and the
 * SHA-256 that makes long names fit.  The one header of backend/zk/ that
 * is not private: the unit tests (tests/unit/test_zk_names.c) use it.
 *
 * A resource is any byte string (a path relative to the mount root); a
 * znode component may not hold '/', NUL, nor be "." or "..", and should
 * stay short.  zk_name_encode() keeps [A-Za-z0-9._-] and writes every
 * other byte as %XX (so '%' itself is encoded and the map is one-to-one);
 * "." and ".." alone are encoded too, as is the 'h' of a name starting
 * with "h-", and the empty name is "%".  An encoding longer than
 * ZK_NAME_MAX becomes "h-" + the hex SHA-256 of the name: such names can
 * collide only through SHA-256, and the backend stores the full name in
 * every request node's data and ignores nodes of a different full name
 * anyway (a version node, CHROOT/v/NAME, keeps only a host id: two
 * names would share a version only through a SHA-256 collision).
 *
 * Pure: no I/O, no allocation, no ZooKeeper, no shared state, so no
 * locking: callable from any thread.  Does not know paths (the backend
 * prefixes CHROOT/r/ or CHROOT/v/, internal.h) nor node data (codec.c).
 */
#ifndef DL_ZK_NAMES_H
#define DL_ZK_NAMES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ZK_NAME_MAX 200		      /* longest plain encoding kept as is */
#define ZK_NAME_BUF (ZK_NAME_MAX + 1) /* room for any encoding + NUL */

struct zk_sha256 {
	uint32_t h[8];
	uint64_t len; /* bytes hashed so far */
	uint8_t buf[64];
	size_t nbuf;
};

void zk_sha256_init(struct zk_sha256 *c);
void zk_sha256_update(struct zk_sha256 *c, const void *data, size_t len);
void zk_sha256_final(struct zk_sha256 *c, uint8_t out[32]);

/*
 * zk_name_encode() - the znode component of resource @name (@len bytes)
 * into @out (ZK_NAME_BUF bytes).  Returns true when the result is a hash
 * (the name did not fit), false when it is the plain encoding.
 */
bool zk_name_encode(const char *name, size_t len, char out[ZK_NAME_BUF]);

/*
 * zk_name_decode() - the inverse for a plain encoding: writes at most
 * @outlen - 1 bytes and a NUL.  Returns the decoded length, or -1 when
 * @enc is a hash or malformed (not produced by zk_name_encode).
 */
long zk_name_decode(const char *enc, char *out, size_t outlen);

/* zk_hex() - @len bytes of @in as lower-case hex into @out (2*len+1) */
void zk_hex(const void *in, size_t len, char *out);

/* zk_unhex() - parse 2*n hex digits; returns n, or -1 when malformed or
 * longer than @outlen */
long zk_unhex(const char *in, size_t inlen, void *out, size_t outlen);

#endif /* DL_ZK_NAMES_H */

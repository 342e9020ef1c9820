/*
 * names.c - resource name -> znode component, and a small SHA-256
 * (FIPS 180-4) so that long names fit without a new dependency; hex.
 *
 * Collision-free: a plain encoding is one-to-one (every unsafe byte, '%'
 * included, becomes %XX with upper-case digits), never starts with "h-"
 * (a leading 'h' of "h-..." is written %68), is never "." or "..", and
 * the empty name is "%" alone, which no other encoding produces.
 *
 * See names.h for the encoding and why it is collision-free.
 *
 * Owns: the encoding, its inverse, SHA-256, hex.  Does not: build paths,
 * touch ZooKeeper, allocate.  Locking: none (pure; any thread).
 */
#include "backend/zk/names.h"

#include <string.h>

/* ---- SHA-256 --------------------------------------------------------- */

static const uint32_t sha_k[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1,
	0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3,
	0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
	0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
	0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
	0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
	0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
	0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
	0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, unsigned n)
{
	return (x >> n) | (x << (32 - n));
}

static void sha_block(struct zk_sha256 *c, const uint8_t *p)
{
	uint32_t w[64], a, b, cc, d, e, f, g, h;

	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
		       (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^
			      (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^
			      (w[i - 2] >> 10);

		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	a = c->h[0], b = c->h[1], cc = c->h[2], d = c->h[3];
	e = c->h[4], f = c->h[5], g = c->h[6], h = c->h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t s1 = ror(e, 6) ^ ror(e, 11) ^ ror(e, 25);
		uint32_t ch = (e & f) ^ (~e & g);
		uint32_t t1 = h + s1 + ch + sha_k[i] + w[i];
		uint32_t s0 = ror(a, 2) ^ ror(a, 13) ^ ror(a, 22);
		uint32_t maj = (a & b) ^ (a & cc) ^ (b & cc);
		uint32_t t2 = s0 + maj;

		h = g, g = f, f = e, e = d + t1;
		d = cc, cc = b, b = a, a = t1 + t2;
	}
	c->h[0] += a, c->h[1] += b, c->h[2] += cc, c->h[3] += d;
	c->h[4] += e, c->h[5] += f, c->h[6] += g, c->h[7] += h;
}

void zk_sha256_init(struct zk_sha256 *c)
{
	static const uint32_t iv[8] = {
		0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
		0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
	};

	memcpy(c->h, iv, sizeof(iv));
	c->len = 0;
	c->nbuf = 0;
}

void zk_sha256_update(struct zk_sha256 *c, const void *data, size_t len)
{
	const uint8_t *p = data;

	c->len += len;
	while (len) {
		size_t n = 64 - c->nbuf;

		if (n > len)
			n = len;
		memcpy(c->buf + c->nbuf, p, n);
		c->nbuf += n;
		p += n;
		len -= n;
		if (c->nbuf == 64) {
			sha_block(c, c->buf);
			c->nbuf = 0;
		}
	}
}

void zk_sha256_final(struct zk_sha256 *c, uint8_t out[32])
{
	uint64_t bits = c->len * 8;
	uint8_t pad = 0x80, zero = 0, lenb[8];

	zk_sha256_update(c, &pad, 1);
	while (c->nbuf != 56)
		zk_sha256_update(c, &zero, 1);
	for (int i = 0; i < 8; i++)
		lenb[i] = (uint8_t)(bits >> (56 - 8 * i));
	zk_sha256_update(c, lenb, 8);
	for (int i = 0; i < 8; i++) {
		out[4 * i] = (uint8_t)(c->h[i] >> 24);
		out[4 * i + 1] = (uint8_t)(c->h[i] >> 16);
		out[4 * i + 2] = (uint8_t)(c->h[i] >> 8);
		out[4 * i + 3] = (uint8_t)c->h[i];
	}
}

/* ---- names ----------------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

void zk_hex(const void *in, size_t len, char *out)
{
	const uint8_t *p = in;

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hexdig[p[i] >> 4];
		out[2 * i + 1] = hexdig[p[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

long zk_unhex(const char *in, size_t inlen, void *out, size_t outlen)
{
	uint8_t *o = out;

	if (inlen % 2 || inlen / 2 > outlen)
		return -1;
	for (size_t i = 0; i < inlen / 2; i++) {
		int hi = hexval(in[2 * i]), lo = hexval(in[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		o[i] = (uint8_t)(hi << 4 | lo);
	}
	return (long)(inlen / 2);
}

static bool name_safe(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

bool zk_name_encode(const char *name, size_t len, char out[ZK_NAME_BUF])
{
	/* "." and ".." are not valid znode names: encode their dots */
	static const char hexup[] = "0123456789ABCDEF";
	bool dots = (len == 1 && name[0] == '.') ||
		    (len == 2 && name[0] == '.' && name[1] == '.');
	/* plain encodings never start with "h-", the prefix of a hash */
	bool hprefix = len >= 2 && name[0] == 'h' && name[1] == '-';
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		bool plain = name_safe(c) && !dots && !(i == 0 && hprefix);

		if (o + (plain ? 1 : 3) > ZK_NAME_MAX)
			goto hash;
		if (plain) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hexup[c >> 4];
			out[o++] = hexup[c & 15];
		}
	}
	if (o == 0) {
		/* the empty name (the mount root itself) */
		memcpy(out, "%", 2);
		return false;
	}
	out[o] = '\0';
	return false;

hash : {
	struct zk_sha256 c;
	uint8_t d[32];

	zk_sha256_init(&c);
	zk_sha256_update(&c, name, len);
	zk_sha256_final(&c, d);
	memcpy(out, "h-", 2);
	zk_hex(d, sizeof(d), out + 2);
	return true;
}
}

long zk_name_decode(const char *enc, char *out, size_t outlen)
{
	size_t o = 0;

	if (strcmp(enc, "%") == 0) {
		if (outlen)
			out[0] = '\0';
		return 0;
	}
	if (strncmp(enc, "h-", 2) == 0)
		return -1;
	for (const char *p = enc; *p; p++) {
		int c;

		if (*p == '%') {
			int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);

			if (hi < 0 || lo < 0)
				return -1;
			c = hi << 4 | lo;
			p += 2;
		} else if (name_safe((unsigned char)*p)) {
			c = (unsigned char)*p;
		} else {
			return -1;
		}
		if (o + 1 >= outlen)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return (long)o;
}

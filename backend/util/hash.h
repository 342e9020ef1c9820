/*
 * hash.h - the non-cryptographic hashes of dlockfs, written once.
 *
 * dl_fnv1a() is 64-bit FNV-1a over bytes, for names (hash tables of
 * resources, backend keys derived from a name).  dl_hash_mix64() spreads
 * an integer key (an id, an inode number) over a power-of-two table.
 * Neither is keyed: never use them where a client chooses the input and
 * a collision would cost more than a longer chain (owner ids shown to
 * users are SipHash, in fs/lock/inspect.c).
 */
#ifndef DL_HASH_H
#define DL_HASH_H

#include <stddef.h>
#include <stdint.h>

#define DL_FNV_OFFSET 1469598103934665603ULL
#define DL_FNV_PRIME  1099511628211ULL

/* FNV-1a of @len bytes at @p, continuing from @h (DL_FNV_OFFSET to start) */
static inline uint64_t dl_fnv1a(uint64_t h, const void *p, size_t len)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < len; i++)
		h = (h ^ s[i]) * DL_FNV_PRIME;
	return h;
}

/* FNV-1a of the NUL-terminated @s, continuing from @h */
static inline uint64_t dl_fnv1a_str(uint64_t h, const char *s)
{
	while (*s)
		h = (h ^ (unsigned char)*s++) * DL_FNV_PRIME;
	return h;
}

/* Fibonacci hashing: the top @bits bits of @x times 2^64/phi */
static inline uint64_t dl_hash_mix64(uint64_t x, unsigned bits)
{
	return (x * 0x9e3779b97f4a7c15ULL) >> (64 - bits);
}

#endif /* DL_HASH_H */

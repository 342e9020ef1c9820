/*
 * text.c - what dlockctl prints of names it does not control (paths, lock
 * names, host ids, the daemon's reasons): escaped for a terminal, measured
 * for a table, or carried into JSON.
 *
 * Invariants: no control byte, bidirectional control or line separator
 * reaches the output unescaped; an escaped string reads back unambiguously
 * (the backslash itself is escaped); JSON strings are always valid UTF-8,
 * with the exact bytes alongside in hex when they were not.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/text.h"

/*
 * Write @n bytes of @s for a terminal: a control byte (< 0x20, 0x7f) and
 * the backslash itself come out escaped (\n, \t, \r, \\, \xHH), so a
 * name cannot add lines or terminal escapes to the output; with @keep_nl
 * newlines stay (the daemon's own line breaks).  Returns nothing; a write
 * error stays in @f's error flag.
 */
void text_escape(FILE *f, const char *s, size_t n, bool keep_nl)
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
 * @raw output the space too, so that fields never contain one.  Printable
 * UTF-8 passes only when the locale is UTF-8 (g_utf8).  Returns a malloc'd
 * string (NULL: out of memory) and its display width in *width.
 */
char *text_cell_escape(const char *s, size_t n, bool raw, size_t *width)
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
 * Returns a new reference, NULL when out of memory.
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

/*
 * Set @key of @obj to @n bytes of @s; when they are not UTF-8, also
 * KEY_hex: the exact bytes, two lowercase hex digits each.  Returns 0, or
 * -1 when out of memory.
 */
int text_json_set_bytes(json_t *obj, const char *key, const char *s, size_t n)
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

/*
 * An unsigned number: a JSON integer, or a string of its digits when it
 * does not fit jansson's (signed 64-bit) integers.  Returns a new
 * reference, NULL when out of memory.
 */
json_t *text_json_u64(uint64_t v)
{
	char b[24];

	if (v <= INT64_MAX)
		return json_integer((json_int_t)v);
	snprintf(b, sizeof(b), "%" PRIu64, v);
	return json_string(b);
}

/*
 * Print @j (NULL: it could not be built) and a newline to stdout, and drop
 * the reference.  Returns 0, or EX_DAEMON after "out of memory".
 */
int text_json_print(json_t *j)
{
	int ret = j ? json_dumpf(j, stdout, JSON_INDENT(2)) : -1;

	json_decref(j);
	if (ret < 0)
		return cli_fail(EX_DAEMON, "out of memory");
	putchar('\n');
	return 0;
}

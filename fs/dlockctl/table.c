/*
 * table.c - the locks table: the columns of `dlockctl locks` (their names,
 * alignment, defaults and help), the text or JSON value of a cell, and the
 * table itself, aligned like lslocks or raw (one space between fields).
 *
 * It only shows what it is given: the locks come from locks.c, already
 * complete (COMMAND filled in for our host's processes).  Every name from
 * the daemon goes through text_cell_escape() or JSON, never as it is.
 */
#include <inttypes.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "fs/ctl/proto.h"
#include "fs/dlockctl/cli.h"
#include "fs/dlockctl/table.h"
#include "fs/dlockctl/text.h"

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

/* the TYPE of @it: flock, posix, ofd or named */
static const char *item_type(const struct lk_item *it)
{
	if (it->space != 0)
		return it->ofd ? "ofd" : "posix";
	return it->path_len >= 5 && memcmp(it->path, "name:", 5) == 0 ? "named"
								      : "flock";
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
		return text_json_set_bytes(obj, key, it->path, it->path_len);
	case COL_HOST:
		return text_json_set_bytes(obj, key, it->host, it->host_len);
	case COL_COMMAND:
		if (!it->comm[0])
			return json_object_set_new(obj, key, json_null());
		return text_json_set_bytes(obj, key, it->comm,
					   strlen(it->comm));
	case COL_START:
		v = text_json_u64(it->start);
		break;
	case COL_END:
		v = it->end == UINT64_MAX ? json_null()
					  : text_json_u64(it->end);
		break;
	case COL_PID:
		v = json_integer(it->pid);
		break;
	case COL_TOKEN:
		v = it->waiting ? json_null() : text_json_u64(it->token);
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

/* choose the default columns; JSON gets them all.  Cannot fail. */
void table_default_columns(struct table_opts *o)
{
	for (size_t c = 0; c < NCOLS; c++)
		if (cols[c].dflt || o->json)
			o->sel[o->nsel++] = (enum col)c;
}

/*
 * Parse -o LIST (comma-separated, any case; "+LIST" adds to the default
 * columns) into @o.  0, or EX_USAGE after one line.
 */
int table_parse_columns(struct table_opts *o, const char *list)
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
			return cli_fail(EX_USAGE, "unknown column '%.*s'",
					(int)len, p);
		if (o->nsel == sizeof(o->sel) / sizeof(o->sel[0]))
			return cli_fail(EX_USAGE, "too many columns");
		o->sel[o->nsel++] = (enum col)c;
		if (!p[len])
			return 0;
		p += len + 1;
	}
}

/* returns whether @o shows column @c */
bool table_has_column(const struct table_opts *o, enum col c)
{
	for (size_t k = 0; k < o->nsel; k++)
		if (o->sel[k] == c)
			return true;
	return false;
}

/*
 * The chosen columns of @items as a JSON array of objects on stdout.
 * Returns 0, or EX_DAEMON after "out of memory".
 */
int table_print_json(const struct table_opts *o, const struct lk_items *items)
{
	json_t *arr = json_array();

	for (size_t i = 0; arr && i < items->n; i++) {
		json_t *obj = json_object();

		if (!obj || json_array_append_new(arr, obj) < 0)
			goto nomem;
		for (size_t k = 0; k < o->nsel; k++)
			if (cell_json(obj, &items->v[i], o->sel[k]) < 0)
				goto nomem;
	}
	return text_json_print(arr);
nomem:
	json_decref(arr);
	return cli_fail(EX_DAEMON, "out of memory");
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

/* the cells of row @r (0: the header, else item r - 1), escaped; 0, or
 * -1 when out of memory */
static int row_cells(const struct table_opts *o, const struct lk_items *items,
		     size_t r, char **cells, size_t *cw)
{
	for (size_t k = 0; k < o->nsel; k++) {
		char b[64];
		const char *s = cols[o->sel[k]].name;
		size_t n = strlen(s);

		if (r)
			cell_text(&items->v[r - 1], o->sel[k], b, sizeof(b), &s,
				  &n);
		cells[k] = text_cell_escape(s, n, o->raw, &cw[k]);
		if (!cells[k])
			return -1;
	}
	return 0;
}

/*
 * The chosen columns of @items as a table on stdout: aligned, or @o->raw.
 * Returns 0, or EX_DAEMON after "out of memory".
 */
int table_print(const struct table_opts *o, const struct lk_items *items)
{
	size_t nrows = items->n + 1, ncells = nrows * o->nsel;
	char **cells = calloc(ncells + 1, sizeof(*cells));
	size_t *cw = calloc(ncells + 1, sizeof(*cw));
	size_t w[64] = { 0 };
	int ret = 0;

	for (size_t r = 0; cells && cw && r < nrows && ret == 0; r++)
		ret = row_cells(o, items, r, cells + r * o->nsel,
				cw + r * o->nsel);
	if (!cells || !cw || ret) {
		ret = cli_fail(EX_DAEMON, "out of memory");
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

/* the "Columns:" part of --help, on stdout */
void table_help_columns(void)
{
	for (size_t c = 0; c < NCOLS; c++)
		printf("  %-8s %s%s\n", cols[c].name, cols[c].help,
		       cols[c].dflt ? "" : " (not shown by default)");
}

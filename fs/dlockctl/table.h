/*
 * table.h - the locks table (table_): one row per lock of a LIST answer,
 * the columns a user may choose, and the two ways to show them (an aligned
 * or raw table like lslocks, or a JSON array).
 */
#ifndef DLOCKCTL_TABLE_H
#define DLOCKCTL_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum col {
	COL_PATH,
	COL_TYPE,
	COL_MODE,
	COL_START,
	COL_END,
	COL_HOST,
	COL_PID,
	COL_COMMAND,
	COL_TOKEN,
	COL_SINCE,
	COL_WAITING,
	COL_OWNER,
	NCOLS,
};

/* one lock of the answer, copied out of the receive buffer */
struct lk_item {
	char *path, *host;
	size_t path_len, host_len;
	char comm[64]; /* "" when not known */
	uint8_t space, ltype, waiting, ofd;
	uint64_t start, end, owner, token;
	uint32_t pid;
	int64_t since_ms;
};

/* the locks of the answer, in the daemon's order */
struct lk_items {
	struct lk_item *v;
	size_t n, cap;
	bool nomem; /* an item was dropped: out of memory */
};

/* what to show: the chosen columns, in order, and how */
struct table_opts {
	enum col sel[64];
	size_t nsel;
	bool noheadings, raw, json;
};

void table_default_columns(struct table_opts *o);
int table_parse_columns(struct table_opts *o, const char *list);
bool table_has_column(const struct table_opts *o, enum col c);
int table_print(const struct table_opts *o, const struct lk_items *items);
int table_print_json(const struct table_opts *o, const struct lk_items *items);
void table_help_columns(void);

#endif /* DLOCKCTL_TABLE_H */

/*
 * text.h - text for people and for programs (text_): escaping what the
 * daemon and the backend hand us so that it cannot add lines or terminal
 * escapes, UTF-8 and display widths for the table, and JSON (jansson) for
 * bytes that may not be UTF-8.
 */
#ifndef DLOCKCTL_TEXT_H
#define DLOCKCTL_TEXT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

void text_escape(FILE *f, const char *s, size_t n, bool keep_nl);
char *text_cell_escape(const char *s, size_t n, bool raw, size_t *width);
int text_json_set_bytes(json_t *obj, const char *key, const char *s, size_t n);
json_t *text_json_u64(uint64_t v);
int text_json_print(json_t *j);

#endif /* DLOCKCTL_TEXT_H */

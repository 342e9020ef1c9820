/*
 * config.c - the daemon's "key = value" configuration file.
 *
 * Lines are "key = value", blank, or comments starting with '#'; blanks
 * around key and value are trimmed, a '\r' before '\n' is dropped, and
 * the value is everything after the first '=' ('#' inside a value is not
 * a comment: passwords may hold one).  Keys match [A-Za-z0-9_.-]+.
 *
 * Deliberately not done: sections, quoting, escapes, includes, and any
 * logging.  Values may be secrets, so no message built here ever quotes a
 * value or the text of a bad line, and secret-bearing buffers are wiped
 * before they are freed.
 *
 * Invariant: a failed dl_config_parse()/dl_config_load() leaves @cfg as it
 * was; entries appended by the call are undone.
 */
#include "backend/util/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* a configuration file is a few lines; refuse to slurp anything huge */
#define DL_CONFIG_MAX_SIZE (1024 * 1024)

static void dl_config_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void dl_config_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool dl_config_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool dl_config_key_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

/* Trim blanks off [*b, *e). */
static void dl_config_trim(const char **b, const char **e)
{
	while (*b < *e && dl_config_blank(**b))
		(*b)++;
	while (*e > *b && dl_config_blank((*e)[-1]))
		(*e)--;
}

static void dl_config_wipe(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

/* Drop the entries from index @n0 on. */
static void dl_config_truncate(struct dl_config *cfg, size_t n0)
{
	while (cfg->n > n0) {
		cfg->n--;
		free(cfg->v[cfg->n].key);
		dl_config_wipe(cfg->v[cfg->n].value);
	}
}

int dl_config_parse(struct dl_config *cfg, const char *text, const char *name,
		    char *err, size_t errlen)
{
	size_t n0 = cfg->n, lines = 1, lineno = 0;
	struct dl_config_entry *v;
	const char *p = text;

	/* one entry at most per line: allocate once, before appending */
	for (const char *q = text; *q; q++)
		lines += *q == '\n';
	if (lines > SIZE_MAX / sizeof(*v) - cfg->n)
		goto out_nomem;
	v = realloc(cfg->v, (cfg->n + lines) * sizeof(*v));
	if (!v)
		goto out_nomem;
	cfg->v = v;

	while (*p) {
		const char *nl = strchr(p, '\n');
		const char *end = nl ? nl : p + strlen(p);
		const char *kb = p, *ke, *vb, *ve = end, *eq;
		struct dl_config_entry *ent;

		lineno++;
		p = nl ? nl + 1 : end;
		dl_config_trim(&kb, &ve);
		if (kb == ve || *kb == '#')
			continue;
		eq = memchr(kb, '=', (size_t)(ve - kb));
		if (!eq) {
			dl_config_err(err, errlen,
				      "%s:%zu: expected \"key = value\"", name,
				      lineno);
			goto out_undo;
		}
		ke = eq;
		vb = eq + 1;
		dl_config_trim(&kb, &ke);
		dl_config_trim(&vb, &ve);
		if (kb == ke) {
			dl_config_err(err, errlen, "%s:%zu: empty key", name,
				      lineno);
			goto out_undo;
		}
		for (const char *c = kb; c < ke; c++) {
			if (!dl_config_key_char(*c)) {
				dl_config_err(err, errlen,
					      "%s:%zu: bad character in key "
					      "(allowed: A-Z a-z 0-9 _ . -)",
					      name, lineno);
				goto out_undo;
			}
		}
		ent = &cfg->v[cfg->n];
		ent->key = strndup(kb, (size_t)(ke - kb));
		ent->value = strndup(vb, (size_t)(ve - vb));
		if (!ent->key || !ent->value) {
			free(ent->key);
			dl_config_wipe(ent->value);
			goto out_undo_nomem;
		}
		cfg->n++;
	}
	return 0;

out_undo_nomem:
	dl_config_truncate(cfg, n0);
out_nomem:
	dl_config_err(err, errlen, "%s: out of memory", name);
	return -ENOMEM;
out_undo:
	dl_config_truncate(cfg, n0);
	return -EINVAL;
}

/*
 * Read all of @fd (a regular file of @size bytes) into a string of
 * *@len bytes.
 */
static int dl_config_slurp(int fd, size_t size, char **out, size_t *len)
{
	char *buf = malloc(size + 1);
	size_t got = 0;

	if (!buf)
		return -ENOMEM;
	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int ret = -errno;

			explicit_bzero(buf, got);
			free(buf);
			return ret;
		}
		if (r == 0)
			break; /* shrank under us: parse what is there */
		got += (size_t)r;
	}
	buf[got] = '\0';
	*out = buf;
	*len = got;
	return 0;
}

int dl_config_load(struct dl_config *cfg, const char *path, char *err,
		   size_t errlen)
{
	size_t n0 = cfg->n, len = 0;
	char *text = NULL;
	struct stat st;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		ret = -errno;
		dl_config_err(err, errlen, "cannot open %s: %s", path,
			      strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		dl_config_err(err, errlen, "cannot stat %s: %s", path,
			      strerror(-ret));
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		dl_config_err(err, errlen, "%s: not a regular file", path);
		goto out_close;
	}
	if (st.st_size > DL_CONFIG_MAX_SIZE) {
		ret = -EFBIG;
		dl_config_err(err, errlen, "%s: larger than %d bytes", path,
			      DL_CONFIG_MAX_SIZE);
		goto out_close;
	}
	ret = dl_config_slurp(fd, (size_t)st.st_size, &text, &len);
	if (ret < 0) {
		dl_config_err(err, errlen, "cannot read %s: %s", path,
			      strerror(-ret));
		goto out_close;
	}
	if (strlen(text) != len) {
		ret = -EINVAL;
		dl_config_err(err, errlen, "%s: contains a NUL byte", path);
		goto out_free;
	}
	ret = dl_config_parse(cfg, text, path, err, errlen);
	if (ret < 0)
		goto out_free;

	/* as ssh does for private keys: secrets only in a file kept private */
	if (st.st_mode & 077) {
		for (size_t i = n0; i < cfg->n; i++) {
			if (!dl_config_is_secret(cfg->v[i].key))
				continue;
			dl_config_err(err, errlen,
				      "%s: holds secret key \"%s\" but has "
				      "mode "
				      "%04o; run chmod 600 on it",
				      path, cfg->v[i].key,
				      (unsigned)(st.st_mode & 07777));
			dl_config_truncate(cfg, n0);
			ret = -EPERM;
			goto out_free;
		}
	}

out_free:
	explicit_bzero(text, len);
	free(text);
out_close:
	close(fd);
	return ret;
}

const char *dl_config_get(const struct dl_config *cfg, const char *key)
{
	for (size_t i = cfg->n; i-- > 0;)
		if (strcmp(cfg->v[i].key, key) == 0)
			return cfg->v[i].value;
	return NULL;
}

int dl_config_is_secret(const char *key)
{
	static const char suffix[] = "_password";
	size_t len = strlen(key), slen = sizeof(suffix) - 1;

	/* case-blind on purpose: a "Redis_Password" is still a secret */
	return strcasecmp(key, "password") == 0 ||
	       (len >= slen && strcasecmp(key + len - slen, suffix) == 0);
}

void dl_config_forget_secrets(struct dl_config *cfg)
{
	size_t kept = 0;

	/* keep the order of the others: the last value of a key wins */
	for (size_t i = 0; i < cfg->n; i++) {
		if (dl_config_is_secret(cfg->v[i].key)) {
			free(cfg->v[i].key);
			dl_config_wipe(cfg->v[i].value);
			continue;
		}
		cfg->v[kept++] = cfg->v[i];
	}
	cfg->n = kept;
}

void dl_config_free(struct dl_config *cfg)
{
	dl_config_truncate(cfg, 0);
	free(cfg->v);
	cfg->v = NULL;
	cfg->n = 0;
}

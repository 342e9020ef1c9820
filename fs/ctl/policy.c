/*
 * policy.c - the control socket's policy from the daemon's own
 * configuration (see policy.h).
 *
 * Syntax (config file "key = value", or -o key=value):
 *   paths = LABEL=PREFIX:LABEL=PREFIX...     files the shim may lock
 *           (a bare PREFIX is its own label)
 *   shared_names = PATTERN=GROUP:...         PATTERN: NAME or PREFIX*
 *   max_conns_per_uid = N, max_waits_per_uid = N, max_locks_per_uid = N
 * A label is not empty, does not start with "name:" and holds no control
 * byte; a shared pattern must not start with "DIGITS/" (the per-user
 * namespaces).
 */
#include "fs/ctl/policy.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/util/config.h"

static void ctlpol_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void ctlpol_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static bool ctlpol_has_ctl(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

/* "DIGITS/..." : a per-user namespace */
static bool ctlpol_is_uid_ns(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i > 0 && i < n && s[i] == '/';
}

static int ctlpol_add_path(struct ctl_policy *pol, const char *e, char *err,
			   size_t errlen)
{
	const char *eq = strchr(e, '=');
	const char *pre = eq ? eq + 1 : e; /* a bare PREFIX: its own label */
	size_t llen = eq ? (size_t)(eq - e) : 0;
	struct ctl_path *p;
	char *given, *real;
	size_t n;

	if ((eq && llen == 0) || strncmp(e, "name:", 5) == 0 ||
	    ctlpol_has_ctl(e, llen)) {
		ctlpol_err(err, errlen, "paths: bad label in '%s'", e);
		return -EINVAL;
	}
	if (pre[0] != '/') {
		ctlpol_err(err, errlen,
			   "paths: bad entry '%s': want LABEL=PREFIX, PREFIX "
			   "an absolute path",
			   e);
		return -EINVAL;
	}
	given = strdup(pre);
	if (!given)
		return -ENOMEM;
	n = strlen(given);
	while (n > 1 && given[n - 1] == '/')
		given[--n] = '\0';
	real = realpath(given, NULL);
	p = realloc(pol->paths, (pol->npaths + 1) * sizeof(*p));
	if (!p) {
		free(given);
		free(real);
		return -ENOMEM;
	}
	pol->paths = p;
	p = &pol->paths[pol->npaths];
	p->label = eq ? strndup(e, llen) : strdup(given);
	p->prefix = real ? real : given;
	if (real)
		free(given);
	if (!p->label) {
		free(p->prefix);
		return -ENOMEM;
	}
	p->len = strcmp(p->prefix, "/") == 0 ? 0 : strlen(p->prefix);
	pol->npaths++;
	return 0;
}

static int ctlpol_add_share(struct ctl_policy *pol, const char *e, char *err,
			    size_t errlen)
{
	const char *eq = strrchr(e, '=');
	struct ctl_share *s;
	struct group *g;
	gid_t gid;
	char *end;

	if (!eq || eq == e || !eq[1]) {
		ctlpol_err(err, errlen,
			   "shared_names: bad entry '%s': want NAME=GROUP", e);
		return -EINVAL;
	}
	if (ctlpol_is_uid_ns(e, (size_t)(eq - e)) ||
	    ctlpol_has_ctl(e, (size_t)(eq - e))) {
		ctlpol_err(err, errlen,
			   "shared_names: '%.*s' is reserved (DIGITS/ names "
			   "are the per-user namespaces)",
			   (int)(eq - e), e);
		return -EINVAL;
	}
	g = getgrnam(eq + 1);
	if (g) {
		gid = g->gr_gid;
	} else {
		unsigned long v;

		errno = 0;
		v = strtoul(eq + 1, &end, 10);
		if (errno || *end || v > INT_MAX) {
			ctlpol_err(err, errlen, "shared_names: no group '%s'",
				   eq + 1);
			return -EINVAL;
		}
		gid = (gid_t)v;
	}
	s = realloc(pol->shares, (pol->nshares + 1) * sizeof(*s));
	if (!s)
		return -ENOMEM;
	pol->shares = s;
	s = &pol->shares[pol->nshares];
	s->len = (size_t)(eq - e);
	s->wild = s->len && e[s->len - 1] == '*';
	if (s->wild)
		s->len--;
	s->pat = strndup(e, s->len);
	if (!s->pat)
		return -ENOMEM;
	s->gid = gid;
	pol->nshares++;
	return 0;
}

/* split @v on ':' and add each entry */
static int ctlpol_list(struct ctl_policy *pol, const char *v,
		       int (*add)(struct ctl_policy *, const char *, char *,
				  size_t),
		       char *err, size_t errlen)
{
	char *list = strdup(v), *save = NULL, *e;
	int ret = 0;

	if (!list)
		return -ENOMEM;
	for (e = strtok_r(list, ":", &save); e && ret == 0;
	     e = strtok_r(NULL, ":", &save))
		ret = add(pol, e, err, errlen);
	free(list);
	return ret;
}

static int ctlpol_uint(const struct dl_config *cfg, const char *key,
		       unsigned def, unsigned *out, char *err, size_t errlen)
{
	const char *v = cfg ? dl_config_get(cfg, key) : NULL;
	unsigned long n;
	char *end;

	*out = def;
	if (!v)
		return 0;
	errno = 0;
	n = strtoul(v, &end, 10);
	if (errno || end == v || *end || n > UINT_MAX / 2) {
		ctlpol_err(err, errlen, "%s: '%s' is not a count", key, v);
		return -EINVAL;
	}
	*out = (unsigned)n;
	return 0;
}

int ctlpol_load(struct ctl_policy *pol, const struct dl_config *cfg, char *err,
		size_t errlen)
{
	const char *v;
	int ret = 0;

	memset(pol, 0, sizeof(*pol));
	v = cfg ? dl_config_get(cfg, "paths") : NULL;
	if (v)
		ret = ctlpol_list(pol, v, ctlpol_add_path, err, errlen);
	v = cfg ? dl_config_get(cfg, "shared_names") : NULL;
	if (ret == 0 && v)
		ret = ctlpol_list(pol, v, ctlpol_add_share, err, errlen);
	if (ret == 0)
		ret = ctlpol_uint(cfg, "max_conns_per_uid", CTL_DEF_MAX_CONNS,
				  &pol->max_conns, err, errlen);
	if (ret == 0)
		ret = ctlpol_uint(cfg, "max_waits_per_uid", CTL_DEF_MAX_WAITS,
				  &pol->max_waits, err, errlen);
	if (ret == 0)
		ret = ctlpol_uint(cfg, "max_locks_per_uid", CTL_DEF_MAX_LOCKS,
				  &pol->max_locks, err, errlen);
	if (ret == -ENOMEM)
		ctlpol_err(err, errlen, "out of memory");
	if (ret < 0)
		ctlpol_free(pol);
	return ret;
}

void ctlpol_free(struct ctl_policy *pol)
{
	for (size_t i = 0; i < pol->npaths; i++) {
		free(pol->paths[i].label);
		free(pol->paths[i].prefix);
	}
	for (size_t i = 0; i < pol->nshares; i++)
		free(pol->shares[i].pat);
	free(pol->paths);
	free(pol->shares);
	memset(pol, 0, sizeof(*pol));
}

int ctlpol_name(const struct ctl_policy *pol, const char *path, char **out)
{
	const struct ctl_path *best = NULL;
	const char *rel;

	for (size_t i = 0; i < pol->npaths; i++) {
		const struct ctl_path *p = &pol->paths[i];

		if (strncmp(path, p->prefix, p->len) == 0 &&
		    (path[p->len] == '/' || path[p->len] == '\0') &&
		    (!best || p->len > best->len))
			best = p;
	}
	if (!best)
		return -ENOENT;
	rel = path + best->len;
	if (*rel == '/')
		rel++;
	if (asprintf(out, "%s%s%s", best->label, rel[0] ? "/" : "", rel) < 0)
		return -ENOMEM;
	return 0;
}

static bool ctlpol_dotdot(const char *s)
{
	for (const char *c = s; *c; c++)
		if (c[0] == '.' && c[1] == '.' && (c == s || c[-1] == '/') &&
		    (c[2] == '/' || c[2] == '\0'))
			return true;
	return false;
}

int ctlpol_local(const struct ctl_policy *pol, const char *mountpoint,
		 const char *res, char **out)
{
	const struct ctl_path *best = NULL;
	size_t blen = 0;

	if (ctlpol_dotdot(res) || strncmp(res, "name:", 5) == 0)
		return -ENOENT;
	for (size_t i = 0; i < pol->npaths; i++) {
		size_t n = strlen(pol->paths[i].label);

		if (strncmp(res, pol->paths[i].label, n) == 0 &&
		    (res[n] == '/' || res[n] == '\0') && (!best || n > blen)) {
			best = &pol->paths[i];
			blen = n;
		}
	}
	if (best) {
		const char *rel = res + blen;

		if (asprintf(out, "%s%s", best->len ? best->prefix : "",
			     rel[0] ? rel : (best->len ? "" : "/")) < 0)
			return -ENOMEM;
		return 0;
	}
	if (!mountpoint)
		return -ENOENT;
	if (asprintf(out, "%s/%s", mountpoint, res) < 0)
		return -ENOMEM;
	return 0;
}

bool ctlpol_shared(const struct ctl_policy *pol, const char *name, size_t len,
		   const gid_t *gids, size_t ngids)
{
	for (size_t i = 0; i < pol->nshares; i++) {
		const struct ctl_share *s = &pol->shares[i];
		bool match = s->wild ? len >= s->len &&
					       memcmp(name, s->pat, s->len) == 0
				     : len == s->len &&
					       memcmp(name, s->pat, len) == 0;

		if (!match)
			continue;
		for (size_t g = 0; g < ngids; g++)
			if (gids[g] == s->gid)
				return true;
	}
	return false;
}

int ctlpol_named(const struct ctl_policy *pol, const char *name, size_t len,
		 uid_t uid, const gid_t *gids, size_t ngids, char **out)
{
	int n;

	if (ctlpol_shared(pol, name, len, gids, ngids))
		n = asprintf(out, "name:%.*s", (int)len, name);
	else
		n = asprintf(out, "name:%u/%.*s", (unsigned)uid, (int)len,
			     name);
	return n < 0 ? -ENOMEM : 0;
}

/*
 * config.h - the daemon's key=value configuration file.
 *
 * One "key = value" per line; blank lines and lines starting with '#' are
 * ignored; surrounding blanks are trimmed.  The file may hold secrets, so
 * values are never logged and a file that group or others can read is
 * refused when it holds a secret key ("password" or any key ending in
 * "_password").
 */
#ifndef DL_CONFIG_H
#define DL_CONFIG_H

#include <stddef.h>

struct dl_config_entry {
	char *key;
	char *value;
};

struct dl_config {
	struct dl_config_entry *v;
	size_t n;
};

/*
 * dl_config_load() - read @path into @cfg (appending).
 * Returns 0, or a negative errno with a one-line reason in @err:
 * -ENOENT/-EACCES (cannot open), -EINVAL (syntax, with the line number),
 * -EPERM (secrets in a file readable by group or others).
 */
int dl_config_load(struct dl_config *cfg, const char *path, char *err,
		   size_t errlen);

/* dl_config_parse() - the same from a string (for tests); @name names it */
int dl_config_parse(struct dl_config *cfg, const char *text, const char *name,
		    char *err, size_t errlen);

/* dl_config_get() - the last value of @key, or NULL */
const char *dl_config_get(const struct dl_config *cfg, const char *key);

/* dl_config_is_secret() - true for keys whose values must never be shown */
int dl_config_is_secret(const char *key);

/*
 * dl_config_forget_secrets() - wipe and drop every secret entry, once the
 * backend has taken its own copy: the daemon keeps one copy of a password,
 * not two.  dl_config_get() then returns NULL for those keys.
 */
void dl_config_forget_secrets(struct dl_config *cfg);

void dl_config_free(struct dl_config *cfg);

#endif /* DL_CONFIG_H */

/*
 * policy.h - what the control socket lets a local client do, as the
 * daemon's root-owned configuration says (DESIGN §7): which files it
 * names and how (paths), which named-lock namespaces are shared with a
 * group (shared_names), and how much one uid may hold (limits).
 *
 * Nothing here comes from a client.  The client's DLOCK_PATHS only picks
 * which of its files it sends; the daemon names them from this table.
 * Pure: no I/O beyond realpath() and group lookups at load time.
 */
#ifndef DL_CTL_POLICY_H
#define DL_CTL_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct dl_config;

/* one "LABEL=PREFIX" of paths= */
struct ctl_path {
	char *label;  /* the cluster-wide name of the prefix */
	char *prefix; /* canonical (realpath when it exists), no trailing / */
	size_t len;   /* of prefix; 0 for "/" */
};

/* one "PATTERN=GROUP" of shared_names=: NAME, or PREFIX* for a family */
struct ctl_share {
	char *pat;
	size_t len; /* bytes to compare */
	bool wild;  /* a trailing '*': @len bytes are a prefix */
	gid_t gid;
};

struct ctl_policy {
	struct ctl_path *paths;
	size_t npaths;
	struct ctl_share *shares;
	size_t nshares;
	/* per uid, root excepted; 0 = no limit */
	unsigned max_conns, max_waits, max_locks;
};

#define CTL_DEF_MAX_CONNS 256
#define CTL_DEF_MAX_WAITS 4096
#define CTL_DEF_MAX_LOCKS 16384

/*
 * ctlpol_load() - read paths, shared_names, max_conns_per_uid,
 * max_waits_per_uid and max_locks_per_uid from @cfg (NULL: defaults).
 * Returns 0, or -EINVAL with a one-line reason in @err.
 */
int ctlpol_load(struct ctl_policy *pol, const struct dl_config *cfg, char *err,
		size_t errlen);

void ctlpol_free(struct ctl_policy *pol);

/*
 * ctlpol_name() - the cluster-wide name of the local file @path (canonical,
 * absolute): the label of the longest configured prefix it lies under,
 * plus the rest.  Returns 0 with a malloc'd *out, -ENOENT when no prefix
 * covers it, -ENOMEM.
 */
int ctlpol_name(const struct ctl_policy *pol, const char *path, char **out);

/*
 * ctlpol_local() - the reverse: the local path of resource @res under a
 * configured label (or under @mountpoint when not NULL and no label
 * matches).  Returns 0 with a malloc'd *out, -ENOENT, -ENOMEM.  A name
 * with a ".." component has no local path.
 */
int ctlpol_local(const struct ctl_policy *pol, const char *mountpoint,
		 const char *res, char **out);

/*
 * ctlpol_shared() - may a caller in groups @gids (@ngids of them) use the
 * shared namespace of name @name (@len bytes)?
 */
bool ctlpol_shared(const struct ctl_policy *pol, const char *name, size_t len,
		   const gid_t *gids, size_t ngids);

/*
 * ctlpol_named() - the resource of named lock @name (@len bytes) asked for
 * by @uid in groups @gids: "name:NAME" when shared with one of its groups,
 * else "name:UID/NAME" (its own namespace).  Returns 0 with a malloc'd
 * *out, or -ENOMEM.
 */
int ctlpol_named(const struct ctl_policy *pol, const char *name, size_t len,
		 uid_t uid, const gid_t *gids, size_t ngids, char **out);

#endif /* DL_CTL_POLICY_H */

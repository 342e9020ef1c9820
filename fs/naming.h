/*
 * naming.h - the cluster-wide name of a file, one rule for every front
 * end.
 *
 * A file in a dlockfs mount is named by its path relative to the directory
 * the mount serves (the mount names it through its backing directory, the
 * control socket through the mountpoint; both give the same bytes): the
 * root is "", a file "dir/file".  A file already unlinked when it is first
 * named has no path (/proc shows its old one with " (deleted)" appended,
 * which a live file may literally be called): it is "//unlinked/INODE",
 * which no relative path can be ("//" never occurs in one) and which every
 * host sharing the backing store computes alike.  The lock manager binds
 * the name at the first lock and keeps it while locks or waits remain, so
 * a file locked and then renamed or unlinked keeps its name.
 *
 * Files outside any mount are named by the daemon's paths= labels
 * (fs/ctl/policy.h).  No FUSE here; no allocation but the result.
 */
#ifndef DL_NAMING_H
#define DL_NAMING_H

/*
 * naming_fd_path() - the path /proc shows for @fd, malloc'd in *out.
 * Returns 0 or a negative errno.
 */
int naming_fd_path(int fd, char **out);

/*
 * naming_under() - @path relative to @base ("" for @base itself), or NULL
 * when @path does not lie under @base.  Points into @path.
 */
const char *naming_under(const char *path, const char *base);

/*
 * naming_of_fd() - the resource name of the file behind @fd, which must
 * lie under @base (or, when @base_fd >= 0, under wherever the directory
 * @base_fd is now: it may have been renamed).  Returns 0 with a malloc'd
 * *out, -ESTALE when the file lies under neither, or a negative errno.
 */
int naming_of_fd(int fd, const char *base, int base_fd, char **out);

#endif /* DL_NAMING_H */

/*
 * naming.c - the cluster-wide name of a file (naming.h).
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs/naming.h"

#define NAMING_UNLINKED "//unlinked/"

int naming_fd_path(int fd, char **out)
{
	char proc[64];
	size_t size = PATH_MAX;
	char *buf = NULL;
	ssize_t n;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	for (;;) {
		char *b = realloc(buf, size);

		if (!b) {
			free(buf);
			return -ENOMEM;
		}
		buf = b;
		n = readlink(proc, buf, size);
		if (n == -1) {
			int err = -errno;

			free(buf);
			return err;
		}
		if ((size_t)n < size)
			break;
		size *= 2;
	}
	buf[n] = '\0';
	*out = buf;
	return 0;
}

const char *naming_under(const char *path, const char *base)
{
	size_t blen = strlen(base);

	while (blen > 1 && base[blen - 1] == '/')
		blen--;
	if (blen == 1 && base[0] == '/')
		return path[0] == '/' ? path + 1 : NULL;
	if (strncmp(path, base, blen) != 0)
		return NULL;
	if (path[blen] == '\0')
		return path + blen;
	if (path[blen] != '/')
		return NULL;
	return path + blen + 1;
}

int naming_of_fd(int fd, const char *base, int base_fd, char **out)
{
	char *path, *now = NULL;
	const char *rel;
	struct stat st;
	int err;

	err = naming_fd_path(fd, &path);
	if (err)
		return err;
	rel = naming_under(path, base);
	if (!rel && base_fd >= 0 && naming_fd_path(base_fd, &now) == 0)
		rel = naming_under(path, now);
	if (!rel) {
		err = -ESTALE;
		goto out_free;
	}
	if (fstat(fd, &st) == 0 && st.st_nlink == 0 && !S_ISDIR(st.st_mode)) {
		if (asprintf(out, NAMING_UNLINKED "%ju", (uintmax_t)st.st_ino) <
		    0)
			err = -ENOMEM;
		goto out_free;
	}
	memmove(path, rel, strlen(rel) + 1);
	*out = path;
	path = NULL;
out_free:
	free(now);
	free(path);
	return err;
}

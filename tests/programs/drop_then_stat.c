/* drop_then_stat HOW DIR/FILE: stat and open the file, drop privileges by HOW with a raw system
 * call (no libc wrapper an agent could see), stat and open it again. Also access, eaccess, mkdir
 * DIR/made-WHEN, unlink DIR/absent, utimensat, and (on descriptors opened at the start) fstatat
 * of FILE from DIR's, fchmod/futimens/fchown on FILE's, each time. Prints the outcomes.
 *   setresuid  all uids to 65534        setfsuid  only the filesystem uid to 65534
 *   capdrop    keep uid 0, drop every capability (capset) */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void outcome(const char *when, const char *what, int r)
{
    printf("%s: %s=%d errno=%s\n", when, what, r, r ? strerror(errno) : "0");
}

static void show(const char *when, const char *path)
{
    char dir[4096], name[4200];
    struct stat st;

    struct statx stx;

    outcome(when, "stat", stat(path, &st));
    outcome(when, "statx", statx(AT_FDCWD, path, 0, STATX_BASIC_STATS, &stx));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    printf("%s: open=%s errno=%s\n", when, fd >= 0 ? "ok" : "-1", fd >= 0 ? "0" : strerror(errno));
    if (fd >= 0)
        close(fd);
    /* access(2) checks with the real ids, AT_EACCESS with the effective ones. */
    outcome(when, "access", access(path, R_OK));
    outcome(when, "eaccess", faccessat(AT_FDCWD, path, R_OK, AT_EACCESS));
    snprintf(dir, sizeof(dir), "%s", path);
    *strrchr(dir, '/') = '\0';
    snprintf(name, sizeof(name), "%s/made-%s", dir, when);
    outcome(when, "mkdir", mkdir(name, 0755));
    snprintf(name, sizeof(name), "%s/absent", dir);
    outcome(when, "unlink", unlink(name));
    snprintf(name, sizeof(name), "%s/nodir/x", dir);      /* a directory that does not resolve */
    outcome(when, "access in a missing dir", access(name, F_OK));
    outcome(when, "utimensat", utimensat(AT_FDCWD, path, NULL, AT_SYMLINK_NOFOLLOW));
}

/* On a descriptor opened before the drop: owner checks with the filesystem ids. */
static void show_fd(const char *when, int fd, int dirfd)
{
    struct stat st;

    outcome(when, "dirfd stat", fstatat(dirfd, "f", &st, 0));
    outcome(when, "fchmod", fchmod(fd, 0644));
    outcome(when, "futimens", futimens(fd, NULL));
    outcome(when, "fchown", fchown(fd, 0, 0));
}

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int kept = open(argv[2], O_RDONLY | O_CLOEXEC), dirfd = open(argv[2], O_RDONLY | O_CLOEXEC);
    if (kept < 0)
        return 5;
    {
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s", argv[2]);
        *strrchr(dir, '/') = '\0';
        close(dirfd);
        dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dirfd < 0)
            return 5;
    }
    show("before", argv[2]);
    show_fd("before", kept, dirfd);
    if (strcmp(argv[1], "setresuid") == 0) {
        if (syscall(SYS_setresuid, 65534, 65534, 65534) != 0)
            return 3;
    } else if (strcmp(argv[1], "setfsuid") == 0) {
        syscall(SYS_setfsuid, 65534);
    } else if (strcmp(argv[1], "capdrop") == 0) {
        struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
        struct __user_cap_data_struct d[2];
        memset(d, 0, sizeof(d));
        if (syscall(SYS_capset, &h, d) != 0)
            return 4;
    } else {
        return 2;
    }
    show("after", argv[2]);
    show_fd("after", kept, dirfd);
    return 0;
}

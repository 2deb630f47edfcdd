/* Calls through syscall(SYS_..., ...) with this architecture's numbers: the agent
 * must route the proxied ones to workers with the raw call's semantics. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *what, long r)
{
    printf("%s = %ld errno=%d\n", what, r, r < 0 ? errno : 0);
}

int main(void)
{
    struct stat st;
    char buf[64];
    long fd;

    fd = syscall(SYS_openat, AT_FDCWD, "data.txt", O_RDWR | O_CREAT | O_TRUNC, 0640);
    show("openat", fd);
    show("write", syscall(SYS_write, fd, "raw syscall\n", 12));
    show("lseek", syscall(SYS_lseek, fd, 4, SEEK_SET));
    show("read", syscall(SYS_read, fd, buf, sizeof(buf)));
    show("fstat", syscall(SYS_fstat, fd, &st));
    printf("size %ld mode %o\n", (long)st.st_size, st.st_mode & 07777);
    show("newfstatat", syscall(SYS_newfstatat, AT_FDCWD, "data.txt", &st, 0));
    show("mkdirat", syscall(SYS_mkdirat, AT_FDCWD, "d", 0750));
    show("renameat2", syscall(SYS_renameat2, AT_FDCWD, "data.txt", AT_FDCWD, "d/moved.txt", 0));
    show("unlinkat missing", syscall(SYS_unlinkat, AT_FDCWD, "data.txt", 0));
    show("utimensat of the descriptor (NULL name)", syscall(SYS_utimensat, fd, NULL, NULL, 0));
    show("utimensat of the descriptor with a flag", syscall(SYS_utimensat, fd, NULL, NULL, AT_SYMLINK_NOFOLLOW));
    show("close", syscall(SYS_close, fd));
    show("close again", syscall(SYS_close, fd));
    show("getpid is not proxied", syscall(SYS_getpid) > 0);
    return 0;
}

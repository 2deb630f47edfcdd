/*
 * cwd_mounts.c - what a program's calls leave behind must not pin its files: relative-path
 * calls inside a tmpfs mounted on a fresh directory, then umount (every way of letting go of a
 * file the worker touched: close, fclose, freopen, closedir, dup2 over it, close_range, a raw
 * close); and calls in a cwd that is then removed. Needs root (mount). Prints one line per
 * step; the same natively and under LSCA.
 *
 * Usage: cwd_mounts DIR [wait]   (DIR: an empty directory; "wait": after the removed-cwd
 * calls, print "ready" and wait for a line on stdin before exiting, so that a test can look
 * at what the workers hold meanwhile.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char mnt[4200];

static const char *errname(int r)
{
    static char buf[64];
    if (r == 0)
        return "0";
    snprintf(buf, sizeof buf, "-1 %s", errno == EBUSY ? "EBUSY" : errno == ENOENT ? "ENOENT" : strerror(errno));
    return buf;
}

static void mount_tmpfs(void)
{
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") != 0) {
        perror("mount");
        exit(2);
    }
}

/* umount right away: a worker still holding a file there makes it EBUSY. */
static void umount_now(const char *after)
{
    int r = umount(mnt);
    printf("umount after %s: %s\n", after, errname(r));
    if (r != 0)
        umount2(mnt, MNT_DETACH);       /* leave nothing mounted */
}

/* A file in the mount that the program's own calls (proxied ones) wrote and looked at. */
static int touched_file(const char *name)
{
    char path[4300];
    struct stat st;
    snprintf(path, sizeof path, "%s/%.64s", mnt, name);
    int fd = open(path, O_CREAT | O_RDWR, 0644);
    if (fd < 0 || write(fd, "data\n", 5) != 5 || fstat(fd, &st) != 0 || pread(fd, path, 5, 0) != 5) {
        perror(name);
        exit(2);
    }
    return fd;
}

int main(int argc, char **argv)
{
    struct stat st;
    char dir[4096], gone[4200];
    int r;
    if (argc < 2 || !realpath(argv[1], dir))
        return 2;
    snprintf(mnt, sizeof mnt, "%s/mnt", dir);
    snprintf(gone, sizeof gone, "%s/gone", dir);
    if (mkdir(mnt, 0755) != 0)
        return 2;

    /* Relative-path calls with the cwd inside the mount, then out of it. */
    mount_tmpfs();
    if (chdir(mnt) != 0)
        return 2;
    printf("stat .: %s\n", errname(stat(".", &st)));
    int fd = open("f", O_CREAT | O_WRONLY, 0644);
    printf("open f: %s\n", fd >= 0 ? "ok" : errname(-1));
    printf("write f: %zd\n", write(fd, "x", 1));
    printf("close f: %s\n", errname(close(fd)));
    r = stat("f", &st);
    printf("stat f: %s size %lld\n", errname(r), (long long)st.st_size);
    printf("mkdir sub: %s\n", errname(mkdir("sub", 0755)));
    printf("stat sub: %s\n", errname(stat("sub", &st)));
    printf("access f: %s\n", errname(access("f", R_OK)));
    printf("unlink f: %s\n", errname(unlink("f")));
    printf("rmdir sub: %s\n", errname(rmdir("sub")));
    if (chdir(dir) != 0)
        return 2;
    umount_now("relative calls inside it");

    /* Every way a program lets go of a file a worker had in hand. */
    mount_tmpfs();
    close(touched_file("closed"));
    umount_now("close");

    mount_tmpfs();
    FILE *f = fdopen(touched_file("fclosed"), "w");
    fclose(f);                          /* glibc's own close, which no interposition sees */
    umount_now("fclose");

    mount_tmpfs();
    f = fdopen(touched_file("reopened"), "w");
    f = freopen("/dev/null", "w", f);   /* glibc's own close of the file, then /dev/null */
    umount_now("freopen");
    fclose(f);

    mount_tmpfs();
    DIR *d = opendir(mnt);
    if (!d || fstatat(dirfd(d), ".", &st, 0) != 0 || faccessat(dirfd(d), ".", R_OK, 0) != 0)
        return 2;                       /* proxied calls on the directory's descriptor */
    closedir(d);                        /* glibc's own close */
    umount_now("closedir");

    mount_tmpfs();
    fd = touched_file("replaced");
    int null = open("/dev/null", O_RDONLY);
    dup2(null, fd);                     /* fd now names /dev/null: the file is closed */
    close(null);
    umount_now("dup2 over it");
    close(fd);

    mount_tmpfs();
    fd = touched_file("ranged");
    syscall(SYS_close_range, fd, fd, 0);
    umount_now("close_range");

    mount_tmpfs();
    fd = touched_file("raw");
    syscall(SYS_close, fd);
    umount_now("syscall(SYS_close)");
    rmdir(mnt);

    /* Calls in a cwd that is then removed. */
    if (mkdir(gone, 0755) != 0 || chdir(gone) != 0)
        return 2;
    fd = open("f", O_CREAT | O_WRONLY, 0644);
    printf("gone: open f: %s\n", fd >= 0 ? "ok" : errname(-1));
    printf("gone: write f: %zd\n", write(fd, "x", 1));
    printf("gone: fstat f: %s\n", errname(fstat(fd, &st)));
    printf("gone: close f: %s\n", errname(close(fd)));
    printf("gone: mkdir sub: %s\n", errname(mkdir("sub", 0755)));
    printf("gone: stat sub: %s\n", errname(stat("sub", &st)));
    printf("gone: unlink f: %s\n", errname(unlink("f")));
    printf("gone: rmdir sub: %s\n", errname(rmdir("sub")));
    printf("gone: rmdir cwd: %s\n", errname(rmdir(gone)));
    r = stat(".", &st);
    printf("gone: stat . links: %s %ld\n", errname(r), (long)st.st_nlink);
    fd = open("g", O_CREAT | O_WRONLY, 0644);
    printf("gone: open g: %s\n", fd >= 0 ? "ok" : errname(-1));
    printf("gone: mkdir h: %s\n", errname(mkdir("h", 0755)));
    char cwd[4200];
    printf("gone: getcwd: %s\n", getcwd(cwd, sizeof cwd) ? "ok" : errname(-1));
    if (argc > 2 && strcmp(argv[2], "wait") == 0) {
        printf("ready\n");
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin))
            return 3;
    }
    return 0;
}

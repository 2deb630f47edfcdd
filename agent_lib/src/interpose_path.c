/*
 * interpose_path.c - calls that name paths: the stat family, statx, access, mkdir,
 * rmdir, unlink, rename, link, symlink, readlink, chmod, chown, truncate, utimensat,
 * chdir/fchdir and getcwd, with the 64-bit, __x*stat and fortified names glibc exports.
 *
 * The worker resolves the path against the program's cwd (or dirfd) with the
 * program's credentials. chdir/fchdir change the program's own process: they run
 * natively and the worker is told (for traces and counts).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#if defined(__x86_64__)
#define NATIVE_STAT_VER 1
#else
#define NATIVE_STAT_VER 0
#endif

extern void __chk_fail(void) __attribute__((noreturn));

DECLARE_REAL(fstatat);
DECLARE_REAL(statx);
DECLARE_REAL(faccessat);
DECLARE_REAL(mkdirat);
DECLARE_REAL(unlinkat);
DECLARE_REAL(renameat2);
DECLARE_REAL(linkat);
DECLARE_REAL(symlinkat);
DECLARE_REAL(readlinkat);
DECLARE_REAL(fchmodat);
DECLARE_REAL(fchmod);
DECLARE_REAL(fchownat);
DECLARE_REAL(fchown);
DECLARE_REAL(truncate);
DECLARE_REAL(utimensat);
DECLARE_REAL(chdir);
DECLARE_REAL(fchdir);
DECLARE_REAL(getcwd);

/* A path call with up to two paths and four scalar arguments. Returns 1 when the worker
 * answered (the result in *result, errno set); out/out_len receive data[] on success. */
static int path_call(enum lsca_op op, const char *p1, const char *p2, uint64_t a0, uint64_t a1,
                     uint64_t a2, uint64_t a3, void *out, size_t out_len, long *result)
{
    struct lsca_call c;

    if (!lsca_begin(&c, op))
        return 0;
    if ((p1 && lsca_put_path(&c, p1) < 0) || (p2 && lsca_put_path(&c, p2) < 0)) {
        lsca_abandon(&c);
        return 0;
    }
    c.slot->args[0] = a0;
    c.slot->args[1] = a1;
    c.slot->args[2] = a2;
    c.slot->args[3] = a3;
    if (!lsca_exchange(&c)) {
        lsca_end(&c);
        return 0;
    }
    if (out && c.slot->result >= 0 && c.slot->data_len <= out_len)
        memcpy(out, c.slot->data, c.slot->data_len);
    *result = lsca_end(&c);
    return 1;
}

#define ARG(x) ((uint64_t)(int64_t)(x))

/* ---- stat family ---- */

int fstatat(int dirfd, const char *path, struct stat *buf, int flags)
{
    long r;
    if (!lsca_bad_pointer(buf, sizeof(*buf)) &&
        path_call(LSCA_OP_FSTATAT, path, NULL, ARG(dirfd), ARG(flags), 0, 0, buf, sizeof(*buf), &r))
        return (int)r;
    return REAL(fstatat)(dirfd, path, buf, flags);
}

int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags)
{
    return fstatat(dirfd, path, (struct stat *)buf, flags);
}

int stat(const char *path, struct stat *buf)
{
    return fstatat(AT_FDCWD, path, buf, 0);
}

int stat64(const char *path, struct stat64 *buf)
{
    return fstatat(AT_FDCWD, path, (struct stat *)buf, 0);
}

int lstat(const char *path, struct stat *buf)
{
    return fstatat(AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW);
}

int lstat64(const char *path, struct stat64 *buf)
{
    return fstatat(AT_FDCWD, path, (struct stat *)buf, AT_SYMLINK_NOFOLLOW);
}

/* Pre-2.33 binaries call the versioned entries; another version is not ours to convert. */
DECLARE_REAL(__xstat);
DECLARE_REAL(__lxstat);
DECLARE_REAL(__fxstatat);
extern int __xstat(int ver, const char *path, struct stat *buf);
extern int __lxstat(int ver, const char *path, struct stat *buf);
extern int __fxstatat(int ver, int dirfd, const char *path, struct stat *buf, int flags);

int __xstat(int ver, const char *path, struct stat *buf)
{
    return ver == NATIVE_STAT_VER ? stat(path, buf) : REAL(__xstat)(ver, path, buf);
}

int __xstat64(int ver, const char *path, struct stat *buf) __attribute__((alias("__xstat")));

int __lxstat(int ver, const char *path, struct stat *buf)
{
    return ver == NATIVE_STAT_VER ? lstat(path, buf) : REAL(__lxstat)(ver, path, buf);
}

int __lxstat64(int ver, const char *path, struct stat *buf) __attribute__((alias("__lxstat")));

int __fxstatat(int ver, int dirfd, const char *path, struct stat *buf, int flags)
{
    return ver == NATIVE_STAT_VER ? fstatat(dirfd, path, buf, flags)
                                  : REAL(__fxstatat)(ver, dirfd, path, buf, flags);
}

int __fxstatat64(int ver, int dirfd, const char *path, struct stat *buf, int flags)
    __attribute__((alias("__fxstatat")));

int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
{
    long r;
    if (!lsca_bad_pointer(buf, sizeof(*buf)) &&
        path_call(LSCA_OP_STATX, path, NULL, ARG(dirfd), ARG(flags), mask, 0, buf, sizeof(*buf), &r))
        return (int)r;
    return REAL(statx)(dirfd, path, flags, mask, buf);
}

/* ---- access ---- */

int faccessat(int dirfd, const char *path, int mode, int flags)
{
    long r;
    if (path_call(LSCA_OP_FACCESSAT, path, NULL, ARG(dirfd), ARG(mode), ARG(flags), 0, NULL, 0, &r))
        return (int)r;
    return REAL(faccessat)(dirfd, path, mode, flags);
}

int access(const char *path, int mode)
{
    return faccessat(AT_FDCWD, path, mode, 0);
}

int euidaccess(const char *path, int mode)
{
    return faccessat(AT_FDCWD, path, mode, AT_EACCESS);
}

int eaccess(const char *path, int mode) __attribute__((alias("euidaccess")));

/* ---- directories and names ---- */

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    long r;
    if (path_call(LSCA_OP_MKDIRAT, path, NULL, ARG(dirfd), mode, 0, 0, NULL, 0, &r))
        return (int)r;
    return REAL(mkdirat)(dirfd, path, mode);
}

int mkdir(const char *path, mode_t mode)
{
    return mkdirat(AT_FDCWD, path, mode);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    long r;
    if (path_call(LSCA_OP_UNLINKAT, path, NULL, ARG(dirfd), ARG(flags), 0, 0, NULL, 0, &r))
        return (int)r;
    return REAL(unlinkat)(dirfd, path, flags);
}

int unlink(const char *path)
{
    return unlinkat(AT_FDCWD, path, 0);
}

int rmdir(const char *path)
{
    return unlinkat(AT_FDCWD, path, AT_REMOVEDIR);
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
    long r;
    /* Both paths are needed: a NULL one is the kernel's EFAULT to give. */
    if (oldpath && newpath &&
        path_call(LSCA_OP_RENAMEAT2, oldpath, newpath, ARG(olddirfd), ARG(newdirfd), flags, 0, NULL, 0, &r))
        return (int)r;
    return REAL(renameat2)(olddirfd, oldpath, newdirfd, newpath, flags);
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    return renameat2(olddirfd, oldpath, newdirfd, newpath, 0);
}

int rename(const char *oldpath, const char *newpath)
{
    return renameat2(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0);
}

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
    long r;
    if (oldpath && newpath &&
        path_call(LSCA_OP_LINKAT, oldpath, newpath, ARG(olddirfd), ARG(newdirfd), ARG(flags), 0, NULL, 0, &r))
        return (int)r;
    return REAL(linkat)(olddirfd, oldpath, newdirfd, newpath, flags);
}

int link(const char *oldpath, const char *newpath)
{
    return linkat(AT_FDCWD, oldpath, AT_FDCWD, newpath, 0);
}

int symlinkat(const char *target, int newdirfd, const char *linkpath)
{
    long r;
    if (target && linkpath &&
        path_call(LSCA_OP_SYMLINKAT, target, linkpath, ARG(newdirfd), 0, 0, 0, NULL, 0, &r))
        return (int)r;
    return REAL(symlinkat)(target, newdirfd, linkpath);
}

int symlink(const char *target, const char *linkpath)
{
    return symlinkat(target, AT_FDCWD, linkpath);
}

ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t bufsiz)
{
    struct lsca_call c;

    if (lsca_bad_pointer(buf, bufsiz) || bufsiz > LSCA_INLINE_MAX) {
        lsca_count_passthrough(LSCA_OP_READLINKAT);
    } else if (lsca_begin(&c, LSCA_OP_READLINKAT)) {
        if (lsca_put_path(&c, path) < 0) {
            lsca_abandon(&c);
        } else {
            c.slot->args[0] = ARG(dirfd);
            c.slot->args[1] = bufsiz;
            if (lsca_exchange(&c)) {
                long n = c.slot->result;
                if (n > 0 && (size_t)n <= bufsiz)
                    memcpy(buf, c.slot->data, (size_t)n);
                return lsca_end(&c);
            }
            lsca_end(&c);
        }
    }
    return REAL(readlinkat)(dirfd, path, buf, bufsiz);
}

ssize_t readlink(const char *path, char *buf, size_t bufsiz)
{
    return readlinkat(AT_FDCWD, path, buf, bufsiz);
}

ssize_t __readlink_chk(const char *path, char *buf, size_t bufsiz, size_t buflen)
{
    if (bufsiz > buflen)
        __chk_fail();
    return readlinkat(AT_FDCWD, path, buf, bufsiz);
}

ssize_t __readlinkat_chk(int dirfd, const char *path, char *buf, size_t bufsiz, size_t buflen)
{
    if (bufsiz > buflen)
        __chk_fail();
    return readlinkat(dirfd, path, buf, bufsiz);
}

/* ---- attributes ---- */

int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
{
    long r;
    if (path_call(LSCA_OP_FCHMODAT, path, NULL, ARG(dirfd), mode, ARG(flags), 0, NULL, 0, &r))
        return (int)r;
    return REAL(fchmodat)(dirfd, path, mode, flags);
}

int chmod(const char *path, mode_t mode)
{
    return fchmodat(AT_FDCWD, path, mode, 0);
}

int fchmod(int fd, mode_t mode)
{
    long r;
    if (path_call(LSCA_OP_FCHMOD, NULL, NULL, ARG(fd), mode, 0, 0, NULL, 0, &r))
        return (int)r;
    return REAL(fchmod)(fd, mode);
}

int fchownat(int dirfd, const char *path, uid_t owner, gid_t group, int flags)
{
    long r;
    if (path_call(LSCA_OP_FCHOWNAT, path, NULL, ARG(dirfd), ARG((int)owner), ARG((int)group), ARG(flags),
                  NULL, 0, &r))
        return (int)r;
    return REAL(fchownat)(dirfd, path, owner, group, flags);
}

int chown(const char *path, uid_t owner, gid_t group)
{
    return fchownat(AT_FDCWD, path, owner, group, 0);
}

int lchown(const char *path, uid_t owner, gid_t group)
{
    return fchownat(AT_FDCWD, path, owner, group, AT_SYMLINK_NOFOLLOW);
}

int fchown(int fd, uid_t owner, gid_t group)
{
    long r;
    if (path_call(LSCA_OP_FCHOWN, NULL, NULL, ARG(fd), ARG((int)owner), ARG((int)group), 0, NULL, 0, &r))
        return (int)r;
    return REAL(fchown)(fd, owner, group);
}

int truncate(const char *path, off_t length)
{
    long r;
    if (path_call(LSCA_OP_TRUNCATE, path, NULL, ARG(length), 0, 0, 0, NULL, 0, &r))
        return (int)r;
    return REAL(truncate)(path, length);
}

int truncate64(const char *path, off_t length) __attribute__((alias("truncate")));

/* utimensat and futimens: the kernel takes a NULL path (the dirfd itself), glibc's
 * public utimensat does not (EINVAL): only futimens sends one. */
static int proxy_utimensat(int dirfd, const char *path, const struct timespec times[2], int flags, int *answered)
{
    struct lsca_call c;

    *answered = 0;
    if (times && lsca_bad_pointer(times, 2 * sizeof(*times))) {
        lsca_count_passthrough(LSCA_OP_UTIMENSAT);
        return 0;
    }
    if (!lsca_begin(&c, LSCA_OP_UTIMENSAT))
        return 0;
    if (times) {
        memcpy(c.slot->data, times, 2 * sizeof(*times));
        c.slot->data_len = 2 * sizeof(*times);
    }
    if (path && lsca_put_path(&c, path) < 0) {
        lsca_abandon(&c);
        return 0;
    }
    c.slot->args[0] = ARG(dirfd);
    c.slot->args[1] = ARG(flags);
    c.slot->args[2] = times != NULL;
    c.slot->args[3] = path != NULL;
    *answered = lsca_exchange(&c);
    return (int)lsca_end(&c);
}

DECLARE_REAL(futimens);

int utimensat(int dirfd, const char *path, const struct timespec times[2], int flags)
{
    int answered, r = 0;
    if (path)
        r = proxy_utimensat(dirfd, path, times, flags, &answered);
    return path && answered ? r : REAL(utimensat)(dirfd, path, times, flags);
}

int futimens(int fd, const struct timespec times[2])
{
    int answered;
    int r = proxy_utimensat(fd, NULL, times, 0, &answered);
    return answered ? r : REAL(futimens)(fd, times);
}

/* ---- working directory ---- */

/* Only the program can change its own cwd: natively, then the worker is told. */
static void tell_worker(enum lsca_op op, const char *path, int fd, int result, int err)
{
    struct lsca_call c;

    if (!lsca_begin(&c, op))
        return;
    if (path && lsca_put_path(&c, path) < 0)
        c.slot->data_len = 0;
    c.slot->args[0] = ARG(fd);
    c.slot->args[1] = ARG(result);
    c.slot->args[2] = ARG(err);
    lsca_exchange(&c);
    lsca_end(&c);
}

int chdir(const char *path)
{
    int r = REAL(chdir)(path);
    int err = errno;
    tell_worker(LSCA_OP_CHDIR, path, -1, r, err);
    errno = err;
    return r;
}

int fchdir(int fd)
{
    if (lsca_agent_fd(fd)) {
        errno = EBADF;
        return -1;
    }
    int r = REAL(fchdir)(fd);
    int err = errno;
    tell_worker(LSCA_OP_FCHDIR, NULL, fd, r, err);
    errno = err;
    return r;
}

char *getcwd(char *buf, size_t size)
{
    struct lsca_call c;

    /* getcwd(NULL, n) allocates: glibc's business, natively. */
    if (!buf || lsca_bad_pointer(buf, size) || size > LSCA_INLINE_MAX) {
        lsca_count_passthrough(LSCA_OP_GETCWD);
    } else if (lsca_begin(&c, LSCA_OP_GETCWD)) {
        c.slot->args[0] = size;
        if (lsca_exchange(&c)) {
            long n = c.slot->result;
            if (n > 0 && (size_t)n <= size)
                memcpy(buf, c.slot->data, (size_t)n);
            return lsca_end(&c) < 0 ? NULL : buf;
        }
        lsca_end(&c);
    }
    return REAL(getcwd)(buf, size);
}

char *__getcwd_chk(char *buf, size_t size, size_t buflen)
{
    if (size > buflen)
        __chk_fail();
    return getcwd(buf, size);
}

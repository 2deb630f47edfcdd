/*
 * interpose_path.c - calls that name paths: the stat family, statx, access, mkdir,
 * rmdir, unlink, rename, link, symlink, readlink, chmod, chown, truncate, utimensat,
 * chdir/fchdir and getcwd, with the 64-bit, __x*stat and fortified names glibc exports.
 *
 * The worker resolves the path against the program's cwd (or dirfd) with the
 * program's credentials. A path, out-struct or buffer that would fault sends the call to
 * the kernel natively (EFAULT there, as natively). chdir/fchdir change the program's own process: they run
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

    int takes_path = lsca_ops[op].npaths >= 1;
    int takes_two = lsca_ops[op].npaths == 2;

    if (!lsca_begin(&c, op))
        return 0;
    /* A NULL path goes to the native call, whose own check gives the errno (EFAULT...). */
    if ((takes_path && lsca_put_path(&c, p1) < 0) || (takes_two && lsca_put_path(&c, p2) < 0)) {
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

/* Proxy the call, or run the very glibc function the program called: wrappers differ
 * in their own checks (stat(NULL) is EFAULT, fstatat(AT_FDCWD, NULL, ...) EINVAL). */
#define PROXY_OR_REAL(native, op, p1, p2, a0, a1, a2, a3, out, out_len)            \
    do {                                                                           \
        long r_;                                                                   \
        if (path_call(op, p1, p2, a0, a1, a2, a3, out, out_len, &r_))              \
            return r_;                                                             \
        return native;                                                             \
    } while (0)

/* ---- stat family ---- */

/* A stat buffer that would fault runs natively: the kernel says EFAULT. */
#define STAT_OR_REAL(native, dirfd, path, buf, flags)                                        \
    do {                                                                                     \
        if (!lsca_user_writable(buf, sizeof(struct stat))) {                                 \
            lsca_count_passthrough(LSCA_OP_FSTATAT);                                         \
            return native;                                                                   \
        }                                                                                    \
        PROXY_OR_REAL(native, LSCA_OP_FSTATAT, path, NULL, ARG(dirfd), ARG(flags), 0, 0,    \
                      buf, sizeof(struct stat));                                             \
    } while (0)

DECLARE_REAL(stat);
DECLARE_REAL(lstat);

int fstatat(int dirfd, const char *path, struct stat *buf, int flags)
{
    STAT_OR_REAL(REAL(fstatat)(dirfd, path, buf, flags), dirfd, path, buf, flags);
}

int fstatat64(int dirfd, const char *path, struct stat64 *buf, int flags)
{
    return fstatat(dirfd, path, (struct stat *)buf, flags);
}

int stat(const char *path, struct stat *buf)
{
    STAT_OR_REAL(REAL(stat)(path, buf), AT_FDCWD, path, buf, 0);
}

int stat64(const char *path, struct stat64 *buf)
{
    return stat(path, (struct stat *)buf);
}

int lstat(const char *path, struct stat *buf)
{
    STAT_OR_REAL(REAL(lstat)(path, buf), AT_FDCWD, path, buf, AT_SYMLINK_NOFOLLOW);
}

int lstat64(const char *path, struct stat64 *buf)
{
    return lstat(path, (struct stat *)buf);
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
    if (lsca_user_writable(buf, sizeof(*buf)) &&
        path_call(LSCA_OP_STATX, path, NULL, ARG(dirfd), ARG(flags), mask, 0, buf, sizeof(*buf), &r))
        return (int)r;
    return REAL(statx)(dirfd, path, flags, mask, buf);
}

/* ---- access ---- */

DECLARE_REAL(access);
DECLARE_REAL(euidaccess);

int faccessat(int dirfd, const char *path, int mode, int flags)
{
    PROXY_OR_REAL(REAL(faccessat)(dirfd, path, mode, flags), LSCA_OP_FACCESSAT, path, NULL, ARG(dirfd),
                  ARG(mode), ARG(flags), 0, NULL, 0);
}

int access(const char *path, int mode)
{
    PROXY_OR_REAL(REAL(access)(path, mode), LSCA_OP_FACCESSAT, path, NULL, ARG(AT_FDCWD), ARG(mode), 0, 0,
                  NULL, 0);
}

int euidaccess(const char *path, int mode)
{
    PROXY_OR_REAL(REAL(euidaccess)(path, mode), LSCA_OP_FACCESSAT, path, NULL, ARG(AT_FDCWD), ARG(mode),
                  ARG(AT_EACCESS), 0, NULL, 0);
}

int eaccess(const char *path, int mode) __attribute__((alias("euidaccess")));

/* ---- directories and names ---- */

DECLARE_REAL(mkdir);
DECLARE_REAL(unlink);
DECLARE_REAL(rmdir);

int mkdirat(int dirfd, const char *path, mode_t mode)
{
    PROXY_OR_REAL(REAL(mkdirat)(dirfd, path, mode), LSCA_OP_MKDIRAT, path, NULL, ARG(dirfd), mode, 0, 0, NULL, 0);
}

int mkdir(const char *path, mode_t mode)
{
    PROXY_OR_REAL(REAL(mkdir)(path, mode), LSCA_OP_MKDIRAT, path, NULL, ARG(AT_FDCWD), mode, 0, 0, NULL, 0);
}

int unlinkat(int dirfd, const char *path, int flags)
{
    PROXY_OR_REAL(REAL(unlinkat)(dirfd, path, flags), LSCA_OP_UNLINKAT, path, NULL, ARG(dirfd), ARG(flags),
                  0, 0, NULL, 0);
}

int unlink(const char *path)
{
    PROXY_OR_REAL(REAL(unlink)(path), LSCA_OP_UNLINKAT, path, NULL, ARG(AT_FDCWD), 0, 0, 0, NULL, 0);
}

int rmdir(const char *path)
{
    PROXY_OR_REAL(REAL(rmdir)(path), LSCA_OP_UNLINKAT, path, NULL, ARG(AT_FDCWD), ARG(AT_REMOVEDIR), 0, 0,
                  NULL, 0);
}

/* A NULL path in a two-path call fails lsca_put_path, so it runs natively (EFAULT). */
DECLARE_REAL(renameat);
DECLARE_REAL(rename);
DECLARE_REAL(link);
DECLARE_REAL(symlink);

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
{
    PROXY_OR_REAL(REAL(renameat2)(olddirfd, oldpath, newdirfd, newpath, flags), LSCA_OP_RENAMEAT2, oldpath,
                  newpath, ARG(olddirfd), ARG(newdirfd), flags, 0, NULL, 0);
}

int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
    PROXY_OR_REAL(REAL(renameat)(olddirfd, oldpath, newdirfd, newpath), LSCA_OP_RENAMEAT2, oldpath, newpath,
                  ARG(olddirfd), ARG(newdirfd), 0, 0, NULL, 0);
}

int rename(const char *oldpath, const char *newpath)
{
    PROXY_OR_REAL(REAL(rename)(oldpath, newpath), LSCA_OP_RENAMEAT2, oldpath, newpath, ARG(AT_FDCWD),
                  ARG(AT_FDCWD), 0, 0, NULL, 0);
}

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
    PROXY_OR_REAL(REAL(linkat)(olddirfd, oldpath, newdirfd, newpath, flags), LSCA_OP_LINKAT, oldpath, newpath,
                  ARG(olddirfd), ARG(newdirfd), ARG(flags), 0, NULL, 0);
}

int link(const char *oldpath, const char *newpath)
{
    PROXY_OR_REAL(REAL(link)(oldpath, newpath), LSCA_OP_LINKAT, oldpath, newpath, ARG(AT_FDCWD),
                  ARG(AT_FDCWD), 0, 0, NULL, 0);
}

int symlinkat(const char *target, int newdirfd, const char *linkpath)
{
    PROXY_OR_REAL(REAL(symlinkat)(target, newdirfd, linkpath), LSCA_OP_SYMLINKAT, target, linkpath,
                  ARG(newdirfd), 0, 0, 0, NULL, 0);
}

int symlink(const char *target, const char *linkpath)
{
    PROXY_OR_REAL(REAL(symlink)(target, linkpath), LSCA_OP_SYMLINKAT, target, linkpath, ARG(AT_FDCWD),
                  0, 0, 0, NULL, 0);
}

static int proxy_readlinkat(int dirfd, const char *path, char *buf, size_t bufsiz, long *result)
{
    struct lsca_call c;

    if (bufsiz > LSCA_INLINE_MAX || !lsca_user_writable(buf, bufsiz)) {
        lsca_count_passthrough(LSCA_OP_READLINKAT);
        return 0;
    }
    if (!lsca_begin(&c, LSCA_OP_READLINKAT))
        return 0;
    if (lsca_put_path(&c, path) < 0) {
        lsca_abandon(&c);
        return 0;
    }
    c.slot->args[0] = ARG(dirfd);
    c.slot->args[1] = bufsiz;
    if (!lsca_exchange(&c)) {
        lsca_end(&c);
        return 0;
    }
    long n = c.slot->result;
    if (n > 0 && (size_t)n <= bufsiz)
        memcpy(buf, c.slot->data, (size_t)n);
    *result = lsca_end(&c);
    return 1;
}

DECLARE_REAL(readlink);

ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t bufsiz)
{
    long r;
    return proxy_readlinkat(dirfd, path, buf, bufsiz, &r) ? r : REAL(readlinkat)(dirfd, path, buf, bufsiz);
}

ssize_t readlink(const char *path, char *buf, size_t bufsiz)
{
    long r;
    return proxy_readlinkat(AT_FDCWD, path, buf, bufsiz, &r) ? r : REAL(readlink)(path, buf, bufsiz);
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

DECLARE_REAL(chmod);
DECLARE_REAL(chown);
DECLARE_REAL(lchown);

int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
{
    PROXY_OR_REAL(REAL(fchmodat)(dirfd, path, mode, flags), LSCA_OP_FCHMODAT, path, NULL, ARG(dirfd), mode,
                  ARG(flags), 0, NULL, 0);
}

int chmod(const char *path, mode_t mode)
{
    PROXY_OR_REAL(REAL(chmod)(path, mode), LSCA_OP_FCHMODAT, path, NULL, ARG(AT_FDCWD), mode, 0, 0, NULL, 0);
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
    PROXY_OR_REAL(REAL(chown)(path, owner, group), LSCA_OP_FCHOWNAT, path, NULL, ARG(AT_FDCWD),
                  ARG((int)owner), ARG((int)group), 0, NULL, 0);
}

int lchown(const char *path, uid_t owner, gid_t group)
{
    PROXY_OR_REAL(REAL(lchown)(path, owner, group), LSCA_OP_FCHOWNAT, path, NULL, ARG(AT_FDCWD),
                  ARG((int)owner), ARG((int)group), ARG(AT_SYMLINK_NOFOLLOW), NULL, 0);
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
    if (times && !lsca_user_readable(times, 2 * sizeof(*times))) {
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
    if (!buf || size > LSCA_INLINE_MAX || !lsca_user_writable(buf, size)) {
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

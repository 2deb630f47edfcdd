/*
 * interpose_fd.c - calls that create descriptors: open openat creat (with their 64-bit
 * and fortified names), dup dup2 dup3, fcntl, pipe pipe2.
 *
 * The worker creates the descriptor (with the program's credentials, relative to its
 * cwd) and sends it over the channel; the kernel installs it at the lowest free number,
 * as the native call would. dup2/dup3 and F_DUPFD then move it where the program asked.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "agent.h"

DECLARE_REAL(openat);
DECLARE_REAL(dup2);
DECLARE_REAL(dup);
DECLARE_REAL(dup3);
DECLARE_REAL(fcntl);
DECLARE_REAL(pipe2);

static int wants_mode(int flags)
{
    return (flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE;
}

/* ---- open family ---- */

static int proxy_openat(int dirfd, const char *path, int flags, mode_t mode, int *answered)
{
    struct lsca_call c;
    int fd;

    *answered = 0;
    if (!lsca_begin(&c, LSCA_OP_OPENAT))
        return 0;
    if (lsca_put_path(&c, path) < 0) {
        lsca_abandon(&c);
        return 0;
    }
    c.slot->args[0] = (uint64_t)(int64_t)dirfd;
    c.slot->args[1] = (uint64_t)(int64_t)flags;
    c.slot->args[2] = mode;
    *answered = lsca_exchange_newfds(&c, &fd, 1, flags & O_CLOEXEC);
    if (*answered && c.slot->result >= 0)
        c.slot->result = fd;
    return (int)lsca_end(&c);
}

#define MODE_ARG(flags, mode)                                                                \
    do {                                                                                     \
        if (wants_mode(flags)) {                                                             \
            va_list ap;                                                                      \
            va_start(ap, flags);                                                             \
            mode = va_arg(ap, mode_t);                                                       \
            va_end(ap);                                                                      \
        }                                                                                    \
    } while (0)

DECLARE_REAL(open);
DECLARE_REAL(creat);

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    int answered, r;

    MODE_ARG(flags, mode);
    r = proxy_openat(dirfd, path, flags, mode, &answered);
    return answered ? r : REAL(openat)(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...) __attribute__((alias("openat")));

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    int answered, r;

    MODE_ARG(flags, mode);
    r = proxy_openat(AT_FDCWD, path, flags, mode, &answered);
    return answered ? r : REAL(open)(path, flags, mode);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int creat(const char *path, mode_t mode)
{
    int answered, r = proxy_openat(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode, &answered);
    return answered ? r : REAL(creat)(path, mode);
}

int creat64(const char *path, mode_t mode) __attribute__((alias("creat")));

/* Fortified entries: glibc's own abort when O_CREAT comes without a mode argument. */
DECLARE_REAL(__open_2);
DECLARE_REAL(__openat_2);
extern int __open_2(const char *path, int flags);
extern int __openat_2(int dirfd, const char *path, int flags);

int __open_2(const char *path, int flags)
{
    int answered = 0, r = 0;
    if (!wants_mode(flags))
        r = proxy_openat(AT_FDCWD, path, flags, 0, &answered);
    return answered ? r : REAL(__open_2)(path, flags);
}

int __open64_2(const char *path, int flags) __attribute__((alias("__open_2")));

int __openat_2(int dirfd, const char *path, int flags)
{
    int answered = 0, r = 0;
    if (!wants_mode(flags))
        r = proxy_openat(dirfd, path, flags, 0, &answered);
    return answered ? r : REAL(__openat_2)(dirfd, path, flags);
}

int __openat64_2(int dirfd, const char *path, int flags) __attribute__((alias("__openat_2")));

/* ---- dup family ---- */

/* Ask the worker for a duplicate of oldfd; it lands at the lowest free number.
 * Returns 1 when the worker answered (result in *out, errno set), 0 to run natively. */
static int worker_dup(enum lsca_op op, int oldfd, int a1, int a2, int cloexec, int *out)
{
    struct lsca_call c;
    int fd;

    if (!lsca_begin(&c, op))
        return 0;
    c.slot->args[0] = (uint64_t)(int64_t)oldfd;
    c.slot->args[1] = (uint64_t)(int64_t)a1;
    c.slot->args[2] = (uint64_t)(int64_t)a2;
    if (!lsca_exchange_newfds(&c, &fd, 1, cloexec)) {
        lsca_end(&c);
        return 0;
    }
    if (c.slot->result >= 0)
        c.slot->result = fd;
    *out = (int)lsca_end(&c);
    return 1;
}

int dup(int oldfd)
{
    int r;
    if (lsca_agent_fd(oldfd)) {
        errno = EBADF;
        return -1;
    }
    return worker_dup(LSCA_OP_DUP, oldfd, 0, 0, 0, &r) ? r : REAL(dup)(oldfd);
}

/* Put a worker-made duplicate at the number the program asked for. */
static int move_to(int fd, int newfd, int flags)
{
    int saved = errno;

    if (fd == newfd) {
        /* newfd was the lowest free number: the duplicate is already where it belongs. */
        if (flags & O_CLOEXEC)
            lsca_sys(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
        return fd;
    }
    long r = lsca_sys(SYS_dup3, fd, newfd, flags);
    int err = errno;
    lsca_sys(SYS_close, fd);
    errno = r < 0 ? err : saved;
    return (int)r;
}

int dup3(int oldfd, int newfd, int flags)
{
    int r;

    if (lsca_agent_fd(oldfd)) {
        errno = EBADF;
        return -1;
    }
    lsca_agent_fd_evict(newfd);
    /* dup3(fd, fd) is EINVAL and flags other than O_CLOEXEC too: the kernel says so natively. */
    if (oldfd != newfd && (flags & ~O_CLOEXEC) == 0 && worker_dup(LSCA_OP_DUP3, oldfd, newfd, flags, 0, &r))
        return r < 0 ? r : move_to(r, newfd, flags);
    return REAL(dup3)(oldfd, newfd, flags);
}

int dup2(int oldfd, int newfd)
{
    if (oldfd == newfd) {
        /* Returns newfd when it is open, EBADF otherwise: the native call answers it. */
        if (lsca_agent_fd(oldfd)) {
            errno = EBADF;
            return -1;
        }
        lsca_count_passthrough(LSCA_OP_DUP3);
        return REAL(dup2)(oldfd, newfd);
    }
    return dup3(oldfd, newfd, 0);
}

/* ---- fcntl ---- */

/* Commands a worker can run on the shared open file description. F_GETFD/F_SETFD
 * (per-descriptor flags), F_SETLK & co. (locks owned by the process), leases, dnotify
 * and anything that may block belong to the program's own process: run natively. */
static int worker_cmd(int cmd)
{
    switch (cmd) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
    case F_GETFL:
    case F_SETFL:
#ifdef F_GETPIPE_SZ
    case F_GETPIPE_SZ:
    case F_SETPIPE_SZ:
#endif
#ifdef F_GET_SEALS
    case F_GET_SEALS:
    case F_ADD_SEALS:
#endif
        return 1;
    default:
        return 0;
    }
}

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    long arg;
    struct lsca_call c;

    va_start(ap, cmd);
    arg = va_arg(ap, long);
    va_end(ap);
    if (lsca_agent_fd(fd)) {
        errno = EBADF;
        return -1;
    }
    if (!worker_cmd(cmd)) {
        lsca_count_passthrough(LSCA_OP_FCNTL);
    } else if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
        int r, cloexec = cmd == F_DUPFD_CLOEXEC;
        if (arg >= 0 && worker_dup(LSCA_OP_FCNTL, fd, cmd, (int)arg, cloexec, &r)) {
            if (r < 0 || r >= arg)
                return r;
            /* It landed below the minimum the program asked for: move it up natively. */
            int saved = errno;
            long moved = lsca_sys(SYS_fcntl, r, cmd, arg);
            int err = errno;
            lsca_sys(SYS_close, r);
            errno = moved < 0 ? err : saved;
            return (int)moved;
        }
    } else if (lsca_begin(&c, LSCA_OP_FCNTL)) {
        c.slot->args[0] = (uint64_t)(int64_t)fd;
        c.slot->args[1] = (uint64_t)(int64_t)cmd;
        c.slot->args[2] = (uint64_t)arg;
        if (lsca_exchange(&c))
            return (int)lsca_end(&c);
        lsca_end(&c);
    }
    return REAL(fcntl)(fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...) __attribute__((alias("fcntl")));
int __fcntl(int fd, int cmd, ...) __attribute__((alias("fcntl")));

/* ---- pipe ---- */

int pipe2(int fds[2], int flags)
{
    struct lsca_call c;
    int got[2];

    if (lsca_bad_pointer(fds, sizeof(int) * 2)) {
        lsca_count_passthrough(LSCA_OP_PIPE2);
    } else if (lsca_begin(&c, LSCA_OP_PIPE2)) {
        c.slot->args[0] = (uint64_t)(int64_t)flags;
        if (lsca_exchange_newfds(&c, got, 2, flags & O_CLOEXEC)) {
            if (c.slot->result >= 0) {
                fds[0] = got[0];
                fds[1] = got[1];
                c.slot->result = 0;
            }
            return (int)lsca_end(&c);
        }
        lsca_end(&c);
    }
    return REAL(pipe2)(fds, flags);
}

int pipe(int fds[2])
{
    return pipe2(fds, 0);
}

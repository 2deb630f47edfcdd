/*
 * interpose_fd.c - calls that create descriptors: open openat creat (with their 64-bit
 * and fortified names), dup dup2 dup3, fcntl, pipe pipe2.
 *
 * The worker creates the descriptor (with the program's credentials, relative to its
 * cwd) and sends it over the channel; the kernel installs it at the lowest free number,
 * as the native call would. dup2/dup3 and F_DUPFD then move it where the program asked.
 * close_range and closefrom close around the agent's channel; a raised RLIMIT_NOFILE
 * moves the channel out of the program's reach again.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
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

/* F_DUPFD's duplicate landed below the minimum the program asked for: move it up natively. */
static int move_up(int fd, int cmd, int minimum)
{
    int saved = errno;
    long moved = lsca_sys(SYS_fcntl, fd, cmd, minimum);
    int err = errno;

    lsca_sys(SYS_close, fd);
    errno = moved < 0 ? err : saved;
    return (int)moved;
}

/* Ask the worker for a duplicate of oldfd; it lands at the lowest free number, then where
 * dup3 (a1) or F_DUPFD (at least a2) asked. That happens before the slot is free: the
 * worker's trace record takes the number the program got from it (new_fds[0]).
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
    if (c.slot->result >= 0) {
        if (op == LSCA_OP_DUP3)
            fd = move_to(fd, a1, a2);
        else if (op == LSCA_OP_FCNTL && fd < a2)
            fd = move_up(fd, a1, a2);
        c.slot->result = fd;
        c.slot->err = fd < 0 ? errno : 0;
        c.slot->new_fds[0] = fd;
    }
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
        return r;
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
            int chan = lsca_agent_channel();
            if (r < 0 && errno == EMFILE && chan >= arg) {
                /* Natively it would land on the channel's number: move the channel away. */
                lsca_agent_fd_evict(chan);
                return REAL(fcntl)(fd, cmd, arg);
            }
            return r;
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

/* ---- close_range, closefrom ---- */

/* Everything the program asks to close is closed exactly as natively, except the agent's
 * channel: the range is split around it. The worker is told of each descriptor closed (as
 * for close), so it drops its references: a pipe's last writer closed means EOF. */

struct fd_list { int *fds; size_t n, cap; };

static void fd_list_add(struct fd_list *l, int fd)
{
    if (l->n == l->cap) {
        /* mmap, not malloc: close_range is called in children of threaded programs. */
        size_t cap = l->cap ? l->cap * 2 : 1024;
        void *p = l->fds ? (void *)lsca_sys(SYS_mremap, l->fds, l->cap * sizeof(int), cap * sizeof(int), MREMAP_MAYMOVE)
                         : mmap(NULL, cap * sizeof(int), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return;
        l->fds = p;
        l->cap = cap;
    }
    l->fds[l->n++] = fd;
}

static void fd_list_free(struct fd_list *l)
{
    if (l->fds)
        munmap(l->fds, l->cap * sizeof(int));
}

/* The program's open descriptors in [first, last], from /proc/self/fd (raw calls). */
static void open_fds_in(unsigned first, unsigned last, struct fd_list *out)
{
    char buf[4096];
    int dir = (int)lsca_sys(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    long n;

    if (dir < 0)
        return;
    while ((n = lsca_sys(SYS_getdents64, dir, buf, sizeof(buf))) > 0) {
        for (long off = 0; off < n;) {
            struct { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; } *d =
                (void *)(buf + off);
            char *p = d->name;
            unsigned long fd = 0;
            off += d->reclen;
            if (*p < '0' || *p > '9')
                continue;
            while (*p >= '0' && *p <= '9')
                fd = fd * 10 + (unsigned long)(*p++ - '0');
            if (fd >= first && fd <= last && (int)fd != dir && !lsca_agent_fd((int)fd))
                fd_list_add(out, (int)fd);
        }
    }
    lsca_sys(SYS_close, dir);
}

static void report_closed(int fd)
{
    struct lsca_call c;

    if (lsca_begin(&c, LSCA_OP_CLOSE)) {
        c.slot->args[0] = (uint64_t)(int64_t)fd;
        c.slot->args[1] = 0;
        c.slot->args[2] = 0;
        lsca_exchange(&c);
        lsca_end(&c);
    }
}

static long sys_close_range(unsigned first, unsigned last, unsigned flags)
{
    return lsca_sys(SYS_close_range, first, last, flags);
}

int close_range(unsigned first, unsigned last, int flags)
{
    unsigned f = (unsigned)flags;
    int chan = lsca_agent_channel();
    struct fd_list closing = { 0 };
    long r = 0;

    /* Invalid arguments (the kernel's EINVAL), close-on-exec only (the channel is already),
     * a range without the channel, or a vfork child's own table: the native call as is. */
    if (!lsca_own_process() || (f & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) || first > last ||
        (f & CLOSE_RANGE_CLOEXEC)) {
        return (int)sys_close_range(first, last, f);
    }
    int saved = errno;
    int registered = lsca_registered();
    if (registered)
        open_fds_in(first, last, &closing);
    if (chan < 0 || (unsigned)chan < first || (unsigned)chan > last) {
        r = sys_close_range(first, last, f);
    } else {
        /* Unshared by the first part that runs (the second then finds the table private). */
        if ((unsigned)chan > first)
            r = sys_close_range(first, (unsigned)chan - 1, f);
        if (r == 0 && (unsigned)chan < last)
            r = sys_close_range((unsigned)chan + 1, last, f);
        if (r == 0 && first == last && (f & CLOSE_RANGE_UNSHARE))
            r = lsca_sys(SYS_unshare, CLONE_FILES);
    }
    int err = errno;
    if (r == 0) {
        for (size_t i = 0; i < closing.n; i++)
            report_closed(closing.fds[i]);
    }
    fd_list_free(&closing);
    errno = r == 0 ? saved : err;
    return (int)r;
}

/* glibc: close_range(lowfd, ~0U, 0); without close_range, closes what /proc/self/fd lists. */
void closefrom(int lowfd)
{
    unsigned first = lowfd < 0 ? 0 : (unsigned)lowfd;
    int saved = errno;

    if (close_range(first, ~0U, 0) != 0) {
        struct fd_list open_fds = { 0 };
        open_fds_in(first, ~0U, &open_fds);
        for (size_t i = 0; i < open_fds.n; i++)
            close(open_fds.fds[i]);
        fd_list_free(&open_fds);
    }
    errno = saved;
}

/* ---- RLIMIT_NOFILE ---- */

/* The channel sits where the program cannot allocate (at its soft limit); a program that
 * raises the limit past it must still not meet it. */
DECLARE_REAL(prlimit);
DECLARE_REAL(setrlimit);

int prlimit(pid_t pid, enum __rlimit_resource resource, const struct rlimit *limit, struct rlimit *old)
{
    int r = REAL(prlimit)(pid, resource, limit, old);

    if (r == 0 && limit && resource == RLIMIT_NOFILE && (pid == 0 || pid == (pid_t)lsca_sys(SYS_getpid)))
        lsca_agent_fd_rehide();
    return r;
}

int setrlimit(enum __rlimit_resource resource, const struct rlimit *limit)
{
    int r = REAL(setrlimit)(resource, limit);

    if (r == 0 && resource == RLIMIT_NOFILE)
        lsca_agent_fd_rehide();
    return r;
}

#if defined(__LP64__)
/* Same layout on 64-bit targets: the 64-bit names are the same calls. */
int prlimit64(pid_t pid, enum __rlimit_resource resource, const struct rlimit64 *limit, struct rlimit64 *old)
{
    return prlimit(pid, resource, (const struct rlimit *)limit, (struct rlimit *)old);
}

int setrlimit64(enum __rlimit_resource resource, const struct rlimit64 *limit)
{
    return setrlimit(resource, (const struct rlimit *)limit);
}
#endif

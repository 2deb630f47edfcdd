/*
 * worker_sys.c - see lsca_worker_sys.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>             /* renameat2 */
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#include <linux/openat2.h>

#include "lsca_worker_sys.h"

/* pidfd numbers are shared by every architecture (424+ block); older headers lack them. */
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif
#define KCMP_FILE 0
/* The flags O_PATH keeps, and those open knows: openat drops the others silently, openat2
 * refuses them (EINVAL), so they are dropped here as openat would. */
#define O_PATH_KEEPS (O_DIRECTORY | O_NOFOLLOW | O_PATH | O_CLOEXEC)
#define OPEN_KNOWS (O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | O_APPEND | O_NONBLOCK | O_DSYNC | \
                    FASYNC | O_DIRECT | O_LARGEFILE | O_DIRECTORY | O_NOFOLLOW | O_NOATIME | O_CLOEXEC |  \
                    O_SYNC | O_PATH | __O_TMPFILE)

union semun_arg {
    int val;
    struct semid_ds *buf;
    unsigned short *array;
};

int lsca_pidfd_open(int pid)
{
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int lsca_pidfd_getfd(int pidfd, int fd)
{
    return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
}

int lsca_kcmp_file(int pid1, int pid2, int fd1, int fd2)
{
    return (int)syscall(SYS_kcmp, pid1, pid2, KCMP_FILE, fd1, fd2);
}

/* process_vm_* may move less than asked (at a fault): go on until done or an error. */
static int64_t remote_move(int pid, int to_remote, void *local, size_t len,
                           const struct iovec *riov, int riovcnt)
{
    size_t done = 0;
    struct iovec liov;
    struct iovec rest[IOV_MAX];
    int i, n = 0;
    size_t skip = 0;

    if (riovcnt < 0 || riovcnt > IOV_MAX) {
        errno = EINVAL;
        return -1;
    }
    while (done < len) {
        /* The remote list from byte `done` on. */
        skip = done;
        n = 0;
        for (i = 0; i < riovcnt; i++) {
            if (skip >= riov[i].iov_len) {
                skip -= riov[i].iov_len;
                continue;
            }
            rest[n].iov_base = (char *)riov[i].iov_base + skip;
            rest[n].iov_len = riov[i].iov_len - skip;
            skip = 0;
            n++;
        }
        liov.iov_base = (char *)local + done;
        liov.iov_len = len - done;
        ssize_t r = to_remote ? process_vm_writev(pid, &liov, 1, rest, (unsigned long)n, 0)
                              : process_vm_readv(pid, &liov, 1, rest, (unsigned long)n, 0);
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = EFAULT;
            return -1;
        }
        done += (size_t)r;
    }
    return (int64_t)done;
}

int64_t lsca_remote_read(int pid, void *local, uint64_t remote, size_t len)
{
    struct iovec riov = { .iov_base = (void *)(uintptr_t)remote, .iov_len = len };
    return remote_move(pid, 0, local, len, &riov, 1);
}

int64_t lsca_remote_write(int pid, const void *local, uint64_t remote, size_t len)
{
    struct iovec riov = { .iov_base = (void *)(uintptr_t)remote, .iov_len = len };
    return remote_move(pid, 1, (void *)local, len, &riov, 1);
}

int64_t lsca_remote_gather(int pid, void *local, size_t len, const void *remote_iov, int iovcnt)
{
    return remote_move(pid, 0, local, len, remote_iov, iovcnt);
}

int64_t lsca_remote_scatter(int pid, const void *local, size_t len, const void *remote_iov, int iovcnt)
{
    return remote_move(pid, 1, (void *)local, len, remote_iov, iovcnt);
}

static __thread const volatile uint32_t *cancel_word;

void lsca_set_cancel_word(const uint32_t *word)
{
    cancel_word = word;
}

/* A signal to the worker is retried over; one sent to cancel the call is not. */
#define RETRY_EINTR(expr)                                                       \
    ({                                                                          \
        __typeof__(expr) r_;                                                    \
        do                                                                      \
            r_ = (expr);                                                        \
        while (r_ == -1 && errno == EINTR && !(cancel_word && *cancel_word));   \
        r_;                                                                     \
    })

int64_t lsca_do_read(int fd, void *buf, uint64_t count)
{
    return RETRY_EINTR(read(fd, buf, (size_t)count));
}

/* Kernels before 6.x refuse RWF_NOWAIT on pipes (EOPNOTSUPP; Debian 12's 6.1 does): there a
 * pipe read is tried through a scratch pipe of this thread with splice(SPLICE_F_NONBLOCK),
 * which never waits on either pipe, and a pipe write is handed back (see below). Known after
 * the first refusal; LSCATEST_NO_RWF_NOWAIT=1 takes that way from the start (to test it on a
 * newer kernel). */
static int pipes_refuse_nowait = -1;
static __thread int scratch_pipe[2] = { -1, -1 };

static int pipe_nowait_refused(void)
{
    if (pipes_refuse_nowait < 0) {
        const char *v = getenv("LSCATEST_NO_RWF_NOWAIT");
        pipes_refuse_nowait = v && strcmp(v, "1") == 0;
    }
    return pipes_refuse_nowait;
}

static int scratch(void)
{
    if (scratch_pipe[0] < 0 && pipe2(scratch_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    return 0;
}

static void scratch_drain(void)
{
    char sink[4096];
    while (read(scratch_pipe[0], sink, sizeof(sink)) > 0)
        ;
}

/* A pipe read that never waits: splice what is there (at most count) into the scratch pipe,
 * then read it out. */
static int64_t pipe_read_nowait(int fd, void *buf, uint64_t count)
{
    ssize_t n, got;

    if (count == 0)
        return RETRY_EINTR(read(fd, buf, 0));  /* never waits; says EBADF as read does */
    if (scratch() < 0)
        return -1;
    n = RETRY_EINTR(splice(fd, NULL, scratch_pipe[1], NULL, (size_t)count, SPLICE_F_NONBLOCK));
    if (n <= 0)
        return n;
    got = read(scratch_pipe[0], buf, (size_t)n);
    if (got != n) {
        scratch_drain();
        errno = EIO;
        return -1;
    }
    return got;
}

static int is_fifo(int fd)
{
    struct stat st;
    return fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

int64_t lsca_do_read_nowait(int fd, void *buf, uint64_t count)
{
    struct iovec iov = { .iov_base = buf, .iov_len = (size_t)count };
    int64_t n;

    if (!pipe_nowait_refused() || !is_fifo(fd)) {
        n = RETRY_EINTR(preadv2(fd, &iov, 1, -1, RWF_NOWAIT));
        if (n >= 0 || errno != EOPNOTSUPP || !is_fifo(fd))
            return n;                   /* EOPNOTSUPP for a tty, say: the caller hands it back */
        pipes_refuse_nowait = 1;
    }
    return pipe_read_nowait(fd, buf, count);
}

int64_t lsca_do_write_nowait(int fd, const void *buf, uint64_t count)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = (size_t)count };
    int64_t n;

    /* No splice here: a spliced buffer takes a whole pipe slot, where write(2) merges small
     * writes into the last one, so a pipe would fill after 16 small writes and a native
     * write after them could wait where the program's never does. Refused: handed back. */
    if (!pipe_nowait_refused() || !is_fifo(fd)) {
        n = RETRY_EINTR(pwritev2(fd, &iov, 1, -1, RWF_NOWAIT));
        if (n >= 0 || errno != EOPNOTSUPP || !is_fifo(fd))
            return n;
        pipes_refuse_nowait = 1;
    }
    errno = EOPNOTSUPP;
    return -1;
}

int lsca_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK);
}

int64_t lsca_do_write(int fd, const void *buf, uint64_t count)
{
    return RETRY_EINTR(write(fd, buf, (size_t)count));
}

int64_t lsca_do_pread(int fd, void *buf, uint64_t count, int64_t offset)
{
    return RETRY_EINTR(pread(fd, buf, (size_t)count, (off_t)offset));
}

int64_t lsca_do_pwrite(int fd, const void *buf, uint64_t count, int64_t offset)
{
    return RETRY_EINTR(pwrite(fd, buf, (size_t)count, (off_t)offset));
}

int64_t lsca_do_lseek(int fd, int64_t offset, int whence)
{
    return lseek(fd, (off_t)offset, whence);
}

int lsca_do_ftruncate(int fd, int64_t length)
{
    return RETRY_EINTR(ftruncate(fd, (off_t)length));
}

int lsca_do_fsync(int fd)
{
    return RETRY_EINTR(fsync(fd));
}

int lsca_do_fdatasync(int fd)
{
    return RETRY_EINTR(fdatasync(fd));
}

int lsca_do_openat(int dirfd, const char *path, int flags, unsigned mode)
{
    return RETRY_EINTR(openat(dirfd, path, flags, (mode_t)mode));
}

int lsca_do_open_nomagic(int dirfd, const char *path, int flags, unsigned mode)
{
    struct open_how how = { .flags = (uint64_t)(unsigned)(flags & OPEN_KNOWS), .resolve = RESOLVE_NO_MAGICLINKS };

    if (flags & O_PATH)
        how.flags &= O_PATH_KEEPS;
    /* As openat builds its open_how: O_PATH first, then a mode only for an open that creates
     * (openat2 refuses one otherwise); the kernel's own __O_TMPFILE bit, not glibc's. */
    if (how.flags & (O_CREAT | 020000000))
        how.mode = mode & 07777;
    return (int)RETRY_EINTR(syscall(SYS_openat2, dirfd, path, &how, sizeof(how)));
}

int lsca_do_fstatat(int dirfd, const char *path, void *out, int flags)
{
    return fstatat(dirfd, path, (struct stat *)out, flags);
}

int lsca_do_statx(int dirfd, const char *path, int flags, unsigned mask, void *out)
{
    return statx(dirfd, path, flags, mask, (struct statx *)out);
}

size_t lsca_statx_size(void)
{
    return sizeof(struct statx);
}

int lsca_do_faccessat(int dirfd, const char *path, int mode, int flags)
{
    return faccessat(dirfd, path, mode, flags);
}

int lsca_do_mkdirat(int dirfd, const char *path, unsigned mode)
{
    return mkdirat(dirfd, path, (mode_t)mode);
}

int lsca_do_unlinkat(int dirfd, const char *path, int flags)
{
    return unlinkat(dirfd, path, flags);
}

int lsca_do_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned flags)
{
    return renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}

int lsca_do_linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
    return linkat(olddirfd, oldpath, newdirfd, newpath, flags);
}

int lsca_do_symlinkat(const char *target, int newdirfd, const char *linkpath)
{
    return symlinkat(target, newdirfd, linkpath);
}

int64_t lsca_do_readlinkat(int dirfd, const char *path, void *buf, size_t size)
{
    return readlinkat(dirfd, path, (char *)buf, size);
}

int lsca_do_fchmodat(int dirfd, const char *path, unsigned mode, int flags)
{
    return fchmodat(dirfd, path, (mode_t)mode, flags);
}

int lsca_do_fchmod(int fd, unsigned mode)
{
    return fchmod(fd, (mode_t)mode);
}

int lsca_do_fchownat(int dirfd, const char *path, int uid, int gid, int flags)
{
    return fchownat(dirfd, path, (uid_t)uid, (gid_t)gid, flags);
}

int lsca_do_fchown(int fd, int uid, int gid)
{
    return fchown(fd, (uid_t)uid, (gid_t)gid);
}

int lsca_do_truncate(const char *path, int64_t length)
{
    return RETRY_EINTR(truncate(path, (off_t)length));
}

int lsca_do_utimensat(int dirfd, const char *path, const void *times, int flags)
{
    /* A NULL path (futimens) is the kernel's to take; glibc's utimensat says EINVAL. */
    if (!path)
        return (int)syscall(SYS_utimensat, dirfd, NULL, times, flags);
    return utimensat(dirfd, path, (const struct timespec *)times, flags);
}

int lsca_do_fcntl(int fd, int cmd, long arg)
{
    return fcntl(fd, cmd, arg);
}

int lsca_do_pipe2(int *fds, int flags)
{
    return pipe2(fds, flags);
}

int64_t lsca_do_sendto(int fd, const void *buf, uint64_t len, int flags, const void *addr, uint32_t addrlen)
{
    return RETRY_EINTR(sendto(fd, buf, (size_t)len, flags | MSG_NOSIGNAL, addrlen ? addr : NULL, addrlen));
}

int64_t lsca_do_recvfrom(int fd, void *buf, uint64_t len, int flags, void *addr, uint32_t *addrlen)
{
    return RETRY_EINTR(recvfrom(fd, buf, (size_t)len, flags, *addrlen ? addr : NULL, *addrlen ? addrlen : NULL));
}

int64_t lsca_do_sendmsg(int fd, const void *buf, uint64_t len, const void *addr, uint32_t addrlen, int flags)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = (size_t)len };
    struct msghdr msg = { .msg_name = addrlen ? (void *)addr : NULL, .msg_namelen = addrlen,
                          .msg_iov = &iov, .msg_iovlen = 1 };
    return RETRY_EINTR(sendmsg(fd, &msg, flags | MSG_NOSIGNAL));
}

int64_t lsca_do_recvmsg(int fd, void *buf, uint64_t len, void *addr, uint32_t *addrlen, int flags,
                        int *msg_flags)
{
    struct iovec iov = { .iov_base = buf, .iov_len = (size_t)len };
    struct msghdr msg = { .msg_name = *addrlen ? addr : NULL, .msg_namelen = *addrlen,
                          .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t r = RETRY_EINTR(recvmsg(fd, &msg, flags));
    *addrlen = msg.msg_namelen;
    *msg_flags = msg.msg_flags;
    return r;
}

int lsca_do_accept4(int fd, void *addr, uint32_t *addrlen, int flags)
{
    return RETRY_EINTR(accept4(fd, *addrlen ? addr : NULL, *addrlen ? addrlen : NULL, flags));
}

int lsca_do_connect(int fd, const void *addr, uint32_t addrlen)
{
    return connect(fd, addr, addrlen);      /* EINTR: the connection goes on, as natively */
}

int lsca_do_shutdown(int fd, int how)
{
    return shutdown(fd, how);
}

/* What lsca_become last set on this thread (the raw calls act on the calling thread only). */
#define BECOME_GROUPS_KEPT 64
static __thread struct {
    int valid, fsuid, fsgid, ngroups;
    unsigned groups[BECOME_GROUPS_KEPT];
} became;

int lsca_become(int fsuid, int fsgid, int ngroups, const unsigned *groups)
{
    /* The same identity again (a root client served by a root worker, say): 5 calls saved. */
    if (became.valid && became.fsuid == fsuid && became.fsgid == fsgid && became.ngroups == ngroups &&
        memcmp(became.groups, groups, (size_t)ngroups * sizeof(*groups)) == 0)
        return 0;
    /* setgroups costs as much as a stat: skipped when the list is the one in force. */
    int same_groups = became.valid && became.ngroups == ngroups &&
                      memcmp(became.groups, groups, (size_t)ngroups * sizeof(*groups)) == 0;
    became.valid = 0;
    if (!same_groups && syscall(SYS_setgroups, (long)ngroups, groups) < 0)
        return -1;
    syscall(SYS_setfsgid, (long)fsgid);
    syscall(SYS_setfsuid, (long)fsuid);
    /* setfs*id report nothing: ask again to see that they took. */
    if (syscall(SYS_setfsuid, -1L) != fsuid || syscall(SYS_setfsgid, -1L) != fsgid) {
        errno = EPERM;
        return -1;
    }
    if (ngroups >= 0 && ngroups <= BECOME_GROUPS_KEPT) {
        became.fsuid = fsuid;
        became.fsgid = fsgid;
        became.ngroups = ngroups;
        memcpy(became.groups, groups, (size_t)ngroups * sizeof(*groups));
        became.valid = 1;
    }
    return 0;
}

/* The process's umask, set only when it differs (both routes go through here, so the value
 * kept is the one in force). */
static int umask_now = -1;

void lsca_use_umask(unsigned mask)
{
    if ((int)(mask & 0777) != umask_now) {
        umask((mode_t)(mask & 0777));
        umask_now = (int)(mask & 0777);
    }
}

uint64_t lsca_stat_dev(const void *st)
{
    return ((const struct stat *)st)->st_dev;
}

uint64_t lsca_statx_dev(const void *stx)
{
    const struct statx *s = stx;
    return makedev(s->stx_dev_major, s->stx_dev_minor);
}

int lsca_fstat_into(int fd, void *out)
{
    return fstat(fd, (struct stat *)out);
}

size_t lsca_stat_size(void)
{
    return sizeof(struct stat);
}

void lsca_stat_summary(const void *st, uint32_t *mode, int64_t *size)
{
    *mode = ((const struct stat *)st)->st_mode;
    *size = ((const struct stat *)st)->st_size;
}

int lsca_fd_kind(int fd, unsigned *mode, unsigned *dev_major)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -1;
    *mode = st.st_mode;
    *dev_major = S_ISCHR(st.st_mode) ? major(st.st_rdev) : 0;
    return 0;
}

int lsca_unix_socket(int fd)
{
    int domain = 0;
    socklen_t len = sizeof(domain);

    return getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX;
}

int lsca_may_wait(unsigned mode, unsigned dev_major)
{
    return !(S_ISREG(mode) || S_ISDIR(mode) || S_ISBLK(mode) || (S_ISCHR(mode) && dev_major == 1));
}

int lsca_would_block(int fd, unsigned mode, unsigned dev_major, int for_write, size_t count)
{
    struct pollfd p = { .fd = fd, .events = for_write ? POLLOUT : POLLIN };
    int flags;

    if (S_ISREG(mode) || S_ISDIR(mode) || S_ISBLK(mode))
        return 0;
    if (S_ISCHR(mode) && dev_major == 1)
        return 0;                        /* /dev/null, zero, full, random, urandom */
    flags = fcntl(fd, F_GETFL);
    if (flags < 0 || (flags & (O_NONBLOCK | O_PATH)))
        return 0;                        /* answers EAGAIN or EBADF instead of waiting */
    if ((for_write && (flags & O_ACCMODE) == O_RDONLY) || (!for_write && (flags & O_ACCMODE) == O_WRONLY))
        return 0;                        /* the wrong direction fails with EBADF at once */
    /* A blocking write larger than one pipe buffer may wait for the reader to drain. */
    if (for_write && count > PIPE_BUF && (S_ISFIFO(mode) || S_ISSOCK(mode)))
        return 1;
    if (poll(&p, 1, 0) != 1)
        return 1;
    return 0;                            /* ready, hung up or in error: answers at once */
}

int lsca_sem_create(int key, int nsems, int mode, int uid, int gid)
{
    int semid = semget((key_t)key, nsems, IPC_CREAT | IPC_EXCL | (mode & 0777));
    struct semid_ds ds;
    union semun_arg arg = { .buf = &ds };

    if (semid < 0)
        return -1;
    if (semctl(semid, 0, IPC_STAT, arg) < 0)
        goto fail;
    ds.sem_perm.uid = (uid_t)uid;
    ds.sem_perm.gid = (gid_t)gid;
    ds.sem_perm.mode = (unsigned short)(mode & 0777);
    if (semctl(semid, 0, IPC_SET, arg) < 0)
        goto fail;
    return semid;
fail:;
    int saved = errno;
    semctl(semid, 0, IPC_RMID);
    errno = saved;
    return -1;
}

int lsca_shm_create(int key, size_t size, int mode, int uid, int gid)
{
    int shmid = shmget((key_t)key, size, IPC_CREAT | IPC_EXCL | (mode & 0777));
    struct shmid_ds ds;

    if (shmid < 0)
        return -1;
    if (uid < 0)
        return shmid;
    if (shmctl(shmid, IPC_STAT, &ds) < 0)
        goto fail;
    ds.shm_perm.uid = (uid_t)uid;
    ds.shm_perm.gid = (gid_t)gid;
    if (shmctl(shmid, IPC_SET, &ds) < 0)
        goto fail;
    return shmid;
fail:;
    int saved = errno;
    shmctl(shmid, IPC_RMID, NULL);
    errno = saved;
    return -1;
}

int lsca_sem_remove(int semid)
{
    return semctl(semid, 0, IPC_RMID);
}

int lsca_sem_post(int semid, int num)
{
    struct sembuf op = { .sem_num = (unsigned short)num, .sem_op = 1, .sem_flg = 0 };
    return semop(semid, &op, 1);
}

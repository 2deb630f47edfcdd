/*
 * interpose_io.c - libc I/O calls on descriptors the program already has:
 * write read pread pwrite readv writev lseek fsync fdatasync ftruncate fstat close
 * (and the closes inside fclose, freopen and closedir), with the 64-bit, __-prefixed
 * and fortified (__*_chk) names glibc exports.
 *
 * Each function marshals its call into the thread's slot; anything the agent
 * cannot carry exactly runs natively instead (and is counted). So does a call with a
 * buffer or iovec array that would fault (user_memory.c): the kernel then answers EFAULT
 * or the partial count, as natively, and the data stays where it was.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "agent.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

extern void __chk_fail(void) __attribute__((noreturn));
extern int __fxstat(int ver, int fd, struct stat *buf);

DECLARE_REAL(write);
DECLARE_REAL(read);
DECLARE_REAL(pread);
DECLARE_REAL(pwrite);
DECLARE_REAL(readv);
DECLARE_REAL(writev);
DECLARE_REAL(lseek);
DECLARE_REAL(fsync);
DECLARE_REAL(fdatasync);
DECLARE_REAL(ftruncate);
DECLARE_REAL(fstat);
DECLARE_REAL(__fxstat);
DECLARE_REAL(close);
DECLARE_REAL(fclose);
DECLARE_REAL(closedir);
DECLARE_REAL(freopen);

/* Put an outgoing buffer in the slot: inline when it fits, else by address. */
static void put_buffer(struct lsca_call *c, const void *buf, size_t count)
{
    if (count <= LSCA_INLINE_MAX) {
        if (count)
            memcpy(c->slot->data, buf, count);
        c->slot->data_len = (uint32_t)count;
    } else {
        c->slot->xfer = LSCA_XFER_REMOTE;
        c->slot->remote_addr = (uint64_t)(uintptr_t)buf;
    }
}

/* Prepare an incoming buffer: the worker fills data[] or writes the address itself. */
static void want_buffer(struct lsca_call *c, void *buf, size_t count)
{
    if (count > LSCA_INLINE_MAX) {
        c->slot->xfer = LSCA_XFER_REMOTE;
        c->slot->remote_addr = (uint64_t)(uintptr_t)buf;
    }
}

/* Copy an inline answer out to the caller's buffer. */
static void take_buffer(struct lsca_call *c, void *buf, size_t count)
{
    long n = (long)c->slot->result;
    if (c->slot->xfer == LSCA_XFER_INLINE && n > 0 && (size_t)n <= count && n <= LSCA_INLINE_MAX)
        memcpy(buf, c->slot->data, (size_t)n);
}

/* ---- write / pwrite ---- */

static ssize_t proxy_write(enum lsca_op op, int fd, const void *buf, size_t count, off_t offset)
{
    struct lsca_call c = { .report = 0 };
    ssize_t r;

    if (!lsca_user_readable(buf, count)) {
        lsca_count_passthrough(op);
    } else if (lsca_begin(&c, op)) {
        c.slot->args[0] = (uint64_t)(int64_t)fd;
        c.slot->args[1] = count;
        c.slot->args[2] = (uint64_t)(int64_t)offset;
        put_buffer(&c, buf, count);
        if (lsca_exchange(&c))
            return lsca_end(&c);
        lsca_end(&c);
    }
    r = op == LSCA_OP_PWRITE ? REAL(pwrite)(fd, buf, count, offset) : REAL(write)(fd, buf, count);
    lsca_report_waited(&c, r, buf, count);
    return r;
}

ssize_t write(int fd, const void *buf, size_t count)
{
    return proxy_write(LSCA_OP_WRITE, fd, buf, count, 0);
}

ssize_t __write(int fd, const void *buf, size_t count) __attribute__((alias("write")));

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset)
{
    return proxy_write(LSCA_OP_PWRITE, fd, buf, count, offset);
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) __attribute__((alias("pwrite")));
ssize_t __pwrite64(int fd, const void *buf, size_t count, off_t offset) __attribute__((alias("pwrite")));

/* ---- read / pread ---- */

static ssize_t proxy_read(enum lsca_op op, int fd, void *buf, size_t count, off_t offset)
{
    struct lsca_call c = { .report = 0 };
    ssize_t r;

    /* Checked before: data the worker read could not be given back to the file or pipe. */
    if (!lsca_user_writable(buf, count)) {
        lsca_count_passthrough(op);
    } else if (lsca_begin(&c, op)) {
        c.slot->args[0] = (uint64_t)(int64_t)fd;
        c.slot->args[1] = count;
        c.slot->args[2] = (uint64_t)(int64_t)offset;
        want_buffer(&c, buf, count);
        if (lsca_exchange(&c)) {
            take_buffer(&c, buf, count);
            return lsca_end(&c);
        }
        lsca_end(&c);
    }
    r = op == LSCA_OP_PREAD ? REAL(pread)(fd, buf, count, offset) : REAL(read)(fd, buf, count);
    lsca_report_waited(&c, r, buf, r > 0 ? (size_t)r : 0);
    return r;
}

ssize_t read(int fd, void *buf, size_t count)
{
    return proxy_read(LSCA_OP_READ, fd, buf, count, 0);
}

ssize_t __read(int fd, void *buf, size_t count) __attribute__((alias("read")));

ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen)
{
    if (count > buflen)
        __chk_fail();
    return read(fd, buf, count);
}

ssize_t pread(int fd, void *buf, size_t count, off_t offset)
{
    return proxy_read(LSCA_OP_PREAD, fd, buf, count, offset);
}

ssize_t pread64(int fd, void *buf, size_t count, off_t offset) __attribute__((alias("pread")));
ssize_t __pread64(int fd, void *buf, size_t count, off_t offset) __attribute__((alias("pread")));

ssize_t __pread_chk(int fd, void *buf, size_t count, off_t offset, size_t buflen)
{
    if (count > buflen)
        __chk_fail();
    return pread(fd, buf, count, offset);
}

ssize_t __pread64_chk(int fd, void *buf, size_t count, off_t offset, size_t buflen)
    __attribute__((alias("__pread_chk")));

/* ---- readv / writev ---- */

/* The caller's iovec array, copied into the tail of the slot's data (the kernel too reads
 * it once), with the total length; NULL when the call must run natively: the kernel would
 * refuse it (EINVAL), or the array or a buffer would fault (EFAULT, or a partial count). */
static const struct iovec *take_iovecs(struct lsca_call *c, const struct iovec *iov, int iovcnt, int write,
                                       size_t *total)
{
    size_t bytes;
    struct iovec *v;
    int i;

    *total = 0;
    if (iovcnt < 0 || iovcnt > IOV_MAX)
        return NULL;
    bytes = (size_t)iovcnt * sizeof(*iov);
    v = (struct iovec *)(c->slot->data + LSCA_INLINE_MAX - bytes);
    if (lsca_user_read(v, iov, bytes) < 0)
        return NULL;
    for (i = 0; i < iovcnt; i++) {
        if (v[i].iov_len > (size_t)SSIZE_MAX - *total)
            return NULL;
        if (write ? !lsca_user_readable(v[i].iov_base, v[i].iov_len)
                  : !lsca_user_writable(v[i].iov_base, v[i].iov_len))
            return NULL;
        *total += v[i].iov_len;
    }
    return v;
}

/* Whether the bytes travel in the slot beside the copied iovec array; else the array moves
 * to the start of data[] and the worker moves the bytes with process_vm_readv/writev over it. */
static int iovec_inline(struct lsca_call *c, const struct iovec *v, int iovcnt, size_t total)
{
    size_t bytes = (size_t)iovcnt * sizeof(*v);

    if (total <= LSCA_INLINE_MAX - bytes)
        return 1;
    c->slot->xfer = LSCA_XFER_REMOTE;
    memmove(c->slot->data, v, bytes);
    c->slot->data_len = (uint32_t)bytes;
    return 0;
}

ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
    struct lsca_call c = { .report = 0 };
    const struct iovec *v;
    size_t total;
    ssize_t r;

    if (lsca_begin(&c, LSCA_OP_WRITEV)) {
        if (!(v = take_iovecs(&c, iov, iovcnt, 1, &total))) {
            lsca_abandon(&c);
            return REAL(writev)(fd, iov, iovcnt);
        }
        c.slot->args[0] = (uint64_t)(int64_t)fd;
        c.slot->args[1] = (uint64_t)total;
        c.slot->args[2] = (uint64_t)iovcnt;
        if (iovec_inline(&c, v, iovcnt, total)) {
            /* Gathered into one buffer: one write of the same bytes, equally atomic. */
            size_t off = 0;
            int i;
            for (i = 0; i < iovcnt; i++) {
                if (v[i].iov_len)
                    memcpy(c.slot->data + off, v[i].iov_base, v[i].iov_len);
                off += v[i].iov_len;
            }
            c.slot->data_len = (uint32_t)off;
        }
        if (lsca_exchange(&c))
            return lsca_end(&c);
        lsca_end(&c);
    }
    r = REAL(writev)(fd, iov, iovcnt);
    lsca_report_waited(&c, r, NULL, 0);
    return r;
}

ssize_t readv(int fd, const struct iovec *iov, int iovcnt)
{
    struct lsca_call c = { .report = 0 };
    const struct iovec *v;
    size_t total;
    ssize_t r;

    if (lsca_begin(&c, LSCA_OP_READV)) {
        if (!(v = take_iovecs(&c, iov, iovcnt, 0, &total))) {
            lsca_abandon(&c);
            return REAL(readv)(fd, iov, iovcnt);
        }
        c.slot->args[0] = (uint64_t)(int64_t)fd;
        c.slot->args[1] = (uint64_t)total;
        c.slot->args[2] = (uint64_t)iovcnt;
        iovec_inline(&c, v, iovcnt, total);
        if (lsca_exchange(&c)) {
            if (c.slot->xfer == LSCA_XFER_INLINE && c.slot->result > 0) {
                /* Scatter the bytes read over the caller's buffers, in order (the worker
                 * wrote at most total bytes: the copied array after them is intact). */
                size_t left = (size_t)c.slot->result, off = 0;
                int i;
                for (i = 0; i < iovcnt && left; i++) {
                    size_t n = v[i].iov_len < left ? v[i].iov_len : left;
                    memcpy(v[i].iov_base, c.slot->data + off, n);
                    off += n;
                    left -= n;
                }
            }
            return lsca_end(&c);
        }
        lsca_end(&c);
    }
    r = REAL(readv)(fd, iov, iovcnt);
    lsca_report_waited(&c, r, NULL, 0);
    return r;
}

/* ---- calls with scalar arguments ---- */

static long proxy_scalar(enum lsca_op op, int fd, uint64_t a1, uint64_t a2, int *answered)
{
    struct lsca_call c;

    *answered = 0;
    if (!lsca_begin(&c, op))
        return 0;
    c.slot->args[0] = (uint64_t)(int64_t)fd;
    c.slot->args[1] = a1;
    c.slot->args[2] = a2;
    *answered = lsca_exchange(&c);
    long result = lsca_end(&c);
    return *answered ? result : 0;
}

off_t lseek(int fd, off_t offset, int whence)
{
    int answered;
    long r = proxy_scalar(LSCA_OP_LSEEK, fd, (uint64_t)(int64_t)offset, (uint64_t)(int64_t)whence, &answered);
    return answered ? (off_t)r : REAL(lseek)(fd, offset, whence);
}

off_t lseek64(int fd, off_t offset, int whence) __attribute__((alias("lseek")));
off_t __lseek(int fd, off_t offset, int whence) __attribute__((alias("lseek")));

int fsync(int fd)
{
    int answered;
    long r = proxy_scalar(LSCA_OP_FSYNC, fd, 0, 0, &answered);
    return answered ? (int)r : REAL(fsync)(fd);
}

int fdatasync(int fd)
{
    int answered;
    long r = proxy_scalar(LSCA_OP_FDATASYNC, fd, 0, 0, &answered);
    return answered ? (int)r : REAL(fdatasync)(fd);
}

int ftruncate(int fd, off_t length)
{
    int answered;
    long r = proxy_scalar(LSCA_OP_FTRUNCATE, fd, (uint64_t)(int64_t)length, 0, &answered);
    return answered ? (int)r : REAL(ftruncate)(fd, length);
}

int ftruncate64(int fd, off_t length) __attribute__((alias("ftruncate")));

/* ---- fstat ---- */

static int proxy_fstat(int fd, struct stat *buf, int *answered)
{
    struct lsca_call c;

    *answered = 0;
    if (!lsca_user_writable(buf, sizeof(*buf))) {
        lsca_count_passthrough(LSCA_OP_FSTAT);
        return 0;
    }
    if (!lsca_begin(&c, LSCA_OP_FSTAT))
        return 0;
    c.slot->args[0] = (uint64_t)(int64_t)fd;
    *answered = lsca_exchange(&c);
    /* The worker runs on this machine: data[] holds this arch's native struct stat. */
    if (*answered && c.slot->result == 0 && c.slot->data_len == sizeof(*buf))
        memcpy(buf, c.slot->data, sizeof(*buf));
    return (int)lsca_end(&c);
}

int fstat(int fd, struct stat *buf)
{
    int answered;
    int r = proxy_fstat(fd, buf, &answered);
    return answered ? r : REAL(fstat)(fd, buf);
}

int fstat64(int fd, struct stat64 *buf)
{
    return fstat(fd, (struct stat *)buf);    /* the same layout on 64-bit arches */
}

int __fxstat(int ver, int fd, struct stat *buf)
{
    int answered = 0, r = 0;
    if (ver == NATIVE_STAT_VER)
        r = proxy_fstat(fd, buf, &answered);
    else
        lsca_count_passthrough(LSCA_OP_FSTAT);
    return answered ? r : REAL(__fxstat)(ver, fd, buf);
}

int __fxstat64(int ver, int fd, struct stat64 *buf)
{
    return __fxstat(ver, fd, (struct stat *)buf);
}

/* ---- close ---- */

/* A process cannot close another's descriptor: the agent closes natively, then
 * tells the worker (inside the same close()) so it drops its reference to the file
 * before close returns: EOF on pipes and the last-close effects stay as native. */
static void report_close(int fd, int r)
{
    int err = errno;
    struct lsca_call c;

    if (lsca_begin(&c, LSCA_OP_CLOSE)) {
        c.slot->args[0] = (uint64_t)(int64_t)fd;
        c.slot->args[1] = (uint64_t)(int64_t)r;
        c.slot->args[2] = (uint64_t)(int64_t)err;
        lsca_exchange(&c);
        lsca_end(&c);
    }
    errno = err;
}

int close(int fd)
{
    if (lsca_agent_fd(fd)) {
        errno = EBADF;               /* the program never opened it */
        return -1;
    }
    int r = REAL(close)(fd);
    report_close(fd, r);
    return r;
}

int __close(int fd) __attribute__((alias("close")));

/* ---- fclose / freopen / closedir ----
 * glibc closes a stream's descriptor with its internal close, which no interposition sees:
 * report it as close() does, or a worker's duplicate of it (the program made proxied calls
 * on fileno(f) or dirfd(d)) outlives it until the worker idles: a umount right after would
 * be EBUSY, a pipe's reader would wait for EOF. */
static int stream_fd(int fd)
{
    return fd >= 0 && !lsca_agent_fd(fd) ? fd : -1;
}

int fclose(FILE *f)
{
    int err = errno;
    int fd = f ? stream_fd(fileno(f)) : -1;     /* fclose(NULL) faults in glibc, as natively */
    errno = err;
    int r = REAL(fclose)(f);
    if (fd >= 0)
        report_close(fd, r);
    return r;
}

/* freopen closes the stream's file (and may open the new one on the same number). */
FILE *freopen(const char *path, const char *mode, FILE *f)
{
    int err = errno;
    int fd = f ? stream_fd(fileno(f)) : -1;
    errno = err;
    FILE *r = REAL(freopen)(path, mode, f);
    if (fd >= 0)
        report_close(fd, 0);
    return r;
}

FILE *freopen64(const char *path, const char *mode, FILE *f) __attribute__((alias("freopen")));

int closedir(DIR *d)
{
    int err = errno;
    DIR *given = d;
    __asm__("" : "+r"(given));          /* closedir is declared nonnull, yet glibc's is EINVAL for NULL */
    int fd = given ? stream_fd(dirfd(given)) : -1;
    errno = err;
    int r = REAL(closedir)(d);
    if (fd >= 0)
        report_close(fd, r);
    return r;
}

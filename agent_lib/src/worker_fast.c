/*
 * worker_fast.c - see lsca_worker_fast.h: clients, the descriptor cache, the descriptor,
 * dup and socket handlers, accounting and the loop. Trace records and their streams are
 * worker_trace.c's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lsca_worker_fast.h"
#include "lsca_worker_sys.h"
#include "worker_trace.h"

/* Bytes moved by address in one call; a larger call runs natively (one kernel call either way). */
#define REMOTE_MAX ((uint64_t)256 << 20)
#define IOVEC_MAX 1024
#define IOVEC_SIZE 16
/* A scratch buffer this large is kept per thread; larger ones are mapped per call. */
#define SCRATCH_KEEP ((size_t)16 << 20)

#define IO_OPS ((1ull << LSCA_OP_READ) | (1ull << LSCA_OP_WRITE) | (1ull << LSCA_OP_PREAD) |       \
                (1ull << LSCA_OP_PWRITE) | (1ull << LSCA_OP_READV) | (1ull << LSCA_OP_WRITEV) |    \
                (1ull << LSCA_OP_LSEEK) | (1ull << LSCA_OP_FSYNC) | (1ull << LSCA_OP_FDATASYNC) |  \
                (1ull << LSCA_OP_FTRUNCATE) | (1ull << LSCA_OP_FSTAT) | REPORT_OPS)
/* Calls the agent ran natively and only reports (args: what, native result, native errno):
 * the op table's REPORT lines, all answered by the compiled handler. */
#define REPORT_BIT(NAME, lname, code, classes, facts, ...) | ((facts) & LSCA_OPF_REPORT ? 1ull << (code) : 0)
#define REPORT_OPS (0 LSCA_OPS(REPORT_BIT))
/* Path calls with a compiled route for their plain case (worker_path.c). */
#define NAME_OPS ((1ull << LSCA_OP_UNLINKAT) | (1ull << LSCA_OP_MKDIRAT) | (1ull << LSCA_OP_FACCESSAT))
#define TWO_NAME_OPS ((1ull << LSCA_OP_RENAMEAT2) | (1ull << LSCA_OP_LINKAT))
#define PATH_OPS ((1ull << LSCA_OP_FSTATAT) | (1ull << LSCA_OP_STATX) | (1ull << LSCA_OP_OPENAT) |     \
                  (1ull << LSCA_OP_UTIMENSAT) | NAME_OPS | TWO_NAME_OPS)
#define FD_OWNER_OPS ((1ull << LSCA_OP_FCHMOD) | (1ull << LSCA_OP_FCHOWN))
/* Descriptor-creating calls with a compiled route. */
#define DUP_OPS ((1ull << LSCA_OP_DUP) | (1ull << LSCA_OP_DUP3))

/* ---- clients ---- */

struct lsca_client_fast *lsca_fast_new(void *shard, int shard_id, int pid, int pidfd, int agent_fd,
                                       unsigned worker)
{
    struct lsca_client_fast *c = calloc(1, sizeof(*c));
    unsigned i;

    if (!c)
        return NULL;
    c->shard = shard;
    c->shard_id = shard_id;
    c->pid = pid;
    c->pidfd = pidfd;
    c->agent_fd = agent_fd;
    c->my_pid = getpid();
    c->worker = worker;
    lsca_trace_init(c);
    c->proc_fd = -1;
    c->proc_dir = -1;
    c->chan_fd = -1;
    for (i = 0; i < LSCA_TASKS_KEPT; i++)
        c->tasks[i].dir = c->tasks[i].status = -1;
    for (i = 0; i < LSCA_FDTAB_SIZE; i++)
        c->fds[i].fd = -1;
    return c;
}

void lsca_fast_free(struct lsca_client_fast *c)
{
    if (!c)
        return;
    lsca_fd_clear(c);
    lsca_path_forget_tasks(c);
    lsca_trace_free(c);
    free(c);
}

/* ---- authority ---- */

void lsca_fast_watch(struct lsca_client_fast *c, int proc_fd, unsigned uid, unsigned gid)
{
    c->proc_fd = proc_fd;
    c->owner_uid = uid;
    c->owner_gid = gid;
}

void lsca_fast_set_proc(struct lsca_client_fast *c, int proc_dir)
{
    lsca_path_forget_tasks(c);
    c->proc_dir = proc_dir;
    c->execs_seen = __atomic_load_n(&((struct lsca_shard_header *)c->shard)->execs, __ATOMIC_RELAXED);
}

int lsca_client_authorized(struct lsca_client_fast *c)
{
    struct stat st;

    if (!__atomic_load_n(&c->revoked, __ATOMIC_RELAXED)) {
        if (c->proc_fd < 0)
            return 1;
        /* The owner of /proc/PID/status is computed at each lookup: euid/egid while the process
         * is dumpable, else root (not so for the directory itself); ENOENT once it is gone. */
        if (fstatat(c->proc_fd, "status", &st, AT_SYMLINK_NOFOLLOW) == 0 && st.st_uid == c->owner_uid &&
            st.st_gid == c->owner_gid)
            return 1;
        __atomic_store_n(&c->revoked, 1, __ATOMIC_RELAXED);
    }
    errno = EPERM;
    return 0;
}

/* Checked before (never move bytes for a process that is no longer the user) and after (the
 * pid named the registered process throughout: a pid is reused only once its process was
 * reaped, which the check after sees as a root-owned /proc/PID). */
#define BOUND_MOVE(c, call)                                                     \
    do {                                                                        \
        int64_t moved_;                                                         \
        if (!lsca_client_authorized(c))                                         \
            return -1;                                                          \
        moved_ = (call);                                                        \
        if (moved_ >= 0 && !lsca_client_authorized(c))                          \
            return -1;                                                          \
        return moved_;                                                          \
    } while (0)

int64_t lsca_client_read(struct lsca_client_fast *c, void *local, uint64_t remote, size_t len)
{
    BOUND_MOVE(c, lsca_remote_read(c->pid, local, remote, len));
}

int64_t lsca_client_write(struct lsca_client_fast *c, const void *local, uint64_t remote, size_t len)
{
    BOUND_MOVE(c, lsca_remote_write(c->pid, local, remote, len));
}

static int64_t client_gather(struct lsca_client_fast *c, void *local, size_t len, const void *iov, int iovcnt)
{
    BOUND_MOVE(c, lsca_remote_gather(c->pid, local, len, iov, iovcnt));
}

static int64_t client_scatter(struct lsca_client_fast *c, const void *local, size_t len, const void *iov, int iovcnt)
{
    BOUND_MOVE(c, lsca_remote_scatter(c->pid, local, len, iov, iovcnt));
}

/* ---- descriptors ---- */

int lsca_fd_get(struct lsca_client_fast *c, int64_t client_fd, struct lsca_fd_entry *out)
{
    struct lsca_fd_entry *cached;
    unsigned mode, dev_major;
    int fd;

    memset(out, 0, sizeof(*out));
    out->fd = -1;
    out->client_fd = (int32_t)client_fd;
    if (client_fd < 0 || client_fd > 0x7FFFFFFF)
        return 1;
    if (c->pidfd < 0) {
        errno = ENOSYS;
        return -1;
    }
    cached = &c->fds[client_fd % LSCA_FDTAB_SIZE];
    if (cached->fd >= 0 && cached->client_fd == client_fd) {
        /* The same file we took while the process was the user: acting on it gives nothing the
         * user did not have (even if it exec'd a set-id image since, or its pid now names a
         * process that got this very file from it), so no authority check on this path. */
        if (lsca_kcmp_file(c->pid, c->my_pid, (int)client_fd, cached->fd) == 0) {
            *out = *cached;
            return 0;
        }
        close(cached->fd);              /* closed and reused behind the agent's back */
        cached->fd = -1;
    }
    fd = lsca_pidfd_getfd(c->pidfd, (int)client_fd);
    if (fd < 0)
        return errno == EBADF ? 1 : -1;
    if (c->agent_fd >= 0 && lsca_kcmp_file(c->my_pid, c->my_pid, fd, c->agent_fd) == 0) {
        close(fd);
        return 1;                       /* the agent's channel: the program never opened it */
    }
    /* Taken first, checked after: a file the process opened once it stopped being the user
     * (a set-uid image's) is never acted on. */
    if (!lsca_client_authorized(c) || lsca_fd_kind(fd, &mode, &dev_major) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    out->fd = fd;
    out->mode = mode;
    out->dev_major = dev_major;
    out->unix_socket = S_ISSOCK(mode) && lsca_unix_socket(fd);   /* the same file while kcmp says so */
    if (cached->fd >= 0)
        out->owned = 1;                 /* its place holds another descriptor a caller may be using */
    else
        *cached = *out;
    return 0;
}

void lsca_fd_put(const struct lsca_fd_entry *e)
{
    if (e->owned && e->fd >= 0)
        close(e->fd);
}

void lsca_fd_drop(struct lsca_client_fast *c, int64_t client_fd)
{
    struct lsca_fd_entry *cached;

    if (client_fd < 0 || client_fd > 0x7FFFFFFF)
        return;
    cached = &c->fds[client_fd % LSCA_FDTAB_SIZE];
    if (cached->fd >= 0 && cached->client_fd == client_fd) {
        close(cached->fd);
        cached->fd = -1;
    }
}

void lsca_fd_clear(struct lsca_client_fast *c)
{
    unsigned i;

    for (i = 0; i < LSCA_FDTAB_SIZE; i++) {
        if (c->fds[i].fd >= 0) {
            close(c->fds[i].fd);
            c->fds[i].fd = -1;
        }
    }
}

/* ---- the hot descriptor ops ---- */

static __thread void *scratch;
static __thread size_t scratch_size;

/* A buffer of len bytes for bytes that travel by address; *mapped when it must be unmapped. */
static void *scratch_get(size_t len, int *mapped)
{
    void *p;

    *mapped = 0;
    if (len == 0)
        len = 1;
    if (len <= scratch_size)
        return scratch;
    if (len > SCRATCH_KEEP) {
        p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        *mapped = 1;
        return p;
    }
    p = mmap(NULL, SCRATCH_KEEP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    scratch = p;
    scratch_size = SCRATCH_KEEP;
    return p;
}

int lsca_is_io_op(unsigned op)
{
    return op < LSCA_OP_MAX && ((IO_OPS >> op) & 1);
}

#define ANSWER(expr)                                                            \
    do {                                                                        \
        int64_t r_ = (int64_t)(expr);                                           \
        *result = r_ < 0 ? -1 : r_;                                             \
        *err = r_ < 0 ? errno : 0;                                              \
        return LSCA_ANSWERED;                                                   \
    } while (0)

#define FAIL(e)                                                                 \
    do {                                                                        \
        *result = -1;                                                           \
        *err = (e);                                                             \
        return LSCA_ANSWERED;                                                   \
    } while (0)

/* A write-like call's bytes: in the slot, or fetched from the client into scratch. */
static const void *outgoing(struct lsca_client_fast *c, struct lsca_slot *slot, unsigned op, uint64_t count,
                            uint32_t xfer, int *mapped, int *error)
{
    void *buf;

    *mapped = 0;
    if (xfer == LSCA_XFER_INLINE) {
        if (slot->data_len != count) {
            *error = EINVAL;
            return NULL;
        }
        return slot->data;
    }
    buf = scratch_get(count, mapped);
    if (!buf) {
        *error = ENOMEM;
        return NULL;
    }
    if (op == LSCA_OP_WRITEV) {
        uint64_t iovcnt = slot->args[2];
        if (iovcnt > IOVEC_MAX || slot->data_len != iovcnt * IOVEC_SIZE) {
            *error = EINVAL;
            return NULL;
        }
        if (client_gather(c, buf, count, slot->data, (int)iovcnt) < 0) {
            *error = errno;
            return NULL;
        }
    } else if (lsca_client_read(c, buf, slot->remote_addr, count) < 0) {
        *error = errno;
        return NULL;
    }
    return buf;
}

/* Deliver n bytes read into buf to the client (buf is the slot itself when inline). */
static int incoming(struct lsca_client_fast *c, struct lsca_slot *slot, unsigned op, uint32_t xfer,
                    const void *buf, int64_t n)
{
    if (xfer == LSCA_XFER_INLINE) {
        slot->data_len = (uint32_t)n;
        return 0;
    }
    if (n <= 0)
        return 0;
    if (op == LSCA_OP_READV) {
        uint64_t iovcnt = slot->args[2];
        if (iovcnt > IOVEC_MAX || slot->data_len != iovcnt * IOVEC_SIZE) {
            errno = EINVAL;
            return -1;
        }
        return client_scatter(c, buf, (size_t)n, slot->data, (int)iovcnt) < 0 ? -1 : 0;
    }
    return lsca_client_write(c, buf, slot->remote_addr, (size_t)n) < 0 ? -1 : 0;
}

/* A write or truncate clears a set-id file's set-uid bit (and its set-gid bit, with group
 * execute) unless the writer has CAP_FSETID, which a root worker has for whomever it serves:
 * on such a file it acts with the calling thread's identity (lsca_path_take_caller). */
static int setid_file(const struct lsca_fd_entry *e)
{
    static int worker_root = -1;
    struct stat st;

    if (worker_root < 0)
        worker_root = geteuid() == 0;
    return worker_root && e->fd >= 0 && S_ISREG(e->mode) && fstat(e->fd, &st) == 0 &&
           ((st.st_mode & S_ISUID) || (st.st_mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP));
}

int lsca_handle_io(struct lsca_client_fast *c, struct lsca_slot *slot, const struct lsca_fd_entry *e,
                   int64_t *result, int32_t *err)
{
    unsigned op = slot->op;
    uint32_t xfer = slot->xfer;
    uint64_t count = slot->args[1];
    int fd = e->fd;
    int mapped = 0, error = 0, nowait, as_caller;
    void *buf;
    int64_t n;

    switch (op) {
    case LSCA_OP_WRITE: case LSCA_OP_WRITEV: case LSCA_OP_PWRITE:
    case LSCA_OP_READ: case LSCA_OP_READV: case LSCA_OP_PREAD:
        /* The length first, as the Python route always did: a bad one is EINVAL before EBADF. */
        if (xfer == LSCA_XFER_INLINE) {
            if (count > LSCA_INLINE_MAX)
                FAIL(EINVAL);
        } else if (xfer == LSCA_XFER_REMOTE) {
            if (count > REMOTE_MAX)
                return LSCA_DECLINE;
        } else {
            FAIL(EINVAL);
        }
        break;
    default:
        break;
    }

    switch (op) {
    case LSCA_OP_WRITE: case LSCA_OP_WRITEV: case LSCA_OP_PWRITE: {
        const void *data;
        /* A unix socket's receiver may see who sent: the program itself sends (lsca_unix_socket). */
        if (op != LSCA_OP_PWRITE && e->unix_socket)
            return LSCA_WOULD_BLOCK;
        /* A call that may block would stall every client of this worker: the program makes it. */
        if (op != LSCA_OP_PWRITE && fd >= 0 && lsca_would_block(fd, e->mode, e->dev_major, 1, count))
            return LSCA_WOULD_BLOCK;
        /* A pipe's writer here never waits: see lsca_do_write_nowait. */
        nowait = op != LSCA_OP_PWRITE && fd >= 0 && S_ISFIFO(e->mode);
        as_caller = setid_file(e);
        if (as_caller && lsca_path_take_caller(c, slot) < 0)
            return LSCA_DECLINE;
        data = outgoing(c, slot, op, count, xfer, &mapped, &error);
        if (!data) {
            if (as_caller)
                lsca_path_settle(NULL);
            FAIL(error);
        }
        n = op == LSCA_OP_PWRITE ? lsca_do_pwrite(fd, data, count, (int64_t)slot->args[2])
            : nowait ? lsca_do_write_nowait(fd, data, count) : lsca_do_write(fd, data, count);
        error = errno;
        if (as_caller)
            lsca_path_settle(NULL);     /* a set-id file's write is rare: no identity kept for it */
        if (mapped)
            munmap((void *)data, count);
        /* EOPNOTSUPP: a kernel whose pipes refuse RWF_NOWAIT (Debian 12's 6.1 does). */
        if (n < 0 && nowait && (error == EOPNOTSUPP || (error == EAGAIN && !lsca_nonblocking(fd))))
            return LSCA_WOULD_BLOCK;    /* nothing was written: the program's own call waits */
        errno = error;
        ANSWER(n);
    }
    case LSCA_OP_READ: case LSCA_OP_READV: case LSCA_OP_PREAD:
        if (op != LSCA_OP_PREAD && fd >= 0 && lsca_would_block(fd, e->mode, e->dev_major, 0, count))
            return LSCA_WOULD_BLOCK;
        /* Here a file that can make a reader wait is read without waiting (see lsca_do_read_nowait). */
        nowait = op != LSCA_OP_PREAD && fd >= 0 && lsca_may_wait(e->mode, e->dev_major);
        buf = xfer == LSCA_XFER_INLINE ? slot->data : scratch_get(count, &mapped);
        if (!buf)
            FAIL(ENOMEM);
        n = op == LSCA_OP_PREAD ? lsca_do_pread(fd, buf, count, (int64_t)slot->args[2])
            : nowait ? lsca_do_read_nowait(fd, buf, count) : lsca_do_read(fd, buf, count);
        error = errno;
        if (n < 0 && nowait && (error == EOPNOTSUPP || (error == EAGAIN && !lsca_nonblocking(fd)))) {
            if (mapped)
                munmap(buf, count);
            return LSCA_WOULD_BLOCK;    /* nothing was read: the program's own call waits */
        }
        if (n >= 0 && incoming(c, slot, op, xfer, buf, n) < 0)
            n = -1;
        error = errno;
        if (mapped)
            munmap(buf, count);
        errno = error;
        ANSWER(n);
    case LSCA_OP_LSEEK: {
        int64_t whence = (int64_t)slot->args[2];
        if (whence < INT_MIN || whence > INT_MAX)
            FAIL(EINVAL);               /* a value the C argument cannot hold: malformed */
        ANSWER(lsca_do_lseek(fd, (int64_t)slot->args[1], (int)whence));
    }
    case LSCA_OP_FSYNC:
        ANSWER(lsca_do_fsync(fd));
    case LSCA_OP_FDATASYNC:
        ANSWER(lsca_do_fdatasync(fd));
    case LSCA_OP_FTRUNCATE:
        as_caller = setid_file(e);
        if (as_caller && lsca_path_take_caller(c, slot) < 0)
            return LSCA_DECLINE;
        n = lsca_do_ftruncate(fd, (int64_t)slot->args[1]);
        if (as_caller) {
            error = errno;
            lsca_path_settle(NULL);
            errno = error;
        }
        ANSWER(n);
    case LSCA_OP_FSTAT:
        n = lsca_fstat_into(fd, slot->data);
        if (n == 0)
            slot->data_len = (uint32_t)lsca_stat_size();
        ANSWER(n);
    case LSCA_OP_CLOSE: case LSCA_OP_CHDIR: case LSCA_OP_FCHDIR: {
        /* The agent ran it natively already (a close: we drop our reference before its
         * close() returns); the answer is what it reports. */
        int64_t reported = (int64_t)slot->args[1], reported_err = (int64_t)slot->args[2];
        if (op == LSCA_OP_CLOSE)
            lsca_fd_drop(c, (int64_t)slot->args[0]);
        if (reported < 0)
            FAIL(reported_err > 0 && reported_err < 4096 ? (int32_t)reported_err : EINVAL);
        *result = reported;
        *err = 0;
        return LSCA_ANSWERED;
    }
    default:
        FAIL(EINVAL);
    }
}

/* ---- sockets ---- */

#define SOCKET_OPS ((1ull << LSCA_OP_SENDTO) | (1ull << LSCA_OP_RECVFROM) | (1ull << LSCA_OP_SHUTDOWN))
#define PAYLOAD_MAX (LSCA_INLINE_MAX - LSCA_ADDR_MAX)

/* handlers_socket's sendto, recvfrom and shutdown when the bytes are inline: the same checks
 * in the same order. A call that may wait is handed back (the program's thread waits
 * natively); anything else unusual goes the Python way. */
static int handle_socket(struct lsca_slot *slot, const struct lsca_fd_entry *e, int64_t *result, int32_t *err)
{
    uint64_t length = slot->args[1], addrlen = slot->args[3];
    int64_t flags = (int64_t)slot->args[2];
    int fd = e->fd;

    if (slot->op == LSCA_OP_SHUTDOWN) {
        int64_t how = (int64_t)slot->args[1];
        if (how < INT_MIN || how > INT_MAX)
            return LSCA_DECLINE;
        ANSWER(lsca_do_shutdown(fd, (int)how));
    }
    if (slot->xfer != LSCA_XFER_INLINE || flags < INT_MIN || flags > INT_MAX || length > PAYLOAD_MAX ||
        addrlen > LSCA_ADDR_MAX)
        return LSCA_DECLINE;
    if (slot->op == LSCA_OP_SENDTO) {
        if (e->unix_socket)
            return LSCA_WOULD_BLOCK;    /* its receiver may see who sent, its address is a file */
        if (!(flags & MSG_DONTWAIT) && fd >= 0 && lsca_would_block(fd, e->mode, e->dev_major, 1, length))
            return LSCA_WOULD_BLOCK;
        if (slot->data_len != LSCA_ADDR_MAX + length)
            FAIL(EINVAL);
        {
            /* Never waiting here: a datagram's full peer (or another writer) can make a socket
             * that polled writable wait. Nothing sent: the program's own call waits. */
            int64_t n = lsca_do_sendto(fd, slot->data + LSCA_ADDR_MAX, length, (int)flags | MSG_DONTWAIT, slot->data,
                                       (uint32_t)addrlen);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !(flags & MSG_DONTWAIT) && fd >= 0 &&
                !lsca_nonblocking(fd))
                return LSCA_WOULD_BLOCK;
            ANSWER(n);
        }
    }
    /* recvfrom: addrlen says whether the sender's address is wanted. Tried without waiting. */
    if (!(flags & MSG_DONTWAIT) && fd >= 0 &&
        ((flags & MSG_WAITALL) || lsca_would_block(fd, e->mode, e->dev_major, 0, length)))
        return LSCA_WOULD_BLOCK;
    {
        uint8_t addr[LSCA_ADDR_MAX] = { 0 };
        uint32_t got_len = addrlen ? LSCA_ADDR_MAX : 0;
        int64_t n = lsca_do_recvfrom(fd, slot->data + LSCA_ADDR_MAX, length, (int)flags | MSG_DONTWAIT, addr,
                                     &got_len);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !(flags & MSG_DONTWAIT) && fd >= 0 &&
            !lsca_nonblocking(fd))
            return LSCA_WOULD_BLOCK;    /* nothing was received: the program's own call waits */
        if (n >= 0 && addrlen)          /* the kernel wrote the address only then */
            memcpy(slot->data, addr, got_len < LSCA_ADDR_MAX ? got_len : LSCA_ADDR_MAX);
        slot->new_fds[0] = n >= 0 ? (int32_t)got_len : 0;
        ANSWER(n);
    }
}

/* ---- descriptors for the client ---- */

int lsca_send_fd(int chan, uint64_t seq, int fd)
{
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
    struct iovec iov = { .iov_base = &seq, .iov_len = sizeof(seq) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = sizeof(control.buf) };
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

    memset(&control, 0, sizeof(control));
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &fd, sizeof(int));
    return sendmsg(chan, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(seq) ? 0 : -1;
}

/* handlers_path.h_dup for dup and dup3 (dup2): the duplicate of the file the client's oldfd
 * is open on goes over the channel; the agent puts it where it was asked (a traced call's
 * record is held till then: serve_fast). */
static int handle_dup(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err)
{
    struct lsca_fd_entry e;
    int got;

    if (c->chan_fd < 0)
        return LSCA_DECLINE;
    got = lsca_fd_get(c, (int64_t)slot->args[0], &e);
    if (got < 0)
        return LSCA_DECLINE;
    if (got == 1) {
        *result = -1;
        *err = EBADF;
        return LSCA_ANSWERED;
    }
    /* The agent puts the duplicate on newfd, which closes the file there: let go of ours. */
    if (slot->op == LSCA_OP_DUP3)
        lsca_fd_drop(c, (int64_t)slot->args[1]);
    *result = lsca_send_fd(c->chan_fd, slot->seq, e.fd) == 0 ? 0 : -1;
    *err = *result == 0 ? 0 : EIO;
    lsca_fd_put(&e);
    return LSCA_ANSWERED;
}

/* ---- accounting ---- */

static unsigned latency_bucket(uint64_t ns)
{
    unsigned b;

    ns >>= LSCA_LAT_SHIFT;
    if (ns == 0)
        return 0;
    b = 64 - (unsigned)__builtin_clzll(ns);
    return b < LSCA_LAT_BUCKETS ? b : LSCA_LAT_BUCKETS - 1;
}

#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

void lsca_account(struct lsca_worker_status *row, void *shard, unsigned op, uint64_t ns, int failed)
{
    struct lsca_shard_header *h = shard;

    if (op >= LSCA_OP_MAX)
        return;
    if (row) {
        struct lsca_op_stats *s = &row->ops[op];
        ADD(&s->calls, 1);
        if (failed)
            ADD(&s->errors, 1);
        ADD(&s->total_ns, ns);
        ADD(&s->hist[latency_bucket(ns)], 1);
        ADD(&row->busy_ns, ns);
    }
    if (h) {
        ADD(&h->proxied[op], 1);
        if (failed)
            ADD(&h->failed[op], 1);
        ADD(&h->worker_ns[op], ns);
    }
}

/* ---- the loop ---- */

void lsca_answer_reported(struct lsca_client_fast *c, unsigned i)
{
    struct lsca_slot *slot = lsca_shard_slot(c->shard, i);
    struct lsca_trace_record *r = lsca_trace_begin(c, slot);

    /* The client's word on its own call: kept within what an answer may hold, never acted on. */
    if (slot->err < 0 || slot->err >= 4096)
        slot->err = EINVAL;
    if (slot->result < -1)
        slot->result = -1;
    slot->status = LSCA_STATUS_DONE;
    if (r) {
        r->new_fds[0] = slot->result >= 0 && slot->result <= INT32_MAX ? (int32_t)slot->result : -1;
        r->new_fds[1] = -1;             /* an accept that waited: the one number it made */
        lsca_trace_end(c, r, slot, 0, 1);
    }
    lsca_worker_complete(c->shard, i);
}

/* Answer slot i here if it is a hot op we can answer now; 0 leaves it to the Python route. */
static int serve_fast(struct lsca_client_fast *c, struct lsca_worker_status *row, unsigned i, uint64_t started)
{
    struct lsca_slot *slot = lsca_shard_slot(c->shard, i);
    unsigned op = slot->op;
    struct lsca_fd_entry e;
    struct lsca_trace_record *r;
    int64_t result;
    int32_t err;
    uint64_t took;
    int outcome;

    lsca_path_settle(c);                /* another client's identity is not kept for this one */
    if ((__atomic_load_n(&c->held_mask, __ATOMIC_RELAXED) >> i) & 1)
        lsca_trace_release_held(c, i);  /* the client took the numbers: it calls again */
    if (slot->xfer == LSCA_XFER_REPORTED) {
        row->busy_slot = (int32_t)i;
        row->busy_shard = c->shard_id;
        lsca_answer_reported(c, i);
        row->busy_shard = 0;
        return 1;
    }
    if (op >= LSCA_OP_MAX || !(((IO_OPS | PATH_OPS | DUP_OPS | FD_OWNER_OPS | SOCKET_OPS) & ~c->slow_mask) >> op & 1))
        return 0;
    /* The length check comes first on both routes; a declined descriptor goes the Python way. */
    if ((REPORT_OPS | PATH_OPS | DUP_OPS) >> op & 1)
        memset(&e, 0, sizeof(e));       /* no descriptor to reach */
    else if (lsca_fd_get(c, (int64_t)slot->args[0], &e) < 0)
        return 0;
    row->busy_slot = (int32_t)i;        /* for the supervisor, should we die in it */
    row->busy_shard = c->shard_id;
    r = lsca_trace_begin(c, slot);
    if (op == LSCA_OP_FSTATAT || op == LSCA_OP_STATX)
        outcome = lsca_path_fstatat(c, slot, &result, &err);
    else if (op == LSCA_OP_OPENAT)
        outcome = lsca_path_openat(c, slot, &result, &err);
    else if ((NAME_OPS >> op) & 1)
        outcome = lsca_path_name_call(c, slot, &result, &err);
    else if ((TWO_NAME_OPS >> op) & 1)
        outcome = lsca_path_two_names(c, slot, &result, &err);
    else if (op == LSCA_OP_UTIMENSAT)
        outcome = lsca_path_utimensat(c, slot, &result, &err);
    else if ((SOCKET_OPS >> op) & 1)
        outcome = handle_socket(slot, &e, &result, &err);
    else if ((FD_OWNER_OPS >> op) & 1)
        outcome = lsca_path_fd_owner_call(c, slot, &e, &result, &err);
    else if ((DUP_OPS >> op) & 1)
        outcome = handle_dup(c, slot, &result, &err);
    else
        outcome = lsca_handle_io(c, slot, &e, &result, &err);
    lsca_fd_put(&e);
    if (outcome == LSCA_WOULD_BLOCK) {
        /* It would wait: the program's own thread waits for it natively, no thread of ours. */
        slot->status = LSCA_STATUS_WAIT_NATIVE;
        lsca_worker_complete(c->shard, i);
        row->busy_shard = 0;
        return 1;
    }
    if (outcome != LSCA_ANSWERED) {
        row->busy_shard = 0;
        return 0;
    }
    slot->status = LSCA_STATUS_DONE;
    slot->err = err;
    slot->result = result;
    took = lsca_now_ns() - started;
    if (r) {
        /* openat and dup: the record waits for the number the client puts it at. */
        int hold = result >= 0 && lsca_op_has(op, LSCA_OPF_NEW_FDS);
        lsca_trace_end(c, r, slot, took, !hold);
        if (hold)
            lsca_trace_hold(c, i, r);
    }
    lsca_worker_complete(c->shard, i);
    lsca_account(row, c->shard, op, took, result == -1);
    row->busy_shard = 0;
    return 1;
}

int lsca_worker_run(struct lsca_worker_ctx *ctx, struct lsca_client_fast **fast, struct lsca_worker_status *row,
                    uint64_t spin_ns, int timeout_ms, uint64_t turn_ns, int *shard_index, int *slot_index)
{
    uint64_t start = lsca_now_ns(), now;
    /* A sleeping call starts with the sleep (the caller spun already). */
    uint64_t spin = timeout_ms > 0 ? 0 : spin_ns;
    int got;

    for (;;) {
        struct lsca_client_fast *c;

        got = lsca_worker_next(ctx, shard_index, slot_index, spin, timeout_ms);
        now = lsca_now_ns();
        row->heartbeat_ns = now;
        if (got != LSCA_FOUND_CALL)
            break;
        c = fast[*shard_index];
        if (!c || !serve_fast(c, row, (unsigned)*slot_index, now))
            break;                      /* the call is the Python route's */
        if (lsca_now_ns() - start >= turn_ns) {
            got = LSCA_FOUND_TURN_OVER;
            break;
        }
        spin = spin_ns;
        timeout_ms = 0;
    }
    lsca_path_settle(NULL);             /* Python acts as the worker itself */
    return got;
}

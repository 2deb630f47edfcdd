/*
 * worker_fast.c - see lsca_worker_fast.h.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "lsca_worker_fast.h"
#include "lsca_worker_sys.h"

/* Bytes moved by address in one call; a larger call runs natively (one kernel call either way). */
#define REMOTE_MAX ((uint64_t)256 << 20)
#define IOVEC_MAX 1024
#define IOVEC_SIZE 16
/* A scratch buffer this large is kept per thread; larger ones are mapped per call. */
#define SCRATCH_KEEP ((size_t)16 << 20)
#define TRACE_FIRST_CAP (256 * 1024)
#define NO_DATA LSCA_TRACE_NO_DATA

#define IO_OPS ((1ull << LSCA_OP_READ) | (1ull << LSCA_OP_WRITE) | (1ull << LSCA_OP_PREAD) |       \
                (1ull << LSCA_OP_PWRITE) | (1ull << LSCA_OP_READV) | (1ull << LSCA_OP_WRITEV) |    \
                (1ull << LSCA_OP_LSEEK) | (1ull << LSCA_OP_FSYNC) | (1ull << LSCA_OP_FDATASYNC) |  \
                (1ull << LSCA_OP_FTRUNCATE) | (1ull << LSCA_OP_FSTAT) | REPORT_OPS)
/* Calls the agent ran natively and only reports (args: what, native result, native errno). */
#define REPORT_OPS ((1ull << LSCA_OP_CLOSE) | (1ull << LSCA_OP_CHDIR) | (1ull << LSCA_OP_FCHDIR))

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
    c->trace_fd = -1;
    for (i = 0; i < LSCA_FDTAB_SIZE; i++)
        c->fds[i].fd = -1;
    return c;
}

void lsca_fast_set_trace(struct lsca_client_fast *c, int fd, uint64_t mask)
{
    if (!c->trace_lock) {
        c->trace_lock = malloc(sizeof(pthread_mutex_t));
        if (!c->trace_lock)
            return;
        pthread_mutex_init(c->trace_lock, NULL);
    }
    pthread_mutex_lock(c->trace_lock);
    if (c->trace_fd >= 0)
        close(c->trace_fd);
    c->trace_fd = fd;
    c->trace_mask = fd >= 0 ? mask : 0;
    if (fd >= 0 && !c->trace_buf) {
        c->trace_buf = malloc(TRACE_FIRST_CAP);
        c->trace_cap = c->trace_buf ? TRACE_FIRST_CAP : 0;
        if (!c->trace_buf)
            c->trace_mask = 0;
    }
    pthread_mutex_unlock(c->trace_lock);
}

void lsca_fast_free(struct lsca_client_fast *c)
{
    if (!c)
        return;
    lsca_fd_clear(c);
    if (c->trace_lock) {
        lsca_trace_flush(c, 1);
        if (c->trace_fd >= 0)
            close(c->trace_fd);
        pthread_mutex_destroy(c->trace_lock);
        free(c->trace_lock);
    }
    free(c->trace_buf);
    free(c);
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
    if (lsca_fd_kind(fd, &mode, &dev_major) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    out->fd = fd;
    out->mode = mode;
    out->dev_major = dev_major;
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
    return op < 64 && ((IO_OPS >> op) & 1);
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
        if (lsca_remote_gather(c->pid, buf, count, slot->data, (int)iovcnt) < 0) {
            *error = errno;
            return NULL;
        }
    } else if (lsca_remote_read(c->pid, buf, slot->remote_addr, count) < 0) {
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
        return lsca_remote_scatter(c->pid, buf, (size_t)n, slot->data, (int)iovcnt) < 0 ? -1 : 0;
    }
    return lsca_remote_write(c->pid, buf, slot->remote_addr, (size_t)n) < 0 ? -1 : 0;
}

int lsca_handle_io(struct lsca_client_fast *c, struct lsca_slot *slot, const struct lsca_fd_entry *e,
                   int in_pool, int64_t *result, int32_t *err)
{
    unsigned op = slot->op;
    uint32_t xfer = slot->xfer;
    uint64_t count = slot->args[1];
    int fd = e->fd;
    int mapped = 0, error = 0;
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
        /* A call that may block would stall every client of this worker: a pool thread takes it. */
        if (op != LSCA_OP_PWRITE && !in_pool && fd >= 0 && lsca_would_block(fd, e->mode, e->dev_major, 1, count))
            return LSCA_WOULD_BLOCK;
        data = outgoing(c, slot, op, count, xfer, &mapped, &error);
        if (!data)
            FAIL(error);
        n = op == LSCA_OP_PWRITE ? lsca_do_pwrite(fd, data, count, (int64_t)slot->args[2])
                                 : lsca_do_write(fd, data, count);
        error = errno;
        if (mapped)
            munmap((void *)data, count);
        errno = error;
        ANSWER(n);
    }
    case LSCA_OP_READ: case LSCA_OP_READV: case LSCA_OP_PREAD:
        if (op != LSCA_OP_PREAD && !in_pool && fd >= 0 && lsca_would_block(fd, e->mode, e->dev_major, 0, count))
            return LSCA_WOULD_BLOCK;
        buf = xfer == LSCA_XFER_INLINE ? slot->data : scratch_get(count, &mapped);
        if (!buf)
            FAIL(ENOMEM);
        n = op == LSCA_OP_PREAD ? lsca_do_pread(fd, buf, count, (int64_t)slot->args[2])
                                : lsca_do_read(fd, buf, count);
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
        ANSWER(lsca_do_ftruncate(fd, (int64_t)slot->args[1]));
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

/* ---- records ---- */

#define RECORD_MAX (sizeof(struct lsca_trace_record) + 2 * LSCA_PATH_MAX + LSCA_PATH_MAX + 8)
static __thread uint64_t record_scratch[RECORD_MAX / 8 + 1];

static unsigned paths_of(unsigned op)
{
    switch (op) {
    case LSCA_OP_RENAMEAT2: case LSCA_OP_LINKAT: case LSCA_OP_SYMLINKAT:
        return 2;
    case LSCA_OP_OPENAT: case LSCA_OP_FSTATAT: case LSCA_OP_STATX: case LSCA_OP_FACCESSAT:
    case LSCA_OP_MKDIRAT: case LSCA_OP_UNLINKAT: case LSCA_OP_READLINKAT: case LSCA_OP_FCHMODAT:
    case LSCA_OP_FCHOWNAT: case LSCA_OP_TRUNCATE: case LSCA_OP_CHDIR: case LSCA_OP_UTIMENSAT:
        return 1;
    default:
        return 0;
    }
}

static char *record_payload(struct lsca_trace_record *r)
{
    return (char *)(r + 1);
}

struct lsca_trace_record *lsca_trace_begin(struct lsca_client_fast *c, const struct lsca_slot *slot)
{
    struct lsca_trace_record *r = (struct lsca_trace_record *)record_scratch;
    unsigned op = slot->op, npaths, i;
    uint32_t len = slot->data_len < LSCA_INLINE_MAX ? slot->data_len : LSCA_INLINE_MAX;
    uint32_t start = 0;
    char *out;

    if (op >= 64 || !((c->trace_mask >> op) & 1) || c->trace_failed)
        return NULL;
    memset(r, 0, sizeof(*r));
    r->magic = LSCA_TRACE_MAGIC;
    r->op = (uint16_t)op;
    r->seq = slot->seq;
    r->pid = c->pid;
    r->tid = slot->owner_tid;
    r->worker = c->worker;
    for (i = 0; i < LSCA_MAX_ARGS; i++)
        r->args[i] = (int64_t)slot->args[i];
    memcpy(r->comm, c->comm, sizeof(r->comm));
    r->data_len = NO_DATA;
    out = record_payload(r);

    npaths = paths_of(op);
    if (op == LSCA_OP_UTIMENSAT && slot->args[2])
        start = 32;                     /* the two timespecs come first */
    for (i = 0; i < npaths && start < len; i++) {
        const uint8_t *p = slot->data + start;
        size_t n = strnlen((const char *)p, len - start);
        if (n >= LSCA_PATH_MAX)
            n = LSCA_PATH_MAX - 1;
        memcpy(out + r->path_len, p, n);
        out[r->path_len + n] = '\0';
        r->path_len += (uint32_t)n + 1;
        start += (uint32_t)n + 1;
    }
    if (op == LSCA_OP_WRITE || op == LSCA_OP_PWRITE || op == LSCA_OP_WRITEV) {
        r->data_total = (uint32_t)(slot->args[1] < NO_DATA ? slot->args[1] : NO_DATA - 1);
        if (slot->xfer == LSCA_XFER_INLINE) {
            r->data_len = len < LSCA_TRACE_SHOWN ? len : LSCA_TRACE_SHOWN;
            memcpy(out + r->path_len, slot->data, r->data_len);
        }
    }
    return r;
}

static uint32_t record_size(const struct lsca_trace_record *r)
{
    uint32_t data = r->data_len == NO_DATA ? 0 : r->data_len;
    return (uint32_t)((sizeof(*r) + r->path_len + data + 7) & ~(size_t)7);
}

uint32_t lsca_trace_end(struct lsca_client_fast *c, struct lsca_trace_record *r, const struct lsca_slot *slot,
                        uint64_t latency_ns, int commit)
{
    struct timespec now;
    unsigned op = r->op;

    clock_gettime(CLOCK_REALTIME, &now);
    r->time_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    r->latency_ns = latency_ns;
    r->result = slot->result;
    r->err = slot->err;
    if ((op == LSCA_OP_READ || op == LSCA_OP_PREAD || op == LSCA_OP_READV || op == LSCA_OP_READLINKAT ||
         op == LSCA_OP_GETCWD) && slot->xfer == LSCA_XFER_INLINE && slot->result >= 0) {
        uint64_t shown = op == LSCA_OP_GETCWD ? LSCA_PATH_MAX : LSCA_TRACE_SHOWN;
        uint64_t n = (uint64_t)slot->result;
        if (n > LSCA_INLINE_MAX)
            n = LSCA_INLINE_MAX;
        r->data_total = (uint32_t)n;
        r->data_len = (uint32_t)(n < shown ? n : shown);
        memcpy(record_payload(r) + r->path_len, slot->data, r->data_len);
    } else if ((op == LSCA_OP_FSTAT || op == LSCA_OP_FSTATAT) && slot->result == 0) {
        lsca_stat_summary(slot->data, &r->st_mode, &r->st_size);
    }
    r->size = record_size(r);
    if (commit)
        lsca_trace_append(c, r, r->size);
    return r->size;
}

int lsca_slot_taken(void *shard, unsigned i, uint64_t seq)
{
    struct lsca_slot *slot = lsca_shard_slot(shard, i);
    /* The agent writes new_fds before it frees the slot (release): acquire pairs with it. */
    uint32_t state = smp_load_acquire(&slot->state);

    return state != LSCA_SLOT_DONE || slot->seq != seq;
}

/* Send whole records, at most one batch per message (SOCK_SEQPACKET keeps them whole). */
static void send_records(struct lsca_client_fast *c, int wait)
{
    while (c->trace_sent < c->trace_used && c->trace_fd >= 0) {
        uint32_t off = c->trace_sent, end = off;
        ssize_t n;

        while (end < c->trace_used) {
            uint32_t size = ((struct lsca_trace_record *)(c->trace_buf + end))->size;
            if (end > off && end - off + size > LSCA_TRACE_BATCH)
                break;
            end += size;
        }
        n = send(c->trace_fd, c->trace_buf + off, end - off, MSG_NOSIGNAL | (wait ? 0 : MSG_DONTWAIT));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !wait)
            break;
        if (n < 0) {
            /* The reader went away: stop recording this client. */
            close(c->trace_fd);
            c->trace_fd = -1;
            c->trace_failed = 1;
            c->trace_mask = 0;
            c->trace_used = c->trace_sent = 0;
            return;
        }
        c->trace_sent = end;
    }
    if (c->trace_sent == c->trace_used)
        c->trace_used = c->trace_sent = 0;
    /* Whatever the reader took, try again only a batch later: a slow reader costs no walk per record. */
    c->trace_next_try = c->trace_used + LSCA_TRACE_BATCH;
}

/* Room for size more bytes: what was sent is dropped from the front, then the buffer grows
 * up to the backlog limit, then we wait for the reader. */
static int make_room(struct lsca_client_fast *c, uint32_t size)
{
    send_records(c, 0);
    if (c->trace_used + size <= c->trace_cap)
        return 1;
    if (c->trace_sent) {
        memmove(c->trace_buf, c->trace_buf + c->trace_sent, c->trace_used - c->trace_sent);
        c->trace_used -= c->trace_sent;
        c->trace_next_try -= c->trace_sent < c->trace_next_try ? c->trace_sent : c->trace_next_try;
        c->trace_sent = 0;
    }
    while (c->trace_used + size > c->trace_cap && !c->trace_failed) {
        uint8_t *bigger = c->trace_cap < LSCA_TRACE_BACKLOG ? realloc(c->trace_buf, (size_t)c->trace_cap * 2) : NULL;
        if (!bigger) {
            send_records(c, 1);         /* the reader is that far behind: wait for it */
            break;
        }
        c->trace_buf = bigger;
        c->trace_cap *= 2;
    }
    return !c->trace_failed && c->trace_used + size <= c->trace_cap;
}

void lsca_trace_append(struct lsca_client_fast *c, const void *record, uint32_t size)
{
    if (!c->trace_lock)
        return;
    pthread_mutex_lock(c->trace_lock);
    if (c->trace_failed || !c->trace_buf)
        goto out;
    if (c->trace_used + size > c->trace_cap && !make_room(c, size))
        goto out;
    memcpy(c->trace_buf + c->trace_used, record, size);
    c->trace_used += size;
    if (c->trace_used >= c->trace_next_try && c->trace_used - c->trace_sent >= LSCA_TRACE_BATCH)
        send_records(c, 0);
out:
    pthread_mutex_unlock(c->trace_lock);
}

void lsca_trace_flush(struct lsca_client_fast *c, int wait)
{
    if (!c->trace_lock)
        return;
    pthread_mutex_lock(c->trace_lock);
    if (c->trace_used > c->trace_sent)
        send_records(c, wait);
    pthread_mutex_unlock(c->trace_lock);
}

/* ---- the loop ---- */

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

    if (op >= 64 || !((IO_OPS & ~c->slow_mask) >> op & 1) || ((c->held_mask >> i) & 1))
        return 0;
    /* The length check comes first on both routes; a declined descriptor goes the Python way. */
    if ((REPORT_OPS >> op) & 1)
        memset(&e, 0, sizeof(e));       /* no descriptor to reach: only a report */
    else if (lsca_fd_get(c, (int64_t)slot->args[0], &e) < 0)
        return 0;
    row->busy_slot = (int32_t)i;        /* for the supervisor, should we die in it */
    row->busy_shard = c->shard_id;
    r = lsca_trace_begin(c, slot);
    outcome = lsca_handle_io(c, slot, &e, 0, &result, &err);
    lsca_fd_put(&e);
    if (outcome != LSCA_ANSWERED) {
        row->busy_shard = 0;
        return 0;
    }
    slot->status = LSCA_STATUS_DONE;
    slot->err = err;
    slot->result = result;
    took = lsca_now_ns() - started;
    if (r)
        lsca_trace_end(c, r, slot, took, 1);
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

    for (;;) {
        int got = lsca_worker_next(ctx, shard_index, slot_index, spin, timeout_ms);
        struct lsca_client_fast *c;

        now = lsca_now_ns();
        row->heartbeat_ns = now;
        if (got != 1)
            return got;
        c = fast[*shard_index];
        if (!c || !serve_fast(c, row, (unsigned)*slot_index, now))
            return 1;
        if (lsca_now_ns() - start >= turn_ns)
            return 3;
        spin = spin_ns;
        timeout_ms = 0;
    }
}

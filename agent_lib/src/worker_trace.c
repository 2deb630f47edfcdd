/*
 * worker_trace.c - trace records and the streams that carry them to `lsca run` (see
 * lsca_worker_fast.h): a record per traced call, held until the client took the numbers a
 * call created, appended to its client's stream, sent without ever waiting for the reader,
 * a bounded backlog across clients, and the leftovers of clients that are gone.
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

#define TRACE_FIRST_CAP (256 * 1024)
#define NO_DATA LSCA_TRACE_NO_DATA
#define NO_RECORD UINT32_MAX
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

static void trace_release(struct lsca_client_fast *c);
static int trace_socket(int fd);
static void backlog_client(int delta);

void lsca_trace_init(struct lsca_client_fast *c)
{
    c->trace.fd = -1;
    c->trace.last = NO_RECORD;
}

void lsca_trace_free(struct lsca_client_fast *c)
{
    if (!c->trace_lock)
        return;
    pthread_mutex_lock(c->trace_lock);
    for (unsigned i = 0; i < LSCA_SLOTS; i++)
        free(c->held[i]);
    trace_release(c);
    pthread_mutex_unlock(c->trace_lock);
    pthread_mutex_destroy(c->trace_lock);
    free(c->trace_lock);
}

int lsca_fast_set_trace(struct lsca_client_fast *c, int fd, uint64_t mask)
{
    int refused = 0;

    if (fd >= 0 && !trace_socket(fd)) {
        close(fd);                      /* anything else could block, linger or split records */
        fd = -1;
        refused = 1;
    }
    if (!c->trace_lock) {
        c->trace_lock = malloc(sizeof(pthread_mutex_t));
        if (!c->trace_lock) {
            if (fd >= 0)
                close(fd);
            return -1;
        }
        pthread_mutex_init(c->trace_lock, NULL);
    }
    pthread_mutex_lock(c->trace_lock);
    if (c->trace.fd >= 0)
        close(c->trace.fd);
    c->trace.fd = fd;
    c->trace.failed = 0;
    c->trace_mask = fd >= 0 ? mask : 0;
    if (fd >= 0 && !c->trace.buf) {
        c->trace.buf = malloc(TRACE_FIRST_CAP);
        c->trace.cap = c->trace.buf ? TRACE_FIRST_CAP : 0;
        if (c->trace.buf)
            backlog_client(1);
    }
    if (!c->trace.buf)
        c->trace_mask = 0;
    pthread_mutex_unlock(c->trace_lock);
    return refused ? -1 : 0;
}

/* The process exec'd and kept its shard: its records carry the new program's name. */
static void refresh_comm(struct lsca_client_fast *c)
{
    uint32_t execs = __atomic_load_n(&((struct lsca_shard_header *)c->shard)->execs, __ATOMIC_RELAXED);
    char name[17];
    ssize_t n;
    int fd;

    if (execs == c->execs_seen || c->proc_dir < 0)
        return;
    c->execs_seen = execs;
    fd = openat(c->proc_dir, "comm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    n = read(fd, name, 16);
    close(fd);
    if (n <= 0)
        return;
    if (name[n - 1] == '\n')
        n--;
    memset(c->comm, 0, sizeof(c->comm));
    memcpy(c->comm, name, (size_t)n < sizeof(c->comm) - 1 ? (size_t)n : sizeof(c->comm) - 1);
}

/* ---- records ---- */

#define RECORD_MAX (sizeof(struct lsca_trace_record) + 2 * LSCA_PATH_MAX + LSCA_PATH_MAX + 8)
static __thread uint64_t record_scratch[RECORD_MAX / 8 + 1];


static char *record_payload(struct lsca_trace_record *r)
{
    return (char *)(r + 1);
}

/* The ops whose line shows the bytes they send (taken from the request) or received (from
 * the answer). */
#define SENDS(op) ((op) == LSCA_OP_WRITE || (op) == LSCA_OP_PWRITE || (op) == LSCA_OP_WRITEV || \
                   (op) == LSCA_OP_SENDTO || (op) == LSCA_OP_SENDMSG)
#define RECEIVES(op) ((op) == LSCA_OP_READ || (op) == LSCA_OP_PREAD || (op) == LSCA_OP_READV ||       \
                      (op) == LSCA_OP_READLINKAT || (op) == LSCA_OP_GETCWD || (op) == LSCA_OP_RECVFROM || \
                      (op) == LSCA_OP_RECVMSG)

/* Where those bytes start in data[]: a socket call's follow its address, except in a report
 * (the agent copies the first bytes alone, lsca_report_waited). */
static uint32_t bytes_at(const struct lsca_slot *slot)
{
    unsigned op = slot->op;
    int socket_io = op == LSCA_OP_SENDTO || op == LSCA_OP_SENDMSG || op == LSCA_OP_RECVFROM || op == LSCA_OP_RECVMSG;

    return socket_io && slot->xfer != LSCA_XFER_REPORTED ? LSCA_ADDR_MAX : 0;
}

struct lsca_trace_record *lsca_trace_begin(struct lsca_client_fast *c, const struct lsca_slot *slot)
{
    struct lsca_trace_record *r = (struct lsca_trace_record *)record_scratch;
    unsigned op = slot->op, npaths, i;
    uint32_t len = slot->data_len < LSCA_INLINE_MAX ? slot->data_len : LSCA_INLINE_MAX;
    uint32_t start = 0;
    char *out;

    if (op >= LSCA_OP_MAX || !((c->trace_mask >> op) & 1) || c->trace.failed)
        return NULL;
    refresh_comm(c);
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

    npaths = lsca_ops[op].npaths;
    if (lsca_op_has(op, LSCA_OPF_TIMES_FIRST)) {
        start = slot->args[2] ? 2 * sizeof(struct timespec) : 0;     /* the two timespecs come first */
        npaths = slot->args[3] ? npaths : 0;
    }
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
    if (SENDS(op)) {
        uint32_t at = bytes_at(slot);
        r->data_total = (uint32_t)(slot->args[1] < NO_DATA ? slot->args[1] : NO_DATA - 1);
        /* Inline bytes; for a reported call, the first ones the agent copied (none: it could not). */
        if ((slot->xfer == LSCA_XFER_INLINE || (slot->xfer == LSCA_XFER_REPORTED && (len || !slot->args[1]))) &&
            len >= at) {
            r->data_len = len - at < LSCA_TRACE_SHOWN ? len - at : LSCA_TRACE_SHOWN;
            memcpy(out + r->path_len, slot->data + at, r->data_len);
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
    if (RECEIVES(op) && (slot->xfer == LSCA_XFER_INLINE || slot->xfer == LSCA_XFER_REPORTED) && slot->result >= 0 &&
        !(slot->xfer == LSCA_XFER_REPORTED && !slot->data_len && slot->result)) {   /* the agent could not copy */
        uint32_t at = bytes_at(slot);
        uint64_t shown = op == LSCA_OP_GETCWD ? LSCA_PATH_MAX : LSCA_TRACE_SHOWN;
        uint64_t n = (uint64_t)slot->result;
        if (op != LSCA_OP_GETCWD && n > slot->args[1])
            n = slot->args[1];          /* MSG_TRUNC says more than the buffer holds */
        if (n > LSCA_INLINE_MAX - at)
            n = LSCA_INLINE_MAX - at;
        r->data_total = (uint32_t)n;
        if (slot->xfer == LSCA_XFER_REPORTED && n > slot->data_len)
            n = slot->data_len;         /* the agent copied only the first bytes */
        r->data_len = (uint32_t)(n < shown ? n : shown);
        memcpy(record_payload(r) + r->path_len, slot->data + at, r->data_len);
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

void lsca_trace_hold(struct lsca_client_fast *c, unsigned i, const struct lsca_trace_record *r)
{
    void *copy = malloc(r->size);

    if (!copy) {
        lsca_trace_append(c, r, r->size);       /* without the numbers rather than not at all */
        return;
    }
    memcpy(copy, r, r->size);
    pthread_mutex_lock(c->trace_lock);
    free(c->held[i]);
    c->held[i] = copy;
    __atomic_or_fetch(&c->held_mask, 1ull << i, __ATOMIC_RELAXED);
    pthread_mutex_unlock(c->trace_lock);
}

/* Takes slot i's held record out of the list, under the lock; NULL when there is none. */
static struct lsca_trace_record *take_held(struct lsca_client_fast *c, unsigned i)
{
    struct lsca_trace_record *r;

    pthread_mutex_lock(c->trace_lock);
    r = c->held[i];
    c->held[i] = NULL;
    __atomic_and_fetch(&c->held_mask, ~(1ull << i), __ATOMIC_RELAXED);
    pthread_mutex_unlock(c->trace_lock);
    return r;
}

void lsca_trace_release_held(struct lsca_client_fast *c, unsigned i)
{
    struct lsca_slot *slot = lsca_shard_slot(c->shard, i);
    struct lsca_trace_record *r = c->trace_lock ? take_held(c, i) : NULL;

    if (!r)
        return;
    /* What the program got: the numbers it put them at (dup3, F_DUPFD: where it moved them),
     * or the failure it saw (a full descriptor table). */
    r->result = slot->result;
    r->err = slot->err;
    r->new_fds[0] = slot->new_fds[0];
    r->new_fds[1] = slot->new_fds[1];
    lsca_trace_append(c, r, r->size);
    free(r);
}

void lsca_trace_flush_held(struct lsca_client_fast *c, int all)
{
    uint64_t mask = __atomic_load_n(&c->held_mask, __ATOMIC_RELAXED);
    unsigned i;

    for (i = 0; mask && c->trace_lock; i++, mask >>= 1) {
        int taken;
        if (!(mask & 1))
            continue;
        pthread_mutex_lock(c->trace_lock);      /* a record is replaced and freed under it */
        taken = c->held[i] && (all || lsca_slot_taken(c->shard, i, ((struct lsca_trace_record *)c->held[i])->seq));
        pthread_mutex_unlock(c->trace_lock);
        if (taken)
            lsca_trace_release_held(c, i);
    }
}

/* ---- trace streams ----
 *
 * No send on a trace descriptor ever waits: its reader belongs to the user who opened the
 * session, and a worker serves other users too. Records wait in memory within the bounds of
 * lsca_worker_fast.h; past them they are dropped, counted (shard header, worker row) and
 * announced in the stream itself by a marker record, in their place. */

#define MARKER_SIZE ((uint32_t)sizeof(struct lsca_trace_record))
/* While the reader takes nothing, look for room only every this many drops, not per call. */
#define DROP_RETRY_EVERY 256
/* A drained buffer larger than this goes back to the first size when its client idles. */
#define TRACE_SHRINK_ABOVE (4 * TRACE_FIRST_CAP)
/* The unsent records move to the front once the reader took 1/64 of their size: a reader
 * that takes little at a time costs the worker at most 64 bytes moved per byte it took. */
#define COMPACT_RATIO 64

/* Capacity of every trace buffer of this worker process (live clients and leftovers). */
static pthread_mutex_t backlog_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t backlog_bytes;
static uint32_t tracing_clients;
static uint64_t messages_sent;

/* A released client's records its reader had not taken yet, with our descriptor of it. */
struct leftover {
    struct lsca_trace_stream s;
    uint64_t idle_since_ns;       /* the reader's last progress                               */
    struct lsca_worker_status *row;
    int32_t pid;
    uint32_t worker;
    char comm[16];
};

static struct leftover leftovers[LSCA_TRACE_LEFTOVERS];
static unsigned nleftovers;       /* main thread only */

/* Whether a buffer of cap bytes may take more: within the worker's bound, or while it stays
 * within its fair share of it (one stalled reader cannot starve the others). */
static int backlog_take(uint32_t cap, uint32_t more)
{
    int ok;

    pthread_mutex_lock(&backlog_lock);
    ok = backlog_bytes + more <= LSCA_TRACE_WORKER_BACKLOG ||
         (uint64_t)cap + more <= LSCA_TRACE_WORKER_BACKLOG / (tracing_clients ? tracing_clients : 1);
    if (ok)
        backlog_bytes += more;
    pthread_mutex_unlock(&backlog_lock);
    return ok;
}

/* A client's first buffer is always granted (the bounds apply to growth) and counted. */
static void backlog_client(int delta)
{
    pthread_mutex_lock(&backlog_lock);
    tracing_clients += (uint32_t)delta;
    if (delta > 0)
        backlog_bytes += TRACE_FIRST_CAP;
    pthread_mutex_unlock(&backlog_lock);
}

static void backlog_give(uint64_t bytes)
{
    pthread_mutex_lock(&backlog_lock);
    backlog_bytes -= bytes < backlog_bytes ? bytes : backlog_bytes;
    pthread_mutex_unlock(&backlog_lock);
}

/* Only a Unix SOCK_SEQPACKET end: sends that never wait, records that arrive whole, a close
 * that never lingers. */
static int trace_socket(int fd)
{
    int domain = 0, type = 0;
    socklen_t len = sizeof(int);

    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0 || domain != AF_UNIX)
        return 0;
    len = sizeof(int);
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET;
}

static struct lsca_trace_record *record_at(const struct lsca_trace_stream *s, uint32_t off)
{
    return (struct lsca_trace_record *)(s->buf + off);
}

static void stream_close(struct lsca_trace_stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

/* The reader went away (or the descriptor failed): stop recording to it. */
static void stream_fail(struct lsca_trace_stream *s)
{
    stream_close(s);
    s->failed = 1;
    s->used = s->sent = 0;
    s->last = NO_RECORD;
}

/* Send whole records, at most one batch per message (SOCK_SEQPACKET keeps them whole), while
 * the reader takes them without waiting. 1 when something went. */
static int stream_send(struct lsca_trace_stream *s)
{
    int progress = 0;

    while (s->sent < s->used && s->fd >= 0) {
        uint32_t off = s->sent, end = off;
        ssize_t n;

        while (end < s->used) {
            uint32_t size = record_at(s, end)->size;
            if (end > off && end - off + size > LSCA_TRACE_BATCH)
                break;
            end += size;
        }
        n = send(s->fd, s->buf + off, end - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == ENOMEM))
            break;                      /* full for now: later, or dropped past the bounds */
        if (n != (ssize_t)(end - off)) {
            stream_fail(s);
            return progress;
        }
        s->sent = end;
        s->sent_total += end - off;
        progress = 1;
        __atomic_fetch_add(&messages_sent, 1, __ATOMIC_RELAXED);
    }
    if (s->sent == s->used) {
        s->used = s->sent = 0;
        s->last = NO_RECORD;
    }
    /* Whatever the reader took, try again only a batch later: a slow reader costs no walk per record. */
    s->next_try = s->used + LSCA_TRACE_BATCH;
    return progress;
}

/* What was sent leaves the front of the buffer. */
static void stream_compact(struct lsca_trace_stream *s)
{
    uint32_t gone = s->sent;

    if (!gone)
        return;
    memmove(s->buf, s->buf + gone, s->used - gone);
    s->used -= gone;
    s->sent = 0;
    s->next_try -= gone < s->next_try ? gone : s->next_try;
    s->last = s->last != NO_RECORD && s->last >= gone ? s->last - gone : NO_RECORD;
}

/* Bytes the reader took: what we sent less what still waits in its socket (which the
 * session's other senders share: an underestimate, never more). */
static uint64_t reader_took(const struct lsca_trace_stream *s)
{
    int queued = 0;

    if (s->fd < 0 || ioctl(s->fd, SIOCOUTQ, &queued) < 0 || queued < 0)
        return 0;
    return s->sent_total > (uint64_t)queued ? s->sent_total - (uint64_t)queued : 0;
}

/* The most a stream may hold: what its reader earned by reading, within the client bound. */
static uint64_t stream_limit(const struct lsca_trace_stream *s)
{
    uint64_t earned = LSCA_TRACE_UNEARNED + LSCA_TRACE_EARNED * reader_took(s);

    return earned < LSCA_TRACE_BACKLOG ? earned : LSCA_TRACE_BACKLOG;
}

/* Room for need more bytes: the sent front goes, then the buffer doubles within the bounds. */
static int stream_room(struct lsca_trace_stream *s, uint32_t need)
{
    if (s->used + need <= s->cap)
        return 1;
    if ((uint64_t)s->sent * COMPACT_RATIO >= s->used - s->sent)
        stream_compact(s);
    while (s->used + need > s->cap) {
        uint8_t *bigger;

        if ((uint64_t)s->cap * 2 > stream_limit(s) || !backlog_take(s->cap, s->cap))
            return 0;
        bigger = realloc(s->buf, (size_t)s->cap * 2);
        if (!bigger) {
            backlog_give(s->cap);
            return 0;
        }
        s->buf = bigger;
        s->cap *= 2;
    }
    return 1;
}

/* A drained buffer that grew for a burst gives its memory back. */
static void stream_shrink(struct lsca_trace_stream *s)
{
    uint8_t *smaller;

    if (s->used || s->cap <= TRACE_SHRINK_ABOVE)
        return;
    smaller = realloc(s->buf, TRACE_FIRST_CAP);
    if (!smaller)
        return;
    backlog_give(s->cap - TRACE_FIRST_CAP);
    s->buf = smaller;
    s->cap = TRACE_FIRST_CAP;
}

/* The marker appended last, not sent yet: further drops add to it. */
static struct lsca_trace_record *open_marker(const struct lsca_trace_stream *s)
{
    struct lsca_trace_record *r;

    if (s->last == NO_RECORD || s->last < s->sent || s->last >= s->used)
        return NULL;
    r = record_at(s, s->last);
    return r->op == LSCA_TRACE_DROPPED ? r : NULL;
}

static void fill_marker(struct lsca_trace_record *r, int32_t pid, uint32_t worker, const char *comm,
                        uint64_t dropped)
{
    struct timespec now;

    clock_gettime(CLOCK_REALTIME, &now);
    memset(r, 0, sizeof(*r));
    r->magic = LSCA_TRACE_MAGIC;
    r->op = LSCA_TRACE_DROPPED;
    r->size = MARKER_SIZE;
    r->time_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
    r->pid = pid;
    r->worker = worker;
    r->result = (int64_t)dropped;
    r->data_len = NO_DATA;
    memcpy(r->comm, comm, sizeof(r->comm));
}

/* One record of c did not fit: count it, and say so in its place in the stream. Room for
 * one marker is always kept after the last record, unless that record is an open marker. */
static void drop_record(struct lsca_client_fast *c)
{
    struct lsca_trace_stream *s = &c->trace;
    struct lsca_trace_record *m = open_marker(s);
    struct lsca_shard_header *h = c->shard;

    if (m) {
        m->result++;
    } else if (s->buf && s->used + MARKER_SIZE <= s->cap) {
        fill_marker(record_at(s, s->used), c->pid, c->worker, c->comm, 1);
        s->last = s->used;
        s->used += MARKER_SIZE;
    }
    if (h)
        ADD(&h->trace_dropped, 1);
    if (c->row)
        ADD(&c->row->trace_dropped, 1);
}

static void client_send(struct lsca_client_fast *c)
{
    stream_send(&c->trace);
    if (c->trace.failed)
        c->trace_mask = 0;
}

void lsca_trace_append(struct lsca_client_fast *c, const void *record, uint32_t size)
{
    struct lsca_trace_stream *s = &c->trace;
    struct lsca_trace_record *m;
    uint32_t need = size + MARKER_SIZE;     /* the record and the room kept for a marker */

    if (!c->trace_lock)
        return;
    pthread_mutex_lock(c->trace_lock);
    if (s->failed || !s->buf)
        goto out;
    if (s->used + need > s->cap) {
        m = open_marker(s);
        /* Dropping already: look for room (a syscall, maybe a move) only now and then. */
        if (m && m->result % DROP_RETRY_EVERY) {
            drop_record(c);
            goto out;
        }
        client_send(c);
        if (s->failed)
            goto out;
        if (!stream_room(s, need)) {
            drop_record(c);
            goto out;
        }
    }
    memcpy(s->buf + s->used, record, size);
    s->last = s->used;
    s->used += size;
    if (s->used >= s->next_try && s->used - s->sent >= LSCA_TRACE_BATCH)
        client_send(c);
out:
    pthread_mutex_unlock(c->trace_lock);
}

int lsca_trace_flush(struct lsca_client_fast *c)
{
    int left;

    if (!c->trace_lock)
        return 0;
    pthread_mutex_lock(c->trace_lock);
    if (c->trace.used > c->trace.sent)
        client_send(c);
    left = c->trace.used > c->trace.sent;
    if (!left && c->trace.buf)
        stream_shrink(&c->trace);
    pthread_mutex_unlock(c->trace_lock);
    return left;
}

uint64_t lsca_trace_progress(void)
{
    return __atomic_load_n(&messages_sent, __ATOMIC_RELAXED);
}

static void leftover_free(unsigned i)
{
    struct leftover *l = &leftovers[i];

    stream_close(&l->s);
    backlog_give(l->s.cap);
    free(l->s.buf);
    leftovers[i] = leftovers[--nleftovers];
}

/* Its reader took nothing for too long (or room is needed): count what it never got, tell
 * it if it has room for one marker now, and let go. */
static void leftover_drop(unsigned i)
{
    struct leftover *l = &leftovers[i];
    struct lsca_trace_record marker;
    uint64_t calls = 0, told = 0;
    uint32_t off;

    for (off = l->s.sent; off + MARKER_SIZE <= l->s.used; off += record_at(&l->s, off)->size) {
        struct lsca_trace_record *r = record_at(&l->s, off);
        if (r->op == LSCA_TRACE_DROPPED)
            told += (uint64_t)r->result;    /* counted when they were dropped */
        else
            calls++;
    }
    if (l->row)
        ADD(&l->row->trace_dropped, calls);
    if (l->s.fd >= 0) {
        fill_marker(&marker, l->pid, l->worker, l->comm, calls + told);
        if (send(l->s.fd, &marker, MARKER_SIZE, MSG_NOSIGNAL | MSG_DONTWAIT) == MARKER_SIZE)
            __atomic_fetch_add(&messages_sent, 1, __ATOMIC_RELAXED);
    }
    leftover_free(i);
}

static unsigned stalest_leftover(void)
{
    unsigned i, oldest = 0;

    for (i = 1; i < nleftovers; i++)
        if (leftovers[i].idle_since_ns < leftovers[oldest].idle_since_ns)
            oldest = i;
    return oldest;
}

/* c is released with records its reader has not taken yet: they, and our descriptor of the
 * reader, wait among the leftovers (the stalest makes room when the list is full). */
static void leftover_keep(struct lsca_client_fast *c)
{
    struct lsca_trace_stream *s = &c->trace;
    struct leftover *l;
    uint8_t *smaller;

    if (nleftovers == LSCA_TRACE_LEFTOVERS)
        leftover_drop(stalest_leftover());
    stream_compact(s);
    smaller = realloc(s->buf, s->used);     /* nothing more is appended: keep only the records */
    if (smaller) {
        backlog_give(s->cap - s->used);
        s->buf = smaller;
        s->cap = s->used;
    }
    l = &leftovers[nleftovers++];
    l->s = *s;
    l->idle_since_ns = lsca_now_ns();
    l->row = c->row;
    l->pid = c->pid;
    l->worker = c->worker;
    memcpy(l->comm, c->comm, sizeof(l->comm));
    memset(s, 0, sizeof(*s));
    s->fd = -1;
    s->last = NO_RECORD;
}

int lsca_trace_leftovers(int give_up)
{
    uint64_t now = lsca_now_ns();
    unsigned i = 0;

    while (i < nleftovers) {
        struct leftover *l = &leftovers[i];

        if (stream_send(&l->s))
            l->idle_since_ns = now;
        if (l->s.used == l->s.sent)
            leftover_free(i);           /* all taken, or the reader went away */
        else if (give_up || now - l->idle_since_ns >= (uint64_t)LSCA_TRACE_LEFTOVER_MS * 1000000)
            leftover_drop(i);
        else
            i++;
    }
    return (int)nleftovers;
}

/* The client is gone: what its reader takes now is sent, the rest goes on from the leftovers. */
static void trace_release(struct lsca_client_fast *c)
{
    struct lsca_trace_stream *s = &c->trace;

    if (s->buf)
        backlog_client(-1);
    if (s->used > s->sent)
        client_send(c);
    if (s->used > s->sent && s->fd >= 0)
        leftover_keep(c);
    stream_close(s);
    if (s->buf) {
        backlog_give(s->cap);
        free(s->buf);
        s->buf = NULL;
    }
}


/*
 * lsca_abi.h - the shared-memory ABI between the agent (C) and the workers (Python).
 *
 * This header alone defines the shard layout, op codes, slot states, limits and
 * the registration messages. The agent compiles it; the Python side feeds the
 * region between LSCA_CDEF_BEGIN and LSCA_CDEF_END to cffi's cdef(), so the two
 * sides cannot drift. Keep that region to what cdef understands: integer
 * #defines, enums and structs of fixed-width types.
 *
 * Every field written by one side and read by the other is accessed only through
 * the acquire/release primitives in lsca_slots.h.
 */
#ifndef LSCA_ABI_H
#define LSCA_ABI_H

#include <stdint.h>

/* LSCA_CDEF_BEGIN */
#define LSCA_MAGIC 0x4C534341           /* "LSCA" */
#define LSCA_ABI_VERSION 7

#define LSCA_SLOTS 64                   /* client threads in a call at once; one 64-bit pending mask */
#define LSCA_INLINE_MAX 65536           /* bytes of a buffer carried in the slot itself */
#define LSCA_MAX_ARGS 6
#define LSCA_OP_MAX 64                  /* size of per-op tables; op codes stay below it */
#define LSCA_SESSION_LEN 40
#define LSCA_HEADER_SIZE 4096           /* the header occupies the first page of a shard */
#define LSCA_PATH_MAX 4096              /* a path longer than this (with its NUL) runs natively */
#define LSCA_ADDR_MAX 128               /* sizeof(struct sockaddr_storage) */

/* Key prefix of every SysV object LSCA creates, so leftovers are recognisable. */
#define LSCA_IPC_KEY_PREFIX 0x15CA0000
#define LSCA_IPC_KEY_MASK 0xFFFF0000

/* Op codes are the lines of LSCA_OPS below (enum lsca_op, expanded from them); cffi gets the
 * enum from the same lines (_build_ffi.py) and the facts through lsca_op_table(). */

/* Classes of an op, as strace's -e trace=%class knows them. */
#define LSCA_OPC_FILE 1                 /* %file: takes a path (or names one: getcwd)          */
#define LSCA_OPC_DESC 2                 /* %desc: acts on or makes a descriptor                */
#define LSCA_OPC_NETWORK 4              /* %network: a socket call                            */

/* Facts about an op. */
#define LSCA_OPF_FD_ARG 1               /* args[0] is the client's descriptor: the policy decides on
                                           the name of its file                                 */
#define LSCA_OPF_NEW_FDS 2              /* success hands the client new descriptors (SCM_RIGHTS) */
#define LSCA_OPF_NEW_FDS_BY_CMD 4       /* ... only when args[1] is F_DUPFD or F_DUPFD_CLOEXEC (fcntl) */
#define LSCA_OPF_REPORT 8               /* ran natively in the program already, only reported:
                                           never refused, never decided by a policy            */
#define LSCA_OPF_IDEMPOTENT 16          /* running it twice gives the result of running it once:
                                           a dead worker's call is run again, not failed       */
#define LSCA_OPF_AT_OFFSET 32           /* ... only where the offset is honoured (a regular file or
                                           block device, no O_APPEND write)                    */
#define LSCA_OPF_MAY_BLOCK 64           /* may wait for another party (pipe, socket): handed back
                                           to the program's own thread when it would           */
#define LSCA_OPF_TIMES_FIRST 128        /* data[] starts with struct timespec[2] when args[2] is set,
                                           and holds its path only when args[3] is set; without
                                           one it acts on the descriptor args[0] (utimensat)    */

/* One line of the op table, as the C code and Python (lsca_op_table()) read it. */
struct lsca_op_info {
    const char *name;             /* LSCA's name ("pread"; strace's may differ); NULL: no op */
    uint32_t classes;             /* LSCA_OPC_*                                               */
    uint32_t facts;               /* LSCA_OPF_*                                               */
    uint8_t npaths;               /* NUL-terminated paths in data[]                           */
    uint8_t first_checked;        /* the first of them a policy decides on (symlinkat's target is
                                     only text)                                                */
    int8_t dirfd_arg[2];          /* per path: the arg holding its dirfd; -1: the thread's cwd */
};

/* The table, LSCA_OP_MAX lines indexed by op code. */
const struct lsca_op_info *lsca_op_table(void);

/* Slot states. FREE -> SUBMITTED (client) -> RUNNING (worker) -> DONE (worker) -> FREE (client). */
enum lsca_slot_state {
    LSCA_SLOT_FREE = 0,
    LSCA_SLOT_SUBMITTED = 1,
    LSCA_SLOT_RUNNING = 2,
    LSCA_SLOT_DONE = 3
};

/* How a worker answered a call. */
enum lsca_status {
    LSCA_STATUS_DONE = 0,         /* result/err hold the call's outcome                     */
    LSCA_STATUS_PASSTHROUGH = 1,  /* the worker declines (no access, not its kind): run it natively */
    LSCA_STATUS_WAIT_NATIVE = 2   /* it would wait: the program's own thread waits for it natively */
};

/* Where the bytes of a buffer travel (arg flags). */
enum lsca_xfer {
    LSCA_XFER_INLINE = 0,         /* in slot->data                                           */
    LSCA_XFER_REMOTE = 1,         /* in client memory at slot->remote_addr: process_vm_readv/writev */
    LSCA_XFER_REPORTED = 2        /* no call: the outcome (result, err) of one that waited natively,
                                     for the record (op and args as they were)                  */
};

struct lsca_slot {
    uint32_t state;               /* enum lsca_slot_state; acquire/release hand-off; the futex
                                     word the client sleeps on                                 */
    uint32_t client_sleeping;     /* 1 while the client thread sleeps on state               */
    int32_t owner_tid;            /* 0: free slot; else the client thread that owns it        */
    uint32_t op;                  /* enum lsca_op                                             */
    uint32_t xfer;                /* enum lsca_xfer                                           */
    uint32_t status;              /* enum lsca_status, written by the worker                  */
    int32_t err;                  /* errno when result == -1                                  */
    uint32_t data_len;            /* bytes of data[] the request or the answer uses           */
    int64_t result;
    uint64_t remote_addr;         /* client address of the buffer when xfer is REMOTE         */
    uint64_t args[LSCA_MAX_ARGS];
    uint64_t seq;                 /* per-shard call number, for traces                        */
    int32_t new_fds[2];           /* numbers the client installed the received descriptors at */
    uint32_t cancel;              /* 1: a signal handler interrupted the waiting client       */
    uint8_t pad[12];              /* keeps data[] and the slot size 64-byte aligned           */
    uint8_t data[LSCA_INLINE_MAX];
};

struct lsca_shard_header {
    uint32_t magic;
    uint32_t abi_version;
    uint32_t shard_size;
    uint32_t nslots;
    int32_t client_pid;
    uint32_t dead;                /* 1: nobody will answer any more (supervisor gone): native  */
    int32_t doorbell_semid;       /* SysV set of the owning worker                            */
    int32_t doorbell_semnum;
    uint32_t worker_sleeping;     /* worker announced it sleeps: the submitter must ring      */
    uint32_t worker_id;
    uint64_t pending_mask;        /* bit i: slot i was submitted (a hint; states are the truth) */
    uint64_t cancel_mask;         /* bit i: slot i asks its call to be interrupted (a hint)    */
    uint64_t next_seq;
    uint64_t passthrough[LSCA_OP_MAX]; /* per op: calls the agent executed natively         */
    uint64_t declined[LSCA_OP_MAX];    /* per op: of those, calls a worker handed back        */
    uint64_t waited[LSCA_OP_MAX];      /* per op: calls a worker handed back because they would
                                          wait: the program's thread waited for them natively */
    /* Written by the worker (the client could forge them: they describe only itself). */
    uint64_t proxied[LSCA_OP_MAX];     /* per op: calls a worker answered                      */
    uint64_t failed[LSCA_OP_MAX];      /* per op: of those, answered -1                        */
    uint64_t worker_ns[LSCA_OP_MAX];   /* per op: worker time, claim to answer                 */
    uint64_t trace_dropped;            /* records of its calls dropped: its trace reader fell behind */
    uint32_t execs;               /* the agent counts the execs that kept this shard (a hint: new name) */
    uint32_t crowded;             /* worker: more runnable tasks than CPUs, waiters sleep at once (a hint) */
    uint64_t report_mask;         /* worker: bit op: report the outcome of a natively waited call */
};

/* The supervisor's private table (never mapped by clients): one row per worker. */
#define LSCA_MAX_WORKERS 256
/* Latency histogram: bucket 0 counts calls under 2^LSCA_LAT_SHIFT ns, bucket b > 0 those in
 * [2^(b-1+LSCA_LAT_SHIFT), 2^(b+LSCA_LAT_SHIFT)) ns; the last bucket takes everything above. */
#define LSCA_LAT_BUCKETS 28
#define LSCA_LAT_SHIFT 7

struct lsca_op_stats {
    uint64_t calls;
    uint64_t errors;
    uint64_t total_ns;
    uint64_t hist[LSCA_LAT_BUCKETS];
};

struct lsca_worker_status {
    uint64_t heartbeat_ns;        /* CLOCK_MONOTONIC of the worker's latest turn of its loop  */
    int32_t pid;
    int32_t busy_shard;           /* supervisor shard id of the call being executed; 0: idle  */
    int32_t busy_slot;
    uint32_t shards;              /* clients assigned to this worker                          */
    uint64_t busy_ns;             /* total time spent executing calls (load = its rate)      */
    struct lsca_op_stats ops[LSCA_OP_MAX];
    uint64_t trace_dropped;       /* records its clients' trace readers never got (fell behind) */
};

/* One recorded call, as a worker appends it to a session's trace stream; the reader (lsca
 * run) formats it. payload_len bytes follow the record (paths NUL-separated, then the first
 * bytes of the buffer); size is the whole record rounded up to 8. */
#define LSCA_TRACE_SHOWN 64               /* buffer bytes kept: enough to show 32 and say "..." */
#define LSCA_TRACE_MAGIC 0x5452
#define LSCA_TRACE_NO_DATA 0xFFFFFFFF     /* data_len: the buffer was not captured (moved by address) */
/* op of a marker, not a call: result records of pid were dropped just before it (the reader
 * fell behind); a bare record (no payload), sent as soon as there is room. */
#define LSCA_TRACE_DROPPED 0xFFFF

struct lsca_trace_record {
    uint16_t magic;
    uint16_t op;
    uint32_t size;
    uint64_t time_ns;             /* CLOCK_REALTIME when the answer was published             */
    uint64_t latency_ns;          /* worker time, claim to answer                             */
    uint64_t seq;
    int32_t pid;
    int32_t tid;
    int64_t result;               /* what the program got (a creating call's: its number)     */
    int32_t err;
    uint32_t worker;
    int64_t args[LSCA_MAX_ARGS];
    int32_t new_fds[2];           /* descriptor numbers the client got, for creating calls   */
    uint32_t st_mode;             /* fstat/fstatat answers, for the line                     */
    uint32_t path_len;            /* payload: paths (NUL-separated) ...                       */
    int64_t st_size;
    uint32_t data_len;            /* ... then this many bytes of the buffer shown             */
    uint32_t data_total;          /* the buffer's full length                                 */
    char comm[16];                /* the program's name                                       */
};

/* Registration over the supervisor's Unix socket: agent sends hello, gets welcome. */
struct lsca_hello {
    uint32_t magic;
    uint32_t abi_version;
    int32_t pid;
    uint32_t flags;
    char session[LSCA_SESSION_LEN];
};

struct lsca_welcome {
    uint32_t magic;
    uint32_t abi_version;
    int32_t status;               /* 0, or an errno saying why the client is refused          */
    int32_t supervisor_pid;       /* the client checks it is alive while it sleeps            */
    int32_t shmid;
    uint32_t shard_size;
    uint32_t nslots;
};
/* LSCA_CDEF_END */

/* The op table: every fact about an op on one line, in the manner of strace's syscallent.h.
 * X(NAME, name, code, classes, facts, npaths, first_checked, dirfd of path 0, of path 1).
 * Codes are the ABI (the index into the agent's marshalling and the worker's handlers): a new
 * op takes the next code. The per-op comment says its args and data[]. Adding an op is adding
 * a line here and its two handlers (agent, worker). */
#define LSCA_OPS(X)                                                                                                                            \
    /* args: fd, count             data out: bytes read */                                                                                     \
    X(READ,       read,        1, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, count             data in: bytes */                                                                                           \
    X(WRITE,      write,       2, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, count, offset     data out */                                                                                                 \
    X(PREAD,      pread,       3, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT | LSCA_OPF_AT_OFFSET,  0, 0, -1, -1) \
    /* args: fd, count, offset     data in */                                                                                                  \
    X(PWRITE,     pwrite,      4, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT | LSCA_OPF_AT_OFFSET,  0, 0, -1, -1) \
    /* args: fd, total, iovcnt     data out (scattered by agent) */                                                                            \
    X(READV,      readv,       5, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, total, iovcnt     data in (gathered by agent) */                                                                              \
    X(WRITEV,     writev,      6, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, offset, whence    (run again only for SEEK_SET/SEEK_END: the arbiter looks) */                                                \
    X(LSEEK,      lseek,       7, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG,                                             0, 0, -1, -1) \
    /* args: fd */                                                                                                                             \
    X(FSYNC,      fsync,       8, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    X(FDATASYNC,  fdatasync,   9, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    /* args: fd, length */                                                                                                                     \
    X(FTRUNCATE,  ftruncate,  10, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    /* args: fd                    data out: native struct stat */                                                                             \
    X(FSTAT,      fstat,      11, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    /* args: fd, native result, native errno (already closed) */                                                                               \
    X(CLOSE,      close,      12, LSCA_OPC_DESC,                    LSCA_OPF_REPORT | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    /* Descriptor-creating calls: on success the worker sends the new descriptors over the */                                                  \
    /* client's channel (SCM_RIGHTS) before DONE; the agent writes their numbers to new_fds. */                                                \
    /* args: dirfd, flags, mode    data: path */                                                                                               \
    X(OPENAT,     openat,     13, LSCA_OPC_FILE | LSCA_OPC_DESC,    LSCA_OPF_NEW_FDS,                                            1, 0,  0, -1) \
    /* args: fd */                                                                                                                             \
    X(DUP,        dup,        14, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_NEW_FDS,                          0, 0, -1, -1) \
    /* args: oldfd, newfd, flags   (the agent moves it to newfd) */                                                                            \
    X(DUP3,       dup3,       15, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_NEW_FDS,                          0, 0, -1, -1) \
    /* args: fd, cmd, arg          data: struct flock for OFD locks */                                                                         \
    X(FCNTL,      fcntl,      16, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_NEW_FDS_BY_CMD,                   0, 0, -1, -1) \
    /* args: flags                 two descriptors */                                                                                          \
    X(PIPE2,      pipe2,      17, LSCA_OPC_DESC,                    LSCA_OPF_NEW_FDS,                                            0, 0, -1, -1) \
    /* Path calls: data holds NUL-terminated path(s); dirfd AT_FDCWD is the client's cwd. */                                                   \
    /* args: dirfd, flags          data out: native struct stat */                                                                             \
    X(FSTATAT,    fstatat,    18, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         1, 0,  0, -1) \
    /* args: dirfd, flags, mask    data out: struct statx */                                                                                   \
    X(STATX,      statx,      19, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         1, 0,  0, -1) \
    /* args: dirfd, mode, flags */                                                                                                             \
    X(FACCESSAT,  faccessat,  20, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         1, 0,  0, -1) \
    /* args: dirfd, mode */                                                                                                                    \
    X(MKDIRAT,    mkdirat,    21, LSCA_OPC_FILE,                    0,                                                           1, 0,  0, -1) \
    /* args: dirfd, flags */                                                                                                                   \
    X(UNLINKAT,   unlinkat,   22, LSCA_OPC_FILE,                    0,                                                           1, 0,  0, -1) \
    /* args: olddirfd, newdirfd, flags   data: old, new */                                                                                     \
    X(RENAMEAT2,  renameat2,  23, LSCA_OPC_FILE,                    0,                                                           2, 0,  0,  1) \
    X(LINKAT,     linkat,     24, LSCA_OPC_FILE,                    0,                                                           2, 0,  0,  1) \
    /* args: newdirfd              data: target (only text), linkpath */                                                                       \
    X(SYMLINKAT,  symlinkat,  25, LSCA_OPC_FILE,                    0,                                                           2, 1, -1,  0) \
    /* args: dirfd, bufsiz         data out: link text */                                                                                      \
    X(READLINKAT, readlinkat, 26, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         1, 0,  0, -1) \
    /* args: dirfd, mode, flags */                                                                                                             \
    X(FCHMODAT,   fchmodat,   27, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         1, 0,  0, -1) \
    /* args: fd, mode */                                                                                                                       \
    X(FCHMOD,     fchmod,     28, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    /* args: dirfd, uid, gid, flags */                                                                                                         \
    X(FCHOWNAT,   fchownat,   29, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         1, 0,  0, -1) \
    /* args: fd, uid, gid */                                                                                                                   \
    X(FCHOWN,     fchown,     30, LSCA_OPC_DESC,                    LSCA_OPF_FD_ARG | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    /* args: length                data: path */                                                                                               \
    X(TRUNCATE,   truncate,   31, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         1, 0, -1, -1) \
    /* args: dirfd, flags, has_times, has_path   data: times[2], path */                                                                       \
    X(UTIMENSAT,  utimensat,  32, LSCA_OPC_FILE | LSCA_OPC_DESC,    LSCA_OPF_TIMES_FIRST,                                        1, 0,  0, -1) \
    /* args: -1, native result, errno   data: path (already done natively) */                                                                  \
    X(CHDIR,      chdir,      33, LSCA_OPC_FILE,                    LSCA_OPF_REPORT | LSCA_OPF_IDEMPOTENT,                       1, 0, -1, -1) \
    /* args: fd, native result, errno (already done natively) */                                                                               \
    X(FCHDIR,     fchdir,     34, LSCA_OPC_DESC,                    LSCA_OPF_REPORT | LSCA_OPF_IDEMPOTENT,                       0, 0, -1, -1) \
    /* args: size                  data out: the path */                                                                                       \
    X(GETCWD,     getcwd,     35, LSCA_OPC_FILE,                    LSCA_OPF_IDEMPOTENT,                                         0, 0, -1, -1) \
    /* Sockets. data[0..LSCA_ADDR_MAX) carries the address, the payload follows it. */                                                         \
    /* args: fd, len, flags, addrlen (0: none)   data: addr, bytes */                                                                          \
    X(SENDTO,     sendto,     36, LSCA_OPC_NETWORK,                 LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, len, flags, addrlen (0: none)   data out: addr, bytes */                                                                      \
    X(RECVFROM,   recvfrom,   37, LSCA_OPC_NETWORK,                 LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, len, flags, addrlen   gathered iovecs like writev */                                                                          \
    X(SENDMSG,    sendmsg,    38, LSCA_OPC_NETWORK,                 LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, len, flags, addrlen   scattered by the agent; msg_flags in new_fds[1] */                                                      \
    X(RECVMSG,    recvmsg,    39, LSCA_OPC_NETWORK,                 LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, flags, addrlen    data out: addr; one descriptor */                                                                           \
    X(ACCEPT4,    accept4,    40, LSCA_OPC_NETWORK,                 LSCA_OPF_FD_ARG | LSCA_OPF_NEW_FDS | LSCA_OPF_MAY_BLOCK,     0, 0, -1, -1) \
    /* args: fd, addrlen           data: addr */                                                                                               \
    X(CONNECT,    connect,    41, LSCA_OPC_NETWORK,                 LSCA_OPF_FD_ARG | LSCA_OPF_MAY_BLOCK,                        0, 0, -1, -1) \
    /* args: fd, how */                                                                                                                        \
    X(SHUTDOWN,   shutdown,   42, LSCA_OPC_NETWORK,                 LSCA_OPF_FD_ARG,                                             0, 0, -1, -1)

#define LSCA_OP_ENUMERATOR(NAME, name, code, ...) LSCA_OP_##NAME = code,
/* Op codes: the index into both dispatch tables (agent marshalling, worker handlers). */
enum lsca_op {
    LSCA_OP_NONE = 0,
    LSCA_OPS(LSCA_OP_ENUMERATOR)
    LSCA_OP_COUNT                 /* one past the last line: the table's lines are in code order */
};
#undef LSCA_OP_ENUMERATOR

/* The table itself (agent_lib/src/ops.c), indexed by op code; lsca_op_has(op, fact). */
extern const struct lsca_op_info lsca_ops[LSCA_OP_MAX];

static inline int lsca_op_has(unsigned op, uint32_t fact)
{
    return op < LSCA_OP_MAX && (lsca_ops[op].facts & fact) != 0;
}

#define LSCA_SHARD_SIZE (LSCA_HEADER_SIZE + LSCA_SLOTS * sizeof(struct lsca_slot))

#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
_Static_assert(sizeof(struct lsca_shard_header) <= LSCA_HEADER_SIZE, "header fits its page");
_Static_assert(sizeof(struct lsca_slot) % 64 == 0, "slots are cache-line aligned");
_Static_assert(LSCA_OP_COUNT <= LSCA_OP_MAX, "op tables are large enough");
_Static_assert(LSCA_SLOTS <= 64, "pending_mask has a bit per slot");
#endif

static inline struct lsca_slot *lsca_shard_slot(void *shard, unsigned i)
{
    return (struct lsca_slot *)((char *)shard + LSCA_HEADER_SIZE) + i;
}

#endif /* LSCA_ABI_H */

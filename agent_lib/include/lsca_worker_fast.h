/*
 * lsca_worker_fast.h - the worker's compiled hot path (part of the workers' cffi module).
 *
 * The descriptor ops a program makes most (read, write, pread, pwrite, readv, writev,
 * lseek, fsync, fdatasync, ftruncate, fstat; the reports of close, chdir, fchdir) have ONE handler, lsca_handle_io():
 * the compiled loop lsca_worker_run() calls it directly, the Python dispatch table calls
 * it for the calls that took the Python route (a descriptor's first use).
 * Also here: the validated descriptor cache, per-call accounting and trace records, so
 * that both routes count and record a call the same way.
 */
#ifndef LSCA_WORKER_FAST_H
#define LSCA_WORKER_FAST_H

#include <stdint.h>
#include "lsca_abi.h"
#include "lsca_slots.h"

/* LSCA_CDEF_BEGIN */
#define LSCA_FDTAB_SIZE 256             /* cached duplicates per client (direct-mapped by fd)  */
#define LSCA_PATH_GROUPS 64             /* supplementary groups the compiled path route handles */
#define LSCA_TASKS_KEPT 4               /* a client's threads whose /proc entries stay open      */
#define LSCA_TRACE_BATCH 65536          /* bytes of records sent in one message                */
/* Records wait in memory while a reader is slow; past these bounds they are dropped and
 * counted (a marker tells the reader), never waited for: a reader is its user's to stall.
 * A reader earns its backlog: a client's buffer grows past LSCA_TRACE_UNEARNED only by
 * LSCA_TRACE_EARNED bytes per byte its reader took, so one that reads nothing holds little. */
#define LSCA_TRACE_UNEARNED 2097152     /* one client's buffer before its reader took anything */
#define LSCA_TRACE_EARNED 16
#define LSCA_TRACE_BACKLOG 67108864     /* one client's buffer, at most                        */
#define LSCA_TRACE_WORKER_BACKLOG 134217728 /* all of a worker's buffers, beyond each one's fair share */
#define LSCA_TRACE_LEFTOVERS 128        /* released clients' streams a worker still sends from */
#define LSCA_TRACE_LEFTOVER_MS 60000    /* dropped once their reader took nothing for this long  */

/* A stream of records on its way to a trace reader (a SOCK_SEQPACKET end). */
struct lsca_trace_stream {
    int32_t fd;                   /* ours; -1: not tracing                                     */
    uint32_t used;                /* end of the records waiting in buf                         */
    uint32_t sent;                /* start of them: what lies before was sent                 */
    uint32_t cap;
    uint32_t next_try;            /* send again once used reaches it (not every record)        */
    uint32_t failed;              /* the reader went away: recording stopped                  */
    uint32_t last;                /* offset of the record appended last (a marker may grow)    */
    uint32_t pad;
    uint8_t *buf;
    uint64_t sent_total;          /* bytes sent so far (less what still waits in the socket: taken) */
};

/* One thread's /proc entries for the compiled path route. Both stay bound to that thread: a
 * reused number never reaches them (they say ESRCH/ENOENT once it is gone), and the kernel
 * renders status afresh on every read at offset 0. */
struct lsca_task_files {
    int32_t tid;                  /* 0: unused                                                */
    int32_t dir;                  /* /proc/PID/task/TID (O_PATH)                               */
    int32_t status;               /* its status                                               */
    uint32_t pad;
};

struct lsca_fd_entry {
    int32_t fd;                   /* the worker's duplicate; -1: the client has no such fd    */
    int32_t client_fd;
    uint32_t mode;                /* st_mode of the file                                      */
    uint32_t dev_major;           /* for character devices                                    */
    int32_t owned;                /* 1: not cached, lsca_fd_put() closes it after the call   */
    uint32_t unix_socket;         /* 1: an AF_UNIX socket (lsca_unix_socket), read when taken  */
};

/* What a worker keeps of one client for the compiled path (lsca_fast_new allocates it). */
struct lsca_client_fast {
    void *shard;
    int32_t shard_id;             /* the supervisor's id, for the worker table's busy_shard    */
    int32_t pid;
    int32_t pidfd;                /* -1: no pidfd, every descriptor call is declined           */
    int32_t agent_fd;             /* our duplicate of the agent's channel end: not the program's */
    int32_t my_pid;
    uint32_t worker;
    uint64_t trace_mask;          /* bit op: record this op's calls                            */
    uint64_t slow_mask;           /* bit op: always the Python route (policy rules for the op) */
    uint64_t held_mask;           /* bit slot: a record of the slot's last call is held back   */
    void *held[LSCA_SLOTS];       /* those records (malloc'd), till the client took the numbers */
    struct lsca_trace_stream trace; /* the records of its calls, to its session's reader       */
    struct lsca_worker_status *row; /* our worker's row: counts the records dropped            */
    void *trace_lock;             /* around appends and sends (uncontended: one thread now)   */
    char comm[16];                /* the program's name, for records                          */
    int32_t proc_dir;             /* /proc/PID of the registered process (comm, the path route) */
    uint32_t execs_seen;          /* the shard's execs when comm was read                      */
    /* Authority (see lsca_client_authorized): set by lsca_fast_watch for a root worker serving a
     * non-root registration, whose process may exec a set-id image or die and have its pid reused. */
    int32_t proc_fd;              /* /proc/PID, bound to the registered process; -1: not watched */
    uint32_t owner_uid;           /* the registration's uid and gid                            */
    uint32_t owner_gid;
    int32_t revoked;              /* 1: the process is no longer that user: nothing more is served */
    int32_t chan_fd;              /* our end of its descriptor channel (the Python socket's); -1 */
    /* The registration's identity, for the compiled path route (lsca_fast_set_identity). */
    int32_t id_known;             /* 0: every path call takes the Python route                  */
    int32_t id_root;
    uint32_t id_uid, id_gid;
    int32_t id_ngroups;
    uint32_t id_groups[LSCA_PATH_GROUPS];
    struct lsca_task_files tasks[LSCA_TASKS_KEPT];  /* (worker_path.c) */
    uint32_t tasks_next;          /* the entry a new thread takes next                         */
    uint32_t pad2;
    struct lsca_fd_entry fds[LSCA_FDTAB_SIZE];
};

/* Outcomes of lsca_handle_io(). */
enum lsca_outcome {
    LSCA_ANSWERED = 0,            /* *result (and *err when -1) hold the call's outcome        */
    LSCA_DECLINE = 1,             /* the worker cannot do it correctly: native in the client   */
    LSCA_WOULD_BLOCK = 2          /* it may wait: a blocking-call thread must take it          */
};

struct lsca_client_fast *lsca_fast_new(void *shard, int shard_id, int pid, int pidfd, int agent_fd,
                                       unsigned worker);
/* Serve this client only while it is the registered user: when taking one of its descriptors
 * and around every move of its memory, /proc/PID/status must still show uid/gid as its owner (the
 * kernel shows root there once the process exec'd a set-uid, set-gid or file-capability
 * image, made itself undumpable, or exited — after which its pid could name another process).
 * proc_fd stays the caller's. */
void lsca_fast_watch(struct lsca_client_fast *c, int proc_fd, unsigned uid, unsigned gid);
/* /proc/PID of the registered process (the caller's descriptor): where the program's name is
 * read again after an exec that kept the shard (the agent counts those in the header). */
void lsca_fast_set_proc(struct lsca_client_fast *c, int proc_dir);
/* Slot i carries the outcome of a call the program ran natively because it would wait
 * (LSCA_XFER_REPORTED): record it (when its op is traced) and answer DONE. */
void lsca_answer_reported(struct lsca_client_fast *c, unsigned i);
/* The compiled route of path calls (worker_path.c). lsca_path_setup: the worker itself (is it
 * root, its "/" and /proc, and for a non-root worker the identity it acts with: fsuid, fsgid,
 * its filesystem capabilities, its sorted groups; a root worker's groups are those it returns
 * to). lsca_fast_set_identity: the client's registration. lsca_path_fstatat: LSCA_ANSWERED,
 * or LSCA_DECLINE for the Python route (which knows every case). */
void lsca_path_setup(int root, uint64_t root_dev, uint64_t root_ino, uint64_t proc_dev, unsigned fsuid,
                     unsigned fsgid, uint64_t fs_caps, int ngroups, const unsigned *groups);
void lsca_fast_set_identity(struct lsca_client_fast *c, int root, unsigned uid, unsigned gid, int ngroups,
                            const unsigned *groups);
/* Close the kept /proc entries of the client's threads (its /proc directory changes or it goes). */
void lsca_path_forget_tasks(struct lsca_client_fast *c);
/* Give back a client's filesystem identity kept after its path call unless the thread goes on
 * with that client c (NULL: give it back). */
void lsca_path_settle(const struct lsca_client_fast *c);
/* Take the calling thread's filesystem identity (credentials and capabilities, read afresh as
 * for a path call) for a descriptor call whose effect depends on them; lsca_path_settle gives
 * it back. -1: it cannot be taken here (the call goes the Python way, and from there runs in
 * the program). */
int lsca_path_take_caller(struct lsca_client_fast *c, const struct lsca_slot *slot);
int lsca_path_fstatat(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err);
int lsca_path_openat(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err);
int lsca_path_name_call(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err);
int lsca_path_two_names(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err);
int lsca_path_fd_owner_call(struct lsca_client_fast *c, struct lsca_slot *slot, const struct lsca_fd_entry *e,
                            int64_t *result, int32_t *err);
int lsca_path_utimensat(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err);
/* A new descriptor queued for the client on its channel (call seq), never waiting: 0, or -1. */
int lsca_send_fd(int chan, uint64_t seq, int fd);
/* 1: go on; 0: stop (c->revoked is set, errno EPERM). Always 1 for an unwatched client. */
int lsca_client_authorized(struct lsca_client_fast *c);
/* The client's memory, by address, bound to the registered process (see lsca_worker_sys.h). */
int64_t lsca_client_read(struct lsca_client_fast *c, void *local, uint64_t remote, size_t len);
int64_t lsca_client_write(struct lsca_client_fast *c, const void *local, uint64_t remote, size_t len);
/* Closes every cached duplicate, sends what the reader takes now, frees it; records left
 * unsent go on from the worker's leftovers (lsca_trace_leftovers). Never waits. */
void lsca_fast_free(struct lsca_client_fast *c);
/* Record the ops in mask on fd (ours from now on); -1 stops. 0, or -1 when fd is not a Unix
 * SOCK_SEQPACKET socket (closed, nothing recorded). */
int lsca_fast_set_trace(struct lsca_client_fast *c, int fd, uint64_t mask);

/* The worker's duplicate of client descriptor client_fd, checked with kcmp(KCMP_FILE)
 * before every use (glibc closes and reuses descriptors behind the agent's back).
 * 0: *out is it; 1: the client has no such descriptor (out->fd = -1: the call runs on
 * fd -1 so the kernel picks EBADF or an argument errno in its own order); -1 with errno:
 * unreachable (decline). Main thread only. */
int lsca_fd_get(struct lsca_client_fast *c, int64_t client_fd, struct lsca_fd_entry *out);
void lsca_fd_put(const struct lsca_fd_entry *e);
void lsca_fd_drop(struct lsca_client_fast *c, int64_t client_fd);
/* Let go of every file: a worker must not keep a client's file open while idle. */
void lsca_fd_clear(struct lsca_client_fast *c);

/* 1 when op is one lsca_handle_io() answers. */
int lsca_is_io_op(unsigned op);
/* The one handler of the hot descriptor ops, for slot's call on descriptor e. Never waits:
 * a call that would is LSCA_WOULD_BLOCK (the program's own thread makes it natively). */
int lsca_handle_io(struct lsca_client_fast *c, struct lsca_slot *slot, const struct lsca_fd_entry *e,
                   int64_t *result, int32_t *err);

/* Count a call the worker answered: its worker-table row and the client's shard header. */
void lsca_account(struct lsca_worker_status *row, void *shard, unsigned op, uint64_t ns, int failed);

/* Records. begin() takes the request's part (args, paths, bytes written) before the call
 * runs, into this thread's scratch record; NULL when the call is not recorded. end() adds
 * the answer (before the slot goes back to the client) and returns the record's size;
 * commit = 1 appends it, 0 leaves it to the caller (descriptor-creating calls: the
 * numbers are known once the client took them), who appends it later. */
struct lsca_trace_record *lsca_trace_begin(struct lsca_client_fast *c, const struct lsca_slot *slot);
uint32_t lsca_trace_end(struct lsca_client_fast *c, struct lsca_trace_record *r, const struct lsca_slot *slot,
                        uint64_t latency_ns, int commit);
void lsca_trace_append(struct lsca_client_fast *c, const void *record, uint32_t size);
/* 1 once the client took the answer of call seq in slot i (descriptor numbers written). */
int lsca_slot_taken(void *shard, unsigned slot_index, uint64_t seq);
/* Hold back slot i's record (a descriptor-creating call's) until the client wrote the numbers
 * it got; release appends it with them and the outcome the program saw; flush releases those
 * the client took by now (all = 1: every one, as they are, for a client that is gone). One
 * list for both routes. */
void lsca_trace_hold(struct lsca_client_fast *c, unsigned slot_index, const struct lsca_trace_record *r);
void lsca_trace_release_held(struct lsca_client_fast *c, unsigned slot_index);
void lsca_trace_flush_held(struct lsca_client_fast *c, int all);
/* Send what the reader takes now (never waits); 1 when records are left for later. */
int lsca_trace_flush(struct lsca_client_fast *c);
/* Send what the readers of released clients take now, and drop (counting them) the streams
 * whose reader took nothing for LSCA_TRACE_LEFTOVER_MS, or all of them when give_up. Returns
 * how many streams still wait. Main thread. */
int lsca_trace_leftovers(int give_up);
/* Messages sent to trace readers so far: a worker retries sooner while they make progress. */
uint64_t lsca_trace_progress(void);

/* The worker's loop over hot calls: claims calls like lsca_worker_next() and answers the
 * ones lsca_handle_io() can answer here and now. Returns LSCA_FOUND_CALL with a call for the
 * Python route (shard and slot set), LSCA_FOUND_CANCEL with a cancel request,
 * LSCA_FOUND_NOTHING when idle (after spinning spin_ns, then sleeping up to timeout_ms),
 * LSCA_FOUND_TURN_OVER when turn_ns passed (Python's turn for its messages).
 * fast[i] belongs to ctx->shards[i] (NULL: always the Python route). */
int lsca_worker_run(struct lsca_worker_ctx *ctx, struct lsca_client_fast **fast, struct lsca_worker_status *row,
                    uint64_t spin_ns, int timeout_ms, uint64_t turn_ns, int *shard_index, int *slot_index);
/* LSCA_CDEF_END */

#endif /* LSCA_WORKER_FAST_H */

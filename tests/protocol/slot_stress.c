/*
 * slot_stress.c - stress test of the real slot hand-off protocol (agent_lib/src/slots.c).
 *
 *     gcc -O2 -pthread -Iagent_lib/include tests/protocol/slot_stress.c agent_lib/src/slots.c -o slot_stress
 *     ./slot_stress [--seconds 3] [--spin-ns 0] ...          (--help: every option)
 *     (also with -fsanitize=thread, and cross-built for aarch64 with -static)
 *
 * Client threads each own one slot (owner_tid taken by CAS, as agent.c's thread_slot does)
 * and make calls the way agent.c does (start_call: op, xfer, data_len, remote_addr, args and
 * data; lsca_exchange: seq from next_seq, lsca_slot_submit, lsca_slot_wait; lsca_end: FREE
 * with release). Worker threads each have their own struct lsca_worker_ctx over the shards
 * they own and serve them with lsca_worker_next / lsca_worker_complete, sleeping on a real SysV
 * semaphore doorbell. The shards live in a SysV segment (IPC_PRIVATE, removed at once after
 * attaching), so the futexes are shared futexes as in production. The semaphore set is
 * removed by a parent process that waits for the test (so even a crash or SIGKILL of the test
 * leaves nothing behind), or by the test itself with --no-fork.
 *
 * Every request carries values the worker checks (args[5] is a hash of the other args and the
 * seq; data[] a pattern from args[2]; remote_addr and owner_tid known values) and answers
 * with values the client checks (result = f(args, seq), data[] a pattern of the seq and the
 * result, new_fds a stamp of the seq), so a torn or stale read on either side is reported.
 * Each answer is counted per slot (published once per seq: a second answer to a call fails
 * the test). Calls of two kinds: "compute" (answered at once) and "block" (the worker holds
 * it until the client cancels it, as a blocking read is held until a signal interrupts it).
 * Cancels take every path the agent has: lsca_slot_cancel right after the submit or a little
 * later; a SIGUSR1 whose handler (SA_RESTART) does what agent.c's lsca_signal_arrived does
 * (lsca_slot_cancel, then a nested non-interruptible lsca_slot_wait) inside the wait; a
 * SIGUSR2 without SA_RESTART ending an interruptible wait (1), after which the client cancels
 * and waits again non-interruptibly - and must still get exactly one answer.
 *
 * While the test runs, an "arbiter" thread kills workers now and then (the worker stops right
 * after lsca_worker_next returned, maybe holding a claimed call and hints in its ctx) and does
 * what arbiter.py does: a RUNNING call is put back (SUBMITTED, once, if marked idempotent) or
 * failed with EIO, lsca_shard_republish, worker_sleeping = 1, and a new worker with a fresh
 * ctx. At the end all workers die (some holding calls), every client's next call stays in
 * flight, and lsca_shard_fail_all must answer each of them (EIO) and wake its client; then a
 * call submitted to the dead shard must return -1 instead of sleeping.
 *
 * A watchdog thread reports a call that makes no progress for --stuck-seconds (a lost
 * wake-up, a lost doorbell, a lost cancel hint) with the state of its slot, shard and worker,
 * instead of hanging. The workers' doorbell timeout is far longer than that, so a lost
 * doorbell cannot hide behind the timeout.
 *
 * The syscall(), semop() and semtimedop() that slots.c calls are interposed here (counting,
 * then the raw system call) so that the summary can say how often the sleep paths ran.
 *
 * Prints "slot_stress: N calls, M sleeps, K cancels, ok" (with -v a detail line before it)
 * and exits 0 only when every check passed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lsca_abi.h"
#include "lsca_slots.h"

#define MAX_CLIENTS 512
#define MAX_WORKERS 32
#define MAX_SHARDS 64
#define NO_SEQ UINT64_MAX

/* The test's two kinds of call (real op codes: only their numbers travel). */
#define T_OP_COMPUTE LSCA_OP_PREAD      /* answered at once                           */
#define T_OP_BLOCK LSCA_OP_READ         /* held by the worker until cancelled          */
#define ARG3_IDEMPOTENT 1u              /* args[3]: the arbiter may run it again        */

#define LD(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define LDR(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define ADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

/* ---- configuration ---- */

static struct {
    double seconds;
    uint64_t iterations;        /* stop the main phase after this many calls (0: time only) */
    int clients, workers, shards;
    long long spin_ns;          /* client spin budget; -1: a mix per call */
    long long worker_spin_ns;   /* worker spin budget; -1: a mix per call */
    double stuck_seconds;
    int deaths;                 /* worker deaths during the main phase */
    int cancels;                /* block calls and cancels */
    int signals;                /* the signal paths (SIGUSR1 agent handler, SIGUSR2 EINTR) */
    int no_fork;
    int verbose;
    uint64_t seed;
} cfg = {
    .seconds = 3.0, .clients = 12, .workers = 2, .shards = 3, .spin_ns = -1, .worker_spin_ns = -1,
    .stuck_seconds = 20.0, .deaths = 3, .cancels = 1, .signals = 1, .seed = 1,
};

/* ---- failure ---- */

static int g_semid = -1;
static int g_failed;
static pthread_mutex_t g_print_lock = PTHREAD_MUTEX_INITIALIZER;

static void remove_ipc(void)
{
    if (g_semid >= 0)
        semctl(g_semid, 0, IPC_RMID);
}

__attribute__((format(printf, 1, 2), noreturn)) static void fail(const char *fmt, ...)
{
    va_list ap;
    if (__atomic_exchange_n(&g_failed, 1, __ATOMIC_ACQ_REL)) {
        for (;;)                                /* another thread is reporting: let it */
            pause();
    }
    pthread_mutex_lock(&g_print_lock);
    fprintf(stderr, "slot_stress: FAIL: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    fflush(stderr);
    fflush(stdout);
    remove_ipc();
    _exit(1);
}

/* ---- interposed system calls: count, then the raw call ---- */

static struct {
    uint64_t futex_wait, futex_woken, futex_eagain, futex_eintr, futex_wake, futex_woke_threads;
    uint64_t bell_rings, bell_sleeps, bell_woken, bell_timeouts, bell_eintr;
} sc;

struct client;
struct worker;
static __thread struct client *tls_client;
static __thread struct worker *tls_worker;
static void note_futex_wait(int on);
static void note_bell_wait(int on);

#if defined(__x86_64__)
#define HAVE_RAW_SYSCALL 1
static long raw_syscall6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    long ret;
    register long r10 __asm__("r10") = a4;
    register long r8 __asm__("r8") = a5;
    register long r9 __asm__("r9") = a6;
    __asm__ __volatile__("syscall"
                         : "=a"(ret)
                         : "a"(n), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                         : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define HAVE_RAW_SYSCALL 1
static long raw_syscall6(long n, long a1, long a2, long a3, long a4, long a5, long a6)
{
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a1;
    register long x1 __asm__("x1") = a2;
    register long x2 __asm__("x2") = a3;
    register long x3 __asm__("x3") = a4;
    register long x4 __asm__("x4") = a5;
    register long x5 __asm__("x5") = a6;
    __asm__ __volatile__("svc 0"
                         : "+r"(x0)
                         : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                         : "memory", "cc");
    return x0;
}
#else
#define HAVE_RAW_SYSCALL 0
#endif

#if HAVE_RAW_SYSCALL
static long raw_result(long r)
{
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* slots.c's LSCA_SYSCALL (no LSCA_AGENT): the futex wait and wake of the slots. */
long syscall(long nr, ...)
{
    va_list ap;
    long a[6];
    long r;
    int k;

    va_start(ap, nr);
    for (k = 0; k < 6; k++)
        a[k] = va_arg(ap, long);
    va_end(ap);
    if (nr == SYS_futex && (a[1] & FUTEX_CMD_MASK) == FUTEX_WAIT) {
        ADD(&sc.futex_wait, 1);
        note_futex_wait(1);
        r = raw_result(raw_syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]));
        note_futex_wait(0);
        if (r == 0)
            ADD(&sc.futex_woken, 1);
        else if (errno == EAGAIN)
            ADD(&sc.futex_eagain, 1);
        else if (errno == EINTR)
            ADD(&sc.futex_eintr, 1);
        return r;
    }
    r = raw_result(raw_syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]));
    if (nr == SYS_futex && (a[1] & FUTEX_CMD_MASK) == FUTEX_WAKE) {
        ADD(&sc.futex_wake, 1);
        if (r > 0)
            ADD(&sc.futex_woke_threads, (uint64_t)r);
    }
    return r;
}

static int raw_semtimedop(int semid, struct sembuf *sops, size_t nsops, const struct timespec *timeout)
{
    return (int)raw_result(raw_syscall6(SYS_semtimedop, semid, (long)sops, (long)nsops, (long)timeout, 0, 0));
}

/* slots.c's doorbell: the submitter's ring (semop +1) and the worker's sleep (semtimedop -1). */
int semop(int semid, struct sembuf *sops, size_t nsops)
{
    if (nsops == 1 && sops[0].sem_op > 0)
        ADD(&sc.bell_rings, 1);
    return raw_semtimedop(semid, sops, nsops, NULL);
}

int semtimedop(int semid, struct sembuf *sops, size_t nsops, const struct timespec *timeout)
{
    int r;
    if (!(nsops == 1 && sops[0].sem_op < 0))
        return raw_semtimedop(semid, sops, nsops, timeout);
    ADD(&sc.bell_sleeps, 1);
    note_bell_wait(1);
    r = raw_semtimedop(semid, sops, nsops, timeout);
    note_bell_wait(0);
    if (r == 0)
        ADD(&sc.bell_woken, 1);
    else if (errno == EAGAIN)
        ADD(&sc.bell_timeouts, 1);
    else if (errno == EINTR)
        ADD(&sc.bell_eintr, 1);
    return r;
}
#endif

/* A doorbell ring of the test itself (waking a worker it kills), not counted. */
static void ring_worker(int semnum)
{
    struct sembuf op = { .sem_num = (unsigned short)semnum, .sem_op = 1, .sem_flg = 0 };
#if HAVE_RAW_SYSCALL
    raw_semtimedop(g_semid, &op, 1, NULL);
#else
    semop(g_semid, &op, 1);
#endif
}

/* ---- small helpers ---- */

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t args_hash(const uint64_t *args, uint64_t seq)
{
    uint64_t x = seq;
    for (int k = 0; k < 5; k++)
        x = mix64(x ^ args[k]);
    return x;
}

/* What the worker answers a compute call: never negative. */
static int64_t answer_of(const uint64_t *args, uint64_t seq)
{
    return (int64_t)(mix64(args_hash(args, seq) ^ 0x5151) >> 2);
}

static uint32_t answer_len(int64_t result, uint64_t seq)
{
    return (uint32_t)(((uint64_t)result ^ seq) % 1500) + 1;
}

static uint8_t req_byte(uint64_t key, uint32_t k)
{
    return (uint8_t)(k * 131u + (uint32_t)key + (uint32_t)(key >> 29));
}

static uint8_t ans_byte(uint64_t seq, int64_t result, uint32_t k)
{
    return (uint8_t)(k * 7u + (uint32_t)seq + (uint32_t)result);
}

static uint64_t cookie_of(const uint64_t *args) { return args[2] ^ 0x5A5A5A5A12345678ull; }

static void sleep_ns(long ns)
{
    struct timespec ts = { ns / 1000000000L, ns % 1000000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

static const char *state_name(uint32_t s)
{
    switch (s) {
    case LSCA_SLOT_FREE: return "FREE";
    case LSCA_SLOT_SUBMITTED: return "SUBMITTED";
    case LSCA_SLOT_RUNNING: return "RUNNING";
    case LSCA_SLOT_DONE: return "DONE";
    default: return "?";
    }
}

/* ---- the shards, the per-slot book, clients and workers ---- */

struct book {                   /* per (shard, slot): what the test knows of it */
    int client;                 /* owning client, -1: none */
    int32_t tid;                /* its thread id (owner_tid) */
    uint64_t published;         /* answers published by workers and the arbiter (atomic) */
    uint64_t last_pub_seq;      /* seq of the latest published answer (atomic) */
    uint64_t failed_seq;        /* call the arbiter failed with EIO (atomic) */
    uint64_t retried_seq;       /* call the arbiter put back (arbiter thread only) */
};

enum how { HOW_PLAIN, HOW_CANCEL_NOW, HOW_CANCEL_LATER, HOW_SIGUSR1, HOW_SIGUSR2, HOW_COUNT };
static const char *const how_names[HOW_COUNT] = { "plain wait", "cancel at once", "cancel later",
                                                  "SIGUSR1 (agent handler)", "SIGUSR2 + interruptible wait" };

enum { P_IDLE, P_CALL, P_EXITED };

struct client {
    int id, shard, slot;
    pthread_t thread;
    int started;
    struct lsca_shard_header *h;
    struct lsca_slot *s;
    struct book *b;
    uint64_t rng;
    /* Seen by the watchdog and the signaller (atomics). */
    int phase;
    int in_futex;
    uint64_t call_seq, call_start_ns;
    int call_op, call_how;
    long long call_spin;
    int want_signal;            /* 0, SIGUSR1 or SIGUSR2: the signaller sends it until cleared */
    int32_t tid;
    /* The thread and its signal handler (same thread: atomics with signal fences). */
    int waiting;                /* agent.c's waiting_shard != NULL */
    int interrupted;            /* agent.c's self.interrupted */
    uint64_t handler_runs, handler_dead;
    /* Counts, read after join. */
    uint64_t submitted, ok, eintr, eio_arbiter, eio_failall, dead_returns;
    uint64_t cancels, wait_returned_1, block_calls, by_how[HOW_COUNT];
    uint64_t published_taken;   /* answers taken that a worker or the arbiter published */
    int last_dead;
};

enum { W_NEXT = 1, W_SERVE, W_DEAD };

struct worker {
    int index, generation;
    pthread_t thread;
    int running;
    struct lsca_worker_ctx *ctx;
    int nshards;
    int shard_ids[MAX_SHARDS];
    uint64_t parked[MAX_SHARDS];            /* block calls held, per local shard index */
    uint64_t rng;
    int die;                                /* atomic: stop after lsca_worker_next returns */
    int phase;                              /* atomic */
    int in_bell;                            /* atomic: in the doorbell semtimedop */
    int died_holding;
    /* Counts (the worker's; summed when it is joined). */
    uint64_t served, eintr_answers, parked_total, cancel_hints, stale_cancel_hints, idle_returns;
};

static struct {
    void *shm;
    void *shards[MAX_SHARDS];
    struct book book[MAX_SHARDS][LSCA_SLOTS];
    struct client clients[MAX_CLIENTS];
    struct worker workers[MAX_WORKERS];
    uint64_t t0;
    int stop_clients;           /* atomic */
    int stop_signaller;         /* atomic */
    int stop_watchdog;          /* atomic */
    int final_phase;            /* atomic: the workers are gone on purpose */
    uint64_t total_calls;       /* atomic */
    const char *stage;          /* atomic (pointer) */
    /* Summed worker counts and the arbiter's. */
    uint64_t served, eintr_answers, parked_total, cancel_hints, stale_cancel_hints, idle_returns;
    uint64_t deaths, died_holding, retries, arbiter_eio, republished, failall_answered, dead_shard_returns;
    uint64_t signals_sent;
} G;

static void *shard_ptr(int k) { return G.shards[k]; }

static void note_futex_wait(int on)
{
    if (tls_client)
        STR(&tls_client->in_futex, on);
}

static void note_bell_wait(int on)
{
    if (tls_worker)
        STR(&tls_worker->in_bell, on);
}

/* ---- the worker ---- */

static void publish(int gs, int sl, uint64_t seq)
{
    struct book *b = &G.book[gs][sl];
    uint64_t prev = __atomic_exchange_n(&b->last_pub_seq, seq, __ATOMIC_ACQ_REL);
    if (prev == seq)
        fail("a second answer to call seq %" PRIu64 " of shard %d slot %d", seq, gs, sl);
    ADD(&b->published, 1);
    lsca_worker_complete(shard_ptr(gs), (unsigned)sl);
}

static void answer_eintr(int gs, int sl, uint64_t seq)
{
    struct lsca_slot *s = lsca_shard_slot(shard_ptr(gs), (unsigned)sl);
    s->status = LSCA_STATUS_DONE;
    s->result = -1;
    s->err = EINTR;
    s->data_len = 0;
    s->new_fds[0] = (int32_t)seq;
    s->new_fds[1] = ~(int32_t)seq;
    publish(gs, sl, seq);
}

static void serve(struct worker *w, int si, int sl)
{
    int gs = w->shard_ids[si];
    struct lsca_slot *s = lsca_shard_slot(shard_ptr(gs), (unsigned)sl);
    struct book *b = &G.book[gs][sl];
    uint64_t args[LSCA_MAX_ARGS];
    uint32_t op, xfer, len, k;
    uint64_t seq, remote;
    int32_t owner;

    if (b->client < 0)
        fail("worker %d claimed shard %d slot %d, which no client owns", w->index, gs, sl);
    /* The request, read after the claim (acquire): whole and this call's. */
    op = s->op;
    xfer = s->xfer;
    len = s->data_len;
    remote = s->remote_addr;
    seq = s->seq;
    memcpy(args, s->args, sizeof(args));
    owner = LDR(&s->owner_tid);
    if (op != T_OP_COMPUTE && op != T_OP_BLOCK)
        fail("worker %d: shard %d slot %d seq %" PRIu64 ": op %u is not the client's", w->index, gs, sl, seq, op);
    if (xfer != LSCA_XFER_INLINE || owner != LDR(&b->tid) || args[0] != (uint64_t)b->client)
        fail("worker %d: shard %d slot %d seq %" PRIu64 ": xfer %u owner_tid %d client %" PRIu64
             " - not the client's (%d, client %d)", w->index, gs, sl, seq, xfer, owner, args[0], LDR(&b->tid),
             b->client);
    if (args[5] != args_hash(args, seq) || args[4] != len || remote != cookie_of(args) || len > LSCA_INLINE_MAX)
        fail("worker %d: shard %d slot %d: torn or stale request: seq %" PRIu64 " args[4] %" PRIu64
             " data_len %u args[5] %#" PRIx64 " (expected %#" PRIx64 ") remote_addr %#" PRIx64,
             w->index, gs, sl, seq, args[4], len, args[5], args_hash(args, seq), remote);
    for (k = 0; k < len; k++)
        if (s->data[k] != req_byte(args[2], k))
            fail("worker %d: shard %d slot %d seq %" PRIu64 ": request data[%u] = %#x, expected %#x (of %u bytes)",
                 w->index, gs, sl, seq, k, s->data[k], req_byte(args[2], k), len);
    w->served++;
    /* A call cancelled before it started is answered EINTR (worker.py: pool calls). */
    if (__atomic_load_n(&s->cancel, __ATOMIC_ACQUIRE)) {
        w->eintr_answers++;
        answer_eintr(gs, sl, seq);
        return;
    }
    if (op == T_OP_BLOCK) {
        w->parked[si] |= (uint64_t)1 << sl;
        w->parked_total++;
        return;
    }
    int64_t result = answer_of(args, seq);
    uint32_t n = answer_len(result, seq);
    for (k = 0; k < n; k++)
        s->data[k] = ans_byte(seq, result, k);
    s->data_len = n;
    s->new_fds[0] = (int32_t)seq;
    s->new_fds[1] = ~(int32_t)seq;
    s->status = LSCA_STATUS_DONE;
    s->err = 0;
    s->result = result;
    publish(gs, sl, seq);
}

/* A cancel hint: answer a held call whose cancel flag is set. The flag is the truth (a hint
 * may be stale: a cancel of an earlier call on the slot); only a held call is ours to read. */
static void cancel_hint(struct worker *w, int si, int sl)
{
    int gs = w->shard_ids[si];
    struct lsca_slot *s = lsca_shard_slot(shard_ptr(gs), (unsigned)sl);

    w->cancel_hints++;
    if (!((w->parked[si] >> sl) & 1) || !__atomic_load_n(&s->cancel, __ATOMIC_ACQUIRE)) {
        w->stale_cancel_hints++;
        return;
    }
    w->parked[si] &= ~((uint64_t)1 << sl);
    w->eintr_answers++;
    answer_eintr(gs, sl, s->seq);
}

static long long pick_worker_spin(struct worker *w)
{
    static const long long mix[] = { 0, 5000, 100000 };
    if (cfg.worker_spin_ns >= 0)
        return cfg.worker_spin_ns;
    return mix[rnd(&w->rng) % 3];
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    /* Far longer than the watchdog's patience: a lost doorbell shows as a stuck call. */
    int timeout_ms = (int)(cfg.stuck_seconds * 4000) + 1000;

    tls_worker = w;
    for (;;) {
        int si = -1, sl = -1, got;
        ST(&w->phase, W_NEXT);
        got = lsca_worker_next(w->ctx, &si, &sl, (uint64_t)pick_worker_spin(w), timeout_ms);
        ST(&w->phase, W_SERVE);
        if (LD(&w->die)) {
            w->died_holding = got == LSCA_FOUND_CALL;    /* the claimed call stays RUNNING */
            break;
        }
        if (got == LSCA_FOUND_CALL)
            serve(w, si, sl);
        else if (got == LSCA_FOUND_CANCEL)
            cancel_hint(w, si, sl);
        else
            w->idle_returns++;
    }
    ST(&w->phase, W_DEAD);
    return NULL;
}

static void start_worker(struct worker *w)
{
    int k;
    memset(w->ctx, 0, sizeof(*w->ctx));
    w->ctx->doorbell_semid = g_semid;
    w->ctx->doorbell_semnum = w->index;
    for (k = 0; k < w->nshards; k++)
        w->ctx->shards[k] = shard_ptr(w->shard_ids[k]);
    w->ctx->limit = (unsigned)w->nshards;
    memset(w->parked, 0, sizeof(w->parked));
    w->die = 0;
    w->died_holding = 0;
    __atomic_add_fetch(&w->generation, 1, __ATOMIC_RELAXED);
    w->rng = mix64(cfg.seed ^ ((uint64_t)w->index << 40) ^ (uint64_t)LDR(&w->generation));
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        fail("pthread_create (worker)");
    w->running = 1;
}

static void kill_worker(struct worker *w)
{
    ST(&w->die, 1);
    ring_worker(w->index);
    pthread_join(w->thread, NULL);
    w->running = 0;
    G.served += w->served;
    G.eintr_answers += w->eintr_answers;
    G.parked_total += w->parked_total;
    G.cancel_hints += w->cancel_hints;
    G.stale_cancel_hints += w->stale_cancel_hints;
    G.idle_returns += w->idle_returns;
    G.died_holding += (uint64_t)w->died_holding;
    w->served = w->eintr_answers = w->parked_total = w->cancel_hints = 0;
    w->stale_cancel_hints = w->idle_returns = 0;
}

/* arbiter.py after a worker died: its RUNNING calls are retried once (idempotent) or failed
 * with EIO; the hints its ctx held are published again; the new owner may sleep. */
static void resolve_after_death(struct worker *w)
{
    for (int si = 0; si < w->nshards; si++) {
        int gs = w->shard_ids[si];
        void *shard = shard_ptr(gs);
        struct lsca_shard_header *h = shard;
        for (int sl = 0; sl < LSCA_SLOTS; sl++) {
            struct lsca_slot *s = lsca_shard_slot(shard, (unsigned)sl);
            struct book *b = &G.book[gs][sl];
            if (b->client < 0 || smp_load_sc(&s->state) != LSCA_SLOT_RUNNING)
                continue;
            uint64_t seq = s->seq;
            if ((s->args[3] & ARG3_IDEMPOTENT) && b->retried_seq != seq) {
                b->retried_seq = seq;
                /* arbiter.py stores it plainly (cffi); atomic here for ThreadSanitizer. */
                smp_store_sc(&s->state, LSCA_SLOT_SUBMITTED);
                G.retries++;
            } else {
                s->status = LSCA_STATUS_DONE;
                s->result = -1;
                s->err = EIO;
                s->data_len = 0;
                ST(&b->failed_seq, seq);
                G.arbiter_eio++;
                publish(gs, sl, seq);
            }
        }
        G.republished += (uint64_t)lsca_shard_republish(shard);
        smp_store_sc(&h->worker_sleeping, 1);
    }
}

/* ---- the client ---- */

static void on_sigusr1(int sig)
{
    /* agent.c lsca_signal_arrived: a handler interrupting a proxied call first cancels it
     * in the worker and takes its answer (the kernel keeps this order for a native call). */
    struct client *c = tls_client;
    int saved = errno;
    (void)sig;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (c && __atomic_load_n(&c->waiting, __ATOMIC_RELAXED) &&
        __atomic_load_n(&c->s->state, __ATOMIC_ACQUIRE) != LSCA_SLOT_FREE &&
        !__atomic_load_n(&c->interrupted, __ATOMIC_RELAXED)) {
        lsca_slot_cancel(c->h, (unsigned)c->slot);
        c->cancels++;
        if (lsca_slot_wait(c->h, (unsigned)c->slot, (uint64_t)c->call_spin, 0) < 0)
            c->handler_dead++;
        c->handler_runs++;
        __atomic_store_n(&c->interrupted, 1, __ATOMIC_RELAXED);
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    errno = saved;
}

static void on_sigusr2(int sig)
{
    (void)sig;                  /* installed without SA_RESTART: only makes the futex say EINTR */
}

static long long pick_client_spin(struct client *c)
{
    static const long long mix[] = { 0, 1000, 20000, 200000 };
    if (cfg.spin_ns >= 0)
        return cfg.spin_ns;
    return mix[rnd(&c->rng) % 4];
}

static void check_answer(struct client *c, uint32_t op, const uint64_t *args, uint64_t seq, int cancelled)
{
    struct lsca_slot *s = c->s;
    int64_t result = s->result;
    int32_t err = s->err;
    uint32_t len = s->data_len, k;
    const char *what = NULL;

    if (s->status != LSCA_STATUS_DONE) {
        what = "status is not DONE";
    } else if (result == -1 && err == EINTR) {
        if (!cancelled)
            what = "EINTR for a call nobody cancelled";
        else if (s->new_fds[0] != (int32_t)seq || s->new_fds[1] != ~(int32_t)seq)
            what = "EINTR answer of another call (stamp)";
        else
            c->eintr++, c->published_taken++;
    } else if (result == -1 && err == EIO) {
        if (LD(&c->b->failed_seq) == seq)
            c->eio_arbiter++, c->published_taken++;
        else if (LD(&c->h->dead))
            c->eio_failall++;
        else
            what = "EIO that neither the arbiter nor fail_all gave";
    } else if (op != T_OP_COMPUTE) {
        what = "a block call answered without a cancel";
    } else if (result != answer_of(args, seq) || err != 0) {
        what = "result is not f(args, seq)";
    } else if (len != answer_len(result, seq) || s->new_fds[0] != (int32_t)seq || s->new_fds[1] != ~(int32_t)seq) {
        what = "answer length or stamp of another call";
    } else {
        for (k = 0; k < len; k++)
            if (s->data[k] != ans_byte(seq, result, k))
                break;
        if (k < len)
            what = "answer data torn or stale";
        else
            c->ok++, c->published_taken++;
    }
    if (what)
        fail("client %d (shard %d slot %d): call seq %" PRIu64 " (%s, %s): %s: status %u result %" PRId64
             " err %d data_len %u new_fds %d %d", c->id, c->shard, c->slot, seq,
             op == T_OP_BLOCK ? "block" : "compute", how_names[c->call_how], what, s->status, result, err, len,
             s->new_fds[0], s->new_fds[1]);
    /* Exactly one answer per call: every answer published for this slot was taken once. */
    uint64_t published = LD(&c->b->published);
    if (published != c->published_taken)
        fail("client %d (shard %d slot %d): call seq %" PRIu64 ": %" PRIu64 " answers published for the slot, "
             "%" PRIu64 " taken by its client", c->id, c->shard, c->slot, seq, published, c->published_taken);
}

static void one_call(struct client *c)
{
    struct lsca_slot *s = c->s;
    unsigned i = (unsigned)c->slot;
    uint64_t r = rnd(&c->rng);
    uint32_t op = (cfg.cancels && r % 8 == 0) ? T_OP_BLOCK : T_OP_COMPUTE;
    int how = HOW_PLAIN, cancelled = 0, waited;
    uint64_t args[LSCA_MAX_ARGS], seq;
    uint32_t len, k;

    if (cfg.cancels) {
        int pick = (int)((r >> 8) % 20);
        if (op == T_OP_BLOCK)               /* only a cancel ends it */
            how = HOW_CANCEL_NOW + pick % (cfg.signals ? 4 : 2);
        else if (pick == 0)
            how = HOW_CANCEL_NOW;
        else if (pick == 1)
            how = HOW_CANCEL_LATER;
        else if (pick == 2 && cfg.signals)
            how = HOW_SIGUSR1;
        else if (pick == 3 && cfg.signals)
            how = HOW_SIGUSR2;
    }
    c->call_spin = pick_client_spin(c);
    c->call_how = how;
    c->call_op = (int)op;
    c->by_how[how]++;
    if (op == T_OP_BLOCK)
        c->block_calls++;

    /* start_call: the request. */
    len = (r >> 20) % 64 == 0 ? (uint32_t)((r >> 32) % LSCA_INLINE_MAX) + 1 : (uint32_t)((r >> 32) % 2048);
    args[0] = (uint64_t)c->id;
    args[1] = c->submitted;
    args[2] = rnd(&c->rng);
    args[3] = (r >> 40) & 1 ? ARG3_IDEMPOTENT : 0;
    args[4] = len;
    s->op = op;
    s->xfer = LSCA_XFER_INLINE;
    s->data_len = len;
    s->remote_addr = cookie_of(args);
    for (k = 0; k < len; k++)
        s->data[k] = req_byte(args[2], k);
    /* lsca_exchange: a fresh seq names the call. */
    seq = __atomic_fetch_add(&c->h->next_seq, 1, __ATOMIC_RELAXED);
    s->seq = seq;
    args[5] = args_hash(args, seq);
    memcpy(s->args, args, sizeof(args));

    __atomic_store_n(&c->interrupted, 0, __ATOMIC_RELAXED);
    STR(&c->call_seq, seq);
    STR(&c->call_start_ns, lsca_now_ns());
    ST(&c->phase, P_CALL);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&c->waiting, 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (how == HOW_SIGUSR1)
        ST(&c->want_signal, SIGUSR1);
    else if (how == HOW_SIGUSR2)
        ST(&c->want_signal, SIGUSR2);

    lsca_slot_submit(c->h, i);
    c->submitted++;
    ADD(&G.total_calls, 1);

    switch (how) {
    case HOW_CANCEL_NOW:
        lsca_slot_cancel(c->h, i);
        c->cancels++;
        cancelled = 1;
        waited = lsca_slot_wait(c->h, i, (uint64_t)c->call_spin, 0);
        break;
    case HOW_CANCEL_LATER: {
        uint64_t until = lsca_now_ns() + rnd(&c->rng) % 50000;
        while (lsca_now_ns() < until)
            lsca_cpu_relax();
        lsca_slot_cancel(c->h, i);            /* the call may be DONE already: a stale hint */
        c->cancels++;
        cancelled = 1;
        waited = lsca_slot_wait(c->h, i, (uint64_t)c->call_spin, 0);
        break;
    }
    case HOW_SIGUSR2:
        waited = lsca_slot_wait(c->h, i, (uint64_t)c->call_spin, 1);
        if (waited == 1) {
            /* Interrupted: the agent's way - cancel, then wait for the answer regardless. */
            ST(&c->want_signal, 0);
            c->wait_returned_1++;
            lsca_slot_cancel(c->h, i);
            c->cancels++;
            cancelled = 1;
            waited = lsca_slot_wait(c->h, i, (uint64_t)c->call_spin, 0);
        }
        break;
    default:                                   /* plain, or SIGUSR1: the handler cancels inside */
        waited = lsca_slot_wait(c->h, i, (uint64_t)c->call_spin, 0);
        break;
    }
    ST(&c->want_signal, 0);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(&c->waiting, 0, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (__atomic_load_n(&c->interrupted, __ATOMIC_RELAXED))
        cancelled = 1;

    if (waited < 0) {
        /* Dead shard: nobody answers; the slot is not read (fail_all may still write it). */
        if (!LD(&c->h->dead))
            fail("client %d: lsca_slot_wait returned -1 on a live shard", c->id);
        c->dead_returns++;
        c->last_dead = 1;
        ST(&c->phase, P_IDLE);
        return;
    }
    if (waited != 0 || LD(&s->state) != LSCA_SLOT_DONE)
        fail("client %d (shard %d slot %d): lsca_slot_wait returned %d with state %s", c->id, c->shard, c->slot,
             waited, state_name(LD(&s->state)));
    check_answer(c, op, args, seq, cancelled);
    /* lsca_end: the slot is free for the next call once the answer is read. */
    __atomic_store_n(&s->state, LSCA_SLOT_FREE, __ATOMIC_RELEASE);
    ST(&c->phase, P_IDLE);
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    int32_t expected = 0, tid = (int32_t)syscall(SYS_gettid);

    tls_client = c;
    ST(&c->tid, tid);
    ST(&c->b->tid, tid);
    /* agent.c thread_slot: the slot is this thread's. */
    if (!__atomic_compare_exchange_n(&c->s->owner_tid, &expected, tid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        fail("client %d: slot %d of shard %d already owned by %d", c->id, c->slot, c->shard, expected);
    while (!LD(&G.stop_clients)) {
        /* lsca_begin: a dead shard means native from now on. */
        if (__atomic_load_n(&c->h->dead, __ATOMIC_ACQUIRE))
            break;
        one_call(c);
        if (c->last_dead)
            break;
    }
    ST(&c->phase, P_EXITED);
    return NULL;
}

/* ---- signaller, watchdog, arbiter ---- */

static void *signaller_main(void *arg)
{
    (void)arg;
    while (!LD(&G.stop_signaller)) {
        for (int k = 0; k < cfg.clients; k++) {
            struct client *c = &G.clients[k];
            int sig = LD(&c->want_signal);
            if (sig && LD(&c->phase) == P_CALL) {
                pthread_kill(c->thread, sig);
                ADD(&G.signals_sent, 1);
            }
        }
        sleep_ns(200000);
    }
    return NULL;
}

static int sem_value(int semnum, int cmd)
{
    return semctl(g_semid, semnum, cmd);
}

static void report_stuck(struct client *c, double stuck_s)
{
    struct lsca_shard_header *h = c->h;
    struct lsca_slot *s = c->s;
    uint32_t st = LDR(&s->state);
    int owner = -1;
    char wbuf[512] = "";

    for (int w = 0; w < cfg.workers; w++)
        for (int k = 0; k < G.workers[w].nshards; k++)
            if (G.workers[w].shard_ids[k] == c->shard)
                owner = w;
    if (owner >= 0) {
        struct worker *w = &G.workers[owner];
        int phase = LDR(&w->phase);
        const char *doing = phase == W_NEXT ? "in lsca_worker_next" : phase == W_SERVE ? "serving"
                          : phase == W_DEAD ? "dead" : "?";
        snprintf(wbuf, sizeof(wbuf), "worker %d (generation %d): %s%s, doorbell semaphore value %d, waiting %d",
                 owner, LDR(&w->generation), doing, LDR(&w->in_bell) ? " (asleep on the doorbell)" : "",
                 sem_value(owner, GETVAL), sem_value(owner, GETNCNT));
    }
    const char *diagnosis =
        st == LSCA_SLOT_DONE ? "the answer is there: a lost futex wake-up of the client" :
        st == LSCA_SLOT_SUBMITTED && owner >= 0 && LDR(&G.workers[owner].in_bell)
            ? "submitted while the worker sleeps: a lost doorbell (or pending hint)" :
        st == LSCA_SLOT_SUBMITTED ? "submitted, never claimed: a lost pending hint" :
        st == LSCA_SLOT_RUNNING && c->call_op == T_OP_BLOCK
            ? "held by the worker: a lost cancel (hint, flag or signal)" :
        st == LSCA_SLOT_RUNNING ? "claimed and never answered" : "the slot is not in a call";
    fail("client %d (shard %d slot %d, tid %d) stuck %.1f s in call seq %" PRIu64 " (%s, %s, spin %lld ns)%s: "
         "slot state=%s client_sleeping=%#x cancel=%u; shard pending_mask=%#" PRIx64 " cancel_mask=%#" PRIx64
         " worker_sleeping=%u dead=%u; %s; signals sent %" PRIu64 " - %s",
         c->id, c->shard, c->slot, LDR(&c->tid), stuck_s, LDR(&c->call_seq),
         c->call_op == T_OP_BLOCK ? "block" : "compute", how_names[c->call_how], c->call_spin,
         LDR(&c->in_futex) ? " asleep in FUTEX_WAIT" : "", state_name(st), LDR(&s->client_sleeping),
         LDR(&s->cancel), LDR(&h->pending_mask), LDR(&h->cancel_mask), LDR(&h->worker_sleeping), LDR(&h->dead),
         wbuf, LDR(&G.signals_sent), diagnosis);
}

static void *watchdog_main(void *arg)
{
    uint64_t stuck_ns = (uint64_t)(cfg.stuck_seconds * 1e9);
    uint64_t global_ns = (uint64_t)((cfg.seconds + 3 * cfg.stuck_seconds + 30) * 1e9);
    (void)arg;
    while (!LD(&G.stop_watchdog)) {
        uint64_t now = lsca_now_ns();
        for (int k = 0; k < cfg.clients; k++) {
            struct client *c = &G.clients[k];
            if (LD(&c->phase) != P_CALL)
                continue;
            uint64_t start = LDR(&c->call_start_ns);
            if (now > start && now - start > stuck_ns && LD(&c->phase) == P_CALL && LDR(&c->call_start_ns) == start)
                report_stuck(c, (double)(now - start) / 1e9);
        }
        if (now - G.t0 > global_ns)
            fail("the run took too long (stage: %s)", (const char *)LD(&G.stage));
        sleep_ns(20000000);
    }
    return NULL;
}

static void *arbiter_main(void *arg)
{
    (void)arg;
    for (int d = 1; d <= cfg.deaths && !LD(&G.final_phase); d++) {
        uint64_t when = G.t0 + (uint64_t)(cfg.seconds * 1e9 * d / (cfg.deaths + 1));
        while (lsca_now_ns() < when && !LD(&G.final_phase))
            sleep_ns(5000000);
        if (LD(&G.final_phase))
            break;
        struct worker *w = &G.workers[(d - 1) % cfg.workers];
        kill_worker(w);
        G.deaths++;
        resolve_after_death(w);
        start_worker(w);
    }
    return NULL;
}

/* ---- setup, run, checks ---- */

static void init_shards(void)
{
    for (int k = 0; k < cfg.shards; k++) {
        void *shard = (char *)G.shm + (size_t)k * LSCA_SHARD_SIZE;
        struct lsca_shard_header *h = shard;
        G.shards[k] = shard;
        h->magic = LSCA_MAGIC;
        h->abi_version = LSCA_ABI_VERSION;
        h->shard_size = (uint32_t)LSCA_SHARD_SIZE;
        h->nslots = LSCA_SLOTS;
        h->client_pid = (int32_t)getpid();
        h->doorbell_semid = g_semid;
        h->doorbell_semnum = k % cfg.workers;
        h->worker_id = (uint32_t)(k % cfg.workers);
        h->worker_sleeping = 1;             /* arbiter.py: the first submit rings */
        h->next_seq = 1;
        for (int sl = 0; sl < LSCA_SLOTS; sl++) {
            G.book[k][sl].client = -1;
            G.book[k][sl].last_pub_seq = NO_SEQ;
            G.book[k][sl].failed_seq = NO_SEQ;
            G.book[k][sl].retried_seq = NO_SEQ;
        }
    }
}

static int all_clients_in_flight(void)
{
    for (int k = 0; k < cfg.clients; k++) {
        struct client *c = &G.clients[k];
        uint32_t st = LD(&c->s->state);
        if (LD(&c->phase) != P_CALL || (st != LSCA_SLOT_SUBMITTED && st != LSCA_SLOT_RUNNING))
            return 0;
    }
    return 1;
}

static int all_clients_exited(void)
{
    for (int k = 0; k < cfg.clients; k++)
        if (LD(&G.clients[k].phase) != P_EXITED)
            return 0;
    return 1;
}

/* A call submitted to a dead shard (no worker, fail_all done): the wait must return -1. */
static void dead_shard_calls(void)
{
    for (int gs = 0; gs < cfg.shards; gs++) {
        for (int sl = 0; sl < LSCA_SLOTS; sl++) {
            if (G.book[gs][sl].client >= 0)
                continue;
            struct lsca_slot *s = lsca_shard_slot(shard_ptr(gs), (unsigned)sl);
            s->op = T_OP_COMPUTE;
            s->data_len = 0;
            s->seq = __atomic_fetch_add(&((struct lsca_shard_header *)shard_ptr(gs))->next_seq, 1, __ATOMIC_RELAXED);
            lsca_slot_submit(shard_ptr(gs), (unsigned)sl);
            int w = lsca_slot_wait(shard_ptr(gs), (unsigned)sl, 0, 0);
            if (w != -1)
                fail("a call submitted to dead shard %d returned %d, not -1", gs, w);
            if (LD(&s->client_sleeping) != 0)
                fail("client_sleeping left at %#x after a dead return", LD(&s->client_sleeping));
            G.dead_shard_returns++;
            break;
        }
    }
}

static void final_checks(uint64_t failed_total)
{
    uint64_t taken_failall = 0, dead_done = 0;

    for (int k = 0; k < cfg.clients; k++) {
        struct client *c = &G.clients[k];
        struct lsca_slot *s = c->s;
        uint64_t answers = c->ok + c->eintr + c->eio_arbiter + c->eio_failall + c->dead_returns;
        uint32_t st = LD(&s->state);
        if (answers != c->submitted)
            fail("client %d: %" PRIu64 " calls submitted, %" PRIu64 " ended (answers and dead returns)", c->id,
                 c->submitted, answers);
        if (LD(&c->b->published) != c->published_taken)
            fail("client %d (shard %d slot %d): %" PRIu64 " answers published for the slot, %" PRIu64 " taken",
                 c->id, c->shard, c->slot, LD(&c->b->published), c->published_taken);
        if (LD(&s->client_sleeping) != 0)
            fail("client %d: client_sleeping left at %#x", c->id, LD(&s->client_sleeping));
        if (c->last_dead) {
            /* It saw dead before fail_all reached its slot (DONE now), or submitted after
             * fail_all's scan (still SUBMITTED). */
            if (st == LSCA_SLOT_DONE)
                dead_done++;
            else if (st != LSCA_SLOT_SUBMITTED)
                fail("client %d: dead return left the slot %s", c->id, state_name(st));
        } else if (st != LSCA_SLOT_FREE) {
            fail("client %d: slot left %s", c->id, state_name(st));
        }
        taken_failall += c->eio_failall;
    }
    if (failed_total != taken_failall + dead_done)
        fail("lsca_shard_fail_all answered %" PRIu64 " calls; clients took %" PRIu64 " EIO answers, %" PRIu64
             " were answered after the client saw dead", failed_total, taken_failall, dead_done);
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [options]\n"
            "  --seconds S         main phase length (default 3)\n"
            "  --iterations N      end the main phase after N calls (default: time only)\n"
            "  --clients N         client threads, one slot each (default 12)\n"
            "  --workers N         worker threads (default 2)\n"
            "  --shards N          shards, owned round-robin by the workers (default 3)\n"
            "  --spin-ns NS        client and worker spin budget (default: a mix per call; 0: sleep at once)\n"
            "  --worker-spin-ns NS worker spin budget alone\n"
            "  --stuck-seconds S   a call without progress this long fails the test (default 20)\n"
            "  --deaths N          worker deaths during the main phase (default 3)\n"
            "  --no-cancels        no block calls, no cancels\n"
            "  --no-signals        no SIGUSR1/SIGUSR2 paths\n"
            "  --seed N            random seed (default 1)\n"
            "  --no-fork           run in this process (the semaphore set is removed at exit)\n"
            "  -v, --verbose       a detail line before the summary\n",
            argv0);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    for (int k = 1; k < argc; k++) {
        const char *a = argv[k];
        const char *v = k + 1 < argc ? argv[k + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++k)
        if (OPT("--seconds"))
            cfg.seconds = atof(v);
        else if (OPT("--iterations"))
            cfg.iterations = strtoull(v, NULL, 10);
        else if (OPT("--clients"))
            cfg.clients = atoi(v);
        else if (OPT("--workers"))
            cfg.workers = atoi(v);
        else if (OPT("--shards"))
            cfg.shards = atoi(v);
        else if (OPT("--spin-ns"))
            cfg.spin_ns = cfg.worker_spin_ns = atoll(v);
        else if (OPT("--worker-spin-ns"))
            cfg.worker_spin_ns = atoll(v);
        else if (OPT("--stuck-seconds"))
            cfg.stuck_seconds = atof(v);
        else if (OPT("--deaths"))
            cfg.deaths = atoi(v);
        else if (OPT("--seed"))
            cfg.seed = strtoull(v, NULL, 0);
        else if (strcmp(a, "--no-cancels") == 0)
            cfg.cancels = 0;
        else if (strcmp(a, "--no-signals") == 0)
            cfg.signals = 0;
        else if (strcmp(a, "--no-fork") == 0)
            cfg.no_fork = 1;
        else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0)
            cfg.verbose = 1;
        else
            usage(argv[0]);
#undef OPT
    }
    if (cfg.shards < 1 || cfg.shards > MAX_SHARDS || cfg.workers < 1 || cfg.workers > MAX_WORKERS ||
        cfg.workers > cfg.shards || cfg.clients < 1 || cfg.clients > MAX_CLIENTS ||
        cfg.clients > cfg.shards * (LSCA_SLOTS - 1) || cfg.seconds <= 0 || cfg.stuck_seconds <= 0 || cfg.deaths < 0) {
        fprintf(stderr, "slot_stress: need 1 <= workers <= shards <= %d, 1 <= clients <= 63 per shard "
                        "(one slot per shard stays free for the dead-shard check), seconds > 0\n", MAX_SHARDS);
        exit(2);
    }
    if (!cfg.cancels)
        cfg.signals = 0;
}

static int run(void)
{
    pthread_t watchdog, signaller, arbiter;
    struct sigaction sa;
    uint64_t failed_total = 0;

    G.t0 = lsca_now_ns();
    ST(&G.stage, "setup");
    init_shards();

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_sigusr1;
    sa.sa_flags = SA_RESTART;                   /* the kernel resumes the futex wait after it */
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = on_sigusr2;
    sa.sa_flags = 0;                            /* no SA_RESTART: the futex wait says EINTR */
    sigaction(SIGUSR2, &sa, NULL);

    /* Workers own shards round-robin; clients spread over the shards, on slots 63, 36, 9, ...
     * (bit 63 of the masks included). */
    for (int w = 0; w < cfg.workers; w++) {
        struct worker *wk = &G.workers[w];
        wk->index = w;
        wk->ctx = calloc(1, sizeof(*wk->ctx));
        if (!wk->ctx)
            fail("out of memory");
        for (int k = w; k < cfg.shards; k += cfg.workers)
            wk->shard_ids[wk->nshards++] = k;
    }
    for (int k = 0; k < cfg.clients; k++) {
        struct client *c = &G.clients[k];
        int nth = k / cfg.shards;
        c->id = k;
        c->shard = k % cfg.shards;
        c->slot = (int)((63u + 37u * (unsigned)nth) % LSCA_SLOTS);
        c->h = shard_ptr(c->shard);
        c->s = lsca_shard_slot(shard_ptr(c->shard), (unsigned)c->slot);
        c->b = &G.book[c->shard][c->slot];
        c->b->client = k;
        c->rng = mix64(cfg.seed * 0x1000193u + (uint64_t)k + 1);
    }

    if (pthread_create(&watchdog, NULL, watchdog_main, NULL) != 0)
        fail("pthread_create (watchdog)");
    for (int w = 0; w < cfg.workers; w++)
        start_worker(&G.workers[w]);
    for (int k = 0; k < cfg.clients; k++)
        if (pthread_create(&G.clients[k].thread, NULL, client_main, &G.clients[k]) != 0)
            fail("pthread_create (client)");
    if (pthread_create(&signaller, NULL, signaller_main, NULL) != 0)
        fail("pthread_create (signaller)");
    if (pthread_create(&arbiter, NULL, arbiter_main, NULL) != 0)
        fail("pthread_create (arbiter)");

    /* The main phase. */
    ST(&G.stage, "main phase");
    for (;;) {
        uint64_t now = lsca_now_ns();
        if ((double)(now - G.t0) >= cfg.seconds * 1e9)
            break;
        if (cfg.iterations && LD(&G.total_calls) >= cfg.iterations)
            break;
        sleep_ns(5000000);
    }

    /* The end: no more arbiter; every worker dies (maybe holding calls); calls pile up and
     * their clients go to sleep; then lsca_shard_fail_all, as the supervisor does. */
    ST(&G.stage, "final phase: workers die, fail_all");
    ST(&G.final_phase, 1);
    pthread_join(arbiter, NULL);
    for (int w = 0; w < cfg.workers; w++)
        kill_worker(&G.workers[w]);
    /* Nobody answers now: every client ends up with a call in flight (SUBMITTED, or RUNNING if
     * a worker died holding it), spinning or asleep. Then fail_all must answer each one. */
    ST(&G.stage, "final phase: calls pile up");
    uint64_t until = lsca_now_ns() + (uint64_t)(cfg.stuck_seconds * 1e9 / 2);
    while (!all_clients_in_flight()) {
        if (lsca_now_ns() > until)
            fail("with the workers gone, not every client got a call in flight");
        sleep_ns(1000000);
    }
    sleep_ns((long)(mix64(cfg.seed) % 3000000));    /* some still spin, most sleep */
    ST(&G.stage, "final phase: fail_all");
    for (int k = 0; k < cfg.shards; k++)
        failed_total += (uint64_t)lsca_shard_fail_all(shard_ptr(k));
    G.failall_answered = failed_total;
    if (failed_total != (uint64_t)cfg.clients)
        fail("lsca_shard_fail_all answered %" PRIu64 " calls, %d were in flight", failed_total, cfg.clients);
    ST(&G.stop_clients, 1);
    ST(&G.stage, "final phase: clients end");
    while (!all_clients_exited())
        sleep_ns(2000000);
    ST(&G.stop_signaller, 1);
    pthread_join(signaller, NULL);
    for (int k = 0; k < cfg.clients; k++)
        pthread_join(G.clients[k].thread, NULL);
    ST(&G.stage, "final phase: dead-shard calls");
    dead_shard_calls();
    ST(&G.stop_watchdog, 1);
    pthread_join(watchdog, NULL);

    final_checks(failed_total);

    uint64_t calls = 0, ok = 0, eintr = 0, eio_a = 0, eio_f = 0, dead = 0, cancels = 0, ret1 = 0, blocks = 0;
    uint64_t handler = 0, by_how[HOW_COUNT] = { 0 };
    for (int k = 0; k < cfg.clients; k++) {
        struct client *c = &G.clients[k];
        calls += c->submitted;
        ok += c->ok;
        eintr += c->eintr;
        eio_a += c->eio_arbiter;
        eio_f += c->eio_failall;
        dead += c->dead_returns;
        cancels += c->cancels;
        ret1 += c->wait_returned_1;
        blocks += c->block_calls;
        handler += c->handler_runs;
        for (int h = 0; h < HOW_COUNT; h++)
            by_how[h] += c->by_how[h];
    }
    uint64_t sleeps = sc.futex_wait + sc.bell_sleeps;
    if (cfg.verbose) {
        printf("slot_stress: detail: calls=%" PRIu64 " ok=%" PRIu64 " eintr=%" PRIu64 " eio_arbiter=%" PRIu64
               " eio_failall=%" PRIu64 " dead_returns=%" PRIu64 " dead_shard_returns=%" PRIu64 " block_calls=%" PRIu64
               " cancels=%" PRIu64 " handler_cancels=%" PRIu64 " wait_returned_1=%" PRIu64 " signals=%" PRIu64
               " how_plain=%" PRIu64 " how_cancel_now=%" PRIu64 " how_cancel_later=%" PRIu64 " how_sigusr1=%" PRIu64
               " how_sigusr2=%" PRIu64 " futex_waits=%" PRIu64 " futex_woken=%" PRIu64 " futex_eagain=%" PRIu64
               " futex_eintr=%" PRIu64 " futex_wakes=%" PRIu64 " futex_woke_threads=%" PRIu64
               " doorbell_rings=%" PRIu64 " doorbell_sleeps=%" PRIu64 " doorbell_woken=%" PRIu64
               " doorbell_timeouts=%" PRIu64 " served=%" PRIu64 " worker_eintr=%" PRIu64 " parked=%" PRIu64
               " cancel_hints=%" PRIu64 " stale_cancel_hints=%" PRIu64 " idle_returns=%" PRIu64 " deaths=%" PRIu64
               " died_holding=%" PRIu64 " retries=%" PRIu64 " arbiter_eio=%" PRIu64 " republished=%" PRIu64
               " failall=%" PRIu64 " counted_syscalls=%d\n",
               calls, ok, eintr, eio_a, eio_f, dead, G.dead_shard_returns, blocks, cancels, handler, ret1,
               LD(&G.signals_sent), by_how[HOW_PLAIN], by_how[HOW_CANCEL_NOW], by_how[HOW_CANCEL_LATER],
               by_how[HOW_SIGUSR1], by_how[HOW_SIGUSR2], sc.futex_wait, sc.futex_woken, sc.futex_eagain,
               sc.futex_eintr, sc.futex_wake, sc.futex_woke_threads, sc.bell_rings, sc.bell_sleeps, sc.bell_woken,
               sc.bell_timeouts, G.served, G.eintr_answers, G.parked_total, G.cancel_hints, G.stale_cancel_hints,
               G.idle_returns, G.deaths, G.died_holding, G.retries, G.arbiter_eio, G.republished,
               G.failall_answered, HAVE_RAW_SYSCALL);
    }
    printf("slot_stress: %" PRIu64 " calls, %" PRIu64 " sleeps, %" PRIu64 " cancels, ok\n", calls, sleeps, cancels);
    fflush(stdout);
    for (int w = 0; w < cfg.workers; w++)
        free(G.workers[w].ctx);
    return 0;
}

/* ---- the guard process: it owns the SysV objects and removes them whatever happens ---- */

static volatile sig_atomic_t g_child;

static void guard_signal(int sig)
{
    if (g_child > 0)
        kill(g_child, SIGKILL);
    remove_ipc();
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    size_t size;
    int shmid, status;

    parse_args(argc, argv);
    size = (size_t)cfg.shards * LSCA_SHARD_SIZE;
    shmid = shmget(IPC_PRIVATE, size, IPC_CREAT | 0600);
    if (shmid < 0) {
        perror("slot_stress: shmget");
        return 1;
    }
    G.shm = shmat(shmid, NULL, 0);
    shmctl(shmid, IPC_RMID, NULL);              /* gone with the last detach, whatever happens */
    if (G.shm == (void *)-1) {
        perror("slot_stress: shmat");
        return 1;
    }
    g_semid = semget(IPC_PRIVATE, cfg.workers, IPC_CREAT | 0600);
    if (g_semid < 0) {
        perror("slot_stress: semget");
        return 1;
    }
    if (cfg.no_fork) {
        atexit(remove_ipc);
        return run();
    }

    signal(SIGINT, guard_signal);
    signal(SIGTERM, guard_signal);
    signal(SIGHUP, guard_signal);
    pid_t pid = fork();
    if (pid < 0) {
        perror("slot_stress: fork");
        remove_ipc();
        return 1;
    }
    if (pid == 0) {
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        exit(run());                            /* exit: a sanitizer's report and exit code */
    }
    g_child = pid;
    /* A last resort beyond the test's own watchdog. */
    uint64_t limit = lsca_now_ns() + (uint64_t)((cfg.seconds + 4 * cfg.stuck_seconds + 60) * 1e9);
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            status = 1 << 8;
            break;
        }
        if (lsca_now_ns() > limit) {
            fprintf(stderr, "slot_stress: FAIL: the test process hangs past every deadline: killed\n");
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            status = 1 << 8;
            break;
        }
        sleep_ns(20000000);
    }
    remove_ipc();
    shmdt(G.shm);
    if (WIFSIGNALED(status)) {
        fprintf(stderr, "slot_stress: FAIL: the test process died of signal %d\n", WTERMSIG(status));
        return 1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

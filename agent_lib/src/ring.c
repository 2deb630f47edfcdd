/*
 * ring.c - the slot hand-off protocol (see lsca_ring.h). Compiled into the agent
 * and into the workers' cffi module, so both sides run the very same code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lsca_ring.h"

uint64_t lsca_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int sem_change(int semid, int semnum, int delta, const struct timespec *timeout)
{
    struct sembuf op = { .sem_num = (unsigned short)semnum, .sem_op = (short)delta, .sem_flg = 0 };
    return timeout ? semtimedop(semid, &op, 1, timeout) : semop(semid, &op, 1);
}

/* ---- client side ---- */

void lsca_ring_submit(void *shard, unsigned i)
{
    struct lsca_shard_header *h = shard;
    struct lsca_slot *slot = lsca_shard_slot(shard, i);

    /* The request (op, args, data) is visible before the state says SUBMITTED. */
    smp_store_sc(&slot->state, LSCA_SLOT_SUBMITTED);
    /* The hint bit after the state: a worker that sees the bit sees the state. */
    __atomic_fetch_or(&h->pending_mask, (uint64_t)1 << i, __ATOMIC_SEQ_CST);
    /* Pairs with the worker's store of worker_sleeping before its last scan. */
    if (smp_load_sc(&h->worker_sleeping) && smp_xchg_sc(&h->worker_sleeping, 0))
        sem_change(h->doorbell_semid, h->doorbell_semnum, +1, NULL);
}

/* Liveness check while sleeping: a dead supervisor must not hang the program.
 * A killed supervisor its parent has not reaped yet is a zombie: gone as well. */
static int supervisor_gone(int pid)
{
    char path[64], stat[256];
    int fd, saved = errno;
    ssize_t n;
    const char *state;

    if (pid <= 0)
        return 0;
    if (kill(pid, 0) == -1 && errno == ESRCH) {
        errno = saved;
        return 1;
    }
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    fd = (int)LSCA_SYSCALL(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = saved;
        return 0;
    }
    n = LSCA_SYSCALL(SYS_read, fd, stat, sizeof(stat) - 1);
    LSCA_SYSCALL(SYS_close, fd);
    errno = saved;
    if (n <= 0)
        return 0;
    stat[n] = '\0';
    state = strrchr(stat, ')');           /* "pid (comm) S ...": comm may hold spaces */
    return state && state[1] == ' ' && (state[2] == 'Z' || state[2] == 'X');
}

int lsca_ring_wait(void *shard, unsigned i, int semid, uint64_t spin_ns, int supervisor_pid)
{
    struct lsca_slot *slot = lsca_shard_slot(shard, i);
    uint64_t deadline = 0;
    const struct timespec tick = { .tv_sec = 1, .tv_nsec = 0 };
    unsigned n;

    for (n = 0;; n++) {
        /* The answer (result, err, data) is read only after DONE is seen. */
        if (smp_load_acquire(&slot->state) == LSCA_SLOT_DONE)
            return 0;
        if ((n & 63) == 0) {
            uint64_t now = lsca_now_ns();
            if (deadline == 0)
                deadline = now + spin_ns;
            else if (now >= deadline)
                break;
        }
        lsca_cpu_relax();
    }

    /* Announce the sleep before the last look at the state (pairs with lsca_worker_complete). */
    smp_store_sc(&slot->client_sleeping, 1);
    for (;;) {
        if (smp_load_sc(&slot->state) == LSCA_SLOT_DONE) {
            if (smp_xchg_sc(&slot->client_sleeping, 0) == 1)
                return 0;               /* the worker has not seen our flag: no post comes */
            /* The worker took the flag and posts: consume that post to keep counts exact. */
            while (sem_change(semid, (int)i, -1, &tick) == -1) {
                if (errno != EINTR && errno != EAGAIN)
                    return -1;
                if (errno == EAGAIN && supervisor_gone(supervisor_pid))
                    return 0;           /* the answer is there already */
            }
            return 0;
        }
        if (sem_change(semid, (int)i, -1, &tick) == 0)
            return 0;                   /* the worker posts only after DONE */
        if (errno == EINTR)
            continue;                   /* the signal handler ran; the call is still in flight */
        if (errno == EAGAIN) {
            if (supervisor_gone(supervisor_pid)) {
                errno = EIO;
                return -1;
            }
            continue;
        }
        return -1;                      /* EIDRM/EINVAL: the supervisor removed the set */
    }
}

/* ---- worker side ---- */

/* Take the pending hints of every owned shard; claim one submitted slot. */
static int claim_one(struct lsca_worker_ctx *ctx, int *shard_index, int *slot_index)
{
    unsigned k;

    for (k = 0; k < LSCA_WORKER_MAX_SHARDS; k++) {
        unsigned idx = (ctx->cursor + k) % LSCA_WORKER_MAX_SHARDS;
        void *shard = ctx->shards[idx];
        struct lsca_shard_header *h = shard;

        if (!shard)
            continue;
        if (smp_load_acquire(&h->pending_mask))
            ctx->pending[idx] |= __atomic_exchange_n(&h->pending_mask, 0, __ATOMIC_ACQ_REL);
        while (ctx->pending[idx]) {
            unsigned i = (unsigned)__builtin_ctzll(ctx->pending[idx]);
            uint32_t expected = LSCA_SLOT_SUBMITTED;

            ctx->pending[idx] &= ctx->pending[idx] - 1;
            if (i >= LSCA_SLOTS)
                continue;
            /* Only one claimant wins the slot; the request is read after this acquire. */
            if (__atomic_compare_exchange_n(&lsca_shard_slot(shard, i)->state, &expected,
                                            LSCA_SLOT_RUNNING, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE)) {
                *shard_index = (int)idx;
                *slot_index = (int)i;
                ctx->cursor = idx + 1;  /* next scan starts after this shard: fairness */
                return 1;
            }
        }
    }
    return 0;
}

static int any_pending(struct lsca_worker_ctx *ctx)
{
    unsigned idx;

    for (idx = 0; idx < LSCA_WORKER_MAX_SHARDS; idx++) {
        struct lsca_shard_header *h = ctx->shards[idx];
        if (h && (ctx->pending[idx] || smp_load_sc(&h->pending_mask)))
            return 1;
    }
    return 0;
}

static void set_sleeping(struct lsca_worker_ctx *ctx, uint32_t value)
{
    unsigned idx;

    for (idx = 0; idx < LSCA_WORKER_MAX_SHARDS; idx++) {
        struct lsca_shard_header *h = ctx->shards[idx];
        if (h)
            smp_store_sc(&h->worker_sleeping, value);
    }
}

int lsca_worker_next(struct lsca_worker_ctx *ctx, int *shard_index, int *slot_index,
                     uint64_t spin_ns, int timeout_ms)
{
    uint64_t deadline = lsca_now_ns() + spin_ns;
    unsigned n;

    for (n = 1;; n++) {
        if (claim_one(ctx, shard_index, slot_index))
            return 1;
        if ((n & 15) == 0 && lsca_now_ns() >= deadline)
            break;
        lsca_cpu_relax();
    }
    if (timeout_ms <= 0)
        return 0;

    /* Announce the sleep, then look once more (pairs with lsca_ring_submit). */
    set_sleeping(ctx, 1);
    if (!any_pending(ctx)) {
        struct timespec timeout = { .tv_sec = timeout_ms / 1000,
                                    .tv_nsec = (long)(timeout_ms % 1000) * 1000000L };
        sem_change(ctx->doorbell_semid, ctx->doorbell_semnum, -1, &timeout);
    }
    set_sleeping(ctx, 0);
    return claim_one(ctx, shard_index, slot_index);
}

void lsca_worker_complete(void *shard, unsigned i, int semid)
{
    struct lsca_slot *slot = lsca_shard_slot(shard, i);

    /* The answer is visible before DONE; DONE is ordered before the sleeping-flag check. */
    smp_store_sc(&slot->state, LSCA_SLOT_DONE);
    if (smp_xchg_sc(&slot->client_sleeping, 0) == 1)
        sem_change(semid, (int)i, +1, NULL);
}

/*
 * slots.c - the slot hand-off protocol (see lsca_slots.h). Compiled into the agent
 * and into the workers' cffi module, so both sides run the very same code.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lsca_slots.h"

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

/* Shared (not PRIVATE) futex: the word lives in a SysV segment mapped by two processes. */
static long futex(uint32_t *word, int op, uint32_t value)
{
    return LSCA_SYSCALL(SYS_futex, word, op, value, NULL, NULL, 0);
}

static uint32_t sleep_flag(uint64_t seq)
{
    return (uint32_t)seq | 0x80000000u;
}

/* ---- client side ---- */

static int ring_doorbell_rang(struct lsca_shard_header *h);

static void ring_doorbell(struct lsca_shard_header *h)
{
    ring_doorbell_rang(h);
}

/* Whether this thread's last submit rang the doorbell (the worker was asleep). */
static __thread int rang;

static int ring_doorbell_rang(struct lsca_shard_header *h)
{
    /* Pairs with the worker's store of worker_sleeping before its last scan. */
    if (smp_load_sc(&h->worker_sleeping) && smp_xchg_sc(&h->worker_sleeping, 0)) {
        sem_change(h->doorbell_semid, h->doorbell_semnum, +1, NULL);
        return 1;
    }
    return 0;
}

void lsca_slot_submit(void *shard, unsigned i)
{
    struct lsca_shard_header *h = shard;
    struct lsca_slot *slot = lsca_shard_slot(shard, i);

    slot->cancel = 0;
    /* The request (op, args, data) is visible before the state says SUBMITTED. */
    smp_store_sc(&slot->state, LSCA_SLOT_SUBMITTED);
    /* The hint bit after the state: a worker that sees the bit sees the state. */
    __atomic_fetch_or(&h->pending_mask, (uint64_t)1 << i, __ATOMIC_SEQ_CST);
    rang = ring_doorbell_rang(h);
}

void lsca_slot_cancel(void *shard, unsigned i)
{
    struct lsca_shard_header *h = shard;

    smp_store_sc(&lsca_shard_slot(shard, i)->cancel, 1);
    __atomic_fetch_or(&h->cancel_mask, (uint64_t)1 << i, __ATOMIC_SEQ_CST);
    /* The signal may have come between the state store and the hint bit of the submit:
     * publish the hint too, or the worker never learns of the call we now wait for. */
    __atomic_fetch_or(&h->pending_mask, (uint64_t)1 << i, __ATOMIC_SEQ_CST);
    ring_doorbell(h);
}

/* Spin only while it pays: the worker is running our call, or is about to take it (it spins,
 * or it was just woken for it). A call still unclaimed after LSCA_CLAIM_NS while the worker
 * was awake waits behind other work; a gap in our own clock means we lost the CPU, and the
 * worker's crowded hint says the machine has no CPU to spare: sleep at once in those cases. */
int lsca_slot_wait(void *shard, unsigned i, uint64_t spin_ns, int interruptible)
{
    struct lsca_shard_header *h = shard;
    struct lsca_slot *slot = lsca_shard_slot(shard, i);
    uint64_t start = 0, last = 0;
    int woken = rang;
    unsigned n;

    if (__atomic_load_n(&h->crowded, __ATOMIC_RELAXED))
        spin_ns = spin_ns < LSCA_CLAIM_NS ? spin_ns : LSCA_CLAIM_NS;
    for (n = 0;; n++) {
        /* The answer (result, err, data) is read only after DONE is seen. */
        uint32_t state = smp_load_acquire(&slot->state);
        if (state == LSCA_SLOT_DONE)
            return 0;
        if ((n & 15) == 0) {
            uint64_t now = lsca_now_ns();
            if (start == 0)
                start = last = now;
            else if (now - start >= spin_ns || now - last >= LSCA_PREEMPTED_NS ||
                     (state == LSCA_SLOT_SUBMITTED && !woken && now - start >= LSCA_CLAIM_NS))
                break;
            last = now;
        }
        lsca_cpu_relax();
    }

    /* Announce the sleep before looking at the state again (pairs with lsca_worker_complete)
     * and at dead (pairs with lsca_shard_fail_all). The flag names this call (its seq): a
     * worker late in completing the previous call on this slot cannot take it away. */
    uint32_t flag = sleep_flag(slot->seq);
    smp_store_sc(&slot->client_sleeping, flag);
    for (;;) {
        uint32_t state = smp_load_sc(&slot->state);
        if (state == LSCA_SLOT_DONE)
            break;
        if (smp_load_sc(&h->dead)) {
            smp_store_sc(&slot->client_sleeping, 0);
            return -1;
        }
        /* No timeout on purpose: only then does the kernel restart the wait after a
         * handler with SA_RESTART and report EINTR after one without, like the native call. */
        if (futex(&slot->state, FUTEX_WAIT, state) == -1 && errno == EINTR && interruptible) {
            smp_store_sc(&slot->client_sleeping, 0);
            return 1;
        }
    }
    smp_store_sc(&slot->client_sleeping, 0);
    return 0;
}

/* ---- worker side ---- */

/* Take the pending hints of every owned shard; claim one submitted slot. */
/* LSCA_FOUND_CALL for a claimed slot, LSCA_FOUND_CANCEL for a cancel request, else
 * LSCA_FOUND_NOTHING. */
static int claim_one(struct lsca_worker_ctx *ctx, int *shard_index, int *slot_index)
{
    unsigned k;

    unsigned limit = ctx->limit < LSCA_WORKER_MAX_SHARDS ? ctx->limit : LSCA_WORKER_MAX_SHARDS;

    for (k = 0; k < limit; k++) {
        unsigned idx = (ctx->cursor + k) % limit;
        void *shard = ctx->shards[idx];
        struct lsca_shard_header *h = shard;

        if (!shard)
            continue;
        if (smp_load_acquire(&h->cancel_mask))
            ctx->cancels[idx] |= __atomic_exchange_n(&h->cancel_mask, 0, __ATOMIC_ACQ_REL);
        if (ctx->cancels[idx]) {
            unsigned i = (unsigned)__builtin_ctzll(ctx->cancels[idx]);
            ctx->cancels[idx] &= ctx->cancels[idx] - 1;
            if (i < LSCA_SLOTS) {
                *shard_index = (int)idx;
                *slot_index = (int)i;
                return LSCA_FOUND_CANCEL;
            }
        }
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
                return LSCA_FOUND_CALL;
            }
        }
    }
    return LSCA_FOUND_NOTHING;
}

static int any_pending(struct lsca_worker_ctx *ctx)
{
    unsigned idx;

    for (idx = 0; idx < ctx->limit && idx < LSCA_WORKER_MAX_SHARDS; idx++) {
        struct lsca_shard_header *h = ctx->shards[idx];
        if (h && (ctx->pending[idx] || ctx->cancels[idx] || smp_load_sc(&h->pending_mask) ||
                  smp_load_sc(&h->cancel_mask)))
            return 1;
    }
    return 0;
}

static void set_sleeping(struct lsca_worker_ctx *ctx, uint32_t value)
{
    unsigned idx;

    for (idx = 0; idx < ctx->limit && idx < LSCA_WORKER_MAX_SHARDS; idx++) {
        struct lsca_shard_header *h = ctx->shards[idx];
        if (h)
            smp_store_sc(&h->worker_sleeping, value);
    }
}

int lsca_worker_next(struct lsca_worker_ctx *ctx, int *shard_index, int *slot_index,
                     uint64_t spin_ns, int timeout_ms)
{
    uint64_t last = lsca_now_ns(), deadline = last + spin_ns;
    unsigned n;

    for (n = 1;; n++) {
        int got = claim_one(ctx, shard_index, slot_index);
        if (got)
            return got;
        if ((n & 15) == 0) {
            uint64_t now = lsca_now_ns();
            /* Past the budget, or we lost the CPU meanwhile (others need it): sleep. */
            if (now >= deadline || now - last >= LSCA_PREEMPTED_NS)
                break;
            last = now;
        }
        lsca_cpu_relax();
    }
    if (timeout_ms <= 0)
        return LSCA_FOUND_NOTHING;

    /* Announce the sleep, then look once more (pairs with lsca_slot_submit). */
    set_sleeping(ctx, 1);
    if (!any_pending(ctx)) {
        struct timespec timeout = { .tv_sec = timeout_ms / 1000,
                                    .tv_nsec = (long)(timeout_ms % 1000) * 1000000L };
        sem_change(ctx->doorbell_semid, ctx->doorbell_semnum, -1, &timeout);
    }
    set_sleeping(ctx, 0);
    return claim_one(ctx, shard_index, slot_index);
}

void lsca_worker_complete(void *shard, unsigned i)
{
    struct lsca_slot *slot = lsca_shard_slot(shard, i);
    /* Read before DONE: until then the client cannot start its next call on this slot. */
    uint32_t flag = sleep_flag(slot->seq);

    /* The answer is visible before DONE; DONE is ordered before the sleeping-flag check. */
    smp_store_sc(&slot->state, LSCA_SLOT_DONE);
    if (__atomic_compare_exchange_n(&slot->client_sleeping, &flag, 0, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
        futex(&slot->state, FUTEX_WAKE, INT_MAX);
}

int lsca_shard_republish(void *shard)
{
    struct lsca_shard_header *h = shard;
    unsigned i;
    int n = 0;

    for (i = 0; i < LSCA_SLOTS; i++) {
        if (smp_load_sc(&lsca_shard_slot(shard, i)->state) == LSCA_SLOT_SUBMITTED) {
            __atomic_fetch_or(&h->pending_mask, (uint64_t)1 << i, __ATOMIC_SEQ_CST);
            n++;
        }
    }
    return n;
}

int lsca_shard_fail_all(void *shard)
{
    struct lsca_shard_header *h = shard;
    unsigned i;
    int failed = 0;

    /* dead first: a client that submits after our scan sees it before it sleeps. */
    smp_store_sc(&h->dead, 1);
    for (i = 0; i < LSCA_SLOTS; i++) {
        struct lsca_slot *slot = lsca_shard_slot(shard, i);
        uint32_t state = smp_load_sc(&slot->state);
        if (state != LSCA_SLOT_SUBMITTED && state != LSCA_SLOT_RUNNING)
            continue;
        slot->status = LSCA_STATUS_DONE;
        slot->result = -1;
        slot->err = EIO;                /* the outcome is unknown: never guess */
        lsca_worker_complete(shard, i);
        failed++;
    }
    return failed;
}

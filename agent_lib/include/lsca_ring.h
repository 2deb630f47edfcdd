/*
 * lsca_ring.h - the slot hand-off protocol, shared by the agent (client side) and
 * the workers' cffi module (worker side). Memory ordering lives in the few named
 * primitives below; every use says what it orders.
 */
#ifndef LSCA_RING_H
#define LSCA_RING_H

#include <stdint.h>
#include "lsca_abi.h"

#define smp_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define smp_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
/* The sleep/wake handshakes are Dekker-style (store one flag, load the other): seq_cst. */
#define smp_load_sc(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define smp_store_sc(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define smp_xchg_sc(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)

/* Raw system calls that never enter the agent's own interposers (the agent exports
 * syscall() itself); the worker side has no interposers and uses libc's syscall(). */
#ifdef LSCA_AGENT
long lsca_sys(long nr, ...);
#define LSCA_SYSCALL lsca_sys
#else
#define LSCA_SYSCALL syscall
#endif

static inline void lsca_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause" ::: "memory");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#else
    __asm__ __volatile__("" ::: "memory");
#endif
}

/* LSCA_CDEF_BEGIN */
uint64_t lsca_now_ns(void);

/* ---- client side (agent) ---- */

/* Publish a filled slot and ring the worker if it announced that it sleeps. */
void lsca_ring_submit(void *shard, unsigned slot_index);

/* Wait until the worker finished the slot: spin for spin_ns, then sleep on the slot's
 * state word (a futex, no timeout). Returns 0 when DONE; 1 when a signal handler
 * installed without SA_RESTART interrupted the sleep (one with SA_RESTART makes the
 * kernel resume the wait, as it would resume the native call); -1 when the shard is
 * dead (its supervisor is gone and nobody will answer). interruptible = 0 ignores
 * signals (after a cancel request, the answer is coming). */
int lsca_ring_wait(void *shard, unsigned slot_index, uint64_t spin_ns, int interruptible);

/* Ask the worker to interrupt the slot's call (it answers EINTR, or what was done). */
void lsca_ring_cancel(void *shard, unsigned slot_index);

/* ---- worker side (cffi module) ---- */

#define LSCA_WORKER_MAX_SHARDS 1024

struct lsca_worker_ctx {
    int doorbell_semid;
    int doorbell_semnum;
    unsigned cursor;                              /* round-robin start among shards */
    unsigned limit;                               /* entries at or above it are all unused */
    void *shards[LSCA_WORKER_MAX_SHARDS];         /* NULL: unused entry */
    uint64_t pending[LSCA_WORKER_MAX_SHARDS];     /* hints taken from shard masks, not yet served */
    uint64_t cancels[LSCA_WORKER_MAX_SHARDS];     /* cancel hints taken, not yet handed out */
};

/* Claim the next submitted slot of any owned shard (state SUBMITTED -> RUNNING).
 * Spins for spin_ns, then sleeps on the doorbell for at most timeout_ms.
 * Returns 1 with the shard and slot indices set, 2 for a cancel request of that slot,
 * 0 when nothing was found. */
int lsca_worker_next(struct lsca_worker_ctx *ctx, int *shard_index, int *slot_index,
                     uint64_t spin_ns, int timeout_ms);

/* Publish the slot's result (RUNNING -> DONE) and wake its client thread if it sleeps. */
void lsca_worker_complete(void *shard, unsigned slot_index);

/* After the worker that owned the shard died: the hints of submitted calls it had taken
 * died with it. Publish them again (atomically); returns how many. */
int lsca_shard_republish(void *shard);

/* Nobody will answer this shard any more: mark it dead, then fail every call that is
 * submitted or running with EIO and wake its thread. Returns the calls failed. */
int lsca_shard_fail_all(void *shard);
/* LSCA_CDEF_END */

#endif /* LSCA_RING_H */

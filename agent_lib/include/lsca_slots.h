/*
 * lsca_slots.h - the slot hand-off protocol, shared by the agent (client side) and
 * the workers' cffi module (worker side). Memory ordering lives in the few named
 * primitives below; every use says what it orders.
 */
#ifndef LSCA_SLOTS_H
#define LSCA_SLOTS_H

#include <stdint.h>
#include "lsca_abi.h"

#define smp_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define smp_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
/* The sleep/wake handshakes are Dekker-style (store one flag, load the other): seq_cst. */
#define smp_load_sc(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define smp_store_sc(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define smp_xchg_sc(p, v) __atomic_exchange_n((p), (v), __ATOMIC_SEQ_CST)

/*
 * Memory ordering, field by field.
 *
 * Parties: the client (an agent thread, in the slot whose owner_tid it set), the worker that
 * owns the shard (claim_one .. lsca_worker_complete), the supervisor (lsca_shard_fail_all,
 * lsca_shard_republish, the retry of a dead worker's call: only for calls no live worker
 * holds). "Publishes" = a release (or seq_cst) store or RMW sequenced after the plain writes;
 * "sees" = an acquire (or seq_cst) load or RMW that reads that value, or a later one of its
 * release sequence (an RMW continues it: the claim CAS does).
 *
 * The hand-off (slot->state is the truth; every other field is ordered by it or is a hint):
 *
 *   state        FREE -> SUBMITTED (client, smp_store_sc in lsca_slot_submit) publishes the
 *                request. seq_cst, not only release: it is the client's half of the `dead`
 *                pair below. DONE -> SUBMITTED (agent.c's restart of an interrupted call) alike.
 *                SUBMITTED -> RUNNING (worker, CAS acq_rel / acquire in claim_one): one claimant
 *                wins; its acquire half sees the request even when the claim comes through a
 *                stale hint bit (see pending_mask), so it must stay at least acquire.
 *                RUNNING -> DONE (worker, or supervisor for a dead worker's call; smp_store_sc in
 *                lsca_worker_complete) publishes the answer; seq_cst for the client_sleeping pair.
 *                DONE -> FREE (agent.c lsca_end, release) publishes what the agent writes after
 *                the answer (new_fds), for lsca_slot_taken's acquire load.
 *                RUNNING -> SUBMITTED (arbiter.py's retry, a plain store) is published by
 *                lsca_shard_republish's seq_cst fetch_or that follows it.
 *                Loads: the client's spin smp_load_acquire and sleep-path smp_load_sc (the answer
 *                is read only after one of them saw DONE); fail_all and republish smp_load_sc.
 *   op, xfer, args, data, data_len, remote_addr, seq (the request): plain, written by the client
 *                while the slot is FREE (or DONE, before a restart), read by the worker after its
 *                claim. Two releases order them - the SUBMITTED store and the pending_mask
 *                fetch_or after it - and one acquire suffices: the claim CAS (always), or the
 *                exchange that took this call's bit. fail_all reads seq after an smp_load_sc saw
 *                SUBMITTED or RUNNING (the claim CAS continues the client's release sequence);
 *                arbiter.py reads seq/op/args after waitpid() of the worker that claimed the call.
 *                XFER_REMOTE bytes (process_vm_readv/writev) are ordered the same way: the kernel
 *                copies them on the worker's side after its claim and before its DONE store.
 *   status, result, err, data, data_len, new_fds (the answer): plain, written by the holder of
 *                RUNNING (or by fail_all / the arbiter once no live thread holds the call: that is
 *                their contract), published by the DONE store, read by the client after it saw
 *                DONE. One benign exception: a client whose wait returned -1 (dead) gets EIO
 *                written by agent.c into these fields while fail_all may write the same EIO.
 *   seq          also read by lsca_worker_complete, before its DONE store: after DONE the client
 *                may start its next call and write a new seq.
 *   new_fds      also written by the agent after a descriptor-creating call (the numbers it
 *                installed): after DONE, before lsca_end's release of FREE; the worker reads
 *                them only after lsca_slot_taken's acquire load saw the slot leave that DONE.
 *   cancel       plain 0 in lsca_slot_submit before the SUBMITTED release (a claimant sees 0 or
 *                this call's 1, never an older call's 1); smp_store_sc 1 in lsca_slot_cancel
 *                before the cancel_mask fetch_or (a worker that took the hint sees it). The
 *                worker reads it only for a call it holds: when it claims it (the hint may have
 *                been taken before the claim) and on a cancel hint (a hint may be stale: left by
 *                a cancel of an earlier call on the slot). The flag, not the hint, is the truth.
 *   owner_tid    agent-only slot hand-out (CAS 0 -> tid acq_rel, release store 0 at thread
 *                exit); written before the thread's first submit, so a claimant sees it.
 *
 * Sleep and wake-up: Dekker pairs. Each side stores its flag, then loads the other side's, all
 * four accesses seq_cst, so they lie in one total order S: whichever store comes first in S
 * precedes the other side's load, which therefore sees it (or a later value). At least one
 * side sees the other; never both miss.
 *
 *   client_sleeping  client: smp_store_sc(flag), then smp_load_sc(state) (lsca_slot_wait);
 *                worker: smp_store_sc(state, DONE), then CAS(flag -> 0) seq_cst. Either the
 *                client sees DONE and does not sleep, or the CAS sees the flag and the worker
 *                FUTEX_WAKEs. A client that read an older state sleeps only while the futex word
 *                still holds it (the kernel compares it after a full barrier, under the lock that
 *                FUTEX_WAKE takes), so the wake-up cannot pass it by. The flag names the call
 *                (its seq): a worker still between DONE and its CAS for the previous call cannot
 *                clear the next call's announcement, which would lose that call's wake-up.
 *                Cleared with smp_store_sc(0) when the wait ends (it only makes a CAS fail).
 *   worker_sleeping  worker: smp_store_sc(1) on every owned shard, then smp_load_sc of both
 *                masks (any_pending); client: the seq_cst fetch_or of pending_mask (or
 *                cancel_mask), then smp_load_sc(worker_sleeping) (ring_doorbell). Either the
 *                worker sees the bit and does not sleep, or the client sees 1, takes it with
 *                smp_xchg_sc(0) (one ring per announcement) and posts the semaphore; the post
 *                and the woken semtimedop order the bit before the worker's next claim_one. A
 *                token for a worker that did not sleep only ends its next sleep at once. The
 *                supervisor's plain worker_sleeping = 1 at (re)assignment only adds rings.
 *   dead         fail_all: smp_store_sc(1), then smp_load_sc(state) of each slot; client: the
 *                SUBMITTED store, ..., then smp_load_sc(dead) before it sleeps. Either fail_all's
 *                scan sees the call (and answers EIO, waking the client) or the client sees dead
 *                (and returns -1). agent.c lsca_begin's acquire load only decides to run natively.
 *
 * Hints (the truth is elsewhere; a stale hint costs a failed CAS, never a wrong answer):
 *
 *   pending_mask seq_cst fetch_or after the SUBMITTED store (submit), after a cancel
 *                (lsca_slot_cancel: a signal may come between the submit's state store and its
 *                bit), after an smp_load_sc saw SUBMITTED (republish); taken by an acquire peek
 *                and an acq_rel exchange into ctx->pending. Its release half is what makes "a
 *                worker that sees the bit sees the state": a relaxed fetch_or could become
 *                visible before the state store on aarch64, the CAS would fail and the bit be
 *                dropped - a lost call. A bit is cleared only by that exchange and consumed only
 *                by a CAS attempt, so no live worker loses a call; the bits a dead worker held
 *                come back through lsca_shard_republish.
 *   cancel_mask  seq_cst fetch_or after the cancel store, taken like pending_mask; the truth is
 *                slot->cancel of a call the worker holds.
 *
 * The rest: magic, abi_version, shard_size, nslots and client_pid are written by the supervisor
 * before the client learns of the shard (the welcome message orders them). doorbell_semid /
 * doorbell_semnum / worker_id change at (re)assignment with plain stores and ring_doorbell reads
 * them after its xchg: a client ringing on the new worker's own announcement sees the new ones
 * (the worker learned of the shard after those stores, and its smp_store_sc is a release); one
 * ringing on the supervisor's plain worker_sleeping = 1 may, on aarch64, ring the old semaphore
 * - harmless: the new worker sleeps only after its own announcement, its own Dekker pair.
 * next_seq is a relaxed counter (unique call names only); crowded (worker) and execs (agent) are
 * relaxed hints; passthrough/declined (agent) and
 * proxied/failed/worker_ns/trace_dropped (worker) are relaxed statistics counters.
 *
 * Machine code. x86-64 (TSO): loads are plain MOV (TSO makes them acquire), release stores plain
 * MOV, seq_cst stores XCHG and the RMWs LOCK-prefixed: full barriers, which is what the Dekker
 * pairs need there (TSO lets a later load pass an earlier plain store). aarch64 (GCC, Armv8.0
 * baseline, outline atomics): smp_store_sc and smp_store_release are STLR, smp_load_sc and
 * smp_load_acquire LDAR; the seq_cst and acq_rel RMWs (fetch_or, exchange, CAS) call
 * __aarch64_*_acq_rel helpers: LSE LDSETAL/SWPAL/CASAL, or an LDAXR/STLXR loop. So every seq_cst
 * access is also a release (stores) or an acquire (loads), and the Dekker pairs hold with no DMB
 * because Armv8 release and acquire are RCsc: a load-acquire (LDAR, LDAXR, the load of an ...AL
 * atomic, also of a CAS that fails) is not satisfied before an earlier store-release (STLR,
 * STLXR, the store of an ...AL atomic) of the same thread is observed by all. Plain acquire loads
 * are used only where a later load, not an earlier store, must be ordered (the spin on state,
 * the peeks at the masks), so a build that makes them LDAPR (RCpc, +rcpc) stays correct; the
 * seq_cst loads must stay LDAR, as GCC emits them.
 *
 * Checked by tests/protocol/slot_model.cpp (Relacy, these orders; each of its weakenings must
 * fail) and tests/protocol/slot_stress.c (this code under load; also under ThreadSanitizer).
 */

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

/* Waiting: a call the (awake) worker has not claimed after LSCA_CLAIM_NS waits behind other
 * work, so its client sleeps; a jump of LSCA_PREEMPTED_NS in a spinner's clock means it lost
 * its CPU to another task, so it sleeps too. */
#define LSCA_CLAIM_NS 4000
#define LSCA_PREEMPTED_NS 30000

/* LSCA_CDEF_BEGIN */
uint64_t lsca_now_ns(void);

/* ---- client side (agent) ---- */

/* Publish a filled slot and ring the worker if it announced that it sleeps. */
void lsca_slot_submit(void *shard, unsigned slot_index);

/* Wait until the worker finished the slot: spin for at most spin_ns while that pays (see
 * slots.c), then sleep on the slot's state word (a futex, no timeout). Returns 0 when DONE; 1 when a signal handler
 * installed without SA_RESTART interrupted the sleep (one with SA_RESTART makes the
 * kernel resume the wait, as it would resume the native call); -1 when the shard is
 * dead (its supervisor is gone and nobody will answer). interruptible = 0 ignores
 * signals (after a cancel request, the answer is coming). */
int lsca_slot_wait(void *shard, unsigned slot_index, uint64_t spin_ns, int interruptible);

/* Ask the worker to interrupt the slot's call (it answers EINTR, or what was done). */
void lsca_slot_cancel(void *shard, unsigned slot_index);

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

/* What a worker's wait for calls found (lsca_worker_next, lsca_worker_run). */
enum lsca_worker_found {
    LSCA_FOUND_NOTHING = 0,     /* idle: nothing submitted                                   */
    LSCA_FOUND_CALL = 1,        /* a claimed call (shard and slot indices set)              */
    LSCA_FOUND_CANCEL = 2,      /* a cancel request of that slot's blocked call              */
    LSCA_FOUND_TURN_OVER = 3    /* lsca_worker_run only: its turn ended, Python's comes      */
};

/* Claim the next submitted slot of any owned shard (state SUBMITTED -> RUNNING).
 * Spins for spin_ns, then sleeps on the doorbell for at most timeout_ms.
 * Returns LSCA_FOUND_CALL with the shard and slot indices set, LSCA_FOUND_CANCEL for a
 * cancel request of that slot, LSCA_FOUND_NOTHING when nothing was found. */
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

#endif /* LSCA_SLOTS_H */

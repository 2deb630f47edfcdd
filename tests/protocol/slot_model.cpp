/*
 * slot_model.cpp - a relaxed-memory model check (Relacy) of the slot hand-off protocol of
 * agent_lib/src/slots.c, with the memory orders slots.c uses.
 *
 * Build and run (Debian package relacy-dev; header-only, in /usr/include/relacy):
 *     g++ -O1 -std=gnu++11 -I/usr/include tests/protocol/slot_model.cpp -o slot_model && ./slot_model
 *     g++ -O1 -std=gnu++11 -DWEAKEN=1 tests/protocol/slot_model.cpp -o slot_weak && ./slot_weak   # must FAIL
 * Options: --weaken N (overrides -DWEAKEN), --iterations N, --scenario handoff|failall|republish|all,
 *          --list (what each weakening is).
 * Exit status 0 when every scenario passes, 1 when Relacy reports a failure (data race, deadlock,
 * livelock, failed assertion), 2 for bad usage.
 *
 * What is modelled. Every function below is a line-by-line transcription of its namesake in
 * slots.c; each atomic access names its slots.c site and takes its order from the table `O`,
 * filled by set_orders() with exactly the orders slots.c uses (smp_store_sc / smp_load_sc =
 * seq_cst, smp_load_acquire = acquire, the exchanges of claim_one acq_rel, the claim CAS
 * acq_rel/acquire, ...). Shared plain fields (op/args/data, seq, status/result/err) are rl::var,
 * so Relacy reports a data race when the hand-off does not order them. The futex is Relacy's
 * own model of Linux's (rl::rl_futex: a seq_cst fence, then the value check and the queueing
 * without preemption, spurious wake-ups allowed), and the worker's SysV doorbell is a Relacy
 * semaphore (sem_post / sem_wait). A wait nobody ends shows up as DEADLOCK (or LIVELOCK).
 * The worker's doorbell wait is untimed here, where slots.c uses a timeout (timeout_ms): in the
 * real code a lost doorbell costs latency, here it is a deadlock, so it cannot hide.
 *
 * Scenarios (each a Relacy test suite, explored by the random scheduler):
 *   handoff   - client A: two calls on slot 0, spinning or sleeping at random (the second call
 *               checks that a worker late in completing the first cannot take its wake-up: the
 *               sleep flag carries the seq); client B on slot 1: one call the worker holds until
 *               it is cancelled (a blocking call), cancelled directly, from a "signal handler"
 *               inside the wait (the agent's way: cancel, then a nested non-interruptible wait),
 *               or after an interruptible wait returned 1; one worker that spins or sleeps on
 *               the doorbell at random. The client asserts it reads its own answer, the worker
 *               that it reads the client's request; exactly one answer per call.
 *   failall   - a client, a worker that answers or dies (possibly holding the call: RUNNING),
 *               and the supervisor calling lsca_shard_fail_all after the worker is gone; the
 *               client gets its answer, EIO, or -1 (dead) - never a hang, never a torn read.
 *   republish - a worker dies after taking the pending hint (and maybe claiming the call); the
 *               supervisor puts a claimed call back (arbiter.py's retry) and calls
 *               lsca_shard_republish; a new worker must find the call.
 *
 * Weakenings (-DWEAKEN=N or --weaken N) each break one thing; the check must then fail:
 *   1  lsca_worker_complete: the DONE store relaxed            -> data race on the answer
 *   2  lsca_slot_wait: the spin load of state relaxed          -> data race on the answer
 *   3  lsca_slot_submit: the SUBMITTED store relaxed           -> data race on the request
 *   4  claim_one: the claim CAS relaxed                         -> data race on the request
 *   5  lsca_worker_complete: DONE store release, wake CAS acq_rel (the Dekker pair with the
 *      client's sleep announcement is no longer seq_cst)       -> lost wake-up (deadlock)
 *   6  set_sleeping release / any_pending acquire (the worker-sleep Dekker pair)
 *                                                               -> lost doorbell (deadlock)
 *   7  lsca_shard_fail_all: the dead store release             -> client sleeps for ever
 *   8  the sleep flag without the call's seq (a constant)      -> lost wake-up across two calls
 *   9  lsca_shard_republish skipped (not an order: shows the scenario needs it) -> lost call
 *  10  lsca_slot_submit: the SUBMITTED store release, not seq_cst (it is the client's half of
 *      the dead pair with lsca_shard_fail_all)               -> client sleeps for ever
 * Relacy's limits. An RMW always reads the latest value of the interleaving, so a relaxed
 * fetch_or of the pending hint (which on aarch64 could become visible before the SUBMITTED
 * store) is not caught here; lsca_slots.h argues that one. Relacy's seq_cst fence (the one in
 * its futex model, standing for the kernel's smp_mb before it compares the futex word) orders
 * only against other fences, not against seq_cst stores as C++11 29.3p5-6 and the hardware do:
 * the model gives the kernel's barrier no credit, so the user-space Dekker pairs of slots.c must
 * (and do) hold on their own - stricter than the real thing, never looser.
 *
 * Build note: include relacy/relacy.hpp, not relacy_std.hpp (its using-declarations clash with
 * libstdc++ 12's std::atomic); any -std from gnu++03 up works.
 */
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <relacy/relacy.hpp>   /* not relacy_std.hpp: its std:: injection clashes with libstdc++ 12 */

#ifndef WEAKEN
#define WEAKEN 0
#endif

using rl::memory_order;
using rl::mo_relaxed;
using rl::mo_acquire;
using rl::mo_release;
using rl::mo_acq_rel;
using rl::mo_seq_cst;

enum { FREE = 0, SUBMITTED = 1, RUNNING = 2, DONE = 3 };          /* enum lsca_slot_state */
enum { STATUS_DONE = 0 };
enum { OP_COMPUTE = 1, OP_BLOCK = 2 };                             /* BLOCK: answered on cancel */
enum { E_INTR = 4, E_IO = 5 };
enum { NSLOTS = 2 };

/* The orders of slots.c, one per site. */
struct orders {
    memory_order submit_state;      /* lsca_slot_submit: smp_store_sc(&slot->state, SUBMITTED)      */
    memory_order submit_pending;    /* lsca_slot_submit: fetch_or(&h->pending_mask, SEQ_CST)        */
    memory_order bell_load;         /* ring_doorbell: smp_load_sc(&h->worker_sleeping)              */
    memory_order bell_xchg;         /* ring_doorbell: smp_xchg_sc(&h->worker_sleeping, 0)           */
    memory_order cancel_store;      /* lsca_slot_cancel: smp_store_sc(&slot->cancel, 1)             */
    memory_order cancel_or;         /* lsca_slot_cancel: fetch_or cancel_mask and pending_mask      */
    memory_order wait_spin;         /* lsca_slot_wait: smp_load_acquire(&slot->state)               */
    memory_order sleep_announce;    /* lsca_slot_wait: smp_store_sc(&slot->client_sleeping, flag)   */
    memory_order sleep_recheck;     /* lsca_slot_wait: smp_load_sc(&slot->state)                    */
    memory_order dead_load;         /* lsca_slot_wait: smp_load_sc(&h->dead)                        */
    memory_order sleep_clear;       /* lsca_slot_wait: smp_store_sc(&slot->client_sleeping, 0)      */
    memory_order hint_load;         /* claim_one: smp_load_acquire(&h->cancel_mask / pending_mask)  */
    memory_order hint_xchg;         /* claim_one: __atomic_exchange_n(..., 0, ACQ_REL)             */
    memory_order claim_cas;         /* claim_one: CAS state SUBMITTED->RUNNING, ACQ_REL ...        */
    memory_order claim_cas_fail;    /*            ... failure ACQUIRE                               */
    memory_order any_pending;       /* any_pending: smp_load_sc of both masks                       */
    memory_order set_sleeping;      /* set_sleeping: smp_store_sc(&h->worker_sleeping, v)           */
    memory_order done_store;        /* lsca_worker_complete: smp_store_sc(&slot->state, DONE)       */
    memory_order wake_cas;          /* lsca_worker_complete: CAS client_sleeping flag->0, SEQ_CST   */
    memory_order dead_store;        /* lsca_shard_fail_all: smp_store_sc(&h->dead, 1)               */
    memory_order scan_load;         /* fail_all / republish: smp_load_sc(&slot->state)              */
    memory_order republish_or;      /* lsca_shard_republish: fetch_or(pending_mask, SEQ_CST)        */
    memory_order end_store;         /* agent.c lsca_end: __atomic_store_n(state, FREE, RELEASE)     */
    memory_order begin_dead;        /* agent.c lsca_begin: __atomic_load_n(&h->dead, ACQUIRE)       */
    bool flag_without_seq;          /* weakening 8                                                  */
    bool skip_republish;            /* weakening 9                                                  */
};

static orders O;
static int weaken = WEAKEN;

static const char *const weakenings[] = {
    "none: the orders of slots.c",
    "lsca_worker_complete: DONE store relaxed (expect DATA RACE on the answer)",
    "lsca_slot_wait: spin load of state relaxed (expect DATA RACE on the answer)",
    "lsca_slot_submit: SUBMITTED store relaxed (expect DATA RACE on the request)",
    "claim_one: claim CAS relaxed (expect DATA RACE on the request)",
    "lsca_worker_complete: DONE store release + wake CAS acq_rel (expect DEADLOCK: lost wake-up)",
    "set_sleeping release / any_pending acquire (expect DEADLOCK: lost doorbell)",
    "lsca_shard_fail_all: dead store release (expect DEADLOCK: client sleeps for ever)",
    "sleep flag without the call's seq (expect DEADLOCK: a late completion takes the next call's wake-up)",
    "lsca_shard_republish skipped (expect DEADLOCK: the dead worker's hint is lost)",
    "lsca_slot_submit: SUBMITTED store release, not seq_cst (expect DEADLOCK: fail_all's scan misses the call)",
};
enum { NWEAKEN = sizeof(weakenings) / sizeof(weakenings[0]) };

static void set_orders(int w)
{
    O.submit_state = mo_seq_cst;
    O.submit_pending = mo_seq_cst;
    O.bell_load = mo_seq_cst;
    O.bell_xchg = mo_seq_cst;
    O.cancel_store = mo_seq_cst;
    O.cancel_or = mo_seq_cst;
    O.wait_spin = mo_acquire;
    O.sleep_announce = mo_seq_cst;
    O.sleep_recheck = mo_seq_cst;
    O.dead_load = mo_seq_cst;
    O.sleep_clear = mo_seq_cst;
    O.hint_load = mo_acquire;
    O.hint_xchg = mo_acq_rel;
    O.claim_cas = mo_acq_rel;
    O.claim_cas_fail = mo_acquire;
    O.any_pending = mo_seq_cst;
    O.set_sleeping = mo_seq_cst;
    O.done_store = mo_seq_cst;
    O.wake_cas = mo_seq_cst;
    O.dead_store = mo_seq_cst;
    O.scan_load = mo_seq_cst;
    O.republish_or = mo_seq_cst;
    O.end_store = mo_release;
    O.begin_dead = mo_acquire;
    O.flag_without_seq = false;
    O.skip_republish = false;
    switch (w) {
    case 1: O.done_store = mo_relaxed; break;
    case 2: O.wait_spin = mo_relaxed; break;
    case 3: O.submit_state = mo_relaxed; break;
    case 4: O.claim_cas = mo_relaxed; O.claim_cas_fail = mo_relaxed; break;
    case 5: O.done_store = mo_release; O.wake_cas = mo_acq_rel; break;
    case 6: O.set_sleeping = mo_release; O.any_pending = mo_acquire; break;
    case 7: O.dead_store = mo_release; break;
    case 8: O.flag_without_seq = true; break;
    case 9: O.skip_republish = true; break;
    case 10: O.submit_state = mo_release; break;
    default: break;
    }
}

/* Coverage: how often each path was taken over all iterations (plain counters outside the
 * model; they change nothing it does). Printed per scenario, so that a run shows the check
 * went through the sleeps, wake-ups, cancels and failures and did not just spin past them. */
enum cov_e {
    COV_FUTEX_SLEEP, COV_FUTEX_EAGAIN, COV_FUTEX_EINTR, COV_WAKE, COV_DOORBELL_SLEEP, COV_DOORBELL_POST,
    COV_WAIT_EINTR, COV_HANDLER, COV_CANCEL_AT_CLAIM, COV_CANCEL_HINT, COV_STALE_HINT, COV_DEAD_RETURN,
    COV_FAILALL_ANSWER, COV_RETRY, COV_REPUBLISH, COV_N
};
static const char *const cov_names[COV_N] = {
    "futex_sleep", "futex_eagain", "futex_eintr", "futex_wake", "doorbell_sleep", "doorbell_post",
    "wait_eintr", "agent_handler", "cancel_at_claim", "cancel_hint_answer", "stale_hint", "dead_return",
    "failall_answer", "retry", "republish",
};
static unsigned long cov[COV_N];

static void cov_print(const char *name)
{
    std::printf("slot_model: coverage %s:", name);
    for (int k = 0; k < COV_N; k++)
        if (cov[k])
            std::printf(" %s=%lu", cov_names[k], cov[k]);
    std::printf("\n");
    std::memset(cov, 0, sizeof(cov));
}

/* ---- the shard: header fields both sides touch, and NSLOTS slots ---- */

struct shard {
    rl::atomic<unsigned> dead;
    rl::atomic<unsigned> worker_sleeping;
    rl::atomic<unsigned long long> pending_mask;
    rl::atomic<unsigned long long> cancel_mask;
    rl::atomic<unsigned long long> next_seq;
    rl::rl_sem_t doorbell;                      /* the owning worker's SysV semaphore */

    rl::atomic<int> state[NSLOTS];              /* the futex word */
    rl::atomic<unsigned> client_sleeping[NSLOTS];
    /* Plain in slots.c (reset by submit, set by cancel with smp_store_sc, read by the worker
     * as a plain load): relaxed here, the weakest an aligned word access can be. */
    rl::atomic<unsigned> cancel[NSLOTS];
    rl::var<unsigned long long> seq[NSLOTS];    /* plain: written by the client before SUBMITTED */
    rl::var<int> op[NSLOTS];                    /* the request: op, args (data) */
    rl::var<int> arg[NSLOTS];
    rl::var<int> status[NSLOTS];                /* the answer: status, result, err (data) */
    rl::var<long> result[NSLOTS];
    rl::var<int> err[NSLOTS];

    void init()
    {
        dead($).store(0, mo_relaxed);
        worker_sleeping($).store(1, mo_relaxed);     /* arbiter.py: the first submit rings */
        pending_mask($).store(0, mo_relaxed);
        cancel_mask($).store(0, mo_relaxed);
        next_seq($).store(1, mo_relaxed);
        rl::rl_sem_init(&doorbell, 1, 0, $);
        for (int i = 0; i < NSLOTS; i++) {
            state[i]($).store(FREE, mo_relaxed);
            client_sleeping[i]($).store(0, mo_relaxed);
            cancel[i]($).store(0, mo_relaxed);
            seq[i]($) = 0;
            op[i]($) = 0;
            arg[i]($) = 0;
            status[i]($) = 0;
            result[i]($) = 0;
            err[i]($) = 0;
        }
    }

    void fini() { rl::rl_sem_destroy(&doorbell, $); }
};

static unsigned sleep_flag(unsigned long long seq)
{
    if (O.flag_without_seq)
        return 0x80000000u;
    return (unsigned)seq | 0x80000000u;
}

static long expected_result(int arg, unsigned long long seq) { return (long)arg * 1000 + (long)seq; }

/* ---- client side: slots.c ---- */

static void ring_doorbell(shard &h)
{
    if (h.worker_sleeping($).load(O.bell_load) && h.worker_sleeping($).exchange(0, O.bell_xchg)) {
        cov[COV_DOORBELL_POST]++;
        rl::rl_sem_post(&h.doorbell, $);
    }
}

static void lsca_slot_submit(shard &h, unsigned i)
{
    h.cancel[i]($).store(0, mo_relaxed);                           /* slot->cancel = 0 */
    h.state[i]($).store(SUBMITTED, O.submit_state);
    h.pending_mask($).fetch_or(1ull << i, O.submit_pending);
    ring_doorbell(h);
}

static void lsca_slot_cancel(shard &h, unsigned i)
{
    h.cancel[i]($).store(1, O.cancel_store);
    h.cancel_mask($).fetch_or(1ull << i, O.cancel_or);
    h.pending_mask($).fetch_or(1ull << i, O.cancel_or);
    ring_doorbell(h);
}

/* The "signal" a wait may take at its signal points (spin turns, before each futex wait). */
struct signal_plan {
    int kind;           /* 0 none; 1 agent handler (cancel + nested wait, SA_RESTART); 2 EINTR only */
    int delivered;
    int *interrupted;   /* the client's flag, set by the agent handler */
    bool must_by_sleep; /* deliver before the first futex wait at the latest (else nobody would answer) */
};

static int lsca_slot_wait(shard &h, unsigned i, unsigned spins, int interruptible, signal_plan *sig);

static bool signal_point(signal_plan *sig, bool before_sleep)
{
    /* Kind 2 matters only in the futex wait (a signal while spinning makes no EINTR). */
    if (!sig || !sig->kind || sig->delivered || (sig->kind == 2 && !before_sleep))
        return false;
    if (rl::rand(2) == 0 || (before_sleep && sig->must_by_sleep)) {
        sig->delivered = 1;
        return true;
    }
    return false;
}

/* agent.c lsca_signal_arrived: the call was submitted, so cancel it and take its answer first. */
static void agent_handler(shard &h, unsigned i, signal_plan *sig)
{
    if (!*sig->interrupted) {
        cov[COV_HANDLER]++;
        lsca_slot_cancel(h, i);
        lsca_slot_wait(h, i, rl::rand(2), 0, 0);
        *sig->interrupted = 1;
    }
}

static int lsca_slot_wait(shard &h, unsigned i, unsigned spins, int interruptible, signal_plan *sig)
{
    for (unsigned n = 0;; n++) {
        if (h.state[i]($).load(O.wait_spin) == DONE)
            return 0;
        if (n >= spins)
            break;
        if (signal_point(sig, false))
            agent_handler(h, i, sig);
    }
    unsigned flag = sleep_flag(h.seq[i]($));
    h.client_sleeping[i]($).store(flag, O.sleep_announce);
    for (;;) {
        int state = h.state[i]($).load(O.sleep_recheck);
        if (state == DONE)
            break;
        if (h.dead($).load(O.dead_load)) {
            cov[COV_DEAD_RETURN]++;
            h.client_sleeping[i]($).store(0, O.sleep_clear);
            return -1;
        }
        /* A signal during the futex wait: the agent's handler runs (the kernel then restarts the
         * wait: SA_RESTART), or a plain handler without SA_RESTART makes it return EINTR. */
        int r;
        if (signal_point(sig, true)) {
            if (sig->kind == 1) {
                agent_handler(h, i, sig);
                continue;
            }
            r = rl::RL_EINTR;
        } else {
            r = futex(&h.state[i], FUTEX_WAIT, state, 0, 0, 0);
            cov[r == 0 ? COV_FUTEX_SLEEP : r == rl::RL_EINTR ? COV_FUTEX_EINTR : COV_FUTEX_EAGAIN]++;
        }
        if (r == rl::RL_EINTR && interruptible) {
            cov[COV_WAIT_EINTR]++;
            h.client_sleeping[i]($).store(0, O.sleep_clear);
            return 1;
        }
    }
    h.client_sleeping[i]($).store(0, O.sleep_clear);
    return 0;
}

/* ---- worker side: slots.c ---- */

struct worker_ctx {
    unsigned long long pending;
    unsigned long long cancels;
    worker_ctx() : pending(0), cancels(0) {}
};

static unsigned ctz(unsigned long long v) { return (unsigned)__builtin_ctzll(v); }

static int claim_one(shard &h, worker_ctx &ctx, unsigned *slot_index)
{
    if (h.cancel_mask($).load(O.hint_load))
        ctx.cancels |= h.cancel_mask($).exchange(0, O.hint_xchg);
    if (ctx.cancels) {
        unsigned i = ctz(ctx.cancels);
        ctx.cancels &= ctx.cancels - 1;
        *slot_index = i;
        return 2;
    }
    if (h.pending_mask($).load(O.hint_load))
        ctx.pending |= h.pending_mask($).exchange(0, O.hint_xchg);
    while (ctx.pending) {
        unsigned i = ctz(ctx.pending);
        int expected = SUBMITTED;
        ctx.pending &= ctx.pending - 1;
        if (h.state[i]($).compare_exchange_strong(expected, RUNNING, O.claim_cas, O.claim_cas_fail)) {
            *slot_index = i;
            return 1;
        }
        cov[COV_STALE_HINT]++;
    }
    return 0;
}

static int any_pending(shard &h, worker_ctx &ctx)
{
    return ctx.pending || ctx.cancels || h.pending_mask($).load(O.any_pending) ||
           h.cancel_mask($).load(O.any_pending);
}

/* spins: claim attempts before the sleep; sleep = false: return 0 instead of sleeping. */
static int lsca_worker_next(shard &h, worker_ctx &ctx, unsigned *slot_index, unsigned spins, bool sleep)
{
    for (unsigned n = 0; n <= spins; n++) {
        int got = claim_one(h, ctx, slot_index);
        if (got)
            return got;
    }
    if (!sleep)
        return 0;
    h.worker_sleeping($).store(1, O.set_sleeping);
    if (!any_pending(h, ctx)) {
        cov[COV_DOORBELL_SLEEP]++;
        rl::rl_sem_wait(&h.doorbell, $);
    }       /* untimed here: see the head comment */
    h.worker_sleeping($).store(0, O.set_sleeping);
    return claim_one(h, ctx, slot_index);
}

static void lsca_worker_complete(shard &h, unsigned i)
{
    unsigned flag = sleep_flag(h.seq[i]($));
    h.state[i]($).store(DONE, O.done_store);
    if (h.client_sleeping[i]($).compare_exchange_strong(flag, 0, O.wake_cas, O.wake_cas)) {
        cov[COV_WAKE]++;
        futex(&h.state[i], FUTEX_WAKE, INT_MAX, 0, 0, 0);
    }
}

static int lsca_shard_republish(shard &h)
{
    int n = 0;
    for (unsigned i = 0; i < NSLOTS; i++) {
        if (h.state[i]($).load(O.scan_load) == SUBMITTED) {
            h.pending_mask($).fetch_or(1ull << i, O.republish_or);
            cov[COV_REPUBLISH]++;
            n++;
        }
    }
    return n;
}

static int lsca_shard_fail_all(shard &h)
{
    int failed = 0;
    h.dead($).store(1, O.dead_store);
    for (unsigned i = 0; i < NSLOTS; i++) {
        int state = h.state[i]($).load(O.scan_load);
        if (state != SUBMITTED && state != RUNNING)
            continue;
        h.status[i]($) = STATUS_DONE;
        h.result[i]($) = -1;
        h.err[i]($) = E_IO;
        lsca_worker_complete(h, i);
        cov[COV_FAILALL_ANSWER]++;
        failed++;
    }
    return failed;
}

/* ---- the parts of agent.c and of a worker the scenarios share ---- */

static int client_arg(unsigned i, unsigned long long seq) { return (int)(seq % 7) + 10 * (int)i + 1; }

/* start_call + the seq line of lsca_exchange: the request, then submit. (The agent writes op and
 * args before the seq; here the arg is made from the seq, so that the worker can check it.) */
static unsigned long long client_submit(shard &h, unsigned i, int op, int *arg)
{
    unsigned long long seq = h.next_seq($).fetch_add(1, mo_relaxed);
    *arg = client_arg(i, seq);
    h.op[i]($) = op;
    h.arg[i]($) = *arg;
    h.seq[i]($) = seq;
    lsca_slot_submit(h, i);
    return seq;
}

/* The worker's answer (the ghost counters are plain: Relacy runs the threads one at a time). */
static void worker_answer(shard &h, unsigned i, long result, int err, int *answers)
{
    h.status[i]($) = STATUS_DONE;
    h.result[i]($) = result;
    h.err[i]($) = err;
    answers[i]++;
    lsca_worker_complete(h, i);
}

/* Read the request (the worker's side of the hand-off) and check it is whole. */
static void worker_read_request(shard &h, unsigned i, int *op, int *arg, unsigned long long *seq)
{
    *op = h.op[i]($);
    *arg = h.arg[i]($);
    *seq = h.seq[i]($);
    RL_ASSERT(*op == OP_COMPUTE || *op == OP_BLOCK);
    RL_ASSERT(*arg == client_arg(i, *seq));
}

/* ======================================================================================
 * Scenario handoff: client A (slot 0, two calls), client B (slot 1, one blocking call that
 * only a cancel ends), one worker.
 * ====================================================================================== */

struct handoff : rl::test_suite<handoff, 3> {
    shard h;
    int answers[NSLOTS];            /* ghost: answers published per slot */
    int submitted[NSLOTS];          /* ghost: calls submitted per slot */
    unsigned long long cancelled_seq[NSLOTS]; /* ghost: the call a client asked to cancel */

    void before()
    {
        set_orders(weaken);
        h.init();
        for (int i = 0; i < NSLOTS; i++)
            answers[i] = submitted[i] = 0, cancelled_seq[i] = 0;
    }

    void after()
    {
        RL_ASSERT(answers[0] == 2 && answers[1] == 1);
        h.fini();
    }

    void client_a()
    {
        for (int call = 0; call < 2; call++) {
            int arg, interrupted = 0;
            /* Either call may be cancelled: right after the submit (a signal before the wait),
             * or by the agent's handler at some point of the wait (if the signal comes at all).
             * A cancel leaves a pending hint behind that may be stale by the time the worker
             * takes it - the next call on the slot is then claimed through its CAS alone. */
            int how = rl::rand(3);
            signal_plan sig = {1, 0, &interrupted, false};
            submitted[0]++;
            unsigned long long seq = client_submit(h, 0, OP_COMPUTE, &arg);
            if (how == 1)
                cancelled_seq[0] = seq;
            if (how == 2) {
                cancelled_seq[0] = seq;
                lsca_slot_cancel(h, 0);
            }
            int waited = lsca_slot_wait(h, 0, rl::rand(3), 0, how == 1 ? &sig : 0);
            RL_ASSERT(waited == 0);
            RL_ASSERT(answers[0] == submitted[0]);      /* exactly one answer so far */
            /* The answer, read after DONE: its own, whole. */
            RL_ASSERT(h.status[0]($) == STATUS_DONE);
            long result = h.result[0]($);
            int err = h.err[0]($);
            if (result == -1)                           /* EINTR only for a cancelled call */
                RL_ASSERT((how == 2 || (how == 1 && interrupted)) && err == E_INTR);
            else
                RL_ASSERT(result == expected_result(arg, seq) && err == 0);
            h.state[0]($).store(FREE, O.end_store);      /* lsca_end */
        }
    }

    void client_b()
    {
        int interrupted = 0, arg;
        int how = rl::rand(3);
        submitted[1]++;
        unsigned long long seq = client_submit(h, 1, OP_BLOCK, &arg);
        cancelled_seq[1] = seq;             /* every path below cancels it */
        if (how == 0) {
            /* Cancel first (the agent: a signal between submit and wait), then wait. */
            for (unsigned n = rl::rand(2); n; n--)
                (void)h.state[1]($).load(mo_acquire);
            lsca_slot_cancel(h, 1);
            RL_ASSERT(lsca_slot_wait(h, 1, rl::rand(2), 0, 0) == 0);
        } else if (how == 1) {
            /* The agent's handler runs inside the wait: cancel + nested wait, SA_RESTART. */
            signal_plan sig = {1, 0, &interrupted, true};
            RL_ASSERT(lsca_slot_wait(h, 1, rl::rand(2), 0, &sig) == 0);
            RL_ASSERT(interrupted);
        } else {
            /* A handler without SA_RESTART ends an interruptible wait (1): cancel, wait again. */
            signal_plan sig = {2, 0, &interrupted, true};
            int waited = lsca_slot_wait(h, 1, rl::rand(2), 1, &sig);
            RL_ASSERT(waited == 1);
            lsca_slot_cancel(h, 1);
            RL_ASSERT(lsca_slot_wait(h, 1, rl::rand(2), 0, 0) == 0);
        }
        RL_ASSERT(answers[1] == 1);
        RL_ASSERT(h.status[1]($) == STATUS_DONE);
        RL_ASSERT(h.result[1]($) == -1 && h.err[1]($) == E_INTR);
        h.state[1]($).store(FREE, O.end_store);
    }

    void worker()
    {
        worker_ctx ctx;
        bool parked = false;                /* slot 1's blocking call, held until cancelled */
        int total = 3;
        int answered = 0;
        while (answered < total) {
            unsigned i = 0;
            int got = lsca_worker_next(h, ctx, &i, rl::rand(2), true);
            if (got == 1) {
                int op, arg;
                unsigned long long seq;
                worker_read_request(h, i, &op, &arg, &seq);
                /* A call cancelled before it started is answered EINTR (worker.py, pool). */
                if (h.cancel[i]($).load(mo_relaxed)) {
                    RL_ASSERT(cancelled_seq[i] == seq);  /* the flag is this call's, not stale */
                    cov[COV_CANCEL_AT_CLAIM]++;
                    worker_answer(h, i, -1, E_INTR, answers);
                    answered++;
                } else if (op == OP_BLOCK) {
                    parked = true;
                } else {
                    worker_answer(h, i, expected_result(arg, seq), 0, answers);
                    answered++;
                }
            } else if (got == 2) {
                /* A cancel hint: only a call we hold whose cancel flag is set (a hint may be stale). */
                if (i == 1 && parked && h.cancel[i]($).load(mo_relaxed)) {
                    parked = false;
                    cov[COV_CANCEL_HINT]++;
                    worker_answer(h, i, -1, E_INTR, answers);
                    answered++;
                }
            }
        }
    }

    void thread(unsigned index)
    {
        if (index == 0)
            client_a();
        else if (index == 1)
            client_b();
        else
            worker();
    }
};

/* ======================================================================================
 * Scenario failall: client (slot 0, up to two calls), a worker that answers or dies, the
 * supervisor's lsca_shard_fail_all once the worker is gone (waitpid: the `gone` handshake).
 * ====================================================================================== */

struct failall : rl::test_suite<failall, 3> {
    shard h;
    rl::atomic<int> gone;           /* models waitpid: the supervisor acts after the worker's death */
    int answers[NSLOTS];
    int failed_by_supervisor;
    int client_answers, client_dead, client_eio;

    void before()
    {
        set_orders(weaken);
        h.init();
        gone($).store(0, mo_relaxed);
        answers[0] = answers[1] = 0;
        failed_by_supervisor = client_answers = client_dead = client_eio = 0;
    }

    void after()
    {
        /* fail_all answered at most the one call in flight; an EIO the client took came from it. */
        RL_ASSERT(failed_by_supervisor <= 1);
        RL_ASSERT(client_eio <= failed_by_supervisor);
        h.fini();
    }

    void client()
    {
        for (int call = 0; call < 2; call++) {
            if (h.dead($).load(O.begin_dead))
                return;                                 /* lsca_begin: runs natively now */
            int arg;
            unsigned long long seq = client_submit(h, 0, OP_COMPUTE, &arg);
            int waited = lsca_slot_wait(h, 0, rl::rand(2), 0, 0);
            if (waited < 0) {
                client_dead++;
                return;                                 /* the answer is not read: nobody gives one */
            }
            RL_ASSERT(waited == 0);
            client_answers++;
            long result = h.result[0]($);
            int err = h.err[0]($);
            if (result == -1) {
                RL_ASSERT(err == E_IO);
                client_eio++;
            } else
                RL_ASSERT(result == expected_result(arg, seq));
            h.state[0]($).store(FREE, O.end_store);
        }
    }

    void worker()
    {
        worker_ctx ctx;
        for (int turn = 0; turn < 2; turn++) {
            unsigned i = 0;
            if (lsca_worker_next(h, ctx, &i, rl::rand(2), false) != 1)
                continue;
            int op, arg;
            unsigned long long seq;
            worker_read_request(h, i, &op, &arg, &seq);
            if (rl::rand(2) == 0)
                break;                                  /* dies holding the call: RUNNING */
            worker_answer(h, i, expected_result(arg, seq), 0, answers);
        }
        gone($).store(1, mo_release);                   /* the process is gone */
    }

    void supervisor()
    {
        while (!gone($).load(mo_acquire))
            rl::yield(1, $);
        failed_by_supervisor = lsca_shard_fail_all(h);
    }

    void thread(unsigned index)
    {
        if (index == 0)
            client();
        else if (index == 1)
            worker();
        else
            supervisor();
    }
};

/* ======================================================================================
 * Scenario republish: the worker takes the hint (maybe claims) and dies; the supervisor
 * (the same thread: it runs after the death, as after waitpid) retries a claimed call
 * (arbiter.py sets SUBMITTED with a plain store), republishes, says the new owner may sleep,
 * and a new worker (again the same thread: it starts after) serves.
 * ====================================================================================== */

struct republish : rl::test_suite<republish, 3> {
    shard h;
    int answers[NSLOTS];

    void before()
    {
        set_orders(weaken);
        h.init();
        answers[0] = answers[1] = 0;
    }

    void after()
    {
        RL_ASSERT(answers[0] == 1 && answers[1] == 1);
        h.fini();
    }

    void client(unsigned i)
    {
        int arg;
        unsigned long long seq = client_submit(h, i, OP_COMPUTE, &arg);
        RL_ASSERT(lsca_slot_wait(h, i, rl::rand(2), 0, 0) == 0);
        RL_ASSERT(h.result[i]($) == expected_result(arg, seq));
        h.state[i]($).store(FREE, O.end_store);
    }

    void worker_dies_then_new_worker()
    {
        {
            /* The old worker: looks (taking hints into its ctx: a claim leaves the other hints
             * there), maybe claims, and dies with its ctx. */
            worker_ctx ctx;
            unsigned i = 0;
            (void)lsca_worker_next(h, ctx, &i, rl::rand(3), false);
        }
        /* The supervisor after waitpid (arbiter.py _resolve_in_flight, then _assign). */
        for (unsigned i = 0; i < NSLOTS; i++)
            if (h.state[i]($).load(mo_relaxed) == RUNNING)
            {
                h.state[i]($).store(SUBMITTED, mo_relaxed);   /* the retry: a plain store */
                cov[COV_RETRY]++;
            }
        if (!O.skip_republish)
            lsca_shard_republish(h);
        h.worker_sleeping($).store(1, mo_relaxed);             /* the next submit rings */
        /* The new worker. */
        worker_ctx ctx;
        for (int answered = 0; answered < 2;) {
            unsigned i = 0;
            if (lsca_worker_next(h, ctx, &i, rl::rand(2), true) != 1)
                continue;
            int op, arg;
            unsigned long long seq;
            worker_read_request(h, i, &op, &arg, &seq);
            worker_answer(h, i, expected_result(arg, seq), 0, answers);
            answered++;
        }
    }

    void thread(unsigned index)
    {
        if (index < 2)
            client(index);
        else
            worker_dies_then_new_worker();
    }
};

/* ---- driver ---- */

template <typename T>
static bool run(const char *name, unsigned long iterations, unsigned depth)
{
    rl::test_params p;
    p.iteration_count = iterations;
    p.execution_depth_limit = depth;
    p.search_type = rl::random_scheduler_type;
    std::printf("slot_model: scenario %s, weakening %d (%s), %lu iterations\n", name, weaken,
                weakenings[weaken], iterations);
    std::fflush(stdout);
    std::memset(cov, 0, sizeof(cov));
    bool ok = rl::simulate<T>(p);
    if (ok)
        cov_print(name);
    std::printf("slot_model: scenario %s: %s\n", name, ok ? "passed" : "FAILED");
    std::fflush(stdout);
    return ok;
}

int main(int argc, char **argv)
{
    unsigned long iterations = 200000;
    std::string scenario = "all";
    for (int k = 1; k < argc; k++) {
        std::string a = argv[k];
        if (a == "--weaken" && k + 1 < argc)
            weaken = std::atoi(argv[++k]);
        else if (a == "--iterations" && k + 1 < argc)
            iterations = std::strtoul(argv[++k], 0, 10);
        else if (a == "--scenario" && k + 1 < argc)
            scenario = argv[++k];
        else if (a == "--list") {
            for (int w = 0; w < NWEAKEN; w++)
                std::printf("%d  %s\n", w, weakenings[w]);
            return 0;
        } else {
            std::fprintf(stderr, "usage: %s [--weaken N] [--iterations N] "
                                 "[--scenario handoff|failall|republish|all] [--list]\n", argv[0]);
            return 2;
        }
    }
    if (weaken < 0 || weaken >= NWEAKEN) {
        std::fprintf(stderr, "slot_model: no weakening %d (--list)\n", weaken);
        return 2;
    }
    set_orders(weaken);
    bool ok = true;
    /* A weakened build stops at the first scenario that fails. */
    if (ok && (scenario == "all" || scenario == "handoff"))
        ok = run<handoff>("handoff", iterations, 20000);
    if (ok && (scenario == "all" || scenario == "failall"))
        ok = run<failall>("failall", iterations, 20000);
    if (ok && (scenario == "all" || scenario == "republish"))
        ok = run<republish>("republish", iterations, 20000);
    std::printf("slot_model: %s\n", ok ? "ok" : "FAILED");
    return ok ? 0 : 1;
}

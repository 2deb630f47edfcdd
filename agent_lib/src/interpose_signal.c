/*
 * interpose_signal.c - sigaction and signal(): the program's handlers run behind a
 * trampoline, so that a signal arriving while the thread waits in a proxied call first
 * interrupts that call in the worker and takes its answer, then runs the handler — the
 * order the kernel keeps for a native call. Whether the call then fails with EINTR or is
 * restarted follows the handler's SA_RESTART, as natively.
 *
 * A child that shares our memory (vfork, posix_spawn, clone(CLONE_VM)) shares the table of
 * the program's actions too, but not the kernel's dispositions: there sigaction acts on the
 * kernel only, and the parent's handlers stay as they were.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>

#include "agent.h"

DECLARE_REAL(sigaction);

/* The actions as the program set them (what sigaction reports back to it). */
static struct sigaction program_action[NSIG];
static volatile sig_atomic_t wrapped[NSIG];

static void trampoline(int sig, siginfo_t *info, void *context)
{
    int saved = errno;
    struct sigaction action = program_action[sig];

    if (!lsca_own_process()) {
        /* Inherited by a vfork child: the handler runs, the parent's table stays untouched. */
        errno = saved;
        if (action.sa_flags & SA_SIGINFO)
            action.sa_sigaction(sig, info, context);
        else if (action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN)
            action.sa_handler(sig);
        return;
    }
    if (action.sa_flags & SA_RESETHAND) {
        /* The kernel reset the disposition on delivery: so does the program's view. */
        program_action[sig].sa_handler = SIG_DFL;
        program_action[sig].sa_flags &= ~SA_SIGINFO;
        wrapped[sig] = 0;
    }
    lsca_signal_arrived(action.sa_flags & SA_RESTART);
    errno = saved;
    if (action.sa_flags & SA_SIGINFO)
        action.sa_sigaction(sig, info, context);
    else if (action.sa_handler != SIG_DFL && action.sa_handler != SIG_IGN)
        action.sa_handler(sig);
}

static int is_handler(const struct sigaction *act)
{
    return (act->sa_flags & SA_SIGINFO) ||
           (act->sa_handler != SIG_DFL && act->sa_handler != SIG_IGN);
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *oact)
{
    struct sigaction installed, previous;
    int r;

    if (sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP)
        return REAL(sigaction)(sig, act, oact);
    if (!lsca_own_process()) {
        /* A child sharing our memory: its own dispositions change, the shared table does not.
         * A handler it inherited behind the trampoline is reported as the program set it. */
        r = REAL(sigaction)(sig, act, &previous);
        if (r == 0 && oact)
            *oact = (previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction == trampoline && wrapped[sig]
                        ? program_action[sig] : previous;
        return r;
    }
    if (act && is_handler(act)) {
        installed = *act;
        installed.sa_sigaction = trampoline;
        installed.sa_flags |= SA_SIGINFO;
        r = REAL(sigaction)(sig, &installed, &previous);
    } else {
        r = REAL(sigaction)(sig, act, &previous);
    }
    if (r < 0)
        return r;
    if (oact)
        *oact = wrapped[sig] ? program_action[sig] : previous;
    if (act) {
        program_action[sig] = *act;
        wrapped[sig] = is_handler(act);
    }
    return 0;
}

int __sigaction(int sig, const struct sigaction *act, struct sigaction *oact) __attribute__((alias("sigaction")));

/* glibc's signal() calls its internal sigaction: it must be caught here as well. */
static sighandler_t set_handler(int sig, sighandler_t handler, int flags)
{
    struct sigaction act, old;

    memset(&act, 0, sizeof(act));
    act.sa_handler = handler;
    act.sa_flags = flags;
    sigemptyset(&act.sa_mask);
    if (!(flags & SA_NODEFER) && sig > 0 && sig < NSIG)
        sigaddset(&act.sa_mask, sig);
    if (sigaction(sig, &act, &old) < 0)
        return SIG_ERR;
    return old.sa_handler;
}

sighandler_t signal(int sig, sighandler_t handler)
{
    return set_handler(sig, handler, SA_RESTART);          /* BSD semantics, like glibc */
}

sighandler_t bsd_signal(int sig, sighandler_t handler) __attribute__((alias("signal")));

sighandler_t sysv_signal(int sig, sighandler_t handler)
{
    return set_handler(sig, handler, SA_RESETHAND | SA_NODEFER);
}

sighandler_t __sysv_signal(int sig, sighandler_t handler) __attribute__((alias("sysv_signal")));

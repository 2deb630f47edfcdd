/*
 * agent.h - what the interposers need from the agent core: a slot to fill, the
 * exchange with the worker, passthrough accounting and the real libc functions.
 */
#ifndef LSCA_AGENT_H
#define LSCA_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "lsca_abi.h"

/* One proxied call in progress on the calling thread. */
struct lsca_call {
    struct lsca_slot *slot;
    enum lsca_op op;
    int saved_errno;
};

/* Take this thread's slot for op. Returns 0 when the call must run natively
 * (agent inactive, re-entered from a signal handler, no free slot); the
 * passthrough is then already counted. */
int lsca_begin(struct lsca_call *c, enum lsca_op op);

/* Hand the filled slot to the worker and wait. Returns 1 when the worker
 * answered (slot->result/err hold the outcome), 0 when the call must run
 * natively (the worker declined it; counted). The slot stays owned until lsca_end. */
int lsca_exchange(struct lsca_call *c);

/* Release the slot; sets errno from the worker's answer when result == -1,
 * otherwise restores the caller's errno. Returns slot->result. */
long lsca_end(struct lsca_call *c);

/* Give up a begun call before the exchange (e.g. arguments the agent will not
 * marshal); the call then runs natively and is counted as passthrough. */
void lsca_abandon(struct lsca_call *c);

/* Count a call the agent decided to run natively without taking a slot. */
void lsca_count_passthrough(enum lsca_op op);

/* glibc's __fxstat/__xstat version number for this arch's native struct stat. */
#if defined(__x86_64__)
#define NATIVE_STAT_VER 1
#else
#define NATIVE_STAT_VER 0
#endif

/* Pointers that fault in every process: handed to the kernel natively so it says EFAULT. */
static inline int lsca_bad_pointer(const void *p, size_t len)
{
    return len > 0 && (uintptr_t)p < 4096;
}

/* Append a NUL-terminated path to the slot's data. Returns -1 when the call must run
 * natively instead (NULL or faulting pointer, longer than LSCA_PATH_MAX). */
int lsca_put_path(struct lsca_call *c, const char *path);

/* lsca_exchange for calls that create descriptors: on success (slot->result >= 0) the
 * nfds descriptors the worker sent are installed (lowest free numbers, close-on-exec
 * when asked) and written to fds[]; a full table gives result -1, EMFILE. */
int lsca_exchange_newfds(struct lsca_call *c, int *fds, int nfds, int cloexec);

/* The agent's own descriptor (hidden from the program: it sees EBADF there). */
int lsca_agent_fd(int fd);
void lsca_agent_fd_evict(int fd);

/* From the signal trampoline: a handler is about to run on this thread; interrupt the
 * proxied call it waits in (if any) and take its answer first. */
void lsca_signal_arrived(int sa_restart);

/* A raw system call that never enters the agent's interposers. */
long lsca_sys(long nr, ...);

/* The next definition of a symbol (libc's), resolved once. */
void *lsca_real(const char *name, void **cache);
#define REAL(name) ((__typeof__(&name))lsca_real(#name, &real_##name##_ptr))
#define DECLARE_REAL(name) static void *real_##name##_ptr

#endif /* LSCA_AGENT_H */

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
    void *shard;                 /* the shard this call uses, taken once (another thread may drop it) */
    struct lsca_slot *slot;
    enum lsca_op op;
    int saved_errno;
    int report;                  /* it waits natively and its outcome goes to the worker after */
    uint64_t args[LSCA_MAX_ARGS]; /* ... with these arguments (the slot may serve a handler meanwhile) */
};

/* Take this thread's slot for op. Returns 0 when the call must run natively
 * (agent inactive, re-entered from a signal handler, no free slot); the
 * passthrough is then already counted. */
int lsca_begin(struct lsca_call *c, enum lsca_op op);

/* Hand the filled slot to the worker and wait. Returns 1 when the worker
 * answered (slot->result/err hold the outcome), 0 when the call must run
 * natively (the worker declined it; counted). The slot stays owned until lsca_end. */
int lsca_exchange(struct lsca_call *c);

/* After the native run of a call the worker handed back because it would wait: its outcome
 * (result, errno as it is now) goes to the worker when its session records that op. Keeps
 * errno. Nothing for any other call (c->report is 0 unless lsca_exchange set it). buf/len: the
 * bytes it moved, whose first ones the record shows (NULL: none). */
void lsca_report_waited(struct lsca_call *c, long result, const void *buf, size_t len);

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

/* The program's memory as the kernel would find it (user_memory.c). The agent never
 * dereferences a program's pointer these did not pass: a call with one that fails runs
 * natively, and the kernel gives the native answer (EFAULT, a partial count). Free for
 * the live stack, the startup objects' segments and the brk heap; a syscall a page else. */
int lsca_user_readable(const void *p, size_t len);
int lsca_user_writable(void *p, size_t len);
/* Copy len bytes in from the program; -1 (nothing copied) when a byte would fault. */
int lsca_user_read(void *dst, const void *src, size_t len);
/* strnlen over the program's memory; -1 when a byte before the NUL (or max) would fault. */
long lsca_user_strnlen(const char *s, size_t max);

/* A pointer the agent cannot both read and write: handed to the kernel natively. */
static inline int lsca_bad_pointer(const void *p, size_t len)
{
    return !lsca_user_writable((void *)p, len);
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
/* Its number, -1 when none. */
int lsca_agent_channel(void);
/* Move the channel where the program cannot allocate, if the program's limit now reaches it. */
void lsca_agent_fd_rehide(void);

/* 1 when the calling process is the one the agent's state belongs to. 0 in a child that
 * shares the parent's memory (vfork, posix_spawn, clone(CLONE_VM)): it must run every
 * call natively and write nothing of the agent's (handler table included). A child with
 * its own copy of memory and descriptors (a raw clone without CLONE_VM) is adopted: its
 * state is reset as after fork. One raw getpid per call. */
int lsca_own_process(void);

/* 1 when this process is registered (a worker may hold references to its descriptors). */
int lsca_registered(void);

/* From the signal trampoline: a handler is about to run on this thread; interrupt the
 * proxied call it waits in (if any) and take its answer first. */
void lsca_signal_arrived(int sa_restart);

/* An exec of this process that may keep its shard (see agent.c): prepare swaps in the
 * environment to pass (x->envp: envp itself, or a copy with LSCA_RESUME) and lets the
 * channel cross the exec; exec_failed undoes that when the exec returned. path is the
 * file (relative to dirfd), or with search the name execvp looks up along PATH. */
struct lsca_exec {
    char **envp;
    int chan;
};
int lsca_exec_prepare(struct lsca_exec *x, int dirfd, const char *path, int search, char *const envp[]);
void lsca_exec_failed(struct lsca_exec *x);

/* A raw system call that never enters the agent's interposers. */
long lsca_sys(long nr, ...);

/* The next definition of a symbol (libc's), resolved once. */
void *lsca_real(const char *name, void **cache);
#define REAL(name) ((__typeof__(&name))lsca_real(#name, &real_##name##_ptr))
#define DECLARE_REAL(name) static void *real_##name##_ptr

#endif /* LSCA_AGENT_H */

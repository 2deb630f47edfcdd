/*
 * user_memory.c - may the agent touch this piece of the program's memory?
 *
 * A native call hands a bad pointer to the kernel, which answers EFAULT (or a partial
 * count); the agent copies buffers itself, and a copy that faults would kill the program.
 * So every pointer is checked before the agent dereferences it, and a call with a pointer
 * that fails the check runs natively: the kernel then gives exactly the native answer.
 *
 * The check costs nothing for memory known to stay mapped (the thread's live stack, the
 * segments of the objects loaded at startup, the brk heap) and one system call per page
 * otherwise: futex operations that read (or atomically add 0 to) one word of the page
 * and say EFAULT instead of faulting; long ranges are checked with process_vm_readv/writev
 * on one byte per page.
 */
#define _GNU_SOURCE
#include <elf.h>
#include <errno.h>
#include <link.h>
#include <linux/futex.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "agent.h"

#define TLS __thread __attribute__((tls_model("initial-exec")))
#define PAGE 4096UL
#define PAGE_DOWN(a) ((a) & ~(PAGE - 1))
#define FUTEX_PAGES_MAX 4            /* above this many pages one batched process_vm call is cheaper */
#define BATCH 1024                   /* pages per process_vm call (IOV_MAX) */
#define STACK_SPAN_MAX (64UL << 20)  /* a "stack" range larger than this is not trusted */

extern void *__libc_stack_end;

/* ---- memory known to stay mapped ---- */

/* Segments of the objects loaded at startup: never unloaded, their protection is set
 * (RELRO included) before any constructor runs. */
#define SEGMENTS_MAX 256
static struct segment { uintptr_t lo, hi; int writable; } segments[SEGMENTS_MAX];
static int nsegments;
static uintptr_t heap_lo;            /* the brk heap's start as the agent found it */

static void add_segment(uintptr_t lo, uintptr_t hi, int writable)
{
    if (lo < hi && nsegments < SEGMENTS_MAX)
        segments[nsegments++] = (struct segment){ lo, hi, writable };
}

static int collect_segments(struct dl_phdr_info *info, size_t size, void *unused)
{
    uintptr_t relro_lo = 0, relro_hi = 0;
    int i;

    (void)size;
    (void)unused;
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_GNU_RELRO) {
            relro_lo = PAGE_DOWN(info->dlpi_addr + ph->p_vaddr);
            relro_hi = (info->dlpi_addr + ph->p_vaddr + ph->p_memsz + PAGE - 1) & ~(PAGE - 1);
        }
    }
    for (i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_R))
            continue;
        if (!(ph->p_flags & PF_W) || relro_hi <= lo || relro_lo >= hi) {
            add_segment(lo, hi, (ph->p_flags & PF_W) != 0);
            continue;
        }
        /* Read-only after relocation: the RELRO part is not a place to write to. */
        add_segment(lo, relro_lo > lo ? relro_lo : lo, 1);
        add_segment(relro_lo > lo ? relro_lo : lo, relro_hi < hi ? relro_hi : hi, 0);
        add_segment(relro_hi > lo ? relro_hi : lo, hi, 1);
    }
    return 0;
}

__attribute__((constructor)) static void find_known_memory(void)
{
    dl_iterate_phdr(collect_segments, NULL);
    heap_lo = (uintptr_t)sbrk(0);
}

/* The thread's live stack: [stack_lo, stack_hi) was probed once and stays mapped. */
static TLS uintptr_t stack_lo, stack_hi;
static TLS int stack_known;          /* 0: not looked at yet, 1: bounds set, -1: unusable */
static TLS char stack_marker;        /* with the thread's static TLS, at the top of its stack */

static int probe(uintptr_t lo, uintptr_t hi, int write);

static int in_stack(uintptr_t lo, uintptr_t hi)
{
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);

    if (!stack_known) {
        /* The main thread's static TLS is not on its stack; a pthread's sits at its top. */
        int main_thread = lsca_sys(SYS_gettid) == lsca_sys(SYS_getpid);
        stack_hi = main_thread ? (uintptr_t)__libc_stack_end : (uintptr_t)&stack_marker;
        stack_lo = stack_hi;
        stack_known = sp < stack_hi && stack_hi - sp < STACK_SPAN_MAX ? 1 : -1;
    }
    if (stack_known < 0 || hi > stack_hi || lo >= hi)
        return 0;
    if (lo >= stack_lo)
        return 1;
    /* Deeper than ever checked: only the live part (above sp), checked page by page once. */
    if (lo < sp || stack_hi - lo > STACK_SPAN_MAX || !probe(PAGE_DOWN(lo), stack_lo, 0))
        return 0;
    stack_lo = PAGE_DOWN(lo);
    return 1;
}

static int known(uintptr_t lo, uintptr_t hi, int write)
{
    int i;

    for (i = 0; i < nsegments; i++)
        if (lo >= segments[i].lo && hi <= segments[i].hi)
            return !write || segments[i].writable;
    if (heap_lo && lo >= heap_lo && hi <= (uintptr_t)sbrk(0))
        return 1;
    return in_stack(lo, hi);
}

/* ---- probes: a system call that says EFAULT where an access would fault ---- */

static int futex_probe(uintptr_t page_word, int write)
{
    uint32_t other = 0;
    long r;

    if (write)
        /* *word += 0, atomically: needs the page writable, changes nothing, wakes nobody. */
        r = lsca_sys(SYS_futex, &other, FUTEX_WAKE_OP | FUTEX_PRIVATE_FLAG, 0, 0, page_word,
                     FUTEX_OP(FUTEX_OP_ADD, 0, FUTEX_OP_CMP_EQ, 0));
    else
        /* Reads the word to compare it; wakes and requeues no one either way. */
        r = lsca_sys(SYS_futex, page_word, FUTEX_CMP_REQUEUE | FUTEX_PRIVATE_FLAG, 0, 0, &other, 0);
    if (r >= 0 || errno == EAGAIN)
        return 1;
    return errno == EFAULT ? 0 : -1;     /* -1: futex unusable here, ask process_vm */
}

/* One byte per page of [lo, hi), BATCH pages a call; a write puts each byte back as it was
 * (a program cannot count on bytes of a buffer it hands to a read staying untouched). */
static int batch_probe(uintptr_t lo, uintptr_t hi, int write)
{
    pid_t pid = (pid_t)lsca_sys(SYS_getpid);
    struct iovec local, remote[BATCH];
    char bytes[BATCH];
    uintptr_t a = lo;

    while (a < hi) {
        unsigned long n = 0;
        while (n < BATCH && a < hi) {
            remote[n].iov_base = (void *)a;
            remote[n].iov_len = 1;
            n++;
            a = PAGE_DOWN(a) + PAGE;
        }
        local.iov_base = bytes;
        local.iov_len = n;
        if (lsca_sys(SYS_process_vm_readv, pid, &local, 1UL, remote, n, 0UL) != (long)n)
            return 0;
        if (write && lsca_sys(SYS_process_vm_writev, pid, &local, 1UL, remote, n, 0UL) != (long)n)
            return 0;
    }
    return 1;
}

static int probe(uintptr_t lo, uintptr_t hi, int write)
{
    uintptr_t a;
    int r;

    if (lo >= hi)
        return 1;
    if ((hi - 1 - PAGE_DOWN(lo)) / PAGE < FUTEX_PAGES_MAX) {
        for (a = lo; a < hi; a = PAGE_DOWN(a) + PAGE) {
            r = futex_probe(a & ~(uintptr_t)3, write);
            if (r < 0)
                return batch_probe(lo, hi, write);
            if (r == 0)
                return 0;
        }
        return 1;
    }
    return batch_probe(lo, hi, write);
}

/* ---- the interface ---- */

static int accessible(const void *p, size_t len, int write)
{
    uintptr_t lo = (uintptr_t)p, hi = lo + len;
    int saved, r;

    if (len == 0)
        return 1;                    /* the kernel touches nothing */
    if (hi < lo || lo < PAGE)
        return 0;
    saved = errno;
    r = known(lo, hi, write) || probe(lo, hi, write);
    errno = saved;
    return r;
}

int lsca_user_readable(const void *p, size_t len)
{
    return accessible(p, len, 0);
}

int lsca_user_writable(void *p, size_t len)
{
    return accessible(p, len, 1);
}

int lsca_user_read(void *dst, const void *src, size_t len)
{
    if (!accessible(src, len, 0))
        return -1;
    if (len)
        memcpy(dst, src, len);
    return 0;
}

long lsca_user_strnlen(const char *s, size_t max)
{
    uintptr_t a = (uintptr_t)s;
    size_t len = 0;

    /* A page at a time: the string may end before a page that faults. */
    while (len < max) {
        size_t chunk = PAGE - ((a + len) & (PAGE - 1));
        const char *nul;
        if (chunk > max - len)
            chunk = max - len;
        if (!accessible(s + len, chunk, 0))
            return -1;
        nul = memchr(s + len, '\0', chunk);
        if (nul)
            return (long)(nul - s);
        len += chunk;
    }
    return (long)max;
}

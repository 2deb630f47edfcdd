/*
 * interpose_syscall.c - the generic syscall(long nr, ...) entry: numbers of proxied
 * calls go to the interposer of the same call. The numbers come from this
 * architecture's <sys/syscall.h> (x86_64 has open/stat/..., aarch64 only the *at forms),
 * so nothing architecture-specific reaches the wire protocol, which speaks op codes.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>             /* renameat, renameat2 */
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define A(i) ((long)a[i])
#define P(i) ((void *)a[i])

long syscall(long nr, ...)
{
    unsigned long a[6];
    va_list ap;
    int i;

    va_start(ap, nr);
    for (i = 0; i < 6; i++)
        a[i] = va_arg(ap, unsigned long);
    va_end(ap);

    switch (nr) {
    case SYS_read: return read((int)A(0), P(1), (size_t)a[2]);
    case SYS_write: return write((int)A(0), P(1), (size_t)a[2]);
    case SYS_pread64: return pread((int)A(0), P(1), (size_t)a[2], (off_t)A(3));
    case SYS_pwrite64: return pwrite((int)A(0), P(1), (size_t)a[2], (off_t)A(3));
    case SYS_readv: return readv((int)A(0), P(1), (int)A(2));
    case SYS_writev: return writev((int)A(0), P(1), (int)A(2));
    case SYS_lseek: return lseek((int)A(0), (off_t)A(1), (int)A(2));
    case SYS_fsync: return fsync((int)A(0));
    case SYS_fdatasync: return fdatasync((int)A(0));
    case SYS_ftruncate: return ftruncate((int)A(0), (off_t)A(1));
    case SYS_truncate: return truncate(P(0), (off_t)A(1));
    case SYS_fstat: return fstat((int)A(0), P(1));
    case SYS_close: return close((int)A(0));
    case SYS_openat: return openat((int)A(0), P(1), (int)A(2), (mode_t)a[3]);
    case SYS_dup: return dup((int)A(0));
    case SYS_dup3: return dup3((int)A(0), (int)A(1), (int)A(2));
    case SYS_pipe2: return pipe2(P(0), (int)A(1));
    case SYS_newfstatat: return fstatat((int)A(0), P(1), P(2), (int)A(3));
    case SYS_statx: return statx((int)A(0), P(1), (int)A(2), (unsigned)a[3], P(4));
    case SYS_faccessat: return faccessat((int)A(0), P(1), (int)A(2), 0);
#ifdef SYS_faccessat2
    case SYS_faccessat2: return faccessat((int)A(0), P(1), (int)A(2), (int)A(3));
#endif
    case SYS_mkdirat: return mkdirat((int)A(0), P(1), (mode_t)a[2]);
    case SYS_unlinkat: return unlinkat((int)A(0), P(1), (int)A(2));
#ifdef SYS_renameat
    case SYS_renameat: return renameat((int)A(0), P(1), (int)A(2), P(3));
#endif
    case SYS_renameat2: return renameat2((int)A(0), P(1), (int)A(2), P(3), (unsigned)a[4]);
    case SYS_linkat: return linkat((int)A(0), P(1), (int)A(2), P(3), (int)A(4));
    case SYS_symlinkat: return symlinkat(P(0), (int)A(1), P(2));
    case SYS_readlinkat: return readlinkat((int)A(0), P(1), P(2), (size_t)a[3]);
    case SYS_fchmodat: return fchmodat((int)A(0), P(1), (mode_t)a[2], 0);
    case SYS_fchmod: return fchmod((int)A(0), (mode_t)a[1]);
    case SYS_fchownat: return fchownat((int)A(0), P(1), (uid_t)a[2], (gid_t)a[3], (int)A(4));
    case SYS_fchown: return fchown((int)A(0), (uid_t)a[1], (gid_t)a[2]);
    case SYS_utimensat: return utimensat((int)A(0), P(1), P(2), (int)A(3));
#ifdef SYS_close_range
    case SYS_close_range: return close_range((unsigned)a[0], (unsigned)a[1], (int)A(2));
#endif
    case SYS_prlimit64: return prlimit((pid_t)A(0), (int)A(1), P(2), P(3));
#ifdef SYS_setrlimit
    case SYS_setrlimit: return setrlimit((int)A(0), P(1));
#endif
    case SYS_chdir: return chdir(P(0));
    case SYS_fchdir: return fchdir((int)A(0));
#ifdef SYS_open
    case SYS_open: return open(P(0), (int)A(1), (mode_t)a[2]);
#endif
#ifdef SYS_creat
    case SYS_creat: return creat(P(0), (mode_t)a[1]);
#endif
#ifdef SYS_stat
    case SYS_stat: return stat(P(0), P(1));
#endif
#ifdef SYS_lstat
    case SYS_lstat: return lstat(P(0), P(1));
#endif
#ifdef SYS_access
    case SYS_access: return access(P(0), (int)A(1));
#endif
#ifdef SYS_mkdir
    case SYS_mkdir: return mkdir(P(0), (mode_t)a[1]);
#endif
#ifdef SYS_rmdir
    case SYS_rmdir: return rmdir(P(0));
#endif
#ifdef SYS_unlink
    case SYS_unlink: return unlink(P(0));
#endif
#ifdef SYS_rename
    case SYS_rename: return rename(P(0), P(1));
#endif
#ifdef SYS_link
    case SYS_link: return link(P(0), P(1));
#endif
#ifdef SYS_symlink
    case SYS_symlink: return symlink(P(0), P(1));
#endif
#ifdef SYS_readlink
    case SYS_readlink: return readlink(P(0), P(1), (size_t)a[2]);
#endif
#ifdef SYS_chmod
    case SYS_chmod: return chmod(P(0), (mode_t)a[1]);
#endif
#ifdef SYS_chown
    case SYS_chown: return chown(P(0), (uid_t)a[1], (gid_t)a[2]);
#endif
#ifdef SYS_lchown
    case SYS_lchown: return lchown(P(0), (uid_t)a[1], (gid_t)a[2]);
#endif
#ifdef SYS_dup2
    case SYS_dup2: return dup2((int)A(0), (int)A(1));
#endif
#ifdef SYS_pipe
    case SYS_pipe: return pipe(P(0));
#endif
    default:
        /* Not proxied (getcwd's raw form returns a length, unlike the libc call). */
        return lsca_sys(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    }
}

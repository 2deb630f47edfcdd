/*
 * lsca_worker_sys.h - the kernel interfaces a worker or the supervisor needs and
 * Python's os module lacks (pidfd_getfd, kcmp, process_vm_*, multi-semaphore SysV
 * sets). Compiled into the cffi module; syscall numbers come from this arch's headers.
 */
#ifndef LSCA_WORKER_SYS_H
#define LSCA_WORKER_SYS_H

#include <stddef.h>
#include <stdint.h>

/* LSCA_CDEF_BEGIN */
int lsca_pidfd_open(int pid);
/* A duplicate (close-on-exec) of descriptor fd of the process behind pidfd. */
int lsca_pidfd_getfd(int pidfd, int fd);
/* 0 when fd1 of pid1 and fd2 of pid2 are the same open file description. */
int lsca_kcmp_file(int pid1, int pid2, int fd1, int fd2);

/* Whole-buffer moves between this process and a client; -1 with errno (EFAULT...). */
int64_t lsca_remote_read(int pid, void *local, uint64_t remote, size_t len);
int64_t lsca_remote_write(int pid, const void *local, uint64_t remote, size_t len);
/* The same over a client iovec list (struct iovec[iovcnt] copied into this process). */
int64_t lsca_remote_gather(int pid, void *local, size_t len, const void *remote_iov, int iovcnt);
int64_t lsca_remote_scatter(int pid, const void *local, size_t len, const void *remote_iov, int iovcnt);

/* The exact libc calls a worker executes for a client (no wrapper semantics in
 * between, e.g. Python's preadv treating offset -1 as "current position").
 * -1 with errno on failure; EINTR (a signal to the worker) is retried. */
/* The calling thread's cancel word (a slot's cancel field) or NULL: while it is set, an
 * EINTR ends the call instead of being retried (how a blocking call is interrupted). */
void lsca_set_cancel_word(const uint32_t *word);
int64_t lsca_do_read(int fd, void *buf, uint64_t count);
/* read/write (at the file position) that never wait: EAGAIN instead, EOPNOTSUPP for files
 * that cannot say so (terminals ...). A look at O_NONBLOCK or poll() before a plain call is
 * not enough: another process sharing the file may flip the flag or drain it in between. */
int64_t lsca_do_read_nowait(int fd, void *buf, uint64_t count);
int64_t lsca_do_write_nowait(int fd, const void *buf, uint64_t count);
int lsca_nonblocking(int fd);
int64_t lsca_do_write(int fd, const void *buf, uint64_t count);
int64_t lsca_do_pread(int fd, void *buf, uint64_t count, int64_t offset);
int64_t lsca_do_pwrite(int fd, const void *buf, uint64_t count, int64_t offset);
int64_t lsca_do_lseek(int fd, int64_t offset, int whence);
int lsca_do_ftruncate(int fd, int64_t length);
int lsca_do_fsync(int fd);
int lsca_do_fdatasync(int fd);

/* Path and descriptor calls, through the same glibc functions the program called
 * (so glibc's own emulations, e.g. fchmodat(AT_SYMLINK_NOFOLLOW), behave alike). */
int lsca_do_openat(int dirfd, const char *path, int flags, unsigned mode);
/* An open for a client: like openat, but ELOOP at a magic link (/proc/self/fd/N, /proc/self/cwd
 * ... reached through the client's symlinks would name this worker's own files and cwd). */
int lsca_do_open_nomagic(int dirfd, const char *path, int flags, unsigned mode);
int lsca_do_fstatat(int dirfd, const char *path, void *out, int flags);
int lsca_do_statx(int dirfd, const char *path, int flags, unsigned mask, void *out);
size_t lsca_statx_size(void);
int lsca_do_faccessat(int dirfd, const char *path, int mode, int flags);
int lsca_do_mkdirat(int dirfd, const char *path, unsigned mode);
int lsca_do_unlinkat(int dirfd, const char *path, int flags);
int lsca_do_renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned flags);
int lsca_do_linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags);
int lsca_do_symlinkat(const char *target, int newdirfd, const char *linkpath);
int64_t lsca_do_readlinkat(int dirfd, const char *path, void *buf, size_t size);
int lsca_do_fchmodat(int dirfd, const char *path, unsigned mode, int flags);
int lsca_do_fchmod(int fd, unsigned mode);
int lsca_do_fchownat(int dirfd, const char *path, int uid, int gid, int flags);
int lsca_do_fchown(int fd, int uid, int gid);
int lsca_do_truncate(const char *path, int64_t length);
int lsca_do_utimensat(int dirfd, const char *path, const void *times, int flags);
int lsca_do_fcntl(int fd, int cmd, long arg);
int lsca_do_pipe2(int *fds, int flags);

/* Sockets (the worker always adds MSG_NOSIGNAL: SIGPIPE is the agent's to raise). */
int64_t lsca_do_sendto(int fd, const void *buf, uint64_t len, int flags, const void *addr, uint32_t addrlen);
int64_t lsca_do_recvfrom(int fd, void *buf, uint64_t len, int flags, void *addr, uint32_t *addrlen);
int64_t lsca_do_sendmsg(int fd, const void *buf, uint64_t len, const void *addr, uint32_t addrlen, int flags);
int64_t lsca_do_recvmsg(int fd, void *buf, uint64_t len, void *addr, uint32_t *addrlen, int flags,
                        int *msg_flags);
int lsca_do_accept4(int fd, void *addr, uint32_t *addrlen, int flags);
int lsca_do_connect(int fd, const void *addr, uint32_t addrlen);
int lsca_do_shutdown(int fd, int how);

/* Act with a client's filesystem credentials in this thread only (raw syscalls: glibc's
 * wrappers would change every thread). -1 with errno when they did not take. */
int lsca_become(int fsuid, int fsgid, int ngroups, const unsigned *groups);

/* fstat into a native struct stat at out; its size for the slot's data_len. */
int lsca_fstat_into(int fd, void *out);
size_t lsca_stat_size(void);
/* st_mode and st_size of a native struct stat, for traces. */
void lsca_stat_summary(const void *st, uint32_t *mode, int64_t *size);
uint64_t lsca_stat_dev(const void *st);
uint64_t lsca_statx_dev(const void *stx);
/* File type bits and, for character devices, the major number. */
int lsca_fd_kind(int fd, unsigned *mode, unsigned *dev_major);
/* 1 when a blocking read/write of count bytes on fd could wait (pipe, socket, tty). */
/* 0 for the kinds of file no call waits on (regular, directory, block, /dev/null & co.). */
int lsca_may_wait(unsigned mode, unsigned dev_major);
/* 1 for an AF_UNIX socket: what a worker sends on one carries the worker's credentials
 * (SCM_CREDENTIALS, SO_PASSCRED) and reaches socket files as the worker: only the program sends. */
int lsca_unix_socket(int fd);
int lsca_would_block(int fd, unsigned mode, unsigned dev_major, int for_write, size_t count);

/* A new shared-memory segment, owned by uid/gid (uid -1: by us). The kernel zero-fills it page
 * by page as it is touched (sysv_ipc writes its init character over every page instead). */
int lsca_shm_create(int key, size_t size, int mode, int uid, int gid);

/* Set the process's umask to mask unless it is that already (the worker's calls go through here). */
void lsca_use_umask(unsigned mask);

/* SysV semaphore sets with many semaphores (sysv_ipc's sets have one). */
int lsca_sem_create(int key, int nsems, int mode, int uid, int gid);
int lsca_sem_remove(int semid);
int lsca_sem_post(int semid, int num);
/* LSCA_CDEF_END */

#endif /* LSCA_WORKER_SYS_H */

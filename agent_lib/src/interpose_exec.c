/*
 * interpose_exec.c - the exec family: an exec of this process keeps its shard (agent.c,
 * lsca_exec_prepare) instead of registering anew. glibc's execv, execvp and execl* call
 * execve internally, not through the PLT, so each entry point is interposed here.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

#include "agent.h"

extern char **environ;

DECLARE_REAL(execve);
DECLARE_REAL(execvpe);
DECLARE_REAL(fexecve);

static int exec_at(int dirfd, const char *path, int search, char *const argv[], char *const envp[])
{
    struct lsca_exec x;

    lsca_exec_prepare(&x, dirfd, path, search, envp);
    if (search)
        REAL(execvpe)(path, argv, x.envp);
    else
        REAL(execve)(path, argv, x.envp);
    lsca_exec_failed(&x);
    return -1;
}

int execve(const char *path, char *const argv[], char *const envp[])
{
    return exec_at(AT_FDCWD, path, 0, argv, envp);
}

int execv(const char *path, char *const argv[])
{
    return exec_at(AT_FDCWD, path, 0, argv, environ);
}

int execvp(const char *file, char *const argv[])
{
    return exec_at(AT_FDCWD, file, 1, argv, environ);
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
    return exec_at(AT_FDCWD, file, 1, argv, envp);
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
    struct lsca_exec x;

    /* The file is fd itself: looked at through it (an empty path). */
    lsca_exec_prepare(&x, fd, "", 0, envp);
    REAL(fexecve)(fd, argv, x.envp);
    lsca_exec_failed(&x);
    return -1;
}

/* execl, execlp, execle: their arguments as an array (on the stack, as glibc does). */
static size_t count_args(va_list ap)
{
    size_t n = 1;

    while (va_arg(ap, const char *))
        n++;
    return n;
}

#define ARGV_FROM(arg0, ap, argv, argc)                                          \
    const char *argv[argc + 1];                                                 \
    argv[0] = arg0;                                                             \
    va_start(ap, arg0);                                                         \
    for (size_t i_ = 1; i_ <= argc; i_++)                                       \
        argv[i_] = va_arg(ap, const char *)

/* The body of execl and execlp: the arguments up to the NULL, then the exec. */
#define EXEC_LIST(file, arg, search)                                            \
    va_list ap;                                                                 \
    va_start(ap, arg);                                                          \
    size_t argc = count_args(ap);                                               \
    va_end(ap);                                                                 \
    ARGV_FROM(arg, ap, argv, argc);                                             \
    va_end(ap);                                                                 \
    return exec_at(AT_FDCWD, file, search, (char *const *)argv, environ)

int execl(const char *path, const char *arg, ...)
{
    EXEC_LIST(path, arg, 0);
}

int execlp(const char *file, const char *arg, ...)
{
    EXEC_LIST(file, arg, 1);
}

int execle(const char *path, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    size_t argc = count_args(ap);
    va_end(ap);
    ARGV_FROM(arg, ap, argv, argc);
    char *const *envp = va_arg(ap, char *const *);     /* after the terminating NULL */
    va_end(ap);
    return exec_at(AT_FDCWD, path, 0, (char *const *)argv, envp);
}

/* Children that share the parent's memory (vfork, posix_spawn, clone(CLONE_VM)) or are made
 * by a raw clone without atfork handlers (CLONE_VFORK without CLONE_VM) act on their own
 * descriptors and signal dispositions, never on the parent's. Prints what the parent sees
 * after each child; the files written are compared by the test. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static volatile sig_atomic_t usr1_count;
static int log_fd, pipe_fds[2];
static struct stat stdout_before;

static void on_usr1(int sig)
{
    (void)sig;
    usr1_count++;
}

/* What every child does: take the log as its stdout, write, close its copy of the log,
 * reset SIGUSR1 to its default (as _posixsubprocess does). */
static void child_work(const char *who)
{
    char line[64];
    struct sigaction dfl = { .sa_handler = SIG_DFL }, old;

    dup2(log_fd, 1);
    snprintf(line, sizeof(line), "%s: stdout is the log\n", who);
    write(1, line, strlen(line));
    close(log_fd);
    close(pipe_fds[0]);
    sigaction(SIGUSR1, &dfl, &old);
    snprintf(line, sizeof(line), "%s: inherited handler is the program's: %d\n", who, old.sa_handler == on_usr1);
    write(1, line, strlen(line));
    int bad = fcntl(log_fd, F_GETFD);
    snprintf(line, sizeof(line), "%s: log closed in child: %d errno=%d\n", who, bad, bad < 0 ? errno : 0);
    write(1, line, strlen(line));
}

static int clone_child(void *arg)
{
    child_work(arg);
    _exit(7);
}

/* The parent's descriptors and handler are as they were. */
static void check_parent(const char *what, int status)
{
    struct stat now;
    struct sigaction cur;
    char c = 'x';

    fstat(1, &now);
    sigaction(SIGUSR1, NULL, &cur);
    int before = usr1_count;
    raise(SIGUSR1);
    int log_open = fcntl(log_fd, F_GETFD) >= 0;
    int pipe_ok = write(pipe_fds[1], &c, 1) == 1 && read(pipe_fds[0], &c, 1) == 1;
    printf("%s: exit=%d stdout_kept=%d log_open=%d pipe_ok=%d handler_kept=%d handler_ran=%d\n", what,
           WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status),
           now.st_ino == stdout_before.st_ino && now.st_dev == stdout_before.st_dev, log_open, pipe_ok,
           cur.sa_handler == on_usr1, usr1_count == before + 1);
    fflush(stdout);
    dprintf(log_fd, "parent after %s\n", what);
}

int main(int argc, char **argv)
{
    static char stack[4][256 * 1024];
    struct sigaction act = { .sa_handler = on_usr1 };
    int status;
    pid_t pid;

    sigaction(SIGUSR1, &act, NULL);
    fstat(1, &stdout_before);
    log_fd = open("children.log", O_CREAT | O_WRONLY | O_TRUNC | O_APPEND, 0644);
    pipe(pipe_fds);

    pid = vfork();
    if (pid == 0) {
        child_work("vfork+_exit");
        _exit(3);
    }
    waitpid(pid, &status, 0);
    check_parent("vfork+_exit", status);

    pid = vfork();
    if (pid == 0) {
        child_work("vfork+exec");
        char *args[] = { "/bin/sh", "-c", "echo exec-ed child writes here; echo and its stderr >&2; exit 4", NULL };
        dup2(1, 2);
        execve(args[0], args, environ);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    check_parent("vfork+exec", status);

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t dfl;
    char *args[] = { "/bin/sh", "-c", "echo posix_spawn child; kill -USR1 $$ ; echo not reached", NULL };
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, log_fd, 1);
    posix_spawn_file_actions_addclose(&fa, log_fd);
    posix_spawn_file_actions_addclose(&fa, pipe_fds[0]);
    posix_spawnattr_init(&attr);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGUSR1);
    posix_spawnattr_setsigdefault(&attr, &dfl);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF);
    if (posix_spawn(&pid, args[0], &fa, &attr, args, environ) != 0)
        return 1;
    waitpid(pid, &status, 0);
    check_parent("posix_spawn", status);

    pid = clone(clone_child, stack[0] + sizeof(stack[0]), CLONE_VM | CLONE_VFORK | SIGCHLD, "clone(VM|VFORK)");
    waitpid(pid, &status, 0);
    check_parent("clone(VM|VFORK)", status);

    pid = clone(clone_child, stack[1] + sizeof(stack[1]), CLONE_VM | SIGCHLD, "clone(VM)");
    waitpid(pid, &status, 0);
    check_parent("clone(VM)", status);

    pid = clone(clone_child, stack[2] + sizeof(stack[2]), CLONE_VFORK | SIGCHLD, "clone(VFORK)");
    waitpid(pid, &status, 0);
    check_parent("clone(VFORK)", status);

    pid = fork();
    if (pid == 0) {
        child_work("fork");
        _exit(5);
    }
    waitpid(pid, &status, 0);
    check_parent("fork", status);
    return 0;
}

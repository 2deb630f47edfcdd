/* Writes into a pipe or socket whose reader is gone, one way per argument:
 *   write | writev | send | sendto | sendmsg      the signal at its default: the process dies of SIGPIPE
 *   handler             a SA_SIGINFO handler: it runs before write returns (si_code, si_pid checked)
 *   ignored             SIG_IGN: just EPIPE
 *   blocked             blocked: EPIPE, and SIGPIPE stays pending on the writing thread
 *   nosignal            send(MSG_NOSIGNAL) on a stream socket: EPIPE, no signal
 *   dgram               a Unix datagram socket shut down for writing: EPIPE, no signal
 *   thread              written from a second thread with SIGPIPE blocked in main only
 * Prints what it saw; exits 0 unless killed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static volatile sig_atomic_t got, code, from_self, errno_in_handler;

static void on_pipe(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    got++;
    code = info->si_code;
    from_self = info->si_pid == getpid();
}

static int dead_pipe(void)
{
    int p[2];
    pipe(p);
    close(p[0]);
    return p[1];
}

static int dead_stream(void)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    close(sv[1]);
    return sv[0];
}

static void result(const char *what, long r)
{
    printf("%s: r=%ld errno=%s got=%d code=%d self=%d\n", what, r, r < 0 ? strerror(errno) : "-", (int)got,
           (int)code, (int)from_self);
    fflush(stdout);
}

static void *thread_writer(void *arg)
{
    sigset_t set;
    (void)arg;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    long r = write(dead_pipe(), "x", 1);
    result("thread write", r);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "write";
    struct sigaction sa;
    sigset_t set;

    memset(&sa, 0, sizeof(sa));
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    printf("start %s\n", mode);
    fflush(stdout);
    if (!strcmp(mode, "write")) {
        result("write", write(dead_pipe(), "x", 1));
    } else if (!strcmp(mode, "writev")) {
        struct iovec iov[2] = { { "a", 1 }, { "b", 1 } };
        result("writev", writev(dead_pipe(), iov, 2));
    } else if (!strcmp(mode, "send")) {
        result("send", send(dead_stream(), "x", 1, 0));
    } else if (!strcmp(mode, "sendto")) {
        result("sendto", sendto(dead_stream(), "x", 1, 0, NULL, 0));
    } else if (!strcmp(mode, "sendmsg")) {
        struct iovec iov = { "x", 1 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
        result("sendmsg", sendmsg(dead_stream(), &m, 0));
    } else if (!strcmp(mode, "handler")) {
        sa.sa_sigaction = on_pipe;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGPIPE, &sa, NULL);
        result("write", write(dead_pipe(), "x", 1));
        result("send", send(dead_stream(), "x", 1, 0));
    } else if (!strcmp(mode, "ignored")) {
        signal(SIGPIPE, SIG_IGN);
        result("write", write(dead_pipe(), "x", 1));
    } else if (!strcmp(mode, "blocked")) {
        sigprocmask(SIG_BLOCK, &set, NULL);
        result("write", write(dead_pipe(), "x", 1));
        sigpending(&set);
        printf("pending=%d\n", sigismember(&set, SIGPIPE));
    } else if (!strcmp(mode, "nosignal")) {
        result("send", send(dead_stream(), "x", 1, MSG_NOSIGNAL));
    } else if (!strcmp(mode, "dgram")) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_DGRAM, 0, sv);
        shutdown(sv[0], SHUT_WR);
        result("send", send(sv[0], "x", 1, 0));
    } else if (!strcmp(mode, "thread")) {
        pthread_t t;
        sa.sa_sigaction = on_pipe;
        sa.sa_flags = SA_SIGINFO;
        sigaction(SIGPIPE, &sa, NULL);
        sigprocmask(SIG_BLOCK, &set, NULL);    /* only the writing thread can take it */
        pthread_create(&t, NULL, thread_writer, NULL);
        pthread_join(t, NULL);
        sigpending(&set);
        printf("main pending=%d\n", sigismember(&set, SIGPIPE));
    }
    printf("end\n");
    return 0;
}

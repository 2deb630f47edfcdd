/* A read that blocks (an empty pipe) interrupted by SIGALRM:
 *   eintr:   handler without SA_RESTART -> read fails with EINTR
 *   restart: handler with SA_RESTART writes to the pipe -> read is resumed and gets the byte
 * Under LSCA the read is handed back and blocks in the program itself; the answer must be the native one. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int fds[2];
static volatile sig_atomic_t handled;

static void on_alarm(int sig)
{
    (void)sig;
    handled++;
    if (write(fds[1], "x", 1) != 1)
        handled += 100;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    char buf[16];
    ssize_t r;

    if (argc != 2 || pipe(fds) < 0)
        return 2;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = strcmp(argv[1], "restart") == 0 ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    alarm(1);
    r = read(fds[0], buf, sizeof(buf));
    printf("read=%zd errno=%s handled=%d data=%.*s\n", r, r < 0 ? strerrorname_np(errno) : "0", (int)handled,
           r > 0 ? (int)r : 0, buf);
    return 0;
}

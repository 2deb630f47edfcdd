/* A signal handler that writes while the interrupted thread is itself inside write().
 * Under LSCA the handler's call must run natively (the thread's slot is busy) and
 * every byte of both must land in the file. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static int fd;
static volatile sig_atomic_t handler_writes;

static void on_alarm(int sig)
{
    (void)sig;
    if (write(fd, "H", 1) == 1)
        handler_writes++;
}

int main(int argc, char **argv)
{
    struct sigaction sa;
    struct itimerval every = { { 0, 200 }, { 0, 200 } };
    long main_writes = 0, i;

    if (argc != 2)
        return 2;
    fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd < 0)
        return 1;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    setitimer(ITIMER_REAL, &every, NULL);
    for (i = 0; i < 20000; i++)
        if (write(fd, "m", 1) == 1)
            main_writes++;
    setitimer(ITIMER_REAL, &(struct itimerval){ { 0, 0 }, { 0, 0 } }, NULL);
    printf("%ld %d\n", main_writes, (int)handler_writes);
    return 0;
}

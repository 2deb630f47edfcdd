/* The agent's descriptor cannot be found by probing: every number below and around the
 * descriptor limit answers as natively to fcntl, dup2 onto it, close, and the program can
 * open as many descriptors as its limit allows, before and after raising the limit. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

/* Free slots as a program counts them: F_GETFD says EBADF. */
static int free_slots(int upto)
{
    int n = 0;
    for (int fd = 0; fd < upto; fd++)
        if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
            n++;
    return n;
}

/* Open until the table is full: how many, and the last number. */
static void fill(const char *what)
{
    int n = 0, last = -1, fd, err;
    while ((fd = open("/dev/null", O_RDONLY)) >= 0) {
        n++;
        last = fd;
    }
    err = errno;
    printf("%s: opened=%d last=%d then errno=%d dup=%d pipe_errno=", what, n, last, err, dup(0));
    int p[2];
    printf("%d\n", pipe(p) < 0 ? errno : 0);
    for (fd = 3; fd <= last; fd++)
        close(fd);
}

int main(void)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    int soft = (int)rl.rlim_cur;

    printf("soft=%d free=%d getdtablesize=%d\n", soft, free_slots(soft + 64), getdtablesize());
    /* Every free number takes a dup2 and gives it back to close; beyond the limit EBADF. */
    int ok = 0, closed = 0;
    for (int fd = 3; fd < soft; fd++)
        ok += dup2(0, fd) == fd;
    for (int fd = 3; fd < soft; fd++)
        closed += close(fd) == 0;
    printf("dup2 onto every number: %d, closed: %d\n", ok, closed);
    int r = dup2(0, soft);
    printf("dup2 onto the limit: %d errno=%d\n", r, r < 0 ? errno : 0);
    r = dup3(0, soft + 1, O_CLOEXEC);
    printf("dup3 beyond the limit: %d errno=%d\n", r, r < 0 ? errno : 0);
    r = close(soft);
    printf("close at the limit: %d errno=%d\n", r, r < 0 ? errno : 0);
    r = fcntl(0, F_DUPFD, soft - 1);
    printf("F_DUPFD at the top: %d\n", r);
    close(r);
    fill("at start");

    rl.rlim_cur = (rlim_t)soft * 2;
    if (rl.rlim_cur > rl.rlim_max)
        rl.rlim_cur = rl.rlim_max;
    printf("raise: %d\n", setrlimit(RLIMIT_NOFILE, &rl));
    printf("free after raise=%d\n", free_slots((int)rl.rlim_cur + 64));
    fill("after raise");
    return 0;
}

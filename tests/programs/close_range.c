/* close_range, closefrom and the raw close_range syscall close exactly what they close
 * natively; later descriptor calls get the numbers and errnos they get natively; a pipe
 * whose writer close_range closed reads EOF. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static void show(const char *what, long r)
{
    printf("%s = %ld errno=%d\n", what, r, r < 0 ? errno : 0);
    fflush(stdout);
}

/* Descriptors a program gets next, and that they work. */
static void after(const char *what)
{
    int p[2];
    char c = 'x';
    int f = open("file.txt", O_CREAT | O_RDWR | O_APPEND, 0644);
    int pr = pipe(p);
    int d = dup(f);
    int w = (int)write(d, what, strlen(what));
    int pw = pr == 0 ? (int)write(p[1], &c, 1) : -1;
    printf("after %s: open=%d pipe=%d,%d dup=%d write=%d pipe_write=%d\n", what, f, pr ? -1 : p[0], pr ? -1 : p[1], d, w, pw);
    fflush(stdout);
    close(f);
    close(d);
    if (pr == 0) {
        close(p[0]);
        close(p[1]);
    }
}

int main(void)
{
    int p[2];
    char buf[4];

    /* The writer is closed by close_range: the reader sees the byte, then EOF. */
    pipe(p);
    write(p[1], "x", 1);
    show("close_range(writer)", close_range((unsigned)p[1], (unsigned)p[1], 0));
    show("read 1", read(p[0], buf, sizeof(buf)));
    show("read eof", read(p[0], buf, sizeof(buf)));
    show("writer closed", fcntl(p[1], F_GETFD));
    close(p[0]);

    for (int i = 0; i < 5; i++)
        open("/dev/null", O_RDONLY);
    show("close_range(3, ~0U, 0)", close_range(3, ~0U, 0));
    show("fd 3 closed", fcntl(3, F_GETFD));
    after("close_range");

    show("close_range(5, 4)", close_range(5, 4, 0));
    show("close_range bad flags", close_range(3, 10, 0x80));
    for (int i = 0; i < 3; i++)
        open("/dev/null", O_RDONLY);
    show("close_range(3, 4, CLOEXEC)", close_range(3, 4, CLOSE_RANGE_CLOEXEC));
    show("fd 3 flags", fcntl(3, F_GETFD));
    show("fd 5 flags", fcntl(5, F_GETFD));
    show("close_range(3, ~0U, CLOEXEC)", close_range(3, ~0U, CLOSE_RANGE_CLOEXEC));
    show("fd 5 flags", fcntl(5, F_GETFD));
    after("cloexec");
    show("close_range(3, ~0U, UNSHARE)", close_range(3, ~0U, CLOSE_RANGE_UNSHARE));
    after("unshare");

    for (int i = 0; i < 4; i++)
        open("/dev/null", O_RDONLY);
    closefrom(4);
    show("fd 3 kept by closefrom(4)", fcntl(3, F_GETFD) >= 0);
    show("fd 4 closed by closefrom(4)", fcntl(4, F_GETFD));
    after("closefrom");

    for (int i = 0; i < 4; i++)
        open("/dev/null", O_RDONLY);
    show("syscall(SYS_close_range, 3, ~0U, 0)", syscall(SYS_close_range, 3, ~0U, 0));
    after("syscall");
    return 0;
}

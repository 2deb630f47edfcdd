/* utime_omit PATH: utimensat with both times UTIME_OMIT (the kernel does nothing and looks at no
 * name, so it says 0 even for a missing one), then with both UTIME_NOW. Prints the outcomes. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
    struct timespec omit[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } }, now[2] = { { 0, UTIME_NOW }, { 0, UTIME_NOW } };

    if (argc != 2)
        return 2;
    int r = utimensat(AT_FDCWD, argv[1], omit, 0);
    printf("omit: %d %s\n", r, r ? strerror(errno) : "ok");
    r = utimensat(AT_FDCWD, argv[1], now, 0);
    printf("now: %d %s\n", r, r ? strerror(errno) : "ok");
    return 0;
}

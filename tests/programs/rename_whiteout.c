/* rename_whiteout OLD NEW: renameat2 with RENAME_WHITEOUT (a root worker must not make it succeed where the kernel
 * says no); prints the outcome. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    int r = renameat2(AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_WHITEOUT);
    printf("whiteout: %d %s\n", r, r ? strerror(errno) : "ok");
    return 0;
}

/*
 * hostile_suid.c - the set-uid-root program of tests/test_hostile.py, as small as it can be.
 *
 * It opens the file "victim" next to its own binary (a root-only file) as descriptor 3,
 * says it is ready (one byte on descriptor 5), then waits until descriptor 6 reaches EOF
 * (the attacker let go) or 60 s pass. It reads nothing, writes nothing else, takes no
 * path from its caller. The test installs it 4750 root:nogroup in a directory only root
 * and group nogroup may enter, and removes it afterwards.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

int main(void)
{
    char path[4096];
    ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 16);
    char *slash;
    char byte;
    int fd;

    if (n <= 0)
        return 1;
    path[n] = '\0';
    slash = strrchr(path, '/');
    if (!slash)
        return 1;
    strcpy(slash + 1, "victim");
    fd = open(path, O_RDONLY);
    if (fd >= 0 && fd != 3) {
        dup2(fd, 3);
        close(fd);
    }
    alarm(60);
    if (write(5, "R", 1) != 1)
        return 1;
    close(5);
    while (read(6, &byte, 1) > 0)
        ;
    return 0;
}

/* A fixed sequence of proxied calls whose trace is known line by line (tests/test_trace.py). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int main(void)
{
    char buf[64];
    struct stat st;
    int fd = open("golden.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);

    write(fd, "hello\n", 6);
    write(fd, "0123456789abcdefghijklmnopqrstuvwxyz", 36);
    lseek(fd, 0, SEEK_SET);
    fstat(fd, &st);
    close(fd);
    fd = open("golden.txt", O_RDONLY | O_CLOEXEC);
    pread(fd, buf, 5, 0);
    close(fd);
    stat("missing", &st);
    mkdir("dir", 0755);
    rename("golden.txt", "dir/moved.txt");
    symlink("dir/moved.txt", "link");
    readlink("link", buf, sizeof(buf));
    unlink("link");
    write(999, "x", 1);
    return 0;
}

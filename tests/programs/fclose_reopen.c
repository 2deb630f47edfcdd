/* fopen/fclose/fopen files and write to each through write(fileno(f)).
 * The same descriptor number comes back for the next file. glibc's fclose closes with its
 * internal __close (the agent reports it from its fclose); every other file is closed by a
 * raw system call instead, which nothing sees: the worker must notice by itself. */
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* close(2) without libc: no interposition can see it. */
static void unseen_close(int fd)
{
#if defined(__x86_64__)
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"((long)SYS_close), "D"((long)fd) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_close;
    register long x0 __asm__("x0") = fd;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8) : "memory");
#else
#error "unseen_close: add this architecture"
#endif
}

int main(int argc, char **argv)
{
    char path[4096], line[128];
    int i, j;

    if (argc != 2)
        return 2;
    for (i = 0; i < 40; i++) {
        FILE *keep = NULL, *f;
        snprintf(path, sizeof(path), "%s/file%02d", argv[1], i);
        f = fopen(path, "w");
        if (!f)
            return 1;
        if (i % 3 == 0) {                       /* sometimes a second file open at once */
            snprintf(path, sizeof(path), "%s/extra%02d", argv[1], i);
            keep = fopen(path, "w");
        }
        for (j = 0; j < 3; j++) {
            int n = snprintf(line, sizeof(line), "file %d line %d\n", i, j);
            if (write(fileno(f), line, (size_t)n) != n)
                return 1;
            if (keep && write(fileno(keep), "x", 1) != 1)
                return 1;
        }
        if (i % 2 == 0) {
            fclose(f);
        } else {
            unseen_close(fileno(f));    /* the FILE is left behind: nothing is buffered in it */
        }
        if (keep)
            fclose(keep);
    }
    return 0;
}

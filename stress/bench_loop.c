/* The timed loop of stress/bench.py.
 *
 *   bench_loop OP ITERATIONS [FILE]
 *
 * OP is one of
 *   write   write(2) of 1 byte to /dev/null
 *   pread   pread(2) of 4 KiB at offset 0 from FILE (a cached regular file)
 *   fstat   fstat(2) of FILE, opened read-only
 *
 * Does a short warm-up, then times ITERATIONS calls with CLOCK_MONOTONIC and
 * prints the mean cost of one call in nanoseconds on stdout. Every call's
 * result is checked; the program exits 1 at the first failure.
 *
 * The calls go through the ordinary (dynamically linked) libc functions, not
 * syscall(2), so that an LD_PRELOAD agent can interpose them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PREAD_SIZE 4096

static const char *op;
static int fd = -1;
static char buf[PREAD_SIZE];

static void fail(const char *what, long i)
{
    fprintf(stderr, "bench_loop: %s failed at call %ld: %s\n", what, i, strerror(errno));
    exit(1);
}

/* One call of the operation; exits on failure. */
static void call_once(long i)
{
    if (op[0] == 'w') {
        ssize_t n = write(fd, "x", 1);
        if (n != 1)
            fail("write", i);
    } else if (op[0] == 'p') {
        ssize_t n = pread(fd, buf, PREAD_SIZE, 0);
        if (n != PREAD_SIZE) {
            if (n >= 0)
                errno = EIO;   /* short read: the file must hold at least 4 KiB */
            fail("pread", i);
        }
    } else {
        struct stat st;
        if (fstat(fd, &st) != 0)
            fail("fstat", i);
        if (!S_ISREG(st.st_mode)) {
            errno = EINVAL;
            fail("fstat (not a regular file)", i);
        }
    }
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_loop write|pread|fstat ITERATIONS [FILE]\n");
        return 2;
    }
    op = argv[1];
    long iterations = strtol(argv[2], NULL, 10);
    if (iterations < 1) {
        fprintf(stderr, "bench_loop: ITERATIONS must be at least 1\n");
        return 2;
    }

    if (strcmp(op, "write") == 0) {
        fd = open("/dev/null", O_WRONLY);
    } else if (strcmp(op, "pread") == 0 || strcmp(op, "fstat") == 0) {
        if (argc < 4) {
            fprintf(stderr, "bench_loop: %s needs a FILE\n", op);
            return 2;
        }
        fd = open(argv[3], O_RDONLY);
    } else {
        fprintf(stderr, "bench_loop: unknown op %s (write, pread or fstat)\n", op);
        return 2;
    }
    if (fd < 0)
        fail("open", 0);

    long warmup = iterations / 10;
    if (warmup < 1)
        warmup = 1;
    if (warmup > 10000)
        warmup = 10000;
    for (long i = 0; i < warmup; i++)
        call_once(i);

    double start = now_ns();
    for (long i = 0; i < iterations; i++)
        call_once(i);
    double elapsed = now_ns() - start;

    if (close(fd) != 0)
        fail("close", 0);
    printf("%.1f\n", elapsed / (double)iterations);
    return 0;
}

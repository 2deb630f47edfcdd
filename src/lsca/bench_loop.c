/* The timed loop of `lsca bench` (shipped with the lsca package, compiled at run
 * time with cc into a temporary directory).
 *
 *   bench_loop time OP FILE ITERATIONS MAX_MS
 *       Warm-up, then ITERATIONS timed calls, or fewer if MAX_MS milliseconds pass
 *       first. Prints on stdout:  NS_PER_CALL TIMED_CALLS WARMUP_CALLS
 *
 *   bench_loop throughput OP FILE MS
 *       Warm-up, then prints "ready PID" and waits for SIGUSR1 (so that several
 *       clients start their timed part together), then calls OP for MS
 *       milliseconds. Prints:  TIMED_CALLS START_NS END_NS WARMUP_CALLS
 *       (CLOCK_MONOTONIC, comparable between processes).
 *
 *   bench_loop idle FILE
 *       One fstat(2) of FILE (so that the agent has registered and served a
 *       call), prints "ready PID", then waits for SIGUSR1 and exits 0.
 *
 * OP is one of
 *   write    write(2) of 1 byte to /dev/null
 *   pread    pread(2) of 4 KiB at offset 0 from FILE (a cached regular file)
 *   fstat    fstat(2) of FILE, opened read-only
 *   openat   openat(2) of FILE read-only, then close(2): one pair is one call
 *   stat     stat(2) of FILE
 *
 * Every call's result is checked; the program exits 1 at the first failure.
 * The calls go through the ordinary (dynamically linked) libc functions, not
 * syscall(2), so that an LD_PRELOAD agent can interpose them. The clock is read
 * every CLOCK_EVERY calls only (clock_gettime is a vDSO call, never proxied).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PREAD_SIZE 4096
#define CLOCK_EVERY 16
#define WARMUP_MAX 10000L

enum op { OP_WRITE, OP_PREAD, OP_FSTAT, OP_OPENAT, OP_STAT };

static enum op op;
static const char *file;
static int fd = -1;
static char buf[PREAD_SIZE];

static void fail(const char *what, long i)
{
    fprintf(stderr, "bench_loop: %s failed at call %ld: %s\n", what, i, strerror(errno));
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_loop time OP FILE ITERATIONS MAX_MS\n"
            "       bench_loop throughput OP FILE MS\n"
            "       bench_loop idle FILE\n"
            "OP: write pread fstat openat stat\n");
    exit(2);
}

/* One call of the operation; exits on failure. */
static void call_once(long i)
{
    struct stat st;
    ssize_t n;
    int f;

    switch (op) {
    case OP_WRITE:
        if (write(fd, "x", 1) != 1)
            fail("write", i);
        break;
    case OP_PREAD:
        n = pread(fd, buf, PREAD_SIZE, 0);
        if (n != PREAD_SIZE) {
            if (n >= 0)
                errno = EIO;   /* short read: the file must hold at least 4 KiB */
            fail("pread", i);
        }
        break;
    case OP_FSTAT:
        if (fstat(fd, &st) != 0)
            fail("fstat", i);
        if (!S_ISREG(st.st_mode)) {
            errno = EINVAL;
            fail("fstat (not a regular file)", i);
        }
        break;
    case OP_OPENAT:
        f = openat(AT_FDCWD, file, O_RDONLY | O_CLOEXEC);
        if (f < 0)
            fail("openat", i);
        if (close(f) != 0)
            fail("close", i);
        break;
    case OP_STAT:
        if (stat(file, &st) != 0)
            fail("stat", i);
        if (!S_ISREG(st.st_mode)) {
            errno = EINVAL;
            fail("stat (not a regular file)", i);
        }
        break;
    }
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void setup(const char *name, const char *path)
{
    file = path;
    if (strcmp(name, "write") == 0)
        op = OP_WRITE;
    else if (strcmp(name, "pread") == 0)
        op = OP_PREAD;
    else if (strcmp(name, "fstat") == 0)
        op = OP_FSTAT;
    else if (strcmp(name, "openat") == 0)
        op = OP_OPENAT;
    else if (strcmp(name, "stat") == 0)
        op = OP_STAT;
    else {
        fprintf(stderr, "bench_loop: unknown op %s\n", name);
        usage();
    }
    if (op == OP_WRITE)
        fd = open("/dev/null", O_WRONLY);
    else if (op == OP_PREAD || op == OP_FSTAT)
        fd = open(file, O_RDONLY);
    else
        return;
    if (fd < 0)
        fail("open", 0);
}

/* Up to max_calls calls or until limit_ns has passed; returns the number made. */
static long run_for(long max_calls, double limit_ns, double *elapsed)
{
    double start = now_ns(), t = start;
    long i = 0;
    while (i < max_calls) {
        call_once(i);
        i++;
        if ((i & (CLOCK_EVERY - 1)) == 0) {
            t = now_ns();
            if (t - start >= limit_ns)
                break;
        }
    }
    if (elapsed)
        *elapsed = now_ns() - start;
    return i;
}

static long warm_up(long max_calls, double limit_ns)
{
    if (max_calls > WARMUP_MAX)
        max_calls = WARMUP_MAX;
    if (max_calls < 1)
        max_calls = 1;
    return run_for(max_calls, limit_ns, NULL);
}

static long parse_positive(const char *text, const char *what)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 1) {
        fprintf(stderr, "bench_loop: %s must be a whole number of at least 1: %s\n", what, text);
        exit(2);
    }
    return v;
}

static void wait_for_usr1(void)
{
    sigset_t set;
    int sig;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    if (sigwait(&set, &sig) != 0)
        fail("sigwait", 0);
}

static void block_usr1(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const char *mode = argv[1];

    if (strcmp(mode, "time") == 0) {
        if (argc != 6)
            usage();
        setup(argv[2], argv[3]);
        long iterations = parse_positive(argv[4], "ITERATIONS");
        double limit_ns = (double)parse_positive(argv[5], "MAX_MS") * 1e6;
        long warmup = warm_up(iterations / 10, limit_ns / 4);
        double elapsed;
        long calls = run_for(iterations, limit_ns, &elapsed);
        if (fd >= 0 && close(fd) != 0)
            fail("close", 0);
        printf("%.1f %ld %ld\n", elapsed / (double)calls, calls, warmup);
        return 0;
    }
    if (strcmp(mode, "throughput") == 0) {
        if (argc != 5)
            usage();
        block_usr1();
        setup(argv[2], argv[3]);
        double limit_ns = (double)parse_positive(argv[4], "MS") * 1e6;
        long warmup = warm_up(WARMUP_MAX, 50e6);
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        wait_for_usr1();
        double start = now_ns();
        long calls = run_for(0x7fffffffffffffffL, limit_ns, NULL);
        double end = now_ns();
        printf("%ld %.0f %.0f %ld\n", calls, start, end, warmup);
        return 0;
    }
    if (strcmp(mode, "idle") == 0) {
        if (argc != 3)
            usage();
        block_usr1();
        struct stat st;
        int f = open(argv[2], O_RDONLY);
        if (f < 0)
            fail("open", 0);
        if (fstat(f, &st) != 0)
            fail("fstat", 0);
        close(f);
        printf("ready %d\n", (int)getpid());
        fflush(stdout);
        wait_for_usr1();
        return 0;
    }
    usage();
    return 2;
}

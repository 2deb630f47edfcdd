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
 *   bench_loop spin
 *       A CPU hog of the busy section: spins until killed.
 *
 *   bench_loop wall CMD [ARGS...]
 *       Runs CMD (fork + execvp), waits for it and prints on stdout one line
 *       "lsca-bench-wall NS STATUS" (its wall time, its wait status); exits 0 when CMD
 *       exited 0, else 1. The line is written with a raw system call, so the
 *       wrapper itself makes no proxied call: under `lsca run` every proxied call
 *       counted is the workload's.
 *
 * OP is one of
 *   write    write(2) of 1 byte to /dev/null
 *   pread    pread(2) of 4 KiB at offset 0 from FILE (a cached regular file)
 *   fstat    fstat(2) of FILE, opened read-only
 *   openat   openat(2) of FILE read-only, then close(2): one pair is one call
 *   stat     stat(2) of FILE
 *   fork     fork(2), the child _exit(0)s, the parent waitpid(2)s it
 *   spawn    posix_spawn(3) of /bin/true, then waitpid(2)
 *   exec     the program execs itself (UnixBench "Execl Throughput"): one exec is
 *            one call, timed from the first exec to the start of the last image
 *            (the images pass the counts on in argv: bench_loop exec-chain ...)
 *   dup      dup(2) of a descriptor of FILE, then close(2) of the copy
 *   copy     read(2) 1 KiB from FILE, write(2) it to FILE.copy (UnixBench fstime
 *            style: both are rewound with lseek(2) when FILE's end is reached)
 *   pipe     write(2) 512 bytes into a pipe and read(2) them back (UnixBench
 *            "Pipe Throughput")
 *   pingpong an int goes to a child through one pipe and comes back incremented
 *            through another (UnixBench "Pipe-based Context Switching"): one round
 *            trip is one call
 * fork, spawn and exec stat(2) FILE once before the warm-up (exec: and once more in
 * the last image), so that an `lsca run` has proxied calls to count.
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
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PREAD_SIZE 4096
#define CLOCK_EVERY 16
#define WARMUP_MAX 10000L
#define COPY_BLOCK 1024
#define PIPE_BLOCK 512
#define SPAWN_PROGRAM "/bin/true"

enum op { OP_WRITE, OP_PREAD, OP_FSTAT, OP_OPENAT, OP_STAT, OP_FORK, OP_SPAWN, OP_EXEC, OP_DUP, OP_COPY,
          OP_PIPE, OP_PINGPONG };

static const char *const op_names[] = {"write", "pread", "fstat", "openat", "stat", "fork", "spawn", "exec",
                                       "dup", "copy", "pipe", "pingpong"};

extern char **environ;

static enum op op;
static const char *file;
static int fd = -1;
static int fd2 = -1;                /* copy: the destination */
static int pipe_a[2] = {-1, -1};    /* pipe: the pipe; pingpong: parent -> child */
static int pipe_b[2] = {-1, -1};    /* pingpong: child -> parent */
static pid_t partner = -1;          /* pingpong: the child */
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
            "       bench_loop spin\n"
            "       bench_loop wall CMD [ARGS...]\n"
            "OP: write pread fstat openat stat fork spawn exec dup copy pipe pingpong\n");
    exit(2);
}

/* One call of the operation; exits on failure. */
static void call_once(long i)
{
    struct stat st;
    ssize_t n;
    int f, status;
    pid_t pid;
    char *spawn_argv[] = {SPAWN_PROGRAM, NULL};

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
    case OP_FORK:
        pid = fork();
        if (pid < 0)
            fail("fork", i);
        if (pid == 0)
            _exit(0);
        if (waitpid(pid, &status, 0) != pid)
            fail("waitpid", i);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            errno = ECHILD;
            fail("fork (the child did not exit 0)", i);
        }
        break;
    case OP_SPAWN:
        errno = posix_spawn(&pid, SPAWN_PROGRAM, NULL, NULL, spawn_argv, environ);
        if (errno != 0)
            fail("posix_spawn", i);
        if (waitpid(pid, &status, 0) != pid)
            fail("waitpid", i);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_loop: %s exited with wait status %d\n", SPAWN_PROGRAM, status);
            exit(1);
        }
        break;
    case OP_EXEC:
        break;   /* run by exec_chain(), never one call at a time */
    case OP_DUP:
        f = dup(fd);
        if (f < 0)
            fail("dup", i);
        if (close(f) != 0)
            fail("close", i);
        break;
    case OP_COPY:
        n = read(fd, buf, COPY_BLOCK);
        if (n == 0) {   /* the end of FILE: both files start over */
            if (lseek(fd, 0, SEEK_SET) != 0 || lseek(fd2, 0, SEEK_SET) != 0)
                fail("lseek", i);
            n = read(fd, buf, COPY_BLOCK);
        }
        if (n != COPY_BLOCK) {
            if (n >= 0)
                errno = EIO;   /* FILE's size is a multiple of 1 KiB */
            fail("read", i);
        }
        if (write(fd2, buf, COPY_BLOCK) != COPY_BLOCK)
            fail("write", i);
        break;
    case OP_PIPE:
        if (write(pipe_a[1], buf, PIPE_BLOCK) != PIPE_BLOCK)
            fail("write", i);
        if (read(pipe_a[0], buf, PIPE_BLOCK) != PIPE_BLOCK)
            fail("read", i);
        break;
    case OP_PINGPONG: {
        long sent = i, got = -1;
        if (write(pipe_a[1], &sent, sizeof sent) != sizeof sent)
            fail("write", i);
        if (read(pipe_b[0], &got, sizeof got) != sizeof got)
            fail("read", i);
        if (got != sent + 1) {
            errno = EPROTO;
            fail("pingpong (a wrong answer)", i);
        }
        break;
    }
    }
}

/* pingpong: the child answers every long with the long plus one until EOF. */
static void pingpong_child(void)
{
    long v;
    ssize_t n;

    close(pipe_a[1]);
    close(pipe_b[0]);
    while ((n = read(pipe_a[0], &v, sizeof v)) == sizeof v) {
        v++;
        if (write(pipe_b[1], &v, sizeof v) != sizeof v)
            _exit(1);
    }
    _exit(n == 0 ? 0 : 1);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void setup(const char *name, const char *path)
{
    struct stat st;
    char copy_path[4096];
    size_t k;

    file = path;
    for (k = 0; k < sizeof op_names / sizeof op_names[0]; k++)
        if (strcmp(name, op_names[k]) == 0)
            break;
    if (k == sizeof op_names / sizeof op_names[0]) {
        fprintf(stderr, "bench_loop: unknown op %s\n", name);
        usage();
    }
    op = (enum op)k;
    switch (op) {
    case OP_WRITE:
        fd = open("/dev/null", O_WRONLY);
        break;
    case OP_PREAD:
    case OP_FSTAT:
    case OP_DUP:
        fd = open(file, O_RDONLY);
        break;
    case OP_FORK:
    case OP_SPAWN:
    case OP_EXEC:
        if (stat(file, &st) != 0)   /* the one proxied call an lsca run can count */
            fail("stat", 0);
        return;
    case OP_COPY:
        fd = open(file, O_RDONLY);
        if (fd < 0)
            fail("open", 0);
        snprintf(copy_path, sizeof copy_path, "%s.copy", file);
        fd2 = open(copy_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd2 < 0)
            fail("open (the copy)", 0);
        return;
    case OP_PIPE:
        if (pipe(pipe_a) != 0)
            fail("pipe", 0);
        return;
    case OP_PINGPONG:
        if (pipe(pipe_a) != 0 || pipe(pipe_b) != 0)
            fail("pipe", 0);
        partner = fork();
        if (partner < 0)
            fail("fork", 0);
        if (partner == 0)
            pingpong_child();
        close(pipe_a[0]);
        close(pipe_b[1]);
        return;
    default:
        return;
    }
    if (fd < 0)
        fail("open", 0);
}

/* After the timed part: every descriptor closed, the pingpong child reaped. */
static void teardown(void)
{
    int status;

    if (fd >= 0 && close(fd) != 0)
        fail("close", 0);
    if (fd2 >= 0 && close(fd2) != 0)
        fail("close", 0);
    if (op == OP_PIPE) {
        close(pipe_a[0]);
        close(pipe_a[1]);
    }
    if (op == OP_PINGPONG) {
        close(pipe_a[1]);   /* the child reads EOF and exits */
        close(pipe_b[0]);
        if (waitpid(partner, &status, 0) != partner)
            fail("waitpid", 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "bench_loop: the pingpong child ended with wait status %d\n", status);
            exit(1);
        }
    }
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

static long parse_count(const char *text, const char *what)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < 0) {
        fprintf(stderr, "bench_loop: %s must be a whole number of at least 0: %s\n", what, text);
        exit(2);
    }
    return v;
}

/* ---- exec: the images pass the state of the run on in argv ----
 * bench_loop exec-chain FILE ITERATIONS MAX_MS WARMUP_MAX PHASE COUNT WARMUP START_NS
 * PHASE w: COUNT warm-up execs made so far (at most WARMUP_MAX, at most MAX_MS/4 ms);
 * PHASE t: COUNT timed execs made since START_NS, WARMUP warm-up execs before them. */

static void exec_next(char *self, char *path, long iterations, long max_ms, long warmup_max, char phase,
                      long count, long warmup, double start)
{
    char its[24], ms[24], wmax[24], ph[2] = {phase, '\0'}, cnt[24], wm[24], st[32];
    snprintf(its, sizeof its, "%ld", iterations);
    snprintf(ms, sizeof ms, "%ld", max_ms);
    snprintf(wmax, sizeof wmax, "%ld", warmup_max);
    snprintf(cnt, sizeof cnt, "%ld", count);
    snprintf(wm, sizeof wm, "%ld", warmup);
    snprintf(st, sizeof st, "%.0f", start);
    char *argv[] = {self, "exec-chain", path, its, ms, wmax, ph, cnt, wm, st, NULL};
    execv("/proc/self/exe", argv);
    fail("execv", count);
}

static int exec_chain(char **argv)
{
    double now = now_ns();
    long iterations = parse_positive(argv[3], "ITERATIONS");
    long max_ms = parse_positive(argv[4], "MAX_MS");
    long warmup_max = parse_positive(argv[5], "WARMUP_MAX");
    char phase = argv[6][0];
    long count = parse_count(argv[7], "COUNT");
    long warmup = parse_count(argv[8], "WARMUP");
    double start = strtod(argv[9], NULL), limit_ns = (double)max_ms * 1e6;

    if (phase == 'w') {
        if (count < warmup_max && now - start < limit_ns / 4)
            exec_next(argv[0], argv[2], iterations, max_ms, warmup_max, 'w', count + 1, 0, start);
        warmup = count;      /* the warm-up is over: the timed part starts now */
        count = 0;
        start = now;
    }
    if (count >= iterations || (count > 0 && now - start >= limit_ns)) {
        struct stat st;
        if (stat(argv[2], &st) != 0)   /* the last image's proxied call */
            fail("stat", count);
        printf("%.1f %ld %ld\n", (now - start) / (double)count, count, warmup);
        return 0;
    }
    exec_next(argv[0], argv[2], iterations, max_ms, warmup_max, 't', count + 1, warmup, start);
    return 1;
}

/* ---- wall: a workload's wall time, reported without a proxied call ---- */

static long raw_write(int f, const void *p, size_t n)
{
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"((long)SYS_write), "D"((long)f), "S"(p), "d"(n)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = SYS_write;
    register long x0 __asm__("x0") = f;
    register long x1 __asm__("x1") = (long)p;
    register long x2 __asm__("x2") = (long)n;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
#else
    return write(f, p, n);   /* elsewhere: one proxied write of the wrapper's own */
#endif
}

static int wall(char **command)
{
    char line[96];
    int status, len;
    double start = now_ns();
    pid_t pid = fork();

    if (pid < 0)
        fail("fork", 0);
    if (pid == 0) {
        execvp(command[0], command);
        fprintf(stderr, "bench_loop: cannot run %s: %s\n", command[0], strerror(errno));
        _exit(127);
    }
    if (waitpid(pid, &status, 0) != pid)
        fail("waitpid", 0);
    len = snprintf(line, sizeof line, "lsca-bench-wall %.0f %d\n", now_ns() - start, status);
    if (raw_write(1, line, (size_t)len) != len)
        return 2;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
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
        if (op == OP_EXEC) {
            long warmup_max = iterations / 10 > WARMUP_MAX ? WARMUP_MAX : iterations / 10;
            exec_next(argv[0], argv[3], iterations, parse_positive(argv[5], "MAX_MS"),
                      warmup_max < 1 ? 1 : warmup_max, 'w', 0, 0, now_ns());
        }
        long warmup = warm_up(iterations / 10, limit_ns / 4);
        double elapsed;
        long calls = run_for(iterations, limit_ns, &elapsed);
        teardown();
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
    if (strcmp(mode, "exec-chain") == 0) {
        if (argc != 10)
            usage();
        return exec_chain(argv);
    }
    if (strcmp(mode, "spin") == 0) {
        volatile unsigned long spins = 0;
        for (;;)
            spins++;
    }
    if (strcmp(mode, "wall") == 0) {
        if (argc < 3)
            usage();
        return wall(argv + 2);
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

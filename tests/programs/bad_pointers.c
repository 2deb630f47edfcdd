/* Calls with pointers the kernel cannot follow: unmapped, PROT_NONE, read-only, (void *)-1,
 * buffers and strings that run off the end of a mapping. Prints one line per case (result,
 * errno, and what the call left behind: file size and offset, bytes left in a pipe), then
 * "good: ..." lines from calls with valid memory that must reach a worker.
 *
 *   bad_pointers [handler]    with "handler", a SIGSEGV/SIGBUS handler that returns is
 *                             installed (a fault in the agent would then repeat forever:
 *                             alarm(20) ends that); the count of faults is printed last.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE 4096
static volatile sig_atomic_t faults;
static char *none, *edge, *ro;       /* PROT_NONE page; last RW page before a PROT_NONE one; read-only page */
static const char *dir;

static void on_fault(int sig)
{
    (void)sig;
    faults++;
}

static void report(const char *name, long r, int err)
{
    printf("%-22s r=%ld errno=%d\n", name, r, r < 0 ? err : 0);
    fflush(stdout);
}

#define CASE(name, expr)                 \
    do {                                 \
        errno = 0;                       \
        long r_ = (long)(expr);          \
        report(name, r_, errno);         \
    } while (0)

static int scratch_file(const char *name, const char *content)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (content && write(fd, content, strlen(content)) < 0)
        exit(3);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static void file_state(const char *name, int fd)
{
    struct stat st;
    fstat(fd, &st);
    printf("%-22s size=%ld offset=%ld\n", name, (long)st.st_size, (long)lseek(fd, 0, SEEK_CUR));
}

static void pipe_left(const char *name, int fd)
{
    char buf[1024];
    long n = read(fd, buf, sizeof(buf));
    printf("%-22s left=%ld\n", name, n);
}

int main(int argc, char **argv)
{
    char *map;
    int fd, p[2], sv[2];
    struct stat st;
    char buf[256];

    dir = getenv("TMPDIR") ? getenv("TMPDIR") : ".";
    if (argc > 1 && strcmp(argv[1], "handler") == 0) {
        signal(SIGSEGV, on_fault);
        signal(SIGBUS, on_fault);
        alarm(20);
    }
    map = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(map, 'a', 4 * PAGE);
    mprotect(map + PAGE, PAGE, PROT_NONE);
    mprotect(map + 3 * PAGE, PAGE, PROT_READ);
    edge = map;                      /* edge + PAGE is PROT_NONE */
    none = map + PAGE;
    ro = map + 3 * PAGE;

    /* write, pwrite, writev: EFAULT, or the bytes up to the fault */
    fd = scratch_file("w", NULL);
    CASE("write none", write(fd, none, 10));
    CASE("write -1", write(fd, (void *)-1, 10));
    CASE("write edge", write(fd, edge + PAGE - 100, 300));
    file_state("  after", fd);
    CASE("pwrite edge", pwrite(fd, edge + PAGE - 50, 300, 1000));
    file_state("  after", fd);
    CASE("write big edge", write(fd, edge + PAGE - 70000 + 2 * PAGE, 70000));
    struct iovec wv[2] = { { "hello", 5 }, { none, 10 } };
    CASE("writev bad base", writev(fd, wv, 2));
    CASE("writev bad array", writev(fd, (struct iovec *)none, 2));
    CASE("writev -1 array", writev(fd, (struct iovec *)-1, 1));
    file_state("  after", fd);
    close(fd);
    pipe(p);
    CASE("write pipe edge", write(p[1], edge + PAGE - 10, 100));
    close(p[1]);
    pipe_left("  pipe", p[0]);
    close(p[0]);

    /* read, pread, readv: EFAULT or a partial count; unread data stays */
    fd = scratch_file("r", "0123456789abcdefghijklmnopqrstuvwxyz");
    CASE("read none", read(fd, none, 10));
    CASE("read ro", read(fd, ro, 10));
    CASE("read -1", read(fd, (void *)-1, 10));
    file_state("  after", fd);
    CASE("read edge", read(fd, edge + PAGE - 5, 20));
    file_state("  after", fd);
    CASE("pread edge", pread(fd, edge + PAGE - 7, 20, 0));
    struct iovec rv[2] = { { buf, 3 }, { none, 10 } };
    CASE("readv bad base", readv(fd, rv, 2));
    CASE("readv bad array", readv(fd, (struct iovec *)none, 1));
    file_state("  after", fd);
    close(fd);
    pipe(p);
    write(p[1], "pipe data 0123456789", 20);
    CASE("read pipe none", read(p[0], none, 20));
    CASE("read pipe edge", read(p[0], edge + PAGE - 4, 20));
    close(p[1]);
    pipe_left("  pipe", p[0]);
    close(p[0]);

    /* paths and out-structs */
    char *tail = edge + PAGE - 4;
    memcpy(tail, "/tmp", 4);         /* no NUL before the PROT_NONE page */
    CASE("stat path none", stat(none, &st));
    CASE("stat path -1", stat((char *)-1, &st));
    CASE("stat path edge", stat(tail, &st));
    CASE("stat buf none", stat("/", (struct stat *)none));
    CASE("stat buf ro", stat("/", (struct stat *)ro));
    CASE("stat buf edge", stat("/", (struct stat *)(edge + PAGE - 16)));
    CASE("lstat buf -1", lstat("/", (struct stat *)-1));
    CASE("fstat buf none", fstat(1, (struct stat *)none));
    CASE("statx buf ro", statx(AT_FDCWD, "/", 0, STATX_BASIC_STATS, (struct statx *)ro));
    CASE("access path edge", access(tail, F_OK));
    CASE("mkdir path none", mkdir(none, 0755));
    CASE("rename path edge", rename("/nonexistent-x", tail));
    CASE("open path none", open(none, O_RDONLY));
    CASE("open path edge", open(tail, O_RDONLY));
    CASE("readlink buf none", readlink("/proc/self/exe", none, 100));
    CASE("readlink buf ro", readlink("/proc/self/exe", ro, 100));
    CASE("readlink path -1", readlink((char *)-1, buf, 100));
    CASE("getcwd buf none", getcwd(none, 100) ? 0 : -1);
    CASE("getcwd buf ro", getcwd(ro, 100) ? 0 : -1);
    CASE("utimensat times none", utimensat(AT_FDCWD, "/nonexistent-y", (struct timespec *)none, 0));
    CASE("pipe fds none", pipe((int *)none));
    CASE("pipe fds ro", pipe((int *)ro));

    /* sockets */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    CASE("send buf none", send(sv[0], none, 10, 0));
    CASE("send buf edge", send(sv[0], edge + PAGE - 3, 10, 0));
    send(sv[0], "socket data", 11, 0);
    CASE("recv buf none", recv(sv[1], none, 10, 0));
    CASE("recv buf ro", recv(sv[1], ro, 10, 0));
    socklen_t alen = sizeof(struct sockaddr_un);
    CASE("recvfrom alen none", recvfrom(sv[1], buf, 2, 0, (struct sockaddr *)buf + 64, (socklen_t *)none));
    CASE("recvfrom addr ro", recvfrom(sv[1], buf, 2, 0, (struct sockaddr *)ro, &alen));
    CASE("sendmsg hdr none", sendmsg(sv[0], (struct msghdr *)none, 0));
    struct msghdr mh = { .msg_iov = (struct iovec *)none, .msg_iovlen = 1 };
    CASE("sendmsg iov none", sendmsg(sv[0], &mh, 0));
    CASE("recvmsg iov none", recvmsg(sv[1], &mh, 0));
    CASE("recvmsg hdr ro", recvmsg(sv[1], (struct msghdr *)ro, 0));
    struct iovec one = { none, 5 };
    mh.msg_iov = &one;
    CASE("recvmsg base none", recvmsg(sv[1], &mh, 0));
    pipe_left("  socket", sv[1]);
    int ds = socket(AF_UNIX, SOCK_DGRAM, 0);
    CASE("sendto addr none", sendto(ds, "x", 1, 0, (struct sockaddr *)none, sizeof(struct sockaddr_un)));
    CASE("connect addr none", connect(ds, (struct sockaddr *)none, sizeof(struct sockaddr_un)));

    /* the same calls with good memory go to a worker */
    fd = scratch_file("g", "good");
    CASE("good: read", read(fd, buf, sizeof(buf)));
    char *heap = malloc(100000);
    CASE("good: pread heap", pread(fd, heap, 100000, 0));
    CASE("good: write", write(fd, "x", 1));
    CASE("good: write map", write(fd, edge, 100));
    CASE("good: write ro", write(fd, ro, 100));
    CASE("good: stat", stat("/", &st));
    CASE("good: stat argv", stat(argv[0], &st));
    close(fd);
    printf("faults %d\n", (int)faults);
    return 0;
}

/*
 * hostile.c - the hostile local user of tests/test_hostile.py (it runs as nobody).
 *
 * It speaks the agent's side of LSCA by hand: the hello on the supervisor's socket and the
 * slot protocol of lsca_slots.h on a shard it attached, with the ABI of agent_lib/include
 * (compiled with agent_lib/src/slots.c). Each mode prints one JSON object per line on
 * stdout; nothing it prints comes from its arguments.
 *
 *   hostile connect-exec SOCKET SUID VICTIM
 *       Connect to the supervisor, fork a helper, exec the set-uid program SUID (which
 *       opens VICTIM as its fd 3). The helper sends the hello naming the now set-uid
 *       process on the inherited connection, attaches the shard it gets and submits calls
 *       naming that process's thread (see drive_calls). It then waits for EOF on stdin.
 *   hostile exec-registered SUID VICTIM                         (run under the agent)
 *       A registered program: starts a helper (`drive`, without the agent) on its own
 *       shard, then execs SUID (LD_PRELOAD is dropped for a set-uid image).
 *   hostile registered-wait                                     (run under the agent)
 *       Print the shard's id, then wait for EOF on stdin.
 *   hostile drive SHMID TID VICTIM READYFD HOLDFD
 *       Attach shard SHMID, wait for a byte on READYFD (-1: no wait), submit the calls
 *       naming thread TID, keep HOLDFD open until EOF on stdin.
 *   hostile shmat SHMID...
 *       Try to attach each segment (read-only).
 *   hostile fifo-race SOCKET DIR SECONDS
 *       Register (its own hello), then in DIR have a child swap a regular file and a FIFO
 *       under one name (renameat2 RENAME_EXCHANGE) while it asks the worker to open that
 *       name, again and again: an open that lands on the FIFO waits for a writer that never
 *       comes. Reports {"stuck": true} as soon as an open is not answered within 2 s (and
 *       keeps it so until EOF on stdin), or {"stuck": false} after SECONDS.
 *   hostile nonblock-race SECONDS                               (run under the agent)
 *       read(2) of one byte, again and again, from an empty pipe whose O_NONBLOCK a child
 *       flips natively (raw fcntl) all the while: a worker that looks at the flag, then
 *       reads, may read a pipe that is blocking by then and wait for a writer that never
 *       comes. Reports {"reads": N} after SECONDS (a read the pool waits on, as the program
 *       would natively, keeps it there: the test ends it).
 *   hostile fake-supervisor SOCKET
 *       Listen on SOCKET (mode 0777) like a supervisor: welcome every hello with a shard of
 *       its own (IPC_PRIVATE, 0666), log every call submitted there with the first bytes
 *       of its data, answer each PASSTHROUGH. Stops at EOF on stdin, removing its segments.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lsca_abi.h"
#include "lsca_slots.h"

#define ANSWER_TIMEOUT_S 5.0
#define SHOWN 256                       /* bytes of data shown as hex */

static void emit(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void nap_us(long us)
{
    struct timespec ts = { .tv_sec = 0, .tv_nsec = us * 1000L };
    nanosleep(&ts, NULL);
}

static char *hex(const uint8_t *p, size_t n)
{
    static char out[2 * SHOWN + 1];
    size_t i;
    if (n > SHOWN)
        n = SHOWN;
    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
    return out;
}

static void wait_stdin_eof(void)
{
    char buf[256];
    while (read(0, buf, sizeof(buf)) > 0)
        ;
}

/* One byte on fd within timeout_ms: 1, else 0. */
static int wait_byte(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char byte;
    if (poll(&p, 1, timeout_ms) != 1)
        return 0;
    return read(fd, &byte, 1) == 1;
}

/* ---- the slot protocol, as the agent speaks it ---- */

/* A free slot, claimed for thread tid (owner_tid names the thread the call is made by). */
static int take_slot(void *shard, int32_t tid)
{
    unsigned i;
    for (i = 0; i < LSCA_SLOTS; i++) {
        struct lsca_slot *s = lsca_shard_slot(shard, i);
        int32_t expected = 0;
        if (__atomic_compare_exchange_n(&s->owner_tid, &expected, tid, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
            return (int)i;
    }
    return -1;
}

/* Submit op on a fresh slot of thread tid and wait for the answer: "done", "passthrough",
 * "dead" (the shard says nobody answers), "noanswer" (nothing within the timeout) or
 * "noslot". *out: the slot. */
static const char *call(void *shard, int32_t tid, uint32_t op, const uint64_t *args, const void *data,
                        uint32_t len, struct lsca_slot **out)
{
    struct lsca_shard_header *h = shard;
    int i = take_slot(shard, tid);
    struct lsca_slot *s;
    double deadline;

    *out = NULL;
    if (i < 0)
        return "noslot";
    s = lsca_shard_slot(shard, (unsigned)i);
    *out = s;
    __atomic_store_n(&s->state, LSCA_SLOT_FREE, __ATOMIC_RELEASE);
    s->client_sleeping = 0;
    s->op = op;
    s->xfer = LSCA_XFER_INLINE;
    s->status = 0;
    s->err = 0;
    s->result = 0;
    s->remote_addr = 0;
    memcpy(s->args, args, sizeof(s->args));
    s->new_fds[0] = s->new_fds[1] = -1;
    s->data_len = len;
    if (len)
        memcpy(s->data, data, len);
    s->seq = __atomic_fetch_add(&h->next_seq, 1, __ATOMIC_RELAXED);
    lsca_slot_submit(shard, (unsigned)i);
    deadline = mono() + ANSWER_TIMEOUT_S;
    for (;;) {
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) == LSCA_SLOT_DONE)
            return s->status == LSCA_STATUS_PASSTHROUGH ? "passthrough" : "done";
        if (__atomic_load_n(&h->dead, __ATOMIC_ACQUIRE))
            return "dead";
        if (mono() > deadline)
            return "noanswer";
        nap_us(200);
    }
}

/* A descriptor a worker sent on the channel (for an open it answered), within 2 s; -1: none. */
static int take_fd(int chan)
{
    union { struct cmsghdr align; char buf[CMSG_SPACE(2 * sizeof(int))]; } control;
    uint64_t seq;
    struct iovec iov = { .iov_base = &seq, .iov_len = sizeof(seq) };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                          .msg_controllen = sizeof(control.buf) };
    struct pollfd p = { .fd = chan, .events = POLLIN };
    struct cmsghdr *cm;
    int fd = -1;

    if (chan < 0 || poll(&p, 1, 2000) != 1 || recvmsg(chan, &msg, MSG_CMSG_CLOEXEC) < 0)
        return -1;
    for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
        if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    return fd;
}

static void report(const char *name, const char *answer, struct lsca_slot *s, const char *extra)
{
    if (!s) {
        emit("{\"call\": \"%s\", \"answer\": \"%s\"}", name, answer);
        return;
    }
    emit("{\"call\": \"%s\", \"answer\": \"%s\", \"result\": %lld, \"err\": %d%s}", name, answer,
         (long long)s->result, s->err, extra ? extra : "");
}

/* What the attack asks a root worker to do in the name of thread tid: read the set-uid
 * process's fd 3 (a root-only file), open the victim, chown and chmod it. */
static void drive_calls(void *shard, int chan, int32_t tid, const char *victim)
{
    uint64_t args[LSCA_MAX_ARGS];
    struct lsca_slot *s;
    const char *answer;
    char extra[2 * SHOWN + 64];
    uint32_t plen = (uint32_t)strlen(victim) + 1;

    memset(args, 0, sizeof(args));
    args[0] = 3;
    args[1] = 4096;
    answer = call(shard, tid, LSCA_OP_READ, args, NULL, 0, &s);
    extra[0] = '\0';
    if (s && strcmp(answer, "done") == 0 && s->result > 0 && s->result <= LSCA_INLINE_MAX)
        snprintf(extra, sizeof(extra), ", \"data\": \"%s\"", hex(s->data, (size_t)s->result));
    report("read3", answer, s, extra);

    memset(args, 0, sizeof(args));
    args[0] = (uint64_t)(int64_t)AT_FDCWD;
    args[1] = O_RDONLY;
    answer = call(shard, tid, LSCA_OP_OPENAT, args, victim, plen, &s);
    extra[0] = '\0';
    if (s && strcmp(answer, "done") == 0 && s->result >= 0) {
        int fd = take_fd(chan);
        uint8_t buf[SHOWN];
        ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf)) : -1;
        snprintf(extra, sizeof(extra), ", \"fd_received\": %s, \"data\": \"%s\"", fd >= 0 ? "true" : "false",
                 n > 0 ? hex(buf, (size_t)n) : "");
        if (fd >= 0)
            close(fd);
    }
    report("open", answer, s, extra);

    memset(args, 0, sizeof(args));
    args[0] = (uint64_t)(int64_t)AT_FDCWD;
    args[1] = 65534;
    args[2] = 65534;
    answer = call(shard, tid, LSCA_OP_FCHOWNAT, args, victim, plen, &s);
    report("chown", answer, s, NULL);

    memset(args, 0, sizeof(args));
    args[0] = (uint64_t)(int64_t)AT_FDCWD;
    args[1] = 0777;
    answer = call(shard, tid, LSCA_OP_FCHMODAT, args, victim, plen, &s);
    report("chmod", answer, s, NULL);
}

static void *attach(int shmid)
{
    void *p = shmat(shmid, NULL, 0);
    if (p == (void *)-1) {
        emit("{\"attach\": \"failed\", \"errno\": %d}", errno);
        return NULL;
    }
    emit("{\"attach\": \"ok\", \"client_pid\": %d, \"magic_ok\": %s}", ((struct lsca_shard_header *)p)->client_pid,
         ((struct lsca_shard_header *)p)->magic == LSCA_MAGIC ? "true" : "false");
    return p;
}

/* ---- connect-exec ---- */

/* Send the hello naming pid on sock; the welcome's shard id, or -1 (reported). */
static int register_as(int sock, int32_t pid, int *chan)
{
    struct lsca_hello hello;
    struct lsca_welcome w;
    size_t got = 0;

    memset(&hello, 0, sizeof(hello));
    hello.magic = LSCA_MAGIC;
    hello.abi_version = LSCA_ABI_VERSION;
    hello.pid = pid;
    if (send(sock, &hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello)) {
        emit("{\"registration\": \"send failed\", \"errno\": %d}", errno);
        return -1;
    }
    while (got < sizeof(w)) {
        union { struct cmsghdr align; char buf[CMSG_SPACE(4 * sizeof(int))]; } control;
        struct iovec iov = { .iov_base = (char *)&w + got, .iov_len = sizeof(w) - got };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                              .msg_controllen = sizeof(control.buf) };
        struct pollfd p = { .fd = sock, .events = POLLIN };
        struct cmsghdr *cm;
        ssize_t n;

        if (poll(&p, 1, 10000) != 1) {
            emit("{\"registration\": \"no welcome\"}");
            return -1;
        }
        n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n <= 0) {
            emit("{\"registration\": \"closed\", \"bytes\": %zu}", got);
            return -1;
        }
        for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm))
            if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
                memcpy(chan, CMSG_DATA(cm), sizeof(int));
        got += (size_t)n;
    }
    if (w.status != 0) {
        emit("{\"registration\": \"refused\", \"status\": %d}", w.status);
        return -1;
    }
    emit("{\"registration\": \"accepted\", \"shmid\": %d}", w.shmid);
    return w.shmid;
}

/* The set-uid program's descriptors: ready at 5, hold at 6, without close-on-exec (both
 * moved out of the way first: either may already sit at 5 or 6). */
static void place_fds(int ready, int hold)
{
    int high_ready = fcntl(ready, F_DUPFD, 100), high_hold = fcntl(hold, F_DUPFD, 100);
    close(ready);
    close(hold);
    dup2(high_ready, 5);
    dup2(high_hold, 6);
    close(high_ready);
    close(high_hold);
}

/* Become the set-uid program: its ready/hold descriptors where it expects them, stdout quiet. */
static __attribute__((noreturn)) void exec_set_uid(const char *suid, int ready_w, int hold_r)
{
    int null;

    place_fds(ready_w, hold_r);
    null = open("/dev/null", O_WRONLY);
    dup2(null, 1);
    close(null);
    execl(suid, suid, (char *)NULL);
    _exit(127);
}

static int cmd_connect_exec(const char *path, const char *suid, const char *victim)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int ready[2], hold[2];
    pid_t target = getpid();

    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        emit("{\"error\": \"connect\", \"errno\": %d}", errno);
        return 1;
    }
    if (pipe2(ready, O_CLOEXEC) != 0 || pipe2(hold, O_CLOEXEC) != 0)
        return 1;
    pid_t helper = fork();
    if (helper < 0)
        return 1;
    if (helper == 0) {
        int chan = -1, shmid;
        void *shard;

        close(ready[1]);
        close(hold[0]);
        alarm(60);
        emit("{\"helper\": %d, \"target\": %d}", getpid(), target);
        if (!wait_byte(ready[0], 10000)) {
            emit("{\"error\": \"the set-uid program did not start\"}");
        } else if ((shmid = register_as(sock, target, &chan)) >= 0 && (shard = attach(shmid)) != NULL) {
            drive_calls(shard, chan, target, victim);
        }
        emit("{\"done\": true}");
        wait_stdin_eof();
        _exit(0);
    }
    close(sock);
    close(ready[0]);
    close(hold[1]);
    exec_set_uid(suid, ready[1], hold[0]);
}

/* ---- a registered program ---- */

/* The shard the agent attached in this process: /proc/self/maps names SysV segments
 * "/SYSV<key>" with the segment id as the inode. */
static void *own_shard(int *shmid)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    void *found = NULL;

    if (!f)
        return NULL;
    while (fgets(line, sizeof(line), f)) {
        unsigned long start, end, inode;
        char perms[8], dev[16];
        unsigned long long offset;
        if (!strstr(line, "/SYSV"))
            continue;
        if (sscanf(line, "%lx-%lx %7s %llx %15s %lu", &start, &end, perms, &offset, dev, &inode) == 6 &&
            end - start >= LSCA_HEADER_SIZE && ((struct lsca_shard_header *)start)->magic == LSCA_MAGIC &&
            ((struct lsca_shard_header *)start)->client_pid == getpid()) {
            found = (void *)start;
            *shmid = (int)inode;
            break;
        }
    }
    fclose(f);
    return found;
}

static int cmd_exec_registered(const char *suid, const char *victim)
{
    int shmid = -1, ready[2], hold[2];
    void *shard = own_shard(&shmid);
    char a_shmid[16], a_tid[16], a_ready[16], a_hold[16];

    if (!shard) {
        emit("{\"registered\": false}");
        return 1;
    }
    emit("{\"registered\": true, \"pid\": %d, \"shmid\": %d}", getpid(), shmid);
    if (pipe(ready) != 0 || pipe(hold) != 0)
        return 1;
    snprintf(a_shmid, sizeof(a_shmid), "%d", shmid);
    snprintf(a_tid, sizeof(a_tid), "%d", getpid());
    snprintf(a_ready, sizeof(a_ready), "%d", ready[0]);
    snprintf(a_hold, sizeof(a_hold), "%d", hold[1]);
    pid_t helper = fork();
    if (helper < 0)
        return 1;
    if (helper == 0) {
        /* Straight to exec (no call the agent would take), without the agent. */
        char *argv[] = { "hostile", "drive", a_shmid, a_tid, (char *)victim, a_ready, a_hold, NULL };
        char *envp[] = { "PATH=/usr/bin:/bin", NULL };
        execve("/proc/self/exe", argv, envp);
        _exit(127);
    }
    close(ready[0]);
    close(hold[1]);
    exec_set_uid(suid, ready[1], hold[0]);
}

static int cmd_registered_wait(void)
{
    int shmid = -1;
    if (!own_shard(&shmid)) {
        emit("{\"registered\": false}");
        return 1;
    }
    emit("{\"registered\": true, \"pid\": %d, \"shmid\": %d}", getpid(), shmid);
    wait_stdin_eof();
    return 0;
}

static int cmd_drive(int shmid, int32_t tid, const char *victim, int ready_fd, int hold_fd)
{
    void *shard;
    int fd;

    for (fd = 3; fd < 1024; fd++)
        if (fd != ready_fd && fd != hold_fd)
            close(fd);
    alarm(60);
    emit("{\"helper\": %d, \"target\": %d}", getpid(), tid);
    if (ready_fd >= 0 && !wait_byte(ready_fd, 10000))
        emit("{\"error\": \"the set-uid program did not start\"}");
    else if ((shard = attach(shmid)) != NULL)
        drive_calls(shard, -1, tid, victim);
    emit("{\"done\": true}");
    wait_stdin_eof();
    return 0;
}

static int cmd_shmat(int argc, char **argv)
{
    int k;
    for (k = 0; k < argc; k++) {
        int id = atoi(argv[k]);
        void *p = shmat(id, NULL, SHM_RDONLY);
        if (p == (void *)-1) {
            emit("{\"shmid\": %d, \"attached\": false, \"errno\": %d}", id, errno);
        } else {
            emit("{\"shmid\": %d, \"attached\": true}", id);
            shmdt(p);
        }
    }
    return 0;
}

/* ---- a FIFO swapped in under an open ---- */

static int cmd_nonblock_race(double seconds)
{
    int p[2];
    char byte;
    long reads = 0;
    double end = mono() + seconds;
    pid_t toggler;

    if (pipe(p) < 0)
        return 1;
    toggler = fork();
    if (toggler == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;) {                      /* natively: never through the agent */
            syscall(SYS_fcntl, p[0], F_SETFL, O_NONBLOCK);
            syscall(SYS_fcntl, p[0], F_SETFL, 0);
        }
    }
    emit("{\"toggler\": %d}", (int)toggler);
    while (mono() < end) {
        if (read(p[0], &byte, 1) < 0 && errno != EAGAIN)
            break;
        reads++;
    }
    kill(toggler, SIGKILL);
    emit("{\"reads\": %ld}", reads);
    return 0;
}

static int cmd_fifo_race(const char *path, const char *dir, double seconds)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int chan = -1, shmid, attempts = 0;
    void *shard;
    pid_t swapper;
    double start, deadline;
    uint64_t args[LSCA_MAX_ARGS];

    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    if (connect(sock, (struct sockaddr *)&addr, sizeof(addr)) != 0) {
        emit("{\"error\": \"connect\", \"errno\": %d}", errno);
        return 1;
    }
    if ((shmid = register_as(sock, getpid(), &chan)) < 0 || (shard = attach(shmid)) == NULL)
        return 1;
    close(sock);
    if (chdir(dir) != 0 || close(open("t", O_CREAT | O_WRONLY, 0644)) != 0 || mkfifo("o", 0644) != 0) {
        emit("{\"error\": \"setup\", \"errno\": %d}", errno);
        return 1;
    }
    swapper = fork();
    if (swapper == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        for (;;)
            syscall(SYS_renameat2, AT_FDCWD, "t", AT_FDCWD, "o", 2 /* RENAME_EXCHANGE */);
    }
    emit("{\"swapper\": %d}", swapper);
    start = mono();
    deadline = start + seconds;
    memset(args, 0, sizeof(args));
    args[0] = (uint64_t)(int64_t)AT_FDCWD;
    args[1] = O_RDONLY;
    while (mono() < deadline) {
        struct lsca_shard_header *h = shard;
        int i = take_slot(shard, getpid());
        struct lsca_slot *s;
        double give_up;

        if (i < 0)
            break;
        s = lsca_shard_slot(shard, (unsigned)i);
        s->op = LSCA_OP_OPENAT;
        s->xfer = LSCA_XFER_INLINE;
        memcpy(s->args, args, sizeof(args));
        memcpy(s->data, "t", 2);
        s->data_len = 2;
        s->seq = __atomic_fetch_add(&h->next_seq, 1, __ATOMIC_RELAXED);
        lsca_slot_submit(shard, (unsigned)i);
        attempts++;
        give_up = mono() + 2.0;
        while (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != LSCA_SLOT_DONE && mono() < give_up)
            nap_us(20);
        if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) != LSCA_SLOT_DONE) {
            kill(swapper, SIGKILL);
            waitpid(swapper, NULL, 0);
            emit("{\"stuck\": true, \"attempts\": %d, \"after_s\": %.2f}", attempts, mono() - start);
            wait_stdin_eof();
            return 0;
        }
        if (s->status == LSCA_STATUS_DONE && s->result >= 0) {
            int fd = take_fd(chan);
            if (fd >= 0)
                close(fd);
        }
        __atomic_store_n(&s->state, LSCA_SLOT_FREE, __ATOMIC_RELEASE);
        __atomic_store_n(&s->owner_tid, 0, __ATOMIC_RELEASE);
    }
    kill(swapper, SIGKILL);
    waitpid(swapper, NULL, 0);
    emit("{\"stuck\": false, \"attempts\": %d}", attempts);
    wait_stdin_eof();
    return 0;
}

/* ---- a fake supervisor ---- */

#define FAKE_MAX 64

static int cmd_fake_supervisor(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct { int fd; size_t got; struct lsca_hello hello; } conns[FAKE_MAX];
    struct { int shmid; void *addr; int chan; } shards[FAKE_MAX];
    int nconns = 0, nshards = 0, k;
    unsigned i;

    strncpy(addr.sun_path, path, sizeof(addr.sun_path) - 1);
    unlink(path);
    if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) != 0 || chmod(path, 0777) != 0 ||
        listen(listener, 16) != 0) {
        emit("{\"event\": \"error\", \"errno\": %d}", errno);
        return 1;
    }
    emit("{\"event\": \"listening\", \"pid\": %d}", getpid());
    for (;;) {
        struct pollfd p[2 + FAKE_MAX];
        int n = 0;
        p[n++] = (struct pollfd){ .fd = 0, .events = POLLIN };
        p[n++] = (struct pollfd){ .fd = listener, .events = POLLIN };
        for (k = 0; k < nconns; k++)
            p[n++] = (struct pollfd){ .fd = conns[k].fd, .events = POLLIN };
        poll(p, (nfds_t)n, 1);
        if (p[0].revents) {
            char buf[64];
            if (read(0, buf, sizeof(buf)) <= 0)
                break;
        }
        if (p[1].revents & POLLIN && nconns < FAKE_MAX) {
            int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
            if (fd >= 0) {
                conns[nconns].fd = fd;
                conns[nconns].got = 0;
                nconns++;
                emit("{\"event\": \"connect\"}");
            }
        }
        for (k = 2; k < n; k++) {
            int c = k - 2;
            ssize_t got;
            if (!(p[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            got = read(conns[c].fd, (char *)&conns[c].hello + conns[c].got, sizeof(conns[c].hello) - conns[c].got);
            if (got > 0)
                conns[c].got += (size_t)got;
            if (conns[c].got == sizeof(conns[c].hello) && nshards < FAKE_MAX) {
                struct lsca_welcome w = { .magic = LSCA_MAGIC, .abi_version = LSCA_ABI_VERSION,
                                          .status = 0, .supervisor_pid = getpid(),
                                          .shard_size = (uint32_t)LSCA_SHARD_SIZE, .nslots = LSCA_SLOTS };
                int pair[2];
                struct lsca_shard_header *h;
                int shmid = shmget(IPC_PRIVATE, LSCA_SHARD_SIZE, IPC_CREAT | 0666);
                emit("{\"event\": \"hello\", \"pid\": %d}", conns[c].hello.pid);
                if (shmid < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
                    continue;
                emit("{\"event\": \"shard\", \"shmid\": %d}", shmid);
                h = shmat(shmid, NULL, 0);
                if (h == (void *)-1)
                    continue;
                h->magic = LSCA_MAGIC;
                h->abi_version = LSCA_ABI_VERSION;
                h->shard_size = (uint32_t)LSCA_SHARD_SIZE;
                h->nslots = LSCA_SLOTS;
                h->client_pid = conns[c].hello.pid;
                h->doorbell_semid = -1;
                h->worker_sleeping = 0;
                shards[nshards].shmid = shmid;
                shards[nshards].addr = h;
                shards[nshards].chan = pair[0];
                nshards++;
                w.shmid = shmid;
                {
                    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
                    struct iovec iov = { .iov_base = &w, .iov_len = sizeof(w) };
                    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                                          .msg_controllen = sizeof(control.buf) };
                    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
                    cm->cmsg_level = SOL_SOCKET;
                    cm->cmsg_type = SCM_RIGHTS;
                    cm->cmsg_len = CMSG_LEN(sizeof(int));
                    memcpy(CMSG_DATA(cm), &pair[1], sizeof(int));
                    sendmsg(conns[c].fd, &msg, MSG_NOSIGNAL);
                }
                close(pair[1]);
                got = 0;
            }
            if (got <= 0) {
                emit("{\"event\": \"disconnect\", \"bytes\": %zu}", conns[c].got);
                close(conns[c].fd);
                conns[c] = conns[--nconns];
                break;                  /* the poll array no longer matches: poll again */
            }
        }
        for (k = 0; k < nshards; k++) {
            for (i = 0; i < LSCA_SLOTS; i++) {
                struct lsca_slot *s = lsca_shard_slot(shards[k].addr, i);
                uint32_t expected = LSCA_SLOT_SUBMITTED;
                if (!__atomic_compare_exchange_n(&s->state, &expected, LSCA_SLOT_RUNNING, 0, __ATOMIC_ACQ_REL,
                                                 __ATOMIC_ACQUIRE))
                    continue;
                emit("{\"event\": \"call\", \"op\": %u, \"data\": \"%s\"}", s->op,
                     hex(s->data, s->data_len <= LSCA_INLINE_MAX ? s->data_len : 0));
                s->status = LSCA_STATUS_PASSTHROUGH;
                s->result = 0;
                s->err = 0;
                lsca_worker_complete(shards[k].addr, i);
            }
        }
    }
    for (k = 0; k < nshards; k++) {
        shmctl(shards[k].shmid, IPC_RMID, NULL);
        shmdt(shards[k].addr);
    }
    unlink(path);
    emit("{\"event\": \"bye\"}");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && strcmp(argv[1], "connect-exec") == 0)
        return cmd_connect_exec(argv[2], argv[3], argv[4]);
    if (argc >= 4 && strcmp(argv[1], "exec-registered") == 0)
        return cmd_exec_registered(argv[2], argv[3]);
    if (argc >= 2 && strcmp(argv[1], "registered-wait") == 0)
        return cmd_registered_wait();
    if (argc >= 7 && strcmp(argv[1], "drive") == 0)
        return cmd_drive(atoi(argv[2]), atoi(argv[3]), argv[4], atoi(argv[5]), atoi(argv[6]));
    if (argc >= 2 && strcmp(argv[1], "shmat") == 0)
        return cmd_shmat(argc - 2, argv + 2);
    if (argc >= 5 && strcmp(argv[1], "fifo-race") == 0)
        return cmd_fifo_race(argv[2], argv[3], atof(argv[4]));
    if (argc >= 3 && strcmp(argv[1], "nonblock-race") == 0)
        return cmd_nonblock_race(atof(argv[2]));
    if (argc >= 3 && strcmp(argv[1], "fake-supervisor") == 0)
        return cmd_fake_supervisor(argv[2]);
    fprintf(stderr, "usage: see the comment at the top of hostile.c\n");
    return 2;
}

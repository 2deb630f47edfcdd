/*
 * agent.c - the agent core: registration with the supervisor, the shard of this
 * process, one slot per thread, fork/exec handling and the exchange with the worker.
 * Interposed libc functions live in interpose_*.c and use only agent.h.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "agent.h"
#include "lsca_slots.h"

#define TLS __thread __attribute__((tls_model("initial-exec")))

/* Default client spin before sleeping, while the worker runs the call (see lsca_slot_wait): long
 * enough to cover a path call on the Python route (~50 us), whose futex wake-up would add ~15 us. */
#define DEFAULT_SPIN_NS 200000

struct agent_state {
    void *shard;                 /* attached shard, NULL while not registered */
    int shmid;                   /* its id (passed on by an exec that keeps it) */
    pid_t pid;                   /* process this memory belongs to (set at start, after fork) */
    unsigned generation;         /* bumped by fork: thread slots of older generations are void */
    int attempted;               /* registration tried in this process (no retry storm) */
    uint64_t spin_ns;
    int chan_fd;                 /* our end of the descriptor channel, hidden high up; -1: none */
    char socket_path[108];
    char session[LSCA_SESSION_LEN];
};

struct thread_state {
    int slot;                    /* index + 1 of this thread's slot, 0 when none */
    unsigned generation;
    int in_call;                 /* re-entrancy guard: a signal handler's calls run natively */
    pid_t tid;
    void *waiting_shard;         /* set while this thread waits for a worker's answer */
    unsigned waiting_slot;
    int interrupted;             /* a handler ran during the wait (the call was cancelled) */
    int restart;                 /* ... and every such handler had SA_RESTART */
};

static struct agent_state agent = { .chan_fd = -1 };
static pthread_mutex_t register_lock = PTHREAD_MUTEX_INITIALIZER;
/* One descriptor-creating call at a time per process: the channel carries no call id. */
static pthread_mutex_t fd_call_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t slot_key;
static TLS struct thread_state self;

long lsca_sys(long nr, ...)
{
    static long (*real_syscall)(long, ...);
    long a[6];
    va_list ap;
    int i;

    if (!real_syscall)
        real_syscall = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
    va_start(ap, nr);
    for (i = 0; i < 6; i++)
        a[i] = va_arg(ap, long);
    va_end(ap);
    return real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

void *lsca_real(const char *name, void **cache)
{
    void *p = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
    if (!p) {
        p = dlsym(RTLD_NEXT, name);
        __atomic_store_n(cache, p, __ATOMIC_RELEASE);
    }
    return p;
}

/* ---- registration ---- */

/* Why the last registration refused what it talked to, for the one-line message. */
enum refusal_kind { REFUSED_NOTHING, REFUSED_SUPERVISOR, REFUSED_SHARD };
static struct { enum refusal_kind kind; unsigned uid, cuid, mode; } refusal;

static int refuse(enum refusal_kind kind, unsigned uid, unsigned cuid, unsigned mode)
{
    refusal.kind = kind;
    refusal.uid = uid;
    refusal.cuid = cuid;
    refusal.mode = mode;
    errno = EPERM;
    return -1;
}

static int trusted_uid(unsigned uid)
{
    return uid == 0 || uid == (unsigned)lsca_sys(SYS_geteuid);
}

/* A supervisor of another user would see every proxied call and forge its answers
 * (the socket's directory may have been planted): only root's or our own. */
static int check_supervisor(int fd)
{
    struct ucred peer;
    socklen_t len = sizeof(peer);

    if (lsca_sys(SYS_getsockopt, fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0)
        return -1;
    if (trusted_uid(peer.uid) || peer.uid == (unsigned)lsca_sys(SYS_getuid))
        return 0;
    return refuse(REFUSED_SUPERVISOR, peer.uid, 0, 0);
}

/* The shard must be root's or ours, made by root or us, and closed to everyone else:
 * anyone else who could attach it would read and answer our calls. */
static int check_shard(int shmid)
{
    struct shmid_ds ds;

    if (lsca_sys(SYS_shmctl, shmid, IPC_STAT, &ds) != 0)
        return -1;
    if (trusted_uid(ds.shm_perm.uid) && trusted_uid(ds.shm_perm.cuid) && (ds.shm_perm.mode & 077) == 0)
        return 0;
    return refuse(REFUSED_SHARD, ds.shm_perm.uid, ds.shm_perm.cuid, ds.shm_perm.mode & 0777);
}

/* What the last failed registration was refused for: the reason, else errno's text. */
static const char *registration_error(void)
{
    static char text[160];

    if (refusal.kind == REFUSED_SUPERVISOR)
        snprintf(text, sizeof(text), "it runs as uid %u, not root or yours (uid %u)",
                 refusal.uid, (unsigned)lsca_sys(SYS_geteuid));
    else if (refusal.kind == REFUSED_SHARD)
        snprintf(text, sizeof(text), "its shard is owned by uid %u (created by uid %u, mode %03o): "
                 "not private to root or you (uid %u)", refusal.uid, refusal.cuid, refusal.mode,
                 (unsigned)lsca_sys(SYS_geteuid));
    else
        return strerror(errno);
    return text;
}

/* Raw syscalls only: the agent must not re-enter its own interposers. */
static int connect_supervisor(const char *path)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    struct timeval timeout = { .tv_sec = 5, .tv_usec = 0 };
    int fd = (int)lsca_sys(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memcpy(addr.sun_path, path, strnlen(path, sizeof(addr.sun_path) - 1));
    lsca_sys(SYS_setsockopt, fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    lsca_sys(SYS_setsockopt, fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    if (lsca_sys(SYS_connect, fd, &addr, sizeof(addr)) == 0 && check_supervisor(fd) == 0)
        return fd;
    int saved = errno;
    lsca_sys(SYS_close, fd);
    errno = saved;
    return -1;
}

static int exchange_hello(int fd, struct lsca_welcome *w, int *chan)
{
    struct lsca_hello hello = { .magic = LSCA_MAGIC, .abi_version = LSCA_ABI_VERSION,
                                .pid = (int32_t)getpid() };
    size_t got = 0;

    memcpy(hello.session, agent.session, sizeof(hello.session));
    if (lsca_sys(SYS_sendto, fd, &hello, sizeof(hello), MSG_NOSIGNAL, NULL, 0) != (long)sizeof(hello))
        return -1;
    /* The welcome carries our end of the descriptor channel (SCM_RIGHTS). */
    while (got < sizeof(*w)) {
        union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int))]; } control;
        struct iovec iov = { .iov_base = (char *)w + got, .iov_len = sizeof(*w) - got };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.buf, .msg_controllen = sizeof(control.buf) };
        long n = lsca_sys(SYS_recvmsg, fd, &msg, MSG_CMSG_CLOEXEC);
        if (n <= 0) {
            if (n == 0)
                errno = ECONNRESET;
            if (n < 0 && errno == EINTR)
                continue;
            return -1;
        }
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
            memcpy(chan, CMSG_DATA(cm), sizeof(int));
        got += (size_t)n;
    }
    if (w->magic != LSCA_MAGIC || w->abi_version != LSCA_ABI_VERSION) {
        errno = EPROTO;
        return -1;
    }
    if (w->status != 0) {
        errno = w->status;
        return -1;
    }
    return 0;
}

/* The channel's number is kept below this: the kernel's descriptor table grows to hold it, and
 * every fork copies that table (a channel at 19999 cost each fork+exit ~70 us; at 1023 the table
 * is 8 KiB). A program with more than ~1000 descriptors open may then meet it (see below). */
#define CHANNEL_MAX_FD 1024

/* Move the channel where the program never meets it, and return its new number (fd itself
 * when it cannot move). First choice: at the soft RLIMIT_NOFILE, a number the program cannot
 * allocate or dup2 onto (the limit is raised for that one dup when the hard limit, or
 * CAP_SYS_RESOURCE, allows). Otherwise the highest free number below the limit, which a
 * program's lowest-free allocations reach last. Never onto a number in use: F_DUPFD only. */
static int place_channel(int fd)
{
    struct rlimit rl;
    int saved = errno;
    long moved = -1;

    if (lsca_sys(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) != 0)
        return fd;
    if (rl.rlim_cur < CHANNEL_MAX_FD) {
        if ((rlim_t)fd >= rl.rlim_cur)
            return fd;                                   /* already out of the program's reach */
        struct rlimit raised = { rl.rlim_cur + 1, rl.rlim_max > rl.rlim_cur ? rl.rlim_max : rl.rlim_cur + 1 };
        if (lsca_sys(SYS_prlimit64, 0, RLIMIT_NOFILE, &raised, NULL) == 0) {
            moved = lsca_sys(SYS_fcntl, fd, F_DUPFD_CLOEXEC, (long)rl.rlim_cur);
            lsca_sys(SYS_prlimit64, 0, RLIMIT_NOFILE, &rl, NULL);
        }
    }
    if (moved < 0) {
        long limit = rl.rlim_cur < CHANNEL_MAX_FD ? (long)rl.rlim_cur : CHANNEL_MAX_FD;
        for (long n = limit - 1; n >= 0 && n >= limit - 4096 && moved < 0; n--) {
            if (n != fd && lsca_sys(SYS_fcntl, n, F_GETFD) < 0 && errno == EBADF)
                moved = lsca_sys(SYS_fcntl, fd, F_DUPFD_CLOEXEC, n);
        }
    }
    errno = saved;
    if (moved < 0)
        return fd;                   /* keep it where it is rather than lose it */
    lsca_sys(SYS_close, fd);
    return (int)moved;
}

static int hide_fd(int fd)
{
    return fd < 0 ? -1 : place_channel(fd);
}

int lsca_agent_fd(int fd)
{
    return fd >= 0 && fd == __atomic_load_n(&agent.chan_fd, __ATOMIC_RELAXED);
}

int lsca_agent_channel(void)
{
    return __atomic_load_n(&agent.chan_fd, __ATOMIC_RELAXED);
}

static void move_channel(int must_move)
{
    /* Not while another thread receives on it (a signal handler of this thread's own
     * descriptor call would wait for itself: it moves it unlocked). */
    int locked = !self.in_call && pthread_mutex_lock(&fd_call_lock) == 0;
    int fd = agent.chan_fd;

    if (fd >= 0) {
        int moved = place_channel(fd);
        struct rlimit rl;
        int in_reach = lsca_sys(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) != 0 || (rlim_t)fd < rl.rlim_cur;
        if (moved == fd && must_move && in_reach) {
            /* A full table: the program's number wins. Descriptor-creating calls run
             * natively from now on (lsca_exchange_newfds finds no channel). */
            lsca_sys(SYS_close, fd);
            moved = -1;
        }
        __atomic_store_n(&agent.chan_fd, moved, __ATOMIC_RELAXED);
    }
    if (locked)
        pthread_mutex_unlock(&fd_call_lock);
}

/* Keep the channel out of the way of dup2/dup3 onto its number: it moves, the program's
 * descriptor lands where it asked, as natively. A vfork child's table is its own copy. */
void lsca_agent_fd_evict(int fd)
{
    if (lsca_agent_fd(fd) && lsca_own_process())
        move_channel(1);
}

/* The program raised its RLIMIT_NOFILE over the channel: move it out of reach again. */
void lsca_agent_fd_rehide(void)
{
    if (lsca_agent_channel() >= 0 && lsca_own_process())
        move_channel(0);
}

/* A registration given up after the welcome: its channel and shard go, errno stays. */
static int abandon_registration(int chan, void *shard)
{
    int saved = errno;

    if (shard)
        shmdt(shard);
    if (chan >= 0)
        lsca_sys(SYS_close, chan);
    errno = saved;
    return -1;
}

/* Register this process; on failure the agent stays inactive (native calls). */
static int register_process(void)
{
    struct lsca_welcome w;
    int fd, rc;
    void *shard;
    struct lsca_shard_header *h;

    int chan = -1;

    refusal.kind = REFUSED_NOTHING;
    fd = connect_supervisor(agent.socket_path);
    if (fd < 0)
        return -1;
    rc = exchange_hello(fd, &w, &chan);
    int saved = errno;
    lsca_sys(SYS_close, fd);
    if (rc < 0) {
        errno = saved;
        return abandon_registration(chan, NULL);
    }
    if (check_shard(w.shmid) < 0)
        return abandon_registration(chan, NULL);
    shard = shmat(w.shmid, NULL, 0);
    if (shard == (void *)-1)
        return abandon_registration(chan, NULL);
    h = shard;
    /* Checked again attached: the id named the same segment all along. */
    if (check_shard(w.shmid) < 0)
        return abandon_registration(chan, shard);
    if (h->magic != LSCA_MAGIC || h->abi_version != LSCA_ABI_VERSION || h->nslots > LSCA_SLOTS ||
        h->shard_size != w.shard_size) {
        errno = EPROTO;
        return abandon_registration(chan, shard);
    }
    agent.chan_fd = hide_fd(chan);
    agent.shmid = w.shmid;
    /* The shard pointer is published last: threads that see it see the rest. */
    __atomic_store_n(&agent.shard, shard, __ATOMIC_RELEASE);
    return 0;
}

/* Lazily (re-)register: after fork the child registers on its first call. */
static void *current_shard(void)
{
    void *shard = __atomic_load_n(&agent.shard, __ATOMIC_ACQUIRE);

    if (shard || agent.socket_path[0] == '\0' || __atomic_load_n(&agent.attempted, __ATOMIC_ACQUIRE))
        return shard;
    pthread_mutex_lock(&register_lock);
    if (!agent.shard && !agent.attempted) {
        register_process();
        __atomic_store_n(&agent.attempted, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&register_lock);
    return __atomic_load_n(&agent.shard, __ATOMIC_ACQUIRE);
}


/* ---- exec keeps the shard ----
 *
 * A process that execs stays the same process: its registration holds (the supervisor's
 * pidfd, identity and worker are the process's, not the image's). So an exec that will load
 * the agent again passes the shard on instead of registering anew (a supervisor round trip
 * per exec): the new image finds LSCA_RESUME=<abi>:<shmid>:<pid>:<channel fd> in its
 * environment (and removes it), attaches the same shard and keeps the channel, which only
 * this exec carries across (close-on-exec cleared just before it, set again if it fails).
 * Only when nothing else could take the channel: a single-threaded process (no other thread
 * can spawn a child meanwhile), an image that is neither set-id nor file-capable (nor a
 * script of such an interpreter), and an environment that loads this agent for this
 * supervisor and session. Anything else registers anew, as before. */

#define RESUME_VAR "LSCA_RESUME"
#define RESUME_MAX 96

static char resume_entry[RESUME_MAX];

static const char *own_path(void)
{
    static char path[4096];
    Dl_info info;

    if (!path[0] && dladdr((void *)own_path, &info) && info.dli_fname)
        snprintf(path, sizeof(path), "%s", info.dli_fname);
    return path;
}

static const char *env_value(char *const envp[], const char *name)
{
    size_t len = strlen(name);

    for (size_t i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], name, len) == 0 && envp[i][len] == '=')
            return envp[i] + len + 1;
    return NULL;
}

/* The new image loads this very agent, talks to our supervisor, in our session. */
static int loads_this_agent(char *const envp[])
{
    const char *preload = env_value(envp, "LD_PRELOAD"), *socket_path = env_value(envp, "LSCA_SOCKET");
    const char *session = env_value(envp, "LSCA_SESSION"), *disable = env_value(envp, "LSCA_AGENT_DISABLE");
    const char *me = own_path();

    if (!preload || !me[0] || !strstr(preload, me) || !socket_path || strcmp(socket_path, agent.socket_path) != 0)
        return 0;
    if (disable && disable[0] && strcmp(disable, "0") != 0)
        return 0;
    return strncmp(session ? session : "", agent.session, sizeof(agent.session)) == 0;
}

static int single_threaded(void)
{
    struct stat st;

    /* A task directory links to ".", ".." and one entry per thread. */
    return lsca_sys(SYS_newfstatat, AT_FDCWD, "/proc/self/task", &st, 0) == 0 && st.st_nlink == 3;
}

/* 1 when executing the file at fd gives no new credentials: not set-uid, not set-gid (with
 * group execute), no file capabilities; for a script, the same of its interpreter. */
static int plain_image(int fd, int depth)
{
    struct stat st;
    char head[256];
    long n;

    if (lsca_sys(SYS_fstat, fd, &st) != 0 || !S_ISREG(st.st_mode) || (st.st_mode & S_ISUID) ||
        ((st.st_mode & S_ISGID) && (st.st_mode & S_IXGRP)))
        return 0;
    if (lsca_sys(SYS_fgetxattr, fd, "security.capability", NULL, 0) >= 0 || (errno != ENODATA && errno != ENOTSUP))
        return 0;
    n = lsca_sys(SYS_pread64, fd, head, sizeof(head) - 1, 0);
    if (n < 0)
        return 0;
    head[n] = '\0';
    if (n < 2 || head[0] != '#' || head[1] != '!')
        return 1;
    if (depth > 0)
        return 0;                    /* an interpreter that is a script itself: register anew */
    char *p = head + 2, *end;
    while (*p == ' ' || *p == '\t')
        p++;
    for (end = p; *end && *end != ' ' && *end != '\t' && *end != '\n'; end++)
        ;
    if (end == p || *end == '\0')
        return 0;                    /* no complete interpreter line within what we read */
    *end = '\0';
    int interp = (int)lsca_sys(SYS_openat, AT_FDCWD, p, O_RDONLY | O_CLOEXEC);
    if (interp < 0)
        return 0;
    int plain = plain_image(interp, depth + 1);
    lsca_sys(SYS_close, interp);
    return plain;
}

static int plain_file(int dirfd, const char *path)
{
    int fd, plain;

    if (!path[0])
        return plain_image(dirfd, 0);    /* fexecve: the descriptor itself */
    fd = (int)lsca_sys(SYS_openat, dirfd, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    plain = plain_image(fd, 0);
    lsca_sys(SYS_close, fd);
    return plain;
}

/* The file execvp would run for name: a name with a slash as it is, else the first
 * executable regular file of that name along PATH. 0 when none (then the exec fails). */
static int search_path(const char *name, char *out, size_t size)
{
    const char *path = getenv("PATH"), *dir, *end;
    struct stat st;

    if (strchr(name, '/'))
        return snprintf(out, size, "%s", name) < (int)size;
    if (!path)
        path = "/bin:/usr/bin";
    for (dir = path;; dir = end + 1) {
        end = strchrnul(dir, ':');
        int n = end == dir ? snprintf(out, size, "%s", name) : snprintf(out, size, "%.*s/%s", (int)(end - dir), dir, name);
        if (n > 0 && n < (int)size && lsca_sys(SYS_faccessat, AT_FDCWD, out, X_OK) == 0 &&
            lsca_sys(SYS_newfstatat, AT_FDCWD, out, &st, 0) == 0 && S_ISREG(st.st_mode))
            return 1;
        if (*end == '\0')
            return 0;
    }
}

int lsca_exec_prepare(struct lsca_exec *x, int dirfd, const char *path, int search, char *const envp[])
{
    char found[4096];
    int saved = errno, chan = lsca_agent_channel();
    size_t n = 0, k = 0;

    x->envp = (char **)envp;
    x->chan = -1;
    if (!path || !lsca_registered() || chan < 0 || self.in_call || !loads_this_agent(envp) || !single_threaded())
        goto keep;
    if (search && !search_path(path, found, sizeof(found)))
        goto keep;
    if (!plain_file(dirfd, search ? found : path))
        goto keep;
    while (envp[n])
        n++;
    char **copy = malloc((n + 2) * sizeof(char *));
    if (!copy)
        goto keep;
    for (size_t i = 0; i < n; i++)
        if (strncmp(envp[i], RESUME_VAR "=", sizeof(RESUME_VAR)) != 0)
            copy[k++] = envp[i];
    snprintf(resume_entry, sizeof(resume_entry), RESUME_VAR "=%u:%d:%d:%d", (unsigned)LSCA_ABI_VERSION,
             (int)agent.shmid, (int)agent.pid, chan);
    copy[k++] = resume_entry;
    copy[k] = NULL;
    if (lsca_sys(SYS_fcntl, chan, F_SETFD, 0) != 0) {
        free(copy);
        goto keep;
    }
    x->envp = copy;
    x->chan = chan;
keep:
    errno = saved;
    return 0;
}

void lsca_exec_failed(struct lsca_exec *x)
{
    int saved = errno;

    if (x->chan >= 0) {
        lsca_sys(SYS_fcntl, x->chan, F_SETFD, FD_CLOEXEC);
        free(x->envp);
    }
    x->chan = -1;
    errno = saved;
}

/* In the new image: take over the shard the exec passed on. 0 when done. */
static int resume_registration(const char *value)
{
    unsigned abi;
    int shmid, pid, chan, end = 0;
    struct stat st;
    void *shard;

    if (sscanf(value, "%u:%d:%d:%d%n", &abi, &shmid, &pid, &chan, &end) != 4 || value[end] != '\0' ||
        abi != LSCA_ABI_VERSION || pid != (int)lsca_sys(SYS_getpid) || chan < 0)
        return -1;
    /* Passed on by this process's previous image: its channel, unless it is not a socket. */
    if (lsca_sys(SYS_fstat, chan, &st) != 0 || !S_ISSOCK(st.st_mode))
        return -1;
    if (check_shard(shmid) < 0 || (shard = shmat(shmid, NULL, 0)) == (void *)-1)
        goto fail;
    struct lsca_shard_header *h = shard;
    if (check_shard(shmid) < 0 || h->magic != LSCA_MAGIC || h->abi_version != LSCA_ABI_VERSION ||
        h->nslots > LSCA_SLOTS || h->client_pid != pid || __atomic_load_n(&h->dead, __ATOMIC_ACQUIRE)) {
        shmdt(shard);
        goto fail;
    }
    lsca_sys(SYS_fcntl, chan, F_SETFD, FD_CLOEXEC);
    /* The previous image had one thread (checked before its exec), not in a call: its slot
     * is free; the new image's threads take slots afresh. */
    for (unsigned i = 0; i < LSCA_SLOTS; i++)
        __atomic_store_n(&lsca_shard_slot(shard, i)->owner_tid, 0, __ATOMIC_RELEASE);
    __atomic_fetch_add(&h->execs, 1, __ATOMIC_RELAXED);
    agent.chan_fd = chan;
    agent.shmid = shmid;
    __atomic_store_n(&agent.shard, shard, __ATOMIC_RELEASE);
    return 0;
fail:
    lsca_sys(SYS_close, chan);
    return -1;
}

/* ---- which process this is ---- */

static void after_fork_in_child(void);

/* A child made by a raw clone without CLONE_VM and CLONE_FILES (no atfork handlers ran) has
 * its own copy of the agent's memory and descriptors: it may reset them as after fork.
 * Whether memory and table are shared only kcmp can tell; when unsure, it is not ours. */
static int adopt_copied_process(pid_t pid, pid_t owner)
{
    if (owner <= 0 || lsca_sys(SYS_kcmp, pid, owner, KCMP_VM, 0, 0) <= 0 ||
        lsca_sys(SYS_kcmp, pid, owner, KCMP_FILES, 0, 0) <= 0)
        return 0;
    after_fork_in_child();
    return 1;
}

int lsca_own_process(void)
{
    /* A vfork child shares the parent's memory, thread-local storage included: compare with
     * the kernel's pid (glibc caches none) before writing anything. */
    pid_t pid = (pid_t)lsca_sys(SYS_getpid);
    pid_t owner = __atomic_load_n(&agent.pid, __ATOMIC_RELAXED);

    if (pid == owner)
        return 1;
    int saved = errno, adopted = adopt_copied_process(pid, owner);
    errno = saved;
    return adopted;
}

int lsca_registered(void)
{
    return __atomic_load_n(&agent.shard, __ATOMIC_ACQUIRE) != NULL && lsca_own_process();
}

/* ---- thread slots ---- */

static void release_slot(void *value)
{
    void *shard = agent.shard;
    uintptr_t slot = (uintptr_t)value;

    /* Only a slot of this process's current shard is given back. */
    if (shard && slot && self.generation == agent.generation && slot <= LSCA_SLOTS)
        __atomic_store_n(&lsca_shard_slot(shard, (unsigned)slot - 1)->owner_tid, 0, __ATOMIC_RELEASE);
    self.slot = 0;
}

static struct lsca_slot *thread_slot(void *shard)
{
    unsigned i;

    if (self.slot && self.generation == agent.generation)
        return lsca_shard_slot(shard, (unsigned)self.slot - 1);
    self.slot = 0;
    self.generation = agent.generation;
    self.tid = (pid_t)lsca_sys(SYS_gettid);
    for (i = 0; i < LSCA_SLOTS; i++) {
        int32_t expected = 0;
        struct lsca_slot *slot = lsca_shard_slot(shard, i);
        if (__atomic_compare_exchange_n(&slot->owner_tid, &expected, self.tid, 0,
                                        __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
            self.slot = (int)i + 1;
            pthread_setspecific(slot_key, (void *)(uintptr_t)self.slot);
            return slot;
        }
    }
    return NULL;                 /* more threads than slots: this thread runs natively */
}

/* ---- the call path ---- */

void lsca_count_passthrough(enum lsca_op op)
{
    struct lsca_shard_header *h = __atomic_load_n(&agent.shard, __ATOMIC_ACQUIRE);
    if (h && (unsigned)op < LSCA_OP_MAX && lsca_own_process())
        __atomic_fetch_add(&h->passthrough[op], 1, __ATOMIC_RELAXED);
}

/* The thread is in a call from here to lsca_end/lsca_abandon: its slot takes the request. */
static int start_call(struct lsca_call *c, struct lsca_slot *slot, enum lsca_op op)
{
    c->slot = slot;
    c->saved_errno = errno;
    self.in_call = 1;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    slot->op = op;
    slot->xfer = LSCA_XFER_INLINE;
    slot->data_len = 0;
    slot->remote_addr = 0;
    return 1;
}

/* LSCA_FAIL_CLOSED=1: without a supervisor a proxied call fails with EACCES instead of
 * running natively. Its answer comes from a slot of the thread's own (never submitted). */
static int fail_closed;
static TLS struct lsca_slot *refusal_slot;

static int refuse_or_native(struct lsca_call *c, enum lsca_op op)
{
    /* Reports (close, chdir, fchdir) ran natively already: never refuse those. */
    if (!fail_closed || lsca_op_has(op, LSCA_OPF_REPORT))
        return 0;
    if (!refusal_slot) {
        void *p = mmap(NULL, sizeof(struct lsca_slot), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return 0;
        refusal_slot = p;
    }
    return start_call(c, refusal_slot, op);
}

int lsca_begin(struct lsca_call *c, enum lsca_op op)
{
    void *shard;

    c->shard = NULL;
    c->slot = NULL;
    c->op = op;
    c->report = 0;
    if (!lsca_own_process())
        return 0;                /* a child sharing our memory (vfork): native, nothing of ours touched */
    if (self.in_call) {
        /* Re-entered from a signal handler during a call: native, and counted as such. */
        lsca_count_passthrough(op);
        return 0;
    }
    shard = current_shard();
    if (!shard)
        return agent.socket_path[0] ? refuse_or_native(c, op) : 0;
    if (__atomic_load_n(&((struct lsca_shard_header *)shard)->dead, __ATOMIC_ACQUIRE)) {
        /* The supervisor is gone for good: everything runs natively (or fails closed) from now on. */
        __atomic_store_n(&agent.shard, NULL, __ATOMIC_RELEASE);
        return refuse_or_native(c, op);
    }
    c->slot = thread_slot(shard);
    if (!c->slot) {
        struct lsca_shard_header *h = shard;
        if ((unsigned)op < LSCA_OP_MAX)
            __atomic_fetch_add(&h->passthrough[op], 1, __ATOMIC_RELAXED);
        return 0;
    }
    c->shard = shard;            /* this call's shard from here on, whatever other threads see */
    return start_call(c, c->slot, op);
}

void lsca_signal_arrived(int sa_restart)
{
    void *shard = self.waiting_shard;

    if (!shard)
        return;                  /* not waiting in a proxied call: nothing to interrupt */
    if (__atomic_load_n(&lsca_shard_slot(shard, self.waiting_slot)->state, __ATOMIC_ACQUIRE) == LSCA_SLOT_FREE)
        return;                  /* not submitted yet: natively the signal came before the call */
    if (!self.interrupted) {
        /* First interrupt the call in the worker and take its answer, then the handler
         * runs: the kernel keeps this order for a native call. */
        lsca_slot_cancel(shard, self.waiting_slot);
        lsca_slot_wait(shard, self.waiting_slot, agent.spin_ns, 0);
        self.interrupted = 1;
        self.restart = 1;
    }
    if (!sa_restart)
        self.restart = 0;
}

int lsca_exchange(struct lsca_call *c)
{
    struct lsca_shard_header *h = c->shard;
    unsigned i;
    int waited;

    if (c->slot == refusal_slot) {
        c->slot->status = LSCA_STATUS_DONE;
        c->slot->result = -1;
        c->slot->err = EACCES;
        return 1;
    }
    i = (unsigned)(c->slot - lsca_shard_slot(h, 0));

    for (;;) {
        /* A fresh seq each submission, a restart included: it names the call to the worker. */
        c->slot->seq = __atomic_fetch_add(&h->next_seq, 1, __ATOMIC_RELAXED);
        self.interrupted = 0;
        self.waiting_slot = i;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        self.waiting_shard = h;
        lsca_slot_submit(h, i);
        waited = lsca_slot_wait(h, i, agent.spin_ns, 0);
        self.waiting_shard = NULL;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        /* Interrupted before it completed (EINTR): restarted if every handler said SA_RESTART. */
        if (waited == 0 && self.interrupted && self.restart && c->slot->status == LSCA_STATUS_DONE &&
            c->slot->result == -1 && c->slot->err == EINTR)
            continue;
        break;
    }
    if (waited < 0) {
        /* The supervisor is gone mid-call: the outcome is unknown, so say EIO (never guess). */
        c->slot->status = LSCA_STATUS_DONE;
        c->slot->result = -1;
        c->slot->err = EIO;
        __atomic_store_n(&agent.shard, NULL, __ATOMIC_RELEASE);
        return 1;
    }
    if (c->slot->status == LSCA_STATUS_DONE)
        return 1;
    if (c->slot->status == LSCA_STATUS_WAIT_NATIVE) {
        /* It would wait: this thread waits for it natively (signals act as on any native call). */
        __atomic_fetch_add(&h->waited[c->op], 1, __ATOMIC_RELAXED);
        if ((__atomic_load_n(&h->report_mask, __ATOMIC_RELAXED) >> c->op) & 1) {
            c->report = 1;
            memcpy(c->args, c->slot->args, sizeof(c->args));
        }
        c->slot->result = 0;
        return 0;
    }
    __atomic_fetch_add(&h->declined[c->op], 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&h->passthrough[c->op], 1, __ATOMIC_RELAXED);
    c->slot->result = 0;         /* lsca_end must leave errno alone for the native retry */
    return 0;
}

/* SIGPIPE as the kernel sends it on EPIPE: to this thread, si_code SI_USER from ourselves,
 * delivered (or left pending, or ignored) before the call returns. Unix datagram and
 * seqpacket sockets say EPIPE without it. */
static void send_sigpipe(int fd)
{
    int type = 0, domain = 0;
    socklen_t len = sizeof(int);
    siginfo_t info;

    if (lsca_sys(SYS_getsockopt, fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type != SOCK_STREAM) {
        len = sizeof(int);
        if (lsca_sys(SYS_getsockopt, fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_UNIX)
            return;
    }
    memset(&info, 0, sizeof(info));
    info.si_signo = SIGPIPE;
    info.si_code = SI_USER;
    info.si_pid = (pid_t)lsca_sys(SYS_getpid);
    info.si_uid = (uid_t)lsca_sys(SYS_getuid);
    lsca_sys(SYS_rt_tgsigqueueinfo, (long)info.si_pid, lsca_sys(SYS_gettid), (long)SIGPIPE, &info);
}

long lsca_end(struct lsca_call *c)
{
    long result = (long)c->slot->result;
    int err = c->slot->err;

    /* The slot is free for this thread's next call once the answer is read. */
    __atomic_store_n(&c->slot->state, LSCA_SLOT_FREE, __ATOMIC_RELEASE);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    self.in_call = 0;
    /* The kernel sends SIGPIPE to the writing thread; the worker's write could not. */
    if (result == -1 && err == EPIPE &&
        (c->op == LSCA_OP_WRITE || c->op == LSCA_OP_PWRITE || c->op == LSCA_OP_WRITEV ||
         ((c->op == LSCA_OP_SENDTO || c->op == LSCA_OP_SENDMSG) && !(c->slot->args[2] & MSG_NOSIGNAL))))
        send_sigpipe((int)(int64_t)c->slot->args[0]);
    errno = result == -1 ? err : c->saved_errno;
    return result;
}

void lsca_report_waited(struct lsca_call *c, long result, const void *buf, size_t len)
{
    struct lsca_call r;
    int saved = errno;

    if (!c->report)
        return;
    if (lsca_begin(&r, c->op)) {
        memcpy(r.slot->args, c->args, sizeof(c->args));
        r.slot->xfer = LSCA_XFER_REPORTED;
        r.slot->result = result;
        r.slot->err = result < 0 ? saved : 0;
        if (buf && len && lsca_user_read(r.slot->data, buf, len < LSCA_TRACE_SHOWN ? len : LSCA_TRACE_SHOWN) == 0)
            r.slot->data_len = (uint32_t)(len < LSCA_TRACE_SHOWN ? len : LSCA_TRACE_SHOWN);
        lsca_exchange(&r);
        lsca_end(&r);
    }
    errno = saved;
}

void lsca_abandon(struct lsca_call *c)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    self.in_call = 0;
    errno = c->saved_errno;
    lsca_count_passthrough(c->op);
}

int lsca_put_path(struct lsca_call *c, const char *path)
{
    size_t used = c->slot->data_len;
    long len;

    if (!path)
        return -1;                   /* the kernel says EFAULT natively */
    len = lsca_user_strnlen(path, LSCA_PATH_MAX);
    if (len < 0 || len >= LSCA_PATH_MAX || used + (size_t)len + 1 > LSCA_INLINE_MAX)
        return -1;                   /* EFAULT or ENAMETOOLONG natively */
    memcpy(c->slot->data + used, path, (size_t)len + 1);
    c->slot->data_len = (uint32_t)(used + (size_t)len + 1);
    return 0;
}

/* Descriptors that arrived for another thread's call (the channel carries the call's seq). */
#define STASH_MAX LSCA_SLOTS
static struct { uint64_t seq; int n; int fds[2]; int used; } stash[STASH_MAX];

/* Take the descriptors sent for call seq: from the stash, or from the channel (stashing
 * what belongs to other calls). Under fd_call_lock. Returns the count, -1 on failure. */
static int take_fds(uint64_t seq, int *fds, int nfds, int cloexec, int *truncated)
{
    int k;

    for (k = 0; k < STASH_MAX; k++) {
        if (stash[k].used && stash[k].seq == seq) {
            stash[k].used = 0;
            memcpy(fds, stash[k].fds, (size_t)(nfds < 2 ? nfds : 2) * sizeof(int));
            return stash[k].n;
        }
    }
    for (;;) {
        union { struct cmsghdr align; char buf[CMSG_SPACE(2 * sizeof(int))]; } control;
        uint64_t got_seq = 0;
        int got[2] = { -1, -1 }, n = 0;
        struct iovec iov = { .iov_base = &got_seq, .iov_len = sizeof(got_seq) };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.buf, .msg_controllen = sizeof(control.buf) };
        long r;
        do
            r = lsca_sys(SYS_recvmsg, agent.chan_fd, &msg, cloexec ? MSG_CMSG_CLOEXEC : 0);
        while (r < 0 && errno == EINTR);
        if (r <= 0)
            return -1;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
            n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(got, CMSG_DATA(cm), (size_t)(n < 2 ? n : 2) * sizeof(int));
        }
        if (msg.msg_flags & MSG_CTRUNC)
            *truncated = 1;
        if (got_seq == seq) {
            memcpy(fds, got, (size_t)(nfds < 2 ? nfds : 2) * sizeof(int));   /* fds holds nfds ints */
            return n;
        }
        for (k = 0; k < STASH_MAX && stash[k].used; k++)
            ;
        if (k == STASH_MAX) {       /* cannot happen: one message per answered call */
            for (r = 0; r < n; r++)
                lsca_sys(SYS_close, got[r]);
            continue;
        }
        stash[k].used = 1;
        stash[k].seq = got_seq;
        stash[k].n = n;
        memcpy(stash[k].fds, got, sizeof(got));
    }
}

int lsca_exchange_newfds(struct lsca_call *c, int *fds, int nfds, int cloexec)
{
    int answered, i, got, truncated = 0;

    if (agent.chan_fd < 0 || !c->shard) {
        c->slot->result = 0;
        if (c->shard)
            __atomic_fetch_add(&((struct lsca_shard_header *)c->shard)->passthrough[c->op], 1, __ATOMIC_RELAXED);
        return 0;
    }
    /* No lock while waiting: an accept may wait for hours while other threads open files. */
    answered = lsca_exchange(c);
    if (answered && c->slot->result >= 0) {
        /* The worker queued the descriptors before DONE: they are there for us. */
        pthread_mutex_lock(&fd_call_lock);
        got = take_fds(c->slot->seq, fds, nfds, cloexec, &truncated);
        pthread_mutex_unlock(&fd_call_lock);
        if (got != nfds || truncated) {
            /* A full descriptor table truncates the message: as natively, EMFILE. */
            for (i = 0; i < got && i < nfds; i++)
                lsca_sys(SYS_close, fds[i]);
            c->slot->result = -1;
            c->slot->err = truncated ? EMFILE : EIO;
        } else {
            for (i = 0; i < nfds; i++)
                c->slot->new_fds[i] = fds[i];
        }
    }
    return answered;
}

/* ---- process life ---- */

static void after_fork_in_child(void)
{
    void *shard = agent.shard;

    /* The inherited shard is the parent's: detach it and register anew on first use. */
    agent.shard = NULL;
    agent.attempted = 0;
    if (agent.chan_fd >= 0)
        lsca_sys(SYS_close, agent.chan_fd);   /* the parent's channel, not ours */
    agent.chan_fd = -1;
    pthread_mutex_init(&fd_call_lock, NULL);
    for (int k = 0; k < STASH_MAX; k++) {      /* the parent's threads' descriptors */
        for (int j = 0; stash[k].used && j < stash[k].n && j < 2; j++)
            lsca_sys(SYS_close, stash[k].fds[j]);
        stash[k].used = 0;
    }
    agent.generation++;
    agent.pid = (pid_t)lsca_sys(SYS_getpid);
    pthread_mutex_init(&register_lock, NULL);
    self.slot = 0;
    self.in_call = 0;
    if (shard)
        shmdt(shard);
}

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] && strcmp(v, "0") != 0;
}

__attribute__((constructor)) static void lsca_agent_init(void)
{
    const char *path = getenv("LSCA_SOCKET");
    const char *session = getenv("LSCA_SESSION");
    const char *spin = getenv("LSCA_SPIN_NS");
    const char *passed = getenv(RESUME_VAR);
    char resume[RESUME_MAX] = "";

    if (passed) {
        snprintf(resume, sizeof(resume), "%s", passed);
        unsetenv(RESUME_VAR);            /* the program never sees it */
    }

    agent.pid = (pid_t)lsca_sys(SYS_getpid);
    pthread_key_create(&slot_key, release_slot);
    pthread_atfork(NULL, NULL, after_fork_in_child);
    agent.spin_ns = spin ? strtoull(spin, NULL, 10) : DEFAULT_SPIN_NS;
    fail_closed = env_flag("LSCA_FAIL_CLOSED");
    if (session)
        memcpy(agent.session, session, strnlen(session, sizeof(agent.session) - 1));
    if (!path || !path[0] || env_flag("LSCA_AGENT_DISABLE"))
        return;
    if (strlen(path) >= sizeof(agent.socket_path)) {
        fprintf(stderr, "lsca: LSCA_SOCKET path is too long (max %zu bytes): %s\n",
                sizeof(agent.socket_path) - 1, path);
        if (env_flag("LSCA_REQUIRED"))
            _exit(126);
        return;
    }
    strcpy(agent.socket_path, path);
    agent.attempted = 1;
    if (resume[0] && resume_registration(resume) == 0)
        return;
    if (register_process() == 0)
        return;
    if (env_flag("LSCA_REQUIRED")) {
        fprintf(stderr, "lsca: cannot register with the supervisor at %s: %s "
                        "(LSCA_REQUIRED=1, not starting the program)\n", path, registration_error());
        _exit(126);
    }
    if (fail_closed)
        fprintf(stderr, "lsca: cannot register with the supervisor at %s: %s "
                        "(LSCA_FAIL_CLOSED=1: proxied calls fail with EACCES)\n", path, registration_error());
}

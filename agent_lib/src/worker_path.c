/*
 * worker_path.c - the compiled route of the commonest path call, fstatat (stat, lstat,
 * fstatat), for the plain case: a name in the client's cwd or an absolute one, the client
 * not chrooted, its calling thread's credentials read fresh (/proc/PID/task/TID/status) and
 * within its registration, no policy for the op. It follows the Python route step by step
 * (lsca.workers.creds.acting_as, handlers_path._stat_like, gate.resolve) and hands every
 * other case to it: a final symlink to follow, a name that means the calling process, a
 * directory it cannot open, a trailing slash, a dirfd, credentials it cannot take exactly.
 * Also the plain case of openat (O_CREAT with the thread's umask included), unlinkat, mkdirat,
 * faccessat, renameat2, linkat, utimensat, fchmod and fchown.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "lsca_worker_fast.h"
#include "lsca_worker_sys.h"

/* Capabilities the kernel raises or drops with the filesystem uid (CAP_FS_MASK), as creds.py. */
#define FS_CAPS ((1ull << 0) | (1ull << 1) | (1ull << 2) | (1ull << 3) | (1ull << 4) | (1ull << 27) | \
                 (1ull << 32))
#define STATUS_MAX 16384
#define AT_FDCWD_ARG ((int64_t)AT_FDCWD)

/* The worker itself (lsca_path_setup). */
static struct {
    int ready, root;              /* root: the worker takes each client's fs identity     */
    uint64_t root_dev, root_ino;  /* "/" of the worker: a client with another root is chrooted */
    uint64_t proc_dev;
    unsigned fsuid, fsgid;        /* a non-root worker: what it acts with                   */
    uint64_t fs_caps;
    int ngroups;
    unsigned groups[LSCA_PATH_GROUPS];
} self;

struct creds {
    unsigned uids[4], gids[4];
    int ngroups;
    unsigned groups[LSCA_PATH_GROUPS];
    uint64_t cap_eff, cap_prm;
    unsigned umask;
};

void lsca_path_setup(int root, uint64_t root_dev, uint64_t root_ino, uint64_t proc_dev, unsigned fsuid,
                     unsigned fsgid, uint64_t fs_caps, int ngroups, const unsigned *groups)
{
    self.root = root;
    self.root_dev = root_dev;
    self.root_ino = root_ino;
    self.proc_dev = proc_dev;
    self.fsuid = fsuid;
    self.fsgid = fsgid;
    self.fs_caps = fs_caps;
    self.ngroups = ngroups < 0 || ngroups > LSCA_PATH_GROUPS ? -1 : ngroups;
    if (self.ngroups > 0)
        memcpy(self.groups, groups, (size_t)ngroups * sizeof(*groups));
    self.ready = self.ngroups >= 0;
}

void lsca_fast_set_identity(struct lsca_client_fast *c, int root, unsigned uid, unsigned gid, int ngroups,
                            const unsigned *groups)
{
    c->id_known = 0;
    if (ngroups < 0 || ngroups > LSCA_PATH_GROUPS)
        return;                         /* the Python route only */
    c->id_root = root;
    c->id_uid = uid;
    c->id_gid = gid;
    c->id_ngroups = ngroups;
    memcpy(c->id_groups, groups, (size_t)ngroups * sizeof(*groups));
    c->id_known = 1;
}

static int cmp_unsigned(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

/* The numbers after "\nName:" in status (at most max); -1 when the line is missing or longer. */
static int numbers(const char *status, const char *name, int base, unsigned long long *out, int max)
{
    const char *p = strstr(status, name), *end;
    int n = 0;

    if (!p)
        return -1;
    p += strlen(name);
    end = strchr(p, '\n');
    if (!end)
        return -1;
    while (p < end) {
        char *next;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= end)
            break;
        if (n == max)
            return -1;
        errno = 0;
        out[n] = strtoull(p, &next, base);
        if (next == p || errno)
            return -1;
        n++;
        p = next;
    }
    return n;
}

static void task_forget(struct lsca_task_files *t)
{
    if (t->dir >= 0)
        close(t->dir);
    if (t->status >= 0)
        close(t->status);
    t->tid = 0;
    t->dir = t->status = -1;
}

void lsca_path_forget_tasks(struct lsca_client_fast *c)
{
    for (unsigned i = 0; i < LSCA_TASKS_KEPT; i++)
        task_forget(&c->tasks[i]);
}

/* Thread tid's kept entries, opened on its first call; NULL when the client has no such
 * thread (an untrusted tid: another process's thread has no entry in the client's task/). */
static struct lsca_task_files *task_files(struct lsca_client_fast *c, int32_t tid)
{
    struct lsca_task_files *t;
    char name[32];

    for (unsigned i = 0; i < LSCA_TASKS_KEPT; i++)
        if (c->tasks[i].tid == tid)
            return &c->tasks[i];
    t = &c->tasks[c->tasks_next++ % LSCA_TASKS_KEPT];
    task_forget(t);
    snprintf(name, sizeof(name), "task/%d", (int)tid);
    t->dir = openat(c->proc_dir, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
    t->status = t->dir >= 0 ? openat(t->dir, "status", O_RDONLY | O_CLOEXEC) : -1;
    if (t->status < 0) {
        task_forget(t);
        return NULL;
    }
    t->tid = tid;
    return t;
}

/* The thread's credentials, as creds.read_creds parses them; -1 with errno (ESRCH: gone). */
static int read_creds(int status_fd, struct creds *cr)
{
    static __thread char status[STATUS_MAX];
    unsigned long long v[LSCA_PATH_GROUPS];
    ssize_t len = pread(status_fd, status, sizeof(status) - 1, 0);
    int n, i;

    if (len <= 0 || len >= (ssize_t)sizeof(status) - 1) {
        errno = len < 0 ? errno : E2BIG;
        return -1;
    }
    status[len] = '\0';
    errno = EINVAL;
    if (numbers(status, "\nUid:", 10, v, 4) != 4)
        return -1;
    for (i = 0; i < 4; i++)
        cr->uids[i] = (unsigned)v[i];
    if (numbers(status, "\nGid:", 10, v, 4) != 4)
        return -1;
    for (i = 0; i < 4; i++)
        cr->gids[i] = (unsigned)v[i];
    n = numbers(status, "\nGroups:", 10, v, LSCA_PATH_GROUPS);
    if (n < 0)
        return -1;
    cr->ngroups = n;
    for (i = 0; i < n; i++)
        cr->groups[i] = (unsigned)v[i];
    qsort(cr->groups, (size_t)n, sizeof(unsigned), cmp_unsigned);
    if (numbers(status, "\nCapEff:", 16, v, 1) != 1)
        return -1;
    cr->cap_eff = v[0];
    if (numbers(status, "\nCapPrm:", 16, v, 1) != 1)
        return -1;
    cr->cap_prm = v[0];
    if (numbers(status, "\nUmask:", 8, v, 1) != 1)
        return -1;
    cr->umask = (unsigned)v[0] & 0777;
    return 0;
}

static int in_groups(unsigned g, const unsigned *groups, int n)
{
    for (int i = 0; i < n; i++)
        if (groups[i] == g)
            return 1;
    return 0;
}

/* creds.within_registration: root's registration covers anything; a user's, exactly that user. */
static int within_registration(const struct lsca_client_fast *c, const struct creds *cr)
{
    if (c->id_root)
        return 1;
    for (int i = 0; i < 4; i++)
        if (cr->uids[i] != c->id_uid || cr->gids[i] != c->id_gid)
            return 0;
    for (int i = 0; i < cr->ngroups; i++)
        if (!in_groups(cr->groups[i], c->id_groups, c->id_ngroups))
            return 0;
    return cr->cap_eff == 0 && cr->cap_prm == 0;
}

/* creds.Identity.enter: 0 when taken, -1 to decline. real_ids: access(2)'s rule, the real
 * uid and gid, and for uid 0 the permitted capabilities. */
static int enter(const struct creds *cr, int real_ids)
{
    unsigned fsuid = real_ids ? cr->uids[0] : cr->uids[3], fsgid = real_ids ? cr->gids[0] : cr->gids[3];
    uint64_t fs_caps = (real_ids ? (fsuid == 0 ? cr->cap_prm : 0) : cr->cap_eff) & FS_CAPS;

    if (self.root) {
        if (fs_caps != (fsuid == 0 ? FS_CAPS : 0))
            return -1;
        unsigned none = 0;
        return lsca_become((int)fsuid, (int)fsgid, cr->ngroups, cr->ngroups ? cr->groups : &none);
    }
    /* A non-root worker: only a client that is what it acts with (AT_EACCESS for access(2)). */
    if (fsuid != self.fsuid || fsgid != self.fsgid || fs_caps != self.fs_caps || cr->ngroups != self.ngroups)
        return -1;
    return memcmp(cr->groups, self.groups, (size_t)cr->ngroups * sizeof(unsigned)) == 0 ? 0 : -1;
}

/* The client whose filesystem identity this thread kept after its last path call (NULL: the
 * worker's own). Taking an identity and giving it back cost two credential changes each (~3
 * µs here), so it is kept until the thread serves another client or goes back to Python
 * (lsca_path_settle). Meanwhile the thread does only that client's calls and reads /proc
 * entries anyone may read (pidfd_getfd, kcmp and process_vm_* check the real ids). */
static __thread const struct lsca_client_fast *held_for;

static void leave(void)
{
    held_for = NULL;
    if (self.root) {
        unsigned none = 0;
        lsca_become(0, 0, self.ngroups, self.ngroups ? self.groups : &none);
    }
}

void lsca_path_settle(const struct lsca_client_fast *c)
{
    if (held_for && held_for != c)
        leave();
}

/* What every call that passed the prologue does last: let go of its descriptors (-1: none).
 * The client's identity stays (see held_for). Returns outcome. */
static int finish(int outcome, int base, int fd1, int fd2)
{
    /* place() hands base itself back for a name without a directory: closed once, below. */
    if (fd1 >= 0 && fd1 != base)
        close(fd1);
    if (fd2 >= 0 && fd2 != base && fd2 != fd1)
        close(fd2);
    if (base >= 0)
        close(base);
    return outcome;
}

/* The kernel's answer rc (0 or -1 with errno) as the call's. */
static int answer(int rc, int64_t *result, int32_t *err)
{
    *result = rc == 0 ? 0 : -1;
    *err = rc == 0 ? 0 : errno;
    return LSCA_ANSWERED;
}

/* handlers_path.refuse_self_names, gate._split's trailing slash, and "." / ".." names: the
 * Python route. 1 when the name may go this way. */
static int plain_name(const char *path)
{
    static const char *const self_names[] = { "/proc", "/dev/fd", "/dev/stdin", "/dev/stdout", "/dev/stderr",
                                              "/dev/tty" };
    char normal[LSCA_PATH_MAX];
    size_t n = 0, len = strlen(path);
    const char *last;

    if (len == 0 || path[len - 1] == '/')
        return 0;
    for (size_t i = 0; path[i] && n < sizeof(normal) - 1; i++)
        if (!(path[i] == '/' && n > 0 && normal[n - 1] == '/'))
            normal[n++] = path[i];
    normal[n] = '\0';
    for (size_t k = 0; k < sizeof(self_names) / sizeof(*self_names); k++) {
        size_t m = strlen(self_names[k]);
        if (strncmp(normal, self_names[k], m) == 0 && (normal[m] == '\0' || normal[m] == '/'))
            return 0;
    }
    last = strrchr(path, '/');
    last = last ? last + 1 : path;
    return strcmp(last, ".") != 0 && strcmp(last, "..") != 0;
}

#define NO_BASE INT64_MIN              /* prologue: an absolute name, no directory to start from */
#define BAD_BASE (INT64_MIN + 1)       /* prologue: a dirfd no C int holds (the Python route: EBADF) */

/* Where a name starts: nowhere for an absolute one, else the call's dirfd (AT_FDCWD: the cwd).
 * A client writes any 64-bit value there, NO_BASE's too: only an int is a dirfd. */
static int64_t base_for(int64_t dirfd, const char *path)
{
    if (path[0] == '/')
        return NO_BASE;
    return dirfd >= INT32_MIN && dirfd <= INT32_MAX ? dirfd : BAD_BASE;
}

/* handlers_path.dirfd_of: our duplicate of the client's directory descriptor dirfd; -1 (the
 * Python route) when it has none, it is no directory, or it is one in /proc. */
static int client_dir(struct lsca_client_fast *c, int64_t dirfd)
{
    struct lsca_fd_entry e;
    struct stat st;
    int fd = -1;

    if (lsca_fd_get(c, dirfd, &e) != 0)
        return -1;
    if (e.fd >= 0 && S_ISDIR(e.mode))
        fd = fcntl(e.fd, F_DUPFD_CLOEXEC, 0);
    lsca_fd_put(&e);
    if (fd >= 0 && (fstat(fd, &st) < 0 || st.st_dev == self.proc_dev)) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* What both routes do first (creds.acting_as): the calling thread's credentials, within the
 * registration, the same root, the directory a relative name starts from (base_of: see
 * base_for; *base, -1 for none), and its identity taken. 0 when done (leave() and closing
 * base are the caller's); -1: the Python route. */
static int prologue(struct lsca_client_fast *c, const struct lsca_slot *slot, int64_t base_of, int real_ids,
                    int *base)
{
    struct lsca_task_files *t;
    struct creds cr;
    struct stat st;

    *base = -1;
    if (base_of == BAD_BASE)
        return -1;
    /* The calling thread (an untrusted tid: not a thread of the client has no entry there). */
    if (slot->owner_tid <= 0 || !(t = task_files(c, slot->owner_tid)))
        return -1;
    if (read_creds(t->status, &cr) < 0) {
        task_forget(t);
        return -1;                      /* a gone thread: the process's, on the Python route */
    }
    /* After the read: the credentials read were the registered process's. */
    if (!within_registration(c, &cr) || !lsca_client_authorized(c))
        return -1;                      /* the Python route revokes it */
    if (fstatat(t->dir, "root", &st, 0) < 0 || st.st_dev != self.root_dev || st.st_ino != self.root_ino)
        return -1;
    if (base_of == AT_FDCWD_ARG) {
        /* Its cwd, as ourselves (entering it is no permission the program needs). */
        *base = openat(t->dir, "cwd", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (*base < 0 || fstat(*base, &st) < 0 || st.st_dev == self.proc_dev)
            goto fail;
    } else if (base_of != NO_BASE && (*base = client_dir(c, base_of)) < 0) {
        goto fail;
    }
    if (enter(&cr, real_ids) == 0) {
        held_for = c;
        lsca_use_umask(cr.umask);
        return 0;
    }
    leave();                            /* enter may have taken part of the identity */
fail:
    if (*base >= 0)
        close(*base);
    *base = -1;
    return -1;
}

int lsca_path_take_caller(struct lsca_client_fast *c, const struct lsca_slot *slot)
{
    int base;

    if (!self.ready || !c->id_known || c->proc_dir < 0)
        return -1;
    return prologue(c, slot, NO_BASE, 0, &base);
}

#define PLACE_NOT_HERE (-2)

/* gate.resolve for a name that is not a symlink to follow: its directory, opened without
 * crossing a magic link, and the last name in it. -1 with errno: it does not resolve (see
 * unresolved); PLACE_NOT_HERE: a place in /proc, a magic link or a symlink loop on the way
 * (ELOOP: the Python route tells them apart), a directory name too long to copy. A name
 * without a slash is in base itself (a directory outside /proc, as prologue checked): base
 * is returned, not a copy (finish closes it once). */
static int place(int base, const char *path, const char **name)
{
    char head[LSCA_PATH_MAX];
    const char *slash = strrchr(path, '/');
    struct stat st;
    int dfd;

    if (slash) {
        size_t n = (size_t)(slash - path);
        if (n >= sizeof(head))
            return PLACE_NOT_HERE;
        memcpy(head, path, n);
        head[n] = '\0';
        if (n == 0)
            strcpy(head, "/");
        *name = slash + 1;
    } else if (base >= 0) {
        *name = path;
        return base;
    } else {
        strcpy(head, ".");
        *name = path;
    }
    dfd = lsca_do_open_nomagic(base >= 0 ? base : AT_FDCWD, head, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
    if (dfd < 0 && errno == ELOOP)
        return PLACE_NOT_HERE;          /* a magic link on the way (/proc/self/...): the program's own call */
    if (dfd >= 0 && (fstat(dfd, &st) < 0 || st.st_dev == self.proc_dev)) {
        close(dfd);
        dfd = PLACE_NOT_HERE;
    }
    return dfd;
}

/* The call itself on a place that cannot exist (dirfd -1, name "x"): the kernel's word on its
 * flags, which it checks before any name (handlers_path.place's probe). */
static int probe(const struct lsca_slot *slot)
{
    int a1 = (int)slot->args[1], a2 = (int)slot->args[2];
    struct stat st;
    struct statx stx;

    switch (slot->op) {
    case LSCA_OP_FSTATAT: return fstatat(-1, "x", &st, a1);
    case LSCA_OP_STATX: return statx(-1, "x", a1, (unsigned)(slot->args[2] & 0xFFFFFFFF), &stx);
    case LSCA_OP_FACCESSAT: return faccessat(-1, "x", a1, a2 | AT_EACCESS);
    case LSCA_OP_MKDIRAT: return mkdirat(-1, "x", (mode_t)(slot->args[1] & 07777));
    case LSCA_OP_UNLINKAT: return unlinkat(-1, "x", a1);
    case LSCA_OP_OPENAT: {
        int fd = openat(-1, "x", a1, (mode_t)(slot->args[2] & 07777));
        if (fd >= 0)
            close(fd);                  /* cannot be: a relative name and no directory */
        return fd < 0 ? -1 : 0;
    }
    case LSCA_OP_UTIMENSAT:
        return utimensat(-1, "x", slot->args[2] ? (const struct timespec *)slot->data : NULL, a1);
    default: errno = EBADF; return -1;
    }
}

/* The name's directory did not resolve (errno): the call fails so, unless the kernel refuses
 * its flags first (then EINVAL), as handlers_path.place answers. */
static int unresolved(const struct lsca_slot *slot, int64_t *result, int32_t *err)
{
    int e = errno;

    if (probe(slot) < 0 && errno == EINVAL)
        e = EINVAL;
    *result = -1;
    *err = e;
    return LSCA_ANSWERED;
}

/* 1 when the name in dfd is a symlink the call would follow (the Python route follows it hop
 * by hop) or a /proc object (it describes the calling process): the Python route's case. */
static int not_here(int dfd, const char *name, int follow)
{
    struct stat st;

    return fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
           ((S_ISLNK(st.st_mode) && follow) || st.st_dev == self.proc_dev);
}

/* The request's one path: NUL-terminated, inline, plain (see plain_name). */
static const char *one_path(const struct lsca_slot *slot)
{
    const char *path = (const char *)slot->data;

    if (slot->xfer != LSCA_XFER_INLINE || slot->data_len == 0 || slot->data_len > LSCA_PATH_MAX ||
        path[slot->data_len - 1] != '\0' || strlen(path) + 1 != slot->data_len || !plain_name(path))
        return NULL;
    return path;
}

/* fstatat and statx (h_fstatat, h_statx). statx's own flags and mask go to the kernel as they
 * are: it checks them before the name. */
int lsca_path_fstatat(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err)
{
    int64_t dirfd = (int64_t)slot->args[0], flags = (int64_t)slot->args[1];
    int is_statx = slot->op == LSCA_OP_STATX;
    int64_t known = AT_SYMLINK_NOFOLLOW | (is_statx ? AT_NO_AUTOMOUNT | AT_STATX_SYNC_TYPE : 0);
    const char *path = one_path(slot), *name;
    struct stat st;
    struct statx stx;
    int base, dfd, outcome = LSCA_DECLINE, rc;

    if (!self.ready || !c->id_known || c->proc_dir < 0 || !path || (flags & ~known) != 0)
        return LSCA_DECLINE;
    if (prologue(c, slot, base_for(dirfd, path), 0, &base) < 0)
        return LSCA_DECLINE;
    dfd = place(base, path, &name);
    if (dfd == -1) {
        outcome = unresolved(slot, result, err);
    } else if (dfd >= 0) {
        /* The name itself, not followed: a symlink to follow goes the Python way (hop by hop). */
        rc = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW);
        if (rc == 0 && S_ISLNK(st.st_mode) && !(flags & AT_SYMLINK_NOFOLLOW)) {
            outcome = LSCA_DECLINE;
        } else if (rc == 0 && st.st_dev == self.proc_dev) {
            outcome = LSCA_DECLINE;     /* a /proc object describes the calling process */
        } else if (is_statx) {
            rc = statx(dfd, name, (int)flags, (unsigned)(slot->args[2] & 0xFFFFFFFF), &stx);
            if (rc == 0) {
                memcpy(slot->data, &stx, sizeof(stx));
                slot->data_len = (uint32_t)sizeof(stx);
            }
            outcome = answer(rc, result, err);
        } else {
            if (rc == 0) {
                memcpy(slot->data, &st, sizeof(st));
                slot->data_len = (uint32_t)sizeof(st);
            }
            outcome = answer(rc, result, err);
        }
    }
    return finish(outcome, base, dfd, -1);
}

static int fits_int(int64_t v)
{
    return v >= INT32_MIN && v <= INT32_MAX;
}

/* unlinkat, mkdirat and faccessat (handlers_path._one_path, h_faccessat): one name, nothing
 * made for the client. Only faccessat may follow a final symlink: such a name goes the Python
 * way (hop by hop), as does a name that is a /proc object. */
int lsca_path_name_call(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err)
{
    int64_t dirfd = (int64_t)slot->args[0], a1 = (int64_t)slot->args[1], a2 = (int64_t)slot->args[2];
    const char *path = one_path(slot), *name;
    unsigned op = slot->op;
    int access = op == LSCA_OP_FACCESSAT;
    int follow = access && !(a2 & AT_SYMLINK_NOFOLLOW), real_ids = access && !(a2 & AT_EACCESS);
    int base, dfd, rc, outcome = LSCA_DECLINE;

    if (!self.ready || !c->id_known || c->proc_dir < 0 || !path || !fits_int(a1) || (access && !fits_int(a2)))
        return LSCA_DECLINE;
    if (prologue(c, slot, base_for(dirfd, path), real_ids, &base) < 0)
        return LSCA_DECLINE;
    dfd = place(base, path, &name);
    if (dfd < 0) {
        outcome = dfd == -1 ? unresolved(slot, result, err) : LSCA_DECLINE;
        goto out;
    }
    if (access && not_here(dfd, name, follow))
        goto out;
    if (op == LSCA_OP_UNLINKAT)
        rc = unlinkat(dfd, name, (int)a1);
    else if (op == LSCA_OP_MKDIRAT)
        rc = mkdirat(dfd, name, (mode_t)(a1 & 07777));
    else if (access)
        rc = faccessat(dfd, name, (int)a1, (int)a2 | AT_EACCESS);   /* with the ids entered above */
    else
        goto out;
    outcome = answer(rc, result, err);
out:
    return finish(outcome, base, dfd, -1);
}

/* renameat2 and linkat (handlers_path._two_paths) when both names are plain, neither followed
 * (no AT_SYMLINK_FOLLOW, no AT_EMPTY_PATH: no flags for linkat) and both places resolve. */
int lsca_path_two_names(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err)
{
    int64_t olddirfd = (int64_t)slot->args[0], newdirfd = (int64_t)slot->args[1], flags = (int64_t)slot->args[2];
    const char *old = (const char *)slot->data, *new, *oldname, *newname;
    size_t oldlen;
    int base, olddfd = -1, newdfd = -1, rc, outcome = LSCA_DECLINE;

    if (!self.ready || !c->id_known || c->proc_dir < 0 || slot->xfer != LSCA_XFER_INLINE ||
        slot->data_len < 4 || slot->data_len > 2 * LSCA_PATH_MAX || slot->data[slot->data_len - 1] != '\0')
        return LSCA_DECLINE;
    oldlen = strnlen(old, slot->data_len);
    new = old + oldlen + 1;
    /* Each name within LSCA_PATH_MAX, as one_path's (place() copies a name's directory). */
    if (oldlen == 0 || oldlen >= LSCA_PATH_MAX || oldlen + 2 >= slot->data_len || strlen(new) >= LSCA_PATH_MAX ||
        strlen(new) + oldlen + 2 != slot->data_len ||
        (olddirfd != AT_FDCWD_ARG && old[0] != '/') || (newdirfd != AT_FDCWD_ARG && new[0] != '/') ||
        !plain_name(old) || !plain_name(new) || flags < 0 || flags > UINT32_MAX ||
        (slot->op == LSCA_OP_LINKAT && flags != 0))
        return LSCA_DECLINE;
    if (prologue(c, slot, old[0] != '/' || new[0] != '/' ? AT_FDCWD_ARG : NO_BASE, 0, &base) < 0)
        return LSCA_DECLINE;
    olddfd = place(base, old, &oldname);
    newdfd = olddfd >= 0 ? place(base, new, &newname) : -1;
    if (newdfd < 0)
        goto out;                       /* which error comes first is the Python route's to say */
    if (slot->op == LSCA_OP_LINKAT)
        rc = linkat(olddfd, oldname, newdfd, newname, 0);
    else
        rc = renameat2(olddfd, oldname, newdfd, newname, (unsigned)flags);
    outcome = answer(rc, result, err);
out:
    return finish(outcome, base, olddfd, newdfd);
}

/* fchmod and fchown (h_fchmod, h_fchown): on the client's descriptor (e; fd -1 when it has
 * none, for the kernel's EBADF), as its calling thread. */
int lsca_path_fd_owner_call(struct lsca_client_fast *c, struct lsca_slot *slot, const struct lsca_fd_entry *e,
                            int64_t *result, int32_t *err)
{
    int64_t a1 = (int64_t)slot->args[1], a2 = (int64_t)slot->args[2];
    int base, rc;

    if (!self.ready || !c->id_known || c->proc_dir < 0 ||
        (slot->op == LSCA_OP_FCHOWN && (!fits_int(a1) || !fits_int(a2))))
        return LSCA_DECLINE;
    if (prologue(c, slot, NO_BASE, 0, &base) < 0)
        return LSCA_DECLINE;
    if (slot->op == LSCA_OP_FCHMOD)
        rc = fchmod(e->fd, (mode_t)(slot->args[1] & 07777));
    else
        rc = fchown(e->fd, (uid_t)(int32_t)a1, (gid_t)(int32_t)a2);
    return finish(answer(rc, result, err), -1, -1, -1);
}

/* utimensat (h_utimensat): the times (when given) come first in data, then the name (when
 * given); without a name, the client's descriptor dirfd. A final symlink to follow or a /proc
 * object goes the Python way. */
int lsca_path_utimensat(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err)
{
    int64_t dirfd = (int64_t)slot->args[0], flags = (int64_t)slot->args[1];
    uint32_t start = slot->args[2] ? 2 * sizeof(struct timespec) : 0;
    const struct timespec *times = slot->args[2] ? (const struct timespec *)slot->data : NULL;
    const char *path = (const char *)slot->data + start, *name = NULL;
    struct lsca_fd_entry e;
    int base, dfd = -1, outcome = LSCA_DECLINE, got = -1;

    if (!self.ready || !c->id_known || c->proc_dir < 0 || slot->xfer != LSCA_XFER_INLINE || !fits_int(flags) ||
        slot->data_len > start + LSCA_PATH_MAX || (times && slot->data_len < start))
        return LSCA_DECLINE;
    if (times && times[0].tv_nsec == UTIME_OMIT && times[1].tv_nsec == UTIME_OMIT)
        return answer(0, result, err);  /* the kernel's first check: nothing to do, no name looked at */
    if (slot->args[3]) {
        if (slot->data_len <= start || path[slot->data_len - start - 1] != '\0' ||
            strlen(path) + 1 + start != slot->data_len || !plain_name(path))
            return LSCA_DECLINE;
    } else {
        memset(&e, 0, sizeof(e));
        got = lsca_fd_get(c, dirfd, &e);
        if (got < 0)
            return LSCA_DECLINE;
    }
    if (prologue(c, slot, slot->args[3] ? base_for(dirfd, path) : NO_BASE, 0, &base) < 0)
        goto done;
    if (slot->args[3]) {
        dfd = place(base, path, &name);
        if (dfd == -1)
            outcome = unresolved(slot, result, err);
        if (dfd < 0 || not_here(dfd, name, !(flags & AT_SYMLINK_NOFOLLOW)))
            goto out;
    }
    outcome = answer(lsca_do_utimensat(slot->args[3] ? dfd : e.fd, name, times, (int)flags), result, err);
out:
    finish(outcome, base, dfd, -1);
done:
    if (got >= 0)
        lsca_fd_put(&e);
    return outcome;
}

static int tty_major(unsigned major)
{
    return major == 4 || major == 5 || (major >= 136 && major <= 143);
}

int lsca_path_openat(struct lsca_client_fast *c, struct lsca_slot *slot, int64_t *result, int32_t *err)
{
    int64_t dirfd = (int64_t)slot->args[0], flags = (int64_t)slot->args[1];
    const char *path = one_path(slot), *name;
    struct stat st;
    int base, dfd, fd = -1, outcome = LSCA_DECLINE;

    /* Not here: O_TMPFILE, O_PATH. */
    if (!self.ready || !c->id_known || c->proc_dir < 0 || c->chan_fd < 0 || !path ||
        flags < INT32_MIN || flags > INT32_MAX || (flags & (020000000 | O_PATH)))
        return LSCA_DECLINE;

    if (prologue(c, slot, base_for(dirfd, path), 0, &base) < 0)
        return LSCA_DECLINE;
    dfd = place(base, path, &name);
    if (dfd < 0) {
        outcome = dfd == -1 ? unresolved(slot, result, err) : LSCA_DECLINE;
        goto out;
    }
    /* Look before opening (h_openat): what an open would wait on or misname runs natively. */
    /* A final symlink goes the Python way unless O_NOFOLLOW: it follows it hop by hop, and for
     * O_CREAT|O_EXCL it looks at what the link names (as h_openat does) before the EEXIST. */
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        ((S_ISLNK(st.st_mode) && !(flags & O_NOFOLLOW)) || st.st_dev == self.proc_dev ||
         (S_ISFIFO(st.st_mode) && !(flags & O_NONBLOCK)) || (S_ISCHR(st.st_mode) && tty_major(major(st.st_rdev)))))
        goto out;
    /* _open_without_waiting: non-blocking and without a controlling tty, looked at after. */
    fd = lsca_do_open_nomagic(dfd, name, (int)flags | O_NONBLOCK | O_NOCTTY, (unsigned)(slot->args[2] & 07777));
    if (fd < 0) {
        if (errno == ELOOP || ((errno == EAGAIN || errno == EWOULDBLOCK) && !(flags & O_NONBLOCK)))
            goto out;                   /* a magic link, or a lease: the Python route decides */
        *result = -1;
        *err = errno;
        outcome = LSCA_ANSWERED;
        goto out;
    }
    if (fstat(fd, &st) < 0 || (S_ISFIFO(st.st_mode) && !(flags & O_NONBLOCK)) ||
        (S_ISCHR(st.st_mode) && tty_major(major(st.st_rdev))))
        goto out;
    if (!(flags & O_NONBLOCK)) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
            goto out;
    }
    /* Queued before DONE; a client that does not read its channel fails its own call (EIO). */
    *result = lsca_send_fd(c->chan_fd, slot->seq, fd) == 0 ? 0 : -1;
    *err = *result == 0 ? 0 : EIO;
    outcome = LSCA_ANSWERED;
out:
    return finish(outcome, base, fd, dfd);
}

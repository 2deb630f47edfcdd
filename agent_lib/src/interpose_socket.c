/*
 * interpose_socket.c - socket I/O: send sendto sendmsg recv recvfrom recvmsg accept
 * accept4 connect shutdown. Addresses travel in data[0..LSCA_ADDR_MAX), payloads after
 * them. Ancillary data (SCM_RIGHTS, credentials) names the process itself: such
 * sendmsg/recvmsg calls run natively, as do messages larger than the slot, and calls with
 * a buffer, address, length or message header that would fault (the kernel answers those).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "agent.h"

#define PAYLOAD_MAX (LSCA_INLINE_MAX - LSCA_ADDR_MAX)
#define PAYLOAD(c) ((c)->slot->data + LSCA_ADDR_MAX)
#define ARG(x) ((uint64_t)(int64_t)(x))

DECLARE_REAL(send);
DECLARE_REAL(sendto);
DECLARE_REAL(sendmsg);
DECLARE_REAL(recv);
DECLARE_REAL(recvfrom);
DECLARE_REAL(recvmsg);
DECLARE_REAL(accept);
DECLARE_REAL(accept4);
DECLARE_REAL(connect);
DECLARE_REAL(shutdown);

/* Copy an address in; -1 (run natively) when it does not fit or would fault. */
static int put_addr(struct lsca_call *c, const void *addr, socklen_t addrlen)
{
    if (!addr || addrlen == 0) {
        c->slot->args[3] = 0;
        return 0;
    }
    if (addrlen > LSCA_ADDR_MAX || !lsca_user_readable(addr, addrlen))
        return -1;
    memcpy(c->slot->data, addr, addrlen);
    c->slot->args[3] = addrlen;
    return 0;
}

/* Hand an address back the way the kernel does: at most *len bytes, *len = its real length. */
static void give_addr(struct lsca_call *c, void *addr, socklen_t *len, socklen_t real)
{
    if (addr && len) {
        socklen_t n = *len < real ? *len : real;
        memcpy(addr, c->slot->data, n < LSCA_ADDR_MAX ? n : LSCA_ADDR_MAX);
        *len = real;
    }
}

/* An address to hand back: *len is read and written, then up to *len bytes of addr. */
static int wants_addr(void *addr, socklen_t *len)
{
    return addr && len && lsca_user_writable(len, sizeof(*len)) && lsca_user_writable(addr, *len);
}

/* ---- send ---- */

static int proxy_send(struct lsca_call *cp, int fd, const void *buf, size_t len, int flags,
                      const struct sockaddr *addr, socklen_t addrlen, long *result)
{
#define c (*cp)
    if (!lsca_user_readable(buf, len) || !lsca_begin(&c, LSCA_OP_SENDTO))
        return 0;
    if (put_addr(&c, addr, addrlen) < 0) {
        lsca_abandon(&c);
        return 0;
    }
    c.slot->args[0] = ARG(fd);
    c.slot->args[1] = len;
    c.slot->args[2] = ARG(flags);
    if (len <= PAYLOAD_MAX) {
        if (len)
            memcpy(PAYLOAD(&c), buf, len);
        c.slot->data_len = (uint32_t)(LSCA_ADDR_MAX + len);
    } else {
        c.slot->xfer = LSCA_XFER_REMOTE;
        c.slot->remote_addr = (uint64_t)(uintptr_t)buf;
        c.slot->data_len = LSCA_ADDR_MAX;
    }
    if (!lsca_exchange(&c)) {
        lsca_end(&c);
        return 0;
    }
    *result = lsca_end(&c);
    return 1;
#undef c
}

/* The native run of a call the helper did not answer, and its report if it waited; a
 * send's or receive's report has the first bytes it moved, for its trace line. */
#define NATIVE_REPORTED(c, call)                                                 \
    do {                                                                        \
        long r_ = (long)(call);                                                 \
        lsca_report_waited(&(c), r_, NULL, 0);                                  \
        return r_;                                                              \
    } while (0)
#define NATIVE_SENT(c, call, buf, len)                                          \
    do {                                                                        \
        long r_ = (long)(call);                                                 \
        lsca_report_waited(&(c), r_, (buf), (len));                             \
        return r_;                                                              \
    } while (0)
/* What a receive moved: no more than the buffer holds (MSG_TRUNC may say more). */
#define NATIVE_RECEIVED(c, call, buf, len)                                      \
    do {                                                                        \
        long r_ = (long)(call);                                                 \
        lsca_report_waited(&(c), r_, (buf), r_ <= 0 ? 0 : (size_t)r_ < (len) ? (size_t)r_ : (len)); \
        return r_;                                                              \
    } while (0)

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t addrlen)
{
    struct lsca_call c = { .report = 0 };
    long r;
    if (proxy_send(&c, fd, buf, len, flags, addr, addrlen, &r))
        return r;
    NATIVE_SENT(c, REAL(sendto)(fd, buf, len, flags, addr, addrlen), buf, len);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    struct lsca_call c = { .report = 0 };
    long r;
    if (proxy_send(&c, fd, buf, len, flags, NULL, 0, &r))
        return r;
    NATIVE_SENT(c, REAL(send)(fd, buf, len, flags), buf, len);
}

/* ---- recv ---- */

static int proxy_recv(struct lsca_call *cp, int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                      socklen_t *addrlen, long *result)
{
#define c (*cp)
    int want = wants_addr(addr, addrlen);

    if (!lsca_user_writable(buf, len) || (addr && !want) || !lsca_begin(&c, LSCA_OP_RECVFROM))
        return 0;
    c.slot->args[0] = ARG(fd);
    c.slot->args[1] = len;
    c.slot->args[2] = ARG(flags);
    c.slot->args[3] = want;
    c.slot->data_len = LSCA_ADDR_MAX;
    if (len > PAYLOAD_MAX) {
        c.slot->xfer = LSCA_XFER_REMOTE;
        c.slot->remote_addr = (uint64_t)(uintptr_t)buf;
    }
    if (!lsca_exchange(&c)) {
        lsca_end(&c);
        return 0;
    }
    long n = c.slot->result;
    if (n > 0 && c.slot->xfer == LSCA_XFER_INLINE)
        memcpy(buf, PAYLOAD(&c), (size_t)n < len ? (size_t)n : len);   /* MSG_TRUNC may say more */
    if (n >= 0 && want)
        give_addr(&c, addr, addrlen, (socklen_t)c.slot->new_fds[0]);
    *result = lsca_end(&c);
    return 1;
#undef c
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *addrlen)
{
    struct lsca_call c = { .report = 0 };
    long r;
    if (proxy_recv(&c, fd, buf, len, flags, addr, addrlen, &r))
        return r;
    NATIVE_RECEIVED(c, REAL(recvfrom)(fd, buf, len, flags, addr, addrlen), buf, len);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    struct lsca_call c = { .report = 0 };
    long r;
    if (proxy_recv(&c, fd, buf, len, flags, NULL, NULL, &r))
        return r;
    NATIVE_RECEIVED(c, REAL(recv)(fd, buf, len, flags), buf, len);
}

/* ---- sendmsg / recvmsg: without ancillary data, within the slot ---- */

/* The header (copied to *m) and its iovec array (copied to the tail of the slot's data),
 * with the payload's total; NULL when the call runs natively: ancillary data, a payload
 * larger than the slot, or memory the kernel would find faulting (the header is written
 * back by recvmsg, the name and buffers read by sendmsg and written by recvmsg). */
static const struct iovec *take_msg(struct lsca_call *c, const struct msghdr *msg, struct msghdr *m,
                                    int send, size_t *total)
{
    size_t bytes, i;
    struct iovec *v;

    *total = 0;
    if ((!send && !lsca_user_writable((void *)msg, sizeof(*m))) || lsca_user_read(m, msg, sizeof(*m)) < 0)
        return NULL;
    if (m->msg_controllen || m->msg_iovlen > 1024)
        return NULL;
    if (m->msg_name && (send ? !lsca_user_readable(m->msg_name, m->msg_namelen)
                             : !lsca_user_writable(m->msg_name, m->msg_namelen)))
        return NULL;
    bytes = m->msg_iovlen * sizeof(struct iovec);
    if (bytes > PAYLOAD_MAX)
        return NULL;
    v = (struct iovec *)(c->slot->data + LSCA_INLINE_MAX - bytes);
    if (lsca_user_read(v, m->msg_iov, bytes) < 0)
        return NULL;
    for (i = 0; i < m->msg_iovlen; i++) {
        if (send ? !lsca_user_readable(v[i].iov_base, v[i].iov_len)
                 : !lsca_user_writable(v[i].iov_base, v[i].iov_len))
            return NULL;
        *total += v[i].iov_len;
        if (*total > PAYLOAD_MAX - bytes)
            return NULL;
    }
    return v;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct lsca_call c = { .report = 0 };
    struct msghdr m;
    const struct iovec *v;
    size_t total, off = 0, i;

    if (lsca_begin(&c, LSCA_OP_SENDMSG)) {
        if (!(v = take_msg(&c, msg, &m, 1, &total)) || put_addr(&c, m.msg_name, m.msg_namelen) < 0) {
            lsca_abandon(&c);
        } else {
            c.slot->args[0] = ARG(fd);
            c.slot->args[1] = (uint64_t)total;
            c.slot->args[2] = ARG(flags);
            for (i = 0; i < m.msg_iovlen; i++) {
                memcpy(PAYLOAD(&c) + off, v[i].iov_base, v[i].iov_len);
                off += v[i].iov_len;
            }
            c.slot->data_len = (uint32_t)(LSCA_ADDR_MAX + off);
            if (lsca_exchange(&c))
                return lsca_end(&c);
            lsca_end(&c);
        }
    }
    NATIVE_REPORTED(c, REAL(sendmsg)(fd, msg, flags));
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct lsca_call c = { .report = 0 };
    struct msghdr m;
    const struct iovec *v;
    size_t total;

    if (lsca_begin(&c, LSCA_OP_RECVMSG)) {
        if (!(v = take_msg(&c, msg, &m, 0, &total))) {
            lsca_abandon(&c);
            return REAL(recvmsg)(fd, msg, flags);
        }
        c.slot->args[0] = ARG(fd);
        c.slot->args[1] = (uint64_t)total;
        c.slot->args[2] = ARG(flags);
        c.slot->args[3] = m.msg_name != NULL;
        c.slot->data_len = LSCA_ADDR_MAX;
        if (lsca_exchange(&c)) {
            long n = c.slot->result;
            if (n >= 0) {
                /* Scatter what came (MSG_TRUNC may report more than the buffers hold). */
                size_t left = (size_t)n < total ? (size_t)n : total, off = 0, i;
                for (i = 0; i < m.msg_iovlen && left; i++) {
                    size_t k = v[i].iov_len < left ? v[i].iov_len : left;
                    memcpy(v[i].iov_base, PAYLOAD(&c) + off, k);
                    off += k;
                    left -= k;
                }
                if (m.msg_name)
                    give_addr(&c, m.msg_name, &msg->msg_namelen, (socklen_t)c.slot->new_fds[0]);
                msg->msg_flags = c.slot->new_fds[1];
            }
            return lsca_end(&c);
        }
        lsca_end(&c);
    }
    NATIVE_REPORTED(c, REAL(recvmsg)(fd, msg, flags));
}

/* ---- accept, connect, shutdown ---- */

static int proxy_accept(struct lsca_call *cp, int fd, struct sockaddr *addr, socklen_t *addrlen, int flags,
                        int *answered)
{
#define c (*cp)
    int want = wants_addr(addr, addrlen), newfd;

    *answered = 0;
    if ((addr && !want) || !lsca_begin(&c, LSCA_OP_ACCEPT4))
        return 0;
    c.slot->args[0] = ARG(fd);
    c.slot->args[1] = ARG(flags);
    c.slot->args[2] = want;
    *answered = lsca_exchange_newfds(&c, &newfd, 1, flags & SOCK_CLOEXEC);
    if (*answered && c.slot->result >= 0) {
        if (want)
            give_addr(&c, addr, addrlen, (socklen_t)c.slot->data_len);
        c.slot->result = newfd;
    }
    return (int)lsca_end(&c);
#undef c
}

int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    struct lsca_call c = { .report = 0 };
    int answered, r = proxy_accept(&c, fd, addr, addrlen, flags, &answered);
    if (answered)
        return r;
    NATIVE_REPORTED(c, REAL(accept4)(fd, addr, addrlen, flags));
}

int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    struct lsca_call c = { .report = 0 };
    int answered, r = proxy_accept(&c, fd, addr, addrlen, 0, &answered);
    if (answered)
        return r;
    NATIVE_REPORTED(c, REAL(accept)(fd, addr, addrlen));
}

int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    struct lsca_call c = { .report = 0 };

    if (lsca_begin(&c, LSCA_OP_CONNECT)) {
        if (!addr || put_addr(&c, addr, addrlen) < 0) {
            lsca_abandon(&c);
        } else {
            c.slot->args[0] = ARG(fd);
            c.slot->args[1] = addrlen;
            c.slot->data_len = addrlen;
            if (lsca_exchange(&c))
                return (int)lsca_end(&c);
            lsca_end(&c);
        }
    }
    NATIVE_REPORTED(c, REAL(connect)(fd, addr, addrlen));
}

int shutdown(int fd, int how)
{
    struct lsca_call c;

    if (lsca_begin(&c, LSCA_OP_SHUTDOWN)) {
        c.slot->args[0] = ARG(fd);
        c.slot->args[1] = ARG(how);
        if (lsca_exchange(&c))
            return (int)lsca_end(&c);
        lsca_end(&c);
    }
    return REAL(shutdown)(fd, how);
}

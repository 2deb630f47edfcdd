/*
 * interpose_socket.c - socket I/O: send sendto sendmsg recv recvfrom recvmsg accept
 * accept4 connect shutdown. Addresses travel in data[0..LSCA_ADDR_MAX), payloads after
 * them. Ancillary data (SCM_RIGHTS, credentials) names the process itself: such
 * sendmsg/recvmsg calls run natively, as do messages larger than the slot.
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
    if (addrlen > LSCA_ADDR_MAX || lsca_bad_pointer(addr, addrlen))
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

static int wants_addr(void *addr, socklen_t *len)
{
    return addr && len && !lsca_bad_pointer(len, sizeof(*len));
}

/* ---- send ---- */

static int proxy_send(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                      socklen_t addrlen, long *result)
{
    struct lsca_call c;

    if (lsca_bad_pointer(buf, len) || !lsca_begin(&c, LSCA_OP_SENDTO))
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
}

ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr, socklen_t addrlen)
{
    long r;
    return proxy_send(fd, buf, len, flags, addr, addrlen, &r) ? r : REAL(sendto)(fd, buf, len, flags, addr, addrlen);
}

ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    long r;
    return proxy_send(fd, buf, len, flags, NULL, 0, &r) ? r : REAL(send)(fd, buf, len, flags);
}

/* ---- recv ---- */

static int proxy_recv(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *addrlen,
                      long *result)
{
    struct lsca_call c;
    int want = wants_addr(addr, addrlen);

    if (lsca_bad_pointer(buf, len) || (addr && !want) || !lsca_begin(&c, LSCA_OP_RECVFROM))
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
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr, socklen_t *addrlen)
{
    long r;
    return proxy_recv(fd, buf, len, flags, addr, addrlen, &r) ? r : REAL(recvfrom)(fd, buf, len, flags, addr, addrlen);
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    long r;
    return proxy_recv(fd, buf, len, flags, NULL, NULL, &r) ? r : REAL(recv)(fd, buf, len, flags);
}

/* ---- sendmsg / recvmsg: without ancillary data, within the slot ---- */

static ssize_t msg_total(const struct msghdr *msg)
{
    size_t total = 0;
    size_t i;

    if (lsca_bad_pointer(msg, sizeof(*msg)) || msg->msg_controllen || msg->msg_iovlen > 1024 ||
        (msg->msg_iovlen && lsca_bad_pointer(msg->msg_iov, 1)))
        return -1;
    for (i = 0; i < msg->msg_iovlen; i++) {
        if (lsca_bad_pointer(msg->msg_iov[i].iov_base, msg->msg_iov[i].iov_len))
            return -1;
        total += msg->msg_iov[i].iov_len;
        if (total > PAYLOAD_MAX)
            return -1;
    }
    return (ssize_t)total;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
    struct lsca_call c;
    ssize_t total = msg_total(msg);
    size_t off = 0, i;

    if (total < 0) {
        lsca_count_passthrough(LSCA_OP_SENDMSG);
    } else if (lsca_begin(&c, LSCA_OP_SENDMSG)) {
        if (put_addr(&c, msg->msg_name, msg->msg_namelen) < 0) {
            lsca_abandon(&c);
        } else {
            c.slot->args[0] = ARG(fd);
            c.slot->args[1] = (uint64_t)total;
            c.slot->args[2] = ARG(flags);
            for (i = 0; i < msg->msg_iovlen; i++) {
                memcpy(PAYLOAD(&c) + off, msg->msg_iov[i].iov_base, msg->msg_iov[i].iov_len);
                off += msg->msg_iov[i].iov_len;
            }
            c.slot->data_len = (uint32_t)(LSCA_ADDR_MAX + off);
            if (lsca_exchange(&c))
                return lsca_end(&c);
            lsca_end(&c);
        }
    }
    return REAL(sendmsg)(fd, msg, flags);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    struct lsca_call c;
    ssize_t total = msg_total(msg);

    if (total < 0 || (msg->msg_name && lsca_bad_pointer(msg->msg_name, msg->msg_namelen))) {
        lsca_count_passthrough(LSCA_OP_RECVMSG);
    } else if (lsca_begin(&c, LSCA_OP_RECVMSG)) {
        c.slot->args[0] = ARG(fd);
        c.slot->args[1] = (uint64_t)total;
        c.slot->args[2] = ARG(flags);
        c.slot->args[3] = msg->msg_name != NULL;
        c.slot->data_len = LSCA_ADDR_MAX;
        if (lsca_exchange(&c)) {
            long n = c.slot->result;
            if (n >= 0) {
                /* Scatter what came (MSG_TRUNC may report more than the buffers hold). */
                size_t left = (size_t)n < (size_t)total ? (size_t)n : (size_t)total, off = 0, i;
                for (i = 0; i < msg->msg_iovlen && left; i++) {
                    size_t k = msg->msg_iov[i].iov_len < left ? msg->msg_iov[i].iov_len : left;
                    memcpy(msg->msg_iov[i].iov_base, PAYLOAD(&c) + off, k);
                    off += k;
                    left -= k;
                }
                if (msg->msg_name)
                    give_addr(&c, msg->msg_name, &msg->msg_namelen, (socklen_t)c.slot->new_fds[0]);
                msg->msg_flags = c.slot->new_fds[1];
            }
            return lsca_end(&c);
        }
        lsca_end(&c);
    }
    return REAL(recvmsg)(fd, msg, flags);
}

/* ---- accept, connect, shutdown ---- */

static int proxy_accept(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags, int *answered)
{
    struct lsca_call c;
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
}

int accept4(int fd, struct sockaddr *addr, socklen_t *addrlen, int flags)
{
    int answered, r = proxy_accept(fd, addr, addrlen, flags, &answered);
    return answered ? r : REAL(accept4)(fd, addr, addrlen, flags);
}

int accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    int answered, r = proxy_accept(fd, addr, addrlen, 0, &answered);
    return answered ? r : REAL(accept)(fd, addr, addrlen);
}

int connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    struct lsca_call c;

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
    return REAL(connect)(fd, addr, addrlen);
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

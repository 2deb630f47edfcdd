/* Socket calls (a socketpair, TCP on loopback) and descriptors placed where the program asked,
 * whose trace is known line by line (tests/test_trace.py). Exits 1 when a call went wrong. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
    char buf[4096];
    int sv[2], ok = 1, fds[2];
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(addr);
    struct iovec iov = { .iov_base = "hello", .iov_len = 5 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };

    ok &= socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0 && sv[0] == 3 && sv[1] == 4;
    ok &= send(3, "abc", 3, MSG_DONTWAIT) == 3;
    ok &= recv(4, buf, sizeof(buf), 0) == 3;
    ok &= sendmsg(3, &msg, 0) == 5;
    iov.iov_base = buf;
    iov.iov_len = 64;
    ok &= recvmsg(4, &msg, 0) == 5;
    ok &= shutdown(3, SHUT_WR) == 0;
    ok &= recv(4, buf, 16, 0) == 0;

    int server = socket(AF_INET, SOCK_STREAM, 0), client = socket(AF_INET, SOCK_STREAM, 0);
    ok &= server == 5 && client == 6;
    ok &= bind(server, (struct sockaddr *)&addr, sizeof(addr)) == 0 && listen(server, 1) == 0;
    ok &= getsockname(server, (struct sockaddr *)&addr, &len) == 0;
    ok &= connect(client, (struct sockaddr *)&addr, sizeof(addr)) == 0;
    ok &= accept4(server, NULL, NULL, SOCK_CLOEXEC) == 7;
    ok &= sendto(client, "tcp", 3, 0, NULL, 0) == 3;
    ok &= recvfrom(7, buf, sizeof(buf), 0, NULL, NULL) == 3 && memcmp(buf, "tcp", 3) == 0;

    /* The numbers the program got, not where the worker's descriptor first landed (8). */
    ok &= dup3(3, 10, O_CLOEXEC) == 10;
    ok &= fcntl(4, F_DUPFD_CLOEXEC, 20) == 20;
    ok &= pipe2(fds, O_CLOEXEC) == 0 && fds[0] == 8 && fds[1] == 9;
    return ok ? 0 : 1;
}

"""Socket traffic whose outcome does not depend on port numbers: run natively and
under LSCA, the printed JSON must be identical."""
import json
import os
import signal
import socket
import threading

out = {}
big = bytes(range(256)) * 400                  # 100 KiB: larger than a slot

# TCP on loopback: the server thread blocks in accept while the main thread connects.
server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
server.bind(("127.0.0.1", 0))
server.listen(1)
port = server.getsockname()[1]
got = {}


def serve():
    conn, peer = server.accept()
    got["peer_is_loopback"] = peer[0] == "127.0.0.1"
    data = b""
    while len(data) < len(big) + 5:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    got["server_got"] = len(data)
    conn.sendall(data[::-1])
    conn.shutdown(socket.SHUT_WR)
    got["after_shutdown"] = conn.recv(10).decode()
    conn.close()


t = threading.Thread(target=serve)
t.start()
client = socket.create_connection(("127.0.0.1", port))
client.sendall(b"hello" + big)
echoed = b""
while True:
    chunk = client.recv(70000)
    if not chunk:
        break
    echoed += chunk
out["echo_ok"] = echoed == (b"hello" + big)[::-1]
client.close()
t.join()
server.close()
out.update(got)

# UDP with addresses: recvfrom reports the sender.
a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
a.bind(("127.0.0.1", 0))
b.bind(("127.0.0.1", 0))
b.sendto(b"datagram", a.getsockname())
data, sender = a.recvfrom(100)
out["udp"] = [data.decode(), sender == b.getsockname()]
a.close()
b.close()

# sendmsg/recvmsg without ancillary data, with MSG_TRUNC and MSG_PEEK.
s1, s2 = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
s1.sendmsg([b"part1-", b"part2"])
out["peek"] = s2.recv(5, socket.MSG_PEEK).decode()
msg, anc, flags, _ = s2.recvmsg(4)
out["recvmsg"] = [msg.decode(), bool(flags & socket.MSG_TRUNC), anc]
try:
    s2.recv(10, socket.MSG_DONTWAIT)
except BlockingIOError as e:
    out["dontwait"] = e.errno
s1.close()
s2.close()

# send on a socket whose peer is gone: EPIPE (with MSG_NOSIGNAL), SIGPIPE without it.
s1, s2 = socket.socketpair()
s2.close()
try:
    s1.send(b"x", socket.MSG_NOSIGNAL)
except OSError as e:
    out["nosignal"] = e.errno
signal.signal(signal.SIGPIPE, lambda *a: out.setdefault("sigpipe", True))
try:
    s1.send(b"x")
except OSError as e:
    out["send_epipe"] = e.errno
s1.close()
try:
    socket.create_connection(("127.0.0.1", 1))
except OSError as e:
    out["refused"] = e.errno
print(json.dumps(out, sort_keys=True))

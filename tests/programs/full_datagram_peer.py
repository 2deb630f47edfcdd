"""A datagram sent to a peer whose queue is full waits until the peer reads, although the
sending socket polls writable: a worker must not wait in it (every client it serves would stall
with it; here the reads that free the queue come from this very program). Prints "sent N"."""
import os
import socket
import sys
import tempfile
import threading

where = tempfile.mkdtemp()
peer_path = os.path.join(where, "peer")
peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
peer.bind(peer_path)
sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
queued = 0
while True:
    try:
        sender.sendto(b"x" * 100, socket.MSG_DONTWAIT, peer_path)
        queued += 1
    except BlockingIOError:
        break


def drain():
    for _ in range(queued + 1):
        peer.recv(200)


reader = threading.Timer(0.3, drain)
reader.start()
sender.sendto(b"y", peer_path)          # waits for the reader's first recv
reader.join()
print("sent", queued + 1)
os.unlink(peer_path)
os.rmdir(where)
sys.exit(0)

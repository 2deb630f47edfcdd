"""A datagram to a socket file named relative to the cwd, read with SO_PASSCRED: the receiver
sees who sent it (this process's pid and uid), and the name is looked up from this process's
cwd. Prints what it saw as JSON."""
import json
import os
import socket
import struct
import tempfile

os.chdir(tempfile.mkdtemp())
receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.bind("rel.sock")
receiver.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sender.sendto(b"hi", "rel.sock")
data, ancillary, _flags, _addr = receiver.recvmsg(16, socket.CMSG_SPACE(12))
creds = [struct.unpack("3i", d[:12]) for level, kind, d in ancillary
         if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS]
print(json.dumps({"data": data.decode(), "sender_is_me": creds == [(os.getpid(), os.getuid(), os.getgid())]}))
os.unlink("rel.sock")

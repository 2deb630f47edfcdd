"""fcntl calls where the kernel asks for more than a file's access: a pipe larger than
pipe-max-size (CAP_SYS_RESOURCE) and O_NOATIME on a file the caller does not own (owner or
CAP_FOWNER); and who owns a new pipe. Prints what each gave: a root worker must not make them
succeed for a user, nor make the pipe its own."""
import fcntl
import os

F_SETPIPE_SZ = 1031
r, w = os.pipe()
too_big = 64 << 20                      # past pipe-max-size (1 MiB unless raised)
try:
    fcntl.fcntl(w, F_SETPIPE_SZ, too_big)
    print("pipe beyond pipe-max-size: ok")
except OSError as e:
    print("pipe beyond pipe-max-size:", os.strerror(e.errno))
fd = os.open("/etc/hostname", os.O_RDONLY)
try:
    fcntl.fcntl(fd, fcntl.F_SETFL, os.O_NOATIME)
    print("O_NOATIME on root's file: ok")
except OSError as e:
    print("O_NOATIME on root's file:", os.strerror(e.errno))
# A pipe belongs to the filesystem uid of whoever made it: here, this user.
r, w = os.pipe()
print("pipe is mine:", os.fstat(r).st_uid == os.geteuid())

"""Hostile (and one honest) peers of the supervisor's socket, for tests/test_hostile.py.

Runs as another user (nobody, or uid 4242 for the honest client), under /usr/bin/python3
with the standard library only: the project's Python is not readable by other users.
Every mode prints JSON lines on stdout; interactive modes wait for a line on stdin
("check", "end") between phases, and hold what they opened until EOF on stdin.

  honest SOCKET AGENT OUTFILE COUNT BOUND       a session of its own (what lsca run does) and
                                                dd if=/dev/zero of=OUTFILE bs=1 count=COUNT
                                                under the agent, LSCA_REQUIRED=1, all within BOUND s
  deep SOCKET                                   deeply nested JSON requests, one per connection
  garbage SOCKET ABI                            malformed requests and hellos, one per connection
  bigline SOCKET MAXBYTES BOUND                 one request line without a newline, as long as it goes
  flood SOCKET IDLE HALF FDS BOUND              idle, half-hello and descriptor-sending connections
  noread SOCKET REQUESTS                        stats requests, replies never read
  fds SOCKET MESSAGES PER                       descriptors by the thousand on one connection
  forge SOCKET ABI                              hellos that name someone else, or are malformed
  session-owner SOCKET AGENT OUTFILE COUNT      a traced session (as lsca run --trace) and a dd in it
  stall-session SOCKET                          a traced session whose trace is never read
  plant DIR TARGET DEADPID                      a state directory for another user, with a
                                                registry entry naming TARGET as its socket
"""
import array
import fcntl
import json
import os
import resource
import select
import socket
import struct
import subprocess
import sys
import termios
import threading
import time

MAGIC = 0x4C534341
HELLO = struct.Struct("=IIiI40s")
WELCOME = struct.Struct("=IIiiiII")
RECORD_HEAD = struct.Struct("=HHI")     # struct lsca_trace_record: magic, op, size ...
RECORD_PID_OFFSET = 32                  # ... pid (after time_ns, latency_ns, seq)
RECORD_RESULT_OFFSET = 40               # ... tid, then result
TRACE_DROPPED = 0xFFFF                  # op of a marker record: result records were dropped


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def wait_line(expected):
    for line in sys.stdin:
        if line.strip() == expected:
            return True
    return False


def wait_eof():
    while sys.stdin.read(4096):
        pass


def connect(path, timeout=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def readline(sock, deadline):
    buf = b""
    while b"\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the supervisor closed the connection")
        buf += chunk
    return json.loads(buf.split(b"\n", 1)[0])


def hello(pid, abi, magic=MAGIC, session=b""):
    return HELLO.pack(magic, abi, pid, 0, session)


def read_welcome(sock, timeout=10.0):
    """'refused N', 'accepted' or 'closed' (nothing, or part of a welcome)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while len(data) < WELCOME.size:
            chunk, fds, _flags, _addr = socket.recv_fds(sock, WELCOME.size - len(data), 4)
            for fd in fds:
                os.close(fd)
            if not chunk:
                break
            data += chunk
    except (ConnectionError, socket.timeout, OSError):
        pass
    if len(data) < WELCOME.size:
        return "closed"
    status = WELCOME.unpack(data)[2]
    return f"refused {status}" if status else "accepted"


def probe(path, payload, want_close, timeout=10.0):
    """Send payload on a connection of its own; what came back, and whether it was closed."""
    out = {"sent": 0, "closed": False, "reply": ""}
    try:
        s = connect(path)
    except OSError as e:
        out["connect_error"] = e.strerror
        return out
    try:
        try:
            s.sendall(payload)
            out["sent"] = len(payload)
        except OSError as e:
            out["send_error"] = e.strerror or str(e)
        buf = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                out["closed"] = True
                break
            if not chunk:
                out["closed"] = True
                break
            buf += chunk
            if b"\n" in buf and not want_close:
                break
        out["reply"] = buf[:300].decode(errors="replace")
    finally:
        s.close()
    return out


# ---- the honest client ----

def honest(path, agent, outfile, count, bound):
    start = time.monotonic()
    deadline = start + bound
    result = {"stage": "connect", "pid": os.getpid()}
    try:
        s = connect(path, timeout=bound)
        result["stage"] = "session"
        s.sendall(b'{"cmd": "session"}\n')
        token = readline(s, deadline)["session"]
        result["stage"] = "dd"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C", "LD_PRELOAD": agent, "LSCA_SOCKET": path,
               "LSCA_SESSION": token, "LSCA_REQUIRED": "1"}
        dd = subprocess.run(["dd", "if=/dev/zero", f"of={outfile}", "bs=1", f"count={count}", "status=none"],
                            env=env, capture_output=True, timeout=max(0.1, deadline - time.monotonic()))
        result.update(rc=dd.returncode, stderr=dd.stderr.decode(errors="replace")[-500:])
        result["stage"] = "end"
        s.sendall(b'{"cmd": "end"}\n')
        result["stats"] = readline(s, deadline).get("stats")
        result["stage"] = "done"
        s.close()
    except subprocess.TimeoutExpired:
        result["error"] = "dd did not finish in time"
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    result["elapsed"] = time.monotonic() - start
    emit(result)


# ---- garbage on the control socket ----

def deep(path):
    payloads = {
        "array-100000": (b"[" * 100000 + b"\n", True),
        "object-40000": (b'{"cmd": ' + b"[" * 20000 + b"]" * 20000 + b"}\n", False),
        "objects-5000": (b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"\n", False),
        "object-200000": (b'{"cmd": ' + b"[" * 100000 + b"]" * 100000 + b"}\n", True),
    }
    emit({name: probe(path, payload, want_close) for name, (payload, want_close) in payloads.items()})


def garbage(path, abi):
    payloads = {
        "binary": b"\x00\xff\xfe" + bytes(range(256)) * 16,
        "array": b"[1, 2]\n",
        "number": b"5\n",
        "null": b"null\n",
        "string": b'"stats"\n',
        "cmd-number": b'{"cmd": 5}\n',
        "cmd-null": b'{"cmd": null}\n',
        "cmd-list": b'{"cmd": ["stats"]}\n',
        "cmd-object": b'{"cmd": {"cmd": "stats"}}\n',
        "cmd-nan": b'{"cmd": NaN}\n',
        "no-cmd": b'{"command": "stats"}\n',
        "truncated": b'{"cmd": "stats"\n',
        "bad-utf8": b'{"cmd": "\xff\xfe"}\n',
        "huge-number": b'{"cmd": "session", "trace_mask": ' + b"9" * 5000 + b"}\n",
        "trace-mask-string": b'{"cmd": "session", "trace": true, "trace_mask": "all"}\n',
        "trace-without-fd": b'{"cmd": "session", "trace": true}\n',
        "end-without-session": b'{"cmd": "end"}\n',
        "two-sessions": b'{"cmd": "session"}\n{"cmd": "session"}\n',
        "hello-then-json": hello(os.getpid(), abi) + b'{"cmd": "stats"}\n',
        "json-then-hello": b'{"cmd": "stats"}\n' + hello(os.getpid(), abi),
    }
    emit({name: probe(path, payload, want_close=False, timeout=5.0) for name, payload in payloads.items()})


def bigline(path, maxbytes, bound):
    out = {"sent": 0, "closed": False, "stalled": False}
    s = connect(path)
    s.settimeout(2.0)
    chunk = b"x" * (1 << 20)
    deadline = time.monotonic() + bound
    try:
        s.sendall(b'{"cmd": "')
        while out["sent"] < maxbytes and time.monotonic() < deadline:
            s.sendall(chunk)
            out["sent"] += len(chunk)
    except socket.timeout:
        out["stalled"] = True
    except OSError as e:
        out["closed"] = True
        out["error"] = e.strerror
    out["elapsed"] = round(time.monotonic() - (deadline - bound), 1)
    emit(out)
    wait_eof()


# ---- floods ----

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def flood(path, idle, half, fds, bound, abi):
    raise_nofile()
    held = []
    null = os.open("/dev/null", os.O_RDONLY)
    counts = {"half": 0, "fds": 0, "idle": 0}
    problems = []
    for _ in range(half):
        try:
            s = connect(path, timeout=2.0)
            s.sendall(hello(os.getpid(), abi)[:10])
            held.append(s)
            counts["half"] += 1
        except OSError as e:
            problems.append(f"half: {e.strerror or e}")
            break
    for _ in range(fds):
        try:
            s = connect(path, timeout=2.0)
            socket.send_fds(s, [b"{"], [null])
            held.append(s)
            counts["fds"] += 1
        except OSError as e:
            problems.append(f"fds: {e.strerror or e}")
            break
    for _ in range(idle):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        give_up = time.monotonic() + 2.0
        problem = None
        while True:
            try:
                s.connect(path)
                break
            except BlockingIOError:     # the backlog is full: the supervisor is not accepting
                if time.monotonic() > give_up:
                    problem = "idle: the backlog stayed full for 2 s"
                    break
                time.sleep(0.005)
            except OSError as e:
                problem = f"idle: {e.strerror}"
                break
        if problem:
            s.close()
            problems.append(problem)
            break
        held.append(s)
        counts["idle"] += 1
    emit({"phase": "held", **counts, "problems": problems})
    if not wait_line("check"):
        return
    poller = select.poll()
    open_socks = {}
    for s in held:
        s.setblocking(False)
        poller.register(s.fileno(), select.POLLIN)
        open_socks[s.fileno()] = s
    deadline = time.monotonic() + bound
    while open_socks and time.monotonic() < deadline:
        for fd, _event in poller.poll(200):
            s = open_socks.get(fd)
            if s is None:
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                poller.unregister(fd)
                del open_socks[fd]
    emit({"phase": "checked", "held": len(held), "still_open": len(open_socks)})
    wait_eof()


def noread(path, requests):
    s = connect(path)
    s.settimeout(2.0)
    batch = b'{"cmd": "stats"}\n' * 1000
    out = {"sent": 0, "state": "sent all"}
    while out["sent"] < requests:
        try:
            s.sendall(batch)
        except socket.timeout:
            out["state"] = "stalled"
            break
        except OSError as e:
            out["state"] = "dropped"
            out["error"] = e.strerror
            break
        out["sent"] += 1000
        if out["sent"] == 1000:
            emit({"phase": "flooding"})
    emit(out)
    if not wait_line("check"):
        return
    dropped = out["state"] == "dropped"
    deadline = time.monotonic() + 10.0
    while not dropped and time.monotonic() < deadline:
        s.settimeout(1.0)
        try:
            if not s.recv(1 << 20):
                dropped = True
        except socket.timeout:
            continue
        except OSError:
            dropped = True
    emit({"dropped": dropped})
    wait_eof()


def many_fds(path, messages, per):
    raise_nofile()
    s = connect(path)
    s.settimeout(2.0)
    null = os.open("/dev/null", os.O_RDONLY)
    out = {"sent_fds": 0, "closed": False, "stalled": False}
    try:
        s.sendall(b"{")
        for _ in range(messages):
            socket.send_fds(s, [b" "], [null] * per)
            out["sent_fds"] += per
    except socket.timeout:
        out["stalled"] = True
    except OSError as e:
        out["closed"] = True
        out["error"] = e.strerror
    out["drained"] = out["closed"] or drained(s, 10.0)
    emit(out)
    wait_eof()


def drained(sock, timeout):
    """Whether the peer read everything sent on sock (its send queue emptied) within timeout."""
    deadline = time.monotonic() + timeout
    queued = array.array("i", [0])
    while time.monotonic() < deadline:
        try:
            fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, queued)
        except OSError:
            return True
        if queued[0] == 0:
            return True
        time.sleep(0.01)
    return False


# ---- forged registrations ----

def forge(path, abi):
    out = {}
    for name, data in {
        "pid-of-init": hello(1, abi),
        "pid-zero": hello(0, abi),
        "pid-negative": hello(-1, abi),
        "other-abi": hello(os.getpid(), abi + 1),
        "bad-magic": hello(os.getpid(), abi, magic=MAGIC ^ 0xFF),
    }.items():
        try:
            s = connect(path)
            s.sendall(data)
            out[name] = read_welcome(s, timeout=5.0)
            s.close()
        except OSError as e:
            out[name] = f"error {e.strerror}"
    # The connector's pid, sent by another process (its child) on the inherited connection.
    s = connect(path)
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(r)
        try:
            s.sendall(hello(os.getppid(), abi))
            answer = read_welcome(s, timeout=5.0)
        except OSError as e:
            answer = f"error {e.strerror}"
        os.write(w, answer.encode())
        os._exit(0)
    os.close(w)
    s.close()
    answer = b""
    while True:
        chunk = os.read(r, 100)
        if not chunk:
            break
        answer += chunk
    os.waitpid(child, 0)
    out["sent-by-a-child"] = answer.decode()
    emit(out)


# ---- sessions ----

def open_traced_session(path):
    s = connect(path, timeout=10.0)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    socket.send_fds(s, [b'{"cmd": "session", "trace": true}\n'], [theirs.fileno()])
    theirs.close()
    token = readline(s, time.monotonic() + 10.0)["session"]
    return s, mine, token


class Records:
    """The records read from a trace stream: pids seen, count, markers of drops."""

    def __init__(self):
        self.pids = set()
        self.count = 0
        self.markers = 0
        self.dropped = 0

    def take(self, data):
        offset = 0
        while offset + RECORD_RESULT_OFFSET + 8 <= len(data):
            _magic, op, size = RECORD_HEAD.unpack_from(data, offset)
            if size < RECORD_RESULT_OFFSET + 8:
                break
            if op == TRACE_DROPPED:
                self.markers += 1
                self.dropped += struct.unpack_from("=q", data, offset + RECORD_RESULT_OFFSET)[0]
            else:
                self.count += 1
                self.pids.add(struct.unpack_from("=i", data, offset + RECORD_PID_OFFSET)[0])
            offset += size

    def drain(self, sock, timeout):
        sock.setblocking(False)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                if not select.select([sock], [], [], 0.2)[0]:
                    return
                continue
            except OSError:
                return
            if not data:
                return
            self.take(data)

    def as_dict(self):
        return {"pids": sorted(self.pids), "records": self.count, "markers": self.markers, "dropped": self.dropped}


def session_owner(path, agent, outfile, count):
    s, trace, token = open_traced_session(path)
    emit({"token": token})
    records = Records()
    stop = threading.Event()

    def read_records():
        while not stop.is_set():
            if select.select([trace], [], [], 0.1)[0]:
                try:
                    data = trace.recv(1 << 20)
                except OSError:
                    return
                if not data:
                    return
                records.take(data)

    reader = threading.Thread(target=read_records, daemon=True)
    reader.start()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "LD_PRELOAD": agent, "LSCA_SOCKET": path,
           "LSCA_SESSION": token, "LSCA_REQUIRED": "1"}
    dd = subprocess.Popen(["dd", "if=/dev/zero", f"of={outfile}", "bs=1", f"count={count}", "status=none"],
                          env=env, stderr=subprocess.PIPE)
    _out, err = dd.communicate(timeout=20)
    emit({"dd_pid": dd.pid, "rc": dd.returncode, "stderr": err.decode(errors="replace")[-300:]})
    if not wait_line("end"):
        return
    stats = end_session(s, 20.0)
    stop.set()
    reader.join()
    records.drain(trace, 2.0)
    emit({"stats": stats, **records.as_dict()})
    wait_eof()


def end_session(s, timeout):
    """Ask the supervisor to end the session on s: its counts, or what went wrong."""
    s.sendall(b'{"cmd": "end"}\n')
    try:
        return readline(s, time.monotonic() + timeout).get("stats")
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}


def stall_session(path):
    s, trace, token = open_traced_session(path)
    emit({"token": token})
    if not wait_line("end"):
        return
    stats = end_session(s, 10.0)
    records = Records()
    records.drain(trace, 10.0)
    emit({"stats": stats, **records.as_dict()})
    wait_eof()


# ---- a planted state directory ----

def plant(directory, target, dead_pid):
    os.umask(0)
    os.mkdir(directory, 0o777)
    os.mkdir(os.path.join(directory, "instances"), 0o777)
    entry = {"pid": dead_pid, "start_time": 1.0, "socket": target, "shm": [], "sem": []}
    with open(os.path.join(directory, "instances", f"{dead_pid}.json"), "w") as f:
        json.dump(entry, f)
    emit({"planted": directory})


def main(argv):
    mode, args = argv[0], argv[1:]
    if mode == "honest":
        honest(args[0], args[1], args[2], int(args[3]), float(args[4]))
    elif mode == "deep":
        deep(args[0])
    elif mode == "garbage":
        garbage(args[0], int(args[1]))
    elif mode == "bigline":
        bigline(args[0], int(args[1]), float(args[2]))
    elif mode == "flood":
        flood(args[0], int(args[1]), int(args[2]), int(args[3]), float(args[4]), int(args[5]))
    elif mode == "noread":
        noread(args[0], int(args[1]))
    elif mode == "fds":
        many_fds(args[0], int(args[1]), int(args[2]))
    elif mode == "forge":
        forge(args[0], int(args[1]))
    elif mode == "session-owner":
        session_owner(args[0], args[1], args[2], int(args[3]))
    elif mode == "stall-session":
        stall_session(args[0])
    elif mode == "plant":
        plant(args[0], args[1], int(args[2]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])

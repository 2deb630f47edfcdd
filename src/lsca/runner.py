"""lsca run: start a program with the agent preloaded and serve it.

Uses the supervisor named by LSCA_SOCKET, or starts one for this run only. The
agent is preloaded into the program (and what it starts), never into the
supervisor or its workers. Exit status and signals of the program pass through.
"""
import errno
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from importlib import resources
from lsca.launch import SupervisorStartError, start_supervisor, stop_supervisor
from lsca.command import SHELL, CommandError, agent_barrier, resolve, shell_command
from lsca.opclasses import ALL as ALL_OPS, op_mask
from lsca.statedir import StateDirError, instances_directory
from lsca.tracestream import TraceReader

# Signals lsca run passes on to the program; tty-generated INT/QUIT reach it directly.
FORWARDED = [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
             signal.SIGUSR2, signal.SIGALRM, signal.SIGWINCH, signal.SIGCONT]
SI_KERNEL = 0x80


class RunError(Exception):
    """Why lsca run cannot go on: a one-line message, and the status lsca run exits with."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def agent_path():
    path = resources.files("lsca").joinpath("liblsca_agent.so")
    if not path.is_file():
        raise RunError(f"the agent library is missing at {path}: reinstall lsca")
    return str(path)


def child_environment(socket_path, session, base=None):
    """The program's environment: the agent first in LD_PRELOAD, the supervisor to reach."""
    env = dict(os.environ if base is None else base)
    agent = agent_path()
    preload = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p != agent]
    env["LD_PRELOAD"] = " ".join([agent] + preload)
    env["LSCA_SOCKET"] = socket_path
    env["LSCA_SESSION"] = session
    env.pop("LSCA_AGENT_DISABLE", None)
    return env


class EmbeddedSupervisor:
    """A supervisor for this run only, in its own session (terminal signals do not reach it)."""

    def __init__(self, workers, policy=None):
        try:
            instances_directory()       # a planted one is refused here, in one line
        except StateDirError as e:
            raise RunError(str(e)) from None
        self.directory = tempfile.mkdtemp(prefix="lsca-run-")
        self.socket_path = os.path.join(self.directory, "supervisor.sock")
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "LSCA_SOCKET")}
        args = ["--exit-with", str(os.getpid())]
        if workers:
            args += ["--workers", str(workers)]
        if policy:
            args += ["--policy", os.path.abspath(policy)]
        try:
            self.process = start_supervisor(self.socket_path, args, env=env, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        except SupervisorStartError as e:
            shutil.rmtree(self.directory, ignore_errors=True)
            raise RunError(str(e)) from None

    def stop(self):
        stop_supervisor(self.process, grace=10)
        shutil.rmtree(self.directory, ignore_errors=True)


class SessionClient:
    """The control connection of one run: opens a session, later fetches its counts."""

    def __init__(self, socket_path, trace_fd=None, trace_mask=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.connect(socket_path)
        except OSError as e:
            raise RunError(f"cannot reach the supervisor at {socket_path}: {e.strerror}")
        self.reader = self.sock.makefile("rb")
        request = json.dumps({"cmd": "session", "trace": trace_fd is not None,
                              "trace_mask": trace_mask}).encode() + b"\n"
        socket.send_fds(self.sock, [request], [trace_fd] if trace_fd is not None else [])
        self.token = self._answer()["session"]

    def _answer(self):
        try:
            line = self.reader.readline()
        except OSError as e:
            raise RunError(f"lost the supervisor: {e.strerror}") from None
        if not line:
            raise RunError("the supervisor closed the connection")
        answer = json.loads(line)
        if "error" in answer:
            raise RunError(f"the supervisor says: {answer['error']}")
        return answer

    def end(self):
        """Counts of the session, once every exited process of it is accounted for."""
        try:
            self.sock.sendall(b'{"cmd": "end"}\n')
        except OSError as e:
            raise RunError(f"lost the supervisor: {e.strerror}") from None
        return self._answer()["stats"]

    def close(self):
        self.reader.close()
        self.sock.close()


def env_flag(env, name):
    """A flag as the agent reads it: set, not empty and not 0."""
    return env.get(name, "") not in ("", "0")


def check_command(command, required):
    """The file CMD runs (found as execvp finds it; CommandError when there is none). A program
    the agent cannot run in is said in one line, or refused (exit 126) when required."""
    path = resolve(command[0], os.environ)
    barrier = agent_barrier(path)
    if barrier and required:
        raise RunError(f"{command[0]}{barrier}; not starting it (LSCA_REQUIRED=1)", status=126)
    if barrier:
        print(f"lsca: {command[0]}{barrier}; its calls are not proxied", file=sys.stderr, flush=True)
    return path


def spawn(path, command, env):
    """Start path (as check_command() found it) as execvp would: a file the kernel has no
    format for (ENOEXEC) runs as a /bin/sh script. No signal is blocked in it (lsca run
    blocks the ones it forwards); SIGPIPE and SIGXFSZ are at their defaults (Python ignores
    them; a shell's child has them)."""
    options = {"setsigmask": (), "setsigdef": (signal.SIGPIPE, signal.SIGXFSZ)}
    try:
        return os.posix_spawn(path, command, env, **options)
    except OSError as e:
        if e.errno != errno.ENOEXEC:
            raise CommandError(command[0], e.errno) from None
    try:
        return os.posix_spawn(SHELL, shell_command(path, command), env, **options)
    except OSError as e:
        raise CommandError(command[0], e.errno) from None


def wait_forwarding(pid):
    """Wait for pid, passing on the signals lsca run receives; returns the wait status."""
    watched = set(FORWARDED) | {signal.SIGCHLD}
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        info = signal.sigtimedwait(watched, 1.0)
        if info is None or info.si_signo == signal.SIGCHLD:
            continue
        from_terminal = info.si_code == SI_KERNEL and info.si_signo in (signal.SIGINT, signal.SIGQUIT)
        if not from_terminal:
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass


def exit_like(status):
    """End lsca run the way the program ended: same exit code, or death by the same signal."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))   # the program dumped core, not us
        signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [sig])
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.WEXITSTATUS(status)


def format_stats(stats):
    proxied, passthrough, declined = stats["proxied"], stats["passthrough"], stats["declined"]
    total_p, total_n, total_d = sum(proxied.values()), sum(passthrough.values()), sum(declined.values())
    total_w = sum(stats.get("waited", {}).values())
    waited = f", {total_w} handed back to wait natively" if total_w else ""
    lines = [f"lsca: {stats['processes']} process(es), {total_p} calls proxied, "
             f"{total_n} passthrough ({total_d} handed back by workers){waited}"]
    ops = sorted(set(proxied) | set(passthrough), key=lambda op: (-proxied.get(op, 0), op))
    if ops:
        lines.append(f"{'op':<12}{'proxied':>10}{'passthrough':>13}")
        for op in ops:
            lines.append(f"{op:<12}{proxied.get(op, 0):>10}{passthrough.get(op, 0):>13}")
    if stats.get("running"):
        lines.append(f"lsca: {stats['running']} process(es) of this run still running")
    return "\n".join(lines)


def open_trace_file(path):
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise RunError(f"cannot write the trace to {path}: {e.strerror}") from None


def format_summary(stats):
    """An strace -c like table of the proxied calls: time in the workers, calls, errors."""
    from lsca.opclasses import SYSCALL_NAMES
    calls, latency, errors = stats["proxied"], stats.get("latency_ns", {}), stats.get("errors", {})
    total = sum(latency.values()) or 1
    rule = "------ ----------- ----------- --------- --------- ----------------"
    lines = ["% time     seconds  usecs/call     calls    errors syscall", rule]
    for op in sorted(calls, key=lambda o: (-latency.get(o, 0), o)):
        ns, n = latency.get(op, 0), calls[op]
        lines.append(f"{100 * ns / total:6.2f} {ns / 1e9:11.6f} {ns / 1e3 / n:11.0f} {n:9d} "
                     f"{errors.get(op, 0) or '':>9} {SYSCALL_NAMES.get(op, op)}")
    lines.append(rule)
    lines.append(f"100.00 {sum(latency.values()) / 1e9:11.6f} {'':>11} {sum(calls.values()):9d} "
                 f"{sum(errors.values()) or '':>9} total")
    return "\n".join(lines)


def run(command, workers=None, trace=False, show_stats=False, stats_file=None, trace_file=None, trace_json=False,
        summary=False, trace_ops=None, policy=None, fail_closed=False, required=False):
    """lsca run; returns the exit code (or ends the process by the program's signal)."""
    required = required or env_flag(os.environ, "LSCA_REQUIRED")
    socket_path = os.environ.get("LSCA_SOCKET")
    embedded = None
    session = None
    reader = None
    try:
        if policy:
            if socket_path:
                raise RunError("--policy needs the supervisor this run starts; the one at LSCA_SOCKET "
                               "applies its own (lsca-supervisor --policy FILE)")
            from lsca.policy import Policy, PolicyError
            try:
                Policy.load(policy)         # a bad file is one line here, before anything starts
            except PolicyError as e:
                raise RunError(f"policy {e}") from None
        path = check_command(command, required)      # before anything starts
        if not socket_path:
            embedded = EmbeddedSupervisor(workers, policy)
            socket_path = embedded.socket_path
        elif workers:
            print("lsca: --workers is ignored: the supervisor at LSCA_SOCKET has its own pool", file=sys.stderr)
        if trace_file:
            reader = TraceReader(open_trace_file(trace_file), trace_json)
        elif trace:
            reader = TraceReader(sys.stderr.fileno(), trace_json)
        mask = op_mask(trace_ops if trace_ops is not None else ALL_OPS)
        session = SessionClient(socket_path, trace_fd=reader.sender_fd() if reader else None, trace_mask=mask)
        if reader is not None:
            reader.close_sender()               # the supervisor holds its own copy now
        signal.pthread_sigmask(signal.SIG_BLOCK, set(FORWARDED) | {signal.SIGCHLD})
        env = child_environment(socket_path, session.token)
        if fail_closed:
            env["LSCA_FAIL_CLOSED"] = "1"
        if required:
            env["LSCA_REQUIRED"] = "1"
        pid = spawn(path, command, env)
        if reader is not None:
            # Started now, it knows CMD's pid from its first line on (nothing of the session ran
            # before the spawn), and it inherits the blocked signals: they reach CMD, not it.
            reader.start(command_pid=pid)
        status = wait_forwarding(pid)
        try:
            stats = session.end()
        except RunError as e:
            # The program ran to its end: its status still passes through, without counts.
            print(f"lsca: {e}; no counts for this run", file=sys.stderr)
            stats = None
        if reader is not None:
            # With every process of the run gone, closing the session makes the supervisor let go
            # of the trace end; the workers let go once they sent the last records: read to the end.
            ended = stats is not None and not stats.get("running")
            if ended:
                session.close()
                session = None
            reader.finish(until_closed=ended)
            if reader.write_error is not None:
                print(f"lsca: the trace could not be written: {reader.write_error.strerror}", file=sys.stderr)
            if reader.dropped and trace_file:
                print(f"lsca: {reader.dropped} trace records dropped (the trace reader fell behind)", file=sys.stderr)
        if show_stats and stats:
            print(format_stats(stats), file=sys.stderr)
        if summary and stats:
            print(format_summary(stats), file=sys.stderr)
        if stats_file and stats:
            with open(stats_file, "w") as f:
                json.dump(stats, f, indent=2)
    finally:
        if reader is not None and not reader.finishing:
            reader.finish(timeout=1.0)
        if reader is not None and trace_file:
            os.close(reader.out_fd)
        if session is not None:
            session.close()
        if embedded is not None:
            embedded.stop()
    return exit_like(status)

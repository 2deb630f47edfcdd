"""The agent in the life of a process: children that share the parent's memory (vfork,
posix_spawn, clone(CLONE_VM)) act on their own descriptors and dispositions, never the
parent's; close_range closes what the program asks and leaves the agent working; the
agent's own descriptor cannot be found by probing. Each runs the same program natively
and under LSCA and compares everything it observes."""
import sys

from conftest import parse_trace, run_native, through_worker, through_workers

PY = sys.executable


def run_both(lsca_run, tmp_path, cmd, trace=True, prefix=()):
    (tmp_path / "native").mkdir()
    (tmp_path / "lsca").mkdir()
    native = run_native([*prefix, *cmd], cwd=tmp_path / "native")
    proc, stats, lines = lsca_run([*prefix, *cmd], cwd=tmp_path / "lsca", trace=trace)
    return native, proc, stats, parse_trace(lines)


def test_children_sharing_memory_act_on_their_own_descriptors_and_handlers(lsca_run, c_program, tmp_path):
    native, proc, stats, calls = run_both(lsca_run, tmp_path, [c_program("spawn_children")])
    assert proc.returncode == native.returncode == 0, proc.stderr.decode()
    assert proc.stdout == native.stdout
    assert native.stdout.count(b"stdout_kept=1 log_open=1 pipe_ok=1 handler_kept=1 handler_ran=1") == 7
    log = (tmp_path / "lsca" / "children.log").read_bytes()
    assert log == (tmp_path / "native" / "children.log").read_bytes()
    assert b"vfork+exec: stdout is the log" in log and b"and its stderr" in log
    # The parent's calls went through a worker (its one open, of the log, and its one pipe: the
    # children open and make none); the children sharing its memory ran natively (their writes
    # are not in any trace); the raw clone with its own memory registered anew.
    assert (stats["proxied"].get("openat"), stats["proxied"].get("pipe2")) == (1, 1), stats
    writes = [(pid, args) for pid, name, args, _ in calls if name == "write"]
    for shared in ("vfork+_exit:", "vfork+exec:", "clone(VM|VFORK):", "clone(VM):"):
        assert not any(shared in args for _, args in writes), shared
    assert any("clone(VFORK): stdout" in args for _, args in writes)
    assert any("exec-ed child writes here" in args for _, args in writes)   # sh, registered after exec
    assert any("fork: stdout" in args for _, args in writes)


SUBPROCESS_PROBE = r"""
import os, signal, subprocess, sys
r = subprocess.run(["sh", "-c", "echo out; echo err >&2; echo out2"], stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT)
print("run:", r.returncode, r.stdout)
r = subprocess.run(["sh", "-c", "echo to-out; echo to-err >&2; exit 3"], capture_output=True, close_fds=True)
print("close_fds:", r.returncode, r.stdout, r.stderr)
with open("written.txt", "w") as f:
    subprocess.run(["echo", "into a file"], stdout=f, stderr=subprocess.STDOUT, check=True)
print("file:", open("written.txt").read())
try:
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(1000):
        os.getpid()
    print("SIGINT: no KeyboardInterrupt")
except KeyboardInterrupt:
    print("SIGINT: KeyboardInterrupt")
seen = []
signal.signal(signal.SIGUSR1, lambda s, f: seen.append(s))
subprocess.run(["true"])
os.kill(os.getpid(), signal.SIGUSR1)
print("SIGUSR1 handled:", seen == [signal.SIGUSR1], signal.getsignal(signal.SIGUSR1) is not signal.SIG_DFL)
os.write(1, b"parent fd 1 intact\n")
"""


def test_python_subprocess_output_and_signal_handlers_survive(lsca_run, tmp_path):
    native, proc, stats, calls = run_both(lsca_run, tmp_path, [PY, "-c", SUBPROCESS_PROBE])
    assert proc.returncode == native.returncode == 0, proc.stderr.decode()
    assert proc.stdout == native.stdout
    assert b"run: 0 b'out\\nerr\\nout2\\n'" in native.stdout
    assert b"SIGINT: KeyboardInterrupt" in native.stdout and b"SIGUSR1 handled: True True" in native.stdout
    assert (tmp_path / "lsca" / "written.txt").read_bytes() == b"into a file\n"
    # Each subprocess.run makes a pipe to learn whether its child's exec failed, and one per
    # PIPE asked for: 2 + 3 + 1 + 1 (the shells and echo make none).
    assert through_worker(stats, "write") >= 1 and stats["proxied"].get("pipe2") == 7, stats
    assert any(name == "write" and "parent fd 1 intact" in args for _, name, args, _ in calls)


def test_close_range_closes_as_natively_and_the_agent_keeps_working(lsca_run, c_program, tmp_path):
    native, proc, stats, calls = run_both(lsca_run, tmp_path, [c_program("close_range")])
    assert proc.returncode == native.returncode == 0, proc.stderr.decode()
    assert proc.stdout == native.stdout
    assert b"after close_range: open=3 pipe=4,5 dup=6" in native.stdout and b"read eof = 0" in native.stdout
    assert (tmp_path / "lsca" / "file.txt").read_bytes() == (tmp_path / "native" / "file.txt").read_bytes()
    # After every close_range/closefrom the descriptor calls still went to a worker: the 16
    # /dev/null opens and one open, pipe and dup in each of the 5 after()s; the first pipe.
    assert through_workers(stats, ("openat", "pipe2", "dup")) == {"openat": 16 + 5, "pipe2": 1 + 5, "dup": 5}, stats
    assert calls and not any(result.startswith("-1 EIO") for _, _, _, result in calls)


def test_python_closerange_leaves_the_agent_working(lsca_run, tmp_path):
    probe = ("import os\nfor _ in range(4): os.open('/dev/null', os.O_RDONLY)\nos.closerange(3, 2**31 - 1)\n"
             "r, w = os.pipe(); fd = os.open('f.txt', os.O_CREAT | os.O_WRONLY, 0o644)\n"
             "print(r, w, fd, os.write(fd, b'ok'), os.dup(fd))\n")
    native, proc, stats, calls = run_both(lsca_run, tmp_path, [PY, "-c", probe])
    assert proc.returncode == native.returncode == 0, proc.stderr.decode()
    assert proc.stdout == native.stdout == b"3 4 5 2 6\n"
    # Its one pipe; its own 5 opens (Python's imports add theirs).
    assert stats["proxied"].get("pipe2") == 1 and stats["proxied"].get("openat", 0) >= 5, stats


def test_hidden_descriptor_answers_every_probe_as_a_free_slot(lsca_run, c_program, tmp_path):
    binary = c_program("hidden_fd")
    # A hard limit above the soft one: the channel sits at the limit, out of reach. Equal
    # limits (no CAP_SYS_RESOURCE to raise them): it takes the top slot and moves or gives
    # way when the program wants that number.
    for limits in ("64:4096", "64:64", "200:200"):
        sub = tmp_path / limits.replace(":", "-")
        sub.mkdir()
        native, proc, stats, calls = run_both(lsca_run, sub, [binary], trace=False,
                                              prefix=("prlimit", f"--nofile={limits}"))
        assert proc.returncode == native.returncode == 0, proc.stderr.decode()
        assert proc.stdout == native.stdout, limits
        soft, hard = map(int, limits.split(":"))
        assert f"dup2 onto every number: {soft - 3}".encode() in native.stdout
        # dup2 onto each number from 3 up, onto the limit, dup3 beyond it: every one a worker's.
        assert stats["proxied"].get("dup3") == soft - 1, (limits, stats)
        # Each fill opens until the table is full (after 0, 1, 2), then once more (EMFILE): at
        # the start, and after the limit is raised (to twice the soft one, at most the hard one).
        raised = min(2 * soft, hard)
        assert stats["proxied"].get("openat") == (soft - 2) + (raised - 2), (limits, stats)
        assert not stats["passthrough"].get("openat"), stats

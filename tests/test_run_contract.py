"""lsca run's contract with its command line: a command that cannot run fails as `env CMD`
does, a program the agent cannot run in is named (or refused when required), and trace lines
are labelled as strace -f labels them. Each is compared with the native run of the same thing."""
import json
import os
import shutil
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest

from conftest import PROGRAMS, clean_env, parse_trace, through_worker, through_workers

PY = sys.executable
NOBODY = 65534
# Where the compiler finds it on this machine (the multiarch directory differs per arch);
# a bare "libc.a" back means it has none.
STATIC_LIBC = subprocess.run(["gcc", "-print-file-name=libc.a"], capture_output=True,
                             text=True).stdout.strip() if shutil.which("gcc") else "libc.a"
NOT_PROXIED = "its calls are not proxied"
REFUSED = "not starting it (LSCA_REQUIRED=1)"


def native(cwd, *cmd):
    """The command as coreutils env runs it: the reference for statuses and messages."""
    return subprocess.run(["env", *cmd], cwd=cwd, env=clean_env(), capture_output=True, timeout=60)


def lsca_run(supervisor, cwd, *args, **env_extra):
    env = clean_env()
    env["LSCA_SOCKET"] = supervisor.socket
    env.update(env_extra)
    return subprocess.run([PY, "-m", "lsca.cli", "run", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=120)


def reason(stderr):
    """`env: ‘CMD’: reason` or `lsca: CMD: reason` → (prefix, reason); one line only."""
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    head, _, why = lines[0].rpartition(": ")
    return head, why


def assert_fails_like_env(supervisor, cwd, cmd, status, why):
    ref = native(cwd, cmd)
    under = lsca_run(supervisor, cwd, "--", cmd)
    assert (ref.returncode, reason(ref.stderr)[1]) == (status, why)
    assert under.returncode == ref.returncode and under.stdout == ref.stdout == b""
    assert reason(under.stderr) == (f"lsca: {cmd}", why)


def lines(stderr):
    return stderr.decode().splitlines()


def build(name, output, *flags):
    subprocess.run(["cc", "-O2", "-Wall", *flags, "-o", str(output), os.path.join(PROGRAMS, name + ".c")], check=True)
    return str(output)


def set_id_copy(program, path, mode, owner=-1, group=-1):
    """A copy of program with set-id bits and the owner or group given (needs root)."""
    if os.getuid() != 0:
        pytest.skip("a set-id copy owned by another user needs root")
    if os.statvfs(os.path.dirname(path)).f_flag & os.ST_NOSUID:
        pytest.skip(f"{os.path.dirname(path)} is mounted nosuid: set-id bits do nothing there")
    shutil.copy(program, path)
    os.chown(path, owner, group)
    os.chmod(path, mode)
    return str(path)


@pytest.fixture(scope="module")
def static_program(tmp_path_factory):
    if not os.path.exists(STATIC_LIBC):
        pytest.skip(f"no static C library ({STATIC_LIBC}): cannot link a static program to run")
    return build("who_runs", tmp_path_factory.mktemp("static") / "who_runs_static", "-static")


def test_a_script_without_shebang_runs_with_sh(supervisor, tmp_path):
    script = tmp_path / "plain"
    script.write_text('echo "sh ran $0 with $*"\nexit 3\n')
    script.chmod(0o755)
    ref = native(tmp_path, "./plain", "a", "b c")
    under = lsca_run(supervisor, tmp_path, "--stats-file", str(tmp_path / "stats"), "--", "./plain", "a", "b c")
    assert ref.returncode == 3 and ref.stdout == b"sh ran ./plain with a b c\n"
    assert (under.returncode, under.stdout, under.stderr) == (ref.returncode, ref.stdout, ref.stderr)
    assert through_worker(json.loads((tmp_path / "stats").read_text()), "write") == 1   # sh's echo, under the agent


def test_a_non_executable_file_is_126_permission_denied(supervisor, tmp_path):
    (tmp_path / "data").write_text("echo never\n")
    assert_fails_like_env(supervisor, tmp_path, "./data", 126, "Permission denied")


def test_a_directory_is_126_permission_denied(supervisor, tmp_path):
    (tmp_path / "dir").mkdir()
    assert_fails_like_env(supervisor, tmp_path, "./dir", 126, "Permission denied")


def test_a_missing_command_is_127_no_such_file(supervisor, tmp_path):
    assert_fails_like_env(supervisor, tmp_path, "lsca-no-such-command", 127, "No such file or directory")
    assert_fails_like_env(supervisor, tmp_path, "./missing", 127, "No such file or directory")


def test_a_static_program_runs_and_is_named(supervisor, tmp_path, static_program):
    ref = native(tmp_path, static_program, "x")
    under = lsca_run(supervisor, tmp_path, "--", static_program, "x")
    assert ref.returncode == 3 and ref.stdout.endswith(b": x\n")
    assert (under.returncode, under.stdout) == (ref.returncode, ref.stdout)
    assert under.stderr.decode().splitlines() == [
        f"lsca: {static_program} is statically linked: the agent cannot run in it; {NOT_PROXIED}"] + lines(ref.stderr)


def test_a_static_program_is_refused_when_required(supervisor, tmp_path, static_program):
    for options, env in (([], {"LSCA_REQUIRED": "1"}), (["--required"], {})):
        under = lsca_run(supervisor, tmp_path, *options, "--", static_program, "x", **env)
        assert (under.returncode, under.stdout) == (126, b"")
        assert under.stderr.decode().splitlines() == [
            f"lsca: {static_program} is statically linked: the agent cannot run in it; {REFUSED}"]


def test_a_script_is_judged_by_its_interpreter(supervisor, tmp_path, static_program):
    script = tmp_path / "script"
    script.write_text(f"#!{static_program}\n")
    script.chmod(0o755)
    ref = native(tmp_path, "./script", "y")
    under = lsca_run(supervisor, tmp_path, "--", "./script", "y")
    assert ref.returncode == 3 and ref.stdout.endswith(b": ./script y\n")
    assert (under.returncode, under.stdout) == (ref.returncode, ref.stdout)
    assert under.stderr.decode().splitlines() == [
        f"lsca: ./script runs {static_program}, which is statically linked: the agent cannot run in it; "
        f"{NOT_PROXIED}"] + lines(ref.stderr)


def test_a_set_uid_program_runs_and_is_named(supervisor, tmp_path, c_program):
    setuid = set_id_copy(c_program("who_runs"), tmp_path / "who_runs_setuid", 0o4755, owner=NOBODY)
    ref = native(tmp_path, setuid, "z")
    under = lsca_run(supervisor, tmp_path, "--", setuid, "z")
    assert ref.returncode == 3 and ref.stdout.startswith(f"euid {NOBODY} ".encode())
    assert (under.returncode, under.stdout) == (ref.returncode, ref.stdout)
    assert under.stderr.decode().splitlines() == [
        f"lsca: {setuid} is set-uid: the dynamic loader ignores LD_PRELOAD for it; {NOT_PROXIED}"] + lines(ref.stderr)
    refused = lsca_run(supervisor, tmp_path, "--", setuid, "z", LSCA_REQUIRED="1")
    assert (refused.returncode, refused.stdout) == (126, b"")
    assert refused.stderr.decode().splitlines() == [
        f"lsca: {setuid} is set-uid: the dynamic loader ignores LD_PRELOAD for it; {REFUSED}"]


def test_a_set_gid_program_is_named(supervisor, tmp_path, c_program):
    setgid = set_id_copy(c_program("who_runs"), tmp_path / "who_runs_setgid", 0o2755, group=NOBODY)
    ref = native(tmp_path, setgid)
    under = lsca_run(supervisor, tmp_path, "--", setgid)
    assert ref.returncode == 3 and f" egid {NOBODY}:".encode() in ref.stdout
    assert (under.returncode, under.stdout) == (ref.returncode, ref.stdout)
    assert under.stderr.decode().splitlines() == [
        f"lsca: {setgid} is set-gid: the dynamic loader ignores LD_PRELOAD for it; {NOT_PROXIED}"] + lines(ref.stderr)


def test_a_set_uid_program_of_our_own_user_is_proxied(supervisor, tmp_path):
    # Set-uid to whom runs it changes no identity: the loader preloads the agent as usual.
    own = set_id_copy("/bin/cat", tmp_path / "cat_setuid", 0o4755, owner=os.getuid())
    (tmp_path / "in").write_text("hello\n")
    under = lsca_run(supervisor, tmp_path, "--stats-file", str(tmp_path / "stats"), "--", own, "in",
                     LSCA_REQUIRED="1")
    assert (under.returncode, under.stdout, under.stderr) == (0, b"hello\n", b"")
    stats = json.loads((tmp_path / "stats").read_text())
    # cat opens its one file, reads its line and EOF, writes the line.
    assert through_workers(stats, ("openat", "read", "write")) == {"openat": 1, "read": 2, "write": 1}, stats


def command_and_child(stdout):
    said = dict(line.split() for line in stdout.decode().splitlines())
    return int(said["parent"]), int(said["child"])


def test_trace_labels_the_child_even_when_it_calls_first(supervisor, tmp_path, c_program):
    proc = lsca_run(supervisor, tmp_path, "--trace", "-o", str(tmp_path / "t"), "--", c_program("fork_first"))
    assert proc.returncode == 0, proc.stderr
    command, child = command_and_child(proc.stdout)
    # Each process's lines keep their order; lines of processes served by different workers may
    # come in either order.
    assert sorted((tmp_path / "t").read_text().splitlines()) == sorted([
        f'[pid {child:>6}] write(1, "child {child}\\n", {len(str(child)) + 7}) = {len(str(child)) + 7}',
        f'write(1, "parent {command}\\n", {len(str(command)) + 8}) = {len(str(command)) + 8}'])


def test_json_trace_says_which_lines_are_the_command(supervisor, tmp_path, c_program):
    schema = json.loads(resources.files("lsca").joinpath("trace.schema.json").read_text())
    proc = lsca_run(supervisor, tmp_path, "--json", "-o", str(tmp_path / "t"), "--", c_program("fork_first"))
    assert proc.returncode == 0, proc.stderr
    command, child = command_and_child(proc.stdout)
    records = [json.loads(line) for line in (tmp_path / "t").read_text().splitlines()]
    for record in records:
        jsonschema.validate(record, schema)
    records.sort(key=lambda r: r["time"])
    assert [(r["pid"], r["command"]) for r in records] == [(child, False), (command, True)]


def test_trace_labels_by_pid_across_the_commands_exec(supervisor, tmp_path):
    # The subshell's cat opens the file first; then the command itself becomes cat (exec, same pid).
    proc = lsca_run(supervisor, tmp_path, "--trace", "-o", str(tmp_path / "t"), "--",
                    "sh", "-c", "(cat /etc/hostname); exec cat /etc/hostname")
    assert proc.returncode == 0, proc.stderr
    opens = [pid for pid, name, args, _ in parse_trace((tmp_path / "t").read_text().splitlines())
             if name == "openat" and '"/etc/hostname"' in args]
    # One open is the subshell's (labelled), one CMD's own after its exec (not labelled), in
    # whichever order the two workers' records came.
    assert len(opens) == 2 and opens.count(None) == 1, opens
    with open("/etc/hostname", "rb") as f:
        assert proc.stdout == f.read() * 2


def test_file_capabilities_are_named_for_a_user_not_for_root(tmp_path, c_program, monkeypatch):
    # Only a program not running as real root gets a secure exec from file capabilities; the
    # tests run as root, so the user's side is judged with the real uid answered as nobody's.
    from lsca import command
    capped = str(tmp_path / "who_runs_capped")
    shutil.copy(c_program("who_runs"), capped)
    if shutil.which("setcap") is None or subprocess.run(["setcap", "cap_net_bind_service+ep", capped],
                                                        capture_output=True).returncode != 0:
        pytest.skip("cannot give a file capabilities here (no setcap, not root, or no xattr support)")
    assert command.agent_barrier(capped) is None          # as root: served as usual
    monkeypatch.setattr(command.os, "getuid", lambda: NOBODY)
    assert command.agent_barrier(capped) == " has file capabilities: the dynamic loader ignores LD_PRELOAD for it"

"""An exec keeps the process's shard (no new registration) exactly when nothing else can
take the descriptor channel across it; otherwise the new image registers anew, as before.
'processes' in the stats file counts the registrations of the run."""
import os
import shutil
import stat

from conftest import parse_trace, through_worker

CHAIN = 20


def test_exec_chain_keeps_one_registration_and_every_call_is_proxied(lsca_run, c_program):
    proc, stats, _ = lsca_run([c_program("exec_chain"), "plain", str(CHAIN)])
    assert proc.returncode == 0, proc.stderr
    assert stats["processes"] == 1
    assert through_worker(stats, "write") == CHAIN + 1
    # The passed-on shard's variable never reaches the program; the agent's own ones do.
    assert b"LSCA_RESUME" not in proc.stdout
    assert b"LSCA_SOCKET" in proc.stdout


def test_exec_chain_resolves_files_through_the_kept_channel(lsca_run, tmp_path):
    # Descriptor-creating calls after the exec: the new image received its files on the
    # channel the previous image passed on.
    (tmp_path / "f").write_text("kept\n")
    script = ("import os, sys\n"
              "n = int(sys.argv[1])\n"
              "print(open(sys.argv[2]).read().strip(), n, flush=True)\n"
              "if n: os.execv(sys.executable, [sys.executable, sys.argv[0], str(n - 1), sys.argv[2]])\n")
    prog = tmp_path / "chain.py"
    prog.write_text(script)
    import sys
    proc, stats, lines = lsca_run([sys.executable, str(prog), "3", str(tmp_path / "f")], trace=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(b"\n")[:4] == [b"kept 3", b"kept 2", b"kept 1", b"kept 0"]
    assert stats["processes"] == 1
    # Each of the 4 images opened f through a worker (the trace holds only workers' calls).
    opens = [c for c in parse_trace(lines) if c[1] == "openat" and f'"{tmp_path / "f"}"' in c[2]]
    assert len(opens) == 4 and all(c[3].isdigit() for c in opens), opens


def test_a_threaded_process_registers_anew_after_exec(lsca_run, c_program):
    # Another thread could spawn a child while the channel crosses the exec: not passed on.
    proc, stats, _ = lsca_run([c_program("exec_chain"), "threaded", "3"])
    assert proc.returncode == 0, proc.stderr
    assert stats["processes"] == 4
    assert through_worker(stats, "write") == 4


def test_an_exec_without_the_agent_gets_neither_the_variable_nor_the_channel(lsca_run, c_program):
    proc, stats, _ = lsca_run([c_program("exec_chain"), "noenv", "2", "/bin/sh", "-c",
                               "ls -l /proc/$$/fd; env"])
    assert proc.returncode == 0, proc.stderr
    assert b"socket:" not in proc.stdout
    assert b"LSCA_" not in proc.stdout
    assert stats["processes"] == 1


def test_a_set_id_image_registers_anew(lsca_run, c_program, tmp_path):
    # Its credentials may differ: never handed a shard; the agent (if loaded) registers it.
    target = tmp_path / "setuid-copy"
    shutil.copy(c_program("exec_chain"), target)
    os.chmod(target, 0o755 | stat.S_ISUID)
    proc, stats, _ = lsca_run([c_program("exec_chain"), "target", "1", str(target), "plain", "0"])
    assert proc.returncode == 0, proc.stderr
    assert stats["processes"] == 2
    assert through_worker(stats, "write") == 3

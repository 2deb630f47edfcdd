"""Policies applied by the workers: on the place a call resolves to, reloaded on HUP,
and fail-closed programs when no supervisor answers."""
import errno
import os
import signal
import subprocess
import sys
import textwrap

from conftest import SupervisorProcess, asleep_on_doorbell, clean_env, parse_trace, wait_until, workers_of

PY = sys.executable

POLICY = """
[[rule]]
name = "no secrets"
ops = ["%file"]
paths = ["{root}/secret*", "{root}/vault/**"]
action = "deny"
errno = "EPERM"

[[rule]]
name = "read-only data"
ops = ["write", "pwrite"]
path = "{root}/data/**"
action = "deny"
errno = "EROFS"

[[rule]]
name = "no cat in tmp"
op = "openat"
program = "cat"
path = "{root}/cat-free/**"
action = "deny"

[[rule]]
name = "watch"
ops = ["openat"]
path = "{root}/**"
action = "log"
"""


def make_tree(root):
    for d in ("vault", "data", "cat-free", "sub"):
        os.mkdir(root / d)
    (root / "secret.txt").write_text("s\n")
    (root / "ok.txt").write_text("ok\n")
    (root / "vault" / "key").write_text("k\n")
    (root / "data" / "table").write_text("t\n")
    (root / "cat-free" / "f").write_text("f\n")
    os.symlink("secret.txt", root / "link-to-secret")
    os.symlink("vault", root / "alias")            # a directory symlink into a denied tree


def run(root, *args, policy=None, cmd, **kw):
    env = clean_env()
    extra = ["--policy", str(policy)] if policy else []
    return subprocess.run([PY, "-m", "lsca.cli", "run", *extra, *args, "--", *cmd], cwd=root, env=env,
                          capture_output=True, timeout=120, **kw)


def sh(script):
    return ["/bin/sh", "-c", script]


def test_deny_by_resolved_path_and_errno(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    make_tree(root)
    policy = tmp_path / "p.toml"
    policy.write_text(POLICY.format(root=root))
    script = textwrap.dedent("""\
        cat ok.txt; echo "ok: $?"
        cat secret.txt; echo "secret: $?"
        cat link-to-secret; echo "link: $?"
        cat alias/key; echo "alias: $?"
        cat sub/../vault/key; echo "dotdot: $?"
        stat -c %s secret.txt >/dev/null; echo "stat: $?"
        mkdir vault/new; echo "mkdir: $?"
        mv ok.txt vault/ok.txt; echo "mv-in: $?"
        echo more >> data/table; echo "append: $?"
        cat data/table; echo "read-data: $?"
        cat cat-free/f; echo "cat-free: $?"
        head -c 2 cat-free/f; echo; echo "head-free: $?"
    """)
    proc = run(root, "--trace", "-o", str(tmp_path / "trace"), policy=policy, cmd=sh(script))
    out = proc.stdout.decode().splitlines()
    assert out == ["ok", "ok: 0", "secret: 1", "link: 1", "alias: 1", "dotdot: 1", "stat: 1", "mkdir: 1",
                   "mv-in: 1", "append: 1", "t", "read-data: 0", "cat-free: 1", "f", "", "head-free: 0"], proc.stderr
    err = proc.stderr.decode()
    assert "cat: secret.txt: Operation not permitted" in err
    # The supervisor says what it denied and what the log rule watched.
    assert f"policy: deny openat {root}/vault/key" in err and ": no secrets" in err
    assert f"policy: allow openat {root}/ok.txt" in err          # seen by the log rule
    # The trace shows the denial as the answer the program got, from a worker.
    calls = parse_trace((tmp_path / "trace").read_text().splitlines())
    assert any(name == "openat" and '"secret.txt"' in args and "EPERM" in result for _, name, args, result in calls)
    assert any(name == "write" and "EROFS" in result for _, name, args, result in calls)
    # Nothing denied happened.
    assert not (root / "vault" / "new").exists() and (root / "ok.txt").exists()
    assert (root / "data" / "table").read_text() == "t\n"


def test_default_deny_with_allow_list(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    make_tree(root)
    policy = tmp_path / "p.toml"
    policy.write_text(textwrap.dedent(f"""\
        default = "deny"
        default_errno = "EACCES"
        [[rule]]
        ops = ["%file"]
        paths = ["/", "/usr/**", "/lib/**", "/lib64/**", "/etc/**", "/dev/**", "/proc/**", "/bin/**",
                 "{root}", "{root}/ok.txt"]
        action = "allow"

        [[rule]]
        name = "what is open may be used"
        ops = ["read", "write", "pread", "pwrite", "readv", "writev", "lseek", "fstat", "dup", "dup3",
               "fcntl", "pipe2", "fsync", "fdatasync"]
        action = "allow"
    """))
    proc = run(root, policy=policy, cmd=sh("cat ok.txt; cat data/table; echo rc=$?"))
    assert proc.stdout.decode().splitlines() == ["ok", "rc=1"], proc.stderr
    assert "data/table: Permission denied" in proc.stderr.decode()


def test_bad_policy_is_one_line_and_nothing_runs(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rule]]\nop = "openat"\naction = "forbid"\n')
    marker = tmp_path / "ran"
    proc = run(tmp_path, policy=bad, cmd=["touch", str(marker)])
    assert proc.returncode == 1 and not marker.exists()
    assert proc.stderr.decode().splitlines() == \
        [f"lsca: policy {bad}:3: bad action 'forbid' (one of allow, deny, log)"]


def test_hup_reloads_the_policy_and_a_bad_file_keeps_the_old_one(tmp_path):
    root = tmp_path / "t"
    root.mkdir()
    make_tree(root)
    policy = tmp_path / "p.toml"
    policy.write_text("")                                   # allows everything
    log = open(tmp_path / "supervisor.log", "w+b")
    sup = SupervisorProcess(tmp_path, workers=1, extra=["--policy", str(policy)], stderr=log)
    try:
        env = sup.client_env()

        def cat_secret():
            return subprocess.run(["cat", "secret.txt"], cwd=root, env=env, capture_output=True, timeout=30)

        assert cat_secret().returncode == 0
        policy.write_text(POLICY.format(root=root))
        sup.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: cat_secret().returncode == 1)
        assert b"Operation not permitted" in cat_secret().stderr

        policy.write_text('[[rule]]\naction = "deny"\nerrno = "EBOGUS"\n')
        sup.process.send_signal(signal.SIGHUP)
        assert wait_until(lambda: b"keeping the policy in force" in open(tmp_path / "supervisor.log", "rb").read())
        text = open(tmp_path / "supervisor.log", "rb").read().decode()
        assert f"HUP: policy {policy}:3: " in text and "EBOGUS" in text
        assert cat_secret().returncode == 1                  # the old policy stays
        assert subprocess.run(["cat", "ok.txt"], cwd=root, env=env, capture_output=True).returncode == 0
    finally:
        assert sup.stop() == 0
        log.close()


def test_supervisor_refuses_a_bad_policy_at_start(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("default = 'maybe'\n")
    proc = subprocess.run([PY, "-m", "lsca.supervisor", "--socket", str(tmp_path / "s.sock"), "--policy", str(bad)],
                          env=clean_env(), capture_output=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == f"lsca-supervisor: policy {bad}:1: default must be 'allow' or 'deny', not 'maybe'"


def test_fail_closed_without_a_supervisor(tmp_path):
    (tmp_path / "f").write_text("data\n")
    env = clean_env()
    from lsca.runner import agent_path
    env.update(LD_PRELOAD=agent_path(), LSCA_SOCKET=str(tmp_path / "nobody-listens.sock"))
    open_native = subprocess.run(["cat", "f"], cwd=tmp_path, env=env, capture_output=True, timeout=30)
    assert open_native.returncode == 0 and open_native.stdout == b"data\n"
    env["LSCA_FAIL_CLOSED"] = "1"
    closed = subprocess.run(["cat", "f"], cwd=tmp_path, env=env, capture_output=True, timeout=30)
    assert closed.returncode == 1 and closed.stdout == b""
    err = closed.stderr.decode()
    assert "LSCA_FAIL_CLOSED=1: proxied calls fail with EACCES" in err and "Permission denied" in err


def test_fail_closed_after_the_supervisor_died(tmp_path):
    (tmp_path / "f").write_text("data\n")
    sup = SupervisorProcess(tmp_path, workers=1)
    # Without a supervisor even its output would be refused: the outcome is the exit status.
    script = textwrap.dedent("""\
        import os, signal, sys
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
        assert open("f").read() == "data\\n"
        os.write(1, b"ready\\n")
        signal.sigwait([signal.SIGUSR1])        # the test stops the supervisor meanwhile
        try:
            open("f").read()
        except OSError as e:
            os._exit(e.errno)
        os._exit(0)
    """)
    proc = None
    try:
        env = sup.client_env(LSCA_FAIL_CLOSED="1")
        proc = subprocess.Popen([PY, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE)
        assert proc.stdout.readline() == b"ready\n"
        # Only once no call is in flight: the answer to a write already read could still be EIO.
        assert wait_until(lambda: all(asleep_on_doorbell(w) for w in workers_of(sup)))
        sup.process.send_signal(signal.SIGINT)              # INT: workers end, shards marked dead
        sup.process.wait(30)
        proc.send_signal(signal.SIGUSR1)
        assert proc.wait(30) == 13                         # EACCES, not a native open
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        sup.stop()


def test_a_path_rule_denies_a_utimensat_that_runs_natively(tmp_path):
    """A name under /proc is handed back to run in the program (it means the program): the
    policy decides it on that name before it may run, as for any other path call."""
    root = tmp_path / "t"
    root.mkdir()
    target = root / "f"
    target.write_text("f\n")
    before = os.stat(target).st_mtime_ns
    policy = tmp_path / "p.toml"
    policy.write_text(textwrap.dedent("""\
        [[rule]]
        ops = ["utimensat"]
        path = "/proc/**"
        action = "deny"
        errno = "EPERM"
    """))
    script = textwrap.dedent("""\
        import os
        try:
            os.utime("/proc/self/cwd/f", (1, 1))
            print("ran")
        except OSError as e:
            print(e.errno)
        os.utime("f", (2, 2))                           # a path the rule does not name
        print("plain ok")
    """)
    proc = run(root, policy=policy, cmd=[PY, "-c", script])
    assert proc.stdout.decode().splitlines() == [str(errno.EPERM), "plain ok"], proc.stderr
    assert os.stat(target).st_mtime_ns == 2 * 10**9 != before

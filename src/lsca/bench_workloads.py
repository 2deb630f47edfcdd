"""lsca bench, section workloads (--workloads): small real jobs, natively, under `lsca run`
and under `strace -f -o /dev/null`, wall time each.

Every job runs in a fresh copy of inputs generated once (untimed) into the bench's
temporary directory, below `bench_loop wall`, which times the job from its fork to its
exit and reports it with a raw system call (so under LSCA every proxied call counted
is the job's). Every lsca run is checked through `lsca run --stats-file`: no proxied
call at all fails the benchmark. Every run's result is checked (the program built
runs, the commit exists, the archive round-trips, the query answers, every module is
compiled, every request got the file). Each job first runs once natively, untimed, so
that the page cache holds its tools and inputs.

The http job is a server: `python3 -m http.server` runs in the mode, a native client
in this process (threads, http.client, a new connection per request) sends a fixed
number of requests; the time is the client's, from the first request to the last
answer.
"""
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import namedtuple

from lsca.bench import BenchError, lsca_cli, read_stats, say, watch
from lsca.launch import clean_env

# A job: name (as shown, and for --workloads-only); what (for --help); tools (programs it needs
# on PATH, else it is skipped); build (template_dir, size): generate the inputs; command (run_dir,
# ctx): (argv, extra environment); check (run_dir, ctx, output): None, or what is wrong.
Workload = namedtuple("Workload", "name what tools build command check")

FULL = {"c_files": 8, "c_functions": 60, "git_files": 200, "tar_files": 200, "tar_file_kib": 8,
        "sqlite_rows": 5000, "py_modules": 50, "http_requests": 400}
QUICK = {"c_files": 3, "c_functions": 10, "git_files": 30, "tar_files": 30, "tar_file_kib": 2,
         "sqlite_rows": 500, "py_modules": 8, "http_requests": 40}
HTTP_CLIENTS = 4
HTTP_FILE_SIZE = 1024
HTTP_WARMUP = 4
HTTP_TIMEOUT_S = 30.0
WORKLOAD_TIMEOUT_S = 600.0
SERVER_READY_TIMEOUT_S = 60.0
MODES = ("native", "lsca", "strace")
LIMIT_X_NATIVE = 1.5        # the issue: a workload under lsca within 1.5x its native time
WALL_PREFIX = "lsca-bench-wall "
# Inherited settings that would change what the jobs do.
DROPPED_ENV = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "SQLITE_HISTORY")


def words(rng, n):
    syllables = ["lo", "ra", "ki", "sem", "tul", "va", "pon", "dre", "ix", "mar", "zu", "ne"]
    return " ".join("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def text_tree(root, files, kib, seed):
    """files text files of about kib KiB in a few nested directories."""
    rng = random.Random(seed)
    for i in range(files):
        sub = os.path.join(root, f"dir{i % 10}", f"sub{i % 3}")
        lines = []
        while sum(len(x) for x in lines) < kib * 1024:
            lines.append(f"{i}:{len(lines)} {words(rng, 12)}\n")
        write(os.path.join(sub, f"file{i:04d}.txt"), "".join(lines))


def file_count(root):
    return sum(len(names) for _, _, names in os.walk(root))


# ---- make: a small C project, make -j2 ----

def build_make(template, size):
    n, funcs = size["c_files"], size["c_functions"]
    write(os.path.join(template, "lib.h"), "".join(f"long lib{k}(long x);\n" for k in range(n)))
    for k in range(n):
        body = ['#include "lib.h"\n']
        for j in range(funcs):
            body.append(f"static long f{j}(long x)\n{{\n    long s = x;\n    for (long i = 0; i < {j + 3}; i++)\n"
                        f"        s = (s * {2 * j + 3} + i) % 1000003;\n    return s;\n}}\n")
        body.append(f"long lib{k}(long x)\n{{\n    long s = x;\n"
                    + "".join(f"    s = f{j}(s + {k});\n" for j in range(funcs)) + "    return s;\n}\n")
        write(os.path.join(template, f"lib{k}.c"), "".join(body))
    write(os.path.join(template, "main.c"),
          '#include <stdio.h>\n#include "lib.h"\nint main(void)\n{\n    long s = 1;\n'
          + "".join(f"    s += lib{k}(s) % 7;\n" for k in range(n))
          + f'    printf("ok {n} %ld\\n", s);\n    return 0;\n}}\n')
    objects = " ".join(["main.o"] + [f"lib{k}.o" for k in range(n)])
    write(os.path.join(template, "Makefile"),
          f"CC = cc\nCFLAGS = -O2 -Wall\nOBJS = {objects}\n\nprog: $(OBJS)\n\t$(CC) -o $@ $(OBJS)\n\n"
          "%.o: %.c lib.h\n\t$(CC) $(CFLAGS) -c -o $@ $<\n")


def check_make(run_dir, ctx, output):
    prog = os.path.join(run_dir, "prog")
    if not os.path.exists(prog):
        return "make built no program"
    result = subprocess.run([prog], capture_output=True, text=True, env=clean_env())
    if result.returncode != 0 or not result.stdout.startswith(f"ok {ctx.size['c_files']} "):
        return f"the program built prints {result.stdout!r} (status {result.returncode})"
    return None


# ---- git: init, add, commit, log, gc ----

GIT_SCRIPT = ('git -c init.defaultBranch=main init -q . && git add -A && '
              'git -c user.name="lsca bench" -c user.email=bench@lsca.invalid commit -q -m "generated tree" && '
              'git log --stat > /dev/null && git gc -q')


def git_env(ctx):
    return {"GIT_CONFIG_NOSYSTEM": "1", "HOME": ctx.home, "XDG_CONFIG_HOME": os.path.join(ctx.home, ".config"),
            "GIT_AUTHOR_DATE": "2024-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2024-01-01T00:00:00Z"}


def check_git(run_dir, ctx, output):
    env = {**workload_env(ctx), **git_env(ctx)}
    count = subprocess.run(["git", "rev-list", "--count", "HEAD"], cwd=run_dir, env=env, capture_output=True,
                           text=True)
    if count.returncode != 0 or count.stdout.strip() != "1":
        return f"git rev-list --count HEAD says {count.stdout.strip() or count.stderr.strip()!r}, not 1"
    files = subprocess.run(["git", "ls-files"], cwd=run_dir, env=env, capture_output=True, text=True)
    if len(files.stdout.splitlines()) != ctx.size["git_files"]:
        return f"the commit holds {len(files.stdout.splitlines())} file(s), not {ctx.size['git_files']}"
    return None


# ---- tar: tar c | gzip, tar xzf ----

TAR_SCRIPT = "tar cf - tree | gzip > tree.tgz && mkdir out && tar xzf tree.tgz -C out"


def check_tar(run_dir, ctx, output):
    original, extracted = os.path.join(run_dir, "tree"), os.path.join(run_dir, "out", "tree")
    for directory, _, names in os.walk(original):
        for name in names:
            a = os.path.join(directory, name)
            b = os.path.join(extracted, os.path.relpath(a, original))
            try:
                with open(a, "rb") as fa, open(b, "rb") as fb:
                    if fa.read() != fb.read():
                        return f"{os.path.relpath(b, run_dir)} differs from its original"
            except OSError as e:
                return f"extracting lost {os.path.relpath(b, run_dir)}: {e.strerror}"
    if file_count(extracted) != ctx.size["tar_files"]:
        return f"{file_count(extracted)} file(s) extracted, not {ctx.size['tar_files']}"
    return None


# ---- sqlite: inserts in one transaction, a query ----

def sqlite_values(rows):
    return [(i, f"name-{i}", (i * 7919) % 1000) for i in range(1, rows + 1)]


def build_sqlite(template, size):
    lines = ["CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, value INTEGER NOT NULL);", "BEGIN;"]
    lines += [f"INSERT INTO t VALUES({i}, '{name}', {value});" for i, name, value in sqlite_values(size["sqlite_rows"])]
    lines += ["COMMIT;", "CREATE INDEX t_value ON t(value);", "SELECT count(*), sum(value) FROM t;",
              "SELECT count(*) FROM t WHERE value < 100;"]
    write(os.path.join(template, "script.sql"), "\n".join(lines) + "\n")


def check_sqlite(run_dir, ctx, output):
    values = sqlite_values(ctx.size["sqlite_rows"])
    expected = f"{len(values)}|{sum(v for _, _, v in values)}\n{sum(1 for _, _, v in values if v < 100)}\n"
    try:
        with open(os.path.join(run_dir, "out.txt")) as f:
            got = f.read()
    except OSError as e:
        return f"sqlite3 wrote no answer: {e.strerror}"
    return None if got == expected else f"sqlite3 answered {got!r}, not {expected!r}"


# ---- compileall: a generated package ----

def build_package(template, size):
    rng = random.Random(5)
    write(os.path.join(template, "pkg", "__init__.py"), '"""A generated package."""\n')
    for m in range(size["py_modules"]):
        body = [f'"""Generated module {m}: {words(rng, 8)}."""\nimport math\n\n']
        for c in range(4):
            body.append(f"class Thing{c}:\n    def __init__(self, x):\n        self.x = x\n\n"
                        f"    def value(self):\n        return [math.sqrt(i + self.x) for i in range({c + 3})]\n\n\n")
        for f in range(10):
            body.append(f"def fn{f}(a, b={f}):\n    '''{words(rng, 6)}'''\n    total = 0\n"
                        f"    for i in range(a):\n        total += i * b if i % 2 else -i\n"
                        f"    return {{'m': {m}, 'f': {f}, 'total': total}}\n\n\n")
        write(os.path.join(template, "pkg", f"mod{m:02d}.py"), "".join(body))


def check_package(run_dir, ctx, output):
    cache = os.path.join(run_dir, "pkg", "__pycache__")
    compiled = [n for n in os.listdir(cache) if n.endswith(".pyc")] if os.path.isdir(cache) else []
    if len(compiled) != ctx.size["py_modules"] + 1:
        return f"{len(compiled)} module(s) compiled, not {ctx.size['py_modules'] + 1}"
    return None


# ---- http: a server in the mode, a native client ----

def build_http(template, size):
    with open(os.path.join(template, "file.bin"), "wb") as f:
        f.write(random.Random(7).randbytes(HTTP_FILE_SIZE))


def no_build(template, size):
    pass


WORKLOADS = {w.name: w for w in [
    Workload("make", "make -j2 of a generated C project (8 .c files and a header)", ("make", "cc"),
             build_make, lambda run_dir, ctx: (["make", "-j2", "-s"], {}), check_make),
    Workload("git", "git init, add, commit, log --stat, gc of a generated tree of 200 files (no system or "
             "user config: GIT_CONFIG_NOSYSTEM=1, HOME a temporary directory)", ("git", "sh"),
             lambda template, size: text_tree(template, size["git_files"], 2, 3),
             lambda run_dir, ctx: (["sh", "-c", GIT_SCRIPT], git_env(ctx)), check_git),
    Workload("tar", "tar c DIR | gzip > x.tgz, then tar xzf x.tgz, of a generated tree of 200 files",
             ("tar", "gzip", "sh"),
             lambda template, size: text_tree(os.path.join(template, "tree"), size["tar_files"],
                                              size["tar_file_kib"], 4),
             lambda run_dir, ctx: (["sh", "-c", TAR_SCRIPT], {}), check_tar),
    Workload("sqlite", "the sqlite3 shell: a table, 5000 inserts in one transaction, an index, two queries",
             ("sqlite3", "sh"), build_sqlite,
             lambda run_dir, ctx: (["sh", "-c", "sqlite3 bench.db < script.sql > out.txt"], {}), check_sqlite),
    Workload("compileall", "python3 -m compileall -q -f of a generated package of 50 modules (this Python)",
             (), build_package,
             lambda run_dir, ctx: ([sys.executable, "-I", "-m", "compileall", "-q", "-f", "pkg"], {}),
             check_package),
    Workload("http", f"python3 -m http.server in the mode, {HTTP_CLIENTS} native client threads, one connection "
             f"per request (no keep-alive), 400 GETs of a {HTTP_FILE_SIZE} B file; the time of the requests",
             (), build_http, None, None),
]}


class Context:
    """What every run of the section shares."""

    def __init__(self, args, processes, workdir, loop, supervisor, strace, size):
        self.args, self.processes, self.workdir, self.loop = args, processes, workdir, loop
        self.supervisor, self.strace, self.size = supervisor, strace, size
        self.home = os.path.join(workdir, "workload-home")
        os.makedirs(self.home, exist_ok=True)
        self.counter = 0


class WorkloadFailed(Exception):
    """One run of a job failed or gave a wrong result: reported, the other jobs go on."""


def workload_env(ctx):
    return {k: v for k, v in clean_env().items() if k not in DROPPED_ENV}


def mode_command(ctx, mode, inner, stats_file, extra_env):
    """The command line and environment that run inner in mode."""
    if mode == "native":
        return inner, {**workload_env(ctx), **extra_env}
    if mode == "strace":
        return [ctx.strace, "-f", "-o", "/dev/null", *inner], {**workload_env(ctx), **extra_env}
    env = {k: v for k, v in ctx.supervisor.client_env().items() if k not in DROPPED_ENV}
    return [*lsca_cli(), "run", "--stats-file", stats_file, "--", *inner], {**env, **extra_env}


def check_lsca_stats(stats_file, what):
    """The counts of an lsca run: at least one call proxied, else the benchmark fails."""
    stats = read_stats(stats_file, what)
    proxied, passthrough = stats.get("proxied", {}), stats.get("passthrough", {})
    if sum(proxied.values()) == 0:
        raise BenchError(f"{what} was NOT proxied by LSCA: no call proxied ({stats.get('processes', 0)} "
                         f"process(es), passthrough {passthrough}); the lsca column would measure the native path")
    return {"processes": stats.get("processes", 0), "proxied_total": sum(proxied.values()),
            "passthrough_total": sum(passthrough.values()), "proxied": proxied, "passthrough": passthrough}


def fresh_copy(ctx, workload, mode, repeat):
    ctx.counter += 1
    run_dir = os.path.join(ctx.workdir, f"wl-{workload.name}-{mode}-{repeat}-{ctx.counter}")
    shutil.copytree(os.path.join(ctx.workdir, f"wl-template-{workload.name}"), run_dir, symlinks=True)
    return run_dir


def run_job(ctx, workload, mode, repeat):
    """One timed run of a job below `bench_loop wall`: {"seconds", and for lsca the counts}."""
    run_dir = fresh_copy(ctx, workload, mode, repeat)
    stats_file = os.path.join(ctx.workdir, f"wl-stats-{ctx.counter}.json")
    argv, extra_env = workload.command(run_dir, ctx)
    command, env = mode_command(ctx, mode, [ctx.loop, "wall", *argv], stats_file, extra_env)
    what = f"workload {workload.name} ({mode})"
    process = ctx.processes.start_client(command, env, subprocess.PIPE, subprocess.PIPE, cwd=run_dir)
    try:
        status, out, err = watch(process, ctx.supervisor if mode == "lsca" else None, WORKLOAD_TIMEOUT_S, what)
    finally:
        ctx.processes.end_client(process)
    try:
        walls = [line for line in out.splitlines() if line.startswith(WALL_PREFIX)]
        if not walls:
            raise WorkloadFailed(f"{what}: no time reported (status {status}): {tail(err)}")
        ns, wait_status = (int(x) for x in walls[-1][len(WALL_PREFIX):].split())
        if status != 0 or wait_status != 0:
            raise WorkloadFailed(f"{what}: `{' '.join(argv)}` failed (wait status {wait_status}, exit status "
                                 f"{status}): {tail(err)}")
        wrong = workload.check(run_dir, ctx, out)
        if wrong:
            raise WorkloadFailed(f"{what}: wrong result: {wrong}")
        sample = {"seconds": ns / 1e9}
        if mode == "lsca":
            sample.update(check_lsca_stats(stats_file, what))
        return sample
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def tail(text, lines=6):
    text = text.strip()
    return "no output" if not text else " | ".join(text.splitlines()[-lines:])


# ---- http ----

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_file(port):
    """One GET of the file on a connection of its own; raises on anything but the file."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("GET", "/file.bin", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200 or len(body) != HTTP_FILE_SIZE:
            raise WorkloadFailed(f"status {response.status}, {len(body)} bytes")
    finally:
        conn.close()


def wait_listening(ctx, process, port, mode, what):
    deadline = time.monotonic() + SERVER_READY_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise WorkloadFailed(f"{what}: the server exited with status {process.returncode} at start")
        if mode == "lsca":
            ctx.supervisor.check_alive()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(("127.0.0.1", port))
                return
            except ConnectionRefusedError:
                pass
        if time.monotonic() > deadline:
            raise WorkloadFailed(f"{what}: the server did not listen within {SERVER_READY_TIMEOUT_S:.0f} s")
        time.sleep(0.05)


def hammer(port, total, clients):
    """total GETs from clients threads; returns the seconds from the first to the last answer."""
    lock = threading.Lock()
    sent = [0]
    errors = []

    def client():
        while True:
            with lock:
                if sent[0] >= total or errors:
                    return
                sent[0] += 1
            try:
                get_file(port)
            except Exception as e:      # reported by the main thread
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                return

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(HTTP_TIMEOUT_S * total)
    elapsed = time.monotonic() - start
    if errors:
        raise WorkloadFailed(f"a request failed: {errors[0]} ({sent[0]} of {total} sent)")
    if any(t.is_alive() for t in threads):
        raise WorkloadFailed("the client threads did not finish")
    return elapsed


def server_pid(leader, server_argv):
    """The pid of the server itself (below lsca run or strace, or the leader)."""
    import psutil
    try:
        root = psutil.Process(leader.pid)
        for p in [root] + root.children(recursive=True):
            try:
                if p.cmdline()[:len(server_argv)] == server_argv:
                    return p.pid
            except psutil.Error:
                continue
    except psutil.Error:
        pass
    return None


def run_http(ctx, workload, mode, repeat):
    run_dir = fresh_copy(ctx, workload, mode, repeat)
    stats_file = os.path.join(ctx.workdir, f"wl-stats-{ctx.counter}.json")
    log = os.path.join(ctx.workdir, f"wl-http-{ctx.counter}.log")
    port = free_port()
    server_argv = [sys.executable, "-I", "-m", "http.server", "--bind", "127.0.0.1", "--directory", run_dir,
                   str(port)]
    command, env = mode_command(ctx, mode, server_argv, stats_file, {})
    what = f"workload http ({mode} server)"
    total = ctx.size["http_requests"]
    with open(log, "wb") as err:
        process = ctx.processes.start_client(command, env, subprocess.DEVNULL, err, cwd=run_dir)
    try:
        wait_listening(ctx, process, port, mode, what)
        try:
            for _ in range(HTTP_WARMUP):
                get_file(port)
        except (OSError, http.client.HTTPException, WorkloadFailed) as e:
            raise WorkloadFailed(f"{what}: a warm-up request failed: {type(e).__name__}: {e}") from None
        seconds = hammer(port, total, HTTP_CLIENTS)
        pid = server_pid(process, server_argv)
        if pid is None:
            raise WorkloadFailed(f"{what}: the server's process was not found to stop it")
        os.kill(pid, signal.SIGINT)         # http.server exits 0 on KeyboardInterrupt
        status, _, _ = watch(process, ctx.supervisor if mode == "lsca" else None, SERVER_READY_TIMEOUT_S, what)
        if status != 0:
            raise WorkloadFailed(f"{what}: the server exited with status {status}")
    except WorkloadFailed as e:
        with open(log, errors="replace") as f:
            raise WorkloadFailed(f"{e} (server log: {tail(f.read(), 3)})") from None
    finally:
        ctx.processes.end_client(process)
        shutil.rmtree(run_dir, ignore_errors=True)
    sample = {"seconds": seconds, "requests": total, "requests_per_s": total / seconds}
    if mode == "lsca":
        sample.update(check_lsca_stats(stats_file, what))
    return sample


# ---- the section ----

def selected(args):
    return args.workloads_only or list(WORKLOADS)


def run_workloads(args, processes, workdir, loop, supervisor, strace, modes):
    import statistics

    modes = [m for m in MODES if m in modes]
    size = dict(QUICK if args.quick else FULL)
    if args.http_requests:
        size["http_requests"] = args.http_requests
    ctx = Context(args, processes, workdir, loop, supervisor, strace, size)
    result = {"modes": modes, "repeats": args.workload_repeats, "size": "quick" if args.quick else "full",
              "sizes": size, "http_clients": HTTP_CLIENTS, "workloads": {}, "skipped": {}, "failures": [],
              "loadavg_before": list(os.getloadavg())}
    for name in selected(args):
        workload = WORKLOADS[name]
        missing = [tool for tool in workload.tools if not shutil.which(tool)]
        if missing:
            result["skipped"][name] = f"{', '.join(missing)} not found"
            say(f"workloads: {name} skipped: {', '.join(missing)} not found")
            continue
        template = os.path.join(workdir, f"wl-template-{name}")
        os.makedirs(template)
        workload.build(template, size)
        runs = {mode: [] for mode in modes}
        failed = None
        once = run_http if name == "http" else run_job
        try:        # untimed: the page cache holds the tools and the inputs before the first timed run
            once(ctx, workload, "native", "warm-up")
        except WorkloadFailed as e:
            failed = f"(warm-up) {e}"
        for repeat in range(0 if failed else args.workload_repeats):
            for mode in modes:          # interleaved, like the per-call parts
                try:
                    runs[mode].append(once(ctx, workload, mode, repeat))
                except WorkloadFailed as e:
                    failed = str(e)
                    break
            if failed:
                break
        shutil.rmtree(template, ignore_errors=True)
        if failed:
            result["failures"].append(failed)
            result["workloads"][name] = {"what": workload.what, "failed": failed}
            say(f"workloads: {name} FAILED: {failed}")
            continue
        per_mode = {mode: {"median_s": statistics.median(r["seconds"] for r in runs[mode]),
                           "samples_s": [r["seconds"] for r in runs[mode]], "runs": runs[mode]} for mode in modes}
        native = per_mode.get("native", {}).get("median_s")
        x_native = {mode: (per_mode[mode]["median_s"] / native if native else None) for mode in modes}
        lsca, strace_s = per_mode.get("lsca", {}).get("median_s"), per_mode.get("strace", {}).get("median_s")
        entry = {"what": workload.what, "modes": per_mode, "x_native": x_native,
                 "lsca_within_limit": None if x_native.get("lsca") is None else x_native["lsca"] <= LIMIT_X_NATIVE,
                 "lsca_below_strace": None if lsca is None or strace_s is None else lsca < strace_s}
        if name == "http":
            entry["requests"] = size["http_requests"]
            entry["requests_per_s"] = {mode: size["http_requests"] / per_mode[mode]["median_s"] for mode in modes}
        result["workloads"][name] = entry
        say(f"workloads: measured {name}: " + ", ".join(f"{m} {per_mode[m]['median_s']:.3f} s" for m in modes))
    result["loadavg_after"] = list(os.getloadavg())
    return result


def format_workloads(result, workers):
    modes = result["modes"]
    lines = [f"workloads: wall time in seconds, median of {result['repeats']} run(s), {result['size']} size; "
             f"lsca: lsca run on the bench's supervisor ({workers} worker(s)); http: the server runs in the mode, "
             f"its {result['http_clients']} client threads natively"]
    header = f"{'workload':<12}" + "".join(f"{m + ' s':>18}" for m in modes)
    if "lsca" in modes and "native" in modes:
        header += f"  {'lsca <= ' + format(LIMIT_X_NATIVE, 'g') + 'x native':<21}"
    if "lsca" in modes and "strace" in modes:
        header += "  lsca < strace"
    lines.append(header)
    for name, entry in result["workloads"].items():
        if "failed" in entry:
            lines.append(f"{name:<12}FAILED (see below)")
            continue
        row = f"{name:<12}"
        for m in modes:
            cell = f"{entry['modes'][m]['median_s']:.3f}"
            if m != "native" and entry["x_native"].get(m) is not None:
                cell += f" ({entry['x_native'][m]:.2f}x)"
            row += f"{cell:>18}"
        if "lsca" in modes and "native" in modes:
            row += f"  {yes_no(entry['lsca_within_limit']):<21}"
        if "lsca" in modes and "strace" in modes:
            row += f"  {yes_no(entry['lsca_below_strace'])}"
        lines.append(row)
    http_entry = result["workloads"].get("http")
    if http_entry and "failed" not in http_entry:
        lines.append(f"http: {http_entry['requests']} requests: "
                     + ", ".join(f"{m} {r:,.0f} req/s" for m, r in http_entry["requests_per_s"].items()))
    if "lsca" in modes:
        checked = {name: e for name, e in result["workloads"].items() if "failed" not in e}
        if checked:
            lows = [min(r["proxied_total"] for r in e["modes"]["lsca"]["runs"]) for e in checked.values()]
            lines.append(f"proxy check passed: every lsca run had proxied calls (at least {min(lows)} per run); "
                         "per job, its last lsca run:")
            for name, e in checked.items():
                r = e["modes"]["lsca"]["runs"][-1]
                passthrough = ", ".join(f"{op} {n}" for op, n in sorted(r["passthrough"].items(), key=lambda x: -x[1]))
                lines.append(f"  {name}: {r['processes']} process(es), {r['proxied_total']} calls proxied, "
                             f"{r['passthrough_total']} passthrough" + (f" ({passthrough})" if passthrough else ""))
    for name, why in result["skipped"].items():
        lines.append(f"skipped: {name} ({why})")
    for failure in result["failures"]:
        lines.append(f"FAILED: {failure}")
    return "\n".join(lines)


def yes_no(value):
    return "-" if value is None else ("yes" if value else "NO")

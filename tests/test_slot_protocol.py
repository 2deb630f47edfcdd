"""The slot hand-off protocol (agent_lib/src/slots.c), checked two ways.

tests/protocol/slot_stress.c runs the real code under load - client threads, worker threads
with SysV doorbells, shards in SysV shared memory, cancels and signals, worker deaths and
lsca_shard_fail_all - and checks every answer; it is run as built and under ThreadSanitizer.
tests/protocol/slot_model.cpp is a Relacy model of the same protocol with the memory orders
slots.c uses, explored on a relaxed memory model: it must pass, and each weakened variant must
fail (which is what shows the check can see a wrong order). x86-64 and QEMU's aarch64 both run
a stronger memory model than Armv8 allows, so the stress test alone cannot show that.

LSCA_SLOT_STRESS_SECONDS (default 3) sets the stress runs' length and
LSCA_SLOT_MODEL_ITERATIONS (default 200000) the model's, for slow emulated machines; the
checks are counts, never timings.
"""
import os
import re
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUDE = os.path.join(ROOT, "agent_lib", "include")
SLOTS_C = os.path.join(ROOT, "agent_lib", "src", "slots.c")
STRESS_C = os.path.join(ROOT, "tests", "protocol", "slot_stress.c")
MODEL_CPP = os.path.join(ROOT, "tests", "protocol", "slot_model.cpp")

SECONDS = float(os.environ.get("LSCA_SLOT_STRESS_SECONDS", "3"))
MODEL_ITERATIONS = int(os.environ.get("LSCA_SLOT_MODEL_ITERATIONS", "200000"))
# The runs' own watchdogs report a stuck call long before these; they only bound a broken build.
STRESS_TIMEOUT_S = 4 * SECONDS + 300
MODEL_TIMEOUT_S = 600

SUMMARY = re.compile(r"^slot_stress: (\d+) calls, (\d+) sleeps, (\d+) cancels, ok$", re.M)


def compile_or_fail(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}"


def missing_tool(reason):
    """Skip, except in CI (CI=true), which installs what the test needs: there it fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: it must be installed)")
    pytest.skip(reason)


# ---- the stress test of the real code ----

@pytest.fixture(scope="module")
def stress_builds(tmp_path_factory):
    cc = os.environ.get("CC", "gcc")
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    out = tmp_path_factory.mktemp("slot_stress")
    return cc, out


def build_stress(cc, out, name, flags):
    binary = str(out / name)
    if not os.path.exists(binary):
        compile_or_fail([cc, *flags, "-pthread", "-Wall", "-Wextra", f"-I{INCLUDE}", STRESS_C, SLOTS_C, "-o", binary])
    return binary


def run_stress(binary, *args, env=None):
    done = subprocess.run([binary, "-v", "--seconds", str(SECONDS), *args], capture_output=True, text=True,
                          timeout=STRESS_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"slot_stress {' '.join(args)} failed ({done.returncode}):\n{output}"
    summary = SUMMARY.search(done.stdout)
    assert summary, f"no summary line:\n{output}"
    detail = re.search(r"^slot_stress: detail: (.*)$", done.stdout, re.M)
    assert detail, f"no detail line:\n{output}"
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", detail.group(1))}
    calls, sleeps, cancels = map(int, summary.groups())
    return calls, sleeps, cancels, counts, output


def check_common(calls, sleeps, cancels, counts, output):
    # Every path was taken: calls, cancels of each kind, worker deaths with their retries and
    # republished hints, fail_all at the end, a dead shard's -1.
    assert calls > 0 and cancels > 0, output
    assert counts["block_calls"] > 0 and counts["eintr"] > 0, output
    assert counts["how_cancel_now"] > 0 and counts["how_cancel_later"] > 0, output
    assert counts["deaths"] > 0, output
    assert counts["failall"] > 0, output
    assert counts["dead_shard_returns"] > 0, output
    if counts["counted_syscalls"]:
        assert sleeps == counts["futex_waits"] + counts["doorbell_sleeps"], output
        assert counts["futex_waits"] > 0 and counts["doorbell_sleeps"] > 0 and counts["doorbell_rings"] > 0, output


def test_stress_mixed_spin(stress_builds):
    """Assorted spin budgets, 12 clients on 3 shards, 2 workers."""
    cc, out = stress_builds
    binary = build_stress(cc, out, "slot_stress", ["-O2"])
    calls, sleeps, cancels, counts, output = run_stress(binary)
    check_common(calls, sleeps, cancels, counts, output)
    assert counts["handler_cancels"] > 0 or counts["wait_returned_1"] > 0, output


def test_stress_sleep_at_once(stress_builds):
    """spin_ns 0 on both sides: every wait and every idle worker takes the futex / doorbell path.
    One client per worker, so no other client's doorbell can hide a lost one."""
    cc, out = stress_builds
    binary = build_stress(cc, out, "slot_stress", ["-O2"])
    calls, sleeps, cancels, counts, output = run_stress(binary, "--spin-ns", "0", "--clients", "2",
                                                        "--workers", "2", "--shards", "2", "--seed", "7")
    check_common(calls, sleeps, cancels, counts, output)
    if counts["counted_syscalls"]:
        assert counts["futex_woken"] > 0 and counts["doorbell_woken"] > 0, output


def tsan_works(cc, out):
    """-fsanitize=thread builds and runs here (libtsan installed, a supported address space)."""
    probe_c = out / "tsan_probe.c"
    probe_c.write_text("#include <pthread.h>\nstatic void *f(void *a) { return a; }\n"
                       "int main(void) { pthread_t t; pthread_create(&t, 0, f, 0); return pthread_join(t, 0); }\n")
    probe = str(out / "tsan_probe")
    built = subprocess.run([cc, "-fsanitize=thread", "-pthread", str(probe_c), "-o", probe], capture_output=True,
                           text=True, timeout=120)
    if built.returncode != 0:
        return f"{cc} -fsanitize=thread does not build here: {built.stderr.strip()[:300]}"
    ran = subprocess.run([probe], capture_output=True, text=True, timeout=120)
    if ran.returncode != 0:
        return f"ThreadSanitizer does not run here: {ran.stderr.strip()[:300]}"
    return None


def test_stress_thread_sanitizer(stress_builds):
    """The same run under ThreadSanitizer: no data race in slots.c or in the test's use of it."""
    cc, out = stress_builds
    problem = tsan_works(cc, out)
    if problem:
        pytest.skip(problem)        # a platform matter (libtsan, address-space layout), even in CI
    binary = build_stress(cc, out, "slot_stress_tsan", ["-O1", "-g", "-fsanitize=thread"])
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1")
    calls, sleeps, cancels, counts, output = run_stress(binary, env=env)
    assert "ThreadSanitizer" not in output, output
    check_common(calls, sleeps, cancels, counts, output)


# ---- the Relacy model ----

def relacy_compiler():
    cxx = os.environ.get("CXX", "g++")
    if not shutil.which(cxx):
        missing_tool(f"no C++ compiler ({cxx}) for the Relacy model (Debian packages g++ and relacy-dev)")
    probe = subprocess.run([cxx, "-x", "c++", "-E", "-", "-o", os.devnull], input="#include <relacy/relacy.hpp>\n",
                           capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        missing_tool("Relacy's headers (relacy/relacy.hpp) are not installed: Debian package relacy-dev")
    return cxx


@pytest.fixture(scope="module")
def model_builds(tmp_path_factory):
    cxx = relacy_compiler()
    out = tmp_path_factory.mktemp("slot_model")
    normal, weak = str(out / "slot_model"), str(out / "slot_model_weaken1")
    compile_or_fail([cxx, "-O1", "-std=gnu++11", MODEL_CPP, "-o", normal])
    compile_or_fail([cxx, "-O1", "-std=gnu++11", "-DWEAKEN=1", MODEL_CPP, "-o", weak])
    return normal, weak


def run_model(binary, *args):
    done = subprocess.run([binary, "--iterations", str(MODEL_ITERATIONS), *args], capture_output=True, text=True,
                          timeout=MODEL_TIMEOUT_S, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout + done.stderr


def coverage(output, scenario):
    line = re.search(rf"^slot_model: coverage {scenario}:(.*)$", output, re.M)
    assert line, output[-3000:]
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.group(1))}


def test_model_passes_with_ring_c_orders(model_builds):
    rc, output = run_model(model_builds[0])
    assert rc == 0 and "slot_model: ok" in output, output[-6000:]
    # The explored executions went through the sleep and wake paths, not only past them.
    handoff = coverage(output, "handoff")
    for event in ("futex_sleep", "futex_wake", "doorbell_sleep", "doorbell_post", "wait_eintr", "agent_handler",
                  "cancel_at_claim", "cancel_hint_answer", "stale_hint"):
        assert handoff.get(event, 0) > 0, (event, handoff)
    failall = coverage(output, "failall")
    assert failall.get("dead_return", 0) > 0 and failall.get("failall_answer", 0) > 0, failall
    republish = coverage(output, "republish")
    assert republish.get("retry", 0) > 0 and republish.get("republish", 0) > 0, republish


def test_model_catches_relaxed_done_store(model_builds):
    """-DWEAKEN=1: the DONE store relaxed. Relacy must see the client read an answer that was
    not published to it - the check is not blind to the order that matters most."""
    rc, output = run_model(model_builds[1])
    assert rc != 0, f"the weakened model passed:\n{output[-3000:]}"
    assert "DATA RACE" in output, output[-3000:]


# Each further weakening (--weaken N of the same binary, see slot_model.cpp) and what it breaks.
WEAKENINGS = {
    2: "DATA RACE",          # the client's spin load of state relaxed
    3: "DATA RACE",          # the SUBMITTED store relaxed
    4: "DATA RACE",          # the claim CAS relaxed
    5: "DEADLOCK|LIVELOCK",  # DONE release + wake CAS acq_rel: the client_sleeping pair broken
    6: "DEADLOCK|LIVELOCK",  # worker_sleeping pair release/acquire: a lost doorbell
    7: "DEADLOCK|LIVELOCK",  # fail_all's dead store release
    8: "DEADLOCK|LIVELOCK",  # the sleep flag without the call's seq
    9: "DEADLOCK|LIVELOCK",  # no lsca_shard_republish after a worker died
    10: "DEADLOCK|LIVELOCK",  # the SUBMITTED store release, not seq_cst (the dead pair)
}


@pytest.mark.parametrize("weakening", sorted(WEAKENINGS))
def test_model_catches_weakening(model_builds, weakening):
    rc, output = run_model(model_builds[0], "--weaken", str(weakening))
    assert rc != 0, f"weakening {weakening} passed:\n{output[-3000:]}"
    assert re.search(WEAKENINGS[weakening], output), output[-3000:]

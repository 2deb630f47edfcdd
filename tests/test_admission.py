"""Who a registering process is (lsca.supervisor.admission) and what a worker may then do
for its threads (lsca.workers.creds.within_registration), on real processes."""
import errno
import os
import signal
import subprocess

import pytest

from lsca.identity import Identity
from lsca.supervisor.admission import Refused, admit, dump_owner, exited, open_proc_dir
from lsca.workers.creds import Creds, within_registration

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: processes of other users")

# A process of nobody that waits for EOF on stdin; 'undumpable' first asks not to be dumpable.
WAITER = r"""
import ctypes, sys
if sys.argv[1:] == ["undumpable"]:
    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)        # PR_SET_DUMPABLE, 0
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def waiter():
    started = []

    def start(*args, setpriv=()):
        cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *setpriv,
               "/usr/bin/python3", "-c", WAITER, *args]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(proc)
        assert proc.stdout.readline() == b"ready\n"
        pidfd = os.pidfd_open(proc.pid)
        return proc, pidfd, open_proc_dir(proc.pid, pidfd)

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def test_a_user_process_is_admitted_as_exactly_that_user(waiter):
    _proc, pidfd, procfd = waiter()
    identity = admit(0, NOBODY, NOBODY, procfd)
    assert (identity.uid, identity.gid, identity.groups) == (NOBODY, NOBODY, ())
    assert dump_owner(procfd) == (NOBODY, NOBODY) and not exited(pidfd)


def test_a_process_that_is_not_the_connector_any_more_is_refused(waiter):
    _proc, _pidfd, procfd = waiter()
    with pytest.raises(Refused) as refused:
        admit(0, 4242, 4242, procfd)        # connected as 4242, now nobody (a set-id exec, say)
    assert refused.value.errno == errno.EPERM


def test_a_user_process_with_capabilities_is_refused(waiter):
    _proc, _pidfd, procfd = waiter(setpriv=["--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search"])
    with pytest.raises(Refused, match="capabilities"):
        admit(0, NOBODY, NOBODY, procfd)


def test_an_undumpable_process_is_refused_and_shows_root_as_owner(waiter):
    _proc, _pidfd, procfd = waiter("undumpable")
    assert dump_owner(procfd) == (0, 0)
    with pytest.raises(Refused, match="dumpable"):
        admit(0, NOBODY, NOBODY, procfd)


def test_a_user_supervisor_serves_only_its_own_uid(waiter):
    _proc, _pidfd, procfd = waiter()
    with pytest.raises(Refused) as refused:
        admit(4242, NOBODY, NOBODY, procfd)
    assert refused.value.errno == errno.EACCES


def test_a_process_gone_before_its_proc_directory_was_opened_is_refused(waiter):
    proc, pidfd, procfd = waiter()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert exited(pidfd)
    with pytest.raises(Refused) as refused:
        open_proc_dir(proc.pid, pidfd)
    assert refused.value.errno == errno.ESRCH
    # The directory opened while it lived stays bound to it: a reaped process shows root.
    assert dump_owner(procfd) == (0, 0)


def creds(uid, gid, groups=(), caps=0):
    return Creds((uid,) * 4, (gid,) * 4, tuple(groups), 0o022, caps, caps)


def test_a_thread_may_not_exceed_its_registration():
    user = Identity(1000, 1000, [1000, 27])
    assert within_registration(creds(1000, 1000, [27]), user)
    assert not within_registration(creds(0, 1000), user)                     # a set-uid exec
    assert not within_registration(Creds((1000, 0, 1000, 0), (1000,) * 4, (), 0, 0, 0), user)
    assert not within_registration(creds(1000, 0), user)                     # a set-gid exec
    assert not within_registration(creds(1000, 1000, [1000, 4]), user)      # a group it did not have
    assert not within_registration(creds(1000, 1000, caps=1 << 1), user)    # a file-capability exec
    root = Identity(0, 0, [])
    assert within_registration(creds(0, 0, caps=(1 << 40) - 1), root)
    assert within_registration(creds(1000, 1000), root)                     # root dropping privileges

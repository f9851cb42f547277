"""Shared fixtures of the DDS tests: node binaries as child processes, a Cyclone participant.

These tests must run inside a private network namespace holding only loopback
(test/dds/run_tests.sh enters one); they refuse to run outside one.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)


def _only_loopback():
    # /proc/net/dev is per network namespace (/sys/class/net is not remounted by unshare).
    with open("/proc/net/dev") as f:
        names = [line.split(":")[0].strip() for line in f.readlines()[2:]]
    return names == ["lo"]


if not _only_loopback():
    pytest.exit("DDS tests must run in a private network namespace (use test/dds/run_tests.sh)", 2)


def binary(name):
    d = os.environ.get("NESTDNN_BIN_DIR", os.path.join(ROOT, "target", "release"))
    p = os.path.join(d, name)
    if not os.path.exists(p):
        pytest.skip(f"{p} not built")
    return p


class Proc:
    """A child process we own; stopped with SIGINT (then SIGKILL) by PID."""

    def __init__(self, args, env=None, log=None):
        self.log_path = log
        self.log = open(log, "w") if log else subprocess.DEVNULL
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(args, env=e, stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=10):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()
        return self.p.returncode

    def text(self):
        return open(self.log_path).read() if self.log_path else ""


@pytest.fixture
def procs(tmp_path):
    started = []

    def start(args, env=None, name="proc"):
        p = Proc(args, env=env, log=str(tmp_path / f"{name}.log"))
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def dp():
    import rosdds
    return rosdds.participant()


def wait_for(pred, timeout, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()

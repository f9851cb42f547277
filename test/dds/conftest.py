"""Shared fixtures of the DDS tests: node binaries as child processes, a Cyclone participant.

These tests must run inside a private network namespace holding only loopback
(test/dds/run_tests.sh enters one); they refuse to run outside one.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
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


# A private profile cache for the session: the nodes profile the models once (the first start,
# within STARTUP_S) and never start from profiles or calibrations another run left in the
# user's cache (a calibration stored by a replay on a loaded machine once changed what the
# planner did in test_budget_and_priority_replan).
_CACHE = tempfile.mkdtemp(prefix="nestdnn-dds-cache-")
os.environ["NESTDNN_CACHE_DIR"] = _CACHE


@pytest.fixture(scope="session", autouse=True)
def _private_cache():
    yield _CACHE
    shutil.rmtree(_CACHE, ignore_errors=True)


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


_MODULE_DOMAINS = []


@pytest.fixture(scope="module", autouse=True)
def ros_domain(request):
    """Each test module on a DDS domain of its own (ROS_DOMAIN_ID, which the nodes it starts
    inherit): pytest keeps a failed test's frame alive for its report, and with it that test's
    latched writers (an operator's budget), which on a shared domain reached the next module's
    nodes and failed its tests too (seen with a failure in test_node: a stray 0.949-core budget
    in both test_play tests). Domains 20 and up; test_monitor's own domain test uses 7."""
    _MODULE_DOMAINS.append(request.module.__name__)
    domain = 19 + len(_MODULE_DOMAINS)
    before = os.environ.get("ROS_DOMAIN_ID")
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    yield domain
    if before is None:
        os.environ.pop("ROS_DOMAIN_ID", None)
    else:
        os.environ["ROS_DOMAIN_ID"] = before


@pytest.fixture(scope="module")
def dp(ros_domain):
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


def models_dir():
    """Folder with fashion_vgg/ and digits_vgg/ models: $NESTDNN_MODELS, the committed
    models/, or a tiny pipeline run made once into target/dds-models (about a minute)."""
    cands = [os.environ.get("NESTDNN_MODELS", ""), os.path.join(ROOT, "models"),
             os.path.join(ROOT, "target", "dds-models")]
    for c in cands:
        if c and all(os.path.exists(os.path.join(c, a, "manifest.yaml")) for a in ("fashion_vgg", "digits_vgg")):
            return c
    out = os.path.join(ROOT, "target", "dds-models")
    subprocess.run([os.path.join(ROOT, "models", "regenerate"), "--tiny", "--apps", "fashion_vgg,digits_vgg",
                    "--out", out], check=True)
    return out


NODE_PARAMS = """\
nestdnn_node:
  ros__parameters:
    tasks: [fashion_vgg, digits_vgg]
    models_dir: {models}
    default_budget: {{cpu_cores: {cores}, memory_mb: 512.0}}
    scheduler: {{min_dwell_s: 0.2, idle_timeout_s: 3.0, hysteresis_margin: 0.0, alpha: 1.0, share_step: 0.005}}
    fashion_vgg: {{image_topic: camera_a/image_raw, target_fps: {fps}}}
    digits_vgg: {{image_topic: camera_b/image_raw, target_fps: {fps}}}
"""


@pytest.fixture(scope="session")
def models():
    return models_dir()


def write_params(path, models, cores=2.0, fps=1000.0):
    """The node's params file. The tiny test models take ~0.1 ms a frame, so the target rate
    is high (1000 fps) to make CPU budgets of a fraction of a core matter to the planner."""
    path.write_text(NODE_PARAMS.format(models=models, cores=cores, fps=fps))
    return str(path)

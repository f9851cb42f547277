import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(MODELS))

APPS = ["fashion_vgg", "fashion_resnet", "digits_vgg", "digits_resnet"]
TINY_APPS = ["digits_vgg", "fashion_resnet"]   # both datasets, both architectures


def run_pipeline(*args, env=None, timeout=600):
    """Runs `python -m pipeline ARGS` like models/regenerate does; returns CompletedProcess."""
    e = dict(os.environ)
    e["PYTHONPATH"] = str(MODELS)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=MODELS, env=e,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_out(tmp_path_factory):
    """The tiny configuration, end to end, once per session."""
    out = tmp_path_factory.mktemp("tiny")
    r = run_pipeline("--tiny", "--out", str(out), "--apps", ",".join(TINY_APPS))
    assert r.returncode == 0, f"tiny pipeline failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return out


@pytest.fixture
def tiny_copy(tiny_out, tmp_path):
    """A private copy of the tiny output that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(tiny_out, dst)
    return dst

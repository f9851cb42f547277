"""Acceptance checks on the committed models (models/<task>/)."""
import numpy as np
import onnx
import pytest
import yaml
from safetensors.numpy import load_file

from conftest import APPS, MODELS
from pipeline.export import bn_stat_names, sha256_file, slice_onnx, verify_folder

FLOORS = {"fashion": 0.91, "digits": 0.98}


def _dir(task):
    d = MODELS / task
    if not (d / "manifest.yaml").exists():
        pytest.fail(f"{d} has no manifest.yaml: regenerate the models with models/regenerate")
    return d


def _man(task):
    return yaml.safe_load((_dir(task) / "manifest.yaml").read_text())


@pytest.mark.parametrize("task", APPS)
def test_manifest_contract(task):
    m = _man(task)
    assert m["format_version"] == 1 and m["task"] == task
    assert len(m["labels"]) == m["output"]["classes"] == 10
    assert {"accuracy", "macs"} <= set(m["vanilla"])
    assert m["input"]["layout"] == "NCHW" and m["input"]["channels"] == 1
    assert m["onnx"]["opset"] == 17
    names = [l["name"] for l in m["layers"]]
    for d in m["descendants"]:
        assert {"name", "macs", "params", "accuracy", "channels", "bn_stats_prefix"} <= set(d)
        assert list(d["channels"]) == names
        assert 0.0 <= d["accuracy"] <= 1.0
    # tie groups have one width in every descendant
    ties = {}
    for l in m["layers"]:
        if l["tie"]:
            ties.setdefault(l["tie"], []).append(l["name"])
    for d in m["descendants"]:
        for group in ties.values():
            assert len({d["channels"][n] for n in group}) == 1, (d["name"], group)
    largest = m["descendants"][-1]
    assert largest["channels"] == {l["name"]: l["out_channels"] for l in m["layers"]}


@pytest.mark.parametrize("task", APPS)
def test_ladder_acceptance(task):
    m = _man(task)
    ds = m["descendants"]
    assert len(ds) >= 5
    macs = [d["macs"] for d in ds]
    acc = [d["accuracy"] for d in ds]
    assert macs == sorted(macs) and len(set(macs)) == len(macs), "smallest first"
    assert all(a <= b for a, b in zip(acc, acc[1:])), f"accuracy not non-decreasing: {acc}"
    assert macs[0] <= 0.25 * macs[-1], "seed above 25% of the largest's MACs"
    assert acc[-1] >= m["vanilla"]["accuracy"] - 0.005, "largest more than 0.5 pt below vanilla"
    assert acc[-1] >= FLOORS[task.split("_")[0]]
    assert m["vanilla"]["macs"] == macs[-1]
    if task.startswith("digits"):
        assert all(d["cross_domain_accuracy"] is not None for d in ds)


@pytest.mark.parametrize("task", APPS)
def test_files_hashes_and_fixtures(task):
    """Hashes match the manifest, and slicing model.onnx per descendant (with that descendant's
    BN statistics) reproduces the fixtures of standalone PyTorch networks (onnxruntime)."""
    r = verify_folder(_dir(task))
    assert r["max_err"] < 1e-4


@pytest.mark.parametrize("task", APPS)
def test_nesting(task):
    """Each descendant's weights are an exact sub-block of the next one's (BN running
    statistics excepted: one set per descendant, each of the descendant's width)."""
    d = _dir(task)
    m = _man(task)
    model = onnx.load(str(d / "model.onnx"))
    assert len(model.graph.value_info) == 0
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == len(m["layers"])
    bn = load_file(str(d / "bn_stats.safetensors"))
    stats_names = {n for pair in bn_stat_names(model) for n in pair}
    prev = None
    for desc in m["descendants"]:
        sliced = {i.name: onnx.numpy_helper.to_array(i)
                  for i in slice_onnx(model, desc["channels"]).graph.initializer}
        for name in stats_names:
            arr = bn[desc["bn_stats_prefix"] + name]
            assert arr.dtype == np.float32 and arr.shape == sliced[name].shape
        if prev is not None:
            for k, small in prev.items():
                if k in stats_names:
                    continue
                big = sliced[k]
                block = big[tuple(slice(0, s) for s in small.shape)]
                assert small.shape == block.shape and np.array_equal(small, block), (desc["name"], k)
            for l in m["layers"]:
                assert prev_ch[l["name"]] <= desc["channels"][l["name"]]
        prev, prev_ch = sliced, desc["channels"]


def test_committed_size():
    total = sum(f.stat().st_size for t in APPS for f in (MODELS / t).glob("*") if f.is_file())
    assert total < 30e6, f"committed model artifacts are {total / 1e6:.1f} MB"


@pytest.mark.parametrize("task", APPS)
def test_fixture_layout(task):
    d = _dir(task)
    m = _man(task)
    fx = load_file(str(d / "fixtures.safetensors"))
    n = fx["input"].shape[0]
    assert fx["input"].shape == (n, 1, 28, 28) and fx["input"].dtype == np.float32
    assert fx["input_u8"].shape == (n, 28, 28) and fx["input_u8"].dtype == np.uint8
    assert fx["label"].dtype == np.int64
    norm = (fx["input_u8"] * m["input"]["scale"] - m["input"]["mean"][0]) / m["input"]["std"][0]
    assert np.abs(norm - fx["input"][:, 0]).max() < 1e-5
    for desc in m["descendants"]:
        assert fx[f"{desc['name']}/logits"].shape == (n, 10)
    assert fx["vanilla/logits"].shape == (n, 10)
    assert sha256_file(d / "fixtures.safetensors") == m["fixtures"]["sha256"]

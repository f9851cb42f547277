"""The tiny configuration end to end (same code path as the full run), freeze exactness, and
the export shapes."""
import numpy as np
import onnx
import torch
import yaml
from safetensors.numpy import load_file

from conftest import TINY_APPS
from pipeline.arch import Net, make_arch, prefix_masks, prefix_state, shared_keys
from pipeline.export import verify_folder
from pipeline.train import train


def test_tiny_end_to_end(tiny_out):
    for task in TINY_APPS:
        d = tiny_out / task
        r = verify_folder(d)
        m = r["manifest"]
        assert len(m["descendants"]) >= 5
        model = onnx.load(str(d / "model.onnx"))
        inp, out = model.graph.input[0], model.graph.output[0]
        assert inp.name == "input" and out.name == "logits"
        dims = [x.dim_value or x.dim_param for x in inp.type.tensor_type.shape.dim]
        assert dims[1:] == [1, 28, 28]
        assert [x.dim_value or x.dim_param for x in out.type.tensor_type.shape.dim][1] == 10
        assert len(model.graph.value_info) == 0
        ops = {n.op_type for n in model.graph.node}
        assert ops <= {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add",
                       "GlobalAveragePool", "Flatten", "Gemm"}
        bn = load_file(str(d / "bn_stats.safetensors"))
        for desc in m["descendants"]:
            keys = [k for k in bn if k.startswith(desc["bn_stats_prefix"])]
            assert len(keys) == 2 * len(m["layers"])
        log = (tiny_out / ".work" / f"{task}.log").read_text()
        grown = len(m["descendants"]) - 1
        assert log.count("bit-for-bit frozen (checked)") >= grown
        assert (tiny_out / "regenerate.log").exists()
    assert not list(tiny_out.glob(".tmp-*"))


def test_tiny_is_deterministic(tiny_out, tmp_path):
    """A second run of one app gives byte-identical files."""
    from conftest import run_pipeline
    r = run_pipeline("--tiny", "--out", str(tmp_path), "--apps", "digits_vgg", "--jobs", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    a = yaml.safe_load((tiny_out / "digits_vgg" / "manifest.yaml").read_text())
    b = yaml.safe_load((tmp_path / "digits_vgg" / "manifest.yaml").read_text())
    assert a["onnx"]["sha256"] == b["onnx"]["sha256"]
    assert a["descendants"] == b["descendants"]


def test_masked_training_freezes_bits():
    """Freeze-&-grow's training step: with the prefix masks, every inherited entry keeps its
    exact bits (Adam + L2 through the masks), and added entries do move."""
    arch = make_arch("resnet", (10, 12, 16))
    small = {u: max(2, w // 2) for u, w in arch.base.items()}
    torch.manual_seed(0)
    net = Net(arch, arch.base)
    before = {k: v.clone() for k, v in net.state_dict().items()}

    class DS:
        x_train = np.random.default_rng(0).integers(0, 255, (256, 28, 28), dtype=np.uint8)
        y_train = np.random.default_rng(1).integers(0, 10, 256)
        mean, std = 0.1, 0.3
    train(net, DS, epochs=2, lr=1e-2, seed=0, batch=64, masks=prefix_masks(arch, arch.base, small))
    after = net.state_dict()
    pb, pa = prefix_state(arch, before, small), prefix_state(arch, after, small)
    moved = 0
    for k in shared_keys(arch):
        assert torch.equal(pb[k].view(torch.int32), pa[k].view(torch.int32)), k
        moved += int((before[k] != after[k]).any())
    assert moved == len(shared_keys(arch)) - 1   # everything but fc.bias (fully inherited)

"""Export in the format of docs/model-format.md, and its verification.

`slice_onnx` is a reference implementation of what the runtime does (prefix slicing of the
single ONNX file driven only by the manifest's channel table, plus swapping in a descendant's
BN statistics); exports are checked with onnxruntime through it before anything is written.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
import yaml
from onnx import numpy_helper
from safetensors.numpy import load_file as st_load, save_file as st_save

from .errors import PipelineError

OPSET = 17
PASSTHROUGH_OPS = {"Relu", "MaxPool", "GlobalAveragePool", "ReduceMean", "Identity", "Clip",
                   "Dropout", "AveragePool", "LeakyRelu", "Sigmoid"}


def sha256_bytes(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def sha256_file(p) -> str:
    return sha256_bytes(Path(p).read_bytes())


def export_onnx(net, expect_keys, input_shape=None, n_convs=None) -> bytes:
    """Largest/vanilla network -> ONNX bytes: opset 17, BN kept as nodes (TrainingMode.PRESERVE
    on an eval-mode module = inference-mode BatchNormalization), initializers named exactly as
    the PyTorch state dict, no value_info, weights inside."""
    net.eval()
    buf = io.BytesIO()
    shape = input_shape or (net.arch.in_channels, 28, 28)
    dummy = torch.zeros(1, *shape)
    torch.onnx.export(net, (dummy,), buf, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}},
                      opset_version=OPSET, training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False, dynamo=False)
    m = onnx.load_from_string(buf.getvalue())
    del m.graph.value_info[:]
    # The TorchScript exporter de-duplicates initializers with equal values (e.g. two BN biases)
    # and re-creates the second name with an Identity node. Undo that: every weight must be its
    # own initializer under its state-dict name, so it can be sliced independently.
    inits = {i.name: i for i in m.graph.initializer}
    nodes = []
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits and n.output[0] in expect_keys:
            t = onnx.TensorProto()
            t.CopyFrom(inits[n.input[0]])
            t.name = n.output[0]
            m.graph.initializer.append(t)
            inits[t.name] = t
        else:
            nodes.append(n)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    names = {i.name for i in m.graph.initializer}
    missing = [k for k in expect_keys if k not in names]
    if missing:
        raise PipelineError(f"ONNX export renamed initializers (missing {missing[:3]}): the "
                            f"exporter changed; pin torch or adapt pipeline/export.py")
    ops = [n.op_type for n in m.graph.node]
    n_conv, n_bn = ops.count("Conv"), ops.count("BatchNormalization")
    want = len(net.arch.convs) if n_convs is None else n_convs
    if n_conv != want or n_bn != n_conv:
        raise PipelineError(f"ONNX export has {n_conv} Conv / {n_bn} BatchNormalization nodes, "
                            f"expected {want} of each (BN must not be folded)")
    for n in m.graph.node:
        if n.op_type == "BatchNormalization":
            for a in n.attribute:
                if a.name == "training_mode" and a.i != 0:
                    raise PipelineError("ONNX export kept BN in training mode")
    onnx.checker.check_model(m)
    return m.SerializeToString()


def graph_layers(model: onnx.ModelProto):
    """Conv weight initializer names in graph order."""
    return [n.input[1] for n in model.graph.node if n.op_type == "Conv"]


def bn_stat_names(model: onnx.ModelProto):
    """[(running-mean initializer, running-var initializer)] of every BN node, graph order."""
    return [(n.input[3], n.input[4]) for n in model.graph.node
            if n.op_type == "BatchNormalization"]


def slice_onnx(model: onnx.ModelProto, channels: dict, bn: dict | None = None) -> onnx.ModelProto:
    """Prefix-slice the largest descendant to `channels` ({conv weight name: out channels}):
    Conv weight [:out, :in] (bias [:out]); a depthwise Conv (group = channels) keeps its
    input's width ([:c], group = c); BN vectors [:c]; Gemm B[:, :c*s] (transB=1) where s is
    the spatial size flattened into it (1 after global pooling); widths propagate through
    activations, pooling, Dropout and Flatten; both inputs of an Add must agree.
    `bn` ({initializer name: array}) replaces BN running statistics."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    arrays = {}

    def arr(name):
        if name not in arrays:
            arrays[name] = numpy_helper.to_array(inits[name])
        return arrays[name]

    width = {g.input[0].name: int(g.input[0].type.tensor_type.shape.dim[1].dim_value)}
    full = dict(width)      # full channel count of every channel-tracked tensor
    for n in g.node:
        op = n.op_type
        if op == "Conv":
            w = arr(n.input[1])
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            cin, cout = width[n.input[0]], int(channels[n.input[1]])
            if group != 1:
                if not (group == w.shape[0] == full[n.input[0]] and w.shape[1] == 1):
                    raise PipelineError(f"Conv {n.name}: grouped convolution (group {group}) "
                                        f"is not depthwise")
                if cout != cin:
                    raise PipelineError(f"depthwise Conv {n.name}: {cout} channels but its "
                                        f"input has {cin}")
                for a in n.attribute:
                    if a.name == "group":
                        a.i = cin
                arrays[n.input[1]] = w[:cout]
            else:
                arrays[n.input[1]] = w[:cout, :cin]
            full[n.output[0]] = w.shape[0]
            if len(n.input) > 2 and n.input[2]:
                arrays[n.input[2]] = arr(n.input[2])[:cout]
            width[n.output[0]] = cout
        elif op == "BatchNormalization":
            c = width[n.input[0]]
            for k, name in enumerate(n.input[1:5]):
                if bn is not None and k >= 2:
                    v = np.asarray(bn[name], dtype=np.float32)
                    if v.shape != (c,):
                        raise PipelineError(f"BN statistics {name}: shape {v.shape}, need ({c},)")
                    arrays[name] = v
                else:
                    arrays[name] = arr(name)[:c]
            width[n.output[0]] = c
            full[n.output[0]] = full[n.input[0]]
        elif op == "Add":
            a, b = width[n.input[0]], width[n.input[1]]
            if a != b:
                raise PipelineError(f"Add {n.name}: widths {a} != {b} (residual tie rule broken)")
            width[n.output[0]] = a
            full[n.output[0]] = full[n.input[0]]
        elif op == "Gemm":
            attrs = {a.name: a.i for a in n.attribute}
            if attrs.get("transB", 0) != 1:
                raise PipelineError("Gemm without transB=1 is not supported")
            w = arr(n.input[1])
            if n.input[0] in full:
                s = w.shape[1] // full[n.input[0]]   # spatial size flattened into the Gemm
                arrays[n.input[1]] = w[:, :width[n.input[0]] * s]
            width[n.output[0]] = w.shape[0]
        elif op == "Flatten":
            if n.input[0] in full:
                f = full[n.input[0]]
                width[n.output[0]] = width[n.input[0]]
                full[n.output[0]] = f
        elif op == "Constant":
            pass
        elif op in PASSTHROUGH_OPS:
            if n.input[0] in width:
                width[n.output[0]] = width[n.input[0]]
            if n.input[0] in full:
                full[n.output[0]] = full[n.input[0]]
        else:
            raise PipelineError(f"unsupported op {op} in the graph")
    for name, a in arrays.items():
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(a), name))
    return m


def ort_run(model, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort
    data = model if isinstance(model, bytes) else model.SerializeToString()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return sess.run(["logits"], {"input": x.astype(np.float32)})[0]


def load_manifest(d: Path) -> dict:
    p = Path(d) / "manifest.yaml"
    if not p.exists():
        raise PipelineError(f"{p} is missing: {d} is not a complete model folder; regenerate it "
                            f"with models/regenerate")
    try:
        man = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise PipelineError(f"{p} is not valid YAML ({e}); regenerate with models/regenerate")
    for k in ("task", "labels", "vanilla", "descendants", "onnx", "bn_stats", "fixtures"):
        if not isinstance(man, dict) or k not in man:
            raise PipelineError(f"{p} lacks key {k!r}; regenerate with models/regenerate")
    return man


def verify_folder(d, atol: float = 1e-4) -> dict:
    """Check a model folder against its manifest: hashes, the ONNX graph, BN statistics, and
    that slicing model.onnx per descendant (+ its BN statistics) reproduces every fixture with
    onnxruntime. Raises PipelineError naming the broken file."""
    d = Path(d)
    man = load_manifest(d)
    for entry in (man["onnx"], man["vanilla"], man["bn_stats"], man["fixtures"]):
        f = d / entry["file"]
        if not f.exists():
            raise PipelineError(f"{f} is missing; regenerate with models/regenerate")
        got = sha256_file(f)
        if got != entry["sha256"]:
            raise PipelineError(f"{f} is corrupt or stale: sha256 {got[:12]}.. does not match "
                                f"the manifest ({entry['sha256'][:12]}..); regenerate with "
                                f"models/regenerate")
    try:
        model = onnx.load(str(d / man["onnx"]["file"]))
        vanilla = onnx.load(str(d / man["vanilla"]["file"]))
        bn = st_load(str(d / man["bn_stats"]["file"]))
        fx = st_load(str(d / man["fixtures"]["file"]))
    except Exception as e:
        raise PipelineError(f"cannot read the files of {d} ({e}); regenerate with "
                            f"models/regenerate")
    if len(model.graph.value_info):
        raise PipelineError(f"{d / 'model.onnx'} carries value_info")
    layers = [l["name"] for l in man["layers"]]
    if layers != graph_layers(model):
        raise PipelineError(f"{d}/manifest.yaml layers do not match the Conv nodes of model.onnx")
    x = fx["input"]
    worst = 0.0
    for desc in man["descendants"]:
        pre = desc["bn_stats_prefix"]
        stats = {}
        for mean, var in bn_stat_names(model):
            for nm in (mean, var):
                key = pre + nm
                if key not in bn:
                    raise PipelineError(f"{d}/bn_stats.safetensors lacks {key}")
                stats[nm] = bn[key]
        out = ort_run(slice_onnx(model, desc["channels"], stats), x)
        ref = fx[f"{desc['name']}/logits"]
        err = float(np.abs(out - ref).max())
        worst = max(worst, err)
        if err > atol:
            raise PipelineError(f"{d}: descendant {desc['name']} sliced from model.onnx differs "
                                f"from its fixture by {err:.2e}; regenerate with "
                                f"models/regenerate")
    err = float(np.abs(ort_run(vanilla, x) - fx["vanilla/logits"]).max())
    if err > atol:
        raise PipelineError(f"{d}: vanilla.onnx differs from vanilla/logits by {err:.2e}")
    # Optional standalone smaller models (the benchmark's status quo levels).
    for k, sq in enumerate(man.get("status_quo") or [], start=1):
        f = d / sq["file"]
        if not f.exists() or sha256_file(f) != sq["sha256"]:
            raise PipelineError(f"{f} is missing or does not match its sha256 in the manifest")
        key = f"status_quo{k}/logits"
        if key in fx:
            e = float(np.abs(ort_run(onnx.load(str(f)), x) - fx[key]).max())
            if e > atol:
                raise PipelineError(f"{f} differs from {key} by {e:.2e}")
            err = max(err, e)
    return dict(manifest=man, max_err=max(worst, err))


def install_folder(tmp: Path, dest: Path):
    """Moves the finished folder `tmp` to `dest` (a sibling), replacing an existing `dest`
    only after the new one is complete: readers see the old or the new folder, never half."""
    old = dest.parent / f".old-{dest.name}-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)
    shutil.rmtree(old, ignore_errors=True)


def save_safetensors(path: Path, tensors: dict):
    st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path))
    os.chmod(path, 0o644)

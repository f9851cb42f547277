"""The architectures the forge builds: torchvision's definitions (VGG with BN, ResNet basic and
bottleneck, MobileNetV2), or the user's own module (`my_pkg.my_module:MyNet`)."""
from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import torch
import torch.nn as nn

from .errors import PipelineError

FAMILIES = ("vgg11", "vgg16", "resnet18", "resnet50", "mobilenet_v2")


def _first_conv(net: nn.Module):
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    return None, None


def _set_in_channels(net: nn.Module, channels: int):
    """Gray input: the first Conv takes `channels` instead of 3 (fresh weights)."""
    name, m = _first_conv(net)
    if m is None or m.in_channels == channels:
        return
    new = nn.Conv2d(channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation,
                    m.groups, m.bias is not None)
    parent = net.get_submodule(name.rpartition(".")[0]) if "." in name else net
    setattr(parent, name.rpartition(".")[2], new)


def _vgg(name: str, classes: int, size: int, hidden: int):
    from torchvision.models import vgg
    cfg = {"vgg11": "A", "vgg16": "D"}[name]
    net = vgg.VGG(vgg.make_layers(vgg.cfgs[cfg], batch_norm=True), num_classes=classes)
    feat = size // 32
    if feat < 1:
        raise PipelineError(f"--arch {name} needs --input-size >= 32 (5 stride-2 poolings)")
    if size == 224 and hidden == 4096:
        return net   # torchvision's exact definition: its trained weights load
    # At other sizes the 7x7 adaptive pool is not an exportable pooling: the classifier reads
    # the feature map as it is (Flatten of C x feat x feat), or a 7x7 pool when it divides.
    if feat % 7 == 0:
        net.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        feat = 7
    else:
        net.avgpool = nn.Identity()
    net.classifier = nn.Sequential(
        nn.Linear(512 * feat * feat, hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(hidden, classes))
    for m in net.classifier.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return net


def build(arch: str, classes: int, channels: int, size: int, width: float = 1.0) -> nn.Module:
    """The full-width network (the forge applies `width` itself by slicing; for VGG the
    classifier's hidden layers are built at round(4096 * width))."""
    if arch in ("vgg11", "vgg16"):
        net = _vgg(arch, classes, size, max(16, int(round(4096 * width))))
    elif arch in ("resnet18", "resnet50", "mobilenet_v2"):
        import torchvision.models as tvm
        net = getattr(tvm, arch)(num_classes=classes)
    elif ":" in arch:
        net = _user_module(arch, classes)
    else:
        raise PipelineError(f"unknown --arch {arch!r}: use one of {', '.join(FAMILIES)} or your "
                            f"own module as package.module:ClassName")
    _set_in_channels(net, channels)
    return net.eval()


def _user_module(spec: str, classes: int) -> nn.Module:
    mod_name, _, cls_name = spec.partition(":")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise PipelineError(f"--arch {spec}: cannot import module {mod_name!r} ({type(e).__name__}:"
                            f" {e}); run from the folder that holds it or set PYTHONPATH")
    cls = getattr(mod, cls_name, None)
    if cls is None or not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise PipelineError(f"--arch {spec}: {mod_name} has no torch.nn.Module class "
                            f"{cls_name!r}")
    try:
        params = inspect.signature(cls).parameters
        net = cls(num_classes=classes) if "num_classes" in params else cls()
    except Exception as e:
        raise PipelineError(f"--arch {spec}: constructing {cls_name} failed ({type(e).__name__}:"
                            f" {e})")
    return net


def load_weights(net: nn.Module, path: Path, arch: str):
    """Loads the user's trained weights (a state dict, or a checkpoint dict holding one under
    'state_dict' or 'model'); every key and shape must match the architecture."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"--weights {path} is not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PipelineError(f"--weights {path} is not a PyTorch weights file ({type(e).__name__}:"
                            f" {e})")
    if isinstance(obj, dict):
        for k in ("state_dict", "model"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PipelineError(f"--weights {path} holds no state dict of tensors")
    obj = {k.removeprefix("module."): v for k, v in obj.items()}
    own = net.state_dict()
    missing = [k for k in own if k not in obj]
    extra = [k for k in obj if k not in own]
    shapes = [f"{k}: file {list(obj[k].shape)} vs model {list(own[k].shape)}"
              for k in own if k in obj and obj[k].shape != own[k].shape]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s) (e.g. {', '.join(missing[:3])})")
        if extra:
            parts.append(f"{len(extra)} unexpected key(s) (e.g. {', '.join(extra[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es) ({'; '.join(shapes[:3])})")
        raise PipelineError(f"--weights {path} do not match --arch {arch} at this --input-size, "
                            f"class count and channels: {'; '.join(parts)}")
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in obj.items()})

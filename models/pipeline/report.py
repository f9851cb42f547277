"""Markdown tables (ladder, ablation) from the committed manifests, for models/README.md:

    python -m pipeline.report [MODELS_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

from .config import APPS


def _pct(x):
    return "–" if x is None else f"{100 * x:.2f}"


def tables(root: Path) -> str:
    out = []
    for task in APPS:
        p = root / task / "manifest.yaml"
        if not p.exists():
            out.append(f"\n_{task}: not generated_\n")
            continue
        m = yaml.safe_load(p.read_text())
        ds = m["descendants"]
        big = ds[-1]["macs"]
        v = m["vanilla"]
        out.append(f"\n### {task}\n")
        out.append("| descendant | roadmap step | MMAC | % of largest | params | top-1 % | "
                   "cross-domain % |")
        out.append("|---|---|---|---|---|---|---|")
        for d in ds:
            out.append(f"| {d['name']}{' (seed)' if d is ds[0] else ''} | {d['roadmap_step']} | "
                       f"{d['macs'] / 1e6:.2f} | {100 * d['macs'] / big:.0f} | {d['params']:,} | "
                       f"{_pct(d['accuracy'])} | {_pct(d['cross_domain_accuracy'])} |")
        out.append(f"| vanilla | – | {v['macs'] / 1e6:.2f} | 100 | {v['params']:,} | "
                   f"{_pct(v['accuracy'])} | {_pct(v['cross_domain_accuracy'])} |")
    out.append("\n### Ablation (top-1 % on the held-out test split, same widths)\n")
    out.append("| app | descendant | MMAC | TRR + freeze-&-grow (nested) | L1 prune + fine-tune "
               "(separate) | from scratch (separate) | best |")
    out.append("|---|---|---|---|---|---|---|")
    for task in APPS:
        p = root / task / "manifest.yaml"
        if not p.exists():
            continue
        m = yaml.safe_load(p.read_text())
        for r in m["ablation"]:
            if r.get("note"):   # largest: both baselines are the vanilla model
                vals = {"nested": r["nestdnn"], "vanilla": r["l1_finetune"]}
            else:
                vals = {"nested": r["nestdnn"], "L1+FT": r["l1_finetune"], "scratch": r["scratch"]}
            top = max(v for v in vals.values() if v is not None)
            best = " = ".join(k for k, v in vals.items() if v == top)
            note = " (vanilla)" if r.get("note") else ""
            out.append(f"| {task} | {r['name']} | {r['macs'] / 1e6:.2f} | {_pct(r['nestdnn'])} | "
                       f"{_pct(r['l1_finetune'])}{note} | {_pct(r['scratch'])}{note} | {best} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent
    print(tables(root))

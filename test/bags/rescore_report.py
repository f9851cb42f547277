#!/usr/bin/env python3
"""Re-scores a `nestdnn bench multitenant` report's served-model accuracy axis with each
model's accuracy on *many* scenes instead of the benchmark's 600 per app: would a
representative frame sample have changed the comparison?

Every processed frame of the report is counted under the model that served it
(`runs[].systems[].apps[].served`). The report scores it with that model's top-1 on the
benchmark's own 600 frames (`offline[]`); here it is scored with:
* heavy apps: the top-1 through the recording's camera pooled over the seeds other than the
  benchmark's (test/bags/scene_seeds.py: 5,600 scenes by default);
* light apps: the manifests' top-1 on the whole held-out test split (10,000 images).
The per-app mean is then formed as the report does (apps pooled over the runs, then averaged).
With `--check` it first re-scores with the report's own accuracies and requires every system's
`model_accuracy` back to 1e-9 (the counting is the report's).

    .venv/bin/python test/bags/rescore_report.py bench/results/multitenant.json \\
        [--scenes objects_vgg=objects.json --scenes items_far_vgg=items_far.json] [--check]

`--scenes APP=FILE` reuses a saved `scene_seeds.py APP --json`; a heavy app without one is
measured here (about 1.5 minutes each on 2 cores). Prints one row per system: frames/s and
per-app mean top-1 on both accuracies. Analysis after the fact, never a headline.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def level_of(label: str):
    """The status-quo level of a system label ("status_quo vanilla" = 0, "status_quo L2" = 2);
    None for a NestDNN system."""
    if not label.startswith("status_quo"):
        return None
    lvl = label.split()[1]
    return 0 if lvl == "vanilla" else int(lvl.lstrip("L"))


def bench_accuracies(report: dict) -> dict:
    """app -> (descendant accuracies, status-quo model accuracies) as the report scored them."""
    return {o["app"]: ([float(a) for a in o["accuracy"]],
                       [float(s["accuracy"]) for s in o["status_quo"]])
            for o in report["offline"]}


def population_accuracies(report: dict, scenes: dict) -> dict:
    """As bench_accuracies, from many scenes: `scenes` maps a heavy app to its scene_seeds.py
    result; the other apps use their manifests."""
    out = {}
    for o in report["offline"]:
        app = o["app"]
        if app in scenes:
            p = scenes[app]["pooled_other_seeds"]
            desc = [p[f"d{i}"]["camera"] for i in range(len(o["accuracy"]))]
            sq = [p["vanilla"]["camera"]] + [p[f"status_quo_{k}"]["camera"]
                                             for k in range(1, len(o["status_quo"]))]
        else:
            man = yaml.safe_load((ROOT / "models" / app / "manifest.yaml").read_text())
            desc = [float(d["accuracy"]) for d in man["descendants"]]
            sq = [float(man["vanilla"]["accuracy"])] + [float(s["accuracy"]) for s in
                                                        (man.get("status_quo") or [])]
            sq = sq[:len(o["status_quo"])]
        out[app] = (desc, sq)
    return out


def rescore(report: dict, acc: dict) -> dict:
    """label -> per-app mean top-1 of the served models under `acc`."""
    sums = defaultdict(lambda: [0.0, 0])
    for run in report["runs"]:
        for s in run["systems"]:
            level = level_of(s["label"])
            for a in s["apps"]:
                if not a["processed"]:
                    continue
                desc, sq = acc[a["app"]]
                cell = sums[(s["label"], a["app"])]
                if level is None:
                    for i, n in enumerate(a["served"]):
                        cell[0] += n * desc[i]
                        cell[1] += n
                else:
                    n = sum(a["served"])
                    cell[0] += n * sq[min(level, len(sq) - 1)]
                    cell[1] += n
    out = {}
    for s in report["systems"]:
        per_app = [c / n for (label, _), (c, n) in sums.items() if label == s["label"] and n]
        out[s["label"]] = sum(per_app) / len(per_app) if per_app else float("nan")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--scenes", action="append", default=[], metavar="APP=FILE",
                    help="a saved `scene_seeds.py APP --json` result")
    ap.add_argument("--check", action="store_true",
                    help="first require the report's own model_accuracy back")
    a = ap.parse_args(argv)
    try:
        report = json.loads(a.report.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"error: cannot read the report {a.report}: {e}")
    for key in ("runs", "systems", "offline"):
        if key not in report:
            raise SystemExit(f"error: {a.report} has no {key!r}: not a `nestdnn bench "
                             f"multitenant` report with the served-model axis")
    bench = rescore(report, bench_accuracies(report))
    if a.check:
        for s in report["systems"]:
            if abs(bench[s["label"]] - s["model_accuracy"]) > 1e-9:
                raise SystemExit(f"error: {s['label']}: re-scored {bench[s['label']]:.6f} "
                                 f"against the report's {s['model_accuracy']:.6f}")
    scenes = {}
    for spec in a.scenes:
        app, _, file = spec.partition("=")
        if not file:
            raise SystemExit(f"error: --scenes {spec!r}: expected APP=FILE")
        try:
            scenes[app] = json.loads(Path(file).read_text())
            scenes[app]["pooled_other_seeds"]["vanilla"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise SystemExit(f"error: --scenes {spec}: not a readable `scene_seeds.py {app} "
                             f"--json` result ({e}); write one with that command")
    heavy = [o["app"] for o in report["offline"]
             if (ROOT / "models" / o["app"] / "accuracy.yaml").exists()]
    for app in heavy:
        if app not in scenes:
            sys.path.insert(0, str(HERE))
            import scene_seeds
            print(f"measuring {app} on {scene_seeds.DEFAULT_SEEDS} ...", file=sys.stderr)
            scenes[app] = scene_seeds.run(app, scene_seeds.parse_seeds(scene_seeds.DEFAULT_SEEDS))
    pop = rescore(report, population_accuracies(report, scenes))
    print(f"{'system':28s} {'frames/s':>8s} {'bench frames':>12s} {'many scenes':>11s}")
    for s in report["systems"]:
        print(f"{s['label']:28s} {s['fps']:8.2f} {100 * bench[s['label']]:11.2f}% "
              f"{100 * pop[s['label']]:10.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

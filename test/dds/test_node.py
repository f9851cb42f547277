"""nestdnn_node over DDS against Cyclone DDS peers: a camera driver (two cameras, best effort,
30 Hz) and an operator (budgets, priorities)."""
import os
import time

import pytest

import rosdds as r
from conftest import binary, write_params
from peers import Camera, Collector, Fixtures, budget, priority

STARTUP_S = 120  # first start profiles the models (cached afterwards)


@pytest.fixture
def node(procs, models, tmp_path, dp):
    """Starts the node; returns (proc, plans collector)."""
    params = write_params(tmp_path / "params.yaml", models)
    proc = procs([binary("nestdnn_node"), "--ros-args", "--params-file", params], name="node")
    plans = Collector(dp, "/nestdnn/plan", r.Plan, r.LATCHED_READER)
    assert plans.wait(lambda p: p, STARTUP_S), "no plan: " + proc.text()
    return proc, plans


@pytest.fixture
def cameras(dp, models):
    fa, fb = Fixtures(f"{models}/fashion_vgg"), Fixtures(f"{models}/digits_vgg")
    ca = Camera(dp, "/camera_a/image_raw", fa)
    cb = Camera(dp, "/camera_b/image_raw", fb)
    ca.start()
    cb.start()
    yield {"fashion_vgg": (ca, fa), "digits_vgg": (cb, fb)}
    ca.stop()
    cb.stop()


def running(plan):
    return {t.task: t for t in plan.tasks if not t.paused}


def settle(plans, pred, timeout=15):
    """Waits until the latest plan satisfies `pred` (plans may come in a burst)."""
    ok = plans.wait(lambda ps: ps and pred(ps[-1]), timeout)
    return plans.items[-1] if ok else None


def test_results_come_back_correct(node, cameras, dp):
    proc, plans = node
    results = {t: Collector(dp, f"/nestdnn/{t}/result", r.InferenceResult, r.RELIABLE_READER) for t in cameras}
    classes = {t: Collector(dp, f"/nestdnn/{t}/classification", r.Classification, r.RELIABLE_READER)
               for t in cameras}
    labels = {t: Collector(dp, f"/nestdnn/{t}/label_info", r.LabelInfo, r.LATCHED_READER) for t in cameras}
    diags = Collector(dp, "/diagnostics", r.DiagnosticArray, r.RELIABLE_READER)
    for t in cameras:
        assert results[t].wait(lambda xs: len(xs) >= 60, 30), f"{t}: {len(results[t].items)} results\n" + proc.text()
    for t, (cam, fx) in cameras.items():
        names = [c.class_name for c in labels[t].poll()[-1].class_map]
        assert len(names) == fx.logits["d0"].shape[1]
        wrong = []
        for res in results[t].items:
            index = int(res.header.frame_id.split(":")[0])
            _, ok = fx.expected(res.descendant, index)
            if res.class_id not in ok:
                wrong.append((res.descendant, index, res.class_id, ok))
            assert res.task == t and res.class_name == names[res.class_id]
            assert res.header.stamp.sec > 0 and res.latency_total_ms > 0
        assert not wrong, f"{t}: {len(wrong)} of {len(results[t].items)} wrong, e.g. {wrong[:3]}"
        print(t, len(results[t].items), "results checked, descendants", sorted({x.descendant for x in results[t].items}))
        cls = classes[t].poll()
        assert cls and all(len(c.results) == 1 for c in cls)
        by_frame = {x.header.frame_id: x for x in results[t].items}
        matched = [c for c in cls if c.header.frame_id in by_frame]
        assert matched and all(c.results[0].class_id == by_frame[c.header.frame_id].class_name for c in matched)
    assert diags.wait(lambda ds: any(len(d.status) >= 3 for d in ds), 5)
    names = {s.name for d in diags.items for s in d.status}
    assert {"nestdnn_node: fashion_vgg", "nestdnn_node: digits_vgg"} <= names
    assert proc.alive()


def test_budget_and_priority_replan(node, cameras, dp):
    proc, plans = node
    op_budget = r.writer(dp, "/nestdnn/resource_budget", r.ResourceBudget, r.LATCHED)
    op_prio = r.writer(dp, "/nestdnn/task_priority", r.TaskPriority, r.RELIABLE)
    assert settle(plans, lambda p: len(running(p)) == 2, 20), "tasks never both ran: " + proc.text()
    time.sleep(1.0)

    op_budget.write(budget(4.0))
    big = settle(plans, lambda p: abs(p.cpu_cores_budget - 4.0) < 1e-3 and len(running(p)) == 2)
    assert big, proc.text()
    time.sleep(1.0)
    big = plans.poll()[-1]
    big_idx = {t.task: t.descendant_index for t in big.tasks}
    cost = {t.task: t.cost_cores for t in big.tasks}  # cores for target fps on the big descendants

    small_cores = 0.55 * sum(cost.values())
    op_budget.write(budget(small_cores))
    small = settle(plans, lambda p: abs(p.cpu_cores_budget - small_cores) < 1e-3)
    assert small, proc.text()
    time.sleep(1.0)
    small = plans.poll()[-1]
    small_idx = {t.task: t.descendant_index for t in small.tasks}
    print("budget 4.0 ->", big_idx, "budget", round(small_cores, 3), "->", small_idx)
    assert sum(small_idx.values()) < sum(big_idx.values()), (big_idx, small_idx)
    assert small.cpu_cores_used <= small_cores + 1e-3

    # Priorities decide who is served where the budget cannot serve both tasks at their
    # target rate even on their smallest descendants: first fashion_vgg favoured (20), then
    # digits_vgg (20, fashion_vgg back to 1); digits_vgg must get more in the second plan.
    # (At the budget above the shift can be one share quantum or nil: digits_vgg may already
    # get its whole demand on a small descendant, and a CI run once saw it nil.)
    def task(plan, name):
        return next(t for t in plan.tasks if t.task == name)

    tight_cores = 0.25 * sum(cost.values())
    op_budget.write(budget(tight_cores))
    assert settle(plans, lambda p: abs(p.cpu_cores_budget - tight_cores) < 1e-3), proc.text()
    op_prio.write(priority("fashion_vgg", 20.0))
    low = settle(plans, lambda p: task(p, "fashion_vgg").priority > 19)
    assert low, proc.text()
    time.sleep(1.0)
    low = plans.poll()[-1]
    op_prio.write(priority("fashion_vgg", 1.0))
    op_prio.write(priority("digits_vgg", 20.0))
    pr = settle(plans, lambda p: task(p, "digits_vgg").priority > 19 and task(p, "fashion_vgg").priority < 2)
    assert pr, proc.text()
    time.sleep(1.0)
    pr = plans.poll()[-1]
    before = task(low, "digits_vgg")
    after = task(pr, "digits_vgg")
    print("budget", round(tight_cores, 3), "digits_vgg with fashion_vgg at priority 20:",
          (before.descendant_index, before.share_cores),
          "with itself at 20:", (after.descendant_index, after.share_cores))
    assert (after.descendant_index, after.share_cores) > (before.descendant_index, before.share_cores), (before, after)

    op_prio.write(priority("fashion_vgg", 0.0, enabled=False))
    off = settle(plans, lambda p: not next(t for t in p.tasks if t.task == "fashion_vgg").enabled)
    assert off, proc.text()
    res = Collector(dp, "/nestdnn/fashion_vgg/result", r.InferenceResult, r.RELIABLE_READER)
    time.sleep(1.0)
    res.poll()
    res.items.clear()
    time.sleep(1.5)
    assert not res.poll(), "a disabled task still publishes results"
    other = Collector(dp, "/nestdnn/digits_vgg/result", r.InferenceResult, r.RELIABLE_READER)
    assert other.wait(lambda xs: len(xs) >= 5, 5), "the other task stopped too"
    assert proc.alive()


@pytest.mark.parametrize("remap,topic", [
    ([], "/camera_a/image_raw/compressed"),
    # image_transport naming: a remap of the base topic moves the /compressed subtopic along,
    (["-r", "camera_a/image_raw:=/drivers/cam0/image"], "/drivers/cam0/image/compressed"),
    # and a remap of the full compressed topic applies too.
    (["-r", "camera_a/image_raw/compressed:=/drivers/cam0/png"], "/drivers/cam0/png"),
], ids=["plain", "base_remap", "full_remap"])
def test_compressed_camera(procs, models, tmp_path, dp, remap, topic):
    """A task on `<image_topic>/compressed` (PNG, lossless: the classes must match exactly),
    also with its topic remapped."""
    import io

    from PIL import Image as PILImage

    from conftest import NODE_PARAMS
    text = NODE_PARAMS.format(models=models, cores=2.0, fps=1000.0).replace(
        "fashion_vgg: {image_topic: camera_a/image_raw,", "fashion_vgg: {transport: compressed, image_topic: camera_a/image_raw,")
    params = tmp_path / "params.yaml"
    params.write_text(text)
    proc = procs([binary("nestdnn_node"), "--ros-args", "--params-file", str(params)] + remap,
                 name="node")
    plans = Collector(dp, "/nestdnn/plan", r.Plan, r.LATCHED_READER)
    assert plans.wait(lambda p: p, STARTUP_S), proc.text()
    fx = Fixtures(f"{models}/fashion_vgg")
    w = r.writer(dp, topic, r.CompressedImage, r.SENSOR_DATA)
    res = Collector(dp, "/nestdnn/fashion_vgg/result", r.InferenceResult, r.RELIABLE_READER)
    pngs = []
    for img in fx.images:
        b = io.BytesIO()
        PILImage.fromarray(img).save(b, format="PNG")
        pngs.append(b.getvalue())
    end = time.time() + 30
    n = 0
    while time.time() < end and len(res.poll()) < 30:
        i = n % len(pngs)
        w.write(r.CompressedImage(header=r.Header(stamp=r.now(), frame_id=f"{i}:{n}"), format="png", data=pngs[i]))
        n += 1
        time.sleep(1 / 30)
    assert len(res.items) >= 30, proc.text()
    for x in res.items:
        _, ok = fx.expected(x.descendant, int(x.header.frame_id.split(":")[0]))
        assert x.class_id in ok, (x.descendant, x.header.frame_id, x.class_id, ok)
    assert topic in proc.text()


def test_use_sim_time_stamps_plans_from_clock(procs, models, tmp_path, dp):
    """With use_sim_time the node takes /clock (rosgraph_msgs/Clock) for the stamps of its
    plans: zero before the first /clock, then the simulated time, not the wall clock."""
    params = write_params(tmp_path / "params.yaml", models)
    proc = procs([binary("nestdnn_node"), "--ros-args", "--params-file", params,
                  "-p", "use_sim_time:=true"], name="node")
    plans = Collector(dp, "/nestdnn/plan", r.Plan, r.LATCHED_READER)
    assert plans.wait(lambda p: p, STARTUP_S), proc.text()
    first = plans.items[0]
    assert (first.header.stamp.sec, first.header.stamp.nanosec) == (0, 0), first.header
    clock = r.writer(dp, "/clock", r.Clock, r.CLOCK)
    op_budget = r.writer(dp, "/nestdnn/resource_budget", r.ResourceBudget, r.LATCHED)
    sim = r.Time(sec=1234, nanosec=500)
    end = time.time() + 30
    cores = 1.0
    while time.time() < end:
        for _ in range(10):  # the node's /clock reader may take a moment to match
            clock.write(r.Clock(clock=sim))
            time.sleep(0.02)
        op_budget.write(budget(cores))  # a new budget: a new plan, stamped by the node
        cores += 0.25
        if plans.wait(lambda ps: any(p.trigger == "budget" and p.header.stamp.sec == 1234 for p in ps), 0.5):
            break
    stamped = [p for p in plans.items if p.trigger == "budget" and p.header.stamp.sec == 1234]
    assert stamped, [(p.trigger, p.header.stamp) for p in plans.items] + [proc.text()]
    assert stamped[0].header.stamp.nanosec == 500
    # No plan carries a wall-clock stamp.
    wall = time.time() - 3600
    assert all(p.header.stamp.sec < wall for p in plans.items), [p.header.stamp for p in plans.items]

"""`nestdnn play` feeds the live nestdnn_node over DDS with a recording (issue 6): the bag's
cameras, budgets and priorities reach the node, results come out, and they agree with the
ground truth the bag also carries (played on `<image topic>/ground_truth`, read here by an
independent Cyclone DDS participant)."""
import os
import re

import rosdds as r
from conftest import ROOT, binary
from peers import Collector

STARTUP_S = 120  # first start profiles the models (cached afterwards)
BAG = os.path.join(ROOT, "test", "bags", "recording_db3")   # 4 s: fashion_resnet + digits_vgg (jpeg)
TASKS = ("fashion_resnet", "digits_vgg")


def weakest_accuracy(task):
    """The lowest test-set top-1 among the task's descendants, read from its manifest."""
    text = open(os.path.join(ROOT, "models", task, "manifest.yaml")).read()
    descendants = text.split("\ndescendants:", 1)[1]
    return min(float(a) for a in re.findall(r"^  accuracy: ([0-9.]+)$", descendants, re.M))


def test_play_feeds_the_node(procs, dp):
    params = os.path.join(ROOT, "params", "replay.yaml")
    node = procs([binary("nestdnn_node"), "--ros-args", "--params-file", params,
                  "-p", "digits_vgg.transport:=compressed"], name="node")
    plans = Collector(dp, "/nestdnn/plan", r.Plan, r.LATCHED_READER)
    assert plans.wait(lambda p: p, STARTUP_S), "no plan: " + node.text()
    results = {t: Collector(dp, f"/nestdnn/{t}/result", r.InferenceResult, r.RELIABLE_READER)
               for t in TASKS}
    truth = {t: Collector(dp, f"/camera/{t}/image_raw/ground_truth", r.Classification,
                          r.RELIABLE_READER) for t in TASKS}
    play = procs([binary("nestdnn"), "play", BAG, "--delay", "2"], name="play")
    assert play.p.wait(60) == 0, play.text()
    out = play.text()
    assert "publishing /camera/fashion_resnet/image_raw/compressed" in out, out
    assert "skipping /rosout" in out, out
    for t in TASKS:
        assert results[t].wait(lambda xs: len(xs) >= 30, 20), (
            f"{t}: {len(results[t].items)} results\n" + node.text())
    # Every ground-truth message of the bag arrives (reliable, 120 per camera).
    for t in TASKS:
        assert truth[t].wait(lambda xs: len(xs) >= 120, 10), f"{t}: {len(truth[t].items)} truths"
    for t in TASKS:
        gt = {(c.header.stamp.sec, c.header.stamp.nanosec): c.results[0].class_id
              for c in truth[t].poll()}
        res = results[t].poll()
        scored = [x for x in res if (x.header.stamp.sec, x.header.stamp.nanosec) in gt]
        assert len(scored) == len(res), f"{t}: results whose stamp is not a bag frame's"
        correct = sum(x.class_name == gt[(x.header.stamp.sec, x.header.stamp.nanosec)] for x in scored)
        acc = correct / len(scored)
        print(t, len(scored), "results, accuracy", round(acc, 3), sorted({x.descendant for x in res}))
        # The bar: the task's weakest descendant on its test set (manifest) less 0.2, far
        # above chance (0.1) yet clear of sampling noise over ~80 frames (one frame holds
        # one item for several frames, so they are not independent draws).
        bar = weakest_accuracy(t) - 0.2
        assert acc >= bar, f"{t}: accuracy {acc:.3f} over {len(scored)} frames, bar {bar:.3f}"
    # The bag's budget and priority events reached the planner.
    triggers = [p.trigger for p in plans.poll()]
    assert "budget" in triggers, triggers
    assert "priority_changed:digits_vgg" in triggers, triggers
    budgets = sorted({round(p.cpu_cores_budget, 3) for p in plans.items if p.trigger == "budget"})
    assert budgets == [0.026, 0.036], budgets
    assert node.alive()


def test_play_rate_topics_and_loop(procs, dp):
    """--rate scales bag time, --topics filters, --loop starts over until interrupted (SIGINT);
    the recorded QoS is used (the budget topic is latched: a late reader still gets it)."""
    import time
    budgets = Collector(dp, "/nestdnn/resource_budget", r.ResourceBudget, r.LATCHED_READER)
    t0 = time.time()
    once = procs([binary("nestdnn"), "play", BAG, "--rate", "4", "--delay", "1",
                  "--topics", "/nestdnn/resource_budget"], name="once")
    assert once.p.wait(30) == 0, once.text()
    took = time.time() - t0
    out = once.text()
    # 4 s of bag at 4x after a 1 s delay; only the budget topic (2 messages).
    assert "published 2 messages" in out, out
    assert "publishing /camera" not in out, out
    assert 1.2 < took < 6.0, took
    assert budgets.wait(lambda xs: len(xs) >= 2, 5), len(budgets.items)
    assert sorted(round(b.cpu_cores_available, 3) for b in budgets.items[:2]) == [0.026, 0.036]
    seen = len(budgets.poll())
    looped = procs([binary("nestdnn"), "play", BAG, "--rate", "8", "--loop",
                    "--topics", "/nestdnn/resource_budget"], name="loop")
    # 0.5 s of bag per pass, 2 budgets each: wait for three passes to arrive (however long the
    # player takes to start on a busy machine) rather than sleeping a fixed time.
    assert budgets.wait(lambda xs: len(xs) >= seen + 6, 30), len(budgets.items) - seen
    assert looped.alive(), looped.text()
    assert looped.stop() == 0
    n = int(looped.text().split("published ")[1].split()[0])
    assert n >= 6, looped.text()

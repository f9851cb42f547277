"""Soak run: nestdnn_node + resource_monitor + an independent Cyclone DDS peer for N minutes.

Run it with scripts/soak.sh (builds the binaries, enters a private loopback-only network
namespace). Scenario, repeated every cycle (60 s, or the whole run when shorter):
  - four camera tasks (the committed models), one camera each, 30 Hz, best effort;
  - resource_monitor plays a looped budget trace (a new CPU budget every 4 s);
  - the peer changes a task priority every 3 s, and now and then disables a task and enables
    it again (nestdnn/task_priority);
  - the monitor is stopped (SIGTERM) for 10 s; meanwhile the peer publishes budgets every 2 s;
  - one camera stops for 8 s (longer than idle_timeout_s) and resumes;
and twice per run (at 15 % and 30 % of it) the node is stopped (SIGTERM, then SIGINT), stays
down 2 s and is restarted.

Accounting of frames (per node incarnation and task). The node counts what it drops
(/diagnostics: frames_dropped_overrun, _inactive, frames_bad, inference_errors,
frames_lost_transport (publisher sequence gaps seen by the subscription); cumulative per
incarnation). An incarnation's window runs from its first diagnostics message that counts a
received frame of the task to its last diagnostics message (for the last incarnation: after the
cameras stopped and the node drained). Frames sent in the window that have no result and are
not counted as dropped are lost. A frame's drop is counted up to about one frame period after it
was sent (when the next frame replaces it), so frames sent within AMBIGUOUS_S before a window
boundary may be counted on either side of it: those without a result are counted in the window
only as far as the counters need them (the smallest loss consistent with the counters).
Frames sent outside the windows (node starting, stopping, down) are reported separately.
"""
import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

TASKS = ["fashion_vgg", "fashion_resnet", "digits_vgg", "digits_resnet"]
GAP_TASK = "digits_resnet"          # its camera stops for a while every cycle
HZ = 30.0
CYCLE_S = 60.0
AMBIGUOUS_S = 0.15                  # see the module doc
MONITOR_TRACE = [1.0, 0.12, 0.06, 0.25, 0.03, 0.5]   # cores, 4 s each (looped)
PEER_BUDGETS = [0.4, 0.09, 0.15, 0.04]                    # never equal to a trace value
PRIORITIES = [0.5, 1.0, 2.0, 4.0, 8.0]
DROP_KEYS = ["frames_dropped_overrun", "frames_dropped_inactive", "frames_bad", "inference_errors",
             "frames_lost_transport"]


def only_loopback():
    with open("/proc/net/dev") as f:
        return [line.split(":")[0].strip() for line in f.readlines()[2:]] == ["lo"]


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(math.ceil(q / 100.0 * len(xs))) - 1)]


def stamp_s(h):
    return h.stamp.sec + h.stamp.nanosec * 1e-9


class Child:
    """A process we started (node or monitor); stopped by PID only."""

    def __init__(self, name, args, log, env):
        self.name, self.log_path = name, log
        self.log = open(log, "w")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.spawned = time.time()
        self.ready = None           # first plan seen (node)
        self.stopping = None        # when we sent the stop signal
        self.exited = None
        self.signal = None
        self.killed = False

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        if self.p.poll() is None:
            self.stopping = time.time()
            self.signal = signal.Signals(sig).name
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.p.kill()
                self.p.wait()
        if self.exited is None:
            self.exited = time.time()
        self.log.close()
        return self.p.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--models", default=os.environ.get("NESTDNN_MODELS") or os.path.join(ROOT, "models"))
    ap.add_argument("--startup-timeout", type=float, default=300.0)
    a = ap.parse_args()
    if not only_loopback():
        sys.exit("soak.py must run in a private network namespace holding only loopback (use scripts/soak.sh)")
    report = os.path.abspath(a.report)
    check_report_path(report, a)

    import rosdds as r
    from cyclonedds.core import Listener
    from cyclonedds.sub import DataReader
    from peers import Camera, Fixtures, budget, priority, rgb8

    duration = a.minutes * 60.0
    cycle = min(CYCLE_S, duration)
    wd = a.workdir
    os.makedirs(wd, exist_ok=True)
    params = os.path.join(wd, "params.yaml")
    lines = ["nestdnn_node:", "  ros__parameters:", f"    tasks: [{', '.join(TASKS)}]",
             f"    models_dir: {os.path.abspath(a.models)}",
             "    default_budget: {cpu_cores: 1.0, memory_mb: 512.0}",
             "    scheduler: {min_dwell_s: 1.0, idle_timeout_s: 2.0}"]
    for i, t in enumerate(TASKS):
        lines.append(f"    {t}: {{image_topic: soak/cam{i}/image_raw, target_fps: {HZ}}}")
    open(params, "w").write("\n".join(lines) + "\n")
    trace = os.path.join(wd, "budget-trace.yaml")
    open(trace, "w").write("".join(f"- {{t: {4 * i}, cpu_cores: {c}, memory_mb: 512}}\n"
                                   for i, c in enumerate(MONITOR_TRACE)))
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    node_cmd = [os.path.join(a.bin_dir, "nestdnn_node"), "--ros-args", "--params-file", params]
    mon_cmd = [os.path.join(a.bin_dir, "resource_monitor"), "--trace", trace, "--trace-loop",
               "--ros-args", "-p", "period_s:=1.0"]
    for c in (node_cmd[0], mon_cmd[0]):
        if not os.access(c, os.X_OK):
            sys.exit(f"{c}: not built")

    dp = r.participant()
    lock = threading.Lock()
    plans = []            # (arrival, stamp, trigger, cpu_cores_budget)
    diags = []            # (arrival, stamp, {task: {key: int}})

    def on_plans(rd):
        now = time.time()
        got = r.take_valid(rd)
        with lock:
            for p in got:
                plans.append((now, stamp_s(p.header), p.trigger, float(p.cpu_cores_budget)))

    def on_diags(rd):
        now = time.time()
        got = r.take_valid(rd)
        with lock:
            for d in got:
                per = {}
                for st in d.status:
                    task = st.name.split(": ", 1)[-1]
                    if task in TASKS:
                        per[task] = {kv.key: int(kv.value) for kv in st.values if kv.value.isdigit()}
                if per:
                    diags.append((now, stamp_s(d.header), per))

    plan_listener = Listener(on_data_available=on_plans)
    diag_listener = Listener(on_data_available=on_diags)
    plan_rd = DataReader(dp, r.topic(dp, "/nestdnn/plan", r.Plan), qos=r.LATCHED_READER, listener=plan_listener)
    diag_rd = DataReader(dp, r.topic(dp, "/diagnostics", r.DiagnosticArray), qos=r.RELIABLE_READER,
                         listener=diag_listener)
    result_rds = {t: r.reader(dp, f"/nestdnn/{t}/result", r.InferenceResult, r.RELIABLE_READER) for t in TASKS}
    results = {t: {} for t in TASKS}      # camera seq -> arrival time
    result_lat = []
    op_budget = r.writer(dp, "/nestdnn/resource_budget", r.ResourceBudget, r.LATCHED)
    op_prio = r.writer(dp, "/nestdnn/task_priority", r.TaskPriority, r.RELIABLE)

    stop_drain = threading.Event()

    def drain():
        while not stop_drain.is_set():
            now = time.time()
            for t, rd in result_rds.items():
                for x in r.take_valid(rd, 1000):
                    try:
                        seq = int(x.header.frame_id.split(":")[1])
                    except (IndexError, ValueError):
                        continue
                    results[t].setdefault(seq, now)
                    result_lat.append(float(x.latency_total_ms))
            time.sleep(0.02)

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()

    class SoakCamera(Camera):
        """peers.Camera that keeps each frame's send time and can pause."""

        def __init__(self, topic, fixtures):
            super().__init__(dp, topic, fixtures, HZ)
            self.times = []
            self.paused = threading.Event()
            self.imgs = [rgb8(x) for x in fixtures.images]

        def run(self):
            period = 1.0 / self.hz
            t = time.time()
            while not self.stop_ev.is_set():
                if time.time() - t > 1.0:
                    # stalled (e.g. the machine was paused): a camera does not send what it
                    # missed in a burst; resume the 30 Hz rhythm from now
                    t = time.time()
                if not self.paused.is_set():
                    i = self.sent % len(self.imgs)
                    img = self.imgs[i]
                    img.header = r.Header(stamp=r.now(), frame_id=f"{i}:{self.sent}")
                    self.times.append(time.time())
                    self.w.write(img)
                    self.sent += 1
                t += period
                time.sleep(max(0.0, t - time.time()))

    cams = {t: SoakCamera(f"/soak/cam{i}/image_raw", Fixtures(os.path.join(a.models, t)))
            for i, t in enumerate(TASKS)}

    nodes, monitors = [], []
    events = []           # (t_run, what)
    controls = []         # (t_send, expected trigger, node index)
    failures = []
    t0 = None

    def log_event(what):
        tr = round(time.time() - t0, 2) if t0 else 0.0
        events.append((tr, what))
        print(f"[soak {tr:7.1f} s] {what}", flush=True)

    def start_node():
        k = len(nodes)
        n = Child(f"node{k}", node_cmd, os.path.join(wd, f"node-{k}.log"), env)
        nodes.append(n)
        end = time.time() + a.startup_timeout
        while time.time() < end:
            with lock:
                ok = any(p[1] >= n.spawned - 0.5 and p[0] >= n.spawned for p in plans)
            if ok:
                n.ready = time.time()
                log_event(f"node {k} ready (pid {n.p.pid}, {n.ready - n.spawned:.1f} s after start)")
                return n
            if not n.alive():
                raise RuntimeError(f"node {k} exited during start (rc {n.p.returncode}); log {n.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"node {k}: no plan within {a.startup_timeout:.0f} s; log {n.log_path}")

    def start_monitor():
        k = len(monitors)
        m = Child(f"monitor{k}", mon_cmd, os.path.join(wd, f"monitor-{k}.log"), env)
        monitors.append(m)
        log_event(f"monitor {k} started (pid {m.p.pid})")
        return m

    rss = []
    stalls = []
    try:
        start_monitor()
        start_node()
        for c in cams.values():
            c.start()
        t0 = time.time()
        log_event(f"cameras started: {len(cams)} x {HZ:.0f} Hz; running {duration:.0f} s")
        kills = [(0.15 * duration, signal.SIGTERM), (0.30 * duration, signal.SIGINT)]
        prio = {t: [1.0, True] for t in TASKS}
        k_prio = 0
        pending_enable = None
        next_prio = 3.0
        next_budget = 0.0
        k_budget = 0
        next_rss = 0.0
        prev_iter = time.time()
        while True:
            now = time.time()
            tr = now - t0
            if now - prev_iter > 2.0:
                # the whole machine stopped (a VM pause): phase-timed events may be skipped
                stalls.append({"t": round(tr, 2), "s": round(now - prev_iter, 2)})
                log_event(f"the peer's loop stalled {now - prev_iter:.1f} s")
            prev_iter = now
            if tr >= duration:
                break
            node = nodes[-1]
            mon = monitors[-1]
            if not node.alive():
                failures.append(f"node {len(nodes) - 1} exited unexpectedly (rc {node.p.returncode})")
                log_event(failures[-1])
                node.stop()
                start_node()
                prio = {t: [1.0, True] for t in TASKS}
                prev_iter = time.time()
                continue
            if kills and tr >= kills[0][0]:
                _, sig = kills.pop(0)
                k = len(nodes) - 1
                rc = node.stop(sig)
                log_event(f"node {k} stopped by {node.signal}: rc {rc} after {node.exited - node.stopping:.2f} s"
                          + (" (SIGKILL needed)" if node.killed else ""))
                if rc != 0 or node.killed:
                    failures.append(f"node {k} did not stop cleanly on {node.signal} (rc {rc}, killed {node.killed})")
                time.sleep(2.0)
                start_node()
                prio = {t: [1.0, True] for t in TASKS}
                pending_enable = None
                prev_iter = time.time()
                continue
            if tr >= next_rss:
                v = rss_mib(node.p.pid)
                if v is not None:
                    rss.append({"t": round(tr, 2), "rss_mib": round(v, 2), "node": len(nodes) - 1})
                next_rss += 1.0
            phase = tr % cycle
            # resource_monitor: down from 40 % to 57 % of each cycle
            mon_should_run = not (0.40 * cycle <= phase < 0.57 * cycle)
            if mon.alive() and mon.stopping is None and not mon_should_run:
                rc = mon.stop(signal.SIGTERM)
                log_event(f"monitor {len(monitors) - 1} stopped by SIGTERM: rc {rc}")
                if rc != 0 or mon.killed:
                    failures.append(f"monitor {len(monitors) - 1} did not stop cleanly (rc {rc})")
                next_budget = tr
            elif mon.stopping is None and not mon.alive():
                failures.append(f"monitor {len(monitors) - 1} exited unexpectedly (rc {mon.p.returncode})")
                log_event(failures[-1])
                mon.stop()
                start_monitor()
            elif mon.stopping is not None and mon_should_run:
                start_monitor()
            serving = node.ready is not None and now - node.ready >= 2.0 and \
                not (kills and kills[0][0] - tr < 2.5)
            # peer budgets while the monitor is down
            if monitors[-1].stopping is not None and tr >= next_budget:
                next_budget = tr + 2.0
                cores = PEER_BUDGETS[k_budget % len(PEER_BUDGETS)]
                k_budget += 1
                ts = time.time()
                op_budget.write(budget(cores))
                if serving:
                    controls.append((ts, "budget", len(nodes) - 1))
            # one camera pauses from 63 % to 77 % of each cycle
            gap = 0.63 * cycle <= phase < 0.77 * cycle
            cam = cams[GAP_TASK]
            if gap and not cam.paused.is_set():
                cam.paused.set()
                log_event(f"camera of {GAP_TASK} paused")
            elif not gap and cam.paused.is_set():
                cam.paused.clear()
                log_event(f"camera of {GAP_TASK} resumed")
            # priorities / enable every 3 s
            if tr >= next_prio:
                next_prio = tr + 3.0
                if serving:
                    if pending_enable is not None:
                        task = pending_enable
                        pending_enable = None
                        msg = priority(task, prio[task][0], enabled=True)
                        trig = f"priority_changed:{task}"
                        prio[task][1] = True
                    else:
                        task = TASKS[k_prio % len(TASKS)]
                        k_prio += 1
                        if k_prio % 5 == 3:
                            msg = priority(task, 0.0, enabled=False)
                            trig = f"task_stopped:{task}:disabled"
                            prio[task][1] = False
                            pending_enable = task
                        else:
                            cur = prio[task][0]
                            choices = [p for p in PRIORITIES if p != cur]
                            v = choices[k_prio % len(choices)]
                            prio[task][0] = v
                            msg = priority(task, v, enabled=True)
                            trig = f"priority_changed:{task}"
                    ts = time.time()
                    op_prio.write(msg)
                    controls.append((ts, trig, len(nodes) - 1))
            time.sleep(0.05)
        # drain: stop the cameras, let the last frames and diagnostics come in
        for c in cams.values():
            c.stop()
        log_event("cameras stopped")
        time.sleep(3.0)
        node = nodes[-1]
        if node.alive():
            rc = node.stop(signal.SIGINT)
            log_event(f"node {len(nodes) - 1} stopped by SIGINT at the end: rc {rc}")
            if rc != 0 or node.killed:
                failures.append(f"node {len(nodes) - 1} did not stop cleanly at the end (rc {rc})")
        else:
            failures.append(f"node {len(nodes) - 1} was not running at the end (rc {node.p.returncode})")
        mon = monitors[-1]
        if mon.alive():
            rc = mon.stop(signal.SIGINT)
            if rc != 0 or mon.killed:
                failures.append(f"monitor {len(monitors) - 1} did not stop cleanly at the end (rc {rc})")
        time.sleep(0.5)
        stop_drain.set()
        drainer.join(5)
    finally:
        for c in cams.values():
            c.stop_ev.set()
        for ch in nodes + monitors:
            if ch.alive():
                ch.stop(signal.SIGKILL if ch.stopping else signal.SIGINT)

    with lock:
        plans_l, diags_l = list(plans), list(diags)
    out = account(cams, results, nodes, diags_l)
    # plan latency: control message -> the next plan made for it (trigger matches)
    lat, unanswered = [], []
    for ts, trig, k in controls:
        n = nodes[k]
        limit = min(ts + 5.0, n.stopping or float("inf"))
        hit = next((p for p in plans_l if p[0] >= ts and p[1] >= ts - 0.001 and p[2] == trig and p[0] <= limit), None)
        if hit:
            lat.append((hit[0] - ts) * 1e3)
        elif (n.stopping or float("inf")) - ts > 5.0:
            unanswered.append({"t": round(ts - t0, 2), "trigger": trig})
    # RSS drift over the last node incarnation, after a warm-up
    last = len(nodes) - 1
    samples = [s for s in rss if s["node"] == last]
    drift, basis = None, "too few RSS samples of the last node incarnation"
    if len(samples) >= 8:
        life = samples[-1]["t"] - samples[0]["t"]
        # At least two calibration periods (10 s each): the node builds descendants on demand
        # and re-calibrates in its first seconds, which a short run would read as drift.
        warm = max(20.0, 0.2 * life)
        kept = [s for s in samples if s["t"] >= samples[0]["t"] + warm]
        if len(kept) >= 8:
            q = len(kept) // 4
            first = sum(s["rss_mib"] for s in kept[:q]) / q
            lastq = sum(s["rss_mib"] for s in kept[-q:]) / q
            drift = round(100.0 * (lastq - first) / first, 2)
            basis = (f"node incarnation {last} (the last; earlier ones were stopped on purpose), "
                     f"t {kept[0]['t']:.0f}-{kept[-1]['t']:.0f} s after a {warm:.0f} s warm-up: "
                     f"first quarter {first:.1f} MiB, last quarter {lastq:.1f} MiB")
    panics = 0
    for ch in nodes + monitors:
        try:
            panics += open(ch.log_path, errors="replace").read().count("panicked")
        except OSError:
            pass
    rep = {
        "minutes": a.minutes,
        "duration_s": round(duration, 1),
        "tasks": TASKS,
        "camera_hz": HZ,
        "rss_mib": rss,
        "rss_drift_pct": drift,
        "rss_drift_basis": basis,
        **out,
        "panics": panics,
        "plan_latency_ms_p99": round(pct(lat, 99), 2) if lat else None,
        "plan_latency_ms_p50": round(pct(lat, 50), 2) if lat else None,
        "plan_latency_ms_max": round(max(lat), 2) if lat else None,
        "plan_latency_samples": len(lat),
        "control_messages_unanswered": unanswered,
        "result_latency_ms_p50": round(pct(result_lat, 50), 2) if result_lat else None,
        "result_latency_ms_p99": round(pct(result_lat, 99), 2) if result_lat else None,
        "plans_received": len(plans_l),
        "node_incarnations": [{"pid": n.p.pid, "started_s": round(n.spawned - t0, 2),
                               "ready_after_s": round(n.ready - n.spawned, 2) if n.ready else None,
                               "stopped_s": round(n.stopping - t0, 2) if n.stopping else None,
                               "signal": n.signal, "rc": n.p.returncode, "sigkilled": n.killed}
                              for n in nodes],
        "monitor_restarts": len(monitors) - 1,
        "peer_loop_stalls": stalls,
        "events": [{"t": t, "what": w} for t, w in events],
        "definitions": {
            "frames_sent_node_up": "sent within a node incarnation's accounting window (from its first "
                                   "diagnostics counting a frame of the task to its last diagnostics)",
            "frames_sent_node_down": "sent while the node was deliberately stopping, down or starting "
                                     "(outside the windows); excluded from results_lost",
            "frames_dropped_counted": "the node's own counters summed over incarnations: "
                                      + " + ".join(DROP_KEYS) + " (mailbox overwrites are overrun)",
            "results_lost": "frames sent in a window with no result and not counted as dropped (frames "
                            f"sent within {AMBIGUOUS_S} s before a window boundary count only as far as "
                            "the counters need them)",
            "plan_latency_ms": "peer budget / priority message written -> first plan received whose "
                               "trigger is that message's (budget, priority_changed:<task>, "
                               "task_stopped:<task>:disabled)",
            "rss_drift_pct": "mean VmRSS of the last quarter vs the first quarter of the last node "
                             "incarnation's samples after its warm-up (max(20 s, 20 % of its life))",
        },
    }
    if rep["results_lost"] > 0:
        failures.append(f"results_lost = {rep['results_lost']} (frames sent while the node was up, "
                        "neither answered nor counted as dropped)")
    if panics > 0:
        failures.append(f"panics = {panics} ('panicked' in the node/monitor logs under {wd})")
    if drift is None:
        failures.append(f"rss_drift_pct unavailable: {basis}")
    elif drift > 5.0:
        failures.append(f"rss_drift_pct = {drift} > 5 ({basis})")
    rep["failures"] = failures
    rep["pass"] = not failures
    write_atomic(report, rep)
    print(json.dumps({k: v for k, v in rep.items() if k not in ("rss_mib", "events", "per_task", "node_incarnations")},
                     indent=1))
    print(f"report: {report}")
    if failures:
        for f in failures:
            print(f"SOAK FAILED: {f}", file=sys.stderr)
        sys.exit(1)


def account(cams, results, nodes, diags):
    """Frames sent, answered, counted as dropped, lost: see the module doc."""
    per_task = {}
    tot = {"frames_sent": 0, "frames_sent_node_up": 0, "frames_sent_node_down": 0,
           "frames_ambiguous_at_boundaries": 0, "results_received": 0, "frames_dropped_counted": 0,
           "results_lost": 0, "counted_drops_exceeding_unanswered": 0}
    by_kind = {k: 0 for k in DROP_KEYS}
    for task, cam in cams.items():
        times = cam.times
        res = results[task]
        sent_up = 0
        amb_total = 0
        lost = 0
        excess = 0
        answered_up = 0
        dropped_task = 0
        wins = []
        for k, n in enumerate(nodes):
            end_t = n.exited or float("inf")
            ds = [d for d in diags if n.spawned <= d[1] <= end_t and task in d[2]]
            if ds:
                last = ds[-1][2][task]
                dropped_task += sum(last.get(x, 0) for x in DROP_KEYS)
                for x in DROP_KEYS:
                    by_kind[x] += last.get(x, 0)
            start = next((d for d in ds if d[2][task].get("frames_received", 0) > 0), None)
            if start is None:
                continue
            end = ds[-1]
            s_a, s_b = start[1], end[1]
            d_w = sum(end[2][task].get(x, 0) - start[2][task].get(x, 0) for x in DROP_KEYS)
            certain_nr, amb_nr, sent_w, answered_w = 0, 0, 0, 0
            unanswered_t = []
            for seq, ts in enumerate(times):
                if ts <= s_a - AMBIGUOUS_S or ts > s_b:
                    continue
                answered = seq in res
                near = ts <= s_a or ts > s_b - AMBIGUOUS_S
                if answered:
                    sent_w += 1
                    answered_w += 1
                elif near:
                    amb_nr += 1
                else:
                    sent_w += 1
                    certain_nr += 1
                    unanswered_t.append(ts)
            x = min(amb_nr, max(0, d_w - certain_nr))
            lost_w = certain_nr + x - d_w
            sent_w += x
            sent_up += sent_w
            answered_up += answered_w
            amb_total += amb_nr
            if lost_w >= 0:
                lost += lost_w
            else:
                excess += -lost_w
            wins.append({"node": k, "from": round(s_a, 3), "to": round(s_b, 3), "sent": sent_w,
                         "answered": answered_w, "dropped_counted": d_w, "lost": max(lost_w, 0),
                         "ambiguous_unanswered": amb_nr,
                         # where unanswered frames cluster (send times, s since the epoch)
                         "unanswered_sent_at": [round(x, 3) for x in unanswered_t[:40]] if lost_w > 0 else []})
        per_task[task] = {"frames_sent": len(times), "frames_sent_node_up": sent_up,
                          "results_received": len(res), "answered_node_up": answered_up,
                          "frames_dropped_counted": dropped_task, "results_lost": lost, "windows": wins}
        tot["frames_sent"] += len(times)
        tot["frames_sent_node_up"] += sent_up
        tot["frames_ambiguous_at_boundaries"] += amb_total
        tot["results_received"] += len(res)
        tot["frames_dropped_counted"] += dropped_task
        tot["results_lost"] += lost
        tot["counted_drops_exceeding_unanswered"] += excess
    tot["frames_sent_node_down"] = tot["frames_sent"] - tot["frames_sent_node_up"]
    tot["frames_dropped_by_kind"] = by_kind
    tot["per_task"] = per_task
    return tot


def check_report_path(report, a):
    """Never overwrite an input: refuse a report path inside the repository's tracked files, the
    models or the binaries, or an existing file that is not an earlier soak report."""
    if os.path.isdir(report):
        sys.exit(f"--report {report} is a directory")
    for d in (a.models, a.bin_dir, os.path.join(ROOT, "test"), os.path.join(ROOT, "scripts")):
        d = os.path.realpath(d)
        if os.path.realpath(report).startswith(d + os.sep):
            sys.exit(f"--report {report} is inside {d}: refusing to write among the inputs")
    if os.path.exists(report):
        try:
            old = json.load(open(report))
            ok = isinstance(old, dict) and "rss_drift_pct" in old and "results_lost" in old
        except (OSError, ValueError):
            ok = False
        if not ok:
            sys.exit(f"--report {report} exists and is not an earlier soak report: not overwriting it")
    try:
        tracked = subprocess.run(["git", "-C", ROOT, "ls-files", "--error-unmatch", report],
                                 capture_output=True).returncode == 0
    except OSError:
        tracked = False
    if tracked:
        sys.exit(f"--report {report} is a file tracked by git: not overwriting it")


def write_atomic(path, obj):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    main()

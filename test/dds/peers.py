"""Cyclone DDS peers of the node tests: camera drivers, an operator, result collectors."""
import threading
import time

import numpy as np
from safetensors.numpy import load_file

import rosdds as r


class Fixtures:
    """Held-out images of a model and the reference logits of every descendant."""

    def __init__(self, model_dir):
        d = load_file(f"{model_dir}/fixtures.safetensors")
        self.images = d["input_u8"]            # (n, h, w) uint8
        self.labels = d["label"]
        self.logits = {k.split("/")[0]: v for k, v in d.items() if k.endswith("/logits")}

    def expected(self, descendant, index):
        """Top-1 class of image `index` for `descendant`, and the set of classes whose logit
        is within 1e-3 of the best (ties are accepted)."""
        l = self.logits[descendant][index]
        best = float(l.max())
        return int(l.argmax()), {int(i) for i in np.nonzero(l >= best - 1e-3)[0]}


def rgb8(gray):
    h, w = gray.shape
    return r.Image(height=h, width=w, encoding="rgb8", step=3 * w,
                   data=np.repeat(gray[:, :, None], 3, axis=2).tobytes())


class Camera(threading.Thread):
    """Publishes fixture images best-effort at `hz` on `topic`; frame_id = "<index>:<n>"."""

    def __init__(self, dp, topic, fixtures, hz=30.0, make=rgb8):
        super().__init__(daemon=True)
        self.w = r.writer(dp, topic, r.Image, r.SENSOR_DATA)
        self.fx, self.hz, self.make = fixtures, hz, make
        self.sent = 0
        self.stop_ev = threading.Event()

    def run(self):
        n = len(self.fx.images)
        period = 1.0 / self.hz
        t = time.time()
        while not self.stop_ev.is_set():
            i = self.sent % n
            img = self.make(self.fx.images[i])
            img.header = r.Header(stamp=r.now(), frame_id=f"{i}:{self.sent}")
            self.w.write(img)
            self.sent += 1
            t += period
            time.sleep(max(0.0, t - time.time()))

    def stop(self):
        self.stop_ev.set()
        self.join(5)


class Collector:
    """Keeps every valid sample of a reader (polled by `poll`)."""

    def __init__(self, dp, topic, cls, qos):
        self.rd = r.reader(dp, topic, cls, qos)
        self.items = []

    def poll(self):
        self.items.extend(r.take_valid(self.rd))
        return self.items

    def wait(self, pred, timeout):
        end = time.time() + timeout
        while time.time() < end:
            self.poll()
            if pred(self.items):
                return True
            time.sleep(0.05)
        self.poll()
        return pred(self.items)


def budget(cores, memory_mb=512):
    return r.ResourceBudget(header=r.Header(stamp=r.now()), cpu_cores_available=cores,
                            cpu_load=float("nan"), memory_available_bytes=int(memory_mb * 1048576),
                            battery_percentage=float("nan"), power_supply_status=0)


def priority(task, value, enabled=True):
    return r.TaskPriority(header=r.Header(stamp=r.now()), task=task, priority=value, enabled=enabled)

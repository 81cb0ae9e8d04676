"""ModelSlots: a running worker's task replaced (and rolled back) atomically, from several
threads, while frames flow -- no frame lost, the next batch on the new task, the old task
handed back once no batch uses it, so the caller can close it."""

import copy
import threading
import time

import numpy as np
import pytest

from edged.config import build_config
from edged.pipeline.slots import ModelSlotError, ModelSlots
from edged.pipeline.worker import InferenceWorker
from edged.sources.frame import Frame
from edged.tasks.loader import load_task

from . import onnx_models

SAFETY_TIMEOUT_S = 30.0


def load(path, task):
    return load_task(build_config({"models": {"m": {"path": path, "task": task}}}).models["m"])


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    """A real classifier and a real detector (ONNX Runtime), loaded once."""
    directory = tmp_path_factory.mktemp("slots")
    classifier = onnx_models.write(str(directory / "c.onnx"), onnx_models.classifier(3))
    detector = onnx_models.write(
        str(directory / "d.onnx"), onnx_models.detectnet(3, width=64, height=32)
    )
    loaded = {"classification": load(classifier, "classification"),
              "detection": load(detector, "detection")}  # fmt: skip
    yield loaded
    for task in loaded.values():
        task.backend.close()


class TrackedBackend:
    """Wraps a loaded backend that several tasks share: ``close`` closes this wrapper only, and
    an inference on a closed wrapper fails (a freed model used after replace returned it).
    ``gate`` (set by default) lets a test hold an inference in flight."""

    def __init__(self, backend):
        self._backend = backend
        self.name = backend.name
        self.inputs = backend.inputs
        self.outputs = backend.outputs
        self.closed = False
        self.calls = 0
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def infer(self, feeds):
        assert not self.closed, "inference on a closed backend"
        self.entered.set()
        assert self.gate.wait(SAFETY_TIMEOUT_S), "the test never opened the gate"
        self.calls += 1
        return self._backend.infer(feeds)

    def close(self):
        self.closed = True


def tracked(task):
    """A task of its own (own backend wrapper) over a shared loaded model."""
    clone = copy.copy(task)
    clone.backend = TrackedBackend(task.backend)
    return clone


def frame(seq):
    now = time.monotonic()
    image = np.full((48, 64, 3), seq % 255, np.uint8)
    return Frame("cam", seq, now, time.time(), (64, 48), image)


class Running:
    """A started worker (overlapping steps) in a ModelSlots, with one stream attached."""

    def __init__(self, task):
        self.results = []
        self.stop = threading.Event()
        self.worker = InferenceWorker("m", task, self.results.append, self.stop, overlap=True)
        self.slot = self.worker.attach("cam")
        self.worker.start()
        self.slots = ModelSlots()
        self.slots.add("m", task.config, self.worker)

    def put(self, seq):
        self.slot.put(frame(seq))

    def wait_results(self, n):
        deadline = time.monotonic() + SAFETY_TIMEOUT_S
        while len(self.results) < n and time.monotonic() < deadline:
            time.sleep(0.002)
        assert len(self.results) >= n, f"{len(self.results)} results, expected {n}"

    def close(self):
        self.stop.set()
        assert self.worker.join(SAFETY_TIMEOUT_S)


@pytest.fixture
def running(tasks):
    made = []

    def start(task):
        r = Running(task)
        made.append(r)
        return r

    yield start
    for r in made:
        r.close()


def test_the_next_batch_runs_the_new_task_and_the_old_comes_back_when_its_batch_is_done(
    tasks, running
):
    old = tracked(tasks["classification"])
    new = tracked(tasks["detection"])
    r = running(old)
    old.backend.gate.clear()
    r.put(0)
    assert old.backend.entered.wait(SAFETY_TIMEOUT_S)  # frame 0 is in flight on the old task
    returned = []
    replacer = threading.Thread(target=lambda: returned.append(r.slots.replace("m", new)))
    replacer.start()
    r.put(1)  # arrives while the old task still runs frame 0
    replacer.join(0.3)
    assert not returned, "replace returned while a batch still ran the old task"
    assert r.worker.in_use(old) == 1
    assert r.worker.task is new and r.slots.task("m") is new  # swapped at once
    old.backend.gate.set()
    replacer.join(SAFETY_TIMEOUT_S)
    assert returned == [old] and r.worker.in_use(old) == 0
    old.backend.close()  # the caller may free it now
    r.wait_results(2)
    assert [(x.seq, x.task) for x in r.results] == [(0, "classification"), (1, "detection")]
    r.put(2)
    r.wait_results(3)
    assert r.results[2].task == "detection" and r.worker.stats.errors == 0
    assert r.slots.config("m") is new.config
    assert r.slots.view("m").kind == "detection"


def test_rollback_is_replace_with_the_old_task(tasks, running):
    a = tracked(tasks["classification"])
    b = tracked(tasks["detection"])
    r = running(a)
    assert r.slots.replace("m", b) is a
    r.put(0)
    r.wait_results(1)
    assert r.slots.replace("m", a) is b  # the update failed its check: roll back
    b.backend.close()
    r.put(1)
    r.wait_results(2)
    assert [x.task for x in r.results] == ["detection", "classification"]
    assert r.worker.stats.errors == 0


def test_replacing_from_several_threads_while_frames_flow_loses_no_frame(tasks, running):
    first = tracked(tasks["classification"])
    r = running(first)
    frames = 150
    installed = [first]
    returned = []
    lock = threading.Lock()
    feeding = threading.Event()
    feeding.set()

    def replacer(index):
        n = 0
        while feeding.is_set():
            kind = ("classification", "detection")[(index + n) % 2]
            task = tracked(tasks[kind])
            with lock:
                installed.append(task)
            old = r.slots.replace("m", task)
            assert r.worker.in_use(old) == 0
            old.backend.close()  # closed at once: an inference on it would fail the run
            with lock:
                returned.append(old)
            n += 1
            time.sleep(0.001)

    threads = [threading.Thread(target=replacer, args=(i,), name=f"test-replace-{i}")
               for i in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    try:
        for seq in range(frames):
            r.put(seq)
            r.wait_results(seq + 1)  # one frame at a time: every frame must come out
    finally:
        feeding.clear()
        for t in threads:
            t.join(SAFETY_TIMEOUT_S)
    assert [x.seq for x in r.results] == list(range(frames))
    assert r.worker.stats.errors == 0  # no batch mixed two tasks or ran a closed one
    assert r.slot.drops == 0
    # every task installed came back exactly once, except the one running now
    current = r.slots.task("m")
    assert len(returned) == len(installed) - 1 > 4
    assert {id(t) for t in returned} | {id(current)} == {id(t) for t in installed}
    assert len({id(t) for t in returned}) == len(returned)
    assert {x.task for x in r.results} <= {"classification", "detection"}


def test_an_unknown_model_and_an_old_task_that_stays_busy_are_errors(tasks, running):
    old = tracked(tasks["classification"])
    r = running(old)
    with pytest.raises(ModelSlotError, match="no model named 'nope' is loaded"):
        r.slots.replace("nope", tracked(tasks["classification"]))
    old.backend.gate.clear()
    r.put(0)
    assert old.backend.entered.wait(SAFETY_TIMEOUT_S)
    new = tracked(tasks["classification"])
    try:
        with pytest.raises(ModelSlotError, match="still runs a batch"):
            r.slots.replace("m", new, timeout=0.2)
        assert r.slots.task("m") is new  # the new task is in place; the old must stay open
    finally:
        old.backend.gate.set()
    r.wait_results(1)


def test_replacing_a_task_by_itself_returns_it_at_once(tasks, running):
    task = tracked(tasks["classification"])
    r = running(task)
    assert r.slots.replace("m", task) is task
    assert r.slots.names() == ["m"] and "m" in r.slots and len(r.slots) == 1
    with pytest.raises(ModelSlotError, match="already has a slot"):
        r.slots.add("m", task.config, r.worker)

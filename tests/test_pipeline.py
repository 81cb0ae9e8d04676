"""The pipeline core: inference worker batching and fairness, bounded latency, sink isolation."""

import threading
import time

import numpy as np

from edged.config import build_config
from edged.pipeline.results import InferenceResult
from edged.pipeline.sinks import ResultSink, SinkDispatcher
from edged.pipeline.worker import InferenceWorker
from edged.sources.frame import Frame
from edged.tasks.loader import load_task

from . import onnx_models
from .helpers import CallbackSink


def real_task(tmp_path, batch=1):
    path = onnx_models.write(str(tmp_path / "c.onnx"), onnx_models.classifier(3, batch=batch))
    return load_task(build_config({"models": {"m": {"path": path}}}).models["m"])


def frame(stream, seq, value=0):
    now = time.monotonic()
    return Frame(stream, seq, now, time.time(), (32, 24), np.full((24, 32, 3), value, np.uint8))


class SlowBackend:
    """Wraps a real backend and adds a fixed delay per call: a stand-in for a slow accelerator."""

    def __init__(self, backend, delay_s):
        self._backend = backend
        self.delay_s = delay_s
        self.name = backend.name
        self.inputs = backend.inputs
        self.outputs = backend.outputs
        self.calls = 0

    def infer(self, feeds):
        self.calls += 1
        time.sleep(self.delay_s)
        return self._backend.infer(feeds)

    def close(self):
        self._backend.close()


def test_one_batch_takes_the_newest_frame_of_each_stream(tmp_path):
    results = []
    worker = InferenceWorker("m", real_task(tmp_path, batch=None), results.append,
                             threading.Event(), max_batch=4)  # fmt: skip
    slots = {s: worker.attach(s) for s in ("a", "b", "c")}
    for seq in range(3):
        for s, slot in slots.items():
            slot.put(frame(s, seq))
    batch = worker._collect()
    assert sorted((f.stream_id, f.seq) for f in batch) == [("a", 2), ("b", 2), ("c", 2)]
    worker.process(batch)
    assert sorted(r.stream_id for r in results) == ["a", "b", "c"]
    assert all(r.seq == 2 and r.task == "classification" for r in results)
    assert {slot.drops for slot in slots.values()} == {2}  # the two older frames, counted


def test_round_robin_never_starves_a_stream(tmp_path):
    worker = InferenceWorker("m", real_task(tmp_path), lambda r: None, threading.Event(),
                             max_batch=1)  # fmt: skip
    slots = {s: worker.attach(s) for s in ("a", "b", "c")}
    served = []
    for seq in range(6):
        for s, slot in slots.items():
            slot.put(frame(s, seq))
        served.extend(f.stream_id for f in worker._collect())
    assert sorted(set(served)) == ["a", "b", "c"]
    assert max(served.count(s) for s in "abc") - min(served.count(s) for s in "abc") <= 1


def test_results_carry_stage_latencies_and_frame_identity(tmp_path):
    results = []
    worker = InferenceWorker("m", real_task(tmp_path), results.append, threading.Event())
    worker.attach("cam")
    worker.process([frame("cam", 41, value=200)])
    (r,) = results
    assert (r.stream_id, r.seq, r.frame_size, r.model) == ("cam", 41, (32, 24), "m")
    assert set(r.latency_ms) == {"queue", "preprocess", "inference", "postprocess", "total"}
    assert all(v >= 0 for v in r.latency_ms.values())
    assert worker.stats.frames == {"cam": 1}


def test_a_camera_faster_than_inference_costs_drops_not_latency(tmp_path):
    """A source faster than inference -> the drop counter grows, latency stays bounded."""
    task = real_task(tmp_path)
    task.backend = SlowBackend(task.backend, delay_s=0.05)  # ~20 inferences/s at most
    stop = threading.Event()
    results = []
    worker = InferenceWorker("m", task, results.append, stop)
    slot = worker.attach("fast")
    worker.start()
    for seq in range(300):  # a 300-fps camera for ~1 s
        slot.put(frame("fast", seq))
        time.sleep(1 / 300.0)
    time.sleep(0.2)
    stop.set()
    assert worker.join(5)
    assert slot.drops > 200  # most frames were replaced before inference could take them
    assert len(results) < 60
    assert len(slot) <= 1
    # queueing delay is bounded by about one inference, never by the backlog
    queue_ms = sorted(r.latency_ms["queue"] for r in results)
    assert queue_ms[len(queue_ms) // 2] < 200


def test_a_broken_model_call_is_counted_and_the_worker_goes_on(tmp_path):
    task = real_task(tmp_path)
    original = task.backend.infer
    calls = []

    def flaky(feeds):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return original(feeds)

    task.backend.infer = flaky
    stop = threading.Event()
    results = []
    worker = InferenceWorker("m", task, results.append, stop)
    slot = worker.attach("cam")
    worker.start()
    slot.put(frame("cam", 0))
    deadline = time.monotonic() + 5
    while worker.stats.errors == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    slot.put(frame("cam", 1))
    while not results and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    assert worker.join(5)
    assert worker.stats.errors == 1
    assert [r.seq for r in results] == [1]


def result(seq):
    return InferenceResult("cam", seq, 0.0, 0.0, (1, 1), "m", "detection", [])


def test_sink_queue_is_bounded_and_counts_what_it_drops():
    dispatcher = SinkDispatcher([], threading.Event(), capacity=3)
    accepted = [dispatcher.offer(result(i)) for i in range(5)]
    assert accepted == [True, True, True, False, False]
    assert dispatcher.dropped == 2


class BrokenSink(ResultSink):
    name = "broken"

    def handle(self, result):
        raise ValueError("sink bug")


def test_a_failing_sink_does_not_starve_the_others_and_drain_delivers_all():
    stop = threading.Event()
    seen = []
    dispatcher = SinkDispatcher([BrokenSink(), CallbackSink(lambda r: seen.append(r.seq))], stop)
    dispatcher.start()
    for i in range(10):
        dispatcher.offer(result(i))
    stop.set()
    left = dispatcher.drain(timeout=5)
    assert left == 0
    assert seen == list(range(10))
    assert dispatcher.failures == {"broken": 10}


class GatedBackend:
    """Wraps a real backend; each call waits until the test opens the gate (a stand-in for a
    busy accelerator whose timing the test controls)."""

    def __init__(self, backend):
        self._backend = backend
        self.name = backend.name
        self.inputs = backend.inputs
        self.outputs = backend.outputs
        self.gate = threading.Event()
        self.entered = threading.Event()

    def infer(self, feeds):
        self.entered.set()
        assert self.gate.wait(10), "the test never opened the gate"
        return self._backend.infer(feeds)

    def close(self):
        self._backend.close()


def counting_preprocess(task):
    """Records the first pixel value (the test frame's marker) of every pre-processed frame."""
    calls = []
    original = task.preprocess

    def preprocess(image):
        calls.append(int(image[0, 0, 0]))
        return original(image)

    task.preprocess = preprocess
    return calls


def wait_until(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


class GatedRun:
    """A started worker on a task whose model calls wait for ``gate``; frames go to ``slot``,
    results to ``results``, pre-processed frame markers to ``prepared``."""

    def __init__(self, tmp_path, overlap=True):
        self.task = real_task(tmp_path)
        self.backend = self.task.backend = GatedBackend(self.task.backend)
        self.prepared = counting_preprocess(self.task)
        self.stop = threading.Event()
        self.results = []
        self.worker = InferenceWorker("m", self.task, self.results.append, self.stop,
                                      overlap=overlap)  # fmt: skip
        self.slot = self.worker.attach("cam")

    def __enter__(self):
        self.worker.start()
        return self

    def __exit__(self, *exc):
        self.backend.gate.set()
        self.stop.set()
        assert self.worker.join(5)


def test_overlap_preprocesses_the_next_frame_while_the_model_runs(tmp_path):
    with GatedRun(tmp_path) as run:  # overlap is the default
        threads = sorted(t.name for t in run.worker._threads)
        assert threads == ["infer-m", "post-m", "prep-m"]
        run.slot.put(frame("cam", 0, value=10))
        assert run.backend.entered.wait(5)  # frame 10 is in the model, which is held busy
        run.slot.put(frame("cam", 1, value=11))
        wait_until(lambda: run.prepared == [10, 11])  # pre-processed while the model is busy
        # ...and only one batch waits: later frames stay in the slot, newest kept
        for value in (12, 13, 14):
            run.slot.put(frame("cam", value - 10, value=value))
        time.sleep(0.1)
        assert run.prepared == [10, 11]
        assert len(run.slot) == 1 and run.slot.drops == 2
        run.backend.gate.set()
        wait_until(lambda: len(run.results) == 3)
        assert [r.seq for r in run.results] == [0, 1, 4]  # in order; 2 and 3 were replaced
        assert run.prepared == [10, 11, 14]


def test_without_overlap_one_thread_runs_the_steps_in_turn(tmp_path):
    with GatedRun(tmp_path, overlap=False) as run:
        assert [t.name for t in run.worker._threads] == ["infer-m"]
        run.slot.put(frame("cam", 0, value=20))
        assert run.backend.entered.wait(5)
        run.slot.put(frame("cam", 1, value=21))
        time.sleep(0.1)
        assert run.prepared == [20]  # nothing else happens while the model runs
        run.backend.gate.set()
        wait_until(lambda: len(run.results) == 2)
        assert run.prepared == [20, 21]


def test_overlap_reports_busy_only_while_a_step_runs(tmp_path):
    """The watchdog's probe: busy_since set during the model call, cleared after."""
    with GatedRun(tmp_path) as run:
        stats = run.worker.stats
        assert stats.busy_since is None
        run.slot.put(frame("cam", 0))
        assert run.backend.entered.wait(5)
        assert stats.busy_since is not None and stats.step_started["inference"] is not None
        run.backend.gate.set()
        wait_until(lambda: stats.batches == 1)
        assert stats.busy_since is None


def test_a_hung_post_processing_shows_as_busy_while_the_model_waits_on_it(tmp_path):
    """With overlap a post-processing that never returns stalls the model behind it: the
    watchdog's probe must see it (it would only watch the model call otherwise)."""
    task = real_task(tmp_path)
    release = threading.Event()
    original = task.postprocess

    def hung_postprocess(outputs, size):
        release.wait(10)
        return original(outputs, size)

    task.postprocess = hung_postprocess
    stop = threading.Event()
    worker = InferenceWorker("m", task, lambda r: None, stop)
    slot = worker.attach("cam")
    worker.start()
    try:
        slot.put(frame("cam", 0))
        wait_until(lambda: worker.stats.step_started["postprocess"] is not None)
        stuck_since = worker.stats.busy_since
        for seq in range(1, 4):  # the model finishes these, then waits for the hung step
            slot.put(frame("cam", seq))
            time.sleep(0.05)
        assert worker.stats.busy_since == stuck_since  # stale: the watchdog fires on it
        assert worker.stats.step_started["inference"] is None
    finally:
        release.set()
        stop.set()
    assert worker.join(5)


def test_a_failing_step_is_counted_on_each_thread_and_the_worker_goes_on(tmp_path):
    task = real_task(tmp_path)
    original_pre, original_post = task.preprocess, task.postprocess
    failures = {"pre": 1, "post": 1}

    def preprocess(image):
        if failures["pre"]:
            failures["pre"] -= 1
            raise ValueError("injected pre-processing failure")
        return original_pre(image)

    def postprocess(outputs, size):
        if failures["post"]:
            failures["post"] -= 1
            raise ValueError("injected post-processing failure")
        return original_post(outputs, size)

    task.preprocess, task.postprocess = preprocess, postprocess
    stop = threading.Event()
    results = []
    worker = InferenceWorker("m", task, results.append, stop)
    slot = worker.attach("cam")
    worker.start()
    try:
        for seq in range(3):  # fails in pre-processing, fails in post-processing, delivered
            slot.put(frame("cam", seq))
            wait_until(lambda n=seq + 1: worker.stats.errors + len(results) == n)
    finally:
        stop.set()
    assert worker.join(5)
    assert worker.stats.errors == 2
    assert [r.seq for r in results] == [2]


def test_a_batch_in_the_model_when_stopping_is_still_delivered(tmp_path):
    run = GatedRun(tmp_path)
    run.worker.start()
    run.slot.put(frame("cam", 7))
    assert run.backend.entered.wait(5)
    run.worker.stop()  # this worker alone (a reload replacing its model)
    run.backend.gate.set()
    assert run.worker.join(5)
    assert [r.seq for r in run.results] == [7]
    assert not run.stop.is_set()


def test_a_stream_detached_while_its_frame_is_in_the_model_is_not_brought_back(tmp_path):
    with GatedRun(tmp_path) as run:
        run.slot.put(frame("cam", 3))
        assert run.backend.entered.wait(5)
        run.worker.detach("cam")  # a reload removed the stream meanwhile
        run.backend.gate.set()
        wait_until(lambda: len(run.results) == 1)
        assert run.worker.latest == {} and run.worker.stats.frames == {}

"""Daemon.snapshot(): frozen views of streams, models and workers, consistent while reloads
change the daemon on another thread; and a reload that changes a model replaces it in its
slot while its streams keep running."""

import dataclasses
import os
import threading
import time

import pytest

from edged.daemon import Daemon
from edged.daemon_report import status_line
from edged.pipeline.sinks import ResultSink

from . import onnx_models
from .conftest import REPO
from .test_daemon import make_clip

DIGITS = os.path.join(REPO, "models", "resnet18-digits")
SAFETY_TIMEOUT_S = 30.0


def write(path, clip, version, second_stream):
    model = os.path.join(DIGITS, "resnet18.onnx")
    labels = os.path.join(DIGITS, "labels.txt")
    lines = [
        "models:",
        f"  digits: {{path: {model}, labels: {labels}, version: '{version}'}}",
        f"  spare: {{path: {model}, labels: {labels}}}",
        "streams:",
        f"  cam: {{source: {clip}, model: digits}}",
    ]
    if second_stream:
        lines.append(f"  cam2: {{source: {clip}, model: spare}}")
    lines.append("pipeline: {summary_interval_s: 0, drain_timeout_s: 2}")
    lines.append("metrics: {enabled: false}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def wait_until(predicate, timeout=SAFETY_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def daemon(tmp_path):
    clip = make_clip(str(tmp_path / "clip.avi"), frames=300)
    config = str(tmp_path / "edged.yaml")
    write(config, clip, "1", second_stream=False)
    d = Daemon(config)
    d.clip = clip
    d.start()
    try:
        assert wait_until(lambda: d.snapshot().streams["cam"].inferred > 0)
        yield d
    finally:
        d.shutdown()


def assert_consistent(snapshot):
    config = snapshot.config
    assert set(snapshot.workers) == set(snapshot.models)
    for stream_id, stream in snapshot.streams.items():
        assert stream.stream_id == stream.status.stream_id == stream_id
        assert stream.model in snapshot.models, (stream_id, dict(snapshot.models))
        assert stream_id in snapshot.workers[stream.model].streams
        assert config.streams[stream_id] == stream.config  # the config it runs is the daemon's
    for name, model in snapshot.models.items():
        assert config.models[name] == model.config
    for name, worker in snapshot.workers.items():
        assert all(snapshot.streams[s].model == name for s in worker.streams)


def test_a_snapshot_is_frozen_and_a_later_change_leaves_it_as_it_was(daemon):
    before = daemon.snapshot()
    assert sorted(before.streams) == ["cam"] and sorted(before.models) == ["digits"]
    cam = before.streams["cam"]
    with pytest.raises(AttributeError):
        before.config = None
    with pytest.raises(AttributeError):
        cam.model = "other"
    with pytest.raises(TypeError):
        before.streams["new"] = cam
    with pytest.raises(TypeError):
        del before.models["digits"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.status.state = "ended"
    assert before.results.failures["latest"] == 0
    with pytest.raises(TypeError):
        before.results.failures["latest"] = 1

    write(daemon.config_path, daemon.clip, "1", second_stream=True)
    assert daemon.reload()
    after = daemon.snapshot()
    assert sorted(after.streams) == ["cam", "cam2"] and sorted(after.models) == ["digits", "spare"]
    assert sorted(before.streams) == ["cam"] and sorted(before.models) == ["digits"]
    assert (before.reloads_applied, after.reloads_applied) == (0, 1)
    assert status_line(before).startswith("1 streams") and "1 models" in status_line(before)
    assert status_line(after).startswith("2 streams") and "2 models" in status_line(after)


def test_snapshots_taken_during_reloads_are_consistent(daemon):
    taken = []
    failures = []
    reloading = threading.Event()
    reloading.set()

    def reader():
        while reloading.is_set():
            try:
                snapshot = daemon.snapshot()
                assert_consistent(snapshot)
                taken.append((len(snapshot.streams), len(snapshot.models)))
            except AssertionError as e:  # reported on the test's thread
                failures.append(e)
                return

    thread = threading.Thread(target=reader, name="test-snapshot-reader")
    thread.start()
    try:
        for i in range(6):  # streams and models added, replaced and removed, back and forth
            write(daemon.config_path, daemon.clip, str(i), second_stream=i % 2 == 0)
            assert daemon.reload()
    finally:
        reloading.clear()
        thread.join(SAFETY_TIMEOUT_S)
    assert not failures, failures[0]
    assert daemon.snapshot().reloads_applied == 6
    assert {(1, 1), (2, 2)} <= set(taken)  # the reader saw both shapes of the daemon


def test_a_changed_model_is_replaced_in_its_slot_and_its_stream_keeps_running(daemon):
    running = daemon.streams.get("cam").supervisor
    old_task = daemon.models.task("digits")
    inferred = daemon.snapshot().streams["cam"].inferred
    write(daemon.config_path, daemon.clip, "2", second_stream=False)
    assert daemon.reload()
    snapshot = daemon.snapshot()
    assert snapshot.models["digits"].version == "2"
    assert daemon.models.task("digits") is not old_task
    assert daemon.streams.get("cam").supervisor is running  # not restarted
    assert wait_until(lambda: daemon.snapshot().streams["cam"].inferred > inferred)
    assert snapshot.workers["digits"].errors == 0


class Collected(ResultSink):
    """Every result the daemon delivers, in order."""

    name = "test-collected"

    def __init__(self):
        self.results = []

    def handle(self, result):
        self.results.append(result)


def test_a_classifier_replaced_by_a_detector_turns_its_streams_results_into_detections(tmp_path):
    clip = make_clip(str(tmp_path / "clip.avi"), frames=300)
    detector = onnx_models.write(str(tmp_path / "d.onnx"), onnx_models.detectnet(3, 64, 32))
    config = str(tmp_path / "edged.yaml")
    write(config, clip, "1", second_stream=False)
    collected = Collected()
    daemon = Daemon(config, sinks=[collected])
    daemon.start()
    try:
        assert wait_until(lambda: collected.results)
        running = daemon.streams.get("cam").supervisor
        with open(config) as f:
            text = f.read()
        digits = text.splitlines()[1]
        with open(config, "w") as f:
            f.write(text.replace(digits, f"  digits: {{path: {detector}, task: detection}}"))
        assert daemon.reload()
        assert daemon.snapshot().models["digits"].kind == "detection"
        assert daemon.streams.get("cam").supervisor is running  # the stream ran on
        assert wait_until(lambda: collected.results[-1].task == "detection")
        kinds = [r.task for r in collected.results]
        switched = kinds.index("detection")
        # one switch, no interleaving: every batch ran one task
        assert set(kinds[:switched]) == {"classification"} and set(kinds[switched:]) == {
            "detection"
        }
        assert daemon.snapshot().workers["digits"].errors == 0
    finally:
        daemon.shutdown()


def test_a_model_update_swaps_a_loaded_task_in_and_a_rollback_swaps_the_old_one_back(daemon):
    """The seam model updates use: load, replace (old task back), roll back with the old task."""
    running = daemon.streams.get("cam").supervisor
    first = daemon.models.task("digits")
    update = dataclasses.replace(daemon.config.models["digits"], version="7")
    new = daemon.load_model(update)
    assert daemon.snapshot().models["digits"].version == "1"  # loaded, not serving yet
    assert daemon.replace_model("digits", new) is first
    assert daemon.snapshot().models["digits"].version == "7"
    inferred = daemon.snapshot().streams["cam"].inferred
    assert wait_until(lambda: daemon.snapshot().streams["cam"].inferred > inferred)
    assert daemon.replace_model("digits", first) is new  # probation failed: roll back
    new.backend.close()
    assert daemon.snapshot().models["digits"].version == "1"
    inferred = daemon.snapshot().streams["cam"].inferred
    assert wait_until(lambda: daemon.snapshot().streams["cam"].inferred > inferred)
    assert daemon.streams.get("cam").supervisor is running
    assert daemon.snapshot().workers["digits"].errors == 0

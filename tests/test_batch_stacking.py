"""A batch is stacked once, on the pre-processing thread: the worker hands the model one
N x 3 x H x W array, and Task.infer passes it to the backend without another copy."""

import threading
import time

import numpy as np

from edged.config import build_config
from edged.pipeline.worker import InferenceWorker
from edged.sources.frame import Frame
from edged.tasks.base import stack_batch
from edged.tasks.loader import load_task

from . import onnx_models


def real_task(tmp_path, batch=None):
    path = onnx_models.write(str(tmp_path / "c.onnx"), onnx_models.classifier(3, batch=batch))
    return load_task(build_config({"models": {"m": {"path": path, "threads": 1}}}).models["m"])


def frame(stream, seq, value):
    image = np.full((24, 32, 3), value, np.uint8)
    return Frame(stream, seq, time.monotonic(), time.time(), (32, 24), image)


class RecordingBackend:
    """A real backend that keeps every input array it was given (to check for copies)."""

    def __init__(self, backend):
        self._backend = backend
        self.name, self.inputs, self.outputs = backend.name, backend.inputs, backend.outputs
        self.fed = []

    def infer(self, feeds):
        self.fed.extend(feeds.values())
        return self._backend.infer(feeds)

    def close(self):
        self._backend.close()


def test_stack_batch_equals_the_tensors_stacked(tmp_path):
    task = real_task(tmp_path)
    images = [np.full((24, 32, 3), v, np.uint8) for v in (10, 120, 250)]
    stacked = stack_batch(images, task.preprocess)
    expected = np.stack([task.preprocess(i) for i in images])
    assert stacked.shape == (3, 3, task.height, task.width)
    assert stacked.dtype == expected.dtype
    np.testing.assert_array_equal(stacked, expected)


def test_one_frame_is_a_view_not_a_copy():
    tensor = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    stacked = stack_batch([np.zeros((1, 1, 3), np.uint8)], lambda image: tensor)
    assert stacked.shape == (1, 2, 3, 4)
    assert np.shares_memory(stacked, tensor)


def test_a_stacked_batch_reaches_the_backend_as_is_with_the_outputs_of_a_list(tmp_path):
    task = real_task(tmp_path)
    images = [np.full((24, 32, 3), v, np.uint8) for v in (0, 200, 90, 255)]
    from_list = task.infer([task.preprocess(i) for i in images])
    task.backend = recorder = RecordingBackend(task.backend)
    stacked = stack_batch(images, task.preprocess)
    from_array = task.infer(stacked)
    assert len(recorder.fed) == 1 and recorder.fed[0] is stacked  # one call, no copy
    for a, b in zip(from_list, from_array):
        np.testing.assert_array_equal(a["output_0"], b["output_0"])


def test_a_fixed_batch_model_still_runs_a_stacked_batch_one_frame_per_call(tmp_path):
    task = real_task(tmp_path, batch=1)
    task.backend = recorder = RecordingBackend(task.backend)
    images = [np.full((24, 32, 3), v, np.uint8) for v in (0, 255)]
    outputs = task.infer(stack_batch(images, task.preprocess))
    assert [a.shape[0] for a in recorder.fed] == [1, 1]
    assert len(outputs) == 2 and outputs[0]["output_0"].shape == (3,)


def test_the_worker_prepares_one_array_per_batch(tmp_path):
    results = []
    worker = InferenceWorker("m", real_task(tmp_path), results.append, threading.Event(),
                             max_batch=3)  # fmt: skip
    frames = [frame(s, 0, v) for s, v in (("a", 0), ("b", 120), ("c", 255))]
    batch = worker._prepare(frames)
    assert isinstance(batch.tensors, np.ndarray)
    assert batch.tensors.shape[0] == 3
    worker._finish(worker._infer(batch))
    assert sorted(r.stream_id for r in results) == ["a", "b", "c"]
    # blue (BGR 255) scores class 2 highest in onnx_models.classifier, black ties
    assert [r.items[0].class_id for r in results if r.stream_id == "c"] == [2]

"""A camera's own pixel format through the worker's CUDA path on a real GPU (marker ``gpu``).

Frames of real pictures (the demo clip) delivered by :class:`~tests.fake_csi.FakeCsiCamera`
as BGRx and I420 go through the real supervisor and the daemon's worker, whose CUDA
pre-processor gets each frame's format from the frame (no CPU conversion), into the demo
classifier. The model inputs equal those of the same picture in BGR: BGRx within the
kernel's float32 tolerance (1e-4); I420 within one 8-bit level (in model-input units) of the
BGR picture OpenCV makes of it, since OpenCV rounds each converted pixel to 8 bits where the
kernel keeps the float. The results: the same top class, confidences within 1e-3 (BGRx)
and 0.02 (I420).
A worker that lost the format would read the 2-D I420 array as a grey frame and fail.
"""

import os
import threading

import numpy as np
import pytest

from edged.config import build_config
from edged.pipeline import preprocessors
from edged.pipeline.worker import InferenceWorker
from edged.pixels import to_bgr
from edged.tasks.loader import load_task

from .conftest import REPO
from .fake_csi import capture
from .frames import from_bgr
from .gpu_support import requires_gpu

pytestmark = requires_gpu

CLASSIFIER = os.path.join(REPO, "models", "resnet18-digits")
FLOAT32 = 1e-4  # the kernel's float32 tolerance against the numpy reference


class Recording:
    """The real CUDA pre-processor, keeping a copy of every batch it hands the model."""

    def __init__(self, pre):
        self._pre = pre
        self.name = pre.name
        self.tensors = []
        self.formats = []

    def run(self, frames, formats=None):
        out = self._pre.run(frames, formats)
        self.formats.append(list(formats or []))
        self.tensors.extend(np.array(t, copy=True) for t in out)
        return out

    def __getattr__(self, name):
        return getattr(self._pre, name)


def _pictures(count):
    import cv2

    cap = cv2.VideoCapture(os.path.join(REPO, "tests", "data", "vtest", "holdout.mp4"))
    pictures = []
    while len(pictures) < count:
        ok, image = cap.read()
        if not ok:
            break
        h, w = image.shape[:2]
        pictures.append(np.ascontiguousarray(image[: h // 2 * 2, : w // 2 * 2]))
    cap.release()
    assert len(pictures) == count, "too few frames in the demo clip"
    return pictures


@pytest.fixture(scope="module")
def task():
    model = {
        "path": os.path.join(CLASSIFIER, "resnet18.onnx"),
        "labels": os.path.join(CLASSIFIER, "labels.txt"),
        "task": "classification",
    }
    loaded = load_task(build_config({"models": {"digits": model}}).models["digits"])
    yield loaded
    loaded.backend.close()


def _through_the_worker(task, fmt, pictures):
    from edged.gpu.preprocessor import CudaPreprocessor

    pre = Recording(CudaPreprocessor(preprocessors.contract_of(task), max_batch=1))
    worker = InferenceWorker("digits", task, lambda r: None, threading.Event(), preprocessor=pre)
    try:
        frames = capture(worker, fmt, pictures)
        results = [worker.process([f])[0] for f in frames]
    finally:
        pre.close()
    assert pre.formats == [[fmt]] * len(pictures), "the worker did not pass the frames' format"
    return pre.tensors, [r.items for r in results]


def _same_results(got, want, tolerance):
    """The same top class; every class both list scored within ``tolerance`` (a near tie
    further down the top-k may swap places)."""
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g[0].class_id == w[0].class_id
        theirs = {i.class_id: i.confidence for i in w}
        for item in g:
            if item.class_id in theirs:
                assert abs(item.confidence - theirs[item.class_id]) <= tolerance


def test_bgrx_frames_through_the_workers_cuda_path_equal_bgr_frames(task):
    pictures = _pictures(3)
    want_tensors, want_items = _through_the_worker(task, "bgr", pictures)
    tensors, items = _through_the_worker(task, "bgrx", pictures)
    for got, want in zip(tensors, want_tensors):
        assert np.abs(got - want).max() <= FLOAT32
    _same_results(items, want_items, 1e-3)


def test_i420_frames_through_the_workers_cuda_path_equal_the_same_picture_in_bgr(task):
    pictures = _pictures(3)
    as_bgr = [to_bgr(from_bgr(p, "i420"), "i420") for p in pictures]  # what OpenCV makes of it
    want_tensors, want_items = _through_the_worker(task, "bgr", as_bgr)
    tensors, items = _through_the_worker(task, "i420", pictures)
    a, _ = preprocessors.contract_of(task).affine()
    level = float(np.max(np.abs(a)))  # one 8-bit level in model-input units
    for got, want in zip(tensors, want_tensors):
        err = float(np.abs(got - want).max())
        assert err <= level + FLOAT32, f"max abs error {err} > one level ({level})"
    _same_results(items, want_items, 0.02)

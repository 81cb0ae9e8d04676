"""DetectNet_v2 candidates selected on the GPU, checked on the CPU.

``edged_detectnet_select`` runs on the host through tests/cuda_host (g++, one loop iteration per
CUDA thread) against numpy; the sparse grids rebuilt from its survivors give every compat the
detections the full grids give, NaN/Inf still seen by the worker's check; and the worker wiring
(TensorRT outputs read on the device) with a numpy stand-in for the GPU selector over the FAKE
CUDA memory of tests/fake_tensorrt.py. The GPU itself: tests/test_gpu_hotpath.py.
"""

import ctypes
import shutil
import threading

import numpy as np
import pytest

from edged.backends.tensorrt_backend import TensorRTBackend
from edged.config import build_config
from edged.gpu.select import DeviceGridOutputs, Survivors, grid_spec, sparse_grids
from edged.pipeline import preprocessors
from edged.pipeline.worker import InferenceWorker, _finite
from edged.tasks.detection import DecodeParams
from edged.tasks.detectnet import DetectNetV2Task

from .fake_tensorrt import TRT10, FakeCuda, make_trt
from .test_gpu_kernels_host import lib  # noqa: F401 - the g++-built kernels (a fixture)
from .test_hotpath_wiring import DevicePreprocessorStandIn
from .test_pipeline import frame


def numpy_select(cov, bbox, thresholds):
    """What the kernel keeps of one image, in cell order: cells, values, non-finite count."""
    classes, gh, gw = cov.shape
    plane = gh * gw
    flat_cov = cov.reshape(classes, plane)
    terms = bbox.reshape(classes, 4, plane)
    with np.errstate(invalid="ignore"):
        c, rc = np.nonzero(flat_cov >= thresholds[:, None])
    values = np.concatenate([flat_cov[c, rc][:, None], terms[c, :, rc]], axis=1)
    bad = int((~np.isfinite(cov)).sum() + (~np.isfinite(bbox)).sum())
    return Survivors((c * plane + rc).astype(np.int32), values.astype(np.float32), bad)


def grids(rng, classes=3, gh=9, gw=13, nan=True):
    cov = rng.random((classes, gh, gw), dtype=np.float32) ** 3
    bbox = (rng.standard_normal((4 * classes, gh, gw)) * 0.6).astype(np.float32)
    if nan:
        cov[0, 1, 2] = np.nan  # never a candidate: only the count shows it
        bbox[5, 4, 4] = np.inf
    return cov, bbox


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ (Debian: g++)")
def test_select_kernel_on_the_host_keeps_exactly_the_cells_at_threshold(lib):  # noqa: F811
    rng = np.random.default_rng(31)
    images, (classes, gh, gw) = 2, (3, 9, 13)
    pairs = [grids(rng), grids(rng, nan=False)]
    cov = np.stack([p[0] for p in pairs])
    bbox = np.stack([p[1] for p in pairs])
    thresholds = np.array([0.4, 0.2, np.inf], np.float32)  # an ignored class: +inf
    cells_per_image = classes * gh * gw
    counts = np.zeros(images, np.uint32)
    nonfinite = np.zeros(images, np.uint32)
    cells = np.zeros(images * cells_per_image, np.int32)
    values = np.zeros((images * cells_per_image, 5), np.float32)
    ptr = lambda a: ctypes.c_void_p(a.ctypes.data)  # noqa: E731
    lib.host_select(ptr(cov), ptr(bbox), ptr(thresholds), classes, gh, gw, images, ptr(counts),
                    ptr(nonfinite), ptr(cells), ptr(values))  # fmt: skip
    for i in range(images):
        want = numpy_select(cov[i], bbox[i], thresholds)
        n = int(counts[i])
        base = i * cells_per_image
        order = np.argsort(cells[base : base + n])
        assert n == len(want.cells) > 5
        np.testing.assert_array_equal(cells[base : base + n][order], want.cells)
        np.testing.assert_array_equal(values[base : base + n][order], want.values)
        assert int(nonfinite[i]) == want.nonfinite == (2 if i == 0 else 0)


@pytest.mark.parametrize("compat", ["deepstream", "tao"])
@pytest.mark.parametrize("nan", [False, True], ids=["finite", "nan-inf"])
def test_sparse_grids_give_every_compat_the_detections_of_the_full_grids(compat, nan):
    from edged.tasks.clustering import ClusterParams
    from edged.tasks.detection import DetectNetV2Postprocessor

    rng = np.random.default_rng(7 + nan)
    params = DecodeParams(thresholds=(0.3, 0.2, 0.5), min_width=2.0, min_height=2.0)
    post = DetectNetV2Postprocessor(["a", "b", "c"], params, [ClusterParams()], compat)
    for _ in range(5):
        cov, bbox = grids(rng, nan=nan)
        if nan:
            bbox[2, 3, 3] = np.nan  # a term of some cell, kept or not
        found = numpy_select(cov, bbox, params.class_thresholds(3))
        sparse_cov, sparse_bbox = sparse_grids(found, cov.shape)
        full = post(cov, bbox, 1280, 720, 208, 144)
        assert full, "no detection to compare"
        assert post(sparse_cov, sparse_bbox, 1280, 720, 208, 144) == full
        outputs = {"cov": sparse_cov, "bbox": sparse_bbox}
        assert _finite(outputs) is _finite({"cov": cov, "bbox": bbox}) is (not nan)


# -- the worker: TensorRT outputs read on the device ------------------------------------------

IO = {
    "inputs": [("input_1", (-1, 3, 32, 48))],
    "outputs": [("output_cov/Sigmoid", (-1, 2, 2, 3)), ("output_bbox/BiasAdd", (-1, 8, 2, 3))],
    "profile_max": {"input_1": (2, 3, 32, 48)},
}


class NumpySelectorStandIn:
    """The GPU selector's contract (select(cov, bbox, count) -> Survivors per image) computed
    with numpy over the FAKE CUDA memory: a stand-in for ``GpuGridSelector``."""

    def __init__(self, cuda, thresholds, shape):
        self.cuda, self.thresholds, self.shape = cuda, thresholds, shape
        self.calls = 0
        self.closed = 0

    def select(self, cov, bbox, count):
        self.calls += 1
        classes, gh, gw = self.shape
        covs = self.cuda.read(cov, (count, classes, gh, gw))
        bboxes = self.cuda.read(bbox, (count, 4 * classes, gh, gw))
        return [numpy_select(c, b, self.thresholds) for c, b in zip(covs, bboxes)]

    def close(self):
        self.closed += 1


def grid_engine_task(tmp_path):
    """A DetectNet_v2 task on TensorRTBackend over the FAKE TensorRT, whose FAKE execution
    writes grids drawn from the input (so each frame has its own detections)."""
    cuda = FakeCuda()
    trt = make_trt(io=IO, cuda=cuda, **TRT10)
    backend = TensorRTBackend(b"FAKEENGINE{}", "/cache/entry", trt=trt, cuda=cuda)
    context = backend._context

    def run(addresses, batch):
        x = cuda.read(addresses[0], context.shapes["input_1"])
        covs, bboxes = [], []
        for image in x:
            cov, bbox = grids(np.random.default_rng(int(image.sum() * 1000) % 2**32), 2, 2, 3,
                              nan=False)  # fmt: skip
            cov[0, 0, 0] = 0.9  # at least one detection
            bbox[:4, 0, 0] = 0.5
            covs.append(cov)
            bboxes.append(bbox)
        cuda.write(addresses[1], np.stack(covs))  # FAKE memory: one array per allocation
        cuda.write(addresses[2], np.stack(bboxes))
        return True

    context._run = run
    config = build_config({"models": {"m": {"path": str(tmp_path / "m.onnx"),
                                            "task": "detection"}}}).models["m"]  # fmt: skip
    return DetectNetV2Task(backend, config, ["person", "bag"]), cuda


def test_worker_reads_detector_outputs_on_the_device_with_the_host_results(tmp_path):
    task, cuda = grid_engine_task(tmp_path)
    spec = grid_spec(task)
    assert spec.shape == (2, 2, 3) and spec.coverage == "output_cov/Sigmoid"
    selector = NumpySelectorStandIn(cuda, spec.thresholds, spec.shape)
    reader = DeviceGridOutputs(spec, 2, selector=selector)
    images = [frame("cam", i, value=30 * i + 5) for i in range(4)]

    def results(feed):
        got = []
        worker = InferenceWorker("m", task, got.append, threading.Event(), max_batch=2,
                                 preprocessor=feed)  # fmt: skip
        worker.process(images[:2])
        worker.process(images[2:])
        return [[d.to_dict() for d in r.items] for r in got]

    pre = DevicePreprocessorStandIn(task.contract, cuda, [])
    on_host = results(preprocessors.DeviceFeed(pre, task, 2))  # whole outputs copied back
    on_device = results(preprocessors.DeviceFeed(pre, task, 2, reader))
    assert selector.calls == 2
    assert on_device == on_host and all(on_host)
    reader.close()
    assert selector.closed == 1 and cuda.depth == 0


def test_grids_of_another_size_or_type_are_copied_back_whole(tmp_path):
    from edged.backends.base import TensorSpec

    task, _ = grid_engine_task(tmp_path)
    assert grid_spec(task) is not None
    task.bbox = TensorSpec(task.bbox.name, (None, 4, 2, 3), np.float32)  # not 4 x classes
    assert grid_spec(task) is None
    task, _ = grid_engine_task(tmp_path)
    task.coverage = TensorSpec(task.coverage.name, (None, 2, None, 3), np.float32)
    assert grid_spec(task) is None
    task, _ = grid_engine_task(tmp_path)
    task.coverage = TensorSpec(task.coverage.name, (None, 2, 2, 3), np.float16)
    assert grid_spec(task) is None

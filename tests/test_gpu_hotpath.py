"""The CUDA hot path as the daemon runs it, on a real GPU (marker ``gpu``).

TensorRT cannot execute on the lent GPU (no TensorRT runtime for it on the registry), so
``OrtExecutionStandIn`` -- a STAND-IN FOR TENSORRT EXECUTION, not TensorRT -- plays the engine's
execution context: its execute call copies the input device buffer down, runs the demo model
with ONNX Runtime and writes the outputs into the output device buffers. Everything around it
is real and on the GPU: TensorRTBackend's buffers, input sets and waits through PycudaRuntime,
CudaPreprocessor.run_device writing into the engine's input buffer, infer_prefilled, and the
worker with ``overlap`` on. Results must equal the CPU path on the demo clip's frames (detector:
same classes, boxes within 1 px) and the digits (classifier: same top-1). Also: the host path's
ring of page-locked outputs gives the numpy reference for 10 consecutive batches; the GPU
candidate selection (edged/gpu/select.py) against numpy, NaN and infinity counted.
"""

import glob
import os
import threading
import time

import numpy as np
import pytest

from edged.config import build_config
from edged.pipeline import preprocessors
from edged.pipeline.worker import InferenceWorker
from edged.sources.frame import Frame
from edged.tasks.loader import load_task

from .conftest import REPO
from .fake_tensorrt import TRT10, FakeContext, make_engine, make_trt
from .gpu_support import requires_gpu
from .test_gpu_cuda import _real_frames

pytestmark = requires_gpu

SAFETY_TIMEOUT_S = 120
MAX_BATCH = 2
DETECTOR = os.path.join(REPO, "models", "peoplenet-demo")
CLASSIFIER = os.path.join(REPO, "models", "resnet18-digits")


class OrtExecutionStandIn(FakeContext):
    """STAND-IN FOR TENSORRT EXECUTION: the FAKE execution context of tests/fake_tensorrt.py
    (shapes, tensor addresses) whose execute runs the ONNX model on the real device buffers.
    The demo models take batch 1: it runs them once per image of the batch."""

    def __init__(self, trt, tensors, session, cuda):
        super().__init__(trt, tensors, implicit=False)
        self.session = session
        self.cuda = cuda  # pycuda.driver; the backend has the context pushed around execute

    def _run(self, addresses, batch):
        by_name = {t[0]: (t, a) for t, a in zip(self.tensors, addresses)}
        (name,) = [t[0] for t in self.tensors if t[2]]
        shape = self.shapes[name]
        x = np.empty(shape, np.float32)
        self.cuda.memcpy_dtoh(x, int(by_name[name][1]))
        names = [o.name for o in self.session.get_outputs()]
        outputs = [self.session.run(names, {name: x[i : i + 1]}) for i in range(shape[0])]
        for k, out_name in enumerate(names):
            stacked = np.ascontiguousarray(np.concatenate([o[k] for o in outputs]), np.float32)
            self.cuda.memcpy_htod(int(by_name[out_name][1]), stacked)
        return True


def stand_in_trt(model_path):
    """A FAKE ``tensorrt`` module whose engines have the ONNX model's tensors (batch dynamic,
    at most MAX_BATCH) and execute through :class:`OrtExecutionStandIn`."""
    import onnxruntime as ort

    from edged.cudacontext import shared_context

    session = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    dims = lambda arg: (-1,) + tuple(int(d) for d in arg.shape[1:])  # noqa: E731
    io = {
        "inputs": [(i.name, dims(i)) for i in session.get_inputs()],
        "outputs": [(o.name, dims(o)) for o in session.get_outputs()],
        "profile_max": {i.name: (MAX_BATCH,) + dims(i)[1:] for i in session.get_inputs()},
    }
    trt = make_trt(io=io, **TRT10)
    tensors = [(n, s, True) for n, s in io["inputs"]] + [(n, s, False) for n, s in io["outputs"]]
    cuda = shared_context().cuda

    class Runtime(trt.Runtime):
        def deserialize_cuda_engine(self, data):
            engine = make_engine(trt)
            engine.create_execution_context = lambda: OrtExecutionStandIn(
                trt, tensors, session, cuda
            )
            return engine

    trt.Runtime = Runtime
    return trt


def tasks(model, labels, kind):
    """(the CPU task on ONNX Runtime, the same model on TensorRTBackend + the stand-in)."""
    from edged.backends.cudaruntime import PycudaRuntime
    from edged.backends.tensorrt_backend import TensorRTBackend

    config = build_config({"models": {"m": {"path": model, "labels": labels, "task": kind}}})
    config = config.models["m"]
    cpu = load_task(config)
    backend = TensorRTBackend(b"FAKEENGINE{}", "stand-in", trt=stand_in_trt(model),
                              cuda=PycudaRuntime())  # fmt: skip
    return cpu, type(cpu)(backend, config, cpu.labels)


def run_worker(task, images, reads_on_device):
    """Every image through a started worker (overlap on, 2 streams, batches of up to 2) with the
    CUDA pre-processor; returns {seq: result}. Each pair is put once the worker has taken the
    last, which it does while the batch before is in inference: nothing drops, steps overlap."""
    pre = preprocessors.for_task("cuda", task, MAX_BATCH, "m")
    assert isinstance(pre, preprocessors.DeviceFeed), pre  # written into the engine's input
    assert (pre.reader is not None) is reads_on_device  # detector: GPU selection of candidates
    results, stop = [], threading.Event()
    worker = InferenceWorker("m", task, results.append, stop, MAX_BATCH, overlap=True,
                             preprocessor=pre)  # fmt: skip
    slots = {s: worker.attach(s) for s in ("a", "b")}
    worker.start()
    try:
        for seq, image in enumerate(images):
            stream = "ab"[seq % 2]
            size = (image.shape[1], image.shape[0])
            slots[stream].put(Frame(stream, seq, time.monotonic(), time.time(), size, image))
            if stream == "b" or seq == len(images) - 1:
                _wait(lambda: not any(len(s) for s in slots.values()))
        _wait(lambda: len(results) == len(images))
    finally:
        stop.set()
        assert worker.join(SAFETY_TIMEOUT_S)
        task.backend.close()
    assert worker.stats.errors == 0
    assert sum(s.drops for s in slots.values()) == 0
    return {r.seq: r for r in results}


def _wait(predicate):
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, "the worker did not get there in time"
        time.sleep(0.002)


def test_detector_on_the_tensorrt_path_equals_the_cpu_path_on_the_demo_clip():
    cpu, gpu = tasks(os.path.join(DETECTOR, "peoplenet_demo.onnx"),
                     os.path.join(DETECTOR, "labels.txt"), "detection")  # fmt: skip
    images = _real_frames(24)
    got = run_worker(gpu, images, reads_on_device=True)
    assert sorted(got) == list(range(len(images)))
    total = 0
    for seq, result in sorted(got.items()):
        want = [d.to_dict() for d in cpu.run([images[seq]])[0]]
        have = [d.to_dict() for d in result.items]
        assert len(have) == len(want), (seq, want, have)
        left = list(have)
        for w in want:  # each CPU box has one of the same class within 1 px
            near = [h for h in left if h["class_id"] == w["class_id"]]
            assert near, (seq, w, have)
            best = min(near, key=lambda h: np.abs(np.subtract(w["bbox"], h["bbox"])).max())
            assert np.abs(np.subtract(w["bbox"], best["bbox"])).max() <= 1.0, (seq, w, best)
            left.remove(best)
            total += 1
    assert total > 0, "no detection to compare on the demo clip"


def test_classifier_on_the_tensorrt_path_equals_the_cpu_path_on_the_digits():
    import cv2

    cpu, gpu = tasks(os.path.join(CLASSIFIER, "resnet18.onnx"),
                     os.path.join(CLASSIFIER, "labels.txt"), "classification")  # fmt: skip
    paths = sorted(glob.glob(os.path.join(REPO, "tests", "data", "digits", "test", "**", "*.*"),
                             recursive=True))[:24]  # fmt: skip
    images = [cv2.imread(p) for p in paths]
    images = [i for i in images if i is not None]
    assert images, "no digit image read"
    got = run_worker(gpu, images, reads_on_device=False)
    assert sorted(got) == list(range(len(images)))
    for seq, result in got.items():
        want = cpu.run([images[seq]])[0]
        assert result.items[0].label == want[0].label, (paths[seq], want, result.items)


@pytest.mark.parametrize("fmt", ["bgr", "nv12"])
def test_host_ring_gives_the_reference_for_ten_consecutive_batches(fmt):
    """Each batch ``run`` hands back stays as the reference says until HOST_RING - 1 more
    batches have been run (nearest resize: bit-identical)."""
    from edged.gpu import reference
    from edged.gpu.preprocessor import HOST_RING, CudaPreprocessor
    from edged.tasks.contract import InputContract

    from .frames import from_bgr

    contract = InputContract(320, 192, channel_order="rgb", scale=1 / 255.0, resize="nearest")
    frames = [from_bgr(f, fmt) for f in _real_frames(2 * 10)]
    pre = CudaPreprocessor(contract, max_batch=2)
    live = []  # (batch handed back, its reference), the last HOST_RING of them
    try:
        for b in range(10):
            batch = frames[2 * b : 2 * b + 2]
            out = pre.run(batch, [fmt, fmt])
            want = np.stack([reference.preprocess(f, fmt, contract) for f in batch])
            live = (live + [(out, want)])[-HOST_RING:]
            for i, (held, ref) in enumerate(live):
                np.testing.assert_array_equal(held, ref, err_msg=f"batch {b}, held {i}")
    finally:
        pre.close()


def test_pycuda_runtime_wait_returns_once_the_stream_is_done():
    """PycudaRuntime.wait (a blocking-sync event) covers every copy queued before it."""
    from edged.backends.cudaruntime import PycudaRuntime

    runtime = PycudaRuntime()
    data = np.random.default_rng(3).random(8 << 20, dtype=np.float32)  # 32 MiB
    with runtime.activated():
        host_in = runtime.pagelocked(data.shape, data.dtype)
        host_out = runtime.pagelocked(data.shape, data.dtype)
        host_in[...] = data
        device = runtime.device_alloc(data.nbytes)
        stream = runtime.stream()
        try:
            for _ in range(3):
                host_out[...] = 0
                runtime.htod_async(device, host_in, stream)
                runtime.dtoh_async(host_out, device, stream)
                runtime.wait(stream)
                np.testing.assert_array_equal(host_out, data)
        finally:
            device.free()
            del host_in, host_out, stream  # freed with the context pushed


def test_gpu_selection_keeps_the_cells_numpy_keeps_and_counts_nan():
    from edged.cudacontext import shared_context
    from edged.gpu.select import GpuGridSelector

    from .test_gpu_select import grids, numpy_select

    rng = np.random.default_rng(41)
    pairs = [grids(rng, 3, 34, 60), grids(rng, 3, 34, 60, nan=False)]
    cov = np.ascontiguousarray(np.stack([p[0] for p in pairs]))
    bbox = np.ascontiguousarray(np.stack([p[1] for p in pairs]))
    thresholds = np.array([0.4, 0.2, 0.3], np.float32)
    ctx = shared_context()
    selector = GpuGridSelector(thresholds, (3, 34, 60), max_batch=2, context=ctx)
    try:
        with ctx.activated():
            d_cov, d_bbox = ctx.cuda.to_device(cov), ctx.cuda.to_device(bbox)
        try:
            for _ in range(3):  # buffers reused call after call
                found = selector.select(int(d_cov), int(d_bbox), 2)
                for i, got in enumerate(found):
                    want = numpy_select(cov[i], bbox[i], thresholds)
                    order = np.argsort(got.cells)
                    np.testing.assert_array_equal(got.cells[order], want.cells)
                    np.testing.assert_array_equal(got.values[order], want.values)
                    assert got.nonfinite == want.nonfinite == (2 if i == 0 else 0)
        finally:
            with ctx.activated():
                d_cov.free()
                d_bbox.free()
    finally:
        selector.close()


HOTPATH_SCRIPT = """
import gc
from tests import test_gpu_hotpath as t
t.test_detector_on_the_tensorrt_path_equals_the_cpu_path_on_the_demo_clip()
t.test_host_ring_gives_the_reference_for_ten_consecutive_batches("nv12")
gc.collect()
print("ok")
"""


def test_no_pycuda_cleanup_warning_after_the_hot_path():
    """Input sets, host ring, blocking events and the selector are freed with the context
    pushed: a pycuda object freed without it leaks and warns at exit."""
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", HOTPATH_SCRIPT], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok"), out.stdout
    assert "could not be cleaned up" not in out.stderr, out.stderr
    assert "context stack" not in out.stderr.lower(), out.stderr

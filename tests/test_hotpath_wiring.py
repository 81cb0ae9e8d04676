"""The CUDA hot path's buffer reuse through the worker, on the CPU (no GPU here).

Two schemes hand a batch on without copying it, and both reuse buffers: the CUDA
pre-processor's ring of page-locked host outputs (``HOST_RING``, edged/gpu/preprocessor.py)
and a TensorRT backend's input sets that the pre-processor writes on the device
(``INPUT_SETS``, edged/backends/tensorrt_backend.py). With ``pipeline.overlap`` the next batch
is written while the last is in inference; these tests hold the model busy (a gate) at the
worst moment and check that every inference still reads its own frame. Each has a control
with a single buffer, which must fail the same check: the test can see an overwrite.

Stand-ins, named as such: ``RingPreprocessorStandIn`` reuses buffers exactly as
``CudaPreprocessor.run`` does but fills them with the numpy path; ``DevicePreprocessorStandIn``
writes like ``run_device`` into the FAKE CUDA memory of tests/fake_tensorrt.py, whose FAKE
TensorRT execution context stands in for TensorRT (it cannot execute here).
"""

import threading
import time

import numpy as np
import pytest

from edged.backends.base import PrefilledBatch
from edged.backends.tensorrt_backend import INPUT_SETS, TensorRTBackend
from edged.config import build_config
from edged.errors import BackendError
from edged.gpu.preprocessor import HOST_RING
from edged.pipeline import preprocessors
from edged.pipeline.worker import InferenceWorker
from edged.tasks.classification import ClassificationTask

from .fake_tensorrt import TRT10, TRT80, FakeCuda, make_trt
from .test_pipeline import frame, real_task, wait_until

SAFETY_TIMEOUT_S = 10


class RingPreprocessorStandIn:
    """CudaPreprocessor.run's buffer reuse (``ring`` buffers in turn, a view handed on), with
    the numpy path computing the values: a stand-in for the CUDA kernel."""

    name = "cuda"

    def __init__(self, contract, max_batch, ring):
        self.contract = contract
        self._cpu = preprocessors.CpuPreprocessor(contract, max_batch)
        self._ring = [np.zeros((max_batch, 3, contract.height, contract.width), np.float32)
                      for _ in range(ring)]  # fmt: skip
        self._next = 0
        self.markers = []
        self.closed = 0

    def run(self, frames, formats=None):
        out = self._ring[self._next][: len(frames)]
        self._next = (self._next + 1) % len(self._ring)
        out[...] = self._cpu.run(frames)
        self.markers.append(int(frames[0][0, 0, 0]))
        return out

    def close(self):
        self.closed += 1


class ReadingGate:
    """Wraps a backend: each call waits for ``gate``, then records what its input holds
    (read at the moment the model would read it) and runs the real model."""

    def __init__(self, backend):
        self._backend = backend
        self.name = backend.name
        self.inputs = backend.inputs
        self.outputs = backend.outputs
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.seen = []

    def infer(self, feeds):
        self.entered.set()
        assert self.gate.wait(SAFETY_TIMEOUT_S), "the test never opened the gate"
        (x,) = feeds.values()
        self.seen.append(np.array(x[0], copy=True))
        return self._backend.infer(feeds)

    def close(self):
        self._backend.close()


def _drive(worker, slot, gate_owner, prepared_count, results, markers):
    """Model held on the first frame, the second pre-processed and waiting, the third in the
    slot; then the gate opens. Returns the markers in the order the model ran them."""
    slot.put(frame("cam", 0, value=markers[0]))
    assert gate_owner.entered.wait(SAFETY_TIMEOUT_S)
    slot.put(frame("cam", 1, value=markers[1]))
    wait_until(lambda: prepared_count() == 2)
    slot.put(frame("cam", 2, value=markers[2]))
    time.sleep(0.05)  # the pre-processing thread must not take it while a batch waits
    assert prepared_count() == 2
    gate_owner.gate.set()
    wait_until(lambda: len(results) == 3, SAFETY_TIMEOUT_S)
    slot.put(frame("cam", 3, value=markers[3]))
    wait_until(lambda: len(results) == 4, SAFETY_TIMEOUT_S)


@pytest.mark.parametrize("ring, intact", [(HOST_RING, True), (1, False)],
                         ids=["HOST_RING", "control-ring-of-1"])  # fmt: skip
def test_ring_of_host_buffers_is_never_overwritten_while_a_batch_uses_it(tmp_path, ring, intact):
    task = real_task(tmp_path)
    backend = task.backend = ReadingGate(task.backend)
    contract = preprocessors.contract_of(task)
    pre = RingPreprocessorStandIn(contract, 1, ring)
    results, stop = [], threading.Event()
    worker = InferenceWorker("m", task, results.append, stop, overlap=True, preprocessor=pre)
    slot = worker.attach("cam")
    worker.start()
    markers = [10, 60, 120, 200]
    try:
        _drive(worker, slot, backend, lambda: len(pre.markers), results, markers)
    finally:
        backend.gate.set()
        stop.set()
        assert worker.join(SAFETY_TIMEOUT_S)
    assert [r.seq for r in results] == [0, 1, 2, 3]
    cpu = preprocessors.CpuPreprocessor(contract)
    want = [cpu.run([frame("cam", 0, value=m).image])[0] for m in markers]
    own = [np.array_equal(got, w) for got, w in zip(backend.seen, want)]
    assert all(own) is intact, f"each inference read its own frame: {own}"
    assert pre.closed == 1


def test_task_infer_takes_a_stacked_batch_as_it_is(tmp_path):
    """The pre-processor's N x 3 x H x W batch goes to the backend without np.stack."""
    task = real_task(tmp_path, batch=None)
    fed = []
    original = task.backend.infer
    task.backend.infer = lambda feeds: fed.append(feeds) or original(feeds)
    batch = preprocessors.CpuPreprocessor(task.contract, 3).run(
        [frame("cam", i, value=40 * i).image for i in range(3)]
    )
    by_batch = task.infer(batch)
    (x,) = fed[0].values()
    assert x is batch  # the same array: no copy
    by_list = task.infer(list(batch))  # the CPU path's list form still works
    for a, b in zip(by_batch, by_list):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


# -- TensorRT: batches written into the engine's input buffers -------------------------------

IO = {
    "inputs": [("input_0", (-1, 3, 8, 8))],
    "outputs": [("output_0", (-1, 4))],
    "profile_max": {"input_0": (2, 3, 8, 8)},
}


class DevicePreprocessorStandIn:
    """Writes like CudaPreprocessor.run_device: the numpy path's batch into (FAKE) device memory
    at ``dst``; logs each write for the ordering check."""

    name = "cuda"

    def __init__(self, contract, cuda, log):
        self.contract = contract
        self._cpu = preprocessors.CpuPreprocessor(contract, 2)
        self._cuda = cuda
        self._log = log
        self.closed = 0

    def run_device(self, frames, formats=None, dst=None):
        self._cuda.write(int(dst), self._cpu.run(frames))
        self._log.append(("write", int(dst), int(frames[0][0, 0, 0])))
        return int(dst)

    def close(self):
        self.closed += 1


def fake_trt_task(tmp_path):
    """A classification task on TensorRTBackend over the FAKE TensorRT and FAKE CUDA."""
    cuda = FakeCuda()
    trt = make_trt(io=IO, cuda=cuda, **TRT10)
    backend = TensorRTBackend(b"FAKEENGINE{}", "/cache/entry", trt=trt, cuda=cuda)
    config = build_config({"models": {"m": {"path": str(tmp_path / "m.onnx")}}}).models["m"]
    return ClassificationTask(backend, config, None), cuda


def gate_execution(task, log):
    """Holds the FAKE execution context's execute until ``gate`` opens; logs which input set
    each execution reads, when it starts and when it has read it."""
    context = task.backend._context
    original = context.execute_async_v3
    gate, entered = threading.Event(), threading.Event()

    def execute(stream_handle):
        address = context.addresses["input_0"]
        log.append(("start", address, None))
        entered.set()
        assert gate.wait(SAFETY_TIMEOUT_S), "the test never opened the gate"
        ok = original(stream_handle)
        log.append(("end", address, None))
        return ok

    context.execute_async_v3 = execute
    return gate, entered


@pytest.mark.parametrize("sets, intact", [(INPUT_SETS, True), (1, False)],
                         ids=["INPUT_SETS", "control-one-set"])  # fmt: skip
def test_next_batch_is_written_into_the_other_input_set_while_the_engine_runs(
    tmp_path, sets, intact
):
    task, cuda = fake_trt_task(tmp_path)
    log = []
    gate, entered = gate_execution(task, log)
    pre = DevicePreprocessorStandIn(task.contract, cuda, log)
    feed = preprocessors.DeviceFeed(pre, task, sets)
    seen = []
    postprocess = task.postprocess
    task.postprocess = lambda outputs, size: (
        seen.append(outputs["output_0"][0]) or postprocess(outputs, size)
    )
    results, stop = [], threading.Event()
    worker = InferenceWorker("m", task, results.append, stop, max_batch=1, overlap=True,
                             preprocessor=feed)  # fmt: skip
    slot = worker.attach("cam")
    worker.start()
    owner = type("Owner", (), {"gate": gate, "entered": entered})
    markers = [10, 60, 120, 200]
    writes = lambda: sum(1 for e in log if e[0] == "write")  # noqa: E731
    try:
        _drive(worker, slot, owner, writes, results, markers)
    finally:
        gate.set()
        stop.set()
        assert worker.join(SAFETY_TIMEOUT_S)
    assert [r.seq for r in results] == [0, 1, 2, 3]
    # FAKE context: output k of a frame is mean(its input) + k
    cpu = preprocessors.CpuPreprocessor(task.contract)
    want = [float(cpu.run([frame("cam", 0, value=m).image])[0].mean()) for m in markers]
    own = [abs(float(s) - w) < 1e-5 for s, w in zip(seen, want)]
    assert all(own) is intact, f"each inference read its own frame: {own}"
    if intact:
        addresses = [e[1] for e in log if e[0] == "write"]
        assert len(set(addresses)) == 2  # the two sets, in turn
        running = set()
        for what, address, _ in log:  # no write ever lands in a set being executed
            if what == "start":
                running.add(address)
            elif what == "end":
                running.discard(address)
            else:
                assert address not in running, f"wrote into a running input set: {log}"
    assert cuda.depth == 0
    assert pre.closed == 1


def test_device_feed_is_chosen_only_where_the_batch_can_stay_on_the_device(tmp_path):
    task, cuda = fake_trt_task(tmp_path)
    pre = DevicePreprocessorStandIn(task.contract, cuda, [])
    feed = preprocessors.on_device(pre, task, 2)
    assert isinstance(feed, preprocessors.DeviceFeed)
    assert isinstance(feed.run([frame("cam", 0).image]), PrefilledBatch)
    onnx_task = real_task(tmp_path)  # ONNX Runtime: no input_buffer, stays on the host
    assert preprocessors.on_device(pre, onnx_task, 1) is pre
    host_only = RingPreprocessorStandIn(task.contract, 1, HOST_RING)  # no run_device
    assert preprocessors.on_device(host_only, task, 1) is host_only


def test_a_replaced_preprocessor_is_closed_only_once_its_batches_are_through(tmp_path):
    """Its ring holds the batch in inference: a task swap must not free it under the model."""
    old_task, new_task = real_task(tmp_path), real_task(tmp_path)
    backend = old_task.backend = ReadingGate(old_task.backend)
    made = []

    def factory(task):
        made.append(RingPreprocessorStandIn(task.contract, 1, HOST_RING))
        return made[-1]

    results, stop = [], threading.Event()
    worker = InferenceWorker("m", old_task, results.append, stop, overlap=True,
                             preprocessor=factory(old_task),
                             preprocessor_factory=factory)  # fmt: skip
    slot = worker.attach("cam")
    worker.start()
    try:
        slot.put(frame("cam", 0, value=30))
        assert backend.entered.wait(SAFETY_TIMEOUT_S)  # the old task's batch is in the model
        worker.swap_task(new_task)
        slot.put(frame("cam", 1, value=90))
        wait_until(lambda: len(made) == 2 and made[1].markers == [90])
        assert made[0].closed == 0  # its buffer is still being read
        backend.gate.set()
        wait_until(lambda: len(results) == 2, SAFETY_TIMEOUT_S)
        slot.put(frame("cam", 2, value=150))  # the next batch finds the old task released
        wait_until(lambda: made[0].closed == 1, SAFETY_TIMEOUT_S)
    finally:
        backend.gate.set()
        stop.set()
        assert worker.join(SAFETY_TIMEOUT_S)
    cpu = preprocessors.CpuPreprocessor(old_task.contract)
    assert np.array_equal(backend.seen[0], cpu.run([frame("cam", 0, value=30).image])[0])
    assert [m.closed for m in made] == [1, 1]


DYNAMIC = {
    "inputs": [("input_1", (-1, 3, 4, 4))],
    "outputs": [("cov", (-1, 2))],
    "profile_max": {"input_1": (4, 3, 4, 4)},
}


@pytest.mark.parametrize("variant", [TRT80, TRT10], ids=["binding", "name"])
def test_each_input_set_is_run_where_it_was_written(variant):
    cuda = FakeCuda()
    trt = make_trt(io=DYNAMIC, cuda=cuda, **variant)
    b = TensorRTBackend(b"FAKEENGINE{}", "/cache/entry", trt=trt, cuda=cuda)
    x = {v: np.full((2, 3, 4, 4), v, np.float32) for v in (1.0, 5.0, 9.0)}
    sets = [b.input_buffer("input_1", slot) for slot in range(INPUT_SETS)]
    assert len(set(sets)) == INPUT_SETS
    cuda.write(sets[0], x[1.0])
    cuda.write(sets[1], x[5.0])
    assert b.infer_prefilled(2, 1)["cov"][:, 0].tolist() == [5.0, 5.0]  # FAKE: mean + k
    assert b.infer_prefilled(2, 0)["cov"][:, 0].tolist() == [1.0, 1.0]
    assert b.infer_prefilled(2, 1)["cov"][:, 0].tolist() == [5.0, 5.0]
    assert b.infer({"input_1": x[9.0]})["cov"][:, 0].tolist() == [9.0, 9.0]  # host: set 0
    assert b.infer_prefilled(2, 1)["cov"][:, 0].tolist() == [5.0, 5.0]  # set 1 untouched
    with pytest.raises(BackendError, match="input set 2"):
        b.input_buffer("input_1", INPUT_SETS)
    b.close()
    assert set(sets) <= set(cuda.freed) and cuda.depth == 0

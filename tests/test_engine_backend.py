"""The TensorRT runtime backend's decisions, with a FAKE TensorRT and a FAKE CUDA.

NOT EXERCISING TENSORRT OR A GPU: neither can run here. These tests check
which I/O API and execute call the backend picks for each release's engine
(TensorRT 7/8 bindings vs 8.5+ named tensors), that dynamic shapes are set, that
every CUDA context push has its pop -- also when something fails (inducer/pycuda#242) -- and that an
engine TensorRT cannot deserialize raises EngineDeserializeError.
"""

import threading

import numpy as np
import pytest

from edged.backends import create_backend
from edged.backends.tensorrt_backend import (
    BINDING_API,
    EXEC_IMPLICIT,
    EXEC_V2,
    EXEC_V3,
    NAME_API,
    TensorRTBackend,
)
from edged.engine.errors import EngineDeserializeError
from edged.errors import BackendError, ConfigError
from edged.modelfile import ModelArtifact

from .fake_tensorrt import TRT10, TRT80, TRT85, FakeCuda, make_trt

ENGINE = b"FAKEENGINE{}"
STATIC = {"inputs": [("input_0", (1, 3, 4, 4))], "outputs": [("output_0", (1, 5))]}
DYNAMIC = {
    "inputs": [("input_1", (-1, 3, 4, 4))],
    "outputs": [("cov", (-1, 2)), ("bbox", (-1, 3))],
    "profile_max": {"input_1": (4, 3, 4, 4)},
}


def backend(variant, io=STATIC, engine=ENGINE):
    cuda = FakeCuda()
    trt = make_trt(io=io, cuda=cuda, **variant)
    return TensorRTBackend(engine, "/cache/entry", trt=trt, cuda=cuda), trt, cuda


@pytest.mark.parametrize(
    "variant, api, call",
    [
        (TRT80, BINDING_API, EXEC_V2),
        (TRT85, NAME_API, EXEC_V3),  # 8.5 has both: the name API wins (bindings deprecated)
        (TRT10, NAME_API, EXEC_V3),
    ],
)
def test_io_api_is_chosen_by_what_the_engine_has(variant, api, call):
    b, _, cuda = backend(variant)
    assert (b.io_api, b.execute_call) == (api, call)
    out = b.infer({"input_0": np.full((1, 3, 4, 4), 2.0, np.float32)})
    assert out["output_0"].tolist() == [[2.0, 3.0, 4.0, 5.0, 6.0]]
    assert cuda.depth == 0


def test_specs_report_dynamic_dimensions_as_none():
    b, _, _ = backend(TRT10, DYNAMIC)
    assert [s.shape for s in b.inputs] == [(None, 3, 4, 4)]
    assert [s.shape for s in b.outputs] == [(None, 2), (None, 3)]


@pytest.mark.parametrize("variant", [TRT80, TRT10], ids=["binding", "name"])
def test_dynamic_batch_sets_the_input_shape_and_sizes_outputs(variant):
    b, trt, _ = backend(variant, DYNAMIC)
    x = np.stack([np.full((3, 4, 4), v, np.float32) for v in (1.0, 5.0, 9.0)])
    out = b.infer({"input_1": x})
    assert out["cov"].shape == (3, 2) and out["bbox"].shape == (3, 3)
    assert out["cov"][:, 0].tolist() == [1.0, 5.0, 9.0]


def test_batch_beyond_the_profile_is_refused():
    b, _, _ = backend(TRT10, DYNAMIC)
    with pytest.raises(BackendError, match="at most"):
        b.infer({"input_1": np.zeros((5, 3, 4, 4), np.float32)})


def test_implicit_batch_uff_engine_uses_execute_async_with_batch_size():
    io = dict(STATIC, max_batch=2)
    cuda = FakeCuda()
    trt = make_trt(io=io, cuda=cuda, **TRT85)
    engine = b'FAKEENGINE{"network_flags": 0}'  # the fake marks implicit-batch engines so
    b = TensorRTBackend(engine, "/cache/uff", trt=trt, cuda=cuda)
    assert (b.io_api, b.execute_call) == (BINDING_API, EXEC_IMPLICIT)
    assert b.inputs[0].shape == (None, 3, 4, 4)
    out = b.infer({"input_0": np.ones((2, 3, 4, 4), np.float32)})
    assert out["output_0"].shape == (2, 5)


def test_engine_that_does_not_deserialize_raises_and_pops_the_context():
    cuda = FakeCuda()
    trt = make_trt(cuda=cuda, **TRT10)
    with pytest.raises(EngineDeserializeError, match="magic tag does not match"):
        TensorRTBackend(b"not an engine", "/cache/old", trt=trt, cuda=cuda)
    assert cuda.depth == 0 and cuda.pushes == 1


def test_every_push_has_its_pop_also_when_inference_fails():
    b, _, cuda = backend(TRT10)
    with pytest.raises(BackendError, match="missing input"):
        b.infer({"wrong": np.zeros((1, 3, 4, 4), np.float32)})
    with pytest.raises(BackendError, match="shape"):
        b.infer({"input_0": np.zeros((1, 3, 5, 5), np.float32)})
    assert cuda.depth == 0 and cuda.max_depth == 1


def test_inference_from_worker_threads_runs_inside_a_pushed_context():
    b, _, cuda = backend(TRT10)
    results = []

    def work():
        results.append(b.infer({"input_0": np.zeros((1, 3, 4, 4), np.float32)}))

    threads = [threading.Thread(target=work, name=f"infer-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and cuda.depth == 0 and cuda.max_depth == 1


def test_close_frees_device_memory_inside_a_push_and_is_idempotent():
    b, _, cuda = backend(TRT10, DYNAMIC)
    allocated = set(cuda.memory)
    b.close()
    b.close()
    assert set(cuda.freed) == allocated and cuda.memory == {} and cuda.depth == 0
    with pytest.raises(BackendError, match="closed"):
        b.infer({"input_1": np.zeros((1, 3, 4, 4), np.float32)})


def test_dla_engine_sets_the_runtime_dla_core():
    from edged.engine.cache import CacheEntry

    cuda = FakeCuda()
    trt = make_trt(io=STATIC, cuda=cuda, **TRT85)

    class Entry(CacheEntry):
        def read_engine(self):
            return ENGINE

    entry = Entry("e", "/cache/e", {"device_obtained": "dla1"}, 0, 0.0)
    TensorRTBackend.from_entry(entry, trt=trt, cuda=cuda)
    assert trt.runtime.DLA_core == 1


def test_create_backend_tensorrt_without_an_engine_is_a_config_error():
    artifact = ModelArtifact("/m.onnx", "onnx", b"x")
    with pytest.raises(ConfigError, match="needs a built engine"):
        create_backend("tensorrt", artifact)


@pytest.mark.parametrize("variant", [TRT80, TRT10], ids=["binding", "name"])
def test_a_batch_written_on_the_device_runs_without_an_upload(variant):
    """A GPU pre-processor writes into the engine's input buffer; nothing goes through the host."""
    b, _, cuda = backend(variant, DYNAMIC)
    x = np.stack([np.full((3, 4, 4), v, np.float32) for v in (2.0, 7.0)])
    cuda.write(b.input_buffer("input_1"), x)
    out = b.infer_prefilled(2)
    assert out["cov"].shape == (2, 2) and out["cov"][:, 0].tolist() == [2.0, 7.0]
    assert cuda.depth == 0
    with pytest.raises(BackendError, match="more than the engine takes"):
        b.infer_prefilled(5)
    with pytest.raises(BackendError, match="no input named 'nope'"):
        b.input_buffer("nope")

"""FAKE TensorRT and FAKE CUDA for unit tests -- they do NOT exercise TensorRT itself.

The full TensorRT (FP16/INT8 flags, calibrators, DLA, UFF, the binding API of
8.0-8.4) is not on PyPI and cannot run here; these fakes mimic the *shape* of
its Python API per release (NVIDIA/TensorRT ``python/src`` at each tag) so tests can check the
decisions edged makes: which API path, which flags, which calls, in which
order. Real builds are tested with TensorRT-RTX (tests/test_engine_rtx.py).

``make_trt(**variant)`` returns a module-like object whose classes have or
lack attributes exactly as the chosen release would (``hasattr`` is what
edged's feature detection looks at). ``FakeCuda`` keeps "device memory" in
numpy arrays and counts context pushes and pops.
"""

import json
import types
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from edged.backends.tensorrt_backend import CudaRuntime

# Release presets (attributes present in NVIDIA/TensorRT ``python/src`` at each tag).
TRT80 = dict(
    version="8.0.1.6",
    name_api=False,
    memory_pool=False,
    workspace_attr=True,
    uff=True,
    progress=False,
    build_engine=True,
    implicit_builder=True,
)
TRT85 = dict(
    version="8.5.2.2",
    name_api=True,
    binding_api=True,
    memory_pool=True,
    workspace_attr=True,
    uff=True,
    progress=False,
    build_engine=True,
    implicit_builder=True,
)
TRT10 = dict(
    version="10.3.0.26",
    name_api=True,
    binding_api=False,
    memory_pool=True,
    workspace_attr=False,
    uff=False,
    progress=True,
    build_engine=False,
    implicit_builder=False,
    explicit_flag=True,
)
RTX = dict(
    version="1.7.1.116",
    name_api=True,
    binding_api=False,
    memory_pool=True,
    workspace_attr=False,
    uff=False,
    progress=True,
    build_engine=False,
    implicit_builder=False,
    explicit_flag=False,
    fp16=False,
    int8=False,
    fast_queries=False,
    calibrator=False,
)


class _Enum:
    def __init__(self, name: str, value: int) -> None:
        self.name = name
        self.value = value

    def __int__(self) -> int:
        return self.value

    def __repr__(self) -> str:
        return "Fake." + self.name


def _enum(name: str, members: Sequence[str]) -> type:
    return type(name, (), {m: _Enum(m, i) for i, m in enumerate(members)})


class FakeHostMemory(bytes):
    """IHostMemory stand-in (bytes, so the buffer protocol works on every Python)."""

    def serialize(self) -> "FakeHostMemory":
        return self


class FakeTensor:
    def __init__(self, name: str, shape: Sequence[int], dtype: Any) -> None:
        self.name = name
        self.shape = tuple(shape)
        self.dtype = dtype


class FakeNetwork:
    def __init__(self, flags: int, trt: Any) -> None:
        self.flags = flags
        self._trt = trt
        self.inputs = []  # type: List[FakeTensor]
        self.outputs = []  # type: List[FakeTensor]
        self.num_layers = 0

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    @property
    def num_outputs(self) -> int:
        return len(self.outputs)

    def get_input(self, i: int) -> FakeTensor:
        return self.inputs[i]

    def get_output(self, i: int) -> FakeTensor:
        return self.outputs[i]

    def load(self, io: Dict[str, Any]) -> None:
        f = self._trt.DataType.FLOAT
        self.inputs = [FakeTensor(n, s, f) for n, s in io["inputs"]]
        self.outputs = [FakeTensor(n, s, f) for n, s in io["outputs"]]


def make_trt(
    version: str = "8.2.1.8",
    name_api: bool = False,
    binding_api: bool = True,
    memory_pool: bool = False,
    workspace_attr: bool = True,
    uff: bool = True,
    progress: bool = False,
    build_engine: bool = True,
    build_serialized: bool = True,
    implicit_builder: bool = True,
    explicit_flag: bool = True,
    fp16: bool = True,
    int8: bool = True,
    fast_queries: bool = True,
    calibrator: bool = True,
    fast_fp16: bool = True,
    fast_int8: bool = False,
    dla_cores: int = 0,
    io: Optional[Dict[str, Any]] = None,
    cuda: Optional["FakeCuda"] = None,
) -> Any:
    """A fake ``tensorrt`` module. ``io`` = {"inputs": [(name, shape)], "outputs": [...]}
    is what the fake parsers put into the network (and engines expose)."""
    trt = types.ModuleType("fake_tensorrt")
    trt.__version__ = version
    trt.calls = []  # type: List[Tuple[str, Any]]
    trt.io = io or {"inputs": [("input_0", (1, 3, 8, 8))], "outputs": [("output_0", (1, 10))]}
    trt.cuda = cuda
    trt.fail_build = False
    trt.DataType = _enum("DataType", ["FLOAT", "HALF", "INT8", "INT32"])
    trt.TensorIOMode = _enum("TensorIOMode", ["NONE", "INPUT", "OUTPUT"])
    trt.MemoryPoolType = _enum("MemoryPoolType", ["WORKSPACE"])
    trt.DeviceType = _enum("DeviceType", ["GPU", "DLA"])
    builder_flags = ["GPU_FALLBACK"] + (["FP16"] if fp16 else []) + (["INT8"] if int8 else [])
    if fp16:  # renamed in 8.2 (TensorRT 8.2 release notes); strongly typed builders have neither
        builder_flags.append("STRICT_TYPES" if version < "8.2" else "OBEY_PRECISION_CONSTRAINTS")
    trt.BuilderFlag = _enum("BuilderFlag", builder_flags)
    trt.NetworkDefinitionCreationFlag = _enum(
        "NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH"] if explicit_flag else ["STRONGLY_TYPED"]
    )
    trt.nptype = lambda dt: {
        "FLOAT": np.float32,
        "HALF": np.float16,
        "INT8": np.int8,
        "INT32": np.int32,
    }[dt.name]

    class ILogger:
        Severity = _enum("Severity", ["INTERNAL_ERROR", "ERROR", "WARNING", "INFO", "VERBOSE"])

        def __init__(self) -> None:
            pass

    trt.ILogger = ILogger

    class IInt8EntropyCalibrator2:
        def __init__(self) -> None:
            pass

    if calibrator:
        trt.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

    class IProgressMonitor:
        def __init__(self) -> None:
            pass

    if progress:
        trt.IProgressMonitor = IProgressMonitor

    class TimingCache:
        def __init__(self, data: bytes) -> None:
            self.data = data

        def serialize(self) -> FakeHostMemory:
            return FakeHostMemory(self.data + b"+")

    def _prop(name: str, default: Any) -> property:
        return property(
            lambda self: self.state.get(name, default),
            lambda self, v: self.state.__setitem__(name, v),
        )

    class _ConfigBase:
        def __init__(self) -> None:
            self.state = {}  # type: Dict[str, Any]
            self.flags_set = []  # type: List[str]
            self.pool = {}  # type: Dict[str, int]
            self.profiles = []  # type: List[Any]
            self.timing = None  # type: Any

        def set_flag(self, flag: _Enum) -> None:
            self.flags_set.append(flag.name)

        def add_optimization_profile(self, profile: Any) -> int:
            self.profiles.append(profile)
            return len(self.profiles) - 1

        def create_timing_cache(self, data: bytes) -> TimingCache:
            if data == b"corrupt":
                raise RuntimeError("fake: corrupt timing cache")
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
            self.timing = cache
            return True

        def get_timing_cache(self) -> TimingCache:
            return self.timing

    config_attrs = {
        "default_device_type": _prop("default_device_type", trt.DeviceType.GPU),
        "DLA_core": _prop("DLA_core", -1),
    }  # type: Dict[str, Any]
    if memory_pool:
        config_attrs["set_memory_pool_limit"] = lambda self, pool, n: self.pool.__setitem__(
            pool.name, n
        )
    if workspace_attr:
        config_attrs["max_workspace_size"] = _prop("max_workspace_size", 0)
    if calibrator:
        config_attrs["int8_calibrator"] = _prop("int8_calibrator", None)
    if progress:
        config_attrs["progress_monitor"] = _prop("progress_monitor", None)
    IBuilderConfig = type("IBuilderConfig", (_ConfigBase,), config_attrs)
    trt.IBuilderConfig = IBuilderConfig

    class OptimizationProfile:
        def __init__(self) -> None:
            self.shapes = {}  # type: Dict[str, Any]

        def set_shape(self, name: str, lo: Any, opt: Any, hi: Any) -> None:
            self.shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

    builder_attrs = {}  # type: Dict[str, Any]

    class _BuilderBase:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.num_DLA_cores = dla_cores
            trt.builder = self

        def create_network(self, flags: int = 0) -> FakeNetwork:
            trt.calls.append(("create_network", flags))
            return FakeNetwork(flags, trt)

        def create_builder_config(self) -> Any:
            trt.config = IBuilderConfig()
            return trt.config

        def create_optimization_profile(self) -> OptimizationProfile:
            return OptimizationProfile()

        def _serialize(self, network: FakeNetwork, config: Any) -> Optional[FakeHostMemory]:
            monitor = getattr(config, "progress_monitor", None)
            if monitor is not None:
                monitor.phase_start("Building engine", None, 2)
                for step in range(2):
                    if not monitor.step_complete("Building engine", step):
                        return None
                monitor.phase_finish("Building engine")
            if trt.fail_build:
                self.logger.log(ILogger.Severity.ERROR, "fake: build refused")
                return None
            record = {
                "flags": config.flags_set,
                "pool": config.pool,
                "workspace": config.state.get("max_workspace_size"),
                "dla": config.DLA_core,
                "device": config.default_device_type.name,
                "profiles": [p.shapes for p in config.profiles],
                "calibrator": type(config.int8_calibrator).__name__
                if getattr(config, "int8_calibrator", None) is not None
                else None,
                "network_flags": network.flags,
                "max_batch_size": getattr(self, "max_batch_size", None),
            }
            return FakeHostMemory(b"FAKEENGINE" + json.dumps(record, default=str).encode())

    if build_serialized:

        def build_serialized_network(self: Any, network: Any, config: Any) -> Any:
            trt.calls.append(("build_serialized_network", None))
            return self._serialize(network, config)

        builder_attrs["build_serialized_network"] = build_serialized_network
    if build_engine:

        def build_engine_(self: Any, network: Any, config: Any) -> Any:
            trt.calls.append(("build_engine", None))
            data = self._serialize(network, config)
            return None if data is None else types.SimpleNamespace(serialize=lambda: data)

        builder_attrs["build_engine"] = build_engine_
    if fast_queries:
        builder_attrs["platform_has_fast_fp16"] = property(lambda self: fast_fp16)
        builder_attrs["platform_has_fast_int8"] = property(lambda self: fast_int8)
    if implicit_builder:
        builder_attrs["max_batch_size"] = 1
    trt.Builder = type("Builder", (_BuilderBase,), builder_attrs)

    class OnnxParser:
        def __init__(self, network: FakeNetwork, logger: Any) -> None:
            self.network = network
            self.num_errors = 0

        def parse(self, data: bytes) -> bool:
            trt.calls.append(("onnx_parse", len(data)))
            if data.startswith(b"bad"):
                self.num_errors = 1
                return False
            self.network.load(trt.io)
            return True

        def get_error(self, i: int) -> str:
            return "fake: unsupported operator"

    trt.OnnxParser = OnnxParser

    if uff:

        class UffParser:
            def __init__(self) -> None:
                self.inputs = []  # type: List[Any]
                self.outputs = []  # type: List[str]
                trt.uff_parser = self

            def register_input(self, name: str, dims: Any) -> None:
                self.inputs.append((name, tuple(dims)))

            def register_output(self, name: str) -> None:
                self.outputs.append(name)

            def parse_buffer(self, data: bytes, network: FakeNetwork) -> bool:
                trt.calls.append(("uff_parse_buffer", len(data)))
                network.load(trt.io)
                return True

        trt.UffParser = UffParser

    # -- runtime side ---------------------------------------------------------------------------
    trt.engine_api = {"name": name_api, "binding": binding_api}

    class Runtime:
        def __init__(self, logger: Any) -> None:
            self.logger = logger
            self.DLA_core = -1
            trt.runtime = self

        def deserialize_cuda_engine(self, data: bytes) -> Any:
            trt.calls.append(("deserialize", len(data)))
            if not data.startswith(b"FAKEENGINE"):
                self.logger.log(ILogger.Severity.ERROR, "fake: magic tag does not match")
                return None
            return make_engine(trt, implicit=b'"network_flags": 0' in data and uff)

    trt.Runtime = Runtime
    return trt


# -- engines and execution ----------------------------------------------------------------------


def make_engine(trt: Any, implicit: bool = False) -> Any:
    """A fake ICudaEngine with the I/O API(s) of the fake module's release."""
    io = trt.io
    tensors = [(n, s, True) for n, s in io["inputs"]] + [(n, s, False) for n, s in io["outputs"]]
    attrs = {}  # type: Dict[str, Any]
    api = trt.engine_api
    profile_max = io.get("profile_max", {})

    def shape_of(i: int) -> Tuple[int, ...]:
        shape = tuple(tensors[i][1])
        return shape[1:] if implicit else shape

    if api["name"] and not implicit:
        attrs.update(
            num_io_tensors=len(tensors),
            get_tensor_name=lambda self, i: tensors[i][0],
            get_tensor_mode=lambda self, n: (
                trt.TensorIOMode.INPUT if _lookup(tensors, n)[2] else trt.TensorIOMode.OUTPUT
            ),
            get_tensor_shape=lambda self, n: tuple(_lookup(tensors, n)[1]),
            get_tensor_dtype=lambda self, n: trt.DataType.FLOAT,
            get_tensor_profile_shape=lambda self, n, p: (None, None, profile_max[n]),
        )
    if api["binding"] or implicit:
        attrs.update(
            num_bindings=len(tensors),
            get_binding_name=lambda self, i: tensors[i][0],
            binding_is_input=lambda self, i: tensors[i][2],
            get_binding_shape=lambda self, i: shape_of(i),
            get_binding_dtype=lambda self, i: trt.DataType.FLOAT,
            get_profile_shape=lambda self, p, i: (None, None, profile_max[tensors[i][0]]),
            has_implicit_batch_dimension=implicit,
            max_batch_size=io.get("max_batch", 1),
        )
    attrs["create_execution_context"] = lambda self: FakeContext(trt, tensors, implicit)
    return type("ICudaEngine", (), attrs)()


def _lookup(tensors: Sequence[Any], name: str) -> Any:
    for t in tensors:
        if t[0] == name:
            return t
    raise KeyError(name)


class FakeContext:
    """Executes by writing, for each batch item b, mean(input[b]) + k into output k."""

    def __init__(self, trt: Any, tensors: Sequence[Any], implicit: bool) -> None:
        self.trt = trt
        self.tensors = tensors
        self.implicit = implicit
        self.shapes = {t[0]: tuple(t[1]) for t in tensors}
        self.addresses = {}  # type: Dict[str, int]
        self.executed = []  # type: List[str]

    def set_input_shape(self, name: str, shape: Sequence[int]) -> bool:
        self.shapes[name] = tuple(shape)
        self._propagate(shape[0])
        return True

    def set_binding_shape(self, index: int, shape: Sequence[int]) -> bool:
        return self.set_input_shape(self.tensors[index][0], shape)

    def _propagate(self, batch: int) -> None:
        for name, shape, is_input in self.tensors:
            if not is_input and shape[0] < 0:
                self.shapes[name] = (batch,) + tuple(shape[1:])

    def get_tensor_shape(self, name: str) -> Tuple[int, ...]:
        return self.shapes[name]

    def get_binding_shape(self, index: int) -> Tuple[int, ...]:
        return self.shapes[self.tensors[index][0]]

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = address

    def execute_async_v3(self, stream_handle: int) -> bool:
        self.executed.append("v3")
        return self._run([self.addresses[t[0]] for t in self.tensors], None)

    def execute_async_v2(self, bindings: Sequence[int], stream_handle: int) -> bool:
        self.executed.append("v2")
        return self._run(bindings, None)

    def execute_async(self, batch_size: int, bindings: Sequence[int], stream_handle: int) -> bool:
        self.executed.append("implicit")
        return self._run(bindings, batch_size)

    def _run(self, addresses: Sequence[int], batch: Optional[int]) -> bool:
        cuda = self.trt.cuda
        inputs = [(t, a) for t, a in zip(self.tensors, addresses) if t[2]]
        (name, _, _), address = inputs[0]
        shape = self.shapes[name] if batch is None else (batch,) + tuple(self.shapes[name][1:])
        x = cuda.read(address, shape)
        means = x.reshape(shape[0], -1).mean(axis=1)
        for t, a in zip(self.tensors, addresses):
            if t[2]:
                continue
            out_shape = (shape[0],) + tuple(t[1][1:])
            values = means[:, None] + np.arange(int(np.prod(out_shape[1:])), dtype=np.float32)
            cuda.write(a, values.reshape(out_shape).astype(np.float32))
        return True


class _DeviceBuffer:
    def __init__(self, cuda: "FakeCuda", address: int, nbytes: int) -> None:
        self.cuda = cuda
        self.address = address
        self.nbytes = nbytes

    def __int__(self) -> int:
        return self.address

    def free(self) -> None:
        self.cuda.freed.append(self.address)
        self.cuda.memory.pop(self.address, None)


class FakeCuda(CudaRuntime):
    """FAKE CUDA: device memory is numpy; counts pushes/pops (the CudaRuntime seam)."""

    def __init__(self) -> None:
        self.memory = {}  # type: Dict[int, np.ndarray]
        self.depth = 0
        self.max_depth = 0
        self.pushes = 0
        self.freed = []  # type: List[int]
        self._next = 0x1000
        self.synced = 0

    def push(self) -> None:
        self.depth += 1
        self.pushes += 1
        self.max_depth = max(self.max_depth, self.depth)

    def pop(self) -> None:
        assert self.depth > 0, "pop without push"
        self.depth -= 1

    def pagelocked(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        return np.zeros(tuple(shape), dtype=dtype)

    def device_alloc(self, nbytes: int) -> _DeviceBuffer:
        assert self.depth > 0, "device memory allocated with no current context"
        address = self._next
        self._next += 0x1000 + nbytes
        self.memory[address] = np.zeros(nbytes, dtype=np.uint8)
        return _DeviceBuffer(self, address, nbytes)

    def stream(self) -> Any:
        return types.SimpleNamespace(handle=7, synchronize=self._sync)

    def _sync(self) -> None:
        self.synced += 1

    def htod_async(self, device: Any, host: np.ndarray, stream: Any) -> None:
        assert self.depth > 0, "copy with no current context"
        raw = host.view(np.uint8).reshape(-1)
        self.memory[int(device)][: raw.size] = raw

    def dtoh_async(self, host: np.ndarray, device: Any, stream: Any) -> None:
        raw = host.view(np.uint8).reshape(-1)
        raw[:] = self.memory[int(device)][: raw.size]

    def read(self, address: int, shape: Sequence[int]) -> np.ndarray:
        n = int(np.prod(shape)) * 4
        return self.memory[address][:n].view(np.float32).reshape(tuple(shape)).copy()

    def write(self, address: int, values: np.ndarray) -> None:
        raw = values.astype(np.float32).view(np.uint8).reshape(-1)
        self.memory[address][: raw.size] = raw

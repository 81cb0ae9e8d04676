"""Find the installed TensorRT and describe what its Python API offers.

edged runs on TensorRT 8.0/8.2 (Nano, JetPack 4.6), 8.4/8.5 (Xavier,
JetPack 5), 8.6/10.x (later) and, for ahead-of-time builds in CI, on
TensorRT-RTX (PyPI ``tensorrt-rtx-cu13-*``, module ``tensorrt_rtx_bindings``),
which has no FP16/INT8 builder flags because its networks are strongly typed.
Every API choice is made by feature detection -- ``hasattr`` on the module and
its classes -- never by parsing version strings (the same call exists, is deprecated, or is
gone depending on the release: NVIDIA/TensorRT ``python/src`` at tags 8.0.1 to 10.3). The version
string is only recorded, in the cache key.
"""

import importlib
import logging
from collections import deque
from typing import Any, Deque, List, Optional, Sequence, Tuple

from ..errors import EngineError

logger = logging.getLogger(__name__)

#: Module names tried by ``tensorrt_module: auto``, in order: the full TensorRT (Jetson,
#: desktop), then TensorRT-RTX as the metapackage and as the standalone bindings wheel.
MODULE_CANDIDATES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")


def import_tensorrt(name: str = "auto", candidates: Sequence[str] = MODULE_CANDIDATES) -> Any:
    """Import TensorRT's Python module (``auto``: the first of ``candidates`` that imports).

    Raises:
        EngineError: none can be imported; the message lists what was tried and why.
    """
    names = list(candidates) if name == "auto" else [name]
    problems = []  # type: List[str]
    for candidate in names:
        try:
            module = importlib.import_module(candidate)
        except ImportError as e:
            problems.append(f"{candidate} ({e})")
            continue
        logger.debug("TensorRT module %s %s", candidate, getattr(module, "__version__", "?"))
        return module
    raise EngineError(
        "no TensorRT Python module could be imported: {}. On a Jetson TensorRT comes with "
        "JetPack (python3-libnvinfer); elsewhere pip install tensorrt, or tensorrt-rtx-cu13-libs "
        "and tensorrt-rtx-cu13-bindings (Python >= 3.10) to build engines ahead of time".format(
            "; ".join(problems)
        )
    )


def module_name(trt: Any) -> str:
    return getattr(trt, "__name__", "tensorrt")


def version_of(trt: Any) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def _has(obj: Any, *names: str) -> bool:
    return obj is not None and all(hasattr(obj, n) for n in names)


class Features:
    """What the installed TensorRT's Python API has.

    Every attribute is a bool found with ``hasattr``; :meth:`detect` is the
    only place that looks. ``describe()`` lists them for logs and manifests.
    """

    # One bool per feature; FIELDS (below the class) lists them in this order.
    explicit_batch_flag: bool  # NetworkDefinitionCreationFlag.EXPLICIT_BATCH (8.x; 10 deprecates)
    strongly_typed: bool  # no FP16/INT8 builder flags: precision comes from the network (RTX)
    build_serialized_network: bool  # 8.0+
    build_engine: bool  # <= 8.6
    memory_pool_limit: bool  # IBuilderConfig.set_memory_pool_limit, 8.4+
    max_workspace_size: bool  # IBuilderConfig.max_workspace_size, <= 8.6
    onnx_parser: bool
    uff_parser: bool  # <= 8.6
    fp16_flag: bool
    int8_flag: bool
    fast_fp16_query: bool  # Builder.platform_has_fast_fp16
    fast_int8_query: bool
    int8_calibrator: bool  # IBuilderConfig.int8_calibrator + IInt8EntropyCalibrator2
    dla: bool  # DeviceType.DLA, IBuilderConfig.default_device_type / DLA_core
    gpu_fallback_flag: bool
    timing_cache: bool  # create_timing_cache / set_timing_cache / get_timing_cache
    progress_monitor: bool  # IProgressMonitor + IBuilderConfig.progress_monitor, 10+
    optimization_profiles: bool
    implicit_batch_builder: bool  # Builder.max_batch_size (implicit batch, UFF), <= 8.x

    FIELDS: Tuple[str, ...] = ()

    def __init__(self, **values: bool) -> None:
        unknown = set(values) - set(self.FIELDS)
        if unknown:
            raise TypeError("unknown features: {}".format(", ".join(sorted(unknown))))
        for name in self.FIELDS:
            setattr(self, name, bool(values.get(name, False)))

    @classmethod
    def detect(cls, trt: Any) -> "Features":
        builder = getattr(trt, "Builder", None)
        config = getattr(trt, "IBuilderConfig", None)
        flags = getattr(trt, "BuilderFlag", None)
        net_flags = getattr(trt, "NetworkDefinitionCreationFlag", None)
        fp16 = _has(flags, "FP16")
        int8 = _has(flags, "INT8")
        return cls(
            explicit_batch_flag=_has(net_flags, "EXPLICIT_BATCH"),
            strongly_typed=not fp16 and not int8,
            build_serialized_network=_has(builder, "build_serialized_network"),
            build_engine=_has(builder, "build_engine"),
            memory_pool_limit=_has(config, "set_memory_pool_limit") and _has(trt, "MemoryPoolType"),
            max_workspace_size=_has(config, "max_workspace_size"),
            onnx_parser=_has(trt, "OnnxParser"),
            uff_parser=_has(trt, "UffParser"),
            fp16_flag=fp16,
            int8_flag=int8,
            fast_fp16_query=_has(builder, "platform_has_fast_fp16"),
            fast_int8_query=_has(builder, "platform_has_fast_int8"),
            int8_calibrator=_has(config, "int8_calibrator")
            and _has(trt, "IInt8EntropyCalibrator2"),
            dla=_has(trt, "DeviceType") and _has(config, "default_device_type", "DLA_core"),
            gpu_fallback_flag=_has(flags, "GPU_FALLBACK"),
            timing_cache=_has(
                config, "create_timing_cache", "set_timing_cache", "get_timing_cache"
            ),
            progress_monitor=_has(trt, "IProgressMonitor") and _has(config, "progress_monitor"),
            optimization_profiles=_has(builder, "create_optimization_profile")
            and _has(config, "add_optimization_profile"),
            implicit_batch_builder=_has(builder, "max_batch_size"),
        )

    def describe(self) -> List[str]:
        """Names of the features present, sorted (for the manifest and ``-v`` logs)."""
        return sorted(name for name in self.FIELDS if getattr(self, name))

    def __repr__(self) -> str:
        return "Features({})".format(", ".join(self.describe()))


Features.FIELDS = tuple(n for n in Features.__annotations__ if n != "FIELDS")


def host_memory_bytes(blob: Any) -> bytes:
    """``IHostMemory`` (or bytes) -> bytes; TensorRT's host memory has the buffer protocol."""
    if isinstance(blob, bytes):
        return blob
    return bytes(memoryview(blob))


class CapturingLogger:
    """Factory of a ``trt.ILogger`` that forwards to Python logging and keeps recent errors.

    TensorRT explains failures only through its logger ("Network has dynamic or
    shape inputs, but no optimization profile has been defined"); keeping the
    last errors lets an :class:`EngineError` say why a build failed.
    """

    @staticmethod
    def create(trt: Any, name: str = "edged.engine.tensorrt", keep: int = 8) -> Any:
        log = logging.getLogger(name)
        severity = trt.ILogger.Severity
        levels = (
            (getattr(severity, "INTERNAL_ERROR", None), logging.ERROR),
            (getattr(severity, "ERROR", None), logging.ERROR),
            (getattr(severity, "WARNING", None), logging.WARNING),
            (getattr(severity, "INFO", None), logging.DEBUG),
        )

        class _Logger(trt.ILogger):
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: Deque[str] = deque(maxlen=keep)

            def log(self, sev: Any, msg: str) -> None:
                level = _level(sev, levels)
                if level is None:  # VERBOSE: thousands of lines per build
                    return
                if level >= logging.ERROR:
                    self.errors.append(str(msg))
                log.log(level, "%s", msg)

        return _Logger()


def _level(sev: Any, levels: Sequence[Tuple[Any, int]]) -> Optional[int]:
    for candidate, level in levels:
        if candidate is not None and sev == candidate:
            return level
    return None


def recent_errors(trt_logger: Any) -> str:
    """The logger's last error lines joined for a message ('' when none)."""
    errors = list(getattr(trt_logger, "errors", ()))
    return "; ".join(errors[-3:])

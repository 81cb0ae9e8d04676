"""Build a serialized TensorRT engine from model bytes, whatever TensorRT is installed.

One code path for TensorRT 8.0 (Nano) through 10.x and TensorRT-RTX, every
branch chosen by :class:`~edged.backends.tensorrt_api.Features` (the decisions themselves are
pure functions in :mod:`edged.engine.plan`):

* ONNX: ``OnnxParser.parse(bytes)`` in memory -- a decrypted ``.etlt`` never
  touches the disk. EXPLICIT_BATCH where the flag exists; one
  optimization profile when an input has dynamic dimensions (PeopleNet's ONNX
  releases: batch 1..max_batch).
* UFF (``.etlt`` of TAO <= 4): ``UffParser.parse_buffer`` with implicit batch,
  only where the installed TensorRT still has the parser (<= 8.6).
* Workspace: ``set_memory_pool_limit`` (8.4+) or ``max_workspace_size`` (<= 8.6).
* Precision: negotiated against ``platform_has_fast_fp16/_int8`` and the flags
  the API has; the precision OBTAINED is returned and recorded, never the one
  asked for (Nano has no INT8: it needs compute capability >= 6.1). A strongly typed builder
  (TensorRT-RTX: no FP16/INT8 flags) gets the network's own types.
* DLA core with GPU_FALLBACK (Xavier); timing cache in and out; TensorRT's
  progress monitor (10+) or edged's phase logging.
* ``build_serialized_network`` (8.0+) or ``build_engine(...).serialize()``.
"""

import logging
import time
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..backends.tensorrt_api import (
    CapturingLogger,
    Features,
    host_memory_bytes,
    module_name,
    recent_errors,
    version_of,
)
from ..errors import EngineError
from .calibration import ImageBatches, Upload, make_cache_calibrator, make_image_calibrator
from .errors import EngineBuildError, EngineCancelled
from .options import UFF_DEFAULT_OUTPUTS, BuildOptions
from .plan import (
    PlatformCaps,
    negotiate_precision,
    plan_device,
    plan_profiles,
    strict_types_flag,
)
from .progress import ProgressTracker, make_progress_monitor

logger = logging.getLogger(__name__)


class CalibrationInput(NamedTuple):
    """Calibration data the caller prepared: a cache's bytes, or image batches."""

    cache: Optional[bytes] = None
    batches: Optional[Callable[[List[Dict[str, Any]]], ImageBatches]] = None  # io -> batches
    upload: Optional[Upload] = None
    write_cache: Optional[Callable[[bytes], None]] = None

    @property
    def available(self) -> bool:
        return self.cache is not None or self.batches is not None


class BuildResult(NamedTuple):
    engine: bytes
    precision_obtained: str
    device_obtained: str
    builder_flags: List[str]
    notes: List[str]
    io: List[Dict[str, Any]]
    features: List[str]
    timing_cache: Optional[bytes]
    seconds: float


# -- the builder ------------------------------------------------------------------------------


class _Model(NamedTuple):
    format: str
    data: bytes
    input_name: str
    path: str


class EngineBuilder:
    """Builds engines with one TensorRT module (in the process that imported it).

    Args:
        trt: the imported module (:func:`edged.backends.tensorrt_api.import_tensorrt`).
        features: defaults to :meth:`Features.detect`.
    """

    def __init__(self, trt: Any, features: Optional[Features] = None) -> None:
        self.trt = trt
        self.features = features or Features.detect(trt)
        self.trt_logger = CapturingLogger.create(trt)

    def caps(self, builder: Any) -> PlatformCaps:
        f = self.features
        return PlatformCaps(
            fast_fp16=bool(builder.platform_has_fast_fp16) if f.fast_fp16_query else None,
            fast_int8=bool(builder.platform_has_fast_int8) if f.fast_int8_query else None,
            dla_cores=int(getattr(builder, "num_DLA_cores", 0) or 0),
        )

    def build(
        self,
        artifact: Any,
        options: BuildOptions,
        tracker: Optional[ProgressTracker] = None,
        timing_cache: Optional[bytes] = None,
        calibration: Optional[CalibrationInput] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> BuildResult:
        """Parse ``artifact`` (a :class:`~edged.modelfile.ModelArtifact`) and build its engine.

        Raises:
            EngineBuildError: TensorRT refused (the message carries its errors).
            EngineCancelled: ``tracker``'s cancel event was set during the build.
        """
        tracker = tracker or ProgressTracker()
        model = _Model(artifact.format, artifact.data, artifact.input_name or "", artifact.path)
        calibration = calibration or CalibrationInput()
        t0 = clock()
        trt = self.trt
        tracker.phase("parse")
        builder = trt.Builder(self.trt_logger)
        caps = self.caps(builder)
        network, parser = self._parse(builder, model, options)
        io = describe_network(network)
        tracker.phase("build")
        config = builder.create_builder_config()
        self._set_workspace(config, options.workspace_bytes)
        precision = negotiate_precision(
            options.precision,
            options.precision_fallback,
            self.features,
            caps,
            calibration.available,
            network_precision(trt, network),
        )
        device = plan_device(
            options.dla_core, options.gpu_fallback, self.features, caps, precision.obtained
        )
        flags = list(precision.flags) + list(device.flags)
        if options.strict_types and not self.features.strongly_typed:
            flags.append(strict_types_flag(trt))
        for flag in flags:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if precision.obtained == "int8":
            config.int8_calibrator = self._calibrator(calibration, io)
        if device.dla_core is not None:
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = device.dla_core
        notes = list(precision.notes) + list(device.notes)
        notes += self._set_profiles(builder, config, model, options, io)
        timing = self._set_timing_cache(config, timing_cache, options, notes)
        self._set_progress(config, tracker)
        for note in notes:
            logger.warning("%s: %s", model.path, note)
        logger.info(
            "%s: building %s engine for %s with %s %s (workspace %d MiB)",
            model.path,
            precision.obtained,
            device.device,
            module_name(trt),
            version_of(trt),
            options.workspace_bytes >> 20,
        )
        serialized = self._build(builder, network, config, tracker, model.path)
        tracker.phase("publish")
        del parser  # the parser owns the network's weights until the build is done
        return BuildResult(
            engine=serialized,
            precision_obtained=precision.obtained,
            device_obtained=device.device,
            builder_flags=flags,
            notes=notes,
            io=io,
            features=self.features.describe(),
            timing_cache=self._timing_out(config) if timing is not None else None,
            seconds=clock() - t0,
        )

    # -- steps --------------------------------------------------------------------------------

    def _parse(self, builder: Any, model: _Model, options: BuildOptions) -> Tuple[Any, Any]:
        trt, f = self.trt, self.features
        if model.format == "onnx":
            if not f.onnx_parser:
                raise EngineBuildError(f"{model.path}: this TensorRT has no ONNX parser")
            flags = (
                1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
                if (f.explicit_batch_flag)
                else 0
            )
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, self.trt_logger)
            ok = parser.parse(model.data)
            if not ok:
                raise EngineBuildError(
                    "{}: TensorRT's ONNX parser refused the model: {}".format(
                        model.path,
                        _parser_errors(parser) or recent_errors(self.trt_logger) or "no details",
                    )
                )
            return network, parser
        if model.format == "uff":
            return self._parse_uff(builder, model, options)
        raise EngineBuildError(f"{model.path}: cannot build a {model.format} model")

    def _parse_uff(self, builder: Any, model: _Model, options: BuildOptions) -> Tuple[Any, Any]:
        trt, f = self.trt, self.features
        if not f.uff_parser:
            raise EngineBuildError(
                f"{model.path}: a UFF .etlt needs TensorRT <= 8.6 (UffParser); this TensorRT "
                f"({version_of(trt)}) has none -- use PeopleNet's ONNX release "
                "(TensorRT 10 removed UFF)"
            )
        if not (options.input_height and options.input_width):
            raise EngineBuildError(
                f"{model.path}: a UFF model needs input.width and input.height in the "
                "config (PeopleNet: 960 x 544)"
            )
        network = builder.create_network(0)  # UFF is implicit batch
        parser = trt.UffParser()
        parser.register_input(
            model.input_name or "input_1", (3, options.input_height, options.input_width)
        )
        for name in options.output_names or UFF_DEFAULT_OUTPUTS:
            parser.register_output(name)
        if not parser.parse_buffer(model.data, network):
            raise EngineBuildError(
                "{}: TensorRT's UFF parser refused the model: {}".format(
                    model.path, recent_errors(self.trt_logger) or "no details"
                )
            )
        if f.implicit_batch_builder:
            builder.max_batch_size = options.max_batch
        return network, parser

    def _set_workspace(self, config: Any, nbytes: int) -> None:
        if self.features.memory_pool_limit:
            config.set_memory_pool_limit(self.trt.MemoryPoolType.WORKSPACE, nbytes)
        elif self.features.max_workspace_size:
            config.max_workspace_size = nbytes
        else:
            logger.warning("this TensorRT has no workspace limit setting; using its default")

    def _set_profiles(
        self, builder: Any, config: Any, model: _Model, options: BuildOptions, io: List[Dict]
    ) -> List[str]:
        if model.format != "onnx":
            return []
        inputs = [(t["name"], tuple(t["shape"])) for t in io if t["mode"] == "input"]
        profiles, notes = plan_profiles(inputs, options)
        if not profiles:
            return notes
        if not self.features.optimization_profiles:
            raise EngineBuildError(
                f"{model.path}: dynamic inputs need optimization profiles, which this "
                "TensorRT lacks"
            )
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profiles.items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
        for t in io:
            if t["name"] in profiles:
                t["profile"] = [list(d) for d in profiles[t["name"]]]
        return notes

    def _set_timing_cache(
        self, config: Any, stored: Optional[bytes], options: BuildOptions, notes: List[str]
    ) -> Optional[Any]:
        if not (options.timing_cache and self.features.timing_cache):
            return None
        with warnings.catch_warnings():  # TensorRT-RTX: "timing cache operations are no-ops"
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                cache = config.create_timing_cache(stored or b"")
            except (RuntimeError, TypeError, ValueError) as e:
                logger.warning("stored timing cache unusable (%s); starting an empty one", e)
                cache = config.create_timing_cache(b"")
            if cache is None or not config.set_timing_cache(cache, False):
                logger.warning("TensorRT did not accept the timing cache; building without it")
                return None
        return cache

    def _timing_out(self, config: Any) -> Optional[bytes]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            cache = config.get_timing_cache()
            return host_memory_bytes(cache.serialize()) if cache is not None else None

    def _set_progress(self, config: Any, tracker: ProgressTracker) -> None:
        if self.features.progress_monitor:
            config.progress_monitor = make_progress_monitor(self.trt, tracker)
        else:
            logger.info(
                "TensorRT %s has no progress monitor: phases are logged, and the build "
                "can take minutes",
                version_of(self.trt),
            )

    def _calibrator(self, calibration: CalibrationInput, io: List[Dict]) -> Any:
        if calibration.cache is not None:
            return make_cache_calibrator(self.trt, calibration.cache)
        inputs = [t for t in io if t["mode"] == "input"]
        if len(inputs) != 1 or calibration.batches is None or calibration.upload is None:
            raise EngineError("INT8 calibration from images needs a model with one image input")
        write = calibration.write_cache or (lambda data: None)
        return make_image_calibrator(self.trt, calibration.batches(io), calibration.upload, write)

    def _build(
        self, builder: Any, network: Any, config: Any, tracker: ProgressTracker, path: str
    ) -> bytes:
        f = self.features
        if f.build_serialized_network:
            serialized = builder.build_serialized_network(network, config)
        elif f.build_engine:
            engine = builder.build_engine(network, config)
            serialized = engine.serialize() if engine is not None else None
        else:
            raise EngineBuildError(
                "this TensorRT has neither build_serialized_network nor build_engine"
            )
        if serialized is None:
            if tracker.cancelled:
                raise EngineCancelled(f"{path}: engine build cancelled")
            raise EngineBuildError(
                "{}: TensorRT could not build the engine: {}".format(
                    path, recent_errors(self.trt_logger) or "no details in TensorRT's log"
                )
            )
        data = host_memory_bytes(serialized)
        if not data:
            raise EngineBuildError(f"{path}: TensorRT returned an empty engine")
        return data


def describe_network(network: Any) -> List[Dict[str, Any]]:
    """Inputs and outputs of a parsed network: name, mode, shape (-1 dynamic), dtype."""
    out = []  # type: List[Dict[str, Any]]
    for mode, count, get in (
        ("input", network.num_inputs, network.get_input),
        ("output", network.num_outputs, network.get_output),
    ):
        for i in range(count):
            tensor = get(i)
            out.append(
                {
                    "name": tensor.name,
                    "mode": mode,
                    "shape": [int(d) for d in tensor.shape],
                    "dtype": _dtype_name(tensor.dtype),
                }
            )
    return out


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype)).split(".")[-1].lower()


def network_precision(trt: Any, network: Any) -> str:
    """The lowest float precision among the network's layer outputs (strongly typed builds)."""
    found = "fp32"
    count = getattr(network, "num_layers", 0)
    for i in range(count):
        layer = network.get_layer(i)
        for j in range(getattr(layer, "num_outputs", 1)):
            name = _dtype_name(layer.get_output(j).dtype)
            if name == "int8" and _is_quantize(trt, layer):
                return "int8"
            if name in ("half", "float16", "bf16", "bfloat16"):
                found = "fp16"
    return found


def _is_quantize(trt: Any, layer: Any) -> bool:
    kind = getattr(getattr(trt, "LayerType", None), "QUANTIZE", None)
    return kind is not None and getattr(layer, "type", None) == kind


def _parser_errors(parser: Any) -> str:
    count = getattr(parser, "num_errors", 0)
    return "; ".join(str(parser.get_error(i)) for i in range(min(count, 5)))

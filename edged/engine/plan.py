"""Engine build decisions as pure functions: precision, device (GPU or DLA), profiles.

Each takes what the installed TensorRT offers (:class:`~edged.backends.tensorrt_api.Features`,
:class:`PlatformCaps`) and the requested :class:`~edged.engine.options.BuildOptions`, and returns
what to set and why the result differs from the request; :mod:`edged.engine.builder` applies
them. tests/test_engine_decisions.py checks them against a fake TensorRT per release.
"""

from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..backends.tensorrt_api import Features
from .errors import EngineBuildError
from .options import BuildOptions, Dims, Profile

GPU = "gpu"


class PlatformCaps(NamedTuple):
    """What the builder reports about the hardware (None: the API cannot say)."""

    fast_fp16: Optional[bool]
    fast_int8: Optional[bool]
    dla_cores: int


class PrecisionPlan(NamedTuple):
    obtained: str  # fp32 | fp16 | int8
    flags: Tuple[str, ...]  # BuilderFlag names to set
    notes: Tuple[str, ...]  # why the obtained precision differs from the request


class DevicePlan(NamedTuple):
    device: str  # "gpu" or "dla<N>"
    dla_core: Optional[int]
    flags: Tuple[str, ...]
    notes: Tuple[str, ...]


# -- decisions (pure functions; unit-tested with a fake TensorRT) ------------------------------


def negotiate_precision(
    requested: str,
    fallback: bool,
    features: Features,
    caps: PlatformCaps,
    calibration_available: bool,
    network_precision: str = "fp32",
) -> PrecisionPlan:
    """Which precision to build, and with which flags.

    Raises:
        EngineBuildError: the request cannot be met and ``fallback`` is False.
    """
    notes = []  # type: List[str]

    def refuse(why: str) -> None:
        if not fallback:
            raise EngineBuildError(
                f"precision {requested} is not available: {why} (precision_fallback is off)"
            )
        notes.append(f"{requested} requested, {why}")

    if features.strongly_typed:
        # TensorRT-RTX: no FP16/INT8 flags; the network's types are what it gets.
        if requested != network_precision and requested != "fp32":
            refuse(
                "the builder is strongly typed (no FP16/INT8 flags): the model's own "
                f"types ({network_precision}) are built"
            )
        return PrecisionPlan(network_precision, (), tuple(notes))
    fp16_ok = features.fp16_flag and caps.fast_fp16 is not False
    if requested == "int8":
        if not features.int8_flag:
            refuse("this TensorRT has no INT8 builder flag")
        elif caps.fast_int8 is False:
            refuse("the platform has no fast INT8 (compute capability < 6.1, e.g. Nano)")
        elif not features.int8_calibrator:
            refuse("this TensorRT has no INT8 calibrator API")
        elif not calibration_available:
            refuse("no calibration data (engine calibration.cache or calibration.images)")
        else:
            # tao_deploy enables FP16 next to INT8 for layers without INT8 kernels.
            flags = ("INT8", "FP16") if fp16_ok else ("INT8",)
            return PrecisionPlan("int8", flags, ())
        requested_next = "fp16"
    else:
        requested_next = requested
    if requested_next == "fp16":
        if fp16_ok:
            return PrecisionPlan("fp16", ("FP16",), tuple(notes))
        why = "the platform has no fast FP16" if features.fp16_flag else "no FP16 builder flag"
        if requested == "fp16":
            refuse(why)
        else:
            notes.append(f"fp16 unavailable too: {why}")
    return PrecisionPlan("fp32", (), tuple(notes))


def plan_device(
    dla_core: Optional[int],
    gpu_fallback: bool,
    features: Features,
    caps: PlatformCaps,
    precision: str,
) -> DevicePlan:
    """GPU or a DLA core (Xavier); DLA runs FP16/INT8 only (TensorRT developer guide, DLA).

    Raises:
        EngineBuildError: a DLA core was asked for, cannot be used, and ``gpu_fallback`` is off.
    """
    if dla_core is None:
        return DevicePlan(GPU, None, (), ())
    why = None  # type: Optional[str]
    if not features.dla:
        why = "this TensorRT has no DLA API"
    elif dla_core >= caps.dla_cores:
        why = f"the platform has {caps.dla_cores} DLA core(s)"
    elif precision == "fp32":
        why = "DLA runs FP16/INT8 only and the engine is fp32"
    if why is not None:
        if not gpu_fallback:
            raise EngineBuildError(
                f"DLA core {dla_core} cannot be used: {why} (gpu_fallback is off)"
            )
        return DevicePlan(
            GPU, None, (), (f"DLA core {dla_core} requested, {why}: built for the GPU",)
        )
    flags = ("GPU_FALLBACK",) if gpu_fallback and features.gpu_fallback_flag else ()
    return DevicePlan(f"dla{dla_core}", dla_core, flags, ())


def plan_profiles(
    inputs: Sequence[Tuple[str, Dims]], options: BuildOptions
) -> Tuple[Dict[str, Profile], List[str]]:
    """min/opt/max shapes for every input with a dynamic (-1) dimension.

    The batch (dimension 0) runs 1..max_batch, optimized for max_batch; a
    dynamic channel/height/width takes ``input.height``/``input.width`` of the
    config; ``models.NAME.engine.profiles`` overrides all of it per input.

    Raises:
        EngineBuildError: a dynamic dimension has no value to use.
    """
    profiles = {}  # type: Dict[str, Profile]
    notes = []  # type: List[str]
    for name, dims in inputs:
        if name in options.profiles:
            profiles[name] = options.profiles[name]
            continue
        if all(d >= 0 for d in dims):
            if options.max_batch > 1 and dims and dims[0] == 1:
                notes.append(
                    f"input {name} has a static batch of 1: "
                    f"max_batch {options.max_batch} does not apply"
                )
            continue
        lo, opt, hi = [], [], []
        for axis, d in enumerate(dims):
            if d >= 0:
                values = (d, d, d)
            elif axis == 0:
                values = (1, options.max_batch, options.max_batch)
            else:
                fixed = _spatial(axis, len(dims), options)
                if fixed is None:
                    raise EngineBuildError(
                        f"input {name} has a dynamic dimension {axis} ({list(dims)}): set "
                        f"input.height/width or models.NAME.engine.profiles.{name}"
                    )
                values = (fixed, fixed, fixed)
            lo.append(values[0])
            opt.append(values[1])
            hi.append(values[2])
        profiles[name] = (tuple(lo), tuple(opt), tuple(hi))
    return profiles, notes


def _spatial(axis: int, rank: int, options: BuildOptions) -> Optional[int]:
    if rank == 4 and axis == 2:
        return options.input_height
    if rank == 4 and axis == 3:
        return options.input_width
    if rank == 4 and axis == 1:
        return 3
    return None


def strict_types_flag(trt: Any) -> str:
    """The BuilderFlag that makes layers keep their requested precision.

    TensorRT 8.2 renamed STRICT_TYPES to OBEY_PRECISION_CONSTRAINTS (TensorRT 8.2 release
    notes, "Deprecated API"); a strongly typed builder (TensorRT-RTX) needs neither.

    Raises:
        EngineBuildError: this TensorRT has neither flag.
    """
    flags = getattr(trt, "BuilderFlag", None)
    for name in ("OBEY_PRECISION_CONSTRAINTS", "STRICT_TYPES"):
        if hasattr(flags, name):
            return name
    raise EngineBuildError("this TensorRT has no strict-types builder flag")

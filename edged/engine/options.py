"""What to build: one model's effective TensorRT build settings (:class:`BuildOptions`).

The config has a top-level ``engine`` section (cache, defaults) and a per-model
``models.NAME.engine`` section (overrides, batch, profiles, calibration);
:func:`options_for_model` merges them once so the builder, the cache key and
the child-process protocol all see the same values. Defaults are conservative
for the 4 GB Nano: FP16 with a fallback, 256 MiB workspace (Nano builds get OOM-killed:
dusty-nv/jetson-inference#649, jkjung-avt/tensorrt_demos#293).
"""

from typing import Any, Dict, Optional, Sequence, Tuple

from ..config import ModelConfig
from ..errors import ConfigError
from ..tasks.registry import calibration_request

PRECISIONS = ("fp32", "fp16", "int8")
MIB = 1 << 20

Dims = Tuple[int, ...]
Profile = Tuple[Dims, Dims, Dims]  # min, opt, max

#: DetectNet_v2 outputs a UFF parse registers when the config names none (tao-converter's
#: ``-o`` in jetson-inference ``tools/tao-model-downloader.sh``).
UFF_DEFAULT_OUTPUTS = ("output_cov/Sigmoid", "output_bbox/BiasAdd")


class BuildOptions:
    """Effective build settings of one model. Immutable by convention; JSON round-trips."""

    FIELDS = (
        "precision",
        "precision_fallback",
        "workspace_bytes",
        "dla_core",
        "gpu_fallback",
        "max_batch",
        "profiles",
        "input_width",
        "input_height",
        "output_names",
        "calibration_cache",
        "calibration_images",
        "calibration_max_images",
        "calibration_batch_size",
        "calibration_preprocess",
        "timing_cache",
        "strict_types",
    )

    def __init__(
        self,
        precision: str = "fp16",
        precision_fallback: bool = True,
        workspace_bytes: int = 256 * MIB,
        dla_core: Optional[int] = None,
        gpu_fallback: bool = True,
        max_batch: int = 1,
        profiles: Optional[Dict[str, Profile]] = None,
        input_width: Optional[int] = None,
        input_height: Optional[int] = None,
        output_names: Sequence[str] = (),
        calibration_cache: Optional[str] = None,
        calibration_images: Optional[str] = None,
        calibration_max_images: int = 500,
        calibration_batch_size: int = 8,
        calibration_preprocess: Optional[Dict[str, Any]] = None,
        timing_cache: bool = True,
        strict_types: bool = False,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(
                "engine precision {!r}: expected one of {}".format(precision, ", ".join(PRECISIONS))
            )
        if workspace_bytes < MIB:
            raise ConfigError(f"engine workspace: {workspace_bytes} bytes is less than 1 MiB")
        if max_batch < 1:
            raise ConfigError(f"engine max_batch must be >= 1, got {max_batch}")
        self.precision = precision
        self.precision_fallback = bool(precision_fallback)
        self.workspace_bytes = int(workspace_bytes)
        self.dla_core = None if dla_core is None or dla_core < 0 else int(dla_core)
        self.gpu_fallback = bool(gpu_fallback)
        self.max_batch = int(max_batch)
        self.profiles = {
            name: _profile(name, value) for name, value in sorted((profiles or {}).items())
        }  # type: Dict[str, Profile]
        self.input_width = input_width
        self.input_height = input_height
        self.output_names = tuple(output_names)
        self.calibration_cache = calibration_cache
        self.calibration_images = calibration_images
        self.calibration_max_images = int(calibration_max_images)
        self.calibration_batch_size = int(calibration_batch_size)
        # not a contract yet: under ``task: auto`` the task, and so its contract, is known
        # only once the network is parsed (edged.tasks.registry.calibration_contract)
        self.calibration_preprocess = dict(
            calibration_preprocess or calibration_request(ModelConfig(name="", path=""))
        )
        self.timing_cache = bool(timing_cache)
        # layers keep the precision asked for (tao-converter -s; TensorRT's
        # OBEY_PRECISION_CONSTRAINTS, STRICT_TYPES before 8.2)
        self.strict_types = bool(strict_types)

    def to_dict(self) -> Dict[str, Any]:
        out = {name: getattr(self, name) for name in self.FIELDS}
        out["profiles"] = {k: [list(d) for d in v] for k, v in self.profiles.items()}
        out["output_names"] = list(self.output_names)
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "BuildOptions":
        unknown = set(data) - set(cls.FIELDS)
        if unknown:
            raise ConfigError("unknown build options: {}".format(", ".join(sorted(unknown))))
        return cls(**data)

    def key_dict(self) -> Dict[str, Any]:
        """The settings that shape the engine (cache key). Calibration enters as a hash
        (edged.engine.fingerprint), paths and the timing cache do not."""
        return {
            "precision_requested": self.precision,
            "precision_fallback": self.precision_fallback,
            "workspace_bytes": self.workspace_bytes,
            "dla_core": self.dla_core,
            "gpu_fallback": self.gpu_fallback,
            "max_batch": self.max_batch,
            "profiles": {k: [list(d) for d in v] for k, v in self.profiles.items()},
            "input_width": self.input_width,
            "input_height": self.input_height,
            "output_names": list(self.output_names),
            "strict_types": self.strict_types,
        }

    def replace(self, **changes: Any) -> "BuildOptions":
        values = self.to_dict()
        values.update(changes)
        return BuildOptions(**values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BuildOptions) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"BuildOptions({self.precision}, workspace {self.workspace_bytes // MIB} MiB, "
            f"dla {self.dla_core}, max_batch {self.max_batch})"
        )


def _profile(name: str, value: Any) -> Profile:
    if isinstance(value, dict):
        value = (value["min"], value["opt"], value["max"])
    lo, opt, hi = (tuple(int(d) for d in dims) for dims in value)
    if not (len(lo) == len(opt) == len(hi)):
        raise ConfigError(f"engine profile {name}: min, opt and max need the same rank")
    if any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)):
        raise ConfigError(
            f"engine profile {name}: need min <= opt <= max in every dimension "
            f"(got {list(lo)}, {list(opt)}, {list(hi)})"
        )
    return lo, opt, hi


def options_for_model(engine: Any, model: Any) -> BuildOptions:
    """Merge the top-level ``engine`` section with ``models.NAME.engine`` and ``input``.

    Args:
        engine: :class:`edged.config.EngineConfig`.
        model: :class:`edged.config.ModelConfig`.
    """
    own = model.engine

    def pick(name: str) -> Any:
        value = getattr(own, name)
        return getattr(engine, name) if value is None else value

    inp = model.input
    det = model.detection
    outputs = ()  # type: Tuple[str, ...]
    if det.coverage_output or det.bbox_output:
        outputs = tuple(n for n in (det.coverage_output, det.bbox_output) if n)
    return BuildOptions(
        precision=pick("precision"),
        precision_fallback=pick("precision_fallback"),
        workspace_bytes=int(pick("workspace_mb")) * MIB,
        dla_core=pick("dla_core"),
        gpu_fallback=pick("gpu_fallback"),
        max_batch=own.max_batch,
        profiles={name: (p.min, p.opt, p.max) for name, p in own.profiles.items()},
        input_width=inp.width,
        input_height=inp.height,
        output_names=outputs,
        calibration_cache=own.calibration.cache,
        calibration_images=own.calibration.images,
        calibration_max_images=own.calibration.max_images,
        calibration_batch_size=own.calibration.batch_size,
        calibration_preprocess=calibration_request(model),
        timing_cache=engine.timing_cache,
        strict_types=pick("strict_types"),
    )

"""The DetectNet_v2 task (PeopleNet and its siblings): tensors, per-class settings, decode.

Binds a backend's tensors (found by alias: ``output_cov/Sigmoid``,
``conv2d_cov/Sigmoid``, ``...:0``) to the numpy decoder and
clustering of ``detection.py``. Per-class settings resolve in this order:
the config's entry for the class label, the config's ``default`` entry,
then the built-in values of the ``detection.compat`` reference
(:mod:`edged.tasks.compat_deepstream`: DeepStream's PeopleNet config, threshold
0.2 and 0.4 for ``person``, NMS IoU 0.5, top-k 20;
:mod:`edged.tasks.compat_tao`: TAO deploy's defaults and PeopleNet's spec).
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from ..backends.base import Backend, TensorSpec, find_tensor
from ..config import ClassSettings, ModelConfig
from ..errors import ConfigError, ModelContractError
from .base import Size, Task, Tensors
from .compat import get_compat
from .contract import InputDefaults
from .detection import (
    BBOX_ALIASES,
    COVERAGE_ALIASES,
    INPUT_ALIASES,
    ClusterParams,
    DecodeParams,
    DetectNetV2Postprocessor,
)
from .labels import check_label_count

T = TypeVar("T")

__all__ = ["BBOX_ALIASES", "COVERAGE_ALIASES", "DetectNetV2Task", "class_settings"]


def _merge(layers: Sequence[Optional[ClassSettings]]) -> ClassSettings:
    """The first non-None value of each field, from the most to the least specific layer."""
    values: Dict[str, Any] = {}
    for field in ClassSettings.__dataclass_fields__:
        for layer in layers:
            if layer is not None and getattr(layer, field) is not None:
                values[field] = getattr(layer, field)
                break
    return ClassSettings(**values)


def class_settings(config: ModelConfig, labels: Sequence[str]) -> List[ClassSettings]:
    """Fully resolved settings for each class, in class order.

    Raises:
        ConfigError: ``detection.classes`` names a class the model does not have.
    """
    compat = get_compat(config.detection.compat)
    configured = config.detection.classes
    unknown = sorted(set(configured) - set(labels) - {"default"})
    if unknown:
        raise ConfigError(
            "models.{}.detection.classes.{}: no such class (the model's classes are: {})".format(
                config.name, unknown[0], ", ".join(labels)
            )
        )
    for key, entry in configured.items():  # name the entry whose values do not combine
        try:
            _cluster_params(_merge([entry, compat.builtin_default]))
        except ConfigError as e:
            raise ConfigError(f"models.{config.name}.detection.classes.{key}: {e}") from e
    return [
        _merge(
            [
                configured.get(label),
                configured.get("default"),
                compat.builtin_by_label.get(label.lower()),
                compat.builtin_default,
            ]
        )
        for label in labels
    ]


def _cluster_params(s: ClassSettings) -> ClusterParams:
    return ClusterParams(
        method=_set(s.clustering),
        iou_threshold=_set(s.iou_threshold),
        top_k=_set(s.top_k),
        eps=_set(s.eps),
        min_boxes=_set(s.min_boxes),
        dbscan_min_score=_set(s.min_score),
        post_threshold=_set(s.post_threshold),
        min_cluster_height=_set(s.min_cluster_height),
    )


def _set(value: Optional[T]) -> T:
    """A field of fully resolved settings (:func:`class_settings` ends with the built-ins,
    which set every field)."""
    if value is None:
        raise ConfigError("internal: a detection setting was left unresolved")
    return value


def _output(backend: Tensors, name: Optional[str], aliases: Sequence[str], role: str,
            model: str) -> TensorSpec:  # fmt: skip
    return find_tensor(backend.outputs, [name] if name else aliases, role, model)


class DetectNetV2Task(Task):
    kind = "detection"
    config_section = "detection"
    input_defaults = InputDefaults(scale=1.0 / 255.0, resize="linear")  # RGB, x/255, stretch
    input_aliases = INPUT_ALIASES
    recognition_keys = ("coverage_output", "bbox_output")

    @classmethod
    def matches(cls, model: Tensors, config: ModelConfig) -> bool:
        """A model with DetectNet_v2 coverage and bbox outputs (configured or alias names)."""
        det = config.detection
        try:
            _output(model, det.coverage_output, COVERAGE_ALIASES, "coverage", config.path)
            _output(model, det.bbox_output, BBOX_ALIASES, "bbox", config.path)
        except ModelContractError:
            return False
        return True

    def __init__(self, backend: Backend, config: ModelConfig, labels: Any) -> None:
        det = config.detection
        self.coverage = _output(backend, det.coverage_output, COVERAGE_ALIASES, "coverage",
                                config.path)  # fmt: skip
        self.bbox = _output(backend, det.bbox_output, BBOX_ALIASES, "bbox", config.path)
        classes = self.coverage.shape[1]
        if not classes:
            classes = len(labels) if labels else 1
        super().__init__(backend, config, check_label_count(labels, classes, config.path))
        self.settings = class_settings(config, self.labels)
        self.postprocessor = DetectNetV2Postprocessor(
            self.labels,
            DecodeParams(
                stride=det.stride,
                bbox_norm=det.bbox_norm,
                offset=det.offset,
                thresholds=tuple(float(_set(s.threshold)) for s in self.settings),
                min_width=det.min_width,
                min_height=det.min_height,
            ),
            [_cluster_params(s) for s in self.settings],
            det.compat,
        )

    def grid_outputs(self) -> Optional[Tuple[str, str, Tuple[int, int, int], np.ndarray]]:
        """(coverage name, bbox name, (classes, H, W), float32 thresholds per class) for
        selecting candidates on the GPU (edged/gpu/select.py); None unless the grids have a
        fixed size and float32 values. Classes beyond the labels, which post-processing
        ignores, get an infinite threshold."""
        shape = self.coverage.shape[1:]
        if len(shape) != 3 or any(d is None for d in shape):
            return None
        classes, gh, gw = (int(d) for d in shape)  # type: ignore[arg-type]
        if self.bbox.shape[1:] != (4 * classes, gh, gw) or not (
            self.coverage.dtype == self.bbox.dtype == np.float32
        ):  # the kernel reads 4C x H x W float32 terms
            return None
        known = self.postprocessor.decode.class_thresholds(len(self.labels))
        thresholds = np.full(classes, np.inf, np.float32)
        thresholds[: len(known)] = known[:classes]
        return self.coverage.name, self.bbox.name, (classes, gh, gw), thresholds

    def postprocess(self, outputs: Dict[str, np.ndarray], source_size: Size) -> List[Any]:
        return self.postprocessor(
            outputs[self.coverage.name],
            outputs[self.bbox.name],
            source_size[0],
            source_size[1],
            self.width,
            self.height,
        )

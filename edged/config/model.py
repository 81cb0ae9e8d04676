"""Frozen dataclasses for a validated configuration (built by ``edged.config``).

Field meanings and defaults are documented once, in ``schema.json`` and the
commented ``configs/edged.yaml``; these classes only give them types.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

Triple = Tuple[float, float, float]


@dataclass(frozen=True)
class InputConfig:
    """Pre-processing overrides; None means "the task's default"."""

    name: Optional[str] = None
    color: str = "rgb"
    scale: Optional[float] = None
    mean: Optional[Triple] = None
    std: Optional[Triple] = None
    resize: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None


@dataclass(frozen=True)
class ClassificationConfig:
    output: Optional[str] = None
    top_k: int = 1
    threshold: float = 0.01
    softmax: str = "auto"


@dataclass(frozen=True)
class ClassSettings:
    """Per-class detection settings; None means "inherit" (from 'default', then built-ins)."""

    threshold: Optional[float] = None
    clustering: Optional[str] = None
    iou_threshold: Optional[float] = None
    top_k: Optional[int] = None
    eps: Optional[float] = None
    min_boxes: Optional[int] = None
    min_score: Optional[float] = None
    post_threshold: Optional[float] = None


@dataclass(frozen=True)
class DetectionConfig:
    coverage_output: Optional[str] = None
    bbox_output: Optional[str] = None
    stride: int = 16
    bbox_norm: float = 35.0
    offset: float = 0.5
    min_width: float = 4.0
    min_height: float = 4.0
    classes: Dict[str, ClassSettings] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: str
    task: str = "auto"
    version: str = ""
    key: Optional[str] = field(default=None, repr=False)  # a secret: never in repr/logs
    key_env: Optional[str] = None
    key_file: Optional[str] = None
    labels: Optional[str] = None
    class_names: Optional[Tuple[str, ...]] = None
    backend: str = "onnxruntime"
    threads: int = 0
    input: InputConfig = field(default_factory=InputConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)


@dataclass(frozen=True)
class StreamConfig:
    """One stream; ``source`` is the parsed :class:`~edged.sources.uri.SourceSpec`."""

    name: str
    source: Any  # SourceSpec (typed loosely: config must not import the capture stack)
    model: str
    enabled: bool = True
    stall_timeout_s: float = 20.0
    frozen_timeout_s: Optional[float] = None
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0


@dataclass(frozen=True)
class PipelineConfig:
    max_batch: int = 1
    result_queue: int = 256
    summary_interval_s: float = 10.0
    drain_timeout_s: float = 5.0
    inference_timeout_s: float = 30.0


@dataclass(frozen=True)
class Config:
    device_id: str = "edged"
    log_level: str = "info"
    models: Dict[str, ModelConfig] = field(default_factory=dict)
    streams: Dict[str, StreamConfig] = field(default_factory=dict)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

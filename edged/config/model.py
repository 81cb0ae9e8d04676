"""Frozen dataclasses for a validated configuration (built by ``edged.config``).

Field meanings and defaults are documented once, in ``schema.json`` and the
commented ``configs/edged.yaml``; these classes only give them types.
``edged.config.generic`` builds them field by field from the validated mapping: a
new key needs its schema entry and its field here (and its line in the YAML).
"""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from .generic import PATH_KEY

Triple = Tuple[float, float, float]

#: Field metadata: a path, resolved against the config file's directory when built.
PATH = {PATH_KEY: True}


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
    min_cluster_height: Optional[float] = None


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
    compat: str = "deepstream"  # edged/tasks/compat.py registry


# -- tracking and counting (edged/tracking) ------------------------------------------------
@dataclass(frozen=True)
class TrackingConfig:
    # ByteTrack's defaults: track_thresh 0.5, the second pass's IOU 0.5, the first pass's
    # match_thresh 0.8 as a cost, i.e. IOU 0.2 (ByteTrack, yolox/tracker/byte_tracker.py)
    enabled: bool = False
    high_threshold: float = 0.5
    low_threshold: float = 0.1
    new_track_threshold: float = 0.5
    match_iou: float = 0.2
    low_match_iou: float = 0.5
    min_hits: int = 3
    max_misses: int = 30
    per_class: bool = True
    anchor: str = "bottom_center"


@dataclass(frozen=True)
class ZoneConfig:
    name: str
    points: Tuple[Tuple[float, float], ...]
    units: str = "pixels"
    labels: Tuple[str, ...] = ()


@dataclass(frozen=True)
class LineConfig:
    name: str
    start: Tuple[float, float]
    end: Tuple[float, float]
    units: str = "pixels"
    labels: Tuple[str, ...] = ()
    hysteresis: float = 4.0


# -- TensorRT engines (edged/engine) ------------------------------------------------------
@dataclass(frozen=True)
class CalibrationConfig:
    """INT8 calibration: a given cache file, or a folder of images (paths resolved)."""

    cache: Optional[str] = field(default=None, metadata=PATH)
    images: Optional[str] = field(default=None, metadata=PATH)
    max_images: int = 500
    batch_size: int = 8


@dataclass(frozen=True)
class ProfileConfig:
    """One input's optimization profile (min <= opt <= max per dimension)."""

    min: Tuple[int, ...]
    opt: Tuple[int, ...]
    max: Tuple[int, ...]


@dataclass(frozen=True)
class ModelEngineConfig:
    """``models.NAME.engine``: None means "the top-level engine section's value"."""

    precision: Optional[str] = None
    precision_fallback: Optional[bool] = None
    workspace_mb: Optional[int] = None
    dla_core: Optional[int] = None  # -1: GPU even when the top level names a DLA core
    gpu_fallback: Optional[bool] = None
    strict_types: Optional[bool] = None
    max_batch: int = 1
    profiles: Dict[str, ProfileConfig] = field(default_factory=dict)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)


@dataclass(frozen=True)
class EngineConfig:
    """The top-level ``engine`` section: cache and build defaults."""

    # None: $CACHE_DIRECTORY/engines or ~/.cache/edged/engines
    cache_dir: Optional[str] = field(default=None, metadata=PATH)
    cache_max_mb: int = 2048
    tensorrt_module: str = "auto"
    build_timeout_s: float = 3600.0
    timing_cache: bool = True
    precision: str = "fp16"
    precision_fallback: bool = True
    workspace_mb: int = 256
    dla_core: Optional[int] = None
    gpu_fallback: bool = True
    strict_types: bool = False


@dataclass(frozen=True)
class ModelConfig:
    name: str
    path: str = field(metadata=PATH)
    task: str = "auto"
    version: str = ""
    key: Optional[str] = field(default=None, repr=False)  # a secret: never in repr/logs
    key_env: Optional[str] = None
    key_file: Optional[str] = field(default=None, metadata=PATH)
    labels: Optional[str] = field(default=None, metadata=PATH)
    class_names: Optional[Tuple[str, ...]] = None
    backend: str = "onnxruntime"
    threads: int = 0
    memory_pattern: bool = False
    memory_arena: str = "as_requested"
    input: InputConfig = field(default_factory=InputConfig)
    classification: ClassificationConfig = field(default_factory=ClassificationConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    engine: ModelEngineConfig = field(default_factory=ModelEngineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


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
    zones: Tuple[ZoneConfig, ...] = ()
    lines: Tuple[LineConfig, ...] = ()


@dataclass(frozen=True)
class PipelineConfig:
    max_batch: int = 1
    overlap: bool = True
    result_queue: int = 256
    summary_interval_s: float = 10.0
    drain_timeout_s: float = 5.0
    inference_timeout_s: float = 30.0
    preprocess: str = "auto"  # auto | cpu | cuda (edged/pipeline/preprocessors.py)


# -- metrics (edged/metrics) ---------------------------------------------------------------
@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108
    telemetry_interval_s: float = 1.0


# -- MQTT (edged/mqtt) ---------------------------------------------------------------------
@dataclass(frozen=True)
class MqttPublishConfig:
    """When a stream's results are published (``edged.mqtt.policy``)."""

    mode: str = "every_frame"
    heartbeat_s: float = 10.0
    max_rate: float = 0.0


@dataclass(frozen=True)
class MqttTlsConfig:
    enabled: bool = False
    ca_file: Optional[str] = field(default=None, metadata=PATH)
    cert_file: Optional[str] = field(default=None, metadata=PATH)
    key_file: Optional[str] = field(default=None, metadata=PATH)


@dataclass(frozen=True)
class MqttOutboxConfig:
    # None: $STATE_DIRECTORY or ~/.local/state/edged
    path: Optional[str] = field(default=None, metadata=PATH)
    max_bytes: int = 64 << 20
    commit_interval_ms: float = 50.0
    commit_batch: int = 100
    fsync: bool = False


@dataclass(frozen=True)
class MqttCommandsConfig:
    """``mqtt.commands``: who may command this device (edged/mqtt/signedcmd.py)."""

    require_signature: bool = False
    keys_file: Optional[str] = field(default=None, metadata=PATH)


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int = 1883
    topic_prefix: str = "edged"
    client_id: Optional[str] = None  # None: "edged-<device_id>"
    keepalive_s: float = 30.0
    qos: int = 1
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)  # a secret: never in repr/logs
    password_env: Optional[str] = None
    password_file: Optional[str] = field(default=None, metadata=PATH)
    tls: MqttTlsConfig = field(default_factory=MqttTlsConfig)
    outbox: MqttOutboxConfig = field(default_factory=MqttOutboxConfig)
    max_inflight: int = 20
    ack_timeout_s: float = 10.0
    connect_timeout_s: float = 5.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_payload_bytes: int = 65536
    max_command_bytes: int = 65536
    protocol: str = "5"  # "5" | "3.1.1"
    command_max_age_s: float = 60.0
    commands: MqttCommandsConfig = field(default_factory=MqttCommandsConfig)
    publish: MqttPublishConfig = field(default_factory=MqttPublishConfig)
    streams: Dict[str, MqttPublishConfig] = field(default_factory=dict)
    home_assistant: bool = False  # discovery of the counts (edged/mqtt/discovery.py)


# -- model updates over MQTT (edged/update) -------------------------------------------------
@dataclass(frozen=True)
class UpdateConfig:
    enabled: bool = False
    keys_file: Optional[str] = field(default=None, metadata=PATH)
    # None: $STATE_DIRECTORY or ~/.local/state/edged
    state_dir: Optional[str] = field(default=None, metadata=PATH)
    groups: Tuple[str, ...] = ()
    probation_s: float = 60.0
    window: int = 8
    request_timeout_s: float = 10.0
    transfer_stall_s: float = 3600.0
    step_timeout_s: float = 600.0
    build_timeout_s: float = 3600.0
    max_total_mb: int = 1024
    max_chunks: int = 32768


@dataclass(frozen=True)
class Config:
    device_id: str = "edged"
    log_level: str = "info"
    models: Dict[str, ModelConfig] = field(default_factory=dict)
    streams: Dict[str, StreamConfig] = field(default_factory=dict)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    mqtt: Optional[MqttConfig] = None  # None when MQTT is not configured
    update: UpdateConfig = field(default_factory=UpdateConfig)  # edged/update

"""edged's configuration: one YAML file, validated against ``schema.json``, frozen.

``load_config(path)`` reads the file, rejects duplicate keys, validates it
(unknown keys, types, bounds; every message names the key path), fills the
documented defaults, resolves relative paths against the file's directory
and returns a frozen :class:`Config`. Any problem raises one
:class:`~edged.errors.ConfigError` whose message starts with the file name.
The schema is published as ``configs/edged.schema.json`` for editors.
"""

import json
import os
from typing import Any, Dict, Mapping, Optional, Tuple

from ..errors import ConfigError
from ..files import read_bounded
from .model import (
    ClassificationConfig,
    ClassSettings,
    Config,
    DetectionConfig,
    EngineConfig,
    InputConfig,
    LineConfig,
    MetricsConfig,
    ModelConfig,
    MqttConfig,
    MqttOutboxConfig,
    MqttPublishConfig,
    MqttTlsConfig,
    PipelineConfig,
    StreamConfig,
    TrackingConfig,
    ZoneConfig,
)
from .validate import SchemaValidator, first_error
from .yamlfile import load_yaml

__all__ = [
    "ClassSettings",
    "ClassificationConfig",
    "Config",
    "DetectionConfig",
    "EngineConfig",
    "InputConfig",
    "MetricsConfig",
    "ModelConfig",
    "MqttConfig",
    "MqttOutboxConfig",
    "MqttPublishConfig",
    "MqttTlsConfig",
    "PipelineConfig",
    "StreamConfig",
    "TrackingConfig",
    "ZoneConfig",
    "LineConfig",
    "load_config",
    "check_reloadable",
    "parse_config",
    "build_config",
    "schema",
    "model_config_from_dict",
]

#: Config files larger than this are refused before parsing.
MAX_CONFIG_BYTES = 1 << 20

_SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "schema.json")
_schema_cache = {}  # type: Dict[str, Any]


def schema() -> Dict[str, Any]:
    """The configuration's JSON Schema (a fresh copy)."""
    if "schema" not in _schema_cache:
        with open(_SCHEMA_PATH) as f:
            _schema_cache["schema"] = json.load(f)
    return json.loads(json.dumps(_schema_cache["schema"]))


def load_config(path: str) -> Config:
    """Read, validate and freeze the config file at ``path``.

    Raises:
        ConfigError: unreadable, not YAML, or invalid; the message names the file
            and the key path.
    """
    raw = read_bounded(path, MAX_CONFIG_BYTES, "config file", ConfigError)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from e
    try:
        return parse_config(text, base_dir=os.path.dirname(os.path.abspath(path)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e


def check_reloadable(config: Config, path: str) -> None:
    """Refuse, as a reload, a config without models or without streams.

    Applied, it would stop every stream and model while reporting success: far more often an
    empty, truncated or half-written file than a wish (which stopping the service expresses).
    Start-up still accepts it: there is nothing running to lose.

    Raises:
        ConfigError: no models or no streams; the message names the file.
    """
    missing = [name for name, items in (("models", config.models), ("streams", config.streams))
               if not items]  # fmt: skip
    if missing:
        raise ConfigError(
            "{}: no {}: a reload would stop every stream and model (an empty or truncated "
            "file?); to stop edged, stop its service".format(path, " and no ".join(missing))
        )


def parse_config(text: str, base_dir: str = ".") -> Config:
    """Validate YAML ``text``; relative paths resolve against ``base_dir``."""
    data = load_yaml(text)
    return build_config({} if data is None else data, base_dir)


def build_config(data: Any, base_dir: str = ".") -> Config:
    """Validate an already-parsed config mapping; relative paths resolve against ``base_dir``."""
    validator = SchemaValidator(schema())
    problem = first_error(validator.errors(data))
    if problem:
        raise ConfigError(problem)
    data = validator.apply_defaults(data)
    models = {}  # type: Dict[str, ModelConfig]
    for name, raw_model in data["models"].items():
        models[name] = model_config_from_dict(name, raw_model, base_dir)
    streams = {}  # type: Dict[str, StreamConfig]
    for name, raw_stream in data["streams"].items():
        streams[name] = stream_config_from_dict(name, raw_stream, models, base_dir)
    return Config(
        device_id=data["device_id"],
        log_level=data["log_level"],
        models=models,
        streams=streams,
        pipeline=PipelineConfig(**data["pipeline"]),
        engine=engine_config_from_dict(data["engine"], base_dir),  # edged/engine
        metrics=MetricsConfig(**data["metrics"]),
        mqtt=mqtt_config_from_dict(data["mqtt"], streams, base_dir),  # edged/mqtt
    )


def stream_config_from_dict(
    name: str, raw: Mapping[str, Any], models: Mapping[str, ModelConfig], base_dir: str
) -> StreamConfig:
    """Build a :class:`StreamConfig`; the source string is parsed (and checked) here."""
    from ..sources.uri import parse_source

    where = f"streams.{name}"
    if raw["model"] not in models:
        raise ConfigError("{}.model: no model named {!r} (models: {})".format(
            where, raw["model"], ", ".join(sorted(models)) or "none"))  # fmt: skip
    if raw["backoff_max_s"] < raw["backoff_initial_s"]:
        raise ConfigError("{}.backoff_max_s: {} is less than backoff_initial_s {}".format(
            where, raw["backoff_max_s"], raw["backoff_initial_s"]))  # fmt: skip
    spec = parse_source(
        raw["source"],
        width=raw["width"],
        height=raw["height"],
        fps=raw["fps"],
        loop=raw["loop"],
        realtime=raw["realtime"],
        transport=raw["transport"],
        open_timeout_s=raw["open_timeout_s"],
        read_timeout_s=raw["read_timeout_s"],
        fourcc=raw["fourcc"],
        flip_method=raw["flip_method"],
        key=where + ".source",
        base_dir=base_dir,  # a relative path resolves once the sources table says it is one
    )
    return StreamConfig(
        name=name,
        source=spec,
        model=raw["model"],
        enabled=raw["enabled"],
        stall_timeout_s=float(raw["stall_timeout_s"]),
        frozen_timeout_s=raw["frozen_timeout_s"],
        backoff_initial_s=float(raw["backoff_initial_s"]),
        backoff_max_s=float(raw["backoff_max_s"]),
        zones=tuple(_zone(where, n, z, models[raw["model"]]) for n, z in raw["zones"].items()),
        lines=tuple(_line(where, n, ln, models[raw["model"]]) for n, ln in raw["lines"].items()),
    )


# -- tracking and counting (edged/tracking) -----------------------------------------------


def _points_problem(units: str, points: Any) -> Optional[str]:
    if units == "fraction" and any(not 0.0 <= v <= 1.0 for p in points for v in p):
        return "units is fraction but a point is outside 0..1 (did you mean units: pixels?)"
    if units == "pixels" and any(v < 0 for p in points for v in p):
        return "a point has a negative pixel coordinate"
    return None


def _counting_checks(key: str, units: str, points: Any, model: ModelConfig) -> None:
    if not model.tracking.enabled:
        raise ConfigError(f"{key}: model {model.name!r} does not track (set its tracking.enabled)")
    problem = _points_problem(units, points)
    if problem:
        raise ConfigError(f"{key}: {problem}")


def _zone(where: str, name: str, raw: Mapping[str, Any], model: ModelConfig) -> ZoneConfig:
    _counting_checks(f"{where}.zones.{name}", raw["units"], raw["points"], model)
    points = tuple((float(x), float(y)) for x, y in raw["points"])
    return ZoneConfig(name=name, points=points, units=raw["units"], labels=tuple(raw["labels"]))


def _line(where: str, name: str, raw: Mapping[str, Any], model: ModelConfig) -> LineConfig:
    key = f"{where}.lines.{name}"
    _counting_checks(key, raw["units"], (raw["start"], raw["end"]), model)
    start = (float(raw["start"][0]), float(raw["start"][1]))
    end = (float(raw["end"][0]), float(raw["end"][1]))
    if start == end:
        raise ConfigError(f"{key}: start and end are the same point")
    return LineConfig(name=name, start=start, end=end, units=raw["units"],
                      labels=tuple(raw["labels"]), hysteresis=float(raw["hysteresis"]))  # fmt: skip


# -- MQTT (edged/mqtt) ---------------------------------------------------------------------


def mqtt_config_from_dict(
    raw: Optional[Mapping[str, Any]], streams: Mapping[str, StreamConfig], base_dir: str
) -> Optional[MqttConfig]:
    """Build the :class:`MqttConfig` of a validated ``mqtt`` section (None: MQTT off)."""
    from ..mqtt.topics import prefix_problem

    if raw is None:
        return None
    sources = [k for k in ("password", "password_env", "password_file") if raw.get(k) is not None]
    if len(sources) > 1:
        raise ConfigError("mqtt: set only one of password, password_env, password_file (got {})"
                          .format(", ".join(sources)))  # fmt: skip
    if sources and raw.get("username") is None:
        raise ConfigError(f"mqtt.{sources[0]}: a password needs mqtt.username (MQTT 3.1.1)")
    problem = prefix_problem(raw["topic_prefix"])
    if problem:
        raise ConfigError("mqtt.topic_prefix: {!r} {}".format(raw["topic_prefix"], problem))
    if raw["backoff_max_s"] < raw["backoff_initial_s"]:
        raise ConfigError("mqtt.backoff_max_s: {} is less than backoff_initial_s {}".format(
            raw["backoff_max_s"], raw["backoff_initial_s"]))  # fmt: skip
    tls = raw["tls"]
    files = [k for k in ("ca_file", "cert_file", "key_file") if tls.get(k) is not None]
    if files and not tls["enabled"]:
        raise ConfigError(f"mqtt.tls.{files[0]}: set, but mqtt.tls.enabled is false")
    if tls.get("key_file") is not None and tls.get("cert_file") is None:
        raise ConfigError("mqtt.tls.key_file: needs mqtt.tls.cert_file")
    publish = dict(raw["publish"])
    per_stream = {}  # type: Dict[str, MqttPublishConfig]
    for stream_id, override in raw["streams"].items():
        if stream_id not in streams:
            raise ConfigError("mqtt.streams.{}: no stream named {!r} (streams: {})".format(
                stream_id, stream_id, ", ".join(sorted(streams)) or "none"))  # fmt: skip
        merged = dict(publish)
        merged.update(override)
        per_stream[stream_id] = MqttPublishConfig(**merged)
    outbox = raw["outbox"]
    port = raw["port"] if raw["port"] is not None else (8883 if tls["enabled"] else 1883)
    return MqttConfig(
        host=raw["host"],
        port=port,
        topic_prefix=raw["topic_prefix"],
        client_id=raw["client_id"],
        keepalive_s=float(raw["keepalive_s"]),
        qos=raw["qos"],
        username=raw["username"],
        password=raw["password"],
        password_env=raw["password_env"],
        password_file=_resolve(base_dir, raw["password_file"]),
        tls=MqttTlsConfig(
            enabled=tls["enabled"],
            ca_file=_resolve(base_dir, tls["ca_file"]),
            cert_file=_resolve(base_dir, tls["cert_file"]),
            key_file=_resolve(base_dir, tls["key_file"]),
        ),
        outbox=MqttOutboxConfig(
            path=_resolve(base_dir, outbox["path"]),
            max_bytes=int(outbox["max_bytes"]),
            commit_interval_ms=float(outbox["commit_interval_ms"]),
            commit_batch=int(outbox["commit_batch"]),
            fsync=outbox["fsync"],
        ),
        max_inflight=int(raw["max_inflight"]),
        ack_timeout_s=float(raw["ack_timeout_s"]),
        connect_timeout_s=float(raw["connect_timeout_s"]),
        backoff_initial_s=float(raw["backoff_initial_s"]),
        backoff_max_s=float(raw["backoff_max_s"]),
        max_payload_bytes=int(raw["max_payload_bytes"]),
        max_command_bytes=int(raw["max_command_bytes"]),
        protocol=raw["protocol"],
        command_max_age_s=float(raw["command_max_age_s"]),
        publish=MqttPublishConfig(**publish),
        streams=per_stream,
        home_assistant=raw["home_assistant"],
    )


def model_config_from_dict(name: str, raw: Mapping[str, Any], base_dir: str) -> ModelConfig:
    """Build a :class:`ModelConfig` from one validated, default-filled ``models`` entry."""
    where = f"models.{name}"
    keys = [k for k in ("key", "key_env", "key_file") if raw.get(k) is not None]
    if len(keys) > 1:
        raise ConfigError("{}: set only one of key, key_env, key_file (got {})".format(
            where, ", ".join(keys)))  # fmt: skip
    if raw.get("labels") is not None and raw.get("class_names") is not None:
        raise ConfigError(f"{where}: set labels or class_names, not both")
    tracking = raw["tracking"]
    if tracking["low_threshold"] > tracking["high_threshold"]:
        raise ConfigError("{}.tracking.low_threshold: {} is above high_threshold {}".format(
            where, tracking["low_threshold"], tracking["high_threshold"]))  # fmt: skip
    detection = raw["detection"]
    classes = {label: ClassSettings(**settings) for label, settings in detection["classes"].items()}
    return ModelConfig(
        name=name,
        path=_resolve(base_dir, raw["path"]),
        task=raw["task"],
        version=raw["version"],
        key=raw["key"],
        key_env=raw["key_env"],
        key_file=_resolve(base_dir, raw["key_file"]),
        labels=_resolve(base_dir, raw["labels"]),
        class_names=tuple(raw["class_names"]) if raw["class_names"] else None,
        backend=raw["backend"],
        threads=raw["threads"],
        input=InputConfig(
            name=raw["input"]["name"],
            color=raw["input"]["color"],
            scale=raw["input"]["scale"],
            mean=_triple(raw["input"]["mean"]),
            std=_triple(raw["input"]["std"]),
            resize=raw["input"]["resize"],
            width=raw["input"]["width"],
            height=raw["input"]["height"],
        ),
        classification=ClassificationConfig(**raw["classification"]),
        detection=DetectionConfig(
            coverage_output=detection["coverage_output"],
            bbox_output=detection["bbox_output"],
            stride=detection["stride"],
            bbox_norm=float(detection["bbox_norm"]),
            offset=float(detection["offset"]),
            min_width=float(detection["min_width"]),
            min_height=float(detection["min_height"]),
            classes=classes,
            compat=detection["compat"],
        ),
        engine=model_engine_config_from_dict(raw["engine"], base_dir),
        tracking=TrackingConfig(**tracking),
    )


# -- TensorRT engines (edged/engine) ------------------------------------------------------


def engine_config_from_dict(raw: Mapping[str, Any], base_dir: str) -> "EngineConfig":
    """Build the top-level :class:`EngineConfig` from a validated ``engine`` section."""
    from .model import EngineConfig

    values = dict(raw)
    values["cache_dir"] = _resolve(base_dir, raw["cache_dir"])
    values["build_timeout_s"] = float(raw["build_timeout_s"])
    return EngineConfig(**values)


def model_engine_config_from_dict(raw: Mapping[str, Any], base_dir: str) -> Any:
    """Build a :class:`ModelEngineConfig` from a validated ``models.NAME.engine`` section."""
    from .model import CalibrationConfig, ModelEngineConfig, ProfileConfig

    calibration = dict(raw["calibration"])
    calibration["cache"] = _resolve(base_dir, calibration["cache"])
    calibration["images"] = _resolve(base_dir, calibration["images"])
    profiles = {
        name: ProfileConfig(min=tuple(p["min"]), opt=tuple(p["opt"]), max=tuple(p["max"]))
        for name, p in raw["profiles"].items()
    }
    values = dict(raw)
    values.update(profiles=profiles, calibration=CalibrationConfig(**calibration))
    return ModelEngineConfig(**values)


def _resolve(base_dir: str, path: Optional[str]) -> Optional[str]:
    if path is None:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def _triple(values: Optional[Any]) -> Optional[Tuple[float, float, float]]:
    if values is None:
        return None
    return (float(values[0]), float(values[1]), float(values[2]))

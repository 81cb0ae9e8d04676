"""The parts of building a config that are not a plain copy of a schema key into its field.

Each :class:`~edged.config.generic.Hook` is registered in :data:`HOOKS` under its dataclass:
checks that span several keys (the schema cannot say "only one of"), the stream's source
string parsed by the sources table, and the MQTT port and per-stream publish settings, which
are derived. Paths relative to the config file are not here: a dataclass field marks them
(``metadata=PATH`` in ``model.py``).
"""

from typing import Any, Dict, Mapping, Optional

from ..errors import ConfigError
from .generic import Context, Hook
from .model import ModelConfig, MqttConfig, MqttPublishConfig, StreamConfig, UpdateConfig

#: Stream keys that configure the source (``edged.sources.uri.parse_source``), not a field.
SOURCE_KEYS = (
    "width", "height", "fps", "loop", "realtime", "transport",
    "open_timeout_s", "read_timeout_s", "fourcc", "flip_method",
)  # fmt: skip


def model_checks(raw: Mapping[str, Any], where: str, context: Context) -> Dict[str, Any]:
    """Secrets and labels come from one place each; tracking thresholds are ordered."""
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
    return {}


def stream_source(raw: Mapping[str, Any], where: str, context: Context) -> Dict[str, Any]:
    """Check the model reference and backoff, parse the source string with its options (the
    sources table classifies it; a relative path resolves against the config file), and check
    the zones and lines against the model."""
    from ..sources.uri import parse_source

    models = context.sections.get("models", {})
    if raw["model"] not in models:
        raise ConfigError("{}.model: no model named {!r} (models: {})".format(
            where, raw["model"], ", ".join(sorted(models)) or "none"))  # fmt: skip
    _check_backoff(raw, where)
    options = {key: raw[key] for key in SOURCE_KEYS}
    spec = parse_source(raw["source"], key=where + ".source", base_dir=context.base_dir, **options)
    model = models[raw["model"]]
    for name, zone in raw["zones"].items():
        _counting_checks(f"{where}.zones.{name}", zone["units"], zone["points"], model)
    for name, line in raw["lines"].items():
        key = f"{where}.lines.{name}"
        _counting_checks(key, line["units"], (line["start"], line["end"]), model)
        if [float(v) for v in line["start"]] == [float(v) for v in line["end"]]:
            raise ConfigError(f"{key}: start and end are the same point")
    return {"source": spec}


# -- tracking and counting (edged/tracking) -----------------------------------------------


def _points_problem(units: str, points: Any) -> Optional[str]:
    if units == "fraction" and any(not 0.0 <= v <= 1.0 for p in points for v in p):
        return "units is fraction but a point is outside 0..1 (did you mean units: pixels?)"
    if units == "pixels" and any(v < 0 for p in points for v in p):
        return "a point has a negative pixel coordinate"
    return None


def _counting_checks(key: str, units: str, points: Any, model: ModelConfig) -> None:
    """Zones and lines count tracks: the stream's model must track, and the points fit the units."""
    if not model.tracking.enabled:
        raise ConfigError(f"{key}: model {model.name!r} does not track (set its tracking.enabled)")
    problem = _points_problem(units, points)
    if problem:
        raise ConfigError(f"{key}: {problem}")


def mqtt_derived(raw: Mapping[str, Any], where: str, context: Context) -> Dict[str, Any]:
    """Check the credentials, topic prefix, backoff and TLS files; derive the port from TLS
    and each stream's publish settings from ``publish`` plus the stream's overrides."""
    from ..topicnames import prefix_problem

    sources = [k for k in ("password", "password_env", "password_file") if raw.get(k) is not None]
    if len(sources) > 1:
        raise ConfigError("mqtt: set only one of password, password_env, password_file (got {})"
                          .format(", ".join(sources)))  # fmt: skip
    if sources and raw.get("username") is None:
        raise ConfigError(f"mqtt.{sources[0]}: a password needs mqtt.username (MQTT 3.1.1)")
    problem = prefix_problem(raw["topic_prefix"])
    if problem:
        raise ConfigError("mqtt.topic_prefix: {!r} {}".format(raw["topic_prefix"], problem))
    _check_backoff(raw, where)
    tls = raw["tls"]
    files = [k for k in ("ca_file", "cert_file", "key_file") if tls.get(k) is not None]
    if files and not tls["enabled"]:
        raise ConfigError(f"mqtt.tls.{files[0]}: set, but mqtt.tls.enabled is false")
    if tls.get("key_file") is not None and tls.get("cert_file") is None:
        raise ConfigError("mqtt.tls.key_file: needs mqtt.tls.cert_file")
    streams = context.sections.get("streams", {})
    per_stream: Dict[str, MqttPublishConfig] = {}
    for stream_id, override in raw["streams"].items():
        if stream_id not in streams:
            raise ConfigError("mqtt.streams.{}: no stream named {!r} (streams: {})".format(
                stream_id, stream_id, ", ".join(sorted(streams)) or "none"))  # fmt: skip
        merged = dict(raw["publish"])
        merged.update(override)
        per_stream[stream_id] = MqttPublishConfig(**merged)
    commands = raw["commands"]
    if commands["require_signature"] and not commands["keys_file"]:
        raise ConfigError("mqtt.commands.keys_file: required when mqtt.commands.require_signature "
                          "is true (the operator key list: edged keys -o FILE)")  # fmt: skip
    port = raw["port"] if raw["port"] is not None else (8883 if tls["enabled"] else 1883)
    return {"port": port, "streams": per_stream}


def update_checks(raw: Mapping[str, Any], where: str, context: Context) -> Dict[str, Any]:
    """An enabled update needs MQTT (updates arrive over it) and a pinned key list."""
    if raw["enabled"] and context.sections.get("mqtt") is None:
        raise ConfigError("update.enabled: model updates arrive over MQTT; set the mqtt section")
    if raw["enabled"] and not raw["keys_file"]:
        raise ConfigError("update.keys_file: required when update.enabled is true "
                          "(the key list this device pins: edged keys -o FILE)")  # fmt: skip
    return {}


def _check_backoff(raw: Mapping[str, Any], where: str) -> None:
    if raw["backoff_max_s"] < raw["backoff_initial_s"]:
        raise ConfigError("{}.backoff_max_s: {} is less than backoff_initial_s {}".format(
            where, raw["backoff_max_s"], raw["backoff_initial_s"]))  # fmt: skip


#: The dataclasses whose building is more than a copy; every other one is built generically.
HOOKS: Dict[type, Hook] = {
    ModelConfig: Hook(model_checks),
    StreamConfig: Hook(stream_source, fields=("source",), keys=SOURCE_KEYS),
    MqttConfig: Hook(mqtt_derived, fields=("port", "streams")),
    UpdateConfig: Hook(update_checks),
}

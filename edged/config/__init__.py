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
from typing import Any, Dict, Mapping

from ..errors import ConfigError
from ..files import read_bounded
from .generic import Context, build
from .hooks import HOOKS
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
    UpdateConfig,
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
    "UpdateConfig",
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
    return build(Config, data, "", Context(base_dir, HOOKS, top=Config))


def model_config_from_dict(name: str, raw: Mapping[str, Any], base_dir: str) -> ModelConfig:
    """Build a :class:`ModelConfig` from one validated, default-filled ``models`` entry."""
    return build(ModelConfig, raw, f"models.{name}", Context(base_dir, HOOKS), name=name)

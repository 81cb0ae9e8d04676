"""From a model config to a ready task: key, artifact, backend, labels, task kind.

``task: auto`` asks the task registry (:mod:`edged.tasks.registry`): detection when
the model has DetectNet_v2 coverage and bbox outputs (any of the alias names),
classification otherwise -- so ``edged infer --model peoplenet.etlt`` and
``--model resnet18.onnx`` both just work, like detectnet-console and
imagenet-console in one command.
"""

import logging
import os
from typing import Any, List, Optional

from ..backends import MemoryOptions, create_backend
from ..config import ModelConfig
from ..errors import ConfigError
from ..modelfile import load_model_artifact
from .base import Task
from .labels import load_labels
from .registry import recognise

logger = logging.getLogger(__name__)


def resolve_model_key(config: ModelConfig) -> Optional[str]:
    """The .etlt key from ``key``, ``key_env`` or ``key_file`` (never logged).

    Raises:
        ConfigError: the named environment variable or file is missing or empty.
    """
    where = f"models.{config.name}"
    if config.key:
        return config.key
    if config.key_env:
        value = os.environ.get(config.key_env, "").strip()
        if not value:
            raise ConfigError(f"{where}.key_env: environment variable {config.key_env} is not set")
        return value
    if config.key_file:
        try:
            with open(config.key_file) as f:
                value = f.readline().strip()
        except OSError as e:
            raise ConfigError(
                f"{where}.key_file: cannot read {config.key_file} ({e.strerror or e})"
            ) from e
        if not value:
            raise ConfigError(f"{where}.key_file: {config.key_file} is empty")
        return value
    return None


def _labels(config: ModelConfig) -> Optional[List[str]]:
    if config.class_names:
        return list(config.class_names)
    if config.labels:
        return load_labels(config.labels)
    return None


def load_task(config: ModelConfig, engines: Optional[Any] = None) -> Task:
    """Load the model in ``config`` and wrap it in its task.

    Args:
        engines: the :class:`~edged.engine.EngineManager` that builds and caches TensorRT
            engines; required for ``backend: tensorrt`` (see :func:`edged.cli.engines_for`).

    Raises:
        ConfigError, ModelError, BackendError, EngineError: one clear line naming the file or key.
    """
    key = resolve_model_key(config)
    labels = _labels(config)
    artifact = load_model_artifact(config.path, key)
    if config.backend == "tensorrt":  # a cached engine, or a build in a child process
        if engines is None:
            # The caller makes the manager: edged.engine sits above edged.tasks (it asks the
            # task registry how to calibrate), so tasks never import it.
            raise ValueError(f"model {config.name}: backend tensorrt needs an engine manager")
        backend = engines.load_backend(config, artifact, key)
    else:
        memory = MemoryOptions(pattern=config.memory_pattern, arena=config.memory_arena)
        backend = create_backend(config.backend, artifact, config.threads, memory=memory)
    try:
        task = recognise(backend, config)(backend, config, labels)
    except BaseException:
        backend.close()
        raise
    task.model_sha256 = artifact.sha256
    logger.info(
        "model %s loaded: %s, %s %dx%d, %d classes, backend %s, sha256 %s",
        config.name, task.kind, task.input.name, task.width, task.height, len(task.labels),
        backend.name, artifact.sha256[:12],
    )  # fmt: skip
    return task

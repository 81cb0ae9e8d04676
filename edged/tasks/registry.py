"""The task registry: which task classes exist, and which one a model is.

One line per task in :data:`TASKS`. Everything that needs a task asks here instead of
dispatching itself: the loader (``task: auto`` or a named task), ``edged infer`` (its
``--task`` choices) and INT8 calibration (the input contract of the model being built,
from the tensors of the parsed network: :func:`calibration_request` travels to the build
process as JSON, :func:`calibration_contract` resolves it there).

``task: auto`` takes the first registered task whose ``matches`` accepts the model, so the
most specific recogniser comes first and classification, which accepts any model, last.
A new task (say a YOLO decoder) is its own module, its config section in the schema and
one line here.
"""

from typing import Any, Dict, List, Mapping, Sequence, Tuple, Type

import numpy as np

from ..backends.base import TensorSpec
from ..config import ModelConfig
from ..config.model import InputConfig
from ..errors import ConfigError, ModelContractError
from .base import ModelTensors, Task, Tensors
from .classification import ClassificationTask
from .contract import InputContract
from .detectnet import DetectNetV2Task

#: Registered tasks, most specific recogniser first.
TASKS: Tuple[Type[Task], ...] = (
    DetectNetV2Task,
    ClassificationTask,
)

AUTO = "auto"


def task_names() -> List[str]:
    """The names ``models.NAME.task`` accepts besides ``auto``, in registration order."""
    return [task.kind for task in TASKS]


def task_class(name: str) -> Type[Task]:
    """The task registered as ``name``.

    Raises:
        ConfigError: no task has that name.
    """
    for task in TASKS:
        if task.kind == name:
            return task
    raise ConfigError(
        "task {!r}: expected {} or one of {}".format(name, AUTO, ", ".join(task_names()))
    )


def recognise(model: Tensors, config: ModelConfig) -> Type[Task]:
    """The task for ``config`` (``task: NAME``) or, for ``task: auto``, the first that matches.

    Raises:
        ConfigError: ``config.task`` names no registered task.
        ModelContractError: ``task: auto`` and no registered task accepts the model.
    """
    if config.task != AUTO:
        return task_class(config.task)
    for task in TASKS:
        if task.matches(model, config):
            return task
    raise ModelContractError(f"{config.path}: no task recognises this model; set task")


# -- INT8 calibration: the contract of a model that is not loaded yet -------------------------

#: the ``input`` keys that shape the contract or pick the input tensor
_INPUT_KEYS = ("name", "color", "scale", "mean", "std", "resize", "width", "height")


def calibration_request(config: ModelConfig) -> Dict[str, Any]:
    """What the build process needs to resolve ``config``'s input contract, as plain JSON.

    The task and the ``input`` section, and for ``task: auto`` the settings each task's
    ``matches`` reads (its ``recognition_keys``); nothing else, so
    the calibration's cache key changes only when the pre-processing could.
    """
    inp = config.input
    request = {
        "task": config.task,
        "input": {k: _plain(getattr(inp, k)) for k in _INPUT_KEYS},
    }  # type: Dict[str, Any]
    if config.task == AUTO:
        request["recognise"] = {
            task.config_section: _recognition_settings(config, task)
            for task in TASKS
            if task.recognition_keys
        }
    return request


def calibration_contract(
    request: Mapping[str, Any], io: Sequence[Mapping[str, Any]], path: str = ""
) -> InputContract:
    """The input contract for calibrating a parsed network.

    Args:
        request: from :func:`calibration_request`.
        io: the network's tensors: dicts with ``name``, ``mode`` (input/output), ``shape``
            (-1 for a dynamic dimension) and ``dtype``, as the engine builder describes them.
        path: the model file, for messages.

    Raises:
        ModelContractError: the network's input is not an image, or no task accepts it.
    """
    import dataclasses

    config = ModelConfig(name="calibration", path=path, task=request.get("task", AUTO))
    raw_input = dict(request.get("input") or {})
    for key in ("mean", "std"):
        if raw_input.get(key) is not None:
            raw_input[key] = tuple(raw_input[key])
    config = dataclasses.replace(config, input=InputConfig(**raw_input))
    for section, names in (request.get("recognise") or {}).items():
        value = dataclasses.replace(getattr(config, section), **names)
        config = dataclasses.replace(config, **{section: value})
    tensors = ModelTensors(_specs(io, "input"), _specs(io, "output"))
    task = recognise(tensors, config)
    return task.input_contract(config, task.find_input(tensors, config))


def _recognition_settings(config: ModelConfig, task: Type[Task]) -> Dict[str, Any]:
    section = getattr(config, task.config_section)
    return {key: _plain(getattr(section, key)) for key in task.recognition_keys}


def _specs(io: Sequence[Mapping[str, Any]], mode: str) -> List[TensorSpec]:
    specs = []
    for t in io:
        if t["mode"] != mode:
            continue
        shape = [None if int(d) < 0 else int(d) for d in t["shape"]]
        if mode == "input" and len(shape) == 3:  # implicit batch (UFF): C x H x W
            shape.insert(0, None)
        specs.append(TensorSpec(t["name"], shape, np.float32))
    return specs


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value

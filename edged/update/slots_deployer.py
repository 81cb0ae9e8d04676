"""The daemon's :class:`~.seams.Deployer`: an update loads, tries and switches a model slot.

Loading goes through the daemon's own loader (``Daemon.load_model``: ``load_task`` with the
daemon's engine manager, so a TensorRT engine is built and cached as for any model) while the
old task keeps serving; the switch and the rollback are ``Daemon.replace_model``
(:meth:`edged.pipeline.slots.ModelSlots.replace`): the slot's streams keep running, also when
the task changes kind. The model's config comes from the manifest's ``config`` (the keys of
``models.NAME``), its files from the verified version directory; the .etlt key, if any, only
ever comes from the device's own config and is never logged.
"""

import dataclasses
import logging
import os
import time
from typing import Any, Dict, Optional

from ..config import model_config_from_dict, schema
from ..config.model import ModelConfig
from ..config.validate import SchemaValidator, first_error
from ..errors import BackendError, UpdateError
from .manifest import Manifest
from .seams import Deployer, check_outputs

logger = logging.getLogger(__name__)

#: the device's own settings a manifest does not replace (secrets and local choices)
DEVICE_KEYS = ("key", "key_env", "key_file")


class SlotsDeployer(Deployer):
    """Deploys into a running :class:`~edged.daemon.Daemon` (``load_model``,
    ``replace_model``, ``models``, ``config``)."""

    def __init__(self, daemon: Any, clock: Any = time.monotonic) -> None:
        self._daemon = daemon
        self._clock = clock
        self._old: Dict[str, Any] = {}  # model -> the task switched out (rollback)
        self._loaded: Dict[str, Any] = {}  # model -> a loaded task not serving yet
        self._errors: Dict[str, int] = {}  # model -> worker errors at the switch
        self._nonfinite: Dict[str, int] = {}  # model -> frames with NaN/Inf outputs at the switch

    def knows(self, model: str) -> bool:
        return model in self._daemon.models

    def model_config(self, model: str, files_dir: str, manifest: Manifest) -> ModelConfig:
        """``models.<model>`` as the manifest says, with its files and the device's key."""
        current = self._daemon.models.config(model)
        raw: Dict[str, Any] = dict(manifest.config)
        raw["path"] = manifest.model_file.name
        for entry in manifest.files:
            if entry.role == "labels":
                raw["labels"] = entry.name
            elif entry.role == "calibration":
                engine = dict(raw.get("engine") or {})
                engine["calibration"] = dict(engine.get("calibration") or {}, cache=entry.name)
                raw["engine"] = engine
        raw.setdefault("version", str(manifest.version))
        validator = SchemaValidator(schema())
        document = {"models": {model: raw}}
        problem = first_error(validator.errors(document))
        if problem:
            raise UpdateError(f"manifest config: {problem}")
        filled = validator.apply_defaults(document)["models"][model]
        config = model_config_from_dict(model, filled, files_dir)
        if current is None:
            return config
        # the key never travels in a manifest: the device's own (never logged: repr=False)
        return dataclasses.replace(config, **{k: getattr(current, k) for k in DEVICE_KEYS})

    def load(self, model: str, files_dir: str, manifest: Manifest) -> Any:
        task = self._daemon.load_model(self.model_config(model, files_dir, manifest))
        superseded = self._loaded.pop(model, None)  # an update replaced by a newer one
        if superseded is not None:
            superseded.backend.close()
        self._loaded[model] = task
        return task

    def canary(self, model: str, loaded: Any, files_dir: str, manifest: Manifest) -> None:
        import numpy as np

        tensor = None
        expected: Optional[Dict[str, Any]] = None
        for entry in manifest.files:
            path = os.path.join(files_dir, entry.name)
            try:
                if entry.role == "canary_input":
                    tensor = np.load(path, allow_pickle=False).astype(np.float32)
                elif entry.role == "canary_expected":
                    with np.load(path, allow_pickle=False) as data:
                        expected = {k: data[k] for k in data.files}
            except (OSError, ValueError) as e:
                raise UpdateError(f"canary: {entry.name} is not a numpy file ({e})") from None
        if tensor is None:  # no canary input: a mid-grey frame of the model's own size
            frame = np.full((loaded.height, loaded.width, 3), 128, np.uint8)
            tensor = loaded.preprocess(frame)
        started = self._clock()
        try:
            outputs = loaded.infer([tensor])[0]
        except (BackendError, ValueError) as e:  # ValueError: a canary input of another shape
            raise UpdateError(f"canary: inference failed ({e})") from None
        latency = self._clock() - started
        check_outputs(outputs, manifest.canary, expected, latency)
        loaded.postprocess(outputs, (loaded.width, loaded.height))

    def switch(self, model: str, loaded: Any) -> None:
        worker = self._daemon.models.worker(model)
        self._errors[model] = worker.stats.errors if worker is not None else 0
        self._nonfinite[model] = worker.stats.nonfinite if worker is not None else 0
        self._old[model] = self._daemon.replace_model(model, loaded)
        self._loaded.pop(model, None)
        logger.info("model %s: switched to the update (%s)", model, loaded.config.version)

    def healthy(self, model: str) -> Optional[str]:
        worker = self._daemon.models.worker(model)
        if worker is None:
            return f"model {model} is not running"
        errors = worker.stats.errors - self._errors.get(model, 0)
        if errors:
            return f"{errors} inference error(s) since the switch"
        nonfinite = worker.stats.nonfinite - self._nonfinite.get(model, 0)
        if nonfinite:
            return f"{nonfinite} frame(s) with NaN or infinite outputs since the switch"
        busy = worker.stats.busy_since
        stall = self._daemon.config.pipeline.inference_timeout_s
        if busy is not None and self._clock() - busy > stall:
            return f"inference stalled for more than {stall:g} s"
        return None

    def restore(self, model: str) -> None:
        old = self._old.pop(model, None)
        if old is not None:
            new = self._daemon.replace_model(model, old)
            new.backend.close()
            logger.info("model %s: the previous model serves again", model)
        loaded = self._loaded.pop(model, None)
        if loaded is not None:
            loaded.backend.close()

    def commit(self, model: str) -> None:
        old = self._old.pop(model, None)
        if old is not None:
            old.backend.close()

"""The updater's two seams: the MQTT transport and the model deployer, plus the canary checks.

The updater (:mod:`.updater`) never touches a broker or a model itself: a :class:`Transport`
publishes and subscribes, a :class:`Deployer` loads the new model from its verified files, runs
the canary, switches the slot and restores the old task. Tests drive the updater with stand-ins
of both; the daemon provides real ones (its MQTT connection, its model slots).
"""

import math
from typing import Any, Mapping, Optional, Sequence

from ..errors import UpdateError
from .manifest import Manifest

#: defaults of the manifest's ``canary`` section
DEFAULT_TOLERANCE = 1e-3
DEFAULT_LATENCY_MS = 1000.0


class Transport:
    """Where the updater's MQTT traffic goes (the daemon's connection, or a test's)."""

    def subscribe(self, topics: Sequence[str]) -> None:
        raise NotImplementedError

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        raise NotImplementedError


class Deployer:
    """Loads, tries, switches and restores a model slot's task."""

    def knows(self, model: str) -> bool:
        """Whether the device config has this model slot."""
        raise NotImplementedError

    def load(self, model: str, files_dir: str, manifest: Manifest) -> Any:
        """The new task, loaded (and its engine built) from ``files_dir`` while the old serves.

        Raises:
            EdgedError: the model cannot be loaded.
        """
        raise NotImplementedError

    def canary(self, model: str, loaded: Any, files_dir: str, manifest: Manifest) -> None:
        """Try the loaded task on the manifest's canary inputs (or a recent frame).

        Raises:
            UpdateError: what went wrong (see :func:`check_outputs`).
        """
        raise NotImplementedError

    def switch(self, model: str, loaded: Any) -> None:
        """Make the loaded task serve the slot's streams, keeping the old one to restore."""
        raise NotImplementedError

    def healthy(self, model: str) -> Optional[str]:
        """None while the new task is healthy; else why not (crashed, stalled, NaN)."""
        raise NotImplementedError

    def restore(self, model: str) -> None:
        """The old task serves again (nothing to do when the switch never happened)."""
        raise NotImplementedError

    def commit(self, model: str) -> None:
        """The new task stays: release the old one."""
        raise NotImplementedError


def check_outputs(
    outputs: Mapping[str, Any],
    canary: Mapping[str, Any],
    expected: Optional[Mapping[str, Any]],
    latency_s: float,
) -> None:
    """The canary's verdict on one run's raw outputs (numpy arrays by output name).

    Checks, in order: every output finite (no NaN/Inf), shapes as the manifest's
    ``canary.shapes`` says (when it does), within ``canary.tolerance`` of the expected outputs
    (when given), and the run within ``canary.latency_ms``.

    Raises:
        UpdateError: the first check that fails, in one line.
    """
    import numpy as np

    for name, value in outputs.items():
        array = np.asarray(value)
        if array.dtype.kind in "fc" and not bool(np.all(np.isfinite(array))):
            raise UpdateError(f"canary: output {name} has NaN or Inf")
    shapes = canary.get("shapes") or {}
    for name, shape in shapes.items():
        if name not in outputs:
            raise UpdateError(f"canary: no output named {name}")
        dims = list(np.asarray(outputs[name]).shape)
        if dims != list(shape):
            raise UpdateError(f"canary: output {name} has shape {dims}, expected {list(shape)}")
    tolerance = float(canary.get("tolerance", DEFAULT_TOLERANCE))
    for name, want in (expected or {}).items():
        if name not in outputs:
            raise UpdateError(f"canary: no output named {name}")
        got, ref = np.asarray(outputs[name]), np.asarray(want)
        if got.shape != ref.shape:
            raise UpdateError(f"canary: output {name} has shape {list(got.shape)}, "
                              f"expected {list(ref.shape)}")  # fmt: skip
        worst = float(np.max(np.abs(got.astype(np.float64) - ref))) if got.size else 0.0
        if not worst <= tolerance:
            raise UpdateError(f"canary: output {name} differs by {worst:.3g} "
                              f"(tolerance {tolerance:g})")  # fmt: skip
    budget_ms = float(canary.get("latency_ms", DEFAULT_LATENCY_MS))
    if not math.isfinite(latency_s) or latency_s * 1000.0 > budget_ms:
        raise UpdateError(f"canary: took {latency_s * 1000.0:.0f} ms, "
                          f"budget {budget_ms:.0f} ms")  # fmt: skip

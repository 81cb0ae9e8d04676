"""Stand-ins for the update tests (named as such): the daemon's model slots, a hanging call.

``StandInDeployer`` replaces what this machine lacks for a model switch under test (a running
daemon's streams, TensorRT): it records which model serves; files and journals stay real.
"""

import os
import threading

from edged.errors import UpdateError
from edged.update.seams import Deployer

SAFETY_S = 20  # a generous safety timeout, never an assertion about speed


class Hang:
    """A call that blocks until the test ends (released at teardown)."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, *args, **kwargs):
        self.entered.set()
        self.release.wait(SAFETY_S * 3)
        raise UpdateError("released at teardown")


class StandInDeployer(Deployer):
    """Stands in for the daemon's model slots: which model serves, nothing runs."""

    def __init__(self, faults=None, models=("det",)):
        self.models = tuple(models)
        self.serving = "old"
        self.previous = None
        self.faults = faults or {}  # method name -> exception or Hang
        self.calls = []

    def _fault(self, name):
        self.calls.append(name)
        fault = self.faults.get(name)
        if isinstance(fault, Hang):
            fault()
        elif fault is not None:
            raise fault

    def knows(self, model):
        return model in self.models

    def load(self, model, files_dir, manifest):
        self._fault("load")
        with open(os.path.join(files_dir, manifest.model_file.name), "rb") as f:
            data = f.read()
        assert len(data) == manifest.model_file.size  # the verified files, promoted
        return f"v{manifest.version}"

    def canary(self, model, loaded, files_dir, manifest):
        self._fault("canary")

    def switch(self, model, loaded):
        self._fault("switch")
        self.previous, self.serving = self.serving, loaded

    def healthy(self, model):
        fault = self.faults.get("healthy")
        if isinstance(fault, str):
            return fault  # e.g. "NaN in outputs"
        self._fault("healthy")
        return None

    def restore(self, model):
        self.calls.append("restore")
        if self.previous is not None:
            self.serving, self.previous = self.previous, None

    def commit(self, model):
        self.calls.append("commit")
        self.previous = None

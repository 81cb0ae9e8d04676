"""A model update's probation sees NaN outputs of the model serving live frames.

The canary checks the new model on its canary inputs before the switch
(tests/test_update_daemon.py); a model can still give NaN or infinity on the frames of the
stream after it. The inference worker counts frames with non-finite outputs, and the update's
probation health check (``SlotsDeployer.healthy``) rolls back when that count grew since the
switch. A real ONNX classifier whose backend output is poisoned after the switch stands in for
a model that diverges on live input.
"""

import threading
import time
from types import SimpleNamespace

import numpy as np

from edged.pipeline.worker import InferenceWorker
from edged.update.slots_deployer import SlotsDeployer

from .test_pipeline import frame, real_task


def wait(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_probation_fails_once_live_outputs_hold_nan(tmp_path):
    task = real_task(tmp_path)
    original = task.backend.infer
    poisoned = threading.Event()

    def infer(feeds):
        outputs = original(feeds)
        if poisoned.is_set():
            outputs = {k: np.full_like(v, np.nan) for k, v in outputs.items()}
        return outputs

    task.backend.infer = infer
    stop = threading.Event()
    results = []
    worker = InferenceWorker("m", task, results.append, stop)
    slot = worker.attach("cam")
    worker.start()
    daemon = SimpleNamespace(
        models=SimpleNamespace(worker=lambda name: worker),
        config=SimpleNamespace(pipeline=SimpleNamespace(inference_timeout_s=60.0)),
        replace_model=lambda name, new: task,
    )
    deployer = SlotsDeployer(daemon)
    try:
        slot.put(frame("cam", 0))
        assert wait(lambda: len(results) == 1)
        assert worker.stats.nonfinite == 0
        deployer.switch("m", SimpleNamespace(config=SimpleNamespace(version="v2")))
        slot.put(frame("cam", 1))
        assert wait(lambda: len(results) == 2)
        assert deployer.healthy("m") is None  # finite outputs since the switch: healthy
        poisoned.set()
        slot.put(frame("cam", 2))
        assert wait(lambda: len(results) == 3)
        assert worker.stats.nonfinite == 1
        problem = deployer.healthy("m")
        assert problem is not None and "NaN or infinite outputs" in problem
    finally:
        stop.set()
        assert worker.join(5)

"""The pre-processor seam: a worker runs its frames through the pipeline's pre-processor."""

import threading

import numpy as np

from edged.pipeline import preprocessors
from edged.pipeline.worker import InferenceWorker

from .test_pipeline import frame, real_task


class Recording(preprocessors.CpuPreprocessor):
    """The real CPU pre-processor, counting its calls (the worker must use it, then close it)."""

    def __init__(self, contract, max_batch=1):
        super().__init__(contract, max_batch)
        self.batches = []
        self.closed = 0

    def run(self, frames, formats=None):
        self.batches.append(len(frames))
        return super().run(frames, formats)

    def close(self):
        self.closed += 1


def test_worker_uses_the_preprocessor_and_closes_it_after_its_threads(tmp_path):
    task = real_task(tmp_path)
    contract = preprocessors.contract_of(task)
    assert (contract.width, contract.height) == (task.width, task.height)
    pre = Recording(contract)
    with_pre, without = [], []
    InferenceWorker("m", task, with_pre.append, threading.Event(), preprocessor=pre).process(
        [frame("cam", 1, value=90)]
    )
    InferenceWorker("m", task, without.append, threading.Event()).process(
        [frame("cam", 1, value=90)]
    )
    assert pre.batches == [1]
    assert [[i.to_dict() for i in r.items] for r in with_pre] == [
        [i.to_dict() for i in r.items] for r in without
    ]
    stop = threading.Event()
    worker = InferenceWorker("m", task, lambda r: None, stop, preprocessor=pre)
    worker.start()
    stop.set()
    assert worker.join(10)
    assert pre.closed == 1


def test_contract_of_task_matches_the_tasks_own_preprocessing(tmp_path):
    task = real_task(tmp_path)
    image = np.random.default_rng(5).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    ours = preprocessors.CpuPreprocessor(preprocessors.contract_of(task)).run([image])[0]
    np.testing.assert_array_equal(ours, task.preprocess(image))


def test_cpu_choice_keeps_the_tasks_own_path(tmp_path):
    assert preprocessors.for_task("cpu", real_task(tmp_path)) is None

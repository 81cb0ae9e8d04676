"""A hung inference stops the systemd watchdog pings; the daemon itself keeps running."""

import threading
import time

from edged import sdnotify
from edged.daemon import Daemon
from edged.tasks.loader import load_task

from .test_daemon import NotifySocket, make_clip, write_config


class HangingBackend:
    """Wraps the real backend; once ``hang`` is set, the next call blocks until ``release``.

    Stands in for an accelerator call that never returns (a wedged GPU, a driver bug).
    """

    def __init__(self, backend):
        self._backend = backend
        self.name = backend.name
        self.inputs = backend.inputs
        self.outputs = backend.outputs
        self.hang = threading.Event()
        self.release = threading.Event()
        self.hung = threading.Event()

    def infer(self, feeds):
        if self.hang.is_set():
            self.hung.set()
            self.release.wait(30)
        return self._backend.infer(feeds)

    def close(self):
        self._backend.close()


def test_pings_stop_within_the_inference_timeout_and_resume_after(tmp_path):
    clip = make_clip(str(tmp_path / "clip.avi"))
    config = str(tmp_path / "edged.yaml")
    write_config(config, {"cam": clip}, pipeline="summary_interval_s: 0.5, inference_timeout_s: 1")
    notify = NotifySocket(tmp_path)
    backends = []

    def loader(model):
        task = load_task(model)
        task.backend = HangingBackend(task.backend)
        backends.append(task.backend)
        return task

    daemon = Daemon(config, notifier=sdnotify.SystemdNotifier(notify.path), task_loader=loader,
                    watchdog_interval_s=0.1)  # fmt: skip
    try:
        daemon.start()
        deadline = time.monotonic() + 10
        while len(notify.fields("WATCHDOG")) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(notify.fields("WATCHDOG")) >= 5, "no pings while healthy"

        backends[0].hang.set()
        assert backends[0].hung.wait(5)
        time.sleep(2.0)  # inference_timeout_s (1 s) plus a few ticks
        pings_before = len(notify.fields("WATCHDOG"))
        time.sleep(1.5)
        assert len(notify.fields("WATCHDOG")) == pings_before, "pinged during a hung inference"
        assert daemon.watchdog.stale_probes() == ["inference:digits"]

        backends[0].hang.clear()
        backends[0].release.set()
        deadline = time.monotonic() + 5
        while len(notify.fields("WATCHDOG")) == pings_before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(notify.fields("WATCHDOG")) > pings_before, "pings did not resume"
    finally:
        daemon.shutdown()
        notify.close()

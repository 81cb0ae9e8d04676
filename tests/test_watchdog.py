"""edged.watchdog: WATCHDOG=1 only while work progresses, seen on a real datagram socket."""

import json
import logging
import os
import shutil
import tempfile
import threading

import pytest

from edged.sdnotify import Notifier, SystemdNotifier
from edged.watchdog import HealthFile, ProgressWatchdog

from .helpers import FakeClock, Heartbeat, wait_for
from .test_sdnotify import NotifyReceiver


def pings(messages: list) -> int:
    return sum(1 for m in messages if m.get("WATCHDOG") == "1")


@pytest.fixture
def receiver():
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    directory = tempfile.mkdtemp(prefix="wdg")
    recv = NotifyReceiver(os.path.join(directory, "notify.sock"))
    recv.path = os.path.join(directory, "notify.sock")
    yield recv
    recv.close()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def notifier(receiver):
    real = SystemdNotifier(receiver.path)
    yield real
    real.close()


def make_watchdog(notifier, clock, **kwargs):
    kwargs.setdefault("ping_interval_s", 15.0)
    return ProgressWatchdog(notifier, threading.Event(), clock=clock, **kwargs)


def test_pings_while_every_probe_progresses(notifier, receiver):
    clock = FakeClock()
    capture, inference = Heartbeat(clock), Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock)
    watchdog.register("capture:cam0", capture, max_stale_s=20)
    watchdog.register("inference:peoplenet", inference, max_stale_s=10)

    for _ in range(3):
        capture.beat()
        inference.beat()
        assert watchdog.tick() is True
        clock.advance(5)

    assert pings(receiver.pending()) == 3
    assert watchdog.pings_sent == 3
    assert watchdog.healthy


def test_hung_inference_stops_pings_once_its_stall_timeout_passes(notifier, receiver):
    clock = FakeClock()
    capture, inference = Heartbeat(clock), Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock)
    watchdog.register("capture:cam0", capture, max_stale_s=20)
    watchdog.register("inference:peoplenet", inference, max_stale_s=10)
    inference.beat()  # the last inference that returns; then it hangs

    clock.advance(9.9)
    capture.beat()  # frames keep coming
    assert watchdog.tick() is True
    assert pings(receiver.pending()) == 1

    clock.advance(0.2)  # 10.1 s since the last inference
    capture.beat()
    assert watchdog.tick() is False
    assert receiver.pending() == [{"STATUS": "STALLED: inference:peoplenet"}]
    assert watchdog.stale_probes() == ["inference:peoplenet"]

    for _ in range(5):
        clock.advance(5)
        capture.beat()
        watchdog.tick()
    assert pings(receiver.pending()) == 0
    assert watchdog.pings_withheld == 6


def test_pings_resume_when_the_hung_component_recovers(notifier, receiver):
    clock = FakeClock()
    inference = Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock, status=lambda: "1 stream streaming")
    watchdog.register("inference:peoplenet", inference, max_stale_s=10)
    inference.beat()
    clock.advance(11)
    watchdog.tick()
    assert receiver.pending() == [{"STATUS": "STALLED: inference:peoplenet; 1 stream streaming"}]

    inference.beat()
    assert watchdog.tick() is True

    assert receiver.pending() == [{"STATUS": "1 stream streaming", "WATCHDOG": "1"}]
    assert watchdog.healthy


def test_stall_and_recovery_are_each_logged_once(notifier, caplog):
    caplog.set_level(logging.INFO, logger="edged.watchdog")
    clock = FakeClock()
    capture = Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock)
    watchdog.register("capture:cam0", capture, max_stale_s=20)
    capture.beat()

    clock.advance(21)
    for _ in range(4):
        watchdog.tick()
        clock.advance(5)
    capture.beat()
    for _ in range(4):
        watchdog.tick()

    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(records) == 2
    assert records[0][0] == "ERROR" and "capture:cam0" in records[0][1]
    assert records[1][0] == "WARNING" and "capture:cam0" in records[1][1]
    assert "41.0 s without progress" in records[1][1]  # beat at 0, back at 41


def test_a_probe_without_progress_yet_has_its_grace_from_registration(notifier, receiver):
    clock = FakeClock()
    first_inference = Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock)
    watchdog.register("inference:peoplenet", first_inference, max_stale_s=10, grace_s=60)

    clock.advance(59)
    assert watchdog.tick() is True
    clock.advance(2)
    assert watchdog.tick() is False
    first_inference.beat()
    assert watchdog.tick() is True


def test_status_is_sent_only_when_its_text_changes(notifier, receiver):
    clock = FakeClock()
    beat = Heartbeat(clock)
    texts = iter(["2 streams streaming, 14.8 fps, 0 stalled"] * 2 + ["1 stream streaming"])
    watchdog = make_watchdog(notifier, clock, status=lambda: next(texts))
    watchdog.register("capture:cam0", beat, max_stale_s=20)
    beat.beat()

    for _ in range(3):
        watchdog.tick()

    assert receiver.pending() == [
        {"STATUS": "2 streams streaming, 14.8 fps, 0 stalled", "WATCHDOG": "1"},
        {"WATCHDOG": "1"},
        {"STATUS": "1 stream streaming", "WATCHDOG": "1"},
    ]


def test_without_systemd_watchdog_it_still_watches_and_reports_status(notifier, receiver):
    clock = FakeClock()
    beat = Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock, ping_interval_s=None, status=lambda: "idle")
    watchdog.register("capture:cam0", beat, max_stale_s=1)

    assert watchdog.tick() is False
    clock.advance(2)
    watchdog.tick()

    assert receiver.pending() == [{"STATUS": "idle"}, {"STATUS": "STALLED: capture:cam0; idle"}]


def test_a_raising_probe_counts_as_stale_and_is_logged_once(notifier, receiver, caplog):
    clock = FakeClock()

    def broken_probe():
        raise RuntimeError("probe bug")

    watchdog = make_watchdog(notifier, clock)
    watchdog.register("inference:broken", broken_probe, max_stale_s=10)

    assert watchdog.tick() is False
    assert watchdog.tick() is False

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2  # "probe raised" once + "no progress" once
    assert pings(receiver.pending()) == 0


def test_a_raising_status_builder_does_not_stop_the_pings(notifier, receiver):
    clock = FakeClock()

    def broken_status():
        raise RuntimeError("status bug")

    beat = Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock, status=broken_status)
    watchdog.register("capture:cam0", beat, max_stale_s=10)
    beat.beat()

    assert watchdog.tick() is True
    assert receiver.pending() == [{"WATCHDOG": "1"}]


def test_unregistering_a_stale_probe_lets_pings_resume(notifier, receiver):
    clock = FakeClock()
    old_stream = Heartbeat(clock)
    watchdog = make_watchdog(notifier, clock)
    watchdog.register("capture:cam1", old_stream, max_stale_s=5)
    clock.advance(6)
    assert watchdog.tick() is False

    watchdog.unregister("capture:cam1")

    assert watchdog.tick() is True
    assert watchdog.names() == []


def test_invalid_settings_are_rejected():
    with pytest.raises(ValueError):
        ProgressWatchdog(Notifier(), threading.Event(), ping_interval_s=0)
    with pytest.raises(ValueError):
        make_watchdog(Notifier(), FakeClock()).register("x", lambda: None, max_stale_s=0)


def test_health_file_carries_the_verdict_of_every_tick(notifier, tmp_path):
    clock = FakeClock()
    beat = Heartbeat(clock)
    health = HealthFile(str(tmp_path / "health"), wall_clock=lambda: 1700000000.0)
    watchdog = make_watchdog(
        notifier, clock, status=lambda: "1 stream streaming", health_file=health
    )
    watchdog.register("capture:cam0", beat, max_stale_s=10)
    beat.beat()

    watchdog.tick()
    fresh = json.loads((tmp_path / "health").read_text())
    clock.advance(11)
    watchdog.tick()
    stalled = json.loads((tmp_path / "health").read_text())

    assert fresh["healthy"] is True and fresh["stale"] == []
    assert fresh["status"] == "1 stream streaming"
    assert fresh["written_at"] == 1700000000.0
    assert stalled["healthy"] is False and stalled["stale"] == ["capture:cam0"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["health"]  # no temporary left


def test_unwritable_health_file_is_logged_once_and_pings_continue(
    notifier, receiver, tmp_path, caplog
):
    clock = FakeClock()
    beat = Heartbeat(clock)
    health = HealthFile(str(tmp_path / "missing-dir" / "health"))
    watchdog = make_watchdog(notifier, clock, health_file=health)
    watchdog.register("capture:cam0", beat, max_stale_s=10)
    beat.beat()

    assert [watchdog.tick() for _ in range(3)] == [True] * 3

    assert pings(receiver.pending()) == 3
    assert len([r for r in caplog.records if "health file" in r.getMessage()]) == 1


class HangableBackend:
    """Stands in for TensorRT execution (no GPU here): returns at once unless told to hang."""

    def __init__(self) -> None:
        self.hang = threading.Event()
        self.release = threading.Event()

    def infer(self) -> None:
        if self.hang.is_set():
            self.release.wait()


def inference_worker(backend, heartbeat, stop):
    while not stop.is_set():
        backend.infer()
        heartbeat.beat()
        stop.wait(0.005)


def test_watchdog_thread_stops_pinging_on_injected_hang_and_resumes(notifier, receiver):
    stop = threading.Event()
    backend = HangableBackend()
    heartbeat = Heartbeat()
    worker = threading.Thread(
        target=inference_worker, args=(backend, heartbeat, stop), name="infer-demo"
    )
    watchdog = ProgressWatchdog(
        notifier, stop, ping_interval_s=0.02, status=lambda: "1 stream streaming"
    )
    watchdog.register("inference:demo", heartbeat, max_stale_s=0.3)
    worker.start()
    watchdog.start()
    try:
        assert "watchdog" in [t.name for t in threading.enumerate()]
        assert receiver.receive().get("WATCHDOG") == "1"

        backend.hang.set()
        assert wait_for(lambda: watchdog.stale_probes() == ["inference:demo"])
        receiver.pending()  # pings from before the stall was detected
        withheld = watchdog.pings_withheld
        assert wait_for(lambda: watchdog.pings_withheld >= withheld + 5)
        assert pings(receiver.pending()) == 0

        backend.hang.clear()
        backend.release.set()
        assert wait_for(lambda: watchdog.healthy)
        receiver.sock.setblocking(True)
        assert receiver.receive().get("WATCHDOG") == "1"
    finally:
        backend.release.set()
        stop.set()
        worker.join(5)
        watchdog.join(5)
    assert not worker.is_alive()
    assert "watchdog" not in [t.name for t in threading.enumerate()]

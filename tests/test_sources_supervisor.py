"""SourceSupervisor's state machine with a scripted source and a fake clock (fast, no camera).

The scripted source stands in for a camera: each "connection" is a list of
what successive reads return (an image, None, or an exception to raise).
``run()`` is called in the test thread; the fake ``sleep`` advances the fake
clock, so 30 s backoffs take no time.
"""

import logging
import random
import threading
import time

import numpy as np
import pytest

from edged.errors import SourceError
from edged.sources import (
    BACKOFF,
    CONNECTING,
    ENDED,
    STALLED,
    STOPPED,
    STREAMING,
    FrameSource,
    LatestSlot,
    SourceSupervisor,
    SupervisionPolicy,
)
from edged.sources.supervisor import frame_fingerprint

SILENT = "silent"  # keep returning None (the camera stopped sending)
FROZEN = "frozen"  # keep returning the same image


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


def image(value: int) -> np.ndarray:
    return np.full((4, 6, 3), value % 256, dtype=np.uint8)


class ScriptedSource(FrameSource):
    """Fake camera. ``connections``: per open(), an Exception (open fails) or a list of reads.

    Each read advances the clock by ``interval``. When the script is exhausted the
    shared stop event is set, as the daemon would on shutdown.
    """

    display = "rtsp://admin:***@cam.local/stream"

    def __init__(self, clock, stop, connections, interval=0.1, finite=False):
        self.clock = clock
        self.stop = stop
        self.connections = list(connections)
        self.interval = interval
        self.finite = finite
        self.opens = []  # clock time of every open() call
        self.closes = 0
        self.is_open = False
        self._reads = []
        self._ended = False
        self._sticky = None

    @property
    def ended(self):
        return self._ended

    def open(self):
        self.opens.append(self.clock())
        if not self.connections:
            self.stop.set()
            raise SourceError("script exhausted")
        step = self.connections.pop(0)
        if isinstance(step, Exception):
            raise step
        self.is_open = True
        self._reads = list(step)
        self._sticky = None

    def read(self):
        assert self.is_open, "read() on a closed source"
        self.clock.sleep(self.interval)
        if self._sticky is not None:
            return self._sticky()
        if not self._reads:
            if self.finite:
                self._ended = True
                return None
            if not self.connections:
                self.stop.set()
            return None
        item = self._reads.pop(0)
        if isinstance(item, str) and item == SILENT:
            self._sticky = lambda: None
            return None
        if isinstance(item, str) and item == FROZEN:
            frozen = image(42)
            self._sticky = lambda: frozen
            return frozen
        if isinstance(item, Exception):
            raise item
        return item

    def close(self):
        if self.is_open:
            self.closes += 1
        self.is_open = False


def frames(n, start=0):
    return [image(start + i) for i in range(n)]


def make(connections, policy=None, live=True, capacity=100, interval=0.1, finite=False, seed=1):
    clock = FakeClock()
    stop = threading.Event()
    source = ScriptedSource(clock, stop, connections, interval=interval, finite=finite)
    supervisor = SourceSupervisor(
        "cam1",
        source,
        stop,
        policy or SupervisionPolicy(stall_timeout_s=2.0, backoff_initial_s=1.0, backoff_max_s=8.0),
        slot=LatestSlot(capacity),
        live=live,
        clock=clock,
        wall_clock=lambda: 1.7e9 + clock.now,
        sleep=clock.sleep,
        rng=random.Random(seed),
    )
    return supervisor, source, clock


def drain(slot):
    out = []
    while True:
        item = slot.get_nowait()
        if item is None:
            return out
        out.append(item)


def test_frames_carry_stream_id_sequence_capture_times_and_source_size():
    supervisor, source, clock = make([frames(3)])
    supervisor.run()

    delivered = drain(supervisor.slot)
    assert [f.seq for f in delivered] == [0, 1, 2]
    assert {f.stream_id for f in delivered} == {"cam1"}
    assert all(f.source_size == (6, 4) and f.image.shape == (4, 6, 3) for f in delivered)
    monos = [f.captured_mono for f in delivered]
    assert monos == sorted(monos) and len(set(monos)) == 3
    assert all(abs(f.captured_wall - (1.7e9 + f.captured_mono)) < 1e-6 for f in delivered)


def test_first_frame_moves_connecting_to_streaming_and_stop_ends_in_stopped():
    supervisor, source, _ = make([frames(2)])
    supervisor.run()

    status = supervisor.status()
    assert status.state == STOPPED
    assert status.transitions["stopped->connecting"] == 1
    assert status.transitions["connecting->streaming"] == 1
    assert status.transitions["streaming->stopped"] == 1
    assert status.frames == 2 and status.reconnects == 0
    assert source.closes == 1 and not source.is_open


def test_no_frame_for_the_stall_timeout_stalls_backs_off_and_reconnects():
    supervisor, source, clock = make([frames(2) + [SILENT], frames(2, start=10)])
    supervisor.run()

    status = supervisor.status()
    assert status.stalls == 1 and status.reconnects == 1
    for edge in ("streaming->stalled", "stalled->backoff", "backoff->connecting"):
        assert status.transitions[edge] == 1, edge
    assert "no frame for" in status.last_error
    # the stall fired after stall_timeout of silence, then one jittered initial backoff
    stall_to_reopen = source.opens[1] - source.opens[0]
    assert 2.0 + 0.2 + 0.8 <= stall_to_reopen <= 2.0 + 0.2 + 1.2 + 0.2
    assert [f.seq for f in drain(supervisor.slot)] == [0, 1, 2, 3]  # seq survives reconnects


def test_no_first_frame_after_open_is_a_stall_too():
    supervisor, _, _ = make([[SILENT], frames(1)])
    supervisor.run()

    status = supervisor.status()
    assert status.stalls == 1
    assert "no first frame within" in status.last_error
    assert status.transitions["connecting->stalled"] == 1


def test_read_error_stalls_immediately_and_reconnects():
    lost = SourceError("no frame from rtsp://admin:***@cam.local/stream: stream ended")
    supervisor, source, _ = make([frames(2) + [lost], frames(2)])
    supervisor.run()

    status = supervisor.status()
    assert status.stalls == 1 and status.reconnects == 1 and status.frames == 4
    assert status.last_error.startswith("no frame from")
    assert source.closes == 2


def test_open_failures_back_off_exponentially_with_jitter_and_a_cap():
    failures = [SourceError("connection refused")] * 7
    policy = SupervisionPolicy(backoff_initial_s=1.0, backoff_max_s=8.0, backoff_jitter=0.2)
    supervisor, source, _ = make(failures + [frames(1)], policy=policy)
    supervisor.run()

    gaps = [b - a for a, b in zip(source.opens, source.opens[1:])]
    expected = [1, 2, 4, 8, 8, 8, 8]
    assert len(gaps) == len(expected)
    for gap, base in zip(gaps, expected):
        assert base * 0.8 - 1e-9 <= gap <= base * 1.2 + 1e-9
    assert len({round(g / b, 6) for g, b in zip(gaps, expected)}) > 1  # jittered, not lockstep
    status = supervisor.status()
    assert status.open_failures == 7 and status.reconnects == 7
    assert status.transitions["connecting->backoff"] == 7


def test_backoff_starts_over_after_a_healthy_period():
    policy = SupervisionPolicy(
        stall_timeout_s=2.0,
        backoff_initial_s=1.0,
        backoff_max_s=30.0,
        backoff_jitter=0.0,
        backoff_reset_s=5.0,
    )
    refused = SourceError("refused")
    lost = SourceError("lost")
    script = [refused, refused, refused, frames(80) + [lost], refused, frames(1)]
    supervisor, source, _ = make(script, policy=policy)
    supervisor.run()

    gaps = [b - a for a, b in zip(source.opens, source.opens[1:])]
    assert gaps[:3] == pytest.approx([1.0, 2.0, 4.0])
    # 8 s of streaming (> backoff_reset_s): the next delays are 1 s, 2 s again, not 8 s, 16 s
    streamed = 81 * 0.1  # 80 frames and the failing read
    assert gaps[3] == pytest.approx(streamed + 1.0)
    assert gaps[4] == pytest.approx(2.0)


def test_identical_frames_for_the_frozen_timeout_count_as_a_frozen_stall():
    policy = SupervisionPolicy(stall_timeout_s=20.0, frozen_timeout_s=3.0, backoff_initial_s=1.0)
    supervisor, _, _ = make([frames(3) + [FROZEN], frames(2)], policy=policy)
    supervisor.run()

    status = supervisor.status()
    assert status.frozen == 1 and status.stalls == 1 and status.reconnects == 1
    assert status.last_error.startswith("frozen: identical frames for 3.")


def test_changing_frames_are_never_frozen():
    policy = SupervisionPolicy(frozen_timeout_s=1.0)
    supervisor, _, _ = make([frames(200)], policy=policy)
    supervisor.run()

    assert supervisor.status().frozen == 0 and supervisor.status().frames == 200


def test_files_and_image_directories_do_not_check_frozen_frames_by_default():
    # room for every frame: a file waits for its consumer (no drops), and none runs here
    supervisor, _, clock = make([frames(1) + [image(7)] * 600], live=False, capacity=1000)
    supervisor.run()

    status = supervisor.status()
    assert status.frozen == 0 and status.frames == 601  # 60 s of one still image


def test_the_frozen_default_follows_the_sources_spec_when_not_given():
    from edged.sources import parse_source

    clock = FakeClock()
    stop = threading.Event()
    source = ScriptedSource(clock, stop, [[image(7)] * 600])
    source.spec = parse_source("/videos/still.mp4")  # what OpenCvSource carries
    supervisor = SourceSupervisor(
        "f", source, stop, slot=LatestSlot(1000), clock=clock, sleep=clock.sleep
    )  # room for every frame: a file waits for its consumer, and none runs here
    supervisor.run()

    assert supervisor.status().frozen == 0 and supervisor.status().frames == 600


def test_fingerprint_sees_small_changes_and_ignores_nothing_it_samples():
    a = np.zeros((480, 640, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 1  # a sampled pixel (row 0, column 0)
    assert frame_fingerprint(a) != frame_fingerprint(b)
    assert frame_fingerprint(a) == frame_fingerprint(a.copy())


def test_a_finite_source_ends_without_reconnecting():
    supervisor, source, _ = make([frames(3)], live=False, finite=True)
    supervisor.run()

    status = supervisor.status()
    assert status.state == ENDED and status.frames == 3 and status.reconnects == 0
    assert status.transitions["streaming->ended"] == 1
    assert len(source.opens) == 1 and not source.is_open


def test_pacing_spaces_frames_at_the_sources_rate():
    class PacedSource(ScriptedSource):
        pace_fps = 10.0

    clock = FakeClock()
    stop = threading.Event()
    source = PacedSource(clock, stop, [frames(5)], interval=0.01)
    supervisor = SourceSupervisor(
        "file1", source, stop, slot=LatestSlot(10), live=False, clock=clock, sleep=clock.sleep
    )
    supervisor.run()

    monos = [f.captured_mono for f in drain(supervisor.slot)]
    assert [round(b - a, 6) for a, b in zip(monos, monos[1:])] == [0.1, 0.1, 0.1, 0.1]


def test_a_source_faster_than_the_consumer_costs_drops_not_memory():
    supervisor, _, _ = make([frames(500)], capacity=1, interval=0.01)
    supervisor.run()

    status = supervisor.status()
    assert len(supervisor.slot) == 1
    assert status.frames == 500 and status.drops == 499
    assert supervisor.slot.get_nowait().seq == 499  # the newest frame is the one kept


def test_status_reports_fps_over_the_window_and_the_last_frame_age():
    policy = SupervisionPolicy(fps_window_s=5.0)
    supervisor, _, clock = make([frames(100)], policy=policy, interval=0.1)
    supervisor.run()

    status = supervisor.status()
    assert status.fps == pytest.approx(10.0, rel=0.05)
    assert status.last_frame_age_s == pytest.approx(0.1, abs=1e-6)  # the last, empty read
    assert status.source_size == (6, 4)
    clock.sleep(60.0)
    assert supervisor.status().fps == 0.0
    assert supervisor.status().last_frame_age_s == pytest.approx(60.1)
    as_dict = supervisor.status().to_dict()
    assert as_dict["state"] == STOPPED and as_dict["source_size"] == [6, 4]


def test_unexpected_exceptions_are_logged_counted_and_retried(caplog):
    supervisor, _, _ = make([frames(1) + [ZeroDivisionError("bug")], frames(1)])
    with caplog.at_level(logging.ERROR, logger="edged.sources.supervisor"):
        supervisor.run()

    status = supervisor.status()
    assert status.stalls == 1 and status.reconnects == 1 and status.frames == 2
    assert "ZeroDivisionError" in status.last_error
    assert "unexpected error reading" in caplog.text


def test_repeated_failures_log_one_warning_and_never_a_password(caplog):
    secret = SourceError("cannot open rtsp://admin:hunter2@cam.local/stream (refused)")
    supervisor, _, _ = make([secret] * 5 + [frames(1)])
    with caplog.at_level(logging.DEBUG, logger="edged.sources.supervisor"):
        supervisor.run()

    assert "hunter2" not in caplog.text
    assert "hunter2" not in repr(supervisor.status())
    assert "admin:***@" in supervisor.status().source
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "connecting -> backoff" in warnings[0].getMessage()
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("connecting -> streaming" in m for m in infos)


def test_every_stall_after_a_recovery_is_logged_again(caplog):
    lost = SourceError("lost")
    supervisor, _, _ = make([frames(1) + [lost], frames(1) + [lost], frames(1)])
    with caplog.at_level(logging.INFO, logger="edged.sources.supervisor"):
        supervisor.run()

    stalls = [r for r in caplog.records if "streaming -> stalled" in r.getMessage()]
    assert len(stalls) == 2 and all(r.levelno == logging.WARNING for r in stalls)


def test_policy_rejects_nonsense_values():
    with pytest.raises(ValueError):
        SupervisionPolicy(stall_timeout_s=0)
    with pytest.raises(ValueError):
        SupervisionPolicy(backoff_initial_s=5, backoff_max_s=1)
    with pytest.raises(ValueError):
        SupervisionPolicy(frozen_timeout_s=-1)


# ---------------------------------------------------------------- real threads, real clock


class AlwaysRefused(FrameSource):
    display = "fake://refused"

    def open(self):
        raise SourceError("refused")

    def read(self):
        raise AssertionError("never opened")

    def close(self):
        pass


def test_capture_thread_is_named_after_the_stream_and_stops_from_backoff_at_once():
    stop = threading.Event()
    policy = SupervisionPolicy(backoff_initial_s=30.0, backoff_max_s=30.0, join_timeout_s=5.0)
    supervisor = SourceSupervisor("front door", AlwaysRefused(), stop, policy)
    supervisor.start()
    deadline = time.monotonic() + 5
    while supervisor.state != BACKOFF and time.monotonic() < deadline:
        time.sleep(0.01)
    assert supervisor.state == BACKOFF
    assert "capture-front door" in [t.name for t in threading.enumerate()]

    assert supervisor.stop() is True  # woken out of a 30 s backoff
    assert not supervisor.is_alive() and supervisor.state == STOPPED


def test_the_shared_stop_event_stops_every_supervisor():
    stop = threading.Event()
    policy = SupervisionPolicy(backoff_initial_s=30.0, backoff_max_s=30.0)
    supervisors = [SourceSupervisor(str(i), AlwaysRefused(), stop, policy) for i in range(3)]
    for s in supervisors:
        s.start()
    stop.set()
    for s in supervisors:
        assert s.stop(timeout=5.0) is True


def test_states_are_the_documented_ones():
    assert {CONNECTING, STREAMING, STALLED, BACKOFF, STOPPED, ENDED} == {
        "connecting",
        "streaming",
        "stalled",
        "backoff",
        "stopped",
        "ended",
    }

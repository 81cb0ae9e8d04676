"""One capture thread per stream, supervised the same way for every source kind.

States::

    connecting --first frame--> streaming --no frame / read error / frozen--> stalled
        ^   |                                                                  |
        |   +--open failed / no first frame---------------------------------> backoff
        +------------------------------ delay elapsed -------------------------+
    any state --stop--> stopped            a finite source at its end --> ended

* **stalled**: no frame for ``stall_timeout_s`` (Frigate restarts after 20 s,
  frigate/video/ffmpeg.py), a read error (stream closed, device lost, read timeout),
  or **frozen**: frames identical by content for ``frozen_timeout_s`` (a failing
  Argus pipeline can return its last frame forever while reporting success,
  NVIDIA developer forum reports). The source is closed and reopened after a backoff.
* **backoff**: exponential, jittered, capped (:class:`~.backoff.Backoff`); the
  attempt counter resets once a stream has been healthy for ``backoff_reset_s``.
* State changes are logged once each (never per frame; a failure that repeats
  with the same message is logged at DEBUG after the first time), counted, and
  visible in :meth:`SourceSupervisor.status` for the status topic and metrics.

Frames go into a bounded :class:`~.slot.LatestSlot`: the capture thread never
waits for the consumer. The thread can only notice a stop between calls into
the source: a blocked ``open()``/``read()`` is bounded by the source's own
timeouts. Worst case for an FFmpeg network source (default open 10 s, read 5 s):
one open timeout, or one read timeout on OpenCV 4.x but THREE on OpenCV 5.0
(measured against a SIGSTOPped RTSP server: read_timeout 2 s gave up after
2.0 s on 4.6.0 and 6.0 s on 5.0.0), so up to 15 s with the defaults, inside a
systemd ``TimeoutStopSec=20``. On JetPack 4.6's OpenCV 4.1.1 FFmpeg's RTSP
``stimeout`` and OpenCV's built-in 30 s interrupt bound it instead. A GStreamer
read on OpenCV < 4.7 has no timeout at all: if ``stop()`` cannot join in time
it says so and the (daemon) thread is left to finish on its own;
``status().last_frame_age_s`` keeps growing so the watchdog still sees that
the capture is not progressing.
"""

import collections
import logging
import random
import threading
import time
import zlib
from typing import Callable, Deque, Dict, Optional, Tuple  # noqa: F401 - in type comments

import numpy as np

from ..errors import SourceError
from ..pixels import frame_size
from ..redact import redact
from .backoff import Backoff
from .base import FrameSource
from .frame import Frame
from .slot import LatestSlot
from .status import (  # noqa: F401 - STATES and DEFAULT_FROZEN_TIMEOUT_S are used from here too
    BACKOFF,
    CONNECTING,
    DEFAULT_FROZEN_TIMEOUT_S,
    ENDED,
    STALLED,
    STATES,
    STOPPED,
    STREAMING,
    SourceStatus,
    SupervisionPolicy,
)

logger = logging.getLogger(__name__)

STOP_POLL_S = 0.2  # how often a pause notices the SHARED stop event (a local stop wakes at once)
HASH_SAMPLES_PER_SIDE = 64  # frozen detection hashes about 64x64 pixels per frame


def frame_fingerprint(image: np.ndarray) -> int:
    """A cheap content hash: CRC32 of about 64x64 evenly spaced pixels.

    Sensor noise changes sampled pixels from frame to frame on a live camera; a
    pipeline that replays its last buffer produces the same value every time.
    """
    height, width = image.shape[:2]
    step_y = max(1, height // HASH_SAMPLES_PER_SIDE)
    step_x = max(1, width // HASH_SAMPLES_PER_SIDE)
    sample = np.ascontiguousarray(image[::step_y, ::step_x])
    return zlib.crc32(sample.data) if sample.size else 0


class _Stalled(Exception):
    """Internal: the current connection is given up (reason in args[0])."""


class SourceSupervisor:
    """Owns one :class:`FrameSource` and its capture thread ``capture-<stream_id>``.

    ``live`` (default: the source's ``spec.is_live``, else True) only picks the
    default frozen-frame timeout. Use :meth:`start` / :meth:`stop`; read frames
    from :attr:`slot`. ``clock``,
    ``wall_clock``, ``sleep`` and ``rng`` are injectable so the state machine is
    tested with a fake clock (call :meth:`run` directly in that case).
    """

    def __init__(
        self,
        stream_id: str,
        source: FrameSource,
        stop_event: threading.Event,
        policy: Optional[SupervisionPolicy] = None,
        slot: Optional["LatestSlot[Frame]"] = None,
        live: Optional[bool] = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Optional[Callable[[float], None]] = None,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.stream_id = stream_id
        self.policy = policy if policy is not None else SupervisionPolicy()
        self.slot = slot if slot is not None else LatestSlot(1)  # type: LatestSlot[Frame]
        self._source = source
        self._display = redact(getattr(source, "display", "source"))
        self._shared_stop = stop_event
        self._local_stop = threading.Event()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep if sleep is not None else self._local_stop.wait
        if live is None:  # OpenCV sources know their spec; anything else counts as a camera
            spec = getattr(source, "spec", None)
            live = bool(getattr(spec, "is_live", True))
        self._live = live
        frozen = self.policy.frozen_timeout_s
        if frozen is None:
            frozen = DEFAULT_FROZEN_TIMEOUT_S if live else 0.0
        self._frozen_timeout_s = frozen
        self._backoff = Backoff(
            self.policy.backoff_initial_s,
            self.policy.backoff_max_s,
            jitter=self.policy.backoff_jitter,
            rng=rng,
        )
        self._thread = None  # type: Optional[threading.Thread]

        self._lock = threading.Lock()
        now = clock()
        self._state = STOPPED
        self._state_since = now
        self._frames = 0
        self._reconnects = 0
        self._stalls = 0
        self._frozen = 0
        self._open_failures = 0
        self._last_error = None  # type: Optional[str]
        self._last_logged_error = None  # type: Optional[str]
        self._last_frame_at = None  # type: Optional[float]
        self._size = None  # type: Optional[Tuple[int, int]]
        self._transitions = collections.Counter()  # type: Dict[str, int]
        self._recent = collections.deque()  # type: Deque[float]

    # ------------------------------------------------------------------ control

    @property
    def thread_name(self) -> str:
        return f"capture-{self.stream_id}"

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"supervisor for stream {self.stream_id} already started")
        # daemon: a capture blocked in a driver call must not keep the process alive.
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self, timeout: Optional[float] = None) -> bool:
        """Ask this stream's thread to stop and join it; True if it ended in time."""
        self._local_stop.set()
        thread = self._thread
        if thread is None:
            return True
        thread.join(self.policy.join_timeout_s if timeout is None else timeout)
        if thread.is_alive():
            logger.warning(
                "stream %s: capture thread still inside the source (%s) after stop; "
                "it exits when the source's open/read returns",
                self.stream_id,
                self._display,
            )
            return False
        return True

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _stopping(self) -> bool:
        return self._local_stop.is_set() or self._shared_stop.is_set()

    def _pause(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped first; True when stopping."""
        deadline = self._clock() + seconds
        while not self._stopping():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._sleep(min(remaining, STOP_POLL_S))
        return True

    # ------------------------------------------------------------------ status

    def status(self) -> SourceStatus:
        now = self._clock()
        with self._lock:
            self._trim_recent(now)
            return SourceStatus(
                stream_id=self.stream_id,
                source=self._display,
                state=self._state,
                state_age_s=now - self._state_since,
                fps=self._fps(now),
                frames=self._frames,
                drops=self.slot.drops,
                reconnects=self._reconnects,
                stalls=self._stalls,
                frozen=self._frozen,
                open_failures=self._open_failures,
                last_error=self._last_error,
                last_frame_age_s=None if self._last_frame_at is None else now - self._last_frame_at,
                source_size=self._size,
                transitions=dict(self._transitions),
            )

    @property
    def state(self) -> str:
        with self._lock:
            return self._state

    def _fps(self, now: float) -> float:
        if not self._recent:
            return 0.0
        span = now - self._recent[0]
        return len(self._recent) / max(span, self.policy.fps_window_s / 10.0) if span > 0 else 0.0

    def _trim_recent(self, now: float) -> None:
        horizon = now - self.policy.fps_window_s
        while self._recent and self._recent[0] < horizon:
            self._recent.popleft()

    def _set_state(
        self, state: str, reason: Optional[str] = None, note: Optional[str] = None
    ) -> None:
        with self._lock:
            previous = self._state
            if previous == state:
                return
            self._state = state
            self._state_since = self._clock()
            self._transitions[f"{previous}->{state}"] += 1
        self._log_transition(previous, state, reason, note)

    def _log_transition(
        self, previous: str, state: str, reason: Optional[str], note: Optional[str]
    ) -> None:
        """One line per state change; a failure reason seen last time drops to DEBUG."""
        if reason is not None:
            level = logging.DEBUG if reason == self._last_logged_error else logging.WARNING
            self._last_logged_error = reason
        elif state == STREAMING:
            level = logging.INFO
            self._last_logged_error = None  # the next failure is news again
        elif state in (CONNECTING, BACKOFF):  # a BACKOFF's reason was logged with its stall
            level = logging.DEBUG
        else:
            level = logging.INFO
        text = "; ".join(part for part in (reason, note) if part)
        logger.log(
            level,
            "stream %s (%s): %s -> %s%s",
            self.stream_id,
            self._display,
            previous,
            state,
            ": " + text if text else "",
        )

    def _record_error(self, message: str) -> str:
        message = redact(message)
        with self._lock:
            self._last_error = message
        return message

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """The capture loop; returns when stopped or when a finite source ended."""
        first_attempt = True
        try:
            while not self._stopping():
                if not first_attempt:
                    with self._lock:
                        self._reconnects += 1
                first_attempt = False
                outcome = self._connect_and_stream()
                if outcome in (STOPPED, ENDED):
                    if outcome == ENDED:
                        self._set_state(ENDED, note="end of source")
                    return
                delay = self._backoff.next_delay()
                note = f"retry in {delay:.1f} s"
                if self.state == STALLED:  # the reason was logged with the stall
                    self._set_state(BACKOFF, note=note)
                else:
                    self._set_state(BACKOFF, outcome, note)
                if self._pause(delay):
                    return
        finally:
            self._close_source()
            if self.state != ENDED:
                self._set_state(STOPPED)

    def _connect_and_stream(self) -> str:
        """One connection: returns STOPPED, ENDED, or the reason it failed."""
        self._set_state(CONNECTING)
        try:
            self._source.open()
        except SourceError as e:
            with self._lock:
                self._open_failures += 1
            return self._record_error(str(e))
        except Exception as e:  # noqa: BLE001 - top of a long-lived worker: log, count, retry
            logger.exception(
                "stream %s: unexpected error opening %s", self.stream_id, self._display
            )
            with self._lock:
                self._open_failures += 1
            return self._record_error(f"unexpected {type(e).__name__}: {e}")
        try:
            return self._stream()
        except _Stalled as e:
            reason = self._record_error(str(e.args[0]))
            with self._lock:
                self._stalls += 1
            self._set_state(STALLED, reason)
            return reason
        except Exception as e:  # noqa: BLE001 - top of a long-lived worker: log, count, retry
            logger.exception(
                "stream %s: unexpected error reading %s", self.stream_id, self._display
            )
            reason = self._record_error(f"unexpected {type(e).__name__}: {e}")
            with self._lock:
                self._stalls += 1
            self._set_state(STALLED, reason)
            return reason
        finally:
            self._close_source()

    def _stream(self) -> str:
        policy = self.policy
        opened_at = self._clock()
        last_frame_at = opened_at
        streaming_since = None  # type: Optional[float]
        fingerprint = None  # type: Optional[int]
        unchanged_since = opened_at
        pace = self._source.pace_fps
        next_due = opened_at

        # A file read as fast as it decodes (realtime: false) waits for the consumer instead
        # of decoding frames only to drop them: nothing is lost, and on a 2-core Jetson the
        # decoder no longer steals a core from inference (benchmarks/streams.py reads files
        # so). Cameras keep the latest-frame policy: they cannot be paused.
        backpressure = not pace and not self._live
        while not self._stopping():
            if backpressure and not self.slot.wait_for_room(STOP_POLL_S):
                continue
            try:
                image = self._source.read()
            except SourceError as e:
                raise _Stalled(str(e)) from e
            now = self._clock()

            if image is None:
                if self._source.ended:
                    return ENDED
                silent = now - last_frame_at
                if silent >= policy.stall_timeout_s:
                    what = (
                        "no frame for" if streaming_since is not None else "no first frame within"
                    )
                    raise _Stalled(f"{what} {silent:.1f} s")
                if self._pause(policy.idle_poll_s):
                    break
                continue

            if self._frozen_timeout_s > 0:
                value = frame_fingerprint(image)
                if value != fingerprint:
                    fingerprint, unchanged_since = value, now
                elif now - unchanged_since >= self._frozen_timeout_s:
                    with self._lock:
                        self._frozen += 1
                    raise _Stalled(f"frozen: identical frames for {now - unchanged_since:.1f} s")

            self._deliver(image, now)
            last_frame_at = now
            if streaming_since is None:
                streaming_since = now
                self._set_state(STREAMING)
            if self._backoff.attempt and now - streaming_since >= policy.backoff_reset_s:
                self._backoff.reset()

            if pace:
                # Pace like a camera; never build up a debt of frames to catch up on.
                next_due = max(next_due + 1.0 / pace, now)
                if self._pause(next_due - now):
                    break
        return STOPPED

    def _deliver(self, image: np.ndarray, now: float) -> None:
        pixel_format = self._source.pixel_format  # an I420 array is (H * 3/2) x W
        width, height = frame_size(image, pixel_format)
        with self._lock:
            seq = self._frames
            self._frames += 1
            self._last_frame_at = now
            self._size = (width, height)
            self._recent.append(now)
            self._trim_recent(now)
        self.slot.put(Frame(self.stream_id, seq, now, self._wall_clock(), (width, height), image,
                            self._reconnects, pixel_format))  # fmt: skip

    def _close_source(self) -> None:
        try:
            self._source.close()
        except Exception:  # noqa: BLE001 - a failing release must not kill supervision
            logger.exception("stream %s: error closing %s", self.stream_id, self._display)

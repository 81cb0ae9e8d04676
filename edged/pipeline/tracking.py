"""Tracking and counting of one detector model's streams, inside the worker.

:class:`TrackingStage` runs on the worker's post-processing thread, after a frame's
detections are made and before the result is emitted, so every sink (MQTT, metrics,
``edged watch``) sees the same ``track_id`` and the same counts, in frame order. Per stream
it holds a :class:`~edged.tracking.tracker.Tracker` and a
:class:`~edged.tracking.counting.StreamCounter`; a source reconnect (the frame's
``connection`` changes) resets the tracker, never the totals. Totals are saved through a
:class:`~edged.tracking.store.CountsStore` whenever one changes and start again from 0 only
by :meth:`TrackingStage.reset_counts` (the MQTT ``reset_counts`` command).

What a frame changed rides on the result as :class:`TrackingUpdate`.
"""

import dataclasses
import logging
import threading
from typing import Any, Dict, List, NamedTuple, Optional, Sequence

from ..config.model import StreamConfig, TrackingConfig
from ..sources.frame import Frame
from ..tracking.counting import LineSpec, StreamCounter, ZoneSpec
from ..tracking.store import CountsStore
from ..tracking.tracker import Tracker, TrackerParams
from .results import InferenceResult

logger = logging.getLogger(__name__)

#: Frames a seq gap may stand for when predicting boxes (a longer gap: the tracks are stale).
MAX_STEP = 30


class TrackingUpdate(NamedTuple):
    """What one frame changed: its events (zone enter/leave, line crossings), the stream's
    counts after it, and whether they differ from the previous frame's."""

    events: List[Dict[str, Any]]
    counts: Dict[str, Any]
    counts_changed: bool
    overlay: Optional[Dict[str, Any]] = None  # zones, lines, trails to draw (snapshot)


class _StreamState:
    def __init__(self, tracker: Tracker, counter: StreamCounter) -> None:
        self.tracker = tracker
        self.counter = counter
        self.connection = None  # type: Optional[int]
        self.last_seq = None  # type: Optional[int]
        self.counts = None  # type: Optional[Dict[str, Any]]


def tracker_params(config: TrackingConfig) -> TrackerParams:
    fields = {f.name for f in dataclasses.fields(TrackerParams)}
    return TrackerParams(**{k: v for k, v in dataclasses.asdict(config).items() if k in fields})


class TrackingStage:
    """The trackers and counters of the streams of one model."""

    def __init__(self, model: str, config: TrackingConfig, labels: Sequence[str],
                 store: Optional[CountsStore] = None) -> None:  # fmt: skip
        self.model = model
        self.config = config
        self._params = tracker_params(config)
        self._labels = tuple(labels)
        self._store = store
        self._saved = store.load() if store is not None else {}
        self._streams = {}  # type: Dict[str, _StreamState]
        # the post thread updates, the command and metrics threads read and reset
        self._lock = threading.Lock()

    def add_stream(self, stream: StreamConfig) -> None:
        counter = StreamCounter(
            zones=[ZoneSpec(z.name, z.points, z.units, z.labels) for z in stream.zones],
            lines=[
                LineSpec(ln.name, ln.start, ln.end, ln.units, ln.labels, ln.hysteresis)
                for ln in stream.lines
            ],  # fmt: skip
            anchor=self.config.anchor,
            labels=self._labels,
        )
        counter.load_state(self._saved.get(stream.name, {}))
        with self._lock:
            self._streams[stream.name] = _StreamState(Tracker(self._params), counter)

    def remove_stream(self, stream_id: str) -> None:
        with self._lock:
            state = self._streams.pop(stream_id, None)
            if state is not None:  # its totals stay saved for when it comes back
                self._saved[stream_id] = state.counter.state()
                if self._store is not None:
                    self._store.save({stream_id: self._saved[stream_id]})

    @property
    def stream_ids(self) -> List[str]:
        with self._lock:
            return sorted(self._streams)

    def apply(self, frame: Frame, result: InferenceResult) -> InferenceResult:
        """Give the result's detections their track ids and count; a new result."""
        with self._lock:
            state = self._streams.get(result.stream_id)
            if state is None:
                return result
            if state.connection is not None and frame.connection != state.connection:
                state.tracker.reset()  # positions do not follow on across a reconnect
                state.counter.reset_tracks()
            step = 1 if state.last_seq is None else frame.seq - state.last_seq
            state.connection, state.last_seq = frame.connection, frame.seq
            items = result.items
            ids = state.tracker.update(
                [d.bbox for d in items], [d.confidence for d in items],
                [d.class_id for d in items], step=min(max(1, step), MAX_STEP),
            )  # fmt: skip
            tracked = [dataclasses.replace(d, track_id=i) for d, i in zip(items, ids)]
            before = state.counter.state()
            events = state.counter.update(state.tracker.tracks(), result.frame_size,
                                          frame.captured_mono)  # fmt: skip
            counts = state.counter.counts()
            overlay = state.counter.overlay()
            changed = counts != state.counts
            state.counts = counts
            if self._store is not None and state.counter.state() != before:
                self._save_locked()
        update = TrackingUpdate(events, counts, changed, overlay)
        return dataclasses.replace(result, items=tracked, tracking=update)

    def _save_locked(self) -> None:
        assert self._store is not None
        self._store.save({s: st.counter.state() for s, st in self._streams.items()})

    def reset_counts(self, stream_id: Optional[str] = None) -> List[str]:
        """Totals back to 0 for one stream or all of this model's; the streams reset."""
        with self._lock:
            names = [s for s in sorted(self._streams) if stream_id in (None, s)]
            for name in names:
                self._streams[name].counter.reset_counts()
                self._streams[name].counts = None  # the next frame publishes the zeros
            if names and self._store is not None:
                self._save_locked()
        return names

    def counts(self) -> Dict[str, Dict[str, Any]]:
        """Stream -> its counts now (metrics, commands)."""
        with self._lock:
            return {s: st.counter.counts() for s, st in self._streams.items()}

    @property
    def labels(self) -> Sequence[str]:
        return self._labels

    def layout(self) -> Dict[str, Any]:
        """Stream -> (zones, lines) as configured: the metrics' bounded label sets."""
        with self._lock:
            return {s: (st.counter.zones, st.counter.lines) for s, st in self._streams.items()}


def counts_store(config: Any) -> CountsStore:
    """The counts file of a :class:`~edged.config.Config`: beside the MQTT outbox (its
    configured path, or the default state directory's)."""
    from ..statepaths import default_outbox_path
    from ..tracking.store import default_counts_path

    outbox = None
    if config.mqtt is not None:
        outbox = config.mqtt.outbox.path
    outbox = outbox or default_outbox_path(config.device_id)
    return CountsStore(default_counts_path(outbox, config.device_id))


def stage_for(
    config: Any, model: str, task: Any, store: Optional[CountsStore]
) -> Optional[TrackingStage]:
    """The model's :class:`TrackingStage`, or None when it does not track (or is no detector)."""
    tracking = config.models[model].tracking
    if not tracking.enabled:
        return None
    if task.kind != "detection":
        logger.warning("model %s: tracking.enabled is ignored: it is a %s model, not a detector",
                       model, task.kind)  # fmt: skip
        return None
    return TrackingStage(model, tracking, task.labels, store)


def stages_of(daemon: Any) -> List[TrackingStage]:
    """The tracking stages of a daemon's running models (MQTT commands, metrics)."""
    models = getattr(daemon, "models", None)
    workers = models.workers() if models is not None else {}
    return [w.tracking for _, w in sorted(workers.items()) if w.tracking is not None]

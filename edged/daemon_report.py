"""What the daemon tells a person, read from its snapshot: the systemd ``STATUS=`` line and the
periodic per-stream summary lines of the log."""

import logging
from typing import Any, Dict, List, Tuple

from .daemon_view import DaemonSnapshot

logger = logging.getLogger("edged.daemon")  # the summaries have always come from this logger


def status_line(snapshot: DaemonSnapshot) -> str:
    """The ``STATUS=`` text for ``systemctl status``."""
    states = {}  # type: Dict[str, int]
    fps = 0.0
    dropped = 0
    for stream in snapshot.streams.values():
        states[stream.status.state] = states.get(stream.status.state, 0) + 1
        fps += stream.status.fps
        dropped += stream.status.drops
    parts = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "none"
    return (
        f"{len(snapshot.streams)} streams ({parts}); {fps:.1f} fps in; "
        f"{dropped} frames dropped; {len(snapshot.models)} models"
    )


class StreamSummaries:
    """Per stream: capture status plus the inference rate since the previous summary."""

    def __init__(self) -> None:
        self._counts: Dict[str, Tuple[float, int]] = {}  # stream -> (when, inferred)

    def start(self, stream_id: str, now: float, inferred: int) -> None:
        """A stream started: its first rate counts from here, not from a later first look."""
        self._counts[stream_id] = (now, inferred)

    def forget(self, stream_id: str) -> None:
        self._counts.pop(stream_id, None)

    def summaries(self, snapshot: DaemonSnapshot, now: float) -> List[Dict[str, Any]]:
        out = []
        for stream_id, stream in sorted(snapshot.streams.items()):
            status = stream.status
            inferred = stream.inferred
            since, before = self._counts.get(stream_id, (now, inferred))
            self._counts[stream_id] = (now, inferred)
            rate = (inferred - before) / (now - since) if now > since else 0.0
            latest = stream.last_result
            out.append(
                {
                    "stream": stream_id,
                    "state": status.state,
                    "fps_in": status.fps,
                    "inferred_per_s": rate,
                    "inferred": inferred,
                    "dropped": status.drops,
                    "reconnects": status.reconnects,
                    "model": stream.model,
                    "last": describe_items(latest.items) if latest else "no result yet",
                }
            )
        return out

    def log(self, snapshot: DaemonSnapshot, now: float) -> None:
        for s in self.summaries(snapshot, now):
            logger.info(
                "stream %s: %s, %.1f fps in, %.1f inferred/s, %d dropped, %d reconnects, "
                "model %s, last: %s",
                s["stream"], s["state"], s["fps_in"], s["inferred_per_s"], s["dropped"],
                s["reconnects"], s["model"], s["last"],
            )  # fmt: skip


def describe_items(items: List[Any]) -> str:
    """``2 person, 1 car`` (detections) or ``seven (93%)`` (a classification's top class)."""
    if not items:
        return "nothing"
    if not hasattr(items[0], "bbox"):  # classification: the top class
        return f"{items[0].label} ({100 * items[0].confidence:.0f}%)"
    counts = {}  # type: Dict[str, int]
    for item in items:
        counts[item.label] = counts.get(item.label, 0) + 1
    return ", ".join(f"{n} {label}" for label, n in sorted(counts.items()))

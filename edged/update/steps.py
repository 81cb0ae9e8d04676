"""One slow update step at a time on a helper thread, with a deadline.

Verify, stage, build, canary, switch and health checks may take long or hang; the updater's
thread keeps serving its queue meanwhile. A step that outlives its deadline is a hang: it is
abandoned (a Python thread cannot be killed) and its late result is marked stale, so the
updater ignores it (and undoes a late switch).
"""

import logging
import queue
import threading
from typing import Any, Callable, NamedTuple, Optional, Tuple

from ..errors import EdgedError

logger = logging.getLogger(__name__)


class Result(NamedTuple):
    name: str
    error: str  # "" when the step succeeded
    value: Any
    stale: bool  # cancelled or timed out before it finished


class Steps:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._done: queue.Queue = queue.Queue(16)
        self._current: Optional[Tuple[str, int, float]] = None
        self._generation = 0

    @property
    def running(self) -> bool:
        return self._current is not None

    def begin(self, name: str, work: Callable[[], Any], timeout: float) -> None:
        self._generation += 1
        generation = self._generation
        self._current = (name, generation, self._now() + timeout)

        def run() -> None:
            error: str = ""
            value: Any = None
            try:
                value = work()
            except EdgedError as e:
                error = str(e) or type(e).__name__
            except Exception as e:  # the top of a step thread: a bug reads as a failed step
                logger.exception("update step %s: unexpected error", name)
                error = f"{name}: {type(e).__name__}"
            self._done.put((generation, name, error, value))

        threading.Thread(target=run, name=f"edged-update-{name}", daemon=True).start()

    def cancel(self) -> None:
        """Whatever runs now finishes stale."""
        self._generation += 1
        self._current = None

    def result(self) -> Optional[Result]:
        """A finished step's result, if one is waiting."""
        try:
            generation, name, error, value = self._done.get_nowait()
        except queue.Empty:
            return None
        stale = self._current is None or generation != self._current[1]
        if not stale:
            self._current = None
        return Result(name, error, value, stale)

    def expired(self) -> str:
        """The name of the running step past its deadline ("" if none); it is cancelled."""
        if self._current is not None and self._now() > self._current[2]:
            name = self._current[0]
            self.cancel()
            return name
        return ""

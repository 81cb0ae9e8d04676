"""Small helpers shared by the tests: polling with a safety timeout, a hand-moved clock, a
progress probe the test beats by hand, a TensorRT platform that reports another machine, a result
sink that calls a function."""

import time
from typing import Any, Callable, Optional

from edged.engine.platform import PlatformInfo, PlatformProvider
from edged.pipeline.sinks import ResultSink


def wait_for(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    what: str = "the condition",
    poll: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something truthy, and return that.

    ``timeout`` is a safety net for a hung test, not a measurement: raises AssertionError naming
    ``what`` when it runs out.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    value = predicate()
    if value:
        return value
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class FakeClock:
    """Monotonic time the test moves by hand: call it for the time, ``advance`` or ``sleep`` it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.now += max(seconds, 0.0)


class Heartbeat:
    """A watchdog progress probe: ``beat()`` where work progressed; calling it returns the
    monotonic time of the last beat (None before the first one)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: Optional[float] = None

    def beat(self) -> None:
        self._last = self._clock()

    def __call__(self) -> Optional[float]:
        return self._last


class FixedPlatform(PlatformProvider):
    """A platform provider that reports ``overrides`` over ``base`` (another GPU or TensorRT)."""

    def __init__(self, base: PlatformProvider, **overrides: str) -> None:
        self._base = base
        self._overrides = overrides

    def __call__(self, trt: Any) -> PlatformInfo:
        return self._base(trt).replace(**self._overrides)


class CallbackSink(ResultSink):
    """Calls a function with every result, on the sinks thread."""

    def __init__(self, callback: Callable[[Any], None], name: str = "callback") -> None:
        self._callback = callback
        self.name = name

    def handle(self, result: Any) -> None:
        self._callback(result)

"""Exponential backoff with jitter and a cap, reset after a healthy period.

Delay n (0-based) is ``min(cap, initial * factor**n)`` scaled by a random factor
in ``[1 - jitter, 1 + jitter]``: many cameras that fail together (a switch
reboots) do not reconnect in lockstep. The cap applies before the jitter, so a
delay is at most ``max_s * (1 + jitter)``; clamping after it would put every
capped client back in lockstep at exactly ``max_s``. Defaults: 1 s doubling to 30 s, +-20 %
(paho-mqtt's ``reconnect_delay_set`` doubling, with the jitter paho lacks).
"""

import random
from typing import Optional


class Backoff:
    """Yields successive retry delays; :meth:`reset` after the peer was healthy again."""

    def __init__(
        self,
        initial_s: float = 1.0,
        max_s: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.2,
        rng: Optional[random.Random] = None,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        if factor < 1.0 or not 0.0 <= jitter < 1.0:
            raise ValueError("backoff needs factor >= 1 and 0 <= jitter < 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.jitter = jitter
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """How many delays were handed out since the last reset."""
        return self._attempt

    def next_delay(self) -> float:
        # Cap the exponent too: factor**attempt must not overflow after months of failures.
        base = min(self.max_s, self.initial_s * self.factor ** min(self._attempt, 64))
        self._attempt += 1
        return base * self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)

    def reset(self) -> None:
        self._attempt = 0

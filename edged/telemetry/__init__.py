"""Jetson telemetry: GPU and memory-controller load, temperatures,
power rails, RAM and swap, read from ``tegrastats``; absent on other machines.

:func:`parse_line` turns one tegrastats line into a :class:`JetsonStats`;
:class:`TegrastatsReader` runs the program in the ``telemetry`` thread. The
Prometheus gauges built from a snapshot are in :mod:`edged.metrics.jetson`.
"""

from .reader import TegrastatsReader, find_tegrastats
from .tegrastats import JetsonStats, PowerRail, parse_line

__all__ = ["JetsonStats", "PowerRail", "TegrastatsReader", "find_tegrastats", "parse_line"]

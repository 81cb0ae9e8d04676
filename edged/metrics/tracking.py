"""Counting metrics of the tracking models' streams, read at scrape time.

* ``edged_zone_occupancy{stream,zone,label}``: tracks in the zone now;
* ``edged_zone_entries_total{stream,zone,label}``: tracks that entered it;
* ``edged_line_crossings_total{stream,line,label,direction}``: ``in`` and ``out``.

The label sets are bounded by the config: zones and lines are the configured ones, labels
the model's (or the zone's or line's ``labels``), so every series exists from the start
at 0 and no detection can add one. The totals go back to 0 only on the operator's
``reset_counts`` (Prometheus' ``rate`` and ``increase`` treat that as a counter reset).
"""

from typing import Any, Iterator, List, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


class TrackingCollector:
    """Reads the TrackingStage of each of the daemon's running models."""

    def __init__(self, daemon: Any) -> None:
        self._daemon = daemon

    def _stages(self) -> List[Any]:
        from ..pipeline.tracking import stages_of

        return list(stages_of(self._daemon))

    def collect(self) -> Iterator[Metric]:
        occupancy = GaugeMetricFamily("edged_zone_occupancy", "Tracked objects in a zone now.",
                                      labels=["stream", "zone", "label"])  # fmt: skip
        entries = CounterMetricFamily("edged_zone_entries", "Tracked objects that entered a zone.",
                                      labels=["stream", "zone", "label"])  # fmt: skip
        crossings = CounterMetricFamily(
            "edged_line_crossings", "Tracked objects that crossed a line, by direction.",
            labels=["stream", "line", "label", "direction"],
        )  # fmt: skip
        for stage in self._stages():
            counts = stage.counts()
            for stream, (zones, lines) in sorted(stage.layout().items()):
                now = counts.get(stream, {"zones": {}, "lines": {}})
                for zone in zones:
                    seen = now["zones"].get(zone.name, {})
                    for label in _labels(zone.labels, stage.labels):
                        key = [stream, zone.name, label]
                        occupancy.add_metric(key, seen.get("by_label", {}).get(label, 0))
                        entries.add_metric(key, seen.get("entered", {}).get(label, 0))
                for line in lines:
                    by_label = now["lines"].get(line.name, {}).get("by_label", {})
                    for label in _labels(line.labels, stage.labels):
                        for direction in ("in", "out"):
                            value = by_label.get(label, {}).get(direction, 0)
                            crossings.add_metric([stream, line.name, label, direction], value)
        yield occupancy
        yield entries
        yield crossings


def _labels(own: Sequence[str], model: Sequence[str]) -> Sequence[str]:
    return tuple(own) if own else tuple(model)

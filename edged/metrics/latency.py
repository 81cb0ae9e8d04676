"""Per-stage latency histograms by stream and model, fed by one result sink.

:class:`MetricsSink` runs on the daemon's ``sinks`` thread, so timing a result
costs the inference workers nothing. It files each entry of
``InferenceResult.latency_ms`` (queue, preprocess, inference, postprocess,
total) into ``edged_inference_stage_seconds{stream,model,stage}``.

The histograms are kept here rather than in ``prometheus_client.Histogram`` so
that they export no ``_created`` series (whose switch is global and missing
from 0.17.1, the last release for Python 3.6) and cost one lock and one
bisect per observation.
"""

import bisect
import threading
from typing import Dict, Iterator, List, Sequence, Tuple

from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from ..pipeline.results import InferenceResult
from ..pipeline.sinks import ResultSink

#: Bucket bounds (seconds) for 1 ms .. 5 s: a Nano's queue waits and ResNet-18 inferences
#: fall in the lower half, a PeopleNet frame on a busy Nano near 100-300 ms.
STAGE_BUCKETS_S = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.15, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
)  # fmt: skip

Key = Tuple[str, str, str]  # (stream, model, stage)


class LatencyHistograms:
    """A thread-safe family of histograms, collected by a ``CollectorRegistry``."""

    name = "edged_inference_stage_seconds"
    documentation = (
        "Time per pipeline stage of one frame: queue (waiting in the frame slot and between "
        "the steps), preprocess, inference, postprocess, total (capture to result)."
    )
    labels = ("stream", "model", "stage")

    def __init__(self, buckets: Sequence[float] = STAGE_BUCKETS_S) -> None:
        if list(buckets) != sorted(set(buckets)) or not buckets:
            raise ValueError(f"buckets must be distinct and increasing, got {buckets!r}")
        self._bounds = list(buckets)
        self._lock = threading.Lock()
        # per key: counts per bucket (NOT cumulative; the last is +Inf) and the sum
        self._counts: Dict[Key, List[int]] = {}
        self._sums: Dict[Key, float] = {}

    def observe(self, stream: str, model: str, stage: str, seconds: float) -> None:
        seconds = max(0.0, seconds)  # clocks are monotonic; guard the histogram anyway
        index = bisect.bisect_left(self._bounds, seconds)  # first bound >= seconds ("le")
        key = (stream, model, stage)
        with self._lock:
            counts = self._counts.get(key)
            if counts is None:
                counts = self._counts[key] = [0] * (len(self._bounds) + 1)
                self._sums[key] = 0.0
            counts[index] += 1
            self._sums[key] += seconds

    def count(self, stream: str, model: str, stage: str) -> int:
        with self._lock:
            return sum(self._counts.get((stream, model, stage), ()))

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        with self._lock:
            snapshot = [(key, list(self._counts[key]), self._sums[key]) for key in self._counts]
        for key, counts, total in sorted(snapshot):
            buckets = []
            cumulative = 0
            for bound, n in zip(self._bounds, counts):
                cumulative += n
                buckets.append((floatToGoString(bound), cumulative))
            buckets.append(("+Inf", cumulative + counts[-1]))
            family.add_metric(list(key), buckets, total)
        yield family


class MetricsSink(ResultSink):
    """Observes every result's per-stage latencies (on the sinks thread)."""

    name = "metrics"

    def __init__(self, histograms: LatencyHistograms) -> None:
        self.histograms = histograms

    def handle(self, result: InferenceResult) -> None:
        for stage, ms in result.latency_ms.items():
            self.histograms.observe(result.stream_id, result.model, stage, ms / 1000.0)

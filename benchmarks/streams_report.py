"""Benchmark 7 (many streams) in results.md: goal rows for the main table, its own table, a plot."""

import math
from typing import Any, Dict, List, Optional

#: The stream count the goals are stated at, and the goals.
GOAL_STREAMS = 4
GOAL_VS_NAIVE = 1.3
GOAL_RSS_PER_ADDED_STREAM_MB = 15.0
GROUP = "8 streams"
#: Contenders in table order, with the label they get (``N``: the stream count).
LABELS = (
    ("runtime_b1", "runtime limit, batch 1 (threads not spinning, as edged)"),
    ("runtime_bN", "runtime limit, batch N (threads not spinning, as edged)"),
    ("edged_b1", "edged, max_batch 1"),
    ("edged_bN", "edged, max_batch N"),
    ("naive", "N naive processes"),
)


def _fmt(value: Optional[float], digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "{:.{}f}".format(value, digits)


def _goal_count(streams: Dict[str, Any]) -> str:
    counts = [int(n) for n in streams["by_count"]]
    chosen = GOAL_STREAMS if GOAL_STREAMS in counts else max(counts)
    return str(chosen)


def goal_rows(streams: Dict[str, Any]) -> List[List[str]]:
    """Main-table rows: edged's total against the naive processes and RSS per added stream."""
    n = _goal_count(streams)
    figures = streams["by_count"][n]
    naive = figures.get("naive", {}).get("fps")
    rows = []  # type: List[List[str]]
    for key in ("edged_b1", "edged_bN"):
        edged = figures.get(key)
        if edged is None:
            continue
        batch = 1 if key == "edged_b1" else int(n)
        ratio = edged["fps"] / naive if naive else None
        rows.append([GROUP, f"{n} streams, max_batch {batch}: edged total / {n} naive processes",
                     _fmt(ratio, 2), f">= {GOAL_VS_NAIVE}",
                     _met(ratio is not None and ratio >= GOAL_VS_NAIVE)])  # fmt: skip
        added = edged.get("rss_mb_per_added_stream")
        if added is not None:
            rows.append([GROUP, f"{n} streams, max_batch {batch}: edged RSS per added stream (MB)",
                         _fmt(added), f"<= {GOAL_RSS_PER_ADDED_STREAM_MB:.0f}",
                         _met(added <= GOAL_RSS_PER_ADDED_STREAM_MB)])  # fmt: skip
    return rows


def _met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def table(streams: Dict[str, Any]) -> List[str]:
    """Every contender at every stream count (medians over the repeats)."""
    lines = [
        "",
        "Many streams (7): the demo clip read N times into one detector (a dynamic-batch copy of "
        "the demo ONNX), medians of {} repeats of {:.1f} s windows; ONNX Runtime intra-op "
        "threads {} in every process:".format(streams["repeats"], streams["window_s"],
                                              streams["threads"]),
        "",
        "| streams | contender | total fps | fps per stream (mean / min) | CPU ms per frame "
        "| RSS MB (per added stream) | latency p50 / p99 ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for n, figures in streams["by_count"].items():
        for key, label in LABELS:
            f = figures.get(key)
            if f is None:
                continue
            per_stream = ("{} / {}".format(_fmt(f["fps_per_stream_mean"]),
                                           _fmt(f["fps_per_stream_min"]))
                          if "fps_per_stream_mean" in f else "")  # fmt: skip
            rss = ""
            if "rss_mb_total" in f:
                rss = _fmt(f["rss_mb_total"], 0)
                if f.get("rss_mb_per_added_stream") is not None:
                    rss += " ({})".format(_fmt(f["rss_mb_per_added_stream"]))
            latency = ("{} / {}".format(_fmt(f["latency_p50_ms"], 0), _fmt(f["latency_p99_ms"], 0))
                       if f.get("latency_p50_ms") is not None else "")  # fmt: skip
            lines.append("| {} | {} | {} | {} | {} | {} | {} |".format(
                n, label.replace("N", n), _fmt(f["fps"]), per_stream,
                _fmt(f.get("cpu_ms_per_frame")), rss, latency))  # fmt: skip
    return lines


def plot(streams: Dict[str, Any], plt: Any) -> Any:
    """Total fps and p99 latency against the stream count, one line per contender."""
    counts = [int(n) for n in streams["by_count"]]
    fig, (fps_ax, lat_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = {"runtime_b1": "#888", "runtime_bN": "#444", "edged_b1": "#8c8", "edged_bN": "#2a7",
              "naive": "#c63"}  # fmt: skip
    for key, label in LABELS:
        points = [(n, streams["by_count"][str(n)].get(key)) for n in counts]
        if key.endswith("bN"):  # at 1 stream, batch N is batch 1
            points = [(n, f or streams["by_count"][str(n)].get(key[:-1] + "1")) for n, f in points]
        points = [(n, f) for n, f in points if f is not None]
        fps_ax.plot([n for n, _ in points], [f["fps"] for _, f in points], "o-",
                    color=colors[key], label=label)  # fmt: skip
        lat = [(n, f["latency_p99_ms"]) for n, f in points if f.get("latency_p99_ms") is not None]
        if lat:
            lat_ax.plot([n for n, _ in lat], [v for _, v in lat], "o-", color=colors[key],
                        label=label)  # fmt: skip
    fps_ax.set_xlabel("streams")
    fps_ax.set_ylabel("total frames/s (median)")
    fps_ax.set_xticks(counts)
    fps_ax.legend(fontsize=7)
    lat_ax.set_xlabel("streams")
    lat_ax.set_ylabel("capture -> subscriber, p99 (ms)")
    lat_ax.set_xticks(counts)
    lat_ax.legend(fontsize=7)
    valid = streams.get("validity", {}).get("valid", True)
    fig.suptitle("Many streams of the demo clip into one detector"
                 + ("" if valid else " (INVALID run: see results.md)"))  # fmt: skip
    return fig

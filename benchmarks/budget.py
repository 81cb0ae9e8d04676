"""How far "edged / runtime limit" can go on this machine: CPU per frame, from the run's figures.

With ONNX Runtime given every core, each millisecond of CPU that edged spends beside the
model (decode, pre-processing, post-processing, publishing) is taken from the model, which
the runtime limit never pays. Every pipeline window records the CPU ticks of the
benchmark's processes (benchmarks/validity.py), so the run itself says what a frame costs:

    CPU per frame (ms) = cores used in the window x 1000 / fps

and, with ``m`` the CPU of ONNX Runtime alone per frame and ``s`` the CPU of the steps beside
it (benchmark 2: decode + pre-processing + post-processing + publishing), a pipeline that
keeps every core busy and loses nothing to hand-offs reaches at most ``m / (m + s)`` of the
runtime alone; reaching a goal ``g`` needs ``s <= m x (1 / g - 1)``. Pure functions.
"""

from typing import Any, Dict, List, Optional

from .common import median

#: the contenders whose CPU per frame the note names
CONTENDERS = ("runtime", "runtime_nospin", "edged", "edged_serial", "naive")


def cpu_ms_per_frame(section: Dict[str, Any], verdict: Dict[str, Any]) -> Dict[str, float]:
    """Median over repeats of each contender's CPU ms per frame (pure).

    The n-th window of a contender is its window of repeat n (benchmarks/validity.py's
    ``interleaved`` runs each contender once per repeat).
    """
    out = {}
    for name in CONTENDERS:
        windows = [w for w in verdict.get("windows", []) if w["window"] == name]
        ms = [
            1000.0 * w["load"]["own_cores"] / run[name]
            for w, run in zip(windows, section.get("runs", []))
            if run.get(name)
        ]
        if ms:
            out[name] = median(ms)
    return out


def gap_note(results: Dict[str, Any], goal: float = 0.9) -> Optional[str]:
    """The note on the one-stream gap, or None when the run lacks the figures (pure)."""
    pipeline = results.get("pipeline")
    verdict = results.get("validity", {}).get("benchmarks", {}).get("pipeline")
    cost = (results.get("cpu_cost") or {}).get("median_ms")
    if not pipeline or not verdict or not cost:
        return None
    cpu = cpu_ms_per_frame(pipeline, verdict)
    if "runtime_nospin" not in cpu or "edged" not in cpu:
        return None
    model = cpu["runtime_nospin"]
    beside = cost["decode"] + cost["outside_inference"]
    bound = model / (model + beside)
    budget = model * (1.0 / goal - 1.0)
    parts: List[str] = [
        "CPU per frame with ONNX Runtime on all {} cores (cores used x 1000 / fps, median of "
        "repeats): ONNX Runtime alone {:.1f} ms (not spinning, as edged sets it), edged "
        "{:.1f} ms".format(pipeline.get("threads", "?"), model, cpu["edged"]),
        "the steps beside the model (benchmark 2: decode {:.2f} + pre {:.2f} + post {:.2f} + "
        "publish {:.2f}) {:.2f} ms".format(
            cost["decode"], cost["preprocess"], cost["postprocess"], cost["publish"], beside
        ),
        f"so with every core busy edged reaches at most {model:.1f} / ({model:.1f} + "
        f"{beside:.2f}) = {bound:.2f} of ONNX Runtime alone; {goal:.2f} needs the steps beside "
        f"it under {budget:.2f} ms a frame",
        "the other {:.1f} ms of edged's are what neither measures alone (thread hand-offs, "
        "MQTT's network thread, the broker, ONNX Runtime's threads sharing the cores with "
        "edged's)".format(max(0.0, cpu["edged"] - model - beside)),
    ]
    return "; ".join(parts) + "."

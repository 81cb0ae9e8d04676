"""The suite's command line: run the benchmarks in order, write results after each one.

Results are written after every benchmark, so an interrupted run still leaves the
figures taken so far (results.json says which ran).
"""

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

from . import budget, report, validity
from .common import REPO, Broker, machine_info

# memory first: RSS is the figure least disturbed by a machine still busy at the start
BENCHMARKS = ("memory", "pipeline", "offload", "cost", "mqtt", "startup", "profile")
#: Run only when named in --only (the default full run, and so the README's table, leaves them out).
OPT_IN = ("config", "tracking", "streams")
#: The results.json section each benchmark writes.
SECTIONS = {"memory": "memory", "pipeline": "pipeline", "offload": "pipeline_offload",
            "cost": "cpu_cost", "mqtt": "mqtt", "startup": "startup", "profile": "profile",
            "config": "hostile_configs", "tracking": "tracking",
            "streams": "streams"}  # fmt: skip
DEFAULT_OUT = os.path.join(REPO, "benchmarks", "results")

#: (full, --quick) settings.
SETTINGS = {
    "repeats": (5, 1),
    "window_s": (5.0, 0.5),
    "warmup_s": (1.0, 0.2),
    "cost_frames": (100, 5),
    "messages": (20000, 200),
    "startup_repeats": (3, 1),
    "memory_s": (600.0, 3.0),
    "memory_interval_s": (2.0, 0.25),
    "profile_s": (20.0, 1.0),
    "tracking_frames": (3000, 100),
}


def _counts(text: str) -> List[int]:
    """``1,2,4`` -> [1, 2, 4]; anything else is argparse's one-line error (exit 2)."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,2,4, got {text!r}")
    return sorted(set(counts))


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="edged's benchmarks: pipeline fps, CPU cost outside inference, "
        "MQTT rate, start-up and memory; writes results.md, results.json and PNG plots.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (the smoke test): checks the code paths, not the speed",
    )
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help="comma-separated subset of: "
        + ", ".join(BENCHMARKS)
        + "; opt-in, never in the default: "
        + ", ".join(OPT_IN),
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="results folder (default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="ONNX Runtime intra-op threads everywhere but offload, which uses 1 "
        "(default: all cores, %(default)s)",
    )
    parser.add_argument("--repeats", type=int, help="repeats per figure (default 5; quick 1)")
    parser.add_argument(
        "--window",
        type=float,
        dest="window_s",
        help="seconds per fps window (default 5; quick 0.5)",
    )
    parser.add_argument(
        "--stream-counts",
        type=_counts,
        help="stream counts of the streams benchmark, comma-separated (default 1,2,4,8; quick 1,2)",
    )
    parser.add_argument("--messages", type=int, help="results per MQTT run (default 20000)")
    parser.add_argument(
        "--memory-minutes", type=float, help="length of the memory run in minutes (default 10)"
    )
    parser.add_argument(
        "--profile-seconds", type=float, dest="profile_s", help="py-spy sampling time (default 20)"
    )
    parser.add_argument(
        "--no-plots", action="store_true", help="skip the PNG plots (no matplotlib)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="edged's log at INFO")
    return parser.parse_args(argv)  # fmt: skip


def settings(args: argparse.Namespace) -> Dict[str, Any]:
    chosen = {k: v[1] if args.quick else v[0] for k, v in SETTINGS.items()}
    for key in ("repeats", "window_s", "messages", "profile_s"):
        if getattr(args, key) is not None:
            chosen[key] = getattr(args, key)
    if args.memory_minutes is not None:
        chosen["memory_s"] = 60.0 * args.memory_minutes
    if args.stream_counts:
        chosen["stream_counts"] = args.stream_counts
    chosen["threads"] = args.threads
    chosen["quick"] = bool(args.quick)
    return chosen


def _progress(text: str) -> None:
    sys.stderr.write("[benchmarks {}] {}\n".format(time.strftime("%H:%M:%S"), text))
    sys.stderr.flush()


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    wanted = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(wanted) - set(BENCHMARKS + OPT_IN))
    if unknown:
        sys.stderr.write("unknown benchmark(s): {}\n".format(", ".join(unknown)))
        return 2
    s = settings(args)
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    results = {
        "command": " ".join(["python -m benchmarks"] + (sys.argv[1:] if argv is None else argv)),
        "machine": machine_info(s["threads"]),
        "settings": s,
        "ran": [],
        "notes": [],
        "git": validity.git_state(REPO),
        "validity": {"benchmarks": {}},
    }  # type: Dict[str, Any]  # fmt: skip
    if s["memory_s"] < 600 and "memory" in wanted:
        results["notes"].append("memory run shortened to {:.1f} min (10 asked)".format(
            s["memory_s"] / 60.0))  # fmt: skip
    started = time.monotonic()
    run_start = validity.snapshot()
    workdir = tempfile.mkdtemp(prefix="edged-bench-")
    try:
        with Broker(os.path.join(workdir, "broker")) as broker:
            for name in BENCHMARKS + OPT_IN:
                if name not in wanted:
                    continue
                _progress("running " + name)
                t0 = time.monotonic()
                before = validity.snapshot()
                section = _run_one(name, results, broker, workdir, s, out_dir)
                _judge(name, results, section, before, validity.snapshot())
                results["ran"].append(name)
                results.setdefault("benchmark_runtime_s", {})[name] = time.monotonic() - t0
                results["suite_runtime_s"] = time.monotonic() - started
                report.write(results, out_dir, with_plots=False)  # progress survives a stop
                _progress(f"{name} done in {time.monotonic() - t0:.0f} s")
        results["suite_runtime_s"] = time.monotonic() - started
        _judge_run(results, run_start, validity.snapshot())
        _add_notes(results)
        report.write(results, out_dir, with_plots=not args.no_plots)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    _progress("wrote {} in {:.0f} s".format(os.path.join(out_dir, "results.md"),
                                            results["suite_runtime_s"]))  # fmt: skip
    sys.stdout.write(report.markdown(results))
    return 0


def _judge(name: str, results: Dict[str, Any], section: Optional[Dict[str, Any]],
           before: Dict[str, Any], after: Dict[str, Any]) -> None:  # fmt: skip
    """A benchmark's validity: its own windows' verdict, else the load over the whole of it."""
    if section is not None and "validity" in section:
        verdict = section["validity"]
    else:
        probe = validity.Probe()
        probe.record(name, before, after)
        verdict = probe.summary()
    results["validity"]["benchmarks"][name] = verdict


def _judge_run(results: Dict[str, Any], before: Dict[str, Any], after: Dict[str, Any]) -> None:
    """The whole run: invalid when its load was high or any benchmark was invalid."""
    load = validity.interval(before, after)
    flags = validity.start_flags(before)
    flags += ["whole run: " + f for f in validity.load_flags(load)]
    flags += [f"{name}: invalid" for name, v in
              sorted(results["validity"]["benchmarks"].items()) if not v["valid"]]  # fmt: skip
    results["validity"].update({"valid": not flags, "flags": flags, "run": load})


def _run_one(name: str, results: Dict[str, Any], broker: Broker, workdir: str,
             s: Dict[str, Any], out_dir: str) -> Optional[Dict[str, Any]]:  # fmt: skip
    """Runs benchmark ``name``, stores its section in ``results`` and returns it."""
    from . import config_parse, mqtt_rate, pipeline, process, tracking_eval

    key = SECTIONS[name]
    if name == "streams":
        from . import streams

        results["streams"] = streams.run_streams(
            broker, workdir, s["threads"], s["repeats"], s["window_s"], s["warmup_s"],
            s.get("stream_counts") or streams.stream_counts(s["quick"]))  # fmt: skip
    elif name == "config":
        results["hostile_configs"] = config_parse.run_hostile_configs(s["quick"])
    elif name == "tracking":
        results["tracking"] = tracking_eval.run_tracking(s["tracking_frames"])
    elif name == "pipeline":
        results["pipeline"] = pipeline.run_pipeline(
            broker, workdir, s["threads"], s["repeats"], s["window_s"], s["warmup_s"]
        )
    elif name == "offload":
        # the model confined to ONE core and edged's other stages on the rest: the stand-in for
        # a Jetson, where the GPU runs the model and the CPU only decodes, pre- and post-processes
        results["pipeline_offload"] = pipeline.run_pipeline(
            broker, workdir, 1, s["repeats"], s["window_s"], s["warmup_s"]
        )
    elif name == "cost":
        results["cpu_cost"] = pipeline.run_cpu_cost(
            broker, workdir, s["threads"], s["repeats"], s["cost_frames"]
        )
    elif name == "mqtt":
        results["mqtt"] = mqtt_rate.run_mqtt(broker, workdir, s["repeats"], s["messages"])
    elif name == "startup":
        results["startup"] = process.run_startup(
            broker, workdir, s["threads"], s["startup_repeats"]
        )
    elif name == "profile":
        results["profile"] = process.run_profile(
            broker, workdir, s["threads"], s["profile_s"], out_dir
        )
    elif name == "memory":
        results["model_share"] = process.model_share(s["threads"])
        results["memory"] = process.run_memory(
            broker, workdir, s["threads"], s["memory_s"], s["memory_interval_s"])  # fmt: skip
    return results.get(key)


def _add_notes(results: Dict[str, Any]) -> None:
    p = results.get("pipeline")
    if p and p.get("cv2_dnn_error"):
        results["notes"].append("cv2.dnn could not run the demo ONNX: " + p["cv2_dnn_error"])
    share = results.get("model_share")
    if share:
        results["notes"].append(
            "model share = RSS a fresh process gains from load_task + 2 inferences after importing "
            "everything edged run imports ({:.1f} -> {:.1f} MB); the ONNX file itself is "
            "{:.2f} MB, the rest is ONNX Runtime's session and activation arena.".format(
                share["before_mb"], share["after_inference_mb"], share["weights_file_mb"]
            )
        )
    gap = budget.gap_note(results)
    if gap:
        results["notes"].append(gap)
    if results["settings"]["quick"]:
        results["notes"].append("--quick: tiny sizes; these figures check code paths, not speed.")

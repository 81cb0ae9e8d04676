"""results.md (the table), results.json (every run and the machine) and the PNG plots."""

import json
import os
from typing import Any, Dict, List, Optional

from . import streams_report
from .validity import reasons

#: RSS slope below which memory counts as flat: 0.1 MB/min is 6 MB an hour.
FLAT_SLOPE_MB_PER_MIN = 0.1

GOALS = {
    "edged_vs_runtime": 0.95,
    "edged_vs_naive": 1.5,
    "outside_inference_ms": 3.0,
    "qos1_rate": 2000.0,
    "warm_start_s": 2.0,
    "rss_excluding_model_mb": 150.0,
    "hostile_config_ms": 100.0,
    "tracking_ms_per_frame": 1.0,
}


def _fmt(value: Optional[float], digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return "{:.{}f}".format(value, digits)


def _met(ok: Optional[bool]) -> str:
    if ok is None:
        return ""
    return "met" if ok else "**missed**"


def _pipeline_rows(group: str, p: Dict[str, Any]) -> List[List[str]]:
    m = p["median"]
    threads = p["threads"]
    rows = [
        [group, "runtime limit: session.run alone (fps)", _fmt(m["runtime"], 1), "", ""],
        [group, "edged run, realtime: false, MQTT QoS 1 (fps)", _fmt(m["edged"], 1),
         "", ""],
        [group, "edged, pipeline.overlap: false (one thread per model) (fps)",
         _fmt(m.get("edged_serial"), 1), "", ""],
        [group, "naive loop: VideoCapture -> ORT -> paho QoS 1 (fps)",
         _fmt(m["naive"], 1), "", ""],
        [group, "cv2.dnn as the runtime (fps)",
         _fmt(m.get("cv2_dnn"), 1) if "cv2_dnn" in m else "failed: " +
         str(p.get("cv2_dnn_error")), "", ""],
        [group, "edged / runtime limit", _fmt(m["edged_vs_runtime"]),
         ">= 0.95", _met(m["edged_vs_runtime"] >= GOALS["edged_vs_runtime"])],
        [group, "edged / naive loop", _fmt(m["edged_vs_naive"]), ">= 1.5",
         _met(m["edged_vs_naive"] >= GOALS["edged_vs_naive"])],
        [group, "ceiling of edged / naive: runtime limit / naive loop",
         _fmt(m.get("runtime_vs_naive")), "", ""],
    ]  # fmt: skip
    if "runtime_nospin" in m:
        rows += [
            [group, "runtime limit, ORT threads not spinning as edged sets them (fps)",
             _fmt(m["runtime_nospin"], 1), "", ""],
            [group, "edged / runtime limit without spinning", _fmt(m["edged_vs_runtime_nospin"]),
             "", ""],
        ]  # fmt: skip
    if "cv2_dnn_vs_runtime" in m:
        rows.append([group, "cv2.dnn / runtime limit", _fmt(m["cv2_dnn_vs_runtime"]),
                     "", ""])  # fmt: skip
    rows.append([group, "ONNX Runtime intra-op threads (all contenders)",
                 str(threads), "", ""])  # fmt: skip
    return rows


#: The benchmark (--only name) behind each group of rows, whose validity the rows carry.
GROUP_BENCHMARK = {
    "1 pipeline": "pipeline",
    "1b pipeline, model on 1 core": "offload",
    "2 CPU cost": "cost",
    "3 MQTT": "mqtt",
    "4 start-up": "startup",
    "5 memory": "memory",
    "6 hostile configs": "config",
    "7 tracking": "tracking",
    streams_report.GROUP: "streams",
}
HEADER = "| benchmark | figure | measured | goal | | run |"


def run_cell(results: Dict[str, Any], benchmark: str) -> str:
    """The table's last column: ``ok``, ``**invalid**: why``, or ``not recorded``."""
    verdict = results.get("validity", {}).get("benchmarks", {}).get(benchmark)
    if verdict is None:
        return "not recorded"
    if verdict["valid"]:
        return "ok"
    return "**invalid**: " + ", ".join(reasons(verdict))


def run_line(results: Dict[str, Any]) -> str:
    """The line above the table: the commit measured and the run's verdict."""
    git = results.get("git") or {}
    commit = git.get("commit")
    if not commit:
        where = "commit not recorded"
    else:
        tree = {True: "clean tree", False: "uncommitted changes"}.get(
            git.get("clean"), "tree state not recorded")  # fmt: skip
        if git.get("note"):
            tree += "; " + git["note"]
        where = f"commit `{commit[:12]}` ({tree})"
    v = results.get("validity") or {}
    if "valid" not in v:
        verdict = "validity not recorded (before runs recorded their load)"
    else:
        load = v["run"]
        # the load average at the start is judged; later it counts the benchmark's own threads
        figures = "load1 at the start {:.1f} on {} cores, steal {:.1f} %, others' CPU {:.0f} %"
        figures = figures.format(
            load["load1_before"], load["cores"], load["steal_pct"], load["others_cpu_pct"]
        )
        verdict = (f"**valid** ({figures})" if v["valid"] else
                   "**INVALID** ({}): {}".format(figures, "; ".join(v["flags"])))  # fmt: skip
    return f"Run: {where}; {verdict}."


def table_rows(results: Dict[str, Any]) -> List[List[str]]:
    """One row per figure: benchmark, figure, measured, goal, met, run validity."""
    rows = _figure_rows(results)
    return [row + [run_cell(results, GROUP_BENCHMARK[row[0]])] for row in rows]


def _figure_rows(results: Dict[str, Any]) -> List[List[str]]:
    rows = []  # type: List[List[str]]
    for key, group in (("pipeline", "1 pipeline"),
                       ("pipeline_offload", "1b pipeline, model on 1 core")):  # fmt: skip
        p = results.get(key)
        if p:
            rows += _pipeline_rows(group, p)
    c = results.get("cpu_cost")
    if c:
        m = c["median_ms"]
        size = "{}x{}".format(*c["frame_size"])
        rows += [
            ["2 CPU cost", f"decode, for reference ({size}) (ms/frame)",
             _fmt(m["decode"]), "", ""],
            ["2 CPU cost", "pre-processing, decode excluded (ms/frame)", _fmt(m["preprocess"]),
             "", ""],
            ["2 CPU cost", "inference, for reference (ms/frame)", _fmt(m["inference"]), "", ""],
            ["2 CPU cost", "post-processing: decode + clustering (ms/frame)",
             _fmt(m["postprocess"]), "", ""],
            ["2 CPU cost", "publishing: payload + outbox append (ms/frame)", _fmt(m["publish"]),
             "", ""],
            ["2 CPU cost", "total outside inference (ms/frame)", _fmt(m["outside_inference"]),
             "<= 3", _met(m["outside_inference"] <= GOALS["outside_inference_ms"])],
        ]  # fmt: skip
    q = results.get("mqtt")
    if q:
        for qos in (0, 1):
            r = q[f"qos{qos}"]
            goal = ">= 2000" if qos == 1 else ""
            ok = r["median_rate_per_s"] >= GOALS["qos1_rate"] if qos == 1 else None
            rows += [
                ["3 MQTT", f"QoS {qos} sustained, outbox on (results/s)",
                 _fmt(r["median_rate_per_s"], 0), goal, _met(ok)],
                ["3 MQTT", "QoS {} lost / duplicates (of {} x {})".format(
                    qos, q["messages"], q["repeats"]),
                 "{:.0f} / {:.0f}".format(r["lost_total"], r["duplicates_total"]), "0 lost",
                 _met(r["lost_total"] == 0)],
            ]  # fmt: skip
    s = results.get("startup")
    if s:
        rows += [
            ["4 start-up", "cold: fresh process, empty bytecode cache -> first result (s)",
             _fmt(s["cold_s"]), "", ""],
            ["4 start-up", "warm: fresh process -> first result (s)", _fmt(s["warm_s"]), "<= 2",
             _met(s["warm_s"] <= GOALS["warm_start_s"])],
            ["4 start-up", "in-process Daemon.start() -> first result (s)",
             _fmt(s["in_process_s"]), "", ""],
        ]  # fmt: skip
    mem = results.get("memory")
    share = results.get("model_share")
    if mem:
        model_mb = share["model_share_mb"] if share else 0.0
        excluding = mem["rss_median_mb"] - model_mb
        rows += [
            ["5 memory", "RSS, median over the run ({:.0f} s) (MB)".format(mem["duration_s"]),
             _fmt(mem["rss_median_mb"], 1), "", ""],
            ["5 memory", "model share: RSS added by loading it + first inferences (MB)",
             _fmt(model_mb, 1), "", ""],
            ["5 memory", "RSS excluding the model (MB)", _fmt(excluding, 1), "<= 150",
             _met(excluding <= GOALS["rss_excluding_model_mb"])],
            ["5 memory", "RSS slope after the first 20 % (MB/min)",
             _fmt(mem["slope_mb_per_min"], 3), f"flat (within +-{FLAT_SLOPE_MB_PER_MIN})",
             _met(abs(mem["slope_mb_per_min"]) <= FLAT_SLOPE_MB_PER_MIN)],
        ]  # fmt: skip
    h = results.get("hostile_configs")
    if h:
        slowest_ms = 1000.0 * h["slowest_s"]
        rows += [
            ["6 hostile configs", "slowest refusal of the fuzz set's {} ({}) (ms)".format(
                len(h["median_s"]), h["slowest"]), _fmt(slowest_ms, 1), "<= 100",
             _met(slowest_ms <= GOALS["hostile_config_ms"])],
            ["6 hostile configs", "all of them, one after another (ms)",
             _fmt(1000.0 * h["total_s"], 1), "", ""],
            ["6 hostile configs", "accepted (must be none)", ", ".join(h["accepted"]) or "none",
             "none", _met(not h["accepted"])],
        ]  # fmt: skip
    t = results.get("tracking")
    if t:
        scene = "{} objects, {} frames".format(t["objects"], t["frames"])
        rows += [
            ["7 tracking", f"MOTA, synthetic truth ({scene})", _fmt(t["mota"], 3), "", ""],
            ["7 tracking", "IDF1", _fmt(t["idf1"], 3), "", ""],
            ["7 tracking", "id switches / misses / false positives (of {} boxes)".format(
                t["truth_boxes"]), "{} / {} / {}".format(
                t["id_switches"], t["misses"], t["false_positives"]), "", ""],
            ["7 tracking", "tracker + counter CPU, mean (ms/frame)",
             _fmt(t["cpu_ms_per_frame_mean"], 3), "< 1",
             _met(t["cpu_ms_per_frame_mean"] < GOALS["tracking_ms_per_frame"])],
            ["7 tracking", "tracker + counter CPU, p99 (ms/frame)",
             _fmt(t["cpu_ms_per_frame_p99"], 3), "", ""],
            ["7 tracking", "the pipeline's whole tracking step, mean (ms/frame)",
             _fmt(t.get("stage_ms_per_frame_mean"), 3), "", ""],
        ]  # fmt: skip
    st = results.get("streams")
    if st:
        rows += streams_report.goal_rows(st)
    return rows


def markdown(results: Dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# edged benchmarks",
        "",
        "Measured {date} on {cpu} ({cores} cores), Python {py}, numpy {np}, onnxruntime {ort}, "
        "OpenCV {cv}, paho-mqtt {paho}, {mosq}; ONNX Runtime intra-op threads: {threads}. "
        "Command: `{cmd}` ({runtime:.0f} s). Each figure is a median over {repeats} repeats "
        "taken in this one invocation (ratios: median of per-repeat ratios).".format(
            date=machine["date_utc"],
            cpu=machine["cpu_model"],
            cores=machine["cpu_cores"],
            py=machine["python"],
            np=machine["numpy"],
            ort=machine["onnxruntime"],
            cv=machine["opencv"],
            paho=machine["paho_mqtt"],
            mosq=machine["mosquitto"],
            threads=machine["ort_threads"],
            cmd=results["command"],
            runtime=results.get("suite_runtime_s", 0.0),
            repeats=results["settings"]["repeats"],
        ),  # fmt: skip
        "",
        run_line(results),
        "",
        HEADER,
        "|---|---|---:|---|---|---|",
    ]
    for row in table_rows(results):
        lines.append("| " + " | ".join(row) + " |")
    if results.get("streams"):
        lines += streams_report.table(results["streams"])
    notes = results.get("notes") or []
    if notes:
        lines += ["", "Notes:", ""] + ["- " + n for n in notes]
    prof = results.get("profile")
    if prof and "top_own" in prof:
        lines += [
            "",
            "Profile of `edged run` at full speed (py-spy, {} samples over {:.0f} s, "
            "CPU-active stacks only; raw: `{}`):".format(
                prof["samples"], prof["duration_s"], prof["raw"]),
            "",
            "| own time | % | inclusive | % |",
            "|---|---:|---|---:|",
        ]  # fmt: skip
        for own, inc in zip(prof["top_own"], prof["top_inclusive"]):
            lines.append(f"| `{own[0]}` | {own[1]} | `{inc[0]}` | {inc[1]} |")
        threads = prof.get("cpu_ms_per_result_by_thread")
        if threads:
            lines += [
                "",
                "CPU per result by thread over the same window ({} results; "
                "`/proc/PID/task/*/stat`, names from `py-spy dump`):".format(prof["results"]),
                "",
                "| thread | CPU ms per result |",
                "|---|---:|",
            ]  # fmt: skip
            lines += [f"| {name} | {ms:.2f} |" for name, ms in threads]
            total = sum(ms for _, ms in threads)
            lines.append(f"| total | {total:.2f} |")
    elif prof:
        lines += ["", "Profile: " + str(prof.get("error"))]
    plots = results.get("plots") or []
    if plots:
        lines += [""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def plots(results: Dict[str, Any], out_dir: str) -> List[str]:
    """PNG plots where a picture reads better than the table; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []  # type: List[str]
    groups = [(results[k], t) for k, t in (("pipeline", "all cores"),
              ("pipeline_offload", "model on 1 core")) if results.get(k)]  # fmt: skip
    if groups:
        fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 3.5), squeeze=False)
        colors = {"runtime": "#888", "runtime_nospin": "#bbb", "edged": "#2a7",
                  "edged_serial": "#8c8", "naive": "#c63", "cv2_dnn": "#57b"}  # fmt: skip
        for ax, (p, title) in zip(axes[0], groups):
            m = p["median"]
            names = [k for k in colors if k in m]
            ax.bar(names, [m[k] for k in names], color=[colors[k] for k in names])
            ax.axhline(0.95 * m["runtime"], color="k", ls="--", lw=0.8,
                       label="0.95 x runtime limit")  # fmt: skip
            ax.set_ylabel("frames/s (median)")
            ax.set_title("Demo detector, {} ({} ORT threads)".format(title, p["threads"]))
            ax.legend(loc="upper right", fontsize=8)
        made.append(_save(fig, out_dir, "pipeline_fps.png"))
    c = results.get("cpu_cost")
    if c:
        m = c["median_ms"]
        stages = ["preprocess", "postprocess", "publish"]
        fig, ax = plt.subplots(figsize=(6, 2.5))
        left = 0.0
        for stage, color in zip(stages, ["#57b", "#2a7", "#c63"]):
            ax.barh(["outside inference"], [m[stage]], left=left, color=color, label=stage)
            left += m[stage]
        ax.axvline(3.0, color="k", ls="--", lw=0.8, label="goal 3 ms")
        ax.set_xlabel("ms per frame (median), 768x576")
        ax.legend(fontsize=8, loc="lower right")
        made.append(_save(fig, out_dir, "cpu_cost.png"))
    mem = results.get("memory")
    if mem and mem["samples"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([t / 60.0 for t, _ in mem["samples"]], [r for _, r in mem["samples"]], lw=1)
        ax.set_xlabel("minutes since the first result")
        ax.set_ylabel("RSS (MB)")
        ax.set_title("edged run, one stream: slope {:.3f} MB/min".format(
            mem["slope_mb_per_min"]))  # fmt: skip
        ax.set_ylim(bottom=0)
        made.append(_save(fig, out_dir, "memory_rss.png"))
    if results.get("streams"):
        made.append(_save(streams_report.plot(results["streams"], plt), out_dir, "streams.png"))
    return made


def _save(fig: Any, out_dir: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, name), dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return name


def write(results: Dict[str, Any], out_dir: str, with_plots: bool = True) -> None:
    os.makedirs(out_dir, exist_ok=True)
    if with_plots:
        results["plots"] = plots(results, out_dir)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(results))

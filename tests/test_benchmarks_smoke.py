"""The benchmark suite's code paths at tiny sizes: files written, table complete.

No timing assertions here (timing goals live in benchmarks/): the figures of ``--quick``
are meaningless; this
only proves that ``python -m benchmarks`` runs end to end against a real Mosquitto,
real ``edged run`` processes and py-spy, and writes what its README promises.
"""

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

if sys.version_info < (3, 10):
    pytest.skip(
        "not applicable on Python {}.{}: the benchmark suite is a developer tool run on "
        "3.11, where its matplotlib and py-spy are pinned (constraints/py311.txt)".format(
            *sys.version_info[:2]
        ),
        allow_module_level=True,
    )

from .conftest import REPO  # noqa: E402

BENCHMARK_ROWS = (
    "1 pipeline",
    "1b pipeline, model on 1 core",
    "2 CPU cost",
    "3 MQTT",
    "4 start-up",
    "5 memory",
)
TABLE_HEADER = "| benchmark | figure | measured | goal | | run |"
PLOTS = ("pipeline_fps.png", "cpu_cost.png", "memory_rss.png")


def run_quick_suite(out_dir, *extra):
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", out_dir] + list(extra),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
    )  # fmt: skip
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output
    return output


def test_quick_suite_writes_table_json_and_plots(tmp_path):
    out_dir = str(tmp_path / "results")
    run_quick_suite(out_dir)

    with open(os.path.join(out_dir, "results.md")) as f:
        table = f.read()
    assert TABLE_HEADER in table
    lines = table.splitlines()
    header = lines.index(TABLE_HEADER)
    assert lines[header - 2].startswith("Run: commit `"), lines[header - 2]
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    for name in BENCHMARK_ROWS:
        assert any(row.startswith("| " + name + " |") for row in rows), name
    for row in rows:
        assert row.count("|") == 7, row  # six columns everywhere, no stray pipe
        assert row.endswith(" | ok |") or " | **invalid**: " in row, row
    assert "Profile of `edged run`" in table

    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    machine = results["machine"]
    for key in ("cpu_model", "cpu_cores", "python", "numpy", "onnxruntime", "opencv", "date_utc"):
        assert machine[key], key
    assert results["ran"] == [
        "memory", "pipeline", "offload", "cost", "mqtt", "startup", "profile"
    ]  # fmt: skip
    assert results["settings"]["quick"] is True
    if os.path.exists(os.path.join(REPO, ".git")):  # a checkout (a worktree's .git is a file)
        assert len(results["git"]["commit"]) == 40 and results["git"]["clean"] in (True, False)
    else:  # an unpacked source tree: said, not guessed
        assert results["git"] == {"commit": None, "clean": None, "changed": []}
    verdicts = results["validity"]["benchmarks"]
    assert sorted(verdicts) == sorted(results["ran"])
    assert verdicts["pipeline"]["windows"], "every pipeline window is bracketed by a probe"
    assert results["pipeline"]["median"]["edged"] > 0
    assert results["pipeline"]["median"]["edged_serial"] > 0
    assert results["pipeline"]["median"]["runtime_nospin"] > 0
    assert results["pipeline_offload"]["threads"] == 1
    assert results["mqtt"]["qos1"]["lost_total"] == 0
    assert results["memory"]["samples"]
    assert results["profile"]["samples"] > 0, results["profile"]

    for name in PLOTS:
        with open(os.path.join(out_dir, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


def test_unknown_benchmark_name_is_refused(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--only", "pipline", "--out", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
    )  # fmt: skip
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "unknown benchmark(s): pipline" in output


def test_bad_stream_counts_are_refused_in_one_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--only", "streams", "--stream-counts", "1,x",
         "--out", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
    )  # fmt: skip
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "expected positive integers like 1,2,4, got '1,x'" in output
    assert "Traceback" not in output


def test_opt_in_hostile_config_benchmark_runs_alone(tmp_path):
    out_dir = str(tmp_path / "results")
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "config", "--no-plots",
         "--out", out_dir],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
    )  # fmt: skip
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    assert results["ran"] == ["config"]
    hostile = results["hostile_configs"]
    assert hostile["accepted"] == [] and len(hostile["median_s"]) > 20
    assert "| 6 hostile configs | accepted (must be none) | none | none | met | " in output


def _burn():
    while True:
        pass


def test_quick_run_beside_a_cpu_burner_is_marked_invalid(tmp_path):
    """A loaded machine must show in the table itself: assert the flag, never a speed."""
    out_dir = str(tmp_path / "results")
    burners = [multiprocessing.Process(target=_burn, name=f"burner-{i}", daemon=True)
               for i in range(os.cpu_count() or 1)]  # fmt: skip
    for burner in burners:
        burner.start()
    try:
        run_quick_suite(out_dir, "--only", "pipeline,cost", "--no-plots")
    finally:
        for burner in burners:
            burner.terminate()
        for burner in burners:
            burner.join(10)
    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    validity = results["validity"]
    assert validity["valid"] is False, validity["flags"]
    for name in ("pipeline", "cost"):
        verdict = validity["benchmarks"][name]
        assert verdict["valid"] is False, name
        # the burners are not the benchmark's processes: their CPU shows as others'
        assert any(f.startswith("others' CPU") for w in verdict["windows"] for f in w["flags"])
    with open(os.path.join(out_dir, "results.md")) as f:
        table = f.read()
    assert "; **INVALID** (" in table
    rows = [line for line in table.splitlines() if line.startswith("| 1 pipeline |")]
    assert rows and all("| **invalid**: " in row for row in rows), rows


def test_opt_in_streams_benchmark_runs_alone(tmp_path):
    out_dir = str(tmp_path / "results")
    run_quick_suite(out_dir, "--only", "streams")
    with open(os.path.join(out_dir, "results.json")) as f:
        results = json.load(f)
    assert results["ran"] == ["streams"]
    streams = results["streams"]
    assert streams["counts"] == [1, 2]
    assert sorted(streams["by_count"]["1"]) == ["edged_b1", "naive", "runtime_b1"]
    two = streams["by_count"]["2"]
    assert sorted(two) == ["edged_b1", "edged_bN", "naive", "runtime_b1", "runtime_bN"]
    for name in ("edged_b1", "edged_bN", "naive"):
        figures = two[name]
        assert figures["fps"] > 0 and figures["fps_per_stream_min"] > 0, name
        assert len(figures["runs"][0]["fps_per_stream"]) == 2, name  # every stream counted
        assert figures["latency_p99_ms"] >= figures["latency_p50_ms"] > 0, name
        assert figures["cpu_ms_per_frame"] > 0 and figures["rss_mb_per_added_stream"] > -50
    # every window bracketed by the load probe: 3 contenders at 1 stream, 5 at 2
    assert len(streams["validity"]["windows"]) == 8
    with open(os.path.join(out_dir, "results.md")) as f:
        table = f.read()
    assert "| 8 streams | 2 streams, max_batch 2: edged total / 2 naive processes |" in table
    assert "| 2 | edged, max_batch 2 |" in table and "| 2 | 2 naive processes |" in table
    with open(os.path.join(out_dir, "streams.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_streams_goals_are_read_at_four_streams_from_the_figures():
    from benchmarks import streams, streams_report

    def contender(fps, rss):
        return {"fps": fps, "rss_mb_total": rss, "rss_mb_per_process": rss}

    by_count = {
        "1": {"edged_b1": contender(90.0, 200.0), "naive": contender(70.0, 180.0)},
        "4": {"edged_b1": contender(120.0, 230.0), "edged_bN": contender(130.0, 290.0),
              "naive": contender(100.0, 720.0)},
    }  # fmt: skip
    streams._rss_per_added_stream(by_count)
    assert by_count["4"]["edged_b1"]["rss_mb_per_added_stream"] == 10.0
    assert by_count["4"]["edged_bN"]["rss_mb_per_added_stream"] == 30.0
    assert by_count["4"]["naive"]["rss_mb_per_added_stream"] == 720.0  # a process per stream
    rows = streams_report.goal_rows({"by_count": by_count})
    assert rows == [
        ["8 streams", "4 streams, max_batch 1: edged total / 4 naive processes", "1.20", ">= 1.3",
         "**missed**"],
        ["8 streams", "4 streams, max_batch 1: edged RSS per added stream (MB)", "10.0", "<= 15",
         "met"],
        ["8 streams", "4 streams, max_batch 4: edged total / 4 naive processes", "1.30", ">= 1.3",
         "met"],
        ["8 streams", "4 streams, max_batch 4: edged RSS per added stream (MB)", "30.0", "<= 15",
         "**missed**"],
    ]  # fmt: skip

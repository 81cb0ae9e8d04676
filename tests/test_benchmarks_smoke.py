"""The benchmark suite's code paths at tiny sizes (issue 7): files written, table complete.

No timing assertions here (common.md): the figures of ``--quick`` are meaningless; this
only proves that ``python -m benchmarks`` runs end to end against a real Mosquitto,
real ``edged run`` processes and py-spy, and writes what its README promises.
"""

import json
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
PLOTS = ("pipeline_fps.png", "cpu_cost.png", "memory_rss.png")


def run_quick_suite(out_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", out_dir],
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
    assert "| benchmark | figure | measured | goal | |" in table
    lines = table.splitlines()
    header = lines.index("| benchmark | figure | measured | goal | |")
    rows = []
    for line in lines[header + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line)
    for name in BENCHMARK_ROWS:
        assert any(row.startswith("| " + name + " |") for row in rows), name
    for row in rows:
        assert row.count("|") == 6, row  # five columns everywhere, no stray pipe
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
    assert results["pipeline"]["median"]["edged"] > 0
    assert results["pipeline"]["median"]["edged_serial"] > 0
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
    assert "| 6 hostile configs | accepted (must be none) | none | none | met |" in output

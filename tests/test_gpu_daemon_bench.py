"""benchmarks/gpu_daemon.py's parts that need no GPU: arguments, reading /proc stat lines,
per-frame figures and the report from recorded snapshots, and one short real measurement of
``edged run`` with ``preprocess: cpu`` (the thread-name child, /proc and the metrics scrape
end to end). No timing assertion: the figures are only checked to be consistent.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import gpu_daemon
from benchmarks.common import BenchError

from .conftest import REPO


def test_arguments_default_to_both_clips_and_both_modes():
    args = gpu_daemon.parse_args(["--out", "/x", "--seconds", "3"])
    assert (args.out, args.seconds, args.clips, args.modes) == ("/x", 3.0, ["demo", "1080p"],
                                                                 ["cpu", "cuda"])  # fmt: skip
    args = gpu_daemon.parse_args(["--clips", "1080p", "--modes", "cuda,cpu"])
    assert (args.clips, args.modes) == (["1080p"], ["cuda", "cpu"])


BAD_ARGUMENTS = [["--clips", "4k"], ["--modes", "gpu"], ["--modes", ""], ["--seconds", "0"],
                 ["--warmup", "-1"], ["--windows", "0"]]  # fmt: skip


@pytest.mark.parametrize("bad", BAD_ARGUMENTS)
def test_bad_arguments_exit_2_with_one_line(bad, capsys):
    with pytest.raises(SystemExit) as exc:
        gpu_daemon.parse_args(bad)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_child_without_its_arguments_is_a_usage_error(capsys):
    assert gpu_daemon.main(["child", "names.json"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_stat_ticks_counts_fields_after_the_command_name():
    # comm may hold spaces and ')' (proc(5)); utime 1234 and stime 56 are fields 14 and 15
    line = "4242 (we) (ird name) S 1 2 3 4 5 6 7 8 9 10 1234 56 0 0 20 0 7 0 100 200 300\n"
    assert gpu_daemon.stat_ticks(line) == 1290
    with open(f"/proc/{os.getpid()}/stat") as f:
        assert gpu_daemon.stat_ticks(f.read()) >= 0


def test_the_inferred_frames_of_the_stream_are_read_from_metrics():
    text = (
        "# TYPE edged_frames_total counter\n"
        'edged_frames_total{outcome="dropped_before_inference",stream="clip"} 7.0\n'
        'edged_frames_total{outcome="inferred",stream="other"} 99.0\n'
        'edged_frames_total{outcome="inferred",stream="clip"} 412.0\n'
    )
    assert float(gpu_daemon.INFERRED.search(text).group(1)) == 412.0


def _snap(t, frames, process, infer, prep):
    return {"time": t, "frames": frames, "process": process,
            "threads": {"infer-people": infer, "prep-people": prep, "native": 1}}  # fmt: skip


def test_figures_split_the_process_into_inference_and_the_rest():
    a, b = _snap(10.0, 100, 500, 300, 100), _snap(20.0, 300, 900, 500, 250)
    r = gpu_daemon.figures(a, b, 0.01)
    assert r["frames"] == 200 and r["fps"] == 20.0
    assert r["process_ms"] == pytest.approx(20.0)  # 400 ticks of 10 ms over 200 frames
    assert r["inference_ms"] == pytest.approx(10.0)
    assert r["outside_inference_ms"] == pytest.approx(10.0)
    assert list(r["threads_ms"]) == ["infer-people", "prep-people", "native"]


def test_figures_refuse_an_empty_window_and_a_missing_inference_thread():
    a = _snap(0.0, 10, 0, 0, 0)
    with pytest.raises(BenchError, match="no frame"):
        gpu_daemon.figures(a, _snap(1.0, 10, 5, 3, 1), 0.01)
    b = _snap(1.0, 20, 5, 3, 1)
    b["threads"].pop("infer-people")
    with pytest.raises(BenchError, match="infer-people"):
        gpu_daemon.figures(a, b, 0.01)


def _recorded_report():
    def run(mode, process, inference):
        return {"mode": mode, "frames": 400.0, "fps": 40.0, "seconds": 10.0,
                "process_ms": process, "inference_ms": inference,
                "outside_inference_ms": process - inference, "exit_code": 0,
                "cuda_chosen": mode == "cuda", "cleanup_warning": False,
                "windows_outside_inference_ms": [process - inference - 0.1,
                                                 process - inference + 0.1],
                "threads_ms": {"infer-people": inference,
                               "prep-people": process - inference}}  # fmt: skip

    runs = {"demo": {"cpu": run("cpu", 16.0, 12.0), "cuda": run("cuda", 13.0, 12.0)},
            "1080p": {"cpu": run("cpu", 20.0, 12.0), "cuda": run("cuda", 17.0, 12.0)}}  # fmt: skip
    return {
        "machine": {
            "date_utc": "2026-12-06T00:00:00Z",
            "gpu": "NVIDIA H100",
            "cpu_model": "x",
            "cpu_cores": 16,
            "python": "3.12.3",
            "commit": "abc1234",
        },  # fmt: skip
        "settings": {"seconds": 10.0, "warmup": 4.0, "ort_threads": 1, "goal_ratio": 0.5},
        "clips": {"demo": "768x576 (demo clip)", "1080p": "1920x1080 (demo clip scaled)"},
        "runs": runs,
        "ratios": gpu_daemon.ratios(runs),
    }


def test_report_from_recorded_figures(tmp_path):
    report = _recorded_report()
    assert report["ratios"]["demo"]["outside_inference_ms"] == pytest.approx(0.25)
    assert report["ratios"]["1080p"]["outside_inference_ms"] == pytest.approx(5 / 8)
    md, js = gpu_daemon.write_report(report, str(tmp_path / "out"))
    assert sorted(os.listdir(str(tmp_path / "out"))) == ["gpu_daemon.json", "gpu_daemon.md"]
    text = open(md).read()
    row = "| 768x576 (demo clip) | cuda | 400 | 40.0 | 13.00 | 12.00 | 1.00 | 0.90-1.10 | 0 |"
    assert row in text
    assert "| 768x576 (demo clip) | 0.81 | 0.25 | <= 0.5 (met) |" in text
    assert "| 1920x1080 (demo clip scaled) | 0.85 | 0.62 | <= 0.5 (NOT met) |" in text
    assert "NVIDIA H100" in text and "`abc1234`" in text
    assert json.load(open(js)) == json.loads(json.dumps(report))


def test_a_failed_run_is_a_row_of_the_report_and_has_no_ratio(tmp_path):
    report = _recorded_report()
    report["runs"]["1080p"]["cuda"] = {"mode": "cuda", "error": "edged run exited with 2\nlog"}
    report["ratios"] = gpu_daemon.ratios(report["runs"])
    assert list(report["ratios"]) == ["demo"]
    md, _ = gpu_daemon.write_report(report, str(tmp_path))
    text = open(md).read()
    assert "| 1920x1080 (demo clip scaled) | cuda | FAILED: edged run exited with 2 |" in text


@pytest.mark.skipif(sys.version_info < (3, 8), reason="threading native_id needs Python 3.8")
@pytest.mark.timeout(180)
def test_one_short_cpu_measurement_of_edged_run(tmp_path):
    out = str(tmp_path / "out")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_daemon", "--out", out, "--clips", "demo",
         "--modes", "cpu", "--seconds", "2", "--windows", "2", "--warmup", "0.5"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
        timeout=170,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout
    report = json.load(open(os.path.join(out, "gpu_daemon.json")))
    r = report["runs"]["demo"]["cpu"]
    assert r["frames"] > 0 and r["exit_code"] == 0 and not r["cleanup_warning"]
    assert r["process_ms"] >= r["inference_ms"] > 0
    assert len(r["windows_outside_inference_ms"]) == 2
    assert {"infer-people", "prep-people", "post-people", "capture-clip"} <= set(r["threads_ms"])
    assert report["ratios"] == {}  # one mode: nothing to compare

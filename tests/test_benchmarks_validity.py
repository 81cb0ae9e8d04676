"""Benchmark runs flag themselves (benchmarks/validity.py), tested as data: figures above
their physical ceiling and windows on a loaded machine make the table say "invalid".

The end-to-end case (a real ``--quick`` run beside a CPU burner) is in
tests/test_benchmarks_smoke.py.
"""

from benchmarks import process, report, validity

QUIET = {"cores": 2, "load1_before": 0.2, "load1_after": 0.9, "own_cores": 1.9, "seconds": 5.0,
         "foreign_runnable": 0.0, "steal_pct": 0.1, "others_cpu_pct": 1.5}  # fmt: skip


def snap(mono, load1, total, idle, steal, own, running=3, own_running=3):
    return {"wall": mono, "mono": mono, "loadavg": [load1, 0.0, 0.0], "cpu_total": total,
            "cpu_idle": idle, "cpu_steal": steal, "own": own, "running": running,
            "own_running": own_running}  # fmt: skip


def pipeline_figures(edged, runtime=100.0, naive=70.0):
    return {"runtime": runtime, "edged": edged, "edged_serial": edged * 0.9, "naive": naive}


def test_edged_above_the_runtime_limit_is_flagged():
    flags = validity.ceiling_violations(pipeline_figures(edged=134.0, runtime=100.0))
    assert flags == ["edged / runtime = 1.34 > 1 (impossible)",
                     "edged_serial / runtime = 1.21 > 1 (impossible)"]  # fmt: skip
    verdict = validity.verdict([{"window": "edged", "load": QUIET, "flags": []}],
                               [pipeline_figures(93.0), pipeline_figures(134.0)])  # fmt: skip
    assert verdict["valid"] is False
    assert verdict["flags"][0].startswith("repeat 2: edged / runtime = 1.34")


def test_figures_below_their_ceilings_on_a_quiet_machine_are_valid():
    assert validity.ceiling_violations(pipeline_figures(edged=93.0)) == []
    # within the tolerance of a window's whole frames
    assert validity.ceiling_violations(pipeline_figures(edged=101.0)) == []
    verdict = validity.verdict([{"window": "edged", "load": QUIET, "flags": []}],
                               [pipeline_figures(93.0)])  # fmt: skip
    assert verdict == {"valid": True, "flags": [], "windows": verdict["windows"]}


def test_steal_and_others_cpu_each_flag_a_window():
    assert validity.load_flags(QUIET) == []
    assert validity.load_flags(dict(QUIET, steal_pct=2.5)) == ["steal 2.5 % > 2 %"]
    assert validity.load_flags(dict(QUIET, others_cpu_pct=45.0)) == ["others' CPU 45 % > 10 %"]


def test_interval_separates_own_stolen_and_others_ticks():
    # 5 s on 2 cores = 1000 ticks at 100 Hz: 100 idle, 20 stolen, 600 ours, 280 someone else's
    # the run queue: 5 runnable of which 3 ours, then 4 of which 3 ours: 1.5 not ours
    before = snap(10.0, 0.5, 10000, 4000, 50, 3000, running=5, own_running=3)
    after = snap(15.0, 2.5, 11000, 4100, 70, 3600, running=4, own_running=3)
    load = validity.interval(before, after, cores=2)
    assert round(load["steal_pct"], 6) == 2.0
    assert round(load["others_cpu_pct"], 6) == 28.0
    assert validity._CLK_TCK == 100  # USER_HZ on every Linux (proc(5)): ticks are 10 ms
    assert round(load["own_cores"], 6) == 1.2
    assert load["foreign_runnable"] == 1.5
    assert (load["load1_before"], load["load1_after"]) == (0.5, 2.5)  # recorded, not judged
    assert validity.load_flags(load) == ["others' CPU 28 % > 10 %"]
    # our own threads crowding the run queue are not "load"
    crowded = validity.interval(snap(0.0, 9.0, 0, 0, 0, 0, 20, 19), snap(5.0, 16.0, 1000, 10, 0,
                                1000, 17, 17), cores=2)  # fmt: skip
    assert validity.load_flags(crowded) == []


def test_a_machine_busy_when_the_run_starts_invalidates_the_run():
    assert validity.start_flags(snap(0.0, 0.4, 0, 0, 0, 0), cores=2) == []
    assert validity.start_flags(snap(0.0, 1.7, 0, 0, 0, 0), cores=2) == [
        "load1 1.7 at the start > 1.0"
    ]


def test_interleaved_rotates_the_first_contender():
    order = []
    contenders = [(n, (lambda n=n: order.append(n) or len(order))) for n in "ABC"]
    runs = validity.interleaved(contenders, 3)
    assert "".join(order) == "ABCBCACAB"
    assert runs[1] == {"B": 4, "C": 5, "A": 6}


def fake_results(edged, windows_flags):
    windows = [{"window": "runtime", "load": QUIET, "flags": list(windows_flags)}]
    figures = dict(pipeline_figures(edged), cv2_dnn=50.0, edged_vs_runtime=edged / 100.0,
                   edged_vs_naive=edged / 70.0, runtime_vs_naive=100.0 / 70.0)  # fmt: skip
    verdict = validity.verdict(windows, [figures])
    load = dict(QUIET)
    return {
        "git": {"commit": "0123456789abcdef" * 2 + "01234567", "clean": True, "changed": []},
        "validity": {"valid": verdict["valid"], "flags": verdict["flags"], "run": load,
                     "benchmarks": {"pipeline": verdict}},
        "pipeline": {"threads": 2, "median": figures},
    }  # fmt: skip


def test_table_flags_every_row_of_an_impossible_run():
    rows = report.table_rows(fake_results(edged=134.0, windows_flags=[]))
    assert rows and all(r[0] == "1 pipeline" for r in rows)
    assert all(r[-1] == "**invalid**: above ceiling" for r in rows), rows
    line = report.run_line(fake_results(edged=134.0, windows_flags=[]))
    assert "commit `0123456789ab` (clean tree); **INVALID**" in line


def test_table_names_the_load_that_made_a_run_invalid():
    flagged = fake_results(edged=93.0, windows_flags=["others' CPU 45 % > 10 %"])
    rows = report.table_rows(flagged)
    assert all(r[-1] == "**invalid**: others' CPU" for r in rows), rows


def test_table_says_ok_for_a_valid_run_and_not_recorded_for_an_old_one():
    good = fake_results(edged=93.0, windows_flags=[])
    assert all(r[-1] == "ok" for r in report.table_rows(good))
    assert "**valid** (load1 at the start 0.2 on 2 cores" in report.run_line(good)
    old = {"pipeline": good["pipeline"]}
    assert all(r[-1] == "not recorded" for r in report.table_rows(old))
    assert report.run_line(old) == (
        "Run: commit not recorded; validity not recorded (before runs recorded their load)."
    )


def test_interrupt_time_is_nobody_elses_cpu():
    before = dict(snap(10.0, 0.5, 10000, 4000, 50, 3000), cpu_irq=100)
    after = dict(snap(15.0, 2.5, 11000, 4100, 70, 3600), cpu_irq=130)
    assert round(validity.interval(before, after, cores=2)["others_cpu_pct"], 6) == 25.0


# The full run at commit e4ff375 (benchmarks/results/results.json of that run), on a machine
# where other processes used at most 0.8 % of the CPU in every window: its table said
# "invalid: load, above ceiling" for every pipeline row and "invalid: load" for memory.
# Its pipeline repeats: (runtime, runtime_nospin, edged, edged_serial, naive) in fps.
E4FF375_PIPELINE = [
    (166.5, 155.2, 90.3, 90.8, 77.5),
    (109.9, 98.1, 100.0, 93.4, 80.8),
    (140.3, 87.6, 102.4, 105.8, 83.1),  # the no-spin window slow: edged / it = 1.17
    (166.1, 154.8, 99.6, 97.4, 96.6),
    (133.8, 153.5, 100.8, 101.9, 82.2),
]
# Its windows flagged "load": (window, foreign runnable, others' CPU %, steal %, own cores,
# load1 before, load1 after, seconds); every other window read others' CPU <= 0.8 %.
E4FF375_LOAD_FLAGGED = [
    ("naive", 1.5, 0.3, 0.10, 1.970, 3.52, 3.47, 5.0),
    ("edged_serial", 4.0, 0.0, 0.00, 1.786, 3.22, 3.20, 5.0),
    ("edged", 2.0, 0.0, 0.00, 1.796, 2.48, 2.85, 5.0),
    ("edged", 1.5, 0.0, 0.00, 1.807, 2.71, 2.57, 5.0),
    ("memory", 1.5, 0.0, 0.02, 1.820, 0.52, 3.95, 602.3),
]


def e4ff375_window(row):
    name, runnable, others, steal, own, load1_before, load1_after, seconds = row
    load = {"cores": 2, "foreign_runnable": runnable, "others_cpu_pct": others,
            "steal_pct": steal, "own_cores": own, "load1_before": load1_before,
            "load1_after": load1_after, "seconds": seconds}  # fmt: skip
    return {"window": name, "load": load, "flags": validity.load_flags(load)}


def test_the_quiet_run_at_e4ff375_is_judged_valid():
    """Our own ~30 threads filling the run queue were read as 1.5-4 "tasks not ours" while
    others used 0.0-0.3 % of the CPU; a slow no-spin window was taken as edged's ceiling
    although busy-waiting ONNX Runtime ran 140 fps in the same repeat."""
    windows = [e4ff375_window(row) for row in E4FF375_LOAD_FLAGGED]
    assert all(w["flags"] == [] for w in windows), windows
    names = ("runtime", "runtime_nospin", "edged", "edged_serial", "naive")
    figures = [dict(zip(names, fps)) for fps in E4FF375_PIPELINE]
    pipeline = validity.verdict([w for w in windows if w["window"] != "memory"], figures)
    assert pipeline["valid"] is True, pipeline["flags"]
    assert validity.verdict(windows[-1:], [])["valid"] is True


def test_a_ratio_is_bounded_by_the_faster_runtime_limit_of_its_repeat():
    figures = {"runtime": 140.3, "runtime_nospin": 87.6, "edged": 150.0}
    assert validity.ceiling_violations(figures) == ["edged / runtime = 1.07 > 1 (impossible)"]
    # both references collapse on a busy machine, edged's threads do not: still flagged
    busy = {"runtime": 70.0, "runtime_nospin": 75.0, "edged": 94.0, "naive": 60.0}
    assert validity.ceiling_violations(busy) == ["edged / runtime_nospin = 1.25 > 1 (impossible)"]
    # one reference of its own, as the many-streams benchmark passes them
    assert validity.ceiling_violations({"a": 3.0, "b": 2.0}, [("a", "b")]) == [
        "a / b = 1.50 > 1 (impossible)"
    ]


def test_memory_slope_ignores_a_one_time_step_and_sees_a_steady_climb():
    # e4ff375's memory run after its first 20 %: 198.8 MB, one 1.5 MB step between 130 s and
    # 200 s, then 200.34 -> 200.39 MB over 400 s (least squares read 0.103 MB/min)
    step = [(t, 198.79) for t in range(120, 130, 2)]
    step += [(t, 198.79 + 1.55 * (t - 130) / 70.0) for t in range(130, 200, 2)]
    step += [(t, 200.34 + 0.05 * (t - 200) / 400.0) for t in range(200, 601, 2)]
    assert abs(process._slope_mb_per_min(step)) < 0.02
    # a leak of 0.2 MB/min in 128 kB chunks (malloc's mmap threshold) is a staircase
    leak = [(t, 200.0 + 0.125 * int(t * 0.2 / 60.0 / 0.125)) for t in range(120, 601, 2)]
    assert 0.15 < process._slope_mb_per_min(leak) < 0.25
    assert process._slope_mb_per_min([(0.0, 1.0)]) == 0.0

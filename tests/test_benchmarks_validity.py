"""Benchmark runs flag themselves (benchmarks/validity.py), tested as data: figures above
their physical ceiling and windows on a loaded machine make the table say "invalid".

The end-to-end case (a real ``--quick`` run beside a CPU burner) is in
tests/test_benchmarks_smoke.py.
"""

from benchmarks import report, validity

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


def test_load_steal_and_others_cpu_each_flag_a_window():
    assert validity.load_flags(QUIET) == []
    busy = dict(QUIET, foreign_runnable=1.5)
    assert validity.load_flags(busy) == ["load: 1.5 runnable tasks not ours > 1.0"]
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
    assert validity.load_flags(load) == [
        "load: 1.5 runnable tasks not ours > 1.0", "others' CPU 28 % > 10 %"
    ]  # fmt: skip
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
    assert "**valid** (load1 0.2 -> 0.9 on 2 cores" in report.run_line(good)
    old = {"pipeline": good["pipeline"]}
    assert all(r[-1] == "not recorded" for r in report.table_rows(old))
    assert report.run_line(old) == (
        "Run: commit not recorded; validity not recorded (before runs recorded their load)."
    )


def test_interrupt_time_is_nobody_elses_cpu():
    before = dict(snap(10.0, 0.5, 10000, 4000, 50, 3000), cpu_irq=100)
    after = dict(snap(15.0, 2.5, 11000, 4100, 70, 3600), cpu_irq=130)
    assert round(validity.interval(before, after, cores=2)["others_cpu_pct"], 6) == 25.0

"""CPU per frame: the note on how far edged can get to the runtime limit (benchmarks/budget.py)
and the profile's CPU by thread (benchmarks/process.py), from recorded figures, as data."""

from benchmarks import budget

NAMES = ("runtime", "runtime_nospin", "edged", "edged_serial", "naive")
# e4ff375's pipeline repeats (fps) and each window's cores used, in the same order
FPS = [
    (166.5, 155.2, 90.3, 90.8, 77.5),
    (109.9, 98.1, 100.0, 93.4, 80.8),
    (140.3, 87.6, 102.4, 105.8, 83.1),
]
CORES = [
    (1.99, 1.88, 1.82, 1.79, 1.97),
    (1.99, 1.81, 1.82, 1.79, 1.96),
    (1.99, 1.73, 1.81, 1.81, 1.95),
]
COST = {"decode": 0.72, "preprocess": 1.23, "postprocess": 0.69, "publish": 0.40,
        "outside_inference": 2.32, "inference": 6.42}  # fmt: skip


def recorded():
    runs = [dict(zip(NAMES, fps)) for fps in FPS]
    windows = [{"window": n, "load": {"own_cores": c}, "flags": []}
               for cores in CORES for n, c in zip(NAMES, cores)]  # fmt: skip
    return {
        "pipeline": {"threads": 2, "runs": runs},
        "validity": {"benchmarks": {"pipeline": {"valid": True, "flags": [], "windows": windows}}},
        "cpu_cost": {"median_ms": COST},
    }


def test_cpu_per_frame_pairs_each_window_with_its_repeat():
    r = recorded()
    cpu = budget.cpu_ms_per_frame(r["pipeline"], r["validity"]["benchmarks"]["pipeline"])
    # runtime_nospin: 1.88/155.2, 1.81/98.1, 1.73/87.6 -> 12.1, 18.5, 19.7 ms
    assert round(cpu["runtime_nospin"], 1) == 18.5
    assert round(cpu["edged"], 1) == 18.2  # 20.2, 18.2, 17.7


def test_gap_note_gives_the_bound_and_the_budget():
    note = budget.gap_note(recorded(), goal=0.9)
    assert "ONNX Runtime alone 18.5 ms" in note and "edged 18.2 ms" in note
    assert "decode 0.72 + pre 1.23 + post 0.69 + publish 0.40) 3.04 ms" in note
    # 18.45 / (18.45 + 3.04) and 18.45 x (1 / 0.9 - 1)
    assert "= 0.86 of ONNX Runtime alone" in note and "under 2.05 ms a frame" in note


def test_no_note_without_the_figures():
    assert budget.gap_note({}) is None
    partial = recorded()
    del partial["cpu_cost"]
    assert budget.gap_note(partial) is None


def test_profile_cpu_by_thread_names_python_threads_and_groups_native_ones():
    from benchmarks import process

    dump = (
        "Process 15299: /usr/bin/python3 -m edged run -c edged.yaml\n"
        'Thread 15299 (idle): "MainThread"\n'
        "    <module> (edged/__main__.py:30)\n"
        'Thread 15304 (active): "infer-peoplenet"\n'
        "    Session.run (onnxruntime_inference_collection.py:266)\n"
    )
    names = process.dump_thread_names(dump)
    assert names == {15299: "MainThread", 15304: "infer-peoplenet"}
    before = {15299: ("python3", 10), 15304: ("python3", 100), 15320: ("python3", 50)}
    after = {15299: ("python3", 10), 15304: ("python3", 500), 15320: ("python3", 250),
             15321: ("python3", 20), 15400: ("av:mpeg4:df0", 8)}  # fmt: skip
    # 400 frames: 10 ms ticks -> infer 400 ticks = 10 ms a frame
    assert process.cpu_by_thread(before, after, names, 400) == [
        ["infer-peoplenet", 10.0], ["native: python3", 5.5], ["native: av:mpeg4:df0", 0.2]
    ]  # fmt: skip

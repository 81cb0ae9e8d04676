"""Tracking inside the real pipeline: the in-process daemon runs the demo person detector
(models/peoplenet-demo) on the demo clip (tests/data/vtest/holdout.mp4, 159 frames, every
frame inferred: realtime false) with a tracking model, a zone and a line; the results carry
track ids and counts, their MQTT payloads validate against the result schema, and the totals
persist in the counts file across a daemon restart."""

import json
import os
import subprocess
import threading
import time

import jsonschema
import pytest

from edged.daemon import Daemon
from edged.mqtt.payloads import load_schema, result_payload

from .conftest import REPO
from .helpers import CallbackSink
from .test_telemetry import promtool  # noqa: F401 - a fixture

MODEL_DIR = os.path.join(REPO, "models", "peoplenet-demo")
CLIP = os.path.join(REPO, "tests", "data", "vtest", "holdout.mp4")
FRAMES = 159

pytestmark = pytest.mark.timeout(300)


def write_config(path, tracking="enabled: true, min_hits: 2", counting=True, loop=False):
    stream = {
        "source": CLIP,
        "model": "people",
        "realtime": False,
        "loop": loop,
        "zones": {"lower_half": {"points": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]],
                                 "units": "fraction"}},
        "lines": {"middle": {"start": [0, 0.5], "end": [1, 0.5], "units": "fraction"},
                  "grass": {"start": [0, 0.6], "end": [0.35, 0.6], "units": "fraction"}},
    }  # fmt: skip
    if not counting:
        del stream["zones"], stream["lines"]
    text = "\n".join([
        "models:",
        "  people:",
        "    path: " + os.path.join(MODEL_DIR, "peoplenet_demo.onnx"),
        "    labels: " + os.path.join(MODEL_DIR, "labels.txt"),
        "    tracking: {" + tracking + "}",
        "streams:",
        "  cam: " + json.dumps(stream),
        "metrics: {port: 0}",
        "pipeline: {summary_interval_s: 60, drain_timeout_s: 5}",
    ])  # fmt: skip
    with open(path, "w") as f:
        f.write(text + "\n")


def run_clip(config_path, scrapes=None):
    """Every result of one pass over the clip, in order (and the metrics at its end)."""
    results = []
    done = threading.Event()

    def collect(result):
        results.append(result)
        if result.seq == FRAMES - 1:
            done.set()

    daemon = Daemon(config_path, sinks=[CallbackSink(collect)])
    try:
        daemon.start()
        assert done.wait(240), "the clip's last frame did not come through"
        time.sleep(0.2)
        if scrapes is not None:
            scrapes.append(daemon.metrics.exposition().decode())
    finally:
        daemon.shutdown()
    return results


def totals(result):
    line = result.tracking.counts["lines"]["middle"]
    return line["in"], line["out"]


def test_tracks_counts_schema_and_persistence(tmp_path, monkeypatch, promtool):  # noqa: F811
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    config = str(tmp_path / "edged.yaml")
    write_config(config)
    scrapes = []
    first = run_clip(config, scrapes)
    assert [r.seq for r in first] == list(range(FRAMES))
    tracked = [d for r in first for d in r.items if d.track_id is not None]
    assert len(tracked) > FRAMES  # people are in every frame of the clip
    # one id per object: no frame has one id twice
    for r in first:
        ids = [d.track_id for d in r.items if d.track_id is not None]
        assert len(ids) == len(set(ids))
    schema = load_schema("result")
    model = {"name": "people", "version": "", "sha256": "", "precision": "fp32",
             "backend": "onnxruntime", "task": "detection"}  # fmt: skip
    message = json.loads(result_payload(first[-1], "dev", "0" * 32, 0, model, "frame", 65536))
    jsonschema.validate(message, schema)
    assert any("track_id" in d for r in first[-5:] for d in
               json.loads(result_payload(r, "dev", "0" * 32, 0, model, "frame", 65536))[
                   "detections"])  # fmt: skip
    crossings = sum(
        1 for r in first for e in r.tracking.events if e.get("line") == "middle"
    )  # fmt: skip
    in_1, out_1 = totals(first[-1])
    assert in_1 + out_1 == crossings > 0, "someone crosses the middle of the clip"

    # the metrics: every configured zone/line x model label from the start, totals as counted
    metrics = scrapes[0]
    line = 'edged_line_crossings_total{{direction="{}",label="person",line="middle",stream="cam"}}'
    assert line.format("in") + " " + str(float(in_1)) in metrics
    assert line.format("out") + " " + str(float(out_1)) in metrics
    assert (
        'edged_line_crossings_total{direction="in",label="face",line="middle",stream="cam"} 0.0'
        in metrics
    )
    assert 'edged_zone_occupancy{label="bag",stream="cam",zone="lower_half"}' in metrics
    check = subprocess.run(
        [promtool, "check", "metrics"],
        input=metrics,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
        timeout=60,
    )
    assert check.returncode == 0 and check.stdout.strip() == "", check.stdout

    # The hand count (made once, by eye, on contact sheets of every 6th frame of the clip with
    # the line drawn): on the "grass" line (y = 0.6 of the height, x from 0 to 0.35 of the
    # width) exactly one person crosses -- the woman in the black coat walking up the lawn,
    # her feet passing the line between frames 78 and 84 -- upwards, i.e. to the left-hand
    # side of the line drawn left to right: "out". The man in the red jacket at the end of
    # the clip reaches y = 0.6 only right of x = 0.43, beyond the line's end.
    grass = first[-1].tracking.counts["lines"]["grass"]
    assert (grass["in"], grass["out"]) == (0, 1)

    saved = json.load(open(str(tmp_path / "state" / "counts-edged.json")))
    assert saved["streams"]["cam"]["lines"]["middle"]

    # a restart: the totals go on from the saved ones (the same clip crosses as often again)
    second = run_clip(config)
    assert totals(second[0]) == (in_1, out_1)
    assert totals(second[-1]) == (2 * in_1, 2 * out_1)


def test_infer_tracks_videos_with_track_flag(tmp_path):
    from .conftest import run_cli

    args = ["infer", "--json", "--model", os.path.join(MODEL_DIR, "peoplenet_demo.onnx"),
            "--labels", os.path.join(MODEL_DIR, "labels.txt")]  # fmt: skip
    tracked = run_cli(args + ["--track", "--output", str(tmp_path / "out"), CLIP])
    assert tracked.returncode == 0, tracked.stderr
    frames = [json.loads(line) for line in tracked.stdout.splitlines()]
    assert len(frames) == FRAMES
    ids = [[d["track_id"] for d in f["detections"] if "track_id" in d] for f in frames]
    assert all(len(i) == len(set(i)) for i in ids)  # one id per object in a frame
    assert sum(map(len, ids)) > FRAMES
    # ids are stable: most ids of a frame were there in the frame before
    kept = sum(len(set(a) & set(b)) for a, b in zip(ids, ids[1:]))
    assert kept >= 0.9 * sum(map(len, ids[1:]))
    assert os.path.getsize(str(tmp_path / "out" / "holdout.mp4")) > 0
    plain = run_cli(args + [CLIP])
    assert "track_id" not in plain.stdout


def test_annotated_labels_carry_the_track_id():
    from edged.annotate import _detection_text
    from edged.tasks.detection import Detection

    assert _detection_text(Detection(0, "person", 0.91, (0, 0, 9, 9), 7)) == "#7 person 91%"
    assert _detection_text(Detection(0, "person", 0.91, (0, 0, 9, 9))) == "person 91%"


def test_a_reload_that_turns_tracking_on_tracks_the_running_stream(tmp_path, monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "state"))
    config = str(tmp_path / "edged.yaml")
    write_config(config, tracking="enabled: false", counting=False, loop=True)
    seen = []
    daemon = Daemon(config, sinks=[CallbackSink(seen.append)])
    try:
        daemon.start()
        wait = time.monotonic() + 60
        while len(seen) < 10 and time.monotonic() < wait:
            time.sleep(0.05)
        assert seen and all(d.track_id is None for r in seen for d in r.items)
        # the same stream (not restarted): only the model's tracking changes
        write_config(config, tracking="enabled: true", counting=False, loop=True)
        capture = daemon.streams.get("cam").supervisor
        assert daemon.reload()
        assert daemon.streams.get("cam").supervisor is capture  # the model was replaced in place
        before = len(seen)
        while time.monotonic() < wait + 60 and not any(
            d.track_id is not None for r in seen[before:] for d in r.items
        ):
            time.sleep(0.05)
        assert any(d.track_id is not None for r in seen[before:] for d in r.items)
    finally:
        daemon.shutdown()

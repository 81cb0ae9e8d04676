"""The demo person detector: `edged infer` on the .etlt and the .onnx gives the same detections,
and reproduces the hold-out precision and recall the training script measured."""

import json
import os

import pytest

from .conftest import REPO, run_cli

MODEL_DIR = os.path.join(REPO, "models", "peoplenet-demo")
CLIP_DIR = os.path.join(REPO, "tests", "data", "vtest")
CLIP = os.path.join(CLIP_DIR, "holdout.mp4")
IOU = 0.5


def load_json(path):
    with open(path) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def etlt_run():
    return infer(os.path.join(MODEL_DIR, "peoplenet_demo.etlt"), "--model-key", "tlt_encode")


def infer(model, *extra):
    result = run_cli(
        ["infer", "--json", "--model", model, "--labels", os.path.join(MODEL_DIR, "labels.txt")]
        + list(extra)
        + [CLIP]
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def iou(a, b):
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, w) * max(0.0, h)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centred_in(box, regions):
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    return any(r[0] <= cx < r[2] and r[1] <= cy < r[3] for r in regions)


def precision_recall(records, truth):
    """Greedy matching by confidence at IoU >= 0.5, written here independently of the trainer."""
    regions = truth["ignore_regions"]
    tp = fp = fn = 0
    for record in records:
        gt = [b for b in truth["boxes"].get(str(record["frame"]), []) if not centred_in(b, regions)]
        found = sorted(
            (d for d in record["detections"] if d["label"] == "person"),
            key=lambda d: -d["confidence"],
        )
        found = [d for d in found if not centred_in(d["bbox"], regions)]
        unmatched = list(range(len(gt)))
        for det in found:
            best, best_iou = None, IOU
            for i in unmatched:
                overlap = iou(det["bbox"], gt[i])
                if overlap >= best_iou:
                    best, best_iou = i, overlap
            if best is None:
                fp += 1
            else:
                tp += 1
                unmatched.remove(best)
        fn += len(unmatched)
    return tp / float(tp + fp), tp / float(tp + fn), (tp, fp, fn)


def test_every_holdout_frame_is_processed(etlt_run):
    truth = load_json(os.path.join(CLIP_DIR, "holdout_gt.json"))
    assert [r["frame"] for r in etlt_run] == list(range(len(truth["source_frames"])))
    assert all(set(r) == {"input", "frame", "detections"} for r in etlt_run)


def test_the_etlt_and_the_onnx_give_the_same_detections(etlt_run):
    onnx_run = infer(os.path.join(MODEL_DIR, "peoplenet_demo.onnx"))
    assert onnx_run == etlt_run


def test_the_deployed_pipeline_reproduces_the_stated_precision_and_recall(etlt_run):
    stated = load_json(os.path.join(MODEL_DIR, "metrics.json"))["holdout"]
    truth = load_json(os.path.join(CLIP_DIR, "holdout_gt.json"))
    precision, recall, counts = precision_recall(etlt_run, truth)
    assert abs(precision - stated["precision"]) <= 0.01, (precision, counts)
    assert abs(recall - stated["recall"]) <= 0.01, (recall, counts)
    assert not any(d["label"] != "person" for r in etlt_run for d in r["detections"])


def test_the_models_readme_states_the_figures():
    stated = load_json(os.path.join(MODEL_DIR, "metrics.json"))["holdout"]
    with open(os.path.join(REPO, "models", "README.md")) as f:
        text = f.read()
    assert "{:.4f}".format(stated["precision"]) in text
    assert "{:.4f}".format(stated["recall"]) in text


def test_detections_are_in_source_pixels(etlt_run):
    boxes = [d["bbox"] for r in etlt_run for d in r["detections"]]
    assert boxes
    assert all(0 <= b[0] < b[2] <= 768 and 0 <= b[1] < b[3] <= 576 for b in boxes)

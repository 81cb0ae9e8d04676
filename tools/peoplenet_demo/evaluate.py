"""Hold-out evaluation of the demo detector THROUGH edged's deployed code path.

Pre-processing is ``edged.tasks.preprocess.preprocess_image`` (stretch resize, linear, RGB, x/255)
and post-processing ``edged.tasks.detection.DetectNetV2Postprocessor`` with
``peoplenet_defaults()`` (DeepStream's PeopleNet config: person coverage >= 0.4, per-class NMS
IoU 0.5, top-k 20, boxes < 4 px dropped; deepstream_tao_apps
``config_infer_primary_peoplenet.txt``), so the numbers are the ones
``edged infer`` reproduces. Matching: boxes (ground truth and detections) centred in a "don't
care" region are dropped first; then detections, most confident first, each take the unmatched
ground-truth box of highest IoU if that IoU >= 0.5 (TP), else count as FP; unmatched ground truth
is FN.
"""

import argparse
import json
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

if __name__ == "__main__":  # run as a script: make tools/ and the repo root importable
    _TOOLS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path[:0] = [_TOOLS, os.path.dirname(_TOOLS)]

from edged.tasks.contract import InputContract  # noqa: E402
from edged.tasks.detection import (  # noqa: E402
    Detection,
    DetectNetV2Postprocessor,
    peoplenet_defaults,
)
from edged.tasks.preprocess import preprocess_image  # noqa: E402
from peoplenet_demo.contract import (  # noqa: E402
    BBOX_NAME,
    CLASSES,
    COVERAGE_NAME,
    INPUT_NAME,
    NET_H,
    NET_W,
)
from peoplenet_demo.pseudo_labels import in_ignore_region, iou  # noqa: E402

MATCH_IOU = 0.5


def make_postprocessor() -> DetectNetV2Postprocessor:
    decode, clustering = peoplenet_defaults(len(CLASSES))
    return DetectNetV2Postprocessor(CLASSES, decode, clustering)


def network_input(frame_bgr: np.ndarray) -> np.ndarray:
    """1x3x544x960 float32 exactly as edged feeds a DetectNet_v2 model."""
    contract = InputContract(NET_W, NET_H, "rgb", 1.0 / 255.0, resize="linear")
    return preprocess_image(frame_bgr, contract)[None]


def detect(
    session, postprocessor: DetectNetV2Postprocessor, frame_bgr: np.ndarray
) -> List[Detection]:
    """Run the ONNX Runtime session on one BGR frame and post-process like edged."""
    cov, bbox = session.run([COVERAGE_NAME, BBOX_NAME], {INPUT_NAME: network_input(frame_bgr)})
    return postprocessor(cov, bbox, frame_bgr.shape[1], frame_bgr.shape[0], NET_W, NET_H)


def match_frame(
    detections: Sequence[Tuple[float, Sequence[float]]],
    truth: Sequence[Sequence[float]],
    ignore_regions: Sequence[Sequence[float]] = (),
) -> Tuple[int, int, int]:
    """(TP, FP, FN) of one frame; detections are (confidence, box) pairs."""
    dets = [d for d in detections if not in_ignore_region(d[1], ignore_regions)]
    gts = [g for g in truth if not in_ignore_region(g, ignore_regions)]
    taken = [False] * len(gts)
    tp = fp = 0
    for _, box in sorted(dets, key=lambda d: -d[0]):
        best, best_iou = -1, MATCH_IOU
        for k, g in enumerate(gts):
            if not taken[k]:
                overlap = iou(box, g)
                if overlap >= best_iou:
                    best, best_iou = k, overlap
        if best >= 0:
            taken[best] = True
            tp += 1
        else:
            fp += 1
    return tp, fp, len(gts) - sum(taken)


def evaluate(
    session,
    frames: Sequence[np.ndarray],
    truth: Sequence[Sequence[Sequence[float]]],
    ignore_regions: Sequence[Sequence[float]] = (),
) -> Dict[str, object]:
    """Precision / recall / counts of person detections over frames."""
    postprocessor = make_postprocessor()
    tp = fp = fn = 0
    other_classes = 0
    per_frame = []  # type: List[List[Dict[str, object]]]
    for frame, gt in zip(frames, truth):
        dets = detect(session, postprocessor, frame)
        people = [(d.confidence, d.bbox) for d in dets if d.label == "person"]
        other_classes += len(dets) - len(people)
        t, f, n = match_frame(people, gt, ignore_regions)
        tp, fp, fn = tp + t, fp + f, fn + n
        per_frame.append([d.to_dict() for d in dets])
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "precision": tp / float(tp + fp) if tp + fp else 0.0,
        "recall": tp / float(tp + fn) if tp + fn else 0.0,
        "bag_or_face_detections": other_classes,
        "frames": len(frames),
        "detections": per_frame,
    }


def latency_ms(session, frame_bgr: np.ndarray, runs: int = 30, rounds: int = 3) -> List[float]:
    """Median ONNX Runtime session.run time (ms, pre/post-processing excluded) of each round."""
    x = network_input(frame_bgr)
    for _ in range(5):
        session.run(None, {INPUT_NAME: x})
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, {INPUT_NAME: x})
            times.append((time.perf_counter() - start) * 1000.0)
        medians.append(float(np.median(times)))
    return medians


def read_clip(path: str) -> List[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(path)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def main(argv: Sequence[str]) -> int:
    """Evaluate an .onnx (or .etlt with --key) on the committed hold-out clip; print JSON."""
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))
    p = argparse.ArgumentParser(description="hold-out precision/recall of the demo detector")
    p.add_argument(
        "--model", default=os.path.join(repo, "models", "peoplenet-demo", "peoplenet_demo.onnx")
    )
    p.add_argument("--key", help="model key of an .etlt (tlt_encode for the demo)")
    p.add_argument("--gt", default=os.path.join(repo, "tests", "data", "vtest", "holdout_gt.json"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--latency", action="store_true", help="also time session.run")
    args = p.parse_args(argv)

    import onnxruntime as ort

    with open(args.model, "rb") as f:
        blob = f.read()
    if args.key:
        from edged.etlt import decode_etlt

        blob = decode_etlt(blob, args.key, args.model).data
    with open(args.gt) as f:
        gt = json.load(f)
    frames = read_clip(os.path.join(os.path.dirname(args.gt), gt["clip"]))
    truth = [gt["boxes"][str(i)] for i in range(len(frames))]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    result = evaluate(session, frames, truth, gt["ignore_regions"])
    del result["detections"]
    if args.latency:
        result["ort_latency_ms_median_per_round"] = latency_ms(session, frames[0])
    result["onnxruntime"] = ort.__version__
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Train the demo PeopleNet-format person detector on OpenCV's vtest.avi.

Reproducible end to end: fetch the clip from Debian's opencv-doc (tools/fetch_vtest.sh), derive
pseudo labels (tools/peoplenet_demo/pseudo_labels.py), hold out the last 20 % of frames
(636..794) as a committed mp4 clip plus its ground truth (tests/data/vtest/), train a small
DetectNet_v2-format net on the first 80 % (tools/peoplenet_demo/model.py), export ONNX (opset 11,
PeopleNet's tensor names, static batch 1), encrypt it to an ONNX-payload .etlt with the key
``tlt_encode``, and evaluate the exported model on the frames AS DECODED FROM THE COMMITTED CLIP
through edged's own pre- and post-processing (tools/peoplenet_demo/evaluate.py).

Needs torch (CPU), onnx, onnxruntime, opencv-python-headless<5 (OpenCV 5 dropped HOGDescriptor-era
APIs we do not use, but keep 4.x like edged), numpy, cryptography. Run from anywhere:

    /work/venvs/traindet/bin/python tools/train_peoplenet_demo.py
"""

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from typing import Dict, Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # edged (deployed pre/post-processing, .etlt writer)

from peoplenet_demo import evaluate as ev  # noqa: E402
from peoplenet_demo import model as m  # noqa: E402
from peoplenet_demo import pseudo_labels as pl  # noqa: E402

logger = logging.getLogger("train_peoplenet_demo")

MODEL_KEY = "tlt_encode"  # PeopleNet's public key (jetson-inference tools/tao-model-downloader.sh)
HOLDOUT_FRACTION = 0.2
CLIP_NAME = "holdout.mp4"
# MPEG-4 Part 2: OpenCV's pip wheels write AND read it (their FFmpeg has no H.264 encoder); the
# 159 frames take ~2.7 MB and decode bit-identically with opencv-python-headless 4.6 and 4.14.
CLIP_FOURCC = "mp4v"
LABEL_METHOD = (
    "pseudo labels: median-background subtraction, shadow removal, perspective-guided grouping"
    " and splitting, tracking (tools/peoplenet_demo/pseudo_labels.py)"
)
POSTPROCESSING = (
    "edged DetectNetV2Postprocessor + peoplenet_defaults(): person coverage >= 0.4,"
    " per-class NMS IoU 0.5, top-k 20, boxes under 4 px dropped"
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--video", help="vtest.avi (default: fetched by tools/fetch_vtest.sh)")
    p.add_argument("--model-dir", default=os.path.join(REPO, "models", "peoplenet-demo"))
    p.add_argument("--holdout-dir", default=os.path.join(REPO, "tests", "data", "vtest"))
    p.add_argument("--steps", type=int, default=1600, help="optimiser steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument(
        "--crop",
        type=int,
        nargs=2,
        default=(288, 480),
        metavar=("H", "W"),
        help="training crop (network pixels, multiples of 16)",
    )
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=1)
    # One training thread: on this shared 2-core machine two OpenMP threads measured 0.3 s/step
    # when idle but 2-8 s/step while another job ran, one thread 0.4 s/step either way.
    p.add_argument("--threads", type=int, default=1, help="torch/OpenCV threads for training")
    p.add_argument(
        "--ort-threads", type=int, default=2, help="ONNX Runtime threads for evaluation and latency"
    )
    p.add_argument(
        "--keep-clip",
        action="store_true",
        help="reuse an existing hold-out clip instead of re-encoding it",
    )
    return p.parse_args(argv)


def fetch_video() -> str:
    out = subprocess.check_output(["bash", os.path.join(REPO, "tools", "fetch_vtest.sh")])
    return out.decode().strip().splitlines()[-1]


def read_frames(path: str) -> Tuple[np.ndarray, float]:
    """Every frame of ``path`` (the evaluator's reader) and its frame rate."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    cap.release()
    frames = ev.read_clip(path)
    if not frames:
        raise SystemExit(f"no frames decoded from {path}")
    return np.stack(frames), fps


def write_clip(path: str, frames: np.ndarray, fps: float) -> None:
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*CLIP_FOURCC), fps, (w, h))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {path} with fourcc {CLIP_FOURCC}")
    for frame in frames:
        writer.write(frame)
    writer.release()


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_json(path: str, obj: object) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, separators=(",", ":"))
        f.write("\n")


# -- training ------------------------------------------------------------------------------------


def to_network_rgb(frame_bgr: np.ndarray) -> np.ndarray:
    """960x544 RGB uint8, the same stretch resize (linear) edged applies before x/255."""
    resized = cv2.resize(frame_bgr, (m.NET_W, m.NET_H), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)


def build_targets(
    labels: Sequence[Sequence[Sequence[int]]], src_w: int, src_h: int
) -> Dict[str, np.ndarray]:
    """Targets of every frame, unflipped [0] and mirrored [1]: cov, bbox, weight."""
    covs, bboxes, weights = [], [], []
    for boxes in labels:
        flipped = m.flip_boxes(boxes, src_w)
        regions = [r for r in pl.IGNORE_REGIONS]
        flipped_regions = m.flip_boxes(regions, src_w)
        a = m.targets_for_frame(boxes, src_w, src_h, regions)
        b = m.targets_for_frame(flipped, src_w, src_h, flipped_regions)
        covs.append((a[0], b[0]))
        bboxes.append((a[1], b[1]))
        weights.append((a[2], b[2]))
    return {"cov": np.asarray(covs), "bbox": np.asarray(bboxes), "weight": np.asarray(weights)}


def sample_batch(
    rng: np.random.RandomState,
    images: np.ndarray,
    targets: Dict[str, np.ndarray],
    batch: int,
    crop_h: int,
    crop_w: int,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random cell-aligned crops, random mirror, mild brightness/contrast jitter."""
    xs, covs, bbs, ws = [], [], [], []
    ch, cw = crop_h // m.STRIDE, crop_w // m.STRIDE
    for _ in range(batch):
        k = rng.randint(len(images))
        flip = rng.randint(2)
        i0 = rng.randint(m.GRID_H - ch + 1)
        j0 = rng.randint(m.GRID_W - cw + 1)
        img = images[k]
        if flip:
            img = img[:, ::-1]
        y0, x0 = i0 * m.STRIDE, j0 * m.STRIDE
        xs.append(img[y0 : y0 + crop_h, x0 : x0 + crop_w])
        covs.append(targets["cov"][k, flip, :, i0 : i0 + ch, j0 : j0 + cw])
        bbs.append(targets["bbox"][k, flip, :, i0 : i0 + ch, j0 : j0 + cw])
        ws.append(targets["weight"][k, flip, i0 : i0 + ch, j0 : j0 + cw])
    x = torch.from_numpy(np.ascontiguousarray(np.stack(xs))).permute(0, 3, 1, 2).float() / 255.0
    gain = torch.from_numpy(rng.uniform(0.8, 1.2, (batch, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.06, 0.06, (batch, 1, 1, 1)).astype(np.float32))
    x = (x * gain + bias).clamp(0.0, 1.0)
    return (
        x,
        torch.from_numpy(np.stack(covs)),
        torch.from_numpy(np.stack(bbs)),
        torch.from_numpy(np.stack(ws)),
    )


def detectnet_loss(
    logits: torch.Tensor,
    bbox: torch.Tensor,
    cov_t: torch.Tensor,
    bbox_t: torch.Tensor,
    weight: torch.Tensor,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Coverage BCE (all classes, "don't care" cells weighted 0) and bbox L1 on covered cells only.

    Like DetectNet_v2, the regression is trained only where the coverage target is set; bag and
    face have no positives, so their coverage is driven to 0 everywhere.
    """
    positives = cov_t[:, 0].sum().clamp(min=1.0)
    bce = F.binary_cross_entropy_with_logits(logits, cov_t, reduction="none")
    cov_loss = (bce * weight[:, None]).sum() / positives
    mask = cov_t[:, 0:1]
    l1 = (torch.abs(bbox[:, 0:4] - bbox_t[:, 0:4]) * mask).sum() / (4.0 * positives)
    return cov_loss, l1


def train(
    args: argparse.Namespace, images: np.ndarray, targets: Dict[str, np.ndarray]
) -> m.DemoDetectNet:
    torch.manual_seed(args.seed)
    rng = np.random.RandomState(args.seed)
    net = m.DemoDetectNet()
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(args.steps // 20, 1)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / float(warmup)
        progress = (step - warmup) / float(max(args.steps - warmup, 1))
        return 0.5 * (1.0 + np.cos(np.pi * progress)) * 0.99 + 0.01

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    net.train()
    start = time.monotonic()
    running = np.zeros(2)
    for step in range(args.steps):
        x, cov_t, bbox_t, w = sample_batch(
            rng, images, targets, args.batch, args.crop[0], args.crop[1]
        )
        logits, bbox = net(x)
        cov_loss, box_loss = detectnet_loss(logits, bbox, cov_t, bbox_t, w)
        loss = cov_loss + 2.0 * box_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        running = 0.98 * running + 0.02 * np.array([cov_loss.item(), box_loss.item()])
        if step % 100 == 0 or step == args.steps - 1:
            logger.info(
                "step %d/%d cov %.4f bbox %.4f lr %.5f %.0fs",
                step,
                args.steps,
                running[0],
                running[1],
                sched.get_last_lr()[0],
                time.monotonic() - start,
            )
    net.eval()
    return net


# -- export --------------------------------------------------------------------------------------


def export_onnx(net: m.DemoDetectNet, path: str) -> None:
    wrapper = m.ExportWrapper(net).eval()
    torch.onnx.export(
        wrapper,
        torch.zeros(1, 3, m.NET_H, m.NET_W),
        path,
        input_names=["input_1"],
        output_names=["output_cov/Sigmoid", "output_bbox/BiasAdd"],
        opset_version=11,  # ONNX Runtime 1.10 (Python 3.6, JetPack 4.6) and TensorRT 8.0 load it
        do_constant_folding=True,
        dynamo=False,  # the TorchScript exporter keeps exactly these names and opset 11
    )
    import onnx

    model = onnx.load(path)
    onnx.checker.check_model(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(model.graph.input) + list(model.graph.output)
    }
    expected = {
        "input_1": [1, 3, m.NET_H, m.NET_W],
        "output_cov/Sigmoid": [1, 3, m.GRID_H, m.GRID_W],
        "output_bbox/BiasAdd": [1, 12, m.GRID_H, m.GRID_W],
    }
    if shapes != expected:
        raise SystemExit(f"exported ONNX has tensors {shapes}, expected {expected}")


def write_etlt(onnx_path: str, etlt_path: str, seed: int) -> None:
    """ONNX-payload .etlt (header N = 0) with a nonce derived from the seed: reproducible bytes."""
    from edged.etlt import decode_etlt, encode_etlt

    with open(onnx_path, "rb") as f:
        payload = f.read()
    nonce = hashlib.sha256(f"peoplenet-demo-nonce-{seed}".encode()).digest()[:16]
    blob = encode_etlt(payload, MODEL_KEY, "", nonce)
    if decode_etlt(blob, MODEL_KEY, etlt_path).data != payload:
        raise SystemExit("the .etlt does not decode back to the ONNX model")
    with open(etlt_path, "wb") as f:
        f.write(blob)


# -- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    torch.use_deterministic_algorithms(True)
    t0 = time.monotonic()

    video = args.video or fetch_video()
    frames, fps = read_frames(video)
    n = len(frames)
    split = int(round(n * (1.0 - HOLDOUT_FRACTION)))
    src_h, src_w = frames.shape[1:3]
    logger.info(
        "%s: %d frames %dx%d at %.1f fps; train 0..%d, hold-out %d..%d",
        video,
        n,
        src_w,
        src_h,
        fps,
        split - 1,
        split,
        n - 1,
    )

    labels, geometry = pl.pseudo_labels(frames)
    logger.info(
        "pseudo labels: %d boxes; person height = %.4f * foot_y + %.2f",
        sum(map(len, labels)),
        geometry.slope,
        geometry.intercept,
    )
    os.makedirs(os.path.join(args.model_dir, "labels"), exist_ok=True)
    write_json(
        os.path.join(args.model_dir, "labels", "vtest_pseudo_labels.json"),
        {
            "video": f"vtest.avi (Debian opencv-doc, sha256 {sha256(video)})",
            "box_format": "[x1, y1, x2, y2] source pixels, x2/y2 exclusive",
            "geometry": geometry.as_dict(),
            "ignore_regions": pl.IGNORE_REGIONS,
            "train_frames": [0, split - 1],
            "holdout_frames": [split, n - 1],
            "boxes": labels,
        },
    )

    # The hold-out clip is what tests and the demo ship; evaluate on its DECODED frames.
    os.makedirs(args.holdout_dir, exist_ok=True)
    clip_path = os.path.join(args.holdout_dir, CLIP_NAME)
    if not (args.keep_clip and os.path.exists(clip_path)):
        write_clip(clip_path, frames[split:], fps)
    clip_frames, _ = read_frames(clip_path)
    if len(clip_frames) != n - split:
        raise SystemExit(f"{clip_path} decodes to {len(clip_frames)} frames, expected {n - split}")
    holdout_truth = labels[split:]
    write_json(
        os.path.join(args.holdout_dir, "holdout_gt.json"),
        {
            "clip": CLIP_NAME,
            "source": f"vtest.avi frames {split}..{n - 1} (OpenCV sample, Debian opencv-doc)",
            "source_frames": list(range(split, n)),
            "box_format": "[x1, y1, x2, y2] in 768x576 source pixels, x2/y2 exclusive",
            "ignore_regions": pl.IGNORE_REGIONS,
            "method": LABEL_METHOD,
            "boxes": {str(i): b for i, b in enumerate(holdout_truth)},
        },
    )

    images = np.stack([to_network_rgb(f) for f in frames[:split]])
    targets = build_targets(labels[:split], src_w, src_h)
    t_train = time.monotonic()
    net = train(args, images, targets)
    train_s = time.monotonic() - t_train
    del images

    onnx_path = os.path.join(args.model_dir, "peoplenet_demo.onnx")
    etlt_path = os.path.join(args.model_dir, "peoplenet_demo.etlt")
    export_onnx(net, onnx_path)
    write_etlt(onnx_path, etlt_path, args.seed)
    with open(os.path.join(args.model_dir, "labels.txt"), "w") as f:
        f.write("\n".join(m.CLASSES) + "\n")

    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.ort_threads
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    holdout = ev.evaluate(session, list(clip_frames), holdout_truth, pl.IGNORE_REGIONS)
    train_eval = ev.evaluate(session, list(frames[:split]), labels[:split], pl.IGNORE_REGIONS)
    latency = ev.latency_ms(session, clip_frames[0])

    metrics = {
        "holdout": {k: v for k, v in holdout.items() if k != "detections"},
        "train_split": {k: v for k, v in train_eval.items() if k != "detections"},
        "match_iou": ev.MATCH_IOU,
        "postprocessing": POSTPROCESSING,
        "ort_latency_ms_median_per_round": [round(v, 2) for v in latency],
        "parameters": m.count_parameters(net),
        "train_seconds": round(train_s, 1),
        "total_seconds": round(time.monotonic() - t0, 1),
        "args": {
            k: v for k, v in vars(args).items() if k not in ("model_dir", "holdout_dir", "video")
        },
        "files": {
            os.path.relpath(p, REPO): {"bytes": os.path.getsize(p), "sha256": sha256(p)}
            for p in (onnx_path, etlt_path, clip_path)
        },
        "versions": {
            "torch": torch.__version__,
            "onnxruntime": ort.__version__,
            "opencv": cv2.__version__,
        },
    }
    write_json(os.path.join(args.holdout_dir, "holdout_detections.json"), holdout["detections"])
    with open(os.path.join(args.model_dir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(metrics, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

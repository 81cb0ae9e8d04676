#!/usr/bin/env python3
"""Train, export and measure the demo ResNet-18 digits classifier.

Produces ``models/resnet18-digits/`` (``resnet18.onnx``, ``labels.txt``, ``metrics.json``,
``README.md``) and the hold-out images ``tests/data/digits/test/<label>/*.png``.

Data: scikit-learn's digits data set (1797 8x8 images, 10 classes; it ships inside the
scikit-learn package, so nothing is downloaded). Each 8x8 image (values 0..16) becomes an
8-bit grayscale-as-RGB PNG: value * 255 / 16 rounded, upscaled x8 to 64x64 with nearest
neighbour (so every digit pixel is an 8x8 block; 64 -> 224 is then exactly 28 px per digit
pixel).

The model and its I/O follow jetson-inference's ``train.py`` + ``onnx_export.py``
(dusty-nv/pytorch-classification): torchvision's ResNet-18 topology written in plain torch
(torchvision has no CPU build on our registry) with a configurable base width, input ``input_0``
1x3x224x224 float32 RGB ``(x/255 - mean)/std``, output ``output_0`` [1, 10] already softmaxed,
opset 11 so ONNX Runtime 1.10 (JetPack 4.6, Python 3.6) and TensorRT 8.x load it.

Training feeds the network exactly what edged feeds it at deployment: the PNG bytes decoded
by OpenCV (BGR uint8) -> RGB -> whole-image NEAREST stretch to 224x224 (no crop) -> normalise.
The hold-out split (stratified, fixed seed) is never used for training or model selection;
the best epoch is chosen on a validation split carved from the training part. The reported
accuracy is measured with ONNX Runtime on the exported file, reading the saved PNGs back.

Run (Python 3.11 venv with torch 2.13.0 CPU, scikit-learn, onnx, onnxruntime, opencv):
    python tools/train_resnet18_digits.py
Re-measure an existing model without torch (also works on Python 3.6 / onnxruntime 1.10):
    python tools/train_resnet18_digits.py --evaluate-only
"""

import argparse
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODEL_DIR = os.path.join(REPO_ROOT, "models", "resnet18-digits")
DEFAULT_HOLDOUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "digits", "test")

# jetson-inference contract (dusty-nv/pytorch-classification onnx_export.py)
INPUT_NAME = "input_0"
OUTPUT_NAME = "output_0"
INPUT_SIZE = 224
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
OPSET = 11  # onnxruntime 1.10 (Python 3.6 / JetPack 4.6) and TensorRT 8.x load opset 11
IR_VERSION = 6  # the IR version that introduced opset 11; old runtimes reject newer IRs

CLASS_NAMES = [str(d) for d in range(10)]  # ImageFolder order: sorted folder names
DIGIT_MAX = 16  # sklearn digits pixel values are 0..16
DIGIT_SIDE = 8
PNG_SCALE = 8  # 8x8 -> 64x64, nearest neighbour

ONNX_FILE = "resnet18.onnx"
LABELS_FILE = "labels.txt"
METRICS_FILE = "metrics.json"
README_FILE = "README.md"


# --------------------------------------------------------------------------- images


def digit_to_bgr(pixels: np.ndarray, scale: int = PNG_SCALE) -> np.ndarray:
    """8x8 digit (0..16) -> uint8 (8*scale)x(8*scale)x3 grayscale-as-colour image."""
    gray = np.rint(pixels.reshape(DIGIT_SIDE, DIGIT_SIDE) * (255.0 / DIGIT_MAX)).astype(np.uint8)
    side = DIGIT_SIDE * scale
    big = cv2.resize(gray, (side, side), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(big, cv2.COLOR_GRAY2BGR)


def png_roundtrip(image_bgr: np.ndarray) -> np.ndarray:
    """Encode to PNG and decode with OpenCV, as deployment reads the file (lossless check)."""
    ok, data = cv2.imencode(".png", image_bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("cv2.imencode failed for a digit image")
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if not np.array_equal(decoded, image_bgr):
        raise RuntimeError("PNG round trip is not lossless")
    return decoded


def preprocess(image_bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 HxWx3 -> float32 3x224x224: RGB, nearest stretch (no crop), (x/255-mean)/std.

    Mirrors edged's deployment path (edged/tasks/preprocess.py) and jetson-inference's
    cudaTensorNormMeanRGB (``c/tensorConvert.cu``).
    """
    rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
    resized = cv2.resize(rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_NEAREST)
    x = resized.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(MEAN, dtype=np.float32)) / np.asarray(STD, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def augment(image_bgr: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """Small random shift / scale / rotation (no flips: digits are not flip-invariant).

    Nearest-neighbour warp keeps the blocky look of the deployed PNGs; output stays uint8
    like a decoded PNG, so preprocess() sees the same kind of input as at deployment.
    """
    h, w = image_bgr.shape[:2]
    angle = rng.uniform(-8.0, 8.0)
    scale = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.08, 0.08, size=2) * (w, h)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    m[:, 2] += shift
    return cv2.warpAffine(
        image_bgr, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT
    )


# --------------------------------------------------------------------------- data split


def split_indices(
    labels: np.ndarray, seed: int, test_fraction: float, val_fraction: float
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified, seeded train / validation / hold-out index arrays (hold-out first)."""
    from sklearn.model_selection import train_test_split

    all_idx = np.arange(len(labels))
    rest, holdout = train_test_split(
        all_idx, test_size=test_fraction, stratify=labels, random_state=seed
    )
    train, val = train_test_split(
        rest, test_size=val_fraction, stratify=labels[rest], random_state=seed + 1
    )
    return np.sort(train), np.sort(val), np.sort(holdout)


def write_holdout(
    holdout_dir: str, images: Sequence[np.ndarray], labels: Sequence[int], ids: Sequence[int]
) -> int:
    """Write hold-out PNGs as <dir>/<label>/digit_<sklearn index>.png; returns bytes written.

    Only our own files are removed first (``<label>/*.png``), never the directory itself.
    """
    for name in CLASS_NAMES:
        class_dir = os.path.join(holdout_dir, name)
        if os.path.isdir(class_dir):
            for entry in os.listdir(class_dir):
                if entry.endswith(".png"):
                    os.remove(os.path.join(class_dir, entry))
        os.makedirs(class_dir, exist_ok=True)
    total = 0
    for image, label, idx in zip(images, labels, ids):
        path = os.path.join(holdout_dir, CLASS_NAMES[label], f"digit_{idx:04d}.png")
        if not cv2.imwrite(path, image, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
            raise RuntimeError(f"cannot write {path}")
        total += os.path.getsize(path)
    return total


# --------------------------------------------------------------------------- model (torch)


def build_resnet18(width: int, num_classes: int) -> Any:
    """torchvision's resnet18 topology (BasicBlock, [2, 2, 2, 2]) with base width ``width``.

    torchvision uses width 64; the stages are width, 2*width, 4*width, 8*width.
    """
    import torch
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = None  # type: Optional[nn.Module]
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(
                    nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )

        def forward(self, x: Any) -> Any:
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            return self.relu(out + identity)

    class ResNet18(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            stages = []
            inplanes = width
            for i, planes in enumerate((width, 2 * width, 4 * width, 8 * width)):
                stride = 1 if i == 0 else 2
                stages.append(
                    nn.Sequential(
                        BasicBlock(inplanes, planes, stride), BasicBlock(planes, planes, 1)
                    )
                )
                inplanes = planes
            self.layer1, self.layer2, self.layer3, self.layer4 = stages
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * width, num_classes)
            for m in self.modules():  # torchvision's initialisation
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)

        def forward(self, x: Any) -> Any:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet18()


def seed_everything(seed: int, threads: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def batch_tensor(images: Sequence[np.ndarray]) -> Any:
    import torch

    return torch.from_numpy(np.stack([preprocess(im) for im in images]))


def accuracy_torch(model: Any, images: Sequence[np.ndarray], labels: np.ndarray) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 64):
            logits = model(batch_tensor(images[start : start + 64]))
            pred = logits.argmax(dim=1).numpy()
            correct += int((pred == labels[start : start + 64]).sum())
    return correct / float(len(images))


def train(
    args: argparse.Namespace,
    train_images: List[np.ndarray],
    train_labels: np.ndarray,
    val_images: List[np.ndarray],
    val_labels: np.ndarray,
) -> Tuple[Any, List[Dict[str, float]], int]:
    """AdamW + cosine schedule with warm-up; keeps the epoch with the best validation accuracy."""
    import copy

    import torch
    from torch import nn

    model = build_resnet18(args.width, len(CLASS_NAMES))
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = (len(train_images) + args.batch_size - 1) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=0.15,
    )  # fmt: skip
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    rng = np.random.RandomState(args.seed)
    history = []  # type: List[Dict[str, float]]
    best_state, best_acc, best_epoch = None, -1.0, 0
    for epoch in range(1, args.epochs + 1):
        start = time.monotonic()
        model.train()
        order = rng.permutation(len(train_images))
        total_loss = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size : (b + 1) * args.batch_size]
            images = [
                augment(train_images[i], rng) if rng.rand() < args.augment else train_images[i]
                for i in idx
            ]
            x = batch_tensor(images)
            y = torch.from_numpy(train_labels[idx].astype(np.int64))
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
        val_acc = accuracy_torch(model, val_images, val_labels)
        row = {
            "epoch": epoch,
            "train_loss": round(total_loss / len(train_images), 5),
            "val_accuracy": round(val_acc, 5),
            "seconds": round(time.monotonic() - start, 1),
        }
        history.append(row)
        print(
            f"epoch {epoch} loss {row['train_loss']:.4f} val {val_acc:.4f} ({row['seconds']:.1f}s)",
            flush=True,
        )
        if val_acc >= best_acc:  # ties keep the later (lower learning rate) epoch
            best_acc, best_epoch = val_acc, epoch
            best_state = copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    model.eval()
    return model, history, best_epoch


def export_onnx(model: Any, path: str) -> None:
    """Append Softmax(dim=1) like onnx_export.py and export opset 11, static batch 1."""
    import onnx
    import torch
    from torch import nn

    wrapped = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE, dtype=torch.float32)
    with warnings.catch_warnings():
        # torch >= 2.9 warns that the TorchScript exporter is legacy; it is chosen on purpose
        # because the torch.export-based one targets opset 18 and newer.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapped,
            (dummy,),
            path,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,  # the TorchScript exporter still writes opset 11
        )
    proto = onnx.load(path)
    proto.ir_version = IR_VERSION
    proto.doc_string = (
        "edged demo: ResNet-18 on scikit-learn digits (tools/train_resnet18_digits.py)"
    )
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


# --------------------------------------------------------------------------- evaluation (ORT)


def list_holdout(holdout_dir: str, class_names: Sequence[str]) -> List[Tuple[str, int]]:
    """(path, class index) for every PNG under <dir>/<label>/, in sorted order."""
    items = []
    for class_id, name in enumerate(class_names):
        class_dir = os.path.join(holdout_dir, name)
        for entry in sorted(os.listdir(class_dir)):
            if entry.endswith(".png"):
                items.append((os.path.join(class_dir, entry), class_id))
    return items


def evaluate_onnx(
    onnx_path: str, labels_path: str, holdout_dir: str, threads: int
) -> Dict[str, Any]:
    """Top-1 accuracy of the ONNX file on the hold-out PNGs, read with OpenCV as edged does."""
    import onnxruntime as ort

    with open(labels_path) as f:
        class_names = [line.strip() for line in f if line.strip()]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    inp, out = session.get_inputs()[0], session.get_outputs()[0]
    if inp.name != INPUT_NAME or out.name != OUTPUT_NAME:
        raise RuntimeError(f"unexpected tensor names {inp.name} / {out.name}")
    items = list_holdout(holdout_dir, class_names)
    correct, run_ms, total_ms, max_sum_error = 0, [], [], 0.0
    per_class = {name: [0, 0] for name in class_names}
    for path, class_id in items:
        t0 = time.perf_counter()
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise RuntimeError(f"cannot read {path}")
        x = preprocess(image)[np.newaxis]
        t1 = time.perf_counter()
        probs = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0][0]
        t2 = time.perf_counter()
        run_ms.append((t2 - t1) * 1000.0)
        total_ms.append((t2 - t0) * 1000.0)
        max_sum_error = max(max_sum_error, abs(float(probs.sum()) - 1.0))
        hit = int(np.argmax(probs)) == class_id
        correct += hit
        per_class[class_names[class_id]][0] += hit
        per_class[class_names[class_id]][1] += 1
    return {
        "holdout_images": len(items),
        "holdout_correct": correct,
        "holdout_top1_accuracy": round(correct / float(len(items)), 6),
        "per_class": {k: f"{v[0]}/{v[1]}" for k, v in per_class.items()},
        "output_max_abs_sum_minus_1": max_sum_error,
        "onnxruntime_version": ort.__version__,
        "onnxruntime_threads": threads,
        "latency_ms_session_run_median": round(statistics.median(run_ms), 3),
        "latency_ms_session_run_mean": round(statistics.mean(run_ms), 3),
        "latency_ms_read_preprocess_run_median": round(statistics.median(total_ms), 3),
        "input_shape": [d for d in inp.shape],
        "output_shape": [d for d in out.shape],
    }


# --------------------------------------------------------------------------- outputs


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_readme(path: str, metrics: Dict[str, Any]) -> None:
    m = metrics
    text = """# resnet18-digits: the demo classifier

A real, small, trained classifier so that `edged infer` has something meaningful to run
with no GPU and no download. Generated by
`tools/train_resnet18_digits.py`; do not edit by hand (re-run the script).

## What it is

- Topology: torchvision's ResNet-18 (BasicBlock, layers [2, 2, 2, 2], conv1 7x7 stride 2 +
  3x3 max-pool, adaptive average pool, fully connected), written in plain torch, with base
  width **{width}** instead of 64 (stages {width}/{w2}/{w4}/{w8} channels) to keep the file small.
  {params} parameters.
- Data: scikit-learn's digits data set (`sklearn.datasets.load_digits`: 1797 8x8 images,
  classes 0-9; it ships inside scikit-learn). Each 8x8 image (values 0..16) is stored as an
  8-bit grayscale-as-RGB PNG: `round(v * 255 / 16)`, upscaled x{scale} to {side}x{side} with
  nearest neighbour (one digit pixel = one {scale}x{scale} block).
- Split (seed {seed}, stratified): {n_train} training, {n_val} validation (model selection),
  **{n_holdout} hold-out** images. The hold-out images are never used for training or model
  selection; they are in `tests/data/digits/test/<label>/digit_<index>.png`
  (jetson-inference dataset layout; `<index>` is the index in `load_digits()`).
- Training: {epochs} epochs, AdamW (lr {lr}, weight decay {wd}, one-cycle schedule), batch
  {batch}, label smoothing 0.05, light augmentation (shift +-8 %, scale 0.9-1.1, rotation +-8
  degrees, nearest warp; no flips). Best epoch by validation accuracy: {best_epoch}
  (validation accuracy {val_acc}). Training time {train_s} s on {threads} CPU threads
  ({cpu}; wall time on a shared machine, so it varies with load); torch {torch}.
- Every training image goes through the deployment path: PNG bytes decoded by OpenCV (BGR
  uint8) -> RGB -> whole-image nearest-neighbour stretch to 224x224 (no crop) ->
  `(x/255 - mean)/std`.

## Measured hold-out accuracy

ONNX Runtime {ort} on `resnet18.onnx`, reading the saved hold-out PNGs with OpenCV as above:

**top-1 accuracy {acc_pct:.2f} % ({correct} / {n_holdout} hold-out images)**

Per class (correct/total): {per_class}.

Informational latency (not a test): median `session.run` {lat:.2f} ms per image
({lat_total:.2f} ms including PNG read and pre-processing), ONNX Runtime CPU, {ort_threads}
intra-op threads, batch 1 (a shared machine, so it varies with load).

## Files

| file | size | sha256 |
|---|---|---|
| `resnet18.onnx` | {onnx_size} bytes | `{onnx_sha}` |
| `labels.txt` | {labels_size} bytes | `{labels_sha}` |

`metrics.json` holds every number above, the per-epoch history and the exact command.

## I/O contract (jetson-inference `train.py` + `onnx_export.py`)

- input: `input_0`, float32, NCHW `[1, 3, 224, 224]`, static batch 1.
- pre-processing: RGB; whole-frame **nearest-neighbour stretch** to 224x224 (no crop);
  `(x/255 - mean)/std` with mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); planar CHW.
- output: `output_0`, float32 `[1, 10]`, **already softmaxed** (the exporter appends
  `Softmax(dim=1)`).
- labels: `labels.txt`, one class per line, line index = class index (`0` .. `9`).
- ONNX: opset {opset}, IR version {ir}; loads in ONNX Runtime 1.10 (Python 3.6).

Try it:

    edged infer --json --model models/resnet18-digits/resnet18.onnx \\
        --labels models/resnet18-digits/labels.txt tests/data/digits/test

## Reproduce

    python3.11 -m venv /tmp/train && /tmp/train/bin/pip install torch==2.13.0 scikit-learn \\
        onnx onnxruntime opencv-python-headless numpy
    /tmp/train/bin/python {command}

Training is deterministic for a given machine and thread count
(`torch.use_deterministic_algorithms(True)`, fixed seeds, {threads} threads); another CPU may
produce slightly different weights. To re-measure the shipped file without torch (also on
Python 3.6 with onnxruntime 1.10):

    python tools/train_resnet18_digits.py --evaluate-only
""".format(
        width=m["width"],
        w2=2 * m["width"],
        w4=4 * m["width"],
        w8=8 * m["width"],
        params="{:,}".format(m["parameters"]),
        scale=PNG_SCALE,
        side=PNG_SCALE * DIGIT_SIDE,
        seed=m["seed"],
        n_train=m["train_images"],
        n_val=m["validation_images"],
        n_holdout=m["holdout_images"],
        epochs=m["epochs"],
        lr=m["lr"],
        wd=m["weight_decay"],
        batch=m["batch_size"],
        best_epoch=m["best_epoch"],
        val_acc=m["best_validation_accuracy"],
        train_s=m["training_seconds"],
        threads=m["threads"],
        cpu=m["cpu"],
        torch=m["torch_version"],
        ort=m["onnxruntime_version"],
        acc_pct=100.0 * m["holdout_top1_accuracy"],
        correct=m["holdout_correct"],
        per_class=", ".join(f"{k}: {v}" for k, v in sorted(m["per_class"].items())),
        lat=m["latency_ms_session_run_median"],
        lat_total=m["latency_ms_read_preprocess_run_median"],
        ort_threads=m["onnxruntime_threads"],
        onnx_size=m["onnx_bytes"],
        onnx_sha=m["onnx_sha256"],
        labels_size=m["labels_bytes"],
        labels_sha=m["labels_sha256"],
        opset=OPSET,
        ir=IR_VERSION,
        command=m["command"],
    )
    with open(path, "w") as f:
        f.write(text)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", default=DEFAULT_MODEL_DIR, help="output: onnx, labels, README")
    p.add_argument("--holdout-dir", default=DEFAULT_HOLDOUT_DIR, help="output: hold-out PNGs")
    p.add_argument("--metrics", help="metrics JSON path (default <model-dir>/metrics.json)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--width", type=int, default=16, help="ResNet base width (torchvision: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--augment", type=float, default=0.7, help="probability of augmenting")
    p.add_argument("--test-fraction", type=float, default=0.25, help="hold-out share")
    p.add_argument("--val-fraction", type=float, default=0.1, help="validation share of the rest")
    p.add_argument("--threads", type=int, default=2, help="torch / onnxruntime CPU threads")
    p.add_argument(
        "--evaluate-only",
        action="store_true",
        help="only measure the existing ONNX on the hold-out PNGs (needs no torch/sklearn)",
    )
    return p.parse_args(argv)


def command_line(argv: Sequence[str]) -> str:
    return " ".join(["tools/train_resnet18_digits.py"] + list(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    onnx_path = os.path.join(args.model_dir, ONNX_FILE)
    labels_path = os.path.join(args.model_dir, LABELS_FILE)
    if args.evaluate_only:
        result = evaluate_onnx(onnx_path, labels_path, args.holdout_dir, args.threads)
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0

    import onnx
    import sklearn
    import torch
    from sklearn.datasets import load_digits

    seed_everything(args.seed, args.threads)
    digits = load_digits()
    labels = digits.target.astype(np.int64)
    images = [png_roundtrip(digit_to_bgr(d)) for d in digits.images]
    train_idx, val_idx, holdout_idx = split_indices(
        labels, args.seed, args.test_fraction, args.val_fraction
    )
    os.makedirs(args.model_dir, exist_ok=True)
    holdout_bytes = write_holdout(
        args.holdout_dir,
        [images[i] for i in holdout_idx],
        labels[holdout_idx].tolist(),
        holdout_idx.tolist(),
    )
    with open(labels_path, "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")

    start = time.monotonic()
    model, history, best_epoch = train(
        args,
        [images[i] for i in train_idx],
        labels[train_idx],
        [images[i] for i in val_idx],
        labels[val_idx],
    )
    training_seconds = round(time.monotonic() - start, 1)
    export_onnx(model, onnx_path)
    result = evaluate_onnx(onnx_path, labels_path, args.holdout_dir, args.threads)

    metrics = {
        "command": command_line(argv),
        "seed": args.seed,
        "width": args.width,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "augment_probability": args.augment,
        "threads": args.threads,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "train_images": len(train_idx),
        "validation_images": len(val_idx),
        "holdout_png_bytes": holdout_bytes,
        "best_epoch": best_epoch,
        "best_validation_accuracy": history[best_epoch - 1]["val_accuracy"],
        "training_seconds": training_seconds,
        "history": history,
        "onnx_bytes": os.path.getsize(onnx_path),
        "onnx_sha256": sha256_of(onnx_path),
        "onnx_opset": OPSET,
        "onnx_ir_version": IR_VERSION,
        "labels_bytes": os.path.getsize(labels_path),
        "labels_sha256": sha256_of(labels_path),
        "torch_version": torch.__version__,
        "sklearn_version": sklearn.__version__,
        "onnx_version": onnx.__version__,
        "opencv_version": cv2.__version__,
        "python_version": platform.python_version(),
        "cpu": cpu_name(),
    }
    metrics.update(result)
    if metrics["holdout_images"] != len(holdout_idx):
        raise RuntimeError("hold-out folder holds files that this run did not write")
    metrics_path = args.metrics or os.path.join(args.model_dir, METRICS_FILE)
    with open(metrics_path, "w") as f:
        json.dump(metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    write_readme(os.path.join(args.model_dir, README_FILE), metrics)
    print(json.dumps({k: v for k, v in metrics.items() if k != "history"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

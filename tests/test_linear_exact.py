"""Bilinear resize bit for bit: edged's CPU path, OpenCV's INTER_LINEAR_EXACT and the numpy
reference of the CUDA kernel (edged/gpu/linear_tables.py, edged/gpu/reference.py).

The CUDA kernel is checked against the reference by tests/test_gpu_kernels_host.py (compiled
for the CPU) and tests/test_gpu_cuda.py (on a GPU); with this file, a BGR frame gives the same
tensor on the CPU path and on the GPU, so the detector sees the same input either way.
"""

import os

import numpy as np
import pytest

from edged.gpu import linear_tables, reference
from edged.tasks.contract import InputContract
from edged.tasks.preprocess import preprocess_image

from .conftest import REPO

cv2 = pytest.importorskip("cv2")

#: up- and down-scaling, exact halves and doubles, odd sizes, 1 pixel wide or high
SIZES = [(1, 1), (1, 7), (7, 1), (2, 2), (3, 5), (17, 9), (101, 77), (224, 224), (640, 480),
         (768, 576), (960, 544), (1280, 720), (1920, 1080)]  # fmt: skip
TARGETS = [(1, 1), (1, 5), (5, 1), (2, 3), (32, 24), (160, 120), (224, 224), (300, 300),
           (960, 544), (384, 288)]  # fmt: skip


def _contract(dst, order="rgb", dtype="float32"):
    return InputContract(dst[0], dst[1], channel_order=order, scale=1 / 255.0,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         resize="linear", dtype=dtype)  # fmt: skip


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_numpy_twin_equals_inter_linear_exact(channels):
    rng = np.random.default_rng(channels)
    cases = 0
    for sw, sh in SIZES[:9]:
        shape = (sh, sw) if channels == 1 else (sh, sw, channels)
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        halves = (max(1, sw // 2), max(1, sh // 2))
        for dw, dh in TARGETS + [(sw * 2, sh * 2), halves, (sw, sh + 1)]:
            if (dw, dh) == (sw, sh):
                continue  # cv2.resize copies; the CPU path does not resize either
            want = cv2.resize(image, (dw, dh), interpolation=cv2.INTER_LINEAR_EXACT)
            got = linear_tables.resize(image, dw, dh)
            np.testing.assert_array_equal(got, want, err_msg=f"{(sw, sh)} -> {(dw, dh)}")
            cases += 1
    assert cases > 100


def test_extreme_weights_round_as_opencv():
    """2 -> 512 pixels puts fractions on exact halves of 1/256 (rounded half to even), and a
    smooth ramp exercises every weight."""
    ramp = np.tile(np.arange(256, dtype=np.uint8), (3, 1))
    for image, dst in (
        (np.array([[0, 255], [255, 0]], np.uint8), (512, 512)),
        (np.array([[3, 250]], np.uint8), (1024, 3)),
        (ramp, (999, 7)),
        (ramp, (37, 2)),
    ):
        want = cv2.resize(image, dst, interpolation=cv2.INTER_LINEAR_EXACT)
        np.testing.assert_array_equal(linear_tables.resize(image, *dst), want)


def test_table_words_hold_tap_and_weight():
    words = linear_tables.axis_table(4, 8)  # 2x up: f = i / 2 - 0.25
    first = (words >> linear_tables.SHIFT).tolist()
    weight = (words & ((1 << linear_tables.SHIFT) - 1)).tolist()
    assert first == [0, 0, 0, 1, 1, 2, 2, 3]  # left border, inside, right border
    assert weight == [0, 64, 192, 64, 192, 64, 192, 0]
    assert not words.flags.writeable
    tables = linear_tables.frame_tables(4, 3, 8, 5)
    assert tables.dtype == np.int32 and tables.shape == (13,)
    np.testing.assert_array_equal(tables[8:], linear_tables.axis_table(3, 5))


@pytest.mark.parametrize("order", ["rgb", "bgr"])
def test_cpu_path_equals_the_reference_bit_for_bit_on_random_frames(order):
    rng = np.random.default_rng(7 if order == "rgb" else 8)
    cases = 0
    for sw, sh in SIZES:
        image = rng.integers(0, 256, (sh, sw, 3), dtype=np.uint8)
        for dst in TARGETS[::2] if sw * sh > 500_000 else TARGETS:
            contract = _contract(dst, order)
            got = preprocess_image(image, contract)
            np.testing.assert_array_equal(got, reference.preprocess(image, "bgr", contract),
                                          err_msg=f"{(sw, sh)} -> {dst} {order}")  # fmt: skip
            cases += 1
    assert cases > 100


def test_cpu_path_equals_the_reference_for_gray_and_bgra_frames():
    rng = np.random.default_rng(9)
    contract = _contract((160, 120))
    gray = rng.integers(0, 256, (77, 101), dtype=np.uint8)
    bgra = rng.integers(0, 256, (77, 101, 4), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_image(gray, contract),
                                  reference.preprocess(gray, "gray", contract))  # fmt: skip
    np.testing.assert_array_equal(preprocess_image(bgra, contract),
                                  reference.preprocess(bgra, "bgrx", contract))  # fmt: skip


def test_cpu_path_equals_the_reference_on_demo_clip_frames():
    """Real frames of the demo clip (768x576) at the demo detector's and classifier's sizes."""
    cap = cv2.VideoCapture(os.path.join(REPO, "tests", "data", "vtest", "holdout.mp4"))
    frames = []
    while len(frames) < 12:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    assert len(frames) == 12, "the demo clip has fewer than 12 frames"
    for dst in ((960, 544), (224, 224), (480, 272)):
        contract = _contract(dst)
        for i, image in enumerate(frames):
            np.testing.assert_array_equal(preprocess_image(image, contract),
                                          reference.preprocess(image, "bgr", contract),
                                          err_msg=f"frame {i} -> {dst}")  # fmt: skip

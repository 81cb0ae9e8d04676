"""The CUDA kernels' arithmetic and indexing, run on the CPU, against the numpy reference.

g++ compiles ``edged/gpu/kernels.cu`` as C++ with host stand-ins for the CUDA built-ins
(tests/cuda_host/shim.h; one loop iteration per CUDA thread, tests/cuda_host/launch.cpp), so
that CI, which has no GPU, checks every pixel format, both resizes and both output types, and
the DetectNet_v2 decode, bit for bit. The GPU itself is checked by tests/test_gpu_cuda.py.
"""

import ctypes
import os
import shutil
import subprocess

import numpy as np
import pytest

from edged.gpu import formats as fmts
from edged.gpu import linear_tables, reference
from edged.gpu.compiler import SOURCE_FILE
from edged.tasks.contract import InputContract

from .frames import FORMATS, from_bgr, random_frame

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda_host")
pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="no g++ (Debian: g++)")


@pytest.fixture(
    scope="module",
    params=[(0, 1), (1, 4), (1, 3)],
    ids=["byte-loads-1-column", "wide-loads-4-columns", "wide-loads-3-columns"],
)
def lib(tmp_path_factory, request):
    """kernels.cu built for the host with EDGED_WIDE_LOADS and EDGED_COLUMNS as given."""
    wide, columns = request.param
    out = str(tmp_path_factory.mktemp("kernels") / "kernels_host.so")
    cmd = ["g++", "-std=c++14", "-O2", "-ffp-contract=off", "-shared", "-fPIC",
           f"-DEDGED_WIDE_LOADS={wide}", f"-DEDGED_COLUMNS={columns}",
           "-I", HERE, "-I", os.path.dirname(SOURCE_FILE), os.path.join(HERE, "launch.cpp"),
           "-o", out]  # fmt: skip
    done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    assert done.returncode == 0, done.stdout.decode("utf-8", "replace")
    return ctypes.CDLL(out)


def host_preprocess(lib, frames, names, contract, grid_x=0):
    descs = np.zeros((len(frames), 9), dtype=np.int64)
    keep = []
    for i, (frame, name) in enumerate(zip(frames, names)):
        frame = np.ascontiguousarray(frame)
        pf = fmts.get(name)
        geo = fmts.planes(frame, pf)
        # the sampling tables the CUDA pre-processor uploads for this source size
        tables = linear_tables.frame_tables(geo.width, geo.height, contract.width, contract.height)
        keep.extend([frame, tables])
        base = frame.ctypes.data
        descs[i] = (base, base + geo.offset1 if geo.offset1 else 0,
                    base + geo.offset2 if geo.offset2 else 0, geo.width, geo.height, geo.pitch,
                    geo.pitch1, pf.code,
                    tables.ctypes.data if contract.resize == "linear" else 0)  # fmt: skip
    out = np.full((len(frames), 3, contract.height, contract.width), np.nan, contract.dtype)
    a, b = contract.affine()
    ab = np.concatenate([a, b]).astype(np.float32)
    lib.host_preprocess(
        ctypes.c_int(contract.resize == "linear"), ctypes.c_int(contract.dtype == "float16"),
        ctypes.c_void_p(descs.ctypes.data), ctypes.c_void_p(out.ctypes.data),
        ctypes.c_int(len(frames)), ctypes.c_int(contract.width), ctypes.c_int(contract.height),
        ctypes.c_void_p(ab.ctypes.data), ctypes.c_int(0 if contract.rgb else 1),
        ctypes.c_uint(grid_x),
    )  # fmt: skip
    return out


@pytest.mark.parametrize("wide_grid", [False, True], ids=["fewest-blocks", "block-per-32-columns"])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("resize", ["nearest", "linear"])
def test_kernel_on_the_host_equals_the_reference_bit_for_bit(lib, resize, dtype, wide_grid):
    """Every pixel of every format, with the grid the host sizes and with a wider one."""
    rng = np.random.default_rng(11)
    cases = (((96, 54), (40, 30), "rgb"), ((64, 48), (100, 70), "bgr"),
             ((38, 22), (38, 22), "rgb"), ((58, 34), (21, 13), "bgr"))  # fmt: skip
    for (sw, sh), (dw, dh), order in cases:
        contract = InputContract(dw, dh, channel_order=order, mean=(0.485, 0.456, 0.406),
                                 std=(0.229, 0.224, 0.225), resize=resize, dtype=dtype)  # fmt: skip
        frames = [random_frame(rng, fmt, sw, sh) for fmt in FORMATS]
        got = host_preprocess(lib, frames, FORMATS, contract, (dw + 31) // 32 if wide_grid else 0)
        for i, fmt in enumerate(FORMATS):
            want = reference.preprocess(frames[i], fmt, contract)
            np.testing.assert_array_equal(got[i], want, err_msg=f"{fmt} {resize} {dtype}")


@pytest.mark.parametrize("resize", ["nearest", "linear"])
def test_kernel_on_the_host_equals_the_reference_on_edge_sizes(lib, resize):
    """1 pixel wide or high, odd sizes, exact halves and doubles, more than 2x either way; the
    packed formats (YUV needs even sizes: the other test covers it)."""
    rng = np.random.default_rng(13)
    names = ("bgr", "rgb", "bgrx", "rgbx", "gray")
    cases = (((1, 1), (3, 2)), ((77, 1), (5, 3)), ((1, 9), (4, 4)), ((3, 5), (64, 48)),
             ((192, 108), (96, 54)), ((96, 54), (192, 108)), ((101, 77), (160, 120)),
             ((640, 480), (61, 37)), ((7, 3), (1, 1)))  # fmt: skip
    for (sw, sh), (dw, dh) in cases:
        contract = InputContract(dw, dh, channel_order="rgb", scale=1 / 255.0, resize=resize)
        frames = [random_frame(rng, fmt, sw, sh) for fmt in names]
        got = host_preprocess(lib, frames, names, contract)
        for i, fmt in enumerate(names):
            want = reference.preprocess(frames[i], fmt, contract)
            np.testing.assert_array_equal(got[i], want, err_msg=f"{fmt} {(sw, sh)} -> {(dw, dh)}")


def test_kernel_on_the_host_equals_the_reference_on_a_demo_clip_frame(lib):
    """A real frame (768x576) in every format, to the demo detector's 960x544, bilinear."""
    cv2 = pytest.importorskip("cv2")
    cap = cv2.VideoCapture(os.path.join(HERE, "..", "data", "vtest", "holdout.mp4"))
    ok, image = cap.read()
    cap.release()
    assert ok, "no frame read from the demo clip"
    frames = [from_bgr(image, fmt) for fmt in FORMATS]
    contract = InputContract(960, 544, scale=1 / 255.0, resize="linear")
    got = host_preprocess(lib, frames, FORMATS, contract)
    for i, fmt in enumerate(FORMATS):
        np.testing.assert_array_equal(got[i], reference.preprocess(frames[i], fmt, contract), fmt)

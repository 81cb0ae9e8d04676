"""The CUDA kernels compile for the Jetsons' GPUs on a machine without one (CI).

NVRTC from the ``nvidia-cuda-nvrtc-cu12`` wheel (through ctypes) turns ``edged/gpu/kernels.cu``
into PTX for compute_53 (Nano), compute_72 (Xavier) and compute_87 (Orin), and ``ptxas`` from
the ``nvidia-cuda-nvcc-cu12`` wheel assembles each into machine code for sm_53/72/87: what
nvcc does on the device. Both wheels are in the test extra on Python >= 3.10 (x86-64 Linux).
"""

import ctypes
import glob
import os
import subprocess
import sys

import pytest

from edged.gpu.compiler import read_source

ARCHS = ("53", "72", "87")
KERNELS = (
    "edged_preprocess_nearest_float32",
    "edged_preprocess_linear_float32",
    "edged_preprocess_nearest_float16",
    "edged_preprocess_linear_float16",
    "edged_detectnet_select",
)


def _wheel_dir(package: str) -> str:
    try:
        module = __import__(f"nvidia.{package}", fromlist=["_"])
    except ImportError:
        return ""
    paths = list(getattr(module, "__path__", []))
    return paths[0] if paths else ""


NVRTC_DIR = _wheel_dir("cuda_nvrtc")
NVCC_DIR = _wheel_dir("cuda_nvcc")
needs_wheels = pytest.mark.skipif(
    not (NVRTC_DIR and NVCC_DIR),
    reason="nvidia-cuda-nvrtc-cu12 / nvidia-cuda-nvcc-cu12 not installed (test extra, py>=3.10)",
)


def _nvrtc() -> ctypes.CDLL:
    libs = sorted(glob.glob(os.path.join(NVRTC_DIR, "lib", "libnvrtc.so.*")))
    assert libs, f"no libnvrtc.so in {NVRTC_DIR}/lib"
    return ctypes.CDLL(libs[0])


def _check(lib: ctypes.CDLL, code: int, what: str, log: str = "") -> None:
    if code != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        pytest.fail(f"{what}: {lib.nvrtcGetErrorString(code).decode()}\n{log}")


def nvrtc_ptx(source: str, arch: str) -> str:
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernels.cu",
                                       0, None, None), "nvrtcCreateProgram")  # fmt: skip
    try:
        opts = [f"--gpu-architecture=compute_{arch}".encode(), b"-default-device"]
        argv = (ctypes.c_char_p * len(opts))(*opts)
        code = lib.nvrtcCompileProgram(prog, len(opts), argv)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        _check(lib, code, f"NVRTC compute_{arch}", log.value.decode("utf-8", "replace"))
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        _check(lib, lib.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        return ptx.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


@needs_wheels
@pytest.mark.parametrize("arch", ARCHS)
def test_kernels_compile_to_ptx_and_assemble_for_jetson_gpus(arch, tmp_path):
    ptx = nvrtc_ptx(read_source(), arch)
    for name in KERNELS:
        assert f".entry {name}(" in ptx, f"{name} missing from the PTX for compute_{arch}"
    ptx_file = tmp_path / f"kernels_{arch}.ptx"
    ptx_file.write_text(ptx)
    ptxas = os.path.join(NVCC_DIR, "bin", "ptxas")
    out = subprocess.run(
        [ptxas, f"-arch=sm_{arch}", "-O3", "-v", str(ptx_file), "-o", str(tmp_path / "k.cubin")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300,
    )  # fmt: skip
    report = out.stdout.decode("utf-8", "replace")
    assert out.returncode == 0, report
    assert (tmp_path / "k.cubin").stat().st_size > 0
    # no local-memory spills in the hot kernels (they would cost bandwidth on a Nano)
    assert "bytes spill stores" in report
    for line in report.splitlines():
        if "spill" in line:
            assert " 0 bytes spill stores" in line and " 0 bytes spill loads" in line, line
    sys.stdout.write(report)

"""The numpy reference of the CUDA pre-processor, and the pre-processor selection, without a GPU."""

import logging
import os

import numpy as np
import pytest

from edged.cudacontext import CudaUnavailableError
from edged.gpu import formats, reference
from edged.gpu.compiler import cache_key, find_nvcc
from edged.pipeline import preprocessors
from edged.tasks.contract import InputContract

from .frames import FORMATS, from_bgr, random_frame
from .gpu_support import HAVE_CUDA

cv2 = pytest.importorskip("cv2")
no_cuda_only = pytest.mark.skipif(HAVE_CUDA, reason="this machine has CUDA: tests the fallback")


@pytest.mark.parametrize(
    "src,dst", [((1920, 1080), (960, 544)), ((1280, 720), (224, 224)), ((101, 77), (160, 120))]
)
def test_linear_reference_is_inter_linear_exact_and_within_one_level_of_inter_linear(src, dst):
    """The reference's bilinear resize is OpenCV's bit-exact one; plain INTER_LINEAR (11-bit
    weights, another rounding) is at most one level away."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    ours = reference.resize_rgb(reference.to_rgb(image, "bgr"), dst[0], dst[1], "linear")
    exact = cv2.resize(image, dst, interpolation=cv2.INTER_LINEAR_EXACT)[:, :, ::-1]
    np.testing.assert_array_equal(ours, exact)
    linear = cv2.resize(image, dst, interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    diff = int(np.abs(ours.astype(np.int16) - linear).max())
    print(f"{src} -> {dst}: reference == INTER_LINEAR_EXACT bit for bit; difference to "
          f"INTER_LINEAR: {diff} levels")  # fmt: skip
    assert diff <= 1


def test_nearest_index_is_jetson_inference_rounding():
    for dst_n, src_n in ((544, 1080), (224, 720), (960, 1920), (300, 77), (7, 1000)):
        scale = np.float32(src_n) / np.float32(dst_n)
        expected = [min(int(np.float32(i) * scale), src_n - 1) for i in range(dst_n)]
        assert reference.nearest_index(dst_n, src_n).tolist() == expected


@pytest.mark.parametrize("fmt", ["nv12", "i420", "yuyv"])
def test_yuv_conversion_is_within_one_level_of_opencv(fmt):
    rng = np.random.default_rng(2)
    image = cv2.GaussianBlur(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), (5, 5), 0)
    frame = from_bgr(image, fmt)
    code = {"nv12": cv2.COLOR_YUV2RGB_NV12, "i420": cv2.COLOR_YUV2RGB_I420,
            "yuyv": cv2.COLOR_YUV2RGB_YUY2}[fmt]  # fmt: skip
    theirs = cv2.cvtColor(frame, code).astype(np.int16)
    ours = reference.to_rgb(frame, fmt)
    assert ours.dtype == np.uint8  # rounded to 8 bits before the resize, as the kernel does
    assert np.abs(ours - theirs).max() <= 1


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_has_a_reference(fmt):
    rng = np.random.default_rng(3)
    contract = InputContract(32, 24, channel_order="bgr", mean=(1, 2, 3), std=(2, 3, 4))
    out = reference.preprocess(random_frame(rng, fmt, 64, 48), fmt, contract)
    assert out.shape == (3, 24, 32) and out.dtype == np.float32 and np.isfinite(out).all()


def test_frames_of_the_wrong_shape_are_one_line_errors():
    with pytest.raises(Exception, match=r"nv12 frames are \(H\*3/2\) x W"):
        formats.planes(np.zeros((10, 10), np.uint8), formats.get("nv12"))
    with pytest.raises(Exception, match="bgrx frames are H x W x 4"):
        formats.planes(np.zeros((10, 10, 3), np.uint8), formats.get("bgrx"))
    with pytest.raises(Exception, match="unknown pixel format 'p010'"):
        formats.get("p010")


def test_kernel_cache_key_changes_with_source_arch_and_compiler():
    base = cache_key("src", ["-O3"], "sm_53", "nvcc 10.2")
    assert base != cache_key("src2", ["-O3"], "sm_53", "nvcc 10.2")
    assert base != cache_key("src", ["-O3"], "sm_72", "nvcc 10.2")
    assert base != cache_key("src", ["-O3"], "sm_53", "nvcc 11.4")
    assert base == cache_key("src", ["-O3"], "sm_53", "nvcc 10.2")


def test_nvcc_is_found_beyond_path_and_its_absence_is_named(tmp_path):
    cuda_bin = tmp_path / "cuda" / "bin"
    cuda_bin.mkdir(parents=True)
    nvcc = cuda_bin / "nvcc"
    nvcc.write_text("#!/bin/sh\n")
    nvcc.chmod(0o755)
    assert find_nvcc({"PATH": "", "CUDA_HOME": str(tmp_path / "cuda")}) == str(nvcc)
    # a systemd service's PATH lacks /usr/local/cuda/bin: the fixed folders are searched too
    assert find_nvcc({"PATH": "/usr/bin"}, dirs=[str(tmp_path / "x"), str(cuda_bin)]) == str(nvcc)
    with pytest.raises(CudaUnavailableError, match=r"nvcc \(the CUDA compiler\) not found in "):
        find_nvcc({"PATH": str(tmp_path), "CUDA_HOME": str(tmp_path / "none")}, dirs=["/none"])


@no_cuda_only
def test_auto_falls_back_to_the_cpu_with_one_log_line(caplog):
    contract = InputContract(32, 24)
    with caplog.at_level(logging.INFO, logger="edged.pipeline.preprocessors"):
        pre = preprocessors.create("auto", contract, 2, "demo")
    assert pre.name == "cpu"
    lines = [r.getMessage() for r in caplog.records if r.name == "edged.pipeline.preprocessors"]
    assert len(lines) == 1 and "pre-processing on the CPU (preprocess: auto, no CUDA:" in lines[0]
    frame = np.random.default_rng(4).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert pre.run([frame, frame]).shape == (2, 3, 24, 32)


@no_cuda_only
def test_explicit_cuda_without_cuda_is_an_error():
    with pytest.raises(CudaUnavailableError):
        preprocessors.create("cuda", InputContract(32, 24), 1)


def test_unknown_choice_is_a_config_error():
    with pytest.raises(Exception, match="preprocess must be one of auto, cpu, cuda"):
        preprocessors.create("tpu", InputContract(32, 24), 1)


@no_cuda_only
def test_infer_with_cuda_and_no_cuda_exits_2_with_one_line(tmp_path):
    from .conftest import REPO, run_cli

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((48, 64, 3), np.uint8))
    model = os.path.join(REPO, "models", "resnet18-digits")
    result = run_cli(["infer", "--model", os.path.join(model, "resnet18.onnx"), "--labels",
                      os.path.join(model, "labels.txt"), "--preprocess", "cuda",
                      str(image)])  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edged: error: "), result.stderr
    assert "Traceback" not in result.stderr

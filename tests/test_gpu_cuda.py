"""The CUDA pre-processor, GPU decode and pycuda runtime on a real GPU (marker ``gpu``).

Every kernel and input format against the numpy reference (edged/gpu/reference.py) on random
and real frames, bit for bit (nearest and bilinear, float32 and float16), and BGR frames against
edged's CPU path (edged/tasks/preprocess.py) bit for bit; the output poisoned with NaN before
each run so an unwritten element fails. The GPU DetectNet
decode against the numpy decode; PycudaRuntime and the calibration uploader from several
threads; buffers flat over 100 create/close cycles; no pycuda clean-up warning at exit;
``edged infer --preprocess cuda`` against ``cpu`` on the demo detector and classifier.
"""

import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from edged.tasks.contract import InputContract

from .conftest import REPO, run_cli
from .frames import FORMATS, from_bgr, random_frame
from .gpu_support import requires_gpu

pytestmark = requires_gpu

SIZES = [((1920, 1080), (960, 544)), ((1280, 720), (224, 224)), ((102, 78), (160, 120))]


@pytest.fixture(scope="module")
def ctx():
    from edged.cudacontext import shared_context

    return shared_context()


def _poison(pre, ctx):
    with ctx.activated():
        ctx.cuda.memset_d8(pre.output_pointer, 0xFF, pre.output_nbytes)  # NaN in f32 and f16


def _check(got, want, resize, dtype, what):
    """Bit for bit: the resize is integer arithmetic (bilinear: OpenCV's INTER_LINEAR_EXACT),
    then one float32 multiply and one add, rounded to float16 the way numpy rounds."""
    assert np.isfinite(got.astype(np.float32)).all(), f"{what}: unwritten (NaN) elements"
    np.testing.assert_array_equal(got, want, err_msg=f"{what} ({resize} {dtype})")


def _contract(dst, resize, dtype, order):
    return InputContract(dst[0], dst[1], channel_order=order, scale=1 / 255.0,
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         resize=resize, dtype=dtype)  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("resize", ["nearest", "linear"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_matches_the_reference_on_random_frames(ctx, fmt, resize, dtype):
    from edged.gpu import reference
    from edged.gpu.preprocessor import CudaPreprocessor

    rng = np.random.default_rng(hash((fmt, resize, dtype)) % 2**32)
    for (src, dst), order in zip(SIZES, ("rgb", "bgr", "rgb")):
        contract = _contract(dst, resize, dtype, order)
        pre = CudaPreprocessor(contract, max_batch=2, context=ctx)
        try:
            frames = [random_frame(rng, fmt, src[0], src[1]) for _ in range(2)]
            _poison(pre, ctx)
            got = pre.run(frames, [fmt, fmt])
            for i, frame in enumerate(frames):
                want = reference.preprocess(frame, fmt, contract)
                _check(got[i], want, resize, dtype, f"{fmt} {src}->{dst} {resize} {dtype} #{i}")
        finally:
            pre.close()


def _real_frames(count):
    import cv2

    cap = cv2.VideoCapture(os.path.join(REPO, "tests", "data", "vtest", "holdout.mp4"))
    frames = []
    while len(frames) < count:
        ok, image = cap.read()
        if not ok:
            break
        h, w = image.shape[:2]
        frames.append(np.ascontiguousarray(image[: h // 2 * 2, : w // 2 * 2]))
    cap.release()
    assert frames, "no frame read from the demo clip"
    return frames


@pytest.mark.parametrize("mapped", [False, True], ids=["copied", "mapped"])
@pytest.mark.parametrize("resize", ["nearest", "linear"])
def test_one_launch_of_mixed_formats_matches_the_reference_on_real_frames(ctx, resize, mapped):
    """Several streams (each its own format) pre-processed by one launch; frames uploaded, or
    read in place from mapped page-locked memory (what a Jetson's integrated GPU does)."""
    from edged.gpu import reference
    from edged.gpu.preprocessor import CudaPreprocessor

    images = _real_frames(len(FORMATS))
    frames = [from_bgr(images[i % len(images)], fmt) for i, fmt in enumerate(FORMATS)]
    for dtype in ("float32", "float16"):
        contract = _contract((960, 544), resize, dtype, "rgb")
        pre = CudaPreprocessor(contract, max_batch=len(frames), context=ctx, mapped=mapped)
        try:
            _poison(pre, ctx)
            got = pre.run(frames, list(FORMATS)).copy()  # run's buffer is freed by close
        finally:
            pre.close()
        for i, fmt in enumerate(FORMATS):
            want = reference.preprocess(frames[i], fmt, contract)
            _check(got[i], want, resize, dtype, f"real {fmt} {resize} {dtype}")


def test_pycuda_runtime_from_several_threads_at_once():
    from edged.backends.tensorrt_backend import PycudaRuntime

    runtime = PycudaRuntime()
    errors = []

    def work(seed):
        try:
            rng = np.random.default_rng(seed)
            for _ in range(20):
                with runtime.activated():
                    data = rng.random((64, 1024), dtype=np.float32)
                    host_in = runtime.pagelocked(data.shape, data.dtype)
                    host_out = runtime.pagelocked(data.shape, data.dtype)
                    host_in[...] = data
                    buf = runtime.device_alloc(data.nbytes)
                    stream = runtime.stream()
                    runtime.htod_async(buf, host_in, stream)
                    runtime.dtoh_async(host_out, buf, stream)
                    stream.synchronize()
                    assert np.array_equal(host_out, data)
                    buf.free()
                    host_in.base.free()
                    host_out.base.free()
                    del stream
        except Exception as e:  # noqa: BLE001 -- collected, then failed on the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,), name=f"cuda-{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_calibration_uploader_from_another_thread(ctx):
    from edged.engine.calibration import pycuda_uploader

    upload = pycuda_uploader()
    batches = [np.random.default_rng(i).random((2, 3, 8, 8), dtype=np.float32) for i in range(3)]
    seen = []

    def builder_thread():  # TensorRT calls get_batch on its own thread
        for batch in batches:
            pointer = upload(batch)
            back = np.empty_like(batch)
            with ctx.activated():
                ctx.cuda.memcpy_dtoh(back, pointer)
            seen.append(np.array_equal(back, batch))
        upload.close()

    t = threading.Thread(target=builder_thread, name="calibration")
    t.start()
    t.join(120)
    assert seen == [True, True, True]


def test_device_memory_is_flat_over_100_create_close_cycles(ctx):
    from edged.gpu.preprocessor import CudaPreprocessor

    contract = _contract((960, 544), "linear", "float32", "rgb")
    frame = np.random.default_rng(9).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)

    def cycle():
        pre = CudaPreprocessor(contract, max_batch=4, context=ctx)
        pre.run([frame, frame])
        pre.close()

    cycle()  # module load and first-use allocations happen once
    with ctx.activated():
        before = ctx.cuda.mem_get_info()[0]
    for _ in range(100):
        cycle()
    with ctx.activated():
        after = ctx.cuda.mem_get_info()[0]
    print(f"free device memory before {before}, after 100 cycles {after}")
    assert after >= before - (2 << 20), f"{before - after} bytes of device memory lost"


CLEANUP_SCRIPT = """
import threading, numpy as np
from edged.gpu.preprocessor import CudaPreprocessor
from edged.tasks.contract import InputContract
def work():
    pre = CudaPreprocessor(InputContract(224, 224), max_batch=2)
    pre.run([np.zeros((720, 1280, 3), np.uint8)] * 2)
    pre.close()
threads = [threading.Thread(target=work, name="w%d" % i) for i in range(3)]
[t.start() for t in threads]
[t.join() for t in threads]
print("ok")
"""


def test_no_pycuda_cleanup_warning_when_threads_create_and_close():
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", CLEANUP_SCRIPT], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
    assert "could not be cleaned up" not in out.stderr, out.stderr
    assert "context stack" not in out.stderr.lower(), out.stderr


def _infer(args):
    result = run_cli(["-v", "infer", "--json"] + args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_infer_cuda_equals_cpu_on_the_demo_detector():
    model = os.path.join(REPO, "models", "peoplenet-demo")
    args = ["--model", os.path.join(model, "peoplenet_demo.onnx"), "--labels",
            os.path.join(model, "labels.txt"), os.path.join(REPO, "tests", "data", "vtest",
                                                            "holdout.mp4")]  # fmt: skip
    cpu, _ = _infer(args + ["--preprocess", "cpu"])
    cuda, log = _infer(args + ["--preprocess", "cuda"])
    assert "pre-processing on CUDA" in log
    assert len(cpu) == len(cuda) > 0
    total = 0
    for a, b in zip(cpu, cuda):
        # same detections, order aside (equal confidences may swap): each CPU box has a CUDA
        # box of the same label within 1 px, and the counts are equal
        assert len(a["detections"]) == len(b["detections"]), (a, b)
        left = list(b["detections"])
        for da in a["detections"]:
            near = [db for db in left if db["label"] == da["label"]]
            assert near, (da, b)
            best = min(near, key=lambda db: np.abs(np.subtract(da["bbox"], db["bbox"])).max())
            assert np.abs(np.subtract(da["bbox"], best["bbox"])).max() <= 1.0, (da, best)
            left.remove(best)
            total += 1
    assert total > 0


def test_infer_cuda_equals_cpu_on_the_demo_classifier():
    args = ["--model", os.path.join(REPO, "models", "resnet18-digits", "resnet18.onnx"),
            "--labels", os.path.join(REPO, "models", "resnet18-digits", "labels.txt"),
            os.path.join(REPO, "tests", "data", "digits", "test")]  # fmt: skip
    cpu, _ = _infer(args + ["--preprocess", "cpu"])
    cuda, log = _infer(args + ["--preprocess", "cuda"])
    assert "pre-processing on CUDA" in log
    assert len(cpu) == len(cuda) > 0
    for a, b in zip(cpu, cuda):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in b["top"]], (a, b)


def test_gpu_identity_probe_feeds_the_engine_fingerprint(ctx):
    """The engine cache's fingerprint takes the GPU from pycuda; nvidia-smi must agree."""
    from edged.engine.platform import probe_gpu, probe_nvidia_smi

    info = probe_gpu()
    assert info.source == "pycuda", info
    assert "sm_" + info.compute_capability.replace(".", "") == ctx.arch
    assert info.name == ctx.name
    smi = probe_nvidia_smi()
    if smi is not None:  # absent on a Jetson; the lent GPU machines have it
        assert (smi.name, smi.compute_capability) == (info.name, info.compute_capability)


def test_run_device_writes_into_a_given_device_buffer(ctx):
    """What a TensorRT engine's input buffer receives (TensorRTBackend.input_buffer)."""
    from edged.gpu import reference
    from edged.gpu.preprocessor import CudaPreprocessor

    contract = _contract((224, 224), "linear", "float32", "rgb")
    frames = [random_frame(np.random.default_rng(i), "nv12", 1280, 720) for i in range(2)]
    pre = CudaPreprocessor(contract, max_batch=2, context=ctx)
    try:
        with ctx.activated():
            buf = ctx.cuda.mem_alloc(2 * 3 * 224 * 224 * 4)
            assert pre.run_device(frames, "nv12", dst=int(buf)) == int(buf)
            got = np.empty((2, 3, 224, 224), np.float32)
            ctx.cuda.memcpy_dtoh(got, buf)
            buf.free()
    finally:
        pre.close()
    for i in range(2):
        want = reference.preprocess(frames[i], "nv12", contract)
        np.testing.assert_array_equal(got[i], want)


@pytest.mark.parametrize("resize", ["nearest", "linear"])
def test_bgr_frames_give_the_cpu_paths_tensor_bit_for_bit(ctx, resize):
    """``pipeline.preprocess: cuda`` and ``cpu`` feed the model the same input: random frames
    of several sizes (up and down, odd) and demo clip frames (768x576), both channel orders."""
    from edged.gpu.preprocessor import CudaPreprocessor
    from edged.tasks.preprocess import preprocess_image

    rng = np.random.default_rng(21)
    cases = [(random_frame(rng, "bgr", w, h), dst) for (w, h), dst in SIZES]
    cases += [(random_frame(rng, "bgr", 77, 1), (5, 3)), (random_frame(rng, "bgr", 3, 5), (64, 48))]
    cases += [(image, (960, 544)) for image in _real_frames(4)]
    for order in ("rgb", "bgr"):
        for frame, dst in cases:
            contract = _contract(dst, resize, "float32", order)
            pre = CudaPreprocessor(contract, max_batch=1, context=ctx)
            try:
                _poison(pre, ctx)
                got = pre.run([frame], ["bgr"])[0].copy()  # run's buffer is freed by close
            finally:
                pre.close()
            what = f"{frame.shape[1]}x{frame.shape[0]} -> {dst} {order}"
            _check(got, preprocess_image(frame, contract), resize, "float32", what)


def test_daemon_runs_with_cuda_preprocessing_and_exits_cleanly(tmp_path):
    """``edged run`` with ``pipeline.preprocess: cuda``: frames inferred, SIGTERM exits 0 with
    no pycuda clean-up warning (the worker's pre-processor is closed after its threads)."""
    import signal

    from .test_daemon import Edged

    model = os.path.join(REPO, "models", "peoplenet-demo")
    config = tmp_path / "edged.yaml"
    config.write_text(
        "log_level: info\nmodels:\n  people:\n"
        f"    path: {os.path.join(model, 'peoplenet_demo.onnx')}\n"
        f"    labels: {os.path.join(model, 'labels.txt')}\n    task: detection\n"
        "streams:\n  clip:\n"
        f"    source: {os.path.join(REPO, 'tests', 'data', 'vtest', 'holdout.mp4')}\n"
        "    model: people\n    loop: true\n"
        "pipeline: {preprocess: cuda, summary_interval_s: 1, drain_timeout_s: 2}\n"
        "metrics: {port: 0}\n"
    )
    edged = Edged(str(config))
    try:
        edged.wait_for("pre-processing on CUDA (preprocess: cuda)", timeout=120)
        after, inferred = 0, False
        for _ in range(20):  # the first summaries may come before the first inference
            at = edged.wait_for("stream clip: ", timeout=60, after=after)
            inferred = " 0.0 inferred/s" not in edged.lines[at]
            if inferred:
                break
            after = at + 1
        assert inferred, "\n".join(edged.lines)
    finally:
        code = edged.stop(signal.SIGTERM)
    assert code == 0, "\n".join(edged.lines)
    log = "\n".join(edged.lines)
    assert "could not be cleaned up" not in log and "Traceback" not in log, log


@pytest.mark.parametrize(
    "defines",
    ["#define EDGED_WIDE_LOADS 0\n#define EDGED_COLUMNS 1\n",
     "#define EDGED_WIDE_LOADS 1\n#define EDGED_COLUMNS 3\n",
     "#define EDGED_WIDE_LOADS 0\n#define EDGED_COLUMNS 8\n"],
    ids=["byte-loads-1-column", "wide-loads-3-columns", "byte-loads-8-columns"],
)  # fmt: skip
@pytest.mark.parametrize("fmt", FORMATS)
def test_other_builds_match_the_reference(ctx, fmt, defines):
    """The kernels.cu builds benchmarks/gpu_preprocess.py compares (loads, columns a thread)."""
    from edged.gpu import reference
    from edged.gpu.compiler import compile_cubin, read_source
    from edged.gpu.preprocessor import CudaPreprocessor

    rng = np.random.default_rng(21)
    contract = _contract((160, 120), "linear", "float32", "rgb")
    frames = [random_frame(rng, fmt, w, h) for w, h in ((1918, 1078), (322, 240))]
    pre = CudaPreprocessor(contract, max_batch=2, context=ctx)
    try:
        with ctx.activated():
            module = ctx.cuda.module_from_buffer(compile_cubin(defines + read_source(), ctx.arch))
            pre.use_module(module)
        _poison(pre, ctx)
        got = pre.run(frames, [fmt, fmt]).copy()  # run's buffer is freed by close
    finally:
        pre.close()
        with ctx.activated():
            del module  # unloaded with the context pushed
    for i, frame in enumerate(frames):
        _check(got[i], reference.preprocess(frame, fmt, contract), "linear", "float32", fmt)

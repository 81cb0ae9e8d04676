"""GPU pre-processing benchmark: the fused kernel against a device copy, two passes and OpenCV.

    python -m benchmarks.gpu_preprocess [--out DIR] [--repeats N]

Measured in one run on one GPU, with CUDA events around each launch (median of --repeats,
after warm-up), rotating among several input sets so no run is served from L2:

* the fused kernel (edged/gpu/kernels.cu) on a batch of 16 frames, its GB/s counting the
  frames' bytes read once and the output written once;
* a device-to-device copy moving the same number of bytes (read + written counted the same
  way: a copy of B/2 bytes moves B), the bandwidth ceiling;
* the two-pass path of jetson-utils and DeepStream (benchmarks/twopass.cu: resize to 8-bit
  RGB, then normalise/reorder), BGR input;
* OpenCV on the CPU (edged's CPU path, edged/tasks/preprocess.py) on one frame;
* the CPU time per frame the calling process spends with the CUDA pre-processor from host
  frames (staging copy, upload, copy back) against the CPU path (time.process_time);
* whether the kernel's bilinear output equals the CPU path's bit for bit on a random frame
  (both are OpenCV's INTER_LINEAR_EXACT: edged/gpu/linear_tables.py), the numpy reference
  equals ``cv2.INTER_LINEAR_EXACT``, and how many levels plain ``INTER_LINEAR`` is away.

Writes gpu_preprocess.md and gpu_preprocess.json to --out (default benchmarks/results).
"""

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Dict

import numpy as np

from edged.cudacontext import shared_context
from edged.gpu import formats as fmts
from edged.gpu.compiler import compile_cubin, read_source
from edged.gpu.preprocessor import BLOCK, CudaPreprocessor
from edged.pipeline.preprocessors import CpuPreprocessor
from edged.tasks.contract import InputContract

BATCH = 16
SETS = 3  # input sets rotated between launches (3 x 100 MB >> 50 MB of L2)
CASES = [((1920, 1080), (960, 544)), ((1280, 720), (224, 224))]
FORMAT_BYTES = {"bgr": 3, "rgb": 3, "bgrx": 4, "rgbx": 4, "gray": 1, "nv12": 1.5, "i420": 1.5,
                "yuyv": 2}  # fmt: skip
TWOPASS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "twopass.cu")


def contract(dst, resize="linear", dtype="float32"):
    return InputContract(dst[0], dst[1], mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                         resize=resize, dtype=dtype)  # fmt: skip


def frame_shape(fmt, w, h):
    if fmt in ("nv12", "i420"):
        return (h * 3 // 2, w)
    channels = {"gray": 0, "yuyv": 2, "bgrx": 4, "rgbx": 4}.get(fmt, 3)
    return (h, w, channels) if channels else (h, w)


class Timer:
    """CUDA events around a callable queued on ``stream``; the median of ``repeats`` in ms."""

    def __init__(self, cuda, stream, repeats, warmup=10):
        self.cuda, self.stream, self.repeats, self.warmup = cuda, stream, repeats, warmup

    def median_ms(self, prepare, work) -> float:
        start, end = self.cuda.Event(), self.cuda.Event()
        times = []  # type: List[float]
        for i in range(self.warmup + self.repeats):
            prepare(i)
            start.record(self.stream)
            work(i)
            end.record(self.stream)
            end.synchronize()
            if i >= self.warmup:
                times.append(end.time_since(start))
        return float(np.median(times))


def device_frames(cuda, rng, fmt, w, h):
    """SETS x BATCH frames in device memory (random bytes): [(pointer, planes, fmt)] per set."""
    shape = frame_shape(fmt, w, h)
    host = rng.integers(0, 256, shape, dtype=np.uint8)
    geo = fmts.planes(host, fmts.get(fmt))
    sets, buffers = [], []
    for _ in range(SETS):
        buf = cuda.mem_alloc(host.nbytes * BATCH)
        host = rng.integers(0, 256, shape, dtype=np.uint8)  # random, never zeros
        for i in range(BATCH):
            cuda.memcpy_htod(int(buf) + i * host.nbytes, np.roll(host, i))
        buffers.append(buf)
        sets.append([(int(buf) + i * host.nbytes, geo, fmt) for i in range(BATCH)])
    return sets, buffers, host.nbytes


#: builds of kernels.cu compared for bgr linear float32 (defines put before the source)
BUILDS = {
    f"{'wide' if wide else 'byte'} loads, {columns} col": (
        f"#define EDGED_WIDE_LOADS {wide}\n#define EDGED_COLUMNS {columns}\n"
    )
    for wide in (0, 1)
    for columns in (1, 2, 4, 8)
}
#: thread-block shapes swept for each build
SHAPES = [(32, 8), (32, 4), (64, 2), (128, 1), (32, 2)]


def build_module(ctx, defines):
    """kernels.cu built with ``defines`` put first."""
    return ctx.cuda.module_from_buffer(compile_cubin(defines + read_source(), ctx.arch))


def bench_kernel(ctx, timer, src, dst, fmt, resize="linear", dtype="float32", block=BLOCK[:2],
                 module=None):  # fmt: skip
    cuda = ctx.cuda
    rng = np.random.default_rng(0)
    pre = CudaPreprocessor(contract(dst, resize, dtype), BATCH, context=ctx, block=block)
    if module is not None:  # the same launch, another build of the kernel
        pre.use_module(module)
    sets, buffers, frame_bytes = device_frames(cuda, rng, fmt, *src)
    out_bytes = BATCH * 3 * dst[0] * dst[1] * np.dtype(dtype).itemsize
    outs = [cuda.mem_alloc(out_bytes) for _ in range(SETS)]
    timer.stream = pre.stream
    ms = timer.median_ms(lambda i: pre.set_device_frames(sets[i % SETS]),
                         lambda i: pre.launch(BATCH, int(outs[i % SETS])))  # fmt: skip
    for b in buffers + outs:
        b.free()
    pre.close()
    moved = frame_bytes * BATCH + out_bytes
    return {"ms": ms, "bytes": moved, "gbps": moved / ms / 1e6}


def bench_copy(ctx, timer, moved):
    cuda = ctx.cuda
    half = int(moved // 2)
    srcs = [cuda.mem_alloc(half) for _ in range(SETS)]
    dsts = [cuda.mem_alloc(half) for _ in range(SETS)]
    for s in srcs:
        cuda.memset_d8(s, 7, half)
    stream = cuda.Stream()
    timer.stream = stream
    ms = timer.median_ms(lambda i: None, lambda i: cuda.memcpy_dtod_async(
        dsts[i % SETS], srcs[i % SETS], half, stream))  # fmt: skip
    for b in srcs + dsts:
        b.free()
    return {"ms": ms, "bytes": 2 * half, "gbps": 2 * half / ms / 1e6}


def bench_twopass(ctx, timer, src, dst):
    cuda = ctx.cuda
    with open(TWOPASS, encoding="utf-8") as f:
        module = cuda.module_from_buffer(compile_cubin(f.read(), ctx.arch))
    resize = module.get_function("twopass_resize_rgb8")
    norm = module.get_function("twopass_normalise")
    rng = np.random.default_rng(1)
    sets, buffers, frame_bytes = device_frames(cuda, rng, "bgr", *src)
    mid = cuda.mem_alloc(BATCH * dst[0] * dst[1] * 3)
    out_bytes = BATCH * 3 * dst[0] * dst[1] * 4
    outs = [cuda.mem_alloc(out_bytes) for _ in range(SETS)]
    a, b = contract(dst).affine()
    grid = ((dst[0] + BLOCK[0] - 1) // BLOCK[0], (dst[1] + BLOCK[1] - 1) // BLOCK[1], BATCH)
    stream = cuda.Stream()
    timer.stream = stream

    def work(i):
        base = sets[i % SETS][0][0]
        resize(
            np.uintp(base),
            np.int32(src[0]),
            np.int32(src[1]),
            np.int32(src[0] * 3),
            mid,
            np.int32(dst[0]),
            np.int32(dst[1]),
            block=BLOCK,
            grid=grid,
            stream=stream,
        )
        norm(
            mid,
            outs[i % SETS],
            np.int32(dst[0]),
            np.int32(dst[1]),
            *[np.float32(v) for v in list(a) + list(b)],
            block=BLOCK,
            grid=grid,
            stream=stream,
        )

    ms = timer.median_ms(lambda i: None, work)
    for buf in buffers + outs + [mid]:
        buf.free()
    del module
    return {"ms": ms, "bytes": frame_bytes * BATCH + out_bytes}


def bench_opencv(src, dst, repeats):
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    pre = CpuPreprocessor(contract(dst))
    pre.run([frame])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        pre.run([frame])
        times.append(1000 * (time.perf_counter() - t0))
    return {"ms": float(np.median(times))}


def process_cpu_per_frame(ctx, src, dst, rounds):
    """CPU ms per frame in this process: CUDA pre-processor from host frames vs the CPU path."""
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8) for _ in range(BATCH)]
    result = {}
    cuda_pre = CudaPreprocessor(contract(dst), BATCH, context=ctx)
    cpu_pre = CpuPreprocessor(contract(dst))
    # cuda-device: the batch stays in device memory, as it does for a TensorRT engine's input
    paths = (("cuda", cuda_pre.run), ("cuda-device", cuda_pre.run_device), ("cpu", cpu_pre.run))
    for name, run_batch in paths:
        run_batch(frames)
        t0, w0 = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            run_batch(frames)
        cpu = time.process_time() - t0
        wall = time.perf_counter() - w0
        result[name] = {"cpu_ms_per_frame": 1000 * cpu / (rounds * BATCH),
                        "wall_ms_per_frame": 1000 * wall / (rounds * BATCH)}  # fmt: skip
    cuda_pre.close()
    cpu_pre.close()
    return result


def resize_agreement(ctx, src, dst):
    """Bilinear 1 frame: kernel vs CPU path, reference vs INTER_LINEAR_EXACT and INTER_LINEAR."""
    import cv2

    from edged.gpu import reference

    frame = np.random.default_rng(4).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    pre = CudaPreprocessor(contract(dst), 1, context=ctx)
    try:
        gpu = pre.run([frame])[0].copy()  # run's page-locked buffer is freed by close
    finally:
        pre.close()
    cpu = CpuPreprocessor(contract(dst)).run([frame])[0]
    ours = reference.resize_rgb(reference.to_rgb(frame, "bgr"), dst[0], dst[1], "linear")
    exact = cv2.resize(frame, tuple(dst), interpolation=cv2.INTER_LINEAR_EXACT)[:, :, ::-1]
    linear = cv2.resize(frame, tuple(dst), interpolation=cv2.INTER_LINEAR)[:, :, ::-1]
    levels = int(np.abs(ours.astype(np.int16) - linear).max())
    return {"kernel_equals_cpu": bool(np.array_equal(gpu, cpu)),
            "reference_equals_exact": bool(np.array_equal(ours, exact)),
            "levels_to_inter_linear": levels}  # fmt: skip


def run(repeats: int) -> Dict[str, Any]:
    ctx = shared_context()
    cuda = ctx.cuda
    results = {"machine": {"gpu": ctx.describe(), "driver": cuda.get_driver_version(),
                           "cpu": platform.processor() or platform.machine(),
                           "python": platform.python_version(),
                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
               "cases": []}  # type: Dict[str, Any]  # fmt: skip
    with ctx.activated():
        timer = Timer(cuda, None, repeats)
        modules = {name: build_module(ctx, defines) for name, defines in BUILDS.items()}
        for src, dst in CASES:
            fused = bench_kernel(ctx, timer, src, dst, "bgr")
            copy = bench_copy(ctx, timer, fused["bytes"])
            two = bench_twopass(ctx, timer, src, dst)
            cpu = bench_opencv(src, dst, max(5, repeats // 5))
            case = {"src": src, "dst": dst, "fused": fused, "copy": copy, "twopass": two,
                    "opencv_one_frame": cpu,
                    "fused_vs_copy": fused["gbps"] / copy["gbps"],
                    "fused_vs_twopass": two["ms"] / fused["ms"],
                    "fused_vs_opencv": cpu["ms"] / (fused["ms"] / BATCH),
                    "formats": {}, "variants": {}, "builds": {}}  # fmt: skip
            for fmt in sorted(FORMAT_BYTES):
                case["formats"][fmt] = bench_kernel(ctx, timer, src, dst, fmt)
            for resize, dtype in (("nearest", "float32"), ("linear", "float16"),
                                  ("nearest", "float16")):  # fmt: skip
                case["variants"][f"{resize}/{dtype}"] = bench_kernel(
                    ctx, timer, src, dst, "bgr", resize, dtype
                )
            for build, module in modules.items():
                for block in SHAPES:
                    key = f"{build}, block {block[0]}x{block[1]}"
                    case["builds"][key] = bench_kernel(ctx, timer, src, dst, "bgr", block=block,
                                                     module=module)  # fmt: skip
            results["cases"].append(case)
        del modules  # unloaded with the context pushed
    results["process_cpu"] = process_cpu_per_frame(ctx, (1920, 1080), (960, 544), 10)
    for case in results["cases"]:
        case["resize"] = resize_agreement(ctx, case["src"], case["dst"])
    return results


def markdown(r: Dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# GPU pre-processing benchmark",
        "",
        f"Machine: {m['gpu']}, CUDA driver {m['driver']}, Python {m['python']}, {m['date']}.",
        "`python -m benchmarks.gpu_preprocess`; batch of 16, CUDA events, medians; "
        f"thread block {BLOCK[0]}x{BLOCK[1]} and kernels.cu's default build unless a row names "
        "others.",
        "",
        "| case | fused ms (batch) | fused GB/s | copy GB/s | fused/copy | two-pass ms | "
        "fused vs two-pass | OpenCV ms (1 frame) | fused vs OpenCV (per frame) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in r["cases"]:
        lines.append(
            "| {}x{} BGR -> {}x{} linear f32 | {:.3f} | {:.0f} | {:.0f} | {:.2f} | {:.3f} | "
            "{:.2f}x | {:.2f} | {:.0f}x |".format(
                c["src"][0],
                c["src"][1],
                c["dst"][0],
                c["dst"][1],
                c["fused"]["ms"],
                c["fused"]["gbps"],
                c["copy"]["gbps"],
                c["fused_vs_copy"],
                c["twopass"]["ms"],
                c["fused_vs_twopass"],
                c["opencv_one_frame"]["ms"],
                c["fused_vs_opencv"],
            )  # fmt: skip
        )
    lines += [""]
    for c in r["cases"]:
        a = c.get("resize")
        if not a:  # absent in results written before it was measured
            continue
        yes = {True: "yes", False: "NO"}
        lines.append(
            f"- {c['src'][0]}x{c['src'][1]} -> {c['dst'][0]}x{c['dst'][1]} bilinear: reference == "
            f"INTER_LINEAR_EXACT bit for bit: {yes[a['reference_equals_exact']]}; difference to "
            f"INTER_LINEAR: {a['levels_to_inter_linear']} levels; kernel == CPU path bit for bit: "
            f"{yes[a['kernel_equals_cpu']]}"
        )
    lines += ["", "Each input format and variant (batch of 16, GB/s counting bytes read + written"
              " once; fraction of the same case's copy bandwidth):", "",
              "| case | format / variant | ms | GB/s | of copy |",
              "|---|---|---|---|---|"]  # fmt: skip
    for c in r["cases"]:
        name = "{}x{} -> {}x{}".format(c["src"][0], c["src"][1], c["dst"][0], c["dst"][1])
        rows = [(f"{k} linear/float32", v) for k, v in c["formats"].items()]
        rows += [(f"bgr {k}", v) for k, v in c["variants"].items()]
        rows += [(f"bgr linear/float32, {k}", v) for k, v in c.get("builds", {}).items()]
        for label, v in rows:
            lines.append("| {} | {} | {:.3f} | {:.0f} | {:.2f} |".format(
                name, label, v["ms"], v["gbps"], v["gbps"] / c["copy"]["gbps"]))  # fmt: skip
    p = r["process_cpu"]
    lines += ["", "CPU time per 1080p -> 960x544 frame spent in the calling process "
              "(host frames in, host tensor out, batch of 16; cuda-device: the tensor left in "
              "device memory, as for TensorRT):", "",
              "| path | CPU ms / frame | wall ms / frame |", "|---|---|---|"]  # fmt: skip
    for name in [n for n in ("cpu", "cuda", "cuda-device") if n in p]:
        lines.append("| {} | {:.3f} | {:.3f} |".format(
            name, p[name]["cpu_ms_per_frame"], p[name]["wall_ms_per_frame"]))  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    parser.add_argument("--out", default=here)
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    results = run(args.repeats)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "gpu_preprocess.json"), "w") as f:
        json.dump(results, f, indent=1)
    text = markdown(results)
    with open(os.path.join(args.out, "gpu_preprocess.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()

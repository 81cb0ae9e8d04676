"""Real engine builds with TensorRT-RTX (``tensorrt-rtx-cu13-*``, module ``tensorrt_rtx_bindings``).

TensorRT-RTX parses ONNX and serializes engines on a machine without a GPU
; it cannot deserialize them here (no supported GPU), which
these tests also use: a real ``deserialize_cuda_engine`` returning None. It is
strongly typed -- no FP16/INT8 builder flags -- so engines record fp32.

Python < 3.10 or not x86_64: NOT APPLICABLE (TensorRT-RTX has no wheels
there); the module is skipped as a whole with that reason, visible in
pytest's summary. Python >= 3.10 on x86_64: TensorRT-RTX must be installed
(setup.cfg [test] extra); a missing module is a collection ERROR, never a skip.
"""

import platform
import sys

import pytest

if sys.version_info < (3, 10) or platform.machine() != "x86_64":
    pytest.skip(
        "not applicable on Python {}.{} {}: TensorRT-RTX wheels need Python >= 3.10 on x86_64 "
        "(the 3.11 run builds real engines)".format(*sys.version_info[:2], platform.machine()),
        allow_module_level=True,
    )

import fcntl  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import termios  # noqa: E402
import time  # noqa: E402

import tensorrt_rtx_bindings as trt  # noqa: E402 - required on >= 3.10: no skip

from edged.backends.tensorrt_backend import TensorRTBackend  # noqa: E402
from edged.config import parse_config  # noqa: E402
from edged.engine import EngineManager  # noqa: E402
from edged.engine.builder import EngineBuilder  # noqa: E402
from edged.engine.cache import EngineCache  # noqa: E402
from edged.engine.errors import EngineBuildError, EngineCancelled  # noqa: E402
from edged.engine.options import BuildOptions  # noqa: E402
from edged.engine.platform import LivePlatform  # noqa: E402
from edged.engine.service import get_or_build, target_for  # noqa: E402
from edged.errors import EngineError  # noqa: E402
from edged.modelfile import load_model_artifact  # noqa: E402
from edged.sdnotify import Notifier  # noqa: E402

from . import onnx_models  # noqa: E402
from .fake_tensorrt import FakeCuda  # noqa: E402
from .helpers import FixedPlatform  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSIFIER = os.path.join(REPO, "models", "resnet18-digits", "resnet18.onnx")
DEMO_DETECTOR = os.path.join(REPO, "models", "peoplenet-demo", "peoplenet_demo.onnx")
LIVE = LivePlatform()


def detector_path(tmp_path):
    """The demo PeopleNet-format detector; a synthetic DetectNet_v2 graph until it exists."""
    if os.path.exists(DEMO_DETECTOR):
        return DEMO_DETECTOR
    return onnx_models.write(str(tmp_path / "detectnet.onnx"), onnx_models.detectnet(3))


def edged_build(*args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "edged", "build"] + list(args),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=600,
        **kw,
    )


def build(cache, path, platform=LIVE, options=None, **kw):
    return get_or_build(
        load_model_artifact(path, kw.pop("key", None)),
        options or BuildOptions(),
        cache,
        EngineBuilder(trt),
        platform(trt),
        **kw,
    )


def manifest_of(entry_path):
    with open(os.path.join(entry_path, "manifest.json")) as f:
        return json.load(f)


# -- the module and both demo models ----------------------------------------------------------


def test_tensorrt_rtx_imports_as_tensorrt_rtx_bindings():
    assert trt.__name__ == "tensorrt_rtx_bindings" and trt.__version__


@pytest.mark.parametrize("which", ["classifier", "detector"])
def test_demo_models_build_for_real_and_the_second_run_is_a_cache_hit(tmp_path, which):
    path = CLASSIFIER if which == "classifier" else detector_path(tmp_path)
    cache = str(tmp_path / "cache")
    first = edged_build(path, "--cache-dir", cache, "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["result"] == "built" and result["precision_obtained"] == "fp32"
    manifest = manifest_of(result["entry"])
    assert manifest["inputs"]["environment"]["tensorrt_module"] == "tensorrt_rtx_bindings"
    assert manifest["inputs"]["environment"]["tensorrt_version"] == trt.__version__
    assert manifest["precision_requested"] == "fp16"  # the default, not available here:
    assert "strongly typed" in manifest["notes"][0]  # ... and the manifest says so
    with open(os.path.join(result["entry"], "model.engine"), "rb") as f:
        import hashlib

        assert hashlib.sha256(f.read()).hexdigest() == manifest["engine_sha256"]
    second = edged_build(path, "--cache-dir", cache, "--json")
    assert json.loads(second.stdout)["result"] == "hit"


def test_dynamic_batch_detector_gets_an_optimization_profile(tmp_path):
    path = onnx_models.write(str(tmp_path / "dyn.onnx"), onnx_models.detectnet(3, batch=None))
    outcome = build(EngineCache(str(tmp_path / "c")), path, options=BuildOptions(max_batch=4))
    [inp] = [t for t in outcome.entry.manifest["io"] if t["mode"] == "input"]
    assert inp["shape"] == [-1, 3, 544, 960]
    assert inp["profile"] == [[1, 3, 544, 960], [4, 3, 544, 960], [4, 3, 544, 960]]


def test_etlt_builds_from_memory_and_the_manifest_holds_only_a_key_hash(tmp_path):
    from edged.etlt import encode_etlt

    plain = open(CLASSIFIER, "rb").read()
    etlt = tmp_path / "resnet18.etlt"
    etlt.write_bytes(encode_etlt(plain, "s3cret-key"))
    cache = tmp_path / "cache"
    done = edged_build(
        str(etlt),
        "--key-env",
        "EDGED_KEY",
        "--cache-dir",
        str(cache),
        "--json",
        env=dict(os.environ, EDGED_KEY="s3cret-key"),
    )
    assert done.returncode == 0, done.stderr
    manifest = manifest_of(json.loads(done.stdout)["entry"])
    import hashlib

    assert manifest["inputs"]["model"]["sha256"] == hashlib.sha256(plain).hexdigest()
    assert manifest["inputs"]["model"]["etlt_key_sha256"]
    for root, _, files in os.walk(str(cache)):  # the decrypted model never touched the disk
        for name in files:
            data = open(os.path.join(root, name), "rb").read()
            assert plain[:4096] not in data and b"s3cret-key" not in data


def test_a_model_tensorrt_refuses_fails_with_its_reason_and_keeps_the_cache(tmp_path):
    from onnx import TensorProto, helper

    node = helper.make_node("NoSuchOp", ["x"], ["y"], domain="com.edged.test")
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 11), helper.make_opsetid("com.edged.test", 1)]
    )
    model.ir_version = 6
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(model.SerializeToString())
    cache = str(tmp_path / "cache")
    assert edged_build(CLASSIFIER, "--cache-dir", cache).returncode == 0
    failed = edged_build(str(bad), "--cache-dir", cache)
    assert failed.returncode == 3
    assert "ONNX parser refused" in failed.stderr and "NoSuchOp" in failed.stderr
    assert len(os.listdir(os.path.join(cache, "entries"))) == 1


# -- invalidation: exactly one rebuild --------------------------------------------------------


def flip_one_weight_byte(src, dst):
    import onnx

    data = bytearray(open(src, "rb").read())
    raw = next(i.raw_data for i in onnx.load(src).graph.initializer if len(i.raw_data) > 64)
    at = bytes(data).find(raw[:64]) + 3
    data[at] ^= 0x01
    open(dst, "wb").write(bytes(data))


def test_one_changed_model_byte_triggers_exactly_one_rebuild(tmp_path):
    cache = EngineCache(str(tmp_path / "c"))
    changed = str(tmp_path / "changed.onnx")
    flip_one_weight_byte(CLASSIFIER, changed)
    results = [
        build(cache, p).result for p in (CLASSIFIER, CLASSIFIER, changed, changed, CLASSIFIER)
    ]
    assert results == ["built", "hit", "built", "hit", "hit"]


def test_a_different_recorded_tensorrt_version_triggers_exactly_one_rebuild(tmp_path):
    from edged.engine.fingerprint import fingerprint_of

    cache = EngineCache(str(tmp_path / "c"))
    entry = build(cache, CLASSIFIER).entry
    manifest = manifest_of(entry.path)  # as if an older TensorRT had built it
    manifest["inputs"]["environment"]["tensorrt_version"] = "1.6.0.0"
    manifest["fingerprint"] = fingerprint_of(manifest["inputs"])
    with open(os.path.join(entry.path, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    assert [build(cache, CLASSIFIER).result for _ in range(3)] == ["built", "hit", "hit"]
    assert len(cache.quarantined()) == 1
    upgraded = FixedPlatform(LIVE, tensorrt_version="1.8.0.0")  # the live TensorRT changes
    assert [build(cache, CLASSIFIER, upgraded).result for _ in range(2)] == ["built", "hit"]


def test_a_different_gpu_triggers_exactly_one_rebuild(tmp_path):
    cache = EngineCache(str(tmp_path / "c"))
    nano = FixedPlatform(LIVE, gpu_name="NVIDIA Tegra X1", compute_capability="5.3")
    xavier = FixedPlatform(LIVE, gpu_name="NVIDIA Tegra Xavier", compute_capability="7.2")
    results = [build(cache, CLASSIFIER, p).result for p in (nano, nano, xavier, xavier, nano)]
    assert results == ["built", "hit", "built", "hit", "hit"]


def test_a_truncated_engine_is_quarantined_and_rebuilt(tmp_path):
    cache = EngineCache(str(tmp_path / "c"))
    entry = build(cache, CLASSIFIER).entry
    with open(entry.engine_path, "r+b") as f:
        f.truncate(os.path.getsize(entry.engine_path) // 2)
    verify = subprocess.run(
        [sys.executable, "-m", "edged", "cache", "verify", "--cache-dir", cache.root],
        stdout=subprocess.PIPE,
        universal_newlines=True,
    )
    assert verify.returncode == 1 and "truncated" in verify.stdout
    assert build(cache, CLASSIFIER).result == "built"
    [q] = cache.quarantined()
    assert "truncated" in open(os.path.join(cache.root, "quarantine", q, "reason.txt")).read()


def test_lru_prune_keeps_the_most_recently_used_engines(tmp_path):
    cache = EngineCache(str(tmp_path / "c"))
    first = build(cache, CLASSIFIER).entry
    time.sleep(0.05)
    second = build(cache, CLASSIFIER, options=BuildOptions(workspace_bytes=128 << 20)).entry
    time.sleep(0.05)
    assert build(cache, CLASSIFIER).result == "hit"  # the first becomes the most recent
    cap_mb = (first.size_bytes + (1 << 20)) >> 20
    pruned = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "cache",
            "prune",
            "--cache-dir",
            cache.root,
            "--max-mb",
            str(cap_mb),
        ],
        stdout=subprocess.PIPE,
        universal_newlines=True,
    )
    assert pruned.returncode == 0 and second.name in pruned.stdout
    assert [s.name for s in cache.entries()] == [first.name]


# -- two processes, one build -----------------------------------------------------------------


def test_two_concurrent_edged_builds_produce_one_engine_and_one_build(tmp_path):
    cache = str(tmp_path / "cache")
    path = detector_path(tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "edged", "build", path, "--cache-dir", cache, "--json"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            universal_newlines=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    results = sorted(json.loads(out)["result"] for out, _ in outputs)
    assert results == ["built", "hit"]
    assert len(os.listdir(os.path.join(cache, "entries"))) == 1


def test_edged_build_waits_for_the_lock_holder(tmp_path):
    cache = EngineCache(str(tmp_path / "cache"))
    target = target_for(load_model_artifact(CLASSIFIER), BuildOptions(), LIVE(trt))
    lock = cache.lock(target.fingerprint)
    lock.acquire()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edged",
            "build",
            CLASSIFIER,
            "--cache-dir",
            cache.root,
            "--json",
            "--progress",
            "none",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    try:
        line = proc.stderr.readline()
        assert "another process is building this engine; waiting" in line
        assert proc.poll() is None
    finally:
        lock.release()
    out, _ = proc.communicate(timeout=600)
    assert json.loads(out)["waited"] is True


# -- SIGKILL in the middle of a build ---------------------------------------------------------


def test_sigkill_during_a_build_leaves_no_partial_engine_and_the_next_run_rebuilds(tmp_path):
    """The child's stdout is a 4 KiB pipe that the test pre-fills and does not read: once
    TensorRT's progress monitor reports enough steps the child blocks INSIDE
    build_serialized_network. Then SIGKILL -- deterministically mid-build."""
    cache = tmp_path / "cache"
    read_fd, write_fd = os.pipe()
    fcntl.fcntl(write_fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 4096)  # 1031: Linux's value
    filler = b"#" * 3000 + b"\n"
    os.write(write_fd, filler)
    from edged.engine.runner import BuildRequest

    request = BuildRequest(CLASSIFIER, BuildOptions(), str(cache), "resnet18")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "build", "--worker"],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=write_fd,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    proc.stdin.write(request.to_json().encode())
    proc.stdin.close()
    deadline = time.monotonic() + 120
    while _pipe_bytes(read_fd) < 4096 - 200:  # full: the child is blocked writing progress
        assert proc.poll() is None and time.monotonic() < deadline, "child ended before blocking"
        time.sleep(0.02)
    time.sleep(0.3)
    assert proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    events = [json.loads(line) for line in _drain(read_fd)[len(filler) :].decode().splitlines()]
    last = events[-1]
    assert last["event"] == "progress" and last["phase"] == "build" and last["detail"], last
    assert os.listdir(str(cache / "entries")) == []  # no engine, partial or whole
    again = edged_build(CLASSIFIER, "--cache-dir", str(cache), "--json")
    assert json.loads(again.stdout)["result"] == "built"
    assert os.listdir(str(cache / "tmp")) == []


def _pipe_bytes(fd):
    import array

    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf, True)
    return buf[0]


def _drain(fd):
    chunks = []
    while select.select([fd], [], [], 0.5)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


# -- the daemon API with the real child process -----------------------------------------------


class RecordingNotifier(Notifier):
    def __init__(self):
        self.messages = []

    @property
    def enabled(self):
        return True

    def notify(self, **fields):
        self.messages.append(fields)
        return True


def daemon_config(tmp_path, path):
    text = "engine: {cache_dir: cache}\nmodels: {m: {path: " + path + ", backend: tensorrt}}\n"
    return parse_config(text, str(tmp_path))


def test_manager_builds_in_a_child_counts_hits_and_extends_the_systemd_timeout(tmp_path):
    config = daemon_config(tmp_path, CLASSIFIER)
    notifier = RecordingNotifier()
    manager = EngineManager(config.engine, notifier=notifier, status_interval_s=0.0)
    model = config.models["m"]
    artifact = load_model_artifact(model.path)
    built = manager.ensure(model, artifact, extend_timeout=False)  # as a reload builds
    entry = manager.ensure(model, artifact)  # the "second start"
    assert entry.path == built.path
    stats = manager.stats()
    assert (stats["cache_misses"], stats["cache_hits"], stats["builds"]["built"]) == (1, 1, 1)
    assert stats["build_seconds_total"] > 0 and manager.state("m")["state"] == "ready"
    assert any("STATUS" in m and "building engine m" in m["STATUS"] for m in notifier.messages)
    assert not any("EXTEND_TIMEOUT_USEC" in m for m in notifier.messages)  # background: no


def test_a_blocking_build_at_start_up_extends_the_systemd_start_timeout(tmp_path):
    config = daemon_config(tmp_path, detector_path(tmp_path))
    notifier = RecordingNotifier()
    manager = EngineManager(config.engine, notifier=notifier)
    manager.ensure(config.models["m"], load_model_artifact(config.models["m"].path))
    assert "EXTEND_TIMEOUT_USEC" in notifier.messages[0]
    assert notifier.messages[0]["STATUS"] == "building engine m"


def test_an_engine_tensorrt_cannot_deserialize_is_quarantined_and_rebuilt_exactly_once(tmp_path):
    """Real TensorRT-RTX without a GPU: deserialize_cuda_engine returns None (the GPU/CUDA is
    the fake here, the deserialization is real)."""
    config = daemon_config(tmp_path, CLASSIFIER)
    manager = EngineManager(
        config.engine,
        trt=trt,
        backend_factory=lambda entry: TensorRTBackend.from_entry(entry, trt=trt, cuda=FakeCuda()),
    )
    with pytest.raises(EngineError, match="does not deserialize even after a rebuild"):
        manager.load_backend(config.models["m"], load_model_artifact(CLASSIFIER))
    stats = manager.stats()
    assert stats["builds"]["built"] == 2 and stats["quarantined"] == 2
    assert len(manager.cache.quarantined()) == 2 and manager.cache.entries() == []


def test_a_cancelled_build_leaves_no_engine(tmp_path):
    config = daemon_config(tmp_path, CLASSIFIER)
    manager = EngineManager(config.engine)
    manager.cancel_all()  # before the child can have started Python: it is stopped, never publishes
    with pytest.raises(EngineCancelled, match="cancelled"):
        manager.load_backend(config.models["m"], load_model_artifact(CLASSIFIER))
    assert manager.cache.entries() == []
    assert manager.stats()["builds"]["cancelled"] == 1


def test_build_errors_are_engine_errors():
    assert issubclass(EngineBuildError, EngineError)

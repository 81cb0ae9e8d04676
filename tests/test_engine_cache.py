"""The engine cache, its key, locks, progress and the daemon API -- without TensorRT.

Real files, real locks between real processes, real signals; the builder is
the FAKE TensorRT of tests/fake_tensorrt.py where one is needed (NOT
exercising TensorRT itself). Runs on every Python; the same behaviours with
real TensorRT-RTX engines are in tests/test_engine_rtx.py (Python >= 3.10).
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from edged.config import load_config, parse_config
from edged.engine import EngineManager
from edged.engine.builder import EngineBuilder
from edged.engine.cache import EngineCache, default_cache_dir
from edged.engine.errors import EngineBuildError, EngineDeserializeError
from edged.engine.fingerprint import differences, key_hash
from edged.engine.lock import FileLock, LockTimeout
from edged.engine.options import BuildOptions, options_for_model
from edged.engine.platform import (
    GpuInfo,
    LivePlatform,
    PlatformInfo,
    PlatformProvider,
    probe_tegra,
    read_l4t_release,
)
from edged.engine.progress import ProgressTracker
from edged.engine.runner import (
    BUILT,
    CANCELLED,
    FAILED,
    HIT,
    KILLED,
    BuildRequest,
    BuildRunner,
    ChildOutcome,
    _classify,
)
from edged.engine.service import get_or_build, target_for
from edged.fsutil import atomic_write
from edged.modelfile import ModelArtifact

from . import onnx_models
from .fake_tensorrt import make_trt
from .helpers import FixedPlatform

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

XAVIER = PlatformInfo(
    tensorrt_module="tensorrt",
    tensorrt_version="8.5.2.2",
    cuda_version="11.4",
    cuda_driver_version="11040",
    l4t_release="R35.3.1",
    gpu_name="NVIDIA Tegra Xavier",
    compute_capability="7.2",
)


def artifact(data=b"model-bytes-1", path="/models/m.onnx"):
    return ModelArtifact(path, "onnx", data)


def fake_build(cache, model=None, platform=XAVIER, **kw):
    """get_or_build with the FAKE TensorRT builder (not exercising TensorRT)."""
    return get_or_build(
        model or artifact(),
        kw.pop("options", BuildOptions()),
        cache,
        EngineBuilder(make_trt()),
        platform,
        **kw,
    )


# -- platform and key -------------------------------------------------------------------------


def test_l4t_release_is_read_from_nv_tegra_release(tmp_path):
    path = tmp_path / "nv_tegra_release"
    path.write_text(
        "# R32 (release), REVISION: 7.1, GCID: 29818004, BOARD: t210ref, EABI: aarch64\n"
    )
    assert read_l4t_release(str(path)) == "R32.7.1"
    assert read_l4t_release(str(tmp_path / "missing")) == "none"


def test_jetson_gpu_is_identified_from_the_device_tree(tmp_path):
    (tmp_path / "compatible").write_bytes(
        b"nvidia,p3450-0000\0nvidia,jetson-nano\0nvidia,tegra210\0"
    )
    info = probe_tegra(str(tmp_path))
    assert (info.name, info.compute_capability) == ("NVIDIA Tegra X1", "5.3")


def test_live_platform_uses_the_injected_probes(tmp_path):
    (tmp_path / "rel").write_text("# R35 (release), REVISION: 3.1, GCID: 1\n")
    provider = LivePlatform(str(tmp_path / "rel"), lambda: GpuInfo("Xavier", "7.2", "11.4", "1"))
    info = provider(make_trt(version="8.5.2.2"))
    assert (info.l4t_release, info.gpu_name, info.tensorrt_version) == (
        "R35.3.1",
        "Xavier",
        "8.5.2.2",
    )


def test_the_etlt_key_is_hashed_never_stored():
    h = key_hash("tlt_encode", "ab" * 32)
    assert h and "tlt_encode" not in h and h != key_hash("tlt_encode", "cd" * 32)
    assert key_hash(None, "ab" * 32) is None


@pytest.mark.parametrize(
    "change",
    [
        lambda a, o, p: (artifact(b"model-bytes-2"), o, p),
        lambda a, o, p: (a, o.replace(precision="fp32"), p),
        lambda a, o, p: (a, o.replace(workspace_bytes=512 << 20), p),
        lambda a, o, p: (a, o.replace(dla_core=0), p),
        lambda a, o, p: (a, o.replace(max_batch=4), p),
        lambda a, o, p: (a, o, p.replace(tensorrt_version="8.5.2.3")),
        lambda a, o, p: (a, o, p.replace(gpu_name="NVIDIA Tegra X1")),
        lambda a, o, p: (a, o, p.replace(compute_capability="5.3")),
        lambda a, o, p: (a, o, p.replace(l4t_release="R35.4.1")),
        lambda a, o, p: (a, o, p.replace(cuda_version="11.4.1")),
    ],
)
def test_every_build_input_changes_the_fingerprint(change):
    base = target_for(artifact(), BuildOptions(), XAVIER)
    assert target_for(*change(artifact(), BuildOptions(), XAVIER)).fingerprint != base.fingerprint


def test_calibration_data_is_in_the_key_only_for_int8(tmp_path):
    cal = tmp_path / "cal.bin"
    cal.write_bytes(b"TRT-8501-EntropyCalibration2\n")
    int8 = BuildOptions(precision="int8", calibration_cache=str(cal))
    first = target_for(artifact(), int8, XAVIER)
    assert first.inputs["build"]["calibration"]["kind"] == "cache"
    cal.write_bytes(b"TRT-8501-EntropyCalibration2\nother\n")
    assert target_for(artifact(), int8, XAVIER).fingerprint != first.fingerprint
    fp16 = BuildOptions(calibration_cache=str(cal))
    assert target_for(artifact(), fp16, XAVIER).inputs["build"]["calibration"] is None


def test_differences_name_the_changed_key():
    a = {"environment": {"tensorrt_version": "8.2.1.8"}}
    b = {"environment": {"tensorrt_version": "8.2.3.0"}}
    assert differences(a, b) == ['environment.tensorrt_version: recorded "8.2.1.8", live "8.2.3.0"']


# -- config -----------------------------------------------------------------------------------


def test_engine_section_defaults_and_model_overrides(tmp_path):
    config = parse_config(
        "engine: {cache_dir: cache, precision: int8, dla_core: 0}\n"
        "models:\n"
        "  det: {path: d.onnx, backend: tensorrt, input: {width: 960, height: 544},\n"
        "        engine: {precision: fp16, dla_core: -1, max_batch: 4,\n"
        "                 calibration: {images: calib}}}\n",
        str(tmp_path),
    )
    assert config.engine.cache_dir == str(tmp_path / "cache")
    assert (config.engine.workspace_mb, config.engine.cache_max_mb) == (256, 2048)
    options = options_for_model(config.engine, config.models["det"])
    assert (options.precision, options.dla_core, options.max_batch) == ("fp16", None, 4)
    assert (options.input_width, options.input_height) == (960, 544)
    assert options.calibration_images == str(tmp_path / "calib")
    assert options.workspace_bytes == 256 << 20


def test_default_cache_dir_follows_systemd_cache_directory():
    assert default_cache_dir({"CACHE_DIRECTORY": "/var/cache/edged"}) == "/var/cache/edged/engines"
    assert default_cache_dir({"HOME": "/h", "XDG_CACHE_HOME": "/x"}) == "/x/edged/engines"


# -- cache: get or build ----------------------------------------------------------------------


def test_second_request_is_a_cache_hit_and_builds_nothing(tmp_path):
    cache = EngineCache(str(tmp_path))
    first = fake_build(cache, model_name="m")
    second = fake_build(cache, model_name="m")
    assert (first.result, second.result) == ("built", "hit")
    assert first.entry.path == second.entry.path
    assert len(os.listdir(str(tmp_path / "entries"))) == 1


def test_manifest_records_every_input_and_the_obtained_precision(tmp_path):
    cache = EngineCache(str(tmp_path))
    outcome = fake_build(
        cache, options=BuildOptions(precision="int8"), model_name="m", key="tlt_encode"
    )
    with open(os.path.join(outcome.entry.path, "manifest.json")) as f:
        manifest = json.load(f)
    inputs = manifest["inputs"]
    assert inputs["environment"] == XAVIER.as_dict()
    assert inputs["model"]["sha256"] == artifact().sha256
    assert inputs["model"]["etlt_key_sha256"] and "tlt_encode" not in json.dumps(manifest)
    assert inputs["build"]["precision_requested"] == "int8"
    assert manifest["precision_obtained"] == "fp16"  # fake platform: no fast INT8
    assert manifest["engine_sha256"] and manifest["engine_bytes"] > 0
    assert manifest["build_seconds"] >= 0 and manifest["io"][0]["name"] == "input_0"


def test_edited_manifest_is_quarantined_and_rebuilt_once(tmp_path):
    cache = EngineCache(str(tmp_path))
    entry = fake_build(cache).entry
    path = os.path.join(entry.path, "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    manifest["inputs"]["environment"]["tensorrt_version"] = "8.0.1.6"
    with open(path, "w") as f:
        json.dump(manifest, f)
    assert fake_build(cache).result == "built"
    assert fake_build(cache).result == "hit"
    [quarantined] = cache.quarantined()
    with open(str(tmp_path / "quarantine" / quarantined / "reason.txt")) as f:
        assert "does not match its recorded inputs" in f.read()


def test_truncated_engine_is_quarantined_and_rebuilt(tmp_path):
    cache = EngineCache(str(tmp_path))
    entry = fake_build(cache).entry
    with open(entry.engine_path, "r+b") as f:
        f.truncate(10)
    assert fake_build(cache).result == "built"
    reason = open(str(tmp_path / "quarantine" / cache.quarantined()[0] / "reason.txt")).read()
    assert "truncated" in reason


def test_a_crash_while_publishing_leaves_no_entry_and_the_next_build_cleans_up(
    tmp_path, monkeypatch
):
    cache = EngineCache(str(tmp_path))
    real_rename = os.rename

    def crash(src, dst):
        if "entries" in dst:
            raise OSError(28, "No space left on device")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(Exception, match="No space left"):
        fake_build(cache)
    monkeypatch.setattr(os, "rename", real_rename)
    assert os.listdir(str(tmp_path / "entries")) == []
    assert os.listdir(str(tmp_path / "tmp")) == []
    assert fake_build(cache).result == "built"


def test_leftover_staging_of_a_killed_build_is_removed_by_the_next_build(tmp_path):
    cache = EngineCache(str(tmp_path))
    target = target_for(artifact(), BuildOptions(), XAVIER)
    leftover = tmp_path / "tmp" / f"{target.fingerprint}.99999.dead"
    cache.ensure()
    leftover.mkdir()
    (leftover / "model.engine").write_bytes(b"half")
    other = tmp_path / "tmp" / "{}.99999.dead".format("0" * 64)
    other.mkdir()
    fake_build(cache)
    assert not leftover.exists() and other.exists()  # another fingerprint: prune's job
    assert cache.clean_tmp() == [other.name] and not other.exists()


def test_lru_eviction_removes_least_recently_used_first(tmp_path):
    now = [1000.0]
    cache = EngineCache(str(tmp_path), clock=lambda: now[0])
    names = []
    for i in range(3):
        now[0] += 10
        names.append(fake_build(cache, model=artifact(b"model-%d" % i)).entry.name)
    now[0] += 10
    fake_build(cache, model=artifact(b"model-0"))  # a hit: model-0 becomes the most recent
    sizes = {s.name: s.size_bytes for s in cache.entries()}
    assert cache.evict(max_bytes=sizes[names[0]] + sizes[names[2]]) == [names[1]]
    assert sorted(s.name for s in cache.entries()) == sorted([names[0], names[2]])


def test_eviction_skips_an_entry_whose_lock_is_held(tmp_path):
    cache = EngineCache(str(tmp_path))
    old = fake_build(cache, model=artifact(b"a")).entry
    fake_build(cache, model=artifact(b"b"))
    with cache.lock(old.fingerprint):
        assert cache.evict(max_bytes=1) != [old.name]
        assert os.path.isdir(old.path)


def test_atomic_write_replaces_whole_files(tmp_path):
    path = str(tmp_path / "f")
    atomic_write(path, b"one")
    atomic_write(path, b"two")
    assert open(path, "rb").read() == b"two" and os.listdir(str(tmp_path)) == ["f"]


# -- locks between processes ------------------------------------------------------------------

HOLDER = (
    "import fcntl, os, sys, time\n"
    "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
    "fcntl.flock(fd, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "time.sleep(60)\n"
)


def test_lock_held_by_another_process_blocks_until_it_dies(tmp_path):
    path = str(tmp_path / "x.lock")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        lock = FileLock(path)
        assert not lock.acquire(blocking=False)
        waited = []
        with pytest.raises(LockTimeout):
            FileLock(path, timeout_s=0.3, on_wait=waited.append).acquire()
        assert waited == [path]
        holder.send_signal(signal.SIGKILL)  # a SIGKILLed holder never leaves a stale lock
        holder.wait()
        assert FileLock(path, timeout_s=5).acquire()
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
        holder.stdout.close()


def test_a_waiting_build_finds_the_engine_the_lock_holder_published(tmp_path):
    cache = EngineCache(str(tmp_path))
    target = target_for(artifact(), BuildOptions(), XAVIER)
    results = []
    lock = cache.lock(target.fingerprint)
    lock.acquire()
    waiter = threading.Thread(
        target=lambda: results.append(fake_build(EngineCache(str(tmp_path)))), name="waiter"
    )
    waiter.start()
    time.sleep(0.3)
    assert results == []  # still waiting
    lock.release()
    waiter.join(10)
    assert results[0].result == "built"  # nothing was there: it builds after the lock
    assert fake_build(cache).result == "hit"


# -- progress ---------------------------------------------------------------------------------


def test_progress_folds_nested_tensorrt_phases_into_one_monotonic_fraction():
    events = []
    t = ProgressTracker(events.append)
    t.phase("parse")
    t.phase("build")
    t.trt_phase_start("Building engine", None, 2)
    t.trt_phase_start("Tactics", "Building engine", 4)
    for step in range(4):
        t.trt_step("Tactics", step)
    t.trt_phase_finish("Tactics")
    t.trt_step("Building engine", 0)
    t.trt_step("Building engine", 1)
    t.trt_phase_finish("Building engine")
    t.phase("publish")
    t.phase("done")
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(abs(f - (0.10 + 0.85 * 0.5)) < 0.02 for f in fractions)  # half of "build"


# -- child-process protocol -------------------------------------------------------------------


def test_build_request_round_trips_and_never_shows_the_key():
    request = BuildRequest("/m.etlt", BuildOptions(max_batch=2), "/cache", "m", key="s3cret")
    assert "s3cret" not in repr(request)
    again = BuildRequest.from_json(request.to_json())
    assert again.key == "s3cret" and again.options == request.options


def test_child_exit_is_classified():
    ok = _classify(0, {"event": "result", "result": "hit"}, None, [], 1.0)
    assert ok.result == HIT and ok.ok
    killed = _classify(-signal.SIGKILL, {}, None, [], 1.0)
    assert killed.result == KILLED and "out of memory" in killed.message
    failed = _classify(3, {"event": "error", "message": "parser says no"}, None, [], 1.0)
    assert (failed.result, failed.message) == (FAILED, "parser says no")


def test_a_child_that_cannot_build_reports_why_and_leaves_the_cache_alone(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not onnx at all")
    request = BuildRequest(str(model), BuildOptions(), str(tmp_path / "cache"), "m")
    outcome = BuildRunner(timeout_s=120).run(request)
    assert outcome.result == FAILED and outcome.returncode == 2
    assert "not a valid ONNX model" in outcome.message
    assert not (tmp_path / "cache" / "entries").exists() or not os.listdir(
        str(tmp_path / "cache" / "entries")
    )


# -- the daemon API with an in-process stand-in for the child ---------------------------------


class InProcessRunner:
    """Test double of BuildRunner: runs the build in this process with the FAKE TensorRT."""

    def __init__(self, trt=None):
        self.trt = trt or make_trt()
        self.requests = []

    def run(self, request, on_progress=None, cancel=None):
        self.requests.append(request)
        try:
            outcome = get_or_build(
                artifact(open(request.model_path, "rb").read(), request.model_path),
                request.options,
                EngineCache(request.cache_dir),
                EngineBuilder(self.trt),
                PlatformInfo(**request.platform),
                key=request.key,
            )
        except EngineBuildError as e:
            return ChildOutcome(FAILED, str(e), 3, {}, 0.1, [])
        info = {"build_seconds": outcome.seconds, "entry": outcome.entry.path}
        return ChildOutcome(outcome.result, "", 0, info, 0.1, [])


class Static(PlatformProvider):
    def __init__(self, info):
        self.info = info

    def __call__(self, trt):
        return self.info


def manager_for(tmp_path, runner, **kw):
    config = parse_config("engine: {cache_dir: cache}", str(tmp_path))
    return EngineManager(
        config.engine, runner=runner, platform=Static(XAVIER), trt=make_trt(), **kw
    )


def model_config(tmp_path, data=b"model-bytes-1"):
    path = tmp_path / "m.onnx"
    path.write_bytes(data)
    config = parse_config("models: {m: {path: m.onnx, backend: tensorrt}}", str(tmp_path))
    return config.models["m"], artifact(data, str(path))


def test_manager_counts_a_miss_then_a_hit_and_reports_states(tmp_path):
    runner = InProcessRunner()
    manager = manager_for(tmp_path, runner)
    events = []
    manager.add_listener(events.append)
    model, art = model_config(tmp_path)
    manager.ensure(model, art)
    manager.ensure(model, art)
    stats = manager.stats()
    assert (stats["cache_misses"], stats["cache_hits"], stats["builds"][BUILT]) == (1, 1, 1)
    assert len(runner.requests) == 1 and manager.state("m")["state"] == "ready"
    assert [e["event"] for e in events] == ["cache_miss", "build_finished", "cache_hit"]


def test_a_failed_build_says_why_and_keeps_the_old_engine(tmp_path):
    runner = InProcessRunner()
    manager = manager_for(tmp_path, runner)
    model, art = model_config(tmp_path)
    old = manager.ensure(model, art)
    runner.trt.fail_build = True
    model2, art2 = model_config(tmp_path, b"model-bytes-2")
    with pytest.raises(EngineBuildError, match="fake: build refused"):
        manager.ensure(model2, art2)
    assert manager.state("m")["state"] == "failed"
    assert os.path.isdir(old.path) and manager.stats()["builds"][FAILED] == 1


def test_an_engine_that_does_not_deserialize_is_quarantined_and_rebuilt_once(tmp_path):
    runner = InProcessRunner()
    loads = []

    def backend(entry):
        loads.append(entry.path)
        if len(loads) == 1:
            raise EngineDeserializeError("fake: magic tag does not match")
        return "backend"

    manager = manager_for(tmp_path, runner, backend_factory=backend)
    model, art = model_config(tmp_path)
    assert manager.load_backend(model, art) == "backend"
    assert len(runner.requests) == 2 and manager.stats()["quarantined"] == 1
    assert len(manager.cache.quarantined()) == 1


def test_gpu_identity_change_builds_exactly_once_more(tmp_path):
    runner = InProcessRunner()
    manager = manager_for(tmp_path, runner)
    model, art = model_config(tmp_path)
    manager.ensure(model, art)
    manager._platform_provider = FixedPlatform(
        Static(XAVIER), gpu_name="Orin", compute_capability="8.7"
    )
    manager.ensure(model, art)
    manager.ensure(model, art)
    assert len(runner.requests) == 2


def test_tensorrt_rtx_is_installed_on_python_3_10_and_later():
    """CI's 3.11 run builds real engines with TensorRT-RTX; it must be there (never skipped).
    On Python < 3.10 (or off x86_64) TensorRT-RTX has no wheels: not applicable."""
    import platform

    if sys.version_info < (3, 10) or platform.machine() != "x86_64":
        pytest.skip("not applicable: TensorRT-RTX wheels need Python >= 3.10 on x86_64")
    import tensorrt_rtx_bindings  # noqa: F401 - setup.cfg [test] extra on Python >= 3.10


class BuildUntilCancelled:
    """Test double of BuildRunner: a build that only ends when cancelled (a long Nano build)."""

    def __init__(self):
        self.building = threading.Event()
        self.cancelled = False

    def run(self, request, on_progress=None, cancel=None):
        self.building.set()
        assert cancel is not None, "a blocking build must be cancellable"
        assert cancel.wait(30), "never cancelled"
        self.cancelled = True
        return ChildOutcome(CANCELLED, "cancelled", -15, {}, 0.1, [])


def test_stopping_the_daemon_during_a_start_up_build_cancels_it_and_exits_0(tmp_path, monkeypatch):
    """SIGTERM (request_stop, what the handler calls) while the first engine builds: the build is
    cancelled at once and run() returns 0, instead of systemd waiting for its SIGKILL."""
    from edged.daemon import Daemon

    onnx_models.write(str(tmp_path / "m.onnx"), onnx_models.classifier(3))
    config_path = tmp_path / "edged.yaml"
    config_path.write_text(
        "models: {m: {path: m.onnx, backend: tensorrt}}\n"
        "streams: {cam: {source: clip.mp4, model: m}}\n"
        "metrics: {enabled: false}\nengine: {cache_dir: cache}\n"
    )
    runner = BuildUntilCancelled()
    stop = threading.Event()
    config = load_config(str(config_path))
    engines = EngineManager(config.engine, runner=runner, platform=Static(XAVIER), trt=make_trt(),
                            cancel=stop)  # fmt: skip
    daemon = Daemon(str(config_path), engines=engines, stop_event=stop)
    monkeypatch.setattr(daemon, "install_signal_handlers", lambda: None)  # not the main thread
    codes = []
    thread = threading.Thread(target=lambda: codes.append(daemon.run()), name="test-daemon")
    thread.start()
    assert runner.building.wait(10)
    daemon.request_stop()
    thread.join(10)
    assert not thread.is_alive() and codes == [0]
    assert runner.cancelled
    assert engines.stats()["builds"]["cancelled"] == 1

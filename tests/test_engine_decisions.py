"""Decisions of the engine builder, checked against a FAKE TensorRT (tests/fake_tensorrt.py).

NOT EXERCISING TENSORRT ITSELF: the full TensorRT is not on PyPI. These tests check which API
path, flags and calls edged chooses for each release's API shape (per NVIDIA/TensorRT
``python/src`` at each tag): FP16/INT8 negotiation, calibrators, DLA, UFF, workspace setters,
build calls, profiles, timing cache, progress monitor. Real builds: tests/test_engine_rtx.py
(TensorRT-RTX).
"""

import json

import pytest

from edged.backends.tensorrt_api import Features
from edged.engine.builder import CalibrationInput, EngineBuilder
from edged.engine.errors import EngineBuildError, EngineCancelled
from edged.engine.options import BuildOptions
from edged.engine.plan import PlatformCaps, negotiate_precision, plan_device, plan_profiles
from edged.engine.progress import ProgressTracker
from edged.modelfile import ModelArtifact

from .fake_tensorrt import RTX, TRT10, TRT80, make_trt

ONNX = ModelArtifact("/models/m.onnx", "onnx", b"onnx-bytes")
UFF = ModelArtifact("/models/p.etlt", "uff", b"uff-bytes", input_name="input_1", encrypted=True)


def build(trt, options=None, artifact=ONNX, **kw):
    result = EngineBuilder(trt).build(artifact, options or BuildOptions(), **kw)
    return result, json.loads(result.engine[len(b"FAKEENGINE") :].decode())


def features(**variant):
    return Features.detect(make_trt(**variant))


# -- feature detection ------------------------------------------------------------------------


def test_features_of_trt80_are_binding_era_with_uff_and_max_workspace_size():
    f = features(**TRT80)
    assert f.uff_parser and f.max_workspace_size and f.build_engine and f.explicit_batch_flag
    assert not f.memory_pool_limit and not f.progress_monitor and not f.strongly_typed


def test_features_of_trt10_have_memory_pool_and_progress_monitor_but_no_uff():
    f = features(**TRT10)
    assert f.memory_pool_limit and f.progress_monitor and f.build_serialized_network
    assert not f.uff_parser and not f.max_workspace_size and not f.build_engine


def test_features_of_a_strongly_typed_builder_have_no_precision_flags():
    f = features(**RTX)
    assert f.strongly_typed and not f.fp16_flag and not f.int8_flag and not f.fast_fp16_query


# -- precision negotiation (record what was obtained, never what was asked) -----------------

FULL = Features.detect(make_trt())
NANO = PlatformCaps(fast_fp16=True, fast_int8=False, dla_cores=0)
XAVIER = PlatformCaps(fast_fp16=True, fast_int8=True, dla_cores=2)
OLD_GPU = PlatformCaps(fast_fp16=False, fast_int8=False, dla_cores=0)


@pytest.mark.parametrize(
    "requested, caps, calibrated, obtained, flags",
    [
        ("fp32", XAVIER, True, "fp32", ()),
        ("fp16", NANO, False, "fp16", ("FP16",)),
        ("int8", NANO, True, "fp16", ("FP16",)),  # Nano has no INT8 (compute capability 5.3 < 6.1)
        ("int8", XAVIER, True, "int8", ("INT8", "FP16")),  # tao_deploy enables FP16 too
        ("int8", XAVIER, False, "fp16", ("FP16",)),  # no calibration data
        ("fp16", OLD_GPU, False, "fp32", ()),
        ("int8", OLD_GPU, True, "fp32", ()),
    ],
)
def test_precision_obtained_follows_the_platform(requested, caps, calibrated, obtained, flags):
    plan = negotiate_precision(requested, True, FULL, caps, calibrated)
    assert (plan.obtained, plan.flags) == (obtained, flags)
    assert bool(plan.notes) == (obtained != requested)


def test_int8_on_nano_without_fallback_is_an_error_naming_the_reason():
    with pytest.raises(EngineBuildError, match="no fast INT8"):
        negotiate_precision("int8", False, FULL, NANO, True)


def test_strongly_typed_builder_records_the_network_precision_with_a_note():
    rtx = Features.detect(make_trt(**RTX))
    plan = negotiate_precision("fp16", True, rtx, PlatformCaps(None, None, 0), False, "fp32")
    assert plan.obtained == "fp32" and plan.flags == () and "strongly typed" in plan.notes[0]
    assert (
        negotiate_precision("fp16", True, rtx, PlatformCaps(None, None, 0), False, "fp16").obtained
        == "fp16"
    )


def test_int8_needs_a_calibrator_api():
    no_calibrator = Features.detect(make_trt(calibrator=False))
    plan = negotiate_precision("int8", True, no_calibrator, XAVIER, True)
    assert plan.obtained == "fp16" and "calibrator" in plan.notes[0]


# -- DLA --------------------------------------------------------------------------------------


def test_dla_core_on_xavier_with_gpu_fallback():
    plan = plan_device(1, True, FULL, XAVIER, "fp16")
    assert (plan.device, plan.dla_core, plan.flags) == ("dla1", 1, ("GPU_FALLBACK",))


@pytest.mark.parametrize(
    "caps, precision, why",
    [
        (NANO, "fp16", "0 DLA core"),
        (XAVIER, "fp32", "FP16/INT8 only"),
    ],
)
def test_unusable_dla_falls_back_to_the_gpu_with_a_note(caps, precision, why):
    plan = plan_device(0, True, FULL, caps, precision)
    assert plan.device == "gpu" and why in plan.notes[0]
    with pytest.raises(EngineBuildError, match="gpu_fallback is off"):
        plan_device(0, False, FULL, caps, precision)


def test_builder_sets_dla_device_core_and_gpu_fallback():
    trt = make_trt(dla_cores=2, fast_int8=True)
    result, record = build(trt, BuildOptions(precision="fp16", dla_core=1))
    assert result.device_obtained == "dla1"
    assert (record["device"], record["dla"]) == ("DLA", 1)
    assert record["flags"] == ["FP16", "GPU_FALLBACK"]


# -- API paths --------------------------------------------------------------------------------


def test_trt80_uses_max_workspace_size_explicit_batch_and_build_serialized_network():
    trt = make_trt(**TRT80)
    result, record = build(trt, BuildOptions(workspace_bytes=128 << 20))
    assert record["workspace"] == 128 << 20 and record["pool"] == {}
    assert ("create_network", 1) in trt.calls  # 1 << EXPLICIT_BATCH(0)
    assert ("build_serialized_network", None) in trt.calls
    assert result.precision_obtained == "fp16" and record["flags"] == ["FP16"]


def test_trt10_uses_the_memory_pool_limit():
    trt = make_trt(**TRT10)
    _, record = build(trt, BuildOptions(workspace_bytes=64 << 20))
    assert record["pool"] == {"WORKSPACE": 64 << 20} and record["workspace"] is None


def test_strongly_typed_builder_gets_no_network_flag_and_no_precision_flags():
    trt = make_trt(**RTX)
    result, record = build(trt, BuildOptions(precision="int8"))
    assert ("create_network", 0) in trt.calls
    assert record["flags"] == [] and result.precision_obtained == "fp32"


def test_build_engine_is_used_where_build_serialized_network_is_missing():
    trt = make_trt(build_serialized=False)
    build(trt)
    assert ("build_engine", None) in trt.calls


def test_uff_payload_is_parsed_from_memory_with_implicit_batch():
    trt = make_trt(**TRT80)
    options = BuildOptions(input_width=960, input_height=544, max_batch=4)
    _, record = build(trt, options, artifact=UFF)
    assert ("uff_parse_buffer", len(UFF.data)) in trt.calls
    assert ("create_network", 0) in trt.calls  # implicit batch
    assert trt.uff_parser.inputs == [("input_1", (3, 544, 960))]
    assert trt.uff_parser.outputs == ["output_cov/Sigmoid", "output_bbox/BiasAdd"]
    assert record["max_batch_size"] == 4


def test_uff_on_a_tensorrt_without_the_uff_parser_says_to_use_onnx():
    with pytest.raises(EngineBuildError, match="ONNX release"):
        build(make_trt(**TRT10), BuildOptions(input_width=960, input_height=544), artifact=UFF)


def test_onnx_parser_errors_are_in_the_message():
    bad = ModelArtifact("/models/bad.onnx", "onnx", b"bad model")
    with pytest.raises(EngineBuildError, match="unsupported operator"):
        build(make_trt(), artifact=bad)


def test_a_refused_build_says_what_tensorrt_logged():
    trt = make_trt()
    trt.fail_build = True
    with pytest.raises(EngineBuildError, match="fake: build refused"):
        build(trt)


# -- profiles ---------------------------------------------------------------------------------


def test_dynamic_batch_gets_a_profile_from_one_to_max_batch():
    profiles, notes = plan_profiles([("input_1", (-1, 3, 544, 960))], BuildOptions(max_batch=4))
    assert profiles == {"input_1": ((1, 3, 544, 960), (4, 3, 544, 960), (4, 3, 544, 960))}
    assert notes == []


def test_dynamic_height_width_take_the_configured_size_or_fail():
    opts = BuildOptions(input_width=320, input_height=240)
    profiles, _ = plan_profiles([("x", (1, 3, -1, -1))], opts)
    assert profiles["x"][2] == (1, 3, 240, 320)
    with pytest.raises(EngineBuildError, match="input.height/width"):
        plan_profiles([("x", (1, 3, -1, -1))], BuildOptions())


def test_configured_profile_wins_and_static_batch_notes_max_batch():
    given = {"x": ((1, 3, 8, 8), (2, 3, 8, 8), (8, 3, 8, 8))}
    profiles, _ = plan_profiles([("x", (-1, 3, 8, 8))], BuildOptions(profiles=given))
    assert profiles == given
    _, notes = plan_profiles([("y", (1, 3, 8, 8))], BuildOptions(max_batch=4))
    assert "static batch" in notes[0]


def test_builder_adds_the_profile_to_the_config():
    trt = make_trt(io={"inputs": [("input_1", (-1, 3, 16, 16))], "outputs": [("o", (-1, 2))]})
    result, record = build(trt, BuildOptions(max_batch=2))
    assert record["profiles"] == [{"input_1": [[1, 3, 16, 16], [2, 3, 16, 16], [2, 3, 16, 16]]}]
    assert result.io[0]["profile"] == [[1, 3, 16, 16], [2, 3, 16, 16], [2, 3, 16, 16]]


# -- calibration ------------------------------------------------------------------------------


def test_int8_with_a_cache_file_uses_a_cache_only_calibrator():
    trt = make_trt(fast_int8=True)
    result, record = build(
        trt,
        BuildOptions(precision="int8"),
        calibration=CalibrationInput(cache=b"TRT-8001-EntropyCalibration2"),
    )
    assert result.precision_obtained == "int8" and record["calibrator"] == "_CacheOnlyCalibrator"
    calibrator = trt.config.int8_calibrator
    assert calibrator.get_batch(["input_0"]) is None
    assert calibrator.read_calibration_cache() == b"TRT-8001-EntropyCalibration2"


def test_image_calibrator_feeds_preprocessed_batches_and_saves_the_cache(tmp_path):
    import numpy as np

    from edged.engine.calibration import ImageBatches
    from edged.tasks.contract import InputContract

    images = ["a.png", "b.png", "c.png", "d.png", "e.png"]
    uploaded, saved = [], []

    def batches(io):
        (inp,) = [t for t in io if t["mode"] == "input"]
        contract = InputContract(inp["shape"][3], inp["shape"][2], scale=1 / 255.0)
        return ImageBatches(
            images, contract, 2, read_image=lambda p: np.full((4, 6, 3), 255, np.uint8)
        )

    def upload(batch):
        uploaded.append(batch.copy())
        return 0xBEEF

    trt = make_trt(fast_int8=True)
    calibration = CalibrationInput(batches=batches, upload=upload, write_cache=saved.append)
    build(trt, BuildOptions(precision="int8"), calibration=calibration)
    calibrator = trt.config.int8_calibrator
    assert calibrator.get_batch_size() == 2
    assert calibrator.read_calibration_cache() is None
    assert calibrator.get_batch(["input_0"]) == [0xBEEF]
    assert calibrator.get_batch(["input_0"]) == [0xBEEF]
    assert calibrator.get_batch(["input_0"]) is None  # 5 images: two full batches
    assert uploaded[0].shape == (2, 3, 8, 8) and float(uploaded[0].max()) == pytest.approx(1.0)
    calibrator.write_calibration_cache(b"cache-bytes")
    assert saved == [b"cache-bytes"]


# -- timing cache and progress ----------------------------------------------------------------


def test_timing_cache_goes_in_and_comes_out():
    trt = make_trt()
    result, _ = build(trt, timing_cache=b"stored")
    assert trt.config.timing.data == b"stored" and result.timing_cache == b"stored+"


def test_corrupt_timing_cache_is_replaced_by_an_empty_one():
    result, _ = build(make_trt(), timing_cache=b"corrupt")
    assert result.timing_cache == b"+"


def test_progress_monitor_reports_tensorrt_phases_where_the_api_has_one():
    events = []
    trt = make_trt(**TRT10)
    build(trt, tracker=ProgressTracker(events.append))
    assert any(e.detail == "Building engine" for e in events)
    assert [e.fraction for e in events] == sorted(e.fraction for e in events)


def test_cancel_through_the_progress_monitor_stops_the_build():
    import threading

    cancel = threading.Event()
    cancel.set()
    with pytest.raises(EngineCancelled):
        build(make_trt(**TRT10), tracker=ProgressTracker(None, cancel))


def test_without_a_progress_monitor_edged_phases_are_still_reported():
    events = []
    build(make_trt(**TRT80), tracker=ProgressTracker(events.append))
    assert [e.phase for e in events][:3] == ["parse", "build", "publish"]

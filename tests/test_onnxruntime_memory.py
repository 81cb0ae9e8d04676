"""models.NAME.memory_pattern / memory_arena reach ONNX Runtime's session, and either setting
gives the same outputs for batches of every size (benchmarks/README.md, many streams, says
what each costs in memory and frames/s)."""

import numpy as np
import pytest

from edged.backends import onnxruntime_backend
from edged.config import build_config
from edged.tasks.loader import load_task

from . import onnx_models


def load(tmp_path, **keys):
    path = onnx_models.write(str(tmp_path / "m.onnx"), onnx_models.classifier(3, batch=None))
    raw = {"path": path, "threads": 1}
    raw.update(keys)
    return load_task(build_config({"models": {"m": raw}}).models["m"])


def session_options(task):
    # the options the live session was built with, as ONNX Runtime reports them
    return task.backend._session.get_session_options()


def shared_arena(options):
    # "1": the session takes the arena edged registered on ORT's environment (kSameAsRequested)
    try:
        return options.get_session_config_entry("session.use_env_allocators")
    except RuntimeError:  # ORT raises for a key never set
        return ""


def test_defaults_plan_no_pattern_and_share_an_arena_that_grows_as_requested(tmp_path):
    options = session_options(load(tmp_path))
    assert options.enable_mem_pattern is False
    assert options.enable_cpu_mem_arena is True
    assert shared_arena(options) == "1"
    assert onnxruntime_backend._arena_registered is True


@pytest.mark.parametrize(
    "pattern, arena, enabled, shared",
    [
        (True, "as_requested", True, "1"),
        (False, "power_of_two", True, ""),
        (True, "off", False, ""),
    ],
)
def test_the_keys_reach_the_session(tmp_path, pattern, arena, enabled, shared):
    options = session_options(load(tmp_path, memory_pattern=pattern, memory_arena=arena))
    assert options.enable_mem_pattern is pattern
    assert options.enable_cpu_mem_arena is enabled
    assert shared_arena(options) == shared


def test_an_arena_that_cannot_be_registered_falls_back_to_the_sessions_own(tmp_path, monkeypatch):
    import onnxruntime

    def refuse(info, config):
        raise RuntimeError("An allocator for this device has already been registered")

    monkeypatch.setattr(onnxruntime_backend, "_arena_registered", None)
    monkeypatch.setattr(onnxruntime, "create_and_register_allocator", refuse)
    options = session_options(load(tmp_path))
    assert options.enable_cpu_mem_arena is True
    assert shared_arena(options) == ""


def test_batches_of_every_size_give_the_same_outputs_either_way(tmp_path):
    frames = [np.full((20, 30, 3), v, np.uint8) for v in (0, 90, 180, 255)]
    planned = load(tmp_path, memory_pattern=True)
    unplanned = load(tmp_path, memory_pattern=False, memory_arena="off")
    for size in (1, 4, 2, 3, 1):
        tensors = [planned.preprocess(f) for f in frames[:size]]
        for a, b in zip(planned.infer(tensors), unplanned.infer(tensors)):
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_a_non_boolean_is_one_config_error():
    from edged.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        build_config({"models": {"m": {"path": "m.onnx", "memory_pattern": "yes"}}})
    assert "models.m.memory_pattern" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_config({"models": {"m": {"path": "m.onnx", "memory_arena": "power-of-two"}}})
    assert "models.m.memory_arena" in str(info.value)

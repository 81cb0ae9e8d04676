"""models.NAME.memory_pattern / memory_arena reach ONNX Runtime's session, and either setting
gives the same outputs for batches of every size (benchmarks/README.md, many streams, says
what each costs in memory and frames/s)."""

import numpy as np
import pytest

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


def test_defaults_plan_no_pattern_and_keep_the_arena(tmp_path):
    task = load(tmp_path)
    options = session_options(task)
    assert options.enable_mem_pattern is False
    assert options.enable_cpu_mem_arena is True


@pytest.mark.parametrize("pattern, arena", [(True, True), (False, False), (True, False)])
def test_the_keys_reach_the_session(tmp_path, pattern, arena):
    options = session_options(load(tmp_path, memory_pattern=pattern, memory_arena=arena))
    assert (options.enable_mem_pattern, options.enable_cpu_mem_arena) == (pattern, arena)


def test_batches_of_every_size_give_the_same_outputs_either_way(tmp_path):
    frames = [np.full((20, 30, 3), v, np.uint8) for v in (0, 90, 180, 255)]
    planned = load(tmp_path, memory_pattern=True)
    unplanned = load(tmp_path, memory_pattern=False, memory_arena=False)
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

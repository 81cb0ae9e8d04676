"""The canary's verdict on a new model's raw outputs (edged.update.seams.check_outputs)."""

import numpy as np
import pytest

from edged.errors import UpdateError
from edged.update.seams import check_outputs

OUT = {"cov": np.zeros((1, 3, 34, 60), np.float32), "bbox": np.ones((1, 12, 34, 60), np.float32)}


def test_finite_outputs_of_the_right_shape_within_budget_pass():
    check_outputs(OUT, {"shapes": {"cov": [1, 3, 34, 60]}, "latency_ms": 50}, None, 0.01)
    check_outputs(OUT, {"tolerance": 0.01}, {"bbox": OUT["bbox"] + 0.005}, 0.01)


@pytest.mark.parametrize(
    "outputs, canary, expected, latency, message",
    [
        ({"cov": np.array([0.1, np.nan], np.float32)}, {}, None, 0.01, "NaN or Inf"),
        ({"cov": np.array([np.inf])}, {}, None, 0.01, "NaN or Inf"),
        (OUT, {"shapes": {"cov": [1, 4, 34, 60]}}, None, 0.01, "shape [1, 3, 34, 60]"),
        (OUT, {"shapes": {"scores": [1]}}, None, 0.01, "no output named scores"),
        (OUT, {}, {"bbox": OUT["bbox"] * 2}, 0.01, "differs by 1"),
        (OUT, {"latency_ms": 10}, None, 0.5, "took 500 ms, budget 10 ms"),
    ],
)
def test_each_check_refuses_in_one_line(outputs, canary, expected, latency, message):
    with pytest.raises(UpdateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        check_outputs(outputs, canary, expected, latency)

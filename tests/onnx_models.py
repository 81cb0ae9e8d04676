"""Tiny ONNX models with exact contracts, built in tests (opset 11, IR 6: ORT 1.10 loads them)."""

from typing import Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 11
IR_VERSION = 6


def _finish(graph: "onnx.GraphProto") -> bytes:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model.SerializeToString()


def classifier(
    classes: int,
    softmax: bool = True,
    input_name: str = "input_0",
    output_name: str = "output_0",
    size: int = 224,
    weights: Optional[np.ndarray] = None,
    batch: Optional[int] = 1,
) -> bytes:
    """GlobalAveragePool -> Flatten -> MatMul(3 x classes) [-> Softmax]: a real, tiny classifier.

    With the default weights, class ``i`` scores ``mean(channel i % 3) * (i + 1)``.
    """
    if weights is None:
        weights = np.zeros((3, classes), dtype=np.float32)
        for i in range(classes):
            weights[i % 3, i] = float(i + 1)
    nodes = [
        helper.make_node("GlobalAveragePool", [input_name], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["logits" if softmax else output_name]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], [output_name], axis=1))
    graph = helper.make_graph(
        nodes,
        "tiny_classifier",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, classes])],
        [numpy_helper.from_array(weights.astype(np.float32), "w")],
    )
    return _finish(graph)


def detectnet(
    classes: int,
    width: int = 960,
    height: int = 544,
    names: Sequence[str] = ("input_1", "output_cov/Sigmoid", "output_bbox/BiasAdd"),
    batch: Optional[int] = 1,
    cov: Optional[np.ndarray] = None,
    bbox: Optional[np.ndarray] = None,
) -> bytes:
    """A DetectNet_v2-shaped model whose outputs are constants (plus 0 * a pooled input).

    ``cov`` [C, H/16, W/16] and ``bbox`` [4C, H/16, W/16] default to zeros. The output
    does not depend on the image, which makes decoding tests exact.
    """
    gh, gw = height // 16, width // 16
    cov = np.zeros((classes, gh, gw), np.float32) if cov is None else cov.astype(np.float32)
    bbox = np.zeros((4 * classes, gh, gw), np.float32) if bbox is None else bbox.astype(np.float32)
    inp, cov_name, bbox_name = names
    nodes = [
        # zero * pooled input keeps the input connected (runtimes drop unused inputs)
        helper.make_node("ReduceMean", [inp], ["m"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
        helper.make_node("Add", ["cov_c", "z"], [cov_name]),
        helper.make_node("Add", ["bbox_c", "z"], [bbox_name]),
    ]
    dim = batch if batch else "batch"
    graph = helper.make_graph(
        nodes,
        "tiny_detectnet",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [dim, 3, height, width])],
        [
            helper.make_tensor_value_info(cov_name, TensorProto.FLOAT, [dim, classes, gh, gw]),
            helper.make_tensor_value_info(bbox_name, TensorProto.FLOAT, [dim, 4 * classes, gh, gw]),
        ],
        [
            numpy_helper.from_array(np.zeros((1, 1, 1, 1), np.float32), "zero"),
            numpy_helper.from_array(cov[np.newaxis], "cov_c"),
            numpy_helper.from_array(bbox[np.newaxis], "bbox_c"),
        ],
    )
    return _finish(graph)


def write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path

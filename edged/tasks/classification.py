"""Image classification with the jetson-inference ResNet-18 contract.

Input ``input_0`` 1x3x224x224, RGB, ``(x/255 - mean)/std`` with ImageNet
mean/std, whole-frame nearest-neighbour stretch (jetson-inference's
``cudaTensorNormMeanRGB``; no crop). Output ``output_0`` [1, classes],
already softmaxed by jetson-inference's ``onnx_export.py``: softmax is
applied only when the outputs are not probabilities (dusty-nv/pytorch-classification
``onnx_export.py`` appends the softmax; ``--no-activation`` leaves it out).
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

import numpy as np

from ..backends.base import Backend, TensorSpec, find_tensor
from ..config import ModelConfig
from .base import Size, Task, Tensors
from .contract import InputDefaults
from .labels import check_label_count

OUTPUT_ALIASES = ("output_0",)
INPUT_ALIASES = ("input_0",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Classification:
    class_id: int
    label: str
    confidence: float

    def to_dict(self) -> Dict[str, Any]:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "confidence": round(self.confidence, 4),
        }


def looks_like_probabilities(scores: np.ndarray, tolerance: float = 1e-3) -> bool:
    """True when ``scores`` (1-D) are in [0, 1] and sum to 1 (a softmax was applied)."""
    return bool(
        scores.size
        and scores.min() >= -tolerance
        and scores.max() <= 1 + tolerance
        and abs(float(scores.sum()) - 1.0) <= tolerance * max(1, scores.size / 100)
    )


def softmax(scores: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D score vector (float64 inside, float32 out)."""
    shifted = scores.astype(np.float64) - scores.max()
    e = np.exp(shifted)
    return (e / e.sum()).astype(np.float32)


def top_k(probabilities: np.ndarray, k: int, threshold: float) -> List[int]:
    """Indices of the ``k`` highest probabilities that reach ``threshold``, best first.

    Ties keep the lower class index first (a stable order for tests and users).
    """
    order = np.argsort(-probabilities, kind="stable")[:k]
    return [int(i) for i in order if probabilities[i] >= threshold]


def classify(
    scores: np.ndarray, labels: Sequence[str], k: int, threshold: float, softmax_mode: str
) -> List[Classification]:
    """Post-process one frame's output vector into the top-k classifications."""
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    apply = softmax_mode == "always" or (
        softmax_mode == "auto" and not looks_like_probabilities(scores)
    )
    probs = softmax(scores) if apply else scores
    return [Classification(i, labels[i], float(probs[i])) for i in top_k(probs, k, threshold)]


class ClassificationTask(Task):
    kind = "classification"
    config_section = "classification"
    # jetson-inference's imageNet::PreProcess for ONNX models: RGB, x/255, ImageNet mean/std,
    # nearest-neighbour stretch (c/tensorConvert.cu, gpuTensorNormMean)
    input_defaults = InputDefaults(
        scale=1.0 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="nearest"
    )
    input_aliases = INPUT_ALIASES

    @classmethod
    def matches(cls, model: Tensors, config: ModelConfig) -> bool:
        """Any model: classification is what ``task: auto`` falls back to (registered last)."""
        return True

    def __init__(self, backend: Backend, config: ModelConfig, labels: Any) -> None:
        self.output = _find_output(backend, config)
        classes = int(np.prod([d for d in self.output.shape[1:] if d]))
        super().__init__(backend, config, check_label_count(labels, classes, config.path))
        self.settings = config.classification

    def postprocess(self, outputs: Dict[str, np.ndarray], source_size: Size) -> List[Any]:
        s = self.settings
        return classify(outputs[self.output.name], self.labels, s.top_k, s.threshold, s.softmax)


def _find_output(backend: Backend, config: ModelConfig) -> TensorSpec:
    name = config.classification.output
    outputs = backend.outputs
    if name:
        return find_tensor(outputs, [name], "output", config.path)
    if len(outputs) == 1:
        return outputs[0]
    return find_tensor(outputs, OUTPUT_ALIASES, "output", config.path)

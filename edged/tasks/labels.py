"""Class labels: ``labels.txt`` with one class per line, in the model's class order.

Follows jetson-inference's ``tensorNet::LoadClassLabels``: a line like
``n01440764 tench, Tinca tinca`` (a synset id, a space at character 10) keeps
only the description; any other line is the label itself (tao-tensorrt.md 4).
"""

import re
from typing import List, Optional, Sequence

from ..errors import ModelContractError, ModelError
from ..files import read_bounded

_SYNSET = re.compile(r"^n\d{8} ")

#: A labels file larger than this is refused (ImageNet's 1000 classes take ~30 KB).
MAX_LABELS_BYTES = 4 << 20


def parse_labels(text: str) -> List[str]:
    """Labels from the text of a labels file (blank trailing lines ignored)."""
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return [line[10:].strip() if _SYNSET.match(line) else line for line in lines]


def load_labels(path: str) -> List[str]:
    """Read a labels file.

    Raises:
        ModelError: missing, unreadable, not UTF-8, too large, or empty.
    """
    raw = read_bounded(path, MAX_LABELS_BYTES, "labels file", ModelError)
    try:
        labels = parse_labels(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise ModelError(f"{path}: labels file is not UTF-8 text") from e
    if not labels:
        raise ModelError(f"{path}: labels file has no labels")
    return labels


def check_label_count(labels: Optional[Sequence[str]], classes: int, model: str) -> List[str]:
    """Labels to use for a model with ``classes`` outputs; "class_N" names when none given.

    Raises:
        ModelContractError: the labels do not match the model's class count.
    """
    if labels is None:
        return [f"class_{i}" for i in range(classes)]
    if len(labels) != classes:
        raise ModelContractError(
            f"{model}: the model has {classes} classes but {len(labels)} labels were given"
        )
    return list(labels)

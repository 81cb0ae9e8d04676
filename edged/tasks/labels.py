"""Class labels: ``labels.txt`` with one class per line, in the model's class order.

Read as jetson-inference reads them (``c/imageNet.cpp``, ``imageNet::LoadClassInfo``), so
the same file names the same classes in both:

- every line is a class, blank lines included (a blank line is a class with an empty
  name); only the line break ending the last line does not start another;
- a line longer than 9 characters that starts with ``n`` and has a space at index 9
  (``n01440764 tench, Tinca tinca``: a WordNet synset id) names the class by the text
  after that space; any other line is the name as it stands (no trimming).

Deliberate differences: a last line without a line break keeps its last character
(jetson-inference cuts the last character of every synset line, assuming it is the
line break), a ``\r`` before the line break is dropped (files written on Windows), and
a count that differs from the model's classes is an error (jetson-inference fills
missing names with ``Class #N``; edged names the file and both counts instead).
"""

import re
from typing import List, Optional, Sequence

from ..errors import ModelContractError, ModelError
from ..files import read_bounded

#: a synset id: ``n`` and 8 more characters, then a space (imageNet.cpp checks only the
#: ``n`` and the space at index 9, not that the 8 are digits)
_SYNSET = re.compile(r"^n.{8} ", re.DOTALL)

#: A labels file larger than this is refused (ImageNet's 1000 classes take ~30 KB).
MAX_LABELS_BYTES = 4 << 20


def parse_labels(text: str) -> List[str]:
    """Labels from the text of a labels file, one per line (see the module docstring)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the break ending the last line starts no class
        lines.pop()
    labels = []
    for line in lines:
        if line.endswith("\r"):
            line = line[:-1]
        labels.append(line[10:] if _SYNSET.match(line) else line)
    return labels


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
        blank = sum(1 for label in labels if not label.strip())
        raise ModelContractError(
            "{}: the model has {} classes but {} labels were given{}".format(
                model, classes, len(labels),
                f" ({blank} of them blank lines, which count as classes)" if blank else "",
            )
        )  # fmt: skip
    return list(labels)

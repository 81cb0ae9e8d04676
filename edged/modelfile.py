"""Model artifacts on disk: read an ``.onnx`` or TAO ``.etlt`` file into memory.

The result is a :class:`ModelArtifact`: the plain model bytes, their format
(``onnx`` or ``uff``), and the sha256 that identifies them (the engine cache
keys on it). ``.etlt`` files are decrypted in memory and never
written out in plain form.

Every problem becomes one :class:`~edged.errors.ModelError` naming the file:
missing, unreadable, empty, not a model, truncated, wrong ``.etlt`` key.
The format check is a cheap walk over the top-level protobuf fields, so a
truncated or foreign file is rejected before any runtime parses it.
"""

import hashlib
import os
from typing import Optional

from .errors import ModelError, ModelFormatError, ModelKeyError
from .files import read_bounded
from .modelcheck import ONNX, payload_looks_valid

#: Reading more than this into memory is refused (PeopleNet ResNet-34 is ~85 MB).
MAX_MODEL_BYTES = 1 << 30


class ModelArtifact:
    """A model's plain bytes plus what identifies them."""

    __slots__ = ("path", "format", "data", "sha256", "input_name", "encrypted")

    def __init__(
        self,
        path: str,
        format: str,
        data: bytes,
        input_name: str = "",
        encrypted: bool = False,
    ) -> None:
        self.path = path
        self.format = format
        self.data = data
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.input_name = input_name
        self.encrypted = encrypted

    @property
    def name(self) -> str:
        """File name without directory and extension, e.g. ``resnet18``."""
        return os.path.splitext(os.path.basename(self.path))[0]

    def __repr__(self) -> str:
        size = len(self.data)
        return (
            f"ModelArtifact({self.path!r}, {self.format}, {size} bytes, sha256={self.sha256[:12]})"
        )


def read_model_bytes(path: str) -> bytes:
    """Read a model file, turning OS errors into one clear ModelError."""
    data = read_bounded(path, MAX_MODEL_BYTES, "model file", ModelError)
    if not data:
        raise ModelFormatError(f"{path}: model file is empty")
    return data


def load_model_artifact(path: str, key: Optional[str] = None) -> ModelArtifact:
    """Read ``path`` (``.onnx`` or ``.etlt``) into a checked :class:`ModelArtifact`.

    Args:
        path: the model file.
        key: the ``.etlt`` model key (``tlt_encode`` for PeopleNet); ignored for ONNX.

    Raises:
        ModelError: the file is missing, unreadable, not a model, truncated,
            or (``.etlt``) the key is wrong.
    """
    data = read_model_bytes(path)
    if path.lower().endswith(".etlt"):
        return _load_etlt(path, data, key)
    if not payload_looks_valid(data, ONNX):
        raise ModelFormatError(
            f"{path}: not a valid ONNX model (truncated, damaged or another format)"
        )
    return ModelArtifact(path, ONNX, data)


def _load_etlt(path: str, blob: bytes, key: Optional[str]) -> ModelArtifact:
    from . import etlt  # local: pulls in `cryptography` only when an .etlt is used

    if not key:
        raise ModelKeyError(
            f"{path}: an .etlt model needs its model key (--model-key, or `key` in the config; "
            "NVIDIA's PeopleNet uses tlt_encode)"
        )
    payload = etlt.decode_etlt(blob, key, path)
    # There is no MAC in .etlt (see edged.etlt): a wrong key yields same-length
    # garbage, detected only because it fails to parse as the announced format.
    if not payload_looks_valid(payload.data, payload.format):
        raise ModelKeyError(f"{path}: wrong model key or corrupt file")
    return ModelArtifact(path, payload.format, payload.data, payload.input_name, encrypted=True)

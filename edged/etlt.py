"""TAO ``.etlt`` container: decrypt in memory, encrypt for tools and tests.

Layout (tao-tensorrt.md 1.1, after NVIDIA/tao_deploy ``utils/decoding.py``)::

    int32 LE  N             length of the input node name (struct "<i")
    N bytes   input name    ASCII; N > 0 -> UFF payload, N == 0 -> ONNX payload
    rest      ciphertext    16-byte nonce (the full initial AES counter block),
                            then AES-256-CTR(plaintext), same length as the plaintext

The AES key is PBKDF2-HMAC-SHA256(model key, fixed salt, 100 000 iterations,
32 bytes) (tao-tensorrt.md 1.2). There is no MAC: a wrong key decrypts to
same-length garbage without any error, so callers check the plaintext with
:func:`payload_looks_valid` (edged.modelfile turns a failure into
"wrong model key or corrupt file"). The model key is never logged and never
put into an error message.
"""

import functools
import hashlib
import os
import struct
from typing import Dict, NamedTuple, Optional, Tuple

from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ModelFormatError

ONNX = "onnx"
UFF = "uff"

#: tao-tensorrt.md 1.2: the salt every TAO release uses (from the eff_tao_encryption wheel)
PBKDF2_SALT = bytes.fromhex("cb3cdc2e858689da908563056a00dbed09ac076c785543c4610f06d31b53a732")
PBKDF2_ITERATIONS = 100000
AES_KEY_BYTES = 32
NONCE_BYTES = 16
HEADER = struct.Struct("<i")
#: A TF node name longer than this is not a node name: the file is not an .etlt.
MAX_INPUT_NAME_BYTES = 4096
#: Bound on the top-level protobuf walk (real models have a few dozen top-level fields;
#: UFF has one per weight tensor). Stops a pathological file from costing minutes.
MAX_TOP_LEVEL_FIELDS = 200000


class EtltPayload(NamedTuple):
    """A decrypted ``.etlt``: the model bytes and what the header says about them."""

    input_name: str  # '' for an ONNX payload
    format: str  # ONNX or UFF
    data: bytes


@functools.lru_cache(maxsize=8)
def _aes_key(model_key: str) -> bytes:
    # PBKDF2 costs ~100 ms; a daemon reloading a model (or tests) should pay it once per key.
    return hashlib.pbkdf2_hmac(
        "sha256", model_key.encode("utf-8"), PBKDF2_SALT, PBKDF2_ITERATIONS, AES_KEY_BYTES
    )


def _aes_ctr(model_key: str, nonce: bytes) -> Cipher:
    # backend= is required by cryptography < 3.1 and ignored by newer releases.
    return Cipher(algorithms.AES(_aes_key(model_key)), modes.CTR(nonce), backend=default_backend())


def decode_etlt(blob: bytes, key: str, source: str) -> EtltPayload:
    """Decrypt an ``.etlt`` file's bytes in memory.

    Args:
        blob: the whole file.
        key: the model key (``tlt_encode`` for PeopleNet).
        source: the file name, used only in error messages.

    Raises:
        ModelFormatError: the header is not an ``.etlt`` header, or the file is truncated.
            A wrong key is NOT detected here (there is no MAC); see :func:`payload_looks_valid`.
    """
    if len(blob) < HEADER.size:
        raise ModelFormatError(
            "{}: not a TAO .etlt file ({} bytes, shorter than the 4-byte header)".format(
                source, len(blob)
            )
        )
    (name_len,) = HEADER.unpack_from(blob, 0)
    _check_name_length(name_len, len(blob), source)
    start = HEADER.size + name_len
    input_name = _decode_input_name(blob[HEADER.size : start], source)
    body = memoryview(blob)[start:]  # no copy of a possibly 100 MB model
    if len(body) <= NONCE_BYTES:
        raise ModelFormatError(
            "{}: truncated TAO .etlt file ({} bytes after the header: a 16-byte nonce and "
            "an empty payload)".format(source, len(body))
        )
    decryptor = _aes_ctr(key, bytes(body[:NONCE_BYTES])).decryptor()
    data = decryptor.update(body[NONCE_BYTES:]) + decryptor.finalize()
    return EtltPayload(input_name, UFF if name_len else ONNX, data)


def _check_name_length(name_len: int, file_len: int, source: str) -> None:
    if name_len < 0:
        why = "negative"
    elif name_len > MAX_INPUT_NAME_BYTES:
        why = "more than the {} bytes a node name can have".format(MAX_INPUT_NAME_BYTES)
    elif name_len > file_len - HEADER.size:
        why = "longer than the {}-byte file".format(file_len)
    else:
        return
    raise ModelFormatError(
        "{}: not a TAO .etlt file (input-name length {} is {})".format(source, name_len, why)
    )


def _decode_input_name(raw: bytes, source: str) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise ModelFormatError(
            "{}: not a TAO .etlt file (input-node name is not ASCII)".format(source)
        ) from e
    if not name.isprintable():
        raise ModelFormatError(
            "{}: not a TAO .etlt file (input-node name has control characters)".format(source)
        )
    return name


def encode_etlt(
    payload: bytes, key: str, input_name: str = "", nonce: Optional[bytes] = None
) -> bytes:
    """The exact inverse of :func:`decode_etlt` (for tools and tests).

    Args:
        payload: the plain model (ONNX when ``input_name`` is empty, UFF otherwise).
        key: the model key.
        input_name: the UFF input node name, '' for ONNX (tao-tensorrt.md 1.1).
        nonce: 16 bytes; random when not given (CTR must never reuse one with a key).
    """
    name = input_name.encode("ascii")
    if len(name) > MAX_INPUT_NAME_BYTES:
        raise ValueError("input name longer than {} bytes".format(MAX_INPUT_NAME_BYTES))
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError("nonce must be {} bytes, got {}".format(NONCE_BYTES, len(nonce)))
    encryptor = _aes_ctr(key, bytes(nonce)).encryptor()
    body = encryptor.update(payload) + encryptor.finalize()
    return HEADER.pack(len(name)) + name + bytes(nonce) + body


# -- plaintext check --------------------------------------------------------------------------

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5

#: Wire types of the top-level fields we know (onnx.proto ModelProto; uff.proto MetaGraph as
#: read by netron's uff-proto.js). Unknown fields are allowed (newer writers add fields).
_KNOWN_WIRE_TYPES = {
    ONNX: {1: _VARINT, 2: _LEN, 3: _LEN, 4: _LEN, 5: _VARINT, 6: _LEN, 7: _LEN, 8: _LEN},
    UFF: {1: _VARINT, 2: _VARINT, 3: _LEN, 4: _LEN, 5: _LEN, 100: _LEN},
}
#: ONNX IR versions 1 (2017) .. 10 (2024); room for a few more.
_ONNX_IR_VERSIONS = range(1, 21)


class _Malformed(Exception):
    """Internal: the bytes are not a protobuf message."""


def payload_looks_valid(data: bytes, fmt: str) -> bool:
    """Whether ``data`` is plausibly a serialized ONNX ModelProto / UFF MetaGraph.

    A bounded walk over the top-level protobuf fields only (the graph itself is
    skipped by its length), so it costs microseconds even for a 100 MB model:
    every key must be a valid varint with wire type 0/1/2/5 and field number >= 1,
    every length must stay inside the buffer, and the walk must end exactly at the
    end. ONNX also needs ``ir_version`` (field 1, varint 1..20) and ``graph``
    (field 7, length-delimited); UFF needs ``version`` (field 1, varint).
    Random bytes (what a wrong key yields) essentially never pass.
    """
    try:
        fields = _top_level_fields(data, _KNOWN_WIRE_TYPES.get(fmt, {}))
    except _Malformed:
        return False
    if fmt == ONNX:
        return fields.get(1) in _ONNX_IR_VERSIONS and 7 in fields
    if fmt == UFF:
        return 1 in fields
    return False


def _top_level_fields(data: bytes, known: Dict[int, int]) -> Dict[int, Optional[int]]:
    """Field number -> last varint value (None for other wire types); raises _Malformed."""
    view = memoryview(data)
    end = len(view)
    pos = 0
    fields = {}  # type: Dict[int, Optional[int]]
    count = 0
    while pos < end:
        count += 1
        if count > MAX_TOP_LEVEL_FIELDS:
            raise _Malformed()
        tag, pos = _read_varint(view, pos, end)
        number, wire = tag >> 3, tag & 7
        if number < 1 or known.get(number, wire) != wire:
            raise _Malformed()
        value = None  # type: Optional[int]
        if wire == _VARINT:
            value, pos = _read_varint(view, pos, end)
        elif wire == _LEN:
            length, pos = _read_varint(view, pos, end)
            pos += length
        elif wire == _I64:
            pos += 8
        elif wire == _I32:
            pos += 4
        else:  # groups (3, 4) are not used by ONNX or UFF; 6 and 7 do not exist
            raise _Malformed()
        if pos > end:
            raise _Malformed()
        fields[number] = value
    return fields


def _read_varint(view: memoryview, pos: int, end: int) -> Tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):  # at most 10 bytes
        if pos >= end:
            raise _Malformed()
        byte = view[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
    raise _Malformed()

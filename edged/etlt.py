"""TAO ``.etlt`` container: decrypt in memory, encrypt for tools and tests.

Layout (NVIDIA/tao_deploy ``nvidia_tao_deploy/utils/decoding.py``, ``decode_etlt``)::

    int32 LE  N             length of the input node name (struct "<i")
    N bytes   input name    ASCII; N > 0 -> UFF payload, N == 0 -> ONNX payload
    rest      ciphertext    16-byte nonce (the full initial AES counter block),
                            then AES-256-CTR(plaintext), same length as the plaintext

The AES key is PBKDF2-HMAC-SHA256(model key, fixed salt, 100 000 iterations, 32 bytes), as
NVIDIA's ``eff_tao_encryption`` wheel does (its ``tao_codec`` docstring: "PBKDF2 passphrase
stretching ... AES in CTR mode ... the raw initialization value ... as the first item"). There
is no MAC: a wrong key decrypts to same-length garbage without any error, so callers check the
plaintext with :func:`payload_looks_valid` (edged.modelfile turns a failure into "wrong model
key or corrupt file"). The model key is never logged and never put into an error message.
"""

import functools
import hashlib
import os
import struct
import warnings
from typing import NamedTuple, Optional

with warnings.catch_warnings():
    # cryptography warns at import that Python 3.6/3.8 are deprecated: those are the Jetson
    # Pythons edged supports on purpose, and CLI errors must stay one line.
    warnings.simplefilter("ignore")
    from cryptography.hazmat.backends import default_backend
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .errors import ModelFormatError
from .modelcheck import ONNX, UFF, payload_looks_valid

__all__ = ["ONNX", "UFF", "EtltPayload", "decode_etlt", "encode_etlt", "payload_looks_valid"]


#: The salt every TAO release uses (NVIDIA's eff_tao_encryption wheel, ``tao_codec``)
PBKDF2_SALT = bytes.fromhex("cb3cdc2e858689da908563056a00dbed09ac076c785543c4610f06d31b53a732")
PBKDF2_ITERATIONS = 100000
AES_KEY_BYTES = 32
NONCE_BYTES = 16
HEADER = struct.Struct("<i")
#: A TF node name longer than this is not a node name: the file is not an .etlt.
MAX_INPUT_NAME_BYTES = 4096


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
            f"{source}: not a TAO .etlt file ({len(blob)} bytes, shorter than the 4-byte header)"
        )
    (name_len,) = HEADER.unpack_from(blob, 0)
    _check_name_length(name_len, len(blob), source)
    start = HEADER.size + name_len
    input_name = _decode_input_name(blob[HEADER.size : start], source)
    body = memoryview(blob)[start:]  # no copy of a possibly 100 MB model
    if len(body) <= NONCE_BYTES:
        raise ModelFormatError(
            f"{source}: truncated TAO .etlt file ({len(body)} bytes after the header: "
            "a 16-byte nonce and "
            "an empty payload)"
        )
    decryptor = _aes_ctr(key, bytes(body[:NONCE_BYTES])).decryptor()
    data = decryptor.update(body[NONCE_BYTES:]) + decryptor.finalize()
    return EtltPayload(input_name, UFF if name_len else ONNX, data)


def _check_name_length(name_len: int, file_len: int, source: str) -> None:
    if name_len < 0:
        why = "negative"
    elif name_len > MAX_INPUT_NAME_BYTES:
        why = f"more than the {MAX_INPUT_NAME_BYTES} bytes a node name can have"
    elif name_len > file_len - HEADER.size:
        why = f"longer than the {file_len}-byte file"
    else:
        return
    raise ModelFormatError(
        f"{source}: not a TAO .etlt file (input-name length {name_len} is {why})"
    )


def _decode_input_name(raw: bytes, source: str) -> str:
    try:
        name = raw.decode("ascii")
    except UnicodeDecodeError as e:
        raise ModelFormatError(
            f"{source}: not a TAO .etlt file (input-node name is not ASCII)"
        ) from e
    if not name.isprintable():
        raise ModelFormatError(
            f"{source}: not a TAO .etlt file (input-node name has control characters)"
        )
    return name


def encode_etlt(
    payload: bytes, key: str, input_name: str = "", nonce: Optional[bytes] = None
) -> bytes:
    """The exact inverse of :func:`decode_etlt` (for tools and tests).

    Args:
        payload: the plain model (ONNX when ``input_name`` is empty, UFF otherwise).
        key: the model key.
        input_name: the UFF input node name, '' for ONNX (tao_deploy's ``encode_etlt``).
        nonce: 16 bytes; random when not given (CTR must never reuse one with a key).
    """
    name = input_name.encode("ascii")
    if len(name) > MAX_INPUT_NAME_BYTES:
        raise ValueError(f"input name longer than {MAX_INPUT_NAME_BYTES} bytes")
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    encryptor = _aes_ctr(key, bytes(nonce)).encryptor()
    body = encryptor.update(payload) + encryptor.finalize()
    return HEADER.pack(len(name)) + name + bytes(nonce) + body

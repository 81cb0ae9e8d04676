"""TAO .etlt container: decryption against an independent AES-CTR computation, header guards,
wrong-key detection by the payload check (layout: NVIDIA/tao_deploy ``utils/decoding.py``).

No ``onnx`` package needed: a tiny hand-written protobuf writer builds a real ONNX ModelProto.
"""

import hashlib
import logging
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from cryptography.hazmat.backends import default_backend
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from edged.errors import ModelFormatError
from edged.etlt import EtltPayload, decode_etlt, encode_etlt, payload_looks_valid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "tlt_encode"
# Written out here rather than imported, so the test checks the module's constants too.
SALT = bytes.fromhex("cb3cdc2e858689da908563056a00dbed09ac076c785543c4610f06d31b53a732")


# -- a minimal protobuf writer: enough for a valid ONNX ModelProto ---------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _value_info(name: str, dims: list) -> bytes:
    # ValueInfoProto{name=1, type=2{tensor_type=1{elem_type=1, shape=2{dim=1{dim_value=1}}}}}
    shape = b"".join(_field_bytes(1, _field_varint(1, d)) for d in dims)
    tensor_type = _field_varint(1, 1) + _field_bytes(2, shape)  # elem_type FLOAT
    return _field_bytes(1, name.encode()) + _field_bytes(2, _field_bytes(1, tensor_type))


def tiny_onnx_model(ir_version: int = 7) -> bytes:
    """ModelProto: Identity(x) -> y, opset 13. onnx.checker accepts these bytes."""
    node = _field_bytes(1, b"x") + _field_bytes(2, b"y") + _field_bytes(4, b"Identity")
    graph = (
        _field_bytes(1, node)  # node
        + _field_bytes(2, b"tiny")  # name
        + _field_bytes(11, _value_info("x", [1, 3]))  # input
        + _field_bytes(12, _value_info("y", [1, 3]))  # output
    )
    opset = _field_bytes(1, b"") + _field_varint(2, 13)  # OperatorSetIdProto{domain, version}
    return (
        _field_varint(1, ir_version)  # ir_version
        + _field_bytes(2, b"edged-tests")  # producer_name
        + _field_bytes(7, graph)  # graph
        + _field_bytes(8, opset)  # opset_import
    )


def tiny_uff_model() -> bytes:
    """A UFF MetaGraph-shaped message: version=1, descriptor_core_version=1, one graph."""
    graph = _field_bytes(1, b"main") + _field_bytes(2, _field_bytes(1, b"input_1"))
    return _field_varint(1, 1) + _field_varint(2, 1) + _field_bytes(4, graph)


def independent_encrypt(payload: bytes, key: str, name: bytes, nonce: bytes) -> bytes:
    """The .etlt layout computed straight from its description (tao_deploy's ``decode_etlt``,
    the ``tao_codec`` parameters), not from edged."""
    aes_key = hashlib.pbkdf2_hmac("sha256", key.encode("utf-8"), SALT, 100000, 32)
    enc = Cipher(algorithms.AES(aes_key), modes.CTR(nonce), backend=default_backend()).encryptor()
    return struct.pack("<i", len(name)) + name + nonce + enc.update(payload) + enc.finalize()


# -- decoding ---------------------------------------------------------------------------------


def test_decode_matches_an_independent_aes_ctr_computation_onnx_header():
    payload = tiny_onnx_model() * 37  # > 1024 bytes: more than one of TAO's chunks
    nonce = bytes(range(16))
    blob = independent_encrypt(payload, KEY, b"", nonce)

    assert decode_etlt(blob, KEY, "m.etlt") == EtltPayload("", "onnx", payload)
    assert encode_etlt(payload, KEY, nonce=nonce) == blob


def test_decode_matches_an_independent_aes_ctr_computation_uff_header():
    payload = tiny_uff_model()
    nonce = b"\xff" * 16  # the counter wraps past 2**128 after the first block
    blob = independent_encrypt(payload, "nvidia_tlt", b"input_1", nonce)

    assert decode_etlt(blob, "nvidia_tlt", "m.etlt") == EtltPayload("input_1", "uff", payload)
    assert encode_etlt(payload, "nvidia_tlt", "input_1", nonce=nonce) == blob


@pytest.mark.parametrize("input_name, fmt", [("", "onnx"), ("input_1", "uff")])
def test_round_trip_keeps_payload_name_and_format(input_name, fmt):
    payload = os.urandom(5000)
    blob = encode_etlt(payload, KEY, input_name)

    assert len(blob) == 4 + len(input_name) + 16 + len(payload)
    assert decode_etlt(blob, KEY, "m.etlt") == EtltPayload(input_name, fmt, payload)


def test_encode_uses_a_fresh_random_nonce_each_time():
    payload = tiny_onnx_model()
    assert encode_etlt(payload, KEY) != encode_etlt(payload, KEY)


def test_non_ascii_key_is_utf8_encoded():
    payload = tiny_onnx_model()
    blob = independent_encrypt(payload, "schlüssel", b"", bytes(16))
    assert decode_etlt(blob, "schlüssel", "m.etlt").data == payload


# -- wrong key ------------------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["nvidia_tlt", "nvidia_tao", "tlt_encodf", ""])
def test_wrong_key_gives_garbage_that_the_payload_check_rejects(wrong):
    payload = tiny_onnx_model()
    blob = encode_etlt(payload, KEY)

    garbage = decode_etlt(blob, wrong, "m.etlt")  # no MAC: no error here

    assert len(garbage.data) == len(payload)
    assert garbage.data != payload
    assert not payload_looks_valid(garbage.data, "onnx")


def test_wrong_key_on_a_uff_payload_is_rejected_too():
    blob = encode_etlt(tiny_uff_model(), KEY, "input_1")
    assert not payload_looks_valid(decode_etlt(blob, "nvidia_tlt", "m.etlt").data, "uff")


# -- header guards --------------------------------------------------------------------------


def _format_error(blob: bytes) -> str:
    with pytest.raises(ModelFormatError) as info:
        decode_etlt(blob, KEY, "bad.etlt")
    message = str(info.value)
    assert message.startswith("bad.etlt: ")
    assert "\n" not in message
    assert KEY not in message
    return message


def test_name_length_of_2_to_the_31_is_rejected_as_negative():
    # struct "<i" reads 0x80000000 as -2**31
    message = _format_error(struct.pack("<I", 2**31) + os.urandom(64))
    assert "not a TAO .etlt file (input-name length -2147483648 is negative)" in message


def test_name_length_of_2_to_the_31_minus_1_is_rejected_as_too_long():
    message = _format_error(struct.pack("<i", 2**31 - 1) + os.urandom(64))
    assert "input-name length 2147483647 is more than the 4096 bytes" in message


def test_name_length_beyond_the_end_of_the_file_is_rejected():
    message = _format_error(struct.pack("<i", 100) + b"input_1")
    assert "input-name length 100 is longer than the 11-byte file" in message


def test_file_shorter_than_the_header_is_rejected():
    assert "shorter than the 4-byte header" in _format_error(b"\x00\x00")


def test_non_ascii_input_name_is_rejected():
    name = "eingang_ä".encode()
    message = _format_error(struct.pack("<i", len(name)) + name + os.urandom(64))
    assert "input-node name is not ASCII" in message


def test_control_characters_in_input_name_are_rejected():
    message = _format_error(struct.pack("<i", 3) + b"a\x00b" + os.urandom(64))
    assert "control characters" in message


def test_empty_payload_is_rejected():
    blob = encode_etlt(b"", KEY)  # header + nonce only
    assert len(blob) == 20
    assert "truncated TAO .etlt file (16 bytes after the header" in _format_error(blob)
    assert "empty payload" in _format_error(blob)


@pytest.mark.parametrize("keep", [4, 5, 19, 20])
def test_truncated_file_is_rejected(keep):
    blob = encode_etlt(tiny_onnx_model(), KEY)
    assert "truncated" in _format_error(blob[:keep])


def test_truncated_ciphertext_decrypts_to_a_payload_the_check_rejects():
    blob = encode_etlt(tiny_onnx_model(), KEY)
    cut = decode_etlt(blob[:-5], KEY, "m.etlt")
    assert not payload_looks_valid(cut.data, "onnx")


def test_the_key_is_never_logged(caplog):
    caplog.set_level(logging.DEBUG)
    secret = "a-very-secret-model-key"
    blob = encode_etlt(tiny_onnx_model(), secret)
    decode_etlt(blob, secret, "m.etlt")
    with pytest.raises(ModelFormatError) as info:
        decode_etlt(blob[:10], secret, "m.etlt")
    assert secret not in str(info.value)
    assert all(secret not in r.getMessage() for r in caplog.records)


# -- payload check --------------------------------------------------------------------------


def test_real_onnx_bytes_pass_the_payload_check():
    assert payload_looks_valid(tiny_onnx_model(), "onnx")
    assert payload_looks_valid(tiny_onnx_model(ir_version=10), "onnx")


def test_uff_shaped_bytes_pass_the_uff_check():
    assert payload_looks_valid(tiny_uff_model(), "uff")


def test_onnx_without_graph_or_with_absurd_ir_version_fails():
    model = tiny_onnx_model()
    no_graph = _field_varint(1, 7) + _field_bytes(2, b"x")
    assert not payload_looks_valid(no_graph, "onnx")
    assert not payload_looks_valid(tiny_onnx_model(ir_version=0), "onnx")
    assert not payload_looks_valid(tiny_onnx_model(ir_version=500), "onnx")
    assert not payload_looks_valid(model + b"\x00", "onnx")  # field number 0
    assert not payload_looks_valid(model[:-1], "onnx")  # length runs past the end
    assert not payload_looks_valid(b"", "onnx")


def test_field_with_the_wrong_wire_type_fails():
    graph_as_varint = _field_varint(1, 7) + _field_varint(7, 1)
    assert not payload_looks_valid(graph_as_varint, "onnx")


def test_onnx_and_uff_checks_do_not_accept_each_other():
    assert not payload_looks_valid(tiny_uff_model(), "onnx")
    assert not payload_looks_valid(tiny_onnx_model(), "unknown-format")


def test_random_bytes_essentially_never_pass():
    rng = np.random.RandomState(1234)
    for seed in range(200):
        size = int(np.exp(rng.uniform(np.log(1024), np.log(5 * 1024 * 1024))))
        garbage = np.random.RandomState(seed).bytes(size)
        assert not payload_looks_valid(garbage, "onnx"), seed
        assert not payload_looks_valid(garbage, "uff"), seed


# -- the encoder tool -------------------------------------------------------------------------


def test_etlt_encode_tool_writes_a_file_that_decodes(tmp_path):
    key = "Secret-K3y"  # unlike "tlt_encode", not part of pytest's tmp_path names
    model = tmp_path / "m.onnx"
    model.write_bytes(tiny_onnx_model())
    out = tmp_path / "m.etlt"
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "tools/etlt_encode.py", "--key", key, str(model), str(out)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert key not in proc.stdout + proc.stderr
    assert decode_etlt(out.read_bytes(), key, str(out)) == EtltPayload(
        "", "onnx", tiny_onnx_model()
    )


def test_etlt_encode_tool_refuses_a_file_that_is_not_a_model(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_bytes(b"hello, not a model")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run(
        [sys.executable, "tools/etlt_encode.py", "--key", KEY, str(bogus), str(tmp_path / "o")],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    assert proc.returncode == 2
    assert "not a valid ONNX model" in proc.stderr
    assert not (tmp_path / "o").exists()

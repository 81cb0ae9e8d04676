"""Is this plausibly a serialized ONNX ModelProto / UFF MetaGraph? A cheap protobuf walk.

Used before any runtime parses a model: a truncated or foreign ``.onnx`` file,
and the same-length garbage a wrong ``.etlt`` key yields (there is no MAC:
:mod:`edged.etlt`), are rejected in microseconds with a clear message.
"""

from typing import Dict, Optional, Tuple

ONNX = "onnx"
UFF = "uff"

#: Bound on the top-level protobuf walk (real models have a few dozen top-level fields;
#: UFF has one per weight tensor). Stops a pathological file from costing minutes.
MAX_TOP_LEVEL_FIELDS = 200000

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

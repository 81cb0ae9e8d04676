"""Canonical JSON: the exact bytes a signature covers.

Keys sorted, no insignificant whitespace, UTF-8, as TUF's canonical JSON
(theupdateframework.github.io/specification, "Document formats"). Unlike TUF, finite floats are
allowed (a model's task config has thresholds): Python writes them in their shortest round-trip
form (``repr``), and both ends of an edged update are edged's own encoder. NaN and infinities,
which JSON cannot carry, are refused.
"""

import json
import math
from typing import Any

from ..errors import UpdateError

#: JSON nesting that a signed document may have; deeper is refused before anything else
MAX_DEPTH = 16


def _check(value: Any, depth: int, path: str) -> None:
    if depth > MAX_DEPTH:
        raise UpdateError(f"{path or 'document'}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UpdateError(f"{path or 'document'}: {value} is not a finite number")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UpdateError(f"{path or 'document'}: keys must be strings")
            _check(item, depth + 1, f"{path}.{key}" if path else key)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check(item, depth + 1, f"{path}[{i}]")
        return
    raise UpdateError(f"{path or 'document'}: {type(value).__name__} is not a JSON value")


def encode(value: Any) -> bytes:
    """The canonical bytes of ``value`` (dicts, lists, str, int, bool, None).

    Raises:
        UpdateError: a float, a non-string key, or nesting deeper than MAX_DEPTH.
    """
    _check(value, 0, "")
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def decode(data: bytes, max_bytes: int, what: str) -> Any:
    """Parse untrusted JSON bytes with a size cap and the depth limit, one clear error.

    Raises:
        UpdateError: too large, not UTF-8 JSON, or too deep.
    """
    if len(data) > max_bytes:
        raise UpdateError(f"{what}: {len(data)} bytes, more than the {max_bytes} accepted")
    depth = 0
    deepest = 0
    in_string = False
    escaped = False
    # count nesting before json.loads builds anything (a deep document is a recursion bomb)
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH + 1:
                raise UpdateError(f"{what}: nested deeper than {MAX_DEPTH} levels")
        elif byte in (0x7D, 0x5D):
            depth -= 1
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as e:
        raise UpdateError(f"{what}: not UTF-8 JSON ({e})") from e


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")

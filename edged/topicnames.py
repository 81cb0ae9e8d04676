"""Which strings are valid MQTT topics and topic levels (MQTT 3.1.1 section 4.7; 5.0 4.7).

Checked like Home Assistant's ``valid_topic``: UTF-8, not empty, at most 65,535 bytes, no NUL,
no control characters, no Unicode non-characters; names edged builds topics from (prefix,
device, stream, command) also carry no wildcards and no ``/``. Below both the config loader
and the MQTT client, which both ask.
"""

import re
from typing import Optional

#: MQTT's limit on an encoded topic (a 16-bit length prefix).
MAX_TOPIC_BYTES = 65535

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _is_noncharacter(ch: str) -> bool:
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def topic_problem(topic: str, allow_wildcards: bool = False) -> Optional[str]:
    """Why ``topic`` is not a valid MQTT topic (or filter), or None when it is."""
    if not isinstance(topic, str) or not topic:
        return "is empty"
    try:
        encoded = topic.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(encoded) > MAX_TOPIC_BYTES:
        return f"is longer than {MAX_TOPIC_BYTES} bytes"
    if "\x00" in topic:
        return "contains NUL"
    if _CONTROL.search(topic):
        return "contains a control character"
    if any(_is_noncharacter(ch) for ch in topic):
        return "contains a Unicode non-character"
    if not allow_wildcards and ("+" in topic or "#" in topic):
        return "contains a wildcard (+ or #)"
    return None


def level_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be ONE topic level edged builds a topic from, or None."""
    problem = topic_problem(name)
    if problem:
        return problem
    if "/" in name:
        return "contains '/'"
    if name.startswith("$"):
        return "starts with '$' (reserved for broker topics)"
    return None


def prefix_problem(prefix: str) -> Optional[str]:
    """Why ``prefix`` cannot start edged's topics, or None. It may have several levels."""
    problem = topic_problem(prefix)
    if problem:
        return problem
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        return "has an empty level (a leading, trailing or double '/')"
    if prefix.startswith("$"):
        return "starts with '$' (reserved for broker topics)"
    return None

"""A small JSON Schema (Draft 7 subset) validator with messages written for people.

Why our own and not ``jsonschema``: its messages do not say which key path
was wrong in words a user reads ("Additional properties are not allowed"),
and on the Nano (Python 3.6) its last release drags in pyrsistent builds.
This module implements exactly the keywords ``schema.json`` uses; the test
suite checks the published schema with the real ``jsonschema`` too, so
editors and this validator agree.

Every problem is reported as ``key.path: what is wrong (got VALUE; expected
WHAT)``; a misspelt key gets a "did you mean" suggestion.
"""

import copy
import difflib
import math
import re
from typing import Any, List, Mapping, Optional, Sequence

from ..redact import redact

_TYPE_NAMES = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}

SUPPORTED_KEYWORDS = frozenset(
    [
        "$schema", "$id", "$ref", "title", "description", "default", "definitions",
        "type", "properties", "additionalProperties", "required", "propertyNames",
        "enum", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
        "minLength", "maxLength", "pattern", "items", "minItems", "maxItems",
    ]
)  # fmt: skip


def _is_type(value: Any, name: str) -> bool:
    if name == "object":
        return isinstance(value, Mapping)
    if name == "array":
        return isinstance(value, list)
    if name == "string":
        return isinstance(value, str)
    if name == "boolean":
        return isinstance(value, bool)
    if name == "null":
        return value is None
    if isinstance(value, bool):  # bool is an int subclass in Python, not in JSON
        return False
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float))
    raise ValueError(f"unknown JSON Schema type {name!r}")


#: Characters of an offending value shown in a message.
SHOW_CHARS = 60


def _show(value: Any) -> str:
    text = _brief(value, SHOW_CHARS + 3)
    return text if len(text) <= SHOW_CHARS else text[: SHOW_CHARS - 3] + "..."


def _brief(value: Any, budget: int) -> str:
    """Like ``repr`` (JSON names for null/true/false), but stops once ``budget`` characters are
    written: never the whole of a huge list or string (tests/test_fuzz_inputs.py)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, str):  # redacted whole: a cut before the "@" would show a password
        return repr(redact(value)[:budget])
    if isinstance(value, (list, tuple)):
        parts = []  # type: List[str]
        used = 1
        for item in value:
            if used >= budget:
                parts.append("...")
                break
            part = _brief(item, budget - used) if used < budget else "..."
            parts.append(part)
            used += len(part) + 2
        return "[" + ", ".join(parts) + "]"
    if isinstance(value, int) and value.bit_length() > 256:
        return f"a {value.bit_length()}-bit number"  # str() of a huge int is slow or refused
    text = repr(value)
    return text[:budget]


def format_path(path: Sequence[Any]) -> str:
    """``["models", "cam", "input", 0]`` -> ``models.cam.input[0]``; ``[]`` -> ``(top level)``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + str(part)
    return text or "(top level)"


class SchemaValidator:
    """Validates data against one schema document (with local ``$ref`` definitions)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema

    def _resolve(self, node: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in node:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"only local $ref is supported, got {ref!r}")
            target = self.schema  # type: Any
            for part in ref[2:].split("/"):
                target = target[part]
            node = target
        return node

    def errors(self, data: Any) -> List[str]:
        """All problems, as one-line messages, in document order."""
        found = []  # type: List[str]
        self._check(self.schema, data, [], found)
        return found

    def apply_defaults(self, data: Any) -> Any:
        """A copy of valid ``data`` with every missing key that has a default filled in."""
        return self._fill(self.schema, copy.deepcopy(data))

    # -- validation ---------------------------------------------------------------------

    def _check(self, node: Mapping[str, Any], value: Any, path: List[Any], out: List[str]) -> None:
        node = self._resolve(node)
        where = format_path(path)
        if isinstance(value, float) and not math.isfinite(value):
            # YAML's .nan and .inf: every comparison with NaN is false, so a NaN passes any
            # bound and disables a timeout or threshold; JSON (the schema's language) has
            # neither, so no key of the schema can ask for them
            out.append(f"{where}: got {_show(value)}; expected a finite number")
            return
        types = node.get("type")
        if types is not None:
            names = [types] if isinstance(types, str) else list(types)
            if not any(_is_type(value, t) for t in names):
                expected = " or ".join(_TYPE_NAMES[t] for t in names)
                out.append(f"{where}: got {_show(value)}; expected {expected}")
                return
        if "enum" in node and value not in node["enum"]:
            choices = ", ".join(
                _brief(c, SHOW_CHARS) if not isinstance(c, str) else c for c in node["enum"]
            )
            hint = _suggest(value, [c for c in node["enum"] if isinstance(c, str)])
            out.append(f"{where}: got {_show(value)}; expected one of: {choices}{hint}")
            return
        if isinstance(value, Mapping):
            self._check_object(node, value, path, out)
        elif isinstance(value, list):
            self._check_array(node, value, path, out)
        elif isinstance(value, str):
            self._check_string(node, value, where, out)
        elif _is_type(value, "number"):
            self._check_number(node, value, where, out)

    def _check_object(
        self, node: Mapping[str, Any], value: Mapping[str, Any], path: List[Any], out: List[str]
    ) -> None:
        props = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key in node.get("required", []):
            if key not in value:
                out.append(f"{format_path(path + [key])}: missing required key '{key}'")
        names = node.get("propertyNames")
        for key, item in value.items():
            key_path = path + [key]
            if not isinstance(key, str):
                out.append(f"{format_path(key_path)}: keys must be strings")
                continue
            if names and "pattern" in names and not re.search(names["pattern"], key):
                out.append(
                    f"{format_path(path)}: invalid name {_show(key)}; "
                    "expected letters, digits, '_', '.', '-' "
                    "(at most 64, starting with a letter or digit)"
                )
                continue
            if key in props:
                self._check(props[key], item, key_path, out)
            elif extra is False:
                known = sorted(props)
                out.append(
                    "{}: unknown key{}; expected one of: {}".format(
                        format_path(key_path), _suggest(key, known), ", ".join(known)
                    )
                )
            elif isinstance(extra, Mapping):
                self._check(extra, item, key_path, out)

    def _check_array(
        self, node: Mapping[str, Any], value: List[Any], path: List[Any], out: List[str]
    ) -> None:
        where = format_path(path)
        if "minItems" in node and len(value) < node["minItems"]:
            out.append(
                "{}: has {} items; expected at least {}".format(where, len(value), node["minItems"])
            )
        if "maxItems" in node and len(value) > node["maxItems"]:
            out.append(
                "{}: has {} items; expected at most {}".format(where, len(value), node["maxItems"])
            )
        if "items" in node:
            for index, item in enumerate(value):
                self._check(node["items"], item, path + [index], out)

    def _check_string(
        self, node: Mapping[str, Any], value: str, where: str, out: List[str]
    ) -> None:
        shortest = node.get("minLength", 0)
        if len(value) < shortest:
            out.append(
                f"{where}: must not be empty"
                if shortest == 1
                else f"{where}: {value!r} is shorter than {shortest} characters"
            )
        if "maxLength" in node and len(value) > node["maxLength"]:
            out.append("{}: longer than {} characters".format(where, node["maxLength"]))
        if "pattern" in node and not re.search(node["pattern"], value):
            out.append(
                f"{where}: got {_show(value)}; "
                "expected letters, digits, '_', '.', '-' (at most 64, "
                "starting with a letter or digit)"
            )

    def _check_number(
        self, node: Mapping[str, Any], value: float, where: str, out: List[str]
    ) -> None:
        bounds = []
        if "minimum" in node and value < node["minimum"]:
            bounds.append(">= {}".format(node["minimum"]))
        if "exclusiveMinimum" in node and value <= node["exclusiveMinimum"]:
            bounds.append("> {}".format(node["exclusiveMinimum"]))
        if "maximum" in node and value > node["maximum"]:
            bounds.append("<= {}".format(node["maximum"]))
        if "exclusiveMaximum" in node and value >= node["exclusiveMaximum"]:
            bounds.append("< {}".format(node["exclusiveMaximum"]))
        if bounds:
            out.append(f"{where}: got {_show(value)}; expected a value {_range(node)}")

    # -- defaults -----------------------------------------------------------------------

    def _fill(self, node: Mapping[str, Any], value: Any) -> Any:
        node = self._resolve(node)
        if isinstance(value, dict):
            props = node.get("properties", {})
            for key, sub in props.items():
                sub = self._resolve(sub)
                if key not in value and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
            for key in list(value):
                if key in props:
                    value[key] = self._fill(props[key], value[key])
                elif isinstance(node.get("additionalProperties"), Mapping):
                    value[key] = self._fill(node["additionalProperties"], value[key])
        elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
            value = [self._fill(node["items"], item) for item in value]
        return value


def _range(node: Mapping[str, Any]) -> str:
    low = ">= {}".format(node["minimum"]) if "minimum" in node else None
    if "exclusiveMinimum" in node:
        low = "> {}".format(node["exclusiveMinimum"])
    high = "<= {}".format(node["maximum"]) if "maximum" in node else None
    if "exclusiveMaximum" in node:
        high = "< {}".format(node["exclusiveMaximum"])
    return " and ".join(p for p in (low, high) if p)


def _suggest(word: Any, choices: Sequence[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def first_error(errors: List[str]) -> Optional[str]:
    """The first message, noting how many more there are."""
    if not errors:
        return None
    more = len(errors) - 1
    return errors[0] + (
        " (and {} more problem{})".format(more, "s" if more > 1 else "") if more else ""
    )

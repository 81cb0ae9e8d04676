"""The schema (``edged/config/schema.json``) and the dataclasses (``edged/config/model.py``) agree.

The config objects are built from the dataclass fields generically (``edged.config.generic``),
so a key must exist in both places, with a compatible type and the same default. This walks
both from the top (``Config`` and the schema's root) and lists every disagreement.
"""

import copy
import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Set, Tuple

from edged.config import Config, build_config, model, schema
from edged.config.generic import (
    Context,
    args,
    build,
    convert,
    optional_inner,
    origin,
    type_hints,
)
from edged.config.hooks import HOOKS

Node = Mapping[str, Any]

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _resolve(root: Mapping[str, Any], node: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        node = target
    return node


_JSON_TYPES = ((bool, "boolean"), (str, "string"), (int, "integer"), (float, "number"))


def _types(node: Mapping[str, Any]) -> Set[str]:
    """The node's JSON types; an ``enum`` without ``type`` has the types of its values."""
    if "type" not in node and "enum" in node:
        return {_json_type(value) for value in node["enum"]}
    types = node.get("type", [])
    return {types} if isinstance(types, str) else set(types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next(name for kind, name in _JSON_TYPES if isinstance(value, kind))


def disagreements(root: Mapping[str, Any]) -> List[str]:
    """Every place where ``root`` (a config schema) and the dataclasses from ``Config`` differ."""
    out: List[str] = []
    seen: Set[type] = set()
    _compare_class(root, root, Config, "(top)", False, out, seen)
    for name, cls in inspect.getmembers(model, dataclasses.is_dataclass):
        if cls not in seen:
            out.append(f"{name}: a dataclass no schema section builds")
    return out


def _compare_class(
    root: Node, node: Node, cls: type, where: str, in_map: bool, out: List[str], seen: Set[type]
) -> None:
    seen.add(cls)
    node = _resolve(root, node)
    hook = HOOKS.get(cls)
    props = node.get("properties", {})
    required = set(node.get("required", []))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = type_hints(cls)
    keys = set(props) - set(hook.keys if hook else ())
    names = set(fields) - ({"name"} if in_map and "name" not in props else set())
    for key in sorted(keys - names):
        out.append(f"{where}.{key}: in the schema, no field of {cls.__name__}")
    for key in sorted(names - set(props)):
        out.append(f"{cls.__name__}.{key}: a field, not in the schema at {where}")
    for key in sorted(keys & names):
        if hook and key in hook.fields:
            continue  # derived by the hook: its type or default may differ from the key's
        sub = _resolve(root, props[key])
        _compare_default(sub, fields[key], hints[key], key in required, f"{where}.{key}", out)
        unset_is_none = key not in required and "default" not in sub
        _compare_type(root, sub, hints[key], f"{where}.{key}", unset_is_none, out, seen)


def _compare_type(
    root: Node,
    node: Node,
    hint: Any,
    where: str,
    unset_is_none: bool,
    out: List[str],
    seen: Set[type],
) -> None:
    node = _resolve(root, node)
    types = _types(node)
    inner = optional_inner(hint)
    nullable = "null" in types
    if inner is not None:
        if not (nullable or unset_is_none):
            out.append(f"{where}: Optional field, but the schema never gives null")
        hint = inner
    elif nullable:
        out.append(f"{where}: the schema allows null, the field is not Optional")
    types.discard("null")
    if dataclasses.is_dataclass(hint):
        if types != {"object"}:
            out.append(f"{where}: {hint.__name__} field, schema type {sorted(types)}")
        else:
            _compare_class(root, node, hint, where, False, out, seen)
    elif origin(hint) is dict:
        extra = node.get("additionalProperties")
        if types != {"object"} or not isinstance(extra, Mapping) or args(hint)[0] is not str:
            out.append(f"{where}: Dict field, schema is no mapping of named items")
        elif dataclasses.is_dataclass(args(hint)[1]):
            _compare_class(root, extra, args(hint)[1], where + ".NAME", True, out, seen)
        else:
            _compare_type(root, extra, args(hint)[1], where + ".NAME", False, out, seen)
    elif origin(hint) is tuple and types == {"object"}:
        item = args(hint)[0]
        extra = node.get("additionalProperties")
        if not (dataclasses.is_dataclass(item) and isinstance(extra, Mapping)):
            out.append(f"{where}: a mapping in the schema, a tuple of unnamed items in the field")
        else:
            _compare_class(root, extra, item, where + ".NAME", True, out, seen)
    elif origin(hint) is tuple:
        items = args(hint)
        if types != {"array"}:
            out.append(f"{where}: tuple field, schema type {sorted(types)}")
        elif not (len(items) == 2 and items[1] is Ellipsis):
            if not node.get("minItems") == node.get("maxItems") == len(items):
                out.append(f"{where}: a {len(items)}-tuple, the schema's length differs")
        for item in set(items) - {Ellipsis}:
            _compare_type(root, node.get("items", {}), item, where + "[]", False, out, seen)
    elif hint in _SCALARS:
        if types != {_SCALARS[hint]}:
            out.append(f"{where}: {hint.__name__} field, schema type {sorted(types)}")
    else:
        out.append(f"{where}: field type {hint!r} has no schema counterpart")


def _compare_default(
    node: Node, f: Any, hint: Any, required: bool, where: str, out: List[str]
) -> None:
    has_default = f.default is not dataclasses.MISSING
    factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
    if required:
        if has_default or factory:
            out.append(f"{where}: required in the schema, the field has a default")
        return
    if "default" not in node:
        if not (has_default and f.default is None):
            out.append(f"{where}: no schema default (unset), the field's default is not None")
        return
    if not (has_default or factory):
        out.append(f"{where}: schema default {node['default']!r}, the field has none")
        return
    # the schema's default, built as the builder builds a value ([] -> (), {} -> Section()),
    # is the field's default; a nested section's own defaults are compared key by key
    wanted = convert(hint, node["default"], where, Context(".", {}))
    got = factory() if factory is not None else f.default
    if got != wanted or isinstance(got, bool) != isinstance(wanted, bool):
        out.append(f"{where}: schema default {node['default']!r}, field default {got!r}")


def test_schema_and_dataclasses_agree() -> None:
    assert disagreements(schema()) == []


def _tampered(change: Callable[[Dict[str, Any]], Any]) -> Dict[str, Any]:
    doc = copy.deepcopy(schema())
    change(doc["definitions"])
    return doc


def test_a_key_only_in_the_schema_is_found() -> None:
    doc = _tampered(lambda d: d["pipeline"]["properties"].update(extra={"type": "integer"}))
    assert disagreements(doc) == ["(top).pipeline.extra: in the schema, no field of PipelineConfig"]


def test_a_field_missing_from_the_schema_is_found() -> None:
    doc = _tampered(lambda d: d["metrics"]["properties"].pop("port"))
    assert disagreements(doc) == ["MetricsConfig.port: a field, not in the schema at (top).metrics"]


def test_a_different_default_or_type_is_found() -> None:
    doc = _tampered(lambda d: d["detection"]["properties"]["stride"].update(default=8))
    assert disagreements(doc) == [
        "(top).models.NAME.detection.stride: schema default 8, field default 16"
    ]
    doc = _tampered(lambda d: d["calibration"]["properties"]["max_images"].update(type="number"))
    assert disagreements(doc) == [
        "(top).models.NAME.engine.calibration.max_images: int field, schema type ['number']"
    ]
    doc = _tampered(lambda d: d["input"]["properties"]["mean"].update(minItems=2))
    assert disagreements(doc) == [
        "(top).models.NAME.input.mean: a 3-tuple, the schema's length differs"
    ]


def test_defaults_of_an_empty_config_are_the_dataclass_defaults() -> None:
    """Built from ``{}``, every section equals its dataclass's own defaults."""
    config = build_config({})
    assert config == Config()


# -- the generic builder on shapes no real section has yet ------------------------------------


@dataclass(frozen=True)
class _Zone:
    name: str
    points: Tuple[Tuple[float, float], ...]
    labels: Tuple[str, ...] = ()


@dataclass(frozen=True)
class _Stream:
    zones: Tuple[_Zone, ...] = ()
    limit: Optional[int] = None


def test_named_items_become_a_tuple_in_file_order() -> None:
    raw = {
        "zones": {"door": {"points": [[0, 1], [2, 3.5]]}, "aisle": {"points": [], "labels": ["a"]}}
    }
    built = build(_Stream, raw, "streams.s", Context(".", {}))
    assert built == _Stream(
        zones=(_Zone("door", ((0.0, 1.0), (2.0, 3.5))), _Zone("aisle", (), ("a",)))
    )
    assert isinstance(built.zones[0].points[0][0], float)


def test_integers_written_as_floats_become_int_and_absent_keys_keep_defaults() -> None:
    assert build(_Stream, {"limit": 3.0}, "", Context(".", {})) == _Stream(limit=3)
    assert type(build(_Stream, {"limit": 3.0}, "", Context(".", {})).limit) is int
    assert build(_Stream, {}, "", Context(".", {})) == _Stream()

"""Build the frozen config dataclasses from a validated, default-filled mapping, generically.

Each key lives in ``schema.json`` (validation, defaults, documentation) and in its dataclass
field (type) only: this module walks the dataclass fields and takes each value from the
section of the same name, converting by the field's type hint (``int``/``float``, tuples,
``Optional``, ``Dict[str, X]``, nested dataclasses; a mapping of named items for a
``Tuple[X, ...]`` of dataclasses with a ``name`` field). What is not a plain copy is a named
:class:`Hook` registered by the caller (``edged.config.hooks``). ``tests/test_config.py``
walks the schema and the dataclasses together and checks they agree.
"""

import dataclasses
import os
import typing
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

#: Field metadata of a path that is resolved against the config file's directory.
PATH_KEY = "path"


class Hook(NamedTuple):
    """What one dataclass needs beyond a plain copy of its schema section.

    ``build(raw, where, context)`` runs first (checks across keys, conversions) and returns
    the values of ``fields``; ``keys`` are schema keys it consumes that are no field.
    """

    build: Callable[[Mapping[str, Any], str, "Context"], Dict[str, Any]]
    fields: Tuple[str, ...] = ()
    keys: Tuple[str, ...] = ()


class Context:
    """What hooks may read: the config file's directory and the top-level sections built so
    far (``Config`` is built in field order: models, then streams, ..., then mqtt)."""

    def __init__(
        self, base_dir: str, hooks: Mapping[type, Hook], top: Optional[type] = None
    ) -> None:
        self.base_dir = base_dir
        self.hooks = hooks
        self.top = top
        self.sections: Dict[str, Any] = {}


def type_hints(cls: type) -> Dict[str, Any]:
    """The resolved field types of dataclass ``cls`` (the same on Python 3.6 and 3.11)."""
    return typing.get_type_hints(cls)


def origin(hint: Any) -> Any:
    """``dict``/``tuple``/``list``/``typing.Union`` for a generic hint, else None (3.6: the
    ``typing`` classes are the origin; 3.7+: the builtins)."""
    found = getattr(hint, "__origin__", None)
    return {typing.Dict: dict, typing.Tuple: tuple, typing.List: list}.get(found, found)


def args(hint: Any) -> Tuple[Any, ...]:
    return tuple(getattr(hint, "__args__", None) or ())


def optional_inner(hint: Any) -> Optional[Any]:
    """``X`` for ``Optional[X]``, else None."""
    if origin(hint) is typing.Union:
        rest = [a for a in args(hint) if a is not type(None)]
        if len(rest) == 1 and len(args(hint)) == 2:
            return rest[0]
    return None


def resolve_path(base_dir: str, path: Optional[str]) -> Optional[str]:
    """``~`` expanded; a relative path joined to ``base_dir`` (the config file's directory)."""
    if path is None:
        return None
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) else os.path.normpath(os.path.join(base_dir, path))


def build(cls: type, raw: Mapping[str, Any], where: str, context: Context,
          name: Optional[str] = None) -> Any:  # fmt: skip
    """An instance of dataclass ``cls`` from its validated section ``raw`` (``where``: its key
    path in messages). A ``name`` field absent from the schema takes ``name`` (the mapping key
    of a model or stream). Keys absent from ``raw`` keep the dataclass default."""
    hook = context.hooks.get(cls)
    values = dict(hook.build(raw, where, context)) if hook else {}
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        if f.name == "name" and name is not None and "name" not in raw:
            values["name"] = name
        elif f.name in raw:
            value = convert(hints[f.name], raw[f.name], _join(where, f.name), context)
            if f.metadata.get(PATH_KEY):
                value = resolve_path(context.base_dir, value)
            values[f.name] = value
            if cls is context.top:
                context.sections[f.name] = value
    return cls(**values)


def convert(hint: Any, value: Any, where: str, context: Context) -> Any:
    """``value`` (validated JSON-like data) as type ``hint``."""
    if value is None:
        return None
    inner = optional_inner(hint)
    if inner is not None:
        return convert(inner, value, where, context)
    if _is_dataclass_type(hint):
        return build(hint, value, where, context)
    kind = origin(hint)
    if kind is dict:
        item = args(hint)[1]
        return {
            key: _item(item, sub, _join(where, key), context, key) for key, sub in value.items()
        }
    if kind in (tuple, list) and isinstance(value, Mapping):
        # named items (zones by name, say): a mapping in the file, a sequence of dataclasses
        # whose ``name`` field is the key, in file order
        item = args(hint)[0]
        named = [_item(item, sub, _join(where, key), context, key) for key, sub in value.items()]
        return tuple(named) if kind is tuple else named
    if kind in (tuple, list):
        items = args(hint)
        if len(items) == 2 and items[1] is Ellipsis:
            items = (items[0],) * len(value)
        converted = [convert(t, v, f"{where}[{i}]", context)
                     for i, (t, v) in enumerate(zip(items, value))]  # fmt: skip
        return tuple(converted) if kind is tuple else converted
    if hint is float and not isinstance(value, bool):
        return float(value)
    if hint is int and not isinstance(value, bool):
        return int(value)  # the schema's "integer" admits 3.0
    return value


def _item(hint: Any, value: Any, where: str, context: Context, key: str) -> Any:
    if _is_dataclass_type(hint) and value is not None:
        return build(hint, value, where, context, name=key)
    return convert(hint, value, where, context)


def _is_dataclass_type(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key

"""YAML text -> plain data, refusing what would crash or hang the validator (a hostile config
gets a ConfigError, never another exception or a hang: tests/test_fuzz_inputs.py).

PyYAML's SafeLoader alone lets through: duplicate keys (it keeps the last one silently),
keys that are lists or mappings (``? [a, b]``: unhashable, a TypeError later), nesting deep
enough to exhaust Python's recursion (a RecursionError), and alias "billion laughs" (nine
anchors of nine references each: 9^9 values that one ``repr`` or a validator walk never
finishes). This loader refuses each with a one-line reason.
"""

from typing import Any, Dict, Hashable, List, Set, Tuple

import yaml

from ..errors import ConfigError

#: Deepest nesting accepted (the deepest real key path is about 7 levels).
MAX_DEPTH = 32
#: Most values a config may expand to, aliases counted every time they are used.
MAX_VALUES = 100000
#: Longest integer literal (Python 3.11 refuses more than 4300 digits anyway).
MAX_INT_CHARS = 100


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate and non-scalar keys, and deep nesting while scanning.

    The depth is counted on the scanner's own bookkeeping (open block indentations plus open
    ``[``/``{``), so a deep document is refused at its 33rd level, before the composer recurses
    into it: measured by ``python -m benchmarks --only config`` (benchmarks/config_parse.py).
    Waiting for the composer's RecursionError cost seconds on Python 3.6, because PyYAML's
    scanner revisits every open flow level's possible simple key at each token
    (``Scanner.stale_possible_simple_keys`` in yaml/scanner.py), quadratic in the depth.
    """

    def add_indent(self, column: int) -> bool:
        added = super().add_indent(column)
        if added:
            self._check_depth(len(self.indents) + self.flow_level)
        return added

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:  # noqa: N803 - PyYAML's name
        self._check_depth(len(self.indents) + self.flow_level + 1)
        super().fetch_flow_collection_start(TokenClass)

    def _check_depth(self, depth: int) -> None:
        # open block collections and flow collections are each one real level (an indentless
        # sequence is not counted here): this never refuses what check_extent would accept
        if depth > MAX_DEPTH:
            mark = self.get_mark()
            raise ConfigError(
                f"line {mark.line + 1}, column {mark.column + 1}: "
                f"nested deeper than {MAX_DEPTH} levels"
            )


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> Dict[Any, Any]:
    # keys written in this mapping, as opposed to those a merge key (<<: *defaults) brings in:
    # a written key overrides a merged one (the YAML merge spec); two written ones are an error
    written = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)
    mapping = {}  # type: Dict[Any, Any]
    seen_written: Set[Any] = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, Hashable):
            raise ConfigError(
                f"line {line}: a key must be a plain value, not a {type(key).__name__}"
            )
        if id(key_node) in written:
            if key in seen_written:
                raise ConfigError(f"line {line}: duplicate key {key!r}")
            seen_written.add(key)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    # int() of a long digit string is quadratic before Python 3.11 (CVE-2020-10735) and
    # refused beyond 4300 digits from 3.11 on: refuse it ourselves, quickly, on every Python
    if len(node.value) > MAX_INT_CHARS:
        raise ConfigError(
            f"line {node.start_mark.line + 1}: a number of {len(node.value)} characters "
            f"(at most {MAX_INT_CHARS})"
        )
    return loader.construct_yaml_int(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str) -> Any:
    """Parse one YAML document into dicts, lists and scalars.

    Raises:
        ConfigError: not YAML, duplicate or non-scalar keys, too deep, or too big once
            aliases are expanded; the message says which (with the line where YAML knows it).
    """
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"{where}invalid YAML: {_one_line(e.problem or e)}") from e
    except yaml.YAMLError as e:  # e.g. a ReaderError for a control character: no mark
        raise ConfigError(f"invalid YAML: {_one_line(e)}") from e
    except RecursionError as e:
        raise ConfigError(f"nested deeper than {MAX_DEPTH} levels") from e
    check_extent(data)
    return data


def _one_line(problem: Any) -> str:
    return " ".join(str(problem).split())


_CONTAINERS = (dict, list, tuple, set, frozenset)


def _children(node: Any) -> List[Any]:
    """The containers directly inside ``node`` (scalars need no visit: the parent counts them)."""
    values = node.values() if isinstance(node, dict) else node
    return [v for v in values if isinstance(v, _CONTAINERS)]


def check_extent(data: Any) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` or more than :data:`MAX_VALUES` values.

    Iterative, and each shared (aliased) node is measured once, so a bomb is refused in
    time proportional to its text, not to its expansion.
    """
    if not isinstance(data, _CONTAINERS):
        return
    measured: Dict[int, Tuple[int, int]] = {}  # id -> (values, depth) expanded
    visiting: Set[int] = set()  # ids on the current path: a cycle would never end
    stack: List[Tuple[Any, bool]] = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            visiting.discard(key)
            scalars = len(node) - len(_children(node))
            values, depth = 1 + scalars, 1
            for child in _children(node):
                child_values, child_depth = measured[id(child)]
                values += child_values
                depth = max(depth, child_depth + 1)
            if depth > MAX_DEPTH:
                raise ConfigError(f"nested deeper than {MAX_DEPTH} levels")
            if values > MAX_VALUES:
                raise ConfigError(
                    f"expands to more than {MAX_VALUES} values (YAML aliases used many times?)"
                )
            measured[key] = (values, depth)
        elif key not in measured:
            if key in visiting:
                raise ConfigError("a value contains itself (a YAML alias to its own anchor)")
            visiting.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node) if id(child) not in measured)

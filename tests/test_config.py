"""Config loading: schema validation with key paths, defaults, relative paths, shipped configs."""

import glob
import json
import os
import re

import pytest
import yaml

from edged.config import build_config, load_config, parse_config, schema
from edged.config.validate import SUPPORTED_KEYWORDS, SchemaValidator, format_path
from edged.errors import ConfigError

from .conftest import REPO, run_cli


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir="/cfg")
    return str(info.value)


def test_empty_file_gives_defaults():
    config = parse_config("")
    assert config.device_id == "edged"
    assert config.log_level == "info"
    assert config.models == {}


def test_model_defaults_are_filled_and_paths_resolve_against_the_config_dir():
    config = parse_config("models:\n  cls:\n    path: m/resnet18.onnx\n    labels: labels.txt\n",
                          base_dir="/etc/edged")  # fmt: skip
    model = config.models["cls"]
    assert model.path == "/etc/edged/m/resnet18.onnx"
    assert model.labels == "/etc/edged/labels.txt"
    assert model.task == "auto"
    assert model.classification.top_k == 1
    assert model.classification.threshold == 0.01
    assert model.detection.stride == 16
    assert model.detection.bbox_norm == 35.0
    assert model.input.color == "rgb"


def test_misspelt_key_is_named_with_its_path_and_a_suggestion():
    message = error_of("models:\n  cls:\n    path: a.onnx\n    treshold: 0.5\n")
    assert message.startswith("models.cls.treshold: unknown key")
    # `threshold` lives under classification, so the suggestion comes from this level's keys
    assert "expected one of:" in message


def test_misspelt_nested_key_gets_did_you_mean():
    message = error_of("models:\n  cls:\n    path: a.onnx\n    classification:\n      top-k: 3\n")
    assert "models.cls.classification.top-k: unknown key (did you mean 'top_k'?)" in message


def test_bad_value_names_path_value_and_expectation():
    message = error_of("models:\n  cls:\n    path: a.onnx\n    threads: 500\n")
    assert message == "models.cls.threads: got 500; expected a value >= 0 and <= 64"


def test_wrong_type_is_reported():
    message = error_of("models:\n  cls:\n    path: a.onnx\n    classification: {top_k: many}\n")
    assert message == "models.cls.classification.top_k: got 'many'; expected an integer"


def test_bool_is_not_a_number():
    message = error_of("models:\n  cls:\n    path: a.onnx\n    threads: true\n")
    assert "models.cls.threads: got true; expected an integer" == message


def test_enum_error_lists_choices():
    message = error_of("log_level: verbose\n")
    assert message.startswith(
        "log_level: got 'verbose'; expected one of: debug, info, warning, error"
    )


def test_missing_required_key():
    assert error_of("models:\n  cls: {task: detection}\n") == (
        "models.cls.path: missing required key 'path'"
    )


def test_duplicate_keys_are_rejected():
    message = error_of("device_id: a\ndevice_id: b\n")
    assert "duplicate key 'device_id'" in message


def test_yaml_syntax_error_has_line_number():
    message = error_of("models:\n  cls: [unclosed\n")
    assert message.startswith("line ")
    assert "invalid YAML" in message


def test_several_problems_are_counted():
    message = error_of("log_level: x\ndevice_id: 'bad id'\n")
    assert "(and 1 more problem)" in message


def test_only_one_key_source():
    with pytest.raises(ConfigError, match="set only one of key, key_env, key_file"):
        build_config({"models": {"m": {"path": "a.etlt", "key": "k", "key_env": "E"}}})


def test_model_key_is_not_in_repr():
    config = build_config({"models": {"m": {"path": "a.etlt", "key": "secret-key-123"}}})
    assert "secret-key-123" not in repr(config)


def test_missing_file_and_directory_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))


def test_binary_file_is_a_config_error(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path))


def unsupported_keywords(node, in_properties=False):
    """Keywords in the schema ``node`` that edged's validator does not implement."""
    found = []
    if isinstance(node, dict):
        for key, sub in node.items():
            if not in_properties and key not in SUPPORTED_KEYWORDS:
                found.append(key)
            found += unsupported_keywords(sub, key in ("properties", "definitions"))
    elif isinstance(node, list):
        for sub in node:
            found += unsupported_keywords(sub)
    return found


def test_validator_implements_every_keyword_the_schema_uses():
    assert unsupported_keywords(schema()) == []
    assert unsupported_keywords({"type": "object", "if": {}}) == ["if"]  # the walk sees them


def test_published_schema_is_the_package_schema():
    with open(os.path.join(REPO, "configs", "edged.schema.json")) as f:
        assert json.load(f) == schema()


def test_published_schema_is_valid_draft7_and_agrees_with_our_validator():
    import jsonschema  # a test dependency: the reference implementation editors use

    jsonschema.Draft7Validator.check_schema(schema())
    validator = jsonschema.Draft7Validator(schema())
    ours = SchemaValidator(schema())
    samples = [
        {},
        {"models": {"a": {"path": "x.onnx"}}},
        {"models": {"a": {"path": "x.onnx", "threads": -1}}},
        {"models": {"a": {"path": "x.onnx", "bogus": 1}}},
        {"models": {"a": {"path": ""}}},
        {"models": {"bad name": {"path": "x"}}},
        {"models": {"a": {"path": "x", "input": {"mean": [1, 2]}}}},
        {"models": {"a": {"path": "x", "detection": {"classes": {"person": {"threshold": 2}}}}}},
        {"log_level": "loud"},
    ]
    for sample in samples:
        assert bool(list(validator.iter_errors(sample))) == bool(ours.errors(sample)), sample


def shipped_configs():
    return sorted(glob.glob(os.path.join(REPO, "configs", "*.yaml")))


def test_there_are_shipped_configs():
    assert len(shipped_configs()) >= 2


@pytest.mark.parametrize("path", shipped_configs(), ids=os.path.basename)
def test_every_shipped_config_validates(path):
    load_config(path)


def test_check_config_cli_accepts_shipped_configs():
    result = run_cli(["check-config"] + shipped_configs())
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok (") == len(shipped_configs())


def test_check_config_cli_rejects_misspelt_key_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("device_id: cam\nmodels:\n  m:\n    path: m.onnx\n    lables: l.txt\n")
    result = run_cli(["check-config", str(bad)])
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    prefix = f"edged: error: {bad}: models.m.lables: unknown key (did you mean 'labels'?); "
    assert line.startswith(prefix + "expected one of: ")
    assert ", labels, memory_arena, memory_pattern, path, " in line
    assert "Traceback" not in result.stderr


def _schema_keys(schema, node, path):
    """Dotted paths of every named property under ``node`` (refs followed, maps as '*')."""
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    for key, child in node.get("properties", {}).items():
        yield path + (key,)
        yield from _schema_keys(schema, child, path + (key,))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from _schema_keys(schema, extra, path + ("*",))


def test_the_reference_config_documents_every_key_of_the_schema():
    """configs/edged.yaml promises every key with its default: a new key must be added there."""
    with open(os.path.join(REPO, "configs", "edged.schema.json")) as f:
        schema = json.load(f)
    with open(os.path.join(REPO, "configs", "edged.yaml")) as f:
        text = f.read()
    written = set(re.findall(r"(?:^|[\s{,#])([a-z_0-9]+):", text, re.MULTILINE))
    missing = sorted(".".join(p) for p in _schema_keys(schema, schema, ()) if p[-1] not in written)
    assert missing == []


# -- non-finite numbers ---------------------------------------------------------------------


def _numeric_paths(node, path=()):
    """Key paths of every number (not true/false) in a parsed config."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _numeric_paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _numeric_paths(value, path + (index,))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield path


def _non_finite_cases():
    cases = []
    for name in ("edged.yaml", "demo.yaml"):
        with open(os.path.join(REPO, "configs", name)) as f:
            data = yaml.safe_load(f)
        for path in _numeric_paths(data):
            for text in (".nan", ".inf", "-.inf"):
                case_id = f"{name}:{format_path(path)}={text}"
                cases.append(pytest.param(name, path, text, id=case_id))
    return cases


NON_FINITE_CASES = _non_finite_cases()


def test_the_shipped_configs_have_many_numeric_keys():
    assert len({(c.values[0], c.values[1]) for c in NON_FINITE_CASES}) >= 30


@pytest.mark.parametrize("name, path, text", NON_FINITE_CASES)
def test_a_non_finite_number_is_refused_in_one_line_naming_its_key(name, path, text):
    with open(os.path.join(REPO, "configs", name)) as f:
        data = yaml.safe_load(f)
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = float(text.replace(".", ""))
    dumped = yaml.safe_dump(data)
    assert text in dumped  # the YAML spelling a user writes
    with pytest.raises(ConfigError) as raised:
        parse_config(dumped, base_dir=os.path.join(REPO, "configs"))
    message = str(raised.value)
    assert message.startswith(format_path(path) + ": got "), message
    assert message.endswith("expected a finite number") and "\n" not in message

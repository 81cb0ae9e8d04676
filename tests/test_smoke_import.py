"""The package imports on every CI interpreter and exposes its version and error root."""

import re

import edged
import edged.errors


def test_edged_exposes_a_semantic_version():
    assert re.match(r"^\d+\.\d+\.\d+", edged.__version__)


def test_every_edged_error_derives_from_edged_error():
    assert issubclass(edged.errors.EdgedError, Exception)
    assert issubclass(edged.errors.ConfigError, edged.errors.EdgedError)
    assert issubclass(edged.errors.ModelError, edged.errors.EdgedError)

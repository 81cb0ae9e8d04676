"""Shared fixtures: repository paths, tiny ONNX models built on the fly, the CLI runner."""

import os
import subprocess
import sys
from typing import List

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def repo() -> str:
    return REPO


def run_cli(args: List[str], cwd: str = REPO, env: dict = None) -> subprocess.CompletedProcess:
    """Run ``python -m edged ARGS`` as a real process; returns the completed process (text)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edged"] + list(args),
        cwd=cwd,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=600,
    )

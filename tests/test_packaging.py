"""Packaging: a wheel built from the sources, with this interpreter's pip and setuptools (59.6 on
Python 3.6, current ones elsewhere), holds every module and data file of edged/ and builds
without setuptools' "absent from the packages configuration" warning."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD_INPUTS = ("setup.cfg", "setup.py", "pyproject.toml", "README.md")


def source_files():
    """Files under edged/ that an install must carry (not caches)."""
    found = set()
    for root, dirs, names in os.walk(os.path.join(REPO, "edged")):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in names:
            if not name.endswith((".pyc", ".pyo")):
                found.add(os.path.relpath(os.path.join(root, name), REPO).replace(os.sep, "/"))
    return found


@pytest.mark.timeout(600)
def test_wheel_holds_modules_and_data_without_setuptools_warnings(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy(os.path.join(REPO, name), str(src / name))
    # __pycache__ directories come along on purpose: they must not become packages.
    shutil.copytree(os.path.join(REPO, "edged"), str(src / "edged"))
    os.makedirs(str(src / "edged" / "schemas" / "__pycache__"), exist_ok=True)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "-w", str(tmp_path / "dist"), str(src)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, timeout=540,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout
    assert "absent from the" not in build.stdout, build.stdout
    assert "Package would be ignored" not in build.stdout, build.stdout
    (wheel,) = os.listdir(str(tmp_path / "dist"))
    with zipfile.ZipFile(str(tmp_path / "dist" / wheel)) as archive:
        names = set(archive.namelist())
    packaged = {n for n in names if n.startswith("edged/")}
    expected = source_files()
    assert {
        "edged/py.typed",
        "edged/config/schema.json",
        "edged/schemas/result.v1.json",
        "edged/schemas/status.v1.json",
    } <= expected
    assert packaged == expected

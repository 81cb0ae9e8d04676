"""tools/gpu_check.sh's control flow, on a machine without a GPU: a failing step and a step
that runs past its limit do not stop the later ones, the exit status says a step failed, and
OUTDIR holds at most the 8 files a lent GPU machine sends back.

``python3`` and ``nvidia-smi`` are STAND-INS here (shell scripts first on PATH) that record
their arguments and answer as the test says: the script's own logic, ``timeout`` and the
shell are real. The real run is the lead's, on the lent GPU (the script's header).
"""

import os
import stat
import subprocess

from .conftest import REPO

SCRIPT = os.path.join(REPO, "tools", "gpu_check.sh")

PYTHON_STANDIN = """#!/bin/bash
echo "$*" >> "$STANDIN_LOG"
case "$*" in
    *"-m pip"*) exit 0 ;;
    *"import pytest_timeout"*) exit 0 ;;
    *"import pycuda"*) echo "pycuda (13, 0, 0) NVIDIA H100 80GB HBM3"; exit 0 ;;
    *"-m pytest"*) echo "1 failed, 40 passed"; exit "${TESTS_RC:-0}" ;;
    *"benchmarks.gpu_preprocess"*) [ -n "${PREPROCESS_HANGS:-}" ] && exec sleep 60
        echo "kernel table"; exit 0 ;;
    *"benchmarks.gpu_daemon"*) echo "daemon table"; exit 0 ;;
esac
echo "unexpected python3 call: $*" >&2
exit 99
"""


def _executable(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)


def _run(tmp_path, **env):
    bin_dir, wheels, out = tmp_path / "bin", tmp_path / "wheels", tmp_path / "out"
    for d in (bin_dir, wheels):
        d.mkdir()
    _executable(str(bin_dir / "python3"), PYTHON_STANDIN)
    _executable(str(bin_dir / "nvidia-smi"), "#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 580.1'\n")
    for name in ("pycuda-2025.1-cp312-cp312-linux_x86_64.whl", "paho_mqtt-2.1.0-py3-none-any.whl"):
        (wheels / name).write_text("")
    full = dict(os.environ, PATH=f"{bin_dir}:/usr/bin:/bin", WHEELS=str(wheels),
                SITE=str(tmp_path / "site"), STANDIN_LOG=str(tmp_path / "calls.log"),
                **env)  # fmt: skip
    full.pop("OUT", None)
    proc = subprocess.run(["bash", SCRIPT, str(out)], cwd=REPO, env=full,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=120)  # fmt: skip
    calls = (tmp_path / "calls.log").read_text().splitlines()
    log = (out / "gpu_check.log").read_text()
    return proc, calls, log, sorted(os.listdir(str(out)))


def test_every_step_runs_and_passes(tmp_path):
    proc, calls, log, files = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout
    installs = [c for c in calls if "-m pip install" in c]
    assert len(installs) == 2 and "paho_mqtt-" in installs[0] and "pycuda-" in installs[1]
    assert "pycuda-" not in installs[0], installs
    pytest_call = next(c for c in calls if "-m pytest" in c)
    assert "-m gpu" in pytest_call, pytest_call
    # every file with a GPU test, found by the marker, and none of the CPU suite
    for name in ("test_gpu_cuda.py", "test_gpu_daemon.py"):
        assert f"tests/{name}" in pytest_call.split(), pytest_call
    assert "tests/test_daemon.py" not in pytest_call.split(), pytest_call
    assert "--continue-on-collection-errors" in pytest_call and "--timeout" in pytest_call
    assert any("benchmarks.gpu_preprocess --out" in c for c in calls), calls
    assert any("benchmarks.gpu_daemon --out" in c for c in calls), calls
    for name in ("gpu_tests", "gpu_preprocess", "gpu_daemon"):
        assert f"== {name}: passed" in log, log
    assert "every step passed" in log and "NVIDIA H100" in log
    assert files == ["gpu_check.log", "gpu_daemon.log", "gpu_preprocess.log", "gpu_tests.log"]


def test_a_failing_and_a_hung_step_do_not_stop_the_later_ones(tmp_path):
    proc, calls, log, _ = _run(tmp_path, TESTS_RC="1", PREPROCESS_HANGS="1", PREPROCESS_S="2")
    assert proc.returncode == 1, proc.stdout
    assert "== gpu_tests: FAILED (exit 1)" in log, log
    assert "== gpu_preprocess: KILLED after 2 s (exit 124)" in log, log
    assert "== gpu_daemon: passed" in log, log
    assert any("benchmarks.gpu_daemon" in c for c in calls), calls
    assert "a step failed" in log

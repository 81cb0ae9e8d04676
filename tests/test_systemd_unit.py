"""systemd/edged.service passes systemd-analyze, keeps Jetson devices reachable, and
tools/install.sh places it (staged under --destdir: no real user or systemctl in tests).

systemd-analyze comes from the Debian package `systemd` (tools/apt-packages.txt); a
missing one FAILS these tests.
"""

import os
import re
import shutil
import stat
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(REPO, "systemd", "edged.service")
SYSTEMD_README = os.path.join(REPO, "systemd", "README.md")
INSTALL = os.path.join(REPO, "tools", "install.sh")
EXEC_START = "/usr/local/bin/edged run -c /etc/edged/edged.yaml"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze not found: apt-get install systemd (tools/apt-packages.txt)")
    return path


def run(cmd, **kwargs):
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, **kwargs
    )
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def read_unit(path=UNIT) -> dict:
    """{section: [(key, value), ...]} -- a list, since keys such as Environment= repeat."""
    sections = {}
    current = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                current = sections.setdefault(line.strip("[]"), [])
                continue
            key, _, value = line.partition("=")
            current.append((key, value))
    return sections


def values(section: str, key: str) -> list:
    return [v for k, v in read_unit().get(section, []) if k == key]


def value(section: str, key: str) -> str:
    found = values(section, key)
    assert len(found) == 1, f"{key}= in [{section}]: {found}"
    return found[0]


def verifiable_copy(unit_path: str, tmp_path) -> str:
    """The unit with ExecStart's binary swapped for a stub that exists.

    `systemd-analyze verify` checks that ExecStart= is executable, and edged is not
    installed in /usr/local/bin on a test machine; --root does not help (it also moves the
    unit search path). Everything else in the unit is verified as written.
    """
    stub = tmp_path / "bin" / "edged"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    with open(unit_path) as f:
        text = f.read()
    rewritten, count = re.subn(r"(?m)^ExecStart=\S+/bin/edged ", f"ExecStart={stub} ", text)
    assert count == 1
    copy = tmp_path / "edged.service"
    copy.write_text(rewritten)
    return str(copy)


def test_unit_passes_systemd_analyze_verify_cleanly(tmp_path):
    code, out = run([systemd_analyze(), "verify", "--man=no", verifiable_copy(UNIT, tmp_path)])

    assert code == 0 and out.strip() == "", out


def test_security_exposure_is_the_figure_recorded_in_systemd_readme():
    code, out = run([systemd_analyze(), "security", "--offline=true", "--no-pager", UNIT])
    measured = re.search(r"Overall exposure level for edged.service: (\d+\.\d)", out)
    with open(SYSTEMD_README) as f:
        recorded = re.search(r"exposure level: \*\*(\d+\.\d)", f.read())

    assert code == 0 and measured, out
    assert recorded, "systemd/README.md must state 'exposure level: **N.N'"
    assert measured.group(1) == recorded.group(1)


def test_unit_is_a_notify_service_with_a_watchdog_and_a_start_limit():
    assert value("Service", "Type") == "notify"
    assert value("Service", "NotifyAccess") == "main"
    assert value("Service", "WatchdogSec") == "30"
    assert value("Service", "Restart") == "on-failure"
    assert value("Service", "ExecStart") == EXEC_START
    assert value("Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert value("Unit", "StartLimitIntervalSec") and value("Unit", "StartLimitBurst")


def test_unit_keeps_jetson_cameras_and_gpu_reachable():
    # DynamicUser= implies PrivateTmp=yes, which hides /tmp/argus_socket (jetson-inference#1398).
    assert values("Service", "DynamicUser") == []
    assert value("Service", "User") == "edged"
    assert value("Service", "PrivateTmp") == "no"
    # PrivateDevices= hides /dev/nvhost-*, /dev/nvmap, /dev/video*.
    assert value("Service", "PrivateDevices") == "no"
    assert "video" in value("Service", "SupplementaryGroups").split()
    # ProtectClock= implies a device allow-list that blocks every other device before v253.
    assert values("Service", "ProtectClock") == []
    assert values("Service", "DeviceAllow") == []
    assert "AF_UNIX" in value("Service", "RestrictAddressFamilies").split()


def test_unit_environment_puts_nvcc_on_path_and_kernel_caches_in_the_cache_dir():
    env = dict(v.split("=", 1) for v in values("Service", "Environment"))
    cache_dir = "/var/cache/" + value("Service", "CacheDirectory")

    assert "/usr/local/cuda/bin" in env["PATH"].split(":")
    assert env["PYCUDA_CACHE_DIR"].startswith(cache_dir + "/")
    assert env["CUDA_CACHE_PATH"].startswith(cache_dir + "/")


def test_every_service_directive_follows_a_comment_block():
    """Each [Service] group of directives is introduced by a why-comment."""
    with open(UNIT) as f:
        lines = [line.rstrip("\n") for line in f]
    in_service = False
    previous = ""
    for line in lines:
        if line.startswith("["):
            in_service = line == "[Service]"
        elif in_service and line and not line.startswith("#"):
            assert previous.startswith("#") or (previous and not previous.startswith("[")), (
                f"{line} has no comment above its group"
            )
        previous = line


# --- tools/install.sh ------------------------------------------------------------------------


def install(*args, destdir=None):
    cmd = ["bash", INSTALL] + list(args)
    if destdir is not None:
        cmd += ["--destdir", str(destdir)]
    return run(cmd)


@pytest.fixture
def config_template(tmp_path):
    path = tmp_path / "template.yaml"
    path.write_text("device_id: test-device\n")
    return path


def staged_files(root) -> list:
    return sorted(
        os.path.relpath(os.path.join(d, f), str(root))
        for d, _, fs in os.walk(str(root))
        for f in fs
    )


def test_install_stages_unit_config_and_docs_under_destdir(tmp_path, config_template):
    root = tmp_path / "root"

    code, out = install("--config", str(config_template), destdir=root)

    assert code == 0, out
    files = staged_files(root)
    assert "etc/systemd/system/edged.service" in files
    assert "etc/edged/edged.yaml" in files
    assert "usr/local/share/doc/edged/systemd-README.md" in files
    config = root / "etc" / "edged" / "edged.yaml"
    assert config.read_text() == "device_id: test-device\n"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert "skip: creating user" in out and "skip: systemctl daemon-reload" in out


def test_installed_unit_points_at_the_prefix_and_still_verifies(tmp_path, config_template):
    root = tmp_path / "root"
    code, out = install("--prefix", "/opt/edged", "--config", str(config_template), destdir=root)
    unit = str(root / "etc" / "systemd" / "system" / "edged.service")

    assert code == 0, out
    with open(unit) as f:
        assert "ExecStart=/opt/edged/bin/edged run -c /etc/edged/edged.yaml\n" in f.read()
    verify_dir = tmp_path / "verify"
    verify_dir.mkdir()
    code, out = run([systemd_analyze(), "verify", "--man=no", verifiable_copy(unit, verify_dir)])
    assert code == 0 and out.strip() == "", out


def test_install_twice_changes_nothing_and_keeps_an_edited_config(tmp_path, config_template):
    root = tmp_path / "root"
    assert install("--config", str(config_template), destdir=root)[0] == 0
    config = root / "etc" / "edged" / "edged.yaml"
    config.write_text("device_id: edited-by-operator\n")

    code, out = install("--config", str(config_template), destdir=root)

    assert code == 0, out
    assert "installing:" not in out and "+ install" not in out
    assert "unchanged: " in out and "kept: " in out
    assert config.read_text() == "device_id: edited-by-operator\n"


def test_dry_run_lists_user_unit_and_reload_but_changes_nothing(tmp_path, config_template):
    root = tmp_path / "root"

    code, out = install("--dry-run", "--config", str(config_template), destdir=root)

    assert code == 0, out
    assert not root.exists()
    assert "would install: " + str(root) + "/etc/systemd/system/edged.service" in out


def test_dry_run_on_the_live_system_shows_the_system_commands(config_template):
    before = os.path.exists("/etc/systemd/system/edged.service")

    code, out = install("--dry-run", "--config", str(config_template))

    assert code == 0, out
    assert re.search(r"would run: (useradd .*--system.*edged|usermod .*video.* edged)", out), out
    assert "would run: systemctl daemon-reload" in out
    assert os.path.exists("/etc/systemd/system/edged.service") == before


def test_uninstall_removes_unit_and_docs_but_keeps_config_unless_purged(tmp_path, config_template):
    root = tmp_path / "root"
    assert install("--config", str(config_template), destdir=root)[0] == 0

    code, out = install("--uninstall", destdir=root)

    assert code == 0, out
    assert staged_files(root) == ["etc/edged/edged.yaml"]
    code, out = install("--uninstall", "--purge", destdir=root)
    assert code == 0, out
    assert staged_files(root) == []


def test_install_rejects_bad_usage():
    assert install("--frobnicate")[0] == 2
    assert install("--prefix", "relative/path")[0] == 2
    assert install("--purge")[0] == 2


def test_install_without_a_config_template_fails_clearly(tmp_path):
    code, out = install("--config", str(tmp_path / "missing.yaml"), destdir=tmp_path / "root")

    assert code == 1
    assert "config template not found" in out

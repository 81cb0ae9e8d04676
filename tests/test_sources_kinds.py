"""The sources table: one kind -> (recogniser, factory) table, asked by the config loader and
by ``build_source`` alike, so a source string means the same thing in a config file and when
it is opened (``source: "0"`` is /dev/video0 in both, not a file next to the config)."""

import random
import subprocess
import sys

import cv2
import pytest
import yaml

from edged.config import load_config, parse_config
from edged.errors import ConfigError
from edged.sources import (
    ImageDirectorySource,
    OpenCvSource,
    build_source,
    classify,
    csi_pipeline,
    parse_source,
)
from edged.sources.backends import OpenCvCapabilities
from edged.sources.kinds import kinds
from edged.sources.spec import CSI, FILE, IMAGES, KINDS, NETWORK, V4L2

from .conftest import REPO, run_cli

JETSON = OpenCvCapabilities(
    version=(4, 5, 4), ffmpeg=True, gstreamer=True, v4l2=True, open_params=True,
    gstreamer_timeouts=False, origin="cv2 4.5.4 (JetPack 5 style, stands in for Jetson)",
)  # fmt: skip
RTSP = "rtsp://admin:hunter2@127.0.0.1:8554/cam"


@pytest.fixture
def config_dir(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.avi").write_bytes(b"not decoded here")
    (tmp_path / "frames").mkdir()
    return tmp_path


def _load(config_dir, sources):
    path = config_dir / "edged.yaml"
    streams = "".join(f'  s{i}: {{source: "{s}", model: m}}\n' for i, s in enumerate(sources))
    path.write_text("models: {m: {path: m.onnx}}\nstreams:\n" + streams)
    config = load_config(str(path))
    return [config.streams[f"s{i}"].source for i in range(len(sources))]


def test_config_loader_and_build_source_agree_on_every_kind(config_dir):
    """Before the table, the config loader resolved "0" against its directory: a file
    <config dir>/0 that does not exist, while parse_source("0") opened /dev/video0."""
    sources = ["0", "/dev/video1", "csi://0", RTSP, "clips/a.avi", "frames"]
    clip = str(config_dir / "clips" / "a.avi")
    expected = [
        (V4L2, "/dev/video0", "CAP_V4L2", "/dev/video0"),
        (V4L2, "/dev/video1", "CAP_V4L2", "/dev/video1"),
        (CSI, "csi://0", "CAP_GSTREAMER", csi_pipeline(0, 1920, 1080, 30.0)),
        (NETWORK, RTSP, "CAP_FFMPEG", RTSP),
        (FILE, clip, "CAP_FFMPEG", clip),
        (IMAGES, str(config_dir / "frames"), None, None),
    ]  # fmt: skip
    specs = _load(config_dir, sources)
    for source, spec, (kind, location, api, target) in zip(sources, specs, expected):
        assert (spec.kind, spec.location) == (kind, location), source
        assert classify(source, base_dir=str(config_dir)) == (kind, (location, spec.sensor_id))
        direct = parse_source(location if kind in (FILE, IMAGES) else source)
        assert (direct.kind, direct.location) == (kind, location), source
        built = build_source(spec, cv2, JETSON)  # nothing is opened yet
        if kind == IMAGES:
            assert isinstance(built, ImageDirectorySource)
        else:
            assert isinstance(built, OpenCvSource) and built.plan[:2] == (api, target), source
        assert "hunter2" not in spec.display + repr(spec)


def test_every_kind_has_one_row_in_the_table():
    assert sorted(kinds()) == sorted(KINDS)
    assert kinds()[-1] == FILE  # any other path is a file: asked last


@pytest.mark.parametrize(
    "source",
    ["rtsp//admin:pa/ss@cam/x", "rtsp:/cam/x", "admin:pa ss@cam/x", "RTSP:/admin:pw@cam"],
)
def test_mistyped_urls_in_a_config_file_are_refused_by_check_config(tmp_path, source):
    """They used to pass as relative file names (resolved against the config directory
    before the source was classified) and fail only at `edged run`: "video file ... does
    not exist", with the password in the path."""
    path = tmp_path / "edged.yaml"
    path.write_text(
        f'models: {{m: {{path: m.onnx}}}}\nstreams: {{a: {{source: "{source}", model: m}}}}\n'
    )
    result = run_cli(["check-config", str(path)])
    assert result.returncode == 2, result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"edged: error: {path}: streams.a.source: ")
    assert "URL" in line and "does not exist" not in line
    for secret in ("pa/ss", "pa ss", ":pw@"):
        assert secret not in line


def test_the_table_and_the_config_loader_import_without_opencv(tmp_path):
    """The recognisers are plain string work: a host without cv2 can still check a config."""
    path = tmp_path / "edged.yaml"
    path.write_text('models: {m: {path: m.onnx}}\nstreams: {a: {source: "0", model: m}}\n')
    code = (
        "import sys; sys.modules['cv2'] = None\n"  # any `import cv2` now raises ImportError
        "from edged.config import load_config\n"
        f"print(load_config({str(path)!r}).streams['a'].source.location)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "/dev/video0"


def test_the_sources_package_does_not_import_the_config_package():
    """config -> sources only (the loader asks the table); the reverse would be a cycle."""
    code = "import sys, edged.sources; print('edged.config' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


PARTS = [
    "rtsp://", "http://", "file://", "csi://", "v4l2://", "gst:", "/dev/video", "rtsp//", "rtsp:/",
    "0", "7", "\u00b2", "\u0663", "a", "clip.avi", "frames/", "..", "/", ":", "@", "#", "?", "%",
    " ", "[", "]", "u:p@h", "appsink", "\uff0f", "~",
]  # fmt: skip


def test_random_sources_get_one_meaning_in_a_config_file_and_in_parse_source(tmp_path):
    """Seeded: whatever the string, the config loader and parse_source(base_dir=...) agree,
    and a kind that is no path does not depend on the config file's directory at all."""
    rng = random.Random(41)
    for i in range(300):
        source = "".join(rng.choice(PARTS) for _ in range(rng.randint(1, 5)))
        text = yaml.safe_dump(
            {
                "models": {"m": {"path": "m.onnx"}},
                "streams": {"a": {"source": source, "model": "m"}},
            }
        )
        context = f"run {i} (seed 41): {source!r}"
        try:
            spec = parse_config(text, base_dir=str(tmp_path)).streams["a"].source
        except ConfigError as e:
            with pytest.raises(ConfigError):
                parse_source(source, key="streams.a.source", base_dir=str(tmp_path))
            assert "\n" not in str(e), context
            continue
        direct = parse_source(source, key="streams.a.source", base_dir=str(tmp_path))
        assert (spec.kind, spec.location) == (direct.kind, direct.location), context
        if spec.kind not in (FILE, IMAGES):
            plain = parse_source(source)
            assert (plain.kind, plain.location) == (spec.kind, spec.location), context

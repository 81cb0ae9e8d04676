"""``edged convert``: tao-converter's command line on edged's engine cache.

The flag mapping and refusals are pure and tested as data on every Python. The builds run the
REAL TensorRT-RTX builder where it installs (Python >= 3.10 on x86-64: CI's 3.11 run); what only
the full TensorRT of a Jetson has (UFF, INT8 calibration, DLA, strict types) is checked against
the FAKE TensorRT of tests/fake_tensorrt.py, which mimics that API's shape and executes nothing.
"""

import json
import os
import platform
import subprocess
import sys

import pytest

from edged import cli
from edged.engine import taoconvert
from edged.engine.taoconvert import Capabilities, build_options, parse_command, refusals
from edged.errors import ConfigError
from edged.etlt import encode_etlt

from . import onnx_models
from .fake_tensorrt import TRT85, make_trt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_ETLT = os.path.join(REPO, "models", "peoplenet-demo", "peoplenet_demo.etlt")
SEED = ["-k", "tlt_encode", "-t", "fp16", "-d", "3,544,960", "-e", "peoplenet.engine"]
RTX_HERE = sys.version_info >= (3, 10) and platform.machine() == "x86_64"
needs_rtx = pytest.mark.skipif(
    not RTX_HERE,
    reason="TensorRT-RTX wheels need Python >= 3.10 on x86_64 (the 3.11 run builds real engines)",
)

RTX_CAPS = Capabilities("tensorrt_rtx 1.7", True, False, False, False, 0, False)
JETSON_CAPS = Capabilities("tensorrt 8.5", False, True, True, True, 2, True)


# -- the command line, as data ------------------------------------------------------------


def test_nvidia_seed_command_parses_to_tao_converters_meaning():
    r = parse_command(SEED + ["resnet34_peoplenet_pruned.etlt"])
    assert (r.key, r.precision, r.dims, r.engine) == (
        "tlt_encode",
        "fp16",
        (3, 544, 960),
        "peoplenet.engine",
    )
    assert r.model == "resnet34_peoplenet_pruned.etlt"
    # tao-converter's own defaults where the command is silent
    assert (r.max_batch, r.workspace_bytes, r.calibration_batch, r.input_order) == (
        16,
        1 << 30,
        8,
        "nchw",
    )
    opts = build_options(r, "uff")
    assert (opts.input_width, opts.input_height, opts.precision) == (960, 544, "fp16")
    assert opts.precision_fallback and opts.max_batch == 16 and opts.workspace_bytes == 1 << 30


def test_uff_command_with_outputs_batch_int8_and_workspace():
    r = parse_command(
        ["-k", "tlt_encode", "-d", "3,544,960", "-o", "output_cov/Sigmoid,output_bbox/BiasAdd",
         "-m", "4", "-t", "int8", "-c", "cal.txt", "-b", "2", "-w", "268435456", "-s", "-u", "1",
         "-e", "out.engine", "m.etlt"]
    )  # fmt: skip
    opts = build_options(r, "uff")
    assert opts.output_names == ("output_cov/Sigmoid", "output_bbox/BiasAdd")
    assert (opts.max_batch, opts.precision, opts.calibration_cache) == (4, "int8", "cal.txt")
    assert not opts.precision_fallback  # INT8 is built or refused, never silently lowered
    assert (opts.calibration_batch_size, opts.workspace_bytes, opts.strict_types) == (
        2,
        1 << 28,
        True,
    )
    assert opts.dla_core == 1 and opts.gpu_fallback
    assert build_options(r, "onnx").output_names == ()  # ONNX outputs come from the graph


def test_profiles_are_repeatable_and_shaped_like_tao_converters():
    r = parse_command(
        ["-p", "input_1,1x3x544x960,4x3x544x960,16x3x544x960", "-p", "aux,1x2,1x2,1x2", "m.onnx"]
    )
    assert r.profiles == {
        "input_1": ((1, 3, 544, 960), (4, 3, 544, 960), (16, 3, 544, 960)),
        "aux": ((1, 2), (1, 2), (1, 2)),
    }
    assert build_options(r, "onnx").profiles["input_1"][2] == (16, 3, 544, 960)


def test_nhwc_dims_are_read_in_their_order():
    r = parse_command(["-d", "544,960,3", "-i", "nhwc", "m.etlt"])
    assert taoconvert.chw(r) == (3, 544, 960)


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["-z", "1", "m.etlt"], "-z"),
        (["-d", "3,x,960", "m.etlt"], "-d"),
        (["-d", "3,0,960", "m.etlt"], "-d"),
        (["-p", "input_1,1x3,4x3", "m.onnx"], "-p"),
        (["-p", "input_1,4x3x8x8,1x3x8x8,16x3x8x8", "m.onnx"], "-p"),
        (["-p", "a,1x3,1x3,1x3", "-p", "a,1x3,1x3,1x3", "m.onnx"], "-p"),
        (["-m", "0", "m.etlt"], "-m"),
        (["-t", "int4", "m.etlt"], "-t"),
        (["-w", "lots", "m.etlt"], "-w"),
        (["-k", "key"], "MODEL"),
    ],
)
def test_bad_flags_are_one_line_naming_the_flag(argv, flag):
    with pytest.raises(ConfigError) as e:
        parse_command(argv)
    message = str(e.value)
    assert "\n" not in message
    assert flag in message


REFUSALS = [
    # (argv, model format, capabilities, the flag the first refusal names or None)
    (SEED + ["m.etlt"], "onnx", RTX_CAPS, None),
    (SEED + ["m.etlt"], "uff", RTX_CAPS, "MODEL"),
    (["-k", "k", "m.etlt"], "uff", JETSON_CAPS, "-d"),
    (SEED + ["m.etlt"], "uff", JETSON_CAPS, None),
    (["-t", "int8", "-c", "cal.txt", "m.onnx"], "onnx", RTX_CAPS, "-t int8"),
    (["-t", "int8", "m.onnx"], "onnx", JETSON_CAPS, "-t int8"),
    (["-t", "int8", "-c", "cal.txt", "m.onnx"], "onnx", JETSON_CAPS, None),
    (["-c", "cal.txt", "m.onnx"], "onnx", JETSON_CAPS, "-c"),
    (["-u", "0", "m.onnx"], "onnx", RTX_CAPS, "-u 0"),
    (["-u", "1", "m.onnx"], "onnx", JETSON_CAPS, None),
    (["-u", "2", "m.onnx"], "onnx", JETSON_CAPS, "-u 2"),
    (["-s", "m.onnx"], "onnx", RTX_CAPS, None),  # strongly typed: already strict
    (["-s", "m.onnx"], "onnx", JETSON_CAPS._replace(strict_flag=False), "-s"),
    (["-i", "nhwc", "-d", "544,960,3", "m.onnx"], "onnx", JETSON_CAPS, "-i nhwc"),
    (["-p", "input_1,1x3x8x8,1x3x8x8,1x3x8x8", "-d", "3,8,8", "m.etlt"], "uff", JETSON_CAPS, "-p"),
]


@pytest.mark.parametrize("argv, fmt, caps, flag", REFUSALS)
def test_flags_this_tensorrt_cannot_honour_are_refused(argv, fmt, caps, flag):
    found = refusals(parse_command(argv), fmt, caps)
    if flag is None:
        assert found == []
    else:
        assert found and found[0].startswith(flag), found


def test_cli_error_lines_are_single_and_exit_2(capsys):
    assert cli.main(["convert", "-z", "1", "m.etlt"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "-z" in err[0]


def test_help_lists_every_tao_converter_flag(capsys):
    assert cli.main(["convert", "-h"]) == 0
    out = capsys.readouterr().out
    for flag in ("-k", "-d", "-o", "-e", "-m", "-t", "-c", "-b", "-w", "-i", "-p", "-s", "-u"):
        assert flag + " " in out


def test_docs_map_every_flag():
    with open(os.path.join(REPO, "docs", "convert.md")) as f:
        doc = f.read()
    for flag in ("-k", "-d", "-o", "-e", "-m", "-t", "-c", "-b", "-w", "-i", "-p", "-s", "-u"):
        assert f"| `{flag}" in doc, flag


# -- builds through the FAKE TensorRT of a Jetson (executes nothing) -------------------------


@pytest.fixture
def fake_jetson_trt(monkeypatch):
    """Make `edged convert` find a FAKE TensorRT 8.5 with 2 DLA cores and fast INT8."""
    trt = make_trt(**dict(TRT85, dla_cores=2, fast_int8=True))
    import edged.backends.tensorrt_api as api

    monkeypatch.setattr(api, "import_tensorrt", lambda name="auto", **kw: trt)
    monkeypatch.setattr(
        "edged.engine.platform.probe_gpu",
        lambda: __import__("edged.engine.platform", fromlist=["GpuInfo"]).GpuInfo(
            "NVIDIA Tegra Xavier", "7.2", "11.4", "-"
        ),
        raising=False,
    )
    return trt


def _uff_etlt(tmp_path):
    uff = b"\x08\x01\x10\x01"  # a UFF MetaGraph header: version 1, core version 1
    path = str(tmp_path / "resnet34_peoplenet_pruned.etlt")
    return onnx_models.write(path, encode_etlt(uff, "tlt_encode", input_name="input_1"))


def test_uff_without_d_is_refused_naming_d(tmp_path, fake_jetson_trt, capsys):
    model = _uff_etlt(tmp_path)
    rc = cli.main(["convert", "-k", "tlt_encode", "-e", str(tmp_path / "e.engine"),
                   "--cache-dir", str(tmp_path / "cache"), model])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "-d: a UFF model needs" in err[0], err
    assert not os.path.exists(tmp_path / "e.engine")


def test_uff_int8_dla_strict_reach_the_fake_builder(tmp_path, fake_jetson_trt, capsys):
    model = _uff_etlt(tmp_path)
    cal = tmp_path / "cal.txt"
    cal.write_bytes(b"TRT-8500-EntropyCalibration2\ninput_1: 3c010a14\n")
    engine = str(tmp_path / "out" / "peoplenet.engine")
    rc = cli.main(
        ["convert", "-k", "tlt_encode", "-d", "3,544,960",
         "-o", "output_cov/Sigmoid,output_bbox/BiasAdd", "-m", "4", "-t", "int8",
         "-c", str(cal), "-s", "-u", "1", "-e", engine,
         "--cache-dir", str(tmp_path / "cache"), "--json", model]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0, out
    fields = json.loads(out)
    assert fields["precision_obtained"] == "int8" and fields["device_obtained"] == "dla1"
    manifest = json.loads(open(engine + ".json").read())
    assert "OBEY_PRECISION_CONSTRAINTS" in manifest["builder_flags"]
    assert manifest["inputs"]["build"]["max_batch"] == 4


# -- real builds with TensorRT-RTX -------------------------------------------------------------


def run_convert(tmp_path, *argv):
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    return subprocess.run(
        [sys.executable, "-m", "edged", "convert", *argv],
        cwd=str(tmp_path),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=600,
    )


@needs_rtx
def test_seed_command_writes_the_engine_and_its_manifest_then_hits_the_cache(tmp_path):
    first = run_convert(tmp_path, *SEED, DEMO_ETLT)
    assert first.returncode == 0, first.stderr
    assert "written" in first.stdout
    engine = tmp_path / "peoplenet.engine"
    manifest = json.loads((tmp_path / "peoplenet.engine.json").read_text())
    data = engine.read_bytes()
    import hashlib

    assert hashlib.sha256(data).hexdigest() == manifest["engine_sha256"]
    assert manifest["precision_requested"] == "fp16" and manifest["precision_obtained"] == "fp32"
    assert "tlt_encode" not in first.stdout + first.stderr + json.dumps(manifest)
    # a plain serialized engine: the same builder's runtime takes it (it cannot execute here:
    # TensorRT-RTX refuses to run without a supported GPU, so deserialisation yields None or
    # raises; what is checked is the bytes it was handed: the cached engine's)
    cached = os.path.join(manifest_entry(first.stdout, tmp_path), "model.engine")
    assert open(cached, "rb").read() == data
    assert "-d" not in first.stdout  # 3,544,960 is the demo model's own input
    before = (os.stat(str(engine)).st_mtime_ns, os.stat(str(engine)).st_ino)
    second = run_convert(tmp_path, *SEED, DEMO_ETLT)
    assert second.returncode == 0, second.stderr
    assert "cache hit, unchanged" in second.stdout
    assert (os.stat(str(engine)).st_mtime_ns, os.stat(str(engine)).st_ino) == before


def manifest_entry(stdout, tmp_path):
    cache = tmp_path / "xdg" / "edged" / "engines" / "entries"
    entries = [str(p) for p in cache.iterdir()]
    assert len(entries) == 1, entries
    return entries[0]


@needs_rtx
def test_profile_command_for_an_onnx_payload_model(tmp_path):
    etlt = onnx_models.write(
        str(tmp_path / "dyn.etlt"),
        encode_etlt(onnx_models.detectnet(3, width=64, height=32, batch=None), "tlt_encode"),
    )
    r = run_convert(tmp_path, "-k", "tlt_encode", "-p", "input_1,1x3x32x64,2x3x32x64,4x3x32x64",
                    "-e", "dyn.engine", "--json", etlt)  # fmt: skip
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "dyn.engine.json").read_text())
    (inp,) = [t for t in manifest["io"] if t["mode"] == "input"]
    assert inp["profile"] == [[1, 3, 32, 64], [2, 3, 32, 64], [4, 3, 32, 64]]


@needs_rtx
@pytest.mark.parametrize(
    "argv, expect",
    [
        (["-k", "tlt_encode", "-t", "int8", "-c", "cal.txt", "-e", "x.engine"], "-t int8"),
        (["-k", "s3cr3t-k3y", "-e", "x.engine"], "key"),
        (["-k", "tlt_encode", "-u", "0", "-e", "x.engine"], "-u 0"),
        (["-k", "tlt_encode", "-e", "x.engine", "--bogus"], "--bogus"),
    ],
)
def test_refusals_with_the_real_builder_are_one_line_exit_2(tmp_path, argv, expect):
    (tmp_path / "cal.txt").write_text("TRT-1000-EntropyCalibration2\n")
    r = run_convert(tmp_path, *argv, DEMO_ETLT)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and expect in lines[0], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.engine").exists()
    assert "s3cr3t-k3y" not in r.stdout + r.stderr


@needs_rtx
def test_d_that_disagrees_with_a_static_onnx_input_is_noted(tmp_path):
    r = run_convert(tmp_path, "-k", "tlt_encode", "-d", "3,272,480", "-e", "p.engine", DEMO_ETLT)
    assert r.returncode == 0, r.stderr
    assert "note: -d 3,272,480: the model's input is 3,544,960" in r.stdout

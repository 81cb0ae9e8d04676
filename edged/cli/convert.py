"""``edged convert``: tao-converter's command line, building through edged's engine cache.

``edged convert -k tlt_encode -t fp16 -d 3,544,960 -e peoplenet.engine model.etlt`` builds (or
finds in the cache) the engine and writes it to ``-e`` atomically as a plain serialized TensorRT
engine, which DeepStream's ``model-engine-file=`` and ``trtexec --loadEngine`` read, with the
cache manifest (every build input, the precision obtained) beside it as ``<engine>.json``. A
second identical command is a cache hit and rewrites nothing. Exit 0 / 2 / 3 as ``edged build``.
The flags are parsed by edged.engine.taoconvert, not by edged's own argument parser, so that
tao-converter's single-letter flags keep their meaning.
"""

import argparse
import hashlib
import json
import logging
import os
import sys
from typing import Any, Dict, List

from ..errors import ConfigError, EngineError
from .build import EXIT_BUILD_FAILED, progress_renderer

logger = logging.getLogger(__name__)


def add_parser(commands: "argparse._SubParsersAction") -> None:
    # '+' as the prefix: every token after `convert` reaches taoconvert.parse_command as it is
    p = commands.add_parser(
        "convert",
        help="build a TensorRT engine with tao-converter's command line",
        add_help=False,
        prefix_chars="+",
    )
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.taoconvert import parse_command, usage

    if any(a in ("-h", "--help") for a in args.argv):
        print(usage(), end="")
        return 0
    request = parse_command(args.argv)
    if request.verbose:
        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
    try:
        fields = convert(request)
    except EngineError as e:
        print(f"edged: error: {request.engine}: {e}", file=sys.stderr)
        return EXIT_BUILD_FAILED
    if request.json:
        print(json.dumps(fields, sort_keys=True), flush=True)
    else:
        print(summary_line(fields), flush=True)
        for note in fields["notes"]:
            print(f"  note: {note}", flush=True)
    return 0


def convert(request: Any) -> Dict[str, Any]:
    """Check, build through the cache, install at ``-e``; the fields of the summary.

    Raises:
        ConfigError, ModelError: a flag the TensorRT at hand cannot honour, a bad model or key.
        EngineError: the build failed.
    """
    from ..backends.tensorrt_api import import_tensorrt
    from ..engine.builder import EngineBuilder
    from ..engine.cache import EngineCache, default_cache_dir
    from ..engine.platform import LivePlatform
    from ..engine.progress import ProgressTracker
    from ..engine.service import get_or_build
    from ..engine.taoconvert import build_options, refusals
    from ..modelfile import load_model_artifact

    artifact = load_model_artifact(request.model, request.key)
    trt = import_tensorrt(request.tensorrt_module or "auto")
    builder = EngineBuilder(trt)
    problems = refusals(request, artifact.format, capabilities(trt, builder))
    if problems:
        raise ConfigError(problems[0])
    options = build_options(request, artifact.format, artifact.input_name)
    cache = EngineCache(request.cache_dir or default_cache_dir())
    render = progress_renderer(request.progress, request.json, os.path.basename(request.engine))
    name = os.path.splitext(os.path.basename(request.engine))[0] or artifact.name
    try:
        outcome = get_or_build(
            artifact,
            options,
            cache,
            builder,
            LivePlatform()(trt),
            key=request.key,
            model_name=name,
            tracker=ProgressTracker(render),
            force=request.force,
            on_wait=lambda path: print(
                f"{request.engine}: another process is building this engine; waiting",
                file=sys.stderr,
                flush=True,
            ),
        )
    finally:
        if render is not None:
            render.finish()
    manifest = outcome.entry.manifest
    written = install(outcome.entry.engine_path, manifest, request.engine)
    notes = list(manifest.get("notes", [])) + _flag_notes(request, artifact.format, manifest)
    return {
        "engine": request.engine,
        "manifest": manifest_path(request.engine),
        "result": outcome.result,
        "written": written,
        "precision_obtained": manifest.get("precision_obtained"),
        "device_obtained": manifest.get("device_obtained"),
        "engine_bytes": manifest.get("engine_bytes"),
        "build_seconds": round(outcome.seconds, 3),
        "cache_entry": outcome.entry.path,
        "fingerprint": outcome.entry.fingerprint,
        "notes": notes,
    }


def capabilities(trt: Any, builder: Any) -> Any:
    """What ``trt`` can build here (DLA cores are asked of a real Builder)."""
    from ..backends.tensorrt_api import module_name, version_of
    from ..engine.builder import strict_types_flag
    from ..engine.errors import EngineBuildError
    from ..engine.taoconvert import Capabilities

    f = builder.features
    dla_cores = 0
    if f.dla:
        dla_cores = builder.caps(trt.Builder(builder.trt_logger)).dla_cores
    try:
        strict = bool(strict_types_flag(trt))
    except EngineBuildError:
        strict = False
    return Capabilities(
        module=f"{module_name(trt)} {version_of(trt)}",
        strongly_typed=f.strongly_typed,
        int8=f.int8_flag,
        int8_calibrator=f.int8_calibrator,
        uff=f.uff_parser,
        dla_cores=dla_cores,
        strict_flag=strict,
    )


def manifest_path(engine_path: str) -> str:
    return engine_path + ".json"


def install(engine_source: str, manifest: Dict[str, Any], engine_path: str) -> bool:
    """Copy the cached engine to ``engine_path`` and its manifest beside it, each atomically.

    A file that already holds the same bytes is left alone (no rewrite, same mtime), so a
    repeated command changes nothing on disk. Returns whether anything was written.
    """
    from ..fsutil import atomic_write

    with open(engine_source, "rb") as f:
        engine = f.read()
    meta = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    written = False
    directory = os.path.dirname(os.path.abspath(engine_path))
    try:
        os.makedirs(directory, exist_ok=True)
        for path, data in ((engine_path, engine), (manifest_path(engine_path), meta)):
            if _same_bytes(path, data):
                continue
            atomic_write(path, data)
            written = True
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from e
    return written


def _same_bytes(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    except OSError:
        return False


def _flag_notes(request: Any, model_format: str, manifest: Dict[str, Any]) -> List[str]:
    """Where the model itself disagrees with -d or -o (ONNX: the graph decides)."""
    from ..engine.taoconvert import chw

    notes = []  # type: List[str]
    io = manifest.get("io") or []
    outputs = {t.get("name", "") for t in io if t.get("mode") == "output"}
    plain = {n[:-2] if n.endswith(":0") else n for n in outputs}
    missing = [n for n in request.outputs if n not in outputs and n not in plain]
    if missing and model_format != "uff":
        notes.append(
            "-o {}: not outputs of this ONNX model (its outputs: {}); an ONNX model's outputs "
            "come from the graph".format(",".join(missing), ", ".join(sorted(outputs)) or "none")
        )
    shape = chw(request)
    inputs = [t for t in io if t.get("mode") == "input"]
    if shape is not None and model_format != "uff" and len(inputs) == 1:
        dims = list(inputs[0].get("shape") or [])[1:]
        if len(dims) == 3 and all(d >= 0 for d in dims) and tuple(dims) != shape:
            notes.append(
                "-d {}: the model's input is {} (C,H,W); an ONNX model's static shape is "
                "what is built".format(",".join(map(str, request.dims)), ",".join(map(str, dims)))
            )
    return notes


def summary_line(fields: Dict[str, Any]) -> str:
    what = (
        "built in {:.1f} s".format(fields["build_seconds"])
        if fields["result"] == "built"
        else "cache hit"
    )
    state = "written" if fields["written"] else "unchanged"
    return "{}: {}, {} ({} on {}, {:.1f} MiB; manifest {})".format(
        fields["engine"],
        what,
        state,
        fields["precision_obtained"],
        fields["device_obtained"],
        (fields["engine_bytes"] or 0) / 1048576.0,
        fields["manifest"],
    )

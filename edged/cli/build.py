"""``edged build CONFIG|MODEL``: build (or find) TensorRT engines ahead of time.

With a config file it builds every model whose backend is ``tensorrt`` (or
those named with ``--model``), with the config's ``engine`` settings; with a
model file (``.onnx`` / ``.etlt``) it builds that model with the defaults and
the options given. Two ``edged build`` runs for the same engine build it once
(the second waits, then reports a cache hit). Progress goes to stderr: a bar
on a terminal, plain lines otherwise; results go to stdout (``--json``: one
JSON object per model). Exit 0 when every engine is ready, 3 when a build
failed, 2 for a bad config, model or key.

``edged build --worker`` is the daemon's build child (edged.engine.worker):
one JSON request on stdin, JSON lines on stdout.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any, List, Optional, Tuple

from ..errors import ConfigError, EngineError

EXIT_BUILD_FAILED = 3
CONFIG_EXTENSIONS = (".yaml", ".yml")


def add_parser(commands: "argparse._SubParsersAction") -> None:
    p = commands.add_parser(
        "build",
        help="build TensorRT engines into the engine cache",
        description="Build (or find in the cache) the TensorRT engine of every model with "
        "backend tensorrt in CONFIG, or of one MODEL file (.onnx, .etlt). Exit 0 when all are "
        "ready, 3 when a build failed, 2 for a bad config, model or key.",
    )
    p.add_argument("target", nargs="?", metavar="CONFIG|MODEL")
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="with a CONFIG: build this model (repeatable; any backend)",
    )
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the .etlt model key (visible in `ps`; prefer --key-env)")
    keys.add_argument("--key-env", metavar="VAR", help="environment variable holding the key")
    keys.add_argument("--key-file", metavar="FILE", help="file whose first line is the key")
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"))
    p.add_argument(
        "--no-fallback",
        action="store_true",
        help="fail instead of building a lower precision than requested",
    )
    p.add_argument("--workspace-mb", type=int, metavar="MIB")
    p.add_argument("--dla-core", type=int, metavar="N", help="-1 for the GPU")
    p.add_argument("--max-batch", type=int, metavar="N")
    p.add_argument("--width", type=int, help="input width for dynamic-size or UFF models")
    p.add_argument("--height", type=int, help="input height for dynamic-size or UFF models")
    p.add_argument("--calibration-cache", metavar="FILE")
    p.add_argument("--calibration-images", metavar="DIR")
    p.add_argument("--cache-dir", metavar="DIR", help="engine cache (default: engine.cache_dir)")
    p.add_argument(
        "--tensorrt-module",
        metavar="NAME",
        help="tensorrt, tensorrt_rtx, tensorrt_rtx_bindings (default: auto)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even when the cache has it")
    p.add_argument("--json", action="store_true", help="results as JSON lines on stdout")
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "lines", "none"),
        default="auto",
        help="progress on stderr: auto is a bar on a terminal, lines otherwise",
    )
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.worker:
        from ..engine.worker import worker_main

        logging.getLogger().setLevel(min(logging.getLogger().level, logging.INFO))
        return worker_main(sys.stdin, sys.stdout)
    if not args.target:
        raise ConfigError("edged build: give a CONFIG file or a MODEL file")
    engine, models = _plan(args)
    failures = 0
    for model in models:
        try:
            _build_one(args, engine, model)
        except EngineError as e:
            failures += 1
            print(f"edged: error: {model.name}: {e}", file=sys.stderr)
    return EXIT_BUILD_FAILED if failures else 0


def _plan(args: argparse.Namespace) -> Tuple[Any, List[Any]]:
    """(EngineConfig, [ModelConfig]) with the command line's overrides applied."""
    from ..config import EngineConfig, ModelConfig, load_config

    if args.target.lower().endswith(CONFIG_EXTENSIONS):
        config = load_config(args.target)
        engine = config.engine
        if args.model:
            missing = [n for n in args.model if n not in config.models]
            if missing:
                raise ConfigError(
                    "{}: no model named {} (models: {})".format(
                        args.target, ", ".join(missing), ", ".join(sorted(config.models)) or "none"
                    )
                )
            models = [config.models[n] for n in args.model]
        else:
            models = [m for m in config.models.values() if m.backend == "tensorrt"]
            if not models:
                raise ConfigError(
                    f"{args.target}: no model uses backend tensorrt (name one with --model)"
                )
    else:
        if not os.path.exists(args.target):
            raise ConfigError(f"{args.target}: no such config or model file")
        engine = EngineConfig()
        name = os.path.splitext(os.path.basename(args.target))[0]
        models = [ModelConfig(name=name, path=os.path.abspath(args.target))]
    if args.cache_dir:
        engine = dataclasses.replace(engine, cache_dir=os.path.abspath(args.cache_dir))
    if args.tensorrt_module:
        engine = dataclasses.replace(engine, tensorrt_module=args.tensorrt_module)
    return engine, [_override(args, m) for m in models]


def _override(args: argparse.Namespace, model: Any) -> Any:
    own = model.engine
    changes = {}
    for option, field in (
        ("precision", "precision"),
        ("workspace_mb", "workspace_mb"),
        ("dla_core", "dla_core"),
        ("max_batch", "max_batch"),
    ):
        value = getattr(args, option)
        if value is not None:
            changes[field] = value
    if args.no_fallback:
        changes["precision_fallback"] = False
    calibration = own.calibration
    if args.calibration_cache:
        calibration = dataclasses.replace(
            calibration, cache=os.path.abspath(args.calibration_cache)
        )
    if args.calibration_images:
        calibration = dataclasses.replace(
            calibration, images=os.path.abspath(args.calibration_images)
        )
    changes["calibration"] = calibration
    inp = model.input
    if args.width or args.height:
        inp = dataclasses.replace(
            inp, width=args.width or inp.width, height=args.height or inp.height
        )
    model = dataclasses.replace(model, engine=dataclasses.replace(own, **changes), input=inp)
    key_changes = {}
    if args.key or args.key_env or args.key_file:
        key_changes = {"key": args.key, "key_env": args.key_env, "key_file": args.key_file}
    return dataclasses.replace(model, **key_changes) if key_changes else model


def progress_renderer(mode: str, json_output: bool, label: str) -> Optional[Any]:
    """The progress display for ``--progress MODE``: a bar on a terminal, lines otherwise,
    nothing when asked or when stdout carries JSON (``auto``)."""
    from ..engine.progress import PlainLines, TerminalBar

    if mode == "none" or (json_output and mode == "auto"):
        return None
    if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
        return TerminalBar(label, sys.stderr)
    return PlainLines(label, sys.stderr)


def _build_one(args: argparse.Namespace, engine: Any, model: Any) -> None:
    from ..backends.tensorrt_api import import_tensorrt
    from ..engine.builder import EngineBuilder
    from ..engine.cache import EngineCache, default_cache_dir
    from ..engine.options import options_for_model
    from ..engine.platform import LivePlatform
    from ..engine.progress import ProgressTracker
    from ..engine.service import get_or_build
    from ..engine.worker import outcome_fields
    from ..modelfile import load_model_artifact
    from ..tasks.loader import resolve_model_key

    key = resolve_model_key(model)
    artifact = load_model_artifact(model.path, key)
    trt = import_tensorrt(engine.tensorrt_module)
    cache = EngineCache(engine.cache_dir or default_cache_dir(), int(engine.cache_max_mb) << 20)
    render = progress_renderer(args.progress, args.json, model.name)
    tracker = ProgressTracker(render)

    def waiting(path: str) -> None:
        print(
            f"{model.name}: another process is building this engine; waiting",
            file=sys.stderr,
            flush=True,
        )

    try:
        outcome = get_or_build(
            artifact,
            options_for_model(engine, model),
            cache,
            EngineBuilder(trt),
            LivePlatform()(trt),
            key=key,
            model_name=model.name,
            tracker=tracker,
            force=args.force,
            on_wait=waiting,
        )
    finally:
        if render is not None:
            render.finish()
    fields = outcome_fields(outcome)
    if args.json:
        fields["model"] = model.name
        print(json.dumps(fields, sort_keys=True), flush=True)
        return
    manifest = outcome.entry.manifest
    what = f"built in {outcome.seconds:.1f} s" if outcome.result == "built" else ("cache hit")
    print(
        "{}: {} -> {} ({} on {}, {:.1f} MiB)".format(
            model.name,
            what,
            outcome.entry.path,
            manifest.get("precision_obtained"),
            manifest.get("device_obtained"),
            manifest.get("engine_bytes", 0) / 1048576.0,
        ),
        flush=True,
    )
    for note in manifest.get("notes", []):
        print(f"  note: {note}", flush=True)

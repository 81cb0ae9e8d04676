"""``edged infer``: a model over images, directories and videos (imagenet/detectnet-console parity).

Prints one line per image or video frame (``--json``: one JSON object per
line); ``--output DIR`` writes annotated copies (videos as annotated videos).
Model settings come from flags, or from a config file (``--config``) with
flags overriding it. An input that cannot be read is reported on stderr and
the others still run; the exit code is then 2.
"""

import argparse
import dataclasses
import json
import logging
import os
import sys
from typing import Any, Dict, List, Optional

from ..config import ClassSettings, ModelConfig, build_config, load_config
from ..errors import ConfigError
from ..media import MediaFailure, MediaFrame, expand_inputs, iterate_media
from ..pipeline import preprocessors
from ..tasks.registry import AUTO, task_names

logger = logging.getLogger(__name__)


def add_parser(commands: "argparse._SubParsersAction") -> None:
    p = commands.add_parser(
        "infer",
        help="run a model over images, directories or videos",
        description="Classify or detect on images, directories of images, or video files.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image, directory or video file")
    src = p.add_argument_group("model")
    src.add_argument("--model", metavar="PATH", help="model file (.onnx or .etlt)")
    src.add_argument("--config", "-c", metavar="FILE", help="take the model from a config file")
    src.add_argument(
        "--model-name", metavar="NAME", help="which model of --config (default: the only one)"
    )
    src.add_argument("--labels", metavar="PATH", help="labels.txt, one class per line")
    key = src.add_mutually_exclusive_group()
    key.add_argument("--model-key", metavar="KEY", help=".etlt model key (PeopleNet: tlt_encode)")
    key.add_argument("--model-key-file", metavar="PATH", help="file holding the .etlt model key")
    key.add_argument("--model-key-env", metavar="VAR", help="environment variable holding the key")
    src.add_argument("--task", choices=[AUTO] + task_names(), help="default: auto")
    src.add_argument("--input-blob", metavar="NAME", help="input tensor name")
    src.add_argument("--output-blob", metavar="NAME", help="classifier output tensor name")
    src.add_argument("--threads", type=int, metavar="N", help="CPU threads (0: all cores)")
    src.add_argument(
        "--preprocess", choices=["auto", "cpu", "cuda"], default="auto",
        help="pre-process on the CPU or with the fused CUDA kernel (default: auto, cuda when "
        "pycuda, a GPU and nvcc are there)",
    )  # fmt: skip
    post = p.add_argument_group("results")
    post.add_argument("--top-k", type=int, metavar="K", help="classes to report (default 1)")
    post.add_argument("--threshold", type=float, metavar="T",
                      help="minimum confidence (classification) or coverage (detection, "
                      "all classes)")  # fmt: skip
    p.add_argument(
        "--ignore-exif",
        action="store_true",
        help="read JPEG photos as stored, ignoring their EXIF orientation tag (as "
        "jetson-inference does); by default the tag is applied, as photo viewers do",
    )
    post.add_argument("--json", action="store_true", help="one JSON object per input/frame")
    post.add_argument("--track", action="store_true",
                      help="detectors on videos: give each detection a track_id (stable within "
                      "the video); on by default with a --config model that has "
                      "tracking.enabled")  # fmt: skip
    post.add_argument("--output", "-o", metavar="DIR",
                      help="write annotated copies here, in the inputs' folder layout (videos as "
                      ".mp4 at the source's frame rate)")  # fmt: skip
    p.set_defaults(run=run)


#: The config key each flag is checked as (the schema's bounds and messages, as for a config
#: file): an error names the flag the user typed instead.
FLAG_OF_KEY = (
    ("models.cli.path", "--model"),
    ("models.cli.labels", "--labels"),
    ("models.cli.key", "--model-key"),
    ("models.cli.key_file", "--model-key-file"),
    ("models.cli.key_env", "--model-key-env"),
    ("models.cli.task", "--task"),
    ("models.cli.threads", "--threads"),
    ("models.cli.input.name", "--input-blob"),
    ("models.cli.classification.output", "--output-blob"),
    ("models.cli.classification.top_k", "--top-k"),
    ("models.cli.classification.threshold", "--threshold"),
    ("models.cli.detection.classes.default.threshold", "--threshold"),
)


def _model_from_flags(raw: dict) -> ModelConfig:
    """``raw`` (config keys) validated as model ``cli``; an error names the flag, not the key."""
    from ..config import schema
    from ..config.validate import SchemaValidator, first_error

    data = {"models": {"cli": raw}}
    problems = []  # type: List[str]
    for problem in SchemaValidator(schema()).errors(data):
        named = _name_the_flag(problem)
        if named not in problems:  # --threshold is checked twice: classification, detection
            problems.append(named)
    if problems:
        raise ConfigError(first_error(problems))
    try:
        return build_config(data, os.getcwd()).models["cli"]
    except ConfigError as e:
        named = _name_the_flag(str(e))
        if named == str(e):
            raise
        raise ConfigError(named) from e


def _name_the_flag(message: str) -> str:
    for key, flag in FLAG_OF_KEY:
        if message.startswith((key + ":", key + " ")):
            return flag + message[len(key) :]
    return message


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The model to run: from --config (and --model-name) or --model, with flags applied.

    Raises:
        ConfigError: no model given, an unknown --model-name, or a flag value out of bounds.
    """
    if args.config:
        config = load_config(args.config)
        if not config.models:
            raise ConfigError(f"{args.config}: defines no models")
        name = args.model_name or (next(iter(config.models)) if len(config.models) == 1 else None)
        if name is None:
            raise ConfigError("{}: has several models ({}); choose one with --model-name".format(
                args.config, ", ".join(config.models)))  # fmt: skip
        if name not in config.models:
            raise ConfigError("{}: no model named {!r} (it has {})".format(
                args.config, name, ", ".join(config.models)))  # fmt: skip
        model = config.models[name]
        if args.model:
            model = dataclasses.replace(model, path=args.model)
    elif args.model:
        # Flags go through the same schema as a config file: same bounds, same messages.
        model = _model_from_flags({"path": args.model})
    else:
        raise ConfigError("give a model with --model PATH or --config FILE")
    return _apply_flags(model, args)


def _apply_flags(model: ModelConfig, args: argparse.Namespace) -> ModelConfig:
    raw: Dict[str, Any] = {}
    if args.labels:
        raw["labels"] = args.labels
    if args.model_key:
        raw["key"] = args.model_key
    if args.model_key_file:
        raw["key_file"] = args.model_key_file
    if args.model_key_env:
        raw["key_env"] = args.model_key_env
    if args.task:
        raw["task"] = args.task
    if args.threads is not None:
        raw["threads"] = args.threads
    if args.input_blob:
        raw["input"] = {"name": args.input_blob}
    classification: Dict[str, Any] = {}
    if args.output_blob:
        classification["output"] = args.output_blob
    if args.top_k is not None:
        classification["top_k"] = args.top_k
    if args.threshold is not None:
        classification["threshold"] = args.threshold
    if classification:
        raw["classification"] = classification
    if args.threshold is not None:
        raw["detection"] = {"classes": {"default": {"threshold": args.threshold}}}
    if not raw:
        return model
    # Validate the flag values against the schema (bounds, names) before applying them.
    checked = _model_from_flags(dict(raw, path=model.path))
    changes: Dict[str, Any] = {}
    for key in ("labels", "key_file", "task", "threads"):
        if key in raw:
            changes[key] = getattr(checked, key)
    if "key" in raw or "key_env" in raw or "key_file" in raw:
        changes.update(key=checked.key, key_env=checked.key_env, key_file=checked.key_file)
    if "labels" in raw:
        changes["class_names"] = None
    if "input" in raw:
        changes["input"] = dataclasses.replace(model.input, name=checked.input.name)
    if classification:
        changes["classification"] = dataclasses.replace(
            model.classification, **{k: getattr(checked.classification, k) for k in classification}
        )
    if args.threshold is not None:
        classes = {
            label: dataclasses.replace(s, threshold=args.threshold)
            for label, s in model.detection.classes.items()
        }
        classes["default"] = dataclasses.replace(
            classes.get("default", ClassSettings()), threshold=args.threshold
        )
        changes["detection"] = dataclasses.replace(model.detection, classes=classes)
    return dataclasses.replace(model, **changes)


def _text_line(item: MediaFrame, results: List[Any], kind: str) -> str:
    where = item.path + (f" [frame {item.frame}]" if item.is_video else "")
    if kind == "classification":
        if not results:
            return f"{where}: (no class above threshold)"
        return "{}: {}".format(
            where, ", ".join(f"{r.label} ({100 * r.confidence:.1f}%)" for r in results)
        )
    boxes = ", ".join(
        "{} {:.0f}% ({:.0f},{:.0f},{:.0f},{:.0f})".format(d.label, 100 * d.confidence, *d.bbox)
        for d in results
    )
    count = len(results)
    return "{}: {} detection{}{}".format(
        where, count, "" if count == 1 else "s", ": " + boxes if boxes else ""
    )


def _json_line(item: MediaFrame, results: List[Any], kind: str) -> str:
    record: Dict[str, Any] = {"input": item.path}
    if item.is_video or kind == "detection":
        record["frame"] = item.frame
    record["top" if kind == "classification" else "detections"] = [r.to_dict() for r in results]
    return json.dumps(record)


class _VideoTracks:
    """One tracker per video, new at each video; images are never tracked. ``overlay`` is
    the latest frame's track trails, for ``--output``."""

    def __init__(self, config: Any) -> None:
        from ..pipeline.tracking import tracker_params

        self._params = tracker_params(config)
        self._anchor = config.anchor
        self._path: Optional[str] = None
        self._tracker: Any = None  # a Tracker per video, made on its first frame
        self._trails: Any = None  # a StreamCounter with no zones, for the trails
        self.overlay: Optional[Dict[str, Any]] = None  # the trails of the last frame

    def apply(self, item: MediaFrame, results: List[Any]) -> List[Any]:
        from ..tracking.counting import StreamCounter
        from ..tracking.tracker import Tracker

        self.overlay = None
        if not item.is_video:
            return results
        if item.path != self._path or self._tracker is None:
            self._path, self._tracker = item.path, Tracker(self._params)
            self._trails = StreamCounter(anchor=self._anchor)  # no zones: for the trails
        ids = self._tracker.update([d.bbox for d in results], [d.confidence for d in results],
                                   [d.class_id for d in results])  # fmt: skip
        size = (item.image.shape[1], item.image.shape[0])
        self._trails.update(self._tracker.tracks(), size, float(item.frame))
        self.overlay = self._trails.overlay()
        return [dataclasses.replace(d, track_id=i) for d, i in zip(results, ids)]


def _warn(message: str) -> None:
    print(f"edged: warning: {message}", file=sys.stderr)


def _run_one(task: Any, pre: Any, image: Any) -> List[Any]:
    """One frame's results; ``pre``: a pre-processor (edged.pipeline.preprocessors) or None."""
    if pre is None:
        return task.run([image])[0]
    outputs = task.infer(pre.run([image]))
    return task.postprocess(outputs[0], (image.shape[1], image.shape[0]))


def run(args: argparse.Namespace) -> int:
    from ..annotate import draw_classifications, draw_detections
    from ..annotated_output import AnnotatedWriter, plan_outputs
    from ..tasks.loader import load_task
    from ..tracking.draw import draw_overlay
    from . import engines_for

    # Output names are settled before the model loads: a clash with an input fails fast.
    plan = plan_outputs(expand_inputs(args.inputs), args.output) if args.output else None
    model = model_config_from_args(args)
    task = load_task(model, engines_for(model))
    writer = AnnotatedWriter(plan, _warn) if plan is not None else None
    tracks = None
    if (args.track or model.tracking.enabled) and task.kind == "detection":
        tracks = _VideoTracks(model.tracking)
    elif args.track:
        _warn(f"--track is for detectors; this model is a {task.kind} model: not tracked")
    failures = 0
    pre = None
    try:
        pre = preprocessors.for_task(args.preprocess, task)
        for item in iterate_media(args.inputs, apply_exif=not args.ignore_exif):
            if isinstance(item, MediaFailure):
                failures += 1
                print(f"edged: error: {item.error}", file=sys.stderr)
                continue
            results = _run_one(task, pre, item.image)
            if tracks is not None:
                results = tracks.apply(item, results)
            line = (_json_line if args.json else _text_line)(item, results, task.kind)
            print(line, flush=False)
            if writer:
                draw = draw_detections if task.kind == "detection" else draw_classifications
                drawn = draw(item.image, results)
                if tracks is not None:
                    drawn = draw_overlay(drawn, tracks.overlay)
                writer.write(item, drawn)
    finally:
        if writer:
            writer.close_video()
        if pre is not None:
            pre.close()
        task.backend.close()
    sys.stdout.flush()
    return 2 if failures else 0

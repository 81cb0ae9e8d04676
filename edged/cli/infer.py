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
from typing import Any, List, Optional

from ..config import ClassSettings, ModelConfig, build_config, load_config
from ..errors import ConfigError, InputError
from ..media import MediaFailure, MediaFrame, iterate_media
from ..pipeline import preprocessors

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
    src.add_argument(
        "--task", choices=["auto", "detection", "classification"], help="default: auto"
    )
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
    post.add_argument("--json", action="store_true", help="one JSON object per input/frame")
    post.add_argument("--output", "-o", metavar="DIR", help="write annotated copies here")
    p.set_defaults(run=run)


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
        model = build_config({"models": {"cli": {"path": args.model}}}, os.getcwd()).models["cli"]
    else:
        raise ConfigError("give a model with --model PATH or --config FILE")
    return _apply_flags(model, args)


def _apply_flags(model: ModelConfig, args: argparse.Namespace) -> ModelConfig:
    raw = {}  # type: Dict[str, Any]
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
    classification = {}  # type: Dict[str, Any]
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
    flags = build_config({"models": {"cli": dict(raw, path=model.path)}}, os.getcwd())
    checked = flags.models["cli"]
    changes = {}  # type: Dict[str, Any]
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


class AnnotatedWriter:
    """Writes annotated images, and annotated videos frame by frame, under one directory."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._video = None  # type: Optional[Any]
        self._video_path = ""
        self.written = []  # type: List[str]

    def _target(self, relname: str, extension: Optional[str] = None) -> str:
        path = os.path.join(self.directory, relname)
        if extension:
            path = os.path.splitext(path)[0] + extension
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            reason = e.strerror or e
            raise InputError(f"{folder}: cannot create output directory ({reason})") from e
        return path

    def write(self, item: MediaFrame, image: Any) -> None:
        import cv2

        if not item.is_video:
            self.close_video()
            path = self._target(item.relname)
            ok, data = cv2.imencode(os.path.splitext(path)[1] or ".png", image)
            if not ok:
                raise InputError(f"{path}: cannot encode the annotated image")
            data.tofile(path)
            self.written.append(path)
            return
        if item.frame == 0 or self._video is None:
            self.close_video()
            path = self._target(item.relname, ".mp4")
            height, width = image.shape[:2]
            self._video = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 25.0,
                                          (width, height))  # fmt: skip
            if not self._video.isOpened():
                raise InputError(f"{path}: cannot write an annotated video")
            self._video_path = path
        self._video.write(image)

    def close_video(self) -> None:
        if self._video is not None:
            self._video.release()
            self.written.append(self._video_path)
            self._video = None


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
    record = {"input": item.path}  # type: Dict[str, Any]
    if item.is_video or kind == "detection":
        record["frame"] = item.frame
    record["top" if kind == "classification" else "detections"] = [r.to_dict() for r in results]
    return json.dumps(record)


def _run_one(task: Any, pre: Any, image: Any) -> List[Any]:
    """One frame's results; ``pre``: a pre-processor (edged.pipeline.preprocessors) or None."""
    if pre is None:
        return task.run([image])[0]
    outputs = task.infer(list(pre.run([image])))
    return task.postprocess(outputs[0], (image.shape[1], image.shape[0]))


def run(args: argparse.Namespace) -> int:
    from ..annotate import draw_classifications, draw_detections
    from ..tasks.loader import load_task

    model = model_config_from_args(args)
    task = load_task(model)
    writer = AnnotatedWriter(args.output) if args.output else None
    failures = 0
    pre = None
    try:
        pre = preprocessors.for_task(args.preprocess, task)
        for item in iterate_media(args.inputs):
            if isinstance(item, MediaFailure):
                failures += 1
                print(f"edged: error: {item.error}", file=sys.stderr)
                continue
            results = _run_one(task, pre, item.image)
            line = (_json_line if args.json else _text_line)(item, results, task.kind)
            print(line, flush=False)
            if writer:
                draw = draw_detections if task.kind == "detection" else draw_classifications
                writer.write(item, draw(item.image, results))
    finally:
        if writer:
            writer.close_video()
        if pre is not None:
            pre.close()
        task.backend.close()
    sys.stdout.flush()
    return 2 if failures else 0

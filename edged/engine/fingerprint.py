"""The engine cache key: a sha256 over every input that shapes an engine.

DeepStream reuses any engine that deserializes, even after the model changed
(DeepStream-Yolo#73); jetson-inference keys on the model hash and the TensorRT version only
(``c/tensorNet.cpp``). TensorRT engines are "not portable across platforms or TensorRT versions"
(TensorRT support matrix), so edged's key covers: the decoded model's sha256, a hash of the
``.etlt`` key (never the key), the calibration data's hash, input dims and profiles, the
requested precision and its fallback, DLA core, workspace, and the environment (TensorRT module
and version, CUDA, driver, L4T, GPU name and compute capability). The inputs are kept as a JSON
document in each ``manifest.json``; the key is the sha256 of its canonical form.
"""

import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional

from ..errors import EngineError
from .options import BuildOptions
from .platform import PlatformInfo

#: Bump when edged's build logic changes in a way that makes old engines wrong.
FINGERPRINT_SCHEMA = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm")
_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def key_hash(key: Optional[str], model_sha256: str) -> Optional[str]:
    """A salted hash of the ``.etlt`` model key; None for a plain model.

    Salted with the model's hash so the manifest does not give away a table
    lookup of common keys; the key itself is never stored.
    """
    if not key:
        return None
    return hashlib.sha256(
        b"edged-etlt-key\0" + model_sha256.encode("ascii") + b"\0" + key.encode("utf-8")
    ).hexdigest()


def calibration_images(folder: str, limit: int) -> List[str]:
    """The image files calibration uses: sorted by relative path, at most ``limit``."""
    found = []  # type: List[str]
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(os.path.join(root, name))
    return found[:limit]


def calibration_hash(options: BuildOptions) -> Optional[Dict[str, Any]]:
    """What INT8 calibration reads, hashed; None when INT8 is not requested.

    A given cache file wins over images (a cache-only calibrator, as tao_deploy's
    ``EngineCalibrator`` reads a shipped ``*_int8.txt``). Images are hashed by content together
    with the pre-processing that turns them into tensors.

    Raises:
        EngineError: INT8 requested and a named file or folder cannot be read.
    """
    if options.precision != "int8":
        return None
    if options.calibration_cache and os.path.isfile(options.calibration_cache):
        try:
            return {"kind": "cache", "sha256": sha256_file(options.calibration_cache)}
        except OSError as e:
            raise EngineError(
                f"{options.calibration_cache}: cannot read calibration cache ({e.strerror or e})"
            ) from e
    if options.calibration_images:
        if not os.path.isdir(options.calibration_images):
            raise EngineError(f"{options.calibration_images}: calibration image folder not found")
        images = calibration_images(options.calibration_images, options.calibration_max_images)
        if not images:
            raise EngineError(
                "{}: no calibration images ({})".format(
                    options.calibration_images, ", ".join(IMAGE_EXTENSIONS)
                )
            )
        digest = hashlib.sha256(canonical_json(options.calibration_preprocess).encode("ascii"))
        digest.update(str(options.calibration_batch_size).encode("ascii"))
        for path in images:
            rel = os.path.relpath(path, options.calibration_images)
            digest.update(rel.encode("utf-8") + b"\0" + sha256_file(path).encode("ascii"))
        return {"kind": "images", "sha256": digest.hexdigest(), "count": len(images)}
    if options.calibration_cache:
        raise EngineError(
            f"{options.calibration_cache}: calibration cache not found (and no calibration images "
            "given)"
        )
    return {"kind": "none", "sha256": None}


def fingerprint_inputs(
    model_sha256: str,
    model_format: str,
    options: BuildOptions,
    platform: PlatformInfo,
    key: Optional[str] = None,
) -> Dict[str, Any]:
    """The document the cache key is the hash of (also stored in the manifest)."""
    return {
        "schema": FINGERPRINT_SCHEMA,
        "model": {
            "sha256": model_sha256,
            "format": model_format,
            "etlt_key_sha256": key_hash(key, model_sha256),
        },
        "build": dict(options.key_dict(), calibration=calibration_hash(options)),
        "environment": platform.as_dict(),
    }


def fingerprint_of(inputs: Dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(inputs).encode("ascii")).hexdigest()


def differences(recorded: Any, live: Any, path: str = "") -> List[str]:
    """Human-readable differences between two input documents (why an entry is stale)."""
    if isinstance(recorded, dict) and isinstance(live, dict):
        out = []  # type: List[str]
        for key in sorted(set(recorded) | set(live)):
            sub = f"{path}.{key}" if path else str(key)
            out.extend(differences(recorded.get(key), live.get(key), sub))
        return out
    if recorded != live:
        return [f"{path}: recorded {_short(recorded)}, live {_short(live)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def entry_name(inputs: Dict[str, Any], fingerprint: str) -> str:
    """Directory name of a cache entry, e.g. ``3f2a9c1b04de-trt8.2.1.8-sm5.3-fp16-1a2b3c4d5e6f``.

    Readable (model, TensorRT, GPU, precision, like jetson-inference's engine names) but fully
    determined by the inputs, so every process finds the same directory.
    """
    env = inputs["environment"]
    parts = (
        inputs["model"]["sha256"][:12],
        "trt" + env["tensorrt_version"],
        "sm" + env["compute_capability"],
        inputs["build"]["precision_requested"],
        fingerprint[:12],
    )
    return _UNSAFE.sub("_", "-".join(parts))[:120]

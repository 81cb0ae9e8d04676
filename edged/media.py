"""Inputs of ``edged infer``: image files, directories of images, video files.

Yields one :class:`MediaFrame` per image or video frame, in a stable order
(directories are walked recursively and sorted, so the jetson-inference
dataset layout ``test/<label>/*.png`` works as is). A file that cannot be
read is reported as a :class:`MediaFailure` and the walk goes on: one bad
image never hides the results of the others.
"""

import os
from typing import Iterator, List, NamedTuple, Tuple, Union

import numpy as np

from .errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts")


class MediaFrame(NamedTuple):
    path: str
    relname: str  # path relative to the common folder of all inputs (for output files)
    frame: int  # index within a video; 0 for an image
    is_video: bool
    image: np.ndarray  # BGR uint8
    fps: float = 0.0  # a video's frame rate as its container states it; 0.0 if unknown or image


class MediaFailure(NamedTuple):
    path: str
    relname: str
    error: InputError


MediaItem = Union[MediaFrame, MediaFailure]


def is_image(path: str) -> bool:
    return path.lower().endswith(IMAGE_EXTENSIONS)


def expand_inputs(paths: List[str]) -> List[Tuple[str, str]]:
    """``(file, relative name)`` for ``paths``; directories become their sorted media files.

    The relative name is the file's path below the deepest folder holding every input (a
    directory input counts as that folder, a file input as its parent), so output files
    mirror the inputs' layout: ``a/x.png b/x.png`` give ``a/x.png`` and ``b/x.png``, one
    directory ``images`` gives ``r/img.png`` for ``images/r/img.png``, one file its base name.

    Raises:
        InputError: a path does not exist, or a directory has no images or videos.
    """
    files = []  # type: List[str]
    roots = []  # type: List[str]
    for path in paths:
        if os.path.isdir(path):
            found = []
            for root, dirs, names in os.walk(path):
                dirs.sort()
                for name in sorted(names):
                    if name.lower().endswith(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS):
                        found.append(os.path.join(root, name))
            if not found:
                raise InputError(f"{path}: directory has no images or videos")
            files.extend(found)
            roots.append(os.path.abspath(path))
        elif os.path.exists(path):
            files.append(path)
            roots.append(os.path.dirname(os.path.abspath(path)))
        else:
            raise InputError(f"{path}: no such file or directory")
    if not files:
        return []
    common = os.path.commonpath(roots)
    return [(f, os.path.relpath(os.path.abspath(f), common)) for f in files]


def read_image(path: str, apply_exif: bool = True) -> np.ndarray:
    """Read an image as BGR uint8.

    Args:
        apply_exif: turn a JPEG by its EXIF orientation tag, as photo viewers show it
            (OpenCV's ``IMREAD_COLOR`` does this); False reads the pixels as stored
            (``IMREAD_IGNORE_ORIENTATION``), as jetson-inference's ``loadImage`` does.

    Raises:
        InputError: unreadable or not an image.
    """
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from e
    flags = cv2.IMREAD_COLOR if apply_exif else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image")
    return image


def read_video(path: str, relname: str) -> Iterator[MediaFrame]:
    """Frames of a video file, decoded with OpenCV's FFmpeg backend.

    Raises:
        InputError: the file does not open as a video.
    """
    import cv2

    capture = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    try:
        if not capture.isOpened():
            raise InputError(f"{path}: cannot open as a video (unknown format or damaged)")
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
        index = 0
        while True:
            ok, image = capture.read()
            if not ok:
                break
            yield MediaFrame(path, relname, index, True, image, fps)
            index += 1
        if index == 0:
            raise InputError(f"{path}: video has no decodable frames")
    finally:
        capture.release()


def iterate_media(paths: List[str], apply_exif: bool = True) -> Iterator[MediaItem]:
    """Every frame of every input, with failures reported in place.

    ``apply_exif``: see :func:`read_image`.
    """
    for path, relname in expand_inputs(paths):
        try:
            if is_image(path):
                yield MediaFrame(path, relname, 0, False, read_image(path, apply_exif))
            else:
                yield from read_video(path, relname)
        except InputError as e:
            yield MediaFailure(path, relname, e)

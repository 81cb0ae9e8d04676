"""Where ``edged infer --output DIR`` writes annotated copies, and the writing itself.

Output names mirror the inputs' layout below DIR (see :func:`edged.media.expand_inputs`);
videos become ``.mp4`` at the source's frame rate. Two inputs never share an output file
(the later one gets ``-2``, ``-3``... before its extension), and a run that would write over
one of its own inputs is refused before anything is read.
"""

import math
import os
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from .errors import InputError
from .media import MediaFrame, is_image

#: Frame rate of an annotated video whose source does not state a usable one: the PAL rate,
#: the most common default of cameras and encoders.
FALLBACK_FPS = 25.0
#: Rates above this are container noise (e.g. the 90 kHz MPEG time base read as a rate).
MAX_PLAUSIBLE_FPS = 1000.0


def output_fps(stated: float) -> Optional[float]:
    """``stated`` if it is a usable frame rate, else None (unknown, zero, NaN, absurd)."""
    if stated is None or not math.isfinite(stated) or not 0 < stated <= MAX_PLAUSIBLE_FPS:
        return None
    return float(stated)


def plan_outputs(files: List[Tuple[str, str]], directory: str) -> Dict[str, str]:
    """Output file per input file, for ``(path, relative name)`` pairs in input order.

    Raises:
        InputError: an output would be one of the input files.
    """
    inputs = {os.path.realpath(path) for path, _ in files}
    plan = {}  # type: Dict[str, str]
    taken: Set[str] = set()  # real paths of the outputs so far
    for path, relname in files:
        if path in plan:  # the same input named twice: the same output
            continue
        target = os.path.join(directory, relname)
        if not is_image(path):
            target = os.path.splitext(target)[0] + ".mp4"
        stem, extension = os.path.splitext(target)
        n = 1
        while os.path.realpath(target) in taken:
            n += 1
            target = f"{stem}-{n}{extension}"
        if os.path.realpath(target) in inputs:
            raise InputError(
                f"--output {directory}: would overwrite the input {target}; "
                "choose a directory outside the inputs"
            )
        taken.add(os.path.realpath(target))
        plan[path] = target
    return plan


class AnnotatedWriter:
    """Writes annotated images, and annotated videos frame by frame, along a plan."""

    def __init__(self, plan: Dict[str, str], warn: Callable[[str], None]) -> None:
        self.plan = plan
        self.warn = warn  # told when a video is written at the fallback rate
        self._video = None  # type: Optional[Any]
        self._video_path = ""
        self.written = []  # type: List[str]

    def _target(self, item: MediaFrame) -> str:
        path = self.plan[item.path]
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
            path = self._target(item)
            ok, data = cv2.imencode(os.path.splitext(path)[1] or ".png", image)
            if not ok:
                raise InputError(f"{path}: cannot encode the annotated image")
            data.tofile(path)
            self.written.append(path)
            return
        if item.frame == 0 or self._video is None:
            self.close_video()
            path = self._target(item)
            fps = output_fps(item.fps)
            if fps is None:
                fps = FALLBACK_FPS
                self.warn(f"{item.path}: frame rate unknown; {path} is written at {fps:g} fps")
            height, width = image.shape[:2]
            self._video = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps,
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

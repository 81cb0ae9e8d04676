"""OpenCV frame sources: choose the capture backend explicitly, per source kind.

Why explicit:

* ``network`` streams use FFmpeg with ``CAP_PROP_OPEN_TIMEOUT_MSEC`` and
  ``CAP_PROP_READ_TIMEOUT_MSEC`` passed as ``params`` AT OPEN (OpenCV >= 4.5.4,
  PR #20549; ``set()`` after open does not work, opencv#23207). Without them a
  ``read()`` on a dead RTSP source can block for 30-90 s (opencv-python#788).
  RTSP transport is set through ``OPENCV_FFMPEG_CAPTURE_OPTIONS``: the only
  knob OpenCV has, and it is PROCESS-GLOBAL (read by FFmpeg's open in whatever
  thread opens). edged therefore sets it just for the duration of one open,
  under a module lock that serialises every FFmpeg network open, and restores
  the previous value after. The trade-off: network opens of different streams
  never overlap (each is bounded by its open timeout), and another library
  opening FFmpeg captures concurrently could see edged's value. If the variable
  is already set when edged starts, the operator's value wins and edged leaves
  it alone (logged once). On OpenCV < 4.5.4 (JetPack 4.6 ships 4.1.1) the read
  timeout goes into that variable as ``stimeout`` (FFmpeg's RTSP socket timeout,
  microseconds) and the built-in 30 s interrupt bounds the rest.
* ``v4l2`` devices use the V4L2 backend with size/fps/fourcc set after open and a
  1-frame driver buffer (less lag). Stable ``/dev/v4l/by-id`` links are resolved
  at every open, so a replugged camera is found again (``/dev/videoN`` follows load order).
* ``csi`` cameras and raw ``gst:`` pipelines need OpenCV built with GStreamer:
  JetPack's python3-opencv has it, pip wheels do not. That is checked before
  anything opens and reported as one SourceError line.
* ``file`` uses FFmpeg (any backend if FFmpeg is missing); at the end it loops by
  reopening (robust for every container) or ends. ``images`` reads a directory's
  sorted image files with ``cv2.imread``.

The decisions live in :func:`capture_plan`, a pure function tested without a
camera; :class:`OpenCvSource` only executes a plan.
"""

import logging
import os
import re
import threading
from fractions import Fraction
from typing import Any, List, NamedTuple, Optional, Tuple

import numpy as np

from ..errors import SourceError
from ..redact import redact
from .base import FrameSource
from .gst_formats import CSI_CPU_CAPS, CSI_GPU_CAPS, checked_raw, pipeline_pixel_format
from .spec import CSI, FILE, GSTREAMER, NETWORK, V4L2, SourceSpec

logger = logging.getLogger(__name__)

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
# The operator's own value, captured at import: edged never overrides it.
_OPERATOR_FFMPEG_OPTIONS = os.environ.get(FFMPEG_OPTIONS_ENV)
_FFMPEG_ENV_LOCK = threading.Lock()
_warned_operator_options = False

DEFAULT_FILE_FPS = 25.0  # pacing when a file does not report its frame rate
DEFAULT_IMAGE_FPS = 5.0  # pacing of an image directory without ``fps``
MAX_NATIVE_FPS = 240.0  # above this a file's reported rate is treated as bogus
APPSINK = "appsink drop=true max-buffers=1 sync=false"  # newest frame only
GSTREAMER_HINT = "JetPack's python3-opencv has it; pip wheels do not"


class OpenCvCapabilities(NamedTuple):
    """What this cv2 can do, from its version and ``cv2.getBuildInformation()``."""

    version: Tuple[int, int, int]
    ffmpeg: bool
    gstreamer: bool
    v4l2: bool
    open_params: bool  # VideoCapture(name, api, params) with OPEN/READ_TIMEOUT_MSEC (>= 4.5.4)
    gstreamer_timeouts: bool  # GStreamer backend honours the timeouts (>= 4.7, PR #22919)
    origin: str  # where cv2 was imported from, for error messages


class CapturePlan(NamedTuple):
    """How to open one source with cv2.VideoCapture; names are cv2 attribute names."""

    api: str  # "CAP_FFMPEG", "CAP_V4L2", "CAP_GSTREAMER" or "CAP_ANY"
    target: str  # path, URL or pipeline (may hold a password: never log it)
    params: Tuple[Tuple[str, int], ...]  # passed at open
    set_after_open: Tuple[Tuple[str, float], ...]  # cap.set() after a successful open
    ffmpeg_options: Optional[str]  # OPENCV_FFMPEG_CAPTURE_OPTIONS during open, None: untouched
    pixel_format: str = "bgr"  # of the frames read (edged/pixels.py); gst pipelines only


def _parse_version(text: str) -> Tuple[int, int, int]:
    numbers = [int(n) for n in re.findall(r"\d+", text)[:3]]
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def _build_flag(info: str, name: str) -> bool:
    """Whether build-info entry ``name:`` says YES (one-line, or OpenCV 3.x/4.1 nested form)."""
    lines = info.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped.lower().startswith(name.lower() + ":"):
            continue
        value = stripped.split(":", 1)[1].strip()
        if value:
            return value.upper().startswith("YES")
        # Nested form: "GStreamer:" followed by more-indented "base: YES (ver 1.14.5)" lines.
        indent = len(line) - len(line.lstrip())
        for sub in lines[i + 1 :]:
            if len(sub) - len(sub.lstrip()) <= indent:
                break
            if "YES" in sub.upper():
                return True
        return False
    return False


def opencv_capabilities(cv2: Any = None) -> OpenCvCapabilities:
    """Feature-detect the given (default: the installed) cv2 module."""
    if cv2 is None:
        cv2 = _import_cv2()
    info = cv2.getBuildInformation()
    version = _parse_version(getattr(cv2, "__version__", "0.0.0"))
    has_timeout_props = hasattr(cv2, "CAP_PROP_OPEN_TIMEOUT_MSEC")
    return OpenCvCapabilities(
        version=version,
        ffmpeg=_build_flag(info, "FFMPEG"),
        gstreamer=_build_flag(info, "GStreamer"),
        v4l2=_build_flag(info, "v4l/v4l2") or _build_flag(info, "V4L/V4L2"),
        open_params=has_timeout_props and version >= (4, 5, 4),
        gstreamer_timeouts=has_timeout_props and version >= (4, 7, 0),
        origin="cv2 {} from {}".format(
            getattr(cv2, "__version__", "?"), getattr(cv2, "__file__", "?")
        ),
    )


def _import_cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415 - optional dependency (setup.cfg [cpu] or JetPack apt)
    except ImportError as e:
        raise SourceError(
            "camera and video sources need OpenCV: install python3-opencv (JetPack) "
            "or the [cpu] extra (opencv-python-headless)"
        ) from e
    return cv2


def csi_pipeline(
    sensor_id: int,
    width: int,
    height: int,
    fps: float,
    flip_method: int = 0,
    caps_format: str = CSI_CPU_CAPS,
) -> str:
    """The ``nvarguscamerasrc`` pipeline for a Jetson CSI camera, ending in ``caps_format``.

    NV12 in NVMM memory from Argus, then ``nvvidconv`` (VIC, not the CPU) into system
    memory (the head of jetson-utils' ``cpp/camera/gstCamera.cpp`` pipeline). For the CPU
    path (BGR) it writes BGRx and a CPU ``videoconvert`` drops the 4th byte, because OpenCV
    before 4.11 refuses BGRx (edged/sources/gst_formats.py); that ``videoconvert`` costs a
    large share of a Nano core at 1080p30, which jetson-utils avoids by converting on the GPU.
    For the CUDA pre-processor nvvidconv writes the GPU's format itself (I420,
    :data:`~edged.sources.gst_formats.CSI_GPU_CAPS`) and no CPU element is left.
    """
    rate = gst_fraction(fps)
    head = (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM),width={width},height={height},"
        f"framerate={rate.numerator}/{rate.denominator},format=NV12 ! "
        f"nvvidconv flip-method={flip_method} ! "
    )
    if caps_format == "BGR":
        return head + f"video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! {APPSINK}"
    return head + f"video/x-raw,format={caps_format} ! {APPSINK}"


def gst_fraction(fps: float) -> Fraction:
    """``fps`` as a GStreamer framerate fraction: 30 -> 30/1, 29.97 -> 30000/1001 (NTSC)."""
    if float(fps).is_integer():
        return Fraction(int(fps), 1)
    ntsc = round(fps * 1.001)
    if abs(fps - ntsc / 1.001) < 0.005:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


def fourcc_code(fourcc: str) -> int:
    """``cv2.VideoWriter_fourcc`` without cv2: little-endian packed characters."""
    a, b, c, d = (ord(ch) for ch in fourcc)
    return a | (b << 8) | (c << 16) | (d << 24)


def capture_plan(spec: SourceSpec, caps: OpenCvCapabilities) -> CapturePlan:
    """Decide backend, target and options for ``spec``.

    Raises:
        SourceError: this OpenCV lacks the backend the source needs.
    """
    if spec.kind == NETWORK:
        return _network_plan(spec, caps)
    if spec.kind == V4L2:
        return _v4l2_plan(spec, caps)
    if spec.kind in (CSI, GSTREAMER):
        return _gstreamer_plan(spec, caps)
    if spec.kind == FILE:
        return CapturePlan("CAP_FFMPEG" if caps.ffmpeg else "CAP_ANY", spec.location, (), (), None)
    raise SourceError(
        f"source {spec.display} of kind {spec.kind} is not opened with cv2.VideoCapture"
    )


def _network_plan(spec: SourceSpec, caps: OpenCvCapabilities) -> CapturePlan:
    if not caps.ffmpeg:
        raise SourceError(
            f"source {spec.display} needs OpenCV built with FFmpeg ({caps.origin} reports "
            "FFMPEG: NO); with GStreamer use "
            "gst:rtspsrc location=... protocols=tcp latency=200 ! decodebin ! videoconvert ! "
            f"video/x-raw,format=BGR ! {APPSINK}"
        )
    params = ()  # type: Tuple[Tuple[str, int], ...]
    if caps.open_params:
        params = (
            ("CAP_PROP_OPEN_TIMEOUT_MSEC", int(spec.open_timeout_s * 1000)),
            ("CAP_PROP_READ_TIMEOUT_MSEC", int(spec.read_timeout_s * 1000)),
        )
    options = None
    if spec.location.lower().startswith(("rtsp://", "rtsps://")):
        # Transport set explicitly (opencv#27091); TCP survives lossy links.
        options = f"rtsp_transport;{spec.transport}"
        if not caps.open_params:
            # Old OpenCV: no timeout params, so ask FFmpeg's RTSP socket for one (microseconds).
            options += f"|stimeout;{int(spec.read_timeout_s * 1000000)}"
    return CapturePlan("CAP_FFMPEG", spec.location, params, (), options)


def _v4l2_plan(spec: SourceSpec, caps: OpenCvCapabilities) -> CapturePlan:
    if not caps.v4l2:
        raise SourceError(f"source {spec.display} needs OpenCV built with V4L2 ({caps.origin})")
    settings: List[Tuple[str, float]] = []
    if spec.fourcc:
        settings.append(("CAP_PROP_FOURCC", float(fourcc_code(spec.fourcc))))
    if spec.width and spec.height:
        settings.append(("CAP_PROP_FRAME_WIDTH", float(spec.width)))
        settings.append(("CAP_PROP_FRAME_HEIGHT", float(spec.height)))
    if spec.fps:
        settings.append(("CAP_PROP_FPS", float(spec.fps)))
    settings.append(("CAP_PROP_BUFFERSIZE", 1.0))  # newest frame, not a queue of old ones
    # realpath at every open: a by-id link follows the camera to its new /dev/videoN.
    return CapturePlan("CAP_V4L2", os.path.realpath(spec.location), (), tuple(settings), None)


def _gstreamer_plan(spec: SourceSpec, caps: OpenCvCapabilities) -> CapturePlan:
    if not caps.gstreamer:
        raise SourceError(
            f"source {spec.display} needs OpenCV built with GStreamer ({GSTREAMER_HINT}); "
            f"{caps.origin} reports GStreamer: NO"
        )
    if spec.kind == CSI:
        assert spec.sensor_id is not None and spec.width and spec.height and spec.fps
        caps_format = CSI_GPU_CAPS if spec.gpu_frames else CSI_CPU_CAPS
        pipeline = csi_pipeline(spec.sensor_id, spec.width, spec.height, spec.fps,
                                spec.flip_method, caps_format)  # fmt: skip
    else:
        pipeline = spec.location
    # a pipeline of one's own is taken as it is: its frames in whatever format it ends in
    pixel_format = pipeline_pixel_format(pipeline, caps.version, caps.origin, spec.display)
    params = ()  # type: Tuple[Tuple[str, int], ...]
    if caps.gstreamer_timeouts:
        params = (
            ("CAP_PROP_OPEN_TIMEOUT_MSEC", int(spec.open_timeout_s * 1000)),
            ("CAP_PROP_READ_TIMEOUT_MSEC", int(spec.read_timeout_s * 1000)),
        )
    return CapturePlan("CAP_GSTREAMER", pipeline, params, (), None, pixel_format)


def as_bgr(image: np.ndarray, cv2: Any, display: str) -> np.ndarray:
    """``image`` as 3-channel BGR uint8 (grey and BGRA sources are converted)."""
    if image.dtype != np.uint8:
        raise SourceError(f"source {display} delivered {image.dtype} pixels; expected 8-bit")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise SourceError(f"source {display} delivered an image of shape {image.shape}; expected HxWx3")


def as_declared(image: np.ndarray, pixel_format: str, cv2: Any, display: str) -> np.ndarray:
    """``image`` as the plan's format: OpenCV's default (BGR) through :func:`as_bgr`,
    a pipeline's own raw format checked and handed on unconverted."""
    if pixel_format == "bgr":
        return as_bgr(image, cv2, display)
    return checked_raw(image, pixel_format, display)


def _open_capture(cv2: Any, plan: CapturePlan) -> Any:
    api = getattr(cv2, plan.api)
    params: List[int] = []
    for name, value in plan.params:
        params.extend((int(getattr(cv2, name)), int(value)))
    if params:
        return cv2.VideoCapture(plan.target, api, params)
    return cv2.VideoCapture(plan.target, api)


def _open_with_ffmpeg_options(cv2: Any, plan: CapturePlan) -> Any:
    global _warned_operator_options
    if plan.ffmpeg_options is None:
        return _open_capture(cv2, plan)
    if _OPERATOR_FFMPEG_OPTIONS is not None:
        if not _warned_operator_options:
            _warned_operator_options = True
            logger.info(
                "%s is set in the environment; using it instead of edged's per-stream RTSP options",
                FFMPEG_OPTIONS_ENV,
            )
        return _open_capture(cv2, plan)
    with _FFMPEG_ENV_LOCK:
        previous = os.environ.get(FFMPEG_OPTIONS_ENV)
        os.environ[FFMPEG_OPTIONS_ENV] = plan.ffmpeg_options
        try:
            return _open_capture(cv2, plan)
        finally:
            if previous is None:
                os.environ.pop(FFMPEG_OPTIONS_ENV, None)
            else:
                os.environ[FFMPEG_OPTIONS_ENV] = previous


class OpenCvSource(FrameSource):
    """A cv2.VideoCapture source (file, V4L2, network, CSI, GStreamer) per :func:`capture_plan`."""

    def __init__(
        self, spec: SourceSpec, cv2: Any = None, caps: Optional[OpenCvCapabilities] = None
    ) -> None:
        self._cv2 = cv2 if cv2 is not None else _import_cv2()
        self._caps = caps if caps is not None else opencv_capabilities(self._cv2)
        self.spec = spec
        self.display = spec.display
        self._plan = capture_plan(spec, self._caps)  # fail fast: missing backend
        self._cap = None  # type: Any
        self._ended = False
        self._native_fps = None  # type: Optional[float]

    @property
    def plan(self) -> CapturePlan:
        return self._plan

    @property
    def pixel_format(self) -> str:
        return self._plan.pixel_format

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def pace_fps(self) -> Optional[float]:
        if self.spec.kind != FILE or not self.spec.realtime:
            return None
        return self.spec.fps or self._native_fps or DEFAULT_FILE_FPS

    def open(self) -> None:
        self.close()
        self._ended = False
        plan = self._plan
        if self.spec.kind == V4L2:
            plan = _v4l2_plan(self.spec, self._caps)  # re-resolve by-id links
        cap = self._try_open(plan)
        for name, value in plan.set_after_open:
            # Drivers may refuse a mode; the frames' real size is reported with each frame.
            if not cap.set(getattr(self._cv2, name), value):
                logger.debug("source %s: driver ignored %s=%s", self.display, name, value)
        self._cap = cap
        if self.spec.kind == FILE:
            fps = cap.get(self._cv2.CAP_PROP_FPS)
            self._native_fps = fps if 0 < fps <= MAX_NATIVE_FPS else None

    def _try_open(self, plan: CapturePlan) -> Any:
        try:
            cap = _open_with_ffmpeg_options(self._cv2, plan)
        except self._cv2.error as e:
            raise SourceError(f"cannot open {self.display}: {redact(str(e)).strip()}") from e
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open {self.display} with OpenCV's {plan.api[4:]} backend"
                + self._open_hint()
            )
        return cap

    def _open_hint(self) -> str:
        if self.spec.kind == NETWORK:
            return (
                " (unreachable, refused, wrong path or credentials, or no answer in "
                f"{self.spec.open_timeout_s:g} s)"
            )
        if self.spec.kind == FILE:
            return " (missing, unreadable or not a video)"
        if self.spec.kind == V4L2:
            return " (device missing, busy, or no permission: is the user in group 'video'?)"
        return " (pipeline failed to start; run it with gst-launch-1.0 to see why)"

    def read(self) -> Optional[np.ndarray]:
        if self._cap is None:
            raise SourceError(f"source {self.display} read before open")
        image = self._grab()
        if image is not None:
            return as_declared(image, self._plan.pixel_format, self._cv2, self.display)
        if self.spec.kind != FILE:
            raise SourceError(
                f"no frame from {self.display}: stream ended, device lost or read timed out"
            )
        if not self.spec.loop:
            self._ended = True
            return None
        self.open()  # loop: reopening works for every container, seeking does not
        image = self._grab()
        if image is None:
            raise SourceError(f"file {self.display} yields no frames")
        return as_declared(image, self._plan.pixel_format, self._cv2, self.display)

    def _grab(self) -> Optional[np.ndarray]:
        try:
            ok, image = self._cap.read()
        except self._cv2.error as e:
            raise SourceError(f"reading {self.display} failed: {redact(str(e)).strip()}") from e
        return image if ok and image is not None else None

    def close(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


# -- factories of the kinds table (kinds.py) ----------------------------------------------


def open_file(
    spec: SourceSpec, cv2: Any = None, caps: Optional[OpenCvCapabilities] = None
) -> FrameSource:
    """A video file, refused now when it does not exist (retrying cannot heal that)."""
    if not os.path.isfile(spec.location):
        raise SourceError(f"video file {spec.display} does not exist")
    return OpenCvSource(spec, cv2, caps)

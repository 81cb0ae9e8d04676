"""Commands over MQTT: ``<prefix>/<device>/cmd/<name>`` -> ``.../cmd/<name>/reply`` (docs/mqtt.md).

A command is a JSON object with a ``request_id`` (a string of at most 128
characters, or an integer) and the command's arguments; the reply is
``{"request_id", "ok": true, "result"}`` or ``{"request_id", "ok": false,
"error"}`` (schema ``command-reply.v1.json``). Commands:

=============  ======================================================  =========================
name           arguments                                                result
=============  ======================================================  =========================
ping           none                                                     version, boot_id, uptime
get_config     none                                                     the running config,
                                                                        secrets redacted
reload         none                                                     applied (or an error with
                                                                        the reason)
snapshot       ``stream`` (optional with one stream), ``max_width``     one annotated JPEG,
               (default 1280), ``quality`` (1..100, default 80)         base64
=============  ======================================================  =========================

Hostile input never reaches a handler: a RETAINED command
is ignored without a reply (a stale retained ``restart`` caused a restart loop in
Frigate, frigate#4414); a payload over ``max_bytes``, invalid UTF-8 or JSON, a
non-object, a missing ``request_id`` or an unknown name gets an error reply.

The retain flag alone is not enough: a 3.1.1 broker clears it on a message it
forwards to a client that is already subscribed (MQTT 3.1.1 section 3.3.1.3), so
a retained command published while edged is connected looks fresh. Hence the
issue time (schema ``command.v1.json``): a command with ``issued_at_ms`` further
than ``max_age_s`` from edged's clock gets the error reply ``stale`` and does not
run; without ``issued_at_ms`` it runs only where the retain flag can be trusted
(MQTT 5 with Retain As Published, :func:`.compat.subscribe`), else it is refused
(``require_issue_time``, edged's setting on MQTT 3.1.1). A
repeated ``request_id`` (QoS 1 redelivery) gets the first reply again instead
of running the command twice. Outcomes are counted per (command, result) with
unknown names counted as ``unknown`` (no label explosion in the metrics).
"""

import base64
import collections
import json
import logging
import time
from typing import Any, Callable, Dict, Optional, Tuple

from .. import __version__
from ..errors import EdgedError
from .control import DaemonControl
from .payloads import reply_payload, timestamp
from .topics import COMMAND_NAME

logger = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024
MAX_REQUEST_ID_CHARS = 128
#: Replies remembered for repeated request ids.
REPLY_CACHE_SIZE = 128
#: How long a ``reload`` command waits for the daemon (model loads can take minutes).
RELOAD_TIMEOUT_S = 300.0
SNAPSHOT_MAX_WIDTH = 1280
SNAPSHOT_QUALITY = 80

OK = "ok"
ERROR = "error"
IGNORED = "ignored"
#: Refused for its issue time (too old, or too far ahead of edged's clock).
STALE = "stale"
#: Not queued: the command queue was full (:mod:`.inbox`).
BUSY = "busy"
UNKNOWN = "unknown"
#: How long ago (at most) a command may have been issued, by default.
DEFAULT_MAX_AGE_S = 60.0
ISSUED_AT = "issued_at_ms"


class CommandError(EdgedError):
    """A command could not be carried out; the message goes into the error reply."""


Outcome = Tuple[str, str, Optional[bytes]]  # (command label, ok|error|ignored, reply or None)


class CommandProcessor:
    """Turns one received command message into a counted outcome and a reply payload."""

    def __init__(
        self,
        control: DaemonControl,
        boot_id: str,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
        reload_timeout_s: float = RELOAD_TIMEOUT_S,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        require_issue_time: bool = False,
        wall_clock: Callable[[], float] = time.time,
        verifier: Optional[Any] = None,
    ) -> None:
        self._control = control
        # edged/mqtt/signedcmd.py: with mqtt.commands.require_signature, only signed commands
        self._verifier = verifier
        self.max_age_s = float(max_age_s)
        self.require_issue_time = require_issue_time
        self._wall_clock = wall_clock
        self._boot_id = boot_id
        self.max_bytes = int(max_bytes)
        self._clock = clock
        self._started = clock()
        self._reload_timeout_s = reload_timeout_s
        self._replies = collections.OrderedDict()  # type: collections.OrderedDict
        self.handlers = {
            "ping": self.ping,
            "get_config": self.get_config,
            "reload": self.reload,
            "snapshot": self.snapshot,
        }  # type: Dict[str, Callable[[Dict[str, Any]], Any]]

    def process(self, name: Optional[str], payload: bytes, retain: bool) -> Outcome:
        """Handle one command message; never raises for bad input."""
        label = name if name in self.handlers else UNKNOWN
        if retain:
            logger.warning(
                "ignored a retained command on cmd/%s: commands are never taken from "
                "retained messages (frigate#4414)",
                label,
            )
            return label, IGNORED, None
        request, problem = self._parse(payload, name or "")
        if problem is not None:
            logger.warning("command cmd/%s refused: %s", label, problem)
            return label, ERROR, reply_payload(None, False, error=problem)
        request_id = request["request_id"]
        result, problem = self._check_issue_time(request)
        if problem is not None:
            logger.warning("command cmd/%s (request %s) refused: %s", label, request_id, problem)
            return label, result, reply_payload(request_id, False, error=problem)
        if label == UNKNOWN:
            shown = name if name and COMMAND_NAME.match(name) else "(invalid name)"
            known = ", ".join(sorted(self.handlers))
            error = f"unknown command {shown}; commands: {known}"
            return label, ERROR, reply_payload(request_id, False, error=error)
        key = (label, json.dumps(request_id))
        if key in self._replies:
            result, reply = self._replies[key]
            logger.info("command %s request %s repeated: first reply sent again", label, request_id)
            return label, result, reply
        result, reply = self._run(label, request_id, request)
        self._replies[key] = (result, reply)
        while len(self._replies) > REPLY_CACHE_SIZE:
            self._replies.popitem(last=False)
        return label, result, reply

    def request_id(self, payload: bytes) -> Any:
        """The ``request_id`` of a command payload, or None when it cannot be read."""
        request, problem = self._parse(payload, "", unwrap=False)
        if problem is not None:
            return None
        if isinstance(request.get("signed"), dict):  # a signed envelope (not verified here)
            request = request["signed"]
        value = request.get("request_id")
        return value if _valid_request_id(value) else None

    def _check_issue_time(self, request: Dict[str, Any]) -> Tuple[str, Optional[str]]:
        """``(OK, None)``, or ``(STALE or ERROR, why the command must not run)``."""
        issued = request.get(ISSUED_AT)
        if issued is None:
            if self.require_issue_time:
                return ERROR, (
                    f"{ISSUED_AT} required: on MQTT 3.1.1 a retained command cannot be told "
                    "from a fresh one (docs/mqtt.md)"
                )
            return OK, None
        if isinstance(issued, bool) or not isinstance(issued, int):
            return ERROR, f"{ISSUED_AT} must be an integer (Unix time in milliseconds)"
        age_s = (self._wall_clock() * 1000.0 - issued) / 1000.0
        if age_s > self.max_age_s:
            return STALE, f"stale: issued {age_s:.0f} s ago (max age {self.max_age_s:g} s)"
        if -age_s > self.max_age_s:
            return STALE, (
                f"stale: issued {-age_s:.0f} s ahead of edged's clock (max {self.max_age_s:g} s; "
                "are the clocks synchronised?)"
            )
        return OK, None

    def _parse(
        self, payload: bytes, name: str, unwrap: bool = True
    ) -> Tuple[Dict[str, Any], Optional[str]]:
        """``(request, None)`` or ``({}, why it is refused)``; the size is checked first, then
        the signature when signed commands are required."""
        if len(payload) > self.max_bytes:
            return {}, f"command too large: {len(payload)} bytes (limit {self.max_bytes})"
        try:
            request = json.loads(payload.decode("utf-8"))
        except UnicodeDecodeError:
            return {}, "command is not UTF-8 text"
        except ValueError as e:  # json.JSONDecodeError is a ValueError (also on 3.6)
            return {}, f"invalid JSON: {e}"
        except RecursionError:  # "[[[[..." : json recurses once per level (M7: deep JSON)
            return {}, "invalid JSON: nested too deeply"
        if not isinstance(request, dict):
            return {}, "a command must be a JSON object"
        if self._verifier is not None and unwrap:
            request, problem = self._verifier.unwrap(name, request)
            if problem is not None:
                return {}, problem
        if not unwrap:
            return request, None
        if not _valid_request_id(request.get("request_id")):
            return {}, (
                f"request_id missing or invalid: a string of at most {MAX_REQUEST_ID_CHARS} "
                "characters or an integer"
            )
        return request, None

    def _run(self, label: str, request_id: Any, request: Dict[str, Any]) -> Tuple[str, bytes]:
        try:
            result = self.handlers[label](request)
        except CommandError as e:
            return ERROR, reply_payload(request_id, False, error=str(e))
        except EdgedError as e:
            return ERROR, reply_payload(request_id, False, error=str(e))
        except Exception as e:  # noqa: BLE001 - top of the command loop: reply, log, go on
            logger.exception("command %s failed", label)
            return ERROR, reply_payload(
                request_id, False, error=f"internal error: {type(e).__name__}"
            )
        logger.info("command %s (request %s): ok", label, request_id)
        return OK, reply_payload(request_id, True, result=result)

    # -- the commands ---------------------------------------------------------------------

    def ping(self, request: Dict[str, Any]) -> Dict[str, Any]:
        return {
            "pong": True,
            "version": __version__,
            "boot_id": self._boot_id,
            "uptime_s": round(self._clock() - self._started, 3),
            "time": timestamp(time.time())[0],
        }

    def get_config(self, request: Dict[str, Any]) -> Dict[str, Any]:
        return self._control.effective_config()

    def reload(self, request: Dict[str, Any]) -> Dict[str, Any]:
        applied, message = self._control.reload(self._reload_timeout_s)
        if not applied:
            raise CommandError(message)
        return {"applied": True, "message": message}

    def snapshot(self, request: Dict[str, Any]) -> Dict[str, Any]:
        streams = self._control.stream_ids()
        stream_id = request.get("stream")
        if stream_id is None:
            if len(streams) != 1:
                raise CommandError(
                    'snapshot needs "stream": one of {}'.format(
                        ", ".join(streams) or "(no streams running)"
                    )
                )
            stream_id = streams[0]
        if not isinstance(stream_id, str) or stream_id not in streams:
            raise CommandError(
                "snapshot: no running stream {} (streams: {})".format(
                    json.dumps(stream_id), ", ".join(streams) or "none"
                )
            )
        max_width = _int_arg(request, "max_width", SNAPSHOT_MAX_WIDTH, 16, 8192)
        quality = _int_arg(request, "quality", SNAPSHOT_QUALITY, 1, 100)
        latest = self._control.latest(stream_id)
        if latest is None:
            raise CommandError(f"snapshot: stream {stream_id} has no inferred frame yet")
        image, result = latest
        jpeg, (width, height) = annotated_jpeg(image, result, max_width, quality)
        captured_at, captured_ms = timestamp(result.captured_wall)
        return {
            "stream_id": stream_id,
            "frame_seq": int(result.seq),
            "captured_at": captured_at,
            "captured_at_ms": captured_ms,
            "width": width,
            "height": height,
            "content_type": "image/jpeg",
            "encoding": "base64",
            "data": base64.b64encode(jpeg).decode("ascii"),
            "items": [item.to_dict() for item in result.items],
        }


def annotated_jpeg(
    image: Any, result: Any, max_width: int, quality: int
) -> Tuple[bytes, Tuple[int, int]]:
    """``image`` with ``result``'s boxes or classes drawn, scaled to ``max_width``, as JPEG."""
    import cv2  # lazy: on a Jetson OpenCV comes from JetPack, not from edged's dependencies

    from ..annotate import draw_classifications, draw_detections
    from ..tracking.draw import draw_overlay

    if result.task == "detection":
        drawn = draw_detections(image, result.items)
        drawn = draw_overlay(drawn, getattr(result.tracking, "overlay", None))  # zones, trails
    else:
        drawn = draw_classifications(image, result.items)
    height, width = drawn.shape[:2]
    if width > max_width:
        scale = float(max_width) / width
        drawn = cv2.resize(
            drawn, (max_width, max(1, int(round(height * scale)))), interpolation=cv2.INTER_AREA
        )
    ok, buffer = cv2.imencode(".jpg", drawn, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise CommandError("snapshot: JPEG encoding failed")
    return buffer.tobytes(), (int(drawn.shape[1]), int(drawn.shape[0]))


def _valid_request_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID_CHARS


def _int_arg(request: Dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = request.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise CommandError(f"{name} must be an integer {low}..{high}, got {json.dumps(value)}")
    return value

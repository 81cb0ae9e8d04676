"""``edged watch``: a live, human-friendly view of what edged devices publish over MQTT.

Subscribes to ``<prefix>/<device>/status`` and ``<prefix>/<device>/v1/streams/+/+``
(``--device +``, the default, watches every device) and prints one line per
message: results with their labels, confidences and inference time; status
(online, offline, stopped); per-stream capture states. It checks the result
contract as a consumer should: a repeated ``seq`` is marked ``dup`` (QoS 1 is
at least once) and a gap in ``seq`` says how many messages are missing.

A broker that cannot be reached within ``--connect-timeout`` seconds, or that refuses the
connection (e.g. bad credentials), is one line on stderr and exit code 2, like every other
problem the user can fix (:mod:`edged.cli`).
"""

import argparse
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

from ..mqtt.topics import parse_stream_topic

EXIT_OK = 0
EXIT_TIMEOUT = 1
EXIT_USAGE = 2  # the broker cannot be reached or refuses us (edged.cli's convention)
#: First and longest pause between connection attempts within --connect-timeout.
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 5.0


def add_parser(commands: "argparse._SubParsersAction") -> None:
    p = commands.add_parser(
        "watch",
        help="print what edged publishes over MQTT",
        description="Subscribe to edged's MQTT topics and print results, status and stream "
        "states as they arrive. Ctrl-C stops.",
    )
    p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=None, help="broker port (default 1883, 8883 with TLS)"
    )
    p.add_argument("--device", default="+", help="device id to watch (default +: every device)")
    p.add_argument("--prefix", default="edged", help="topic prefix (default edged)")
    p.add_argument("--username", default=None, help="broker user name")
    p.add_argument(
        "--password-env",
        default=None,
        metavar="VAR",
        help="environment variable holding the broker password (never a command-line argument)",
    )
    p.add_argument("--tls-ca", default=None, metavar="FILE", help="CA file: connect with TLS")
    p.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate (TLS)")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="client key (TLS)")
    p.add_argument("--raw", action="store_true", help="print each payload as received (JSON)")
    p.add_argument(
        "--count", type=int, default=0, metavar="N", help="exit after N result messages (0: never)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        metavar="S",
        help="with --count: give up after S seconds with exit code 1 (0: wait forever)",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="keep trying to reach the broker for S seconds, then exit 2 saying why "
        "(default 10; 0: one attempt)",
    )
    p.set_defaults(run=run)


def _clock(message: Dict[str, Any]) -> str:
    stamp = message.get("captured_at") or message.get("time") or ""
    return stamp[11:23] if len(stamp) >= 23 else time.strftime("%H:%M:%S")


def describe_result(message: Dict[str, Any]) -> str:
    """``cam #12 3 objects: person 91% (102,40)-(180,300), ... | inference 12.3 ms``."""
    items = message.get("detections")
    if items is not None:
        parts = []
        for d in items[:6]:
            box = d.get("bbox") or {}
            parts.append(
                "{} {:.0f}% ({:.0f},{:.0f})-({:.0f},{:.0f})".format(
                    d.get("label"),
                    100 * d.get("confidence", 0),
                    box.get("x1", 0),
                    box.get("y1", 0),
                    box.get("x2", 0),
                    box.get("y2", 0),
                )
            )
        more = len(items) - 6
        what = "{} object{}".format(
            message.get("count", len(items)), "" if len(items) == 1 else "s"
        )
        body = ", ".join(parts) + (f", +{more} more" if more > 0 else "")
    else:
        items = message.get("classifications") or []
        what = "class"
        body = (
            ", ".join(
                "{} {:.1f}%".format(c.get("label"), 100 * c.get("confidence", 0)) for c in items[:3]
            )
            or "(none above threshold)"
        )
    latency = (message.get("latency_ms") or {}).get("inference")
    tail = f" | inference {latency:.1f} ms" if latency is not None else ""
    flags = " [truncated]" if message.get("truncated") else ""
    return "{} #{} {}: {}{}{}".format(
        message.get("stream_id"), message.get("seq"), what, body or "nothing", flags, tail
    )


class Watcher:
    """Turns received messages into lines; tracks seq per (device, stream)."""

    def __init__(self, prefix: str, raw: bool = False) -> None:
        self.prefix = prefix
        self.raw = raw
        self.results = 0
        self._last_seq: Dict[Tuple[str, str], int] = {}

    def line(self, topic: str, payload: bytes) -> Optional[str]:
        if self.raw:
            return "{} {}".format(topic, payload.decode("utf-8", "replace"))
        if not payload:
            return f"{topic} (cleared)"
        try:
            message = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):  # not JSON, or nested too deeply to parse
            return f"{topic} (not JSON, {len(payload)} bytes)"
        if not isinstance(message, dict):
            return f"{topic} {message}"
        if topic.endswith("/update/status"):
            return describe_update(message)
        if topic.endswith("/status"):
            return self._status(topic, message)
        parsed = parse_stream_topic(topic)
        if parsed is None:
            return None
        _, device, stream, kind = parsed
        if kind == "state":
            return "{} {} {} state {} ({:.1f} fps, {} reconnects){}".format(
                _clock(message),
                device,
                stream,
                message.get("state"),
                message.get("fps", 0.0),
                message.get("reconnects", 0),
                ": " + message["last_error"] if message.get("last_error") else "",
            )
        self.results += 1
        return "{} {} {}{}".format(
            _clock(message),
            device,
            describe_result(message),
            self._seq_note(device, stream, message.get("seq")),
        )

    def _status(self, topic: str, message: Dict[str, Any]) -> str:
        device = message.get("device_id", topic.split("/")[-2])
        text = "{} {} status {}".format(_clock(message), device, message.get("state"))
        if message.get("state") == "online":
            models = ", ".join(m.get("name", "?") for m in message.get("models", [])) or "none"
            streams = ", ".join(message.get("streams", [])) or "none"
            text += " (edged {}, models: {}, streams: {})".format(
                message.get("version"), models, streams
            )
        return text

    def _seq_note(self, device: str, stream: str, seq: Any) -> str:
        if not isinstance(seq, int):
            return ""
        key = (device, stream)
        last = self._last_seq.get(key)
        if last is not None and seq <= last:
            return "  (dup)" if seq == last or seq > last - 1000 else "  (seq restarted)"
        self._last_seq[key] = seq
        if last is not None and seq > last + 1:
            return f"  ({seq - last - 1} missing)"
        return ""


def describe_update(message: Dict[str, Any]) -> str:
    """``jetson-1 update det v2 RECEIVING 45/121 chunks`` (docs/model-updates.md)."""
    text = "{} {} update {} v{} {}".format(
        time.strftime("%H:%M:%S"), message.get("device"), message.get("model"),
        message.get("version"), message.get("state"),
    )  # fmt: skip
    if message.get("state") == "RECEIVING" and message.get("chunks"):
        text += " {}/{} chunks".format(message.get("received", 0), message["chunks"])
    if message.get("reason"):
        text += ": {}".format(message["reason"])
    return text


def _subscriptions(prefix: str, device: str) -> List[str]:
    base = f"{prefix}/{device}"
    return [base + "/status", base + "/update/status", base + "/v1/streams/+/+"]


def describe_connect_error(error: BaseException) -> str:
    """Why a connection attempt failed, in words (no traceback)."""
    if isinstance(error, socket.gaierror):
        return f"cannot resolve the host name ({error.strerror or error})"
    if isinstance(error, socket.timeout):
        return "no answer (timed out)"
    return getattr(error, "strerror", None) or str(error) or type(error).__name__


def connect(client: Any, host: str, port: int, timeout_s: float) -> Optional[str]:
    """Connect ``client``, retrying with backoff for ``timeout_s``; None, or why it failed."""
    deadline = time.monotonic() + timeout_s
    delay = RETRY_FIRST_S
    while True:
        try:
            client.connect(host, port, keepalive=30)
            return None
        except (OSError, ValueError) as e:  # socket, DNS and TLS errors; ValueError: bad host
            reason = describe_connect_error(e)
        left = deadline - time.monotonic()
        if left <= 0:
            return reason
        time.sleep(min(delay, left))
        delay = min(delay * 2, RETRY_MAX_S)


def run(args: argparse.Namespace) -> int:

    from ..errors import ConfigError
    from ..mqtt import compat

    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise ConfigError(
                f"--password-env: environment variable {args.password_env} is not set"
            )
    watcher = Watcher(args.prefix, args.raw)
    client = compat.new_client(f"edged-watch-{os.getpid()}", 5.0)
    port = args.port or (8883 if args.tls_ca else 1883)
    topics = _subscriptions(args.prefix, args.device)

    done = threading.Event()  # --count results printed, or the broker refused us
    refused = []  # type: List[str]

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        code = compat.code_value(rc)
        if code == 0:
            c.subscribe([(t, 1) for t in topics])
            print(
                "# connected to {}:{}, watching {}".format(args.host, port, ", ".join(topics)),
                flush=True,
            )
        else:
            refused.append(compat.describe_connack(code))
            done.set()

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        if done.is_set():
            return
        text = watcher.line(message.topic, bytes(message.payload))
        if text:
            print(text, flush=True)
        if 0 < args.count <= watcher.results:
            done.set()

    client.on_connect = on_connect
    client.on_message = on_message
    if args.username:
        client.username_pw_set(args.username, password)
    if args.tls_ca:
        client.tls_set(ca_certs=args.tls_ca, certfile=args.tls_cert, keyfile=args.tls_key)
    client.reconnect_delay_set(1, 10)
    where = f"the MQTT broker at {args.host}:{port}"
    why = connect(client, args.host, port, args.connect_timeout)
    if why is not None:
        print(f"edged: error: cannot connect to {where}: {why}", file=sys.stderr)
        return EXIT_USAGE
    client.loop_start()
    deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
    try:
        while not done.wait(0.1):
            if deadline is not None and time.monotonic() > deadline:
                got = f"{watcher.results} of {args.count} results"
                print(f"# timed out: {got} after {args.timeout:.0f} s", file=sys.stderr)
                return EXIT_TIMEOUT
    finally:
        client.loop_stop()
        client.disconnect()
    if refused:
        print(f"edged: error: {where} refused the connection: {refused[0]}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK

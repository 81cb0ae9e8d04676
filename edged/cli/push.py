"""``edged push MANIFEST``: publish a signed model manifest and serve the chunks devices ask for.

The manifest (``edged sign``) is published retained to the desired-state topic of every device
and group it targets (``<prefix>/<device>/update/desired``, ``<prefix>/groups/<group>/update/
desired``): devices offline now converge when they connect. Devices pull the files in chunks
(``<prefix>/<device>/update/request`` -> ``.../chunk``); this command serves them from the local
files (found next to the manifest, or in ``--files DIR``), each checked against the signed size
and sha256 first. It prints each device's progress, and exits when every expected device
(the manifest's devices plus ``--expect``) reports a final state (COMMITTED, ROLLED_BACK,
REFUSED), or when ``--timeout`` passes, with a summary table. Exit 0: every expected device
committed; 1: one did not (or the timeout passed); 2: bad input or no broker.
"""

import argparse
import hashlib
import os
import queue
import sys
import threading
import time
from typing import Any, Dict, List, Optional

from ..errors import ConfigError, UpdateError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
FINAL_STATES = ("COMMITTED", "ROLLED_BACK", "REFUSED")
#: requests waiting to be served at most (a device asks for a window of chunks at a time)
MAX_PENDING = 4096
BAR = 20


def add_parser(commands: "argparse._SubParsersAction") -> None:
    p = commands.add_parser("push", help="push a signed model manifest to devices over MQTT")
    p.add_argument("manifest", help="the signed manifest (edged sign -o FILE)")
    p.add_argument("--files", metavar="DIR", help="where the files are (default: next to it)")
    p.add_argument("--expect", action="append", default=[], metavar="DEVICE",
                   help="also wait for this device (a group member; repeatable)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=600.0, metavar="S",
                   help="give up waiting after S seconds (default 600)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="broker port (1883, 8883 with TLS)")
    p.add_argument("--prefix", default="edged", help="topic prefix (default edged)")
    p.add_argument("--username", default=None, help="broker user name")
    p.add_argument("--password-env", default=None, metavar="VAR",
                   help="environment variable holding the broker password")  # fmt: skip
    p.add_argument("--tls-ca", default=None, metavar="FILE", help="CA file: connect with TLS")
    p.add_argument("--tls-cert", default=None, metavar="FILE", help="client certificate (TLS)")
    p.add_argument("--tls-key", default=None, metavar="FILE", help="client key (TLS)")
    p.add_argument("--connect-timeout", type=float, default=10.0, metavar="S",
                   help="keep trying to reach the broker for S seconds (default 10)")  # fmt: skip
    p.set_defaults(run=run)


def load(path: str, files_dir: Optional[str]) -> Any:
    """(envelope bytes, manifest, {file name: path}) with every file checked."""
    from ..signing import canonical
    from ..update.manifest import MAX_MANIFEST_BYTES, parse_checked

    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        canonical.decode(data, MAX_MANIFEST_BYTES, path)
        manifest = parse_checked(data)
    except UpdateError as e:
        raise ConfigError(f"{path}: not a signed manifest ({e})") from None
    base = files_dir or os.path.dirname(os.path.abspath(path))
    paths: Dict[str, str] = {}
    for entry in manifest.files:
        file_path = os.path.join(base, entry.name)
        try:
            size, digest = os.path.getsize(file_path), _sha256(file_path)
        except OSError as e:
            raise ConfigError(f"{file_path}: cannot read ({e.strerror or e})") from e
        if size != entry.size or digest != entry.sha256:
            raise ConfigError(f"{file_path}: does not match the signed manifest (size/sha256)")
        paths[entry.name] = file_path
    return data, manifest, paths


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Progress:
    """Per-device state of one push, printed as it changes."""

    def __init__(self, update: str, expected: List[str], out: Optional[Any] = None) -> None:
        self.update = update
        self.devices: Dict[str, Dict] = {d: {"state": "WAITING"} for d in expected}
        self._printed: Dict[str, str] = {}
        self._out = out  # None: sys.stdout as it is when printing (not at import)

    def status(self, device: str, status: Dict[str, Any]) -> None:
        if status.get("update") != self.update:
            return  # another update's status (an earlier push)
        self.devices[device] = status
        state = str(status.get("state"))
        line = f"{device:<20} {state:<12}"
        if state == "RECEIVING" and status.get("chunks"):
            done, total = int(status.get("received", 0)), int(status["chunks"])
            filled = BAR * done // max(total, 1)
            line += f" [{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} chunks"
        elif status.get("reason") and state in ("FAILED", "ROLLED_BACK", "REFUSED"):
            line += f" {status['reason']}"
        if self._printed.get(device) != line:
            self._printed[device] = line
            print(line, file=self._out or sys.stdout, flush=True)

    def finished(self, expected: List[str]) -> bool:
        return all(self.devices.get(d, {}).get("state") in FINAL_STATES for d in expected)

    def summary(self) -> str:
        rows = [("DEVICE", "STATE", "VERSION", "REASON")]
        for device in sorted(self.devices):
            s = self.devices[device]
            reason = str(s.get("reason") or "")
            rows.append((device, str(s.get("state")), str(s.get("version", "")), reason[:80]))
        width = [max(len(r[i]) for r in rows) for i in range(3)]
        return "\n".join(
            f"{r[0]:<{width[0]}}  {r[1]:<{width[1]}}  {r[2]:<{width[2]}}  {r[3]}".rstrip()
            for r in rows
        )


class ChunkServer:
    """Answers chunk requests for one update from the local files."""

    def __init__(self, prefix: str, manifest: Any, paths: Dict[str, str]) -> None:
        self.prefix = prefix
        self.manifest = manifest
        self.paths = paths
        self.sent = 0

    def frames(self, device: str, payload: bytes) -> List[Any]:
        """(topic, frame) for each chunk a request asks for; [] for a foreign/bad one."""
        from ..update import protocol

        try:
            request = protocol.ChunkRequest.decode(payload)
        except UpdateError:
            return []
        entry = next((f for f in self.manifest.files if f.name == request.file), None)
        if request.update != self.manifest.sha256 or entry is None:
            return []
        size, count = self.manifest.chunk_bytes, self.manifest.chunk_count(entry)
        topic = f"{self.prefix}/{device}/update/chunk"
        out = []
        with open(self.paths[entry.name], "rb") as f:
            for start, end in request.ranges:
                for index in range(start, min(end, count)):
                    f.seek(index * size)
                    chunk = protocol.Chunk(request.update, entry.name, index, f.read(size))
                    out.append((topic, protocol.encode_chunk(chunk)))
        self.sent += len(out)
        return out


def run(args: argparse.Namespace) -> int:
    import json

    from ..mqtt import compat
    from ..update import protocol
    from .watch import connect

    envelope, manifest, paths = load(args.manifest, args.files)
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if password is None:
            raise ConfigError(f"--password-env: environment variable {args.password_env} "
                              "is not set")  # fmt: skip
    expected = sorted(set(manifest.devices) | set(args.expect))
    desired = [f"{args.prefix}/{d}/update/desired" for d in manifest.devices] + [
        f"{args.prefix}/groups/{g}/update/desired" for g in manifest.groups
    ]
    progress = Progress(manifest.sha256, expected)
    server = ChunkServer(args.prefix, manifest, paths)
    inbox: queue.Queue = queue.Queue(MAX_PENDING)
    refused: List[str] = []
    subscribed = threading.Event()

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        code = compat.code_value(rc)
        if code != 0:
            refused.append(compat.describe_connack(code))
            return
        c.subscribe([(f"{args.prefix}/+/update/request", 1), (f"{args.prefix}/+/update/status", 1)])

    def on_message(c: Any, userdata: Any, message: Any) -> None:
        if message.retain:
            return  # a status retained from before this push; devices answer it live
        try:
            inbox.put_nowait((str(message.topic), bytes(message.payload)))
        except queue.Full:
            pass  # the device asks again after its request timeout

    client = compat.new_client(f"edged-push-{os.getpid()}", args.connect_timeout or 5.0)
    client.on_connect = on_connect
    client.on_subscribe = lambda *a: subscribed.set()
    client.on_message = on_message
    if args.username:
        client.username_pw_set(args.username, password)
    if args.tls_ca:
        client.tls_set(ca_certs=args.tls_ca, certfile=args.tls_cert, keyfile=args.tls_key)
    client.reconnect_delay_set(1, 5)
    port = args.port or (8883 if args.tls_ca else 1883)
    why = connect(client, args.host, port, args.connect_timeout)
    if why is not None:
        raise ConfigError(f"cannot connect to the MQTT broker at {args.host}:{port}: {why}")
    client.loop_start()
    print(f"# {manifest.model} v{manifest.version} (update {manifest.sha256[:12]}): "
          f"{manifest.total_bytes} bytes, {manifest.total_chunks} chunks; "
          f"waiting for {', '.join(expected) or 'any device'}", flush=True)  # fmt: skip
    deadline = time.monotonic() + args.timeout
    try:
        if not subscribed.wait(max(1.0, args.connect_timeout)) or refused:
            raise ConfigError(f"the MQTT broker at {args.host}:{port} refused us: "
                              f"{refused[0] if refused else 'no subscription'}")  # fmt: skip
        for topic in desired:
            client.publish(topic, envelope, qos=1, retain=True)
        while time.monotonic() < deadline and not (expected and progress.finished(expected)):
            try:
                topic, payload = inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            device = protocol.device_of(topic, args.prefix, "request")
            if device:
                for chunk_topic, frame in server.frames(device, payload):
                    client.publish(chunk_topic, frame, qos=1)
                continue
            device = protocol.device_of(topic, args.prefix, "status")
            if device and payload:
                try:
                    status = json.loads(payload.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    continue
                if isinstance(status, dict):
                    progress.status(device, status)
    finally:
        client.loop_stop()
        client.disconnect()
    print(progress.summary(), flush=True)
    timed_out = not (expected and progress.finished(expected))
    if timed_out:
        print(f"# timed out after {args.timeout:g} s", file=sys.stderr)
    committed = all(progress.devices[d].get("state") == "COMMITTED" for d in expected)
    return EXIT_OK if expected and committed and not timed_out else EXIT_FAILED

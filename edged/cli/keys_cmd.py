"""``edged keygen`` and ``edged sign``: the operator's side of signed model updates.

``edged keygen NAME`` writes an Ed25519 key pair (``NAME.key``, owner-only, and ``NAME.pub``);
``edged keys --version N --threshold T PUB...`` writes a key list for devices to pin, signed by
the private keys given with ``--sign`` (a rotation: a threshold of the old keys and of the new);
``edged sign`` writes a manifest for a model and its files, signed with one or more keys.
Usable from a laptop with only ``pip install edged``: nothing here loads a model.
"""

import argparse
import hashlib
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

from ..errors import ConfigError

#: a manifest is valid this long unless --expires-days says otherwise
DEFAULT_EXPIRY_DAYS = 30
ROLES = {
    "model": "model",
    "labels": "labels",
    "calibration": "calibration",
    "canary_input": "canary_input",
    "canary_expected": "canary_expected",
}


def add_parser(commands: "argparse._SubParsersAction") -> None:
    g = commands.add_parser("keygen", help="make an Ed25519 operator key pair")
    g.add_argument("name", help="writes NAME.key (private, mode 0600) and NAME.pub")
    g.set_defaults(run=run_keygen)

    k = commands.add_parser("keys", help="write a signed key list for devices to pin")
    k.add_argument("public", nargs="+", metavar="PUB", help="public key files (NAME.pub)")
    k.add_argument("--threshold", type=int, default=1, help="signatures a manifest needs")
    k.add_argument("--version", type=int, required=True, help="key list version (grows)")
    k.add_argument("--sign", action="append", default=[], metavar="KEY", required=True,
                   help="private key to sign with (repeatable)")  # fmt: skip
    k.add_argument("--expires-days", type=int, default=0, help="0: never")
    k.add_argument("-o", "--output", required=True, help="the key list file to write")
    k.set_defaults(run=run_keys)

    s = commands.add_parser("sign", help="write a signed model manifest")
    s.add_argument("--model", required=True, help="the model slot it replaces (models.NAME)")
    s.add_argument("--version", type=int, required=True, help="monotonic integer version")
    s.add_argument("--file", action="append", default=[], metavar="ROLE=PATH", required=True,
                   help="model=PATH (.onnx/.etlt), labels=PATH, calibration=PATH, "
                   "canary_input=PATH, canary_expected=PATH (repeatable)")  # fmt: skip
    s.add_argument("--config", metavar="JSON_FILE",
                   help="the task config the model needs (models.NAME keys, as JSON)")  # fmt: skip
    s.add_argument("--canary", metavar="JSON_FILE",
                   help="canary checks (JSON: shapes, tolerance, latency_ms)")  # fmt: skip
    s.add_argument("--device", action="append", default=[], help="target device id")
    s.add_argument("--group", action="append", default=[], help="target group")
    s.add_argument("--expires-days", type=int, default=DEFAULT_EXPIRY_DAYS)
    s.add_argument("--downgrade", action="store_true", help="allow a lower version")
    s.add_argument("--chunk-kib", type=int, default=64, help="transfer chunk size in KiB")
    s.add_argument("--key", action="append", default=[], required=True, metavar="KEY",
                   help="private key to sign with (repeatable)")  # fmt: skip
    s.add_argument("-o", "--output", required=True, help="the manifest file to write")
    s.set_defaults(run=run_sign)
    add_command_parser(commands)


def add_command_parser(commands: "argparse._SubParsersAction") -> None:
    c = commands.add_parser(
        "sign-command",
        help="print a signed command payload (for mqtt.commands.require_signature)",
        description="Print the payload of a command signed with operator keys, to publish on "
        "<prefix>/<device>/cmd/<name>, e.g. mosquitto_pub -t edged/cam-1/cmd/reload -m "
        '"$(edged sign-command reload --device cam-1 --key op.key)". It is valid for '
        "mqtt.command_max_age_s on the device and runs once.",
    )
    c.add_argument("name", help="the command: ping, get_config, reload, snapshot, ...")
    c.add_argument("--device", required=True, help="the device it is for")
    c.add_argument("--key", action="append", required=True, metavar="KEY",
                   help="private key to sign with (repeatable)")  # fmt: skip
    c.add_argument("--request-id", help="default: a random one")
    c.add_argument("--arg", action="append", default=[], metavar="NAME=JSON",
                   help="a command argument, its value as JSON (repeatable)")  # fmt: skip
    c.set_defaults(run=run_sign_command)


def run_sign_command(args: argparse.Namespace) -> int:
    from ..mqtt.signedcmd import sign_command
    from ..signing import keys

    arguments = {}  # type: Dict[str, Any]
    for spec in args.arg:
        name, sep, value = spec.partition("=")
        try:
            if not sep or not name:
                raise ValueError("expected NAME=JSON")
            arguments[name] = json.loads(value)
        except ValueError as e:
            raise ConfigError(f"--arg {spec}: {e}") from None
    request_id = args.request_id or os.urandom(8).hex()
    signers = [keys.read_private(p) for p in args.key]
    payload = sign_command(args.name, args.device, request_id, signers, arguments)
    sys.stdout.write(payload.decode("utf-8") + "\n")
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    from ..signing import keys

    pair = keys.generate()
    private, public = args.name + ".key", args.name + ".pub"
    for path in (private, public):
        if os.path.exists(path):
            raise ConfigError(f"{path}: exists; not overwriting a key")
    try:
        keys.write_private(private, pair)
        with open(public, "w") as f:
            f.write(pair.public.hex() + "\n")
    except OSError as e:
        raise ConfigError(f"{args.name}: cannot write the key pair ({e.strerror or e})") from e
    print(f"{private}: private key (keep it secret); {public}: key id {pair.id[:16]}")
    return 0


def read_public(path: str) -> bytes:
    try:
        with open(path) as f:
            data = bytes.fromhex(f.read(200).strip())
        if len(data) != 32:
            raise ValueError("not 32 bytes")
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not an edged public key ({type(e).__name__})") from None
    return data


def run_keys(args: argparse.Namespace) -> int:
    from ..signing import canonical, keys

    signers = [keys.read_private(p) for p in args.sign]
    expires = int(time.time()) + args.expires_days * 86400 if args.expires_days else None
    keylist = keys.make_keylist(
        [read_public(p) for p in args.public], args.threshold, args.version, expires
    )
    _write(args.output, canonical.encode(keys.sign_keylist(keylist, signers)))
    print(f"{args.output}: key list v{args.version}, {len(keylist.keys)} key(s), "
          f"threshold {args.threshold}")  # fmt: skip
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from ..signing import keys
    from ..update import manifest

    entries: List[Any] = []
    for spec in args.file:
        role, sep, path = spec.partition("=")
        if not sep or role not in ROLES:
            raise ConfigError(f"--file {spec}: expected ROLE=PATH with ROLE one of "
                              f"{', '.join(ROLES)}")  # fmt: skip
        entries.append(manifest.FileEntry(os.path.basename(path), role, *_size_and_hash(path)))
    config = _json_object(args.config)
    canary = _json_object(args.canary)
    now = int(time.time())
    made = manifest.make(
        model=args.model,
        version=args.version,
        files=entries,
        config=config,
        devices=args.device,
        groups=args.group,
        created=now,
        expires=now + args.expires_days * 86400,
        downgrade=args.downgrade,
        chunk_bytes=args.chunk_kib * 1024,
        canary=canary,
    )
    signers = [keys.read_private(p) for p in args.key]
    _write(args.output, manifest.sign_manifest(made, signers))
    print(
        f"{args.output}: {made.model} v{made.version}, {len(entries)} file(s), "
        f"{made.total_bytes} bytes, {made.total_chunks} chunks, update {made.sha256[:12]}"
    )
    return 0


def _json_object(path: Optional[str]) -> Dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path) as f:
            value = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: not a JSON object ({e})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return value


def _size_and_hash(path: str) -> Any:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from e
    return size, digest.hexdigest()


def _write(path: str, data: bytes) -> None:
    from ..fsutil import atomic_write

    try:
        atomic_write(path, data)
    except OSError as e:
        raise ConfigError(f"{path}: cannot write ({e.strerror or e})") from e

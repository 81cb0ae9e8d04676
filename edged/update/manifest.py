"""The signed model manifest: what it carries, how it is made, and every check before a byte.

A manifest names one model slot (``models.<name>`` of the device's config), a monotonic integer
version, every file with its size and sha256 (the model, labels, an INT8 calibration cache,
canary inputs and expected outputs), the task config the model needs, the devices or groups it
is for, and its creation and expiry times. Operators sign its canonical encoding
(:mod:`.canonical`) with Ed25519 keys (:mod:`.keys`).

:func:`check` runs the device's checks in the order update systems use (SWUpdate signs the
manifest, not the images; TUF checks lengths, signatures, expiry and versions before anything
else): size cap, signature by a threshold of the pinned keys, shape, expiry, target, version
(a downgrade needs a signed flag and a newer creation time, so an old manifest cannot be
replayed), caps on total size and chunk count, and free disk for the files plus an engine build.
Nothing here reads a model byte.
"""

import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import UpdateError
from ..signing import canonical
from ..signing.keys import KeyList, KeyPair, sign, valid_signers

MANIFEST_TYPE = "edged-model-manifest"
FILE_ROLES = ("model", "labels", "calibration", "canary_input", "canary_expected")
MODEL_EXTENSIONS = (".onnx", ".etlt")
#: sizes a device accepts; UpdateLimits lets the config (and tests) change them
MAX_MANIFEST_BYTES = 64 * 1024
DEFAULT_CHUNK_BYTES = 64 * 1024  # fits AWS IoT Core's 128 KB and EMQX's 1 MB packet limits
MAX_CHUNK_BYTES = 1024 * 1024
MAX_FILES = 32
#: an engine build needs room beside the staged files (the serialized engine, the builder's
#: scratch files): ask for the files' size twice over plus this margin
DISK_MARGIN_BYTES = 64 * 1024 * 1024
#: config keys a manifest must not carry (secrets)
SECRET_CONFIG_KEYS = frozenset(("key", "key_env", "key_file"))
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class UpdateLimits(NamedTuple):
    max_total_bytes: int = 1 << 30
    max_chunks: int = 32768
    max_manifest_bytes: int = MAX_MANIFEST_BYTES


DEFAULT_LIMITS = UpdateLimits()


class FileEntry(NamedTuple):
    name: str
    role: str
    size: int
    sha256: str


class Manifest(NamedTuple):
    """A manifest that passed :func:`check` (or was just made by :func:`make`)."""

    model: str
    version: int
    files: List[FileEntry]
    config: Dict[str, Any]
    devices: List[str]
    groups: List[str]
    created: int
    expires: int
    downgrade: bool
    chunk_bytes: int
    canary: Dict[str, Any]
    sha256: str  # of the canonical signed part: the update's identity in journals and replies

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def chunk_count(self, entry: FileEntry) -> int:
        return max(1, -(-entry.size // self.chunk_bytes))

    @property
    def total_chunks(self) -> int:
        return sum(self.chunk_count(f) for f in self.files)

    @property
    def model_file(self) -> FileEntry:
        return next(f for f in self.files if f.role == "model")

    def signed(self) -> Dict[str, Any]:
        return {
            "type": MANIFEST_TYPE,
            "model": self.model,
            "version": self.version,
            "files": [f._asdict() for f in self.files],
            "config": self.config,
            "targets": {"devices": list(self.devices), "groups": list(self.groups)},
            "created": self.created,
            "expires": self.expires,
            "downgrade": self.downgrade,
            "chunk_bytes": self.chunk_bytes,
            "canary": self.canary,
        }


class Installed(NamedTuple):
    """What the device runs for the slot: the version counter that must only grow."""

    version: int = 0
    created: int = 0


def make(
    model: str,
    version: int,
    files: Sequence[FileEntry],
    config: Dict[str, Any],
    devices: Sequence[str],
    groups: Sequence[str],
    created: int,
    expires: int,
    downgrade: bool = False,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    canary: Optional[Dict[str, Any]] = None,
) -> Manifest:
    """A manifest from the operator's values (checked as a device would, less the signature)."""
    signed = Manifest(
        model, version, list(files), dict(config), list(devices), list(groups), created,
        expires, downgrade, chunk_bytes, dict(canary or {}), "",
    ).signed()  # fmt: skip
    return _parse_signed(signed, "manifest")


def sign_manifest(manifest: Manifest, signers: Sequence[KeyPair]) -> bytes:
    """The envelope a device receives: ``{"signed": ..., "signatures": [...]}`` as bytes."""
    if not signers:
        raise UpdateError("a manifest needs at least one signing key")
    data = canonical.encode(manifest.signed())
    envelope = {"signed": manifest.signed(), "signatures": [sign(p, data) for p in signers]}
    return canonical.encode(envelope)


def check(
    data: bytes,
    trusted: KeyList,
    installed: Installed,
    device_id: str,
    groups: Sequence[str],
    now: int,
    disk_free: int,
    limits: UpdateLimits = DEFAULT_LIMITS,
) -> Manifest:
    """Every check a device makes before it asks for the first chunk.

    Raises:
        UpdateError: the first check that fails, in one line (never echoing secrets: a
            manifest carries no key; an .etlt key travels in the device's own config).
    """
    document = canonical.decode(data, limits.max_manifest_bytes, "manifest")
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict):
        raise UpdateError("manifest: not a signed envelope ({signed, signatures})")
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise UpdateError("manifest: not signed")
    signed_bytes = canonical.encode(document["signed"])
    good = valid_signers(signed_bytes, signatures, trusted.keys)
    if len(good) < trusted.threshold:
        known = [s.get("keyid") in trusted.keys for s in signatures if isinstance(s, dict)]
        why = "a bad signature" if any(known) else "unknown keys"
        raise UpdateError(
            f"manifest: signed by {len(good)} trusted key(s), needs {trusted.threshold} ({why})"
        )
    manifest = _parse_signed(document["signed"], "manifest")
    if manifest.expires <= now:
        raise UpdateError(f"manifest {manifest.model} v{manifest.version}: expired")
    if device_id not in manifest.devices and not set(groups) & set(manifest.groups):
        raise UpdateError(
            f"manifest {manifest.model} v{manifest.version}: not for this device or its groups"
        )
    if manifest.version <= installed.version:
        if not manifest.downgrade:
            raise UpdateError(
                f"manifest {manifest.model} v{manifest.version}: not newer than the installed "
                f"v{installed.version} (a downgrade needs a manifest signed with downgrade: true)"
            )
        if manifest.created <= installed.created:
            raise UpdateError(
                f"manifest {manifest.model} v{manifest.version}: a downgrade older than the "
                "installed manifest (a replay)"
            )
    if manifest.total_bytes > limits.max_total_bytes:
        raise UpdateError(
            f"manifest {manifest.model} v{manifest.version}: {manifest.total_bytes} bytes, "
            f"more than the {limits.max_total_bytes} accepted"
        )
    if manifest.total_chunks > limits.max_chunks:
        raise UpdateError(
            f"manifest {manifest.model} v{manifest.version}: {manifest.total_chunks} chunks, "
            f"more than the {limits.max_chunks} accepted"
        )
    needed = required_disk_bytes(manifest)
    if disk_free < needed:
        raise UpdateError(
            f"manifest {manifest.model} v{manifest.version}: needs {needed} bytes of free disk, "
            f"{disk_free} free"
        )
    return manifest


def peek(data: bytes, limits: UpdateLimits = DEFAULT_LIMITS) -> Tuple[str, str]:
    """(model name, update identity) of an UNCHECKED envelope, or "" for what is not there.

    Only to pick the model slot whose installed version :func:`check` compares against (the
    name must be a plain name) and to tell a re-delivered manifest from a new one; trust
    nothing else before :func:`check`.
    """
    try:
        document = canonical.decode(data, limits.max_manifest_bytes, "manifest")
        signed = document["signed"]
        identity = _sha256(canonical.encode(signed))
        model = signed.get("model")
    except (UpdateError, TypeError, KeyError, AttributeError):
        return "", ""
    return (model if isinstance(model, str) and _SAFE_NAME.match(model) else ""), identity


def parse_checked(data: bytes) -> Manifest:
    """A manifest envelope that :func:`check` accepted earlier, read back from the device's own
    private state (after a restart); its signature was verified when it arrived."""
    document = canonical.decode(data, MAX_MANIFEST_BYTES * 16, "staged manifest")
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict):
        raise UpdateError("staged manifest: not a signed envelope")
    return _parse_signed(document["signed"], "staged manifest")


def required_disk_bytes(manifest: Manifest) -> int:
    return 2 * manifest.total_bytes + DISK_MARGIN_BYTES


def _parse_signed(signed: Dict[str, Any], what: str) -> Manifest:
    if signed.get("type") != MANIFEST_TYPE:
        raise UpdateError(f"{what}: type is {signed.get('type')!r}, not {MANIFEST_TYPE}")
    model = _field(signed, "model", str, what)
    if not _SAFE_NAME.match(model):
        raise UpdateError(f"{what}: model name {model[:40]!r} is not a plain name")
    version = _field(signed, "version", int, what)
    if version < 1:
        raise UpdateError(f"{what}: version {version} must be at least 1")
    targets = _field(signed, "targets", dict, what)
    devices = [d for d in targets.get("devices") or [] if isinstance(d, str)]
    groups = [g for g in targets.get("groups") or [] if isinstance(g, str)]
    if not devices and not groups:
        raise UpdateError(f"{what}: no target devices or groups")
    chunk_bytes = _field(signed, "chunk_bytes", int, what)
    if not 1024 <= chunk_bytes <= MAX_CHUNK_BYTES:
        raise UpdateError(f"{what}: chunk_bytes {chunk_bytes} outside 1024..{MAX_CHUNK_BYTES}")
    files = _files(_field(signed, "files", list, what), what)
    config = _field(signed, "config", dict, what)
    if set(config) & SECRET_CONFIG_KEYS:
        # a manifest is retained on the broker for every subscriber to read: an .etlt key
        # travels only in the device's own config (models.NAME.key / key_env / key_file)
        raise UpdateError(f"{what}: config carries a model key; keep it in the device config")
    return Manifest(
        model=model,
        version=version,
        files=files,
        config=config,
        devices=devices,
        groups=groups,
        created=_field(signed, "created", int, what),
        expires=_field(signed, "expires", int, what),
        downgrade=_field(signed, "downgrade", bool, what),
        chunk_bytes=chunk_bytes,
        canary=_field(signed, "canary", dict, what),
        sha256=_sha256(canonical.encode(signed)),
    )


def _files(raw: List[Any], what: str) -> List[FileEntry]:
    if not 1 <= len(raw) <= MAX_FILES:
        raise UpdateError(f"{what}: {len(raw)} files (1..{MAX_FILES})")
    files: List[FileEntry] = []
    for i, item in enumerate(raw):
        where = f"{what}: files[{i}]"
        if not isinstance(item, dict):
            raise UpdateError(f"{where}: not an object")
        entry = FileEntry(
            name=_field(item, "name", str, where),
            role=_field(item, "role", str, where),
            size=_field(item, "size", int, where),
            sha256=_field(item, "sha256", str, where),
        )
        if not _SAFE_NAME.match(entry.name):
            raise UpdateError(f"{where}: {entry.name[:40]!r} is not a plain file name")
        if entry.role not in FILE_ROLES:
            raise UpdateError(f"{where}: role {entry.role!r} (one of {', '.join(FILE_ROLES)})")
        if entry.size < 0:
            raise UpdateError(f"{where}: negative size")
        if not _SHA256.match(entry.sha256):
            raise UpdateError(f"{where}: sha256 is not 64 lowercase hex digits")
        files.append(entry)
    names = [f.name for f in files]
    if len(set(names)) != len(names):
        raise UpdateError(f"{what}: two files with one name")
    models = [f for f in files if f.role == "model"]
    if len(models) != 1:
        raise UpdateError(f"{what}: needs exactly one file with role model, has {len(models)}")
    if not models[0].name.lower().endswith(MODEL_EXTENSIONS):
        raise UpdateError(f"{what}: the model file must be .onnx or .etlt")
    return files


def _field(data: Dict[str, Any], name: str, kind: type, what: str) -> Any:
    if name not in data:
        raise UpdateError(f"{what}: missing {name}")
    value = data[name]
    if kind is int and isinstance(value, bool):
        raise UpdateError(f"{what}: {name} must be an integer")
    if not isinstance(value, kind):
        raise UpdateError(f"{what}: {name} must be {kind.__name__}")
    return value


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()

"""Ed25519 operator keys, signatures over canonical bytes, and the signed key list.

A device pins a key list (``keys.json``): the operator keys it trusts and how many of them must
sign (the threshold). A new list replaces it only when signed by a threshold of the OLD list's
keys and of its own, with a higher version: TUF's root rotation, simplified
(theupdateframework.github.io/specification, "Key management and migration"). Key ids are the
sha256 of the raw public key, as hex.
"""

import hashlib
import logging
import os
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ..errors import UpdateError
from . import canonical

logger = logging.getLogger(__name__)

KEYLIST_TYPE = "edged-keylist"
#: a key list larger than this is refused before it is parsed
MAX_KEYLIST_BYTES = 64 * 1024


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover - a dependency in setup.cfg
        raise UpdateError(
            "signatures need the `cryptography` package (pip install cryptography)"
        ) from e
    return ed25519


def key_id(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()


class KeyPair(NamedTuple):
    private: bytes  # 32-byte Ed25519 seed
    public: bytes  # 32-byte raw public key

    @property
    def id(self) -> str:
        return key_id(self.public)


def generate() -> KeyPair:
    ed = _crypto()
    from cryptography.hazmat.primitives import serialization

    private = ed.Ed25519PrivateKey.generate()
    seed = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return KeyPair(seed, public)


def sign(pair: KeyPair, data: bytes) -> Dict[str, str]:
    """One signature entry ``{"keyid", "sig"}`` over ``data``."""
    ed = _crypto()
    signature = ed.Ed25519PrivateKey.from_private_bytes(pair.private).sign(data)
    return {"keyid": pair.id, "sig": signature.hex()}


def valid_signers(data: bytes, signatures: Iterable[Any], trusted: Dict[str, bytes]) -> List[str]:
    """Ids of the trusted keys with a valid signature over ``data`` (each counted once)."""
    ed = _crypto()
    from cryptography.exceptions import InvalidSignature

    good: List[str] = []
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        kid, sig = entry.get("keyid"), entry.get("sig")
        if not isinstance(kid, str) or not isinstance(sig, str) or kid in good:
            continue
        public = trusted.get(kid)
        if public is None:
            continue
        try:
            ed.Ed25519PublicKey.from_public_bytes(public).verify(bytes.fromhex(sig), data)
        except (InvalidSignature, ValueError):
            continue
        good.append(kid)
    return good


# -- key files ---------------------------------------------------------------------------------


def write_private(path: str, pair: KeyPair) -> None:
    """The private key as one hex line, readable by its owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pair.private.hex() + "\n")


def read_private(path: str) -> KeyPair:
    """Raises UpdateError naming the file (never its content)."""
    try:
        with open(path) as f:
            text = f.read(200).strip()
        seed = bytes.fromhex(text)
        if len(seed) != 32:
            raise ValueError("not 32 bytes")
    except (OSError, ValueError) as e:
        raise UpdateError(f"{path}: not an edged private key ({type(e).__name__})") from None
    ed = _crypto()
    from cryptography.hazmat.primitives import serialization

    public = (
        ed.Ed25519PrivateKey.from_private_bytes(seed)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return KeyPair(seed, public)


# -- the signed key list -----------------------------------------------------------------------


class KeyList(NamedTuple):
    version: int
    threshold: int
    keys: Dict[str, bytes]  # key id -> raw public key
    expires: Optional[int]  # unix seconds, None: never

    def signed(self) -> Dict[str, Any]:
        return {
            "type": KEYLIST_TYPE,
            "version": self.version,
            "threshold": self.threshold,
            "keys": {kid: pub.hex() for kid, pub in sorted(self.keys.items())},
            "expires": self.expires,
        }


def make_keylist(
    publics: Sequence[bytes], threshold: int, version: int, expires: Optional[int] = None
) -> KeyList:
    keys = {key_id(p): p for p in publics}
    if not 1 <= threshold <= len(keys):
        raise UpdateError(f"threshold {threshold}: needs 1..{len(keys)} (the number of keys)")
    return KeyList(version, threshold, keys, expires)


def sign_keylist(keylist: KeyList, signers: Sequence[KeyPair]) -> Dict[str, Any]:
    data = canonical.encode(keylist.signed())
    return {"signed": keylist.signed(), "signatures": [sign(p, data) for p in signers]}


def parse_keylist(document: Any, what: str) -> Tuple[KeyList, bytes, List[Any]]:
    """(key list, the canonical bytes that were signed, the signatures) of an envelope."""
    if not isinstance(document, dict) or not isinstance(document.get("signed"), dict):
        raise UpdateError(f"{what}: not a signed key list")
    signed = document["signed"]
    if signed.get("type") != KEYLIST_TYPE:
        raise UpdateError(f"{what}: type is {signed.get('type')!r}, not {KEYLIST_TYPE}")
    try:
        version = _int(signed["version"])
        threshold = _int(signed["threshold"])
        keys = {str(k): bytes.fromhex(v) for k, v in dict(signed["keys"]).items()}
        expires = signed.get("expires")
        expires = None if expires is None else _int(expires)
    except (KeyError, TypeError, ValueError) as e:
        raise UpdateError(f"{what}: malformed key list ({e})") from None
    for kid, pub in keys.items():
        if len(pub) != 32 or key_id(pub) != kid:
            raise UpdateError(f"{what}: key id {kid[:16]} does not match its key")
    if not 1 <= threshold <= len(keys):
        raise UpdateError(f"{what}: threshold {threshold} with {len(keys)} key(s)")
    signatures = document.get("signatures")
    if not isinstance(signatures, list):
        raise UpdateError(f"{what}: no signatures")
    return KeyList(version, threshold, keys, expires), canonical.encode(signed), signatures


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{value!r} is not an integer")
    return value


def rotate(current: KeyList, document: Any, now: int) -> KeyList:
    """The new key list in ``document`` if it may replace ``current``.

    Raises:
        UpdateError: not newer, expired, or not signed by a threshold of the old keys and of
            the new keys.
    """
    new, data, signatures = parse_keylist(document, "key list")
    if new.version <= current.version:
        raise UpdateError(
            f"key list version {new.version} is not newer than the trusted {current.version}"
        )
    if new.expires is not None and new.expires <= now:
        raise UpdateError(f"key list version {new.version} has expired")
    old_ok = valid_signers(data, signatures, current.keys)
    if len(old_ok) < current.threshold:
        raise UpdateError(
            f"key list version {new.version}: signed by {len(old_ok)} of the trusted keys, "
            f"needs {current.threshold}"
        )
    new_ok = valid_signers(data, signatures, new.keys)
    if len(new_ok) < new.threshold:
        raise UpdateError(
            f"key list version {new.version}: signed by {len(new_ok)} of its own keys, "
            f"needs {new.threshold}"
        )
    return new


def read_keylist(path: str, now: int) -> KeyList:
    """The key list a device pins (``update.keys_file``), signed by a threshold of its own keys.

    Raises:
        UpdateError: unreadable, malformed, not signed by enough of its keys, or expired.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEYLIST_BYTES + 1)
    except OSError as e:
        raise UpdateError(f"{path}: cannot read the key list ({e.strerror or e})") from e
    keylist, signed, signatures = parse_keylist(
        canonical.decode(data, MAX_KEYLIST_BYTES, path), path
    )
    if len(valid_signers(signed, signatures, keylist.keys)) < keylist.threshold:
        raise UpdateError(f"{path}: not signed by {keylist.threshold} of its own keys")
    if keylist.expires is not None and keylist.expires <= now:
        raise UpdateError(f"{path}: the key list has expired")
    return keylist


def pinned_keylist(path: str, pin_dir: str, now: int) -> KeyList:
    """The key list to trust: the pinned one, rotated only by a properly signed newer list.

    The first list a device reads from ``path`` is pinned (copied into ``pin_dir``, owner-only).
    Later, a list at ``path`` replaces the pinned one only through :func:`rotate`: a higher
    version, signed by a threshold of the PINNED keys and of its own. A file swapped for an
    older list, or for one an attacker signed with keys of their own, changes nothing: the
    pinned list stays (TUF's root rotation, "Key management and migration"; persisted trust,
    or rollback protection is lost).

    Raises:
        UpdateError: the list at ``path`` is unusable and none is pinned yet, or the pinned list
            expired.
    """
    from ..fsutil import atomic_write

    pinned_path = os.path.join(pin_dir, "pinned-keys.json")
    try:
        with open(pinned_path, "rb") as f:
            pinned_data = f.read(MAX_KEYLIST_BYTES + 1)
    except FileNotFoundError:
        keylist = read_keylist(path, now)  # trust on first use: the installer's file
        os.makedirs(pin_dir, mode=0o700, exist_ok=True)
        with open(path, "rb") as f:
            atomic_write(pinned_path, f.read(MAX_KEYLIST_BYTES + 1))
        return keylist
    except OSError as e:
        raise UpdateError(f"{pinned_path}: cannot read the pinned key list ({e})") from e
    pinned, _, _ = parse_keylist(canonical.decode(pinned_data, MAX_KEYLIST_BYTES, pinned_path),
                                 pinned_path)  # fmt: skip
    try:
        with open(path, "rb") as f:
            offered = f.read(MAX_KEYLIST_BYTES + 1)
    except OSError:
        offered = pinned_data  # the file went away: the pinned list still holds
    if offered != pinned_data:
        try:
            rotated = rotate(pinned, canonical.decode(offered, MAX_KEYLIST_BYTES, path), now)
        except UpdateError as e:
            logger.error("%s: not taken, the pinned key list v%d stays: %s", path,
                         pinned.version, e)  # fmt: skip
        else:
            atomic_write(pinned_path, offered)
            logger.warning("key list rotated: v%d -> v%d (%d keys, threshold %d)",
                           pinned.version, rotated.version, len(rotated.keys),
                           rotated.threshold)  # fmt: skip
            return rotated
    if pinned.expires is not None and pinned.expires <= now:
        raise UpdateError(f"{pinned_path}: the pinned key list has expired")
    return pinned

"""Signed commands: with ``mqtt.commands.require_signature`` only operators' keys command.

MQTT does not tell a subscriber who published a message; a broker ACL says who MAY publish
(docs/mosquitto/acl), a signature says who DID. A signed command is the envelope
``{"signed": {...}, "signatures": [{"keyid", "sig"}]}`` (the canonical encoding and Ed25519
keys of model updates, edged/signing/); the signed part names the
command, the device it is for, a ``request_id`` and ``issued_at_ms``, plus the command's own
arguments. A command for another device, for another command name, older than the maximum
age, or seen before (same request id and issue time) is refused and runs nothing.
``edged sign-command`` makes one (edged/cli/command_cmd.py).
"""

import collections
import time
from typing import Any, Callable, Deque, Dict, Optional, Set, Tuple

from ..errors import UpdateError
from ..signing import canonical, keys

ISSUED_AT = "issued_at_ms"


class CommandVerifier:
    """Checks signed command envelopes against a pinned key list.

    Args:
        trusted: the operator key list the device pins (``edged keys``).
        device_id: this device; a signed command names the device it is for.
        max_age_s: how far ``issued_at_ms`` may be from this device's clock.
        wall_clock: seconds since the epoch (tests inject one).
    """

    def __init__(
        self,
        trusted: keys.KeyList,
        device_id: str,
        max_age_s: float,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._trusted = trusted
        self._device = device_id
        self._max_age_ms = int(max_age_s * 1000)
        self._clock = wall_clock
        # replay window: (request_id, issued_at) seen within the last max age, oldest first
        self._seen: Deque[Tuple[int, str]] = collections.deque()
        self._seen_keys: Set[str] = set()

    def unwrap(self, name: str, envelope: Any) -> Tuple[Dict[str, Any], Optional[str]]:
        """``(the signed request, None)``, or ``({}, why it is refused)``."""
        if not isinstance(envelope, dict) or not isinstance(envelope.get("signed"), dict):
            return {}, "unsigned command refused: this device requires signed commands"
        signed = envelope["signed"]
        signatures = envelope.get("signatures")
        if not isinstance(signatures, list):
            return {}, "signed command without signatures"
        try:
            data = canonical.encode(signed)
        except UpdateError as e:
            return {}, f"signed command: {e}"
        good = keys.valid_signers(data, signatures, self._trusted.keys)
        if len(good) < self._trusted.threshold:
            return {}, (
                f"signed command: signed by {len(good)} trusted key(s), needs "
                f"{self._trusted.threshold}"
            )
        if signed.get("command") != name:
            return {}, "signed command: signed for another command"
        if signed.get("device") != self._device:
            return {}, "signed command: signed for another device"
        issued = signed.get(ISSUED_AT)
        if isinstance(issued, bool) or not isinstance(issued, int):
            return {}, f"signed command: {ISSUED_AT} missing"
        now_ms = int(self._clock() * 1000)
        if abs(now_ms - issued) > self._max_age_ms:
            return {}, "stale: signed command issued outside the maximum age"
        key = f"{issued}:{signed.get('request_id')!r}"
        self._forget(now_ms)
        if key in self._seen_keys:
            return {}, "signed command replayed"
        self._seen.append((issued, key))
        self._seen_keys.add(key)
        return dict(signed), None

    def _forget(self, now_ms: int) -> None:
        # a command older than the max age is refused as stale anyway: forget it
        while self._seen and now_ms - self._seen[0][0] > self._max_age_ms:
            self._seen_keys.discard(self._seen.popleft()[1])


def sign_command(
    name: str,
    device_id: str,
    request_id: Any,
    signers: Any,
    arguments: Optional[Dict[str, Any]] = None,
    issued_at_ms: Optional[int] = None,
) -> bytes:
    """The payload of a signed command (the operator's side)."""
    signed = dict(arguments or {})
    signed.update(
        {
            "command": name,
            "device": device_id,
            "request_id": request_id,
            ISSUED_AT: int(time.time() * 1000) if issued_at_ms is None else issued_at_ms,
        }
    )
    data = canonical.encode(signed)
    return canonical.encode(
        {"signed": signed, "signatures": [keys.sign(pair, data) for pair in signers]}
    )


def load_verifier(
    keys_file: str, pin_dir: str, device_id: str, max_age_s: float
) -> CommandVerifier:
    """A verifier over the operator key list pinned from ``keys_file`` into ``pin_dir``
    (rotated only by a newer list signed by the pinned keys: edged/signing/keys.py
    ``pinned_keylist``).

    Raises:
        UpdateError: the file is missing or not a key list (one line naming it).
    """
    pinned = keys.pinned_keylist(keys_file, pin_dir, int(time.time()))
    return CommandVerifier(pinned, device_id, max_age_s)

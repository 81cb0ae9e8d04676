"""Every MQTT topic edged uses, built in one place (docs/mqtt.md).

Layout (device id near the front, so a broker ACL pattern on ``<prefix>/%u/...``
(docs/mosquitto/acl, tested) or an AWS policy variable gives each device only its
own subtree (Mosquitto's ``aclfile.example`` ``pattern``; AWS IoT policy variables))::

    <prefix>/<device>/status                   retained: online | offline (LWT) | stopped
    <prefix>/<device>/v1/streams/<s>/detections       a detector's results (QoS 1, outbox)
    <prefix>/<device>/v1/streams/<s>/classifications  a classifier's results
    <prefix>/<device>/v1/streams/<s>/state     retained: the stream's capture state
    <prefix>/<device>/v1/streams/<s>/counts    retained: zone occupancy, line in/out totals
    <prefix>/<device>/v1/streams/<s>/events    crossings, zone enter/leave (QoS 1, outbox)
    <prefix>/<device>/cmd/<name>               commands to edged (JSON with a request_id)
    <prefix>/<device>/cmd/<name>/reply         edged's reply

The payload contract is versioned in the topic (``v1``) and in the payload
(``schema_version``). Topic strings and levels are checked by :mod:`edged.topicnames`.
"""

import re
from typing import Optional, Tuple

from ..topicnames import (  # noqa: F401 - re-exported: the rules live below config
    MAX_TOPIC_BYTES,
    level_problem,
    prefix_problem,
    topic_problem,
)

#: Commands are plain names; anything else (a topic level an attacker made up) is "unknown".
COMMAND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
RESULT_KINDS = ("detections", "classifications")


class Topics:
    """The topics of one device under one prefix."""

    def __init__(self, prefix: str, device_id: str) -> None:
        for what, value, problem in (
            ("topic prefix", prefix, prefix_problem(prefix)),
            ("device id", device_id, level_problem(device_id)),
        ):
            if problem:
                raise ValueError(f"MQTT {what} {value!r} {problem}")
        self.prefix = prefix
        self.device_id = device_id
        self.base = f"{prefix}/{device_id}"

    @property
    def status(self) -> str:
        return self.base + "/status"

    def _stream(self, stream_id: str) -> str:
        problem = level_problem(stream_id)
        if problem:
            raise ValueError(f"stream id {stream_id!r} {problem}")
        return f"{self.base}/v1/streams/{stream_id}"

    def results(self, stream_id: str, task: str) -> str:
        """``.../v1/streams/<stream>/detections`` (task "detection") or ``/classifications``."""
        kind = "detections" if task == "detection" else "classifications"
        return self._stream(stream_id) + "/" + kind

    def stream_state(self, stream_id: str) -> str:
        return self._stream(stream_id) + "/state"

    def counts(self, stream_id: str) -> str:
        """Retained occupancy and in/out totals (edged/mqtt/counting.py)."""
        return self._stream(stream_id) + "/counts"

    def events(self, stream_id: str) -> str:
        """Line crossings and zone enter/leave, QoS 1 through the outbox."""
        return self._stream(stream_id) + "/events"

    def command(self, name: str) -> str:
        return f"{self.base}/cmd/{name}"

    def reply(self, name: str) -> str:
        return self.command(name) + "/reply"

    @property
    def command_filter(self) -> str:
        """What edged subscribes to: one level under ``cmd`` (replies are a level deeper)."""
        return self.base + "/cmd/+"

    def command_name(self, topic: str) -> Optional[str]:
        """The command a topic addresses, or None when it is no command topic of this device."""
        head = self.base + "/cmd/"
        if not topic.startswith(head):
            return None
        name = topic[len(head) :]
        return name if name and "/" not in name else None


def parse_stream_topic(topic: str) -> Optional[Tuple[str, str, str, str]]:
    """``(prefix, device, stream, kind)`` of a stream topic (``kind``: detections,
    classifications or state), or None; for subscribers such as ``edged watch``."""
    parts = topic.split("/")
    if len(parts) < 6 or parts[-4] != "v1" or parts[-3] != "streams":
        return None
    kind = parts[-1]
    if kind not in RESULT_KINDS + ("state",):
        return None
    return "/".join(parts[:-5]), parts[-5], parts[-2], kind

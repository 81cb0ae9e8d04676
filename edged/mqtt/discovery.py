"""Home Assistant MQTT discovery of the counts (``mqtt.home_assistant: true``).

For every configured zone (occupancy now) and line (in and out totals) of a tracking
model's streams, edged publishes a retained sensor config under Home Assistant's default
discovery prefix, ``homeassistant/sensor/<node>/<object>/config`` (the layout of Home
Assistant's MQTT discovery documentation), pointing at the stream's retained ``counts``
topic with a ``value_template``. The sensors belong to one device per edged device id, and
their availability follows edged's retained ``status`` topic (``online``; the will
``offline`` and ``stopped`` make them unavailable), so a dashboard shows "unavailable"
rather than stale counts when edged is gone.
"""

import re
from typing import Any, Dict, Iterable, List, Tuple

from .. import __version__
from .payloads import encode

DISCOVERY_PREFIX = "homeassistant"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_-]")


def _safe(name: str) -> str:
    """Home Assistant's node and object ids allow ``[a-zA-Z0-9_-]`` only."""
    return _UNSAFE.sub("_", name)


Layout = Dict[str, Tuple[Iterable[Any], Iterable[Any]]]  # stream -> (zones, lines)


def sensor_configs(topics: Any, device_id: str, layout: Layout) -> List[Tuple[str, bytes]]:
    """``(topic, retained payload)`` of every sensor of ``layout`` (stream -> zones, lines)."""
    node = _safe("edged_" + device_id)
    device = {"identifiers": [node], "name": f"edged {device_id}", "manufacturer": "edged",
              "model": "edged inference daemon", "sw_version": __version__}  # fmt: skip
    availability = {"topic": topics.status, "value_template": "{{ value_json.state }}",
                    "payload_available": "online", "payload_not_available": "offline"}  # fmt: skip
    out = []  # type: List[Tuple[str, bytes]]

    def sensor(stream: str, kind: str, name: str, key: str, title: str, state_class: str) -> None:
        object_id = _safe(f"{stream}_{kind}_{name}_{key}")
        # subscripts, not attributes: "in" is a Jinja operator
        template = "{{ value_json." + kind + "[" + _quote(name) + "]['" + key + "'] }}"
        config = {
            "name": title,
            "unique_id": f"{node}_{object_id}",
            "object_id": f"{node}_{object_id}",
            "state_topic": topics.counts(stream),
            "value_template": template,
            "state_class": state_class,
            "availability": [availability],
            "device": device,
        }
        out.append((f"{DISCOVERY_PREFIX}/sensor/{node}/{object_id}/config", encode(config)))

    for stream, (zones, lines) in sorted(layout.items()):
        for zone in zones:
            sensor(stream, "zones", zone.name, "occupancy", f"{stream} {zone.name} occupancy",
                   "measurement")  # fmt: skip
        for line in lines:
            for key in ("in", "out"):
                # total_increasing: a reset_counts to 0 is taken as a new cycle, not a drop
                sensor(stream, "lines", line.name, key, f"{stream} {line.name} {key}",
                       "total_increasing")  # fmt: skip
    return out


def _quote(name: str) -> str:
    """A Jinja string literal of a zone or line name (letters, digits, ``_.-`` only)."""
    return "'" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"

"""MQTT: results with zero loss, status, stream states and commands (docs/mqtt.md).

Modules: :mod:`.topics` (every topic), :mod:`.payloads` (the versioned contract,
JSON Schemas in ``edged/schemas/``), :mod:`.policy` (publish modes),
:mod:`.outbox` (the durable SQLite outbox), :mod:`.compat` (paho 1.6 and 2.x),
:mod:`.commands`, :mod:`.control` (what the daemon offers) and :mod:`.service`
(the threads). Importing this package does not import paho; the config loader
uses :mod:`.topics` without it.
"""

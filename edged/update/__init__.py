"""Model updates over MQTT: signed manifests, chunked transfer, a journaled state machine.

The rules are those of the update systems fleets trust (TUF, Mender, SWUpdate, RAUC): verify a
signed manifest before touching the payload, refuse downgrades and replays, resume interrupted
transfers, switch atomically as the very last step, roll back when the new version is unhealthy.
docs/model-updates.md describes the protocol; the modules here:

- :mod:`edged.signing`: the canonical bytes signatures cover, the Ed25519 keys and the signed key
  list with threshold rotation (shared with signed commands);
- :mod:`.manifest`: the manifest, its limits and its checks (before any model byte is parsed);
- :mod:`.chunks`: the bitmap of received chunks;
- :mod:`.journal`: the state machine, a pure transition function over the persisted journal;
- :mod:`.store`: the device's files: journal, installed version, staging, read-only versions;
- :mod:`.updater`: the device-side executor (one thread), with :mod:`.steps` and :mod:`.window`;
- :mod:`.seams`: the transport and deployer interfaces it works through, and the canary checks;
- :mod:`.mqtt_transport`: the updater's own MQTT connection, from the device's ``mqtt`` config;
- :mod:`.slots_deployer`: the daemon's deployer (its loader, canary, ``ModelSlots`` switch);
- :mod:`.wiring`: an updater from the device's config, started inside the daemon.
"""

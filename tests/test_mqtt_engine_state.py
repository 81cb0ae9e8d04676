"""The stream-state topic says when a model's TensorRT engine builds."""

import json
import time
import types

import jsonschema

from edged.config import build_config
from edged.daemon_view import empty_snapshot
from edged.mqtt.control import DaemonAdapter
from edged.mqtt.payloads import load_schema, stream_state_payload


class EngineStates:
    """The engine manager's states() as the daemon holds it (the states are plain data)."""

    def __init__(self, states):
        self._states = states

    def states(self):
        return dict(self._states)


def daemon_with(states):
    config = build_config({
        "models": {"people": {"path": "people.onnx", "backend": "tensorrt"}},
        "streams": {"door": {"source": "rtsp://user:pw@cam/door", "model": "people"}},
    })  # fmt: skip
    # a daemon that is still loading its model: no stream runs yet
    snapshot = empty_snapshot(config)
    return types.SimpleNamespace(snapshot=lambda: snapshot, engines=EngineStates(states))


def test_a_stream_waiting_for_its_engine_build_is_published_as_building():
    building = {"state": "building", "fraction": 0.45, "phase": "build", "detail": "",
                "message": "building engine people: 45% build"}  # fmt: skip
    states = DaemonAdapter(daemon_with({"people": building})).stream_states()
    status, model = states["door"]
    assert model == "people"
    assert status["state"] == "stopped"
    assert status["engine"] == {
        "state": "building", "fraction": 0.45, "phase": "build",
        "message": "building engine people: 45% build",
    }  # fmt: skip
    assert "pw" not in status["source"]
    payload = json.loads(stream_state_payload("dev", status, model, time.time()))
    jsonschema.validate(payload, load_schema("stream-state"))
    assert payload["engine"]["state"] == "building"


def test_no_build_no_waiting_stream():
    assert DaemonAdapter(daemon_with({})).stream_states() == {}
    ready = {"state": "ready", "fraction": 1.0, "phase": "", "detail": "", "message": ""}
    assert DaemonAdapter(daemon_with({"people": ready})).stream_states() == {}

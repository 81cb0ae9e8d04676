"""The operator's commands (``edged keygen``, ``keys``, ``sign``) as a user runs them, and the
chunk protocol's frames: what they write is what a device accepts."""

import json
import os
import subprocess
import sys
import time

import pytest

from edged.errors import UpdateError
from edged.signing import canonical, keys
from edged.update import protocol
from edged.update.manifest import Installed, check

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(REPO, "models", "peoplenet-demo", "peoplenet_demo.onnx")
LABELS = os.path.join(REPO, "models", "peoplenet-demo", "labels.txt")


def edged(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "edged", *args],
        cwd=str(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,
        timeout=120,
    )


def test_keygen_keys_sign_make_a_manifest_a_device_accepts(tmp_path):
    assert edged(tmp_path, "keygen", "op").returncode == 0
    assert oct(os.stat(str(tmp_path / "op.key")).st_mode & 0o777) == "0o600"
    again = edged(tmp_path, "keygen", "op")
    assert again.returncode == 2 and "not overwriting" in again.stderr
    r = edged(tmp_path, "keys", "op.pub", "--version", "1", "--sign", "op.key", "-o", "keys.json")
    assert r.returncode == 0, r.stderr
    (tmp_path / "task.json").write_text(json.dumps({"task": "detection"}))
    r = edged(tmp_path, "sign", "--model", "peoplenet", "--version", "3",
              "--file", "model=" + MODEL, "--file", "labels=" + LABELS,
              "--config", "task.json", "--group", "site-a", "--key", "op.key",
              "-o", "m.json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    trusted, _, _ = keys.parse_keylist(json.loads((tmp_path / "keys.json").read_text()), "k")
    m = check((tmp_path / "m.json").read_bytes(), trusted, Installed(2, 0), "jetson-7",
              ["site-a"], int(time.time()), 1 << 40)  # fmt: skip
    assert m.model_file.name == "peoplenet_demo.onnx" and m.model_file.size == os.path.getsize(
        MODEL
    )
    assert m.config == {"task": "detection"} and m.version == 3
    key_text = (tmp_path / "op.key").read_text().strip()
    assert key_text not in r.stdout + r.stderr + (tmp_path / "m.json").read_text()


def test_sign_refuses_bad_roles_and_missing_files(tmp_path):
    assert edged(tmp_path, "keygen", "op").returncode == 0
    for spec, message in (("weights=" + MODEL, "ROLE=PATH"), ("model=/nope.onnx", "cannot read")):
        r = edged(tmp_path, "sign", "--model", "m", "--version", "1", "--file", spec,
                  "--device", "d", "--key", "op.key", "-o", "m.json")  # fmt: skip
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr


def test_chunk_frames_round_trip_and_damage_is_caught():
    chunk = protocol.Chunk("ab" * 32, "model.onnx", 7, b"\x00\x01" * 100)
    frame = protocol.encode_chunk(chunk)
    assert protocol.decode_chunk(frame, 1024) == chunk
    damaged = bytearray(frame)
    damaged[-1] ^= 0xFF
    with pytest.raises(UpdateError, match="damaged"):
        protocol.decode_chunk(bytes(damaged), 1024)
    with pytest.raises(UpdateError, match="more than the chunk size"):
        protocol.decode_chunk(frame, 100)
    for bad in (b"", b"\xff\xff", b"\x00\x05{bad}"):
        with pytest.raises(UpdateError):
            protocol.decode_chunk(bad, 1024)


def test_requests_are_bounded_and_topics_name_their_device():
    request = protocol.ChunkRequest("ab" * 32, "model.onnx", [(0, 4), (9, 10)])
    assert protocol.ChunkRequest.decode(request.encode()) == request
    with pytest.raises(UpdateError):
        protocol.ChunkRequest.decode(b'{"update":"x","file":"f","ranges":[[5,2]]}')
    with pytest.raises(UpdateError):
        protocol.ChunkRequest.decode(b"[" * 100000)
    t = protocol.UpdateTopics("edged", "jetson-1", ["site-a"])
    assert t.desired_topics == [
        "edged/jetson-1/update/desired",
        "edged/groups/site-a/update/desired",
    ]
    assert protocol.device_of(t.request, "edged", "request") == "jetson-1"
    assert protocol.device_of("edged/a/b/update/request", "edged", "request") == ""


def test_edged_watch_shows_update_progress_and_outcome():
    from edged.cli.watch import Watcher

    watcher = Watcher("edged")
    receiving = {"device": "jetson-1", "model": "det", "version": 2, "state": "RECEIVING",
                 "received": 45, "chunks": 121, "reason": ""}  # fmt: skip
    line = watcher.line("edged/jetson-1/update/status", json.dumps(receiving).encode())
    assert line.endswith("jetson-1 update det v2 RECEIVING 45/121 chunks")
    rolled = dict(receiving, state="ROLLED_BACK", reason="canary: output cov has NaN or Inf")
    line = watcher.line("edged/jetson-1/update/status", json.dumps(rolled).encode())
    assert line.endswith("update det v2 ROLLED_BACK: canary: output cov has NaN or Inf")


def test_a_device_pins_only_a_key_list_signed_by_its_own_keys(tmp_path):
    a, b = keys.generate(), keys.generate()
    path = tmp_path / "keys.json"
    keylist = keys.make_keylist([a.public, b.public], 2, 1)
    path.write_bytes(canonical.encode(keys.sign_keylist(keylist, [a, b])))
    assert keys.read_keylist(str(path), int(time.time())).threshold == 2
    path.write_bytes(canonical.encode(keys.sign_keylist(keylist, [a])))
    with pytest.raises(UpdateError, match="not signed by 2 of its own keys"):
        keys.read_keylist(str(path), int(time.time()))
    with pytest.raises(UpdateError, match="cannot read the key list"):
        keys.read_keylist(str(tmp_path / "missing.json"), 0)

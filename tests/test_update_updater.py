"""The device-side update executor, table-driven: an error, a hang and a kill in every state.

Stand-ins (named as such): ``StandInDeployer`` replaces the daemon's model slots (loading a
model, TensorRT, the streams), ``StandInOperator`` replaces the broker and ``edged push`` (it
answers chunk requests in memory). Files, journals, threads and timeouts are real. A "kill" is
the process dying right after the journal persisted a state: the updater is abandoned mid-way
and a new one starts on the same state directory, with a new stand-in deployer whose old model
serves (what a restarted daemon loads). Every row asserts the exact end state and which model
serves: the old one or the new verified one, never neither, never an unverified one.
"""

import hashlib
import json
import os
import time

import pytest

from edged.config.model import Config, UpdateConfig
from edged.errors import StagingError, UpdateError
from edged.signing import canonical, keys
from edged.update import journal as j
from edged.update import protocol
from edged.update import updater as updater_module
from edged.update.manifest import FileEntry, UpdateLimits, make, sign_manifest
from edged.update.seams import Transport
from edged.update.store import SlotStore
from edged.update.updater import Updater
from edged.update.wiring import settings_from_config
from tests.update_standins import Hang, StandInDeployer

CHUNK = 1024
MODEL = os.urandom(20 * CHUNK + 77)
LABELS = b"person\nbag\n"
FILES = {"model.onnx": MODEL, "labels.txt": LABELS}
PREFIX = "edged"
DEVICE = "jetson-1"
SAFETY_S = 20  # a generous safety timeout, never an assertion about speed


@pytest.fixture(scope="module")
def operator():
    return keys.generate()


@pytest.fixture(scope="module")
def trusted(operator):
    return keys.make_keylist([operator.public], 1, 1)


def envelope(operator, version=2, created=None, **changes):
    now = int(time.time())
    values = dict(
        model="det", version=version,
        files=[FileEntry("model.onnx", "model", len(MODEL), hashlib.sha256(MODEL).hexdigest()),
               FileEntry("labels.txt", "labels", len(LABELS),
                         hashlib.sha256(LABELS).hexdigest())],
        config={"task": "detection"}, devices=[DEVICE], groups=[],
        created=created or now, expires=now + 3600, chunk_bytes=CHUNK,
    )  # fmt: skip
    values.update(changes)
    return sign_manifest(make(**values), [operator])


class StandInOperator(Transport):
    """Stands in for the broker and ``edged push``: answers chunk requests in memory."""

    def __init__(self, files=FILES):
        self.files = files
        self.updater = None
        self.serve = True
        self.flip_once = set()  # (file, index) to damage once
        self.published = []  # (topic, payload, retain)
        self.requested = []  # (file, index)

    def subscribe(self, topics):
        self.topics = list(topics)

    def publish(self, topic, payload, retain=False):
        self.published.append((topic, payload, retain))
        if not topic.endswith("/update/request") or not self.serve:
            return
        request = protocol.ChunkRequest.decode(payload)
        for start, end in request.ranges:
            for index in range(start, end):
                self.requested.append((request.file, index))
                data = self.files[request.file][index * CHUNK : (index + 1) * CHUNK]
                frame = bytearray(protocol.encode_chunk(
                    protocol.Chunk(request.update, request.file, index, data)))  # fmt: skip
                if (request.file, index) in self.flip_once:
                    self.flip_once.discard((request.file, index))
                    frame[-1] ^= 0x01
                self.updater.on_message(f"{PREFIX}/{DEVICE}/update/chunk", bytes(frame))

    def statuses(self):
        return [json.loads(p) for t, p, _ in self.published if t.endswith("/update/status")]


def settings(tmp_path, **changes):
    """The config's defaults, shrunk for tests, with ``changes``."""
    values = dict(prefix=PREFIX, probation_s=0.3, window=4, request_timeout_s=0.5,
                  transfer_stall_s=30, step_timeout_s=30, build_timeout_s=30)  # fmt: skip
    values.update(changes)
    config = Config(device_id=DEVICE, update=UpdateConfig(state_dir=str(tmp_path)))
    return settings_from_config(config)._replace(**values)


def started(tmp_path, trusted, deployer=None, transport=None, **changes):
    deployer = deployer or StandInDeployer()
    transport = transport or StandInOperator()
    updater = Updater(settings(tmp_path, **changes), trusted, transport, deployer)
    transport.updater = updater
    updater.start()
    return updater, deployer, transport


def wait_for(predicate, what):
    deadline = time.monotonic() + SAFETY_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def push(updater, data):
    updater.on_message(f"{PREFIX}/{DEVICE}/update/desired", data)


def final(updater):
    finals = (j.COMMITTED, j.ROLLED_BACK)
    # the journal first, then its status (published after the state's work)
    wait_for(lambda: updater.journal.state in finals, "a final state")
    wait_for(lambda: updater.status.get("state") in finals, "its status")
    return updater.journal


def test_a_push_is_received_verified_built_tried_and_committed(tmp_path, operator, trusted):
    updater, deployer, transport = started(tmp_path, trusted)
    transport.flip_once = {("model.onnx", 3)}  # a chunk damaged on the way: asked for again
    push(updater, envelope(operator))
    journal = final(updater)
    updater.stop()
    assert journal.state == j.COMMITTED and deployer.serving == "v2"
    assert [h[0] for h in journal.history] == [
        j.RECEIVING,
        j.RECEIVED,
        j.VERIFIED,
        j.STAGED,
        j.BUILT,
        j.CANARY,
        j.PROBATION,
        j.COMMITTED,
    ]
    assert updater.damaged == 1 and transport.requested.count(("model.onnx", 3)) == 2
    store = SlotStore(str(tmp_path), "det")
    assert store.installed().version == 2 and store.versions() == [2]
    assert store.load_journal() == journal  # persisted
    last = transport.statuses()[-1]
    assert last["state"] == "COMMITTED" and last["device"] == DEVICE and last["version"] == 2
    assert all(retain for t, _, retain in transport.published if t.endswith("/status"))


def test_the_window_bounds_chunks_in_flight(tmp_path, operator, trusted):
    transport = StandInOperator()
    in_flight = []
    original = transport.publish

    def counting(topic, payload, retain=False):
        if topic.endswith("/update/request"):
            request = protocol.ChunkRequest.decode(payload)
            in_flight.append(sum(b - a for a, b in request.ranges))
        original(topic, payload, retain)

    transport.publish = counting
    updater, _, _ = started(tmp_path, trusted, transport=transport, window=3)
    push(updater, envelope(operator))
    assert final(updater).state == j.COMMITTED
    updater.stop()
    assert in_flight and max(in_flight) <= 3


REFUSALS = [
    ("unknown key", lambda op: envelope(keys.generate()), "unknown keys"),
    ("bad signature", lambda op: envelope(op).replace(b'"version":2', b'"version":9'),
     "bad signature"),
    ("expired", lambda op: envelope(op, expires=int(time.time()) - 1), "expired"),
    ("not for this device", lambda op: envelope(op, devices=["other"]), "not for this device"),
    ("too large", lambda op: envelope(op), "more than the"),
    ("a key in the config", None, "model key"),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS, ids=[c[0] for c in REFUSALS])
def test_refusals_come_before_any_chunk(tmp_path, operator, trusted, case):
    name, make_data, message = case
    limits = UpdateLimits(max_total_bytes=1000) if name == "too large" else UpdateLimits()
    updater, deployer, transport = started(tmp_path, trusted, limits=limits)
    if make_data is None:  # what edged sign refuses to make, signed by hand
        signed = json.loads(envelope(operator))["signed"]
        signed["config"]["key"] = "nvidia_tlt"
        sig = keys.sign(operator, canonical.encode(signed))
        data = canonical.encode({"signed": signed, "signatures": [sig]})
    else:
        data = make_data(operator)
    push(updater, data)
    wait_for(lambda: transport.statuses(), "a status")
    updater.stop()
    status = transport.statuses()[-1]
    assert status["state"] == "REFUSED" and message in status["reason"], status
    assert transport.requested == [] and deployer.calls == []
    assert "nvidia_tlt" not in json.dumps(transport.statuses())


def test_downgrade_and_replay_are_refused(tmp_path, operator, trusted):
    updater, deployer, transport = started(tmp_path, trusted)
    v2 = envelope(operator, version=2)
    push(updater, v2)
    assert final(updater).state == j.COMMITTED
    for data, message in ((envelope(operator, version=1), "not newer"),
                          (envelope(operator, version=1, downgrade=True,
                                    created=int(time.time()) - 100), "a replay")):  # fmt: skip
        before = len(transport.statuses())
        push(updater, data)
        wait_for(lambda n=before: len(transport.statuses()) > n, "a refusal")
        assert message in transport.statuses()[-1]["reason"]
    asked = len(transport.requested)
    push(updater, v2)  # the retained desired state again: reported, never re-run
    time.sleep(0.2)
    updater.stop()
    assert len(transport.requested) == asked and deployer.serving == "v2"


# -- the fault table: (state, how the fault is injected) --------------------------------------


def fault_in(state, fault, deployer, transport, monkeypatch):
    """Install ``fault`` (an exception or a Hang) on the work of ``state``."""
    if state == j.RECEIVING:
        if isinstance(fault, Hang):
            transport.serve = False  # no chunk ever comes
        else:
            monkeypatch.setattr(SlotStore, "write_chunk", _raise(StagingError("chunk: disk full")))
    elif state == j.RECEIVED:
        monkeypatch.setattr(
            SlotStore, "verify", fault if isinstance(fault, Hang) else _raise(fault)
        )
    elif state == j.VERIFIED:
        monkeypatch.setattr(
            SlotStore, "promote", fault if isinstance(fault, Hang) else _raise(fault)
        )
    else:
        deployer.faults[{j.STAGED: "load", j.CANARY: "canary", j.PROBATION: "healthy"}[state]] = (
            fault
        )


def _raise(error):
    def raising(*args, **kwargs):
        raise error

    return raising


# BUILT has no work of its own (the canary belongs to CANARY): its rows are in the kill table
WORKING = [j.RECEIVING, j.RECEIVED, j.VERIFIED, j.STAGED, j.CANARY, j.PROBATION]


@pytest.mark.parametrize("kind", ["error", "hang"])
@pytest.mark.parametrize("state", WORKING)
def test_an_error_or_a_hang_in_every_state_rolls_back(tmp_path, operator, trusted, monkeypatch,
                                                      state, kind):  # fmt: skip
    deployer, transport = StandInDeployer(), StandInOperator()
    fault = Hang() if kind == "hang" else UpdateError(f"injected in {state}")
    fault_in(state, fault, deployer, transport, monkeypatch)
    # a hang is found by its step's timeout; the other steps must not reach theirs on a busy
    # machine (an error needs no timeout at all)
    limit = 2.0 if kind == "hang" else 60.0
    timeouts = dict(step_timeout_s=limit, build_timeout_s=limit, transfer_stall_s=limit)
    updater, _, _ = started(tmp_path, trusted, deployer, transport, probation_s=5, **timeouts)
    push(updater, envelope(operator))
    journal = final(updater)
    updater.stop()
    if isinstance(fault, Hang):
        fault.release.set()
    assert journal.state == j.ROLLED_BACK and deployer.serving == "old", journal
    path = [h[0] for h in journal.history]
    assert path[-2:] == [j.FAILED, j.ROLLED_BACK] and path[-3] == state, path
    store = SlotStore(str(tmp_path), "det")
    assert store.installed().version == 0 and store.versions() == []
    assert not os.path.exists(store.staging_dir(journal.manifest_sha256))
    assert SlotStore(str(tmp_path), "det").load_journal().state == j.ROLLED_BACK


def test_nan_in_probation_rolls_back(tmp_path, operator, trusted):
    deployer = StandInDeployer({"healthy": "output has NaN"})
    updater, _, _ = started(tmp_path, trusted, deployer, probation_s=5)
    data = envelope(operator)
    push(updater, data)
    journal = final(updater)
    updater.stop()
    assert journal.state == j.ROLLED_BACK and deployer.serving == "old"
    assert journal.reason == "output has NaN" and "switch" in deployer.calls
    # the same manifest again (a retained re-delivery, a second push): answered, not retried
    again, _, transport = started(tmp_path, trusted, StandInDeployer())
    push(again, data)
    wait_for(lambda: transport.statuses(), "an answer")
    again.stop()
    assert transport.statuses()[-1]["state"] == "ROLLED_BACK" and transport.requested == []


#: after a kill right after persisting a state: resumed to the new model, or rolled back
AFTER_KILL = {j.RECEIVING: j.COMMITTED, j.RECEIVED: j.COMMITTED, j.VERIFIED: j.COMMITTED,
              j.STAGED: j.COMMITTED, j.BUILT: j.COMMITTED, j.CANARY: j.ROLLED_BACK,
              j.PROBATION: j.ROLLED_BACK, j.FAILED: j.ROLLED_BACK}  # fmt: skip


@pytest.mark.parametrize("state", sorted(AFTER_KILL, key=j.STATES.index))
def test_a_kill_in_every_state_resumes_or_rolls_back(tmp_path, operator, trusted, monkeypatch,
                                                     state):  # fmt: skip
    hang = Hang()
    real_save = SlotStore.save_journal

    def save_then_die(self, journal):
        real_save(self, journal)
        # only this test's updater: an abandoned one of an earlier case, released at its end,
        # may still be saving journals in its own directory through this patched method
        mine = self.root.startswith(str(tmp_path))
        if mine and journal.state == state and not (state == j.RECEIVING and journal.stores == 1):
            hang()  # the process is gone: nothing after this point happens

    monkeypatch.setattr(SlotStore, "save_journal", save_then_die)
    first = StandInDeployer({"canary": UpdateError("canary failed")} if state == j.FAILED else {})
    transport = StandInOperator()
    if state == j.RECEIVING:
        # the transfer is cut half-way; the restart re-persists RECEIVING ("resumed")
        monkeypatch.setattr(updater_module, "CHECKPOINT_EVERY", 4)
        served = []
        original = transport.publish

        def half(topic, payload, retain=False):
            if topic.endswith("/update/request") and len(served) >= 10:
                hang()
            served.append(topic)
            original(topic, payload, retain)

        transport.publish = half
    updater, _, _ = started(tmp_path, trusted, first, transport)
    push(updater, envelope(operator))
    assert hang.entered.wait(SAFETY_S), f"never reached {state}"
    updater._stop.set()  # abandoned: its threads stay blocked, as if killed

    monkeypatch.setattr(SlotStore, "save_journal", real_save)
    second = StandInDeployer()
    again, _, transport2 = started(tmp_path, trusted, second)
    journal = final(again)
    again.stop()
    hang.release.set()
    assert journal.state == AFTER_KILL[state], journal
    assert second.serving == ("v2" if journal.state == j.COMMITTED else "old")
    if state == j.RECEIVING:
        # resumed: the chunks that were on disk are not asked for again
        assert 0 < len(transport2.requested) <= 22 - 8
    store = SlotStore(str(tmp_path), "det")
    assert store.installed().version == (2 if journal.state == j.COMMITTED else 0)
    assert "resumed after a restart" in [h[1] for h in journal.history] or state in (
        j.CANARY,
        j.PROBATION,
        j.FAILED,
    )

"""edged.sdnotify against a real AF_UNIX datagram socket standing in for systemd."""

import logging
import os
import shutil
import socket
import tempfile
import threading
import uuid

import pytest

from edged import sdnotify
from edged.sdnotify import Notifier, SystemdNotifier, TimeoutExtender


class NotifyReceiver:
    """The systemd end of NOTIFY_SOCKET: a bound SOCK_DGRAM socket that parses messages."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def receive(self, timeout: float = 5.0) -> dict:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        return parse(data)

    def pending(self) -> list:
        """Every message already queued (a datagram is queued before sendto returns)."""
        self.sock.setblocking(False)
        messages = []
        while True:
            try:
                messages.append(parse(self.sock.recv(65536)))
            except BlockingIOError:
                return messages

    def close(self) -> None:
        self.sock.close()


def parse(data: bytes) -> dict:
    text = data.decode("utf-8")
    assert text.endswith("\n"), "each assignment ends with a newline"
    return dict(line.split("=", 1) for line in text.splitlines())


@pytest.fixture
def short_dir():
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = tempfile.mkdtemp(prefix="sdn")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def receiver(short_dir):
    path = os.path.join(short_dir, "notify.sock")
    recv = NotifyReceiver(path)
    recv.path = path
    yield recv
    recv.close()


def test_ready_arrives_as_one_datagram_on_the_notify_socket(receiver):
    notifier = SystemdNotifier(receiver.path)

    assert notifier.ready(status="2 streams streaming") is True

    assert receiver.receive() == {"READY": "1", "STATUS": "2 streams streaming"}
    notifier.close()


def test_notifier_from_environment_uses_NOTIFY_SOCKET(receiver, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", receiver.path)

    notifier = sdnotify.from_environment()
    notifier.status("loading models")

    assert notifier.enabled
    assert receiver.receive() == {"STATUS": "loading models"}
    notifier.close()


def test_abstract_namespace_socket_is_addressed_with_leading_nul():
    name = f"edged-test-{uuid.uuid4().hex}"
    abstract = NotifyReceiver("\0" + name)
    try:
        notifier = SystemdNotifier("@" + name)
        assert notifier.watchdog() is True
        assert abstract.receive() == {"WATCHDOG": "1"}
        notifier.close()
    finally:
        abstract.close()


def test_without_NOTIFY_SOCKET_every_call_is_a_silent_noop(monkeypatch, caplog):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    caplog.set_level(logging.DEBUG, logger="edged.sdnotify")

    notifier = sdnotify.from_environment()

    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.extend_timeout(30) is False
    assert notifier.stopping() is False
    assert caplog.records == []


def test_unusable_NOTIFY_SOCKET_disables_notifications_with_one_warning(caplog):
    notifier = SystemdNotifier("vsock:2:1234")

    assert not notifier.enabled
    assert notifier.ready() is False
    assert [r.levelname for r in caplog.records] == ["WARNING"]


def test_status_text_stays_on_one_line(receiver):
    notifier = SystemdNotifier(receiver.path)

    notifier.status("camera cam0 stalled\nreconnecting")

    assert receiver.receive() == {"STATUS": "camera cam0 stalled reconnecting"}
    notifier.close()


def test_extend_timeout_sends_microseconds(receiver):
    notifier = SystemdNotifier(receiver.path)

    notifier.extend_timeout(90, status="building engine peoplenet (1/2)")

    assert receiver.receive() == {
        "EXTEND_TIMEOUT_USEC": "90000000",
        "STATUS": "building engine peoplenet (1/2)",
    }
    notifier.close()


def test_stopping_and_reloading_messages(receiver):
    notifier = SystemdNotifier(receiver.path)

    notifier.reloading(status="reloading config")
    reload_msg = receiver.receive()
    notifier.stopping()

    assert reload_msg["RELOADING"] == "1"
    assert int(reload_msg["MONOTONIC_USEC"]) > 0
    assert reload_msg["STATUS"] == "reloading config"
    assert receiver.receive() == {"STOPPING": "1"}
    notifier.close()


def test_field_names_must_be_upper_case_words():
    with pytest.raises(ValueError):
        sdnotify.format_message({"ready": 1})
    with pytest.raises(ValueError):
        sdnotify.format_message({"READY=1\nWATCHDOG": 1})


def test_send_failures_are_logged_once_then_recovery_is_logged(short_dir, caplog):
    caplog.set_level(logging.INFO, logger="edged.sdnotify")
    path = os.path.join(short_dir, "later.sock")
    notifier = SystemdNotifier(path)  # nobody listens yet: ENOENT

    results = [notifier.watchdog() for _ in range(5)]

    assert results == [False] * 5
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert path in warnings[0].getMessage()

    caplog.clear()
    late = NotifyReceiver(path)
    try:
        assert notifier.watchdog() is True
        assert late.receive() == {"WATCHDOG": "1"}
        assert [r.levelname for r in caplog.records] == ["INFO"]
    finally:
        late.close()
        os.unlink(path)

    caplog.clear()
    assert notifier.watchdog() is False
    assert notifier.watchdog() is False
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    notifier.close()


def test_watchdog_interval_is_half_of_WATCHDOG_USEC():
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0


def test_watchdog_interval_is_none_without_WATCHDOG_USEC():
    assert sdnotify.watchdog_interval({}) is None


def test_watchdog_interval_checks_WATCHDOG_PID_like_sd_watchdog_enabled():
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}

    assert sdnotify.watchdog_interval(env, pid=4242) == 15.0
    assert sdnotify.watchdog_interval(env, pid=4243) is None
    assert (
        sdnotify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
        == 15.0
    )


def test_watchdog_interval_ignores_malformed_values(caplog):
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "x"}) is None
    assert len(caplog.records) == 3


def test_extend_timeout_usec_rounds_to_whole_microseconds():
    assert sdnotify.extend_timeout_usec(1.5) == 1500000
    assert sdnotify.extend_timeout_usec(1e-9) == 1
    with pytest.raises(ValueError):
        sdnotify.extend_timeout_usec(0)


def test_null_notifier_accepts_every_call():
    notifier = Notifier()

    assert notifier.ready("x") is False
    assert notifier.reloading() is False
    notifier.close()


def test_timeout_extender_resends_extension_while_the_slow_step_runs(receiver):
    notifier = SystemdNotifier(receiver.path)

    with TimeoutExtender(notifier, "building engine demo", extend_s=90, period_s=0.01):
        first = receiver.receive()
        repeats = [receiver.receive() for _ in range(3)]

    assert first == {"EXTEND_TIMEOUT_USEC": "90000000", "STATUS": "building engine demo"}
    assert all(m == {"EXTEND_TIMEOUT_USEC": "90000000"} for m in repeats)
    assert not [t for t in threading.enumerate() if t.name == "sd-extend-timeout"]
    notifier.close()


def test_timeout_extender_gives_up_after_max_total(receiver, caplog):
    notifier = SystemdNotifier(receiver.path)
    now = [0.0]

    def clock():
        now[0] += 10.0  # every look at the clock is ten seconds later
        return now[0]

    extender = TimeoutExtender(
        notifier, "stuck build", extend_s=60, period_s=0.001, max_total_s=25.0, clock=clock
    )
    extender.start()
    extender._thread.join(timeout=10)

    assert not extender._thread.is_alive()
    extender.stop()
    messages = receiver.pending()
    extensions = [int(m["EXTEND_TIMEOUT_USEC"]) for m in messages]
    # start + resends while time remains; the last one never exceeds what is left
    assert extensions[0] == 60000000
    assert all(e <= 25000000 for e in extensions[1:])
    assert any("no longer extending" in r.getMessage() for r in caplog.records)
    notifier.close()

"""A second client with our MQTT client id (Mosquitto's test 07-will-takeover): detected,
alarmed, no endless takeover. The detector's rules on their own, then two real clients on a real
Mosquitto."""

import logging
import random
import time

import pytest

from edged.mqtt import link, takeover
from edged.mqtt.takeover import TakeoverDetector

from .mosquitto import Mosquitto, stop_all_brokers, wait_for
from .test_mqtt_broker import DEVICE, make_service

pytestmark = pytest.mark.timeout(120)


def detector(**kwargs):
    return TakeoverDetector("edged-dev1", stable_s=10.0, short_connections=3, holdoff_s=100.0,
                            rng=random.Random(1), **kwargs)  # fmt: skip


def test_three_short_connections_in_a_row_raise_the_alarm_once(caplog):
    d = detector()
    for _ in range(2):
        d.connection_ended(2.0)
    assert not d.suspected and d.delay(1.5) == 1.5
    d.connection_ended(0.5)
    assert d.suspected and d.alarms == 1
    assert 80.0 <= d.delay(1.5) <= 120.0  # the hold-off with +-20 % jitter, not the backoff
    d.connection_ended(0.5)
    assert d.alarms == 1  # still the same episode: one ERROR line, not one per drop
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "edged-dev1" in errors[0].getMessage()


def test_a_stable_connection_clears_the_alarm_and_the_count():
    d = detector()
    for _ in range(3):
        d.connection_ended(1.0)
    assert d.suspected
    d.connection_ended(10.0)  # lasted stable_s
    assert not d.suspected and d.delay(2.0) == 2.0
    d.connection_ended(1.0)
    d.connection_ended(1.0)
    assert not d.suspected  # counting starts again
    d.connection_ended(1.0)
    assert d.suspected and d.alarms == 2


def test_short_connections_that_are_not_in_a_row_never_alarm():
    d = detector()
    for _ in range(10):
        d.connection_ended(1.0)
        d.connection_ended(1.0)
        d.connection_stable()  # e.g. a flaky link that comes good in between
    assert not d.suspected and d.alarms == 0


@pytest.fixture(autouse=True)
def _no_broker_outlives_its_test():
    yield
    stop_all_brokers()


TAKEOVER_LOG = "already connected, closing old connection"


def test_two_devices_with_one_device_id_stop_taking_the_session_from_each_other(
    tmp_path, monkeypatch, caplog
):
    """Two services with the same device_id (a cloned image) on a real Mosquitto: they kick
    each other off until the alarm; then one holds the connection and the takeovers stop."""
    monkeypatch.setattr(link, "STABLE_CONNECTION_S", 1.5)
    monkeypatch.setattr(takeover, "HOLDOFF_S", 60.0)  # longer than the test: no more attempts
    caplog.set_level(logging.ERROR, logger="edged.mqtt")
    broker = Mosquitto(str(tmp_path / "broker")).start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    twins = [make_service(broker, tmp_path / name) for name in ("a", "b")]
    assert twins[0].client_id == twins[1].client_id == f"edged-{DEVICE}"
    try:
        for service in twins:
            service.start()
        wait_for(lambda: broker.count_in_log(TAKEOVER_LOG) >= 1, 10, "a first takeover")
        wait_for(lambda: any(s.stats()["client_id_conflict"] for s in twins), 30, "the alarm")
        # settle: the holder's connection must stay up, nobody else tries for 60 s
        time.sleep(2.0)
        takeovers = broker.count_in_log(TAKEOVER_LOG)
        time.sleep(3.0)
        assert broker.count_in_log(TAKEOVER_LOG) == takeovers, "still taking turns"
        stats = [s.stats() for s in twins]
    finally:
        for service in twins:
            service.stop()
        broker.stop()
    assert sorted(s["connected"] for s in stats) == [False, True]  # one holds the session
    holder = [s for s in stats if s["connected"]][0]
    waiting = [s for s in stats if not s["connected"]][0]
    assert waiting["client_id_conflict"] is True and waiting["client_id_conflicts_total"] == 1
    assert holder["client_id_conflict"] is False  # its connection has been stable since
    assert takeovers < 20  # a few rounds, not an endless exchange
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any(f"client id edged-{DEVICE}" in m and "device_id" in m for m in messages)

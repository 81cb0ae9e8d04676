"""A full disk under the MQTT outbox, for real: a 2 MiB tmpfs mounted by the test and filled
with a file, a real Mosquitto and an independent subscriber counting what arrives.

While the disk is full results still reach the broker (from memory, counted not durable);
results that fit nowhere (the broker paused with SIGSTOP, memory full) are lost, counted
by reason, and leave exactly that many gaps in ``seq``; the outbox's files never take more
than ``max_bytes``; once the filler is removed the outbox is durable again by itself. The
log says it once when it starts, summarises, and once when it ends.
"""

import logging
import os
import signal
import threading
import time

import pytest

from edged.config import parse_config
from edged.mqtt.service import MqttService

from .mosquitto import Mosquitto, Subscriber, stop_all_brokers, wait_for
from .test_mqtt_broker import DEVICE, FAST, RESULTS, Feeder, StreamsOnlyDaemon, seqs_of
from .tmpfs import SmallDisk

pytestmark = pytest.mark.timeout(240)

MAX_BYTES = 1 << 20  # the outbox's budget on a 2 MiB disk
#: Allowed above MAX_BYTES in any sample: none (measured peak: see the printed figures).
MARGIN_BYTES = 0


class DiskWatch(threading.Thread):
    """Samples the outbox's disk use every 10 ms; keeps the largest."""

    def __init__(self, outbox):
        super().__init__(name="test-disk-watch", daemon=True)
        self.outbox = outbox
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, self.outbox.disk_bytes())
            self.stop.wait(0.01)


def lost(service):
    return sum(service.stats()["results_lost_total"].values())


def test_a_full_disk_sends_from_memory_counts_losses_as_gaps_and_recovers(tmp_path, caplog, capsys):
    disk = SmallDisk(str(tmp_path / "state"), 2 << 20)
    broker = Mosquitto(str(tmp_path / "broker")).start()
    subscriber = Subscriber(broker, [RESULTS], client_id="full-disk-check")
    subscriber.wait_subscribed()
    path = os.path.join(disk.directory, "outbox.sqlite3")
    config = parse_config(
        f"device_id: {DEVICE}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, {FAST}, "
        f"outbox: {{path: {path}, max_bytes: {MAX_BYTES}, commit_interval_ms: 20}}}}\n"
    )
    service = MqttService(config.mqtt, DEVICE, StreamsOnlyDaemon(), threading.Event())
    outbox = service.outbox
    outbox.memory_max_bytes = 30 * 700  # about 30 results: fills within a second at 50/s
    outbox.probe_interval_s = 0.2
    outbox.full.summary_interval_s = 2.0
    feeder = Feeder(service, rate=50.0)
    watch = DiskWatch(outbox)
    paused = False
    caplog.set_level(logging.INFO, logger="edged")
    try:
        service.start()
        watch.start()
        wait_for(lambda: service.connected, 10, "the service to connect")
        feeder.start()
        wait_for(lambda: len(seqs_of(subscriber)) >= 50, 30, "50 results (durable)")
        assert service.stats()["results_not_durable_total"] == 0

        disk.fill()
        full_at = time.monotonic()
        # the broker pauses: the backlog needs new pages, the disk has none; memory fills up
        broker.proc.send_signal(signal.SIGSTOP)
        paused = True
        wait_for(lambda: not outbox.durable, 30, "the outbox to find the disk full")
        wait_for(lambda: lost(service) >= 5, 30, "results lost: disk and memory full")
        broker.proc.send_signal(signal.SIGCONT)
        paused = False
        # the broker is back, the disk still full: results reach it from memory
        not_durable = service.stats()["results_not_durable_total"]
        given = feeder.seqs[-1]
        wait_for(
            lambda: (
                service.stats()["results_not_durable_total"] >= not_durable + 100
                and max(seqs_of(subscriber)) >= given + 100
            ),
            60,
            "100 more results at the broker, not durable",
        )
        wait_for(lambda: caplog.text.count("still full") >= 2, 30, "two summaries in the log")
        assert not outbox.durable and disk.free() < outbox.budget.wal_bytes

        disk.unfill()
        wait_for(lambda: outbox.durable, 30, "the outbox to write again")
        ended_at = time.monotonic()
        at_recovery = service.stats()
        given = feeder.seqs[-1]
        wait_for(lambda: feeder.seqs[-1] >= given + 100, 30, "100 more results (durable)")
        feeder.stop.set()
        feeder.join(5)
        last = feeder.seqs[-1]
        lost_n = lost(service)
        wait_for(
            lambda: len(set(seqs_of(subscriber))) >= last + 1 - lost_n,
            60,
            "every result not lost at the subscriber",
        )
        wait_for(lambda: service.stats()["outbox_messages"] == 0, 30, "the outbox to empty")
        stats = service.stats()
    finally:
        if paused:
            broker.proc.send_signal(signal.SIGCONT)
        feeder.stop.set()
        watch.stop.set()
        service.stop()
        subscriber.close()
        stop_all_brokers()
        disk.unmount()

    arrived = set(seqs_of(subscriber))
    missing = sorted(set(range(last + 1)) - arrived)
    assert feeder.seqs == list(range(last + 1))
    assert stats["results_lost_total"]["disk_full"] == lost_n == len(missing) >= 5
    assert sum(stats["results_lost_total"].values()) == lost_n  # no other reason
    # durable again: nothing more sent from memory, nothing more lost after the recovery
    assert stats["results_not_durable_total"] == at_recovery["results_not_durable_total"]
    assert sum(at_recovery["results_lost_total"].values()) == lost_n
    assert stats["outbox_durable"] is True and stats["outbox_memory_messages"] == 0
    assert watch.peak <= MAX_BYTES + MARGIN_BYTES, (watch.peak, MAX_BYTES)

    outbox_lines = [r for r in caplog.records if r.name == "edged.mqtt.outbox"]
    starts = [r for r in outbox_lines if "cannot write" in r.getMessage()]
    summaries = [r for r in outbox_lines if "still full" in r.getMessage()]
    ends = [r for r in outbox_lines if "writing again" in r.getMessage()]
    assert len(starts) == 1 and len(ends) == 1 and len(summaries) >= 2
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    offset = time.time() - time.monotonic()  # log records carry wall-clock times
    while_full = [r for r in caplog.records if full_at <= r.created - offset <= ended_at]
    with capsys.disabled():
        minutes = (ended_at - full_at) / 60.0
        print(
            f"\nfull disk: {ended_at - full_at:.1f} s; {len(while_full)} lines logged by edged "
            f"({len(while_full) / minutes:.0f}/min; summaries every "
            f"{outbox.full.summary_interval_s:.0f} s here, 60 s by default); "
            f"{stats['results_not_durable_total']} results sent not durable, {lost_n} lost "
            f"({len(missing)} gaps in seq); outbox disk use peak {watch.peak} bytes "
            f"(bound {MAX_BYTES})"
        )

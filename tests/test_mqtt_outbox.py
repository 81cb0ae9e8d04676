"""The durable MQTT outbox on real files and SQLite, with a real ``kill -9``."""

import logging
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edged.errors import PublishError
from edged.mqtt.outbox import Outbox

from .conftest import REPO
from .tmpfs import SmallDisk


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def open_outbox(tmp_path, **kwargs):
    kwargs.setdefault("clock", FakeClock())
    outbox = Outbox(str(tmp_path / "outbox.sqlite3"), **kwargs)
    outbox.open()
    return outbox


def add(outbox, stream, n=1, size=10):
    seqs = []
    for _ in range(n):
        seqs.append(
            outbox.append_result(
                stream, lambda s: ("t/" + stream, b"x" * size + str(s).encode()), 1
            )
        )
    return seqs


def test_only_committed_messages_are_handed_out_and_commits_are_batched_by_time(tmp_path):
    clock = FakeClock()
    outbox = open_outbox(tmp_path, commit_interval_s=0.05, commit_batch=1000, clock=clock)
    add(outbox, "cam", 3)
    assert outbox.pending(0, 10) == []  # not on disk yet: nothing may be published
    assert outbox.next_due_in() == pytest.approx(0.05)
    clock.now = 0.049
    assert not outbox.flush_if_due()
    clock.now = 0.05
    assert outbox.flush_if_due()
    assert [m.payload for m in outbox.pending(0, 10)] == [
        b"x" * 10 + b"0",
        b"x" * 10 + b"1",
        b"x" * 10 + b"2",
    ]
    outbox.close()


def test_a_full_batch_commits_at_once(tmp_path):
    outbox = open_outbox(tmp_path, commit_batch=5)
    add(outbox, "cam", 5)
    assert len(outbox.pending(0, 10)) == 5
    outbox.close()


def test_messages_come_out_in_order_and_leave_only_when_removed(tmp_path):
    outbox = open_outbox(tmp_path)
    add(outbox, "a", 2)
    add(outbox, "b", 1)
    outbox.flush()
    first = outbox.pending(0, 10)
    assert [m.topic for m in first] == ["t/a", "t/a", "t/b"]
    assert outbox.pending(first[1].id, 10) == [first[2]]  # "everything after id N"
    assert outbox.remove([first[0].id, 99999]) == 1  # unknown ids are ignored
    outbox.flush()
    assert [m.id for m in outbox.pending(0, 10)] == [first[1].id, first[2].id]
    assert outbox.messages == 2 and outbox.bytes == sum(m.size for m in first[1:])
    outbox.close()


def test_messages_and_sequences_survive_a_reopen(tmp_path):
    outbox = open_outbox(tmp_path)
    assert add(outbox, "cam", 3) == [0, 1, 2]
    outbox.flush()
    outbox.remove([outbox.pending(0, 1)[0].id])  # the first one was acknowledged
    outbox.close()
    again = open_outbox(tmp_path)
    assert again.messages == 2
    assert [m.payload[-1:] for m in again.pending(0, 10)] == [b"1", b"2"]
    assert add(again, "cam", 1) == [3]  # seq keeps counting across restarts
    assert add(again, "other", 1) == [0]
    again.close()


def test_a_failing_build_writes_nothing_and_keeps_the_sequence(tmp_path):
    outbox = open_outbox(tmp_path)

    def too_big(seq):
        raise PublishError("too big")

    with pytest.raises(PublishError):
        outbox.append_result("cam", too_big, 1)
    assert add(outbox, "cam", 1) == [0]
    assert outbox.messages == 1
    outbox.close()


def test_a_full_outbox_drops_the_oldest_and_counts_them(tmp_path):
    outbox = open_outbox(tmp_path, max_bytes=256 << 10, commit_batch=1)
    rows = outbox.budget.data_bytes  # the rows' share of the budget
    assert add(outbox, "cam", 30, size=10000) == list(range(30))  # 300 kB: more than fits
    outbox.flush()
    kept = [int(m.payload[10000:]) for m in outbox.pending(0, 100)]
    assert kept == list(range(30 - len(kept), 30))  # the oldest went
    assert outbox.bytes <= rows and outbox.disk_bytes() <= outbox.max_bytes
    assert outbox.lost["outbox_full"] == outbox.dropped == 30 - len(kept) > 0
    # a message larger than the rows may be is lost and leaves a gap in seq
    assert outbox.append_result("cam", lambda s: ("t/cam", b"y" * (rows + 1)), 1) == 30
    assert outbox.lost["too_large"] == 1
    assert add(outbox, "cam", 1) == [31]
    outbox.close()


def test_a_second_process_cannot_use_the_same_outbox(tmp_path):
    outbox = open_outbox(tmp_path)
    script = textwrap.dedent(
        """
        import sys
        from edged.errors import PublishError
        from edged.mqtt.outbox import Outbox
        try:
            Outbox(sys.argv[1]).open()
        except PublishError as e:
            print(e)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, outbox.path],
        cwd=REPO,
        stdout=subprocess.PIPE,
        universal_newlines=True,
    )
    assert "is in use by another edged process" in done.stdout
    outbox.close()


def test_a_corrupt_outbox_is_moved_aside_and_edged_starts_empty(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    path.write_bytes(b"this is not sqlite" * 100)
    outbox = open_outbox(tmp_path)
    assert outbox.messages == 0
    assert any(p.name.startswith("outbox.sqlite3.corrupt-") for p in tmp_path.iterdir())
    add(outbox, "cam", 1)
    outbox.close()


WRITER = textwrap.dedent(
    """
    import sys, time
    from edged.mqtt.outbox import Outbox
    outbox = Outbox(sys.argv[1], commit_interval_s=0.05, commit_batch=1000)
    outbox.open()
    for i in range(200):
        outbox.append_result("cam", lambda s: ("t", b"result %d" % s), 1)
    while outbox.file.committed_id < 200:  # what the publisher thread does on every tick
        outbox.flush_if_due()
        time.sleep(0.01)
    for i in range(5):  # written, never committed: a crash takes them back
        outbox.append_result("cam", lambda s: ("t", b"result %d" % s), 1)
    print("COMMITTED", outbox.file.committed_id, flush=True)
    time.sleep(600)
    """
)


def test_committed_results_survive_kill_9_and_uncommitted_seqs_are_never_reused_visibly(tmp_path):
    path = str(tmp_path / "outbox.sqlite3")
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, path],
        cwd=REPO,
        stdout=subprocess.PIPE,
        universal_newlines=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("COMMITTED 200"), line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    outbox = Outbox(path)
    outbox.open()  # the dead process's lock went with it
    messages = outbox.pending(0, 1000)
    assert [m.payload for m in messages] == [b"result %d" % i for i in range(200)]
    assert outbox.seq("cam") == 199  # the 5 uncommitted seqs were never published: reused
    assert os.path.exists(path + "-wal") or os.path.getsize(path) > 0
    outbox.close()


def test_a_full_disk_keeps_results_in_memory_leaves_gaps_for_losses_and_recovers(tmp_path, caplog):
    disk = SmallDisk(str(tmp_path / "disk"), 2 << 20)  # a real 2 MiB tmpfs
    try:
        clock = FakeClock()
        path = os.path.join(disk.directory, "outbox.sqlite3")
        outbox = Outbox(path, max_bytes=1 << 20, commit_batch=1, clock=clock,
                        memory_max_bytes=20 * 1010, probe_interval_s=1.0)  # fmt: skip
        outbox.open()
        assert add(outbox, "cam", 5, size=1000) == list(range(5))
        disk.fill()
        with caplog.at_level(logging.INFO, logger="edged.mqtt.outbox"):
            assert add(outbox, "cam", 200, size=1000) == list(range(5, 205))
            assert not outbox.durable  # new pages were needed: the disk is full
            on_disk = outbox.messages
            held = outbox.memory_messages
            lost = outbox.lost["disk_full"]
            assert 0 < held <= 20 and lost > 0
            assert on_disk + held + lost == 205 and outbox.not_durable == held
            waiting = outbox.pending(0, 1000)
            ids = [m.id for m in waiting]
            assert ids == sorted(ids) and len(waiting) == on_disk + held
            arrived = {int(m.payload[1000:]) for m in waiting}
            assert len(set(range(205)) - arrived) == lost  # a gap for each lost result
            # acknowledged: memory has room again; the disk is still full
            outbox.remove(ids)  # deleting may need room too: then it waits, nothing is resent
            assert outbox.pending(0, 1000) == [] and outbox.messages == 0
            assert add(outbox, "cam", 3, size=1000) == [205, 206, 207]
            assert not outbox.durable and outbox.memory_messages == 3
            assert outbox.disk_bytes() <= outbox.max_bytes
            disk.unfill()
            clock.now += 1.0  # the next probe
            outbox.flush_if_due()
            assert outbox.durable
            assert add(outbox, "cam", 2, size=1000) == [208, 209]
            outbox.flush()
            assert outbox.memory_messages == 3 and outbox.messages == 2
        outbox.close()  # the 3 unacknowledged ones from memory go to disk now
        assert outbox.lost["not_durable_at_exit"] == 0
        again = Outbox(path)
        again.open()
        assert again.seq("cam") == 209 and again.messages == 5
        assert [int(m.payload[1000:]) for m in again.pending(0, 10)] == [205, 206, 207, 208, 209]
        again.close()
    finally:
        disk.unmount()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage().split(": ", 1)[1].split(" ", 2)[:2] for r in lines] == [
        ["cannot", "write"], ["writing", "again"]]  # fmt: skip
    assert not [r for r in caplog.records if r.exc_info]


def test_disk_use_stays_within_max_bytes_while_the_outbox_fills_drops_and_empties(tmp_path):
    disk = SmallDisk(str(tmp_path / "disk"), 2 << 20)  # a real 2 MiB tmpfs
    try:
        outbox = Outbox(os.path.join(disk.directory, "outbox.sqlite3"), max_bytes=1 << 20)
        outbox.open()
        peak = 0
        for i in range(3000):  # 3 MB of results, none acknowledged: the oldest are dropped
            size = 60000 if i % 100 == 99 else 600 + i % 400  # now and then a large one
            add(outbox, "cam", 1, size=size)
            if i % 7 == 0:
                outbox.flush()
            peak = max(peak, outbox.disk_bytes())
        assert outbox.lost["outbox_full"] > 0 and outbox.durable
        while outbox.messages:  # acknowledged, oldest first
            outbox.remove([m.id for m in outbox.pending(0, 50)])
            outbox.flush()
            peak = max(peak, outbox.disk_bytes())
        outbox.close()
        assert peak <= outbox.max_bytes, peak
    finally:
        disk.unmount()


def test_edged_starting_on_a_full_disk_sends_from_memory_and_opens_the_file_when_room_returns(
    tmp_path, caplog
):
    disk = SmallDisk(str(tmp_path / "disk"), 2 << 20)  # a real 2 MiB tmpfs
    try:
        path = os.path.join(disk.directory, "outbox.sqlite3")
        first = Outbox(path)
        first.open()
        add(first, "cam", 10)  # seqs 0..9 wait on disk (the broker was away)
        first.close()
        disk.fill()
        clock = FakeClock()
        outbox = Outbox(path, clock=clock)
        with caplog.at_level(logging.INFO, logger="edged.mqtt.outbox"):
            outbox.open()  # the file cannot be written: its seqs are read, results go to memory
            assert not outbox.durable
            assert add(outbox, "cam", 3) == [10, 11, 12]  # seq goes on: no repeats
            assert [int(m.payload[10:]) for m in outbox.pending(0, 10)] == [10, 11, 12]
            disk.unfill()
            clock.now += 1.0
            outbox.flush_if_due()  # the probe opens the file
            assert outbox.durable
            assert add(outbox, "cam", 1) == [13]
            outbox.flush()
            waiting = [int(m.payload[10:]) for m in outbox.pending(0, 100)]
            assert waiting == list(range(14))  # the backlog, then what memory holds, in order
        outbox.close()
    finally:
        disk.unmount()
    assert [r.levelname for r in caplog.records if r.levelno >= logging.WARNING] == [
        "ERROR", "WARNING"]  # fmt: skip
    assert outbox.lost["disk_full"] == 0

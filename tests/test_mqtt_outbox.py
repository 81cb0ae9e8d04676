"""The durable MQTT outbox on real files and SQLite, with a real ``kill -9`` (issue 5 item 3)."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edged.errors import PublishError
from edged.mqtt.outbox import Outbox

from .conftest import REPO


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
    topic_and_payload = len("t/cam") + 11  # add(size=10) + one seq digit
    outbox = open_outbox(tmp_path, max_bytes=5 * topic_and_payload)
    add(outbox, "cam", 8)  # seqs 0..7
    outbox.flush()
    assert outbox.messages == 5 and outbox.dropped == 3
    assert outbox.bytes <= outbox.max_bytes
    assert [m.payload[-1:] for m in outbox.pending(0, 10)] == [b"3", b"4", b"5", b"6", b"7"]
    assert not outbox.append("t", b"y" * (6 * topic_and_payload), 1)  # can never fit
    assert outbox.dropped == 4
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
    while outbox.committed_id < 200:  # what the publisher thread does on every tick
        outbox.flush_if_due()
        time.sleep(0.01)
    for i in range(5):  # written, never committed: a crash takes them back
        outbox.append_result("cam", lambda s: ("t", b"result %d" % s), 1)
    print("COMMITTED", outbox.committed_id, flush=True)
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


def test_a_full_disk_is_one_publish_error_and_the_outbox_stays_consistent(tmp_path):
    outbox = open_outbox(tmp_path, commit_batch=1)
    add(outbox, "cam", 2)
    # SQLite's own page limit makes the next writes fail exactly like a full disk (SQLITE_FULL)
    outbox._conn().execute("PRAGMA max_page_count = {}".format(
        outbox._conn().execute("PRAGMA page_count").fetchone()[0]))  # fmt: skip
    with pytest.raises(PublishError, match="database or disk is full"):
        for _ in range(100):
            add(outbox, "cam", 1, size=4000)
    assert outbox.messages == len(outbox.pending(0, 1000))  # counters match the disk
    assert outbox.seq("cam") == outbox.messages - 1
    outbox._conn().execute("PRAGMA max_page_count = 1000000")
    waiting = outbox.messages
    assert add(outbox, "cam", 1) == [waiting]  # writes work again, seq without a gap
    outbox.close()

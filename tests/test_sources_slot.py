"""The latest-frame slot and the reconnect backoff."""

import random
import threading

import pytest

from edged.sources import Backoff, LatestSlot


def test_a_full_slot_keeps_the_newest_and_counts_the_dropped():
    slot = LatestSlot(1)
    assert slot.put("a") is False
    assert slot.put("b") is True
    assert slot.put("c") is True
    assert len(slot) == 1 and slot.drops == 2 and slot.puts == 3
    assert slot.get(timeout=0) == "c"
    assert slot.get_nowait() is None


def test_a_larger_slot_drops_its_oldest_item_first():
    slot = LatestSlot(3)
    for item in range(5):
        slot.put(item)
    assert [slot.get_nowait() for _ in range(3)] == [2, 3, 4]
    assert slot.drops == 2


def test_get_waits_up_to_the_timeout_and_returns_none_when_nothing_came():
    slot = LatestSlot()
    assert slot.get(timeout=0.01) is None


def test_get_wakes_when_another_thread_puts():
    slot = LatestSlot()
    got = []
    reader = threading.Thread(target=lambda: got.append(slot.get(timeout=10)))
    reader.start()
    slot.put("frame")
    reader.join(10)
    assert got == ["frame"]


def test_slots_sharing_a_condition_let_one_worker_wait_for_any_stream():
    condition = threading.Condition()
    front, back = LatestSlot(condition=condition), LatestSlot(condition=condition)
    ready = []

    def worker():
        with condition:
            condition.wait_for(lambda: len(front) + len(back) > 0, timeout=10)
        ready.append((front.get_nowait(), back.get_nowait()))

    thread = threading.Thread(target=worker)
    thread.start()
    back.put("b0")
    thread.join(10)
    assert ready == [(None, "b0")]


def test_clear_discards_what_is_held():
    slot = LatestSlot(2)
    slot.put(1)
    slot.put(2)
    assert slot.clear() == 2 and len(slot) == 0


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        LatestSlot(0)


def test_backoff_doubles_up_to_its_cap_without_jitter():
    backoff = Backoff(1.0, 30.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(8)] == [1, 2, 4, 8, 16, 30, 30, 30]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_jitter_stays_within_its_band_and_varies():
    backoff = Backoff(1.0, 30.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    assert all(0.8 <= d <= 36.0 for d in delays)
    capped = delays[10:]
    assert all(24.0 <= d <= 36.0 for d in capped)
    assert len(set(capped)) > 100


def test_backoff_survives_months_of_failures():
    backoff = Backoff(1.0, 30.0, jitter=0.0)
    for _ in range(100000):
        delay = backoff.next_delay()
    assert delay == 30.0


def test_backoff_rejects_nonsense():
    with pytest.raises(ValueError):
        Backoff(0, 1)
    with pytest.raises(ValueError):
        Backoff(2, 1)
    with pytest.raises(ValueError):
        Backoff(1, 2, jitter=1.0)

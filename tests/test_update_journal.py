"""The update state machine as data: every state x {kill -9, error, hang} ends where it must.

Mender's daemon state tests (``tests/src/mender-update/daemon/state_test.cpp``) are one table
row per case -- Error_in_X, Killed_in_X, Hang_in_X -- asserting the exact chain of states; these
are the same for edged's journal. The invariant behind every row: the old model or the new
verified one serves, never neither and never an unverified one.
"""

import pytest

from edged.update import journal as j
from edged.update.journal import Journal, recover, start, transition

PATH = [j.RECEIVING, j.RECEIVED, j.VERIFIED, j.STAGED, j.BUILT, j.CANARY, j.PROBATION]


def run_to(state):
    """A journal that reached ``state`` along the happy path."""
    journal, _ = start(Journal(), "peoplenet", 2, "ab" * 32, installed_version=1)
    while journal.state != state:
        event = j.FORWARD[journal.state][0]
        journal, _ = transition(journal, event)
    return journal


def serving(journal):
    """Which model serves once the journal's actions are done: 'old' or 'new'."""
    return "new" if journal.state in (j.PROBATION, j.COMMITTED) else "old"


def finish(journal, actions):
    """Play the updater: a restore is done as soon as it is asked for."""
    while ("restore",) in actions:
        journal, actions = transition(journal, "rolled_back")
    return journal


def test_happy_path_commits_and_records_every_state():
    journal = run_to(j.PROBATION)
    assert serving(journal) == "new"
    journal, actions = transition(journal, "healthy")
    assert journal.state == j.COMMITTED and ("commit",) in actions
    assert [h[0] for h in journal.history] == PATH + [j.COMMITTED]


def test_the_switch_is_the_last_action_before_probation():
    journal = run_to(j.CANARY)
    journal, actions = transition(journal, "canary_passed")
    assert actions == [("persist",), ("switch",), ("report",)]  # persisted BEFORE the switch


@pytest.mark.parametrize("state", PATH)
def test_error_in_every_state_rolls_back_to_the_old_model(state):
    journal, actions = transition(run_to(state), "error", f"injected error in {state}")
    assert journal.state == j.FAILED and ("restore",) in actions
    end = finish(journal, actions)
    assert end.state == j.ROLLED_BACK and serving(end) == "old"
    assert end.reason == f"injected error in {state}"
    assert [h[0] for h in end.history][-2:] == [j.FAILED, j.ROLLED_BACK]


@pytest.mark.parametrize("state", PATH)
def test_hang_in_every_state_rolls_back(state):
    journal, actions = transition(run_to(state), "timeout", f"{state} took too long")
    end = finish(journal, actions)
    assert end.state == j.ROLLED_BACK and serving(end) == "old"


EXPECT_AFTER_KILL = {
    # before the switch: the old model never stopped; the step is resumed
    j.RECEIVING: ("resume", "request_chunks"),
    j.RECEIVED: ("resume", "verify_files"),
    j.VERIFIED: ("resume", "stage"),
    j.STAGED: ("resume", "build"),
    j.BUILT: ("resume", "canary"),
    # the new model was being tried when the process died: it is suspect, roll back
    j.CANARY: ("rollback", None),
    j.PROBATION: ("rollback", None),
}


@pytest.mark.parametrize("state", PATH)
def test_kill_in_every_state_resumes_or_rolls_back_deterministically(state):
    before = run_to(state)
    after, actions = recover(Journal.from_dict(before.to_dict()))  # as read back from disk
    kind, work = EXPECT_AFTER_KILL[state]
    if kind == "resume":
        assert after.state == state and (work,) in actions and serving(after) == "old"
        assert after.history[-1] == (state, "resumed after a restart")
        # and the resumed update can still complete
        while after.state != j.PROBATION:
            after, _ = transition(after, j.FORWARD[after.state][0])
        after, _ = transition(after, "healthy")
        assert after.state == j.COMMITTED
    else:
        end = finish(after, actions)
        assert end.state == j.ROLLED_BACK and serving(end) == "old"
        assert "restarted" in end.reason


def test_kill_during_rollback_finishes_the_rollback():
    failed, _ = transition(run_to(j.PROBATION), "unhealthy", "NaN outputs")
    after, actions = recover(failed)
    assert actions == [("restore",)]
    assert finish(after, actions).state == j.ROLLED_BACK


def test_probation_failure_is_a_rollback_of_the_switched_model():
    journal, actions = transition(run_to(j.PROBATION), "unhealthy", "stalled 30 s")
    assert journal.state == j.FAILED and ("restore",) in actions


def test_loop_breaker_ends_an_update_that_keeps_coming_back():
    journal = run_to(j.STAGED)
    rounds = 0
    while journal.state == j.STAGED:
        journal, actions = recover(journal)
        rounds += 1
        assert rounds < 100
    assert journal.state == j.FAILED and "update loop" in journal.reason
    assert finish(journal, actions).state == j.ROLLED_BACK
    assert journal.stores <= j.MAX_STATE_STORES + 1


def test_a_new_manifest_supersedes_an_unfinished_transfer_but_not_a_probation():
    receiving = run_to(j.RECEIVING)
    newer, actions = start(receiving, "peoplenet", 3, "cd" * 32, installed_version=1)
    assert newer.state == j.RECEIVING and newer.version == 3
    assert ("discard", "peoplenet", "2") in actions
    trying = run_to(j.PROBATION)
    same, actions = start(trying, "peoplenet", 3, "cd" * 32, installed_version=1)
    assert same == trying and actions[0][0] == "refuse"


def test_events_of_other_states_change_nothing():
    journal = run_to(j.STAGED)
    assert transition(journal, "canary_passed") == (journal, [])
    done, _ = transition(run_to(j.PROBATION), "healthy")
    assert transition(done, "error") == (done, [])


def test_journal_round_trips_and_refuses_unknown_states():
    journal = run_to(j.BUILT)
    assert Journal.from_dict(journal.to_dict()) == journal
    with pytest.raises(ValueError):
        Journal.from_dict(dict(journal.to_dict(), state="WEIRD"))

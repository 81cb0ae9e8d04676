"""The update state machine: a pure transition function over the persisted journal.

One update moves through

    RECEIVING -> RECEIVED -> VERIFIED -> STAGED -> BUILT -> CANARY -> PROBATION -> COMMITTED
    any step that fails -> FAILED -> ROLLED_BACK

and every state is written to the journal (fsync'd) before its work starts, so after
``kill -9`` or a power cut :func:`recover` decides deterministically what happens next. The
rules follow the update systems fleets trust: the switch to the new model is the last step
(SWUpdate commit c7e5c895 moved its switch to the end after power cuts left devices pointing at
missing images); work before the switch is resumed, since the old model never stopped serving;
a restart while the new model was being tried (CANARY, PROBATION) counts against it and rolls
back; and a loop breaker ends an update that keeps coming back (Mender aborts after 28 state
stores, ``src/mender-update/daemon/context.cpp``).

:func:`transition` returns the new journal and the actions the updater must perform; it does no
I/O, so every path is tested as data (tests/test_update_journal.py).
"""

from typing import Any, Dict, List, NamedTuple, Optional, Tuple

IDLE = "IDLE"
RECEIVING = "RECEIVING"
RECEIVED = "RECEIVED"
VERIFIED = "VERIFIED"
STAGED = "STAGED"
BUILT = "BUILT"
CANARY = "CANARY"
PROBATION = "PROBATION"
COMMITTED = "COMMITTED"
FAILED = "FAILED"
ROLLED_BACK = "ROLLED_BACK"

STATES = (IDLE, RECEIVING, RECEIVED, VERIFIED, STAGED, BUILT, CANARY, PROBATION, COMMITTED,
          FAILED, ROLLED_BACK)  # fmt: skip
FINAL = (IDLE, COMMITTED, ROLLED_BACK)
#: states in which the new model is already serving (or being tried): rollback restores the old
SWITCHED = (PROBATION,)

#: the happy path: state -> (the event that completes it, the next state, the next action)
FORWARD: Dict[str, Tuple[str, str, Optional[str]]] = {
    RECEIVING: ("received", RECEIVED, "verify_files"),
    RECEIVED: ("verified", VERIFIED, "stage"),
    VERIFIED: ("staged", STAGED, "build"),
    STAGED: ("built", BUILT, "canary"),
    BUILT: ("canary_started", CANARY, None),
    CANARY: ("canary_passed", PROBATION, "switch"),
    PROBATION: ("healthy", COMMITTED, "commit"),
}

#: what each state's work is, when it has to be (re)started
WORK = {
    RECEIVING: "request_chunks",
    RECEIVED: "verify_files",
    VERIFIED: "stage",
    STAGED: "build",
    BUILT: "canary",
    CANARY: "canary",
    PROBATION: "watch",
}

#: journal writes one update may make before the loop breaker fails it
MAX_STATE_STORES = 28


class Journal(NamedTuple):
    """The persisted record of the current (or last) update of one model slot."""

    state: str = IDLE
    model: str = ""
    version: int = 0
    manifest_sha256: str = ""
    previous_version: int = 0
    reason: str = ""
    stores: int = 0  # state writes so far (loop breaker)
    history: Tuple[Tuple[str, str], ...] = ()  # (state, why) in order: the path it took

    def to_dict(self) -> Dict[str, Any]:
        data = self._asdict()
        data["history"] = [list(h) for h in self.history]
        return data

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Journal":
        values = {k: data[k] for k in cls._fields if k in data}
        values["history"] = tuple(tuple(h) for h in values.get("history", ()))
        journal = cls(**values)
        if journal.state not in STATES:
            raise ValueError(f"unknown update state {journal.state!r}")
        return journal


Action = Tuple[str, ...]


def start(
    journal: Journal, model: str, version: int, manifest_sha256: str, installed_version: int
) -> Tuple[Journal, List[Action]]:
    """A verified manifest arrived: begin receiving (an update in progress is superseded)."""
    actions: List[Action] = []
    if journal.state in SWITCHED:
        # the running update is being tried: finish it first, never stack two
        return journal, [("refuse", f"update v{journal.version} is in probation")]
    if journal.state not in FINAL:
        actions.append(("discard", journal.model, str(journal.version)))
    new = Journal(
        state=RECEIVING,
        model=model,
        version=version,
        manifest_sha256=manifest_sha256,
        previous_version=installed_version,
        stores=1,
        history=((RECEIVING, "manifest verified"),),
    )
    return new, actions + [("persist",), ("request_chunks",), ("report",)]


def transition(journal: Journal, event: str, why: str = "") -> Tuple[Journal, List[Action]]:
    """The journal after ``event`` and what to do now.

    Events: the FORWARD events of each state, ``error`` (the state's work failed: ``why``
    says how), ``timeout`` (it hung), ``unhealthy`` (PROBATION: the new model crashed,
    stalled or gave NaN), ``rolled_back`` (the updater restored the old model).
    """
    state = journal.state
    if state in FINAL:
        return journal, []
    if event == "rolled_back" and state == FAILED:
        # never subject to the loop breaker: a rollback always completes
        done = journal._replace(
            state=ROLLED_BACK,
            stores=journal.stores + 1,
            history=journal.history + ((ROLLED_BACK, why or "old model serving"),),
        )
        return done, [("persist",), ("report",)]
    forward = FORWARD.get(state)
    if forward is not None and event == forward[0]:
        new = _store(journal, forward[1], why or event)
        if new.state == FAILED:  # the loop breaker
            return _fail(journal, new.reason)
        actions: List[Action] = [("persist",)]
        if forward[2]:
            actions.append((forward[2],))
        return new, actions + [("report",)]
    if event in ("error", "timeout", "unhealthy"):
        return _fail(journal, why or event)
    # an event that does not belong to this state: ignored, the journal says where we are
    return journal, []


def recover(journal: Journal) -> Tuple[Journal, List[Action]]:
    """After a restart (``kill -9``, power cut): resume, or roll back, deterministically."""
    state = journal.state
    if state in FINAL:
        return journal, []
    if state == FAILED:
        return journal, [("restore",)]  # finish the rollback that was under way
    if state in (CANARY, PROBATION):
        return _fail(journal, f"edged restarted while the new model was in {state.lower()}")
    resumed = _store(journal, state, "resumed after a restart")
    if resumed.state == FAILED:
        return _fail(journal, resumed.reason)
    return resumed, [("persist",), (WORK[state],), ("report",)]


def _fail(journal: Journal, why: str) -> Tuple[Journal, List[Action]]:
    failed = journal._replace(
        state=FAILED,
        reason=why,
        stores=journal.stores + 1,
        history=journal.history + ((FAILED, why),),
    )
    # before the switch the old model never stopped: rolling back is dropping the staging
    return failed, [("persist",), ("restore",), ("report",)]


def _store(journal: Journal, state: str, why: str) -> Journal:
    stores = journal.stores + 1
    if stores > MAX_STATE_STORES:
        return journal._replace(
            state=FAILED, reason=f"update loop: {stores - 1} state changes, giving up"
        )
    return journal._replace(
        state=state,
        reason=why if state in (FAILED, ROLLED_BACK) else "",
        stores=stores,
        history=journal.history + ((state, why),),
    )

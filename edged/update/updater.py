"""The device-side update executor: one named thread that drives the journal.

MQTT callbacks only enqueue (:meth:`Updater.on_message`, a bounded queue: a dropped chunk is
asked for again, a dropped desired state comes back with the retained message). The thread
checks each desired-state manifest (:func:`.manifest.check`, keys pinned from
``update.keys_file``), then follows :func:`.journal.start` / :func:`.journal.transition`:
every new state is persisted before its work starts, so :meth:`Updater.recover` at start-up
resumes or rolls back. Slow steps (verify, stage, build, canary, switch, health checks) run on a
helper thread with a deadline (:mod:`.steps`); chunks are asked for through a bounded window
(:mod:`.window`), so a transfer never starves result publishing.
"""

import logging
import os
import queue
import threading
import time
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..errors import EdgedError, StagingError, UpdateError
from ..signing.keys import KeyList
from . import journal as jn
from . import protocol
from .manifest import Manifest, UpdateLimits, check, peek
from .seams import Deployer, Transport
from .steps import Result, Steps
from .store import SlotStore
from .window import RequestWindow

logger = logging.getLogger(__name__)

#: chunks written between two checkpoints (fsync + bitmap); a restart re-asks for at most these
CHECKPOINT_EVERY = 16
#: how often the thread wakes without messages (timeouts, probation health checks), seconds
TICK_S = 0.05
HEALTH_INTERVAL_S = 0.5
#: the journal event that a background step's success is
STEP_EVENTS = {"verify_files": "verified", "stage": "staged", "build": "built",
               "canary": "canary_passed"}  # fmt: skip


class Settings(NamedTuple):
    """The updater's settings, made from the config's ``update`` section (wiring.py
    ``settings_from_config``), where their defaults are (edged/config/model.py UpdateConfig)."""

    device_id: str
    prefix: str
    state_dir: str
    groups: Tuple[str, ...]
    probation_s: float
    window: int
    request_timeout_s: float
    transfer_stall_s: float
    step_timeout_s: float
    build_timeout_s: float
    limits: UpdateLimits
    queue_size: int = 256  # messages waiting for the updater's thread (not a config key)


class Updater:
    """Receives, checks, transfers, verifies, stages, builds, tries and commits model updates."""

    def __init__(
        self,
        settings: Settings,
        trusted: KeyList,
        transport: Transport,
        deployer: Deployer,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.topics = protocol.UpdateTopics(settings.prefix, settings.device_id, settings.groups)
        self._trusted = trusted
        self._transport = transport
        self._deployer = deployer
        self._clock = clock
        self._now = monotonic
        self._inbox: queue.Queue = queue.Queue(settings.queue_size)
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.dropped = 0  # messages dropped on a full queue (counted, never blocking MQTT)
        self.damaged = 0  # chunk frames refused (damaged, malformed, wrong size)
        self.errors = 0  # unexpected errors at the top of the worker loop (a bug: logged)
        self.outcomes = dict.fromkeys(("committed", "rolled_back", "refused"), 0)  # metrics
        self._store: Optional[SlotStore] = None  # the slot of the current journal
        self._manifest: Optional[Manifest] = None  # None: gone (rolled back from disk)
        self.journal, self._envelope = jn.Journal(), b""  # journal: written by this thread only
        self._loaded: Any = None
        self._steps = Steps(monotonic)
        self._window = RequestWindow(settings.window)
        self._last_chunk, self._since_checkpoint = 0.0, 0
        self._probation_end = self._next_health = 0.0
        self._last_status: Dict[str, Any] = {}

    # -- life cycle (called by the daemon) -----------------------------------------------------

    def start(self) -> None:
        self.recover()
        self._transport.subscribe(self.topics.desired_topics + [self.topics.chunk])
        self._thread = threading.Thread(target=self._run, name="edged-update", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def on_message(self, topic: str, payload: bytes) -> None:
        """The MQTT callback: enqueue only."""
        try:
            self._inbox.put_nowait((topic, bytes(payload)))
        except queue.Full:
            self.dropped += 1

    @property
    def status(self) -> Dict[str, Any]:
        return dict(self._last_status)

    # -- recovery -----------------------------------------------------------------------------

    def recover(self) -> None:
        """Finish or roll back what a restart interrupted, slot by slot (journal.recover)."""
        root = os.path.join(self.settings.state_dir, "updates")
        for model in sorted(os.listdir(root)) if os.path.isdir(root) else []:
            store = SlotStore(self.settings.state_dir, model)
            journal = store.load_journal()
            if journal.state in jn.FINAL:
                continue
            self._store, self.journal = store, journal
            self._manifest = store.interrupted_manifest(journal)
            new, actions = jn.recover(journal)
            if self._manifest is None and new.state != jn.FAILED:
                new, actions = jn.transition(journal, "error", "the update's manifest is gone")
            logger.info("update %s v%s: %s after a restart -> %s", model, journal.version,
                        journal.state, new.state)  # fmt: skip
            self._apply(new, actions)
            if self.journal.state not in jn.FINAL:
                return  # one update at a time: this one goes on in the thread

    # -- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._once()
            except Exception:  # the top of a worker loop: logged, counted, never dies
                self.errors += 1  # logged at 1, 2, 4, 8, ... errors: a bug must not flood
                level = logging.ERROR if self.errors & (self.errors - 1) == 0 else logging.DEBUG
                logger.log(level, "update worker: error %d", self.errors, exc_info=True)

    def _once(self) -> None:
        result = self._steps.result()
        if result is not None:
            return self._step_done(result)
        try:
            topic, payload = self._inbox.get(timeout=TICK_S)
        except queue.Empty:
            return self._tick()
        if topic == self.topics.chunk:
            self._on_chunk(payload)
        elif topic in self.topics.desired_topics:
            self._on_desired(payload)
        self._tick()

    # -- desired state ------------------------------------------------------------------------

    def _on_desired(self, data: bytes) -> None:
        if not data:
            return  # a cleared retained message
        model, identity = peek(data, self.settings.limits)
        if identity and identity == self.journal.manifest_sha256:
            self._report()  # this update again (a retained re-delivery): say where it is
            return
        if not model or not self._deployer.knows(model):
            self._refuse(model, identity, f"no model slot named {model[:40]!r} on this device")
            return
        busy = self._store is not None and self.journal.state not in jn.FINAL
        if busy and self._store is not None and self._store.model != model:
            self._refuse(model, identity, "another model's update is under way")
            return
        store = SlotStore(self.settings.state_dir, model)
        last = self.journal if busy else store.load_journal()
        if identity and identity == last.manifest_sha256:
            return self._report(last)  # finished before (committed or rolled back): not again
        try:
            manifest = check(
                data, self._trusted, store.installed(), self.settings.device_id,
                list(self.settings.groups), int(self._clock()), store.disk_free(),
                self.settings.limits,
            )  # fmt: skip
        except UpdateError as e:
            self._refuse(model, identity, str(e))
            return
        new, actions = jn.start(last, model, manifest.version, manifest.sha256,
                                store.installed().version)  # fmt: skip
        if actions and actions[0][0] == "refuse":
            self._refuse(model, identity, actions[0][1])
            return
        logger.info("update %s v%s: manifest verified (update %s)", model, manifest.version,
                    manifest.sha256[:12])  # fmt: skip
        if busy and self._manifest is not None:  # superseded: its running step is ignored
            self._drop_files(store, self._manifest)
        self._steps.cancel()
        self._loaded = None
        self._window.clear()
        self._store, self._manifest, self._envelope = store, manifest, data
        self._apply(new, [a for a in actions if a[0] != "discard"])

    def _refuse(self, model: str, identity: str, why: str) -> None:
        logger.warning("update refused: %s", why)
        self.outcomes["refused"] += 1
        self._publish_status(dict(state="REFUSED", model=model, update=identity, reason=why))

    # -- the journal's actions ------------------------------------------------------------------

    def _event(self, event: str, why: str = "") -> None:
        new, actions = jn.transition(self.journal, event, why)
        if new is self.journal and not actions:
            return
        if new.state == jn.FAILED and self.journal.state != jn.FAILED:
            logger.warning("update %s v%s failed in %s: %s", new.model, new.version,
                           self.journal.state, new.reason)  # fmt: skip
        self._apply(new, actions)

    def _apply(self, journal: jn.Journal, actions: List[jn.Action]) -> None:
        """Do the journal's actions in order: persist comes before the work it announces."""
        if journal.state != self.journal.state and journal.state in (jn.COMMITTED, jn.ROLLED_BACK):
            self.outcomes[journal.state.lower()] += 1
        self.journal = journal
        for action in actions:
            name = action[0]
            if name == "persist":
                try:
                    self._slot().save_journal(journal)
                except UpdateError as e:
                    # the old model keeps serving; the journal on disk says where we were
                    logger.error("update %s: journal not written: %s", journal.model, e)
            elif name == "report":
                self._report()
            else:
                getattr(self, "_do_" + name)()

    def _do_request_chunks(self) -> None:
        store, manifest = self._work()
        try:
            store.begin(manifest, self._envelope)
        except UpdateError as e:
            self._event("error", str(e))
            return
        self._last_chunk = self._now()
        self._since_checkpoint = 0
        self._window.clear()
        if all(m.complete for m in store.chunk_maps(manifest).values()):
            self._event("received", "every chunk on disk")
            return
        self._fill_window()

    def _do_verify_files(self) -> None:
        store, manifest = self._work()
        timeout = self.settings.step_timeout_s
        self._steps.begin("verify_files", lambda: store.verify(manifest), timeout)

    def _do_stage(self) -> None:
        store, manifest = self._work()
        self._steps.begin("stage", lambda: store.promote(manifest), self.settings.step_timeout_s)

    def _do_build(self) -> None:
        store, manifest = self._work()
        files, load = store.version_dir(manifest.version), self._deployer.load
        self._steps.begin("build", lambda: load(store.model, files, manifest),
                    self.settings.build_timeout_s)  # fmt: skip

    def _do_canary(self) -> None:
        store, manifest = self._work()
        if self.journal.state == jn.BUILT:
            self._event("canary_started", "trying the new model")  # persisted first
            if self.journal.state != jn.CANARY:
                return
        loaded, deployer = self._loaded, self._deployer
        files = store.version_dir(manifest.version)

        def run() -> Any:
            # after a restart in BUILT the loaded task is gone: load it again
            task = loaded if loaded is not None else deployer.load(store.model, files, manifest)
            deployer.canary(store.model, task, files, manifest)
            return task

        self._steps.begin("canary", run, self.settings.build_timeout_s)

    def _do_switch(self) -> None:
        store, loaded = self._slot(), self._loaded
        self._steps.begin("switch", lambda: self._deployer.switch(store.model, loaded),
                    self.settings.step_timeout_s)  # fmt: skip

    def _do_watch(self) -> None:
        self._probation_end = self._now() + self.settings.probation_s
        self._next_health = self._now()

    def _do_commit(self) -> None:
        store, manifest = self._work()
        previous = store.serving_version()
        store.set_installed(manifest)
        self._deployer.commit(store.model)
        store.prune([manifest.version, previous])
        self._loaded = None
        logger.info("update %s v%s: committed", store.model, manifest.version)

    def _do_restore(self) -> None:
        self._steps.cancel()  # a step still running is ignored from now on
        self._loaded, self._probation_end = None, 0.0
        self._window.clear()
        store = self._slot()
        try:
            self._deployer.restore(store.model)
        except EdgedError as e:
            logger.error("update %s: restore: %s", store.model, e)
        if self._manifest is not None:
            self._drop_files(store, self._manifest)
        self._event("rolled_back", "")

    def _slot(self) -> SlotStore:
        if self._store is None:
            raise UpdateError("no update under way")
        return self._store

    def _work(self) -> Tuple[SlotStore, Manifest]:
        if self._store is None or self._manifest is None:
            raise UpdateError("no update under way")
        return self._store, self._manifest

    @staticmethod
    def _drop_files(store: SlotStore, manifest: Manifest) -> None:
        store.discard(manifest.sha256)
        if manifest.version > store.installed().version:
            store.remove_version(manifest.version)

    # -- background steps ---------------------------------------------------------------------

    def _step_done(self, result: Result) -> None:
        name, error, value = result.name, result.error, result.value
        if result.stale:
            if name == "switch" and not error and self._store is not None:
                self._deployer.restore(self._store.model)  # a late switch is undone
            return
        if error:
            self._event("unhealthy" if name == "health" else "error", error)
        elif name == "health":
            if value:
                self._event("unhealthy", str(value))
        elif name == "switch":
            self._do_watch()
        else:
            if name in ("build", "canary"):
                self._loaded = value
            self._event(STEP_EVENTS[name], "")

    def _tick(self) -> None:
        now = self._now()
        hung = self._steps.expired()
        if hung:
            self._event("timeout", f"{hung}: no answer within its timeout (hung)")
            return
        state = self.journal.state
        if state == jn.RECEIVING and self._manifest is not None:
            if now - self._last_chunk > self.settings.transfer_stall_s:
                self._event("timeout", f"no chunk for {self.settings.transfer_stall_s:g} s")
            elif self._window.stale(now, self.settings.request_timeout_s) or not self._window:
                self._fill_window()  # lost on the way (a broker restart): ask again
        elif state == jn.PROBATION and not self._steps.running and self._probation_end:
            if now >= self._probation_end:
                self._probation_end = 0.0
                self._event("healthy", f"healthy for {self.settings.probation_s:g} s")
            elif now >= self._next_health:
                self._next_health = now + HEALTH_INTERVAL_S
                model = self._slot().model
                self._steps.begin("health", lambda: self._deployer.healthy(model),
                            self.settings.step_timeout_s)  # fmt: skip

    # -- chunks ------------------------------------------------------------------------------

    def _fill_window(self) -> None:
        store, manifest = self._work()
        for request in self._window.fill(manifest.sha256, store.chunk_maps(manifest), self._now()):
            self._transport.publish(self.topics.request, request.encode())

    def _on_chunk(self, frame: bytes) -> None:
        if self.journal.state != jn.RECEIVING or self._manifest is None:
            return
        store, manifest = self._work()
        try:
            chunk = protocol.decode_chunk(frame, manifest.chunk_bytes)
            if chunk.update != manifest.sha256:
                return  # another update's (a superseded one)
            self._window.done(chunk.file, chunk.index)
            store.write_chunk(manifest, chunk.file, chunk.index, chunk.data)
        except StagingError as e:
            self._event("error", str(e))
            return
        except UpdateError as e:
            self.damaged += 1  # asked for again as the window refills
            logger.warning("update %s: %s", store.model, e)
            self._forget_damaged(frame)
            self._fill_window()
            return
        self._last_chunk = self._now()
        self._since_checkpoint += 1
        complete = all(m.complete for m in store.chunk_maps(manifest).values())
        try:
            if complete or self._since_checkpoint >= CHECKPOINT_EVERY:
                store.checkpoint(manifest)
                self._since_checkpoint = 0
                self._report()
        except UpdateError as e:
            self._event("error", str(e))
            return
        if complete:
            self._window.clear()
            self._event("received", "every chunk on disk")
        else:
            self._fill_window()

    def _forget_damaged(self, frame: bytes) -> None:
        header = protocol.chunk_header(frame)
        if header is not None:
            self._window.done(*header)

    # -- status -------------------------------------------------------------------------------

    def _report(self, journal: Optional[jn.Journal] = None) -> None:
        j = journal or self.journal
        fields: Dict[str, Any] = {"state": j.state, "model": j.model, "version": j.version,
                                  "update": j.manifest_sha256, "reason": j.reason,
                                  "path": [h[0] for h in j.history]}  # fmt: skip
        if journal is None and self._store is not None and self._manifest is not None:
            if j.state == jn.RECEIVING:
                maps = self._store.chunk_maps(self._manifest)
                fields["chunks"] = sum(m.count for m in maps.values())
                fields["received"] = sum(m.received for m in maps.values())
            fields["installed"] = self._store.installed().version
        self._publish_status(fields)

    def _publish_status(self, fields: Dict[str, Any]) -> None:
        fields = dict(fields, device=self.settings.device_id, time=int(self._clock()))
        self._last_status = fields
        try:
            self._transport.publish(self.topics.status, protocol.status_payload(fields), True)
        except EdgedError as e:
            logger.warning("update status not published: %s", e)

"""Received commands: queued off the paho thread, run in order, a ``busy`` reply on overflow.

paho's ``on_message`` runs on the ``mqtt-network`` thread and only enqueues
(:mod:`.compat`). ``mqtt-commands`` runs the queued commands one at a time
(:class:`~.commands.CommandProcessor`); a ``reload`` may take minutes, so the
queue is bounded (:data:`COMMAND_QUEUE`). A command that does not fit is never
dropped in silence: it goes to a second bounded queue, from which
``mqtt-replies`` sends the error reply ``busy`` (a publish only queues the packet
for the network thread, :func:`.compat.quiet_writes`, so neither thread blocks on
the network). Both outcomes are counted per (command, result) in
``edged_mqtt_commands_total`` (results ``busy``; ``busy_unsent`` when even the
reply queue overflowed). docs/mqtt.md "Commands" describes the replies.
"""

import collections
import logging
import queue
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .commands import BUSY, ERROR, IGNORED, UNKNOWN, CommandProcessor
from .payloads import reply_payload
from .topics import Topics

logger = logging.getLogger(__name__)

#: Received commands waiting for the commands thread; beyond this they get ``busy``.
COMMAND_QUEUE = 32
#: Commands waiting for their ``busy`` reply; beyond this they are only counted.
BUSY_QUEUE = 1024
#: A busy command's payload is kept (to read its ``request_id``) up to this size, so the
#: waiting busy replies hold at most BUSY_QUEUE x 4 KiB; a larger one is answered with
#: ``request_id`` null.
BUSY_PAYLOAD_BYTES = 4096
#: How long the threads wait for work before looking at the stop flag again.
POLL_S = 0.2
BUSY_UNSENT = "busy_unsent"

Message = Tuple[str, bytes, bool]  # (topic, payload, retain)


class CommandInbox:
    """Queues received commands, runs them and replies; :meth:`on_message` is paho's callback.

    ``send_reply(topic, payload)`` publishes a reply (False when disconnected) and
    ``stopping()`` tells the threads to end.
    """

    def __init__(
        self,
        processor: CommandProcessor,
        topics: Topics,
        send_reply: Callable[[str, bytes], bool],
        stopping: Callable[[], bool],
        queue_size: Optional[int] = None,
        busy_queue_size: Optional[int] = None,
    ) -> None:
        self.processor = processor
        self._topics = topics
        self._send_reply = send_reply
        self._stopping = stopping
        # read here, not as defaults, so that tests can shrink the module constants
        self._commands = queue.Queue(maxsize=queue_size or COMMAND_QUEUE)  # type: queue.Queue
        self._busy = queue.Queue(maxsize=busy_queue_size or BUSY_QUEUE)  # type: queue.Queue
        self._lock = threading.Lock()
        self._counts = collections.Counter()  # type: collections.Counter

    def threads(self) -> List[Tuple[str, Callable[[], None]]]:
        """``(thread name, target)`` of the threads to start."""
        return [("mqtt-commands", self._commands_main), ("mqtt-replies", self._busy_main)]

    def counts(self) -> Dict[Tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, label: str, result: str) -> None:
        with self._lock:
            self._counts[(label, result)] += 1

    def _label(self, topic: str) -> Tuple[Optional[str], str]:
        name = self._topics.command_name(topic)
        return name, (name if name in self.processor.handlers else UNKNOWN)

    # -- the network thread ---------------------------------------------------------------

    def on_message(self, topic: str, payload: bytes, retain: bool) -> None:
        """paho callback: enqueue only, never block."""
        try:
            self._commands.put_nowait((topic, payload, retain))
            return
        except queue.Full:
            pass
        if len(payload) > BUSY_PAYLOAD_BYTES:
            payload = b""  # its request_id is not read: the reply says null
        try:
            self._busy.put_nowait((topic, payload, retain))
        except queue.Full:
            self._count(self._label(topic)[1], BUSY_UNSENT)

    # -- mqtt-commands ----------------------------------------------------------------------

    def _commands_main(self) -> None:
        self._drain(self._commands, self._handle, "command", ERROR)
        logger.debug("MQTT commands thread stopped")

    def _drain(self, source: "queue.Queue[Any]", handle: Callable[[str, bytes, bool], None],
               what: str, failed: str) -> None:  # fmt: skip
        """A worker thread's loop: ``handle`` each queued message until stopping."""
        while not self._stopping():
            try:
                topic, payload, retain = source.get(timeout=POLL_S)
            except queue.Empty:
                continue
            try:
                handle(topic, payload, retain)
            except Exception:  # noqa: BLE001 - top of a worker loop: log, count, go on
                logger.exception("MQTT %s on %s failed", what, topic)
                self._count(self._label(topic)[1], failed)

    def _handle(self, topic: str, payload: bytes, retain: bool) -> None:
        name = self._topics.command_name(topic)
        label, result, reply = self.processor.process(name, payload, retain)
        self._count(label, result)
        if reply is None or result == IGNORED or name is None:
            return
        if not self._send_reply(self._topics.reply(name), reply):
            logger.info("MQTT: reply to cmd/%s not sent: disconnected", label)

    # -- mqtt-replies -----------------------------------------------------------------------

    def _busy_main(self) -> None:
        self._drain(self._busy, self._reply_busy, "busy reply", BUSY_UNSENT)
        logger.debug("MQTT replies thread stopped")

    def _reply_busy(self, topic: str, payload: bytes, retain: bool) -> None:
        name, label = self._label(topic)
        if retain:  # never answered, as when it is queued (frigate#4414)
            self._count(label, IGNORED)
            return
        self._count(label, BUSY)
        if name is None:
            return
        request_id = self.processor.request_id(payload)
        error = f"busy: {self._commands.maxsize} commands are waiting; send it again later"
        reply = reply_payload(request_id, False, error=error)
        if not self._send_reply(self._topics.reply(name), reply):
            logger.info("MQTT: busy reply to cmd/%s not sent: disconnected", label)

"""A real Mosquitto broker, a test CA made with openssl, and an independent subscriber.

The broker runs as a child process on a free loopback port (127.0.0.1 only) with a
generated ``mosquitto.conf``; it can be SIGKILLed and restarted on the same port.
Missing ``mosquitto``, ``mosquitto_passwd`` or ``openssl`` FAILS the test (never a
skip): ``tools/apt-packages.txt`` lists them.

The subscriber is a plain paho client in the test process (paho 1.6 and 2.x), not
edged code: it records every message it receives, reconnects on its own and
resubscribes after every connect.
"""

import collections
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional, Tuple

import paho.mqtt.client as mqtt
import pytest

from .helpers import wait_for  # noqa: F401 (the tests of MQTT import it from here)

READY_TIMEOUT_S = 10.0
_started = []  # type: List["Mosquitto"]  # every broker process, for stop_all_brokers()


def require_tool(name: str) -> str:
    """The path of ``name``; the test FAILS (not skips) when it is missing."""
    path = shutil.which(name) or next(
        (p for p in ("/usr/sbin/" + name, "/usr/bin/" + name) if os.path.exists(p)), None
    )
    if path is None:
        pytest.fail(
            f"{name} is not installed: `apt-get install -y mosquitto mosquitto-clients openssl` "
            "(tools/apt-packages.txt; tools/test.sh installs them)"
        )
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TestCA:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (openssl)."""

    __test__ = False  # not a test class

    def __init__(self, directory: str) -> None:
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.openssl = require_tool("openssl")
        self.ca_cert = self._path("ca.crt")
        self.ca_key = self._path("ca.key")
        self._run(
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=edged test CA",
            "-keyout",
            self.ca_key,
            "-out",
            self.ca_cert,
        )
        self.server_cert, self.server_key = self.issue(
            "server", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost"
        )
        self.client_cert, self.client_key = self.issue("client", "/CN=edged-client", None)

    def _path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [self.openssl] + list(args),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            universal_newlines=True,
        )
        assert done.returncode == 0, f"openssl {' '.join(args[:2])} failed:\n{done.stdout}"

    def issue(self, name: str, subject: str, extension: Optional[str]) -> Tuple[str, str]:
        """A key and a certificate signed by this CA."""
        key, csr, cert = (
            self._path(name + ".key"),
            self._path(name + ".csr"),
            self._path(name + ".crt"),
        )
        self._run(
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", key, "-out", csr
        )
        args = [
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            self.ca_cert,
            "-CAkey",
            self.ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            cert,
        ]
        if extension:
            ext = self._path(name + ".ext")
            with open(ext, "w") as f:
                f.write(extension + "\n")
            args += ["-extfile", ext]
        self._run(*args)
        return cert, key


class Mosquitto:
    """One broker process; :meth:`kill` (SIGKILL) and :meth:`start` again keep port and config."""

    def __init__(
        self,
        directory: str,
        users: Optional[Dict[str, str]] = None,
        tls: Optional[TestCA] = None,
        require_client_cert: bool = False,
        persistence: bool = False,
        acl_file: Optional[str] = None,
        allow_anonymous: Optional[bool] = None,
        extra_conf: Optional[List[str]] = None,
    ) -> None:
        self.binary = require_tool("mosquitto")
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.tls = tls
        self.conf = os.path.join(directory, "mosquitto.conf")
        self.log = os.path.join(directory, "mosquitto.log")
        self.proc = None  # type: Optional[subprocess.Popen]
        anonymous = not users if allow_anonymous is None else allow_anonymous
        lines = [
            f"listener {self.port} 127.0.0.1",
            # as root, stay root: the test's files are in a 0700 directory
            f"user {getpass.getuser()}",
            f"allow_anonymous {'true' if anonymous else 'false'}",
            "max_queued_messages 100000",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
        ]
        if users:
            passwd = os.path.join(directory, "passwd")
            tool = require_tool("mosquitto_passwd")
            open(passwd, "w").close()
            for user, password in users.items():
                subprocess.check_call([tool, "-b", passwd, user, password])
            lines.append(f"password_file {passwd}")
        if acl_file:
            lines.append(f"acl_file {acl_file}")
        lines += extra_conf or []
        if tls:
            lines += [
                f"cafile {tls.ca_cert}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
                f"require_certificate {'true' if require_client_cert else 'false'}",
            ]
        if persistence:
            # the subscriber's persistent session survives a SIGKILL: saved every second
            lines += [
                "persistence true",
                f"persistence_location {directory}/",
                "autosave_interval 1",
                "autosave_on_changes false",
            ]
        else:
            lines.append("persistence false")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self) -> "Mosquitto":
        log = open(self.log, "a")
        self.proc = subprocess.Popen([self.binary, "-c", self.conf], stdout=log, stderr=log)
        log.close()
        _started.append(self)
        wait_for(self._accepting, READY_TIMEOUT_S, f"mosquitto on port {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"mosquitto exited with {self.proc.returncode}:\n{self.log_text()}"
            )
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, no persistence save."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def count_in_log(self, text: str) -> int:
        return self.log_text().count(text)


def stop_all_brokers() -> None:
    """Stop every broker a test started (its teardown: none outlives a failed test)."""
    while _started:
        _started.pop().stop()


def new_paho_client(client_id: str, clean_session: bool = True) -> "mqtt.Client":
    kwargs = {"client_id": client_id, "clean_session": clean_session}
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        kwargs["callback_api_version"] = mqtt.CallbackAPIVersion.VERSION2
    return mqtt.Client(**kwargs)


Message = collections.namedtuple("Message", "topic payload retain received")


class Subscriber:
    """An independent MQTT client that records what arrives on ``topics``."""

    def __init__(
        self,
        broker: Mosquitto,
        topics: List[str],
        client_id: str = "test-subscriber",
        clean_session: bool = True,
        username: Optional[str] = None,
        password: Optional[str] = None,
    ) -> None:
        self.topics = topics
        self.messages = []  # type: List[Message]
        self.connects = 0
        self.subscribed = threading.Event()
        self._lock = threading.Lock()
        self.client = new_paho_client(client_id, clean_session)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.2)
        if username:
            self.client.username_pw_set(username, password)
        if broker.tls is not None:
            self.client.tls_set(
                ca_certs=broker.tls.ca_cert,
                certfile=broker.tls.client_cert,
                keyfile=broker.tls.client_key,
            )
        self.client.connect_async(broker.host, broker.port, keepalive=5)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, *rest: Any) -> None:
        self.connects += 1
        self.subscribed.clear()
        client.subscribe([(t, 1) for t in self.topics])

    def _on_subscribe(self, *args: Any) -> None:
        self.subscribed.set()

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        with self._lock:
            self.messages.append(
                Message(
                    message.topic, bytes(message.payload), bool(message.retain), time.monotonic()
                )
            )

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        assert self.subscribed.wait(timeout), "the test subscriber did not subscribe"

    def received(self, suffix: str = "") -> List[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def json(self, suffix: str = "") -> List[Dict[str, Any]]:
        return [json.loads(m.payload.decode()) for m in self.received(suffix) if m.payload]

    def publish(self, topic: str, payload: Any, retain: bool = False, qos: int = 1) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        info = self.client.publish(topic, data, qos=qos, retain=retain)
        info.wait_for_publish()

    def close(self) -> None:
        self.client.loop_stop()
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - best effort in a test's teardown
            pass


def seq_report(seqs: List[int], expected: range) -> Dict[str, int]:
    """sent/received/unique/lost/duplicates of the result seqs in ``expected`` (the ones that
    had to arrive); ``later`` counts messages with seqs after it."""
    wanted = set(expected)
    counts = collections.Counter(s for s in seqs if s in wanted)
    return {
        "sent": len(wanted),
        "received": sum(counts.values()),
        "unique": len(counts),
        "lost": len(wanted - set(counts)),
        "duplicates": sum(n - 1 for n in counts.values()),
        "later": sum(1 for s in seqs if s > max(wanted, default=-1)),
    }

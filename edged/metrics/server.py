"""The /metrics HTTP endpoint, on a server that can be shut down.

``prometheus_client.start_http_server`` returns nothing on 0.17.1 (the last
release for Python 3.6; client_python's ``exposition.py``) and binds 0.0.0.0 by default, so edged
runs its own small threading HTTP server with prometheus_client's
``MetricsHandler`` for one registry: bound to the configured address
(127.0.0.1 by default), served by the ``metrics-http`` thread, stopped and
closed on shutdown. Port 0 takes a free port (see :attr:`MetricsServer.port`).
"""

import http.server
import logging
import socket
import socketserver
import threading
from typing import Optional

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import MetricsHandler

from ..errors import ConfigError

logger = logging.getLogger(__name__)

#: A client that connects and says nothing is dropped after this long.
REQUEST_TIMEOUT_S = 10.0
#: How long stop() waits for the serving thread.
STOP_TIMEOUT_S = 5.0


class _ThreadingHTTPServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """``http.server.ThreadingHTTPServer`` (3.7+) for 3.6 as well."""

    daemon_threads = True  # a slow scraper never holds up shutdown
    allow_reuse_address = True  # restart at once after a crash (TIME_WAIT)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also calls socket.getfqdn(host): a reverse DNS lookup
        # that can hang for seconds on a Jetson with no DNS server. The name is unused.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = self.server_address[1]


class MetricsServer:
    """Serves ``registry`` at ``http://HOST:PORT/metrics`` until :meth:`stop`."""

    def __init__(
        self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 9108
    ) -> None:
        self.registry = registry
        self.host = host
        self.requested_port = port
        self._server = None  # type: Optional[_ThreadingHTTPServer]
        self._thread = None  # type: Optional[threading.Thread]

    @property
    def port(self) -> Optional[int]:
        """The port actually bound (differs from the configured one when that was 0)."""
        return self._server.server_address[1] if self._server is not None else None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def start(self) -> None:
        """Bind and serve in the background.

        Raises:
            ConfigError: the address cannot be bound (in use, not an address of this
                machine, no permission); the message names ``metrics.host``/``metrics.port``.
        """
        try:
            family = socket.getaddrinfo(self.host, self.requested_port, 0, socket.SOCK_STREAM)[0][0]
        except socket.gaierror as e:
            raise ConfigError(f"metrics.host: cannot resolve {self.host!r} ({e})") from e
        server_class = type(
            "MetricsHTTPServer", (_ThreadingHTTPServer,), {"address_family": family}
        )
        handler = type(
            "EdgedMetricsHandler",
            (MetricsHandler,),
            {"registry": self.registry, "timeout": REQUEST_TIMEOUT_S},
        )
        try:
            self._server = server_class((self.host, self.requested_port), handler)
        except OSError as e:
            where = f"{self.host}:{self.requested_port}"
            raise ConfigError(f"metrics.port: cannot listen on {where} ({e.strerror or e})") from e
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop serving and close the socket; safe when never started or called twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # returns once serve_forever has left its loop
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)

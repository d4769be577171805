"""The HTTP side of metrics: ``/metrics``, ``/healthz`` and ``/readyz`` on a daemon's metrics port.

A WSGI app on the standard library's threaded server keeps the daemons free of a web framework (the
console has its own app and mounts the same three paths there).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from meshfl.errors import ConfigError
from meshfl.logs import get_logger
from meshfl.metrics._instruments import METRICS, Metrics

log = get_logger("meshfl.metrics")

StartResponse = Callable[..., Any]


class Health:
    """Liveness and readiness of one daemon; the daemon sets ``ready`` once its state is rebuilt."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.reason = "starting"

    def set_ready(self) -> None:
        self.reason = "ready"
        self._ready.set()

    def set_not_ready(self, reason: str) -> None:
        self.reason = reason
        self._ready.clear()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: not news
        return


def health_app(
    health: Health, metrics: Metrics
) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    """A WSGI app: the Prometheus exposition on ``/metrics``, probes on ``/healthz`` and ``/readyz``."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"ok\n"]
        if path == "/readyz":
            status = "200 OK" if health.ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [f"{health.reason}\n".encode()]
        if path == "/metrics":
            return exposition(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"try /metrics, /healthz or /readyz\n"]

    return app


class MetricsServer:
    """The running endpoint; ``close`` stops it (daemons call it on the way out)."""

    def __init__(self, server: WSGIServer) -> None:
        self._server = server
        self.port = server.server_port
        self._thread = threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(port: int, health: Health, *, host: str = "0.0.0.0", metrics: Metrics = METRICS) -> MetricsServer:
    """Serve metrics and probes on ``host:port`` (0 picks a free port) in a background thread."""
    try:
        server = make_server(
            host, port, health_app(health, metrics), _ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as exc:
        raise ConfigError(f"--metrics-port {port}: cannot listen on {host}:{port}: {exc}") from exc
    running = MetricsServer(server)
    log.info("metrics endpoint up", host=host, port=running.port)
    return running

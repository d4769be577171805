"""Run the console as a daemon: follow the bus, serve the app with uvicorn until asked to stop."""

from __future__ import annotations

import threading

import uvicorn

from meshfl.console.app import console_app
from meshfl.console.reader import BusFollower
from meshfl.errors import ConfigError
from meshfl.logs import get_logger
from meshfl.metrics import Health
from meshfl.settings import MeshflSettings

log = get_logger("meshfl.console")


def run_console(
    settings: MeshflSettings,
    stop: threading.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    replay_interval: float = 5.0,
    health: Health | None = None,
) -> int:
    """Serve until ``stop`` is set; returns the exit code (0, or 2 when the port cannot be had).

    uvicorn runs in a thread of its own so that the daemon's signal handling (SIGTERM = clean stop)
    stays with ``meshfl.cli._daemon`` and not with uvicorn's.
    """
    follower = BusFollower(settings, replay_interval=replay_interval)
    follower.start()
    config = uvicorn.Config(
        console_app(follower), host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-http", daemon=True)
    thread.start()
    try:
        while not stop.wait(0.2):
            if not thread.is_alive():
                raise ConfigError(f"the console could not serve on {host}:{port} (port taken?)")
            if server.started:
                break
        log.info("console serving", url=f"http://{host}:{port}/", topic_prefix=settings.topic_prefix)
        while not stop.wait(0.5):
            if health is not None and follower.caught_up.is_set() and not health.ready:
                health.set_ready()
            if not thread.is_alive():
                raise ConfigError(f"the console's web server on {host}:{port} stopped")
        return 0
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        follower.stop()

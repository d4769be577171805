"""Run a daemon's ``run(stop)`` with SIGTERM/SIGINT mapped to a clean stop and errors to exit codes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from meshfl.errors import BusError, ConfigError, MeshflError

if TYPE_CHECKING:
    from meshfl.metrics import Health


def _log() -> Any:
    from meshfl.logs import get_logger  # structlog loads when a daemon runs, not for --help

    return get_logger("meshfl.daemon")


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_BUS = 3


def run_daemon(
    name: str,
    run: Callable[[threading.Event], int],
    *,
    metrics_port: int | None = None,
    health: Health | None = None,
) -> None:
    """Block in ``run`` until it returns or a signal asks it to stop after its current step.

    With ``metrics_port``, ``/metrics``, ``/healthz`` and ``/readyz`` are served meanwhile (ready when
    the daemon sets ``health`` ready: connected and its state rebuilt).
    """
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        _log().info("stop requested", daemon=name, signal=signal.Signals(signum).name)
        stop.set()
        from meshfl.retry import SHUTDOWN

        SHUTDOWN.set()  # pending retries give up now instead of at their deadline

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = None
    try:
        if metrics_port is not None:
            from meshfl.metrics import Health, serve  # prometheus-client loads only for daemons that ask

            server = serve(metrics_port, health or Health())
        code = run(stop)
    except ConfigError as exc:
        _log().error("configuration error", daemon=name, error=str(exc))
        raise typer.Exit(EXIT_CONFIG) from exc
    except BusError as exc:
        _log().error("Kafka error", daemon=name, error=str(exc))
        raise typer.Exit(EXIT_BUS) from exc
    except MeshflError as exc:
        _log().error("stopped on error", daemon=name, error=str(exc))
        raise typer.Exit(EXIT_FAILURE) from exc
    finally:
        if server is not None:
            server.close()
    raise typer.Exit(code)

"""Run a daemon's ``run(stop)`` with SIGTERM/SIGINT mapped to a clean stop and errors to exit codes."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

import typer

from meshfl.errors import BusError, ConfigError, MeshflError


def _log() -> Any:
    from meshfl.logs import get_logger  # structlog loads when a daemon runs, not for --help

    return get_logger("meshfl.daemon")


EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 2
EXIT_BUS = 3


def run_daemon(name: str, run: Callable[[threading.Event], int]) -> None:
    """Block in ``run`` until it returns or a signal asks it to stop after its current step."""
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        _log().info("stop requested", daemon=name, signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
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
    raise typer.Exit(code)

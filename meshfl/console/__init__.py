"""``meshfl console``: a live, read-only web view of the federation, served from the bus itself.

``BusFollower`` folds every topic into a ``ConsoleView`` (pure) and replays each task as versions
land; ``console_app`` serves it with Starlette (page, JSON, server-sent events, probes); ``run_console``
ties them to uvicorn for the CLI. An auditor's read-only credentials are all it needs.
"""

from __future__ import annotations

from meshfl.console.app import console_app
from meshfl.console.reader import CONSOLE_TOPICS, BusFollower
from meshfl.console.server import run_console
from meshfl.console.view import ConsoleView

__all__ = ["CONSOLE_TOPICS", "BusFollower", "ConsoleView", "console_app", "run_console"]

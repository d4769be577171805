"""Rich consoles made on first use: importing rich costs a sixth of a command's start-up, and only the
commands that print tables or colours need it (``bench/startup.py``, ``tests/test_startup.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """Stands for ``rich.console.Console(**options)``; the console is built when first used."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def get(self) -> Console:
        """The console itself (for rich APIs that take one, such as ``Live`` or ``Progress``)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.get(), name)

"""structlog configuration: JSON lines in daemons and CI, readable colours on a terminal.

structlog is imported on first use, not when a module asks for its logger, so that commands which never
log (``meshfl --help``, ``meshfl broker status``) start without it (``bench/startup.py``).
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import structlog

LogFormat = Literal["auto", "json", "console"]


_wanted: tuple[LogFormat, str] | None = None
"""The configuration asked for and not yet applied (structlog not imported yet)."""


def configure_logging(fmt: LogFormat = "auto", level: str = "INFO") -> None:
    """Configure structlog once per process; daemons call this first thing.

    Applied at once if structlog is loaded, else when the first meshfl logger is used.
    """
    global _wanted
    _wanted = (fmt, level)
    if "structlog" in sys.modules:
        _apply()


def _apply() -> None:
    global _wanted
    if _wanted is None:
        return
    fmt, level = _wanted
    _wanted = None
    import structlog

    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


class _Logger:
    """``structlog.get_logger(name)``, fetched at the first call (structlog's own proxy is lazy too)."""

    __slots__ = ("_logger", "_name")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: Any = None

    def __getattr__(self, attribute: str) -> Any:
        if self._logger is None:
            import structlog

            _apply()
            self._logger = structlog.get_logger(self._name)
        return getattr(self._logger, attribute)


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return _Logger(name)  # type: ignore[return-value]

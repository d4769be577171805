"""Vertical federation (split learning) on the domain side: task specs, entity alignment by private set
intersection, bottom networks and the domain's split-training loop.

The events are in ``meshfl.vertical.events``; governance's side (top network, batch coordination, labels,
versions) is ``governance.vertical``. Kept import-light: ``meshfl.events`` imports ``meshfl.vertical.events``.
"""

from __future__ import annotations

# meshfl.events defines the base classes, then imports meshfl.vertical.events: load it first, whatever
# module of this package is imported first.
import meshfl.events  # noqa: F401
